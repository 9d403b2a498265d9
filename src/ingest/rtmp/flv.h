/*
 * RTMP audio and video message payloads (FLV tag bodies) to one neutral
 * description: which codec, whether it is codec configuration, a frame or an
 * end of sequence, keyframe or not, the composition offset, and where the
 * codec's own bytes are. Nothing here copies or allocates; the result points
 * into the payload it was given.
 *
 * Accepted, because that is what OBS, ffmpeg and the hardware encoders send:
 *   video, legacy FLV:  codec id 7 (AVC/H.264): AVCPacketType 0 sequence
 *                       header (AVCDecoderConfigurationRecord), 1 NAL units
 *                       with a signed 24-bit composition time, 2 end of seq.
 *   video, Enhanced RTMP (IsExHeader, the top bit of the first byte) with
 *                       FourCC hvc1 (HEVC), av01 (AV1) or avc1 (H.264):
 *                       SequenceStart, CodedFrames (composition time for
 *                       hvc1/avc1), CodedFramesX (composition time 0),
 *                       SequenceEnd, MPEG2TSSequenceStart (av01).
 *   audio, legacy FLV:  sound format 10 (AAC): AACPacketType 0
 *                       AudioSpecificConfig, 1 raw AAC frame.
 *   audio, Enhanced RTMP (sound format 9) with FourCC mp4a (AAC): the same
 *                       two, as SequenceStart and CodedFrames.
 *
 * Packets that carry nothing for the media pipeline (video info/command
 * frames, Enhanced RTMP Metadata such as HDR colorInfo, empty frames) come
 * back as FLV_PACKET_SKIP with a reason. Everything else (MP3, Speex,
 * Nellymoser, Opus, VP6, VP9, multitrack, ...) is refused with -ENOTSUP and a
 * reason that names it; the session logs that and decides whether the
 * publish goes on. Malformed (too short) payloads are -EBADMSG.
 */
#ifndef HEARTH_INGEST_RTMP_FLV_H
#define HEARTH_INGEST_RTMP_FLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum flv_kind {
    FLV_AUDIO = 0,
    FLV_VIDEO = 1,
};

enum flv_codec {
    FLV_CODEC_NONE = 0,
    FLV_CODEC_H264,
    FLV_CODEC_HEVC,
    FLV_CODEC_AV1,
    FLV_CODEC_AAC,
};

enum flv_packet_kind {
    FLV_PACKET_CONFIG = 0, /* avcC, hvcC, av1C, or AudioSpecificConfig */
    FLV_PACKET_FRAME,      /* AVC/HEVC: length-prefixed NAL units; AV1: OBUs
                            * (low overhead format); AAC: one raw frame */
    FLV_PACKET_END,        /* end of sequence */
    FLV_PACKET_CONFIG_TS,  /* av01 MPEG2TSSequenceStart: the AV1 video
                            * descriptor of the MPEG-2 TS mapping, not an
                            * av1C; the sequence header OBU in the stream has
                            * what the descriptor says */
    FLV_PACKET_SKIP,       /* nothing for the pipeline; why says what */
};

/* Legacy codec ids and sound formats, for callers that log them. */
#define FLV_VIDEO_CODEC_AVC 7
#define FLV_SOUND_FORMAT_EX 9  /* Enhanced RTMP ExAudioTagHeader */
#define FLV_SOUND_FORMAT_AAC 10

struct flv_media {
    enum flv_kind kind;
    enum flv_codec codec;
    enum flv_packet_kind packet;
    bool keyframe;          /* video: frame type key (or generated key);
                             * audio: always, every AAC frame stands alone */
    bool enhanced;          /* came with an Enhanced RTMP header */
    int32_t cts;            /* composition offset, ms: pts = dts + cts */
    const uint8_t *data;    /* the codec bytes, inside the payload given */
    size_t len;
    char why[96];           /* for SKIP and errors: what and why, for the log */
};

/* 0 with *out filled, -EBADMSG (short/malformed) or -ENOTSUP (refused);
 * out->why is set on SKIP and on every error. */
int flv_parse_video(const uint8_t *p, size_t len, struct flv_media *out);
int flv_parse_audio(const uint8_t *p, size_t len, struct flv_media *out);

const char *flv_codec_name(enum flv_codec codec);

#endif
