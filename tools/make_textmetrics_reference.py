#!/usr/bin/env python3
"""Reference values for scoring/textmetrics (tests/test_textmetrics.c).

Needs (PyPI): sacrebleu==2.6.0, rouge_score==0.1.2 (with nltk 3.9.x for its PorterStemmer),
lm_eval==0.4.13 (its exact_match_hf_evaluate), numpy 2.x. No network, no data files.
Rerun from the repository root:

    /tmp/lmenv/bin/python tools/make_textmetrics_reference.py

Options (for extra, uncommitted checks): --seed N, --stress (random characters from many
scripts), --out DIR (run build/tests/all from a folder whose tests/fixtures/textmetrics is DIR),
--all-words (every harvested word and its stem to /tmp/textmetrics_stems_all.tsv).

Writes tests/fixtures/textmetrics/cases.jsonl (one line per hypothesis/reference item with its
sentence-level values, then sub-corpus lines with corpus BLEU/chrF over index ranges, then the
signatures) and tests/fixtures/textmetrics/stems.tsv (word TAB nltk stem). Seeded: two runs write
the same files. The corpus is generated here (no external text); the stem word list is harvested
from the English prose of the installed Python packages' sources.
"""
import json
import os
import random
import re
import string
import sys
import glob

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from rouge_score import rouge_scorer
from nltk.stem import porter
from lm_eval.api.metrics import exact_match_hf_evaluate

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "textmetrics")
N_ITEMS = 600
N_REFS = 3

WORDS = """the a an of to and in is it that for on was with he as I his be at by had not are but
from or have you they which one were her all she there would their we him been has when who will
more no if out so said what up its about into than them can only other new some could time these
two may then do first any my now such like our over man me even most made after also did many
before must through back years where much your way well down should because each just those people
Mr how too little state good very make world still own see men work long get here between both
life being under never day same another know while last might us great old year off come since
against go came right used take three running jumped happily generalization relational conditional
hopefulness goodness sensitivity caresses ponies ties cats feed agreed plastered motoring sing
conflated troubled sized hopping tanned falling hissing fizzed failing filing happy sky skies dying
lying news innings outings proceed exceeded succeeding electrical formalize triplicate adjustment
communism bowdlerize controlling rolling generously national rationalization""".split()

PUNCT = [".", ",", "!", "?", ";", ":", "...", "-", "--", "(", ")", "\"", "'", "&", "/", "%", "$"]
UNI = ["café", "naïve", "Zürich", "東京", "日本語のテキスト", "😀", "👍🏽", "ΟΔΟΣ", "Σοφία", "İstanbul",
       "\u212aelvin", "straße", "Ελληνικά", "Москва", "مرحبا", "ﬁne", "x\u0301y", "Ⅻ", "²", "٣"]
SPACES = [" ", "  ", "\t", "\u00a0", "\u3000", "\u2009", "\x1c", "\x85"]
SPECIAL = ["<skipped>", "&amp;", "&quot;", "&lt;", "&gt;", "&amp;quot;", "don't", "it's", "I'm",
           "can't", "http://example.com/a-b?c=1&d=2", "user@mail.org", "3.14", "1,000,000", "3-4",
           "10-", "U.S.", "e.g.", "$5.00", "50%", "#hash", "{x}", "[y]", "a|b", "~tilde~", "`tick`",
           "\\back", "x^2", "under_score", "1.", ".5", ",7", "a,b", "x.y"]


STRESS = 0.05  # share of words made of random characters from many scripts (--stress: 0.3)
STRESS_CPS = [0x1C, 0x1F, 0x85, 0xA0, 0xAD, 0x130, 0x131, 0x3A3, 0x3C3, 0x3C2, 0x345, 0x301, 0x2019,
              0x200D, 0x212A, 0x2126, 0x1E9E, 0xDF, 0x2160, 0xFF21, 0xFF10, 0x0661, 0x2028, 0x3000,
              0x1F600, 0x10400, 0x0E01, 0x05D0, 0x2E, 0x27, 0x3A, 0xB7, 0x5F, 0x2D]


def rand_word(rng):
    r = rng.random()
    if r < STRESS:
        return "".join(chr(rng.choice(STRESS_CPS)) if rng.random() < 0.5 else rng.choice("abcxyzAS1")
                       for _ in range(rng.randint(1, 6)))
    if r < 0.70:
        w = rng.choice(WORDS)
    elif r < 0.80:
        w = str(rng.choice([0, 1, 7, 42, 1999, 2024, 123456, 3.5, -2]))
    elif r < 0.90:
        w = rng.choice(SPECIAL)
    else:
        w = rng.choice(UNI)
    c = rng.random()
    if c < 0.08:
        w = w.upper()
    elif c < 0.18:
        w = w.capitalize()
    return w


