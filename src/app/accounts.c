/*
 * Accounts, topics and channels (see accounts.h for the rules).
 *
 * Everything a person types is checked here before it reaches the
 * database, so that the message can say which rule was broken ("a user named
 * 'alice' already exists") rather than pass on a constraint error. The
 * UNIQUE constraints in the schema stay the last word: two requests racing
 * past the same check still cannot both win.
 *
 * Passwords are hashed with argon2id at libsodium's interactive limits,
 * which is the cost of one login. Logging in with a user name that does not
 * exist verifies against a dummy hash, so the answer takes as long as for a
 * real user and does not tell which names exist.
 *
 * Stream keys are 32 random bytes in base64url (43 characters). The channel
 * row keeps the key (the owner can look at it again) and its SHA-256, which
 * is what a publisher's key is looked up by; the key found is then compared
 * with sodium_memcmp. An index lookup on the raw key would leak, through its
 * timing, how long a prefix of a guessed key is right; a lookup on the hash
 * leaks nothing useful.
 */
#include "app/accounts.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

static const char *const role_names[] = {"admin", "streamer", "recorder", "uploader", "user"};
#define ROLE_COUNT (sizeof role_names / sizeof role_names[0])

/* Paths the web front and the API own at the top level or under /c/. */
static const char *const reserved_slugs[] = {
    "api",   "live",   "watch",    "c",        "u",        "admin",          "static", "assets",
    "healthz", "login", "logout", "register", "settings", "xmpp-websocket", "debug",
};

#define USER_COLUMNS "id, name, COALESCE(email, ''), roles, created_at, disabled"

#define CHANNEL_SELECT                                                                          \
    "SELECT c.id, c.owner_id, u.name, c.slug, c.title, COALESCE(t.name, ''), c.description,"   \
    " c.stream_key, c.record, c.created_at, u.disabled"                                        \
    " FROM channels c JOIN users u ON u.id = c.owner_id LEFT JOIN topics t ON t.id = c.topic_id"

static int db_failed(struct db *db, int rc, char *err, size_t errlen, const char *what)
{
    return util_fail(rc, err, errlen, "database error while %s: %s", what, db_errmsg(db));
}

static int sodium_ready(char *err, size_t errlen)
{
    if (sodium_init() < 0)
        return util_fail(-EIO, err, errlen, "libsodium failed to initialise");
    return 0;
}

/* Copy at most n-1 bytes, cutting only between UTF-8 characters. */
static void copy_text(char *dst, const char *src, size_t n)
{
    if (!src)
        src = "";
    size_t len = strlen(src);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* ---- rules ---- */

int account_name_valid(const char *name, char *err, size_t errlen)
{
    size_t n = name ? strlen(name) : 0;
    bool ok = n >= 1 && n <= ACCOUNT_NAME_MAX && is_alnum(name[0]);
    for (size_t i = 1; ok && i < n; i++)
        ok = is_alnum(name[i]) || name[i] == '_' || name[i] == '.' || name[i] == '-';
    if (!ok)
        return util_fail(-EINVAL, err, errlen,
                    "a user name is 1 to %d characters: letters, digits, '_', '.' and '-', "
                    "starting with a letter or digit",
                    ACCOUNT_NAME_MAX);
    return 0;
}

int account_email_valid(const char *email, char *err, size_t errlen)
{
    size_t n = email ? strlen(email) : 0;
    const char *at = n ? strchr(email, '@') : NULL;
    bool ok = n >= 3 && n <= ACCOUNT_EMAIL_MAX && at && at != email && at[1] &&
              !strchr(at + 1, '@');
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)email[i] > 0x20 && email[i] != 0x7f;
    if (ok)
        ok = util_text_ok(email, NULL);
    if (!ok)
        return util_fail(-EINVAL, err, errlen,
                    "that does not look like an email address (one '@', no spaces, at most %d "
                    "bytes)",
                    ACCOUNT_EMAIL_MAX);
    return 0;
}

static int password_valid(const char *password, char *err, size_t errlen)
{
    size_t n = password ? strlen(password) : 0;
    if (n < ACCOUNT_PASSWORD_MIN || n > ACCOUNT_PASSWORD_MAX)
        return util_fail(-EINVAL, err, errlen, "a password is %d to %d bytes long",
                    ACCOUNT_PASSWORD_MIN, ACCOUNT_PASSWORD_MAX);
    return 0;
}

