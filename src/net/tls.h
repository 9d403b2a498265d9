/*
 * TLS over any byte transport, on OpenSSL memory BIOs.
 *
 * The engine owns no socket: ciphertext that arrived is fed in, ciphertext
 * to send comes out through a callback, and so does the decrypted data. That
 * is what XMPP needs, where a stream starts in plaintext and switches to TLS
 * in the middle (STARTTLS, RFC 6120 5), on c2s and on s2s alike, and what
 * keeps it testable without a network.
 *
 * Certificates: a context is made from PEM files. When the operator gives
 * none, tls_cert_ensure writes a self-signed one (EC P-256, the names in the
 * subjectAltName) the first time, and reuses it afterwards.
 *
 * Loop thread only; one tls_conn per connection.
 */
#ifndef HEARTH_NET_TLS_H
#define HEARTH_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct tls_ctx;
struct tls_conn;

enum tls_role { TLS_SERVER, TLS_CLIENT };

/*
 * A context for one role. cert_path/key_path: PEM; required for a server,
 * optional for a client (s2s presents ours, for SASL EXTERNAL on the other
 * side). ca_path: PEM bundle to verify peers with; NULL or "": the system's
 * default store. A server context asks for (but does not require) a client
 * certificate, so s2s peers can offer one. 0, or -EINVAL with err set.
 */
int tls_ctx_new(enum tls_role role, const char *cert_path, const char *key_path,
                const char *ca_path, struct tls_ctx **out, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);
/* A server context that asks for no client certificate (c2s: clients
 * would prompt their user to pick one). Before any tls_conn_new on it. */
void tls_ctx_no_client_cert(struct tls_ctx *ctx);
/* After a TLS 1.3 handshake, connections of this context keep only their
 * traffic keys (tls_records.h): about 15 KB less each. Their peer's
 * certificate is not kept, so for contexts that ask for none (c2s). */
void tls_ctx_slim(struct tls_ctx *ctx);

/*
 * When cert_path does not exist: generate a key and a self-signed certificate
 * valid for names[0..n) (CN names[0], every name in subjectAltName, ten
 * years) and write both (key mode 0600). 1 when generated, 0 when the files
 * were already there, negative with err set on failure.
 */
int tls_cert_ensure(const char *cert_path, const char *key_path, const char *const *names,
                    size_t n, char *err, size_t errlen);

struct tls_io {
    void *ud;
    /* Ciphertext for the peer. Return 0, or negative to fail the call that
     * produced it. */
    int (*send)(void *ud, const void *data, size_t len);
    /* Decrypted bytes from the peer. Same returns; a positive return stops
     * delivering the rest of this feed (the caller paused) and makes
     * tls_conn_feed return it; tls_conn_resume delivers what is held. */
    int (*recv)(void *ud, const char *data, size_t len);
    /* The handshake finished (once). May be NULL. */
    void (*ready)(void *ud);
};

/*
 * A connection. server_name (client role): SNI and the name the peer's
 * certificate is checked against by tls_conn_peer_verified; NULL for a
 * server. A client sends its ClientHello at once (through io->send).
 * NULL on -ENOMEM.
 */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *server_name,
                              const struct tls_io *io);
void tls_conn_free(struct tls_conn *c);

/* Ciphertext from the peer. 0, a positive value from io->recv, or negative
 * on a TLS failure (tls_conn_error says why; close the connection). */
int tls_conn_feed(struct tls_conn *c, const void *data, size_t len);
/* Deliver decrypted bytes held back by a positive io->recv. Same returns. */
int tls_conn_resume(struct tls_conn *c);
/* Plaintext for the peer; written as soon as the handshake allows. 0 or
 * negative. */
int tls_conn_write(struct tls_conn *c, const void *data, size_t len);
/* Send close_notify. */
void tls_conn_shutdown(struct tls_conn *c);

bool tls_conn_ready(const struct tls_conn *c);
/* Whether the connection went over to tls_records (see tls_ctx_slim). */
bool tls_conn_slim(const struct tls_conn *c);
/*
 * Whether the peer presented a certificate that chains to the context's CA
 * store and is valid for domain (subjectAltName dNSName, RFC 6125 rules,
 * wildcards in the left-most label). For SASL EXTERNAL and s2s_secure_auth.
 */
bool tls_conn_peer_verified(const struct tls_conn *c, const char *domain);
/* Whether the peer presented any certificate. */
bool tls_conn_peer_has_cert(const struct tls_conn *c);
/* A line for the log about the last failure. */
const char *tls_conn_error(const struct tls_conn *c);

#endif
