/*
 * RTMP chunk stream reader and writer. See chunk.h for the calling pattern.
 *
 * A chunk is a basic header (1-3 bytes: fmt and chunk stream id), a message
 * header whose size the fmt gives (type 0: 11 bytes, 1: 7, 2: 3, 3: none;
 * the missing fields are those of the previous header on the same chunk
 * stream), an optional 4-byte extended timestamp, and up to chunk_size bytes
 * of payload. Messages of different chunk streams interleave chunk by chunk,
 * so each chunk stream keeps its own partial message.
 *
 * The reader collects header bytes into a small fixed array, however thin the
 * slices it is fed, and copies payload straight into the chunk stream's
 * buffer. Only complete messages leave it. That buffer is the storage of a
 * struct frame (media/frame.h): an audio or video message is then handed to
 * ingest as it is (rtmp_chunk_take_frame), and the payload is copied once,
 * from the socket buffer into the frame, instead of a second time into a
 * frame of its own.
 *
 * Extended timestamps on type 3 continuation chunks are the one place where
 * encoders disagree: the 2012 spec, FMS, Flash, ffmpeg and OBS repeat the
 * field on every chunk of a message whose header had it; some librtmp
 * versions and the 2009 spec do not. Like SRS we read the four bytes and, if
 * they are not the value the message header carried, give them back as
 * payload (the replay array below). A type 3 chunk that starts a new message
 * always carries the field when the stream's last header had one. The price:
 * when such a continuation has fewer than four payload bytes left, the
 * decision waits for the next chunk's first bytes; no encoder sends a message
 * with an extended timestamp and then waits for our reply before sending more.
 *
 * The limits guard memory, not the protocol: a peer can claim a 16 MiB message
 * on 64 chunk streams in a few hundred bytes, so buffers grow with the bytes
 * that actually arrive and the sum of partial payloads has its own cap.
 */
#include "ingest/rtmp/chunk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_BASIC = 0,   /* first byte of a basic header */
    ST_BASIC_EXT,   /* the 1 or 2 extra bytes of a 2- or 3-byte basic header */
    ST_HEADER,      /* message header */
    ST_EXT,         /* extended timestamp */
    ST_PAYLOAD,     /* chunk data */
    ST_FAILED,
};

static const uint8_t msg_header_size[4] = {11, 7, 3, 0};

#define EXT_TS 0xFFFFFFu
/* Buffers above this are freed after their message rather than kept: a big
 * keyframe should not pin megabytes on every chunk stream that ever had one. */
#define KEEP_CAPACITY (256u * 1024)
/* The first reservation for a message, so that a claimed length is not
 * trusted with memory before the bytes arrive. */
#define FIRST_RESERVE (64u * 1024)

static uint32_t be24(const uint8_t *p) { return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; }

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static void put_be24(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 16);
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    put_be24(p + 1, v);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void rtmp_chunk_limits_default(struct rtmp_chunk_limits *lim)
{
    lim->max_message_size = 16u * 1024 * 1024;
    lim->min_chunk_size = 1;
    lim->max_chunk_size = RTMP_MAX_MESSAGE_LEN;
    lim->max_streams = 64;
    lim->max_pending = 2 * lim->max_message_size;
}

int rtmp_chunk_reader_init(struct rtmp_chunk_reader *r, const struct rtmp_chunk_limits *lim)
{
    memset(r, 0, sizeof *r);
    if (lim)
        r->lim = *lim;
    else
        rtmp_chunk_limits_default(&r->lim);
    if (r->lim.max_streams == 0)
        r->lim.max_streams = 1;
    if (r->lim.min_chunk_size == 0)
        r->lim.min_chunk_size = 1;
    r->chunk_size = RTMP_DEFAULT_CHUNK_SIZE;
    r->state = ST_BASIC;
    r->streams = calloc(r->lim.max_streams, sizeof *r->streams);
    return r->streams ? 0 : -ENOMEM;
}

void rtmp_chunk_reader_free(struct rtmp_chunk_reader *r)
{
    if (r->streams) {
        for (unsigned i = 0; i < r->nstreams; i++)
            frame_unref(r->streams[i].frame);
        free(r->streams);
    }
    r->streams = NULL;
    r->nstreams = 0;
    r->cur = r->emitted = NULL;
}

