#!/usr/bin/env bash
# bench/gpu_bench.sh — assay on the GPU against Hugging Face transformers, in one run on the same
# GPU, on random-weight checkpoints shaped like Qwen2.5-0.5B, Llama-3.2-1B and Llama-3-8B
# (tools/make_random_checkpoint.py; nothing is downloaded):
#   - the GPU's measured cuBLAS bf16 rate (bench/gpu_gemm_rate.cu, on each model's GEMM shapes
#     at 4096 rows and on 8192^3), the reference of MFU;
#   - prefill scoring: SCORE_SEQS sequences of SCORE_LEN tokens, every token after the first
#     scored (`assay score --device cuda --json`, its tokens/s excludes model load), MFU;
#     with `--fast` too when the CLI has it (the cost of batch invariance);
#   - greedy decoding at batch 1, 32 and 256 (prompts of 16 tokens, GEN_NEW new tokens each;
#     `assay generate`'s decode tokens/s), with CUDA graphs for the decode steps (the default)
#     and without (ASSAY_CUDA_GRAPHS=0), and batch 1's weight bandwidth (bf16 bytes read per
#     step x steps/s, with graphs);
#   - transformers (bf16, sdpa, batched) on the same token ids, when torch + transformers + a
#     GPU are there (else the column says why it is empty).
# Prints a markdown table last (paste it into bench/RESULTS.md with the device and date).
#
# Env: OUT_BENCH (build/gpu-bench), MODELS_DIR ($OUT_BENCH/models), SHAPES ("qwen2.5-0.5b
# llama-3.2-1b llama-3-8b"), LAYERS_8B (8: the 8B shape with 8 of its 32 layers, said in the
# table; 0 = all), SCORE_SEQS (64), SCORE_LEN (512), GEN_NEW (64), BATCHES ("1 32 256"),
# SKIP_HF=1, STEP_TIMEOUT (300 s per command), LAYERS (N: every shape with N layers, for a quick
# look), DEVICE (cuda; DEVICE=cpu runs the script's plumbing on a machine without a GPU, with a
# CPU-only build).
# Exit 0 when every assay run worked, 1 otherwise (the table still prints).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT_BENCH:-build/gpu-bench}
MODELS_DIR=${MODELS_DIR:-$OUT/models}
SHAPES=${SHAPES:-"qwen2.5-0.5b llama-3.2-1b llama-3-8b"}
LAYERS_8B=${LAYERS_8B:-8}
SCORE_SEQS=${SCORE_SEQS:-64}
SCORE_LEN=${SCORE_LEN:-512}
GEN_NEW=${GEN_NEW:-64}
BATCHES=${BATCHES:-"1 32 256"}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
DEVICE=${DEVICE:-cuda}
BUILD_CUDA=1
[ "$DEVICE" = cpu ] && BUILD_CUDA=0
export PATH="$PATH:/usr/local/cuda/bin"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
mkdir -p "$OUT" "$MODELS_DIR"
status=0
log() { echo "[gpu_bench $(date +%H:%M:%S)] $*" >&2; }

# ---- build -------------------------------------------------------------------------------------
make -s -j"$(nproc)" CUDA=$BUILD_CUDA build/assay >&2 || { log "build failed"; exit 1; }
A=build/assay
nvcc -O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -o "$OUT/gpu_gemm_rate" bench/gpu_gemm_rate.cu -lcublas >&2 ||
    log "gpu_gemm_rate did not build: no MFU"
have_fast=0
$A score --help 2>&1 | grep -q -- '--fast' && have_fast=1
hf_why=""
if [ "${SKIP_HF:-0}" = 1 ]; then
    hf_why="SKIP_HF=1"
elif ! python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
    hf_why="no torch/transformers with CUDA here"
fi

# ---- the transformers side and the arithmetic, in Python ---------------------------------------
cat >"$OUT/bench_helper.py" <<'EOF'
import json, os, random, sys, time

def cfg_of(d):
    return json.load(open(os.path.join(d, "config.json")))

def work(d, out, seqs, length, gen_new, batches):
    c = cfg_of(d)
    rng = random.Random(0)
    v = c["vocab_size"]
    with open(os.path.join(out, "score.jsonl"), "w") as f:
        for i in range(seqs):
            ids = [rng.randrange(v - 2) for _ in range(length)]
            f.write(json.dumps({"id": i, "context_ids": ids[:1], "continuation_ids": ids[1:]}) + "\n")
    for b in batches:
        with open(os.path.join(out, "prompts_%d.jsonl" % b), "w") as f:
            for i in range(b):
                ids = [rng.randrange(v - 2) for _ in range(16)]
                f.write(json.dumps({"id": i, "prompt_ids": ids, "max_new_tokens": gen_new}) + "\n")

