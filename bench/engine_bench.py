#!/usr/bin/env python3
"""The Python half of bench/engine_bench.sh (see there for the whole picture).

  engine_bench.py work MODEL_DIR OUT_DIR     write the work items (token ids) for one model
  engine_bench.py shapes MODEL_DIR M         the model's GEMM shapes for bench/sgemm_rate
  engine_bench.py hf MODEL_DIR WORK.json     run one work item with Hugging Face transformers
  engine_bench.py report RESULTS_DIR         combine everything: table, summary.json, markdown

Work items (sizes from the environment, defaults chosen so the whole benchmark takes about
4 minutes on an idle 2-core machine, up to 12 when other work shares the cores):
  score  SCORE_SEQS (8) sequences of SCORE_LEN (256) random token ids; every token after the
         first is scored (log-prob of the target given the tokens before it)
  gen1   1 prompt of 32 tokens, GEN_NEW (32) new tokens, greedy
  gen32  GEN_BATCH (32) prompts of 16..48 tokens (random lengths, so transformers needs left
         padding), GEN_NEW new tokens each, greedy
Token ids are drawn with random.Random(seed) from [0, vocab), so a rerun feeds the same ids.

FLOPs (the same count for both implementations: useful work only, no padding):
  per token: 2 * (weights of the linear layers, i.e. every parameter outside the embeddings,
  the LM head, norms and biases) + attention 4 * n_layers * n_heads * head_dim * (keys the
  token attends to, = its position + 1) + LM head 2 * dim * vocab only on rows whose output
  is used (scored targets; the last prompt token and each decoded token in generation).
"""
import copy
import json
import os
import random
import resource
import sys
import time

WORK_PROMPT_B1 = 32
WORK_PROMPT_MIN, WORK_PROMPT_MAX = 16, 48


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v else default


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    if c.get("model_type") == "gpt2":
        dim = c["n_embd"]
        return dict(arch="gpt2", n_layers=c["n_layer"], dim=dim, n_heads=c["n_head"],
                    n_kv_heads=c["n_head"], head_dim=dim // c["n_head"],
                    ffn=c.get("n_inner") or 4 * dim, vocab=c["vocab_size"], gated=False)
    dim = c["hidden_size"]
    nh = c["num_attention_heads"]
    return dict(arch=c["model_type"], n_layers=c["num_hidden_layers"], dim=dim, n_heads=nh,
                n_kv_heads=c.get("num_key_value_heads") or nh,
                head_dim=c.get("head_dim") or dim // nh, ffn=c["intermediate_size"],
                vocab=c["vocab_size"], gated=True)


def linear_shapes(cfg):
    """(name, in, out, count per layer) of every linear layer in one transformer block."""
    d, hd = cfg["dim"], cfg["head_dim"]
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    if cfg["arch"] == "gpt2":  # Conv1D c_attn is one fused qkv matrix
        return [("qkv", d, q + 2 * kv, 1), ("o", q, d, 1), ("up", d, cfg["ffn"], 1),
                ("down", cfg["ffn"], d, 1)]
    return [("q", d, q, 1), ("kv", d, kv, 2), ("o", q, d, 1), ("gate_up", d, cfg["ffn"], 2),
            ("down", cfg["ffn"], d, 1)]


def linear_params(cfg):
    return cfg["n_layers"] * sum(i * o * c for _, i, o, c in linear_shapes(cfg))


def flops_tokens(cfg, positions, head_rows):
    """FLOPs of running tokens at the given 0-based positions, with head_rows LM-head rows."""
    attn_keys = sum(p + 1 for p in positions)
    return (2 * linear_params(cfg) * len(positions)
            + 4 * cfg["n_layers"] * cfg["n_heads"] * cfg["head_dim"] * attn_keys
            + 2 * cfg["dim"] * cfg["vocab"] * head_rows)


def work_flops(cfg, work):
    if work["kind"] == "score":
        return sum(flops_tokens(cfg, range(len(s)), len(s) - 1) for s in work["seqs"])
    n_new = work["max_new_tokens"]
    total = 0
    for p in work["prompts"]:
        total += flops_tokens(cfg, range(len(p)), 1)                    # prefill
        total += flops_tokens(cfg, range(len(p), len(p) + n_new - 1), n_new - 1)  # decode
    return total


