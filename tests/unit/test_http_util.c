/* HTTP helpers: decoding, safe paths, Range, ETags, MIME types. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "net/http_util.h"

static void test_percent_decode(void **state)
{
    char out[64];
    assert_int_equal(http_percent_decode("/a%20b", 6, out, false), 4);
    assert_string_equal(out, "/a b");
    assert_int_equal(http_percent_decode("a+b", 3, out, true), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(http_percent_decode("a+b", 3, out, false), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(http_percent_decode("%2e%2E", 6, out, false), 2);
    assert_string_equal(out, "..");
    assert_int_equal(http_percent_decode("%00", 3, out, false), -1);
    assert_int_equal(http_percent_decode("%zz", 3, out, false), -1);
    assert_int_equal(http_percent_decode("%4", 2, out, false), -1);
    assert_int_equal(http_percent_decode("%", 1, out, false), -1);
}

static void test_safe_path(void **state)
{
    assert_true(http_path_is_safe("/"));
    assert_true(http_path_is_safe("/index.html"));
    assert_true(http_path_is_safe("/assets/app-1234.js"));
    assert_true(http_path_is_safe("/a..b/c"));
    assert_false(http_path_is_safe("/../etc/passwd"));
    assert_false(http_path_is_safe("/a/../../b"));
    assert_false(http_path_is_safe("/a/.."));
    assert_false(http_path_is_safe("/./a"));
    assert_false(http_path_is_safe("/a\\..\\b"));
    assert_false(http_path_is_safe("/a\x01"));
    assert_false(http_path_is_safe("relative"));
}

static void test_range(void **state)
{
    uint64_t a, b;
    assert_int_equal(http_range_parse("bytes=0-99", 1000, &a, &b), 1);
    assert_true(a == 0 && b == 99);
    assert_int_equal(http_range_parse("bytes=900-", 1000, &a, &b), 1);
    assert_true(a == 900 && b == 999);
    assert_int_equal(http_range_parse("bytes=-100", 1000, &a, &b), 1);
    assert_true(a == 900 && b == 999);
    assert_int_equal(http_range_parse("bytes=-5000", 1000, &a, &b), 1);
    assert_true(a == 0 && b == 999);
    assert_int_equal(http_range_parse("bytes=500-5000", 1000, &a, &b), 1);
    assert_true(a == 500 && b == 999);
    assert_int_equal(http_range_parse("bytes=1000-", 1000, &a, &b), -1);
    assert_int_equal(http_range_parse("bytes=-0", 1000, &a, &b), -1);
    assert_int_equal(http_range_parse("bytes=5-1", 1000, &a, &b), 0);
    assert_int_equal(http_range_parse("bytes=0-1,5-6", 1000, &a, &b), 0);
    assert_int_equal(http_range_parse("items=0-1", 1000, &a, &b), 0);
    assert_int_equal(http_range_parse("bytes=x-1", 1000, &a, &b), 0);
    assert_int_equal(http_range_parse("bytes=99999999999999999999999-", 1000, &a, &b), 0);
}

static void test_etag(void **state)
{
    assert_true(http_etag_matches("\"abc\"", "\"abc\""));
    assert_true(http_etag_matches("W/\"abc\"", "\"abc\""));
    assert_true(http_etag_matches("\"x\", \"abc\"", "\"abc\""));
    assert_true(http_etag_matches("*", "\"abc\""));
    assert_false(http_etag_matches("\"abcd\"", "\"abc\""));
    assert_false(http_etag_matches("abc", "\"abc\""));
    assert_false(http_etag_matches("\"abc", "\"abc\""));
    assert_false(http_etag_matches(NULL, "\"abc\""));
}

static void test_mime_and_tokens(void **state)
{
    assert_string_equal(http_mime_type("/index.html"), "text/html; charset=utf-8");
    assert_string_equal(http_mime_type("/a/b.JS"), "text/javascript; charset=utf-8");
    assert_string_equal(http_mime_type("/x.m3u8"), "application/vnd.apple.mpegurl");
    assert_string_equal(http_mime_type("/x.m4s"), "video/iso.segment");
    assert_string_equal(http_mime_type("/x.wasm"), "application/wasm");
    assert_string_equal(http_mime_type("/noext"), "application/octet-stream");
    assert_string_equal(http_mime_type("/dir.d/noext"), "application/octet-stream");
    assert_true(http_header_has_token("keep-alive, Upgrade", "upgrade"));
    assert_false(http_header_has_token("keep-alive, Upgraded", "upgrade"));
    char d[40];
    http_date_format(0, d, sizeof d);
    assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_safe_path),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_etag),
        cmocka_unit_test(test_mime_and_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
