#!/usr/bin/env python3
"""Builds the tokenizer reference fixtures under tests/fixtures/tok/.

    corpus.jsonl.gz        one JSON string per line (the inputs, deterministic)
    <name>.ref.jsonl.gz    line i = {"ids", "ids_nospecial", "decode", "decode_skip"} for corpus
                           line i, as the Hugging Face `tokenizers` library computes them, or
                           `null` where a tokenizer skips that line (subsampled wikitext chunks)
    manifest.json          per tokenizer: the path tok_load() gets, sha256 of the file(s) used,
                           which corpus lines were skipped, counts; the `tokenizers` version

Usage (from anywhere; ../shared is found next to the repo root unless --shared says otherwise):
    python3 tools/make_tok_reference.py                 # corpus + every tokenizer found
    python3 tools/make_tok_reference.py --only llama3   # one tokenizer (corpus kept if present)
    python3 tools/make_tok_reference.py --assay build/tokref/assay   # adds stories260K through
                                                        # `assay convert` when it works

The corpus needs ../shared/data/wikitext2_tokenized_test.txt; it is generated once and committed,
so tests on a fresh clone read the committed corpus and the committed tiny-model references.
"""
import argparse
import atexit
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "tok")

# Tokenizers whose references include every wikitext chunk; the others (tiny vocabularies make
# many tokens per chunk) keep only every WIKI_STRIDE-th chunk so the committed fixtures stay small.
WIKI_STRIDE = 4
FULL_WIKI = {"llama2", "llama3", "qwen3", "gemma3", "gpt2"}

SPECIALS = [
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<mask>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|reserved_special_token_0|>", "<|reserved_special_token_250|>",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_pad|>", "<tool_call>",
    "</tool_call>", "<think>", "</think>", "<|fim_prefix|>", "<|fim_middle|>",
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<image_soft_token>", "<unused0>",
    "[multimodal]",
]


# --------------------------------------------------------------------------------------------
# Corpus


