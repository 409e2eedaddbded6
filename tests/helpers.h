/* tests/helpers.h — shared test helpers: run the CLI, temporary dirs, ../shared lookups. */
#ifndef ASSAY_TEST_HELPERS_H
#define ASSAY_TEST_HELPERS_H

#include <cJSON.h>
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Path of the assay binary under test (make test sets ASSAY_BIN). */
static inline const char *test_bin(void) {
    const char *b = getenv("ASSAY_BIN");
    return b && *b ? b : "build/assay";
}

/* Runs `assay <args>` through the shell; returns the exit code, stdout+stderr in *out
 * (malloc'd, may be NULL). */
static inline int test_run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int test_run(char **out, const char *fmt, ...) {
    char    args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", test_bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t cap = 4096, n = 0;
    char  *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* A fresh temporary directory (static buffer per call site is the caller's). */
/* Directories made by test_tmpdir, removed with their contents when the test's process exits
 * (Criterion runs each test in its own process), whether the test passed or failed an assert. */
static char test_tmpdirs[16][64];
static int  test_n_tmpdirs;

static inline int test_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    remove(path);
    return 0;
}

static inline void test_rm_tmpdirs(void) {
    for (int i = 0; i < test_n_tmpdirs; i++)
        nftw(test_tmpdirs[i], test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    test_n_tmpdirs = 0;
}

static inline void test_tmpdir(char *buf, size_t cap) {
    snprintf(buf, cap, "/tmp/assay-test-XXXXXX");
    if (!mkdtemp(buf))
        cr_assert_fail("mkdtemp failed");
    if (test_n_tmpdirs == 0)
        atexit(test_rm_tmpdirs);
    if (test_n_tmpdirs < 16)
        memcpy(test_tmpdirs[test_n_tmpdirs++], buf, sizeof "/tmp/assay-test-XXXXXX");
}

/* Path of a file under ../shared; when absent, prints a visible SKIP line and skips the test. */
#define SHARED_OR_SKIP(var, rel)                                                                   \
    char var[1024];                                                                                \
    snprintf(var, sizeof var, "../shared/%s", rel);                                                \
    if (access(var, R_OK) != 0) {                                                                  \
        fprintf(stderr, "SKIP: %s missing\n", var);                                                \
        cr_skip_test("SKIP: %s missing", var);                                                     \
    }

/* ASan keeps freed memory in quarantine and copies on realloc, so resident memory says nothing
 * there: memory bounds are checked in normal builds only. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_CHECK_MEMORY 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_CHECK_MEMORY 0
#endif
#endif
#ifndef TEST_CHECK_MEMORY
#define TEST_CHECK_MEMORY 1
#endif

/* A /proc/self/status value in bytes ("VmRSS:", "VmHWM:"), 0 if unknown. reset: first reset the
 * peak (VmHWM) to the current RSS when the kernel allows. */
static inline size_t test_proc_mem(const char *key, int reset) {
    if (reset) {
        FILE *f = fopen("/proc/self/clear_refs", "w");
        if (f) {
            fputs("5", f);
            fclose(f);
        }
    }
    FILE  *f = fopen("/proc/self/status", "r");
    char   line[256];
    size_t kb = 0, kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl))
            kb = strtoull(line + kl, NULL, 10);
    if (f)
        fclose(f);
    return kb * 1024;
}

/* Writes text to dir/name, creating the folders in name. */
static inline void test_write_file(const char *dir, const char *name, const char *text) {
    char path[1200], cmd[1300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *slash = strrchr(path, '/');
    *slash      = '\0';
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    cr_assert_eq(system(cmd), 0);
    *slash  = '/';
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* The whole file at path, NUL-terminated (caller frees), or NULL when it cannot be read. */
static inline char *test_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t n = 0, cap = 1 << 16;
    char  *s = malloc(cap);
    for (size_t got; s && (got = fread(s + n, 1, cap - 1 - n, f)) > 0;) {
        n += got;
        if (n == cap - 1) {
            char *t = realloc(s, cap *= 2);
            if (!t)
                free(s);
            s = t;
        }
    }
    fclose(f);
    if (s)
        s[n] = 0;
    return s;
}

/* The JSON document in path (caller cJSON_Deletes); fails the test when it is missing or bad. */
static inline cJSON *test_read_json(const char *path) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s missing", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s                      = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(s);
    free(s);
    cr_assert(j, "%s is not JSON", path);
    return j;
}

#endif
