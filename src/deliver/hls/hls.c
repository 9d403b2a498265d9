/*
 * The LL-HLS packager: frames in, parts and segments out, playlists rendered
 * from the result.
 *
 * Cutting. Video leads when there is video. A video frame's duration is only
 * known when the next one arrives, so the newest frame is held back; when the
 * next frame f arrives the held one is committed to the part being built, and
 * then f decides where it goes:
 *   - f is a keyframe and the segment has reached hls.segment_target: the
 *     part and the segment end before f, and f opens the next segment;
 *   - the part plus one more frame would pass hls.part_target: the part ends
 *     before f, which opens the next part (INDEPENDENT when it is a keyframe).
 * So parts never exceed PART-TARGET, every part but a segment's last is
 * within one frame of it, and a part is published the moment the frame
 * after it arrives: no timer, no extra wait. Audio goes into whatever part
 * is open when it arrives, in its own traf with its own tfdt; with no video,
 * audio frames make the cuts the same way.
 *
 * Timeline. Output time is frame dts - in_base + out_base (MEDIA_TIMEBASE),
 * starting at 0 at the first keyframe. A discontinuity (the publisher came
 * back) closes what is open and restarts the mapping where the last sample
 * ended, so decode times keep increasing across EXT-X-DISCONTINUITY. Audio
 * runs in its sample rate: consecutive AAC frames are laid end to end
 * (exactly frame_samples apart) unless the publisher's timestamps say a gap
 * or an overlap of more than two frames happened, so millisecond rounding in
 * RTMP never makes audio drift or click.
 */
#include "deliver/hls/hls.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "deliver/hls/fmp4.h"
#include "deliver/hls/hls_internal.h"

/* --- blobs ------------------------------------------------------------------ */

struct hls_blob *hls_blob_new(const void *data, size_t len)
{
    struct hls_blob *b = malloc(sizeof *b + (len ? len : 1));
    if (!b)
        return NULL;
    b->refs = 1;
    b->len = len;
    b->etag[0] = '\0';
    if (len)
        memcpy(b->data, data, len);
    return b;
}

static struct hls_blob *blob_from_buf(struct buf *bf)
{
    /* One copy into the blob; the buf is reused for the next part. */
    struct hls_blob *b = hls_blob_new(bf->data, bf->len);
    buf_reset(bf);
    return b;
}

void hls_blob_ref(struct hls_blob *b) { b->refs++; }

void hls_blob_unref(struct hls_blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* --- helpers ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void pending_clear(struct hls_stream *hs)
{
    for (size_t i = 0; i < hs->npv; i++)
        frame_unref(hs->pv[i].f);
    for (size_t i = 0; i < hs->npa; i++)
        frame_unref(hs->pa[i].f);
    hs->npv = hs->npa = 0;
}

static int pending_add(struct hls_pending **arr, size_t *n, size_t *cap, struct frame *f,
                       int64_t dts, int64_t pts)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        struct hls_pending *p = realloc(*arr, c * sizeof *p);
        if (!p)
            return -ENOMEM;
        *arr = p;
        *cap = c;
    }
    (*arr)[*n].f = frame_ref(f);
    (*arr)[*n].dts = dts;
    (*arr)[*n].pts = pts;
    (*n)++;
    return 0;
}

static struct hls_segment *open_segment(struct hls_stream *hs)
{
    return hs->nsegs && !hs->segs[hs->nsegs - 1].complete ? &hs->segs[hs->nsegs - 1] : NULL;
}

static void segment_free(struct hls_segment *s)
{
    for (int i = 0; i < s->nparts; i++)
        hls_blob_unref(s->parts[i].blob);
    free(s->parts);
    hls_blob_unref(s->blob);
}

static void inits_gc(struct hls_stream *hs)
{
    /* Keep the inits some segment in the window still names, and the current. */
    int w = 0;
    for (int i = 0; i < hs->ninits; i++) {
        bool used = hs->init_ids[i] == hs->init_id;
        for (size_t k = 0; !used && k < hs->nsegs; k++)
            used = hs->segs[k].init_id == hs->init_ids[i];
        if (used) {
            hs->inits[w] = hs->inits[i];
            hs->init_ids[w] = hs->init_ids[i];
            w++;
        } else {
            hls_blob_unref(hs->inits[i]);
        }
    }
    hs->ninits = w;
}

static void parts_trim(struct hls_stream *hs);

