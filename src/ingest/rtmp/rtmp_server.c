/*
 * RTMP sessions: handshake, commands, and media into the stream hub.
 *
 * A session goes HANDSHAKE -> CONNECTING (chunk stream; connect, createStream)
 * -> AUTHORIZING (publish received; the key is checked on the worker pool)
 * -> PUBLISHING -> closed. Bytes read are fed to the handshake, then to the
 * chunk reader; complete messages are handled at once, and everything we
 * answer is gathered in `out` and written once per read.
 *
 * Timestamps. RTMP gives 32-bit milliseconds that encoders let jump, step
 * back, wrap, and restart. We keep one unwrapped clock per session: each
 * message moves it by the signed 32-bit difference from the previous one (so
 * a wrap is just a small step), and a step back of more than a second or
 * forward of more than ten marks a discontinuity: the clock then continues
 * just after where it was, and the frame carries the discontinuity flag for
 * the outputs. Within a track, decode times never go backwards.
 *
 * Payloads: H.264/HEVC NAL units are kept length-prefixed and widened to
 * 4-byte lengths when the publisher's record uses 1 or 2; AV1 temporal
 * delimiters are dropped (media/frame.h).
 *
 * Reading in batches. An encoder writes every audio and video message as it
 * comes, often in several writes, so a publisher left alone wakes the loop
 * 100-150 times a second, and with a few publishers the thread mostly goes
 * to sleep and wakes up again: with 8 streams of 1080p60, the scheduler's
 * work around some 1,100 wakeups a second was about 40 % of the ingest CPU,
 * more than the bytes cost. So once a publishing session has been read, its
 * socket is held: SO_RCVLOWAT goes so high that epoll stops reporting it
 * (the bytes keep arriving into the socket buffer; a FIN or an error is
 * still reported), and one server-wide timer, READ_BATCH_MS later, lowers it
 * back to 1 on every held socket. Linux signals EPOLLIN from that setsockopt
 * when bytes are waiting (tcp_set_rcvlowat), so the loop then reads every
 * publisher in one wakeup: about 100 a second, however many publish. Each message waits at most READ_BATCH_MS longer (a part is 0.5 s);
 * the handshake and the commands are never held.
 */
#include "ingest/rtmp/rtmp_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "ingest/rtmp/amf.h"
#include "ingest/rtmp/chunk.h"
#include "ingest/rtmp/flv.h"
#include "ingest/rtmp/handshake.h"
#include "media/codec.h"
#include "media/frame.h"
#include "media/stream.h"
#include "net/tcp.h"

#define OUT_CHUNK_SIZE 4096
#define OUT_QUEUE_LIMIT (1024 * 1024)
#define WINDOW_ACK 2500000
#define TICK_MS 1000
#define CONNECT_IDLE_MS 30000
#define JUMP_BACK_MS 1000
#define JUMP_FORWARD_MS 10000
#define READ_BATCH_MS 10
/* The held socket's low-water mark: above what a publisher sends in
 * READ_BATCH_MS (1 MiB in 10 ms is 800 Mbit/s); past it, reading early is
 * right anyway. Linux grows the receive buffer to hold it, if smaller. */
#define HOLD_LOWAT (1024 * 1024)

enum sess_state { S_HANDSHAKE, S_CONNECTING, S_AUTHORIZING, S_PUBLISHING, S_CLOSING };

struct rtmp_server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct stream_hub *hub;
    rtmp_authorize_fn authorize;
    void *auth_ud;
    uv_tcp_t listener;
    bool listening, shutting_down;
    int port;
    struct rtmp_session *sessions;
    size_t nsessions;
    void (*shutdown_cb)(void *);
    void *shutdown_arg;
    uv_timer_t batch_timer; /* releases held sockets; see "Reading in batches" */
    bool batch_open;        /* batch_timer initialised and not yet closed */
    uint8_t readbuf[64 * 1024];
};

struct track_clock {
    bool seen;
    int64_t last_dts; /* ms */
};

struct rtmp_session {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct rtmp_server *srv;
    struct rtmp_session *prev, *next;
    enum sess_state state;
    int refs;
    bool closing;
    bool held; /* SO_RCVLOWAT raised until the batch timer fires */
    char remote[64];
    uint64_t started_ms;
    uint64_t last_media_ms;

    struct rtmp_handshake hs;
    struct rtmp_chunk_reader rd;
    struct rtmp_chunk_writer wr;
    struct buf out;

    char app[64];
    char key[256];
    uint32_t stream_id;
    double publish_txn;

