/*
 * The database, as the rest of Hearth sees it.
 *
 * A small interface that SQLite implements today and PostgreSQL will
 * implement later: statements with '?' placeholders (a PostgreSQL driver
 * rewrites them to $n), transactions, rows read column by column, and the id
 * of the last inserted row. Nothing above src/store/ includes sqlite3.h.
 *
 * A `struct db` is one connection and is used by one thread at a time. The
 * pool hands connections to worker threads; the loop thread never touches
 * the database (DESIGN.md, Threads).
 *
 * Times are stored as integer Unix seconds, so both backends agree.
 */
#ifndef HEARTH_STORE_DB_H
#define HEARTH_STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;
struct db_stmt;
struct db_pool;

/* db_step() results; errors are negative. */
enum { DB_DONE = 0, DB_ROW = 1 };

/* Error codes beyond -errno values. */
#define DB_ECONSTRAINT (-10001) /* unique / foreign key / check violated */
#define DB_EBUSY (-10002)       /* locked longer than the busy timeout */
#define DB_EERROR (-10003)      /* anything else; db_errmsg() says what */

/*
 * Open "sqlite:PATH" (also sqlite://PATH and sqlite:///ABS). Creates the file
 * and its directory. Sets WAL, foreign keys on and a busy timeout. A
 * postgresql:// URL fails with a message saying that backend is not built.
 */
int db_open(const char *url, struct db **out, char *err, size_t errlen);
void db_close(struct db *db);
const char *db_errmsg(struct db *db);
/* "sqlite" or "postgresql". */
const char *db_backend(struct db *db);
/* For SQLite, the file path; NULL otherwise. */
const char *db_path(struct db *db);

/* Run one or more statements without parameters or results. */
int db_exec(struct db *db, const char *sql);

int db_prepare(struct db *db, const char *sql, struct db_stmt **out);
/* Placeholders are numbered from 1. */
int db_bind_int64(struct db_stmt *st, int idx, int64_t v);
int db_bind_text(struct db_stmt *st, int idx, const char *s); /* NULL binds NULL */
int db_bind_blob(struct db_stmt *st, int idx, const void *p, size_t n);
int db_bind_null(struct db_stmt *st, int idx);
int db_step(struct db_stmt *st);
int db_reset(struct db_stmt *st);
int db_column_count(struct db_stmt *st);
const char *db_column_name(struct db_stmt *st, int col);
bool db_column_is_null(struct db_stmt *st, int col);
int64_t db_column_int64(struct db_stmt *st, int col);
/* Valid until the next step/reset/finalize; NULL for SQL NULL. */
const char *db_column_text(struct db_stmt *st, int col);
const void *db_column_blob(struct db_stmt *st, int col, size_t *len);
void db_finalize(struct db_stmt *st);

int db_begin(struct db *db); /* takes the write lock at once (BEGIN IMMEDIATE) */
int db_commit(struct db *db);
int db_rollback(struct db *db);

int64_t db_last_insert_id(struct db *db);
int64_t db_changes(struct db *db);

/*
 * Copy the whole database to dest_path while others may use it
 * (SQLite's online backup API). Used before migrations and by backups.
 */
int db_backup_to(struct db *db, const char *dest_path, char *err, size_t errlen);

/*
 * A pool of connections to one URL for the worker threads. db_pool_acquire
 * blocks until a connection is free; at most `size` are opened. It returns
 * NULL only when opening a new connection failed (the reason is logged).
 * A connection released inside a transaction is rolled back first.
 */
int db_pool_create(const char *url, int size, struct db_pool **out, char *err, size_t errlen);
struct db *db_pool_acquire(struct db_pool *pool);
void db_pool_release(struct db_pool *pool, struct db *db);
void db_pool_destroy(struct db_pool *pool);

#endif
