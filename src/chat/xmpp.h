/*
 * The XMPP server: hosts, sessions and the router between them.
 *
 * One struct xmpp_server per process, on the loop thread. It serves three
 * hosts under xmpp.domain:
 *
 *   DOMAIN          accounts: NAME@DOMAIN/resource (c2s, SASL PLAIN)
 *   guest.DOMAIN    guests: RANDOM@guest.DOMAIN/resource (SASL ANONYMOUS);
 *                   never originates server-to-server traffic
 *   chat.DOMAIN     rooms: SLUG@chat.DOMAIN, one per channel (muc.h)
 *
 * Every stanza, whatever brought it in (TCP c2s, WebSocket, s2s), goes
 * through xmpp_route once its from is stamped and checked by the stream it
 * came on. The router then hands it to:
 *   - a component host (chat.DOMAIN: the MUC service) by its domain;
 *   - a local session by full JID (or, for a bare JID on DOMAIN, the
 *     server answers on the account's behalf: RFC 6121 8.5);
 *   - the server itself (to DOMAIN or no to): disco, ping, roster, vCard;
 *   - the remote hook (s2s) for any other domain, unless the sender is a
 *     guest, who gets service-unavailable.
 * Stanzas that cannot be delivered get the RFC 6120/6121 error back.
 *
 * Stanzas inside the router are in jabber:client; s2s moves them to and
 * from jabber:server at its edge (stanza_set_content_ns).
 */
#ifndef HEARTH_CHAT_XMPP_H
#define HEARTH_CHAT_XMPP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "chat/jid.h"
#include "chat/xml.h"

struct config;
struct db_pool;
struct tls_ctx;
struct xmpp_server;

/* An account, as the app vouches for it. */
struct xmpp_account {
    int64_t user_id;
    char name[JID_PART_MAX + 1]; /* the localpart, prepared */
    bool admin;                  /* site admin: moderates every room */
};

struct xmpp_hooks {
    void *ud;
    /*
     * Worker thread. Check SASL PLAIN credentials: user is the authcid as
     * sent, secret either the account password or a chat token from the web
     * app (POST /api/v1/chat/token). ip: the client's address (for
     * throttling failed passwords per address, never per name alone). 0
     * with *out filled; -EPERM when wrong (not-authorized); -EACCES when the
     * account may not log in (disabled, unverified: account-disabled); other
     * negatives (-EAGAIN: throttled): temporary-auth-failure.
     */
    int (*authenticate)(void *ud, const char *user, const char *secret, const char *ip,
                        struct xmpp_account *out);
};

/* Who is behind a local full JID. */
struct xmpp_peer {
    bool guest;                  /* on guest.DOMAIN */
    bool websocket;              /* came over /xmpp-websocket */
    struct xmpp_account account; /* user_id 0 for guests */
    char ip[64];                 /* the connection's peer address */
};

struct xmpp_server *xmpp_server_new(uv_loop_t *loop, const struct config *cfg,
                                    struct db_pool *db, const struct xmpp_hooks *hooks);
/* Open the c2s listener (and s2s when xmpp.federation). 0 or negative with err. */
int xmpp_server_listen(struct xmpp_server *srv, char *err, size_t errlen);
int xmpp_server_c2s_port(const struct xmpp_server *srv);
int xmpp_server_s2s_port(const struct xmpp_server *srv);
/* Send </stream:stream> (system-shutdown) to every stream, close the
 * listeners, and call cb when everything is closed. */
void xmpp_server_shutdown(struct xmpp_server *srv, void (*cb)(struct xmpp_server *, void *),
                          void *arg);
void xmpp_server_free(struct xmpp_server *srv);

uv_loop_t *xmpp_server_loop(const struct xmpp_server *srv);
const struct config *xmpp_server_config(const struct xmpp_server *srv);
struct db_pool *xmpp_server_db(const struct xmpp_server *srv);
const struct xmpp_hooks *xmpp_server_hooks(const struct xmpp_server *srv);
const char *xmpp_server_domain(const struct xmpp_server *srv);       /* DOMAIN */
const char *xmpp_server_guest_domain(const struct xmpp_server *srv); /* guest.DOMAIN */
const char *xmpp_server_muc_domain(const struct xmpp_server *srv);   /* chat.DOMAIN */
/* The TLS contexts (server side for incoming s2s, which asks the peer for
 * a certificate; client side for outgoing s2s), made at xmpp_server_new
 * from xmpp.tls_* or the generated certificate. */
struct tls_ctx *xmpp_server_tls(const struct xmpp_server *srv, bool client);
/* The server context for c2s STARTTLS: same certificate, but it asks the
 * client for none (clients would prompt their user for one). */
struct tls_ctx *xmpp_server_tls_c2s(const struct xmpp_server *srv);

/*
 * Route a stanza. It must have a trusted from (stamped by the stream it
 * came on) and jabber:client as namespace; the router takes ownership.
 * Loop thread.
 */
void xmpp_route(struct xmpp_server *srv, struct xml_node *st);
/* Answer st with a stanza error and free st (nothing for an error stanza). */
void xmpp_route_error(struct xmpp_server *srv, struct xml_node *st, int stanza_cond,
                      const char *text);

