/*
 * The live directory, viewer counting and the door of protected channels
 * (see viewers.h for what and why). Loop thread only, apart from the token
 * functions.
 *
 * Channels the loop knows about (live, protected, or both) sit in a chained
 * hash table by slug. A live channel has a viewer set: open addressing with
 * linear probing over 16-byte ids. Slots are only ever marked dead between
 * sweeps (a hash entry replaced by its cookie); the sweep rebuilds the table
 * from the entries still in the window, so there are no tombstone chains to
 * grow without end and the memory follows the audience down again.
 */
#include "app/viewers.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/auth.h"
#include "app/channels_extra.h"
#include "core/log.h"
#include "core/util.h"
#include "net/http.h"

#define SLUG_MAX 64 /* the hub's slug buffer */

enum { SLOT_EMPTY = 0, SLOT_USED, SLOT_DEAD };

struct vslot {
    unsigned char id[VIEWERS_ID_BYTES];
    unsigned char issued[VIEWERS_ID_BYTES];
    uint64_t last_ms;
    unsigned char state;
    bool has_issued;
};

struct vset {
    struct vslot *slots;
    size_t cap;   /* a power of two, or 0 */
    size_t used;  /* USED + DEAD */
    size_t alive; /* USED */
    bool full_logged;
};

struct vchan {
    char slug[SLUG_MAX];
    int64_t channel_id;
    bool is_protected;
    int64_t access_gen;
    char invite_hash[CHANNEL_HASH_HEX + 1];
    struct viewers_live *live; /* NULL when not live */
    struct vset set;
    uint64_t gone_until_ms; /* deleted while live: HLS answers 404 until then; 0 when not */
    struct vchan *next;
};

struct viewers {
    uv_loop_t *loop;
    unsigned char secret[VIEWERS_SECRET_BYTES];
    unsigned char set_key[crypto_shorthash_KEYBYTES];
    unsigned char addr_key[crypto_generichash_KEYBYTES];
    bool secure;
    struct vchan **buckets;
    size_t nbuckets, nchans, nlive;
    uint64_t next_session;
    uv_timer_t timer;
    void (*peak_fn)(const struct viewers_live *l, void *ud);
    void *peak_ud;
};

/* ---- the channel table ---- */

static uint64_t hash_bytes(const struct viewers *v, const void *p, size_t n)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, p, n, v->set_key);
    uint64_t x;
    memcpy(&x, h, sizeof x);
    return x;
}

static struct vchan **chan_slot(struct viewers *v, const char *slug)
{
    size_t b = hash_bytes(v, slug, strlen(slug)) & (v->nbuckets - 1);
    struct vchan **pp = &v->buckets[b];
    while (*pp && strcmp((*pp)->slug, slug) != 0)
        pp = &(*pp)->next;
    return pp;
}

static struct vchan *chan_find(struct viewers *v, const char *slug)
{
    if (!slug)
        return NULL;
    return *chan_slot(v, slug);
}

static void chan_grow(struct viewers *v)
{
    size_t n = v->nbuckets * 2;
    struct vchan **nb = calloc(n, sizeof *nb);
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < v->nbuckets; i++) {
        struct vchan *c = v->buckets[i], *next;
        for (; c; c = next) {
            next = c->next;
            size_t b = hash_bytes(v, c->slug, strlen(c->slug)) & (n - 1);
            c->next = nb[b];
            nb[b] = c;
        }
    }
    free(v->buckets);
    v->buckets = nb;
    v->nbuckets = n;
}

static struct vchan *chan_get(struct viewers *v, const char *slug)
{
    struct vchan **pp = chan_slot(v, slug);
    if (*pp)
        return *pp;
    if (strlen(slug) >= SLUG_MAX)
        return NULL;
    struct vchan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    memcpy(c->slug, slug, strlen(slug) + 1);
    *pp = c;
    if (++v->nchans > 2 * v->nbuckets)
        chan_grow(v);
    return c;
}

/* Drop the entry when it is neither live nor protected. */
static void chan_maybe_drop(struct viewers *v, struct vchan *c)
{
    if (c->live || c->is_protected || c->gone_until_ms)
        return;
    struct vchan **pp = chan_slot(v, c->slug);
    if (*pp == c)
        *pp = c->next;
    free(c->set.slots);
    free(c);
    v->nchans--;
}

/* ---- viewer sets ---- */

