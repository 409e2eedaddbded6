#!/usr/bin/env bash
# bench/run.sh — every benchmark in bench/ (what `make bench` runs): the CPU engine against
# transformers (bench/engine_bench.sh) and, when present, the tokenizer benchmark
# (bench/tokenize_bench.sh). Arguments are not passed on; each script reads its own env (see
# its header). Exit 1 when any of them failed; every one runs regardless.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
status=0
for script in bench/engine_bench.sh bench/tokenize_bench.sh; do
    [ -f "$script" ] || continue
    echo "==> $script" >&2
    bash "$script" || { echo "==> $script FAILED" >&2; status=1; }
done
exit $status
