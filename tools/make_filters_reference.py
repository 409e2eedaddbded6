#!/usr/bin/env python3
"""Writes tests/fixtures/filters/reference.json: what lm-eval's filters, Python's str methods,
json, sklearn and numpy give on a few hundred generated responses, for tests/test_filters.c and
tests/test_bootstrap.c to compare against.

Needs (PyPI): lm_eval==0.4.13 (its RegexFilter, run as-is on gsm8k's two filter patterns and on
others), scikit-learn==1.9.1 (classification_report, confusion_matrix), numpy==2.4.6
(percentile, quantile); CPython 3.11 (str.lower / strip / isspace follow its Unicode 14 tables).
Rerun: /tmp/lmenv/bin/python tools/make_filters_reference.py [OUT]
Seeded: two runs write the same file.

Where our contract defines something Python leaves open, this script states our definition:
- group_select past the matches: Python raises IndexError; we return the fallback unchanged.
- JSON: json.loads with NaN / Infinity refused (not RFC 8259 JSON); "integer" accepts an int or
  a float with is_integer(); the response is stripped and one ``` fence removed first.
- label extraction and the xoshiro256** generator are our definitions; their Python versions
  below are written from the header contracts, independently of the C code.
"""
import json
import random
import sys
import unicodedata

import numpy as np
from lm_eval.filters.extraction import RegexFilter
from sklearn.metrics import classification_report, confusion_matrix

M64 = (1 << 64) - 1

# ---- responses ---------------------------------------------------------------------------------

FIXED = [
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72",
    "#### -3", "The total is $1,000.", "#### 1,000", "#### 3.50", "####72", "#### ",
    "no number here", "", "   ", "The answer is 18.75.", "-7 degrees, then 12 more, so 5",
    "42.", "1.2.3", ".5", "$", "$$", "--5", "#### 5\n#### 6", "Answer: 1,234,567 apples",
    "٣٤ and ١٢", "fullwidth １２３ digits", "#### ５", "x = 10, y = -20, z = 3.14159",
    "$1,000.", "It costs $5 each, so 3 * $5 = $15.\n#### 15", "Positive", "  negative.\n",
    "The sentiment is NEUTRAL", "I think it's positive, not negative", "unknown", "Yes", "no",
    "know", "İstanbul", "ΣΊΣΥΦΟΣ", "ΌΣΟΣ Σ", "Σ", "ΑΣ.", "ΑΣ'Α", "A\u0301Σ\u0301",
    "```json\n{\"name\": \"x\", \"age\": 3}\n```", "{\"name\": 1}", "{\"a\": NaN}", "[1,2]",
    "{\"age\": 3.0, \"name\": \"y\"}", "{\"age\": true, \"name\": \"z\"}",
    "Sure! {\"name\": \"a\", \"age\": 2}", "{\"name\": \"a\", \"name\": 2, \"age\": 1}",
    "{\"n\\u0061me\": \"x\", \"age\": 1}", "01", "1.", "{\"age\": 1e400, \"name\": \"q\"}",
    "```\n{\"name\": \"b\", \"age\": -0}", "{\"name\": \"c\", \"age\": 2", "```JSON {\"name\":null,\"age\":1e2}```",
    "{\"name\": \"tab\there\", \"age\": 1}", "{\"name\": \"\\ud83d\\ude00\", \"age\": 5, \"tags\": []}",
    "{\"name\": \"e\", \"age\": 2.5}", "{\"name\": \"f\", \"age\": 7, \"tags\": \"x\"}", "null",
    "\"just a string\"", "{} ", "{\"age\": 1, \"name\": \"g\", \"extra\": {\"deep\": [1, {\"x\": null}]}}",
    "\u2003 text \x1c", "\x85abc\xa0", "line1\r\nline2", "\u200b zero width \u200b", "\x1f\x1e\x1d",
    "a\u2028b\u2029c", "\t\v\f\r\n", "ÀÉÎÕÜ ÇÑ ǅ ǈ ǋ Ω K Å ẞ ǲ", "ⅠⅡⅢ ⒶⒷ", "ＡＢＣ", "𐐀𐐁 𞤀",
    "foo bar foo", "aaa", "abab", "x\ny\n", "\nstarts with newline",
]

