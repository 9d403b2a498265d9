/*
 * Who is calling (see auth.h for the rules), and the small pieces of
 * cryptography and bookkeeping that answer it.
 *
 * Credentials are looked up by their SHA-256, never by their text: an index
 * lookup on a secret leaks, through its timing, how long a prefix of a
 * guess is right; a lookup on a digest leaks nothing useful. The CSRF token
 * is compared with sodium_memcmp for the same reason.
 *
 * A session's last_seen and an API key's last_used are written at most once
 * a minute, so reading pages does not turn every request into a write on
 * the database.
 *
 * The login throttle is a fixed table in memory behind one mutex: a few
 * hundred kilobytes, whatever an attacker sends. It forgets on restart,
 * which is acceptable for a brake on guessing; the argon2id cost of every
 * attempt stays in force regardless.
 */
#include "app/auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/app.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"

/* How often last_seen / last_used are written back, in seconds. */
#define AUTH_TOUCH_INTERVAL 60

/* ---- tokens ---- */

void auth_token_new(char out[AUTH_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, AUTH_TOKEN_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void auth_token_hash(const char *token, char out[AUTH_HASH_HEX + 1])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    util_hex(h, sizeof h, out);
}

static bool b64url_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

bool auth_token_shaped(const char *token)
{
    if (!token)
        return false;
    size_t n = 0;
    for (; token[n]; n++)
        if (n >= AUTH_TOKEN_LEN || !b64url_char(token[n]))
            return false;
    return n == AUTH_TOKEN_LEN;
}

bool auth_csrf_equal(const char *expected, const char *given)
{
    if (!expected || !given)
        return false;
    size_t n = strlen(expected);
    if (n == 0 || strlen(given) != n)
        return false;
    return sodium_memcmp(expected, given, n) == 0;
}

/* ---- cookies ---- */

int auth_cookie_build(char *out, size_t n, const char *value, int64_t max_age, bool secure)
{
    if (!value || strpbrk(value, ";,\r\n \t\""))
        return -EINVAL;
    int w = snprintf(out, n, "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Lax%s",
                     AUTH_SESSION_COOKIE, value, (long long)(max_age < 0 ? 0 : max_age),
                     secure ? "; Secure" : "");
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

int auth_cookie_get(const char *header, const char *name, int index, char *out, size_t n)
{
    if (!header)
        return -ENOENT;
    size_t nl = strlen(name);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        size_t len = strcspn(p, ";");
        const char *eq = memchr(p, '=', len);
        if (eq) {
            size_t klen = (size_t)(eq - p);
            while (klen && (p[klen - 1] == ' ' || p[klen - 1] == '\t'))
                klen--;
            if (klen == nl && memcmp(p, name, nl) == 0 && index-- == 0) {
                const char *v = eq + 1;
                size_t vl = len - (size_t)(v - p);
                while (vl && (*v == ' ' || *v == '\t')) {
                    v++;
                    vl--;
                }
                while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                    vl--;
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                    v++;
                    vl -= 2;
                }
                if (vl >= n)
                    return -ENAMETOOLONG;
                memcpy(out, v, vl);
                out[vl] = '\0';
                return 0;
            }
        }
        p += len;
    }
    return -ENOENT;
}

bool auth_url_is_https(const char *public_url)
{
    return public_url && strncasecmp(public_url, "https://", 8) == 0;
}

/* ---- origins ---- */

/*
 * "scheme://host[:port]" in lowercase without a default port, from a URL
 * (its path ignored). -EINVAL when it is not http(s) with a host.
 */
static int origin_of(const char *url, char *out, size_t n)
{
    bool https;
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        https = false;
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        https = true;
        p = url + 8;
    } else {
        return -EINVAL;
    }
    size_t len = strcspn(p, "/?#");
    if (len == 0 || memchr(p, '@', len))
        return -EINVAL;
    char auth[300];
    if (len >= sizeof auth)
        return -EINVAL;
    for (size_t i = 0; i < len; i++)
        auth[i] = (char)tolower((unsigned char)p[i]);
    auth[len] = '\0';
    /* the port is what follows the last ':' outside brackets */
    char *close = strrchr(auth, ']');
    char *colon = strrchr(close ? close : auth, ':');
    if (colon && (strcmp(colon, https ? ":443" : ":80") == 0 || colon[1] == '\0'))
        *colon = '\0';
    int w = snprintf(out, n, "%s://%s", https ? "https" : "http", auth);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

