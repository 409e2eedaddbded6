/* harness/cmd_convert.c — `assay convert IN.gguf OUT_DIR`: a llama GGUF file becomes a Hugging
 * Face checkpoint directory (model.safetensors, config.json, tokenizer.json,
 * tokenizer_config.json). Everything is validated before anything is written; the directory is
 * built under OUT_DIR.tmp.<pid> and published in one rename (dir_publish), so a failure leaves
 * nothing behind and an OUT_DIR that is not ours is never touched without --force. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/util.h"
#include "harness/commands.h"
#include "loader/arch.h"
#include "loader/config.h"
#include "loader/gguf.h"
#include "loader/gguf_tokenizer.h"
#include "loader/safetensors.h"

static const char convert_help[] =
    "usage: assay convert IN.gguf OUT_DIR [--dtype f32|bf16] [--force]\n"
    "\n"
    "Converts a llama-architecture GGUF file into a Hugging Face checkpoint directory:\n"
    "model.safetensors, config.json, tokenizer.json, tokenizer_config.json.\n"
    "Tensor types read: F32, F16, BF16, Q8_0, Q4_0, Q4_1 (quantized ones are dequantized).\n"
    "The q/k projections are un-permuted from llama.cpp's rotary layout to the HF layout.\n"
    "Tokenizers: SentencePiece-style (tokenizer.ggml.model llama) or byte-level BPE (gpt2),\n"
    "split as tokenizer.ggml.pre says (gpt-2, smollm, starcoder, llama-bpe, qwen2, ... as\n"
    "llama.cpp reads them); a pre-tokenizer it does not know is refused (exit 2).\n"
    "\n"
    "  --dtype f32|bf16  dtype of the written tensors (default f32; bf16 rounds to nearest even)\n"
    "  --force           replace OUT_DIR if it is a directory, in one step (otherwise an existing\n"
    "                    OUT_DIR, even one created while convert runs, is an error and is left\n"
    "                    as it is)\n"
    "\n"
    "exit codes: 0 converted; 2 bad input or usage, or a file that cannot be read or written, or\n"
    "out of memory (nothing is left behind); 3 internal error\n";

typedef struct out_tensor {
    const gguf_tensor *src;
    char               hf[128];
    int                kind;
    int64_t            rows, cols; /* HF shape [rows, cols]; cols = 0 for vectors */
    void              *buf;        /* converted data (NULL when the mapped file is used as is) */
} out_tensor;

/* Maps one GGUF name through the llama architecture table (loader/arch.h); returns 0 and fills
 * hf, kind (llama.cpp's RoPE permutation: 0 none, 1 q, 2 k) and the HF shape rows, cols (0 for
 * a vector), or -1 when it has no HF llama equivalent. */
static int map_name(const model_config *c, const char *g, char *hf, size_t cap, int *kind,
                    int64_t *rows, int64_t *cols) {
    int                n_t   = 0;
    const arch_tensor *t     = arch_tensors(ARCH_LLAMA, &n_t);
    int                layer = -1, used = 0;
    if (sscanf(g, "blk.%d.%n", &layer, &used) == 1 && used > 0) {
        char digits[16];
        snprintf(digits, sizeof digits, "blk.%d.", layer);
        if (layer < 0 || layer >= c->n_layers || (size_t)used != strlen(digits) ||
            strncmp(g, digits, (size_t)used)) /* no "blk.01." */
            return -1;
    } else {
        layer = -1;
        used  = 0;
    }
    for (int i = 0; i < n_t; i++) {
        if (!t[i].gguf || (t[i].section == 1) != (layer >= 0) || strcmp(g + used, t[i].gguf))
            continue;
        arch_name(hf, cap, &t[i], layer, "");
        *kind = t[i].gguf_permute;
        *rows = arch_dim_size(c, t[i].rows);
        *cols = arch_dim_size(c, t[i].cols);
        return 0;
    }
    return -1;
}

/* Inverse of llama.cpp's HF→GGUF permute (w.reshape(n_head, 2, rows/n_head/2, cols)
 * .swapaxes(1, 2)): GGUF row h*hd + 2*j + a holds HF row h*hd + a*hd/2 + j. */
static void unpermute_rows(float *dst, const float *src, int64_t rows, int64_t cols, int n_head) {
    int64_t hd = rows / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t j = 0; j < half; j++)
            for (int64_t a = 0; a < 2; a++)
                memcpy(dst + (h * hd + a * half + j) * cols, src + (h * hd + 2 * j + a) * cols,
                       (size_t)cols * sizeof *dst);
}

