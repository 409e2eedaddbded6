/* kernels/cpu/pool.c — see pool.h. */
#include "kernels/cpu/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX 256

typedef struct pool {
    pthread_mutex_t lock; /* held by the thread running a job through the pool */
    int             n_workers;
    _Atomic int     gen;   /* the job: its sequence number << 9 | its thread count, one word so
                              that a worker not in a job reads that job's count, never the next
                              one's; workers wait for it to change */
    _Atomic int  pending;  /* workers of the current job that have not finished */
    _Atomic int  sleeping; /* workers asleep on gen */
    _Atomic int  waiting;  /* 1 while the caller sleeps on pending */
    _Atomic long budget;   /* the current spin budget, ns (see pool.h) */
    cpu_pool_fn  fn;       /* read only by the job's threads, which the caller waits for */
    void        *arg;
} pool;

static pool              P = {.lock = PTHREAD_MUTEX_INITIALIZER};
static _Thread_local int in_job; /* a pool worker, or the caller inside a job */
static long              max_spin_ns;

static void futex_wait(_Atomic int *a, int v) {
    syscall(SYS_futex, (int *)a, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *a) {
    syscall(SYS_futex, (int *)a, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* After a wait of `took` ns: raise the budget when spinning that long would have paid, halve it
 * when the wait outlasted the largest budget. Races between threads only blur the estimate. */
static void budget_learn(long took) {
    long b = atomic_load_explicit(&P.budget, memory_order_relaxed);
    if (took <= max_spin_ns)
        b = b + max_spin_ns / 8 > max_spin_ns ? max_spin_ns : b + max_spin_ns / 8;
    else
        b /= 2;
    atomic_store_explicit(&P.budget, b, memory_order_relaxed);
}

/* Spins until *a != v (until_ne) or *a == v, for at most the current budget from t0; 1 when the
 * condition came true. Plain loads, no `pause`: a virtual machine's pause-loop exiting turns a
 * pause loop into a yield of the vCPU. */
static int spin_for(_Atomic int *a, int v, int until_ne, long t0) {
    long budget = atomic_load_explicit(&P.budget, memory_order_relaxed);
    for (unsigned i = 1;; i++) {
        int cur = atomic_load_explicit(a, memory_order_acquire);
        if (until_ne ? cur != v : cur == v)
            return 1;
        if (budget <= 0 || (i % 1024 == 0 && now_ns() - t0 > budget))
            return 0;
    }
}

static void *worker(void *p) {
    int id = (int)(size_t)p, g = 0;
    in_job = 1;
    for (;;) {
        long t0 = now_ns();
        if (!spin_for(&P.gen, g, 1, t0)) {
            /* sleeping is announced before gen is read again; the caller bumps gen before it
               reads sleeping (both sequentially consistent), so one of them sees the other */
            atomic_fetch_add(&P.sleeping, 1);
            while (atomic_load(&P.gen) == g)
                futex_wait(&P.gen, g);
            atomic_fetch_sub(&P.sleeping, 1);
        }
        budget_learn(now_ns() - t0);
        g       = atomic_load(&P.gen);
        int nth = g & 511;
        if (id + 1 >= nth) /* not part of this job */
            continue;
        P.fn(P.arg, id + 1, nth);
        if (atomic_fetch_sub(&P.pending, 1) == 1 && atomic_load(&P.waiting))
            futex_wake(&P.pending);
    }
    return NULL;
}

/* A forked child has none of the parent's workers. */
static void pool_atfork_child(void) {
    pthread_mutex_init(&P.lock, NULL);
    P.n_workers = 0;
    atomic_store(&P.gen, 0);
    atomic_store(&P.pending, 0);
    atomic_store(&P.sleeping, 0);
    atomic_store(&P.waiting, 0);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void           pool_init(void) {
              const char *e  = getenv("ASSAY_SPIN_US");
              long        us = e && *e ? strtol(e, NULL, 10) : 100;
              max_spin_ns    = (us < 0 ? 0 : us > 100000 ? 100000 : us) * 1000L;
              atomic_store(&P.budget, max_spin_ns);
              pthread_atfork(NULL, NULL, pool_atfork_child);
}

void cpu_pool_run(int nth, cpu_pool_fn fn, void *arg) {
    pthread_once(&once, pool_init);
    if (nth > POOL_MAX)
        nth = POOL_MAX;
    if (nth <= 1 || in_job || omp_in_parallel() || pthread_mutex_trylock(&P.lock) != 0) {
        fn(arg, 0, 1);
        return;
    }
    while (P.n_workers < nth - 1) {
        pthread_t      t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &a, worker, (void *)(size_t)P.n_workers);
        pthread_attr_destroy(&a);
        if (rc != 0)
            break;
        P.n_workers++;
    }
    if (P.n_workers < nth - 1)
        nth = P.n_workers + 1;
    P.fn         = fn;
    P.arg        = arg;
    unsigned seq = ((unsigned)atomic_load(&P.gen) >> 9) + 1;
    atomic_store(&P.pending, nth - 1);
    atomic_store(&P.gen, (int)((seq << 9 & 0x7fffffffu) | (unsigned)nth));
    if (atomic_load(&P.sleeping))
        futex_wake(&P.gen);
    in_job = 1;
    fn(arg, 0, nth);
    in_job  = 0;
    long t0 = now_ns();
    if (!spin_for(&P.pending, 0, 0, t0)) {
        atomic_store(&P.waiting, 1);
        for (int v; (v = atomic_load(&P.pending)) != 0;)
            futex_wait(&P.pending, v);
        atomic_store(&P.waiting, 0);
    }
    budget_learn(now_ns() - t0);
    pthread_mutex_unlock(&P.lock);
}

int cpu_pool_spinning(void) {
    pthread_once(&once, pool_init);
    return atomic_load_explicit(&P.budget, memory_order_relaxed) > 0;
}
