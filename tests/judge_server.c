/* tests/judge_server.c — a fault-injecting OpenAI-compatible chat-completions server for the
 * `assay judge` tests: real HTTP/1.1 with keep-alive on 127.0.0.1 (ephemeral port), one thread
 * per connection. It judges by markers the tests put in the answers and logs every request.
 *
 *   judge_server --port-file F --log F [--judge always-a|perfect|garbage|garbage-once|rating]
 *                [--fault 429|500|drop|truncated|invalid|ctype|oversized|missing|400]
 *                [--fault-count K] [--retry-after S] [--delay-ms D] [--usage-div N] [--key K]
 *
 * --judge: always-a answers "[[A]]"; perfect reads "quality=N" in the two answers (first
 * occurrence = position A) and prefers the higher, "[[C]]" when equal; garbage never gives a
 * verdict; garbage-once gives none to a first request and a proper one to the reminder; rating
 * answers "Rating: [[N]]" with the answer's quality.
 * --fault: the first K requests (default all) get the fault instead of a reply (slow: the
 * reply comes after 3 s).
 * usage: prompt_tokens = body bytes / N (default 4), completion_tokens = reply content bytes.
 * --log: one line per request: "n=<count> conn=<id> auth=<0|1> msgs=<n> t=<seconds>", flushed
 * at once; auth=1 when the Authorization header is "Bearer <K>". */
#include <arpa/inet.h>
#include <cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char     *judge_kind = "perfect", *fault = NULL, *key = NULL, *log_path = NULL;
static long            fault_count = -1, retry_after = 1, delay_ms = 0, usage_div = 4;
static long            n_requests = 0, n_conns = 0;
static FILE           *log_fp;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int status, const char *ctype, const char *extra, const char *body,
                   size_t len, size_t claimed_len) {
    char head[512];
    int  n = snprintf(head, sizeof head,
                      "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                      ctype, claimed_len, extra ? extra : "");
    if (send_all(fd, head, (size_t)n))
        return -1;
    return send_all(fd, body, len);
}

/* "quality=N" occurrences in s: the first two values. */
static int qualities(const char *s, int q[2]) {
    int n = 0;
    for (const char *p = s; n < 2 && (p = strstr(p, "quality=")); p += 8)
        q[n++] = atoi(p + 8);
    return n;
}

static char *reply_body(const char *content, long prompt_tokens) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", "chatcmpl-test");
    cJSON_AddStringToObject(o, "object", "chat.completion");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices");
    cJSON *c  = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *m = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddStringToObject(c, "finish_reason", "stop");
    cJSON_AddItemToArray(ch, c);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)strlen(content));
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt_tokens + (long)strlen(content)));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* The judge's text for a request body. */
static void judge_text(const char *body, char *out, size_t cap) {
    cJSON      *j    = cJSON_Parse(body);
    cJSON      *msgs = cJSON_GetObjectItem(j, "messages");
    int         n    = cJSON_GetArraySize(msgs);
    cJSON      *user = cJSON_GetArrayItem(msgs, 1);
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(user, "content"));
    int         q[2] = {0, 0}, nq = text ? qualities(text, q) : 0;
    const char *v = "[[C]]";
    if (!strcmp(judge_kind, "always-a")) {
        snprintf(out, cap, "Assistant A is clearly better. [[A]]");
    } else if (!strcmp(judge_kind, "garbage") || (!strcmp(judge_kind, "garbage-once") && n < 4)) {
        snprintf(out, cap, "Both answers have merit; I cannot decide.");
    } else if (!strcmp(judge_kind, "rating")) {
        snprintf(out, cap, "A fair answer. Rating: [[%d]]", nq >= 1 ? q[0] : 5);
    } else {
        if (nq == 2 && q[0] > q[1])
            v = "[[A]]";
        else if (nq == 2 && q[1] > q[0])
            v = "[[B]]";
        /* the format is restated before the final verdict, as judges do */
        snprintf(out, cap, "Format: [[A]], [[B]] or [[C]]. Final verdict: %s", v);
    }
    cJSON_Delete(j);
}

