/*
 * Tests for app/accounts.h against a real, migrated SQLite database.
 *
 * Password hashing is argon2id at interactive cost (a fraction of a second
 * each), so the tests share one database and add only a handful of users;
 * every validation failure is checked before any hashing happens.
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

#include "app/accounts.h"
#include "store/db.h"
#include "store/migrate.h"
#include "testdb.h"

static char tmpdir[PATH_MAX];
static struct db *db;

static int group_setup(void **state)
{
    if (testdb_open("accounts", tmpdir, &db) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    testdb_close(tmpdir, db);
    return 0;
}

static void assert_err(int rc, int want, const char *err, const char *needle)
{
    if (rc != want)
        fail_msg("expected %d, got %d (%s)", want, rc, err);
    if (!strstr(err, needle))
        fail_msg("expected '%s' in: %s", needle, err);
}

/* ---- rules, no database ---- */

static void test_name_rules(void **state)
{
    char err[256];
    const char *good[] = {"a", "Alice", "bob_2", "x.y-z", "0day", "abcdefghijklmnopqrstuvwxyz012345"};
    const char *bad[] = {"", "_alice", ".a", "-a", "al ice", "al@ice", "émile", "a/b",
                         "abcdefghijklmnopqrstuvwxyz0123456", "a\n"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(account_name_valid(good[i], err, sizeof err), 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(account_name_valid(bad[i], err, sizeof err), -EINVAL);
    assert_int_equal(account_name_valid(NULL, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "user name"));
}

static void test_email_rules(void **state)
{
    char err[256];
    assert_int_equal(account_email_valid("a@b", err, sizeof err), 0);
    assert_int_equal(account_email_valid("first.last+tag@example.org", err, sizeof err), 0);
    const char *bad[] = {"", "plain", "@example.org", "a@", "a@b@c", "a b@c.d", "a@b\t.c",
                         "a\x01@b.c"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(account_email_valid(bad[i], err, sizeof err), -EINVAL);
    char longer[300];
    memset(longer, 'a', sizeof longer);
    memcpy(longer + 250, "@b.cd", 6);
    assert_int_equal(account_email_valid(longer, err, sizeof err), -EINVAL); /* 255 bytes */
    longer[249] = '\0';
    strcat(longer, "@b.c");                                                 /* 253 bytes */
    assert_int_equal(account_email_valid(longer, err, sizeof err), 0);
}

static void test_roles(void **state)
{
    char out[64], err[256];
    assert_int_equal(account_roles_normalize("user, Admin,admin ,streamer", out, sizeof out, err,
                                             sizeof err),
                     0);
    assert_string_equal(out, "admin,streamer,user");
    assert_int_equal(account_roles_normalize("uploader,recorder,,", out, sizeof out, err, sizeof err), 0);
    assert_string_equal(out, "recorder,uploader");
    assert_int_equal(account_roles_normalize("user,root", out, sizeof out, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "unknown role 'root'"));
    assert_int_equal(account_roles_normalize(" , ", out, sizeof out, err, sizeof err), -EINVAL);
    assert_int_equal(account_roles_normalize("", out, sizeof out, err, sizeof err), -EINVAL);

    assert_true(account_has_role("admin,streamer,user", "streamer"));
    assert_true(account_has_role("admin,streamer,user", "user"));
    assert_false(account_has_role("admin,streamer,user", "stream"));
    assert_false(account_has_role("", "user"));
}

static void test_slug_rules(void **state)
{
    char err[256], out[CHANNEL_SLUG_MAX + 1];
    assert_int_equal(channel_slug_valid("my-show", err, sizeof err), 0);
    assert_int_equal(channel_slug_valid("0", err, sizeof err), 0);
    assert_int_equal(channel_slug_valid("-a", err, sizeof err), -EINVAL);
    assert_int_equal(channel_slug_valid("My-Show", err, sizeof err), -EINVAL);
    assert_int_equal(channel_slug_valid("a_b", err, sizeof err), -EINVAL);
    assert_int_equal(channel_slug_valid("", err, sizeof err), -EINVAL);
    char longer[60];
    memset(longer, 'a', 49);
    longer[49] = '\0';
    assert_int_equal(channel_slug_valid(longer, err, sizeof err), -EINVAL);
    longer[48] = '\0';
    assert_int_equal(channel_slug_valid(longer, err, sizeof err), 0);

    channel_slug_derive("My Great Stream!", out);
    assert_string_equal(out, "my-great-stream");
    channel_slug_derive("  --Hello,   World--  ", out);
    assert_string_equal(out, "hello-world");
    channel_slug_derive("Café ☕ Live", out);
    assert_string_equal(out, "caf-live");
    channel_slug_derive("☕☕☕", out);
    assert_string_equal(out, "channel");
    channel_slug_derive("", out);
    assert_string_equal(out, "channel");
    channel_slug_derive("abcdefghij abcdefghij abcdefghij abcdefghij abcdefghij", out);
    assert_string_equal(out, "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcd");
    char title[64];
    memset(title, 'a', 47);
    strcpy(title + 47, " b");
    channel_slug_derive(title, out); /* never ends in the dash the cut would leave */
    assert_int_equal(strlen(out), 47);

    assert_true(channel_slug_reserved("api"));
    assert_true(channel_slug_reserved("xmpp-websocket"));
    assert_false(channel_slug_reserved("apis"));
}

static void test_rtmp_url(void **state)
{
    char out[256];
    assert_int_equal(channel_rtmp_url("https://live.example.org", "0.0.0.0:1935", out, sizeof out), 0);
    assert_string_equal(out, "rtmp://live.example.org/live");
    assert_int_equal(channel_rtmp_url("http://localhost:8080/", "0.0.0.0:1936", out, sizeof out), 0);
    assert_string_equal(out, "rtmp://localhost:1936/live");
    assert_int_equal(channel_rtmp_url("http://user:pw@[::1]:8080/x", "[::]:19350", out, sizeof out), 0);
    assert_string_equal(out, "rtmp://[::1]:19350/live");
    assert_int_equal(channel_rtmp_url("https://example.org/hearth/", NULL, out, sizeof out), 0);
    assert_string_equal(out, "rtmp://example.org/live");
    assert_int_equal(channel_rtmp_url("no-scheme", NULL, out, sizeof out), -EINVAL);
    assert_int_equal(channel_rtmp_url("http:///path", NULL, out, sizeof out), -EINVAL);
}

/* ---- users ---- */

static void test_user_add_validation(void **state)
{
    char err[256];
    struct user u;
    int rc = account_user_add(db, "bad name", NULL, NULL, "password123", &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "user name");
    rc = account_user_add(db, "carol", "not-an-email", NULL, "password123", &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "email");
    rc = account_user_add(db, "carol", NULL, "user,god", "password123", &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "unknown role 'god'");
    rc = account_user_add(db, "carol", NULL, NULL, "short", &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "8 to 1024 bytes");
    char *huge = malloc(1026);
    memset(huge, 'x', 1025);
    huge[1025] = '\0';
    rc = account_user_add(db, "carol", NULL, NULL, huge, &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "password");
    free(huge);
    rc = account_user_add(db, "carol", NULL, NULL, NULL, &u, err, sizeof err);
    assert_err(rc, -EINVAL, err, "password");
    assert_int_equal(account_user_find(db, "carol", &u, err, sizeof err), -ENOENT);
}

static void test_user_add_find_duplicates(void **state)
{
    char err[256];
    struct user u, found;
    assert_int_equal(account_user_add(db, "alice", "Alice@Example.org", "user,streamer",
                                      "correct horse battery", &u, err, sizeof err),
                     0);
    assert_true(u.id > 0);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.email, "Alice@Example.org");
    assert_string_equal(u.roles, "streamer,user");
    assert_false(u.disabled);
    assert_true(u.created_at > 1700000000);

    assert_int_equal(account_user_find(db, "ALICE", &found, err, sizeof err), 0);
    assert_int_equal(found.id, u.id);
    assert_string_equal(found.name, "alice");
    assert_string_equal(found.roles, "streamer,user");

    /* duplicates, whatever the case; caught before the expensive hash */
    int rc = account_user_add(db, "Alice", NULL, NULL, "another password", NULL, err, sizeof err);
    assert_err(rc, -EEXIST, err, "a user named 'alice' already exists");
    rc = account_user_add(db, "alice2", "alice@example.ORG", NULL, "another password", NULL, err,
                          sizeof err);
    assert_err(rc, -EEXIST, err, "already used by another account");

    /* the stored hash is argon2id and verifies */
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "SELECT password_hash FROM users WHERE name = 'alice'", &st), 0);
    assert_int_equal(db_step(st), DB_ROW);
    char hash[256];
    snprintf(hash, sizeof hash, "%s", db_column_text(st, 0));
    db_finalize(st);
    assert_memory_equal(hash, "$argon2id$", 10);
    assert_int_equal(account_password_verify(hash, "correct horse battery"), 0);
    assert_int_equal(account_password_verify(hash, "correct horse batterY"), -EACCES);
    assert_int_equal(account_password_verify("garbage", "correct horse battery"), -EACCES);
    assert_int_equal(account_password_verify(NULL, "x"), -EACCES);
}

