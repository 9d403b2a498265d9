/*
 * Server-to-server streams (s2s.h): federation with Prosody, ejabberd and
 * the rest, in both directions.
 *
 * One struct s2s_conn per TCP connection, incoming or outgoing, each with
 * its own stream parser, TLS engine (once STARTTLS ran) and timer.
 *
 * Outgoing. A stream is for one (local domain, remote domain) pair: the MUC
 * sends from chat.DOMAIN, the server from DOMAIN, and each pair is
 * authenticated on its own (RFC 6120 and XEP-0220 authenticate domain
 * pairs), so one stream per pair keeps the state machine a straight line:
 *
 *   resolve (route table, SRV, A/AAAA) -> connect (each address in turn)
 *   -> header -> features must offer STARTTLS -> <starttls/> -> <proceed/>
 *   -> TLS -> header -> features:
 *        SASL EXTERNAL offered (the peer validated our certificate): use it,
 *        restart, ready;
 *        else dialback (unless s2s_secure_auth and the peer's certificate
 *        does not validate): <db:result>KEY</db:result>, wait for valid.
 *   -> ready: flush the queue, then write stanzas as they come.
 *
 * While it is not ready, stanzas wait in a bounded queue (QUEUE_MAX
 * stanzas, QUEUE_BYTES bytes); when the stream fails they go back to their
 * senders as remote-server-not-found (or remote-server-timeout when it was
 * too slow), through xmpp_route_error. An outgoing stream nothing was sent
 * on for xmpp.idle_timeout is closed; the next stanza opens a new one.
 *
 * Incoming. A peer must STARTTLS first: anything else before TLS is a
 * policy-violation stream error (plaintext federation is refused). After
 * TLS we offer SASL EXTERNAL when its certificate validates for the domain
 * in its header (it then speaks for that domain to all of ours) and, unless
 * s2s_secure_auth, dialback: a <db:result> for (remote, local) is accepted
 * at once when the certificate validates for remote (XEP-0344), otherwise
 * checked by asking the remote's authoritative server: <db:verify> goes out
 * on our outgoing stream for (local, remote), and its answer decides. We
 * also answer <db:verify> for keys we made ourselves. Stanzas are routed
 * only when their from domain is authenticated for their to domain on this
 * stream, after moving them from jabber:server to jabber:client.
 *
 * Limits: 10 KB per stanza before authentication, 256 KiB after (the
 * parser counts); a bounded output queue; a deadline for negotiation;
 * silence for xmpp.idle_timeout closes a stream. Every stream costs, and a
 * peer's dialback requests make outgoing streams and DNS lookups, so:
 * OUT_MAX outgoing streams (more stanzas bounce with resource-constraint),
 * DNS_INFLIGHT_MAX lookups at once (further streams wait their turn),
 * PAIRS_MAX domain pairs an incoming stream may ask us to authenticate
 * (past that, policy-violation), VERIFIES_MAX db:verify per outgoing
 * stream, QUEUE_TOTAL_BYTES waiting for all servers, and incoming streams
 * count toward xmpp.max_connections with c2s (and IN_MAX on their own).
 * Guests never federate: the router refuses them, s2s_send checks the from
 * domain again, and no pair or SASL identity may name one of our domains.
 *
 * Remote users: the available presences remote users send us are
 * remembered (struct seen, bounded). When the last incoming stream of a
 * domain dies without </stream:stream> (connection lost, TLS failure, a
 * stream error such as system-shutdown), its users are gone: the router
 * hears it (xmpp_server_notify_gone) and rooms drop them. A clean close is
 * a live server ending an idle stream and keeps them.
 *
 * Lifetime: a connection closes in one place (conn_close). It stays on the
 * list until its handles are closed; nothing is freed inside a parser or
 * TLS callback.
 */
#include "chat/s2s.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>
#include <uv.h>

#include "chat/jid.h"
#include "chat/ns.h"
#include "chat/stanza.h"
#include "chat/xml.h"
#include "chat/xmpp.h"
#include "chat/xmpp_internal.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/tls.h"

#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"

#define QUEUE_MAX 1000             /* stanzas waiting for one outgoing stream */
#define QUEUE_BYTES (1u << 20)     /* and their bytes */
#define QUEUE_TOTAL_BYTES (32u << 20) /* bytes waiting, all outgoing streams */
#define OUT_LIMIT (4u << 20)       /* bytes waiting for the socket */
#define NEGOTIATE_MS 60000         /* to get authenticated (either way) */
#define TICK_MS 5000
#define OUT_MAX 256                /* outgoing streams */
#define IN_MAX 1024                /* incoming streams (and xmpp.max_connections) */
#define IN_PER_IP_MAX 64           /* incoming streams from one address */
#define DNS_INFLIGHT_MAX 16        /* lookups at once; further streams wait */
#define PAIRS_MAX 16               /* (remote, local) pairs a stream may ask for */
#define VERIFY_PENDING_MAX 16      /* db:result checks in flight per stream */
#define VERIFIES_MAX 64            /* db:verify waiting on one outgoing stream */
#define SEEN_DOMAIN_MAX 10000      /* remote presences remembered per domain */
#define SEEN_TOTAL_MAX 100000      /* and in all */
#define SEEN_BUCKETS 4096
#define DOMAIN_SIZE 256

enum conn_dir { DIR_IN, DIR_OUT };

enum out_state {
    OUT_RESOLVING,
    OUT_CONNECTING,
    OUT_STREAM,   /* header sent, waiting for features (plaintext) */
    OUT_STARTTLS, /* <starttls/> sent */
    OUT_TLS,      /* TLS on, waiting for the header and features */
    OUT_SASL,     /* <auth mechanism='EXTERNAL'/> sent */
    OUT_DIALBACK, /* <db:result/> sent */
    OUT_READY,
};

enum pending { PEND_NONE, PEND_STARTTLS, PEND_RESET };

/* A db:result we are checking with the remote's authoritative server. */
struct verify_req {
    uint64_t in_id; /* the incoming stream that asked */
    char remote[DOMAIN_SIZE], local[DOMAIN_SIZE];
    char stream_id[128];
    char key[256];
    bool sent;
};

/* A (remote, local) pair an incoming stream asked us to authenticate. */
enum pair_state { PAIR_PENDING, PAIR_VALID, PAIR_INVALID };
struct pair {
    char remote[DOMAIN_SIZE];
    char local[DOMAIN_SIZE];
    enum pair_state state;
};

/*
 * Remote presence: (full JID, local bare JID) for each available presence a
 * remote user sent us (a room join, a directed presence), forgotten on
 * unavailable. When the last incoming stream for a domain dies (not a clean
 * </stream:stream>), its users are gone: xmpp_server_notify_gone for each,
 * so rooms drop them. One table for all streams: a peer that reconnects
 * keeps its users.
 */
struct seen_dom {
    struct seen_dom *next;
    size_t n;
    bool suspect; /* a stream for it died while another one served it */
    char name[DOMAIN_SIZE];
};
struct seen {
    struct seen *next;
    struct seen_dom *dom;
    uint32_t hash;
    const char *to; /* after from's NUL in key */
    char key[];     /* from NUL to NUL */
};

struct s2s_conn {
    struct s2s *s;
    struct s2s_conn *prev, *next;
    uint64_t id;
    enum conn_dir dir;
    uv_tcp_t tcp;
    bool tcp_open, connected;
    uv_connect_t connect_req;
    uv_timer_t timer;
    bool timer_open;
    struct tls_conn *tls;
    bool tls_on;
    struct xml_stream *xs;
    enum pending pending;
    bool closing;
    bool header_sent; /* our header on the current stream */
    char peer[64];
    char local[DOMAIN_SIZE];  /* ours */
    char remote[DOMAIN_SIZE]; /* theirs ("" until known, incoming) */
    char stream_id[128];      /* in: ours; out: theirs */
    uint64_t started, last_read, last_write, last_stanza;

    /* outgoing */
    enum out_state state;
    bool authed;
    bool features_tls; /* post-TLS features seen: db:verify may go out */
    bool fail_soon;
    bool dns_wait; /* waiting for a DNS slot (DNS_INFLIGHT_MAX) */
    enum stanza_cond fail_cond;
    struct s2s_dns_query *dnsq;
    struct s2s_addr addrs[S2S_DNS_MAX];
    size_t naddrs, next_addr;
    struct xml_node **queue;
    size_t qlen, qcap, qbytes;
    struct verify_req *verifies;
    size_t nverifies;

    /* incoming */
    char ext_domain[DOMAIN_SIZE]; /* authenticated by SASL EXTERNAL */
    bool external_offered;
    struct pair pairs[PAIRS_MAX];
    size_t npairs;
    size_t checks; /* db:result checks in flight */
    bool died;     /* ended without </stream:stream>: the peer may be gone */
};

