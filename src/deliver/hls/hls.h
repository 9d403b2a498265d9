/*
 * LL-HLS packager and server (RFC 8216bis, HLS 2nd edition), CMAF fMP4.
 *
 * One `struct hls_stream` per channel that is live (or just ended): a direct
 * consumer of the channel's media stream on the loop thread. Frames are cut
 * into partial segments (one moof+mdat each) of at most hls.part_target, and
 * segments that start at a video keyframe and end at the first keyframe after
 * hls.segment_target. Everything lives in memory, in reference-counted blobs
 * that HTTP responses borrow; nothing touches the disk on the live path.
 *
 * Playlists are rendered from that state on request (and cached until the
 * next part). A request with _HLS_msn/_HLS_part is parked until what it asks
 * for exists and woken by the part's arrival, as is a request for the part
 * named by EXT-X-PRELOAD-HINT; no polling. hls_http.c has the HTTP side.
 *
 * Names carry a per-session id (sid), so that a channel that goes live again
 * never reuses a URL an HTTP cache may still hold:
 *   /live/<slug>/master.m3u8, index.m3u8
 *   /live/<slug>/init-<sid>-<n>.mp4
 *   /live/<slug>/seg-<sid>-<msn>.m4s
 *   /live/<slug>/part-<sid>-<msn>.<i>.m4s
 */
#ifndef HEARTH_DELIVER_HLS_HLS_H
#define HEARTH_DELIVER_HLS_HLS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "media/stream.h"

struct http_server;
struct http_request;

struct hls_config {
    int64_t part_target;    /* MEDIA_TIMEBASE */
    int64_t segment_target; /* MEDIA_TIMEBASE */
    int64_t window;         /* MEDIA_TIMEBASE: segments kept in the playlist */
    uint64_t linger_ms;     /* how long an ended stream's playlist stays */
};

/* A reference-counted immutable byte blob (loop thread only). */
struct hls_blob {
    int refs;
    size_t len;
    char etag[48];
    uint8_t data[];
};

struct hls_part {
    struct hls_blob *blob; /* NULL once no longer listed: served from the segment's blob */
    size_t off, len;       /* where the part lies in the segment */
    int64_t duration; /* MEDIA_TIMEBASE */
    bool independent;
};

struct hls_segment {
    uint64_t msn;
    int64_t start;    /* output timeline, MEDIA_TIMEBASE */
    int64_t duration; /* so far, or final when complete */
    int64_t pdt_ms;   /* wall clock of start, Unix ms */
    bool complete;
    bool discontinuity;
    unsigned init_id;
    struct hls_part *parts;
    int nparts, capparts;
    bool parts_dropped; /* older than 3 target durations: no longer listed, still served */
    struct hls_blob *blob; /* the whole segment, once complete */
    uint64_t bytes;
};

struct hls_pending {
    struct frame *f;
    int64_t dts, pts; /* track timescale */
};

struct hls_parked;

struct hls_stream {
    struct hls *hls;
    char slug[64];
    char sid[12];
    struct stream_consumer consumer;
    struct stream *stream; /* NULL once ended */
    bool ended;
    bool paused;

    /* tracks */
    bool has_video, has_audio;
    struct codec_config video, audio;
    uint32_t audio_timescale;
    unsigned init_id;
    struct hls_blob *init;
    struct hls_blob *inits[8]; /* inits still referenced by the window */
    unsigned init_ids[8];
    int ninits;

    /* segments in the window, oldest first */
    struct hls_segment *segs;
    size_t nsegs, capsegs;
    uint64_t next_msn;
    unsigned disc_seq; /* discontinuity sequence number of segs[0] */
    uint32_t frag_seq;
    int64_t max_seg_duration;

    /* the part being built */
    bool started;
    bool next_disc;
    int64_t in_base, out_base; /* output time = frame dts - in_base + out_base */
    int64_t wall_base_ms;      /* wall clock at output time 0 */
    int64_t seg_start, part_start;
    struct hls_pending *pv, *pa;
    size_t npv, npa, cappv, cappa;
    struct frame *held; /* newest video frame, waiting for its duration */
    int64_t held_t;
    int64_t last_video_dur;
    /* Frame rate as measured when the bitstream does not say. */
    uint64_t vframes;
    int64_t vfirst_t, vlast_t;
    int64_t audio_next; /* audio timescale */
    int64_t end_t;      /* output time reached by every committed sample */
    int64_t end_t_linger; /* loop time (ms) when an ended stream is freed */

    /* rendered playlists, valid while version == rendered_version */
    uint64_t version;
    struct hls_blob *pl_full, *pl_skip, *pl_master;
    uint64_t pl_full_v, pl_skip_v, pl_master_v;

    /* bandwidth, measured over complete segments */
    uint64_t peak_bps, avg_bits;
    int64_t avg_dur;

    struct hls_parked *parked;
    uv_timer_t timer; /* parked request deadlines, and the linger after end */
    struct hls_stream *next;
};

struct hls {
    uv_loop_t *loop;
    struct hls_config cfg;
    struct stream_hub *hub;
    struct hls_stream *streams;
    /*
     * Asked for every /live/<slug>/<file> request of a live (or lingering)
     * stream before it is answered or parked, on the loop: < 0 refused (the
     * hook wrote the response), 0 answer as usual, > 0 answer but keep it out
     * of shared caches (a protected channel, or the hook set a cookie). The
     * app sets it (viewers_hls_request); NULL lets everything through.
     */
    int (*on_request)(void *ud, struct http_request *req, const char *slug, const char *file);
    void *on_request_ud;
};

struct hls *hls_new(uv_loop_t *loop, const struct hls_config *cfg, struct stream_hub *hub);
void hls_free(struct hls *hls);
/* GET /live/:slug/... routes. */
int hls_register_routes(struct hls *hls, struct http_server *srv);
struct hls_stream *hls_find(struct hls *hls, const char *slug);

/* Render playlists (exposed for tests). skip: a delta update. */
int hls_render_media(struct hls_stream *hs, bool skip, struct buf *out);
int hls_render_master(struct hls_stream *hs, struct buf *out);

struct hls_blob *hls_blob_new(const void *data, size_t len);
void hls_blob_ref(struct hls_blob *b);
void hls_blob_unref(struct hls_blob *b);

/*
 * Decisions of blocking reload (RFC 8216bis 6.2.5.2), exposed for tests:
 * 1 ready, 0 wait, -1 too far ahead (400).
 */
int hls_playlist_ready(const struct hls_stream *hs, int64_t msn, int64_t part);
/* For a part request: 1 available, 0 it is the next one (wait), -1 not found. */
int hls_part_ready(const struct hls_stream *hs, uint64_t msn, int part);

/* Stream-side entry points (also used by tests to feed frames directly). */
struct hls_stream *hls_stream_new(struct hls *hls, const char *slug);
void hls_stream_on_config(struct hls_stream *hs, const struct codec_config *video,
                          const struct codec_config *audio);
void hls_stream_on_frame(struct hls_stream *hs, struct frame *f);
void hls_stream_flush(struct hls_stream *hs);
void hls_stream_finish(struct hls_stream *hs);

#endif