static void test_authenticate(void **state)
{
    char err[256];
    struct user u;
    char unknown_err[256];
    assert_int_equal(account_authenticate(db, "Alice", "correct horse battery", &u, err, sizeof err), 0);
    assert_string_equal(u.name, "alice");
    int rc = account_authenticate(db, "alice", "wrong password", &u, err, sizeof err);
    assert_err(rc, -EACCES, err, "wrong user name or password");
    rc = account_authenticate(db, "nobody", "wrong password", &u, unknown_err, sizeof unknown_err);
    assert_int_equal(rc, -EACCES);
    assert_string_equal(err, unknown_err); /* does not tell which names exist */

    assert_int_equal(account_user_set_disabled(db, "alice", true, err, sizeof err), 0);
    rc = account_authenticate(db, "alice", "correct horse battery", &u, err, sizeof err);
    assert_err(rc, -EACCES, err, "disabled");
    assert_int_equal(account_user_set_disabled(db, "alice", false, err, sizeof err), 0);
    assert_int_equal(account_user_set_disabled(db, "nobody", true, err, sizeof err), -ENOENT);
}

static void test_user_update_and_list(void **state)
{
    char err[256];
    struct user u;
    assert_int_equal(account_user_add(db, "bob", NULL, NULL, "bob's password", &u, err, sizeof err), 0);
    assert_string_equal(u.roles, "user");
    assert_string_equal(u.email, "");

    assert_int_equal(account_user_set_roles(db, "BOB", "admin, user", err, sizeof err), 0);
    assert_int_equal(account_user_find(db, "bob", &u, err, sizeof err), 0);
    assert_string_equal(u.roles, "admin,user");
    assert_int_equal(account_user_set_roles(db, "bob", "wizard", err, sizeof err), -EINVAL);
    assert_int_equal(account_user_set_roles(db, "nobody", "user", err, sizeof err), -ENOENT);
    assert_int_equal(account_user_set_password(db, "bob", "short", err, sizeof err), -EINVAL);
    assert_int_equal(account_user_set_password(db, "bob", "bob's new password", err, sizeof err), 0);
    assert_int_equal(account_authenticate(db, "bob", "bob's new password", &u, err, sizeof err), 0);

    json_t *j = user_to_json(&u);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), u.id);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "bob");
    assert_true(json_is_null(json_object_get(j, "email")));
    json_t *roles = json_object_get(j, "roles");
    assert_true(json_is_array(roles));
    assert_int_equal(json_array_size(roles), 2);
    assert_string_equal(json_string_value(json_array_get(roles, 0)), "admin");
    assert_string_equal(json_string_value(json_array_get(roles, 1)), "user");
    assert_true(json_is_false(json_object_get(j, "disabled")));
    assert_true(json_is_integer(json_object_get(j, "created_at")));
    assert_null(json_object_get(j, "password_hash"));
    json_decref(j);
}