/* Drop segments beyond the window, and part lists older than 3 targets. */
static void window_trim(struct hls_stream *hs)
{
    const struct hls_config *cfg = &hs->hls->cfg;
    int64_t total = 0;
    for (size_t i = 0; i < hs->nsegs; i++)
        if (hs->segs[i].complete)
            total += hs->segs[i].duration;
    /* RFC 8216bis 6.2.2: never shorter than three target durations. */
    int64_t keep = cfg->window;
    if (keep < 3 * hls_target_duration(hs) * (int64_t)MEDIA_TIMEBASE)
        keep = 3 * hls_target_duration(hs) * (int64_t)MEDIA_TIMEBASE;
    size_t drop = 0;
    while (drop + 1 < hs->nsegs && hs->segs[drop].complete && total - hs->segs[drop].duration >= keep) {
        total -= hs->segs[drop].duration;
        if (hs->segs[drop + 1].discontinuity)
            hs->disc_seq++;
        segment_free(&hs->segs[drop]);
        drop++;
    }
    if (drop) {
        memmove(hs->segs, hs->segs + drop, (hs->nsegs - drop) * sizeof *hs->segs);
        hs->nsegs -= drop;
        inits_gc(hs);
    }
    parts_trim(hs);
}

/* Parts stay listed for the last three target durations (RFC 8216bis 6.2.2). */
static void parts_trim(struct hls_stream *hs)
{
    int64_t td = hls_target_duration(hs) * (int64_t)MEDIA_TIMEBASE;
    int64_t from_end = 0;
    for (size_t i = hs->nsegs; i-- > 0;) {
        struct hls_segment *s = &hs->segs[i];
        if (from_end > 3 * td && s->complete && s->blob && !s->parts_dropped) {
            /* RFC 8216bis 6.2.2: unlisted, but still downloadable for three
             * more target durations; the bytes are in the segment's blob. */
            for (int k = 0; k < s->nparts; k++) {
                hls_blob_unref(s->parts[k].blob);
                s->parts[k].blob = NULL;
            }
            s->parts_dropped = true;
        }
        from_end += s->duration;
    }
}

int64_t hls_target_duration(const struct hls_stream *hs)
{
    int64_t max = hs->hls->cfg.segment_target;
    if (hs->max_seg_duration > max)
        max = hs->max_seg_duration;
    /* The open segment counts as soon as its parts are listed; rounded the
     * same way as the complete ones, so the value never goes back down when
     * the segment completes (its duration only grows). */
    if (hs->nsegs && !hs->segs[hs->nsegs - 1].complete && hs->segs[hs->nsegs - 1].duration > max)
        max = hs->segs[hs->nsegs - 1].duration;
    /* RFC 8216bis 4.4.3.1: EXTINF rounded to the nearest integer <= TARGETDURATION. */
    int64_t td = (max + MEDIA_TIMEBASE / 2) / MEDIA_TIMEBASE;
    return td < 1 ? 1 : td;
}

static int start_segment(struct hls_stream *hs, int64_t t)
{
    if (hs->nsegs == hs->capsegs) {
        size_t c = hs->capsegs ? hs->capsegs * 2 : 32;
        struct hls_segment *n = realloc(hs->segs, c * sizeof *n);
        if (!n)
            return -ENOMEM;
        hs->segs = n;
        hs->capsegs = c;
    }
    struct hls_segment *s = &hs->segs[hs->nsegs++];
    memset(s, 0, sizeof *s);
    s->msn = hs->next_msn++;
    s->start = t;
    s->pdt_ms = hs->wall_base_ms + t / (MEDIA_TIMEBASE / 1000);
    s->discontinuity = hs->next_disc;
    s->init_id = hs->init_id;
    hs->next_disc = false;
    hs->seg_start = hs->part_start = t;
    return 0;
}

