/*
 * The XMPP server: hosts, the session table and the router. See xmpp.h.
 *
 * How it works. Every stream (c2s over TCP or WebSocket, s2s) stamps and
 * checks the from of what it receives and calls xmpp_route, which looks at
 * the to and hands the stanza to exactly one owner:
 *
 *   to a component host (chat.DOMAIN)  -> that host's handler
 *   to DOMAIN / guest.DOMAIN, no local -> the server itself (server_iq)
 *   to NAME@DOMAIN/RES                 -> that session, or RFC 6121 8.5.3
 *   to NAME@DOMAIN                     -> RFC 6121 8.5.2: its sessions, or
 *                                         the server on the account's behalf
 *   to anything else                   -> the remote hook (s2s), never for
 *                                         guests
 *
 * Sessions are kept in two chained hash tables over the same entries: by
 * full JID (delivery to a resource, conflicts at bind) and by bare JID
 * (messages to an account go to all of its resources). Both grow by doubling
 * so a room with 10,000 guests costs one probe per lookup.
 *
 * Guests (guest.DOMAIN) talk in rooms only: their messages and directed
 * presence to other users' JIDs are refused (private messages between
 * occupants go through the room), and so are their iq requests to users'
 * resources; answers to what an account asked them still pass.
 *
 * Nothing reentrant reaches the callers of delivery. A session never ends
 * from inside its deliver (c2s defers that to a later loop turn), and a
 * session removed while a stanza is being routed has its session-gone
 * notification (the MUC drops the occupant, perhaps the room) queued and
 * run on a later loop turn, from the deferred queue: an idle handle that
 * runs queued xmpp_deferred items one turn later.
 *
 * Threads: everything here runs on the loop thread except the bodies given
 * to xmpp_server_work (worker pool) and xmpp_server_post, which is the one
 * entry point that may be called from any thread: a mutex-protected list
 * drained by a uv_async_t.
 */
#include "chat/xmpp.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/c2s.h"
#include "chat/ns.h"
#include "chat/s2s.h"
#include "chat/stanza.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/tls.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PING "urn:xmpp:ping"
#define NS_ROSTER "jabber:iq:roster"
#define NS_VCARD "vcard-temp"
#define NS_VERSION "jabber:iq:version"

#define HOSTS_MAX 8
#define WATCHERS_MAX 8
#define TABLE_MIN 64

struct sess_entry {
    struct sess_entry *next_full, *next_bare;
    uint32_t hash_full, hash_bare;
    char *full;  /* text form, owns the allocation that bare points into */
    char *bare;
    const struct xmpp_session_ops *ops;
    void *sess;
    struct xmpp_peer peer;
};

struct host {
    char domain[JID_PART_MAX + 1];
    xmpp_host_fn fn;
    void *ud;
};

struct watcher {
    xmpp_gone_fn fn;
    void *ud;
    bool dead; /* removed during a notification: compacted afterwards */
};

/* A session-gone notification waiting for a loop turn outside routing. */
struct gone_item {
    struct xmpp_deferred d;
    struct xmpp_server *srv;
    char jid[];
};

struct post_item {
    struct post_item *next;
    void (*fn)(void *arg);
    void *arg;
};

struct work_req {
    uv_work_t req;
    void (*work)(void *arg);
    void (*done)(void *arg);
    void *arg;
};

struct xmpp_server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct db_pool *db;
    struct xmpp_hooks hooks;
    char domain[JID_PART_MAX + 1];
    char guest_domain[JID_PART_MAX + 1];
    char muc_domain[JID_PART_MAX + 1];
    struct tls_ctx *tls_server, *tls_client, *tls_c2s;

    struct sess_entry **by_full, **by_bare;
    size_t nbuckets, nsessions, nwebsocket;

    struct host hosts[HOSTS_MAX];
    size_t nhosts;
    struct watcher watchers[WATCHERS_MAX];
    size_t nwatchers;
    size_t notifying;   /* inside a notification of the watchers */
    bool watchers_dead; /* some were removed meanwhile: compact */
    xmpp_remote_fn remote;
    void *remote_ud;
    unsigned route_depth; /* inside xmpp_route or a delivery */

    uv_idle_t idle;     /* runs the deferred queue */
    struct xmpp_deferred *defer_head, *defer_tail;
    size_t ndeferred;
    bool idle_open, idle_closing, freeing;

    uv_async_t async;
    pthread_mutex_t post_lock;
    struct post_item *post_head, *post_tail;
    bool async_open, async_closing;

    struct c2s_listener *c2s;
    struct s2s *s2s;
    void (*shutdown_cb)(struct xmpp_server *, void *);
    void *shutdown_arg;
    bool shutting_down;
    bool free_pending; /* xmpp_server_free called while the async was closing */

    uint64_t stanzas_in, stanzas_out;
};

/* ---- hashing -------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static uint32_t hash_str_n(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static int table_grow(struct xmpp_server *srv)
{
    size_t n = srv->nbuckets ? srv->nbuckets * 2 : TABLE_MIN;
    struct sess_entry **full = calloc(n, sizeof *full), **bare = calloc(n, sizeof *bare);
    if (!full || !bare) {
        free(full);
        free(bare);
        return -ENOMEM;
    }
    for (size_t i = 0; i < srv->nbuckets; i++) {
        struct sess_entry *e = srv->by_full[i], *next;
        for (; e; e = next) {
            next = e->next_full;
            e->next_full = full[e->hash_full & (n - 1)];
            full[e->hash_full & (n - 1)] = e;
        }
        for (e = srv->by_bare[i]; e; e = next) {
            next = e->next_bare;
            e->next_bare = bare[e->hash_bare & (n - 1)];
            bare[e->hash_bare & (n - 1)] = e;
        }
    }
    free(srv->by_full);
    free(srv->by_bare);
    srv->by_full = full;
    srv->by_bare = bare;
    srv->nbuckets = n;
    return 0;
}

static struct sess_entry *find_full(const struct xmpp_server *srv, const char *full)
{
    if (!srv->nbuckets)
        return NULL;
    uint32_t h = hash_str(full);
    for (struct sess_entry *e = srv->by_full[h & (srv->nbuckets - 1)]; e; e = e->next_full)
        if (e->hash_full == h && strcmp(e->full, full) == 0)
            return e;
    return NULL;
}

static struct sess_entry *find_full_jid(const struct xmpp_server *srv, const struct jid *j)
{
    char text[JID_MAX + 1];
    if (jid_format(j, text, sizeof text) != 0)
        return NULL;
    return find_full(srv, text);
}

/* ---- life ----------------------------------------------------------------- */

