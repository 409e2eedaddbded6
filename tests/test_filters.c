/* Filters of generation tasks against tests/fixtures/filters/reference.json, which
 * tools/make_filters_reference.py wrote by running lm-eval's RegexFilter (gsm8k's two filters and
 * others), Python's str methods and json, sklearn's classification_report and numpy's percentile
 * on 360 generated responses. Strings compare byte for byte. */
#include <math.h>
#include <stdint.h>
#include <utf8proc.h>

#include "scoring/filters.h"
#include "tests/helpers.h"

#define REF "tests/fixtures/filters/reference.json"

static cJSON *ref_get(const cJSON *ref, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(ref, key);
    cr_assert(v, "%s: no \"%s\"", REF, key);
    return v;
}

static const char *str_at(const cJSON *arr, int i) {
    cJSON *v = cJSON_GetArrayItem(arr, i);
    cr_assert(cJSON_IsString(v), "%s: item %d is not a string", REF, i);
    return v->valuestring;
}

static void expect_out(const flt_out *o, const char *want, const char *what, int i) {
    cr_expect(o->n == strlen(want) && !memcmp(o->s, want, o->n) && o->s[o->n] == '\0',
              "%s, response %d: got \"%s\", want \"%s\"", what, i, o->s, want);
}

/* ---- regex ------------------------------------------------------------------------------- */

Test(filters, regex_filter_matches_lm_eval_on_every_reference_response) {
    cJSON *ref   = test_read_json(REF);
    cJSON *resps = ref_get(ref, "responses");
    int    nr = cJSON_GetArraySize(resps), cases = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, ref_get(ref, "regex")) {
        const char *pat = cJSON_GetObjectItem(c, "pattern")->valuestring;
        const char *fb  = cJSON_GetObjectItem(c, "fallback")->valuestring;
        int         gs  = cJSON_GetObjectItem(c, "group_select")->valueint;
        assay_error err;
        flt_regex  *r = flt_regex_compile(pat, gs, fb, &err);
        cr_assert(r, "%s: %s", pat, err.msg);
        cJSON *outs = cJSON_GetObjectItem(c, "outputs");
        cr_assert_eq(cJSON_GetArraySize(outs), nr);
        for (int i = 0; i < nr; i++) {
            const char *s = str_at(resps, i);
            flt_out     o;
            cr_assert_eq(flt_regex_apply(r, s, strlen(s), &o, &err), 0, "%s", err.msg);
            char what[300];
            snprintf(what, sizeof what, "/%s/ group %d", pat, gs);
            expect_out(&o, str_at(outs, i), what, i);
            free(o.s);
            cases++;
        }
        flt_regex_free(r);
    }
    cr_expect_gt(cases, 8000);
    cJSON_Delete(ref);
}

static void expect_regex(const flt_regex *r, const char *in, const char *want) {
    flt_out     o;
    assay_error err;
    cr_assert_eq(flt_regex_apply(r, in, strlen(in), &o, &err), 0, "%s", err.msg);
    cr_expect_str_eq(o.s, want, "on \"%s\"", in);
    free(o.s);
}

Test(filters, gsm8k_strict_and_flexible_extract_read_tricky_answers_as_lm_eval) {
    /* each expectation is also a case of the reference above (lm-eval's own output) */
    assay_error err;
    flt_regex  *strict = flt_regex_compile("#### (\\-?[0-9\\.\\,]+)", 0, "[invalid]", &err);
    flt_regex  *flex   = flt_regex_compile("(-?[$0-9.,]{2,})|(-?[0-9]+)", -1, "[invalid]", &err);
    cr_assert(strict && flex);
    expect_regex(strict, "#### -3", "-3");
    expect_regex(strict, "#### 1,000", "1,000");
    expect_regex(strict, "#### 5\n#### 6", "5");
    expect_regex(strict, "####72", "[invalid]");
    expect_regex(strict, "#### ", "[invalid]");
    expect_regex(strict, "#### \xef\xbc\x95", "[invalid]"); /* fullwidth 5 is not [0-9] */
    expect_regex(flex, "The total is $1,000.", "$1,000.");
    expect_regex(flex, "-7 degrees, then 12 more, so 5", "5"); /* the 2nd group's match */
    expect_regex(flex, "x = 10, y = -20, z = 3.14159", "3.14159");
    expect_regex(flex, "42.", "42.");
    expect_regex(flex, "no number here", "[invalid]");
    expect_regex(flex, "$", "[invalid]");
    expect_regex(flex, "$$", "$$");
    expect_regex(flex, "\xd9\xa3\xd9\xa4 and \xd9\xa1\xd9\xa2", "[invalid]"); /* Arabic digits */
    flt_regex_free(strict);
    flt_regex_free(flex);
}

