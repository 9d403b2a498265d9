/*
 * TLS over any byte transport, on OpenSSL BIOs that own no socket (see tls.h).
 *
 * Each connection is an SSL object between two BIOs: ciphertext the peer
 * sent is written into a memory BIO by tls_conn_feed, and every record
 * OpenSSL writes goes through a small BIO of our own straight to io->send
 * (no copy in and out of a second memory BIO). Decrypted records are read into one scratch
 * buffer shared by every connection (loop thread only) and handed to
 * io->recv at once, so an idle connection holds no plaintext. When io->recv
 * pauses, the ciphertext not yet decrypted simply stays in the read BIO
 * until tls_conn_resume.
 *
 * Plaintext written before the handshake is done waits in a bounded buffer.
 *
 * Peer certificates: every context verifies with SSL_VERIFY_PEER (except a
 * server context for clients, tls_ctx_no_client_cert, which asks for none),
 * but the verify callback never fails the handshake; it records the first error.
 * Whether the peer is who it says is decided later, per domain, by
 * tls_conn_peer_verified (chain result + X509_check_host), because XMPP
 * learns the domain to check (stream 'from', dialback, SASL EXTERNAL) after
 * the handshake, and an unverified s2s peer may still use dialback.
 *
 * Memory per connection is what 10,000 chat viewers cost: buffers released
 * when idle (SSL_MODE_RELEASE_BUFFERS), no server-side session cache and no
 * TLS 1.3 tickets (XMPP clients do not resume). On a context marked with
 * tls_ctx_slim, a connection that finished a TLS 1.3 handshake goes
 * further: the SSL object is freed and its records are protected by
 * tls_records (see tls_records.h) with the two traffic secrets OpenSSL
 * reported through the key-log callback, about 15 KB less per connection.
 * TLS 1.2, other suites, or bytes that OpenSSL already holds at that moment
 * keep the SSL object, and nothing else changes.
 */
#include "net/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/buf.h"
#include "core/util.h"
#include "net/tls_records.h"

/* Plaintext queued before the handshake completes. */
#define TLS_PENDING_LIMIT (1u << 20)
/* Ciphertext fed while the reader is paused (the caller should stop
 * reading its socket meanwhile; this is the backstop). */
#define TLS_PAUSED_INPUT_LIMIT (1u << 20)
/* Room for a path in an error message. */
#define PATH_MSG 4300

struct tls_ctx {
    SSL_CTX *ssl;
    enum tls_role role;
    bool slim;
};

/* The application traffic secrets, as the key-log callback reports them. */
struct traffic_secrets {
    uint8_t client[48], server[48];
    size_t client_len, server_len;
};

struct tls_conn {
    SSL *ssl;         /* NULL once slim */
    BIO *rbio, *wbio; /* owned by ssl */
    struct tls_io io;
    bool ready, failed, paused, slim;
    int verify_err; /* first X509_V_ERR_* seen while verifying the peer; 0 ok */
    int send_rc;    /* io->send failed with this */
    struct buf pending;
    struct traffic_secrets *secrets; /* slim contexts, during the handshake */
    struct tls_records *rec;         /* slim: the record layer */
    struct buf in;                   /* slim: ciphertext not yet opened */
    char err[200];
};

/* Loop thread only, shared by every connection: decrypted input passes
 * through here on its way to io->recv. */
static unsigned char plain_scratch[16384];

static void set_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char detail[160] = "";
    if (e)
        ERR_error_string_n(e, detail, sizeof detail);
    snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
    ERR_clear_error();
}

/* --- contexts -------------------------------------------------------------------- */

static int verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (!ok && c && c->verify_err == 0) {
        int e = X509_STORE_CTX_get_error(x);
        c->verify_err = e ? e : X509_V_ERR_UNSPECIFIED;
    }
    return 1; /* decided later, per domain: tls_conn_peer_verified */
}

