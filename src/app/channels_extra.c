/*
 * Channels beyond accounts.c (see channels_extra.h): the columns of
 * migration 0003 and the tables around them.
 *
 * Text a person types is checked here as accounts.c checks it (valid UTF-8,
 * no control characters; a description may also hold newlines and tabs,
 * since it is Markdown). The server never turns any of it into HTML: it goes
 * out as JSON strings, and the front end renders the Markdown without raw
 * HTML.
 *
 * Invite codes are 128 random bits; the row keeps their SHA-256 (a plain
 * hash is enough for a random secret, as for session tokens). Checking a
 * code compares hashes with sodium_memcmp.
 */
#include "app/channels_extra.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

#define NOTIFY_QUIET_S 600                 /* one 'live' notification per channel per 10 min */
#define NOTIFY_KEEP_S (90 * 24 * 3600)     /* read notifications older than this are purged */

static int db_failed(struct db *db, int rc, char *err, size_t errlen, const char *what)
{
    return util_fail(rc < 0 ? rc : DB_EERROR, err, errlen, "database error while %s: %s", what,
                db_errmsg(db));
}

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

static const char *printable(const char *s) { return s && util_text_ok(s, NULL) ? s : "?"; }

int channel_title_valid(const char *title, char *err, size_t errlen)
{
    size_t n = title ? strlen(title) : 0;
    if (n == 0 || n > CHANNEL_TITLE_MAX || !util_text_ok(title, NULL) || strspn(title, " ") == n)
        return util_fail(-EINVAL, err, errlen,
                    "a title is 1 to %d bytes of UTF-8 text without control characters",
                    CHANNEL_TITLE_MAX);
    return 0;
}

int channel_description_valid(const char *d, char *err, size_t errlen)
{
    size_t n = d ? strlen(d) : 0;
    if (!d || n > CHANNEL_DESCRIPTION_MAX || !util_text_ok(d, "\n\r\t"))
        return util_fail(-EINVAL, err, errlen,
                    "a description is at most %d bytes of UTF-8 text (Markdown; newlines and "
                    "tabs are fine, other control characters are not)",
                    CHANNEL_DESCRIPTION_MAX);
    return 0;
}

const char *channel_ext_live_title(const struct channel_ext *c)
{
    return c->live_title[0] ? c->live_title : c->c.title;
}

/* ---- reading channels ---- */

#define EXT_SELECT                                                                               \
    "SELECT c.id, c.owner_id, u.name, c.slug, c.title, COALESCE(t.name, ''), c.description,"    \
    " c.stream_key, c.record, c.created_at, u.disabled,"                                        \
    " COALESCE(t.slug, ''), COALESCE(c.live_title, ''), c.chat_enabled, c.protected,"           \
    " COALESCE(c.invite_code_hash, ''), c.access_gen, COALESCE(c.avatar_path, ''),"             \
    " COALESCE(c.banner_path, ''),"                                                              \
    " (SELECT COUNT(*) FROM follows f WHERE f.channel_id = c.id),"                              \
    " COALESCE((SELECT MAX(s.started_at) FROM streams s WHERE s.channel_id = c.id), 0)"         \
    " FROM channels c JOIN users u ON u.id = c.owner_id LEFT JOIN topics t ON t.id = c.topic_id"

static void row_to_ext(struct db_stmt *st, struct channel_ext *e)
{
    memset(e, 0, sizeof *e);
    struct channel *c = &e->c;
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
    copy_text(e->topic_slug, db_column_text(st, 11), sizeof e->topic_slug);
    copy_text(e->live_title, db_column_text(st, 12), sizeof e->live_title);
    e->chat_enabled = db_column_int64(st, 13) != 0;
    e->is_protected = db_column_int64(st, 14) != 0;
    copy_text(e->invite_code_hash, db_column_text(st, 15), sizeof e->invite_code_hash);
    e->access_gen = db_column_int64(st, 16);
    copy_text(e->avatar_path, db_column_text(st, 17), sizeof e->avatar_path);
    copy_text(e->banner_path, db_column_text(st, 18), sizeof e->banner_path);
    e->followers = db_column_int64(st, 19);
    e->last_live_at = db_column_int64(st, 20);
}

