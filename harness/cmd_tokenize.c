/* harness/cmd_tokenize.c — `assay tokenize`: encode text (or decode ids) with a model's
 * tokenizer, to inspect what the scorer will see. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/util.h"
#include "harness/commands.h"
#include "loader/tokenizer.h"

static const char usage[] =
    "usage: assay tokenize MODEL_OR_TOKENIZER [options] [TEXT | --file F]\n"
    "  MODEL_OR_TOKENIZER  a model directory (tokenizer.json, or GPT-2 encoder.json + vocab.bpe),\n"
    "                      a GGUF file (its tokenizer.ggml.* metadata) or a tokenizer.json file;\n"
    "                      without TEXT or --file, stdin is read\n"
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
    "  --file F            read the input from regular file F (mapped, not copied: a long file\n"
    "                      is encoded in pieces and printed as it goes, in memory that does not\n"
    "                      grow with it); stdin is read up to 1 GiB\n"
    "Default output: one \"id<TAB>piece\" line per token (control characters escaped).\n"
    "Exit codes: 0 ok, 2 bad input or usage (an unreadable file included), 3 internal error.\n";

/* Reads stdin whole, at most `max` bytes: a pipe or /dev/zero never says how long it is. */
static int read_stdin_capped(size_t max, char **out, size_t *len, assay_error *err) {
    size_t cap = 1 << 16, n = 0;
    char  *b = malloc(cap);
    if (!b)
        return assay_fail(err, ASSAY_ENOMEM, "stdin: out of memory");
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
        n += r;
        if (n > max) {
            free(b);
            return assay_fail(err, ASSAY_EINVAL,
                              "stdin: more than %zu MiB of text; give a file with --file",
                              max >> 20);
        }
        if (cap - n < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return assay_fail(err, ASSAY_ENOMEM, "stdin: out of memory");
            }
            b = nb;
            cap *= 2;
        }
    }
    if (ferror(stdin)) {
        int e = errno;
        free(b);
        return assay_fail(err, ASSAY_EIO, "stdin: read error: %s", strerror(e));
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

static int do_decode(const tokenizer *t, const char *in, size_t len, int skip_special,
                     assay_error *err) {
    int32_t *ids = NULL;
    size_t   n = 0, cap = 0, i = 0;
    int      rc = 0;
    while (i < len) {
        char c = in[i];
        if (c == ' ' || c == ',' || c == '\n' || c == '\t' || c == '\r' || c == '[' || c == ']') {
            i++;
            continue;
        }
        /* the input need not be NUL-terminated (a mapped file): parse a bounded copy */
        char   num[24];
        size_t k = 0;
        while (i + k < len && k + 1 < sizeof num && in[i + k] != ' ' && in[i + k] != ',' &&
               in[i + k] != '\n' && in[i + k] != '\t' && in[i + k] != '\r' && in[i + k] != ']' &&
               in[i + k] != '[') {
            num[k] = in[i + k];
            k++;
        }
        num[k] = 0;
        char *e;
        errno  = 0;
        long v = strtol(num, &e, 10);
        if (e == num || *e || errno || v < INT32_MIN || v > INT32_MAX) {
            rc = assay_fail(err, ASSAY_EINVAL, "--decode: '%.20s' (byte %zu) is not a token id",
                            num, i);
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
        i += k;
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

/* Streaming output of the plain formats: each part of the encoding is printed as it comes. */
typedef struct print_ctx {
    const tokenizer *t;
    int              ids_only;
    size_t           printed;
} print_ctx;

static int print_part(void *vc, const tok_ids *part) {
    print_ctx *c = vc;
    for (size_t i = 0; i < part->n; i++, c->printed++) {
        if (c->ids_only) {
            printf(c->printed ? " %d" : "%d", part->ids[i]);
            continue;
        }
        const char *p = tok_id_to_piece(c->t, part->ids[i]);
        printf("%d\t", part->ids[i]);
        print_piece(p ? p : "");
        putchar('\n');
    }
    return ferror(stdout) ? ASSAY_EIO : 0;
}

/* --json: {"ids":[...],"tokens":[...],"offsets":[...]}, written array by array (a tree of
 * cJSON items would take ~100 bytes per token); cJSON escapes each piece. */
static int print_json(const tokenizer *t, const tok_ids *v) {
    fputs("{\"ids\":[", stdout);
    for (size_t i = 0; i < v->n; i++)
        printf(i ? ",%d" : "%d", v->ids[i]);
    fputs("],\"tokens\":[", stdout);
    for (size_t i = 0; i < v->n; i++) {
        const char *p = tok_id_to_piece(t, v->ids[i]);
        cJSON      *s = cJSON_CreateString(p ? p : "");
        char       *o = s ? cJSON_PrintUnformatted(s) : NULL;
        cJSON_Delete(s);
        if (!o)
            return ASSAY_ENOMEM;
        if (i)
            putchar(',');
        fputs(o, stdout);
        free(o);
    }
    fputs("],\"offsets\":[", stdout);
    for (size_t i = 0; i < v->n; i++)
        printf(i ? ",[%d,%d]" : "[%d,%d]", v->offsets[2 * i], v->offsets[2 * i + 1]);
    fputs("]}\n", stdout);
    return 0;
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
    char       *buf = NULL;
    mapped_file map = {0};
    size_t      len = 0;
    int         rc  = 0;
    if (file) { /* a regular file only: a FIFO or a device could block or never end */
        if (file_map(&map, file, &err))
            return cli_report(&err);
        len = map.size;
        if (map.data) /* read once, front to back */
            madvise((void *)map.data, map.size, MADV_SEQUENTIAL);
    } else if (text) {
        len = strlen(text);
    } else if (read_stdin_capped(FILE_READ_MAX, &buf, &len, &err)) {
        return cli_report(&err);
    }
    const char *in = map.data ? (const char *)map.data : buf ? buf : text ? text : "";
    tokenizer  *t  = tok_load(model, &err);
    if (!t) {
        file_unmap(&map);
        free(buf);
        return cli_report(&err);
    }
    if (decode) {
        rc = do_decode(t, in, len, no_special, &err);
        goto out;
    }
    tok_encode_opts o = tok_default_opts();
    o.add_special     = !no_special;
    o.split_special   = !plain_special;
    o.replace_invalid = replace_invalid;
    if (json) {
        tok_ids v = {0};
        rc        = tok_encode(t, in, len, &o, 1, &v, &err);
        if (!rc && print_json(t, &v))
            rc = assay_fail(&err, ASSAY_ENOMEM, "tokenize: out of memory printing JSON");
        tok_ids_free(&v);
        goto out;
    }
    print_ctx pc = {t, ids_only, 0};
    rc           = tok_encode_stream(t, in, len, &o, 0, print_part, &pc, &err);
    if (!rc && ids_only)
        putchar('\n');
out:
    tok_free(t);
    file_unmap(&map);
    free(buf);
    if (rc == ASSAY_EIO && ferror(stdout)) /* print_part stopped the encoding */
        rc = 0;
    else if (rc == ASSAY_ENOMEM)
        return cli_report(&err);
    else if (rc) { /* about the input: say which */
        char msg[sizeof err.msg];
        snprintf(msg, sizeof msg, "%s", err.msg);
        assay_fail(&err, rc, "%s: %s", file ? file : text ? "TEXT" : "stdin", msg);
        return cli_report(&err);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        assay_fail(&err, ASSAY_EIO, "stdout: write error: %s", strerror(errno ? errno : EIO));
        return cli_report(&err);
    }
    return 0;
}
