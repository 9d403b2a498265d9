/*
 * Federation pieces that need no network: the XEP-0185 dialback key (the
 * XEP's example inputs, computed as its reference script does; what binds
 * a key to its domains and stream), the xmpp.s2s_routes table, and the
 * DNS lookups' accounting (s2s_dns_pending, which bounds how many run at
 * once: a cancelled lookup still counts until it is done).
 * The streams themselves are exercised against Prosody in
 * tests/e2e/test_federation.py.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "chat/s2s.h"

static const char secret[] = "s3cr3tf0rd14lb4ck";

static void test_dialback_key_vector(void **state)
{
    char key[S2S_DIALBACK_KEY_SIZE];
    /* XEP-0185's example: originating domain1.tld, receiving domain2.tld. */
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "domain2.tld", "domain1.tld",
                                      "D60000229F", key),
                     0);
    assert_string_equal(key, "5e598fae34b90be084fb6a4a8a543ceb33549140bac9d829ef8d734d900616e4");
    assert_int_equal(strlen(key), 64);
}

static void test_dialback_key_binds(void **state)
{
    char a[S2S_DIALBACK_KEY_SIZE], b[S2S_DIALBACK_KEY_SIZE];
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "r.example", "o.example", "id1", a), 0);
    /* Same inputs, same key: the authoritative server recomputes it. */
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "r.example", "o.example", "id1", b), 0);
    assert_string_equal(a, b);
    /* Each input changes it. */
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "o.example", "r.example", "id1", b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "r.example", "o.example", "id2", b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(s2s_dialback_key("other", 5, "r.example", "o.example", "id1", b), 0);
    assert_string_not_equal(a, b);
    /* The separator matters: "a b" + "c" is not "a" + "b c". */
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "a b", "c", "id", a), 0);
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "a", "b c", "id", b), 0);
    assert_string_equal(a, b); /* documented XEP-0185 property: hence domains have no spaces */
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "", "o", "id", a), -EINVAL);
    assert_int_equal(s2s_dialback_key(secret, strlen(secret), "r", "o", "", a), -EINVAL);
}

static void test_routes_parse(void **state)
{
    struct s2s_route r[S2S_ROUTES_MAX];
    size_t n = 99;
    char err[256] = "";
    assert_int_equal(s2s_routes_parse("", r, S2S_ROUTES_MAX, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(s2s_routes_parse(" Prosody.Test=127.0.0.3:5269 , chat.x.org = [::1]:5270,"
                                      "y.org=xmpp.y.org:15269",
                                      r, S2S_ROUTES_MAX, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(r[0].domain, "prosody.test");
    assert_string_equal(r[0].host, "127.0.0.3");
    assert_int_equal(r[0].port, 5269);
    assert_string_equal(r[1].domain, "chat.x.org");
    assert_string_equal(r[1].host, "::1");
    assert_int_equal(r[1].port, 5270);
    assert_string_equal(r[2].host, "xmpp.y.org");
    assert_int_equal(r[2].port, 15269);

    const struct s2s_route *f = s2s_routes_find(r, n, "PROSODY.test");
    assert_non_null(f);
    assert_string_equal(f->host, "127.0.0.3");
    assert_null(s2s_routes_find(r, n, "x.org"));
    assert_null(s2s_routes_find(r, n, "other.test"));
}

static void test_routes_refused(void **state)
{
    struct s2s_route r[4];
    size_t n;
    char err[256];
    const char *bad[] = {
        "example.org",               /* no = */
        "example.org=host",          /* no port */
        "example.org=host:",         /* empty port */
        "example.org=host:70000",    /* port out of range */
        "example.org=host:0",
        "example.org=host:12a",
        "=host:5269",                /* no domain */
        "exa mple.org=host:5269",    /* space in domain */
        "example.org=::1:5269",      /* v6 without brackets */
        "example.org=[::1]5269",
        "a.org=h:1,a.org=h:2",       /* twice */
        "a=h:1,b=h:1,c=h:1,d=h:1,e=h:1", /* more than max */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (s2s_routes_parse(bad[i], r, 4, &n, err, sizeof err) != -EINVAL)
            fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err, "s2s_routes"));
    }
}

struct got {
    int calls;
    int status;
    size_t n;
    int port;
};

static void on_found(void *ud, int status, const struct s2s_addr *addrs, size_t n)
{
    struct got *g = ud;
    g->calls++;
    g->status = status;
    g->n = n;
    if (n && addrs[0].sa.ss_family == AF_INET)
        g->port = ntohs(((const struct sockaddr_in *)&addrs[0].sa)->sin_port);
}

static void on_dns_closed(void *arg)
{
    *(int *)arg = 1;
}

static void test_dns_pending(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct s2s_dns *d = s2s_dns_new(&loop);
    assert_non_null(d);
    assert_int_equal(s2s_dns_pending(d), 0);

    /* A static route's literal address: no DNS, but the answer still comes
     * from the loop, and the lookup counts until then. */
    struct got a = {0}, b = {0};
    struct s2s_dns_query *qa = s2s_dns_lookup(d, "a.example", "127.0.0.1", 5299, on_found, &a);
    struct s2s_dns_query *qb = s2s_dns_lookup(d, "b.example", "127.0.0.1", 5300, on_found, &b);
    assert_non_null(qa);
    assert_non_null(qb);
    assert_int_equal(a.calls, 0);
    assert_int_equal(s2s_dns_pending(d), 2);
    s2s_dns_cancel(qb);
    assert_int_equal(s2s_dns_pending(d), 2); /* cancelled, not done */
    for (int i = 0; i < 100 && s2s_dns_pending(d); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(s2s_dns_pending(d), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.port, 5299);
    assert_int_equal(b.calls, 0); /* cancelled: never called */

    int closed = 0;
    s2s_dns_close(d, on_dns_closed, &closed);
    for (int i = 0; i < 100 && !closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dialback_key_vector),
        cmocka_unit_test(test_dialback_key_binds),
        cmocka_unit_test(test_routes_parse),
        cmocka_unit_test(test_routes_refused),
        cmocka_unit_test(test_dns_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
