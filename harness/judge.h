/* harness/judge.h — the pure parts of `assay judge`: judge prompts (MT-Bench style pairwise and
 * 1-10 pointwise), canonical chat-completions request bodies, parsing of untrusted replies and
 * of the verdict inside them, and the statistics over verdicts. No I/O here (the client is
 * judge_client.h, the cache judge_cache.h), so everything is unit-tested and fuzzed directly. */
#ifndef ASSAY_JUDGE_H
#define ASSAY_JUDGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum judge_mode { JUDGE_PAIRWISE = 0, JUDGE_POINTWISE } judge_mode;

/* A verdict as the judge wrote it: the position it preferred. */
typedef enum judge_verdict {
    JUDGE_V_NONE = 0, /* no verdict could be parsed */
    JUDGE_V_A,        /* the answer shown first */
    JUDGE_V_B,        /* the answer shown second */
    JUDGE_V_C,        /* tie */
} judge_verdict;

/* A string with its length (strings from JSONL may hold NUL bytes). */
typedef struct judge_str {
    const char *s;
    size_t      len;
} judge_str;

/* What the prompt of one judgment is made of. */
typedef struct judge_prompt_in {
    judge_mode mode;
    int        reference_guided;
    judge_str  rubric;    /* s == NULL: the default instructions */
    judge_str  question;  /* the user's prompt */
    judge_str  first;     /* pairwise: the answer shown as A; pointwise: the answer */
    judge_str  second;    /* pairwise: the answer shown as B */
    judge_str  reference; /* with reference_guided */
} judge_prompt_in;

/* The system and user messages of a judgment (malloc'd; judge_prompt_free). */
typedef struct judge_prompt {
    char  *system, *user;
    size_t system_len, user_len;
} judge_prompt;

int  judge_prompt_build(const judge_prompt_in *in, judge_prompt *out, assay_error *err);
void judge_prompt_free(judge_prompt *p); /* NULL-safe */

/* The message sent after a reply without a parsable verdict. */
const char *judge_reminder(judge_mode mode);

/* sha256 (hex) of everything fixed in the prompts of a run: the templates of `mode`, the
 * reference-guided flag, the rubric and the reminder. Results record it so runs with different
 * prompts are never compared by mistake. */
void judge_prompt_hash(judge_mode mode, int reference_guided, judge_str rubric, char out[65]);

/* Sampling settings every request carries. */
typedef struct judge_params {
    judge_mode  mode; /* picks the reminder */
    const char *model;
    int64_t     seed;
    int         max_tokens;
} judge_params;

/* The canonical request body: {"model", "messages": [system, user(, assistant, user)],
 * "temperature": 0, "seed", "max_tokens"} printed without spaces, keys in this order, so equal
 * inputs give equal bytes (the cache key is their sha256). first_reply (s may be NULL) adds the
 * judge's first reply and the reminder. Returns malloc'd text or NULL (out of memory). */
char *judge_body_build(const judge_params *p, const judge_prompt *pr, judge_str first_reply,
                       size_t *len);

/* A chat-completions reply, parsed. content points into a malloc'd copy owned by the struct. */
typedef struct judge_reply {
    char   *content;
    size_t  content_len;
    int64_t prompt_tokens, completion_tokens;
    int     has_usage;
} judge_reply;

/* Parses an untrusted reply body: a JSON object (at most JUDGE_REPLY_MAX bytes) whose
 * choices[0].message.content is a string; usage.prompt_tokens / completion_tokens are read when
 * present (whole numbers in [0, 2^53]). Any other shape, an "error" member, invalid JSON or
 * invalid UTF-8 is ASSAY_EFORMAT with a message saying what was wrong (never the body itself:
 * it could be anything). */
#define JUDGE_REPLY_MAX ((size_t)8 << 20)
int  judge_reply_parse(const char *body, size_t len, judge_reply *out, assay_error *err);
void judge_reply_free(judge_reply *r); /* NULL-safe */

/* The last of "[[A]]", "[[B]]", "[[C]]" in text (a judge restates the format before its final
 * verdict, so the last one is the verdict); JUDGE_V_NONE when there is none. */
judge_verdict judge_parse_verdict(const char *text, size_t len);

/* The last "[[N]]" or "[[N.M]]" in text with 1 <= value <= 10: returns 1 and sets *score, or 0
 * when there is none (a value out of range counts as none). */
int judge_parse_score(const char *text, size_t len, double *score);

/* Outcome of a pair for B against A, from the verdicts of the orders (A,B) and (B,A). */
typedef enum judge_outcome { JUDGE_TIE = 0, JUDGE_B_WINS, JUDGE_A_WINS } judge_outcome;

/* Only agreement counts: (A,B) -> "[[B]]" and (B,A) -> "[[A]]" both prefer B, and so on; any
 * disagreement or a missing verdict is a tie. */
judge_outcome judge_pair_outcome(judge_verdict ab, judge_verdict ba);

typedef struct judge_pair_stats {
    size_t n_pairs; /* pairs with both orders judged (unparsed verdicts included, as ties) */
    size_t wins, losses, ties; /* B against A */
    double win_rate;           /* (wins + ties / 2) / n_pairs */
    double ci_lo, ci_hi;       /* percentile bootstrap over pairs */
    int    resamples;
    size_t n_both_parsed;       /* pairs whose two verdicts were both parsed */
    size_t n_consistent;        /* of those, pairs whose two orders agree (ties included) */
    double consistency;         /* n_consistent / n_both_parsed */
    size_t n_decisive;          /* parsed verdicts that are not ties */
    size_t n_first;             /* of those, verdicts for the answer shown first */
    double first_position_rate; /* n_first / n_decisive */
    size_t n_unparsed_verdicts; /* verdicts (not pairs) without a parsable verdict */
} judge_pair_stats;

/* Statistics over n pairs (ab[i], ba[i]); rates with an empty denominator are NaN. The interval
 * is boot_ci_mean over the per-pair scores (1 win, 0.5 tie, 0 loss). Returns 0, or -1 when out
 * of memory. */
int judge_pair_stats_compute(const judge_verdict *ab, const judge_verdict *ba, size_t n,
                             int resamples, uint64_t seed, judge_pair_stats *out);

#endif