static struct vslot *set_lookup(struct viewers *v, struct vset *s, const unsigned char *id)
{
    if (!s->cap)
        return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = hash_bytes(v, id, VIEWERS_ID_BYTES) & mask;; i = (i + 1) & mask) {
        struct vslot *sl = &s->slots[i];
        if (sl->state == SLOT_EMPTY)
            return NULL;
        if (sl->state == SLOT_USED && memcmp(sl->id, id, VIEWERS_ID_BYTES) == 0)
            return sl;
    }
}

static struct vslot *set_place(struct viewers *v, struct vset *s, const unsigned char *id)
{
    size_t mask = s->cap - 1;
    size_t i = hash_bytes(v, id, VIEWERS_ID_BYTES) & mask;
    while (s->slots[i].state != SLOT_EMPTY)
        i = (i + 1) & mask;
    return &s->slots[i];
}

/* Rebuild with the live entries seen after `since` (0: all), at least min_cap slots. */
static int set_rebuild(struct viewers *v, struct vset *s, uint64_t since, size_t min_cap)
{
    size_t keep = 0;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].state == SLOT_USED && s->slots[i].last_ms > since)
            keep++;
    size_t cap = 16;
    while (cap < 2 * keep + 2 || cap < min_cap)
        cap *= 2;
    struct vslot *ns = calloc(cap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    struct vset n = {.slots = ns, .cap = cap, .full_logged = s->full_logged};
    for (size_t i = 0; i < s->cap; i++) {
        struct vslot *o = &s->slots[i];
        if (o->state != SLOT_USED || o->last_ms <= since)
            continue;
        *set_place(v, &n, o->id) = *o;
        n.used++;
        n.alive++;
    }
    free(s->slots);
    *s = n;
    return 0;
}

static int set_insert(struct viewers *v, struct vset *s, const unsigned char *id,
                      uint64_t now_ms, struct vslot **out)
{
    if (2 * (s->used + 1) > s->cap && set_rebuild(v, s, 0, 2 * s->cap) < 0)
        return -ENOMEM;
    struct vslot *sl = set_place(v, s, id);
    memset(sl, 0, sizeof *sl);
    memcpy(sl->id, id, VIEWERS_ID_BYTES);
    sl->last_ms = now_ms;
    sl->state = SLOT_USED;
    s->used++;
    s->alive++;
    *out = sl;
    return 0;
}

static void update_count(struct vchan *c)
{
    c->live->count = (unsigned)c->set.alive;
    if (c->live->count > c->live->peak)
        c->live->peak = c->live->count;
}

int viewers_touch(struct viewers *v, const char *slug, const unsigned char id[VIEWERS_ID_BYTES],
                  const unsigned char *issued, uint64_t now_ms)
{
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->live)
        return -ENOENT;
    struct vslot *sl = set_lookup(v, &c->set, id);
    int fresh = 0;
    if (!sl) {
        if (c->set.alive >= VIEWERS_MAX_PER_CHANNEL) {
            if (!c->set.full_logged)
                log_warn("viewers %s: %d viewer ids in the window; not counting more",
                         c->slug, VIEWERS_MAX_PER_CHANNEL);
            c->set.full_logged = true;
            return -ENOSPC;
        }
        if (set_insert(v, &c->set, id, now_ms, &sl) < 0)
            return -ENOMEM;
        fresh = 1;
        update_count(c);
    }
    sl->last_ms = now_ms;
    if (issued) {
        memcpy(sl->issued, issued, VIEWERS_ID_BYTES);
        sl->has_issued = true;
    }
    return fresh;
}

int viewers_touch_cookie(struct viewers *v, const char *slug,
                         const unsigned char cookie_id[VIEWERS_ID_BYTES],
                         const unsigned char hash_id[VIEWERS_ID_BYTES], uint64_t now_ms)
{
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->live)
        return -ENOENT;
    if (!set_lookup(v, &c->set, cookie_id)) {
        struct vslot *h = set_lookup(v, &c->set, hash_id);
        if (h && h->has_issued && memcmp(h->issued, cookie_id, VIEWERS_ID_BYTES) == 0) {
            h->state = SLOT_DEAD;
            c->set.alive--;
            c->live->count = (unsigned)c->set.alive;
        }
    }
    return viewers_touch(v, slug, cookie_id, NULL, now_ms);
}

