/*
 * Tests for store/db.h on the SQLite driver: URL forms, statements and
 * columns, transactions, error mapping, the online backup and the pool.
 * Each test works in a fresh temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/db.h"

struct fixture {
    char dir[PATH_MAX];
    char url[PATH_MAX + 16];
    struct db *db;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hearth-test-db-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/test.db", f->dir);
    char err[256];
    if (db_open(f->url, &f->db, err, sizeof err) != 0) {
        fprintf(stderr, "db_open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    db_close(f->db);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int64_t query_int(struct db *db, const char *sql)
{
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, sql, &st), 0);
    assert_int_equal(db_step(st), DB_ROW);
    int64_t v = db_column_int64(st, 0);
    db_finalize(st);
    return v;
}

static void query_text(struct db *db, const char *sql, char *out, size_t outlen)
{
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, sql, &st), 0);
    assert_int_equal(db_step(st), DB_ROW);
    const char *s = db_column_text(st, 0);
    snprintf(out, outlen, "%s", s ? s : "(null)");
    db_finalize(st);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_url_forms(void **state)
{
    struct fixture *f = *state;
    char cwd[PATH_MAX], err[256], path[PATH_MAX + 64], url[PATH_MAX + 64];
    struct db *db;
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);

    /* sqlite:PATH, relative */
    assert_int_equal(db_open("sqlite:a.db", &db, err, sizeof err), 0);
    assert_string_equal(db_backend(db), "sqlite");
    assert_string_equal(db_path(db), "a.db");
    db_close(db);
    snprintf(path, sizeof path, "%s/a.db", f->dir);
    assert_true(exists(path));

    /* sqlite://PATH is relative too, and missing directories are made */
    assert_int_equal(db_open("sqlite://sub/dir/b.db", &db, err, sizeof err), 0);
    assert_string_equal(db_path(db), "sub/dir/b.db");
    assert_int_equal(db_exec(db, "CREATE TABLE t (x)"), 0);
    db_close(db);
    snprintf(path, sizeof path, "%s/sub/dir/b.db", f->dir);
    assert_true(exists(path));

    assert_int_equal(chdir(cwd), 0);

    /* sqlite:///ABS */
    snprintf(url, sizeof url, "sqlite://%s/abs/deep/c.db", f->dir);
    assert_int_equal(db_open(url, &db, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/abs/deep/c.db", f->dir);
    assert_string_equal(db_path(db), path);
    db_close(db);
    assert_true(exists(path));

    /* sqlite:/ABS */
    snprintf(url, sizeof url, "sqlite:%s/d.db", f->dir);
    assert_int_equal(db_open(url, &db, err, sizeof err), 0);
    db_close(db);
    snprintf(path, sizeof path, "%s/d.db", f->dir);
    assert_true(exists(path));

    /* the file holds password hashes: nobody else may read it */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_bad_urls(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct db *db = (struct db *)1;

    assert_true(db_open("postgresql://hearth:secret@db/hearth", &db, err, sizeof err) < 0);
    assert_null(db);
    assert_string_equal(err, "PostgreSQL support is not built into this Hearth yet; use sqlite:PATH");
    assert_true(db_open("postgres://db/hearth", &db, err, sizeof err) < 0);
    assert_string_equal(err, "PostgreSQL support is not built into this Hearth yet; use sqlite:PATH");

    assert_true(db_open("mysql://root:hunter2@db/x", &db, err, sizeof err) < 0);
    assert_non_null(strstr(err, "'mysql'"));
    assert_null(strstr(err, "hunter2"));

    assert_true(db_open("sqlite:", &db, err, sizeof err) < 0);
    assert_true(db_open("sqlite://", &db, err, sizeof err) < 0);
    assert_true(db_open("", &db, err, sizeof err) < 0);
    assert_true(db_open(NULL, &db, err, sizeof err) < 0);

    /* a file that is not a database fails at open, not on the first query */
    char path[PATH_MAX + 32], url[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database file at all. ", fp);
    fclose(fp);
    snprintf(url, sizeof url, "sqlite:%s", path);
    assert_true(db_open(url, &db, err, sizeof err) < 0);
    assert_non_null(strstr(err, "not a database"));

    /* a directory where the file should be */
    snprintf(url, sizeof url, "sqlite:%s", f->dir);
    assert_true(db_open(url, &db, err, sizeof err) < 0);
}

static void test_pragmas(void **state)
{
    struct fixture *f = *state;
    char mode[32];
    query_text(f->db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_int(f->db, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(query_int(f->db, "PRAGMA busy_timeout"), 5000);
}

static void test_statements(void **state)
{
    struct fixture *f = *state;
    struct db *db = f->db;
    assert_int_equal(db_exec(db, "CREATE TABLE t (i INTEGER, s TEXT, b BLOB, n TEXT);"
                                 "CREATE TABLE u (x);"),
                     0);
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "INSERT INTO t (i, s, b, n) VALUES (?, ?, ?, ?)", &st), 0);
    static const unsigned char blob[] = {0, 1, 2, 0xff, 0};
    for (int k = 0; k < 3; k++) {
        char s[32];
        snprintf(s, sizeof s, "row %d ☕", k);
        assert_int_equal(db_bind_int64(st, 1, INT64_C(1) << 40 | k), 0);
        assert_int_equal(db_bind_text(st, 2, s), 0);
        assert_int_equal(db_bind_blob(st, 3, blob, sizeof blob), 0);
        assert_int_equal(k == 1 ? db_bind_text(st, 4, NULL) : db_bind_null(st, 4), 0);
        assert_int_equal(db_step(st), DB_DONE);
        assert_int_equal(db_changes(db), 1);
        assert_int_equal(db_last_insert_id(db), k + 1);
        assert_int_equal(db_reset(st), 0);
    }
    /* a placeholder that does not exist */
    assert_true(db_bind_int64(st, 9, 1) < 0);
    db_finalize(st);

    assert_int_equal(db_prepare(db, "SELECT i, s, b, n, length(b) AS len FROM t WHERE i >= ? ORDER BY i",
                                &st),
                     0);
    assert_int_equal(db_bind_int64(st, 1, INT64_C(1) << 40 | 1), 0);
    assert_int_equal(db_column_count(st), 5);
    assert_string_equal(db_column_name(st, 0), "i");
    assert_string_equal(db_column_name(st, 4), "len");
    int rows = 0;
    int rc;
    while ((rc = db_step(st)) == DB_ROW) {
        rows++;
        assert_int_equal(db_column_int64(st, 0), INT64_C(1) << 40 | rows);
        char want[32];
        snprintf(want, sizeof want, "row %d ☕", rows);
        assert_string_equal(db_column_text(st, 1), want);
        size_t len = 0;
        const void *p = db_column_blob(st, 2, &len);
        assert_int_equal(len, sizeof blob);
        assert_memory_equal(p, blob, sizeof blob);
        assert_true(db_column_is_null(st, 3));
        assert_null(db_column_text(st, 3));
        assert_false(db_column_is_null(st, 1));
        assert_int_equal(db_column_int64(st, 4), 5);
    }
    assert_int_equal(rc, DB_DONE);
    assert_int_equal(rows, 2);
    /* reset clears bindings and starts over */
    assert_int_equal(db_reset(st), 0);
    assert_int_equal(db_bind_int64(st, 1, 0), 0);
    rows = 0;
    while (db_step(st) == DB_ROW)
        rows++;
    assert_int_equal(rows, 3);
    db_finalize(st);
    db_finalize(NULL);

    /* an empty blob is not NULL */
    assert_int_equal(db_prepare(db, "INSERT INTO u (x) VALUES (?)", &st), 0);
    assert_int_equal(db_bind_blob(st, 1, NULL, 0), 0);
    assert_int_equal(db_step(st), DB_DONE);
    db_finalize(st);
    assert_int_equal(query_int(db, "SELECT count(*) FROM u WHERE x IS NOT NULL AND length(x) = 0"), 1);

    /* errors say what went wrong */
    assert_int_equal(db_exec(db, "SELEKT 1"), DB_EERROR);
    assert_non_null(strstr(db_errmsg(db), "syntax error"));
    assert_true(db_prepare(db, "SELECT nope FROM t", &st) < 0);
    assert_null(st);
    assert_non_null(strstr(db_errmsg(db), "no such column"));
    assert_true(db_prepare(db, "   ", &st) < 0);
}

static void test_transactions(void **state)
{
    struct fixture *f = *state;
    struct db *db = f->db;
    assert_int_equal(db_exec(db, "CREATE TABLE t (x INTEGER)"), 0);

    assert_int_equal(db_begin(db), 0);
    assert_int_equal(db_exec(db, "INSERT INTO t VALUES (1)"), 0);
    assert_int_equal(db_rollback(db), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM t"), 0);

    assert_int_equal(db_begin(db), 0);
    assert_int_equal(db_exec(db, "INSERT INTO t VALUES (2)"), 0);
    assert_int_equal(db_exec(db, "INSERT INTO t VALUES (3)"), 0);
    assert_int_equal(db_last_insert_id(db), 2);
    assert_int_equal(db_commit(db), 0);
    assert_int_equal(query_int(db, "SELECT sum(x) FROM t"), 5);

    /* no nesting; rolling back nothing is fine, committing nothing is not */
    assert_int_equal(db_begin(db), 0);
    assert_true(db_begin(db) < 0);
    assert_int_equal(db_rollback(db), 0);
    assert_int_equal(db_rollback(db), 0);
    assert_true(db_commit(db) < 0);

    /* the error of a failed statement survives the rollback that follows */
    assert_int_equal(db_begin(db), 0);
    assert_true(db_exec(db, "INSERT INTO nope VALUES (1)") < 0);
    assert_int_equal(db_rollback(db), 0);
    assert_non_null(strstr(db_errmsg(db), "no such table: nope"));

    /* UPDATE counts */
    assert_int_equal(db_exec(db, "UPDATE t SET x = x + 1"), 0);
    assert_int_equal(db_changes(db), 2);
}

static void test_constraints(void **state)
{
    struct fixture *f = *state;
    struct db *db = f->db;
    assert_int_equal(db_exec(db, "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                                 " flag INTEGER NOT NULL DEFAULT 0 CHECK (flag IN (0, 1)));"
                                 "CREATE TABLE c (id INTEGER PRIMARY KEY,"
                                 " p_id INTEGER NOT NULL REFERENCES p (id) ON DELETE CASCADE);"
                                 "INSERT INTO p (id, name) VALUES (1, 'a');"
                                 "INSERT INTO c (p_id) VALUES (1);"),
                     0);
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "INSERT INTO p (name) VALUES (?)", &st), 0);
    assert_int_equal(db_bind_text(st, 1, "a"), 0);
    assert_int_equal(db_step(st), DB_ECONSTRAINT);
    assert_non_null(strstr(db_errmsg(db), "UNIQUE"));
    db_reset(st);
    assert_int_equal(db_bind_text(st, 1, NULL), 0);
    assert_int_equal(db_step(st), DB_ECONSTRAINT);
    assert_non_null(strstr(db_errmsg(db), "NOT NULL"));
    db_finalize(st);

    assert_int_equal(db_exec(db, "INSERT INTO p (name) VALUES ('a')"), DB_ECONSTRAINT);
    assert_int_equal(db_exec(db, "INSERT INTO p (name, flag) VALUES ('b', 2)"), DB_ECONSTRAINT);
    assert_non_null(strstr(db_errmsg(db), "CHECK"));
    /* foreign keys are enforced and cascade */
    assert_int_equal(db_exec(db, "INSERT INTO c (p_id) VALUES (42)"), DB_ECONSTRAINT);
    assert_non_null(strstr(db_errmsg(db), "FOREIGN KEY"));
    assert_int_equal(db_exec(db, "DELETE FROM p WHERE id = 1"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM c"), 0);
}

static void test_busy(void **state)
{
    struct fixture *f = *state;
    struct db *other;
    char err[256];
    assert_int_equal(db_open(f->url, &other, err, sizeof err), 0);
    assert_int_equal(db_exec(f->db, "CREATE TABLE t (x)"), 0);
    /* 5 s is right for the server and too long for a test */
    assert_int_equal(db_exec(other, "PRAGMA busy_timeout = 50"), 0);

    assert_int_equal(db_begin(f->db), 0);
    assert_int_equal(db_begin(other), DB_EBUSY);
    /* WAL: the reader is not blocked by the writer */
    assert_int_equal(query_int(other, "SELECT count(*) FROM t"), 0);
    assert_int_equal(db_exec(f->db, "INSERT INTO t VALUES (1)"), 0);
    assert_int_equal(db_commit(f->db), 0);
    assert_int_equal(db_begin(other), 0);
    assert_int_equal(db_exec(other, "INSERT INTO t VALUES (2)"), 0);
    assert_int_equal(db_commit(other), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM t"), 2);
    db_close(other);
}

static bool dir_has_partial(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".partial-"))
            found = true;
    closedir(d);
    return found;
}

static void test_backup(void **state)
{
    struct fixture *f = *state;
    struct db *db = f->db;
    assert_int_equal(db_exec(db, "CREATE TABLE t (x INTEGER, pad TEXT);"
                                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                                 " WHERE i < 5000)"
                                 " INSERT INTO t SELECT i, hex(randomblob(100)) FROM n;"),
                     0);
    char dest[PATH_MAX + 64], dir[PATH_MAX + 32], url[PATH_MAX + 80], err[512];
    snprintf(dir, sizeof dir, "%s/backups/nested", f->dir);
    snprintf(dest, sizeof dest, "%s/copy.db", dir);
    assert_int_equal(db_backup_to(db, dest, err, sizeof err), 0);
    assert_false(dir_has_partial(dir));

    /* the source keeps working and changing; a second backup replaces the first */
    assert_int_equal(db_exec(db, "DELETE FROM t WHERE x > 4000"), 0);
    struct db *copy;
    snprintf(url, sizeof url, "sqlite:%s", dest);
    assert_int_equal(db_open(url, &copy, err, sizeof err), 0);
    assert_int_equal(query_int(copy, "SELECT count(*) FROM t"), 5000);
    assert_int_equal(query_int(copy, "SELECT sum(x) FROM t"), 5000 * 5001 / 2);
    db_close(copy);

    assert_int_equal(db_backup_to(db, dest, err, sizeof err), 0);
    assert_int_equal(db_open(url, &copy, err, sizeof err), 0);
    assert_int_equal(query_int(copy, "SELECT count(*) FROM t"), 4000);
    db_close(copy);
    assert_false(dir_has_partial(dir));

    struct stat st;
    assert_int_equal(stat(dest, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* a destination that cannot be written leaves nothing behind */
    snprintf(dest, sizeof dest, "%s/test.db/inside-a-file.db", f->dir);
    assert_true(db_backup_to(db, dest, err, sizeof err) < 0);
    assert_true(strlen(err) > 0);
}

struct waiter {
    struct db_pool *pool;
    atomic_int got;
    struct db *db;
};

static void *pool_waiter(void *arg)
{
    struct waiter *w = arg;
    w->db = db_pool_acquire(w->pool);
    atomic_store(&w->got, 1);
    return NULL;
}

static void test_pool(void **state)
{
    struct fixture *f = *state;
    struct db_pool *pool;
    char err[256];
    assert_int_equal(db_exec(f->db, "CREATE TABLE t (x)"), 0);
    assert_int_equal(db_pool_create(f->url, 2, &pool, err, sizeof err), 0);

    struct db *a = db_pool_acquire(pool);
    struct db *b = db_pool_acquire(pool);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(query_int(b, "SELECT count(*) FROM t"), 0);

    /* a third caller waits for a release */
    struct waiter w = {.pool = pool};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pool_waiter, &w), 0);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(atomic_load(&w.got), 0);

    /* released inside a transaction: rolled back before anyone else gets it */
    assert_int_equal(db_begin(a), 0);
    assert_int_equal(db_exec(a, "INSERT INTO t VALUES (1)"), 0);
    db_pool_release(pool, a);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&w.got), 1);
    assert_ptr_equal(w.db, a);
    assert_int_equal(db_begin(w.db), 0); /* would fail if the old one were still open */
    assert_int_equal(query_int(w.db, "SELECT count(*) FROM t"), 0);
    assert_int_equal(db_commit(w.db), 0);

    db_pool_release(pool, w.db);
    db_pool_release(pool, b);
    db_pool_release(pool, NULL);
    db_pool_destroy(pool);
    db_pool_destroy(NULL);

    assert_true(db_pool_create("postgres://x/y", 4, &pool, err, sizeof err) < 0);
    assert_null(pool);
    assert_true(db_pool_create(f->url, 0, &pool, err, sizeof err) < 0);
}

struct hammer {
    struct db_pool *pool;
    int failures;
};

static void *pool_hammer(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 50; i++) {
        struct db *db = db_pool_acquire(h->pool);
        if (!db || db_begin(db) != 0 || db_exec(db, "INSERT INTO t VALUES (1)") != 0 ||
            db_commit(db) != 0)
            h->failures++;
        db_pool_release(h->pool, db);
    }
    return NULL;
}

static void test_pool_threads(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct db_pool *pool;
    assert_int_equal(db_exec(f->db, "CREATE TABLE t (x)"), 0);
    assert_int_equal(db_pool_create(f->url, 3, &pool, err, sizeof err), 0);
    struct hammer h[6];
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        h[i] = (struct hammer){.pool = pool};
        assert_int_equal(pthread_create(&th[i], NULL, pool_hammer, &h[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].failures, 0);
    }
    db_pool_destroy(pool);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM t"), 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_url_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
