#!/usr/bin/env bash
# tests/gpu/check.sh — everything that needs an NVIDIA GPU, in one run of under 8 minutes on an
# H100/H200 class machine, with nothing downloaded:
#   1. build (make CUDA=1, warnings as errors) and the device's name;
#   2. op-level parity: build/gpu/ops_check (every CUDA op against its CPU reference; written
#      with the kernels), then the same under compute-sanitizer memcheck and racecheck (--quick);
#   3. end-to-end parity CPU vs CUDA on the 7 tiny fixtures and stories260K (converted here from
#      ../shared when present): per-token log-probs of `assay score` within the bf16 tolerance
#      stated in tests/gpu/parity.py, greedy tokens of `assay generate` (a difference is a WARN:
#      random tiny models have near-ties, which bf16 may break either way);
#      then CUDA graphs for decode steps: graph replay vs eager decode (ASSAY_CUDA_GRAPHS=0),
#      identical greedy tokens and bit-for-bit log-probs, capture and replay counts printed, and
#      a capture made to fail falling back to eager;
#   4. batch invariance on the GPU: each request scored alone vs all of them shuffled in one
#      batch, log-probs bit for bit;
#   5. the benchmark (bench/gpu_bench.sh, time-boxed; SKIP_BENCH=1 leaves it out);
#   6. a short table.
# Logs go to $OUT (default build/gpu-check). Exit 0 when every FAIL-able step passed.
# SKIP_RANDOM=1 leaves out the random real-shaped checkpoints (their CPU reference is slow).
# DRY_CPU=1 runs the script's plumbing on a machine without a GPU: a CUDA=0 build, and the CPU
# standing in for the GPU (every comparison then holds trivially).
# EMU=1 runs it against the CPU emulation of the CUDA build (make cuda-emu: build/emu/assay,
# EMU_BIN to override), with fewer and shorter requests (the emulation runs every CUDA thread):
# the whole path model.c -> backend_cuda.cu -> kernels -> results without a GPU. make
# cuda-emu-check.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)
OUT=${OUT:-build/gpu-check}
JOBS=${JOBS:-$(nproc)}
T_START=$(date +%s)
mkdir -p "$OUT"
SUMMARY=()
status=0
export PATH="$PATH:/usr/local/cuda/bin"
GPU=cuda
BUILD_CUDA=1
EMU=${EMU:-0}
SCALE=1 # divides request counts and lengths under the emulation
if [ "${DRY_CPU:-0}" = 1 ]; then
    GPU=cpu
    BUILD_CUDA=0
fi
if [ "$EMU" = 1 ]; then
    SKIP_RANDOM=1
    SKIP_BENCH=1
    SCALE=${EMU_SCALE:-3}
fi

log() { echo "[gpu-check $(($(date +%s) - T_START))s] $*" >&2; }
# result STEP STATUS DETAIL — STATUS is PASS, FAIL, WARN or SKIP; a FAIL makes the exit 1
result() {
    SUMMARY+=("$(printf '%-34s %-5s %s' "$1" "$2" "$3")")
    [ "$2" = FAIL ] && status=1
    log "$1: $2 $3"
}

# ---- 1. build --------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        >"$OUT/device.txt" 2>&1
fi
log "device: $(cat "$OUT/device.txt" 2>/dev/null || echo unknown)"
if [ "$EMU" = 1 ]; then
    echo "cuda-emu (CPU emulation)" >"$OUT/device.txt"
    if make cuda-emu >"$OUT/build.log" 2>&1; then
        result "build (cuda-emu)" PASS "${EMU_BIN:-build/emu/assay}"
    else
        result "build (cuda-emu)" FAIL "see $OUT/build.log"
        tail -30 "$OUT/build.log" >&2
        printf '%s\n' "${SUMMARY[@]}"
        exit 1
    fi
elif make -j"$JOBS" CUDA=$BUILD_CUDA >"$OUT/build.log" 2>&1; then
    result "build (CUDA=$BUILD_CUDA, -Werror)" PASS "$([ $BUILD_CUDA = 1 ] && echo sm_80 + sm_90)"