void viewers_sweep(struct viewers *v, uint64_t now_ms)
{
    uint64_t since = now_ms > VIEWERS_WINDOW_MS ? now_ms - VIEWERS_WINDOW_MS : 0;
    for (size_t b = 0; b < v->nbuckets; b++) {
        for (struct vchan *c = v->buckets[b], *next; c; c = next) {
            next = c->next;
            if (c->gone_until_ms && now_ms >= c->gone_until_ms) {
                c->gone_until_ms = 0;
                chan_maybe_drop(v, c); /* may free c */
                continue;
            }
            if (!c->live)
                continue;
            bool stale = c->set.used != c->set.alive;
            for (size_t i = 0; !stale && i < c->set.cap; i++)
                stale = c->set.slots[i].state == SLOT_USED && c->set.slots[i].last_ms <= since;
            /* Shrink too: a table sized for a past crowd is rebuilt smaller. */
            if (stale || (c->set.cap > 64 && c->set.alive * 8 < c->set.cap))
                set_rebuild(v, &c->set, since, 0);
            update_count(c);
        }
    }
}

unsigned viewers_count(struct viewers *v, const char *slug)
{
    struct vchan *c = chan_find(v, slug);
    return c && c->live ? c->live->count : 0;
}

unsigned viewers_peak(struct viewers *v, const char *slug)
{
    struct vchan *c = chan_find(v, slug);
    return c && c->live ? c->live->peak : 0;
}

/* ---- player identity ---- */

void viewers_client_id(struct viewers *v, const char *remote, const char *user_agent,
                       unsigned char out[VIEWERS_ID_BYTES])
{
    /* The address without its port: "1.2.3.4:5678", "[2001:db8::1]:5678",
     * or already bare (http_request_client_ip): "1.2.3.4", "2001:db8::1". */
    const char *a = remote ? remote : "";
    size_t alen;
    if (a[0] == '[') {
        a++;
        alen = strcspn(a, "]");
    } else {
        const char *colon = strrchr(a, ':');
        alen = colon && strchr(a, ':') == colon ? (size_t)(colon - a) : strlen(a);
    }
    crypto_generichash_state st;
    unsigned char full[crypto_generichash_BYTES];
    crypto_generichash_init(&st, v->addr_key, sizeof v->addr_key, sizeof full);
    crypto_generichash_update(&st, (const unsigned char *)a, alen);
    crypto_generichash_update(&st, (const unsigned char *)"\n", 1);
    if (user_agent)
        crypto_generichash_update(&st, (const unsigned char *)user_agent, strnlen(user_agent, 1024));
    crypto_generichash_final(&st, full, sizeof full);
    memcpy(out, full, VIEWERS_ID_BYTES);
}

/* The hearth_vid cookie of the request, if it has a well-formed one. */
static bool request_vid(const struct http_request *req, unsigned char out[VIEWERS_ID_BYTES])
{
    for (int h = 0; h < req->nheaders; h++) {
        if (strcasecmp(req->headers[h].name, "Cookie") != 0)
            continue;
        for (int i = 0; i < 4; i++) {
            char val[2 * VIEWERS_ID_BYTES + 2];
            int rc = auth_cookie_get(req->headers[h].value, VIEWERS_ID_COOKIE, i, val, sizeof val);
            if (rc == -ENOENT)
                break;
            size_t n = 0;
            if (rc == 0 && strlen(val) == 2 * VIEWERS_ID_BYTES &&
                sodium_hex2bin(out, VIEWERS_ID_BYTES, val, strlen(val), NULL, &n, NULL) == 0 &&
                n == VIEWERS_ID_BYTES)
                return true;
        }
    }
    return false;
}

bool viewers_seen(struct viewers *v, struct http_request *req, const char *slug,
                  const char *file)
{
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->live)
        return false;
    uint64_t now = v->loop ? uv_now(v->loop) : 1;
    unsigned char hid[VIEWERS_ID_BYTES], cid[VIEWERS_ID_BYTES];
    viewers_client_id(v, http_request_client_ip(req), http_request_header(req, "User-Agent"), hid);
    if (request_vid(req, cid)) {
        viewers_touch_cookie(v, slug, cid, hid, now);
        return false;
    }
    if (!file || strcmp(file, "master.m3u8") != 0) {
        viewers_touch(v, slug, hid, NULL, now);
        return false;
    }
    unsigned char fresh[VIEWERS_ID_BYTES];
    char hex[2 * VIEWERS_ID_BYTES + 1];
    randombytes_buf(fresh, sizeof fresh);
    util_hex(fresh, sizeof fresh, hex);
    http_response_headerf(req, "Set-Cookie", "%s=%s; Path=/live/; Max-Age=%d; HttpOnly; SameSite=Lax%s",
                          VIEWERS_ID_COOKIE, hex, VIEWERS_ID_MAX_AGE, v->secure ? "; Secure" : "");
    viewers_touch(v, slug, hid, fresh, now);
    return true;
}