struct s2s {
    struct xmpp_server *srv;
    uv_loop_t *loop;
    const struct config *cfg;
    uv_tcp_t *listener;
    bool listening;
    int port;
    struct s2s_conn *conns;
    uint64_t next_id;
    size_t nin, nout;
    size_t qbytes; /* queued for all outgoing streams */
    struct s2s_dns *dns;
    bool dns_open;
    unsigned char secret[32];
    struct s2s_route routes[S2S_ROUTES_MAX];
    size_t nroutes;
    char routes_err[256];
    /* Domains whose stream just failed: stanzas to them bounce at once for
     * a while instead of each opening a new connection. */
    struct {
        char domain[DOMAIN_SIZE];
        uint64_t until;
        enum stanza_cond cond;
    } failed[16];
    bool shutting_down;
    void (*shutdown_cb)(void *arg);
    void *shutdown_arg;
    struct seen *seen[SEEN_BUCKETS];
    struct seen_dom *seen_doms;
    size_t nseen;
};

/* ---- helpers ----------------------------------------------------------- */

static void clog_(struct s2s_conn *c, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void clog_(struct s2s_conn *c, enum log_level lvl, const char *fmt, ...)
{
    if (lvl < log_get_level())
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->dir == DIR_OUT)
        log_msg(lvl, "s2s out #%llu %s -> %s (%s): %s", (unsigned long long)c->id, c->local,
                c->remote, c->peer, msg);
    else
        log_msg(lvl, "s2s in #%llu %s (%s -> %s): %s", (unsigned long long)c->id, c->peer,
                c->remote[0] ? c->remote : "?", c->local[0] ? c->local : "?", msg);
}
#define clog_debug(c, ...) clog_(c, LOG_DEBUG, __VA_ARGS__)
#define clog_info(c, ...) clog_(c, LOG_INFO, __VA_ARGS__)
#define clog_warn(c, ...) clog_(c, LOG_WARN, __VA_ARGS__)

static uint64_t now_ms(const struct s2s *s)
{
    return uv_now(s->loop);
}

static bool is_ours(const struct s2s *s, const char *domain)
{
    /* guest.DOMAIN is not served over s2s: guests never federate. */
    return strcmp(domain, xmpp_server_domain(s->srv)) == 0 ||
           strcmp(domain, xmpp_server_muc_domain(s->srv)) == 0;
}

static int prep_domain(const char *in, char out[DOMAIN_SIZE])
{
    char tmp[JID_PART_MAX + 1];
    if (!in || !*in || jid_prep_domain(in, strlen(in), tmp, false) < 0)
        return -EINVAL;
    if (strlen(tmp) >= DOMAIN_SIZE)
        return -EINVAL;
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

/* ---- remote presence (struct seen) ------------------------------------ */

static uint32_t seen_hash(const char *from, const char *to)
{
    uint32_t h = 2166136261u;
    for (const char *p = from; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (const char *p = to; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static struct seen_dom *seen_dom_find(struct s2s *s, const char *domain)
{
    for (struct seen_dom *d = s->seen_doms; d; d = d->next)
        if (strcmp(d->name, domain) == 0)
            return d;
    return NULL;
}

static void seen_dom_drop(struct s2s *s, struct seen_dom *d)
{
    for (struct seen_dom **pp = &s->seen_doms; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            free(d);
            return;
        }
}

/* from (full, on domain) is available to to (a local bare JID), or not. */
static void seen_update(struct s2s *s, const char *domain, const char *from, const char *to,
                        bool available)
{
    uint32_t h = seen_hash(from, to);
    struct seen **pp = &s->seen[h % SEEN_BUCKETS], *e;
    for (; (e = *pp); pp = &e->next)
        if (e->hash == h && strcmp(e->key, from) == 0 && strcmp(e->to, to) == 0)
            break;
    if (!available) {
        if (e) {
            *pp = e->next;
            s->nseen--;
            if (--e->dom->n == 0 && !e->dom->suspect)
                seen_dom_drop(s, e->dom);
            free(e);
        }
        return;
    }
    if (e)
        return;
    struct seen_dom *d = seen_dom_find(s, domain);
    if (s->nseen >= SEEN_TOTAL_MAX || (d && d->n >= SEEN_DOMAIN_MAX)) {
        log_debug("s2s: not remembering %s's presence to %s: table full", from, to);
        return;
    }
    if (!d) {
        d = calloc(1, sizeof(*d));
        if (!d)
            return;
        snprintf(d->name, sizeof d->name, "%s", domain);
        d->next = s->seen_doms;
        s->seen_doms = d;
    }
    size_t fl = strlen(from), tl = strlen(to);
    e = malloc(sizeof(*e) + fl + tl + 2);
    if (!e) {
        if (d->n == 0 && !d->suspect)
            seen_dom_drop(s, d);
        return;
    }
    memcpy(e->key, from, fl + 1);
    memcpy(e->key + fl + 1, to, tl + 1);
    e->to = e->key + fl + 1;
    e->hash = h;
    e->dom = d;
    e->next = s->seen[h % SEEN_BUCKETS];
    s->seen[h % SEEN_BUCKETS] = e;
    d->n++;
    s->nseen++;
}

static int cmp_seen(const void *a, const void *b)
{
    const struct seen *x = *(struct seen *const *)a, *y = *(struct seen *const *)b;
    return strcmp(x->key, y->key);
}

/* Every user of domain is gone: forget them, then tell the router. */
static void seen_gone(struct s2s *s, const char *domain)
{
    struct seen_dom *d = seen_dom_find(s, domain);
    if (!d)
        return;
    size_t n = 0, cap = d->n;
    struct seen **gone = cap ? malloc(cap * sizeof(*gone)) : NULL;
    for (size_t b = 0; b < SEEN_BUCKETS; b++) {
        for (struct seen **pp = &s->seen[b], *e; (e = *pp);) {
            if (e->dom != d) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            s->nseen--;
            if (gone && n < cap)
                gone[n++] = e;
            else
                free(e);
        }
    }
    seen_dom_drop(s, d);
    /* One notification per full JID (it may have been in several rooms). */
    if (gone)
        qsort(gone, n, sizeof(*gone), cmp_seen);
    size_t told = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(gone[i]->key, gone[i - 1]->key) != 0) {
            struct jid j = {0};
            if (jid_parse(&j, gone[i]->key) == 0) {
                xmpp_server_notify_gone(s->srv, &j);
                told++;
            }
            jid_free(&j);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(gone[i]);
    free(gone);
    log_info("s2s: %s is gone (its last stream died): %zu remote users dropped", domain, told);
}

static void seen_free(struct s2s *s)
{
    for (size_t b = 0; b < SEEN_BUCKETS; b++)
        for (struct seen *e = s->seen[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    for (struct seen_dom *d = s->seen_doms, *next; d; d = next) {
        next = d->next;
        free(d);
    }
    s->seen_doms = NULL;
    s->nseen = 0;
}

/* Whether incoming stream c speaks for domain. */
static bool in_serves(const struct s2s_conn *c, const char *domain)
{
    if (c->ext_domain[0] && strcmp(c->ext_domain, domain) == 0)
        return true;
    for (size_t i = 0; i < c->npairs; i++)
        if (c->pairs[i].state == PAIR_VALID && strcmp(c->pairs[i].remote, domain) == 0)
            return true;
    return false;
}

/* A domain got (re)authenticated: whatever died before is not suspect. */
static void seen_domain_alive(struct s2s *s, const char *domain)
{
    struct seen_dom *d = seen_dom_find(s, domain);
    if (d && d->suspect) {
        d->suspect = false;
        if (d->n == 0)
            seen_dom_drop(s, d);
    }
}

/* Incoming stream c is closing: for each domain it spoke for that no other
 * stream speaks for, its users are gone when the stream died (or another
 * one for the domain died before). A clean </stream:stream> (an idle
 * stream closed by a live server) or our own closing it (idle, policy)
 * keeps them: a room's messages to a user who is really gone bounce, and
 * the MUC drops them then. */
static void in_closed(struct s2s_conn *c)
{
    struct s2s *s = c->s;
    if (s->shutting_down)
        return;
    const char *doms[PAIRS_MAX + 1];
    size_t nd = 0;
    if (c->ext_domain[0])
        doms[nd++] = c->ext_domain;
    for (size_t i = 0; i < c->npairs; i++) {
        if (c->pairs[i].state != PAIR_VALID)
            continue;
        bool dup = false;
        for (size_t k = 0; k < nd; k++)
            dup = dup || strcmp(doms[k], c->pairs[i].remote) == 0;
        if (!dup)
            doms[nd++] = c->pairs[i].remote;
    }
    for (size_t k = 0; k < nd; k++) {
        struct seen_dom *d = seen_dom_find(s, doms[k]);
        if (!d)
            continue;
        bool other = false;
        for (struct s2s_conn *o = s->conns; o && !other; o = o->next)
            other = o != c && o->dir == DIR_IN && !o->closing && in_serves(o, doms[k]);
        if (other) {
            if (c->died)
                d->suspect = true;
            continue;
        }
        if (c->died || d->suspect)
            seen_gone(s, doms[k]);
    }
}

static void conn_close(struct s2s_conn *c, int stream_cond, const char *text);
static void remember_failure(struct s2s *s, const char *domain, enum stanza_cond cond);
static void conn_fail(struct s2s_conn *c, enum stanza_cond cond, const char *why);
static void out_flush(struct s2s_conn *c);
static void out_send_verifies(struct s2s_conn *c);
static struct s2s_conn *out_get(struct s2s *s, const char *local, const char *remote,
                               enum stanza_cond *why);
static enum stanza_cond recent_failure(struct s2s *s, const char *domain);
static void dns_kick(struct s2s *s);
static void in_verify_answer(struct s2s *s, uint64_t in_id, const char *remote,
                             const char *local, bool valid);

/* ---- writing ----------------------------------------------------------- */

struct wreq {
    uv_write_t req;
    struct s2s_conn *c;
    char data[];
};

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct s2s_conn *c = w->c;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        clog_info(c, "write failed: %s", uv_strerror(status));
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "write failed");
    }
}

/* Ciphertext (or plaintext before TLS) to the socket. */
static int raw_write(struct s2s_conn *c, const void *data, size_t len)
{
    if (!c->connected || !c->tcp_open || uv_is_closing((uv_handle_t *)&c->tcp))
        return -EPIPE;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + len > OUT_LIMIT) {
        clog_warn(c, "peer does not read (over %u bytes queued), closing", OUT_LIMIT);
        return -ENOBUFS;
    }
    struct wreq *w = malloc(sizeof(*w) + len);
    if (!w)
        return -ENOMEM;
    w->c = c;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(w);
        return rc;
    }
    c->last_write = now_ms(c->s);
    return 0;
}

static int on_tls_send(void *ud, const void *data, size_t len)
{
    return raw_write(ud, data, len);
}

/* Stream bytes: through TLS once it is on. */
static int conn_write(struct s2s_conn *c, const void *data, size_t len)
{
    if (c->closing && !c->tcp_open)
        return -EPIPE;
    int rc = c->tls_on ? tls_conn_write(c->tls, data, len) : raw_write(c, data, len);
    if (rc < 0 && !c->closing) {
        clog_info(c, "cannot write: %s", strerror(-rc));
        conn_close(c, -1, NULL);
    }
    return rc;
}

static int conn_write_buf(struct s2s_conn *c, struct buf *b)
{
    int rc = conn_write(c, b->data, b->len);
    buf_free(b);
    return rc;
}

static int conn_write_str(struct s2s_conn *c, const char *s)
{
    return conn_write(c, s, strlen(s));
}

static void send_header(struct s2s_conn *c)
{
    struct buf b;
    buf_init(&b, 0);
    struct stanza_header h = {
        .content_ns = XMPP_NS_SERVER,
        .from = c->local[0] ? c->local : NULL,
        .to = c->remote[0] ? c->remote : NULL,
        .id = c->dir == DIR_IN ? c->stream_id : NULL,
        .dialback = true,
    };
    if (stanza_stream_header(&b, STANZA_FRAMING_TCP, &h) < 0) {
        buf_free(&b);
        conn_close(c, -1, NULL);
        return;
    }
    c->header_sent = true;
    conn_write_buf(c, &b);
}

/* ---- closing ----------------------------------------------------------- */

static void check_shutdown_done(struct s2s *s);

static void conn_free(struct s2s_conn *c)
{
    struct s2s *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    for (size_t i = 0; i < c->qlen; i++)
        xml_node_free(c->queue[i]);
    s->qbytes -= c->qbytes;
    free(c->queue);
    free(c->verifies);
    if (c->tls)
        tls_conn_free(c->tls);
    if (c->xs)
        xml_stream_free(c->xs);
    free(c);
    check_shutdown_done(s);
}

static void maybe_free(struct s2s_conn *c)
{
    if (c->closing && !c->tcp_open && !c->timer_open)
        conn_free(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct s2s_conn *c = h->data;
    c->tcp_open = false;
    c->connected = false;
    maybe_free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct s2s_conn *c = h->data;
    c->timer_open = false;
    maybe_free(c);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    struct s2s_conn *c = req->data;
    free(req);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* Bounce what waits for this stream back to its senders. */
static void bounce_queue(struct s2s_conn *c, enum stanza_cond cond, const char *text)
{
    struct xml_node **q = c->queue;
    size_t n = c->qlen;
    c->queue = NULL;
    c->s->qbytes -= c->qbytes;
    c->qlen = c->qcap = c->qbytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->s->shutting_down)
            xml_node_free(q[i]);
        else
            xmpp_route_error(c->s->srv, q[i], (int)cond, text);
    }
    free(q);
}

/*
 * The one way out. stream_cond >= 0: send that stream error first (when our
 * header is out); -1: just the close tag; -2: nothing (the socket is gone).
 */
static void conn_close(struct s2s_conn *c, int stream_cond, const char *text)
{
    if (c->closing)
        return;
    c->closing = true;
    struct s2s *s = c->s;
    if (c->dir == DIR_IN) {
        if (s->nin)
            s->nin--;
    } else if (s->nout) {
        s->nout--;
    }
    if (c->dnsq) {
        s2s_dns_cancel(c->dnsq);
        c->dnsq = NULL;
    }
    c->dns_wait = false;
    if (c->dir == DIR_IN)
        in_closed(c);
    if (c->dir == DIR_OUT) {
        if (!c->authed && !s->shutting_down)
            remember_failure(s, c->remote, c->fail_cond ? c->fail_cond
                                                       : STANZA_COND_REMOTE_SERVER_NOT_FOUND);
        bounce_queue(c, c->fail_cond ? c->fail_cond : STANZA_COND_REMOTE_SERVER_NOT_FOUND,
                     NULL);
        /* Whoever waited for a db:verify answer through us gets "invalid". */
        for (size_t i = 0; i < c->nverifies; i++)
            in_verify_answer(s, c->verifies[i].in_id, c->verifies[i].remote,
                             c->verifies[i].local, false);
        c->nverifies = 0;
    }
    if (c->connected && c->tcp_open && stream_cond != -2) {
        struct buf b;
        buf_init(&b, 0);
        if (!c->header_sent && stream_cond >= 0) {
            struct stanza_header h = {.content_ns = XMPP_NS_SERVER,
                                      .from = c->local[0] ? c->local : NULL,
                                      .id = c->dir == DIR_IN ? c->stream_id : NULL,
                                      .dialback = true};
            if (!c->stream_id[0])
                stanza_id_new(c->stream_id);
            stanza_stream_header(&b, STANZA_FRAMING_TCP, &h);
            c->header_sent = true;
        }
        if (c->header_sent) {
            if (stream_cond >= 0)
                stanza_stream_error(&b, STANZA_FRAMING_TCP, (enum stanza_stream_cond)stream_cond,
                                    text);
            stanza_stream_close(&b, STANZA_FRAMING_TCP, NULL);
        }
        if (b.len) {
            if (c->tls_on)
                tls_conn_write(c->tls, b.data, b.len);
            else
                raw_write(c, b.data, b.len);
        }
        buf_free(&b);
    }
    if (c->timer_open && !uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_shutdown_t *req = c->connected ? malloc(sizeof(*req)) : NULL;
        if (req) {
            req->data = c;
            if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown_done) == 0)
                return;
            free(req);
        }
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
    maybe_free(c);
}

