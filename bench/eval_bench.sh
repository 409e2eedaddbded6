#!/usr/bin/env bash
# assay eval vs lm-evaluation-harness (HF backend, CPU, float32), end to end (process start to
# results file), same machine, model, documents and thread count. Records nothing by itself:
# copy the printed lines into bench/RESULTS.md.
#   PY=/path/to/python-with-lm_eval bash bench/eval_bench.sh [MODEL_DIR]
# MODEL_DIR defaults to stories260K converted from ../shared (a real trained tiny Llama).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
T=$(mktemp -d /tmp/assay-evalbench-XXXXXX)
M=${1:-}
if [ -z "$M" ]; then
    M=$T/stories260K
    build/assay convert ../shared/models/stories260K/stories260K.gguf "$M" >/dev/null
fi
SUBJECTS=${SUBJECTS:-abstract_algebra,anatomy,marketing}
PER_SUBJECT=${PER_SUBJECT:-100}
HS=${HS:-500}
THREADS=${THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, threads $THREADS; $(date -u +%F)"
echo "model: $M"
run() { # name, command...: prints wall seconds
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > "$T/$name.log" 2>&1 || { cat "$T/$name.log"; exit 1; }
    t1=$(date +%s.%N)
    printf '%-28s %8.2f s\n' "$name" "$(echo "$t1 - $t0" | bc)"
}
for task in mmlu hellaswag; do
    shots=0; [ $task = mmlu ] && shots=5
    run "lm-eval $task ($shots-shot)" $PY tools/make_lmeval_reference.py --model "$M" --out "$T/lm-$task" \
        --subjects "$SUBJECTS" --mmlu-per-subject "$PER_SUBJECT" --n "$HS" --tasks $task --fewshot $shots
    run "assay $task ($shots-shot)" build/assay eval "$M" --tasks $task --data "$T/lm-$task/data" \
        --num-fewshot $shots --threads "$THREADS" --output-path "$T/assay-$task"
    $PY - "$T/assay-$task/results.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["assay"]["cost"]
print(f"  assay tokens computed {c['tokens_computed']}, without sharing {c['tokens_no_sharing']}, "
      f"score {c['wall_s']['score']:.2f} s, peak RSS {c['peak_rss_bytes']/2**20:.0f} MiB")
PY
done
echo "(lm-eval computes each request's tokens except where its one-token-continuation cache groups them; its count is the 'without sharing' figure less that cache's savings)"
rm -rf "$T"
