/*
 * Decoder configuration: what a stream's codec is, read from the record the
 * publisher sends before the first frame.
 *
 *   H.264  avcC (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 5.3.3) and
 *          its first SPS (H.264 7.3.2.1);
 *   HEVC   hvcC (HEVCDecoderConfigurationRecord, 14496-15 8.3.3), its first
 *          SPS (H.265 7.3.2.2), the VPS for timing when the SPS has none;
 *   AV1    av1C (AV1-ISOBMFF 2.3) and the sequence header OBU in its
 *          configOBUs (AV1 5.5);
 *   AAC    AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), with the PCE when
 *          the channel configuration is 0.
 *
 * The result says what the HLS layer needs: size, rate, profile and level for
 * the playlist's RESOLUTION / FRAME-RATE / CODECS, and the record bytes for
 * the init segment. The record is kept as the init segment must carry it,
 * consistent with the frame payload format of media/frame.h: an avcC or hvcC
 * whose NAL length size was 1 or 2 bytes is stored with it set to 4, and
 * nal_length_size keeps the original so ingest knows to widen the lengths in
 * each frame.
 *
 * Everything here reads publisher-controlled bytes: each read is bounds
 * checked, loops are bounded by the spec's limits, and a malformed record
 * gives -EBADMSG (-ENOTSUP for a well-formed one we do not handle), never an
 * over-read. Emulation prevention bytes are skipped while reading bits, so
 * no RBSP copy is made.
 */
#ifndef HEARTH_MEDIA_CODEC_H
#define HEARTH_MEDIA_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "media/frame.h"

/* Longest CODECS string we produce, NUL included ("hvc1.A31.FFFFFFFF.H255.FF.FF.FF.FF.FF.FF"). */
#define CODEC_STRING_MAX 48
/* Largest decoder configuration record accepted. */
#define CODEC_RECORD_MAX (64 * 1024)

struct codec_config {
    enum media_codec codec;

    /* Video. width/height are the displayed size (after cropping / the
     * conformance window); 0 for AV1 when av1C carries no sequence header. */
    uint32_t width, height;
    uint8_t profile;       /* H.264 profile_idc, HEVC general_profile_idc, AV1 seq_profile, AAC object type */
    uint8_t level;         /* H.264 level_idc, HEVC general_level_idc (30 x level), AV1 seq_level_idx */
    uint8_t tier;          /* HEVC general_tier_flag, AV1 seq_tier: 0 Main, 1 High */
    uint8_t constraints;   /* H.264 constraint_set flags byte */
    uint8_t chroma_format; /* 0 mono, 1 4:2:0, 2 4:2:2, 3 4:4:4 */
    uint8_t bit_depth;     /* luma */
    uint8_t bit_depth_chroma;
    uint8_t nal_length_size; /* H.264/HEVC: NAL length size the publisher uses (1, 2 or 4) */
    uint32_t sar_num, sar_den; /* sample aspect ratio; 1:1 when not signalled */
    uint32_t fps_num, fps_den; /* frame rate when the bitstream carries timing; 0/0 otherwise */

    /* Audio. sample_rate is the output rate (the SBR rate for explicitly
     * signalled HE-AAC), frame_samples the samples per access unit at that
     * rate (1024, 960, 2048 with SBR): together they give exact durations
     * in an fMP4 audio track whose timescale is sample_rate. */
    uint32_t sample_rate;
    uint32_t core_sample_rate; /* the AAC core rate (== sample_rate without SBR) */
    uint16_t frame_samples;
    uint8_t channels;

    /* The record for the init segment: avcC, hvcC, av1C or AudioSpecificConfig
     * (owned; free with codec_config_free). */
    uint8_t *record;
    size_t record_len;

    /* RFC 6381 CODECS value: "avc1.64002a", "hvc1.1.6.L120.90",
     * "av01.0.08M.08", "mp4a.40.2". */
    char codecs[CODEC_STRING_MAX];
};

/*
 * Parse a decoder configuration record into out (which is overwritten, not
 * freed first) and keep a copy of the record. 0, or -EBADMSG for malformed
 * input, -ENOTSUP for versions and codecs we do not handle, -ENOMEM; out is
 * left zeroed (nothing to free) on error.
 */
int codec_config_parse(struct codec_config *out, enum media_codec codec,
                       const uint8_t *record, size_t len);
void codec_config_free(struct codec_config *c);
int codec_config_copy(struct codec_config *dst, const struct codec_config *src);
/* Same codec and same record bytes: a re-sent sequence header that changes
 * nothing (common after a reconnect) needs no new init segment. */
bool codec_config_equal(const struct codec_config *a, const struct codec_config *b);

/*
 * The parsers for single units, for callers that meet them outside a record
 * (an SPS in-band in Annex B, an AV1 sequence header in a keyframe) and for
 * the fuzzers. Each fills only the fields its unit carries, plus codecs where
 * the unit carries all that the string needs; record is untouched.
 *   nal: one NAL unit, header included, no start code and no length prefix.
 *   obu: one sequence header OBU, header included (obu_has_size_field may be
 *        0 or 1).
 */
int codec_h264_parse_sps(struct codec_config *out, const uint8_t *nal, size_t len);
int codec_hevc_parse_sps(struct codec_config *out, const uint8_t *nal, size_t len);
int codec_av1_parse_sequence_header(struct codec_config *out, const uint8_t *obu, size_t len);
int codec_aac_parse_asc(struct codec_config *out, const uint8_t *asc, size_t len);

/*
 * Build an avcC (4-byte NAL lengths) from Annex B data holding at least one
 * SPS and one PPS (start-code separated; other NAL units are ignored), for
 * publishers that send parameter sets in-band. Appends to out.
 */
int codec_avcc_from_annexb(struct buf *out, const uint8_t *data, size_t len);

#endif
