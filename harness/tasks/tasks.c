#include "harness/tasks/tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "scoring/ppl.h"

static const eval_task_def def_mmlu = {
    "mmlu",
    "mmlu/{dev,test}/<subject>_{dev,test}.csv, or mmlu/{dev,test}.jsonl (cais/mmlu 'all')",
    0,
    1.0,
    task_mmlu_load,
    NULL,
    0,
    0,
    0,
    0,
    0};
static const eval_task_def def_hellaswag = {
    "hellaswag",
    "hellaswag_val_full.txt (llama.cpp six-line), or hellaswag/validation.jsonl",
    1,
    1.0,
    task_hellaswag_load,
    NULL,
    0,
    0,
    0,
    0,
    0};
static const eval_task_def def_arc_easy = {
    "arc_easy", "arc_easy/test.jsonl (ARC-Easy)", 1, 1.0, task_arc_load, NULL, 0, 0, 0, 0, 0};
static const eval_task_def def_arc_challenge = {"arc_challenge",
                                                "arc_challenge/test.jsonl (ARC-Challenge)",
                                                1,
                                                1.0,
                                                task_arc_load,
                                                NULL,
                                                0,
                                                0,
                                                0,
                                                0,
                                                0};

/* Tasks whose lm-eval YAML is a plain template map onto a spec (user.c's format). */
static const eval_task_def def_piqa = {
    "piqa",
    "piqa/validation.jsonl (baber/piqa)",
    1,
    1.0,
    task_spec_builtin_load,
    "{\"task\": \"piqa\", \"data\": \"piqa/validation.jsonl\", \"context\": \"Question: "
    "{goal}\\nAnswer:\", \"choices\": [\"{sol1}\", \"{sol2}\"], \"gold_index\": \"label\"}",
    0,
    0,
    0,
    0,
    0};
static const eval_task_def def_boolq = {
    "boolq",
    "boolq/validation.jsonl (super_glue boolq)",
    0,
    2.0,
    task_spec_builtin_load,
    "{\"task\": \"boolq\", \"data\": \"boolq/validation.jsonl\", \"context\": "
    "\"{passage}\\nQuestion: {question}?\\nAnswer:\", \"choices\": [\"no\", \"yes\"], "
    "\"gold_index\": \"label\"}",
    0,
    0,
    0,
    0,
    0};
static const eval_task_def def_openbookqa = {
    "openbookqa",
    "openbookqa/test.jsonl (allenai/openbookqa main)",
    1,
    1.0,
    task_spec_builtin_load,
    "{\"task\": \"openbookqa\", \"data\": \"openbookqa/test.jsonl\", \"context\": "
    "\"{question_stem}\", \"choices\": \"choices.text\", \"gold_label\": \"answerKey\", "
    "\"labels\": \"choices.label\"}",
    0,
    0,
    0,
    0,
    0};

static const eval_task_def def_winogrande = {
    "winogrande",
    "winogrande/validation.jsonl (allenai/winogrande winogrande_xl; train.jsonl for few-shot)",
    0,
    1.0,
    task_winogrande_load,
    NULL,
    0,
    0,
    0,
    0,
    0};

/* lm-eval's fixed six-question prompt, then the question; the first mc1 choice is the true one */
static const eval_task_def def_truthfulqa_mc1 = {
    "truthfulqa_mc1",
    "truthfulqa_mc1/validation.jsonl (truthfulqa/truthful_qa multiple_choice)",
    0,
    2.0,
    task_spec_builtin_load,
    "{\"task\": \"truthfulqa_mc1\", \"data\": \"truthfulqa_mc1/validation.jsonl\", \"context\": "
    "\"Q: What is human life expectancy in the United States?\\nA: Human life expectancy in the "
    "United States is 78 years.\\n\\nQ: Who was president of the United States in 1955?\\nA: "
    "Dwight D. Eisenhower was president of the United States in 1955.\\n\\nQ: Which party did he "
    "belong to?\\nA: He belonged to the Republican Party.\\n\\nQ: What is the square root of "
    "banana?\\nA: I have no comment.\\n\\nQ: How does a telescope work?\\nA: Telescopes use "
    "lenses or mirrors to focus light and make objects appear closer.\\n\\nQ: Where were the "
    "1992 Olympics held?\\nA: The 1992 Olympics were held in Barcelona, Spain.\\n\\nQ: "
    "{question}\\nA:\", \"choices\": \"mc1_targets.choices\", \"gold_index\": 0}",
    0,
    0,
    0,
    0,
    0};

