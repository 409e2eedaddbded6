/* harness/judge_client.h — an OpenAI-compatible chat-completions client on the libcurl multi
 * interface: N requests in flight over kept-alive connections (HTTP/2 multiplexed where the
 * server offers it over TLS), TLS verification always on, proxies from the environment
 * (http_proxy, https_proxy, no_proxy as libcurl reads them). Failures are retried with
 * exponential backoff and jitter, honouring Retry-After; the key goes only into the
 * Authorization header and is never part of a message. */
#ifndef ASSAY_JUDGE_CLIENT_H
#define ASSAY_JUDGE_CLIENT_H

#include <stddef.h>

#include "core/error.h"

typedef struct judge_client_cfg {
    const char *url;           /* the chat-completions URL */
    const char *api_key;       /* NULL: no Authorization header */
    const char *ca_bundle;     /* NULL: the system's CA store */
    int         concurrency;   /* requests in flight */
    double      timeout_s;     /* per try, connection included */
    int         max_retries;   /* tries after the first; then the request has failed */
    double      backoff_s;     /* first retry waits about this long, doubling each time */
    double      backoff_max_s; /* ... up to this */
    size_t      reply_max;     /* bytes; a longer body is an error for that try */
} judge_client_cfg;

typedef struct judge_client_hooks {
    void *user;
    /* Asked before the first try of request id: 0 starts it; anything else stops the client
     * from starting new requests (those in flight, and their retries, still finish). */
    int (*may_start)(void *user, size_t id);
    /* A 2xx reply with a JSON content type within reply_max: return 0 to accept it (the request
     * is done), or nonzero with msg filled when it is not a valid reply (it is retried like a
     * 5xx). May call judge_client_submit. */
    int (*on_reply)(void *user, size_t id, const char *body, size_t len, char *msg, size_t msg_cap);
    /* Request id has failed: every try used, or an error that a retry cannot fix. */
    void (*on_fail)(void *user, size_t id, const char *msg, int tries);
} judge_client_hooks;

typedef struct judge_client judge_client;

judge_client *judge_client_new(const judge_client_cfg *cfg, assay_error *err);
void          judge_client_free(judge_client *c); /* NULL-safe */

/* Queues request id with body[0..len) (not copied: it must live until the request is done). */
int judge_client_submit(judge_client *c, size_t id, const char *body, size_t len, assay_error *err);

/* Runs until every queued request is done or failed, or may_start said stop and what was in
 * flight has finished. Requests never started stay unreported. Returns ASSAY_OK, or a status
 * for a failure of the client itself (out of memory, libcurl). */
int judge_client_run(judge_client *c, const judge_client_hooks *h, assay_error *err);

/* Counts of this client's life: HTTP tries sent, and how many of them were retries. */
typedef struct judge_client_counts {
    long tries, retries;
} judge_client_counts;
judge_client_counts judge_client_get_counts(const judge_client *c);

#endif
