/*
 * Tests for app/auth.h and app/mail.h: the pure pieces against published
 * vectors (RFC 6238 and RFC 4226 for TOTP/HOTP, RFC 4648 for base32, FIPS
 * 180-2 for SHA-256), then auth_identify against a real, migrated SQLite
 * database with hand-built requests: cookie, CSRF, Origin, API keys, expiry,
 * disabled and unverified users.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/accounts.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/mail.h"
#include "core/config.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"
#include "store/migrate.h"
#include "testdb.h"

/* ---- TOTP / HOTP ---- */

static const unsigned char rfc_seed[] = "12345678901234567890"; /* 20 bytes used */

static void test_hotp_rfc4226(void **state)
{
    /* RFC 4226, appendix D */
    static const uint32_t want[] = {755224, 287082, 359152, 969429, 338314,
                                    254676, 287922, 162583, 399871, 520489};
    for (uint64_t i = 0; i < 10; i++)
        assert_int_equal(auth_hotp(rfc_seed, 20, i, 6), want[i]);
}

static void test_totp_rfc6238(void **state)
{
    /* RFC 6238, appendix B, the SHA1 column (8 digits, T0 = 0, X = 30) */
    static const struct {
        int64_t t;
        uint32_t code;
    } v[] = {
        {59, 94287082},         {1111111109, 7081804},   {1111111111, 14050471},
        {1234567890, 89005924}, {2000000000, 69279037}, {20000000000LL, 65353130},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        assert_int_equal(auth_hotp(rfc_seed, 20, (uint64_t)(v[i].t / 30), 8), v[i].code);
}

static void code_at(int64_t t, char out[7])
{
    snprintf(out, 7, "%06u", auth_hotp(rfc_seed, 20, (uint64_t)(t / 30), 6));
}

static void test_totp_check_window_and_replay(void **state)
{
    const int64_t now = 1234567890; /* step 41152263 */
    int64_t step = -1;
    char c[7];

    code_at(now, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, 0, &step), 0);
    assert_int_equal(step, now / 30);
    /* one step either side is accepted, two are not */
    code_at(now - 30, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, 0, &step), 0);
    assert_int_equal(step, now / 30 - 1);
    code_at(now + 30, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, 0, &step), 0);
    assert_int_equal(step, now / 30 + 1);
    code_at(now - 60, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, 0, &step), -EACCES);
    code_at(now + 60, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, 0, &step), -EACCES);

    /* a code works once: its step, or an earlier one, was used */
    code_at(now, c);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, now / 30, &step), -EACCES);
    assert_int_equal(auth_totp_check(rfc_seed, 20, c, now, now / 30 - 1, &step), 0);

    /* "123 456" as typed; anything else is refused */
    char spaced[8] = {c[0], c[1], c[2], ' ', c[3], c[4], c[5], 0};
    assert_int_equal(auth_totp_check(rfc_seed, 20, spaced, now, 0, &step), 0);
    assert_int_equal(auth_totp_check(rfc_seed, 20, "", now, 0, &step), -EACCES);
    assert_int_equal(auth_totp_check(rfc_seed, 20, "12345", now, 0, &step), -EACCES);
    assert_int_equal(auth_totp_check(rfc_seed, 20, "1234567", now, 0, &step), -EACCES);
    assert_int_equal(auth_totp_check(rfc_seed, 20, "12a456", now, 0, &step), -EACCES);
    assert_int_equal(auth_totp_check(rfc_seed, 20, NULL, now, 0, &step), -EACCES);
    /* the wrong key */
    code_at(now, c);
    assert_int_equal(auth_totp_check((const unsigned char *)"another key 20 bytes", 20, c, now,
                                     0, &step),
                     -EACCES);
}

