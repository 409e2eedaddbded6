#!/usr/bin/env python3
"""Writes the tiny GGUF fixtures of tests/fixtures/gguf/ and the seed corpus of fuzz/corpus/gguf/.

  tiny.gguf            a 2-layer llama (dim 32, 4 heads, 2 KV heads, FFN 32) whose tensors use every
                       type `assay convert` supports (Q8_0, Q4_0, Q4_1, F16, BF16, F32), tied
                       embeddings (no output.weight), a small SentencePiece-style vocabulary with
                       byte fallback tokens, one control token and a chat template.
  tiny_expected.safetensors
                       the quantized tensors of tiny.gguf (and one F16, one BF16) dequantized to
                       float32 by the gguf package (gguf.quants.dequantize), under their GGUF names,
                       numpy shape (= ggml ne reversed); token_embd.weight only its first 32 rows
                       (key "token_embd.weight[:32]") to keep the file small. Both sides compute
                       d*q (+m) in float32, so tests compare exactly.
  unsupported.gguf     tiny.gguf with blk.0.attn_q.weight stored as Q5_0 (not supported by convert).
  meta.gguf            no tensors; one metadata key of every value type, arrays of arrays.

Deterministic (fixed seed); rerun with `python3 tools/make_gguf_fixtures.py` from the repo root.
"""
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "gguf")

DIM, N_HEAD, N_KV, FFN, N_LAYER, CTX = 32, 4, 2, 32, 2, 128

CHAT_TEMPLATE = "{% for m in messages %}<|end|>{{ m['content'] }}{% endfor %}"


def vocab():
    """A SentencePiece-style vocabulary: specials, 256 byte tokens, characters, merged pieces.

    Scores follow SentencePiece BPE: a merged piece learned earlier has a higher score."""
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    merged = ["▁t", "he", "▁the", "in", "▁a", "er", "an", "on", "▁s", "re", "at", "nd", "▁an",
              "▁and", "ing", "▁in", "ou", "▁w", "as", "▁was", "it", "▁it", "is", "▁is", "or"]
    for i, piece in enumerate(merged):
        tokens.append(piece)
        scores.append(-float(i))
        types.append(1)
    chars = ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + [".", ",", "!", "T", "O"]
    for i, ch in enumerate(chars):
        tokens.append(ch)
        scores.append(-100.0 - i)
        types.append(1)
    tokens.append("<|end|>")
    scores.append(0.0)
    types.append(3)
    return tokens, scores, types


def llama_tensors(rng, n_vocab, attn_q_type=Q.Q4_0):
    """(name, float32 array in numpy shape, ggml type) for a llama with tied embeddings."""
    hd = DIM // N_HEAD

    def w(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.5).astype(np.float32)

    out = [("token_embd.weight", w(n_vocab, DIM), Q.Q8_0),
           ("output_norm.weight", (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32), Q.F32)]
    for layer in range(N_LAYER):
        p = f"blk.{layer}."
        # layer 0 spreads the quantized types over the matrices; layer 1 uses the float types.
        types = ([attn_q_type, Q.Q4_1, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1] if layer == 0 else
                 [Q.F16, Q.BF16, Q.F32, Q.Q8_0, Q.F16, Q.BF16, Q.F32])
        shapes = [(N_HEAD * hd, DIM), (N_KV * hd, DIM), (N_KV * hd, DIM), (DIM, N_HEAD * hd),
                  (FFN, DIM), (FFN, DIM), (DIM, FFN)]
        names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
        out.append((p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32), Q.F32))
        for name, shape, t in zip(names, shapes, types):
            out.append((p + name + ".weight", w(*shape), t))
        out.append((p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32), Q.F32))
    return out


def encode(arr, t):
    """Array in numpy shape → (raw array for GGUFWriter, raw_dtype or None)."""
    if t == Q.F32:
        return arr.astype(np.float32), None
    if t == Q.F16:
        return arr.astype(np.float16), None
    return gguf.quants.quantize(arr, t), t


def dequant(raw, t, shape):
    if t in (Q.F32, Q.F16):
        return raw.astype(np.float32).reshape(shape)
    return gguf.quants.dequantize(raw, t).astype(np.float32).reshape(shape)


