/*
 * The account API: register, verify, log in and out, /me, password reset,
 * TOTP, API keys. Every route runs on the worker pool (it hashes passwords
 * and reads the database) and answers JSON, with Cache-Control: no-store.
 *
 *   POST   /api/v1/auth/register                {name, email, password}
 *   POST   /api/v1/auth/verify                  {token}
 *   POST   /api/v1/auth/login                   {login, password, totp?}
 *   POST   /api/v1/auth/logout
 *   POST   /api/v1/auth/password-reset          {email}             always 202
 *   POST   /api/v1/auth/password-reset/confirm  {token, password}
 *   GET    /api/v1/me
 *   PATCH  /api/v1/me                           {email?, password?, current_password}
 *   DELETE /api/v1/me                           {password}   (routed by api_channels.c)
 *   POST   /api/v1/me/totp                      -> {secret, uri}
 *   POST   /api/v1/me/totp/confirm              {code}
 *   DELETE /api/v1/me/totp                      {code} or {password}
 *   GET    /api/v1/me/api-keys
 *   POST   /api/v1/me/api-keys                  {name, expires_at?} -> the key, once
 *   DELETE /api/v1/me/api-keys/:id
 *
 * The routes anyone may call (register, verify, login, reset) check the
 * Origin (auth_require_same_origin) and take only application/json, which
 * no HTML form can send: together they stop login CSRF, where a hostile
 * page signs the victim into the attacker's account.
 *
 * Failed logins count against the caller's IP address and against the
 * account (auth_throttle). Only the account's count is cleared by a
 * success: one valid account must not let an attacker reset its IP's count
 * between guesses at others. Password confirmations on /me and TOTP codes
 * count the same way.
 *
 * DELETE /api/v1/me is registered by api_channels.c, which owns what must
 * happen to the account's channels (their streams end on the loop, their
 * images and chat rooms go); its rules (a session, the password, the
 * throttle) are here, in api_auth_me_delete, which calls back for the data.
 *
 * What a stolen API key must not reach: minting more keys, the password or
 * e-mail address, TOTP, deleting the account (auth_require_session). It may
 * read /me, list keys and revoke them.
 *
 * Answers do not tell which e-mail addresses have accounts where that can
 * be helped: a reset request is 202 whatever the address, and its mail goes
 * through the queue in mail.c, so the time taken says nothing either. A
 * name or address that is taken at registration is, unavoidably, 409.
 */
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/accounts.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/mail.h"
#include "app/settings.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"

#define VERIFY_TTL (24 * 3600)
#define RESET_TTL 3600
#define VERIFY_RESEND_AFTER 600     /* an unverified login re-sends a link at most this often */
#define SESSIONS_PER_USER "100"     /* older ones are dropped at login (SQL text) */
#define API_KEYS_PER_USER 50
#define API_KEY_NAME_MAX 64
#define API_KEY_MAX_LIFETIME (10LL * 366 * 24 * 3600)
#define THROTTLE_SLOTS 16384

static struct auth_throttle *throttle;

struct call {
    struct app *app;
    const struct config *cfg;
    struct http_request *req;
    struct db *db;
    struct auth_ctx a;
    json_t *body;
    int64_t now;
    char ip_key[80];
};

enum { NEED_BODY = 1, SAME_ORIGIN = 2 };

/* ---- answering ---- */

static void reply(struct call *c, int status, json_t *o)
{
    if (!o || http_response_json(c->req, status, o) < 0)
        http_response_error(c->req, 500, "internal", "out of memory");
    json_decref(o);
}

static void fail(struct call *c, int status, const char *code, const char *msg)
{
    /* A message that is not valid UTF-8 cannot be JSON: say less rather than nothing. */
    if (http_response_error(c->req, status, code, msg) < 0)
        http_response_error(c->req, status, code, "the request was refused");
}

static int fail_db(struct call *c, const char *what)
{
    log_error("http %s: auth: database error while %s: %s", c->req->remote, what,
              db_errmsg(c->db));
    fail(c, 500, "internal", "database error");
    return 0;
}

/* An error from accounts.c: its sentence, with the status its code means. */
static int fail_accounts(struct call *c, int rc, const char *err)
{
    if (rc == -EINVAL)
        fail(c, 400, "invalid", err);
    else if (rc == -EEXIST)
        fail(c, 409, "exists", err);
    else if (rc == -ENOENT)
        fail(c, 404, "not_found", err);
    else {
        log_error("http %s: auth: %s", c->req->remote, err);
        fail(c, 500, "internal", "internal error");
    }
    return 0;
}

static int too_many(struct call *c, int64_t wait)
{
    fail(c, 429, "too_many_attempts", "too many failed attempts; try again later");
    http_response_headerf(c->req, "Retry-After", "%lld", (long long)wait);
    return 0;
}

/* ---- reading the body ---- */

/* The body has only the named keys (NULL-terminated list). */
static bool keys_only(struct call *c, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(c->body, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(k, *a) == 0;
        if (!ok) {
            char msg[256];
            size_t n = 0;
            n += (size_t)snprintf(msg, sizeof msg, "unknown field in the body; allowed:");
            for (const char *const *a = allowed; *a && n < sizeof msg; a++)
                n += (size_t)snprintf(msg + n, sizeof msg - n, " %s", *a);
            fail(c, 400, "unknown_field", msg);
            return false;
        }
    }
    return true;
}

/*
 * *out = the string at key, or NULL when absent or null. Returns false after
 * answering 400 when it is another type, or missing and required, or longer
 * than max bytes.
 */
static bool get_str(struct call *c, const char *key, bool required, size_t max, const char **out)
{
    json_t *v = json_object_get(c->body, key);
    *out = NULL;
    char msg[128];
    if (!v || json_is_null(v)) {
        if (!required)
            return true;
        snprintf(msg, sizeof msg, "'%s' is required", key);
        fail(c, 400, "invalid", msg);
        return false;
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "'%s' must be a string", key);
        fail(c, 400, "invalid", msg);
        return false;
    }
    if (json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(msg, sizeof msg, "'%s' is too long (at most %zu bytes)", key, max);
        fail(c, 400, "invalid", msg);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static void lower_copy(char *dst, size_t n, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++)
        dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] - 'A' + 'a') : src[i];
    dst[i] = '\0';
}

static void account_key(const char *name, char *out, size_t n)
{
    char low[ACCOUNT_EMAIL_MAX + 1];
    lower_copy(low, sizeof low, name);
    snprintf(out, n, "acct:%s", low);
}

/* The address without the port, for the sessions table. */
static void peer_ip(const char *remote, char *out, size_t n)
{
    const char *r = remote;
    size_t len = strlen(r);
    if (*r == '[') {
        const char *close = strchr(r, ']');
        r++;
        len = close ? (size_t)(close - r) : strlen(r);
    } else {
        const char *colon = strrchr(r, ':');
        if (colon && strchr(r, ':') == colon)
            len = (size_t)(colon - r);
    }
    snprintf(out, n, "%.*s", (int)len, r);
}

/* ---- small queries ---- */

