/*
 * The loop thread's picture of who is live and who watches: the live
 * directory, viewer counting, and the door of protected channels for HLS.
 * Everything here runs on the loop thread, with no database: what it needs
 * from the database is loaded on a worker and handed in (api_channels.c),
 * except the token functions, which are pure and run on any thread.
 *
 * Live directory. The stream hub's hooks add a channel when it goes live and
 * remove it when its stream ends; the title, owner, topic and avatar are
 * loaded on a worker right after and set with viewers_live_set_info(). Only
 * channels whose information has arrived are listed.
 *
 * Viewer counting: unique viewers seen in the last 30 s per live channel,
 * from the HLS requests of each player session. A player is told apart by
 * the hearth_vid cookie (16 random bytes, hex; Path=/live/), set on its
 * first master.m3u8. Without that cookie, it is a keyed hash of the client
 * address and User-Agent. Why both: a cookie tells apart the people behind
 * one NAT or proxy, who share an address and often a browser build, and it
 * survives a network change (Wi-Fi to mobile); the address hash is what is
 * left for players that keep no cookies (VLC, ffmpeg, some TVs). Either id
 * alone would be wrong for half of the players. The master.m3u8 request
 * itself comes without the cookie, so it counts under the address hash; the
 * hash entry remembers which cookie it handed out, and when that cookie
 * first comes back the hash entry is dropped, so a browser is one viewer,
 * not two. Ids are hashed with SipHash under a per-process random key (the
 * set cannot be flooded into one chain), the address hash with BLAKE2b under
 * another (no address is kept), and a channel holds at most
 * VIEWERS_MAX_PER_CHANNEL ids. A sweep every second forgets ids older than
 * the window and keeps the count and the stream's peak.
 *
 * Protected channels. viewers_access_set() tells this module which channels
 * are protected, their access generation and invite-code hash. An HLS
 * request for such a channel passes with a valid hearth_access cookie (a
 * watch token: channel id, access generation and expiry, signed with
 * HMAC-SHA-256 under a secret kept in the database, so tokens survive a
 * restart), or with ?invite=CODE, which is answered with a token cookie for
 * /live/<slug>/. The API hands out the same tokens to owners, admins and
 * invited users when they open the channel. Bumping the generation revokes
 * every token of the channel.
 */
#ifndef HEARTH_APP_VIEWERS_H
#define HEARTH_APP_VIEWERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "app/accounts.h"

struct http_request;
struct viewers;

#define VIEWERS_WINDOW_MS 30000
#define VIEWERS_SWEEP_MS 1000
#define VIEWERS_MAX_PER_CHANNEL 100000
#define VIEWERS_ID_COOKIE "hearth_vid"
#define VIEWERS_ID_MAX_AGE 86400
#define VIEWERS_ACCESS_COOKIE "hearth_access"
#define VIEWERS_TOKEN_TTL (24 * 3600)
#define VIEWERS_TOKEN_LEN 54 /* base64url of 24 + 16 bytes */
#define VIEWERS_SECRET_BYTES 32
#define VIEWERS_PEAK_SAVE_MS 30000 /* a rising peak is written at most this often */
#define VIEWERS_GONE_MS 120000     /* a deleted channel's HLS answers 404 (the linger is 60 s) */

/* viewers_hls_request() results. */
enum {
    VIEWERS_DENY = -1,   /* refused: a 403 has been written into the response */
    VIEWERS_PUBLIC = 0,  /* answer as usual */
    VIEWERS_PRIVATE = 1, /* answer, but not from a shared cache (Cache-Control: private) */
};

struct viewers *viewers_new(uv_loop_t *loop, const unsigned char secret[VIEWERS_SECRET_BYTES],
                            bool secure_cookies);
void viewers_free(struct viewers *v);

/* ---- the HLS side: call for every /live/<slug>/<file> request ---- */

/*
 * The one hook hls_http.c calls, once per request, after it found the
 * channel's HLS stream and before it answers or parks the request:
 * viewers_allow(), then viewers_seen() when allowed. ud is the struct
 * viewers. Returns VIEWERS_DENY, VIEWERS_PUBLIC or VIEWERS_PRIVATE.
 */
int viewers_hls_request(void *ud, struct http_request *req, const char *slug, const char *file);

/*
 * May this request watch slug? True for channels that are not protected. For
 * a protected one: a valid hearth_access cookie or ?invite=CODE (which sets
 * the cookie); otherwise false after writing 403 {"code": "protected"}.
 * *private_out is set when the answer must not be shared by a cache.
 */
bool viewers_allow(struct viewers *v, struct http_request *req, const char *slug,
                   const char *file, bool *private_out);

/*
 * Count the request's player as a viewer of slug (when slug is live).
 * master.m3u8 without a viewer cookie gets one: returns true when a
 * Set-Cookie was added (the response is then private).
 */
bool viewers_seen(struct viewers *v, struct http_request *req, const char *slug,
                  const char *file);

/* ---- the live directory ---- */

struct viewers_live {
    char slug[CHANNEL_SLUG_MAX + 1];
    int64_t channel_id;
    int64_t started_at; /* Unix seconds */
    uint64_t session;   /* tells one stream of the channel from the next */
    bool info_loaded;
    char title[CHANNEL_TITLE_MAX + 1];
    char owner[ACCOUNT_NAME_MAX + 1];
    char topic[TOPIC_NAME_MAX + 1];
    char topic_slug[CHANNEL_SLUG_MAX + 1];
    char avatar_url[200];
    bool is_protected;
    unsigned count; /* unique viewers in the window */
    unsigned peak;  /* of this stream */
    /* What viewers_peaks_due handed out last, and when (loop ms). */
    unsigned peak_saved;
    uint64_t peak_saved_ms;
    bool peak_saved_once;
};