#define FAIL_HOLD_MS 30000

static void remember_failure(struct s2s *s, const char *domain, enum stanza_cond cond)
{
    size_t slot = 0;
    for (size_t i = 0; i < sizeof s->failed / sizeof s->failed[0]; i++) {
        if (strcmp(s->failed[i].domain, domain) == 0) {
            slot = i;
            break;
        }
        if (s->failed[i].until < s->failed[slot].until)
            slot = i;
    }
    snprintf(s->failed[slot].domain, DOMAIN_SIZE, "%s", domain);
    s->failed[slot].until = now_ms(s) + FAIL_HOLD_MS;
    s->failed[slot].cond = cond;
}

/* STANZA_COND_COUNT when domain is not held as failed. */
static enum stanza_cond recent_failure(struct s2s *s, const char *domain)
{
    for (size_t i = 0; i < sizeof s->failed / sizeof s->failed[0]; i++)
        if (strcmp(s->failed[i].domain, domain) == 0 && s->failed[i].until > now_ms(s))
            return s->failed[i].cond;
    return STANZA_COND_COUNT;
}

static void conn_fail(struct s2s_conn *c, enum stanza_cond cond, const char *why)
{
    if (c->closing)
        return;
    if (why)
        clog_info(c, "failed: %s", why);
    c->fail_cond = cond;
    conn_close(c, -1, NULL);
}

/* ---- parser glue ------------------------------------------------------- */

static int on_open(void *ud, const struct xml_open *open);
static int on_stanza(void *ud, struct xml_node *st);
static int on_close(void *ud);

static const struct xml_stream_callbacks parser_cb = {
    .on_open = on_open,
    .on_stanza = on_stanza,
    .on_close = on_close,
};

static void start_tls(struct s2s_conn *c);

