/*
 * Schema migrations: check what a database has against what this binary
 * carries, back up, then apply what is missing, one transaction each.
 *
 * The list comes from src/store/migrations/<backend>/NNNN_name.sql, compiled
 * in by scripts/embed_sql.py. schema_migrations records, for every applied
 * migration, its version, its name and the SHA-256 of its text. Before
 * writing anything we insist that the recorded history is a prefix of ours:
 * same versions, same names, same text, nothing newer, no holes. Anything
 * else means the database and this build disagree about what its schema is,
 * and running on would corrupt data quietly; refusing with a message that
 * says what to do is the only safe answer. In particular a database from a
 * newer Hearth is left exactly as it is, so going back to that version still
 * works.
 *
 * A database that already holds a schema is copied with the online backup
 * API before the first migration touches it, because a migration that
 * rewrites a table cannot be undone once committed.
 *
 * schema_migrations is created inside the first migration's transaction, so
 * refusing (or having nothing to do) never writes. Each migration's
 * transaction checks again that nobody applied it meanwhile: two processes
 * starting at once then apply it once. Migration files must not contain
 * BEGIN/COMMIT, and cannot change PRAGMA foreign_keys (a no-op inside a
 * transaction).
 */
#include "store/migrate.h"

#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

extern const struct migration migrations_sqlite[];
extern const size_t migrations_sqlite_count;

#define CHECKSUM_HEX 65

struct applied {
    int version;
    char name[128];
    char checksum[CHECKSUM_HEX];
    int64_t applied_at;
};

const struct migration *migrate_list(const char *backend, size_t *count)
{
    if (backend && strcmp(backend, "sqlite") == 0) {
        *count = migrations_sqlite_count;
        return migrations_sqlite;
    }
    *count = 0;
    return NULL;
}

static void checksum_of(const char *sql, char out[CHECKSUM_HEX])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)sql, strlen(sql));
    util_hex(h, sizeof h, out);
}

static int db_fail(struct db *db, int rc, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s: %s", what, db_errmsg(db));
    return rc;
}

/* One row back from a query taking one text parameter (or none). */
static int query_exists(struct db *db, const char *sql, const char *param, bool *exists, char *err,
                        size_t errlen)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc < 0)
        return db_fail(db, rc, err, errlen, "cannot read the database schema");
    if (param && (rc = db_bind_text(st, 1, param)) < 0) {
        db_finalize(st);
        return db_fail(db, rc, err, errlen, "cannot read the database schema");
    }
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return db_fail(db, rc, err, errlen, "cannot read the database schema");
    *exists = rc == DB_ROW;
    return 0;
}

static bool is_postgres(struct db *db) { return strcmp(db_backend(db), "postgresql") == 0; }

static int table_exists(struct db *db, const char *name, bool *exists, char *err, size_t errlen)
{
    const char *sql = is_postgres(db)
                          ? "SELECT 1 FROM information_schema.tables"
                            " WHERE table_schema = current_schema() AND table_name = ?"
                          : "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?";
    return query_exists(db, sql, name, exists, err, errlen);
}

/* Tables from before migrations were tracked count as "has a schema" too. */
static int has_user_tables(struct db *db, bool *exists, char *err, size_t errlen)
{
    const char *sql = is_postgres(db)
                          ? "SELECT 1 FROM information_schema.tables"
                            " WHERE table_schema = current_schema() LIMIT 1"
                          : "SELECT 1 FROM sqlite_master WHERE type = 'table'"
                            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' LIMIT 1";
    return query_exists(db, sql, NULL, exists, err, errlen);
}

