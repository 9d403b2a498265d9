/*
 * Finding a federation peer, asynchronously, with c-ares on the libuv loop.
 *
 * RFC 6120 3.2: look up SRV _xmpp-server._tcp.DOMAIN; when it has records,
 * try their targets by priority (each resolved to A/AAAA); when it has none
 * (or the lookup fails), fall back to DOMAIN's A/AAAA records on port 5269.
 * A single "." target means the domain offers no service. A static route
 * (xmpp.s2s_routes) skips SRV and resolves just its host.
 *
 * c-ares does the DNS; libuv watches its sockets. c-ares tells us which
 * sockets it wants watched through its socket-state callback: each gets a
 * uv_poll_t, and a timer drives c-ares's retransmissions. A lookup's caller
 * may go away before the answer comes (a stream closed): s2s_dns_cancel
 * only forgets the callback, and the query frees itself when c-ares is done
 * with it. s2s_dns_pending counts the queries not yet done, cancelled ones
 * included, so that s2s.c can bound how many run at once.
 */
#include "chat/s2s.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <uv.h>

#include "core/log.h"

#define SRV_TARGETS_MAX 8

struct dns_sock {
    uv_poll_t poll;
    ares_socket_t fd;
    struct s2s_dns *d;
    struct dns_sock *next;
};

struct s2s_dns {
    uv_loop_t *loop;
    ares_channel ch;
    bool ch_ok;
    uv_timer_t timer;
    struct dns_sock *socks;
    int open_handles;
    bool closing;
    size_t live; /* queries not yet freed, cancelled ones included */
    struct s2s_dns_query *ready; /* finished before lookup returned */
    void (*done)(void *arg);
    void *done_arg;
};

struct srv_target {
    char host[256];
    int port;
    int priority;
};

struct s2s_dns_query {
    struct s2s_dns *d;
    s2s_dns_cb cb;
    void *ud;
    char domain[256];
    struct srv_target targets[SRV_TARGETS_MAX];
    size_t ntargets, next_target;
    int port; /* for the fallback or the route */
    struct s2s_addr addrs[S2S_DNS_MAX];
    size_t n;
    int status;
    bool starting; /* inside s2s_dns_lookup */
    struct s2s_dns_query *next; /* on d->ready */
};

static void handle_closed(uv_handle_t *h)
{
    struct s2s_dns *d;
    if (h->type == UV_POLL) {
        struct dns_sock *s = h->data;
        d = s->d;
        free(s);
    } else {
        d = h->data;
    }
    if (--d->open_handles == 0 && d->closing) {
        void (*done)(void *) = d->done;
        void *arg = d->done_arg;
        free(d);
        if (done)
            done(arg);
    }
}

static void on_timer(uv_timer_t *t);

static void rearm(struct s2s_dns *d)
{
    if (d->closing || !d->ch_ok)
        return;
    struct timeval max = {.tv_sec = 5, .tv_usec = 0}, tv;
    struct timeval *t = ares_timeout(d->ch, &max, &tv);
    uint64_t ms = (uint64_t)t->tv_sec * 1000 + (uint64_t)t->tv_usec / 1000;
    uv_timer_start(&d->timer, on_timer, ms ? ms : 1, 0);
}

/* Deliver answers that were ready while s2s_dns_lookup was still running
 * (literal addresses, /etc/hosts): callers get them from the loop. */
