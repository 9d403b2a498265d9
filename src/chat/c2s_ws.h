/*
 * XMPP over WebSocket (RFC 7395) at GET /xmpp-websocket on the HTTP server:
 * the web chat (strophe.js) of viewers and guests.
 */
#ifndef HEARTH_CHAT_C2S_WS_H
#define HEARTH_CHAT_C2S_WS_H

struct xmpp_server;
struct http_server;

#define C2S_WS_PATH "/xmpp-websocket"

/* Add the route. Loop thread, before the HTTP server listens. 0 or negative. */
int c2s_ws_register(struct xmpp_server *x, struct http_server *h);

#endif