/* Bytes of the stream (plaintext, or decrypted). */
static int conn_feed(struct s2s_conn *c, const char *data, size_t len)
{
    size_t off = 0;
    c->last_read = now_ms(c->s);
    while (off < len && !c->closing) {
        size_t used = 0;
        int rc = xml_stream_feed(c->xs, data + off, len - off, &used);
        off += used;
        if (c->closing)
            return -1;
        if (rc < 0) {
            enum xml_error e = xml_stream_error(c->xs);
            clog_info(c, "bad XML: %s", xml_stream_error_text(c->xs));
            conn_close(c, (int)stanza_stream_cond_from_xml(e), NULL);
            return -1;
        }
        if (rc == XML_STREAM_PAUSED) {
            enum pending p = c->pending;
            c->pending = PEND_NONE;
            if (p == PEND_STARTTLS) {
                /* Whatever followed in plaintext was sent before TLS and
                 * must not reach the new stream. */
                if (off < len)
                    clog_info(c, "dropping %zu plaintext bytes after STARTTLS", len - off);
                start_tls(c);
                return 0;
            }
            if (p == PEND_RESET) {
                c->header_sent = false;
                if (xml_stream_reset(c->xs) < 0) {
                    conn_close(c, STANZA_STREAM_INTERNAL_SERVER_ERROR, NULL);
                    return -1;
                }
                if (c->dir == DIR_OUT)
                    send_header(c);
            }
        }
    }
    return c->closing ? -1 : 0;
}

static int on_tls_recv(void *ud, const char *data, size_t len)
{
    struct s2s_conn *c = ud;
    if (c->closing)
        return 0;
    return conn_feed(c, data, len) < 0 ? -1 : 0;
}

static void on_tls_ready(void *ud)
{
    struct s2s_conn *c = ud;
    if (c->closing)
        return;
    clog_debug(c, "TLS established");
    if (c->dir == DIR_OUT)
        send_header(c);
}

static void start_tls(struct s2s_conn *c)
{
    struct tls_ctx *ctx = xmpp_server_tls(c->s->srv, c->dir == DIR_OUT);
    if (!ctx) {
        clog_warn(c, "no TLS context");
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "no TLS context");
        return;
    }
    struct tls_io io = {.ud = c, .send = on_tls_send, .recv = on_tls_recv, .ready = on_tls_ready};
    /* tls_on first: a client's ClientHello goes out from inside tls_conn_new. */
    c->tls_on = true;
    c->header_sent = false;
    if (xml_stream_reset(c->xs) < 0) {
        conn_close(c, -2, NULL);
        return;
    }
    c->tls = tls_conn_new(ctx, c->dir == DIR_OUT ? c->remote : NULL, &io);
    if (!c->tls) {
        c->tls_on = false;
        conn_fail(c, STANZA_COND_RESOURCE_CONSTRAINT, "out of memory for TLS");
        return;
    }
    if (c->dir == DIR_OUT)
        c->state = OUT_TLS;
}

/* ---- incoming: header and features ------------------------------------- */

static void in_send_features(struct s2s_conn *c)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "<stream:features>");
    if (!c->tls_on) {
        buf_printf(&b, "<starttls xmlns='%s'><required/></starttls>", XMPP_NS_TLS);
    } else if (!c->ext_domain[0]) {
        const struct config *cfg = c->s->cfg;
        c->external_offered =
            c->remote[0] && tls_conn_peer_verified(c->tls, c->remote);
        if (c->external_offered)
            buf_printf(&b, "<mechanisms xmlns='%s'><mechanism>EXTERNAL</mechanism></mechanisms>",
                       XMPP_NS_SASL);
        if (!cfg->xmpp.s2s_secure_auth)
            buf_printf(&b, "<dialback xmlns='%s'><errors/></dialback>", NS_DIALBACK_FEATURE);
    }
    buf_append_str(&b, "</stream:features>");
    conn_write_buf(c, &b);
}

static int in_open(struct s2s_conn *c, const struct xml_open *open)
{
    /* Every stream (and every restart) gets a fresh id: dialback keys are
     * bound to it. */
    if (stanza_id_new(c->stream_id) < 0) {
        conn_close(c, STANZA_STREAM_INTERNAL_SERVER_ERROR, NULL);
        return -1;
    }
    if (!open->content_ns || strcmp(open->content_ns, XMPP_NS_SERVER) != 0) {
        clog_info(c, "stream namespace is not jabber:server");
        conn_close(c, STANZA_STREAM_INVALID_NAMESPACE, NULL);
        return -1;
    }
    char to[DOMAIN_SIZE];
    if (!open->to || prep_domain(open->to, to) < 0 || !is_ours(c->s, to)) {
        clog_info(c, "stream to '%s', which we do not serve", open->to ? open->to : "");
        conn_close(c, STANZA_STREAM_HOST_UNKNOWN, NULL);
        return -1;
    }
    if (c->local[0] && strcmp(c->local, to) != 0 && c->ext_domain[0]) {
        conn_close(c, STANZA_STREAM_HOST_UNKNOWN, "to changed after authentication");
        return -1;
    }
    memcpy(c->local, to, sizeof to);
    if (open->from) {
        char from[DOMAIN_SIZE];
        if (prep_domain(open->from, from) < 0) {
            conn_close(c, STANZA_STREAM_INVALID_FROM, NULL);
            return -1;
        }
        memcpy(c->remote, from, sizeof from);
    }
    if (!open->version || strcmp(open->version, "1.0") != 0) {
        /* Pre-1.0 streams cannot STARTTLS, and we require it. */
        conn_close(c, STANZA_STREAM_UNSUPPORTED_VERSION, "XMPP 1.0 with STARTTLS required");
        return -1;
    }
    send_header(c);
    in_send_features(c);
    return 0;
}

/* ---- incoming: SASL EXTERNAL and dialback ------------------------------ */

static struct pair *in_pair_find(struct s2s_conn *c, const char *remote, const char *local)
{
    for (size_t i = 0; i < c->npairs; i++)
        if (strcmp(c->pairs[i].remote, remote) == 0 && strcmp(c->pairs[i].local, local) == 0)
            return &c->pairs[i];
    return NULL;
}

static bool in_pair_ok(struct s2s_conn *c, const char *remote, const char *local)
{
    if (!is_ours(c->s, local))
        return false;
    if (c->ext_domain[0] && strcmp(c->ext_domain, remote) == 0)
        return true;
    struct pair *p = in_pair_find(c, remote, local);
    return p && p->state == PAIR_VALID;
}

static void in_authenticated(struct s2s_conn *c)
{
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza = XML_LIMIT_POSTAUTH;
    xml_stream_set_limits(c->xs, &lim);
}

static int in_sasl_auth(struct s2s_conn *c, struct xml_node *st)
{
    const char *mech = xml_attr_get(st, "mechanism");
    char fail[256];
    const char *cond = NULL;
    if (!mech || strcmp(mech, "EXTERNAL") != 0)
        cond = "invalid-mechanism";
    else if (!c->external_offered || c->ext_domain[0])
        cond = "not-authorized";
    char authz[DOMAIN_SIZE] = "";
    if (!cond) {
        const char *t = xml_text(st);
        if (t && *t && strcmp(t, "=") != 0) {
            unsigned char bin[DOMAIN_SIZE];
            size_t binlen = 0;
            if (sodium_base642bin(bin, sizeof bin - 1, t, strlen(t), " \t\r\n", &binlen, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0) {
                cond = "incorrect-encoding";
            } else {
                bin[binlen] = 0;
                if (binlen && prep_domain((const char *)bin, authz) < 0)
                    cond = "invalid-authzid";
            }
        }
    }
    if (!cond) {
        if (!authz[0])
            memcpy(authz, c->remote, sizeof authz);
        if (!authz[0] || strcmp(authz, c->remote) != 0 || is_ours(c->s, authz) ||
            strcmp(authz, xmpp_server_guest_domain(c->s->srv)) == 0)
            cond = "invalid-authzid";
        else if (!tls_conn_peer_verified(c->tls, authz))
            cond = "not-authorized";
    }
    if (cond) {
        clog_info(c, "SASL EXTERNAL refused: %s", cond);
        snprintf(fail, sizeof fail, "<failure xmlns='%s'><%s/></failure>", XMPP_NS_SASL, cond);
        conn_write_str(c, fail);
        return 0;
    }
    memcpy(c->ext_domain, authz, sizeof authz);
    seen_domain_alive(c->s, authz);
    clog_info(c, "authenticated %s by SASL EXTERNAL (certificate)", authz);
    char ok[128];
    snprintf(ok, sizeof ok, "<success xmlns='%s'/>", XMPP_NS_SASL);
    conn_write_str(c, ok);
    in_authenticated(c);
    c->pending = PEND_RESET; /* the peer opens a new stream */
    return XML_STREAM_PAUSE;
}

/* The pair's entry, made (PAIR_PENDING) when missing; NULL past PAIRS_MAX. */
static struct pair *in_pair_get(struct s2s_conn *c, const char *remote, const char *local)
{
    struct pair *p = in_pair_find(c, remote, local);
    if (p || c->npairs >= PAIRS_MAX)
        return p;
    p = &c->pairs[c->npairs++];
    snprintf(p->remote, DOMAIN_SIZE, "%s", remote);
    snprintf(p->local, DOMAIN_SIZE, "%s", local);
    p->state = PAIR_PENDING;
    return p;
}

static void in_add_pair(struct s2s_conn *c, const char *remote, const char *local)
{
    struct pair *p = in_pair_get(c, remote, local);
    if (!p)
        return;
    p->state = PAIR_VALID;
    if (!c->remote[0])
        snprintf(c->remote, sizeof c->remote, "%s", remote);
    seen_domain_alive(c->s, remote);
    in_authenticated(c);
}

static void in_send_db_result(struct s2s_conn *c, const char *remote, const char *local,
                              bool valid)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "<db:result from='");
    xml_escape_attr(&b, local, strlen(local));
    buf_append_str(&b, "' to='");
    xml_escape_attr(&b, remote, strlen(remote));
    buf_printf(&b, "' type='%s'/>", valid ? "valid" : "invalid");
    conn_write_buf(c, &b);
}