/* The recorded history, ordered by version; *out is NULL when there is none. */
static int load_applied(struct db *db, struct applied **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    bool exists;
    int rc = table_exists(db, "schema_migrations", &exists, err, errlen);
    if (rc < 0 || !exists)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "SELECT version, name, checksum, applied_at FROM schema_migrations"
                    " ORDER BY version",
                    &st);
    if (rc < 0)
        return db_fail(db, rc, err, errlen, "cannot read schema_migrations");
    struct applied *rows = NULL;
    size_t cap = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct applied *grown = realloc(rows, cap * sizeof *rows);
            if (!grown) {
                rc = -ENOMEM;
                snprintf(err, errlen, "out of memory reading schema_migrations");
                break;
            }
            rows = grown;
        }
        struct applied *a = &rows[(*n)++];
        int64_t v = db_column_int64(st, 0);
        a->version = v < 0 || v > INT32_MAX ? INT32_MAX : (int)v;
        const char *name = db_column_text(st, 1);
        const char *sum = db_column_text(st, 2);
        util_strlcpy(a->name, name ? name : "", sizeof a->name);
        util_strlcpy(a->checksum, sum ? sum : "", sizeof a->checksum);
        a->applied_at = db_column_int64(st, 3);
    }
    db_finalize(st);
    if (rc < 0) {
        if (rc != -ENOMEM)
            db_fail(db, rc, err, errlen, "cannot read schema_migrations");
        free(rows);
        *n = 0;
        return rc;
    }
    *out = rows;
    return 0;
}

static const struct migration *find_migration(const struct migration *list, size_t count,
                                              int version)
{
    for (size_t i = 0; i < count; i++)
        if (list[i].version == version)
            return &list[i];
    return NULL;
}

static bool is_applied(const struct applied *rows, size_t n, int version)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i].version == version)
            return true;
    return false;
}

int migrate_check_list(struct db *db, const struct migration *list, size_t count,
                       struct migrate_status *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -EIO;
    }
    for (size_t i = 0; i < count; i++) {
        if (list[i].version <= 0 || (i > 0 && list[i].version <= list[i - 1].version)) {
            snprintf(err, errlen, "the compiled migration list is not in order at %s",
                     list[i].name);
            return -EINVAL;
        }
    }
    st->latest = count ? list[count - 1].version : 0;

    struct applied *rows;
    size_t n;
    int rc = load_applied(db, &rows, &n, err, errlen);
    if (rc < 0)
        return rc;
    st->current = n ? rows[n - 1].version : 0;

    if (st->current > st->latest) {
        snprintf(err, errlen,
                 "this database was written by a newer Hearth (schema version %d; this build "
                 "knows up to %d); refusing to touch it",
                 st->current, st->latest);
        rc = -EPERM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct applied *a = &rows[i];
        const struct migration *m = find_migration(list, count, a->version);
        if (!m) {
            snprintf(err, errlen,
                     "this database has migration %04d (%s) applied, which this build does "
                     "not have; refusing to start — it was made by a different Hearth build",
                     a->version, a->name);
            rc = -EPERM;
            goto out;
        }
        if (strcmp(a->name, m->name) != 0) {
            snprintf(err, errlen,
                     "migration %04d was applied to this database as '%s' but this build "
                     "calls it '%s'; refusing to start — the database and this Hearth "
                     "disagree about its schema",
                     a->version, a->name, m->name);
            rc = -EPERM;
            goto out;
        }
        char sum[CHECKSUM_HEX];
        checksum_of(m->sql, sum);
        if (strcmp(a->checksum, sum) != 0) {
            snprintf(err, errlen,
                     "migration %s was changed after it was applied to this database "
                     "(checksum mismatch); refusing to start — restore the original file or "
                     "the matching Hearth version",
                     m->name);
            rc = -EPERM;
            goto out;
        }
    }
    for (size_t i = 0; i < count && list[i].version < st->current; i++) {
        if (!is_applied(rows, n, list[i].version)) {
            snprintf(err, errlen,
                     "migration %s is not applied to this database although the later "
                     "migration %04d is; refusing to start — migrations apply only in order",
                     list[i].name, st->current);
            rc = -EPERM;
            goto out;
        }
    }
    for (size_t i = 0; i < count; i++)
        if (list[i].version > st->current)
            st->pending++;
out:
    free(rows);
    return rc;
}

int migrate_check(struct db *db, struct migrate_status *st, char *err, size_t errlen)
{
    size_t count;
    const struct migration *list = migrate_list(db_backend(db), &count);
    return migrate_check_list(db, list, count, st, err, errlen);
}

