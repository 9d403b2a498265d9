/*
 * Tests for app/settings.h against a real, migrated SQLite database: the
 * defaults, the rules each value must keep, the normal form that is stored,
 * and a value that got into the table by other means (raw SQL) being read
 * as the default rather than trusted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/settings.h"
#include "store/db.h"
#include "store/migrate.h"
#include "testdb.h"

static char tmpdir[PATH_MAX];
static struct db *db;

static int setup(void **state)
{
    if (testdb_open("settings", tmpdir, &db) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    testdb_close(tmpdir, db);
    return 0;
}

static void raw_set(const char *key, const char *value)
{
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "INSERT INTO settings (key, value) VALUES (?, ?)"
                                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value", &st), 0);
    db_bind_text(st, 1, key);
    db_bind_text(st, 2, value);
    assert_int_equal(db_step(st), DB_DONE);
    db_finalize(st);
}

static void expect(const char *key, const char *value, bool is_default)
{
    char v[SETTING_VALUE_MAX], err[256];
    bool def = !is_default;
    assert_int_equal(settings_get(db, key, v, &def, err, sizeof err), 0);
    assert_string_equal(v, value);
    assert_true(def == is_default);
}

static void refused(const char *key, const char *value, int want, const char *needle)
{
    char err[256] = "", out[SETTING_VALUE_MAX];
    int rc = settings_set(db, key, value, out, err, sizeof err);
    if (rc != want)
        fail_msg("%s = '%s': expected %d, got %d (%s)", key, value, want, rc, err);
    if (!strstr(err, needle))
        fail_msg("expected '%s' in: %s", needle, err);
}

static void test_known_keys(void **state)
{
    size_t n;
    const struct setting_def *all = settings_all(&n);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].key, "registration_roles");
    assert_string_equal(all[1].key, "max_channels_per_user");
    for (size_t i = 0; i < n; i++) {
        char out[SETTING_VALUE_MAX], err[256];
        assert_ptr_equal(settings_find(all[i].key), &all[i]);
        assert_non_null(all[i].about);
        /* Every default keeps its own rule. */
        assert_int_equal(all[i].check(all[i].def, out, err, sizeof err), 0);
        assert_string_equal(out, all[i].def);
    }
    assert_null(settings_find("internal.access_token_secret"));
    assert_null(settings_find(NULL));
}

static void test_defaults(void **state)
{
    /* Migrations 0002 and 0003 store both; with the rows gone, the defaults. */
    expect("registration_roles", "streamer,user", false);
    expect("max_channels_per_user", "5", false);
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "DELETE FROM settings WHERE key IN ('registration_roles', 'max_channels_per_user')", &st), 0);
    assert_int_equal(db_step(st), DB_DONE);
    db_finalize(st);
    expect("registration_roles", "streamer,user", true);
    expect("max_channels_per_user", "5", true);
    char v[SETTING_VALUE_MAX], err[256];
    assert_int_equal(settings_get(db, "internal.access_token_secret", v, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "registration_roles"));
}

static void test_roles_rules(void **state)
{
    char out[SETTING_VALUE_MAX], err[256];
    assert_int_equal(settings_set(db, "registration_roles", " User , uploader,user", out, err, sizeof err), 0);
    assert_string_equal(out, "uploader,user");
    expect("registration_roles", "uploader,user", false);
    refused("registration_roles", "wizard", -EINVAL, "unknown role 'wizard'");
    refused("registration_roles", "", -EINVAL, "at least one role");
    refused("registration_roles", "user,admin", -EINVAL, "may not be admins");
    refused("registration_roles", "ADMIN", -EINVAL, "may not be admins");
    /* A refused value changed nothing. */
    expect("registration_roles", "uploader,user", false);
}

static void test_cap_rules(void **state)
{
    char out[SETTING_VALUE_MAX], err[256];
    assert_int_equal(settings_set(db, "max_channels_per_user", "12", out, err, sizeof err), 0);
    assert_string_equal(out, "12");
    expect("max_channels_per_user", "12", false);
    assert_int_equal(settings_set(db, "max_channels_per_user", "007", out, err, sizeof err), 0);
    assert_string_equal(out, "7");
    static const char *const bad[] = {"0", "-1", "five", "5x", " 5", "", "100001", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        refused("max_channels_per_user", bad[i], -EINVAL, "whole number from 1 to 100000");
    assert_int_equal(settings_set(db, "max_channels_per_user", "100000", out, err, sizeof err), 0);
    expect("max_channels_per_user", "100000", false);
    refused("no_such_key", "1", -ENOENT, "no setting 'no_such_key'");
    char big[SETTING_VALUE_MAX + 8];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    refused("max_channels_per_user", big, -EINVAL, "at most");
}

static void test_bad_stored_value_reads_as_default(void **state)
{
    raw_set("max_channels_per_user", "lots");
    expect("max_channels_per_user", "5", true);
    raw_set("registration_roles", "admin,user");
    expect("registration_roles", "streamer,user", true);
    raw_set("registration_roles", "user");
    expect("registration_roles", "user", false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_keys),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_roles_rules),
        cmocka_unit_test(test_cap_rules),
        cmocka_unit_test(test_bad_stored_value_reads_as_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
