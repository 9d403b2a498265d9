/*
 * The RTMP server: sockets and sessions on the loop thread, on top of the
 * pure protocol layer (handshake.c, chunk.c, amf.c, flv.c). A session that
 * publishes becomes the publisher of its channel's stream in the hub.
 *
 * Whether a stream key may publish is the application's decision (it knows
 * the database): the server calls `authorize` on the worker pool and goes on
 * with the answer on the loop.
 */
#ifndef HEARTH_INGEST_RTMP_SERVER_H
#define HEARTH_INGEST_RTMP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct stream_hub;
struct rtmp_server;

struct rtmp_auth {
    int64_t channel_id;
    char slug[64];
    char why[128]; /* when refused: for the log */
};

/*
 * Runs on a worker thread. 0 to allow (fill channel_id and slug), negative to
 * refuse (fill why).
 */
typedef int (*rtmp_authorize_fn)(void *ud, const char *stream_key, struct rtmp_auth *out);

struct rtmp_server *rtmp_server_new(uv_loop_t *loop, const struct config *cfg,
                                    struct stream_hub *hub, rtmp_authorize_fn authorize, void *ud);
int rtmp_server_listen(struct rtmp_server *srv, const char *listen, char *err, size_t errlen);
int rtmp_server_port(struct rtmp_server *srv);
/* Stop accepting and drop every session (their streams enter the grace period). */
void rtmp_server_shutdown(struct rtmp_server *srv, void (*cb)(void *arg), void *arg);
void rtmp_server_free(struct rtmp_server *srv);
size_t rtmp_server_sessions(struct rtmp_server *srv);

#endif
