/*
 * Unit tests for media/codec: decoder configuration records from real
 * encoders, hand-built edge cases, and malformed input.
 *
 * The records below were produced by Debian's ffmpeg 5.1 and copied out of
 * the sample entries of the MP4 files it wrote:
 *   cfg_h264_high     testsrc2=1920x1080:rate=60, libx264 -preset veryfast -profile:v high -level 4.2
 *   cfg_h264_444      testsrc2=1280x720:rate=30, -pix_fmt yuv444p libx264 -x264-params cqm=jvt
 *                     (High 4:4:4 Predictive, chroma_format_idc 3, scaling matrices in the SPS)
 *   cfg_h264_1080i    testsrc2=1920x1080:rate=30, libx264 interlaced=1:tff=1 (field coding: cropping
 *                     in field units)
 *   cfg_hevc_1080p60  testsrc2=1920x1080:rate=60, libx265 -preset ultrafast -x265-params info=0
 *   cfg_hevc_main10   testsrc2=1280x720:rate=30, -pix_fmt yuv420p10le libx265 (Main 10)
 *   cfg_av1_aom       testsrc2=640x360:rate=25, libaom-av1 -cpu-used 8
 *   cfg_av1_svt       testsrc2=1920x1080:rate=60, libsvtav1 -preset 12
 *   cfg_aac48         sine 48 kHz, aac -ac 2
 *   cfg_aac44m        sine 44.1 kHz, aac -ac 1
 * Expected values are ffprobe's for the same files.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "media/codec.h"

static const uint8_t cfg_h264_high[46] = {
    0x01, 0x64, 0x00, 0x2a, 0xff, 0xe1, 0x00, 0x1b, 0x67, 0x64, 0x00, 0x2a,
    0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03,
    0x00, 0x04, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x3c, 0x60, 0xc6, 0x58, 0x01,
    0x00, 0x04, 0x68, 0xef, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
};

static const uint8_t cfg_h264_444[48] = {
    0x01, 0xf4, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0xf4, 0x00, 0x1f,
    0x91, 0x9b, 0x28, 0x0a, 0x00, 0xb7, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00,
    0x02, 0x00, 0x00, 0x03, 0x00, 0x78, 0x1e, 0x30, 0x63, 0x2c, 0x01, 0x00,
    0x07, 0x68, 0xef, 0x8f, 0x19, 0x30, 0x00, 0x19, 0xff, 0xf8, 0xf8, 0x00,
};

static const uint8_t cfg_hevc_1080p60[111] = {
    0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x7b, 0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f, 0x03, 0xa0,
    0x00, 0x01, 0x00, 0x18, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60,
    0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
    0x7b, 0x95, 0x94, 0x09, 0xa1, 0x00, 0x01, 0x00, 0x2b, 0x42, 0x01, 0x01,
    0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x03, 0x00, 0x7b, 0xa0, 0x03, 0xc0, 0x80, 0x11, 0x07, 0xcb, 0x96, 0x56,
    0x54, 0xa4, 0xc2, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80,
    0x00, 0x00, 0x1e, 0x04, 0xa2, 0x00, 0x01, 0x00, 0x06, 0x44, 0x01, 0xc0,
    0x73, 0xc1, 0x89,
};

static const uint8_t cfg_hevc_main10[111] = {
    0x01, 0x02, 0x20, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x5d, 0xf0, 0x00, 0xfc, 0xfd, 0xfa, 0xfa, 0x00, 0x00, 0x0f, 0x03, 0xa0,
    0x00, 0x01, 0x00, 0x18, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x02, 0x20,
    0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
    0x5d, 0x95, 0x94, 0x09, 0xa1, 0x00, 0x01, 0x00, 0x2b, 0x42, 0x01, 0x01,
    0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
    0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x13, 0x65, 0x95, 0x95,
    0x29, 0x30, 0xbc, 0x05, 0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00,
    0x00, 0x03, 0x03, 0xc1, 0xa2, 0x00, 0x01, 0x00, 0x06, 0x44, 0x01, 0xc0,
    0x73, 0xc1, 0x89,
};

static const uint8_t cfg_av1_aom[17] = {
    0x81, 0x01, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x0c, 0xc4, 0xff,
    0x67, 0x36, 0xbe, 0x40, 0x10,
};

static const uint8_t cfg_av1_svt[17] = {
    0x81, 0x09, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x4a, 0xab, 0xbf,
    0xc3, 0x70, 0x0b, 0xe0, 0x01,
};

static const uint8_t cfg_aac48[5] = {
    0x11, 0x90, 0x56, 0xe5, 0x00,
};

static const uint8_t cfg_aac44m[5] = {
    0x12, 0x08, 0x56, 0xe5, 0x00,
};

static const uint8_t cfg_h264_1080i[45] = {
    0x01, 0x64, 0x00, 0x28, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x28,
    0xac, 0xd9, 0x40, 0x78, 0x04, 0x4f, 0xde, 0x02, 0x20, 0x00, 0x00, 0x03,
    0x00, 0x20, 0x00, 0x00, 0x07, 0x83, 0xe2, 0xc5, 0xb2, 0xc0, 0x01, 0x00,
    0x04, 0x68, 0xfe, 0x8f, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
};


/* Synthetic AudioSpecificConfigs (bit layouts in the comments). */
/* AOT 5 (explicit SBR), core 24 kHz, stereo, SBR 48 kHz, core AOT 2. */
static const uint8_t asc_he_aac[] = {0x2b, 0x11, 0x88, 0x00};
/* AOT 29 (SBR + PS), core 24 kHz, mono core, 48 kHz. */
static const uint8_t asc_he_aac_v2[] = {0xeb, 0x09, 0x88, 0x00};
/* AOT 2, frequency index 15 + explicit 24-bit 48000, mono. */
static const uint8_t asc_explicit_rate[] = {0x17, 0x80, 0x5d, 0xc0, 0x08};
/* AOT 31 escape -> 36 (ALS): well-formed, not AAC we carry. */
static const uint8_t asc_escape_als[] = {0xf8, 0x86, 0x40};
/* AOT 2, 48 kHz, stereo, frameLengthFlag = 1 (960 samples). */
static const uint8_t asc_960[] = {0x11, 0x94};
/* AOT 2, 48 kHz, channelConfiguration 0 + PCE: front CPE + SCE, back CPE, LFE = 6. */
static const uint8_t asc_pce[] = {0x11, 0x80, 0x04, 0xc8, 0x05, 0x00, 0x20, 0x08, 0x80};
static const uint8_t asc_bad_rate[] = {0x16, 0x90};   /* frequency index 13 (reserved) */
static const uint8_t asc_bad_chan[] = {0x11, 0xc0};   /* channelConfiguration 8 (reserved) */