# ---------------------------------------------------------------------------------------------
def cmd_work(model_dir, out_dir):
    cfg = load_config(model_dir)
    v = cfg["vocab"]
    r = random.Random(1234)
    n_seqs, seq_len = env_int("SCORE_SEQS", 8), env_int("SCORE_LEN", 256)
    n_new, batch = env_int("GEN_NEW", 32), env_int("GEN_BATCH", 32)
    items = {
        "score": {"kind": "score",
                  "seqs": [[r.randrange(v) for _ in range(seq_len)] for _ in range(n_seqs)]},
        "gen1": {"kind": "generate", "max_new_tokens": n_new,
                 "prompts": [[r.randrange(v) for _ in range(WORK_PROMPT_B1)]]},
        "gen32": {"kind": "generate", "max_new_tokens": n_new,
                  "prompts": [[r.randrange(v) for _ in range(r.randint(WORK_PROMPT_MIN, WORK_PROMPT_MAX))]
                              for _ in range(batch)]},
    }
    os.makedirs(out_dir, exist_ok=True)
    for name, item in items.items():
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(item, f)
    print(" ".join(items))


def cmd_shapes(model_dir, m):
    """NAME=MxKxN*W for sgemm_rate: W = how often the shape runs in a forward of M tokens
    (per-layer shapes n_layers times, the LM head once as in scoring where every row counts)."""
    cfg = load_config(model_dir)
    out = [f"{n}={m}x{i}x{o}*{c * cfg['n_layers']}" for n, i, o, c in linear_shapes(cfg)]
    out.append(f"head={m}x{cfg['dim']}x{cfg['vocab']}*1")
    print(" ".join(out))


# ---------------------------------------------------------------------------------------------
def max_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_now_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def cmd_hf(model_dir, work_path):
    threads = env_int("THREADS", os.cpu_count() or 1)
    attn = os.environ.get("HF_ATTN", "sdpa")
    hf_batch = env_int("HF_SCORE_BATCH", 8)
    repeats = env_int("REPEATS", 3)
    import torch
    import transformers

    torch.set_num_threads(threads)
    with open(work_path) as f:
        work = json.load(f)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    load_s = time.perf_counter() - t0
    rss_after_load = max_rss_kb()
    res = {"impl": "transformers", "kind": work["kind"], "threads": threads, "attn": attn,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "load_s": load_s, "rss_after_load_kb": rss_after_load, "times": []}

    if work["kind"] == "score":
        seqs = work["seqs"]
        if len({len(s) for s in seqs}) != 1:
            sys.exit("engine_bench.py hf: score sequences must have one length (no padding)")
        ids = torch.tensor(seqs, dtype=torch.long)

        def score(x):
            sums = []
            with torch.inference_mode():
                for b in range(0, x.shape[0], hf_batch):
                    xb = x[b:b + hf_batch]
                    logits = model(input_ids=xb).logits
                    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                    lp = lp.gather(-1, xb[:, 1:, None]).squeeze(-1)
                    sums += lp.double().sum(dim=1).tolist()
            return sums

        score(ids[:1, :32])  # warm-up, as the assay driver does
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            sums = score(ids)
            res["times"].append(time.perf_counter() - t)
            if res["times"][-1] == min(res["times"]):
                res["cpu_s"] = time.process_time() - c
        res.update(sums=sums, n_seqs=len(seqs), n_input_tokens=int(ids.numel()),
                   n_targets=int(ids.shape[0] * (ids.shape[1] - 1)), hf_score_batch=hf_batch)
    else:
        prompts, n_new = work["prompts"], work["max_new_tokens"]
        pad = model.config.eos_token_id if model.config.eos_token_id is not None else 0
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        gc = transformers.GenerationConfig(do_sample=False, max_new_tokens=n_new,
                                           min_new_tokens=0, eos_token_id=None,
                                           pad_token_id=pad, use_cache=True)
        stamps = []

        class Stamp(transformers.LogitsProcessor):
            """Records when each step's logits are ready: the first call ends the prefill."""
            def __call__(self, input_ids, scores):
                stamps.append(time.perf_counter())
                return scores

        def generate(x, m, n):
            g = copy.deepcopy(gc)
            g.max_new_tokens = n
            with torch.inference_mode():
                return model.generate(input_ids=x, attention_mask=m, generation_config=g,
                                      logits_processor=transformers.LogitsProcessorList([Stamp()]))

        generate(ids[:1, -min(width, 32):], mask[:1, -min(width, 32):], 2)  # warm-up
        best = None
        for _ in range(repeats):
            stamps.clear()
            t, c = time.perf_counter(), time.process_time()
            out = generate(ids, mask, n_new)
            dt = time.perf_counter() - t
            res["times"].append(dt)
            if best is None or dt < best:
                best, prefill, res["cpu_s"] = dt, stamps[0] - t, time.process_time() - c
        new = out[:, width:]
        res.update(gen_tokens=new.tolist(), n_seqs=len(prompts),
                   n_input_tokens=sum(len(p) for p in prompts),
                   n_padded_input_tokens=int(ids.numel()), n_new_tokens=int(new.numel()),
                   prefill_s=prefill)
    res["time_s"] = min(res["times"])
    res["max_rss_kb"] = max_rss_kb()
    res["rss_end_kb"] = rss_now_kb()
    print(json.dumps(res))


