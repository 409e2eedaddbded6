/* harness/judge.c — judge prompts, canonical request bodies, reply and verdict parsing, and
 * pairwise statistics (see judge.h). */
#include "harness/judge.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/sha256.h"
#include "harness/jsonl.h"
#include "scoring/bootstrap.h"

/* The default instructions follow MT-Bench's judge prompts (an impartial comparison with a short
 * explanation first, a warning against position, length and name bias, and a bracketed verdict
 * at the end), in our own words. The format line is kept after a --rubric so verdicts parse. */
static const char pair_instructions[] =
    "You are an impartial judge. Compare the responses of two AI assistants to the user "
    "question shown below and decide which one follows the user's instructions and answers the "
    "question better. Weigh helpfulness, relevance, accuracy, depth, creativity and level of "
    "detail. Begin with a short comparison of the two responses that explains your reasoning. "
    "The order in which the responses appear must not influence your decision, nor must their "
    "length or the names of the assistants; be as objective as possible.";
static const char pair_reference_note[] =
    " A reference answer is given: compare both responses with it to find their mistakes "
    "before you decide.";
static const char pair_format[] =
    " After your explanation, give your final verdict in exactly this format: \"[[A]]\" if "
    "assistant A is better, \"[[B]]\" if assistant B is better, \"[[C]]\" for a tie.";

static const char point_instructions[] =
    "You are an impartial judge. Rate the quality of the AI assistant's response to the user "
    "question shown below. Weigh helpfulness, relevance, accuracy, depth, creativity and level "
    "of detail. Begin with a short explanation of your assessment; be as objective as "
    "possible.";
static const char point_reference_note[] =
    " A reference answer is given: compare the response with it to find its mistakes before "
    "you rate it.";
static const char point_format[] =
    " After your explanation, rate the response on a scale of 1 to 10 in exactly this format: "
    "\"Rating: [[5]]\".";

static const char pair_reminder[] =
    "Your reply did not end with a verdict in the required format. Reply now with only the "
    "verdict: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, \"[[C]]\" "
    "for a tie.";
static const char point_reminder[] =
    "Your reply did not end with a rating in the required format. Reply now with only the "
    "rating, a number from 1 to 10, in this format: \"Rating: [[5]]\".";

/* The user message's labels; the hash below covers them too. */
static const char *const user_labels[] = {
    "[Question]\n",
    "\n\n[Start of the Reference Answer]\n",
    "\n[End of the Reference Answer]",
    "\n\n[Start of Assistant A's Answer]\n",
    "\n[End of Assistant A's Answer]",
    "\n\n[Start of Assistant B's Answer]\n",
    "\n[End of Assistant B's Answer]",
    "\n\n[Start of the Assistant's Answer]\n",
    "\n[End of the Assistant's Answer]",
};

typedef struct sbuf {
    char  *p;
    size_t n, cap;
    int    oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t len) {
    if (b->oom)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p   = np;
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }
static void sb_js(sbuf *b, judge_str s) { sb_add(b, s.s ? s.s : "", s.s ? s.len : 0); }

int judge_prompt_build(const judge_prompt_in *in, judge_prompt *out, assay_error *err) {
    sbuf sys = {0}, usr = {0};
    int  pair = in->mode == JUDGE_PAIRWISE;
    memset(out, 0, sizeof *out);
    if (in->rubric.s) {
        sb_js(&sys, in->rubric);
    } else {
        sb_str(&sys, pair ? pair_instructions : point_instructions);
        if (in->reference_guided)
            sb_str(&sys, pair ? pair_reference_note : point_reference_note);
    }
    sb_str(&sys, pair ? pair_format : point_format);

    sb_str(&usr, user_labels[0]);
    sb_js(&usr, in->question);
    if (in->reference_guided) {
        sb_str(&usr, user_labels[1]);
        sb_js(&usr, in->reference);
        sb_str(&usr, user_labels[2]);
    }
    if (pair) {
        sb_str(&usr, user_labels[3]);
        sb_js(&usr, in->first);
        sb_str(&usr, user_labels[4]);
        sb_str(&usr, user_labels[5]);
        sb_js(&usr, in->second);
        sb_str(&usr, user_labels[6]);
    } else {
        sb_str(&usr, user_labels[7]);
        sb_js(&usr, in->first);
        sb_str(&usr, user_labels[8]);
    }
    if (sys.oom || usr.oom || !sys.p || !usr.p) {
        free(sys.p);
        free(usr.p);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory building a judge prompt");
    }
    *out = (judge_prompt){sys.p, usr.p, sys.n, usr.n};
    return ASSAY_OK;
}

void judge_prompt_free(judge_prompt *p) {
    if (!p)
        return;
    free(p->system);
    free(p->user);
    memset(p, 0, sizeof *p);
}

const char *judge_reminder(judge_mode mode) {
    return mode == JUDGE_PAIRWISE ? pair_reminder : point_reminder;
}