Test(filters, findall_yields_empty_matches_where_python_does) {
    /* re.findall(r"\d*", "a12b") == ['', '12', '', '']; (r"|a", "a") == ['', 'a', ''] */
    static const char *want_d[] = {"", "12", "", ""};
    for (int k = 0; k < 4; k++) {
        assay_error err;
        flt_regex  *r = flt_regex_compile("\\d*", k, "END", &err);
        expect_regex(r, "a12b", want_d[k]);
        flt_regex_free(r);
    }
    static const char *want_a[] = {"", "a", "", "F"};
    for (int k = 0; k < 4; k++) {
        assay_error err;
        flt_regex  *r = flt_regex_compile("|a", k, "F", &err);
        expect_regex(r, "a", want_a[k]);
        flt_regex_free(r);
    }
}

Test(filters, regex_groups_select_first_nonempty_and_strip_like_lm_eval) {
    assay_error err;
    /* a tuple whose groups are all empty gives the fallback, stripped; no match: as given */
    flt_regex *r = flt_regex_compile("(x)?(y)?", 0, " fb ", &err);
    expect_regex(r, "abc", "fb");
    flt_regex_free(r);
    r = flt_regex_compile("q(x)", 0, " fb ", &err);
    expect_regex(r, "abc", " fb ");
    expect_regex(r, "qx", "x");
    flt_regex_free(r);
    r = flt_regex_compile("(a)|(b)", 0, "-", &err);
    expect_regex(r, "  b", "b");
    flt_regex_free(r);
    r = flt_regex_compile(":(.*)", 0, "-", &err); /* the selected match is str.strip()ped */
    expect_regex(r, "answer:\t 42 \xe2\x80\x83\n", "42");
    flt_regex_free(r);
    r = flt_regex_compile("\\d", -3, "none", &err); /* -3 of two matches: IndexError in Python */
    expect_regex(r, "1 2", "none");
    expect_regex(r, "1 2 3", "1");
    flt_regex_free(r);
}

