/* harness/dist.c — ranks, work assignment, failure agreement and result exchange (dist.h). */
#include "harness/dist.h"

#include <limits.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "harness/cli_common.h"
#include "runtime/device.h"

#ifdef ASSAY_MPI
#include <mpi.h>
#endif
#if defined(ASSAY_NCCL) && defined(ASSAY_MPI)
#include <cuda_runtime_api.h>
#include <dlfcn.h>
/* nccl.h declares a few functions with () */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#endif

static struct {
    int rank, size, local_rank, local_size;
    int mpi;    /* MPI_Init was called */
    int agreed; /* the failure being reported went through dist_agree */
    int fault_calls;
} g_dist = {0, 1, 0, 1, 0, 0, 0};

static int env_int(const char *name, int *out) {
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end = NULL;
    long  x   = strtol(v, &end, 10);
    if (*end || x < 0 || x > INT_MAX)
        return 0;
    *out = (int)x;
    return 1;
}

/* A launcher that starts ranks sets one of these; a plain run sets none, so MPI stays untouched
 * (no MPI_Init: a single process needs no runtime and starts as fast as without MPI). */
static int launched_by_mpi(void) {
    int x;
    return env_int("OMPI_COMM_WORLD_SIZE", &x) || env_int("PMI_SIZE", &x) ||
           env_int("PMIX_RANK", &x) || (getenv("SLURM_STEP_ID") && env_int("SLURM_PROCID", &x));
}

int dist_mpi_compiled(void) {
#ifdef ASSAY_MPI
    return 1;
#else
    return 0;
#endif
}

int dist_init(int *argc, char ***argv, assay_error *err) {
    if (!launched_by_mpi())
        return ASSAY_OK;
#ifdef ASSAY_MPI
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return assay_fail(err, ASSAY_EDEVICE, "MPI_Init failed");
    g_dist.mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_dist.size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_dist.rank, MPI_INFO_NULL,
                            &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &g_dist.local_rank);
        MPI_Comm_size(node, &g_dist.local_size);
        MPI_Comm_free(&node);
    }
    /* only rank 0 writes what the run produces; the others' standard output is the same text */
    if (g_dist.rank > 0 && !freopen("/dev/null", "w", stdout))
        return assay_fail(err, ASSAY_EIO, "rank %d: cannot silence standard output", g_dist.rank);
    return ASSAY_OK;
#else
    (void)argc, (void)argv;
    int n = 0;
    if ((env_int("OMPI_COMM_WORLD_SIZE", &n) || env_int("PMI_SIZE", &n)) && n > 1)
        return assay_fail(err, ASSAY_EUNSUPPORTED,
                          "launched as one of %d MPI ranks, but this assay was built without MPI "
                          "(install libopenmpi-dev and rebuild with make MPI=1)",
                          n);
    return ASSAY_OK;
#endif
}

int dist_finalize(int exit_code) {
#ifdef ASSAY_MPI
    if (g_dist.mpi) {
        if (exit_code != 0 && !g_dist.agreed && g_dist.size > 1) {
            fflush(stdout);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, exit_code);
        }
        MPI_Finalize();
        g_dist.mpi = 0;
    }
#endif
    return exit_code;
}

int dist_rank(void) { return g_dist.rank; }
int dist_size(void) { return g_dist.size; }
int dist_local_rank(void) { return g_dist.local_rank; }
int dist_local_size(void) { return g_dist.local_size; }

void dist_apply_device(cli_common *cc) {
    if (g_dist.local_size <= 1)
        return;
    if (cc->device != CLI_DEVICE_CPU) {
        cuda_device_info info;
        device_cuda_probe(&info);
        if (info.count > 0) {
            cc->device       = CLI_DEVICE_CUDA;
            cc->device_index = g_dist.local_rank % info.count;
            return;
        }
    }
    if (cc->threads == 0) {
        /* a launcher that bound us to fewer cores than the node has already split them */
        int  procs  = omp_get_num_procs();
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        int  t      = procs < online ? procs : procs / g_dist.local_size;
        cc->threads = t > 0 ? t : 1;
    }
}

typedef struct unit_ref {
    int64_t cost;
    size_t  i;
} unit_ref;