/* The answer to a db:verify we sent for an incoming stream's db:result. */
static void in_verify_answer(struct s2s *s, uint64_t in_id, const char *remote,
                             const char *local, bool valid)
{
    struct s2s_conn *c;
    for (c = s->conns; c; c = c->next)
        if (c->id == in_id && c->dir == DIR_IN)
            break;
    if (!c || c->closing)
        return;
    if (c->checks)
        c->checks--;
    if (valid) {
        clog_info(c, "authenticated %s for %s by dialback", remote, local);
        in_add_pair(c, remote, local);
    } else {
        clog_info(c, "dialback for %s -> %s failed", remote, local);
        struct pair *p = in_pair_find(c, remote, local);
        if (p && p->state == PAIR_PENDING)
            p->state = PAIR_INVALID;
    }
    in_send_db_result(c, remote, local, valid);
}

static int in_db_result(struct s2s_conn *c, struct xml_node *st)
{
    char from[DOMAIN_SIZE], to[DOMAIN_SIZE];
    const char *key = xml_text(st);
    if (prep_domain(xml_attr_get(st, "from"), from) < 0 ||
        prep_domain(xml_attr_get(st, "to"), to) < 0) {
        conn_close(c, STANZA_STREAM_IMPROPER_ADDRESSING, "db:result needs from and to");
        return -1;
    }
    if (!is_ours(c->s, to)) {
        conn_close(c, STANZA_STREAM_HOST_UNKNOWN, NULL);
        return -1;
    }
    if (is_ours(c->s, from) || strcmp(from, xmpp_server_guest_domain(c->s->srv)) == 0) {
        conn_close(c, STANZA_STREAM_INVALID_FROM, NULL);
        return -1;
    }
    if (!key || !*key || strlen(key) >= sizeof(((struct verify_req *)0)->key)) {
        in_send_db_result(c, from, to, false);
        return 0;
    }
    if (in_pair_ok(c, from, to)) {
        in_send_db_result(c, from, to, true);
        return 0;
    }
    /* Each pair asked for may cost an outgoing stream and a DNS lookup:
     * a stream gets PAIRS_MAX of them, whatever their outcome. */
    struct pair *p = in_pair_find(c, from, to);
    if (p && p->state == PAIR_PENDING) {
        clog_debug(c, "db:result for %s -> %s again while checking it; ignored", from, to);
        return 0;
    }
    if (!p && !(p = in_pair_get(c, from, to))) {
        clog_warn(c, "asks for more than %d domain pairs, closing", PAIRS_MAX);
        conn_close(c, STANZA_STREAM_POLICY_VIOLATION, "too many domain pairs on one stream");
        return -1;
    }
    p->state = PAIR_PENDING;
    if (!c->remote[0])
        memcpy(c->remote, from, sizeof from);
    /* A certificate that validates for the domain says more than DNS can
     * (XEP-0344): no need to call back. */
    if (tls_conn_peer_verified(c->tls, from)) {
        clog_info(c, "authenticated %s for %s: its certificate validates", from, to);
        in_add_pair(c, from, to);
        in_send_db_result(c, from, to, true);
        return 0;
    }
    if (c->s->cfg->xmpp.s2s_secure_auth) {
        clog_info(c, "dialback from %s refused: s2s_secure_auth and no valid certificate", from);
        p->state = PAIR_INVALID;
        in_send_db_result(c, from, to, false);
        return 0;
    }
    if (c->checks >= VERIFY_PENDING_MAX) {
        conn_close(c, STANZA_STREAM_POLICY_VIOLATION, "too many dialback requests");
        return -1;
    }
    /* Ask the authoritative server, on our stream to it. */
    enum stanza_cond why;
    struct s2s_conn *o = recent_failure(c->s, from) == STANZA_COND_COUNT
                             ? out_get(c->s, to, from, &why)
                             : NULL;
    struct verify_req *v = NULL;
    if (o && o->nverifies < VERIFIES_MAX)
        v = realloc(o->verifies, (o->nverifies + 1) * sizeof(*v));
    if (!v) {
        clog_info(c, "dialback for %s -> %s: cannot ask %s now", from, to, from);
        p->state = PAIR_INVALID;
        in_send_db_result(c, from, to, false);
        return 0;
    }
    o->verifies = v;
    v = &o->verifies[o->nverifies++];
    memset(v, 0, sizeof(*v));
    v->in_id = c->id;
    snprintf(v->remote, sizeof v->remote, "%s", from);
    snprintf(v->local, sizeof v->local, "%s", to);
    snprintf(v->stream_id, sizeof v->stream_id, "%s", c->stream_id);
    snprintf(v->key, sizeof v->key, "%s", key);
    c->checks++;
    clog_debug(c, "asking %s whether the dialback key is its own", from);
    out_send_verifies(o);
    return 0;
}

/* A receiving server asks whether a key we sent as originating server is ours. */
static int in_db_verify(struct s2s_conn *c, struct xml_node *st)
{
    char from[DOMAIN_SIZE], to[DOMAIN_SIZE];
    const char *id = xml_attr_get(st, "id");
    const char *key = xml_text(st);
    if (prep_domain(xml_attr_get(st, "from"), from) < 0 ||
        prep_domain(xml_attr_get(st, "to"), to) < 0 || !id) {
        conn_close(c, STANZA_STREAM_IMPROPER_ADDRESSING, "db:verify needs from, to and id");
        return -1;
    }
    if (!is_ours(c->s, to)) {
        /* Not even guest.DOMAIN answers: it has no keys and no s2s. */
        conn_close(c, STANZA_STREAM_HOST_UNKNOWN, "db:verify for a domain we do not serve");
        return -1;
    }
    bool valid = false;
    char want[S2S_DIALBACK_KEY_SIZE];
    if (key &&
        s2s_dialback_key(c->s->secret, sizeof c->s->secret, from, to, id, want) == 0 &&
        strlen(key) == strlen(want) && sodium_memcmp(key, want, strlen(want)) == 0)
        valid = true;
    clog_info(c, "db:verify from %s for %s: %s", from, to, valid ? "valid" : "invalid");
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "<db:verify from='");
    xml_escape_attr(&b, to, strlen(to));
    buf_append_str(&b, "' to='");
    xml_escape_attr(&b, from, strlen(from));
    buf_append_str(&b, "' id='");
    xml_escape_attr(&b, id, strlen(id));
    buf_printf(&b, "' type='%s'/>", valid ? "valid" : "invalid");
    conn_write_buf(c, &b);
    return 0;
}

/* A stanza from the peer, for us. */
static int in_route(struct s2s_conn *c, struct xml_node *st)
{
    struct jid from = {0}, to = {0};
    int rf = stanza_jid(st, "from", &from);
    int rt = stanza_jid(st, "to", &to);
    if (rf == -ENOENT || rt == -ENOENT) {
        jid_free(&from);
        jid_free(&to);
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_IMPROPER_ADDRESSING, "stanzas need from and to");
        return -1;
    }
    if (rf < 0 || rt < 0) {
        /* A malformed address: answer the stanza, keep the stream. */
        jid_free(&from);
        jid_free(&to);
        if (rf < 0) {
            xml_node_free(st);
            conn_close(c, STANZA_STREAM_INVALID_FROM, NULL);
            return -1;
        }
        xml_node_free(st);
        return 0;
    }
    if (!is_ours(c->s, to.domain)) {
        clog_info(c, "stanza to %s, which we do not serve here", to.domain);
        jid_free(&from);
        jid_free(&to);
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_HOST_UNKNOWN, NULL);
        return -1;
    }
    if (!in_pair_ok(c, from.domain, to.domain)) {
        clog_info(c, "stanza from %s to %s, not authenticated on this stream", from.domain,
                  to.domain);
        jid_free(&from);
        jid_free(&to);
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_INVALID_FROM, NULL);
        return -1;
    }
    if (stanza_kind(st) == STANZA_PRESENCE && from.local && from.resource) {
        /* Who is here from that server (a room occupant, a directed
         * presence), for when it dies: see struct seen. */
        enum stanza_type t = stanza_type(st);
        if (t == STANZA_TYPE_NONE || t == STANZA_TYPE_UNAVAILABLE) {
            char *f = jid_to_string(&from, false), *b = jid_to_string(&to, true);
            if (f && b)
                seen_update(c->s, from.domain, f, b, t == STANZA_TYPE_NONE);
            free(f);
            free(b);
        }
    }
    jid_free(&from);
    jid_free(&to);
    if (stanza_set_content_ns(st, XMPP_NS_SERVER, XMPP_NS_CLIENT) < 0) {
        xml_node_free(st);
        return 0;
    }
    xmpp_route(c->s->srv, st);
    return 0;
}

