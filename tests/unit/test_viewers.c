/*
 * Tests for app/viewers.h (viewer counting, the live directory, watch tokens
 * and the door of protected channels, with hand-built requests) and for
 * app/channels_extra.h against a real, migrated SQLite database (edits,
 * visibility of protected channels in lists, invitations, follows,
 * notifications, the channel cap setting, peak viewers).
 *
 * The viewer state is made without a loop (viewers_new(NULL, ...)), so time
 * is whatever the test says: viewers_touch() and viewers_sweep() take it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/accounts.h"
#include "app/channels_extra.h"
#include "app/viewers.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"
#include "store/migrate.h"
#include "testdb.h"

static const unsigned char secret[VIEWERS_SECRET_BYTES] = "0123456789abcdef0123456789abcdef";

static void id_of(int n, unsigned char out[VIEWERS_ID_BYTES])
{
    memset(out, 0, VIEWERS_ID_BYTES);
    memcpy(out, &n, sizeof n);
    out[15] = 0x5a;
}

/* ---- a request made by hand ---- */

struct fake {
    struct http_request req;
    char query[256];
};

static void fake_init(struct fake *f, const char *remote, const char *query)
{
    memset(f, 0, sizeof *f);
    snprintf(f->req.remote, sizeof f->req.remote, "%s", remote);
    if (query) {
        snprintf(f->query, sizeof f->query, "%s", query);
        f->req.query = f->query;
    }
    f->req.method = 1; /* HTTP_GET */
    f->req.method_name = "GET";
    buf_init(&f->req.res.headers, 0);
    buf_init(&f->req.res.body, 0);
}

static void fake_header(struct fake *f, const char *name, const char *value)
{
    f->req.headers[f->req.nheaders].name = name;
    f->req.headers[f->req.nheaders].value = value;
    f->req.nheaders++;
}

static void fake_free(struct fake *f)
{
    buf_free(&f->req.res.headers);
    buf_free(&f->req.res.body);
}

static const char *res_headers(struct fake *f)
{
    buf_cstr(&f->req.res.headers);
    return f->req.res.headers.data ? f->req.res.headers.data : "";
}

/* The value of the first Set-Cookie for name, into out. */
static bool set_cookie_value(struct fake *f, const char *name, char *out, size_t n)
{
    const char *h = res_headers(f);
    char pat[64];
    snprintf(pat, sizeof pat, "Set-Cookie: %s=", name);
    const char *p = strstr(h, pat);
    if (!p)
        return false;
    p += strlen(pat);
    size_t len = strcspn(p, ";\r\n");
    snprintf(out, n, "%.*s", (int)len, p);
    return true;
}

/* ---- counting ---- */

static void test_count_unique_in_window(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    assert_non_null(v);
    unsigned char a[VIEWERS_ID_BYTES], b[VIEWERS_ID_BYTES];
    id_of(1, a);
    id_of(2, b);
    /* Not live: nothing is counted. */
    assert_int_equal(viewers_touch(v, "show", a, NULL, 1000), -ENOENT);
    uint64_t s1 = viewers_stream_start(v, "show", 7, 1700000000);
    assert_true(s1 > 0);
    assert_int_equal(viewers_touch(v, "show", a, NULL, 1000), 1);
    assert_int_equal(viewers_touch(v, "show", a, NULL, 2000), 0); /* same player again */
    assert_int_equal(viewers_touch(v, "show", b, NULL, 3000), 1);
    assert_int_equal(viewers_count(v, "show"), 2);
    assert_int_equal(viewers_peak(v, "show"), 2);

    /* a was last seen at 2000: still counted at 31999, gone at 32001. */
    viewers_sweep(v, 31999);
    assert_int_equal(viewers_count(v, "show"), 2);
    viewers_sweep(v, 32001);
    assert_int_equal(viewers_count(v, "show"), 1);
    viewers_sweep(v, 33001);
    assert_int_equal(viewers_count(v, "show"), 0);
    assert_int_equal(viewers_peak(v, "show"), 2); /* the peak stays */

    /* Coming back after the window counts again. */
    assert_int_equal(viewers_touch(v, "show", a, NULL, 40000), 1);
    assert_int_equal(viewers_count(v, "show"), 1);

    unsigned peak;
    int64_t started;
    assert_int_equal(viewers_stream_end(v, "show", &peak, &started), 0);
    assert_int_equal(peak, 2);
    assert_int_equal(started, 1700000000);
    assert_int_equal(viewers_count(v, "show"), 0);
    assert_int_equal(viewers_stream_end(v, "show", &peak, &started), -ENOENT);
    /* A new stream starts from nothing. */
    uint64_t s2 = viewers_stream_start(v, "show", 7, 1700000100);
    assert_true(s2 != s1);
    assert_int_equal(viewers_peak(v, "show"), 0);
    viewers_free(v);
}

