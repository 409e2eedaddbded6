/* runtime/cuda/cuda_plan.h — the host-side arithmetic of the CUDA backend (batch packing, index
 * validation, LM-head result layout and chunking, GEMM algorithm cache, memory plan, bf16
 * conversion). Plain C with no CUDA types, so the CPU test suite checks all of it without a GPU
 * (tests/test_cuda_host.c); runtime/cuda/backend_cuda.cu only moves the results to the device. */
#ifndef ASSAY_CUDA_PLAN_H
#define ASSAY_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* ---- batch packing ----------------------------------------------------------------------------
 * Every index array of a pass goes into ONE pinned host buffer and reaches the device in ONE copy.
 * Each array starts at a multiple of CUDA_BATCH_ALIGN bytes (a cache line: the kernels may load
 * them with vector loads, and no two arrays share a line). */
#define CUDA_BATCH_ALIGN 64

enum {
    CB_IDS = 0, /* n_tokens */
    CB_POS,     /* n_tokens */
    CB_Q_OFF,   /* n_seqs + 1 */
    CB_START,   /* n_seqs */
    CB_BLOCKS,  /* n_seqs * max_blocks, or 0: no block table */
    CB_SEL,     /* n_sel */
    CB_TARGETS, /* n_sel, or 0: no targets */
    CB_COUNT
};

typedef struct cuda_batch_layout {
    size_t count[CB_COUNT]; /* int32 elements of each array (0: absent) */
    size_t off[CB_COUNT];   /* byte offset of each array in the packed buffer */
    size_t total;           /* bytes of the packed buffer (a multiple of CUDA_BATCH_ALIGN) */
} cuda_batch_layout;

/* Fills L from the element counts; ASSAY_EINVAL when the sizes overflow. */
int cuda_batch_plan(cuda_batch_layout *L, const size_t count[CB_COUNT], assay_error *err);
/* dst (L->total bytes) = the arrays src[i] (count[i] int32 each; NULL when count is 0) at their
 * offsets; the padding between arrays is zeroed so the buffer's bytes are deterministic. */
void cuda_batch_pack(void *dst, const cuda_batch_layout *L, const int32_t *const src[CB_COUNT]);

/* Validates the index data of a pass (it is trusted by the kernels, so a wrong offset here would
 * be an out-of-bounds access there) and derives the launch sizes: the longest new-row run of a
 * sequence (max_len) and the longest context (max_ctx = start_pos + new rows). q_off must run
 * from 0 to n_tokens without decreasing; start_pos must be 0 when there is no block table;
 * with a table, every context must fit in max_blocks * block_tokens and every block id used
 * must be >= 0; sel in [0, n_tokens). */
int cuda_batch_check(int *max_len, int *max_ctx, int n_tokens, int n_seqs, const int32_t *q_off,
                     const int32_t *start_pos, const int32_t *block_table, int max_blocks,
                     int block_tokens, int n_sel, const int32_t *sel, assay_error *err);

/* ---- LM head ----------------------------------------------------------------------------------
 * The results of one lm_head (n_sel rows) sit in one device buffer, laid out from n_sel so that
 * fetch downloads them in one copy: logprob f32 [n], argmax i32 [n], is_max u8 [n]. */
typedef struct cuda_head_layout {
    size_t off_logprob, off_argmax, off_is_max, total;
} cuda_head_layout;
void cuda_head_plan(cuda_head_layout *h, int n_sel);

/* Rows per LM-head chunk: the f32 logits chunk (rows x vocab) stays within cap_bytes, at most
 * max_rows rows, at least 1. */
#define CUDA_HEAD_CHUNK_ROWS 256
int cuda_head_chunk_rows(int vocab, size_t cap_bytes, int max_rows);

/* Rows per chunk of a GEMM with a bias / activation epilogue, whose f32 accumulator
 * (rows x out_dim) must fit in cap_bytes; 0 when not even one row fits. */
int cuda_acc_chunk_rows(int rows, int out_dim, size_t cap_bytes);

/* ---- paged attention in groups -----------------------------------------------------------------
 * The paged attention kernel keeps, per row, head and key chunk of the call's longest context, an
 * fp32 partial (max, sum, accumulator): rows x ceil(max_ctx / split_keys) x unit bytes, which for
 * a long prefill against the cache is gigabytes. When that exceeds the cap, the call is split into
 * groups (runs of whole sequences; a sequence too large alone goes in pieces of rows, each a
 * sequence of its own starting at its first row's position) whose buffers fit. A row's result
 * does not depend on its group: its key chunks sit at absolute positions and merge in order. */
#define CUDA_ATTN_PARTIAL_CAP ((size_t)512 << 20)

