/*
 * XMPP XML stream parser and tree: stanzas split at every byte boundary give
 * the same trees, several stanzas in one read, pause and restart mid-buffer,
 * restricted XML, limits, namespace errors, WebSocket framing, and
 * serializer round trips.
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

#include "chat/ns.h"
#include "chat/xml.h"

/* ---- an event recorder ------------------------------------------------ */

#define MAX_EV 64

struct rec {
    int opens, closes;
    char to[64], from[64], version[16], lang[16], content_ns[64];
    bool saw_db_decl;
    struct xml_node *st[MAX_EV];
    int nst;
    int total; /* stanzas seen, also past MAX_EV */
    const char *pause_on; /* pause after a stanza of this name */
    const char *fail_on;  /* return -EPERM for a stanza of this name */
    bool pause_on_open;
    struct xml_stream *s; /* for the re-entrancy test */
    int reentry_rc;
};

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static int rec_open(void *ud, const struct xml_open *o)
{
    struct rec *r = ud;
    r->opens++;
    copy(r->to, sizeof r->to, o->to);
    copy(r->from, sizeof r->from, o->from);
    copy(r->version, sizeof r->version, o->version);
    copy(r->lang, sizeof r->lang, o->lang);
    copy(r->content_ns, sizeof r->content_ns, o->content_ns);
    for (size_t i = 0; i < o->ndecls; i++)
        if (strcmp(o->decls[i].prefix, "db") == 0 && strcmp(o->decls[i].uri, XMPP_NS_DIALBACK) == 0)
            r->saw_db_decl = true;
    return r->pause_on_open ? XML_STREAM_PAUSE : 0;
}

static int rec_stanza(void *ud, struct xml_node *st)
{
    struct rec *r = ud;
    r->total++;
    if (r->s) {
        size_t used;
        r->reentry_rc = xml_stream_feed(r->s, "x", 1, &used);
        if (r->reentry_rc == -EBUSY)
            r->reentry_rc = xml_stream_reset(r->s);
    }
    int rc = 0;
    if (r->pause_on && strcmp(st->name, r->pause_on) == 0)
        rc = XML_STREAM_PAUSE;
    if (r->fail_on && strcmp(st->name, r->fail_on) == 0)
        rc = -EPERM;
    if (r->nst < MAX_EV)
        r->st[r->nst++] = st;
    else
        xml_node_free(st);
    return rc;
}

static int rec_close(void *ud)
{
    ((struct rec *)ud)->closes++;
    return 0;
}

static const struct xml_stream_callbacks rec_cb = {rec_open, rec_stanza, rec_close};

static void rec_clear(struct rec *r)
{
    for (int i = 0; i < r->nst; i++)
        xml_node_free(r->st[i]);
    r->nst = 0;
}

static struct xml_stream *new_stream(struct rec *r, const struct xml_limits *lim)
{
    memset(r, 0, sizeof *r);
    struct xml_stream *s = xml_stream_new(XML_MODE_STREAM, lim, &rec_cb, r);
    assert_non_null(s);
    return s;
}

/* Feed all of data in one call; return the rc. */
static int feed_all(struct xml_stream *s, const char *data)
{
    size_t used;
    size_t len = strlen(data);
    int rc = xml_stream_feed(s, data, len, &used);
    if (rc == 0)
        assert_int_equal(used, len);
    return rc;
}

static char *ser(const struct xml_node *n, const char *ctx)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(xml_serialize(n, ctx, &b), 0);
    return buf_steal(&b, NULL);
}

#define HDR                                                                                    \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                              \
    "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "      \
    "to='example.com' from='u@example.com' version='1.0' xml:lang='en'>"

/* ---- tests ------------------------------------------------------------ */

static void test_basic_stream(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR
                              "<message to='a@b' type='chat' id='1'><body>hi &amp; &lt;bye&gt;"
                              "</body><x xmlns='urn:x' xml:lang='fr'/></message>\n  "
                              "<presence/><iq type='get' id='2'><ping xmlns='urn:xmpp:ping'/></iq>"
                              "</stream:stream>"),
                     0);
    assert_int_equal(r.opens, 1);
    assert_string_equal(r.to, "example.com");
    assert_string_equal(r.from, "u@example.com");
    assert_string_equal(r.version, "1.0");
    assert_string_equal(r.lang, "en");
    assert_string_equal(r.content_ns, XMPP_NS_CLIENT);
    assert_true(r.saw_db_decl);
    assert_int_equal(r.nst, 3);
    assert_int_equal(r.closes, 1);

    struct xml_node *m = r.st[0];
    assert_string_equal(m->name, "message");
    assert_string_equal(m->ns, XMPP_NS_CLIENT);
    assert_string_equal(xml_attr_get(m, "to"), "a@b");
    assert_string_equal(xml_attr_get(m, "type"), "chat");
    assert_null(xml_attr_get(m, "from"));
    assert_string_equal(xml_child_text(m, "body", XMPP_NS_CLIENT), "hi & <bye>");
    struct xml_node *x = xml_child(m, "x", "urn:x");
    assert_non_null(x);
    assert_string_equal(xml_attr_get_ns(x, XMPP_NS_XML, "lang"), "fr");
    assert_null(xml_child(m, "x", XMPP_NS_CLIENT));
    assert_string_equal(r.st[1]->name, "presence");
    struct xml_node *ping = xml_first_element(r.st[2]);
    assert_string_equal(ping->ns, "urn:xmpp:ping");

    const struct xml_node *h = xml_stream_header(s);
    assert_non_null(h);
    assert_string_equal(h->name, "stream");
    assert_string_equal(h->ns, XMPP_NS_STREAMS);

    rec_clear(&r);
    xml_stream_free(s);
}

