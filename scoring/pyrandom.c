/* scoring/pyrandom.c — see pyrandom.h. MT19937 as CPython's Modules/_randommodule.c (itself
 * Matsumoto and Nishimura's reference code); sample() as Lib/random.py (3.11). */
#include "scoring/pyrandom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MT_N 624
#define MT_M 397

static void init_genrand(pyrandom *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
}

static void init_by_array(pyrandom *r, const uint32_t *key, size_t len) {
    init_genrand(r, 19650218u);
    size_t i = 1, j = 0, k = MT_N > len ? MT_N : len;
    for (; k; k--) {
        r->mt[i] =
            (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i        = 1;
        }
        if (j >= len)
            j = 0;
    }
    for (k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i        = 1;
        }
    }
    r->mt[0] = 0x80000000u;
}

void pyr_seed(pyrandom *r, int64_t seed) {
    /* abs(seed) as little-endian 32-bit words; 0 is the one word 0 */
    uint64_t a = seed < 0 ? (uint64_t)0 - (uint64_t)seed : (uint64_t)seed;
    uint32_t key[2];
    size_t   len = 0;
    key[len++]   = (uint32_t)a;
    if (a >> 32)
        key[len++] = (uint32_t)(a >> 32);
    init_by_array(r, key, len);
}

uint32_t pyr_u32(pyrandom *r) {
    static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
    uint32_t              y;
    if (r->mti >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y         = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < MT_N - 1; kk++) {
            y         = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y               = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->mti          = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

uint64_t pyr_getrandbits(pyrandom *r, int k) {
    if (k <= 0)
        return 0;
    if (k <= 32)
        return pyr_u32(r) >> (32 - k);
    /* CPython fills 32-bit words least significant first, the last one keeping its top bits */
    uint64_t lo = pyr_u32(r);
    uint64_t hi = pyr_u32(r) >> (64 - (k > 64 ? 64 : k));
    return lo | hi << 32;
}

uint64_t pyr_randbelow(pyrandom *r, uint64_t n) {
    int k = 0;
    for (uint64_t v = n; v; v >>= 1)
        k++; /* n.bit_length() */
    uint64_t x = pyr_getrandbits(r, k);
    while (x >= n)
        x = pyr_getrandbits(r, k);
    return x;
}

int pyr_sample_uses_set(size_t n, size_t k) {
    double setsize = 21; /* Python: setsize = 21; if k > 5: setsize += 4 ** ceil(log(k*3, 4)) */
    if (k > 5)
        setsize += pow(4.0, ceil(log((double)(k * 3)) / log(4.0)));
    return (double)n > setsize;
}

int pyr_sample(pyrandom *r, size_t n, size_t k, size_t *out) {
    if (k > n)
        return -1;
    if (!pyr_sample_uses_set(n, k)) {
        size_t *pool = malloc((n ? n : 1) * sizeof *pool);
        if (!pool)
            return -1;
        for (size_t i = 0; i < n; i++)
            pool[i] = i;
        for (size_t i = 0; i < k; i++) {
            size_t j = (size_t)pyr_randbelow(r, n - i);
            out[i]   = pool[j];
            pool[j]  = pool[n - i - 1];
        }
        free(pool);
        return 0;
    }
    /* the set of taken indices: k is small next to n here, so a linear scan of out[] is it */
    for (size_t i = 0; i < k; i++) {
        size_t j;
        int    seen;
        do {
            j    = (size_t)pyr_randbelow(r, n);
            seen = 0;
            for (size_t q = 0; q < i && !seen; q++)
                seen = out[q] == j;
        } while (seen);
        out[i] = j;
    }
    return 0;
}
