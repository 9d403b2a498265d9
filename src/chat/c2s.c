/*
 * Client streams: the RFC 6120 state machine, once for TCP and WebSocket.
 * See c2s.h.
 *
 * How it works. The transport feeds bytes (TCP) or whole messages
 * (WebSocket) into an xml_stream; its callbacks run the stream:
 *
 *   header -> features -> [STARTTLS -> header -> features]       TCP only
 *          -> SASL (PLAIN on a worker, or ANONYMOUS) -> restart
 *          -> header -> features (bind) -> bind -> stanzas to the router
 *
 * Stream restarts (STARTTLS, SASL success) need the parser to stop right
 * after the element that caused them: the callback returns XML_STREAM_PAUSE
 * and the feed loop then acts. After <starttls/> the bytes left in the same
 * read are plaintext sent before the handshake and are thrown away. While a
 * password is checked on a worker, whatever the client sends next is held
 * (bounded) and fed once the answer is known, so the stream never runs
 * ahead of its authentication.
 *
 * Closing: every path ends in session_close, which writes the stream error
 * (after our header if none went out yet), the close, unregisters the JID at
 * once (a replacing session may bind it again before the transport has
 * finished closing) and asks the transport to close. The transport then
 * calls c2s_session_free; if that happens from inside one of our own calls
 * (a synchronous close), the free is deferred to the end of that call.
 *
 * A write that fails is different: it may happen inside a delivery, with
 * the MUC (or the router) in the middle of a broadcast below us, and
 * unregistering there would tell the MUC at once that we are gone, which
 * frees occupants and rooms under its feet. So a failed write only marks
 * the session closing (deliveries are dropped from then on) and queues
 * session_fail_later on the server's deferred queue: on the next loop turn
 * it unregisters the JID and asks the transport to close.
 *
 * Flooding: every stanza of a bound session takes a token from a bucket
 * (RATE_BURST, refilled at RATE_PER_SEC); without one it is refused with
 * policy-violation, and a client that keeps going RATE_GRACE stanzas past
 * an empty bucket gets the policy-violation stream error. The limit is off
 * with xmpp.message_interval = 0 (rate limits off, as the chat bench runs).
 */
#include "chat/c2s.h"

#include <errno.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/ns.h"
#include "chat/xmpp.h"
#include "core/config.h"
#include "core/log.h"

#define AUTH_MAX_FAILURES 3
#define SASL_MAX 4096     /* base64 of one SASL message */
#define HELD_MAX 65536    /* input held while a password is checked */
#define CREDS_MAX 1024
#define RATE_BURST 50     /* stanzas a bound session may send at once */
#define RATE_PER_SEC 10   /* and on average */
#define RATE_GRACE 50     /* refused past an empty bucket before the stream ends */

enum pause_why { PAUSE_NONE = 0, PAUSE_STARTTLS, PAUSE_AUTH, PAUSE_RESTART, PAUSE_CLOSED };

struct auth_job {
    struct c2s_session *sess; /* NULL once the session went away */
    const struct xmpp_hooks *hooks;
    char user[CREDS_MAX];
    char secret[CREDS_MAX];
    char authzid[CREDS_MAX];
    char ip[64];
    struct xmpp_account account;
    int rc;
};

struct c2s_session {
    struct xmpp_server *srv;
    struct c2s_transport t;
    enum stanza_framing framing;
    bool websocket;
    bool secure;       /* encrypted now (TLS done, or given) */
    char ip[64];

    struct xml_stream *xs;
    enum pause_why pause;
    bool header_sent;  /* our header for the current stream */
    bool authed;
    bool bound;
    bool registered;   /* in the router's table */
    bool closing;
    bool failed;       /* a write failed: session_fail_later is queued */
    bool rate_warned;
    bool guest;
    bool sasl_wait_response; /* PLAIN without an initial response */
    int auth_failures;
    /* Kept small: a room may hold 10,000 of these. */
    const char *host;  /* DOMAIN or guest.DOMAIN (the server's strings), from the first header */
    char *local;       /* the localpart, once authenticated */
    struct xmpp_account *account; /* accounts, from authentication until bound */
    struct jid jid;    /* full, once bound */
    char *jid_text;    /* its text form */

    struct auth_job *auth; /* in flight */
    struct buf held;

    int32_t rate_tokens; /* thousandths of a stanza; negative: in debt */
    uint64_t rate_at;    /* loop time of the last refill, ms */
    struct xmpp_deferred later; /* session_fail_later */

    unsigned depth;    /* inside one of our entry points */
    bool free_pending;
};

static const struct xmpp_session_ops c2s_ops;
static void session_destroy(struct c2s_session *s);

/* ---- entry and exit ----------------------------------------------------------- */

static void enter(struct c2s_session *s)
{
    s->depth++;
}

