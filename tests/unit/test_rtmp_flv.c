/*
 * FLV tag bodies: legacy AVC and AAC, Enhanced RTMP hvc1/av01/avc1 video and
 * mp4a audio, what is skipped, what is refused (with the reason naming it),
 * and truncated headers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/rtmp/flv.h"

#define PARSE_V(bytes) flv_parse_video((const uint8_t *)(bytes), sizeof(bytes) - 1, &m)
#define PARSE_A(bytes) flv_parse_audio((const uint8_t *)(bytes), sizeof(bytes) - 1, &m)

static void test_legacy_avc(void **state)
{
    struct flv_media m;
    /* keyframe, sequence header, cts 0, then an avcC start */
    const char seq[] = "\x17\x00\x00\x00\x00\x01\x64\x00\x28";
    assert_int_equal(PARSE_V(seq), 0);
    assert_int_equal(m.kind, FLV_VIDEO);
    assert_int_equal(m.codec, FLV_CODEC_H264);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    assert_true(m.keyframe);
    assert_false(m.enhanced);
    assert_int_equal(m.len, 4);
    assert_ptr_equal(m.data, (const uint8_t *)seq + 5);

    /* inter frame, NALU, cts -33 (B-frames reorder back) */
    assert_int_equal(PARSE_V("\x27\x01\xff\xff\xdf\x00\x00\x00\x02\x09\xf0"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_false(m.keyframe);
    assert_int_equal(m.cts, -33);
    assert_int_equal(m.len, 6);

    /* keyframe with a positive cts */
    assert_int_equal(PARSE_V("\x17\x01\x00\x00\x43\x00\x00\x00\x01\x65"), 0);
    assert_true(m.keyframe);
    assert_int_equal(m.cts, 67);
    /* the largest offsets both ways */
    assert_int_equal(PARSE_V("\x27\x01\x7f\xff\xff\x01"), 0);
    assert_int_equal(m.cts, 8388607);
    assert_int_equal(PARSE_V("\x27\x01\x80\x00\x00\x01"), 0);
    assert_int_equal(m.cts, -8388608);

    /* end of sequence, with and without the cts bytes */
    assert_int_equal(PARSE_V("\x17\x02\x00\x00\x00"), 0);
    assert_int_equal(m.packet, FLV_PACKET_END);
    assert_int_equal(PARSE_V("\x17\x02"), 0);
    assert_int_equal(m.packet, FLV_PACKET_END);
}

static void test_legacy_aac(void **state)
{
    struct flv_media m;
    assert_int_equal(PARSE_A("\xaf\x00\x11\x90"), 0); /* 48 kHz stereo LC */
    assert_int_equal(m.kind, FLV_AUDIO);
    assert_int_equal(m.codec, FLV_CODEC_AAC);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    assert_int_equal(m.len, 2);
    assert_memory_equal(m.data, "\x11\x90", 2);
    assert_int_equal(PARSE_A("\xaf\x01\x21\x10\x04"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_true(m.keyframe);
    assert_int_equal(m.cts, 0);
    assert_int_equal(m.len, 3);
    /* the rate/size/type bits do not matter for AAC */
    assert_int_equal(PARSE_A("\xa2\x01\x21"), 0);
    assert_int_equal(m.codec, FLV_CODEC_AAC);
}

static void test_enhanced_hevc(void **state)
{
    struct flv_media m;
    /* [1 | key(1) | SequenceStart(0)] 'hvc1' hvcC... */
    assert_int_equal(PARSE_V("\x90hvc1\x01\x01\x60"), 0);
    assert_true(m.enhanced);
    assert_int_equal(m.codec, FLV_CODEC_HEVC);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    assert_true(m.keyframe);
    assert_int_equal(m.len, 3);
    /* key CodedFrames with cts 40 */
    assert_int_equal(PARSE_V("\x91hvc1\x00\x00\x28\x00\x00\x00\x05\x26"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_true(m.keyframe);
    assert_int_equal(m.cts, 40);
    assert_int_equal(m.len, 5);
    /* inter CodedFrames with a negative cts */
    assert_int_equal(PARSE_V("\xa1hvc1\xff\xff\xec\x00\x00\x00\x01\x02"), 0);
    assert_false(m.keyframe);
    assert_int_equal(m.cts, -20);
    /* inter CodedFramesX: no cts field, cts 0 */
    assert_int_equal(PARSE_V("\xa3hvc1\x00\x00\x00\x01\x02"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_false(m.keyframe);
    assert_int_equal(m.cts, 0);
    assert_int_equal(m.len, 5);
    /* SequenceEnd */
    assert_int_equal(PARSE_V("\x92hvc1"), 0);
    assert_int_equal(m.packet, FLV_PACKET_END);
}

static void test_enhanced_av1_avc(void **state)
{
    struct flv_media m;
    assert_int_equal(PARSE_V("\x90" "av01\x81\x08\x0c\x00"), 0);
    assert_int_equal(m.codec, FLV_CODEC_AV1);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    assert_int_equal(m.len, 4);
    /* AV1 CodedFrames carry no composition time: the OBUs start at once */
    assert_int_equal(PARSE_V("\x91" "av01\x12\x00\x0a"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_int_equal(m.cts, 0);
    assert_int_equal(m.len, 3);
    assert_memory_equal(m.data, "\x12\x00\x0a", 3);
    assert_int_equal(PARSE_V("\xa3" "av01\x32\x00"), 0);
    assert_false(m.keyframe);
    /* MPEG2TSSequenceStart: the TS descriptor, marked as such */
    assert_int_equal(PARSE_V("\x95" "av01\x80\x04\x81\x08"), 0);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG_TS);
    assert_int_equal(m.len, 4);
    /* avc1 over Enhanced RTMP, with cts like legacy AVC */
    assert_int_equal(PARSE_V("\x91" "avc1\x00\x00\x21\x00\x00\x00\x01\x65"), 0);
    assert_int_equal(m.codec, FLV_CODEC_H264);
    assert_int_equal(m.cts, 33);
    assert_int_equal(m.len, 5);
    assert_int_equal(PARSE_V("\x90" "avc1\x01\x64"), 0);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    /* generated keyframe counts as a keyframe */
    assert_int_equal(PARSE_V("\xc3" "av01\x12\x00"), 0);
    assert_true(m.keyframe);
}

static void test_enhanced_audio(void **state)
{
    struct flv_media m;
    assert_int_equal(PARSE_A("\x90mp4a\x11\x90"), 0);
    assert_true(m.enhanced);
    assert_int_equal(m.codec, FLV_CODEC_AAC);
    assert_int_equal(m.packet, FLV_PACKET_CONFIG);
    assert_int_equal(m.len, 2);
    assert_int_equal(PARSE_A("\x91mp4a\x21\x10"), 0);
    assert_int_equal(m.packet, FLV_PACKET_FRAME);
    assert_int_equal(PARSE_A("\x94mp4a\x00\x02"), 0);
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
}

static void test_skipped(void **state)
{
    struct flv_media m;
    assert_int_equal(PARSE_V("\x84hvc1\x02\x00\x09" "colorInfo"), 0); /* Metadata */
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
    assert_non_null(strstr(m.why, "metadata"));
    assert_int_equal(PARSE_V("\x57\x00"), 0); /* legacy video info frame */
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
    assert_int_equal(PARSE_V("\xd1\x00"), 0); /* enhanced command frame */
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
    assert_non_null(strstr(m.why, "command"));
    assert_int_equal(PARSE_V("\x27\x01\x00\x00\x00"), 0); /* empty NALU packet */
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
    assert_int_equal(PARSE_V("\xa3hvc1"), 0);
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
    assert_int_equal(PARSE_A("\xaf\x01"), 0);
    assert_int_equal(m.packet, FLV_PACKET_SKIP);
}

static void test_refused(void **state)
{
    struct flv_media m;
    struct {
        const char *bytes;
        size_t len;
        bool video;
        const char *named;
    } cases[] = {
        {"\x2f\xff\xfb", 3, false, "MP3"},
        {"\xb6\x00\x00", 3, false, "Speex"},
        {"\x62\x00", 2, false, "Nellymoser"},
        {"\x72\x00", 2, false, "G.711"},
        {"\xe2\x00", 2, false, "MP3 8 kHz"},
        {"\x90Opus\x00", 6, false, "Opus"},
        {"\x91" "ac-3\x00", 6, false, "ac-3"},
        {"\x95\x00", 2, false, "multitrack"},
        {"\x97\x00", 2, false, "ModEx"},
        {"\x14\x00", 2, true, "VP6"},
        {"\x22\x00", 2, true, "H.263"},
        {"\x1c\x00\x00\x00\x00", 5, true, "hvc1"}, /* legacy id 12 points to E-RTMP */
        {"\x91vp09\x00", 6, true, "vp09"},
        {"\x90\x01\x02\x03\x04", 5, true, "'?\?\?\?'"},
        {"\x96\x00hvc1", 7, true, "multitrack"},
        {"\x97\x00", 2, true, "ModEx"},
        {"\x98hvc1", 5, true, "packet type 8"},
        {"\x95hvc1\x00", 6, true, "MPEG2TSSequenceStart"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = cases[i].video
                     ? flv_parse_video((const uint8_t *)cases[i].bytes, cases[i].len, &m)
                     : flv_parse_audio((const uint8_t *)cases[i].bytes, cases[i].len, &m);
        assert_int_equal(rc, -ENOTSUP);
        if (!strstr(m.why, cases[i].named))
            fail_msg("case %zu: \"%s\" does not name %s", i, m.why, cases[i].named);
    }
}

static void test_truncated(void **state)
{
    struct flv_media m;
    assert_int_equal(flv_parse_video(NULL, 0, &m), -EBADMSG);
    assert_int_equal(flv_parse_audio(NULL, 0, &m), -EBADMSG);
    assert_int_equal(PARSE_V("\x17"), -EBADMSG);
    assert_int_equal(PARSE_V("\x17\x00\x00\x00"), -EBADMSG);
    assert_int_equal(PARSE_V("\x17\x01\x00"), -EBADMSG);
    assert_int_equal(PARSE_V("\x17\x00\x00\x00\x00"), -EBADMSG); /* empty avcC */
    assert_int_equal(PARSE_V("\x17\x05\x00\x00\x00\x01"), -EBADMSG); /* AVCPacketType 5 */
    assert_int_equal(PARSE_V("\x91hvc"), -EBADMSG);
    assert_int_equal(PARSE_V("\x91hvc1\x00\x00"), -EBADMSG); /* no room for the cts */
    assert_int_equal(PARSE_V("\x90hvc1"), -EBADMSG);         /* empty hvcC */
    assert_int_equal(PARSE_A("\xaf"), -EBADMSG);
    assert_int_equal(PARSE_A("\xaf\x00"), -EBADMSG);         /* empty ASC */
    assert_int_equal(PARSE_A("\xaf\x02\x00"), -EBADMSG);
    assert_int_equal(PARSE_A("\x90mp4"), -EBADMSG);
    assert_non_null(m.why);
    assert_true(m.why[0] != '\0');

    /* Every prefix of every good packet parses or fails cleanly (ASan). */
    const char *good[] = {"\x91hvc1\x00\x00\x28\x00\x00\x00\x05\x26", "\x27\x01\xff\xff\xdf\x00",
                          "\x90mp4a\x11\x90", "\xaf\x00\x11\x90"};
    for (size_t g = 0; g < 4; g++) {
        size_t n = strlen(good[g]) + (g == 1 ? 1 : 0);
        for (size_t k = 0; k <= n; k++) {
            uint8_t *p = malloc(k ? k : 1);
            memcpy(p, good[g], k);
            if (g < 2)
                (void)flv_parse_video(p, k, &m);
            else
                (void)flv_parse_audio(p, k, &m);
            free(p);
        }
    }
}

static void test_names(void **state)
{
    assert_string_equal(flv_codec_name(FLV_CODEC_H264), "H.264");
    assert_string_equal(flv_codec_name(FLV_CODEC_HEVC), "HEVC");
    assert_string_equal(flv_codec_name(FLV_CODEC_AV1), "AV1");
    assert_string_equal(flv_codec_name(FLV_CODEC_AAC), "AAC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legacy_avc),
        cmocka_unit_test(test_legacy_aac),
        cmocka_unit_test(test_enhanced_hevc),
        cmocka_unit_test(test_enhanced_av1_avc),
        cmocka_unit_test(test_enhanced_audio),
        cmocka_unit_test(test_skipped),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
