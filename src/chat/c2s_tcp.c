/*
 * XMPP clients over TCP: the transport under c2s sessions (c2s.h).
 *
 * One struct c2s_conn per accepted socket owns the libuv handle, the TLS
 * engine once STARTTLS ran, and the c2s_session. Bytes read go through TLS
 * (when on) into c2s_session_feed. What the session writes first in a loop
 * iteration is encrypted and written at once (a MUC message fanned out to
 * 10,000 viewers reaches the first ones while the rest are still being
 * written); what it writes after that in the same iteration is gathered as
 * plaintext and sent when the iteration's callbacks are done (a uv_check
 * handle flushes every connection gathered), so that a busy room that puts
 * several messages on one stream costs one TLS record and one write(2), not
 * one each. A connection that gathers more than FLUSH_AT (the occupant list
 * on joining a big room) is flushed at once.
 *
 * Output is tried on the socket at once (uv_try_write); what the kernel
 * does not take is queued. The queue is bounded in size and in time: a
 * client over OUT_SOFT_LIMIT stops being read (it cannot make us produce
 * more), and is cut off if it stays over it for SLOW_MS or ever goes past
 * OUT_HARD_LIMIT: a viewer who stopped reading must not hold megabytes of
 * a busy room's chat, and must not slow anyone else down.
 *
 * One timer for the whole listener walks the connections: whitespace
 * keepalives (one space) on streams nothing was written to for
 * xmpp.keepalive, stream errors for streams silent for xmpp.idle_timeout,
 * and the deadline of connections that were asked to close but whose peer
 * does not take the last bytes. A keepalive is only sent once our stream
 * header is out (after the first write since the stream started or was
 * restarted by STARTTLS): whitespace before the XML declaration is not XML.
 *
 * Lifetime: a connection closes in one place (conn_close): it leaves the
 * list and uv_close runs; the close callback frees the session, TLS and
 * the memory. Until then the session may still be written to (a MUC
 * broadcast); such writes are dropped. Nothing is freed inside a session
 * or TLS callback.
 */
#include "chat/c2s.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "chat/xmpp.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/tls.h"

#define FLUSH_AT (64u * 1024)
#define OUT_SOFT_LIMIT (1u << 20)
#define OUT_HARD_LIMIT (8u << 20)
#define SLOW_MS 10000
/* How long a stream asked to close may take to flush its last bytes. */
#define CLOSE_GRACE_MS 5000

struct c2s_conn {
    struct c2s_listener *l;
    uv_tcp_t tcp;
    struct c2s_session *s;
    struct tls_conn *tls;
    struct c2s_conn *prev, *next;
    struct c2s_conn *dirty_next;
    struct buf plain; /* written by the session, not yet encrypted */
    struct buf out;   /* for the socket, not yet handed to libuv */
    uint64_t last_in, last_out;
    uint64_t over_since;    /* when the queue went over OUT_SOFT_LIMIT; 0: not */
    uint64_t close_by;      /* deadline once close was asked for */
    size_t since_restart;   /* bytes written since the stream (re)started */
    bool dirty;
    bool closing;           /* conn_close ran */
    bool close_asked;       /* flush, then close */
    bool shut_tls;
    bool reading;
    unsigned epoch;         /* the listener's epoch of our last immediate write */
    bool session_failed;    /* the session's feed failed (it ended the stream) */
    char peer[64];
};

struct c2s_listener {
    struct xmpp_server *srv;
    uv_loop_t *loop;
    const struct config *cfg;
    uv_tcp_t tcp;
    uv_timer_t tick;
    uv_check_t check;
    uv_idle_t idle; /* keeps the poll from blocking while output waits */
    int port;
    int open_handles;
    bool listening, shutting_down;
    struct c2s_conn *conns;
    size_t nconns; /* on the list (not closing) */
    size_t nalive; /* not yet freed */
    struct c2s_conn *dirty;
    unsigned epoch; /* loop iterations, as counted by on_check */
    void (*shutdown_cb)(void *arg);
    void *shutdown_arg;
    char readbuf[65536]; /* every read lands here and is consumed at once */
};

