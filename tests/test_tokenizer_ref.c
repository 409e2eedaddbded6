/* tests/test_tokenizer_ref.c — tok_encode / tok_decode against the Hugging Face `tokenizers`
 * library, string for string, over the committed corpus (tests/fixtures/tok/, written by
 * tools/make_tok_reference.py). Each tokenizer stops at its first mismatch and prints the input,
 * both id lists around the first differing position, and the position.
 * TOKREF_ALL=1 keeps going and prints up to 20 mismatches per tokenizer (feedback while the
 * tokenizer is being written); the test still fails if there was any. */
#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "loader/tokenizer.h"
#include "tests/helpers.h"

/* TOKREF_DIR in the environment points elsewhere (used to test this harness itself). */
static const char *tokref_dir(void) {
    const char *d = getenv("TOKREF_DIR");
    return d && *d ? d : "tests/fixtures/tok";
}
#define TOKREF_DIR tokref_dir()

/* ---- reading the fixtures ------------------------------------------------------------------ */

/* Whole output of `gzip -dc path` (zlib is not linked), NUL-terminated; NULL on failure. */
static char *tokref_gunzip(const char *path, size_t *len) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char  *buf = malloc(cap);
    while (buf) {
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, p);
        if (r == 0)
            break;
        n += r;
    }
    int st = pclose(p);
    if (!buf || st != 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len   = n;
    return buf;
}

/* Splits buf in place at '\n'; returns the line starts (malloc'd), count in *n. */
static char **tokref_lines(char *buf, size_t len, size_t *n) {
    size_t cnt = 0;
    for (size_t i = 0; i < len; i++)
        cnt += buf[i] == '\n';
    char **v = calloc(cnt + 1, sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    char  *s = buf;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\n') {
            buf[i] = '\0';
            v[k++] = s;
            s      = buf + i + 1;
        }
    if (s < buf + len)
        v[k++] = s;
    *n = k;
    return v;
}

static int tokref_hex(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char     c = p[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

static size_t tokref_utf8_put(char *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Decodes the JSON string starting at the opening quote *p into a malloc'd buffer with an
 * explicit length (cJSON's NUL-terminated strings cannot carry U+0000). *after: past the
 * closing quote. 0 ok, -1 malformed. */
static int tokref_json_string(const char *p, char **out, size_t *out_len, const char **after) {
    if (*p != '"')
        return -1;
    p++;
    size_t cap = 64, n = 0;
    char  *o = malloc(cap);
    if (!o)
        return -1;
    for (;;) {
        if (cap - n < 8) {
            char *no = realloc(o, cap * 2);
            if (!no)
                goto fail;
            o = no;
            cap *= 2;
        }
        char c = *p++;
        if (c == '\0')
            goto fail;
        if (c == '"')
            break;
        if (c != '\\') {
            o[n++] = c;
            continue;
        }
        c = *p++;
        switch (c) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (tokref_hex(p, &cp) != 0)
                goto fail;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' &&
                tokref_hex(p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            n += tokref_utf8_put(o + n, cp);
            break;
        }
        default: goto fail;
        }
    }
    o[n]     = '\0';
    *out     = o;
    *out_len = n;
    *after   = p;
    return 0;
fail:
    free(o);
    return -1;
}

/* One reference line: {"ids":[..],"ids_nospecial":[..],"decode":"..","decode_skip":".."}. */
typedef struct tokref_rec {
    int32_t *ids, *ids_ns;
    size_t   n_ids, n_ids_ns;
    char    *dec, *dec_skip;
    size_t   dec_len, dec_skip_len;
} tokref_rec;

static void tokref_rec_free(tokref_rec *r) {
    free(r->ids);
    free(r->ids_ns);
    free(r->dec);
    free(r->dec_skip);
    memset(r, 0, sizeof *r);
}

static int tokref_ids_from(const cJSON *arr, int32_t **out, size_t *n) {
    if (!cJSON_IsArray(arr))
        return -1;
    int cnt = cJSON_GetArraySize(arr);
    *out    = malloc(sizeof(int32_t) * (size_t)(cnt > 0 ? cnt : 1));
    if (!*out)
        return -1;
    int          i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it))
            return -1;
        (*out)[i++] = (int32_t)it->valuedouble;
    }
    *n = (size_t)cnt;
    return 0;
}