static void test_base32(void **state)
{
    /* RFC 4648, section 10, without padding */
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"", "MY", "MZXQ", "MZXW6", "MZXW6YQ", "MZXW6YTB",
                                      "MZXW6YTBOI"};
    char b[32];
    unsigned char d[32];
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(auth_base32_encode((const unsigned char *)in[i], strlen(in[i]), b,
                                            sizeof b),
                         0);
        assert_string_equal(b, out[i]);
        long n = auth_base32_decode(out[i], d, sizeof d);
        assert_int_equal(n, (long)strlen(in[i]));
        assert_memory_equal(d, in[i], (size_t)n);
    }
    assert_int_equal(auth_base32_decode("mzxw6ytboi======", d, sizeof d), 6);
    assert_memory_equal(d, "foobar", 6);
    assert_int_equal(auth_base32_decode("MZXW 6YTB OI", d, sizeof d), 6);
    assert_int_equal(auth_base32_decode("MZ1W", d, sizeof d), -EINVAL); /* 1 is not base32 */
    assert_int_equal(auth_base32_decode("MZXW6YTBOI", d, 3), -EINVAL);  /* too small */
    assert_int_equal(auth_base32_encode((const unsigned char *)"foobar", 6, b, 10),
                     -ENAMETOOLONG);

    /* a secret as handed out round-trips and yields the RFC's codes */
    char secret[AUTH_TOTP_SECRET_B32 + 1];
    assert_int_equal(auth_base32_encode(rfc_seed, 20, secret, sizeof secret), 0);
    assert_string_equal(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_int_equal(auth_base32_decode(secret, d, sizeof d), 20);
    assert_int_equal(auth_hotp(d, 20, 1, 6), 287082);
}

/* ---- tokens, hashes, CSRF ---- */

static void test_tokens_and_hashes(void **state)
{
    char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1];
    auth_token_new(a);
    auth_token_new(b);
    assert_int_equal(strlen(a), AUTH_TOKEN_LEN);
    assert_true(auth_token_shaped(a));
    assert_true(auth_token_shaped(b));
    assert_string_not_equal(a, b);

    char h[AUTH_HASH_HEX + 1];
    auth_token_hash("abc", h); /* FIPS 180-2 */
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    auth_token_hash("", h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    auth_token_hash(a, h);
    assert_int_equal(strlen(h), AUTH_HASH_HEX);
    assert_null(strstr(h, a));

    assert_false(auth_token_shaped(NULL));
    assert_false(auth_token_shaped(""));
    char bad[AUTH_TOKEN_LEN + 2];
    memcpy(bad, a, sizeof a);
    bad[5] = '+'; /* standard base64, not base64url */
    assert_false(auth_token_shaped(bad));
    memcpy(bad, a, sizeof a);
    bad[AUTH_TOKEN_LEN] = 'x';
    bad[AUTH_TOKEN_LEN + 1] = '\0';
    assert_false(auth_token_shaped(bad));
    bad[AUTH_TOKEN_LEN - 1] = '\0';
    assert_false(auth_token_shaped(bad));
}

