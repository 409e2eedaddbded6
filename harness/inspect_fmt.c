/* harness/inspect_fmt.c — see inspect_fmt.h. */
#include "harness/inspect_fmt.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "harness/pipeline.h"
#include "loader/config.h"
#include "loader/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/model.h"
#include "scoring/ppl.h"

#define FMT_TEXT_MAX ((size_t)1 << 30) /* the text is read whole */

int inspect_formats_ppl(const char *model_path, const char *text_path, int64_t ctx,
                        int64_t max_tokens, const cli_common *cc, cJSON *out, assay_error *err) {
    static const struct {
        const char *name;
        int         weights;
    } fmts[] = {{"f32", BE_WEIGHTS_F32}, {"bf16", BE_WEIGHTS_BF16}, {"q8_0", BE_WEIGHTS_Q8_0}};
    char         *text = NULL;
    size_t        len  = 0;
    tokenizer    *tok  = NULL;
    tok_ids       ids  = {0};
    pipe_ppl_plan plan = {0};
    model_config  cfg;
    double        ppl_f32 = 0;
    int           rc;
    if ((rc = config_load_dir(&cfg, model_path, err)))
        return rc;
    if (ctx <= 0)
        ctx = cfg.max_pos < 512 ? cfg.max_pos : 512;
    if (ctx > cfg.max_pos)
        return assay_fail(err, ASSAY_EINVAL,
                          "--ctx %lld is larger than the model's %d positions (%s)", (long long)ctx,
                          cfg.max_pos, model_path);
    if ((rc = file_read_capped(text_path, FMT_TEXT_MAX, &text, &len, err)))
        return rc;
    if (!(tok = tok_load(model_path, err))) {
        rc = err->code ? err->code : ASSAY_EINTERNAL;
        goto done;
    }
    tok_encode_opts eo = tok_default_opts();
    eo.add_special     = 1;
    eo.split_special   = 0;
    if ((rc = tok_encode(tok, text, len, &eo, 0, &ids, err)))
        goto done;
    if (max_tokens > 0 && ids.n > (size_t)max_tokens)
        ids.n = (size_t)max_tokens;
    if (ids.n < 2) {
        rc = assay_fail(err, ASSAY_EINVAL, "%s: fewer than 2 tokens to score", text_path);
        goto done;
    }
    ppl_stats st;
    pipe_doc  doc = {text_path, ids.ids, ids.n, &st};
    ppl_stats_init(&st, text, len);
    if ((rc = pipe_ppl_plan_make(&plan, &doc, 1, 1, (size_t)ctx, (size_t)ctx, err)))
        goto done;
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        cli_common  c      = *cc;
        model      *m      = NULL;
        pipe_counts counts = {0};
        c.device           = CLI_DEVICE_CPU; /* the formats are the CPU backend's */
        c.weights          = fmts[f].weights;
        c.kv_tokens        = (int)plan.longest;
        ppl_stats_init(&st, text, len);
        if ((rc = cli_load_model(model_path, &c, &m, err)))
            goto done;
        size_t bytes = model_weight_bytes(m);
        double t0    = time_now();
        rc          = pipe_ppl_run(m, &plan, &doc, tok_bos_id(tok), model_path, &counts, NULL, err);
        double wall = time_now() - t0;
        model_free(m);
        if (rc)
            goto done;
        double ppl = ppl_token_ppl(&st);
        if (f == 0)
            ppl_f32 = ppl;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "weights", fmts[f].name);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)bytes);
        cJSON_AddNumberToObject(o, "tokens", (double)st.tokens);
        cJSON_AddNumberToObject(o, "ctx", (double)ctx);
        cJSON_AddNumberToObject(o, "ppl", ppl);
        cJSON_AddNumberToObject(o, "change_pct", (ppl / ppl_f32 - 1.0) * 100.0);
        cJSON_AddNumberToObject(o, "tokens_per_s", wall > 0 ? (double)st.tokens / wall : 0);
        cJSON_AddItemToArray(out, o);
    }
done:
    pipe_ppl_plan_free(&plan);
    tok_ids_free(&ids);
    tok_free(tok);
    free(text);
    return rc;
}
