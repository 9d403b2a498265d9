/*
 * CMAF fragmented MP4 writer (ISO/IEC 14496-12, 14496-15, 23000-19).
 *
 * Two products, both appended to a struct buf:
 *   init segment   ftyp + moov: one trak per track, sample entries avc1+avcC,
 *                  hvc1+hvcC, av01+av1C or mp4a+esds, empty sample tables,
 *                  mvex/trex. Written once per codec configuration.
 *   fragment       [styp] + moof + mdat for one or both tracks: a CMAF chunk,
 *                  i.e. one LL-HLS partial segment. A segment is the byte
 *                  concatenation of its parts, styp on the first.
 *
 * Track IDs are fixed: 1 video, 2 audio, whichever tracks exist, so that a
 * stream that is audio-only today keeps the same IDs if video comes back.
 * The video track's timescale is MEDIA_TIMEBASE (90 kHz: frame times go in
 * unchanged); the audio track's is its sample rate, so AAC durations are
 * exact integers (1024 at any rate) and never drift.
 *
 * Payloads are copied once, into the output buffer: the writer computes the
 * fragment's exact size first and reserves it in one step, so growing the
 * buffer never copies payload bytes a second time. A contiguous buffer (not
 * an iovec over the frames) because a part is then a self-contained immutable
 * blob: the HTTP layer serves it with one write, hashes it for an ETag, keeps
 * it for the playlist window and the segment (the concatenation of its parts)
 * without holding a reference on any frame, and frames are freed as soon as
 * the GOP cache lets go of them. At 5-8 Mbit/s the copy is well under 1 MB/s
 * per stream.
 */
#ifndef HEARTH_DELIVER_HLS_FMP4_H
#define HEARTH_DELIVER_HLS_FMP4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "media/codec.h"

#define FMP4_TRACK_VIDEO 1u
#define FMP4_TRACK_AUDIO 2u
#define FMP4_VIDEO_TIMESCALE 90000u /* == MEDIA_TIMEBASE */

/* The timescale of the track a config goes in: 90000 for video, the sample
 * rate for audio (0 for an audio config without one). */
uint32_t fmp4_timescale(const struct codec_config *c);

/*
 * Append an init segment with a video track (track 1) when video is not NULL
 * and an audio track (track 2) when audio is not NULL; at least one. The
 * configs must come from codec_config_parse (record and fields set).
 * 0, -EINVAL (no track, wrong kind, missing record or rate), or buf's error.
 */
int fmp4_write_init(struct buf *out, const struct codec_config *video, const struct codec_config *audio);

struct fmp4_sample {
    int64_t dts;        /* track timescale; >= 0 for the first sample of a run */
    int64_t pts;        /* track timescale; pts - dts must fit in int32 */
    uint32_t duration;  /* track timescale; 0 = dts of the next sample - dts */
    uint32_t size;
    bool keyframe;      /* video: sync sample; ignored for audio (all sync) */
    const uint8_t *data;
};

/* The samples of one track in one fragment, in decode order. */
struct fmp4_run {
    uint32_t track_id;  /* FMP4_TRACK_VIDEO or FMP4_TRACK_AUDIO */
    const struct fmp4_sample *samples;
    size_t count;       /* >= 1 */
};

struct fmp4_fragment {
    uint32_t sequence;  /* mfhd sequence_number: 1 for the first fragment, +1 each */
    bool styp;          /* prefix a styp box: set on the first part of a segment */
    const struct fmp4_run *runs;
    size_t nruns;       /* 1 or 2, at most one run per track */
};

/*
 * Append [styp] moof mdat. The tfdt of each track is its first sample's dts
 * (the baseMediaDecodeTime, so dts must be continuous across fragments: the
 * next fragment's first dts = this one's last dts + duration); the media data
 * of the runs follows in mdat in the order of runs. Every sample's duration
 * must be known: a last sample with duration 0 is -EINVAL (a live segmenter
 * holds each track's newest frame back until the next one gives its duration).
 * 0, -EINVAL for bad input, -EMSGSIZE/-ENOMEM from buf (out is then unchanged).
 */
int fmp4_write_fragment(struct buf *out, const struct fmp4_fragment *frag);

/* The bytes fmp4_write_fragment would append, or 0 for bad input. */
size_t fmp4_fragment_size(const struct fmp4_fragment *frag);

#endif
