/*
 * The web app's side of chat, under /api/v1:
 *
 *   POST   /chat/token                        a signed-in user: {jid, token, expires_in}
 *   GET    /channels/:slug/chat               who may watch: room, WebSocket URL, policy,
 *                                             occupants, can_moderate
 *   GET    /channels/:slug/moderators         owner/admin
 *   POST   /channels/:slug/moderators         {user}
 *   DELETE /channels/:slug/moderators/:name
 *   GET    /channels/:slug/bans               moderators (owner, channel moderator, admin)
 *   POST   /channels/:slug/bans               {user | jid, reason?, duration?}
 *   DELETE /channels/:slug/bans/:id           lift a ban
 *   GET|PUT /channels/:slug/banned-words      moderators: {words: [...]}
 *   GET|POST /admin/chat-bans, DELETE /admin/chat-bans/:id    site-wide bans, admin
 *   GET|PUT /admin/banned-words               site-wide words, admin
 *
 * The channel's own chat settings (chat_guests_may_talk, chat_slow_mode,
 * chat_subject) are fields of PATCH /channels/:slug; api_channels.c uses the
 * chat_patch_* and chat_channel_json helpers below for them.
 *
 * Every route is HTTP_ROUTE_BLOCKING: the handler runs on a worker, where
 * the database may be used, and is plain synchronous code. The policy is
 * read by the MUC service (chat/muc.c) when a room loads; after each change
 * here chat_room_changed tells it to reload the room now, so a new ban
 * removes the banned occupant at once and a new slow mode applies to the
 * next message. Site-wide changes concern every room: only the rooms that
 * have occupants are loaded, so only those are told.
 *
 * Who moderates a channel's room: its owner, the moderators the owner names
 * here (affiliation admin in the room), and the site admins. Moderators may
 * ban and lift bans and edit the banned words; only the owner and admins
 * name moderators. A ban by account (user) holds across that account's
 * JIDs; a ban by JID covers users of other servers; guests are banned by
 * address from inside the room (XMPP), since their JIDs are new at each
 * login and the web page never sees their addresses. Admins may also ban
 * an address site-wide here.
 *
 * Everything answered is JSON with X-Content-Type-Options: nosniff and
 * Cache-Control: no-store. A subject or reason with HTML in it is stored and
 * returned as the text it is; the pages render it as text.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/accounts.h"
#include "app/api_chat.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/channels_extra.h"
#include "chat/jid.h"
#include "chat/muc.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"

#define CHAT_TOKEN_MAX 256
#define BAN_DURATION_MAX (10LL * 366 * 24 * 3600)
/* 500 words of 100 characters, where a character may take 12 bytes of JSON escapes */
#define WORDS_BODY_MAX (1024u * 1024)
#define LIST_MAX 1000                /* bans listed at most */
#define WORD_BYTES_MAX (4 * CHAT_BANNED_WORD_MAX + 64) /* a word with spaces around it */

/* ==== small helpers ======================================================== */

/* Characters (code points) of valid UTF-8. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static int exec_sql(struct db *db, const char *sql, int n, const int64_t *ints)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    for (int i = 0; i < n; i++)
        db_bind_int64(st, i + 1, ints[i]);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

size_t chat_occupants(struct app *app, int64_t channel_id)
{
    return app && app->muc ? muc_room_occupants(app->muc, channel_id) : 0;
}

void chat_room_changed(struct app *app, int64_t channel_id, const char *old_slug)
{
    if (!app || !app->muc)
        return;
    if (muc_room_changed(app->muc, channel_id, old_slug) < 0)
        log_warn("chat: room of channel %lld: cannot tell the MUC service about a change "
                 "(out of memory); it applies when the room next loads",
                 (long long)channel_id);
}

/* Site-wide policy changed: every room with occupants reloads. */
static void all_rooms_changed(struct app *app, struct db *db)
{
    if (!app->muc)
        return;
    struct db_stmt *st;
    if (db_prepare(db, "SELECT id FROM channels WHERE chat_enabled = 1", &st) < 0) {
        log_warn("chat: cannot list the rooms to reload: %s", db_errmsg(db));
        return;
    }
    while (db_step(st) == DB_ROW) {
        int64_t id = db_column_int64(st, 0);
        if (muc_room_occupants(app->muc, id) > 0)
            chat_room_changed(app, id, NULL);
    }
    db_finalize(st);
}

/* The XMPP domains: "DOMAIN", "chat.DOMAIN", "guest.DOMAIN". */
static const char *xmpp_domain(const struct app *app) { return app->cfg->xmpp.domain; }

/* The bare JID of an account: nodeprep(name)@DOMAIN. */
static void account_jid(const struct app *app, const char *name, char *out, size_t n)
{
    char local[JID_PART_MAX + 1];
    if (jid_prep_local(name, strlen(name), local, false) < 0)
        snprintf(local, sizeof local, "%s", name);
    snprintf(out, n, "%s@%s", local, xmpp_domain(app));
}

/* ==== chat settings (also for api_channels.c) =============================== */

