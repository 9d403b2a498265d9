/*
 * Fuzz the HTTP server as a client would: each input is sent over a real
 * loopback connection to an in-process server (the same loop, stepped until
 * the server has answered and closed, or a bound is reached). Finds what the
 * parser callbacks, limits and response paths do with hostile bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/config.h"
#include "core/log.h"
#include "net/http.h"

static uv_loop_t *loop;
static struct http_server *srv;
static int port;
static struct config cfg;

static int echo(struct http_request *req, void *ud)
{
    http_response_printf(req, "%zu", req->body.len);
    return 0;
}

static void setup(void)
{
    char err[256];
    config_defaults(&cfg);
    config_set(&cfg, "http", "static_dir", "/tmp", err, sizeof err);
    config_set(&cfg, "http", "max_header_bytes", "4KiB", err, sizeof err);
    config_set(&cfg, "http", "max_body_bytes", "64KiB", err, sizeof err);
    config_set(&cfg, "http", "access_log", "false", err, sizeof err);
    log_set_level(LOG_ERROR);
    loop = uv_default_loop();
    srv = http_server_new(loop, &cfg);
    http_server_route(srv, "POST", "/echo", echo, NULL, 0);
    http_server_route(srv, "GET", "/a/:x/*rest", echo, NULL, HTTP_ROUTE_CORS);
    if (http_server_listen(srv, "127.0.0.1:0", err, sizeof err) != 0)
        abort();
    port = http_server_port(srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        setup();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    connect(fd, (struct sockaddr *)&sa, sizeof sa);
    size_t sent = 0;
    char buf[65536];
    for (int step = 0; step < 2000; step++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            if (sent == size)
                shutdown(fd, SHUT_WR);
        } else if (size == 0 && step == 0) {
            shutdown(fd, SHUT_WR);
        }
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINPROGRESS &&
                       errno != ENOTCONN))
            break;
    }
    close(fd);
    for (int i = 0; i < 20; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    return 0;
}