int account_roles_normalize(const char *roles, char *out, size_t outlen, char *err,
                            size_t errlen)
{
    bool want[ROLE_COUNT] = {false};
    bool any = false;
    const char *p = roles ? roles : "";
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (trimmed > 0) {
            size_t r = 0;
            for (; r < ROLE_COUNT; r++)
                if (strlen(role_names[r]) == trimmed && strncasecmp(p, role_names[r], trimmed) == 0)
                    break;
            if (r == ROLE_COUNT)
                return util_fail(-EINVAL, err, errlen, "unknown role '%.*s' (roles are %s)",
                            (int)(trimmed > 32 ? 32 : trimmed), p, ACCOUNT_ROLES);
            want[r] = true;
            any = true;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (!any)
        return util_fail(-EINVAL, err, errlen, "give at least one role (%s)", ACCOUNT_ROLES);
    size_t n = 0;
    out[0] = '\0';
    for (size_t r = 0; r < ROLE_COUNT; r++) {
        if (!want[r])
            continue;
        int w = snprintf(out + n, outlen - n, "%s%s", n ? "," : "", role_names[r]);
        if (w < 0 || (size_t)w >= outlen - n)
            return util_fail(-ENAMETOOLONG, err, errlen, "role list too long");
        n += (size_t)w;
    }
    return 0;
}

bool account_has_role(const char *roles, const char *role)
{
    size_t rl = strlen(role);
    for (const char *p = roles; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == rl && strncmp(p, role, rl) == 0)
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

int channel_slug_valid(const char *slug, char *err, size_t errlen)
{
    size_t n = slug ? strlen(slug) : 0;
    bool ok = n >= 1 && n <= CHANNEL_SLUG_MAX &&
              ((slug[0] >= 'a' && slug[0] <= 'z') || (slug[0] >= '0' && slug[0] <= '9'));
    for (size_t i = 1; ok && i < n; i++)
        ok = (slug[i] >= 'a' && slug[i] <= 'z') || (slug[i] >= '0' && slug[i] <= '9') ||
             slug[i] == '-';
    if (!ok)
        return util_fail(-EINVAL, err, errlen,
                    "a slug is 1 to %d characters: lowercase letters, digits and '-', starting "
                    "with a letter or digit",
                    CHANNEL_SLUG_MAX);
    return 0;
}

bool channel_slug_reserved(const char *slug)
{
    for (size_t i = 0; i < sizeof reserved_slugs / sizeof reserved_slugs[0]; i++)
        if (strcmp(slug, reserved_slugs[i]) == 0)
            return true;
    return false;
}

/* Lowercase ASCII letters and digits; every other run becomes one '-'. */
static void slug_derive(const char *text, char out[CHANNEL_SLUG_MAX + 1], const char *fallback)
{
    size_t n = 0;
    bool dash = false;
    for (const char *p = text ? text : ""; *p; p++) {
        if (!is_alnum(*p)) {
            dash = true;
            continue;
        }
        size_t need = dash && n > 0 ? 2 : 1;
        if (n + need > CHANNEL_SLUG_MAX)
            break;
        if (need == 2)
            out[n++] = '-';
        out[n++] = lower(*p);
        dash = false;
    }
    out[n] = '\0';
    if (n == 0)
        strcpy(out, fallback);
}

void channel_slug_derive(const char *text, char out[CHANNEL_SLUG_MAX + 1])
{
    slug_derive(text, out, "channel");
}

/* base + "-k", cutting base so that the whole stays within the limit. */
static void slug_with_suffix(const char *base, int k, char out[CHANNEL_SLUG_MAX + 1])
{
    char suffix[16];
    int sl = snprintf(suffix, sizeof suffix, "-%d", k);
    size_t keep = strlen(base);
    if (keep > CHANNEL_SLUG_MAX - (size_t)sl)
        keep = CHANNEL_SLUG_MAX - (size_t)sl;
    while (keep > 1 && base[keep - 1] == '-')
        keep--;
    memcpy(out, base, keep);
    memcpy(out + keep, suffix, (size_t)sl + 1);
}

static int title_valid(const char *title, char *err, size_t errlen)
{
    size_t n = title ? strlen(title) : 0;
    if (n == 0 || n > CHANNEL_TITLE_MAX || !util_text_ok(title, NULL) ||
        strspn(title, " ") == n)
        return util_fail(-EINVAL, err, errlen,
                    "a title is 1 to %d bytes of UTF-8 text without control characters",
                    CHANNEL_TITLE_MAX);
    return 0;
}

/* ---- small query helpers ---- */

/* Run sql with text parameters; *found says whether a row came back. */
static int query_row(struct db *db, const char *sql, const char *a, const char *b, bool *found,
                     char *col0, size_t col0len)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    if (a)
        db_bind_text(st, 1, a);
    if (b)
        db_bind_text(st, 2, b);
    rc = db_step(st);
    if (rc == DB_ROW && col0)
        copy_text(col0, db_column_text(st, 0), col0len);
    db_finalize(st);
    if (rc < 0)
        return rc;
    *found = rc == DB_ROW;
    return 0;
}

static void row_to_user(struct db_stmt *st, struct user *u)
{
    memset(u, 0, sizeof *u);
    u->id = db_column_int64(st, 0);
    copy_text(u->name, db_column_text(st, 1), sizeof u->name);
    copy_text(u->email, db_column_text(st, 2), sizeof u->email);
    copy_text(u->roles, db_column_text(st, 3), sizeof u->roles);
    u->created_at = db_column_int64(st, 4);
    u->disabled = db_column_int64(st, 5) != 0;
}

static void row_to_channel(struct db_stmt *st, struct channel *c)
{
    memset(c, 0, sizeof *c);
    c->id = db_column_int64(st, 0);
    c->owner_id = db_column_int64(st, 1);
    copy_text(c->owner_name, db_column_text(st, 2), sizeof c->owner_name);
    copy_text(c->slug, db_column_text(st, 3), sizeof c->slug);
    copy_text(c->title, db_column_text(st, 4), sizeof c->title);
    copy_text(c->topic, db_column_text(st, 5), sizeof c->topic);
    copy_text(c->description, db_column_text(st, 6), sizeof c->description);
    copy_text(c->stream_key, db_column_text(st, 7), sizeof c->stream_key);
    c->record = db_column_int64(st, 8) != 0;
    c->created_at = db_column_int64(st, 9);
    c->owner_disabled = db_column_int64(st, 10) != 0;
}

/* An UPDATE/DELETE on one named row; -ENOENT when it matched none. */
static int update_named(struct db *db, const char *sql, const char *text, int64_t num,
                        bool use_num, const char *key, const char *what, char *err,
                        size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, what);
    int idx = 1;
    if (text)
        db_bind_text(st, idx++, text);
    if (use_num)
        db_bind_int64(st, idx++, num);
    db_bind_text(st, idx, key);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, what);
    if (db_changes(db) == 0)
        return -ENOENT;
    return 0;
}

