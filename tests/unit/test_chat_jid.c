/*
 * JIDs: the three parts, normalisation (case folding, compatibility forms,
 * IDN domains, IP literals), what is refused, the 1023-byte limits, and
 * comparing and formatting.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jid.h"

/* Parse in, expect the normalised text out (NULL: refused). */
static void check(const char *in, const char *want)
{
    struct jid j;
    int rc = jid_parse(&j, in);
    if (!want) {
        if (rc != -EINVAL)
            fail_msg("'%s' accepted as '%s@%s/%s'", in, j.local, j.domain, j.resource);
        assert_null(j.domain);
        return;
    }
    if (rc)
        fail_msg("'%s' refused (%d)", in, rc);
    char out[JID_MAX + 1];
    assert_int_equal(jid_format(&j, out, sizeof out), 0);
    if (strcmp(out, want))
        fail_msg("'%s' -> '%s', want '%s'", in, out, want);
    /* Normalising is idempotent. */
    struct jid k;
    assert_int_equal(jid_parse(&k, out), 0);
    assert_true(jid_equal(&j, &k));
    jid_free(&k);
    jid_free(&j);
}

static void test_parts(void **state)
{
    struct jid j;
    assert_int_equal(jid_parse(&j, "juliet@example.com/balcony"), 0);
    assert_string_equal(j.local, "juliet");
    assert_string_equal(j.domain, "example.com");
    assert_string_equal(j.resource, "balcony");
    assert_false(jid_is_bare(&j));
    jid_free(&j);
    assert_null(j.domain);

    assert_int_equal(jid_parse(&j, "example.com"), 0);
    assert_null(j.local);
    assert_null(j.resource);
    assert_true(jid_is_bare(&j));
    jid_free(&j);

    /* The first '/' starts the resource, which may hold '@' and '/'. */
    assert_int_equal(jid_parse(&j, "room@chat.example.com/nick@with/slash"), 0);
    assert_string_equal(j.local, "room");
    assert_string_equal(j.resource, "nick@with/slash");
    jid_free(&j);
    assert_int_equal(jid_parse(&j, "example.com/a@b"), 0);
    assert_null(j.local);
    assert_string_equal(j.resource, "a@b");
    jid_free(&j);

    check("juliet@example.com", "juliet@example.com");
    check("example.com/res", "example.com/res");
    check("guest.example.com", "guest.example.com");
    jid_free(&j); /* freeing an empty jid is fine */
}

static void test_normalisation(void **state)
{
    /* Case folds in local and domain, not in the resource. */
    check("Juliet@EXAMPLE.com/Balcony", "juliet@example.com/Balcony");
    /* Stringprep's folding: sharp s, ligatures, fullwidth forms. */
    check("Stra\xC3\x9F" "e@example.com", "strasse@example.com");
    check("\xEF\xAC\x81" "n@example.com", "fin@example.com");
    check("\xEF\xBC\xAA\xEF\xBD\x95\xEF\xBD\x8C@example.com", "jul@example.com");
    check("user@example.com/\xEF\xBC\xA2ig", "user@example.com/Big");
    /* Characters mapped to nothing (soft hyphen) vanish. */
    check("ro\xC2\xADmeo@example.com", "romeo@example.com");
    /* Resources keep spaces and case. */
    check("a@example.com/My Phone", "a@example.com/My Phone");
    /* Non-ASCII is kept, composed (NFKC). */
    check("r\xC3\xA9mi@caf\xC3\xA9.example", "r\xC3\xA9mi@caf\xC3\xA9.example");
    check("re\xCC\x81mi@example.com", "r\xC3\xA9mi@example.com");
    check("user@CAF\xC3\x89.example", "user@caf\xC3\xA9.example");
    /* Domains: trailing dot, IDNA dots, punycode kept as it is. */
    check("user@example.com.", "user@example.com");
    check("user@example.com./r", "user@example.com/r");
    check("user@example\xE3\x80\x82" "com", "user@example.com");
    check("user@xn--caf-dma.example", "user@xn--caf-dma.example");
    /* IP literals, canonical. */
    check("user@[::1]", "user@[::1]");
    check("user@[0:0:0:0:0:0:0:1]/r", "user@[::1]/r");
    check("user@[2001:DB8::1]", "user@[2001:db8::1]");
    check("user@127.0.0.1", "user@127.0.0.1");
}

