/*
 * WebSocket server connections: the handshake, then wslay's event API on
 * bytes that libuv reads and writes.
 *
 * wslay wants to pull bytes (recv callback) and push bytes (send callback)
 * itself. We feed it from memory: each read from the socket is offered to
 * wslay_event_recv() through `in`, and whatever wslay_event_send() pushes is
 * gathered in `out` and handed to libuv as one write. So wslay never sees a
 * socket, and the same machine runs on memory for the tests (the "mem"
 * transport).
 *
 * wslay keeps the state of the protocol: it reassembles fragments (up to
 * max_message, then it queues a 1009 close by itself), answers pings,
 * answers a close, and refuses frames that break RFC 6455 with a 1002
 * close. We keep the limits around it:
 *
 *   - output: messages wait in wslay's queue while the socket's write queue
 *     is above FLUSH_HIGH; a send that would make the two together exceed
 *     max_queue cuts the peer off (it does not read: no close frame would
 *     reach it anyway);
 *   - silence: a timer pings a peer that sent nothing for ping_ms and tells
 *     the owner (on_idle) once nothing came for idle_timeout_ms;
 *   - the close handshake: once both close frames went (wslay wants neither
 *     to read nor to write) and our writes are out, the socket is closed;
 *     a peer that does not answer our close gets WS_CLOSE_WAIT_MS.
 *
 * Callbacks to the owner happen inside wslay_event_recv(); what the owner
 * does from them (send, close) only queues, and is carried out by ws_pump()
 * once wslay has returned. The socket itself belongs to net/http until the
 * 101 is out; http_upgraded_close() gives it back, and net/http's on_closed
 * is where the connection ends: on_close for the owner, then free.
 */
#include "net/ws.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/http.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define READ_BUF_SIZE (64 * 1024)
#define SEND_ROUND (256 * 1024) /* bytes gathered per uv_write */
#define FLUSH_HIGH (256 * 1024) /* socket queue above this: messages wait in wslay */

enum ws_transport { WS_MEM, WS_TCP };

struct ws_conn {
    wslay_event_context_ptr ctx;
    struct ws_handlers h;
    size_t max_queue;
    uint64_t ping_ms, idle_ms;
    enum ws_transport transport;
    char peer[64];

    /* Bytes offered to wslay_event_recv(). */
    const char *in;
    size_t in_len;
    /* Bytes wslay_event_send() pushed, not yet handed to the transport. */
    struct buf out;

    bool in_recv;        /* inside wslay_event_recv: owner calls only queue */
    bool close_queued;   /* a close frame is queued or sent: no more messages either way */
    bool transport_done; /* the socket is closing or closed: nothing more goes out */
    bool closed_cb_done; /* on_close was called */
    bool lingering;      /* close handshake over: FIN sent, draining until the peer's */
    bool close_pending;  /* ws_close was called: the close frame follows the queued messages */
    uint16_t close_send_code;
    char close_reason[124];
    int close_code;      /* received, else sent; 0 until then */

    /* WS_TCP */
    struct http_conn *hc;
    uv_tcp_t *tcp;
    uv_timer_t timer;
    bool timer_init;
    bool opened;
    int writes; /* uv_write requests in flight */
    uint64_t last_rx_ms;
    bool close_timer; /* the timer waits for the peer's close, not for silence */
    uv_shutdown_t shutdown_req;

    /* WS_MEM */
    ws_out_fn mem_out;
    void *mem_ud;
};

struct ws_write {
    uv_write_t req;
    struct ws_conn *ws;
    char *data;
};

static void ws_pump(struct ws_conn *ws);
static void ws_linger(struct ws_conn *ws);
static void on_timer(uv_timer_t *t);
static void ws_transport_close(struct ws_conn *ws);
static void mem_finish(struct ws_conn *ws);

/* ---------------------------------------------------------------------- */
/* the handshake                                                           */

