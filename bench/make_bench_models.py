#!/usr/bin/env python3
"""Builds the two random float32 checkpoints the engine benchmark runs on (never committed):

  gpt2-124m   GPT2LMHeadModel with GPT-2 small's shape: 12 layers, dim 768, 12 heads,
              vocab 50257, 1024 positions, tied LM head (124.4M parameters)
  llama-100m  LlamaForCausalLM: 12 layers, dim 768, 12 heads / 4 KV heads (GQA), SwiGLU 2048,
              vocab 32000 (Llama 2's), 2048 positions, untied LM head (124.7M parameters,
              75.5M outside the embeddings)

Weights are transformers' own random init under torch.manual_seed(0) (initializer_range 0.02,
as the real models): the speed of a dense float32 forward does not depend on the values. Each
directory gets config.json + model.safetensors (float32). A tokenizer is not needed: the
benchmark feeds token ids. Re-running keeps a directory whose bench_stamp.json matches and
rebuilds it otherwise. Usage: python3 bench/make_bench_models.py [--out build/bench-models]
"""
import argparse
import json
import os
import shutil
import sys

import torch
import transformers

STAMP_VERSION = 1

SPECS = {
    "gpt2-124m": dict(
        cls="GPT2LMHeadModel",
        config=dict(
            model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024,
            vocab_size=50257, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            tie_word_embeddings=True, bos_token_id=50256, eos_token_id=50256,
        ),
    ),
    "llama-100m": dict(
        cls="LlamaForCausalLM",
        config=dict(
            model_type="llama", num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
            num_key_value_heads=4, intermediate_size=2048, vocab_size=32000,
            max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
            hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        ),
    ),
}


def build(name, spec, out_dir):
    stamp = {"version": STAMP_VERSION, "name": name, "spec": spec, "seed": 0,
             "transformers": transformers.__version__, "torch": torch.__version__}
    stamp_path = os.path.join(out_dir, "bench_stamp.json")
    if os.path.exists(stamp_path):
        try:
            with open(stamp_path) as f:
                if json.load(f) == stamp and os.path.exists(os.path.join(out_dir, "model.safetensors")):
                    print(f"{name}: up to date ({out_dir})", file=sys.stderr)
                    return
        except (OSError, ValueError):
            pass
    torch.manual_seed(0)
    cfg_kw = dict(spec["config"])
    model_type = cfg_kw.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg_kw)
    config.architectures = [spec["cls"]]
    config.dtype = torch.float32
    model = getattr(transformers, spec["cls"])(config).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    # build in a sibling temp dir, then swap it in, so an interrupted run never leaves a
    # half-written checkpoint that looks complete
    tmp = out_dir + ".tmp.build"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    with open(os.path.join(tmp, "bench_stamp.json"), "w") as f:
        json.dump(stamp, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    print(f"{name}: wrote {out_dir} ({n_params / 1e6:.1f}M parameters)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/bench-models")
    ap.add_argument("--only", choices=sorted(SPECS))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, spec in SPECS.items():
        if args.only and name != args.only:
            continue
        build(name, spec, os.path.join(args.out, name))


if __name__ == "__main__":
    main()
