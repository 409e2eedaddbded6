/* loader/jinja_internal.h — the pieces of the chat-template engine shared by the parser
 * (jinja_parse.c) and the renderer (jinja_eval.c): an arena, values and the syntax tree.
 * Not a public interface: loader/chat_template.h is. */
#ifndef ASSAY_JINJA_INTERNAL_H
#define ASSAY_JINJA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Caps that keep an untrusted template bounded. */
#define JINJA_MAX_DEPTH 200                  /* nesting of expressions and blocks */
#define JINJA_MAX_CALL_DEPTH 64              /* macro calls in flight */
#define JINJA_MAX_OUTPUT ((size_t)64 << 20)  /* rendered bytes */
#define JINJA_MAX_ITERATIONS 10000000L       /* loop iterations of one render, all loops */
#define JINJA_MAX_MEMORY ((size_t)256 << 20) /* values made while rendering */

/* Bump allocator: everything of one parse or one render is freed at once. Zeroed memory. */
typedef struct jarena_block jarena_block;
typedef struct jarena {
    jarena_block *head;
    size_t        used; /* bytes handed out, for the cap */
    size_t        cap;  /* 0: no cap */
} jarena;

void *jarena_alloc(jarena *a, size_t n); /* NULL when out of memory or over the cap */
void  jarena_free(jarena *a);

typedef struct jstr {
    const char *p;
    size_t      n;
} jstr;

typedef enum jkind {
    JV_UNDEF,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST, /* list or tuple (flag) */
    JV_ITER, /* what Jinja2's select, map, unique, items and reverse filters return: a generator
              * (always true, no len(), iterable); held as a jlist */
    JV_DICT,
    JV_NS,    /* namespace(): a dict whose attributes may be assigned */
    JV_LOOP,  /* the `loop` variable of a for */
    JV_FUNC,  /* a global function (raise_exception, namespace, dict, range, strftime_now) */
    JV_MACRO, /* a {% macro %} */
    JV_CYCLE  /* loop.cycle, bound to its loop */
} jkind;

typedef struct jlist  jlist;
typedef struct jdict  jdict;
typedef struct jloop  jloop;
typedef struct jnode  jnode;
typedef struct jframe jframe;

typedef struct jval {
    uint8_t kind;
    uint8_t tuple; /* JV_LIST: a tuple (repr uses parentheses) */
    union {
        int            b;
        int64_t        i;
        double         f;
        jstr           s;    /* JV_STR; JV_UNDEF: the message its use would fail with */
        jlist         *l;    /* JV_LIST, JV_ITER */
        jdict         *d;    /* JV_DICT, JV_NS */
        jloop         *loop; /* JV_LOOP, JV_CYCLE */
        int            fn;   /* JV_FUNC */
        struct jmacro *macro;
    } u;
} jval;

struct jlist {
    jval  *items;
    size_t n, cap;
};

struct jdict {
    jval  *keys;
    jval  *vals;
    size_t n, cap;
};

/* A macro and the scope it was defined in (it sees that scope's variables when called). */
struct jmacro {
    const jnode *node;
    jframe      *env;
};

struct jloop {
    jval  *items; /* the (filtered) sequence */
    size_t n, i;
};

/* Syntax tree. One node type for statements and expressions; fields used per type below. */
typedef enum jnt {
    /* statements */
    JN_BODY,     /* kids: statements */
    JN_TEXT,     /* s */
    JN_OUTPUT,   /* a: expression */
    JN_IF,       /* kids: conditions, kids2: bodies (one more when there is an else) */
    JN_FOR,      /* names: targets, a: iterable, b: filter or NULL, c: body, d: else or NULL */
    JN_SET,      /* names: targets, a: value */
    JN_SETATTR,  /* s: namespace variable, s2: attribute, a: value */
    JN_SETBLOCK, /* s: name, a: body */
    JN_MACRO,    /* s: name, names: parameters, kids: defaults (NULL where none), a: body */
    JN_BREAK,
    JN_CONTINUE,
    /* expressions */
    JN_LIT,     /* val */
    JN_LIST,    /* kids; op 1: tuple */
    JN_DICT,    /* kids: keys, kids2: values */
    JN_NAME,    /* s */
    JN_GETATTR, /* a: object, s: attribute */
    JN_GETITEM, /* a: object, b: index */
    JN_SLICE,   /* a: object, b, c, d: start, stop, step (NULL when absent) */
    JN_CALL,    /* a: callee, kids: positional, names + kids2: keyword arguments */
    JN_FILTER,  /* a: value, s: filter, kids / names + kids2: arguments */
    JN_TEST,    /* a: value, s: test, kids: arguments, op 1: negated */
    JN_UNARY,   /* op: '-', '+', '!' (not), a */
    JN_BINARY,  /* op: JOP_*, a, b */
    JN_COMPARE, /* a: first operand, kids: further operands, ops: one per further operand */
    JN_AND,
    JN_OR,
    JN_COND /* a: condition, b: then, c: else or NULL */
} jnt;

enum {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_CONCAT,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN
};

struct jnode {
    uint8_t type;
    int     op;
    int     line, col;
    jnode  *a, *b, *c, *d;
    jnode **kids;
    size_t  nkids;
    jnode **kids2;
    size_t  nkids2;
    jstr   *names;
    size_t  nnames;
    int    *ops;
    jstr    s, s2;
    jval    val;
};

/* Parses template text into a tree allocated from `arena`; errors name `where` and line:col. */
int jinja_parse(jarena *arena, const char *text, size_t len, const char *where, jnode **root,
                assay_error *err);

/* 1 when the renderer implements the filter (test 0) or test (test 1) called `name`. */
int jinja_known(int test, jstr name);

/* Lengths of s without trailing / leading whitespace (Python's str.isspace). */
size_t jinja_rstrip_len(const char *s, size_t n);
size_t jinja_lstrip_len(const char *s, size_t n);

/* Variables a render sees besides the globals. */
typedef struct jinja_var {
    const char *name;
    jval        value;
} jinja_var;

/* Renders `root`. Values in `vars` must outlive the call. *out is malloc'd and NUL-terminated. */
int jinja_render(const jnode *root, const char *where, const jinja_var *vars, size_t nvars,
                 char **out, size_t *out_len, assay_error *err);

#endif