int ws_accept_key(const char *key, char out[29])
{
    char in[128];
    int n = snprintf(in, sizeof in, "%s%s", key, WS_GUID);
    if (n < 0 || (size_t)n >= sizeof in)
        return -EINVAL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return -EIO;
    /* 20 bytes -> 28 base64 characters and a NUL. */
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
        return -EIO;
    return 0;
}

bool ws_key_valid(const char *key)
{
    if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return false;
    unsigned char raw[24];
    /* EVP_DecodeBlock counts the padding as zero bytes: 18 for 16. */
    return EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18;
}

bool ws_token_list_has(const char *value, const char *token, bool nocase)
{
    if (!value)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl &&
            (nocase ? strncasecmp(p, token, tl) == 0 : strncmp(p, token, tl) == 0))
            return true;
        p = e;
    }
    return false;
}

/*
 * "Scheme://host[:port]" of s (an Origin or a URL; a path is dropped) in
 * lower case, without a default port. -EINVAL when it is not one.
 */
static int origin_normalize(const char *s, size_t len, char *out, size_t n)
{
    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len; i++)
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            sep = s + i;
            break;
        }
    if (!sep || sep == s)
        return -EINVAL;
    size_t slen = (size_t)(sep - s);
    const char *host = sep + 3;
    size_t hlen = 0;
    while (host + hlen < s + len && host[hlen] != '/' && host[hlen] != '?' && host[hlen] != '#')
        hlen++;
    if (hlen == 0 || slen + 3 + hlen >= n)
        return -EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < slen; i++)
        out[o++] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[o++] = ':';
    out[o++] = '/';
    out[o++] = '/';
    for (size_t i = 0; i < hlen; i++)
        out[o++] = (char)(host[i] >= 'A' && host[i] <= 'Z' ? host[i] + 32 : host[i]);
    out[o] = '\0';
    /* Drop a default port (not inside an IPv6 literal's brackets). */
    char *colon = strrchr(out + slen + 3, ':');
    char *bracket = strrchr(out + slen + 3, ']');
    if (colon && (!bracket || colon > bracket)) {
        bool http = strncmp(out, "http:", 5) == 0 || strncmp(out, "ws:", 3) == 0;
        bool https = strncmp(out, "https:", 6) == 0 || strncmp(out, "wss:", 4) == 0;
        if ((http && strcmp(colon, ":80") == 0) || (https && strcmp(colon, ":443") == 0))
            *colon = '\0';
    }
    return 0;
}

bool ws_origin_allowed(const char *origin, const char *allowed, const char *public_url)
{
    char want[512], have[512];
    if (!origin || origin_normalize(origin, strlen(origin), have, sizeof have) != 0)
        return false;
    if (allowed && allowed[0]) {
        const char *p = allowed;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            const char *q = p;
            size_t ql = l;
            while (ql && (*q == ' ' || *q == '\t')) {
                q++;
                ql--;
            }
            while (ql && (q[ql - 1] == ' ' || q[ql - 1] == '\t'))
                ql--;
            if (ql == 1 && q[0] == '*')
                return true;
            if (origin_normalize(q, ql, want, sizeof want) == 0 && strcmp(want, have) == 0)
                return true;
            if (!e)
                break;
            p = e + 1;
        }
        return false;
    }
    if (!public_url || origin_normalize(public_url, strlen(public_url), want, sizeof want) != 0)
        return false;
    return strcmp(want, have) == 0;
}

static int refuse(struct http_request *req, int status, const char *code, const char *why)
{
    log_info("ws %s: %s refused (%d): %s", req->remote, req->path ? req->path : "?", status, why);
    http_response_error(req, status, code, why);
    if (status == 426 || status == 400) {
        http_response_header(req, "Sec-WebSocket-Version", "13");
        if (status == 426) {
            http_response_header(req, "Upgrade", "websocket");
            http_response_header(req, "Connection", "Upgrade");
        }
    }
    return -EINVAL;
}

/* ---------------------------------------------------------------------- */
/* wslay's side                                                            */