/* Run one statement with n (0 to 2) integer parameters. */
static int exec_i(struct db *db, const char *sql, int n, int64_t a, int64_t b)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    if (n > 0)
        db_bind_int64(st, 1, a);
    if (n > 1)
        db_bind_int64(st, 2, b);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

struct user_flags {
    bool verified;
    bool totp;
    char totp_secret[AUTH_TOTP_SECRET_B32 + 8];
    char totp_pending[AUTH_TOTP_SECRET_B32 + 8];
    int64_t totp_last_step;
};

static int user_flags(struct db *db, int64_t id, struct user_flags *f)
{
    memset(f, 0, sizeof *f);
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT verified, COALESCE(totp_secret, ''), COALESCE(totp_pending, ''),"
                        " totp_last_step FROM users WHERE id = ?",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        f->verified = db_column_int64(st, 0) != 0;
        snprintf(f->totp_secret, sizeof f->totp_secret, "%s", db_column_text(st, 1));
        snprintf(f->totp_pending, sizeof f->totp_pending, "%s", db_column_text(st, 2));
        f->totp = f->totp_secret[0] != '\0';
        f->totp_last_step = db_column_int64(st, 3);
    }
    db_finalize(st);
    if (rc < 0)
        return rc;
    return rc == DB_ROW ? 0 : -ENOENT;
}

static int user_by_id(struct db *db, int64_t id, struct user *u)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT id, name, COALESCE(email, ''), roles, created_at, disabled"
                        " FROM users WHERE id = ?",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        memset(u, 0, sizeof *u);
        u->id = db_column_int64(st, 0);
        snprintf(u->name, sizeof u->name, "%s", db_column_text(st, 1));
        snprintf(u->email, sizeof u->email, "%s", db_column_text(st, 2));
        snprintf(u->roles, sizeof u->roles, "%s", db_column_text(st, 3));
        u->created_at = db_column_int64(st, 4);
        u->disabled = db_column_int64(st, 5) != 0;
    }
    db_finalize(st);
    if (rc < 0)
        return rc;
    return rc == DB_ROW ? 0 : -ENOENT;
}

/* user_to_json plus verified and totp_enabled. */
static json_t *me_json(struct call *c, const struct user *u)
{
    json_t *o = user_to_json(u);
    struct user_flags f;
    if (o && user_flags(c->db, u->id, &f) == 0) {
        json_object_set_new(o, "verified", json_boolean(f.verified));
        json_object_set_new(o, "totp_enabled", json_boolean(f.totp));
    }
    return o;
}

/* ---- e-mail tokens and messages ---- */

/* base URL without trailing '/' */
static int base_len(const char *url)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    return (int)n;
}

