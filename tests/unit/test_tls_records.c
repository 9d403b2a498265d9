/*
 * Slim TLS connections (tls_ctx_slim + tls_records): a tls_conn server on a
 * slim context against a plain OpenSSL client in memory, so that the client
 * side is OpenSSL's own record layer and can do what real clients do
 * (KeyUpdate, pipelining data after its Finished, close_notify, TLS 1.2).
 * Every TLS 1.3 suite; data both ways across record boundaries; input cut
 * into single bytes; pause and resume; KeyUpdate requested and not, and
 * our own periodic one; a forged record, a plaintext record; close both
 * ways.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/buf.h"
#include "net/tls.h"
#include "net/tls_records.h"

static char dir[256], cert[300], key[300];

struct server {
    struct tls_conn *c;
    struct buf out; /* ciphertext for the client */
    struct buf got; /* plaintext delivered */
    int pause_next;
};

struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
};

struct fixture {
    struct tls_ctx *sctx;
    struct server s;
    struct client c;
};

static int s_send(void *ud, const void *data, size_t len)
{
    return buf_append(&((struct server *)ud)->out, data, len);
}

static int s_recv(void *ud, const char *data, size_t len)
{
    struct server *s = ud;
    assert_int_equal(buf_append(&s->got, data, len), 0);
    int rc = s->pause_next;
    s->pause_next = 0;
    return rc;
}

/* Client -> server: everything the client wrote, in one feed. */
static int to_server(struct fixture *f)
{
    char tmp[65536];
    struct buf all;
    buf_init(&all, 0);
    int n;
    while ((n = BIO_read(f->c.wbio, tmp, sizeof tmp)) > 0)
        assert_int_equal(buf_append(&all, tmp, (size_t)n), 0);
    int rc = all.len ? tls_conn_feed(f->s.c, all.data, all.len) : 0;
    buf_free(&all);
    return rc;
}

/* Server -> client. */
static void to_client(struct fixture *f)
{
    if (f->s.out.len) {
        assert_int_equal(BIO_write(f->c.rbio, f->s.out.data, (int)f->s.out.len),
                         (int)f->s.out.len);
        buf_reset(&f->s.out);
    }
}

/* Opens a pair; suites: the client's TLS 1.3 list; max: its highest version. */
static void open_pair(struct fixture *f, const char *suites, int max_version)
{
    memset(f, 0, sizeof *f);
    char err[256];
    assert_int_equal(tls_ctx_new(TLS_SERVER, cert, key, NULL, &f->sctx, err, sizeof err), 0);
    tls_ctx_no_client_cert(f->sctx);
    tls_ctx_slim(f->sctx);
    buf_init(&f->s.out, 0);
    buf_init(&f->s.got, 0);
    struct tls_io io = {.ud = &f->s, .send = s_send, .recv = s_recv};
    f->s.c = tls_conn_new(f->sctx, NULL, &io);
    assert_non_null(f->s.c);

    f->c.ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(f->c.ctx);
    if (suites)
        assert_int_equal(SSL_CTX_set_ciphersuites(f->c.ctx, suites), 1);
    if (max_version)
        SSL_CTX_set_max_proto_version(f->c.ctx, max_version);
    f->c.ssl = SSL_new(f->c.ctx);
    f->c.rbio = BIO_new(BIO_s_mem());
    f->c.wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(f->c.ssl, f->c.rbio, f->c.wbio);
    SSL_set_connect_state(f->c.ssl);

    /* ClientHello; the server's flight; the client's Finished. */
    assert_int_equal(SSL_do_handshake(f->c.ssl), -1);
    assert_int_equal(to_server(f), 0);
    to_client(f);
    for (int i = 0; i < 4 && SSL_do_handshake(f->c.ssl) != 1; i++) {
        assert_int_equal(to_server(f), 0);
        to_client(f);
    }
    assert_int_equal(SSL_is_init_finished(f->c.ssl), 1);
}

static void close_pair(struct fixture *f)
{
    tls_conn_free(f->s.c);
    tls_ctx_free(f->sctx);
    buf_free(&f->s.out);
    buf_free(&f->s.got);
    SSL_free(f->c.ssl);
    SSL_CTX_free(f->c.ctx);
    ERR_clear_error();
}

/* What the client reads now, all of it. */
static size_t client_read(struct fixture *f, char *dst, size_t cap)
{
    to_client(f);
    size_t got = 0;
    int n;
    while (got < cap && (n = SSL_read(f->c.ssl, dst + got, (int)(cap - got))) > 0)
        got += (size_t)n;
    return got;
}

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 7 + seed) % 26);
}