static ssize_t on_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                             void *ud)
{
    struct ws_conn *ws = ud;
    if (ws->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_len -= n;
    return (ssize_t)n;
}

static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                             int flags, void *ud)
{
    struct ws_conn *ws = ud;
    if (ws->out.len >= SEND_ROUND) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t room = SEND_ROUND - ws->out.len;
    size_t n = len < room ? len : room;
    if (buf_append(&ws->out, data, n) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)n;
}

static void on_wslay_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                         void *ud)
{
    struct ws_conn *ws = ud;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        if (ws->close_queued || ws->transport_done || !ws->h.on_message)
            return;
        ws->h.on_message(ws->h.ud, (const char *)arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        log_info("ws %s: binary message; closing (1003)", ws->peer);
        ws_close(ws, WS_CLOSE_UNSUPPORTED, "text messages only");
        break;
    case WSLAY_CONNECTION_CLOSE:
        ws->close_code = arg->status_code ? arg->status_code : WS_CLOSE_NO_STATUS;
        ws->close_queued = true; /* wslay answers it */
        break;
    default:
        break;
    }
}

static int ws_init_ctx(struct ws_conn *ws, const struct ws_options *o, const struct ws_handlers *h)
{
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = on_wslay_recv,
        .send_callback = on_wslay_send,
        .on_msg_recv_callback = on_wslay_msg,
    };
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0)
        return -ENOMEM;
    size_t max_message = o && o->max_message ? o->max_message : WS_MAX_MESSAGE;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message);
    ws->h = *h;
    ws->max_queue = o && o->max_queue ? o->max_queue : WS_MAX_QUEUE;
    ws->ping_ms = o ? o->ping_ms : 0;
    ws->idle_ms = o ? o->idle_timeout_ms : 0;
    buf_init(&ws->out, SEND_ROUND);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* the owner's calls                                                       */

static size_t queued_bytes(struct ws_conn *ws)
{
    size_t n = wslay_event_get_queued_msg_length(ws->ctx) + ws->out.len;
    if (ws->transport == WS_TCP && ws->tcp && ws->opened)
        n += uv_stream_get_write_queue_size((uv_stream_t *)ws->tcp);
    return n;
}

int ws_send_text(struct ws_conn *ws, const char *data, size_t len)
{
    if (ws->close_queued || ws->transport_done)
        return -EPIPE;
    if (queued_bytes(ws) + len > ws->max_queue) {
        log_warn("ws %s: peer is not reading (%zu bytes waiting, limit %zu); cutting it off",
                 ws->peer, queued_bytes(ws) + len, ws->max_queue);
        ws->close_code = WS_CLOSE_POLICY;
        ws_transport_close(ws);
        mem_finish(ws);
        return -ENOBUFS;
    }
    struct wslay_event_msg m = {.opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)data,
                                .msg_length = len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return -EPIPE;
    ws_pump(ws);
    return 0;
}

void ws_close(struct ws_conn *ws, int code, const char *reason)
{
    if (ws->close_queued || ws->transport_done)
        return;
    /* wslay sends control frames ahead of queued messages, and nothing
     * after a close: the close waits in close_pending until the messages
     * before it (an XMPP <close/>, a stream error) are out. */
    ws->close_queued = true;
    ws->close_pending = true;
    ws->close_send_code = (uint16_t)code;
    snprintf(ws->close_reason, sizeof ws->close_reason, "%s", reason ? reason : "");
    if (ws->transport == WS_TCP && ws->opened && !ws->close_timer) {
        /* Bounded from here: a peer that reads nothing never gets our close. */
        ws->close_timer = true;
        uv_timer_start(&ws->timer, on_timer, WS_CLOSE_WAIT_MS, 0);
    }
    ws_pump(ws);
}

const char *ws_peer(const struct ws_conn *ws) { return ws->peer; }

/* ---------------------------------------------------------------------- */
/* the transports                                                          */

