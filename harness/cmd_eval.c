/* harness/cmd_eval.c — `assay eval`: options in, harness/eval.h does the work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/cli_common.h"
#include "harness/commands.h"
#include "harness/dist.h"
#include "harness/eval.h"
#include "harness/history.h"
#include "harness/pipeline.h"
#include "harness/tasks/tasks.h"

static const char eval_usage[] =
    "usage: assay eval MODEL --tasks T1,T2,... --data DIR [--num-fewshot K] [--limit N]\n"
    "                  [--output-path OUT] [--log-samples] [--seed S] [--price-per-hour X]\n"
    "                  [--ctx N] [--threads N] [--device auto|cpu|cuda] [--mem-budget SIZE]\n"
    "                  [--apply-chat-template [--fewshot-as-multiturn | "
    "--no-fewshot-as-multiturn]]\n"
    "                  [--system-prompt TEXT] [--max-gen-toks N] [--task-file F]\n"
    "                  [--history FILE] [--resume DIR] [--weights f32|bf16|q8_0]\n"
    "MODEL is a Hugging Face checkpoint directory or a GGUF file.\n";

static const char eval_help[] =
    "\n"
    "Multiple-choice benchmarks scored the way lm-evaluation-harness (0.4.x, HF backend) scores\n"
    "them: the same prompts, the same (context, \" \" + choice) log-likelihood requests, acc\n"
    "(argmax of the summed log-likelihood, ties to the first choice), acc_norm (log-likelihood\n"
    "divided by the choice's length in characters) and lm-eval's standard errors; and\n"
    "generation tasks (gsm8k, user specs) as lm-eval's generate_until: greedy, its stop rule,\n"
    "its filters and metrics. Data are local files under --data DIR (no network). Tasks and\n"
    "what each reads under DIR:\n"
    "%s"
    "\n"
    "All requests of all tasks are scored together: identical requests once, requests with the\n"
    "same context share one pass over it, the rest packed by token budget. BOS follows the\n"
    "tokenizer (added when its post-processor adds it, as lm-eval's HF backend with\n"
    "add_bos_token unset). A context longer than --ctx is cut from the left (counted in\n"
    "results.json as truncated_requests).\n"
    "\n"
    "options:\n"
    "  --tasks LIST        comma-separated task names\n"
    "  --data DIR          the data folder\n"
    "  --num-fewshot K     few-shot examples (mmlu: the first K dev questions of the subject;\n"
    "                      hellaswag, arc_*, piqa, boolq, openbookqa, winogrande: drawn from\n"
    "                      <task>/train.jsonl with lm-eval's sampler and --seed; lambada_openai:\n"
    "                      from its test file, as lm-eval; truthfulqa_*: ignored (always 0, as\n"
    "                      lm-eval); wikitext: 0 only; gsm8k: from gsm8k/train.jsonl, default 5;\n"
    "                      generation specs: from their \"fewshot_data\")\n"
    "  --limit N           only the first N documents of each task (each MMLU subject)\n"
    "  --output-path OUT   write OUT/results.json (lm-eval's layout plus an \"assay\" block:\n"
    "                      hashes, device, cost) and, with --log-samples,\n"
    "                      OUT/samples_<task>.jsonl; OUT is checked writable before any work\n"
    "  --log-samples       per-document requests, log-likelihoods, prediction and gold\n"
    "  --history FILE      append the run to this history file (SQLite; see assay history);\n"
    "                      default $ASSAY_HISTORY, else OUT/history.sqlite with --output-path\n"
    "  --task-file F       also run a user task from a JSON spec F: {\"task\", \"data\" (JSONL "
    "under\n"
    "                      DIR), \"context\" (a template, {field}), \"choices\" (a field or\n"
    "                      templates), \"gold_index\" or \"gold_text\" (a field) or "
    "\"gold_label\"\n"
    "                      with \"labels\" (fields: the key and the label list), \"metrics\"\n"
    "                      ([\"acc\", \"acc_norm\", \"acc_mutual_info\"]), \"target_delimiter\"}\n"
    "                      or, with \"output_type\": \"generate_until\", a generation task:\n"
    "                      \"prompt\", \"until\", \"max_gen_toks\", \"filter_list\",\n"
    "                      \"metric_list\", \"labels\", \"schema\" (README: generation tasks)\n"
    "  --seed S            few-shot sampler seed (default 1234, as lm-eval's fewshot_random_seed)\n"
    "  --apply-chat-template  generation tasks: prompts go through the model's chat template\n"
    "                      (tokenizer_config.json or chat_template.jinja) with\n"
    "                      add_generation_prompt, as lm-eval --apply_chat_template\n"
    "  --fewshot-as-multiturn / --no-fewshot-as-multiturn  few-shot examples as user/assistant\n"
    "                      turns (lm-eval's default with a chat template), or all in one user "
    "turn\n"
    "  --max-gen-toks N    generation tasks: at most N new tokens (replaces each task's, as\n"
    "                      lm-eval --gen_kwargs max_gen_toks=N)\n"
    "  --system-prompt TEXT   a system turn (chat) or text before the first question (plain), as\n"
    "                      lm-eval --system_instruction; replaces a spec's \"system_prompt\"\n"
    "  --price-per-hour X  the machine's price per hour: results.json gets the cost per run, per\n"
    "                      task and per 1,000 samples\n"
    "  --ctx N             model length for truncation (default: the model's max positions)\n"
    "  --window-tokens N   requests are built and scored N tokens at a time (default 4194304):\n"
    "                      memory is bounded by it; results are the same at any value\n"
    "  --resume DIR        keep each window's results in DIR (per MPI rank) and reuse them when\n"
    "                      the same command runs again: an interrupted run continues\n"
    "%s"
    "  --help              this text\n"
    "\n"
    "A progress line is shown on a terminal; a table goes to stdout and a summary to stderr.\n"
    "\n"
    "exit codes: 0 success, 1 a non-finite log-likelihood, 2 bad input or usage (unknown task,\n"
    "malformed data naming file:line, missing field, gold out of range, empty choice list,\n"
    "output directory not writable), 3 environment failure\n";

int cmd_eval(int argc, char **argv) {
    cli_common   cc        = {0};
    assay_error  err       = {0};
    const char  *model_dir = NULL, *tasks_arg = NULL, *data = NULL, *out = NULL, *price = NULL;
    const char  *task_file = NULL, *resume = NULL;
    int64_t      fewshot = -1, limit = 0, seed = 1234, ctx = 0, window = 0, max_gen = 0;
    int          log_samples = 0, rc, chat = 0, multiturn = 0, no_multiturn = 0;
    const char  *system_prompt = NULL;
    char        *list          = NULL;
    const char **names         = NULL;
    double       t_start       = time_now();
    const char  *hist          = NULL;
    char         hist_buf[4200];

    const cli_opt opts[] = {
        {"--tasks", CLI_STR, &tasks_arg, 0, 0, NULL},
        {"--data", CLI_STR, &data, 0, 0, NULL},
        {"--num-fewshot", CLI_INT, &fewshot, 0, 1000, NULL},
        {"--limit", CLI_INT, &limit, 1, INT64_MAX / 2, NULL},
        {"--output-path", CLI_STR, &out, 0, 0, NULL},
        {"--history", CLI_STR, &hist, 0, 0, NULL},
        {"--log-samples", CLI_FLAG, &log_samples, 0, 0, NULL},
        {"--seed", CLI_INT, &seed, 0, INT64_MAX / 2, NULL},
        {"--price-per-hour", CLI_STR, &price, 0, 0, NULL},
        {"--task-file", CLI_STR, &task_file, 0, 0, NULL},
        {"--ctx", CLI_INT, &ctx, 1, 1 << 24, NULL},
        {"--window-tokens", CLI_INT, &window, 1, INT64_MAX / 2, NULL},
        {"--resume", CLI_STR, &resume, 0, 0, NULL},
        {"--apply-chat-template", CLI_FLAG, &chat, 0, 0, NULL},
        {"--fewshot-as-multiturn", CLI_FLAG, &multiturn, 0, 0, NULL},
        {"--no-fewshot-as-multiturn", CLI_FLAG, &no_multiturn, 0, 0, NULL},
        {"--system-prompt", CLI_STR, &system_prompt, 0, 0, NULL},
        {"--max-gen-toks", CLI_INT, &max_gen, 1, 1 << 20, NULL},
    };
    const cli_cmd cmd  = {"eval", opts, CLI_N_OPTS(opts), 1, "(tasks go in --tasks LIST)"};
    cli_list      args = {&model_dir, 0};
    int           r    = cli_parse(&cmd, argc, argv, &cc, &args, &err);
    if (r < 0)
        goto fail;
    if (r > 0) {
        char   tasks_help[2048];
        size_t n = 0;
        for (int i = 0; eval_task_defs[i]; i++)
            n += (size_t)snprintf(tasks_help + n, sizeof tasks_help - n, "  %-14s %s\n",
                                  eval_task_defs[i]->name, eval_task_defs[i]->paths);
        printf("%s", eval_usage);
        printf(eval_help, tasks_help, cli_common_help);
        return 0;
    }
    if (!model_dir || (!tasks_arg && !task_file) || !data) {
        fprintf(stderr, "assay: eval: missing %s (see assay eval --help)\n%s",
                !model_dir ? "MODEL (a checkpoint directory or GGUF file)"
                : !data    ? "--data DIR"
                           : "--tasks LIST or --task-file F",
                eval_usage);
        return 2;
    }
    if (log_samples && !out) {
        assay_fail(&err, ASSAY_EINVAL, "--log-samples needs --output-path OUT");
        goto fail;
    }
    /* lm-eval: multi-turn few-shot is the default with a chat template and needs one */
    if ((multiturn || no_multiturn) && !chat) {
        assay_fail(&err, ASSAY_EINVAL, "--%sfewshot-as-multiturn needs --apply-chat-template",
                   no_multiturn ? "no-" : "");
        goto fail;
    }
    if (multiturn && no_multiturn) {
        assay_fail(&err, ASSAY_EINVAL,
                   "--fewshot-as-multiturn and --no-fewshot-as-multiturn contradict each other");
        goto fail;
    }
    double pph = -1;
    if (price) {
        char *end = NULL;
        pph       = strtod(price, &end);
        if (!end || *end || end == price || !(pph >= 0) || pph > 1e9) {
            assay_fail(&err, ASSAY_EINVAL, "--price-per-hour '%s': expected a number >= 0", price);
            goto fail;
        }
    }
    if (!path_is_dir(data)) {
        assay_fail(&err, ASSAY_EINVAL, "--data %s: not a directory", data);
        goto fail;
    }
    dist_apply_device(&cc); /* under mpirun: this rank's GPU or share of the cores */
    if (resume && (rc = pipe_resume_dir(resume, &err)))
        goto fail;
    /* the output folder and the history are checked before anything slow happens */
    if (out && (rc = eval_check_output_dir(out, &err)))
        goto fail;
    if (!hist || !*hist)
        hist = getenv("ASSAY_HISTORY");
    if ((!hist || !*hist) && out) {
        snprintf(hist_buf, sizeof hist_buf, "%s/history.sqlite", out);
        hist = hist_buf;
    }
    if (hist && *hist && (rc = history_check(hist, &err)))
        goto fail;
    list  = strdup(tasks_arg ? tasks_arg : "");
    names = calloc(strlen(list ? list : "") + 1, sizeof *names);
    if (!list || !names) {
        assay_fail(&err, ASSAY_ENOMEM, "out of memory");
        goto fail;
    }
    int n_names = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        names[n_names++] = t;
    if (n_names == 0 && !task_file) {
        assay_fail(&err, ASSAY_EINVAL, "--tasks: no task names");
        goto fail;
    }
    eval_opts o = {.model_dir            = model_dir,
                   .data_dir             = data,
                   .out_dir              = out,
                   .history              = hist && *hist ? hist : NULL,
                   .task_file            = task_file,
                   .tasks                = names,
                   .n_tasks              = n_names,
                   .num_fewshot          = (int)fewshot,
                   .limit                = limit,
                   .seed                 = seed,
                   .log_samples          = log_samples,
                   .price_per_hour       = pph,
                   .ctx                  = ctx,
                   .window_tokens        = window,
                   .resume_dir           = resume,
                   .t_start              = t_start,
                   .cc                   = &cc,
                   .apply_chat_template  = chat,
                   .fewshot_as_multiturn = chat && !no_multiturn,
                   .system_prompt        = system_prompt,
                   .max_gen_toks         = (int)max_gen};
    if ((rc = eval_run(&o, &err)))
        goto fail;
    free(list);
    free(names);
    return 0;
fail:
    if (!err.code)
        err.code = ASSAY_EINTERNAL;
    free(list);
    free(names);
    return cli_report(&err);
}
