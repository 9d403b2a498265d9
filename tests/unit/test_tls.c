/*
 * TLS engine: a generated certificate, then a server and a client tls_conn
 * talking to each other in memory (each one's send callback fills the other's
 * inbox, and a loop feeds the inboxes until both are quiet). Handshake, data
 * both ways, writes queued before the handshake, pause and resume,
 * certificate verification by name and by CA, client certificates, garbage,
 * close_notify.
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
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "net/tls.h"

static char dir[256];
static char cert[300], key[300], wcert[300], wkey[300], other[300], okey[300];

struct end {
    struct tls_conn *c;
    struct buf inbox; /* ciphertext from the peer, not yet fed */
    struct buf got;   /* plaintext delivered */
    struct end *peer;
    int ready_calls;
    int pause_next;   /* return this from recv once */
    int fail_send;    /* when set, send returns it */
    int fed_rc;
};

static int on_send(void *ud, const void *data, size_t len)
{
    struct end *e = ud;
    if (e->fail_send)
        return e->fail_send;
    return buf_append(&e->peer->inbox, data, len);
}

static int on_recv(void *ud, const char *data, size_t len)
{
    struct end *e = ud;
    assert_int_equal(buf_append(&e->got, data, len), 0);
    int rc = e->pause_next;
    e->pause_next = 0;
    return rc;
}

static void on_ready(void *ud) { ((struct end *)ud)->ready_calls++; }

static void end_init(struct end *e, struct end *peer)
{
    memset(e, 0, sizeof *e);
    buf_init(&e->inbox, 0);
    buf_init(&e->got, 0);
    e->peer = peer;
}

static void end_free(struct end *e)
{
    tls_conn_free(e->c);
    buf_free(&e->inbox);
    buf_free(&e->got);
}

static struct tls_io io_for(struct end *e)
{
    struct tls_io io = {.ud = e, .send = on_send, .recv = on_recv, .ready = on_ready};
    return io;
}

/* Feed each side what the other sent until nothing moves; stop at the first
 * non-zero feed result and keep it in fed_rc. */
static void exchange(struct end *a, struct end *b)
{
    for (int round = 0; round < 50; round++) {
        bool moved = false;
        struct end *both[2] = {a, b};
        for (int i = 0; i < 2; i++) {
            struct end *e = both[i];
            if (e->inbox.len == 0)
                continue;
            struct buf in = e->inbox;
            buf_init(&e->inbox, 0);
            e->fed_rc = tls_conn_feed(e->c, in.data, in.len);
            buf_free(&in);
            moved = true;
            if (e->fed_rc != 0)
                return;
        }
        if (!moved)
            return;
    }
    fail_msg("the handshake did not settle");
}

struct pair {
    struct tls_ctx *sctx, *cctx;
    struct end s, c;
};

static void pair_open(struct pair *p, const char *client_ca, const char *client_cert,
                      const char *client_key, const char *server_name)
{
    char err[256];
    assert_int_equal(tls_ctx_new(TLS_SERVER, cert, key, cert, &p->sctx, err, sizeof err), 0);
    assert_int_equal(tls_ctx_new(TLS_CLIENT, client_cert, client_key, client_ca, &p->cctx, err,
                                 sizeof err),
                     0);
    end_init(&p->s, &p->c);
    end_init(&p->c, &p->s);
    struct tls_io sio = io_for(&p->s), cio = io_for(&p->c);
    p->s.c = tls_conn_new(p->sctx, NULL, &sio);
    assert_non_null(p->s.c);
    p->c.c = tls_conn_new(p->cctx, server_name, &cio);
    assert_non_null(p->c.c);
    /* The ClientHello went out at once. */
    assert_true(p->s.inbox.len > 0);
}

