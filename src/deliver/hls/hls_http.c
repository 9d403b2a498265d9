/*
 * The HTTP side of LL-HLS: /live/<slug>/... served from memory on the loop.
 *
 * Playlists are rendered once per change and kept as blobs, so a thousand
 * players asking for the same playlist cost one render. A blocking playlist
 * request (_HLS_msn, _HLS_part) or a request for the preload-hinted part that
 * cannot be answered yet is parked on its stream: hls_wake() runs each time
 * a part or segment is published and answers what has become answerable; a
 * 100 ms timer answers those that waited three target durations with 503
 * (RFC 8216bis 6.2.5.2). A parked request whose client goes away is unlinked
 * by the HTTP layer's abort callback.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "deliver/hls/hls_internal.h"
#include "net/http.h"

#define TICK_MS 100

enum parked_kind { PARK_PLAYLIST, PARK_PART, PARK_MASTER, PARK_FIRST_PLAYLIST };

struct hls_parked {
    struct hls_parked *next;
    struct http_request *req;
    struct hls_stream *hs;
    enum parked_kind kind;
    int64_t msn, part;
    bool skip;
    uint64_t deadline;
};

static void release_blob(void *opaque) { hls_blob_unref(opaque); }

static void send_blob(struct http_request *req, struct hls_blob *b, const char *type,
                      const char *cache)
{
    http_response_status(req, 200);
    http_response_header(req, "Content-Type", type);
    if ((req->route_flags & HTTP_ROUTE_PRIVATE) && strncmp(cache, "public", 6) == 0)
        http_response_headerf(req, "Cache-Control", "private%s", cache + 6);
    else
        http_response_header(req, "Cache-Control", cache);
    if (b->etag[0])
        http_response_etag(req, b->etag);
    hls_blob_ref(b);
    http_response_body_ref(req, b->data, b->len, release_blob, b);
}

static void not_found(struct http_request *req, const char *why)
{
    http_response_error(req, 404, "not_found", why);
    /* The thing may exist in a moment: no cache may keep this answer. */
    http_response_header(req, "Cache-Control", "no-store");
}

static struct hls_blob *playlist_blob(struct hls_stream *hs, bool skip)
{
    struct hls_blob **slot = skip ? &hs->pl_skip : &hs->pl_full;
    uint64_t *ver = skip ? &hs->pl_skip_v : &hs->pl_full_v;
    if (*slot && *ver == hs->version)
        return *slot;
    struct buf b;
    buf_init(&b, 0);
    if (hls_render_media(hs, skip, &b) != 0) {
        buf_free(&b);
        return NULL;
    }
    struct hls_blob *blob = hls_blob_new(b.data, b.len);
    buf_free(&b);
    if (!blob)
        return NULL;
    snprintf(blob->etag, sizeof blob->etag, "\"%s-v%" PRIu64 "%s\"", hs->sid, hs->version,
             skip ? "s" : "");
    hls_blob_unref(*slot);
    *slot = blob;
    *ver = hs->version;
    return blob;
}

static void answer_playlist(struct hls_stream *hs, struct http_request *req, bool skip, bool blocking)
{
    struct hls_blob *b = playlist_blob(hs, skip);
    if (!b) {
        http_response_error(req, 500, "internal", "out of memory");
        return;
    }
    /* A blocking answer is what that msn/part looks like for everyone: a
     * cache may share it. The plain playlist goes stale within a part. */
    send_blob(req, b, "application/vnd.apple.mpegurl",
              blocking && !hs->ended ? "public, max-age=6" : "public, max-age=1");
}