Test(filters, python_only_syntax_reads_as_python_reads_it) {
    assay_error err;
    flt_regex *r = flt_regex_compile("\\s+", 0, "-", &err); /* Python's \s has U+001C..1F, U+0085 */
    expect_regex(r,
                 "a\x1f\xc2\x85"
                 "b",
                 ""); /* the match is all whitespace: stripped to "" */
    flt_regex_free(r);
    r = flt_regex_compile("a\\s(b)", 0, "-", &err);
    expect_regex(r,
                 "a\x1c"
                 "b",
                 "b");
    flt_regex_free(r);
    r = flt_regex_compile("(\\w+)\\Z", 0, "-", &err); /* \Z is the very end, not before "\n" */
    expect_regex(r, "word\n", "-");
    expect_regex(r, "word", "word");
    flt_regex_free(r);
    r = flt_regex_compile("\\u03a3(\\U0001F600)", 0, "-", &err);
    expect_regex(r, "\xce\xa3\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
    flt_regex_free(r);
    r = flt_regex_compile("x{,2}y", 0, "-", &err);
    expect_regex(r, "xxxy", "xxy");
    flt_regex_free(r);
}

Test(filters, invalid_patterns_are_refused_with_the_pattern_and_reason) {
    static const char *bad[] = {"(unclosed", "\\K", "\\p{L}", "(*LIMIT_MATCH=1)a", "a\\", "\\x4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assay_error err;
        flt_regex  *r = flt_regex_compile(bad[i], 0, "x", &err);
        cr_expect_null(r, "\"%s\" compiled", bad[i]);
        cr_expect_eq(err.code, ASSAY_EINVAL);
        cr_expect(strstr(err.msg, bad[i]) != NULL, "message names the pattern: %s", err.msg);
        flt_regex_free(r);
    }
}

Test(filters, regex_on_invalid_utf8_does_not_fail) {
    assay_error err;
    flt_regex  *r = flt_regex_compile("\\d+", -1, "-", &err);
    expect_regex(r,
                 "\xff"
                 "12\xc3(34\x80",
                 "34");
    flt_out o; /* an empty response may come as NULL */
    cr_assert_eq(flt_regex_apply(r, NULL, 0, &o, &err), 0, "%s", err.msg);
    cr_expect_str_eq(o.s, "-");
    free(o.s);
    flt_regex_free(r);
}

/* ---- string filters ---------------------------------------------------------------------- */

Test(filters, strip_lower_and_first_line_equal_python_on_every_reference_response) {
    cJSON *ref   = test_read_json(REF);
    cJSON *resps = ref_get(ref, "responses"), *strip = ref_get(ref, "strip");
    cJSON *lower = ref_get(ref, "lower"), *first = ref_get(ref, "first_line");
    int    nr = cJSON_GetArraySize(resps);
    for (int i = 0; i < nr; i++) {
        const char *s = str_at(resps, i);
        flt_out     o;
        cr_assert_eq(flt_strip(s, strlen(s), &o), 0);
        expect_out(&o, str_at(strip, i), "strip", i);
        free(o.s);
        cr_assert_eq(flt_lowercase(s, strlen(s), &o), 0);
        expect_out(&o, str_at(lower, i), "lower", i);
        free(o.s);
        cr_assert_eq(flt_first_line(s, strlen(s), &o), 0);
        expect_out(&o, str_at(first, i), "first line", i);
        free(o.s);
    }
    cJSON_Delete(ref);
}

Test(filters, lowercase_maps_every_code_point_as_python_does) {
    /* the reference lists each code point whose str.lower() differs from itself; every other
     * code point must stay as it is */
    cJSON *ref = test_read_json(REF);
    cJSON *tab = ref_get(ref, "lower_table");
    int    nt = cJSON_GetArraySize(tab), t = 0, wrong = 0;
    for (int32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c < 0xE000)
            continue;
        char in[4], want[16];
        int  k = (int)utf8proc_encode_char(c, (utf8proc_uint8_t *)in);
        memcpy(want, in, (size_t)k);
        want[k]     = '\0';
        cJSON *pair = t < nt ? cJSON_GetArrayItem(tab, t) : NULL;
        if (pair && cJSON_GetArrayItem(pair, 0)->valueint == c) {
            snprintf(want, sizeof want, "%s", cJSON_GetArrayItem(pair, 1)->valuestring);
            t++;
        }
        flt_out o;
        cr_assert_eq(flt_lowercase(in, (size_t)k, &o), 0);
        if (strcmp(o.s, want) && wrong++ < 20)
            cr_expect_fail("U+%04X lowers to \"%s\", Python gives \"%s\"", (unsigned)c, o.s, want);
        free(o.s);
    }
    cr_expect_eq(t, nt, "every mapping in the table was visited");
    cr_expect_eq(wrong, 0, "%d code points lower differently from Python", wrong);
    cJSON_Delete(ref);
}

Test(filters, capital_sigma_lowers_as_python_in_every_reference_context) {
    cJSON *ref = test_read_json(REF);
    cJSON *c;
    int    n = 0;
    cJSON_ArrayForEach(c, ref_get(ref, "sigma")) {
        const char *in = str_at(c, 0);
        flt_out     o;
        cr_assert_eq(flt_lowercase(in, strlen(in), &o), 0);
        expect_out(&o, str_at(c, 1), "sigma", n++);
        free(o.s);
    }
    cr_expect_gt(n, 1900);
    cJSON_Delete(ref);
}