    /* publishing */
    struct stream *stream;
    char slug[64];
    int64_t channel_id;
    struct codec_config vcfg, acfg;
    bool have_vcfg, have_acfg;
    int nal_len; /* the publisher's NAL length size */
    bool clock_started;
    uint32_t last_raw;
    int64_t clock_ms;
    bool pending_disc;
    struct track_clock vclock, aclock;
    uint64_t frames;
    bool warned_codec;

    uv_work_t auth_work;
    struct rtmp_auth auth;
    int auth_rc;
};

struct sess_write {
    uv_write_t w;
    struct rtmp_session *s;
    char *data;
};

static void session_close(struct rtmp_session *s, const char *why);
static void flush_out(struct rtmp_session *s);

/* --- plumbing ------------------------------------------------------------------ */

/* Shutting down ends when the listener, the batch timer and every session
 * have closed. */
static void shutdown_maybe_done(struct rtmp_server *srv)
{
    if (srv->shutting_down && srv->nsessions == 0 && !srv->listening && !srv->batch_open &&
        srv->shutdown_cb) {
        void (*cb)(void *) = srv->shutdown_cb;
        srv->shutdown_cb = NULL;
        cb(srv->shutdown_arg);
    }
}

static void session_unref(struct rtmp_session *s)
{
    if (--s->refs > 0)
        return;
    struct rtmp_server *srv = s->srv;
    rtmp_chunk_reader_free(&s->rd);
    buf_free(&s->out);
    if (s->have_vcfg)
        codec_config_free(&s->vcfg);
    if (s->have_acfg)
        codec_config_free(&s->acfg);
    free(s);
    shutdown_maybe_done(srv);
}

static void on_closed(uv_handle_t *h) { session_unref(h->data); }

static void on_write(uv_write_t *w, int status)
{
    struct sess_write *sw = (struct sess_write *)w;
    struct rtmp_session *s = sw->s;
    free(sw->data);
    free(sw);
    if (status < 0 && !s->closing)
        session_close(s, uv_strerror(status));
    if (s->state == S_CLOSING && !s->closing &&
        uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) == 0)
        session_close(s, NULL);
    session_unref(s);
}

static void flush_out(struct rtmp_session *s)
{
    if (s->out.len == 0 || s->closing)
        return;
    /* We only answer what the peer sends (acks, pings, commands); a peer
     * that keeps asking and never reads would grow the write queue. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) > OUT_QUEUE_LIMIT) {
        session_close(s, "peer does not read our replies");
        return;
    }
    uv_buf_t b = uv_buf_init(s->out.data, (unsigned)s->out.len);
    int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        session_close(s, uv_strerror(n));
        return;
    }
    if ((size_t)n == s->out.len) {
        buf_reset(&s->out);
        return;
    }
    struct sess_write *sw = calloc(1, sizeof *sw);
    if (!sw) {
        session_close(s, "out of memory");
        return;
    }
    size_t len;
    buf_consume(&s->out, (size_t)n);
    sw->data = buf_steal(&s->out, &len);
    sw->s = s;
    b = uv_buf_init(sw->data, (unsigned)len);
    s->refs++;
    if (uv_write(&sw->w, (uv_stream_t *)&s->tcp, &b, 1, on_write) != 0) {
        s->refs--;
        free(sw->data);
        free(sw);
        session_close(s, "write failed");
    }
}

static void session_close(struct rtmp_session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = true;
    struct rtmp_server *srv = s->srv;
    if (why)
        log_info("rtmp %s%s%s: closed: %s", s->remote, s->slug[0] ? " " : "", s->slug, why);
    if (s->stream) {
        log_info("rtmp %s %s: publish ended after %llu frames", s->remote, s->slug,
                 (unsigned long long)s->frames);
        stream_publish_end(s->stream);
        stream_unref(s->stream);
        s->stream = NULL;
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->nsessions--;
    uv_close((uv_handle_t *)&s->timer, on_closed);
    uv_close((uv_handle_t *)&s->tcp, on_closed);
}

/* Send what is queued, then close. */
static void close_after_flush(struct rtmp_session *s)
{
    s->state = S_CLOSING;
    flush_out(s);
    if (!s->closing && uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) == 0)
        session_close(s, NULL);
}

/* --- commands --------------------------------------------------------------------- */

static void send_command(struct rtmp_session *s, uint32_t csid, uint32_t stream_id, struct buf *body)
{
    rtmp_chunk_write(&s->wr, &s->out, csid, RTMP_MSG_COMMAND_AMF0, 0, stream_id, body->data, body->len);
}