static int convert_tensor(out_tensor *t, const model_config *cfg, dtype out_dt, const char *path,
                          assay_error *err) {
    const gguf_tensor *s   = t->src;
    size_t             nel = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
    if (s->type == GGML_TYPE_F32 && out_dt == DTYPE_F32 && t->kind == 0)
        return 0; /* the mapped bytes are already the output */
    float *f = malloc(nel * sizeof *f);
    if (!f)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory converting tensor '%s'", path,
                          s->name);
    if (gguf_dequantize(f, s->data, s->type, (int64_t)nel)) {
        free(f);
        return assay_fail(err, ASSAY_EINTERNAL, "%s: cannot dequantize tensor '%s' (%s)", path,
                          s->name, ggml_type_name(s->type));
    }
    if (t->kind) {
        float *p = malloc(nel * sizeof *p);
        if (!p) {
            free(f);
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory converting tensor '%s'", path,
                              s->name);
        }
        unpermute_rows(p, f, t->rows, t->cols, t->kind == 1 ? cfg->n_heads : cfg->n_kv_heads);
        free(f);
        f = p;
    }
    if (out_dt == DTYPE_BF16) {
        uint16_t *b = malloc(nel * sizeof *b);
        if (!b) {
            free(f);
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory converting tensor '%s'", path,
                              s->name);
        }
        for (size_t i = 0; i < nel; i++)
            b[i] = f32_to_bf16(f[i]);
        free(f);
        t->buf = b;
    } else {
        t->buf = f;
    }
    return 0;
}

/* Checks every tensor (name, type, shape) against the config and fills out[] in HF order. */
static int plan_tensors(const gguf_file *g, const model_config *cfg, const char *path,
                        out_tensor **out, int *n_out, assay_error *err) {
    int         n = gguf_n_tensors(g);
    out_tensor *t = calloc((size_t)(n ? n : 1), sizeof *t);
    if (!t)
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *s = gguf_tensor_at(g, i);
        if (!gguf_type_supported(s->type)) {
            free(t);
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: tensor '%s' has type %s; supported: F32, F16, BF16, Q8_0, "
                              "Q4_0, Q4_1",
                              path, s->name, ggml_type_name(s->type));
        }
    }
    for (int i = 0; i < n; i++) {
        const gguf_tensor *s = gguf_tensor_at(g, i);
        out_tensor        *o = &t[i];
        o->src               = s;
        int64_t rows, cols;
        if (map_name(cfg, s->name, o->hf, sizeof o->hf, &o->kind, &rows, &cols)) {
            free(t);
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "%s: tensor '%s' has no equivalent in a Hugging Face Llama "
                              "checkpoint (%d layers)",
                              path, s->name, cfg->n_layers);
        }
        /* GGUF ne = [cols, rows]: ne[0] varies fastest, so the data is already row-major. */
        int ok = cols ? (s->ndim == 2 && s->ne[0] == cols && s->ne[1] == rows)
                      : (s->ndim == 1 && s->ne[0] == rows);
        if (!ok) {
            free(t);
            if (cols)
                return assay_fail(err, ASSAY_EFORMAT,
                                  "%s: tensor '%s' has ne [%lld, %lld, %lld, %lld] (%d dims), "
                                  "expected [%lld, %lld] from the metadata",
                                  path, s->name, (long long)s->ne[0], (long long)s->ne[1],
                                  (long long)s->ne[2], (long long)s->ne[3], s->ndim,
                                  (long long)cols, (long long)rows);
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: tensor '%s' has ne [%lld, ...] (%d dims), expected [%lld]", path,
                              s->name, (long long)s->ne[0], s->ndim, (long long)rows);
        }
        if (o->kind && (rows % ((o->kind == 1 ? cfg->n_heads : cfg->n_kv_heads) * 2))) {
            free(t);
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: tensor '%s' has %lld rows, not a multiple of 2 x heads", path,
                              s->name, (long long)rows);
        }
        o->rows = rows;
        o->cols = cols;
    }
    /* every tensor the architecture needs must be there (lm_head only when not tied): the
     * global ones first, then layer by layer */
    char               need[128];
    int                n_a = 0;
    const arch_tensor *a   = arch_tensors(ARCH_LLAMA, &n_a);
    for (int l = -1; l < cfg->n_layers; l++) {
        for (int k = 0; k < n_a; k++) {
            if (!a[k].gguf || (a[k].section == 1) != (l >= 0) || a[k].when == WHEN_UNTIED)
                continue;
            if (l < 0)
                snprintf(need, sizeof need, "%s", a[k].gguf);
            else
                snprintf(need, sizeof need, "blk.%d.%s", l, a[k].gguf);
            if (!gguf_find_tensor(g, need)) {
                free(t);
                return assay_fail(err, ASSAY_EFORMAT, "%s: tensor '%s' is missing", path, need);
            }
        }
    }
    *out   = t;
    *n_out = n;
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text, assay_error *err) {
    char path[4096];
    if (path_join(path, sizeof path, dir, name))
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", dir);
    return file_write_atomic(path, text, strlen(text), err);
}

