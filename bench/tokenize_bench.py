#!/usr/bin/env python3
"""Single-thread throughput of the Hugging Face `tokenizers` library, the reference half of
bench/tokenize_bench.sh. Same work as bench/tokenize_bench.c: the file's lines (split at '\\n',
newline excluded, empty lines kept) through encode_batch (and encode_batch_fast, which skips
offsets, when this `tokenizers` has it), then the whole file through encode;
no special tokens added; best of N repeats; prints one JSON object.

    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 bench/tokenize_bench.py TOKENIZER TEXT [REPEATS]

The variables are set here too (before `tokenizers` is imported), so the run is single-threaded
however it is started.
"""
import json
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer  # noqa: E402


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, text_path = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(path)
    load_s = time.perf_counter() - t0
    with open(text_path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")

    best_lines = best_whole = best_fast = float("inf")
    tokens_lines = tokens_whole = tokens_fast = 0
    for _ in range(repeats):
        # encode_batch_fast (tokenizers >= 0.21) skips offset tracking, like the C driver.
        if hasattr(tok, "encode_batch_fast"):
            s = time.perf_counter()
            enc = tok.encode_batch_fast(lines, add_special_tokens=False)
            best_fast = min(best_fast, time.perf_counter() - s)
            tokens_fast = sum(len(e.ids) for e in enc)
            del enc
        s = time.perf_counter()
        enc = tok.encode_batch(lines, add_special_tokens=False)
        best_lines = min(best_lines, time.perf_counter() - s)
        tokens_lines = sum(len(e.ids) for e in enc)
        del enc
        s = time.perf_counter()
        e = tok.encode(text, add_special_tokens=False)
        best_whole = min(best_whole, time.perf_counter() - s)
        tokens_whole = len(e.ids)
    n = len(raw)
    print(json.dumps({
        "impl": "hf-tokenizers", "tokenizer": path, "bytes": n, "lines": len(lines),
        "load_s": round(load_s, 4), "lines_s": round(best_lines, 6), "lines_tokens": tokens_lines,
        "lines_mb_s": round(n / best_lines / 1e6, 3), "whole_s": round(best_whole, 6),
        "whole_tokens": tokens_whole, "whole_mb_s": round(n / best_whole / 1e6, 3),
        "lines_fast_s": round(best_fast, 6), "lines_fast_tokens": tokens_fast,
        "lines_fast_mb_s": round(n / best_fast / 1e6, 3),
        "repeats": repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
