/*
 * RTMP handshake: simple and digest forms, byte-at-a-time feeding, truncated
 * and bad input. The digest checks here are written independently of
 * handshake.c (own key copies, own offsets, one-shot HMAC over the two
 * halves), the way ffmpeg's rtmpproto.c builds and verifies them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ingest/rtmp/handshake.h"

/* "Genuine Adobe Flash Player 001" and "Genuine Adobe Flash Media Server 001"
 * followed by the common 32 bytes. */
static const uint8_t key_tail[32] = {
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
    0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
    0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
};
static const char fp_text[] = "Genuine Adobe Flash Player 001";
static const char fms_text[] = "Genuine Adobe Flash Media Server 001";

static void hmac(const uint8_t *key, size_t klen, const uint8_t *a, size_t alen, const uint8_t *b,
                 size_t blen, uint8_t out[32])
{
    uint8_t *msg = malloc(alen + blen + 1);
    unsigned int n = 0;
    memcpy(msg, a, alen);
    if (blen)
        memcpy(msg + alen, b, blen);
    assert_non_null(HMAC(EVP_sha256(), key, (int)klen, msg, alen + blen, out, &n));
    assert_int_equal(n, 32);
    free(msg);
}

/* ffmpeg's ff_rtmp_calc_digest_pos(buf, off, 728, off + 4) */
static size_t digest_pos(const uint8_t *pkt, size_t off)
{
    return (size_t)(pkt[off] + pkt[off + 1] + pkt[off + 2] + pkt[off + 3]) % 728 + off + 4;
}

static void digest_at(const uint8_t *pkt, size_t pos, const uint8_t *key, size_t klen,
                      uint8_t out[32])
{
    hmac(key, klen, pkt, pos, pkt + pos + 32, 1536 - pos - 32, out);
}

static uint32_t seed = 12345;
static uint8_t rnd(void)
{
    seed = seed * 1103515245u + 12345u;
    return (uint8_t)(seed >> 16);
}

/* C0 + C1 in the simple form. */
static void make_simple(uint8_t c0c1[1537])
{
    c0c1[0] = 3;
    memset(c0c1 + 1, 0, 8);
    c0c1[4] = 0x12; /* a client time, non-zero on purpose */
    for (int i = 9; i < 1537; i++)
        c0c1[i] = rnd();
}

/* C0 + C1 in the digest form at the given ffmpeg offset (8: schema 0, 772:
 * schema 1). Returns the digest's position inside C1. */
static size_t make_digest(uint8_t c0c1[1537], size_t off)
{
    uint8_t *c1 = c0c1 + 1;
    uint8_t d[32];
    c0c1[0] = 3;
    memset(c1, 0, 4);
    c1[4] = 9; /* Flash Player 9.0.124.2, as ffmpeg says it is */
    c1[5] = 0;
    c1[6] = 124;
    c1[7] = 2;
    for (int i = 8; i < 1536; i++)
        c1[i] = rnd();
    size_t pos = digest_pos(c1, off);
    digest_at(c1, pos, (const uint8_t *)fp_text, 30, d);
    memcpy(c1 + pos, d, 32);
    return pos;
}

static void full_server_key(uint8_t key[68])
{
    memcpy(key, fms_text, 36);
    memcpy(key + 36, key_tail, 32);
}

static void test_keys_match_published(void **state)
{
    assert_memory_equal(rtmp_hs_client_key, fp_text, 30);
    assert_memory_equal(rtmp_hs_client_key + 30, key_tail, 32);
    assert_memory_equal(rtmp_hs_server_key, fms_text, 36);
    assert_memory_equal(rtmp_hs_server_key + 36, key_tail, 32);
}