static void test_csrf_compare(void **state)
{
    assert_true(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", "VarU5A6NI4pQ11A9gjbj"));
    assert_false(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", "VarU5A6NI4pQ11A9gjbk"));
    assert_false(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", "VarU5A6NI4pQ11A9gjb"));
    assert_false(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", "VarU5A6NI4pQ11A9gjbjj"));
    assert_false(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", ""));
    assert_false(auth_csrf_equal("VarU5A6NI4pQ11A9gjbj", NULL));
    assert_false(auth_csrf_equal("", ""));  /* no session token: nothing matches */
    assert_false(auth_csrf_equal(NULL, NULL));
}

/* ---- cookies ---- */

static void test_cookie_build(void **state)
{
    char c[256];
    assert_int_equal(auth_cookie_build(c, sizeof c, "tok", 3600, false), 0);
    assert_string_equal(c, "hearth_session=tok; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax");
    assert_int_equal(auth_cookie_build(c, sizeof c, "tok", 3600, true), 0);
    assert_string_equal(c,
                        "hearth_session=tok; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure");
    assert_int_equal(auth_cookie_build(c, sizeof c, "", 0, true), 0);
    assert_string_equal(c, "hearth_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure");
    /* nothing that could add attributes or split the header */
    assert_int_equal(auth_cookie_build(c, sizeof c, "a; Domain=evil", 1, false), -EINVAL);
    assert_int_equal(auth_cookie_build(c, sizeof c, "a\r\nX: y", 1, false), -EINVAL);
    assert_int_equal(auth_cookie_build(c, 20, "tok", 1, false), -ENAMETOOLONG);

    assert_true(auth_url_is_https("https://tv.example.org"));
    assert_true(auth_url_is_https("HTTPS://tv.example.org/"));
    assert_false(auth_url_is_https("http://tv.example.org"));
    assert_false(auth_url_is_https(NULL));
}

static void test_cookie_get(void **state)
{
    char v[64];
    const char *h = "theme=dark; xhearth_session=nope; hearth_session=one;hearth_session=\"two\" ;"
                    " other=x=y";
    assert_int_equal(auth_cookie_get(h, "hearth_session", 0, v, sizeof v), 0);
    assert_string_equal(v, "one");
    assert_int_equal(auth_cookie_get(h, "hearth_session", 1, v, sizeof v), 0);
    assert_string_equal(v, "two");
    assert_int_equal(auth_cookie_get(h, "hearth_session", 2, v, sizeof v), -ENOENT);
    assert_int_equal(auth_cookie_get(h, "other", 0, v, sizeof v), 0);
    assert_string_equal(v, "x=y");
    assert_int_equal(auth_cookie_get(h, "theme", 0, v, 4), -ENAMETOOLONG);
    assert_int_equal(auth_cookie_get(h, "missing", 0, v, sizeof v), -ENOENT);
    assert_int_equal(auth_cookie_get(NULL, "theme", 0, v, sizeof v), -ENOENT);
    assert_int_equal(auth_cookie_get("", "theme", 0, v, sizeof v), -ENOENT);
    assert_int_equal(auth_cookie_get("hearth_session=", "hearth_session", 0, v, sizeof v), 0);
    assert_string_equal(v, "");
}

/* ---- origins ---- */

static void test_origin(void **state)
{
    const char *site = "https://tv.example.org/";
    assert_true(auth_origin_allowed(site, NULL, "tv.example.org"));
    assert_true(auth_origin_allowed(site, "https://tv.example.org", NULL));
    assert_true(auth_origin_allowed(site, "https://TV.Example.ORG:443", NULL));
    assert_true(auth_origin_allowed("http://127.0.0.1:8080", "http://127.0.0.1:8080", NULL));
    /* the Host the request was sent to (public_url not set up yet, a LAN address) */
    assert_true(auth_origin_allowed(site, "http://192.168.1.5:8080", "192.168.1.5:8080"));
    assert_true(auth_origin_allowed(site, "http://[::1]:8080", "[::1]:8080"));
    assert_true(auth_origin_allowed(site, "https://tv.example.org", "tv.example.org:443"));

    assert_false(auth_origin_allowed(site, "https://evil.example", "tv.example.org"));
    assert_false(auth_origin_allowed(site, "https://tv.example.org.evil.example", "evil"));
    assert_false(auth_origin_allowed(site, "http://tv.example.org", NULL)); /* scheme */
    assert_false(auth_origin_allowed(site, "https://tv.example.org:8443", NULL));
    assert_false(auth_origin_allowed(site, "null", "tv.example.org"));
    assert_false(auth_origin_allowed(site, "", "tv.example.org"));
    assert_false(auth_origin_allowed(site, "file://", "tv.example.org"));
    assert_false(auth_origin_allowed(site, "https://user@tv.example.org", NULL));
    assert_false(auth_origin_allowed(site, "http://127.0.0.1:8081", "127.0.0.1:8080"));
}

/* ---- throttle ---- */

static void test_throttle_window(void **state)
{
    struct auth_throttle *t = auth_throttle_new(64, 3, 900);
    assert_non_null(t);
    const int64_t t0 = 1000000;
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0), 0);
    auth_throttle_fail(t, "ip:1.2.3.4", t0);
    auth_throttle_fail(t, "ip:1.2.3.4", t0 + 10);
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0 + 20), 0);
    auth_throttle_fail(t, "ip:1.2.3.4", t0 + 20);
    /* the third failure closes the door until the window (from the first) is over */
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0 + 20), 880);
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0 + 899), 1);
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0 + 900), 0);
    /* and then it counts afresh */
    auth_throttle_fail(t, "ip:1.2.3.4", t0 + 901);
    assert_int_equal(auth_throttle_check(t, "ip:1.2.3.4", t0 + 901), 0);

    /* keys are apart */
    for (int i = 0; i < 3; i++)
        auth_throttle_fail(t, "acct:alice", t0);
    assert_true(auth_throttle_check(t, "acct:alice", t0) > 0);
    assert_int_equal(auth_throttle_check(t, "acct:alicf", t0), 0);
    assert_int_equal(auth_throttle_check(t, "acct:bob", t0), 0);
    /* a success clears the account */
    auth_throttle_clear(t, "acct:alice");
    assert_int_equal(auth_throttle_check(t, "acct:alice", t0), 0);
    auth_throttle_free(t);
}

