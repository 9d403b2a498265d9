/*
 * Client-to-server streams (RFC 6120, 6121), written once for both
 * transports: TCP (c2s_tcp.c: <stream:stream>, STARTTLS, whitespace
 * keepalives) and WebSocket (chat/c2s_ws.c over net/ws: RFC 7395 framing,
 * already encrypted when the page is https).
 *
 * A session is fed bytes (TCP, after TLS when it is on) or whole messages
 * (WebSocket) and writes bytes back through its transport. It runs the
 * stream: header and features, STARTTLS (TCP), SASL PLAIN (accounts: the
 * password or a web chat token, checked on a worker through
 * xmpp_hooks.authenticate) and ANONYMOUS (guest.DOMAIN), the restart,
 * resource binding, the legacy session iq, and then hands stanzas to the
 * router with a stamped from.
 */
#ifndef HEARTH_CHAT_C2S_H
#define HEARTH_CHAT_C2S_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/stanza.h"

struct xmpp_server;
struct c2s_session;

struct c2s_transport {
    void *ud;
    /* Bytes for the peer (one WebSocket message per call when framed).
     * 0 or negative (the session then closes). */
    int (*write)(void *ud, const void *data, size_t len);
    /* Close the connection after what was written is flushed. The session
     * calls it once and must not be used after c2s_session_free. */
    void (*close)(void *ud);
    /* TCP only (NULL otherwise): begin TLS. Bytes fed after it are
     * already decrypted by the transport. 0 or negative. */
    int (*starttls)(void *ud);
};

struct c2s_params {
    enum stanza_framing framing;
    bool secure;       /* already encrypted (wss, or TLS-on-connect) */
    bool websocket;
    const char *ip;    /* peer address, for logs and platform bans */
};

struct c2s_session *c2s_session_new(struct xmpp_server *srv, const struct c2s_params *p,
                                    const struct c2s_transport *t);
/* Give it up: unregisters it from the router, tells the MUC it is gone.
 * Call after the transport closed or failed. */
void c2s_session_free(struct c2s_session *s);

/* TCP: bytes from the peer (plaintext, or decrypted by the transport). */
int c2s_session_feed(struct c2s_session *s, const char *data, size_t len);
/* WebSocket: one complete text message. */
int c2s_session_feed_frame(struct c2s_session *s, const char *data, size_t len);
/* The transport noticed the peer went away, or a timeout: end the stream
 * with a stream error (condition name as in RFC 6120, e.g.
 * "connection-timeout"), or just close with cond NULL. */
void c2s_session_end(struct c2s_session *s, const char *cond);

/*
 * The TCP listener (c2s_tcp.c): accepts on addr ("HOST:PORT"), runs TLS
 * through net/tls.h when the session asks for STARTTLS, sends whitespace
 * keepalives every xmpp.keepalive and closes streams silent for
 * xmpp.idle_timeout, and refuses connections past xmpp.max_connections.
 */
struct c2s_listener;
int c2s_tcp_listen(struct xmpp_server *srv, const char *addr, struct c2s_listener **out,
                   char *err, size_t errlen);
int c2s_tcp_port(const struct c2s_listener *l);
/* Stop accepting; end every stream with system-shutdown; cb when all are
 * closed. */
void c2s_tcp_shutdown(struct c2s_listener *l, void (*cb)(void *arg), void *arg);
void c2s_tcp_free(struct c2s_listener *l);
size_t c2s_tcp_connections(const struct c2s_listener *l);

#endif
