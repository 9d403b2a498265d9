/*
 * Streams, their GOP caches and their consumers. Everything here runs on the
 * loop thread except stream_queue_pop, which queued consumers call from their
 * own threads; the queue has its own mutex and holds only frame references,
 * which are safe to share (frames are immutable once published).
 */
#include "media/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

/* A GOP cache bigger than this (a broken encoder that never sends a keyframe)
 * is dropped rather than grown without end. */
#define GOP_CACHE_MAX_BYTES (64u * 1024 * 1024)
#define GOP_CACHE_MAX_FRAMES 8192
/* Audio-only streams: keep this much audio for late joiners. */
#define AUDIO_ONLY_CACHE (MEDIA_TIMEBASE / 2)
#define QUEUE_MAX_FRAMES 65536

struct stream_hub {
    uv_loop_t *loop;
    uint64_t grace_ms;
    struct stream *streams;
    size_t count;
    struct stream_hub_hooks hooks[8];
    int nhooks;
};

struct stream_hub *stream_hub_new(uv_loop_t *loop, uint64_t reconnect_grace_ms)
{
    struct stream_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->loop = loop;
    hub->grace_ms = reconnect_grace_ms;
    return hub;
}

void stream_hub_add_hooks(struct stream_hub *hub, const struct stream_hub_hooks *hooks)
{
    if (hub->nhooks < (int)(sizeof hub->hooks / sizeof hub->hooks[0]))
        hub->hooks[hub->nhooks++] = *hooks;
}

struct stream *stream_hub_find(struct stream_hub *hub, const char *slug)
{
    for (struct stream *s = hub->streams; s; s = s->next)
        if (strcmp(s->slug, slug) == 0)
            return s;
    return NULL;
}

void stream_hub_foreach(struct stream_hub *hub, void (*fn)(struct stream *s, void *ud), void *ud)
{
    struct stream *next;
    for (struct stream *s = hub->streams; s; s = next) {
        next = s->next;
        fn(s, ud);
    }
}

size_t stream_hub_count(struct stream_hub *hub) { return hub->count; }

void stream_hub_free(struct stream_hub *hub)
{
    if (!hub)
        return;
    while (hub->streams)
        stream_end(hub->streams);
    free(hub);
}

/* --- the GOP cache -------------------------------------------------------- */

static void gop_clear(struct stream *s)
{
    for (size_t i = 0; i < s->gop_len; i++)
        frame_unref(s->gop[i]);
    s->gop_len = 0;
    s->gop_bytes = 0;
}

static void gop_add(struct stream *s, struct frame *f)
{
    bool video_key = f->kind == MEDIA_KIND_VIDEO && f->keyframe;
    if (video_key) {
        gop_clear(s);
    } else if (!s->video.present) {
        /* Audio only: keep a short window. */
        size_t drop = 0;
        while (drop < s->gop_len && f->dts - s->gop[drop]->dts > AUDIO_ONLY_CACHE)
            drop++;
        if (drop) {
            for (size_t i = 0; i < drop; i++) {
                s->gop_bytes -= s->gop[i]->size;
                frame_unref(s->gop[i]);
            }
            memmove(s->gop, s->gop + drop, (s->gop_len - drop) * sizeof *s->gop);
            s->gop_len -= drop;
        }
    } else if (s->gop_len == 0) {
        return; /* video stream, no keyframe yet: nothing a newcomer could decode */
    }
    if (s->gop_len >= GOP_CACHE_MAX_FRAMES || s->gop_bytes + f->size > GOP_CACHE_MAX_BYTES) {
        log_warn("stream %s: GOP cache over %u frames or %u MiB without a keyframe; dropped",
                 s->slug, GOP_CACHE_MAX_FRAMES, GOP_CACHE_MAX_BYTES >> 20);
        gop_clear(s);
        return;
    }
    if (s->gop_len == s->gop_cap) {
        size_t cap = s->gop_cap ? s->gop_cap * 2 : 256;
        struct frame **n = realloc(s->gop, cap * sizeof *n);
        if (!n) {
            gop_clear(s);
            return;
        }
        s->gop = n;
        s->gop_cap = cap;
    }
    s->gop[s->gop_len++] = frame_ref(f);
    s->gop_bytes += f->size;
}

/* --- queues ------------------------------------------------------------------ */

static int queue_init(struct stream_queue *q, int64_t max_span)
{
    memset(q, 0, sizeof *q);
    q->max_span = max_span;
    q->cap = 256;
    q->ring = calloc(q->cap, sizeof *q->ring);
    if (!q->ring)
        return -ENOMEM;
    pthread_mutex_init(&q->lock, NULL);
    return 0;
}

static void queue_destroy(struct stream_queue *q)
{
    if (!q->ring)
        return;
    for (size_t i = 0; i < q->len; i++)
        frame_unref(q->ring[(q->head + i) % q->cap]);
    free(q->ring);
    q->ring = NULL;
    pthread_mutex_destroy(&q->lock);
}

