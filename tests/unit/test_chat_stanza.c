/*
 * Stanza helpers: kinds and types, error replies, stream headers, errors and
 * closes in both framings (checked by parsing them back), content namespace
 * moves, ids.
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

#include "chat/stanza.h"

struct got {
    int opens, closes, nst;
    char to[64], from[64], id[64], version[16], lang[16], ns[64];
    bool db;
    struct xml_node *st[8];
};

static int on_open(void *ud, const struct xml_open *o)
{
    struct got *g = ud;
    g->opens++;
    snprintf(g->to, sizeof g->to, "%s", o->to ? o->to : "");
    snprintf(g->from, sizeof g->from, "%s", o->from ? o->from : "");
    snprintf(g->id, sizeof g->id, "%s", o->id ? o->id : "");
    snprintf(g->version, sizeof g->version, "%s", o->version ? o->version : "");
    snprintf(g->lang, sizeof g->lang, "%s", o->lang ? o->lang : "");
    snprintf(g->ns, sizeof g->ns, "%s", o->content_ns ? o->content_ns : "");
    for (size_t i = 0; i < o->ndecls; i++)
        g->db |= strcmp(o->decls[i].prefix, "db") == 0;
    return 0;
}

static int on_stanza(void *ud, struct xml_node *st)
{
    struct got *g = ud;
    assert_true(g->nst < 8);
    g->st[g->nst++] = st;
    return 0;
}

static int on_close(void *ud)
{
    ((struct got *)ud)->closes++;
    return 0;
}

static const struct xml_stream_callbacks cbs = {on_open, on_stanza, on_close};

static void got_free(struct got *g)
{
    for (int i = 0; i < g->nst; i++)
        xml_node_free(g->st[i]);
}

static struct xml_node *parse_one(const char *stanza)
{
    struct got g = {0};
    struct xml_stream *s = xml_stream_new(XML_MODE_FRAMED, NULL, &cbs, &g);
    size_t used;
    assert_int_equal(xml_stream_feed_frame(s, stanza, strlen(stanza), &used), 0);
    assert_int_equal(g.nst, 1);
    xml_stream_free(s);
    return g.st[0];
}

static void test_kind_and_type(void **state)
{
    static const struct {
        const char *xml;
        enum stanza_kind kind;
        enum stanza_type type;
    } cases[] = {
        {"<message/>", STANZA_MESSAGE, STANZA_TYPE_NORMAL},
        {"<message type='chat'/>", STANZA_MESSAGE, STANZA_TYPE_CHAT},
        {"<message type='groupchat'/>", STANZA_MESSAGE, STANZA_TYPE_GROUPCHAT},
        {"<message type='bogus'/>", STANZA_MESSAGE, STANZA_TYPE_NORMAL},
        {"<message type='error'/>", STANZA_MESSAGE, STANZA_TYPE_ERROR},
        {"<presence/>", STANZA_PRESENCE, STANZA_TYPE_NONE},
        {"<presence type='unavailable'/>", STANZA_PRESENCE, STANZA_TYPE_UNAVAILABLE},
        {"<presence type='subscribe'/>", STANZA_PRESENCE, STANZA_TYPE_SUBSCRIBE},
        {"<presence type='chat'/>", STANZA_PRESENCE, STANZA_TYPE_UNKNOWN},
        {"<iq type='get'/>", STANZA_IQ, STANZA_TYPE_GET},
        {"<iq type='result'/>", STANZA_IQ, STANZA_TYPE_RESULT},
        {"<iq/>", STANZA_IQ, STANZA_TYPE_NONE},
        {"<iq type='chat'/>", STANZA_IQ, STANZA_TYPE_UNKNOWN},
        {"<iq xmlns='jabber:server' type='set'/>", STANZA_IQ, STANZA_TYPE_SET},
        {"<iq xmlns='urn:other' type='set'/>", STANZA_OTHER, STANZA_TYPE_UNKNOWN},
        {"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", STANZA_OTHER, STANZA_TYPE_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct xml_node *n = parse_one(cases[i].xml);
        assert_int_equal(stanza_kind(n), cases[i].kind);
        assert_int_equal(stanza_type(n), cases[i].type);
        xml_node_free(n);
    }
}

static void test_error_reply(void **state)
{
    struct xml_node *iq = parse_one("<iq from='a@b/c' to='example.com' id='q1' type='get'>"
                                    "<query xmlns='urn:x'/></iq>");
    struct xml_node *r;
    struct stanza_error e = {.cond = STANZA_COND_SERVICE_UNAVAILABLE};
    assert_int_equal(stanza_error_reply(iq, &e, &r), 0);
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(stanza_write(&b, STANZA_FRAMING_TCP, XMPP_NS_CLIENT, r), 0);
    buf_cstr(&b);
    assert_string_equal(b.data, "<iq to='a@b/c' from='example.com' id='q1' type='error'>"
                                "<error type='cancel'><service-unavailable "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    assert_int_equal(stanza_type(r), STANZA_TYPE_ERROR);
    /* Never an error to an error. */
    struct xml_node *r2;
    assert_int_equal(stanza_error_reply(r, &e, &r2), -EINVAL);
    assert_null(r2);
    xml_node_free(r);

    e = (struct stanza_error){.cond = STANZA_COND_NOT_ACCEPTABLE,
                              .text = "too <long>",
                              .by = "room@chat.example.com",
                              .app_ns = "urn:app",
                              .app_name = "too-long",
                              .with_payload = true};
    assert_int_equal(stanza_error_reply(iq, &e, &r), 0);
    buf_reset(&b);
    assert_int_equal(stanza_write(&b, STANZA_FRAMING_WS, XMPP_NS_CLIENT, r), 0);
    buf_cstr(&b);
    assert_string_equal(b.data,
                        "<iq xmlns='jabber:client' to='a@b/c' from='example.com' id='q1' "
                        "type='error'><query xmlns='urn:x'/><error type='modify' "
                        "by='room@chat.example.com'><not-acceptable "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>too &lt;long&gt;</text>"
                        "<too-long xmlns='urn:app'/></error></iq>");
    xml_node_free(r);
    xml_node_free(iq);

    /* Explicit type; a stanza without addresses; a non-stanza. */
    struct xml_node *m = parse_one("<message><body>x</body></message>");
    e = (struct stanza_error){.cond = STANZA_COND_FORBIDDEN, .type = STANZA_ERROR_CANCEL};
    assert_int_equal(stanza_error_reply(m, &e, &r), 0);
    assert_null(xml_attr_get(r, "to"));
    assert_null(xml_child(r, "body", NULL));
    struct xml_node *err = xml_child(r, "error", XMPP_NS_CLIENT);
    assert_string_equal(xml_attr_get(err, "type"), "cancel");
    assert_non_null(xml_child(err, "forbidden", XMPP_NS_STANZA_ERRORS));
    xml_node_free(r);
    xml_node_free(m);
    struct xml_node *a = parse_one("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_int_equal(stanza_error_reply(a, &e, &r), -EINVAL);
    xml_node_free(a);
    buf_free(&b);

    for (int c = 0; c < STANZA_COND_COUNT; c++) {
        assert_non_null(stanza_cond_name(c));
        assert_int_not_equal(stanza_cond_default_type(c), STANZA_ERROR_DEFAULT);
    }
    assert_string_equal(stanza_cond_name(STANZA_COND_JID_MALFORMED), "jid-malformed");
    for (int c = 0; c < STANZA_STREAM_COUNT; c++)
        assert_non_null(stanza_stream_cond_name(c));
    assert_string_equal(stanza_stream_cond_name(STANZA_STREAM_RESTRICTED_XML), "restricted-xml");
    assert_int_equal(stanza_stream_cond_from_xml(XML_ERR_POLICY_VIOLATION),
                     STANZA_STREAM_POLICY_VIOLATION);
    assert_string_equal(stanza_stream_cond_name(stanza_stream_cond_from_xml(XML_ERR_BAD_FORMAT)),
                        xml_error_condition(XML_ERR_BAD_FORMAT));
}

