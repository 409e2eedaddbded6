#!/usr/bin/env python3
"""Random-weight Hugging Face checkpoints shaped like real models, for the GPU benchmark and the
GPU check (never committed; nothing is downloaded). Standard library only, so it runs on a GPU
machine with or without numpy / torch:

  python3 tools/make_random_checkpoint.py SHAPE OUT_DIR [--layers N] [--seed S]

SHAPE: llama-3.2-1b (16 layers, dim 2048, 32/8 heads, FFN 8192, vocab 128256, llama3 RoPE,
tied head), qwen2.5-0.5b (24 layers, dim 896, 14/2 heads, FFN 4864, vocab 151936, q/k/v bias,
tied head), llama-3-8b (32 layers, dim 4096, 32/8 heads, FFN 14336, vocab 128256, untied head).
--layers N keeps the shape of every layer and stacks N of them (the benchmark says so when it
does this: per-layer throughput is the same, the LM head's share grows).

OUT_DIR gets config.json, model.safetensors (bf16, one file) and tokenizer.json. The weights are
N(0, 0.02) as transformers initialises them (norm weights 1), drawn once into a pool of about a
million values and laid into each tensor from a random offset: the speed of a dense forward does
not depend on the values, and rows still differ (the pool length is prime). The tokenizer is a
synthetic byte-level BPE with exactly the model's vocabulary (the 256 byte symbols, then pairs and
triples of them, no merges), so any generated id decodes. Re-running with the same arguments keeps
an existing directory (stamp.json).
"""
import json
import math
import os
import random
import struct
import sys

STAMP_VERSION = 1
POOL = 1048573  # prime: row r of width k starts at (r * k + off) % POOL, so rows differ

SHAPES = {
    "llama-3.2-1b": dict(
        arch="LlamaForCausalLM", model_type="llama", hidden=2048, ffn=8192, layers=16, heads=32,
        kv_heads=8, head_dim=64, vocab=128256, max_pos=131072, theta=500000.0, eps=1e-5, tie=True,
        qkv_bias=False,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "qwen2.5-0.5b": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2", hidden=896, ffn=4864, layers=24, heads=14,
        kv_heads=2, head_dim=64, vocab=151936, max_pos=32768, theta=1000000.0, eps=1e-6, tie=True,
        qkv_bias=True, rope_scaling=None),
    "llama-3-8b": dict(
        arch="LlamaForCausalLM", model_type="llama", hidden=4096, ffn=14336, layers=32, heads=32,
        kv_heads=8, head_dim=128, vocab=128256, max_pos=8192, theta=500000.0, eps=1e-5, tie=False,
        qkv_bias=False, rope_scaling=None),
}