static int in_stanza(struct s2s_conn *c, struct xml_node *st)
{
    const char *ns = st->ns, *name = st->name;
    if (!c->tls_on) {
        if (strcmp(ns, XMPP_NS_TLS) == 0 && strcmp(name, "starttls") == 0) {
            xml_node_free(st);
            char proceed[96];
            snprintf(proceed, sizeof proceed, "<proceed xmlns='%s'/>", XMPP_NS_TLS);
            conn_write_str(c, proceed);
            c->pending = PEND_STARTTLS;
            return XML_STREAM_PAUSE;
        }
        clog_info(c, "<%s/> before STARTTLS: plaintext federation is refused", name);
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_POLICY_VIOLATION, "STARTTLS is required");
        return -1;
    }
    int rc = 0;
    if (strcmp(ns, XMPP_NS_SASL) == 0 && strcmp(name, "auth") == 0) {
        rc = in_sasl_auth(c, st);
    } else if (strcmp(ns, XMPP_NS_DIALBACK) == 0 && strcmp(name, "result") == 0) {
        rc = in_db_result(c, st);
    } else if (strcmp(ns, XMPP_NS_DIALBACK) == 0 && strcmp(name, "verify") == 0) {
        rc = in_db_verify(c, st);
    } else if (stanza_kind(st) != STANZA_OTHER && strcmp(ns, XMPP_NS_SERVER) == 0) {
        c->last_stanza = now_ms(c->s);
        return in_route(c, st);
    } else if (strcmp(ns, XMPP_NS_STREAMS) == 0 && strcmp(name, "error") == 0) {
        struct xml_node *cond = xml_first_element(st);
        clog_info(c, "stream error from the peer: %s", cond ? cond->name : "?");
        /* system-shutdown above all: the server is going away. */
        c->died = true;
        xml_node_free(st);
        conn_close(c, -1, NULL);
        return -1;
    } else if (strcmp(ns, XMPP_NS_TLS) == 0) {
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_POLICY_VIOLATION, "TLS is already on");
        return -1;
    } else {
        clog_info(c, "unsupported element <%s xmlns='%s'/>", name, ns);
        xml_node_free(st);
        conn_close(c, STANZA_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
        return -1;
    }
    xml_node_free(st);
    return rc;
}

/* ---- outgoing ---------------------------------------------------------- */

static void out_send_verifies(struct s2s_conn *c)
{
    if (!c->features_tls || c->closing)
        return;
    for (size_t i = 0; i < c->nverifies; i++) {
        struct verify_req *v = &c->verifies[i];
        if (v->sent)
            continue;
        v->sent = true;
        struct buf b;
        buf_init(&b, 0);
        buf_append_str(&b, "<db:verify from='");
        xml_escape_attr(&b, v->local, strlen(v->local));
        buf_append_str(&b, "' to='");
        xml_escape_attr(&b, v->remote, strlen(v->remote));
        buf_append_str(&b, "' id='");
        xml_escape_attr(&b, v->stream_id, strlen(v->stream_id));
        buf_append_str(&b, "'>");
        xml_escape_text(&b, v->key, strlen(v->key));
        buf_append_str(&b, "</db:verify>");
        if (conn_write_buf(c, &b) < 0)
            return;
    }
}

static int write_stanza(struct s2s_conn *c, struct xml_node *st)
{
    struct buf b;
    buf_init(&b, 0);
    int rc = stanza_set_content_ns(st, XMPP_NS_CLIENT, XMPP_NS_SERVER);
    if (rc == 0)
        rc = stanza_write(&b, STANZA_FRAMING_TCP, XMPP_NS_SERVER, st);
    xml_node_free(st);
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    c->last_stanza = now_ms(c->s);
    return conn_write_buf(c, &b);
}

static void out_ready(struct s2s_conn *c)
{
    c->state = OUT_READY;
    c->authed = true;
    clog_info(c, "ready, %zu stanzas queued", c->qlen);
    out_flush(c);
}

static void out_flush(struct s2s_conn *c)
{
    struct xml_node **q = c->queue;
    size_t n = c->qlen;
    c->queue = NULL;
    c->s->qbytes -= c->qbytes;
    c->qlen = c->qcap = c->qbytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->closing)
            xml_node_free(q[i]);
        else
            write_stanza(c, q[i]);
    }
    free(q);
}

static void out_features(struct s2s_conn *c, struct xml_node *f)
{
    const struct config *cfg = c->s->cfg;
    if (!c->tls_on) {
        if (!xml_child(f, "starttls", XMPP_NS_TLS)) {
            conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND,
                      "the peer does not offer STARTTLS, and we require it");
            return;
        }
        char req[96];
        snprintf(req, sizeof req, "<starttls xmlns='%s'/>", XMPP_NS_TLS);
        conn_write_str(c, req);
        c->state = OUT_STARTTLS;
        return;
    }
    if (c->state == OUT_SASL) {
        /* Features of the stream restarted after SASL success. */
        out_ready(c);
        return;
    }
    c->features_tls = true;
    out_send_verifies(c);
    if (c->closing)
        return;
    bool verified = tls_conn_peer_verified(c->tls, c->remote);
    if (cfg->xmpp.s2s_secure_auth && !verified) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND,
                  "its certificate does not validate (s2s_secure_auth)");
        return;
    }
    struct xml_node *mechs = xml_child(f, "mechanisms", XMPP_NS_SASL);
    bool external = false;
    for (struct xml_node *m = mechs ? xml_child(mechs, "mechanism", XMPP_NS_SASL) : NULL; m;
         m = xml_child_next(m, "mechanism", XMPP_NS_SASL)) {
        const char *t = xml_text(m);
        if (t && strcmp(t, "EXTERNAL") == 0)
            external = true;
    }
    if (external) {
        char b64[sodium_base64_ENCODED_LEN(DOMAIN_SIZE, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)c->local, strlen(c->local),
                          sodium_base64_VARIANT_ORIGINAL);
        struct buf b;
        buf_init(&b, 0);
        buf_printf(&b, "<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>", XMPP_NS_SASL, b64);
        c->state = OUT_SASL;
        clog_debug(c, "authenticating with SASL EXTERNAL");
        conn_write_buf(c, &b);
        return;
    }
    /* Dialback, whether or not the peer advertised the feature: servers
     * from before XEP-0220 2.0 do it without saying so. */
    char key[S2S_DIALBACK_KEY_SIZE];
    if (!c->stream_id[0] ||
        s2s_dialback_key(c->s->secret, sizeof c->s->secret, c->remote, c->local, c->stream_id,
                         key) < 0) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "no stream id for dialback");
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "<db:result from='");
    xml_escape_attr(&b, c->local, strlen(c->local));
    buf_append_str(&b, "' to='");
    xml_escape_attr(&b, c->remote, strlen(c->remote));
    buf_printf(&b, "'>%s</db:result>", key);
    c->state = OUT_DIALBACK;
    clog_debug(c, "authenticating with dialback");
    conn_write_buf(c, &b);
}

static void out_db_verify_answer(struct s2s_conn *c, struct xml_node *st)
{
    const char *id = xml_attr_get(st, "id");
    const char *type = xml_attr_get(st, "type");
    char from[DOMAIN_SIZE], to[DOMAIN_SIZE];
    if (!id || prep_domain(xml_attr_get(st, "from"), from) < 0 ||
        prep_domain(xml_attr_get(st, "to"), to) < 0)
        return;
    for (size_t i = 0; i < c->nverifies; i++) {
        struct verify_req *v = &c->verifies[i];
        if (!v->sent || strcmp(v->stream_id, id) != 0 || strcmp(v->remote, from) != 0 ||
            strcmp(v->local, to) != 0)
            continue;
        struct verify_req done = *v;
        memmove(v, v + 1, (c->nverifies - i - 1) * sizeof(*v));
        c->nverifies--;
        in_verify_answer(c->s, done.in_id, done.remote, done.local,
                         type && strcmp(type, "valid") == 0);
        return;
    }
    clog_info(c, "db:verify answer for an unknown request (id %s)", id);
}

static int out_stanza(struct s2s_conn *c, struct xml_node *st)
{
    const char *ns = st->ns, *name = st->name;
    if (strcmp(ns, XMPP_NS_STREAMS) == 0 && strcmp(name, "features") == 0) {
        out_features(c, st);
    } else if (strcmp(ns, XMPP_NS_TLS) == 0 && strcmp(name, "proceed") == 0 &&
               c->state == OUT_STARTTLS) {
        xml_node_free(st);
        c->pending = PEND_STARTTLS;
        return XML_STREAM_PAUSE;
    } else if (strcmp(ns, XMPP_NS_TLS) == 0) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "STARTTLS failed");
    } else if (strcmp(ns, XMPP_NS_SASL) == 0 && strcmp(name, "success") == 0 &&
               c->state == OUT_SASL) {
        clog_info(c, "authenticated by SASL EXTERNAL");
        xml_node_free(st);
        c->pending = PEND_RESET;
        return XML_STREAM_PAUSE;
    } else if (strcmp(ns, XMPP_NS_SASL) == 0 && strcmp(name, "failure") == 0) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "SASL EXTERNAL refused");
    } else if (strcmp(ns, XMPP_NS_DIALBACK) == 0 && strcmp(name, "result") == 0 &&
               c->state == OUT_DIALBACK) {
        const char *type = xml_attr_get(st, "type");
        if (type && strcmp(type, "valid") == 0) {
            clog_info(c, "authenticated by dialback");
            out_ready(c);
        } else {
            conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "dialback refused");
        }
    } else if (strcmp(ns, XMPP_NS_DIALBACK) == 0 && strcmp(name, "verify") == 0) {
        out_db_verify_answer(c, st);
    } else if (strcmp(ns, XMPP_NS_STREAMS) == 0 && strcmp(name, "error") == 0) {
        struct xml_node *cond = xml_first_element(st);
        clog_info(c, "stream error from the peer: %s", cond ? cond->name : "?");
        c->fail_cond = STANZA_COND_REMOTE_SERVER_NOT_FOUND;
        xml_node_free(st);
        conn_close(c, -2, NULL);
        return -1;
    } else {
        /* No bidirectional streams (XEP-0288): nothing else belongs here. */
        clog_debug(c, "ignoring <%s xmlns='%s'/> on an outgoing stream", name, ns);
    }
    xml_node_free(st);
    return c->closing ? -1 : 0;
}

