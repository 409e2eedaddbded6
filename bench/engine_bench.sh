#!/usr/bin/env bash
# bench/engine_bench.sh — CPU engine throughput: assay against Hugging Face transformers on the
# same work, in the same run, with the same thread count, plus the machine's OpenBLAS sgemm rate.
#
#   bash bench/engine_bench.sh [MODEL...]        (default: gpt2-124m llama-100m)
#
# What it does:
#   1. builds libassay.a (CPU only) in $B, bench/engine_driver.c and bench/sgemm_rate.c;
#   2. makes the random float32 checkpoints (bench/make_bench_models.py, transformers) in
#      $MODELS (not committed; reused when up to date);
#   3. per model: OpenBLAS sgemm rate on the model's linear-layer shapes at M=512 rows (the
#      reference for "% of sgemm"; measured before and after the runs, the better rate of each
#      shape kept), and three work items, each run by
#      assay (engine_driver, model_score / model_generate_greedy on token ids) and by
#      transformers (bench/engine_bench.py hf: float32, torch.inference_mode, $HF_ATTN
#      attention, batched), one process per run so each has its own peak RSS;
#   4. prints the table (tokens/s, ratio, GFLOP/s, % of sgemm, peak MB, agreement) and leaves
#      every JSON plus summary.json and table.md in $OUT.
# Timing: one warm-up call, then the best of $REPEATS timed calls; model load is not timed.
#
# Env: B (build dir, default build/bench), MODELS (default build/bench-models), OUT (default
# $B/engine-results), THREADS (default nproc), REPEATS (3), HF_ATTN (sdpa), HF_SCORE_BATCH (8),
# SCORE_SEQS (8), SCORE_LEN (256), GEN_NEW (32), GEN_BATCH (32), SKIP_HF=1, SKIP_ASSAY=1.
# Exit 0 when every run that was attempted worked, 1 otherwise (the table still prints).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

B=${B:-build/bench}
MODELS=${MODELS:-build/bench-models}
OUT=${OUT:-$B/engine-results}
THREADS=${THREADS:-$(nproc)}
REPEATS=${REPEATS:-3}
export THREADS REPEATS HF_ATTN=${HF_ATTN:-sdpa}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
export HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONWARNINGS=ignore
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(gpt2-124m llama-100m)
status=0
flip=0
log() { echo "[engine_bench $(date +%H:%M:%S)] $*" >&2; }

