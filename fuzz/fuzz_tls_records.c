/*
 * libFuzzer target: the TLS 1.3 record layer of slim connections
 * (net/tls_records.c). Records that fail authentication stop at the AEAD,
 * so the input mostly describes what a peer holding the keys would send:
 * a sequence of [op][len][bytes] where op's low bit picks "seal these bytes
 * under the peer's key, with the next input byte as the inner content type"
 * (any inner plaintext, padding, alert, handshake message or KeyUpdate) or
 * "pass them raw" (headers, lengths, cut records, forgeries). A KeyUpdate
 * moves our read key on and the peer's records stop authenticating, as
 * they should. Whatever arrives: a record is taken whole
 * or not at all, delivered data is at most 2^14 bytes, and a failure names
 * an alert.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "net/tls_records.h"

static int to_buf(void *ud, const void *data, size_t len) { return buf_append(ud, data, len); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned suite = size ? 0x1301u + data[0] % 3u : 0x1301u;
    size_t hash = suite == 0x1302 ? 48 : 32;
    uint8_t sa[48], sb[48];
    memset(sa, 0xa5, sizeof sa);
    memset(sb, 0x5a, sizeof sb);
    struct tls_records *peer = tls_records_new(suite, sa, sb, hash);
    struct tls_records *us = tls_records_new(suite, sb, sa, hash);
    if (!peer || !us)
        abort();
    struct buf wire, back;
    buf_init(&wire, 0);
    buf_init(&back, 0);
    size_t i = size ? 1 : 0;
    while (i + 2 <= size) {
        uint8_t op = data[i++];
        size_t n = data[i++];
        if (op & 0x80)
            n *= 97; /* now and then a record near 2^14 */
        if (n > size - i)
            n = size - i;
        if (op & 1) {
            uint8_t type = i < size ? data[i] : 23;
            (void)tls_records_seal(peer, type, data + i, n, to_buf, &wire);
        } else {
            (void)buf_append(&wire, data + i, n);
        }
        i += n;
    }
    size_t off = 0;
    for (;;) {
        struct tls_record_in r;
        int alert = 0;
        long used = tls_records_open(us, (const uint8_t *)wire.data + off, wire.len - off, &r,
                                     &alert, to_buf, &back);
        if (used < 0) {
            if (alert == 0)
                abort();
            break;
        }
        if (used == 0)
            break;
        if ((size_t)used > wire.len - off || r.len > 16384)
            abort();
        off += (size_t)used;
    }
    buf_free(&wire);
    buf_free(&back);
    tls_records_free(peer);
    tls_records_free(us);
    return 0;
}