static void on_async(uv_async_t *a);
static void on_idle(uv_idle_t *h);
static void gone_run(struct xmpp_deferred *d);

static int host_names(const char *domain, char *out, size_t n, const char *prefix)
{
    int w = snprintf(out, n, "%s%s", prefix, domain);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

/* The TLS contexts: the operator's files, or a self-signed certificate for
 * the three names, written once into data_dir/xmpp/. */
static int make_tls(struct xmpp_server *srv)
{
    const struct config *cfg = srv->cfg;
    char err[512];
    char cert[CONFIG_PATH + 32], key[CONFIG_PATH + 32];
    if (cfg->xmpp.tls_cert[0]) {
        snprintf(cert, sizeof cert, "%s", cfg->xmpp.tls_cert);
        snprintf(key, sizeof key, "%s", cfg->xmpp.tls_key[0] ? cfg->xmpp.tls_key
                                                             : cfg->xmpp.tls_cert);
    } else {
        char dir[CONFIG_PATH + 16];
        snprintf(dir, sizeof dir, "%s/xmpp", cfg->storage.data_dir);
        int rc = util_mkdir_p(dir);
        if (rc) {
            log_error("xmpp: cannot create %s: %s", dir, strerror(-rc));
            return rc;
        }
        snprintf(cert, sizeof cert, "%s/cert.pem", dir);
        snprintf(key, sizeof key, "%s/key.pem", dir);
        const char *names[] = {srv->domain, srv->muc_domain, srv->guest_domain};
        rc = tls_cert_ensure(cert, key, names, 3, err, sizeof err);
        if (rc < 0) {
            log_error("xmpp: cannot make a certificate in %s: %s", dir, err);
            return rc;
        }
        if (rc == 1)
            log_info("xmpp: generated a self-signed certificate for %s, %s and %s in %s "
                     "(set xmpp.tls_cert and xmpp.tls_key to use a real one)",
                     srv->domain, srv->muc_domain, srv->guest_domain, cert);
    }
    if (tls_ctx_new(TLS_SERVER, cert, key, cfg->xmpp.tls_ca, &srv->tls_server, err,
                    sizeof err) != 0) {
        log_error("xmpp: TLS (server) with %s: %s", cert, err);
        return -EINVAL;
    }
    if (tls_ctx_new(TLS_CLIENT, cert, key, cfg->xmpp.tls_ca, &srv->tls_client, err,
                    sizeof err) != 0) {
        log_error("xmpp: TLS (client) with %s: %s", cert, err);
        return -EINVAL;
    }
    /* c2s: a context of its own that asks the client for no certificate
     * (s2s peers offer one for SASL EXTERNAL; clients would prompt). */
    if (tls_ctx_new(TLS_SERVER, cert, key, cfg->xmpp.tls_ca, &srv->tls_c2s, err,
                    sizeof err) != 0) {
        log_error("xmpp: TLS (c2s) with %s: %s", cert, err);
        return -EINVAL;
    }
    tls_ctx_no_client_cert(srv->tls_c2s);
    tls_ctx_slim(srv->tls_c2s);
    return 0;
}

struct xmpp_server *xmpp_server_new(uv_loop_t *loop, const struct config *cfg,
                                    struct db_pool *db, const struct xmpp_hooks *hooks)
{
    struct xmpp_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->cfg = cfg;
    srv->db = db;
    if (hooks)
        srv->hooks = *hooks;
    if (jid_prep_domain(cfg->xmpp.domain, strlen(cfg->xmpp.domain), srv->domain, false) != 0) {
        log_error("xmpp: xmpp.domain '%s' is not a valid domain", cfg->xmpp.domain);
        free(srv);
        return NULL;
    }
    if (host_names(srv->domain, srv->guest_domain, sizeof srv->guest_domain, "guest.") ||
        host_names(srv->domain, srv->muc_domain, sizeof srv->muc_domain, "chat.")) {
        free(srv);
        return NULL;
    }
    if (pthread_mutex_init(&srv->post_lock, NULL) != 0) {
        free(srv);
        return NULL;
    }
    if (table_grow(srv) != 0 || uv_async_init(loop, &srv->async, on_async) != 0) {
        pthread_mutex_destroy(&srv->post_lock);
        free(srv->by_full);
        free(srv->by_bare);
        free(srv);
        return NULL;
    }
    srv->async.data = srv;
    srv->async_open = true;
    uv_idle_init(loop, &srv->idle); /* cannot fail */
    srv->idle.data = srv;
    srv->idle_open = true;
    /* The async handle must not keep the loop alive on its own. */
    uv_unref((uv_handle_t *)&srv->async);
    if (make_tls(srv) != 0) {
        xmpp_server_free(srv);
        return NULL;
    }
    return srv;
}

int xmpp_server_listen(struct xmpp_server *srv, char *err, size_t errlen)
{
    int rc = c2s_tcp_listen(srv, srv->cfg->xmpp.c2s_listen, &srv->c2s, err, errlen);
    if (rc)
        return rc;
    if (srv->cfg->xmpp.federation) {
        srv->s2s = s2s_new(srv);
        if (!srv->s2s) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        rc = s2s_listen(srv->s2s, srv->cfg->xmpp.s2s_listen, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int xmpp_server_c2s_port(const struct xmpp_server *srv)
{
    return srv->c2s ? c2s_tcp_port(srv->c2s) : 0;
}

int xmpp_server_s2s_port(const struct xmpp_server *srv)
{
    return srv->s2s ? s2s_port(srv->s2s) : 0;
}

/* The idle handle is closed along with the async one; the struct goes (or
 * the shutdown callback runs) once both are. */
static void on_idle_closed(uv_handle_t *h)
{
    struct xmpp_server *srv = h->data;
    srv->idle_open = false;
    if (!srv->async_open && srv->free_pending)
        free(srv);
}

static void close_idle(struct xmpp_server *srv)
{
    if (srv->idle_open && !srv->idle_closing) {
        srv->idle_closing = true;
        uv_close((uv_handle_t *)&srv->idle, on_idle_closed);
    }
}

static void on_async_closed(uv_handle_t *h)
{
    struct xmpp_server *srv = h->data;
    srv->async_open = false;
    if (srv->free_pending) {
        if (srv->idle_open)
            return; /* on_idle_closed frees */
        free(srv);
        return;
    }
    if (srv->shutdown_cb) {
        void (*cb)(struct xmpp_server *, void *) = srv->shutdown_cb;
        srv->shutdown_cb = NULL;
        cb(srv, srv->shutdown_arg);
    }
}

static void shutdown_finish(struct xmpp_server *srv)
{
    /* Run what was posted before the queue goes away. */
    on_async(&srv->async);
    if (srv->async_open && !srv->async_closing) {
        srv->async_closing = true;
        uv_close((uv_handle_t *)&srv->async, on_async_closed);
    } else if (srv->shutdown_cb) {
        void (*cb)(struct xmpp_server *, void *) = srv->shutdown_cb;
        srv->shutdown_cb = NULL;
        cb(srv, srv->shutdown_arg);
    }
}

static void on_s2s_down(void *arg)
{
    shutdown_finish(arg);
}

static void on_c2s_down(void *arg)
{
    struct xmpp_server *srv = arg;
    if (srv->s2s)
        s2s_shutdown(srv->s2s, on_s2s_down, srv);
    else
        shutdown_finish(srv);
}

void xmpp_server_shutdown(struct xmpp_server *srv, void (*cb)(struct xmpp_server *, void *),
                          void *arg)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->shutdown_cb = cb;
    srv->shutdown_arg = arg;
    if (srv->c2s)
        c2s_tcp_shutdown(srv->c2s, on_c2s_down, srv);
    else
        on_c2s_down(srv);
}

void xmpp_server_free(struct xmpp_server *srv)
{
    if (!srv)
        return;
    /* Teardown tells nobody: the MUC may be gone already, and closing the
     * last streams must not call into it or route to it. */
    srv->nwatchers = 0;
    srv->nhosts = 0;
    if (srv->c2s)
        c2s_tcp_free(srv->c2s);
    if (srv->s2s)
        s2s_free(srv->s2s);
    /* What is still deferred will not run: the owners of the items (the
     * sessions just freed, or freed later by their transports) only see
     * them as not queued any more. */
    srv->freeing = true;
    struct xmpp_deferred *d = srv->defer_head, *dn;
    srv->defer_head = srv->defer_tail = NULL;
    srv->ndeferred = 0;
    for (; d; d = dn) {
        dn = d->next;
        d->next = d->prev = NULL;
        d->queued = false;
        if (d->fn == gone_run)
            free((struct gone_item *)d);
    }
    if (srv->idle_open)
        uv_idle_stop(&srv->idle);
    close_idle(srv);
    for (size_t i = 0; i < srv->nbuckets; i++) {
        struct sess_entry *e = srv->by_full[i], *next;
        for (; e; e = next) {
            next = e->next_full;
            free(e->full);
            free(e);
        }
    }
    free(srv->by_full);
    free(srv->by_bare);
    srv->by_full = srv->by_bare = NULL;
    srv->nbuckets = 0;
    pthread_mutex_lock(&srv->post_lock);
    struct post_item *p = srv->post_head, *pn;
    srv->post_head = srv->post_tail = NULL;
    pthread_mutex_unlock(&srv->post_lock);
    for (; p; p = pn) {
        pn = p->next;
        free(p);
    }
    pthread_mutex_destroy(&srv->post_lock);
    if (srv->tls_server)
        tls_ctx_free(srv->tls_server);
    if (srv->tls_client)
        tls_ctx_free(srv->tls_client);
    if (srv->tls_c2s)
        tls_ctx_free(srv->tls_c2s);
    srv->shutdown_cb = NULL;
    /* The struct lives until the loop has closed the handles. */
    srv->free_pending = true;
    if (srv->async_open && !srv->async_closing) {
        srv->async_closing = true;
        uv_close((uv_handle_t *)&srv->async, on_async_closed);
    }
    if (srv->async_open || srv->idle_open)
        return;
    free(srv);
}

/* ---- accessors ------------------------------------------------------------ */

uv_loop_t *xmpp_server_loop(const struct xmpp_server *srv) { return srv->loop; }
const struct config *xmpp_server_config(const struct xmpp_server *srv) { return srv->cfg; }
struct db_pool *xmpp_server_db(const struct xmpp_server *srv) { return srv->db; }
const struct xmpp_hooks *xmpp_server_hooks(const struct xmpp_server *srv) { return &srv->hooks; }
const char *xmpp_server_domain(const struct xmpp_server *srv) { return srv->domain; }
const char *xmpp_server_guest_domain(const struct xmpp_server *srv) { return srv->guest_domain; }
const char *xmpp_server_muc_domain(const struct xmpp_server *srv) { return srv->muc_domain; }

struct tls_ctx *xmpp_server_tls(const struct xmpp_server *srv, bool client)
{
    return client ? srv->tls_client : srv->tls_server;
}

struct tls_ctx *xmpp_server_tls_c2s(const struct xmpp_server *srv) { return srv->tls_c2s; }

bool xmpp_server_is_local(const struct xmpp_server *srv, const char *domain)
{
    return domain && (strcmp(domain, srv->domain) == 0 ||
                      strcmp(domain, srv->guest_domain) == 0 ||
                      strcmp(domain, srv->muc_domain) == 0);
}

/* ---- hosts, remote, watchers ------------------------------------------------ */

int xmpp_server_add_host(struct xmpp_server *srv, const char *domain, xmpp_host_fn fn, void *ud)
{
    char d[JID_PART_MAX + 1];
    if (jid_prep_domain(domain, strlen(domain), d, false) != 0)
        return -EINVAL;
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i].domain, d) == 0) {
            srv->hosts[i].fn = fn;
            srv->hosts[i].ud = ud;
            return 0;
        }
    if (srv->nhosts == HOSTS_MAX)
        return -ENOSPC;
    struct host *h = &srv->hosts[srv->nhosts++];
    memcpy(h->domain, d, sizeof d);
    h->fn = fn;
    h->ud = ud;
    return 0;
}

