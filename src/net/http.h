/*
 * HTTP/1.1 server on the loop thread.
 *
 * libuv owns the sockets, http-parser reads requests. A connection handles one
 * request at a time: when a request is complete the parser is paused and
 * reading stops until its response has been queued, so pipelined requests are
 * answered in order and a pipelining client cannot make us hold more than one
 * read's worth of its data. Limits: header bytes (431/414), body bytes (413),
 * time for the head (408), idle keep-alive and stalled bodies (closed),
 * connection count.
 *
 * Handlers run on the loop and must not block. A route marked
 * HTTP_ROUTE_BLOCKING runs its handler on the worker pool instead (uv_queue_work):
 * it fills the response there and the loop sends it. A loop handler may also
 * return HTTP_ASYNC and finish later with http_request_finish() (the HLS
 * blocking reload parks requests this way); if the client goes away first,
 * the request's on_abort callback is called and the request must then be
 * forgotten.
 *
 * A loop handler may also turn the connection over to another protocol
 * (WebSocket) with http_request_upgrade(): the server writes the 101, stops
 * reading HTTP, and hands the socket and whatever was read past the request
 * head to the new owner, which gives it back with http_upgraded_close().
 */
#ifndef HEARTH_NET_HTTP_H
#define HEARTH_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

struct config;
struct http_server;
struct http_conn;
struct http_request;
struct json_t;

#define HTTP_MAX_HEADERS 64
#define HTTP_MAX_PARAMS 8
#define HTTP_ASYNC 1

typedef int (*http_handler_fn)(struct http_request *req, void *ud);

enum http_route_flags {
    HTTP_ROUTE_BLOCKING = 1 << 0, /* run on the worker pool */
    HTTP_ROUTE_CORS = 1 << 1,     /* public resource: send Access-Control-Allow-Origin */
    HTTP_ROUTE_PRIVATE = 1 << 2,  /* set on a request by its handler: no shared cache may keep the answer */
};

struct http_header {
    const char *name;
    const char *value;
};

struct http_param {
    const char *name;
    char *value; /* percent-decoded */
};

enum http_body_kind { HTTP_BODY_NONE, HTTP_BODY_BUF, HTTP_BODY_REF, HTTP_BODY_FILE };

struct http_response {
    int status;
    struct buf headers; /* "Name: value\r\n" lines set by the handler */
    enum http_body_kind body_kind;
    struct buf body; /* HTTP_BODY_BUF */
    /* HTTP_BODY_REF: shared bytes that outlive the write; release is called once. */
    const char *ref_data;
    size_t ref_len;
    void (*ref_release)(void *opaque);
    void *ref_opaque;
    /* HTTP_BODY_FILE: streamed from an open file, [file_off, file_off + file_len). */
    uv_file file_fd;
    uint64_t file_off, file_len, file_size;
    /* Set with http_response_etag(): If-None-Match is answered 304. */
    char etag[80];
    bool allow_range; /* a file body: honour Range */
    bool no_cors;
};

struct http_request {
    struct http_conn *conn;
    struct http_server *server;
    int method; /* enum http_method from http_parser.h */
    const char *method_name;
    char *url;   /* the raw request target */
    char *path;  /* percent-decoded, without the query */
    char *query; /* raw query, without '?', or NULL */
    struct http_header headers[HTTP_MAX_HEADERS];
    int nheaders;
    struct buf body;
    unsigned short http_major, http_minor;
    bool keep_alive;
    bool head; /* a HEAD request: the response body is not sent */
    char remote[64];    /* the connection's peer, "1.2.3.4:5678" / "[::1]:5678" */
    char client_ip[64]; /* http_request_client_ip; set when the head is complete */
    uint64_t start_ns;
    unsigned route_flags;
    struct http_param params[HTTP_MAX_PARAMS];
    int nparams;

    struct http_response res;

    /* For HTTP_ASYNC handlers. */
    void (*on_abort)(struct http_request *req);
    void *user;

    /* Server's own state. */
    struct buf arena;
    http_handler_fn blocking_fn;
    void *blocking_ud;
    uv_work_t work;
};

/* --- the request ------------------------------------------------------- */

const char *http_request_header(const struct http_request *req, const char *name);
/*
 * The client's address, without a port ("203.0.113.7", "2001:db8::1"): the
 * connection's peer, or, when the peer is one of http.trusted_proxies, the
 * right-most X-Forwarded-For address that is not itself a trusted proxy
 * (what a client writes there itself is left of what its proxies add). Use
 * it for anything per client: login throttling, viewers, bans, logs. For a
 * request the server did not parse (tests), remote as it is.
 */
const char *http_request_client_ip(const struct http_request *req);
const char *http_request_param(const struct http_request *req, const char *name);
/* Copy query parameter `name`, percent-decoded, into out. 0 when present. */
int http_request_query(const struct http_request *req, const char *name, char *out, size_t n);
/* Finish a request that its handler answered with HTTP_ASYNC (loop thread). */
void http_request_finish(struct http_request *req);