int chat_settings_load(struct db *db, int64_t channel_id, struct chat_settings *out)
{
    memset(out, 0, sizeof *out);
    out->guests_may_talk = true;
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT chat_guests_may_talk, chat_slow_mode, COALESCE(chat_subject, '')"
                        " FROM channels WHERE id = ?",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, channel_id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        out->guests_may_talk = db_column_int64(st, 0) != 0;
        out->slow_mode = db_column_int64(st, 1);
        const char *s = db_column_text(st, 2);
        snprintf(out->subject, sizeof out->subject, "%s", s ? s : "");
        rc = 0;
    } else if (rc == DB_DONE) {
        rc = -ENOENT;
    }
    db_finalize(st);
    return rc;
}

static void bad(struct http_request *req, const char *msg)
{
    http_response_error(req, 400, "invalid", msg);
}

bool chat_patch_parse(struct http_request *req, json_t *body, struct chat_patch *p)
{
    memset(p, 0, sizeof *p);
    p->guests_may_talk = -1;
    p->slow_mode = -1;
    json_t *v = json_object_get(body, "chat_guests_may_talk");
    if (v) {
        if (!json_is_boolean(v)) {
            bad(req, "'chat_guests_may_talk' must be true or false");
            return false;
        }
        p->guests_may_talk = json_is_true(v);
    }
    v = json_object_get(body, "chat_slow_mode");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > CHAT_SLOW_MODE_MAX) {
            char msg[128];
            snprintf(msg, sizeof msg,
                     "'chat_slow_mode' must be a whole number of seconds from 0 (off) to %d",
                     CHAT_SLOW_MODE_MAX);
            bad(req, msg);
            return false;
        }
        p->slow_mode = json_integer_value(v);
    }
    v = json_object_get(body, "chat_subject");
    if (v) {
        p->subject_set = true;
        if (json_is_null(v))
            return true;
        if (!json_is_string(v)) {
            bad(req, "'chat_subject' must be a string or null");
            return false;
        }
        const char *s = json_string_value(v);
        if (!util_text_ok(s, NULL)) {
            bad(req, "'chat_subject' must be one line of text, without control characters");
            return false;
        }
        if (utf8_chars(s) > CHAT_SUBJECT_MAX) {
            char msg[96];
            snprintf(msg, sizeof msg, "'chat_subject' is at most %d characters", CHAT_SUBJECT_MAX);
            bad(req, msg);
            return false;
        }
        p->subject = s;
    }
    return true;
}

bool chat_patch_empty(const struct chat_patch *p)
{
    return p->guests_may_talk < 0 && p->slow_mode < 0 && !p->subject_set;
}

int chat_patch_apply(struct db *db, int64_t channel_id, const struct chat_patch *p)
{
    if (chat_patch_empty(p))
        return 0;
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "UPDATE channels SET"
                        " chat_guests_may_talk ="
                        "  CASE WHEN ? < 0 THEN chat_guests_may_talk ELSE ? END,"
                        " chat_slow_mode = CASE WHEN ? < 0 THEN chat_slow_mode ELSE ? END,"
                        " chat_subject = CASE WHEN ? THEN ? ELSE chat_subject END"
                        " WHERE id = ?",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, p->guests_may_talk);
    db_bind_int64(st, 2, p->guests_may_talk);
    db_bind_int64(st, 3, p->slow_mode);
    db_bind_int64(st, 4, p->slow_mode);
    db_bind_int64(st, 5, p->subject_set);
    db_bind_text(st, 6, p->subject && p->subject[0] ? p->subject : NULL);
    db_bind_int64(st, 7, channel_id);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

void chat_channel_json(struct app *app, json_t *o, int64_t channel_id,
                       const struct chat_settings *s)
{
    if (!o)
        return;
    json_object_set_new(o, "chat_guests_may_talk", json_boolean(s->guests_may_talk));
    json_object_set_new(o, "chat_slow_mode", json_integer((json_int_t)s->slow_mode));
    json_object_set_new(o, "chat_subject", s->subject[0] ? json_string(s->subject) : json_null());
    json_object_set_new(o, "chatters", json_integer((json_int_t)chat_occupants(app, channel_id)));
}

/* ==== a call: one request on a worker ====================================== */

struct call {
    struct app *app;
    struct http_request *req;
    struct db *db;
    struct auth_ctx a;
    struct channel_ext *ch; /* :slug, when the route has one */
    int64_t now;
};

typedef void (*call_fn)(struct call *c);

static void reply(struct call *c, int status, json_t *o)
{
    if (!o || http_response_json(c->req, status, o) < 0)
        http_response_error(c->req, 500, "internal", "out of memory");
    json_decref(o);
}

static void fail_db(struct call *c, const char *what)
{
    log_error("http %s: chat: database error while %s: %s", c->req->remote, what,
              db_errmsg(c->db));
    http_response_error(c->req, 500, "internal", "database error");
}