/* ---- users ---- */

static int hash_password(const char *password, char out[crypto_pwhash_STRBYTES], char *err,
                         size_t errlen)
{
    if (crypto_pwhash_str_alg(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return util_fail(-ENOMEM, err, errlen, "not enough memory to hash the password");
    return 0;
}

int account_user_add(struct db *db, const char *name, const char *email, const char *roles,
                     const char *password, struct user *out, char *err, size_t errlen)
{
    char norm[64];
    int rc;
    if (email && !*email)
        email = NULL;
    if ((rc = account_name_valid(name, err, errlen)) < 0)
        return rc;
    if (email && (rc = account_email_valid(email, err, errlen)) < 0)
        return rc;
    if ((rc = account_roles_normalize(roles ? roles : "user", norm, sizeof norm, err, errlen)) < 0)
        return rc;
    if ((rc = password_valid(password, err, errlen)) < 0)
        return rc;
    if ((rc = sodium_ready(err, errlen)) < 0)
        return rc;

    /* Checked before hashing, which is the slow part. */
    char existing[ACCOUNT_NAME_MAX + 1];
    bool found;
    rc = query_row(db, "SELECT name FROM users WHERE name = ?", name, NULL, &found, existing,
                   sizeof existing);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking for the user name");
    if (found)
        return util_fail(-EEXIST, err, errlen, "a user named '%s' already exists", existing);
    if (email) {
        rc = query_row(db, "SELECT name FROM users WHERE email = ?", email, NULL, &found, NULL, 0);
        if (rc < 0)
            return db_failed(db, rc, err, errlen, "looking for the email address");
        if (found)
            return util_fail(-EEXIST, err, errlen,
                        "the email address '%s' is already used by another account", email);
    }

    char hash[crypto_pwhash_STRBYTES];
    if ((rc = hash_password(password, hash, err, errlen)) < 0)
        return rc;

    struct db_stmt *st;
    rc = db_prepare(db,
                    "INSERT INTO users (name, email, password_hash, roles, created_at, disabled)"
                    " VALUES (?, ?, ?, ?, ?, 0)",
                    &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "adding the user");
    int64_t now = util_now_unix();
    db_bind_text(st, 1, name);
    db_bind_text(st, 2, email);
    db_bind_text(st, 3, hash);
    db_bind_text(st, 4, norm);
    db_bind_int64(st, 5, now);
    rc = db_step(st);
    db_finalize(st);
    if (rc == DB_ECONSTRAINT) /* someone else took it since we looked */
        return util_fail(-EEXIST, err, errlen, "a user named '%s' or with that email already exists",
                    name);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "adding the user");

    if (out) {
        memset(out, 0, sizeof *out);
        out->id = db_last_insert_id(db);
        copy_text(out->name, name, sizeof out->name);
        copy_text(out->email, email, sizeof out->email);
        copy_text(out->roles, norm, sizeof out->roles);
        out->created_at = now;
        out->disabled = false;
    }
    log_info("accounts: added user '%s' (roles %s)", name, norm);
    return 0;
}

/* The user row, and its password hash when hash is not NULL. */
static int user_lookup(struct db *db, const char *name, struct user *out, char *hash,
                       size_t hashlen, char *err, size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT " USER_COLUMNS ", password_hash FROM users WHERE name = ?", &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the user");
    db_bind_text(st, 1, name ? name : "");
    rc = db_step(st);
    if (rc == DB_ROW) {
        struct user u;
        row_to_user(st, &u);
        if (out)
            *out = u;
        if (hash)
            copy_text(hash, db_column_text(st, 6), hashlen);
    }
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the user");
    if (rc != DB_ROW)
        return util_fail(-ENOENT, err, errlen, "no user named '%s'",
                    name && util_text_ok(name, NULL) ? name : "?");
    return 0;
}

