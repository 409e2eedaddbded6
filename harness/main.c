/* harness/main.c — the assay command line: dispatch to subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/util.h"
#include "harness/commands.h"
#include "harness/dist.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"inspect", cmd_inspect, "describe a checkpoint (HF dir, .safetensors or .gguf)"},
    {"convert", cmd_convert, "convert a GGUF file into a Hugging Face checkpoint directory"},
    {"tokenize", cmd_tokenize, "tokenize text with a model's tokenizer"},
    {"ppl", cmd_ppl, "perplexity of text files (sliding or rolling windows)"},
    {"score", cmd_score, "log-likelihood of continuations given contexts"},
    {"eval", cmd_eval,
     "benchmarks as lm-eval scores them: log-likelihood (mmlu, hellaswag, arc, piqa, boolq, "
     "openbookqa, winogrande, lambada, truthfulqa, wikitext) and generation (gsm8k), user tasks"},
    {"judge", cmd_judge,
     "LLM-as-judge over an OpenAI-compatible server: pairwise (both orders) or 1-10 ratings"},
    {"generate", cmd_generate, "greedy generation for a set of prompts"},
    {"history", cmd_history, "runs recorded in a history file, with trends per task and metric"},
    {"compare", cmd_compare,
     "compare two results.json (assay or lm-eval): deltas, paired tests, WARN/CRIT gate"},
    {"bench", cmd_bench, "performance-regression benchmark against a saved baseline"},
    {"split", cmd_split, "stable hash-based train/val/test splits of a JSONL file"},
    {"contamination", cmd_contamination, "n-gram overlap of eval items with training text"},
    {"devices", cmd_devices, "list the compute devices assay can use"},
    {"version", cmd_version, "print the version and what this build contains"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: assay <command> [options]   (assay <command> --help for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nexit codes: 0 success, 1 a check failed, 2 bad input or usage, 3 device "
               "failure or internal error\n");
}

/* OpenMP threads that spin at barriers collapse throughput as soon as another process takes a
 * core: measured on a loaded 2-core machine, SmolLM2-135M greedy decoding ran at 2.7-5 tokens/s
 * with libgomp's default policy and 89-108 tokens/s with OMP_WAIT_POLICY=passive. libgomp reads
 * the variable when it is loaded, before main, so when the user has not chosen a policy we set
 * it and re-execute once. OMP_WAIT_POLICY=active restores spinning on a dedicated machine. */
static void ensure_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): go on with the default policy */
}

static int run(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version"))
        return cmd_version(1, (char *[]){"version", NULL});
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "assay: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    ensure_wait_policy(argv);
    util_install_signal_handlers();
    assay_error err = {0};
    if (dist_init(&argc, &argv, &err))
        return cli_report(&err);
    return dist_finalize(run(argc, argv));
}
