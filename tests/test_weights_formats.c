/* tests/test_weights_formats.c — the CPU weight formats (--weights bf16 / q8_0): every kernel
 * gives the f32 bits of the weights its format decodes to (any ISA), Q8_0 quantizes and loads
 * GGUF blocks as GGUF defines them, scores stay bitwise batch-invariant within a format, log-probs
 * agree with a float64 model of the same rounded weights, and peak memory holds the format, not
 * an f32 copy. References: tools/make_weights_format_reference.py (tests/fixtures/weights_formats)
 * and tools/make_gguf_fixtures.py (tests/fixtures/gguf). */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/dtype.h"
#include "core/util.h"
#include "kernels/cpu/ops.h"
#include "loader/gguf.h"
#include "loader/safetensors.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "tests/helpers.h"

#define REFS "tests/fixtures/weights_formats"
#define MODELS "tests/fixtures/models"

static const cpu_wfmt FORMATS[] = {CPU_W_F32, CPU_W_BF16, CPU_W_Q8_0};

static float *frand(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        v[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
    return v;
}

/* w (n, k) packed in fmt, then every row decoded back: the f32 weights the format stands for. */
static void *pack_decoded(cpu_wfmt fmt, const float *w, int n, int k, float *decoded) {
    void *p = malloc(gemm_packed_bytes(fmt, n, k));
    gemm_pack_fmt(p, fmt, w, n, k);
    for (int r = 0; r < n; r++)
        gemm_unpack_row_fmt(decoded + (size_t)r * k, p, fmt, r, k);
    return p;
}

Test(weights_formats, every_format_gives_the_f32_gemm_bits_of_its_decoded_weights) {
    /* k past one 256-long slice and not a whole Q8_0 block; n a partial panel; rows from decode
     * (1) to several micro-panels */
    int shapes[][3] = {{1, 300, 70}, {5, 40, 33}, {13, 64, 96}, {30, 300, 70}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int    rows = shapes[si][0], k = shapes[si][1], n = shapes[si][2];
        float *x = frand((size_t)rows * k, 1u + si), *w = frand((size_t)n * k, 7u + si);
        float *b = frand((size_t)n, 3u), *dec = malloc((size_t)n * k * sizeof(float));
        float *want = malloc((size_t)rows * n * 4), *got = malloc((size_t)rows * n * 4);
        float *s  = malloc(cpu_matmul_scratch_floats(rows, k) * sizeof(float));
        float *wf = malloc(gemm_packed_bytes(CPU_W_F32, n, k));
        for (size_t fi = 1; fi < 3; fi++) {
            void *wp = pack_decoded(FORMATS[fi], w, n, k, dec);
            gemm_pack(wf, dec, n, k);
            for (int gelu = 0; gelu < 2; gelu++) {
                cpu_gemm_set_isa(-1);
                if (gelu)
                    matmul_gelu_forward(want, s, x, wf, b, rows, k, n);
                else
                    matmul_forward(want, s, x, wf, NULL, rows, k, n);
                for (int isa = cpu_gemm_isa(); isa >= 0; isa--) {
                    cpu_gemm_set_isa(isa);
                    matmul_forward_fmt(got, s, x, wp, FORMATS[fi], gelu ? b : NULL, rows, k, n,
                                       gelu);
                    cr_assert(memcmp(got, want, (size_t)rows * n * 4) == 0,
                              "format %d isa %d shape %zu gelu %d: not the f32 bits", (int)fi, isa,
                              si, gelu);
                }
            }
            cpu_gemm_set_isa(-1);
            free(wp);
        }
        free(x), free(w), free(b), free(dec), free(want), free(got), free(s), free(wf);
    }
}

Test(weights_formats, lm_head_and_embeddings_use_the_same_decoded_weights) {
    int    rows = 100, dim = 48, vocab = 1000; /* a full 96-row head chunk and a partial one */
    float *h = frand((size_t)rows * dim, 5u), *w = frand((size_t)vocab * dim, 9u);
    float *dec = malloc((size_t)vocab * dim * 4), *wf = malloc(gemm_packed_bytes(0, vocab, dim));
    float *s = malloc(cpu_head_scratch_floats(dim, vocab) * 4), *lp = malloc(rows * 4),
          *lp2  = malloc(rows * 4);
    uint8_t *mx = malloc(rows), *mx2 = malloc(rows);
    int32_t *tgt = malloc(rows * 4), *am = malloc(rows * 4), *am2 = malloc(rows * 4);
    float   *e = malloc((size_t)rows * dim * 4), *e2 = malloc((size_t)rows * dim * 4);
    for (int r = 0; r < rows; r++)
        tgt[r] = (r * 7919) % vocab;
    for (size_t fi = 1; fi < 3; fi++) {
        void *wp = pack_decoded(FORMATS[fi], w, vocab, dim, dec);
        gemm_pack(wf, dec, vocab, dim);
        target_logprob_forward(lp, mx, s, h, wf, tgt, rows, dim, vocab);
        argmax_forward(am, s, h, wf, rows, dim, vocab);
        embed_forward(e, wf, tgt, rows, dim);
        for (int isa = cpu_gemm_isa(); isa >= 0; isa--) {
            cpu_gemm_set_isa(isa);
            target_logprob_forward_fmt(lp2, mx2, s, h, wp, FORMATS[fi], tgt, rows, dim, vocab);
            argmax_forward_fmt(am2, s, h, wp, FORMATS[fi], rows, dim, vocab);
            embed_forward_fmt(e2, wp, FORMATS[fi], tgt, rows, dim);
            cr_assert(memcmp(lp, lp2, rows * 4) == 0 && memcmp(mx, mx2, rows) == 0,
                      "format %zu isa %d: head log-probs", fi, isa);
            cr_assert(memcmp(am, am2, rows * 4) == 0, "format %zu isa %d: argmax", fi, isa);
            cr_assert(memcmp(e, e2, (size_t)rows * dim * 4) == 0, "format %zu: embeddings", fi);
        }
        cpu_gemm_set_isa(-1);
        /* the formats really round: bf16 and Q8_0 tables differ from the f32 one */
        cr_assert(memcmp(dec, w, (size_t)vocab * dim * 4) != 0);
        free(wp);
    }
    free(h), free(w), free(dec), free(wf), free(s), free(lp), free(lp2), free(mx), free(mx2);
    free(tgt), free(am), free(am2), free(e), free(e2);
}

static cJSON *read_json(const char *path) {
    char       *text = NULL;
    assay_error err;
    cr_assert_eq(file_read_all(path, &text, NULL, &err), 0, "%s", err.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert(j, "%s: not JSON", path);
    return j;
}

static uint32_t *bits_array(const cJSON *a, int n) {
    cr_assert_eq(cJSON_GetArraySize(a), n);
    uint32_t *v = malloc((size_t)n * 4);
    int       i = 0;
    cJSON    *it;
    cJSON_ArrayForEach(it, a) v[i++] = (uint32_t)it->valuedouble;
    return v;
}

/* rows with ties at .5 after scaling, zeros, an all-zero block, a padded block (k = 40) */
Test(weights_formats, q8_0_quantizes_as_gguf_defines_it) {
    cJSON *j       = read_json(REFS "/q8_0_vectors.json");
    int    rows    = cJSON_GetObjectItem(j, "rows")->valueint,
        cols       = cJSON_GetObjectItem(j, "cols")->valueint;
    uint32_t *in   = bits_array(cJSON_GetObjectItem(j, "input_bits"), rows * cols);
    uint32_t *want = bits_array(cJSON_GetObjectItem(j, "decoded_bits"), rows * cols);
    float    *dec = malloc((size_t)rows * cols * 4), *x = malloc((size_t)rows * cols * 4);
    memcpy(x, in, (size_t)rows * cols * 4);
    free(pack_decoded(CPU_W_Q8_0, x, rows, cols, dec));
    for (int i = 0; i < rows * cols; i++)
        cr_assert(!memcmp(&dec[i], &want[i], 4),
                  "element %d (row %d): %a, not the bits GGUF's Q8_0 gives (0x%08x)", i, i / cols,
                  dec[i], want[i]);
    free(in), free(want), free(dec), free(x);
    cJSON_Delete(j);
}

/* tiny.gguf's Q8_0 tensors (quantized by the gguf package) against that package's
 * dequantization (tiny_expected.safetensors, f32): packed straight from the blocks, every weight
 * decodes to the same f32 bits; quantizing those f32 values again gives back the same blocks. */
Test(weights_formats, q8_0_gguf_blocks_load_bit_exactly) {
    assay_error err;
    gguf_file  *g = gguf_open("tests/fixtures/gguf/tiny.gguf", &err);
    cr_assert_not_null(g, "%s", err.msg);
    st_file *ex = st_open("tests/fixtures/gguf/tiny_expected.safetensors", &err);
    cr_assert_not_null(ex, "%s", err.msg);
    int checked = 0;
    for (int i = 0; i < st_file_count(ex); i++) {
        const st_tensor *e = st_file_tensor(ex, i);
        char             name[128];
        snprintf(name, sizeof name, "%s", e->name);
        char *cut = strchr(name, '[');
        if (cut)
            *cut = 0; /* "token_embd.weight[:32]": the first rows */
        const gguf_tensor *t = gguf_find_tensor(g, name);
        cr_assert_not_null(t, "%s", name);
        if (t->type != GGML_TYPE_Q8_0)
            continue;
        int   k = (int)t->ne[0], n = (int)(e->n_elements / (size_t)k);
        void *p = malloc(gemm_packed_bytes(CPU_W_Q8_0, n, k));
        gemm_pack_q8_0(p, t->data, n, k);
        float *row = malloc((size_t)k * 4), *want = malloc(e->n_elements * 4);
        cr_assert_eq(dtype_to_f32(want, e->data, e->dtype, e->n_elements), 0);
        for (int r = 0; r < n; r++) {
            gemm_unpack_row_fmt(row, p, CPU_W_Q8_0, r, k);
            cr_assert(memcmp(row, want + (size_t)r * k, (size_t)k * 4) == 0, "%s row %d", name, r);
        }
        void *p2 = malloc(gemm_packed_bytes(CPU_W_Q8_0, n, k));
        gemm_pack_fmt(p2, CPU_W_Q8_0, want, n, k);
        cr_assert(memcmp(p, p2, gemm_packed_bytes(CPU_W_Q8_0, n, k)) == 0,
                  "%s: quantizing the decoded weights does not give GGUF's blocks back", name);
        free(p), free(p2), free(row), free(want);
        checked++;
    }
    cr_assert_geq(checked, 2, "tiny.gguf should hold Q8_0 tensors with expected values");
    st_close(ex);
    gguf_close(g);
}

/* ---- the engine ------------------------------------------------------------------------- */

static model *load_fmt(const char *name, int weights, int threads, int batch_tokens) {
    char dir[256];
    snprintf(dir, sizeof dir, MODELS "/%s", name);
    if (access(dir, R_OK) != 0)
        cr_skip_test("SKIP: %s missing", dir);
    model_opts  o = {.device           = "cpu",
                     .n_threads        = threads,
                     .weights          = weights,
                     .max_batch_tokens = batch_tokens,
                     .mem_budget       = (size_t)256 << 20};
    assay_error err;
    model      *m = model_load(dir, &o, &err);
    cr_assert_not_null(m, "%s: %s", dir, err.msg);
    cr_assert_str_eq(model_weights_name(m), weights == BE_WEIGHTS_BF16   ? "bf16"
                                            : weights == BE_WEIGHTS_Q8_0 ? "q8_0"
                                                                         : "f32");
    return m;
}

static void check_same(const score_result *a, const score_result *b, const char *what, int i) {
    cr_assert_eq(a->n_targets, b->n_targets);
    cr_assert(memcmp(a->logprob, b->logprob, (size_t)a->n_targets * 4) == 0,
              "%s: request %d log-probs differ", what, i);
    cr_assert(memcmp(a->is_greedy, b->is_greedy, (size_t)a->n_targets) == 0);
    cr_assert(a->sum == b->sum);
}

static void invariance(const char *name, int weights) {
    enum { N = 24 };
    score_request req[N], shuffled[N];
    int32_t      *bufs[N];
    score_result  alone[N], batch[N];
    assay_error   err;
    model        *m     = load_fmt(name, weights, 1, 0);
    int           vocab = model_get_config(m)->vocab_size, perm[N];
    for (int i = 0; i < N; i++) {
        int len = 2 + (i * 37) % 90;
        bufs[i] = malloc((size_t)len * 4);
        for (int t = 0; t < len; t++)
            bufs[i][t] = (int32_t)(((unsigned)i * 131u + (unsigned)t * 7919u + 17u) % vocab);
        req[i]  = (score_request){bufs[i], len, 1 + (i % 3 == 0 ? len / 2 : 0)};
        perm[i] = (i * 7 + 5) % N;
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(model_score(m, &req[i], 1, &alone[i], &err), 0, "%s", err.msg);
    for (int i = 0; i < N; i++)
        shuffled[i] = req[perm[i]];
    for (int t = 1; t <= 2; t++) {
        model_set_threads(m, t);
        cr_assert_eq(model_score(m, shuffled, N, batch, &err), 0, "%s", err.msg);
        for (int i = 0; i < N; i++)
            check_same(&alone[perm[i]], &batch[i], "shuffled batch", perm[i]);
        score_results_free(batch, N);
    }
    model_free(m);
    m = load_fmt(name, weights, 2, 40); /* other packings, the chunked KV-cache path */
    cr_assert_eq(model_score(m, shuffled, N, batch, &err), 0, "%s", err.msg);
    for (int i = 0; i < N; i++)
        check_same(&alone[perm[i]], &batch[i], "40-token budget", perm[i]);
    score_results_free(batch, N);
    score_results_free(alone, N);
    model_free(m);
    for (int i = 0; i < N; i++)
        free(bufs[i]);
}

Test(weights_formats, bf16_scores_are_bitwise_batch_invariant) {
    invariance("llama", BE_WEIGHTS_BF16);
    invariance("qwen2", BE_WEIGHTS_BF16);
}
Test(weights_formats, q8_0_scores_are_bitwise_batch_invariant) {
    invariance("llama", BE_WEIGHTS_Q8_0);
    invariance("qwen2", BE_WEIGHTS_Q8_0);
}

/* Largest |engine - reference| over the reference's sequences. */
static double max_gap(model *m, const char *ref_path) {
    cJSON      *j   = read_json(ref_path);
    double      gap = 0;
    assay_error err;
    cJSON      *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "sequences")) {
        cJSON       *ids = cJSON_GetObjectItem(s, "ids"), *lps = cJSON_GetObjectItem(s, "logprobs");
        int          n = cJSON_GetArraySize(ids), i = 0;
        int32_t     *v = malloc((size_t)n * 4);
        cJSON       *it;
        score_result r;
        score_request q                    = {v, n, 1};
        cJSON_ArrayForEach(it, ids) v[i++] = (int32_t)it->valuedouble;
        cr_assert_eq(model_score(m, &q, 1, &r, &err), 0, "%s", err.msg);
        cr_assert_eq(r.n_targets, cJSON_GetArraySize(lps));
        i = 0;
        cJSON_ArrayForEach(it, lps) {
            double d = fabs((double)r.logprob[i++] - it->valuedouble);
            gap      = d > gap ? d : gap;
        }
        score_results_free(&r, 1);
        free(v);
    }
    cJSON_Delete(j);
    return gap;
}

/* The engine runs f32 arithmetic on exactly the rounded weights (the kernel tests above prove
 * the decoded bits), so against a float64 model of the same rounded weights only f32 rounding
 * remains: the same bound as the f32 engine against its reference, 1e-4 on log-probs of these
 * tiny models (tests/test_model.c; measured here: the f32 engine is within ~1e-5 of float64).
 * The bound is tight enough to see the rounding itself: each format's engine misses the OTHER
 * formats' references by more than it. */
#define FMT_TOL 1e-4

Test(weights_formats, logprobs_match_a_float64_model_of_the_same_rounded_weights) {
    static const char *names[]   = {"llama", "qwen2", "mistral"};
    static const char *fmts[]    = {"f32", "bf16", "q8_0"};
    static const int   weights[] = {BE_WEIGHTS_F32, BE_WEIGHTS_BF16, BE_WEIGHTS_Q8_0};
    for (int mi = 0; mi < 3; mi++)
        for (int fi = 0; fi < 3; fi++) {
            model *m = load_fmt(names[mi], weights[fi], 2, 0);
            for (int ri = 0; ri < 3; ri++) {
                char path[256];
                snprintf(path, sizeof path, REFS "/%s_%s.json", names[mi], fmts[ri]);
                double gap = max_gap(m, path);
                fprintf(stderr,
                        "weights_formats: %s engine %s vs reference %s: max |dlogprob| %.3g\n",
                        names[mi], fmts[fi], fmts[ri], gap);
                if (ri == fi)
                    cr_assert(gap <= FMT_TOL, "%s %s: %g over %g", names[mi], fmts[fi], gap,
                              FMT_TOL);
                else
                    cr_assert(gap > FMT_TOL, "%s: engine %s is as close to the %s reference (%g)",
                              names[mi], fmts[fi], fmts[ri], gap);
            }
            model_free(m);
        }
}

/* ---- memory ------------------------------------------------------------------------------ */

/* A random llama big enough that its weights dominate the process (dim 512, 4 layers, FFN 1536:
 * 14M parameters, 56 MB in f32), with the tiny llama fixture's tokenizer. */
static void write_big_llama(const char *dir) {
    enum { D = 512, F = 1536, L = 4, V = 400 };
    char cfg[1024], cmd[1200], path[600];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
             "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": 8, \"num_key_value_heads\": 8, \"vocab_size\": %d, "
             "\"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, "
             "\"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2, "
             "\"hidden_act\": \"silu\", \"torch_dtype\": \"float32\"}",
             D, F, L, V);
    test_write_file(dir, "config.json", cfg);
    snprintf(cmd, sizeof cmd,
             "cp " MODELS "/llama/tokenizer.json " MODELS "/llama/tokenizer_config.json %s/", dir);
    cr_assert_eq(system(cmd), 0);
    static const char *lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                "mlp.down_proj"};
    st_write_tensor    t[3 + L * 9];
    char               names[3 + L * 9][96];
    int                n   = 0;
    float             *big = frand((size_t)F * D, 77u), *ones = malloc(D * 4);
    for (int i = 0; i < D; i++)
        ones[i] = 1.0f;
    /* every matrix views the same random values: the weights' bytes are what matters */
    snprintf(names[n], 96, "model.embed_tokens.weight");
    t[n++] = (st_write_tensor){names[n], DTYPE_F32, 2, {V, D}, big};
    snprintf(names[n], 96, "lm_head.weight");
    t[n++] = (st_write_tensor){names[n], DTYPE_F32, 2, {V, D}, big};
    snprintf(names[n], 96, "model.norm.weight");
    t[n++] = (st_write_tensor){names[n], DTYPE_F32, 1, {D}, ones};
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < 7; j++) {
            int rows = j == 6 ? D : j >= 4 ? F : D, cols = j == 6 ? F : D;
            snprintf(names[n], 96, "model.layers.%d.%s.weight", l, lin[j]);
            t[n++] = (st_write_tensor){names[n], DTYPE_F32, 2, {rows, cols}, big};
        }
        snprintf(names[n], 96, "model.layers.%d.input_layernorm.weight", l);
        t[n++] = (st_write_tensor){names[n], DTYPE_F32, 1, {D}, ones};
        snprintf(names[n], 96, "model.layers.%d.post_attention_layernorm.weight", l);
        t[n++] = (st_write_tensor){names[n], DTYPE_F32, 1, {D}, ones};
    }
    for (int i = 0; i < n; i++) /* (t[n++] = ...names[n]... leaves the index order unspecified) */
        t[i].name = names[i];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assay_error err;
    cr_assert_eq(st_write(path, t, n, NULL, &err), 0, "%s", err.msg);
    free(big), free(ones);
}

