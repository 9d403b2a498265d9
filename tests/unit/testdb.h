/*
 * A migrated SQLite database in a fresh temporary directory, for the unit
 * tests that need one (accounts, auth, settings, viewers), and its removal.
 */
#ifndef HEARTH_TESTS_TESTDB_H
#define HEARTH_TESTS_TESTDB_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "store/db.h"
#include "store/migrate.h"

static int testdb_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* /tmp/hearth-test-NAME-XXXXXX/hearth.db, migrated to the newest version;
 * dir receives the directory. 0, or -1 with the reason on stderr. */
static inline int testdb_open(const char *name, char dir[PATH_MAX], struct db **db)
{
    snprintf(dir, PATH_MAX, "/tmp/hearth-test-%s-XXXXXX", name);
    if (!mkdtemp(dir))
        return -1;
    char url[PATH_MAX + 32], err[512];
    snprintf(url, sizeof url, "sqlite:%s/hearth.db", dir);
    if (db_open(url, db, err, sizeof err) != 0 || migrate_up(*db, NULL, NULL, 0, err, sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static inline void testdb_close(const char *dir, struct db *db)
{
    db_close(db);
    nftw(dir, testdb_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