/* A map of the code points in a list of [first, last] ranges (0x110000 bytes, caller frees). */
static unsigned char *range_map(const cJSON *ranges) {
    unsigned char *m = calloc(0x110000, 1);
    const cJSON   *r;
    cJSON_ArrayForEach(r, ranges) {
        for (int c = cJSON_GetArrayItem(r, 0)->valueint; c <= cJSON_GetArrayItem(r, 1)->valueint;
             c++)
            m[c] = 1;
    }
    return m;
}

/* lowercase(pre + x + post) has ς at byte `at` (SIZE_MAX: at the end) */
static int sigma_final(int32_t x, const char *pre, const char *post, size_t at) {
    char   in[32];
    size_t k = strlen(pre);
    memcpy(in, pre, k);
    k += (size_t)utf8proc_encode_char(x, (utf8proc_uint8_t *)in + k);
    k += (size_t)snprintf(in + k, sizeof in - k, "%s", post);
    flt_out o;
    cr_assert_eq(flt_lowercase(in, k, &o), 0);
    size_t pos = at == SIZE_MAX ? o.n - 2 : at;
    int    fin = o.n >= pos + 2 && !memcmp(o.s + pos, "\xcf\x82", 2);
    free(o.s);
    return fin;
}

Test(filters, sigma_context_reads_cased_and_case_ignorable_as_python_at_every_code_point) {
    /* x + Σ, A + x + Σ and A + Σ + x, against Python's answers for every assigned code point */
    cJSON         *ref   = test_read_json(REF);
    cJSON         *pr    = ref_get(ref, "sigma_props");
    unsigned char *ign   = range_map(ref_get(pr, "ignorable"));
    unsigned char *cased = range_map(ref_get(pr, "cased_not_ignorable"));
    unsigned char *un    = range_map(ref_get(pr, "unassigned"));
    int            wrong = 0;
    for (int32_t c = 0; c < 0x110000; c++) {
        if (un[c])
            continue;
        int want_ign = ign[c], want_cased = cased[c];
        int got_ign =
            sigma_final(c, "A", "\xce\xa3", SIZE_MAX) && sigma_final(c, "A\xce\xa3", "", 1);
        int got_cased = sigma_final(c, "", "\xce\xa3", SIZE_MAX);
        if ((got_ign != want_ign || got_cased != want_cased) && wrong++ < 10)
            cr_expect_fail("U+%04X: ignorable %d (Python %d), cased %d (Python %d)", (unsigned)c,
                           got_ign, want_ign, got_cased, want_cased);
    }
    cr_expect_eq(wrong, 0, "%d code points differ", wrong);
    free(ign);
    free(cased);
    free(un);
    cJSON_Delete(ref);
}