bool auth_origin_allowed(const char *public_url, const char *origin, const char *host)
{
    if (!origin)
        return true;
    char o[320], site[320];
    if (origin_of(origin, o, sizeof o) != 0)
        return false; /* "null", or junk: a browser context we cannot place */
    if (public_url && origin_of(public_url, site, sizeof site) == 0 && strcmp(o, site) == 0)
        return true;
    if (host && *host) {
        /* The Host header read as an origin with the Origin's own scheme. */
        char h[320];
        const char *scheme_end = strstr(o, "://");
        int w = snprintf(h, sizeof h, "%.*s%s", (int)(scheme_end + 3 - o), o, host);
        if (w > 0 && (size_t)w < sizeof h && origin_of(h, site, sizeof site) == 0 &&
            strcmp(o, site) == 0)
            return true;
    }
    return false;
}

/* ---- base32 and TOTP ---- */

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int auth_base32_encode(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    size_t need = (n * 8 + 4) / 5;
    if (need + 1 > outlen)
        return -ENAMETOOLONG;
    size_t o = 0;
    unsigned buffer = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        buffer = (buffer << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32_alphabet[(buffer >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = b32_alphabet[(buffer << (5 - bits)) & 31];
    out[o] = '\0';
    return 0;
}

long auth_base32_decode(const char *in, unsigned char *out, size_t outlen)
{
    size_t o = 0;
    unsigned buffer = 0;
    int bits = 0;
    for (const char *p = in; *p; p++) {
        int c = toupper((unsigned char)*p);
        if (c == ' ' || c == '=' || c == '-')
            continue;
        const char *at = c ? strchr(b32_alphabet, c) : NULL;
        if (!at)
            return -EINVAL;
        buffer = (buffer << 5) | (unsigned)(at - b32_alphabet);
        bits += 5;
        if (bits >= 8) {
            if (o >= outlen)
                return -EINVAL;
            out[o++] = (unsigned char)((buffer >> (bits - 8)) & 0xff);
            bits -= 8;
        }
    }
    return (long)o;
}

uint32_t auth_hotp(const unsigned char *key, size_t keylen, uint64_t counter, int digits)
{
    unsigned char msg[8];
    for (int i = 7; i >= 0; i--) {
        msg[i] = (unsigned char)(counter & 0xff);
        counter >>= 8;
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha1(), key, (int)keylen, msg, sizeof msg, mac, &maclen) || maclen < 20)
        return UINT32_MAX; /* never a valid code */
    int off = mac[maclen - 1] & 0x0f;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | (uint32_t)mac[off + 3];
    uint32_t mod = 1;
    for (int i = 0; i < digits; i++)
        mod *= 10;
    sodium_memzero(mac, sizeof mac);
    return bin % mod;
}

int auth_totp_check(const unsigned char *key, size_t keylen, const char *code, int64_t now,
                    int64_t last_step, int64_t *step)
{
    if (!code || now < 0)
        return -EACCES;
    /* Accept "123 456" as people type it from an app. */
    char digits[AUTH_TOTP_DIGITS + 1];
    size_t n = 0;
    for (const char *p = code; *p; p++) {
        if (*p == ' ')
            continue;
        if (*p < '0' || *p > '9' || n >= AUTH_TOTP_DIGITS)
            return -EACCES;
        digits[n++] = *p;
    }
    if (n != AUTH_TOTP_DIGITS)
        return -EACCES;
    digits[n] = '\0';
    int64_t t = now / AUTH_TOTP_STEP;
    int found = 0;
    int64_t match = 0;
    /* All three steps are computed whatever matches, so timing says nothing. */
    for (int64_t s = t - 1; s <= t + 1; s++) {
        if (s < 0)
            continue;
        char want[AUTH_TOTP_DIGITS + 1];
        snprintf(want, sizeof want, "%0*u", AUTH_TOTP_DIGITS,
                 auth_hotp(key, keylen, (uint64_t)s, AUTH_TOTP_DIGITS));
        int eq = sodium_memcmp(want, digits, AUTH_TOTP_DIGITS) == 0;
        if (eq && s > last_step && !found) {
            found = 1;
            match = s;
        }
    }
    if (!found)
        return -EACCES;
    if (step)
        *step = match;
    return 0;
}

/* ---- throttle ---- */

#define THROTTLE_PROBE 8

struct throttle_slot {
    unsigned char id[16];
    int64_t start; /* when this key's window opened */
    int count;
    bool used;
};

struct auth_throttle {
    pthread_mutex_t lock;
    size_t nslots;
    int max;
    int64_t window;
    unsigned char key[crypto_generichash_KEYBYTES];
    struct throttle_slot *slots;
};

struct auth_throttle *auth_throttle_new(size_t slots, int max_failures, int64_t window_s)
{
    if (sodium_init() < 0 || slots < THROTTLE_PROBE || max_failures < 1 || window_s < 1)
        return NULL;
    struct auth_throttle *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->slots = calloc(slots, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->nslots = slots;
    t->max = max_failures;
    t->window = window_s;
    randombytes_buf(t->key, sizeof t->key);
    return t;
}

void auth_throttle_free(struct auth_throttle *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->slots);
    free(t);
}

static void throttle_id(struct auth_throttle *t, const char *key, unsigned char id[16])
{
    crypto_generichash(id, 16, (const unsigned char *)key, strlen(key), t->key, sizeof t->key);
}

static size_t throttle_home(struct auth_throttle *t, const unsigned char id[16])
{
    uint64_t h = 0;
    memcpy(&h, id, sizeof h);
    return (size_t)(h % t->nslots);
}

/* The live slot of id, or NULL. Called with the lock held. */
static struct throttle_slot *throttle_find(struct auth_throttle *t, const unsigned char id[16],
                                           int64_t now)
{
    size_t home = throttle_home(t, id);
    for (size_t i = 0; i < THROTTLE_PROBE; i++) {
        struct throttle_slot *s = &t->slots[(home + i) % t->nslots];
        if (s->used && memcmp(s->id, id, 16) == 0) {
            if (now - s->start >= t->window) {
                s->used = false; /* its window is over: forgotten */
                return NULL;
            }
            return s;
        }
    }
    return NULL;
}

int64_t auth_throttle_check(struct auth_throttle *t, const char *key, int64_t now)
{
    unsigned char id[16];
    throttle_id(t, key, id);
    pthread_mutex_lock(&t->lock);
    struct throttle_slot *s = throttle_find(t, id, now);
    int64_t wait = 0;
    if (s && s->count >= t->max) {
        wait = s->start + t->window - now;
        if (wait < 1)
            wait = 1;
    }
    pthread_mutex_unlock(&t->lock);
    return wait;
}

void auth_throttle_fail(struct auth_throttle *t, const char *key, int64_t now)
{
    unsigned char id[16];
    throttle_id(t, key, id);
    pthread_mutex_lock(&t->lock);
    struct throttle_slot *s = throttle_find(t, id, now);
    if (!s) {
        /* A free or finished slot near home, else the one whose window is oldest. */
        size_t home = throttle_home(t, id);
        struct throttle_slot *oldest = NULL;
        for (size_t i = 0; i < THROTTLE_PROBE; i++) {
            struct throttle_slot *c = &t->slots[(home + i) % t->nslots];
            if (!c->used || now - c->start >= t->window) {
                s = c;
                break;
            }
            if (!oldest || c->start < oldest->start)
                oldest = c;
        }
        if (!s)
            s = oldest;
        memcpy(s->id, id, 16);
        s->start = now;
        s->count = 0;
        s->used = true;
    }
    if (s->count < INT32_MAX)
        s->count++;
    pthread_mutex_unlock(&t->lock);
}

void auth_throttle_clear(struct auth_throttle *t, const char *key)
{
    unsigned char id[16];
    throttle_id(t, key, id);
    pthread_mutex_lock(&t->lock);
    size_t home = throttle_home(t, id);
    for (size_t i = 0; i < THROTTLE_PROBE; i++) {
        struct throttle_slot *s = &t->slots[(home + i) % t->nslots];
        if (s->used && memcmp(s->id, id, 16) == 0)
            s->used = false;
    }
    pthread_mutex_unlock(&t->lock);
}

void auth_throttle_ip_key(const char *remote, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN + 8];
    const char *r = remote ? remote : "?";
    size_t len;
    if (*r == '[') {
        const char *close = strchr(r, ']');
        r++;
        len = close ? (size_t)(close - r) : strlen(r);
    } else {
        const char *colon = strrchr(r, ':');
        /* "1.2.3.4:5678" has one colon; a bare IPv6 address has several */
        len = colon && strchr(r, ':') == colon ? (size_t)(colon - r) : strlen(r);
    }
    if (len >= sizeof host)
        len = sizeof host - 1;
    memcpy(host, r, len);
    host[len] = '\0';
    unsigned char a6[16];
    if (inet_pton(AF_INET6, host, a6) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, sizeof mapped) == 0) {
            char v4[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, a6 + 12, v4, sizeof v4);
            snprintf(out, n, "ip:%s", v4);
            return;
        }
        memset(a6 + 8, 0, 8);
        char net[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, a6, net, sizeof net);
        snprintf(out, n, "ip6:%s/64", net);
        return;
    }
    snprintf(out, n, "ip:%s", host);
}