static int ext_select_one(struct db *db, const char *where, const char *text, int64_t num,
                          struct channel_ext *out)
{
    char sql[sizeof EXT_SELECT + 64];
    snprintf(sql, sizeof sql, "%s WHERE %s", EXT_SELECT, where);
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    if (text)
        db_bind_text(st, 1, text);
    else
        db_bind_int64(st, 1, num);
    rc = db_step(st);
    if (rc == DB_ROW && out)
        row_to_ext(st, out);
    db_finalize(st);
    if (rc < 0)
        return rc;
    return rc == DB_ROW ? 0 : -ENOENT;
}

int channel_ext_find(struct db *db, const char *slug, struct channel_ext *out, char *err,
                     size_t errlen)
{
    int rc = ext_select_one(db, "c.slug = ?", slug ? slug : "", 0, out);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no channel '%s'", printable(slug));
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the channel");
    return 0;
}

int channel_ext_find_id(struct db *db, int64_t id, struct channel_ext *out, char *err,
                        size_t errlen)
{
    int rc = ext_select_one(db, "c.id = ?", NULL, id, out);
    if (rc == -ENOENT)
        return util_fail(rc, err, errlen, "no channel with id %lld", (long long)id);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "looking up the channel");
    return 0;
}

/* '%' + pattern with LIKE's wildcards escaped + '%'. */
static char *like_pattern(const char *q)
{
    size_t n = strlen(q);
    char *p = malloc(2 * n + 3);
    if (!p)
        return NULL;
    size_t k = 0;
    p[k++] = '%';
    for (size_t i = 0; i < n; i++) {
        if (q[i] == '%' || q[i] == '_' || q[i] == '\\')
            p[k++] = '\\';
        p[k++] = q[i];
    }
    p[k++] = '%';
    p[k] = '\0';
    return p;
}

int channel_ext_list(struct db *db, const struct channel_query *q,
                     int (*fn)(const struct channel_ext *c, void *ud), void *ud, char *err,
                     size_t errlen)
{
    char sql[2048];
    size_t n = (size_t)snprintf(sql, sizeof sql, "%s WHERE 1 = 1", EXT_SELECT);
#define ADD(s) (n += (size_t)snprintf(sql + n, sizeof sql - n, "%s", (s)))
    if (q->topic && *q->topic)
        ADD(" AND (t.slug = ? OR t.name = ?)");
    if (q->q && *q->q)
        ADD(" AND (c.title LIKE ? ESCAPE '\\' OR COALESCE(c.live_title, '') LIKE ? ESCAPE '\\'"
            " OR c.slug LIKE ? ESCAPE '\\' OR u.name LIKE ? ESCAPE '\\')");
    if (q->owner && *q->owner)
        ADD(" AND u.name = ?");
    if (q->followed_by)
        ADD(" AND EXISTS (SELECT 1 FROM follows fb WHERE fb.channel_id = c.id AND fb.user_id = ?)");
    if (!q->viewer_admin) {
        if (q->viewer_id)
            ADD(" AND (c.protected = 0 OR c.owner_id = ? OR EXISTS (SELECT 1 FROM channel_invites i"
                " WHERE i.channel_id = c.id AND i.user_id = ?))");
        else
            ADD(" AND c.protected = 0");
    }
    switch (q->sort) {
    case CHANNEL_SORT_RECENT:
        ADD(" ORDER BY 21 DESC, c.created_at DESC, c.slug");
        break;
    case CHANNEL_SORT_NEW:
        ADD(" ORDER BY c.created_at DESC, c.slug");
        break;
    default:
        ADD(" ORDER BY c.slug");
    }
    ADD(" LIMIT ? OFFSET ?");
#undef ADD
    if (n >= sizeof sql)
        return util_fail(-ENOMEM, err, errlen, "internal error: query too long");

    char *pat = q->q && *q->q ? like_pattern(q->q) : NULL;
    if (q->q && *q->q && !pat)
        return util_fail(-ENOMEM, err, errlen, "out of memory");
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0) {
        free(pat);
        return db_failed(db, rc, err, errlen, "listing channels");
    }
    int i = 1;
    if (q->topic && *q->topic) {
        db_bind_text(st, i++, q->topic);
        db_bind_text(st, i++, q->topic);
    }
    if (pat)
        for (int k = 0; k < 4; k++)
            db_bind_text(st, i++, pat);
    if (q->owner && *q->owner)
        db_bind_text(st, i++, q->owner);
    if (q->followed_by)
        db_bind_int64(st, i++, q->followed_by);
    if (!q->viewer_admin && q->viewer_id) {
        db_bind_int64(st, i++, q->viewer_id);
        db_bind_int64(st, i++, q->viewer_id);
    }
    db_bind_int64(st, i++, q->limit > 0 ? q->limit : 50);
    db_bind_int64(st, i++, q->offset > 0 ? q->offset : 0);

    struct channel_ext *c = malloc(sizeof *c);
    if (!c) {
        db_finalize(st);
        free(pat);
        return util_fail(-ENOMEM, err, errlen, "out of memory listing channels");
    }
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW) {
        row_to_ext(st, c);
        stop = fn(c, ud);
    }
    free(c);
    free(pat);
    db_finalize(st);
    if (stop)
        return stop;
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing channels");
    return 0;
}