static void test_tcp_stream_bytes(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    struct stanza_header h = {.content_ns = XMPP_NS_SERVER,
                              .from = "hearth.example",
                              .to = "prosody.example",
                              .id = "abc'd",
                              .lang = "en",
                              .dialback = true};
    assert_int_equal(stanza_stream_header(&b, STANZA_FRAMING_TCP, &h), 0);
    buf_cstr(&b);
    assert_string_equal(b.data, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                                "xmlns:stream='http://etherx.jabber.org/streams' "
                                "xmlns:db='jabber:server:dialback' id='abc&apos;d' "
                                "from='hearth.example' to='prosody.example' version='1.0' "
                                "xml:lang='en'>");
    /* It parses as our own stream header, and what follows as a stream. */
    struct xml_node *m = xml_element_new("message", XMPP_NS_SERVER);
    xml_element_add_text_child(m, "body", NULL, "hi");
    assert_int_equal(stanza_write(&b, STANZA_FRAMING_TCP, XMPP_NS_SERVER, m), 0);
    xml_node_free(m);
    assert_int_equal(stanza_stream_error(&b, STANZA_FRAMING_TCP, STANZA_STREAM_HOST_UNKNOWN,
                                         "no such <host>"),
                     0);
    assert_int_equal(stanza_stream_close(&b, STANZA_FRAMING_TCP, NULL), 0);
    buf_cstr(&b);
    assert_non_null(strstr(b.data, "<message><body>hi</body></message><stream:error>"
                                   "<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                                   "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such "
                                   "&lt;host&gt;</text></stream:error></stream:stream>"));

    struct got g = {0};
    struct xml_stream *s = xml_stream_new(XML_MODE_STREAM, NULL, &cbs, &g);
    size_t used;
    assert_int_equal(xml_stream_feed(s, b.data, b.len, &used), 0);
    assert_int_equal(g.opens, 1);
    assert_string_equal(g.ns, XMPP_NS_SERVER);
    assert_string_equal(g.id, "abc'd");
    assert_string_equal(g.to, "prosody.example");
    assert_string_equal(g.lang, "en");
    assert_true(g.db);
    assert_int_equal(g.nst, 2);
    assert_string_equal(g.st[0]->ns, XMPP_NS_SERVER);
    assert_string_equal(g.st[1]->name, "error");
    assert_string_equal(g.st[1]->ns, XMPP_NS_STREAMS);
    assert_non_null(xml_child(g.st[1], "host-unknown", XMPP_NS_STREAM_ERRORS));
    assert_int_equal(g.closes, 1);
    got_free(&g);
    xml_stream_free(s);
    buf_free(&b);

    /* The c2s default: jabber:client, no dialback, no optional attributes. */
    buf_init(&b, 0);
    struct stanza_header c2s = {0};
    assert_int_equal(stanza_stream_header(&b, STANZA_FRAMING_TCP, &c2s), 0);
    buf_cstr(&b);
    assert_string_equal(b.data, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    buf_free(&b);
}

/* RFC 7395: each call's output is one WebSocket message; feed them back. */
static void test_websocket_framing(void **state)
{
    struct buf open, st, err, close;
    buf_init(&open, 0);
    buf_init(&st, 0);
    buf_init(&err, 0);
    buf_init(&close, 0);
    struct stanza_header h = {.from = "example.com", .id = "s1", .lang = "en"};
    assert_int_equal(stanza_stream_header(&open, STANZA_FRAMING_WS, &h), 0);
    buf_cstr(&open);
    assert_string_equal(open.data, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='s1' "
                                   "from='example.com' version='1.0' xml:lang='en'/>");
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    xml_attr_set(m, "to", "a@b");
    assert_int_equal(stanza_write(&st, STANZA_FRAMING_WS, XMPP_NS_CLIENT, m), 0);
    xml_node_free(m);
    assert_int_equal(stanza_stream_error(&err, STANZA_FRAMING_WS, STANZA_STREAM_POLICY_VIOLATION,
                                         NULL),
                     0);
    buf_cstr(&err);
    assert_string_equal(err.data, "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                                  "<policy-violation "
                                  "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    assert_int_equal(stanza_stream_close(&close, STANZA_FRAMING_WS, NULL), 0);
    buf_cstr(&close);
    assert_string_equal(close.data, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");

    struct got g = {0};
    struct xml_stream *s = xml_stream_new(XML_MODE_FRAMED, NULL, &cbs, &g);
    size_t used;
    assert_int_equal(xml_stream_feed_frame(s, open.data, open.len, &used), 0);
    assert_int_equal(g.opens, 1);
    assert_string_equal(g.from, "example.com");
    assert_string_equal(g.version, "1.0");
    assert_string_equal(g.lang, "en");
    assert_int_equal(xml_stream_feed_frame(s, st.data, st.len, &used), 0);
    assert_int_equal(xml_stream_feed_frame(s, err.data, err.len, &used), 0);
    assert_int_equal(g.nst, 2);
    assert_string_equal(g.st[0]->ns, XMPP_NS_CLIENT);
    assert_string_equal(g.st[1]->ns, XMPP_NS_STREAMS);
    assert_int_equal(xml_stream_feed_frame(s, close.data, close.len, &used), 0);
    assert_int_equal(g.closes, 1);
    got_free(&g);
    xml_stream_free(s);

    buf_reset(&close);
    assert_int_equal(stanza_stream_close(&close, STANZA_FRAMING_WS, "wss://other.example/ws"), 0);
    buf_cstr(&close);
    assert_string_equal(close.data, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' "
                                    "see-other-uri='wss://other.example/ws'/>");
    buf_free(&open);
    buf_free(&st);
    buf_free(&err);
    buf_free(&close);
}

static void test_content_ns_and_jids(void **state)
{
    struct xml_node *m =
        parse_one("<message from='Romeo@Example.com/x' to='bad@@example.com'><body>hi</body>"
                  "<x xmlns='urn:x'><y/></x></message>");
    assert_int_equal(stanza_set_content_ns(m, XMPP_NS_CLIENT, XMPP_NS_SERVER), 0);
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(stanza_write(&b, STANZA_FRAMING_TCP, XMPP_NS_SERVER, m), 0);
    buf_cstr(&b);
    assert_string_equal(b.data, "<message from='Romeo@Example.com/x' to='bad@@example.com'>"
                                "<body>hi</body><x xmlns='urn:x'><y/></x></message>");
    assert_string_equal(xml_child(m, "body", NULL)->ns, XMPP_NS_SERVER);
    buf_free(&b);

    struct jid j;
    assert_int_equal(stanza_jid(m, "from", &j), 0);
    assert_string_equal(j.local, "romeo");
    jid_free(&j);
    assert_int_equal(stanza_jid(m, "to", &j), -EINVAL);
    assert_int_equal(stanza_jid(m, "id", &j), -ENOENT);
    assert_null(j.domain);
    xml_node_free(m);
}

static void test_ids(void **state)
{
    char a[STANZA_ID_SIZE], b[STANZA_ID_SIZE];
    assert_int_equal(stanza_id_new(a), 0);
    assert_int_equal(stanza_id_new(b), 0);
    assert_int_equal(strlen(a), STANZA_ID_SIZE - 1);
    assert_string_not_equal(a, b);
    for (size_t i = 0; a[i]; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               a[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_and_type),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_tcp_stream_bytes),
        cmocka_unit_test(test_websocket_framing),
        cmocka_unit_test(test_content_ns_and_jids),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