def write_llama(path, rng, attn_q_type=Q.Q4_0):
    tokens, scores, types = vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("assay-tiny")
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_dimension_count(DIM // N_HEAD)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    expected = {}
    for name, arr, t in llama_tensors(rng, len(tokens), attn_q_type):
        raw, raw_dtype = encode(arr, t)
        if raw_dtype is None:
            w.add_tensor(name, raw)
        else:
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=raw_dtype)
        if name == "token_embd.weight":
            expected[name + "[:32]"] = np.ascontiguousarray(dequant(raw, t, arr.shape)[:32])
        elif t not in (Q.Q5_0, Q.F32) and (t not in (Q.F16, Q.BF16) or name.startswith("blk.0.")):
            expected[name] = dequant(raw, t, arr.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def write_meta(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 0.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", -1.5)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, 1.5])
    w.add_array("t.arr_str", ["a", "", "ccc"])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def small_seed(path, version=3, n_tensor_type=0):
    """A minimal file by hand: one key, one 1-D tensor of 32 elements of the given type."""
    sizes = {0: 128, 1: 64, 8: 34, 2: 18, 3: 20, 30: 64, 13: 0}
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    ti = s("w") + struct.pack("<I", 1) + struct.pack("<Q", 32) + struct.pack("<IQ", n_tensor_type, 0)
    head = b"GGUF" + struct.pack("<IQQ", version, 1, 1) + kv + ti
    head += b"\0" * ((32 - len(head) % 32) % 32)
    data = bytes((i * 37) & 0xFF for i in range(sizes.get(n_tensor_type, 16)))
    with open(path, "wb") as f:
        f.write(head + data)


def write_vocab_seed(path, model, pre="llama-bpe"):
    """No tensors; a 7-token vocabulary of the given tokenizer model (fuzz seed for the
    tokenizer.json builder); a gpt2 vocabulary gets tokenizer.ggml.pre = pre."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model(model)
    if model == "llama":
        w.add_token_list(["<unk>", "<s>", "</s>", "▁", "a", "▁a", "<0x41>"])
        w.add_token_scores([0.0, 0.0, 0.0, -2.0, -3.0, -1.0, 0.0])
        w.add_token_types([2, 3, 3, 1, 1, 1, 6])
    else:
        w.add_token_list(["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab", "c"])
        w.add_token_types([3, 1, 1, 1, 1, 1, 1])
        w.add_token_merges(["a b", "Ġ ab"])
        w.add_string("tokenizer.ggml.pre", pre)
    w.add_bos_token_id(1 if model == "llama" else 0)
    w.add_eos_token_id(2 if model == "llama" else 0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(CORPUS, exist_ok=True)
    expected = write_llama(os.path.join(OUT, "tiny.gguf"), np.random.default_rng(1234))
    save_file(expected, os.path.join(OUT, "tiny_expected.safetensors"))
    write_llama(os.path.join(OUT, "unsupported.gguf"), np.random.default_rng(1234), Q.Q5_0)
    write_meta(os.path.join(OUT, "meta.gguf"))
    # fuzz seeds: small files covering each path of the parser
    with open(os.path.join(OUT, "meta.gguf"), "rb") as f:
        meta = f.read()
    with open(os.path.join(CORPUS, "meta.gguf"), "wb") as f:
        f.write(meta)
    with open(os.path.join(CORPUS, "meta_v2.gguf"), "wb") as f:
        f.write(meta[:4] + struct.pack("<I", 2) + meta[8:])
    for name, t in [("f32", 0), ("f16", 1), ("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("bf16", 30),
                    ("q5_k", 13)]:
        small_seed(os.path.join(CORPUS, f"one_{name}.gguf"), 3, t)
    small_seed(os.path.join(CORPUS, "one_f32_v2.gguf"), 2, 0)
    write_vocab_seed(os.path.join(CORPUS, "vocab_llama.gguf"), "llama")
    write_vocab_seed(os.path.join(CORPUS, "vocab_gpt2.gguf"), "gpt2")
    write_vocab_seed(os.path.join(CORPUS, "vocab_gpt2_smollm.gguf"), "gpt2", "smollm")
    for p in sorted(os.listdir(OUT)):
        print(f"{os.path.join(OUT, p)}: {os.path.getsize(os.path.join(OUT, p))} bytes")


if __name__ == "__main__":
    main()
