#!/usr/bin/env python3
"""Runs lm-evaluation-harness with --num-fewshot K (default 3) and its default few-shot seed 1234
on a tiny checkpoint, and commits the contexts it renders, which tests/test_fewshot.c requires
`assay eval --num-fewshot K --seed 1234` to reproduce byte for byte:

  tests/fixtures/lmeval/fewshot/data/     train + eval splits (hellaswag, arc_easy, piqa, boolq,
                                          openbookqa, winogrande; lambada_openai and truthfulqa_mc1
                                          have no train split: lm-eval draws lambada's examples
                                          from its test split and keeps truthfulqa zero-shot) in
                                          the layouts `assay eval --data` reads
  tests/fixtures/lmeval/fewshot/<model>/  samples_<task>.jsonl from lm-eval's --log_samples:
                                          doc_id, the (context, continuation) pairs, log-likelihoods

The documents are made as tools/make_lmeval_reference.py makes them (HellaSwag from the six-line
file in ../shared/data, the others from MMLU questions); the train splits are documents the eval
splits do not hold. Needs: pip install "lm_eval[hf]".

    python3 tools/make_lmeval_fewshot_reference.py [--model tests/fixtures/models/llama] [--k 3]
        [--tasks hellaswag,arc_easy,...]   (default: every task; others' files are left as they are)
"""
import argparse, json, os, shutil, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_lmeval_reference as ref  # noqa: E402

