/* scoring/flt_json.c — JSON format compliance of a response. The response is checked against
 * RFC 8259 by a small validator of our own (as Python's json.loads with NaN/Infinity refused:
 * cJSON also takes "01", "1." and unescaped control characters), which also reads the types of
 * the top-level object's members for the schema; the schema itself is parsed with cJSON. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scoring/filters.h"
#include "scoring/flt_internal.h"

enum {
    T_STRING  = 1 << 0,
    T_NUMBER  = 1 << 1,
    T_INTEGER = 1 << 2, /* a number with an integral value (JSON Schema: 1.0 is an integer) */
    T_BOOLEAN = 1 << 3,
    T_ARRAY   = 1 << 4,
    T_OBJECT  = 1 << 5,
    T_NULL    = 1 << 6,
    T_ANY     = 0x7F,
};

/* Python's recursion limit would stop json.loads near 1000 levels; deeper is "not JSON" here. */
#define JSON_DEPTH_MAX 512

static const struct {
    const char *name;
    unsigned    bits;
} TYPES[] = {{"string", T_STRING},   {"number", T_NUMBER}, {"integer", T_INTEGER},
             {"boolean", T_BOOLEAN}, {"array", T_ARRAY},   {"object", T_OBJECT},
             {"null", T_NULL},       {"any", T_ANY}};

typedef struct schema_field {
    char    *key;
    unsigned types;
    int      required;
} schema_field;

struct flt_schema {
    schema_field *f;
    size_t        n;
};

void flt_schema_free(flt_schema *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->f[i].key);
    free(s->f);
    free(s);
}

/* "number", or "string or null" for a list of types. */
static void type_names(char *buf, size_t cap, unsigned bits) {
    size_t w = 0;
    buf[0]   = '\0';
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0] && w < cap; i++) {
        unsigned t = TYPES[i].bits;
        /* integer within number is implied, not listed */
        if ((bits & t) == t && t != T_ANY && !(t == T_INTEGER && (bits & T_NUMBER)))
            w += (size_t)snprintf(buf + w, cap - w, "%s%s", w ? " or " : "", TYPES[i].name);
    }
}

/* The field for key (added when new). NULL when out of memory. */
static schema_field *schema_field_get(flt_schema *s, const char *key) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->f[i].key, key))
            return &s->f[i];
    schema_field *nf = realloc(s->f, (s->n + 1) * sizeof *nf);
    if (!nf)
        return NULL;
    s->f            = nf;
    schema_field *f = &nf[s->n];
    f->key          = strdup(key);
    f->types        = T_ANY;
    f->required     = 0;
    if (!f->key)
        return NULL;
    s->n++;
    return f;
}

/* A type: a name, or (JSON Schema form) a list of names. 0 when not one. */
static unsigned schema_type_bits(const cJSON *t, int allow_list) {
    if (cJSON_IsString(t)) {
        for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
            if (!strcmp(t->valuestring, TYPES[i].name))
                return TYPES[i].bits;
        return 0;
    }
    if (!allow_list || !cJSON_IsArray(t) || !t->child)
        return 0;
    unsigned bits = 0;
    for (const cJSON *e = t->child; e; e = e->next) {
        unsigned b = schema_type_bits(e, 0);
        if (!b)
            return 0;
        bits |= b;
    }
    return bits;
}

static int is_annotation(const char *k) {
    return !strcmp(k, "$schema") || !strcmp(k, "$id") || !strcmp(k, "title") ||
           !strcmp(k, "description");
}

#define SCHEMA_FAIL(...)                                                                           \
    do {                                                                                           \
        assay_fail(err, ASSAY_EINVAL, __VA_ARGS__);                                                \
        goto fail;                                                                                 \
    } while (0)
#define SCHEMA_FIELD(f, key)                                                                       \
    if (!((f) = schema_field_get(s, key)))                                                         \
    SCHEMA_FAIL("%s: out of memory", where)