static int run(struct http_request *req, void *ud, call_fn fn)
{
    struct call c = {.app = ud, .req = req, .now = util_now_unix()};
    c.db = db_pool_acquire(c.app->db);
    if (!c.db) {
        http_response_error(req, 503, "unavailable", "the database is unavailable");
        goto out;
    }
    if (auth_identify(c.app, c.db, req, &c.a) < 0)
        goto out;
    if (c.a.bad_api_key) { /* a key that does not work never gets the guest's view */
        auth_require_user(req, &c.a);
        goto out;
    }
    const char *slug = http_request_param(req, "slug");
    if (slug) {
        char err[256];
        c.ch = malloc(sizeof *c.ch);
        int rc = c.ch ? channel_ext_find(c.db, slug, c.ch, err, sizeof err) : -ENOMEM;
        if (rc == -ENOENT) {
            http_response_error(req, 404, "not_found", err);
            goto out;
        }
        if (rc < 0) {
            if (rc == -ENOMEM)
                http_response_error(req, 503, "unavailable", "out of memory");
            else
                fail_db(&c, "loading a channel");
            goto out;
        }
    }
    fn(&c);
out:
    if (c.db)
        db_pool_release(c.app->db, c.db);
    free(c.ch);
    /* After the answer: an error clears the headers set before it. */
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    http_response_header(req, "Cache-Control", "no-store");
    return 0;
}

#define ROUTE(name, fn)                                                                           \
    static int name(struct http_request *req, void *ud) { return run(req, ud, fn); }

static bool is_method(struct call *c, const char *m) { return strcmp(c->req->method_name, m) == 0; }

/* A channel moderator named by the owner (not counting the owner or admins). */
static bool is_channel_moderator(struct call *c, int64_t user_id)
{
    struct db_stmt *st;
    if (db_prepare(c->db, "SELECT 1 FROM chat_moderators WHERE channel_id = ? AND user_id = ?",
                   &st) < 0)
        return false;
    db_bind_int64(st, 1, c->ch->c.id);
    db_bind_int64(st, 2, user_id);
    bool yes = db_step(st) == DB_ROW;
    db_finalize(st);
    return yes;
}

static bool can_moderate(struct call *c)
{
    return auth_is_user(&c->a) &&
           (auth_can_manage(&c->a, c->ch->c.owner_id) || is_channel_moderator(c, c->a.user.id));
}

/* Owner, channel moderator or admin; else the error. */
static bool require_moderator(struct call *c)
{
    if (!auth_require_user(c->req, &c->a))
        return false;
    if (can_moderate(c))
        return true;
    http_response_error(c->req, 403, "forbidden",
                        "only the channel's owner, its moderators and admins may do this");
    return false;
}

/* The JSON body; NULL after the error. */
static json_t *body(struct call *c, size_t max)
{
    return auth_json_body(c->req, max);
}

static bool only_keys(struct call *c, json_t *o, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (const char *const *k = allowed; *k && !ok; k++)
            ok = strcmp(*k, key) == 0;
        if (!ok) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown field '%.64s'", key);
            bad(c->req, msg);
            return false;
        }
    }
    return true;
}

/* A user by name; false after a 404 (or 500). */
static bool find_user(struct call *c, const char *name, struct user *u)
{
    char err[256];
    int rc = account_user_find(c->db, name, u, err, sizeof err);
    if (rc == 0)
        return true;
    if (rc == -ENOENT || rc == -EINVAL) {
        char msg[128];
        snprintf(msg, sizeof msg, "there is no user '%.40s'", name);
        http_response_error(c->req, 404, "not_found", msg);
    } else {
        fail_db(c, "finding a user");
    }
    return false;
}

/* ==== POST /chat/token ===================================================== */

static void do_token(struct call *c)
{
    if (!auth_require_user(c->req, &c->a))
        return;
    char token[CHAT_TOKEN_MAX];
    int rc = app_chat_token_issue(c->app, c->a.user.id, token, sizeof token);
    if (rc < 0) {
        log_error("http %s: chat: cannot issue a chat token for '%s': %s", c->req->remote,
                  c->a.user.name, strerror(-rc));
        http_response_error(c->req, 503, "unavailable", "chat tokens cannot be issued now");
        return;
    }
    char jid[JID_PART_MAX + CONFIG_STR + 2];
    account_jid(c->app, c->a.user.name, jid, sizeof jid);
    json_int_t ttl = (json_int_t)(c->app->cfg->xmpp.token_lifetime_ms / 1000);
    reply(c, 200, json_pack("{s:s, s:s, s:I}", "jid", jid, "token", token, "expires_in", ttl));
    memset(token, 0, sizeof token);
}

/* ==== GET /channels/:slug/chat ============================================= */

/* "ws(s)://HOST[:PORT][/prefix]/xmpp-websocket" from site.public_url. */
static void websocket_url(const struct app *app, char *out, size_t n)
{
    const char *pub = app->cfg->site.public_url;
    size_t len = strlen(pub);
    while (len > 0 && pub[len - 1] == '/')
        len--;
    if (len >= 8 && strncasecmp(pub, "https://", 8) == 0)
        snprintf(out, n, "wss://%.*s/xmpp-websocket", (int)(len - 8), pub + 8);
    else if (len >= 7 && strncasecmp(pub, "http://", 7) == 0)
        snprintf(out, n, "ws://%.*s/xmpp-websocket", (int)(len - 7), pub + 7);
    else
        snprintf(out, n, "/xmpp-websocket");
}