int tls_ctx_new(enum tls_role role, const char *cert_path, const char *key_path,
                const char *ca_path, struct tls_ctx **out, char *err, size_t errlen)
{
    *out = NULL;
    bool have_cert = cert_path && *cert_path;
    if (role == TLS_SERVER && !have_cert) {
        snprintf(err, errlen, "a TLS server needs a certificate");
        return -EINVAL;
    }
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(role == TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (!s) {
        set_err(err, errlen, "SSL_CTX_new");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (role == TLS_SERVER) {
        SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(s, 0);
        SSL_CTX_set_session_id_context(s, (const unsigned char *)"hearth", 6);
    } else {
        SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    }
    if (have_cert) {
        if (SSL_CTX_use_certificate_chain_file(s, cert_path) != 1) {
            char what[PATH_MSG];
            snprintf(what, sizeof what, "cannot load certificate %s", cert_path);
            set_err(err, errlen, what);
            goto fail;
        }
        const char *kp = key_path && *key_path ? key_path : cert_path;
        if (SSL_CTX_use_PrivateKey_file(s, kp, SSL_FILETYPE_PEM) != 1) {
            char what[PATH_MSG];
            snprintf(what, sizeof what, "cannot load private key %s", kp);
            set_err(err, errlen, what);
            goto fail;
        }
        if (SSL_CTX_check_private_key(s) != 1) {
            set_err(err, errlen, "the private key does not match the certificate");
            goto fail;
        }
    }
    if (ca_path && *ca_path) {
        struct stat st;
        bool dir = stat(ca_path, &st) == 0 && S_ISDIR(st.st_mode);
        if (SSL_CTX_load_verify_locations(s, dir ? NULL : ca_path, dir ? ca_path : NULL) != 1) {
            char what[PATH_MSG];
            snprintf(what, sizeof what, "cannot load CA certificates %s", ca_path);
            set_err(err, errlen, what);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(s) != 1) {
        set_err(err, errlen, "cannot load the system's CA certificates");
        goto fail;
    }
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER, verify_cb);

    struct tls_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        SSL_CTX_free(s);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ctx->ssl = s;
    ctx->role = role;
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(s);
    return -EINVAL;
}

void tls_ctx_no_client_cert(struct tls_ctx *ctx)
{
    /* Without SSL_VERIFY_PEER a server sends no CertificateRequest. */
    SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_NONE, NULL);
}

/* Parse "LABEL <client random hex> <secret hex>" into the connection's
 * traffic_secrets; the handshake secrets are of no use here. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (!c || c->slim)
        return;
    bool client = strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0;
    if (!client && strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) != 0)
        return;
    if (!c->secrets && !(c->secrets = OPENSSL_zalloc(sizeof *c->secrets)))
        return;
    uint8_t *dst = client ? c->secrets->client : c->secrets->server;
    size_t *dlen = client ? &c->secrets->client_len : &c->secrets->server_len;
    const char *p = strchr(line + 24, ' '); /* past the client random */
    size_t n = 0;
    if (p && OPENSSL_hexstr2buf_ex(dst, 48, &n, p + 1, '\0') == 1)
        *dlen = n;
}