static const char split_doc[] =
    HDR "<message to='r\xC3\xA9m@x' id='a&apos;b'><body>caf\xC3\xA9 \xF0\x9F\x94\xA5 &#x263A; "
        "a&lt;b &#13;\r\n line</body><thread><![CDATA[<not markup>]]></thread>"
        "<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>\xF0\x9F\x91\x8D</reaction>"
        "</reactions><p:q xmlns:p='urn:p' p:attr='v' attr='w'><p:r/>mixed<s xmlns=''/>text</p:q>"
        "</message>   \n<db:result to='a' from='b'>key</db:result>"
        "<iq type='set' id='z'><query xmlns='jabber:iq:roster'><item jid='a@b' name=\"q'q\"/>"
        "</query></iq>";

static void parse_reference(struct rec *ref)
{
    struct xml_stream *s = new_stream(ref, NULL);
    assert_int_equal(feed_all(s, split_doc), 0);
    assert_int_equal(ref->nst, 3);
    xml_stream_free(s);
}

static void assert_same(const struct rec *a, const struct rec *b)
{
    assert_int_equal(a->opens, b->opens);
    assert_int_equal(a->nst, b->nst);
    assert_string_equal(a->to, b->to);
    for (int i = 0; i < a->nst; i++)
        if (!xml_node_equal(a->st[i], b->st[i])) {
            char *x = ser(a->st[i], NULL), *y = ser(b->st[i], NULL);
            fail_msg("stanza %d differs:\n%s\n%s", i, x, y);
        }
}

static void test_split_every_boundary(void **state)
{
    struct rec ref, r;
    parse_reference(&ref);
    /* A quick look at the reference itself. */
    const struct xml_node *body = xml_child(ref.st[0], "body", NULL);
    assert_string_equal(xml_text(body),
                        "caf\xC3\xA9 \xF0\x9F\x94\xA5 \xE2\x98\xBA a<b \r\n line");
    assert_string_equal(xml_child_text(ref.st[0], "thread", NULL), "<not markup>");
    const struct xml_node *q = xml_child(ref.st[0], "q", "urn:p");
    assert_string_equal(xml_attr_get_ns(q, "urn:p", "attr"), "v");
    assert_string_equal(xml_attr_get(q, "attr"), "w");
    assert_string_equal(xml_child(q, "s", NULL)->ns, "");
    assert_string_equal(ref.st[1]->ns, XMPP_NS_DIALBACK);

    size_t n = strlen(split_doc);
    for (size_t i = 0; i <= n; i++) {
        struct xml_stream *s = new_stream(&r, NULL);
        size_t used;
        assert_int_equal(xml_stream_feed(s, split_doc, i, &used), 0);
        assert_int_equal(used, i);
        assert_int_equal(xml_stream_feed(s, split_doc + i, n - i, &used), 0);
        assert_int_equal(used, n - i);
        assert_same(&ref, &r);
        rec_clear(&r);
        xml_stream_free(s);
    }
    /* And one byte at a time. */
    struct xml_stream *s = new_stream(&r, NULL);
    for (size_t i = 0; i < n; i++) {
        size_t used;
        assert_int_equal(xml_stream_feed(s, split_doc + i, 1, &used), 0);
    }
    assert_same(&ref, &r);
    rec_clear(&r);
    xml_stream_free(s);
    rec_clear(&ref);
}

static void test_several_in_one_feed(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    assert_int_equal(r.opens, 1);
    char buf[4096] = "";
    for (int i = 0; i < 40; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "<message id='%d'/> ", i);
    assert_int_equal(feed_all(s, buf), 0);
    assert_int_equal(r.total, 40);
    assert_string_equal(xml_attr_get(r.st[39], "id"), "39");
    /* Half a stanza stays pending until the rest comes. */
    assert_int_equal(feed_all(s, "<message id='x'><bo"), 0);
    assert_int_equal(r.total, 40);
    assert_int_equal(feed_all(s, "dy>t</body></message>"), 0);
    assert_int_equal(r.total, 41);
    rec_clear(&r);
    xml_stream_free(s);
}

