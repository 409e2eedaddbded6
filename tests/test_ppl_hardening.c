/* tests/test_ppl_hardening.c — `assay ppl` at the edges a first user meets: windows exactly as
 * long as the model's positions on every tiny fixture (GPT-2's are a learned table of 128), the
 * default window (lm-eval's max_length: the model's max positions), a --ctx above it, weights
 * poisoned with NaN (exit 1 naming the window), output that states its units, and a config.json
 * whose repeated key must keep its last value. */
#include <cJSON.h>
#include <math.h>

#include "core/util.h"
#include "loader/config.h"
#include "loader/safetensors.h"
#include "tests/helpers.h"

static const char *const fixtures[] = {"llama",   "llama3", "llama_hd", "llama_linear",
                                       "mistral", "qwen2",  "gpt2"};
#define N_FIXTURES (sizeof fixtures / sizeof fixtures[0])

static void write_text(const char *path, const char *s) {
    assay_error err;
    cr_assert_eq(file_write_atomic(path, s, strlen(s), &err), 0, "%s", err.msg);
}

/* The JSON document a --json run printed (stderr's note and summary lines hold no '{'). */
static cJSON *parse_output(const char *out) {
    const char *b = strchr(out, '{');
    cr_assert(b, "no JSON in output:\n%s", out);
    cJSON *j = cJSON_ParseWithOpts(b, NULL, 0);
    cr_assert(j, "bad JSON in output:\n%s", out);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "missing number '%s'", k);
    return v->valuedouble;
}

static int fixture_max_pos(const char *dir) {
    model_config cfg;
    assay_error  err;
    cr_assert_eq(config_load_dir(&cfg, dir, &err), 0, "%s", err.msg);
    return cfg.max_pos;
}