void judge_prompt_hash(judge_mode mode, int reference_guided, judge_str rubric, char out[65]) {
    sha256_ctx c;
    int        pair = mode == JUDGE_PAIRWISE;
    sha256_init(&c);
    /* NUL separators keep the parts apart: ("ab", "c") and ("a", "bc") hash differently */
    const char *parts[] = {pair ? "pairwise" : "pointwise",
                           reference_guided ? "reference-guided" : "plain",
                           pair ? pair_instructions : point_instructions,
                           pair ? pair_reference_note : point_reference_note,
                           pair ? pair_format : point_format,
                           judge_reminder(mode)};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        sha256_update(&c, parts[i], strlen(parts[i]) + 1);
    for (size_t i = 0; i < sizeof user_labels / sizeof *user_labels; i++)
        sha256_update(&c, user_labels[i], strlen(user_labels[i]) + 1);
    sha256_update(&c, rubric.s ? "rubric" : "default", rubric.s ? 7 : 8);
    if (rubric.s)
        sha256_update(&c, rubric.s, rubric.len);
    sha256_hex(&c, out);
}

static cJSON *message(const char *role, const char *content, size_t len) {
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    cJSON_AddStringToObject(m, "role", role);
    cJSON *c = jsonl_string_create(content, len);
    if (!c) {
        cJSON_Delete(m);
        return NULL;
    }
    cJSON_AddItemToObject(m, "content", c);
    return m;
}

char *judge_body_build(const judge_params *p, const judge_prompt *pr, judge_str first_reply,
                       size_t *len) {
    cJSON *o    = cJSON_CreateObject();
    cJSON *msgs = cJSON_CreateArray();
    char  *text = NULL;
    if (!o || !msgs) {
        cJSON_Delete(o);
        cJSON_Delete(msgs);
        return NULL;
    }
    cJSON_AddStringToObject(o, "model", p->model);
    cJSON_AddItemToObject(o, "messages", msgs);
    cJSON_AddItemToArray(msgs, message("system", pr->system, pr->system_len));
    cJSON_AddItemToArray(msgs, message("user", pr->user, pr->user_len));
    if (first_reply.s) {
        const char *rem = judge_reminder(p->mode);
        cJSON_AddItemToArray(msgs, message("assistant", first_reply.s, first_reply.len));
        cJSON_AddItemToArray(msgs, message("user", rem, strlen(rem)));
    }
    cJSON_AddNumberToObject(o, "temperature", 0);
    cJSON_AddNumberToObject(o, "seed", (double)p->seed);
    cJSON_AddNumberToObject(o, "max_tokens", p->max_tokens);
    /* a failed allocation above leaves a message out: never send a partial body */
    if (cJSON_GetArraySize(msgs) == (first_reply.s ? 4 : 2) && cJSON_GetArraySize(o) == 5)
        text = jsonl_print(o, 0);
    cJSON_Delete(o);
    if (text)
        *len = strlen(text);
    return text;
}

/* A whole number of tokens: JSON numbers are doubles, so 2^53 bounds what is exact. */
static int token_count(const cJSON *o, const char *name, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d))
        return -1;
    *out = (int64_t)d;
    return 0;
}

static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t   k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k  = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k  = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k  = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += k + 1;
    }
    return 1;
}

