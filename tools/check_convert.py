#!/usr/bin/env python3
"""Checks an `assay convert` output directory against the GGUF it came from, with transformers
as the independent reference (it dequantizes and un-permutes GGUF tensors itself).

  python3 tools/check_convert.py IN.gguf OUT_DIR [--tol 1e-4]

1. Logits: LlamaForCausalLM from OUT_DIR (float32, eager attention) and the same class loaded
   from the GGUF (`from_pretrained(dir, gguf_file=...)`) run on the same token ids; prints the
   largest absolute difference of the logits at every position. An F32 conversion should match
   to float32 rounding (the two models compute the same graph on the same weights).
2. Tokenizer: OUT_DIR/tokenizer.json loaded with `tokenizers`, compared with transformers' GGUF
   tokenizer on a few sentences (ids with special tokens, and decode round trip).
Exits 1 when a check fails.
"""
import argparse
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

def patch_gguf_special_ids():
    """transformers indexes the token list with every tokenizer.ggml.*_token_id, and llama2.c-made
    files store "none" as 0xFFFFFFFF (stories260K's padding id): drop ids past the vocabulary."""
    from transformers.integrations.gguf import reader

    orig = reader.read_gguf_metadata

    def read(path, string_arrays=()):
        meta, names = orig(path, string_arrays)
        toks = meta.get("tokenizer.ggml.tokens", ())
        n = toks if isinstance(toks, int) else len(toks)  # only a count unless asked for in full
        for k in [k for k in meta if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")]:
            if isinstance(meta[k], int) and n and meta[k] >= n:
                del meta[k]
        return meta, names

    reader.read_gguf_metadata = read


def reference_model(path):
    """The GGUF loaded by transformers' own GGUF code (dequantization + q/k un-permute), into a
    LlamaForCausalLM built from the config transformers reads out of the file. This is what
    `from_pretrained(dir, gguf_file=...)` does, without its `accelerate` requirement."""
    cfg = load_gguf_checkpoint(path, return_tensors=False)["config"]
    n_vocab = cfg.get("vocab_size")
    cfg = {k: v for k, v in cfg.items()
           if not (k.endswith("_token_id") and isinstance(v, int) and n_vocab and v >= n_vocab)}
    cfg.pop("_model_name_or_path", None)
    config = LlamaConfig(**cfg)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        sys.exit(f"reference: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.float().eval()


SENTENCES = [
    "Once upon a time, there was a little girl named Lily.",
    "She liked to play in the park with her dog.",
    "The quick brown fox jumps over the lazy dog!",
    "Hello world",
    "naïve café, 東京 and emoji 🙂 use byte fallback",
    "numbers 12345 and   three spaces",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    gdir, gname = os.path.split(os.path.abspath(args.gguf))
    ok = True
    patch_gguf_special_ids()

    ref_tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    ours = Tokenizer.from_file(os.path.join(args.out_dir, "tokenizer.json"))
    for s in SENTENCES:
        want = ref_tok(s)["input_ids"]
        got = ours.encode(s).ids
        dec = ours.decode(got, skip_special_tokens=True)
        same = want == got
        ok &= same
        print(f"tokenizer {'ok  ' if same else 'DIFF'} {len(got):3d} ids  {s!r}"
              + ("" if same else f"\n  want {want}\n  got  {got}"))
        if dec != s and same:
            print(f"  (decode gives {dec!r})")

    torch.manual_seed(0)
    ref = reference_model(args.gguf)
    conv = LlamaForCausalLM.from_pretrained(args.out_dir, dtype=torch.float32,
                                            attn_implementation="eager").eval()
    vocab = ref.config.vocab_size
    ids = [ref_tok(SENTENCES[0])["input_ids"],
           torch.randint(0, vocab, (48,), generator=torch.Generator().manual_seed(1)).tolist()]
    worst = 0.0
    for seq in ids:
        x = torch.tensor([seq])
        with torch.no_grad():
            a = ref(x).logits.float()
            b = conv(x).logits.float()
        d = (a - b).abs().max().item()
        worst = max(worst, d)
        print(f"logits: {len(seq)} tokens, max |diff| = {d:.3g} "
              f"(logit scale {a.abs().max().item():.3g}), argmax agree "
              f"{(a.argmax(-1) == b.argmax(-1)).float().mean().item() * 100:.1f}%")
    print(f"max abs logit diff: {worst:.3g} (tolerance {args.tol})")
    ok &= worst <= args.tol
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