def rand_sentence(rng, n):
    out = []
    for i in range(n):
        out.append(rand_word(rng))
        if rng.random() < 0.15:
            out.append(rng.choice(PUNCT))
    sep = [" " if rng.random() < 0.9 else rng.choice(SPACES) for _ in out]
    s = "".join(w + sp for w, sp in zip(out, sep)).rstrip(" ")
    if s and rng.random() < 0.6:
        s += rng.choice([".", "!", "?", " .", "", "...", "\n"])
    return s


def mutate(rng, s):
    """A hypothesis near a reference: dropped, swapped, replaced, re-cased words."""
    toks = s.split(" ")
    out = []
    for t in toks:
        r = rng.random()
        if r < 0.08:
            continue
        if r < 0.16:
            out.append(rand_word(rng))
        elif r < 0.22:
            out.append(t.lower() if rng.random() < 0.5 else t.upper())
        elif r < 0.26:
            out.append(t + rng.choice(PUNCT))
        else:
            out.append(t)
        if rng.random() < 0.04:
            out.append(t)  # repeated word
    if len(out) > 3 and rng.random() < 0.3:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def make_items(rng):
    items = []
    fixed = [
        ("", ["", "", ""]),
        ("", ["a reference", "another one", "x"]),
        ("a hypothesis", ["", "", ""]),
        ("word", ["word", "word", "word"]),
        ("The cat sat on the mat.", ["The cat sat on the mat.", "A cat was on the mat.",
                                     "There is a cat on the mat."]),
        ("the the the the the the the", ["The cat is on the mat.", "There is a cat on the mat.",
                                          "the"]),
        ("It is a guide to action which ensures that the military always obeys the commands of the party.",
         ["It is a guide to action that ensures that the military will forever heed Party commands.",
          "It is the guiding principle which guarantees the military forces always being under the command of the Party.",
          "It is the practical guide for the army always to heed the directions of the party."]),
        ("first line\nsecond line here\n\nthird", ["first line\nthe second line\nthird one",
                                                   "line one\nline two", "first\n\nsecond\nthird"]),
        ("end-\nof-line hyphen", ["end of-line hyphen", "endof-line hyphen", "end-of-line hyphen"]),
        ("<skipped> text &amp; more &quot;quoted&quot; &lt;tag&gt;",
         ["text & more \"quoted\" <tag>", "<skipped>", "text &amp;amp; more"]),
        ("Hello, world! 1,000.50 items cost $3.14-4.", ["Hello world 1,000.50 items cost $3.14 - 4",
                                                        "hello, World!", "items: 1,000.50"]),
        ("café naïve Zürich 東京 😀", ["cafe naive Zurich 東京 😀", "café naïve", "東京😀"]),
        ("ΟΔΟΣ Σοφία ΣΑΣ İstanbul \u212aelvin", ["οδος σοφια σας istanbul kelvin",
                                                   "ΟΔΟΣ ΣΟΦΙΑ", "İSTANBUL"]),
        ("a an the A An The", ["", "the", "an apple"]),
        ("trailing spaces   \t ", ["trailing spaces", " trailing  spaces ", "\u3000trailing\u00a0spaces\u2009"]),
        ("x", ["x y z w v u", "y", "x x"]),
        ("1 2 3 4 5 6 7 8 9 10", ["1 2 3 4 5 6 7 8 9 10", "10 9 8 7 6 5 4 3 2 1", "1 2 3"]),
        ("!!!", ["???", "!!!", "..."]),
        ("running jumped happily generalization", ["run jump happy general", "running", "jumps"]),
        # numpy keeps a string's width through lower(): U+0130 grows to two characters and the
        # last one falls off.
        ("İSTANBUL $5.00", ["i̇stanbul $5.00 .", "istanbul", "İstanbul $5.0"]),
        ("x\x1cy \u180e z\x85", ["xy z", "x y z", "x\u180ey z"]),
        ("ΣΑΣ ΣΑΣ'Σ Σ.", ["σας σας'σ σ.", "ςας", "ΣΑΣ"]),
    ]
    for h, refs in fixed:
        items.append((h, refs))
    while len(items) < N_ITEMS:
        kind = rng.random()
        if kind < 0.05:
            n = rng.randint(1, 2)
        elif kind < 0.10:
            n = rng.randint(60, 150)
        else:
            n = rng.randint(3, 30)
        ref0 = rand_sentence(rng, n)
        if rng.random() < 0.15:
            ref0 = "\n".join(rand_sentence(rng, rng.randint(2, 10)) for _ in range(rng.randint(2, 4)))
        refs = [ref0]
        for _ in range(N_REFS - 1):
            r = rng.random()
            if r < 0.5:
                refs.append(mutate(rng, ref0))
            elif r < 0.9:
                refs.append(rand_sentence(rng, rng.randint(1, 25)))
            else:
                refs.append("")
        r = rng.random()
        if r < 0.6:
            hyp = mutate(rng, ref0)
        elif r < 0.7:
            hyp = ref0
        elif r < 0.75:
            hyp = ""
        elif r < 0.8:
            hyp = ref0.upper()
        elif r < 0.85:
            words = ref0.split()
            hyp = " ".join((words[:3] or ["x"]) * rng.randint(2, 6))  # repeated n-grams
        else:
            hyp = rand_sentence(rng, rng.randint(1, 40))
        items.append((hyp, refs))
    return items


