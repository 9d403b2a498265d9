/*
 * FLV tag bodies of RTMP audio (type 8) and video (type 9) messages. See
 * flv.h for what is accepted.
 *
 * Layouts (legacy: Adobe FLV 10.1 annex E; enhanced: veovera Enhanced RTMP
 * v1/v2, "Enhanced Video" and "Enhanced Audio"):
 *
 *   video legacy   [frame type:4 | codec id:4] [AVCPacketType] [cts:SI24] data
 *   video enhanced [1 | frame type:3 | packet type:4] [FourCC:4]
 *                  [cts:SI24, CodedFrames of avc1/hvc1 only] data
 *                  A Command frame (type 5) with a packet type other than
 *                  Metadata carries one command byte and no FourCC.
 *   audio legacy   [format:4 | rate:2 | size:1 | type:1] [AACPacketType] data
 *   audio enhanced [9:4 | packet type:4] [FourCC:4] data
 *
 * Multitrack (video packet type 6, audio 5) and ModEx (7) change the layout
 * of everything after the first byte; we do not produce or consume
 * multitrack streams, so they are refused rather than half-parsed.
 */
#include "ingest/rtmp/flv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    FRAME_KEY = 1,
    FRAME_INTER = 2,
    FRAME_DISPOSABLE = 3,
    FRAME_GENERATED_KEY = 4,
    FRAME_COMMAND = 5,
};

enum {
    EXV_SEQUENCE_START = 0,
    EXV_CODED_FRAMES = 1,
    EXV_SEQUENCE_END = 2,
    EXV_CODED_FRAMES_X = 3,
    EXV_METADATA = 4,
    EXV_MPEG2TS_SEQUENCE_START = 5,
    EXV_MULTITRACK = 6,
    EXV_MODEX = 7,
};

enum {
    EXA_SEQUENCE_START = 0,
    EXA_CODED_FRAMES = 1,
    EXA_SEQUENCE_END = 2,
    EXA_MULTICHANNEL_CONFIG = 4,
    EXA_MULTITRACK = 5,
    EXA_MODEX = 7,
};

__attribute__((format(printf, 3, 4))) static int say(struct flv_media *m, int rc, const char *fmt,
                                                     ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->why, sizeof m->why, fmt, ap);
    va_end(ap);
    return rc;
}

static int skip(struct flv_media *m, const char *why)
{
    m->packet = FLV_PACKET_SKIP;
    m->data = NULL;
    m->len = 0;
    say(m, 0, "%s", why);
    return 0;
}

static int32_t si24(const uint8_t *p)
{
    uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
    return (int32_t)(v ^ 0x800000u) - 0x800000; /* sign-extend 24 bits */
}

/* FourCC for a log line: printable as is, anything else as '?'. */
static void fourcc_str(const uint8_t *p, char out[5])
{
    for (int i = 0; i < 4; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    out[4] = '\0';
}

static bool is_fourcc(const uint8_t *p, const char *cc) { return memcmp(p, cc, 4) == 0; }

static void reset(struct flv_media *m, enum flv_kind kind)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
}

/* Set data/len to the bytes after a header of hdr bytes. */
static void body(struct flv_media *m, const uint8_t *p, size_t len, size_t hdr)
{
    m->data = p + hdr;
    m->len = len - hdr;
}

/* Config must carry bytes; an empty frame is dropped, not an error: some
 * encoders send one at start or on pause. */
static int check_body(struct flv_media *m)
{
    if (m->packet == FLV_PACKET_CONFIG || m->packet == FLV_PACKET_CONFIG_TS) {
        if (m->len == 0)
            return say(m, -EBADMSG, "empty %s sequence header", flv_codec_name(m->codec));
    } else if (m->packet == FLV_PACKET_FRAME && m->len == 0) {
        return skip(m, m->kind == FLV_VIDEO ? "empty video frame" : "empty audio frame");
    }
    return 0;
}

static const char *legacy_video_name(unsigned id)
{
    switch (id) {
    case 2: return "Sorenson H.263";
    case 3: return "Screen video";
    case 4: return "On2 VP6";
    case 5: return "On2 VP6 with alpha";
    case 6: return "Screen video v2";
    case 12: return "HEVC in a non-standard legacy codec id (send Enhanced RTMP 'hvc1')";
    case 13: return "AV1 in a non-standard legacy codec id (send Enhanced RTMP 'av01')";
    default: return "unknown";
    }
}