/* The client's data arrives; the server's reaches the client. */
static void round_trip(struct fixture *f, size_t n, unsigned seed)
{
    char *a = malloc(n), *b = malloc(n + 1);
    assert_non_null(a);
    assert_non_null(b);
    fill(a, n, seed);
    assert_int_equal(SSL_write(f->c.ssl, a, (int)n), (int)n);
    buf_reset(&f->s.got);
    assert_int_equal(to_server(f), 0);
    assert_int_equal(f->s.got.len, n);
    assert_memory_equal(f->s.got.data, a, n);

    fill(a, n, seed + 1);
    assert_int_equal(tls_conn_write(f->s.c, a, n), 0);
    assert_int_equal(client_read(f, b, n + 1), n);
    assert_memory_equal(a, b, n);
    free(a);
    free(b);
}

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/hearth-tlsrec-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    char err[256];
    const char *names[] = {"example.test"};
    assert_int_equal(tls_cert_ensure(cert, key, names, 1, err, sizeof err), 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_every_suite(void **state)
{
    const char *suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                            "TLS_CHACHA20_POLY1305_SHA256"};
    for (size_t i = 0; i < 3; i++) {
        struct fixture f;
        open_pair(&f, suites[i], 0);
        assert_int_equal(to_server(&f), 0); /* the client's Finished */
        assert_true(tls_conn_ready(f.s.c));
        assert_true(tls_conn_slim(f.s.c));
        assert_string_equal(SSL_get_cipher_name(f.c.ssl), suites[i]);
        round_trip(&f, 1, 1);
        round_trip(&f, 100, 2);
        round_trip(&f, 40000, 3); /* three records each way */
        assert_false(tls_conn_peer_has_cert(f.s.c));
        assert_false(tls_conn_peer_verified(f.s.c, "example.test"));
        close_pair(&f);
    }
}

/* The client's first data travels with its Finished, in one feed: the
 * bytes OpenSSL left in its read BIO move to the record layer. */
static void test_data_with_the_finished(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(SSL_write(f.c.ssl, "<stream:stream>", 15), 15);
    assert_int_equal(to_server(&f), 0);
    assert_true(tls_conn_slim(f.s.c));
    assert_int_equal(f.s.got.len, 15);
    assert_memory_equal(f.s.got.data, "<stream:stream>", 15);
    round_trip(&f, 5000, 4);
    close_pair(&f);
}

/* Queued before the handshake ended: goes out under the new keys. */
static void test_write_before_ready(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_false(tls_conn_ready(f.s.c));
    assert_int_equal(tls_conn_write(f.s.c, "early", 5), 0);
    assert_int_equal(to_server(&f), 0);
    assert_true(tls_conn_slim(f.s.c));
    char b[16];
    assert_int_equal(client_read(&f, b, sizeof b), 5);
    assert_memory_equal(b, "early", 5);
    close_pair(&f);
}

static void test_byte_by_byte(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    char msg[3000];
    fill(msg, sizeof msg, 5);
    assert_int_equal(SSL_write(f.c.ssl, msg, 1000), 1000);
    assert_int_equal(SSL_write(f.c.ssl, msg + 1000, 2000), 2000);
    char tmp[8192];
    int n = BIO_read(f.c.wbio, tmp, sizeof tmp);
    assert_true(n > 3000);
    for (int i = 0; i < n; i++)
        assert_int_equal(tls_conn_feed(f.s.c, tmp + i, 1), 0);
    assert_int_equal(f.s.got.len, sizeof msg);
    assert_memory_equal(f.s.got.data, msg, sizeof msg);
    close_pair(&f);
}

static void test_pause_resume(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    assert_int_equal(SSL_write(f.c.ssl, "one", 3), 3);
    assert_int_equal(SSL_write(f.c.ssl, "two", 3), 3);
    f.s.pause_next = 7;
    assert_int_equal(to_server(&f), 7); /* paused after the first record */
    assert_int_equal(f.s.got.len, 3);
    assert_int_equal(SSL_write(f.c.ssl, "three", 5), 5);
    assert_int_equal(to_server(&f), 0); /* held while paused */
    assert_int_equal(f.s.got.len, 3);
    assert_int_equal(tls_conn_resume(f.s.c), 0);
    assert_int_equal(f.s.got.len, 11);
    assert_memory_equal(f.s.got.data, "onetwothree", 11);
    close_pair(&f);
}

