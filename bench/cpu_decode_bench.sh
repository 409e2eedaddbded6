#!/usr/bin/env bash
# bench/cpu_decode_bench.sh — CPU prompt processing and decode: assay against llama.cpp's
# llama-bench on the same weights, same threads, in one run, at f32, bf16 and Q8_0.
#
#   bash bench/cpu_decode_bench.sh [MODEL_DIR]      (default build/models/smollm2-135m, which
#                                                    tools/fetch_smollm2.sh makes)
# What it does:
#   1. checks for what it needs (cc, make, cmake, python3 with pip, curl or a PyPI mirror);
#   2. builds llama.cpp's llama-bench, llama-perplexity, llama-quantize (and convert_hf_to_gguf.py's gguf package) from the source
#      in PyPI's llama-cpp-python sdist: `pip download --no-binary llama-cpp-python --no-deps
#      llama-cpp-python` into $WORK (nothing of it is committed; reused when already built).
#      Not `--no-binary :all:`: that also builds the sdist's build backend and its tools (cmake
#      among them) from source just to read its metadata, which takes longer than the bench;
#   3. makes GGUF files of the same weights at f32, bf16 and q8_0: with llama-quantize from
#      $GGUF_SRC (default: the Q4_1 GGUF that tools/fetch_smollm2.sh converted into MODEL_DIR, so
#      both programs run exactly the same dequantized weights), else with llama.cpp's
#      convert_hf_to_gguf.py from MODEL_DIR ($PYTHON with numpy, torch, sentencepiece);
#   4. runs, $REPS rounds, for each format and work: assay on MODEL_DIR with --weights
#      f32|bf16|q8_0 against llama.cpp on the same weights at the same threads, back to back:
#      pp: `assay ppl` tokens/s over one $PP-token window against llama-bench -p $PP;
#      tg: `assay generate`'s decode-step rate over $TG new tokens from a short prompt (the
#          time after the first new token, as llama-bench -n $TG times its decode calls);
#      score: `assay ppl --ctx $PP` against llama-perplexity -c $PP over the same ~4.5 windows
#          of text, positions per second (llama-perplexity computes the LM head for half of
#          each window's positions, assay for all);
#   5. prints a markdown table of medians over rounds and the median (and range) of the
#      per-round ratios, with the load averages seen, and leaves it and the raw rows in $OUT.
# Env: WORK (default build/llamacpp), OUT (default build/cpu-decode-results), THREADS (default
# nproc), PP (512), TG (64), REPS (rounds, 5), SKIP_LLAMA=1 (assay only), GGUF_SRC, PYTHON (python3).
# The machine may be shared: every row carries the 1-minute load average when it ran.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