ROOT = ref.ROOT
OUT = os.path.join(ROOT, "tests", "fixtures", "lmeval", "fewshot")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "models", "llama"))
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=24)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tasks", default="hellaswag,arc_easy,piqa,boolq,openbookqa,winogrande,"
                                       "lambada_openai,truthfulqa_mc1")
    a = ap.parse_args()
    want = a.tasks.split(",")
    data = os.path.join(OUT, "data")
    ne, nt = a.n_eval, a.n_train

    hs = ref.hellaswag_rows(ne + nt)
    ref.write_jsonl(os.path.join(data, "hellaswag", "validation.jsonl"), hs[:ne])
    ref.write_jsonl(os.path.join(data, "hellaswag", "train.jsonl"), hs[ne:])
    arc = ref.arc_rows(ne + nt)
    ref.write_jsonl(os.path.join(data, "arc_easy", "test.jsonl"), arc[:ne])
    ref.write_jsonl(os.path.join(data, "arc_easy", "train.jsonl"), arc[ne:])
    piqa, boolq, obqa, wino, lamb, tqa = ref.simple_rows(ne + nt)
    for name, rows, split in (("piqa", piqa, "validation"), ("boolq", boolq, "validation"),
                              ("openbookqa", obqa, "test"), ("winogrande", wino, "validation")):
        ref.write_jsonl(os.path.join(data, name, f"{split}.jsonl"), rows[:ne])
        ref.write_jsonl(os.path.join(data, name, "train.jsonl"), rows[ne:])
    ref.write_jsonl(os.path.join(data, "lambada_openai", "test.jsonl"), lamb[:ne])
    ref.write_jsonl(os.path.join(data, "truthfulqa_mc1", "validation.jsonl"), tqa[:ne])

    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedTokenizerFast

    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    inc = tempfile.mkdtemp(prefix="lmeval-fewshot-")
    yamls = {
        # the real configs' splits: train for few-shot; test_split null where the config has none
        "hellaswag": (f"include: {tasks_dir}/hellaswag/hellaswag.yaml\ntask: hellaswag\ndataset_path: json\n"
                      f"dataset_kwargs:\n  data_files:\n    validation: {data}/hellaswag/validation.jsonl\n"
                      f"    train: {data}/hellaswag/train.jsonl\n"),
        "arc_easy": (f"include: {tasks_dir}/arc/arc_easy.yaml\ntask: arc_easy\ndataset_path: json\ndataset_name: null\n"
                     f"dataset_kwargs:\n  data_files:\n    test: {data}/arc_easy/test.jsonl\n"
                     f"    train: {data}/arc_easy/train.jsonl\nvalidation_split: null\n"),
        "piqa": (f"include: {tasks_dir}/piqa/piqa.yaml\ntask: piqa\ndataset_path: json\ndataset_name: null\n"
                 f"dataset_kwargs:\n  data_files:\n    validation: {data}/piqa/validation.jsonl\n"
                 f"    train: {data}/piqa/train.jsonl\n"),
        "boolq": (f"include: {tasks_dir}/super_glue/boolq/default.yaml\ntask: boolq\ndataset_path: json\ndataset_name: null\n"
                  f"dataset_kwargs:\n  data_files:\n    validation: {data}/boolq/validation.jsonl\n"
                  f"    train: {data}/boolq/train.jsonl\n"),
        "openbookqa": (f"include: {tasks_dir}/openbookqa/openbookqa.yaml\ntask: openbookqa\ndataset_path: json\ndataset_name: null\n"
                       f"dataset_kwargs:\n  data_files:\n    test: {data}/openbookqa/test.jsonl\n"
                       f"    train: {data}/openbookqa/train.jsonl\nvalidation_split: null\n"),
        "winogrande": (f"include: {tasks_dir}/winogrande/default.yaml\ntask: winogrande\ndataset_path: json\n"
                       f"dataset_name: null\ndataset_kwargs:\n  data_files:\n"
                       f"    validation: {data}/winogrande/validation.jsonl\n"
                       f"    train: {data}/winogrande/train.jsonl\n"),
        "lambada_openai": (f"include: {tasks_dir}/lambada/lambada_openai.yaml\ntask: lambada_openai\n"
                           f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n"
                           f"    test: {data}/lambada_openai/test.jsonl\n"),
        "truthfulqa_mc1": (f"include: {tasks_dir}/truthfulqa/truthfulqa_mc1.yaml\ntask: truthfulqa_mc1\n"
                           f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n"
                           f"    validation: {data}/truthfulqa_mc1/validation.jsonl\n"),
    }
    yamls = {k: v for k, v in yamls.items() if k in want}
    for name, text in yamls.items():
        with open(os.path.join(inc, f"{name}.yaml"), "w") as f:
            f.write(text)
    shutil.copy(os.path.join(tasks_dir, "hellaswag", "utils.py"), os.path.join(inc, "utils.py"))
    shutil.copy(os.path.join(tasks_dir, "winogrande", "preprocess_winogrande.py"), inc)

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    cfg = json.load(open(os.path.join(a.model, "tokenizer_config.json")))
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if isinstance(cfg.get(k), str):
            setattr(tok, k, cfg[k])
    lm = HFLM(pretrained=a.model, tokenizer=tok, dtype="float32", device="cpu", batch_size=16)
    tm = TaskManager(include_path=inc, include_defaults=False)
    names = list(yamls)
    res = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=a.k, task_manager=tm,
                                  log_samples=True, bootstrap_iters=0, random_seed=0,
                                  numpy_random_seed=1234, torch_random_seed=1234,
                                  fewshot_random_seed=a.seed)
    dest = os.path.join(OUT, os.path.basename(os.path.normpath(a.model)))
    os.makedirs(dest, exist_ok=True)
    for t in names:
        with open(os.path.join(dest, f"samples_{t}.jsonl"), "w", encoding="utf-8") as f:
            for s in sorted(res["samples"][t], key=lambda s: s["doc_id"]):
                args = s["arguments"]
                if isinstance(args, dict):
                    args = [[v["arg_0"], v["arg_1"]] for v in args.values()]
                row = {"doc_id": s["doc_id"], "arguments": args,
                       "ll": [float(r[0][0]) for r in s["resps"]]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(dest, "README"), "w") as f:
        f.write(f"lm-eval {getattr(lm_eval, '__version__', '?')}, num_fewshot {a.k}, "
                f"fewshot_random_seed {a.seed}; tools/make_lmeval_fewshot_reference.py\n"
                f"n-shot lm-eval used: {json.dumps(res.get('n-shot', {}), sort_keys=True)}\n")
    print("wrote", dest)


if __name__ == "__main__":
    sys.exit(main())
