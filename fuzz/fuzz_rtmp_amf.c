/*
 * libFuzzer target: the AMF0 decoder. Whatever decodes must encode, and the
 * encoding must decode and encode again to the same bytes (the tree keeps
 * everything the encoder needs). Commands are decoded too.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_rtmp_amf.c
 *        src/ingest/rtmp/amf.c src/core/buf.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/rtmp/amf.h"

static void encode_all(const struct amf_value *v, size_t n, struct buf *b)
{
    for (size_t i = 0; i < n; i++)
        if (amf_encode_value(b, &v[i]))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct amf_value *v, *v2;
    size_t n, n2;
    struct amf_command cmd;
    struct buf e1, e2;

    if (amf_command_decode(data, size, &cmd, NULL) == 0) {
        if (!cmd.name || cmd.nargs + 2 != cmd.count)
            abort();
        amf_command_free(&cmd);
    }
    struct amf_value one;
    size_t used;
    if (amf_decode(data, size, &used, &one, NULL) == 0) {
        if (used == 0 || used > size)
            abort();
        amf_value_free(&one);
    }

    if (amf_decode_all(data, size, &v, &n, NULL))
        return 0;
    buf_init(&e1, 0);
    buf_init(&e2, 0);
    encode_all(v, n, &e1);
    /* Re-encoding can only add end markers to marker-less ECMA arrays, so
     * the element count stays within the limit. */
    if (amf_decode_all((const uint8_t *)e1.data, e1.len, &v2, &n2, NULL))
        abort();
    if (n2 != n)
        abort();
    encode_all(v2, n2, &e2);
    if (e1.len != e2.len || (e1.len && memcmp(e1.data, e2.data, e1.len)))
        abort();
    amf_values_free(v, n);
    amf_values_free(v2, n2);
    buf_free(&e1);
    buf_free(&e2);
    return 0;
}