def flops_per_token(d, ctx_avg):
    c = cfg_of(d)
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or D // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    linear = L * (D * (q + 2 * kv) + q * D + 3 * D * F) + V * D
    return 2 * linear + L * 4 * q * ctx_avg

def weight_bytes(d):
    c = cfg_of(d)
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or D // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    return 2 * (L * (D * (q + 2 * kv) + q * D + 3 * D * F) + V * D)

def gemm_shapes(d, m):
    c = cfg_of(d)
    D, F = c["hidden_size"], c["intermediate_size"]
    hd = c.get("head_dim") or D // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    return ["%d:%d:%d" % (m, n, k) for n, k in ((q + 2 * kv, D), (D, q), (2 * F, D), (D, F))]

def hf(d, out, seqs, length, gen_new, batches):
    import torch, transformers
    res = {}
    m = transformers.AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    rows = [json.loads(l) for l in open(os.path.join(out, "score.jsonl"))]
    ids = torch.tensor([r["context_ids"] + r["continuation_ids"] for r in rows], device="cuda")
    bs = int(os.environ.get("HF_SCORE_BATCH", "8"))
    def score():
        tot = 0.0
        for i in range(0, len(rows), bs):
            x = ids[i:i + bs]
            lg = m(x).logits[:, :-1].float()
            lp = torch.log_softmax(lg, -1).gather(-1, x[:, 1:, None])
            tot += float(lp.sum())
        return tot
    with torch.inference_mode():
        score()  # warm-up
        torch.cuda.synchronize(); t = time.perf_counter(); score(); torch.cuda.synchronize()
        res["score_tps"] = len(rows) * (length - 1) / (time.perf_counter() - t)
        for b in batches:
            p = [json.loads(l)["prompt_ids"] for l in open(os.path.join(out, "prompts_%d.jsonl" % b))]
            x = torch.tensor(p, device="cuda")
            kw = dict(max_new_tokens=gen_new, min_new_tokens=gen_new, do_sample=False,
                      pad_token_id=0)
            m.generate(x[:, :4], max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize(); t = time.perf_counter()
            m.generate(x, **kw)
            torch.cuda.synchronize()
            res["decode_%d" % b] = b * gen_new / (time.perf_counter() - t)
    return res

if __name__ == "__main__":
    cmd, d, out = sys.argv[1:4]
    seqs, length, gen_new = int(os.environ["SCORE_SEQS"]), int(os.environ["SCORE_LEN"]), int(os.environ["GEN_NEW"])
    batches = [int(b) for b in os.environ["BATCHES"].split()]
    if cmd == "work":
        work(d, out, seqs, length, gen_new, batches)
    elif cmd == "shapes":
        print(" ".join(gemm_shapes(d, 4096)))
    elif cmd == "flops":
        print(flops_per_token(d, length / 2))
    elif cmd == "wbytes":
        print(weight_bytes(d))
    elif cmd == "hf":
        print(json.dumps(hf(d, out, seqs, length, gen_new, batches)))
EOF
export SCORE_SEQS SCORE_LEN GEN_NEW BATCHES
H="python3 $OUT/bench_helper.py"
jget() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ''))" "$@" 2>/dev/null; }