void tls_ctx_slim(struct tls_ctx *ctx)
{
    ctx->slim = true;
    SSL_CTX_set_keylog_callback(ctx->ssl, keylog_cb);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* --- self-signed certificate ------------------------------------------------------- */

static int mkdir_parent(const char *path)
{
    char dir[4096];
    if (util_strlcpy(dir, path, sizeof dir) != 0)
        return -ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    return util_mkdir_p(dir);
}

/* Write through a temporary file and rename, so that a crash never leaves
 * half a key where the next start would trust it. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = -errno;
        close(fd);
        unlink(tmp);
        return e;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -EINVAL;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -ENOMEM;
}

int tls_cert_ensure(const char *cert_path, const char *key_path, const char *const *names,
                    size_t n, char *err, size_t errlen)
{
    struct stat st;
    if (stat(cert_path, &st) == 0) {
        if (stat(key_path, &st) != 0) {
            snprintf(err, errlen, "certificate %s exists but its key %s does not", cert_path,
                     key_path);
            return -ENOENT;
        }
        return 0;
    }
    if (n == 0) {
        snprintf(err, errlen, "no names for the certificate");
        return -EINVAL;
    }
    struct buf san;
    buf_init(&san, 0);
    for (size_t i = 0; i < n; i++) {
        /* The SAN value is parsed as a comma-separated list. */
        if (!names[i][0] || strpbrk(names[i], ",:\n\r") || strlen(names[i]) > 253) {
            snprintf(err, errlen, "cannot put name '%s' in a certificate", names[i]);
            buf_free(&san);
            return -EINVAL;
        }
        if (buf_printf(&san, "%sDNS:%s", i ? "," : "", names[i]) != 0 || buf_cstr(&san) != 0) {
            buf_free(&san);
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
    }
    int rc;
    if ((rc = mkdir_parent(cert_path)) != 0 || (rc = mkdir_parent(key_path)) != 0) {
        snprintf(err, errlen, "cannot create the directory for %s: %s", cert_path, strerror(-rc));
        buf_free(&san);
        return rc;
    }

    ERR_clear_error();
    rc = -EIO;
    X509 *x = NULL;
    BIGNUM *bn = NULL;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!key) {
        set_err(err, errlen, "cannot generate a key");
        goto out;
    }
    x = X509_new();
    unsigned char serial[16];
    if (!x || RAND_bytes(serial, sizeof serial) != 1)
        goto ssl_fail;
    serial[0] &= 0x7f; /* positive, at most 20 octets (RFC 5280 4.1.2.2) */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    X509_NAME *name = X509_get_subject_name(x);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL) || !X509_set_pubkey(x, key) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)names[0],
                                    -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
        add_ext(x, NID_key_usage, "critical,digitalSignature") ||
        add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth") ||
        add_ext(x, NID_subject_key_identifier, "hash") ||
        add_ext(x, NID_subject_alt_name, san.data) || !X509_sign(x, key, EVP_sha256()))
        goto ssl_fail;

    /* The key first: a certificate on disk means its key is there too. */
    if ((rc = write_pem(key_path, 0600, key, NULL)) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", key_path, strerror(-rc));
        goto out;
    }
    if ((rc = write_pem(cert_path, 0644, NULL, x)) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", cert_path, strerror(-rc));
        goto out;
    }
    rc = 1;
    goto out;
ssl_fail:
    set_err(err, errlen, "cannot make the certificate");
    rc = -EIO;
out:
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
    buf_free(&san);
    return rc;
}

/* --- connections ------------------------------------------------------------------------ */

static int fail(struct tls_conn *c, const char *what, int code);

/*
 * The write side is a BIO of our own: each record OpenSSL writes goes
 * straight to io->send, without a copy into a memory BIO and another out
 * of it (a chat message to 10,000 viewers is 10,000 records). A failed send
 * fails the OpenSSL call that made it; send_rc keeps the transport's code.
 */
static BIO_METHOD *out_method;

static int out_write(BIO *b, const char *data, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!c || c->send_rc < 0)
        return -1;
    int rc = c->io.send(c->io.ud, data, (size_t)len);
    if (rc < 0) {
        c->send_rc = rc;
        return -1;
    }
    return len;
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* nothing is ever pending here */
}

static int out_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO *out_bio(struct tls_conn *c)
{
    if (!out_method) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hearth-tls-out");
        if (!m || !BIO_meth_set_write(m, out_write) || !BIO_meth_set_ctrl(m, out_ctrl) ||
            !BIO_meth_set_create(m, out_create)) {
            BIO_meth_free(m);
            return NULL;
        }
        out_method = m;
    }
    BIO *b = BIO_new(out_method);
    if (b)
        BIO_set_data(b, c);
    return b;
}

/* The transport's failure, if a send failed during the last OpenSSL call. */
static int flush(struct tls_conn *c) { return c->send_rc < 0 ? c->send_rc : 0; }

/*
 * The read side is a memory BIO, and it keeps the capacity it grew to: the
 * handshake's flights and any large burst would stay allocated on every
 * idle connection, so an empty BIO that grew past `keep` is swapped for a
 * new one. 10,000 chat viewers are 10,000 idle connections.
 */
