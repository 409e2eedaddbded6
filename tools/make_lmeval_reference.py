#!/usr/bin/env python3
"""Runs lm-evaluation-harness (HF backend, CPU, float32) on a tiny checkpoint over local copies of
a few hundred documents per task, and commits what tests/test_eval_lmeval.c compares assay with:

  tests/fixtures/lmeval/data/          the documents, in the layouts `assay eval --data` reads
                                       (cais/mmlu and Rowan/hellaswag JSONL, ARC JSONL)
  tests/fixtures/lmeval/<model>/       lm-eval's per-request log-likelihoods, is_greedy, the
                                       (context, continuation) pairs and the metrics

Needs: pip install "lm_eval[hf]" (torch, transformers). No network at run time: the data come
from ../shared/data (MMLU csv, HellaSwag six-line); ARC-format questions are made from MMLU ones
(lm-eval's arc_easy config reads them the same way). The tokenizer is passed as a
PreTrainedTokenizerFast so transformers runs tokenizer.json as written.

    python3 tools/make_lmeval_reference.py [--model tests/fixtures/models/llama] [--n 200]
"""
import argparse, bz2, csv, json, os, shutil, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "tests", "fixtures", "lmeval")
SUBJECTS = ["abstract_algebra", "anatomy", "marketing"]


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_mmlu(split, subject):
    with open(os.path.join(SHARED, "mmlu", split, f"{subject}_{split}.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"question": r["question"], "subject": subject,
             "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(r["answer"])} for r in rows]


def hellaswag_rows(n):
    """HF-shaped rows from llama.cpp's six-line layout: the context is cut at its last sentence
    end into ctx_a / ctx_b (ctx_b lower-case as in the real data), so capitalize() is exercised."""
    lines = bz2.open(os.path.join(SHARED, "hellaswag_val_full.txt.bz2"), "rt", encoding="utf-8").read().split("\n")
    rows = []
    for i in range(0, min(len(lines) - 5, 6 * n), 6):
        label, rest = lines[i].split(": ", 1)
        cut = rest.rfind(". ")
        ctx_a, ctx_b = (rest[:cut + 1], rest[cut + 2:]) if cut > 0 else (rest, "")
        rows.append({"ind": i // 6, "activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
                     "ctx": rest, "endings": lines[i + 2:i + 6], "label": lines[i + 1],
                     "split": "val", "split_type": "indomain", "source_id": "x"})
    return rows


def arc_rows(n, subject="high_school_geography"):
    rows = []
    for q in read_mmlu("test", subject)[:n]:
        rows.append({"id": f"q{len(rows)}", "question": q["question"],
                     "choices": {"text": q["choices"], "label": ["A", "B", "C", "D"]},
                     "answerKey": "ABCD"[q["answer"]]})
    return rows


def simple_rows(n):
    """piqa / boolq / openbookqa rows with Hugging Face field names, made from MMLU questions
    (the real sets are not in ../shared; lm-eval reads these exactly as it reads the real ones)."""
    qs = read_mmlu("test", "high_school_psychology")[:n]
    piqa = [{"goal": q["question"], "sol1": q["choices"][0], "sol2": q["choices"][1],
             "label": q["answer"] % 2} for q in qs]
    boolq = [{"passage": q["question"], "question": "is it " + q["choices"][q["answer"] if i % 2 else (q["answer"] + 1) % 4],
              "label": i % 2, "idx": i} for i, q in enumerate(qs)]
    obqa = [{"id": f"o{i}", "question_stem": q["question"],
             "choices": {"text": q["choices"], "label": ["A", "B", "C", "D"]},
             "answerKey": (" " if i % 7 == 0 else "") + "ABCD"[q["answer"]]} for i, q in enumerate(qs)]
    wino = [{"sentence": f"{q['question']} The answer is _ as we know.", "option1": q["choices"][0],
             "option2": q["choices"][1], "answer": str(1 + q["answer"] % 2)} for q in qs]
    lamb = [{"text": f"{q['question']} {q['choices'][q['answer']]}"} for q in qs]
    tqa = [{"question": q["question"],
            "mc1_targets": {"choices": [q["choices"][q["answer"]]] + [c for k, c in enumerate(q["choices"]) if k != q["answer"]],
                            "labels": [1, 0, 0, 0]},
            "mc2_targets": {"choices": q["choices"], "labels": [1, 0, 0, 0]}} for q in qs]
    return piqa, boolq, obqa, wino, lamb, tqa


def mc2_rows(n):
    """truthfulqa_mc2 rows: the true answers first, then the false ones (as in truthful_qa), with
    1..3 true answers so the probability mass sums over several choices."""
    rows = []
    for i, q in enumerate(read_mmlu("test", "high_school_biology")[:n]):
        k = 1 + i % 3
        good = [q["choices"][q["answer"]]] + [c for j, c in enumerate(q["choices"]) if j != q["answer"]]
        # answers cut to 3 words: the tiny model's log-likelihood of a long answer is below -745,
        # where lm-eval's exp(ll) underflows to 0 and its mc2 score is 0 / 0 = NaN
        good = [" ".join(c.split(" ")[:3]) for c in good]
        rows.append({"question": q["question"],
                     "mc1_targets": {"choices": good, "labels": [1, 0, 0, 0]},
                     "mc2_targets": {"choices": good, "labels": [1] * k + [0] * (4 - k)}})
    return rows


def wikitext_rows(n, max_chars=2500):
    """EleutherAI/wikitext_document_level-shaped rows ({"page": ...}) from the shared
    wikitext-2 test file: an article is its " = Title = " line up to the next such line; each is
    cut at a line end after max_chars so the tiny model runs a few rolling windows per page."""
    lines = open(os.path.join(SHARED, "wikitext2_tokenized_test.txt"), encoding="utf-8").read().split("\n")
    pages, cur = [], None
    for ln in lines:
        if ln.startswith(" = ") and not ln.startswith(" = = ") and ln.endswith(" = "):
            if cur is not None:
                pages.append(cur)
            cur = []
        if cur is not None:
            cur.append(ln)
    rows = []
    for p in pages[:n]:
        text = ""
        for ln in p:
            if len(text) > max_chars:
                break
            text += ln + "\n"
        rows.append({"page": text})
    return rows


# lm-eval's mmlu/default/mmlu_<subject>.yaml "tag: mmlu_<category>_tasks", for the subjects used
MMLU_CATEGORY = {"abstract_algebra": "stem", "anatomy": "stem", "marketing": "other",
                 "high_school_psychology": "social_sciences", "philosophy": "humanities"}


def main():
    global OUT, SUBJECTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "models", "llama"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mmlu-per-subject", type=int, default=40)
    ap.add_argument("--fewshot", type=int, default=5)
    ap.add_argument("--out", default=OUT, help="where data/ and <model>/ go (bench/ uses a temp dir)")
    ap.add_argument("--subjects", default=",".join(SUBJECTS))
    ap.add_argument("--tasks", default="mmlu,hellaswag,arc_easy,arc_challenge,piqa,boolq,openbookqa,winogrande,lambada_openai,truthfulqa_mc1,truthfulqa_mc2,piqa_mi,wikitext")
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    OUT, SUBJECTS = a.out, a.subjects.split(",")
    want = a.tasks.split(",")

    data = os.path.join(OUT, "data")
    mmlu_test = [r for s in SUBJECTS for r in read_mmlu("test", s)[:a.mmlu_per_subject]]
    mmlu_dev = [r for s in SUBJECTS for r in read_mmlu("dev", s)]
    write_jsonl(os.path.join(data, "mmlu", "test.jsonl"), mmlu_test)
    write_jsonl(os.path.join(data, "mmlu", "dev.jsonl"), mmlu_dev)
    write_jsonl(os.path.join(data, "hellaswag", "validation.jsonl"), hellaswag_rows(a.n))
    write_jsonl(os.path.join(data, "arc_easy", "test.jsonl"), arc_rows(a.n // 2))
    write_jsonl(os.path.join(data, "arc_challenge", "test.jsonl"), arc_rows(a.n // 2, "high_school_physics"))
    write_jsonl(os.path.join(data, "truthfulqa_mc2", "validation.jsonl"), mc2_rows(a.n // 2))
    write_jsonl(os.path.join(data, "wikitext", "test.jsonl"), wikitext_rows(6))
    piqa, boolq, obqa, wino, lamb, tqa = simple_rows(a.n // 2)
    write_jsonl(os.path.join(data, "truthfulqa_mc1", "validation.jsonl"), tqa)
    write_jsonl(os.path.join(data, "lambada_openai", "test.jsonl"), lamb)
    write_jsonl(os.path.join(data, "winogrande", "validation.jsonl"), wino)
    write_jsonl(os.path.join(data, "piqa", "validation.jsonl"), piqa)
    write_jsonl(os.path.join(data, "boolq", "validation.jsonl"), boolq)
    write_jsonl(os.path.join(data, "openbookqa", "test.jsonl"), obqa)

    import time
    t0 = time.time()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerFast

    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    inc = tempfile.mkdtemp(prefix="lmeval-local-")
    yamls = {}
    for s in SUBJECTS:
        for split in ("test", "dev"):
            write_jsonl(os.path.join(inc, f"{s}_{split}.jsonl"), [r for r in (mmlu_test if split == "test" else mmlu_dev) if r["subject"] == s])
        yamls[f"mmlu_{s}"] = (
            f"include: {tasks_dir}/mmlu/default/_default_template_yaml\n"
            f"task: mmlu_{s}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {inc}/{s}_test.jsonl\n    dev: {inc}/{s}_dev.jsonl\n"
            f"description: {json.dumps('The following are multiple choice questions (with answers) about ' + s.replace('_', ' ') + '.' + chr(10) + chr(10))}\n"
            f"tag: mmlu_{MMLU_CATEGORY[s]}_tasks\n")
    # lm-eval's mmlu group config: mmlu over the four category groups, each over its subjects'
    # tag, acc weighted by size (only the categories of the subjects used here)
    cats = sorted({MMLU_CATEGORY[s] for s in SUBJECTS})
    for c in cats:
        yamls[f"_mmlu_{c}"] = (
            f"group: mmlu_{c}\ngroup_alias: {c.replace('_', ' ')}\ntask:\n  - mmlu_{c}_tasks\n"
            "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: True\nmetadata:\n  version: 2\n")
    yamls["_mmlu"] = ("group: mmlu\ntask:\n" + "".join(f"  - mmlu_{c}\n" for c in cats) +
                      "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: True\nmetadata:\n  version: 2\n")
    yamls["hellaswag"] = (
        f"include: {tasks_dir}/hellaswag/hellaswag.yaml\ntask: hellaswag\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}/hellaswag/validation.jsonl\n"
        "training_split: null\n")
    yamls["arc_easy"] = (
        f"include: {tasks_dir}/arc/arc_easy.yaml\ntask: arc_easy\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}/arc_easy/test.jsonl\n"
        "training_split: null\nvalidation_split: null\n")
    yamls["arc_challenge"] = (
        f"include: {tasks_dir}/arc/arc_challenge.yaml\ntask: arc_challenge\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}/arc_challenge/test.jsonl\n"
        "training_split: null\nvalidation_split: null\n")
    yamls["piqa"] = (
        f"include: {tasks_dir}/piqa/piqa.yaml\ntask: piqa\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}/piqa/validation.jsonl\n"
        "training_split: null\n")
    # no built-in lm-eval task lists acc_mutual_info: piqa with it added to its metric_list, which
    # makes lm-eval add an unconditional ("", " " + choice) request per choice
    yamls["piqa_mi"] = (
        f"include: {tasks_dir}/piqa/piqa.yaml\ntask: piqa_mi\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}/piqa/validation.jsonl\n"
        "training_split: null\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_mutual_info\n    aggregation: mean\n    higher_is_better: true\n")
    # wikitext.yaml as written; its !function module is copied next to the including file
    yamls["wikitext"] = (
        f"include: {tasks_dir}/wikitext/wikitext.yaml\ntask: wikitext\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}/wikitext/test.jsonl\n"
        "training_split: null\nvalidation_split: null\n")
    shutil.copy(os.path.join(tasks_dir, "wikitext", "preprocess_wikitext.py"), inc)
    yamls["boolq"] = (
        f"include: {tasks_dir}/super_glue/boolq/default.yaml\ntask: boolq\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}/boolq/validation.jsonl\n"
        "training_split: null\n")
    yamls["openbookqa"] = (
        f"include: {tasks_dir}/openbookqa/openbookqa.yaml\ntask: openbookqa\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}/openbookqa/test.jsonl\n"
        "training_split: null\nvalidation_split: null\n")
    yamls["winogrande"] = (
        f"include: {tasks_dir}/winogrande/default.yaml\ntask: winogrande\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}/winogrande/validation.jsonl\n"
        "training_split: null\n")
    shutil.copy(os.path.join(tasks_dir, "winogrande", "preprocess_winogrande.py"), inc)
    yamls["truthfulqa_mc1"] = (
        f"include: {tasks_dir}/truthfulqa/truthfulqa_mc1.yaml\ntask: truthfulqa_mc1\ndataset_path: json\n"
        f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data}/truthfulqa_mc1/validation.jsonl\n")
    # truthfulqa_mc2.yaml as written (include truthfulqa_mc1.yaml, mc2 choices, utils'
    # process_results_mc2); the utils module is copied under another name (hellaswag's is utils.py)
    yamls["truthfulqa_mc2"] = (
        f"include: {tasks_dir}/truthfulqa/truthfulqa_mc1.yaml\ntask: truthfulqa_mc2\ndataset_path: json\n"
        f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    validation: {data}/truthfulqa_mc2/validation.jsonl\n"
        "doc_to_target: 0\ndoc_to_choice: \"{{mc2_targets.choices}}\"\n"
        "process_results: !function tqa_utils.process_results_mc2\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 3.0\n")
    shutil.copy(os.path.join(tasks_dir, "truthfulqa", "utils.py"), os.path.join(inc, "tqa_utils.py"))
    yamls["lambada_openai"] = (
        f"include: {tasks_dir}/lambada/lambada_openai.yaml\ntask: lambada_openai\ndataset_path: json\n"
        f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}/lambada_openai/test.jsonl\n")
    for name, text in yamls.items():
        with open(os.path.join(inc, f"{name}.yaml"), "w") as f:
            f.write(text)
    # the hellaswag yaml's !function utils.process_docs resolves next to the including file
    shutil.copy(os.path.join(tasks_dir, "hellaswag", "utils.py"), os.path.join(inc, "utils.py"))

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    cfg = json.load(open(os.path.join(a.model, "tokenizer_config.json")))
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if isinstance(cfg.get(k), str):
            setattr(tok, k, cfg[k])
    lm = HFLM(pretrained=a.model, tokenizer=tok, dtype="float32", device="cpu", batch_size=a.batch_size)
    tm = TaskManager(include_path=inc, include_defaults=False)
    runs = [(names, shots) for names, shots in
            [(["mmlu"] if "mmlu" in want else [], a.fewshot),
             ([t for t in ("hellaswag", "arc_easy", "arc_challenge", "piqa", "boolq", "openbookqa", "winogrande",
                           "lambada_openai", "truthfulqa_mc1", "truthfulqa_mc2", "piqa_mi", "wikitext") if t in want], 0)] if names]
    model_name = os.path.basename(os.path.normpath(a.model))
    dest = os.path.join(OUT, model_name)
    os.makedirs(dest, exist_ok=True)
    summary = {"lm_eval_version": getattr(lm_eval, "__version__", "?"), "model": model_name,
               "bos": tok.bos_token, "results": {}, "n-shot": {}}
    old = os.path.join(dest, "results.json")
    if os.path.exists(old):  # a run of some tasks keeps the others' numbers
        prev = json.load(open(old))
        summary["results"].update(prev.get("results", {}))
        summary["n-shot"].update(prev.get("n-shot", {}))
    for names, shots in runs:
        res = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=shots, task_manager=tm,
                                      log_samples=True, bootstrap_iters=100, random_seed=0,
                                      numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
        for t in res["results"]:  # groups (mmlu, mmlu_stem, ...) too
            summary["results"][t] = {k: v for k, v in res["results"][t].items() if k != "alias"}
        for t in res["samples"]:
            summary["n-shot"][t] = shots
            with open(os.path.join(dest, f"samples_{t}.jsonl"), "w", encoding="utf-8") as f:
                for s in sorted(res["samples"][t], key=lambda s: s["doc_id"]):
                    args = s["arguments"]
                    if isinstance(args, dict):
                        args = [[v["arg_0"], v["arg_1"]] for v in args.values()]
                    if t == "wikitext":  # loglikelihood_rolling: one float per document
                        f.write(json.dumps({"doc_id": s["doc_id"], "arguments": args,
                                            "ll": float(s["resps"][0][0]),
                                            "word_perplexity": s["word_perplexity"],
                                            "byte_perplexity": s["byte_perplexity"]}, ensure_ascii=False) + "\n")
                        continue
                    lls = [float(r[0][0]) for r in s["resps"]]
                    greedy = [bool(r[0][1]) for r in s["resps"]]
                    row = {"doc_id": s["doc_id"], "target": s["target"], "arguments": args,
                           "ll": lls, "is_greedy": greedy, "acc": s.get("acc")}
                    if "perplexity" in s:
                        row["perplexity"] = s["perplexity"]
                    if "acc_norm" in s:
                        row["acc_norm"] = s["acc_norm"]
                    if "acc_mutual_info" in s:
                        row["acc_mutual_info"] = s["acc_mutual_info"]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(dest, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print("wrote", dest, "lm-eval seconds (import to results):", round(time.time() - t0, 2))


if __name__ == "__main__":
    sys.exit(main())
