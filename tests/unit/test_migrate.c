/*
 * Tests for store/migrate.h.
 *
 * The upgrade test is generic: for every schema version k this build knows
 * (and for an empty database), it builds a database at version k the way
 * that version's Hearth would have left it, with the fixture data of every
 * version up to k written against its own schema
 * (tests/unit/fixtures/migrations/NNNN_data.sql), migrates to the latest,
 * and runs each NNNN_check.sql. A new migration therefore needs fixtures,
 * and the test fails until they exist. The refusals (changed text, newer
 * database, unknown or missing versions) must leave the database exactly as
 * it was, which is checked by fingerprinting the schema and the data.
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
#include <regex.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/db.h"
#include "store/migrate.h"

struct fixture {
    char dir[PATH_MAX];
    char backups[PATH_MAX + 16];
    char url[PATH_MAX + 32];
    struct db *db;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hearth-test-migrate-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->backups, sizeof f->backups, "%s/backups", f->dir);
    snprintf(f->url, sizeof f->url, "sqlite:%s/hearth.db", f->dir);
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

/* Start over with an empty database in the same directory. */
static void reopen_fresh(struct fixture *f)
{
    db_close(f->db);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    char err[256];
    assert_int_equal(db_open(f->url, &f->db, err, sizeof err), 0);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, fp);
    fclose(fp);
    s[got] = '\0';
    return s;
}

static const char *source_root(void)
{
    const char *r = getenv("HEARTH_SOURCE_ROOT");
    return r ? r : ".";
}

static char *fixture_sql(int version, const char *kind)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tests/unit/fixtures/migrations/%04d_%s.sql", source_root(),
             version, kind);
    return read_file(path);
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

/* Everything migrate could have touched: the schema, the history, the data. */
static char *fingerprint(struct db *db)
{
    static const char *const queries[] = {
        "SELECT group_concat(type || ' ' || name || ' ' || COALESCE(sql, ''), '\n')"
        " FROM (SELECT * FROM sqlite_master ORDER BY type, name)",
        "SELECT group_concat(version || ' ' || name || ' ' || checksum || ' ' || applied_at, '\n')"
        " FROM (SELECT * FROM schema_migrations ORDER BY version)",
        "SELECT total_changes()",
        "SELECT group_concat(name || ' ' || COALESCE(email, '') || ' ' || roles, '\n')"
        " FROM (SELECT * FROM users ORDER BY id)",
    };
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        struct db_stmt *st;
        if (db_prepare(db, queries[i], &st) != 0) {
            len += (size_t)snprintf(out + len, cap - len, "[no %zu]\n", i);
            continue;
        }
        assert_int_equal(db_step(st), DB_ROW);
        const char *s = db_column_text(st, 0);
        len += (size_t)snprintf(out + len, cap - len, "%s\n", s ? s : "(null)");
        db_finalize(st);
    }
    return out;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char h[32];
    crypto_hash_sha256(h, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, h, sizeof h);
}

static void run_check(struct db *db, int version)
{
    char *sql = fixture_sql(version, "check");
    assert_non_null(sql);
    struct db_stmt *st;
    if (db_prepare(db, sql, &st) != 0)
        fail_msg("%04d_check.sql: %s", version, db_errmsg(db));
    assert_int_equal(db_step(st), DB_ROW);
    if (db_column_int64(st, 0) != 1)
        fail_msg("%04d_check.sql did not return 1 after the upgrade", version);
    assert_int_equal(db_step(st), DB_DONE);
    db_finalize(st);
    free(sql);
}

/* ---- the compiled list ---- */

static void test_compiled_list_matches_files(void **state)
{
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);
    assert_non_null(list);
    assert_true(count >= 1);
    assert_int_equal(list[0].version, 1);
    assert_string_equal(list[0].name, "0001_init");
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            assert_true(list[i].version > list[i - 1].version);
        char want[8];
        snprintf(want, sizeof want, "%04d_", list[i].version);
        assert_memory_equal(list[i].name, want, 5);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/src/store/migrations/sqlite/%s.sql", source_root(),
                 list[i].name);
        char *text = read_file(path);
        assert_non_null(text);
        assert_string_equal(list[i].sql, text); /* byte for byte */
        free(text);
    }
    /* and every file in the directory was compiled in */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/src/store/migrations/sqlite", source_root());
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0)
            files++;
    }
    closedir(d);
    assert_int_equal(files, count);

    assert_null(migrate_list("oracle", &count));
    assert_int_equal(count, 0);
}

