/*
 * The stream hub: one `struct stream` per live channel, between ingest and
 * every output (SRS's source with consumers; MediaMTX's stream model).
 *
 * Ingest (RTMP today, SRT later) publishes codec configurations and frames
 * into a stream on the loop thread. The stream keeps:
 *   - the current codec configuration of each track, with an epoch that
 *     changes whenever a configuration really changes (a new init segment);
 *   - a GOP cache: every frame since the last video keyframe (or the last
 *     second of audio for audio-only streams), so a consumer that attaches
 *     mid-stream starts at a random access point;
 *   - its consumers.
 *
 * A consumer is either direct — called on the loop thread as each frame is
 * published (the LL-HLS packager: it only appends to memory) — or queued:
 * frames go into a queue bounded in time that another thread drains
 * (recording, transcoding). A queued consumer that falls behind loses whole
 * GOPs, oldest first, with a log line; ingest never waits for it.
 *
 * When the publisher goes away the stream enters a grace period
 * (hls.reconnect_grace): if the same channel publishes again within it, the
 * stream carries on, and its next frame is flagged as a discontinuity, so the
 * packager continues the same playlist. Otherwise the stream ends: consumers
 * get on_end and the stream is freed once they have all detached.
 */
#ifndef HEARTH_MEDIA_STREAM_H
#define HEARTH_MEDIA_STREAM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "media/codec.h"
#include "media/frame.h"

struct stream;
struct stream_hub;
struct stream_consumer;

enum stream_state { STREAM_LIVE, STREAM_GRACE, STREAM_ENDED };

struct stream_consumer_ops {
    /* Codec configuration changed (or is first known): tracks as they are now. */
    void (*on_config)(struct stream_consumer *c, struct stream *s);
    /* A frame: borrowed; frame_ref() it to keep it. Direct consumers only. */
    void (*on_frame)(struct stream_consumer *c, struct stream *s, struct frame *f);
    /* The publisher left; the stream waits for it (grace period). */
    void (*on_pause)(struct stream_consumer *c, struct stream *s);
    /* The publisher is back within the grace period. */
    void (*on_resume)(struct stream_consumer *c, struct stream *s);
    /* The stream is over: detach (stream_consumer_detach) now or later. */
    void (*on_end)(struct stream_consumer *c, struct stream *s);
    /* Queued consumers: frames are waiting in the queue (called on the loop;
     * wake your thread). */
    void (*on_ready)(struct stream_consumer *c);
};

/* A bounded queue for consumers on other threads. */
struct stream_queue {
    pthread_mutex_t lock;
    struct frame **ring;
    size_t cap, head, len;
    int64_t max_span;  /* MEDIA_TIMEBASE: the queue holds at most this much time */
    uint64_t dropped;  /* frames dropped because the consumer was slow */
    bool waiting_key;  /* after a drop, skip until the next video keyframe */
};

struct stream_consumer {
    const struct stream_consumer_ops *ops;
    void *ud;
    const char *name; /* for logs: "hls", "record" */
    bool queued;
    struct stream_queue queue;
    /* the hub's */
    struct stream *stream;
    struct stream_consumer *next;
};

struct stream_track {
    bool present;
    struct codec_config config;
    int64_t last_dts;
    uint64_t frames;
    uint64_t bytes;
};

struct stream {
    struct stream_hub *hub;
    char slug[64];
    int64_t channel_id;
    enum stream_state state;
    struct stream_track video, audio;
    unsigned config_epoch;
    int64_t started_unix;
    uint64_t started_ns;
    uint64_t bytes_in;
    bool next_discontinuity;
    /* The publisher's onMetaData object, as AMF0 bytes (encoder, sizes, rates). */
    uint8_t *metadata;
    size_t metadata_len;

    struct frame **gop;
    size_t gop_len, gop_cap;
    size_t gop_bytes;

    struct stream_consumer *consumers;
    struct stream_consumer *iter_next; /* the hub's: next consumer of the loop in progress */
    uv_timer_t grace_timer;
    int refs; /* the hub's entry + the timer + users holding the stream */
    struct stream *next;
    void *user; /* for the app: e.g. the stream's database row */
};

/* Called when a stream starts (to attach outputs) and when it ends. */
struct stream_hub_hooks {
    void (*on_stream_start)(struct stream *s, void *ud);
    void (*on_stream_end)(struct stream *s, void *ud);
    void *ud;
};

struct stream_hub *stream_hub_new(uv_loop_t *loop, uint64_t reconnect_grace_ms);
void stream_hub_add_hooks(struct stream_hub *hub, const struct stream_hub_hooks *hooks);
/* End every stream (shutdown) and free the hub once they are gone. */
void stream_hub_free(struct stream_hub *hub);
struct stream *stream_hub_find(struct stream_hub *hub, const char *slug);
/* Call fn for every stream that is live or in its grace period. */
void stream_hub_foreach(struct stream_hub *hub, void (*fn)(struct stream *s, void *ud), void *ud);
size_t stream_hub_count(struct stream_hub *hub);

/*
 * A publisher starts on a channel. -EBUSY when the channel has a live
 * publisher already. If the channel's stream is in its grace period it is
 * resumed (*resumed = true) and the next frame carries the discontinuity flag.
 */
int stream_publish_begin(struct stream_hub *hub, const char *slug, int64_t channel_id,
                         struct stream **out, bool *resumed);
/* The publisher left: grace period, then the end. */
void stream_publish_end(struct stream *s);
/* End at once (no grace): the channel was deleted, or the server stops. */
void stream_end(struct stream *s);

/* Set a track's codec configuration (copied). No-op when unchanged. */
int stream_set_config(struct stream *s, const struct codec_config *cfg);
/* Keep the publisher's metadata (copied; replaces what was there). */
int stream_set_metadata(struct stream *s, const void *data, size_t len);
/* Publish a frame (borrowed; the stream takes the references it needs). */
void stream_push(struct stream *s, struct frame *f);

/*
 * Attach a consumer: it receives on_config when codecs are known, then the
 * GOP cache, then live frames. queued consumers get a queue bounded to
 * max_span (MEDIA_TIMEBASE units).
 */
void stream_consumer_attach(struct stream *s, struct stream_consumer *c, bool queued,
                            int64_t max_span);
void stream_consumer_detach(struct stream_consumer *c);

/* For queued consumers, from any thread: next frame (a reference the caller
 * owns) or NULL when the queue is empty. */
struct frame *stream_queue_pop(struct stream_consumer *c);

/* Keep a stream from being freed while you hold it (loop thread). */
void stream_ref(struct stream *s);
void stream_unref(struct stream *s);

#endif
