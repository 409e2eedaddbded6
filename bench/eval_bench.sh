#!/usr/bin/env bash
# assay eval vs lm-evaluation-harness (HF backend, CPU, float32), end to end (process start to
# results file), same machine, model, documents and thread count. Records nothing by itself:
# copy the printed lines into bench/RESULTS.md.
#   PY=/path/to/python-with-lm_eval [ONLY=gen] [MAX_GEN=64] bash bench/eval_bench.sh [MODEL_DIR]
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
# ONLY=gen runs the generation case alone
for task in $([ "${ONLY:-}" = gen ] || echo mmlu hellaswag); do
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
[ "${ONLY:-}" = gen ] || echo "(lm-eval computes each request's tokens except where its one-token-continuation cache groups them; its count is the 'without sharing' figure less that cache's savings)"

# Generation: the GSM8K-shaped items of tools/make_lmeval_gen_reference.py (60 test, 5-shot from
# 24 train), lm-eval's gsm8k config, MAX_GEN new tokens at most; lm-eval batch size 1 (its
# default), assay's continuous batching. The generations are compared, then prompts/s and new
# tokens/s are taken over each tool's generation phase (lm-eval: its simple_evaluate call).
MAX_GEN=${MAX_GEN:-64}
run "lm-eval gsm8k (5-shot)" $PY tools/make_lmeval_gen_reference.py --model "$M" --out "$T/lm-gen" \
    --max-gen-toks "$MAX_GEN"
run "assay gsm8k (5-shot)" build/assay eval "$M" --tasks gsm8k --data "$T/lm-gen/data" \
    --max-gen-toks "$MAX_GEN" --threads "$THREADS" --output-path "$T/assay-gen" --log-samples
$PY - "$T/assay-gen" "$T/lm-gen/model" <<'PY'
import json, sys
a, l = sys.argv[1], sys.argv[2]
ours = [json.loads(x) for x in open(f"{a}/samples_gsm8k.jsonl")]
ref = {r["doc_id"]: r for r in map(json.loads, open(f"{l}/samples_gsm8k.jsonl"))}
same = sum(o["resps"][0][0] == ref[o["doc_id"]]["resp"] for o in ours)
new = sum(o["n_tokens"] for o in ours)
g = json.load(open(f"{a}/results.json"))["assay"]["cost"]["generation"]
ls = json.load(open(f"{l}/results.json"))["seconds_simple_evaluate"]
n = len(ours)
print(f"  identical generations {same}/{n}; new tokens {new} (the same tokens for both where identical)")
print(f"  lm-eval: {ls:.2f} s, {n / ls:.2f} prompts/s, {new / ls:.1f} new tokens/s (simple_evaluate)")
print(f"  assay:   {g['seconds']:.2f} s, {n / g['seconds']:.2f} prompts/s, {new / g['seconds']:.1f} new tokens/s "
      f"(generation phase); ratio {ls / g['seconds']:.1f}x")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$T"