/* The GGUF keys behind config.json's floats: each must give a finite float that config.json
 * can hold (a double beyond float range becomes inf, which JSON writes as null). */
static int check_config_floats(const gguf_file *g, const char *in, assay_error *err) {
    static const char *const keys[] = {"llama.rope.freq_base",
                                       "llama.attention.layer_norm_rms_epsilon",
                                       "llama.rope.scaling.factor", "llama.rope.scale_linear"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        double v;
        if (gguf_get_float(g, keys[i], &v) != 0)
            continue;
        float f = (float)v;
        if (!isfinite(f) || (v != 0 && f == 0))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: metadata '%s' is %g, which a float in config.json cannot hold",
                              in, keys[i], v);
    }
    return ASSAY_OK;
}

/* config.json must read back as the config it was written from: what the loader would see is
 * what was converted, or nothing is written. */
static int check_config_round_trip(const model_config *cfg, const char *json, const char *in,
                                   assay_error *err) {
    model_config back;
    assay_error  perr;
    if (config_parse(&back, json, strlen(json), "config.json", &perr))
        return assay_fail(err, ASSAY_EFORMAT, "%s: the config.json it converts to is refused: %s",
                          in, perr.msg);
    const struct {
        const char *name;
        double      want, got;
    } f[] = {
        {"num_hidden_layers", cfg->n_layers, back.n_layers},
        {"hidden_size", cfg->dim, back.dim},
        {"num_attention_heads", cfg->n_heads, back.n_heads},
        {"num_key_value_heads", cfg->n_kv_heads, back.n_kv_heads},
        {"head_dim", cfg->head_dim, back.head_dim},
        {"intermediate_size", cfg->ffn_dim, back.ffn_dim},
        {"vocab_size", cfg->vocab_size, back.vocab_size},
        {"max_position_embeddings", cfg->max_pos, back.max_pos},
        {"rms_norm_eps", cfg->norm_eps, back.norm_eps},
        {"rope_scaling", cfg->rope, back.rope},
        {"rope_theta", cfg->rope_theta, back.rope_theta},
        {"rope_scaling.factor", cfg->rope == ROPE_LINEAR ? cfg->rope_factor : 0,
         back.rope == ROPE_LINEAR ? back.rope_factor : 0},
        {"tie_word_embeddings", cfg->tie_embeddings, back.tie_embeddings},
        {"bos_token_id", cfg->bos_token_id, back.bos_token_id},
        {"eos_token_id", cfg->eos_token_id, back.eos_token_id},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!(f[i].want == f[i].got))
            return assay_fail(err, ASSAY_EFORMAT,
                              "%s: config.json would read back %s = %.9g, not %.9g; not writing a "
                              "checkpoint that loads differently",
                              in, f[i].name, f[i].got, f[i].want);
    return ASSAY_OK;
}