struct conn_write {
    uv_write_t w;
    struct c2s_conn *c;
    char *data;
};

static void conn_close(struct c2s_conn *c, const char *why);
static void conn_flush(struct c2s_conn *c);
static void conn_read_start(struct c2s_conn *c);
static void on_idle(uv_idle_t *h) { (void)h; }
static void on_check(uv_check_t *h);

/* --- output ------------------------------------------------------------------------- */

static size_t queued(const struct c2s_conn *c)
{
    return c->plain.len + c->out.len +
           uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

static void mark_dirty(struct c2s_conn *c)
{
    struct c2s_listener *l = c->l;
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = l->dirty;
    l->dirty = c;
    if (!uv_is_active((uv_handle_t *)&l->check)) {
        uv_check_start(&l->check, on_check);
        uv_idle_start(&l->idle, on_idle);
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct conn_write *cw = (struct conn_write *)w;
    struct c2s_conn *c = cw->c;
    free(cw->data);
    free(cw);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    if (c->over_since && queued(c) <= OUT_SOFT_LIMIT / 2) {
        c->over_since = 0;
        if (!c->reading && !c->close_asked)
            conn_read_start(c);
    }
    if (c->close_asked && queued(c) == 0)
        conn_close(c, NULL);
}

/* Bytes for the socket, in order: straight to the kernel while nothing is
 * queued ahead of them, otherwise after what is. */
static int emit(struct c2s_conn *c, const void *data, size_t len)
{
    if (c->closing)
        return 0;
    if (c->out.len == 0 && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            conn_close(c, uv_strerror(n));
            return n;
        }
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    if (len == 0)
        return 0;
    /* Sent from conn_flush, or by the next check when TLS wrote it. */
    mark_dirty(c);
    return buf_append(&c->out, data, len);
}

static int on_tls_send(void *ud, const void *data, size_t len) { return emit(ud, data, len); }

/* Hand what is gathered to the socket. */
static void conn_flush(struct c2s_conn *c)
{
    if (c->closing)
        return;
    if (c->plain.len) {
        int rc;
        if (c->tls) {
            rc = tls_conn_write(c->tls, c->plain.data, c->plain.len);
            if (rc < 0 && !c->closing) {
                log_info("c2s %s: TLS write failed: %s", c->peer, tls_conn_error(c->tls));
                conn_close(c, NULL);
                return;
            }
        } else {
            rc = emit(c, c->plain.data, c->plain.len);
        }
        buf_free(&c->plain);
        if (c->closing)
            return;
        if (rc < 0) {
            conn_close(c, "out of memory");
            return;
        }
    }
    if (c->close_asked && c->tls && !c->shut_tls) {
        c->shut_tls = true;
        tls_conn_shutdown(c->tls);
        if (c->closing)
            return;
    }
    if (c->out.len) {
        struct conn_write *cw = malloc(sizeof *cw);
        if (!cw) {
            conn_close(c, "out of memory");
            return;
        }
        size_t len;
        cw->c = c;
        cw->data = buf_steal(&c->out, &len);
        uv_buf_t b = uv_buf_init(cw->data, (unsigned)len);
        int rc = uv_write(&cw->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (rc != 0) {
            free(cw->data);
            free(cw);
            conn_close(c, uv_strerror(rc));
            return;
        }
    }
    size_t q = queued(c);
    if (q > OUT_HARD_LIMIT) {
        log_warn("c2s %s: cut off: %zu bytes of output queued, the client does not read", c->peer,
                 q);
        conn_close(c, NULL);
        return;
    }
    if (q > OUT_SOFT_LIMIT) {
        if (!c->over_since)
            c->over_since = uv_now(c->l->loop);
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
    }
    if (c->close_asked && q == 0)
        conn_close(c, NULL);
}

static void on_check(uv_check_t *h)
{
    struct c2s_listener *l = h->data;
    while (l->dirty) {
        struct c2s_conn *c = l->dirty;
        l->dirty = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        conn_flush(c); /* may close c; freeing waits for the close callback */
    }
    l->epoch++;
    uv_check_stop(&l->check);
    uv_idle_stop(&l->idle);
}

/* The first write of an iteration: out now, unless something is ahead. */
static int write_now(struct c2s_conn *c, const void *data, size_t len)
{
    struct c2s_listener *l = c->l;
    c->epoch = l->epoch;
    /* on_check ends the epoch, so it must run this iteration. */
    if (!uv_is_active((uv_handle_t *)&l->check)) {
        uv_check_start(&l->check, on_check);
        uv_idle_start(&l->idle, on_idle);
    }
    int rc;
    if (c->tls) {
        rc = tls_conn_write(c->tls, data, len);
        if (rc < 0 && !c->closing) {
            log_info("c2s %s: TLS write failed: %s", c->peer, tls_conn_error(c->tls));
            conn_close(c, NULL);
        }
    } else {
        rc = emit(c, data, len);
    }
    if (c->closing)
        return -EPIPE;
    return rc;
}

/* --- the session's transport --------------------------------------------------------- */

static int t_write(void *ud, const void *data, size_t len)
{
    struct c2s_conn *c = ud;
    if (c->closing)
        return 0;
    if (queued(c) + len > OUT_HARD_LIMIT) {
        log_warn("c2s %s: cut off: output queue over %u bytes, the client does not read", c->peer,
                 OUT_HARD_LIMIT);
        conn_close(c, NULL);
        return -ENOBUFS;
    }
    c->last_out = uv_now(c->l->loop);
    c->since_restart += len;
    /* Order: nothing gathered or queued may be overtaken. */
    if (c->epoch != c->l->epoch && c->plain.len == 0 && c->out.len == 0 && !c->dirty)
        return write_now(c, data, len);
    int rc = buf_append(&c->plain, data, len);
    if (rc < 0)
        return rc;
    if (c->plain.len >= FLUSH_AT) {
        conn_flush(c);
        return c->closing ? -EPIPE : 0;
    }
    mark_dirty(c);
    return 0;
}

static void t_close(void *ud)
{
    struct c2s_conn *c = ud;
    if (c->closing || c->close_asked)
        return;
    c->close_asked = true;
    c->close_by = uv_now(c->l->loop) + CLOSE_GRACE_MS;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    mark_dirty(c);
}

static int on_tls_recv(void *ud, const char *data, size_t len)
{
    struct c2s_conn *c = ud;
    if (c->closing || c->close_asked)
        return 0;
    int rc = c2s_session_feed(c->s, data, len);
    if (rc < 0)
        c->session_failed = true;
    return rc;
}

static int t_starttls(void *ud)
{
    struct c2s_conn *c = ud;
    if (c->tls)
        return -EALREADY;
    struct tls_ctx *ctx = xmpp_server_tls_c2s(c->l->srv);
    if (!ctx)
        return -EINVAL;
    /* <proceed/> and anything before it go out in the clear. */
    conn_flush(c);
    if (c->closing)
        return -EPIPE;
    struct tls_io io = {.ud = c, .send = on_tls_send, .recv = on_tls_recv, .ready = NULL};
    c->tls = tls_conn_new(ctx, NULL, &io);
    if (!c->tls)
        return -ENOMEM;
    c->since_restart = 0;
    return 0;
}

/* --- input ------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct c2s_conn *c = h->data;
    b->base = c->l->readbuf;
    b->len = sizeof c->l->readbuf;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct c2s_conn *c = st->data;
    if (n == 0 || c->closing)
        return;
    if (n < 0) {
        conn_close(c, n == UV_EOF ? NULL : uv_strerror((int)n));
        return;
    }
    if (c->close_asked)
        return;
    c->last_in = uv_now(c->l->loop);
    int rc;
    if (c->tls) {
        rc = tls_conn_feed(c->tls, b->base, (size_t)n);
        if (rc < 0 && !c->session_failed) {
            /* TLS itself failed: nothing more can be said on this stream. */
            if (rc == -EPIPE)
                conn_close(c, NULL);
            else if (!c->closing)
                conn_close(c, tls_conn_error(c->tls));
            return;
        }
    } else {
        rc = c2s_session_feed(c->s, b->base, (size_t)n);
    }
    /* A negative feed ended the stream: the session has written its error
     * and asked for the close; make sure it happens even if it did not. */
    if (rc < 0 && !c->closing && !c->close_asked)
        t_close(c);
}