def bleu_dict(s, precisions=True):
    d = {"score": s.score, "counts": list(s.counts), "totals": list(s.totals), "bp": s.bp,
         "sys_len": s.sys_len, "ref_len": s.ref_len}
    if precisions:  # left out per item to keep the fixture small; the sub-corpora have them
        d["precisions"] = list(s.precisions)
    return d


def prf(s):
    return [s.precision, s.recall, s.fmeasure]


# SQuAD v1.1's official evaluate-v1.1.py definitions (normalize_answer, f1_score, exact_match).
def squad_normalize(s):
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(pred, gold):
    from collections import Counter
    p = squad_normalize(pred).split()
    g = squad_normalize(gold).split()
    common = Counter(p) & Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(p)
    recall = 1.0 * num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


EM_OPTS = [
    {"regexes": None, "case": False, "punct": False, "nums": False},
    {"regexes": None, "case": True, "punct": False, "nums": False},
    {"regexes": None, "case": True, "punct": True, "nums": False},
    {"regexes": None, "case": False, "punct": True, "nums": True},
    {"regexes": [",", "\\$", "(?s).*#### ", "\\.$"], "case": True, "punct": False, "nums": False},
    {"regexes": ["\\s+"], "case": True, "punct": True, "nums": False},
    {"regexes": ["^\\s*", "\\s*$", "\\b(the|a|an)\\b"], "case": True, "punct": False, "nums": False},
    {"regexes": ["[^\\w\\s]", "\\d+"], "case": False, "punct": False, "nums": False},
    {"regexes": ["x*", "(?i)THE"], "case": False, "punct": False, "nums": True},
]


def em_value(pred, ref, o):
    r = exact_match_hf_evaluate([pred], [ref], regexes_to_ignore=o["regexes"],
                                ignore_case=o["case"], ignore_punctuation=o["punct"],
                                ignore_numbers=o["nums"])
    return float(r["exact_match"])


def harvest_words(limit):
    """Distinct lower-case alphabetic words from the installed packages' English prose."""
    site = os.path.dirname(os.path.dirname(sacrebleu.__file__))
    seen = {}
    for pkg in ["nltk", "sacrebleu", "rouge_score", "lm_eval", "transformers"]:
        for path in sorted(glob.glob(os.path.join(site, pkg, "**", "*.py"), recursive=True)):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for w in re.findall(r"[A-Za-z]+", text):
                w = w.lower()
                if len(w) > 3 and w not in seen:
                    seen[w] = True
    words = sorted(seen)
    rng = random.Random(7)
    rng.shuffle(words)
    return words, words[:limit]