flt_schema *flt_schema_parse(const char *text, size_t n, const char *where, assay_error *err) {
    where           = where ? where : "schema";
    flt_schema   *s = calloc(1, sizeof *s);
    cJSON        *j = text ? cJSON_ParseWithLength(text, n) : NULL;
    schema_field *f;
    if (!s) {
        cJSON_Delete(j);
        assay_fail(err, ASSAY_ENOMEM, "%s: out of memory", where);
        return NULL;
    }
    if (!cJSON_IsObject(j))
        SCHEMA_FAIL(
            "%s: expected a JSON object {\"required\": {...}} or {\"type\": \"object\", ...}",
            where);
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "required");
    if (cJSON_IsObject(req)) { /* {"required": {"key": "type", ...}} */
        for (const cJSON *e = j->child; e; e = e->next)
            if (strcmp(e->string, "required"))
                SCHEMA_FAIL("%s: unexpected key \"%.80s\" beside \"required\"", where, e->string);
        for (const cJSON *e = req->child; e; e = e->next) {
            unsigned bits = schema_type_bits(e, 0);
            if (!bits)
                SCHEMA_FAIL("%s: required.%.80s: expected a type name (string, number, integer, "
                            "boolean, array, object, null, any)",
                            where, e->string);
            SCHEMA_FIELD(f, e->string);
            f->types    = bits;
            f->required = 1;
        }
        cJSON_Delete(j);
        return s;
    }
    for (const cJSON *e = j->child; e; e = e->next) {
        const char *k = e->string;
        if (is_annotation(k))
            continue;
        if (!strcmp(k, "type")) {
            if (!cJSON_IsString(e) || strcmp(e->valuestring, "object"))
                SCHEMA_FAIL("%s: \"type\" must be \"object\"", where);
        } else if (!strcmp(k, "properties")) {
            if (!cJSON_IsObject(e))
                SCHEMA_FAIL("%s: \"properties\" must be an object", where);
            for (const cJSON *p = e->child; p; p = p->next) {
                if (!cJSON_IsObject(p))
                    SCHEMA_FAIL("%s: properties.%.80s must be an object", where, p->string);
                unsigned bits = T_ANY;
                for (const cJSON *q = p->child; q; q = q->next) {
                    if (is_annotation(q->string))
                        continue;
                    if (strcmp(q->string, "type"))
                        SCHEMA_FAIL("%s: properties.%.80s: unsupported keyword \"%.80s\" (only "
                                    "\"type\")",
                                    where, p->string, q->string);
                    if (!(bits = schema_type_bits(q, 1)) || bits == T_ANY)
                        SCHEMA_FAIL("%s: properties.%.80s.type: expected a JSON Schema type or "
                                    "a list of them",
                                    where, p->string);
                }
                SCHEMA_FIELD(f, p->string);
                f->types = bits;
            }
        } else if (!strcmp(k, "required")) {
            if (!cJSON_IsArray(e))
                SCHEMA_FAIL("%s: \"required\" must be an array of key names or an object of "
                            "key: type",
                            where);
            for (const cJSON *p = e->child; p; p = p->next) {
                if (!cJSON_IsString(p))
                    SCHEMA_FAIL("%s: \"required\" must list key names (strings)", where);
                SCHEMA_FIELD(f, p->valuestring);
                f->required = 1;
            }
        } else {
            SCHEMA_FAIL("%s: unsupported keyword \"%.80s\" (type, properties, required)", where, k);
        }
    }
    if (!cJSON_GetObjectItemCaseSensitive(j, "type"))
        SCHEMA_FAIL("%s: expected \"type\": \"object\" or {\"required\": {...}}", where);
    cJSON_Delete(j);
    return s;
fail:
    cJSON_Delete(j);
    flt_schema_free(s);
    return NULL;
}

/* ---- the validator ------------------------------------------------------------------------ */

typedef struct jparse {
    const char       *s;
    size_t            n, i;
    const char       *err; /* first syntax error */
    int               oom;
    const flt_schema *schema;
    unsigned         *found;  /* per schema field: the type bits of its (last) value, 0 absent */
    char             *keybuf; /* n + 1 bytes for a decoded top-level key, when a schema has keys */
} jparse;

static int jfail(jparse *p, const char *why) {
    p->err = why;
    return -1;
}

static int jfail_oom(jparse *p) {
    p->oom = 1;
    return -1;
}

static void skip_ws(jparse *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char     c = s[k];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d == 16)
            return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* A string at p->i ('"'). When key is not NULL, its decoded bytes are written there (the
 * caller gives n + 1 bytes: decoding never lengthens; a lone surrogate becomes 0xFF, which no
 * schema key contains). */
