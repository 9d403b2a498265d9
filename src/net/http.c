/*
 * HTTP/1.1 server: connections, request parsing, response writing.
 *
 * Life of a request on a connection:
 *
 *   IDLE --first byte--> HEAD --headers done--> BODY --message done--> HANDLING
 *     ^                                                                    |
 *     '------------- response queued (keep-alive) <------------------------'
 *
 * On "message done" the parser is paused, so the bytes of a pipelined next
 * request stay unparsed (kept in conn->pending) until this response has been
 * queued: answers go out in request order without a response queue. While a
 * request is being handled we keep reading only until `pending` holds one
 * read's worth, then stop, so a pipelining client is bounded too.
 *
 * One timer per connection does every timeout: the head deadline (408), the
 * body and keep-alive idle limits, the write stall limit and the lingering
 * close. The connection and its request are one allocation, reused for every
 * request on it; a request costs no malloc unless it has a body or a header
 * section longer than the arena's first growth.
 *
 * Blocking handlers run on libuv's worker pool; the connection cannot be
 * freed while one runs (refs), and the response is sent by the after-work
 * callback on the loop. Async handlers (HTTP_ASYNC) keep the request until
 * http_request_finish(); if the connection dies first, on_abort tells them.
 *
 * Upgrades (WebSocket): a handler that calls http_request_upgrade() gets the
 * 101 written and the connection marked UPGRADED. The hand-off waits until
 * the read that carried the request has been put away, so that every byte
 * past the request head is in `pending`; then reading stops, the socket's
 * data pointer becomes the new owner's and on_open gets those bytes. The
 * connection stays in the server's list (shutdown asks the owner to finish
 * through on_shutdown) and its allocation stays alive until the owner gives
 * the socket back with http_upgraded_close() and the close completes.
 *
 * Client addresses: http.trusted_proxies is parsed once, at
 * http_server_new. When a request's head is complete its client address is
 * worked out (http_request_client_ip): the peer's, or, from a trusted
 * proxy, the right-most X-Forwarded-For entry that is not a trusted proxy
 * too. Entries further left were written by whoever the first untrusted
 * hop was, so they are never believed.
 */
#include "net/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"
#include "net/http_internal.h"
#include "net/http_router.h"
#include "net/http_util.h"
#include "net/tcp.h"

#define READ_BUF_SIZE (64 * 1024)
#define PENDING_LIMIT (64 * 1024)
#define WRITE_QUEUE_HIGH (1024 * 1024)
#define FILE_CHUNK (256 * 1024)
#define LINGER_MS 2000
#define BODY_KEEP_MAX (64 * 1024)

enum conn_state { CS_IDLE, CS_HEAD, CS_BODY, CS_HANDLING, CS_LINGER, CS_UPGRADED };

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct http_server *srv;
    struct http_conn *prev, *next;
    http_parser parser;
    struct http_request req;
    enum conn_state state;
    struct buf pending;
    int refs; /* open handles + worker job + file read in flight */
    bool reading;
    bool closing;
    bool in_flight;   /* a request is being handled or its body streamed */
    bool worker_busy; /* the request's handler runs on the worker pool */
    bool async;       /* the handler answered HTTP_ASYNC */
    bool close_after; /* close once the current response is written */
    bool peer_eof;
    bool write_blocked;
    bool shutdown_sent;
    bool first_request;
    bool upgraded;        /* a 101 went out: the socket is (or is about to be) up.ud's */
    bool upgrade_pending; /* upgraded, but on_open has not been called yet */
    bool forwarded;       /* client_ip came from X-Forwarded-For */
    int parsing;          /* inside conn_parse: a hand-off must wait for the read to end */
    struct http_upgrade up;

    /* Parser bookkeeping: offsets into req.arena until the head is complete. */
    size_t head_bytes;
    size_t url_off, url_len;
    struct {
        size_t name_off, name_len, value_off, value_len;
    } hoff[HTTP_MAX_HEADERS];
    int nh;
    char open_item; /* 'u' url, 'n' header name, 'v' header value, 0 none */
    int error_status;
    const char *error_why;

    /* Streaming a file body. */
    uv_fs_t fs_req;
    char *file_buf;
    uint64_t file_pos, file_left;
    uv_file file_fd;
    bool file_head_only;

    uint64_t bytes_out;
};

struct http_server {
    uv_loop_t *loop;
    const struct config *cfg;
    uv_tcp_t listener;
    bool listening;
    struct http_router router;
    http_parser_settings settings;
    struct http_conn *conns;
    size_t nconns;
    uint64_t requests;
    bool shutting_down;
    void (*shutdown_cb)(struct http_server *, void *);
    void *shutdown_arg;
    bool listener_closed;
    int port;
    char readbuf[READ_BUF_SIZE];
    bool readbuf_busy;
    time_t date_time;
    char date[40];
    struct http_static *statics;
    struct http_cidr *trusted; /* http.trusted_proxies */
    size_t ntrusted;
};

struct http_write {
    uv_write_t w;
    struct http_conn *c;
    char *head;
    char *owned;
    void (*release)(void *);
    void *opaque;
    bool file_chunk;
};

static void conn_close(struct http_conn *c);
static void conn_send_response(struct http_conn *c);
static void conn_process_pending(struct http_conn *c);
static void conn_start_reading(struct http_conn *c);
static void conn_fail(struct http_conn *c, int status, const char *why);
static void on_timer(uv_timer_t *t);
static void conn_handoff(struct http_conn *c);

/* ---------------------------------------------------------------------- */
/* small helpers                                                           */

static const char *server_date(struct http_server *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_time) {
        srv->date_time = now;
        http_date_format(now, srv->date, sizeof srv->date);
    }
    return srv->date;
}

static void conn_timer(struct http_conn *c, uint64_t ms)
{
    if (c->closing)
        return;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void conn_unref(struct http_conn *c)
{
    if (--c->refs > 0)
        return;
    struct http_server *srv = c->srv;
    buf_free(&c->pending);
    buf_free(&c->req.arena);
    buf_free(&c->req.body);
    buf_free(&c->req.res.headers);
    buf_free(&c->req.res.body);
    free(c->file_buf);
    free(c);
    if (srv->shutting_down && srv->nconns == 0 && srv->listener_closed && srv->shutdown_cb) {
        void (*cb)(struct http_server *, void *) = srv->shutdown_cb;
        srv->shutdown_cb = NULL;
        cb(srv, srv->shutdown_arg);
    }
}

static void on_handle_closed(uv_handle_t *h) { conn_unref(h->data); }

static void on_tcp_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (c->upgraded && c->up.on_closed) {
        void (*cb)(void *) = c->up.on_closed;
        c->up.on_closed = NULL;
        cb(c->up.ud);
    }
    conn_unref(c);
}

static void response_release_body(struct http_response *res)
{
    if (res->body_kind == HTTP_BODY_REF && res->ref_release)
        res->ref_release(res->ref_opaque);
    res->ref_release = NULL;
    res->ref_data = NULL;
    if (res->body_kind == HTTP_BODY_FILE && res->file_fd >= 0) {
        uv_fs_t r;
        uv_fs_close(NULL, &r, res->file_fd, NULL);
        uv_fs_req_cleanup(&r);
        res->file_fd = -1;
    }
    res->body_kind = HTTP_BODY_NONE;
}