/* Parse from an exact-size heap copy, so ASan sees any read past the end. */
static int parse_exact(struct codec_config *c, enum media_codec codec, const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    int rc = codec_config_parse(c, codec, copy, n);
    free(copy);
    return rc;
}

static void check_video(enum media_codec codec, const uint8_t *rec, size_t len, uint32_t w, uint32_t h,
                        unsigned profile, unsigned level, uint32_t fps_num, uint32_t fps_den,
                        const char *codecs)
{
    struct codec_config c;
    assert_int_equal(parse_exact(&c, codec, rec, len), 0);
    assert_int_equal(c.codec, codec);
    assert_int_equal(c.width, w);
    assert_int_equal(c.height, h);
    assert_int_equal(c.profile, profile);
    assert_int_equal(c.level, level);
    assert_int_equal(c.fps_num, fps_num);
    assert_int_equal(c.fps_den, fps_den);
    assert_string_equal(c.codecs, codecs);
    assert_int_equal(c.record_len, len);
    assert_memory_equal(c.record, rec, len);
    codec_config_free(&c);
}

static void test_h264_high_1080p60(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_H264, cfg_h264_high, sizeof cfg_h264_high, 1920, 1080, 100, 42, 60, 1,
                "avc1.64002a");
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, cfg_h264_high, sizeof cfg_h264_high), 0);
    assert_int_equal(c.chroma_format, 1);
    assert_int_equal(c.bit_depth, 8);
    assert_int_equal(c.nal_length_size, 4);
    assert_int_equal(c.sar_num, 1);
    assert_int_equal(c.sar_den, 1);
    codec_config_free(&c);
}