else
    result "build (CUDA=$BUILD_CUDA, -Werror)" FAIL "see $OUT/build.log"
    tail -30 "$OUT/build.log" >&2
    printf '%s\n' "${SUMMARY[@]}"
    exit 1
fi
A=build/assay
[ "$EMU" = 1 ] && A=${EMU_BIN:-build/emu/assay}
./$A devices >"$OUT/devices.txt" 2>&1
log "assay devices: $(tr '\n' ' ' <"$OUT/devices.txt")"

# ---- 2. op parity and sanitizers -------------------------------------------------------------
if [ "$GPU" = cpu ] || [ "$EMU" = 1 ]; then
    result "op parity (ops_check)" SKIP "DRY_CPU=1 or EMU=1 (make gpu-ops-check-hostsim)"
elif make -n gpu-ops-check >/dev/null 2>&1; then
    if make -j"$JOBS" gpu-ops-check >"$OUT/ops_build.log" 2>&1; then
        if timeout 180 build/gpu/ops_check >"$OUT/ops_check.log" 2>&1; then
            result "op parity (ops_check)" PASS "$(tail -1 "$OUT/ops_check.log")"
        else
            result "op parity (ops_check)" FAIL "see $OUT/ops_check.log"
            tail -20 "$OUT/ops_check.log" >&2
        fi
        SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        if [ -x "$SAN" ]; then
            for tool in memcheck racecheck; do
                if timeout 150 "$SAN" --tool "$tool" --error-exitcode 9 \
                    build/gpu/ops_check --quick >"$OUT/sanitizer_$tool.log" 2>&1; then
                    result "compute-sanitizer $tool" PASS "ops_check --quick"
                else
                    result "compute-sanitizer $tool" FAIL "see $OUT/sanitizer_$tool.log"
                    tail -20 "$OUT/sanitizer_$tool.log" >&2
                fi
            done
        else
            result "compute-sanitizer" SKIP "not installed"
        fi
    else
        result "op parity (ops_check)" FAIL "build failed, see $OUT/ops_build.log"
    fi
else
    result "op parity (ops_check)" SKIP "no gpu-ops-check target in this tree"
fi