int judge_reply_parse(const char *body, size_t len, judge_reply *out, assay_error *err) {
    memset(out, 0, sizeof *out);
    if (len > JUDGE_REPLY_MAX)
        return assay_fail(err, ASSAY_EFORMAT, "reply of %zu bytes is over the %zu-byte cap", len,
                          JUDGE_REPLY_MAX);
    if (!utf8_valid((const unsigned char *)body, len))
        return assay_fail(err, ASSAY_EFORMAT, "reply is not valid UTF-8");
    /* cJSON ends strings at NUL: a raw NUL byte is not valid JSON anyway */
    if (memchr(body, '\0', len))
        return assay_fail(err, ASSAY_EFORMAT, "reply holds a NUL byte");
    const char *end = NULL;
    cJSON      *j   = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    int         rc  = ASSAY_EFORMAT;
    if (!j) {
        assay_fail(err, rc, "reply is not valid JSON (%zu bytes, error near byte %zu)", len,
                   end ? (size_t)(end - body) : (size_t)0);
        goto done;
    }
    if (end) /* trailing text after the object */
        while ((size_t)(end - body) < len &&
               (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
            end++;
    if (end && (size_t)(end - body) != len) {
        assay_fail(err, rc, "reply has text after its JSON value (byte %zu)", (size_t)(end - body));
        goto done;
    }
    if (!cJSON_IsObject(j)) {
        assay_fail(err, rc, "reply is not a JSON object");
        goto done;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e && !cJSON_IsNull(e)) {
        const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
        assay_fail(err, rc, "reply is an error: %.200s",
                   cJSON_IsString(m) ? m->valuestring : "(no message)");
        goto done;
    }
    const cJSON *ch  = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *c0  = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
    const cJSON *msg = cJSON_IsObject(c0) ? cJSON_GetObjectItemCaseSensitive(c0, "message") : NULL;
    const cJSON *content =
        cJSON_IsObject(msg) ? cJSON_GetObjectItemCaseSensitive(msg, "content") : NULL;
    if (!cJSON_IsArray(ch) || !c0) {
        assay_fail(err, rc, "reply has no choices[0]");
        goto done;
    }
    if (!cJSON_IsString(content)) {
        assay_fail(err, rc, "reply has no string choices[0].message.content");
        goto done;
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(u) && !token_count(u, "prompt_tokens", &out->prompt_tokens) &&
        !token_count(u, "completion_tokens", &out->completion_tokens))
        out->has_usage = 1;
    else
        out->prompt_tokens = out->completion_tokens = 0;
    out->content_len = strlen(content->valuestring);
    out->content     = malloc(out->content_len + 1);
    if (!out->content) {
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(out->content, content->valuestring, out->content_len + 1);
    rc = ASSAY_OK;
done:
    cJSON_Delete(j);
    return rc;
}

void judge_reply_free(judge_reply *r) {
    if (!r)
        return;
    free(r->content);
    memset(r, 0, sizeof *r);
}

judge_verdict judge_parse_verdict(const char *text, size_t len) {
    judge_verdict v = JUDGE_V_NONE;
    for (size_t i = 0; i + 5 <= len; i++) {
        if (text[i] != '[' || text[i + 1] != '[' || text[i + 3] != ']' || text[i + 4] != ']')
            continue;
        char c = text[i + 2];
        if (c == 'A')
            v = JUDGE_V_A;
        else if (c == 'B')
            v = JUDGE_V_B;
        else if (c == 'C')
            v = JUDGE_V_C;
    }
    return v;
}

int judge_parse_score(const char *text, size_t len, double *score) {
    int found = 0;
    for (size_t i = 0; i + 5 <= len; i++) {
        if (text[i] != '[' || text[i + 1] != '[')
            continue;
        size_t j = i + 2, int_digits = 0, frac_digits = 0;
        double v = 0, scale = 1;
        while (j < len && text[j] >= '0' && text[j] <= '9' && int_digits < 3) {
            v = v * 10 + (text[j++] - '0');
            int_digits++;
        }
        if (int_digits == 0)
            continue;
        if (j < len && text[j] == '.') {
            j++;
            while (j < len && text[j] >= '0' && text[j] <= '9' && frac_digits < 6) {
                scale /= 10;
                v += (text[j++] - '0') * scale;
                frac_digits++;
            }
            if (frac_digits == 0)
                continue;
        }
        if (j + 2 > len || text[j] != ']' || text[j + 1] != ']')
            continue;
        if (v >= 1 && v <= 10) {
            *score = v;
            found  = 1;
        } else {
            found = 0; /* the last rating is out of range: no rating */
        }
    }
    return found;
}

judge_outcome judge_pair_outcome(judge_verdict ab, judge_verdict ba) {
    /* in the order (B,A), the first position holds B */
    if (ab == JUDGE_V_B && ba == JUDGE_V_A)
        return JUDGE_B_WINS;
    if (ab == JUDGE_V_A && ba == JUDGE_V_B)
        return JUDGE_A_WINS;
    return JUDGE_TIE;
}

static int consistent(judge_verdict ab, judge_verdict ba) {
    return (ab == JUDGE_V_C && ba == JUDGE_V_C) || judge_pair_outcome(ab, ba) != JUDGE_TIE;
}

int judge_pair_stats_compute(const judge_verdict *ab, const judge_verdict *ba, size_t n,
                             int resamples, uint64_t seed, judge_pair_stats *out) {
    memset(out, 0, sizeof *out);
    double *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return -1;
    for (size_t i = 0; i < n; i++) {
        judge_outcome o = judge_pair_outcome(ab[i], ba[i]);
        out->wins += o == JUDGE_B_WINS;
        out->losses += o == JUDGE_A_WINS;
        out->ties += o == JUDGE_TIE;
        x[i]                     = o == JUDGE_B_WINS ? 1.0 : o == JUDGE_TIE ? 0.5 : 0.0;
        const judge_verdict v[2] = {ab[i], ba[i]};
        for (int k = 0; k < 2; k++) {
            out->n_unparsed_verdicts += v[k] == JUDGE_V_NONE;
            out->n_decisive += v[k] == JUDGE_V_A || v[k] == JUDGE_V_B;
            out->n_first += v[k] == JUDGE_V_A;
        }
        if (ab[i] != JUDGE_V_NONE && ba[i] != JUDGE_V_NONE) {
            out->n_both_parsed++;
            out->n_consistent += consistent(ab[i], ba[i]);
        }
    }
    out->n_pairs  = n;
    out->win_rate = n ? ((double)out->wins + 0.5 * (double)out->ties) / (double)n : NAN;
    out->consistency =
        out->n_both_parsed ? (double)out->n_consistent / (double)out->n_both_parsed : NAN;
    out->first_position_rate =
        out->n_decisive ? (double)out->n_first / (double)out->n_decisive : NAN;
    boot_ci ci = {0};
    int     rc = boot_ci_mean(x, n, resamples, 0.95, seed, &ci);
    free(x);
    if (rc)
        return -1;
    out->ci_lo     = ci.lo;
    out->ci_hi     = ci.hi;
    out->resamples = resamples;
    return 0;
}
