#!/usr/bin/env bash
# Checks that `mpirun --oversubscribe -np 2 assay ...` writes what one process writes: score
# output byte for byte, and perplexity documents and totals (the JSON without timings).
# Needs: Open MPI (Debian openmpi-bin) and an assay built with MPI. Rerun: bash tools/mpi_check.sh
# [build/assay]. As root, export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 first.
set -euo pipefail
bin=${1:-build/assay}
model=tests/fixtures/models/llama
command -v mpirun >/dev/null || { echo "mpi_check: mpirun not found" >&2; exit 1; }
ldd "$bin" | grep -q libmpi || { echo "mpi_check: $bin was built without MPI" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 0 79); do
  printf '{"id": %d, "context": "Questions about topic %d. Question %d: what follows %d?", "continuation": " %d"}\n' \
    "$i" $((i % 4)) "$i" "$i" $((i + 1))
done >"$tmp/req.jsonl"
for i in $(seq 0 200); do printf 'Line %d of a text that needs many windows. ' "$i"; done >"$tmp/doc.txt"
run2() { timeout 300 mpirun --oversubscribe -np 2 "$bin" "$@"; }
"$bin" score "$model" --requests "$tmp/req.jsonl" --output "$tmp/one.jsonl" 2>/dev/null >/dev/null
run2 score "$model" --requests "$tmp/req.jsonl" --output "$tmp/two.jsonl" 2>/dev/null >/dev/null
cmp "$tmp/one.jsonl" "$tmp/two.jsonl"
strip() { grep -v '"wall_s"\|"tokens_per_s"' "$1"; }
"$bin" ppl "$model" "$tmp/doc.txt" --mode rolling --ctx 64 --json 2>/dev/null >"$tmp/one.json"
run2 ppl "$model" "$tmp/doc.txt" --mode rolling --ctx 64 --json 2>/dev/null >"$tmp/two.json"
diff <(strip "$tmp/one.json") <(strip "$tmp/two.json")
echo "mpi_check: 2 ranks give the same score output and perplexity as 1 process"