static int parse_string(jparse *p, char *key, size_t *key_n) {
    size_t w = 0;
    p->i++;
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            if (key)
                key[w] = '\0', *key_n = w;
            return 0;
        }
        if (c < 0x20)
            return jfail(p, "control character in a string");
        if (c != '\\') {
            if (key)
                key[w++] = (char)c;
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->n)
            break;
        char        e      = p->s[p->i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char out[] = "\"\\/\b\f\n\r\t";
            if (key)
                key[w++] = out[simple - "\"\\/bfnrt"];
            p->i += 2;
            continue;
        }
        unsigned u;
        if (e != 'u' || p->n - p->i < 6 || hex4(p->s + p->i + 2, &u))
            return jfail(p, "invalid escape in a string");
        p->i += 6;
        if (u >= 0xD800 && u < 0xDC00 && p->n - p->i >= 6 && p->s[p->i] == '\\' &&
            p->s[p->i + 1] == 'u') {
            unsigned lo;
            if (!hex4(p->s + p->i + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                p->i += 6;
            }
        }
        if (!key)
            continue;
        if (u >= 0xD800 && u < 0xE000)
            key[w++] = (char)0xFF;
        else if (u < 0x80)
            key[w++] = (char)u;
        else if (u < 0x800)
            key[w++] = (char)(0xC0 | (u >> 6)), key[w++] = (char)(0x80 | (u & 0x3F));
        else if (u < 0x10000)
            key[w++] = (char)(0xE0 | (u >> 12)), key[w++] = (char)(0x80 | ((u >> 6) & 0x3F)),
            key[w++] = (char)(0x80 | (u & 0x3F));
        else
            key[w++] = (char)(0xF0 | (u >> 18)), key[w++] = (char)(0x80 | ((u >> 12) & 0x3F)),
            key[w++] = (char)(0x80 | ((u >> 6) & 0x3F)), key[w++] = (char)(0x80 | (u & 0x3F));
    }
    return jfail(p, "unterminated string");
}

static size_t digits(jparse *p) {
    size_t k = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
        p->i++, k++;
    return k;
}

/* A number; *bits gets T_NUMBER, plus T_INTEGER when its value is integral (as Python's int, or
 * a float for which is_integer() holds). */
static int parse_number(jparse *p, unsigned *bits) {
    size_t st = p->i;
    if (p->s[p->i] == '-')
        p->i++;
    if (p->i < p->n && p->s[p->i] == '0')
        p->i++;
    else if (!digits(p))
        return jfail(p, "invalid number");
    int is_int = 1;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        is_int = 0;
        if (!digits(p))
            return jfail(p, "invalid number");
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        is_int = 0;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (!digits(p))
            return jfail(p, "invalid number");
    }
    *bits = T_NUMBER;
    if (is_int) {
        *bits |= T_INTEGER;
    } else if (p->schema) {
        char *t = strndup(p->s + st, p->i - st);
        if (!t)
            return jfail_oom(p);
        double v = strtod(t, NULL);
        free(t);
        if (isfinite(v) && floor(v) == v)
            *bits |= T_INTEGER;
    }
    return 0;
}

static int parse_value(jparse *p, int depth, unsigned *bits);