static int token_issue(struct db *db, int64_t user_id, const char *purpose, const char *email,
                       int64_t now, int64_t ttl, char token[AUTH_TOKEN_LEN + 1])
{
    char hash[AUTH_HASH_HEX + 1];
    auth_token_new(token);
    auth_token_hash(token, hash);
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO auth_tokens (user_id, purpose, token_hash, email, created_at,"
                        " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, user_id);
    db_bind_text(st, 2, purpose);
    db_bind_text(st, 3, hash);
    db_bind_text(st, 4, email);
    db_bind_int64(st, 5, now);
    db_bind_int64(st, 6, now + ttl);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

static void send_link(struct call *c, const char *to, const char *name, const char *page,
                      const char *token, const char *subject_fmt, const char *what,
                      const char *validity, const char *ignore)
{
    const char *site = c->cfg->site.name;
    const char *url = c->cfg->site.public_url;
    char subject[CONFIG_STR + 64];
    snprintf(subject, sizeof subject, subject_fmt, site);
    char body[2048];
    snprintf(body, sizeof body,
             "Hello %s,\n\n"
             "%s on %s (%.*s), open this link:\n\n"
             "%.*s/%s?token=%s\n\n"
             "The link works for %s and only once. %s\n\n"
             "-- \n%s\n",
             name, what, site, base_len(url), url, base_len(url), url, page, token, validity,
             ignore, site);
    int rc = mail_send(c->cfg, to, subject, body);
    sodium_memzero(body, sizeof body);
    if (rc < 0)
        log_warn("http %s: auth: could not queue mail for user '%s': %s", c->req->remote, name,
                 strerror(-rc));
}

static void send_verification(struct call *c, const char *to, const char *name,
                              const char *token)
{
    send_link(c, to, name, "verify", token, "Confirm your e-mail address for %s",
              "To confirm this e-mail address for your account", "24 hours",
              "If you did not ask for this, ignore this message.");
}

static void send_reset(struct call *c, const char *to, const char *name, const char *token)
{
    send_link(c, to, name, "reset", token, "Reset your password for %s",
              "To choose a new password for your account", "one hour",
              "If you did not ask for a new password, ignore this message: your password "
              "stays as it is.");
}

/* ---- the route runner ---- */

typedef int (*call_fn)(struct call *c);

static int run(struct http_request *req, void *ud, call_fn fn, unsigned flags)
{
    struct call c = {.app = ud, .req = req, .now = util_now_unix()};
    c.cfg = c.app->cfg;
    auth_throttle_ip_key(http_request_client_ip(req), c.ip_key, sizeof c.ip_key);
    if ((flags & SAME_ORIGIN) && !auth_require_same_origin(c.app, req))
        goto out;
    if ((flags & NEED_BODY) && !(c.body = auth_json_body(req, AUTH_JSON_MAX)))
        goto out;
    if (!(c.db = db_pool_acquire(c.app->db))) {
        fail(&c, 503, "unavailable", "database unavailable");
        goto out;
    }
    if (auth_identify(c.app, c.db, req, &c.a) < 0)
        goto out;
    fn(&c);
out:
    if (c.db)
        db_pool_release(c.app->db, c.db);
    json_decref(c.body);
    /* After the handler: http_response_error() clears headers set before it. */
    http_response_header(req, "Cache-Control", "no-store");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    return 0;
}

#define ROUTE(name, flags)                                                                      \
    static int do_##name(struct call *c);                                                     \
    static int h_##name(struct http_request *req, void *ud) { return run(req, ud, do_##name, flags); }

ROUTE(register, NEED_BODY | SAME_ORIGIN)
ROUTE(verify, NEED_BODY | SAME_ORIGIN)
ROUTE(login, NEED_BODY | SAME_ORIGIN)
ROUTE(logout, 0)
ROUTE(reset, NEED_BODY | SAME_ORIGIN)
ROUTE(reset_confirm, NEED_BODY | SAME_ORIGIN)
ROUTE(me, 0)
ROUTE(me_patch, NEED_BODY)
ROUTE(totp_begin, 0)
ROUTE(totp_confirm, NEED_BODY)
ROUTE(totp_delete, NEED_BODY)
ROUTE(keys_list, 0)
ROUTE(keys_create, NEED_BODY)
ROUTE(keys_delete, 0)

/* ---- registration and verification ---- */

/* The roles of a new account (the registration_roles setting), normalised. */
static void registration_roles(struct db *db, char out[SETTING_VALUE_MAX])
{
    char err[256];
    if (settings_get(db, "registration_roles", out, NULL, err, sizeof err) < 0) {
        log_warn("auth: %s; new accounts get 'user'", err);
        snprintf(out, SETTING_VALUE_MAX, "user");
    }
}

static int do_register(struct call *c)
{
    static const char *const allowed[] = {"name", "email", "password", NULL};
    const char *name, *email, *password;
    bool verify = c->cfg->site.require_verification;
    if (!c->cfg->site.allow_registration) {
        fail(c, 403, "registration_closed", "this instance does not take new accounts");
        return 0;
    }
    if (!keys_only(c, allowed) || !get_str(c, "name", true, ACCOUNT_NAME_MAX, &name) ||
        !get_str(c, "email", verify, ACCOUNT_EMAIL_MAX, &email) ||
        !get_str(c, "password", true, ACCOUNT_PASSWORD_MAX, &password))
        return 0;
    if (email && !*email) {
        if (verify) {
            fail(c, 400, "invalid", "an e-mail address is required on this instance");
            return 0;
        }
        email = NULL;
    }
    char roles[SETTING_VALUE_MAX], err[256];
    registration_roles(c->db, roles);

    /*
     * One transaction, so that an account that must verify is never, even
     * for a moment, a verified one someone could log in to. It holds the
     * write lock while the password is hashed; registrations are rare.
     */
    int rc = db_begin(c->db);
    if (rc < 0)
        return fail_db(c, "registering");
    struct user u;
    rc = account_user_add(c->db, name, email, roles, password, &u, err, sizeof err);
    if (rc < 0) {
        db_rollback(c->db);
        return fail_accounts(c, rc, err);
    }
    char token[AUTH_TOKEN_LEN + 1] = "";
    if (verify) {
        if ((rc = exec_i(c->db, "UPDATE users SET verified = 0 WHERE id = ?", 1, u.id, 0)) < 0 ||
            (rc = token_issue(c->db, u.id, "verify", email, c->now, VERIFY_TTL, token)) < 0) {
            db_rollback(c->db);
            return fail_db(c, "registering");
        }
    }
    if ((rc = db_commit(c->db)) < 0) {
        db_rollback(c->db);
        return fail_db(c, "registering");
    }
    log_info("http %s: auth: registered user '%s'%s", c->req->remote, u.name,
             verify ? " (awaiting e-mail verification)" : "");
    if (verify)
        send_verification(c, email, u.name, token);
    sodium_memzero(token, sizeof token);
    json_t *o = json_object();
    json_object_set_new(o, "user", me_json(c, &u));
    json_object_set_new(o, "verification_required", json_boolean(verify));
    reply(c, 201, o);
    return 0;
}

static int do_verify(struct call *c)
{
    static const char *const allowed[] = {"token", NULL};
    const char *token;
    if (!keys_only(c, allowed) || !get_str(c, "token", true, 256, &token))
        return 0;
    if (!auth_token_shaped(token)) {
        fail(c, 400, "invalid_token", "this link is invalid or has expired");
        return 0;
    }
    char hash[AUTH_HASH_HEX + 1], email[ACCOUNT_EMAIL_MAX + 1] = "";
    auth_token_hash(token, hash);
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT user_id, COALESCE(email, '') FROM auth_tokens"
                   " WHERE token_hash = ? AND purpose = 'verify' AND expires_at > ?",
                   &st) < 0)
        return fail_db(c, "verifying");
    db_bind_text(st, 1, hash);
    db_bind_int64(st, 2, c->now);
    int rc = db_step(st);
    int64_t user_id = 0;
    if (rc == DB_ROW) {
        user_id = db_column_int64(st, 0);
        snprintf(email, sizeof email, "%s", db_column_text(st, 1));
    }
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "verifying");
    if (rc != DB_ROW) {
        fail(c, 400, "invalid_token", "this link is invalid or has expired");
        return 0;
    }
    if ((rc = db_begin(c->db)) < 0)
        return fail_db(c, "verifying");
    if (db_prepare(c->db, "UPDATE users SET verified = 1, email = COALESCE(NULLIF(?, ''), email)"
                          " WHERE id = ?", &st) < 0) {
        db_rollback(c->db);
        return fail_db(c, "verifying");
    }
    db_bind_text(st, 1, email);
    db_bind_int64(st, 2, user_id);
    rc = db_step(st);
    db_finalize(st);
    if (rc == DB_ECONSTRAINT) {
        db_rollback(c->db);
        fail(c, 409, "exists", "another account uses this e-mail address now");
        return 0;
    }
    if (rc < 0 ||
        (rc = exec_i(c->db, "DELETE FROM auth_tokens WHERE user_id = ? AND purpose = 'verify'",
                     1, user_id, 0)) < 0 ||
        (rc = db_commit(c->db)) < 0) {
        db_rollback(c->db);
        return fail_db(c, "verifying");
    }
    struct user u;
    if (user_by_id(c->db, user_id, &u) < 0)
        return fail_db(c, "verifying");
    log_info("http %s: auth: user '%s' confirmed their e-mail address", c->req->remote, u.name);
    json_t *o = json_object();
    json_object_set_new(o, "user", me_json(c, &u));
    reply(c, 200, o);
    return 0;
}

/* ---- login and logout ---- */

/* Send a fresh link to an unverified account, unless one went out lately. */
static void resend_verification(struct call *c, const struct user *u)
{
    if (!u->email[0])
        return;
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT count(*) FROM auth_tokens WHERE user_id = ? AND purpose = 'verify'"
                   " AND created_at > ?",
                   &st) < 0)
        return;
    db_bind_int64(st, 1, u->id);
    db_bind_int64(st, 2, c->now - VERIFY_RESEND_AFTER);
    int64_t recent = db_step(st) == DB_ROW ? db_column_int64(st, 0) : 1;
    db_finalize(st);
    if (recent)
        return;
    char token[AUTH_TOKEN_LEN + 1];
    if (token_issue(c->db, u->id, "verify", u->email, c->now, VERIFY_TTL, token) == 0)
        send_verification(c, u->email, u->name, token);
    sodium_memzero(token, sizeof token);
}

static bool set_session_cookie(struct call *c, const char *token, int64_t max_age)
{
    char cookie[256];
    if (auth_cookie_build(cookie, sizeof cookie, token, max_age,
                          auth_url_is_https(c->cfg->site.public_url)) < 0)
        return false;
    bool ok = http_response_header(c->req, "Set-Cookie", cookie) == 0;
    sodium_memzero(cookie, sizeof cookie);
    return ok;
}

/* A TOTP code for user id against its secret; counts as used when right. */
static bool totp_ok(struct call *c, int64_t user_id, const char *secret_b32, int64_t last_step,
                    const char *code)
{
    unsigned char key[64];
    long kl = auth_base32_decode(secret_b32, key, sizeof key);
    int64_t step = 0;
    bool ok = kl > 0 && auth_totp_check(key, (size_t)kl, code, c->now, last_step, &step) == 0;
    sodium_memzero(key, sizeof key);
    if (!ok)
        return false;
    /* The step is recorded only if no one used it meanwhile: a code works once. */
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                   &st) < 0)
        return false;
    db_bind_int64(st, 1, step);
    db_bind_int64(st, 2, user_id);
    db_bind_int64(st, 3, step);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return false;
    return db_changes(c->db) == 1;
}