int channel_protected_foreach(struct db *db,
                              int (*fn)(const char *slug, int64_t id, int64_t access_gen,
                                        const char *invite_hash, void *ud),
                              void *ud)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT slug, id, access_gen, COALESCE(invite_code_hash, '')"
                        " FROM channels WHERE protected = 1",
                        &st);
    if (rc < 0)
        return rc;
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW)
        stop = fn(db_column_text(st, 0), db_column_int64(st, 1), db_column_int64(st, 2),
                  db_column_text(st, 3), ud);
    db_finalize(st);
    if (stop)
        return stop;
    return rc < 0 ? rc : 0;
}

/* ---- edits ---- */

static int exec_bound(struct db *db, const char *sql, int nint, const int64_t *ints)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return rc;
    for (int i = 0; i < nint; i++)
        db_bind_int64(st, i + 1, ints[i]);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

int channel_update(struct db *db, const char *slug, const struct channel_patch *p,
                   struct channel_ext *out, char *err, size_t errlen)
{
    int rc;
    if (p->title && (rc = channel_title_valid(p->title, err, errlen)) < 0)
        return rc;
    if (p->description && (rc = channel_description_valid(p->description, err, errlen)) < 0)
        return rc;
    const char *live_title = p->live_title_set && p->live_title && *p->live_title ? p->live_title : NULL;
    if (live_title && (rc = channel_title_valid(live_title, err, errlen)) < 0)
        return util_fail(rc, err, errlen,
                    "a live title is 1 to %d bytes of UTF-8 text without control characters",
                    CHANNEL_TITLE_MAX);
    const char *topic = p->topic_set && p->topic && *p->topic ? p->topic : NULL;

    struct channel_ext *cur = malloc(sizeof *cur);
    if (!cur)
        return util_fail(-ENOMEM, err, errlen, "out of memory");
    if ((rc = db_begin(db)) < 0) {
        free(cur);
        return db_failed(db, rc, err, errlen, "updating the channel");
    }
    if ((rc = channel_ext_find(db, slug, cur, err, errlen)) < 0)
        goto out;

    int64_t topic_id = 0;
    struct db_stmt *st;
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
            rc = util_fail(-EINVAL, err, errlen, "no topic named '%s'; an admin adds topics first",
                      printable(topic));
            goto out;
        }
    }

    /* One statement per changed column keeps the SQL plain and the binding obvious. */
    if (p->title) {
        if ((rc = db_prepare(db, "UPDATE channels SET title = ? WHERE id = ?", &st)) < 0)
            goto dberr;
        db_bind_text(st, 1, p->title);
        db_bind_int64(st, 2, cur->c.id);
        rc = db_step(st);
        db_finalize(st);
        if (rc < 0)
            goto dberr;
    }
    if (p->description) {
        if ((rc = db_prepare(db, "UPDATE channels SET description = ? WHERE id = ?", &st)) < 0)
            goto dberr;
        db_bind_text(st, 1, p->description);
        db_bind_int64(st, 2, cur->c.id);
        rc = db_step(st);
        db_finalize(st);
        if (rc < 0)
            goto dberr;
    }
    if (p->live_title_set) {
        if ((rc = db_prepare(db, "UPDATE channels SET live_title = ? WHERE id = ?", &st)) < 0)
            goto dberr;
        db_bind_text(st, 1, live_title);
        db_bind_int64(st, 2, cur->c.id);
        rc = db_step(st);
        db_finalize(st);
        if (rc < 0)
            goto dberr;
    }
    if (p->topic_set) {
        if ((rc = db_prepare(db, "UPDATE channels SET topic_id = ? WHERE id = ?", &st)) < 0)
            goto dberr;
        if (topic_id)
            db_bind_int64(st, 1, topic_id);
        else
            db_bind_null(st, 1);
        db_bind_int64(st, 2, cur->c.id);
        rc = db_step(st);
        db_finalize(st);
        if (rc < 0)
            goto dberr;
    }
    if (p->record >= 0 &&
        (rc = exec_bound(db, "UPDATE channels SET record = ? WHERE id = ?", 2,
                         (int64_t[]){p->record != 0, cur->c.id})) < 0)
        goto dberr;
    if (p->chat_enabled >= 0 &&
        (rc = exec_bound(db, "UPDATE channels SET chat_enabled = ? WHERE id = ?", 2,
                         (int64_t[]){p->chat_enabled != 0, cur->c.id})) < 0)
        goto dberr;
    if (p->is_protected >= 0 && (p->is_protected != 0) != cur->is_protected) {
        /* Tokens signed while it was protected before must not come back to life. */
        if ((rc = exec_bound(db,
                             "UPDATE channels SET protected = ?, access_gen = access_gen + 1"
                             " WHERE id = ?",
                             2, (int64_t[]){p->is_protected != 0, cur->c.id})) < 0)
            goto dberr;
    }
    if (out && (rc = channel_ext_find_id(db, cur->c.id, out, err, errlen)) < 0)
        goto out;
    if ((rc = db_commit(db)) < 0)
        goto dberr;
    free(cur);
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "updating the channel");
out:
    db_rollback(db);
    free(cur);
    return rc;
}

