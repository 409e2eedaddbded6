#!/usr/bin/env python3
"""Checks an `assay convert` output directory against the GGUF it came from, with transformers
as the independent reference (it dequantizes and un-permutes GGUF tensors itself).

  python3 tools/check_convert.py IN.gguf OUT_DIR [--tol 1e-4]

1. Logits: LlamaForCausalLM from OUT_DIR (float32, eager attention) and the same class loaded
   from the GGUF (`from_pretrained(dir, gguf_file=...)`) run on the same token ids; prints the
   largest absolute difference of the logits at every position. An F32 conversion should match
   to float32 rounding (the two models compute the same graph on the same weights).
2. Tokenizer: OUT_DIR/tokenizer.json loaded with `tokenizers`, on ~20 varied strings (numbers,
   spacing, scripts, special tokens), compared with
   - for a byte-level ("gpt2") vocabulary: llama.cpp's own split, rebuilt here from the GGUF's
     vocabulary and merges with the regex list llama.cpp's llama-vocab.cpp uses for the file's
     tokenizer.ggml.pre (each regex an isolating Split, then the byte mapping). This is the
     reference that decides PASS: it is what llama.cpp runs the model with.
   - transformers' GGUF tokenizer, reported alongside. transformers 5.x has no split for some pre
     values (e.g. "smollm": it falls back to GPT-2's regex without isolating digits), so it can
     differ from llama.cpp where the digit split matters (e.g. "a  123": GPT-2's regex gives
     " " + " 123", the digit split gives "  " + "1" ...); such strings are listed, not failed.
   - for a SentencePiece ("llama") vocabulary: transformers' GGUF tokenizer decides PASS.
Exits 1 when a check fails.
"""
import argparse
import os
import sys

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
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
    "12345",
    " 2024",
    "In 2024, the price rose 3.5% to $1,299.99.",
    "Call 555-0123 or  42  times, x  7",
    "x²+y³=z¹ and ½ cup, Ⅻ and ① and ١٢٣",
    "def f(x):\n    return x ** 2\n",
    "\n\n\tTabs\tand\r\nnewlines  \n",
    "I'm sure they'll say it's fine, don't you think? WE'VE SEEN IT",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
    "Ünïcödé ΑΒΓ Россия مرحبا 한국어",
    "   leading and trailing   ",
    "version v1.2.3-rc4 build #99 on 2024-11-27T10:00Z",
    "Supercalifragilisticexpialidocious!!! ???",
    "a1b22c333d4444",
]

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre -> (llama.cpp's regex list for it, ignore_merges), from llama-vocab.cpp.
# llama.cpp's GPT-2 regex ends without "|\s+"; its split keeps unmatched text as pieces, which is
# what the trailing alternative does here.
LLAMACPP_PRE = {
    **{k: ([_GPT2], False) for k in ("gpt-2", "phi-2", "mpt", "olmo")},
    **{k: ([r"\p{N}", _GPT2], False)
       for k in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")},
    **{k: ([_LLAMA3], True) for k in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                                      "pixtral")},
    **{k: ([_LLAMA3], False) for k in ("smaug-bpe", "dbrx")},
    **{k: ([_QWEN2], False) for k in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
}


def llamacpp_reference_tokenizer(path):
    """A byte-level GGUF vocabulary split the way llama.cpp splits it; None when the file is not
    byte-level or its pre is not in LLAMACPP_PRE."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.integrations.gguf.reader import read_gguf_metadata

    meta, _ = read_gguf_metadata(path, ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                        "tokenizer.ggml.token_type"))
    if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") not in LLAMACPP_PRE:
        return None, None
    pre = meta["tokenizer.ggml.pre"]
    regexes, ignore_merges = LLAMACPP_PRE[pre]
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    spelled = [t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode()) for t in tokens]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(spelled)}, merges=merges,
                              ignore_merges=ignore_merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    # llama.cpp matches control tokens (type 3) whole before splitting.
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(tokens, types) if ty == 3 and set(t) <= alphabet])
    return tk, pre


def check_tokenizer(gguf_path, out_dir):
    gdir, gname = os.path.split(os.path.abspath(gguf_path))
    hf = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    ours = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    cpp, pre = llamacpp_reference_tokenizer(gguf_path)
    ok, n_hf_diff = True, 0
    print(f"tokenizer reference: {'llama.cpp split for pre=' + repr(pre) if cpp else 'transformers GGUF'}")
    for s in SENTENCES:
        got = ours.encode(s).ids
        want_hf = hf(s)["input_ids"]
        want = cpp.encode(s).ids if cpp else want_hf
        same = want == got
        ok &= same
        note = ""
        if cpp and want_hf != got:
            n_hf_diff += 1
            note = f"\n  transformers GGUF differs: {want_hf}"
        print(f"tokenizer {'ok  ' if same else 'DIFF'} {len(got):3d} ids  {s!r}"
              + ("" if same else f"\n  want {want}\n  got  {got}") + note)
        dec = ours.decode(got, skip_special_tokens=False)
        if dec != s:
            print(f"  (decode gives {dec!r})")
    print(f"tokenizer: {len(SENTENCES)} strings, "
          f"{'all' if ok else 'NOT all'} equal to the reference"
          + (f"; transformers' GGUF tokenizer differs on {n_hf_diff}" if cpp else ""))
    return ok, hf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    patch_gguf_special_ids()
    ok, ref_tok = check_tokenizer(args.gguf, args.out_dir)

    torch.manual_seed(0)
    ref = reference_model(args.gguf)
    conv = LlamaForCausalLM.from_pretrained(args.out_dir, dtype=torch.float32,
                                            attn_implementation="eager").eval()
    vocab = ref.config.vocab_size
    ids = [ref_tok(SENTENCES[0])["input_ids"], ref_tok(" ".join(SENTENCES))["input_ids"],
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
