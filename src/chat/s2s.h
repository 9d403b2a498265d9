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


/* ---- pieces, exposed for s2s_dns.c and the unit tests ----------------- */

#include <stdint.h>
#include <sys/socket.h>

struct uv_loop_s;

/*
 * XEP-0185 dialback key: hex(HMAC-SHA256(hex(SHA256(secret)), receiving + " " +
 * originating + " " + stream_id)). out holds 65 bytes. 0 or -EINVAL.
 */
#define S2S_DIALBACK_KEY_SIZE 65
int s2s_dialback_key(const void *secret, size_t secret_len, const char *receiving,
                     const char *originating, const char *stream_id,
                     char out[S2S_DIALBACK_KEY_SIZE]);

/* xmpp.s2s_routes: "DOMAIN=HOST:PORT,..." (HOST may be [v6]). */
struct s2s_route {
    char domain[256];
    char host[256];
    int port;
};
#define S2S_ROUTES_MAX 64
/* 0 with *n routes, or -EINVAL with err naming the bad entry. */
int s2s_routes_parse(const char *spec, struct s2s_route *out, size_t max, size_t *n,
                     char *err, size_t errlen);
/* The route for domain (exact, case-insensitive), or NULL. */
const struct s2s_route *s2s_routes_find(const struct s2s_route *r, size_t n, const char *domain);

/*
 * Finding a peer (s2s_dns.c, c-ares on the loop): a static route's host, or
 * SRV _xmpp-server._tcp.DOMAIN (by priority) and then A/AAAA DOMAIN on 5269.
 * cb gets up to S2S_DNS_MAX addresses in the order to try (n = 0 and a
 * negative status when nothing was found).
 */
#define S2S_DNS_MAX 16
struct s2s_addr {
    struct sockaddr_storage sa;
    socklen_t len;
};
typedef void (*s2s_dns_cb)(void *ud, int status, const struct s2s_addr *addrs, size_t n);
struct s2s_dns;
struct s2s_dns_query;
struct s2s_dns *s2s_dns_new(struct uv_loop_s *loop);
/* host non-NULL: resolve host:port only (a static route). Else SRV, then
 * domain:5269. NULL on failure (cb is not called then). */
struct s2s_dns_query *s2s_dns_lookup(struct s2s_dns *d, const char *domain, const char *host,
                                     int port, s2s_dns_cb cb, void *ud);
/* cb will not be called. */
void s2s_dns_cancel(struct s2s_dns_query *q);
/* Lookups not finished yet, cancelled ones included (they still use a
 * c-ares query until it answers or times out). */
size_t s2s_dns_pending(const struct s2s_dns *d);
/* Cancel everything and close the handles; done(arg) once they are closed. */
void s2s_dns_close(struct s2s_dns *d, void (*done)(void *arg), void *arg);

#endif
