/*
 * The SQLite driver.
 *
 * One sqlite3 handle per `struct db`. Every connection is set up the same
 * way: WAL, so that readers on other workers never wait for a writer;
 * synchronous=NORMAL, which in WAL mode can lose the last transactions on a
 * power cut but never corrupts the file; foreign keys on, since SQLite ships
 * with them off; and a 5 s busy timeout, so a writer waits for another
 * writer instead of failing at once. Extended result codes are on so that
 * every kind of constraint violation maps to DB_ECONSTRAINT.
 *
 * The database file is created 0600 before SQLite opens it: it holds
 * password hashes and stream keys, and SQLite would otherwise create it with
 * whatever the umask allows.
 *
 * Backups go through the online backup API into a temporary file next to the
 * destination, which is renamed into place only once it is complete: a
 * crash halfway leaves a "*.partial-*" file, never a truncated backup with
 * the final name.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/db_driver.h"

#define BUSY_TIMEOUT_MS 5000

struct sqlite_db {
    struct db base;
    sqlite3 *h;
    char path[PATH_MAX];
};

struct sqlite_stmt {
    struct db_stmt base;
    sqlite3_stmt *s;
};

static struct sqlite_db *sdb(struct db *db) { return (struct sqlite_db *)db; }
static struct sqlite_stmt *sst(struct db_stmt *st) { return (struct sqlite_stmt *)st; }

static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return DB_ECONSTRAINT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return DB_EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_RANGE:
        return -ERANGE;
    default:
        return DB_EERROR;
    }
}

/* Record SQLite's message for rc on this connection and map the code. */
static int fail(struct sqlite_db *d, int rc, const char *msg)
{
    if (!msg)
        msg = sqlite3_errmsg(d->h);
    db_set_errmsg(&d->base, "%s", msg ? msg : sqlite3_errstr(rc));
    return code_of(rc);
}

/* sqlite:PATH, sqlite://PATH (relative) and sqlite:///ABS all name PATH. */
static const char *path_of_url(const char *url)
{
    const char *p = url + strlen("sqlite:");
    if (p[0] == '/' && p[1] == '/')
        p += 2;
    return p;
}

static int mkdir_parent(const char *path)
{
    char dir[PATH_MAX];
    if (util_strlcpy(dir, path, sizeof dir) < 0)
        return -ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0; /* the current directory, or "/" */
    *slash = '\0';
    return util_mkdir_p(dir);
}

static void sqlite_close(struct db *db)
{
    struct sqlite_db *d = sdb(db);
    /* close_v2: statements a caller forgot are finalized with the handle
     * instead of keeping it open forever. */
    sqlite3_close_v2(d->h);
    free(d);
}

static int sqlite_open(const char *url, struct db **out, char *err, size_t errlen)
{
    const char *path = path_of_url(url);
    if (!*path) {
        snprintf(err, errlen, "database URL '%s' names no file (expected sqlite:PATH)", url);
        return -EINVAL;
    }
    struct sqlite_db *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory opening the database");
        return -ENOMEM;
    }
    d->base.drv = &db_sqlite_driver;
    if (util_strlcpy(d->path, path, sizeof d->path) < 0) {
        snprintf(err, errlen, "database path is too long");
        free(d);
        return -ENAMETOOLONG;
    }
    bool memory = strcmp(path, ":memory:") == 0;
    if (!memory) {
        int rc = mkdir_parent(path);
        if (rc < 0) {
            snprintf(err, errlen, "cannot create the directory for database %s: %s", path,
                     strerror(-rc));
            free(d);
            return rc;
        }
        /* Create a new database file 0600 (it holds password hashes and
         * stream keys). Only when it does not exist: closing any descriptor
         * on an open database drops this process's POSIX locks on it, and
         * another process could then checkpoint and delete our WAL. */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
        } else if (errno != EEXIST) {
            rc = -errno;
            snprintf(err, errlen, "cannot open database %s: %s", path, strerror(errno));
            free(d);
            return rc;
        }
    }
    int rc = sqlite3_open_v2(path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc));
        sqlite3_close_v2(d->h);
        free(d);
        return code_of(rc);
    }
    sqlite3_extended_result_codes(d->h, 1);
    sqlite3_busy_timeout(d->h, BUSY_TIMEOUT_MS);
    /* The first statement reads the file, so a file that is not a database
     * fails here rather than on the first query. */
    char *msg = NULL;
    rc = sqlite3_exec(d->h,
                      "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; "
                      "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
                      NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close_v2(d->h);
        free(d);
        return code_of(rc);
    }
    /* journal_mode answers with the mode it got, which is not WAL on file
     * systems without shared memory; it still works, only with more locking. */
    sqlite3_stmt *s;
    if (!memory && sqlite3_prepare_v2(d->h, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(s, 0);
            if (mode && strcmp(mode, "wal") != 0)
                log_warn("database %s: journal mode is %s, not wal; writers will block readers",
                         path, mode);
        }
        sqlite3_finalize(s);
    }
    *out = &d->base;
    return 0;
}

