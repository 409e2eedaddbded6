/* tests/test_chat_template.c — chat templates rendered byte for byte as transformers renders them
 * (fixtures from tools/make_chat_template_reference.py), plus errors, caps and model directories.
 */
#include <string.h>

#include "helpers.h"
#include "loader/chat_template.h"

#define FIXTURES "tests/fixtures/chat_templates/"

/* Renders `tpl` over the fixture's messages; returns the status, output in *out (malloc'd). */
static int render_case(const char *tpl, const cJSON *messages, const char *bos, const char *eos,
                       int agp, char **out, assay_error *err) {
    size_t        n    = (size_t)cJSON_GetArraySize(messages);
    chat_message *msgs = calloc(n ? n : 1, sizeof *msgs);
    size_t        i    = 0;
    const cJSON  *m;
    cJSON_ArrayForEach(m, messages) {
        msgs[i].role        = cJSON_GetObjectItem(m, "role")->valuestring;
        msgs[i].content     = cJSON_GetObjectItem(m, "content")->valuestring;
        msgs[i].content_len = strlen(msgs[i].content);
        i++;
    }
    size_t         len = 0;
    int            rc  = -1;
    chat_template *t   = chat_template_parse(tpl, strlen(tpl), "fixture", err);
    *out               = NULL;
    if (t) {
        chat_vars v = {bos, eos, agp};
        rc          = chat_template_render(t, msgs, n, &v, out, &len, err);
        if (!rc && strlen(*out) != len)
            rc = -2;
    } else
        rc = err->code;
    chat_template_free(t);
    free(msgs);
    return rc;
}

/* Checks one fixture case; returns 1 when it matches, else prints why and returns 0. */
static int check_case(const char *label, const char *tpl, const cJSON *messages, const char *bos,
                      const char *eos, const cJSON *c) {
    int          agp  = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
    const cJSON *want = cJSON_GetObjectItem(c, "output");
    const cJSON *werr = cJSON_GetObjectItem(c, "error");
    const char  *wtyp = cJSON_GetStringValue(cJSON_GetObjectItem(c, "error_type"));
    char        *got  = NULL;
    assay_error  err  = {0};
    int          rc   = render_case(tpl, messages, bos, eos, agp, &got, &err);
    int          ok   = 1;
    if (want) {
        if (rc != 0 || strcmp(got, want->valuestring) != 0) {
            fprintf(stderr, "MISMATCH %s agp=%d\n  want: %s\n  got:  %s\n", label, agp,
                    want->valuestring, rc ? err.msg : got);
            ok = 0;
        }
    } else {
        /* the template raised: we must fail too, and raise_exception's message must be carried */
        if (rc == 0) {
            fprintf(stderr, "NO ERROR %s agp=%d: want %s: %s\n  got: %s\n", label, agp, wtyp,
                    werr->valuestring, got);
            ok = 0;
        } else if (wtyp && strcmp(wtyp, "TemplateError") == 0 &&
                   !strstr(err.msg, werr->valuestring)) {
            fprintf(stderr, "WRONG ERROR %s: want '%s', got '%s'\n", label, werr->valuestring,
                    err.msg);
            ok = 0;
        }
    }
    free(got);
    return ok;
}

Test(chat_template, renders_every_reference_template_as_transformers_does) {
    cJSON       *root = test_read_json(FIXTURES "cases.json");
    const cJSON *tpls = cJSON_GetObjectItem(root, "templates"), *c;
    int          bad = 0, n = 0, errors = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const cJSON *t = cJSON_GetArrayItem(tpls, cJSON_GetObjectItem(c, "template")->valueint);
        char         label[256];
        snprintf(label, sizeof label, "%s / %s", cJSON_GetObjectItem(t, "name")->valuestring,
                 cJSON_GetObjectItem(c, "conversation")->valuestring);
        errors += cJSON_GetObjectItem(c, "error") != NULL;
        bad += !check_case(label, cJSON_GetObjectItem(t, "template")->valuestring,
                           cJSON_GetObjectItem(c, "messages"),
                           cJSON_GetObjectItem(t, "bos_token")->valuestring,
                           cJSON_GetObjectItem(t, "eos_token")->valuestring, c);
        n++;
    }
    cJSON_Delete(root);
    cr_assert(n >= 300 && errors > 0, "fixture too small: %d cases, %d errors", n, errors);
    cr_assert_eq(bad, 0, "%d of %d cases differ from transformers", bad, n);
}