static void conn_read_start(struct c2s_conn *c)
{
    c->reading = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c, "cannot read");
}

/* --- lifetime ---------------------------------------------------------------------------- */

static void shutdown_maybe_done(struct c2s_listener *l);

static void on_conn_closed(uv_handle_t *h)
{
    struct c2s_conn *c = h->data;
    struct c2s_listener *l = c->l;
    if (c->dirty) {
        /* Written to after the last check (by a close callback): unlink. */
        struct c2s_conn **pp = &l->dirty;
        while (*pp && *pp != c)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = c->dirty_next;
    }
    if (c->s)
        c2s_session_free(c->s);
    tls_conn_free(c->tls);
    buf_free(&c->plain);
    buf_free(&c->out);
    free(c);
    l->nalive--;
    shutdown_maybe_done(l);
}

static void conn_close(struct c2s_conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    struct c2s_listener *l = c->l;
    if (why)
        log_info("c2s %s: closed: %s", c->peer, why);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    /* Left on the dirty list, it is skipped there (closing). */
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_reject_closed(uv_handle_t *h) { free(h); }

static size_t open_streams(struct c2s_listener *l)
{
    struct xmpp_stats st;
    memset(&st, 0, sizeof st);
    xmpp_server_stats(l->srv, &st);
    return l->nconns + st.websocket + st.s2s_in + st.s2s_out;
}

static void peer_ip(const char *peer, char *ip, size_t n)
{
    const char *s = peer;
    size_t len = strlen(peer);
    const char *colon = strrchr(peer, ':');
    if (colon)
        len = (size_t)(colon - peer);
    if (s[0] == '[' && len >= 2 && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    snprintf(ip, n, "%.*s", (int)len, s);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct c2s_listener *l = server->data;
    if (status < 0)
        return;
    bool full = open_streams(l) >= (size_t)l->cfg->xmpp.max_connections;
    if (l->shutting_down || full) {
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(l->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0 && full) {
            char peer[64];
            net_peer_name(t, peer, sizeof peer);
            log_warn("c2s %s: connection refused: xmpp.max_connections (%d) reached", peer,
                     l->cfg->xmpp.max_connections);
        }
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    struct c2s_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->l = l;
    l->nalive++;
    buf_init(&c->plain, 0);
    buf_init(&c->out, 0);
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nconns++;
    uv_tcp_nodelay(&c->tcp, 1);
    net_peer_name(&c->tcp, c->peer, sizeof c->peer);
    char ip[64];
    peer_ip(c->peer, ip, sizeof ip);
    c->last_in = c->last_out = uv_now(l->loop);
    c->epoch = l->epoch - 1; /* its first write may go out at once */

    struct c2s_params p = {.framing = STANZA_FRAMING_TCP, .secure = false, .websocket = false,
                           .ip = ip};
    struct c2s_transport t = {.ud = c, .write = t_write, .close = t_close, .starttls = t_starttls};
    c->s = c2s_session_new(l->srv, &p, &t);
    if (!c->s) {
        conn_close(c, "out of memory");
        return;
    }
    log_debug("c2s %s: connected", c->peer);
    conn_read_start(c);
}

/* --- timers --------------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct c2s_listener *l = t->data;
    const struct config *cfg = l->cfg;
    uint64_t now = uv_now(l->loop);
    struct c2s_conn *next;
    for (struct c2s_conn *c = l->conns; c; c = next) {
        next = c->next;
        if (c->close_asked) {
            if (now >= c->close_by)
                conn_close(c, "the client did not take the end of the stream");
            continue;
        }
        if (c->over_since && now - c->over_since >= SLOW_MS) {
            log_warn("c2s %s: cut off: over %u bytes of output queued for %d ms, the client "
                     "does not read",
                     c->peer, OUT_SOFT_LIMIT, SLOW_MS);
            conn_close(c, NULL);
            continue;
        }
        /* A client we stopped reading (backpressure) is not idle. */
        if (c->reading && now - c->last_in >= cfg->xmpp.idle_timeout_ms) {
            log_info("c2s %s: nothing received for %llu ms: connection-timeout", c->peer,
                     (unsigned long long)(now - c->last_in));
            c2s_session_end(c->s, "connection-timeout");
            if (!c->closing)
                t_close(c);
            continue;
        }
        if (c->since_restart > 0 && now - c->last_out >= cfg->xmpp.keepalive_ms &&
            (!c->tls || tls_conn_ready(c->tls)))
            t_write(c, " ", 1);
    }
}

/* --- the listener ------------------------------------------------------------------------------ */

int c2s_tcp_listen(struct xmpp_server *srv, const char *addr, struct c2s_listener **out,
                   char *err, size_t errlen)
{
    struct c2s_listener *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    l->srv = srv;
    l->loop = xmpp_server_loop(srv);
    l->cfg = xmpp_server_config(srv);
    int rc = net_tcp_listen(l->loop, &l->tcp, addr, 511, on_connection, &l->port, err, errlen);
    if (rc != 0) {
        free(l);
        return rc;
    }
    l->tcp.data = l;
    l->listening = true;
    uv_timer_init(l->loop, &l->tick);
    uv_check_init(l->loop, &l->check);
    uv_idle_init(l->loop, &l->idle);
    l->tick.data = l->check.data = l->idle.data = l;
    l->open_handles = 4;
    uint64_t every = l->cfg->xmpp.keepalive_ms < l->cfg->xmpp.idle_timeout_ms
                         ? l->cfg->xmpp.keepalive_ms
                         : l->cfg->xmpp.idle_timeout_ms;
    every /= 4;
    if (every < 100)
        every = 100;
    if (every > 1000)
        every = 1000;
    uv_timer_start(&l->tick, on_tick, every, every);
    /* The tick alone must not keep the loop alive. */
    uv_unref((uv_handle_t *)&l->tick);
    log_info("xmpp: c2s listening on %s (port %d)", addr, l->port);
    *out = l;
    return 0;
}

int c2s_tcp_port(const struct c2s_listener *l) { return l->port; }

size_t c2s_tcp_connections(const struct c2s_listener *l) { return l->nconns; }

static void on_handle_closed(uv_handle_t *h)
{
    struct c2s_listener *l = h->data;
    l->open_handles--;
    shutdown_maybe_done(l);
}

static void shutdown_maybe_done(struct c2s_listener *l)
{
    if (!l->shutting_down)
        return;
    if (l->nalive == 0 && !uv_is_closing((uv_handle_t *)&l->tick)) {
        /* Every stream is gone: the handles can go too. */
        uv_close((uv_handle_t *)&l->tick, on_handle_closed);
        uv_close((uv_handle_t *)&l->check, on_handle_closed);
        uv_close((uv_handle_t *)&l->idle, on_handle_closed);
        return;
    }
    if (l->open_handles == 0 && l->nalive == 0 && l->shutdown_cb) {
        void (*cb)(void *) = l->shutdown_cb;
        l->shutdown_cb = NULL;
        cb(l->shutdown_arg);
    }
}

void c2s_tcp_shutdown(struct c2s_listener *l, void (*cb)(void *arg), void *arg)
{
    if (l->shutting_down)
        return;
    l->shutting_down = true;
    l->shutdown_cb = cb;
    l->shutdown_arg = arg;
    if (l->listening) {
        l->listening = false;
        uv_close((uv_handle_t *)&l->tcp, on_handle_closed);
    }
    uint64_t now = uv_now(l->loop);
    struct c2s_conn *next;
    for (struct c2s_conn *c = l->conns; c; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        c2s_session_end(c->s, "system-shutdown");
        if (!c->closing)
            t_close(c);
        /* Shutting down should not wait on slow readers for long. */
        if (!c->closing && c->close_by > now + 2000)
            c->close_by = now + 2000;
    }
    /* The tick enforces those deadlines; let it keep the loop alive now. */
    uv_ref((uv_handle_t *)&l->tick);
    shutdown_maybe_done(l);
}

void c2s_tcp_free(struct c2s_listener *l) { free(l); }