/* A stream started: returns its session number (for viewers_live_set_info). */
uint64_t viewers_stream_start(struct viewers *v, const char *slug, int64_t channel_id,
                              int64_t started_at);
/* A stream ended: its peak and start; -ENOENT when slug was not live. */
int viewers_stream_end(struct viewers *v, const char *slug, unsigned *peak, int64_t *started_at);
/* The information loaded for a session (ignored when that session is over). */
void viewers_live_set_info(struct viewers *v, const char *slug, uint64_t session,
                           const char *title, const char *owner, const char *topic,
                           const char *topic_slug, const char *avatar_url);
/*
 * The channel was deleted while live (call before ending its stream): HLS
 * requests for slug answer 404 {"code": "not_found"} for VIEWERS_GONE_MS
 * from now_ms, rather than serving the ended stream's playlist while it
 * lingers. A new stream under the slug (a new channel) lifts it.
 */
void viewers_channel_gone(struct viewers *v, const char *slug, uint64_t now_ms);

/*
 * Peaks to persist, so that a crash does not lose them: fn is called for
 * each live channel whose peak rose since it was last handed out, unless
 * that was less than VIEWERS_PEAK_SAVE_MS before now_ms (the first rise of
 * a stream goes at once). fn runs on the loop and must only queue the write.
 */
void viewers_peaks_due(struct viewers *v, uint64_t now_ms,
                       void (*fn)(const struct viewers_live *l, void *ud), void *ud);
/* Call viewers_peaks_due with fn after every sweep (every VIEWERS_SWEEP_MS). */
void viewers_set_peak_hook(struct viewers *v, void (*fn)(const struct viewers_live *l, void *ud),
                           void *ud);

/* The title shown while live changed (a PATCH while live). */
void viewers_live_set_title(struct viewers *v, const char *slug, const char *title);
const struct viewers_live *viewers_live_find(struct viewers *v, const char *slug);
/* Every live channel, listed or not (info_loaded, is_protected say). */
void viewers_live_foreach(struct viewers *v, void (*fn)(const struct viewers_live *l, void *ud),
                          void *ud);
size_t viewers_live_count(struct viewers *v);

/* ---- protected channels ---- */

/*
 * What the door needs to know about a channel; is_protected false forgets
 * it. invite_hash: the stored SHA-256 hex of its invite code, or NULL/"".
 */
void viewers_access_set(struct viewers *v, const char *slug, int64_t channel_id,
                        bool is_protected, int64_t access_gen, const char *invite_hash);
bool viewers_is_protected(struct viewers *v, const char *slug);

/* ---- watch tokens (pure; any thread) ---- */

void viewers_token_make(const unsigned char secret[VIEWERS_SECRET_BYTES], int64_t channel_id,
                        int64_t access_gen, int64_t expires, char out[VIEWERS_TOKEN_LEN + 1]);
/* True when token is for channel_id at access_gen and not expired at now. */
bool viewers_token_check(const unsigned char secret[VIEWERS_SECRET_BYTES], const char *token,
                         int64_t channel_id, int64_t access_gen, int64_t now, int64_t *expires);
/*
 * "hearth_access=TOKEN; Path=<path>; Max-Age=N; HttpOnly; SameSite=Lax[; Secure]".
 * -ENAMETOOLONG when out is too small.
 */
int viewers_access_cookie(char *out, size_t n, const char *token, const char *path,
                          int64_t max_age, bool secure);

/* ---- counting without HTTP (the request functions use these; so do the tests) ---- */

#define VIEWERS_ID_BYTES 16

/* The id of a player without a cookie: keyed hash of its address and User-Agent. */
void viewers_client_id(struct viewers *v, const char *remote, const char *user_agent,
                       unsigned char out[VIEWERS_ID_BYTES]);
/*
 * Seen id at now_ms. issued: the cookie just handed to this player (master
 * without cookie), or NULL. Returns 1 when id is new in the window, 0 when it
 * was known, -ENOENT when slug is not live, -ENOSPC when the channel is full.
 */
int viewers_touch(struct viewers *v, const char *slug, const unsigned char id[VIEWERS_ID_BYTES],
                  const unsigned char *issued, uint64_t now_ms);
/*
 * A cookie id came back: when hash_id's entry handed it out, that entry is
 * dropped (the player was counted under both). Then as viewers_touch().
 */
int viewers_touch_cookie(struct viewers *v, const char *slug,
                         const unsigned char cookie_id[VIEWERS_ID_BYTES],
                         const unsigned char hash_id[VIEWERS_ID_BYTES], uint64_t now_ms);
/* Forget ids older than the window at now_ms (the timer calls this every second). */
void viewers_sweep(struct viewers *v, uint64_t now_ms);
unsigned viewers_count(struct viewers *v, const char *slug);
unsigned viewers_peak(struct viewers *v, const char *slug);

/* ---- the routes (api_channels.c, openapi.c) ---- */

struct app;
struct http_server;
struct stream_hub;
struct hls;

/*
 * Channels, live directory, topics, follows, notifications and
 * /api/v1/openapi.json; hooks itself into the stream hub and loads the
 * protected channels and the watch-token secret from the database (call it
 * before the loop runs, once). hls may be NULL. 0 or a negative code.
 */
int api_channels_register(struct app *app, struct http_server *srv, struct stream_hub *hub,
                          struct hls *hls);
/* The process's viewer state (for the HLS hook), once registered; else NULL. */
struct viewers *api_channels_viewers(void);

/* GET /api/v1/openapi.json, and GET /debug/routes when debug.echo is on. */
int openapi_register(struct app *app, struct http_server *srv);

#endif