static void test_count_many_and_shrink(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    viewers_stream_start(v, "big", 1, 1);
    unsigned char id[VIEWERS_ID_BYTES];
    for (int i = 0; i < 5000; i++) {
        id_of(i, id);
        assert_int_equal(viewers_touch(v, "big", id, NULL, 1000 + (uint64_t)i), 1);
    }
    for (int i = 0; i < 5000; i += 2) { /* half of them come back later */
        id_of(i, id);
        assert_int_equal(viewers_touch(v, "big", id, NULL, 20000), 0);
    }
    assert_int_equal(viewers_count(v, "big"), 5000);
    viewers_sweep(v, 40000); /* the odd ones were last seen before 10000 */
    assert_int_equal(viewers_count(v, "big"), 2500);
    for (int i = 0; i < 5000; i++) {
        id_of(i, id);
        int r = viewers_touch(v, "big", id, NULL, 41000);
        assert_int_equal(r, i % 2 ? 1 : 0);
    }
    viewers_sweep(v, 100000);
    assert_int_equal(viewers_count(v, "big"), 0);
    assert_int_equal(viewers_peak(v, "big"), 5000);
    viewers_free(v);
}

static void test_cookie_replaces_address(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    viewers_stream_start(v, "show", 3, 1);
    unsigned char h1[VIEWERS_ID_BYTES], h2[VIEWERS_ID_BYTES], c1[VIEWERS_ID_BYTES],
        c2[VIEWERS_ID_BYTES];
    /* Two browsers behind one NAT, same User-Agent: one address hash. */
    viewers_client_id(v, "203.0.113.5:4000", "Firefox/128", h1);
    viewers_client_id(v, "203.0.113.5:4001", "Firefox/128", h2);
    assert_memory_equal(h1, h2, VIEWERS_ID_BYTES); /* the port does not matter */
    id_of(100, c1);
    id_of(200, c2);

    /* Browser 1: master.m3u8 without a cookie (counted by address, cookie c1 handed out)... */
    assert_int_equal(viewers_touch(v, "show", h1, c1, 1000), 1);
    assert_int_equal(viewers_count(v, "show"), 1);
    /* ...then its playlist with c1: the address entry gives way, still one viewer. */
    assert_int_equal(viewers_touch_cookie(v, "show", c1, h1, 1100), 1);
    assert_int_equal(viewers_count(v, "show"), 1);
    /* Browser 2, same address: master (c2 handed out), then with c2: two viewers. */
    assert_int_equal(viewers_touch(v, "show", h1, c2, 1200), 1);
    assert_int_equal(viewers_count(v, "show"), 2);
    assert_int_equal(viewers_touch_cookie(v, "show", c2, h1, 1300), 1);
    assert_int_equal(viewers_count(v, "show"), 2);
    /* A cookie nobody handed out here (another channel's) does not drop anything. */
    unsigned char h3[VIEWERS_ID_BYTES], c3[VIEWERS_ID_BYTES];
    viewers_client_id(v, "198.51.100.7:1", "curl/8", h3);
    assert_int_equal(viewers_touch(v, "show", h3, NULL, 1400), 1); /* a cookieless player */
    id_of(300, c3);
    assert_int_equal(viewers_touch_cookie(v, "show", c3, h3, 1500), 1);
    assert_int_equal(viewers_count(v, "show"), 4);
    viewers_sweep(v, 2000);
    assert_int_equal(viewers_count(v, "show"), 4);

    /* Different address or User-Agent: different ids; IPv6 keeps its brackets off. */
    unsigned char x[VIEWERS_ID_BYTES], y[VIEWERS_ID_BYTES];
    viewers_client_id(v, "[2001:db8::1]:443", "UA", x);
    viewers_client_id(v, "[2001:db8::1]:9999", "UA", y);
    assert_memory_equal(x, y, VIEWERS_ID_BYTES);
    viewers_client_id(v, "[2001:db8::2]:443", "UA", y);
    assert_memory_not_equal(x, y, VIEWERS_ID_BYTES);
    viewers_client_id(v, "[2001:db8::1]:443", "UA2", y);
    assert_memory_not_equal(x, y, VIEWERS_ID_BYTES);
    viewers_free(v);
}

static void test_seen_requests(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, true);
    viewers_stream_start(v, "show", 3, 1);
    struct fake f;
    /* master.m3u8 without a cookie: a hearth_vid cookie, Secure (https site), Path=/live/. */
    fake_init(&f, "192.0.2.1:5000", NULL);
    fake_header(&f, "User-Agent", "Mozilla/5.0");
    assert_true(viewers_seen(v, &f.req, "show", "master.m3u8"));
    char vid[64];
    assert_true(set_cookie_value(&f, VIEWERS_ID_COOKIE, vid, sizeof vid));
    assert_int_equal(strlen(vid), 32);
    assert_non_null(strstr(res_headers(&f), "Path=/live/; Max-Age=86400; HttpOnly; SameSite=Lax; Secure"));
    fake_free(&f);
    assert_int_equal(viewers_count(v, "show"), 1);

    /* The playlist with that cookie: the same viewer. */
    char cookie[128];
    snprintf(cookie, sizeof cookie, "other=1; %s=%s", VIEWERS_ID_COOKIE, vid);
    fake_init(&f, "192.0.2.1:5001", NULL);
    fake_header(&f, "User-Agent", "Mozilla/5.0");
    fake_header(&f, "Cookie", cookie);
    assert_false(viewers_seen(v, &f.req, "show", "index.m3u8"));
    assert_int_equal(f.req.res.headers.len, 0);
    fake_free(&f);
    assert_int_equal(viewers_count(v, "show"), 1);

    /* A player without cookies fetching parts: counted by address, no cookie set. */
    fake_init(&f, "192.0.2.99:1", NULL);
    fake_header(&f, "User-Agent", "VLC/3.0");
    assert_false(viewers_seen(v, &f.req, "show", "part-abc-1.0.m4s"));
    fake_free(&f);
    assert_int_equal(viewers_count(v, "show"), 2);

    /* A malformed cookie is no cookie. */
    fake_init(&f, "192.0.2.50:1", NULL);
    fake_header(&f, "Cookie", VIEWERS_ID_COOKIE "=zz");
    assert_false(viewers_seen(v, &f.req, "show", "index.m3u8"));
    fake_free(&f);
    assert_int_equal(viewers_count(v, "show"), 3);

    /* A channel that is not live: nothing. */
    fake_init(&f, "192.0.2.1:5000", NULL);
    assert_false(viewers_seen(v, &f.req, "other", "master.m3u8"));
    fake_free(&f);
    viewers_free(v);
}