static int do_login(struct call *c)
{
    static const char *const allowed[] = {"login", "password", "totp", NULL};
    const char *login, *password, *code;
    if (!keys_only(c, allowed) || !get_str(c, "login", true, ACCOUNT_EMAIL_MAX, &login) ||
        !get_str(c, "password", true, ACCOUNT_PASSWORD_MAX, &password) ||
        !get_str(c, "totp", false, 16, &code))
        return 0;

    /* Name or e-mail; names never contain '@'. */
    char name[ACCOUNT_EMAIL_MAX + 1];
    snprintf(name, sizeof name, "%s", login);
    if (strchr(login, '@')) {
        struct db_stmt *st;
        if (db_prepare(c->db, "SELECT name FROM users WHERE email = ?", &st) < 0)
            return fail_db(c, "logging in");
        db_bind_text(st, 1, login);
        int rc = db_step(st);
        if (rc == DB_ROW)
            snprintf(name, sizeof name, "%s", db_column_text(st, 0));
        db_finalize(st);
        if (rc < 0)
            return fail_db(c, "logging in");
    }
    char acct[ACCOUNT_EMAIL_MAX + 8];
    account_key(name, acct, sizeof acct);
    int64_t wait_ip = auth_throttle_check(throttle, c->ip_key, c->now);
    int64_t wait_acct = auth_throttle_check(throttle, acct, c->now);
    if (wait_ip || wait_acct) {
        log_info("http %s: auth: login throttled (%s)", c->req->remote,
                 wait_ip ? "address" : "account");
        return too_many(c, wait_ip > wait_acct ? wait_ip : wait_acct);
    }

    struct user u;
    char err[256];
    int rc = account_authenticate(c->db, name, password, &u, err, sizeof err);
    if (rc == -EACCES) {
        auth_throttle_fail(throttle, c->ip_key, c->now);
        auth_throttle_fail(throttle, acct, c->now);
        log_info("http %s: auth: failed login", c->req->remote);
        fail(c, 401, "bad_credentials", err);
        return 0;
    }
    if (rc < 0) {
        log_error("http %s: auth: %s", c->req->remote, err);
        fail(c, 500, "internal", "internal error");
        return 0;
    }
    struct user_flags f;
    if (user_flags(c->db, u.id, &f) < 0)
        return fail_db(c, "logging in");
    if (!f.verified) {
        resend_verification(c, &u);
        fail(c, 403, "unverified",
             "confirm your e-mail address first: open the link we sent (a new one is on its "
             "way if the last is old)");
        return 0;
    }
    if (f.totp) {
        if (!code || !*code) {
            fail(c, 401, "totp_required", "enter the code from your authenticator app");
            return 0;
        }
        if (!totp_ok(c, u.id, f.totp_secret, f.totp_last_step, code)) {
            auth_throttle_fail(throttle, c->ip_key, c->now);
            auth_throttle_fail(throttle, acct, c->now);
            log_info("http %s: auth: wrong TOTP code for '%s'", c->req->remote, u.name);
            fail(c, 401, "bad_totp", "wrong or already used code");
            return 0;
        }
    }
    auth_throttle_clear(throttle, acct);

    /* A new session every login; the one the browser held, if any, ends. */
    char token[AUTH_TOKEN_LEN + 1], hash[AUTH_HASH_HEX + 1], csrf[AUTH_TOKEN_LEN + 1];
    if (c->a.via == AUTH_VIA_SESSION)
        exec_i(c->db, "DELETE FROM sessions WHERE id = ?", 1, c->a.session_id, 0);
    auth_token_new(token);
    auth_token_hash(token, hash);
    auth_token_new(csrf);
    int64_t lifetime = (int64_t)(c->cfg->auth.session_lifetime_ms / 1000);
    char ip[64], ua[256];
    peer_ip(http_request_client_ip(c->req), ip, sizeof ip);
    const char *agent = http_request_header(c->req, "User-Agent");
    snprintf(ua, sizeof ua, "%s", agent ? agent : "");
    for (char *p = ua; *p; p++) /* kept for a sessions list: printable ASCII only */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';

    struct db_stmt *st;
    if (db_prepare(c->db,
                   "INSERT INTO sessions (user_id, token_hash, csrf_token, created_at, last_seen,"
                   " expires_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   &st) < 0)
        return fail_db(c, "starting a session");
    db_bind_int64(st, 1, u.id);
    db_bind_text(st, 2, hash);
    db_bind_text(st, 3, csrf);
    db_bind_int64(st, 4, c->now);
    db_bind_int64(st, 5, c->now);
    db_bind_int64(st, 6, c->now + lifetime);
    db_bind_text(st, 7, ip);
    db_bind_text(st, 8, ua);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "starting a session");

    /* Housekeeping while we are here: what has expired, and old sessions past the cap. */
    exec_i(c->db, "DELETE FROM sessions WHERE expires_at <= ?", 1, c->now, 0);
    exec_i(c->db, "DELETE FROM auth_tokens WHERE expires_at <= ?", 1, c->now, 0);
    exec_i(c->db,
           "DELETE FROM sessions WHERE user_id = ? AND id NOT IN"
           " (SELECT id FROM sessions WHERE user_id = ? ORDER BY id DESC LIMIT "
           SESSIONS_PER_USER ")",
           2, u.id, u.id);

    if (!set_session_cookie(c, token, lifetime)) {
        sodium_memzero(token, sizeof token);
        fail(c, 500, "internal", "internal error");
        return 0;
    }
    sodium_memzero(token, sizeof token);
    log_info("http %s: auth: user '%s' logged in", c->req->remote, u.name);
    json_t *o = json_object();
    json_object_set_new(o, "user", me_json(c, &u));
    json_object_set_new(o, "csrf_token", json_string(csrf));
    json_object_set_new(o, "expires_at", json_integer((json_int_t)(c->now + lifetime)));
    reply(c, 200, o);
    return 0;
}

static int do_logout(struct call *c)
{
    if (c->a.via == AUTH_VIA_API_KEY) {
        fail(c, 400, "not_a_session", "an API key has no session to end; revoke the key instead");
        return 0;
    }
    if (c->a.via == AUTH_VIA_SESSION) {
        if (!auth_require_user(c->req, &c->a)) /* the CSRF check */
            return 0;
        if (exec_i(c->db, "DELETE FROM sessions WHERE id = ?", 1, c->a.session_id, 0) < 0)
            return fail_db(c, "logging out");
        log_info("http %s: auth: user '%s' logged out", c->req->remote, c->a.user.name);
    }
    /* A guest, maybe with a stale cookie: clear it all the same. */
    set_session_cookie(c, "", 0);
    reply(c, 200, json_pack("{s:b}", "ok", 1));
    return 0;
}

/* ---- /me ---- */

static int do_me(struct call *c)
{
    if (!auth_require_user(c->req, &c->a))
        return 0;
    json_t *o = json_object();
    json_object_set_new(o, "user", me_json(c, &c->a.user));
    json_object_set_new(o, "via", json_string(c->a.via == AUTH_VIA_SESSION ? "session"
                                                                            : "api_key"));
    if (c->a.via == AUTH_VIA_SESSION)
        json_object_set_new(o, "csrf_token", json_string(c->a.csrf_token));
    reply(c, 200, o);
    return 0;
}

/*
 * The signed-in user's password again, for what a session left open on
 * someone else's screen must not do alone. Throttled like logins. Returns
 * false after answering.
 */
static bool confirm_password(struct call *c, const char *password)
{
    char acct[ACCOUNT_EMAIL_MAX + 8];
    account_key(c->a.user.name, acct, sizeof acct);
    int64_t wait = auth_throttle_check(throttle, acct, c->now);
    if (!wait)
        wait = auth_throttle_check(throttle, c->ip_key, c->now);
    if (wait) {
        too_many(c, wait);
        return false;
    }
    if (!password) {
        fail(c, 400, "invalid", "give your current password");
        return false;
    }
    char err[256];
    int rc = account_authenticate(c->db, c->a.user.name, password, NULL, err, sizeof err);
    if (rc == -EACCES) {
        auth_throttle_fail(throttle, acct, c->now);
        auth_throttle_fail(throttle, c->ip_key, c->now);
        fail(c, 403, "wrong_password", "the current password is wrong");
        return false;
    }
    if (rc < 0) {
        log_error("http %s: auth: %s", c->req->remote, err);
        fail(c, 500, "internal", "internal error");
        return false;
    }
    return true;
}

static int do_me_patch(struct call *c)
{
    static const char *const allowed[] = {"email", "password", "current_password", NULL};
    if (!auth_require_session(c->req, &c->a))
        return 0;
    const char *email, *password, *current;
    bool has_email = json_object_get(c->body, "email") != NULL;
    if (!keys_only(c, allowed) || !get_str(c, "email", false, ACCOUNT_EMAIL_MAX, &email) ||
        !get_str(c, "password", false, ACCOUNT_PASSWORD_MAX, &password) ||
        !get_str(c, "current_password", false, ACCOUNT_PASSWORD_MAX, &current))
        return 0;
    if (!has_email && !password) {
        fail(c, 400, "invalid", "nothing to change: give email or password");
        return 0;
    }
    bool verify = c->cfg->site.require_verification;
    char err[256];
    if (email && !*email)
        email = NULL;
    if (has_email && !email && verify) {
        fail(c, 400, "invalid", "an e-mail address is required on this instance");
        return 0;
    }
    if (email && account_email_valid(email, err, sizeof err) < 0) {
        fail(c, 400, "invalid", err);
        return 0;
    }
    if (password && (strlen(password) < ACCOUNT_PASSWORD_MIN)) {
        char msg[96];
        snprintf(msg, sizeof msg, "a password is %d to %d bytes long", ACCOUNT_PASSWORD_MIN,
                 ACCOUNT_PASSWORD_MAX);
        fail(c, 400, "invalid", msg);
        return 0;
    }
    if (!confirm_password(c, current))
        return 0;

    const char *pending = NULL;
    bool email_changes = has_email && strcasecmp(email ? email : "", c->a.user.email) != 0;
    if (email_changes) {
        struct db_stmt *st;
        if (email) {
            bool taken = false;
            if (db_prepare(c->db, "SELECT 1 FROM users WHERE email = ? AND id != ?", &st) < 0)
                return fail_db(c, "changing the e-mail address");
            db_bind_text(st, 1, email);
            db_bind_int64(st, 2, c->a.user.id);
            int rc = db_step(st);
            taken = rc == DB_ROW;
            db_finalize(st);
            if (rc < 0)
                return fail_db(c, "changing the e-mail address");
            if (taken) {
                fail(c, 409, "exists", "that e-mail address is used by another account");
                return 0;
            }
        }
        /* Links to the old address must not set it back later. */
        if (exec_i(c->db, "DELETE FROM auth_tokens WHERE user_id = ?", 1, c->a.user.id, 0) < 0)
            return fail_db(c, "changing the e-mail address");
        if (verify) {
            /* The address changes when the link sent to it is opened. */
            char token[AUTH_TOKEN_LEN + 1];
            if (token_issue(c->db, c->a.user.id, "verify", email, c->now, VERIFY_TTL, token) < 0)
                return fail_db(c, "changing the e-mail address");
            send_verification(c, email, c->a.user.name, token);
            sodium_memzero(token, sizeof token);
            pending = email;
        } else {
            if (db_prepare(c->db, "UPDATE users SET email = ? WHERE id = ?", &st) < 0)
                return fail_db(c, "changing the e-mail address");
            db_bind_text(st, 1, email);
            db_bind_int64(st, 2, c->a.user.id);
            int rc = db_step(st);
            db_finalize(st);
            if (rc == DB_ECONSTRAINT) {
                fail(c, 409, "exists", "that e-mail address is used by another account");
                return 0;
            }
            if (rc < 0)
                return fail_db(c, "changing the e-mail address");
        }
        log_info("http %s: auth: user '%s' %s their e-mail address", c->req->remote,
                 c->a.user.name, verify ? "asked to change" : "changed");
    }
    if (password) {
        int rc = account_user_set_password(c->db, c->a.user.name, password, err, sizeof err);
        if (rc < 0)
            return fail_accounts(c, rc, err);
        /* Every other session ends, and reset links stop working. */
        if (exec_i(c->db, "DELETE FROM sessions WHERE user_id = ? AND id != ?", 2,
                  c->a.user.id, c->a.session_id) < 0 ||
            exec_i(c->db, "DELETE FROM auth_tokens WHERE user_id = ? AND purpose = 'reset'", 1,
                   c->a.user.id, 0) < 0)
            return fail_db(c, "changing the password");
        log_info("http %s: auth: user '%s' changed their password", c->req->remote,
                 c->a.user.name);
    }
    struct user u;
    if (user_by_id(c->db, c->a.user.id, &u) < 0)
        return fail_db(c, "reading the account");
    json_t *o = json_object();
    json_object_set_new(o, "user", me_json(c, &u));
    if (pending)
        json_object_set_new(o, "email_pending", json_string(pending));
    reply(c, 200, o);
    return 0;
}

static int do_me_delete(struct call *c, api_auth_delete_fn fn, void *ud)
{
    static const char *const allowed[] = {"password", NULL};
    const char *password;
    if (!auth_require_session(c->req, &c->a))
        return 0;
    if (!(c->body = auth_json_body(c->req, AUTH_JSON_MAX)))
        return 0;
    if (!keys_only(c, allowed) || !get_str(c, "password", true, ACCOUNT_PASSWORD_MAX, &password) ||
        !confirm_password(c, password))
        return 0;
    char err[256];
    int rc = fn(c->db, &c->a.user, ud, err, sizeof err);
    if (rc < 0)
        return fail_accounts(c, rc, err);
    log_info("http %s: auth: user '%s' deleted their account", c->req->remote, c->a.user.name);
    set_session_cookie(c, "", 0);
    reply(c, 200, json_pack("{s:b}", "ok", 1));
    return 0;
}

int api_auth_me_delete(struct app *app, struct db *db, struct http_request *req,
                       const struct auth_ctx *a, api_auth_delete_fn fn, void *ud)
{
    struct call c = {.app = app, .cfg = app->cfg, .req = req, .db = db, .a = *a,
                     .now = util_now_unix()};
    auth_throttle_ip_key(http_request_client_ip(req), c.ip_key, sizeof c.ip_key);
    do_me_delete(&c, fn, ud);
    json_decref(c.body);
    /* After the handler: http_response_error() clears headers set before it.
     * (nosniff is the job's, in api_channels.c, as on all its answers.) */
    http_response_header(req, "Cache-Control", "no-store");
    return 0;
}

/* ---- password reset ---- */

static int do_reset(struct call *c)
{
    static const char *const allowed[] = {"email", NULL};
    const char *email;
    char err[256];
    if (!keys_only(c, allowed) || !get_str(c, "email", true, ACCOUNT_EMAIL_MAX, &email))
        return 0;
    if (account_email_valid(email, err, sizeof err) < 0) {
        fail(c, 400, "invalid", err);
        return 0;
    }
    /* Every request counts: this sends mail, and mail must not be a weapon. */
    char ipk[96], mk[ACCOUNT_EMAIL_MAX + 16], low[ACCOUNT_EMAIL_MAX + 1];
    snprintf(ipk, sizeof ipk, "reset-%s", c->ip_key);
    lower_copy(low, sizeof low, email);
    snprintf(mk, sizeof mk, "reset:%s", low);
    int64_t wait = auth_throttle_check(throttle, ipk, c->now);
    if (!wait)
        wait = auth_throttle_check(throttle, mk, c->now);
    if (wait)
        return too_many(c, wait);
    auth_throttle_fail(throttle, ipk, c->now);
    auth_throttle_fail(throttle, mk, c->now);

    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT id, name, email FROM users WHERE email = ? AND disabled = 0", &st) < 0)
        return fail_db(c, "starting a password reset");
    db_bind_text(st, 1, email);
    int rc = db_step(st);
    int64_t id = 0;
    char name[ACCOUNT_NAME_MAX + 1] = "", to[ACCOUNT_EMAIL_MAX + 1] = "";
    if (rc == DB_ROW) {
        id = db_column_int64(st, 0);
        snprintf(name, sizeof name, "%s", db_column_text(st, 1));
        snprintf(to, sizeof to, "%s", db_column_text(st, 2));
    }
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "starting a password reset");
    if (id) {
        char token[AUTH_TOKEN_LEN + 1];
        if (token_issue(c->db, id, "reset", NULL, c->now, RESET_TTL, token) < 0)
            return fail_db(c, "starting a password reset");
        send_reset(c, to, name, token);
        sodium_memzero(token, sizeof token);
        log_info("http %s: auth: password reset asked for user '%s'", c->req->remote, name);
    }
    reply(c, 202, json_pack("{s:b, s:s}", "ok", 1, "message",
                            "if an account has this address, a link to reset its password is "
                            "on its way"));
    return 0;
}

