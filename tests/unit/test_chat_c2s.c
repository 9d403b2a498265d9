/*
 * Client streams and the router, without sockets: a real xmpp_server on a
 * uv loop (temporary data_dir for its certificate, never listening), and
 * c2s sessions over a fake transport that records what is written. The
 * password check runs on the uv worker pool as in the server; the tests
 * run the loop until it has answered.
 *
 * Covered: STARTTLS required before SASL and the plaintext dropped after
 * <starttls/>, host checks, PLAIN (right, wrong three times, disabled) and
 * ANONYMOUS on the guest host, binding and conflicts, from stamping and
 * forgery, the server's own iqs (ping, disco, roster, vCard), messages
 * between sessions, guests kept off federation, the 10 KB / 256 KiB limits,
 * bad XML, and the session table with 10,000 JIDs.
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
#include <unistd.h>

#include "chat/c2s.h"
#include "chat/xmpp.h"
#include "core/buf.h"
#include "core/config.h"

/* ---- fixture ---------------------------------------------------------------- */

static struct config cfg;
static char tmpdir[] = "/tmp/hearth-c2s-XXXXXX";
static uv_loop_t loop;
static int auth_calls;

static int fake_auth(void *ud, const char *user, const char *secret, const char *ip,
                     struct xmpp_account *out)
{
    (void)ud;
    __atomic_fetch_add(&auth_calls, 1, __ATOMIC_SEQ_CST);
    if (strcmp(secret, "right-password") != 0)
        return -EPERM;
    if (strcmp(user, "mallory") == 0)
        return -EACCES;
    if (strcmp(user, "broken") == 0)
        return -EIO;
    memset(out, 0, sizeof *out);
    out->user_id = strcmp(user, "alice") == 0 ? 1 : 2;
    snprintf(out->name, sizeof out->name, "%s", user);
    return 0;
}

struct fake {
    struct buf out;
    bool fail_writes; /* -EPIPE, as a WebSocket that is closing */
    int closed;
    int starttls;
    int writes;
    struct c2s_session *s;
};

static int fake_write(void *ud, const void *data, size_t len)
{
    struct fake *f = ud;
    f->writes++;
    if (f->fail_writes)
        return -EPIPE;
    return buf_append(&f->out, data, len);
}

static void fake_close(void *ud)
{
    struct fake *f = ud;
    f->closed++;
}

static int fake_starttls(void *ud)
{
    struct fake *f = ud;
    f->starttls++;
    return 0;
}

static struct xmpp_server *srv;

static int setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(tmpdir));
    config_defaults(&cfg);
    snprintf(cfg.storage.data_dir, sizeof cfg.storage.data_dir, "%s", tmpdir);
    snprintf(cfg.xmpp.domain, sizeof cfg.xmpp.domain, "localhost");
    cfg.xmpp.federation = false;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct xmpp_hooks hooks = {.ud = NULL, .authenticate = fake_auth};
    srv = xmpp_server_new(&loop, &cfg, NULL, &hooks);
    assert_non_null(srv);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    xmpp_server_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static struct fake *fake_new(enum stanza_framing framing)
{
    struct fake *f = calloc(1, sizeof *f);
    buf_init(&f->out, 0);
    struct c2s_transport t = {
        .ud = f,
        .write = fake_write,
        .close = fake_close,
        .starttls = framing == STANZA_FRAMING_TCP ? fake_starttls : NULL,
    };
    struct c2s_params p = {
        .framing = framing, .websocket = framing == STANZA_FRAMING_WS, .ip = "127.0.0.1"};
    f->s = c2s_session_new(srv, &p, &t);
    assert_non_null(f->s);
    return f;
}

static void fake_free(struct fake *f)
{
    c2s_session_free(f->s);
    buf_free(&f->out);
    free(f);
}

/* Everything written so far, as a string, and forget it. */
static char last[1 << 20];
static const char *take(struct fake *f)
{
    size_t n = f->out.len < sizeof last - 1 ? f->out.len : sizeof last - 1;
    memcpy(last, f->out.data, n);
    last[n] = '\0';
    buf_reset(&f->out);
    return last;
}

static void feed(struct fake *f, const char *s)
{
    c2s_session_feed(f->s, s, strlen(s));
}

static void frame(struct fake *f, const char *s)
{
    c2s_session_feed_frame(f->s, s, strlen(s));
}