# ---- 3. end-to-end parity ----------------------------------------------------------------------
MODELS=()
for d in tests/fixtures/models/*/; do
    [ -f "$d/config.json" ] && MODELS+=("${d%/}")
done
STORIES=""
for g in "${ASSAY_SHARED:-../shared}/models/stories260K/stories260K.gguf" \
    shared/models/stories260K/stories260K.gguf; do
    if [ -f "$g" ]; then
        STORIES="$OUT/stories260K"
        rm -rf "$STORIES"
        if ./$A convert "$g" "$STORIES" >"$OUT/convert.log" 2>&1; then
            MODELS+=("$STORIES")
        else
            result "convert stories260K" FAIL "see $OUT/convert.log"
            STORIES=""
        fi
        break
    fi
done
[ -n "$STORIES" ] || result "stories260K" SKIP "GGUF not found (../shared missing)"
# Real shapes in few layers (GEMMs of 896..14336 features, head dims 64 and 128, vocabularies of
# 128k-152k, q/k/v bias), made here with random weights.
RANDOM_MODELS=()
SPECS="qwen2.5-0.5b:2 llama-3.2-1b:2 llama-3-8b:1"
[ "${SKIP_RANDOM:-0}" = 1 ] && SPECS=""
for spec in $SPECS; do
    d="$OUT/models/${spec%%:*}-${spec##*:}l"
    if python3 tools/make_random_checkpoint.py "${spec%%:*}" "$d" --layers "${spec##*:}" \
        2>>"$OUT/models.log"; then
        MODELS+=("$d")
        RANDOM_MODELS+=("$d")
    else
        result "random checkpoint ${spec%%:*}" FAIL "see $OUT/models.log"
    fi
done

P=tests/gpu/parity.py
for m in "${MODELS[@]}"; do
    name=$(basename "$m")
    w="$OUT/e2e/$name"
    mkdir -p "$w"
    n_req=$((24 / SCALE))
    case "$name" in llama-3-8b*) n_req=8 ;; esac # its CPU reference is the slow part
    python3 $P requests "$m" "$w/req.jsonl" --n $n_req --max-len $((160 / SCALE)) --shuffle ||
        continue
    python3 $P prompts "$m" "$w/prompts.jsonl" --n 8 --len 16 || continue
    ok=1
    for dev in cpu $GPU; do
        if ! ./$A score "$m" --requests "$w/req.jsonl" --json --device "$dev" \
            >"$w/score_$dev.json" 2>"$w/score_$dev.err"; then
            result "score $name ($dev)" FAIL "$(tail -1 "$w/score_$dev.err")"
            ok=0
        fi
        if ! ./$A generate "$m" --prompts "$w/prompts.jsonl" --max-new-tokens 24 --json \
            --device "$dev" >"$w/gen_$dev.json" 2>"$w/gen_$dev.err"; then
            result "generate $name ($dev)" FAIL "$(tail -1 "$w/gen_$dev.err")"
            ok=0
        fi
    done
    [ $ok = 1 ] || continue
    if msg=$(python3 $P score "$w/score_cpu.json" "$w/score_$GPU.json"); then
        result "log-probs CPU vs CUDA: $name" PASS "${msg#score: }"
    else
        result "log-probs CPU vs CUDA: $name" FAIL "${msg#score: }"
    fi
    if msg=$(python3 $P generate "$w/gen_cpu.json" "$w/gen_$GPU.json"); then
        result "greedy CPU vs CUDA: $name" PASS "${msg#generate: }"
    else
        result "greedy CPU vs CUDA: $name" WARN "${msg#generate: }"
    fi
done

# --fast (per-shape GEMM algorithms, split-K allowed): still within the bf16 tolerance of the CPU
if [ ${#RANDOM_MODELS[@]} -gt 0 ] && ./$A score --help 2>&1 | grep -q -- --fast; then
    m=${RANDOM_MODELS[0]}
    w="$OUT/e2e/$(basename "$m")"
    msg=""
    if ./$A score "$m" --requests "$w/req.jsonl" --json --device $GPU --fast \
        >"$w/score_fast.json" 2>"$w/score_fast.err" &&
        msg=$(python3 $P score "$w/score_cpu.json" "$w/score_fast.json"); then
        result "--fast log-probs: $(basename "$m")" PASS "${msg#score: }"
    else
        result "--fast log-probs: $(basename "$m")" FAIL "${msg:-$(tail -1 "$w/score_fast.err")}"
    fi
fi

# ---- 3b. shared contexts (the KV-cache path) and grouped paged attention ----------------------
# Requests in groups of 4 sharing a context run the context once and the continuations against
# its cache; ASSAY_CUDA_ATTN_CAP=1 makes the backend split every paged attention call into
# one-row groups, which must not change a bit (cuda_plan.h: cuda_attn_groups).
SHARED_MODELS=("${MODELS[0]}")
[ -n "$STORIES" ] && SHARED_MODELS=("$STORIES")
[ ${#RANDOM_MODELS[@]} -gt 0 ] && SHARED_MODELS+=("${RANDOM_MODELS[0]}")
for m in "${SHARED_MODELS[@]}"; do
    name=$(basename "$m")
    w="$OUT/shared/$name"
    mkdir -p "$w"
    python3 $P requests "$m" "$w/req.jsonl" --n $((24 / SCALE)) --max-len 300 --seed 5 \
        --shared 4 || continue
    ok=1
    msg2=""
    ./$A score "$m" --requests "$w/req.jsonl" --json --device cpu >"$w/cpu.json" \
        2>"$w/cpu.err" || ok=0
    ./$A score "$m" --requests "$w/req.jsonl" --json --device $GPU >"$w/gpu.json" \
        2>"$w/gpu.err" || ok=0
    ASSAY_CUDA_ATTN_CAP=1 ./$A score "$m" --requests "$w/req.jsonl" --json --device $GPU \
        >"$w/gpu_cap1.json" 2>"$w/gpu_cap1.err" || ok=0
    ./$A generate "$m" --prompts "$OUT/e2e/$name/prompts.jsonl" --max-new-tokens 24 --json \
        --device $GPU >"$w/gen.json" 2>"$w/gen.err" || ok=0
    ASSAY_CUDA_ATTN_CAP=1 ./$A generate "$m" --prompts "$OUT/e2e/$name/prompts.jsonl" \
        --max-new-tokens 24 --json --device $GPU >"$w/gen_cap1.json" 2>"$w/gen_cap1.err" || ok=0
    if [ $ok = 0 ]; then
        result "shared contexts $name" FAIL "a run failed (see $w/*.err)"
        continue
    fi
    if msg=$(python3 $P score "$w/cpu.json" "$w/gpu.json"); then
        result "shared-context log-probs: $name" PASS "${msg#score: }"
    else
        result "shared-context log-probs: $name" FAIL "${msg#score: }"
    fi
    if msg=$(python3 $P same "$w/gpu.json" "$w/gpu_cap1.json") &&
        msg2=$(python3 $P generate "$w/gen.json" "$w/gen_cap1.json"); then
        result "grouped paged attention: $name" PASS "${msg#same: }; ${msg2#generate: }"
    else
        result "grouped paged attention: $name" FAIL "${msg#same: } ${msg2:-}"
    fi
done

# ---- 3c. CUDA graphs for decode steps ----------------------------------------------------------
# Decode passes (one token per sequence through the KV cache) run as CUDA graphs once their key
# has been seen CUDA_GRAPH_WARMUP times (runtime/cuda/cuda_plan.h). Graphs on vs
# ASSAY_CUDA_GRAPHS=0: identical greedy tokens, and bit-for-bit log-probs of one-token
# continuations of shared contexts (each context one decode pass with real targets); the
# capture and replay counts (ASSAY_CUDA_GRAPH_STATS=1) are printed and must show replays. A
# capture made to call cudaStreamSynchronize (ASSAY_CUDA_GRAPH_FAULT=sync) must be refused by
# CUDA, noted, and answered eagerly with the same bits.
graph_counts() { grep -o 'CUDA graphs .*' "$1" | tail -1; }
graph_replays() { graph_counts "$1" | sed -n 's/.* \([0-9]*\) replayed.*/\1/p'; }
for m in "${SHARED_MODELS[@]}"; do
    name=$(basename "$m")
    w="$OUT/graphs/$name"
    mkdir -p "$w"
    if [ "$GPU" = cpu ]; then
        result "CUDA graphs: $name" SKIP "DRY_CPU=1 (no CUDA backend)"
        continue
    fi
    python3 $P requests "$m" "$w/req.jsonl" --n $((48 / SCALE)) --max-len $((120 / SCALE)) \
        --seed 9 --shared 4 --single || continue
    ok=1
    for g in 1 0; do
        ASSAY_CUDA_GRAPHS=$g ASSAY_CUDA_GRAPH_STATS=1 ./$A generate "$m" \
            --prompts "$OUT/e2e/$name/prompts.jsonl" --max-new-tokens $((48 / SCALE)) --json \
            --device $GPU >"$w/gen$g.json" 2>"$w/gen$g.err" || ok=0
        ASSAY_CUDA_GRAPHS=$g ASSAY_CUDA_GRAPH_STATS=1 ./$A score "$m" --requests "$w/req.jsonl" \
            --json --device $GPU >"$w/score$g.json" 2>"$w/score$g.err" || ok=0
    done
    ASSAY_CUDA_GRAPH_FAULT=sync ASSAY_CUDA_GRAPH_STATS=1 ./$A score "$m" --requests \
        "$w/req.jsonl" --json --device $GPU >"$w/fault.json" 2>"$w/fault.err" || ok=0
    if [ $ok = 0 ]; then
        result "CUDA graphs: $name" FAIL "a run failed (see $w/*.err)"
        continue
    fi
    log "graphs $name: generate: $(graph_counts "$w/gen1.err"); score: $(graph_counts "$w/score1.err")"
    rg=$(graph_replays "$w/gen1.err")
    rs=$(graph_replays "$w/score1.err")
    if msg=$(python3 $P generate "$w/gen0.json" "$w/gen1.json") &&
        msg2=$(python3 $P same "$w/score0.json" "$w/score1.json") &&
        [ "${rg:-0}" -gt 0 ] && [ "${rs:-0}" -gt 0 ]; then
        result "CUDA graphs vs eager: $name" PASS \
            "${msg#generate: }; log-probs ${msg2#same: }; replays: generate $rg, score $rs"
    else
        result "CUDA graphs vs eager: $name" FAIL \
            "${msg#generate: } ${msg2:-}; replays: generate ${rg:-none}, score ${rs:-none}"
    fi
    if grep -q 'CUDA graph capture failed' "$w/fault.err" &&
        msg=$(python3 $P same "$w/score0.json" "$w/fault.json"); then
        result "failed capture falls back: $name" PASS "noted; ${msg#same: }"
    else
        result "failed capture falls back: $name" FAIL "no note or other bits (see $w/fault.err)"
    fi