Test(filters, final_sigma_and_dotted_capital_i_lower_as_python) {
    static const char *cases[][2] = {
        {"\xce\xa3", "\xcf\x83"},                                   /* Σ → σ */
        {"\xce\x91\xce\xa3", "\xce\xb1\xcf\x82"},                   /* ΑΣ → ας */
        {"\xce\x91\xce\xa3\xce\x91", "\xce\xb1\xcf\x83\xce\xb1"},   /* ΑΣΑ → ασα */
        {"\xce\x91\xce\xa3.", "\xce\xb1\xcf\x82."},                 /* ΑΣ. → ας. */
        {"\xce\x91\xce\xa3'\xce\x91", "\xce\xb1\xcf\x83'\xce\xb1"}, /* ' is case-ignorable */
        {"\xc4\xb0", "i\xcc\x87"},                                  /* İ → i + U+0307 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        flt_out o;
        cr_assert_eq(flt_lowercase(cases[i][0], strlen(cases[i][0]), &o), 0);
        cr_expect_str_eq(o.s, cases[i][1], "case %zu", i);
        free(o.s);
    }
}

Test(filters, strip_keeps_bytes_that_are_not_utf8_and_removes_python_whitespace_only) {
    flt_out o;
    /* U+200B (zero width space) is not whitespace to Python; U+3000 is */
    const char *s = "\xe3\x80\x80\xe2\x80\x8b x \xff\xe3\x80\x80";
    cr_assert_eq(flt_strip(s, strlen(s), &o), 0);
    cr_expect_str_eq(o.s, "\xe2\x80\x8b x \xff");
    free(o.s);
    cr_assert_eq(flt_strip("\xe3\x80", 2, &o), 0); /* a truncated code point is not space */
    cr_expect_eq(o.n, 2);
    free(o.s);
}

/* ---- labels ------------------------------------------------------------------------------ */

Test(filters, label_extraction_follows_the_contract_on_every_reference_response) {
    cJSON *ref   = test_read_json(REF);
    cJSON *resps = ref_get(ref, "responses");
    int    nr    = cJSON_GetArraySize(resps);
    cJSON *c;
    cJSON_ArrayForEach(c, ref_get(ref, "labels")) {
        cJSON *ls = cJSON_GetObjectItem(c, "labels"), *outs = cJSON_GetObjectItem(c, "outputs");
        int    nl = cJSON_GetArraySize(ls);
        const char *labels[16];
        size_t      lens[16];
        cr_assert_leq(nl, 16);
        for (int l = 0; l < nl; l++)
            labels[l] = str_at(ls, l), lens[l] = strlen(labels[l]);
        for (int i = 0; i < nr; i++) {
            const char *s    = str_at(resps, i);
            int         want = cJSON_GetArrayItem(outs, i)->valueint;
            int         got  = flt_extract_label(s, strlen(s), labels, lens, (size_t)nl);
            cr_expect_eq(got, want, "labels[0]=%s, response %d \"%s\": %d, want %d", labels[0], i,
                         s, got, want);
        }
    }
    cJSON_Delete(ref);
}

Test(filters, label_at_the_start_wins_and_ties_go_to_the_longest) {
    const char *labels[] = {"no", "not", "yes", ""};
    size_t      lens[]   = {2, 3, 3, 0};
    const char *s        = "  Not sure, yes.";
    cr_expect_eq(flt_extract_label(s, strlen(s), labels, lens, 4), 1);
    s = "I say YES, no";
    cr_expect_eq(flt_extract_label(s, strlen(s), labels, lens, 4), 2);
    s = "maybe";
    cr_expect_eq(flt_extract_label(s, strlen(s), labels, lens, 4), -1); /* "" never matches */
}

/* ---- JSON -------------------------------------------------------------------------------- */

Test(filters, json_check_equals_python_json_on_every_reference_response) {
    cJSON *ref   = test_read_json(REF);
    cJSON *resps = ref_get(ref, "responses");
    int    nr = cJSON_GetArraySize(resps), n_parse = 0, n_ok = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, ref_get(ref, "json")) {
        cJSON *sj = cJSON_GetObjectItem(c, "schema"), *outs = cJSON_GetObjectItem(c, "outputs");
        flt_schema *sc = NULL;
        assay_error err;
        if (cJSON_IsString(sj)) {
            sc = flt_schema_parse(sj->valuestring, strlen(sj->valuestring), "ref", &err);
            cr_assert(sc, "%s", err.msg);
        }
        for (int i = 0; i < nr; i++) {
            const char    *s = str_at(resps, i);
            cJSON         *w = cJSON_GetArrayItem(outs, i);
            flt_json_check jc;
            cr_assert_eq(flt_json_check_response(sc, s, strlen(s), &jc), 0);
            int wp = cJSON_GetArrayItem(w, 0)->valueint, wr = cJSON_GetArrayItem(w, 1)->valueint;
            cr_expect(jc.parses == wp && jc.has_required == wr,
                      "schema %s, response %d \"%s\": (%d, %d), want (%d, %d) [%s]",
                      sc ? sj->valuestring : "none", i, s, jc.parses, jc.has_required, wp, wr,
                      jc.why);
            n_parse += wp, n_ok += wr;
        }
        flt_schema_free(sc);
    }
    cr_expect_gt(n_parse, 100);
    cr_expect_gt(n_ok, 50);
    cJSON_Delete(ref);
}

static flt_json_check json_check(const char *schema, const char *resp) {
    assay_error    err;
    flt_schema    *sc = flt_schema_parse(schema, strlen(schema), "s.json", &err);
    flt_json_check jc;
    cr_assert(sc, "%s", err.msg);
    cr_assert_eq(flt_json_check_response(sc, resp, strlen(resp), &jc), 0);
    flt_schema_free(sc);
    return jc;
}