static void send_status(struct rtmp_session *s, const char *level, const char *code, const char *desc)
{
    struct buf b;
    buf_init(&b, 0);
    amf_encode_string(&b, "onStatus");
    amf_encode_number(&b, 0);
    amf_encode_null(&b);
    amf_encode_object_begin(&b);
    amf_encode_prop_string(&b, "level", level);
    amf_encode_prop_string(&b, "code", code);
    amf_encode_prop_string(&b, "description", desc);
    amf_encode_object_end(&b);
    send_command(s, 5, s->stream_id ? s->stream_id : 1, &b);
    buf_free(&b);
}

static void send_result_simple(struct rtmp_session *s, double txn, bool with_number, double number)
{
    struct buf b;
    buf_init(&b, 0);
    amf_encode_string(&b, "_result");
    amf_encode_number(&b, txn);
    amf_encode_null(&b);
    if (with_number)
        amf_encode_number(&b, number);
    else
        amf_encode_undefined(&b);
    send_command(s, 3, 0, &b);
    buf_free(&b);
}

static void handle_connect(struct rtmp_session *s, const struct amf_command *cmd)
{
    const struct amf_value *obj = cmd->nargs ? &cmd->args[0] : NULL;
    const char *app = obj ? amf_get_string(obj, "app") : NULL;
    char a[64];
    snprintf(a, sizeof a, "%s", app ? app : "");
    a[strcspn(a, "?")] = '\0';
    size_t n = strlen(a);
    while (n && a[n - 1] == '/')
        a[--n] = '\0';
    if (strcmp(a, "live") != 0 && strcmp(a, "stream") != 0) {
        struct buf b;
        buf_init(&b, 0);
        amf_encode_string(&b, "_error");
        amf_encode_number(&b, cmd->transaction_id);
        amf_encode_null(&b);
        amf_encode_object_begin(&b);
        amf_encode_prop_string(&b, "level", "error");
        amf_encode_prop_string(&b, "code", "NetConnection.Connect.Rejected");
        amf_encode_prop_string(&b, "description", "Unknown application; use rtmp://HOST/live");
        amf_encode_object_end(&b);
        send_command(s, 3, 0, &b);
        buf_free(&b);
        log_info("rtmp %s: connect refused: unknown app '%s' (use live or stream)", s->remote,
                 app ? app : "");
        close_after_flush(s);
        return;
    }
    snprintf(s->app, sizeof s->app, "%s", a);
    rtmp_chunk_write_window_ack_size(&s->wr, &s->out, WINDOW_ACK);
    rtmp_chunk_write_set_peer_bandwidth(&s->wr, &s->out, WINDOW_ACK, RTMP_BW_DYNAMIC);
    rtmp_chunk_write_set_chunk_size(&s->wr, &s->out, OUT_CHUNK_SIZE);
    struct buf b;
    buf_init(&b, 0);
    amf_encode_string(&b, "_result");
    amf_encode_number(&b, cmd->transaction_id);
    amf_encode_object_begin(&b);
    amf_encode_prop_string(&b, "fmsVer", "FMS/3,0,1,123");
    amf_encode_prop_number(&b, "capabilities", 31);
    amf_encode_object_end(&b);
    amf_encode_object_begin(&b);
    amf_encode_prop_string(&b, "level", "status");
    amf_encode_prop_string(&b, "code", "NetConnection.Connect.Success");
    amf_encode_prop_string(&b, "description", "Connection succeeded.");
    double enc = 0;
    if (obj)
        amf_get_number(obj, "objectEncoding", &enc);
    amf_encode_prop_number(&b, "objectEncoding", enc);
    amf_encode_object_end(&b);
    send_command(s, 3, 0, &b);
    buf_free(&b);
}

static void on_auth_work(uv_work_t *w)
{
    struct rtmp_session *s = w->data;
    s->auth_rc = s->srv->authorize(s->srv->auth_ud, s->key, &s->auth);
}