static void on_tcp_write(uv_write_t *req, int status)
{
    struct ws_write *w = (struct ws_write *)req;
    struct ws_conn *ws = w->ws;
    free(w->data);
    free(w);
    ws->writes--;
    if (ws->transport_done)
        return;
    if (status < 0) {
        log_debug("ws %s: write failed: %s", ws->peer, uv_strerror(status));
        ws_transport_close(ws);
        return;
    }
    ws_pump(ws);
}

/* Hand out what wslay pushed into `out`. */
static int ws_write_out(struct ws_conn *ws)
{
    if (ws->out.len == 0)
        return 0;
    if (ws->transport == WS_MEM) {
        int rc = ws->mem_out(ws->mem_ud, ws->out.data, ws->out.len);
        buf_reset(&ws->out);
        return rc < 0 ? rc : 0;
    }
    struct ws_write *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    size_t len;
    w->ws = ws;
    w->data = buf_steal(&ws->out, &len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)ws->tcp, &b, 1, on_tcp_write);
    if (rc < 0) {
        free(w->data);
        free(w);
        return rc;
    }
    ws->writes++;
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct ws_conn *ws = req->data;
    if (!ws->transport_done && status < 0)
        ws_transport_close(ws);
}

/*
 * The server closes the TCP connection first (RFC 6455 7.1.1), but with a
 * FIN, reading and dropping what still comes until the peer's FIN: closing
 * a socket with unread input sends a reset, which can destroy our close
 * frame before the peer has read it (a client still sending the rest of a
 * message that was too big). WS_CLOSE_WAIT_MS bounds it.
 */
static void ws_linger(struct ws_conn *ws)
{
    if (ws->lingering || ws->transport_done)
        return;
    ws->lingering = true;
    if (ws->transport == WS_MEM) {
        ws_transport_close(ws);
        return;
    }
    ws->close_timer = true;
    uv_timer_start(&ws->timer, on_timer, WS_CLOSE_WAIT_MS, 0);
    ws->shutdown_req.data = ws;
    if (uv_shutdown(&ws->shutdown_req, (uv_stream_t *)ws->tcp, on_shutdown) != 0)
        ws_transport_close(ws);
}

/* Close the socket now; what is still queued is dropped. */
static void ws_transport_close(struct ws_conn *ws)
{
    if (ws->transport_done)
        return;
    ws->transport_done = true;
    ws->close_queued = true;
    if (ws->transport == WS_MEM) {
        /* on_close now, or once wslay_event_recv has returned. */
        mem_finish(ws);
        return;
    }
    if (ws->timer_init)
        uv_timer_stop(&ws->timer);
    http_upgraded_close(ws->hc);
}

static void mem_finish(struct ws_conn *ws)
{
    if (ws->transport == WS_MEM && ws->transport_done && !ws->closed_cb_done && !ws->in_recv) {
        ws->closed_cb_done = true;
        if (ws->h.on_close)
            ws->h.on_close(ws->h.ud, ws->close_code ? ws->close_code : WS_CLOSE_ABNORMAL);
    }
}

/*
 * Move what wslay has queued to the transport, and close the socket once
 * the close handshake is over.
 */
