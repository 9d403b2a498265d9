/*
 * AMF0: exact encodings, round trips of every type, commands as OBS and
 * ffmpeg send them, and malformed input (truncated at every length, bad
 * markers, too deep, too many values, lying counts).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/rtmp/amf.h"

static void test_exact_bytes(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(amf_encode_number(&b, 1.0), 0);
    assert_memory_equal(b.data, "\x00\x3f\xf0\0\0\0\0\0\0", 9);
    buf_reset(&b);
    assert_int_equal(amf_encode_string(&b, "connect"), 0);
    assert_memory_equal(b.data, "\x02\x00\x07" "connect", 10);
    buf_reset(&b);
    assert_int_equal(amf_encode_boolean(&b, true), 0);
    assert_int_equal(amf_encode_null(&b), 0);
    assert_int_equal(amf_encode_undefined(&b), 0);
    assert_memory_equal(b.data, "\x01\x01\x05\x06", 4);
    buf_reset(&b);
    assert_int_equal(amf_encode_object_begin(&b), 0);
    assert_int_equal(amf_encode_prop_string(&b, "app", "live"), 0);
    assert_int_equal(amf_encode_object_end(&b), 0);
    assert_memory_equal(b.data, "\x03\x00\x03" "app" "\x02\x00\x04" "live" "\x00\x00\x09", 16);
    buf_reset(&b);
    assert_int_equal(amf_encode_ecma_array_begin(&b, 2), 0);
    assert_memory_equal(b.data, "\x08\0\0\0\x02", 5);
    buf_reset(&b);
    assert_int_equal(amf_encode_date(&b, 0.0, 0), 0);
    assert_memory_equal(b.data, "\x0b\0\0\0\0\0\0\0\0\0\0", 11);
    buf_free(&b);
}

/* Build a value of every type, nested, encode, decode, compare, re-encode. */
static void build_everything(struct buf *b, const char *longstr, size_t longlen)
{
    amf_encode_object_begin(b);
    amf_encode_prop_number(b, "n", -1234.5);
    amf_encode_prop_number(b, "zero", 0.0);
    amf_encode_prop_number(b, "big", 1e300);
    amf_encode_prop_boolean(b, "t", true);
    amf_encode_prop_boolean(b, "f", false);
    amf_encode_prop_string(b, "s", "h\xc3\xa9llo");
    amf_encode_prop_string(b, "empty", "");
    amf_encode_key(b, "long");
    amf_encode_string_len(b, longstr, longlen);
    amf_encode_prop_null(b, "null");
    amf_encode_key(b, "undef");
    amf_encode_undefined(b);
    amf_encode_key(b, "date");
    amf_encode_date(b, 1700000000000.0, 0);
    amf_encode_key(b, "ecma");
    amf_encode_ecma_array_begin(b, 2);
    amf_encode_prop_number(b, "width", 1920);
    amf_encode_prop_number(b, "height", 1080);
    amf_encode_object_end(b);
    amf_encode_key(b, "arr");
    amf_encode_strict_array_begin(b, 3);
    amf_encode_number(b, 1);
    amf_encode_string(b, "two");
    amf_encode_object_begin(b);
    amf_encode_prop_boolean(b, "three", true);
    amf_encode_object_end(b);
    amf_encode_key(b, "emptyobj");
    amf_encode_object_begin(b);
    amf_encode_object_end(b);
    amf_encode_object_end(b);
}

