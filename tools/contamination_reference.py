"""Expected `assay contamination` counts for tests/test_contamination.c, computed with exact
word tuples (no hashing) from the normalization `assay contamination --help` documents: NFKC with
case folding, words = maximal runs of Unicode letters, marks and numbers.

Needs: Python 3 only (unicodedata, json).  Rerun from the repository root:
    python3 tools/contamination_reference.py
writes tests/fixtures/contamination/{train.txt,train.jsonl,eval.jsonl,expected.json}.
"""
import json
import unicodedata

D = "tests/fixtures/contamination/"

TRAIN = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old red barn "
    "near the river.\nIn 1969, astronauts landed on the Moon and walked on its dusty surface for "
    "several hours before returning home.\nPhotosynthesis converts light energy into chemical "
    "energy stored in glucose molecules inside the chloroplasts of green plant cells.\n"
    "Stra\u00dfe und Caf\u00e9: die Stadt hat viele kleine Gesch\u00e4fte, alte H\u00e4user und "
    "einen gro\u00dfen Markt am Sonntag morgen.\n"
)
DOCS = [l for l in TRAIN.split("\n") if l]

EVAL = [
    # copied 13+ words, different case and punctuation: contaminated
    {"task": "science", "question": "PHOTOSYNTHESIS converts light-energy into chemical energy, "
     "stored in glucose molecules inside the chloroplasts!", "choices": ["yes", "no"]},
    # unrelated: clean
    {"task": "science", "question": "Which planet has the largest number of known moons in the "
     "solar system today?", "choices": ["Saturn", "Jupiter"]},
    # a span across a line break in train: contaminated (n-grams cross lines in a document file)
    {"task": "history", "question": "before returning home. In 1969 astronauts landed on the "
     "moon and walked on its dusty surface", "choices": []},
    # too short for n=13
    {"task": "history", "question": "Who landed on the Moon?", "choices": ["astronauts"]},
    # full-width letters and sharp s (NFKC + casefold): contaminated
    {"task": "german", "question": "STRASSE UND CAF\u00c9 die Stadt hat viele kleine "
     "Gesch\u00e4fte alte H\u00e4user und \uff45\uff49\uff4e\uff45\uff4e gro\u00dfen Markt",
     "choices": []},
    # the words split over two fields do not join: clean at n=13
    {"task": "german", "question": "die Stadt hat viele kleine", "choices": ["Gesch\u00e4fte "
     "alte H\u00e4user und einen gro\u00dfen Markt am Sonntag"]},
]


def norm(s):
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKD", s).casefold())


def words(s):
    out, cur = [], []
    for ch in norm(s):
        if unicodedata.category(ch)[0] in "LMN":
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def grams(ws, n):
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def item_runs(item):
    runs = []
    for k, v in item.items():
        if k == "task":
            continue
        for s in (v if isinstance(v, list) else [v]):
            runs.append(s)
    return runs


def expected(train_docs, n):
    train = set()
    for d in train_docs:
        train.update(grams(words(d), n))
    per_item, tasks = [], {}
    for line, it in enumerate(EVAL, 1):
        g = [x for r in item_runs(it) for x in grams(words(r), n)]
        ov = sum(1 for x in g if x in train)
        per_item.append({"line": line, "ngrams": len(g), "overlap": ov})
        t = tasks.setdefault(it["task"], {"items": 0, "contaminated": 0, "too_short": 0})
        t["items"] += 1
        t["contaminated"] += ov > 0
        t["too_short"] += len(g) == 0
    return {"train_ngrams": len(train), "items": per_item, "tasks": tasks}


with open(D + "train.txt", "w", encoding="utf-8") as f:
    f.write(TRAIN)
with open(D + "train.jsonl", "w", encoding="utf-8") as f:
    for d in DOCS:
        f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
with open(D + "eval.jsonl", "w", encoding="utf-8") as f:
    for it in EVAL:
        f.write(json.dumps(it, ensure_ascii=False) + "\n")
with open(D + "expected.json", "w") as f:
    json.dump({"txt_n13": expected([TRAIN], 13), "txt_n5": expected([TRAIN], 5),
               "jsonl_n13": expected(DOCS, 13)}, f, indent=1)
    f.write("\n")