static int answer_part(struct hls_stream *hs, struct http_request *req, uint64_t msn, int part)
{
    for (size_t i = 0; i < hs->nsegs; i++) {
        struct hls_segment *s = &hs->segs[i];
        if (s->msn != msn || part < 0 || part >= s->nparts)
            continue;
        struct hls_part *p = &s->parts[part];
        if (p->blob) {
            send_blob(req, p->blob, "video/mp4", "public, max-age=31536000, immutable");
            return 0;
        }
        if (s->blob && p->off + p->len <= s->blob->len) {
            /* No longer listed: the same bytes, from the segment (RFC 8216bis
             * 6.2.2: downloadable three target durations after the tag goes). */
            char etag[48];
            snprintf(etag, sizeof etag, "\"%s-%" PRIu64 ".%d\"", hs->sid, s->msn, part);
            http_response_status(req, 200);
            http_response_header(req, "Content-Type", "video/mp4");
            http_response_header(req, "Cache-Control", "public, max-age=31536000, immutable");
            http_response_etag(req, etag);
            hls_blob_ref(s->blob);
            http_response_body_ref(req, s->blob->data + p->off, p->len, release_blob, s->blob);
            return 0;
        }
    }
    not_found(req, "no such part");
    return -ENOENT;
}

static bool has_media(const struct hls_stream *hs)
{
    /* Playlists are first served once a segment is complete: its length is
     * what TARGETDURATION must be from then on (RFC 8216bis 6.2.1 forbids
     * changing it), and it cannot be known before a keyframe has followed. */
    return hs->ended || (hs->nsegs > 0 && hs->segs[0].complete);
}