static void test_simple(void **state)
{
    uint8_t in[1537 + 1536 + 7];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;

    make_simple(in);
    for (size_t i = 1537; i < sizeof in; i++)
        in[i] = rnd();
    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 1000);

    assert_int_equal(rtmp_hs_feed(&hs, in, sizeof in, &used, &out), RTMP_HS_DONE);
    assert_int_equal(used, 1537 + 1536); /* the 7 extra bytes are chunk stream */
    assert_false(hs.digest);
    assert_int_equal(out.len, 1 + 1536 * 2);
    const uint8_t *o = (const uint8_t *)out.data;
    assert_int_equal(o[0], 3);
    assert_int_equal(o[1] << 24 | o[2] << 16 | o[3] << 8 | o[4], 1000); /* S1 time */
    assert_memory_equal(o + 5, "\0\0\0\0", 4);                          /* S1 zero */
    assert_memory_equal(o + 1 + 1536, in + 1, 1536);                    /* S2 = C1 */
    assert_int_equal(hs.peer_epoch, 0x12);

    /* Done stays done and takes nothing more. */
    assert_int_equal(rtmp_hs_feed(&hs, in, 10, &used, &out), RTMP_HS_DONE);
    assert_int_equal(used, 0);
    buf_free(&out);
}

static void test_byte_at_a_time(void **state)
{
    uint8_t in[1537 + 1536];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;
    int rc = RTMP_HS_AGAIN;

    make_simple(in);
    memset(in + 1537, 0xAB, 1536);
    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 0);
    for (size_t i = 0; i < sizeof in; i++) {
        assert_int_equal(rc, RTMP_HS_AGAIN);
        rc = rtmp_hs_feed(&hs, in + i, 1, &used, &out);
        assert_int_equal(used, 1);
        /* S0 S1 S2 go out exactly when C1 is complete, and only once. */
        assert_int_equal(out.len, i + 1 < 1537 ? 0 : 3073);
    }
    assert_int_equal(rc, RTMP_HS_DONE);
    assert_memory_equal(out.data + 1537, in + 1, 1536);
    buf_free(&out);
}

/* Check S1 and S2 the way ffmpeg does when it plays (rtmp_handshake in
 * libavformat/rtmpproto.c): S1 digest at either schema under the FMS text
 * key, S2 signature keyed from the client digest. */
static void verify_server_reply(const uint8_t *reply, const uint8_t *client_digest, size_t want_off)
{
    const uint8_t *s1 = reply + 1, *s2 = reply + 1 + 1536;
    uint8_t d[32], key[68], k2[32], sig[32];
    size_t found = 0;

    assert_int_equal(reply[0], 3);
    assert_true(s1[4] >= 3); /* ffmpeg only verifies when this is >= 3 */
    size_t offs[2] = {772, 8};
    for (int i = 0; i < 2; i++) {
        size_t pos = digest_pos(s1, offs[i]);
        digest_at(s1, pos, (const uint8_t *)fms_text, 36, d);
        if (memcmp(d, s1 + pos, 32) == 0) {
            found = offs[i];
            break;
        }
    }
    assert_int_equal(found, want_off); /* same schema as the client */

    full_server_key(key);
    hmac(key, 68, client_digest, 32, NULL, 0, k2);
    hmac(k2, 32, s2, 1536 - 32, NULL, 0, sig);
    assert_memory_equal(sig, s2 + 1536 - 32, 32);
}

static void run_digest(size_t off, int want_schema, size_t chunk)
{
    uint8_t in[1537 + 1536];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used, pos;
    int rc = RTMP_HS_AGAIN;

    pos = make_digest(in, off);
    memset(in + 1537, 0, 1536);
    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 77);
    for (size_t i = 0; i < sizeof in; i += chunk) {
        size_t n = sizeof in - i < chunk ? sizeof in - i : chunk;
        assert_int_equal(rc, RTMP_HS_AGAIN);
        rc = rtmp_hs_feed(&hs, in + i, n, &used, &out);
        assert_int_equal(used, n);
    }
    assert_int_equal(rc, RTMP_HS_DONE);
    assert_true(hs.digest);
    assert_int_equal(hs.schema, want_schema);
    assert_int_equal(out.len, 3073);
    verify_server_reply((const uint8_t *)out.data, in + 1 + pos, off);
    buf_free(&out);
}

static void test_digest_schema0(void **state)
{
    run_digest(8, 0, sizeof(uint8_t[1537 + 1536]));
    run_digest(8, 0, 100);
}