static const struct host *find_host(const struct xmpp_server *srv, const char *domain)
{
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i].domain, domain) == 0)
            return &srv->hosts[i];
    return NULL;
}

void xmpp_server_set_remote(struct xmpp_server *srv, xmpp_remote_fn send, void *ud)
{
    srv->remote = send;
    srv->remote_ud = ud;
}

int xmpp_server_remove_host(struct xmpp_server *srv, const char *domain)
{
    char d[JID_PART_MAX + 1];
    if (jid_prep_domain(domain, strlen(domain), d, false) != 0)
        return -ENOENT;
    for (size_t i = 0; i < srv->nhosts; i++)
        if (strcmp(srv->hosts[i].domain, d) == 0) {
            memmove(&srv->hosts[i], &srv->hosts[i + 1],
                    (srv->nhosts - i - 1) * sizeof srv->hosts[0]);
            srv->nhosts--;
            return 0;
        }
    return -ENOENT;
}

int xmpp_server_on_session_gone(struct xmpp_server *srv, xmpp_gone_fn fn, void *ud)
{
    if (srv->nwatchers == WATCHERS_MAX)
        return -ENOSPC;
    srv->watchers[srv->nwatchers].fn = fn;
    srv->watchers[srv->nwatchers].ud = ud;
    srv->watchers[srv->nwatchers].dead = false;
    srv->nwatchers++;
    return 0;
}

