/*
 * Schema migrations.
 *
 * Migrations are numbered SQL files (src/store/migrations/<backend>/NNNN_name.sql)
 * compiled into the binary. At start-up they are applied in order, each in its
 * own transaction, and recorded in schema_migrations with a SHA-256 of their
 * text. We refuse, and change nothing, when:
 *   - an applied migration's text differs from the one in this binary;
 *   - the database has migrations this binary does not know (a newer Hearth).
 * Before migrating a database that already holds a schema, a copy goes to
 * <data_dir>/backups/ through the online backup API.
 */
#ifndef HEARTH_STORE_MIGRATE_H
#define HEARTH_STORE_MIGRATE_H

#include <stddef.h>
#include <stdio.h>

struct db;

struct migration {
    int version;
    const char *name; /* "0001_init" */
    const char *sql;
};

/* The migrations compiled in for a backend ("sqlite"), in order. */
const struct migration *migrate_list(const char *backend, size_t *count);

struct migrate_status {
    int current;   /* highest applied version, 0 for an empty database */
    int latest;    /* highest version this binary knows */
    int pending;   /* how many would be applied */
};

/*
 * Check the recorded migrations against the compiled ones. Returns 0, or a
 * negative code with err saying why the database is refused.
 */
int migrate_check(struct db *db, struct migrate_status *st, char *err, size_t errlen);

/*
 * Check, back up when needed (into backup_dir, when not NULL), and apply what
 * is pending. backup_path receives the copy's path ("" when none was made).
 */
int migrate_up(struct db *db, const char *backup_dir, char *backup_path, size_t bplen,
               char *err, size_t errlen);

/* Apply migrations up to `target` only: for tests of older schemas. */
int migrate_up_to(struct db *db, int target, char *err, size_t errlen);

/*
 * The engines behind migrate_check and migrate_up / migrate_up_to, on any
 * list sorted by version: tests hand them lists of their own (a migration
 * that fails, a changed text). target < 0 means the whole list.
 */
int migrate_check_list(struct db *db, const struct migration *list, size_t count,
                       struct migrate_status *st, char *err, size_t errlen);
int migrate_up_list(struct db *db, const struct migration *list, size_t count, int target,
                    const char *backup_dir, char *backup_path, size_t bplen, char *err,
                    size_t errlen);

/* Print the table of `hearth migrate status`. */
int migrate_print_status(struct db *db, FILE *out, char *err, size_t errlen);

#endif