static void do_chat(struct call *c)
{
    bool mod = can_moderate(c);
    if (!mod && !api_channels_may_watch(c->req, c->db, &c->a, c->ch)) {
        http_response_error(c->req, 403, "protected",
                            "this channel is protected: only its owner, invited users and "
                            "holders of its invite code may watch it");
        return;
    }
    struct chat_settings s;
    if (chat_settings_load(c->db, c->ch->c.id, &s) < 0) {
        fail_db(c, "loading chat settings");
        return;
    }
    const char *dom = xmpp_domain(c->app);
    char room[CHANNEL_SLUG_MAX + CONFIG_STR + 8], muc[CONFIG_STR + 8], guest[CONFIG_STR + 8],
        ws[CONFIG_STR + 32];
    snprintf(room, sizeof room, "%s@chat.%s", c->ch->c.slug, dom);
    snprintf(muc, sizeof muc, "chat.%s", dom);
    snprintf(guest, sizeof guest, "guest.%s", dom);
    websocket_url(c->app, ws, sizeof ws);
    json_t *o = json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:s, s:I, s:b}", "enabled",
                          c->ch->chat_enabled, "room", room, "websocket", ws, "domain", dom,
                          "guest_domain", guest, "muc_domain", muc, "guests_may_talk",
                          s.guests_may_talk, "slow_mode", (json_int_t)s.slow_mode, "subject",
                          s.subject[0] ? s.subject : c->ch->c.title, "occupants",
                          (json_int_t)chat_occupants(c->app, c->ch->c.id), "can_moderate", mod);
    reply(c, 200, o);
}

/* ==== moderators =========================================================== */

static json_t *moderator_json(struct call *c, const char *name, int64_t at)
{
    char jid[JID_PART_MAX + CONFIG_STR + 2];
    account_jid(c->app, name, jid, sizeof jid);
    return json_pack("{s:s, s:s, s:I}", "user", name, "jid", jid, "added_at", (json_int_t)at);
}

static void do_moderators(struct call *c)
{
    if (!auth_require_owner(c->req, &c->a, c->ch->c.owner_id))
        return;
    int64_t cid = c->ch->c.id;
    if (is_method(c, "GET")) {
        struct db_stmt *st;
        if (db_prepare(c->db,
                       "SELECT u.name, m.created_at FROM chat_moderators m"
                       " JOIN users u ON u.id = m.user_id WHERE m.channel_id = ? ORDER BY u.name",
                       &st) < 0) {
            fail_db(c, "listing moderators");
            return;
        }
        db_bind_int64(st, 1, cid);
        json_t *arr = json_array();
        int rc;
        while ((rc = db_step(st)) == DB_ROW)
            json_array_append_new(arr, moderator_json(c, db_column_text(st, 0),
                                                      db_column_int64(st, 1)));
        db_finalize(st);
        if (rc < 0) {
            json_decref(arr);
            fail_db(c, "listing moderators");
            return;
        }
        reply(c, 200, json_pack("{s:o}", "moderators", arr));
        return;
    }
    struct user u;
    if (is_method(c, "DELETE")) {
        const char *name = http_request_param(c->req, "name");
        if (!find_user(c, name, &u))
            return;
        if (exec_sql(c->db, "DELETE FROM chat_moderators WHERE channel_id = ? AND user_id = ?", 2,
                     (int64_t[]){cid, u.id}) < 0) {
            fail_db(c, "removing a moderator");
            return;
        }
        if (db_changes(c->db) == 0) {
            http_response_error(c->req, 404, "not_found", "that user is not a moderator here");
            return;
        }
        log_info("http %s: chat: '%s' is no longer a moderator of '%s' (by '%s')", c->req->remote,
                 u.name, c->ch->c.slug, c->a.user.name);
        chat_room_changed(c->app, cid, NULL);
        http_response_status(c->req, 204);
        return;
    }
    json_t *b = body(c, AUTH_JSON_MAX);
    if (!b)
        return;
    static const char *const keys[] = {"user", NULL};
    json_t *name = json_object_get(b, "user");
    if (!only_keys(c, b, keys))
        goto out;
    if (!json_is_string(name) || !json_string_length(name)) {
        bad(c->req, "'user' (a user's name) is required");
        goto out;
    }
    if (!find_user(c, json_string_value(name), &u))
        goto out;
    if (u.id == c->ch->c.owner_id) {
        bad(c->req, "the channel's owner moderates its chat already");
        goto out;
    }
    if (exec_sql(c->db,
                 "INSERT INTO chat_moderators (channel_id, user_id, created_at) VALUES (?, ?, ?)"
                 " ON CONFLICT (channel_id, user_id) DO NOTHING",
                 3, (int64_t[]){cid, u.id, c->now}) < 0) {
        fail_db(c, "adding a moderator");
        goto out;
    }
    bool added = db_changes(c->db) > 0;
    if (added) {
        log_info("http %s: chat: '%s' is now a moderator of '%s' (by '%s')", c->req->remote,
                 u.name, c->ch->c.slug, c->a.user.name);
        chat_room_changed(c->app, cid, NULL);
    }
    int64_t at = c->now;
    struct db_stmt *st;
    if (!added && db_prepare(c->db,
                             "SELECT created_at FROM chat_moderators"
                             " WHERE channel_id = ? AND user_id = ?",
                             &st) == 0) {
        db_bind_int64(st, 1, cid);
        db_bind_int64(st, 2, u.id);
        if (db_step(st) == DB_ROW)
            at = db_column_int64(st, 0);
        db_finalize(st);
    }
    reply(c, added ? 201 : 200, moderator_json(c, u.name, at));
out:
    json_decref(b);
}