static void test_throttle_full_table(void **state)
{
    /* A tiny table flooded with keys: bounded, and a fresh victim still counts. */
    struct auth_throttle *t = auth_throttle_new(8, 2, 60);
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "ip:10.0.%d.%d", i / 256, i % 256);
        auth_throttle_fail(t, key, 100 + i / 1000);
    }
    auth_throttle_fail(t, "acct:victim", 200);
    auth_throttle_fail(t, "acct:victim", 200);
    assert_true(auth_throttle_check(t, "acct:victim", 200) > 0);
    auth_throttle_free(t);
    assert_null(auth_throttle_new(4, 2, 60)); /* smaller than a probe run */
    assert_null(auth_throttle_new(64, 0, 60));
}

static void test_throttle_ip_key(void **state)
{
    char k[96];
    auth_throttle_ip_key("1.2.3.4:5678", k, sizeof k);
    assert_string_equal(k, "ip:1.2.3.4");
    auth_throttle_ip_key("[2001:db8:1:2:3:4:5:6]:443", k, sizeof k);
    assert_string_equal(k, "ip6:2001:db8:1:2::/64");
    auth_throttle_ip_key("[2001:db8:1:2:ffff::1]:1", k, sizeof k);
    assert_string_equal(k, "ip6:2001:db8:1:2::/64"); /* same /64, same key */
    auth_throttle_ip_key("[::ffff:10.1.2.3]:80", k, sizeof k);
    assert_string_equal(k, "ip:10.1.2.3");
    auth_throttle_ip_key("?", k, sizeof k);
    assert_string_equal(k, "ip:?");
}

/* ---- mail ---- */