int channel_set_image(struct db *db, int64_t channel_id, bool banner, const char *relpath,
                      char old[CHANNEL_IMAGE_PATH_MAX], char *err, size_t errlen)
{
    old[0] = '\0';
    int rc = db_begin(db);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "setting the image");
    struct db_stmt *st;
    const char *sel = banner ? "SELECT COALESCE(banner_path, '') FROM channels WHERE id = ?"
                             : "SELECT COALESCE(avatar_path, '') FROM channels WHERE id = ?";
    const char *upd = banner ? "UPDATE channels SET banner_path = ? WHERE id = ?"
                             : "UPDATE channels SET avatar_path = ? WHERE id = ?";
    if ((rc = db_prepare(db, sel, &st)) < 0)
        goto dberr;
    db_bind_int64(st, 1, channel_id);
    rc = db_step(st);
    if (rc == DB_ROW)
        copy_text(old, db_column_text(st, 0), CHANNEL_IMAGE_PATH_MAX);
    db_finalize(st);
    if (rc < 0)
        goto dberr;
    if (rc != DB_ROW) {
        db_rollback(db);
        return util_fail(-ENOENT, err, errlen, "no channel with id %lld", (long long)channel_id);
    }
    if ((rc = db_prepare(db, upd, &st)) < 0)
        goto dberr;
    db_bind_text(st, 1, relpath);
    db_bind_int64(st, 2, channel_id);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        goto dberr;
    if ((rc = db_commit(db)) < 0)
        goto dberr;
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "setting the image");
    db_rollback(db);
    return rc;
}

/* ---- protection ---- */

void channel_invite_code_hash(const char *code, char out[CHANNEL_HASH_HEX + 1])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)code, strlen(code));
    util_hex(h, sizeof h, out);
}

bool channel_invite_code_matches(const char *hash_hex, const char *code)
{
    if (!hash_hex || strlen(hash_hex) != CHANNEL_HASH_HEX || !code || !*code ||
        strlen(code) > 256)
        return false;
    char h[CHANNEL_HASH_HEX + 1];
    channel_invite_code_hash(code, h);
    return sodium_memcmp(h, hash_hex, CHANNEL_HASH_HEX) == 0;
}

static int set_invite_hash(struct db *db, int64_t channel_id, const char *hash, char *err,
                           size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "UPDATE channels SET invite_code_hash = ?, access_gen = access_gen + 1"
                        " WHERE id = ?",
                        &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "setting the invite code");
    db_bind_text(st, 1, hash);
    db_bind_int64(st, 2, channel_id);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "setting the invite code");
    if (db_changes(db) == 0)
        return util_fail(-ENOENT, err, errlen, "no channel with id %lld", (long long)channel_id);
    return 0;
}