/* ---- the live directory ---- */

static void count_listed(const struct viewers_live *l, void *ud)
{
    if (l->info_loaded)
        (*(int *)ud)++;
}

static void test_live_directory(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    uint64_t s = viewers_stream_start(v, "a", 1, 100);
    viewers_stream_start(v, "b", 2, 200);
    assert_int_equal(viewers_live_count(v), 2);
    int listed = 0;
    viewers_live_foreach(v, count_listed, &listed);
    assert_int_equal(listed, 0); /* no information yet */
    viewers_live_set_info(v, "a", s + 1000, "stale", "x", "", "", ""); /* another session: ignored */
    assert_false(viewers_live_find(v, "a")->info_loaded);
    viewers_live_set_info(v, "a", s, "Title A", "alice", "Games", "games", "/api/v1/channels/a/avatar?v=1");
    const struct viewers_live *l = viewers_live_find(v, "a");
    assert_true(l->info_loaded);
    assert_string_equal(l->title, "Title A");
    assert_string_equal(l->owner, "alice");
    assert_string_equal(l->topic_slug, "games");
    viewers_live_set_title(v, "a", "New title");
    assert_string_equal(viewers_live_find(v, "a")->title, "New title");
    listed = 0;
    viewers_live_foreach(v, count_listed, &listed);
    assert_int_equal(listed, 1);
    assert_int_equal(viewers_stream_end(v, "a", NULL, NULL), 0);
    assert_null(viewers_live_find(v, "a"));
    assert_int_equal(viewers_live_count(v), 1);
    viewers_free(v);
}

/* ---- peaks to persist ---- */

struct peaks_seen {
    int calls;
    unsigned last_peak;
    char last_slug[CHANNEL_SLUG_MAX + 1];
};

static void note_peak(const struct viewers_live *l, void *ud)
{
    struct peaks_seen *p = ud;
    p->calls++;
    p->last_peak = l->peak;
    snprintf(p->last_slug, sizeof p->last_slug, "%s", l->slug);
}

static void test_peaks_due(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    struct peaks_seen p = {0};
    unsigned char id[VIEWERS_ID_BYTES];
    viewers_stream_start(v, "show", 7, 1700000000);
    viewers_peaks_due(v, 0, note_peak, &p);
    assert_int_equal(p.calls, 0); /* no viewer yet: nothing to write */

    /* The first rise goes at once, even at loop time 0. */
    id_of(1, id);
    viewers_touch(v, "show", id, NULL, 0);
    viewers_peaks_due(v, 0, note_peak, &p);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.last_peak, 1);
    assert_string_equal(p.last_slug, "show");
    viewers_peaks_due(v, 1000, note_peak, &p);
    assert_int_equal(p.calls, 1); /* no rise: nothing */

    /* Rises within VIEWERS_PEAK_SAVE_MS wait; the latest peak goes when it is up. */
    for (int n = 2; n <= 5; n++) {
        id_of(n, id);
        viewers_touch(v, "show", id, NULL, (uint64_t)n * 1000);
        viewers_peaks_due(v, (uint64_t)n * 1000, note_peak, &p);
    }
    assert_int_equal(p.calls, 1);
    viewers_peaks_due(v, VIEWERS_PEAK_SAVE_MS - 1, note_peak, &p);
    assert_int_equal(p.calls, 1);
    viewers_peaks_due(v, VIEWERS_PEAK_SAVE_MS, note_peak, &p);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.last_peak, 5);
    /* Viewers leaving do not make a write: the peak did not rise. */
    viewers_sweep(v, 100000);
    assert_int_equal(viewers_count(v, "show"), 0);
    viewers_peaks_due(v, 200000, note_peak, &p);
    assert_int_equal(p.calls, 2);

    /* A new stream starts from nothing: its first rise goes at once again. */
    viewers_stream_end(v, "show", NULL, NULL);
    viewers_stream_start(v, "show", 7, 1700000500);
    id_of(9, id);
    viewers_touch(v, "show", id, NULL, 200500);
    viewers_peaks_due(v, 200500, note_peak, &p);
    assert_int_equal(p.calls, 3);
    assert_int_equal(p.last_peak, 1);
    viewers_free(v);
}