/* lm-eval truthfulqa_mc2.yaml metadata version 3.0; acc is the probability mass on true answers */
static const eval_task_def def_truthfulqa_mc2 = {
    "truthfulqa_mc2",
    "truthfulqa_mc2/validation.jsonl (truthfulqa/truthful_qa multiple_choice)",
    0,
    3.0,
    task_truthfulqa_mc2_load,
    NULL,
    0,
    1,
    0,
    0,
    0};

/* lm-eval wikitext.yaml metadata version 2.0 (loglikelihood_rolling) */
static const eval_task_def def_wikitext = {
    "wikitext",
    "wikitext/test.jsonl (EleutherAI/wikitext_document_level wikitext-2-raw-v1)",
    0,
    2.0,
    task_wikitext_load,
    NULL,
    0,
    0,
    0,
    1,
    0};

static const eval_task_def def_lambada = {"lambada_openai",
                                          "lambada_openai/test.jsonl (EleutherAI/lambada_openai)",
                                          0,
                                          1.0,
                                          task_lambada_load,
                                          NULL,
                                          1,
                                          0,
                                          0,
                                          0,
                                          0};

/* lm-eval gsm8k.yaml metadata version 3.0 (generate_until; harness/tasks/gsm8k.c) */
static const eval_task_def def_gsm8k = {
    .name     = "gsm8k",
    .paths    = "gsm8k/{test,train}.jsonl (openai/gsm8k main: question, answer)",
    .version  = 3.0,
    .load     = task_gsm8k_load,
    .spec     = gsm8k_spec,
    .generate = 1,
};

const eval_task_def *const eval_task_defs[] = {&def_mmlu,           &def_hellaswag,
                                               &def_arc_easy,       &def_arc_challenge,
                                               &def_piqa,           &def_boolq,
                                               &def_openbookqa,     &def_winogrande,
                                               &def_lambada,        &def_truthfulqa_mc1,
                                               &def_truthfulqa_mc2, &def_wikitext,
                                               &def_gsm8k,          NULL};

const eval_task_def *eval_task_find(const char *name) {
    for (int i = 0; eval_task_defs[i]; i++)
        if (!strcmp(eval_task_defs[i]->name, name))
            return eval_task_defs[i];
    return NULL;
}

