/* scoring/pyrandom.h — CPython's `random.Random` (Mersenne Twister MT19937), bit-exact for what
 * lm-evaluation-harness's few-shot sampler uses: seeding from an int (init_by_array of the
 * seed's 32-bit words, least significant first), getrandbits, _randbelow and random.sample's two
 * algorithms (a pool for small populations, a set of taken indices for large ones, chosen by n
 * and k exactly as CPython 3.11 does). Pure C, no allocation except in pyr_sample. Proven
 * against CPython's own outputs in tests/fixtures/pyrandom/ (tools/make_pyrandom_fixture.py). */
#ifndef ASSAY_PYRANDOM_H
#define ASSAY_PYRANDOM_H

#include <stddef.h>
#include <stdint.h>

typedef struct pyrandom {
    uint32_t mt[624];
    int      mti;
} pyrandom;

/* random.Random(seed) for an int seed (Python uses abs(seed)). */
void pyr_seed(pyrandom *r, int64_t seed);
/* genrand_uint32: the next 32 raw bits. */
uint32_t pyr_u32(pyrandom *r);
/* getrandbits(k), 0 <= k <= 64 (Python allows more; nothing here needs it). */
uint64_t pyr_getrandbits(pyrandom *r, int k);
/* _randbelow(n) (the getrandbits variant): uniform in [0, n); n >= 1. */
uint64_t pyr_randbelow(pyrandom *r, uint64_t n);
/* Which algorithm random.sample(range(n), k) uses: 1 = set-based, 0 = pool-based. */
int pyr_sample_uses_set(size_t n, size_t k);
/* random.sample(range(n), k) into out[0..k): the indices Python would return, in its order.
 * 0 ok, -1 k > n or out of memory (the pool or the set is n or k entries). */
int pyr_sample(pyrandom *r, size_t n, size_t k, size_t *out);

#endif