static const char *sqlite_path(struct db *db) { return sdb(db)->path; }

static int sqlite_exec(struct db *db, const char *sql)
{
    struct sqlite_db *d = sdb(db);
    char *msg = NULL;
    int rc = sqlite3_exec(d->h, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    rc = fail(d, rc, msg);
    sqlite3_free(msg);
    return rc;
}

static int sqlite_prepare(struct db *db, const char *sql, struct db_stmt **out)
{
    struct sqlite_db *d = sdb(db);
    *out = NULL;
    struct sqlite_stmt *st = calloc(1, sizeof *st);
    if (!st) {
        db_set_errmsg(db, "out of memory");
        return -ENOMEM;
    }
    int rc = sqlite3_prepare_v2(d->h, sql, -1, &st->s, NULL);
    if (rc != SQLITE_OK) {
        free(st);
        return fail(d, rc, NULL);
    }
    if (!st->s) {
        free(st);
        db_set_errmsg(db, "empty statement");
        return -EINVAL;
    }
    st->base.drv = &db_sqlite_driver;
    st->base.db = db;
    *out = &st->base;
    return 0;
}

static int bind_rc(struct db_stmt *st, int rc)
{
    return rc == SQLITE_OK ? 0 : fail(sdb(st->db), rc, NULL);
}

static int sqlite_bind_int64(struct db_stmt *st, int idx, int64_t v)
{
    return bind_rc(st, sqlite3_bind_int64(sst(st)->s, idx, v));
}

static int sqlite_bind_text(struct db_stmt *st, int idx, const char *s)
{
    if (!s)
        return bind_rc(st, sqlite3_bind_null(sst(st)->s, idx));
    return bind_rc(st, sqlite3_bind_text(sst(st)->s, idx, s, -1, SQLITE_TRANSIENT));
}

static int sqlite_bind_blob(struct db_stmt *st, int idx, const void *p, size_t n)
{
    /* A zero-length blob, not NULL, even when p is NULL. */
    return bind_rc(st, sqlite3_bind_blob64(sst(st)->s, idx, p ? p : "", n, SQLITE_TRANSIENT));
}

static int sqlite_bind_null(struct db_stmt *st, int idx)
{
    return bind_rc(st, sqlite3_bind_null(sst(st)->s, idx));
}

static int sqlite_step(struct db_stmt *st)
{
    int rc = sqlite3_step(sst(st)->s);
    if (rc == SQLITE_ROW)
        return DB_ROW;
    if (rc == SQLITE_DONE)
        return DB_DONE;
    return fail(sdb(st->db), rc, NULL);
}

static int sqlite_reset(struct db_stmt *st)
{
    /* reset repeats the last step's error; what matters here is that the
     * statement is ready again, so bindings are cleared too. */
    sqlite3_reset(sst(st)->s);
    sqlite3_clear_bindings(sst(st)->s);
    return 0;
}

static int sqlite_column_count(struct db_stmt *st) { return sqlite3_column_count(sst(st)->s); }

static const char *sqlite_column_name(struct db_stmt *st, int col)
{
    return sqlite3_column_name(sst(st)->s, col);
}

static bool sqlite_column_is_null(struct db_stmt *st, int col)
{
    return sqlite3_column_type(sst(st)->s, col) == SQLITE_NULL;
}

static int64_t sqlite_column_int64(struct db_stmt *st, int col)
{
    return sqlite3_column_int64(sst(st)->s, col);
}

static const char *sqlite_column_text(struct db_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(sst(st)->s, col);
}

static const void *sqlite_column_blob(struct db_stmt *st, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(sst(st)->s, col);
    if (len)
        *len = (size_t)sqlite3_column_bytes(sst(st)->s, col);
    return p;
}

static void sqlite_finalize(struct db_stmt *st)
{
    sqlite3_finalize(sst(st)->s);
    free(st);
}

static int sqlite_begin(struct db *db) { return sqlite_exec(db, "BEGIN IMMEDIATE"); }
static int sqlite_commit(struct db *db) { return sqlite_exec(db, "COMMIT"); }

static bool sqlite_in_transaction(struct db *db) { return !sqlite3_get_autocommit(sdb(db)->h); }

static int sqlite_rollback(struct db *db)
{
    /* Some errors (a full disk, an interrupt) make SQLite roll back by
     * itself; a second ROLLBACK would only fail and hide the first error. */
    if (!sqlite_in_transaction(db))
        return 0;
    return sqlite_exec(db, "ROLLBACK");
}

static int64_t sqlite_last_insert_id(struct db *db) { return sqlite3_last_insert_rowid(sdb(db)->h); }
static int64_t sqlite_changes(struct db *db) { return sqlite3_changes64(sdb(db)->h); }

static void fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    if (util_strlcpy(dir, path, sizeof dir) < 0)
        return;
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int sqlite_backup_to(struct db *db, const char *dest, char *err, size_t errlen)
{
    struct sqlite_db *d = sdb(db);
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", dest) >= (int)sizeof tmp) {
        snprintf(err, errlen, "backup path is too long");
        return -ENAMETOOLONG;
    }
    int rc = mkdir_parent(dest);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the directory for backup %s: %s", dest, strerror(-rc));
        return rc;
    }
    int fd = mkstemp(tmp); /* 0600, like the database itself */
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create backup file next to %s: %s", dest, strerror(errno));
        return rc;
    }
    close(fd);

    sqlite3 *dst = NULL;
    rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", d->h, "main");
        if (b) {
            /* Copy in slices so that writers on other connections are held up
             * only for a slice at a time. A busy source means "again", for
             * about as long as the busy timeout. */
            int busy = 0, step;
            do {
                step = sqlite3_backup_step(b, 1024);
                if (step == SQLITE_BUSY || step == SQLITE_LOCKED) {
                    if (++busy > BUSY_TIMEOUT_MS / 20)
                        break;
                    sqlite3_sleep(20);
                }
            } while (step == SQLITE_OK || step == SQLITE_BUSY || step == SQLITE_LOCKED);
            /* finish reports fatal step errors, but not giving up while busy. */
            rc = sqlite3_backup_finish(b);
            if (rc == SQLITE_OK && step != SQLITE_DONE)
                rc = step;
        } else {
            rc = sqlite3_errcode(dst);
        }
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "backup to %s failed: %s", dest,
                 dst && sqlite3_errcode(dst) == rc ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        sqlite3_close_v2(dst);
        unlink(tmp);
        return code_of(rc);
    }
    /* The backup connection ran with synchronous=FULL (the default), so the
     * pages are on disk once it closes. */
    rc = sqlite3_close(dst);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "backup to %s failed on close: %s", dest, sqlite3_errstr(rc));
        unlink(tmp);
        return code_of(rc);
    }
    if (rename(tmp, dest) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot move backup into place at %s: %s", dest, strerror(errno));
        unlink(tmp);
        return rc;
    }
    fsync_dir_of(dest);
    return 0;
}

const struct db_driver db_sqlite_driver = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .path = sqlite_path,
    .exec = sqlite_exec,
    .prepare = sqlite_prepare,
    .bind_int64 = sqlite_bind_int64,
    .bind_text = sqlite_bind_text,
    .bind_blob = sqlite_bind_blob,
    .bind_null = sqlite_bind_null,
    .step = sqlite_step,
    .reset = sqlite_reset,
    .column_count = sqlite_column_count,
    .column_name = sqlite_column_name,
    .column_is_null = sqlite_column_is_null,
    .column_int64 = sqlite_column_int64,
    .column_text = sqlite_column_text,
    .column_blob = sqlite_column_blob,
    .finalize = sqlite_finalize,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .in_transaction = sqlite_in_transaction,
    .last_insert_id = sqlite_last_insert_id,
    .changes = sqlite_changes,
    .backup_to = sqlite_backup_to,
};
