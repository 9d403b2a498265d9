/*
 * libFuzzer target: FLV audio/video tag bodies. The first byte picks audio or
 * video. A result must point inside the input, and every refusal or skip
 * must say why.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_rtmp_flv.c
 *        src/ingest/rtmp/flv.c
 */
#include <stdint.h>
#include <stdlib.h>

#include "ingest/rtmp/flv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct flv_media m;
    int rc;

    if (size < 1)
        return 0;
    bool video = data[0] & 1;
    data++;
    size--;
    rc = video ? flv_parse_video(data, size, &m) : flv_parse_audio(data, size, &m);
    if (rc < 0 || m.packet == FLV_PACKET_SKIP) {
        if (m.why[0] == '\0')
            abort();
        return 0;
    }
    if (rc > 0)
        abort();
    if (m.len && (m.data < data || m.data + m.len > data + size))
        abort();
    if (m.kind != (video ? FLV_VIDEO : FLV_AUDIO) || m.codec == FLV_CODEC_NONE)
        abort();
    return 0;
}
