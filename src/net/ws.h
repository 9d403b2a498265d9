/*
 * WebSocket server connections (RFC 6455), on wslay.
 *
 * A route handler on the HTTP server calls ws_upgrade(): it checks the
 * handshake (GET, Upgrade: websocket, Connection: Upgrade, version 13, a
 * key, the Origin against a list, the subprotocol the caller speaks),
 * answers the bad ones itself (400, 403, 426) and otherwise writes the 101
 * and takes the socket over from net/http. From then on the caller gets
 * whole text messages (fragments reassembled, at most max_message bytes:
 * larger ones close the connection with 1009) and sends text messages;
 * pings are answered and sent, the close handshake is done, and a peer that
 * does not read what it is sent is cut off once max_queue bytes wait for it.
 *
 * Everything runs on the loop thread. The connection is freed after
 * on_close, which is called exactly once for every ws_upgrade() that
 * returned 0.
 *
 * ws_conn_new_mem() runs the same machine on memory (bytes in through
 * ws_conn_feed, bytes out through a callback) for tests and fuzzing.
 */
#ifndef HEARTH_NET_WS_H
#define HEARTH_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request;
struct ws_conn;

#define WS_MAX_MESSAGE (256 * 1024) /* default max_message */
#define WS_MAX_QUEUE (1024 * 1024)  /* default max_queue */
#define WS_CLOSE_WAIT_MS 2000       /* for the peer's answer to our close */

/* Close codes (RFC 6455 7.4.1) the callers use. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,
    WS_CLOSE_ABNORMAL = 1006, /* never sent: the connection just went away */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_LATER = 1013,
};

struct ws_handlers {
    void *ud;
    /* One complete text message. Binary ones are refused (1003). */
    void (*on_message)(void *ud, const char *data, size_t len);
    /* Nothing arrived for idle_timeout_ms. NULL: the connection is closed
     * with 1001; otherwise the owner ends its protocol and calls ws_close. */
    void (*on_idle)(void *ud);
    /* The server is shutting down. NULL: closed with 1001, as above. */
    void (*on_shutdown)(void *ud);
    /* The connection is gone (close handshake done, peer vanished, a limit
     * hit). code: the close code received, else the one sent, else 1006.
     * ws is freed right after; no ws_* call on it from here on. */
    void (*on_close)(void *ud, int code);
};

struct ws_options {
    const char *subprotocol;     /* required in Sec-WebSocket-Protocol; NULL: none */
    const char *origins;         /* allowed origins, comma separated; "*": any */
    const char *public_url;      /* when origins is empty: this URL's origin */
    size_t max_message;          /* 0: WS_MAX_MESSAGE */
    size_t max_queue;            /* 0: WS_MAX_QUEUE */
    uint64_t ping_ms;            /* ping a silent peer this often; 0: never */
    uint64_t idle_timeout_ms;    /* 0: never */
};

/*
 * Check req's handshake and upgrade it. 0: upgraded; *out is the connection
 * (its handlers are called once the route handler has returned). Negative: req
 * has been answered with an error (the handler just returns 0).
 */
int ws_upgrade(struct http_request *req, const struct ws_options *o, const struct ws_handlers *h,
               struct ws_conn **out);

/* Queue one text message. -EPIPE once closing; -ENOBUFS when the peer is
 * that far behind (the connection is then cut off). */
int ws_send_text(struct ws_conn *ws, const char *data, size_t len);
/* Start the close handshake after what is queued (reason may be NULL). */
void ws_close(struct ws_conn *ws, int code, const char *reason);
/* "1.2.3.4:5678", for log lines. */
const char *ws_peer(const struct ws_conn *ws);

/* --- pieces of the handshake, for tests ---------------------------------- */

/* base64(SHA-1(key + GUID)): out holds 28 characters and a NUL. */
int ws_accept_key(const char *key, char out[29]);
/* The 16-byte nonce, base64: 24 characters. */
bool ws_key_valid(const char *key);
/* value is a comma-separated token list (Connection, Upgrade,
 * Sec-WebSocket-Protocol) holding token; nocase for the header keywords. */
bool ws_token_list_has(const char *value, const char *token, bool nocase);
/* Whether origin (the header) may connect, given the allowed list and the
 * public URL (see ws_options). Scheme and host compare without case, and a
 * default port counts as absent. */
bool ws_origin_allowed(const char *origin, const char *allowed, const char *public_url);

/* --- on memory ----------------------------------------------------------- */

typedef int (*ws_out_fn)(void *out_ud, const char *data, size_t len);
struct ws_conn *ws_conn_new_mem(const struct ws_options *o, const struct ws_handlers *h,
                                ws_out_fn out, void *out_ud);
/* Bytes from the peer. 0, or negative when the connection has failed. */
int ws_conn_feed(struct ws_conn *ws, const char *data, size_t len);
/* Whether the transport was closed (on_close has been called). */
bool ws_conn_closed(const struct ws_conn *ws);
void ws_conn_free(struct ws_conn *ws);

#endif