/* Write the pending samples as one part ending at output time end_t. */
static void close_part(struct hls_stream *hs, int64_t end_t)
{
    struct hls_segment *seg = open_segment(hs);
    if (!seg || (hs->npv == 0 && hs->npa == 0))
        return;
    struct fmp4_sample *vs = NULL, *as = NULL;
    struct fmp4_run runs[2];
    size_t nruns = 0;
    if (hs->npv) {
        vs = calloc(hs->npv, sizeof *vs);
        if (!vs)
            goto out;
        for (size_t i = 0; i < hs->npv; i++) {
            struct hls_pending *p = &hs->pv[i];
            int64_t next = i + 1 < hs->npv ? hs->pv[i + 1].dts : end_t;
            int64_t d = next - p->dts;
            vs[i].dts = p->dts;
            vs[i].pts = p->pts;
            vs[i].duration = (uint32_t)(d > 0 ? d : 1);
            vs[i].size = (uint32_t)p->f->size;
            vs[i].keyframe = p->f->keyframe;
            vs[i].data = p->f->data;
        }
        runs[nruns++] = (struct fmp4_run){FMP4_TRACK_VIDEO, vs, hs->npv};
    }
    if (hs->npa) {
        as = calloc(hs->npa, sizeof *as);
        if (!as)
            goto out;
        uint32_t fdur = hs->audio.frame_samples ? hs->audio.frame_samples : 1024;
        for (size_t i = 0; i < hs->npa; i++) {
            struct hls_pending *p = &hs->pa[i];
            int64_t d = i + 1 < hs->npa ? hs->pa[i + 1].dts - p->dts : fdur;
            as[i].dts = p->dts;
            as[i].pts = p->dts;
            as[i].duration = (uint32_t)(d > 0 ? d : 1);
            as[i].size = (uint32_t)p->f->size;
            as[i].keyframe = true;
            as[i].data = p->f->data;
        }
        runs[nruns++] = (struct fmp4_run){FMP4_TRACK_AUDIO, as, hs->npa};
    }
    struct fmp4_fragment frag = {
        .sequence = ++hs->frag_seq, .styp = seg->nparts == 0, .runs = runs, .nruns = nruns};
    /* The writer knows the fragment's size up front: write it straight into
     * the blob that will be served, so the payload is copied only once. */
    size_t fsize = fmp4_fragment_size(&frag);
    struct hls_blob *b = fsize ? malloc(sizeof *b + fsize + 1) : NULL;
    if (!b) {
        log_error("hls %s: cannot write a part (%zu bytes)", hs->slug, fsize);
        goto out;
    }
    struct buf out = {.data = (char *)b->data, .len = 0, .cap = fsize + 1, .limit = fsize};
    int rc = fmp4_write_fragment(&out, &frag);
    if (rc != 0 || out.data != (char *)b->data || out.len != fsize) {
        log_error("hls %s: cannot write a part: %s", hs->slug, strerror(rc ? -rc : EINVAL));
        free(b);
        goto out;
    }
    b->refs = 1;
    b->len = fsize;
    b->etag[0] = '\0';
    if (seg->nparts == seg->capparts) {
        int c = seg->capparts ? seg->capparts * 2 : 8;
        struct hls_part *n = realloc(seg->parts, (size_t)c * sizeof *n);
        if (!n) {
            hls_blob_unref(b);
            goto out;
        }
        seg->parts = n;
        seg->capparts = c;
    }
    snprintf(b->etag, sizeof b->etag, "\"%s-%" PRIu64 ".%d\"", hs->sid, seg->msn, seg->nparts);
    struct hls_part *p = &seg->parts[seg->nparts++];
    p->blob = b;
    p->off = seg->bytes;
    p->len = b->len;
    p->duration = end_t - hs->part_start;
    if (p->duration <= 0)
        p->duration = 1;
    /* RFC 8216bis 4.4.4.9: YES when the part contains an independent frame
     * (a keyframe mid-part happens when the GOP is not a multiple of parts). */
    p->independent = !hs->has_video;
    for (size_t i = 0; i < hs->npv && !p->independent; i++)
        p->independent = hs->pv[i].f->keyframe;
    seg->duration = end_t - seg->start;
    seg->bytes += b->len;
    hs->part_start = end_t;
    hs->version++;
    parts_trim(hs);
out:
    free(vs);
    free(as);
    pending_clear(hs);
}

static void close_segment(struct hls_stream *hs)
{
    struct hls_segment *seg = open_segment(hs);
    if (!seg)
        return;
    if (seg->nparts == 0) {
        /* Nothing was written into it: forget it. */
        hs->nsegs--;
        hs->next_msn--;
        if (seg->discontinuity)
            hs->next_disc = true;
        free(seg->parts);
        return;
    }
    /* The segment is its parts end to end: one copy, straight into its blob. */
    seg->blob = malloc(sizeof *seg->blob + seg->bytes + 1);
    if (seg->blob) {
        seg->blob->refs = 1;
        seg->blob->len = 0;
        for (int i = 0; i < seg->nparts; i++) {
            memcpy(seg->blob->data + seg->blob->len, seg->parts[i].blob->data, seg->parts[i].blob->len);
            seg->blob->len += seg->parts[i].blob->len;
        }
    }
    if (seg->blob)
        snprintf(seg->blob->etag, sizeof seg->blob->etag, "\"%s-%" PRIu64 "\"", hs->sid, seg->msn);
    seg->complete = true;
    if (seg->duration > hs->max_seg_duration)
        hs->max_seg_duration = seg->duration;
    /* Bandwidth: peak over segments, average over the stream. */
    if (seg->duration > 0) {
        uint64_t bps = (uint64_t)((double)seg->bytes * 8.0 * MEDIA_TIMEBASE / (double)seg->duration);
        if (bps > hs->peak_bps)
            hs->peak_bps = bps;
        hs->avg_bits += seg->bytes * 8;
        hs->avg_dur += seg->duration;
    }
    hs->version++;
    window_trim(hs);
}