static void ws_pump(struct ws_conn *ws)
{
    if (ws->in_recv || ws->transport_done)
        return;
    if (ws->transport == WS_TCP && !ws->opened)
        return; /* on_open pumps */
    bool close_was_sent = wslay_event_get_close_sent(ws->ctx);
    for (;;) {
        if (ws->transport == WS_TCP &&
            uv_stream_get_write_queue_size((uv_stream_t *)ws->tcp) > FLUSH_HIGH)
            break; /* on_tcp_write comes back */
        if (ws->close_pending && wslay_event_get_queued_msg_count(ws->ctx) == 0) {
            ws->close_pending = false;
            /* Fails when the peer's close came first: wslay answers that one. */
            wslay_event_queue_close(ws->ctx, ws->close_send_code,
                                    (const uint8_t *)ws->close_reason, strlen(ws->close_reason));
        }
        if (!wslay_event_want_write(ws->ctx))
            break;
        if (wslay_event_send(ws->ctx) != 0) {
            ws_transport_close(ws);
            mem_finish(ws);
            return;
        }
        if (ws->out.len == 0)
            break;
        if (ws_write_out(ws) != 0) {
            ws_transport_close(ws);
            mem_finish(ws);
            return;
        }
    }
    if (wslay_event_get_close_sent(ws->ctx)) {
        if (!close_was_sent) {
            ws->close_queued = true;
            uint16_t sent = wslay_event_get_status_code_sent(ws->ctx);
            if (!ws->close_code)
                ws->close_code = sent;
            /* wslay closes by itself for a message too big (1009), a frame
             * that breaks the protocol (1002) or bad UTF-8 (1007). */
            if (sent == WS_CLOSE_TOO_BIG || sent == WS_CLOSE_PROTOCOL || sent == WS_CLOSE_BAD_DATA)
                log_info("ws %s: closing (%u): %s", ws->peer, sent,
                         sent == WS_CLOSE_TOO_BIG ? "message larger than the limit"
                         : sent == WS_CLOSE_BAD_DATA ? "text that is not UTF-8"
                                                     : "protocol error");
        }
        if (!wslay_event_want_read(ws->ctx)) {
            /* Both close frames went, or wslay stopped reading after an
             * error: end once our writes are out (on_tcp_write pumps). */
            if (ws->writes == 0)
                ws_linger(ws);
        } else if (ws->transport == WS_TCP && !ws->close_timer) {
            ws->close_timer = true;
            uv_timer_start(&ws->timer, on_timer, WS_CLOSE_WAIT_MS, 0);
        }
    }
    mem_finish(ws);
}

/* Bytes from the peer. */
static int ws_feed(struct ws_conn *ws, const char *data, size_t len)
{
    if (ws->transport_done)
        return -EPIPE;
    ws->in = data;
    ws->in_len = len;
    ws->in_recv = true;
    int rc = wslay_event_recv(ws->ctx);
    ws->in_recv = false;
    ws->in = NULL;
    ws->in_len = 0; /* after a close or an error wslay reads no more: drop the rest */
    if (rc != 0) {
        log_info("ws %s: receive failed (%d); closing", ws->peer, rc);
        ws_transport_close(ws);
        mem_finish(ws);
        return -EPROTO;
    }
    ws_pump(ws);
    return ws->transport_done ? -EPIPE : 0;
}

/* --- memory ------------------------------------------------------------- */

struct ws_conn *ws_conn_new_mem(const struct ws_options *o, const struct ws_handlers *h,
                                ws_out_fn out, void *out_ud)
{
    struct ws_conn *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->transport = WS_MEM;
    ws->mem_out = out;
    ws->mem_ud = out_ud;
    snprintf(ws->peer, sizeof ws->peer, "mem");
    if (ws_init_ctx(ws, o, h) != 0) {
        free(ws);
        return NULL;
    }
    return ws;
}

int ws_conn_feed(struct ws_conn *ws, const char *data, size_t len) { return ws_feed(ws, data, len); }

bool ws_conn_closed(const struct ws_conn *ws) { return ws->transport_done; }

void ws_conn_free(struct ws_conn *ws)
{
    if (!ws)
        return;
    wslay_event_context_free(ws->ctx);
    buf_free(&ws->out);
    free(ws);
}

/* --- TCP, after net/http's 101 ------------------------------------------ */

