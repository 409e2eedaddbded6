#!/usr/bin/env python3
"""Writes tests/fixtures/pyrandom/cases.txt: outputs of CPython's random.Random that
scoring/pyrandom.c must reproduce bit for bit (tests/test_fewshot.c reads it).

One case a line, each from a fresh random.Random(seed):
  <seed> bits <k> <reps> : v...         getrandbits(k), reps times
  <seed> below <n> <reps> : v...        _randbelow(n), reps times
  <seed> sample <n> <k> <reps> <set|pool> : v...   random.sample(range(n), k), reps times in a row
The set/pool tag is which algorithm CPython took (derived from its rule, checked by the test).
Usage: python3 tools/make_pyrandom_fixture.py [OUT]   (CPython 3.11 wrote the committed file)
"""
import math
import random
import sys

SEEDS = [0, 1, 42, 1234, 2**31 - 1, 2**32, 2**40 + 7, -5]


def algo(n, k):
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return "pool" if n <= setsize else "set"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/pyrandom/cases.txt"
    lines = [f"# CPython {sys.version.split()[0]} random.Random; tools/make_pyrandom_fixture.py"]
    for s in SEEDS:
        for k in (1, 5, 31, 32, 33, 53, 64):
            r = random.Random(s)
            v = [r.getrandbits(k) for _ in range(40)]
            lines.append(f"{s} bits {k} 40 : " + " ".join(map(str, v)))
        for n in (1, 2, 3, 7, 100, 1000, 39905, 2**31 + 11):
            r = random.Random(s)
            v = [r._randbelow(n) for _ in range(40)]
            lines.append(f"{s} below {n} 40 : " + " ".join(map(str, v)))
        # few-shot shapes (n = a train split, k = K or K + 1) and both algorithms around the
        # switch points (k <= 5: n > 21; k = 6: 4**3 + 21 = 85)
        for n, k in ((4, 3), (21, 3), (22, 3), (22, 6), (85, 6), (86, 6), (100, 4), (1119, 4),
                     (2251, 26), (39905, 3), (39905, 11), (10, 10), (50, 20), (300, 20), (5, 0)):
            r = random.Random(s)
            reps = 6
            v = []
            for _ in range(reps):
                v += r.sample(range(n), k)
            lines.append(f"{s} sample {n} {k} {reps} {algo(n, k)} : " + " ".join(map(str, v)))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