static void deliver_ready(struct s2s_dns *d)
{
    while (d->ready) {
        struct s2s_dns_query *q = d->ready;
        d->ready = q->next;
        d->live--;
        if (q->cb)
            q->cb(q->ud, q->n ? 0 : q->status, q->addrs, q->n);
        free(q);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct s2s_dns *d = t->data;
    deliver_ready(d);
    if (d->ch_ok)
        ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    deliver_ready(d);
    if (d->socks)
        rearm(d);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct dns_sock *s = p->data;
    struct s2s_dns *d = s->d;
    ares_socket_t fd = s->fd;
    if (status < 0)
        ares_process_fd(d->ch, fd, fd);
    else
        ares_process_fd(d->ch, (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
                        (events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
    rearm(d);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct s2s_dns *d = data;
    struct dns_sock **pp = &d->socks, *s;
    while ((s = *pp) && s->fd != fd)
        pp = &s->next;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, handle_closed);
        }
        return;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return;
        if (uv_poll_init_socket(d->loop, &s->poll, fd) < 0) {
            free(s);
            return;
        }
        s->fd = fd;
        s->d = d;
        s->poll.data = s;
        /* handle_closed finds d through data; on_poll through s. */
        s->next = d->socks;
        d->socks = s;
        d->open_handles++;
    }
    s->poll.data = s;
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

struct s2s_dns *s2s_dns_new(struct uv_loop_s *loop)
{
    static bool lib_ok;
    if (!lib_ok) {
        if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
            return NULL;
        lib_ok = true;
    }
    struct s2s_dns *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->loop = loop;
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    o.timeout = 3000;
    o.tries = 2;
    int rc = ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        log_warn("s2s dns: c-ares: %s; federation will use static routes only", ares_strerror(rc));
    } else {
        d->ch_ok = true;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->open_handles = 1;
    return d;
}

static void finish(struct s2s_dns_query *q, int status)
{
    q->status = status;
    if (q->starting || q->d->closing) {
        /* Not from inside s2s_dns_lookup, and not while c-ares is being
         * destroyed: later, from the timer (or never, when closing). */
        if (q->d->closing) {
            q->d->live--;
            free(q);
            return;
        }
        q->next = q->d->ready;
        q->d->ready = q;
        uv_timer_start(&q->d->timer, on_timer, 0, 0);
        return;
    }
    /* Counted out before the callback, which may start the next lookup. */
    q->d->live--;
    if (q->cb)
        q->cb(q->ud, q->n ? 0 : status, q->addrs, q->n);
    free(q);
}

static void resolve_next(struct s2s_dns_query *q);

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct s2s_dns_query *q = arg;
    (void)timeouts;
    if (status == ARES_SUCCESS && res) {
        /* IPv4 before IPv6 would be a policy; c-ares already sorts per RFC 6724. */
        for (struct ares_addrinfo_node *n = res->nodes; n && q->n < S2S_DNS_MAX; n = n->ai_next) {
            if (n->ai_family != AF_INET && n->ai_family != AF_INET6)
                continue;
            if (n->ai_addrlen > sizeof(q->addrs[0].sa))
                continue;
            struct s2s_addr *a = &q->addrs[q->n];
            memset(a, 0, sizeof(*a));
            memcpy(&a->sa, n->ai_addr, n->ai_addrlen);
            a->len = n->ai_addrlen;
            bool dup = false;
            for (size_t i = 0; i < q->n; i++)
                if (q->addrs[i].len == a->len && memcmp(&q->addrs[i].sa, &a->sa, a->len) == 0)
                    dup = true;
            if (!dup)
                q->n++;
        }
    }
    if (res)
        ares_freeaddrinfo(res);
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        finish(q, -ECANCELED);
        return;
    }
    resolve_next(q);
}