static void test_refused(void **state)
{
    const char *bad[] = {
        "", "@example.com", "user@", "user@/res", "example.com/", "user@example.com/",
        "a\"b@example.com", "a&b@example.com", "a'b@example.com", "a:b@example.com",
        "a<b@example.com", "a>b@example.com", "a b@example.com", "\xC2\xAD@example.com",
        "user@exa mple.com", "user@under_score.com", "user@-lead.com", "user@a..b",
        "user@.example.com", "user@.", "user@[::1", "user@[not-v6]", "user@1.2.3",
        "user@999.1.1.1", "user@example.com/\xC2\x80", /* C1 control */
        "us\xff" "er@example.com", "user@ex\xC0\x80" "ample.com", "user@example.com/\xED\xA0\x80",
        "user@example.com/\xEF\xBF\xBE", "user\xE2\x80\x8F@example.com", /* RTL mark */
        NULL,
    };
    for (int i = 0; bad[i]; i++)
        check(bad[i], NULL);

    /* An embedded NUL. */
    struct jid j;
    assert_int_equal(jid_parse_len(&j, "a\0b@example.com", 15), -EINVAL);
    assert_int_equal(jid_parse(&j, NULL), -EINVAL);
}

static void test_lengths(void **state)
{
    char s[8192];
    struct jid j;

    /* Local and resource: 1023 bytes pass, 1024 do not. */
    memset(s, 'a', 1023);
    strcpy(s + 1023, "@example.com");
    assert_int_equal(jid_parse(&j, s), 0);
    assert_int_equal(strlen(j.local), 1023);
    jid_free(&j);
    memset(s, 'a', 1024);
    strcpy(s + 1024, "@example.com");
    assert_int_equal(jid_parse(&j, s), -EINVAL);

    strcpy(s, "example.com/");
    memset(s + 12, 'R', 1023);
    s[12 + 1023] = '\0';
    assert_int_equal(jid_parse(&j, s), 0);
    assert_int_equal(strlen(j.resource), 1023);
    jid_free(&j);
    strcat(s, "R");
    assert_int_equal(jid_parse(&j, s), -EINVAL);

    /* A longer input that prepares to a short one is fine: 1500 soft
     * hyphens around one letter. */
    char *p = s;
    for (int i = 0; i < 1500; i++) {
        memcpy(p, "\xC2\xAD", 2);
        p += 2;
    }
    strcpy(p, "x@example.com");
    assert_int_equal(jid_parse(&j, s), 0);
    assert_string_equal(j.local, "x");
    jid_free(&j);

    /* Preparation that grows past the limit: U+00BD (2 bytes) is "1",
     * U+2044, "2" (5 bytes) after NFKC. 204 of them: 408 bytes in, 1020
     * out; 205: 1025 out. */
    p = s;
    for (int i = 0; i < 205; i++) {
        memcpy(p, "\xC2\xBD", 2);
        p += 2;
    }
    strcpy(p, "@example.com");
    assert_int_equal(jid_parse(&j, s), -EINVAL);
    strcpy(s + 408, "@example.com");
    assert_int_equal(jid_parse(&j, s), 0);
    assert_int_equal(strlen(j.local), 1020);
    assert_int_equal(strncmp(j.local, "1\xE2\x81\x84" "2", 5), 0);
    jid_free(&j);

    /* Domain labels: 63 bytes pass, 64 do not; the whole domain at most
     * 1023 bytes (IDNA itself allows long names made of short labels). */
    strcpy(s, "u@");
    memset(s + 2, 'd', 63);
    strcpy(s + 65, ".com");
    assert_int_equal(jid_parse(&j, s), 0);
    jid_free(&j);
    memset(s + 2, 'd', 64);
    strcpy(s + 66, ".com");
    assert_int_equal(jid_parse(&j, s), -EINVAL);
    strcpy(s, "u@");
    for (int i = 0; i < 16; i++)
        strcat(s, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij."); /* 63 */
    strcat(s, "com");
    assert_int_equal(jid_parse(&j, s), 0); /* 16 * 63 + 3 = 1011 */
    assert_int_equal(strlen(j.domain), 1011);
    jid_free(&j);
    s[strlen(s) - 3] = '\0';
    strcat(s, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij.com");
    assert_int_equal(jid_parse(&j, s), -EINVAL); /* 1074 */

    /* Raw parts bigger than any preparation buffer. */
    memset(s, 'a', 5000);
    strcpy(s + 5000, "@example.com");
    assert_int_equal(jid_parse(&j, s), -EINVAL);
}

static void test_compare_and_format(void **state)
{
    struct jid a, b, c, d;
    assert_int_equal(jid_parse(&a, "Romeo@Example.COM/Orchard"), 0);
    assert_int_equal(jid_parse(&b, "romeo@example.com/Orchard"), 0);
    assert_int_equal(jid_parse(&c, "romeo@example.com/orchard"), 0);
    assert_true(jid_equal(&a, &b));
    assert_false(jid_equal(&a, &c));
    assert_true(jid_bare_equal(&a, &c));

    char out[JID_MAX + 1];
    assert_int_equal(jid_format_bare(&a, out, sizeof out), 0);
    assert_string_equal(out, "romeo@example.com");
    assert_int_equal(jid_format(&a, out, sizeof out), 0);
    assert_string_equal(out, "romeo@example.com/Orchard");
    char small[10];
    assert_int_equal(jid_format(&a, small, sizeof small), -ENAMETOOLONG);

    char *str = jid_to_string(&a, true);
    assert_string_equal(str, "romeo@example.com");
    free(str);
    struct buf buf;
    buf_init(&buf, 0);
    assert_int_equal(jid_append(&buf, &a, false), 0);
    assert_int_equal(buf.len, strlen("romeo@example.com/Orchard"));
    buf_free(&buf);

    assert_int_equal(jid_bare(&d, &a), 0);
    assert_true(jid_is_bare(&d));
    assert_true(jid_bare_equal(&d, &a));
    assert_false(jid_equal(&d, &a));
    jid_free(&d);
    assert_int_equal(jid_with_resource(&d, &a, "\xEF\xBC\xAE" "ew"), 0);
    assert_string_equal(d.resource, "New");
    jid_free(&d);
    assert_int_equal(jid_with_resource(&d, &a, ""), -EINVAL);
    assert_int_equal(jid_copy(&d, &c), 0);
    assert_true(jid_equal(&d, &c));
    jid_free(&d);

    assert_int_equal(jid_set(&d, "ROOM", "Chat.Example.com", "Nick Name"), 0);
    assert_int_equal(jid_format(&d, out, sizeof out), 0);
    assert_string_equal(out, "room@chat.example.com/Nick Name");
    jid_free(&d);
    assert_int_equal(jid_set(&d, NULL, "example.com", NULL), 0);
    jid_free(&d);
    assert_int_equal(jid_set(&d, "a b", "example.com", NULL), -EINVAL);
    assert_int_equal(jid_set(&d, NULL, NULL, NULL), -EINVAL);

    jid_free(&a);
    jid_free(&b);
    jid_free(&c);
}

static void test_prep_parts(void **state)
{
    char out[JID_PART_MAX + 1];
    assert_int_equal(jid_prep_local("Alice", 5, out, true), 0);
    assert_string_equal(out, "alice");
    assert_int_equal(jid_prep_resource("Alice", 5, out, true), 0);
    assert_string_equal(out, "Alice");
    assert_int_equal(jid_prep_domain("EXAMPLE.org", 11, out, true), 0);
    assert_string_equal(out, "example.org");
    /* U+0221 was unassigned in Unicode 3.2: fine to look up, not to store. */
    assert_int_equal(jid_prep_local("\xC8\xA1", 2, out, false), 0);
    assert_int_equal(jid_prep_local("\xC8\xA1", 2, out, true), -EINVAL);
    assert_int_equal(jid_prep_resource("\xC8\xA1", 2, out, true), -EINVAL);
    assert_int_equal(jid_prep_local("", 0, out, false), -EINVAL);
    assert_int_equal(jid_prep_resource("a\0b", 3, out, false), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_compare_and_format),
        cmocka_unit_test(test_prep_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