static void test_mail_format(void **state)
{
    char *m = NULL;
    assert_int_equal(mail_format("Hearth <noreply@tv.example.org>", "a@example.org",
                                 "Reset your password", "line one\nline two\n\nhttps://x/y\n",
                                 1700000000, &m),
                     0);
    assert_non_null(strstr(m, "From: Hearth <noreply@tv.example.org>\r\n"));
    assert_non_null(strstr(m, "To: a@example.org\r\n"));
    assert_non_null(strstr(m, "Subject: Reset your password\r\n"));
    assert_non_null(strstr(m, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    assert_non_null(strstr(m, "@tv.example.org>\r\n"));
    assert_non_null(strstr(m, "\r\n\r\nline one\r\nline two\r\n\r\nhttps://x/y\r\n"));
    for (char *p = m; *p; p++) /* every LF is part of a CRLF */
        if (*p == '\n')
            assert_true(p > m && p[-1] == '\r');
    free(m);

    /* a subject outside ASCII is an RFC 2047 encoded word */
    assert_int_equal(mail_format("x@y.z", "a@example.org", "Café ☕", "b", 0, &m), 0);
    assert_non_null(strstr(m, "Subject: =?UTF-8?B?Q2Fmw6kg4piV?=\r\n"));
    free(m);

    /* header injection */
    assert_int_equal(mail_format("x@y.z", "a@example.org", "hi\r\nBcc: all@x", "b", 0, &m),
                     -EINVAL);
    assert_null(m);
    assert_int_equal(mail_format("x@y.z", "a@example.org\nBcc: all@x", "hi", "b", 0, &m),
                     -EINVAL);

    char a[128];
    assert_int_equal(mail_address_of("Hearth TV <noreply@tv.example.org>", a, sizeof a), 0);
    assert_string_equal(a, "noreply@tv.example.org");
    assert_int_equal(mail_address_of("  noreply@tv.example.org ", a, sizeof a), 0);
    assert_string_equal(a, "noreply@tv.example.org");
    assert_int_equal(mail_address_of("nobody", a, sizeof a), -EINVAL);
    assert_int_equal(mail_address_of("<a@b> <c>", a, sizeof a), -EINVAL);

    struct config cfg;
    config_defaults(&cfg);
    char from[CONFIG_STR + 16], err[256];
    mail_from(&cfg, from, sizeof from);
    assert_string_equal(from, "noreply@localhost");
    snprintf(cfg.site.public_url, sizeof cfg.site.public_url, "https://TV.example.org:8443/x");
    mail_from(&cfg, from, sizeof from);
    assert_string_equal(from, "noreply@tv.example.org");
    assert_int_equal(mail_config_check(&cfg, err, sizeof err), 0);
    snprintf(cfg.smtp.tls, sizeof cfg.smtp.tls, "ssl");
    assert_int_equal(mail_config_check(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "smtp.tls"));
    snprintf(cfg.smtp.tls, sizeof cfg.smtp.tls, "none");
    snprintf(cfg.smtp.from, sizeof cfg.smtp.from, "not an address");
    assert_int_equal(mail_config_check(&cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "smtp.from"));

    /* with smtp.host empty, mail_send only logs, and refuses bad headers */
    config_defaults(&cfg);
    assert_int_equal(mail_send(&cfg, "a@example.org", "subject", "body\nhttps://link\n"), 0);
    assert_int_equal(mail_send(&cfg, "a@example.org", "two\nlines", "body"), -EINVAL);
    assert_int_equal(mail_send(&cfg, "not-an-address", "subject", "body"), -EINVAL);
}

/* ---- auth_identify against a database ---- */

static char tmpdir[PATH_MAX];
static struct db *db;
static struct config cfg;
static struct app app;
static struct user alice, bob;

static int db_setup(void **state)
{
    if (testdb_open("auth", tmpdir, &db) != 0)
        return -1;
    char err[512];
    config_defaults(&cfg);
    snprintf(cfg.site.public_url, sizeof cfg.site.public_url, "https://tv.example.org");
    app.cfg = &cfg;
    if (account_user_add(db, "alice", "alice@example.org", "streamer,user", "password-alice",
                         &alice, err, sizeof err) != 0 ||
        account_user_add(db, "bob", NULL, "admin", "password-bob", &bob, err, sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int db_teardown(void **state)
{
    testdb_close(tmpdir, db);
    return 0;
}

static void sql(const char *text)
{
    if (db_exec(db, text) != 0)
        fail_msg("%s: %s", text, db_errmsg(db));
}

/* A session row for user id; its token and CSRF token come back. */
static void make_session(int64_t user_id, int64_t expires_at, char token[AUTH_TOKEN_LEN + 1],
                         char csrf[AUTH_TOKEN_LEN + 1])
{
    char hash[AUTH_HASH_HEX + 1], q[512];
    auth_token_new(token);
    auth_token_new(csrf);
    auth_token_hash(token, hash);
    snprintf(q, sizeof q,
             "INSERT INTO sessions (user_id, token_hash, csrf_token, created_at, last_seen,"
             " expires_at) VALUES (%lld, '%s', '%s', 1, 1, %lld)",
             (long long)user_id, hash, csrf, (long long)expires_at);
    sql(q);
}

static void make_key(int64_t user_id, const char *expires_sql, char key[AUTH_API_KEY_LEN + 1])
{
    char token[AUTH_TOKEN_LEN + 1], hash[AUTH_HASH_HEX + 1], q[512];
    auth_token_new(token);
    snprintf(key, AUTH_API_KEY_LEN + 1, "hk_%s", token);
    auth_token_hash(key, hash);
    snprintf(q, sizeof q,
             "INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, expires_at)"
             " VALUES (%lld, 'k', '%s', 'hk_', 1, %s)",
             (long long)user_id, hash, expires_sql);
    sql(q);
}

static void req_init(struct http_request *r, const char *method)
{
    memset(r, 0, sizeof *r);
    r->method_name = method;
    r->path = r->url = (char *)"/api/v1/test";
    snprintf(r->remote, sizeof r->remote, "127.0.0.1:1234");
}

static void req_header(struct http_request *r, const char *name, const char *value)
{
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
}

static void req_free(struct http_request *r)
{
    buf_free(&r->res.headers);
    buf_free(&r->res.body);
}

static void identify(struct http_request *r, struct auth_ctx *a)
{
    assert_int_equal(auth_identify(&app, db, r, a), 0);
}

static void test_identify_guest(void **state)
{
    struct http_request r;
    struct auth_ctx a;
    req_init(&r, "GET");
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    assert_false(auth_is_user(&a));
    assert_false(a.write);
    assert_true(a.csrf_ok);
    assert_false(auth_require_user(&r, &a));
    assert_int_equal(r.res.status, 401);
    assert_non_null(strstr(r.res.body.data, "\"unauthenticated\""));
    req_free(&r);

    /* a cookie that names no session is a guest, not an error */
    char cookie[128];
    char token[AUTH_TOKEN_LEN + 1];
    auth_token_new(token);
    snprintf(cookie, sizeof cookie, "hearth_session=%s", token);
    req_init(&r, "POST");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    assert_true(a.write);
    assert_true(a.csrf_ok);
    req_free(&r);
}

static void test_identify_session_and_csrf(void **state)
{
    char token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1], cookie[128];
    make_session(alice.id, util_now_unix() + 3600, token, csrf);
    snprintf(cookie, sizeof cookie, "theme=x; hearth_session=%s", token);

    struct http_request r;
    struct auth_ctx a;
    req_init(&r, "GET");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_VIA_SESSION);
    assert_int_equal(a.user.id, alice.id);
    assert_string_equal(a.user.name, "alice");
    assert_string_equal(a.csrf_token, csrf);
    assert_true(auth_require_user(&r, &a)); /* a read needs no token */
    assert_true(auth_has_role(&a, "streamer"));
    assert_false(auth_has_role(&a, "admin"));
    assert_false(auth_is_admin(&a));
    assert_true(auth_can_manage(&a, alice.id));
    assert_false(auth_can_manage(&a, bob.id));
    assert_true(auth_require_owner(&r, &a, alice.id));
    assert_false(auth_require_owner(&r, &a, bob.id));
    assert_int_equal(r.res.status, 403);
    assert_non_null(strstr(r.res.body.data, "\"forbidden\""));
    req_free(&r);

    /* a write without the token, with a wrong one, with the right one */
    const char *methods[] = {"POST", "PUT", "PATCH", "DELETE"};
    for (int m = 0; m < 4; m++) {
        req_init(&r, methods[m]);
        req_header(&r, "Cookie", cookie);
        identify(&r, &a);
        assert_int_equal(a.via, AUTH_VIA_SESSION);
        assert_true(a.write);
        assert_false(a.csrf_ok);
        assert_false(auth_require_user(&r, &a));
        assert_int_equal(r.res.status, 403);
        assert_non_null(strstr(r.res.body.data, "\"csrf\""));
        req_free(&r);
    }
    char wrong[AUTH_TOKEN_LEN + 1];
    memcpy(wrong, csrf, sizeof wrong);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    req_init(&r, "POST");
    req_header(&r, "Cookie", cookie);
    req_header(&r, "X-CSRF-Token", wrong);
    identify(&r, &a);
    assert_false(a.csrf_ok);
    req_free(&r);

    req_init(&r, "POST");
    req_header(&r, "Cookie", cookie);
    req_header(&r, "x-csrf-token", csrf);
    identify(&r, &a);
    assert_true(a.csrf_ok);
    assert_true(auth_require_user(&r, &a));
    assert_true(auth_require_session(&r, &a));
    req_free(&r);

    /* the right token from another site's page is still refused */
    req_init(&r, "POST");
    req_header(&r, "Cookie", cookie);
    req_header(&r, "X-CSRF-Token", csrf);
    req_header(&r, "Origin", "https://evil.example");
    req_header(&r, "Host", "tv.example.org");
    identify(&r, &a);
    assert_false(a.csrf_ok);
    req_free(&r);
    req_init(&r, "POST");
    req_header(&r, "Cookie", cookie);
    req_header(&r, "X-CSRF-Token", csrf);
    req_header(&r, "Origin", "https://tv.example.org");
    identify(&r, &a);
    assert_true(a.csrf_ok);
    req_free(&r);

    /* a planted cookie of the same name before the real one does not hide it */
    char two[256];
    char planted[AUTH_TOKEN_LEN + 1];
    auth_token_new(planted);
    snprintf(two, sizeof two, "hearth_session=%s; hearth_session=%s", planted, token);
    req_init(&r, "GET");
    req_header(&r, "Cookie", two);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_VIA_SESSION);
    req_free(&r);
}

static void test_identify_session_ends(void **state)
{
    char token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1], cookie[128];
    struct http_request r;
    struct auth_ctx a;

    /* expired */
    make_session(alice.id, util_now_unix() - 1, token, csrf);
    snprintf(cookie, sizeof cookie, "hearth_session=%s", token);
    req_init(&r, "GET");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    req_free(&r);

    /* disabled, then unverified, owner */
    make_session(alice.id, util_now_unix() + 3600, token, csrf);
    snprintf(cookie, sizeof cookie, "hearth_session=%s", token);
    sql("UPDATE users SET disabled = 1 WHERE name = 'alice'");
    req_init(&r, "GET");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    req_free(&r);
    sql("UPDATE users SET disabled = 0, verified = 0 WHERE name = 'alice'");
    req_init(&r, "GET");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    req_free(&r);
    sql("UPDATE users SET verified = 1 WHERE name = 'alice'");
    req_init(&r, "GET");
    req_header(&r, "Cookie", cookie);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_VIA_SESSION);
    req_free(&r);

    /* last_seen was written back (it was 1) */
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "SELECT max(last_seen) FROM sessions", &st), 0);
    assert_int_equal(db_step(st), DB_ROW);
    assert_true(db_column_int64(st, 0) > 1000);
    db_finalize(st);
}

