/*
 * struct frame: one coded video picture or audio access unit, as it crosses
 * the house from ingest to every output.
 *
 * A frame is built once by ingest (frame_alloc, fill the payload, set the
 * fields, frame_trim if the container header sits in front of the payload),
 * then published: from that moment nobody writes to it again, so any thread
 * may read it without a lock and the only shared mutable state is the
 * reference count. Each holder (the stream's GOP cache, each consumer queue,
 * a segmenter waiting for the next keyframe) takes its own reference with
 * frame_ref and drops it with frame_unref; the last unref frees it.
 *
 * Header and payload are one allocation. Ingest knows the payload size before
 * it has the bytes (the RTMP message header carries the length), so the chunk
 * layer can reassemble a media message straight into the frame's storage and
 * the FLV parser then narrows the window past the FLV tag header with
 * frame_trim: one malloc, one free, and no copy between the socket buffer and
 * the frame. A separately refcounted blob would only pay off if two frames
 * shared one payload, which never happens here (each message is one frame).
 *
 * Payload formats, fixed for the whole house so that no consumer converts:
 *   H.264, HEVC: NAL units each prefixed with a 4-byte big-endian length (the
 *                avcC/hvcC/MP4 sample format, with lengthSizeMinusOne = 3);
 *   AV1:         OBUs in the low-overhead format with obu_has_size_field set
 *                (the MP4 'av01' sample format; no temporal delimiters);
 *   AAC:         one raw access unit (no ADTS header).
 *
 * Timestamps are int64 in one fixed 90 kHz timebase for every codec:
 *   - RTMP's milliseconds map exactly (x 90), and so does MPEG-TS should an
 *     output ever need it;
 *   - integer and NTSC video rates have exact durations (60 fps = 1500,
 *     30 = 3000, 25 = 3600, 29.97 = 3003), so the video track of the fMP4
 *     output uses it directly and never rescales;
 *   - one timebase for all frames means the hub, the GOP cache and the
 *     segmenter compare audio and video times without converting.
 * Audio tracks in fMP4 use the sample rate as timescale (1024 samples at
 * 44.1 kHz is not an integer at 90 kHz); see media_ts_rescale.
 * int64 at 90 kHz wraps after about 3 million years.
 */
#ifndef HEARTH_MEDIA_FRAME_H
#define HEARTH_MEDIA_FRAME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum media_codec {
    MEDIA_CODEC_NONE = 0,
    MEDIA_CODEC_H264,
    MEDIA_CODEC_HEVC,
    MEDIA_CODEC_AV1,
    MEDIA_CODEC_AAC,
};

enum media_kind {
    MEDIA_KIND_VIDEO = 0,
    MEDIA_KIND_AUDIO,
};

/* The one timebase of every frame's dts and pts (ticks per second). */
#define MEDIA_TIMEBASE 90000

/* Longest payload a frame may have: above any RTMP message (24-bit length)
 * even after NAL lengths are widened, far below what would be a bug. */
#define FRAME_MAX_SIZE (64u * 1024 * 1024)

struct frame {
    atomic_uint refs;
    enum media_codec codec;
    enum media_kind kind;
    int64_t dts; /* MEDIA_TIMEBASE */
    int64_t pts; /* MEDIA_TIMEBASE; pts >= dts is usual but not required */
    bool keyframe;      /* video: random access point (IDR / CRA / AV1 key frame); audio: always */
    bool discontinuity; /* ingest renormalised timestamps across a gap before this frame */
    /* The payload window: points into storage[], narrowed by frame_trim. */
    const uint8_t *data;
    size_t size;
    size_t capacity;
    uint8_t storage[];
};

/* Kind of a codec; MEDIA_KIND_VIDEO for MEDIA_CODEC_NONE. */
enum media_kind media_codec_kind(enum media_codec codec);
/* "h264", "hevc", "av1", "aac", "none". */
const char *media_codec_name(enum media_codec codec);

/*
 * A new frame with refs = 1 and room for size payload bytes (uninitialised),
 * data/size covering all of it, kind derived from codec, times 0, flags off.
 * NULL when size exceeds FRAME_MAX_SIZE or memory runs out.
 */
struct frame *frame_alloc(enum media_codec codec, size_t size);
/* frame_alloc plus a copy of the payload: for tests and for payloads that
 * had to be rewritten (e.g. 2-byte NAL lengths widened to 4). */
struct frame *frame_new(enum media_codec codec, const void *data, size_t size);

/*
 * Change the storage of an unpublished frame (refs 1) to capacity bytes,
 * keeping the first min(old, new) of them: for a builder that learns the
 * size as bytes arrive (the RTMP chunk reader). Returns the frame, which may
 * have moved, with data/size covering the whole storage; NULL when capacity
 * exceeds FRAME_MAX_SIZE or memory runs out, and f is then unchanged.
 */
struct frame *frame_resize(struct frame *f, size_t capacity);

/* Writable payload, for the builder only, before publication. */
static inline uint8_t *frame_payload(struct frame *f) { return f->storage; }

/*
 * Narrow the payload window to [offset, offset + size) of the storage, before
 * publication (e.g. to skip the FLV tag header that was reassembled in front
 * of the NAL units). -EINVAL when the window is not inside the storage.
 */
int frame_trim(struct frame *f, size_t offset, size_t size);

/* Take a reference; returns f so that `q->f = frame_ref(f)` reads naturally. */
struct frame *frame_ref(struct frame *f);
/* Drop a reference; the last one frees the frame. NULL is ignored. */
void frame_unref(struct frame *f);

/* Composition offset pts - dts (may be negative with some encoders). */
static inline int64_t frame_cts(const struct frame *f) { return f->pts - f->dts; }

/* Milliseconds (RTMP, FLV) to MEDIA_TIMEBASE; exact. */
static inline int64_t media_ts_from_ms(int64_t ms) { return ms * (MEDIA_TIMEBASE / 1000); }
/* MEDIA_TIMEBASE to milliseconds, rounded toward minus infinity so that
 * consecutive frames never map to decreasing milliseconds. */
int64_t media_ts_to_ms(int64_t ts);
/* Seconds as a double, for logs, playlists (EXTINF) and rates. */
static inline double media_ts_to_sec(int64_t ts) { return (double)ts / MEDIA_TIMEBASE; }

/*
 * ts * to / from, rounded to nearest (halves away from zero), computed without
 * overflow for any ts and 32-bit-ish rates. from and to must be > 0; returns 0
 * otherwise. Use it to move between MEDIA_TIMEBASE and a track timescale.
 */
int64_t media_ts_rescale(int64_t ts, int64_t from, int64_t to);

#endif
