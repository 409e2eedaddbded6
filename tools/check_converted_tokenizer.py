#!/usr/bin/env python3
"""Checks that transformers' AutoTokenizer reads a converted checkpoint's tokenizer exactly as
tokenizer.json says.

    python3 tools/check_converted_tokenizer.py DIR [--verbose]

DIR is what `assay convert` wrote. AutoTokenizer follows tokenizer_config.json's
"tokenizer_class": a class such as GPT2Tokenizer or LlamaTokenizer rebuilds parts of the
pipeline itself (transformers 5 builds its own pre-tokenizer), so a tokenizer.json detail such
as a digit split can be lost and lm-eval would tokenize differently from assay. This loads DIR
both ways, AutoTokenizer.from_pretrained(DIR) and PreTrainedTokenizerFast(tokenizer_file=...),
encodes ~500 digit- and whitespace-heavy strings with and without special tokens, and exits 1
on any difference (0 when all agree, 2 on bad usage). Needs transformers and tokenizers (CPU; no
torch).
"""
import os
import random
import sys


def corpus():
    """~500 strings, fixed: digits, runs of spaces, tabs and newlines, punctuation, non-ASCII."""
    fixed = [
        "", " ", "  ", "\n", "\t", " \n ", "Hello world", " Hello world", "Hello  world",
        "Hello world! 123", "Call 555-0123 or  42  times, x  7", "3.14159", "1,000,000",
        "2024-01-31T12:34:56Z", "  12  34  ", "a1b2c3", "x=1+2*3", "\t42\t", "007", "1e-5",
        "The year 1999 had 365 days.", "99 bottles\n\n98 bottles", "ÀÉÎõü 123", "日本語 2023年",
        "emoji 😀 12", "tab\tand\nnewline", "trailing space ", "   leading", "mixed \t\n 9",
        "<s> not special </s>", "don't can't won't", "$100.00 and 50%", "#1 @2 &3",
    ]
    rng = random.Random(1234)
    pieces = ["0", "1", "23", "456", "7890", " ", "  ", "   ", "\t", "\n", "\n\n", "a", "the",
              "Hello", "world", ",", ".", "-", "'s", "é", "ß", "中", "😀", "x", "A1", "(", ")"]
    out = list(fixed)
    while len(out) < 500:
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return out


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in argv
    if len(args) != 1 or not os.path.isdir(args[0]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    d = args[0]
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    auto = AutoTokenizer.from_pretrained(d)
    plain = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
    texts = corpus()
    diffs = 0
    for special in (False, True):
        for s in texts:
            a = auto(s, add_special_tokens=special)["input_ids"]
            b = plain(s, add_special_tokens=special)["input_ids"]
            if a != b:
                diffs += 1
                if verbose or diffs <= 10:
                    print(f"differ (special={special}) {s!r}:\n  AutoTokenizer           {a}\n"
                          f"  PreTrainedTokenizerFast {b}")
    print(f"{d}: {type(auto).__name__} vs PreTrainedTokenizerFast: {len(texts)} strings x 2 "
          f"(with/without special tokens), {diffs} differ")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