/* ---- who is calling ---- */

static void copy_col(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* Columns 0..5 of USER_SELECT into u. */
#define AUTH_USER_COLUMNS \
    "u.id, u.name, COALESCE(u.email, ''), u.roles, u.created_at, u.disabled"

static void row_user(struct db_stmt *st, int first, struct user *u)
{
    memset(u, 0, sizeof *u);
    u->id = db_column_int64(st, first);
    copy_col(u->name, sizeof u->name, db_column_text(st, first + 1));
    copy_col(u->email, sizeof u->email, db_column_text(st, first + 2));
    copy_col(u->roles, sizeof u->roles, db_column_text(st, first + 3));
    u->created_at = db_column_int64(st, first + 4);
    u->disabled = db_column_int64(st, first + 5) != 0;
}

static bool method_is_write(const struct http_request *req)
{
    const char *m = req->method_name ? req->method_name : "";
    return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0;
}

static int db_error(struct http_request *req, struct db *db, const char *what)
{
    log_error("http %s: auth: database error while %s: %s", req->remote, what, db_errmsg(db));
    http_response_error(req, 500, "internal", "database error");
    return -EIO;
}

static void touch(struct db *db, const char *sql, int64_t id, int64_t now)
{
    struct db_stmt *st;
    if (db_prepare(db, sql, &st) < 0)
        return;
    db_bind_int64(st, 1, now);
    db_bind_int64(st, 2, id);
    int rc = db_step(st);
    db_finalize(st);
    if (rc < 0) /* a busy database may skip one; the next request tries again */
        log_debug("auth: could not record last use: %s", db_errmsg(db));
}

static int identify_api_key(struct db *db, struct http_request *req, const char *key,
                            struct auth_ctx *out, int64_t now)
{
    size_t pl = strlen(AUTH_API_KEY_PREFIX);
    if (strncmp(key, AUTH_API_KEY_PREFIX, pl) != 0 || !auth_token_shaped(key + pl)) {
        out->bad_api_key = true;
        return 0;
    }
    char hash[AUTH_HASH_HEX + 1];
    auth_token_hash(key, hash);
    struct db_stmt *st;
    if (db_prepare(db,
                   "SELECT k.id, COALESCE(k.last_used, 0), " AUTH_USER_COLUMNS
                   " FROM api_keys k JOIN users u ON u.id = k.user_id"
                   " WHERE k.key_hash = ? AND (k.expires_at IS NULL OR k.expires_at > ?)"
                   " AND u.disabled = 0 AND u.verified = 1",
                   &st) < 0)
        return db_error(req, db, "looking up an API key");
    db_bind_text(st, 1, hash);
    db_bind_int64(st, 2, now);
    int rc = db_step(st);
    int64_t last_used = 0;
    if (rc == DB_ROW) {
        out->api_key_id = db_column_int64(st, 0);
        last_used = db_column_int64(st, 1);
        row_user(st, 2, &out->user);
        out->via = AUTH_VIA_API_KEY;
    }
    db_finalize(st);
    if (rc < 0)
        return db_error(req, db, "looking up an API key");
    if (rc != DB_ROW) {
        out->bad_api_key = true;
        return 0;
    }
    if (now - last_used >= AUTH_TOUCH_INTERVAL)
        touch(db, "UPDATE api_keys SET last_used = ? WHERE id = ?", out->api_key_id, now);
    return 0;
}

/* 1 when token names a live session (out filled), 0 when not, <0 on error. */
static int identify_session(struct db *db, struct http_request *req, const char *token,
                            struct auth_ctx *out, int64_t now)
{
    char hash[AUTH_HASH_HEX + 1];
    auth_token_hash(token, hash);
    struct db_stmt *st;
    if (db_prepare(db,
                   "SELECT s.id, s.csrf_token, s.last_seen, " AUTH_USER_COLUMNS
                   " FROM sessions s JOIN users u ON u.id = s.user_id"
                   " WHERE s.token_hash = ? AND s.expires_at > ?"
                   " AND u.disabled = 0 AND u.verified = 1",
                   &st) < 0)
        return db_error(req, db, "looking up a session");
    db_bind_text(st, 1, hash);
    db_bind_int64(st, 2, now);
    int rc = db_step(st);
    int64_t last_seen = 0;
    if (rc == DB_ROW) {
        out->session_id = db_column_int64(st, 0);
        copy_col(out->csrf_token, sizeof out->csrf_token, db_column_text(st, 1));
        last_seen = db_column_int64(st, 2);
        row_user(st, 3, &out->user);
        out->via = AUTH_VIA_SESSION;
    }
    db_finalize(st);
    if (rc < 0)
        return db_error(req, db, "looking up a session");
    if (rc != DB_ROW)
        return 0;
    if (now - last_seen >= AUTH_TOUCH_INTERVAL)
        touch(db, "UPDATE sessions SET last_seen = ? WHERE id = ?", out->session_id, now);
    return 1;
}

int auth_identify(struct app *app, struct db *db, struct http_request *req, struct auth_ctx *out)
{
    memset(out, 0, sizeof *out);
    out->via = AUTH_GUEST;
    out->write = method_is_write(req);
    out->csrf_ok = true;
    if (sodium_init() < 0) {
        http_response_error(req, 500, "internal", "libsodium failed to initialise");
        return -EIO;
    }
    int64_t now = util_now_unix();

    const char *key = http_request_header(req, AUTH_API_KEY_HEADER);
    if (key)
        return identify_api_key(db, req, key, out, now);

    /*
     * Every hearth_session cookie, in every Cookie header: a sibling
     * subdomain may have planted one of the same name, which must not
     * hide the real one.
     */
    int tried = 0;
    for (int h = 0; h < req->nheaders && tried < 4; h++) {
        if (strcasecmp(req->headers[h].name, "Cookie") != 0)
            continue;
        for (int i = 0; tried < 4; i++) {
            char token[AUTH_TOKEN_LEN + 2];
            int rc = auth_cookie_get(req->headers[h].value, AUTH_SESSION_COOKIE, i, token,
                                     sizeof token);
            if (rc == -ENOENT)
                break;
            if (rc < 0 || !auth_token_shaped(token))
                continue;
            tried++;
            rc = identify_session(db, req, token, out, now);
            sodium_memzero(token, sizeof token);
            if (rc < 0)
                return rc;
            if (rc == 1)
                goto found;
        }
    }
    return 0;

found:
    if (out->write) {
        const char *given = http_request_header(req, AUTH_CSRF_HEADER);
        bool token_ok = auth_csrf_equal(out->csrf_token, given);
        bool origin_ok = auth_origin_allowed(app->cfg->site.public_url,
                                             http_request_header(req, "Origin"),
                                             http_request_header(req, "Host"));
        out->csrf_ok = token_ok && origin_ok;
        if (!out->csrf_ok)
            log_info("http %s: %s %s by '%s' refused: %s", req->remote, req->method_name,
                     req->url ? req->url : "?", out->user.name,
                     !token_ok ? (given ? "wrong CSRF token" : "no CSRF token")
                               : "Origin of another site");
    }
    return 0;
}

/* ---- questions ---- */

bool auth_is_user(const struct auth_ctx *a) { return a && a->via != AUTH_GUEST; }

bool auth_is_admin(const struct auth_ctx *a)
{
    return auth_is_user(a) && account_has_role(a->user.roles, "admin");
}

bool auth_has_role(const struct auth_ctx *a, const char *role)
{
    return auth_is_user(a) && (account_has_role(a->user.roles, role) || auth_is_admin(a));
}

bool auth_can_manage(const struct auth_ctx *a, int64_t owner_id)
{
    return auth_is_user(a) && (a->user.id == owner_id || auth_is_admin(a));
}

/* ---- requirements ---- */

bool auth_require_user(struct http_request *req, const struct auth_ctx *a)
{
    if (a->bad_api_key) {
        http_response_error(req, 401, "invalid_api_key",
                            "the API key is unknown, revoked or expired");
        return false;
    }
    if (!auth_is_user(a)) {
        http_response_error(req, 401, "unauthenticated", "sign in first");
        return false;
    }
    if (a->write && !a->csrf_ok) {
        http_response_error(req, 403, "csrf",
                            "missing or wrong " AUTH_CSRF_HEADER " header (GET /api/v1/me gives "
                            "the token), or a request from another site");
        return false;
    }
    return true;
}

bool auth_require_role(struct http_request *req, const struct auth_ctx *a, const char *role)
{
    if (!auth_require_user(req, a))
        return false;
    if (!auth_has_role(a, role)) {
        char msg[96];
        snprintf(msg, sizeof msg, "this needs the %s role", role);
        http_response_error(req, 403, "forbidden", msg);
        return false;
    }
    return true;
}

bool auth_require_owner(struct http_request *req, const struct auth_ctx *a, int64_t owner_id)
{
    if (!auth_require_user(req, a))
        return false;
    if (!auth_can_manage(a, owner_id)) {
        http_response_error(req, 403, "forbidden", "only the owner or an admin may do this");
        return false;
    }
    return true;
}

bool auth_require_admin(struct http_request *req, const struct auth_ctx *a)
{
    return auth_require_role(req, a, "admin");
}

bool auth_require_session(struct http_request *req, const struct auth_ctx *a)
{
    if (!auth_require_user(req, a))
        return false;
    if (a->via != AUTH_VIA_SESSION) {
        http_response_error(req, 403, "session_required",
                            "an API key cannot do this; sign in with your password");
        return false;
    }
    return true;
}

bool auth_require_same_origin(struct app *app, struct http_request *req)
{
    if (auth_origin_allowed(app->cfg->site.public_url, http_request_header(req, "Origin"),
                            http_request_header(req, "Host")))
        return true;
    log_info("http %s: %s %s refused: Origin of another site", req->remote, req->method_name,
             req->url ? req->url : "?");
    http_response_error(req, 403, "bad_origin", "this request came from another site");
    return false;
}

/* ---- JSON bodies ---- */

static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    char next = ct[n];
    return next == '\0' || next == ';' || next == ' ';
}

json_t *auth_json_body(struct http_request *req, size_t max_bytes)
{
    if (!is_json_type(http_request_header(req, "Content-Type"))) {
        http_response_error(req, 415, "unsupported_media_type",
                            "send the body as JSON with Content-Type: application/json");
        return NULL;
    }
    if (req->body.len > max_bytes) {
        http_response_error(req, 413, "too_large", "the request body is too large");
        return NULL;
    }
    json_error_t jerr;
    json_t *o = req->body.len ? json_loadb(req->body.data, req->body.len,
                                            JSON_REJECT_DUPLICATES, &jerr)
                              : NULL;
    if (!o || !json_is_object(o)) {
        json_decref(o);
        http_response_error(req, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return o;
}