/* --- taking the connection over (RFC 9110 7.8, 101 Switching Protocols) --- */

/*
 * The new owner of an upgraded connection. It keeps counting as one of the
 * server's connections (http.max_connections, http_server_connections), so
 * that a shutdown can ask the owner to finish and wait until it has.
 */
struct http_upgrade {
    const char *protocol; /* the Upgrade header's value, "websocket" */
    void *ud;
    /*
     * Loop thread, once the 101 is queued and HTTP has let go: tcp->data is
     * ud from now on, data/len are the bytes the client sent after the
     * request head (maybe none; valid during the call only). The owner reads
     * and writes tcp itself; its writes queue behind the 101.
     */
    void (*on_open)(void *ud, struct http_conn *conn, uv_tcp_t *tcp, const char *data,
                    size_t len);
    /* The server is shutting down: end the protocol politely, then
     * http_upgraded_close() (soon: the process waits for it). NULL: closed. */
    void (*on_shutdown)(void *ud);
    /* The socket is closed and every write on it has called back: ud may be
     * freed. Called once after every successful upgrade, on_open or not. */
    void (*on_closed)(void *ud);
};

/*
 * Answer req with "101 Switching Protocols" (Upgrade and Connection headers,
 * plus any the handler set with http_response_header) and give the
 * connection to u. Loop thread, from a handler that is not
 * HTTP_ROUTE_BLOCKING, or later for one that answered HTTP_ASYNC. After 0 the
 * request is the server's to drop: the handler only returns (any value).
 * -EINVAL: this request cannot be upgraded (HEAD, HTTP/1.0, on a worker);
 * -ESHUTDOWN: the server is stopping; the handler answers those itself.
 */
int http_request_upgrade(struct http_request *req, const struct http_upgrade *u);
/* The owner is done: close the socket (writes not yet out are dropped: wait
 * for their callbacks first to flush them). on_closed follows. */
void http_upgraded_close(struct http_conn *conn);

/* --- building the response --------------------------------------------- */

void http_response_status(struct http_request *req, int status);
int http_response_header(struct http_request *req, const char *name, const char *value);
int http_response_headerf(struct http_request *req, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int http_response_body(struct http_request *req, const void *data, size_t len);
int http_response_printf(struct http_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void http_response_body_ref(struct http_request *req, const void *data, size_t len,
                            void (*release)(void *), void *opaque);
void http_response_etag(struct http_request *req, const char *etag);
/* Sets status, Content-Type: application/json and the body (the object is not freed). */
int http_response_json(struct http_request *req, int status, struct json_t *obj);
/* {"error": message, "code": code} */
int http_response_error(struct http_request *req, int status, const char *code, const char *message);
/* Serve a file under the server's static_dir (path relative, already decoded). */
int http_response_static(struct http_request *req, const char *relpath);

/* --- the server ---------------------------------------------------------- */

struct http_server *http_server_new(uv_loop_t *loop, const struct config *cfg);
/* Register a route: "GET", "/api/v1/channels/:id"; "*rest" as last segment takes the tail. */
int http_server_route(struct http_server *srv, const char *method, const char *pattern,
                      http_handler_fn fn, void *ud, unsigned flags);
struct http_router *http_server_router(struct http_server *srv);
int http_server_listen(struct http_server *srv, const char *listen, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int http_server_port(struct http_server *srv);
/* Stop accepting; let in-flight requests finish; then cb. */
void http_server_shutdown(struct http_server *srv, void (*cb)(struct http_server *, void *),
                          void *arg);
void http_server_free(struct http_server *srv);
/* --- trusted proxies, for tests ----------------------------------------- */

struct http_cidr {
    unsigned char addr[16]; /* IPv4 in the first 4 bytes */
    unsigned char bits;
    bool v6;
};
/*
 * Parse http.trusted_proxies: addresses or CIDR ranges, comma or space
 * separated. *out is malloc'd (NULL when the list is empty). 0, or -EINVAL
 * with err naming the entry.
 */
int http_cidr_list_parse(const char *list, struct http_cidr **out, size_t *n, char *err,
                         size_t errlen);
/*
 * The client address (see http_request_client_ip) for a peer address (with
 * or without a port, as http_request.remote) and the X-Forwarded-For header
 * values in the order received (several headers read as one list), given
 * the trusted list. out gets the address without a port.
 */
void http_client_ip(const char *peer, const char *const *xff, size_t nxff,
                    const struct http_cidr *trusted, size_t ntrusted, char *out, size_t n);

/* Requests served since start (for /healthz and tests). */
uint64_t http_server_requests(const struct http_server *srv);
size_t http_server_connections(const struct http_server *srv);

#endif