int account_user_find(struct db *db, const char *name, struct user *out, char *err,
                      size_t errlen)
{
    return user_lookup(db, name, out, NULL, 0, err, errlen);
}

int account_user_list(struct db *db, int (*fn)(const struct user *u, void *ud), void *ud,
                      char *err, size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT " USER_COLUMNS " FROM users ORDER BY name", &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing users");
    while ((rc = db_step(st)) == DB_ROW) {
        struct user u;
        row_to_user(st, &u);
        int stop = fn(&u, ud);
        if (stop) {
            db_finalize(st);
            return stop;
        }
    }
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing users");
    return 0;
}

int account_user_set_password(struct db *db, const char *name, const char *password, char *err,
                              size_t errlen)
{
    int rc;
    if ((rc = password_valid(password, err, errlen)) < 0 || (rc = sodium_ready(err, errlen)) < 0)
        return rc;
    char hash[crypto_pwhash_STRBYTES];
    if ((rc = hash_password(password, hash, err, errlen)) < 0)
        return rc;
    rc = update_named(db, "UPDATE users SET password_hash = ? WHERE name = ?", hash, 0, false,
                      name, "setting the password", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no user named '%s'", name);
    return rc;
}

int account_user_set_roles(struct db *db, const char *name, const char *roles, char *err,
                           size_t errlen)
{
    char norm[64];
    int rc = account_roles_normalize(roles, norm, sizeof norm, err, errlen);
    if (rc < 0)
        return rc;
    rc = update_named(db, "UPDATE users SET roles = ? WHERE name = ?", norm, 0, false, name,
                      "setting roles", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no user named '%s'", name);
    return rc;
}

int account_user_set_disabled(struct db *db, const char *name, bool disabled, char *err,
                              size_t errlen)
{
    int rc = update_named(db, "UPDATE users SET disabled = ? WHERE name = ?", NULL, disabled, true,
                          name, "disabling the user", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no user named '%s'", name);
    return rc;
}

int account_user_delete(struct db *db, const char *name, char *err, size_t errlen)
{
    int rc = update_named(db, "DELETE FROM users WHERE name = ?", NULL, 0, false, name,
                          "deleting the user", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no user named '%s'", name);
    if (rc == 0)
        log_info("accounts: deleted user '%s' and their channels", name);
    return rc;
}

int account_password_verify(const char *hash, const char *password)
{
    if (!hash || !password || sodium_init() < 0)
        return -EACCES;
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 ? 0 : -EACCES;
}

static char dummy_hash[crypto_pwhash_STRBYTES];

static void make_dummy_hash(void)
{
    unsigned char junk[16];
    randombytes_buf(junk, sizeof junk);
    char pw[sizeof junk * 2 + 1];
    util_hex(junk, sizeof junk, pw);
    if (crypto_pwhash_str_alg(dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        dummy_hash[0] = '\0';
}

int account_authenticate(struct db *db, const char *name, const char *password,
                         struct user *out, char *err, size_t errlen)
{
    int rc = sodium_ready(err, errlen);
    if (rc < 0)
        return rc;
    char hash[crypto_pwhash_STRBYTES];
    struct user u;
    rc = user_lookup(db, name, &u, hash, sizeof hash, err, errlen);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    if (rc == -ENOENT) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, make_dummy_hash);
        account_password_verify(dummy_hash, password ? password : "");
        return util_fail(-EACCES, err, errlen, "wrong user name or password");
    }
    if (account_password_verify(hash, password ? password : "") < 0)
        return util_fail(-EACCES, err, errlen, "wrong user name or password");
    if (u.disabled)
        return util_fail(-EACCES, err, errlen, "the account '%s' is disabled", u.name);
    if (out)
        *out = u;
    return 0;
}

/* ---- topics ---- */

static int topic_name_valid(const char *name, char *err, size_t errlen);

int topic_add(struct db *db, const char *name, struct topic *out, char *err, size_t errlen)
{
    int rc = topic_name_valid(name, err, errlen);
    if (rc < 0)
        return rc;
    rc = db_begin(db);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "adding the topic");
    bool found;
    char existing[TOPIC_NAME_MAX + 1];
    rc = query_row(db, "SELECT name FROM topics WHERE name = ?", name, NULL, &found, existing,
                   sizeof existing);
    if (rc < 0)
        goto dberr;
    if (found) {
        db_rollback(db);
        return util_fail(-EEXIST, err, errlen, "a topic named '%s' already exists", existing);
    }
    char base[CHANNEL_SLUG_MAX + 1], slug[CHANNEL_SLUG_MAX + 1];
    slug_derive(name, base, "topic");
    strcpy(slug, base);
    for (int k = 2;; k++) {
        if ((rc = query_row(db, "SELECT 1 FROM topics WHERE slug = ?", slug, NULL, &found, NULL,
                            0)) < 0)
            goto dberr;
        if (!found)
            break;
        slug_with_suffix(base, k, slug);
    }
    struct db_stmt *st;
    if ((rc = db_prepare(db, "INSERT INTO topics (name, slug, created_at) VALUES (?, ?, ?)", &st)) <
        0)
        goto dberr;
    int64_t now = util_now_unix();
    db_bind_text(st, 1, name);
    db_bind_text(st, 2, slug);
    db_bind_int64(st, 3, now);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        goto dberr;
    int64_t id = db_last_insert_id(db);
    if ((rc = db_commit(db)) < 0)
        goto dberr;
    if (out) {
        memset(out, 0, sizeof *out);
        out->id = id;
        copy_text(out->name, name, sizeof out->name);
        copy_text(out->slug, slug, sizeof out->slug);
        out->created_at = now;
    }
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "adding the topic");
    db_rollback(db);
    return rc;
}

int topic_list(struct db *db, int (*fn)(const struct topic *t, void *ud), void *ud, char *err,
               size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT id, name, slug, created_at FROM topics ORDER BY name", &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing topics");
    while ((rc = db_step(st)) == DB_ROW) {
        struct topic t;
        memset(&t, 0, sizeof t);
        t.id = db_column_int64(st, 0);
        copy_text(t.name, db_column_text(st, 1), sizeof t.name);
        copy_text(t.slug, db_column_text(st, 2), sizeof t.slug);
        t.created_at = db_column_int64(st, 3);
        int stop = fn(&t, ud);
        if (stop) {
            db_finalize(st);
            return stop;
        }
    }
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing topics");
    return 0;
}

static int topic_name_valid(const char *name, char *err, size_t errlen)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TOPIC_NAME_MAX || !util_text_ok(name, NULL) || strspn(name, " ") == n)
        return util_fail(-EINVAL, err, errlen,
                    "a topic name is 1 to %d bytes of UTF-8 text without control characters",
                    TOPIC_NAME_MAX);
    return 0;
}