/* ---- a channel deleted while live ---- */

static void test_gone(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    struct fake f;
    viewers_stream_start(v, "doomed", 3, 1700000000);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "doomed", "index.m3u8"), VIEWERS_PUBLIC);
    fake_free(&f);

    /* Deleted: the stream ends, and its lingering playlist is not served. */
    viewers_channel_gone(v, "doomed", 5000);
    viewers_stream_end(v, "doomed", NULL, NULL);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "doomed", "index.m3u8"), VIEWERS_DENY);
    assert_int_equal(f.req.res.status, 404);
    buf_cstr(&f.req.res.body);
    assert_non_null(strstr(f.req.res.body.data, "\"not_found\""));
    assert_non_null(strstr(res_headers(&f), "Cache-Control: no-store"));
    fake_free(&f);
    /* Other channels are not touched. */
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "other", "index.m3u8"), VIEWERS_PUBLIC);
    fake_free(&f);

    /* Until VIEWERS_GONE_MS has passed (the sweep forgets it then). */
    viewers_sweep(v, 5000 + VIEWERS_GONE_MS - 1);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "doomed", "index.m3u8"), VIEWERS_DENY);
    fake_free(&f);
    viewers_sweep(v, 5000 + VIEWERS_GONE_MS);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "doomed", "index.m3u8"), VIEWERS_PUBLIC);
    fake_free(&f);

    /* A new channel with the slug that goes live lifts it at once. */
    viewers_channel_gone(v, "doomed", 10000);
    viewers_stream_start(v, "doomed", 4, 1700000100);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "doomed", "index.m3u8"), VIEWERS_PUBLIC);
    fake_free(&f);
    viewers_free(v);
}

/* ---- tokens and the door ---- */

static void test_tokens(void **state)
{
    char t[VIEWERS_TOKEN_LEN + 1];
    viewers_token_make(secret, 42, 3, 2000, t);
    assert_int_equal(strlen(t), VIEWERS_TOKEN_LEN);
    int64_t exp = 0;
    assert_true(viewers_token_check(secret, t, 42, 3, 1999, &exp));
    assert_int_equal(exp, 2000);
    assert_false(viewers_token_check(secret, t, 42, 3, 2000, NULL)); /* expired */
    assert_false(viewers_token_check(secret, t, 43, 3, 1000, NULL)); /* another channel */
    assert_false(viewers_token_check(secret, t, 42, 4, 1000, NULL)); /* revoked generation */
    unsigned char other[VIEWERS_SECRET_BYTES];
    memcpy(other, secret, sizeof other);
    other[0] ^= 1;
    assert_false(viewers_token_check(other, t, 42, 3, 1000, NULL)); /* another server's secret */
    for (size_t i = 0; i < VIEWERS_TOKEN_LEN; i++) { /* any change breaks it */
        char u[VIEWERS_TOKEN_LEN + 1];
        memcpy(u, t, sizeof u);
        u[i] = u[i] == 'A' ? 'B' : 'A';
        assert_false(viewers_token_check(secret, u, 42, 3, 1000, NULL));
    }
    assert_false(viewers_token_check(secret, "", 42, 3, 1000, NULL));
    assert_false(viewers_token_check(secret, NULL, 42, 3, 1000, NULL));
    char c[256];
    assert_int_equal(viewers_access_cookie(c, sizeof c, t, "/live/x/", 60, true), 0);
    assert_non_null(strstr(c, "hearth_access="));
    assert_non_null(strstr(c, "; Path=/live/x/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"));
    assert_int_equal(viewers_access_cookie(c, sizeof c, t, "/live/x;\r\n", 60, true), -EINVAL);
    assert_int_equal(viewers_access_cookie(c, 20, t, "/live/x/", 60, true), -ENAMETOOLONG);
}

