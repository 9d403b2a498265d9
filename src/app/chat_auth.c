/*
 * Logging in to the chat: the xmpp_hooks.authenticate of the XMPP server,
 * and the chat tokens the web app hands to its own XMPP client.
 *
 * SASL PLAIN carries a name and a secret. The secret is either
 *   - the account's password (argon2id, as the web login checks it; an
 *     account with TOTP on cannot log in that way, since PLAIN has no room
 *     for the code: its owner uses a chat token, which the web login with
 *     TOTP gave), or
 *   - a chat token "v1.<user id>.<expiry, unix ms>.<MAC>", where MAC is
 *     HMAC-SHA256 (base64url) of everything before it under a secret kept in
 *     the settings table (chat_token_secret, 32 random bytes in hex, made on
 *     first use). Tokens are stateless: valid for xmpp.token_lifetime from
 *     issue, for that user only, and dead once the account is disabled.
 *
 * Both paths refuse disabled accounts (-EACCES: SASL account-disabled) and,
 * with site.require_verification, accounts whose e-mail is unconfirmed, as
 * the web login does.
 *
 * Throttling: a valid chat token is checked first and never throttled, so
 * wrong passwords sent by anyone cannot keep the web chat of the account
 * out. Wrong secrets count in a throttle of the chat's own, per client
 * address (an IPv6 /64 as one, auth_throttle_ip_key) and per (address,
 * name): past auth.login_attempts within auth.login_window, passwords from
 * that address (for that name, or any) get temporary-auth-failure until
 * the window closes. Never per name alone: that would let anyone lock a
 * streamer out of their chat.
 *
 * Runs on worker threads: the database and argon2 are blocking.
 */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/accounts.h"
#include "app/app.h"
#include "app/auth.h"
#include "chat/xmpp.h"
#include "core/config.h"
#include "core/log.h"
#include "store/db.h"

#define SECRET_BYTES 32
#define SETTING_KEY "chat_token_secret"
#define TOKEN_PREFIX "v1."
#define THROTTLE_SLOTS 4096
#define MAC_B64 sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES, \
                                          sodium_base64_VARIANT_URLSAFE_NO_PADDING)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char secret[SECRET_BYTES];
static bool secret_loaded;
static struct auth_throttle *throttle;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the secret, making it first if there is none. Under lock. */
static int secret_load_locked(struct db *db)
{
    if (secret_loaded)
        return 0;
    if (sodium_init() < 0)
        return -EIO;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct db_stmt *st;
        int rc = db_prepare(db, "SELECT value FROM settings WHERE key = '" SETTING_KEY "'", &st);
        if (rc < 0)
            return rc;
        rc = db_step(st);
        if (rc == DB_ROW) {
            const char *hex = db_column_text(st, 0);
            size_t n = 0;
            int bad = !hex || sodium_hex2bin(secret, sizeof secret, hex, strlen(hex), NULL, &n,
                                             NULL) != 0 || n != sizeof secret;
            db_finalize(st);
            if (bad) {
                log_error("chat: the setting " SETTING_KEY " is not 64 hex digits");
                return -EINVAL;
            }
            secret_loaded = true;
            return 0;
        }
        db_finalize(st);
        if (rc < 0)
            return rc;
        /* None yet: make one. INSERT OR IGNORE, then read back, so that two
         * processes starting at once agree on the one that got in. */
        unsigned char fresh[SECRET_BYTES];
        char hex[2 * SECRET_BYTES + 1];
        randombytes_buf(fresh, sizeof fresh);
        sodium_bin2hex(hex, sizeof hex, fresh, sizeof fresh);
        sodium_memzero(fresh, sizeof fresh);
        rc = db_prepare(db, "INSERT OR IGNORE INTO settings (key, value) VALUES ('" SETTING_KEY
                            "', ?)",
                        &st);
        if (rc < 0)
            return rc;
        db_bind_text(st, 1, hex);
        rc = db_step(st);
        db_finalize(st);
        sodium_memzero(hex, sizeof hex);
        if (rc < 0)
            return rc;
    }
    return -EIO;
}

static int secret_get(struct db *db, unsigned char out[SECRET_BYTES])
{
    pthread_mutex_lock(&lock);
    int rc = secret_load_locked(db);
    if (rc == 0)
        memcpy(out, secret, SECRET_BYTES);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* The secret without a db when it was loaded already (app_chat_init). */
static int secret_get_app(struct app *app, unsigned char out[SECRET_BYTES])
{
    pthread_mutex_lock(&lock);
    bool have = secret_loaded;
    if (have)
        memcpy(out, secret, SECRET_BYTES);
    pthread_mutex_unlock(&lock);
    if (have)
        return 0;
    struct db *db = db_pool_acquire(app->db);
    if (!db)
        return -EIO;
    int rc = secret_get(db, out);
    db_pool_release(app->db, db);
    return rc;
}

int app_chat_init(struct app *app)
{
    pthread_mutex_lock(&lock);
    if (!throttle) {
        int64_t window = (int64_t)(app->cfg->auth.login_window_ms / 1000);
        throttle = auth_throttle_new(THROTTLE_SLOTS, app->cfg->auth.login_attempts,
                                     window > 0 ? window : 1);
    }
    pthread_mutex_unlock(&lock);
    if (!throttle)
        return -ENOMEM;
    unsigned char tmp[SECRET_BYTES];
    int rc = secret_get_app(app, tmp);
    sodium_memzero(tmp, sizeof tmp);
    return rc;
}

static void mac_of(const unsigned char key[SECRET_BYTES], const char *msg, size_t len,
                   unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
    static const char label[] = "hearth chat token\n";
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, SECRET_BYTES);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, sizeof label - 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, len);
    crypto_auth_hmacsha256_final(&st, mac);
}