static void test_key_update(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    round_trip(&f, 10, 6);
    /* Not requested: only the client's key moves on. */
    assert_int_equal(SSL_key_update(f.c.ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    round_trip(&f, 50, 7);
    /* Requested: ours must move on too, or the client cannot read us. */
    assert_int_equal(SSL_key_update(f.c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write(f.c.ssl, "x", 1), 1);
    assert_int_equal(to_server(&f), 0);
    assert_true(f.s.out.len > 0); /* our KeyUpdate */
    round_trip(&f, 20000, 8);
    assert_int_equal(SSL_key_update(f.c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    round_trip(&f, 10, 9);
    close_pair(&f);
}

static void test_our_own_key_update(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    tls_records_rekey_after = 3;
    for (unsigned i = 0; i < 10; i++) {
        char b[8];
        assert_int_equal(tls_conn_write(f.s.c, "ping", 4), 0);
        assert_int_equal(client_read(&f, b, sizeof b), 4);
        assert_memory_equal(b, "ping", 4);
    }
    tls_records_rekey_after = TLS_RECORDS_REKEY;
    round_trip(&f, 100, 10);
    close_pair(&f);
}

/* A flipped bit: the connection fails and the client is told. */
static void test_forged_record(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    assert_int_equal(SSL_write(f.c.ssl, "hello", 5), 5);
    char tmp[256];
    int n = BIO_read(f.c.wbio, tmp, sizeof tmp);
    assert_true(n > 20);
    tmp[10] ^= 1;
    assert_int_equal(tls_conn_feed(f.s.c, tmp, (size_t)n), -EPROTO);
    assert_int_equal(f.s.got.len, 0);
    assert_non_null(strstr(tls_conn_error(f.s.c), "authenticate"));
    char b[8];
    to_client(&f);
    assert_true(SSL_read(f.c.ssl, b, sizeof b) <= 0); /* bad_record_mac alert */
    assert_int_equal(SSL_get_error(f.c.ssl, -1), SSL_ERROR_SSL);
    /* Nothing more is taken. */
    assert_int_equal(tls_conn_feed(f.s.c, "x", 1), -EPROTO);
    assert_int_equal(tls_conn_write(f.s.c, "x", 1), -EPROTO);
    close_pair(&f);
}

static void test_plaintext_record_refused(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    const char alert[] = {21, 3, 3, 0, 2, 2, 40};
    assert_int_equal(tls_conn_feed(f.s.c, alert, sizeof alert), -EPROTO);
    assert_non_null(strstr(tls_conn_error(f.s.c), "unprotected"));
    close_pair(&f);
}

static void test_oversized_record_refused(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    const char hdr[] = {23, 3, 3, (char)0x41, 1}; /* 2^14 + 257 */
    assert_int_equal(tls_conn_feed(f.s.c, hdr, sizeof hdr), -EPROTO);
    assert_non_null(strstr(tls_conn_error(f.s.c), "2^14"));
    close_pair(&f);
}

static void test_close_both_ways(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, 0);
    assert_int_equal(to_server(&f), 0);
    /* Ours: the client sees a clean end. */
    tls_conn_shutdown(f.s.c);
    char b[8];
    to_client(&f);
    assert_int_equal(SSL_read(f.c.ssl, b, sizeof b), 0);
    assert_int_equal(SSL_get_error(f.c.ssl, 0), SSL_ERROR_ZERO_RETURN);
    /* Theirs: -EPIPE, after the data before it. */
    assert_int_equal(SSL_write(f.c.ssl, "bye", 3), 3);
    SSL_shutdown(f.c.ssl);
    assert_int_equal(to_server(&f), -EPIPE);
    assert_int_equal(f.s.got.len, 3);
    assert_non_null(strstr(tls_conn_error(f.s.c), "close_notify"));
    close_pair(&f);
}

/* TLS 1.2 keeps the SSL object and works as before. */
static void test_tls12_stays_with_openssl(void **state)
{
    struct fixture f;
    open_pair(&f, NULL, TLS1_2_VERSION);
    assert_int_equal(to_server(&f), 0);
    assert_true(tls_conn_ready(f.s.c));
    assert_false(tls_conn_slim(f.s.c));
    round_trip(&f, 30000, 11);
    close_pair(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_suite),
        cmocka_unit_test(test_data_with_the_finished),
        cmocka_unit_test(test_write_before_ready),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_key_update),
        cmocka_unit_test(test_our_own_key_update),
        cmocka_unit_test(test_forged_record),
        cmocka_unit_test(test_plaintext_record_refused),
        cmocka_unit_test(test_oversized_record_refused),
        cmocka_unit_test(test_close_both_ways),
        cmocka_unit_test(test_tls12_stays_with_openssl),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