# ---------------------------------------------------------------------------------------------
def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def best_sgemm(runs):
    """Per shape the better of several sgemm_rate runs, and the combined rate recomputed."""
    runs = [r for r in runs if r and r.get("shapes")]
    if not runs:
        return {}
    shapes = [dict(s) for s in runs[0]["shapes"]]
    for r in runs[1:]:
        for s, t in zip(shapes, r["shapes"]):
            if t["name"] == s["name"] and t["gflops"] > s["gflops"]:
                s["gflops"] = t["gflops"]
    flop = sum(2.0 * s["m"] * s["k"] * s["n"] * s["weight"] for s in shapes)
    secs = sum(2.0 * s["m"] * s["k"] * s["n"] * s["weight"] / (s["gflops"] * 1e9) for s in shapes)
    return {"shapes": shapes, "combined_gflops": flop / secs / 1e9,
            "best_gflops": max(s["gflops"] for s in shapes), "runs": len(runs),
            "openblas_config": runs[0].get("openblas_config")}


def compare(work, a, h):
    """How closely assay and transformers agree: the check that both did the same work."""
    if not a or not h:
        return ""
    if work["kind"] == "score":
        n = sum(len(s) - 1 for s in work["seqs"])
        d = max(abs(x - y) for x, y in zip(a["sums"], h["sums"]))
        return f"max abs Δ of sum logprob {d:.2e} ({d / (n / len(work['seqs'])):.1e}/token)"
    same = sum(x == y for x, y in zip(a["gen_tokens"], h["gen_tokens"]))
    return f"{same}/{len(work['prompts'])} greedy outputs identical"