static int parse_enhanced_video(const uint8_t *p, size_t len, struct flv_media *m)
{
    unsigned frame_type = (p[0] >> 4) & 7;
    unsigned pkt = p[0] & 0x0f;
    char cc[5];

    m->enhanced = true;
    if (pkt != EXV_METADATA && frame_type == FRAME_COMMAND)
        return skip(m, "video command frame (client-side seeking)");
    if (pkt == EXV_MULTITRACK)
        return say(m, -ENOTSUP, "Enhanced RTMP multitrack video is not supported");
    if (pkt == EXV_MODEX)
        return say(m, -ENOTSUP, "Enhanced RTMP video ModEx packets are not supported");
    if (pkt > EXV_MODEX)
        return say(m, -ENOTSUP, "unknown Enhanced RTMP video packet type %u", pkt);
    if (len < 5)
        return say(m, -EBADMSG, "enhanced video header cut short (%zu bytes)", len);

    const uint8_t *fourcc = p + 1;
    if (is_fourcc(fourcc, "avc1"))
        m->codec = FLV_CODEC_H264;
    else if (is_fourcc(fourcc, "hvc1"))
        m->codec = FLV_CODEC_HEVC;
    else if (is_fourcc(fourcc, "av01"))
        m->codec = FLV_CODEC_AV1;
    else {
        fourcc_str(fourcc, cc);
        return say(m, -ENOTSUP, "video FourCC '%s' is not supported (hvc1, av01, avc1 are)", cc);
    }
    m->keyframe = frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY;

    switch (pkt) {
    case EXV_SEQUENCE_START:
        m->packet = FLV_PACKET_CONFIG;
        body(m, p, len, 5);
        break;
    case EXV_CODED_FRAMES:
        m->packet = FLV_PACKET_FRAME;
        if (m->codec == FLV_CODEC_AV1) {
            body(m, p, len, 5);
            break;
        }
        if (len < 8)
            return say(m, -EBADMSG, "%s coded frames without a composition time",
                       flv_codec_name(m->codec));
        m->cts = si24(p + 5);
        body(m, p, len, 8);
        break;
    case EXV_SEQUENCE_END:
        m->packet = FLV_PACKET_END;
        break;
    case EXV_CODED_FRAMES_X:
        m->packet = FLV_PACKET_FRAME;
        body(m, p, len, 5);
        break;
    case EXV_METADATA:
        return skip(m, "Enhanced RTMP video metadata (e.g. HDR colorInfo) ignored");
    case EXV_MPEG2TS_SEQUENCE_START:
        if (m->codec != FLV_CODEC_AV1)
            return say(m, -ENOTSUP, "MPEG2TSSequenceStart for %s is not defined",
                       flv_codec_name(m->codec));
        m->packet = FLV_PACKET_CONFIG_TS;
        body(m, p, len, 5);
        break;
    }
    return check_body(m);
}

int flv_parse_video(const uint8_t *p, size_t len, struct flv_media *m)
{
    reset(m, FLV_VIDEO);
    if (len < 1)
        return say(m, -EBADMSG, "empty video message");
    if (p[0] & 0x80)
        return parse_enhanced_video(p, len, m);

    unsigned frame_type = p[0] >> 4;
    unsigned codec = p[0] & 0x0f;
    if (codec != FLV_VIDEO_CODEC_AVC)
        return say(m, -ENOTSUP, "video codec id %u (%s) is not supported", codec,
                   legacy_video_name(codec));
    m->codec = FLV_CODEC_H264;
    if (frame_type == FRAME_COMMAND)
        return skip(m, "video info/command frame");
    if (len < 2)
        return say(m, -EBADMSG, "AVC video message without a packet type");
    m->keyframe = frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY;

    switch (p[1]) {
    case 0:
        if (len < 5)
            return say(m, -EBADMSG, "AVC sequence header cut short (%zu bytes)", len);
        m->packet = FLV_PACKET_CONFIG;
        body(m, p, len, 5);
        break;
    case 1:
        if (len < 5)
            return say(m, -EBADMSG, "AVC NALU packet cut short (%zu bytes)", len);
        m->packet = FLV_PACKET_FRAME;
        m->cts = si24(p + 2);
        body(m, p, len, 5);
        break;
    case 2:
        /* ffmpeg writes the 3 composition time bytes, others stop early. */
        m->packet = FLV_PACKET_END;
        break;
    default:
        return say(m, -EBADMSG, "unknown AVCPacketType %u", p[1]);
    }
    return check_body(m);
}

