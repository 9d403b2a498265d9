/*
 * XMPP over WebSocket (RFC 7395): net/ws carries the messages, chat/c2s
 * runs the stream.
 *
 * GET /xmpp-websocket is a route on the HTTP server. Its handler checks
 * the connection limit, lets ws_upgrade() check the handshake (subprotocol
 * "xmpp", Origin against xmpp.websocket_origins or site.public_url) and
 * switch protocols, and starts a c2s session in framed mode: each text
 * message is one top-level element (<open/>, a stanza, <close/>) and each
 * write of the session is one message. The session counts as secure: the
 * page reached us over https through the proxy that terminates TLS, or over
 * http on the same machine; either way the browser's Origin was checked.
 *
 * Who ends what: the session asks the transport to close (t_close) after
 * its <close/> or stream error, and the WebSocket close handshake follows;
 * a peer that vanishes, a limit or the end of the handshake reaches us as
 * on_close, and only then is the session freed. Silence (xmpp.idle_timeout)
 * and a server shutdown end the stream with connection-timeout and
 * system-shutdown. WebSocket pings every xmpp.keepalive keep proxies from
 * dropping a quiet chat.
 *
 * The session's address is the upgrade request's client address
 * (http_request_client_ip): the socket's, or X-Forwarded-For's when the
 * socket is one of http.trusted_proxies. Guest bans and login throttling
 * go by it.
 */
#include "chat/c2s_ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/c2s.h"
#include "chat/xmpp.h"
#include "core/config.h"
#include "core/log.h"
#include "net/http.h"
#include "net/ws.h"

struct c2s_ws {
    struct xmpp_server *x;
    struct c2s_session *s;
    struct ws_conn *ws; /* NULL once it is gone */
    char ip[64];
};

/* WebSocket connections open now, bound or not (xmpp_server_stats counts
 * the bound ones only): for xmpp.max_connections. One XMPP server per
 * process, on the loop thread. */
static size_t ws_open;

static int t_write(void *ud, const void *data, size_t len)
{
    struct c2s_ws *cw = ud;
    if (!cw->ws)
        return -EPIPE;
    return ws_send_text(cw->ws, data, len);
}

static void t_close(void *ud)
{
    struct c2s_ws *cw = ud;
    if (cw->ws)
        ws_close(cw->ws, WS_CLOSE_NORMAL, NULL);
}

static void on_message(void *ud, const char *data, size_t len)
{
    struct c2s_ws *cw = ud;
    if (cw->s)
        c2s_session_feed_frame(cw->s, data, len); /* on error the session closes itself */
}

static void on_idle(void *ud)
{
    struct c2s_ws *cw = ud;
    if (cw->s)
        c2s_session_end(cw->s, "connection-timeout");
}

static void on_shutdown(void *ud)
{
    struct c2s_ws *cw = ud;
    if (cw->s)
        c2s_session_end(cw->s, "system-shutdown");
}

static void on_close(void *ud, int code)
{
    struct c2s_ws *cw = ud;
    cw->ws = NULL;
    struct c2s_session *s = cw->s;
    cw->s = NULL;
    log_debug("xmpp ws %s: closed (%d)", cw->ip, code);
    c2s_session_free(s);
    ws_open--;
    free(cw);
}

static int on_request(struct http_request *req, void *ud)
{
    struct xmpp_server *x = ud;
    const struct config *cfg = xmpp_server_config(x);

    struct xmpp_stats st;
    xmpp_server_stats(x, &st);
    size_t open = ws_open + st.c2s + st.s2s_in + st.s2s_out;
    if (open >= (size_t)cfg->xmpp.max_connections) {
        log_warn("xmpp ws %s: connection refused: xmpp.max_connections (%d) reached",
                 http_request_client_ip(req), cfg->xmpp.max_connections);
        http_response_error(req, 503, "unavailable", "too many chat connections; try again later");
        http_response_header(req, "Retry-After", "10");
        return 0;
    }

    struct c2s_ws *cw = calloc(1, sizeof *cw);
    if (!cw)
        return http_response_error(req, 503, "unavailable", "out of memory");
    cw->x = x;
    snprintf(cw->ip, sizeof cw->ip, "%s", http_request_client_ip(req));

    const struct ws_options o = {
        .subprotocol = "xmpp",
        .origins = cfg->xmpp.websocket_origins,
        .public_url = cfg->site.public_url,
        .max_message = WS_MAX_MESSAGE,
        .max_queue = WS_MAX_QUEUE,
        .ping_ms = cfg->xmpp.keepalive_ms,
        .idle_timeout_ms = cfg->xmpp.idle_timeout_ms,
    };
    const struct ws_handlers h = {
        .ud = cw,
        .on_message = on_message,
        .on_idle = on_idle,
        .on_shutdown = on_shutdown,
        .on_close = on_close,
    };
    if (ws_upgrade(req, &o, &h, &cw->ws) != 0) {
        free(cw); /* req carries the refusal */
        return 0;
    }
    ws_open++;
    const struct c2s_params p = {
        .framing = STANZA_FRAMING_WS,
        .secure = true,
        .websocket = true,
        .ip = cw->ip,
    };
    const struct c2s_transport t = {.ud = cw, .write = t_write, .close = t_close};
    cw->s = c2s_session_new(x, &p, &t);
    if (!cw->s) {
        log_warn("xmpp ws %s: no memory for a session", cw->ip);
        ws_close(cw->ws, WS_CLOSE_INTERNAL, "out of memory");
    }
    return 0;
}

int c2s_ws_register(struct xmpp_server *x, struct http_server *h)
{
    return http_server_route(h, "GET", C2S_WS_PATH, on_request, x, 0);
}