int channel_invite_code_new(struct db *db, int64_t channel_id,
                            char code[CHANNEL_INVITE_CODE_LEN + 1], char *err, size_t errlen)
{
    if (sodium_init() < 0)
        return util_fail(-EIO, err, errlen, "libsodium failed to initialise");
    unsigned char raw[16];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(code, CHANNEL_INVITE_CODE_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char hash[CHANNEL_HASH_HEX + 1];
    channel_invite_code_hash(code, hash);
    return set_invite_hash(db, channel_id, hash, err, errlen);
}

int channel_invite_code_clear(struct db *db, int64_t channel_id, char *err, size_t errlen)
{
    return set_invite_hash(db, channel_id, NULL, err, errlen);
}

static int user_id_by_name(struct db *db, const char *name, struct user *out, char *err,
                           size_t errlen)
{
    return account_user_find(db, name, out, err, errlen);
}

int channel_invite_add(struct db *db, int64_t channel_id, const char *user_name,
                       struct user *out, char *err, size_t errlen)
{
    struct user u;
    int rc = user_id_by_name(db, user_name, &u, err, errlen);
    if (rc < 0)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "INSERT INTO channel_invites (channel_id, user_id, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (channel_id, user_id) DO NOTHING",
                    &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "inviting the user");
    db_bind_int64(st, 1, channel_id);
    db_bind_int64(st, 2, u.id);
    db_bind_int64(st, 3, util_now_unix());
    rc = db_step(st);
    db_finalize(st);
    if (rc == DB_ECONSTRAINT)
        return util_fail(-ENOENT, err, errlen, "no channel with id %lld", (long long)channel_id);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "inviting the user");
    if (out)
        *out = u;
    return 0;
}

int channel_invite_remove(struct db *db, int64_t channel_id, const char *user_name, char *err,
                          size_t errlen)
{
    struct user u;
    int rc = user_id_by_name(db, user_name, &u, err, errlen);
    if (rc < 0)
        return rc;
    if ((rc = db_begin(db)) < 0)
        return db_failed(db, rc, err, errlen, "withdrawing the invitation");
    rc = exec_bound(db, "DELETE FROM channel_invites WHERE channel_id = ? AND user_id = ?", 2,
                    (int64_t[]){channel_id, u.id});
    if (rc < 0)
        goto dberr;
    if (db_changes(db) == 0) {
        db_rollback(db);
        return util_fail(-ENOENT, err, errlen, "'%s' is not invited to this channel", u.name);
    }
    /* The invitee may hold a watch token: revoke them all (the others get new ones). */
    rc = exec_bound(db, "UPDATE channels SET access_gen = access_gen + 1 WHERE id = ?", 1,
                    (int64_t[]){channel_id});
    if (rc < 0)
        goto dberr;
    if ((rc = db_commit(db)) < 0)
        goto dberr;
    return 0;
dberr:
    db_failed(db, rc, err, errlen, "withdrawing the invitation");
    db_rollback(db);
    return rc;
}

int channel_invite_list(struct db *db, int64_t channel_id,
                        int (*fn)(const struct user *u, int64_t invited_at, void *ud), void *ud,
                        char *err, size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT u.id, u.name, u.created_at, u.disabled, i.created_at"
                        " FROM channel_invites i JOIN users u ON u.id = i.user_id"
                        " WHERE i.channel_id = ? ORDER BY u.name",
                        &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing invitations");
    db_bind_int64(st, 1, channel_id);
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW) {
        struct user u;
        memset(&u, 0, sizeof u);
        u.id = db_column_int64(st, 0);
        copy_text(u.name, db_column_text(st, 1), sizeof u.name);
        u.created_at = db_column_int64(st, 2);
        u.disabled = db_column_int64(st, 3) != 0;
        stop = fn(&u, db_column_int64(st, 4), ud);
    }
    db_finalize(st);
    if (stop)
        return stop;
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing invitations");
    return 0;
}

int channel_is_invited(struct db *db, int64_t channel_id, int64_t user_id, bool *out)
{
    struct db_stmt *st;
    *out = false;
    int rc = db_prepare(db, "SELECT 1 FROM channel_invites WHERE channel_id = ? AND user_id = ?", &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, channel_id);
    db_bind_int64(st, 2, user_id);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return rc;
    *out = rc == DB_ROW;
    return 0;
}

/* ---- following ---- */

int channel_follow(struct db *db, int64_t user_id, int64_t channel_id, int notify_email,
                   char *err, size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO follows (user_id, channel_id, created_at, notify_email)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, channel_id) DO NOTHING",
                        &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "following the channel");
    db_bind_int64(st, 1, user_id);
    db_bind_int64(st, 2, channel_id);
    db_bind_int64(st, 3, util_now_unix());
    db_bind_int64(st, 4, notify_email > 0);
    rc = db_step(st);
    db_finalize(st);
    if (rc == DB_ECONSTRAINT)
        return util_fail(-ENOENT, err, errlen, "no such channel or user");
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "following the channel");
    if (notify_email >= 0 && db_changes(db) == 0) {
        rc = exec_bound(db, "UPDATE follows SET notify_email = ? WHERE user_id = ? AND channel_id = ?",
                        3, (int64_t[]){notify_email != 0, user_id, channel_id});
        if (rc < 0)
            return db_failed(db, rc, err, errlen, "following the channel");
    }
    return 0;
}