struct names {
    char all[256];
    int seen;
    int stop_after;
};

static int collect_user(const struct user *u, void *ud)
{
    struct names *n = ud;
    strcat(n->all, u->name);
    strcat(n->all, " ");
    return ++n->seen == n->stop_after ? 42 : 0;
}

static int collect_channel(const struct channel *c, void *ud)
{
    struct names *n = ud;
    strcat(n->all, c->slug);
    strcat(n->all, " ");
    return ++n->seen == n->stop_after ? 7 : 0;
}

static void test_user_list(void **state)
{
    char err[256];
    struct names n = {0};
    assert_int_equal(account_user_list(db, collect_user, &n, err, sizeof err), 0);
    assert_string_equal(n.all, "alice bob ");
    struct names stop = {.stop_after = 1};
    assert_int_equal(account_user_list(db, collect_user, &stop, err, sizeof err), 42);
    assert_string_equal(stop.all, "alice ");
}

/* ---- channels ---- */

static bool key_shaped(const char *k)
{
    if (strlen(k) != CHANNEL_STREAM_KEY_LEN)
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

static void test_channel_add_and_slugs(void **state)
{
    char err[256];
    struct channel c, c2, c3;
    assert_int_equal(channel_add(db, "alice", "My Great Stream!", NULL, NULL, &c, err, sizeof err), 0);
    assert_true(c.id > 0);
    assert_string_equal(c.slug, "my-great-stream");
    assert_string_equal(c.title, "My Great Stream!");
    assert_string_equal(c.owner_name, "alice");
    assert_string_equal(c.topic, "");
    assert_string_equal(c.description, "");
    assert_true(c.record);
    assert_false(c.owner_disabled);
    assert_true(key_shaped(c.stream_key));

    /* collisions get -2, -3 */
    assert_int_equal(channel_add(db, "bob", "my great stream", NULL, NULL, &c2, err, sizeof err), 0);
    assert_string_equal(c2.slug, "my-great-stream-2");
    assert_string_equal(c2.owner_name, "bob");
    assert_int_equal(channel_add(db, "alice", "My  great -- stream", NULL, NULL, &c3, err, sizeof err), 0);
    assert_string_equal(c3.slug, "my-great-stream-3");
    assert_string_not_equal(c.stream_key, c2.stream_key);
    assert_string_not_equal(c2.stream_key, c3.stream_key);

    /* explicit slugs */
    int rc = channel_add(db, "alice", "Other", "my-great-stream", NULL, &c, err, sizeof err);
    assert_err(rc, -EEXIST, err, "the slug 'my-great-stream' is already taken");
    rc = channel_add(db, "alice", "Other", "admin", NULL, &c, err, sizeof err);
    assert_err(rc, -EINVAL, err, "reserved");
    rc = channel_add(db, "alice", "Other", "Bad Slug", NULL, &c, err, sizeof err);
    assert_err(rc, -EINVAL, err, "lowercase");
    assert_int_equal(channel_add(db, "alice", "Other", "alice-tv", NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.slug, "alice-tv");

    /* a derived slug never lands on a reserved one */
    assert_int_equal(channel_add(db, "alice", "API", NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.slug, "api-2");
    assert_int_equal(channel_add(db, "alice", "☕", NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.slug, "channel");

    /* long titles: the slug is cut to 48, and still room for the suffix */
    char title[CHANNEL_TITLE_MAX + 2];
    memset(title, 'x', CHANNEL_TITLE_MAX);
    title[CHANNEL_TITLE_MAX] = '\0';
    assert_int_equal(channel_add(db, "alice", title, NULL, NULL, &c, err, sizeof err), 0);
    assert_int_equal(strlen(c.slug), CHANNEL_SLUG_MAX);
    assert_int_equal(channel_add(db, "alice", title, NULL, NULL, &c, err, sizeof err), 0);
    assert_int_equal(strlen(c.slug), CHANNEL_SLUG_MAX);
    assert_string_equal(c.slug + CHANNEL_SLUG_MAX - 2, "-2");

    /* titles */
    strcat(title, "x");
    rc = channel_add(db, "alice", title, NULL, NULL, &c, err, sizeof err);
    assert_err(rc, -EINVAL, err, "title");
    assert_int_equal(channel_add(db, "alice", "", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "   ", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "tab\there", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "bad \xc3\x28 utf8", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "overlong \xc0\xaf", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "c1 \xc2\x85", NULL, NULL, &c, err, sizeof err), -EINVAL);
    assert_int_equal(channel_add(db, "alice", "Café ☕ Live", NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.slug, "caf-live");
    assert_string_equal(c.title, "Café ☕ Live");

    /* owners */
    rc = channel_add(db, "nobody", "Title", NULL, NULL, &c, err, sizeof err);
    assert_err(rc, -ENOENT, err, "no user named 'nobody'");
}

static int collect_topic(const struct topic *t, void *ud)
{
    strcat(ud, t->slug);
    strcat(ud, " ");
    return 0;
}

static void test_default_topics(void **state)
{
    /* Migration 0005 gives a fresh database a starting set, with the slugs topic_add would make. */
    char slugs[512] = "", err[256];
    assert_int_equal(topic_list(db, collect_topic, slugs, err, sizeof err), 0);
    assert_string_equal(slugs, "art education entertainment gaming music other science-technology "
                               "software-development sports talk-shows ");
    static const char *const names[] = {"Art", "Education", "Entertainment", "Gaming", "Music",
                                        "Other", "Science & Technology", "Software Development",
                                        "Sports", "Talk Shows"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct topic t;
        char derived[CHANNEL_SLUG_MAX + 1];
        channel_slug_derive(names[i], derived);
        assert_int_equal(topic_find(db, derived, &t, err, sizeof err), 0);
        assert_string_equal(t.name, names[i]);
        assert_true(t.created_at > 0);
    }
    /* Admins may remove them all; the later tests start from none. */
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char derived[CHANNEL_SLUG_MAX + 1];
        channel_slug_derive(names[i], derived);
        assert_int_equal(topic_remove(db, derived, err, sizeof err), 0);
    }
    slugs[0] = '\0';
    assert_int_equal(topic_list(db, collect_topic, slugs, err, sizeof err), 0);
    assert_string_equal(slugs, "");
    assert_err(topic_remove(db, "gaming", err, sizeof err), -ENOENT, err, "no topic 'gaming'");
}

static void test_channel_topics(void **state)
{
    char err[256];
    struct channel c;
    struct topic t;
    int rc = channel_add(db, "alice", "Speedruns", NULL, "Gaming", &c, err, sizeof err);
    assert_err(rc, -ENOENT, err, "no topic named 'Gaming'");
    assert_int_equal(channel_find_by_slug(db, "speedruns", &c, err, sizeof err), -ENOENT);

    assert_int_equal(topic_add(db, "Gaming", &t, err, sizeof err), 0);
    assert_string_equal(t.slug, "gaming");
    rc = topic_add(db, "gaming", &t, err, sizeof err);
    assert_err(rc, -EEXIST, err, "a topic named 'Gaming' already exists");
    assert_int_equal(topic_add(db, "Gaming!", &t, err, sizeof err), 0);
    assert_string_equal(t.slug, "gaming-2");
    assert_int_equal(topic_add(db, "", &t, err, sizeof err), -EINVAL);

    assert_int_equal(channel_add(db, "alice", "Speedruns", NULL, "gaming", &c, err, sizeof err), 0);
    assert_string_equal(c.topic, "Gaming");
    assert_int_equal(channel_add(db, "alice", "More runs", NULL, "gaming-2", &c, err, sizeof err), 0);
    assert_string_equal(c.topic, "Gaming!");

    /* A new name keeps the slug, and the channels filed under it follow. */
    assert_int_equal(topic_rename(db, "gaming", "Video games", &t, err, sizeof err), 0);
    assert_string_equal(t.slug, "gaming");
    assert_string_equal(t.name, "Video games");
    assert_int_equal(channel_find_by_slug(db, "speedruns", &c, err, sizeof err), 0);
    assert_string_equal(c.topic, "Video games");
    assert_int_equal(topic_rename(db, "gaming", "VIDEO games", &t, err, sizeof err), 0); /* its own name, new case */
    rc = topic_rename(db, "gaming", "gaming!", &t, err, sizeof err);
    assert_err(rc, -EEXIST, err, "a topic named 'Gaming!' already exists");
    assert_err(topic_rename(db, "nope", "Fine", &t, err, sizeof err), -ENOENT, err, "no topic 'nope'");
    assert_err(topic_rename(db, "gaming", "", &t, err, sizeof err), -EINVAL, err, "a topic name is");
    assert_err(topic_rename(db, "gaming", "tab\there", &t, err, sizeof err), -EINVAL, err, "a topic name is");
    assert_int_equal(topic_find(db, "gaming", &t, err, sizeof err), 0);
    assert_string_equal(t.name, "VIDEO games");
    assert_int_equal(topic_rename(db, "gaming", "Gaming", &t, err, sizeof err), 0);

    /* Removed: its channels stay, without a topic; the others keep theirs. */
    assert_int_equal(topic_remove(db, "gaming-2", err, sizeof err), 0);
    assert_err(topic_find(db, "gaming-2", &t, err, sizeof err), -ENOENT, err, "no topic 'gaming-2'");
    assert_int_equal(channel_find_by_slug(db, "more-runs", &c, err, sizeof err), 0);
    assert_string_equal(c.topic, "");
    assert_int_equal(channel_find_by_slug(db, "speedruns", &c, err, sizeof err), 0);
    assert_string_equal(c.topic, "Gaming");
}

static void test_stream_keys(void **state)
{
    char err[256];
    struct channel c, found;
    assert_int_equal(channel_find_by_slug(db, "alice-tv", &c, err, sizeof err), 0);
    char old_key[CHANNEL_STREAM_KEY_LEN + 1];
    strcpy(old_key, c.stream_key);

    assert_int_equal(channel_find_by_stream_key(db, old_key, &found, err, sizeof err), 0);
    assert_int_equal(found.id, c.id);
    assert_string_equal(found.slug, "alice-tv");
    assert_false(found.owner_disabled);

    /* the stored hash is the key's SHA-256 */
    struct db_stmt *st;
    assert_int_equal(db_prepare(db, "SELECT stream_key_hash FROM channels WHERE slug = 'alice-tv'", &st), 0);
    assert_int_equal(db_step(st), DB_ROW);
    assert_int_equal(strlen(db_column_text(st, 0)), 64);
    db_finalize(st);

    /* unknown and malformed keys */
    char guess[CHANNEL_STREAM_KEY_LEN + 1];
    strcpy(guess, old_key);
    guess[0] = guess[0] == 'A' ? 'B' : 'A';
    int rc = channel_find_by_stream_key(db, guess, &found, err, sizeof err);
    assert_err(rc, -ENOENT, err, "unknown stream key");
    assert_null(strstr(err, guess));
    assert_int_equal(channel_find_by_stream_key(db, "short", &found, err, sizeof err), -ENOENT);
    assert_int_equal(channel_find_by_stream_key(db, "", &found, err, sizeof err), -ENOENT);
    assert_int_equal(channel_find_by_stream_key(db, NULL, &found, err, sizeof err), -ENOENT);
    char odd[CHANNEL_STREAM_KEY_LEN + 1];
    memset(odd, '+', CHANNEL_STREAM_KEY_LEN);
    odd[CHANNEL_STREAM_KEY_LEN] = '\0';
    assert_int_equal(channel_find_by_stream_key(db, odd, &found, err, sizeof err), -ENOENT);

    /* reset: a new key, the old one stops working */
    struct channel after;
    assert_int_equal(channel_key_reset(db, "alice-tv", &after, err, sizeof err), 0);
    assert_true(key_shaped(after.stream_key));
    assert_string_not_equal(after.stream_key, old_key);
    assert_int_equal(channel_find_by_stream_key(db, old_key, &found, err, sizeof err), -ENOENT);
    assert_int_equal(channel_find_by_stream_key(db, after.stream_key, &found, err, sizeof err), 0);
    assert_string_equal(found.slug, "alice-tv");
    rc = channel_key_reset(db, "no-such-channel", &after, err, sizeof err);
    assert_err(rc, -ENOENT, err, "no channel 'no-such-channel'");

    /* a disabled owner is reported, not hidden */
    assert_int_equal(account_user_set_disabled(db, "alice", true, err, sizeof err), 0);
    assert_int_equal(channel_find_by_stream_key(db, after.stream_key, &found, err, sizeof err), 0);
    assert_true(found.owner_disabled);
    assert_int_equal(account_user_set_disabled(db, "alice", false, err, sizeof err), 0);
}

static void test_channel_list_and_delete(void **state)
{
    char err[256];
    struct names all = {0}, bobs = {0}, stop = {.stop_after = 2};
    assert_int_equal(channel_list(db, NULL, collect_channel, &all, err, sizeof err), 0);
    assert_true(all.seen >= 10);
    assert_int_equal(channel_list(db, "BOB", collect_channel, &bobs, err, sizeof err), 0);
    assert_string_equal(bobs.all, "my-great-stream-2 ");
    assert_int_equal(channel_list(db, NULL, collect_channel, &stop, err, sizeof err), 7);
    assert_int_equal(stop.seen, 2);
    int rc = channel_list(db, "nobody", collect_channel, &stop, err, sizeof err);
    assert_err(rc, -ENOENT, err, "no user named 'nobody'");

    struct channel c;
    assert_int_equal(channel_delete(db, "caf-live", err, sizeof err), 0);
    assert_int_equal(channel_find_by_slug(db, "caf-live", &c, err, sizeof err), -ENOENT);
    assert_int_equal(channel_delete(db, "caf-live", err, sizeof err), -ENOENT);

    /* deleting a user takes their channels along */
    assert_int_equal(account_user_delete(db, "bob", err, sizeof err), 0);
    assert_int_equal(channel_find_by_slug(db, "my-great-stream-2", &c, err, sizeof err), -ENOENT);
    assert_int_equal(account_user_delete(db, "bob", err, sizeof err), -ENOENT);
}

static void test_channel_json(void **state)
{
    char err[256];
    struct channel c;
    assert_int_equal(channel_find_by_slug(db, "speedruns", &c, err, sizeof err), 0);

    json_t *j = channel_to_json(&c, "https://tv.example.org/", "0.0.0.0:1935", false);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), c.id);
    assert_string_equal(json_string_value(json_object_get(j, "slug")), "speedruns");
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Speedruns");
    assert_string_equal(json_string_value(json_object_get(j, "owner")), "alice");
    assert_string_equal(json_string_value(json_object_get(j, "topic")), "Gaming");
    assert_true(json_is_true(json_object_get(j, "record")));
    assert_true(json_is_integer(json_object_get(j, "created_at")));
    assert_null(json_object_get(j, "stream_key"));
    assert_string_equal(json_string_value(json_object_get(j, "rtmp_url")), "rtmp://tv.example.org/live");
    assert_string_equal(json_string_value(json_object_get(j, "hls_url")),
                        "https://tv.example.org/live/speedruns/master.m3u8");
    assert_string_equal(json_string_value(json_object_get(j, "watch_url")),
                        "https://tv.example.org/c/speedruns");
    json_decref(j);

    j = channel_to_json(&c, "http://127.0.0.1:8080", "127.0.0.1:1936", true);
    assert_string_equal(json_string_value(json_object_get(j, "stream_key")), c.stream_key);
    assert_string_equal(json_string_value(json_object_get(j, "rtmp_url")), "rtmp://127.0.0.1:1936/live");
    assert_string_equal(json_string_value(json_object_get(j, "hls_url")),
                        "http://127.0.0.1:8080/live/speedruns/master.m3u8");
    json_decref(j);

    assert_int_equal(channel_find_by_slug(db, "alice-tv", &c, err, sizeof err), 0);
    j = channel_to_json(&c, NULL, NULL, false);
    assert_true(json_is_null(json_object_get(j, "topic")));
    assert_null(json_object_get(j, "hls_url"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_email_rules),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_slug_rules),
        cmocka_unit_test(test_rtmp_url),
        /* these build on each other, in order, in one database */
        cmocka_unit_test(test_user_add_validation),
        cmocka_unit_test(test_user_add_find_duplicates),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_user_update_and_list),
        cmocka_unit_test(test_user_list),
        cmocka_unit_test(test_channel_add_and_slugs),
        cmocka_unit_test(test_default_topics),
        cmocka_unit_test(test_channel_topics),
        cmocka_unit_test(test_stream_keys),
        cmocka_unit_test(test_channel_list_and_delete),
        cmocka_unit_test(test_channel_json),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
