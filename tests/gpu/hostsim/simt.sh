#!/usr/bin/env bash
# tests/gpu/hostsim/simt.sh — builds the GPU checker (tests/gpu/ops_check.cu) against the REAL
# kernels of kernels/cuda/*.cu (attention included) run on the CPU by the emulated CUDA runtime
# of tests/gpu/emu/ (the one make cuda-emu uses: fibers per CUDA thread, barriers, shuffles,
# tracked device memory), the launches rewritten by tests/gpu/emu/rewrite.py, then runs it:
#   ./tests/gpu/hostsim/simt.sh [ops_check options, e.g. --quick]
# Needs g++ with C++20 and build/libassay.a (make), or LIB=... another CPU library.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=build/gpu/simt
mkdir -p "$out"
for f in embed norm act rope logits convert attention; do
    python3 tests/gpu/emu/rewrite.py "kernels/cuda/$f.cu" "$out/$f.cc"
done
libs=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
${CXX:-g++} -std=c++20 -O1 -g -ffp-contract=off -fsanitize=address,undefined \
    -Wno-unknown-pragmas -Itests/gpu/emu -I. -Ikernels/cuda -x c++ tests/gpu/ops_check.cu -x none \
    "$out"/*.cc ${LIB:-build/libassay.a} \
    $(pkg-config --libs libcjson libpcre2-8 libutf8proc) $libs -fopenmp -lm -lpthread -ldl \
    -o "$out/ops_check"
exec "$out/ops_check" "$@"