static void request_reset(struct http_conn *c)
{
    struct http_request *req = &c->req;
    struct http_response *res = &req->res;
    response_release_body(res);
    buf_reset(&res->headers);
    if (res->body.cap > BODY_KEEP_MAX)
        buf_free(&res->body);
    buf_reset(&res->body);
    res->status = 0;
    res->etag[0] = '\0';
    res->allow_range = false;
    res->no_cors = false;
    res->file_fd = -1;
    if (req->body.cap > BODY_KEEP_MAX)
        buf_free(&req->body);
    buf_reset(&req->body);
    if (req->arena.cap > 4 * BODY_KEEP_MAX)
        buf_free(&req->arena);
    buf_reset(&req->arena);
    req->url = req->path = req->query = NULL;
    req->client_ip[0] = '\0';
    c->forwarded = false;
    req->nheaders = 0;
    req->nparams = 0;
    req->on_abort = NULL;
    req->user = NULL;
    req->route_flags = 0;
    req->blocking_fn = NULL;
    c->nh = 0;
    c->url_off = c->url_len = 0;
    c->head_bytes = 0;
    c->open_item = 0;
    c->error_status = 0;
    c->error_why = NULL;
    c->bytes_out = 0;
}

/* ---------------------------------------------------------------------- */
/* request accessors                                                       */

const char *http_request_header(const struct http_request *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *http_request_client_ip(const struct http_request *req)
{
    return req->client_ip[0] ? req->client_ip : req->remote;
}

/* ---------------------------------------------------------------------- */
/* trusted proxies                                                          */

/* An address, with or without a port ("1.2.3.4", "1.2.3.4:80", "::1",
 * "[::1]:80"), spaces around allowed. IPv4-mapped IPv6 reads as IPv4. */
static bool addr_parse(const char *s, size_t len, unsigned char a[16], bool *v6)
{
    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    char t[INET6_ADDRSTRLEN + 8];
    if (!len || len >= sizeof t)
        return false;
    if (s[0] == '[') {
        const char *e = memchr(s, ']', len);
        if (!e)
            return false;
        len = (size_t)(e - s - 1);
        s++;
    } else {
        const char *colon = memchr(s, ':', len);
        /* One colon: IPv4 with a port. Several: IPv6 without one. */
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)))
            len = (size_t)(colon - s);
    }
    if (len >= sizeof t)
        return false;
    memcpy(t, s, len);
    t[len] = '\0';
    memset(a, 0, 16);
    if (inet_pton(AF_INET, t, a) == 1) {
        *v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, t, a) != 1)
        return false;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, sizeof mapped) == 0) {
        memmove(a, a + 12, 4);
        memset(a + 4, 0, 12);
        *v6 = false;
        return true;
    }
    *v6 = true;
    return true;
}

static void addr_format(const unsigned char a[16], bool v6, char *out, size_t n)
{
    char t[INET6_ADDRSTRLEN];
    if (!inet_ntop(v6 ? AF_INET6 : AF_INET, a, t, sizeof t))
        t[0] = '\0';
    snprintf(out, n, "%s", t);
}

static bool cidr_match(const struct http_cidr *list, size_t n, const unsigned char a[16], bool v6)
{
    for (size_t i = 0; i < n; i++) {
        const struct http_cidr *c = &list[i];
        if (c->v6 != v6)
            continue;
        size_t whole = c->bits / 8;
        unsigned rest = c->bits % 8;
        if (memcmp(c->addr, a, whole) != 0)
            continue;
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        if (rest && ((c->addr[whole] ^ a[whole]) & mask))
            continue;
        return true;
    }
    return false;
}

int http_cidr_list_parse(const char *list, struct http_cidr **out, size_t *n, char *err,
                         size_t errlen)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = list ? list : "";
    while (*p) {
        size_t skip = strspn(p, ", \t");
        p += skip;
        size_t len = strcspn(p, ", \t");
        if (!len)
            break;
        char item[INET6_ADDRSTRLEN + 8];
        if (len >= sizeof item) {
            snprintf(err, errlen, "http.trusted_proxies: '%.*s' is not an address or CIDR range",
                     (int)(len > 64 ? 64 : len), p);
            goto fail;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p += len;
        struct http_cidr c = {0};
        char *slash = strchr(item, '/');
        long bits = -1;
        if (slash) {
            char *end;
            *slash = '\0';
            bits = strtol(slash + 1, &end, 10);
            if (end == slash + 1 || *end || bits < 0)
                bits = 999;
        }
        unsigned char a[16];
        bool v6 = false;
        if (!(inet_pton(AF_INET, item, a) == 1 || (v6 = inet_pton(AF_INET6, item, a) == 1))) {
            snprintf(err, errlen, "http.trusted_proxies: '%s' is not an address or CIDR range",
                     item);
            goto fail;
        }
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (v6 && memcmp(a, mapped, sizeof mapped) == 0) {
            /* ::ffff:10.0.0.0/104 is 10.0.0.0/8: peers are compared as IPv4 */
            memmove(a, a + 12, 4);
            v6 = false;
            if (bits >= 0)
                bits = bits >= 96 ? bits - 96 : 999;
        }
        int max = v6 ? 128 : 32;
        if (bits > max) {
            snprintf(err, errlen, "http.trusted_proxies: '%s/%s': the prefix length is 0 to %d",
                     item, slash + 1, max);
            goto fail;
        }
        memcpy(c.addr, a, v6 ? 16 : 4);
        c.bits = (unsigned char)(bits < 0 ? max : bits);
        c.v6 = v6;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 4;
            struct http_cidr *g = realloc(*out, nc * sizeof *g);
            if (!g) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            *out = g;
            cap = nc;
        }
        (*out)[(*n)++] = c;
    }
    return 0;
fail:
    free(*out);
    *out = NULL;
    *n = 0;
    return -EINVAL;
}

