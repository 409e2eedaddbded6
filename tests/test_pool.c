/* tests/test_pool.c — the CPU GEMM's thread pool (kernels/cpu/pool.h): every thread index runs
 * exactly once per job and the job is over when cpu_pool_run returns, over many jobs in a row
 * (the hand-over path) and after the workers have gone to sleep (the futex path); calls from
 * inside a job or an OpenMP region run inline; two threads using the pool at once both finish. */
#include <criterion/criterion.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernels/cpu/pool.h"

typedef struct counts {
    _Atomic int hits[8];
    _Atomic int calls;
    int         nth_seen;
} counts;

static void count_job(void *arg, int tid, int nth) {
    counts *c = arg;
    atomic_fetch_add(&c->hits[tid], 1);
    atomic_fetch_add(&c->calls, 1);
    c->nth_seen = nth;
}

Test(pool, every_thread_index_runs_once_per_job_and_the_job_is_over_on_return) {
    for (int round = 0; round < 2000; round++) {
        counts c = {0};
        cpu_pool_run(3, count_job, &c);
        cr_assert_eq(atomic_load(&c.calls), c.nth_seen, "round %d", round);
        for (int t = 0; t < c.nth_seen; t++)
            cr_assert_eq(atomic_load(&c.hits[t]), 1, "round %d tid %d", round, t);
        if (round % 500 == 0)
            usleep(300 * 1000); /* longer than any spin budget: the workers sleep */
    }
}

static void nested_job(void *arg, int tid, int nth) {
    (void)tid, (void)nth;
    counts inner = {0};
    cpu_pool_run(4, count_job, &inner); /* inline: one call, tid 0 of 1 */
    if (atomic_load(&inner.calls) == 1 && inner.nth_seen == 1)
        atomic_fetch_add(&((counts *)arg)->calls, 1);
}

Test(pool, a_call_from_inside_a_job_or_an_openmp_region_runs_inline) {
    counts c = {0};
    cpu_pool_run(2, nested_job, &c);
    cr_assert_eq(atomic_load(&c.calls), 2);
    int ok = 1;
#pragma omp parallel num_threads(2) reduction(& : ok)
    {
        counts in = {0};
        cpu_pool_run(2, count_job, &in);
        ok = atomic_load(&in.calls) == 1 && in.nth_seen == 1;
    }
    cr_assert(ok);
}

static void *hammer(void *arg) {
    for (int i = 0; i < 3000; i++) {
        counts c = {0};
        cpu_pool_run(2, count_job, &c);
        if (atomic_load(&c.calls) != c.nth_seen)
            return NULL;
    }
    return arg;
}

Test(pool, two_threads_using_the_pool_at_once_both_finish, .timeout = 60) {
    pthread_t a, b;
    void     *ra, *rb;
    pthread_create(&a, NULL, hammer, (void *)1);
    pthread_create(&b, NULL, hammer, (void *)1);
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    cr_assert(ra && rb);
}

/* Jobs of different widths in a row, with more workers than any one job uses: a worker left out
 * of a job must not read the next job's width and run it twice (pending would go wrong and a
 * tid would run twice or not at all). */
Test(pool, jobs_of_changing_width_run_each_thread_index_once, .timeout = 120) {
    static const int widths[] = {8, 2, 5, 3, 8, 1, 7, 2};
    for (int round = 0; round < 4000; round++) {
        int    w = widths[round % 8];
        counts c = {0};
        cpu_pool_run(w, count_job, &c);
        cr_assert_eq(c.nth_seen, w, "round %d", round);
        cr_assert_eq(atomic_load(&c.calls), w, "round %d: %d calls for width %d", round,
                     atomic_load(&c.calls), w);
        for (int t = 0; t < w; t++)
            cr_assert_eq(atomic_load(&c.hits[t]), 1, "round %d tid %d", round, t);
    }
}