static void watchers_compact(struct xmpp_server *srv)
{
    size_t o = 0;
    for (size_t i = 0; i < srv->nwatchers; i++)
        if (!srv->watchers[i].dead)
            srv->watchers[o++] = srv->watchers[i];
    srv->nwatchers = o;
    srv->watchers_dead = false;
}

int xmpp_server_off_session_gone(struct xmpp_server *srv, xmpp_gone_fn fn, void *ud)
{
    for (size_t i = 0; i < srv->nwatchers; i++) {
        struct watcher *w = &srv->watchers[i];
        if (w->dead || w->fn != fn || w->ud != ud)
            continue;
        w->dead = true;
        srv->watchers_dead = true;
        /* During a notification the array is being walked: compact after. */
        if (!srv->notifying)
            watchers_compact(srv);
        return 0;
    }
    return -ENOENT;
}

/* ---- the deferred queue ------------------------------------------------------ */

void xmpp_server_defer(struct xmpp_server *srv, struct xmpp_deferred *d,
                       void (*fn)(struct xmpp_deferred *d))
{
    if (d->queued || srv->freeing || !srv->idle_open || srv->idle_closing)
        return;
    d->fn = fn;
    d->next = NULL;
    d->prev = srv->defer_tail;
    if (srv->defer_tail)
        srv->defer_tail->next = d;
    else
        srv->defer_head = d;
    srv->defer_tail = d;
    d->queued = true;
    if (srv->ndeferred++ == 0)
        uv_idle_start(&srv->idle, on_idle);
}

void xmpp_server_defer_cancel(struct xmpp_server *srv, struct xmpp_deferred *d)
{
    if (!d->queued)
        return;
    if (d->prev)
        d->prev->next = d->next;
    else
        srv->defer_head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        srv->defer_tail = d->prev;
    d->next = d->prev = NULL;
    d->queued = false;
    if (--srv->ndeferred == 0 && srv->idle_open)
        uv_idle_stop(&srv->idle);
}

/* Run what was queued before this turn (what the items queue runs on the
 * next one). An item may cancel others or free its owner. */
static void on_idle(uv_idle_t *h)
{
    struct xmpp_server *srv = h->data;
    size_t n = srv->ndeferred;
    while (n-- && srv->defer_head) {
        struct xmpp_deferred *d = srv->defer_head;
        xmpp_server_defer_cancel(srv, d);
        d->fn(d);
    }
}

/* ---- sessions ------------------------------------------------------------- */