/* false when s is gone. */
static bool leave(struct c2s_session *s)
{
    if (--s->depth == 0 && s->free_pending) {
        session_destroy(s);
        return false;
    }
    return true;
}

static const char *who(const struct c2s_session *s)
{
    return s->jid_text ? s->jid_text : "-";
}

/* ---- output ---------------------------------------------------------------------- */

static void unregister(struct c2s_session *s)
{
    if (s->registered) {
        s->registered = false;
        xmpp_server_session_remove(s->srv, &s->jid);
    }
}

/* On a later loop turn than the failed write: nobody of ours is below. */
static void session_fail_later(struct xmpp_deferred *d)
{
    struct c2s_session *s = (struct c2s_session *)((char *)d - offsetof(struct c2s_session, later));
    enter(s);
    unregister(s);
    s->t.close(s->t.ud);
    leave(s);
}

/* A write failed: say nothing more, and end on a later turn (see the top). */
static void session_fail(struct c2s_session *s, int rc)
{
    if (s->closing)
        return;
    log_info("xmpp c2s %s %s: write failed (%s); closing", s->ip, who(s), strerror(-rc));
    s->closing = true;
    s->failed = true;
    s->pause = PAUSE_CLOSED;
    xmpp_server_defer(s->srv, &s->later, session_fail_later);
}

static int send_buf(struct c2s_session *s, struct buf *b)
{
    if (!b->len)
        return 0;
    if (s->closing) {
        buf_reset(b);
        return -EPIPE;
    }
    int rc = s->t.write(s->t.ud, b->data, b->len);
    buf_reset(b);
    if (rc < 0)
        session_fail(s, rc);
    return rc;
}

static int send_str(struct c2s_session *s, const char *str)
{
    if (s->closing)
        return -EPIPE;
    int rc = s->t.write(s->t.ud, str, strlen(str));
    if (rc < 0)
        session_fail(s, rc);
    return rc;
}

static int write_header(struct c2s_session *s, struct buf *b, const char *to)
{
    char id[STANZA_ID_SIZE];
    if (stanza_id_new(id) != 0)
        return -EIO;
    struct stanza_header h = {
        .content_ns = XMPP_NS_CLIENT,
        .from = s->host ? s->host : xmpp_server_domain(s->srv),
        .to = to,
        .id = id,
        .lang = "en",
    };
    return stanza_stream_header(b, s->framing, &h);
}

/*
 * End the stream: cond < 0 for none (a plain close). Safe to call twice.
 */
static void session_close(struct c2s_session *s, int cond, const char *text)
{
    if (s->closing)
        return;
    struct buf b;
    buf_init(&b, 0);
    if (!s->header_sent && cond >= 0) {
        write_header(s, &b, NULL);
        if (s->framing == STANZA_FRAMING_WS) {
            s->t.write(s->t.ud, b.data, b.len);
            buf_reset(&b);
        }
    }
    if (cond >= 0) {
        stanza_stream_error(&b, s->framing, (enum stanza_stream_cond)cond, text);
        if (s->framing == STANZA_FRAMING_WS) {
            s->t.write(s->t.ud, b.data, b.len);
            buf_reset(&b);
        }
    }
    if (s->header_sent || cond >= 0)
        stanza_stream_close(&b, s->framing, NULL);
    s->closing = true;
    if (b.len)
        s->t.write(s->t.ud, b.data, b.len);
    buf_free(&b);
    unregister(s);
    s->pause = PAUSE_CLOSED;
    s->t.close(s->t.ud);
}

static void stream_error(struct c2s_session *s, enum stanza_stream_cond cond, const char *text)
{
    log_info("xmpp c2s %s %s: stream error %s%s%s", s->ip, who(s), stanza_stream_cond_name(cond),
             text ? ": " : "", text ? text : "");
    session_close(s, (int)cond, text);
}

static int send_features(struct c2s_session *s)
{
    struct buf b;
    buf_init(&b, 0);
    int rc = buf_append_str(&b, s->framing == STANZA_FRAMING_WS
                                    ? "<stream:features xmlns:stream='" XMPP_NS_STREAMS "'>"
                                    : "<stream:features>");
    if (!s->authed && s->framing == STANZA_FRAMING_TCP && !s->secure) {
        /* Nothing but TLS before TLS: no mechanism is offered in the clear. */
        rc |= buf_append_str(&b, "<starttls xmlns='" XMPP_NS_TLS "'><required/></starttls>");
    } else if (!s->authed) {
        rc |= buf_append_str(&b, "<mechanisms xmlns='" XMPP_NS_SASL "'><mechanism>");
        rc |= buf_append_str(&b, s->guest ? "ANONYMOUS" : "PLAIN");
        rc |= buf_append_str(&b, "</mechanism></mechanisms>");
    } else {
        rc |= buf_append_str(&b, "<bind xmlns='" XMPP_NS_BIND "'/>"
                                 "<session xmlns='" XMPP_NS_SESSION "'><optional/></session>");
    }
    rc |= buf_append_str(&b, "</stream:features>");
    if (rc == 0)
        rc = send_buf(s, &b);
    buf_free(&b);
    return rc;
}

