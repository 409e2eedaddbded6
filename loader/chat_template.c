/* loader/chat_template.c — the public side of the chat-template engine: parse once, render per
 * conversation with the variables transformers passes (messages, bos_token, eos_token,
 * add_generation_prompt, tools and documents as None), and find a model directory's template. */
#include "loader/chat_template.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "loader/config.h"
#include "loader/gguf_tokenizer.h"
#include "loader/jinja_internal.h"
#include "loader/modeldir.h"

#define CHAT_TEMPLATE_JINJA_MAX ((size_t)16 << 20) /* chat_template.jinja */

struct chat_template {
    jarena arena;
    jnode *root;
    char  *where;
    char  *bos, *eos; /* chat_template_load_dir's vars */
};

chat_template *chat_template_parse(const char *text, size_t len, const char *where,
                                   assay_error *err) {
    chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->where = strdup(where ? where : "chat template"))) {
        free(t);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where ? where : "chat template");
        return NULL;
    }
    if (jinja_parse(&t->arena, text ? text : "", text ? len : 0, t->where, &t->root, err)) {
        chat_template_free(t);
        return NULL;
    }
    return t;
}

void chat_template_free(chat_template *t) {
    if (!t)
        return;
    jarena_free(&t->arena);
    free(t->where);
    free(t->bos);
    free(t->eos);
    free(t);
}

static jval token_value(const char *text) {
    if (!text)
        return (jval){.kind = JV_UNDEF};
    return (jval){.kind = JV_STR, .u.s = {text, strlen(text)}};
}

int chat_template_render(const chat_template *t, const chat_message *messages, size_t n,
                         const chat_vars *vars, char **out, size_t *out_len, assay_error *err) {
    *out     = NULL;
    *out_len = 0;
    if (!t)
        return assay_fail(err, ASSAY_EINVAL, "chat_template_render: no template");
    /* messages as transformers hands them over: a list of {"role": ..., "content": ...} */
    jarena a     = {0};
    jlist *list  = jarena_alloc(&a, sizeof *list);
    jval  *items = n ? jarena_alloc(&a, n * sizeof *items) : NULL;
    if (!list || (n && !items)) {
        jarena_free(&a);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for %zu messages", t->where, n);
    }
    for (size_t i = 0; i < n; i++) {
        jdict *d  = jarena_alloc(&a, sizeof *d);
        jval  *kv = jarena_alloc(&a, 4 * sizeof *kv);
        if (!d || !kv) {
            jarena_free(&a);
            return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory for %zu messages", t->where, n);
        }
        const char *role = messages[i].role ? messages[i].role : "";
        const char *text = messages[i].content ? messages[i].content : "";
        kv[0]            = (jval){.kind = JV_STR, .u.s = {"role", 4}};
        kv[1]            = (jval){.kind = JV_STR, .u.s = {"content", 7}};
        kv[2]            = (jval){.kind = JV_STR, .u.s = {role, strlen(role)}};
        kv[3]            = (jval){.kind = JV_STR,
                                  .u.s  = {text, messages[i].content ? messages[i].content_len : 0}};
        d->keys = kv, d->vals = kv + 2, d->n = d->cap = 2;
        items[i] = (jval){.kind = JV_DICT, .u.d = d};
    }
    list->items = items, list->n = list->cap = n;
    jinja_var v[] = {
        {"messages", {.kind = JV_LIST, .u.l = list}},
        {"bos_token", token_value(vars ? vars->bos_token : NULL)},
        {"eos_token", token_value(vars ? vars->eos_token : NULL)},
        {"add_generation_prompt", {.kind = JV_BOOL, .u.b = vars && vars->add_generation_prompt}},
        {"tools", {.kind = JV_NONE}},
        {"documents", {.kind = JV_NONE}},
    };
    size_t nv = sizeof v / sizeof *v;
    for (size_t i = 0; i < nv; i++) /* an absent token stays undefined, as when HF lacks it */
        if (v[i].value.kind == JV_UNDEF) {
            memmove(&v[i], &v[i + 1], (nv - i - 1) * sizeof *v);
            nv--, i--;
        }
    int rc = jinja_render(t->root, t->where, v, nv, out, out_len, err);
    jarena_free(&a);
    return rc;
}

/* A special token's text: a string or {"content": ...}; NULL when the value is neither. */
static const char *json_token(const cJSON *v) {
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads and parses a JSON object file (duplicate keys keep the last value). */
static int json_read(const char *path, cJSON **out, assay_error *err) {
    char  *buf = NULL;
    size_t len = 0;
    int    rc  = file_read_capped(path, TOKENIZER_CONFIG_MAX, &buf, &len, err);
    *out       = NULL;
    if (rc)
        return rc;
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return assay_fail(err, ASSAY_EFORMAT, "%s: not a JSON object", path);
    }
    if (config_json_keep_last(j)) {
        cJSON_Delete(j);
        return assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
    }
    *out = j;
    return 0;
}