typedef struct cuda_attn_group {
    int    row0, rows; /* the packed rows of the group */
    int    seq0;       /* the block-table row of its first sequence */
    int    n_seqs;     /* sequences in the call (1 for a piece of a sequence) */
    int    max_ctx;    /* longest context of its rows (0: no rows, nothing to run) */
    size_t idx_off;    /* its q_off (n_seqs + 1, from 0) then start_pos (n_seqs) in idx */
} cuda_attn_group;

/* Capacities the caller provides: groups n_seqs + n_tokens, idx 3 * (n_seqs + n_tokens) + 1. */
size_t cuda_attn_groups_cap(int n_seqs, int n_tokens);
size_t cuda_attn_idx_cap(int n_seqs, int n_tokens);
/* Fills g (returns the number of groups) and idx (*idx_used int32s) from the pass's q_off and
 * start_pos; unit_bytes: the partial of one row and one chunk. */
int cuda_attn_groups(cuda_attn_group *g, int32_t *idx, size_t *idx_used, const int32_t *q_off,
                     const int32_t *start_pos, int n_seqs, int split_keys, size_t unit_bytes,
                     size_t cap_bytes);

/* ---- GEMM algorithm cache ---------------------------------------------------------------------
 * Batch invariance on the GPU: a row's result must not depend on the row count. cuBLASLt picks a
 * kernel (tile, stages, split-K) per problem shape, and a different kernel sums in a different
 * order. So the invariant path chooses ONE algorithm per (out features n, in features k, output
 * type), from a heuristic query at a fixed representative row count with split-K excluded, and
 * uses it for every row count. rows == 0 in a key means "any row count"; --fast keys on the exact
 * row count (per-shape heuristics, split-K allowed). */
#define CUDA_GEMM_REP_ROWS 512
#define CUDA_GEMM_ALGO_WORDS 8  /* sizeof(cublasLtMatmulAlgo_t) / 8, checked in backend_cuda.cu */
#define CUDA_GEMM_FAST_MAX 4096 /* fast-mode entries kept before the cache is cleared */

typedef struct cuda_gemm_key {
    int n, k;    /* out features, in features */
    int out_f32; /* 1: f32 output (LM-head logits, epilogue accumulators); 0: bf16 */
    int rows;    /* 0: every row count (invariant); else the exact row count (fast) */
} cuda_gemm_key;

typedef struct cuda_gemm_entry {
    cuda_gemm_key key;
    int           align;                      /* pointer alignment the algorithm was chosen for */
    uint64_t      algo[CUDA_GEMM_ALGO_WORDS]; /* the opaque cublasLtMatmulAlgo_t */
} cuda_gemm_entry;

typedef struct cuda_gemm_cache {
    cuda_gemm_entry *e;
    int              n, cap;
} cuda_gemm_cache;

cuda_gemm_key cuda_gemm_key_make(int n, int k, int out_f32, int rows, int fast);
/* Index of the entry with key, or -1. */
int cuda_gemm_cache_find(const cuda_gemm_cache *c, cuda_gemm_key key);
/* Appends an entry (returns its index) or -1 when memory runs out. */
int  cuda_gemm_cache_add(cuda_gemm_cache *c, const cuda_gemm_entry *entry);
void cuda_gemm_cache_clear(cuda_gemm_cache *c); /* keeps the storage */
void cuda_gemm_cache_free(cuda_gemm_cache *c);
/* Pointer alignment (bytes, a power of two <= 16) every operand of a GEMM with this shape can
 * promise: rows of k bf16 inputs start at multiples of 2k bytes and rows of n outputs at
 * multiples of n * out_bytes, from 256-byte aligned allocations. */
int cuda_gemm_align(int n, int k, int out_bytes);

/* ---- CUDA graphs for decode steps ----------------------------------------------------------
 * A decode pass (every sequence feeds exactly one token through the KV cache and every row
 * reaches the LM head) is recorded op by op, not run, until fetch; there the backend runs the
 * recording eagerly, captures it into a CUDA graph, or replays the graph captured for it. A graph
 * is keyed by what fixes its launch shapes and its index data's layout (cuda_graph_key) and is
 * replayed only when the pass's ops, every pointer and size included, equal the ones captured
 * and the backend's scratch buffers have not moved since (scratch_gen). Capture happens after
 * CUDA_GRAPH_WARMUP eager passes with the same key and ops (their scratch growth is over by
 * then: a capture cannot allocate); the cache keeps CUDA_GRAPH_SLOTS keys, least recently used
 * out. */
#define CUDA_GRAPH_WARMUP 2
#define CUDA_GRAPH_SLOTS 16

typedef enum cuda_op_kind {
    CUDA_OP_EMBED = 1,
    CUDA_OP_ADD_NORM,
    CUDA_OP_MATMUL,
    CUDA_OP_SWIGLU,
    CUDA_OP_ROPE_KV,
    CUDA_OP_ATTENTION,
    CUDA_OP_GATHER,
    CUDA_OP_LM_HEAD
} cuda_op_kind;