static int tokref_rec_parse(const char *line, tokref_rec *r) {
    memset(r, 0, sizeof *r);
    cJSON *j = cJSON_Parse(line);
    if (!j)
        return -1;
    int rc = tokref_ids_from(cJSON_GetObjectItemCaseSensitive(j, "ids"), &r->ids, &r->n_ids);
    if (rc == 0)
        rc = tokref_ids_from(cJSON_GetObjectItemCaseSensitive(j, "ids_nospecial"), &r->ids_ns,
                             &r->n_ids_ns);
    cJSON_Delete(j);
    /* The writer emits keys in this order with no spaces; id arrays hold no quotes, so the first
     * `"decode":` is the key. */
    const char *p = rc == 0 ? strstr(line, "\"decode\":") : NULL;
    if (!p || tokref_json_string(p + 9, &r->dec, &r->dec_len, &p) != 0 ||
        strncmp(p, ",\"decode_skip\":", 15) != 0 ||
        tokref_json_string(p + 15, &r->dec_skip, &r->dec_skip_len, &p) != 0) {
        tokref_rec_free(r);
        return -1;
    }
    return 0;
}

/* ---- reporting ----------------------------------------------------------------------------- */

/* Escapes control bytes, keeps UTF-8, stops near 200 bytes on a character boundary. */
static void tokref_escape(char *o, size_t cap, const char *s, size_t len) {
    size_t n = 0, i = 0;
    o[n++] = '"';
    for (; i < len && i < 200 && n + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 196 && (c & 0xC0) != 0x80)
            break;
        if (c == '\n')
            n += (size_t)snprintf(o + n, cap - n, "\\n");
        else if (c == '\t')
            n += (size_t)snprintf(o + n, cap - n, "\\t");
        else if (c == '\r')
            n += (size_t)snprintf(o + n, cap - n, "\\r");
        else if (c == '"' || c == '\\')
            n += (size_t)snprintf(o + n, cap - n, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            n += (size_t)snprintf(o + n, cap - n, "\\x%02x", c);
        else
            o[n++] = (char)c;
    }
    o[n++] = '"';
    o[n]   = '\0';
    if (i < len)
        snprintf(o + n, cap - n, " ... (%zu bytes)", len);
}

/* Ids [pos-6, pos+6) with their indices marked, as "[..., 17:1234, 18:*99*, ...] (n=40)". */
static void tokref_ids_window(char *o, size_t cap, const int32_t *ids, size_t n, size_t pos) {
    size_t lo = pos > 6 ? pos - 6 : 0, hi = pos + 6 < n ? pos + 6 : n, k = 0;
    k += (size_t)snprintf(o + k, cap - k, "[%s", lo > 0 ? "... " : "");
    for (size_t i = lo; i < hi && k + 32 < cap; i++)
        k += (size_t)snprintf(o + k, cap - k, i == pos ? "%zu:*%d*%s" : "%zu:%d%s", i, ids[i],
                              i + 1 < hi ? ", " : "");
    snprintf(o + k, cap - k, "%s] (n=%zu)", hi < n ? " ..." : "", n);
}

/* First index where the lists differ (one may be a prefix of the other), (size_t)-1 if equal. */
static size_t tokref_first_diff(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i == na && i == nb ? (size_t)-1 : i;
}

/* ---- the check ----------------------------------------------------------------------------- */

typedef struct tokref_run {
    const char *name;
    size_t      checked, mismatches;
    size_t      by_what[4]; /* ids, ids_nospecial, decode, decode_skip */
    int         keep_going;
    char        first[4096];
} tokref_run;