__attribute__((format(printf, 3, 4))) static int fail(struct rtmp_chunk_reader *r, int rc,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    r->state = ST_FAILED;
    return rc;
}

static struct rtmp_chunk_stream *find_stream(struct rtmp_chunk_reader *r, uint32_t csid)
{
    if (r->cur && r->cur->csid == csid)
        return r->cur;
    for (unsigned i = 0; i < r->nstreams; i++)
        if (r->streams[i].csid == csid)
            return &r->streams[i];
    if (r->nstreams == r->lim.max_streams)
        return NULL;
    struct rtmp_chunk_stream *cs = &r->streams[r->nstreams++];
    memset(cs, 0, sizeof *cs);
    cs->csid = csid;
    return cs;
}

static void drop_partial(struct rtmp_chunk_reader *r, struct rtmp_chunk_stream *cs)
{
    if (!cs->partial)
        return;
    r->pending -= cs->len;
    cs->partial = false;
    cs->len = 0;
}

static void release_payload(struct rtmp_chunk_stream *cs)
{
    if (cs->frame && cs->frame->capacity > KEEP_CAPACITY) {
        frame_unref(cs->frame);
        cs->frame = NULL;
    }
    cs->len = 0;
}

/* Room for `extra` more payload bytes: grows by doubling with what arrives,
 * never past the message's length (so a complete message fits exactly). */
static int payload_reserve(struct rtmp_chunk_stream *cs, size_t extra)
{
    size_t need = cs->len + extra;
    size_t cap = cs->frame ? cs->frame->capacity : 0;
    if (need <= cap)
        return 0;
    if (cap == 0)
        cap = need;
    while (cap < need)
        cap *= 2;
    if (cap > cs->length)
        cap = cs->length > need ? cs->length : need;
    struct frame *f = cs->frame ? frame_resize(cs->frame, cap) : frame_alloc(MEDIA_CODEC_NONE, cap);
    if (!f)
        return -ENOMEM;
    cs->frame = f;
    return 0;
}

/* Protocol control messages that change how we read: applied here so the
 * session cannot forget them or apply them a chunk too late. */
static int apply_control(struct rtmp_chunk_reader *r, const struct rtmp_msg *m)
{
    if (m->type != RTMP_MSG_SET_CHUNK_SIZE && m->type != RTMP_MSG_ABORT &&
        m->type != RTMP_MSG_WINDOW_ACK_SIZE)
        return 0;
    if (m->len < 4)
        return fail(r, -EPROTO, "control message type %u has %zu bytes, needs 4", m->type, m->len);
    uint32_t v = be32(m->payload);
    switch (m->type) {
    case RTMP_MSG_SET_CHUNK_SIZE: {
        if (v == 0 || (v & 0x80000000u))
            return fail(r, -ERANGE, "Set Chunk Size %u is outside 1..0x7FFFFFFF", v);
        uint32_t eff = v > RTMP_MAX_MESSAGE_LEN ? RTMP_MAX_MESSAGE_LEN : v;
        if (eff < r->lim.min_chunk_size || eff > r->lim.max_chunk_size)
            return fail(r, -ERANGE, "Set Chunk Size %u is outside the configured %u..%u", v,
                        r->lim.min_chunk_size, r->lim.max_chunk_size);
        r->chunk_size = eff;
        break;
    }
    case RTMP_MSG_ABORT:
        for (unsigned i = 0; i < r->nstreams; i++)
            if (r->streams[i].csid == v)
                drop_partial(r, &r->streams[i]);
        break;
    case RTMP_MSG_WINDOW_ACK_SIZE:
        r->ack_window = v;
        break;
    }
    return 0;
}

static int emit(struct rtmp_chunk_reader *r, struct rtmp_chunk_stream *cs, struct rtmp_msg *msg)
{
    r->pending -= cs->len;
    cs->partial = false;
    r->emitted = cs;
    r->state = ST_BASIC;
    r->hdr_len = 0;

    msg->type = cs->type;
    msg->timestamp = cs->timestamp;
    msg->stream_id = cs->stream_id;
    msg->csid = cs->csid;
    msg->payload = cs->len ? frame_payload(cs->frame) : (const uint8_t *)"";
    msg->len = cs->len;
    return apply_control(r, msg);
}

