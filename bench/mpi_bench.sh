#!/usr/bin/env bash
# assay eval throughput on the CPU at 1 and 2 MPI ranks, against 1 process with 1 and 2 threads.
# Same model, documents and output; prints one line per run (copy them into bench/RESULTS.md).
#   bash bench/mpi_bench.sh [MODEL_DIR]     (REPEAT=2 LIMIT=6 TASKS=mmlu FEWSHOT=5 by default)
# MODEL_DIR defaults to stories260K converted from ../shared; the data is ../shared's MMLU.
# Needs Open MPI (openmpi-bin) and an assay built with MPI. As root, set
# OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/assay-mpibench-XXXXXX)
trap 'rm -rf "$T"' EXIT
M=${1:-}
if [ -z "$M" ]; then
    M=$T/stories260K
    build/assay convert ../shared/models/stories260K/stories260K.gguf "$M" >/dev/null
fi
mkdir -p "$T/data" && ln -s "$(cd ../shared/data && pwd)/mmlu" "$T/data/mmlu"
REPEAT=${REPEAT:-2}
ARGS=(--tasks "${TASKS:-mmlu}" --data "$T/data" --num-fewshot "${FEWSHOT:-5}" --limit "${LIMIT:-6}")
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u '+%F %H:%M') UTC"
echo "model: $M; eval ${ARGS[*]}"
run() { # name, command...
    local name=$1; shift
    local l0 t0 t1 out=$T/out-$RANDOM
    l0=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s.%N)
    "$@" --output-path "$out" >"$T/log" 2>&1 || { cat "$T/log"; exit 1; }
    t1=$(date +%s.%N)
    python3 - "$out/results.json" "$name" "$(echo "$t1 - $t0" | bc)" "$l0" \
        "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["assay"]
c, n = a["cost"], sum(json.load(open(sys.argv[1]))["n-samples"][k]["effective"]
                      for k in json.load(open(sys.argv[1]))["n-samples"])
wall = float(sys.argv[3])
ranks = a.get("per_rank", [])
per = ", ".join(f"r{r['rank']} {r['score_s']:.1f} s/{r['tokens_computed']:.0f} tok" for r in ranks)
print(f"{sys.argv[2]:<26} wall {wall:7.2f} s  score {c['wall_s']['score']:7.2f} s  "
      f"{n / wall:6.2f} docs/s  computed {c['tokens_computed']:.0f}  load {sys.argv[4]}->{sys.argv[5]}"
      f"  [{per}]")
PY
    rm -rf "$out"
}
for i in $(seq "$REPEAT"); do
    run "1 process, 1 thread" build/assay eval "$M" "${ARGS[@]}" --threads 1
    run "1 process, 2 threads" build/assay eval "$M" "${ARGS[@]}" --threads 2
    run "2 ranks x 1 thread" mpirun --oversubscribe -np 2 build/assay eval "$M" "${ARGS[@]}"
    run "2 ranks, unbound" mpirun --oversubscribe --bind-to none -np 2 build/assay eval "$M" \
        "${ARGS[@]}" --threads 1
done