static int write_stanza(struct c2s_session *s, const struct xml_node *st)
{
    struct buf b;
    buf_init(&b, 0);
    int rc = stanza_write(&b, s->framing, XMPP_NS_CLIENT, st);
    if (rc == 0)
        rc = send_buf(s, &b);
    buf_free(&b);
    return rc;
}

/* A stanza error straight back to this client (not through the router). */
static void reply_error(struct c2s_session *s, const struct xml_node *st, enum stanza_cond cond,
                        const char *text)
{
    struct stanza_error e = {.cond = cond, .text = text};
    struct xml_node *r = NULL;
    if (stanza_error_reply(st, &e, &r) != 0 || !r)
        return;
    xml_attr_remove(r, "from");
    xml_attr_remove(r, "to");
    if (s->jid_text)
        xml_attr_set(r, "to", s->jid_text);
    write_stanza(s, r);
    xml_node_free(r);
}

/* ---- delivery from the router ------------------------------------------------- */

static void on_deliver(void *sess, struct xml_node *st)
{
    struct c2s_session *s = sess;
    if (!s->closing) {
        enter(s);
        write_stanza(s, st);
        xml_node_free(st);
        leave(s);
        return;
    }
    xml_node_free(st);
}

static const struct xmpp_session_ops c2s_ops = {.deliver = on_deliver};

/* ---- stream header -------------------------------------------------------------- */

static int on_open(void *ud, const struct xml_open *o)
{
    struct c2s_session *s = ud;
    if (s->closing)
        return XML_STREAM_PAUSE;
    if (o->framed != (s->framing == STANZA_FRAMING_WS)) {
        stream_error(s, STANZA_STREAM_INVALID_NAMESPACE, NULL);
        return XML_STREAM_PAUSE;
    }
    if (!o->content_ns || strcmp(o->content_ns, XMPP_NS_CLIENT) != 0) {
        stream_error(s, STANZA_STREAM_INVALID_NAMESPACE, "streams here are jabber:client");
        return XML_STREAM_PAUSE;
    }
    char host[JID_PART_MAX + 1];
    const struct xmpp_server *srv = s->srv;
    bool known = o->to && jid_prep_domain(o->to, strlen(o->to), host, false) == 0 &&
                 (strcmp(host, xmpp_server_domain(srv)) == 0 ||
                  strcmp(host, xmpp_server_guest_domain(srv)) == 0);
    if (!known || (s->host && strcmp(host, s->host) != 0)) {
        stream_error(s, STANZA_STREAM_HOST_UNKNOWN,
                     o->to ? "this server does not serve that domain" : "the header has no to");
        return XML_STREAM_PAUSE;
    }
    if (!s->host) {
        s->guest = strcmp(host, xmpp_server_guest_domain(srv)) == 0;
        s->host = s->guest ? xmpp_server_guest_domain(srv) : xmpp_server_domain(srv);
    }
    if (!o->version || strncmp(o->version, "1.", 2) != 0) {
        stream_error(s, STANZA_STREAM_UNSUPPORTED_VERSION, "version 1.0 is required");
        return XML_STREAM_PAUSE;
    }
    struct buf b;
    buf_init(&b, 0);
    int rc = write_header(s, &b, s->authed ? s->jid_text : NULL);
    s->header_sent = true;
    if (rc == 0)
        rc = send_buf(s, &b);
    buf_free(&b);
    if (rc == 0)
        send_features(s);
    return s->closing ? XML_STREAM_PAUSE : 0;
}

static int on_close(void *ud)
{
    struct c2s_session *s = ud;
    log_debug("xmpp c2s %s %s: the client closed the stream", s->ip, who(s));
    session_close(s, -1, NULL);
    return XML_STREAM_PAUSE;
}

/* ---- SASL ------------------------------------------------------------------------- */

static void sasl_failure(struct c2s_session *s, const char *cond, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "<failure xmlns='" XMPP_NS_SASL "'><%s/></failure>", cond);
    s->auth_failures++;
    log_info("xmpp c2s %s: authentication failed (%s%s%s), attempt %d", s->ip, cond,
             why ? ": " : "", why ? why : "", s->auth_failures);
    if (send_str(s, msg) < 0)
        return;
    if (s->auth_failures >= AUTH_MAX_FAILURES)
        stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "too many failed authentication attempts");
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char raw[32];
    if (bytes > sizeof raw)
        bytes = sizeof raw;
    randombytes_buf(raw, bytes);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * bytes] = '\0';
}