static void test_roundtrip_every_type(void **state)
{
    size_t longlen = 70000;
    char *longstr = malloc(longlen);
    for (size_t i = 0; i < longlen; i++)
        longstr[i] = (char)('a' + i % 26);
    struct buf b, again;
    buf_init(&b, 0);
    buf_init(&again, 0);
    build_everything(&b, longstr, longlen);

    struct amf_value v;
    size_t used;
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), 0);
    assert_int_equal(used, b.len);
    assert_int_equal(v.type, AMF_OBJECT);
    assert_int_equal(v.u.obj.count, 14);

    double d;
    bool t;
    assert_int_equal(amf_get_number(&v, "n", &d), 0);
    assert_true(d == -1234.5);
    assert_int_equal(amf_get_number(&v, "big", &d), 0);
    assert_true(d == 1e300);
    assert_int_equal(amf_get_boolean(&v, "t", &t), 0);
    assert_true(t);
    assert_int_equal(amf_get_boolean(&v, "f", &t), 0);
    assert_false(t);
    assert_string_equal(amf_get_string(&v, "s"), "h\xc3\xa9llo");
    assert_string_equal(amf_get_string(&v, "empty"), "");
    const struct amf_value *lv = amf_get(&v, "long");
    assert_int_equal(lv->type, AMF_LONG_STRING);
    assert_int_equal(lv->u.str.len, longlen);
    assert_memory_equal(lv->u.str.ptr, longstr, longlen);
    assert_int_equal(amf_get(&v, "null")->type, AMF_NULL);
    assert_int_equal(amf_get(&v, "undef")->type, AMF_UNDEFINED);
    assert_true(amf_get(&v, "date")->u.date.ms == 1700000000000.0);
    const struct amf_value *e = amf_get(&v, "ecma");
    assert_int_equal(e->type, AMF_ECMA_ARRAY);
    assert_int_equal(amf_get_number(e, "height", &d), 0);
    assert_true(d == 1080);
    const struct amf_value *a = amf_get(&v, "arr");
    assert_int_equal(a->type, AMF_STRICT_ARRAY);
    assert_int_equal(a->u.arr.count, 3);
    assert_string_equal(amf_string(&a->u.arr.items[1]), "two");
    assert_int_equal(amf_get_boolean(&a->u.arr.items[2], "three", &t), 0);
    assert_int_equal(amf_get(&v, "emptyobj")->u.obj.count, 0);
    /* Misses and wrong types. */
    assert_null(amf_get(&v, "nope"));
    assert_null(amf_get_string(&v, "n"));
    assert_int_equal(amf_get_number(&v, "s", &d), -EINVAL);
    assert_null(amf_get(a, "x"));

    assert_int_equal(amf_encode_value(&again, &v), 0);
    assert_int_equal(again.len, b.len);
    assert_memory_equal(again.data, b.data, b.len);

    amf_value_free(&v);
    assert_int_equal(v.type, AMF_NULL);
    buf_free(&b);
    buf_free(&again);
    free(longstr);
}

static void test_scalar_roundtrips(void **state)
{
    double nums[] = {0.0, -0.0, 1.0, -1.0, 0.1, 3.0e-310, 1.7976931348623157e308, INFINITY};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        struct buf b;
        struct amf_value v;
        size_t used;
        buf_init(&b, 0);
        amf_encode_number(&b, nums[i]);
        assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), 0);
        assert_int_equal(v.type, AMF_NUMBER);
        assert_memory_equal(&v.u.number, &nums[i], sizeof(double));
        buf_free(&b);
    }
    /* A short string sent as a long string stays one on the way back. */
    const uint8_t ls[] = {0x0c, 0, 0, 0, 2, 'h', 'i'};
    struct amf_value v;
    struct buf b;
    size_t used;
    buf_init(&b, 0);
    assert_int_equal(amf_decode(ls, sizeof ls, &used, &v, NULL), 0);
    assert_string_equal(amf_string(&v), "hi");
    assert_int_equal(amf_encode_value(&b, &v), 0);
    assert_memory_equal(b.data, ls, sizeof ls);
    amf_value_free(&v);
    buf_free(&b);
}