static void on_auth_done(uv_work_t *w, int status)
{
    struct rtmp_session *s = w->data;
    if (s->closing) {
        session_unref(s);
        return;
    }
    if (status < 0 || s->auth_rc != 0) {
        log_info("rtmp %s: publish refused: %s", s->remote,
                 s->auth.why[0] ? s->auth.why : "unknown stream key");
        send_status(s, "error", "NetStream.Publish.BadName", "Invalid stream key");
        close_after_flush(s);
        session_unref(s);
        return;
    }
    bool resumed;
    struct stream *st;
    int rc = stream_publish_begin(s->srv->hub, s->auth.slug, s->auth.channel_id, &st, &resumed);
    if (rc == -EBUSY) {
        log_info("rtmp %s: publish refused: channel %s is already live", s->remote, s->auth.slug);
        send_status(s, "error", "NetStream.Publish.BadName", "This channel is already live");
        close_after_flush(s);
        session_unref(s);
        return;
    }
    if (rc != 0) {
        send_status(s, "error", "NetStream.Publish.Failed", "Internal error");
        close_after_flush(s);
        session_unref(s);
        return;
    }
    stream_ref(st);
    s->stream = st;
    snprintf(s->slug, sizeof s->slug, "%s", s->auth.slug);
    s->channel_id = s->auth.channel_id;
    s->state = S_PUBLISHING;
    s->last_media_ms = uv_now(s->srv->loop);
    rtmp_chunk_write_stream_begin(&s->wr, &s->out, s->stream_id);
    send_status(s, "status", "NetStream.Publish.Start", "Start publishing");
    log_info("rtmp %s: publishing on channel %s (app %s)%s", s->remote, s->slug, s->app,
             resumed ? ", resuming within the grace period" : "");
    flush_out(s);
    session_unref(s);
}

static void handle_publish(struct rtmp_session *s, const struct amf_command *cmd)
{
    if (s->state != S_CONNECTING) {
        session_close(s, "publish while already publishing");
        return;
    }
    const char *name = cmd->nargs >= 2 ? amf_string(&cmd->args[1]) : NULL;
    if (!name || !*name) {
        send_status(s, "error", "NetStream.Publish.BadName", "Missing stream key");
        log_info("rtmp %s: publish refused: no stream name", s->remote);
        close_after_flush(s);
        return;
    }
    snprintf(s->key, sizeof s->key, "%s", name);
    s->key[strcspn(s->key, "?")] = '\0'; /* OBS and others append ?query */
    s->publish_txn = cmd->transaction_id;
    s->state = S_AUTHORIZING;
    s->auth_work.data = s;
    s->refs++;
    if (uv_queue_work(s->srv->loop, &s->auth_work, on_auth_work, on_auth_done) != 0) {
        s->refs--;
        session_close(s, "worker pool unavailable");
    }
}

static void handle_command(struct rtmp_session *s, const uint8_t *p, size_t len)
{
    struct amf_command cmd;
    if (amf_command_decode(p, len, &cmd, NULL) != 0) {
        session_close(s, "malformed AMF0 command");
        return;
    }
    const char *name = cmd.name;
    if (strcmp(name, "connect") == 0) {
        handle_connect(s, &cmd);
    } else if (strcmp(name, "releaseStream") == 0 || strcmp(name, "FCPublish") == 0 ||
               strcmp(name, "FCUnpublish") == 0) {
        if (cmd.transaction_id != 0)
            send_result_simple(s, cmd.transaction_id, false, 0);
        if (strcmp(name, "FCUnpublish") == 0 && s->stream) {
            log_info("rtmp %s %s: FCUnpublish", s->remote, s->slug);
        }
    } else if (strcmp(name, "createStream") == 0) {
        s->stream_id = 1;
        send_result_simple(s, cmd.transaction_id, true, 1);
    } else if (strcmp(name, "publish") == 0) {
        handle_publish(s, &cmd);
    } else if (strcmp(name, "deleteStream") == 0 || strcmp(name, "closeStream") == 0) {
        if (s->stream) {
            send_status(s, "status", "NetStream.Unpublish.Success", "Stop publishing");
            close_after_flush(s);
        }
    } else if (strcmp(name, "play") == 0) {
        send_status(s, "error", "NetStream.Play.Failed", "Playback over RTMP is not offered; watch over HLS");
        close_after_flush(s);
    } else if (strcmp(name, "_checkbw") == 0 || strcmp(name, "getStreamLength") == 0) {
        /* harmless; nothing to say */
    } else {
        log_debug("rtmp %s: ignoring command %s", s->remote, name);
    }
    amf_command_free(&cmd);
}

