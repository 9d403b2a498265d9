/* What http.c shares with http_static.c and nothing else. */
#ifndef HEARTH_NET_HTTP_INTERNAL_H
#define HEARTH_NET_HTTP_INTERNAL_H

#include <uv.h>

#include "net/http.h"

struct http_static;

struct http_static *http_static_new(uv_loop_t *loop, const char *root);
void http_static_free(struct http_static *st);
/* Answer req with the file at relpath (decoded, starting with '/'). 0 or HTTP_ASYNC. */
int http_static_serve(struct http_static *st, struct http_request *req, const char *relpath);

struct http_static *http_server_static(struct http_server *srv);
const struct config *http_server_config(struct http_server *srv);

#endif