void http_client_ip(const char *peer, const char *const *xff, size_t nxff,
                    const struct http_cidr *trusted, size_t ntrusted, char *out, size_t n)
{
    unsigned char a[16];
    bool v6;
    if (!addr_parse(peer, strlen(peer), a, &v6)) {
        snprintf(out, n, "%s", peer);
        return;
    }
    addr_format(a, v6, out, n);
    if (!ntrusted || !cidr_match(trusted, ntrusted, a, v6))
        return;
    /* Right to left: the last header first, each from its end. */
    for (size_t h = nxff; h-- > 0;) {
        const char *v = xff[h];
        size_t end = strlen(v);
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            if (strspn(v + start, " \t") < end - start) {
                if (!addr_parse(v + start, end - start, a, &v6))
                    return; /* garbage: the last hop we trust is all we know */
                addr_format(a, v6, out, n);
                if (!cidr_match(trusted, ntrusted, a, v6))
                    return;
            }
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    /* Every entry is a trusted proxy: the left-most one it is. */
}

static void set_client_ip(struct http_conn *c)
{
    struct http_request *req = &c->req;
    struct http_server *srv = c->srv;
    const char *xff[HTTP_MAX_HEADERS];
    size_t nxff = 0;
    if (srv->ntrusted)
        for (int i = 0; i < req->nheaders; i++)
            if (strcasecmp(req->headers[i].name, "X-Forwarded-For") == 0)
                xff[nxff++] = req->headers[i].value;
    http_client_ip(req->remote, xff, nxff, srv->trusted, srv->ntrusted, req->client_ip,
                   sizeof req->client_ip);
    char peer[sizeof req->client_ip];
    http_client_ip(req->remote, NULL, 0, NULL, 0, peer, sizeof peer);
    c->forwarded = strcmp(peer, req->client_ip) != 0;
}

const char *http_request_param(const struct http_request *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

int http_request_query(const struct http_request *req, const char *name, char *out, size_t n)
{
    if (!req->query)
        return -ENOENT;
    size_t nl = strlen(name);
    const char *p = req->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : end;
            size_t vl = (size_t)(end - v);
            if (vl >= n)
                return -ENAMETOOLONG;
            if (http_percent_decode(v, vl, out, true) < 0)
                return -EINVAL;
            return 0;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    return -ENOENT;
}

/* ---------------------------------------------------------------------- */
/* response building                                                       */

void http_response_status(struct http_request *req, int status) { req->res.status = status; }

int http_response_header(struct http_request *req, const char *name, const char *value)
{
    /* A header value with CR or LF would let a caller split the response. */
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return -EINVAL;
    return buf_printf(&req->res.headers, "%s: %s\r\n", name, value);
}

int http_response_headerf(struct http_request *req, const char *name, const char *fmt, ...)
{
    char value[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof value)
        return -ENAMETOOLONG;
    return http_response_header(req, name, value);
}

int http_response_body(struct http_request *req, const void *data, size_t len)
{
    response_release_body(&req->res);
    req->res.body_kind = HTTP_BODY_BUF;
    buf_reset(&req->res.body);
    return buf_append(&req->res.body, data, len);
}

int http_response_printf(struct http_request *req, const char *fmt, ...)
{
    if (req->res.body_kind != HTTP_BODY_BUF) {
        response_release_body(&req->res);
        req->res.body_kind = HTTP_BODY_BUF;
        buf_reset(&req->res.body);
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&req->res.body, fmt, ap);
    va_end(ap);
    return rc;
}

void http_response_body_ref(struct http_request *req, const void *data, size_t len,
                            void (*release)(void *), void *opaque)
{
    response_release_body(&req->res);
    req->res.body_kind = HTTP_BODY_REF;
    req->res.ref_data = data;
    req->res.ref_len = len;
    req->res.ref_release = release;
    req->res.ref_opaque = opaque;
}

void http_response_etag(struct http_request *req, const char *etag)
{
    snprintf(req->res.etag, sizeof req->res.etag, "%s", etag);
}

int http_response_json(struct http_request *req, int status, struct json_t *obj)
{
    char *s = json_dumps((json_t *)obj, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    req->res.status = status;
    int rc = http_response_header(req, "Content-Type", "application/json");
    response_release_body(&req->res);
    req->res.body_kind = HTTP_BODY_BUF;
    buf_free(&req->res.body);
    /* Adopt jansson's string instead of copying it. */
    size_t len = strlen(s);
    req->res.body.data = s;
    req->res.body.len = len;
    req->res.body.cap = len + 1;
    return rc;
}

int http_response_error(struct http_request *req, int status, const char *code, const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "error", message, "code", code);
    if (!o)
        return -ENOMEM;
    buf_reset(&req->res.headers);
    int rc = http_response_json(req, status, o);
    json_decref(o);
    return rc;
}

int http_response_static(struct http_request *req, const char *relpath)
{
    return http_static_serve(req->server->statics, req, relpath);
}

/* ---------------------------------------------------------------------- */
/* writing                                                                 */

static void write_free(struct http_write *w)
{
    free(w->head);
    free(w->owned);
    if (w->release)
        w->release(w->opaque);
    free(w);
}

static void conn_file_next(struct http_conn *c);
static void conn_response_done(struct http_conn *c);

static void maybe_unblock(struct http_conn *c)
{
    if (c->write_blocked && !c->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WRITE_QUEUE_HIGH / 2) {
        c->write_blocked = false;
        conn_process_pending(c);
    }
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct http_conn *c = sr->data;
    free(sr);
    if (c->closing) {
        conn_unref(c);
        return;
    }
    if (status < 0) {
        conn_close(c);
        conn_unref(c);
        return;
    }
    /* Lingering close: read and drop what the client still sends, so the
     * kernel doesn't answer it with a reset that could destroy our response. */
    c->state = CS_LINGER;
    conn_timer(c, LINGER_MS);
    conn_start_reading(c);
    conn_unref(c);
}

static void conn_finish_and_close(struct http_conn *c)
{
    if (c->closing || c->shutdown_sent)
        return;
    c->shutdown_sent = true;
    uv_shutdown_t *sr = malloc(sizeof *sr);
    if (!sr) {
        conn_close(c);
        return;
    }
    sr->data = c;
    c->refs++;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(sr);
        c->refs--;
        conn_close(c);
    }
}

static void on_write(uv_write_t *wr, int status)
{
    struct http_write *w = (struct http_write *)wr;
    struct http_conn *c = w->c;
    bool file_chunk = w->file_chunk;
    write_free(w);
    if (c->upgraded) {
        /* The 101: a failure shows up on the owner's own reads and writes. */
        conn_unref(c);
        return;
    }
    if (status < 0) {
        if (!c->closing)
            log_debug("http %s: write failed: %s", c->req.remote, uv_strerror(status));
        conn_close(c);
        conn_unref(c);
        return;
    }
    if (!c->closing) {
        if (file_chunk)
            conn_file_next(c);
        else
            maybe_unblock(c);
    }
    conn_unref(c);
}

/* Write bufs, trying a direct write first; w owns the storage behind them. */
static int conn_write(struct http_conn *c, struct http_write *w, uv_buf_t *bufs, unsigned nbufs)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    int n = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
        n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        write_free(w);
        conn_close(c);
        return n;
    }
    if ((size_t)n == total) {
        bool file_chunk = w->file_chunk;
        write_free(w);
        if (file_chunk)
            conn_file_next(c); /* the next read is asynchronous: no recursion */
        return 0;
    }
    unsigned i = 0;
    size_t skip = (size_t)n;
    while (skip >= bufs[i].len) {
        skip -= bufs[i].len;
        i++;
    }
    bufs[i].base += skip;
    bufs[i].len -= skip;
    w->c = c;
    c->refs++;
    int rc = uv_write(&w->w, (uv_stream_t *)&c->tcp, bufs + i, nbufs - i, on_write);
    if (rc < 0) {
        c->refs--;
        write_free(w);
        conn_close(c);
        return rc;
    }
    return 0;
}