/* ---- parser callbacks -------------------------------------------------- */

static int on_open(void *ud, const struct xml_open *open)
{
    struct s2s_conn *c = ud;
    if (c->dir == DIR_IN)
        return in_open(c, open) < 0 ? -1 : 0;
    if (!open->content_ns || strcmp(open->content_ns, XMPP_NS_SERVER) != 0) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "stream namespace is not jabber:server");
        return -1;
    }
    if (open->id && strlen(open->id) < sizeof c->stream_id)
        snprintf(c->stream_id, sizeof c->stream_id, "%s", open->id);
    else
        c->stream_id[0] = '\0';
    return 0;
}

static int on_stanza(void *ud, struct xml_node *st)
{
    struct s2s_conn *c = ud;
    if (c->closing) {
        xml_node_free(st);
        return -1;
    }
    return c->dir == DIR_IN ? in_stanza(c, st) : out_stanza(c, st);
}

static int on_close(void *ud)
{
    struct s2s_conn *c = ud;
    clog_debug(c, "the peer closed the stream");
    if (c->dir == DIR_OUT && !c->authed)
        c->fail_cond = STANZA_COND_REMOTE_SERVER_NOT_FOUND;
    conn_close(c, -1, NULL);
    return -1;
}

/* ---- sockets ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char slab[64 * 1024];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct s2s_conn *c = st->data;
    if (n == 0 || c->closing)
        return;
    if (n < 0) {
        /* Without </stream:stream>: the peer died, or its network did. */
        clog_info(c, "connection lost: %s", uv_strerror((int)n));
        if (c->dir == DIR_OUT && !c->authed)
            c->fail_cond = STANZA_COND_REMOTE_SERVER_NOT_FOUND;
        c->died = true;
        conn_close(c, -2, NULL);
        return;
    }
    if (c->tls_on) {
        int rc = tls_conn_feed(c->tls, b->base, (size_t)n);
        if (rc < 0 && !c->closing) {
            clog_info(c, "TLS failed: %s", tls_conn_error(c->tls));
            c->died = true;
            c->fail_cond = STANZA_COND_REMOTE_SERVER_NOT_FOUND;
            conn_close(c, -2, NULL);
        }
        return;
    }
    conn_feed(c, b->base, (size_t)n);
}

static void on_tick(uv_timer_t *t)
{
    struct s2s_conn *c = t->data;
    struct s2s *s = c->s;
    if (c->closing)
        return;
    uint64_t now = now_ms(s);
    const struct config *cfg = s->cfg;
    if (c->fail_soon) {
        conn_fail(c, c->fail_cond ? c->fail_cond : STANZA_COND_REMOTE_SERVER_NOT_FOUND, NULL);
        return;
    }
    if (c->dns_wait)
        dns_kick(s); /* cancelled lookups free their slots without telling us */
    bool authed = c->dir == DIR_OUT ? c->authed : (c->ext_domain[0] || c->npairs);
    if (c->dir == DIR_OUT && !authed && now - c->started > NEGOTIATE_MS) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_TIMEOUT, "timed out before it was ready");
        return;
    }
    if (c->dir == DIR_IN && !authed && c->checks == 0 && now - c->started > NEGOTIATE_MS) {
        clog_info(c, "not authenticated in time");
        conn_close(c, STANZA_STREAM_CONNECTION_TIMEOUT, NULL);
        return;
    }
    if (c->dir == DIR_IN && now - c->last_read > cfg->xmpp.idle_timeout_ms) {
        clog_info(c, "silent for too long");
        conn_close(c, STANZA_STREAM_CONNECTION_TIMEOUT, NULL);
        return;
    }
    if (c->dir == DIR_OUT && authed && c->nverifies == 0 &&
        now - c->last_stanza > cfg->xmpp.idle_timeout_ms) {
        clog_debug(c, "idle, closing");
        conn_close(c, -1, NULL);
        return;
    }
    if (c->header_sent && c->connected && now - c->last_write >= cfg->xmpp.keepalive_ms)
        conn_write(c, " ", 1);
}

static struct s2s_conn *conn_new(struct s2s *s, enum conn_dir dir)
{
    struct s2s_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->s = s;
    c->dir = dir;
    c->id = ++s->next_id;
    c->xs = xml_stream_new(XML_MODE_STREAM, NULL, &parser_cb, c);
    if (!c->xs) {
        free(c);
        return NULL;
    }
    snprintf(c->peer, sizeof c->peer, "?");
    c->started = c->last_read = c->last_write = c->last_stanza = now_ms(s);
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    uint64_t tick = s->cfg->xmpp.keepalive_ms < TICK_MS ? s->cfg->xmpp.keepalive_ms : TICK_MS;
    uv_timer_start(&c->timer, on_tick, tick, tick);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (dir == DIR_IN)
        s->nin++;
    else
        s->nout++;
    return c;
}

static void out_try_connect(struct s2s_conn *c);

static void on_retry_closed(uv_handle_t *h)
{
    struct s2s_conn *c = h->data;
    c->tcp_open = false;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    out_try_connect(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct s2s_conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        clog_info(c, "connect failed: %s", uv_strerror(status));
        uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
        return;
    }
    c->connected = true;
    net_peer_name(&c->tcp, c->peer, sizeof c->peer);
    clog_debug(c, "connected");
    c->state = OUT_STREAM;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    send_header(c);
}

static void out_try_connect(struct s2s_conn *c)
{
    if (c->next_addr >= c->naddrs) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "no address could be reached");
        return;
    }
    struct s2s_addr *a = &c->addrs[c->next_addr++];
    uv_tcp_init(c->s->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->connect_req.data = c;
    c->state = OUT_CONNECTING;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&a->sa, on_connect);
    if (rc < 0) {
        clog_info(c, "connect: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
    }
}

static void on_resolved(void *ud, int status, const struct s2s_addr *addrs, size_t n)
{
    struct s2s_conn *c = ud;
    c->dnsq = NULL;
    dns_kick(c->s); /* this lookup is counted out already */
    if (c->closing)
        return;
    if (n == 0) {
        conn_fail(c, STANZA_COND_REMOTE_SERVER_NOT_FOUND, "no address found in DNS");
        return;
    }
    (void)status;
    memcpy(c->addrs, addrs, n * sizeof(*addrs));
    c->naddrs = n;
    c->next_addr = 0;
    out_try_connect(c);
}

static bool dns_ready(struct s2s *s)
{
    if (!s->dns && !s->shutting_down) {
        s->dns = s2s_dns_new(s->loop);
        s->dns_open = s->dns != NULL;
    }
    return s->dns != NULL;
}

/* Start c's lookup, or leave it waiting while DNS_INFLIGHT_MAX run. */
static void out_resolve(struct s2s_conn *c)
{
    struct s2s *s = c->s;
    if (s2s_dns_pending(s->dns) >= DNS_INFLIGHT_MAX) {
        if (!c->dns_wait)
            clog_debug(c, "waiting for a DNS slot (%d lookups running)", DNS_INFLIGHT_MAX);
        c->dns_wait = true;
        return;
    }
    c->dns_wait = false;
    const struct s2s_route *r = s2s_routes_find(s->routes, s->nroutes, c->remote);
    if (r)
        clog_debug(c, "static route to %s:%d", r->host, r->port);
    c->dnsq = s2s_dns_lookup(s->dns, c->remote, r ? r->host : NULL, r ? r->port : 0,
                             on_resolved, c);
    if (!c->dnsq) {
        /* Fail from the timer, not from inside the caller. */
        c->fail_soon = true;
        uv_timer_start(&c->timer, on_tick, 0, TICK_MS);
    }
}

/* Start waiting lookups while there is room (oldest streams are at the
 * end of the list). */
static void dns_kick(struct s2s *s)
{
    if (!s->dns || s->shutting_down)
        return;
    struct s2s_conn *last = s->conns;
    while (last && last->next)
        last = last->next;
    for (struct s2s_conn *c = last; c && s2s_dns_pending(s->dns) < DNS_INFLIGHT_MAX;
         c = c->prev)
        if (c->dir == DIR_OUT && c->dns_wait && !c->closing)
            out_resolve(c);
}

/* The outgoing stream for (local, remote), made when missing; NULL with
 * *why (the stanza error for what waits) when none can be had. */