static void bio_trim(struct tls_conn *c, size_t keep)
{
    BUF_MEM *bm = NULL;
    if (BIO_ctrl_pending(c->rbio) == 0 && BIO_get_mem_ptr(c->rbio, &bm) == 1 && bm &&
        bm->max > keep) {
        BIO *b = BIO_new(BIO_s_mem());
        if (b) {
            SSL_set0_rbio(c->ssl, b);
            c->rbio = b;
        }
    }
}

static int fail(struct tls_conn *c, const char *what, int code)
{
    if (!c->failed) {
        set_err(c->err, sizeof c->err, what);
        c->failed = true;
    }
    ERR_clear_error();
    /* The transport's own failure says more than OpenSSL's. */
    return c->send_rc < 0 ? c->send_rc : code;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *server_name,
                              const struct tls_io *io)
{
    struct tls_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->io = *io;
    buf_init(&c->pending, TLS_PENDING_LIMIT);
    buf_init(&c->in, TLS_PAUSED_INPUT_LIMIT);
    ERR_clear_error();
    c->ssl = SSL_new(ctx->ssl);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = out_bio(c);
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_app_data(c->ssl, c);
    if (ctx->role == TLS_SERVER) {
        SSL_set_accept_state(c->ssl);
        return c;
    }
    SSL_set_connect_state(c->ssl);
    if (server_name && *server_name && !SSL_set_tlsext_host_name(c->ssl, server_name)) {
        fail(c, "cannot set the server name", -EINVAL);
        return c; /* fails on first use, with the reason in tls_conn_error */
    }
    /* The ClientHello goes out now. */
    int r = SSL_do_handshake(c->ssl);
    int e = SSL_get_error(c->ssl, r);
    if (flush(c) < 0)
        fail(c, "cannot send the ClientHello", -EIO);
    else if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        fail(c, "TLS handshake failed", -EPROTO);
    return c;
}

void tls_conn_free(struct tls_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl); /* frees the BIOs; NULL once slim */
    tls_records_free(c->rec);
    OPENSSL_clear_free(c->secrets, sizeof *c->secrets);
    buf_free(&c->pending);
    buf_free(&c->in);
    free(c);
}

/* --- slim connections: tls_records after the handshake ---------------------------- */

static int slim_send(void *ud, const void *data, size_t len)
{
    struct tls_conn *c = ud;
    if (c->send_rc < 0)
        return c->send_rc;
    int rc = c->io.send(c->io.ud, data, len);
    if (rc < 0)
        c->send_rc = rc;
    return rc;
}

/*
 * At the end of a TLS 1.3 handshake on a slim context: keep the traffic
 * keys, free the SSL object. The ciphertext the peer sent after its
 * Finished is still in the read BIO (OpenSSL reads a record at a time)
 * and moves to c->in. Anything unusual keeps the SSL object.
 */