static const char *sound_format_name(unsigned f)
{
    switch (f) {
    case 0: return "linear PCM, platform endian";
    case 1: return "ADPCM";
    case 2: return "MP3";
    case 3: return "linear PCM, little endian";
    case 4: return "Nellymoser 16 kHz mono";
    case 5: return "Nellymoser 8 kHz mono";
    case 6: return "Nellymoser";
    case 7: return "G.711 A-law";
    case 8: return "G.711 mu-law";
    case 11: return "Speex";
    case 14: return "MP3 8 kHz";
    case 15: return "device-specific sound";
    default: return "reserved";
    }
}

static int parse_enhanced_audio(const uint8_t *p, size_t len, struct flv_media *m)
{
    unsigned pkt = p[0] & 0x0f;
    char cc[5];

    m->enhanced = true;
    if (pkt == EXA_MULTITRACK)
        return say(m, -ENOTSUP, "Enhanced RTMP multitrack audio is not supported");
    if (pkt == EXA_MODEX)
        return say(m, -ENOTSUP, "Enhanced RTMP audio ModEx packets are not supported");
    if (len < 5)
        return say(m, -EBADMSG, "enhanced audio header cut short (%zu bytes)", len);
    if (!is_fourcc(p + 1, "mp4a")) {
        fourcc_str(p + 1, cc);
        return say(m, -ENOTSUP, "audio FourCC '%s' is not supported (mp4a is)", cc);
    }
    m->codec = FLV_CODEC_AAC;
    m->keyframe = true;
    switch (pkt) {
    case EXA_SEQUENCE_START:
        m->packet = FLV_PACKET_CONFIG;
        body(m, p, len, 5);
        break;
    case EXA_CODED_FRAMES:
        m->packet = FLV_PACKET_FRAME;
        body(m, p, len, 5);
        break;
    case EXA_SEQUENCE_END:
        m->packet = FLV_PACKET_END;
        break;
    case EXA_MULTICHANNEL_CONFIG:
        return skip(m, "Enhanced RTMP audio multichannel config ignored (AAC describes its own)");
    default:
        return say(m, -ENOTSUP, "unknown Enhanced RTMP audio packet type %u", pkt);
    }
    return check_body(m);
}

int flv_parse_audio(const uint8_t *p, size_t len, struct flv_media *m)
{
    reset(m, FLV_AUDIO);
    if (len < 1)
        return say(m, -EBADMSG, "empty audio message");
    unsigned format = p[0] >> 4;
    if (format == FLV_SOUND_FORMAT_EX)
        return parse_enhanced_audio(p, len, m);
    if (format != FLV_SOUND_FORMAT_AAC)
        return say(m, -ENOTSUP, "audio format %u (%s) is not supported (AAC is)", format,
                   sound_format_name(format));
    m->codec = FLV_CODEC_AAC;
    m->keyframe = true;
    if (len < 2)
        return say(m, -EBADMSG, "AAC audio message without a packet type");
    switch (p[1]) {
    case 0:
        m->packet = FLV_PACKET_CONFIG;
        break;
    case 1:
        m->packet = FLV_PACKET_FRAME;
        break;
    default:
        return say(m, -EBADMSG, "unknown AACPacketType %u", p[1]);
    }
    body(m, p, len, 2);
    return check_body(m);
}

const char *flv_codec_name(enum flv_codec codec)
{
    switch (codec) {
    case FLV_CODEC_H264: return "H.264";
    case FLV_CODEC_HEVC: return "HEVC";
    case FLV_CODEC_AV1: return "AV1";
    case FLV_CODEC_AAC: return "AAC";
    case FLV_CODEC_NONE: break;
    }
    return "none";
}
