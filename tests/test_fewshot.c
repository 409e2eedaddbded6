/* Few-shot sampling: scoring/pyrandom.c against CPython's random.Random outputs
 * (tests/fixtures/pyrandom/cases.txt, written by tools/make_pyrandom_fixture.py): seeding,
 * getrandbits widths, _randbelow, random.sample's pool and set algorithms. Exact equality: the
 * generator is integer arithmetic, nothing to tolerate. */
#include <inttypes.h>

#include "scoring/pyrandom.h"
#include "tests/helpers.h"

#define CASES "tests/fixtures/pyrandom/cases.txt"

static uint64_t next_u64(char **p) {
    char    *e;
    uint64_t v = strtoull(*p, &e, 10);
    cr_assert(e != *p, "fixture: expected a number at '%.20s'", *p);
    *p = e;
    return v;
}

Test(pyrandom, matches_cpython_fixture) {
    FILE *f = fopen(CASES, "r");
    cr_assert(f, "cannot open %s (run tools/make_pyrandom_fixture.py)", CASES);
    static char line[1 << 16];
    int         n_bits = 0, n_below = 0, n_set = 0, n_pool = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#')
            continue;
        char   *p = line, op[16] = {0}, alg[8] = {0};
        int64_t seed = strtoll(p, &p, 10);
        int     used = 0;
        cr_assert_eq(sscanf(p, " %15s%n", op, &used), 1, "%s:%d", CASES, lineno);
        p += used;
        pyrandom r;
        pyr_seed(&r, seed);
        if (!strcmp(op, "bits") || !strcmp(op, "below")) {
            uint64_t arg = next_u64(&p), reps = next_u64(&p);
            p = strchr(p, ':') + 1;
            for (uint64_t i = 0; i < reps; i++) {
                uint64_t want = next_u64(&p);
                uint64_t got  = op[0] == 'b' && op[1] == 'i' ? pyr_getrandbits(&r, (int)arg)
                                                             : pyr_randbelow(&r, arg);
                cr_assert_eq(got, want,
                             "%s:%d: %s(%" PRIu64 ") #%" PRIu64 " seed %" PRId64 ": %" PRIu64
                             " != CPython's %" PRIu64,
                             CASES, lineno, op, arg, i, seed, got, want);
            }
            *(op[1] == 'i' ? &n_bits : &n_below) += 1;
        } else {
            cr_assert_str_eq(op, "sample", "%s:%d", CASES, lineno);
            size_t n = (size_t)next_u64(&p), k = (size_t)next_u64(&p);
            size_t reps = (size_t)next_u64(&p);
            cr_assert_eq(sscanf(p, " %7s", alg), 1);
            cr_assert_eq(pyr_sample_uses_set(n, k), !strcmp(alg, "set"),
                         "%s:%d: sample(%zu, %zu) algorithm", CASES, lineno, n, k);
            p           = strchr(p, ':') + 1;
            size_t *out = calloc(k ? k : 1, sizeof *out);
            for (size_t i = 0; i < reps; i++) {
                cr_assert_eq(pyr_sample(&r, n, k, out), 0);
                for (size_t j = 0; j < k; j++) {
                    size_t want = (size_t)next_u64(&p);
                    cr_assert_eq(out[j], want,
                                 "%s:%d: sample(%zu, %zu) rep %zu [%zu] seed %" PRId64
                                 ": %zu != CPython's %zu",
                                 CASES, lineno, n, k, i, j, seed, out[j], want);
                }
            }
            free(out);
            *(alg[0] == 's' ? &n_set : &n_pool) += 1;
        }
    }
    fclose(f);
    /* the fixture exercises every path */
    cr_assert(n_bits > 0 && n_below > 0 && n_set > 0 && n_pool > 0, "%d %d %d %d", n_bits, n_below,
              n_set, n_pool);
}

Test(pyrandom, refuses_k_over_n) {
    pyrandom r;
    size_t   out[4];
    pyr_seed(&r, 1234);
    cr_assert_eq(pyr_sample(&r, 3, 4, out), -1);
}

/* A known value independent of the fixture: random.Random(1234).getrandbits(32). */
Test(pyrandom, seed_1234_first_word) {
    pyrandom r;
    pyr_seed(&r, 1234);
    cr_assert_eq(pyr_u32(&r), 4150886329u);
}