static int do_reset_confirm(struct call *c)
{
    static const char *const allowed[] = {"token", "password", NULL};
    const char *token, *password;
    if (!keys_only(c, allowed) || !get_str(c, "token", true, 256, &token) ||
        !get_str(c, "password", true, ACCOUNT_PASSWORD_MAX, &password))
        return 0;
    if (strlen(password) < ACCOUNT_PASSWORD_MIN) {
        char msg[96];
        snprintf(msg, sizeof msg, "a password is %d to %d bytes long", ACCOUNT_PASSWORD_MIN,
                 ACCOUNT_PASSWORD_MAX);
        fail(c, 400, "invalid", msg);
        return 0;
    }
    if (!auth_token_shaped(token)) {
        fail(c, 400, "invalid_token", "this link is invalid or has expired");
        return 0;
    }
    char hash[AUTH_HASH_HEX + 1];
    auth_token_hash(token, hash);
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT t.id, u.id, u.name FROM auth_tokens t JOIN users u ON u.id = t.user_id"
                   " WHERE t.token_hash = ? AND t.purpose = 'reset' AND t.expires_at > ?"
                   " AND u.disabled = 0",
                   &st) < 0)
        return fail_db(c, "resetting a password");
    db_bind_text(st, 1, hash);
    db_bind_int64(st, 2, c->now);
    int rc = db_step(st);
    int64_t tid = 0, uid = 0;
    char name[ACCOUNT_NAME_MAX + 1] = "";
    if (rc == DB_ROW) {
        tid = db_column_int64(st, 0);
        uid = db_column_int64(st, 1);
        snprintf(name, sizeof name, "%s", db_column_text(st, 2));
    }
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "resetting a password");
    if (!tid) {
        fail(c, 400, "invalid_token", "this link is invalid or has expired");
        return 0;
    }
    /* Consume the token first: of two requests racing with it, one wins. */
    if (exec_i(c->db, "DELETE FROM auth_tokens WHERE id = ?", 1, tid, 0) < 0)
        return fail_db(c, "resetting a password");
    if (db_changes(c->db) != 1) {
        fail(c, 400, "invalid_token", "this link is invalid or has expired");
        return 0;
    }
    char err[256];
    rc = account_user_set_password(c->db, name, password, err, sizeof err);
    if (rc < 0)
        return fail_accounts(c, rc, err);
    /*
     * Signed out everywhere; the other reset links die; and whoever read
     * this mail controls the address, so it counts as verified.
     */
    if (exec_i(c->db, "DELETE FROM sessions WHERE user_id = ?", 1, uid, 0) < 0 ||
        exec_i(c->db, "DELETE FROM auth_tokens WHERE user_id = ? AND purpose = 'reset'", 1, uid,
               0) < 0 ||
        exec_i(c->db, "UPDATE users SET verified = 1 WHERE id = ?", 1, uid, 0) < 0)
        return fail_db(c, "resetting a password");
    char acct[ACCOUNT_EMAIL_MAX + 8];
    account_key(name, acct, sizeof acct);
    auth_throttle_clear(throttle, acct);
    log_info("http %s: auth: user '%s' reset their password", c->req->remote, name);
    reply(c, 200, json_pack("{s:b}", "ok", 1));
    return 0;
}