/* connect as OBS sends it, then a publish. */
static void test_commands(void **state)
{
    struct buf b;
    struct amf_command cmd;
    buf_init(&b, 0);
    amf_encode_string(&b, "connect");
    amf_encode_number(&b, 1);
    amf_encode_object_begin(&b);
    amf_encode_prop_string(&b, "app", "live");
    amf_encode_prop_string(&b, "type", "nonprivate");
    amf_encode_prop_string(&b, "flashVer", "FMLE/3.0 (compatible; FMSc/1.0)");
    amf_encode_prop_string(&b, "tcUrl", "rtmp://localhost/live");
    amf_encode_key(&b, "fourCcList");
    amf_encode_strict_array_begin(&b, 2);
    amf_encode_string(&b, "hvc1");
    amf_encode_string(&b, "av01");
    amf_encode_object_end(&b);
    assert_int_equal(amf_command_decode((uint8_t *)b.data, b.len, &cmd, NULL), 0);
    assert_string_equal(cmd.name, "connect");
    assert_true(cmd.transaction_id == 1);
    assert_int_equal(cmd.nargs, 1);
    assert_string_equal(amf_get_string(&cmd.args[0], "app"), "live");
    assert_string_equal(amf_get_string(&cmd.args[0], "tcUrl"), "rtmp://localhost/live");
    assert_int_equal(amf_get(&cmd.args[0], "fourCcList")->u.arr.count, 2);
    amf_command_free(&cmd);

    buf_reset(&b);
    amf_encode_string(&b, "publish");
    amf_encode_number(&b, 5);
    amf_encode_null(&b);
    amf_encode_string(&b, "key123?token=x");
    amf_encode_string(&b, "live");
    assert_int_equal(amf_command_decode((uint8_t *)b.data, b.len, &cmd, NULL), 0);
    assert_string_equal(cmd.name, "publish");
    assert_true(cmd.transaction_id == 5);
    assert_int_equal(cmd.nargs, 3);
    assert_int_equal(cmd.args[0].type, AMF_NULL);
    assert_string_equal(amf_string(&cmd.args[1]), "key123?token=x");
    amf_command_free(&cmd);

    /* Not a command: no name, or no transaction id. */
    buf_reset(&b);
    amf_encode_number(&b, 5);
    amf_encode_number(&b, 5);
    assert_int_equal(amf_command_decode((uint8_t *)b.data, b.len, &cmd, NULL), -EBADMSG);
    buf_reset(&b);
    amf_encode_string(&b, "x");
    assert_int_equal(amf_command_decode((uint8_t *)b.data, b.len, &cmd, NULL), -EBADMSG);
    /* A name with a NUL inside is refused rather than cut short. */
    buf_reset(&b);
    amf_encode_string_len(&b, "conn\0ect", 8);
    amf_encode_number(&b, 1);
    assert_int_equal(amf_command_decode((uint8_t *)b.data, b.len, &cmd, NULL), -EBADMSG);
    assert_null(cmd.values);

    /* @setDataFrame as a list of values. */
    buf_reset(&b);
    amf_encode_string(&b, "@setDataFrame");
    amf_encode_string(&b, "onMetaData");
    amf_encode_ecma_array_begin(&b, 1);
    amf_encode_prop_number(&b, "framerate", 60);
    amf_encode_object_end(&b);
    struct amf_value *vals;
    size_t n;
    assert_int_equal(amf_decode_all((uint8_t *)b.data, b.len, &vals, &n, NULL), 0);
    assert_int_equal(n, 3);
    double fr;
    assert_int_equal(amf_get_number(&vals[2], "framerate", &fr), 0);
    assert_true(fr == 60);
    amf_values_free(vals, n);
    assert_int_equal(amf_decode_all((uint8_t *)b.data, 0, &vals, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_null(vals);
    buf_free(&b);
}

/* Every strict prefix of a valid encoding is an error, never a crash or an
 * over-read (ASan watches); the buffer is copied to an exact-size block. */
static void test_truncated_everywhere(void **state)
{
    char longstr[300];
    memset(longstr, 'x', sizeof longstr);
    struct buf b;
    buf_init(&b, 0);
    build_everything(&b, longstr, sizeof longstr);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b.data, n);
        struct amf_value v;
        size_t used = 99;
        int rc = amf_decode(p, n, &used, &v, NULL);
        assert_int_equal(rc, -EBADMSG);
        assert_int_equal(used, 0);
        assert_int_equal(v.type, AMF_NULL);
        struct amf_command cmd;
        assert_true(amf_command_decode(p, n, &cmd, NULL) < 0);
        free(p);
    }
    buf_free(&b);
}

static void test_bad_markers(void **state)
{
    const uint8_t refs[] = {0x07, 0x00, 0x01};        /* reference */
    const uint8_t typed[] = {0x10, 0x00, 0x01, 'a'};  /* typed object */
    const uint8_t amf3[] = {0x11, 0x02};              /* AVM+ switch */
    const uint8_t clip[] = {0x04};                    /* movieclip */
    const uint8_t xml[] = {0x0f, 0, 0, 0, 0};         /* XML document */
    const uint8_t high[] = {0xff};
    const uint8_t end[] = {0x09};                     /* stray object end */
    const uint8_t inner_end[] = {0x03, 0x00, 0x01, 'k', 0x09, 0x00, 0x00, 0x09};
    struct amf_value v;
    size_t used;
    assert_int_equal(amf_decode(refs, sizeof refs, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(typed, sizeof typed, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(amf3, sizeof amf3, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(clip, sizeof clip, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(xml, sizeof xml, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(high, sizeof high, &used, &v, NULL), -ENOTSUP);
    assert_int_equal(amf_decode(end, sizeof end, &used, &v, NULL), -EBADMSG);
    assert_int_equal(amf_decode(inner_end, sizeof inner_end, &used, &v, NULL), -EBADMSG);
    /* An error deep inside frees everything built so far (ASan checks). */
    struct buf b;
    buf_init(&b, 0);
    amf_encode_object_begin(&b);
    amf_encode_prop_string(&b, "a", "aaaa");
    amf_encode_key(&b, "arr");
    amf_encode_strict_array_begin(&b, 2);
    amf_encode_string(&b, "x");
    buf_append_char(&b, 0x07);
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), -ENOTSUP);
    buf_free(&b);
}

static void nest(struct buf *b, int depth, bool arrays)
{
    for (int i = 0; i < depth; i++) {
        if (arrays) {
            amf_encode_strict_array_begin(b, 1);
        } else {
            amf_encode_object_begin(b);
            amf_encode_key(b, "k");
        }
    }
    amf_encode_number(b, 1);
    if (!arrays)
        for (int i = 0; i < depth; i++)
            amf_encode_object_end(b);
}

static void test_depth_limit(void **state)
{
    struct amf_value v;
    size_t used;
    for (int arrays = 0; arrays <= 1; arrays++) {
        struct buf b;
        buf_init(&b, 0);
        nest(&b, AMF_MAX_DEPTH, arrays);
        assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), 0);
        assert_int_equal(used, b.len);
        amf_value_free(&v);
        buf_reset(&b);
        nest(&b, AMF_MAX_DEPTH + 1, arrays);
        assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), -E2BIG);
        buf_reset(&b);
        nest(&b, 100000, arrays); /* would blow the stack without the limit */
        assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), -E2BIG);
        /* A tighter limit of the caller's own. */
        struct amf_limits lim = {.max_depth = 2, .max_elements = 100};
        buf_reset(&b);
        nest(&b, 3, arrays);
        assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, &lim), -E2BIG);
        buf_free(&b);
    }
}