static void set_port(struct s2s_addr *a, int port)
{
    if (a->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = htons((uint16_t)port);
    else if (a->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons((uint16_t)port);
}

static void getaddrinfo_host(struct s2s_dns_query *q, const char *host, int port)
{
    /* A literal address needs no DNS (and works with no resolver at all). */
    struct s2s_addr a;
    memset(&a, 0, sizeof a);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a.len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a.len = sizeof(*v6);
    }
    if (a.len) {
        if (q->n < S2S_DNS_MAX) {
            set_port(&a, port);
            q->addrs[q->n++] = a;
        }
        resolve_next(q);
        return;
    }
    if (!q->d->ch_ok || q->d->closing) {
        resolve_next(q);
        return;
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char svc[8];
    snprintf(svc, sizeof svc, "%d", port);
    hints.ai_flags = ARES_AI_NUMERICSERV;
    ares_getaddrinfo(q->d->ch, host, svc, &hints, on_addrinfo, q);
    rearm(q->d);
}

/* Resolve the next SRV target, the fallback, or finish. */
static void resolve_next(struct s2s_dns_query *q)
{
    if (q->next_target < q->ntargets && q->n < S2S_DNS_MAX) {
        struct srv_target *t = &q->targets[q->next_target++];
        getaddrinfo_host(q, t->host, t->port);
        return;
    }
    finish(q, -EHOSTUNREACH);
}

static int cmp_prio(const void *a, const void *b)
{
    const struct srv_target *x = a, *y = b;
    return x->priority - y->priority;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct s2s_dns_query *q = arg;
    (void)timeouts;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        finish(q, -ECANCELED);
        return;
    }
    struct ares_srv_reply *srv = NULL;
    if (status == ARES_SUCCESS && ares_parse_srv_reply(abuf, alen, &srv) == ARES_SUCCESS) {
        for (struct ares_srv_reply *r = srv; r && q->ntargets < SRV_TARGETS_MAX; r = r->next) {
            if (!r->host || strlen(r->host) >= sizeof q->targets[0].host)
                continue;
            struct srv_target *t = &q->targets[q->ntargets++];
            snprintf(t->host, sizeof t->host, "%s", r->host);
            t->port = r->port;
            t->priority = r->priority;
        }
        ares_free_data(srv);
        if (q->ntargets == 1 && (strcmp(q->targets[0].host, ".") == 0 || q->targets[0].host[0] == '\0')) {
            log_info("s2s dns %s: SRV says no XMPP service here", q->domain);
            finish(q, -EHOSTUNREACH);
            return;
        }
        qsort(q->targets, q->ntargets, sizeof q->targets[0], cmp_prio);
    }
    if (q->ntargets == 0) {
        /* No SRV: the domain itself on the default port (RFC 6120 3.2.2). */
        snprintf(q->targets[0].host, sizeof q->targets[0].host, "%s", q->domain);
        q->targets[0].port = 5269;
        q->ntargets = 1;
    }
    resolve_next(q);
}

struct s2s_dns_query *s2s_dns_lookup(struct s2s_dns *d, const char *domain, const char *host,
                                     int port, s2s_dns_cb cb, void *ud)
{
    if (d->closing || strlen(domain) >= sizeof(((struct s2s_dns_query *)0)->domain))
        return NULL;
    if (host && strlen(host) >= sizeof(((struct srv_target *)0)->host))
        return NULL;
    struct s2s_dns_query *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->d = d;
    d->live++;
    q->cb = cb;
    q->ud = ud;
    q->starting = true;
    snprintf(q->domain, sizeof q->domain, "%s", domain);
    if (host) {
        snprintf(q->targets[0].host, sizeof q->targets[0].host, "%s", host);
        q->targets[0].port = port;
        q->ntargets = 1;
        resolve_next(q);
    } else if (!d->ch_ok) {
        finish(q, -EHOSTUNREACH);
    } else {
        char name[300];
        snprintf(name, sizeof name, "_xmpp-server._tcp.%s", q->domain);
        ares_query(d->ch, name, 1 /* C_IN */, 33 /* T_SRV */, on_srv, q);
        rearm(d);
    }
    /* q may be on d->ready now, still alive until the timer runs. */
    q->starting = false;
    return q;
}

size_t s2s_dns_pending(const struct s2s_dns *d)
{
    return d ? d->live : 0;
}

void s2s_dns_cancel(struct s2s_dns_query *q)
{
    if (q)
        q->cb = NULL;
}

void s2s_dns_close(struct s2s_dns *d, void (*done)(void *arg), void *arg)
{
    d->closing = true;
    d->done = done;
    d->done_arg = arg;
    if (d->ch_ok) {
        ares_destroy(d->ch); /* runs every pending callback with EDESTRUCTION */
        d->ch_ok = false;
    }
    while (d->socks) {
        struct dns_sock *s = d->socks;
        d->socks = s->next;
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, handle_closed);
    }
    while (d->ready) {
        struct s2s_dns_query *q = d->ready;
        d->ready = q->next;
        d->live--;
        free(q);
    }
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, handle_closed);
}