/* ---- TOTP ---- */

static void otpauth_escape(struct buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~')
            buf_append_char(b, (char)*p);
        else
            buf_printf(b, "%%%02X", *p);
    }
}

static int do_totp_begin(struct call *c)
{
    if (!auth_require_session(c->req, &c->a))
        return 0;
    struct user_flags f;
    if (user_flags(c->db, c->a.user.id, &f) < 0)
        return fail_db(c, "setting up TOTP");
    if (f.totp) {
        fail(c, 409, "totp_enabled",
             "two-factor login is already on; turn it off first to change the secret");
        return 0;
    }
    unsigned char key[AUTH_TOTP_SECRET_BYTES];
    char secret[AUTH_TOTP_SECRET_B32 + 1];
    randombytes_buf(key, sizeof key);
    auth_base32_encode(key, sizeof key, secret, sizeof secret);
    sodium_memzero(key, sizeof key);
    struct db_stmt *st;
    if (db_prepare(c->db, "UPDATE users SET totp_pending = ? WHERE id = ?", &st) < 0)
        return fail_db(c, "setting up TOTP");
    db_bind_text(st, 1, secret);
    db_bind_int64(st, 2, c->a.user.id);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "setting up TOTP");

    /* otpauth://totp/ISSUER:NAME?secret=...&issuer=ISSUER (Key Uri Format) */
    struct buf uri;
    buf_init(&uri, 0);
    buf_append_str(&uri, "otpauth://totp/");
    otpauth_escape(&uri, c->cfg->site.name);
    buf_append_str(&uri, ":");
    otpauth_escape(&uri, c->a.user.name);
    buf_printf(&uri, "?secret=%s&issuer=", secret);
    otpauth_escape(&uri, c->cfg->site.name);
    buf_printf(&uri, "&algorithm=SHA1&digits=%d&period=%d", AUTH_TOTP_DIGITS, AUTH_TOTP_STEP);
    buf_cstr(&uri);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s}", "secret", secret, "uri",
                          uri.data ? uri.data : "", "digits", AUTH_TOTP_DIGITS, "period",
                          AUTH_TOTP_STEP, "algorithm", "SHA1");
    buf_free(&uri);
    sodium_memzero(secret, sizeof secret);
    reply(c, 200, o);
    return 0;
}