static void test_h264_high444_scaling_lists(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_H264, cfg_h264_444, sizeof cfg_h264_444, 1280, 720, 244, 31, 30, 1,
                "avc1.f4001f");
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, cfg_h264_444, sizeof cfg_h264_444), 0);
    assert_int_equal(c.chroma_format, 3);
    codec_config_free(&c);
}

static void test_h264_interlaced(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_H264, cfg_h264_1080i, sizeof cfg_h264_1080i, 1920, 1080, 100, 40, 30, 1,
                "avc1.640028");
}

static void test_h264_sps_direct_and_sar(void **state)
{
    (void)state;
    /* The SPS alone, as it would come in-band. */
    const uint8_t *sps = cfg_h264_high + 8;
    size_t sps_len = (size_t)cfg_h264_high[6] << 8 | cfg_h264_high[7];
    struct codec_config c;
    memset(&c, 0, sizeof c);
    assert_int_equal(codec_h264_parse_sps(&c, sps, sps_len), 0);
    assert_int_equal(c.width, 1920);
    assert_int_equal(c.height, 1080);
    assert_string_equal(c.codecs, "avc1.64002a");
    assert_null(c.record);

    /* Hand-built Baseline SPS: 352x288 (22x18 MBs), no cropping, VUI with
     * aspect_ratio_idc 255 = 4:3 and timing 1001/60000 -> 29.97 fps.
     * Built with a bit writer (emulation prevention inserted) and checked
     * with ffmpeg's trace_headers. */
    static const uint8_t sps_sar[] = {
        0x67, 0x42, 0x00, 0x1e, 0xda, 0x05, 0x82, 0x5b, 0xff, 0x00, 0x04, 0x00,
        0x03, 0x10, 0x00, 0x00, 0x3e, 0x90, 0x00, 0x0e, 0xa6, 0x08, 0x40,
    };
    memset(&c, 0, sizeof c);
    assert_int_equal(codec_h264_parse_sps(&c, sps_sar, sizeof sps_sar), 0);
    assert_int_equal(c.width, 352);
    assert_int_equal(c.height, 288);
    assert_int_equal(c.profile, 66);
    assert_int_equal(c.sar_num, 4);
    assert_int_equal(c.sar_den, 3);
    assert_int_equal(c.fps_num, 30000);
    assert_int_equal(c.fps_den, 1001);
    assert_string_equal(c.codecs, "avc1.42001e");
}

static void test_h264_length_size_normalised(void **state)
{
    (void)state;
    uint8_t rec[sizeof cfg_h264_high];
    memcpy(rec, cfg_h264_high, sizeof rec);
    rec[4] = 0xfd; /* lengthSizeMinusOne = 1: two-byte NAL lengths */
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, rec, sizeof rec), 0);
    assert_int_equal(c.nal_length_size, 2);
    assert_int_equal(c.record[4], 0xff);
    codec_config_free(&c);
    rec[4] = 0xfe; /* three-byte lengths do not exist */
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, rec, sizeof rec), -EBADMSG);
    assert_null(c.record);
}

static void test_avcc_from_annexb(void **state)
{
    (void)state;
    /* SPS and PPS of cfg_h264_high as Annex B, with an AUD in front and a
     * 4-byte start code: the rebuilt avcC is byte for byte ffmpeg's. */
    size_t sps_len = (size_t)cfg_h264_high[6] << 8 | cfg_h264_high[7];
    const uint8_t *sps = cfg_h264_high + 8;
    const uint8_t *pps = sps + sps_len + 3;
    size_t pps_len = (size_t)sps[sps_len + 1] << 8 | sps[sps_len + 2];
    uint8_t annexb[128];
    size_t n = 0;
    static const uint8_t aud[] = {0, 0, 0, 1, 0x09, 0xf0};
    memcpy(annexb + n, aud, sizeof aud);
    n += sizeof aud;
    memcpy(annexb + n, "\0\0\0\1", 4);
    n += 4;
    memcpy(annexb + n, sps, sps_len);
    n += sps_len;
    memcpy(annexb + n, "\0\0\1", 3);
    n += 3;
    memcpy(annexb + n, pps, pps_len);
    n += pps_len;

    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(codec_avcc_from_annexb(&out, annexb, n), 0);
    assert_int_equal(out.len, sizeof cfg_h264_high);
    assert_memory_equal(out.data, cfg_h264_high, sizeof cfg_h264_high);

    /* No PPS: refused, nothing appended. */
    buf_reset(&out);
    assert_int_equal(codec_avcc_from_annexb(&out, annexb, sizeof aud + 4 + sps_len), -EBADMSG);
    assert_int_equal(out.len, 0);
    assert_int_equal(codec_avcc_from_annexb(&out, (const uint8_t *)"\0\0\1", 3), -EBADMSG);
    buf_free(&out);
}