int topic_find(struct db *db, const char *slug, struct topic *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT id, name, slug, created_at FROM topics WHERE slug = ?", &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the topic");
    db_bind_text(st, 1, slug ? slug : "");
    rc = db_step(st);
    if (rc == DB_ROW && out) {
        memset(out, 0, sizeof *out);
        out->id = db_column_int64(st, 0);
        copy_text(out->name, db_column_text(st, 1), sizeof out->name);
        copy_text(out->slug, db_column_text(st, 2), sizeof out->slug);
        out->created_at = db_column_int64(st, 3);
    }
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the topic");
    if (rc != DB_ROW)
        return util_fail(-ENOENT, err, errlen, "no topic '%s'",
                    slug && util_text_ok(slug, NULL) ? slug : "?");
    return 0;
}

int topic_rename(struct db *db, const char *slug, const char *name, struct topic *out, char *err,
                 size_t errlen)
{
    int rc = topic_name_valid(name, err, errlen);
    if (rc < 0)
        return rc;
    struct topic t;
    if ((rc = db_begin(db)) < 0)
        return db_failed(db, rc, err, errlen, "renaming the topic");
    if ((rc = topic_find(db, slug, &t, err, errlen)) < 0) {
        db_rollback(db);
        return rc;
    }
    /* Another topic may hold the name; this one may change only its case. */
    struct db_stmt *st;
    if ((rc = db_prepare(db, "SELECT name FROM topics WHERE name = ? AND id != ?", &st)) < 0)
        goto dberr;
    db_bind_text(st, 1, name);
    db_bind_int64(st, 2, t.id);
    char existing[TOPIC_NAME_MAX + 1] = "";
    rc = db_step(st);
    if (rc == DB_ROW)
        copy_text(existing, db_column_text(st, 0), sizeof existing);
    db_finalize(st);
    if (rc < 0)
        goto dberr;
    if (rc == DB_ROW) {
        db_rollback(db);
        return util_fail(-EEXIST, err, errlen, "a topic named '%s' already exists", existing);
    }
    if ((rc = db_prepare(db, "UPDATE topics SET name = ? WHERE id = ?", &st)) < 0)
        goto dberr;
    db_bind_text(st, 1, name);
    db_bind_int64(st, 2, t.id);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0 || (rc = db_commit(db)) < 0)
        goto dberr;
    copy_text(t.name, name, sizeof t.name);
    if (out)
        *out = t;
    log_info("accounts: topic '%s' is now called '%s'", t.slug, name);
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "renaming the topic");
    db_rollback(db);
    return rc;
}