int xmpp_server_session_add(struct xmpp_server *srv, const struct jid *full,
                            const struct xmpp_session_ops *ops, void *sess,
                            const struct xmpp_peer *peer)
{
    if (!full->local || !full->resource)
        return -EINVAL;
    char text[JID_MAX + 1];
    int rc = jid_format(full, text, sizeof text);
    if (rc)
        return rc;
    if (find_full(srv, text))
        return -EEXIST;
    size_t blen = (size_t)(strchr(text, '/') - text);
    /* Resources per account are bounded, so that delivery to a bare JID
     * reaches every one of them (deliver_bare). */
    uint32_t hb = hash_str_n(text, blen);
    size_t same = 0;
    for (struct sess_entry *e = srv->by_bare[hb & (srv->nbuckets - 1)]; e; e = e->next_bare)
        if (e->hash_bare == hb && strlen(e->bare) == blen && memcmp(e->bare, text, blen) == 0)
            same++;
    if (same >= XMPP_RESOURCES_MAX)
        return -EDQUOT;
    if (srv->nsessions + 1 > srv->nbuckets - srv->nbuckets / 4 && (rc = table_grow(srv)) != 0)
        return rc;
    struct sess_entry *e = calloc(1, sizeof *e);
    size_t flen = strlen(text);
    char *block = malloc(flen + 1 + blen + 1);
    if (!e || !block) {
        free(e);
        free(block);
        return -ENOMEM;
    }
    memcpy(block, text, flen + 1);
    e->full = block;
    e->bare = block + flen + 1;
    memcpy(e->bare, text, blen);
    e->bare[blen] = '\0';
    e->hash_full = hash_str(e->full);
    e->hash_bare = hb;
    e->ops = ops;
    e->sess = sess;
    if (peer)
        e->peer = *peer;
    size_t mask = srv->nbuckets - 1;
    e->next_full = srv->by_full[e->hash_full & mask];
    srv->by_full[e->hash_full & mask] = e;
    e->next_bare = srv->by_bare[e->hash_bare & mask];
    srv->by_bare[e->hash_bare & mask] = e;
    srv->nsessions++;
    if (e->peer.websocket)
        srv->nwebsocket++;
    return 0;
}

static void notify_now(struct xmpp_server *srv, const struct jid *full)
{
    /* Watchers (the MUC) drop whatever the JID held. One may take itself
     * off meanwhile: it is only marked, and compacted afterwards. */
    srv->notifying++;
    for (size_t i = 0; i < srv->nwatchers; i++)
        if (!srv->watchers[i].dead)
            srv->watchers[i].fn(srv->watchers[i].ud, full);
    if (--srv->notifying == 0 && srv->watchers_dead)
        watchers_compact(srv);
}

static void gone_run(struct xmpp_deferred *d)
{
    struct gone_item *g = (struct gone_item *)d;
    struct xmpp_server *srv = g->srv;
    /* Bound again meanwhile (a reconnect with the same resource): that
     * session carries on what this JID held. */
    if (!find_full(srv, g->jid)) {
        struct jid j = {0};
        if (jid_parse(&j, g->jid) == 0)
            notify_now(srv, &j);
        else
            log_warn("xmpp: cannot tell the watchers that %s went away", g->jid);
        jid_free(&j);
    }
    free(g);
}

void xmpp_server_notify_gone(struct xmpp_server *srv, const struct jid *full)
{
    if (!srv->nwatchers)
        return;
    if (!srv->route_depth) {
        notify_now(srv, full);
        return;
    }
    /* Inside routing: the caller below us (the MUC delivering to a room)
     * must not see its structures change under it. */
    char text[JID_MAX + 1];
    struct gone_item *g;
    if (jid_format(full, text, sizeof text) != 0 ||
        !(g = calloc(1, sizeof *g + strlen(text) + 1))) {
        log_error("xmpp: cannot queue the departure of a session; the watchers are told now");
        notify_now(srv, full);
        return;
    }
    g->srv = srv;
    memcpy(g->jid, text, strlen(text) + 1);
    xmpp_server_defer(srv, &g->d, gone_run);
    if (!g->d.queued)
        free(g); /* the server is going away: nobody is told */
}

void xmpp_server_session_remove(struct xmpp_server *srv, const struct jid *full)
{
    char text[JID_MAX + 1];
    if (!srv->nbuckets || jid_format(full, text, sizeof text) != 0)
        return;
    uint32_t h = hash_str(text);
    size_t mask = srv->nbuckets - 1;
    struct sess_entry **pp = &srv->by_full[h & mask], *e;
    for (; (e = *pp); pp = &e->next_full)
        if (e->hash_full == h && strcmp(e->full, text) == 0)
            break;
    if (!e)
        return;
    *pp = e->next_full;
    for (pp = &srv->by_bare[e->hash_bare & mask]; *pp; pp = &(*pp)->next_bare)
        if (*pp == e) {
            *pp = e->next_bare;
            break;
        }
    srv->nsessions--;
    if (e->peer.websocket)
        srv->nwebsocket--;
    free(e->full);
    free(e);
    xmpp_server_notify_gone(srv, full);
}

const struct xmpp_peer *xmpp_server_peer(const struct xmpp_server *srv, const struct jid *full)
{
    if (!full->local || !full->resource)
        return NULL;
    struct sess_entry *e = find_full_jid(srv, full);
    return e ? &e->peer : NULL;
}

static void deliver(struct xmpp_server *srv, struct sess_entry *e, struct xml_node *st)
{
    srv->stanzas_out++;
    srv->route_depth++;
    e->ops->deliver(e->sess, st);
    srv->route_depth--;
}

int xmpp_server_deliver_local(struct xmpp_server *srv, const struct jid *full,
                              struct xml_node *st)
{
    if (!full->local || !full->resource)
        return -ENOENT;
    struct sess_entry *e = find_full_jid(srv, full);
    if (!e)
        return -ENOENT;
    deliver(srv, e, st);
    return 0;
}

/* Deliver to every session of a bare JID (XMPP_RESOURCES_MAX at most); a
 * copy each but the last. Returns how many got it (0: st is still the
 * caller's). */