Test(chat_template, renders_the_expression_language_as_jinja_does) {
    cJSON       *root = test_read_json(FIXTURES "expr.json");
    const cJSON *msgs = cJSON_GetObjectItem(root, "messages"), *c;
    const char  *bos  = cJSON_GetObjectItem(root, "bos_token")->valuestring;
    const char  *eos  = cJSON_GetObjectItem(root, "eos_token")->valuestring;
    int          bad = 0, n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const char *tpl = cJSON_GetObjectItem(c, "template")->valuestring;
        bad += !check_case(tpl, tpl, msgs, bos, eos, c);
        n++;
    }
    cJSON_Delete(root);
    cr_assert(n >= 100, "fixture too small: %d cases", n);
    cr_assert_eq(bad, 0, "%d of %d expression cases differ from jinja", bad, n);
}

/* Parses and renders `tpl` with one user message; returns the status and the message. */
static int try_template(const char *tpl, char **out, assay_error *err) {
    chat_message   m = {"user", "hi", 2};
    chat_vars      v = {"<s>", "</s>", 1};
    size_t         len;
    chat_template *t = chat_template_parse(tpl, strlen(tpl), "t.jinja", err);
    *out             = NULL;
    if (!t)
        return err->code;
    int rc = chat_template_render(t, &m, 1, &v, out, &len, err);
    chat_template_free(t);
    return rc;
}