static void access_log(struct http_conn *c, int status, uint64_t body_bytes)
{
    struct http_request *req = &c->req;
    if (!c->srv->cfg->http.access_log)
        return;
    uint64_t us = (uv_hrtime() - req->start_ns) / 1000;
    /* The client, and the proxy it came through when it did. */
    log_info("http %s%s%s \"%s %s\" %d %" PRIu64 " %" PRIu64 "us", http_request_client_ip(req),
             c->forwarded ? " via " : "", c->forwarded ? req->remote : "",
             req->method_name ? req->method_name : "-", req->url ? req->url : "-", status,
             body_bytes, us);
}

static void add_cors(struct http_conn *c, struct buf *h)
{
    const struct config *cfg = c->srv->cfg;
    if (!cfg->http.cors_origin[0] || !(c->req.route_flags & HTTP_ROUTE_CORS) || c->req.res.no_cors)
        return;
    if (!http_request_header(&c->req, "Origin"))
        return;
    buf_printf(h, "Access-Control-Allow-Origin: %s\r\n", cfg->http.cors_origin);
    if (strcmp(cfg->http.cors_origin, "*") != 0)
        buf_append_str(h, "Vary: Origin\r\n");
    buf_append_str(h, "Access-Control-Expose-Headers: Content-Length, Content-Range, ETag, Age, Date\r\n");
}

/*
 * Turn the handler's response into bytes on the wire: conditional and range
 * requests, the head, then the body by kind.
 */
static void conn_send_response(struct http_conn *c)
{
    struct http_request *req = &c->req;
    struct http_response *res = &req->res;
    struct http_server *srv = c->srv;
    if (c->closing)
        return;

    if (res->status == 0)
        res->status = 200;
    if (srv->shutting_down || c->peer_eof)
        c->close_after = true;

    /* Body length and slice. */
    uint64_t blen = 0;
    switch (res->body_kind) {
    case HTTP_BODY_BUF: blen = res->body.len; break;
    case HTTP_BODY_REF: blen = res->ref_len; break;
    case HTTP_BODY_FILE: blen = res->file_len; break;
    default: break;
    }
    uint64_t total = blen;
    char content_range[96] = "";

    bool conditional_ok = (req->method == HTTP_GET || req->method == HTTP_HEAD) && res->status == 200;
    if (conditional_ok && res->etag[0] &&
        http_etag_matches(http_request_header(req, "If-None-Match"), res->etag)) {
        res->status = 304;
        response_release_body(res);
        blen = 0;
    } else if (conditional_ok && res->allow_range) {
        const char *range = http_request_header(req, "Range");
        const char *if_range = http_request_header(req, "If-Range");
        if (range && (!if_range || (res->etag[0] && strcmp(if_range, res->etag) == 0))) {
            uint64_t first, last;
            int r = http_range_parse(range, total, &first, &last);
            if (r == 1) {
                res->status = 206;
                snprintf(content_range, sizeof content_range, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64,
                         first, last, total);
                blen = last - first + 1;
                if (res->body_kind == HTTP_BODY_FILE) {
                    res->file_off += first;
                    res->file_len = blen;
                } else if (res->body_kind == HTTP_BODY_REF) {
                    res->ref_data += first;
                    res->ref_len = blen;
                } else if (res->body_kind == HTTP_BODY_BUF) {
                    buf_consume(&res->body, first);
                    res->body.len = blen;
                }
            } else if (r < 0) {
                res->status = 416;
                snprintf(content_range, sizeof content_range, "bytes */%" PRIu64, total);
                response_release_body(res);
                buf_reset(&res->body);
                blen = 0;
            }
        }
    }

    bool no_body_status = res->status == 204 || res->status == 304 || res->status < 200;
    if (no_body_status && res->body_kind != HTTP_BODY_NONE) {
        response_release_body(res);
        blen = 0;
    }

    struct buf head;
    buf_init(&head, 0);
    buf_printf(&head, "HTTP/1.1 %d %s\r\nServer: hearth\r\nDate: %s\r\n", res->status,
               http_status_text(res->status), server_date(srv));
    if (res->headers.len)
        buf_append(&head, res->headers.data, res->headers.len);
    if (res->etag[0])
        buf_printf(&head, "ETag: %s\r\n", res->etag);
    if (res->allow_range)
        buf_append_str(&head, "Accept-Ranges: bytes\r\n");
    if (content_range[0])
        buf_printf(&head, "Content-Range: %s\r\n", content_range);
    add_cors(c, &head);
    if (!no_body_status)
        buf_printf(&head, "Content-Length: %" PRIu64 "\r\n", blen);
    if (c->close_after)
        buf_append_str(&head, "Connection: close\r\n\r\n");
    else if (req->http_major == 1 && req->http_minor == 0)
        buf_append_str(&head, "Connection: keep-alive\r\n\r\n");
    else
        buf_append_str(&head, "\r\n");

    if (head.len == 0 || head.data == NULL) {
        buf_free(&head);
        conn_close(c);
        return;
    }

    access_log(c, res->status, req->head ? 0 : blen);

    struct http_write *w = calloc(1, sizeof *w);
    if (!w) {
        buf_free(&head);
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2];
    unsigned nb = 1;
    size_t hl;
    w->head = buf_steal(&head, &hl);
    bufs[0] = uv_buf_init(w->head, (unsigned)hl);
    bool send_body = !req->head && blen > 0;

    if (res->body_kind == HTTP_BODY_FILE && send_body) {
        /* Head now; the file follows chunk by chunk. */
        c->file_fd = res->file_fd;
        res->file_fd = -1;
        c->file_pos = res->file_off;
        c->file_left = res->file_len;
        res->body_kind = HTTP_BODY_NONE;
        if (conn_write(c, w, bufs, 1) < 0)
            return;
        conn_file_next(c);
        return;
    }
    if (send_body && res->body_kind == HTTP_BODY_BUF) {
        size_t l;
        w->owned = buf_steal(&res->body, &l);
        bufs[1] = uv_buf_init(w->owned, (unsigned)blen);
        nb = 2;
        res->body_kind = HTTP_BODY_NONE;
    } else if (send_body && res->body_kind == HTTP_BODY_REF) {
        bufs[1] = uv_buf_init((char *)res->ref_data, (unsigned)blen);
        nb = 2;
        w->release = res->ref_release;
        w->opaque = res->ref_opaque;
        res->ref_release = NULL;
        res->body_kind = HTTP_BODY_NONE;
    }
    if (conn_write(c, w, bufs, nb) < 0)
        return;
    conn_response_done(c);
}