Test(filters, json_check_says_why_a_response_fails) {
    const char    *sc = "{\"required\": {\"answer\": \"number\", \"why\": \"string\"}}";
    flt_json_check jc = json_check(sc, "```json\n{\"answer\": 1, \"why\": \"x\"}\n```");
    cr_expect(jc.parses && jc.has_required, "%s", jc.why);
    jc = json_check(sc, "{\"answer\": \"1\", \"why\": \"x\"}");
    cr_expect(jc.parses && !jc.has_required);
    cr_expect_str_eq(jc.why, "answer: expected number");
    jc = json_check(sc, "{\"answer\": 1}");
    cr_expect_str_eq(jc.why, "missing key \"why\"");
    jc = json_check(sc, "[1]");
    cr_expect_str_eq(jc.why, "not a JSON object");
    jc = json_check(sc, "{\"answer\": 01}");
    cr_expect(!jc.parses);
    cr_expect(strstr(jc.why, "not JSON: ") == jc.why, "%s", jc.why);
    jc = json_check(sc, "{\"answer\": NaN, \"why\": \"\"}"); /* not RFC 8259 JSON */
    cr_expect(!jc.parses);
}

Test(filters, json_nested_too_deeply_is_not_json_and_does_not_crash) {
    size_t n = 100000;
    char  *s = malloc(n + 1);
    memset(s, '[', n);
    s[n] = '\0';
    flt_json_check jc;
    cr_assert_eq(flt_json_check_response(NULL, s, n, &jc), 0);
    cr_expect(!jc.parses);
    cr_expect(strstr(jc.why, "nested too deeply"), "%s", jc.why);
    free(s);
}

Test(filters, schemas_of_other_forms_are_refused_naming_the_source) {
    static const char *bad[] = {"[]",
                                "{\"required\": {\"a\": \"float\"}}",
                                "{\"required\": {\"a\": \"string\"}, \"x\": 1}",
                                "{\"type\": \"array\"}",
                                "{\"type\": \"object\", \"additionalProperties\": false}",
                                "{\"type\": \"object\", \"required\": [1]}",
                                "{\"properties\": {}}",
                                "not json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assay_error err;
        flt_schema *s = flt_schema_parse(bad[i], strlen(bad[i]), "task.yaml:schema", &err);
        cr_expect_null(s, "%s was accepted", bad[i]);
        cr_expect_eq(err.code, ASSAY_EINVAL);
        cr_expect(strstr(err.msg, "task.yaml:schema") == err.msg, "%s", err.msg);
        flt_schema_free(s);
    }
}

/* ---- classification report --------------------------------------------------------------- */

static int *int_array(const cJSON *a, int *n) {
    *n     = cJSON_GetArraySize(a);
    int *v = malloc(sizeof *v * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++)
        v[i] = cJSON_GetArrayItem(a, i)->valueint;
    return v;
}

/* sklearn averages with numpy (pairwise sums past 8 terms): 4 ulp covers the order of sums */
static void expect_close(double got, double want, const char *what) {
    cr_expect(fabs(got - want) <= 4 * 0x1p-52 * fmax(1.0, fabs(want)), "%s: %.17g, want %.17g",
              what, got, want);
}

static void expect_stats(const flt_class_stats *s, const cJSON *w, const char *what) {
    expect_close(s->precision, cJSON_GetArrayItem(w, 0)->valuedouble, what);
    expect_close(s->recall, cJSON_GetArrayItem(w, 1)->valuedouble, what);
    expect_close(s->f1, cJSON_GetArrayItem(w, 2)->valuedouble, what);
}