/* One op of a pass with its arguments, in the order of its backend_ops slot: pointers in p,
 * integers in a, a float argument (eps) in f. Unused fields are zero, so two records are equal
 * exactly when every argument is. */
typedef struct cuda_op {
    int         kind;
    int         a[4];
    float       f;
    const void *p[5];
} cuda_op;

typedef struct cuda_op_list {
    cuda_op *op;
    int      n, cap;
} cuda_op_list;

int  cuda_op_list_push(cuda_op_list *l, const cuda_op *op); /* 0, or -1 out of memory */
int  cuda_op_list_equal(const cuda_op_list *x, const cuda_op_list *y);
int  cuda_op_list_copy(cuda_op_list *dst, const cuda_op_list *src); /* 0, or -1 */
void cuda_op_list_free(cuda_op_list *l);

typedef struct cuda_graph_key {
    int n_seqs, max_blocks, block_tokens, has_targets;
} cuda_graph_key;

/* Whether a pass is a decode pass (see above): a block table, n_seqs >= 1, q_off[s] == s for
 * every s (one token each), n_sel == n_seqs. Fills key when it is. */
int cuda_graph_decode_key(cuda_graph_key *key, int n_tokens, int n_seqs, const int32_t *q_off,
                          int has_table, int max_blocks, int block_tokens, int n_sel,
                          int has_targets);

/* The context a graph's paged attention is planned for: every position the block table can
 * address (max_blocks * block_tokens), so the launch does not change as the sequences grow; the
 * kernel reads each row's true length from the batch, and blocks past it exit at once. */
int cuda_graph_attn_ctx(const cuda_graph_key *key);

typedef enum cuda_graph_action {
    CUDA_GRAPH_EAGER = 0, /* run the ops one by one */
    CUDA_GRAPH_CAPTURE,   /* capture them into the slot's graph, then launch it */
    CUDA_GRAPH_REPLAY     /* launch the slot's graph */
} cuda_graph_action;

typedef struct cuda_graph_slot {
    int            used;
    cuda_graph_key key;
    cuda_op_list   ops;  /* the ops of the last pass with this key */
    int            seen; /* consecutive passes with these ops */
    unsigned       gen;  /* scratch generation after that pass */
    void          *exec; /* the instantiated graph (cudaGraphExec_t), or NULL */
    unsigned long  last_use;
} cuda_graph_slot;

typedef struct cuda_graph_cache {
    cuda_graph_slot slot[CUDA_GRAPH_SLOTS];
    unsigned long   tick;
} cuda_graph_cache;

/* What to do with a decode pass of `key` whose ops are `ops`, the scratch being at generation
 * `gen`. Sets *slot to the pass's slot and updates its bookkeeping; *drop receives a graph that
 * the caller must destroy (its slot was reused, or its ops or scratch changed), else NULL. After
 * an eager pass the caller stores the scratch generation it left in slot->gen. */
cuda_graph_action cuda_graph_decide(cuda_graph_cache *c, const cuda_graph_key *key,
                                    const cuda_op_list *ops, unsigned gen, int *slot, void **drop);
/* Empties every slot (keeping the storage); the graphs to destroy go to drop[0..CUDA_GRAPH_SLOTS),
 * the rest NULL. cuda_graph_cache_free also frees the storage (after a clear). */
void cuda_graph_cache_clear(cuda_graph_cache *c, void *drop[CUDA_GRAPH_SLOTS]);
void cuda_graph_cache_free(cuda_graph_cache *c);

/* ---- memory -----------------------------------------------------------------------------------*/
#define CUDA_LT_WORKSPACE (32u << 20) /* cuBLASLt workspace (Hopper kernels want 32 MiB) */
#define CUDA_HEAD_CAP (256u << 20)    /* cap of the f32 logits chunk */
#define CUDA_ACC_CHUNK_ROWS 1024      /* rows per chunk of an epilogue GEMM */

typedef struct cuda_scratch_plan {
    size_t workspace; /* cuBLASLt */
    size_t acc;       /* f32 accumulator of epilogue GEMMs */
    size_t logits;    /* f32 LM-head chunk */
    size_t head;      /* LM-head results (cuda_head_layout of max_rows) */
    size_t batch;     /* packed index data of a pass of max_rows tokens, one sequence each */
    size_t total;
} cuda_scratch_plan;
/* Workspace for passes of up to max_rows tokens, GEMMs of up to max_in input features (their
 * outputs at most 2 * max(max_in, dim) wide: the fused gate|up), an LM head (dim, vocab). The
 * attention split buffer grows with the context and is not included. */
void cuda_scratch_plan_make(cuda_scratch_plan *p, int max_rows, int max_in, int dim, int vocab);

/* ---- weights ----------------------------------------------------------------------------------*/
/* dst (n) bf16 bits = round-to-nearest-even(src (n)); NaN stays NaN. */
void cuda_bf16_from_f32(uint16_t *dst, const float *src, size_t n);

#endif