/* Peak RSS of `assay ppl` with each format: a bf16 or Q8_0 model's peak is its own weight bytes
 * plus what the f32 run needs besides its weights, not an f32 copy. Children's peaks only grow
 * (RUSAGE_CHILDREN keeps the largest, and a forked child starts with this process's pages: the
 * runs come before this process loads anything), so the runs go from the smallest expected peak
 * up, and each must be strictly above the last. */
Test(weights_formats, peak_rss_holds_the_format_not_an_f32_copy, .timeout = 120) {
    if (!TEST_CHECK_MEMORY)
        cr_skip_test("SKIP: resident memory means nothing under ASan");
    char dir[64];
    test_tmpdir(dir, sizeof dir);
    write_big_llama(dir);
    test_write_file(dir, "text.txt",
                    "The river ran low that autumn, and the old ferryman mended nets.");
    static const int   weights[] = {BE_WEIGHTS_Q8_0, BE_WEIGHTS_BF16, BE_WEIGHTS_F32};
    static const char *fmts[]    = {"q8_0", "bf16", "f32"};
    double             peak[3], wbytes[3];
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        cr_assert_eq(
            test_run(&out, "ppl %s %s/text.txt --threads 2 --weights %s", dir, dir, fmts[i]), 0,
            "%s", out);
        free(out);
        struct rusage ru;
        getrusage(RUSAGE_CHILDREN, &ru);
        peak[i] = (double)ru.ru_maxrss * 1024.0;
    }
    for (int i = 0; i < 3; i++) {
        model_opts  o = {.device = "cpu", .weights = weights[i], .max_batch_tokens = 64};
        assay_error err;
        model      *m = model_load(dir, &o, &err);
        cr_assert_not_null(m, "%s", err.msg);
        wbytes[i] = (double)model_weight_bytes(m);
        model_free(m);
        fprintf(stderr, "weights_formats: %s weights %.1f MB, peak RSS %.1f MB\n", fmts[i],
                wbytes[i] / 1e6, peak[i] / 1e6);
    }
    cr_assert(wbytes[0] < 0.3 * wbytes[2] && wbytes[1] < 0.51 * wbytes[2],
              "Q8_0 %.0f and bf16 %.0f bytes against f32 %.0f", wbytes[0], wbytes[1], wbytes[2]);
    for (int i = 0; i < 2; i++) {
        /* what the run needs besides weights, measured on f32; 8 MB of slack for allocator and
         * page-cache noise (the weights differ by 28-41 MB) */
        double rest = peak[2] - wbytes[2];
        cr_assert(peak[i] <= wbytes[i] + rest + 8e6,
                  "%s: peak %.1f MB, expected about its %.1f MB of weights + %.1f MB", fmts[i],
                  peak[i] / 1e6, wbytes[i] / 1e6, rest / 1e6);
        cr_assert(peak[i] < peak[i + 1], "%s peak %.1f MB is not below %s's %.1f MB", fmts[i],
                  peak[i] / 1e6, fmts[i + 1], peak[i + 1] / 1e6);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

/* ---- the command line -------------------------------------------------------------------- */

Test(weights_formats, weights_option_reaches_the_engine_and_the_output) {
    char *out = NULL;
    char  dir[64];
    test_tmpdir(dir, sizeof dir);
    test_write_file(dir, "t.txt", "The river ran low that autumn.");
    for (int i = 0; i < 3; i++) {
        static const char *f[] = {"f32", "bf16", "q8_0"};
        cr_assert_eq(test_run(&out,
                              "ppl " MODELS "/llama %s/t.txt --device cpu --weights %s --json", dir,
                              f[i]),
                     0, "%s", out);
        char want[64];
        snprintf(want, sizeof want, "\"weights\":\t\"%s\"", f[i]);
        cr_assert(strstr(out, want), "%s missing in %s", want, out);
        snprintf(want, sizeof want, "batch-invariant, %s weights", f[i]);
        cr_assert(strstr(out, want), "%s missing in %s", want, out);
        free(out);
    }
    cr_assert_eq(test_run(&out, "ppl " MODELS "/llama %s/t.txt --weights q4", dir), 2, "%s", out);
    cr_assert(strstr(out, "--weights: expected f32, bf16 or q8_0, got 'q4'"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "inspect " MODELS "/llama --json"), 0, "%s", out);
    cJSON *j = cJSON_Parse(out), *m = cJSON_GetObjectItem(j, "memory");
    double params = cJSON_GetObjectItem(j, "parameters")->valuedouble;
    cr_assert_eq(cJSON_GetObjectItem(m, "cpu_bf16_weights_bytes")->valuedouble, params * 2);
    cr_assert_eq(cJSON_GetObjectItem(m, "cpu_q8_0_weights_bytes")->valuedouble, params * 34 / 32);
    cJSON_Delete(j);
    free(out);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

/* ---- GGUF files ---------------------------------------------------------------------------- */

static void score_all(model *m, score_result *res, int n, int32_t **bufs, score_request *req) {
    int         vocab = model_get_config(m)->vocab_size;
    assay_error err;
    for (int i = 0; i < n; i++) {
        int len = 3 + i * 11;
        bufs[i] = malloc((size_t)len * 4);
        for (int t = 0; t < len; t++)
            bufs[i][t] = (int32_t)(((unsigned)i * 31u + (unsigned)t * 7919u + 1u) % vocab);
        req[i] = (score_request){bufs[i], len, 1};
    }
    cr_assert_eq(model_score(m, req, n, res, &err), 0, "%s", err.msg);
}

static model *load_path(const char *path, int weights) {
    model_opts  o = {.device = "cpu", .weights = weights, .mem_budget = (size_t)256 << 20};
    assay_error err;
    model      *m = model_load(path, &o, &err);
    cr_assert_not_null(m, "%s: %s", path, err.msg);
    return m;
}

static void same_scores(model *a, model *b, const char *what) {
    enum { N = 6 };
    score_result  ra[N], rb[N];
    int32_t      *ba[N], *bb[N];
    score_request qa[N], qb[N];
    score_all(a, ra, N, ba, qa);
    score_all(b, rb, N, bb, qb);
    for (int i = 0; i < N; i++) {
        check_same(&ra[i], &rb[i], what, i);
        free(ba[i]), free(bb[i]);
    }
    score_results_free(ra, N);
    score_results_free(rb, N);
}

/* Every matrix of q8_llama.gguf is Q8_0 with no block reaching |q| = 127, so quantizing its
 * decoded values again gives other blocks. Loaded with --weights q8_0 it scores bitwise like
 * the f32 load of the same file (the GEMM contract on the same decoded weights): the blocks
 * were kept as they are. */
Test(weights_formats, q8_0_gguf_weights_load_without_a_round_trip_through_f32) {
    const char *path = REFS "/q8_llama.gguf";
    model      *f32 = load_path(path, BE_WEIGHTS_F32), *q8 = load_path(path, BE_WEIGHTS_Q8_0);
    cr_assert_str_eq(model_weights_name(q8), "q8_0");
    same_scores(f32, q8, "q8_0 GGUF loaded as q8_0 against f32");
    model_free(f32);
    model_free(q8);
    /* the round trip really would change these blocks */
    assay_error        err;
    gguf_file         *g = gguf_open(path, &err);
    const gguf_tensor *t = gguf_find_tensor(g, "blk.0.ffn_up.weight");
    cr_assert(t && t->type == GGML_TYPE_Q8_0);
    int    k = (int)t->ne[0], n = (int)t->ne[1];
    size_t bytes  = gemm_packed_bytes(CPU_W_Q8_0, n, k);
    void  *direct = malloc(bytes), *again = malloc(bytes);
    float *dec = malloc((size_t)n * k * 4);
    cr_assert_eq(gguf_dequantize(dec, t->data, t->type, (int64_t)n * k), 0);
    gemm_pack_q8_0(direct, t->data, n, k);
    gemm_pack_fmt(again, CPU_W_Q8_0, dec, n, k);
    cr_assert(memcmp(direct, again, bytes) != 0, "the fixture's blocks survive a round trip");
    free(direct), free(again), free(dec);
    gguf_close(g);
}

/* A GGUF file loads as `assay convert` would write it: llama.cpp's names and RoPE row order
 * mapped back (tiny.gguf holds every supported type; its converted directory is the reference). */
Test(weights_formats, a_gguf_file_scores_like_its_converted_checkpoint) {
    char  dir[64], conv[128];
    char *out = NULL;
    test_tmpdir(dir, sizeof dir);
    snprintf(conv, sizeof conv, "%s/tiny", dir);
    cr_assert_eq(test_run(&out, "convert tests/fixtures/gguf/tiny.gguf %s", conv), 0, "%s", out);
    free(out);
    for (int w = BE_WEIGHTS_F32; w <= BE_WEIGHTS_Q8_0; w++) {
        model *a = load_path("tests/fixtures/gguf/tiny.gguf", w), *b = load_path(conv, w);
        same_scores(a, b, "tiny.gguf against its converted directory");
        model_free(a);
        model_free(b);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

/* inspect --formats-ppl: each format's perplexity is the one `assay ppl` gives with that
 * --weights on the same windows (the text is shorter than --max-tokens, so both score all of it),
 * f32's change is 0, and the other formats move it (a format that silently ran as f32 fails). */
Test(weights_formats, inspect_measures_each_formats_perplexity_as_ppl_does, .timeout = 180) {
    char dir[256], *out = NULL;
    test_tmpdir(dir, sizeof dir);
    char text[4096] = "";
    for (int i = 0; i < 40; i++)
        strcat(text, "the river ran low that autumn and the ferryman mended nets. ");
    char path[300];
    snprintf(path, sizeof path, "%s/t.txt", dir);
    test_write_file(dir, "t.txt", text);
    cr_assert_eq(test_run(&out, "inspect " MODELS "/llama --json --formats-ppl %s --ctx 32", path),
                 0, "%s", out);
    cJSON *j = cJSON_Parse(out), *arr = cJSON_GetObjectItem(j, "weight_formats_ppl");
    free(out);
    cr_assert_eq(cJSON_GetArraySize(arr), 3);
    const char *names[] = {"f32", "bf16", "q8_0"};
    double      f32     = 0;
    for (int f = 0; f < 3; f++) {
        cJSON *e = cJSON_GetArrayItem(arr, f);
        cr_assert_str_eq(cJSON_GetObjectItem(e, "weights")->valuestring, names[f]);
        cr_assert_eq(
            test_run(&out, "ppl " MODELS "/llama %s --ctx 32 --json --weights %s", path, names[f]),
            0, "%s", out);
        cJSON *p   = cJSON_Parse(out);
        double ppl = cJSON_GetObjectItem(cJSON_GetObjectItem(p, "total"), "ppl")->valuedouble;
        cr_assert_eq(cJSON_GetObjectItem(e, "ppl")->valuedouble, ppl, "%s: %.17g vs ppl's %.17g",
                     names[f], cJSON_GetObjectItem(e, "ppl")->valuedouble, ppl);
        cr_assert_eq(cJSON_GetObjectItem(e, "tokens")->valuedouble,
                     cJSON_GetObjectItem(cJSON_GetObjectItem(p, "total"), "tokens")->valuedouble);
        if (f == 0) {
            f32 = ppl;
            cr_assert_eq(cJSON_GetObjectItem(e, "change_pct")->valuedouble, 0.0);
        } else {
            cr_assert_neq(ppl, f32, "%s scored exactly as f32", names[f]);
        }
        cJSON_Delete(p);
        free(out);
    }
    cJSON_Delete(j);
    /* the options that need --formats-ppl, and a path that is not a model */
    cr_assert_eq(test_run(&out, "inspect " MODELS "/llama --ctx 32"), 2, "%s", out);
    cr_assert(strstr(out, "go with --formats-ppl"), "%s", out);
    free(out);
    cr_assert_eq(test_run(&out, "inspect " MODELS "/llama --formats-ppl %s/missing.txt", dir), 2,
                 "%s", out);
    cr_assert(strstr(out, "missing.txt"), "%s", out);
    free(out);
}
