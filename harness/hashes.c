#include "harness/hashes.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/util.h"
#include "loader/gguf.h"
#include "loader/gguf_tokenizer.h"
#include "loader/modeldir.h"

int hashes_files(char out[65], const char *const *paths, size_t n, size_t max_bytes,
                 assay_error *err) {
    sha256_ctx c;
    sha256_init(&c);
    for (size_t i = 0; i < n; i++) {
        int rc = sha256_file(&c, paths[i], max_bytes, err);
        if (rc)
            return rc;
    }
    sha256_hex(&c, out);
    return ASSAY_OK;
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A GGUF file's header, metadata and tensor directory: what the safetensors headers pin. */
static int hashes_gguf_model(const char *path, char out[65], assay_error *err) {
    gguf_file *g = gguf_open(path, err);
    if (!g)
        return err->code ? err->code : ASSAY_EFORMAT;
    size_t      n;
    const void *h = gguf_header(g, &n);
    sha256_ctx  c;
    sha256_init(&c);
    sha256_update(&c, h, n);
    sha256_hex(&c, out);
    gguf_close(g);
    return ASSAY_OK;
}

/* The tokenizer.json and tokenizer_config.json texts `assay convert` writes from a GGUF file, so
 * the file and its converted directory name the same tokenizer. */
static int hashes_gguf_tokenizer(const char *path, char out[65], assay_error *err) {
    char      *tj = NULL, *tc = NULL;
    gguf_file *g = gguf_open(path, err);
    if (!g)
        return err->code ? err->code : ASSAY_EFORMAT;
    int rc = gguf_tokenizer_texts(g, path, &tj, &tc, err);
    gguf_close(g);
    if (!rc) {
        sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, tj, strlen(tj));
        sha256_update(&c, tc, strlen(tc));
        sha256_hex(&c, out);
    }
    free(tj);
    free(tc);
    return rc;
}

int hashes_model(const char *dir, char out[65], assay_error *err) {
    char       path[4200];
    sha256_ctx c;
    if (model_path_is_gguf(dir))
        return hashes_gguf_model(dir, out, err);
    DIR   *d     = opendir(dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int    rc = ASSAY_OK;
    if (!d)
        return assay_fail(err, ASSAY_EIO, "%s: cannot open the directory", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!str_ends_with(e->d_name, ".safetensors"))
            continue;
        if (n == cap) {
            cap       = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
                goto done;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory");
            goto done;
        }
        n++;
    }
    if (n)
        qsort(names, n, sizeof *names, cmp_cstr);
    sha256_init(&c);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = sha256_file(&c, path, SIZE_MAX, err)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        uint8_t hl[8] = {0};
        size_t  size  = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        int fd = file_open_regular(path, &size, err);
        if (fd < 0) {
            rc = err->code ? err->code : ASSAY_EIO;
            goto done;
        }
        ssize_t r = size >= 8 ? read(fd, hl, 8) : 0;
        close(fd);
        uint64_t len = 0;
        for (int k = 7; k >= 0; k--)
            len = len << 8 | hl[k];
        if (r != 8 || len > size - 8) {
            rc = assay_fail(err, ASSAY_EFORMAT, "%s: not a safetensors file", path);
            goto done;
        }
        sha256_update(&c, names[i], strlen(names[i]) + 1);
        if ((rc = sha256_file(&c, path, (size_t)len + 8, err)))
            goto done;
    }
    sha256_hex(&c, out);
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

int hashes_tokenizer(const char *dir, char out[65], assay_error *err) {
    char tj[4200], tc[4200];
    if (model_path_is_gguf(dir))
        return hashes_gguf_tokenizer(dir, out, err);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    const char *tp[2] = {tj, tc};
    return hashes_files(out, tp, path_exists(tc) ? 2 : 1, SIZE_MAX, err);
}
