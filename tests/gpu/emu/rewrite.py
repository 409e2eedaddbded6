#!/usr/bin/env python3
"""tests/gpu/emu/rewrite.py IN.cu OUT.cc — a CUDA source made plain C++ for the CPU emulation
(tests/gpu/emu/cuda_runtime.h): every launch `k<<<grid, block, smem, s>>>(args);` becomes
`emu_launch(k, grid, block, smem, stream, args);` (stream 0 when the launch names none: the
legacy stream, which a capturing stream refuses) and every `extern __shared__ [__align__(n)] T name[];`
a pointer to the launch's dynamic shared memory. Fails if a launch is left."""
import re
import sys

src = open(sys.argv[1]).read()
src = re.sub(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+)\s+(\w+)\[\];",
             r"\1 *const \2 = (\1 *)emu_smem();", src)


def split_top(text):  # a launch configuration's top-level commas
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{<"
        depth -= ch in ")]}>"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def launch(m):
    cfg = split_top(m.group(2))
    while len(cfg) < 4:
        cfg.append("0")
    grid, block, smem, stream = cfg[:4]
    args = m.group(3).strip()
    return f"emu_launch({m.group(1)}, {grid}, {block}, {smem}, {stream}{', ' + args if args else ''});"


src, n = re.subn(r"(\b\w[\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", launch, src, flags=re.S)
if "<<<" in src:
    sys.exit(f"{sys.argv[1]}: a launch was not rewritten")
open(sys.argv[2], "w").write(f'#line 1 "{sys.argv[1]}"\n' + src)