/* ==== bans ================================================================= */

/* Bans of one channel (channel_id > 0) or site-wide (0), in force now. */
static void list_bans(struct call *c, int64_t channel_id)
{
    bool admin = auth_is_admin(&c->a);
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT b.id, u.name, b.jid, b.ip, b.nick, b.reason, b.banned_by, b.created_at,"
                   " b.expires_at FROM chat_bans b LEFT JOIN users u ON u.id = b.user_id"
                   " WHERE (CASE WHEN ? = 0 THEN b.channel_id IS NULL ELSE b.channel_id = ? END)"
                   " AND (b.expires_at IS NULL OR b.expires_at > ?)"
                   " ORDER BY b.id DESC LIMIT ?",
                   &st) < 0) {
        fail_db(c, "listing bans");
        return;
    }
    db_bind_int64(st, 1, channel_id);
    db_bind_int64(st, 2, channel_id);
    db_bind_int64(st, 3, c->now);
    db_bind_int64(st, 4, LIST_MAX);
    json_t *arr = json_array();
    int rc;
    while ((rc = db_step(st)) == DB_ROW) {
        json_t *o = json_pack(
            "{s:I, s:s?, s:s?, s:s?, s:s?, s:s?, s:I, s:o}", "id",
            (json_int_t)db_column_int64(st, 0),
            "user", db_column_text(st, 1), "jid", db_column_text(st, 2), "nick",
            db_column_text(st, 4), "reason", db_column_text(st, 5), "banned_by",
            db_column_text(st, 6), "created_at", (json_int_t)db_column_int64(st, 7), "expires_at",
            db_column_is_null(st, 8) ? json_null() : json_integer(db_column_int64(st, 8)));
        if (o) {
            /* A guest's address is for admins only; moderators see that it is one. */
            bool by_ip = !db_column_is_null(st, 3);
            json_object_set_new(o, "guest", json_boolean(by_ip));
            if (admin)
                json_object_set_new(o, "ip",
                                    by_ip ? json_string(db_column_text(st, 3)) : json_null());
            json_array_append_new(arr, o);
        }
    }
    db_finalize(st);
    if (rc < 0) {
        json_decref(arr);
        fail_db(c, "listing bans");
        return;
    }
    reply(c, 200, json_pack("{s:o}", "bans", arr));
}

/* May target be banned here? Not the owner, a site admin or (in a channel) a moderator. */
static bool bannable(struct call *c, const struct user *u, int64_t channel_id)
{
    const char *why = NULL;
    if (account_has_role(u->roles, "admin"))
        why = "site admins cannot be banned";
    else if (channel_id && u->id == c->ch->c.owner_id)
        why = "the channel's owner cannot be banned from its chat";
    else if (channel_id && is_channel_moderator(c, u->id))
        why = "a moderator cannot be banned; remove them as moderator first";
    if (why) {
        http_response_error(c->req, 409, "conflict", why);
        return false;
    }
    return true;
}