static void test_door(void **state)
{
    struct viewers *v = viewers_new(NULL, secret, false);
    char code[CHANNEL_INVITE_CODE_LEN + 1] = "abcdefghijklmnopqrstuv";
    char hash[CHANNEL_HASH_HEX + 1];
    channel_invite_code_hash(code, hash);
    struct fake f;
    bool priv;

    /* Not protected: open, and shareable by caches. */
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_true(viewers_allow(v, &f.req, "open", "master.m3u8", &priv));
    assert_false(priv);
    assert_int_equal(viewers_hls_request(v, &f.req, "open", "index.m3u8"), VIEWERS_PUBLIC);
    fake_free(&f);

    viewers_access_set(v, "secret", 9, true, 5, hash);
    assert_true(viewers_is_protected(v, "secret"));
    /* No credential: 403 "protected". */
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_false(viewers_allow(v, &f.req, "secret", "master.m3u8", &priv));
    assert_int_equal(f.req.res.status, 403);
    buf_cstr(&f.req.res.body);
    assert_non_null(strstr(f.req.res.body.data, "\"protected\""));
    assert_non_null(strstr(res_headers(&f), "Cache-Control: private, no-store"));
    fake_free(&f);
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_int_equal(viewers_hls_request(v, &f.req, "secret", "index.m3u8"), VIEWERS_DENY);
    fake_free(&f);

    /* A wrong code: refused. */
    fake_init(&f, "192.0.2.1:1", "invite=nope");
    assert_false(viewers_allow(v, &f.req, "secret", "master.m3u8", &priv));
    fake_free(&f);

    /* The code: in, private, and a token cookie for /live/secret/. */
    char q[64];
    snprintf(q, sizeof q, "invite=%s", code);
    fake_init(&f, "192.0.2.1:1", q);
    assert_true(viewers_allow(v, &f.req, "secret", "master.m3u8", &priv));
    assert_true(priv);
    char tok[128];
    assert_true(set_cookie_value(&f, VIEWERS_ACCESS_COOKIE, tok, sizeof tok));
    assert_non_null(strstr(res_headers(&f), "Path=/live/secret/;"));
    fake_free(&f);

    /* The token alone opens it, for the other files too. */
    char cookie[200];
    snprintf(cookie, sizeof cookie, "a=b; %s=%s", VIEWERS_ACCESS_COOKIE, tok);
    fake_init(&f, "192.0.2.1:1", NULL);
    fake_header(&f, "Cookie", cookie);
    assert_true(viewers_allow(v, &f.req, "secret", "seg-x-1.m4s", &priv));
    assert_true(priv);
    assert_int_equal(viewers_hls_request(v, &f.req, "secret", "seg-x-1.m4s"), VIEWERS_PRIVATE);
    fake_free(&f);

    /* ...but not another protected channel's door. */
    viewers_access_set(v, "other", 10, true, 5, hash);
    fake_init(&f, "192.0.2.1:1", NULL);
    fake_header(&f, "Cookie", cookie);
    assert_false(viewers_allow(v, &f.req, "other", "index.m3u8", &priv));
    fake_free(&f);

    /* A new generation (the code changed, an invitation was withdrawn) revokes it. */
    viewers_access_set(v, "secret", 9, true, 6, NULL);
    fake_init(&f, "192.0.2.1:1", NULL);
    fake_header(&f, "Cookie", cookie);
    assert_false(viewers_allow(v, &f.req, "secret", "index.m3u8", &priv));
    fake_free(&f);
    /* And without an invite code, no code works. */
    fake_init(&f, "192.0.2.1:1", q);
    assert_false(viewers_allow(v, &f.req, "secret", "master.m3u8", &priv));
    fake_free(&f);

    /* Unprotected again: open. */
    viewers_access_set(v, "secret", 9, false, 7, NULL);
    assert_false(viewers_is_protected(v, "secret"));
    fake_init(&f, "192.0.2.1:1", NULL);
    assert_true(viewers_allow(v, &f.req, "secret", "master.m3u8", &priv));
    assert_false(priv);
    fake_free(&f);
    viewers_free(v);
}

/* ---- channels_extra against a database ---- */

static char tmpdir[PATH_MAX];
static struct db *db;
static struct user alice, bob, carol;