static int cmp_unit(const void *a, const void *b) {
    const unit_ref *x = a, *y = b;
    if (x->cost != y->cost)
        return x->cost > y->cost ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int dist_assign(const int64_t *cost, size_t n, int size, int *owner, assay_error *err) {
    if (size < 1)
        return assay_fail(err, ASSAY_EINVAL, "dist_assign: %d ranks", size);
    unit_ref *u    = malloc((n ? n : 1) * sizeof *u);
    int64_t  *load = calloc((size_t)size, sizeof *load);
    if (!u || !load) {
        free(u);
        free(load);
        return assay_fail(err, ASSAY_ENOMEM, "out of memory assigning %zu units", n);
    }
    for (size_t i = 0; i < n; i++)
        u[i] = (unit_ref){cost[i], i};
    qsort(u, n, sizeof *u, cmp_unit);
    for (size_t k = 0; k < n; k++) {
        int best = 0;
        for (int r = 1; r < size; r++)
            if (load[r] < load[best])
                best = r;
        owner[u[k].i] = best;
        load[best] += u[k].cost;
    }
    free(u);
    free(load);
    return ASSAY_OK;
}

int dist_agree(int rc, assay_error *err) {
    g_dist.agreed = 0;
#ifdef ASSAY_MPI
    if (g_dist.mpi && g_dist.size > 1) {
        int mine = rc ? g_dist.rank : g_dist.size, first = g_dist.size;
        MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (first == g_dist.size)
            return ASSAY_OK;
        struct {
            int  code;
            char msg[sizeof err->msg];
        } m = {0};
        if (g_dist.rank == first) {
            m.code = rc;
            snprintf(m.msg, sizeof m.msg, "%s", err ? err->msg : "failed");
        }
        MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD);
        m.msg[sizeof m.msg - 1] = 0;
        assay_fail(err, m.code, "rank %d: %s", first, m.msg);
        g_dist.agreed = 1;
        return m.code;
    }
#endif
    (void)err;
    return rc;
}

int dist_error_printed_elsewhere(const assay_error *err) {
    return err && err->code && g_dist.agreed && g_dist.rank > 0;
}

int dist_allgather_bytes(const void *send, size_t n, char **recv, size_t *counts,
                         assay_error *err) {
    *recv = NULL;
#ifdef ASSAY_MPI
    if (g_dist.mpi && g_dist.size > 1) {
        int        size = g_dist.size;
        long long  mine = (long long)n, total = 0;
        long long *all = calloc((size_t)size, sizeof *all);
        int       *cnt = calloc((size_t)size, sizeof *cnt);
        int       *dsp = calloc((size_t)size, sizeof *dsp);
        int        ok = all && cnt && dsp, all_ok = 0, rc = ASSAY_OK;
        /* every rank learns every size, so a total MPI cannot count fails on all ranks alike */
        MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!ok) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory exchanging results between ranks");
            goto done;
        }
        MPI_Allgather(&mine, 1, MPI_LONG_LONG, all, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
        for (int r = 0; r < size; r++) {
            dsp[r]    = (int)(total < INT_MAX ? total : 0);
            cnt[r]    = (int)(all[r] < INT_MAX ? all[r] : 0);
            counts[r] = (size_t)all[r];
            total += all[r];
        }
        if (total > INT_MAX) {
            rc = assay_fail(err, ASSAY_EUNSUPPORTED,
                            "%lld bytes of results to exchange between ranks at once; MPI counts "
                            "stop at 2 GiB (use smaller windows)",
                            total);
            goto done;
        }
        *recv = malloc(total ? (size_t)total : 1);
        ok    = *recv != NULL;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all_ok) {
            rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for %lld bytes of results", total);
            goto done;
        }
        MPI_Allgatherv(send, (int)n, MPI_BYTE, *recv, cnt, dsp, MPI_BYTE, MPI_COMM_WORLD);
    done:
        if (rc) {
            free(*recv);
            *recv = NULL;
        }
        free(all);
        free(cnt);
        free(dsp);
        return rc;
    }
#endif
    if (!(*recv = malloc(n ? n : 1)))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory for %zu bytes of results", n);
    if (n)
        memcpy(*recv, send, n);
    counts[0] = n;
    return ASSAY_OK;
}

/* One entry on the wire: index, n_targets, n_greedy, sum; then, with per_token, n_targets floats
 * and n_targets greedy flags. */
typedef struct wire_head {
    uint64_t i;
    int32_t  n_targets, n_greedy;
    double   sum;
} wire_head;

static size_t wire_size(const score_result *r, int per_token) {
    size_t k = r->n_targets > 0 ? (size_t)r->n_targets : 0;
    return sizeof(wire_head) + (per_token ? k * (sizeof(float) + 1) : 0);
}

