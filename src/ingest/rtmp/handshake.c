/*
 * RTMP server handshake. See handshake.h for the shape of the exchange.
 *
 * The digest form, as Flash, librtmp and ffmpeg implement it (and nginx-rtmp
 * and SRS accept it):
 *
 *   C1 = time(4) version(4) ... 1528 bytes in which a 32-byte digest sits at
 *        schema 0: offset 12  + (C1[8]  + C1[9]  + C1[10]  + C1[11])  % 728
 *        schema 1: offset 776 + (C1[772]+ C1[773]+ C1[774] + C1[775]) % 728
 *   digest = HMAC-SHA256(key = "Genuine Adobe Flash Player 001",
 *                        msg = C1 without the 32 digest bytes)
 *
 * The server answers with S1 built the same way under the 36-byte text of
 * the Flash Media Server key, and with S2 = random(1504) + HMAC-SHA256(
 * key = HMAC-SHA256(full 68-byte server key, client digest), msg = those
 * 1504 bytes). We reuse the client's schema for S1: ffmpeg and librtmp try
 * both, older Flash players only look where they put their own.
 *
 * The whole exchange is 1537 + 1536 bytes in and 3073 out; we keep one fixed
 * array for C0+C1 and only count C2's bytes, so nothing here grows from the
 * network.
 */
#include "ingest/rtmp/handshake.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

const uint8_t rtmp_hs_client_key[62] = {
    'G', 'e', 'n', 'u', 'i', 'n', 'e', ' ', 'A', 'd', 'o', 'b', 'e', ' ',
    'F', 'l', 'a', 's', 'h', ' ', 'P', 'l', 'a', 'y', 'e', 'r', ' ',
    '0', '0', '1',
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
    0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
    0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
};

const uint8_t rtmp_hs_server_key[68] = {
    'G', 'e', 'n', 'u', 'i', 'n', 'e', ' ', 'A', 'd', 'o', 'b', 'e', ' ',
    'F', 'l', 'a', 's', 'h', ' ', 'M', 'e', 'd', 'i', 'a', ' ',
    'S', 'e', 'r', 'v', 'e', 'r', ' ', '0', '0', '1',
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1,
    0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB,
    0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
};

/* What FMS 3.5 put in S1; clients that verify S1 only look at it being >= 3. */
static const uint8_t server_version[4] = {0x0D, 0x0E, 0x0A, 0x0D};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                       uint8_t out[RTMP_HS_DIGEST_LEN])
{
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, msg, len, out, &out_len) ||
        out_len != RTMP_HS_DIGEST_LEN)
        return -EIO;
    return 0;
}

static int fill_random(uint8_t *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO;
}

size_t rtmp_hs_digest_offset(const uint8_t *pkt, int schema)
{
    size_t base = schema == 0 ? 8 : 772;
    size_t sum = (size_t)pkt[base] + pkt[base + 1] + pkt[base + 2] + pkt[base + 3];
    return sum % 728 + base + 4;
}

int rtmp_hs_calc_digest(const uint8_t *pkt, size_t digest_off, const uint8_t *key,
                        size_t key_len, uint8_t out[RTMP_HS_DIGEST_LEN])
{
    uint8_t msg[RTMP_HS_SIZE - RTMP_HS_DIGEST_LEN];
    if (digest_off > RTMP_HS_SIZE - RTMP_HS_DIGEST_LEN)
        return -EINVAL;
    memcpy(msg, pkt, digest_off);
    memcpy(msg + digest_off, pkt + digest_off + RTMP_HS_DIGEST_LEN,
           RTMP_HS_SIZE - digest_off - RTMP_HS_DIGEST_LEN);
    return hmac_sha256(key, key_len, msg, sizeof msg, out);
}

int rtmp_hs_find_digest(const uint8_t *pkt, const uint8_t *key, size_t key_len)
{
    /* Schema 1 first, as nginx-rtmp does: FMLE and Flash 10 use it. */
    static const int order[2] = {1, 0};
    for (int i = 0; i < 2; i++) {
        uint8_t digest[RTMP_HS_DIGEST_LEN];
        size_t off = rtmp_hs_digest_offset(pkt, order[i]);
        if (rtmp_hs_calc_digest(pkt, off, key, key_len, digest) == 0 &&
            CRYPTO_memcmp(digest, pkt + off, RTMP_HS_DIGEST_LEN) == 0)
            return order[i];
    }
    return -1;
}

void rtmp_hs_init(struct rtmp_handshake *hs, uint32_t epoch)
{
    memset(hs, 0, sizeof *hs);
    hs->stage = RTMP_HS_WAIT_C0C1;
    hs->epoch = epoch;
}