static void create_ban(struct call *c, int64_t channel_id)
{
    json_t *b = body(c, AUTH_JSON_MAX);
    if (!b)
        return;
    bool site = channel_id == 0;
    static const char *const chan_keys[] = {"user", "jid", "reason", "duration", NULL};
    static const char *const site_keys[] = {"user", "jid", "ip", "reason", "duration", NULL};
    if (!only_keys(c, b, site ? site_keys : chan_keys))
        goto out;
    json_t *ju = json_object_get(b, "user"), *jj = json_object_get(b, "jid"),
           *ji = json_object_get(b, "ip"), *jr = json_object_get(b, "reason"),
           *jd = json_object_get(b, "duration");
    if ((ju != NULL) + (jj != NULL) + (ji != NULL) != 1) {
        bad(c->req, site ? "give exactly one of 'user', 'jid' or 'ip'"
                         : "give exactly one of 'user' (an account) or 'jid'");
        goto out;
    }
    if ((ju && (!json_is_string(ju) || !json_string_length(ju))) ||
        (jj && (!json_is_string(jj) || !json_string_length(jj))) ||
        (ji && (!json_is_string(ji) || !json_string_length(ji)))) {
        bad(c->req, "'user', 'jid' and 'ip' are non-empty strings");
        goto out;
    }
    const char *reason = NULL;
    if (jr && !json_is_null(jr)) {
        reason = json_string_value(jr);
        if (!reason || !util_text_ok(reason, NULL) || utf8_chars(reason) > CHAT_BAN_REASON_MAX) {
            char msg[128];
            snprintf(msg, sizeof msg, "'reason' is one line of text of at most %d characters",
                     CHAT_BAN_REASON_MAX);
            bad(c->req, msg);
            goto out;
        }
        if (!reason[0])
            reason = NULL;
    }
    int64_t expires = 0;
    if (jd && !json_is_null(jd)) {
        if (!json_is_integer(jd) || json_integer_value(jd) < 1 ||
            json_integer_value(jd) > BAN_DURATION_MAX) {
            bad(c->req, "'duration' is a whole number of seconds, at least 1 (leave it out for a "
                        "ban until lifted)");
            goto out;
        }
        expires = c->now + json_integer_value(jd);
    }

    /* Who: an account (user_id and its JID), a JID, or an address. */
    struct user u = {0};
    bool have_user = false;
    char jid[JID_MAX + 1] = "", ip[INET6_ADDRSTRLEN] = "", nick[JID_PART_MAX + 1] = "";
    if (ju) {
        if (!find_user(c, json_string_value(ju), &u))
            goto out;
        have_user = true;
    } else if (jj) {
        struct jid parsed = {0};
        if (jid_parse(&parsed, json_string_value(jj)) < 0) {
            bad(c->req, "'jid' is not a valid XMPP address");
            goto out;
        }
        jid_format_bare(&parsed, jid, sizeof jid);
        snprintf(nick, sizeof nick, "%s", parsed.local ? parsed.local : parsed.domain);
        /* One of this server's accounts: ban the account, which holds across its JIDs. */
        if (parsed.local && strcmp(parsed.domain, xmpp_domain(c->app)) == 0) {
            char err[256];
            int rc = account_user_find(c->db, parsed.local, &u, err, sizeof err);
            if (rc == 0)
                have_user = true;
            else if (rc != -ENOENT && rc != -EINVAL) {
                jid_free(&parsed);
                fail_db(c, "finding a user");
                goto out;
            }
        }
        jid_free(&parsed);
    } else {
        unsigned char addr[16];
        const char *s = json_string_value(ji);
        int af = strchr(s, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(af, s, addr) != 1 || !inet_ntop(af, addr, ip, sizeof ip)) {
            bad(c->req, "'ip' is not an IPv4 or IPv6 address");
            goto out;
        }
        snprintf(nick, sizeof nick, "guest");
    }
    if (have_user) {
        if (!bannable(c, &u, channel_id))
            goto out;
        account_jid(c->app, u.name, jid, sizeof jid);
        snprintf(nick, sizeof nick, "%s", u.name);
    }
    char by[JID_PART_MAX + CONFIG_STR + 2];
    account_jid(c->app, c->a.user.name, by, sizeof by);

    /* One ban per target and scope: a new one replaces the old (its reason, its end). */
    if (db_begin(c->db) < 0) {
        fail_db(c, "starting a transaction");
        goto out;
    }
    struct db_stmt *st;
    int rc = db_prepare(c->db,
                        "DELETE FROM chat_bans WHERE"
                        " (CASE WHEN ? = 0 THEN channel_id IS NULL ELSE channel_id = ? END)"
                        " AND ((? > 0 AND user_id = ?) OR (? IS NOT NULL AND jid = ?)"
                        " OR (? IS NOT NULL AND ip = ?))",
                        &st);
    if (rc == 0) {
        db_bind_int64(st, 1, channel_id);
        db_bind_int64(st, 2, channel_id);
        db_bind_int64(st, 3, have_user ? u.id : 0);
        db_bind_int64(st, 4, have_user ? u.id : 0);
        db_bind_text(st, 5, jid[0] ? jid : NULL);
        db_bind_text(st, 6, jid[0] ? jid : NULL);
        db_bind_text(st, 7, ip[0] ? ip : NULL);
        db_bind_text(st, 8, ip[0] ? ip : NULL);
        rc = db_step(st);
        db_finalize(st);
    }
    if (rc >= 0)
        rc = db_prepare(c->db,
                        "INSERT INTO chat_bans (channel_id, jid, user_id, ip, nick, reason,"
                        " banned_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        &st);
    if (rc >= 0) {
        if (channel_id)
            db_bind_int64(st, 1, channel_id);
        else
            db_bind_null(st, 1);
        db_bind_text(st, 2, jid[0] ? jid : NULL);
        if (have_user)
            db_bind_int64(st, 3, u.id);
        else
            db_bind_null(st, 3);
        db_bind_text(st, 4, ip[0] ? ip : NULL);
        db_bind_text(st, 5, nick[0] ? nick : NULL);
        db_bind_text(st, 6, reason);
        db_bind_text(st, 7, by);
        db_bind_int64(st, 8, c->now);
        if (expires)
            db_bind_int64(st, 9, expires);
        else
            db_bind_null(st, 9);
        rc = db_step(st);
        db_finalize(st);
    }
    int64_t id = db_last_insert_id(c->db);
    if (rc < 0 || (rc = db_commit(c->db)) < 0) {
        db_rollback(c->db);
        fail_db(c, "adding a ban");
        goto out;
    }
    log_info("http %s: chat: %s banned %s%s%s by '%s'%s", c->req->remote,
             site ? "site-wide:" : c->ch->c.slug, jid[0] ? jid : ip, reason ? ": " : "",
             reason ? reason : "", c->a.user.name, expires ? " (for a while)" : "");
    if (site)
        all_rooms_changed(c->app, c->db);
    else
        chat_room_changed(c->app, channel_id, NULL);
    json_t *o = json_pack("{s:I, s:s?, s:s?, s:s?, s:s?, s:s, s:I, s:o, s:b}", "id", (json_int_t)id,
                          "user", have_user ? u.name : NULL, "jid", jid[0] ? jid : NULL, "nick",
                          nick[0] ? nick : NULL, "reason", reason, "banned_by", by, "created_at",
                          (json_int_t)c->now, "expires_at",
                          expires ? json_integer(expires) : json_null(), "guest", ip[0] != 0);
    if (o && auth_is_admin(&c->a))
        json_object_set_new(o, "ip", ip[0] ? json_string(ip) : json_null());
    reply(c, 201, o);
out:
    json_decref(b);
}

static void lift_ban(struct call *c, int64_t channel_id)
{
    const char *p = http_request_param(c->req, "id");
    char *end = NULL;
    long long id = p && *p >= '1' && *p <= '9' ? strtoll(p, &end, 10) : 0;
    if (id <= 0 || !end || *end) {
        http_response_error(c->req, 404, "not_found", "no such ban");
        return;
    }
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "DELETE FROM chat_bans WHERE id = ?"
                   " AND (CASE WHEN ? = 0 THEN channel_id IS NULL ELSE channel_id = ? END)",
                   &st) < 0) {
        fail_db(c, "lifting a ban");
        return;
    }
    db_bind_int64(st, 1, id);
    db_bind_int64(st, 2, channel_id);
    db_bind_int64(st, 3, channel_id);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0) {
        fail_db(c, "lifting a ban");
        return;
    }
    if (db_changes(c->db) == 0) {
        http_response_error(c->req, 404, "not_found", "no such ban");
        return;
    }
    log_info("http %s: chat: %s: ban %lld lifted by '%s'", c->req->remote,
             channel_id ? c->ch->c.slug : "site-wide", id, c->a.user.name);
    if (channel_id)
        chat_room_changed(c->app, channel_id, NULL);
    else
        all_rooms_changed(c->app, c->db);
    http_response_status(c->req, 204);
}