/* The basic header is in; look at what the fmt may do on this chunk stream. */
static int begin_header(struct rtmp_chunk_reader *r, uint32_t csid)
{
    struct rtmp_chunk_stream *cs = find_stream(r, csid);
    if (!cs)
        return fail(r, -ENOSPC, "more than %u chunk streams (csid %u)", r->lim.max_streams, csid);
    if (r->fmt == 0 && cs->partial)
        return fail(r, -EPROTO, "type 0 header on csid %u inside a message (%zu of %u bytes)",
                    csid, cs->len, cs->length);
    if (!cs->seen && r->fmt >= 2)
        return fail(r, -EPROTO, "csid %u starts with a type %u header", csid, r->fmt);
    r->cur = cs;
    r->first_chunk = !cs->partial;
    r->hdr_basic = r->hdr_len;
    r->hdr_need = r->hdr_len + msg_header_size[r->fmt];
    r->state = ST_HEADER;
    return 0;
}

/* All header bytes are in (extended timestamp included when present). */
static int finish_header(struct rtmp_chunk_reader *r, bool have_ext, struct rtmp_msg *msg, int *got)
{
    struct rtmp_chunk_stream *cs = r->cur;
    uint32_t ext = have_ext ? be32(r->hdr + r->hdr_need - 4) : 0;

    if (r->fmt == 0) {
        uint32_t ts = be24(r->hdr + r->hdr_basic);
        if (have_ext)
            ts = cs->ext_value = ext;
        cs->timestamp = ts;
        cs->delta = ts; /* a type 3 header after type 0 reuses the timestamp as delta */
    } else if (r->fmt <= 2) {
        uint32_t d = be24(r->hdr + r->hdr_basic);
        if (have_ext)
            d = cs->ext_value = ext;
        cs->delta = d;
        if (r->first_chunk)
            cs->timestamp += d;
    } else {
        if (have_ext) {
            if (!r->first_chunk && cs->ext_value != 0 && ext != cs->ext_value)
                r->unread = true; /* the encoder does not repeat it: payload */
            else if (r->first_chunk)
                cs->delta = cs->ext_value = ext;
        }
        if (r->first_chunk)
            cs->timestamp += cs->delta;
    }

    if (r->first_chunk) {
        if (cs->length > r->lim.max_message_size)
            return fail(r, -EMSGSIZE, "message of %u bytes on csid %u exceeds the limit of %zu",
                        cs->length, cs->csid, r->lim.max_message_size);
        cs->len = 0;
        cs->partial = true;
        if (cs->length == 0) {
            *got = 1;
            return emit(r, cs, msg);
        }
        size_t first = cs->length < FIRST_RESERVE ? cs->length : FIRST_RESERVE;
        if (payload_reserve(cs, first))
            return fail(r, -ENOMEM, "no memory for a %u-byte message", cs->length);
    }

    uint32_t left = cs->length - (uint32_t)cs->len;
    r->chunk_left = left < r->chunk_size ? left : r->chunk_size;
    r->state = ST_PAYLOAD;
    r->hdr_len = 0;
    return 0;
}

/* The message header is in; decide whether an extended timestamp follows. */
static int parse_message_header(struct rtmp_chunk_reader *r, struct rtmp_msg *msg, int *got)
{
    struct rtmp_chunk_stream *cs = r->cur;
    const uint8_t *h = r->hdr + r->hdr_basic;
    bool need_ext;

    if (r->fmt <= 1) {
        uint32_t length = be24(h + 3);
        if (!r->first_chunk && length != cs->length)
            return fail(r, -EPROTO, "csid %u changes message length from %u to %u mid-message",
                        cs->csid, cs->length, length);
        cs->length = length;
        cs->type = h[6];
        if (r->fmt == 0)
            cs->stream_id = le32(h + 7);
    }
    if (r->fmt <= 2) {
        cs->ext = be24(h) == EXT_TS;
        need_ext = cs->ext;
    } else {
        need_ext = cs->ext;
    }
    cs->seen = true;

    if (need_ext) {
        r->hdr_need += 4;
        r->state = ST_EXT;
        return 0;
    }
    return finish_header(r, false, msg, got);
}

/* Gather header bytes up to hdr_need; returns how many were taken. */
static size_t gather(struct rtmp_chunk_reader *r, const uint8_t *p, size_t n)
{
    size_t want = r->hdr_need - r->hdr_len;
    if (want > n)
        want = n;
    memcpy(r->hdr + r->hdr_len, p, want);
    r->hdr_len += want;
    return want;
}