static void make_init(struct hls_stream *hs)
{
    struct buf out;
    buf_init(&out, 0);
    int rc = fmp4_write_init(&out, hs->has_video ? &hs->video : NULL, hs->has_audio ? &hs->audio : NULL);
    if (rc != 0) {
        log_error("hls %s: cannot write the init segment: %s", hs->slug, strerror(-rc));
        buf_free(&out);
        return;
    }
    struct hls_blob *b = blob_from_buf(&out);
    buf_free(&out);
    if (!b)
        return;
    if (hs->ninits == (int)(sizeof hs->inits / sizeof hs->inits[0])) {
        hls_blob_unref(hs->inits[0]);
        memmove(hs->inits, hs->inits + 1, (size_t)(hs->ninits - 1) * sizeof hs->inits[0]);
        memmove(hs->init_ids, hs->init_ids + 1, (size_t)(hs->ninits - 1) * sizeof hs->init_ids[0]);
        hs->ninits--;
    }
    hs->init_id++;
    snprintf(b->etag, sizeof b->etag, "\"%s-i%u\"", hs->sid, hs->init_id);
    hs->inits[hs->ninits] = b;
    hs->init_ids[hs->ninits] = hs->init_id;
    hs->ninits++;
    hs->init = b;
    hs->version++;
}

struct hls_blob *hls_init_blob(struct hls_stream *hs, unsigned id)
{
    for (int i = 0; i < hs->ninits; i++)
        if (hs->init_ids[i] == id)
            return hs->inits[i];
    return NULL;
}

/* --- feeding ----------------------------------------------------------------- */

/* Commit the held video frame with its duration known to end at t. */
static void commit_held(struct hls_stream *hs, int64_t t)
{
    if (!hs->held)
        return;
    struct frame *p = hs->held;
    int64_t d = t - hs->held_t;
    if (d > 0)
        hs->last_video_dur = d;
    pending_add(&hs->pv, &hs->npv, &hs->cappv, p, hs->held_t, hs->held_t + frame_cts(p));
    if (t > hs->end_t)
        hs->end_t = t;
    frame_unref(p);
    hs->held = NULL;
}

/* Close the open part and segment where the last sample ends. */
void hls_stream_flush(struct hls_stream *hs)
{
    int64_t est = hs->last_video_dur > 0 ? hs->last_video_dur : MEDIA_TIMEBASE / 30;
    if (hs->held) {
        /* The last frame's duration is a guess; if it would take the part
         * past PART-TARGET, it goes into a part of its own. */
        if ((hs->npv || hs->npa) && hs->held_t > hs->part_start &&
            hs->held_t + est - hs->part_start > hs->hls->cfg.part_target)
            close_part(hs, hs->held_t);
        commit_held(hs, hs->held_t + est);
    }
    int64_t a_end = 0;
    if (hs->npa) {
        uint32_t fdur = hs->audio.frame_samples ? hs->audio.frame_samples : 1024;
        a_end = media_ts_rescale(hs->pa[hs->npa - 1].dts + fdur, hs->audio_timescale, MEDIA_TIMEBASE);
        if (!hs->has_video && a_end > hs->end_t)
            hs->end_t = a_end;
    }
    /* The part ends with its video (the cut rule kept that within
     * PART-TARGET); stretching the last frame over trailing audio could pass
     * it. The next run starts after every sample, audio included. */
    int64_t end = hs->end_t > hs->part_start ? hs->end_t : hs->part_start + 1;
    close_part(hs, end);
    close_segment(hs);
    hs->end_t = a_end > end ? a_end : end;
    hls_wake(hs);
}

void hls_stream_on_config(struct hls_stream *hs, const struct codec_config *video,
                          const struct codec_config *audio)
{
    bool changed = (!!video != hs->has_video) || (!!audio != hs->has_audio) ||
                   (video && !codec_config_equal(video, &hs->video)) ||
                   (audio && !codec_config_equal(audio, &hs->audio));
    if (!changed)
        return;
    if (hs->started) {
        /* New codec parameters: what is open ends here; the next segment
         * names the new init segment and restarts at a keyframe. */
        hls_stream_flush(hs);
        hs->next_disc = true;
        hs->started = false;
    }
    if (hs->has_video)
        codec_config_free(&hs->video);
    if (hs->has_audio)
        codec_config_free(&hs->audio);
    hs->has_video = hs->has_audio = false;
    if (video && codec_config_copy(&hs->video, video) == 0)
        hs->has_video = true;
    if (audio && codec_config_copy(&hs->audio, audio) == 0)
        hs->has_audio = true;
    hs->audio_timescale = hs->has_audio ? fmp4_timescale(&hs->audio) : 0;
    if (hs->has_audio && hs->audio_timescale == 0)
        hs->has_audio = false;
    if (hs->has_video || hs->has_audio)
        make_init(hs);
}