/* The tokenizer_config.json of GGUF file `path`, parsed. */
static int gguf_tokenizer_config(const char *path, cJSON **out, assay_error *err) {
    char      *tj = NULL, *tc = NULL;
    gguf_file *g = gguf_open(path, err);
    *out         = NULL;
    if (!g)
        return err->code ? err->code : ASSAY_EFORMAT;
    int rc = gguf_tokenizer_texts(g, path, &tj, &tc, err);
    gguf_close(g);
    free(tj);
    if (rc)
        return rc;
    *out = cJSON_Parse(tc);
    free(tc);
    return *out ? ASSAY_OK : assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", path);
}

int chat_template_load_dir(const char *model_dir, chat_template **tpl, chat_vars *vars,
                           assay_error *err) {
    char        cfg_path[4096], jinja_path[4096], map_path[4096], where[4200];
    char       *jinja    = NULL;
    const char *text     = NULL;
    size_t      text_len = 0;
    cJSON      *cfg = NULL, *map = NULL;
    int         rc = 0;
    *tpl           = NULL;
    memset(vars, 0, sizeof *vars);
    int gguf = model_path_is_gguf(model_dir);
    if (gguf) {
        /* the tokenizer_config.json `assay convert` would write holds the template and tokens */
        snprintf(cfg_path, sizeof cfg_path, "%s: tokenizer.chat_template", model_dir);
        if ((rc = gguf_tokenizer_config(model_dir, &cfg, err)))
            goto done;
    } else if (path_join(cfg_path, sizeof cfg_path, model_dir, "tokenizer_config.json") ||
               path_join(jinja_path, sizeof jinja_path, model_dir, "chat_template.jinja") ||
               path_join(map_path, sizeof map_path, model_dir, "special_tokens_map.json"))
        return assay_fail(err, ASSAY_EINVAL, "%s: path too long", model_dir);
    if (!gguf && path_exists(cfg_path) && (rc = json_read(cfg_path, &cfg, err)))
        goto done;
    if (!gguf && path_present(jinja_path)) {
        /* a chat_template.jinja beside the config wins over its entry, as transformers loads it */
        if ((rc = file_read_capped(jinja_path, CHAT_TEMPLATE_JINJA_MAX, &jinja, &text_len, err)))
            goto done;
        text = jinja;
        snprintf(where, sizeof where, "%s", jinja_path);
    } else if (cfg) {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsArray(ct)) {
            /* the named-templates form: [{"name": "default", "template": "..."}, ...] */
            const cJSON *e, *found = NULL;
            cJSON_ArrayForEach(e, ct) {
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
                if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0)
                    found = cJSON_GetObjectItemCaseSensitive(e, "template");
            }
            if (!found) {
                rc =
                    assay_fail(err, ASSAY_EFORMAT,
                               "%s: chat_template is a list without a \"default\" entry", cfg_path);
                goto done;
            }
            ct = found;
        }
        if (ct && !cJSON_IsNull(ct) && !cJSON_IsString(ct)) {
            rc = assay_fail(err, ASSAY_EFORMAT,
                            "%s: chat_template must be a string or a list of {name, template}",
                            cfg_path);
            goto done;
        }
        if (cJSON_IsString(ct)) {
            text     = ct->valuestring;
            text_len = strlen(text);
            snprintf(where, sizeof where, "%s%s", cfg_path, gguf ? "" : " (chat_template)");
        }
    }
    if (!text)
        goto done; /* no template: *tpl stays NULL */
    if (!(*tpl = chat_template_parse(text, text_len, where, err))) {
        rc = err->code;
        goto done;
    }
    /* bos/eos from tokenizer_config.json, else special_tokens_map.json, else "" */
    const char *bos = json_token(cJSON_GetObjectItemCaseSensitive(cfg, "bos_token"));
    const char *eos = json_token(cJSON_GetObjectItemCaseSensitive(cfg, "eos_token"));
    if ((!bos || !eos) && !gguf && path_exists(map_path) && (rc = json_read(map_path, &map, err))) {
        chat_template_free(*tpl);
        *tpl = NULL;
        goto done;
    }
    if (!bos)
        bos = json_token(cJSON_GetObjectItemCaseSensitive(map, "bos_token"));
    if (!eos)
        eos = json_token(cJSON_GetObjectItemCaseSensitive(map, "eos_token"));
    (*tpl)->bos = strdup(bos ? bos : "");
    (*tpl)->eos = strdup(eos ? eos : "");
    if (!(*tpl)->bos || !(*tpl)->eos) {
        chat_template_free(*tpl);
        *tpl = NULL;
        rc   = assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", model_dir);
        goto done;
    }
    vars->bos_token = (*tpl)->bos;
    vars->eos_token = (*tpl)->eos;
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    free(jinja);
    return rc;
}
