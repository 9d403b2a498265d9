/*
 * libFuzzer target: AAC AudioSpecificConfig, including the escape object type, explicit rates and the PCE.
 *
 * The bytes are what a publisher sends as its sequence header, so they are
 * hostile. The parser must return an error or a config, never read outside
 * the input; a config it accepts must make a well-formed init segment.
 * Build (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_media_aac.c \
 *     src/media/codec.c src/media/frame.c src/deliver/hls/fmp4.c src/core/buf.c -o fuzz_media_aac
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "deliver/hls/fmp4.h"
#include "media/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct codec_config c;
    if (codec_config_parse(&c, MEDIA_CODEC_AAC, data, size) == 0) {
        struct buf out;
        buf_init(&out, 1 << 20);
        if (fmp4_write_init(&out, NULL, &c) != 0)
            __builtin_trap();
        buf_free(&out);
        codec_config_free(&c);
    }
    /* The unit parser on its own, as it meets in-band units. */
    struct codec_config u;
    memset(&u, 0, sizeof u);
    codec_aac_parse_asc(&u, data, size);
    return 0;
}
