/*
 * The driver-neutral front of the database layer, and the connection pool.
 *
 * db_open() reads the URL's scheme and hands the URL to a driver
 * (db_driver.h); every other call goes through the connection's driver table.
 * The indirection costs one pointer load per call, which is nothing next to a
 * query, and keeps sqlite3.h out of everything above src/store/.
 *
 * The pool is a mutex, a condition variable and a stack of idle connections.
 * Connections are opened lazily, up to `size`: a server that only ever
 * serves one request at a time keeps one connection (and one set of file
 * descriptors) open. The first one is opened by db_pool_create() so that a
 * bad URL or an unreadable file fails at start-up, not on the first request.
 */
#include "store/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store/db_driver.h"

static const struct {
    const char *prefix;
    const struct db_driver *drv;
} schemes[] = {
    {"sqlite:", &db_sqlite_driver},
};

void db_set_errmsg(struct db *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->errmsg, sizeof db->errmsg, fmt, ap);
    va_end(ap);
}

int db_open(const char *url, struct db **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!url || !*url) {
        snprintf(err, errlen, "no database URL given (expected sqlite:PATH)");
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
            return schemes[i].drv->open(url, out, err, errlen);
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        snprintf(err, errlen, "PostgreSQL support is not built into this Hearth yet; use sqlite:PATH");
        return -ENOTSUP;
    }
    /* Only the scheme goes into the message: a URL may carry a password. */
    const char *colon = strchr(url, ':');
    int n = colon ? (int)(colon - url) : (int)strlen(url);
    if (n > 32)
        n = 32;
    snprintf(err, errlen, "unsupported database URL scheme '%.*s' (expected sqlite:PATH)", n, url);
    return -EINVAL;
}

void db_close(struct db *db)
{
    if (db)
        db->drv->close(db);
}

const char *db_errmsg(struct db *db) { return db->errmsg; }
const char *db_backend(struct db *db) { return db->drv->name; }
const char *db_path(struct db *db) { return db->drv->path(db); }
int db_exec(struct db *db, const char *sql) { return db->drv->exec(db, sql); }

int db_prepare(struct db *db, const char *sql, struct db_stmt **out)
{
    return db->drv->prepare(db, sql, out);
}

int db_bind_int64(struct db_stmt *st, int idx, int64_t v) { return st->drv->bind_int64(st, idx, v); }
int db_bind_text(struct db_stmt *st, int idx, const char *s) { return st->drv->bind_text(st, idx, s); }

int db_bind_blob(struct db_stmt *st, int idx, const void *p, size_t n)
{
    return st->drv->bind_blob(st, idx, p, n);
}

int db_bind_null(struct db_stmt *st, int idx) { return st->drv->bind_null(st, idx); }
int db_step(struct db_stmt *st) { return st->drv->step(st); }
int db_reset(struct db_stmt *st) { return st->drv->reset(st); }
int db_column_count(struct db_stmt *st) { return st->drv->column_count(st); }
const char *db_column_name(struct db_stmt *st, int col) { return st->drv->column_name(st, col); }
bool db_column_is_null(struct db_stmt *st, int col) { return st->drv->column_is_null(st, col); }
int64_t db_column_int64(struct db_stmt *st, int col) { return st->drv->column_int64(st, col); }
const char *db_column_text(struct db_stmt *st, int col) { return st->drv->column_text(st, col); }

const void *db_column_blob(struct db_stmt *st, int col, size_t *len)
{
    return st->drv->column_blob(st, col, len);
}

void db_finalize(struct db_stmt *st)
{
    if (st)
        st->drv->finalize(st);
}

int db_begin(struct db *db) { return db->drv->begin(db); }
int db_commit(struct db *db) { return db->drv->commit(db); }
int db_rollback(struct db *db) { return db->drv->rollback(db); }
int64_t db_last_insert_id(struct db *db) { return db->drv->last_insert_id(db); }
int64_t db_changes(struct db *db) { return db->drv->changes(db); }

int db_backup_to(struct db *db, const char *dest_path, char *err, size_t errlen)
{
    return db->drv->backup_to(db, dest_path, err, errlen);
}

/* ---- pool ---- */

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *url;
    int size;
    int opened; /* connections in existence, idle or handed out */
    int nidle;
    struct db **idle; /* a stack: the most recently used connection has warm caches */
};

int db_pool_create(const char *url, int size, struct db_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    if (size < 1) {
        snprintf(err, errlen, "database pool size must be at least 1 (got %d)", size);
        return -EINVAL;
    }
    struct db *first;
    int rc = db_open(url, &first, err, errlen);
    if (rc < 0)
        return rc;
    struct db_pool *p = calloc(1, sizeof *p);
    if (p) {
        p->url = strdup(url);
        p->idle = calloc((size_t)size, sizeof *p->idle);
    }
    if (!p || !p->url || !p->idle) {
        if (p) {
            free(p->url);
            free(p->idle);
        }
        free(p);
        db_close(first);
        snprintf(err, errlen, "out of memory creating the database pool");
        return -ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->size = size;
    p->opened = 1;
    p->idle[p->nidle++] = first;
    *out = p;
    return 0;
}

/*
 * Returns NULL only when a new connection could not be opened (the reason
 * is logged); callers answer that request with an error and carry on.
 */
struct db *db_pool_acquire(struct db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->nidle == 0 && p->opened >= p->size)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->nidle > 0) {
        struct db *db = p->idle[--p->nidle];
        pthread_mutex_unlock(&p->mu);
        return db;
    }
    /* Reserve the slot, then open outside the lock: opening touches the disk. */
    p->opened++;
    pthread_mutex_unlock(&p->mu);

    struct db *db;
    char err[256];
    if (db_open(p->url, &db, err, sizeof err) < 0) {
        log_error("db pool: cannot open another connection: %s", err);
        pthread_mutex_lock(&p->mu);
        p->opened--;
        pthread_cond_signal(&p->cv); /* a waiter may open, or take a released one */
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    return db;
}

void db_pool_release(struct db_pool *p, struct db *db)
{
    if (!db)
        return;
    /* A handler that bailed out mid-transaction must not hand its write lock
     * (and its half-done changes) to whoever takes the connection next. */
    if (db->drv->in_transaction(db)) {
        log_warn("db pool: connection released inside a transaction; rolling it back");
        db_rollback(db);
    }
    pthread_mutex_lock(&p->mu);
    p->idle[p->nidle++] = db;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void db_pool_destroy(struct db_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->nidle != p->opened)
        log_warn("db pool: destroyed with %d connection(s) still in use", p->opened - p->nidle);
    for (int i = 0; i < p->nidle; i++)
        db_close(p->idle[i]);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->idle);
    free(p->url);
    free(p);
}