static void tokref_report(tokref_run *run, size_t line, const char *what, const char *text,
                          size_t len, const char *detail) {
    char esc[1200], msg[4096];
    tokref_escape(esc, sizeof esc, text, len);
    snprintf(msg, sizeof msg, "%s: corpus line %zu: %s differs\n  input: %s\n%s", run->name,
             line + 1, what, esc, detail);
    run->by_what[strstr(what, "decode") ? (strstr(what, "=1") ? 3 : 2)
                                        : (strstr(what, "=1") ? 0 : 1)]++;
    if (run->mismatches == 0)
        snprintf(run->first, sizeof run->first, "%s", msg);
    if (run->keep_going && run->mismatches < 20)
        fprintf(stderr, "MISMATCH %s\n", msg);
    run->mismatches++;
}

static int tokref_check_ids(tokref_run *run, size_t line, const char *text, size_t len,
                            const char *what, const int32_t *want, size_t nwant, const int32_t *got,
                            size_t ngot) {
    size_t pos = tokref_first_diff(want, nwant, got, ngot);
    if (pos == (size_t)-1)
        return 0;
    char a[1024], b[1024], d[2200];
    tokref_ids_window(a, sizeof a, want, nwant, pos);
    tokref_ids_window(b, sizeof b, got, ngot, pos);
    snprintf(d, sizeof d, "  first difference at token %zu\n  hf:    %s\n  assay: %s", pos, a, b);
    tokref_report(run, line, what, text, len, d);
    return 1;
}

static int tokref_check_text(tokref_run *run, size_t line, const char *text, size_t len,
                             const char *what, const char *want, size_t nwant, const char *got,
                             size_t ngot) {
    if (nwant == ngot && memcmp(want, got, nwant) == 0)
        return 0;
    size_t pos = 0;
    while (pos < nwant && pos < ngot && want[pos] == got[pos])
        pos++;
    size_t from = pos > 20 ? pos - 20 : 0;
    char   a[1200], b[1200], d[2600];
    tokref_escape(a, sizeof a, want + from, nwant - from);
    tokref_escape(b, sizeof b, got + from, ngot - from);
    snprintf(d, sizeof d,
             "  first differing byte %zu (shown from byte %zu)\n  hf:    %s\n  assay: %s", pos,
             from, a, b);
    tokref_report(run, line, what, text, len, d);
    return 1;
}

/* Checks one corpus line; returns the number of mismatches found (0..4). */
static int tokref_check_line(tokref_run *run, const tokenizer *t, size_t line, const char *text,
                             size_t len, const tokref_rec *r) {
    int             bad = 0;
    tok_ids         got = {0};
    assay_error     err = {0};
    tok_encode_opts o   = tok_default_opts();
    o.split_special     = 1;
    o.replace_invalid   = 0;
    for (int mode = 0; mode < 2; mode++) {
        o.add_special    = mode == 0;
        const char *what = mode == 0 ? "ids (add_special=1)" : "ids (add_special=0)";
        got.n            = 0;
        if (tok_encode(t, text, len, &o, 0, &got, &err) != 0) {
            char d[1200];
            snprintf(d, sizeof d, "  tok_encode failed: %s", err.msg);
            tokref_report(run, line, what, text, len, d);
            bad++;
        } else if (tokref_check_ids(run, line, text, len, what, mode == 0 ? r->ids : r->ids_ns,
                                    mode == 0 ? r->n_ids : r->n_ids_ns, got.ids, got.n)) {
            bad++;
        }
        if (bad && !run->keep_going)
            goto done;
    }
    /* Decoding starts from the reference ids, so it is checked even where encoding differs. */
    for (int skip = 0; skip < 2; skip++) {
        char       *out     = NULL;
        size_t      out_len = 0;
        const char *what    = skip ? "decode (skip_special=1)" : "decode (skip_special=0)";
        if (tok_decode(t, r->ids, r->n_ids, skip, &out, &out_len, &err) != 0) {
            char d[1200];
            snprintf(d, sizeof d, "  tok_decode failed: %s", err.msg);
            tokref_report(run, line, what, text, len, d);
            bad++;
        } else {
            bad += tokref_check_text(run, line, text, len, what, skip ? r->dec_skip : r->dec,
                                     skip ? r->dec_skip_len : r->dec_len, out, out_len);
        }
        free(out);
        if (bad && !run->keep_going)
            goto done;
    }
done:
    tok_ids_free(&got);
    return bad;
}