static void test_hevc_1080p60(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_HEVC, cfg_hevc_1080p60, sizeof cfg_hevc_1080p60, 1920, 1080, 1, 123, 60, 1,
                "hvc1.1.6.L123.90");
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_HEVC, cfg_hevc_1080p60, sizeof cfg_hevc_1080p60), 0);
    assert_int_equal(c.tier, 0);
    assert_int_equal(c.bit_depth, 8);
    assert_int_equal(c.chroma_format, 1);
    assert_int_equal(c.nal_length_size, 4);
    codec_config_free(&c);
}

static void test_hevc_main10(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_HEVC, cfg_hevc_main10, sizeof cfg_hevc_main10, 1280, 720, 2, 93, 30, 1,
                "hvc1.2.4.L93.90");
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_HEVC, cfg_hevc_main10, sizeof cfg_hevc_main10), 0);
    assert_int_equal(c.bit_depth, 10);
    codec_config_free(&c);
}

/* Built with a Python bit writer and checked with ffmpeg's trace_headers:
 * VPS with timing 1/25, SPS 640x368 with conformance window bottom 4 (x2
 * luma rows) = 640x360, explicit scaling lists (with DC coefficients),
 * two short-term RPS the second of which is inter-predicted, and no VUI:
 * the frame rate must come from the VPS. */
static const uint8_t hvcc_synthetic[] = {
    0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x5a, 0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f, 0x03, 0xa0,
    0x00, 0x01, 0x00, 0x22, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60,
    0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
    0x5a, 0x97, 0x03, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00,
    0x19, 0x50, 0xa1, 0x00, 0x01, 0x00, 0xe0, 0x42, 0x01, 0x01, 0x01, 0x60,
    0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
    0x5a, 0xa0, 0x05, 0x02, 0x01, 0x71, 0xf2, 0xe5, 0x95, 0xe4, 0x93, 0xdb,
    0x4d, 0x34, 0xd3, 0x4d, 0x34, 0xd3, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a,
    0x6d, 0x34, 0xd3, 0x4d, 0x34, 0xd3, 0x4d, 0xa6, 0x9a, 0x69, 0xa6, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xb4, 0xd3, 0x4d, 0x34, 0xd3,
    0x4d, 0x34, 0xd3, 0x4d, 0x34, 0xd3, 0x4d, 0x34, 0xd3, 0x4d, 0x34, 0xd3,
    0x4d, 0x34, 0xd3, 0x4d, 0x34, 0xd3, 0x4d, 0x36, 0x9a, 0x69, 0xa6, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x66, 0x9a, 0x69, 0xa6,
    0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6,
    0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x66, 0x9a, 0x69,
    0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69,
    0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x66, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a,
    0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x66,
    0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6,
    0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa6, 0x9a, 0x69, 0xa4,
    0xdf, 0xed, 0xb2, 0xa2, 0x00, 0x01, 0x00, 0x06, 0x44, 0x01, 0xc1, 0x73,
    0xc1, 0x89,
};
static void test_hevc_vps_timing_fallback(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_HEVC, hvcc_synthetic, sizeof hvcc_synthetic, 640, 360, 1, 90, 25, 1,
                "hvc1.1.6.L90.90");
}