static void do_bans(struct call *c)
{
    if (!require_moderator(c))
        return;
    if (is_method(c, "GET"))
        list_bans(c, c->ch->c.id);
    else if (is_method(c, "POST"))
        create_ban(c, c->ch->c.id);
    else
        lift_ban(c, c->ch->c.id);
}

static void do_admin_bans(struct call *c)
{
    if (!auth_require_admin(c->req, &c->a))
        return;
    if (is_method(c, "GET"))
        list_bans(c, 0);
    else if (is_method(c, "POST"))
        create_ban(c, 0);
    else
        lift_ban(c, 0);
}

/* ==== banned words ========================================================= */

static void list_words(struct call *c, int64_t channel_id)
{
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT word FROM chat_banned_words WHERE"
                   " (CASE WHEN ? = 0 THEN channel_id IS NULL ELSE channel_id = ? END)"
                   " ORDER BY word COLLATE NOCASE, id",
                   &st) < 0) {
        fail_db(c, "listing banned words");
        return;
    }
    db_bind_int64(st, 1, channel_id);
    db_bind_int64(st, 2, channel_id);
    json_t *arr = json_array();
    int rc;
    while ((rc = db_step(st)) == DB_ROW)
        json_array_append_new(arr, json_string(db_column_text(st, 0)));
    db_finalize(st);
    if (rc < 0) {
        json_decref(arr);
        fail_db(c, "listing banned words");
        return;
    }
    reply(c, 200, json_pack("{s:o}", "words", arr));
}

/* Trimmed copy of a word into out; false when it is empty after trimming. */
static bool trim_word(const char *s, char *out, size_t n)
{
    while (*s == ' ')
        s++;
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == ' ')
        len--;
    snprintf(out, n, "%.*s", (int)len, s);
    return len > 0;
}

