/* harness/cli_common.h — options every model command shares (--json, --threads, --device,
 * --gpu-mem-fraction, --fast, --mem-budget, --weights), numeric option parsing with messages that
 * name the option, and the final summary line (which says the device that ran). */
#ifndef ASSAY_CLI_COMMON_H
#define ASSAY_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum cli_device { CLI_DEVICE_AUTO = 0, CLI_DEVICE_CPU, CLI_DEVICE_CUDA } cli_device;

typedef struct cli_common {
    int        json;
    int        threads; /* 0: the runtime's default */
    cli_device device;
    int        device_index;     /* cuda:N; 0 for plain "cuda" */
    double     gpu_mem_fraction; /* 0: the runtime's default (0.9) */
    int        fast;             /* --fast: the GPU may drop batch invariance */
    size_t     mem_budget;       /* bytes; 0: no budget */
    int        kv_tokens;        /* KV cache capacity a command needs; 0: the runtime's default */
    int        weights;          /* --weights: be_weights (runtime/backend.h); 0: not given */
} cli_common;

/* Help text for the common options, one per line, indented two spaces. */
extern const char cli_common_help[];

/* Looks at argv[*i]. Returns 1 when it was a common option (consuming its value, *i advanced past
 * it), 0 when it is not one, or -1 with err set (missing or invalid value). Accepts
 * "--opt value" and "--opt=value". */
int cli_common_parse(cli_common *c, int argc, char **argv, int *i, assay_error *err);

/* Fetches the value of option argv[*i] ("--opt value" or "--opt=value"): returns 1 and sets
 * *val when argv[*i] is `name`, 0 when it is another argument, an error when the value is
 * missing (-1). */
int cli_take_value(const char *name, int argc, char **argv, int *i, const char **val,
                   assay_error *err);

/* One command-specific option for cli_parse. */
typedef enum cli_kind {
    CLI_STR,      /* target: const char **, the last value given wins */
    CLI_INT,      /* target: int64_t *, a whole number in [min, max] */
    CLI_CHOICE,   /* target: const char **, one of `choices` (NULL-terminated) */
    CLI_STR_LIST, /* target: cli_list *, every value appended (repeatable) */
    CLI_FLAG,     /* target: int *, set to 1; takes no value */
} cli_kind;

/* Strings with room for argc entries (at most argc values can be given). */
typedef struct cli_list {
    const char **v;
    int          n;
} cli_list;

typedef struct cli_opt {
    const char        *name; /* "--ctx" */
    cli_kind           kind;
    void              *target;
    int64_t            min, max;
    const char *const *choices;
} cli_opt;

typedef struct cli_cmd {
    const char    *name; /* "ppl": names the command in messages */
    const cli_opt *opts;
    int            n_opts;
    int            max_positional; /* 0: any number */
    const char    *extra_hint;     /* after "unexpected argument 'X'" when there are too many */
} cli_cmd;

#define CLI_N_OPTS(a) ((int)(sizeof(a) / sizeof *(a)))

/* Parses argv[1..]: the common options into *cc, cmd->opts into their targets, other arguments
 * into *positional. Returns 0, 1 when --help or -h came first (the caller prints its help), or -1
 * with err set (missing or invalid value, unknown option, too many positional arguments). */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_common *cc, cli_list *positional,
              assay_error *err);

/* Parses a whole decimal integer in [min, max]; the message names the option. */
int cli_parse_int(const char *opt, const char *val, int64_t min, int64_t max, int64_t *out,
                  assay_error *err);
/* Parses a byte size: a number with an optional K, M, G or T suffix (powers of 1024; "B", "iB"
 * accepted after it). */
int cli_parse_bytes(const char *opt, const char *val, size_t *out, assay_error *err);

/* The backend spec of c's device choice: "auto", "cpu" or "cuda:N". */
void cli_device_spec(const cli_common *c, char *buf, size_t cap);

/* Loads the model in `dir` (a checkpoint directory or a GGUF file: model_load) for the chosen
 * device, thread count and memory budget (checked before any weight is read). An explicit
 * --device cuda[:N] that this build or machine cannot serve (built without CUDA, no GPU or
 * driver, no device N) is ASSAY_EUNSUPPORTED with the reason (exit 2: nothing ran); a GPU that
 * fails while loading is ASSAY_EDEVICE (exit 3). The device that ran is remembered for
 * cli_summary and cli_json_device. */
struct model;
struct cJSON;
int cli_load_model(const char *dir, const cli_common *c, struct model **out, assay_error *err);

/* Adds "device" ("cpu", "cuda:0"), "batch_invariant" (scores independent of the batch) and
 * "weights" ("f32", "bf16", "q8_0") to a
 * JSON object, from the model cli_load_model loaded. */
void cli_json_device(struct cJSON *o, const struct model *m);

/* "name: 1234 tokens in 1.23 s (1003.2 tokens/s) on cpu, batch-invariant, f32 weights" on stderr
 * (the device part once cli_load_model has loaded a model). */
void cli_summary(const char *cmd, const char *what, int64_t count, double seconds);

#endif