static void handle_data(struct rtmp_session *s, const uint8_t *p, size_t len)
{
    /* @setDataFrame onMetaData {..} or onMetaData {..}: logged for operators.
     * The codec records are what the outputs trust, not this. */
    struct amf_value *vals = NULL;
    size_t n = 0;
    if (amf_decode_all(p, len, &vals, &n, NULL) != 0)
        return; /* metadata is optional; a bad one does not end the stream */
    size_t i = 0;
    if (i < n && amf_string(&vals[i]) && strcmp(amf_string(&vals[i]), "@setDataFrame") == 0)
        i++;
    if (i + 1 < n && amf_string(&vals[i]) && strcmp(amf_string(&vals[i]), "onMetaData") == 0) {
        const struct amf_value *m = &vals[i + 1];
        double w = 0, h = 0, fps = 0, vbr = 0;
        amf_get_number(m, "width", &w);
        amf_get_number(m, "height", &h);
        amf_get_number(m, "framerate", &fps);
        amf_get_number(m, "videodatarate", &vbr);
        const char *enc = amf_get_string(m, "encoder");
        if (s->stream) {
            struct buf raw;
            buf_init(&raw, 64 * 1024);
            if (amf_encode_value(&raw, m) == 0)
                stream_set_metadata(s->stream, raw.data, raw.len);
            buf_free(&raw);
        }
        log_info("rtmp %s %s: metadata: %.0fx%.0f %.2f fps %.0f kbit/s, encoder %s", s->remote,
                 s->slug, w, h, fps, vbr, enc ? enc : "?");
    }
    amf_values_free(vals, n);
}

/* --- media ---------------------------------------------------------------------------- */

static enum media_codec to_media_codec(enum flv_codec c)
{
    switch (c) {
    case FLV_CODEC_H264: return MEDIA_CODEC_H264;
    case FLV_CODEC_HEVC: return MEDIA_CODEC_HEVC;
    case FLV_CODEC_AV1: return MEDIA_CODEC_AV1;
    case FLV_CODEC_AAC: return MEDIA_CODEC_AAC;
    default: return MEDIA_CODEC_NONE;
    }
}

/* Move the session clock to this message's time; returns ms on our timeline. */
static int64_t clock_advance(struct rtmp_session *s, uint32_t raw, struct track_clock *tc)
{
    if (!s->clock_started) {
        s->clock_started = true;
        s->last_raw = raw;
        s->clock_ms = 0;
    } else {
        int32_t delta = (int32_t)(raw - s->last_raw);
        s->last_raw = raw;
        if (delta < -JUMP_BACK_MS || delta > JUMP_FORWARD_MS) {
            int64_t latest = s->vclock.last_dts > s->aclock.last_dts ? s->vclock.last_dts
                                                                     : s->aclock.last_dts;
            log_info("rtmp %s %s: timestamps jumped by %d ms; continuing with a discontinuity",
                     s->remote, s->slug, delta);
            s->clock_ms = latest + 33;
            s->pending_disc = true;
        } else {
            s->clock_ms += delta;
        }
    }
    int64_t t = s->clock_ms;
    if (tc->seen && t <= tc->last_dts)
        t = tc->last_dts + 1; /* decode order never goes back within a track */
    tc->seen = true;
    tc->last_dts = t;
    return t;
}

/* Rewrite NAL units with 1- or 2-byte lengths into 4-byte lengths. */
static struct frame *widen_nals(enum media_codec codec, const uint8_t *p, size_t len, int nl)
{
    size_t count = 0, off = 0;
    while (off + (size_t)nl <= len) {
        size_t n = nl == 1 ? p[off] : (size_t)(p[off] << 8 | p[off + 1]);
        off += (size_t)nl;
        if (n > len - off)
            return NULL;
        off += n;
        count++;
    }
    if (off != len)
        return NULL;
    struct frame *f = frame_alloc(codec, len + count * (size_t)(4 - nl));
    if (!f)
        return NULL;
    uint8_t *o = frame_payload(f);
    off = 0;
    while (off < len) {
        size_t n = nl == 1 ? p[off] : (size_t)(p[off] << 8 | p[off + 1]);
        off += (size_t)nl;
        o[0] = (uint8_t)(n >> 24);
        o[1] = (uint8_t)(n >> 16);
        o[2] = (uint8_t)(n >> 8);
        o[3] = (uint8_t)n;
        memcpy(o + 4, p + off, n);
        o += 4 + n;
        off += n;
    }
    return f;
}

/* AV1 in MP4 carries no temporal delimiter OBUs (AV1-ISOBMFF 2.4). */
static struct frame *av1_frame(const uint8_t *p, size_t len)
{
    struct frame *f = frame_alloc(MEDIA_CODEC_AV1, len);
    if (!f)
        return NULL;
    uint8_t *o = frame_payload(f);
    size_t off = 0, w = 0;
    while (off < len) {
        uint8_t h = p[off];
        int type = (h >> 3) & 15;
        bool ext = h & 4, has_size = h & 2;
        size_t hl = 1 + (ext ? 1 : 0);
        if (!has_size || off + hl > len)
            break; /* not the low-overhead form: keep the rest as it is */
        uint64_t sz = 0;
        size_t i = 0;
        for (; i < 8 && off + hl + i < len; i++) {
            uint8_t b = p[off + hl + i];
            sz |= (uint64_t)(b & 0x7f) << (7 * i);
            if (!(b & 0x80))
                break;
        }
        size_t total = hl + i + 1 + (size_t)sz;
        if (i == 8 || off + total > len || total < hl)
            break;
        if (type != 2) { /* OBU_TEMPORAL_DELIMITER */
            memcpy(o + w, p + off, total);
            w += total;
        }
        off += total;
    }
    if (off < len) {
        memcpy(o + w, p + off, len - off);
        w += len - off;
    }
    frame_trim(f, 0, w);
    return f;
}

