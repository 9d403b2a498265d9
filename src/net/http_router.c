/*
 * Matching is a linear scan over the routes with a score per route: we have
 * tens of routes, not thousands, and a scan over pre-split patterns costs
 * less than the hashing a tree would need for each segment.
 */
#include "net/http_router.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void http_router_init(struct http_router *r) { memset(r, 0, sizeof *r); }

void http_router_free(struct http_router *r)
{
    for (size_t i = 0; i < r->count; i++) {
        struct http_route *rt = &r->routes[i];
        for (int s = 0; s < rt->nseg; s++)
            free(rt->seg[s].text);
        free(rt->pattern);
    }
    free(r->routes);
    memset(r, 0, sizeof *r);
}

int http_router_add(struct http_router *r, const char *method, const char *pattern,
                    http_handler_fn fn, void *ud, unsigned flags)
{
    if (pattern[0] != '/' || strlen(method) >= sizeof r->routes[0].method)
        return -EINVAL;
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct http_route *n = realloc(r->routes, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        r->routes = n;
        r->cap = cap;
    }
    struct http_route *rt = &r->routes[r->count];
    memset(rt, 0, sizeof *rt);
    strcpy(rt->method, method);
    rt->fn = fn;
    rt->ud = ud;
    rt->flags = flags;
    rt->pattern = strdup(pattern);
    if (!rt->pattern)
        return -ENOMEM;

    const char *p = pattern + 1;
    int nparams = 0;
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (rt->nseg == HTTP_ROUTE_MAX_SEGMENTS)
            goto bad;
        char kind = 'l';
        const char *text = p;
        if (*p == ':' || *p == '*') {
            kind = *p == ':' ? 'p' : 'w';
            text++;
            len--;
            if (len == 0 || ++nparams > HTTP_MAX_PARAMS)
                goto bad;
            if (kind == 'w' && end && end[1])
                goto bad; /* a wildcard must be the last segment */
        }
        rt->seg[rt->nseg].kind = kind;
        rt->seg[rt->nseg].text = strndup(text, len);
        if (!rt->seg[rt->nseg].text)
            goto bad;
        rt->nseg++;
        if (!end)
            break;
        p = end + 1;
        if (!*p) {
            /* trailing slash: an empty literal segment */
            if (rt->nseg == HTTP_ROUTE_MAX_SEGMENTS)
                goto bad;
            rt->seg[rt->nseg].kind = 'l';
            rt->seg[rt->nseg].text = strdup("");
            rt->nseg++;
        }
    }
    r->count++;
    return 0;
bad:
    for (int s = 0; s < rt->nseg; s++)
        free(rt->seg[s].text);
    free(rt->pattern);
    return -EINVAL;
}

/*
 * Try one route against the path. The score is a base-4 number, one digit
 * per segment (3 literal, 2 parameter, 1 wildcard), so comparing scores
 * compares specificity from the first segment on.
 */
static bool route_try(const struct http_route *rt, const char *path, struct http_route_match *m,
                      unsigned long long *score)
{
    const char *p = path + 1;
    unsigned long long sc = 0;
    int np = 0;
    for (int s = 0; s < rt->nseg; s++) {
        if (s > 0) {
            if (*p != '/')
                return false;
            p++;
        }
        if (rt->seg[s].kind == 'w') {
            /* The rest of the path, possibly empty after a trailing slash. */
            m->params[np].name = rt->seg[s].text;
            m->params[np].value = p;
            m->params[np].len = strlen(p);
            np++;
            sc = sc * 4 + 1;
            for (int k = s + 1; k < HTTP_ROUTE_MAX_SEGMENTS; k++)
                sc *= 4;
            m->nparams = np;
            *score = sc;
            return true;
        }
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (rt->seg[s].kind == 'l') {
            if (strlen(rt->seg[s].text) != len || memcmp(rt->seg[s].text, p, len) != 0)
                return false;
            sc = sc * 4 + 3;
        } else {
            if (len == 0)
                return false;
            m->params[np].name = rt->seg[s].text;
            m->params[np].value = p;
            m->params[np].len = len;
            np++;
            sc = sc * 4 + 2;
        }
        p += len;
    }
    if (*p != '\0')
        return false;
    for (int k = rt->nseg; k < HTTP_ROUTE_MAX_SEGMENTS; k++)
        sc *= 4;
    m->nparams = np;
    *score = sc;
    return true;
}

static bool method_matches(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0)
        return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

int http_router_match(const struct http_router *r, const char *method, const char *path,
                      struct http_route_match *m)
{
    memset(m, 0, sizeof *m);
    if (path[0] != '/')
        return HTTP_MATCH_NONE;
    unsigned long long best = 0;
    bool any_path = false;
    struct http_route_match tmp;
    for (size_t i = 0; i < r->count; i++) {
        const struct http_route *rt = &r->routes[i];
        unsigned long long sc;
        memset(&tmp, 0, sizeof tmp);
        if (!route_try(rt, path, &tmp, &sc))
            continue;
        if (!method_matches(rt->method, method)) {
            any_path = true;
            continue;
        }
        if (!m->route || sc > best) {
            *m = tmp;
            m->route = rt;
            best = sc;
        }
    }
    if (m->route)
        return HTTP_MATCH_OK;
    if (!any_path)
        return HTTP_MATCH_NONE;

    /* Collect the methods this path answers to, for the Allow header. */
    size_t n = 0;
    m->allow[0] = '\0';
    bool has_get = false;
    for (size_t i = 0; i < r->count; i++) {
        const struct http_route *rt = &r->routes[i];
        unsigned long long sc;
        if (!route_try(rt, path, &tmp, &sc))
            continue;
        if (strstr(m->allow, rt->method))
            continue;
        size_t ml = strlen(rt->method);
        if (n + ml + 3 >= sizeof m->allow)
            break;
        if (n) {
            memcpy(m->allow + n, ", ", 2);
            n += 2;
        }
        memcpy(m->allow + n, rt->method, ml + 1);
        n += ml;
        if (strcmp(rt->method, "GET") == 0)
            has_get = true;
    }
    if (has_get && !strstr(m->allow, "HEAD") && n + 6 < sizeof m->allow)
        strcat(m->allow, ", HEAD");
    return HTTP_MATCH_METHOD;
}
