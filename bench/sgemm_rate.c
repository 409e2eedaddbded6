/* bench/sgemm_rate.c — the machine's OpenBLAS sgemm rate on the shapes of a model's linear
 * layers: the ceiling that bench/engine_bench.sh compares the engine's achieved GFLOP/s with.
 *
 *   sgemm_rate [--threads N] [--repeats R] [--min-seconds S] NAME=MxKxN[*W] ...
 *
 * Each shape is C (M, N) = A (M, K) @ B^T with B stored (N, K) row-major: the layout of a
 * Hugging Face weight, and the call the engine makes (kernels/cpu/gemm.c). W (default 1) is the
 * shape's weight in a forward pass (how many times a layer's tokens go through it), used for
 * the combined rate: sum(W * flops) / sum(W * seconds), i.e. what a forward made only of these
 * GEMMs, each at its best measured speed, would achieve. Prints one JSON object on stdout.
 * Rate of a shape: best of R timed runs, each run repeating the call until it lasts at least
 * S seconds (so small shapes are not timer noise); one untimed warm-up call first. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);

typedef struct shape {
    char   name[32];
    int    m, k, n;
    double weight;
    double gflops; /* best measured */
} shape;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_shape(const char *arg, shape *s) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof s->name)
        return -1;
    memcpy(s->name, arg, (size_t)(eq - arg));
    s->name[eq - arg] = '\0';
    s->weight         = 1.0;
    int used          = 0;
    if (sscanf(eq + 1, "%dx%dx%d%n", &s->m, &s->k, &s->n, &used) != 3)
        return -1;
    const char *rest = eq + 1 + used;
    if (*rest == '*') {
        char *end;
        s->weight = strtod(rest + 1, &end);
        if (end == rest + 1 || *end || s->weight <= 0)
            return -1;
    } else if (*rest) {
        return -1;
    }
    if (s->m <= 0 || s->k <= 0 || s->n <= 0 || s->m > 65536 || s->k > 65536 || s->n > 262144)
        return -1;
    return 0;
}

static void fill(float *p, size_t n, unsigned *state) {
    for (size_t i = 0; i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        p[i]   = (float)((*state >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
}

static int measure(shape *s, int repeats, double min_s) {
    size_t ma = (size_t)s->m * s->k, mb = (size_t)s->n * s->k, mc = (size_t)s->m * s->n;
    float *a = malloc(ma * sizeof *a), *b = malloc(mb * sizeof *b), *c = malloc(mc * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return -1;
    }
    unsigned st = 12345u;
    fill(a, ma, &st);
    fill(b, mb, &st);
    double flop = 2.0 * s->m * s->k * s->n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k, 1.0f, a, s->k, b, s->k,
                0.0f, c, s->n);
    s->gflops = 0;
    for (int r = 0; r < repeats; r++) {
        int    calls = 0;
        double t0    = now_s(), t;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k, 1.0f, a, s->k, b,
                        s->k, 0.0f, c, s->n);
            calls++;
            t = now_s() - t0;
        } while (t < min_s);
        double g = flop * calls / t / 1e9;
        if (g > s->gflops)
            s->gflops = g;
    }
    free(a);
    free(b);
    free(c);
    return 0;
}

int main(int argc, char **argv) {
    int    threads = 0, repeats = 5;
    double min_s  = 0.2;
    shape *shapes = calloc((size_t)argc, sizeof *shapes);
    int    n      = 0;
    if (!shapes)
        return 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
            repeats = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--min-seconds") && i + 1 < argc) {
            min_s = atof(argv[++i]);
        } else if (parse_shape(argv[i], &shapes[n]) == 0) {
            n++;
        } else {
            fprintf(stderr,
                    "usage: sgemm_rate [--threads N] [--repeats R] [--min-seconds S] "
                    "NAME=MxKxN[*W]...\nbad argument: %s\n",
                    argv[i]);
            free(shapes);
            return 2;
        }
    }
    if (n == 0 || repeats < 1) {
        fprintf(stderr, "sgemm_rate: give at least one shape NAME=MxKxN\n");
        free(shapes);
        return 2;
    }
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    double wflop = 0, wtime = 0, best = 0;
    printf("{\"threads\": %d, \"openblas_config\": \"%s\", \"shapes\": [", threads,
           openblas_get_config());
    for (int i = 0; i < n; i++) {
        if (measure(&shapes[i], repeats, min_s) != 0) {
            fprintf(stderr, "sgemm_rate: out of memory for %s\n", shapes[i].name);
            free(shapes);
            return 3;
        }
        double flop = 2.0 * shapes[i].m * shapes[i].k * shapes[i].n * shapes[i].weight;
        wflop += flop;
        wtime += flop / (shapes[i].gflops * 1e9);
        if (shapes[i].gflops > best)
            best = shapes[i].gflops;
        printf("%s{\"name\": \"%s\", \"m\": %d, \"k\": %d, \"n\": %d, \"weight\": %g, "
               "\"gflops\": %.2f}",
               i ? ", " : "", shapes[i].name, shapes[i].m, shapes[i].k, shapes[i].n,
               shapes[i].weight, shapes[i].gflops);
    }
    printf("], \"combined_gflops\": %.2f, \"best_gflops\": %.2f}\n", wflop / wtime / 1e9, best);
    free(shapes);
    return 0;
}