static void on_file_read(uv_fs_t *fr)
{
    struct http_conn *c = fr->data;
    ssize_t n = fr->result;
    uv_fs_req_cleanup(fr);
    if (c->closing) {
        conn_unref(c);
        return;
    }
    if (n <= 0) {
        log_warn("http %s: file read failed for %s: %s", c->req.remote, c->req.url,
                 n < 0 ? uv_strerror((int)n) : "file shrank");
        conn_close(c);
        conn_unref(c);
        return;
    }
    c->file_pos += (uint64_t)n;
    c->file_left -= (uint64_t)n;
    struct http_write *w = calloc(1, sizeof *w);
    if (!w) {
        conn_close(c);
        conn_unref(c);
        return;
    }
    /* The chunk buffer moves to the write; the next read gets a new one. */
    w->owned = c->file_buf;
    c->file_buf = NULL;
    w->file_chunk = true;
    uv_buf_t b = uv_buf_init(w->owned, (unsigned)n);
    conn_write(c, w, &b, 1);
    conn_unref(c);
}

/* Read the next chunk of a file body, or finish when none is left. */
static void conn_file_next(struct http_conn *c)
{
    if (c->closing)
        return;
    if (c->file_left == 0) {
        if (c->file_fd >= 0) {
            uv_fs_t r;
            uv_fs_close(NULL, &r, c->file_fd, NULL);
            uv_fs_req_cleanup(&r);
            c->file_fd = -1;
            conn_response_done(c);
        }
        return;
    }
    if (!c->file_buf) {
        c->file_buf = malloc(FILE_CHUNK);
        if (!c->file_buf) {
            conn_close(c);
            return;
        }
    }
    size_t want = c->file_left < FILE_CHUNK ? (size_t)c->file_left : FILE_CHUNK;
    uv_buf_t b = uv_buf_init(c->file_buf, (unsigned)want);
    c->fs_req.data = c;
    c->refs++;
    if (uv_fs_read(c->srv->loop, &c->fs_req, c->file_fd, &b, 1, (int64_t)c->file_pos, on_file_read) < 0) {
        c->refs--;
        conn_close(c);
    }
}

/* The response is queued: move on to the next request, or close. */
static void conn_response_done(struct http_conn *c)
{
    c->in_flight = false;
    c->async = false;
    bool close_after = c->close_after;
    request_reset(c);
    if (c->closing)
        return;
    if (close_after) {
        conn_finish_and_close(c);
        return;
    }
    http_parser_pause(&c->parser, 0);
    c->state = CS_IDLE;
    conn_timer(c, c->srv->cfg->http.idle_timeout_ms);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_HIGH) {
        c->write_blocked = true;
        return;
    }
    conn_process_pending(c);
}

/* Answer with an error status and close the connection. */
static void conn_fail(struct http_conn *c, int status, const char *why)
{
    if (c->closing)
        return;
    log_info("http %s: %d %s: %s", c->req.remote, status, http_status_text(status), why);
    c->close_after = true;
    c->in_flight = true;
    struct http_request *req = &c->req;
    if (!req->start_ns)
        req->start_ns = uv_hrtime();
    buf_reset(&req->res.headers);
    const char *code = status == 408   ? "timeout"
                       : status == 413 ? "body_too_large"
                       : status == 414 ? "uri_too_long"
                       : status == 431 ? "headers_too_large"
                                       : "bad_request";
    http_response_error(req, status, code, why);
    req->head = false;
    conn_send_response(c);
}

/* ---------------------------------------------------------------------- */
/* dispatching                                                             */

static void on_work(uv_work_t *w)
{
    struct http_request *req = w->data;
    req->blocking_fn(req, req->blocking_ud);
}

static void on_after_work(uv_work_t *w, int status)
{
    struct http_request *req = w->data;
    struct http_conn *c = req->conn;
    c->worker_busy = false;
    if (!c->closing) {
        if (status < 0)
            http_response_error(req, 500, "internal", "the request was cancelled");
        conn_send_response(c);
    }
    conn_unref(c);
}

void http_request_finish(struct http_request *req)
{
    struct http_conn *c = req->conn;
    if (!c->async || c->closing)
        return;
    c->async = false;
    req->on_abort = NULL;
    conn_send_response(c);
}

/* ---------------------------------------------------------------------- */
/* upgrades                                                                */

int http_request_upgrade(struct http_request *req, const struct http_upgrade *u)
{
    struct http_conn *c = req->conn;
    struct http_server *srv = c->srv;
    if (c->closing || c->upgraded || c->worker_busy || !c->in_flight || req->head ||
        req->http_major != 1 || req->http_minor < 1 || !u->on_open || !u->protocol ||
        strpbrk(u->protocol, "\r\n"))
        return -EINVAL;
    if (srv->shutting_down)
        return -ESHUTDOWN;

    struct buf head;
    buf_init(&head, 0);
    int rc = buf_printf(&head,
                        "HTTP/1.1 101 Switching Protocols\r\nServer: hearth\r\nDate: %s\r\n"
                        "Upgrade: %s\r\nConnection: Upgrade\r\n",
                        server_date(srv), u->protocol);
    if (rc == 0 && req->res.headers.len)
        rc = buf_append(&head, req->res.headers.data, req->res.headers.len);
    if (rc == 0)
        rc = buf_append_str(&head, "\r\n");
    struct http_write *w = rc == 0 ? calloc(1, sizeof *w) : NULL;
    if (!w) {
        buf_free(&head);
        return -ENOMEM;
    }
    access_log(c, 101, 0);
    size_t hl;
    w->head = buf_steal(&head, &hl);
    uv_buf_t b = uv_buf_init(w->head, (unsigned)hl);
    rc = conn_write(c, w, &b, 1);
    if (rc < 0)
        return rc; /* the connection is closing; the handler's answer goes nowhere */

    c->up = *u;
    c->upgraded = true;
    c->upgrade_pending = true;
    c->async = false;
    req->on_abort = NULL;
    c->state = CS_UPGRADED;
    uv_timer_stop(&c->timer);
    /* Inside a read the rest of it is not in pending yet: conn_parse's
     * callers hand over when they are done with it. */
    if (!c->parsing)
        conn_handoff(c);
    return 0;
}

static void conn_handoff(struct http_conn *c)
{
    c->upgrade_pending = false;
    if (c->closing)
        return; /* on_tcp_closed tells the owner */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    struct buf early = c->pending;
    buf_init(&c->pending, 0);
    /* The request is over: keep nothing of it for the connection's life. */
    response_release_body(&c->req.res);
    buf_free(&c->req.arena);
    buf_free(&c->req.body);
    buf_free(&c->req.res.headers);
    buf_free(&c->req.res.body);
    c->req.url = c->req.path = c->req.query = NULL;
    c->req.nheaders = 0;
    c->req.nparams = 0;
    c->tcp.data = c->up.ud;
    c->up.on_open(c->up.ud, c, &c->tcp, early.data, early.len);
    buf_free(&early);
}

void http_upgraded_close(struct http_conn *c)
{
    if (!c->upgraded)
        return;
    conn_close(c);
}

/* Decode the router's parameters into the arena (space was reserved). */
static int set_params(struct http_request *req, const struct http_route_match *m)
{
    req->nparams = 0;
    for (int i = 0; i < m->nparams; i++) {
        struct buf *a = &req->arena;
        if (a->len + m->params[i].len + 1 > a->cap)
            return -ENOMEM;
        char *out = a->data + a->len;
        long n = http_percent_decode(m->params[i].value, m->params[i].len, out, false);
        if (n < 0)
            return -EINVAL;
        a->len += (size_t)n + 1;
        req->params[i].name = m->params[i].name;
        req->params[i].value = out;
        req->nparams++;
    }
    return 0;
}

