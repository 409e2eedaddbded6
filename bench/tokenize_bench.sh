#!/usr/bin/env bash
# bench/tokenize_bench.sh — single-thread tokenizer throughput: assay's tok_encode against the
# Hugging Face `tokenizers` library, on the whole wikitext-2 test file, same lines, same run.
#
#   bash bench/tokenize_bench.sh [TOKENIZER_NAME...]     (default: llama3 qwen3)
#
# Env: SHARED (default ../shared), B (build dir, default build/tokref), REPEATS (default 3),
# ROUNDS (default 3: HF and assay alternate, best round kept).
# Builds libassay.a (CPU only) in $B and the driver bench/tokenize_bench.c against it, runs both
# implementations on one thread (OMP/OpenBLAS/Rayon limited to 1; PIN_CPU=1 also pins each process to
# CPU 0 with taskset, which only helps on an otherwise idle machine), prints MB/s for each, the
# ratio, and whether the token counts agree. Exit 1 when a count differs. Numbers worth keeping go to bench/RESULTS.md by hand (see its Tokenizer section).
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${SHARED:-../shared}
B=${B:-build/tokref}
REPEATS=${REPEATS:-3}
ROUNDS=${ROUNDS:-3}
TEXT=$SHARED/data/wikitext2_tokenized_test.txt
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(llama3 qwen3)

if [ ! -r "$TEXT" ]; then
    echo "SKIP: $TEXT missing" >&2
    exit 0
fi

make -s CUDA=0 B="$B" "$B/libassay.a" >&2
PKGS="libcjson libpcre2-8 libutf8proc"
cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I. $(pkg-config --cflags $PKGS) \
    -o "$B/tokenize_bench" bench/tokenize_bench.c "$B/libassay.a" \
    $(pkg-config --libs $PKGS) $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) \
    -fopenmp -lm -lpthread

NCPU=$(nproc --all)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
PIN=()
if [ "${PIN_CPU:-0}" = 1 ] && command -v taskset >/dev/null 2>&1; then PIN=(taskset -c 0); fi

echo "machine: $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "text: $TEXT ($(wc -c <"$TEXT") bytes, $(wc -l <"$TEXT") newlines), best of $ROUNDS rounds x $REPEATS repeats"
status=0
for name in "${NAMES[@]}"; do
    tj=$SHARED/tokenizers/$name/tokenizer.json
    if [ ! -r "$tj" ]; then
        echo "SKIP: $tj missing" >&2
        continue
    fi
    # Rounds alternate the two implementations so that both see the same load on a shared
    # machine; each reports its best of $REPEATS, and the best round counts.
    hf=() as=()
    for ((r = 0; r < ROUNDS; r++)); do
        hf+=("$("${PIN[@]}" python3 bench/tokenize_bench.py "$tj" "$TEXT" "$REPEATS")")
        out=$("${PIN[@]}" "$B/tokenize_bench" "$tj" "$TEXT" "$REPEATS") || {
            echo "$name: assay driver failed" >&2
            status=1
            continue 2
        }
        as+=("$out")
    done
    echo "load average after $name: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - "$name" "$ROUNDS" "${hf[@]}" "${as[@]}" <<'EOF' || status=1
import json, sys
name, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.loads(x) for x in sys.argv[3:]]
def best(rs):
    """Per mode, the fastest round (its time, rate and token count together)."""
    out = dict(rs[0])
    for mode in ("lines", "lines_fast", "whole"):
        if f"{mode}_s" in rs[0]:
            b = min(rs, key=lambda r: r[f"{mode}_s"])
            for k in ("_s", "_mb_s", "_tokens"):
                out[mode + k] = b[mode + k]
    out["load_s"] = min(r["load_s"] for r in rs)
    out["rounds"] = len(rs)
    return out
hf, a = best(runs[:rounds]), best(runs[rounds:])
ok = True
print(f"\n== {name}  (load: hf {hf['load_s']:.2f}s, assay {a['load_s']:.2f}s)")
print(f"{'mode':<22}{'hf MB/s':>10}{'assay MB/s':>12}{'assay/hf':>10}{'hf tokens':>12}{'assay tokens':>14}")
rows = [("lines", "lines", "line by line")]
if hf.get("lines_fast_tokens"):
    rows.append(("lines_fast", "lines", "lines, hf _fast"))
rows.append(("whole", "whole", "whole file"))
for hmode, amode, label in rows:
    h, s = hf[f"{hmode}_mb_s"], a[f"{amode}_mb_s"]
    ht, at = hf[f"{hmode}_tokens"], a[f"{amode}_tokens"]
    same = "same" if ht == at else "DIFFER"
    ok &= ht == at
    print(f"{label:<22}{h:>10.2f}{s:>12.2f}{s / h:>9.2f}x{ht:>12}{at:>14}  {same}")
print("json:", json.dumps({"name": name, "hf": hf, "assay": a}))
sys.exit(0 if ok else 1)
EOF
done
exit $status
