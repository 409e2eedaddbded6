#!/usr/bin/env python3
"""Float64 references for the CPU weight formats (--weights bf16 / q8_0), and q8_llama.gguf (a
tiny llama whose matrices are Q8_0 blocks that a round trip through f32 would change).

Needs (PyPI): torch 2.x (CPU), transformers 5.24, numpy. Rerun:
    python3 tools/make_weights_format_reference.py [--out tests/fixtures/weights_formats]

For each tiny fixture model (tests/fixtures/models/{llama,qwen2,mistral}) and each format, every
nn.Linear and nn.Embedding weight is rounded as the engine stores it, then the whole model runs in
float64 (eager attention) on the sequences of the fixture's reference.json, and the log-probs of
each next token are written to <model>_<format>.json. The formats, as GGUF / PyTorch define them:
  bf16: round to nearest even (torch .to(bfloat16)).
  q8_0: per output row, blocks of 32 consecutive inputs: d = max|w| / 127 in float32, q =
        roundf(w * (1 / d)) (half away from zero), d stored as float16; weight = float16(d) * q.
  f32:  the weights as they are (the same check for the f32 engine).
"""
import argparse
import json
import os

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "tests", "fixtures", "models")


def round_q8_0(w):
    """w: float32 (rows, k) -> dequantized float32, GGUF Q8_0 (k padded with zeros to 32)."""
    rows, k = w.shape
    kp = (k + 31) // 32 * 32
    x = np.zeros((rows, kp), dtype=np.float32)
    x[:, :k] = w
    b = x.reshape(rows, kp // 32, 32)
    d = (np.abs(b).max(axis=2, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = (b * inv).astype(np.float32).astype(np.float64)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # roundf: half away from zero, exact in float64
    d16 = d.astype(np.float16).astype(np.float32)
    q = q.astype(np.int8)  # GGUF stores int8: no negative zero
    out = (d16 * q.astype(np.float32)).astype(np.float32)
    return out.reshape(rows, kp)[:, :k]


def q8_0_blocks(w, shrink):
    """GGUF Q8_0 bytes of w (rows, k % 32 == 0): per block f16 d then 32 int8. shrink: q // 2 and
    d * 2, so that no block reaches |q| = 127 and quantizing its values again changes it."""
    rows, k = w.shape
    b = w.reshape(rows, k // 32, 32).astype(np.float32)
    d = (np.abs(b).max(axis=2, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = (b * inv).astype(np.float32).astype(np.float64)
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)
    if shrink:
        q = (q // 2).astype(np.int8)
        d = d * np.float32(2)
    out = bytearray()
    for r in range(rows):
        for j in range(k // 32):
            out += np.float16(d[r, j, 0]).tobytes() + q[r, j].tobytes()
    return bytes(out)


def write_q8_gguf(path):
    """A 2-layer llama GGUF (v3) whose matrices are all Q8_0 (blocks that a round trip through
    f32 would change) and whose norms are F32; written by hand (no gguf package needed)."""
    import struct
    dim, heads, kv, ffn, layers, vocab = 64, 4, 2, 128, 2, 96
    rng = np.random.default_rng(5)
    kvs = [("general.architecture", 8, "llama"), ("llama.block_count", 4, layers),
           ("llama.embedding_length", 4, dim), ("llama.feed_forward_length", 4, ffn),
           ("llama.attention.head_count", 4, heads), ("llama.attention.head_count_kv", 4, kv),
           ("llama.context_length", 4, 128), ("llama.rope.freq_base", 6, 10000.0),
           ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
           ("tokenizer.ggml.tokens", 9, [f"t{i}" for i in range(vocab)])]
    tensors = []  # (name, ne (ggml order), type, bytes)

    def mat(name, rows, cols):
        w = (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32)
        tensors.append((name, (cols, rows), 8, q8_0_blocks(w, True)))

    def vec(name, n):
        tensors.append((name, (n,), 0, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32).tobytes()))
    mat("token_embd.weight", vocab, dim)
    vec("output_norm.weight", dim)
    mat("output.weight", vocab, dim)
    hd = dim // heads
    for l in range(layers):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", dim)
        mat(p + "attn_q.weight", heads * hd, dim)
        mat(p + "attn_k.weight", kv * hd, dim)
        mat(p + "attn_v.weight", kv * hd, dim)
        mat(p + "attn_output.weight", dim, heads * hd)
        vec(p + "ffn_norm.weight", dim)
        mat(p + "ffn_gate.weight", ffn, dim)
        mat(p + "ffn_up.weight", ffn, dim)
        mat(p + "ffn_down.weight", dim, ffn)

    def gstr(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t)
        if t == 8:
            out += gstr(v)
        elif t == 4:
            out += struct.pack("<I", v)
        elif t == 6:
            out += struct.pack("<f", v)
        else:  # array of strings
            out += struct.pack("<IQ", 8, len(v)) + b"".join(gstr(x) for x in v)
    offset = 0
    for name, ne, t, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", t, offset)
        offset += (len(data) + 31) // 32 * 32
    out += bytes(-len(out) % 32)
    for name, ne, t, data in tensors:
        out += data + bytes(-len(data) % 32)
    with open(path, "wb") as f:
        f.write(out)


def round_weights(model, fmt):
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)):
                w = mod.weight.data
                if fmt == "bf16":
                    mod.weight.data = w.to(torch.bfloat16).to(torch.float32)
                elif fmt == "q8_0":
                    mod.weight.data = torch.from_numpy(round_q8_0(w.numpy().astype(np.float32)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "weights_formats"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    # the quantizer alone: rows of 40 (a whole block and a padded one) with ties at .5, zeros,
    # an all-zero block and a lone extreme value
    rng = np.random.default_rng(13)
    w = (rng.standard_normal((6, 40)) * 0.3).astype(np.float32)
    w[1, :32] = 0.0
    w[2, 3] = 25.0
    w[3, :] = np.arange(40, dtype=np.float32) - np.float32(19.5)  # d = 1: every x * id a tie
    w[3, 31] = w[3, 39] = 127.0
    w[4, :] = -w[3, :]
    doc = {"format": "q8_0", "note": "input rows (float32 bits as integers) and the weights Q8_0 "
           "decodes them to (float32 bits), as GGUF defines the quantization",
           "rows": 6, "cols": 40,
           "input_bits": [int(v) for v in w.view(np.uint32).ravel()],
           "decoded_bits": [int(v) for v in round_q8_0(w).view(np.uint32).ravel()]}
    with open(os.path.join(a.out, "q8_0_vectors.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")
    write_q8_gguf(os.path.join(a.out, "q8_llama.gguf"))
    for name in ("llama", "qwen2", "mistral"):
        d = os.path.join(MODELS, name)
        ref = json.load(open(os.path.join(d, "reference.json")))
        seqs = [s["ids"] for s in ref["sequences"]]
        for fmt in ("f32", "bf16", "q8_0"):
            m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                                  attn_implementation="eager")
            m.eval()
            if m.config.tie_word_embeddings and m.lm_head.weight is not m.model.embed_tokens.weight:
                raise SystemExit(f"{name}: tied head is not the embedding table")
            round_weights(m, fmt)
            m = m.to(torch.float64)
            out = []
            with torch.no_grad():
                for ids in seqs:
                    t = torch.tensor([ids])
                    lp = torch.log_softmax(m(t).logits[0].to(torch.float64), dim=-1)
                    out.append({"ids": ids, "logprobs": [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]})
            doc = {"model": name, "format": fmt, "torch": torch.__version__,
                   "transformers": transformers.__version__, "compute": "float64, eager attention",
                   "note": "weights rounded as the format stores them, then the model in float64",
                   "sequences": out}
            with open(os.path.join(a.out, f"{name}_{fmt}.json"), "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            print(name, fmt, len(out), "sequences")


if __name__ == "__main__":
    main()