static void answer_options(struct http_conn *c, const char *allow)
{
    struct http_request *req = &c->req;
    http_response_status(req, 204);
    http_response_header(req, "Allow", allow);
    const char *acrm = http_request_header(req, "Access-Control-Request-Method");
    if (acrm && c->srv->cfg->http.cors_origin[0] && (req->route_flags & HTTP_ROUTE_CORS)) {
        http_response_header(req, "Access-Control-Allow-Methods", allow);
        const char *acrh = http_request_header(req, "Access-Control-Request-Headers");
        if (acrh && !strpbrk(acrh, "\r\n"))
            http_response_header(req, "Access-Control-Allow-Headers", acrh);
        http_response_header(req, "Access-Control-Max-Age", "86400");
    }
    conn_send_response(c);
}

static void conn_dispatch(struct http_conn *c)
{
    struct http_request *req = &c->req;
    struct http_server *srv = c->srv;
    srv->requests++;
    set_client_ip(c);
    c->in_flight = true;
    c->state = CS_HANDLING;
    uv_timer_stop(&c->timer);
    if (!req->keep_alive || srv->shutting_down)
        c->close_after = true;

    /* The raw path for routing: the target up to '?', origin-form only. */
    const char *target = req->url;
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        const char *p = strchr(target + 8, '/');
        target = p ? p : "/";
    }
    if (target[0] != '/') {
        if (req->method == HTTP_OPTIONS && strcmp(target, "*") == 0) {
            answer_options(c, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
            return;
        }
        conn_fail(c, 400, "request target is not a path");
        return;
    }
    size_t qpos = strcspn(target, "?");
    char raw[8192];
    if (qpos >= sizeof raw) {
        conn_fail(c, 414, "path too long");
        return;
    }
    memcpy(raw, target, qpos);
    raw[qpos] = '\0';

    struct http_route_match m;
    if (req->method == HTTP_OPTIONS) {
        /* No route takes OPTIONS: the router's 405 list is the Allow list. */
        int om = http_router_match(&srv->router, "OPTIONS", raw, &m);
        struct http_route_match gm;
        if (http_router_match(&srv->router, "GET", raw, &gm) == HTTP_MATCH_OK)
            req->route_flags = gm.route->flags;
        else if (om == HTTP_MATCH_NONE)
            req->route_flags = HTTP_ROUTE_CORS; /* static files */
        char allow[128];
        snprintf(allow, sizeof allow, "%s, OPTIONS",
                 om == HTTP_MATCH_METHOD ? m.allow : "GET, HEAD");
        answer_options(c, allow);
        return;
    }
    int mr = http_router_match(&srv->router, req->method_name, raw, &m);

    if (mr == HTTP_MATCH_METHOD) {
        http_response_error(req, 405, "method_not_allowed", "method not allowed on this path");
        http_response_header(req, "Allow", m.allow);
        conn_send_response(c);
        return;
    }
    if (mr == HTTP_MATCH_NONE) {
        if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
            http_response_error(req, 404, "not_found", "no such resource");
            conn_send_response(c);
            return;
        }
        req->route_flags = HTTP_ROUTE_CORS;
        int rc = http_static_serve(srv->statics, req, req->path);
        if (rc == HTTP_ASYNC)
            c->async = true;
        else
            conn_send_response(c);
        return;
    }

    req->route_flags = m.route->flags;
    if (set_params(req, &m) < 0) {
        http_response_error(req, 400, "bad_request", "bad percent-encoding in path");
        conn_send_response(c);
        return;
    }
    if (m.route->flags & HTTP_ROUTE_BLOCKING) {
        req->blocking_fn = m.route->fn;
        req->blocking_ud = m.route->ud;
        req->work.data = req;
        c->worker_busy = true;
        c->refs++;
        if (uv_queue_work(srv->loop, &req->work, on_work, on_after_work) != 0) {
            c->refs--;
            c->worker_busy = false;
            http_response_error(req, 503, "unavailable", "worker pool unavailable");
            conn_send_response(c);
        }
        return;
    }
    int rc = m.route->fn(req, m.route->ud);
    if (c->upgraded || c->closing)
        return;
    if (rc == HTTP_ASYNC) {
        c->async = true;
        return;
    }
    conn_send_response(c);
}

/* ---------------------------------------------------------------------- */
/* parser callbacks                                                        */

static struct http_conn *pconn(http_parser *p) { return p->data; }

static int head_account(struct http_conn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > c->srv->cfg->http.max_header_bytes) {
        c->error_status = c->nh == 0 && c->open_item == 'u' ? 414 : 431;
        return -1;
    }
    return 0;
}

/* Close the item being accumulated in the arena with a NUL. */
static int arena_close_item(struct http_conn *c)
{
    if (c->open_item) {
        c->open_item = 0;
        return buf_append_char(&c->req.arena, '\0');
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = pconn(p);
    request_reset(c);
    c->req.start_ns = uv_hrtime();
    c->state = CS_HEAD;
    conn_timer(c, c->srv->cfg->http.header_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = pconn(p);
    if (c->open_item != 'u') {
        c->open_item = 'u';
        c->url_off = c->req.arena.len;
    }
    if (head_account(c, len) || buf_append(&c->req.arena, at, len)) {
        if (!c->error_status)
            c->error_status = 414;
        return -1;
    }
    c->url_len += len;
    return 0;
}

/* RFC 9110 5.6.2 token characters: header names are nothing else. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = pconn(p);
    if (head_account(c, len))
        return -1;
    /* Debian's http-parser is lenient about names ("Content-Length :",
     * "Bad Name"); such requests are how smuggling starts, so refuse them. */
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)at[i])) {
            c->error_status = 400;
            c->error_why = "invalid character in a header name";
            return -1;
        }
    }
    if (c->open_item != 'n') {
        if (arena_close_item(c))
            goto too_big;
        if (c->nh == HTTP_MAX_HEADERS) {
            c->error_status = 431;
            return -1;
        }
        c->hoff[c->nh].name_off = c->req.arena.len;
        c->hoff[c->nh].name_len = 0;
        c->hoff[c->nh].value_off = 0;
        c->hoff[c->nh].value_len = 0;
        c->nh++;
        c->open_item = 'n';
    }
    if (buf_append(&c->req.arena, at, len))
        goto too_big;
    c->hoff[c->nh - 1].name_len += len;
    return 0;
too_big:
    c->error_status = 431;
    return -1;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = pconn(p);
    if (head_account(c, len))
        return -1;
    if (c->open_item != 'v') {
        if (arena_close_item(c))
            goto too_big;
        c->hoff[c->nh - 1].value_off = c->req.arena.len;
        c->open_item = 'v';
    }
    if (buf_append(&c->req.arena, at, len))
        goto too_big;
    c->hoff[c->nh - 1].value_len += len;
    return 0;
too_big:
    c->error_status = 431;
    return -1;
}

