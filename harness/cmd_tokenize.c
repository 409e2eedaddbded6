/* harness/cmd_tokenize.c — `assay tokenize`: encode text (or decode ids) with a model's
 * tokenizer, to inspect what the scorer will see. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/commands.h"
#include "loader/tokenizer.h"
#include "runtime/util.h"

static const char usage[] =
    "usage: assay tokenize MODEL_OR_TOKENIZER [options] [TEXT | --file F]\n"
    "  MODEL_OR_TOKENIZER  a model directory (tokenizer.json, or GPT-2 encoder.json + vocab.bpe)\n"
    "                      or a tokenizer.json file; without TEXT or --file, stdin is read\n"
    "  --ids               print the ids, space-separated, on one line\n"
    "  --json              print {\"ids\":[...],\"tokens\":[...],\"offsets\":[[s,e],...]} "
    "(offsets:\n"
    "                      byte spans of the input)\n"
    "  --no-special        do not add the post-processor's special tokens (BOS/EOS); with "
    "--decode,\n"
    "                      leave special tokens out of the text\n"
    "  --plain-special     special-token text in the input is plain text, not special tokens\n"
    "  --replace-invalid   invalid UTF-8 becomes U+FFFD (default: an error naming the byte)\n"
    "  --decode            the input is ids (separated by spaces, commas or newlines); print text\n"
    "  --file F            read the input from F\n"
    "Default output: one \"id<TAB>piece\" line per token (control characters escaped).\n"
    "Exit codes: 0 ok, 2 bad input or usage, 3 I/O failure.\n";

static int read_stream(FILE *f, char **out, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char  *b = malloc(cap);
    if (!b)
        return -1;
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return -1;
            }
            b = nb;
            cap *= 2;
        }
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

static void print_piece(const char *p) {
    for (const unsigned char *s = (const unsigned char *)p; *s; s++) {
        if (*s == '\n')
            fputs("\\n", stdout);
        else if (*s == '\t')
            fputs("\\t", stdout);
        else if (*s == '\r')
            fputs("\\r", stdout);
        else if (*s == '\\')
            fputs("\\\\", stdout);
        else if (*s < 0x20 || *s == 0x7f)
            printf("\\x%02x", *s);
        else
            putchar(*s);
    }
}

static int do_decode(const tokenizer *t, const char *in, int skip_special, assay_error *err) {
    int32_t    *ids = NULL;
    size_t      n = 0, cap = 0;
    int         rc = 0;
    const char *p  = in;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r' || *p == '[' ||
               *p == ']')
            p++;
        if (!*p)
            break;
        char *e;
        errno  = 0;
        long v = strtol(p, &e, 10);
        if (e == p || errno || v < INT32_MIN || v > INT32_MAX) {
            rc = assay_fail(err, ASSAY_EINVAL, "--decode: '%.20s' is not a token id", p);
            goto done;
        }
        if (n == cap) {
            size_t   nc = cap ? cap * 2 : 256;
            int32_t *ni = realloc(ids, nc * sizeof *ni);
            if (!ni) {
                rc = assay_fail(err, ASSAY_ENOMEM, "--decode: out of memory");
                goto done;
            }
            ids = ni;
            cap = nc;
        }
        ids[n++] = (int32_t)v;
        p        = e;
    }
    char  *text = NULL;
    size_t tl   = 0;
    rc          = tok_decode(t, ids, n, skip_special, &text, &tl, err);
    if (!rc) {
        fwrite(text, 1, tl, stdout);
        putchar('\n');
    }
    free(text);
done:
    free(ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int ids_only = 0, json = 0, no_special = 0, plain_special = 0, replace_invalid = 0, decode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--ids"))
            ids_only = 1;
        else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--no-special"))
            no_special = 1;
        else if (!strcmp(a, "--plain-special"))
            plain_special = 1;
        else if (!strcmp(a, "--replace-invalid"))
            replace_invalid = 1;
        else if (!strcmp(a, "--decode"))
            decode = 1;
        else if (!strcmp(a, "--file")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "assay tokenize: --file needs a path\n%s", usage);
                return 2;
            }
            file = argv[++i];
        } else if (!strncmp(a, "--file=", 7))
            file = a + 7;
        else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !text && model)
                text = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "assay tokenize: unknown option '%s'\n%s", a, usage);
            return 2;
        } else if (!model)
            model = a;
        else if (!text)
            text = a;
        else {
            fprintf(stderr, "assay tokenize: unexpected argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "assay tokenize: missing MODEL_OR_TOKENIZER\n%s", usage);
        return 2;
    }
    if (text && file) {
        fprintf(stderr, "assay tokenize: give TEXT or --file, not both\n");
        return 2;
    }
    assay_error err;
    assay_error_clear(&err);
    char  *buf = NULL;
    size_t len = 0;
    int    rc  = 0;
    if (file) {
        if (file_read_all(file, &buf, &len, &err))
            return cli_report(&err);
    } else if (text) {
        len = strlen(text);
    } else if (read_stream(stdin, &buf, &len)) {
        fprintf(stderr, "assay tokenize: cannot read stdin\n");
        return 3;
    }
    const char *in = buf ? buf : text;
    tokenizer  *t  = tok_load(model, &err);
    if (!t) {
        free(buf);
        return cli_report(&err);
    }
    if (decode) {
        rc = do_decode(t, in, no_special, &err);
        goto out;
    }
    tok_encode_opts o = tok_default_opts();
    o.add_special     = !no_special;
    o.split_special   = !plain_special;
    o.replace_invalid = replace_invalid;
    tok_ids v         = {0};
    rc                = tok_encode(t, in, len, &o, json, &v, &err);
    if (rc) {
        tok_ids_free(&v);
        goto out;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(root, "ids"),
              *toks = cJSON_AddArrayToObject(root, "tokens"),
              *offs = cJSON_AddArrayToObject(root, "offsets");
        for (size_t i = 0; i < v.n; i++) {
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(v.ids[i]));
            const char *p = tok_id_to_piece(t, v.ids[i]);
            cJSON_AddItemToArray(toks, cJSON_CreateString(p ? p : ""));
            int pair[2] = {v.offsets[2 * i], v.offsets[2 * i + 1]};
            cJSON_AddItemToArray(offs, cJSON_CreateIntArray(pair, 2));
        }
        char *s = cJSON_PrintUnformatted(root);
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(root);
    } else if (ids_only) {
        for (size_t i = 0; i < v.n; i++)
            printf(i ? " %d" : "%d", v.ids[i]);
        putchar('\n');
    } else {
        for (size_t i = 0; i < v.n; i++) {
            const char *p = tok_id_to_piece(t, v.ids[i]);
            printf("%d\t", v.ids[i]);
            print_piece(p ? p : "");
            putchar('\n');
        }
    }
    tok_ids_free(&v);
out:
    tok_free(t);
    free(buf);
    if (rc)
        return cli_report(&err);
    return fflush(stdout) == 0 ? 0 : 3;
}