static void test_av1(void **state)
{
    (void)state;
    check_video(MEDIA_CODEC_AV1, cfg_av1_aom, sizeof cfg_av1_aom, 640, 360, 0, 1, 0, 0, "av01.0.01M.08");
    check_video(MEDIA_CODEC_AV1, cfg_av1_svt, sizeof cfg_av1_svt, 1920, 1080, 0, 9, 0, 0, "av01.0.09M.08");

    /* av1C without configOBUs: profile/level/depth from its 4 bytes, size unknown. */
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_AV1, cfg_av1_svt, 4), 0);
    assert_int_equal(c.width, 0);
    assert_string_equal(c.codecs, "av01.0.09M.08");
    codec_config_free(&c);

    /* The sequence header on its own, as found in a keyframe. */
    memset(&c, 0, sizeof c);
    assert_int_equal(codec_av1_parse_sequence_header(&c, cfg_av1_svt + 4, sizeof cfg_av1_svt - 4), 0);
    assert_int_equal(c.width, 1920);
    assert_int_equal(c.height, 1080);
    assert_int_equal(c.bit_depth, 8);
    assert_int_equal(c.chroma_format, 1);

    /* 10-bit, high tier, level 5.1 (idx 13), 4:2:0: the string follows av1C. */
    uint8_t rec[4] = {0x81, 0x0d, 0xcc, 0x00};
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_AV1, rec, sizeof rec), 0);
    assert_string_equal(c.codecs, "av01.0.13H.10");
    codec_config_free(&c);
    rec[0] = 0x82; /* version 2 */
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_AV1, rec, sizeof rec), -ENOTSUP);
    rec[0] = 0x01; /* marker bit clear */
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_AV1, rec, sizeof rec), -EBADMSG);
}

static void test_av1_timing_info(void **state)
{
    (void)state;
    /* Sequence header with timing_info: profile 0, not still, not reduced,
     * timing present (num_units_in_display_tick 1, time_scale 50,
     * equal_picture_interval 1, num_ticks_per_picture_minus_1 uvlc(0)),
     * no decoder model, no initial display delay, 1 operating point
     * (idc 0, level 8 -> tier bit 0), 11-bit width/height fields:
     * 1280x720, then the tools and an 8-bit 4:2:0 color_config. Built with
     * a bit writer and checked with ffmpeg's trace_headers (obu demuxer). */
    static const uint8_t obu[] = {
        0x0a, 0x14, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xcb, 0x00,
        0x00, 0x08, 0x55, 0x4f, 0xf5, 0x9e, 0x67, 0xfc, 0xc0, 0x20,
    };
    struct codec_config c;
    memset(&c, 0, sizeof c);
    assert_int_equal(codec_av1_parse_sequence_header(&c, obu, sizeof obu), 0);
    assert_int_equal(c.width, 1280);
    assert_int_equal(c.height, 720);
    assert_int_equal(c.level, 8);
    assert_int_equal(c.tier, 0);
    assert_int_equal(c.fps_num, 50);
    assert_int_equal(c.fps_den, 1);
}

static void check_aac(const uint8_t *asc, size_t len, unsigned aot, uint32_t rate, unsigned channels,
                      unsigned frame, const char *codecs)
{
    struct codec_config c;
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, asc, len), 0);
    assert_int_equal(c.codec, MEDIA_CODEC_AAC);
    assert_int_equal(c.profile, aot);
    assert_int_equal(c.sample_rate, rate);
    assert_int_equal(c.channels, channels);
    assert_int_equal(c.frame_samples, frame);
    assert_string_equal(c.codecs, codecs);
    assert_memory_equal(c.record, asc, len);
    codec_config_free(&c);
}