ROWS=()
for shape in $SHAPES; do
    layers=""
    [ "$shape" = llama-3-8b ] && [ "$LAYERS_8B" != 0 ] && layers=$LAYERS_8B
    [ -n "${LAYERS:-}" ] && layers=$LAYERS
    d="$MODELS_DIR/$shape${layers:+-${layers}l}"
    w="$OUT/$shape${layers:+-${layers}l}"
    mkdir -p "$w"
    log "$shape: checkpoint"
    python3 tools/make_random_checkpoint.py "$shape" "$d" ${layers:+--layers $layers} >&2 || {
        status=1
        continue
    }
    $H work "$d" "$w"
    # the cuBLAS reference rate on this model's GEMM shapes (best of them; 8192^3 beside it)
    rate=""
    if [ -x "$OUT/gpu_gemm_rate" ]; then
        # shellcheck disable=SC2046
        timeout "$STEP_TIMEOUT" "$OUT/gpu_gemm_rate" $($H shapes "$d" "$w") 8192:8192:8192 \
            >"$w/gemm_rate.json" 2>"$w/gemm_rate.err" && rate=$(jget "$w/gemm_rate.json" best_tflops)
    fi
    log "$shape: assay score"
    score_tps="" fast_tps="" mfu=""
    if timeout "$STEP_TIMEOUT" $A score "$d" --requests "$w/score.jsonl" --json --device "$DEVICE" \
        >"$w/score.json" 2>"$w/score.err"; then
        score_tps=$(jget "$w/score.json" tokens_per_s)
    else
        status=1
        log "$shape: score failed: $(tail -1 "$w/score.err")"
    fi
    if [ $have_fast = 1 ] && timeout "$STEP_TIMEOUT" $A score "$d" --requests "$w/score.jsonl" \
        --json --device "$DEVICE" --fast >"$w/score_fast.json" 2>"$w/score_fast.err"; then
        fast_tps=$(jget "$w/score_fast.json" tokens_per_s)
    fi
    flops=$($H flops "$d" "$w")
    if [ -n "$score_tps" ] && [ -n "$rate" ]; then
        mfu=$(python3 -c "print('%.1f%%' % (100 * $score_tps * $flops / ($rate * 1e12)))")
    fi
    dec=()
    dec_eager=()
    bw=""
    for b in $BATCHES; do
        log "$shape: assay generate, batch $b"
        if timeout "$STEP_TIMEOUT" $A generate "$d" --prompts "$w/prompts_$b.jsonl" \
            --max-new-tokens "$GEN_NEW" --json --device "$DEVICE" >"$w/gen_$b.json" \
            2>"$w/gen_$b.err"; then
            t=$(jget "$w/gen_$b.json" decode_tokens_per_s)
            dec+=("$(printf '%.0f' "${t:-0}")")
            if [ "$b" = 1 ] && [ -n "$t" ]; then
                bw=$(python3 -c "print('%.0f GB/s' % ($t * $($H wbytes "$d" "$w") / 1e9))")
            fi
        else
            status=1
            dec+=("fail")
            log "$shape: generate $b failed: $(tail -1 "$w/gen_$b.err")"
        fi
        if timeout "$STEP_TIMEOUT" env ASSAY_CUDA_GRAPHS=0 $A generate "$d" \
            --prompts "$w/prompts_$b.jsonl" --max-new-tokens "$GEN_NEW" --json \
            --device "$DEVICE" >"$w/gen_eager_$b.json" 2>"$w/gen_eager_$b.err"; then
            t=$(jget "$w/gen_eager_$b.json" decode_tokens_per_s)
            dec_eager+=("$(printf '%.0f' "${t:-0}")")
        else
            status=1
            dec_eager+=("fail")
            log "$shape: generate $b without graphs failed: $(tail -1 "$w/gen_eager_$b.err")"
        fi
    done
    hf_score="" hf_dec=""
    if [ -z "$hf_why" ]; then
        log "$shape: transformers"
        # shellcheck disable=SC2086 # H is a command and its script
        if timeout "$STEP_TIMEOUT" $H hf "$d" "$w" >"$w/hf.json" 2>"$w/hf.err"; then
            hf_score=$(jget "$w/hf.json" score_tps)
            for b in $BATCHES; do
                t=$(jget "$w/hf.json" "decode_$b")
                hf_dec+="$(printf '%.0f' "${t:-0}") "
            done
        else
            hf_score="fail"
            log "$shape: transformers failed: $(tail -1 "$w/hf.err")"
        fi
    fi
    ratio=""
    if [ -n "$score_tps" ] && [ -n "$hf_score" ] && [ "$hf_score" != fail ]; then
        ratio=$(python3 -c "print('%.2fx' % ($score_tps / $hf_score))")
    fi
    inv=""
    if [ -n "$fast_tps" ] && [ -n "$score_tps" ]; then
        inv=$(python3 -c "print('%.1f%%' % (100 * (1 - $score_tps / $fast_tps)))")
    fi
    ROWS+=("| $shape${layers:+ ($layers layers)} | $(printf '%.0f' "${score_tps:-0}") | ${mfu:-?} (cuBLAS ${rate:-?} TFLOP/s) | ${hf_score:+$(printf '%.0f' "$hf_score" 2>/dev/null || echo "$hf_score")}${hf_why:+n/a} | ${ratio:-} | ${inv:-n/a} | ${dec[*]} | ${dec_eager[*]} | ${bw:-?} | ${hf_dec:-n/a} |")
done

echo
echo "GPU benchmark, $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)," \
    "$(date -u +%F); scoring: $SCORE_SEQS x $SCORE_LEN tokens; decode: prompts of 16, $GEN_NEW new" \
    "tokens; batch-invariant (default) mode${hf_why:+; transformers: $hf_why}"
echo
echo "| model | score tok/s | MFU | HF score tok/s | vs HF | invariance cost | decode tok/s (b $BATCHES) | decode without graphs | b1 weight GB/s | HF decode (b $BATCHES) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
exit $status
