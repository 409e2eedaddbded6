#include "harness/cli_common.h"

#include "runtime/backend.h"
#include "runtime/device.h"
#include "runtime/model.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_common_help[] =
    "  --json              print results as JSON on stdout\n"
    "  --threads N         CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
    "  --device D          auto, cpu, cuda or cuda:N (default auto: the first GPU when one\n"
    "                      works, else the CPU); a cuda device this build or machine cannot\n"
    "                      use is refused with exit 2 and the reason\n"
    "  --gpu-mem-fraction F  share of the GPU's free memory for weights, workspace and KV\n"
    "                      cache (default 0.9)\n"
    "  --fast              on a GPU, allow kernels whose results depend on the batch (faster;\n"
    "                      the output then says scores are not batch-invariant)\n"
    "  --mem-budget SIZE   memory for weights, workspace and KV cache, e.g. 512M or 8G (default\n"
    "                      80% of available memory; must be more than 0); a model that needs\n"
    "                      more is refused before its weights are read\n"
    "  --weights W         f32, bf16 or q8_0: how the CPU stores linear weights and embeddings\n"
    "                      (default f32: exact scores; bf16 and q8_0 (GGUF's 8-bit blocks) use\n"
    "                      half and about a quarter of the memory and decode faster, and change\n"
    "                      log-probs slightly; each stays batch-invariant). With --device auto,\n"
    "                      f32 and q8_0 choose the CPU\n";

