/*
 * http.trusted_proxies: parsing the list (addresses, CIDR ranges, IPv4 and
 * IPv6, mistakes refused) and choosing the client address from the peer and
 * X-Forwarded-For (only from a trusted peer; the right-most entry that is
 * not a trusted proxy; garbage and ports; several headers).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "net/http.h"

static struct http_cidr *list;
static size_t nlist;

static void use(const char *spec)
{
    char err[256];
    free(list);
    assert_int_equal(http_cidr_list_parse(spec, &list, &nlist, err, sizeof err), 0);
}

static const char *client(const char *peer, const char *xff)
{
    static char out[64];
    const char *v[1] = {xff};
    http_client_ip(peer, v, xff ? 1 : 0, list, nlist, out, sizeof out);
    return out;
}

static void test_parse(void **state)
{
    (void)state;
    char err[256];
    struct http_cidr *l = NULL;
    size_t n = 9;
    assert_int_equal(http_cidr_list_parse("", &l, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_null(l);
    assert_int_equal(http_cidr_list_parse("127.0.0.1, 10.0.0.0/8 ::1,fd00::/8", &l, &n, err,
                                          sizeof err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(l[0].bits, 32);
    assert_false(l[0].v6);
    assert_int_equal(l[1].bits, 8);
    assert_int_equal(l[2].bits, 128);
    assert_true(l[3].v6);
    free(l);
    const char *bad[] = {"localhost", "10.0.0.0/33", "::/129", "1.2.3.4/", "1.2.3.4/x",
                         "1.2.3.4:80", "300.1.1.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(http_cidr_list_parse(bad[i], &l, &n, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "http.trusted_proxies"));
        assert_null(l);
    }
}

static void test_untrusted_peer(void **state)
{
    (void)state;
    use("");
    assert_string_equal(client("203.0.113.9:5555", "1.1.1.1"), "203.0.113.9");
    assert_string_equal(client("[2001:db8::5]:443", "1.1.1.1"), "2001:db8::5");
    use("10.0.0.0/8");
    assert_string_equal(client("127.0.0.1:5555", "1.1.1.1"), "127.0.0.1");
    assert_string_equal(client("11.0.0.1:1", "1.1.1.1"), "11.0.0.1");
}

static void test_trusted_peer(void **state)
{
    (void)state;
    use("127.0.0.1, 10.0.0.0/8, fd00::/8");
    /* no header: the peer */
    assert_string_equal(client("127.0.0.1:5555", NULL), "127.0.0.1");
    assert_string_equal(client("127.0.0.1:5555", "198.51.100.4"), "198.51.100.4");
    /* what the client wrote itself is left of what the proxy added */
    assert_string_equal(client("127.0.0.1:5555", "6.6.6.6, 198.51.100.4"), "198.51.100.4");
    /* proxies in a chain are skipped */
    assert_string_equal(client("10.1.2.3:80", "6.6.6.6, 198.51.100.4, 10.0.0.7,127.0.0.1"),
                        "198.51.100.4");
    /* IPv6, ports, brackets, mapped addresses */
    assert_string_equal(client("127.0.0.1:1", "2001:DB8::0:1"), "2001:db8::1");
    assert_string_equal(client("127.0.0.1:1", "[2001:db8::1]:4711"), "2001:db8::1");
    assert_string_equal(client("127.0.0.1:1", "198.51.100.4:999"), "198.51.100.4");
    assert_string_equal(client("[::ffff:127.0.0.1]:1", "198.51.100.4"), "198.51.100.4");
    assert_string_equal(client("[fd00::1]:1", " 198.51.100.4 "), "198.51.100.4");
    /* garbage: the nearest trusted hop */
    assert_string_equal(client("127.0.0.1:1", "198.51.100.4, unknown"), "127.0.0.1");
    assert_string_equal(client("127.0.0.1:1", "1.1.1.1, nonsense, 10.0.0.2"), "10.0.0.2");
    /* only proxies: the left-most */
    assert_string_equal(client("127.0.0.1:1", "10.0.0.9, 10.0.0.2"), "10.0.0.9");
    /* empty entries are skipped */
    assert_string_equal(client("127.0.0.1:1", "198.51.100.4,, "), "198.51.100.4");
    /* several headers are one list, in order */
    char out[64];
    const char *two[] = {"6.6.6.6, 203.0.113.1", "10.0.0.3"};
    http_client_ip("127.0.0.1:2", two, 2, list, nlist, out, sizeof out);
    assert_string_equal(out, "203.0.113.1");
}

static void test_cidr_edges(void **state)
{
    (void)state;
    use("192.168.4.0/22, 2001:db8:8000::/33");
    assert_string_equal(client("192.168.7.255:1", "1.1.1.1"), "1.1.1.1");
    assert_string_equal(client("192.168.8.0:1", "1.1.1.1"), "192.168.8.0");
    assert_string_equal(client("192.168.3.255:1", "1.1.1.1"), "192.168.3.255");
    assert_string_equal(client("[2001:db8:ffff::1]:1", "1.1.1.1"), "1.1.1.1");
    assert_string_equal(client("[2001:db8:7fff::1]:1", "1.1.1.1"), "2001:db8:7fff::1");
    use("0.0.0.0/0");
    assert_string_equal(client("8.8.8.8:1", "1.1.1.1"), "1.1.1.1");
    assert_string_equal(client("[::1]:1", "1.1.1.1"), "::1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_untrusted_peer),
        cmocka_unit_test(test_trusted_peer),
        cmocka_unit_test(test_cidr_edges),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(list);
    return rc;
}