# ---- build ------------------------------------------------------------------------------------
BLAS_CFLAGS=$(pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
PKGS="libcjson libpcre2-8 libutf8proc"
CFLAGS="-O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
        -Wmissing-prototypes -fopenmp -I."
mkdir -p "$B" "$OUT"
# the flag variables are lists of words on purpose
# shellcheck disable=SC2086
cc $CFLAGS $BLAS_CFLAGS -o "$B/sgemm_rate" bench/sgemm_rate.c $BLAS_LIBS -fopenmp -lm || exit 1
have_assay=0
if [ "${SKIP_ASSAY:-0}" != 1 ]; then
    # another helper may be mid-edit in the library: retry a few times before giving up
    for try in 1 2 3; do
        make -s CUDA=0 B="$B" "$B/libassay.a" >&2 && break
        [ $try = 3 ] || { log "libassay.a build failed, retrying in 30 s"; sleep 30; }
    done
    # shellcheck disable=SC2086,SC2046
    if make -s CUDA=0 B="$B" "$B/libassay.a" >&2 &&
        cc $CFLAGS $(pkg-config --cflags $PKGS) $BLAS_CFLAGS -o "$B/engine_driver" \
            bench/engine_driver.c "$B/libassay.a" $(pkg-config --libs $PKGS) $BLAS_LIBS \
            -fopenmp -lm -lpthread; then
        have_assay=1
    else
        log "assay build failed: the assay side is not measured"
        status=1
    fi
fi

# ---- models -----------------------------------------------------------------------------------
python3 bench/make_bench_models.py --out "$MODELS" >&2 || exit 1

# ---- run --------------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
pyver=$(python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)')
models_json=$(printf '"%s",' "${NAMES[@]}")
dirs_json=$(for n in "${NAMES[@]}"; do printf '"%s": "%s",' "$n" "$MODELS/$n"; done)
cat >"$OUT/meta.json" <<EOF
{"started": "$started", "nproc": $(nproc), "cpu": "$cpu", "threads": $THREADS,
 "repeats": $REPEATS, "hf_attn": "$HF_ATTN", "load_avg_start": "$load0",
 "torch_transformers": "$pyver", "openblas": "$(pkg-config --modversion openblas 2>/dev/null)",
 "cc": "$(cc --version | head -1)", "git": "$(git rev-parse --short HEAD 2>/dev/null)",
 "models": [${models_json%,}], "model_dirs": {${dirs_json%,}}}
EOF
log "$(nproc) CPUs ($cpu), $THREADS threads, load average $load0"

run_one() { # impl model item
    local impl=$1 name=$2 item=$3 dir=$MODELS/$2 res=$OUT/$2/$3.$1.json
    local t0
    t0=$(date +%s)
    if [ "$impl" = assay ]; then
        "$B/engine_driver" "$dir" "$OUT/$name/$item.json" --threads "$THREADS" \
            --repeats "$REPEATS" >"$res.tmp" 2>"$OUT/$name/$item.$impl.err"
    else
        python3 bench/engine_bench.py hf "$dir" "$OUT/$name/$item.json" >"$res.tmp" \
            2>"$OUT/$name/$item.$impl.err"
    fi
    local rc=$?
    if [ $rc -eq 0 ] && [ -s "$res.tmp" ]; then
        mv "$res.tmp" "$res"
        log "$name $item $impl: done in $(($(date +%s) - t0)) s"
    else
        rm -f "$res.tmp" "$res"
        log "$name $item $impl: FAILED (exit $rc): $(tail -3 "$OUT/$name/$item.$impl.err")"
        status=1
    fi
}

for name in "${NAMES[@]}"; do
    dir=$MODELS/$name
    mkdir -p "$OUT/$name"
    rm -f "$OUT/$name"/*.assay.json "$OUT/$name"/*.hf.json "$OUT/$name"/sgemm*.json
    shapes=$(python3 bench/engine_bench.py shapes "$dir" 512) || { status=1; continue; }
    log "$name: sgemm rate"
    # shellcheck disable=SC2086
    "$B/sgemm_rate" --threads "$THREADS" --repeats 3 --min-seconds 0.3 $shapes \
        >"$OUT/$name/sgemm512.json" || status=1
    items=$(python3 bench/engine_bench.py work "$dir" "$OUT/$name") || { status=1; continue; }
    for item in $items; do
        # alternate which side goes first, so a slow drift of the machine's load does not
        # favour one of them
        order=(assay hf)
        [ $((flip++ % 2)) = 1 ] && order=(hf assay)
        for impl in "${order[@]}"; do
            if [ "$impl" = assay ] && [ $have_assay = 1 ]; then run_one assay "$name" "$item"; fi
            if [ "$impl" = hf ] && [ "${SKIP_HF:-0}" != 1 ]; then run_one hf "$name" "$item"; fi
        done
    done
    # measured again after the runs: the report keeps each shape's better rate, so a busy
    # moment during one measurement does not lower the reference that "% of sgemm" uses
    # shellcheck disable=SC2086
    "$B/sgemm_rate" --threads "$THREADS" --repeats 3 --min-seconds 0.3 $shapes \
        >"$OUT/$name/sgemm512b.json" || status=1
done

log "finished in $(($(date +%s) - t_start)) s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT/meta.json" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(($(date +%s) - t_start))" <<'EOF'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
m["load_avg_end"], m["wall_s"] = sys.argv[2], int(sys.argv[3])
json.dump(m, open(p, "w"), indent=1)
EOF
echo
echo "Engine (CPU): $(nproc) CPUs ($cpu), $THREADS threads, $started, torch/transformers $pyver, $HF_ATTN attention"
python3 bench/engine_bench.py report "$OUT" || status=1
exit $status
