/*
 * Routes: a method and a path pattern to a handler.
 *
 * A pattern is split into segments: literals ("api"), parameters (":slug")
 * and a final wildcard ("*rest") that takes the remaining path. When several
 * routes match, the most specific wins, segment by segment: a literal beats a
 * parameter, which beats a wildcard; so the pattern "/live/:slug/master.m3u8" wins
 * over "/live/:slug/ *file" (no space) whatever the order they were added in. A path that
 * matches only under other methods is told apart (405 with Allow).
 */
#ifndef HEARTH_NET_HTTP_ROUTER_H
#define HEARTH_NET_HTTP_ROUTER_H

#include <stddef.h>

#include "net/http.h"

#define HTTP_ROUTE_MAX_SEGMENTS 16

struct http_route {
    char method[12];
    char *pattern;
    http_handler_fn fn;
    void *ud;
    unsigned flags;
    int nseg;
    struct {
        char *text;   /* literal text, or the parameter's name */
        char kind;    /* 'l' literal, 'p' parameter, 'w' wildcard */
    } seg[HTTP_ROUTE_MAX_SEGMENTS];
};

struct http_router {
    struct http_route *routes;
    size_t count, cap;
};

enum http_match_result { HTTP_MATCH_NONE = 0, HTTP_MATCH_OK = 1, HTTP_MATCH_METHOD = 2 };

struct http_route_match {
    const struct http_route *route;
    int nparams;
    struct {
        const char *name;
        const char *value; /* points into the raw path, not decoded */
        size_t len;
    } params[HTTP_MAX_PARAMS];
    char allow[96]; /* for HTTP_MATCH_METHOD: "GET, HEAD, POST" */
};

void http_router_init(struct http_router *r);
void http_router_free(struct http_router *r);
int http_router_add(struct http_router *r, const char *method, const char *pattern,
                    http_handler_fn fn, void *ud, unsigned flags);
/*
 * Match a raw (still percent-encoded) path without the query. HEAD matches
 * GET routes. Returns enum http_match_result.
 */
int http_router_match(const struct http_router *r, const char *method, const char *path,
                      struct http_route_match *m);

#endif