/* ---- watch tokens ---- */

#define TOKEN_PAYLOAD 24
#define TOKEN_MAC 16
static const char token_label[] = "hearth-access-v1";

static void put_be64(unsigned char *p, uint64_t x)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)x;
        x >>= 8;
    }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | p[i];
    return x;
}

static void token_mac(const unsigned char *secret, const unsigned char *payload,
                      unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, secret, VIEWERS_SECRET_BYTES);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token_label, sizeof token_label - 1);
    crypto_auth_hmacsha256_update(&st, payload, TOKEN_PAYLOAD);
    crypto_auth_hmacsha256_final(&st, mac);
}

void viewers_token_make(const unsigned char secret[VIEWERS_SECRET_BYTES], int64_t channel_id,
                        int64_t access_gen, int64_t expires, char out[VIEWERS_TOKEN_LEN + 1])
{
    unsigned char raw[TOKEN_PAYLOAD + TOKEN_MAC];
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    put_be64(raw, (uint64_t)channel_id);
    put_be64(raw + 8, (uint64_t)access_gen);
    put_be64(raw + 16, (uint64_t)expires);
    token_mac(secret, raw, mac);
    memcpy(raw + TOKEN_PAYLOAD, mac, TOKEN_MAC);
    sodium_bin2base64(out, VIEWERS_TOKEN_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

bool viewers_token_check(const unsigned char secret[VIEWERS_SECRET_BYTES], const char *token,
                         int64_t channel_id, int64_t access_gen, int64_t now, int64_t *expires)
{
    if (!token || strlen(token) != VIEWERS_TOKEN_LEN)
        return false;
    unsigned char raw[TOKEN_PAYLOAD + TOKEN_MAC];
    size_t n = 0;
    if (sodium_base642bin(raw, sizeof raw, token, VIEWERS_TOKEN_LEN, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != sizeof raw)
        return false;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    token_mac(secret, raw, mac);
    if (sodium_memcmp(mac, raw + TOKEN_PAYLOAD, TOKEN_MAC) != 0)
        return false;
    int64_t exp = (int64_t)get_be64(raw + 16);
    if ((int64_t)get_be64(raw) != channel_id || (int64_t)get_be64(raw + 8) != access_gen ||
        exp <= now)
        return false;
    if (expires)
        *expires = exp;
    return true;
}

int viewers_access_cookie(char *out, size_t n, const char *token, const char *path,
                          int64_t max_age, bool secure)
{
    if (!token || !path || strpbrk(path, ";\r\n") || strpbrk(token, ";,\r\n \t\""))
        return -EINVAL;
    int w = snprintf(out, n, "%s=%s; Path=%s; Max-Age=%lld; HttpOnly; SameSite=Lax%s",
                     VIEWERS_ACCESS_COOKIE, token, path, (long long)max_age,
                     secure ? "; Secure" : "");
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

/* ---- the door ---- */

static void set_access_cookie(struct viewers *v, struct http_request *req, struct vchan *c,
                              int64_t now)
{
    char token[VIEWERS_TOKEN_LEN + 1], path[SLUG_MAX + 16], cookie[256];
    viewers_token_make(v->secret, c->channel_id, c->access_gen, now + VIEWERS_TOKEN_TTL, token);
    snprintf(path, sizeof path, "/live/%s/", c->slug);
    if (viewers_access_cookie(cookie, sizeof cookie, token, path, VIEWERS_TOKEN_TTL, v->secure) == 0)
        http_response_header(req, "Set-Cookie", cookie);
}

static bool is_playlist(const char *file)
{
    return file && (strcmp(file, "master.m3u8") == 0 || strcmp(file, "index.m3u8") == 0);
}

bool viewers_allow(struct viewers *v, struct http_request *req, const char *slug,
                   const char *file, bool *private_out)
{
    *private_out = false;
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->is_protected)
        return true;
    *private_out = true;
    int64_t now = util_now_unix();
    for (int h = 0; h < req->nheaders; h++) {
        if (strcasecmp(req->headers[h].name, "Cookie") != 0)
            continue;
        for (int i = 0; i < 4; i++) {
            char tok[VIEWERS_TOKEN_LEN + 2];
            int rc = auth_cookie_get(req->headers[h].value, VIEWERS_ACCESS_COOKIE, i, tok, sizeof tok);
            if (rc == -ENOENT)
                break;
            int64_t exp;
            if (rc == 0 && viewers_token_check(v->secret, tok, c->channel_id, c->access_gen, now, &exp)) {
                /* A long watch keeps its door open: playlists renew a half-spent token. */
                if (is_playlist(file) && exp - now < VIEWERS_TOKEN_TTL / 2)
                    set_access_cookie(v, req, c, now);
                return true;
            }
        }
    }
    char code[128];
    if (c->invite_hash[0] && http_request_query(req, "invite", code, sizeof code) == 0 &&
        channel_invite_code_matches(c->invite_hash, code)) {
        set_access_cookie(v, req, c, now);
        return true;
    }
    http_response_error(req, 403, "protected",
                        "this channel is protected: only its owner, invited users and holders "
                        "of its invite code may watch it");
    http_response_header(req, "Cache-Control", "private, no-store");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    return false;
}

int viewers_hls_request(void *ud, struct http_request *req, const char *slug, const char *file)
{
    struct viewers *v = ud;
    bool priv = false;
    const struct vchan *c = chan_find(v, slug);
    if (c && c->gone_until_ms && !c->live) {
        /* Its stream lingers for players already on it; the channel does not. */
        http_response_error(req, 404, "not_found", "this channel was deleted");
        http_response_header(req, "Cache-Control", "no-store");
        http_response_header(req, "X-Content-Type-Options", "nosniff");
        return VIEWERS_DENY;
    }
    if (!viewers_allow(v, req, slug, file, &priv))
        return VIEWERS_DENY;
    if (viewers_seen(v, req, slug, file))
        priv = true;
    return priv ? VIEWERS_PRIVATE : VIEWERS_PUBLIC;
}

void viewers_access_set(struct viewers *v, const char *slug, int64_t channel_id,
                        bool is_protected, int64_t access_gen, const char *invite_hash)
{
    struct vchan *c = is_protected ? chan_get(v, slug) : chan_find(v, slug);
    if (!c)
        return;
    c->channel_id = channel_id;
    c->is_protected = is_protected;
    c->access_gen = access_gen;
    snprintf(c->invite_hash, sizeof c->invite_hash, "%s", invite_hash ? invite_hash : "");
    if (c->live)
        c->live->is_protected = is_protected;
    chan_maybe_drop(v, c);
}

bool viewers_is_protected(struct viewers *v, const char *slug)
{
    struct vchan *c = chan_find(v, slug);
    return c && c->is_protected;
}

/* ---- the live directory ---- */

uint64_t viewers_stream_start(struct viewers *v, const char *slug, int64_t channel_id,
                              int64_t started_at)
{
    struct vchan *c = chan_get(v, slug);
    if (!c)
        return 0;
    if (!c->live) {
        c->live = calloc(1, sizeof *c->live);
        if (!c->live) {
            chan_maybe_drop(v, c);
            return 0;
        }
        v->nlive++;
    }
    struct viewers_live *l = c->live;
    memset(l, 0, sizeof *l);
    c->gone_until_ms = 0; /* a new channel has the slug now */
    snprintf(l->slug, sizeof l->slug, "%s", slug);
    l->channel_id = channel_id;
    l->started_at = started_at;
    l->session = ++v->next_session;
    l->is_protected = c->is_protected;
    c->channel_id = channel_id;
    free(c->set.slots);
    memset(&c->set, 0, sizeof c->set);
    return l->session;
}

int viewers_stream_end(struct viewers *v, const char *slug, unsigned *peak, int64_t *started_at)
{
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->live)
        return -ENOENT;
    if (peak)
        *peak = c->live->peak;
    if (started_at)
        *started_at = c->live->started_at;
    free(c->live);
    c->live = NULL;
    free(c->set.slots);
    memset(&c->set, 0, sizeof c->set);
    v->nlive--;
    chan_maybe_drop(v, c);
    return 0;
}

void viewers_live_set_info(struct viewers *v, const char *slug, uint64_t session,
                           const char *title, const char *owner, const char *topic,
                           const char *topic_slug, const char *avatar_url)
{
    struct vchan *c = chan_find(v, slug);
    if (!c || !c->live || c->live->session != session)
        return;
    struct viewers_live *l = c->live;
    snprintf(l->title, sizeof l->title, "%s", title ? title : slug);
    snprintf(l->owner, sizeof l->owner, "%s", owner ? owner : "");
    snprintf(l->topic, sizeof l->topic, "%s", topic ? topic : "");
    snprintf(l->topic_slug, sizeof l->topic_slug, "%s", topic_slug ? topic_slug : "");
    snprintf(l->avatar_url, sizeof l->avatar_url, "%s", avatar_url ? avatar_url : "");
    l->info_loaded = true;
}

void viewers_live_set_title(struct viewers *v, const char *slug, const char *title)
{
    struct vchan *c = chan_find(v, slug);
    if (c && c->live && title)
        snprintf(c->live->title, sizeof c->live->title, "%s", title);
}

const struct viewers_live *viewers_live_find(struct viewers *v, const char *slug)
{
    struct vchan *c = chan_find(v, slug);
    return c ? c->live : NULL;
}

void viewers_live_foreach(struct viewers *v, void (*fn)(const struct viewers_live *l, void *ud),
                          void *ud)
{
    for (size_t b = 0; b < v->nbuckets; b++)
        for (struct vchan *c = v->buckets[b]; c; c = c->next)
            if (c->live)
                fn(c->live, ud);
}

size_t viewers_live_count(struct viewers *v) { return v->nlive; }

/* ---- life ---- */

void viewers_channel_gone(struct viewers *v, const char *slug, uint64_t now_ms)
{
    struct vchan *c = chan_get(v, slug);
    if (c)
        c->gone_until_ms = (now_ms ? now_ms : 1) + VIEWERS_GONE_MS;
}

void viewers_peaks_due(struct viewers *v, uint64_t now_ms,
                       void (*fn)(const struct viewers_live *l, void *ud), void *ud)
{
    for (size_t b = 0; b < v->nbuckets; b++)
        for (struct vchan *c = v->buckets[b]; c; c = c->next) {
            struct viewers_live *l = c->live;
            if (!l || l->peak <= l->peak_saved)
                continue;
            if (l->peak_saved_once && now_ms - l->peak_saved_ms < VIEWERS_PEAK_SAVE_MS)
                continue;
            fn(l, ud);
            l->peak_saved = l->peak;
            l->peak_saved_ms = now_ms;
            l->peak_saved_once = true;
        }
}

void viewers_set_peak_hook(struct viewers *v, void (*fn)(const struct viewers_live *l, void *ud),
                           void *ud)
{
    v->peak_fn = fn;
    v->peak_ud = ud;
}

static void on_sweep(uv_timer_t *t)
{
    struct viewers *v = t->data;
    uint64_t now = uv_now(v->loop);
    viewers_sweep(v, now);
    if (v->peak_fn)
        viewers_peaks_due(v, now, v->peak_fn, v->peak_ud);
}

struct viewers *viewers_new(uv_loop_t *loop, const unsigned char secret[VIEWERS_SECRET_BYTES],
                            bool secure_cookies)
{
    if (sodium_init() < 0)
        return NULL;
    struct viewers *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->nbuckets = 64;
    v->buckets = calloc(v->nbuckets, sizeof *v->buckets);
    if (!v->buckets) {
        free(v);
        return NULL;
    }
    v->loop = loop;
    v->secure = secure_cookies;
    memcpy(v->secret, secret, VIEWERS_SECRET_BYTES);
    crypto_shorthash_keygen(v->set_key);
    randombytes_buf(v->addr_key, sizeof v->addr_key);
    if (loop) {
        uv_timer_init(loop, &v->timer);
        v->timer.data = v;
        uv_timer_start(&v->timer, on_sweep, VIEWERS_SWEEP_MS, VIEWERS_SWEEP_MS);
        /* The sweep alone must not keep the loop from ending at shutdown. */
        uv_unref((uv_handle_t *)&v->timer);
    }
    return v;
}

static void free_tables(struct viewers *v)
{
    for (size_t b = 0; b < v->nbuckets; b++) {
        struct vchan *c = v->buckets[b], *next;
        for (; c; c = next) {
            next = c->next;
            free(c->live);
            free(c->set.slots);
            free(c);
        }
    }
    free(v->buckets);
    sodium_memzero(v->secret, sizeof v->secret);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct viewers *v = h->data;
    free_tables(v);
    free(v);
}

void viewers_free(struct viewers *v)
{
    if (!v)
        return;
    if (v->loop) {
        uv_close((uv_handle_t *)&v->timer, on_timer_closed);
        return;
    }
    free_tables(v);
    free(v);
}