static void send_continue(struct http_conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct http_write *w = calloc(1, sizeof *w);
    if (!w)
        return;
    uv_buf_t b = uv_buf_init((char *)msg, sizeof msg - 1);
    conn_write(c, w, &b, 1);
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = pconn(p);
    struct http_request *req = &c->req;
    struct buf *a = &req->arena;
    if (arena_close_item(c)) {
        c->error_status = 431;
        return -1;
    }
    /* Reserve room for the decoded path and the route parameters so that
     * pointers into the arena stay valid from here on. */
    if (buf_reserve(a, 2 * c->url_len + HTTP_MAX_PARAMS + 16)) {
        c->error_status = 431;
        return -1;
    }
    req->url = a->data + c->url_off;
    req->nheaders = c->nh;
    for (int i = 0; i < c->nh; i++) {
        req->headers[i].name = a->data + c->hoff[i].name_off;
        /* A header with an empty value never opened a value item. */
        req->headers[i].value = c->hoff[i].value_len ? a->data + c->hoff[i].value_off : "";
    }
    req->method = p->method;
    req->method_name = http_method_str((enum http_method)p->method);
    req->http_major = p->http_major;
    req->http_minor = p->http_minor;
    req->keep_alive = http_should_keep_alive(p);
    req->head = p->method == HTTP_HEAD;
    if (p->http_major != 1) {
        /* HTTP/0.9 request lines and versions we do not speak. */
        c->error_status = p->http_major == 0 ? 400 : 505;
        c->error_why = p->http_major == 0 ? "request line has no HTTP version" : "only HTTP/1.x is served";
        return -1;
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1. */
    int hosts = 0;
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, "Host") == 0)
            hosts++;
    if (hosts > 1 || (hosts == 0 && p->http_minor >= 1)) {
        c->error_status = 400;
        c->error_why = hosts ? "more than one Host header" : "HTTP/1.1 request without Host";
        return -1;
    }

    /* Path (decoded) and query (raw). */
    const char *target = req->url;
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        const char *s = strchr(target + 8, '/');
        target = s ? s : "/";
    }
    size_t plen = strcspn(target, "?");
    char *path = a->data + a->len;
    long n = http_percent_decode(target, plen, path, false);
    if (n < 0) {
        c->error_status = 400;
        return -1;
    }
    a->len += (size_t)n + 1;
    req->path = path;
    if (target[plen] == '?') {
        req->query = req->url + (target - req->url) + plen + 1;
    }

    const struct config *cfg = c->srv->cfg;
    if ((p->flags & F_CHUNKED) == 0 && p->content_length != ULLONG_MAX &&
        p->content_length > (uint64_t)cfg->http.max_body_bytes) {
        c->error_status = 413;
        return -1;
    }
    const char *expect = http_request_header(req, "Expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) {
            c->error_status = 417;
            return -1;
        }
        if (req->http_minor >= 1)
            send_continue(c);
    }
    c->state = CS_BODY;
    conn_timer(c, cfg->http.idle_timeout_ms);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = pconn(p);
    if (c->req.body.limit == 0)
        c->req.body.limit = c->srv->cfg->http.max_body_bytes ? c->srv->cfg->http.max_body_bytes : 1;
    if (buf_append(&c->req.body, at, len)) {
        c->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = pconn(p);
    c->state = CS_HANDLING;
    http_parser_pause(p, 1);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* reading                                                                 */

/*
 * Parse from data; dispatch a request when one completes. Returns how many
 * bytes were consumed, or -1 when the connection failed.
 */
static long conn_parse(struct http_conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &c->srv->settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        c->parsing++;
        conn_dispatch(c);
        c->parsing--;
        return (long)n;
    }
    if (err != HPE_OK) {
        int status = c->error_status ? c->error_status : 400;
        if (err == HPE_HEADER_OVERFLOW)
            status = 431;
        const char *why;
        switch (status) {
        case 413: why = "request body is larger than http.max_body_bytes"; break;
        case 414: why = "request line is longer than http.max_header_bytes"; break;
        case 431: why = "request headers are larger than http.max_header_bytes"; break;
        case 417: why = "unsupported Expect"; break;
        default: why = c->error_why ? c->error_why : http_errno_description(err); break;
        }
        if (c->state == CS_IDLE && c->req.start_ns == 0)
            c->req.start_ns = uv_hrtime();
        conn_fail(c, status, why);
        return -1;
    }
    if (c->state == CS_BODY && c->srv->cfg)
        conn_timer(c, c->srv->cfg->http.idle_timeout_ms);
    return (long)n;
}

/* Feed bytes that arrived while a request was in flight. */
static void conn_process_pending(struct http_conn *c)
{
    while (!c->closing && !c->shutdown_sent && !c->in_flight && !c->write_blocked &&
           c->pending.len > 0) {
        struct buf work = c->pending;
        buf_init(&c->pending, PENDING_LIMIT + READ_BUF_SIZE);
        size_t off = 0;
        while (off < work.len && !c->closing && !c->shutdown_sent && !c->in_flight &&
               !c->write_blocked) {
            long n = conn_parse(c, work.data + off, work.len - off);
            if (n < 0) {
                off = work.len;
                break;
            }
            off += (size_t)n;
        }
        if (off < work.len && !c->closing) {
            /* Put the rest back in front of anything read meanwhile. */
            struct buf rest;
            buf_init(&rest, PENDING_LIMIT + READ_BUF_SIZE);
            buf_append(&rest, work.data + off, work.len - off);
            buf_append(&rest, c->pending.data, c->pending.len);
            buf_free(&c->pending);
            c->pending = rest;
        }
        buf_free(&work);
    }
    if (c->upgrade_pending) {
        conn_handoff(c);
        return;
    }
    if (!c->closing && !c->shutdown_sent && !c->write_blocked && !c->upgraded &&
        c->pending.len < PENDING_LIMIT)
        conn_start_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct http_conn *c = h->data;
    struct http_server *srv = c->srv;
    /* Reads are handled synchronously, so all connections share one buffer. */
    if (srv->readbuf_busy) {
        b->base = NULL;
        b->len = 0;
        return;
    }
    srv->readbuf_busy = true;
    b->base = srv->readbuf;
    b->len = sizeof srv->readbuf;
}