int channel_unfollow(struct db *db, int64_t user_id, int64_t channel_id, char *err,
                     size_t errlen)
{
    int rc = exec_bound(db, "DELETE FROM follows WHERE user_id = ? AND channel_id = ?", 2,
                        (int64_t[]){user_id, channel_id});
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "unfollowing the channel");
    if (db_changes(db) == 0)
        return util_fail(-ENOENT, err, errlen, "you do not follow this channel");
    return 0;
}

int channel_follow_state(struct db *db, int64_t user_id, int64_t channel_id, bool *following,
                         bool *notify_email)
{
    struct db_stmt *st;
    *following = false;
    if (notify_email)
        *notify_email = false;
    int rc = db_prepare(db, "SELECT notify_email FROM follows WHERE user_id = ? AND channel_id = ?",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, user_id);
    db_bind_int64(st, 2, channel_id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        *following = true;
        if (notify_email)
            *notify_email = db_column_int64(st, 0) != 0;
    }
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

/* ---- notifications ---- */

int notifications_channel_live(struct db *db, int64_t channel_id, int64_t now, int64_t *count)
{
    *count = 0;
    /* Followers who may still watch the channel, and who were not told in the last minutes. */
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO notifications (user_id, kind, channel_id, created_at)"
                        " SELECT f.user_id, 'live', f.channel_id, ?"
                        " FROM follows f JOIN users u ON u.id = f.user_id"
                        " JOIN channels c ON c.id = f.channel_id"
                        " WHERE f.channel_id = ? AND u.disabled = 0"
                        " AND (c.protected = 0 OR c.owner_id = f.user_id"
                        "  OR (',' || u.roles || ',') LIKE '%,admin,%'"
                        "  OR EXISTS (SELECT 1 FROM channel_invites i"
                        "   WHERE i.channel_id = c.id AND i.user_id = f.user_id))"
                        " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = f.user_id"
                        "  AND n.channel_id = f.channel_id AND n.kind = 'live' AND n.created_at > ?)",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, now);
    db_bind_int64(st, 2, channel_id);
    db_bind_int64(st, 3, now - NOTIFY_QUIET_S);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return rc;
    *count = db_changes(db);
    /* Keep the table from growing without end: old read notifications go. */
    exec_bound(db, "DELETE FROM notifications WHERE channel_id = ? AND read_at IS NOT NULL"
                   " AND created_at < ?",
               2, (int64_t[]){channel_id, now - NOTIFY_KEEP_S});
    return 0;
}

int notifications_list(struct db *db, int64_t user_id, bool unread_only, int limit,
                       int (*fn)(const struct notification *n, void *ud), void *ud, char *err,
                       size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        unread_only
                            ? "SELECT n.id, n.kind, COALESCE(n.channel_id, 0), COALESCE(c.slug, ''),"
                              " COALESCE(c.title, ''), n.created_at, COALESCE(n.read_at, 0)"
                              " FROM notifications n LEFT JOIN channels c ON c.id = n.channel_id"
                              " WHERE n.user_id = ? AND n.read_at IS NULL"
                              " ORDER BY n.created_at DESC, n.id DESC LIMIT ?"
                            : "SELECT n.id, n.kind, COALESCE(n.channel_id, 0), COALESCE(c.slug, ''),"
                              " COALESCE(c.title, ''), n.created_at, COALESCE(n.read_at, 0)"
                              " FROM notifications n LEFT JOIN channels c ON c.id = n.channel_id"
                              " WHERE n.user_id = ? ORDER BY n.created_at DESC, n.id DESC LIMIT ?",
                        &st);
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing notifications");
    db_bind_int64(st, 1, user_id);
    db_bind_int64(st, 2, limit > 0 ? limit : 50);
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW) {
        struct notification n;
        memset(&n, 0, sizeof n);
        n.id = db_column_int64(st, 0);
        copy_text(n.kind, db_column_text(st, 1), sizeof n.kind);
        n.channel_id = db_column_int64(st, 2);
        copy_text(n.channel_slug, db_column_text(st, 3), sizeof n.channel_slug);
        copy_text(n.channel_title, db_column_text(st, 4), sizeof n.channel_title);
        n.created_at = db_column_int64(st, 5);
        n.read_at = db_column_int64(st, 6);
        stop = fn(&n, ud);
    }
    db_finalize(st);
    if (stop)
        return stop;
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "listing notifications");
    return 0;
}