static int do_totp_confirm(struct call *c)
{
    static const char *const allowed[] = {"code", NULL};
    const char *code;
    if (!auth_require_session(c->req, &c->a) || !keys_only(c, allowed) ||
        !get_str(c, "code", true, 16, &code))
        return 0;
    char acct[ACCOUNT_EMAIL_MAX + 8];
    account_key(c->a.user.name, acct, sizeof acct);
    int64_t wait = auth_throttle_check(throttle, acct, c->now);
    if (wait)
        return too_many(c, wait);
    struct user_flags f;
    if (user_flags(c->db, c->a.user.id, &f) < 0)
        return fail_db(c, "confirming TOTP");
    if (f.totp) {
        fail(c, 409, "totp_enabled", "two-factor login is already on");
        return 0;
    }
    if (!f.totp_pending[0]) {
        fail(c, 409, "totp_not_started", "start with POST /api/v1/me/totp");
        return 0;
    }
    unsigned char key[64];
    long kl = auth_base32_decode(f.totp_pending, key, sizeof key);
    int64_t step = 0;
    bool ok = kl > 0 && auth_totp_check(key, (size_t)kl, code, c->now, 0, &step) == 0;
    sodium_memzero(key, sizeof key);
    if (!ok) {
        auth_throttle_fail(throttle, acct, c->now);
        fail(c, 400, "bad_totp", "wrong code: check the device's clock and try the next one");
        return 0;
    }
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL,"
                   " totp_last_step = ? WHERE id = ? AND totp_pending = ?",
                   &st) < 0)
        return fail_db(c, "confirming TOTP");
    db_bind_int64(st, 1, step);
    db_bind_int64(st, 2, c->a.user.id);
    db_bind_text(st, 3, f.totp_pending);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return fail_db(c, "confirming TOTP");
    if (db_changes(c->db) != 1) {
        fail(c, 409, "totp_not_started", "the secret changed meanwhile; start again");
        return 0;
    }
    log_info("http %s: auth: user '%s' turned on two-factor login", c->req->remote,
             c->a.user.name);
    reply(c, 200, json_pack("{s:b}", "totp_enabled", 1));
    return 0;
}

static int do_totp_delete(struct call *c)
{
    static const char *const allowed[] = {"code", "password", NULL};
    const char *code, *password;
    if (!auth_require_session(c->req, &c->a) || !keys_only(c, allowed) ||
        !get_str(c, "code", false, 16, &code) ||
        !get_str(c, "password", false, ACCOUNT_PASSWORD_MAX, &password))
        return 0;
    if (!code && !password) {
        fail(c, 400, "invalid", "give a current code or your password");
        return 0;
    }
    struct user_flags f;
    if (user_flags(c->db, c->a.user.id, &f) < 0)
        return fail_db(c, "turning off TOTP");
    if (!f.totp && !f.totp_pending[0]) {
        fail(c, 409, "totp_not_enabled", "two-factor login is not on");
        return 0;
    }
    if (password) {
        if (!confirm_password(c, password))
            return 0;
    } else {
        char acct[ACCOUNT_EMAIL_MAX + 8];
        account_key(c->a.user.name, acct, sizeof acct);
        int64_t wait = auth_throttle_check(throttle, acct, c->now);
        if (wait)
            return too_many(c, wait);
        if (!f.totp || !totp_ok(c, c->a.user.id, f.totp_secret, f.totp_last_step, code)) {
            auth_throttle_fail(throttle, acct, c->now);
            fail(c, 403, "bad_totp", "wrong or already used code");
            return 0;
        }
    }
    if (exec_i(c->db,
               "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = 0"
               " WHERE id = ?",
               1, c->a.user.id, 0) < 0)
        return fail_db(c, "turning off TOTP");
    log_info("http %s: auth: user '%s' turned off two-factor login", c->req->remote,
             c->a.user.name);
    reply(c, 200, json_pack("{s:b}", "totp_enabled", 0));
    return 0;
}

/* ---- API keys ---- */

static json_t *key_json(struct db_stmt *st, int64_t now)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(db_column_int64(st, 0)));
    const char *name = db_column_text(st, 1);
    json_t *n = json_string(name ? name : "");
    json_object_set_new(o, "name", n ? n : json_null());
    json_object_set_new(o, "prefix", json_string(db_column_text(st, 2)));
    json_object_set_new(o, "created_at", json_integer(db_column_int64(st, 3)));
    json_object_set_new(o, "last_used", db_column_is_null(st, 4)
                                            ? json_null()
                                            : json_integer(db_column_int64(st, 4)));
    bool expires = !db_column_is_null(st, 5);
    int64_t exp = db_column_int64(st, 5);
    json_object_set_new(o, "expires_at", expires ? json_integer(exp) : json_null());
    json_object_set_new(o, "expired", json_boolean(expires && exp <= now));
    return o;
}