int topic_remove(struct db *db, const char *slug, char *err, size_t errlen)
{
    /* Its channels keep going without a topic (ON DELETE SET NULL). */
    int rc = update_named(db, "DELETE FROM topics WHERE slug = ?", NULL, 0, false,
                          slug ? slug : "", "removing the topic", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no topic '%s'",
                    slug && util_text_ok(slug, NULL) ? slug : "?");
    if (rc == 0)
        log_info("accounts: removed topic '%s'", slug);
    return rc;
}

/* ---- channels ---- */

static void new_stream_key(char key[CHANNEL_STREAM_KEY_LEN + 1],
                           char hash[crypto_hash_sha256_BYTES * 2 + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(key, CHANNEL_STREAM_KEY_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
    util_hex(h, sizeof h, hash);
}

static int channel_select_one(struct db *db, const char *where, const char *param,
                              struct channel *out)
{
    char sql[sizeof CHANNEL_SELECT + 64];
    snprintf(sql, sizeof sql, "%s WHERE %s", CHANNEL_SELECT, where);
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    db_bind_text(st, 1, param);
    rc = db_step(st);
    if (rc == DB_ROW && out)
        row_to_channel(st, out);
    db_finalize(st);
    if (rc < 0)
        return rc;
    return rc == DB_ROW ? 0 : -ENOENT;
}

int channel_add(struct db *db, const char *owner_name, const char *title, const char *slug,
                const char *topic, struct channel *out, char *err, size_t errlen)
{
    int rc;
    if (slug && !*slug)
        slug = NULL;
    if (topic && !*topic)
        topic = NULL;
    if ((rc = title_valid(title, err, errlen)) < 0)
        return rc;
    if (slug) {
        if ((rc = channel_slug_valid(slug, err, errlen)) < 0)
            return rc;
        if (channel_slug_reserved(slug))
            return util_fail(-EINVAL, err, errlen, "the slug '%s' is reserved; pick another", slug);
    }
    if ((rc = sodium_ready(err, errlen)) < 0)
        return rc;

    if ((rc = db_begin(db)) < 0)
        return db_failed(db, rc, err, errlen, "adding the channel");
    struct db_stmt *st = NULL;
    struct user owner;
    rc = user_lookup(db, owner_name, &owner, NULL, 0, err, errlen);
    if (rc < 0) {
        db_rollback(db);
        return rc;
    }

    int64_t topic_id = 0;
    if (topic) {
        if ((rc = db_prepare(db, "SELECT id FROM topics WHERE name = ? OR slug = ?", &st)) < 0)
            goto dberr;
        db_bind_text(st, 1, topic);
        db_bind_text(st, 2, topic);
        rc = db_step(st);
        if (rc == DB_ROW)
            topic_id = db_column_int64(st, 0);
        db_finalize(st);
        if (rc < 0)
            goto dberr;
        if (rc != DB_ROW) {
            db_rollback(db);
            return util_fail(-ENOENT, err, errlen, "no topic named '%s'; an admin adds topics first",
                        util_text_ok(topic, NULL) ? topic : "?");
        }
    }

    char chosen[CHANNEL_SLUG_MAX + 1];
    bool taken;
    if (slug) {
        if ((rc = query_row(db, "SELECT 1 FROM channels WHERE slug = ?", slug, NULL, &taken, NULL,
                            0)) < 0)
            goto dberr;
        if (taken) {
            db_rollback(db);
            return util_fail(-EEXIST, err, errlen, "the slug '%s' is already taken", slug);
        }
        strcpy(chosen, slug);
    } else {
        char base[CHANNEL_SLUG_MAX + 1];
        channel_slug_derive(title, base);
        strcpy(chosen, base);
        for (int k = 2;; k++) {
            taken = channel_slug_reserved(chosen);
            if (!taken &&
                (rc = query_row(db, "SELECT 1 FROM channels WHERE slug = ?", chosen, NULL, &taken,
                                NULL, 0)) < 0)
                goto dberr;
            if (!taken)
                break;
            slug_with_suffix(base, k, chosen);
        }
    }

    char key[CHANNEL_STREAM_KEY_LEN + 1], key_hash[crypto_hash_sha256_BYTES * 2 + 1];
    new_stream_key(key, key_hash);
    if ((rc = db_prepare(db,
                         "INSERT INTO channels (owner_id, slug, title, topic_id, description,"
                         " stream_key, stream_key_hash, record, created_at)"
                         " VALUES (?, ?, ?, ?, '', ?, ?, 1, ?)",
                         &st)) < 0)
        goto dberr;
    db_bind_int64(st, 1, owner.id);
    db_bind_text(st, 2, chosen);
    db_bind_text(st, 3, title);
    if (topic_id)
        db_bind_int64(st, 4, topic_id);
    else
        db_bind_null(st, 4);
    db_bind_text(st, 5, key);
    db_bind_text(st, 6, key_hash);
    db_bind_int64(st, 7, util_now_unix());
    rc = db_step(st);
    db_finalize(st);
    sodium_memzero(key, sizeof key);
    if (rc < 0)
        goto dberr;
    if ((rc = channel_select_one(db, "c.slug = ?", chosen, out)) < 0)
        goto dberr;
    if ((rc = db_commit(db)) < 0)
        goto dberr;
    log_info("accounts: user '%s' added channel '%s'", owner.name, chosen);
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "adding the channel");
    db_rollback(db);
    return rc;
}

int channel_find_by_slug(struct db *db, const char *slug, struct channel *out, char *err,
                         size_t errlen)
{
    int rc = channel_select_one(db, "c.slug = ?", slug ? slug : "", out);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no channel '%s'", slug && util_text_ok(slug, NULL) ? slug : "?");
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the channel");
    return 0;
}

int channel_list(struct db *db, const char *owner_name,
                 int (*fn)(const struct channel *c, void *ud), void *ud, char *err,
                 size_t errlen)
{
    int rc;
    if (owner_name && (rc = account_user_find(db, owner_name, NULL, err, errlen)) < 0)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    owner_name ? CHANNEL_SELECT " WHERE u.name = ? ORDER BY c.slug"
                               : CHANNEL_SELECT " ORDER BY c.slug",
                    &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing channels");
    if (owner_name)
        db_bind_text(st, 1, owner_name);
    /* Heap, not stack: a channel carries a 2 KB description. */
    struct channel *c = malloc(sizeof *c);
    if (!c) {
        db_finalize(st);
        return util_fail(-ENOMEM, err, errlen, "out of memory listing channels");
    }
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW) {
        row_to_channel(st, c);
        stop = fn(c, ud);
    }
    free(c);
    db_finalize(st);
    if (stop)
        return stop;
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing channels");
    return 0;
}