/* A component host (chat.DOMAIN). handler owns the stanza. */
typedef void (*xmpp_host_fn)(void *ud, struct xml_node *st, const struct jid *from,
                             const struct jid *to);
int xmpp_server_add_host(struct xmpp_server *srv, const char *domain, xmpp_host_fn fn, void *ud);
/* Forget a host (its owner is going away). 0 or -ENOENT. */
int xmpp_server_remove_host(struct xmpp_server *srv, const char *domain);

/*
 * Local sessions (c2s and WebSocket). deliver owns the stanza and writes it
 * to the stream. A full JID is registered once bound and unregistered
 * before the session goes away; xmpp_server_peer finds it.
 *
 * deliver never ends the session or unregisters it from inside the call,
 * whatever happens to the write: callers (the MUC broadcasting to a room)
 * may be in the middle of walking their own structures. A session whose
 * write failed drops further deliveries and goes away on a later loop turn.
 */
struct xmpp_session_ops {
    void (*deliver)(void *sess, struct xml_node *st);
};
#define XMPP_RESOURCES_MAX 64 /* sessions of one bare JID */
/* 0; -EEXIST (full is taken); -EDQUOT (the bare JID has
 * XMPP_RESOURCES_MAX sessions already); -ENOMEM. */
int xmpp_server_session_add(struct xmpp_server *srv, const struct jid *full,
                            const struct xmpp_session_ops *ops, void *sess,
                            const struct xmpp_peer *peer);
/* Unregister full and tell the session-gone watchers; while a stanza is
 * being routed the watchers are told on a later loop turn instead, and not
 * at all if full was registered again by then. */
void xmpp_server_session_remove(struct xmpp_server *srv, const struct jid *full);
/* The sess given to xmpp_server_session_add for full, and its ops; NULL
 * when full is not a local session. For binding (the newest session wins,
 * RFC 6120 7.7.2.2) and for the MUC's fast path to its occupants. */
void *xmpp_server_session_find(const struct xmpp_server *srv, const struct jid *full,
                               const struct xmpp_session_ops **ops);
/* Deliver st (owned) to the local session full, counted like routed
 * stanzas, without the router's checks. 0, or -ENOENT (st untouched:
 * still the caller's) when full is no local session. */
int xmpp_server_deliver_local(struct xmpp_server *srv, const struct jid *full,
                              struct xml_node *st);
/* NULL when full is not a local session (a remote user, or gone). */
const struct xmpp_peer *xmpp_server_peer(const struct xmpp_server *srv, const struct jid *full);
/* Whether domain is one of ours (DOMAIN, guest.DOMAIN, chat.DOMAIN). */
bool xmpp_server_is_local(const struct xmpp_server *srv, const char *domain);

/*
 * Federation: stanzas for other domains go to send (s2s.c), which owns
 * them. Without it they bounce with remote-server-not-found.
 */
typedef void (*xmpp_remote_fn)(void *ud, struct xml_node *st, const struct jid *to);
void xmpp_server_set_remote(struct xmpp_server *srv, xmpp_remote_fn send, void *ud);
/* Called by a session or stream when it goes away, so watchers (MUC
 * occupants of a vanished guest) can clean up. */
typedef void (*xmpp_gone_fn)(void *ud, const struct jid *full);
int xmpp_server_on_session_gone(struct xmpp_server *srv, xmpp_gone_fn fn, void *ud);
/* Stop telling fn/ud (safe from inside a notification). 0 or -ENOENT. */
int xmpp_server_off_session_gone(struct xmpp_server *srv, xmpp_gone_fn fn, void *ud);
/* Tell the watchers that full went away without being a local session (a
 * remote occupant whose s2s stream died). Deferred like
 * xmpp_server_session_remove's while a stanza is being routed. */
void xmpp_server_notify_gone(struct xmpp_server *srv, const struct jid *full);

/*
 * Work for a later turn of the loop (loop thread only): fn(d) runs once,
 * from the loop, never from inside the caller. d is embedded in the
 * caller's object, which must cancel it before going away. Queuing a d that
 * is queued already does nothing. The queue keeps the loop alive.
 */
struct xmpp_deferred {
    struct xmpp_deferred *next, *prev;
    void (*fn)(struct xmpp_deferred *d);
    bool queued;
};
void xmpp_server_defer(struct xmpp_server *srv, struct xmpp_deferred *d,
                       void (*fn)(struct xmpp_deferred *d));
void xmpp_server_defer_cancel(struct xmpp_server *srv, struct xmpp_deferred *d);

/*
 * Blocking work (database, password hashing): work runs on the libuv worker
 * pool, done on the loop thread afterwards. 0 or negative.
 */
int xmpp_server_work(struct xmpp_server *srv, void (*work)(void *arg),
                     void (*done)(void *arg), void *arg);
/* From any thread: run fn(arg) on the loop thread soon. 0 or -ENOMEM. */
int xmpp_server_post(struct xmpp_server *srv, void (*fn)(void *arg), void *arg);

/* Open streams now, by kind (for /healthz and the bench). */
struct xmpp_stats {
    size_t c2s, websocket, s2s_in, s2s_out;
    uint64_t stanzas_in, stanzas_out;
};
void xmpp_server_stats(const struct xmpp_server *srv, struct xmpp_stats *out);

#endif