/* SASL succeeded: the next thing is a new stream. */
static void sasl_success(struct c2s_session *s)
{
    s->authed = true;
    s->sasl_wait_response = false;
    if (send_str(s, "<success xmlns='" XMPP_NS_SASL "'/>") < 0)
        return;
    log_info("xmpp c2s %s: authenticated %s@%s%s", s->ip, s->local, s->host,
             s->guest ? " (guest)" : "");
}

static void auth_work(void *arg)
{
    struct auth_job *j = arg;
    if (!j->hooks->authenticate)
        j->rc = -ENOSYS;
    else
        j->rc = j->hooks->authenticate(j->hooks->ud, j->user, j->secret, j->ip, &j->account);
    sodium_memzero(j->secret, sizeof j->secret);
}

static void held_drain(struct c2s_session *s);

static void auth_done(void *arg)
{
    struct auth_job *j = arg;
    struct c2s_session *s = j->sess;
    if (!s) {
        free(j);
        return;
    }
    s->auth = NULL;
    enter(s);
    if (s->closing)
        goto out;
    char name[JID_PART_MAX + 1];
    if (j->rc == 0 &&
        jid_prep_local(j->account.name, strlen(j->account.name), name, false) != 0) {
        log_error("xmpp c2s %s: the account name '%s' is not a valid localpart", s->ip,
                  j->account.name);
        j->rc = -EINVAL;
    }
    if (j->rc == 0 && j->authzid[0]) {
        /* An authorization identity may only name the account itself. */
        struct jid az = {0};
        bool ok = jid_parse(&az, j->authzid) == 0 && az.local && !az.resource &&
                  strcmp(az.local, name) == 0 && strcmp(az.domain, s->host) == 0;
        jid_free(&az);
        if (!ok) {
            sasl_failure(s, "invalid-authzid", NULL);
            goto resume;
        }
    }
    switch (j->rc) {
    case 0:
        free(s->local);
        free(s->account);
        s->local = strdup(name);
        s->account = malloc(sizeof *s->account);
        if (!s->local || !s->account) {
            stream_error(s, STANZA_STREAM_RESOURCE_CONSTRAINT, NULL);
            break;
        }
        *s->account = j->account;
        memcpy(s->account->name, name, sizeof name);
        sasl_success(s);
        if (!s->closing) {
            xml_stream_reset(s->xs);
            struct xml_limits lim;
            xml_limits_default(&lim);
            lim.max_stanza = XML_LIMIT_POSTAUTH;
            xml_stream_set_limits(s->xs, &lim);
            s->header_sent = false;
        }
        break;
    case -EPERM:
        sasl_failure(s, "not-authorized", "wrong name or secret");
        break;
    case -EACCES:
        sasl_failure(s, "account-disabled", "the account may not log in");
        break;
    default:
        log_warn("xmpp c2s %s: checking credentials failed: %s", s->ip, strerror(-j->rc));
        sasl_failure(s, "temporary-auth-failure", NULL);
        break;
    }
resume:
    if (!s->closing)
        held_drain(s);
out:
    free(j);
    leave(s);
}