static int parse_container(jparse *p, int depth, int is_object) {
    if (depth >= JSON_DEPTH_MAX)
        return jfail(p, "nested too deeply");
    char close = is_object ? '}' : ']';
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close)
        return p->i++, 0;
    for (;;) {
        char  *key = NULL;
        size_t key_n;
        if (is_object) {
            if (p->i >= p->n || p->s[p->i] != '"')
                return jfail(p, "expected a key string");
            /* only the top-level object's keys are compared with the schema */
            key = depth == 0 ? p->keybuf : NULL;
            if (parse_string(p, key, &key_n))
                return -1;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':')
                return jfail(p, "expected ':'");
            p->i++;
        }
        unsigned bits;
        if (parse_value(p, depth + 1, &bits))
            return -1;
        if (key) { /* a repeated key keeps its last value, as Python's json does */
            for (size_t f = 0; f < p->schema->n; f++)
                if (strlen(p->schema->f[f].key) == key_n &&
                    !memcmp(p->schema->f[f].key, key, key_n))
                    p->found[f] = bits;
        }
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            skip_ws(p);
            continue;
        }
        if (p->i < p->n && p->s[p->i] == close)
            return p->i++, 0;
        return jfail(p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(jparse *p, int depth, unsigned *bits) {
    skip_ws(p);
    if (p->i >= p->n)
        return jfail(p, "expected a value");
    char c = p->s[p->i];
    int  rc;
    if (c == '{' || c == '[') {
        *bits = c == '{' ? T_OBJECT : T_ARRAY;
        rc    = parse_container(p, depth, c == '{');
    } else if (c == '"') {
        *bits = T_STRING;
        rc    = parse_string(p, NULL, NULL);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        rc = parse_number(p, bits);
    } else {
        static const struct {
            const char *lit;
            unsigned    bits;
        } lits[] = {{"true", T_BOOLEAN}, {"false", T_BOOLEAN}, {"null", T_NULL}};
        rc       = jfail(p, "expected a value");
        for (size_t k = 0; k < 3; k++) {
            size_t l = strlen(lits[k].lit);
            if (p->n - p->i >= l && !memcmp(p->s + p->i, lits[k].lit, l)) {
                p->i += l;
                *bits  = lits[k].bits;
                p->err = NULL;
                rc     = 0;
                break;
            }
        }
    }
    if (!rc)
        skip_ws(p);
    return rc;
}

/* The stripped response without one surrounding ``` fence (an info word such as "json" may
 * follow the opening one; a closing one is removed only after an opening one). */
static void json_unfence(const char *s, size_t n, size_t *a, size_t *b) {
    flt_strip_span(s, n, a, b);
    if (*b - *a < 3 || memcmp(s + *a, "```", 3))
        return;
    size_t i = *a + 3;
    while (i < *b && (s[i] == '_' || s[i] == '-' || s[i] == '+' || (s[i] >= '0' && s[i] <= '9') ||
                      ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')))
        i++;
    size_t j = *b;
    if (j - i >= 3 && !memcmp(s + j - 3, "```", 3))
        j -= 3;
    size_t a2, b2;
    flt_strip_span(s + i, j - i, &a2, &b2);
    *a = i + a2;
    *b = i + b2;
}

int flt_json_check_response(const flt_schema *schema, const char *s, size_t n,
                            flt_json_check *out) {
    memset(out, 0, sizeof *out);
    size_t a, b;
    json_unfence(s, n, &a, &b);
    jparse p = {.s = s + a, .n = b - a, .schema = schema};
    if (schema && schema->n) {
        p.found  = calloc(schema->n, sizeof *p.found);
        p.keybuf = malloc(p.n + 1);
        if (!p.found || !p.keybuf) {
            free(p.found);
            free(p.keybuf);
            return -1;
        }
    }
    unsigned bits = 0;
    int      rc   = parse_value(&p, 0, &bits);
    if (p.oom) {
        free(p.found);
        free(p.keybuf);
        return -1;
    }
    if (!rc && p.i < p.n)
        rc = jfail(&p, "extra data after the value");
    if (rc) {
        snprintf(out->why, sizeof out->why, "not JSON: %s at byte %zu", p.err, p.i);
        free(p.found);
        free(p.keybuf);
        return 0;
    }
    out->parses       = 1;
    out->has_required = 1;
    if (schema && bits != T_OBJECT) {
        out->has_required = 0;
        snprintf(out->why, sizeof out->why, "not a JSON object");
    }
    for (size_t f = 0; schema && out->has_required && f < schema->n; f++) {
        const schema_field *sf = &schema->f[f];
        if (!p.found[f] && sf->required) {
            out->has_required = 0;
            snprintf(out->why, sizeof out->why, "missing key \"%.100s\"", sf->key);
        } else if (p.found[f] && !(p.found[f] & sf->types)) {
            out->has_required = 0;
            char names[64];
            type_names(names, sizeof names, sf->types);
            snprintf(out->why, sizeof out->why, "%.80s: expected %s", sf->key, names);
        }
    }
    free(p.found);
    free(p.keybuf);
    return 0;
}
