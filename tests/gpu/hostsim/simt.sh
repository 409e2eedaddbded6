#!/usr/bin/env bash
# tests/gpu/hostsim/simt.sh — builds the GPU checker (tests/gpu/ops_check.cu) against the REAL
# kernels of kernels/cuda/{embed,norm,act,rope,logits,convert}.cu run on the CPU by simt.h, and
# attention emulated (ops_emulated.cpp: the kernels' own file needs warp-matrix features the
# emulation lacks), then runs it: ./tests/gpu/hostsim/simt.sh [ops_check options, e.g. --quick]
# Slow (a thread per CUDA thread): --quick takes ~15 s, the full run ~10 min on 2 cores.
# Needs g++ with C++20 (<barrier>) and build/libassay.a (make).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=build/gpu/simt
mkdir -p "$out"
for f in embed norm act rope logits convert; do
    python3 - "kernels/cuda/$f.cu" "$out/$f.cpp" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
src = src.replace("extern __shared__ float cs[];", "float *cs = (float *)simt_dyn_smem;")
def split_top(text):  # split a launch configuration at its top-level commas
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([" ; depth -= ch in ")]"
        if ch == "," and depth == 0:
            parts.append(cur.strip()); cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]
def launch(m):
    grid, block, smem = split_top(m.group(2))[:3]
    return f"simt_launch({grid}, {block}, {smem}, [=] {{ {m.group(1)}({m.group(3)}); }});"
src, n = re.subn(r"(\w+)\s*<<<(.*?)>>>\s*\((.*?)\);", launch, src, flags=re.S)
if "<<<" in src:
    sys.exit(f"{sys.argv[1]}: a launch was not rewritten")
open(sys.argv[2], "w").write(src)
PY
done
# attention only, from the emulated launchers
python3 - tests/gpu/hostsim/ops_emulated.cpp "$out/attention.cpp" <<'PY'
import sys
s = open(sys.argv[1]).read()
head = s[:s.index('extern "C" {\n\ncudaError_t cuda_f32_to_bf16')]
open(sys.argv[2], "w").write(head + 'extern "C" {\n' + s[s.index("cudaError_t cuda_attention_prefill"):])
PY
libs=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
${CXX:-g++} -std=c++20 -O1 -g -fsanitize=address,undefined -include tests/gpu/hostsim/simt.h \
    -Itests/gpu/hostsim -I. -x c++ tests/gpu/ops_check.cu "$out"/*.cpp -x none build/libassay.a \
    $(pkg-config --libs libcjson libpcre2-8 libutf8proc) $libs -fopenmp -lm -lpthread -ldl \
    -o "$out/ops_check"
exec "$out/ops_check" "$@"