/* PLAIN: [authzid] NUL authcid NUL passwd, RFC 4616. */
static int sasl_plain(struct c2s_session *s, const char *b64)
{
    size_t blen = b64 ? strlen(b64) : 0;
    if (blen > SASL_MAX) {
        sasl_failure(s, "malformed-request", "too long");
        return 0;
    }
    unsigned char raw[SASL_MAX];
    size_t n = 0;
    if (!(blen == 1 && b64[0] == '=') && blen &&
        sodium_base642bin(raw, sizeof raw, b64, blen, " \t\r\n", &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        sasl_failure(s, "incorrect-encoding", NULL);
        return 0;
    }
    const unsigned char *p1 = memchr(raw, 0, n);
    const unsigned char *p2 = p1 ? memchr(p1 + 1, 0, n - (size_t)(p1 + 1 - raw)) : NULL;
    size_t zlen = p1 ? (size_t)(p1 - raw) : 0;
    size_t ulen = p2 ? (size_t)(p2 - p1 - 1) : 0;
    size_t plen = p2 ? n - (size_t)(p2 + 1 - raw) : 0;
    if (!p1 || !p2 || !ulen || !plen || zlen >= CREDS_MAX || ulen >= CREDS_MAX ||
        plen >= CREDS_MAX || memchr(p2 + 1, 0, plen)) {
        sodium_memzero(raw, sizeof raw);
        sasl_failure(s, "malformed-request", NULL);
        return 0;
    }
    struct auth_job *j = calloc(1, sizeof *j);
    if (!j) {
        sodium_memzero(raw, sizeof raw);
        sasl_failure(s, "temporary-auth-failure", "out of memory");
        return 0;
    }
    j->sess = s;
    j->hooks = xmpp_server_hooks(s->srv);
    snprintf(j->ip, sizeof j->ip, "%s", s->ip);
    memcpy(j->authzid, raw, zlen);
    memcpy(j->user, p1 + 1, ulen);
    memcpy(j->secret, p2 + 1, plen);
    sodium_memzero(raw, sizeof raw);
    /* "name@DOMAIN" as authcid is the same account. */
    char *at = strchr(j->user, '@');
    if (at && strcasecmp(at + 1, s->host) == 0)
        *at = '\0';
    if (xmpp_server_work(s->srv, auth_work, auth_done, j) != 0) {
        sodium_memzero(j->secret, sizeof j->secret);
        free(j);
        sasl_failure(s, "temporary-auth-failure", "no worker");
        return 0;
    }
    s->auth = j;
    s->pause = PAUSE_AUTH;
    return XML_STREAM_PAUSE;
}

static int on_sasl(struct c2s_session *s, struct xml_node *el)
{
    if (s->authed) {
        stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "already authenticated");
        return XML_STREAM_PAUSE;
    }
    if (s->framing == STANZA_FRAMING_TCP && !s->secure) {
        send_str(s, "<failure xmlns='" XMPP_NS_SASL "'><encryption-required/></failure>");
        stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "STARTTLS is required before logging in");
        return XML_STREAM_PAUSE;
    }
    if (strcmp(el->name, "abort") == 0) {
        s->sasl_wait_response = false;
        sasl_failure(s, "aborted", NULL);
        return s->closing ? XML_STREAM_PAUSE : 0;
    }
    if (strcmp(el->name, "response") == 0 && s->sasl_wait_response) {
        s->sasl_wait_response = false;
        return sasl_plain(s, xml_text(el));
    }
    if (strcmp(el->name, "auth") != 0 || s->sasl_wait_response) {
        stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "unexpected SASL element");
        return XML_STREAM_PAUSE;
    }
    const char *mech = xml_attr_get(el, "mechanism");
    const char *text = xml_text(el);
    if (mech && strcmp(mech, "ANONYMOUS") == 0 && s->guest) {
        char rnd[33];
        random_hex(rnd, 8);
        free(s->local);
        if (!(s->local = strdup(rnd))) {
            stream_error(s, STANZA_STREAM_RESOURCE_CONSTRAINT, NULL);
            return XML_STREAM_PAUSE;
        }
        sasl_success(s);
        s->pause = PAUSE_RESTART;
        return XML_STREAM_PAUSE;
    }
    if (mech && strcmp(mech, "PLAIN") == 0 && !s->guest) {
        if (!text || !*text) {
            s->sasl_wait_response = true; /* RFC 6120 6.4.2: empty challenge */
            send_str(s, "<challenge xmlns='" XMPP_NS_SASL "'/>");
            return s->closing ? XML_STREAM_PAUSE : 0;
        }
        return sasl_plain(s, text);
    }
    sasl_failure(s, "invalid-mechanism", mech);
    return s->closing ? XML_STREAM_PAUSE : 0;
}

/* ---- binding ---------------------------------------------------------------------- */