static void begin_at(struct hls_stream *hs, struct frame *f)
{
    if (hs->nsegs == 0 && hs->next_msn == 0) {
        hs->in_base = f->dts;
        hs->out_base = 0;
        hs->wall_base_ms = now_ms();
    } else {
        /* After a discontinuity: continue the output timeline. The dates go
         * on from now (the publisher was away), never back over the last
         * segment's (RFC 8216bis 6.2.1: no ambiguous mapping). */
        int64_t t0 = hs->end_t;
        hs->in_base = f->dts;
        hs->out_base = t0;
        int64_t wall = now_ms() - t0 / (MEDIA_TIMEBASE / 1000);
        if (wall > hs->wall_base_ms)
            hs->wall_base_ms = wall;
    }
    hs->started = true;
    hs->audio_next = -1;
    start_segment(hs, hs->out_base);
}

void hls_stream_on_frame(struct hls_stream *hs, struct frame *f)
{
    if (hs->ended || (!hs->has_video && !hs->has_audio))
        return;
    bool is_video = f->kind == MEDIA_KIND_VIDEO;
    if ((is_video && !hs->has_video) || (!is_video && !hs->has_audio))
        return; /* a track whose configuration has not come */
    if (f->discontinuity && hs->started) {
        hls_stream_flush(hs);
        hs->next_disc = true;
        hs->started = false;
    }
    const struct hls_config *cfg = &hs->hls->cfg;
    bool leader = is_video || !hs->has_video;
    if (!hs->started) {
        if (!leader || (is_video && !f->keyframe))
            return; /* wait for a random access point */
        begin_at(hs, f);
    }
    int64_t t = f->dts - hs->in_base + hs->out_base;

    if (!is_video) {
        if (t < hs->seg_start && hs->npa == 0 && hs->has_video && hs->npv == 0 && !hs->held)
            return;
        int64_t ta = media_ts_rescale(t, MEDIA_TIMEBASE, hs->audio_timescale);
        uint32_t fdur = hs->audio.frame_samples ? hs->audio.frame_samples : 1024;
        if (hs->audio_next >= 0) {
            int64_t diff = ta - hs->audio_next;
            if (diff < 2 * (int64_t)fdur && diff > -2 * (int64_t)fdur)
                ta = hs->audio_next; /* lay frames end to end */
            else if (diff < 0)
                ta = hs->audio_next; /* overlap: never go back in time */
        }
        if (ta < 0)
            ta = 0;
        if (!hs->has_video) {
            /* Audio leads: cut before this frame when needed. */
            int64_t ta90 = media_ts_rescale(ta, hs->audio_timescale, MEDIA_TIMEBASE);
            int64_t fd90 = media_ts_rescale(fdur, hs->audio_timescale, MEDIA_TIMEBASE);
            if (hs->npa) {
                if (ta90 - hs->seg_start >= cfg->segment_target) {
                    close_part(hs, ta90);
                    close_segment(hs);
                    start_segment(hs, ta90);
                    hls_wake(hs);
                } else if (ta90 - hs->part_start + fd90 > cfg->part_target) {
                    close_part(hs, ta90);
                    hls_wake(hs);
                }
            }
            if (ta90 + fd90 > hs->end_t)
                hs->end_t = ta90 + fd90;
        }
        pending_add(&hs->pa, &hs->npa, &hs->cappa, f, ta, ta);
        hs->audio_next = ta + fdur;
        return;
    }

    /* Video. */
    if (hs->held && t < hs->held_t)
        t = hs->held_t + 1; /* ingest keeps dts increasing; be safe anyway */
    if (hs->held && hs->held_t > hs->part_start && t - hs->part_start > cfg->part_target &&
        (hs->npv || hs->npa)) {
        /* The held frame lasted longer than estimated (millisecond timestamps
         * jitter): it would take the part past PART-TARGET, which RFC 8216bis
         * 4.4.4.9 forbids. End the part before it; it opens the next one. */
        close_part(hs, hs->held_t);
        hls_wake(hs);
    }
    commit_held(hs, t);
    if (hs->npv || hs->npa) {
        int64_t est = hs->last_video_dur > 0 ? hs->last_video_dur : 0;
        if (f->keyframe && t - hs->seg_start >= cfg->segment_target) {
            close_part(hs, t);
            close_segment(hs);
            start_segment(hs, t);
            hls_wake(hs);
        } else if (t - hs->part_start + est > cfg->part_target + est / 4 ||
                   (f->keyframe && (t - hs->part_start) * 100 >= cfg->part_target * 85)) {
            /* Also before a keyframe when the part is long enough already,
             * so that a keyframe starts its part wherever the rules allow. */
            close_part(hs, t);
            hls_wake(hs);
        }
    }
    hs->held = frame_ref(f);
    hs->held_t = t;
    if (hs->vframes++ == 0)
        hs->vfirst_t = t;
    hs->vlast_t = t;
}