/* One state's worth of progress over p[0..n). Returns bytes used or < 0. */
static long step(struct rtmp_chunk_reader *r, const uint8_t *p, size_t n, struct rtmp_msg *msg,
                 int *got)
{
    size_t used;
    int rc;

    switch (r->state) {
    case ST_BASIC: {
        uint8_t b = p[0];
        r->hdr[0] = b;
        r->hdr_len = 1;
        r->fmt = b >> 6;
        switch (b & 0x3f) {
        case 0:
            r->hdr_need = 2;
            r->state = ST_BASIC_EXT;
            return 1;
        case 1:
            r->hdr_need = 3;
            r->state = ST_BASIC_EXT;
            return 1;
        default:
            rc = begin_header(r, b & 0x3f);
            break;
        }
        used = 1;
        break;
    }
    case ST_BASIC_EXT:
        used = gather(r, p, n);
        if (r->hdr_len < r->hdr_need)
            return (long)used;
        {
            uint32_t csid = 64u + r->hdr[1];
            if (r->hdr_need == 3)
                csid += (uint32_t)r->hdr[2] * 256;
            rc = begin_header(r, csid);
        }
        break;
    case ST_HEADER:
        used = gather(r, p, n);
        if (r->hdr_len < r->hdr_need)
            return (long)used;
        rc = parse_message_header(r, msg, got);
        return rc < 0 ? rc : (long)used;
    case ST_EXT:
        used = gather(r, p, n);
        if (r->hdr_len < r->hdr_need)
            return (long)used;
        rc = finish_header(r, true, msg, got);
        return rc < 0 ? rc : (long)used;
    case ST_PAYLOAD: {
        struct rtmp_chunk_stream *cs = r->cur;
        used = n < r->chunk_left ? n : r->chunk_left;
        if (used > r->lim.max_pending - r->pending)
            return fail(r, -EMSGSIZE, "unfinished messages exceed %zu bytes (csid %u)",
                        r->lim.max_pending, cs->csid);
        if (payload_reserve(cs, used))
            return fail(r, -ENOMEM, "no memory for a %u-byte message on csid %u", cs->length,
                        cs->csid);
        memcpy(frame_payload(cs->frame) + cs->len, p, used);
        cs->len += used;
        r->pending += used;
        r->chunk_left -= (uint32_t)used;
        if (cs->len == cs->length) {
            *got = 1;
            rc = emit(r, cs, msg);
            return rc < 0 ? rc : (long)used;
        }
        if (r->chunk_left == 0)
            r->state = ST_BASIC;
        return (long)used;
    }
    default:
        return -EPROTO; /* ST_FAILED: rtmp_chunk_read does not get here */
    }

    if (rc < 0)
        return rc;
    /* A type 3 header has no message header bytes: go on at once. */
    if (r->state == ST_HEADER && r->hdr_len == r->hdr_need) {
        rc = parse_message_header(r, msg, got);
        if (rc < 0)
            return rc;
    }
    return (long)used;
}

int rtmp_chunk_read(struct rtmp_chunk_reader *r, const uint8_t *data, size_t len,
                    size_t *consumed, struct rtmp_msg *msg)
{
    size_t used = 0;

    *consumed = 0;
    if (r->state == ST_FAILED)
        return -EPROTO;
    if (r->emitted) {
        release_payload(r->emitted);
        r->emitted = NULL;
    }

    for (;;) {
        bool from_replay = r->replay_pos < r->replay_len;
        const uint8_t *p = from_replay ? r->replay + r->replay_pos : data + used;
        size_t avail = from_replay ? r->replay_len - r->replay_pos : len - used;
        int got = 0;

        if (avail == 0)
            break;
        long n = step(r, p, avail, msg, &got);
        if (n < 0) {
            r->state = ST_FAILED;
            *consumed = used;
            return (int)n;
        }
        if (from_replay) {
            r->replay_pos += (size_t)n;
        } else {
            used += (size_t)n;
            r->bytes_in += (uint64_t)n;
        }
        if (r->unread) {
            /* The four bytes just read go back in front of whatever is left. */
            uint8_t tmp[sizeof r->replay];
            size_t rest = r->replay_len - r->replay_pos;
            memcpy(tmp, r->hdr + r->hdr_need - 4, 4);
            memcpy(tmp + 4, r->replay + r->replay_pos, rest);
            memcpy(r->replay, tmp, 4 + rest);
            r->replay_pos = 0;
            r->replay_len = 4 + rest;
            r->unread = false;
        }
        if (r->replay_pos == r->replay_len)
            r->replay_pos = r->replay_len = 0;
        if (got) {
            *consumed = used;
            return RTMP_CHUNK_MSG;
        }
    }
    *consumed = used;
    return 0;
}

