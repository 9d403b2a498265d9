/*
 * struct frame: allocation, reference counting, timestamp helpers.
 *
 * The count uses relaxed ordering to take a reference (the taker already holds
 * one, so nothing can be freed under it) and acquire-release to drop one, so
 * that every read another thread made of a published frame happens before the
 * free that follows its last unref.
 */
#include "media/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum media_kind media_codec_kind(enum media_codec codec)
{
    return codec == MEDIA_CODEC_AAC ? MEDIA_KIND_AUDIO : MEDIA_KIND_VIDEO;
}

const char *media_codec_name(enum media_codec codec)
{
    switch (codec) {
    case MEDIA_CODEC_H264: return "h264";
    case MEDIA_CODEC_HEVC: return "hevc";
    case MEDIA_CODEC_AV1: return "av1";
    case MEDIA_CODEC_AAC: return "aac";
    case MEDIA_CODEC_NONE: break;
    }
    return "none";
}

struct frame *frame_alloc(enum media_codec codec, size_t size)
{
    if (size > FRAME_MAX_SIZE)
        return NULL;
    struct frame *f = malloc(sizeof *f + size);
    if (!f)
        return NULL;
    atomic_init(&f->refs, 1);
    f->codec = codec;
    f->kind = media_codec_kind(codec);
    f->dts = f->pts = 0;
    f->keyframe = false;
    f->discontinuity = false;
    f->data = f->storage;
    f->size = size;
    f->capacity = size;
    return f;
}

struct frame *frame_new(enum media_codec codec, const void *data, size_t size)
{
    struct frame *f = frame_alloc(codec, size);
    if (f && size)
        memcpy(f->storage, data, size);
    return f;
}

struct frame *frame_resize(struct frame *f, size_t capacity)
{
    if (capacity > FRAME_MAX_SIZE)
        return NULL;
    struct frame *n = realloc(f, sizeof *n + capacity);
    if (!n)
        return NULL;
    n->data = n->storage;
    n->size = capacity;
    n->capacity = capacity;
    return n;
}

int frame_trim(struct frame *f, size_t offset, size_t size)
{
    if (offset > f->capacity || size > f->capacity - offset)
        return -EINVAL;
    f->data = f->storage + offset;
    f->size = size;
    return 0;
}

struct frame *frame_ref(struct frame *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void frame_unref(struct frame *f)
{
    if (!f)
        return;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}

int64_t media_ts_to_ms(int64_t ts)
{
    const int64_t per_ms = MEDIA_TIMEBASE / 1000;
    int64_t q = ts / per_ms;
    if (ts % per_ms < 0)
        q--;
    return q;
}

int64_t media_ts_rescale(int64_t ts, int64_t from, int64_t to)
{
    if (from <= 0 || to <= 0)
        return 0;
    /* 128-bit intermediate: ts * to overflows int64 long before ts does. */
    __extension__ __int128 n = (__int128)ts * to;
    __extension__ __int128 half = from / 2;
    __extension__ __int128 q = n >= 0 ? (n + half) / from : -((-n + half) / from);
    if (q > INT64_MAX)
        return INT64_MAX;
    if (q < INT64_MIN)
        return INT64_MIN;
    return (int64_t)q;
}