def bf16_bits(x):
    """Round-to-nearest-even f32 -> bf16 bits (finite x)."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def make_pool(rng, std):
    vals = [bf16_bits(rng.gauss(0.0, std)) for _ in range(POOL)]
    return struct.pack("<%dH" % POOL, *vals)


def config_of(s, layers):
    cfg = {
        "architectures": [s["arch"]],
        "model_type": s["model_type"],
        "hidden_size": s["hidden"],
        "intermediate_size": s["ffn"],
        "num_hidden_layers": layers,
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "head_dim": s["head_dim"],
        "vocab_size": s["vocab"],
        "max_position_embeddings": s["max_pos"],
        "rope_theta": s["theta"],
        "rms_norm_eps": s["eps"],
        "hidden_act": "silu",
        "tie_word_embeddings": s["tie"],
        "initializer_range": 0.02,
        "bos_token_id": s["vocab"] - 2,
        "eos_token_id": s["vocab"] - 1,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    if s["model_type"] == "llama":
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    else:
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = None
        cfg["max_window_layers"] = layers
    if s["rope_scaling"]:
        cfg["rope_scaling"] = s["rope_scaling"]
    return cfg


def tensors_of(s, layers):
    """(name, shape, kind) in file order; kind: w (weight), n (norm, ones), b (bias)."""
    d, f, hd = s["hidden"], s["ffn"], s["head_dim"]
    q, kv = s["heads"] * hd, s["kv_heads"] * hd
    out = [("model.embed_tokens.weight", (s["vocab"], d), "w")]
    for i in range(layers):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (d,), "n"),
                (p + "self_attn.q_proj.weight", (q, d), "w"),
                (p + "self_attn.k_proj.weight", (kv, d), "w"),
                (p + "self_attn.v_proj.weight", (kv, d), "w")]
        if s["qkv_bias"]:
            out += [(p + "self_attn.q_proj.bias", (q,), "b"),
                    (p + "self_attn.k_proj.bias", (kv,), "b"),
                    (p + "self_attn.v_proj.bias", (kv,), "b")]
        out += [(p + "self_attn.o_proj.weight", (d, q), "w"),
                (p + "post_attention_layernorm.weight", (d,), "n"),
                (p + "mlp.gate_proj.weight", (f, d), "w"),
                (p + "mlp.up_proj.weight", (f, d), "w"),
                (p + "mlp.down_proj.weight", (d, f), "w")]
    out.append(("model.norm.weight", (d,), "n"))
    if not s["tie"]:
        out.append(("lm_head.weight", (s["vocab"], d), "w"))
    return out


def write_safetensors(path, tensors, rng):
    pool = make_pool(rng, 0.02)
    one = struct.pack("<H", bf16_bits(1.0))
    header, off = {}, 0
    for name, shape, _ in tensors:
        n = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    big = pool * 64  # 128 MiB of pool bytes: tensors are written in slices of it
    tmp = path + ".tmp"
    with open(tmp, "wb") as fp:
        fp.write(struct.pack("<Q", len(hb)))
        fp.write(hb)
        for name, shape, kind in tensors:
            n = math.prod(shape)
            if kind == "n":
                fp.write(one * n)
                continue
            pos = rng.randrange(POOL) * 2
            left = n * 2
            while left > 0:
                take = min(left, len(big) - pos)
                take -= take % 2
                fp.write(big[pos:pos + take])
                left -= take
                pos = 0
    os.replace(tmp, path)
    return off


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (what a byte-level BPE vocabulary is written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tokenizer(path, vocab):
    sym = bytes_to_unicode()
    pieces = list(sym)
    i = 0
    while len(pieces) < vocab and i < 256 * 256:
        pieces.append(sym[i // 256] + sym[i % 256])
        i += 1
    i = 0
    while len(pieces) < vocab:
        pieces.append(sym[(i // 65536) % 256] + sym[(i // 256) % 256] + sym[i % 256])
        i += 1
    pieces = pieces[:vocab]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {p: k for k, p in enumerate(pieces)}, "merges": []},
    }
    with open(path, "w") as fp:
        json.dump(tok, fp, ensure_ascii=False)


def main(argv):
    args = list(argv)
    layers, seed = None, 0
    if "--layers" in args:
        i = args.index("--layers")
        layers = int(args[i + 1])
        del args[i:i + 2]
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2 or args[0] not in SHAPES:
        print(__doc__, file=sys.stderr)
        return 2
    name, out = args
    s = SHAPES[name]
    layers = layers or s["layers"]
    stamp = {"version": STAMP_VERSION, "shape": name, "layers": layers, "seed": seed}
    stamp_path = os.path.join(out, "stamp.json")
    try:
        with open(stamp_path) as fp:
            if json.load(fp) == stamp:
                print("%s: up to date (%s, %d layers)" % (out, name, layers), file=sys.stderr)
                return 0
    except (OSError, ValueError):
        pass
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    with open(os.path.join(out, "config.json"), "w") as fp:
        json.dump(config_of(s, layers), fp, indent=1)
    tensors = tensors_of(s, layers)
    nbytes = write_safetensors(os.path.join(out, "model.safetensors"), tensors, rng)
    write_tokenizer(os.path.join(out, "tokenizer.json"), s["vocab"])
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fp:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, fp)
    with open(stamp_path, "w") as fp:
        json.dump(stamp, fp)
    n_params = sum(math.prod(t[1]) for t in tensors)
    print("%s: %s, %d layers, %.3fB parameters, %.2f GB bf16" %
          (out, name, layers, n_params / 1e9, nbytes / 1e9), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