/* SASL: pause after <auth/>, new stream; the bytes after go to the new parser. */
static void test_restart_mid_buffer(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    r.pause_on = "auth";
    const char *first = HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                            "AGEAYg==</auth>";
    const char *second = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams' to='second.example' "
                         "version='1.0'><iq type='set' id='b'/>";
    char all[1024];
    snprintf(all, sizeof all, "%s%s", first, second);
    size_t used, len = strlen(all);
    assert_int_equal(xml_stream_feed(s, all, len, &used), XML_STREAM_PAUSED);
    assert_int_equal(used, strlen(first));
    assert_int_equal(r.nst, 1);
    assert_string_equal(r.st[0]->name, "auth");
    assert_string_equal(xml_text(r.st[0]), "AGEAYg==");
    assert_int_equal(r.opens, 1);

    assert_int_equal(xml_stream_reset(s), 0);
    assert_null(xml_stream_header(s));
    size_t used2;
    assert_int_equal(xml_stream_feed(s, all + used, len - used, &used2), 0);
    assert_int_equal(used2, len - used);
    assert_int_equal(r.opens, 2);
    assert_string_equal(r.to, "second.example");
    assert_int_equal(r.nst, 2);
    assert_string_equal(r.st[1]->name, "iq");
    rec_clear(&r);
    xml_stream_free(s);
}

/* STARTTLS: the plaintext after <starttls/> is not parsed at all. */
static void test_starttls_drops_rest(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    r.pause_on = "starttls";
    const char *first = HDR "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    char all[1024];
    snprintf(all, sizeof all, "%s<message>injected</message>\x16\x03\x01garbage", first);
    size_t used;
    assert_int_equal(xml_stream_feed(s, all, strlen(all), &used), XML_STREAM_PAUSED);
    assert_int_equal(used, strlen(first));
    assert_int_equal(r.nst, 1);
    assert_int_equal(xml_stream_reset(s), 0);
    assert_int_equal(feed_all(s, HDR "<presence/>"), 0);
    assert_int_equal(r.opens, 2);
    assert_int_equal(r.nst, 2);
    assert_string_equal(r.st[1]->name, "presence");
    rec_clear(&r);
    xml_stream_free(s);
}

/* Pause, then go on in the same stream: prefixes declared on the header
 * still work, and the close tag still matches. */
static void test_pause_continue(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    r.pause_on = "result";
    const char *all = HDR "<db:result to='a' from='b'>k</db:result><db:verify id='1'>k2</db:verify>"
                          "<message><body>after</body></message></stream:stream>";
    size_t off = 0, len = strlen(all), used;
    int pauses = 0, rc;
    while (off < len) {
        rc = xml_stream_feed(s, all + off, len - off, &used);
        assert_true(rc == 0 || rc == XML_STREAM_PAUSED);
        pauses += rc == XML_STREAM_PAUSED;
        off += used;
    }
    assert_int_equal(pauses, 1);
    assert_int_equal(r.opens, 1);
    assert_int_equal(r.nst, 3);
    assert_string_equal(r.st[1]->name, "verify");
    assert_string_equal(r.st[1]->ns, XMPP_NS_DIALBACK);
    assert_string_equal(r.st[2]->ns, XMPP_NS_CLIENT);
    assert_int_equal(r.closes, 1);
    rec_clear(&r);
    xml_stream_free(s);

    /* Pausing on the header itself works the same way. */
    s = new_stream(&r, NULL);
    r.pause_on_open = true;
    all = HDR "<presence/>";
    assert_int_equal(xml_stream_feed(s, all, strlen(all), &used), XML_STREAM_PAUSED);
    assert_int_equal(used, strlen(HDR));
    assert_int_equal(xml_stream_feed(s, all + used, strlen(all) - used, &used), 0);
    assert_int_equal(r.opens, 1);
    assert_int_equal(r.nst, 1);
    rec_clear(&r);
    xml_stream_free(s);
}

static void expect_error(const char *doc, enum xml_error want)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    size_t used;
    int rc = xml_stream_feed(s, doc, strlen(doc), &used);
    if (rc != -EPROTO || xml_stream_error(s) != want)
        fail_msg("%s: rc %d error %s (%s), want %s", doc, rc,
                 xml_error_condition(xml_stream_error(s)), xml_stream_error_text(s),
                 xml_error_condition(want));
    assert_true(xml_stream_error_text(s)[0] != '\0');
    /* Sticky until reset. */
    assert_int_equal(xml_stream_feed(s, " ", 1, &used), -EPROTO);
    assert_int_equal(xml_stream_reset(s), 0);
    assert_int_equal(xml_stream_error(s), XML_ERR_NONE);
    assert_int_equal(feed_all(s, HDR "<presence/>"), 0);
    rec_clear(&r);
    xml_stream_free(s);
}

