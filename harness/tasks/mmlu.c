/* harness/tasks/mmlu.c — MMLU as lm-eval's mmlu/default renders it:
 *   description "The following are multiple choice questions (with answers) about {subject with
 *   spaces}.\n\n", few-shot = the first K dev questions of the subject (first_n sampler), each
 *   "{question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:" + " " + letter + "\n\n",
 *   then the test question the same way without the answer; choices "A".."D" (the requests' " A"
 *   comes from the target delimiter). Each subject is its own subtask, the group score micro-
 *   averaged (weight_by_size). */
#include <cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/csv.h"
#include "harness/jsonl.h"
#include "harness/tasks/tasks.h"

typedef struct mmlu_item {
    char  *q, *ch[4];
    size_t ql, cl[4];
    int    ans;
    size_t sub;
    char   where[1100];
} mmlu_item;

typedef struct mmlu_list {
    mmlu_item *v;
    size_t     n, cap;
} mmlu_list;

static void list_free(mmlu_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].q);
        for (int k = 0; k < 4; k++)
            free(l->v[i].ch[k]);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int list_push(mmlu_list *l, const char *q, size_t ql, const char *const *ch,
                     const size_t *cl, int ans, size_t sub, const char *where, assay_error *err) {
    if (l->n == l->cap) {
        size_t     nc = l->cap ? l->cap * 2 : 256;
        mmlu_item *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
        l->v   = nv;
        l->cap = nc;
    }
    mmlu_item *it = &l->v[l->n];
    memset(it, 0, sizeof *it);
    it->q  = dup_n(q, ql);
    it->ql = ql;
    int ok = it->q != NULL;
    for (int k = 0; k < 4; k++) {
        it->ch[k] = dup_n(ch[k], cl[k]);
        it->cl[k] = cl[k];
        ok        = ok && it->ch[k];
    }
    it->ans = ans;
    it->sub = sub;
    snprintf(it->where, sizeof it->where, "%s", where);
    l->n++;
    if (!ok)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
    return ASSAY_OK;
}

/* "question,choice0,choice1,choice2,choice3,answer" with answer an index 0-3. */
static int read_csv(const char *path, size_t sub, mmlu_list *out, assay_error *err) {
    static const char *const cols[6] = {"question", "choice0", "choice1",
                                        "choice2",  "choice3", "answer"};
    csv_table                t       = {0};
    int                      rc      = csv_read(path, &t, err);
    if (rc)
        return rc;
    if (t.n == 0 || t.rows[0].n != 6) {
        rc = assay_fail(err, ASSAY_EFORMAT,
                        "%s:1: expected the header question,choice0,choice1,choice2,choice3,answer",
                        path);
        goto done;
    }
    for (int c = 0; c < 6; c++)
        if (strcmp(t.rows[0].f[c], cols[c])) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s:1: column %d is '%s', expected '%s' (header question,choice0,"
                            "choice1,choice2,choice3,answer)",
                            path, c + 1, t.rows[0].f[c], cols[c]);
            goto done;
        }
    for (size_t i = 1; i < t.n; i++) {
        const csv_row *r = &t.rows[i];
        char           where[1100];
        snprintf(where, sizeof where, "%s:%zu", path, r->line);
        const char *a = r->f[5];
        if (!(a[0] >= '0' && a[0] <= '9' && a[1] == '\0')) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: field 'answer' is '%.40s', expected 0-3",
                            where, a);
            goto done;
        }
        int ans = a[0] - '0';
        if (ans > 3) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: gold index %d is out of range (4 choices)",
                            where, ans);
            goto done;
        }
        if ((rc = list_push(out, r->f[0], r->len[0], (const char *const *)r->f + 1, r->len + 1, ans,
                            sub, where, err)))
            goto done;
    }
done:
    csv_free(&t);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Subjects = the names of the <subject>_test.csv files, sorted (lm-eval lists them alphabetically).
 */