static int backup_before(struct db *db, const char *dir, int current, char *path, size_t pathlen,
                         char *err, size_t errlen)
{
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    /* Two upgrades within one second must not overwrite the first copy. */
    for (int i = 1; i < 100; i++) {
        int w = i == 1 ? snprintf(path, pathlen, "%s/hearth-%s-v%d.db", dir, stamp, current)
                       : snprintf(path, pathlen, "%s/hearth-%s-v%d-%d.db", dir, stamp, current, i);
        if (w < 0 || (size_t)w >= pathlen) {
            snprintf(err, errlen, "backup directory path is too long: %s", dir);
            return -ENAMETOOLONG;
        }
        if (access(path, F_OK) != 0)
            break;
    }
    char why[512];
    int rc = db_backup_to(db, path, why, sizeof why);
    if (rc < 0) {
        snprintf(err, errlen, "cannot back up the database before migrating, so nothing was "
                 "changed: %s", why);
        path[0] = '\0';
        return rc;
    }
    log_info("database %s: backed up to %s before migrating from schema version %d",
             db_path(db) ? db_path(db) : db_backend(db), path, current);
    return 0;
}

/* Apply one migration in its own transaction. */
static int apply_one(struct db *db, const struct migration *m, int current, char *err,
                     size_t errlen)
{
    char what[256];
    int rc = db_begin(db);
    if (rc < 0) {
        snprintf(what, sizeof what, "cannot start migration %s", m->name);
        return db_fail(db, rc, err, errlen, what);
    }
    rc = db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     "version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    if (rc < 0) {
        snprintf(what, sizeof what, "cannot create schema_migrations for migration %s", m->name);
        goto fail;
    }

    char sum[CHECKSUM_HEX];
    checksum_of(m->sql, sum);
    struct db_stmt *st;
    if ((rc = db_prepare(db, "SELECT checksum FROM schema_migrations WHERE version = ?", &st)) < 0) {
        snprintf(what, sizeof what, "cannot read schema_migrations for migration %s", m->name);
        goto fail;
    }
    db_bind_int64(st, 1, m->version);
    rc = db_step(st);
    if (rc == DB_ROW) {
        /* Another process got here first, between our check and our lock. */
        const char *theirs = db_column_text(st, 0);
        bool same = theirs && strcmp(theirs, sum) == 0;
        db_finalize(st);
        db_rollback(db);
        if (same)
            return 0;
        snprintf(err, errlen, "migration %s was applied meanwhile by another process with a "
                 "different text; refusing to go on", m->name);
        return -EPERM;
    }
    db_finalize(st);
    if (rc < 0) {
        snprintf(what, sizeof what, "cannot read schema_migrations for migration %s", m->name);
        goto fail;
    }

    if ((rc = db_exec(db, m->sql)) < 0) {
        snprintf(err, errlen,
                 "migration %s failed: %s; it was rolled back, the database stays at schema "
                 "version %d",
                 m->name, db_errmsg(db), current);
        db_rollback(db);
        return rc;
    }
    if ((rc = db_prepare(db,
                         "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                         " VALUES (?, ?, ?, ?)",
                         &st)) < 0) {
        snprintf(what, sizeof what, "cannot record migration %s", m->name);
        goto fail;
    }
    db_bind_int64(st, 1, m->version);
    db_bind_text(st, 2, m->name);
    db_bind_text(st, 3, sum);
    db_bind_int64(st, 4, util_now_unix());
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0) {
        snprintf(what, sizeof what, "cannot record migration %s", m->name);
        goto fail;
    }
    if ((rc = db_commit(db)) < 0) {
        snprintf(what, sizeof what, "cannot commit migration %s", m->name);
        goto fail;
    }
    return 0;
fail:
    db_fail(db, rc, err, errlen, what);
    db_rollback(db);
    return rc;
}