static size_t deliver_bare(struct xmpp_server *srv, const struct jid *bare, struct xml_node *st)
{
    char text[JID_MAX + 1];
    if (jid_format_bare(bare, text, sizeof text) != 0)
        return 0;
    uint32_t h = hash_str(text);
    struct sess_entry *targets[XMPP_RESOURCES_MAX];
    size_t n = 0;
    for (struct sess_entry *e = srv->by_bare[h & (srv->nbuckets - 1)]; e; e = e->next_bare)
        if (e->hash_bare == h && strcmp(e->bare, text) == 0) {
            if (n == XMPP_RESOURCES_MAX) {
                /* session_add refuses more: this is a bug, say so. */
                log_error("xmpp: %s has more than %d sessions; some miss a stanza", text,
                          XMPP_RESOURCES_MAX);
                break;
            }
            targets[n++] = e;
        }
    /* deliver never ends a session from inside (xmpp.h): the entries stay. */
    for (size_t i = 0; i + 1 < n; i++) {
        struct xml_node *copy = xml_node_copy(st);
        if (copy)
            deliver(srv, targets[i], copy);
    }
    if (n)
        deliver(srv, targets[n - 1], st);
    return n;
}

/* ---- errors and replies --------------------------------------------------- */

static void route_reply(struct xmpp_server *srv, struct xml_node *reply)
{
    /* The original had no to: the answer comes from the server. */
    if (!xml_attr_get(reply, "from") && xml_attr_set(reply, "from", srv->domain) != 0) {
        xml_node_free(reply);
        return;
    }
    xmpp_route(srv, reply);
}

void xmpp_route_error(struct xmpp_server *srv, struct xml_node *st, int stanza_cond,
                      const char *text)
{
    struct stanza_error e = {.cond = (enum stanza_cond)stanza_cond, .text = text};
    struct xml_node *reply = NULL;
    int rc = stanza_error_reply(st, &e, &reply);
    if (rc == 0 && reply) {
        /* An error to no one (a stanza without from) goes nowhere. */
        if (xml_attr_get(reply, "to"))
            route_reply(srv, reply);
        else
            xml_node_free(reply);
    }
    xml_node_free(st);
}

/* <iq type='result'/> to st's sender, from st's to (or from fallback). */
static struct xml_node *iq_result(const struct xml_node *st, const char *fallback_from)
{
    struct xml_node *r = xml_element_new("iq", XMPP_NS_CLIENT);
    if (!r)
        return NULL;
    const char *id = xml_attr_get(st, "id");
    const char *from = xml_attr_get(st, "from");
    const char *to = xml_attr_get(st, "to");
    if (xml_attr_set(r, "type", "result") || (id && xml_attr_set(r, "id", id)) ||
        (from && xml_attr_set(r, "to", from)) ||
        xml_attr_set(r, "from", to ? to : fallback_from)) {
        xml_node_free(r);
        return NULL;
    }
    return r;
}

static void add_feature(struct xml_node *q, const char *var)
{
    struct xml_node *f = xml_element_add(q, "feature", NULL);
    if (f)
        xml_attr_set(f, "var", var);
}

/*
 * An iq for the server, or for an account's bare JID answered on its
 * behalf (to_account: the account's bare JID; self: the sender is that
 * account). Owns st.
 */