static void test_identify_api_key(void **state)
{
    char key[AUTH_API_KEY_LEN + 1], expired[AUTH_API_KEY_LEN + 1], cookie[128];
    char token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1];
    make_key(bob.id, "NULL", key);
    make_key(bob.id, "1", expired);
    make_session(alice.id, util_now_unix() + 3600, token, csrf);
    snprintf(cookie, sizeof cookie, "hearth_session=%s", token);

    struct http_request r;
    struct auth_ctx a;
    /* a key needs no CSRF token for a write */
    req_init(&r, "DELETE");
    req_header(&r, "X-API-Key", key);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_VIA_API_KEY);
    assert_int_equal(a.user.id, bob.id);
    assert_true(a.csrf_ok);
    assert_true(auth_require_user(&r, &a));
    assert_true(auth_is_admin(&a));
    assert_true(auth_has_role(&a, "uploader")); /* admins have every role */
    assert_true(auth_can_manage(&a, alice.id));
    assert_false(auth_require_session(&r, &a));
    assert_int_equal(r.res.status, 403);
    assert_non_null(strstr(r.res.body.data, "\"session_required\""));
    req_free(&r);

    /* expired, malformed, unknown: 401 invalid_api_key, and no fallback to the cookie */
    const char *bad[] = {expired, "hk_short", "nothk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "hk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req_init(&r, "POST");
        req_header(&r, "X-API-Key", bad[i]);
        req_header(&r, "Cookie", cookie);
        req_header(&r, "X-CSRF-Token", csrf);
        identify(&r, &a);
        assert_int_equal(a.via, AUTH_GUEST);
        assert_true(a.bad_api_key);
        assert_false(auth_require_user(&r, &a));
        assert_int_equal(r.res.status, 401);
        assert_non_null(strstr(r.res.body.data, "\"invalid_api_key\""));
        req_free(&r);
    }

    /* a disabled owner's key stops working */
    sql("UPDATE users SET disabled = 1 WHERE name = 'bob'");
    req_init(&r, "GET");
    req_header(&r, "X-API-Key", key);
    identify(&r, &a);
    assert_int_equal(a.via, AUTH_GUEST);
    assert_true(a.bad_api_key);
    req_free(&r);
    sql("UPDATE users SET disabled = 0 WHERE name = 'bob'");
}