int rtmp_chunk_take_payload(struct rtmp_chunk_reader *r, struct buf *out)
{
    if (!r->emitted)
        return -EINVAL;
    buf_init(out, r->lim.max_message_size);
    struct rtmp_chunk_stream *cs = r->emitted;
    return cs->len ? buf_append(out, frame_payload(cs->frame), cs->len) : 0;
}

struct frame *rtmp_chunk_take_frame(struct rtmp_chunk_reader *r)
{
    struct rtmp_chunk_stream *cs = r->emitted;
    if (!cs || !cs->frame || cs->len == 0)
        return NULL;
    struct frame *f = cs->frame;
    if (f->capacity > cs->len + cs->len / 2) {
        /* Storage kept from a bigger message before: the frame may sit in
         * the GOP cache for seconds, so give the rest back. */
        struct frame *n = frame_resize(f, cs->len);
        if (n)
            f = n;
    }
    frame_trim(f, 0, cs->len);
    cs->frame = NULL;
    cs->len = 0;
    r->emitted = NULL;
    return f;
}

bool rtmp_chunk_ack_due(struct rtmp_chunk_reader *r, uint32_t *seq)
{
    if (r->ack_window == 0 || r->bytes_in - r->acked_at < r->ack_window)
        return false;
    r->acked_at = r->bytes_in;
    *seq = (uint32_t)r->bytes_in;
    return true;
}

/* ---- writer ---------------------------------------------------------- */

void rtmp_chunk_writer_init(struct rtmp_chunk_writer *w) { w->chunk_size = RTMP_DEFAULT_CHUNK_SIZE; }

static size_t put_basic(uint8_t *p, uint8_t fmt, uint32_t csid)
{
    if (csid < 64) {
        p[0] = (uint8_t)(fmt << 6 | csid);
        return 1;
    }
    if (csid < 320) {
        p[0] = (uint8_t)(fmt << 6);
        p[1] = (uint8_t)(csid - 64);
        return 2;
    }
    p[0] = (uint8_t)(fmt << 6 | 1);
    p[1] = (uint8_t)((csid - 64) & 0xff);
    p[2] = (uint8_t)((csid - 64) >> 8);
    return 3;
}

int rtmp_chunk_write(struct rtmp_chunk_writer *w, struct buf *out, uint32_t csid, uint8_t type,
                     uint32_t timestamp, uint32_t stream_id, const void *payload, size_t len)
{
    const uint8_t *src = payload;
    uint8_t hdr[18], cont[7];
    size_t hlen, clen, chunks, total;
    bool ext = timestamp >= EXT_TS;
    size_t cs = w->chunk_size ? w->chunk_size : RTMP_DEFAULT_CHUNK_SIZE;
    int rc;

    if (csid < RTMP_CSID_MIN || csid > RTMP_CSID_MAX || len > RTMP_MAX_MESSAGE_LEN ||
        (len && !payload))
        return -EINVAL;

    hlen = put_basic(hdr, 0, csid);
    put_be24(hdr + hlen, ext ? EXT_TS : timestamp);
    put_be24(hdr + hlen + 3, (uint32_t)len);
    hdr[hlen + 6] = type;
    put_le32(hdr + hlen + 7, stream_id);
    hlen += 11;
    clen = put_basic(cont, 3, csid);
    if (ext) {
        put_be32(hdr + hlen, timestamp);
        hlen += 4;
        put_be32(cont + clen, timestamp);
        clen += 4;
    }

    chunks = len ? (len + cs - 1) / cs : 1;
    total = hlen + len + (chunks - 1) * clen;
    if ((rc = buf_reserve(out, total)))
        return rc;
    /* Cannot fail past the reservation. */
    buf_append(out, hdr, hlen);
    for (size_t off = 0; off < len; off += cs) {
        size_t n = len - off < cs ? len - off : cs;
        if (off)
            buf_append(out, cont, clen);
        buf_append(out, src + off, n);
    }
    return 0;
}