done

# ---- 4. batch invariance -----------------------------------------------------------------------
INV_MODELS=("${MODELS[@]:0:2}")
[ -n "$STORIES" ] && INV_MODELS+=("$STORIES")
[ ${#RANDOM_MODELS[@]} -gt 0 ] && INV_MODELS+=("${RANDOM_MODELS[0]}")
for m in "${INV_MODELS[@]}"; do
    name=$(basename "$m")
    w="$OUT/inv/$name"
    rm -rf "$w"
    mkdir -p "$w/alone"
    n_req=$((16 / SCALE))
    case "$m" in "$OUT"/models/*) n_req=12 ;; esac # one process per request: keep it short
    python3 $P requests "$m" "$w/req.jsonl" --n $n_req --max-len $((200 / SCALE)) --seed 7 \
        --shuffle ||
        continue
    python3 $P split "$w/req.jsonl" "$w/alone" || continue
    if ! ./$A score "$m" --requests "$w/req.jsonl" --json --device $GPU >"$w/batch.json" \
        2>"$w/batch.err"; then
        result "invariance $name" FAIL "batch run: $(tail -1 "$w/batch.err")"
        continue
    fi
    ok=1
    for f in "$w"/alone/*.jsonl; do
        ./$A score "$m" --requests "$f" --json --device $GPU >"${f%.jsonl}.json" \
            2>"${f%.jsonl}.err" || { ok=0; break; }
    done
    if [ $ok = 0 ]; then
        result "invariance $name" FAIL "a single-request run failed (see $w/alone)"
    elif msg=$(python3 $P invariant "$w/batch.json" "$w/alone"); then
        result "invariance $name" PASS "${msg#invariance: }"
    else
        result "invariance $name" FAIL "${msg#invariance: }"
    fi
done

# ---- 5. benchmark ------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" = 1 ]; then
    result "benchmark" SKIP "SKIP_BENCH=1"
else
    left=$((450 - ($(date +%s) - T_START)))
    if [ $left -lt 60 ]; then
        result "benchmark" SKIP "only ${left}s left of the 8-minute budget"
    elif OUT_BENCH="$OUT/bench" timeout $left bash bench/gpu_bench.sh >"$OUT/bench.log" 2>&1; then
        result "benchmark" PASS "table in $OUT/bench.log"
    else
        result "benchmark" WARN "incomplete or timed out after ${left}s (see $OUT/bench.log)"
    fi
    sed -n '/^| /p' "$OUT/bench.log" 2>/dev/null
fi

# ---- 6. table ----------------------------------------------------------------------------------
echo
echo "== tests/gpu/check.sh on $(head -1 "$OUT/device.txt" 2>/dev/null), $(date -u +%F)," \
    "$(($(date +%s) - T_START)) s =="
printf '%s\n' "${SUMMARY[@]}"
cd "$ROOT" || true
exit $status