def main():
    global STRESS, OUT
    STRESS = 0.3 if "--stress" in sys.argv else STRESS
    if "--out" in sys.argv:
        OUT = sys.argv[sys.argv.index("--out") + 1]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 20261201
    rng = random.Random(seed)
    items = make_items(rng)
    out_dir = os.path.normpath(OUT)
    os.makedirs(out_dir, exist_ok=True)
    scorer = {s: rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"],
                                          use_stemmer=s) for s in (False, True)}
    lines = []
    for i, (hyp, refs) in enumerate(items):
        rec = {"kind": "item", "i": i, "hyp": hyp, "refs": refs, "bleu": {}, "chrf": {}}
        for k in (1, N_REFS):
            rec["bleu"][str(k)] = bleu_dict(BLEU().corpus_score([hyp], [[r] for r in refs[:k]]),
                                            precisions=False)
            rec["chrf"][str(k)] = CHRF().corpus_score([hyp], [[r] for r in refs[:k]]).score
        for stem in (False, True):
            sc = scorer[stem].score(refs[0], hyp)
            rec["rouge_stem" if stem else "rouge"] = [prf(sc[t]) for t in
                                                      ("rouge1", "rouge2", "rougeL", "rougeLsum")]
        rec["squad_f1"] = squad_f1(hyp, refs[0])
        rec["squad_em"] = float(squad_normalize(hyp) == squad_normalize(refs[0]))
        rec["em"] = [em_value(hyp, refs[0], o) for o in EM_OPTS]
        lines.append(rec)
    n = len(items)
    ranges = [(0, n), (0, n // 2), (n // 2, n), (0, 19)]
    r2 = random.Random(99)
    while len(ranges) < 40:
        a = r2.randrange(n)
        b = min(n, a + r2.choice([1, 2, 5, 17, 60, 200]))
        ranges.append((a, b))
    for a, b in ranges:
        for k in (1, 2, N_REFS):
            hyps = [h for h, _ in items[a:b]]
            streams = [[refs[j] for _, refs in items[a:b]] for j in range(k)]
            lines.append({"kind": "corpus", "start": a, "end": b, "n_refs": k,
                          "bleu": bleu_dict(BLEU().corpus_score(hyps, streams)),
                          "chrf": CHRF().corpus_score(hyps, streams).score})
    sigs = {}
    for k in (1, 2, N_REFS):
        m = BLEU()
        m.corpus_score(["a"], [["a"]] * k)
        c = CHRF()
        c.corpus_score(["a"], [["a"]] * k)
        sigs[str(k)] = {"bleu": str(m.get_signature()), "chrf": str(c.get_signature())}
    lines.append({"kind": "signatures", "sigs": sigs, "em_opts": EM_OPTS})
    with open(os.path.join(out_dir, "cases.jsonl"), "w", encoding="utf-8") as f:
        for rec in lines:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    stemmer = porter.PorterStemmer()
    all_words, words = harvest_words(4000)
    extra = ["sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings",
             "outing", "cannings", "canning", "howe", "proceed", "exceed", "succeed", "ties",
             "cried", "died", "yyyy", "syzygy", "toy", "happy", "enjoy", "abc1", "2024",
             "generalizations", "oscillators", "allied", "logically", "fully", "agreed", "feed",
             "controlling", "rolling", "hopping", "failing", "filing"]
    extra += ["biology", "zoology", "geology", "apology", "theology", "analogy"]
    # Made-up words ending in each rule's suffix (and pairs of them), so every rule and condition
    # is reached, including y-runs that the consonant definition walks back over.
    sufs = ["ational", "tional", "enci", "anci", "izer", "bli", "alli", "entli", "eli", "ousli",
            "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness", "aliti", "iviti",
            "biliti", "fulli", "logi", "icate", "ative", "alize", "iciti", "ical", "ful", "ness",
            "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "sion",
            "tion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "sses", "ies", "ss",
            "s", "eed", "ed", "ing", "ied", "y", "yy", "ly", "ings", "edly", ""]
    srng = random.Random(3)
    made_up = []
    for _ in range(1500):
        stem = "".join(srng.choice("aeiouy" if srng.random() < 0.4 else string.ascii_lowercase)
                       for _ in range(srng.randint(1, 6)))
        made_up.append(stem + srng.choice(sufs) + (srng.choice(sufs) if srng.random() < 0.3 else ""))
    with open(os.path.join(out_dir, "stems.tsv"), "w", encoding="utf-8") as f:
        for w in extra + [w for w in words if w not in extra] + made_up:
            f.write(f"{w}\t{stemmer.stem(w)}\n")
    if "--all-words" in sys.argv:  # a bigger, uncommitted list for a one-off check
        with open("/tmp/textmetrics_stems_all.tsv", "w", encoding="utf-8") as f:
            for w in all_words:
                f.write(f"{w}\t{stemmer.stem(w)}\n")
    print(f"{len(items)} items, {len(ranges) * 3} sub-corpora, "
          f"{len(words) + len(extra) + len(made_up)} stems, "
          f"sacrebleu {sacrebleu.__version__}")


if __name__ == "__main__":
    main()