static void test_require_role_and_origin(void **state)
{
    char key[AUTH_API_KEY_LEN + 1];
    make_key(alice.id, "NULL", key);
    struct http_request r;
    struct auth_ctx a;
    req_init(&r, "GET");
    req_header(&r, "X-API-Key", key);
    identify(&r, &a);
    assert_true(auth_require_role(&r, &a, "streamer"));
    assert_false(auth_require_role(&r, &a, "recorder"));
    assert_int_equal(r.res.status, 403);
    assert_false(auth_require_admin(&r, &a));
    req_free(&r);

    req_init(&r, "POST");
    assert_true(auth_require_same_origin(&app, &r)); /* no Origin: not a browser */
    req_header(&r, "Origin", "https://tv.example.org");
    assert_true(auth_require_same_origin(&app, &r));
    req_free(&r);
    req_init(&r, "POST");
    req_header(&r, "Origin", "https://evil.example");
    req_header(&r, "Host", "tv.example.org");
    assert_false(auth_require_same_origin(&app, &r));
    assert_int_equal(r.res.status, 403);
    assert_non_null(strstr(r.res.body.data, "\"bad_origin\""));
    req_free(&r);
}

static void body(struct http_request *r, const char *text)
{
    buf_init(&r->body, 0);
    buf_append(&r->body, text, strlen(text));
}