int channel_key_reset(struct db *db, const char *slug, struct channel *out, char *err,
                      size_t errlen)
{
    int rc = sodium_ready(err, errlen);
    if (rc < 0)
        return rc;
    char key[CHANNEL_STREAM_KEY_LEN + 1], key_hash[crypto_hash_sha256_BYTES * 2 + 1];
    new_stream_key(key, key_hash);
    struct db_stmt *st;
    rc = db_prepare(db, "UPDATE channels SET stream_key = ?, stream_key_hash = ? WHERE slug = ?",
                    &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "resetting the stream key");
    db_bind_text(st, 1, key);
    db_bind_text(st, 2, key_hash);
    db_bind_text(st, 3, slug ? slug : "");
    rc = db_step(st);
    db_finalize(st);
    sodium_memzero(key, sizeof key);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "resetting the stream key");
    if (db_changes(db) == 0)
        return util_fail(-ENOENT, err, errlen, "no channel '%s'", slug && util_text_ok(slug, NULL) ? slug : "?");
    log_info("accounts: stream key of channel '%s' was reset", slug);
    return out ? channel_find_by_slug(db, slug, out, err, errlen) : 0;
}

int channel_find_by_stream_key(struct db *db, const char *key, struct channel *out, char *err,
                               size_t errlen)
{
    /* The key never goes into a message or a log line. */
    size_t n = key ? strlen(key) : 0;
    bool shaped = n == CHANNEL_STREAM_KEY_LEN;
    for (size_t i = 0; shaped && i < n; i++)
        shaped = is_alnum(key[i]) || key[i] == '-' || key[i] == '_';
    if (!shaped)
        return util_fail(-ENOENT, err, errlen, "unknown stream key");
    int rc = sodium_ready(err, errlen);
    if (rc < 0)
        return rc;
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[sizeof h * 2 + 1];
    crypto_hash_sha256(h, (const unsigned char *)key, n);
    util_hex(h, sizeof h, hex);
    struct channel *c = malloc(sizeof *c);
    if (!c)
        return util_fail(-ENOMEM, err, errlen, "out of memory");
    rc = channel_select_one(db, "c.stream_key_hash = ?", hex, c);
    if (rc == 0 && (strlen(c->stream_key) != n || sodium_memcmp(c->stream_key, key, n) != 0))
        rc = -ENOENT;
    if (rc == 0 && out)
        *out = *c;
    sodium_memzero(c->stream_key, sizeof c->stream_key);
    free(c);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "unknown stream key");
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the stream key");
    return 0;
}