static cJSON *tokref_manifest(void) {
    char mpath[600];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", TOKREF_DIR);
    FILE *f = fopen(mpath, "rb");
    cr_assert_not_null(f, "%s/manifest.json missing (run tools/make_tok_reference.py)", TOKREF_DIR);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    cJSON *m = cJSON_ParseWithLength(buf, (size_t)n);
    free(buf);
    cr_assert_not_null(m, "%s/manifest.json is not JSON", TOKREF_DIR);
    return m;
}

/* sha256 of a file through sha256sum(1); 0 ok. */
static int tokref_sha256(const char *path, char out[65]) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sha256sum '%s' 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int ok = fscanf(p, "%64s", out) == 1;
    pclose(p);
    return ok && strlen(out) == 64 ? 0 : -1;
}

/* Refuses to compare against a reference built from a different tokenizer file. A converted
 * tokenizer.json may change bytes without changing meaning: there a difference is only noted. */
static void tokref_check_hashes(const char *name, const cJSON *entry, const char *file) {
    const cJSON *h    = cJSON_GetObjectItemCaseSensitive(entry, "sha256");
    const char  *base = strrchr(file, '/');
    base              = base ? base + 1 : file;
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(h, base);
    if (!cJSON_IsString(want))
        return;
    char got[65];
    if (tokref_sha256(file, got) != 0) {
        fprintf(stderr, "tokref %s: sha256sum unavailable, file identity not checked\n", name);
        return;
    }
    const char *origin = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "origin"));
    if (origin && strcmp(origin, "converted") == 0) {
        if (strcmp(got, want->valuestring) != 0)
            fprintf(stderr,
                    "tokref %s: %s differs from the file the reference was built from "
                    "(sha256 %s, reference %s)\n",
                    name, file, got, want->valuestring);
        return;
    }
    cr_assert_str_eq(got, want->valuestring,
                     "%s: %s has sha256 %s, the reference was built from %s; rerun "
                     "tools/make_tok_reference.py --only %s",
                     name, file, got, want->valuestring, name);
}