WORDS = ["the", "apples", "so", "total", "each", "then", "Answer", "answer", "is", "we", "get",
         "Therefore", "costs", "left", "remaining", "=", "+", "*", "/", "and", "of"]


def gen_number(rng):
    k = rng.randrange(9)
    if k == 0:
        return str(rng.randrange(-100, 100))
    if k == 1:
        return f"{rng.randrange(1, 10**7):,}"
    if k == 2:
        return f"{rng.uniform(0, 1000):.{rng.randrange(1, 4)}f}"
    if k == 3:
        return "$" + f"{rng.randrange(1, 10**5):,}"
    if k == 4:
        return str(rng.randrange(10**6)) + "."
    if k == 5:
        return "-" + str(rng.randrange(1, 500))
    if k == 6:
        return "".join(chr(0x660 + int(d)) for d in str(rng.randrange(1, 999)))
    return str(rng.randrange(0, 10000))


def gen_reasoning(rng):
    lines = []
    for _ in range(rng.randrange(1, 5)):
        toks = [rng.choice(WORDS) if rng.random() < 0.6 else gen_number(rng)
                for _ in range(rng.randrange(3, 12))]
        lines.append(" ".join(toks) + rng.choice([".", "", ":", "!"]))
    end = rng.randrange(5)
    if end == 0:
        lines.append("#### " + gen_number(rng))
    elif end == 1:
        lines.append("The answer is " + gen_number(rng))
    elif end == 2:
        lines.append("####" + rng.choice([" ", "  ", ""]) + gen_number(rng) + rng.choice(["", "\n", " dollars"]))
    return rng.choice(["\n", "\n\n", " "]).join(lines)


LABELS = ["positive", "negative", "neutral", "yes", "no", "A", "B", "C", "D", "entailment",
          "contradiction", "not_entailment"]


def gen_label_answer(rng):
    lab = rng.choice(LABELS)
    lab = rng.choice([lab, lab.upper(), lab.capitalize()])
    return rng.choice(["{}", " {}.", "Answer: {}", "The answer is ({})", "{}\nBecause reasons",
                       "I'd say {} or maybe {}", "  \n{}  ", "It is not {}", "Option {}"]).format(lab, rng.choice(LABELS))


def gen_json(rng):
    obj = {}
    if rng.random() < 0.8:
        obj["name"] = rng.choice(["x", "Ωmega", 3, None, True, "a\"b"])
    if rng.random() < 0.8:
        obj["age"] = rng.choice([1, 2.0, 2.5, -3, "4", False, None, 10**20, 1e-3])
    if rng.random() < 0.4:
        obj["tags"] = rng.choice([[], ["a"], {}, "t", 0])
    text = json.dumps(obj, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5)
    k = rng.randrange(7)
    if k == 0:
        text = "```json\n" + text + "\n```"
    elif k == 1:
        text = "```\n" + text + "\n```\n"
    elif k == 2:
        text = "Here you go: " + text
    elif k == 3:
        text = text[:-1]  # cut off
    elif k == 4:
        text = "  " + text + "  \n"
    return text


def responses():
    rng = random.Random(20261201)
    out = list(FIXED)
    for _ in range(160):
        out.append(gen_reasoning(rng))
    for _ in range(60):
        out.append(gen_label_answer(rng))
    for _ in range(60):
        out.append(gen_json(rng))
    return out


# ---- regex (lm-eval's RegexFilter itself) ------------------------------------------------------