int channel_delete(struct db *db, const char *slug, char *err, size_t errlen)
{
    int rc = update_named(db, "DELETE FROM channels WHERE slug = ?", NULL, 0, false,
                          slug ? slug : "", "deleting the channel", err, errlen);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no channel '%s'", slug && util_text_ok(slug, NULL) ? slug : "?");
    if (rc == 0)
        log_info("accounts: deleted channel '%s'", slug);
    return rc;
}

/* ---- URLs and JSON ---- */

int channel_rtmp_url(const char *public_url, const char *rtmp_listen, char *out, size_t outlen)
{
    const char *p = public_url ? strstr(public_url, "://") : NULL;
    if (!p)
        return -EINVAL;
    p += 3;
    size_t authority = strcspn(p, "/?#");
    const char *at = memrchr(p, '@', authority);
    if (at) {
        authority -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    size_t hostlen;
    if (*p == '[') {
        const char *close = memchr(p, ']', authority);
        if (!close)
            return -EINVAL;
        hostlen = (size_t)(close - p) + 1; /* an IPv6 literal keeps its brackets */
    } else {
        const char *colon = memchr(p, ':', authority);
        hostlen = colon ? (size_t)(colon - p) : authority;
    }
    if (hostlen == 0)
        return -EINVAL;
    long port = 1935;
    const char *c = rtmp_listen ? strrchr(rtmp_listen, ':') : NULL;
    if (c && c[1]) {
        char *end;
        long v = strtol(c + 1, &end, 10);
        if (*end == '\0' && v > 0 && v <= 65535)
            port = v;
    }
    char portpart[16] = "";
    if (port != 1935)
        snprintf(portpart, sizeof portpart, ":%ld", port);
    int w = snprintf(out, outlen, "rtmp://%.*s%s/live", (int)hostlen, p, portpart);
    return w < 0 || (size_t)w >= outlen ? -ENAMETOOLONG : 0;
}

/* json_string refuses invalid UTF-8; such a value becomes null, not a hole. */
static void set_str(json_t *o, const char *key, const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    json_object_set_new(o, key, v ? v : json_null());
}

json_t *user_to_json(const struct user *u)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer((json_int_t)u->id));
    set_str(o, "name", u->name);
    set_str(o, "email", u->email[0] ? u->email : NULL);
    json_t *roles = json_array();
    for (const char *p = u->roles; roles && *p;) {
        size_t len = strcspn(p, ",");
        if (len)
            json_array_append_new(roles, json_stringn(p, len));
        p += len;
        if (*p == ',')
            p++;
    }
    json_object_set_new(o, "roles", roles ? roles : json_null());
    json_object_set_new(o, "created_at", json_integer((json_int_t)u->created_at));
    json_object_set_new(o, "disabled", json_boolean(u->disabled));
    return o;
}

json_t *channel_to_json(const struct channel *c, const char *public_url, const char *rtmp_listen,
                        bool with_key)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer((json_int_t)c->id));
    set_str(o, "slug", c->slug);
    set_str(o, "title", c->title);
    set_str(o, "owner", c->owner_name);
    set_str(o, "topic", c->topic[0] ? c->topic : NULL);
    set_str(o, "description", c->description);
    json_object_set_new(o, "record", json_boolean(c->record));
    json_object_set_new(o, "created_at", json_integer((json_int_t)c->created_at));
    json_object_set_new(o, "owner_disabled", json_boolean(c->owner_disabled));
    if (with_key)
        set_str(o, "stream_key", c->stream_key);
    if (public_url) {
        char url[1024];
        if (channel_rtmp_url(public_url, rtmp_listen, url, sizeof url) == 0)
            set_str(o, "rtmp_url", url);
        size_t base = strlen(public_url);
        while (base > 0 && public_url[base - 1] == '/')
            base--;
        snprintf(url, sizeof url, "%.*s/live/%s/master.m3u8", (int)base, public_url, c->slug);
        set_str(o, "hls_url", url);
        snprintf(url, sizeof url, "%.*s/c/%s", (int)base, public_url, c->slug);
        set_str(o, "watch_url", url);
    }
    return o;
}