static int list_subjects(eval_task *t, const char *test_dir, assay_error *err) {
    DIR *d = opendir(test_dir);
    if (!d)
        return assay_fail(err, ASSAY_EIO, "%s: cannot open the directory", test_dir);
    char         **names = NULL;
    size_t         n = 0, cap = 0;
    struct dirent *e;
    int            rc = ASSAY_OK;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 9 || strcmp(e->d_name + l - 9, "_test.csv"))
            continue;
        if (n == cap) {
            cap       = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                goto done;
            }
            names = nn;
        }
        if (!(names[n] = dup_n(e->d_name, l - 9))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        n++;
    }
    if (n == 0) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: no <subject>_test.csv files", test_dir);
        goto done;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++)
        rc = eval_task_add_sub(t, names[i], err);
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

/* cais/mmlu rows: {"question", "subject", "choices": [4 strings], "answer": 0-3}. Subjects are
 * added to t in first-seen order here and sorted by the caller. */
static int read_jsonl(eval_task *t, const char *path, int add_subs, mmlu_list *out,
                      assay_error *err) {
    jsonl_reader r;
    cJSON       *obj = NULL;
    int          rc  = jsonl_open(&r, path, err), got;
    if (rc)
        return rc;
    r.shape = "{\"question\": \"...\", \"subject\": \"anatomy\", \"choices\": [\"...\", \"...\", "
              "\"...\", \"...\"], \"answer\": 0}";
    while ((got = jsonl_next(&r, &obj, err)) == 1) {
        const char *q, *s, **ch = NULL;
        size_t      ql, sl, *cl = NULL, nch = 0;
        int64_t     ans;
        int         present;
        char        where[1100];
        snprintf(where, sizeof where, "%s:%zu", path, r.line);
        if ((rc = jsonl_get_string(&r, obj, "question", 1, &q, &ql, err)) ||
            (rc = jsonl_get_string(&r, obj, "subject", 1, &s, &sl, err)) ||
            (rc = jsonl_get_strings(&r, obj, "choices", &ch, &cl, &nch, err)) ||
            (rc = jsonl_get_int(&r, obj, "answer", INT32_MIN, INT32_MAX, &present, &ans, err)))
            goto next;
        if (!present) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: missing field 'answer' (an index 0-3)", where);
            goto next;
        }
        if (nch != 4) {
            rc = assay_fail(err, nch ? ASSAY_EFORMAT : ASSAY_EINVAL,
                            "%s: field 'choices' has %zu strings, MMLU has 4%s", where, nch,
                            nch ? "" : " (the choice list is empty or missing)");
            goto next;
        }
        if (ans < 0 || ans > 3) {
            rc = assay_fail(err, ASSAY_EINVAL, "%s: gold index %lld is out of range (4 choices)",
                            where, (long long)ans);
            goto next;
        }
        size_t sub = t->n_subs;
        for (size_t k = 0; k < t->n_subs; k++)
            if (!strcmp(t->subs[k], s))
                sub = k;
        if (sub == t->n_subs) {
            if (!add_subs)
                goto next; /* dev rows of subjects with no test rows */
            if ((rc = eval_task_add_sub(t, s, err)))
                goto next;
        }
        rc = list_push(out, q, ql, ch, cl, (int)ans, sub, where, err);
    next:
        free(ch);
        free(cl);
        cJSON_Delete(obj);
        if (rc)
            break;
    }
    if (!rc && got != 0)
        rc = got;
    jsonl_close(&r);
    return rc;
}

static int render_q(tbuf *b, const mmlu_item *it) {
    size_t off, len;
    py_strip(it->q, it->ql, &off, &len);
    if (tbuf_put(b, it->q + off, len))
        return -1;
    for (int k = 0; k < 4; k++) {
        char head[5] = {'\n', (char)('A' + k), '.', ' ', 0};
        if (tbuf_put(b, head, 4) || tbuf_put(b, it->ch[k], it->cl[k]))
            return -1;
    }
    return tbuf_puts(b, "\nAnswer:");
}