static int fail(struct rtmp_handshake *hs, int rc, const char *why)
{
    hs->stage = RTMP_HS_FAILED;
    hs->error = why;
    return rc;
}

/* S0 S1 S2 for a C1 in hs->pkt + 1, appended to out in one piece. */
static int make_reply(struct rtmp_handshake *hs, struct buf *out)
{
    const uint8_t *c1 = hs->pkt + 1;
    uint8_t reply[1 + 2 * RTMP_HS_SIZE];
    uint8_t *s1 = reply + 1, *s2 = reply + 1 + RTMP_HS_SIZE;
    uint8_t client_digest[RTMP_HS_DIGEST_LEN];
    int rc;

    hs->peer_epoch = get_be32(c1);
    hs->peer_version = get_be32(c1 + 4);
    hs->digest = false;
    if (hs->peer_version != 0) {
        int schema = rtmp_hs_find_digest(c1, rtmp_hs_client_key, RTMP_HS_CLIENT_KEY_PARTIAL);
        if (schema >= 0) {
            hs->digest = true;
            hs->schema = schema;
            memcpy(client_digest, c1 + rtmp_hs_digest_offset(c1, schema), RTMP_HS_DIGEST_LEN);
        }
    }

    reply[0] = RTMP_HS_VERSION;
    put_be32(s1, hs->epoch);
    if ((rc = fill_random(s1 + 8, RTMP_HS_SIZE - 8)))
        return fail(hs, rc, "no random bytes for S1");

    if (!hs->digest) {
        memset(s1 + 4, 0, 4);
        memcpy(s2, c1, RTMP_HS_SIZE);
    } else {
        uint8_t key[RTMP_HS_DIGEST_LEN];
        size_t off;

        memcpy(s1 + 4, server_version, 4);
        off = rtmp_hs_digest_offset(s1, hs->schema);
        if ((rc = rtmp_hs_calc_digest(s1, off, rtmp_hs_server_key, RTMP_HS_SERVER_KEY_PARTIAL,
                                      s1 + off)))
            return fail(hs, rc, "HMAC failed for S1");

        if ((rc = fill_random(s2, RTMP_HS_SIZE - RTMP_HS_DIGEST_LEN)))
            return fail(hs, rc, "no random bytes for S2");
        if ((rc = hmac_sha256(rtmp_hs_server_key, sizeof rtmp_hs_server_key, client_digest,
                              RTMP_HS_DIGEST_LEN, key)) ||
            (rc = hmac_sha256(key, sizeof key, s2, RTMP_HS_SIZE - RTMP_HS_DIGEST_LEN,
                              s2 + RTMP_HS_SIZE - RTMP_HS_DIGEST_LEN)))
            return fail(hs, rc, "HMAC failed for S2");
    }

    if ((rc = buf_append(out, reply, sizeof reply)))
        return fail(hs, rc, "cannot queue S0 S1 S2");
    return 0;
}

int rtmp_hs_feed(struct rtmp_handshake *hs, const uint8_t *data, size_t len,
                 size_t *consumed, struct buf *out)
{
    size_t used = 0;
    *consumed = 0;

    switch (hs->stage) {
    case RTMP_HS_FAILED:
        return -EPROTO;
    case RTMP_HS_FINISHED:
        return RTMP_HS_DONE;
    case RTMP_HS_WAIT_C0C1: {
        /* Judge C0 on its own byte so that garbage (an HTTP request on 1935)
         * is turned away at once instead of after 1537 bytes or a timeout. */
        if (hs->have == 0 && len > 0) {
            if (data[0] == 6 || data[0] == 8)
                return fail(hs, -EPROTONOSUPPORT, "RTMPE (encrypted RTMP) is not supported");
            if (data[0] != RTMP_HS_VERSION)
                return fail(hs, -EPROTO, "C0 is not RTMP version 3");
        }
        size_t n = sizeof hs->pkt - hs->have;
        if (n > len)
            n = len;
        memcpy(hs->pkt + hs->have, data, n);
        hs->have += n;
        used += n;
        if (hs->have < sizeof hs->pkt) {
            *consumed = used;
            return RTMP_HS_AGAIN;
        }
        int rc = make_reply(hs, out);
        if (rc) {
            *consumed = used;
            return rc;
        }
        hs->stage = RTMP_HS_WAIT_C2;
        hs->have = 0;
    }
        /* fall through */
    case RTMP_HS_WAIT_C2: {
        size_t n = RTMP_HS_SIZE - hs->have;
        if (n > len - used)
            n = len - used;
        hs->have += n;
        used += n;
        *consumed = used;
        if (hs->have < RTMP_HS_SIZE)
            return RTMP_HS_AGAIN;
        hs->stage = RTMP_HS_FINISHED;
        return RTMP_HS_DONE;
    }
    }
    return -EPROTO;
}
