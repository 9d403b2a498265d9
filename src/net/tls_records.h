/*
 * TLS 1.3 records after the handshake, with nothing but the traffic keys.
 *
 * Why: an idle TLS connection in OpenSSL 3 keeps about 15 KB (the SSL
 * object, its record layer, two cipher contexts, the session). A chat
 * room of 10,000 viewers is 10,000 idle connections, and that state was
 * two thirds of what each one cost. Once a TLS 1.3 handshake is over, all
 * that is needed to go on is, per direction, the traffic secret, the key
 * and IV derived from it, and a sequence number: about 200 bytes.
 *
 * So tls.c lets OpenSSL do the whole handshake (certificates, key exchange,
 * the key schedule), takes the two application traffic secrets it reports
 * through its key-log callback, frees the SSL object, and from then on a
 * tls_records protects and opens records (RFC 8446 5.2-5.4) with OpenSSL's
 * AEAD ciphers: AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305, as the
 * handshake chose. Keys are derived with OpenSSL's HKDF (RFC 8446 7.1,
 * 7.3). One cipher context, shared by every connection of the thread, is
 * keyed for each record: that costs about 0.2 us, against 2 KB per
 * connection for contexts of their own.
 *
 * What the peer may still send after the handshake, and what happens:
 * application data; alerts (close_notify ends the stream, anything else
 * fails it); KeyUpdate (RFC 8446 4.6.3: the read key moves on, and when
 * the peer asks, we send ours and move the write key on). Anything else
 * (a plaintext record, change_cipher_spec, another handshake message, a
 * record over 2^14 + 256 bytes, one that does not authenticate) ends the
 * connection with the matching fatal alert. The write key is also moved
 * on by ourselves every TLS_RECORDS_REKEY records, well inside the AES-GCM
 * usage limit of RFC 8446 5.5.
 *
 * Loop thread only (the shared cipher context).
 */
#ifndef HEARTH_NET_TLS_RECORDS_H
#define HEARTH_NET_TLS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#define TLS_RECORDS_REKEY (1u << 23)

/* Records sealed under one write key before we move to the next;
 * TLS_RECORDS_REKEY, which tests lower. */
extern uint64_t tls_records_rekey_after;

struct tls_records;

/* Record content types and alerts that the callers name. */
enum {
    TLS_CT_ALERT = 21,
    TLS_CT_HANDSHAKE = 22,
    TLS_CT_APPLICATION_DATA = 23,
};
enum {
    TLS_ALERT_CLOSE_NOTIFY = 0,
    TLS_ALERT_UNEXPECTED_MESSAGE = 10,
    TLS_ALERT_BAD_RECORD_MAC = 20,
    TLS_ALERT_RECORD_OVERFLOW = 22,
    TLS_ALERT_DECODE_ERROR = 50,
    TLS_ALERT_INTERNAL_ERROR = 80,
};

/* Where sealed records go: 0, or negative to fail the write. */
typedef int (*tls_records_send_fn)(void *ud, const void *data, size_t len);

/*
 * From a finished TLS 1.3 handshake: suite is the IANA cipher suite number
 * (0x1301, 0x1302 or 0x1303); read_secret is the peer's application
 * traffic secret, write_secret ours, both secret_len bytes (the suite's
 * hash length). NULL when the suite is not one of those or memory ran out.
 */
struct tls_records *tls_records_new(unsigned suite, const uint8_t *read_secret,
                                    const uint8_t *write_secret, size_t secret_len);
/* Key material is wiped. */
void tls_records_free(struct tls_records *r);
/* Whether tls_records_new takes this suite. */
int tls_records_suite_supported(unsigned suite);

/* Plaintext of the given content type, as records of at most 2^14 bytes. */
int tls_records_seal(struct tls_records *r, uint8_t type, const void *data, size_t len,
                     tls_records_send_fn send, void *ud);

struct tls_record_in {
    uint8_t type;           /* the inner content type */
    const uint8_t *data;    /* the plaintext, valid until the next call or tls_records_wipe */
    size_t len;
};

/*
 * Open the first record of in[0..len): returns the bytes it took (its
 * header included), 0 when the record is not all there yet, or negative
 * with *alert set to the alert the peer should get. Handshake records
 * (KeyUpdate) are handled here, answering through send when the peer
 * asks for our update; out->type is then TLS_CT_HANDSHAKE and there is
 * nothing to deliver.
 */
long tls_records_open(struct tls_records *r, const uint8_t *in, size_t len,
                      struct tls_record_in *out, int *alert, tls_records_send_fn send, void *ud);

/* Wipe the plaintext the last tls_records_open left (a password, say). */
void tls_records_wipe(const struct tls_record_in *in);

/* A short text for the last failure. */
const char *tls_records_error(const struct tls_records *r);

#endif