static void handle_media(struct rtmp_session *s, const struct rtmp_msg *m)
{
    if (s->state != S_PUBLISHING || !s->stream)
        return; /* media before publish is answered: ignore it */
    if (s->stream->state == STREAM_ENDED) {
        /* Ended under the publisher (its channel was deleted): let it go. */
        session_close(s, "the stream was ended by the server (channel deleted)");
        return;
    }
    s->last_media_ms = uv_now(s->srv->loop);
    struct flv_media fm;
    int rc = m->type == RTMP_MSG_VIDEO ? flv_parse_video(m->payload, m->len, &fm)
                                       : flv_parse_audio(m->payload, m->len, &fm);
    if (rc == -ENOTSUP) {
        if (!s->warned_codec)
            log_warn("rtmp %s %s: refused media: %s", s->remote, s->slug, fm.why);
        s->warned_codec = true;
        return;
    }
    if (rc != 0) {
        session_close(s, fm.why[0] ? fm.why : "malformed media message");
        return;
    }
    if (fm.packet == FLV_PACKET_SKIP || fm.packet == FLV_PACKET_CONFIG_TS || fm.packet == FLV_PACKET_END)
        return;
    enum media_codec codec = to_media_codec(fm.codec);
    if (fm.packet == FLV_PACKET_CONFIG) {
        struct codec_config cfg;
        memset(&cfg, 0, sizeof cfg);
        rc = codec_config_parse(&cfg, codec, fm.data, fm.len);
        if (rc != 0) {
            log_warn("rtmp %s %s: cannot read the %s configuration (%s)", s->remote, s->slug,
                     media_codec_name(codec), strerror(-rc));
            codec_config_free(&cfg);
            session_close(s, "bad codec configuration");
            return;
        }
        bool video = media_codec_kind(codec) == MEDIA_KIND_VIDEO;
        struct codec_config *slot = video ? &s->vcfg : &s->acfg;
        bool *have = video ? &s->have_vcfg : &s->have_acfg;
        if (*have)
            codec_config_free(slot);
        *slot = cfg;
        *have = true;
        if (video)
            s->nal_len = cfg.nal_length_size ? cfg.nal_length_size : 4;
        if (video)
            log_info("rtmp %s %s: video %s %ux%u", s->remote, s->slug, cfg.codecs, cfg.width, cfg.height);
        else
            log_info("rtmp %s %s: audio %s %u Hz, %u channel%s", s->remote, s->slug, cfg.codecs,
                     cfg.sample_rate, cfg.channels, cfg.channels == 1 ? "" : "s");
        stream_set_config(s->stream, slot);
        return;
    }
    bool video = media_codec_kind(codec) == MEDIA_KIND_VIDEO;
    if ((video && (!s->have_vcfg || s->vcfg.codec != codec)) ||
        (!video && (!s->have_acfg || s->acfg.codec != codec)))
        return; /* frames before their configuration cannot be decoded */
    int64_t dts_ms = clock_advance(s, m->timestamp, video ? &s->vclock : &s->aclock);
    struct frame *f;
    if (codec == MEDIA_CODEC_AV1) {
        f = av1_frame(fm.data, fm.len);
    } else if (video && s->nal_len != 4) {
        f = widen_nals(codec, fm.data, fm.len, s->nal_len);
    } else {
        /* The usual case: the message already holds the payload as the house
         * keeps it, so the chunk reader's storage becomes the frame and only
         * the FLV tag header in front is trimmed off (media/frame.h). */
        f = rtmp_chunk_take_frame(&s->rd);
        if (f) {
            f->codec = codec;
            f->kind = media_codec_kind(codec);
            if (frame_trim(f, (size_t)(fm.data - frame_payload(f)), fm.len) != 0) {
                frame_unref(f);
                f = NULL;
            }
        } else {
            f = frame_new(codec, fm.data, fm.len);
        }
    }
    if (!f) {
        session_close(s, "malformed or oversized frame");
        return;
    }
    f->dts = media_ts_from_ms(dts_ms);
    f->pts = media_ts_from_ms(dts_ms + fm.cts);
    f->keyframe = video ? fm.keyframe : true;
    if (s->pending_disc) {
        f->discontinuity = true;
        s->pending_disc = false;
    }
    s->frames++;
    stream_push(s->stream, f);
    frame_unref(f);
}

