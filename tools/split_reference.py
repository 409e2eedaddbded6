"""Expected `assay split` assignments for tests/test_split.c, from the definition in
`assay split --help` (SHA-256 of seed, 0x00, key; first 8 bytes big-endian; top 53 bits / 2^53;
first split whose cumulative ratio is above it).

Needs: Python 3 only (hashlib, json).  Rerun from the repository root:
    python3 tools/split_reference.py
writes tests/fixtures/split/items.jsonl and tests/fixtures/split/expected.json.
"""
import hashlib
import json

ITEMS = []
for i in range(60):
    key = "q-%03d" % i if i % 3 else i  # strings and integers (compact JSON text: "12")
    ITEMS.append({"id": key, "question": "question number %d" % i, "answer": i % 4})
ITEMS.append({"id": "caf\u00e9 \u4e2d", "question": "a non-ASCII key", "answer": 0})


def unit(seed, key):
    b = key.encode("utf-8") if isinstance(key, str) else json.dumps(key, separators=(",", ":")).encode()
    h = hashlib.sha256(seed.encode("utf-8") + b"\0" + b).digest()
    return (int.from_bytes(h[:8], "big") >> 11) / 2.0 ** 53


def assign(seed, ratios):
    total, cum = 0.0, []
    for r in ratios:
        total += r
        cum.append(total)
    cum = [c / total for c in cum]
    cum[-1] = 1.0
    out = []
    for it in ITEMS:
        u = unit(seed, it["id"])
        k = 0
        while k < len(ratios) - 1 and u >= cum[k]:
            k += 1
        out.append(k)
    return out


with open("tests/fixtures/split/items.jsonl", "w") as f:
    for it in ITEMS:
        f.write(json.dumps(it, ensure_ascii=False) + "\n")
with open("tests/fixtures/split/expected.json", "w") as f:
    json.dump({"ratios_0.8_0.1_0.1_seed_0": assign("0", [0.8, 0.1, 0.1]),
               "ratios_0.5_0.5_seed_abc": assign("abc", [0.5, 0.5])}, f)
    f.write("\n")