int migrate_up_list(struct db *db, const struct migration *list, size_t count, int target,
                    const char *backup_dir, char *backup_path, size_t bplen, char *err,
                    size_t errlen)
{
    if (backup_path && bplen)
        backup_path[0] = '\0';
    struct migrate_status st;
    int rc = migrate_check_list(db, list, count, &st, err, errlen);
    if (rc < 0)
        return rc;
    if (target < 0)
        target = st.latest;
    if (target > st.latest) {
        snprintf(err, errlen, "schema version %d was asked for, but this build knows up to %d",
                 target, st.latest);
        return -EINVAL;
    }
    if (target < st.current) {
        snprintf(err, errlen, "the database is at schema version %d, past the %d asked for; "
                 "migrations only go forward", st.current, target);
        return -EINVAL;
    }
    size_t todo = 0;
    for (size_t i = 0; i < count; i++)
        if (list[i].version > st.current && list[i].version <= target)
            todo++;
    if (todo == 0)
        return 0;

    if (backup_dir) {
        bool tables = st.current > 0;
        if (!tables && (rc = has_user_tables(db, &tables, err, errlen)) < 0)
            return rc;
        if (tables) {
            char path[4096];
            rc = backup_before(db, backup_dir, st.current, path, sizeof path, err, errlen);
            if (rc < 0)
                return rc;
            if (backup_path && bplen)
                util_strlcpy(backup_path, path, bplen);
        }
    }

    const char *where = db_path(db) ? db_path(db) : db_backend(db);
    int current = st.current;
    for (size_t i = 0; i < count; i++) {
        const struct migration *m = &list[i];
        if (m->version <= st.current || m->version > target)
            continue;
        if ((rc = apply_one(db, m, current, err, errlen)) < 0) {
            log_error("database %s: %s", where, err);
            return rc;
        }
        current = m->version;
        log_info("database %s: applied migration %s", where, m->name);
    }
    return 0;
}

int migrate_up(struct db *db, const char *backup_dir, char *backup_path, size_t bplen, char *err,
               size_t errlen)
{
    size_t count;
    const struct migration *list = migrate_list(db_backend(db), &count);
    return migrate_up_list(db, list, count, -1, backup_dir, backup_path, bplen, err, errlen);
}

int migrate_up_to(struct db *db, int target, char *err, size_t errlen)
{
    size_t count;
    const struct migration *list = migrate_list(db_backend(db), &count);
    return migrate_up_list(db, list, count, target, NULL, NULL, 0, err, errlen);
}

static void format_time(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(out, outlen, "%lld", (long long)t);
}

int migrate_print_status(struct db *db, FILE *out, char *err, size_t errlen)
{
    size_t count;
    const struct migration *list = migrate_list(db_backend(db), &count);
    struct applied *rows;
    size_t n;
    int rc = load_applied(db, &rows, &n, err, errlen);
    if (rc < 0)
        return rc;

    fprintf(out, "%-8s %-32s %s\n", "version", "name", "applied");
    /* Both lists are sorted by version: walk them together. */
    size_t i = 0, j = 0;
    while (i < count || j < n) {
        int vi = i < count ? list[i].version : INT32_MAX;
        int vj = j < n ? rows[j].version : INT32_MAX;
        char when[64];
        if (vj <= vi) {
            format_time(rows[j].applied_at, when, sizeof when);
            const char *note = "";
            if (vi != vj) {
                note = "  (not in this build)";
            } else {
                char sum[CHECKSUM_HEX];
                checksum_of(list[i].sql, sum);
                if (strcmp(sum, rows[j].checksum) != 0)
                    note = "  (CHANGED since it was applied)";
            }
            fprintf(out, "%04d     %-32s %s%s\n", vj, rows[j].name, when, note);
            if (vi == vj)
                i++;
            j++;
        } else {
            fprintf(out, "%04d     %-32s pending\n", vi, list[i].name);
            i++;
        }
    }
    free(rows);

    struct migrate_status st;
    rc = migrate_check(db, &st, err, errlen);
    if (rc < 0) {
        fprintf(out, "refused: %s\n", err);
        return rc;
    }
    if (st.pending == 0)
        fprintf(out, "schema version %d of %d, up to date\n", st.current, st.latest);
    else
        fprintf(out, "schema version %d of %d, %d pending\n", st.current, st.latest, st.pending);
    return 0;
}
