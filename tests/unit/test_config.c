/* Config: defaults, the file, the environment, and every kind of error. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

static char tmpdir[256];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hearth-config-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void **state)
{
    struct config c;
    char err[512];
    char *env[] = {NULL};
    assert_int_equal(config_load(&c, NULL, env, err, sizeof err), 0);
    assert_string_equal(c.http.listen, "0.0.0.0:8080");
    assert_string_equal(c.rtmp.listen, "0.0.0.0:1935");
    assert_string_equal(c.storage.data_dir, "./data");
    assert_string_equal(c.db.url, "sqlite:./data/hearth.db");
    assert_string_equal(c.site.name, "Hearth");
    assert_true(c.site.allow_registration);
    assert_false(c.site.require_verification);
    assert_string_equal(c.xmpp.domain, "localhost");
    assert_int_equal(c.http.max_header_bytes, 16 * 1024);
    assert_int_equal(c.http.header_timeout_ms, 10000);
    assert_int_equal(c.log.level, LOG_INFO);
    assert_false(c.debug.echo);
}

static void test_file_and_env(void **state)
{
    const char *path = write_file("ok.conf",
                                  "; comment\n"
                                  "[http]\nlisten = 127.0.0.1:9000\nmax_body_bytes = 2MiB\n"
                                  "header_timeout = 500ms\n"
                                  "[storage]\ndata_dir = /var/lib/hearth\n"
                                  "[site]\nallow_registration = no\nname = My Site\n");
    struct config c;
    char err[512];
    char *env[] = {"HEARTH_HTTP_LISTEN=127.0.0.2:9001", "HEARTH_SITE_REQUIRE_VERIFICATION=true",
                   "HEARTH_HTTP_IDLE_TIMEOUT=2m", "UNRELATED=1", NULL};
    assert_int_equal(config_load(&c, path, env, err, sizeof err), 0);
    assert_string_equal(c.http.listen, "127.0.0.2:9001"); /* env wins over the file */
    assert_int_equal(c.http.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(c.http.header_timeout_ms, 500);
    assert_int_equal(c.http.idle_timeout_ms, 120000);
    assert_string_equal(c.storage.data_dir, "/var/lib/hearth");
    assert_string_equal(c.db.url, "sqlite:/var/lib/hearth/hearth.db");
    assert_false(c.site.allow_registration);
    assert_true(c.site.require_verification);
    assert_string_equal(c.site.name, "My Site");
    assert_string_equal(c.source, path);
}

static void test_db_url_env(void **state)
{
    struct config c;
    char err[512];
    char *env[] = {"DB_URL=sqlite:/tmp/x.db", NULL};
    assert_int_equal(config_load(&c, NULL, env, err, sizeof err), 0);
    assert_string_equal(c.db.url, "sqlite:/tmp/x.db");
    char *env2[] = {"DB_URL=mysql+pymysql://u:p@db/osp", NULL};
    assert_int_equal(config_load(&c, NULL, env2, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "DB_URL"));
    assert_non_null(strstr(err, "db.url"));
}

static void expect_file_error(const char *text, const char *needle1, const char *needle2)
{
    const char *path = write_file("bad.conf", text);
    struct config c;
    char err[512] = "";
    char *env[] = {NULL};
    assert_true(config_load(&c, path, env, err, sizeof err) < 0);
    if (!strstr(err, needle1) || (needle2 && !strstr(err, needle2)))
        fail_msg("error message '%s' lacks '%s' / '%s'", err, needle1, needle2 ? needle2 : "");
}