int cli_take_value(const char *name, int argc, char **argv, int *i, const char **val,
                   assay_error *err) {
    const char *a = argv[*i];
    size_t      n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        assay_fail(err, ASSAY_EINVAL, "%s needs a value", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

int cli_parse_int(const char *opt, const char *val, int64_t min, int64_t max, int64_t *out,
                  assay_error *err) {
    char *end   = NULL;
    errno       = 0;
    long long v = strtoll(val, &end, 10);
    if (!*val || *end || errno || v < min || v > max)
        return assay_fail(err, ASSAY_EINVAL,
                          "%s: expected an integer between %lld and %lld, got '%s'", opt,
                          (long long)min, (long long)max, val);
    *out = v;
    return ASSAY_OK;
}

int cli_parse_bytes(const char *opt, const char *val, size_t *out, assay_error *err) {
    char *end = NULL;
    errno     = 0;
    double v  = strtod(val, &end);
    double m  = 1;
    if (end && *end) {
        switch (*end) {
        case 'k':
        case 'K':
            m = 1024.0;
            end++;
            break;
        case 'm':
        case 'M':
            m = 1024.0 * 1024;
            end++;
            break;
        case 'g':
        case 'G':
            m = 1024.0 * 1024 * 1024;
            end++;
            break;
        case 't':
        case 'T':
            m = 1024.0 * 1024 * 1024 * 1024;
            end++;
            break;
        default: break;
        }
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (!*val || !end || *end || errno || !(v >= 0) || v * m >= 18446744073709551615.0)
        return assay_fail(err, ASSAY_EINVAL, "%s: expected a size like 512M or 8G, got '%s'", opt,
                          val);
    *out = (size_t)(v * m);
    return ASSAY_OK;
}

int cli_common_parse(cli_common *c, int argc, char **argv, int *i, assay_error *err) {
    const char *v = NULL;
    int         r;
    int64_t     n = 0;
    if (!strcmp(argv[*i], "--json")) {
        c->json = 1;
        return 1;
    }
    if ((r = cli_take_value("--threads", argc, argv, i, &v, err)) != 0) {
        if (r < 0)
            return -1;
        if (cli_parse_int("--threads", v, 1, 4096, &n, err))
            return -1;
        c->threads = (int)n;
        return 1;
    }
    if ((r = cli_take_value("--device", argc, argv, i, &v, err)) != 0) {
        if (r < 0)
            return -1;
        c->device_index = 0;
        if (!strcmp(v, "auto"))
            c->device = CLI_DEVICE_AUTO;
        else if (!strcmp(v, "cpu"))
            c->device = CLI_DEVICE_CPU;
        else if (!strcmp(v, "cuda"))
            c->device = CLI_DEVICE_CUDA;
        else if (!strncmp(v, "cuda:", 5) && v[5] >= '0' && v[5] <= '9' &&
                 !cli_parse_int("--device cuda:N", v + 5, 0, 1023, &n, NULL)) {
            c->device       = CLI_DEVICE_CUDA;
            c->device_index = (int)n;
        } else {
            assay_fail(err, ASSAY_EINVAL,
                       "--device: expected auto, cpu, cuda or cuda:N (N a device number), got "
                       "'%s'",
                       v);
            return -1;
        }
        return 1;
    }
    if ((r = cli_take_value("--gpu-mem-fraction", argc, argv, i, &v, err)) != 0) {
        if (r < 0)
            return -1;
        char  *end = NULL;
        double f   = strtod(v, &end);
        if (!*v || !end || *end || !(f > 0 && f <= 1)) {
            assay_fail(err, ASSAY_EINVAL,
                       "--gpu-mem-fraction: expected a share in (0, 1] such as 0.9, got '%s'", v);
            return -1;
        }
        c->gpu_mem_fraction = f;
        return 1;
    }
    if ((r = cli_take_value("--weights", argc, argv, i, &v, err)) != 0) {
        if (r < 0)
            return -1;
        if (!strcmp(v, "f32"))
            c->weights = BE_WEIGHTS_F32;
        else if (!strcmp(v, "bf16"))
            c->weights = BE_WEIGHTS_BF16;
        else if (!strcmp(v, "q8_0"))
            c->weights = BE_WEIGHTS_Q8_0;
        else {
            assay_fail(err, ASSAY_EINVAL, "--weights: expected f32, bf16 or q8_0, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(argv[*i], "--fast")) {
        c->fast = 1;
        return 1;
    }
    if ((r = cli_take_value("--mem-budget", argc, argv, i, &v, err)) != 0) {
        if (r < 0)
            return -1;
        if (cli_parse_bytes("--mem-budget", v, &c->mem_budget, err))
            return -1;
        if (c->mem_budget == 0) {
            /* 0 used to mean "the default" silently; a budget of nothing is a mistake. */
            assay_fail(err, ASSAY_EINVAL,
                       "--mem-budget: must be more than 0 (leave it out for the default, 80%% of "
                       "available memory)");
            return -1;
        }
        return 1;
    }
    return 0;
}

/* "--mode: expected sliding or rolling, got 'x'" */
static int cli_parse_choice(const cli_opt *o, const char *v, assay_error *err) {
    char   want[256] = "";
    size_t len       = 0;
    for (int k = 0; o->choices[k]; k++) {
        const char *sep = k == 0 ? "" : o->choices[k + 1] ? ", " : " or ";
        if (!strcmp(v, o->choices[k])) {
            *(const char **)o->target = o->choices[k];
            return ASSAY_OK;
        }
        int w = snprintf(want + len, sizeof want - len, "%s%s", sep, o->choices[k]);
        if (w > 0 && (size_t)w < sizeof want - len)
            len += (size_t)w;
    }
    return assay_fail(err, ASSAY_EINVAL, "%s: expected %s, got '%s'", o->name, want, v);
}

/* 1 when argv[*i] is option `o` (its value stored), 0 when it is not, -1 with err set. */
static int cli_parse_opt(const cli_opt *o, int argc, char **argv, int *i, assay_error *err) {
    if (o->kind == CLI_FLAG) {
        if (strcmp(argv[*i], o->name))
            return 0;
        *(int *)o->target = 1;
        return 1;
    }
    const char *v = NULL;
    int         r = cli_take_value(o->name, argc, argv, i, &v, err);
    if (r <= 0)
        return r;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->target = v; break;
    case CLI_INT:
        if (cli_parse_int(o->name, v, o->min, o->max, (int64_t *)o->target, err))
            return -1;
        break;
    case CLI_CHOICE:
        if (cli_parse_choice(o, v, err))
            return -1;
        break;
    case CLI_STR_LIST: {
        cli_list *l  = o->target;
        l->v[l->n++] = v;
        break;
    }
    case CLI_FLAG: break;
    }
    return 1;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_common *cc, cli_list *positional,
              assay_error *err) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int         r = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        if ((r = cli_common_parse(cc, argc, argv, &i, err)) != 0) {
            if (r < 0)
                return -1;
            continue;
        }
        for (int k = 0; k < cmd->n_opts && r == 0; k++)
            r = cli_parse_opt(&cmd->opts[k], argc, argv, &i, err);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        if (a[0] == '-' && a[1]) {
            assay_fail(err, ASSAY_EINVAL, "%s: unknown option '%s' (see assay %s --help)",
                       cmd->name, a, cmd->name);
            return -1;
        }
        if (cmd->max_positional && positional->n >= cmd->max_positional) {
            assay_fail(err, ASSAY_EINVAL, "%s: unexpected argument '%s' %s", cmd->name, a,
                       cmd->extra_hint);
            return -1;
        }
        positional->v[positional->n++] = a;
    }
    return 0;
}

/* The device of the model cli_load_model loaded last (the CLI runs one model per process). */
static char cli_ran_on[64];

void cli_summary(const char *cmd, const char *what, int64_t count, double seconds) {
    fflush(stdout); /* results first, so a terminal or a 2>&1 capture never splits them */
    fprintf(stderr, "%s: %lld %s in %.2f s (%.1f %s/s)%s%s\n", cmd, (long long)count, what, seconds,
            seconds > 0 ? (double)count / seconds : 0.0, what, cli_ran_on[0] ? " on " : "",
            cli_ran_on);
}

void cli_device_spec(const cli_common *c, char *buf, size_t cap) {
    if (c->device == CLI_DEVICE_CPU)
        snprintf(buf, cap, "cpu");
    else if (c->device == CLI_DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d", c->device_index);
    else
        snprintf(buf, cap, "auto");
}

void cli_json_device(cJSON *o, const model *m) {
    cJSON_AddStringToObject(o, "device", model_device_name(m));
    cJSON_AddBoolToObject(o, "batch_invariant", model_batch_invariant(m));
    cJSON_AddStringToObject(o, "weights", model_weights_name(m));
}

int cli_load_model(const char *dir, const cli_common *c, model **out, assay_error *err) {
    char spec[32];
    *out = NULL;
    cli_device_spec(c, spec, sizeof spec);
    /* a GPU stores bf16 only: other formats asked for with --device auto mean the CPU */
    if (c->device == CLI_DEVICE_AUTO &&
        (c->weights == BE_WEIGHTS_F32 || c->weights == BE_WEIGHTS_Q8_0))
        snprintf(spec, sizeof spec, "cpu");
    if (c->device == CLI_DEVICE_CUDA) {
        /* a device that is not there is a usage error (exit 2), found before anything loads */
        cuda_device_info info;
        device_cuda_probe(&info);
        if (!device_cuda_compiled())
            return assay_fail(err, ASSAY_EUNSUPPORTED,
                              "--device %s: built without CUDA; use --device cpu or auto", spec);
        if (info.count <= 0)
            return assay_fail(err, ASSAY_EUNSUPPORTED, "--device %s: %s; use --device cpu or auto",
                              spec, info.why_none);
        if (c->device_index >= info.count)
            return assay_fail(
                err, ASSAY_EUNSUPPORTED, "--device %s: no such device (%d CUDA device%s: cuda:0%s)",
                spec, info.count, info.count == 1 ? "" : "s", info.count == 1 ? "" : " and up");
    }
    model_opts o       = {0};
    o.device           = spec;
    o.gpu_mem_fraction = c->gpu_mem_fraction;
    o.fast             = c->fast;
    o.n_threads        = c->threads;
    o.mem_budget       = c->mem_budget;
    o.kv_tokens        = c->kv_tokens;
    o.weights          = c->weights;
    model *m           = model_load(dir, &o, err);
    if (!m)
        return err && err->code ? err->code : ASSAY_EINTERNAL;
    snprintf(cli_ran_on, sizeof cli_ran_on, "%s, %s, %s weights", model_device_name(m),
             model_batch_invariant(m) ? "batch-invariant" : "not batch-invariant",
             model_weights_name(m));
    *out = m;
    return ASSAY_OK;
}