Test(chat_template, unsupported_constructs_fail_at_parse_time_naming_the_construct_and_place) {
    static const struct {
        const char *tpl, *want;
    } cases[] = {
        {"ab\n  {% include 'other.jinja' %}", "t.jinja:2:6: '{% include %}' is not supported"},
        {"{% extends 'base' %}", "t.jinja:1:4: '{% extends %}' is not supported"},
        {"{% for m in messages recursive %}{% endfor %}", "t.jinja:1:22: recursive for loops"},
        {"x\n{{ messages | center(20) }}", "t.jinja:2:15: filter 'center' is not supported"},
        {"{% if x is escaped %}{% endif %}", "t.jinja:1:12: test 'escaped' is not supported"},
        {"{{ f(*args) }}", "t.jinja:1:6: '*args'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assay_error    err = {0};
        chat_template *t = chat_template_parse(cases[i].tpl, strlen(cases[i].tpl), "t.jinja", &err);
        cr_expect_null(t, "%s parsed", cases[i].tpl);
        cr_expect_eq(err.code, ASSAY_EUNSUPPORTED, "%s: %s", cases[i].tpl, err.msg);
        cr_expect(strstr(err.msg, cases[i].want), "%s: got '%s', want '%s'", cases[i].tpl, err.msg,
                  cases[i].want);
        chat_template_free(t);
    }
}

Test(chat_template, syntax_errors_say_what_was_expected_and_where) {
    static const struct {
        const char *tpl, *want;
    } cases[] = {
        {"{% if true %}open", "the 'if' tag at 1:4 expects 'endif'"},
        {"{% for x in y %}{% endif %}", "t.jinja:1:20: unexpected 'endif'"},
        {"{{ 'unterminated }}", "t.jinja:1:4: unterminated string literal"},
        {"{{ a + }}", "t.jinja:1:8: expected an expression, got '}}'"},
        {"{# no end", "t.jinja:1:1: missing end of comment tag"},
        {"{{ x ]", "unexpected ']'"},
        {"{% endfor %}", "unexpected 'endfor' (no block is open)"},
        {"{% frobnicate %}", "unknown tag 'frobnicate'"},
        {"{{ 99999999999999999999 }}", "integer literal larger than 2^63-1"},
        {"{% if x %}{% break %}{% endif %}", "t.jinja:1:14: 'break' outside a for loop"},
        {"{% for x in y %}{% macro f() %}{% continue %}{% endmacro %}{% endfor %}",
         "'continue' outside a for loop"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assay_error    err = {0};
        chat_template *t = chat_template_parse(cases[i].tpl, strlen(cases[i].tpl), "t.jinja", &err);
        cr_expect_null(t, "%s parsed", cases[i].tpl);
        cr_expect_eq(err.code, ASSAY_EFORMAT, "%s: %s", cases[i].tpl, err.msg);
        cr_expect(strstr(err.msg, cases[i].want), "%s: got '%s', want '%s'", cases[i].tpl, err.msg,
                  cases[i].want);
        chat_template_free(t);
    }
}

Test(chat_template, render_errors_name_the_line_and_what_failed) {
    static const struct {
        const char *tpl, *want;
    } cases[] = {
        {"\n\n  {{ raise_exception('roles must alternate') }}",
         "t.jinja:3:6: template error: roles must alternate"},
        {"{{ messages[0].missing.deeper }}", "'dict object' has no attribute 'missing'"},
        {"{{ nope.x }}", "'nope' is undefined"},
        {"{{ 'a' + 1 }}", "can only concatenate str (not \"int\") to str"},
        {"{{ 1 // 0 }}", "integer division or modulo by zero"},
        {"{% set x = 1 %}{% set x.y = 2 %}", "cannot assign attribute on non-namespace object 'x'"},
        {"{{ messages.append(1) }}", "access to attribute 'append' of 'list' object is unsafe."},
        {"{{ range(200000)|length }}", "range() of more than 100000 items"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char       *out = NULL;
        assay_error err = {0};
        int         rc  = try_template(cases[i].tpl, &out, &err);
        cr_expect_eq(rc, ASSAY_EINVAL, "%s: rc %d, out '%s'", cases[i].tpl, rc, out ? out : "");
        cr_expect(strstr(err.msg, cases[i].want), "%s: got '%s', want '%s'", cases[i].tpl, err.msg,
                  cases[i].want);
        free(out);
    }
}

Test(chat_template, printing_a_generator_is_refused_rather_than_guessed) {
    /* Jinja2 prints "<generator object ... at 0x...>": an address nothing can reproduce */
    char       *out = NULL;
    assay_error err = {0};
    int         rc  = try_template("{{ messages|selectattr('role', 'eq', 'user') }}", &out, &err);
    cr_expect_eq(rc, ASSAY_EUNSUPPORTED, "%s", err.msg);
    cr_expect(strstr(err.msg, "printing a generator"), "%s", err.msg);
    free(out);
    /* but it is true, iterable and listable, as in Jinja2 */
    rc = try_template("{% if messages|selectattr('role', 'eq', 'tool') %}T{% endif %}"
                      "{{ messages|selectattr('role', 'eq', 'user')|list|length }}",
                      &out, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_expect_str_eq(out, "T1");
    free(out);
}

Test(chat_template, hostile_templates_stop_at_the_caps) {
    static const struct {
        const char *tpl, *want;
    } cases[] = {
        /* 10^10 iterations, over the 10^7 cap */
        {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
         "more than 10000000 loop iterations"},
        /* 100 MB of output, over 64 MiB */
        {"{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output exceeds 64 MiB"},
        /* a string grown quadratically: values over 256 MiB */
        {"{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ 'x' * 100 "
         "%}{% endfor %}",
         "more than 256 MiB of values"},
        {"{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "macro calls nested deeper than 64"},
        {"{{ 'x' * 100000000 }}", "repetition result over 64 MiB"},
        /* lists nested 100,000 deep, then compared, printed, serialized */
        {"{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% "
         "endfor %}"
         "{{ ns.x == ns.x }}",
         "comparing values nested deeper than 200 levels"},
        {"{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% "
         "endfor %}"
         "{{ ns.x < ns.x }}",
         "comparing values nested deeper than 200 levels"},
        {"{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% "
         "endfor %}{{ ns.x }}",
         "value nested deeper than 200 levels"},
        {"{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = {'k': ns.x} %}{% "
         "endfor %}"
         "{{ ns.x|tojson }}",
         "tojson: value nested deeper than 200 levels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char       *out = NULL;
        assay_error err = {0};
        int         rc  = try_template(cases[i].tpl, &out, &err);
        cr_expect_neq(rc, 0, "%s rendered", cases[i].tpl);
        cr_expect(strstr(err.msg, cases[i].want), "%s: got '%s', want '%s'", cases[i].tpl, err.msg,
                  cases[i].want);
        free(out);
    }
    /* nesting: 10,000 parentheses and 10,000 nested ifs are refused at parse time, not a stack
     * overflow */
    size_t n    = 10000;
    char  *deep = malloc(n * 16 + 16);
    strcpy(deep, "{{ ");
    for (size_t i = 0; i < n; i++)
        strcat(deep + 3 + i, "(");
    cr_assert_not_null(deep);
    for (int pass = 0; pass < 2; pass++) {
        size_t k = 0;
        if (pass == 0) {
            k += (size_t)sprintf(deep + k, "{{ ");
            for (size_t i = 0; i < n; i++)
                deep[k++] = '(';
            deep[k++] = '1';
            for (size_t i = 0; i < n; i++)
                deep[k++] = ')';
            k += (size_t)sprintf(deep + k, " }}");
        } else {
            for (size_t i = 0; i < n; i++)
                k += (size_t)sprintf(deep + k, "{%%if 1%%}");
        }
        deep[k]            = 0;
        assay_error    err = {0};
        chat_template *t   = chat_template_parse(deep, k, "deep", &err);
        cr_expect_null(t);
        cr_expect_eq(err.code, ASSAY_EUNSUPPORTED, "%s", err.msg);
        cr_expect(strstr(err.msg, "nesting deeper than 200 levels"), "%s", err.msg);
        chat_template_free(t);
    }
    free(deep);
}

Test(chat_template, content_with_nul_bytes_and_invalid_utf8_is_carried_through) {
    chat_message   m[2] = {{"user", "a\0b\xff", 4}, {"assistant", "", 0}};
    chat_vars      v    = {NULL, NULL, 0};
    assay_error    err  = {0};
    const char    *tpl = "{% for m in messages %}[{{ m.content }}|{{ m.content|length }}]{% endfor "
                         "%}{{ bos_token is defined }}";
    chat_template *t   = chat_template_parse(tpl, strlen(tpl), "t", &err);
    cr_assert_not_null(t, "%s", err.msg);
    char  *out;
    size_t len;
    cr_assert_eq(chat_template_render(t, m, 2, &v, &out, &len, &err), 0, "%s", err.msg);
    /* NUL and 0xFF each count as one character, as Python's surrogateescape would */
    static const char want[] = "[a\0b\xff|4][|0]False";
    cr_assert_eq(len, sizeof want - 1);
    cr_assert(memcmp(out, want, len) == 0);
    free(out);
    chat_template_free(t);
}

/* The fixture case's expected output for a named template and conversation. */
static char *fixture_output(const char *name, const char *conversation, int agp) {
    cJSON       *root = test_read_json(FIXTURES "cases.json");
    const cJSON *tpls = cJSON_GetObjectItem(root, "templates"), *c;
    char        *want = NULL;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const cJSON *t = cJSON_GetArrayItem(tpls, cJSON_GetObjectItem(c, "template")->valueint);
        if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, name) &&
            !strcmp(cJSON_GetObjectItem(c, "conversation")->valuestring, conversation) &&
            cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")) == agp)
            want = strdup(cJSON_GetObjectItem(c, "output")->valuestring);
    }
    cJSON_Delete(root);
    cr_assert_not_null(want, "no fixture case %s / %s", name, conversation);
    return want;
}

static void check_dir_renders_fixture(const char *dir, const char *name, const char *bos,
                                      const char *eos) {
    chat_template *t;
    chat_vars      v;
    assay_error    err = {0};
    cr_assert_eq(chat_template_load_dir(dir, &t, &v, &err), 0, "%s", err.msg);
    cr_assert_not_null(t, "%s: no template found", dir);
    cr_expect_str_eq(v.bos_token, bos);
    cr_expect_str_eq(v.eos_token, eos);
    chat_message m[2]       = {{"system", "You are a helpful assistant.", 28},
                               {"user", "What is 2+2?", 12}};
    v.add_generation_prompt = 1;
    char  *out;
    size_t len;
    cr_assert_eq(chat_template_render(t, m, 2, &v, &out, &len, &err), 0, "%s", err.msg);
    char *want = fixture_output(name, "system+user", 1);
    cr_expect_str_eq(out, want, "%s", dir);
    free(want);
    free(out);
    chat_template_free(t);
}

Test(chat_template, loads_the_tiny_fixtures_templates_and_reports_none_where_absent) {
    check_dir_renders_fixture("tests/fixtures/models/llama3", "models/llama3", "<|begin_of_text|>",
                              "<|end_of_text|>");
    check_dir_renders_fixture("tests/fixtures/models/qwen2", "models/qwen2", "", "<|endoftext|>");
    chat_template *t = (chat_template *)1;
    chat_vars      v;
    assay_error    err = {0};
    cr_assert_eq(chat_template_load_dir("tests/fixtures/models/llama", &t, &v, &err), 0, "%s",
                 err.msg);
    cr_expect_null(t);
}

Test(chat_template, loads_the_shared_tokenizers_templates) {
    SHARED_OR_SKIP(cfg, "tokenizers/gemma3/tokenizer_config.json");
    check_dir_renders_fixture("../shared/tokenizers/gemma3", "shared/gemma3", "<bos>",
                              "<end_of_turn>");
    check_dir_renders_fixture("../shared/tokenizers/qwen3", "shared/qwen3", "", "<|im_end|>");
    check_dir_renders_fixture("../shared/tokenizers/llama3", "shared/llama3", "<|begin_of_text|>",
                              "<|end_of_text|>");
    chat_template *t = (chat_template *)1;
    chat_vars      v;
    assay_error    err = {0};
    cr_assert_eq(chat_template_load_dir("../shared/tokenizers/llama2", &t, &v, &err), 0, "%s",
                 err.msg);
    cr_expect_null(t, "llama2's tokenizer_config.json has no chat_template");
}

Test(chat_template, reads_named_template_lists_jinja_files_and_token_objects) {
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    test_write_file(
        dir, "a/tokenizer_config.json",
        "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\","
        " \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"tools\"},"
        " {\"name\": \"default\", \"template\": \"{{ bos_token }}{{ messages[0].content }}{{ "
        "eos_token }}\"}]}");
    test_write_file(dir, "b/tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    test_write_file(dir, "b/chat_template.jinja", "[{{ messages[0].role }}]\n");
    test_write_file(dir, "c/tokenizer_config.json", "{\"chat_template\": 5}");
    test_write_file(dir, "d/tokenizer_config.json", "{\"chat_template\": \"{% if %}\"}");
    test_write_file(dir, "e/tokenizer_config.json", "not json");
    /* the .jinja file wins over the config's entry; tokens from special_tokens_map.json */
    test_write_file(dir, "f/tokenizer_config.json",
                    "{\"chat_template\": \"config\", \"eos_token\": null}");
    test_write_file(dir, "f/chat_template.jinja", "file {{ eos_token }}");
    test_write_file(dir, "f/special_tokens_map.json", "{\"eos_token\": {\"content\": \"<eos>\"}}");
    test_write_file(dir, "g/chat_template.jinja", "{{ bos_token }}only a template file");
    static const struct {
        const char *sub, *want;
        int         rc;
    } cases[] = {
        {"a", "<B>hi<E>", 0},
        {"b", "[user]", 0}, /* the file's trailing newline is dropped, as Jinja2 does */
        {"c", "chat_template must be a string", ASSAY_EFORMAT},
        {"d", "tokenizer_config.json (chat_template):1:7: expected an expression", ASSAY_EFORMAT},
        {"e", "tokenizer_config.json: not a JSON object", ASSAY_EFORMAT},
        {"f", "file <eos>", 0},
        {"g", "only a template file", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].sub);
        chat_template *t;
        chat_vars      v;
        assay_error    err = {0};
        int            rc  = chat_template_load_dir(path, &t, &v, &err);
        cr_expect_eq(rc, cases[i].rc, "%s: %s", cases[i].sub, err.msg);
        if (rc) {
            cr_expect(strstr(err.msg, cases[i].want), "%s: got '%s'", cases[i].sub, err.msg);
            cr_expect_null(t);
            continue;
        }
        chat_message m = {"user", "hi", 2};
        char        *out;
        size_t       len;
        cr_assert_eq(chat_template_render(t, &m, 1, &v, &out, &len, &err), 0, "%s", err.msg);
        cr_expect_str_eq(out, cases[i].want);
        free(out);
        chat_template_free(t);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