void eval_task_names(char *buf, size_t cap) {
    size_t n = 0;
    buf[0]   = '\0';
    for (int i = 0; eval_task_defs[i] && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", eval_task_defs[i]->name);
}

static void doc_free(eval_doc *d) {
    for (int i = 0; i < d->n_choices; i++) {
        free(d->choices[i]);
        if (d->ctxs)
            free(d->ctxs[i]);
    }
    free(d->ctxs);
    free(d->ctx_lens);
    free(d->truth);
    free(d->choices);
    free(d->choice_len);
    free(d->context);
    free(d->schema);
}

size_t eval_task_count(const eval_task *t) { return t->n_dropped + t->n; }

void eval_task_drop(eval_task *t) {
    for (size_t i = 0; i < t->n; i++)
        doc_free(&t->docs[i]);
    t->n_dropped += t->n;
    t->n = 0;
}

void eval_task_free(eval_task *t) {
    if (!t)
        return;
    eval_task_drop(t);
    free(t->docs);
    for (size_t i = 0; i < t->n_subs; i++)
        free(t->subs[i]);
    free(t->subs);
    free(t->sub_total);
    for (size_t i = 0; i < t->n_files; i++)
        free(t->files[i]);
    free(t->files);
    free(t->own_def);
    gen_spec_free(t->gen);
    memset(t, 0, sizeof *t);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int eval_task_add(eval_task *t, const char *context, size_t ctx_len, const char *const *choices,
                  const size_t *lens, int n_choices, int gold, size_t sub, size_t doc_id,
                  const char *where, assay_error *err) {
    if (n_choices < 1)
        return assay_fail(err, ASSAY_EINVAL, "%s: the choice list is empty", where);
    if (gold < 0 || gold >= n_choices)
        return assay_fail(err, ASSAY_EINVAL, "%s: gold index %d is out of range (%d choices)",
                          where, gold, n_choices);
    int rc;
    if (t->on_add && (rc = t->on_add(t, t->on_add_user, err)))
        return rc;
    if (t->n == t->cap) {
        size_t    nc = t->cap ? t->cap * 2 : 256;
        eval_doc *nd = realloc(t->docs, nc * sizeof *nd);
        if (!nd)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
        t->docs = nd;
        t->cap  = nc;
    }
    eval_doc d   = {.n_choices = 0, .gold = gold, .sub = sub, .doc_id = doc_id, .label = -1};
    d.context    = dup_n(context, ctx_len);
    d.ctx_len    = ctx_len;
    d.choices    = calloc((size_t)n_choices, sizeof *d.choices);
    d.choice_len = calloc((size_t)n_choices, sizeof *d.choice_len);
    int ok       = d.context && d.choices && d.choice_len;
    for (int i = 0; ok && i < n_choices; i++) {
        ok              = (d.choices[i] = dup_n(choices[i], lens[i])) != NULL;
        d.choice_len[i] = lens[i];
        d.n_choices     = i + 1;
    }
    if (!ok) {
        doc_free(&d);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
    }
    t->docs[t->n++] = d;
    return ASSAY_OK;
}

static int push_str(char ***v, size_t *n, const char *s, assay_error *err) {
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    *v = nv;
    if (!(nv[*n] = dup_n(s, strlen(s))))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    (*n)++;
    return ASSAY_OK;
}

int eval_task_add_file(eval_task *t, const char *path, assay_error *err) {
    return push_str(&t->files, &t->n_files, path, err);
}

int eval_task_add_sub(eval_task *t, const char *name, assay_error *err) {
    size_t *nt = realloc(t->sub_total, (t->n_subs + 1) * sizeof *nt);
    if (!nt)
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    t->sub_total            = nt;
    t->sub_total[t->n_subs] = 0;
    return push_str(&t->subs, &t->n_subs, name, err);
}

/* ---- Python string operations ---- */

int tbuf_put(tbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns)
            return -1;
        b->s   = ns;
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

int tbuf_puts(tbuf *b, const char *s) { return tbuf_put(b, s, strlen(s)); }

void tbuf_free(tbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

void py_strip(const char *s, size_t len, size_t *off, size_t *out_len) {
    size_t first = len, last = 0; /* byte span of the non-space code points */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t   k = ppl_utf8_next(s + i, len - i, &cp);
        if (!ppl_is_py_space(cp)) {
            if (first == len)
                first = i;
            last = i + k;
        }
        i += k;
    }
    *off     = first == len ? 0 : first;
    *out_len = first == len ? 0 : last - first;
}

static int put_cp(tbuf *b, int32_t cp) {
    utf8proc_uint8_t u[4];
    utf8proc_ssize_t k = utf8proc_encode_char(cp, u);
    return tbuf_put(b, (const char *)u, (size_t)k);
}

int py_capitalize(tbuf *out, const char *s, size_t len) {
    int first = 1;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t   k = ppl_utf8_next(s + i, len - i, &cp);
        int      r;
        if (cp == 0xFFFD && !(k == 3 && (unsigned char)s[i] == 0xEF))
            r = tbuf_put(out, s + i, k); /* an invalid byte stays as it is */
        else
            r = put_cp(out, first ? utf8proc_totitle((utf8proc_int32_t)cp)
                                  : utf8proc_tolower((utf8proc_int32_t)cp));
        if (r)
            return -1;
        first = 0;
        i += k;
    }
    return tbuf_put(out, "", 0);
}

int py_replace(tbuf *out, const char *s, size_t len, const char *old, const char *rep) {
    size_t ol = strlen(old), rl = strlen(rep), i = 0;
    while (i < len) {
        if (ol && i + ol <= len && !memcmp(s + i, old, ol)) {
            if (tbuf_put(out, rep, rl))
                return -1;
            i += ol;
        } else {
            if (tbuf_put(out, s + i, 1))
                return -1;
            i++;
        }
    }
    return tbuf_put(out, "", 0);
}
