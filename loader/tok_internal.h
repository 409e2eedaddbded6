/* loader/tok_internal.h — internals of the tokenizer shared by loader/tokenizer.c (loading, API,
 * decoding), loader/tok_model.c (hash maps, BPE) and loader/tok_text.c (normalizers,
 * pre-tokenizers, UTF-8 helpers). Not a public header. */
#ifndef ASSAY_TOK_INTERNAL_H
#define ASSAY_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "loader/tokenizer.h"

/* ---- growable buffers ------------------------------------------------------------------- */

/* Ensures *p (elements of `elem` bytes) holds at least `need` elements; 0 ok, -1 no memory. */
int tok_grow(void **p, size_t *cap, size_t need, size_t elem);

/* ---- string -> int32 map (open addressing; keys copied into an arena) --------------------- */

typedef struct tok_smap {
    uint64_t *slots; /* hash << 32 | (entry index + 1); 0 = empty */
    size_t    mask;  /* slots - 1 (power of two) */
    struct tok_sent {
        uint32_t off, len, hash; /* key bytes at arena + off */
        int32_t  val;
    } * ent; /* one 16-byte record per key: one cache miss per probe */
    size_t n, cap;
    char  *arena;
    size_t alen, acap;
} tok_smap;

uint32_t tok_hash(const void *p, size_t n);
int      tok_smap_init(tok_smap *m, size_t expect);
/* Inserts or overwrites; 0 ok, -1 no memory. */
int     tok_smap_put(tok_smap *m, const char *k, size_t n, int32_t v);
int32_t tok_smap_get(const tok_smap *m, const char *k, size_t n); /* -1 absent */
/* Batched lookups (load time is memory latency): prefetch the slot, then the entry, then get
 * with the precomputed hash h = tok_hash(k, n). */
void    tok_smap_prefetch(const tok_smap *m, uint32_t h);
void    tok_smap_prefetch_entry(const tok_smap *m, uint32_t h);
int32_t tok_smap_get_h(const tok_smap *m, const char *k, size_t n, uint32_t h);
void    tok_smap_free(tok_smap *m);

/* ---- (id, id) -> (rank, new id) map ------------------------------------------------------- */

typedef struct tok_pmap {
    uint64_t *keys; /* UINT64_MAX = empty */
    uint32_t *rank;
    int32_t  *val;
    size_t    mask, n;
} tok_pmap;

int  tok_pmap_init(tok_pmap *m, size_t expect);
int  tok_pmap_put(tok_pmap *m, uint64_t key, uint32_t rank, int32_t val);         /* overwrites */
int  tok_pmap_get(const tok_pmap *m, uint64_t key, uint32_t *rank, int32_t *val); /* 1 found */
void tok_pmap_free(tok_pmap *m);

/* ---- patterns (Split, Replace) ------------------------------------------------------------ */

/* Pre-tokenizer regexes whose cut points are worked out (see tok_encode's chunking). */
enum { TOK_RE_OTHER, TOK_RE_GPT2, TOK_RE_CL100K, TOK_RE_QWEN2 };

typedef struct tok_pattern {
    int         is_regex;
    int         known; /* TOK_RE_*: which well-known regex this is (exact text match) */
    char       *str;   /* String pattern (may be empty) */
    size_t      len;
    pcre2_code *re;
    char       *src; /* regex as written in tokenizer.json, for messages */
} tok_pattern;

/* Returns the TOK_RE_* of a regex given as it is written in tokenizer.json. */
int tok_regex_known(const char *pat, size_t len);

/* Compiles an HF (Oniguruma-flavoured) regex with PCRE2; \s \w \d are rewritten to the Unicode
 * classes Oniguruma uses. On failure writes PCRE2's message and offset into msg. */
pcre2_code *tok_regex_compile(const char *pat, size_t len, char *msg, size_t msgcap);

/* ---- components --------------------------------------------------------------------------- */

enum {
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_LOWER,
    NORM_STRIP,
    NORM_STRIP_ACCENTS,
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_SEQ
};

typedef struct tok_norm {
    int              type;
    int              left, right; /* Strip */
    char            *str;         /* Prepend text / Replace content */
    size_t           len;
    tok_pattern      pat; /* Replace */
    struct tok_norm *kids;
    size_t           nkids;
} tok_norm;

