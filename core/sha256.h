/* core/sha256.h — SHA-256 (FIPS 180-4) for the content hashes results files record. */
#ifndef ASSAY_SHA256_H
#define ASSAY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t  buf[64];
    size_t   n;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_hex(sha256_ctx *c, char out[65]); /* finishes; c must be re-initialized to reuse */

/* Hashes max_bytes (SIZE_MAX: all) of a regular file into c. */
int sha256_file(sha256_ctx *c, const char *path, size_t max_bytes, assay_error *err);

#endif