int notifications_mark_read(struct db *db, int64_t user_id, int64_t id, int64_t now,
                            int64_t *changed)
{
    int rc = id ? exec_bound(db,
                             "UPDATE notifications SET read_at = ? WHERE user_id = ? AND id = ?"
                             " AND read_at IS NULL",
                             3, (int64_t[]){now, user_id, id})
                : exec_bound(db,
                             "UPDATE notifications SET read_at = ? WHERE user_id = ?"
                             " AND read_at IS NULL",
                             2, (int64_t[]){now, user_id});
    if (rc < 0)
        return rc;
    *changed = db_changes(db);
    return 0;
}

/* ---- search ---- */

int user_search(struct db *db, const char *q, int limit,
                int (*fn)(const struct user *u, void *ud), void *ud, char *err, size_t errlen)
{
    if (!q || !*q)
        return 0;
    if (limit < 1 || limit > USER_SEARCH_MAX)
        limit = USER_SEARCH_MAX;
    char *pat = like_pattern(q);
    if (!pat)
        return util_fail(-ENOMEM, err, errlen, "out of memory");
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT id, name, COALESCE(email, ''), roles, created_at, disabled FROM users"
                        " WHERE disabled = 0 AND name LIKE ? ESCAPE '\\'"
                        " ORDER BY name = ? COLLATE NOCASE DESC, name COLLATE NOCASE LIMIT ?",
                        &st);
    if (rc < 0) {
        free(pat);
        return db_failed(db, rc, err, errlen, "searching users");
    }
    db_bind_text(st, 1, pat);
    db_bind_text(st, 2, q);
    db_bind_int64(st, 3, limit);
    int stop = 0;
    while (!stop && (rc = db_step(st)) == DB_ROW) {
        struct user u;
        memset(&u, 0, sizeof u);
        u.id = db_column_int64(st, 0);
        copy_text(u.name, db_column_text(st, 1), sizeof u.name);
        copy_text(u.email, db_column_text(st, 2), sizeof u.email);
        copy_text(u.roles, db_column_text(st, 3), sizeof u.roles);
        u.created_at = db_column_int64(st, 4);
        u.disabled = db_column_int64(st, 5) != 0;
        stop = fn(&u, ud);
    }
    db_finalize(st);
    free(pat);
    if (stop)
        return stop;
    if (rc < 0)
        return db_failed(db, rc, err, errlen, "searching users");
    return 0;
}

/* ---- settings, counts, streams ---- */