static void pair_close(struct pair *p)
{
    end_free(&p->s);
    end_free(&p->c);
    tls_ctx_free(p->sctx);
    tls_ctx_free(p->cctx);
}

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/hearth-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(cert, sizeof cert, "%s/a/b/cert.pem", dir);
    snprintf(key, sizeof key, "%s/a/b/key.pem", dir);
    snprintf(wcert, sizeof wcert, "%s/w/cert.pem", dir);
    snprintf(wkey, sizeof wkey, "%s/w/key.pem", dir);
    snprintf(other, sizeof other, "%s/o/cert.pem", dir);
    snprintf(okey, sizeof okey, "%s/o/key.pem", dir);
    char err[256];
    const char *names[] = {"example.test", "chat.example.test"};
    const char *wnames[] = {"*.wild.test"};
    const char *onames[] = {"example.test"};
    assert_int_equal(tls_cert_ensure(cert, key, names, 2, err, sizeof err), 1);
    assert_int_equal(tls_cert_ensure(wcert, wkey, wnames, 1, err, sizeof err), 1);
    assert_int_equal(tls_cert_ensure(other, okey, onames, 1, err, sizeof err), 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_cert_ensure(void **state)
{
    char err[256];
    const char *names[] = {"example.test"};
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(cert, &st), 0);
    off_t size = st.st_size;
    /* Second time: kept as it is. */
    assert_int_equal(tls_cert_ensure(cert, key, names, 1, err, sizeof err), 0);
    assert_int_equal(stat(cert, &st), 0);
    assert_int_equal(st.st_size, size);
    /* A certificate whose key is gone is an error, not a silent reuse. */
    char lone[320], nokey[320];
    snprintf(lone, sizeof lone, "%s/lone.pem", dir);
    snprintf(nokey, sizeof nokey, "%s/missing-key.pem", dir);
    FILE *f = fopen(lone, "w");
    assert_non_null(f);
    fclose(f);
    assert_true(tls_cert_ensure(lone, nokey, names, 1, err, sizeof err) < 0);
    /* Names that would change the subjectAltName list are refused. */
    char c2[320], k2[320];
    snprintf(c2, sizeof c2, "%s/bad/cert.pem", dir);
    snprintf(k2, sizeof k2, "%s/bad/key.pem", dir);
    const char *bad[] = {"a.test,DNS:evil.test"};
    assert_int_equal(tls_cert_ensure(c2, k2, bad, 1, err, sizeof err), -EINVAL);
    assert_int_not_equal(stat(c2, &st), 0);
}

static void test_ctx_errors(void **state)
{
    char err[256] = "";
    struct tls_ctx *ctx = (struct tls_ctx *)1;
    assert_int_equal(tls_ctx_new(TLS_SERVER, NULL, NULL, NULL, &ctx, err, sizeof err), -EINVAL);
    assert_null(ctx);
    assert_true(err[0] != '\0');
    char missing[320];
    snprintf(missing, sizeof missing, "%s/nope.pem", dir);
    err[0] = '\0';
    assert_int_equal(tls_ctx_new(TLS_SERVER, missing, missing, NULL, &ctx, err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "nope.pem"));
    /* A key that belongs to another certificate. */
    assert_int_equal(tls_ctx_new(TLS_SERVER, cert, okey, NULL, &ctx, err, sizeof err), -EINVAL);
    assert_null(ctx);
}

static void test_handshake_and_data(void **state)
{
    struct pair p;
    pair_open(&p, cert, NULL, NULL, "example.test");
    /* Written before the handshake: held, then sent. */
    assert_int_equal(tls_conn_write(p.c.c, "early ", 6), 0);
    assert_false(tls_conn_ready(p.c.c));
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.fed_rc, 0);
    assert_int_equal(p.c.fed_rc, 0);
    assert_true(tls_conn_ready(p.s.c));
    assert_true(tls_conn_ready(p.c.c));
    assert_int_equal(p.s.ready_calls, 1);
    assert_int_equal(p.c.ready_calls, 1);

    assert_int_equal(tls_conn_write(p.c.c, "hello server", 12), 0);
    assert_int_equal(tls_conn_write(p.s.c, "hello client", 12), 0);
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.got.len, 18);
    assert_memory_equal(p.s.got.data, "early hello server", 18);
    assert_int_equal(p.c.got.len, 12);
    assert_memory_equal(p.c.got.data, "hello client", 12);

    /* Something larger than a record. */
    size_t big = 100000;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    assert_int_equal(tls_conn_write(p.s.c, data, big), 0);
    exchange(&p.s, &p.c);
    assert_int_equal(p.c.got.len, 12 + big);
    assert_memory_equal(p.c.got.data + 12, data, big);
    free(data);

    /* Ciphertext is not the plaintext. */
    assert_int_equal(tls_conn_write(p.c.c, "secret-marker", 13), 0);
    assert_true(p.s.inbox.len > 13);
    assert_null(memmem(p.s.inbox.data, p.s.inbox.len, "secret-marker", 13));
    exchange(&p.s, &p.c);

    /* close_notify ends the peer's reading with -EPIPE. */
    tls_conn_shutdown(p.c.c);
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.fed_rc, -EPIPE);
    assert_int_equal(tls_conn_write(p.s.c, "x", 1), -EPROTO);
    pair_close(&p);
}