int task_mmlu_load(eval_task *t, const eval_task_opts *o, assay_error *err) {
    char      test_dir[1100], path[1200], jtest[1100], jdev[1100];
    mmlu_list test = {0}, dev = {0};
    tbuf      ctx  = {0};
    int       rc   = ASSAY_OK;
    int       k    = o->num_fewshot < 0 ? 0 : o->num_fewshot;
    int       csv  = 0;
    t->num_fewshot = k;
    snprintf(test_dir, sizeof test_dir, "%s/mmlu/test", o->dir);
    snprintf(jtest, sizeof jtest, "%s/mmlu/test.jsonl", o->dir);
    snprintf(jdev, sizeof jdev, "%s/mmlu/dev.jsonl", o->dir);
    if (path_is_dir(test_dir)) {
        snprintf(t->layout, sizeof t->layout, "csv: mmlu/{dev,test}/<subject>_{dev,test}.csv");
        if ((rc = list_subjects(t, test_dir, err)))
            goto done;
        csv = 1; /* each subject's test questions are read when its documents are made */
        for (size_t s = 0; s < t->n_subs; s++) {
            snprintf(path, sizeof path, "%s/%s_test.csv", test_dir, t->subs[s]);
            if ((rc = eval_task_add_file(t, path, err)))
                goto done;
            if (k > 0) {
                snprintf(path, sizeof path, "%s/mmlu/dev/%s_dev.csv", o->dir, t->subs[s]);
                if ((rc = eval_task_add_file(t, path, err)) || (rc = read_csv(path, s, &dev, err)))
                    goto done;
            }
        }
    } else if (path_exists(jtest)) {
        snprintf(t->layout, sizeof t->layout, "jsonl: mmlu/{dev,test}.jsonl (cais/mmlu 'all')");
        if ((rc = eval_task_add_file(t, jtest, err)) || (rc = read_jsonl(t, jtest, 1, &test, err)))
            goto done;
        if (k > 0 &&
            ((rc = eval_task_add_file(t, jdev, err)) || (rc = read_jsonl(t, jdev, 0, &dev, err))))
            goto done;
        /* Alphabetical subjects; items keep file order within a subject. */
        size_t *rank   = malloc((t->n_subs ? t->n_subs : 1) * sizeof *rank);
        char  **sorted = malloc((t->n_subs ? t->n_subs : 1) * sizeof *sorted);
        if (!rank || !sorted) {
            free(rank);
            free(sorted);
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(sorted, t->subs, t->n_subs * sizeof *sorted);
        qsort(sorted, t->n_subs, sizeof *sorted, cmp_str);
        for (size_t s = 0; s < t->n_subs; s++)
            for (size_t j = 0; j < t->n_subs; j++)
                if (sorted[j] == t->subs[s])
                    rank[s] = j;
        for (size_t i = 0; i < test.n; i++)
            test.v[i].sub = rank[test.v[i].sub];
        for (size_t i = 0; i < dev.n; i++)
            dev.v[i].sub = rank[dev.v[i].sub];
        memcpy(t->subs, sorted, t->n_subs * sizeof *sorted);
        free(rank);
        free(sorted);
    } else {
        rc = assay_fail(err, ASSAY_EINVAL,
                        "mmlu: neither %s/ (csv layout) nor %s (jsonl layout) exists", test_dir,
                        jtest);
        goto done;
    }
    for (size_t s = 0; s < t->n_subs; s++) {
        /* the few-shot block: the first k dev questions of this subject, in file order */
        ctx.n = 0;
        if (tbuf_puts(&ctx, "The following are multiple choice questions (with answers) about "))
            goto oom;
        for (const char *c = t->subs[s]; *c; c++)
            if (tbuf_put(&ctx, *c == '_' ? " " : c, 1))
                goto oom;
        if (tbuf_puts(&ctx, ".\n\n"))
            goto oom;
        int have = 0;
        for (size_t i = 0; i < dev.n && have < k; i++) {
            if (dev.v[i].sub != s)
                continue;
            char tail[5] = {' ', (char)('A' + dev.v[i].ans), '\n', '\n', 0};
            if (render_q(&ctx, &dev.v[i]) || tbuf_put(&ctx, tail, 4))
                goto oom;
            have++;
        }
        if (have < k) {
            rc = assay_fail(err, ASSAY_EINVAL,
                            "mmlu: subject '%s' has %d dev questions, --num-fewshot asks for %d",
                            t->subs[s], have, k);
            goto done;
        }
        size_t head = ctx.n, doc_id = 0;
        if (csv) {
            list_free(&test);
            snprintf(path, sizeof path, "%s/%s_test.csv", test_dir, t->subs[s]);
            if ((rc = read_csv(path, s, &test, err)))
                goto done;
        }
        for (size_t i = 0; i < test.n; i++) {
            if (test.v[i].sub != s)
                continue;
            t->sub_total[s]++;
            t->total++;
            if (o->limit > 0 && (int64_t)doc_id >= o->limit)
                continue;
            ctx.n = head;
            if (render_q(&ctx, &test.v[i]))
                goto oom;
            static const char *const letters[4] = {"A", "B", "C", "D"};
            static const size_t      one[4]     = {1, 1, 1, 1};
            if ((rc = eval_task_add(t, ctx.s, ctx.n, letters, one, 4, test.v[i].ans, s, doc_id,
                                    test.v[i].where, err)))
                goto done;
            doc_id++;
        }
    }
    goto done;
oom:
    rc = assay_fail(err, ASSAY_ENOMEM, "mmlu: out of memory rendering prompts");
done:
    tbuf_free(&ctx);
    list_free(&test);
    list_free(&dev);
    return rc;
}

/* lm-eval mmlu/default/mmlu_<subject>.yaml "tag: mmlu_<category>_tasks": the group (stem,
 * humanities, social_sciences, other) each subject is aggregated into. */
static const char *const mmlu_categories[][2] = {
    {"abstract_algebra", "stem"},
    {"anatomy", "stem"},
    {"astronomy", "stem"},
    {"business_ethics", "other"},
    {"clinical_knowledge", "other"},
    {"college_biology", "stem"},
    {"college_chemistry", "stem"},
    {"college_computer_science", "stem"},
    {"college_mathematics", "stem"},
    {"college_medicine", "other"},
    {"college_physics", "stem"},
    {"computer_security", "stem"},
    {"conceptual_physics", "stem"},
    {"econometrics", "social_sciences"},
    {"electrical_engineering", "stem"},
    {"elementary_mathematics", "stem"},
    {"formal_logic", "humanities"},
    {"global_facts", "other"},
    {"high_school_biology", "stem"},
    {"high_school_chemistry", "stem"},
    {"high_school_computer_science", "stem"},
    {"high_school_european_history", "humanities"},
    {"high_school_geography", "social_sciences"},
    {"high_school_government_and_politics", "social_sciences"},
    {"high_school_macroeconomics", "social_sciences"},
    {"high_school_mathematics", "stem"},
    {"high_school_microeconomics", "social_sciences"},
    {"high_school_physics", "stem"},
    {"high_school_psychology", "social_sciences"},
    {"high_school_statistics", "stem"},
    {"high_school_us_history", "humanities"},
    {"high_school_world_history", "humanities"},
    {"human_aging", "other"},
    {"human_sexuality", "social_sciences"},
    {"international_law", "humanities"},
    {"jurisprudence", "humanities"},
    {"logical_fallacies", "humanities"},
    {"machine_learning", "stem"},
    {"management", "other"},
    {"marketing", "other"},
    {"medical_genetics", "other"},
    {"miscellaneous", "other"},
    {"moral_disputes", "humanities"},
    {"moral_scenarios", "humanities"},
    {"nutrition", "other"},
    {"philosophy", "humanities"},
    {"prehistory", "humanities"},
    {"professional_accounting", "other"},
    {"professional_law", "humanities"},
    {"professional_medicine", "other"},
    {"professional_psychology", "social_sciences"},
    {"public_relations", "social_sciences"},
    {"security_studies", "social_sciences"},
    {"sociology", "social_sciences"},
    {"us_foreign_policy", "social_sciences"},
    {"virology", "other"},
    {"world_religions", "humanities"},
};

const char *mmlu_category(const char *subject) {
    for (size_t i = 0; i < sizeof mmlu_categories / sizeof mmlu_categories[0]; i++)
        if (!strcmp(mmlu_categories[i][0], subject))
            return mmlu_categories[i][1];
    return NULL;
}