static void handle_message(struct rtmp_session *s, const struct rtmp_msg *m)
{
    switch (m->type) {
    case RTMP_MSG_AUDIO:
    case RTMP_MSG_VIDEO:
        handle_media(s, m);
        break;
    case RTMP_MSG_COMMAND_AMF0:
        handle_command(s, m->payload, m->len);
        break;
    case RTMP_MSG_COMMAND_AMF3:
        /* AMF3 command messages start with a 0 byte, then AMF0. */
        if (m->len > 0)
            handle_command(s, m->payload + 1, m->len - 1);
        break;
    case RTMP_MSG_DATA_AMF0:
        handle_data(s, m->payload, m->len);
        break;
    case RTMP_MSG_DATA_AMF3:
        if (m->len > 0)
            handle_data(s, m->payload + 1, m->len - 1);
        break;
    case RTMP_MSG_USER_CONTROL: {
        struct rtmp_user_control uc;
        if (rtmp_user_control_parse(m->payload, m->len, &uc) == 0 && uc.event == RTMP_UC_PING_REQUEST)
            rtmp_chunk_write_ping_response(&s->wr, &s->out, uc.value);
        break;
    }
    case RTMP_MSG_AGGREGATE:
        log_debug("rtmp %s: aggregate message ignored", s->remote);
        break;
    default:
        break; /* control messages the reader applied, acks, bandwidth */
    }
}

/* --- reading --------------------------------------------------------------------------- */

static void feed(struct rtmp_session *s, const uint8_t *data, size_t len)
{
    size_t off = 0;
    if (s->state == S_HANDSHAKE) {
        size_t used = 0;
        int rc = rtmp_hs_feed(&s->hs, data, len, &used, &s->out);
        off = used;
        if (rc < 0) {
            session_close(s, s->hs.error ? s->hs.error : "bad handshake");
            return;
        }
        if (rc == RTMP_HS_DONE) {
            s->state = S_CONNECTING;
            log_debug("rtmp %s: handshake done (%s form)", s->remote, s->hs.digest ? "digest" : "simple");
        }
    }
    while (off < len && !s->closing && s->state != S_HANDSHAKE && s->state != S_CLOSING) {
        struct rtmp_msg msg;
        size_t used = 0;
        int rc = rtmp_chunk_read(&s->rd, data + off, len - off, &used, &msg);
        off += used;
        if (rc < 0) {
            session_close(s, s->rd.error[0] ? s->rd.error : "protocol violation");
            return;
        }
        if (rc == RTMP_CHUNK_MSG)
            handle_message(s, &msg);
        else if (used == 0)
            break;
    }
    uint32_t seq;
    if (!s->closing && rtmp_chunk_ack_due(&s->rd, &seq))
        rtmp_chunk_write_ack(&s->wr, &s->out, seq);
    flush_out(s);
}

static void set_lowat(struct rtmp_session *s, int lowat)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
}

static void on_batch(uv_timer_t *t)
{
    struct rtmp_server *srv = t->data;
    for (struct rtmp_session *s = srv->sessions; s; s = s->next) {
        if (s->held) {
            s->held = false;
            set_lowat(s, 1);
        }
    }
}