static void test_restricted_xml(void **state)
{
    expect_error("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>"
                 "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
                 XML_ERR_RESTRICTED_XML);
    expect_error("<!DOCTYPE foo SYSTEM 'http://example.com/x.dtd'>", XML_ERR_RESTRICTED_XML);
    expect_error("<!-- hello -->" HDR, XML_ERR_RESTRICTED_XML);
    expect_error(HDR "<message><!-- c --></message>", XML_ERR_RESTRICTED_XML);
    expect_error(HDR "<?php echo 1; ?>", XML_ERR_RESTRICTED_XML);
    expect_error("<?xml-stylesheet href='x'?>" HDR, XML_ERR_RESTRICTED_XML);
    expect_error(HDR "<message>&lol;</message>", XML_ERR_RESTRICTED_XML);
    expect_error("<?xml version='1.0' encoding='ISO-8859-1'?>"
                 "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
                 XML_ERR_UNSUPPORTED_ENCODING);
    /* Predefined entities and character references are fine. */
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR "<m a='&quot;&#65;'>&amp;&apos;&#x42;</m>"), 0);
    assert_string_equal(xml_attr_get(r.st[0], "a"), "\"A");
    assert_string_equal(xml_text(r.st[0]), "&'B");
    rec_clear(&r);
    xml_stream_free(s);
}

static void test_namespace_and_format_errors(void **state)
{
    expect_error(HDR "<foo:bar/>", XML_ERR_BAD_NAMESPACE_PREFIX);
    expect_error(HDR "<message><x:y/></message>", XML_ERR_BAD_NAMESPACE_PREFIX);
    expect_error(HDR "<m xmlns:xml='urn:wrong'/>", XML_ERR_BAD_NAMESPACE_PREFIX);
    expect_error("<stream:stream xmlns:stream='urn:not-streams'>", XML_ERR_INVALID_NAMESPACE);
    expect_error("<stream xmlns='jabber:client'>", XML_ERR_INVALID_NAMESPACE);
    expect_error("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
                 XML_ERR_INVALID_NAMESPACE);
    expect_error(HDR "hello", XML_ERR_BAD_FORMAT);
    expect_error(HDR "<a></b>", XML_ERR_NOT_WELL_FORMED);
    expect_error(HDR "<a x='1' x='2'/>", XML_ERR_NOT_WELL_FORMED);
    expect_error(HDR "<a>\xff</a>", XML_ERR_NOT_WELL_FORMED);
    expect_error(HDR "<a>\x01</a>", XML_ERR_NOT_WELL_FORMED);
    expect_error(HDR "</stream:stream><more/>", XML_ERR_NOT_WELL_FORMED);
    expect_error("<?xml version='1.0'?><?xml version='1.0'?>", XML_ERR_NOT_WELL_FORMED);
}

