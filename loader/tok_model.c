/* loader/tok_model.c — the hash maps behind the vocabulary and merges, and the BPE model: merges
 * applied by rank with a binary heap over adjacent pairs (as HF's Word::merge_all), so a long
 * word costs O(n log n). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "loader/tok_internal.h"

int tok_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return -1;
        nc *= 2;
    }
    size_t bytes;
    if (size_mul(nc, elem, &bytes))
        return -1;
    void *q = realloc(*p, bytes);
    if (!q)
        return -1;
    *p   = q;
    *cap = nc;
    return 0;
}

int tok_ids_push(tok_ids *v, int32_t id, int32_t s, int32_t e, int want_offsets) {
    if (v->n == v->cap) {
        size_t   nc = v->cap ? v->cap * 2 : 64;
        int32_t *ni = realloc(v->ids, nc * sizeof *ni);
        if (!ni)
            return -1;
        v->ids = ni;
        if (want_offsets || v->offsets) {
            int32_t *no = realloc(v->offsets, nc * 2 * sizeof *no);
            if (!no)
                return -1;
            v->offsets = no;
        }
        v->cap = nc;
    } else if (want_offsets && !v->offsets) {
        v->offsets = malloc(v->cap * 2 * sizeof *v->offsets);
        if (!v->offsets)
            return -1;
    }
    v->ids[v->n] = id;
    if (v->offsets) {
        v->offsets[2 * v->n]     = s;
        v->offsets[2 * v->n + 1] = e;
    }
    v->n++;
    return 0;
}

/* ---- hashing ----------------------------------------------------------------------------- */

uint32_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t             h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = (h ^ k) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    h = (h ^ k) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static size_t pow2_for(size_t expect) {
    size_t c = 64;
    while (c < expect * 2 + 16)
        c *= 2;
    return c;
}

int tok_smap_init(tok_smap *m, size_t expect) {
    memset(m, 0, sizeof *m);
    size_t c = pow2_for(expect);
    m->slots = calloc(c, sizeof *m->slots);
    if (!m->slots)
        return -1;
    m->mask = c - 1;
    return 0;
}