enum {
    PRE_SPLIT,
    PRE_BYTELEVEL,
    PRE_METASPACE,
    PRE_DIGITS,
    PRE_PUNCT,
    PRE_WS,
    PRE_WSSPLIT,
    PRE_BERT,
    PRE_CHARDELIM,
    PRE_SEQ
};
enum { BEH_REMOVED, BEH_ISOLATED, BEH_PREV, BEH_NEXT, BEH_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct tok_pre {
    int             type;
    tok_pattern     pat; /* Split; CharDelimiterSplit uses pat.str */
    int             behavior;
    int             invert;
    int             add_prefix_space, use_regex; /* ByteLevel */
    int             individual_digits;           /* Digits */
    char            repl[8];                     /* Metaspace replacement (UTF-8) */
    size_t          repl_len;
    int             prepend_scheme, split; /* Metaspace */
    struct tok_pre *kids;
    size_t          nkids;
} tok_pre;

enum {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE,
    DEC_BPE,
    DEC_WORDPIECE,
    DEC_SEQ
};

typedef struct tok_dec {
    int             type;
    tok_pattern     pat; /* Replace */
    char           *str; /* Replace content, Strip content char, BPE suffix, WordPiece prefix */
    size_t          len;
    int             start, stop; /* Strip */
    char            repl[8];     /* Metaspace */
    size_t          repl_len;
    int             prepend_scheme;
    int             cleanup; /* WordPiece */
    struct tok_dec *kids;
    size_t          nkids;
} tok_dec;

/* Added-token matcher: a byte trie walked for leftmost-longest matches (what HF's aho-corasick
 * MatchKind::LeftmostLongest finds). */
typedef struct tok_trie {
    tok_pmap edges; /* (node << 8 | byte) -> child node */
    int32_t *term;  /* per node: index into tokenizer.added, -1 none */
    size_t   nnodes, cap;
    uint8_t  first[256];
    int      empty;
} tok_trie;

typedef struct tok_added {
    char   *content;
    size_t  len;
    char   *piece; /* normalized content for normalized tokens (what HF's id_to_token gives) */
    size_t  piece_len;
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} tok_added;

/* ---- BPE word cache ------------------------------------------------------------------------ */

/* word bytes -> its BPE tokens (id, [s, e) in the word), as HF's BPE keeps (capacity 10,000,
 * words under 256 bytes). Shared by all threads: sharded, each shard behind a mutex that is only
 * ever try-locked, so a busy shard means a miss, never a wait. Entries are never evicted; when a
 * shard is full, new words are not cached. */
typedef struct tok_cache tok_cache;
typedef struct tok_cval {
    int32_t  id;
    uint16_t s, e;
} tok_cval;

tok_cache *tok_cache_new(void);
void       tok_cache_free(tok_cache *c); /* NULL-safe */
/* Copies the tokens of word k[0..n) (h = tok_hash(k, n)) into out (room for cap entries);
 * returns their count, or -1 on a miss, a busy shard or too little room. */
int  tok_cache_get(tok_cache *c, const char *k, size_t n, uint32_t h, tok_cval *out, size_t cap);
void tok_cache_put(tok_cache *c, const char *k, size_t n, uint32_t h, const tok_cval *v, size_t nv);
enum { TOK_CACHE_MAX_WORD = 255 };

/* ---- chunked encoding ------------------------------------------------------------------------ */

/* How a long text may be cut into pieces that encode independently (tok_encode): NONE, whole
 * text only; BOUNDARY, the cut is a pre-token boundary the pre-tokenizer always makes; SPAN,
 * the cut may fall inside a pre-token (or the text is one word), and is taken only where no BPE
 * merge can join the two sides. */
enum { TOK_CHUNK_NONE, TOK_CHUNK_BOUNDARY, TOK_CHUNK_SPAN };

/* ---- the tokenizer ------------------------------------------------------------------------ */

struct tokenizer {
    char *path; /* the file it was loaded from, for messages */
    /* model: BPE */
    tok_smap vocab;        /* HF piece string -> id (model vocab only) */
    tok_smap raw;          /* byte-level mode: raw bytes -> id */
    tok_pmap merges;       /* (a, b) -> (rank, merged id) */
    int      byte_level;   /* model sees raw bytes (ByteLevel pre-tokenizer at the end) */
    int32_t  byte_id[256]; /* byte-level: id of each single byte; -1 none */
    int32_t  unk_id;       /* -1 none */
    int      fuse_unk, byte_fallback, ignore_merges;
    int32_t  bytefb_id[256]; /* <0xXX> ids, -1 missing */
    char    *cont_prefix, *eow_suffix;
    size_t   cont_prefix_len, eow_suffix_len;

    /* pieces by id (model vocab, overridden by added tokens) */
    char    **piece;
    uint32_t *piece_len;
    int32_t   n_ids;
    uint8_t  *is_special;
    char     *piece_arena;

    tok_added *added;
    size_t     n_added;
    tok_smap   added_map; /* content -> index into added */
    tok_trie   trie_raw, trie_norm;

    tok_norm *norm;
    tok_pre  *pre;
    tok_dec  *dec;
    int       has_post;
    int       post_trim, post_trim_prefix; /* ByteLevel post-processor trim_offsets */
    int32_t  *post_pre, *post_suf;
    size_t    n_post_pre, n_post_suf;

    int32_t bos_id, eos_id;
    int     add_bos_cfg; /* -1 absent */
    int     chat_template;
    int64_t max_len;
    char    kind[32];