/* Runs the whole corpus through the tokenizer `load` (a path tok_load accepts). */
static void tokref_run_one(const char *name, const cJSON *entry, const char *load) {
    const char *ref = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "ref"));
    cr_assert_not_null(ref, "manifest entry %s has no ref", name);

    char   cpath[512], rpath[512];
    size_t clen = 0, rlen = 0, nc = 0, nr = 0;
    snprintf(cpath, sizeof cpath, "%s/corpus.jsonl.gz", TOKREF_DIR);
    snprintf(rpath, sizeof rpath, "%s/%s", TOKREF_DIR, ref);
    char *cbuf = tokref_gunzip(cpath, &clen);
    cr_assert_not_null(cbuf, "%s: cannot read %s (gzip -dc failed)", name, cpath);
    char *rbuf = tokref_gunzip(rpath, &rlen);
    cr_assert_not_null(rbuf, "%s: cannot read %s (gzip -dc failed)", name, rpath);
    char **cl = tokref_lines(cbuf, clen, &nc);
    char **rl = tokref_lines(rbuf, rlen, &nr);
    cr_assert(cl && rl);
    cr_assert_eq(nc, nr, "%s: corpus has %zu lines, %s has %zu; regenerate both", name, nc, rpath,
                 nr);

    assay_error err = {0};
    tokenizer  *t   = tok_load(load, &err);
    cr_assert_not_null(t, "%s: tok_load(%s) failed: %s", name, load, err.msg);

    const char *ka      = getenv("TOKREF_ALL");
    tokref_run  run     = {.name = name, .keep_going = ka && *ka && *ka != '0'};
    size_t      skipped = 0;
    for (size_t i = 0; i < nc; i++) {
        if (strcmp(rl[i], "null") == 0) {
            skipped++;
            continue;
        }
        char       *text = NULL;
        size_t      len  = 0;
        const char *after;
        tokref_rec  r;
        cr_assert_eq(tokref_json_string(cl[i], &text, &len, &after), 0,
                     "%s: corpus line %zu is not a JSON string", cpath, i + 1);
        cr_assert_eq(tokref_rec_parse(rl[i], &r), 0, "%s: line %zu is malformed", rpath, i + 1);
        tokref_check_line(&run, t, i, text, len, &r);
        run.checked++;
        tokref_rec_free(&r);
        free(text);
        if (run.mismatches && !run.keep_going)
            break;
    }
    fprintf(stderr,
            "tokref %s (%s): %zu strings checked, %zu skipped, %zu mismatches (ids %zu, "
            "ids_nospecial %zu, decode %zu, decode_skip %zu)%s\n",
            name, tok_kind(t), run.checked, skipped, run.mismatches, run.by_what[0], run.by_what[1],
            run.by_what[2], run.by_what[3],
            run.mismatches && !run.keep_going ? " (stopped at the first)" : "");
    tok_free(t);
    free(cl);
    free(rl);
    free(cbuf);
    free(rbuf);
    cr_assert_eq(run.mismatches, 0, "%s", run.first);
    cr_assert_gt(run.checked, 0, "%s: nothing was checked", name);
}

static const cJSON *tokref_entry(const cJSON *m, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "tokenizers"),
                                            name);
}

/* A tokenizer from ../shared (`rel` under it, `files` the names hashed in the manifest); skips
 * visibly when ../shared is absent. */
static void tokref_shared(const char *name, const char *rel, const char *const *files) {
    SHARED_OR_SKIP(path, rel); /* before anything is allocated: a skip must not leak */
    cJSON       *m = tokref_manifest();
    const cJSON *e = tokref_entry(m, name);
    cr_assert_not_null(e,
                       "no reference for %s in %s/manifest.json (run "
                       "tools/make_tok_reference.py --only %s)",
                       name, TOKREF_DIR, name);
    for (; files && *files; files++) {
        char f[1200];
        snprintf(f, sizeof f, "%s/%s", path, *files);
        tokref_check_hashes(name, e, str_ends_with(path, ".json") ? path : f);
    }
    tokref_run_one(name, e, path);
    cJSON_Delete(m);
}

static const char *const tokref_json_only[] = {"tokenizer.json", NULL};

Test(tokenizer_ref, llama2_matches_hf_tokenizers) {
    tokref_shared("llama2", "tokenizers/llama2/tokenizer.json", tokref_json_only);
}

Test(tokenizer_ref, llama3_matches_hf_tokenizers) {
    tokref_shared("llama3", "tokenizers/llama3/tokenizer.json", tokref_json_only);
}

Test(tokenizer_ref, qwen3_matches_hf_tokenizers) {
    tokref_shared("qwen3", "tokenizers/qwen3/tokenizer.json", tokref_json_only);
}

Test(tokenizer_ref, gemma3_matches_hf_tokenizers) {
    tokref_shared("gemma3", "tokenizers/gemma3/tokenizer.json", tokref_json_only);
}

Test(tokenizer_ref, gpt2_from_encoder_json_and_vocab_bpe_matches_hf_tokenizers) {
    static const char *const files[] = {"encoder.json", "vocab.bpe", NULL};
    tokref_shared("gpt2", "tokenizers/gpt2", files);
}

/* The committed tiny-model tokenizers (tests/fixtures/models/<m>/tokenizer.json, references
 * named tiny_<m>): these run on a fresh clone without ../shared. */
static const char *const tokref_tiny_named[] = {"gpt2",         "llama",   "llama3", "llama_hd",
                                                "llama_linear", "mistral", "qwen2",  NULL};