def corpus_build(shared):
    rng = random.Random(20240607)
    out = []

    def add(s):
        out.append(s)

    # -- prose
    prose = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world!",
        "It was the best of times, it was the worst of times.",
        "Perplexity is the exponential of the average negative log-likelihood per token.",
        "She said: \"I can't believe it's already 5 o'clock!\"",
        "In 1492, Columbus sailed the ocean blue; in 1969, humans walked on the Moon.",
        "Mr. Smith (aged 42) bought 3.5 kg of apples for $12.99 -- a bargain?",
        "e.g., i.e., etc., vs. Dr. St. Jr.",
        "The U.S.A. and the U.K. signed the treaty on 2023-10-05T12:34:56Z.",
        "Once upon a time, there was a little girl named Lily. She loved to play outside.",
        "hello", "Hello", "HELLO", "hELLO", " hello", "hello ", "  hello  ",
        "a", "A", "I", " ", "x y", "ab", "abc", "antidisestablishmentarianism",
        "Supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "The end.", "What?!", "Wait... what?", "No!!!", "Yes — no – maybe.",
    ]
    for s in prose:
        add(s)
    words = ("the of and to in is was for that with as on by at from his her their this be "
             "are not have has had which or an were but it its they he she we you one two "
             "model token score batch value tensor layer head vocab merge byte piece").split()
    for i in range(200):
        n = rng.randint(1, 40)
        ws = [rng.choice(words) for _ in range(n)]
        if rng.random() < 0.5:
            ws[0] = ws[0].capitalize()
        s = " ".join(ws)
        s += rng.choice([".", "!", "?", "", ",", ";", " .", "\n", "...", ":"])
        add(s)

    # -- code
    code = [
        "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello\\n\");\n    return 0;\n}\n",
        "static int add(int a, int b)\n{\n\treturn a + b;\n}\n",
        "for (size_t i = 0; i < n; ++i) {\n        if (x[i] != y[i]) { return -1; }\n}",
        "/* comment */ // another\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
        "struct tok { int32_t *ids; size_t n, cap; };\n",
        "def f(x):\n    if x > 0:\n        return x * 2\n    else:\n        return -x\n",
        "class Foo(object):\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, a=1, *args, **kw):\n        self.a = a  # note\n",
        "import numpy as np\nx = np.arange(10)[::2]\nprint(f\"{x!r:>10}\")\n",
        "    lambda x: x**2 + 3*x - 1\n",
        "if __name__ == '__main__':\n\tmain()\n",
        "{\"a\": 1, \"b\": [true, false, null], \"c\": {\"d\": \"e\"}}",
        "{\n  \"name\": \"assay\",\n  \"version\": \"0.1.0\",\n  \"deps\": [\n    \"cjson\",\n    \"pcre2\"\n  ]\n}\n",
        "[\n\t{\"id\": 1, \"text\": \"x\"},\n\t{\"id\": 2, \"text\": \"y\\n\"}\n]",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
        "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "$ make -j8 && ./build/assay --help 2>&1 | grep -i usage",
        "x=1;y=2;z=x+y;if(z>2){z--;}else{z++;}",
        "fn main() -> Result<(), Box<dyn Error>> {\n    Ok(())\n}\n",
        "    \n    \n\n    return;\n",
        "a->b->c[i].d ** ptr &= ~0xFFu << 3;",
    ]
    for s in code:
        add(s)
        add(s.replace("    ", "\t"))
        add(s.replace("\n", "\r\n"))

    # -- whitespace
    for n in range(1, 21):
        add(" " * n)
        add("a" + " " * n + "b")
        add(" " * n + "word")
        add("word" + " " * n)
    for n in range(1, 9):
        add("\t" * n)
        add("x" + "\t" * n + "y")
        add("\n" * n)
        add("line" + "\n" * n + "line")
        add("\r\n" * n)
        add("a\r\n" * n)
    for s in [" \n ", "\t \t", " \r\n\t ", "\n \n", "\u00a0", "a\u00a0b", "\u3000", "a\u3000b",
              "\u2003\u2009x", "\v\f", "x\v\fy", "   \n\n   \n", "trailing   \n", "\n   leading",
              "a \n b", "a\t\n\tb", "\r", "a\rb", "\r\r\n\n"]:
        add(s)

    # -- numbers
    for n in range(1, 31):
        for _ in range(3):
            d = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))
            add(d)
        add("x" + "7" * n + "y")
        add("costs " + "1" * n + " dollars")
    for s in ["0", "00", "007", "1,234", "1,234,567", "12,345,678,901", "1.234.567,89",
              "1 000 000", "3.14159", "-42", "+42", "1e10", "6.022e23", "0x1F", "0b1010",
              "1/2", "50%", "$1,000.00", "€5", "2024-01-01", "12:30:45", "v1.2.3", "192.168.0.1",
              "1st 2nd 3rd 4th", "١٢٣", "٣.١٤", "१२३", "一二三", "１２３", "½ ¾", "²³",
              "Ⅻ", "12345678901234567890123456789012345", "9" * 40, "1_000_000", "1'000'000"]:
        add(s)

    # -- contractions
    for s in ["I'm", "I'M", "i'm", "don't", "DON'T", "Don't", "they're", "THEY'RE", "we've",
              "WE'VE", "she'll", "SHE'LL", "he'd", "HE'D", "it's", "IT'S", "can't", "won't",
              "y'all", "o'clock", "rock'n'roll", "'s", "'S", "'t", "''", "'", "it ’s", "it’s",
              "don’t", "I 'm", "the dog's bone", "the DOG'S BONE", "'ll'll'll", "L'été",
              "I'm sure they're sure we'd've done it"]:
        add(s)
        add(s + " " + s.upper())

    # -- punctuation
    for s in ["...", "!!!", "???", "?!?!", "---", "___", "***", "~~~", "###", "@@@", "$$$",
              "%%%", "^^^", "&&&", "|||", "\\\\\\", "///", "<<<>>>", "(((", ")))", "[[]]", "{{}}",
              "''\"\"``", ";;;", ":::", ",,,", "…", "——", "–", "«»", "„“", "•••", "·", "¿¡",
              "!?", ".,;:", " ...", " !!!", "a...b", "a---b", "= = =", "@-@", "@,@", "@.@",
              "<>", "</>", "<|>", "<|", "|>", "<s", "s>", "<|im_", "<start_of"]:
        add(s)
    punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    for _ in range(40):
        add("".join(rng.choice(punct) for _ in range(rng.randint(1, 30))))

    # -- accents, NFC and NFD
    accents = ["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Über", "Zoë",
               "crème brûlée", "São Paulo", "Dvořák", "Łódź", "ﬁ ligature", "Ⅸ", "ǅ", "Å",
               "é", "ñ", "ü", "ḱṷṓn", "Tiếng Việt", "Ελληνικά", "Русский язык", "ÀÉÎÕÜ"]
    for s in accents:
        for form in ["NFC", "NFD", "NFKC", "NFKD"]:
            add(unicodedata.normalize(form, s))
    add("e\u0301")
    add("e\u0301\u0301\u0301")
    add("\u0301")
    add("a\u0308\u0323")

    # -- scripts
    scripts = [
        "中文分词测试，你好世界。", "我爱自然语言处理", "這是繁體中文", "漢字",
        "こんにちは世界", "カタカナ", "ひらがなとカタカナと漢字", "ｶﾀｶﾅ", "東京タワー",
        "안녕하세요 세계", "한국어 토큰화", "ㄱㄴㄷ", "각",
        "مرحبا بالعالم", "اللغة العربية", "שלום עולם", "עברית",
        "नमस्ते दुनिया", "हिन्दी", "क्षत्रिय",
        "สวัสดีชาวโลก", "ภาษาไทย",
        "Привет, мир!", "Γειά σου Κόσμε", "Բարեւ", "ქართული", "አማርኛ", "ᚠᚢᚦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "𝐁𝐨𝐥𝐝", "𠀀𠀁", "ꙮ", "각",
    ]
    for s in scripts:
        add(s)
        add(" " + s)
        add(s + " " + s)

    # -- emoji
    emoji = ["😀", "😀😀😀", "👍", "👍🏻", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "🏳️‍🌈",
             "❤️", "❤", "✈️", "☺️", "1️⃣", "#️⃣", "🇺🇸", "🇯🇵", "🇩🇪🇫🇷", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🤷‍♀️",
             "🙂 hi 🙃", "I ❤️ NY", "🐍 + 🦀 = 💥", "👨🏽‍❤️‍💋‍👨🏻"]
    for s in emoji:
        add(s)
        add("text " + s + " text")

    # -- special-token text inside prose
    for sp in SPECIALS:
        add(sp)
        add("Hello " + sp + " world")
        add("a" + sp + "b")
        add(sp + sp)
        add(" " + sp + " ")
        add("\n" + sp + "\n")
        add(sp.upper())
    add("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n")
    add("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n")
    add("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
    add("<s>[INST] Hi [/INST] Hello</s>")
    add("Story one.<|endoftext|>Story two.")

    # -- long strings
    add("a" * 20000)
    add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20000)))
    add("ab" * 5000)
    add(" " * 3000)
    add("\n" * 1000)
    add("1" * 5000)
    add("é" * 2000)
    add("中" * 2000)
    add("😀" * 1000)

    # -- empty and control characters (U+0000 included: the C test decodes the JSON strings
    # itself, with explicit lengths)
    add("")
    for c in list(range(0, 32)) + [0x7F, 0x80, 0x85, 0x9F, 0xAD, 0x200B, 0x200C, 0x200D, 0x200E,
                                   0x2028, 0x2029, 0x2060, 0xFEFF, 0xFFFD, 0xFFFC, 0xE000, 0xF8FF,
                                   0x10FFFF, 0x1F, 0x1B]:
        add(chr(c))
        add("a" + chr(c) + "b")
    add("\x1b[31mred\x1b[0m")
    add("\ufeffBOM at start")

    # -- normalization and Unicode-version stress: canonical reordering, singletons, Hangul
    # jamo composition, CJK compatibility ideographs, characters new in recent Unicode versions
    # (regex classes and normalization tables of different libraries may disagree on them)
    norm = ["a\u0301\u0323", "a\u0323\u0301", "\u212b", "\u2126", "\u212a", "\u1100\u1161\u11a8",
            "\u1100\u1161", "\u110b\u1175\u11ab", "\uf900\uf901\ufa10", "\U0002f800", "\u0958",
            "\u0344", "\u1e9b\u0323", "\u0390", "\u3099\u304b", "\u304b\u3099", "\ufb01\ufb02",
            "\U0001fae8", "\U00031350", "\U0002ebf0", "\U0001f979", "\u0cf3",
            "\U00011f00", "\u2e5d", "\U0001e030", "\u08c9", "\u0560", "\u9fff", "\U0002b739",
            "\U00016fe4", "\U0001f6dc", "\u0c5d", "\U0001d2c0", "\u0e3f\u0e4f"]
    for s in norm:
        add(s)
        add("x" + s + "y z")
        add(" " + s + " 12" + s)
    planes = [(0x20, 0x2FF), (0x300, 0x36F), (0x370, 0x1FFF), (0x2000, 0x2BFF), (0x2E80, 0x9FFF),
              (0xA000, 0xD7FF), (0xF900, 0xFFFD), (0x10000, 0x1FFFF), (0x20000, 0x323AF),
              (0xE0000, 0xE01EF)]
    for _ in range(250):
        n = rng.randint(1, 24)
        cs = []
        for _ in range(n):
            lo, hi = rng.choice(planes)
            cs.append(chr(rng.randint(lo, hi)))
            if rng.random() < 0.2:
                cs.append(rng.choice(" \n\t.'1"))
        add("".join(cs))

    # -- mixed scripts and random mixes
    add("Hello世界こんにちは안녕Привет مرحبا שלום नमस्ते 😀 123")
    add("GPT-4は2023年に発表された。")
    add("The word 'café' in Japanese is カフェ and in Korean 카페.")
    add("Python的list和dict")
    pool = ("abcXYZ019 \t\n.,'!?-_" "éüñçÅ" "中文日本語" "ひらカタ" "한글" "مرح" "שלו" "हिन" "ไทย"
            "😀👍🏽🇺🇸‍️" "\u0301\u200b\u00a0\u3000")
    while len(out) < 2600:
        n = rng.randint(1, 60)
        add("".join(rng.choice(pool) for _ in range(n)))

    # -- wikitext chunks (every 3 lines, at most 1000 chunks)
    wiki = os.path.join(shared, "data", "wikitext2_tokenized_test.txt")
    with open(wiki, encoding="utf-8") as f:
        lines = f.read().split("\n")
    n_wiki = 0
    for i in range(0, len(lines), 3):
        if n_wiki >= 1000:
            break
        chunk = "\n".join(lines[i:i + 3])
        add(chunk)
        n_wiki += 1
    wiki_first = len(out) - n_wiki

    for s in out:
        s.encode("utf-8")  # no lone surrogates
    return out, wiki_first