def cmd_report(rdir):
    meta = read_json(os.path.join(rdir, "meta.json")) or {}
    rows, summary = [], {"meta": meta, "models": {}}
    for model in meta.get("models", []):
        mdir = os.path.join(rdir, model)
        cfg = load_config(meta["model_dirs"][model])
        sg = best_sgemm([read_json(os.path.join(mdir, n)) for n in ("sgemm512.json",
                                                                     "sgemm512b.json")])
        rate = sg.get("combined_gflops")
        msum = {"config": cfg, "linear_params": linear_params(cfg), "sgemm_m512": sg,
                "work": {}}
        summary["models"][model] = msum
        for item in ("score", "gen1", "gen32"):
            work = read_json(os.path.join(mdir, item + ".json"))
            if not work:
                continue
            fl = work_flops(cfg, work)
            a = read_json(os.path.join(mdir, item + ".assay.json"))
            h = read_json(os.path.join(mdir, item + ".hf.json"))
            if work["kind"] == "score":
                ntok = sum(len(s) for s in work["seqs"])
                label = f"score {len(work['seqs'])}x{len(work['seqs'][0])} (prefill tok/s)"
            else:
                ntok = len(work["prompts"]) * work["max_new_tokens"]
                label = (f"generate b{len(work['prompts'])} +{work['max_new_tokens']} "
                         "(new tok/s)")

            def tps(r):
                return ntok / r["time_s"] if r and r.get("time_s") else None

            ta, th = tps(a), tps(h)
            gf = fl / a["time_s"] / 1e9 if a else None
            gfh = fl / h["time_s"] / 1e9 if h else None
            def util(r):  # CPU seconds per wall second per thread: < 1 means it waited
                if not r or not r.get("cpu_s") or not r.get("time_s"):
                    return None
                return r["cpu_s"] / r["time_s"] / meta.get("threads", 1)

            def weight_gbs(r):  # decode steps x weight bytes / decode time: memory traffic
                if work["kind"] != "generate" or not r or r.get("prefill_s") is None:
                    return None
                dt = r["time_s"] - r["prefill_s"]
                wbytes = 4 * (linear_params(cfg) + cfg["dim"] * cfg["vocab"])
                return (work["max_new_tokens"] - 1) * wbytes / dt / 1e9 if dt > 0 else None

            row = dict(model=model, work=label, assay_tps=ta, hf_tps=th,
                       ratio=ta / th if ta and th else None, assay_gflops=gf, hf_gflops=gfh,
                       pct_sgemm=100 * gf / rate if gf and rate else None,
                       assay_peak_mb=a["max_rss_kb"] / 1024 if a else None,
                       hf_peak_mb=h["max_rss_kb"] / 1024 if h else None,
                       assay_end_mb=a["rss_end_kb"] / 1024 if a and a.get("rss_end_kb") else None,
                       hf_end_mb=h["rss_end_kb"] / 1024 if h and h.get("rss_end_kb") else None,
                       agree=compare(work, a, h), flops=fl, tokens=ntok,
                       assay_s=a["time_s"] if a else None, hf_s=h["time_s"] if h else None,
                       assay_prefill_s=a.get("prefill_s") if a else None,
                       hf_prefill_s=h.get("prefill_s") if h else None,
                       assay_cpu_util=util(a), hf_cpu_util=util(h),
                       assay_decode_gbs=weight_gbs(a), hf_decode_gbs=weight_gbs(h))
            rows.append(row)
            msum["work"][item] = dict(row, assay=a, hf=h and {k: v for k, v in h.items()
                                                               if k not in ("gen_tokens", "sums")})
            if a:
                msum["work"][item]["assay"] = {k: v for k, v in a.items()
                                               if k not in ("gen_tokens", "sums")}
    summary["rows"] = rows
    with open(os.path.join(rdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    def f(x, spec, unit=""):
        return format(x, spec) + unit if x is not None else "—"

    lines = ["| model | work | assay tok/s | transformers tok/s | ratio | assay GFLOP/s "
             "| % of sgemm | peak MB assay / tf |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    def busy(u):  # the timed call got < 85% of its threads' CPU time: another process ran
        return "*" if u is not None and u < 0.85 else ""

    for r in rows:
        lines.append(f"| {r['model']} | {r['work']} | {f(r['assay_tps'], '.1f')}"
                     f"{busy(r['assay_cpu_util'])} | "
                     f"{f(r['hf_tps'], '.1f')}{busy(r['hf_cpu_util'])} | "
                     f"{f(r['ratio'], '.2f', 'x')} | "
                     f"{f(r['assay_gflops'], '.1f')} | {f(r['pct_sgemm'], '.0f', '%')} | "
                     f"{f(r['assay_peak_mb'], '.0f')} / {f(r['hf_peak_mb'], '.0f')} |")
    lines += ["", "| model | work | wall s assay / tf | prefill s assay / tf | tf GFLOP/s "
              "| decode weight GB/s assay / tf | CPU use assay / tf | RSS at end MB assay / tf "
              "| agreement |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['work']} | {f(r['assay_s'], '.2f')} / "
                     f"{f(r['hf_s'], '.2f')} | {f(r['assay_prefill_s'], '.2f')} / "
                     f"{f(r['hf_prefill_s'], '.2f')} | {f(r['hf_gflops'], '.1f')} | "
                     f"{f(r['assay_decode_gbs'], '.1f')} / {f(r['hf_decode_gbs'], '.1f')} | "
                     f"{f(r['assay_cpu_util'] and 100 * r['assay_cpu_util'], '.0f', '%')} / "
                     f"{f(r['hf_cpu_util'] and 100 * r['hf_cpu_util'], '.0f', '%')} | "
                     f"{f(r['assay_end_mb'], '.0f')} / {f(r['hf_end_mb'], '.0f')} | "
                     f"{r['agree']} |")
    if any(busy(r["assay_cpu_util"]) or busy(r["hf_cpu_util"]) for r in rows):
        lines += ["", "\\* this side's timed call used under 85% of its threads' CPU time (the "
                  "machine was busy with other work): its rate is a lower bound."]
    for model, m in summary["models"].items():
        lines.append("")
        sg = m["sgemm_m512"]
        lines.append(f"OpenBLAS sgemm ({model} shapes, M=512, {meta.get('threads')} threads): "
                     f"combined {f(sg.get('combined_gflops'), '.1f')} GFLOP/s ("
                     + ", ".join(f"{s['name']} {s['m']}x{s['k']}x{s['n']} {s['gflops']:.1f}"
                                 for s in sg.get("shapes", [])) + ")")
    md = "\n".join(lines)
    with open(os.path.join(rdir, "table.md"), "w") as fh:
        fh.write(md + "\n")
    print(md)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "work" and len(args) == 2:
        cmd_work(*args)
    elif cmd == "shapes" and len(args) == 2:
        cmd_shapes(args[0], int(args[1]))
    elif cmd == "hf" and len(args) == 2:
        cmd_hf(*args)
    elif cmd == "report" and len(args) == 1:
        cmd_report(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