int app_chat_token_issue(struct app *app, int64_t user_id, char *out, size_t n)
{
    if (user_id <= 0)
        return -EINVAL;
    unsigned char key[SECRET_BYTES];
    int rc = secret_get_app(app, key);
    if (rc < 0)
        return rc;
    int64_t exp = now_ms() + (int64_t)app->cfg->xmpp.token_lifetime_ms;
    char body[64];
    int blen = snprintf(body, sizeof body, TOKEN_PREFIX "%lld.%lld", (long long)user_id,
                        (long long)exp);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    mac_of(key, body, (size_t)blen, mac);
    sodium_memzero(key, sizeof key);
    char b64[MAC_B64];
    sodium_bin2base64(b64, sizeof b64, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int w = snprintf(out, n, "%s.%s", body, b64);
    if (w < 0 || (size_t)w >= n) {
        if (n)
            out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

/*
 * Check a token's shape, MAC and expiry: 0 with *uid set, -EPERM when it is
 * not a valid token now, other negatives for a failure on our side.
 */
static int token_check(struct db *db, const struct config *cfg, const char *tok, int64_t *uid)
{
    const char *p = tok + strlen(TOKEN_PREFIX);
    char *end;
    long long id = strtoll(p, &end, 10);
    if (end == p || *end != '.' || id <= 0 || p[0] == '+' || p[0] == '-')
        return -EPERM;
    p = end + 1;
    long long exp = strtoll(p, &end, 10);
    if (end == p || *end != '.' || p[0] == '+' || p[0] == '-')
        return -EPERM;
    size_t blen = (size_t)(end - tok);
    const char *b64 = end + 1;
    if (strlen(b64) != MAC_B64 - 1)
        return -EPERM;
    unsigned char given[crypto_auth_hmacsha256_BYTES];
    size_t gl = 0;
    if (sodium_base642bin(given, sizeof given, b64, strlen(b64), NULL, &gl, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        gl != sizeof given)
        return -EPERM;
    unsigned char key[SECRET_BYTES], mac[crypto_auth_hmacsha256_BYTES];
    int rc = secret_get(db, key);
    if (rc < 0)
        return rc;
    mac_of(key, tok, blen, mac);
    sodium_memzero(key, sizeof key);
    if (sodium_memcmp(mac, given, sizeof mac) != 0)
        return -EPERM;
    int64_t now = now_ms();
    /* A token from the future (beyond its lifetime, as issued) is not ours. */
    if (exp <= now || exp > now + (int64_t)cfg->xmpp.token_lifetime_ms + 60000)
        return -EPERM;
    *uid = id;
    return 0;
}

struct acct_row {
    int64_t id;
    char name[ACCOUNT_NAME_MAX + 1];
    char roles[64];
    char hash[256];
    bool disabled, verified, totp;
};

/* By id (name NULL) or by name. 0, -ENOENT, or a db error. */
static int acct_lookup(struct db *db, int64_t id, const char *name, struct acct_row *r)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        name ? "SELECT id, name, roles, password_hash, disabled, verified,"
                               " COALESCE(totp_secret, '') FROM users WHERE name = ?"
                             : "SELECT id, name, roles, password_hash, disabled, verified,"
                               " COALESCE(totp_secret, '') FROM users WHERE id = ?",
                        &st);
    if (rc < 0)
        return rc;
    if (name)
        db_bind_text(st, 1, name);
    else
        db_bind_int64(st, 1, id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        r->id = db_column_int64(st, 0);
        snprintf(r->name, sizeof r->name, "%s", db_column_text(st, 1));
        snprintf(r->roles, sizeof r->roles, "%s", db_column_text(st, 2));
        snprintf(r->hash, sizeof r->hash, "%s", db_column_text(st, 3));
        r->disabled = db_column_int64(st, 4) != 0;
        r->verified = db_column_int64(st, 5) != 0;
        const char *t = db_column_text(st, 6);
        r->totp = t && *t;
    }
    db_finalize(st);
    if (rc < 0)
        return rc;
    return rc == DB_ROW ? 0 : -ENOENT;
}

/* "xmpp-ip:<address key>" and "xmpp-ipu:<address key>:<name, lower case>". */
static void throttle_keys(const char *ip, const char *user, char *ipk, size_t ipn, char *ipu,
                          size_t ipun)
{
    char addr[96];
    auth_throttle_ip_key(ip && *ip ? ip : "?", addr, sizeof addr);
    snprintf(ipk, ipn, "xmpp-%s", addr);
    size_t o = (size_t)snprintf(ipu, ipun, "xmpp-%s:", addr);
    for (size_t i = 0; user[i] && o + 1 < ipun; i++, o++)
        ipu[o] = (char)((user[i] >= 'A' && user[i] <= 'Z') ? user[i] + 32 : user[i]);
    ipu[o < ipun ? o : ipun - 1] = '\0';
}

/* The checks both paths share, and *out. */
static int account_ok(const struct config *cfg, const struct acct_row *r, struct xmpp_account *out)
{
    if (r->disabled)
        return -EACCES;
    if (cfg->site.require_verification && !r->verified)
        return -EACCES;
    memset(out, 0, sizeof *out);
    out->user_id = r->id;
    snprintf(out->name, sizeof out->name, "%s", r->name);
    out->admin = account_has_role(r->roles, "admin");
    return 0;
}

/* A chat token: 0 (*out filled), -EACCES, -ENOENT when secret_in is not a
 * valid token now (it may be a password), other negatives for errors. */
static int token_login(struct app *app, struct db *db, const char *user, const char *secret_in,
                       struct xmpp_account *out)
{
    struct acct_row r = {0};
    if (strncmp(secret_in, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) != 0)
        return -ENOENT;
    int64_t uid = 0;
    int rc = token_check(db, app->cfg, secret_in, &uid);
    if (rc == -EPERM)
        return -ENOENT; /* not a valid token: it may still be a password that starts so */
    if (rc < 0)
        return rc;
    rc = acct_lookup(db, uid, NULL, &r);
    if (rc == -ENOENT)
        return -ENOENT; /* deleted since */
    if (rc < 0)
        return rc;
    if (strcasecmp(r.name, user) != 0) {
        log_info("chat: a token for '%s' was offered as '%s'", r.name, user);
        return -ENOENT;
    }
    return account_ok(app->cfg, &r, out);
}

/* A password. 0, -EPERM, -EACCES or an error. */
static int password_login(struct app *app, struct db *db, const char *user, const char *secret_in,
                          struct xmpp_account *out)
{
    struct acct_row r = {0};
    int rc;
    char err[256];
    struct user u;
    rc = account_authenticate(db, user, secret_in, &u, err, sizeof err);
    if (rc == -EACCES) {
        /* Wrong password, or right password on a disabled account: only
         * the second may say "disabled". */
        if (acct_lookup(db, 0, user, &r) == 0 && r.disabled &&
            account_password_verify(r.hash, secret_in) == 0)
            return -EACCES;
        return -EPERM;
    }
    if (rc < 0) {
        log_error("chat: checking the password of '%s': %s", user, err);
        return rc;
    }
    if ((rc = acct_lookup(db, u.id, NULL, &r)) < 0)
        return rc == -ENOENT ? -EPERM : rc;
    if (r.totp) {
        log_info("chat: '%s' has two-factor login on: a password alone cannot open the chat "
                 "(the web client uses a chat token)",
                 r.name);
        return -EPERM;
    }
    return account_ok(app->cfg, &r, out);
}

int app_chat_authenticate(void *ud, const char *user, const char *secret_in, const char *ip,
                          struct xmpp_account *out)
{
    struct app *app = ud;
    if (!user || !*user || !secret_in || strlen(user) > ACCOUNT_NAME_MAX ||
        strlen(secret_in) > ACCOUNT_PASSWORD_MAX)
        return -EPERM;
    if (!throttle && app_chat_init(app) == -ENOMEM)
        return -ENOMEM;
    struct db *db = db_pool_acquire(app->db);
    if (!db)
        return -EIO;
    /* A valid token first: never throttled (see the top). */
    int rc = token_login(app, db, user, secret_in, out);
    if (rc != -ENOENT) {
        db_pool_release(app->db, db);
        return rc;
    }
    char ipk[128], ipu[128 + ACCOUNT_NAME_MAX];
    throttle_keys(ip, user, ipk, sizeof ipk, ipu, sizeof ipu);
    int64_t now = now_ms() / 1000;
    int64_t wait = auth_throttle_check(throttle, ipk, now);
    if (!wait)
        wait = auth_throttle_check(throttle, ipu, now);
    if (wait) {
        db_pool_release(app->db, db);
        log_info("chat: login for '%s' from %s throttled for %llds", user, ip ? ip : "?",
                 (long long)wait);
        return -EAGAIN;
    }
    rc = password_login(app, db, user, secret_in, out);
    db_pool_release(app->db, db);
    if (rc == -EPERM) {
        auth_throttle_fail(throttle, ipk, now);
        auth_throttle_fail(throttle, ipu, now);
    } else if (rc == 0) {
        auth_throttle_clear(throttle, ipu);
    }
    return rc;
}