static void test_size_limit(void **state)
{
    struct xml_limits lim = {.max_stanza = 100};
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    xml_stream_set_limits(s, &lim);
    /* Exactly 100 bytes passes, 101 does not. */
    char st[256];
    memset(st, 0, sizeof st);
    strcpy(st, "<m>");
    memset(st + 3, 'x', 100 - 7);
    strcat(st, "</m>");
    assert_int_equal(strlen(st), 100);
    assert_int_equal(feed_all(s, st), 0);
    assert_int_equal(r.total, 1);
    /* Whitespace between stanzas does not add up. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(feed_all(s, "  \n "), 0);
    assert_int_equal(feed_all(s, st), 0);
    assert_int_equal(r.total, 2);
    st[3] = 'y';
    memmove(st + 4, st + 3, strlen(st + 3) + 1);
    assert_int_equal(strlen(st), 101);
    size_t used;
    assert_int_equal(xml_stream_feed(s, st, strlen(st), &used), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    assert_int_equal(r.total, 2);
    rec_clear(&r);
    xml_stream_free(s);

    /* A start tag that never ends is cut off at the limit, whatever the
     * size of the reads, before expat buffers it all. */
    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR "<message a='"), 0);
    xml_stream_set_limits(s, &lim);
    char big[64 * 1024];
    memset(big, 'a', sizeof big);
    assert_int_equal(xml_stream_feed(s, big, sizeof big, &used), -EPROTO);
    assert_true(used <= 101);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    xml_stream_free(s);

    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    xml_stream_set_limits(s, &lim);
    assert_int_equal(feed_all(s, "<message a='"), 0);
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = xml_stream_feed(s, "a", 1, &used);
    assert_int_equal(rc, -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    xml_stream_free(s);

    /* The header counts too. */
    s = new_stream(&r, &lim);
    assert_int_equal(xml_stream_feed(s, HDR, strlen(HDR), &used), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    assert_int_equal(r.opens, 0);
    xml_stream_free(s);

    /* Raising the limit after authentication. */
    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    char *large = malloc(XML_LIMIT_PREAUTH + 64);
    strcpy(large, "<m>");
    memset(large + 3, 'z', XML_LIMIT_PREAUTH);
    strcpy(large + 3 + XML_LIMIT_PREAUTH, "</m>");
    struct xml_limits post = {.max_stanza = XML_LIMIT_POSTAUTH};
    xml_stream_set_limits(s, &post);
    assert_int_equal(feed_all(s, large), 0);
    assert_int_equal(r.total, 1);
    assert_int_equal(r.st[0]->first->len, XML_LIMIT_PREAUTH);
    rec_clear(&r);
    xml_stream_free(s);
    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    assert_int_equal(feed_all(s, large), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    xml_stream_free(s);
    free(large);
}

static void test_depth_and_node_limits(void **state)
{
    struct xml_limits lim = {.max_depth = 4, .max_nodes = 10};
    struct rec r;
    struct xml_stream *s = new_stream(&r, &lim);
    assert_int_equal(feed_all(s, HDR "<a><b><c><d/></c></b></a>"), 0);
    assert_int_equal(r.total, 1);
    assert_int_equal(feed_all(s, "<a><b><c><d><e/></d></c></b></a>"), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    rec_clear(&r);
    xml_stream_free(s);

    s = new_stream(&r, &lim);
    /* 1 + 4 attributes + 5 children = 10 nodes */
    assert_int_equal(feed_all(s, HDR "<a w='1' x='2' y='3' z='4'><b/><b/><b/><b/><b/></a>"), 0);
    assert_int_equal(r.total, 1);
    assert_int_equal(feed_all(s, "<a>t<b/>t<b/>t<b/>t<b/>t<b/></a>"), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    rec_clear(&r);
    xml_stream_free(s);

    /* Deep nesting at the default limit, far below what expat allows. */
    s = new_stream(&r, NULL);
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, HDR);
    for (int i = 0; i < 40; i++)
        buf_append_str(&b, "<a>");
    buf_cstr(&b);
    assert_int_equal(feed_all(s, b.data), -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_POLICY_VIOLATION);
    buf_free(&b);
    xml_stream_free(s);
}

/* Over a megabyte of stanzas with ever new names: the parser is swapped
 * underneath, invisibly. */
static void test_parser_recycling(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR), 0);
    char st[256];
    size_t fed = 0;
    int n = 0;
    struct buf chunk;
    buf_init(&chunk, 0);
    while (fed < 3u * 1024 * 1024) {
        buf_reset(&chunk);
        for (int i = 0; i < 100; i++, n++) {
            int len = snprintf(st, sizeof st,
                               "<db:result n%d='x' from='a'><el%d xmlns='urn:%d'>%d</el%d>"
                               "</db:result>",
                               n, n, n, n, n);
            buf_append(&chunk, st, (size_t)len);
        }
        size_t used;
        /* Split each chunk at an odd place. */
        size_t cut = chunk.len / 3 + 7;
        assert_int_equal(xml_stream_feed(s, chunk.data, cut, &used), 0);
        assert_int_equal(xml_stream_feed(s, chunk.data + cut, chunk.len - cut, &used), 0);
        fed += chunk.len;
        rec_clear(&r);
    }
    assert_int_equal(r.total, n);
    assert_int_equal(feed_all(s, "<message><body>still here</body></message></stream:stream>"),
                     0);
    assert_string_equal(xml_child_text(r.st[0], "body", XMPP_NS_CLIENT), "still here");
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.opens, 1);
    buf_free(&chunk);
    rec_clear(&r);
    xml_stream_free(s);
}

static void test_callbacks(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    r.fail_on = "bad";
    size_t used;
    const char *doc = HDR "<ok/><bad/><ok/>";
    assert_int_equal(xml_stream_feed(s, doc, strlen(doc), &used), -EPERM);
    assert_int_equal(xml_stream_error(s), XML_ERR_CALLBACK);
    assert_int_equal(r.total, 2);
    rec_clear(&r);
    xml_stream_free(s);

    /* feed and reset from a callback are refused. */
    s = new_stream(&r, NULL);
    r.s = s;
    assert_int_equal(feed_all(s, HDR "<ok/>"), 0);
    assert_int_equal(r.reentry_rc, -EBUSY);
    rec_clear(&r);
    xml_stream_free(s);

    /* After the close only whitespace. */
    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, HDR "</stream:stream>"), 0);
    assert_int_equal(r.closes, 1);
    assert_int_equal(feed_all(s, " \r\n"), 0);
    assert_int_equal(feed_all(s, "<x/>"), -EPROTO);
    xml_stream_free(s);

    /* Wrong mode. */
    s = new_stream(&r, NULL);
    assert_int_equal(xml_stream_feed_frame(s, "<a/>", 4, &used), -EINVAL);
    xml_stream_free(s);
}