static void test_json_body(void **state)
{
    struct http_request r;
    req_init(&r, "POST");
    req_header(&r, "Content-Type", "application/json; charset=utf-8");
    body(&r, "{\"login\": \"alice\"}");
    json_t *o = auth_json_body(&r, 1024);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "login")), "alice");
    json_decref(o);
    assert_null(auth_json_body(&r, 4));
    assert_int_equal(r.res.status, 413);
    buf_free(&r.body);
    req_free(&r);

    static const struct {
        const char *ct, *body;
        int status;
    } bad[] = {
        {NULL, "{}", 415},
        {"text/plain", "{}", 415},                       /* what a form or no-cors fetch sends */
        {"application/x-www-form-urlencoded", "a=b", 415},
        {"application/jsonp", "{}", 415},
        {"application/json", "", 400},
        {"application/json", "[1]", 400},
        {"application/json", "{\"a\":1,\"a\":2}", 400}, /* duplicate keys */
        {"application/json", "{\"a\":", 400},
        {"application/json", "{\"a\":\"\\u0000\"}", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req_init(&r, "POST");
        if (bad[i].ct)
            req_header(&r, "Content-Type", bad[i].ct);
        body(&r, bad[i].body);
        assert_null(auth_json_body(&r, 1024));
        if (r.res.status != bad[i].status)
            fail_msg("case %zu: status %d, want %d", i, r.res.status, bad[i].status);
        buf_free(&r.body);
        req_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_hotp_rfc4226),
        cmocka_unit_test(test_totp_rfc6238),
        cmocka_unit_test(test_totp_check_window_and_replay),
        cmocka_unit_test(test_base32),
        cmocka_unit_test(test_tokens_and_hashes),
        cmocka_unit_test(test_csrf_compare),
        cmocka_unit_test(test_cookie_build),
        cmocka_unit_test(test_cookie_get),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_throttle_window),
        cmocka_unit_test(test_throttle_full_table),
        cmocka_unit_test(test_throttle_ip_key),
        cmocka_unit_test(test_mail_format),
    };
    const struct CMUnitTest with_db[] = {
        cmocka_unit_test(test_identify_guest),
        cmocka_unit_test(test_identify_session_and_csrf),
        cmocka_unit_test(test_identify_session_ends),
        cmocka_unit_test(test_identify_api_key),
        cmocka_unit_test(test_require_role_and_origin),
        cmocka_unit_test(test_json_body),
    };
    if (sodium_init() < 0)
        return 1;
    int failed = cmocka_run_group_tests_name("auth", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("auth_db", with_db, db_setup, db_teardown);
    return failed;
}
