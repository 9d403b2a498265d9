/*
 * What a database backend implements: private to src/store/.
 *
 * db.c owns the public functions of db.h, picks a driver from the URL's
 * scheme and forwards every call through the driver's table. A backend
 * embeds `struct db` / `struct db_stmt` as the first member of its own
 * structs, so the front can reach the table without knowing the backend and
 * the backend can cast back. Adding PostgreSQL means one more file with one
 * more table, and one more line in db.c's scheme list.
 */
#ifndef HEARTH_STORE_DB_DRIVER_H
#define HEARTH_STORE_DB_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

struct db_driver {
    const char *name; /* what db_backend() answers */
    /* Given the whole URL; the driver knows its own URL forms. */
    int (*open)(const char *url, struct db **out, char *err, size_t errlen);
    void (*close)(struct db *db);
    const char *(*path)(struct db *db);
    int (*exec)(struct db *db, const char *sql);
    int (*prepare)(struct db *db, const char *sql, struct db_stmt **out);
    int (*bind_int64)(struct db_stmt *st, int idx, int64_t v);
    int (*bind_text)(struct db_stmt *st, int idx, const char *s);
    int (*bind_blob)(struct db_stmt *st, int idx, const void *p, size_t n);
    int (*bind_null)(struct db_stmt *st, int idx);
    int (*step)(struct db_stmt *st);
    int (*reset)(struct db_stmt *st);
    int (*column_count)(struct db_stmt *st);
    const char *(*column_name)(struct db_stmt *st, int col);
    bool (*column_is_null)(struct db_stmt *st, int col);
    int64_t (*column_int64)(struct db_stmt *st, int col);
    const char *(*column_text)(struct db_stmt *st, int col);
    const void *(*column_blob)(struct db_stmt *st, int col, size_t *len);
    void (*finalize)(struct db_stmt *st);
    int (*begin)(struct db *db);
    int (*commit)(struct db *db);
    int (*rollback)(struct db *db); /* 0 when no transaction was open */
    bool (*in_transaction)(struct db *db);
    int64_t (*last_insert_id)(struct db *db);
    int64_t (*changes)(struct db *db);
    int (*backup_to)(struct db *db, const char *dest_path, char *err, size_t errlen);
};

#define DB_ERRMSG_MAX 512

struct db {
    const struct db_driver *drv;
    /* The last failure on this connection, kept by us rather than read back
     * from the backend: a later successful call (a rollback) must not wipe
     * the reason the caller is about to report. */
    char errmsg[DB_ERRMSG_MAX];
};

struct db_stmt {
    const struct db_driver *drv;
    struct db *db;
};

extern const struct db_driver db_sqlite_driver;

void db_set_errmsg(struct db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