static int db_setup(void **state)
{
    if (testdb_open("viewers", tmpdir, &db) != 0)
        return -1;
    char err[512];
    if (account_user_add(db, "alice", "alice@example.org", "streamer,user", "password-a", &alice,
                         err, sizeof err) != 0 ||
        account_user_add(db, "bob", NULL, "user", "password-b", &bob, err, sizeof err) != 0 ||
        account_user_add(db, "carol", NULL, "admin", "password-c", &carol, err, sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int db_teardown(void **state)
{
    testdb_close(tmpdir, db);
    return 0;
}

static int collect(const struct channel_ext *c, void *ud)
{
    char *out = ud;
    strcat(out, c->c.slug);
    strcat(out, " ");
    return 0;
}

static void list_slugs(const struct channel_query *q, char *out)
{
    out[0] = '\0';
    char err[256];
    assert_int_equal(channel_ext_list(db, q, collect, out, err, sizeof err), 0);
}

static void test_db_channels(void **state)
{
    char err[256], slugs[512];
    struct channel ch;
    struct topic t;
    assert_int_equal(topic_add(db, "Games", &t, err, sizeof err), 0);
    assert_int_equal(channel_add(db, "alice", "Alice plays", "alice-plays", "games", &ch, err, sizeof err), 0);
    assert_int_equal(channel_add(db, "alice", "Alice cooks", "alice-cooks", NULL, &ch, err, sizeof err), 0);
    assert_int_equal(channel_add(db, "bob", "Bob's 100%_done", "bob", NULL, &ch, err, sizeof err), 0);

    struct channel_ext e;
    assert_int_equal(channel_ext_find(db, "alice-plays", &e, err, sizeof err), 0);
    assert_true(e.chat_enabled);
    assert_false(e.is_protected);
    assert_string_equal(e.topic_slug, "games");
    assert_int_equal(e.access_gen, 1);
    assert_string_equal(channel_ext_live_title(&e), "Alice plays");
    assert_int_equal(channel_ext_find(db, "nope", &e, err, sizeof err), -ENOENT);

    /* An edit: several fields, Markdown with newlines kept as text. */
    struct channel_patch p = {.record = -1, .chat_enabled = 0, .is_protected = -1};
    p.title = "<script>alert(1)</script>";
    p.description = "# Hi\n\n*bold* <b>raw</b>\tok";
    p.live_title_set = true;
    p.live_title = "Tonight: speedruns";
    p.topic_set = true;
    p.topic = NULL;
    assert_int_equal(channel_update(db, "alice-plays", &p, &e, err, sizeof err), 0);
    assert_string_equal(e.c.title, "<script>alert(1)</script>");
    assert_string_equal(e.c.description, "# Hi\n\n*bold* <b>raw</b>\tok");
    assert_string_equal(e.c.topic, "");
    assert_false(e.chat_enabled);
    assert_string_equal(channel_ext_live_title(&e), "Tonight: speedruns");
    /* Rules: a control character, an unknown topic, an empty title; nothing changes. */
    struct channel_patch bad = {.record = -1, .chat_enabled = -1, .is_protected = -1};
    bad.description = "bell\a";
    assert_int_equal(channel_update(db, "alice-plays", &bad, NULL, err, sizeof err), -EINVAL);
    bad.description = NULL;
    bad.topic_set = true;
    bad.topic = "Nope";
    assert_int_equal(channel_update(db, "alice-plays", &bad, NULL, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "no topic"));
    bad.topic_set = false;
    bad.title = "";
    assert_int_equal(channel_update(db, "alice-plays", &bad, NULL, err, sizeof err), -EINVAL);
    assert_int_equal(channel_update(db, "nope", &p, NULL, err, sizeof err), -ENOENT);

    /* Search: title, slug, owner; LIKE wildcards are plain characters. */
    struct channel_query q = {.limit = 50};
    q.q = "cooks";
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "alice-cooks ");
    q.q = "ALICE";
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "alice-cooks alice-plays ");
    q.q = "100%_";
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "bob ");
    q.q = "%";
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "bob ");
    q.q = NULL;
    q.owner = "bob";
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "bob ");
    q.owner = NULL;
    q.limit = 1;
    q.offset = 1;
    list_slugs(&q, slugs);
    assert_string_equal(slugs, "alice-plays ");

    /* Protection: hidden from guests and others; the owner, invitees and admins see it. */
    struct channel_patch prot = {.record = -1, .chat_enabled = -1, .is_protected = 1};
    assert_int_equal(channel_update(db, "alice-cooks", &prot, &e, err, sizeof err), 0);
    assert_true(e.is_protected);
    assert_int_equal(e.access_gen, 2); /* turning protection on revokes older tokens */
    struct channel_query guest = {.limit = 50};
    list_slugs(&guest, slugs);
    assert_string_equal(slugs, "alice-plays bob ");
    struct channel_query as_bob = {.limit = 50, .viewer_id = bob.id};
    list_slugs(&as_bob, slugs);
    assert_string_equal(slugs, "alice-plays bob ");
    struct channel_query as_alice = {.limit = 50, .viewer_id = alice.id};
    list_slugs(&as_alice, slugs);
    assert_string_equal(slugs, "alice-cooks alice-plays bob ");
    struct channel_query as_admin = {.limit = 50, .viewer_id = carol.id, .viewer_admin = true};
    list_slugs(&as_admin, slugs);
    assert_string_equal(slugs, "alice-cooks alice-plays bob ");
    assert_int_equal(channel_invite_add(db, e.c.id, "bob", NULL, err, sizeof err), 0);
    assert_int_equal(channel_invite_add(db, e.c.id, "bob", NULL, err, sizeof err), 0); /* twice is fine */
    assert_int_equal(channel_invite_add(db, e.c.id, "nobody", NULL, err, sizeof err), -ENOENT);
    bool invited;
    assert_int_equal(channel_is_invited(db, e.c.id, bob.id, &invited), 0);
    assert_true(invited);
    list_slugs(&as_bob, slugs);
    assert_string_equal(slugs, "alice-cooks alice-plays bob ");

    /* The invite code: kept as a hash, a new one bumps the generation. */
    char code[CHANNEL_INVITE_CODE_LEN + 1];
    assert_int_equal(channel_invite_code_new(db, e.c.id, code, err, sizeof err), 0);
    assert_int_equal(strlen(code), CHANNEL_INVITE_CODE_LEN);
    assert_int_equal(channel_ext_find_id(db, e.c.id, &e, err, sizeof err), 0);
    assert_int_equal(e.access_gen, 3);
    assert_null(strstr(e.invite_code_hash, code));
    assert_true(channel_invite_code_matches(e.invite_code_hash, code));
    assert_false(channel_invite_code_matches(e.invite_code_hash, "x"));
    assert_false(channel_invite_code_matches("", code));

    /* Withdrawing the invitation revokes tokens again. */
    assert_int_equal(channel_invite_remove(db, e.c.id, "bob", err, sizeof err), 0);
    assert_int_equal(channel_invite_remove(db, e.c.id, "bob", err, sizeof err), -ENOENT);
    assert_int_equal(channel_ext_find_id(db, e.c.id, &e, err, sizeof err), 0);
    assert_int_equal(e.access_gen, 4);
    assert_int_equal(channel_invite_code_clear(db, e.c.id, err, sizeof err), 0);
    assert_int_equal(channel_ext_find_id(db, e.c.id, &e, err, sizeof err), 0);
    assert_string_equal(e.invite_code_hash, "");

    /* Images. */
    char old[CHANNEL_IMAGE_PATH_MAX];
    assert_int_equal(channel_set_image(db, e.c.id, false, "channels/1/avatar-a.png", old, err, sizeof err), 0);
    assert_string_equal(old, "");
    assert_int_equal(channel_set_image(db, e.c.id, false, "channels/1/avatar-b.png", old, err, sizeof err), 0);
    assert_string_equal(old, "channels/1/avatar-a.png");
    assert_int_equal(channel_ext_find_id(db, e.c.id, &e, err, sizeof err), 0);
    json_t *o = channel_ext_to_json(&e, "http://h", "0.0.0.0:1935", CHANNEL_VIEW_PUBLIC);
    assert_string_equal(json_string_value(json_object_get(o, "avatar_url")),
                        "/api/v1/channels/alice-cooks/avatar?v=avatar-b");
    assert_true(json_is_null(json_object_get(o, "banner_url")));
    assert_null(json_object_get(o, "stream_key"));
    assert_null(json_object_get(o, "rtmp_url"));
    assert_null(json_object_get(o, "obs"));
    assert_null(json_object_get(o, "has_invite_code"));
    assert_true(json_is_true(json_object_get(o, "protected")));
    json_decref(o);
    /* An admin managing someone's channel: its settings, never the key. */
    o = channel_ext_to_json(&e, "http://h", "0.0.0.0:1935", CHANNEL_VIEW_MANAGER);
    assert_null(json_object_get(o, "stream_key"));
    assert_null(json_object_get(o, "obs"));
    assert_string_equal(json_string_value(json_object_get(o, "rtmp_url")), "rtmp://h/live");
    assert_true(json_is_boolean(json_object_get(o, "has_invite_code")));
    char *text = json_dumps(o, JSON_COMPACT);
    assert_null(strstr(text, e.c.stream_key));
    free(text);
    json_decref(o);
    o = channel_ext_to_json(&e, "http://h", "0.0.0.0:1935", CHANNEL_VIEW_OWNER);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "obs"), "server")),
                        "rtmp://h/live");
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "obs"), "key")),
                        e.c.stream_key);
    assert_non_null(json_object_get(o, "stream_key"));
    json_decref(o);
}

