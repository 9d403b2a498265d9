/*
 * libFuzzer target: the RTMP server handshake. The first byte picks how the
 * rest is sliced, because the state machine must not care how bytes arrive;
 * whatever the input, the reply is all or nothing and consumed never passes
 * what was fed.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_rtmp_handshake.c
 *        src/ingest/rtmp/handshake.c src/core/buf.c -lcrypto
 */
#include <stdint.h>
#include <stdlib.h>

#include "ingest/rtmp/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rtmp_handshake hs;
    struct buf out;
    size_t step, off = 0;

    if (size < 1)
        return 0;
    step = 1 + data[0] * 13u;
    data++;
    size--;
    buf_init(&out, 4096);
    rtmp_hs_init(&hs, 1);
    while (off < size) {
        size_t n = size - off < step ? size - off : step, used = 0;
        int rc = rtmp_hs_feed(&hs, data + off, n, &used, &out);
        if (used > n)
            abort();
        off += used;
        if (rc < 0 || rc == RTMP_HS_DONE)
            break;
        if (used != n)
            abort(); /* AGAIN means everything was taken */
    }
    if (out.len != 0 && out.len != 3073)
        abort();
    buf_free(&out);
    return 0;
}
