/* harness/judge_client.c — the chat-completions client on libcurl's multi interface (see
 * judge_client.h). Requests wait in a FIFO; retries wait in a small list ordered by nothing but
 * their due time; each of the N slots owns one easy handle that is reused, so connections stay
 * alive between requests. */
#include "harness/judge_client.h"

#include <curl/curl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/util.h"

/* Retry-After beyond this is capped: a server asking for hours is treated as asking for this. */
#define JC_RETRY_AFTER_MAX_S 600.0

typedef struct jc_req {
    size_t      id;
    const char *body;
    size_t      len;
    int         tries;
    double      due; /* a retry is not sent before this time */
} jc_req;

typedef struct jc_slot {
    CURL  *h;
    int    busy;
    jc_req req;
    char  *buf;
    size_t n, cap, max;
    int    oversized;
    char   errbuf[CURL_ERROR_SIZE];
} jc_slot;

struct judge_client {
    judge_client_cfg    cfg;
    CURLM              *multi;
    struct curl_slist  *headers;
    jc_slot            *slots;
    jc_req             *fresh; /* FIFO of requests not yet tried */
    size_t              n_fresh, cap_fresh, head;
    jc_req             *retry; /* requests waiting for their next try */
    size_t              n_retry, cap_retry;
    int                 stopped;
    double              pause_until; /* a Retry-After holds every request until then */
    uint64_t            rng;
    judge_client_counts counts;
};

static size_t on_write(char *data, size_t size, size_t nmemb, void *user) {
    jc_slot *s = user;
    size_t   n = size * nmemb;
    if (n > s->max - s->n) {
        s->oversized = 1;
        return 0; /* libcurl stops the transfer with CURLE_WRITE_ERROR */
    }
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 16384;
        while (cap < s->n + n + 1)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->n, data, n);
    s->n += n;
    s->buf[s->n] = '\0';
    return n;
}

judge_client *judge_client_new(const judge_client_cfg *cfg, assay_error *err) {
    judge_client *c = calloc(1, sizeof *c);
    if (!c) {
        assay_fail(err, ASSAY_ENOMEM, "out of memory");
        return NULL;
    }
    c->cfg   = *cfg;
    c->slots = calloc((size_t)cfg->concurrency, sizeof *c->slots);
    c->multi = curl_multi_init();
    c->rng   = (uint64_t)(time_now() * 1e9) ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    if (!c->slots || !c->multi)
        goto oom;
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->concurrency);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)cfg->concurrency);

    /* "Expect:" turns off 100-continue, which costs a round trip per large body */
    const char *fixed[] = {"Content-Type: application/json", "Accept: application/json", "Expect:"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        struct curl_slist *l = curl_slist_append(c->headers, fixed[i]);
        if (!l)
            goto oom;
        c->headers = l;
    }
    if (cfg->api_key) {
        size_t n    = strlen(cfg->api_key) + 32;
        char  *auth = malloc(n);
        if (!auth)
            goto oom;
        snprintf(auth, n, "Authorization: Bearer %s", cfg->api_key);
        struct curl_slist *l = curl_slist_append(c->headers, auth);
        memset(auth, 0, n);
        free(auth);
        if (!l)
            goto oom;
        c->headers = l;
    }
    long timeout_ms = (long)(cfg->timeout_s * 1000);
    for (int i = 0; i < cfg->concurrency; i++) {
        jc_slot *s = &c->slots[i];
        CURL    *h = s->h = curl_easy_init();
        if (!h)
            goto oom;
        s->max = cfg->reply_max;
        curl_easy_setopt(h, CURLOPT_URL, cfg->url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (cfg->ca_bundle)
            curl_easy_setopt(h, CURLOPT_CAINFO, cfg->ca_bundle);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 30000 ? timeout_ms : 30000L);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf);
        curl_easy_setopt(h, CURLOPT_PRIVATE, s);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "assay-judge");
    }
    return c;
oom:
    judge_client_free(c);
    assay_fail(err, ASSAY_ENOMEM, "out of memory (or libcurl could not start)");
    return NULL;
}

void judge_client_free(judge_client *c) {
    if (!c)
        return;
    for (int i = 0; c->slots && i < c->cfg.concurrency; i++) {
        if (c->slots[i].busy)
            curl_multi_remove_handle(c->multi, c->slots[i].h);
        curl_easy_cleanup(c->slots[i].h);
        free(c->slots[i].buf);
    }
    free(c->slots);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    curl_slist_free_all(c->headers); /* the key lived there: libcurl frees it */
    free(c->fresh);
    free(c->retry);
    free(c);
}

static int push(jc_req **v, size_t *n, size_t *cap, jc_req r) {
    if (*n == *cap) {
        size_t  nc = *cap ? *cap * 2 : 64;
        jc_req *nv = realloc(*v, nc * sizeof *nv);
        if (!nv)
            return -1;
        *v   = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = r;
    return 0;
}

int judge_client_submit(judge_client *c, size_t id, const char *body, size_t len,
                        assay_error *err) {
    jc_req r = {.id = id, .body = body, .len = len};
    if (push(&c->fresh, &c->n_fresh, &c->cap_fresh, r))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    return ASSAY_OK;
}

static double rand01(judge_client *c) {
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (double)(c->rng >> 11) / 9007199254740992.0;
}

static int start(judge_client *c, jc_slot *s, jc_req r, assay_error *err) {
    s->req       = r;
    s->n         = 0;
    s->oversized = 0;
    s->errbuf[0] = '\0';
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, r.body);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r.len);
    if (curl_multi_add_handle(c->multi, s->h) != CURLM_OK)
        return assay_fail(err, ASSAY_EINTERNAL, "libcurl: cannot add a request");
    s->busy = 1;
    c->counts.tries++;
    if (r.tries > 0)
        c->counts.retries++;
    return ASSAY_OK;
}

