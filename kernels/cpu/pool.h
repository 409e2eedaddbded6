/* kernels/cpu/pool.h — the threads of the CPU GEMM. A decode step runs about a hundred short
 * GEMMs (tens of microseconds each). Under OMP_WAIT_POLICY=passive (the CLI's default,
 * harness/main.c) an OpenMP region puts idle threads to sleep on a futex at once, so each GEMM
 * paid a wake-up on entry and another at its closing barrier: on an idle 2-core machine that was
 * about 40% of a Q8_0 decode step (bench/RESULTS.md). Spinning instead (OMP_WAIT_POLICY=active,
 * or libgomp's GOMP_SPINCOUNT) removes that cost on an idle machine but collapses throughput when
 * other processes want the cores: a thread spins while the one it waits for is descheduled.
 *
 * This pool's waits adapt. A waiting thread watches for its event with plain loads for up to a
 * budget, then sleeps on a futex. Each wait measures how long it actually took: a wait longer than
 * the largest budget (the other thread was descheduled, or the process is idle between steps)
 * halves the budget; a shorter one raises it. So on an idle machine consecutive GEMMs of a step
 * hand over in well under a microsecond, and under contention the budget falls towards zero and
 * the pool behaves like the passive policy. ASSAY_SPIN_US sets the largest budget in microseconds
 * (default 100; 0: always sleep at once).
 *
 * Results never depend on the pool: callers split work so that every output is computed by one
 * thread in the order the kernels' contracts fix. */
#ifndef ASSAY_KERNELS_CPU_POOL_H
#define ASSAY_KERNELS_CPU_POOL_H

typedef void (*cpu_pool_fn)(void *arg, int tid, int nth);

/* Runs fn(arg, tid, nth) for tid = 0 .. nth-1 at once (the caller is tid 0) and returns when all
 * have returned. Runs fn(arg, 0, 1) on the calling thread alone when nth <= 1, when called from
 * inside an OpenMP region or a pool job, while another thread is using the pool, or when no
 * worker thread can be started. Thread-safe. */
void cpu_pool_run(int nth, cpu_pool_fn fn, void *arg);

/* 1 while waits are spinning (a job hands over in well under a microsecond), 0 when the budget
 * has fallen to nothing (each job then costs a futex wake-up): for callers deciding whether work
 * of a few microseconds is worth splitting. */
int cpu_pool_spinning(void);

#endif