int dist_allgather_results(score_result *out, size_t n, const unsigned char *own, int per_token,
                           assay_error *err) {
    if (g_dist.size < 2)
        return ASSAY_OK;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (own[i])
            bytes += wire_size(&out[i], per_token);
    int     size   = g_dist.size;
    size_t *counts = calloc((size_t)size, sizeof *counts);
    char   *send   = malloc(bytes ? bytes : 1);
    char   *recv   = NULL;
    int     ok     = counts && send;
    char   *p      = send;
    for (size_t i = 0; ok && i < n; i++) {
        if (!own[i])
            continue;
        const score_result *r = &out[i];
        wire_head h = {.i = i, .n_targets = r->n_targets, .n_greedy = r->n_greedy, .sum = r->sum};
        memcpy(p, &h, sizeof h);
        p += sizeof h;
        if (per_token && r->n_targets > 0) {
            memcpy(p, r->logprob, (size_t)r->n_targets * sizeof(float));
            p += (size_t)r->n_targets * sizeof(float);
            memcpy(p, r->is_greedy, (size_t)r->n_targets);
            p += r->n_targets;
        }
    }
    /* a rank short of memory still takes part, sending nothing, and fails afterwards */
    int rc = dist_allgather_bytes(send, ok ? bytes : 0, &recv, counts, err);
    if (!rc && !ok)
        rc = assay_fail(err, ASSAY_ENOMEM, "out of memory exchanging %zu results", n);
    size_t at = 0;
    for (int r = 0; !rc && r < size; at += counts[r], r++) {
        if (r == g_dist.rank)
            continue;
        const char *q = recv + at, *end = q + counts[r];
        while (q < end) {
            wire_head h;
            if ((size_t)(end - q) < sizeof h) {
                rc = assay_fail(err, ASSAY_EINTERNAL, "rank %d sent a truncated result", r);
                goto done;
            }
            memcpy(&h, q, sizeof h);
            q += sizeof h;
            size_t k    = h.n_targets > 0 ? (size_t)h.n_targets : 0;
            size_t need = per_token ? k * (sizeof(float) + 1) : 0;
            if (h.i >= n || own[h.i] || (size_t)(end - q) < need) {
                rc = assay_fail(err, ASSAY_EINTERNAL,
                                "rank %d sent result %llu, which is not its own or is truncated", r,
                                (unsigned long long)h.i);
                goto done;
            }
            score_result *o = &out[h.i];
            *o = (score_result){.n_targets = h.n_targets, .n_greedy = h.n_greedy, .sum = h.sum};
            if (per_token) {
                o->logprob   = malloc((k ? k : 1) * sizeof(float));
                o->is_greedy = malloc(k ? k : 1);
                if (!o->logprob || !o->is_greedy) {
                    rc = assay_fail(err, ASSAY_ENOMEM, "out of memory for exchanged results");
                    goto done;
                }
                memcpy(o->logprob, q, k * sizeof(float));
                memcpy(o->is_greedy, q + k * sizeof(float), k);
                q += need;
            }
        }
    }
done:
    free(recv);
    free(send);
    free(counts);
    return rc;
}

int dist_sum_i64(int64_t *v, size_t n, assay_error *err) {
#ifdef ASSAY_MPI
    if (g_dist.mpi && g_dist.size > 1 && n > 0) {
        if (n > INT_MAX)
            return assay_fail(err, ASSAY_EINVAL, "dist_sum_i64: %zu values", n);
        MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    }
#else
    (void)v, (void)n;
#endif
    (void)err;
    return ASSAY_OK;
}

int dist_allgather_f64(double v, double *all, assay_error *err) {
    (void)err;
#ifdef ASSAY_MPI
    if (g_dist.mpi && g_dist.size > 1) {
        MPI_Allgather(&v, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, MPI_COMM_WORLD);
        return ASSAY_OK;
    }
#endif
    all[0] = v;
    return ASSAY_OK;
}

#define DIST_NOTES 8
typedef struct dist_note {
    const char *key;
    double      v;
} dist_note;
static dist_note g_notes[DIST_NOTES];
static int       g_n_notes;

void dist_per_rank_note(const char *key, double v) {
    for (int k = 0; k < g_n_notes; k++)
        if (!strcmp(g_notes[k].key, key)) {
            g_notes[k].v = v;
            return;
        }
    if (g_n_notes < DIST_NOTES)
        g_notes[g_n_notes++] = (dist_note){key, v};
}

cJSON *dist_per_rank_json(double score_s, int64_t tokens, assay_error *err) {
    size_t  n = (size_t)g_dist.size, cols = 2 + (size_t)g_n_notes;
    double *all = calloc(cols * n, sizeof *all);
    if (!all) {
        assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return NULL;
    }
    dist_allgather_f64(score_s, all, err);
    dist_allgather_f64((double)tokens, all + n, err);
    for (int k = 0; k < g_n_notes; k++)
        dist_allgather_f64(g_notes[k].v, all + (2 + (size_t)k) * n, err);
    cJSON *arr = cJSON_CreateArray();
    for (size_t r = 0; arr && r < n; r++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddNumberToObject(o, "rank", (double)r);
        cJSON_AddNumberToObject(o, "score_s", all[r]);
        cJSON_AddNumberToObject(o, "tokens_computed", all[n + r]);
        for (int k = 0; k < g_n_notes; k++)
            cJSON_AddNumberToObject(o, g_notes[k].key, all[(2 + (size_t)k) * n + r]);
    }
    free(all);
    if (!arr)
        assay_fail(err, ASSAY_ENOMEM, "out of memory");
    return arr;
}