PATTERNS = [
    (r"#### (\-?[0-9\.\,]+)", 0, "[invalid]"),          # gsm8k strict-match
    (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1, "[invalid]"),  # gsm8k flexible-extract
    (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", 0, "[invalid]"),
    (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -2, "[invalid]"),
    (r"\d+", 1, "none"),
    (r"\d+", 7, "none"),
    (r"\d*", -1, "[invalid]"),
    (r"\d*", 2, "[invalid]"),
    (r"|a", -1, "F"),
    (r"(?i)answer(?: is)?:?\s*\(?(\w+)", 0, "[invalid]"),
    (r"(a)|(b)|(x)?", 0, " fb "),
    (r"(x)?(y)?", 0, " fb "),
    (r"(\s*)", 0, "fb"),
    (r"\S+", -1, "empty"),
    (r"[\s]+(\w+)$", 0, "-"),
    (r"(\w+)\Z", 0, "-"),
    (r"^\s*(.+?)\s*$", 0, "-"),
    (r"(?m)^(.*)$", -1, "-"),
    (r"\u03a3\w*", 0, "-"),
    (r"\bno\b", 0, "-"),
    (r"[^\S\n]+", 1, "-"),
    (r"x{,2}y", 0, "-"),
    (r"x{,}y", 0, "-"),
    (r"[]a]+", 0, "-"),
    (r"[[:alpha:]]+", 0, "-"),
    (r'"name":\s*"([^"]*)"', 0, "-"),
    (r"(?P<d>\d)(?P=d)", -1, "-"),
    (r"(?<=\$)\d+(?:,\d{3})*", 0, "-"),
    (r"(?s)#### (.*)", 0, "-"),
]


def regex_case(pat, gs, fb, resps):
    f = RegexFilter(regex_pattern=pat, group_select=gs, fallback=fb)
    outs = []
    for r in resps:
        try:
            outs.append(f.apply([[r]], [{}])[0][0])
        except IndexError:  # our definition: past the matches gives the fallback as given
            outs.append(fb)
    return {"pattern": pat, "group_select": gs, "fallback": fb, "outputs": outs}


# ---- labels and JSON: the header contracts in Python -------------------------------------------

def extract_label(resp, labels):
    t = resp.strip().lower()
    best, boff, blen = -1, None, 0
    for i, l in enumerate(labels):
        if not l:
            continue
        ll = l.lower()
        o = t.find(ll)
        if o >= 0 and (boff is None or o < boff or (o == boff and len(ll) > blen)):
            best, boff, blen = i, o, len(ll)
    return best


LABEL_SETS = [["positive", "negative", "neutral"], ["yes", "no"], ["A", "B", "C", "D"],
              ["entailment", "not_entailment", "contradiction"], ["no", "not", "know", ""],
              ["İ", "σ", "ς", "Straße"]]


def unfence(s):
    s = s.strip()
    if not s.startswith("```"):
        return s
    i = 3
    while i < len(s) and (s[i] in "_-+" or (s[i].isascii() and s[i].isalnum())):
        i += 1
    j = len(s)
    if j - i >= 3 and s.endswith("```"):
        j -= 3
    return s[i:j].strip()


def type_ok(v, types):
    for t in types:
        if t == "any":
            return True
        if t == "string" and isinstance(v, str):
            return True
        if t == "boolean" and isinstance(v, bool):
            return True
        if t == "null" and v is None:
            return True
        if t == "array" and isinstance(v, list):
            return True
        if t == "object" and isinstance(v, dict):
            return True
        if t == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if t == "integer" and not isinstance(v, bool) and (
                isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            return True
    return False


def refuse_constant(name):
    raise ValueError(name)


def json_check(fields, resp):
    """fields: None (parse only) or [(key, [types], required)]. (parses, has_required)."""
    try:
        v = json.loads(unfence(resp), parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        return [0, 0]
    if fields is None:
        return [1, 1]
    if not isinstance(v, dict):
        return [1, 0]
    for key, types, required in fields:
        if key not in v:
            if required:
                return [1, 0]
        elif not type_ok(v[key], types):
            return [1, 0]
    return [1, 1]


SCHEMAS = [
    (None, None),
    ('{"required": {"name": "string", "age": "integer"}}',
     [("name", ["string"], True), ("age", ["integer"], True)]),
    ('{"required": {"name": "any", "age": "number"}}',
     [("name", ["any"], True), ("age", ["number"], True)]),
    ('{"type": "object", "properties": {"name": {"type": ["string", "null"]}, '
     '"tags": {"type": "array"}}, "required": ["name"]}',
     [("name", ["string", "null"], True), ("tags", ["array"], False)]),
    ('{"$schema": "x", "type": "object", "required": ["age"], "properties": {"age": '
     '{"type": "boolean", "description": "d"}}}', [("age", ["boolean"], True)]),
]


# ---- classification report, distributions -----------------------------------------------------

def class_case(rng, k, n, p_unknown):
    gold = [rng.randrange(k) for _ in range(n)]
    pred = [(-1 if rng.random() < p_unknown else (g if rng.random() < 0.6 else rng.randrange(k)))
            for g in gold]
    labels = list(range(k))
    rep = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    cm = confusion_matrix(gold, pred, labels=labels + [-1])[:k]
    per = [[rep[str(c)][m] for m in ("precision", "recall", "f1-score")] + [int(rep[str(c)]["support"])]
           for c in labels]

    def avg(name):
        return [rep[name][m] for m in ("precision", "recall", "f1-score")]
    micro = avg("micro avg") if "micro avg" in rep else [rep["accuracy"]] * 3
    return {"k": k, "gold": gold, "pred": pred, "per_class": per, "macro": avg("macro avg"),
            "weighted": avg("weighted avg"), "micro": micro,
            "accuracy": float(np.mean(np.array(pred) == np.array(gold))),
            "confusion": cm.tolist()}


def dist_case(x):
    a = np.array(x, dtype=np.float64)
    return {"x": x, "mean": float(np.mean(a)), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "min": float(a.min()), "max": float(a.max())}


# ---- xoshiro256** (Blackman and Vigna's reference, in Python) ----------------------------------

class Xoshiro:
    def __init__(self, seed):
        self.s = []
        x = seed & M64
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def next(self):
        s = self.s
        result = (self.rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return result

    def below(self, n):
        if n <= 1:
            return 0
        threshold = (2**64 - n) % n
        while True:
            x = self.next()
            if x >= threshold:
                return x % n


def boot_mean(x, resamples, level, seed):
    r = Xoshiro(seed)
    n = len(x)
    stats = []
    for _ in range(resamples):
        s = 0.0
        for _ in range(n):
            s += x[r.below(n)]
        stats.append(s / n)
    q = np.quantile(np.array(stats), [(1 - level) / 2, (1 + level) / 2])
    return {"x": x, "resamples": resamples, "level": level, "seed": str(seed), "lo": float(q[0]),
            "hi": float(q[1]), "stderr": float(np.std(np.array(stats), ddof=1))}


def ranges(cps):
    out = []
    for c in cps:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/filters/reference.json"
    resps = responses()
    ref = {"generator": f"tools/make_filters_reference.py; Python {sys.version.split()[0]}, "
                        f"numpy {np.__version__}, lm_eval 0.4.13, sklearn",
           "responses": resps}
    ref["regex"] = [regex_case(p, g, f, resps) for p, g, f in PATTERNS]
    ref["strip"] = [r.strip() for r in resps]
    ref["lower"] = [r.lower() for r in resps]
    ref["first_line"] = [r.split("\n")[0] for r in resps]
    ref["lower_table"] = [[c, chr(c).lower()] for c in range(0x110000)
                          if not 0xD800 <= c < 0xE000 and chr(c).lower() != chr(c)]
    # Σ's context rule reads "cased" and "case-ignorable" neighbours: every pair around it
    ctx = ["", "A", "a", "\u03b1", "1", " ", "'", ".", ":", "\u00b7", "\u0301", "\u00ad", "\u02b0",
           "\u00aa", "\u24b6", "\u2160", "\u01c5", "\u2019", "\u1d2c", "\u0345", "\u3005", "-"]
    ref["sigma"] = [[p + q + "\u03a3" + u + v, (p + q + "\u03a3" + u + v).lower()]
                    for p in ["", "A"] for q in ctx for u in ctx for v in ["", "a"]]
    # the same rule probed at every code point: "x" + Σ lowers to ς iff x is cased and not
    # case-ignorable; "A" + x + Σ and "A" + Σ + x both end in ς iff x is case-ignorable
    ign, cased, unassigned = [], [], []
    for c in range(0x110000):
        ch = chr(c)
        if 0xD800 <= c < 0xE000 or unicodedata.category(ch) == "Cn":
            unassigned.append(c)
            continue
        if ("A" + ch + "\u03a3").lower()[-1] == "\u03c2" and ("A\u03a3" + ch).lower()[1] == "\u03c2":
            ign.append(c)
        if (ch + "\u03a3").lower()[-1] == "\u03c2":
            cased.append(c)
    ref["sigma_props"] = {"ignorable": ranges(ign), "cased_not_ignorable": ranges(cased),
                          "unassigned": ranges(unassigned)}
    ref["labels"] = [{"labels": ls, "outputs": [extract_label(r, ls) for r in resps]}
                     for ls in LABEL_SETS]
    ref["json"] = [{"schema": s, "outputs": [json_check(f, r) for r in resps]} for s, f in SCHEMAS]

    rng = random.Random(7)
    ref["class_report"] = [class_case(rng, k, n, pu) for k, n, pu in
                           [(2, 50, 0.0), (3, 120, 0.1), (5, 200, 0.2), (4, 6, 0.5), (12, 400, 0.05),
                            (3, 30, 1.0)]]
    ref["dist"] = [dist_case(x) for x in [
        [len(r) for r in resps], [5.0], [3.0, 1.0], [1.5, 2.25, -7.0, 1e10, 0.1],
        [rng.uniform(0, 100) for _ in range(101)], [float(rng.randrange(50)) for _ in range(37)]]]

    rngs = []
    for seed in [0, 1, 42, 2**63, M64]:
        r = Xoshiro(seed)
        nexts = [r.next() for _ in range(6)]
        below = {}
        for n in [1, 2, 3, 7, 1000, 2**32 + 1, 2**63 + 1, M64]:
            r2 = Xoshiro(seed)
            below[str(n)] = [r2.below(n) for _ in range(8)]
        rngs.append({"seed": str(seed), "next": [str(v) for v in nexts],
                     "below": {k: [str(v) for v in vs] for k, vs in below.items()}})
    ref["rng"] = rngs
    # numpy's lerp switches to b - (b - a) * (1 - t) for t >= 0.5: values where the two forms
    # round differently make that visible
    qx = sorted(rng.uniform(-3, 3) for _ in range(23))
    qs = [k / 200 for k in range(201)] + [(1 - 0.95) / 2, (1 + 0.95) / 2, 0.95, 1 / 3]
    ref["quantile"] = {"x": qx, "q": qs,
                       "want": [float(v) for v in np.quantile(np.array(qx), np.array(qs))]}
    brng = random.Random(11)
    ref["bootstrap"] = [
        boot_mean([float(brng.random() < 0.3) for _ in range(200)], 500, 0.95, 1234),
        boot_mean([brng.gauss(0, 1) for _ in range(57)], 300, 0.9, 7),
        boot_mean([1.0, 2.0, 3.0], 41, 0.5, 2**40),
    ]
    with open(out_path, "w", encoding="utf-8") as fp:
        json.dump(ref, fp, ensure_ascii=True, indent=None, separators=(",", ":"))
        fp.write("\n")
    print(f"wrote {out_path}: {len(resps)} responses, {len(PATTERNS)} patterns, "
          f"{len(ref['lower_table'])} lowercase mappings")


if __name__ == "__main__":
    main()