Test(filters, classification_report_equals_sklearn_with_zero_division_0) {
    cJSON *ref = test_read_json(REF);
    cJSON *c;
    cJSON_ArrayForEach(c, ref_get(ref, "class_report")) {
        int              k    = cJSON_GetObjectItem(c, "k")->valueint, n, n2;
        int             *gold = int_array(cJSON_GetObjectItem(c, "gold"), &n);
        int             *pred = int_array(cJSON_GetObjectItem(c, "pred"), &n2);
        flt_class_report r;
        cr_assert_eq(flt_class_report_compute(pred, gold, (size_t)n, (size_t)k, &r), 0);
        char what[64];
        for (int l = 0; l < k; l++) {
            cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "per_class"), l);
            snprintf(what, sizeof what, "k=%d class %d", k, l);
            expect_stats(&r.per_class[l], w, what);
            cr_expect_eq(r.per_class[l].support, (size_t)cJSON_GetArrayItem(w, 3)->valueint);
            cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "confusion"), l);
            for (int p = 0; p <= k; p++)
                cr_expect_eq(r.confusion[(size_t)l * (size_t)(k + 1) + (size_t)p],
                             (size_t)cJSON_GetArrayItem(row, p)->valueint, "%s, pred %d", what, p);
        }
        snprintf(what, sizeof what, "k=%d macro", k);
        expect_stats(&r.macro, cJSON_GetObjectItem(c, "macro"), what);
        snprintf(what, sizeof what, "k=%d micro", k);
        expect_stats(&r.micro, cJSON_GetObjectItem(c, "micro"), what);
        snprintf(what, sizeof what, "k=%d weighted", k);
        expect_stats(&r.weighted, cJSON_GetObjectItem(c, "weighted"), what);
        expect_close(r.accuracy, cJSON_GetObjectItem(c, "accuracy")->valuedouble, "accuracy");
        size_t unk = 0;
        for (int i = 0; i < n; i++)
            unk += pred[i] < 0;
        cr_expect_eq(r.n_unknown, unk);
        flt_class_report_free(&r);
        free(gold);
        free(pred);
    }
    cJSON_Delete(ref);
}

Test(filters, classification_report_refuses_labels_out_of_range) {
    int              gold[] = {0, 1}, pred_bad[] = {0, 2}, pred_neg[] = {-2, 0};
    flt_class_report r;
    cr_expect_eq(flt_class_report_compute(pred_bad, gold, 2, 2, &r), -1);
    cr_expect_eq(flt_class_report_compute(pred_neg, gold, 2, 2, &r), -1);
    cr_expect_eq(flt_class_report_compute(gold, pred_bad, 2, 2, &r), -1); /* gold 2 */
    cr_expect_eq(flt_class_report_compute(gold, gold, 2, 0, &r), -1);
    flt_class_report_free(&r);
}

/* ---- lengths ----------------------------------------------------------------------------- */

Test(filters, length_distribution_equals_numpy_percentile_linear) {
    cJSON *ref = test_read_json(REF);
    cJSON *c;
    cJSON_ArrayForEach(c, ref_get(ref, "dist")) {
        cJSON  *xs = cJSON_GetObjectItem(c, "x");
        int     n  = cJSON_GetArraySize(xs);
        double *x  = malloc(sizeof *x * (size_t)n);
        for (int i = 0; i < n; i++)
            x[i] = cJSON_GetArrayItem(xs, i)->valuedouble;
        flt_dist d;
        cr_assert_eq(flt_dist_compute(x, (size_t)n, &d), 0);
        /* quantiles follow numpy's formula to the bit; the mean is a plain sum against numpy's
         * pairwise one (integers here are exact either way) */
        cr_expect_eq(d.p50, cJSON_GetObjectItem(c, "p50")->valuedouble, "n=%d p50 %.17g", n, d.p50);
        cr_expect_eq(d.p95, cJSON_GetObjectItem(c, "p95")->valuedouble, "n=%d p95 %.17g", n, d.p95);
        cr_expect_eq(d.min, cJSON_GetObjectItem(c, "min")->valuedouble);
        cr_expect_eq(d.max, cJSON_GetObjectItem(c, "max")->valuedouble);
        expect_close(d.mean, cJSON_GetObjectItem(c, "mean")->valuedouble, "mean");
        cr_expect_eq(d.n, (size_t)n);
        free(x);
    }
    cJSON_Delete(ref);
    flt_dist d;
    cr_assert_eq(flt_dist_compute(NULL, 0, &d), 0);
    cr_expect(isnan(d.mean) && isnan(d.p50) && isnan(d.p95) && d.n == 0);
}