int dist_test_fault(assay_error *err) {
    int r;
    g_dist.fault_calls++;
    if (env_int("ASSAY_TEST_FAIL_RANK", &r) && r == g_dist.rank)
        return assay_fail(err, ASSAY_EINTERNAL,
                          "ASSAY_TEST_FAIL_RANK=%d: this rank fails on purpose (a test knob)", r);
    int after;
    if (env_int("ASSAY_TEST_KILL_RANK", &r) && r == g_dist.rank &&
        env_int("ASSAY_TEST_KILL_AFTER", &after) && g_dist.fault_calls > after) {
        fflush(stdout);
        fflush(stderr);
        raise(SIGKILL);
    }
    return ASSAY_OK;
}

#if defined(ASSAY_NCCL) && defined(ASSAY_MPI)
/* NCCL is opened at run time, as cuBLASLt is: the binary starts on machines without it. */
typedef ncclResult_t (*nccl_get_id_fn)(ncclUniqueId *);
typedef ncclResult_t (*nccl_init_fn)(ncclComm_t *, int, ncclUniqueId, int);
typedef ncclResult_t (*nccl_destroy_fn)(ncclComm_t);
typedef const char *(*nccl_error_fn)(ncclResult_t);

static void *nccl_open(assay_error *err) {
    static void *lib;
    if (!lib)
        lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        assay_fail(err, ASSAY_EDEVICE, "libnccl.so.2 cannot be opened: %s", dlerror());
    return lib;
}

int dist_nccl_init(int device, void **comm, assay_error *err) {
    *comm = NULL;
    /* every rank learns whether every rank has NCCL before the collective calls */
    void          *lib    = nccl_open(err);
    int            ok     = lib != NULL, rc;
    nccl_get_id_fn get_id = lib ? (nccl_get_id_fn)dlsym(lib, "ncclGetUniqueId") : NULL;
    nccl_init_fn   init   = lib ? (nccl_init_fn)dlsym(lib, "ncclCommInitRank") : NULL;
    nccl_error_fn  estr   = lib ? (nccl_error_fn)dlsym(lib, "ncclGetErrorString") : NULL;
    if (ok && (!get_id || !init || !estr))
        ok = !assay_fail(err, ASSAY_EDEVICE, "libnccl.so.2 lacks ncclCommInitRank");
    if (ok && cudaSetDevice(device) != cudaSuccess)
        ok = !assay_fail(err, ASSAY_EDEVICE, "cudaSetDevice(%d) failed", device);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (ok && g_dist.rank == 0 && (rc = get_id(&id)) != ncclSuccess)
        ok = !assay_fail(err, ASSAY_EDEVICE, "ncclGetUniqueId: %s", estr(rc));
    if ((rc = dist_agree(ok ? ASSAY_OK : err->code, err)))
        return rc;
    if (g_dist.mpi)
        MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t   c  = NULL;
    ncclResult_t nr = init(&c, g_dist.size, id, g_dist.rank);
    rc              = nr == ncclSuccess ? ASSAY_OK
                                        : assay_fail(err, ASSAY_EDEVICE,
                                                     "ncclCommInitRank (rank %d of %d, "
                                                                  "cuda:%d): %s",
                                                     g_dist.rank, g_dist.size, device, estr(nr));
    if ((rc = dist_agree(rc, err))) {
        if (c) {
            nccl_destroy_fn destroy = (nccl_destroy_fn)dlsym(lib, "ncclCommDestroy");
            if (destroy)
                destroy(c);
        }
        return rc;
    }
    *comm = c;
    return ASSAY_OK;
}

void dist_nccl_free(void *comm) {
    void           *lib     = comm ? nccl_open(NULL) : NULL;
    nccl_destroy_fn destroy = lib ? (nccl_destroy_fn)dlsym(lib, "ncclCommDestroy") : NULL;
    if (destroy)
        destroy((ncclComm_t)comm);
}
#else
int dist_nccl_init(int device, void **comm, assay_error *err) {
    (void)device;
    *comm = NULL;
    return assay_fail(err, ASSAY_EUNSUPPORTED,
                      "this assay was built without NCCL and MPI together (a CUDA build with "
                      "Open MPI and nccl.h)");
}

void dist_nccl_free(void *comm) { (void)comm; }
#endif
