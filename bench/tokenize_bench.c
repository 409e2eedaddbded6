/* bench/tokenize_bench.c — single-thread tokenizer throughput of assay's tok_encode, the C half of
 * bench/tokenize_bench.sh. Loads the tokenizer once, then encodes the text file line by line
 * (lines split at '\n', the newline not included, empty lines kept: the same list that
 * bench/tokenize_bench.py gives HF `encode_batch`) and once as a whole; only encoding is timed,
 * with a monotonic clock, best of N repeats. No special tokens are added; special-token text is
 * matched as HF does by default. Prints one JSON object.
 *
 *   tokenize_bench TOKENIZER TEXTFILE [REPEATS]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loader/tokenizer.h"

static double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *bench_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char  *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 65536) {
            char *nb = realloc(buf, cap ? cap * 2 : 1 << 20);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = cap ? cap * 2 : 1 << 20;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    buf[n] = '\0';
    *len   = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER TEXTFILE [REPEATS]\n", argv[0]);
        return 2;
    }
    int    repeats = argc > 3 ? atoi(argv[3]) : 3;
    size_t len     = 0;
    char  *text    = bench_read(argv[2], &len);
    if (!text) {
        fprintf(stderr, "tokenize_bench: cannot read %s\n", argv[2]);
        return 2;
    }
    assay_error err    = {0};
    double      t0     = bench_now();
    tokenizer  *t      = tok_load(argv[1], &err);
    double      t_load = bench_now() - t0;
    if (!t) {
        fprintf(stderr, "tokenize_bench: %s\n", err.msg);
        free(text);
        return 2;
    }
    tok_encode_opts o = tok_default_opts();
    o.add_special     = 0;
    o.split_special   = 1;
    o.replace_invalid = 1;

    tok_ids ids        = {0};
    double  best_lines = 1e30, best_whole = 1e30;
    size_t  tokens_lines = 0, tokens_whole = 0, n_lines = 0;
    int     rc = 0;
    for (int r = 0; r < repeats && rc == 0; r++) {
        size_t tokens = 0, lines = 0;
        double s = bench_now();
        for (size_t i = 0; i <= len && rc == 0;) {
            const char *nl = memchr(text + i, '\n', len - i);
            size_t      e  = nl ? (size_t)(nl - text) : len;
            ids.n          = 0;
            rc             = tok_encode(t, text + i, e - i, &o, 0, &ids, &err);
            tokens += ids.n;
            lines++;
            i = e + 1;
        }
        double el = bench_now() - s;
        if (el < best_lines)
            best_lines = el;
        tokens_lines = tokens;
        n_lines      = lines;

        ids.n = 0;
        s     = bench_now();
        if (rc == 0)
            rc = tok_encode(t, text, len, &o, 0, &ids, &err);
        el = bench_now() - s;
        if (el < best_whole)
            best_whole = el;
        tokens_whole = ids.n;
    }
    if (rc != 0) {
        fprintf(stderr, "tokenize_bench: tok_encode failed: %s\n", err.msg);
    } else {
        printf(
            "{\"impl\":\"assay\",\"tokenizer\":\"%s\",\"bytes\":%zu,\"lines\":%zu,\"load_s\":%.4f,"
            "\"lines_s\":%.6f,\"lines_tokens\":%zu,\"lines_mb_s\":%.3f,"
            "\"whole_s\":%.6f,\"whole_tokens\":%zu,\"whole_mb_s\":%.3f,\"repeats\":%d}\n",
            argv[1], len, n_lines, t_load, best_lines, tokens_lines, len / best_lines / 1e6,
            best_whole, tokens_whole, len / best_whole / 1e6, repeats);
    }
    tok_ids_free(&ids);
    tok_free(t);
    free(text);
    return rc == 0 ? 0 : 1;
}
