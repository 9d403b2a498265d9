/* Fuzz the HTTP helpers that read request bytes: percent-decoding, safe
 * paths, Range, If-None-Match, token lists, and the router's matcher. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http_router.h"
#include "net/http_util.h"

static int nop(struct http_request *r, void *ud) { return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char *out = malloc(size + 1);
    if (!s || !out)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    http_percent_decode(s, size, out, size & 1);
    if (strlen(s) == size) {
        http_path_is_safe(s[0] == '/' ? s : "/");
        uint64_t a, b;
        http_range_parse(s, size * 7 + 1, &a, &b);
        http_etag_matches(s, "\"abc-1\"");
        http_header_has_token(s, "keep-alive");
        http_mime_type(s);
        static struct http_router r;
        static int init;
        if (!init) {
            http_router_init(&r);
            http_router_add(&r, "GET", "/live/:slug/:file", nop, NULL, 0);
            http_router_add(&r, "GET", "/api/v1/channels/:slug", nop, NULL, 0);
            http_router_add(&r, "POST", "/api/v1/channels/:slug/stream-key", nop, NULL, 0);
            http_router_add(&r, "GET", "/static/*rest", nop, NULL, 0);
            init = 1;
        }
        struct http_route_match m;
        http_router_match(&r, "GET", s, &m);
        http_router_match(&r, "DELETE", s, &m);
    }
    free(s);
    free(out);
    return 0;
}