static char shared_readbuf[READ_BUF_SIZE];
static bool shared_readbuf_busy;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    /* Reads are handled synchronously on the one loop thread: one buffer
     * serves every connection; a nested read (none expected) gets its own. */
    if (!shared_readbuf_busy) {
        shared_readbuf_busy = true;
        *b = uv_buf_init(shared_readbuf, sizeof shared_readbuf);
        return;
    }
    char *p = malloc(READ_BUF_SIZE);
    *b = uv_buf_init(p, p ? READ_BUF_SIZE : 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ws_conn *ws = s->data;
    if (nread > 0 && ws->lingering) {
        /* dropped */
    } else if (nread > 0 && !ws->transport_done) {
        ws->last_rx_ms = uv_now(s->loop);
        ws_feed(ws, b->base, (size_t)nread);
    } else if (nread < 0 && !ws->transport_done) {
        if (nread != UV_EOF)
            log_debug("ws %s: read failed: %s", ws->peer, uv_strerror((int)nread));
        else if (!wslay_event_get_close_received(ws->ctx))
            log_debug("ws %s: peer closed without a close frame", ws->peer);
        uv_read_stop(s);
        ws_transport_close(ws);
    }
    if (b->base == shared_readbuf)
        shared_readbuf_busy = false;
    else
        free(b->base);
}

static void on_timer(uv_timer_t *t)
{
    struct ws_conn *ws = t->data;
    if (ws->transport_done)
        return;
    if (ws->close_timer) {
        log_info("ws %s: no answer to our close within %d ms; closing", ws->peer, WS_CLOSE_WAIT_MS);
        ws_transport_close(ws);
        return;
    }
    uint64_t now = uv_now(t->loop);
    uint64_t silent = now - ws->last_rx_ms;
    if (ws->idle_ms && silent >= ws->idle_ms) {
        log_info("ws %s: nothing received for %llu ms; closing", ws->peer,
                 (unsigned long long)silent);
        if (ws->h.on_idle)
            ws->h.on_idle(ws->h.ud);
        else
            ws_close(ws, WS_CLOSE_GOING_AWAY, "idle");
        /* The owner's goodbye may never be answered: the close timer is
         * armed by ws_pump once the close frame went. */
        if (!ws->close_queued)
            ws_close(ws, WS_CLOSE_GOING_AWAY, "idle");
        return;
    }
    if (ws->ping_ms && silent >= ws->ping_ms) {
        struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
        if (wslay_event_queue_msg(ws->ctx, &m) == 0)
            ws_pump(ws);
    }
}

static uint64_t tick_ms(const struct ws_conn *ws)
{
    uint64_t t = ws->ping_ms;
    if (ws->idle_ms && (!t || ws->idle_ms < t))
        t = ws->idle_ms;
    /* Check silence at a quarter of the period: close within 25 % of it. */
    return t ? (t / 4 ? t / 4 : 1) : 0;
}

static void on_http_open(void *ud, struct http_conn *hc, uv_tcp_t *tcp, const char *data,
                         size_t len)
{
    struct ws_conn *ws = ud;
    ws->hc = hc;
    ws->tcp = tcp;
    ws->opened = true;
    uv_timer_init(tcp->loop, &ws->timer);
    ws->timer.data = ws;
    ws->timer_init = true;
    ws->last_rx_ms = uv_now(tcp->loop);
    uint64_t tick = tick_ms(ws);
    if (ws->close_queued) {
        ws->close_timer = true;
        uv_timer_start(&ws->timer, on_timer, WS_CLOSE_WAIT_MS, 0);
    } else if (tick) {
        uv_timer_start(&ws->timer, on_timer, tick, tick);
    }
    if (uv_read_start((uv_stream_t *)tcp, on_alloc, on_read) != 0) {
        ws_transport_close(ws);
        return;
    }
    if (len)
        ws_feed(ws, data, len);
    else
        ws_pump(ws);
}

static void ws_free_tcp(struct ws_conn *ws)
{
    if (!ws->closed_cb_done) {
        ws->closed_cb_done = true;
        if (ws->h.on_close)
            ws->h.on_close(ws->h.ud, ws->close_code ? ws->close_code : WS_CLOSE_ABNORMAL);
    }
    ws_conn_free(ws);
}

static void on_timer_closed(uv_handle_t *h) { ws_free_tcp(h->data); }