static struct s2s_conn *out_get(struct s2s *s, const char *local, const char *remote,
                               enum stanza_cond *why)
{
    *why = STANZA_COND_REMOTE_SERVER_NOT_FOUND;
    for (struct s2s_conn *c = s->conns; c; c = c->next)
        if (c->dir == DIR_OUT && !c->closing && strcmp(c->local, local) == 0 &&
            strcmp(c->remote, remote) == 0)
            return c;
    if (s->shutting_down)
        return NULL;
    if (s->nout >= OUT_MAX) {
        log_warn("s2s: no stream from %s to %s: %d outgoing streams already", local, remote,
                 OUT_MAX);
        *why = STANZA_COND_RESOURCE_CONSTRAINT;
        return NULL;
    }
    if (!dns_ready(s))
        return NULL;
    struct s2s_conn *c = conn_new(s, DIR_OUT);
    if (!c) {
        *why = STANZA_COND_RESOURCE_CONSTRAINT;
        return NULL;
    }
    snprintf(c->local, sizeof c->local, "%s", local);
    snprintf(c->remote, sizeof c->remote, "%s", remote);
    c->state = OUT_RESOLVING;
    out_resolve(c);
    return c;
}

/* The router's remote hook: a stanza for another domain. */
static void s2s_send(void *ud, struct xml_node *st, const struct jid *to)
{
    struct s2s *s = ud;
    struct jid from = {0};
    if (stanza_jid(st, "from", &from) < 0 || !is_ours(s, from.domain)) {
        /* guest.DOMAIN above all: guests never federate. */
        log_warn("s2s: refusing to send a stanza from '%s' to %s",
                 from.domain ? from.domain : "", to->domain);
        jid_free(&from);
        xmpp_route_error(s->srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (is_ours(s, to->domain) ||
        strcmp(to->domain, xmpp_server_guest_domain(s->srv)) == 0) {
        jid_free(&from);
        xmpp_route_error(s->srv, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
        return;
    }
    enum stanza_cond held = recent_failure(s, to->domain);
    if (held != STANZA_COND_COUNT) {
        jid_free(&from);
        xmpp_route_error(s->srv, st, held, NULL);
        return;
    }
    enum stanza_cond why;
    struct s2s_conn *c = out_get(s, from.domain, to->domain, &why);
    jid_free(&from);
    if (!c) {
        xmpp_route_error(s->srv, st, (int)why, NULL);
        return;
    }
    if (c->state == OUT_READY) {
        write_stanza(c, st);
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    stanza_write(&b, STANZA_FRAMING_TCP, XMPP_NS_CLIENT, st);
    size_t size = b.len;
    buf_free(&b);
    if (c->qlen >= QUEUE_MAX || c->qbytes + size > QUEUE_BYTES ||
        s->qbytes + size > QUEUE_TOTAL_BYTES) {
        clog_info(c, "queue full (%zu stanzas, %zu bytes; %zu bytes for all servers)", c->qlen,
                  c->qbytes, s->qbytes);
        xmpp_route_error(s->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, "too much waiting for this server");
        return;
    }
    if (c->qlen == c->qcap) {
        size_t cap = c->qcap ? c->qcap * 2 : 16;
        struct xml_node **q = realloc(c->queue, cap * sizeof(*q));
        if (!q) {
            xmpp_route_error(s->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
            return;
        }
        c->queue = q;
        c->qcap = cap;
    }
    c->queue[c->qlen++] = st;
    c->qbytes += size;
    s->qbytes += size;
}

/* ---- listener ---------------------------------------------------------- */

/* Bytes of "IP:PORT" (or "[V6]:PORT") that are the address. */
static size_t peer_ip_len(const char *peer)
{
    const char *colon = strrchr(peer, ':');
    return colon ? (size_t)(colon - peer) : strlen(peer);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct s2s *s = server->data;
    if (status < 0 || s->shutting_down)
        return;
    /* xmpp.max_connections counts every XMPP stream, c2s included, as the
     * c2s listener does; IN_MAX bounds servers on their own. */
    struct xmpp_stats st;
    xmpp_server_stats(s->srv, &st);
    size_t total = st.c2s + st.websocket + st.s2s_in + st.s2s_out;
    bool full = s->nin >= IN_MAX || (s->cfg->xmpp.max_connections > 0 &&
                                     total >= (size_t)s->cfg->xmpp.max_connections);
    struct s2s_conn *c = full ? NULL : conn_new(s, DIR_IN);
    if (!c) {
        uv_tcp_t *tmp = malloc(sizeof(*tmp));
        if (tmp) {
            uv_tcp_init(s->loop, tmp);
            if (uv_accept(server, (uv_stream_t *)tmp) == 0) {
                char peer[64];
                net_peer_name(tmp, peer, sizeof peer);
                if (full)
                    log_warn("s2s in %s: connection refused: %zu incoming, %zu XMPP streams "
                             "(limits %d, xmpp.max_connections %d)",
                             peer, s->nin, total, IN_MAX, s->cfg->xmpp.max_connections);
                else
                    log_warn("s2s in %s: out of memory, dropping the connection", peer);
            }
            uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
        }
        return;
    }
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, -2, NULL);
        return;
    }
    c->connected = true;
    net_peer_name(&c->tcp, c->peer, sizeof c->peer);
    /* One address may not take every slot (each stream may ask for
     * PAIRS_MAX outgoing streams). */
    size_t iplen = peer_ip_len(c->peer), same = 0;
    for (struct s2s_conn *o = s->conns; o; o = o->next)
        if (o != c && o->dir == DIR_IN && !o->closing && peer_ip_len(o->peer) == iplen &&
            memcmp(o->peer, c->peer, iplen) == 0)
            same++;
    if (same >= IN_PER_IP_MAX) {
        clog_warn(c, "connection refused: %zu streams from this address already", same);
        conn_close(c, -2, NULL);
        return;
    }
    clog_debug(c, "accepted");
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- API --------------------------------------------------------------- */

struct s2s *s2s_new(struct xmpp_server *srv)
{
    struct s2s *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->srv = srv;
    s->loop = xmpp_server_loop(srv);
    s->cfg = xmpp_server_config(srv);
    if (sodium_init() < 0) {
        free(s);
        return NULL;
    }
    randombytes_buf(s->secret, sizeof s->secret);
    if (s2s_routes_parse(s->cfg->xmpp.s2s_routes, s->routes, S2S_ROUTES_MAX, &s->nroutes,
                         s->routes_err, sizeof s->routes_err) < 0)
        s->nroutes = 0;
    xmpp_server_set_remote(srv, s2s_send, s);
    return s;
}

int s2s_listen(struct s2s *s, const char *addr, char *err, size_t errlen)
{
    if (s->routes_err[0]) {
        snprintf(err, errlen, "%s", s->routes_err);
        return -EINVAL;
    }
    s->listener = malloc(sizeof(*s->listener));
    if (!s->listener) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = net_tcp_listen(s->loop, s->listener, addr, 128, on_accept, &s->port, err, errlen);
    if (rc < 0) {
        /* net_tcp_listen closes the handle; its memory must outlive the
         * close, so it is left to the process exit (startup failed). */
        s->listener = NULL;
        return rc;
    }
    s->listener->data = s;
    s->listening = true;
    /* c-ares reads resolv.conf and hosts: now, not on the loop later. */
    dns_ready(s);
    log_info("s2s: listening on %s (port %d)%s", addr, s->port,
             s->nroutes ? ", with static routes" : "");
    return 0;
}

int s2s_port(const struct s2s *s)
{
    return s->port;
}

static void check_shutdown_done(struct s2s *s)
{
    if (!s->shutting_down || s->conns || s->listening || s->dns_open || !s->shutdown_cb)
        return;
    void (*cb)(void *) = s->shutdown_cb;
    s->shutdown_cb = NULL;
    cb(s->shutdown_arg);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct s2s *s = h->data;
    free(h);
    s->listener = NULL;
    s->listening = false;
    check_shutdown_done(s);
}

static void on_dns_closed(void *arg)
{
    struct s2s *s = arg;
    s->dns = NULL;
    s->dns_open = false;
    check_shutdown_done(s);
}

void s2s_shutdown(struct s2s *s, void (*cb)(void *arg), void *arg)
{
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    s->shutdown_cb = cb;
    s->shutdown_arg = arg;
    for (struct s2s_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c, STANZA_STREAM_SYSTEM_SHUTDOWN, NULL);
    }
    if (s->listening && s->listener)
        uv_close((uv_handle_t *)s->listener, on_listener_closed);
    if (s->dns)
        s2s_dns_close(s->dns, on_dns_closed, s);
    /* Keep s->listening until the close callback; check now for the case
     * where nothing was open. */
    check_shutdown_done(s);
}

void s2s_free(struct s2s *s)
{
    if (!s)
        return;
    seen_free(s);
    /* After s2s_shutdown finished, nothing is left. Without it (startup
     * failed before anything was opened) there is nothing either. */
    free(s);
}

void s2s_counts(const struct s2s *s, size_t *in, size_t *out)
{
    if (in)
        *in = s ? s->nin : 0;
    if (out)
        *out = s ? s->nout : 0;
}