static void test_every_migration_has_fixtures(void **state)
{
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);
    for (size_t i = 0; i < count; i++) {
        char *data = fixture_sql(list[i].version, "data");
        char *check = fixture_sql(list[i].version, "check");
        if (!data || !check)
            fail_msg("migration %s needs tests/unit/fixtures/migrations/%04d_data.sql and "
                     "%04d_check.sql (see the README there)",
                     list[i].name, list[i].version, list[i].version);
        free(data);
        free(check);
    }
}

/* ---- applying ---- */

static void test_fresh_to_latest(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);

    struct migrate_status st;
    assert_int_equal(migrate_check(f->db, &st, err, sizeof err), 0);
    assert_int_equal(st.current, 0);
    assert_int_equal(st.latest, list[count - 1].version);
    assert_int_equal(st.pending, (int)count);
    /* checking wrote nothing, not even schema_migrations */
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master"), 0);

    strcpy(backup, "junk");
    assert_int_equal(migrate_up(f->db, f->backups, backup, sizeof backup, err, sizeof err), 0);
    assert_string_equal(backup, ""); /* nothing worth backing up */
    assert_false(exists(f->backups));

    assert_int_equal(migrate_check(f->db, &st, err, sizeof err), 0);
    assert_int_equal(st.current, st.latest);
    assert_int_equal(st.pending, 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM schema_migrations"), (int64_t)count);
    for (size_t i = 0; i < count; i++) {
        struct db_stmt *q;
        assert_int_equal(db_prepare(f->db, "SELECT name, checksum, applied_at FROM schema_migrations"
                                           " WHERE version = ?",
                                    &q),
                         0);
        db_bind_int64(q, 1, list[i].version);
        assert_int_equal(db_step(q), DB_ROW);
        char sum[65];
        sha256_hex(list[i].sql, sum);
        assert_string_equal(db_column_text(q, 0), list[i].name);
        assert_string_equal(db_column_text(q, 1), sum);
        assert_true(db_column_int64(q, 2) > 1700000000);
        db_finalize(q);
    }
    /* the first schema is there */
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                      " AND name IN ('users', 'topics', 'channels', 'streams',"
                                      " 'settings')"),
                     5);
    /* and a fresh database has the default topics (0005) */
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM topics"), 10);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM topics WHERE slug = 'science-technology'"
                                      " AND name = 'Science & Technology'"),
                     1);
}

static void test_upgrade_from_every_version(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);

    /* k = 0 is an empty database; k = count is already the latest, which
     * at least proves that the newest fixtures fit the newest schema. */
    for (size_t k = 0; k <= count; k++) {
        int kv = k ? list[k - 1].version : 0;
        reopen_fresh(f);
        for (size_t i = 0; i < k; i++) {
            assert_int_equal(migrate_up_to(f->db, list[i].version, err, sizeof err), 0);
            char *data = fixture_sql(list[i].version, "data");
            assert_non_null(data);
            if (db_exec(f->db, data) != 0)
                fail_msg("%04d_data.sql at schema %d: %s", list[i].version, list[i].version,
                         db_errmsg(f->db));
            free(data);
        }
        struct migrate_status st;
        assert_int_equal(migrate_check(f->db, &st, err, sizeof err), 0);
        assert_int_equal(st.current, kv);

        if (migrate_up(f->db, f->backups, backup, sizeof backup, err, sizeof err) != 0)
            fail_msg("upgrade from schema %d: %s", kv, err);
        assert_int_equal(migrate_check(f->db, &st, err, sizeof err), 0);
        assert_int_equal(st.current, st.latest);
        for (size_t i = 0; i < k; i++)
            run_check(f->db, list[i].version);

        if (k > 0 && k < count) {
            /* the copy taken before the upgrade is the old database, whole */
            assert_true(strlen(backup) > 0);
            char suffix[32];
            snprintf(suffix, sizeof suffix, "-v%d.db", kv);
            assert_non_null(strstr(backup, suffix));
            char url[PATH_MAX + 16];
            snprintf(url, sizeof url, "sqlite:%s", backup);
            struct db *old;
            assert_int_equal(db_open(url, &old, err, sizeof err), 0);
            assert_int_equal(migrate_check(old, &st, err, sizeof err), 0);
            assert_int_equal(st.current, kv);
            for (size_t i = 0; i < k; i++)
                run_check(old, list[i].version);
            db_close(old);
        } else {
            assert_string_equal(backup, "");
        }
    }
}

