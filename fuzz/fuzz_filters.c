/* fuzz/fuzz_filters.c — generation-task filters on arbitrary bytes: gsm8k's two regexes and a few
 * others (empty matches, groups, multiline), the string filters, label extraction and the JSON
 * check with a fixed schema; the first line of the input is also compiled as a pattern, which
 * drives the Python → PCRE2 rewrite. Outputs must be NUL-terminated at their length, stripped
 * text must be a slice of the input, and a check must never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scoring/filters.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *pattern;
    int         group_select;
} PATTERNS[] = {{"#### (\\-?[0-9\\.\\,]+)", 0},
                {"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1},
                {"\\d*", -3},
                {"(?m)^(.*)$", -1},
                {"(a)|(b)|(x)?", 2},
                {"\\s+(\\w+)\\Z", 0}};
#define N_PATTERNS (sizeof PATTERNS / sizeof PATTERNS[0])

static void check_out(const flt_out *o) {
    if (!o->s || o->s[o->n] != '\0')
        abort();
    free(o->s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static flt_regex  *re[N_PATTERNS];
    static flt_schema *schema;
    static int         ready;
    assay_error        err;
    if (!ready) {
        for (size_t i = 0; i < N_PATTERNS; i++)
            if (!(re[i] = flt_regex_compile(PATTERNS[i].pattern, PATTERNS[i].group_select,
                                            "[invalid]", &err)))
                abort();
        const char *sc = "{\"type\": \"object\", \"properties\": {\"answer\": {\"type\": "
                         "[\"number\", \"null\"]}}, \"required\": [\"answer\", \"why\"]}";
        if (!(schema = flt_schema_parse(sc, strlen(sc), "fuzz", &err)))
            abort();
        ready = 1;
    }
    const char *s = (const char *)data;
    flt_out     o;
    for (size_t i = 0; i < N_PATTERNS; i++)
        if (flt_regex_apply(re[i], s, size, &o, &err) == 0)
            check_out(&o);
    if (flt_strip(s, size, &o) == 0) {
        if (o.n > size || (o.n && !memmem(s, size, o.s, o.n)))
            abort();
        check_out(&o);
    }
    if (flt_lowercase(s, size, &o) == 0)
        check_out(&o);
    if (flt_first_line(s, size, &o) == 0)
        check_out(&o);

    static const char *const labels[] = {"positive", "negative", "neutral",
                                         "\xc4\xb0", "\xce\xa3", ""};
    static const size_t      lens[]   = {8, 8, 7, 2, 2, 0};
    int                      l        = flt_extract_label(s, size, labels, lens, 6);
    if (l < -1 || l >= 5)
        abort();

    flt_json_check jc;
    if (flt_json_check_response(schema, s, size, &jc) == 0 && (jc.has_required && !jc.parses))
        abort();
    if (flt_json_check_response(NULL, s, size, &jc) == 0 && jc.has_required != jc.parses)
        abort();

    /* the first line as a pattern (Python syntax), applied to the rest */
    size_t nl = 0;
    while (nl < size && nl < 256 && data[nl] != '\n' && data[nl] != 0)
        nl++;
    char pat[257];
    memcpy(pat, data, nl);
    pat[nl]      = '\0';
    flt_regex *r = flt_regex_compile(pat, (int)(size % 5) - 2, "fb", &err);
    if (r) {
        if (flt_regex_apply(r, s + nl, size - nl, &o, &err) == 0)
            check_out(&o);
        flt_regex_free(r);
    }
    return 0;
}