MODEL=${1:-build/models/smollm2-135m}
WORK=${WORK:-build/llamacpp}
OUT=${OUT:-build/cpu-decode-results}
THREADS=${THREADS:-$(nproc)}
PP=${PP:-512}
TG=${TG:-64}
REPS=${REPS:-5}
PYTHON=${PYTHON:-python3}
GGUF_SRC=${GGUF_SRC:-$(dirname "$MODEL")/cache/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$WORK" "$OUT"
WORK=$(cd "$WORK" && pwd)
# Each program runs with its own default wait policy: assay's CLI sets OMP_WAIT_POLICY=passive
# for itself (its GEMM threads wait adaptively, kernels/cpu/pool.h); llama.cpp's OpenMP threads
# spin by default. Exporting passive here once slowed llama.cpp's decode by 2-3x.
unset OMP_WAIT_POLICY

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing ($2)" >&2; exit 2; }; }
need cc "apt-get install build-essential"
need make "apt-get install make"
need python3 "apt-get install python3"
if [ -z "${SKIP_LLAMA:-}" ]; then
  need cmake "apt-get install cmake"
  need c++ "apt-get install g++"
fi
[ -f "$MODEL/config.json" ] || { echo "bench: $MODEL/config.json missing (tools/fetch_smollm2.sh build/assay $MODEL)" >&2; exit 2; }

make -j2 CUDA=0 >/dev/null || { echo "bench: building assay failed" >&2; exit 1; }
load() { cut -d' ' -f1 /proc/loadavg; }

LB=$WORK/build/bin/llama-bench
LQ=$WORK/build/bin/llama-quantize
LP=$WORK/build/bin/llama-perplexity
if [ -z "${SKIP_LLAMA:-}" ] && { [ ! -x "$LB" ] || [ ! -x "$LQ" ] || [ ! -x "$LP" ]; }; then
  echo "bench: fetching llama-cpp-python's sdist from PyPI" >&2
  python3 -m pip download --no-binary llama-cpp-python --no-deps -d "$WORK/sdist" llama-cpp-python >&2 ||
    { echo "bench: pip download llama-cpp-python failed" >&2; exit 1; }
  tgz=$(ls "$WORK"/sdist/llama_cpp_python-*.tar.gz | head -1)
  [ -d "${tgz%.tar.gz}" ] || tar -xzf "$tgz" -C "$WORK" || exit 1
  src=$(ls -d "$WORK"/llama_cpp_python-*/vendor/llama.cpp | head -1)
  ln -sfn "$src" "$WORK/src"
  echo "bench: building llama-bench from $src" >&2
  cmake -S "$src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2 &&
    cmake --build "$WORK/build" --target llama-bench llama-quantize llama-perplexity -j 2 >&2 ||
    { echo "bench: building llama-bench failed" >&2; exit 1; }
fi

# GGUF files of the same weights (llama.cpp's converter, its own gguf package from the sdist)
if [ -z "${SKIP_LLAMA:-}" ]; then
  for t in f32 bf16 q8_0; do
    g=$WORK/model-$t.gguf
    [ -s "$g" ] && continue
    if [ -f "$GGUF_SRC" ]; then
      "$LQ" --allow-requantize "$GGUF_SRC" "$g" "$(echo "$t" | tr a-z A-Z)" >&2
    else
      PYTHONPATH=$WORK/src/gguf-py "$PYTHON" "$WORK/src/convert_hf_to_gguf.py" "$MODEL" \
        --outtype "$t" --outfile "$g" >&2
    fi || { echo "bench: making the $t GGUF failed" >&2; exit 1; }
  done
fi

# assay's inputs: one PP-token document (ppl with --ctx PP scores PP tokens in one window) and a
# short prompt for decoding
python3 - "$OUT/pp.txt" "$PP" <<'EOF'
import sys
words = ("the river ran low that autumn and the old ferryman spent his mornings mending nets "
         "children came down to the bank after school to skip stones").split()
open(sys.argv[1], "w").write(" ".join(words[i % len(words)] for i in range(int(sys.argv[2]) * 2)))
EOF
# the scoring text: about 4.5 windows of PP tokens (llama-perplexity runs the 4 whole ones)
python3 - "$OUT/score.txt" "$PP" <<'EOF'
import sys
words = ("a fisherman who lived alone by the harbour kept a small boat painted blue and every "
         "morning before the sun rose he rowed out past the lighthouse to check his lines while "
         "the gulls argued overhead about the scraps he threw them").split()
n = int(sys.argv[2]) * 4
open(sys.argv[1], "w").write(" ".join(words[i % len(words)] for i in range(n)) + "\n")
EOF
echo '{"prompt": "Once upon a time, in a small village by the sea, there lived"}' >"$OUT/prompt.jsonl"

assay_ppl_rate() { # $1 text file, $2 weights: tokens/s of `assay ppl` in windows of $PP
  ./build/assay ppl "$MODEL" "$1" --ctx "$PP" --threads "$THREADS" --weights "$2" 2>&1 |
    sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p' | tail -1
}
assay_pp() { assay_ppl_rate "$OUT/pp.txt" "$1"; }
# decode: the rate of the decode steps, as llama-bench's tg times only its one-token decode
# calls: (new tokens - 1) / (time of the last token - time of the first), from the prompt's
# ttft_s and latency_s. `assay generate`'s own summary rate divides by the wall time, prefill
# included, which on a 15-token prompt and 64 new tokens was 1.2% (f32) and 6.0% (Q8_0) lower
# (bench/RESULTS.md).
assay_tg() {
  rm -f "$OUT/gen-$1.jsonl"
  ./build/assay generate "$MODEL" --prompts "$OUT/prompt.jsonl" --max-new-tokens "$TG" \
    --threads "$THREADS" --weights "$1" --output "$OUT/gen-$1.jsonl" >/dev/null 2>&1
  [ -s "$OUT/gen-$1.jsonl" ] && python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
if r["n_tokens"] > 1 and r["latency_s"] > r["ttft_s"]:
    print("%.2f" % ((r["n_tokens"] - 1) / (r["latency_s"] - r["ttft_s"])))' "$OUT/gen-$1.jsonl"
}
# scoring: perplexity over the same text in windows of $PP tokens, as positions run through the
# model per second. llama-perplexity computes logits for the second half of each window only
# (it scores those), assay ppl for every position: assay does more work per position.
assay_score() { assay_ppl_rate "$OUT/score.txt" "$1"; }
llama_score() { # $1 gguf: positions/s from its log's timestamps (M.SS.mmm.uuu), from "calculating
  # perplexity over N chunks" to "Final estimate": N windows of $PP positions
  "$LP" -m "$1" -f "$OUT/score.txt" -c "$PP" -b "$PP" -t "$THREADS" --log-timestamps --log-prefix 2>&1 | python3 -c '
import re, sys
t0 = n = t1 = None
for line in sys.stdin:
    m = re.match(r"\s*(\d+)\.(\d+)\.(\d+)\.(\d+) ", line)
    if not m:
        continue
    t = int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1e3 + int(m[4]) / 1e6
    c = re.search(r"calculating perplexity over (\d+) chunks", line)
    if c:
        t0, n = t, int(c[1])
    elif "Final estimate" in line:
        t1 = t
if t0 is not None and t1 is not None and t1 > t0:
    print("%.1f" % (n * int(sys.argv[1]) / (t1 - t0)))' "$PP"
}
llama_pp() { llama_rate "$1" pp; }
llama_tg() { llama_rate "$1" tg; }
llama_rate() { # $1 gguf, $2 pp|tg: one timed repetition (llama-bench warms up first)
  local args=(-p "$PP" -n 0)
  [ "$2" = tg ] && args=(-p 0 -n "$TG")
  "$LB" -m "$1" "${args[@]}" -t "$THREADS" -r 1 -o csv 2>/dev/null |
    python3 -c 'import csv,sys; r=list(csv.DictReader(sys.stdin)); print(r[-1]["avg_ts"] if r else "")'
}

# Rounds: within a round each (format, work) runs assay then llama.cpp back to back (the order
# alternates between rounds), so both see the same machine; the table gives medians over rounds
# and the median and range of the per-round ratios. On a shared machine one run can be 2x
# another; a ratio of neighbours is far steadier than either rate.
raw=$OUT/raw.tsv
: >"$raw"
for r in $(seq "$REPS"); do
  for t in f32 bf16 q8_0; do
    for work in pp tg score; do
      la=$(load)
      if [ $((r % 2)) -eq 1 ] || [ -n "${SKIP_LLAMA:-}" ]; then
        a=$(assay_"$work" "$t")
        l=""
        [ -z "${SKIP_LLAMA:-}" ] && l=$(llama_"$work" "$WORK/model-$t.gguf")
      else
        l=$(llama_"$work" "$WORK/model-$t.gguf")
        a=$(assay_"$work" "$t")
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$work" "${a:-}" "${l:-}" "$la" | tee -a "$raw" >&2
    done
  done
done
table=$OUT/table.md
python3 - "$raw" "$PP" "$TG" >"$table" <<'PY'
import sys, statistics as st
raw, pp, tg = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {}
for line in open(raw):
    r, t, work, a, l, la = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
    rows.setdefault((t, work), []).append((float(a) if a else None, float(l) if l else None, la))
print("| weights | work | assay tok/s (median) | llama.cpp tok/s (median) | ratio: median (min-max) | rounds | load avg |")
print("| --- | --- | ---: | ---: | --- | ---: | --- |")
for (t, work), v in rows.items():
    a = [x for x, _, _ in v if x]; l = [y for _, y, _ in v if y]
    ra = [x / y for x, y, _ in v if x and y]
    loads = [float(z) for _, _, z in v if z]
    label = {"pp": f"pp{pp}", "tg": f"tg{tg}", "score": f"ppl ctx {pp}"}[work]
    fa = f"{st.median(a):.1f}" if a else "-"
    fl = f"{st.median(l):.1f}" if l else "-"
    fr = f"{st.median(ra):.2f}x ({min(ra):.2f}-{max(ra):.2f})" if ra else "-"
    fld = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    print(f"| {t} | {label} | {fa} | {fl} | {fr} | {len(v)} | {fld} |")
PY
cat "$table"
echo "bench: $THREADS threads, each program's default wait policy, $(nproc) cores; table in $table" >&2
