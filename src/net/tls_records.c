/*
 * TLS 1.3 record protection with the traffic keys only. See tls_records.h.
 *
 * A record on the wire (RFC 8446 5.2):
 *
 *   23 03 03 LEN(2) | AEAD(key, nonce, aad = those 5 bytes,
 *                          plaintext || content type || zero padding) || tag(16)
 *
 * with nonce = IV xor the 64-bit record sequence number (left-padded to
 * the IV's 12 bytes), one sequence per direction, reset to 0 with each new
 * key. The key and IV of a direction come from its traffic secret:
 * HKDF-Expand-Label(secret, "key" / "iv", "", length), and a KeyUpdate
 * replaces the secret with HKDF-Expand-Label(secret, "traffic upd", "",
 * hash length) (RFC 8446 7.1, 7.2, 7.3).
 */
#include "net/tls_records.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#define MAX_PLAIN 16384u                /* 2^14: the most one record carries */
#define MAX_CIPHERTEXT (MAX_PLAIN + 256u) /* what a peer may send (5.2) */
#define TAG_LEN 16u
#define IV_LEN 12u
#define HDR_LEN 5u
#define KEYUPDATE 24

struct suite {
    unsigned id;
    const char *cipher_name, *digest;
    size_t key_len, hash_len;
};

static const struct suite suites[] = {
    {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};
#define NSUITES (sizeof suites / sizeof suites[0])

struct direction {
    uint8_t secret[48];
    uint8_t key[32];
    uint8_t iv[IV_LEN];
    uint64_t seq;
};

struct tls_records {
    const struct suite *suite;
    struct direction rd, wr;
    const char *err;
};

uint64_t tls_records_rekey_after = TLS_RECORDS_REKEY;

/* Shared by every connection of the (loop) thread; see the header. */
static EVP_CIPHER *ciphers[NSUITES];
static EVP_KDF *hkdf;
static EVP_CIPHER_CTX *cctx;
static const EVP_CIPHER *cctx_cipher;
static uint8_t sealed[HDR_LEN + MAX_PLAIN + 1 + TAG_LEN];
static uint8_t opened[MAX_CIPHERTEXT];

static const struct suite *suite_find(unsigned id)
{
    for (size_t i = 0; i < NSUITES; i++)
        if (suites[i].id == id)
            return &suites[i];
    return NULL;
}

int tls_records_suite_supported(unsigned suite) { return suite_find(suite) != NULL; }

static EVP_CIPHER *suite_cipher(const struct suite *s)
{
    size_t i = (size_t)(s - suites);
    if (!ciphers[i])
        ciphers[i] = EVP_CIPHER_fetch(NULL, s->cipher_name, NULL);
    return ciphers[i];
}

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1. */
static int expand_label(const struct suite *s, const uint8_t *secret, const char *label,
                        uint8_t *out, size_t len)
{
    uint8_t info[2 + 1 + 255 + 1];
    size_t ll = 6 + strlen(label);
    if (ll > 255 || len > 0xffff)
        return -EINVAL;
    info[0] = (uint8_t)(len >> 8);
    info[1] = (uint8_t)len;
    info[2] = (uint8_t)ll;
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll - 6);
    info[3 + ll] = 0; /* empty context */

    if (!hkdf && !(hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL)))
        return -ENOSYS;
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(hkdf);
    if (!k)
        return -ENOMEM;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)s->digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, s->hash_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 4 + ll),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(k, out, len, params);
    EVP_KDF_CTX_free(k);
    return ok == 1 ? 0 : -EIO;
}

/* A direction's key and IV from its secret; the sequence starts over. */
static int direction_keys(const struct suite *s, struct direction *d)
{
    d->seq = 0;
    if (expand_label(s, d->secret, "key", d->key, s->key_len) ||
        expand_label(s, d->secret, "iv", d->iv, IV_LEN))
        return -EIO;
    return 0;
}

/* The next generation of a direction's secret (KeyUpdate). */
static int direction_update(const struct suite *s, struct direction *d)
{
    uint8_t next[48];
    if (expand_label(s, d->secret, "traffic upd", next, s->hash_len))
        return -EIO;
    memcpy(d->secret, next, s->hash_len);
    OPENSSL_cleanse(next, sizeof next);
    return direction_keys(s, d);
}