static void test_aac(void **state)
{
    (void)state;
    check_aac(cfg_aac48, sizeof cfg_aac48, 2, 48000, 2, 1024, "mp4a.40.2");
    check_aac(cfg_aac44m, sizeof cfg_aac44m, 2, 44100, 1, 1024, "mp4a.40.2");
    check_aac(asc_he_aac, sizeof asc_he_aac, 5, 48000, 2, 2048, "mp4a.40.5");
    check_aac(asc_he_aac_v2, sizeof asc_he_aac_v2, 29, 48000, 2, 2048, "mp4a.40.29");
    check_aac(asc_explicit_rate, sizeof asc_explicit_rate, 2, 48000, 1, 1024, "mp4a.40.2");
    check_aac(asc_960, sizeof asc_960, 2, 48000, 2, 960, "mp4a.40.2");
    check_aac(asc_pce, sizeof asc_pce, 2, 48000, 6, 1024, "mp4a.40.2");

    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_AAC, asc_he_aac, sizeof asc_he_aac), 0);
    assert_int_equal(c.core_sample_rate, 24000);
    codec_config_free(&c);
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, asc_escape_als, sizeof asc_escape_als), -ENOTSUP);
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, asc_bad_rate, sizeof asc_bad_rate), -EBADMSG);
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, asc_bad_chan, sizeof asc_bad_chan), -EBADMSG);
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, asc_pce, 4), -EBADMSG); /* PCE cut short */
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_AAC, cfg_aac48, 1), -EBADMSG);
}

static void test_copy_equal(void **state)
{
    (void)state;
    struct codec_config a, b, d;
    assert_int_equal(codec_config_parse(&a, MEDIA_CODEC_H264, cfg_h264_high, sizeof cfg_h264_high), 0);
    assert_int_equal(codec_config_copy(&b, &a), 0);
    assert_ptr_not_equal(a.record, b.record);
    assert_true(codec_config_equal(&a, &b));
    assert_string_equal(b.codecs, a.codecs);
    assert_int_equal(codec_config_parse(&d, MEDIA_CODEC_H264, cfg_h264_444, sizeof cfg_h264_444), 0);
    assert_false(codec_config_equal(&a, &d));
    codec_config_free(&a);
    codec_config_free(&b);
    codec_config_free(&d);
    codec_config_free(&d); /* idempotent */
}

static void test_malformed_records(void **state)
{
    (void)state;
    struct codec_config c;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, NULL, 0), -EBADMSG);
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_NONE, cfg_aac48, sizeof cfg_aac48), -ENOTSUP);
    uint8_t v2[sizeof cfg_h264_high];
    memcpy(v2, cfg_h264_high, sizeof v2);
    v2[0] = 2;
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, v2, sizeof v2), -ENOTSUP);
    /* avcC with no SPS. */
    static const uint8_t no_sps[] = {1, 0x64, 0, 0x2a, 0xff, 0xe0, 0};
    assert_int_equal(codec_config_parse(&c, MEDIA_CODEC_H264, no_sps, sizeof no_sps), -EBADMSG);
    /* SPS length pointing past the end. */
    static const uint8_t long_sps[] = {1, 0x64, 0, 0x2a, 0xff, 0xe1, 0x01, 0x00, 0x67, 0x64};
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_H264, long_sps, sizeof long_sps), -EBADMSG);
    /* hvcC that claims an array of 100 NAL units and ends. */
    uint8_t hv[26];
    memcpy(hv, cfg_hevc_1080p60, 23);
    hv[22] = 1;
    hv[23] = 0xa1;
    hv[24] = 0;
    hv[25] = 100;
    assert_int_equal(parse_exact(&c, MEDIA_CODEC_HEVC, hv, sizeof hv), -EBADMSG);
    /* An SPS NAL of the wrong type. */
    struct codec_config u;
    memset(&u, 0, sizeof u);
    assert_int_equal(codec_h264_parse_sps(&u, (const uint8_t *)"\x68\x64\x00\x2a", 4), -EBADMSG);
    assert_int_equal(codec_hevc_parse_sps(&u, (const uint8_t *)"\x40\x01\x0c", 3), -EBADMSG);
    assert_int_equal(codec_av1_parse_sequence_header(&u, (const uint8_t *)"\x12\x00", 2), -EBADMSG);
}

/* Every truncation of every real record, parsed from an exact-size heap
 * copy: either an error or a success, never a read past the end (ASan). A
 * cut inside a parameter set must be an error. */