def write_gz_lines(path, lines):
    # mtime=0 and no file name: the same input gives the same bytes.
    tmp = path + ".tmp"
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as g:
        for ln in lines:
            g.write(ln.encode("utf-8"))
            g.write(b"\n")
    with open(tmp, "wb") as f:
        f.write(raw.getvalue())
    os.replace(tmp, path)


def read_gz_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(ln) for ln in f.read().split("\n") if ln]


# --------------------------------------------------------------------------------------------
# Tokenizers


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def gpt2_build(d):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, AddedToken

    bpe = models.BPE.from_file(os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe"))
    t = Tokenizer(bpe)
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    t.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return t


def gpt2_crosscheck(t, d, corpus):
    """The hand-built tokenizer must give what transformers' GPT2TokenizerFast gives."""
    from transformers import GPT2TokenizerFast

    # transformers 5 takes the vocabulary and merges as objects, not file names.
    with open(os.path.join(d, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(d, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(ln.split(" ")) for ln in f.read().split("\n")[1:] if ln]
    ref = GPT2TokenizerFast(vocab=vocab, merges=merges)
    bad = 0
    for s in corpus:
        a = t.encode(s, add_special_tokens=False).ids
        b = ref(s, add_special_tokens=False)["input_ids"]
        a2 = t.encode(s).ids
        b2 = ref(s)["input_ids"]
        same_decode = all(
            t.decode(a2, skip_special_tokens=k)
            == ref.decode(b2, skip_special_tokens=k, clean_up_tokenization_spaces=False)
            for k in (False, True))
        if a != b or a2 != b2 or not same_decode:
            bad += 1
            if bad <= 3:
                print(f"  gpt2 cross-check mismatch on {s[:60]!r}: {a[:10]} vs {b[:10]}")
    print(f"  gpt2: tokenizers-built vs GPT2TokenizerFast: {len(corpus) - bad}/{len(corpus)} agree")
    return bad


def autotokenizer_agreement(d, tok, corpus, limit):
    """Informational: how often transformers' AutoTokenizer (which may rebuild parts of the
    pipeline from tokenizer_config.json) agrees with tokenizers.Tokenizer.from_file."""
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(d)
    except Exception as e:  # noqa: BLE001 - informational only
        return {"error": str(e)[:200]}
    n = agree = 0
    first = None
    for s in corpus[:limit]:
        a = tok.encode(s).ids
        b = at(s)["input_ids"]
        n += 1
        if a == b:
            agree += 1
        elif first is None:
            first = {"text": s[:80], "tokenizers": a[:16], "autotokenizer": b[:16]}
    return {"class": type(at).__name__, "checked": n, "agree": agree, "first_difference": first}


def tokenizers_find(shared, assay):
    """(name, tokenizer-file-for-python, path-for-tok_load, files-to-hash, kind)"""
    found = []
    for name in ["llama2", "llama3", "qwen3", "gemma3"]:
        p = os.path.join(shared, "tokenizers", name, "tokenizer.json")
        if os.path.exists(p):
            found.append((name, p, f"../shared/tokenizers/{name}/tokenizer.json", [p], "shared"))
    g = os.path.join(shared, "tokenizers", "gpt2")
    if os.path.exists(os.path.join(g, "encoder.json")):
        found.append(("gpt2", None, "../shared/tokenizers/gpt2",
                      [os.path.join(g, "encoder.json"), os.path.join(g, "vocab.bpe")], "shared"))
    mdir = os.path.join(REPO, "tests", "fixtures", "models")
    if os.path.isdir(mdir):
        for m in sorted(os.listdir(mdir)):
            p = os.path.join(mdir, m, "tokenizer.json")
            if os.path.exists(p):
                found.append((f"tiny_{m}", p, f"tests/fixtures/models/{m}/tokenizer.json", [p],
                              "committed"))
    gguf = os.path.join(shared, "models", "stories260K", "stories260K.gguf")
    if assay and os.path.exists(gguf):
        tmp = tempfile.mkdtemp(prefix="tokref-")
        atexit.register(shutil.rmtree, tmp, True)
        dst = os.path.join(tmp, "stories_hf")
        r = subprocess.run([assay, "convert", gguf, dst], capture_output=True, text=True)
        p = os.path.join(dst, "tokenizer.json")
        if r.returncode == 0 and os.path.exists(p):
            found.append(("stories260K", p, "converted:../shared/models/stories260K/stories260K.gguf",
                          [p], "converted"))
        else:
            print(f"  stories260K: `assay convert` failed (rc {r.returncode}): "
                  f"{(r.stdout + r.stderr).strip()[:300]}")
    elif os.path.exists(gguf):
        print("  stories260K: skipped (no --assay given; its tokenizer.json comes from "
              "`assay convert`)")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared"))
    ap.add_argument("--only", action="append", help="tokenizer name(s) to (re)build")
    ap.add_argument("--assay", help="assay binary, for `assay convert` of stories260K")
    ap.add_argument("--new-corpus", action="store_true",
                    help="regenerate corpus.jsonl.gz even if it exists")
    ap.add_argument("--auto-limit", type=int, default=400,
                    help="corpus lines checked against transformers AutoTokenizer (info only)")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    os.makedirs(OUT, exist_ok=True)
    cpath = os.path.join(OUT, "corpus.jsonl.gz")
    mpath = os.path.join(OUT, "manifest.json")
    manifest = {"tokenizers_version": tokenizers.__version__, "tokenizers": {}}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest["tokenizers"] = json.load(f).get("tokenizers", {})

    if args.new_corpus or not os.path.exists(cpath):
        corpus, wiki_first = corpus_build(args.shared)
        write_gz_lines(cpath, [json.dumps(s, ensure_ascii=False) for s in corpus])
        manifest["tokenizers"] = {}  # old references no longer line up
    else:
        corpus = read_gz_lines(cpath)
        with open(mpath) as f:
            wiki_first = json.load(f)["corpus"]["wiki_first"]
    manifest["corpus"] = {"file": "corpus.jsonl.gz", "lines": len(corpus),
                          "wiki_first": wiki_first, "sha256": sha256_file(cpath)}
    print(f"corpus: {len(corpus)} strings ({len(corpus) - wiki_first} wikitext chunks)")

    built = set()  # references written or shared in this run
    for name, pyfile, load, files, origin in tokenizers_find(args.shared, args.assay):
        if args.only and name not in args.only:
            continue
        built.add(name)
        tok = gpt2_build(os.path.dirname(files[0])) if name == "gpt2" else Tokenizer.from_file(pyfile)
        full = name in FULL_WIKI
        hashes = {os.path.basename(p): sha256_file(p) for p in files}
        # Identical tokenizer files (the tiny llama-family models share one) share one reference.
        twin = next((n for n, e in manifest["tokenizers"].items()
                     if n != name and n in built and e.get("sha256") == hashes
                     and e.get("wiki_stride") == (1 if full else WIKI_STRIDE)
                     and os.path.exists(os.path.join(OUT, e["ref"]))), None)
        if twin:
            entry = dict(manifest["tokenizers"][twin], load=load, origin=origin)
            manifest["tokenizers"][name] = entry
            print(f"  {name}: same file as {twin}, shares {entry['ref']}")
            continue
        skipped = 0
        lines = []
        for i, s in enumerate(corpus):
            if not full and i >= wiki_first and (i - wiki_first) % WIKI_STRIDE != 0:
                lines.append("null")
                skipped += 1
                continue
            ids = tok.encode(s, add_special_tokens=True).ids
            ids_ns = tok.encode(s, add_special_tokens=False).ids
            rec = {"ids": ids, "ids_nospecial": ids_ns,
                   "decode": tok.decode(ids, skip_special_tokens=False),
                   "decode_skip": tok.decode(ids, skip_special_tokens=True)}
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        rpath = os.path.join(OUT, f"{name}.ref.jsonl.gz")
        write_gz_lines(rpath, lines)
        entry = {"ref": f"{name}.ref.jsonl.gz", "load": load, "origin": origin,
                 "sha256": hashes,
                 "checked": len(corpus) - skipped, "skipped_wiki_chunks": skipped,
                 "wiki_stride": 1 if full else WIKI_STRIDE,
                 "bytes": os.path.getsize(rpath)}
        if name == "gpt2":
            entry["gpt2_fast_mismatches"] = gpt2_crosscheck(tok, os.path.dirname(files[0]), corpus)
        elif origin == "shared" and args.auto_limit > 0:
            entry["autotokenizer"] = autotokenizer_agreement(os.path.dirname(pyfile), tok, corpus,
                                                             args.auto_limit)
        manifest["tokenizers"][name] = entry
        print(f"  {name}: {entry['checked']} lines, {entry['bytes']} bytes -> {rpath}")

    # References no tokenizer points to any more (a tokenizer became a twin, or was removed).
    used = {e["ref"] for e in manifest["tokenizers"].values()}
    for fn in os.listdir(OUT):
        if fn.endswith(".ref.jsonl.gz") and fn not in used:
            os.remove(os.path.join(OUT, fn))
            print(f"  removed unused {fn}")
    tmp = mpath + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, mpath)
    total = sum(os.path.getsize(os.path.join(OUT, x)) for x in os.listdir(OUT))
    print(f"fixtures: {total / 1e6:.2f} MB in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