static void on_bind(struct c2s_session *s, struct xml_node *iq, struct xml_node *bind)
{
    char res[JID_PART_MAX + 1];
    const char *want = xml_child_text(bind, "resource", XMPP_NS_BIND);
    if (want && *want) {
        if (jid_prep_resource(want, strlen(want), res, false) != 0) {
            reply_error(s, iq, STANZA_COND_BAD_REQUEST, "not a valid resource");
            return;
        }
    } else {
        random_hex(res, 8);
    }
    struct jid full = {0};
    if (jid_set(&full, s->local, s->host, res) != 0 || !(s->jid_text = jid_to_string(&full, false))) {
        jid_free(&full);
        reply_error(s, iq, STANZA_COND_INTERNAL_SERVER_ERROR, NULL);
        return;
    }
    /* The newest session wins: the old one gets conflict and goes. */
    const struct xmpp_session_ops *ops = NULL;
    void *old = xmpp_server_session_find(s->srv, &full, &ops);
    if (old && ops == &c2s_ops && old != s) {
        log_info("xmpp c2s %s: %s bound again elsewhere; ending the older stream", s->ip,
                 s->jid_text);
        c2s_session_end(old, "conflict");
    } else if (old) {
        xmpp_server_session_remove(s->srv, &full);
    }
    struct xmpp_peer peer = {.guest = s->guest, .websocket = s->websocket};
    if (s->account)
        peer.account = *s->account;
    snprintf(peer.ip, sizeof peer.ip, "%s", s->ip);
    int rc = xmpp_server_session_add(s->srv, &full, &c2s_ops, s, &peer);
    if (rc != 0) {
        log_warn("xmpp c2s %s: cannot register %s: %s", s->ip, s->jid_text, strerror(-rc));
        jid_free(&full);
        free(s->jid_text);
        s->jid_text = NULL;
        reply_error(s, iq, rc == -EEXIST ? STANZA_COND_CONFLICT
                                         : STANZA_COND_RESOURCE_CONSTRAINT,
                    rc == -EDQUOT ? "too many sessions for this account" : NULL);
        return;
    }
    s->jid = full;
    s->registered = true;
    s->bound = true;
    free(s->account); /* the router's copy is the one that counts now */
    s->account = NULL;

    struct xml_node *r = xml_element_new("iq", XMPP_NS_CLIENT);
    const char *id = xml_attr_get(iq, "id");
    struct xml_node *b = r ? xml_element_add(r, "bind", XMPP_NS_BIND) : NULL;
    if (!b || xml_attr_set(r, "type", "result") || (id && xml_attr_set(r, "id", id)) ||
        !xml_element_add_text_child(b, "jid", NULL, s->jid_text)) {
        xml_node_free(r);
        stream_error(s, STANZA_STREAM_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    write_stanza(s, r);
    xml_node_free(r);
    log_info("xmpp c2s %s: bound %s%s", s->ip, s->jid_text, s->websocket ? " (websocket)" : "");
}

/* ---- stanzas ---------------------------------------------------------------------- */

/*
 * The stanza rate limit (see the top). true: go on with st; false: it was
 * refused (the caller frees it).
 */
static bool rate_ok(struct c2s_session *s, const struct xml_node *st)
{
    if (xmpp_server_config(s->srv)->xmpp.message_interval_ms == 0)
        return true;
    const int64_t full = (int64_t)RATE_BURST * 1000, floor = -(int64_t)RATE_GRACE * 1000 - 1000;
    uint64_t now = uv_now(xmpp_server_loop(s->srv));
    uint64_t dt = now - s->rate_at;
    s->rate_at = now;
    int64_t t = (int64_t)s->rate_tokens + (dt > 3600000 ? full : (int64_t)dt * RATE_PER_SEC);
    if (t > full)
        t = full;
    t -= 1000;
    s->rate_tokens = (int32_t)(t < floor ? floor : t);
    if (t >= 0)
        return true;
    if (t < -(int64_t)RATE_GRACE * 1000) {
        stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "too many stanzas");
        return false;
    }
    if (!s->rate_warned) {
        s->rate_warned = true;
        log_info("xmpp c2s %s %s: over %d stanzas/s (burst %d): refusing stanzas", s->ip, who(s),
                 RATE_PER_SEC, RATE_BURST);
    }
    reply_error(s, st, STANZA_COND_POLICY_VIOLATION, "too many stanzas; slow down");
    return false;
}

/* Owns st. */
static int on_client_stanza(struct c2s_session *s, struct xml_node *st)
{
    enum stanza_kind kind = stanza_kind(st);
    if (kind == STANZA_OTHER) {
        stream_error(s, STANZA_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
        goto drop;
    }
    if (!s->bound) {
        struct xml_node *bind = kind == STANZA_IQ ? xml_child(st, "bind", XMPP_NS_BIND) : NULL;
        if (s->authed && bind && stanza_type(st) == STANZA_TYPE_SET)
            on_bind(s, st, bind);
        else
            stream_error(s, STANZA_STREAM_NOT_AUTHORIZED,
                         s->authed ? "bind a resource first" : "authenticate first");
        goto drop;
    }
    if (!rate_ok(s, st))
        goto drop;
    if (kind == STANZA_IQ && xml_child(st, "bind", XMPP_NS_BIND) && !xml_attr_get(st, "to")) {
        reply_error(s, st, STANZA_COND_NOT_ALLOWED, "already bound");
        goto drop;
    }
    /* from: ours, whatever the client says (a different one is forgery). */
    const char *from = xml_attr_get(st, "from");
    if (from) {
        struct jid fj = {0};
        bool ok = jid_parse(&fj, from) == 0 &&
                  (jid_equal(&fj, &s->jid) || (jid_is_bare(&fj) && jid_bare_equal(&fj, &s->jid)));
        jid_free(&fj);
        if (!ok) {
            stream_error(s, STANZA_STREAM_INVALID_FROM, NULL);
            goto drop;
        }
    }
    const char *to = xml_attr_get(st, "to");
    if (to) {
        struct jid tj = {0};
        char text[JID_MAX + 1];
        int rc = jid_parse(&tj, to);
        if (rc == 0)
            rc = jid_format(&tj, text, sizeof text);
        jid_free(&tj);
        if (rc == -EINVAL || rc == -ENAMETOOLONG) {
            reply_error(s, st, STANZA_COND_JID_MALFORMED, NULL);
            goto drop;
        }
        if (rc || xml_attr_set(st, "to", text) != 0) {
            reply_error(s, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
            goto drop;
        }
    }
    if (xml_attr_set(st, "from", s->jid_text) != 0) {
        reply_error(s, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
        goto drop;
    }
    xmpp_route(s->srv, st);
    return s->closing ? XML_STREAM_PAUSE : 0;
drop:
    xml_node_free(st);
    return s->closing ? XML_STREAM_PAUSE : 0;
}

static int on_stanza(void *ud, struct xml_node *st)
{
    struct c2s_session *s = ud;
    int rc = 0;
    if (s->closing) {
        xml_node_free(st);
        return XML_STREAM_PAUSE;
    }
    if (strcmp(st->ns, XMPP_NS_TLS) == 0 && strcmp(st->name, "starttls") == 0) {
        if (s->framing != STANZA_FRAMING_TCP || s->secure || s->authed || !s->t.starttls) {
            send_str(s, "<failure xmlns='" XMPP_NS_TLS "'/>");
            session_close(s, -1, NULL);
            rc = XML_STREAM_PAUSE;
        } else if (send_str(s, "<proceed xmlns='" XMPP_NS_TLS "'/>") == 0) {
            s->pause = PAUSE_STARTTLS;
            rc = XML_STREAM_PAUSE;
        } else {
            rc = XML_STREAM_PAUSE;
        }
    } else if (strcmp(st->ns, XMPP_NS_SASL) == 0) {
        rc = on_sasl(s, st);
    } else if (strcmp(st->ns, XMPP_NS_CLIENT) == 0) {
        if (s->framing == STANZA_FRAMING_TCP && !s->secure) {
            stream_error(s, STANZA_STREAM_NOT_AUTHORIZED, "STARTTLS first");
            rc = XML_STREAM_PAUSE;
        } else {
            return on_client_stanza(s, st); /* it owns st */
        }
    } else {
        stream_error(s, STANZA_STREAM_UNSUPPORTED_STANZA_TYPE, NULL);
        rc = XML_STREAM_PAUSE;
    }
    xml_node_free(st);
    return rc;
}

/* ---- feeding ------------------------------------------------------------------------ */

static void parse_failed(struct c2s_session *s, int rc)
{
    if (s->closing)
        return;
    enum xml_error e = xml_stream_error(s->xs);
    if (rc == -ENOMEM || e == XML_ERR_NONE || e == XML_ERR_CALLBACK) {
        stream_error(s, STANZA_STREAM_INTERNAL_SERVER_ERROR, NULL);
        return;
    }
    enum stanza_stream_cond c = stanza_stream_cond_from_xml(e);
    log_info("xmpp c2s %s %s: stream error %s: %s", s->ip, who(s), stanza_stream_cond_name(c),
             xml_stream_error_text(s->xs));
    session_close(s, (int)c, NULL);
}

static int held_add(struct c2s_session *s, const char *data, size_t len, bool frame)
{
    if (frame) {
        uint32_t n = (uint32_t)len;
        if (len > UINT32_MAX || buf_append(&s->held, &n, sizeof n) != 0)
            goto full;
    }
    if (buf_append(&s->held, data, len) != 0)
        goto full;
    return 0;
full:
    stream_error(s, STANZA_STREAM_POLICY_VIOLATION, "too much sent while logging in");
    return -EMSGSIZE;
}

/* What to do after the parser paused; data[0..len) was not parsed. */
static int after_pause(struct c2s_session *s, const char *rest, size_t len, bool frame)
{
    enum pause_why why = s->pause;
    s->pause = PAUSE_NONE;
    switch (why) {
    case PAUSE_STARTTLS: {
        /* Plaintext after <starttls/> is dropped (RFC 6120 5.4.3.3). */
        if (len)
            log_info("xmpp c2s %s: dropped %zu bytes sent after <starttls/>", s->ip, len);
        xml_stream_reset(s->xs);
        s->header_sent = false;
        int rc = s->t.starttls(s->t.ud);
        if (rc < 0) {
            log_info("xmpp c2s %s: cannot start TLS: %s", s->ip, strerror(-rc));
            session_close(s, -1, NULL);
            return rc;
        }
        s->secure = true;
        return 1; /* stop: drop the rest */
    }
    case PAUSE_AUTH:
        if (len && held_add(s, rest, len, frame) != 0)
            return -EMSGSIZE;
        return 1;
    case PAUSE_RESTART: {
        xml_stream_reset(s->xs);
        struct xml_limits lim;
        xml_limits_default(&lim);
        lim.max_stanza = XML_LIMIT_POSTAUTH;
        xml_stream_set_limits(s->xs, &lim);
        s->header_sent = false;
        return 0; /* go on with the rest: the new stream's header */
    }
    default:
        return s->closing ? 1 : 0;
    }
}

static int feed_bytes(struct c2s_session *s, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !s->closing) {
        if (s->auth)
            return held_add(s, data + off, len - off, false);
        size_t used = 0;
        int rc = xml_stream_feed(s->xs, data + off, len - off, &used);
        off += used;
        if (rc < 0) {
            parse_failed(s, rc);
            return rc;
        }
        if (rc == XML_STREAM_PAUSED) {
            int a = after_pause(s, data + off, len - off, false);
            if (a)
                return a < 0 ? a : 0;
        }
    }
    return s->closing ? -EPIPE : 0;
}

static int feed_frame(struct c2s_session *s, const char *data, size_t len)
{
    if (s->closing)
        return -EPIPE;
    if (s->auth)
        return held_add(s, data, len, true);
    size_t used = 0;
    int rc = xml_stream_feed_frame(s->xs, data, len, &used);
    if (rc < 0) {
        parse_failed(s, rc);
        return rc;
    }
    if (rc == XML_STREAM_PAUSED) {
        int a = after_pause(s, "", 0, true);
        if (a < 0)
            return a;
    }
    return s->closing ? -EPIPE : 0;
}

/* Feed what arrived while a password was being checked. */
static void held_drain(struct c2s_session *s)
{
    if (!s->held.len || s->auth)
        return;
    struct buf h = s->held;
    buf_init(&s->held, HELD_MAX);
    if (s->framing == STANZA_FRAMING_WS) {
        size_t off = 0;
        while (off + sizeof(uint32_t) <= h.len && !s->closing) {
            uint32_t n;
            memcpy(&n, h.data + off, sizeof n);
            off += sizeof n;
            if (s->auth) {
                held_add(s, h.data + off, n, true);
            } else if (feed_frame(s, h.data + off, n) < 0) {
                break;
            }
            off += n;
        }
    } else {
        feed_bytes(s, h.data, h.len);
    }
    buf_free(&h);
}

static void trim(struct c2s_session *s)
{
    /* Give the parser's memory back between stanzas (-EAGAIN: mid-stanza). */
    if (!s->closing && !s->auth)
        xml_stream_trim(s->xs);
}

/* ---- the interface ------------------------------------------------------------------ */

struct c2s_session *c2s_session_new(struct xmpp_server *srv, const struct c2s_params *p,
                                    const struct c2s_transport *t)
{
    struct c2s_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->srv = srv;
    s->t = *t;
    s->framing = p->framing;
    s->websocket = p->websocket;
    s->secure = p->secure || p->framing == STANZA_FRAMING_WS;
    s->rate_tokens = RATE_BURST * 1000;
    s->rate_at = uv_now(xmpp_server_loop(srv));
    snprintf(s->ip, sizeof s->ip, "%s", p->ip ? p->ip : "-");
    buf_init(&s->held, HELD_MAX);
    static const struct xml_stream_callbacks cb = {
        .on_open = on_open,
        .on_stanza = on_stanza,
        .on_close = on_close,
    };
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza = XML_LIMIT_PREAUTH;
    s->xs = xml_stream_new(p->framing == STANZA_FRAMING_WS ? XML_MODE_FRAMED : XML_MODE_STREAM,
                           &lim, &cb, s);
    if (!s->xs) {
        free(s);
        return NULL;
    }
    return s;
}

static void session_destroy(struct c2s_session *s)
{
    xmpp_server_defer_cancel(s->srv, &s->later);
    unregister(s);
    if (s->auth) {
        s->auth->sess = NULL; /* the worker's answer finds nobody */
        s->auth = NULL;
    }
    jid_free(&s->jid);
    free(s->jid_text);
    free(s->local);
    free(s->account);
    xml_stream_free(s->xs);
    buf_free(&s->held);
    free(s);
}

void c2s_session_free(struct c2s_session *s)
{
    if (!s)
        return;
    /* Nothing more goes out: the transport is gone. */
    s->closing = true;
    unregister(s);
    if (s->depth) {
        s->free_pending = true;
        return;
    }
    session_destroy(s);
}

int c2s_session_feed(struct c2s_session *s, const char *data, size_t len)
{
    if (s->closing)
        return -EPIPE;
    enter(s);
    int rc = feed_bytes(s, data, len);
    trim(s);
    if (!leave(s))
        return -EPIPE;
    return rc < 0 ? rc : 0;
}

int c2s_session_feed_frame(struct c2s_session *s, const char *data, size_t len)
{
    if (s->closing)
        return -EPIPE;
    enter(s);
    int rc = feed_frame(s, data, len);
    trim(s);
    if (!leave(s))
        return -EPIPE;
    return rc < 0 ? rc : 0;
}

void c2s_session_end(struct c2s_session *s, const char *cond)
{
    if (s->closing) {
        /* A failed one that is not gone yet: its JID is free from now on
         * (a session binding it again ends it with conflict). */
        unregister(s);
        return;
    }
    enter(s);
    int c = -1;
    if (cond) {
        c = STANZA_STREAM_UNDEFINED_CONDITION;
        for (int i = 0; i < STANZA_STREAM_COUNT; i++)
            if (strcmp(stanza_stream_cond_name((enum stanza_stream_cond)i), cond) == 0) {
                c = i;
                break;
            }
        log_info("xmpp c2s %s %s: ending the stream: %s", s->ip, who(s), cond);
    }
    session_close(s, c, NULL);
    leave(s);
}
