/* TCP listeners and peer names, shared by every server on the loop (HTTP, RTMP, XMPP). */
#ifndef HEARTH_NET_TCP_H
#define HEARTH_NET_TCP_H

#include <stddef.h>
#include <uv.h>

/*
 * Bind and listen on "HOST:PORT" (config syntax). On success *port is the
 * port bound (useful with port 0). On failure the handle is closed, err says
 * why, and a negative code is returned.
 */
int net_tcp_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *listen, int backlog,
                   uv_connection_cb cb, int *port, char *err, size_t errlen);

/* "1.2.3.4:5678" or "[::1]:5678" for log lines; "?" when unknown. */
void net_peer_name(uv_tcp_t *tcp, char *out, size_t n);

#endif
