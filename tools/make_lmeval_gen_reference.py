#!/usr/bin/env python3
"""Runs lm-evaluation-harness 0.4.13 (HF backend, CPU, float32, batch size 1) on GSM8K-shaped items
we write ourselves, with lm-eval's own gsm8k.yaml (5-shot from train, its stop strings, both
filters, exact_match with its options) and max_gen_toks lowered through gen_kwargs, and commits
what tests/test_eval_gen_lmeval.c compares assay with:

  tests/fixtures/eval_gen/data/gsm8k/{test,train}.jsonl   the items (60 test, 24 train), made by
                                                          make_items() below, not the real set
  tests/fixtures/eval_gen/<run>/samples_gsm8k.jsonl       per document: the prompt lm-eval built,
                                                          its raw generation, the filtered answer
                                                          and exact_match per filter
  tests/fixtures/eval_gen/<run>/results.json              lm-eval's metrics and the run settings

Runs: the tiny fixtures llama, qwen2 and gpt2 (tests/fixtures/models; gpt2 has 128 positions, so
its prompts are left-truncated), stories260K (../shared, converted with `assay convert`), two
chat-template runs on qwen2 (--apply_chat_template with a system instruction, few-shot as
multi-turn and as one turn) and one on llama3 (a template that writes BOS itself).

Needs: pip install "lm_eval[hf]==0.4.13" (torch, transformers 5.x). No network at run time. The
tokenizer is passed as a PreTrainedTokenizerFast so transformers runs tokenizer.json as written.

    /tmp/lmenv/bin/python tools/make_lmeval_gen_reference.py [--assay build/assay] [--max-gen-toks 32]
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval_gen")
STORIES = os.path.join(ROOT, "..", "shared", "models", "stories260K", "stories260K.gguf")

NAMES = ["Ava", "Ben", "Cleo", "Dev", "Emma", "Finn", "Gia", "Hugo", "Iris", "Jon", "Kai", "Lena"]
THINGS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards"]


def fmt(n):
    return f"{n:,}"


def make_item(r):
    """One short word problem with a GSM8K-style worked answer ending in '#### n'."""
    kind = r.randrange(7)
    a, b, c = r.randint(2, 60), r.randint(2, 30), r.randint(2, 9)
    name, other, thing = r.choice(NAMES), r.choice(NAMES), r.choice(THINGS)
    if kind == 0:
        q = f"{name} has {a} {thing}. {other} gives {name} {b} more. How many {thing} does {name} have now?"
        s = a + b
        w = f"{name} has {a} + {b} = <<{a}+{b}={s}>>{s} {thing}."
    elif kind == 1:
        a += b
        q = f"{name} had {a} {thing} and lost {b} of them. How many {thing} are left?"
        s = a - b
        w = f"{name} has {a} - {b} = <<{a}-{b}={s}>>{s} {thing} left."
    elif kind == 2:
        q = f"Each box holds {c} {thing}. How many {thing} are in {a} boxes?"
        s = a * c
        w = f"There are {a} * {c} = <<{a}*{c}={s}>>{s} {thing}."
    elif kind == 3:
        price = r.randint(12, 400)
        q = f"A bike costs ${price}. {name} buys {c * 5} bikes for a shop. How much does {name} pay in dollars?"
        s = price * c * 5
        w = f"{name} pays {c * 5} * ${price} = $<<{c * 5}*{price}={s}>>{fmt(s)}."
    elif kind == 4:
        s = a * c
        q = f"{name} shares {s} {thing} equally among {c} friends. How many does each friend get?"
        w = f"Each friend gets {s} / {c} = <<{s}/{c}={a}>>{a} {thing}."
        s = a
    elif kind == 5:
        t = a + b + c
        q = f"{name} read {a} pages on Monday, {b} on Tuesday and {c} on Wednesday. How many pages in all?"
        w = f"{name} read {a} + {b} + {c} = <<{a}+{b}+{c}={t}>>{t} pages."
        s = t
    else:
        lo = r.randint(1, 9)
        hi = lo + r.randint(1, 12)
        q = f"The temperature was {lo} degrees and fell by {hi} degrees. What is the temperature now?"
        s = lo - hi
        w = f"The temperature is {lo} - {hi} = <<{lo}-{hi}={s}>>{s} degrees."
    return {"question": q, "answer": f"{w}\n#### {fmt(s) if s >= 1000 else s}"}


def make_items(n, seed):
    r = random.Random(seed)
    return [make_item(r) for _ in range(n)]


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(model_dir, name, data, inc, max_gen, limit, chat=None, batch_size=1):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    cfg = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if isinstance(cfg.get(k), str):
            setattr(tok, k, cfg[k])
    if cfg.get("chat_template"):
        tok.chat_template = cfg["chat_template"]
    lm = HFLM(pretrained=model_dir, tokenizer=tok, dtype="float32", device="cpu", batch_size=batch_size)
    tm = TaskManager(include_path=inc, include_defaults=False)
    kw = {}
    if chat:
        kw = {"apply_chat_template": True, "system_instruction": chat["system"],
              "fewshot_as_multiturn": chat["multiturn"]}
    import time
    t0 = time.time()
    res = lm_eval.simple_evaluate(model=lm, tasks=["gsm8k"], task_manager=tm, log_samples=True,
                                  gen_kwargs={"max_gen_toks": max_gen}, limit=limit,
                                  bootstrap_iters=100, random_seed=0, numpy_random_seed=1234,
                                  torch_random_seed=1234, fewshot_random_seed=1234, **kw)
    seconds = time.time() - t0
    dest = os.path.join(OUT, name)
    os.makedirs(dest, exist_ok=True)
    rows = {}
    for s in res["samples"]["gsm8k"]:
        row = rows.setdefault(s["doc_id"], {"doc_id": s["doc_id"], "target": s["target"],
                                            "prompt": s["arguments"]["gen_args_0"]["arg_0"]
                                            if isinstance(s["arguments"], dict) else s["arguments"][0][0],
                                            "resp": s["resps"][0][0], "filtered": {}, "exact_match": {}})
        row["filtered"][s["filter"]] = s["filtered_resps"][0]
        row["exact_match"][s["filter"]] = s["exact_match"]
    with open(os.path.join(dest, "samples_gsm8k.jsonl"), "w", encoding="utf-8") as f:
        for d in sorted(rows):
            f.write(json.dumps(rows[d], ensure_ascii=False) + "\n")
    summary = {"lm_eval_version": lm_eval.__version__, "model": name, "max_gen_toks": max_gen,
               "num_fewshot": 5, "limit": limit, "chat": chat, "batch_size": batch_size,
               "seconds_simple_evaluate": seconds,
               "results": {k: v for k, v in res["results"]["gsm8k"].items() if k != "alias"}}
    with open(os.path.join(dest, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print("wrote", dest, summary["results"])


def main():
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--assay", default=os.path.join(ROOT, "build", "assay"))
    ap.add_argument("--max-gen-toks", type=int, default=32)
    ap.add_argument("--runs", default="llama,qwen2,gpt2,stories260K,qwen2_chat,qwen2_chat_single,llama3_chat")
    ap.add_argument("--model", help="run only this checkpoint directory (bench/eval_bench.sh)")
    ap.add_argument("--out", default=OUT, help="where data/ and <run>/ go")
    ap.add_argument("--batch-size", type=int, default=1)
    a = ap.parse_args()
    OUT = a.out
    want = a.runs.split(",")

    data = os.path.join(OUT, "data")
    write_jsonl(os.path.join(data, "gsm8k", "test.jsonl"), make_items(60, 1))
    write_jsonl(os.path.join(data, "gsm8k", "train.jsonl"), make_items(24, 2))

    import lm_eval
    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    inc = tempfile.mkdtemp(prefix="lmeval-gen-")
    with open(os.path.join(inc, "gsm8k.yaml"), "w") as f:
        f.write(f"include: {tasks_dir}/gsm8k/gsm8k.yaml\ntask: gsm8k\ndataset_path: json\n"
                f"dataset_name: null\ndataset_kwargs:\n  data_files:\n"
                f"    test: {data}/gsm8k/test.jsonl\n    train: {data}/gsm8k/train.jsonl\n")
    if a.model:
        run(a.model, "model", data, inc, a.max_gen_toks, None, batch_size=a.batch_size)
        shutil.rmtree(inc)
        return
    models = os.path.join(ROOT, "tests", "fixtures", "models")
    for m in ("llama", "qwen2", "gpt2"):
        if m in want:
            run(os.path.join(models, m), m, data, inc, a.max_gen_toks, None)
    if "stories260K" in want:
        tmp = tempfile.mkdtemp(prefix="stories-gen-")
        conv = os.path.join(tmp, "stories260K")
        subprocess.run([a.assay, "convert", STORIES, conv], check=True)
        run(conv, "stories260K", data, inc, a.max_gen_toks, None)
        shutil.rmtree(tmp)
    # llama3's template starts with {{ bos_token }}: the rendered prompt already holds BOS, so it
    # is encoded without special tokens (no second BOS)
    chats = {"qwen2_chat": ("qwen2", {"system": "Answer with a number.", "multiturn": True}),
             "qwen2_chat_single": ("qwen2", {"system": "Answer with a number.", "multiturn": False}),
             "llama3_chat": ("llama3", {"system": None, "multiturn": True})}
    for name, (m, chat) in chats.items():
        if name in want:
            run(os.path.join(models, m), name, data, inc, a.max_gen_toks, 12, chat)
    shutil.rmtree(inc)


if __name__ == "__main__":
    sys.exit(main())