static int count_protected(const char *slug, int64_t id, int64_t gen, const char *hash, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

static int count_notes(const struct notification *n, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

static int collect_user(const struct user *u, void *ud)
{
    strcat(ud, u->name);
    strcat(ud, " ");
    return 0;
}

static void test_db_user_search(void **state)
{
    char names[256], err[256];
    struct user dave;
    /* A user with no channel is found too; disabled ones are not. */
    assert_int_equal(account_user_add(db, "Alicia_B", NULL, "user", "password-d", &dave, err, sizeof err), 0);
    names[0] = '\0';
    assert_int_equal(user_search(db, "ALI", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "alice Alicia_B ");
    names[0] = '\0';
    assert_int_equal(user_search(db, "alicia_b", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "Alicia_B ");
    /* An exact match comes first, and LIKE's wildcards are plain characters. */
    names[0] = '\0';
    assert_int_equal(user_search(db, "_", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "Alicia_B ");
    names[0] = '\0';
    assert_int_equal(user_search(db, "%", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "");
    names[0] = '\0';
    assert_int_equal(user_search(db, "ali", 1, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "alice ");
    assert_int_equal(account_user_set_disabled(db, "Alicia_B", true, err, sizeof err), 0);
    names[0] = '\0';
    assert_int_equal(user_search(db, "ali", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "alice ");
    names[0] = '\0';
    assert_int_equal(user_search(db, "", 20, collect_user, names, err, sizeof err), 0);
    assert_string_equal(names, "");
}

static void test_db_follows_and_more(void **state)
{
    char err[256], slugs[512];
    struct channel_ext e;
    assert_int_equal(channel_ext_find(db, "alice-plays", &e, err, sizeof err), 0);
    int np = 0;
    assert_int_equal(channel_protected_foreach(db, count_protected, &np), 0);
    assert_int_equal(np, 1);

    /* Following, and the following list. */
    assert_int_equal(channel_follow(db, bob.id, e.c.id, -1, err, sizeof err), 0);
    assert_int_equal(channel_follow(db, bob.id, e.c.id, 1, err, sizeof err), 0); /* opt in to mail */
    bool following, notify;
    assert_int_equal(channel_follow_state(db, bob.id, e.c.id, &following, &notify), 0);
    assert_true(following);
    assert_true(notify);
    assert_int_equal(channel_follow(db, bob.id, e.c.id, -1, err, sizeof err), 0); /* keeps it */
    assert_int_equal(channel_follow_state(db, bob.id, e.c.id, &following, &notify), 0);
    assert_true(notify);
    assert_int_equal(channel_follow(db, bob.id, 99999, -1, err, sizeof err), -ENOENT);
    struct channel_query fq = {.limit = 50, .followed_by = bob.id, .viewer_id = bob.id};
    list_slugs(&fq, slugs);
    assert_string_equal(slugs, "alice-plays ");
    assert_int_equal(channel_ext_find(db, "alice-plays", &e, err, sizeof err), 0);
    assert_int_equal(e.followers, 1);

    /* Going live notifies followers, once per quiet period. */
    int64_t now = util_now_unix(), count = -1;
    assert_int_equal(notifications_channel_live(db, e.c.id, now, &count), 0);
    assert_int_equal(count, 1);
    assert_int_equal(notifications_channel_live(db, e.c.id, now + 60, &count), 0);
    assert_int_equal(count, 0);
    assert_int_equal(notifications_channel_live(db, e.c.id, now + 601, &count), 0);
    assert_int_equal(count, 1);
    int nn = 0;
    assert_int_equal(notifications_list(db, bob.id, true, 50, count_notes, &nn, err, sizeof err), 0);
    assert_int_equal(nn, 2);
    int64_t changed;
    assert_int_equal(notifications_mark_read(db, bob.id, 0, now, &changed), 0);
    assert_int_equal(changed, 2);
    nn = 0;
    assert_int_equal(notifications_list(db, bob.id, true, 50, count_notes, &nn, err, sizeof err), 0);
    assert_int_equal(nn, 0);
    nn = 0;
    assert_int_equal(notifications_list(db, alice.id, false, 50, count_notes, &nn, err, sizeof err), 0);
    assert_int_equal(nn, 0);

    /* A follower of a protected channel who is not invited is not told. */
    struct channel_ext pc;
    assert_int_equal(channel_ext_find(db, "alice-cooks", &pc, err, sizeof err), 0);
    assert_int_equal(channel_follow(db, bob.id, pc.c.id, -1, err, sizeof err), 0);
    assert_int_equal(notifications_channel_live(db, pc.c.id, now, &count), 0);
    assert_int_equal(count, 0);

    assert_int_equal(channel_unfollow(db, bob.id, e.c.id, err, sizeof err), 0);
    assert_int_equal(channel_unfollow(db, bob.id, e.c.id, err, sizeof err), -ENOENT);

    /* The cap setting: the migration's default, then whatever is stored. */
    int64_t cap = 0, owned = 0;
    assert_int_equal(settings_get_int(db, "max_channels_per_user", 1, &cap), 0);
    assert_int_equal(cap, 5);
    assert_int_equal(settings_get_int(db, "no_such_setting", 7, &cap), 0);
    assert_int_equal(cap, 7);
    assert_int_equal(channel_count_owned(db, alice.id, &owned), 0);
    assert_int_equal(owned, 2);

    /* The secret is made once and kept. */
    unsigned char s1[32], s2[32];
    assert_int_equal(settings_secret(db, "internal.test_secret", s1), 0);
    assert_int_equal(settings_secret(db, "internal.test_secret", s2), 0);
    assert_memory_equal(s1, s2, 32);

    /* Peak viewers go to the stream row that was live. */
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "INSERT INTO streams (channel_id, started_at, ended_at) VALUES (?, 100, 200), (?, 300, NULL)", &st), 0);
    db_bind_int64(st, 1, e.c.id);
    db_bind_int64(st, 2, e.c.id);
    assert_int_equal(db_step(st), DB_DONE);
    db_finalize(st);
    assert_int_equal(stream_peak_record(db, e.c.id, 300, 12), 0);
    assert_int_equal(stream_peak_record(db, e.c.id, 300, 7), 0); /* the larger stays */
    assert_int_equal(stream_peak_record(db, e.c.id, 100, 3), 0);
    /* A stream whose row is not written yet leaves the earlier rows alone. */
    assert_int_equal(stream_peak_record(db, e.c.id, 500, 99), 0);
    assert_int_equal(db_prepare(db, "SELECT started_at, peak_viewers FROM streams WHERE channel_id = ? ORDER BY started_at", &st), 0);
    db_bind_int64(st, 1, e.c.id);
    assert_int_equal(db_step(st), DB_ROW);
    assert_int_equal(db_column_int64(st, 1), 3);
    assert_int_equal(db_step(st), DB_ROW);
    assert_int_equal(db_column_int64(st, 1), 12);
    db_finalize(st);

    /* Sorting by the latest stream. */
    struct channel_query rq = {.limit = 50, .sort = CHANNEL_SORT_RECENT};
    list_slugs(&rq, slugs);
    assert_string_equal(slugs, "alice-plays bob ");
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_count_unique_in_window),
        cmocka_unit_test(test_count_many_and_shrink),
        cmocka_unit_test(test_cookie_replaces_address),
        cmocka_unit_test(test_seen_requests),
        cmocka_unit_test(test_live_directory),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_door),
        cmocka_unit_test(test_peaks_due),
        cmocka_unit_test(test_gone),
    };
    const struct CMUnitTest with_db[] = {
        cmocka_unit_test(test_db_channels),
        cmocka_unit_test(test_db_follows_and_more),
        cmocka_unit_test(test_db_user_search),
    };
    int rc = cmocka_run_group_tests_name("viewers", pure, NULL, NULL);
    rc |= cmocka_run_group_tests_name("channels_extra", with_db, db_setup, db_teardown);
    return rc;
}