void hls_stream_finish(struct hls_stream *hs)
{
    if (hs->ended)
        return;
    /* Ended first: the flush wakes parked requests, and their answer is the
     * final playlist (ENDLIST, no preload hint). */
    hs->ended = true;
    hls_stream_flush(hs);
    hs->version++;
    hls_wake(hs);
}

/* --- stream consumer --------------------------------------------------------- */

static struct hls_stream *from_consumer(struct stream_consumer *c) { return c->ud; }

static void c_on_config(struct stream_consumer *c, struct stream *s)
{
    hls_stream_on_config(from_consumer(c), s->video.present ? &s->video.config : NULL,
                         s->audio.present ? &s->audio.config : NULL);
}

static void c_on_frame(struct stream_consumer *c, struct stream *s, struct frame *f)
{
    hls_stream_on_frame(from_consumer(c), f);
}

static void c_on_pause(struct stream_consumer *c, struct stream *s)
{
    struct hls_stream *hs = from_consumer(c);
    hls_stream_flush(hs);
    hs->paused = true;
}

static void c_on_resume(struct stream_consumer *c, struct stream *s)
{
    struct hls_stream *hs = from_consumer(c);
    hs->paused = false;
    hs->next_disc = true;
    hs->started = false;
}

static void c_on_end(struct stream_consumer *c, struct stream *s)
{
    struct hls_stream *hs = from_consumer(c);
    hls_stream_finish(hs);
    hs->stream = NULL;
    hls_linger(hs);
}

static const struct stream_consumer_ops consumer_ops = {
    .on_config = c_on_config,
    .on_frame = c_on_frame,
    .on_pause = c_on_pause,
    .on_resume = c_on_resume,
    .on_end = c_on_end,
};

struct hls_stream *hls_stream_new(struct hls *hls, const char *slug)
{
    struct hls_stream *hs = calloc(1, sizeof *hs);
    if (!hs)
        return NULL;
    hs->hls = hls;
    util_strlcpy(hs->slug, slug, sizeof hs->slug);
    uint32_t r = randombytes_random();
    snprintf(hs->sid, sizeof hs->sid, "%08x", r);
    hs->audio_next = -1;
    hs->consumer.ops = &consumer_ops;
    hs->consumer.ud = hs;
    hs->consumer.name = "hls";
    uv_timer_init(hls->loop, &hs->timer);
    hs->timer.data = hs;
    hs->next = hls->streams;
    hls->streams = hs;
    return hs;
}

static void on_hs_closed(uv_handle_t *h)
{
    struct hls_stream *hs = h->data;
    pending_clear(hs);
    free(hs->pv);
    free(hs->pa);
    frame_unref(hs->held);
    for (size_t i = 0; i < hs->nsegs; i++)
        segment_free(&hs->segs[i]);
    free(hs->segs);
    for (int i = 0; i < hs->ninits; i++)
        hls_blob_unref(hs->inits[i]);
    hls_blob_unref(hs->pl_full);
    hls_blob_unref(hs->pl_skip);
    hls_blob_unref(hs->pl_master);
    if (hs->has_video)
        codec_config_free(&hs->video);
    if (hs->has_audio)
        codec_config_free(&hs->audio);
    free(hs);
}

/* Remove from the list and free (parked requests are answered first). */
void hls_stream_destroy(struct hls_stream *hs)
{
    struct hls *hls = hs->hls;
    struct hls_stream **pp = &hls->streams;
    while (*pp && *pp != hs)
        pp = &(*pp)->next;
    if (*pp)
        *pp = hs->next;
    if (hs->stream)
        stream_consumer_detach(&hs->consumer);
    hs->stream = NULL;
    hs->ended = true;
    hls_unpark_all(hs);
    uv_timer_stop(&hs->timer);
    uv_close((uv_handle_t *)&hs->timer, on_hs_closed);
}

struct hls_stream *hls_find(struct hls *hls, const char *slug)
{
    for (struct hls_stream *hs = hls->streams; hs; hs = hs->next)
        if (strcmp(hs->slug, slug) == 0)
            return hs;
    return NULL;
}

static void on_stream_start(struct stream *s, void *ud)
{
    struct hls *hls = ud;
    struct hls_stream *old = hls_find(hls, s->slug);
    if (old)
        hls_stream_destroy(old); /* an ended session's playlist: a new one replaces it */
    struct hls_stream *hs = hls_stream_new(hls, s->slug);
    if (!hs) {
        log_error("hls %s: out of memory", s->slug);
        return;
    }
    hs->stream = s;
    stream_consumer_attach(s, &hs->consumer, false, 0);
}

struct hls *hls_new(uv_loop_t *loop, const struct hls_config *cfg, struct stream_hub *hub)
{
    struct hls *hls = calloc(1, sizeof *hls);
    if (!hls)
        return NULL;
    hls->loop = loop;
    hls->cfg = *cfg;
    hls->hub = hub;
    struct stream_hub_hooks hooks = {.on_stream_start = on_stream_start, .ud = hls};
    stream_hub_add_hooks(hub, &hooks);
    return hls;
}