static void go_slim(struct tls_conn *c)
{
    struct traffic_secrets *t = c->secrets;
    c->secrets = NULL;
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
    unsigned suite = ci ? (unsigned)(SSL_CIPHER_get_id(ci) & 0xffff) : 0;
    if (SSL_version(c->ssl) != TLS1_3_VERSION || !tls_records_suite_supported(suite) ||
        SSL_has_pending(c->ssl) || SSL_get0_peer_certificate(c->ssl) ||
        !t->client_len || t->client_len != t->server_len)
        goto out;
    bool server = SSL_is_server(c->ssl);
    c->rec = tls_records_new(suite, server ? t->client : t->server,
                             server ? t->server : t->client, t->client_len);
    if (!c->rec)
        goto out;
    size_t left = BIO_ctrl_pending(c->rbio);
    if (left) {
        char *data = NULL;
        long n = BIO_get_mem_data(c->rbio, &data);
        if (n < 0 || (size_t)n != left || buf_append(&c->in, data, left) != 0) {
            tls_records_free(c->rec);
            c->rec = NULL;
            buf_free(&c->in);
            goto out;
        }
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->rbio = c->wbio = NULL;
    c->slim = true;
out:
    OPENSSL_clear_free(t, sizeof *t);
}

static int slim_fail(struct tls_conn *c, int alert, int code)
{
    if (alert && c->send_rc == 0) {
        const uint8_t a[2] = {2 /* fatal */, (uint8_t)alert};
        (void)tls_records_seal(c->rec, TLS_CT_ALERT, a, sizeof a, slim_send, c);
    }
    if (!c->failed) {
        const char *why = tls_records_error(c->rec); /* "no error": not the records' fault */
        if (strcmp(why, "no error") != 0)
            snprintf(c->err, sizeof c->err, "TLS: %s", why);
        else
            snprintf(c->err, sizeof c->err, "TLS: %s", strerror(-code));
        c->failed = true;
    }
    return c->send_rc < 0 ? c->send_rc : code;
}

/* Open and deliver the records in p[0..len) until they run out or the
 * reader pauses; *used: the bytes taken. Returns as pump does. */
static int slim_open(struct tls_conn *c, const uint8_t *p, size_t len, size_t *used)
{
    size_t off = 0;
    int rc = 0;
    while (!c->paused) {
        struct tls_record_in r;
        int alert;
        long n = tls_records_open(c->rec, p + off, len - off, &r, &alert, slim_send, c);
        if (n == 0)
            break;
        if (n < 0) {
            rc = slim_fail(c, alert, -EPROTO);
            break;
        }
        off += (size_t)n;
        if (c->send_rc < 0) { /* our KeyUpdate could not go out */
            rc = slim_fail(c, 0, c->send_rc);
            break;
        }
        if (r.type == TLS_CT_ALERT) {
            if (r.data[1] == 90) /* user_canceled: a close_notify follows */
                continue;
            c->failed = true;
            if (r.data[1] == TLS_ALERT_CLOSE_NOTIFY) {
                snprintf(c->err, sizeof c->err, "peer closed TLS (close_notify)");
                rc = -EPIPE;
            } else {
                snprintf(c->err, sizeof c->err, "peer sent TLS alert %u", r.data[1]);
                rc = -EPROTO;
            }
            break;
        }
        if (r.type != TLS_CT_APPLICATION_DATA || r.len == 0)
            continue;
        rc = c->io.recv(c->io.ud, (const char *)r.data, r.len);
        tls_records_wipe(&r);
        if (rc < 0)
            break;
        if (rc > 0) {
            c->paused = true;
            break;
        }
        if (c->failed) {
            rc = -EPROTO;
            break;
        }
    }
    *used = off;
    return rc;
}

/* Deliver what waits in c->in; an empty buffer gives its memory back. */
static int slim_drain(struct tls_conn *c)
{
    size_t used = 0;
    int rc = slim_open(c, (const uint8_t *)c->in.data, c->in.len, &used);
    buf_consume(&c->in, used);
    if (c->in.len == 0)
        buf_free(&c->in);
    return rc;
}

static int slim_feed(struct tls_conn *c, const void *data, size_t len)
{
    if (c->in.len == 0 && !c->paused) {
        /* The usual case: straight from the caller's buffer, and only a
         * record cut short by the read is kept. */
        size_t used = 0;
        int rc = slim_open(c, data, len, &used);
        if (rc >= 0 && !c->failed && used < len &&
            buf_append(&c->in, (const char *)data + used, len - used) != 0)
            return slim_fail(c, TLS_ALERT_INTERNAL_ERROR, -ENOBUFS);
        return rc;
    }
    if (buf_append(&c->in, data, len) != 0) {
        snprintf(c->err, sizeof c->err, "too much input while paused");
        c->failed = true;
        return -ENOBUFS;
    }
    return c->paused ? 0 : slim_drain(c);
}

/* --- either kind -------------------------------------------------------------------- */

static int write_plain(struct tls_conn *c, const void *data, size_t len)
{
    if (c->slim) {
        int rc = tls_records_seal(c->rec, TLS_CT_APPLICATION_DATA, data, len, slim_send, c);
        return rc < 0 ? slim_fail(c, 0, rc) : 0;
    }
    const unsigned char *p = data;
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        ERR_clear_error();
        int n = SSL_write(c->ssl, p, chunk);
        if (n <= 0)
            return fail(c, "TLS write failed", -EPROTO);
        p += n;
        len -= (size_t)n;
        int rc = flush(c);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Move the handshake along, then decrypt and deliver until the input runs
 * dry or the reader pauses. */
static int pump(struct tls_conn *c)
{
    if (c->failed)
        return -EPROTO;
    if (!c->ready) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        int e = SSL_get_error(c->ssl, r);
        int rc = flush(c);
        if (rc < 0)
            return rc;
        if (r != 1) {
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            return fail(c, "TLS handshake failed", -EPROTO);
        }
        c->ready = true;
        if (c->secrets)
            go_slim(c);
        else
            bio_trim(c, 0);
        if (c->io.ready)
            c->io.ready(c->io.ud);
        if (c->failed)
            return -EPROTO;
        if (c->pending.len) {
            rc = write_plain(c, c->pending.data, c->pending.len);
            buf_free(&c->pending);
            if (rc < 0)
                return rc;
        }
    }
    if (c->slim)
        return slim_drain(c);
    while (!c->paused) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, plain_scratch, sizeof plain_scratch);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            int rc = flush(c); /* post-handshake messages, alerts */
            if (rc < 0)
                return rc;
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                bio_trim(c, 8192);
                return 0;
            }
            if (e == SSL_ERROR_ZERO_RETURN) {
                c->failed = true;
                snprintf(c->err, sizeof c->err, "peer closed TLS (close_notify)");
                return -EPIPE;
            }
            return fail(c, "TLS read failed", -EPROTO);
        }
        int rc = c->io.recv(c->io.ud, (const char *)plain_scratch, (size_t)n);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            c->paused = true;
            return rc;
        }
        if (c->failed)
            return -EPROTO;
    }
    return 0;
}