static struct frame *queue_at(struct stream_queue *q, size_t i) { return q->ring[(q->head + i) % q->cap]; }

static void queue_drop_front(struct stream_queue *q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        frame_unref(queue_at(q, i));
    q->head = (q->head + n) % q->cap;
    q->len -= n;
    q->dropped += n;
}

/*
 * Append; when the queue spans more than max_span, drop from the front up to
 * the first video keyframe that brings it back within bounds, so what is
 * left still starts at a random access point. Returns frames dropped.
 */
static size_t queue_push(struct stream_queue *q, struct frame *f, bool has_video)
{
    size_t dropped = 0;
    pthread_mutex_lock(&q->lock);
    bool is_key = has_video ? (f->kind == MEDIA_KIND_VIDEO && f->keyframe) : true;
    if (q->waiting_key && !is_key) {
        /* Counted, not reported: the drop that started the wait was logged;
         * a line per frame until the keyframe would flood the log. */
        q->dropped++;
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    q->waiting_key = false;
    if (q->len == q->cap) {
        if (q->cap >= QUEUE_MAX_FRAMES) {
            dropped = q->len;
            queue_drop_front(q, q->len);
            q->waiting_key = !is_key;
            if (!is_key) {
                pthread_mutex_unlock(&q->lock);
                return dropped + 1;
            }
        } else {
            size_t cap = q->cap * 2;
            struct frame **n = malloc(cap * sizeof *n);
            if (!n) {
                pthread_mutex_unlock(&q->lock);
                return 1;
            }
            for (size_t i = 0; i < q->len; i++)
                n[i] = queue_at(q, i);
            free(q->ring);
            q->ring = n;
            q->cap = cap;
            q->head = 0;
        }
    }
    q->ring[(q->head + q->len) % q->cap] = frame_ref(f);
    q->len++;
    if (q->len > 1 && f->dts - queue_at(q, 0)->dts > q->max_span) {
        /* Find the first keyframe from which the span is acceptable. */
        size_t cut = q->len; /* default: everything but nothing decodable left */
        for (size_t i = 1; i < q->len; i++) {
            struct frame *g = queue_at(q, i);
            bool key = has_video ? (g->kind == MEDIA_KIND_VIDEO && g->keyframe) : true;
            if (key && f->dts - g->dts <= q->max_span) {
                cut = i;
                break;
            }
        }
        if (cut == q->len) {
            dropped += q->len;
            queue_drop_front(q, q->len);
            q->waiting_key = true;
        } else {
            dropped += cut;
            queue_drop_front(q, cut);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return dropped;
}

struct frame *stream_queue_pop(struct stream_consumer *c)
{
    struct stream_queue *q = &c->queue;
    struct frame *f = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->len) {
        f = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
    pthread_mutex_unlock(&q->lock);
    return f;
}

/* --- streams -------------------------------------------------------------------- */

/*
 * Every consumer of s, in a way that lets a callback detach any consumer
 * (itself, or one further down the list): detach moves s->iter_next past the
 * one it unlinks. Loops over one stream's consumers do not nest.
 */
#define FOREACH_CONSUMER(s, c)                                                          \
    for (struct stream_consumer *c = (s)->consumers; c && ((s)->iter_next = c->next, true); \
         c = (s)->iter_next)

static void on_stream_timer_closed(uv_handle_t *h)
{
    struct stream *s = h->data;
    gop_clear(s);
    free(s->gop);
    codec_config_free(&s->video.config);
    codec_config_free(&s->audio.config);
    free(s->metadata);
    free(s);
}

void stream_ref(struct stream *s) { s->refs++; }

void stream_unref(struct stream *s)
{
    if (--s->refs > 0)
        return;
    uv_close((uv_handle_t *)&s->grace_timer, on_stream_timer_closed);
}

static void deliver(struct stream *s, struct stream_consumer *c, struct frame *f)
{
    if (!c->queued) {
        if (c->ops->on_frame)
            c->ops->on_frame(c, s, f);
        return;
    }
    size_t dropped = queue_push(&c->queue, f, s->video.present);
    if (dropped)
        log_warn("stream %s: consumer %s is too slow; dropped %zu frames (whole GOPs)", s->slug,
                 c->name ? c->name : "?", dropped);
    if (c->ops->on_ready)
        c->ops->on_ready(c);
}

int stream_publish_begin(struct stream_hub *hub, const char *slug, int64_t channel_id,
                         struct stream **out, bool *resumed)
{
    struct stream *s = stream_hub_find(hub, slug);
    *resumed = false;
    if (s && s->state == STREAM_LIVE)
        return -EBUSY;
    if (s && s->state == STREAM_GRACE) {
        uv_timer_stop(&s->grace_timer);
        s->state = STREAM_LIVE;
        s->next_discontinuity = true;
        gop_clear(s); /* the old GOP's times belong to the previous publisher */
        *resumed = true;
        *out = s;
        log_info("stream %s: publisher is back; continuing with a discontinuity", slug);
        FOREACH_CONSUMER(s, c)
            if (c->ops->on_resume)
                c->ops->on_resume(c, s);
        return 0;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->hub = hub;
    util_strlcpy(s->slug, slug, sizeof s->slug);
    s->channel_id = channel_id;
    s->state = STREAM_LIVE;
    s->started_unix = util_now_unix();
    s->started_ns = util_mono_ns();
    s->refs = 1;
    uv_timer_init(hub->loop, &s->grace_timer);
    s->grace_timer.data = s;
    s->next = hub->streams;
    hub->streams = s;
    hub->count++;
    *out = s;
    for (int i = 0; i < hub->nhooks; i++)
        if (hub->hooks[i].on_stream_start)
            hub->hooks[i].on_stream_start(s, hub->hooks[i].ud);
    return 0;
}

static void on_grace_timeout(uv_timer_t *t)
{
    struct stream *s = t->data;
    log_info("stream %s: publisher did not come back within the grace period; stream ended",
             s->slug);
    stream_end(s);
}

void stream_publish_end(struct stream *s)
{
    if (s->state != STREAM_LIVE)
        return;
    if (s->hub->grace_ms == 0) {
        stream_end(s);
        return;
    }
    s->state = STREAM_GRACE;
    FOREACH_CONSUMER(s, c)
        if (c->ops->on_pause)
            c->ops->on_pause(c, s);
    uv_timer_start(&s->grace_timer, on_grace_timeout, s->hub->grace_ms, 0);
}

void stream_end(struct stream *s)
{
    if (s->state == STREAM_ENDED)
        return;
    s->state = STREAM_ENDED;
    uv_timer_stop(&s->grace_timer);
    struct stream_hub *hub = s->hub;
    FOREACH_CONSUMER(s, c)
        if (c->ops->on_end)
            c->ops->on_end(c, s);
    while (s->consumers)
        stream_consumer_detach(s->consumers);
    for (int i = 0; i < hub->nhooks; i++)
        if (hub->hooks[i].on_stream_end)
            hub->hooks[i].on_stream_end(s, hub->hooks[i].ud);
    struct stream **pp = &hub->streams;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = s->next;
        hub->count--;
    }
    gop_clear(s);
    stream_unref(s);
}

int stream_set_config(struct stream *s, const struct codec_config *cfg)
{
    struct stream_track *t =
        media_codec_kind(cfg->codec) == MEDIA_KIND_AUDIO ? &s->audio : &s->video;
    if (t->present && codec_config_equal(&t->config, cfg))
        return 0;
    struct codec_config copy;
    int rc = codec_config_copy(&copy, cfg);
    if (rc)
        return rc;
    if (t->present) {
        log_info("stream %s: %s configuration changed", s->slug, media_codec_name(cfg->codec));
        codec_config_free(&t->config);
        gop_clear(s); /* old frames do not decode with the new configuration */
    }
    t->config = copy;
    t->present = true;
    s->config_epoch++;
    FOREACH_CONSUMER(s, c)
        if (c->ops->on_config)
            c->ops->on_config(c, s);
    return 0;
}

int stream_set_metadata(struct stream *s, const void *data, size_t len)
{
    if (len > 64 * 1024)
        return -EMSGSIZE;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    free(s->metadata);
    s->metadata = copy;
    s->metadata_len = len;
    return 0;
}

void stream_push(struct stream *s, struct frame *f)
{
    if (s->state == STREAM_ENDED)
        return;
    if (s->next_discontinuity) {
        f->discontinuity = true; /* not yet published: still ours to set */
        s->next_discontinuity = false;
    }
    struct stream_track *t = f->kind == MEDIA_KIND_AUDIO ? &s->audio : &s->video;
    t->last_dts = f->dts;
    t->frames++;
    t->bytes += f->size;
    s->bytes_in += f->size;
    gop_add(s, f);
    FOREACH_CONSUMER(s, c)
        deliver(s, c, f);
}

void stream_consumer_attach(struct stream *s, struct stream_consumer *c, bool queued,
                            int64_t max_span)
{
    c->stream = s;
    c->queued = queued;
    if (queued && queue_init(&c->queue, max_span) != 0) {
        log_error("stream %s: out of memory attaching %s", s->slug, c->name ? c->name : "?");
        c->stream = NULL;
        return;
    }
    c->next = s->consumers;
    s->consumers = c;
    stream_ref(s);
    if ((s->video.present || s->audio.present) && c->ops->on_config)
        c->ops->on_config(c, s);
    for (size_t i = 0; i < s->gop_len; i++)
        deliver(s, c, s->gop[i]);
}

void stream_consumer_detach(struct stream_consumer *c)
{
    struct stream *s = c->stream;
    if (!s)
        return;
    struct stream_consumer **pp = &s->consumers;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (s->iter_next == c)
        s->iter_next = c->next; /* a loop over the consumers is on it */
    c->next = NULL;
    c->stream = NULL;
    if (c->queued)
        queue_destroy(&c->queue);
    stream_unref(s);
}