static void test_pause_resume(void **state)
{
    struct pair p;
    pair_open(&p, cert, NULL, NULL, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.s.c));
    /* Two records in one feed; the reader pauses after the first. */
    assert_int_equal(tls_conn_write(p.c.c, "first", 5), 0);
    assert_int_equal(tls_conn_write(p.c.c, "second", 6), 0);
    p.s.pause_next = 7;
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.fed_rc, 7);
    assert_int_equal(p.s.got.len, 5);
    assert_memory_equal(p.s.got.data, "first", 5);
    /* Input fed while paused is held too. */
    assert_int_equal(tls_conn_write(p.c.c, "third", 5), 0);
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.fed_rc, 0);
    assert_int_equal(p.s.got.len, 5);
    assert_int_equal(tls_conn_resume(p.s.c), 0);
    assert_int_equal(p.s.got.len, 16);
    assert_memory_equal(p.s.got.data, "firstsecondthird", 16);
    /* Pausing again on resume returns the value again. */
    assert_int_equal(tls_conn_write(p.c.c, "4", 1), 0);
    assert_int_equal(tls_conn_write(p.c.c, "5", 1), 0);
    p.s.pause_next = 2;
    exchange(&p.s, &p.c);
    assert_int_equal(p.s.fed_rc, 2);
    assert_int_equal(tls_conn_resume(p.s.c), 0);
    assert_int_equal(p.s.got.len, 18);
    assert_memory_equal(p.s.got.data + 16, "45", 2);
    pair_close(&p);
}

static void test_verify_server(void **state)
{
    struct pair p;
    pair_open(&p, cert, NULL, NULL, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.c.c));
    assert_true(tls_conn_peer_has_cert(p.c.c));
    assert_true(tls_conn_peer_verified(p.c.c, "example.test"));
    assert_true(tls_conn_peer_verified(p.c.c, "chat.example.test"));
    assert_true(tls_conn_peer_verified(p.c.c, "EXAMPLE.test"));
    assert_false(tls_conn_peer_verified(p.c.c, "other.test"));
    assert_false(tls_conn_peer_verified(p.c.c, "x.example.test"));
    assert_false(tls_conn_peer_verified(p.c.c, ""));
    /* The client sent no certificate. */
    assert_false(tls_conn_peer_has_cert(p.s.c));
    assert_false(tls_conn_peer_verified(p.s.c, "example.test"));
    pair_close(&p);

    /* Same names, but the client trusts another CA: the handshake still
     * completes (dialback may follow), but nothing is verified. */
    pair_open(&p, other, NULL, NULL, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.c.c));
    assert_true(tls_conn_peer_has_cert(p.c.c));
    assert_false(tls_conn_peer_verified(p.c.c, "example.test"));
    pair_close(&p);
}