int tls_conn_feed(struct tls_conn *c, const void *data, size_t len)
{
    if (c->failed)
        return -EPROTO;
    if (c->slim)
        return len ? slim_feed(c, data, len) : 0;
    if (len > 0) {
        if (c->paused && BIO_ctrl_pending(c->rbio) + len > TLS_PAUSED_INPUT_LIMIT)
            return fail(c, "too much input while paused", -ENOBUFS);
        if (len > INT_MAX || BIO_write(c->rbio, data, (int)len) != (int)len)
            return fail(c, "cannot buffer input", -ENOMEM);
    }
    if (c->paused)
        return 0;
    return pump(c);
}

int tls_conn_resume(struct tls_conn *c)
{
    c->paused = false;
    return pump(c);
}

int tls_conn_write(struct tls_conn *c, const void *data, size_t len)
{
    if (c->failed)
        return -EPROTO;
    if (len == 0)
        return 0;
    if (!c->ready) {
        int rc = buf_append(&c->pending, data, len);
        if (rc < 0)
            snprintf(c->err, sizeof c->err, "too much output before the handshake finished");
        return rc;
    }
    return write_plain(c, data, len);
}

void tls_conn_shutdown(struct tls_conn *c)
{
    if (c->failed || !c->ready)
        return;
    if (c->slim) {
        const uint8_t a[2] = {1 /* warning */, TLS_ALERT_CLOSE_NOTIFY};
        (void)tls_records_seal(c->rec, TLS_CT_ALERT, a, sizeof a, slim_send, c);
        return;
    }
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    (void)flush(c);
    ERR_clear_error();
}

bool tls_conn_ready(const struct tls_conn *c) { return c->ready && !c->failed; }

bool tls_conn_slim(const struct tls_conn *c) { return c->slim; }

bool tls_conn_peer_verified(const struct tls_conn *c, const char *domain)
{
    if (!c->ready || !c->ssl || !domain || !*domain)
        return false;
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (!cert || c->verify_err != 0 || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
    /* RFC 6125: DNS-IDs in subjectAltName; the CN only when there are none;
     * a wildcard only as the whole left-most label. */
    int r = X509_check_host(cert, domain, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL);
    ERR_clear_error();
    return r == 1;
}

bool tls_conn_peer_has_cert(const struct tls_conn *c)
{
    return c->ssl && SSL_get0_peer_certificate(c->ssl) != NULL;
}

const char *tls_conn_error(const struct tls_conn *c) { return c->err[0] ? c->err : "no error"; }