    /* chunked encoding of long texts (planned at load) */
    int         chunk_mode; /* TOK_CHUNK_* */
    int         chunk_nl;   /* cut after '\n' before a printable char is also allowed */
    const char *chunk_why;  /* when NONE: the component that prevents cutting */
    /* verdicts on cutting between ASCII chars x|y, filled on first use (0 unknown, 1 yes,
     * 2 no); atomic because encoding threads share the tokenizer (same value from any thread) */
    _Atomic unsigned char chunk_memo[128][128];
    /* SPAN mode: a word is also cut before each normalized space ("▁") that follows an ASCII
     * char x when no merge can join x and the space (word_memo[x], as chunk_memo), so the
     * pieces are short and hit the word cache */
    char                  space_norm[8];
    size_t                space_norm_len; /* 0: words are not cut */
    _Atomic unsigned char word_memo[128];
    tok_cache            *cache; /* NULL: no cache */
};

/* ---- encoding work state (one per tok_encode call; grows, never per token) ---------------- */

typedef struct tok_split {
    size_t  off, len; /* in the source (input text when !in_arena, else the arena) */
    size_t  orig;     /* identity splits: original offset of byte 0 */
    int32_t id;       /* added token id, or -1 for text */
    uint8_t in_arena;
} tok_split;

typedef struct tok_work {
    const char *text; /* the (possibly U+FFFD-repaired) input */
    size_t      text_len;
    char       *arena;
    uint32_t   *al; /* 2 per arena byte: original [start, end) */
    size_t      alen, acap, alcap;
    tok_split  *sp, *sp2;
    size_t      nsp, capsp, nsp2, capsp2;
    /* normalizer ping-pong buffers */
    char     *nb[2];
    uint32_t *nal[2];
    size_t    nbcap[2], nalcap[2];
    /* BPE */
    struct tok_sym      *sym;
    size_t               capsym;
    struct tok_heapent  *heap;
    size_t               caph;
    pcre2_match_data    *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack     *jit;
    const tok_pattern   *re_failed; /* the regex whose match failed (limit hit), and its */
    int                  re_rc;     /* PCRE2 error, for the message */
    int                  want_offsets;
    int                  no_prepend; /* this stretch continues one cut by chunking: no Prepend */
    tok_ids             *out;
    tok_cval            *cv; /* cache values of one word */
    size_t               capcv;
} tok_work;

typedef struct tok_sym {
    int32_t  id;
    int32_t  prev, next;
    uint32_t start, len;
} tok_sym;

typedef struct tok_heapent {
    uint32_t rank;
    uint32_t pos;
    int32_t  id;
} tok_heapent;

/* Appends one id (and offsets when requested); 0 ok, -1 no memory. */
int tok_ids_push(tok_ids *v, int32_t id, int32_t s, int32_t e, int want_offsets);

/* Encodes with cuts at most every `chunk` bytes where allowed (0: default, SIZE_MAX: never);
 * tok_encode is this with the default. Tests use small chunks to cut at every safe point. */
int tok_encode_chunked(const tokenizer *t, const char *text, size_t len,
                       const tok_encode_opts *opts, int want_offsets, size_t chunk, tok_ids *out,
                       assay_error *err);

/* Runs the BPE model on bytes w[0..n) of split `sp`, appending tokens to work->out. */
int tok_bpe_word(const tokenizer *t, tok_work *w, const char *s, size_t n, const tok_split *sp,
                 assay_error *err);

/* Maps [s, e) of a split to original offsets. */
void tok_split_offsets(const tok_work *w, const tok_split *sp, size_t s, size_t e, int32_t *os,
                       int32_t *oe);

/* Normalizes original range [a, b) into the arena; appends the resulting split to w->sp. */
int tok_normalize(const tokenizer *t, tok_work *w, size_t a, size_t b, assay_error *err);

/* Runs the pre-tokenizer over w->sp (text splits only). */
int tok_pretokenize(const tokenizer *t, tok_work *w, assay_error *err);

/* Leftmost-longest added-token matching on s[0..n) (HF AddedVocabulary::find_matches). Calls
 * emit(ctx, id or -1, start, end) for every piece, in order, covering the text. */
typedef int (*tok_emit_fn)(void *ctx, int32_t id, size_t s, size_t e);
int tok_trie_split(const tokenizer *t, const tok_trie *tr, const char *s, size_t n,
                   int split_special, tok_emit_fn emit, void *ctx);

/* UTF-8 helpers. */
size_t  tok_utf8_len(unsigned char c);                         /* 1..4 for a lead */
int32_t tok_utf8_decode(const char *s, size_t n, size_t *adv); /* -1 on invalid */
size_t  tok_utf8_encode(int32_t c, char *out);
size_t  tok_utf8_valid_prefix(const char *s, size_t n, size_t *bad_len); /* bytes valid */
int     tok_is_whitespace(int32_t c);                                    /* Rust is_whitespace */
int     tok_is_word_char(int32_t c);                                     /* regex \w */

/* Byte-level (GPT-2) byte <-> char tables. */
void tok_bytelevel_tables(int32_t byte_to_cp[256]);

#endif