/* Quiet this publisher's socket until the next batch (see the top). */
static void session_hold(struct rtmp_session *s)
{
    struct rtmp_server *srv = s->srv;
    if (s->held || srv->shutting_down)
        return;
    if (!srv->batch_open) {
        uv_timer_init(srv->loop, &srv->batch_timer);
        srv->batch_timer.data = srv;
        srv->batch_open = true;
    }
    set_lowat(s, HOLD_LOWAT);
    s->held = true;
    if (!uv_is_active((uv_handle_t *)&srv->batch_timer))
        uv_timer_start(&srv->batch_timer, on_batch, READ_BATCH_MS, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct rtmp_session *s = h->data;
    b->base = (char *)s->srv->readbuf;
    b->len = sizeof s->srv->readbuf;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct rtmp_session *s = st->data;
    if (n == 0 || s->closing)
        return;
    if (n < 0) {
        session_close(s, n == UV_EOF ? (s->state == S_PUBLISHING ? "publisher disconnected" : "client disconnected")
                                     : uv_strerror((int)n));
        return;
    }
    if (s->state == S_CLOSING)
        return;
    feed(s, (const uint8_t *)b->base, (size_t)n);
    if (s->state == S_PUBLISHING && !s->closing)
        session_hold(s);
}

static void on_tick(uv_timer_t *t)
{
    struct rtmp_session *s = t->data;
    const struct config *cfg = s->srv->cfg;
    uint64_t now = uv_now(s->srv->loop);
    if (s->state == S_HANDSHAKE && now - s->started_ms > cfg->rtmp.handshake_timeout_ms)
        session_close(s, "handshake not completed within rtmp.handshake_timeout");
    else if (s->state == S_PUBLISHING && now - s->last_media_ms > cfg->rtmp.idle_timeout_ms)
        session_close(s, "no media within rtmp.idle_timeout");
    else if (s->state == S_CONNECTING && now - s->started_ms > CONNECT_IDLE_MS)
        session_close(s, "connected but never published");
}

static void on_reject_closed(uv_handle_t *h) { free(h); }

static void on_connection(uv_stream_t *server, int status)
{
    struct rtmp_server *srv = server->data;
    if (status < 0)
        return;
    if (srv->shutting_down || srv->nsessions >= (size_t)srv->cfg->rtmp.max_connections) {
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(srv->loop, t);
        uv_accept(server, (uv_stream_t *)t);
        log_warn("rtmp: connection refused: rtmp.max_connections reached or shutting down");
        uv_close((uv_handle_t *)t, on_reject_closed);
        return;
    }
    struct rtmp_session *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->srv = srv;
    s->refs = 2;
    buf_init(&s->out, 0);
    struct rtmp_chunk_limits lim;
    rtmp_chunk_limits_default(&lim);
    lim.max_message_size = srv->cfg->rtmp.max_message_size;
    lim.max_pending = 2 * lim.max_message_size;
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    if (rtmp_chunk_reader_init(&s->rd, &lim) != 0 || uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
        s->closing = true;
        uv_close((uv_handle_t *)&s->timer, on_closed);
        uv_close((uv_handle_t *)&s->tcp, on_closed);
        return;
    }
    rtmp_chunk_writer_init(&s->wr);
    rtmp_hs_init(&s->hs, (uint32_t)uv_now(srv->loop));
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    s->started_ms = uv_now(srv->loop);
    uv_tcp_nodelay(&s->tcp, 1);
    net_peer_name(&s->tcp, s->remote, sizeof s->remote);
    uv_timer_start(&s->timer, on_tick, TICK_MS, TICK_MS);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

/* --- the server ---------------------------------------------------------------------------- */

struct rtmp_server *rtmp_server_new(uv_loop_t *loop, const struct config *cfg,
                                    struct stream_hub *hub, rtmp_authorize_fn authorize, void *ud)
{
    struct rtmp_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->cfg = cfg;
    srv->hub = hub;
    srv->authorize = authorize;
    srv->auth_ud = ud;
    return srv;
}

int rtmp_server_listen(struct rtmp_server *srv, const char *listen, char *err, size_t errlen)
{
    int rc = net_tcp_listen(srv->loop, &srv->listener, listen, 128, on_connection, &srv->port,
                            err, errlen);
    if (rc != 0)
        return rc;
    srv->listener.data = srv;
    srv->listening = true;
    return 0;
}

int rtmp_server_port(struct rtmp_server *srv) { return srv->port; }

size_t rtmp_server_sessions(struct rtmp_server *srv) { return srv->nsessions; }

static void on_listener_closed(uv_handle_t *h) { shutdown_maybe_done(h->data); }

static void on_batch_closed(uv_handle_t *h)
{
    struct rtmp_server *srv = h->data;
    srv->batch_open = false;
    shutdown_maybe_done(srv);
}

void rtmp_server_shutdown(struct rtmp_server *srv, void (*cb)(void *arg), void *arg)
{
    srv->shutting_down = true;
    srv->shutdown_cb = cb;
    srv->shutdown_arg = arg;
    while (srv->sessions)
        session_close(srv->sessions, "server shutting down");
    bool pending = false;
    if (srv->batch_open && !uv_is_closing((uv_handle_t *)&srv->batch_timer)) {
        uv_close((uv_handle_t *)&srv->batch_timer, on_batch_closed);
        pending = true;
    }
    if (srv->listening) {
        srv->listening = false;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
        pending = true;
    }
    if (!pending)
        shutdown_maybe_done(srv);
}

void rtmp_server_free(struct rtmp_server *srv) { free(srv); }