/* ---- WebSocket framing ------------------------------------------------ */

static struct xml_stream *new_framed(struct rec *r)
{
    memset(r, 0, sizeof *r);
    struct xml_stream *s = xml_stream_new(XML_MODE_FRAMED, NULL, &rec_cb, r);
    assert_non_null(s);
    return s;
}

static int frame(struct xml_stream *s, const char *m)
{
    size_t used;
    return xml_stream_feed_frame(s, m, strlen(m), &used);
}

static void test_framed(void **state)
{
    struct rec r;
    struct xml_stream *s = new_framed(&r);
    assert_int_equal(frame(s, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' "
                              "version='1.0' xml:lang='de'/>"),
                     0);
    assert_int_equal(r.opens, 1);
    assert_string_equal(r.to, "example.com");
    assert_string_equal(r.lang, "de");
    assert_string_equal(r.content_ns, XMPP_NS_CLIENT);
    assert_string_equal(xml_stream_header(s)->name, "open");
    /* Unqualified stanzas land in jabber:client, as on TCP. */
    assert_int_equal(frame(s, "<message to='a@b'><body>x</body></message>"), 0);
    assert_int_equal(frame(s, "<iq xmlns='jabber:client' type='get' id='1'>"
                              "<ping xmlns='urn:xmpp:ping'/></iq>\n"),
                     0);
    assert_int_equal(frame(s, "   "), 0); /* no element: ignored */
    assert_int_equal(r.nst, 2);
    assert_string_equal(r.st[0]->ns, XMPP_NS_CLIENT);
    assert_string_equal(xml_child(r.st[0], "body", NULL)->ns, XMPP_NS_CLIENT);
    assert_string_equal(r.st[1]->ns, XMPP_NS_CLIENT);
    assert_int_equal(frame(s, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"), 0);
    assert_int_equal(r.closes, 1);
    rec_clear(&r);
    xml_stream_free(s);

    const char *bad[] = {
        "<message/><message/>",
        "<message>",
        "<message",
        "</hearth-frame>",
        "text",
        "<message/>x",
        "<?xml version='1.0'?><message/>",
        "<!-- c --><message/>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = new_framed(&r);
        int rc = frame(s, bad[i]);
        if (rc != -EPROTO)
            fail_msg("frame %s: rc %d", bad[i], rc);
        rec_clear(&r);
        xml_stream_free(s);
    }

    /* A message split over two frames is two bad frames, not one stanza. */
    s = new_framed(&r);
    assert_int_equal(frame(s, "<message><bo"), -EPROTO);
    assert_int_equal(r.total, 0);
    xml_stream_free(s);

    /* Pause in framed mode, and restart with a new <open/>. */
    s = new_framed(&r);
    r.pause_on = "auth";
    assert_int_equal(frame(s, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/>"), 0);
    assert_int_equal(frame(s, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AA==</auth>"),
                     XML_STREAM_PAUSED);
    assert_int_equal(xml_stream_reset(s), 0);
    assert_int_equal(frame(s, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='y'/>"), 0);
    assert_int_equal(r.opens, 2);
    assert_string_equal(r.to, "y");
    assert_int_equal(frame(s, "<presence/>"), 0);
    assert_int_equal(r.nst, 2);
    rec_clear(&r);
    xml_stream_free(s);

    /* A pause leaves nothing of the message to feed again; a second
     * element after the paused one is still refused. */
    s = new_framed(&r);
    r.pause_on = "auth";
    size_t used;
    const char *m = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/> \n";
    assert_int_equal(xml_stream_feed_frame(s, m, strlen(m), &used), XML_STREAM_PAUSED);
    assert_int_equal(used, strlen(m));
    assert_int_equal(frame(s, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><presence/>"),
                     -EPROTO);
    assert_int_equal(xml_stream_error(s), XML_ERR_NOT_WELL_FORMED);
    assert_int_equal(r.total, 2);
    rec_clear(&r);
    xml_stream_free(s);
}

/* Trimming drops expat between stanzas; the stream goes on as before. */
static void test_trim(void **state)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, NULL);
    assert_int_equal(xml_stream_trim(s), 0); /* nothing fed yet */
    assert_int_equal(feed_all(s, HDR "<db:result>1</db:result>"), 0);
    assert_int_equal(xml_stream_trim(s), 0);
    assert_int_equal(xml_stream_trim(s), 0);
    assert_int_equal(feed_all(s, "<db:result>2</db:result> <message><bo"), 0);
    assert_int_equal(xml_stream_trim(s), -EAGAIN); /* half a stanza inside */
    assert_int_equal(feed_all(s, "dy>x</body></message>"), 0);
    assert_int_equal(xml_stream_trim(s), 0);
    assert_int_equal(feed_all(s, "</stream:stream>"), 0);
    assert_int_equal(r.nst, 3);
    assert_string_equal(r.st[1]->ns, XMPP_NS_DIALBACK);
    assert_string_equal(xml_child_text(r.st[2], "body", XMPP_NS_CLIENT), "x");
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.opens, 1);
    rec_clear(&r);
    xml_stream_free(s);

    /* Half a header is not a boundary either. */
    s = new_stream(&r, NULL);
    assert_int_equal(feed_all(s, "<stream:stream xmlns:stream="), 0);
    assert_int_equal(xml_stream_trim(s), -EAGAIN);
    xml_stream_free(s);

    s = new_framed(&r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(frame(s, "<message><body>m</body></message>"), 0);
        assert_int_equal(xml_stream_trim(s), 0);
    }
    assert_int_equal(r.nst, 3);
    assert_string_equal(r.st[2]->ns, XMPP_NS_CLIENT);
    rec_clear(&r);
    xml_stream_free(s);
}

/* ---- tree and serializer ---------------------------------------------- */

/* Parse one element back from serialized bytes (inside a header). */
static struct xml_node *reparse(const char *bytes)
{
    struct rec r;
    struct xml_stream *s = new_stream(&r, &(struct xml_limits){.max_stanza = 1 << 20});
    assert_int_equal(feed_all(s, HDR), 0);
    int rc = feed_all(s, bytes);
    if (rc)
        fail_msg("reparse %s: %s", bytes, xml_stream_error_text(s));
    assert_int_equal(r.nst, 1);
    struct xml_node *n = r.st[0];
    xml_stream_free(s);
    return n;
}

static void test_serialize_exact(void **state)
{
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    assert_int_equal(xml_attr_set(m, "to", "a@b/c"), 0);
    assert_int_equal(xml_attr_set(m, "id", "x'\"<&>"), 0);
    assert_non_null(xml_element_add_text_child(m, "body", NULL, "1 < 2 & 3 > 2 \"q\" 'a'"));
    struct xml_node *x = xml_element_add(m, "x", "urn:x");
    assert_int_equal(xml_attr_set_ns(x, XMPP_NS_XML, "lang", "en"), 0);
    assert_int_equal(xml_attr_set_ns(x, "urn:attr", "a", "1"), 0);
    assert_int_equal(xml_attr_set_ns(x, "urn:attr", "b", "2"), 0);
    assert_int_equal(xml_attr_set_ns(x, "urn:other", "c", "3"), 0);
    assert_non_null(xml_element_add(x, "y", NULL));
    assert_non_null(xml_element_add(x, "z", XMPP_NS_CLIENT));
    assert_non_null(xml_element_add(x, "none", ""));

    char *s = ser(m, XMPP_NS_CLIENT);
    assert_string_equal(
        s, "<message to='a@b/c' id='x&apos;&quot;&lt;&amp;&gt;'><body>1 &lt; 2 &amp; 3 &gt; 2 "
           "\"q\" 'a'</body><x xmlns='urn:x' xml:lang='en' xmlns:a1='urn:attr' a1:a='1' a1:b='2' "
           "xmlns:a3='urn:other' a3:c='3'><y/><z xmlns='jabber:client'/><none xmlns=''/></x>"
           "</message>");
    free(s);
    s = ser(m, NULL);
    assert_true(strncmp(s, "<message xmlns='jabber:client' to=", 34) == 0);
    free(s);

    /* Round trip through the parser. */
    s = ser(m, XMPP_NS_CLIENT);
    struct xml_node *back = reparse(s);
    assert_true(xml_node_equal(m, back));
    xml_node_free(back);
    free(s);
    xml_node_free(m);
}

static void test_escape_roundtrip(void **state)
{
    const char *texts[] = {
        "plain",
        "&<>\"'",
        "tab\there\nnewline\r\ncrlf\rcr",
        "]]> end of cdata",
        "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80",
        "  leading and trailing  ",
        "&amp; already escaped &#38;",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct xml_node *m = xml_element_new("m", XMPP_NS_CLIENT);
        xml_attr_set(m, "a", texts[i]);
        xml_attr_set_ns(m, "urn:q", "b", texts[i]);
        xml_element_add_text(m, texts[i], strlen(texts[i]));
        xml_element_add_text_child(m, "c", "urn:c", texts[i]);
        char *s = ser(m, XMPP_NS_CLIENT);
        struct xml_node *back = reparse(s);
        if (!xml_node_equal(m, back))
            fail_msg("round trip of '%s' via %s", texts[i], s);
        free(s);
        xml_node_free(back);
        xml_node_free(m);
    }

    /* What XML cannot carry comes back as U+FFFD, and is still XML. */
    const char bad[] = "a\x01" "b\xff" "c\xC0\x80" "d\xED\xA0\x80" "e\xEF\xBF\xBE" "f\0g";
    struct xml_node *m = xml_element_new("m", XMPP_NS_CLIENT);
    xml_element_add_text(m, bad, sizeof bad - 1);
    xml_attr_set(m, "a", "x\x02y");
    char *s = ser(m, XMPP_NS_CLIENT);
    struct xml_node *back = reparse(s);
    assert_string_equal(xml_attr_get(back, "a"), "x\xEF\xBF\xBDy");
    assert_string_equal(xml_text(back), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD"
                                        "d\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                                        "e\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                                        "f\xEF\xBF\xBDg");
    free(s);
    xml_node_free(back);
    xml_node_free(m);

    /* A limited buffer says so. */
    struct buf b;
    buf_init(&b, 8);
    m = xml_element_new("message", XMPP_NS_CLIENT);
    assert_int_equal(xml_serialize(m, NULL, &b), -EMSGSIZE);
    buf_free(&b);
    xml_node_free(m);

    /* Every parsed stanza of the split test survives a round trip. */
    struct rec ref;
    parse_reference(&ref);
    for (int i = 0; i < ref.nst; i++) {
        s = ser(ref.st[i], XMPP_NS_CLIENT);
        back = reparse(s);
        assert_true(xml_node_equal(ref.st[i], back));
        free(s);
        xml_node_free(back);
    }
    rec_clear(&ref);
}

static void test_tree_helpers(void **state)
{
    struct xml_node *iq = xml_element_new("iq", XMPP_NS_CLIENT);
    struct xml_node *q = xml_element_add(iq, "query", "jabber:iq:roster");
    struct xml_node *i1 = xml_element_add(q, "item", NULL);
    struct xml_node *i2 = xml_element_add(q, "item", NULL);
    xml_element_add(q, "other", NULL);
    assert_string_equal(i1->ns, "jabber:iq:roster");
    assert_ptr_equal(xml_first_element(iq), q);
    assert_ptr_equal(xml_child(q, "item", "jabber:iq:roster"), i1);
    assert_ptr_equal(xml_child_next(i1, "item", NULL), i2);
    assert_null(xml_child_next(i2, "item", NULL));
    assert_null(xml_child(q, "item", "urn:other"));
    assert_null(xml_text(q));

    assert_int_equal(xml_attr_set(i1, "jid", "a@b"), 0);
    assert_int_equal(xml_attr_set(i1, "jid", "c@d"), 0);
    assert_int_equal(i1->nattrs, 1);
    assert_string_equal(xml_attr_get(i1, "jid"), "c@d");
    assert_int_equal(xml_attr_set(i1, "xmlns", "x"), -EINVAL);
    assert_int_equal(xml_attr_set(i1, "xmlns:p", "x"), -EINVAL);
    assert_int_equal(xml_attr_remove(i1, "jid"), 0);
    assert_int_equal(xml_attr_remove(i1, "jid"), -ENOENT);
    assert_null(xml_attr_get(i1, "jid"));

    /* Text merges. */
    xml_element_add_text(i2, "ab", 2);
    xml_element_add_text(i2, "cd", 2);
    assert_ptr_equal(i2->first, i2->last);
    assert_string_equal(xml_text(i2), "abcd");

    struct xml_node *c = xml_node_copy(iq);
    assert_true(xml_node_equal(iq, c));
    xml_attr_set(xml_first_element(xml_first_element(c)), "x", "1");
    assert_false(xml_node_equal(iq, c));
    xml_node_free(c);

    /* Unlink and free a middle child. */
    xml_node_free(i2);
    assert_ptr_equal(i1->next, q->last);
    assert_ptr_equal(q->last->prev, i1);

    /* Namespace changes, shorter, equal and longer. */
    assert_int_equal(xml_element_set_ns(iq, XMPP_NS_SERVER), 0);
    assert_string_equal(iq->ns, XMPP_NS_SERVER);
    assert_int_equal(xml_element_set_ns(q, "urn:a-much-longer-namespace:than-before"), 0);
    assert_string_equal(q->ns, "urn:a-much-longer-namespace:than-before");
    assert_int_equal(xml_element_set_ns(q, "u"), 0);
    assert_string_equal(q->ns, "u");
    xml_node_free(iq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_stream),
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_several_in_one_feed),
        cmocka_unit_test(test_restart_mid_buffer),
        cmocka_unit_test(test_starttls_drops_rest),
        cmocka_unit_test(test_pause_continue),
        cmocka_unit_test(test_restricted_xml),
        cmocka_unit_test(test_namespace_and_format_errors),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_depth_and_node_limits),
        cmocka_unit_test(test_parser_recycling),
        cmocka_unit_test(test_callbacks),
        cmocka_unit_test(test_framed),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_serialize_exact),
        cmocka_unit_test(test_escape_roundtrip),
        cmocka_unit_test(test_tree_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