static int setting_text(struct db *db, const char *key, char *out, size_t n, bool *found)
{
    struct db_stmt *st;
    *found = false;
    int rc = db_prepare(db, "SELECT value FROM settings WHERE key = ?", &st);
    if (rc < 0)
        return rc;
    db_bind_text(st, 1, key);
    rc = db_step(st);
    if (rc == DB_ROW) {
        *found = true;
        copy_text(out, db_column_text(st, 0), n);
    }
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

int settings_get_int(struct db *db, const char *key, int64_t def, int64_t *out)
{
    char v[64];
    bool found;
    *out = def;
    int rc = setting_text(db, key, v, sizeof v, &found);
    if (rc < 0)
        return rc;
    if (found) {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (end != v && *end == '\0')
            *out = x;
    }
    return 0;
}

int settings_secret(struct db *db, const char *key, unsigned char out[32])
{
    if (sodium_init() < 0)
        return -EIO;
    for (int attempt = 0; attempt < 2; attempt++) {
        char v[128];
        bool found;
        int rc = setting_text(db, key, v, sizeof v, &found);
        if (rc < 0)
            return rc;
        size_t bin_len = 0;
        if (found && strlen(v) == 64 &&
            sodium_hex2bin(out, 32, v, 64, NULL, &bin_len, NULL) == 0 && bin_len == 32)
            return 0;
        if (found) {
            log_warn("settings: %s is not 64 hex digits; making a new secret", key);
            struct db_stmt *st;
            if (db_prepare(db, "DELETE FROM settings WHERE key = ?", &st) == 0) {
                db_bind_text(st, 1, key);
                db_step(st);
                db_finalize(st);
            }
        }
        unsigned char raw[32];
        char hex[65];
        randombytes_buf(raw, sizeof raw);
        util_hex(raw, sizeof raw, hex);
        sodium_memzero(raw, sizeof raw);
        struct db_stmt *st;
        if ((rc = db_prepare(db,
                             "INSERT INTO settings (key, value) VALUES (?, ?)"
                             " ON CONFLICT (key) DO NOTHING",
                             &st)) < 0)
            return rc;
        db_bind_text(st, 1, key);
        db_bind_text(st, 2, hex);
        rc = db_step(st);
        db_finalize(st);
        sodium_memzero(hex, sizeof hex);
        if (rc < 0)
            return rc;
        /* Read it back: another process may have won the insert. */
    }
    return -EIO;
}

int channel_count_owned(struct db *db, int64_t owner_id, int64_t *out)
{
    struct db_stmt *st;
    *out = 0;
    int rc = db_prepare(db, "SELECT COUNT(*) FROM channels WHERE owner_id = ?", &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, owner_id);
    rc = db_step(st);
    if (rc == DB_ROW)
        *out = db_column_int64(st, 0);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

int stream_peak_record(struct db *db, int64_t channel_id, int64_t started_unix, int64_t peak)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "UPDATE streams SET peak_viewers = CASE WHEN peak_viewers < ? THEN ?"
                        " ELSE peak_viewers END"
                        " WHERE id = (SELECT id FROM streams WHERE channel_id = ? AND started_at <= ?"
                        " AND started_at >= ? ORDER BY started_at DESC, id DESC LIMIT 1)",
                        &st);
    if (rc < 0)
        return rc;
    db_bind_int64(st, 1, peak);
    db_bind_int64(st, 2, peak);
    db_bind_int64(st, 3, channel_id);
    db_bind_int64(st, 4, started_unix + 2);
    db_bind_int64(st, 5, started_unix - 2);
    rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

/* ---- JSON ---- */

static void set_str(json_t *o, const char *key, const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    json_object_set_new(o, key, v ? v : json_null());
}

/* "/api/v1/channels/<slug>/avatar?v=<name>": the name changes with the image. */
static void image_url(json_t *o, const char *key, const char *slug, const char *kind,
                      const char *path)
{
    if (!path[0]) {
        json_object_set_new(o, key, json_null());
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char url[256];
    snprintf(url, sizeof url, "/api/v1/channels/%s/%s?v=%.*s", slug, kind,
             (int)strcspn(base, "."), base);
    set_str(o, key, url);
}

json_t *channel_ext_to_json(const struct channel_ext *c, const char *public_url,
                            const char *rtmp_listen, enum channel_view view)
{
    bool owner_view = view == CHANNEL_VIEW_OWNER, manager_view = view == CHANNEL_VIEW_MANAGER;
    json_t *o = channel_to_json(&c->c, public_url, rtmp_listen, owner_view);
    if (!o)
        return NULL;
    set_str(o, "topic_slug", c->topic_slug[0] ? c->topic_slug : NULL);
    set_str(o, "live_title", c->live_title[0] ? c->live_title : NULL);
    json_object_set_new(o, "chat_enabled", json_boolean(c->chat_enabled));
    json_object_set_new(o, "protected", json_boolean(c->is_protected));
    json_object_set_new(o, "followers", json_integer((json_int_t)c->followers));
    json_object_set_new(o, "last_live_at",
                        c->last_live_at ? json_integer((json_int_t)c->last_live_at) : json_null());
    image_url(o, "avatar_url", c->c.slug, "avatar", c->avatar_path);
    image_url(o, "banner_url", c->c.slug, "banner", c->banner_path);
    if (owner_view) {
        json_t *rtmp = json_object_get(o, "rtmp_url");
        json_t *obs = json_object();
        json_object_set(obs, "server", rtmp ? rtmp : json_null());
        set_str(obs, "key", c->c.stream_key);
        json_object_set_new(o, "obs", obs);
        json_object_set_new(o, "has_invite_code", json_boolean(c->invite_code_hash[0] != '\0'));
    } else if (manager_view) {
        json_object_del(o, "stream_key");
        json_object_set_new(o, "has_invite_code", json_boolean(c->invite_code_hash[0] != '\0'));
    } else {
        json_object_del(o, "rtmp_url");
        json_object_del(o, "stream_key");
    }
    return o;
}