/* Fills free slots: due retries first, then new requests while may_start agrees. */
static int fill(judge_client *c, const judge_client_hooks *h, assay_error *err) {
    double now = time_now();
    if (now < c->pause_until)
        return ASSAY_OK;
    for (int i = 0; i < c->cfg.concurrency; i++) {
        jc_slot *s = &c->slots[i];
        if (s->busy)
            continue;
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < c->n_retry; k++)
            if (c->retry[k].due <= now &&
                (best == SIZE_MAX || c->retry[k].due < c->retry[best].due))
                best = k;
        int rc;
        if (best != SIZE_MAX) {
            jc_req r       = c->retry[best];
            c->retry[best] = c->retry[--c->n_retry];
            if ((rc = start(c, s, r, err)))
                return rc;
            continue;
        }
        if (c->stopped || c->head == c->n_fresh)
            return ASSAY_OK;
        if (h->may_start(h->user, c->fresh[c->head].id)) {
            c->stopped = 1;
            return ASSAY_OK;
        }
        if ((rc = start(c, s, c->fresh[c->head++], err)))
            return rc;
    }
    return ASSAY_OK;
}

static int retryable_curl(CURLcode r) {
    switch (r) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WRITE_ERROR: /* an oversized reply */ return 1;
    default: return 0;
    }
}

/* One finished try: accept, schedule a retry, or report the request failed. */
static int finish(judge_client *c, const judge_client_hooks *h, jc_slot *s, CURLcode res,
                  assay_error *err) {
    long        code = 0;
    curl_off_t  ra   = -1;
    const char *ct   = NULL;
    char        msg[512];
    int         retry = 1;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(s->h, CURLINFO_RETRY_AFTER, &ra);
    curl_easy_getinfo(s->h, CURLINFO_CONTENT_TYPE, &ct);
    curl_multi_remove_handle(c->multi, s->h);
    s->busy  = 0;
    jc_req r = s->req;
    r.tries++;
    if (s->oversized) {
        snprintf(msg, sizeof msg, "reply over the %zu-byte cap", s->max);
    } else if (res != CURLE_OK) {
        snprintf(msg, sizeof msg, "%s%s%s", curl_easy_strerror(res), s->errbuf[0] ? ": " : "",
                 s->errbuf);
        retry = retryable_curl(res);
    } else if (code >= 200 && code < 300) {
        if (!ct || strncasecmp(ct, "application/json", 16) != 0) {
            snprintf(msg, sizeof msg,
                     "HTTP %ld with content type '%.80s', expected "
                     "application/json",
                     code, ct ? ct : "(none)");
        } else {
            msg[0] = '\0';
            if (!h->on_reply(h->user, r.id, s->buf ? s->buf : "", s->n, msg, sizeof msg))
                return ASSAY_OK;
            if (!msg[0])
                snprintf(msg, sizeof msg, "invalid reply");
        }
    } else {
        /* the body is not quoted: servers may echo what they were sent */
        snprintf(msg, sizeof msg, "HTTP %ld", code);
        retry = code == 429 || code == 408 || code == 409 || code >= 500;
    }
    if (!retry || r.tries > c->cfg.max_retries) {
        h->on_fail(h->user, r.id, msg, r.tries);
        return ASSAY_OK;
    }
    double d = c->cfg.backoff_s * pow(2.0, r.tries - 1);
    if (d > c->cfg.backoff_max_s)
        d = c->cfg.backoff_max_s;
    d     = d * (0.5 + 0.5 * rand01(c)); /* jitter keeps parallel retries apart */
    r.due = time_now() + d;
    if (ra >= 0) {
        /* the server asked the client, not just this request, to wait */
        r.due          = fmax(r.due, time_now() + fmin((double)ra, JC_RETRY_AFTER_MAX_S));
        c->pause_until = fmax(c->pause_until, r.due);
    }
    if (push(&c->retry, &c->n_retry, &c->cap_retry, r))
        return assay_fail(err, ASSAY_ENOMEM, "out of memory");
    return ASSAY_OK;
}

int judge_client_run(judge_client *c, const judge_client_hooks *h, assay_error *err) {
    int rc;
    for (;;) {
        if ((rc = fill(c, h, err)))
            return rc;
        int busy = 0;
        for (int i = 0; i < c->cfg.concurrency; i++)
            busy += c->slots[i].busy;
        if (!busy && c->n_retry == 0 && (c->stopped || c->head == c->n_fresh))
            return ASSAY_OK;
        int running = 0;
        if (curl_multi_perform(c->multi, &running) != CURLM_OK)
            return assay_fail(err, ASSAY_EINTERNAL, "libcurl: multi perform failed");
        CURLMsg *m;
        int      left, done = 0;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            jc_slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode res = m->data.result;
            if ((rc = finish(c, h, s, res, err)))
                return rc;
            done = 1;
        }
        if (done)
            continue;
        /* wake for network activity, or when the next retry is due */
        double wait = 1.0, now = time_now();
        for (size_t k = 0; k < c->n_retry; k++)
            wait = fmin(wait, c->retry[k].due - now);
        if (c->pause_until > now)
            wait = fmax(wait, fmin(1.0, c->pause_until - now));
        int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        if (curl_multi_poll(c->multi, NULL, 0, ms, NULL) != CURLM_OK)
            return assay_fail(err, ASSAY_EINTERNAL, "libcurl: multi poll failed");
    }
}

judge_client_counts judge_client_get_counts(const judge_client *c) { return c->counts; }