void hls_free(struct hls *hls)
{
    if (!hls)
        return;
    while (hls->streams)
        hls_stream_destroy(hls->streams);
    free(hls);
}

/* --- playlists ----------------------------------------------------------------- */

static void fmt_pdt(int64_t ms, char *out, size_t n)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static double secs(int64_t ts) { return (double)ts / MEDIA_TIMEBASE; }

int hls_render_media(struct hls_stream *hs, bool skip, struct buf *out)
{
    const struct hls_config *cfg = &hs->hls->cfg;
    int64_t td = hls_target_duration(hs);
    double part_target = secs(cfg->part_target);
    double skip_until = 6.0 * (double)td;
    buf_printf(out,
               "#EXTM3U\n"
               "#EXT-X-VERSION:%d\n"
               "#EXT-X-TARGETDURATION:%" PRId64 "\n"
               "#EXT-X-MEDIA-SEQUENCE:%" PRIu64 "\n"
               "#EXT-X-DISCONTINUITY-SEQUENCE:%u\n"
               "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=%.1f,PART-HOLD-BACK=%.3f\n"
               "#EXT-X-PART-INF:PART-TARGET=%.3f\n"
               "#EXT-X-INDEPENDENT-SEGMENTS\n",
               /* EXT-X-SKIP needs version 9; everything else here, 6. */
               skip && !hs->ended ? 9 : 6, td, hs->nsegs ? hs->segs[0].msn : hs->next_msn, hs->disc_seq, skip_until,
               3.0 * part_target, part_target);

    /* Delta update: skip complete segments older than CAN-SKIP-UNTIL. */
    size_t first = 0;
    if (skip && !hs->ended) { /* RFC 8216bis 6.2.5.1: ignored with EXT-X-ENDLIST */
        int64_t from_end = 0;
        size_t i = hs->nsegs;
        while (i > 0) {
            from_end += hs->segs[i - 1].duration;
            if (secs(from_end) > skip_until)
                break;
            i--;
        }
        /* segs[i - 1] crosses the line; skip those before it. */
        if (i > 1)
            first = i - 1;
        if (first > 0)
            buf_printf(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS=%zu\n", first);
    }

    unsigned map = 0;
    for (size_t i = first; i < hs->nsegs; i++) {
        struct hls_segment *s = &hs->segs[i];
        if (s->discontinuity && i > 0)
            buf_append_str(out, "#EXT-X-DISCONTINUITY\n");
        if (s->init_id != map) {
            buf_printf(out, "#EXT-X-MAP:URI=\"init-%s-%u.mp4\"\n", hs->sid, s->init_id);
            map = s->init_id;
        }
        char pdt[64];
        fmt_pdt(s->pdt_ms, pdt, sizeof pdt);
        buf_printf(out, "#EXT-X-PROGRAM-DATE-TIME:%s\n", pdt);
        for (int k = 0; !s->parts_dropped && k < s->nparts; k++) {
            struct hls_part *p = &s->parts[k];
            buf_printf(out, "#EXT-X-PART:DURATION=%.5f,URI=\"part-%s-%" PRIu64 ".%d.m4s\"%s\n",
                       secs(p->duration), hs->sid, s->msn, k,
                       p->independent ? ",INDEPENDENT=YES" : "");
        }
        if (s->complete)
            buf_printf(out, "#EXTINF:%.5f,\nseg-%s-%" PRIu64 ".m4s\n", secs(s->duration), hs->sid,
                       s->msn);
    }
    if (hs->ended) {
        buf_append_str(out, "#EXT-X-ENDLIST\n");
    } else if (hs->nsegs) {
        /* The part that comes next: in the open segment, or the first of the next. */
        struct hls_segment *last = &hs->segs[hs->nsegs - 1];
        if (last->complete)
            buf_printf(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-%s-%" PRIu64 ".0.m4s\"\n",
                       hs->sid, last->msn + 1);
        else
            buf_printf(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-%s-%" PRIu64 ".%d.m4s\"\n",
                       hs->sid, last->msn, last->nparts);
    }
    return out->data ? 0 : -ENOMEM;
}

/* Frames over time since the start, snapped to a common rate when close:
 * RTMP's millisecond timestamps make single frame durations useless here. */
static double measured_fps(const struct hls_stream *hs)
{
    if (hs->vframes < 2 || hs->vlast_t <= hs->vfirst_t)
        return (double)MEDIA_TIMEBASE / (double)hs->last_video_dur;
    double fps = (double)(hs->vframes - 1) * MEDIA_TIMEBASE / (double)(hs->vlast_t - hs->vfirst_t);
    static const double common[] = {23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60, 100, 119.88, 120};
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        if (fps > common[i] * 0.99 && fps < common[i] * 1.01)
            return common[i];
    return fps;
}

int hls_render_master(struct hls_stream *hs, struct buf *out)
{
    uint64_t peak = hs->peak_bps;
    uint64_t avg = hs->avg_dur > 0 ? (uint64_t)((double)hs->avg_bits * MEDIA_TIMEBASE / (double)hs->avg_dur) : 0;
    if (peak == 0) {
        /* No complete segment yet: measure what the open one holds. */
        struct hls_segment *s = open_segment(hs);
        if (s && s->duration > 0)
            peak = (uint64_t)((double)s->bytes * 8.0 * MEDIA_TIMEBASE / (double)s->duration);
    }
    if (peak == 0)
        peak = 1;
    if (avg == 0 || avg > peak)
        avg = peak;
    char codecs[2 * CODEC_STRING_MAX + 2] = "";
    if (hs->has_video)
        snprintf(codecs, sizeof codecs, "%s", hs->video.codecs);
    if (hs->has_audio) {
        size_t n = strlen(codecs);
        snprintf(codecs + n, sizeof codecs - n, "%s%s", n ? "," : "", hs->audio.codecs);
    }
    buf_printf(out,
               "#EXTM3U\n"
               "#EXT-X-INDEPENDENT-SEGMENTS\n"
               "#EXT-X-STREAM-INF:BANDWIDTH=%" PRIu64 ",AVERAGE-BANDWIDTH=%" PRIu64 ",CODECS=\"%s\"",
               peak, avg, codecs);
    if (hs->has_video && hs->video.width && hs->video.height)
        buf_printf(out, ",RESOLUTION=%ux%u", hs->video.width, hs->video.height);
    if (hs->has_video && hs->video.fps_num && hs->video.fps_den)
        buf_printf(out, ",FRAME-RATE=%.3f", (double)hs->video.fps_num / hs->video.fps_den);
    else if (hs->has_video && hs->last_video_dur > 0)
        buf_printf(out, ",FRAME-RATE=%.3f", measured_fps(hs));
    buf_append_str(out, "\nindex.m3u8\n");
    return out->data ? 0 : -ENOMEM;
}

/* --- blocking decisions ----------------------------------------------------------- */

int hls_playlist_ready(const struct hls_stream *hs, int64_t msn, int64_t part)
{
    if (hs->ended)
        return 1;
    if (hs->nsegs == 0)
        return msn > (int64_t)hs->next_msn + 2 ? -1 : 0;
    const struct hls_segment *last = &hs->segs[hs->nsegs - 1];
    int64_t last_complete = last->complete ? (int64_t)last->msn : (int64_t)last->msn - 1;
    if (msn < (int64_t)hs->segs[0].msn)
        return 1;
    if (part < 0) {
        if (msn > last_complete + 2)
            return -1;
        return msn <= last_complete ? 1 : 0;
    }
    /* A part: ready when segment msn has more than `part` parts, or a later
     * segment has a part. */
    if (msn < last_complete)
        return 1;
    if (msn == last_complete) {
        const struct hls_segment *s = last->complete ? last : &hs->segs[hs->nsegs - 2];
        if (s->parts_dropped || part < s->nparts)
            return 1;
        /* Past the segment's final part: part 0 of the next (6.2.5.2). */
        msn++;
        part = 0;
    }
    int64_t open_msn = last_complete + 1;
    int nparts_open = last->complete ? 0 : last->nparts;
    /* Advance Part Limit: 3 / PART-TARGET below one second, else 3. */
    int64_t pt = hs->hls->cfg.part_target;
    int64_t apl = pt < MEDIA_TIMEBASE ? 3 * (int64_t)MEDIA_TIMEBASE / pt : 3;
    if (msn == open_msn) {
        if (part < nparts_open)
            return 1;
        return part - (nparts_open - 1) > apl ? -1 : 0;
    }
    if (msn > last_complete + 2)
        return -1;
    /* At least part + 1 parts past the last one. */
    return part + 1 > apl ? -1 : 0;
}

int hls_part_ready(const struct hls_stream *hs, uint64_t msn, int part)
{
    for (size_t i = 0; i < hs->nsegs; i++) {
        const struct hls_segment *s = &hs->segs[i];
        if (s->msn != msn)
            continue;
        if (part < s->nparts)
            return 1;
        return !s->complete && !hs->ended && part == s->nparts ? 0 : -1;
    }
    if (hs->ended)
        return -1;
    /* The first part of the segment after the last complete one. */
    if (hs->nsegs && hs->segs[hs->nsegs - 1].complete && msn == hs->segs[hs->nsegs - 1].msn + 1 &&
        part == 0)
        return 0;
    if (hs->nsegs == 0 && msn == hs->next_msn && part == 0)
        return 0;
    return -1;
}