static void test_digest_schema1(void **state)
{
    run_digest(772, 1, 3073);
    run_digest(772, 1, 1);
}

static void test_digest_helpers_agree(void **state)
{
    uint8_t in[1537];
    for (int i = 0; i < 20; i++) {
        size_t off = i % 2 ? 772 : 8;
        size_t pos = make_digest(in, off);
        assert_int_equal(rtmp_hs_digest_offset(in + 1, i % 2), pos);
        assert_int_equal(
            rtmp_hs_find_digest(in + 1, rtmp_hs_client_key, RTMP_HS_CLIENT_KEY_PARTIAL), i % 2);
        /* The wrong key finds nothing. */
        assert_int_equal(
            rtmp_hs_find_digest(in + 1, rtmp_hs_server_key, RTMP_HS_SERVER_KEY_PARTIAL), -1);
    }
}

static void test_bad_digest_falls_back(void **state)
{
    uint8_t in[1537];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;

    size_t pos = make_digest(in, 8);
    in[1 + pos] ^= 0x55; /* spoil the digest; the version stays non-zero */
    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 0);
    assert_int_equal(rtmp_hs_feed(&hs, in, sizeof in, &used, &out), RTMP_HS_AGAIN);
    assert_false(hs.digest);
    assert_int_equal(out.len, 3073);
    assert_memory_equal(out.data + 1537, in + 1, 1536); /* simple echo */
    assert_memory_equal(out.data + 5, "\0\0\0\0", 4);
    buf_free(&out);
}

static void test_truncated(void **state)
{
    uint8_t in[1537];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;

    make_simple(in);
    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 0);
    assert_int_equal(rtmp_hs_feed(&hs, in, 1000, &used, &out), RTMP_HS_AGAIN);
    assert_int_equal(used, 1000);
    assert_int_equal(out.len, 0);
    assert_int_equal(rtmp_hs_feed(&hs, in + 1000, 537, &used, &out), RTMP_HS_AGAIN);
    assert_int_equal(out.len, 3073);
    /* Half a C2 is still not done. */
    assert_int_equal(rtmp_hs_feed(&hs, in, 700, &used, &out), RTMP_HS_AGAIN);
    assert_int_equal(hs.stage, RTMP_HS_WAIT_C2);
    /* Nothing at all changes nothing. */
    assert_int_equal(rtmp_hs_feed(&hs, in, 0, &used, &out), RTMP_HS_AGAIN);
    assert_int_equal(used, 0);
    buf_free(&out);
}

static void test_bad_version(void **state)
{
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;
    const uint8_t http[] = "GET / HTTP/1.1\r\n";
    const uint8_t rtmpe[] = {6, 0, 0, 0};

    buf_init(&out, 8192);
    rtmp_hs_init(&hs, 0);
    assert_int_equal(rtmp_hs_feed(&hs, http, sizeof http - 1, &used, &out), -EPROTO);
    assert_non_null(hs.error);
    assert_int_equal(out.len, 0);
    /* A failed handshake stays failed. */
    assert_int_equal(rtmp_hs_feed(&hs, http, 1, &used, &out), -EPROTO);

    rtmp_hs_init(&hs, 0);
    assert_int_equal(rtmp_hs_feed(&hs, rtmpe, sizeof rtmpe, &used, &out), -EPROTONOSUPPORT);
    buf_free(&out);
}

static void test_output_limit(void **state)
{
    uint8_t in[1537];
    struct rtmp_handshake hs;
    struct buf out;
    size_t used;

    make_simple(in);
    buf_init(&out, 100); /* too small for S0 S1 S2 */
    rtmp_hs_init(&hs, 0);
    assert_int_equal(rtmp_hs_feed(&hs, in, sizeof in, &used, &out), -EMSGSIZE);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_match_published),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_digest_schema0),
        cmocka_unit_test(test_digest_schema1),
        cmocka_unit_test(test_digest_helpers_agree),
        cmocka_unit_test(test_bad_digest_falls_back),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_output_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