static void test_second_run_is_noop(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    assert_int_equal(migrate_up(f->db, f->backups, backup, sizeof backup, err, sizeof err), 0);
    assert_int_equal(db_exec(f->db, "INSERT INTO settings VALUES ('k', 'v')"), 0);
    char *before = fingerprint(f->db);
    assert_int_equal(migrate_up(f->db, f->backups, backup, sizeof backup, err, sizeof err), 0);
    assert_string_equal(backup, "");
    assert_false(exists(f->backups));
    char *after = fingerprint(f->db);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_up_to_bounds(void **state)
{
    struct fixture *f = *state;
    char err[512];
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);
    assert_int_equal(migrate_up_to(f->db, list[count - 1].version + 1, err, sizeof err), -EINVAL);
    assert_int_equal(migrate_up_to(f->db, 0, err, sizeof err), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master"), 0);
    assert_int_equal(migrate_up_to(f->db, list[0].version, err, sizeof err), 0);
    assert_int_equal(migrate_up_to(f->db, 0, err, sizeof err), -EINVAL); /* no going back */
}

/* ---- refusals ---- */

static void assert_refused_unchanged(struct fixture *f, const char *needle)
{
    char err[1024], backup[PATH_MAX];
    struct migrate_status st;
    char *before = fingerprint(f->db);
    assert_true(migrate_check(f->db, &st, err, sizeof err) < 0);
    if (!strstr(err, needle))
        fail_msg("expected '%s' in: %s", needle, err);
    strcpy(backup, "junk");
    assert_true(migrate_up(f->db, f->backups, backup, sizeof backup, err, sizeof err) < 0);
    assert_non_null(strstr(err, needle));
    assert_string_equal(backup, "");
    assert_false(exists(f->backups)); /* not even a backup was made */
    char *after = fingerprint(f->db);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_tampered_checksum_refused(void **state)
{
    struct fixture *f = *state;
    char err[512];
    assert_int_equal(migrate_up(f->db, NULL, NULL, 0, err, sizeof err), 0);
    /* the version-1 rows name topics that 0005's defaults already hold */
    assert_int_equal(db_exec(f->db, "DELETE FROM topics"), 0);
    char *data = fixture_sql(1, "data");
    assert_int_equal(db_exec(f->db, data), 0);
    free(data);
    /* as if 0001_init.sql had been edited since it was applied */
    assert_int_equal(db_exec(f->db, "UPDATE schema_migrations SET checksum ="
                                    " '0000000000000000000000000000000000000000000000000000000000000000'"
                                    " WHERE version = 1"),
                     0);
    assert_refused_unchanged(f, "migration 0001_init was changed after it was applied to this "
                                "database (checksum mismatch); refusing to start");
}

static void test_changed_text_refused(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    const struct migration orig[] = {{1, "0001_a", "CREATE TABLE a (x);"}};
    const struct migration edited[] = {{1, "0001_a", "CREATE TABLE a (x, y);"},
                                       {2, "0002_b", "CREATE TABLE b (x);"}};
    assert_int_equal(migrate_up_list(f->db, orig, 1, -1, NULL, NULL, 0, err, sizeof err), 0);
    char *before = fingerprint(f->db);
    struct migrate_status st;
    assert_true(migrate_check_list(f->db, edited, 2, &st, err, sizeof err) < 0);
    assert_non_null(strstr(err, "migration 0001_a was changed after it was applied"));
    assert_true(migrate_up_list(f->db, edited, 2, -1, f->backups, backup, sizeof backup, err,
                                sizeof err) < 0);
    assert_false(exists(f->backups));
    char *after = fingerprint(f->db);
    assert_string_equal(before, after);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master WHERE name = 'b'"), 0);
    free(before);
    free(after);
}

static void test_newer_database_refused(void **state)
{
    struct fixture *f = *state;
    char err[512], want[256];
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);
    assert_int_equal(migrate_up(f->db, NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(db_exec(f->db, "INSERT INTO schema_migrations VALUES"
                                    " (9999, '9999_from_the_future', 'abc', 1700000000)"),
                     0);
    snprintf(want, sizeof want,
             "this database was written by a newer Hearth (schema version 9999; this build "
             "knows up to %d); refusing to touch it",
             list[count - 1].version);
    assert_refused_unchanged(f, want);

    /* status still shows what is there, then says no */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_true(migrate_print_status(f->db, out, err, sizeof err) < 0);
    fclose(out);
    assert_non_null(strstr(buf, "9999_from_the_future"));
    assert_non_null(strstr(buf, "not in this build"));
    assert_non_null(strstr(buf, "refused: this database was written by a newer Hearth"));
    free(buf);
}

static void test_unknown_renamed_and_missing_refused(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct migrate_status st;
    const struct migration one_three[] = {{1, "0001_a", "CREATE TABLE a (x);"},
                                          {3, "0003_c", "CREATE TABLE c (x);"}};
    const struct migration one_two_three[] = {{1, "0001_a", "CREATE TABLE a (x);"},
                                              {2, "0002_b", "CREATE TABLE b (x);"},
                                              {3, "0003_c", "CREATE TABLE c (x);"}};
    const struct migration renamed[] = {{1, "0001_aa", "CREATE TABLE a (x);"},
                                        {3, "0003_c", "CREATE TABLE c (x);"}};
    const struct migration two_three[] = {{2, "0002_b", "CREATE TABLE b (x);"},
                                          {3, "0003_c", "CREATE TABLE c (x);"},
                                          {4, "0004_d", "CREATE TABLE d (x);"}};
    const struct migration unordered[] = {{2, "0002_b", "CREATE TABLE b (x);"},
                                          {1, "0001_a", "CREATE TABLE a (x);"}};
    assert_int_equal(migrate_up_list(f->db, one_three, 2, -1, NULL, NULL, 0, err, sizeof err), 0);
    char *before = fingerprint(f->db);

    /* a migration slipped in below one already applied */
    assert_true(migrate_check_list(f->db, one_two_three, 3, &st, err, sizeof err) < 0);
    assert_non_null(strstr(err, "migration 0002_b is not applied"));
    assert_true(migrate_up_list(f->db, one_two_three, 3, -1, NULL, NULL, 0, err, sizeof err) < 0);
    /* the same version under another name */
    assert_true(migrate_check_list(f->db, renamed, 2, &st, err, sizeof err) < 0);
    assert_non_null(strstr(err, "applied to this database as '0001_a' but this build calls it "
                                "'0001_aa'"));
    /* an applied version this build does not have */
    assert_true(migrate_check_list(f->db, two_three, 3, &st, err, sizeof err) < 0);
    assert_non_null(strstr(err, "migration 0001 (0001_a) applied, which this build does not have"));
    assert_true(migrate_check_list(f->db, unordered, 2, &st, err, sizeof err) < 0);
    assert_non_null(strstr(err, "not in order"));

    char *after = fingerprint(f->db);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_failed_migration_rolls_back(void **state)
{
    struct fixture *f = *state;
    char err[512];
    const struct migration bad[] = {
        {1, "0001_a", "CREATE TABLE a (x); INSERT INTO a VALUES (1);"},
        {2, "0002_bad", "CREATE TABLE b (y); INSERT INTO a VALUES (2); INSERT INTO nope VALUES (1);"},
        {3, "0003_c", "CREATE TABLE c (x);"},
    };
    assert_true(migrate_up_list(f->db, bad, 3, -1, NULL, NULL, 0, err, sizeof err) < 0);
    assert_non_null(strstr(err, "migration 0002_bad failed"));
    assert_non_null(strstr(err, "no such table: nope"));
    assert_non_null(strstr(err, "stays at schema version 1"));
    /* 0001 stays, nothing of 0002 is left, 0003 was never tried */
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master WHERE name = 'a'"), 1);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master WHERE name IN ('b', 'c')"), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM a"), 1);
    assert_int_equal(query_int(f->db, "SELECT max(version) FROM schema_migrations"), 1);

    /* a fixed release goes on from there */
    const struct migration fixed[] = {
        bad[0],
        {2, "0002_bad", "CREATE TABLE b (y); INSERT INTO a VALUES (2);"},
        bad[2],
    };
    char backup[PATH_MAX];
    assert_int_equal(migrate_up_list(f->db, fixed, 3, -1, f->backups, backup, sizeof backup, err,
                                     sizeof err),
                     0);
    assert_int_equal(query_int(f->db, "SELECT max(version) FROM schema_migrations"), 3);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM a"), 2);
    assert_non_null(strstr(backup, "-v1.db"));
}

static void test_backup_before_upgrade(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    const struct migration list[] = {
        {1, "0001_a", "CREATE TABLE a (x);"},
        {2, "0002_b", "ALTER TABLE a ADD COLUMN y NOT NULL DEFAULT 7;"},
    };
    assert_int_equal(migrate_up_list(f->db, list, 2, 1, f->backups, backup, sizeof backup, err,
                                     sizeof err),
                     0);
    assert_string_equal(backup, ""); /* the database was empty */
    assert_int_equal(db_exec(f->db, "INSERT INTO a VALUES (1), (2), (3)"), 0);

    assert_int_equal(migrate_up_list(f->db, list, 2, -1, f->backups, backup, sizeof backup, err,
                                     sizeof err),
                     0);
    /* <backups>/hearth-YYYYmmddTHHMMSSZ-v1.db */
    regex_t re;
    assert_int_equal(regcomp(&re, "/backups/hearth-[0-9]{8}T[0-9]{6}Z-v1\\.db$", REG_EXTENDED), 0);
    if (regexec(&re, backup, 0, NULL, 0) != 0)
        fail_msg("unexpected backup name %s", backup);
    regfree(&re);
    assert_int_equal(query_int(f->db, "SELECT sum(y) FROM a"), 21);

    char url[PATH_MAX + 16];
    snprintf(url, sizeof url, "sqlite:%s", backup);
    struct db *old;
    assert_int_equal(db_open(url, &old, err, sizeof err), 0);
    assert_int_equal(query_int(old, "SELECT count(*) FROM a"), 3);
    assert_int_equal(query_int(old, "SELECT max(version) FROM schema_migrations"), 1);
    struct db_stmt *st;
    assert_true(db_prepare(old, "SELECT y FROM a", &st) < 0); /* the old schema */
    db_close(old);

    /* a second upgrade in the same second does not overwrite the first copy */
    const struct migration more[] = {list[0], list[1], {3, "0003_c", "CREATE TABLE c (x);"}};
    char backup2[PATH_MAX];
    assert_int_equal(migrate_up_list(f->db, more, 3, -1, f->backups, backup2, sizeof backup2, err,
                                     sizeof err),
                     0);
    assert_non_null(strstr(backup2, "-v2"));
    assert_string_not_equal(backup, backup2);
    assert_true(exists(backup));
}

static void test_untracked_tables_backed_up(void **state)
{
    struct fixture *f = *state;
    char err[512], backup[PATH_MAX];
    /* tables from before anything was tracked */
    assert_int_equal(db_exec(f->db, "CREATE TABLE legacy (x); INSERT INTO legacy VALUES (1);"), 0);
    const struct migration list[] = {{1, "0001_a", "CREATE TABLE a (x);"}};
    assert_int_equal(migrate_up_list(f->db, list, 1, -1, f->backups, backup, sizeof backup, err,
                                     sizeof err),
                     0);
    assert_non_null(strstr(backup, "-v0.db"));
    assert_true(exists(backup));
}

static void test_print_status(void **state)
{
    struct fixture *f = *state;
    char err[512];
    size_t count;
    const struct migration *list = migrate_list("sqlite", &count);
    char *buf = NULL, want[128];
    size_t len = 0;

    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(migrate_print_status(f->db, out, err, sizeof err), 0);
    fclose(out);
    assert_non_null(strstr(buf, "version"));
    assert_non_null(strstr(buf, "0001_init"));
    assert_non_null(strstr(buf, "pending"));
    snprintf(want, sizeof want, "schema version 0 of %d, %zu pending\n", list[count - 1].version,
             count);
    assert_non_null(strstr(buf, want));
    free(buf);

    assert_int_equal(migrate_up(f->db, NULL, NULL, 0, err, sizeof err), 0);
    buf = NULL;
    out = open_memstream(&buf, &len);
    assert_int_equal(migrate_print_status(f->db, out, err, sizeof err), 0);
    fclose(out);
    assert_null(strstr(buf, "pending"));
    assert_non_null(strstr(buf, " UTC"));
    snprintf(want, sizeof want, "schema version %d of %d, up to date\n", list[count - 1].version,
             list[count - 1].version);
    assert_non_null(strstr(buf, want));
    free(buf);

    /* a changed migration is pointed at */
    assert_int_equal(db_exec(f->db, "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1"), 0);
    buf = NULL;
    out = open_memstream(&buf, &len);
    assert_true(migrate_print_status(f->db, out, err, sizeof err) < 0);
    fclose(out);
    assert_non_null(strstr(buf, "CHANGED"));
    assert_non_null(strstr(buf, "refused: migration 0001_init was changed"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compiled_list_matches_files),
        cmocka_unit_test(test_every_migration_has_fixtures),
        cmocka_unit_test_setup_teardown(test_fresh_to_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_from_every_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_run_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_up_to_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_checksum_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_text_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_renamed_and_missing_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_migration_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_before_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untracked_tables_backed_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_status, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
