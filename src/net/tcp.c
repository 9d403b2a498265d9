#include "net/tcp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"

int net_tcp_listen(uv_loop_t *loop, uv_tcp_t *tcp, const char *listen, int backlog,
                   uv_connection_cb cb, int *port, char *err, size_t errlen)
{
    char host[64];
    int p;
    if (config_parse_listen(listen, host, sizeof host, &p)) {
        snprintf(err, errlen, "bad listen address '%s'", listen);
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    if (strchr(host, ':'))
        uv_ip6_addr(host, p, (struct sockaddr_in6 *)&ss);
    else
        uv_ip4_addr(host, p, (struct sockaddr_in *)&ss);
    uv_tcp_init(loop, tcp);
    int rc = uv_tcp_bind(tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)tcp, backlog, cb);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, uv_strerror(rc));
        uv_close((uv_handle_t *)tcp, NULL);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(tcp, (struct sockaddr *)&bound, &blen);
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

void net_peer_name(uv_tcp_t *tcp, char *out, size_t n)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(out, n, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    char ip[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        uv_ip4_name(s4, ip, sizeof ip);
        snprintf(out, n, "%s:%d", ip, ntohs(s4->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(s6, ip, sizeof ip);
        snprintf(out, n, "[%s]:%d", ip, ntohs(s6->sin6_port));
    }
}