static int convert_run(const char *in, const char *out_dir, dtype out_dt, int force,
                       assay_error *err) {
    gguf_file       *g        = NULL;
    out_tensor      *t        = NULL;
    int              n        = 0, rc;
    char            *tok_json = NULL, *tok_cfg = NULL, *cfg_json = NULL;
    st_write_tensor *w         = NULL;
    char             tmp[4096] = "", path[4096];
    model_config     cfg;

    /* early answers for the common cases; dir_publish decides at the moment of the rename */
    if (path_present(out_dir) && !force)
        return assay_fail(err, ASSAY_EINVAL, "%s: already exists (use --force to replace it)",
                          out_dir);
    if (path_present(out_dir) && !path_is_dir(out_dir))
        return assay_fail(err, ASSAY_EINVAL, "%s: exists and is not a directory; not replacing it",
                          out_dir);

    if (!(g = gguf_open(in, err)))
        return err->code;
    if ((rc = gguf_to_config(g, &cfg, err)) || (rc = check_config_floats(g, in, err)) ||
        (rc = plan_tensors(g, &cfg, in, &t, &n, err)))
        goto fail;
    snprintf(cfg.torch_dtype, sizeof cfg.torch_dtype, "%s",
             out_dt == DTYPE_BF16 ? "bfloat16" : "float32");
    if ((rc = gguf_tokenizer_texts(g, in, &tok_json, &tok_cfg, err)))
        goto fail;
    if (!(cfg_json = config_to_json(&cfg))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: cannot serialize config.json", in);
        goto fail;
    }
    if ((rc = check_config_round_trip(&cfg, cfg_json, in, err)))
        goto fail;
    if (!(w = calloc((size_t)(n ? n : 1), sizeof *w))) {
        rc = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", in);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if ((rc = convert_tensor(&t[i], &cfg, out_dt, in, err)))
            goto fail;
        w[i].name     = t[i].hf;
        w[i].dtype    = out_dt; /* F32 passes through only when out_dt is F32 */
        w[i].ndim     = t[i].cols ? 2 : 1;
        w[i].shape[0] = t[i].rows;
        w[i].shape[1] = t[i].cols;
        w[i].data     = t[i].buf ? t[i].buf : t[i].src->data;
    }

    if ((rc = dir_create_temp(tmp, sizeof tmp, out_dir, err))) {
        tmp[0] = '\0';
        goto fail;
    }
    static const char *const meta[] = {"format", "pt", NULL};
    if (path_join(path, sizeof path, tmp, "model.safetensors")) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: path too long", tmp);
        goto fail;
    }
    if ((rc = st_write(path, w, n, meta, err)) ||
        (rc = write_text(tmp, "config.json", cfg_json, err)) ||
        (rc = write_text(tmp, "tokenizer.json", tok_json, err)) ||
        (rc = write_text(tmp, "tokenizer_config.json", tok_cfg, err)) ||
        (rc = dir_publish(tmp, out_dir, force, err)))
        goto fail;
    tmp[0] = '\0';
    rc     = ASSAY_OK;
fail:
    dir_discard_temp(tmp);
    for (int i = 0; t && i < n; i++)
        free(t[i].buf);
    free(t);
    free(w);
    free(tok_json);
    free(tok_cfg);
    free(cfg_json);
    gguf_close(g);
    return rc;
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    dtype       dt    = DTYPE_F32;
    int         force = 0;
    assay_error err;
    assay_error_clear(&err);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(convert_help, stdout);
            return 0;
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--dtype") || !strncmp(a, "--dtype=", 8)) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (v && !strcmp(v, "f32"))
                dt = DTYPE_F32;
            else if (v && !strcmp(v, "bf16"))
                dt = DTYPE_BF16;
            else {
                assay_fail(&err, ASSAY_EINVAL, "--dtype: expected f32 or bf16, got '%s'",
                           v ? v : "(nothing)");
                return cli_report(&err);
            }
        } else if (a[0] == '-' && a[1]) {
            assay_fail(&err, ASSAY_EINVAL,
                       "convert: unknown option '%s' (see assay convert --help)", a);
            return cli_report(&err);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            assay_fail(&err, ASSAY_EINVAL, "convert: unexpected argument '%s'", a);
            return cli_report(&err);
        }
    }
    if (!in || !out) {
        fputs(convert_help, stderr);
        return 2;
    }
    char out_dir[4000];
    if (snprintf(out_dir, sizeof out_dir, "%s", out) >= (int)sizeof out_dir) {
        assay_fail(&err, ASSAY_EINVAL, "%s: path too long", out);
        return cli_report(&err);
    }
    for (size_t n = strlen(out_dir); n > 1 && out_dir[n - 1] == '/'; n--)
        out_dir[n - 1] = '\0'; /* "dir/" → "dir", so the temporary is a sibling */
    if (convert_run(in, out_dir, dt, force, &err))
        return cli_report(&err);
    fprintf(stderr, "assay: converted %s -> %s (%s)\n", in, out, dt == DTYPE_BF16 ? "bf16" : "f32");
    return 0;
}