struct tls_records *tls_records_new(unsigned suite, const uint8_t *read_secret,
                                    const uint8_t *write_secret, size_t secret_len)
{
    const struct suite *s = suite_find(suite);
    if (!s || secret_len != s->hash_len || !suite_cipher(s))
        return NULL;
    struct tls_records *r = OPENSSL_zalloc(sizeof *r);
    if (!r)
        return NULL;
    r->suite = s;
    memcpy(r->rd.secret, read_secret, secret_len);
    memcpy(r->wr.secret, write_secret, secret_len);
    if (direction_keys(s, &r->rd) || direction_keys(s, &r->wr)) {
        tls_records_free(r);
        return NULL;
    }
    return r;
}

void tls_records_free(struct tls_records *r)
{
    if (r)
        OPENSSL_clear_free(r, sizeof *r);
}

void tls_records_wipe(const struct tls_record_in *in)
{
    if (in->data == opened && in->len)
        OPENSSL_cleanse(opened, in->len);
}

const char *tls_records_error(const struct tls_records *r)
{
    return r->err ? r->err : "no error";
}

/* Key the shared context for one record of d. */
static int aead_start(const struct tls_records *r, const struct direction *d, int enc)
{
    uint8_t nonce[IV_LEN];
    memcpy(nonce, d->iv, IV_LEN);
    for (int i = 0; i < 8; i++)
        nonce[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
    if (!cctx && !(cctx = EVP_CIPHER_CTX_new()))
        return -ENOMEM;
    const EVP_CIPHER *c = suite_cipher(r->suite);
    if (cctx_cipher != c) {
        cctx_cipher = NULL;
        if (!c || EVP_CipherInit_ex2(cctx, c, NULL, NULL, enc, NULL) != 1)
            return -EIO;
        cctx_cipher = c;
    }
    if (EVP_CipherInit_ex2(cctx, NULL, d->key, nonce, enc, NULL) != 1) {
        cctx_cipher = NULL;
        return -EIO;
    }
    return 0;
}

/* One record of at most MAX_PLAIN bytes. */
static int seal_one(struct tls_records *r, uint8_t type, const uint8_t *data, size_t n,
                    tls_records_send_fn send, void *ud)
{
    size_t clen = n + 1 + TAG_LEN;
    uint8_t *h = sealed;
    h[0] = TLS_CT_APPLICATION_DATA;
    h[1] = 3;
    h[2] = 3;
    h[3] = (uint8_t)(clen >> 8);
    h[4] = (uint8_t)clen;
    memcpy(h + HDR_LEN, data, n);
    h[HDR_LEN + n] = type;
    int outl;
    if (aead_start(r, &r->wr, 1) ||
        EVP_CipherUpdate(cctx, NULL, &outl, h, HDR_LEN) != 1 ||
        EVP_CipherUpdate(cctx, h + HDR_LEN, &outl, h + HDR_LEN, (int)n + 1) != 1 ||
        EVP_CipherFinal_ex(cctx, h + HDR_LEN + n + 1, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, h + HDR_LEN + n + 1) != 1) {
        r->err = "cannot encrypt a record";
        return -EIO;
    }
    r->wr.seq++;
    int rc = send(ud, h, HDR_LEN + clen);
    OPENSSL_cleanse(h + HDR_LEN, n + 1); /* the plaintext went with the encryption */
    return rc;
}

/* Our KeyUpdate, then our new write key. */
static int key_update_send(struct tls_records *r, bool request, tls_records_send_fn send, void *ud)
{
    const uint8_t msg[5] = {KEYUPDATE, 0, 0, 1, request ? 1 : 0};
    int rc = seal_one(r, TLS_CT_HANDSHAKE, msg, sizeof msg, send, ud);
    if (rc)
        return rc;
    if (direction_update(r->suite, &r->wr)) {
        r->err = "cannot derive the next write key";
        return -EIO;
    }
    return 0;
}

int tls_records_seal(struct tls_records *r, uint8_t type, const void *data, size_t len,
                     tls_records_send_fn send, void *ud)
{
    const uint8_t *p = data;
    while (len > 0) {
        if (r->wr.seq >= tls_records_rekey_after) {
            int rc = key_update_send(r, false, send, ud);
            if (rc)
                return rc;
        }
        size_t n = len > MAX_PLAIN ? MAX_PLAIN : len;
        int rc = seal_one(r, type, p, n, send, ud);
        if (rc)
            return rc;
        p += n;
        len -= n;
    }
    return 0;
}

static long refuse(struct tls_records *r, int *alert, int code, const char *why)
{
    *alert = code;
    r->err = why;
    return -EPROTO;
}

/* The peer's KeyUpdate (RFC 8446 4.6.3), the whole content of a record. */
static long key_update_recv(struct tls_records *r, const uint8_t *p, size_t n, int *alert,
                            tls_records_send_fn send, void *ud)
{
    if (n < 4 || p[0] != KEYUPDATE)
        return refuse(r, alert, TLS_ALERT_UNEXPECTED_MESSAGE,
                      "a handshake message other than KeyUpdate after the handshake");
    size_t mlen = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (mlen != 1 || n < 5)
        return refuse(r, alert, TLS_ALERT_DECODE_ERROR, "a malformed KeyUpdate");
    if (p[4] > 1)
        return refuse(r, alert, 47 /* illegal_parameter */, "a KeyUpdate with a bad request");
    /* A key change must end its record (5.1). */
    if (n != 5)
        return refuse(r, alert, TLS_ALERT_UNEXPECTED_MESSAGE,
                      "data after a KeyUpdate in the same record");
    if (direction_update(r->suite, &r->rd))
        return refuse(r, alert, TLS_ALERT_INTERNAL_ERROR, "cannot derive the next read key");
    if (p[4] == 1) {
        int rc = key_update_send(r, false, send, ud);
        if (rc) {
            *alert = TLS_ALERT_INTERNAL_ERROR;
            return rc;
        }
    }
    return 0;
}

long tls_records_open(struct tls_records *r, const uint8_t *in, size_t len,
                      struct tls_record_in *out, int *alert, tls_records_send_fn send, void *ud)
{
    out->type = 0;
    out->data = NULL;
    out->len = 0;
    *alert = 0;
    if (len < HDR_LEN)
        return 0;
    if (in[0] != TLS_CT_APPLICATION_DATA)
        return refuse(r, alert, TLS_ALERT_UNEXPECTED_MESSAGE,
                      "an unprotected record after the handshake");
    size_t clen = (size_t)in[3] << 8 | in[4];
    if (clen > MAX_CIPHERTEXT)
        return refuse(r, alert, TLS_ALERT_RECORD_OVERFLOW, "a record over 2^14 + 256 bytes");
    if (clen < 1 + TAG_LEN)
        return refuse(r, alert, TLS_ALERT_DECODE_ERROR, "a record too short to be protected");
    if (len < HDR_LEN + clen)
        return 0;

    size_t n = clen - TAG_LEN;
    int outl;
    if (aead_start(r, &r->rd, 0) ||
        EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, (void *)(in + HDR_LEN + n)) != 1 ||
        EVP_CipherUpdate(cctx, NULL, &outl, in, HDR_LEN) != 1 ||
        EVP_CipherUpdate(cctx, opened, &outl, in + HDR_LEN, (int)n) != 1 ||
        EVP_CipherFinal_ex(cctx, opened + n, &outl) != 1) {
        OPENSSL_cleanse(opened, n);
        return refuse(r, alert, TLS_ALERT_BAD_RECORD_MAC, "a record that does not authenticate");
    }
    r->rd.seq++;

    /* The content type is the last byte that is not padding. */
    size_t i = n;
    while (i > 0 && opened[i - 1] == 0)
        i--;
    if (i == 0)
        return refuse(r, alert, TLS_ALERT_UNEXPECTED_MESSAGE, "a record with no content type");
    uint8_t type = opened[i - 1];
    size_t plen = i - 1;
    if (plen > MAX_PLAIN)
        return refuse(r, alert, TLS_ALERT_RECORD_OVERFLOW, "a record over 2^14 bytes of content");

    switch (type) {
    case TLS_CT_APPLICATION_DATA:
        break;
    case TLS_CT_ALERT:
        if (plen != 2)
            return refuse(r, alert, TLS_ALERT_DECODE_ERROR, "a malformed alert");
        break;
    case TLS_CT_HANDSHAKE: {
        long rc = key_update_recv(r, opened, plen, alert, send, ud);
        if (rc)
            return rc;
        plen = 0;
        break;
    }
    default:
        return refuse(r, alert, TLS_ALERT_UNEXPECTED_MESSAGE,
                      "a record of an unexpected type after the handshake");
    }
    out->type = type;
    out->data = opened;
    out->len = plen;
    return (long)(HDR_LEN + clen);
}