static void test_verify_wildcard(void **state)
{
    char err[256];
    struct tls_ctx *sctx, *cctx;
    assert_int_equal(tls_ctx_new(TLS_SERVER, wcert, wkey, NULL, &sctx, err, sizeof err), 0);
    assert_int_equal(tls_ctx_new(TLS_CLIENT, NULL, NULL, wcert, &cctx, err, sizeof err), 0);
    struct end s, c;
    end_init(&s, &c);
    end_init(&c, &s);
    struct tls_io sio = io_for(&s), cio = io_for(&c);
    s.c = tls_conn_new(sctx, NULL, &sio);
    c.c = tls_conn_new(cctx, "a.wild.test", &cio);
    exchange(&s, &c);
    assert_true(tls_conn_ready(c.c));
    assert_true(tls_conn_peer_verified(c.c, "a.wild.test"));
    assert_false(tls_conn_peer_verified(c.c, "wild.test"));
    assert_false(tls_conn_peer_verified(c.c, "a.b.wild.test"));
    end_free(&s);
    end_free(&c);
    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
}

static void test_verify_client_cert(void **state)
{
    /* s2s: the connecting side presents its certificate; the server's CA
     * store (cert itself here) decides. */
    struct pair p;
    pair_open(&p, cert, cert, key, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.s.c));
    assert_true(tls_conn_peer_has_cert(p.s.c));
    assert_true(tls_conn_peer_verified(p.s.c, "chat.example.test"));
    assert_false(tls_conn_peer_verified(p.s.c, "evil.test"));
    pair_close(&p);

    /* A certificate from outside the server's store. */
    pair_open(&p, cert, other, okey, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.s.c));
    assert_true(tls_conn_peer_has_cert(p.s.c));
    assert_false(tls_conn_peer_verified(p.s.c, "example.test"));
    pair_close(&p);
}

static void test_send_failure(void **state)
{
    /* The transport's error comes back from the call that wrote, and the
     * connection stays failed. */
    struct pair p;
    pair_open(&p, cert, NULL, NULL, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.s.c));
    p.s.fail_send = -EPIPE;
    assert_int_equal(tls_conn_write(p.s.c, "lost", 4), -EPIPE);
    p.s.fail_send = 0;
    assert_true(tls_conn_write(p.s.c, "again", 5) < 0);
    assert_int_equal(p.c.inbox.len + p.s.inbox.len, 0);
    pair_close(&p);
}

static void test_garbage(void **state)
{
    char err[256];
    struct tls_ctx *sctx;
    assert_int_equal(tls_ctx_new(TLS_SERVER, cert, key, NULL, &sctx, err, sizeof err), 0);
    struct end s, peer;
    end_init(&s, &peer);
    end_init(&peer, &s);
    struct tls_io sio = io_for(&s);
    s.c = tls_conn_new(sctx, NULL, &sio);
    const char *junk = "<?xml version='1.0'?><stream:stream to='example.test'>";
    int rc = tls_conn_feed(s.c, junk, strlen(junk));
    assert_true(rc < 0);
    assert_false(tls_conn_ready(s.c));
    assert_true(strcmp(tls_conn_error(s.c), "no error") != 0);
    assert_int_equal(s.got.len, 0);
    /* Dead for good. */
    assert_true(tls_conn_feed(s.c, "\x16\x03\x01", 3) < 0);
    assert_true(tls_conn_write(s.c, "x", 1) < 0);
    assert_false(tls_conn_peer_verified(s.c, "example.test"));
    end_free(&s);
    end_free(&peer);

    /* Garbage after a good handshake. */
    struct pair p;
    pair_open(&p, cert, NULL, NULL, "example.test");
    exchange(&p.s, &p.c);
    assert_true(tls_conn_ready(p.s.c));
    unsigned char rec[64];
    memset(rec, 0x41, sizeof rec);
    rec[0] = 0x17; /* application data, then a bad MAC */
    rec[1] = 0x03;
    rec[2] = 0x03;
    rec[3] = 0;
    rec[4] = 59;
    assert_true(tls_conn_feed(p.s.c, rec, sizeof rec) < 0);
    assert_int_equal(p.s.got.len, 0);
    pair_close(&p);
    tls_ctx_free(sctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_ensure),
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_verify_server),
        cmocka_unit_test(test_verify_wildcard),
        cmocka_unit_test(test_verify_client_cert),
        cmocka_unit_test(test_send_failure),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
