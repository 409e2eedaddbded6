/* harness/tasks/tasks.h — benchmark tasks: each turns local data files into multiple-choice
 * documents rendered exactly as lm-evaluation-harness renders them (its task YAML and utils.py),
 * so `assay eval` requests equal lm-eval's. One file per task family in harness/tasks/; the
 * metrics are in scoring/metrics.h; running them is harness/eval.h. */
#ifndef ASSAY_TASKS_H
#define ASSAY_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* One document: lm-eval's (context, [target_delimiter + choice for each choice]) requests. */
typedef struct eval_doc {
    char          *context; /* description + few-shot block + doc_to_text */
    size_t         ctx_len;
    char         **choices; /* doc_to_choice, without the target delimiter */
    size_t        *choice_len;
    int            n_choices;
    int            gold;
    char         **ctxs;     /* one context per choice (winogrande's partial scoring), or NULL */
    size_t        *ctx_lens; /* their lengths */
    size_t         sub;      /* subtask index (an MMLU subject); 0 when the task has none */
    size_t         doc_id;   /* 0-based index within its subtask, as lm-eval's doc_id */
    unsigned char *truth; /* truthfulqa_mc2: 1 for each true choice (mc2_targets.labels), or NULL */
    int64_t words, bytes; /* rolling tasks (wikitext): lm-eval's counts of the original page; the
                             context is the text to score, the one choice empty */
    /* generation tasks: the context is doc_to_text, the choices are the references (the first is
       doc_to_target, the few-shot answer) */
    int    label;  /* index into the spec's labels, or -1 */
    char  *schema; /* the item's JSON schema text, or NULL (the spec's applies) */
    size_t schema_len;
} eval_doc;

typedef struct eval_task_opts {
    const char *dir;         /* --data */
    int         num_fewshot; /* -1: the task's default (0 for every task here) */
    int64_t     limit;       /* 0: all; else the first N documents of each (sub)task */
    const char *split;       /* NULL: the evaluated split; "train": the few-shot pool
                                (harness/fewshot.h; only tasks fewshot_random_rule names) */
} eval_task_opts;

typedef struct eval_task eval_task;

typedef struct eval_task_def {
    const char *name;
    const char *paths; /* what it reads under --data, for --help and messages */
    int         acc_norm;
    double      version; /* lm-eval's metadata version */
    int (*load)(eval_task *t, const eval_task_opts *o, assay_error *err);
    const char *spec;   /* tasks defined by a spec (harness/tasks/user.c's format), else NULL */
    int         loglik; /* lm-eval output_type loglikelihood: one continuation per document; acc is
                           is_greedy, perplexity = exp(-mean(loglik)) (lambada_openai) */
    int mc2;         /* acc is the normalized probability mass on the true choices (doc->truth) */
    int mutual_info; /* acc_mutual_info: lm-eval adds an unconditional ("", delimiter + choice)
                        request per choice; argmax(ll - ll_unconditional). No built-in task of
                        lm-eval 0.4.13 lists it; user specs may */
    int rolling;     /* output_type loglikelihood_rolling (wikitext): each document's context
                        scored in rolling windows; word/byte perplexity, bits_per_byte */
    int generate;    /* output_type generate_until: greedy generations scored by the spec's filters
                        and metrics (harness/eval_gen.h); `spec` holds the gsm8k config */
} eval_task_def;

struct gen_spec;
void gen_spec_free(struct gen_spec *g); /* NULL-safe (harness/eval_gen.c) */

struct eval_task {
    const eval_task_def *def;
    eval_doc            *docs;
    size_t               n, cap;
    char               **subs;      /* subtask names (MMLU subjects), n_subs >= 1 when present */
    size_t              *sub_total; /* documents per subtask in the file, before --limit */
    size_t               n_subs;
    size_t               total; /* documents in the data before --limit */
    char               **files; /* data files read, hashed into results.json */
    size_t               n_files;
    int                  num_fewshot;
    char                 layout[160]; /* which input layout was read, and its caveats */
    char                 delim[16];   /* target delimiter; "" means lm-eval's " " */
    eval_task_def       *own_def;     /* a user task's definition (freed with the task) */
    struct gen_spec     *gen;         /* generation tasks: stop strings, filters, metrics (owned) */
    /* Streaming (harness/eval.c): when set, eval_task_add calls on_add before it appends, so
       docs[0..n) are complete (loaders finish a document before adding the next); on_add may
       consume them and free them with eval_task_drop. Loaders number documents and apply --limit
       with eval_task_count, which counts dropped ones too. */
    int (*on_add)(eval_task *t, void *user, assay_error *err);
    void  *on_add_user;
    size_t n_dropped; /* documents freed by eval_task_drop */
};

/* The registry, in the order `assay eval --help` lists it. NULL-terminated. */
extern const eval_task_def *const eval_task_defs[];

const eval_task_def *eval_task_find(const char *name);
/* "mmlu, hellaswag, ..." */
void eval_task_names(char *buf, size_t cap);

void eval_task_free(eval_task *t); /* NULL-safe */

/* Documents the loader has produced so far (held and dropped): the next document's index. */
size_t eval_task_count(const eval_task *t);
/* Frees the held documents docs[0..n) and counts them in n_dropped. */
void eval_task_drop(eval_task *t);

