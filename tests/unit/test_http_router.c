/* Router: literals, parameters, wildcards, specificity, 405 and Allow. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "net/http_router.h"

static int h_a(struct http_request *r, void *ud) { return 0; }

static int tag(const struct http_route_match *m) { return (int)(intptr_t)m->route->ud; }

static const char *param(const struct http_route_match *m, const char *name, char *out)
{
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) {
            memcpy(out, m->params[i].value, m->params[i].len);
            out[m->params[i].len] = '\0';
            return out;
        }
    return NULL;
}

static void test_match(void **state)
{
    struct http_router r;
    http_router_init(&r);
    assert_int_equal(http_router_add(&r, "GET", "/live/:slug/*file", h_a, (void *)1, 0), 0);
    assert_int_equal(http_router_add(&r, "GET", "/live/:slug/master.m3u8", h_a, (void *)2, 0), 0);
    assert_int_equal(http_router_add(&r, "GET", "/api/v1/channels/:id", h_a, (void *)3, 0), 0);
    assert_int_equal(http_router_add(&r, "PATCH", "/api/v1/channels/:id", h_a, (void *)4, 0), 0);
    assert_int_equal(http_router_add(&r, "GET", "/api/v1/channels/mine", h_a, (void *)5, 0), 0);
    assert_int_equal(http_router_add(&r, "GET", "/", h_a, (void *)6, 0), 0);
    assert_int_equal(http_router_add(&r, "POST", "/api/v1/channels/:slug/stream-key", h_a, (void *)7, 0), 0);

    struct http_route_match m;
    char buf[128];
    assert_int_equal(http_router_match(&r, "GET", "/live/abc/master.m3u8", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 2); /* literal beats wildcard, whatever the order */
    assert_string_equal(param(&m, "slug", buf), "abc");

    assert_int_equal(http_router_match(&r, "GET", "/live/abc/seg/12.m4s", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 1);
    assert_string_equal(param(&m, "file", buf), "seg/12.m4s");

    assert_int_equal(http_router_match(&r, "GET", "/api/v1/channels/mine", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 5); /* literal beats parameter */
    assert_int_equal(http_router_match(&r, "GET", "/api/v1/channels/42", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 3);
    assert_string_equal(param(&m, "id", buf), "42");
    assert_int_equal(http_router_match(&r, "HEAD", "/api/v1/channels/42", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 3); /* HEAD uses GET routes */
    assert_int_equal(http_router_match(&r, "PATCH", "/api/v1/channels/42", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 4);

    assert_int_equal(http_router_match(&r, "DELETE", "/api/v1/channels/42", &m), HTTP_MATCH_METHOD);
    assert_non_null(strstr(m.allow, "GET"));
    assert_non_null(strstr(m.allow, "PATCH"));
    assert_non_null(strstr(m.allow, "HEAD"));

    assert_int_equal(http_router_match(&r, "GET", "/api/v1/channels/", &m), HTTP_MATCH_NONE);
    assert_int_equal(http_router_match(&r, "GET", "/api/v1/channels", &m), HTTP_MATCH_NONE);
    assert_int_equal(http_router_match(&r, "GET", "/api/v1/channels/42/x", &m), HTTP_MATCH_NONE);
    assert_int_equal(http_router_match(&r, "GET", "/live/abc", &m), HTTP_MATCH_NONE);
    assert_int_equal(http_router_match(&r, "GET", "/", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 6);
    assert_int_equal(http_router_match(&r, "GET", "/nope", &m), HTTP_MATCH_NONE);
    assert_int_equal(http_router_match(&r, "GET", "nope", &m), HTTP_MATCH_NONE);

    assert_int_equal(http_router_match(&r, "POST", "/api/v1/channels/my-show/stream-key", &m), HTTP_MATCH_OK);
    assert_int_equal(tag(&m), 7);
    assert_string_equal(param(&m, "slug", buf), "my-show");
    http_router_free(&r);
}

static void test_bad_patterns(void **state)
{
    struct http_router r;
    http_router_init(&r);
    assert_int_equal(http_router_add(&r, "GET", "nope", h_a, NULL, 0), -EINVAL);
    assert_int_equal(http_router_add(&r, "GET", "/a/*rest/b", h_a, NULL, 0), -EINVAL);
    assert_int_equal(http_router_add(&r, "GET", "/a/:/b", h_a, NULL, 0), -EINVAL);
    assert_int_equal(http_router_add(&r, "VERYLONGMETHODNAME", "/a", h_a, NULL, 0), -EINVAL);
    assert_int_equal(r.count, 0);
    http_router_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_bad_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