static void run_workers(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
}

#define HDR(to) "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
                "xmlns:stream='http://etherx.jabber.org/streams' to='" to "' version='1.0'>"
#define PLAIN_ALICE "AGFsaWNlAHJpZ2h0LXBhc3N3b3Jk" /* \0alice\0right-password */
#define PLAIN_BOB "AGJvYgByaWdodC1wYXNzd29yZA=="   /* \0bob\0right-password */
#define PLAIN_WRONG "AGFsaWNlAHdyb25n"              /* \0alice\0wrong */
#define PLAIN_MALLORY "AG1hbGxvcnkAcmlnaHQtcGFzc3dvcmQ=" /* \0mallory\0right-password */

/* A TCP session through STARTTLS and PLAIN, bound to resource res. */
static struct fake *login_tcp(const char *plain, const char *res)
{
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost"));
    feed(f, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_int_equal(f->starttls, 1);
    feed(f, HDR("localhost"));
    take(f);
    char auth[256];
    snprintf(auth, sizeof auth,
             "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", plain);
    feed(f, auth);
    run_workers();
    assert_non_null(strstr(take(f), "<success"));
    feed(f, HDR("localhost"));
    assert_non_null(strstr(take(f), "urn:ietf:params:xml:ns:xmpp-bind"));
    char bind[256];
    snprintf(bind, sizeof bind,
             "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<resource>%s</resource></bind></iq>",
             res);
    feed(f, bind);
    assert_non_null(strstr(take(f), "type='result'"));
    return f;
}

static char guest_jid[256]; /* of the last login_guest_ws */

static struct fake *login_guest_ws(void)
{
    struct fake *f = fake_new(STANZA_FRAMING_WS);
    frame(f, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='guest.localhost' "
             "version='1.0'/>");
    const char *o = take(f);
    assert_non_null(strstr(o, "<mechanism>ANONYMOUS</mechanism>"));
    assert_null(strstr(o, "PLAIN"));
    frame(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>");
    assert_non_null(strstr(take(f), "<success"));
    frame(f, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='guest.localhost' "
             "version='1.0'/>");
    assert_non_null(strstr(take(f), "xmpp-bind"));
    frame(f, "<iq type='set' id='b' xmlns='jabber:client'><bind "
             "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    const char *r = take(f);
    assert_non_null(strstr(r, "@guest.localhost/"));
    const char *j = strstr(r, "<jid>");
    assert_non_null(j);
    snprintf(guest_jid, sizeof guest_jid, "%.*s", (int)strcspn(j + 5, "<"), j + 5);
    return f;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_tls_required_first(void **state)
{
    (void)state;
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost"));
    const char *o = take(f);
    assert_non_null(strstr(o, "<stream:stream"));
    assert_non_null(strstr(o, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"));
    assert_null(strstr(o, "mechanism"));
    /* SASL in the clear: refused and the stream ends. */
    feed(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_ALICE
            "</auth>");
    o = take(f);
    assert_non_null(strstr(o, "<encryption-required/>"));
    assert_non_null(strstr(o, "policy-violation"));
    assert_int_equal(f->closed, 1);
    assert_int_equal(auth_calls, 0);
    fake_free(f);
}

static void test_stanza_before_tls(void **state)
{
    (void)state;
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost") "<message to='bob@localhost'><body>x</body></message>");
    assert_non_null(strstr(take(f), "not-authorized"));
    assert_int_equal(f->closed, 1);
    fake_free(f);
}

static void test_host_unknown(void **state)
{
    (void)state;
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("example.org"));
    const char *o = take(f);
    /* Our header first, then the error (RFC 6120 4.9.1.1). */
    assert_non_null(strstr(o, "<stream:stream"));
    assert_non_null(strstr(o, "<host-unknown"));
    assert_non_null(strstr(o, "</stream:stream>"));
    assert_int_equal(f->closed, 1);
    fake_free(f);

    f = fake_new(STANZA_FRAMING_TCP);
    feed(f, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>");
    assert_non_null(strstr(take(f), "unsupported-version"));
    fake_free(f);
}

static void test_starttls_drops_plaintext(void **state)
{
    (void)state;
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost"));
    take(f);
    /* An injected stanza right after <starttls/> in the same read is thrown
     * away: after TLS the stream starts over with a header. */
    feed(f, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_ALICE
            "</auth>");
    assert_int_equal(f->starttls, 1);
    const char *o = take(f);
    assert_non_null(strstr(o, "<proceed"));
    assert_null(strstr(o, "success"));
    assert_int_equal(f->closed, 0);
    feed(f, HDR("localhost"));
    o = take(f);
    assert_non_null(strstr(o, "<mechanism>PLAIN</mechanism>"));
    assert_null(strstr(o, "ANONYMOUS"));
    assert_null(strstr(o, "starttls"));
    assert_int_equal(auth_calls, 0);
    fake_free(f);
}

static void test_plain_and_bind(void **state)
{
    (void)state;
    struct fake *f = login_tcp(PLAIN_ALICE, "desk");
    /* ping to the server, disco, roster, vCard, something unknown */
    feed(f, "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    const char *o = take(f);
    assert_non_null(strstr(o, "id='p1'"));
    assert_non_null(strstr(o, "type='result'"));
    assert_non_null(strstr(o, "to='alice@localhost/desk'"));
    feed(f, "<iq type='get' id='p2' to='alice@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    o = take(f);
    assert_non_null(strstr(o, "id='p2'"));
    assert_non_null(strstr(o, "type='result'"));
    feed(f, "<iq type='get' id='d1' to='localhost'><query "
            "xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    o = take(f);
    assert_non_null(strstr(o, "category='server'"));
    assert_non_null(strstr(o, "type='im'"));
    assert_non_null(strstr(o, "var='urn:xmpp:ping'"));
    feed(f, "<iq type='get' id='d2' to='localhost'><query "
            "xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert_non_null(strstr(take(f), "jid='chat.localhost'"));
    feed(f, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    o = take(f);
    assert_non_null(strstr(o, "type='result'"));
    assert_non_null(strstr(o, "jabber:iq:roster"));
    assert_null(strstr(o, "<item"));
    feed(f, "<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>");
    assert_non_null(strstr(take(f), "type='result'"));
    feed(f, "<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>");
    o = take(f);
    assert_non_null(strstr(o, "type='error'"));
    assert_non_null(strstr(o, "service-unavailable"));
    /* A second bind on a bound stream is refused. */
    feed(f, "<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    assert_non_null(strstr(take(f), "not-allowed"));
    fake_free(f);
}

static void test_wrong_password_three_times(void **state)
{
    (void)state;
    struct fake *f = fake_new(STANZA_FRAMING_WS);
    frame(f, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>");
    const char *o = take(f);
    assert_non_null(strstr(o, "<mechanism>PLAIN</mechanism>"));
    assert_null(strstr(o, "ANONYMOUS"));
    for (int i = 0; i < 3; i++) {
        frame(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_WRONG
                 "</auth>");
        run_workers();
        o = take(f);
        assert_non_null(strstr(o, "<not-authorized/>"));
        assert_int_equal(f->closed, i == 2 ? 1 : 0);
    }
    assert_non_null(strstr(o, "policy-violation"));
    fake_free(f);

    f = fake_new(STANZA_FRAMING_WS);
    frame(f, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>");
    frame(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_MALLORY
             "</auth>");
    run_workers();
    assert_non_null(strstr(take(f), "<account-disabled/>"));
    /* ANONYMOUS is not offered on the account host. */
    frame(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>");
    assert_non_null(strstr(take(f), "<invalid-mechanism/>"));
    /* Garbage base64 */
    frame(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>");
    assert_non_null(strstr(take(f), "incorrect-encoding"));
    assert_int_equal(f->closed, 1); /* third failure */
    fake_free(f);
}

static void test_pipelined_after_auth(void **state)
{
    (void)state;
    /* The new stream header sent right behind <auth/> waits for the answer. */
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost"));
    feed(f, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    feed(f, HDR("localhost"));
    take(f);
    feed(f, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" PLAIN_ALICE
            "</auth>" HDR("localhost"));
    assert_null(strstr(take(f), "success"));
    run_workers();
    const char *o = take(f);
    assert_non_null(strstr(o, "<success"));
    assert_non_null(strstr(o, "xmpp-bind"));
    fake_free(f);
}

static void test_guest_and_messages(void **state)
{
    (void)state;
    struct fake *a = login_tcp(PLAIN_ALICE, "desk");
    struct fake *b = login_tcp(PLAIN_BOB, "phone");
    struct fake *g = login_guest_ws();

    /* alice -> bob's bare JID and full JID */
    feed(a, "<message to='bob@localhost' type='chat' id='m1'><body>hi bob</body></message>");
    const char *o = take(b);
    assert_non_null(strstr(o, "hi bob"));
    assert_non_null(strstr(o, "from='alice@localhost/desk'"));
    feed(a, "<message to='BOB@localhost/phone' id='m2'><body>full</body></message>");
    o = take(b);
    assert_non_null(strstr(o, "full"));
    assert_non_null(strstr(o, "to='bob@localhost/phone'")); /* normalised */

    /* to a resource that is not there: to the bare JID (RFC 6121 8.5.3.2.1) */
    feed(a, "<message to='bob@localhost/tablet' type='chat'><body>fallback</body></message>");
    assert_non_null(strstr(take(b), "fallback"));

    /* to an account with no session: service-unavailable */
    feed(a, "<message to='carol@localhost' type='chat' id='m3'><body>x</body></message>");
    o = take(a);
    assert_non_null(strstr(o, "service-unavailable"));
    assert_non_null(strstr(o, "id='m3'"));

    /* guests talk in rooms only: guest -> bob is refused, guest -> another
     * server too */
    frame(g, "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='gm'><body>from a "
             "guest</body></message>");
    assert_null(strstr(take(b), "from a guest"));
    o = take(g);
    assert_non_null(strstr(o, "service-unavailable"));
    assert_non_null(strstr(o, "id='gm'"));
    frame(g, "<message xmlns='jabber:client' to='bob@localhost/phone' type='chat'><body>from a "
             "guest</body></message>");
    assert_null(strstr(take(b), "from a guest"));
    take(g);
    frame(g, "<iq xmlns='jabber:client' to='bob@localhost/phone' type='get' id='gi'>"
             "<query xmlns='jabber:iq:version'/></iq>");
    assert_null(strstr(take(b), "jabber:iq:version"));
    assert_non_null(strstr(take(g), "service-unavailable"));
    /* ... but bob may ask the guest, and the guest may answer */
    char q[512];
    snprintf(q, sizeof q, "<iq to='%s' type='get' id='bq'><query xmlns='jabber:iq:version'/></iq>",
             guest_jid);
    feed(b, q);
    assert_non_null(strstr(take(g), "jabber:iq:version"));
    frame(g, "<iq xmlns='jabber:client' to='bob@localhost/phone' type='result' id='bq'/>");
    assert_non_null(strstr(take(b), "id='bq'"));
    frame(g, "<message xmlns='jabber:client' to='someone@example.org' type='chat' "
             "id='r1'><body>x</body></message>");
    o = take(g);
    assert_non_null(strstr(o, "service-unavailable"));
    assert_non_null(strstr(o, "xmlns='jabber:client'")); /* each WS message carries it */

    /* a forged from ends the stream */
    feed(a, "<message from='bob@localhost/phone' to='bob@localhost'><body>x</body></message>");
    assert_null(strstr(take(b), "<body>x</body>"));
    assert_non_null(strstr(take(a), "invalid-from"));
    assert_int_equal(a->closed, 1);

    /* a bad to gets jid-malformed */
    feed(b, "<message to='a@b@c' id='bad'><body>x</body></message>");
    o = take(b);
    assert_non_null(strstr(o, "jid-malformed"));

    struct xmpp_stats st;
    xmpp_server_stats(srv, &st);
    assert_int_equal(st.websocket, 1);
    assert_int_equal(st.c2s, 1); /* alice went away */

    fake_free(a);
    fake_free(b);
    fake_free(g);
    xmpp_server_stats(srv, &st);
    assert_int_equal(st.websocket + st.c2s, 0);
}

static void test_conflict_replaces(void **state)
{
    (void)state;
    struct fake *a = login_tcp(PLAIN_ALICE, "desk");
    struct fake *a2 = login_tcp(PLAIN_ALICE, "desk");
    const char *o = take(a);
    assert_non_null(strstr(o, "<conflict"));
    assert_int_equal(a->closed, 1);
    assert_int_equal(a2->closed, 0);
    /* the old one going away does not unregister the new one */
    fake_free(a);
    struct fake *b = login_tcp(PLAIN_BOB, "x");
    feed(b, "<message to='alice@localhost/desk'><body>still here</body></message>");
    assert_non_null(strstr(take(a2), "still here"));
    fake_free(a2);
    fake_free(b);
}

static void test_before_bind_and_limits(void **state)
{
    (void)state;
    /* A stanza before authentication */
    struct fake *g = fake_new(STANZA_FRAMING_WS);
    frame(g, "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='guest.localhost' "
             "version='1.0'/>");
    frame(g, "<message xmlns='jabber:client' to='bob@localhost'><body>x</body></message>");
    assert_non_null(strstr(take(g), "not-authorized"));
    fake_free(g);

    /* 10 KB before authentication */
    struct fake *f = fake_new(STANZA_FRAMING_TCP);
    feed(f, HDR("localhost"));
    take(f);
    static char big[300 * 1024];
    memset(big, 0, sizeof big);
    strcpy(big, "<iq type='get' id='x'><query xmlns='urn:x'>");
    memset(big + strlen(big), 'a', 12000);
    strcat(big, "</query></iq>");
    feed(f, big);
    assert_non_null(strstr(take(f), "policy-violation"));
    assert_int_equal(f->closed, 1);
    fake_free(f);

    /* 200 KiB after */
    struct fake *a = login_tcp(PLAIN_ALICE, "big");
    struct fake *b = login_tcp(PLAIN_BOB, "big");
    memset(big, 0, sizeof big);
    strcpy(big, "<message to='bob@localhost/big'><body>");
    memset(big + strlen(big), 'z', 200 * 1024);
    strcat(big, "</body></message>");
    feed(a, big);
    assert_int_equal(a->closed, 0);
    assert_true(b->out.len > 200 * 1024);
    take(b);
    /* a stanza over 256 KiB is too much even then */
    memset(big, 0, sizeof big);
    strcpy(big, "<message to='bob@localhost/big'><body>");
    memset(big + strlen(big), 'z', 270 * 1024);
    strcat(big, "</body></message>");
    feed(a, big);
    assert_non_null(strstr(take(a), "policy-violation"));
    assert_int_equal(b->out.len, 0);
    fake_free(a);
    fake_free(b);
}

static void test_bad_xml(void **state)
{
    (void)state;
    struct fake *a = login_tcp(PLAIN_ALICE, "one");
    struct fake *b = login_tcp(PLAIN_BOB, "two");
    feed(a, "<message><body>oops</bod></message>");
    assert_non_null(strstr(take(a), "not-well-formed"));
    assert_int_equal(a->closed, 1);
    /* the other stream goes on */
    feed(b, "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_non_null(strstr(take(b), "type='result'"));
    assert_int_equal(b->closed, 0);
    /* the client closing its stream: we close ours */
    feed(b, "</stream:stream>");
    assert_non_null(strstr(take(b), "</stream:stream>"));
    assert_int_equal(b->closed, 1);
    fake_free(a);
    fake_free(b);
}

static void dummy_deliver(void *sess, struct xml_node *st)
{
    (*(int *)sess)++;
    xml_node_free(st);
}


/* ---- write failures, rate limit, resources -------------------------------------- */

static int gone_seen;
static char gone_last[256];
static void on_gone_record(void *ud, const struct jid *full)
{
    (void)ud;
    gone_seen++;
    jid_format(full, gone_last, sizeof gone_last);
}

/* A delivery whose write fails (the MUC broadcasting to a WebSocket that is
 * closing) must not end the session from inside: the watchers hear of it on
 * a later loop turn, never during the delivery. */
static void test_write_failure_is_deferred(void **state)
{
    (void)state;
    assert_int_equal(xmpp_server_on_session_gone(srv, on_gone_record, NULL), 0);
    gone_seen = 0;
    struct fake *a = login_tcp(PLAIN_ALICE, "desk");
    struct fake *b = login_tcp(PLAIN_BOB, "phone");
    struct jid bj = {0};
    assert_int_equal(jid_parse(&bj, "bob@localhost/phone"), 0);

    b->fail_writes = true;
    /* As the MUC does it: straight to the session. */
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    xml_attr_set(m, "from", "room@chat.localhost/x");
    xml_attr_set(m, "to", "bob@localhost/phone");
    xml_element_add_text_child(m, "body", NULL, "one");
    assert_int_equal(xmpp_server_deliver_local(srv, &bj, m), 0);
    assert_int_equal(gone_seen, 0);
    assert_non_null(xmpp_server_peer(srv, &bj));
    assert_int_equal(b->closed, 0);
    /* Through the router too; later deliveries are dropped without writing. */
    int writes = b->writes;
    feed(a, "<message to='bob@localhost/phone' type='chat'><body>two</body></message>");
    assert_int_equal(b->writes, writes);
    assert_int_equal(gone_seen, 0);

    /* The next loop turn ends it: unregistered, watchers told, closed. */
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(gone_seen, 1);
    assert_string_equal(gone_last, "bob@localhost/phone");
    assert_null(xmpp_server_peer(srv, &bj));
    assert_int_equal(b->closed, 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(gone_seen, 1);

    /* A session freed before its turn comes is simply gone. */
    struct fake *c = login_tcp(PLAIN_BOB, "tablet");
    c->fail_writes = true;
    feed(a, "<message to='bob@localhost/tablet' type='chat'><body>three</body></message>");
    fake_free(c);
    assert_int_equal(gone_seen, 2);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(gone_seen, 2);

    assert_int_equal(xmpp_server_off_session_gone(srv, on_gone_record, NULL), 0);
    assert_int_equal(xmpp_server_off_session_gone(srv, on_gone_record, NULL), -ENOENT);
    jid_free(&bj);
    fake_free(a);
    fake_free(b);
}

/* Removal while a stanza is routed: the watchers are told later. */
static void remove_on_deliver(void *sess, struct xml_node *st)
{
    (void)sess;
    xml_node_free(st);
    struct jid j = {0};
    jid_parse(&j, "dave@localhost/x");
    xmpp_server_session_remove(srv, &j);
    assert_int_equal(gone_seen, 0);
    jid_free(&j);
}

static void test_gone_deferred_inside_routing(void **state)
{
    (void)state;
    static const struct xmpp_session_ops ops = {.deliver = remove_on_deliver};
    assert_int_equal(xmpp_server_on_session_gone(srv, on_gone_record, NULL), 0);
    gone_seen = 0;
    struct jid j = {0};
    assert_int_equal(jid_parse(&j, "dave@localhost/x"), 0);
    assert_int_equal(xmpp_server_session_add(srv, &j, &ops, NULL, NULL), 0);
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    xml_attr_set(m, "from", "alice@localhost/desk");
    xml_attr_set(m, "to", "dave@localhost/x");
    xmpp_route(srv, m);
    assert_int_equal(gone_seen, 0);
    assert_null(xmpp_server_peer(srv, &j));
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(gone_seen, 1);
    /* Outside routing, at once. */
    assert_int_equal(xmpp_server_session_add(srv, &j, &ops, NULL, NULL), 0);
    xmpp_server_session_remove(srv, &j);
    assert_int_equal(gone_seen, 2);
    assert_int_equal(xmpp_server_off_session_gone(srv, on_gone_record, NULL), 0);
    jid_free(&j);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_stanza_rate_limit(void **state)
{
    (void)state;
    struct fake *a = login_tcp(PLAIN_ALICE, "desk");
    /* The loop does not run: no time passes, no token comes back. */
    char buf[64];
    for (int i = 0; i < 50; i++) {
        snprintf(buf, sizeof buf, "<iq type='get' id='p%d'><ping xmlns='urn:xmpp:ping'/></iq>", i);
        feed(a, buf);
    }
    const char *o = take(a);
    assert_int_equal(count(o, "type='result'"), 50);
    assert_int_equal(count(o, "policy-violation"), 0);
    for (int i = 0; i < 50; i++) {
        snprintf(buf, sizeof buf, "<iq type='get' id='q%d'><ping xmlns='urn:xmpp:ping'/></iq>", i);
        feed(a, buf);
    }
    o = take(a);
    assert_int_equal(count(o, "type='result'"), 0);
    assert_int_equal(count(o, "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"), 50);
    assert_int_equal(a->closed, 0);
    feed(a, "<iq type='get' id='last'><ping xmlns='urn:xmpp:ping'/></iq>");
    o = take(a);
    assert_non_null(strstr(o, "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
    assert_int_equal(a->closed, 1);
    fake_free(a);
}

static void nop_deliver(void *sess, struct xml_node *st)
{
    (void)sess;
    xml_node_free(st);
}

static void test_resources_bounded(void **state)
{
    (void)state;
    static const struct xmpp_session_ops ops = {.deliver = nop_deliver};
    char text[64];
    struct jid j = {0};
    for (int i = 0; i <= XMPP_RESOURCES_MAX; i++) {
        snprintf(text, sizeof text, "erin@localhost/r%d", i);
        assert_int_equal(jid_parse(&j, text), 0);
        assert_int_equal(xmpp_server_session_add(srv, &j, &ops, NULL, NULL),
                         i < XMPP_RESOURCES_MAX ? 0 : -EDQUOT);
        jid_free(&j);
    }
    for (int i = 0; i < XMPP_RESOURCES_MAX; i++) {
        snprintf(text, sizeof text, "erin@localhost/r%d", i);
        assert_int_equal(jid_parse(&j, text), 0);
        xmpp_server_session_remove(srv, &j);
        jid_free(&j);
    }
}

static int gone_count;
static void on_gone(void *ud, const struct jid *full)
{
    (void)ud;
    (void)full;
    gone_count++;
}

static void test_table_10000(void **state)
{
    (void)state;
    static const struct xmpp_session_ops ops = {.deliver = dummy_deliver};
    static int hits[10000];
    assert_int_equal(xmpp_server_on_session_gone(srv, on_gone, NULL), 0);
    gone_count = 0;
    for (int i = 0; i < 10000; i++) {
        struct jid j = {0};
        char res[16];
        snprintf(res, sizeof res, "r%d", i % 7);
        char local[16];
        snprintf(local, sizeof local, "u%d", i / 7);
        assert_int_equal(jid_set(&j, local, "guest.localhost", res), 0);
        struct xmpp_peer peer = {.guest = true};
        assert_int_equal(xmpp_server_session_add(srv, &j, &ops, &hits[i], &peer), 0);
        assert_int_equal(xmpp_server_session_add(srv, &j, &ops, &hits[i], &peer), -EEXIST);
        jid_free(&j);
    }
    /* a message to a bare JID reaches all its resources */
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    xml_attr_set(m, "from", "alice@localhost/x");
    xml_attr_set(m, "to", "u100@guest.localhost");
    xml_attr_set(m, "type", "chat");
    xmpp_route(srv, m);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(hits[i], i / 7 == 100 ? 1 : 0);
    struct jid j = {0};
    assert_int_equal(jid_parse(&j, "u5@guest.localhost/r3"), 0);
    assert_non_null(xmpp_server_peer(srv, &j));
    assert_true(xmpp_server_peer(srv, &j)->guest);
    jid_free(&j);
    for (int i = 0; i < 10000; i++) {
        char text[64];
        snprintf(text, sizeof text, "u%d@guest.localhost/r%d", i / 7, i % 7);
        assert_int_equal(jid_parse(&j, text), 0);
        xmpp_server_session_remove(srv, &j);
        assert_null(xmpp_server_peer(srv, &j));
        jid_free(&j);
    }
    assert_int_equal(gone_count, 10000);
}

static int posted;
static void on_posted(void *arg)
{
    posted += *(int *)arg;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
}
#define NULL_TIMER on_timer

static void test_post(void **state)
{
    (void)state;
    static int one = 1;
    posted = 0;
    assert_int_equal(xmpp_server_post(srv, on_posted, &one), 0);
    assert_int_equal(xmpp_server_post(srv, on_posted, &one), 0);
    /* The async handle does not keep the loop alive on its own (the
     * server's listeners do): a timer stands in for them. */
    uv_timer_t keep;
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, NULL_TIMER, 10000, 0);
    for (int i = 0; i < 100 && posted < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(posted, 2);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_required_first),
        cmocka_unit_test(test_stanza_before_tls),
        cmocka_unit_test(test_host_unknown),
        cmocka_unit_test(test_starttls_drops_plaintext),
        cmocka_unit_test(test_plain_and_bind),
        cmocka_unit_test(test_wrong_password_three_times),
        cmocka_unit_test(test_pipelined_after_auth),
        cmocka_unit_test(test_guest_and_messages),
        cmocka_unit_test(test_conflict_replaces),
        cmocka_unit_test(test_before_bind_and_limits),
        cmocka_unit_test(test_bad_xml),
        cmocka_unit_test(test_write_failure_is_deferred),
        cmocka_unit_test(test_gone_deferred_inside_routing),
        cmocka_unit_test(test_stanza_rate_limit),
        cmocka_unit_test(test_resources_bounded),
        cmocka_unit_test(test_table_10000),
        cmocka_unit_test(test_post),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
