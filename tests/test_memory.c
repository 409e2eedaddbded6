/* Scoring memory does not grow with the number of scored tokens: the LM head runs on row chunks
 * and never holds tokens x vocab logits (DESIGN.md decision 2). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/model.h"
#include "tests/helpers.h"

/* 256 requests of 500 tokens on the tiny llama (vocab 400): 127,744 scored targets, whose logits
 * would take 204 MB as one tokens x vocab tensor. The outputs (float + flag per target) are
 * 0.6 MB; the bound allows 16 MB for batch workspace first touched by the bigger batches and
 * allocator slack. It catches logits kept for all scored tokens (or all requests); with this
 * tiny vocabulary a single 2048-token batch of logits (3.3 MB) would fit under it. */
Test(memory, scoring_many_tokens_does_not_grow_with_tokens_x_vocab, .timeout = 300) {
    const char *dir = "tests/fixtures/models/llama";
    if (access(dir, R_OK) != 0)
        cr_skip_test("SKIP: %s missing", dir);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* child: 0 ok, 2 too much memory, 3 failure */
        assay_error err;
        model      *m = model_load(dir, NULL, &err);
        if (!m)
            _exit(3);
        const int      n_req = 256, len = 500;
        int32_t       *toks = malloc(sizeof *toks * (size_t)n_req * len);
        score_request *reqs = calloc((size_t)n_req, sizeof *reqs);
        score_result  *out  = calloc((size_t)n_req, sizeof *out);
        if (!toks || !reqs || !out)
            _exit(3);
        uint32_t s = 12345;
        for (int i = 0; i < n_req * len; i++) {
            s       = s * 1664525u + 1013904223u;
            toks[i] = 3 + (int32_t)((s >> 8) % 390);
        }
        for (int r = 0; r < n_req; r++)
            reqs[r] = (score_request){toks + (size_t)r * len, len, 1};
        /* warm up: one request, so workspaces are touched before the measurement */
        if (model_score(m, reqs, 1, out, &err))
            _exit(3);
        score_results_free(out, 1);
        size_t before = test_proc_mem("VmRSS:", 1);
        if (model_score(m, reqs, n_req, out, &err))
            _exit(3);
        size_t peak = test_proc_mem("VmHWM:", 0);
        size_t grow = peak > before ? peak - before : 0;
        long   tgt  = 0;
        for (int r = 0; r < n_req; r++)
            tgt += out[r].n_targets;
        fprintf(stderr, "scored %ld targets: peak RSS growth %.1f MB (logits would be %.0f MB)\n",
                tgt, grow / 1e6, tgt * 400.0 * 4 / 1e6);
        score_results_free(out, n_req);
        model_free(m);
        if (tgt != (long)n_req * (len - 1))
            _exit(3);
        if (TEST_CHECK_MEMORY && grow > 16u * 1000 * 1000)
            _exit(2);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st), "child crashed");
    cr_assert_neq(WEXITSTATUS(st), 2, "peak memory grew with the number of scored tokens");
    cr_assert_eq(WEXITSTATUS(st), 0, "scoring failed");
}
