#!/usr/bin/env python3
"""Writes tests/fixtures/stories260K/reference.json: what transformers computes on the checkpoint
`assay convert` makes from ../shared/models/stories260K/stories260K.gguf (Karpathy's TinyStories
260K Llama, a real trained model). tests/test_stories.c holds assay's engine to these numbers.

  python3 tools/make_stories_reference.py [--assay build/assay] [--gguf PATH] [--out PATH]

1. Converts the GGUF with `assay convert` into a temporary directory (removed afterwards).
2. Loads it with transformers (LlamaForCausalLM, float32, eager attention) and the converted
   tokenizer.json with `tokenizers` (BOS added, as the tokenizer's post-processor says).
3. "sequences": real sentences; per position the float32 log-softmax of the target, the argmax,
   and the smallest top-1 minus top-2 raw logit gap over the positions (min_top2_margin).
4. "generate": text prompts, 64 greedy tokens (generate(do_sample=False, min_new_tokens=64));
   kept only when the raw argmax at every step is the emitted token (EOS never reached, so
   min_new_tokens never masked it) and a full forward over prompt + continuation gives the
   same argmaxes.
5. "ppl": a story written for this file, HF's sliding-window recipe with max_length 128,
   stride 64 (every token after the first is scored exactly once), per-token NLL summed in
   double, mirroring tests/fixtures/models/llama/ppl_reference.json's "hf_sliding_window".
The references keep only inputs whose min_top2_margin is at least MARGIN_MIN (1e-3): ten
times the engine's 1e-4 log-prob tolerance, so an argmax cannot flip within tolerance.
Deterministic; re-runnable.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN_MIN = 1e-3
GEN_NEW_TOKENS = 64
PPL_CTX, PPL_STRIDE = 128, 64

SENTENCES = [
    "Once upon a time, there was a little girl named Lily.",
    "She liked to play in the park with her dog.",
    "One day, Tom found a big red ball under the tree.",
    "The cat was sad because it could not find its mom.",
    "Lily and Ben went to the beach. They built a sand castle and splashed in the water.",
    "\"Can I have a cookie?\" asked Sam. Mom smiled and said, \"Yes, but only one.\"",
    "The bird flew high in the sky. It saw a little boy who was crying.",
    "Once upon a time, in a small house, there lived a kind old man.",
    "Every morning, the sun came up and the flowers opened their petals.",
    "Timmy wanted to help his friend, so he gave him his toy car.",
]

PROMPTS = [
    "Once upon a time",
    "One day, a little girl named Lily",
    "Tom and his dog went to the park",
    "The sun was shining and the birds were singing.",
    "Once upon a time, there was a big bear",
    "Sara had a new red ball.",
    "There was a little boat on the sea.",
    "Max liked to play with his toys.",
]

PPL_TEXT = (
    "Once upon a time, there was a little girl named Mia. Mia loved to draw pictures of the sun, "
    "the trees and her cat, Whiskers. Every day after lunch, she sat at the kitchen table with her "
    "crayons and drew until it was time for her nap.\n"
    "One morning, Mia could not find her blue crayon. She looked under the table. She looked in her "
    "bag. She even looked in the cat's bed, but the crayon was not there. Mia felt sad. \"How can I "
    "draw the sky without my blue crayon?\" she asked.\n"
    "Her big brother, Leo, saw that she was sad. \"Let's look together,\" he said. Then "
    "Whiskers jumped down from the window and ran to the garden. Mia and Leo followed him.\n"
    "In the garden, next to the flowers, they saw something blue. It was the crayon! Whiskers had "
    "taken it outside to play. Mia laughed and hugged her cat. \"You silly cat,\" she said. \"You "
    "wanted to draw too!\""
)


def forward_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].float()


def top2_margins(logits):
    t = torch.topk(logits, 2, dim=-1).values
    return (t[:, 0] - t[:, 1]).double()


def ref_sequence(model, ids):
    logits = forward_logits(model, ids)
    lp = torch.log_softmax(logits, dim=-1)
    n = len(ids)
    return {"ids": ids,
            "logprobs": [float(lp[i, ids[i + 1]]) for i in range(n - 1)],
            "greedy": [int(x) for x in torch.argmax(logits[: n - 1], dim=-1)],
            "min_top2_margin": float(top2_margins(logits[: n - 1]).min())}


def ref_generate(model, prompt, eos):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=GEN_NEW_TOKENS,
                             min_new_tokens=GEN_NEW_TOKENS, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=eos)
    cont = [int(x) for x in out.sequences[0, len(prompt):]]
    raw = torch.stack([l[0].float() for l in out.logits])
    raw_argmax = [int(x) for x in torch.argmax(raw, dim=-1)]
    margin = float(top2_margins(raw).min())
    if raw_argmax != cont:
        step = next(i for i in range(len(cont)) if raw_argmax[i] != cont[i])
        return None, f"EOS was the argmax at step {step}"
    full = forward_logits(model, prompt + cont)
    if [int(x) for x in torch.argmax(full[len(prompt) - 1: -1], dim=-1)] != cont:
        return None, "cached decode and full forward disagree"
    return {"prompt": prompt, "continuation": cont, "min_top2_margin": margin}, None


def token_logprobs(model, ids):
    lp = torch.log_softmax(forward_logits(model, ids), dim=-1)
    return [float(lp[j, ids[j + 1]]) for j in range(len(ids) - 1)]


def hf_sliding_ppl(model, ids, max_length, stride):
    """HF 'Perplexity of fixed-length models' recipe, NLL summed exactly per token (as in
    tools/make_tiny_models.py)."""
    seq_len = len(ids)
    windows, nll_sum, n_tokens, doc_nll, doc_n, prev_end = [], 0.0, 0, 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        inp = ids[begin:end]
        labels = list(inp)
        for j in range(len(inp) - trg_len):
            labels[j] = -100
        lp = token_logprobs(model, inp)
        scored = [j + 1 for j in range(len(inp) - 1) if labels[j + 1] != -100]
        w_nll = -math.fsum(float(lp[j - 1]) for j in scored)
        nll_sum += w_nll
        n_tokens += len(scored)
        with torch.no_grad():
            loss = model(torch.tensor([inp]), labels=torch.tensor([labels])).loss
        num_valid = sum(1 for x in labels if x != -100)
        doc_nll += float(loss) * (num_valid - 1)
        doc_n += num_valid - 1
        windows.append({"begin": begin, "end": end, "trg_len": trg_len, "n_scored": len(scored),
                        "first_scored": begin + scored[0] if scored else None, "nll_sum": w_nll})
        prev_end = end
        if end == seq_len:
            break
    return {"max_length": max_length, "stride": stride, "nll_sum": nll_sum, "n_tokens": n_tokens,
            "ppl": math.exp(nll_sum / n_tokens), "windows": windows,
            "doc_recipe": {"note": "the docs' own arithmetic: loss(mean over the window) * "
                                   "(num_valid_tokens - 1); it undercounts by one token in every "
                                   "window after the first",
                           "nll_sum": doc_nll, "n_tokens": doc_n, "ppl": math.exp(doc_nll / doc_n)}}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assay", default=os.environ.get("ASSAY_BIN", os.path.join(ROOT, "build", "assay")))
    ap.add_argument("--gguf", default=os.path.join(ROOT, "..", "shared", "models", "stories260K",
                                                   "stories260K.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "stories260K",
                                                  "reference.json"))
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    tmp = tempfile.mkdtemp(prefix="stories-ref-")
    try:
        conv = os.path.join(tmp, "stories260K")
        subprocess.run([args.assay, "convert", args.gguf, conv], check=True)
        model = LlamaForCausalLM.from_pretrained(conv, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        tok = Tokenizer.from_file(os.path.join(conv, "tokenizer.json"))
        eos = model.config.eos_token_id
        notes = []

        seqs = []
        for s in SENTENCES:
            r = ref_sequence(model, tok.encode(s).ids)
            if r["min_top2_margin"] < MARGIN_MIN:
                notes.append(f"sentence {s!r} left out: top-2 margin {r['min_top2_margin']:.2e}")
                continue
            r["text"] = s
            seqs.append(r)

        gens = []
        for p in PROMPTS:
            g, why = ref_generate(model, tok.encode(p).ids, eos)
            if g is None or g["min_top2_margin"] < MARGIN_MIN:
                notes.append(f"prompt {p!r} left out: {why or 'top-2 margin %.2e' % g['min_top2_margin']}")
                continue
            g["text"] = p
            g["continuation_text"] = tok.decode(g["continuation"])
            gens.append(g)

        ids = tok.encode(PPL_TEXT).ids
        ppl_seq = ref_sequence(model, ids[:PPL_CTX])
        ref = {
            "model": "stories260K",
            "gguf": os.path.relpath(os.path.abspath(args.gguf), os.path.join(ROOT, "..")),
            "gguf_sha256": sha256(args.gguf),
            "converted_with": "assay convert GGUF OUT_DIR (f32)",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "dtype": "float32", "attn_implementation": "eager",
            "margin_min": MARGIN_MIN,
            "margin_note": "every sequence and generation kept has min_top2_margin >= margin_min (top-1 "
                           "minus top-2 raw logit), ten times the 1e-4 log-prob tolerance, so an engine "
                           "within tolerance cannot pick another argmax",
            "logprobs_note": "log_softmax in float32 of the float32 logits; logprobs[i] = lp[i][ids[i+1]], "
                             "greedy[i] = argmax logits[i], i in 0..n-2; ids = tokenizer.json encode(text) "
                             "(BOS added)",
            "sequences": seqs,
            "generate": gens,
            "generate_note": f"model.generate(do_sample=False, max_new_tokens={GEN_NEW_TOKENS}, "
                             f"min_new_tokens={GEN_NEW_TOKENS}); checked: raw argmax at every step is the "
                             "chosen token (EOS never reached) and a full forward over prompt+continuation "
                             "gives the same argmaxes",
            "ppl": {
                "text": PPL_TEXT,
                "hf_sliding_window": {
                    "tokens": "tokenizer(text).input_ids (with BOS, as the recipe's tokenizer call adds it)",
                    "ids": ids,
                    "recipe": "for begin in range(0, n, stride): end = min(begin + max_length, n); trg_len "
                              "= end - prev_end; labels = ids[begin:end] with the first len - trg_len set "
                              "to -100; the model scores labels[j+1] from position j; stop when end == n",
                    "runs": [hf_sliding_ppl(model, ids, PPL_CTX, PPL_STRIDE)]},
                "first_window_margin": ppl_seq["min_top2_margin"]},
        }
        if notes:
            ref["note"] = notes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp_out, args.out)
    run = ref["ppl"]["hf_sliding_window"]["runs"][0]
    print(f"{args.out}: {len(seqs)} sequences (min margin "
          f"{min(s['min_top2_margin'] for s in seqs):.3g}), {len(gens)} generations (min margin "
          f"{min(g['min_top2_margin'] for g in gens):.3g}), ppl text {len(ids)} tokens, "
          f"{run['n_tokens']} scored, ppl {run['ppl']:.4f}; {len(notes)} notes")
    for n in notes:
        print("  note:", n)


if __name__ == "__main__":
    main()