static void test_element_limit(void **state)
{
    struct buf b;
    struct amf_value v, *vals;
    size_t used, n;
    buf_init(&b, 0);
    amf_encode_strict_array_begin(&b, 5000);
    for (int i = 0; i < 5000; i++)
        amf_encode_null(&b);
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), -E2BIG);
    struct amf_limits lim = {.max_depth = 4, .max_elements = 5001};
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, &lim), 0);
    assert_int_equal(v.u.arr.count, 5000);
    amf_value_free(&v);

    /* The budget spans a whole decode_all. */
    buf_reset(&b);
    for (int i = 0; i < AMF_MAX_ELEMENTS + 1; i++)
        amf_encode_null(&b);
    assert_int_equal(amf_decode_all((uint8_t *)b.data, b.len, &vals, &n, NULL), -E2BIG);
    assert_null(vals);

    /* A count that lies is not an allocation size. */
    const uint8_t liar[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x05};
    assert_int_equal(amf_decode(liar, sizeof liar, &used, &v, NULL), -EBADMSG);
    const uint8_t liar2[] = {0x0c, 0xff, 0xff, 0xff, 0xff, 'a'};
    assert_int_equal(amf_decode(liar2, sizeof liar2, &used, &v, NULL), -EBADMSG);
    buf_free(&b);
}

/* An ECMA array that ends with the input after its announced count is taken
 * without the end marker; any other shortfall is an error. */
static void test_ecma_without_end(void **state)
{
    struct buf b;
    struct amf_value v;
    size_t used;
    buf_init(&b, 0);
    amf_encode_ecma_array_begin(&b, 2);
    amf_encode_prop_number(&b, "a", 1);
    amf_encode_prop_number(&b, "b", 2);
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), 0);
    assert_int_equal(v.u.obj.count, 2);
    amf_value_free(&v);
    b.data[4] = 3; /* announced three */
    assert_int_equal(amf_decode((uint8_t *)b.data, b.len, &used, &v, NULL), -EBADMSG);
    buf_free(&b);
}

static void test_embedded_nul(void **state)
{
    const uint8_t s[] = {0x02, 0x00, 0x03, 'a', 0, 'b'};
    struct amf_value v;
    size_t used;
    assert_int_equal(amf_decode(s, sizeof s, &used, &v, NULL), 0);
    assert_int_equal(v.u.str.len, 3);
    assert_null(amf_string(&v));
    amf_value_free(&v);
}

/* Random bytes and random mutations of a valid encoding never crash. */
static void test_garbage(void **state)
{
    uint32_t s = 7;
    struct buf good;
    char longstr[100];
    memset(longstr, 'y', sizeof longstr);
    buf_init(&good, 0);
    build_everything(&good, longstr, sizeof longstr);
    uint8_t *p = malloc(good.len);
    for (int round = 0; round < 20000; round++) {
        memcpy(p, good.data, good.len);
        for (int k = 0; k < 1 + round % 8; k++) {
            s = s * 1664525u + 1013904223u;
            p[(s >> 8) % good.len] = (uint8_t)(s >> 24);
        }
        struct amf_value *vals;
        size_t n;
        if (amf_decode_all(p, good.len, &vals, &n, NULL) == 0)
            amf_values_free(vals, n);
    }
    free(p);
    buf_free(&good);
}

static void test_encoder_limits(void **state)
{
    struct buf b;
    char *k = malloc(70000);
    memset(k, 'k', 69999);
    k[69999] = '\0';
    buf_init(&b, 0);
    assert_int_equal(amf_encode_key(&b, k), -EINVAL);
    free(k);
    buf_free(&b);
    buf_init(&b, 4);
    assert_int_equal(amf_encode_string(&b, "toolong"), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_scalar_roundtrips),
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_markers),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_element_limit),
        cmocka_unit_test(test_ecma_without_end),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_encoder_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