static int write_control(struct rtmp_chunk_writer *w, struct buf *out, uint8_t type,
                         const uint8_t *p, size_t n)
{
    return rtmp_chunk_write(w, out, RTMP_CSID_CONTROL, type, 0, 0, p, n);
}

static int write_u32(struct rtmp_chunk_writer *w, struct buf *out, uint8_t type, uint32_t v)
{
    uint8_t p[4];
    put_be32(p, v);
    return write_control(w, out, type, p, sizeof p);
}

int rtmp_chunk_write_set_chunk_size(struct rtmp_chunk_writer *w, struct buf *out, uint32_t size)
{
    if (size == 0 || (size & 0x80000000u))
        return -EINVAL;
    int rc = write_u32(w, out, RTMP_MSG_SET_CHUNK_SIZE, size);
    if (rc == 0)
        w->chunk_size = size;
    return rc;
}

int rtmp_chunk_write_abort(struct rtmp_chunk_writer *w, struct buf *out, uint32_t csid)
{
    return write_u32(w, out, RTMP_MSG_ABORT, csid);
}

int rtmp_chunk_write_ack(struct rtmp_chunk_writer *w, struct buf *out, uint32_t seq)
{
    return write_u32(w, out, RTMP_MSG_ACK, seq);
}

int rtmp_chunk_write_window_ack_size(struct rtmp_chunk_writer *w, struct buf *out, uint32_t size)
{
    return write_u32(w, out, RTMP_MSG_WINDOW_ACK_SIZE, size);
}

int rtmp_chunk_write_set_peer_bandwidth(struct rtmp_chunk_writer *w, struct buf *out,
                                        uint32_t size, enum rtmp_bw_limit limit)
{
    uint8_t p[5];
    put_be32(p, size);
    p[4] = (uint8_t)limit;
    return write_control(w, out, RTMP_MSG_SET_PEER_BANDWIDTH, p, sizeof p);
}

int rtmp_chunk_write_user_control(struct rtmp_chunk_writer *w, struct buf *out,
                                  enum rtmp_uc_event event, uint32_t value)
{
    uint8_t p[6];
    p[0] = (uint8_t)((unsigned)event >> 8);
    p[1] = (uint8_t)event;
    put_be32(p + 2, value);
    return write_control(w, out, RTMP_MSG_USER_CONTROL, p, sizeof p);
}

int rtmp_chunk_write_stream_begin(struct rtmp_chunk_writer *w, struct buf *out, uint32_t stream_id)
{
    return rtmp_chunk_write_user_control(w, out, RTMP_UC_STREAM_BEGIN, stream_id);
}

int rtmp_chunk_write_ping_request(struct rtmp_chunk_writer *w, struct buf *out, uint32_t ts)
{
    return rtmp_chunk_write_user_control(w, out, RTMP_UC_PING_REQUEST, ts);
}

int rtmp_chunk_write_ping_response(struct rtmp_chunk_writer *w, struct buf *out, uint32_t ts)
{
    return rtmp_chunk_write_user_control(w, out, RTMP_UC_PING_RESPONSE, ts);
}

/* ---- parsing control messages ---------------------------------------- */

int rtmp_user_control_parse(const uint8_t *p, size_t len, struct rtmp_user_control *uc)
{
    memset(uc, 0, sizeof *uc);
    if (len < 2)
        return -EBADMSG;
    uc->event = (uint16_t)(p[0] << 8 | p[1]);
    size_t need = uc->event == RTMP_UC_SET_BUFFER_LENGTH ? 10 : 6;
    /* Events we do not know (Flash's buffer empty/ready, 31/32) may carry
     * anything; only the ones with a defined layout must be complete. */
    if (uc->event > RTMP_UC_PING_RESPONSE || uc->event == 5) {
        if (len >= 6)
            uc->value = be32(p + 2);
        return 0;
    }
    if (len < need)
        return -EBADMSG;
    uc->value = be32(p + 2);
    if (need == 10)
        uc->value2 = be32(p + 6);
    return 0;
}

int rtmp_control_parse_u32(const struct rtmp_msg *msg, uint32_t *value)
{
    if (msg->len < 4)
        return -EBADMSG;
    *value = be32(msg->payload);
    return 0;
}
