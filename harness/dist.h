/* harness/dist.h — many processes (MPI ranks) sharing one run: who am I, which work is mine,
 * agreement on failure, and the exchange of per-request results so every rank ends with all of
 * them. Built over Open MPI when the Makefile finds it (-DASSAY_MPI); without it, or when the
 * process was not launched by mpirun / srun, everything is one process (rank 0 of 1) and no MPI
 * call is made. The engine's scores do not depend on what else is in a batch, so any split of
 * the work gives the same bits. Collective calls (dist_agree, dist_allgather_results, dist_sum_*)
 * must be made by every rank in the same order. */
#ifndef ASSAY_DIST_H
#define ASSAY_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "runtime/model.h"

struct cli_common;

/* Starts MPI when the environment says a launcher started us (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
 * PMIX_RANK, or SLURM_STEP_ID with SLURM_PROCID); otherwise one process. Call once, early.
 * Returns ASSAY_OK, or ASSAY_EUNSUPPORTED when launched by mpirun but built without MPI. */
int dist_init(int *argc, char ***argv, assay_error *err);

/* Ends MPI with the command's exit code: a failure every rank agreed on (dist_agree) finalizes
 * normally; one only this rank knows aborts the whole job (MPI_Abort) so no other rank waits
 * for it forever. Returns exit_code. */
int dist_finalize(int exit_code);

int dist_rank(void);       /* 0 in one process */
int dist_size(void);       /* 1 in one process */
int dist_local_rank(void); /* rank among the processes on this node */
int dist_local_size(void);
int dist_mpi_compiled(void); /* 1 when built with MPI */

/* Device and threads for this rank: with more than one process on a node, --device auto or
 * cuda (without :N) becomes cuda:<local rank mod GPUs> when GPUs exist, and CPU ranks that did
 * not choose --threads split the node's cores between them. */
void dist_apply_device(struct cli_common *cc);

/* owner[i] for units 0..n with cost[i] (tokens): longest first (equal costs: lower index first),
 * each to the least-loaded rank (equal loads: lower rank). A pure function of its inputs, so
 * every rank computes the same plan and re-runs get the same one; loads differ by at most the
 * largest unit. */
int dist_assign(const int64_t *cost, size_t n, int size, int *owner, assay_error *err);

/* Every rank passes its own status; all learn the lowest failing rank's status and message
 * (prefixed "rank R: " when there are several ranks) and return it. ASSAY_OK when none failed. */
int dist_agree(int rc, assay_error *err);

/* Whether err is a failure agreed through dist_agree that rank 0 prints: other ranks stay quiet. */
int dist_error_printed_elsewhere(const assay_error *err);

/* out[0..n): this rank filled the entries with own[i] set (each entry is owned by exactly one
 * rank); afterwards every rank holds every entry (n_targets, sum, n_greedy; the per-token arrays
 * too when per_token). Entries received are allocated here (free with score_results_free). */
int dist_allgather_results(score_result *out, size_t n, const unsigned char *own, int per_token,
                           assay_error *err);

/* Every rank's bytes to every rank: this rank sends send[0..n); *recv (malloc'd; the caller
 * frees it) holds rank 0's bytes, then rank 1's, ..., and counts[r] (dist_size() entries, the
 * caller's array) how many came from rank r. One process: a copy of send. Collective; a failure
 * (out of memory, 2 GiB in all) is the same on every rank. */
int dist_allgather_bytes(const void *send, size_t n, char **recv, size_t *counts, assay_error *err);

/* Sums v[0..n) over ranks in place. */
int dist_sum_i64(int64_t *v, size_t n, assay_error *err);

/* all[0..size) = every rank's v. */
int dist_allgather_f64(double v, double *all, assay_error *err);

/* A NCCL communicator over all ranks, this rank on CUDA device `device` (ncclGetUniqueId on rank
 * 0, broadcast over MPI, ncclCommInitRank): for tensor-parallel models to come. Collective.
 * CUDA builds with Open MPI and nccl.h only (NCCL is opened at run time); otherwise
 * ASSAY_EUNSUPPORTED. *comm is an ncclComm_t; free with dist_nccl_free (NULL-safe). */
int  dist_nccl_init(int device, void **comm, assay_error *err);
void dist_nccl_free(void *comm);

/* Every rank's scoring seconds and positions computed, as a JSON array
 * [{"rank", "score_s", "tokens_computed", <noted keys>}] (results.json's assay.per_rank).
 * Collective; NULL with err set when out of memory. */
struct cJSON *dist_per_rank_json(double score_s, int64_t tokens, assay_error *err);

/* Adds key = v to this rank's entry of the next dist_per_rank_json (a later note of the same key
 * replaces it; at most 8 keys; key must outlive that call). Every rank notes the same keys. */
void dist_per_rank_note(const char *key, double v);

/* Test only, called once per sharded pipeline call or generation window before the ranks agree:
 * ASSAY_TEST_FAIL_RANK=R makes rank R fail; ASSAY_TEST_KILL_RANK=R with ASSAY_TEST_KILL_AFTER=K
 * makes rank R SIGKILL itself at its (K+1)-th call, after saving that window's --resume results.
 * Returns the failure or ASSAY_OK. */
int dist_test_fault(assay_error *err);

#endif
