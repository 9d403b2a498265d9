/*
 * Server-to-server streams (RFC 6120, XEP-0220 dialback, XEP-0178 SASL
 * EXTERNAL): federation, both directions.
 *
 * Outgoing: the router hands stanzas for other domains to s2s_send (through
 * xmpp_server_set_remote); s2s queues them per domain (bounded), finds the
 * peer (xmpp.s2s_routes, then DNS SRV _xmpp-server._tcp, then A/AAAA on
 * 5269, with c-ares), connects, requires STARTTLS, authenticates with SASL
 * EXTERNAL when the peer's certificate validates, else dialback (unless
 * xmpp.s2s_secure_auth), then flushes. Incoming: the s2s listener accepts,
 * requires STARTTLS, offers EXTERNAL when the peer's certificate validates,
 * answers dialback (db:result, and db:verify for its own keys), and routes
 * stanzas whose from matches an authenticated domain. Guests' stanzas never
 * leave (the router refuses them before this).
 */
#ifndef HEARTH_CHAT_S2S_H
#define HEARTH_CHAT_S2S_H

#include <stddef.h>

struct xmpp_server;
struct s2s;

/* Registers itself as the router's remote hook. NULL on -ENOMEM. */
struct s2s *s2s_new(struct xmpp_server *srv);
int s2s_listen(struct s2s *s, const char *addr, char *err, size_t errlen);
int s2s_port(const struct s2s *s);
/* Close every stream (system-shutdown) and the listener; cb when done. */
void s2s_shutdown(struct s2s *s, void (*cb)(void *arg), void *arg);
void s2s_free(struct s2s *s);
void s2s_counts(const struct s2s *s, size_t *in, size_t *out);

#endif