static void put_words(struct call *c, int64_t channel_id)
{
    json_t *b = body(c, WORDS_BODY_MAX);
    if (!b)
        return;
    static const char *const keys[] = {"words", NULL};
    json_t *words = json_object_get(b, "words");
    char **list = NULL;
    size_t n = 0;
    if (!only_keys(c, b, keys))
        goto out;
    if (!json_is_array(words)) {
        bad(c->req, "'words' (a list of strings) is required");
        goto out;
    }
    if (json_array_size(words) > CHAT_BANNED_WORDS_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "at most %d banned words", CHAT_BANNED_WORDS_MAX);
        bad(c->req, msg);
        goto out;
    }
    list = calloc(json_array_size(words) + 1, sizeof *list);
    if (!list) {
        http_response_error(c->req, 503, "unavailable", "out of memory");
        goto out;
    }
    size_t i;
    json_t *w;
    json_array_foreach(words, i, w)
    {
        const char *s = json_string_value(w);
        char word[WORD_BYTES_MAX + 1]; /* holds any string the check below lets through */
        if (!s || !util_text_ok(s, NULL)) {
            bad(c->req, "each banned word is a string of text without control characters");
            goto out;
        }
        bool blank = strlen(s) <= WORD_BYTES_MAX && !trim_word(s, word, sizeof word);
        if (blank)
            continue; /* blank lines of a text box */
        if (strlen(s) > WORD_BYTES_MAX || utf8_chars(word) > CHAT_BANNED_WORD_MAX) {
            char msg[96];
            snprintf(msg, sizeof msg, "a banned word is at most %d characters",
                     CHAT_BANNED_WORD_MAX);
            bad(c->req, msg);
            goto out;
        }
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcasecmp(list[k], word) == 0; /* as the column's NOCASE compares */
        if (!dup && !(list[n++] = strdup(word))) {
            http_response_error(c->req, 503, "unavailable", "out of memory");
            goto out;
        }
    }
    /* Replace the list in one transaction. */
    int rc = db_begin(c->db);
    struct db_stmt *st = NULL;
    if (rc == 0)
        rc = db_prepare(c->db,
                        "DELETE FROM chat_banned_words WHERE"
                        " (CASE WHEN ? = 0 THEN channel_id IS NULL ELSE channel_id = ? END)",
                        &st);
    if (rc == 0) {
        db_bind_int64(st, 1, channel_id);
        db_bind_int64(st, 2, channel_id);
        rc = db_step(st);
        db_finalize(st);
    }
    struct db_stmt *ins = NULL;
    if (rc >= 0)
        rc = db_prepare(c->db,
                        "INSERT INTO chat_banned_words (channel_id, word, created_at)"
                        " VALUES (?, ?, ?)",
                        &ins);
    for (size_t k = 0; rc >= 0 && k < n; k++) {
        db_reset(ins);
        if (channel_id)
            db_bind_int64(ins, 1, channel_id);
        else
            db_bind_null(ins, 1);
        db_bind_text(ins, 2, list[k]);
        db_bind_int64(ins, 3, c->now);
        rc = db_step(ins);
    }
    if (ins)
        db_finalize(ins);
    if (rc < 0 || (rc = db_commit(c->db)) < 0) {
        fail_db(c, "saving banned words");
        db_rollback(c->db);
        goto out;
    }
    log_info("http %s: chat: %s: %zu banned word(s) set by '%s'", c->req->remote,
             channel_id ? c->ch->c.slug : "site-wide", n, c->a.user.name);
    if (channel_id)
        chat_room_changed(c->app, channel_id, NULL);
    else
        all_rooms_changed(c->app, c->db);
    list_words(c, channel_id);
out:
    for (size_t k = 0; list && k < n; k++)
        free(list[k]);
    free(list);
    json_decref(b);
}

static void do_words(struct call *c)
{
    if (!require_moderator(c))
        return;
    if (is_method(c, "GET"))
        list_words(c, c->ch->c.id);
    else
        put_words(c, c->ch->c.id);
}

static void do_admin_words(struct call *c)
{
    if (!auth_require_admin(c->req, &c->a))
        return;
    if (is_method(c, "GET"))
        list_words(c, 0);
    else
        put_words(c, 0);
}

/* ==== registration ========================================================= */

ROUTE(h_token, do_token)
ROUTE(h_chat, do_chat)
ROUTE(h_moderators, do_moderators)
ROUTE(h_bans, do_bans)
ROUTE(h_admin_bans, do_admin_bans)
ROUTE(h_words, do_words)
ROUTE(h_admin_words, do_admin_words)

int api_chat_register(struct app *app, struct http_server *srv)
{
    static const struct {
        const char *method, *path;
        http_handler_fn fn;
    } routes[] = {
        {"POST", "/api/v1/chat/token", h_token},
        {"GET", "/api/v1/channels/:slug/chat", h_chat},
        {"GET", "/api/v1/channels/:slug/moderators", h_moderators},
        {"POST", "/api/v1/channels/:slug/moderators", h_moderators},
        {"DELETE", "/api/v1/channels/:slug/moderators/:name", h_moderators},
        {"GET", "/api/v1/channels/:slug/bans", h_bans},
        {"POST", "/api/v1/channels/:slug/bans", h_bans},
        {"DELETE", "/api/v1/channels/:slug/bans/:id", h_bans},
        {"GET", "/api/v1/channels/:slug/banned-words", h_words},
        {"PUT", "/api/v1/channels/:slug/banned-words", h_words},
        {"GET", "/api/v1/admin/chat-bans", h_admin_bans},
        {"POST", "/api/v1/admin/chat-bans", h_admin_bans},
        {"DELETE", "/api/v1/admin/chat-bans/:id", h_admin_bans},
        {"GET", "/api/v1/admin/banned-words", h_admin_words},
        {"PUT", "/api/v1/admin/banned-words", h_admin_words},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = http_server_route(srv, routes[i].method, routes[i].path, routes[i].fn, app,
                                   HTTP_ROUTE_BLOCKING);
        if (rc < 0) {
            log_error("chat: cannot add route %s %s", routes[i].method, routes[i].path);
            return rc;
        }
    }
    return 0;
}