static void test_file_errors(void **state)
{
    expect_file_error("[http]\nlisten = 127.0.0.1:8080\nlisen = 1\n", "unknown key 'lisen'", ":3:");
    expect_file_error("[htp]\nlisten = 1\n", "unknown section [htp]", NULL);
    expect_file_error("listen = 1\n", "outside any [section]", NULL);
    expect_file_error("[http]\nlisten = localhost\n", "http.listen", "HOST:PORT");
    expect_file_error("[http]\nlisten = 1.2.3.4:99999\n", "http.listen", NULL);
    expect_file_error("[http]\nmax_body_bytes = lots\n", "http.max_body_bytes", "size");
    expect_file_error("[http]\nheader_timeout = 10 parsecs\n", "http.header_timeout", "duration");
    expect_file_error("[http]\nheader_timeout = 1ms\n", "http.header_timeout", "out of range");
    expect_file_error("[server]\nworkers = 0\n", "server.workers", "out of range");
    expect_file_error("[server]\nworkers = -3\n", "server.workers", NULL);
    expect_file_error("[site]\nallow_registration = maybe\n", "site.allow_registration", "true or false");
    expect_file_error("[site]\npublic_url = ftp://x\n", "site.public_url", "http");
    expect_file_error("[xmpp]\ndomain = not a domain\n", "xmpp.domain", NULL);
    expect_file_error("[log]\nlevel = loud\n", "log.level", NULL);
    expect_file_error("[db]\nurl = oracle://x\n", "db.url", NULL);
    expect_file_error("[http\nlisten = 1\n", "syntax error", ":1:");
}

static void test_env_errors(void **state)
{
    struct config c;
    char err[512];
    char *env1[] = {"HEARTH_HTTP_LISTN=1", NULL};
    assert_true(config_load(&c, NULL, env1, err, sizeof err) < 0);
    assert_non_null(strstr(err, "HEARTH_HTTP_LISTN"));
    assert_non_null(strstr(err, "unknown key 'listn'"));
    char *env2[] = {"HEARTH_HTTP_LISTEN=nope", NULL};
    assert_true(config_load(&c, NULL, env2, err, sizeof err) < 0);
    assert_non_null(strstr(err, "http.listen"));
    char *env3[] = {"HEARTH_NOPE=1", NULL};
    assert_true(config_load(&c, NULL, env3, err, sizeof err) < 0);
    /* HEARTH_CONFIG names the file; it is not a key */
    char *env4[] = {"HEARTH_CONFIG=", NULL};
    assert_int_equal(config_load(&c, NULL, env4, err, sizeof err), 0);
}

static void test_missing_file(void **state)
{
    struct config c;
    char err[512];
    char *env[] = {NULL};
    assert_true(config_load(&c, "/nonexistent/hearth.conf", env, err, sizeof err) < 0);
    assert_non_null(strstr(err, "cannot open"));
}

static void test_parsers(void **state)
{
    uint64_t ms;
    size_t sz;
    char host[64];
    int port;
    assert_int_equal(config_parse_duration("15", &ms), 0);
    assert_int_equal(ms, 15000);
    assert_int_equal(config_parse_duration("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_true(config_parse_duration("", &ms) < 0);
    assert_true(config_parse_duration("-1s", &ms) < 0);
    assert_int_equal(config_parse_size("4096", &sz), 0);
    assert_int_equal(sz, 4096);
    assert_int_equal(config_parse_size("1GiB", &sz), 0);
    assert_int_equal(sz, 1u << 30);
    assert_true(config_parse_size("99999999999999999999999", &sz) < 0);
    assert_int_equal(config_parse_listen("[::1]:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8080);
    assert_true(config_parse_listen("[::1]8080", host, sizeof host, &port) < 0);
    assert_true(config_parse_listen(":8080", host, sizeof host, &port) < 0);
}

static void test_roundtrip_write(void **state)
{
    /* What `hearth config` prints must load back to the same values. */
    struct config c, d;
    char err[512];
    char *env[] = {"HEARTH_HTTP_HEADER_TIMEOUT=1500ms", "HEARTH_HTTP_MAX_BODY_BYTES=3MiB", NULL};
    assert_int_equal(config_load(&c, NULL, env, err, sizeof err), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/dump.conf", tmpdir);
    FILE *f = fopen(path, "w");
    config_write(&c, f);
    fclose(f);
    char *none[] = {NULL};
    assert_int_equal(config_load(&d, path, none, err, sizeof err), 0);
    assert_int_equal(d.http.header_timeout_ms, 1500);
    assert_int_equal(d.http.max_body_bytes, 3 << 20);
    assert_string_equal(d.db.url, c.db.url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_db_url_env),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_roundtrip_write),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