/* Appends a document (copies every string; calls t->on_add first when set). choices[i] has length
 * lens[i]. */
int eval_task_add(eval_task *t, const char *context, size_t ctx_len, const char *const *choices,
                  const size_t *lens, int n_choices, int gold, size_t sub, size_t doc_id,
                  const char *where, assay_error *err);
int eval_task_add_file(eval_task *t, const char *path, assay_error *err);
int eval_task_add_sub(eval_task *t, const char *name, assay_error *err);

/* ---- Python string operations the task configs use (on UTF-8) ---- */

typedef struct tbuf {
    char  *s;
    size_t n, cap;
} tbuf;
int  tbuf_put(tbuf *b, const char *s, size_t n); /* 0 ok, -1 out of memory; keeps s NUL-ended */
int  tbuf_puts(tbuf *b, const char *s);
void tbuf_free(tbuf *b);

/* str.strip(): leading and trailing Python whitespace; returns the span within s. */
void py_strip(const char *s, size_t len, size_t *off, size_t *out_len);
/* str.capitalize(): first character title-cased, the rest lower-cased (simple case mappings). */
int py_capitalize(tbuf *out, const char *s, size_t len);
/* str.replace(old, new): every non-overlapping occurrence, left to right, one pass. */
int py_replace(tbuf *out, const char *s, size_t len, const char *old, const char *rep);

/* lm-eval hellaswag utils.preprocess into out (cleared first): strip, " [title]" -> ". ", drop
 * every "[...]" within a line, "  " -> " " (one pass). 0 ok, -1 out of memory. */
int hellaswag_preprocess(tbuf *out, const char *s, size_t len);

/* lm-eval's MMLU category of a subject ("stem", "humanities", "social_sciences", "other"), or
 * NULL for a subject lm-eval does not list. MMLU_CATEGORIES lists them in lm-eval's group order. */
const char *mmlu_category(const char *subject);
#define MMLU_CATEGORIES                                                                            \
    { "stem", "other", "social_sciences", "humanities" }

/* lm-eval's truthfulqa fixed six-question prompt (truthfulqa_mc1.yaml doc_to_text), ending "\n\nQ:
 * " */
extern const char truthfulqa_prompt[];

/* ---- the loop of a JSONL task loader (harness/tasks/rows.c) ---- */

struct jsonl_reader;
struct cJSON;
/* One line of a task's JSONL file: the reader (for jsonl_get_*), the parsed object, and
 * "path:line" for messages. */
typedef struct task_row {
    struct jsonl_reader *r;
    const struct cJSON  *obj;
    const char          *where;
} task_row;
/* Adds the row's document to t (or fails naming row->where). */
typedef int (*task_row_fn)(eval_task *t, const task_row *row, void *user, assay_error *err);
/* Reads path (which must exist: else "<task>: <path> does not exist (<source>)", source may be
 * NULL), records it in t->files, sets the reader's shape for messages, and calls fn for each line
 * within --limit; every line counts in t->total. Stops at the first error; a file without lines
 * is "<path>: no <noun>". */
int task_jsonl_each(eval_task *t, const eval_task_opts *o, const char *path, const char *source,
                    const char *shape, const char *noun, task_row_fn fn, void *user,
                    assay_error *err);

/* The loaders, one file per task family in harness/tasks/. */
int task_mmlu_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_hellaswag_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_arc_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_lambada_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_winogrande_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_truthfulqa_mc2_load(eval_task *t, const eval_task_opts *o, assay_error *err);
int task_wikitext_load(eval_task *t, const eval_task_opts *o, assay_error *err);
/* lm-eval preprocess_wikitext.wikitext_detokenizer into out (cleared first). 0 ok, -1 no memory */
int wikitext_detokenize(tbuf *out, const char *s, size_t len);
/* A built-in task defined by t->def->spec. */
int task_spec_builtin_load(eval_task *t, const eval_task_opts *o, assay_error *err);
/* A user task from a JSON spec (harness/tasks/user.c says the format); sets t->def. A spec with
 * "output_type": "generate_until" is a generation task (harness/tasks/user_gen.c). */
int task_user_load(eval_task *t, const char *spec_path, const eval_task_opts *o, assay_error *err);
/* A generation task from a spec (harness/tasks/user_gen.c says the format); builtin: a built-in
 * task's spec (t->def set). With o->split set, loads the few-shot pool ("fewshot_data"). */
int task_gen_load(eval_task *t, const char *spec_text, size_t size, const char *spec_path,
                  int builtin, const eval_task_opts *o, assay_error *err);
int task_gsm8k_load(eval_task *t, const eval_task_opts *o, assay_error *err);
extern const char gsm8k_spec[];

/* Renders a "{field}" template (dotted paths for nesting; {{ and }} are literal braces) with a
 * JSON object's fields into out (cleared first). `where` (file:line) and `key` (the spec key
 * holding the template) name a missing field. */
struct cJSON;
int task_render_template(tbuf *out, const char *tpl, const struct cJSON *doc, const char *where,
                         const char *key, assay_error *err);

#endif