static int do_keys_list(struct call *c)
{
    if (!auth_require_user(c->req, &c->a))
        return 0;
    struct db_stmt *st;
    if (db_prepare(c->db,
                   "SELECT id, name, prefix, created_at, last_used, expires_at FROM api_keys"
                   " WHERE user_id = ? ORDER BY id",
                   &st) < 0)
        return fail_db(c, "listing API keys");
    db_bind_int64(st, 1, c->a.user.id);
    json_t *arr = json_array();
    int rc;
    while ((rc = db_step(st)) == DB_ROW)
        json_array_append_new(arr, key_json(st, c->now));
    db_finalize(st);
    if (rc < 0) {
        json_decref(arr);
        return fail_db(c, "listing API keys");
    }
    json_t *o = json_object();
    json_object_set_new(o, "keys", arr);
    reply(c, 200, o);
    return 0;
}

static int do_keys_create(struct call *c)
{
    static const char *const allowed[] = {"name", "expires_at", NULL};
    const char *name;
    if (!auth_require_session(c->req, &c->a) || !keys_only(c, allowed) ||
        !get_str(c, "name", true, API_KEY_NAME_MAX, &name))
        return 0;
    if (!*name || !util_text_ok(name, NULL) || strspn(name, " ") == strlen(name)) {
        char msg[128];
        snprintf(msg, sizeof msg, "a key's name is 1 to %d bytes of text", API_KEY_NAME_MAX);
        fail(c, 400, "invalid", msg);
        return 0;
    }
    json_t *ev = json_object_get(c->body, "expires_at");
    bool expires = ev && !json_is_null(ev);
    int64_t exp = 0;
    if (expires) {
        exp = json_is_integer(ev) ? (int64_t)json_integer_value(ev) : 0;
        if (!json_is_integer(ev) || exp <= c->now || exp > c->now + API_KEY_MAX_LIFETIME) {
            fail(c, 400, "invalid",
                 "'expires_at' is a Unix time in seconds, in the future (at most ten years "
                 "ahead), or null");
            return 0;
        }
    }
    struct db_stmt *st;
    if (db_prepare(c->db, "SELECT count(*) FROM api_keys WHERE user_id = ?", &st) < 0)
        return fail_db(c, "creating an API key");
    db_bind_int64(st, 1, c->a.user.id);
    int64_t count = db_step(st) == DB_ROW ? db_column_int64(st, 0) : 0;
    db_finalize(st);
    if (count >= API_KEYS_PER_USER) {
        char msg[96];
        snprintf(msg, sizeof msg, "at most %d API keys per account; revoke one first",
                 API_KEYS_PER_USER);
        fail(c, 409, "too_many_keys", msg);
        return 0;
    }
    char token[AUTH_TOKEN_LEN + 1], key[AUTH_API_KEY_LEN + 1], hash[AUTH_HASH_HEX + 1];
    char prefix[16];
    auth_token_new(token);
    snprintf(key, sizeof key, "%s%s", AUTH_API_KEY_PREFIX, token);
    sodium_memzero(token, sizeof token);
    auth_token_hash(key, hash);
    snprintf(prefix, sizeof prefix, "%.11s", key);
    if (db_prepare(c->db,
                   "INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, expires_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   &st) < 0)
        return fail_db(c, "creating an API key");
    db_bind_int64(st, 1, c->a.user.id);
    db_bind_text(st, 2, name);
    db_bind_text(st, 3, hash);
    db_bind_text(st, 4, prefix);
    db_bind_int64(st, 5, c->now);
    if (expires)
        db_bind_int64(st, 6, exp);
    else
        db_bind_null(st, 6);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0) {
        sodium_memzero(key, sizeof key);
        return fail_db(c, "creating an API key");
    }
    int64_t id = db_last_insert_id(c->db);
    log_info("http %s: auth: user '%s' created API key %lld (%s)", c->req->remote,
             c->a.user.name, (long long)id, prefix);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "prefix", json_string(prefix));
    json_object_set_new(o, "created_at", json_integer(c->now));
    json_object_set_new(o, "last_used", json_null());
    json_object_set_new(o, "expires_at", expires ? json_integer(exp) : json_null());
    json_object_set_new(o, "expired", json_false());
    json_object_set_new(o, "key", json_string(key));
    sodium_memzero(key, sizeof key);
    reply(c, 201, o);
    return 0;
}

static int do_keys_delete(struct call *c)
{
    if (!auth_require_user(c->req, &c->a))
        return 0;
    const char *p = http_request_param(c->req, "id");
    char *end = NULL;
    long long id = p && *p >= '1' && *p <= '9' ? strtoll(p, &end, 10) : 0;
    if (id <= 0 || !end || *end) {
        fail(c, 404, "not_found", "no such API key");
        return 0;
    }
    if (exec_i(c->db, "DELETE FROM api_keys WHERE id = ? AND user_id = ?", 2, id,
              c->a.user.id) < 0)
        return fail_db(c, "revoking an API key");
    if (db_changes(c->db) == 0) {
        fail(c, 404, "not_found", "no such API key");
        return 0;
    }
    log_info("http %s: auth: user '%s' revoked API key %lld", c->req->remote, c->a.user.name,
             id);
    reply(c, 200, json_pack("{s:b}", "ok", 1));
    return 0;
}

/* ---- registration of the routes ---- */

int api_auth_register(struct app *app, struct http_server *srv)
{
    char err[256];
    if (mail_config_check(app->cfg, err, sizeof err) < 0) {
        log_error("config: %s", err);
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        log_error("auth: libsodium failed to initialise");
        return -EIO;
    }
    struct auth_throttle *t =
        auth_throttle_new(THROTTLE_SLOTS, app->cfg->auth.login_attempts,
                          (int64_t)(app->cfg->auth.login_window_ms / 1000));
    if (!t)
        return -ENOMEM;
    auth_throttle_free(throttle); /* a second registration (tests) replaces the first */
    throttle = t;
    if (!app->cfg->smtp.host[0])
        log_info("auth: smtp.host is empty: verification and reset e-mail will be logged, "
                 "not sent");

    static const struct {
        const char *method, *path;
        http_handler_fn fn;
    } routes[] = {
        {"POST", "/api/v1/auth/register", h_register},
        {"POST", "/api/v1/auth/verify", h_verify},
        {"POST", "/api/v1/auth/login", h_login},
        {"POST", "/api/v1/auth/logout", h_logout},
        {"POST", "/api/v1/auth/password-reset", h_reset},
        {"POST", "/api/v1/auth/password-reset/confirm", h_reset_confirm},
        {"GET", "/api/v1/me", h_me},
        {"PATCH", "/api/v1/me", h_me_patch},
        {"POST", "/api/v1/me/totp", h_totp_begin},
        {"POST", "/api/v1/me/totp/confirm", h_totp_confirm},
        {"DELETE", "/api/v1/me/totp", h_totp_delete},
        {"GET", "/api/v1/me/api-keys", h_keys_list},
        {"POST", "/api/v1/me/api-keys", h_keys_create},
        {"DELETE", "/api/v1/me/api-keys/:id", h_keys_delete},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = http_server_route(srv, routes[i].method, routes[i].path, routes[i].fn, app,
                                   HTTP_ROUTE_BLOCKING);
        if (rc < 0) {
            log_error("auth: cannot add route %s %s", routes[i].method, routes[i].path);
            return rc;
        }
    }
    return 0;
}