static int smap_rehash(tok_smap *m) {
    size_t    c  = (m->mask + 1) * 2;
    uint64_t *ns = calloc(c, sizeof *ns);
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->ent[i].hash & (c - 1);
        while (ns[j])
            j = (j + 1) & (c - 1);
        ns[j] = ((uint64_t)m->ent[i].hash << 32) | (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = ns;
    m->mask  = c - 1;
    return 0;
}

void tok_smap_prefetch(const tok_smap *m, uint32_t h) {
    __builtin_prefetch(&m->slots[h & m->mask]);
}

void tok_smap_prefetch_entry(const tok_smap *m, uint32_t h) {
    uint64_t e = m->slots[h & m->mask];
    if (e)
        __builtin_prefetch(&m->ent[(uint32_t)e - 1]);
}

int32_t tok_smap_get(const tok_smap *m, const char *k, size_t n) {
    return m->slots ? tok_smap_get_h(m, k, n, tok_hash(k, n)) : -1;
}

int32_t tok_smap_get_h(const tok_smap *m, const char *k, size_t n, uint32_t h) {
    size_t j = h & m->mask;
    for (;;) {
        uint64_t e = m->slots[j];
        if (!e)
            return -1;
        if ((uint32_t)(e >> 32) == h) {
            const struct tok_sent *en = &m->ent[(uint32_t)e - 1];
            if (en->len == n && memcmp(m->arena + en->off, k, n) == 0)
                return en->val;
        }
        j = (j + 1) & m->mask;
    }
}

int tok_smap_put(tok_smap *m, const char *k, size_t n, int32_t v) {
    if (n > UINT32_MAX || m->alen + n > UINT32_MAX)
        return -1;
    uint32_t h = tok_hash(k, n);
    size_t   j = h & m->mask;
    for (;;) {
        uint64_t e = m->slots[j];
        if (!e)
            break;
        struct tok_sent *en = &m->ent[(uint32_t)e - 1];
        if ((uint32_t)(e >> 32) == h && en->len == n && memcmp(m->arena + en->off, k, n) == 0) {
            en->val = v;
            return 0;
        }
        j = (j + 1) & m->mask;
    }
    if (tok_grow((void **)&m->ent, &m->cap, m->n + 1, sizeof *m->ent))
        return -1;
    if (tok_grow((void **)&m->arena, &m->acap, m->alen + n + 1, 1))
        return -1;
    memcpy(m->arena + m->alen, k, n);
    m->ent[m->n] = (struct tok_sent){(uint32_t)m->alen, (uint32_t)n, h, v};
    m->alen += n;
    m->slots[j] = ((uint64_t)h << 32) | (uint32_t)(++m->n);
    if (m->n * 2 > m->mask + 1)
        return smap_rehash(m);
    return 0;
}

void tok_smap_free(tok_smap *m) {
    if (!m)
        return;
    free(m->slots);
    free(m->ent);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static inline size_t pmix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

int tok_pmap_init(tok_pmap *m, size_t expect) {
    memset(m, 0, sizeof *m);
    size_t c = pow2_for(expect);
    m->keys  = malloc(c * sizeof *m->keys);
    m->rank  = malloc(c * sizeof *m->rank);
    m->val   = malloc(c * sizeof *m->val);
    if (!m->keys || !m->rank || !m->val) {
        tok_pmap_free(m);
        return -1;
    }
    memset(m->keys, 0xff, c * sizeof *m->keys);
    m->mask = c - 1;
    return 0;
}

static int pmap_rehash(tok_pmap *m) {
    tok_pmap nm;
    if (tok_pmap_init(&nm, m->mask + 1))
        return -1;
    for (size_t i = 0; i <= m->mask; i++)
        if (m->keys[i] != UINT64_MAX)
            tok_pmap_put(&nm, m->keys[i], m->rank[i], m->val[i]);
    tok_pmap_free(m);
    *m = nm;
    return 0;
}

int tok_pmap_put(tok_pmap *m, uint64_t key, uint32_t rank, int32_t val) {
    size_t j = pmix(key) & m->mask;
    while (m->keys[j] != UINT64_MAX && m->keys[j] != key)
        j = (j + 1) & m->mask;
    if (m->keys[j] == UINT64_MAX)
        m->n++;
    m->keys[j] = key;
    m->rank[j] = rank;
    m->val[j]  = val;
    if (m->n * 2 > m->mask + 1)
        return pmap_rehash(m);
    return 0;
}

int tok_pmap_get(const tok_pmap *m, uint64_t key, uint32_t *rank, int32_t *val) {
    if (!m->keys)
        return 0;
    size_t j = pmix(key) & m->mask;
    for (;;) {
        uint64_t k = m->keys[j];
        if (k == key) {
            if (rank)
                *rank = m->rank[j];
            if (val)
                *val = m->val[j];
            return 1;
        }
        if (k == UINT64_MAX)
            return 0;
        j = (j + 1) & m->mask;
    }
}

void tok_pmap_free(tok_pmap *m) {
    if (!m)
        return;
    free(m->keys);
    free(m->rank);
    free(m->val);
    memset(m, 0, sizeof *m);
}

/* ---- BPE word cache ----------------------------------------------------------------------- */

/* 16 shards x 640 entries = 10,240 words (HF's capacity is 10,000). Keys and values live in
 * fixed per-shard arenas, so a reader never sees memory move; a full arena stops insertion. */
enum {
    CACHE_SHARDS = 16,
    CACHE_ENTS   = 640,
    CACHE_SLOTS  = 1024, /* power of two, load <= 0.625 */
    CACHE_KEYB   = 640 * 16,
    CACHE_VALS   = 640 * 6
};

typedef struct cache_ent {
    uint32_t hash, koff, voff;
    uint16_t klen, nval;
} cache_ent;

typedef struct cache_shard {
    pthread_mutex_t mu;
    uint16_t        slot[CACHE_SLOTS]; /* entry index + 1; 0 empty */
    cache_ent       ent[CACHE_ENTS];
    uint32_t        n, klen, vlen;
    char            keys[CACHE_KEYB];
    tok_cval        vals[CACHE_VALS];
} cache_shard;

struct tok_cache {
    cache_shard sh[CACHE_SHARDS];
};

tok_cache *tok_cache_new(void) {
    tok_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    for (int i = 0; i < CACHE_SHARDS; i++)
        if (pthread_mutex_init(&c->sh[i].mu, NULL)) {
            while (i-- > 0)
                pthread_mutex_destroy(&c->sh[i].mu);
            free(c);
            return NULL;
        }
    return c;
}

void tok_cache_free(tok_cache *c) {
    if (!c)
        return;
    for (int i = 0; i < CACHE_SHARDS; i++)
        pthread_mutex_destroy(&c->sh[i].mu);
    free(c);
}

/* Slot of key k in shard s: its entry's slot, or the empty slot where it would go. */
static size_t cache_find(const cache_shard *s, const char *k, size_t n, uint32_t h) {
    size_t j = (h >> 4) & (CACHE_SLOTS - 1);
    for (;;) {
        uint16_t e = s->slot[j];
        if (!e)
            return j;
        const cache_ent *x = &s->ent[e - 1];
        if (x->hash == h && x->klen == n && !memcmp(s->keys + x->koff, k, n))
            return j;
        j = (j + 1) & (CACHE_SLOTS - 1);
    }
}

int tok_cache_get(tok_cache *c, const char *k, size_t n, uint32_t h, tok_cval *out, size_t cap) {
    cache_shard *s = &c->sh[h & (CACHE_SHARDS - 1)];
    if (pthread_mutex_trylock(&s->mu))
        return -1;
    int      r = -1;
    uint16_t e = s->slot[cache_find(s, k, n, h)];
    if (e && s->ent[e - 1].nval <= cap) {
        const cache_ent *x = &s->ent[e - 1];
        memcpy(out, s->vals + x->voff, x->nval * sizeof *out);
        r = x->nval;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

void tok_cache_put(tok_cache *c, const char *k, size_t n, uint32_t h, const tok_cval *v,
                   size_t nv) {
    cache_shard *s = &c->sh[h & (CACHE_SHARDS - 1)];
    if (n > TOK_CACHE_MAX_WORD || pthread_mutex_trylock(&s->mu))
        return;
    if (s->n < CACHE_ENTS && s->klen + n <= CACHE_KEYB && s->vlen + nv <= CACHE_VALS) {
        size_t j = cache_find(s, k, n, h);
        if (!s->slot[j]) {
            cache_ent *x = &s->ent[s->n];
            *x           = (cache_ent){h, s->klen, s->vlen, (uint16_t)n, (uint16_t)nv};
            memcpy(s->keys + s->klen, k, n);
            memcpy(s->vals + s->vlen, v, nv * sizeof *v);
            s->klen += (uint32_t)n;
            s->vlen += (uint32_t)nv;
            s->slot[j] = (uint16_t)(++s->n);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- BPE ----------------------------------------------------------------------------------- */

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

/* Min-heap on (rank, pos): HF's Merge ordering. */
static inline int heap_less(const tok_heapent *a, const tok_heapent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(tok_heapent *h, size_t *n, tok_heapent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p]))
            break;
        h[i] = h[p];
        i    = p;
    }
    h[i] = e;
}

static tok_heapent heap_pop(tok_heapent *h, size_t *n) {
    tok_heapent top  = h[0];
    tok_heapent last = h[--(*n)];
    size_t      i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m)
            break;
        size_t c = (l + 1 < m && heap_less(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i    = c;
    }
    if (m)
        h[i] = last;
    return top;
}

static int emit(const tokenizer *t, tok_work *w, const tok_split *sp, int32_t id, size_t s,
                size_t e) {
    (void)t;
    int32_t os = 0, oe = 0;
    if (w->want_offsets)
        tok_split_offsets(w, sp, s, e, &os, &oe);
    return tok_ids_push(w->out, id, os, oe, w->want_offsets);
}

int tok_bpe_word(const tokenizer *t, tok_work *w, const char *s, size_t n, const tok_split *sp,
                 assay_error *err) {
    if (n == 0)
        return 0;
    const tok_smap *vm = t->byte_level ? &t->raw : &t->vocab;
    if (t->ignore_merges) {
        int32_t id = tok_smap_get(vm, s, n);
        if (id >= 0)
            return emit(t, w, sp, id, 0, n)
                       ? assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory")
                       : 0;
    }
    /* HF's cache: a word seen before gives its tokens without the merge loop */
    uint32_t h         = 0;
    int      cacheable = t->cache && n <= TOK_CACHE_MAX_WORD;
    if (cacheable) {
        if (tok_grow((void **)&w->cv, &w->capcv, n, sizeof *w->cv))
            return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        h     = tok_hash(s, n);
        int k = tok_cache_get(t->cache, s, n, h, w->cv, w->capcv);
        for (int j = 0; j < k; j++)
            if (emit(t, w, sp, w->cv[j].id, w->cv[j].s, w->cv[j].e))
                return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        if (k >= 0)
            return 0;
    }
    if (tok_grow((void **)&w->sym, &w->capsym, n + 1, sizeof *w->sym))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory for a %zu-byte word", n);
    tok_sym *sym         = w->sym;
    size_t   ns          = 0;
    uint32_t pos         = 0; /* running byte offset, as HF's Word::add accumulates */
    int32_t  unk_pending = -1;
    uint32_t unk_len     = 0;
#define ADD_SYM(ID, L)                                                                             \
    do {                                                                                           \
        sym[ns].id    = (ID);                                                                      \
        sym[ns].start = pos;                                                                       \
        sym[ns].len   = (L);                                                                       \
        pos += (L);                                                                                \
        ns++;                                                                                      \
    } while (0)
    char   key[96];
    size_t i = 0;
    while (i < n) {
        size_t cl = t->byte_level ? 1 : tok_utf8_len((unsigned char)s[i]);
        if (i + cl > n)
            cl = n - i;
        int32_t     id;
        size_t      klen = cl;
        const char *k    = s + i;
        if (t->byte_level && !t->cont_prefix_len && !t->eow_suffix_len) {
            id = t->byte_id[(unsigned char)s[i]];
        } else {
            size_t kl = 0;
            if (i > 0 && t->cont_prefix_len) {
                memcpy(key, t->cont_prefix, t->cont_prefix_len);
                kl = t->cont_prefix_len;
            }
            memcpy(key + kl, s + i, cl);
            kl += cl;
            if (i + cl == n && t->eow_suffix_len) {
                memcpy(key + kl, t->eow_suffix, t->eow_suffix_len);
                kl += t->eow_suffix_len;
            }
            k    = key;
            klen = kl;
            id   = tok_smap_get(vm, key, kl);
        }
        if (id >= 0) {
            if (unk_pending >= 0) {
                ADD_SYM(unk_pending, unk_len);
                unk_pending = -1;
            }
            ADD_SYM(id, (uint32_t)cl);
        } else {
            int done = 0;
            if (t->byte_fallback) {
                size_t b;
                for (b = 0; b < klen; b++)
                    if (t->bytefb_id[(unsigned char)k[b]] < 0)
                        break;
                if (b == klen) {
                    if (tok_grow((void **)&w->sym, &w->capsym, ns + klen + (n - i) + 1,
                                 sizeof *w->sym))
                        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
                    sym = w->sym;
                    for (b = 0; b < klen; b++)
                        ADD_SYM(t->bytefb_id[(unsigned char)k[b]], 1);
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk_pending >= 0 && t->fuse_unk) {
                    unk_len += (uint32_t)cl;
                } else {
                    if (unk_pending >= 0)
                        ADD_SYM(unk_pending, unk_len);
                    unk_pending = t->unk_id;
                    unk_len     = (uint32_t)cl;
                }
            }
        }
        i += cl;
    }
    if (unk_pending >= 0)
        ADD_SYM(unk_pending, unk_len);
#undef ADD_SYM
    if (ns == 0)
        return 0;
    for (size_t j = 0; j < ns; j++) {
        sym[j].prev = (int32_t)j - 1;
        sym[j].next = j + 1 < ns ? (int32_t)j + 1 : -1;
    }
    if (tok_grow((void **)&w->heap, &w->caph, 2 * ns + 8, sizeof *w->heap))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
    tok_heapent *heap = w->heap;
    size_t       nh   = 0;
    for (size_t j = 0; j + 1 < ns; j++) {
        uint32_t r;
        int32_t  nid;
        if (tok_pmap_get(&t->merges, pair_key(sym[j].id, sym[j + 1].id), &r, &nid))
            heap_push(heap, &nh, (tok_heapent){r, (uint32_t)j, nid});
    }
    while (nh) {
        tok_heapent top = heap_pop(heap, &nh);
        tok_sym    *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        tok_sym *right = &sym[cur->next];
        uint32_t r;
        int32_t  nid;
        if (!tok_pmap_get(&t->merges, pair_key(cur->id, right->id), &r, &nid) || nid != top.id)
            continue;
        cur->id = top.id;
        cur->len += right->len;
        cur->next  = right->next;
        right->len = 0;
        if (cur->next >= 0)
            sym[cur->next].prev = (int32_t)top.pos;
        /* at most two pushes per merge and at most ns-1 merges: the heap never outgrows 2*ns+8
         * counting the initial pairs... except stale entries; grow defensively. */
        if (tok_grow((void **)&w->heap, &w->caph, nh + 3, sizeof *w->heap))
            return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        heap = w->heap;
        if (cur->prev >= 0 &&
            tok_pmap_get(&t->merges, pair_key(sym[cur->prev].id, cur->id), &r, &nid))
            heap_push(heap, &nh, (tok_heapent){r, (uint32_t)cur->prev, nid});
        if (cur->next >= 0 &&
            tok_pmap_get(&t->merges, pair_key(cur->id, sym[cur->next].id), &r, &nid))
            heap_push(heap, &nh, (tok_heapent){r, top.pos, nid});
    }
    size_t nv = 0;
    if (cacheable && tok_grow((void **)&w->cv, &w->capcv, ns, sizeof *w->cv))
        return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
    for (int32_t j = 0; j >= 0; j = sym[j].next) {
        if (emit(t, w, sp, sym[j].id, sym[j].start, (size_t)sym[j].start + sym[j].len))
            return assay_fail(err, ASSAY_ENOMEM, "tokenizer: out of memory");
        if (cacheable)
            w->cv[nv++] = (tok_cval){sym[j].id, (uint16_t)sym[j].start,
                                     (uint16_t)(sym[j].start + sym[j].len)};
    }
    if (cacheable)
        tok_cache_put(t->cache, s, n, h, w->cv, nv);
    return 0;
}
