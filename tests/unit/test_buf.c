#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <stdlib.h>

#include "core/buf.h"

static void test_append_and_limit(void **state)
{
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append(&b, "world", 5), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(buf_append(&b, "!", 1), -EMSGSIZE);
    assert_int_equal(b.len, 10); /* unchanged by the refused append */
    assert_memory_equal(b.data, "helloworld", 10);
    buf_consume(&b, 5);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "world", 5);
    assert_int_equal(buf_cstr(&b), 0);
    assert_string_equal(b.data, "world");
    buf_free(&b);
}

static void test_printf_grows(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_printf(&b, "%04d,", i), 0);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data + 4995, "0999,", 5);
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "%s", big), 0);
    assert_int_equal(b.len, 5000 + 599);
    size_t len;
    char *s = buf_steal(&b, &len);
    assert_int_equal(len, 5599);
    assert_int_equal(strlen(s), 5599);
    assert_null(b.data);
    free(s);
}

static void test_printf_respects_limit(void **state)
{
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_printf(&b, "%s", "123456789"), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_limit),
        cmocka_unit_test(test_printf_grows),
        cmocka_unit_test(test_printf_respects_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