static void on_read_http(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    struct http_server *srv = c->srv;
    if (b->base == srv->readbuf)
        srv->readbuf_busy = false;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS)
            return;
        uv_read_stop(s);
        c->reading = false;
        if (nread == UV_EOF && c->in_flight && c->state != CS_LINGER) {
            /* The client stopped sending; answer it, then close. */
            c->peer_eof = true;
            c->close_after = true;
            return;
        }
        if (c->state == CS_HEAD || c->state == CS_BODY)
            log_info("http %s: connection closed mid-request", c->req.remote);
        conn_close(c);
        return;
    }
    if (c->state == CS_LINGER)
        return; /* draining before close */
    if (c->in_flight || c->write_blocked || c->pending.len > 0) {
        if (buf_append(&c->pending, b->base, (size_t)nread)) {
            conn_fail(c, 400, "too much pipelined data");
            return;
        }
        if (c->pending.len >= PENDING_LIMIT) {
            uv_read_stop(s);
            c->reading = false;
        }
        if (!c->in_flight && !c->write_blocked)
            conn_process_pending(c);
        return;
    }
    size_t off = 0, len = (size_t)nread;
    while (off < len && !c->closing && !c->shutdown_sent) {
        if (c->in_flight || c->write_blocked) {
            if (buf_append(&c->pending, b->base + off, len - off)) {
                conn_fail(c, 400, "too much pipelined data");
                return;
            }
            if (c->pending.len >= PENDING_LIMIT) {
                uv_read_stop(s);
                c->reading = false;
            }
            return;
        }
        long n = conn_parse(c, b->base + off, len - off);
        if (n < 0)
            return;
        off += (size_t)n;
        if (n == 0 && !c->in_flight)
            break;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    on_read_http(s, nread, b);
    /* An upgrade made while this read was parsed: what followed the request
     * head is in pending now. */
    if (c->upgrade_pending)
        conn_handoff(c);
}

static void conn_start_reading(struct http_conn *c)
{
    if (c->reading || c->closing || c->peer_eof || c->upgraded)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

/* ---------------------------------------------------------------------- */
/* timers and closing                                                      */

static void on_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    switch (c->state) {
    case CS_HEAD:
        conn_fail(c, 408, "request head not received within http.header_timeout");
        break;
    case CS_BODY:
        conn_fail(c, 408, "request body stalled for http.idle_timeout");
        break;
    case CS_IDLE:
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0)
            log_info("http %s: client stopped reading; closing", c->req.remote);
        conn_close(c);
        break;
    case CS_LINGER:
        conn_close(c);
        break;
    case CS_HANDLING:
    case CS_UPGRADED:
        break;
    }
}

static void conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    struct http_server *srv = c->srv;
    if (c->async) {
        c->async = false;
        if (c->req.on_abort)
            c->req.on_abort(&c->req);
        c->req.on_abort = NULL;
    }
    response_release_body(&c->req.res);
    if (c->file_fd >= 0) {
        uv_fs_t r;
        uv_fs_close(NULL, &r, c->file_fd, NULL);
        uv_fs_req_cleanup(&r);
        c->file_fd = -1;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    c->tcp.data = c; /* it may have been the upgrade owner's */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* ---------------------------------------------------------------------- */
/* accepting                                                               */

static void on_reject_closed(uv_handle_t *h) { free(h); }

static void on_connection(uv_stream_t *server, int status)
{
    struct http_server *srv = server->data;
    if (status < 0) {
        log_warn("http: accept failed: %s", uv_strerror(status));
        return;
    }
    if (srv->shutting_down || srv->nconns >= (size_t)srv->cfg->http.max_connections) {
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(srv->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0 && !srv->shutting_down)
            log_warn("http: connection refused: http.max_connections (%d) reached",
                     srv->cfg->http.max_connections);
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    struct http_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = srv;
    c->file_fd = -1;
    c->req.res.file_fd = -1;
    c->req.conn = c;
    c->req.server = srv;
    buf_init(&c->pending, PENDING_LIMIT + READ_BUF_SIZE);
    /* The arena holds the head plus room for decoded copies of the path. */
    buf_init(&c->req.arena, 4 * srv->cfg->http.max_header_bytes + 1024);
    buf_init(&c->req.body, srv->cfg->http.max_body_bytes ? srv->cfg->http.max_body_bytes : 1);
    buf_init(&c->req.res.headers, 0);
    buf_init(&c->req.res.body, 0);
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    uv_tcp_nodelay(&c->tcp, 1);
    net_peer_name(&c->tcp, c->req.remote, sizeof c->req.remote);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = CS_IDLE;
    /* A connection that never sends a byte gets the head deadline. */
    conn_timer(c, srv->cfg->http.header_timeout_ms);
    conn_start_reading(c);
}

/* ---------------------------------------------------------------------- */
/* the server                                                              */

struct http_server *http_server_new(uv_loop_t *loop, const struct config *cfg)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->cfg = cfg;
    http_router_init(&srv->router);
    http_parser_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;
    srv->statics = http_static_new(loop, cfg->http.static_dir);
    if (!srv->statics) {
        free(srv);
        return NULL;
    }
    char err[256];
    if (http_cidr_list_parse(cfg->http.trusted_proxies, &srv->trusted, &srv->ntrusted, err,
                             sizeof err) != 0) {
        log_error("http: %s", err);
        http_static_free(srv->statics);
        free(srv);
        return NULL;
    }
    return srv;
}

int http_server_route(struct http_server *srv, const char *method, const char *pattern,
                      http_handler_fn fn, void *ud, unsigned flags)
{
    return http_router_add(&srv->router, method, pattern, fn, ud, flags);
}

struct http_router *http_server_router(struct http_server *srv) { return &srv->router; }

struct http_static *http_server_static(struct http_server *srv) { return srv->statics; }

const struct config *http_server_config(struct http_server *srv) { return srv->cfg; }

int http_server_listen(struct http_server *srv, const char *listen, char *err, size_t errlen)
{
    int rc = net_tcp_listen(srv->loop, &srv->listener, listen, 511, on_connection, &srv->port,
                            err, errlen);
    if (rc != 0) {
        srv->listener_closed = true;
        return rc;
    }
    srv->listener.data = srv;
    srv->listening = true;
    return 0;
}

int http_server_port(struct http_server *srv) { return srv->port; }

static void on_listener_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->listener_closed = true;
    if (srv->shutting_down && srv->nconns == 0 && srv->shutdown_cb) {
        void (*cb)(struct http_server *, void *) = srv->shutdown_cb;
        srv->shutdown_cb = NULL;
        cb(srv, srv->shutdown_arg);
    }
}

void http_server_shutdown(struct http_server *srv, void (*cb)(struct http_server *, void *),
                          void *arg)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->shutdown_cb = cb;
    srv->shutdown_arg = arg;
    /* Close idle connections now; busy ones close after their response. */
    struct http_conn *next;
    for (struct http_conn *c = srv->conns; c; c = next) {
        next = c->next;
        if (c->upgraded) {
            if (c->up.on_shutdown && !c->upgrade_pending)
                c->up.on_shutdown(c->up.ud);
            else
                conn_close(c);
            continue;
        }
        if (c->state == CS_IDLE && !c->in_flight && c->pending.len == 0)
            conn_close(c);
        else
            c->close_after = true;
    }
    if (srv->listening) {
        srv->listening = false;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    } else if (srv->nconns == 0 && cb) {
        srv->shutdown_cb = NULL;
        cb(srv, arg);
    }
}

void http_server_free(struct http_server *srv)
{
    if (!srv)
        return;
    http_router_free(&srv->router);
    http_static_free(srv->statics);
    free(srv->trusted);
    free(srv);
}

uint64_t http_server_requests(const struct http_server *srv) { return srv->requests; }

size_t http_server_connections(const struct http_server *srv) { return srv->nconns; }