static void test_truncations(void **state)
{
    (void)state;
    static const struct {
        enum media_codec codec;
        const uint8_t *p;
        size_t n;
        size_t must_fail_below; /* any shorter length must fail */
    } recs[] = {
        {MEDIA_CODEC_H264, cfg_h264_high, sizeof cfg_h264_high, sizeof cfg_h264_high - 4},
        {MEDIA_CODEC_H264, cfg_h264_444, sizeof cfg_h264_444, sizeof cfg_h264_444 - 4},
        {MEDIA_CODEC_H264, cfg_h264_1080i, sizeof cfg_h264_1080i, sizeof cfg_h264_1080i - 4},
        {MEDIA_CODEC_HEVC, cfg_hevc_1080p60, sizeof cfg_hevc_1080p60, sizeof cfg_hevc_1080p60},
        {MEDIA_CODEC_HEVC, cfg_hevc_main10, sizeof cfg_hevc_main10, sizeof cfg_hevc_main10},
        {MEDIA_CODEC_AV1, cfg_av1_aom, sizeof cfg_av1_aom, 4},
        {MEDIA_CODEC_AV1, cfg_av1_svt, sizeof cfg_av1_svt, 4},
        {MEDIA_CODEC_AAC, cfg_aac48, sizeof cfg_aac48, 2},
        {MEDIA_CODEC_AAC, asc_pce, sizeof asc_pce, 7},
    };
    for (size_t r = 0; r < sizeof recs / sizeof recs[0]; r++) {
        for (size_t n = 0; n <= recs[r].n; n++) {
            struct codec_config c;
            int rc = parse_exact(&c, recs[r].codec, recs[r].p, n);
            if (n < recs[r].must_fail_below)
                assert_true(rc < 0);
            if (rc == 0)
                codec_config_free(&c);
        }
    }
}

/* Deterministic mutation: flip bytes and bits of real records; the parsers
 * must only ever return, and what they return must be self-consistent. */
static void test_mutations(void **state)
{
    (void)state;
    static const struct {
        enum media_codec codec;
        const uint8_t *p;
        size_t n;
    } recs[] = {
        {MEDIA_CODEC_H264, cfg_h264_high, sizeof cfg_h264_high},
        {MEDIA_CODEC_H264, cfg_h264_444, sizeof cfg_h264_444},
        {MEDIA_CODEC_HEVC, cfg_hevc_1080p60, sizeof cfg_hevc_1080p60},
        {MEDIA_CODEC_HEVC, cfg_hevc_main10, sizeof cfg_hevc_main10},
        {MEDIA_CODEC_AV1, cfg_av1_svt, sizeof cfg_av1_svt},
        {MEDIA_CODEC_AAC, asc_pce, sizeof asc_pce},
    };
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint8_t buf[256];
    for (size_t r = 0; r < sizeof recs / sizeof recs[0]; r++) {
        for (int round = 0; round < 3000; round++) {
            memcpy(buf, recs[r].p, recs[r].n);
            for (int k = 0; k < 1 + round % 4; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                size_t at = (size_t)(seed >> 33) % recs[r].n;
                if (seed & 1)
                    buf[at] ^= (uint8_t)(1u << ((seed >> 8) & 7));
                else
                    buf[at] = (uint8_t)(seed >> 16);
            }
            struct codec_config c;
            if (parse_exact(&c, recs[r].codec, buf, recs[r].n) == 0) {
                assert_true(strlen(c.codecs) > 5);
                assert_true(c.width <= 32768 && c.height <= 32768);
                codec_config_free(&c);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h264_high_1080p60),
        cmocka_unit_test(test_h264_high444_scaling_lists),
        cmocka_unit_test(test_h264_interlaced),
        cmocka_unit_test(test_h264_sps_direct_and_sar),
        cmocka_unit_test(test_h264_length_size_normalised),
        cmocka_unit_test(test_avcc_from_annexb),
        cmocka_unit_test(test_hevc_1080p60),
        cmocka_unit_test(test_hevc_main10),
        cmocka_unit_test(test_hevc_vps_timing_fallback),
        cmocka_unit_test(test_av1),
        cmocka_unit_test(test_av1_timing_info),
        cmocka_unit_test(test_aac),
        cmocka_unit_test(test_copy_equal),
        cmocka_unit_test(test_malformed_records),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