static void *serve(void *arg) {
    int    fd  = (int)(long)arg;
    size_t cap = 1 << 16, n = 0;
    char  *buf = malloc(cap);
    long   conn;
    pthread_mutex_lock(&mu);
    conn = ++n_conns;
    pthread_mutex_unlock(&mu);
    for (;;) {
        char *end;
        while (!(end = memmem(buf, n, "\r\n\r\n", 4))) {
            if (n + 4096 > cap)
                buf = realloc(buf, cap *= 2);
            ssize_t r = recv(fd, buf + n, cap - n, 0);
            if (r <= 0)
                goto out;
            n += (size_t)r;
        }
        size_t hlen   = (size_t)(end - buf) + 4;
        size_t clen   = 0;
        int    auth   = 0;
        char  *h      = buf;
        buf[hlen - 2] = '\0';
        /* one thread per connection: strtok_r, never strtok's shared state */
        char *save = NULL;
        for (char *line = strtok_r(h, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
            if (!strncasecmp(line, "Content-Length:", 15))
                clen = strtoul(line + 15, NULL, 10);
            if (!strncasecmp(line, "Authorization: Bearer ", 22) && key && !strcmp(line + 22, key))
                auth = 1;
        }
        while (n < hlen + clen) {
            if (hlen + clen + 1 > cap)
                buf = realloc(buf, cap = hlen + clen + 1);
            ssize_t r = recv(fd, buf + n, cap - n, 0);
            if (r <= 0)
                goto out;
            n += (size_t)r;
        }
        char *body = malloc(clen + 1);
        memcpy(body, buf + hlen, clen);
        body[clen] = '\0';
        memmove(buf, buf + hlen + clen, n - hlen - clen);
        n -= hlen + clen;

        cJSON *j    = cJSON_Parse(body);
        int    msgs = cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages"));
        cJSON_Delete(j);
        pthread_mutex_lock(&mu);
        long k = ++n_requests;
        if (log_fp) {
            fprintf(log_fp, "n=%ld conn=%ld auth=%d msgs=%d t=%.6f\n", k, conn, auth, msgs,
                    now_s());
            fflush(log_fp);
        }
        pthread_mutex_unlock(&mu);
        if (delay_ms > 0)
            usleep((useconds_t)delay_ms * 1000);

        int faulty = fault && (fault_count < 0 || k <= fault_count);
        int rc     = 0;
        if (faulty && !strcmp(fault, "slow"))
            sleep(3);
        if (faulty && !strcmp(fault, "drop")) {
            free(body);
            goto out;
        } else if (faulty && !strcmp(fault, "429")) {
            char extra[64];
            snprintf(extra, sizeof extra, "Retry-After: %ld\r\n", retry_after);
            rc = respond(fd, 429, "application/json", extra, "{}", 2, 2);
        } else if (faulty && !strcmp(fault, "500")) {
            rc = respond(fd, 500, "application/json", NULL, "{}", 2, 2);
        } else if (faulty && !strcmp(fault, "400")) {
            rc = respond(fd, 400, "application/json", NULL, "{}", 2, 2);
        } else if (faulty && !strcmp(fault, "invalid")) {
            rc = respond(fd, 200, "application/json", NULL, "{\"choices\": [", 13, 13);
        } else if (faulty && !strcmp(fault, "missing")) {
            const char *b = "{\"choices\": [{\"message\": {\"role\": \"assistant\"}}]}";
            rc            = respond(fd, 200, "application/json", NULL, b, strlen(b), strlen(b));
        } else if (faulty && !strcmp(fault, "truncated")) {
            /* a Content-Length longer than what comes, then the connection closes */
            const char *b = "{\"choices\": [{\"message\": {\"content\": \"[[A";
            respond(fd, 200, "application/json", NULL, b, strlen(b), strlen(b) + 100);
            free(body);
            goto out;
        } else if (faulty && !strcmp(fault, "oversized")) {
            size_t big = (size_t)9 << 20;
            char  *b   = malloc(big);
            memset(b, ' ', big);
            b[0]       = '{';
            b[big - 1] = '}';
            rc         = respond(fd, 200, "application/json", NULL, b, big, big);
            free(b);
        } else {
            char text[256], *rb;
            judge_text(body, text, sizeof text);
            rb = reply_body(text, (long)clen / usage_div);
            rc = respond(fd, 200,
                         faulty && !strcmp(fault, "ctype") ? "text/html"
                                                           : "application/json; charset=utf-8",
                         NULL, rb, strlen(rb), strlen(rb));
            free(rb);
        }
        free(body);
        if (rc)
            goto out;
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    const char *port_file = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--port-file"))
            port_file = v;
        else if (!strcmp(o, "--log"))
            log_path = v;
        else if (!strcmp(o, "--judge"))
            judge_kind = v;
        else if (!strcmp(o, "--fault"))
            fault = v;
        else if (!strcmp(o, "--fault-count"))
            fault_count = atol(v);
        else if (!strcmp(o, "--retry-after"))
            retry_after = atol(v);
        else if (!strcmp(o, "--delay-ms"))
            delay_ms = atol(v);
        else if (!strcmp(o, "--usage-div"))
            usage_div = atol(v) > 0 ? atol(v) : 4;
        else if (!strcmp(o, "--key"))
            key = v;
        else {
            fprintf(stderr, "judge_server: unknown option %s\n", o);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (log_path && !(log_fp = fopen(log_path, "a")))
        return 2;
    int                s  = socket(AF_INET, SOCK_STREAM, 0);
    int                on = 1;
    struct sockaddr_in a  = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr     = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64))
        return 2;
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    if (port_file) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f)
            return 2;
        fprintf(f, "%d\n", ntohs(a.sin_port));
        fclose(f);
        rename(tmp, port_file); /* the test sees the whole number or nothing */
    }
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)c) == 0)
            pthread_detach(t);
        else
            close(c);
    }
}