static void server_iq(struct xmpp_server *srv, struct xml_node *st, const struct jid *from,
                      const struct jid *to_account, bool self)
{
    enum stanza_type t = stanza_type(st);
    if (t == STANZA_TYPE_RESULT || t == STANZA_TYPE_ERROR) {
        xml_node_free(st); /* answers to nothing we asked */
        return;
    }
    struct xml_node *q = xml_first_element(st);
    if ((t != STANZA_TYPE_GET && t != STANZA_TYPE_SET) || !q || !xml_attr_get(st, "id")) {
        xmpp_route_error(srv, st, STANZA_COND_BAD_REQUEST, NULL);
        return;
    }
    for (struct xml_node *c = q->next; c; c = c->next)
        if (c->type == XML_NODE_ELEMENT) {
            xmpp_route_error(srv, st, STANZA_COND_BAD_REQUEST, "one payload per iq");
            return;
        }
    bool get = t == STANZA_TYPE_GET;
    const char *node = xml_attr_get(q, "node");
    struct xml_node *r = NULL;

    if (strcmp(q->ns, NS_PING) == 0 && strcmp(q->name, "ping") == 0 && get) {
        r = iq_result(st, srv->domain);
    } else if (strcmp(q->ns, NS_DISCO_INFO) == 0 && strcmp(q->name, "query") == 0 && get) {
        if (node) {
            xmpp_route_error(srv, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
            return;
        }
        r = iq_result(st, srv->domain);
        struct xml_node *rq = r ? xml_element_add(r, "query", NS_DISCO_INFO) : NULL;
        struct xml_node *id = rq ? xml_element_add(rq, "identity", NULL) : NULL;
        if (id && !to_account) {
            xml_attr_set(id, "category", "server");
            xml_attr_set(id, "type", "im");
            xml_attr_set(id, "name", srv->cfg->site.name[0] ? srv->cfg->site.name : "Hearth");
            add_feature(rq, NS_DISCO_INFO);
            add_feature(rq, NS_DISCO_ITEMS);
            add_feature(rq, NS_PING);
            add_feature(rq, NS_ROSTER);
            add_feature(rq, NS_VCARD);
        } else if (id) {
            xml_attr_set(id, "category", "account");
            xml_attr_set(id, "type", "registered");
            add_feature(rq, NS_DISCO_INFO);
            add_feature(rq, NS_PING);
        }
    } else if (strcmp(q->ns, NS_DISCO_ITEMS) == 0 && strcmp(q->name, "query") == 0 && get) {
        if (node) {
            xmpp_route_error(srv, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
            return;
        }
        r = iq_result(st, srv->domain);
        struct xml_node *rq = r ? xml_element_add(r, "query", NS_DISCO_ITEMS) : NULL;
        if (rq && !to_account) {
            struct xml_node *it = xml_element_add(rq, "item", NULL);
            if (it) {
                xml_attr_set(it, "jid", srv->muc_domain);
                xml_attr_set(it, "name", "Chat rooms");
            }
        }
    } else if (strcmp(q->ns, NS_ROSTER) == 0 && strcmp(q->name, "query") == 0 &&
               (!to_account || self)) {
        if (!get) {
            /* Rosters are not kept: accounts chat in rooms. */
            xmpp_route_error(srv, st, STANZA_COND_FEATURE_NOT_IMPLEMENTED,
                             "this server keeps no rosters");
            return;
        }
        r = iq_result(st, srv->domain);
        if (r && !xml_element_add(r, "query", NS_ROSTER)) {
            xml_node_free(r);
            r = NULL;
        }
    } else if (strcmp(q->ns, NS_VCARD) == 0 && strcmp(q->name, "vCard") == 0) {
        if (!get) {
            xmpp_route_error(srv, st, STANZA_COND_FEATURE_NOT_IMPLEMENTED,
                             "vCards are not stored");
            return;
        }
        if (to_account && !self) {
            xmpp_route_error(srv, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
            return;
        }
        r = iq_result(st, srv->domain);
        if (r && !xml_element_add(r, "vCard", NS_VCARD)) {
            xml_node_free(r);
            r = NULL;
        }
    } else if (strcmp(q->ns, XMPP_NS_SESSION) == 0 && strcmp(q->name, "session") == 0 &&
               !to_account) {
        r = iq_result(st, srv->domain); /* RFC 3921 session: a no-op today */
    } else {
        xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    (void)from;
    if (!r) {
        xmpp_route_error(srv, st, STANZA_COND_INTERNAL_SERVER_ERROR, NULL);
        return;
    }
    xml_node_free(st);
    xmpp_route(srv, r);
}

/* ---- the router ----------------------------------------------------------- */

static bool is_user_host(const struct xmpp_server *srv, const char *domain)
{
    return strcmp(domain, srv->domain) == 0 || strcmp(domain, srv->guest_domain) == 0;
}

/* To NAME@DOMAIN (bare), RFC 6121 8.5.2. Owns st. */
static void route_bare(struct xmpp_server *srv, struct xml_node *st, enum stanza_kind kind,
                       const struct jid *from, const struct jid *to)
{
    enum stanza_type t = stanza_type(st);
    switch (kind) {
    case STANZA_MESSAGE:
        if (t == STANZA_TYPE_ERROR) {
            if (!deliver_bare(srv, to, st))
                xml_node_free(st);
            return;
        }
        if (t == STANZA_TYPE_GROUPCHAT) {
            xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
            return;
        }
        if (deliver_bare(srv, to, st))
            return;
        if (t == STANZA_TYPE_HEADLINE) {
            xml_node_free(st);
            return;
        }
        /* No offline storage: the account is not reachable now. */
        xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    case STANZA_PRESENCE:
        /* No rosters: subscriptions and probes go nowhere; directed
         * availability reaches every resource. */
        if ((t == STANZA_TYPE_NONE || t == STANZA_TYPE_UNAVAILABLE) && !jid_bare_equal(from, to) &&
            deliver_bare(srv, to, st))
            return;
        xml_node_free(st);
        return;
    case STANZA_IQ:
        server_iq(srv, st, from, to, jid_bare_equal(from, to));
        return;
    default:
        xml_node_free(st);
    }
}

/* To NAME@DOMAIN/RES, RFC 6121 8.5.3. Owns st. */
static void route_full(struct xmpp_server *srv, struct xml_node *st, enum stanza_kind kind,
                       const struct jid *from, const struct jid *to)
{
    struct sess_entry *e = find_full_jid(srv, to);
    if (e) {
        deliver(srv, e, st);
        return;
    }
    enum stanza_type t = stanza_type(st);
    switch (kind) {
    case STANZA_MESSAGE:
        if (t == STANZA_TYPE_ERROR) {
            xml_node_free(st);
            return;
        }
        if (t == STANZA_TYPE_GROUPCHAT) {
            xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
            return;
        }
        /* 8.5.3.2.1: normal, chat and headline fall back to the bare JID. */
        struct jid bare = {0};
        if (jid_bare(&bare, to) != 0) {
            xml_node_free(st);
            return;
        }
        route_bare(srv, st, kind, from, &bare);
        jid_free(&bare);
        return;
    case STANZA_IQ:
        if (t == STANZA_TYPE_RESULT || t == STANZA_TYPE_ERROR)
            xml_node_free(st);
        else
            xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    default:
        xml_node_free(st); /* presence to a gone resource: silently dropped */
    }
}

/*
 * A guest's stanza to a user's JID (NAME@DOMAIN or NAME@guest.DOMAIN, bare
 * or full): true when it was refused (and st freed). Guests chat in rooms;
 * what they say to one person goes through the room (room/nick), where
 * moderation and the room's limits apply.
 */
static bool guest_refused(struct xmpp_server *srv, struct xml_node *st, enum stanza_kind kind,
                          const struct jid *to)
{
    enum stanza_type t = stanza_type(st);
    switch (kind) {
    case STANZA_MESSAGE:
        xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE,
                         "guests can only talk in chat rooms");
        return true;
    case STANZA_PRESENCE:
        xml_node_free(st);
        return true;
    case STANZA_IQ:
        /* Requests to a user's resource are refused; answers to requests
         * an account sent the guest pass, and so do the server's own
         * answers on an account's behalf (a bare JID). */
        if (to->resource && (t == STANZA_TYPE_GET || t == STANZA_TYPE_SET)) {
            xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE,
                             "guests can only talk in chat rooms");
            return true;
        }
        return false;
    default:
        return false;
    }
}

static void route(struct xmpp_server *srv, struct xml_node *st);

void xmpp_route(struct xmpp_server *srv, struct xml_node *st)
{
    srv->route_depth++;
    route(srv, st);
    srv->route_depth--;
}

static void route(struct xmpp_server *srv, struct xml_node *st)
{
    enum stanza_kind kind = stanza_kind(st);
    if (kind == STANZA_OTHER) {
        xml_node_free(st);
        return;
    }
    srv->stanzas_in++;
    struct jid from = {0}, to = {0};
    if (stanza_jid(st, "from", &from) != 0) {
        log_warn("xmpp: dropping a <%s/> without a valid from", st->name);
        xml_node_free(st);
        return;
    }
    int rc = stanza_jid(st, "to", &to);
    if (rc == -EINVAL) {
        xmpp_route_error(srv, st, STANZA_COND_JID_MALFORMED, NULL);
        goto out;
    }
    if (rc == -ENOMEM) {
        xml_node_free(st);
        goto out;
    }
    if (rc == -ENOENT) {
        /* RFC 6120 10.3: no to means the sender's own account. */
        if (kind == STANZA_IQ) {
            server_iq(srv, st, &from, NULL, false);
        } else if (kind == STANZA_MESSAGE && from.local && is_user_host(srv, from.domain)) {
            struct jid bare = {0};
            if (jid_bare(&bare, &from) == 0) {
                route_bare(srv, st, kind, &from, &bare);
                jid_free(&bare);
            } else {
                xml_node_free(st);
            }
        } else {
            xml_node_free(st); /* presence broadcast: no roster to send it to */
        }
        goto out;
    }

    const struct host *h = find_host(srv, to.domain);
    if (h) {
        h->fn(h->ud, st, &from, &to);
        goto out;
    }
    if (is_user_host(srv, to.domain)) {
        if (to.local && strcmp(from.domain, srv->guest_domain) == 0 &&
            guest_refused(srv, st, kind, &to))
            goto out;
        if (!to.local) {
            if (to.resource) {
                /* DOMAIN/RESOURCE: nothing lives there. */
                if (kind == STANZA_IQ || kind == STANZA_MESSAGE)
                    xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
                else
                    xml_node_free(st);
            } else if (kind == STANZA_IQ) {
                server_iq(srv, st, &from, NULL, false);
            } else {
                xml_node_free(st); /* presence and messages to the server itself */
            }
        } else if (to.resource) {
            route_full(srv, st, kind, &from, &to);
        } else {
            route_bare(srv, st, kind, &from, &to);
        }
        goto out;
    }
    if (strcmp(to.domain, srv->muc_domain) == 0) {
        /* chat.DOMAIN before the MUC registered. */
        xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        goto out;
    }
    /* Another domain: federation, never for guests. */
    if (strcmp(from.domain, srv->guest_domain) == 0) {
        xmpp_route_error(srv, st, STANZA_COND_SERVICE_UNAVAILABLE,
                         "guests cannot reach other servers");
        goto out;
    }
    if (!srv->remote) {
        xmpp_route_error(srv, st, STANZA_COND_REMOTE_SERVER_NOT_FOUND, NULL);
        goto out;
    }
    srv->remote(srv->remote_ud, st, &to);
out:
    jid_free(&from);
    jid_free(&to);
}

/* ---- threads -------------------------------------------------------------- */

static void on_work(uv_work_t *req)
{
    struct work_req *w = req->data;
    w->work(w->arg);
}

static void on_after_work(uv_work_t *req, int status)
{
    struct work_req *w = req->data;
    (void)status; /* cancelled or not, done runs so the caller can clean up */
    if (w->done)
        w->done(w->arg);
    free(w);
}

int xmpp_server_work(struct xmpp_server *srv, void (*work)(void *arg), void (*done)(void *arg),
                     void *arg)
{
    struct work_req *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->work = work;
    w->done = done;
    w->arg = arg;
    w->req.data = w;
    int rc = uv_queue_work(srv->loop, &w->req, on_work, on_after_work);
    if (rc) {
        free(w);
        return rc;
    }
    return 0;
}

static void on_async(uv_async_t *a)
{
    struct xmpp_server *srv = a->data;
    pthread_mutex_lock(&srv->post_lock);
    struct post_item *p = srv->post_head;
    srv->post_head = srv->post_tail = NULL;
    pthread_mutex_unlock(&srv->post_lock);
    while (p) {
        struct post_item *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

int xmpp_server_post(struct xmpp_server *srv, void (*fn)(void *arg), void *arg)
{
    struct post_item *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&srv->post_lock);
    if (srv->post_tail)
        srv->post_tail->next = p;
    else
        srv->post_head = p;
    srv->post_tail = p;
    pthread_mutex_unlock(&srv->post_lock);
    uv_async_send(&srv->async);
    return 0;
}

void xmpp_server_stats(const struct xmpp_server *srv, struct xmpp_stats *out)
{
    memset(out, 0, sizeof *out);
    out->websocket = srv->nwebsocket;
    out->c2s = srv->c2s ? c2s_tcp_connections(srv->c2s) : srv->nsessions - srv->nwebsocket;
    if (srv->s2s)
        s2s_counts(srv->s2s, &out->s2s_in, &out->s2s_out);
    out->stanzas_in = srv->stanzas_in;
    out->stanzas_out = srv->stanzas_out;
}

void *xmpp_server_session_find(const struct xmpp_server *srv, const struct jid *full,
                               const struct xmpp_session_ops **ops)
{
    if (!full->local || !full->resource)
        return NULL;
    struct sess_entry *e = find_full_jid(srv, full);
    if (!e)
        return NULL;
    if (ops)
        *ops = e->ops;
    return e->sess;
}