static void on_http_closed(void *ud)
{
    struct ws_conn *ws = ud;
    ws->transport_done = true;
    ws->close_queued = true;
    if (ws->timer_init) {
        uv_close((uv_handle_t *)&ws->timer, on_timer_closed);
        return;
    }
    ws_free_tcp(ws);
}

static void on_http_shutdown(void *ud)
{
    struct ws_conn *ws = ud;
    if (ws->transport_done)
        return;
    if (ws->h.on_shutdown)
        ws->h.on_shutdown(ws->h.ud);
    if (!ws->close_queued)
        ws_close(ws, WS_CLOSE_GOING_AWAY, "server shutting down");
}

int ws_upgrade(struct http_request *req, const struct ws_options *o, const struct ws_handlers *h,
               struct ws_conn **out)
{
    *out = NULL;
    if (req->http_major != 1 || req->http_minor < 1)
        return refuse(req, 400, "bad_request", "WebSocket needs HTTP/1.1");
    if (!ws_token_list_has(http_request_header(req, "Upgrade"), "websocket", true))
        return refuse(req, 426, "upgrade_required", "this is a WebSocket endpoint");
    if (!ws_token_list_has(http_request_header(req, "Connection"), "upgrade", true))
        return refuse(req, 400, "bad_request", "Connection: Upgrade is missing");
    const char *version = http_request_header(req, "Sec-WebSocket-Version");
    if (!version || strcmp(version, "13") != 0)
        return refuse(req, 426, "upgrade_required", "only WebSocket version 13 is spoken");
    const char *key = http_request_header(req, "Sec-WebSocket-Key");
    if (!ws_key_valid(key))
        return refuse(req, 400, "bad_request", "Sec-WebSocket-Key is missing or malformed");
    /* Browsers always send Origin, and it is what stops another site's page
     * from using a visitor's cookies here; other clients need not send one. */
    const char *origin = http_request_header(req, "Origin");
    if (origin && !ws_origin_allowed(origin, o->origins, o->public_url)) {
        log_info("ws %s: origin %.200s is not allowed (xmpp.websocket_origins)", req->remote,
                 origin);
        http_response_error(req, 403, "forbidden", "this origin may not open a WebSocket here");
        return -EPERM;
    }
    if (o->subprotocol &&
        !ws_token_list_has(http_request_header(req, "Sec-WebSocket-Protocol"), o->subprotocol,
                           false)) {
        char why[96];
        snprintf(why, sizeof why, "the WebSocket subprotocol '%s' is required", o->subprotocol);
        return refuse(req, 400, "bad_request", why);
    }

    char accept[29];
    if (ws_accept_key(key, accept) != 0) {
        http_response_error(req, 500, "internal", "could not compute the accept key");
        return -EIO;
    }
    struct ws_conn *ws = calloc(1, sizeof *ws);
    if (!ws || ws_init_ctx(ws, o, h) != 0) {
        free(ws);
        http_response_error(req, 503, "unavailable", "out of memory");
        return -ENOMEM;
    }
    ws->transport = WS_TCP;
    snprintf(ws->peer, sizeof ws->peer, "%s", req->remote);
    http_response_header(req, "Sec-WebSocket-Accept", accept);
    if (o->subprotocol)
        http_response_header(req, "Sec-WebSocket-Protocol", o->subprotocol);
    struct http_upgrade up = {
        .protocol = "websocket",
        .ud = ws,
        .on_open = on_http_open,
        .on_shutdown = on_http_shutdown,
        .on_closed = on_http_closed,
    };
    int rc = http_request_upgrade(req, &up);
    if (rc != 0) {
        ws_conn_free(ws);
        buf_reset(&req->res.headers);
        if (rc == -ESHUTDOWN)
            http_response_error(req, 503, "unavailable", "the server is shutting down");
        else
            http_response_error(req, 400, "bad_request", "this request cannot be upgraded");
        return rc;
    }
    *out = ws;
    return 0;
}