static void tokref_tiny(const char *model) {
    char name[256], path[512];
    snprintf(name, sizeof name, "tiny_%s", model);
    snprintf(path, sizeof path, "tests/fixtures/models/%s/tokenizer.json", model);
    cJSON       *m = tokref_manifest();
    const cJSON *e = tokref_entry(m, name);
    cr_assert_not_null(e,
                       "no reference for %s in %s/manifest.json (run "
                       "tools/make_tok_reference.py --only %s)",
                       name, TOKREF_DIR, name);
    cr_assert_eq(access(path, R_OK), 0, "%s missing but %s has a reference for it", path,
                 TOKREF_DIR);
    tokref_check_hashes(name, e, path);
    tokref_run_one(name, e, path);
    cJSON_Delete(m);
}

Test(tokenizer_ref, tiny_gpt2_matches_hf_tokenizers) { tokref_tiny("gpt2"); }
Test(tokenizer_ref, tiny_llama_matches_hf_tokenizers) { tokref_tiny("llama"); }
Test(tokenizer_ref, tiny_llama3_matches_hf_tokenizers) { tokref_tiny("llama3"); }
Test(tokenizer_ref, tiny_llama_hd_matches_hf_tokenizers) { tokref_tiny("llama_hd"); }
Test(tokenizer_ref, tiny_llama_linear_matches_hf_tokenizers) { tokref_tiny("llama_linear"); }
Test(tokenizer_ref, tiny_mistral_matches_hf_tokenizers) { tokref_tiny("mistral"); }
Test(tokenizer_ref, tiny_qwen2_matches_hf_tokenizers) { tokref_tiny("qwen2"); }

/* Any other committed tiny tokenizer in the manifest (a model added after the named tests). */
Test(tokenizer_ref, every_other_committed_tokenizer_matches_hf_tokenizers) {
    cJSON       *m = tokref_manifest();
    const cJSON *e;
    int          n = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(m, "tokenizers")) {
        const char *origin = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "origin"));
        const char *load   = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "load"));
        if (!origin || strcmp(origin, "committed") != 0 || !load)
            continue;
        int named = 0;
        for (const char *const *t = tokref_tiny_named; *t; t++)
            named |= strncmp(e->string, "tiny_", 5) == 0 && strcmp(e->string + 5, *t) == 0;
        if (named)
            continue;
        tokref_check_hashes(e->string, e, load);
        tokref_run_one(e->string, e, load);
        n++;
    }
    cJSON_Delete(m);
    if (n == 0) {
        fprintf(stderr, "SKIP: no committed tokenizer without a named test in %s/manifest.json\n",
                TOKREF_DIR);
        cr_skip_test("every committed tokenizer has its own test");
    }
}

/* stories260K's tokenizer lives in its GGUF; `assay convert` writes the tokenizer.json that the
 * reference was built from (tools/make_tok_reference.py --assay build/<dir>/assay). */
Test(tokenizer_ref, stories260k_converted_from_gguf_matches_hf_tokenizers) {
    SHARED_OR_SKIP(gguf, "models/stories260K/stories260K.gguf");
    cJSON       *m = tokref_manifest();
    const cJSON *e = tokref_entry(m, "stories260K");
    if (!e) {
        cJSON_Delete(m);
        fprintf(stderr, "SKIP: no stories260K reference yet (TODO: needs `assay convert`; run "
                        "tools/make_tok_reference.py --assay build/<dir>/assay)\n");
        cr_skip_test("no stories260K reference");
    }
    char dir[256], out[512], tj[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/hf", dir);
    char *log = NULL;
    int   rc  = test_run(&log, "convert %s %s", gguf, out);
    cr_assert_eq(rc, 0, "assay convert %s %s failed (rc %d): %s", gguf, out, rc, log ? log : "");
    free(log);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", out);
    tokref_check_hashes("stories260K", e, tj);
    tokref_run_one("stories260K", e, tj);
    cJSON_Delete(m);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}