/* A document of about `words` words: several times any fixture's positions in tokens. */
static void write_long_doc(const char *path, int words) {
    static const char *const w[] = {"the",   "lighthouse", "keeper", "watched", "ships",
                                    "sail",  "past",       "every",  "night,",  "counting",
                                    "waves", "and",        "stars."};
    size_t                   cap = (size_t)words * 12 + 1, n = 0;
    char                    *s = malloc(cap);
    cr_assert_not_null(s);
    for (int i = 0; i < words; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s ", w[(i * 7) % 13]);
    write_text(path, s);
    free(s);
}

/* Rolling with the default window (which must be the model's max positions) on a document
 * several windows long: every request is max positions + 1 tokens, of which the model reads all
 * but the last. */
static void check_rolling_at_max_positions(const char *fixture, const char *doc) {
    char model[128], *out = NULL;
    snprintf(model, sizeof model, "tests/fixtures/models/%s", fixture);
    int max_pos = fixture_max_pos(model);
    int rc      = test_run(&out, "ppl %s %s --mode rolling --json", model, doc);
    cr_assert_eq(rc, 0, "%s rolling: exit %d\n%s", fixture, rc, out);
    cJSON *j = parse_output(out);
    cr_expect_eq(num(j, "ctx"), max_pos, "%s: default rolling window", fixture);
    cr_expect_eq(num(j, "model_max_positions"), max_pos);
    cr_expect(strstr(cJSON_GetObjectItem(j, "ctx_from")->valuestring, "max positions"));
    cr_expect_gt(num(j, "windows"), 2, "%s: the document must outrun the window", fixture);
    cr_expect(isfinite(num(cJSON_GetObjectItem(j, "total"), "ppl")), "%s", fixture);
    cJSON_Delete(j);
    free(out);
}

/* Sliding asks for one position more than the model has: lowered to the max, with a note. */
static void check_sliding_at_max_positions(const char *fixture, const char *doc) {
    char model[128], *out = NULL;
    snprintf(model, sizeof model, "tests/fixtures/models/%s", fixture);
    int max_pos = fixture_max_pos(model);
    int rc      = test_run(&out, "ppl %s %s --ctx %d --json", model, doc, max_pos + 1);
    cr_assert_eq(rc, 0, "%s sliding: exit %d\n%s", fixture, rc, out);
    char note[160];
    snprintf(note, sizeof note, "--ctx %d is more than the model's %d positions", max_pos + 1,
             max_pos);
    cr_expect(strstr(out, note) && strstr(out, "config.json"), "%s: no note:\n%s", fixture, out);
    cJSON *j = parse_output(out);
    cr_expect_eq(num(j, "ctx"), max_pos, "%s: sliding window", fixture);
    cr_expect_gt(num(j, "windows"), 2, "%s", fixture);
    cJSON_Delete(j);
    free(out);
}

Test(ppl_hardening, windows_at_the_models_max_positions_on_every_fixture) {
    char dir[64], doc[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(doc, sizeof doc, "%s/long.txt", dir);
    write_long_doc(doc, 3000);
    for (size_t i = 0; i < N_FIXTURES; i++) {
        check_sliding_at_max_positions(fixtures[i], doc);
        if (strcmp(fixtures[i], "gpt2") != 0) /* below, on its own */
            check_rolling_at_max_positions(fixtures[i], doc);
    }
    unlink(doc);
    rmdir(dir);
}

/* GPT-2's positions are a learned table: a rolling request of 128 + 1 tokens must not feed its
 * last token (a target only) at position 128. Needs model_score to never feed the last token
 * of a request (runtime/model.c, the "requests" branch). */
Test(ppl_hardening, rolling_windows_of_max_positions_fit_learned_positions) {
    char dir[64], doc[128];
    test_tmpdir(dir, sizeof dir);
    snprintf(doc, sizeof doc, "%s/long.txt", dir);
    write_long_doc(doc, 1000);
    check_rolling_at_max_positions("gpt2", doc);
    unlink(doc);
    rmdir(dir);
}

/* The text output says where the window came from, that the NLL is in nats, and explains the
 * Hugging Face docs' figure instead of printing bare "recipe arithmetic". */
Test(ppl_hardening, text_output_states_the_window_and_units) {
    char dir[64], doc[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(doc, sizeof doc, "%s/doc.txt", dir);
    write_long_doc(doc, 200);
    int rc = test_run(&out, "ppl tests/fixtures/models/gpt2 %s --stride 100", doc);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "ctx 128 (the model's max positions)"), "%s", out);
    cr_expect(strstr(out, "nll (nats)"), "%s", out);
    cr_expect(strstr(out, "Hugging Face docs"), "%s", out);
    cr_expect(!strstr(out, "recipe arithmetic"), "%s", out);
    free(out);
    rc = test_run(&out, "ppl tests/fixtures/models/gpt2 %s --json", doc);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *j = parse_output(out);
    cr_expect(num(cJSON_GetObjectItem(j, "total"), "nll_nats") > 0);
    cJSON_Delete(j);
    free(out);
    unlink(doc);
    rmdir(dir);
}

/* Copies a fixture's files into dir, the weights through the safetensors writer with the first
 * element of `poison` (if any) set to NaN. */
static void copy_fixture(const char *name, const char *dir, const char *poison) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp tests/fixtures/models/%s/*.json %s/", name, dir);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    char src[256], dst[256];
    snprintf(src, sizeof src, "tests/fixtures/models/%s/model.safetensors", name);
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    assay_error err;
    st_file    *f = st_open(src, &err);
    cr_assert_not_null(f, "%s", err.msg);
    int              n       = st_file_count(f);
    st_write_tensor *w       = calloc((size_t)n, sizeof *w);
    float           *patched = NULL;
    cr_assert_not_null(w);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_file_tensor(f, i);
        w[i] =
            (st_write_tensor){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
        if (poison && !strcmp(t->name, poison)) {
            cr_assert_eq(t->dtype, DTYPE_F32, "the fixtures are float32");
            patched = malloc(t->nbytes);
            cr_assert_not_null(patched);
            memcpy(patched, t->data, t->nbytes);
            patched[0] = NAN;
            w[i].data  = patched;
        }
    }
    cr_assert(!poison || patched, "no tensor %s", poison);
    cr_assert_eq(st_write(dst, w, n, NULL, &err), 0, "%s", err.msg);
    free(patched);
    free(w);
    st_close(f);
}

static void remove_dir(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

/* NaN weights give NaN log-probs: ppl must not print "nan" and exit 0. It is a failed check
 * (exit 1), not bad input, and the message names the document and the window. */
Test(ppl_hardening, nan_weights_fail_the_check_naming_document_and_window) {
    static const struct {
        const char *fixture, *tensor;
    } cases[] = {{"llama", "model.layers.1.mlp.down_proj.weight"},
                 {"gpt2", "transformer.h.0.ln_1.weight"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char dir[64], doc[128], *out = NULL;
        test_tmpdir(dir, sizeof dir);
        copy_fixture(cases[c].fixture, dir, cases[c].tensor);
        snprintf(doc, sizeof doc, "%s/doc.txt", dir);
        write_long_doc(doc, 40);
        for (int rolling = 0; rolling < 2; rolling++) {
            /* windows well inside the positions: this is about the NaN, not the boundary */
            int rc = test_run(&out, "ppl %s %s --ctx 64%s --json", dir, doc,
                              rolling ? " --mode rolling" : "");
            cr_expect_eq(rc, 1, "%s: exit %d\n%s", cases[c].fixture, rc, out);
            cr_expect(strstr(out, "doc.txt: window 1 (tokens 0..") && strstr(out, "NaN"), "%s",
                      out);
            cr_expect(!strstr(out, "\"ppl\""), "a result was printed:\n%s", out);
            free(out);
        }
        remove_dir(dir);
    }
}

/* config.json is read as Python reads it: a repeated key keeps its last value, so a stale
 * "num_hidden_layers": 99 before the real one changes nothing. */
Test(ppl_hardening, config_repeated_key_keeps_the_last_value) {
    char dir[64], cfg_path[128], doc[128], *out = NULL, *text = NULL;
    test_tmpdir(dir, sizeof dir);
    copy_fixture("llama", dir, NULL);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    size_t      len;
    assay_error err;
    cr_assert_eq(file_read_all(cfg_path, &text, &len, &err), 0, "%s", err.msg);
    char *brace = strchr(text, '{');
    cr_assert_not_null(brace);
    char *patched = malloc(len + 64);
    cr_assert_not_null(patched);
    snprintf(patched, len + 64, "{\"num_hidden_layers\": 99, \"rope_theta\": 1.0,%s", brace + 1);
    write_text(cfg_path, patched);
    snprintf(doc, sizeof doc, "%s/doc.txt", dir);
    write_long_doc(doc, 60);

    int rc = test_run(&out, "ppl %s %s --json", dir, doc);
    cr_assert_eq(rc, 0, "exit %d\n%s", rc, out);
    cJSON *mine = parse_output(out);
    free(out);
    rc = test_run(&out, "ppl tests/fixtures/models/llama %s --json", doc);
    cr_assert_eq(rc, 0, "exit %d\n%s", rc, out);
    cJSON *orig = parse_output(out);
    free(out);
    cr_expect_eq(num(cJSON_GetObjectItem(mine, "total"), "nll_nats"),
                 num(cJSON_GetObjectItem(orig, "total"), "nll_nats"),
                 "the repeated keys changed the model");
    cJSON_Delete(mine);
    cJSON_Delete(orig);
    free(patched);
    free(text);
    remove_dir(dir);
}

/* lm-eval's max_length is the model's max positions, not 2048: a RoPE model configured for 16384
 * positions gets 16384-token windows by default, in both modes. A document of ~9,000 tokens is
 * then one window, longer than the runtime's default KV cache (8192 tokens): ppl sizes the
 * cache for its longest window. */
Test(ppl_hardening, default_window_is_the_max_positions_beyond_2048) {
    char dir[64], cfg_path[128], doc[128], *out = NULL, *text = NULL;
    test_tmpdir(dir, sizeof dir);
    copy_fixture("llama", dir, NULL);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    size_t      len;
    assay_error err;
    cr_assert_eq(file_read_all(cfg_path, &text, &len, &err), 0, "%s", err.msg);
    const char *key = "\"max_position_embeddings\": 512";
    char       *at = strstr(text, key), *patched = malloc(len + 8);
    cr_assert(at && patched);
    snprintf(patched, len + 8, "%.*s\"max_position_embeddings\": 16384%s", (int)(at - text), text,
             at + strlen(key));
    write_text(cfg_path, patched);
    free(patched);
    free(text);
    cr_assert_eq(fixture_max_pos(dir), 16384);
    snprintf(doc, sizeof doc, "%s/doc.txt", dir);
    for (int rolling = 0; rolling < 2; rolling++) {
        write_long_doc(doc, rolling ? 2700 : 60);
        int rc = test_run(&out, "ppl %s %s --json%s", dir, doc, rolling ? " --mode rolling" : "");
        cr_assert_eq(rc, 0, "exit %d\n%s", rc, out);
        cJSON *j = parse_output(out);
        cr_expect_eq(num(j, "ctx"), 16384, "%s", out);
        if (rolling) {
            cr_expect_gt(num(cJSON_GetObjectItem(j, "total"), "tokens"), 8192, "%s", out);
            cr_expect_eq(num(j, "windows"), 1, "%s", out);
        }
        cJSON_Delete(j);
        free(out);
    }
    remove_dir(dir);
}