static void answer_master(struct hls_stream *hs, struct http_request *req)
{
    if (hs->pl_master && hs->pl_master_v == hs->version) {
        send_blob(req, hs->pl_master, "application/vnd.apple.mpegurl", "public, max-age=1");
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    hls_render_master(hs, &b);
    struct hls_blob *blob = hls_blob_new(b.data, b.len);
    buf_free(&b);
    if (!blob) {
        http_response_error(req, 500, "internal", "out of memory");
        return;
    }
    snprintf(blob->etag, sizeof blob->etag, "\"%s-m%" PRIu64 "\"", hs->sid, hs->version);
    hls_blob_unref(hs->pl_master);
    hs->pl_master = blob;
    hs->pl_master_v = hs->version;
    send_blob(req, blob, "application/vnd.apple.mpegurl", "public, max-age=1");
}

/* --- parking ------------------------------------------------------------------ */

static void unlink_parked(struct hls_parked *pk)
{
    struct hls_parked **pp = &pk->hs->parked;
    while (*pp && *pp != pk)
        pp = &(*pp)->next;
    if (*pp)
        *pp = pk->next;
}

static void on_parked_abort(struct http_request *req)
{
    struct hls_parked *pk = req->user;
    unlink_parked(pk);
    free(pk);
}

static void finish_parked(struct hls_parked *pk)
{
    struct http_request *req = pk->req;
    req->on_abort = NULL;
    free(pk);
    http_request_finish(req);
}

/* 1 if answered (and unlinked by the caller), 0 if still waiting. */
static int try_answer(struct hls_parked *pk, bool expired)
{
    struct hls_stream *hs = pk->hs;
    if (pk->kind == PARK_FIRST_PLAYLIST) {
        if (!has_media(hs) && !expired)
            return 0;
        if (has_media(hs))
            answer_playlist(hs, pk->req, pk->skip, false);
        else
            http_response_error(pk->req, 503, "unavailable", "the stream has not produced media yet");
        return 1;
    }
    if (pk->kind == PARK_MASTER) {
        if (!has_media(hs) && !expired)
            return 0;
        if (has_media(hs))
            answer_master(hs, pk->req);
        else
            http_response_error(pk->req, 503, "unavailable", "the stream has not produced media yet");
        return 1;
    }
    if (pk->kind == PARK_PLAYLIST) {
        int r = hls_playlist_ready(hs, pk->msn, pk->part);
        if (r == 0 && !expired)
            return 0;
        if (r == 0)
            http_response_error(pk->req, 503, "unavailable", "the requested part did not arrive in time");
        else
            answer_playlist(hs, pk->req, pk->skip, true);
        return 1;
    }
    int r = hls_part_ready(hs, (uint64_t)pk->msn, (int)pk->part);
    if (r == 0 && !expired)
        return 0;
    if (r == 1)
        answer_part(hs, pk->req, (uint64_t)pk->msn, (int)pk->part);
    else if (r == 0)
        http_response_error(pk->req, 503, "unavailable", "the requested part did not arrive in time");
    else
        not_found(pk->req, "no such part");
    return 1;
}

static void sweep(struct hls_stream *hs, bool check_deadlines)
{
    uint64_t now = uv_now(hs->hls->loop);
    struct hls_parked **pp = &hs->parked;
    while (*pp) {
        struct hls_parked *pk = *pp;
        bool expired = check_deadlines && now >= pk->deadline;
        if (try_answer(pk, expired)) {
            *pp = pk->next;
            finish_parked(pk);
        } else {
            pp = &pk->next;
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    struct hls_stream *hs = t->data;
    sweep(hs, true);
    if (hs->ended && !hs->stream && !hs->parked) {
        /* The linger is over. */
        if (uv_now(hs->hls->loop) >= (uint64_t)hs->end_t_linger)
            hls_stream_destroy(hs);
        return;
    }
    if (!hs->parked && !hs->ended)
        uv_timer_stop(&hs->timer);
}

void hls_wake(struct hls_stream *hs)
{
    if (hs->parked)
        sweep(hs, false);
}

void hls_unpark_all(struct hls_stream *hs)
{
    while (hs->parked) {
        struct hls_parked *pk = hs->parked;
        hs->parked = pk->next;
        if (!try_answer(pk, true))
            http_response_error(pk->req, 503, "unavailable", "stream gone");
        finish_parked(pk);
    }
}

void hls_linger(struct hls_stream *hs)
{
    hs->end_t_linger = (int64_t)(uv_now(hs->hls->loop) + hs->hls->cfg.linger_ms);
    sweep(hs, false);
    uv_timer_start(&hs->timer, on_tick, TICK_MS, TICK_MS);
}

static int park(struct hls_stream *hs, struct http_request *req, enum parked_kind kind,
                int64_t msn, int64_t part, bool skip)
{
    struct hls_parked *pk = calloc(1, sizeof *pk);
    if (!pk) {
        http_response_error(req, 503, "unavailable", "out of memory");
        return 0;
    }
    pk->req = req;
    pk->hs = hs;
    pk->kind = kind;
    pk->msn = msn;
    pk->part = part;
    pk->skip = skip;
    pk->deadline = uv_now(hs->hls->loop) + 3 * (uint64_t)hls_target_duration(hs) * 1000;
    pk->next = hs->parked;
    hs->parked = pk;
    req->user = pk;
    req->on_abort = on_parked_abort;
    if (!uv_is_active((uv_handle_t *)&hs->timer))
        uv_timer_start(&hs->timer, on_tick, TICK_MS, TICK_MS);
    return HTTP_ASYNC;
}

/* --- routes ------------------------------------------------------------------- */

static bool parse_u64(const char *s, const char **end, uint64_t *v)
{
    if (*s < '0' || *s > '9')
        return false;
    uint64_t n = 0;
    while (*s >= '0' && *s <= '9') {
        if (n > (UINT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (uint64_t)(*s++ - '0');
    }
    *v = n;
    *end = s;
    return true;
}

/* "<prefix>-<sid>-" then the rest; returns the rest or NULL. */
static const char *match_sid(const char *file, const char *prefix, const struct hls_stream *hs)
{
    size_t pl = strlen(prefix), sl = strlen(hs->sid);
    if (strncmp(file, prefix, pl) != 0 || file[pl] != '-' || strncmp(file + pl + 1, hs->sid, sl) != 0 ||
        file[pl + 1 + sl] != '-')
        return NULL;
    return file + pl + sl + 2;
}

static int on_live(struct http_request *req, void *ud)
{
    struct hls *hls = ud;
    const char *slug = http_request_param(req, "slug");
    const char *file = http_request_param(req, "file");
    struct hls_stream *hs = hls_find(hls, slug);
    if (!hs) {
        not_found(req, "this channel is not live");
        return 0;
    }
    if (hls->on_request) {
        int a = hls->on_request(hls->on_request_ud, req, slug, file);
        if (a < 0)
            return 0;
        if (a > 0)
            req->route_flags |= HTTP_ROUTE_PRIVATE;
    }
    if (strcmp(file, "master.m3u8") == 0) {
        if (!has_media(hs))
            return park(hs, req, PARK_MASTER, -1, -1, false);
        answer_master(hs, req);
        return 0;
    }
    if (strcmp(file, "index.m3u8") == 0) {
        char v[32];
        int64_t msn = -1, part = -1;
        bool skip = false;
        if (http_request_query(req, "_HLS_skip", v, sizeof v) == 0)
            skip = strcmp(v, "YES") == 0 || strcmp(v, "v2") == 0;
        if (http_request_query(req, "_HLS_msn", v, sizeof v) == 0) {
            uint64_t n;
            const char *e;
            if (!parse_u64(v, &e, &n) || *e || n > INT64_MAX / 2) {
                http_response_error(req, 400, "bad_request", "bad _HLS_msn");
                return 0;
            }
            msn = (int64_t)n;
        }
        if (http_request_query(req, "_HLS_part", v, sizeof v) == 0) {
            uint64_t n;
            const char *e;
            if (msn < 0 || !parse_u64(v, &e, &n) || *e || n > 100000) {
                http_response_error(req, 400, "bad_request", "bad _HLS_part (it needs _HLS_msn)");
                return 0;
            }
            part = (int64_t)n;
        }
        if (msn < 0) {
            /* A stream that is starting has no part yet: an empty playlist
             * makes players back off for seconds, so wait for the first part. */
            if (!has_media(hs))
                return park(hs, req, PARK_FIRST_PLAYLIST, -1, -1, skip);
            answer_playlist(hs, req, skip, false);
            return 0;
        }
        int r = hls_playlist_ready(hs, msn, part);
        if (r < 0) {
            http_response_error(req, 400, "bad_request", "_HLS_msn/_HLS_part is too far ahead of the live edge");
            return 0;
        }
        if (r > 0) {
            answer_playlist(hs, req, skip, true);
            return 0;
        }
        return park(hs, req, PARK_PLAYLIST, msn, part, skip);
    }
    const char *rest;
    uint64_t a, b;
    if ((rest = match_sid(file, "part", hs))) {
        const char *e;
        if (!parse_u64(rest, &e, &a) || *e != '.' || !parse_u64(e + 1, &e, &b) || strcmp(e, ".m4s") != 0 ||
            b > 100000) {
            not_found(req, "no such part");
            return 0;
        }
        int r = hls_part_ready(hs, a, (int)b);
        if (r == 0)
            return park(hs, req, PARK_PART, (int64_t)a, (int64_t)b, false);
        answer_part(hs, req, a, (int)b);
        return 0;
    }
    if ((rest = match_sid(file, "seg", hs))) {
        const char *e;
        if (parse_u64(rest, &e, &a) && strcmp(e, ".m4s") == 0) {
            for (size_t i = 0; i < hs->nsegs; i++)
                if (hs->segs[i].msn == a && hs->segs[i].complete && hs->segs[i].blob) {
                    send_blob(req, hs->segs[i].blob, "video/mp4", "public, max-age=31536000, immutable");
                    return 0;
                }
        }
        not_found(req, "no such segment");
        return 0;
    }
    if ((rest = match_sid(file, "init", hs))) {
        const char *e;
        struct hls_blob *blob;
        if (parse_u64(rest, &e, &a) && strcmp(e, ".mp4") == 0 && a < UINT32_MAX &&
            (blob = hls_init_blob(hs, (unsigned)a))) {
            send_blob(req, blob, "video/mp4", "public, max-age=31536000, immutable");
            return 0;
        }
        not_found(req, "no such init segment");
        return 0;
    }
    not_found(req, "no such file");
    return 0;
}

int hls_register_routes(struct hls *hls, struct http_server *srv)
{
    return http_server_route(srv, "GET", "/live/:slug/:file", on_live, hls, HTTP_ROUTE_CORS);
}
