/*
 * Stanzas and stream-level bytes: what every XMPP module needs around the
 * tree from xml.h.
 *
 * - Kinds and types: message, presence, iq, and the type attribute as an
 *   enum, so that routing is a switch and not a chain of strcmp.
 * - Stanza errors (RFC 6120 8.3): the reply to a stanza, to and from
 *   swapped, same id, <error type=...><condition/><text/></error>, with the
 *   default type per condition. Never an error in answer to an error.
 * - Stream headers, stream errors and stream close, as bytes, in the two
 *   framings: TCP (<stream:stream> ... </stream:stream>, RFC 6120) and
 *   WebSocket (RFC 7395: <open/>, <close/>, each its own message).
 * - Stanza and stream ids: 128 random bits from libsodium, base64url.
 *
 * A stream error must follow a stream header: when the error is about the
 * peer's header itself (bad 'to', wrong namespace), send our header first,
 * then the error, then the close (RFC 6120 4.9.1.1).
 */
#ifndef HEARTH_CHAT_STANZA_H
#define HEARTH_CHAT_STANZA_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/jid.h"
#include "chat/ns.h"
#include "chat/xml.h"
#include "core/buf.h"

enum stanza_kind { STANZA_OTHER = 0, STANZA_MESSAGE, STANZA_PRESENCE, STANZA_IQ };

/* message/presence/iq in jabber:client or jabber:server; anything else
 * (SASL, dialback, stream management) is STANZA_OTHER. */
enum stanza_kind stanza_kind(const struct xml_node *st);

enum stanza_type {
    STANZA_TYPE_NONE = 0, /* no type attribute */
    STANZA_TYPE_UNKNOWN,  /* a value not defined for this kind */
    /* message */
    STANZA_TYPE_NORMAL,
    STANZA_TYPE_CHAT,
    STANZA_TYPE_GROUPCHAT,
    STANZA_TYPE_HEADLINE,
    /* presence */
    STANZA_TYPE_UNAVAILABLE,
    STANZA_TYPE_PROBE,
    STANZA_TYPE_SUBSCRIBE,
    STANZA_TYPE_SUBSCRIBED,
    STANZA_TYPE_UNSUBSCRIBE,
    STANZA_TYPE_UNSUBSCRIBED,
    /* iq */
    STANZA_TYPE_GET,
    STANZA_TYPE_SET,
    STANZA_TYPE_RESULT,
    /* all three */
    STANZA_TYPE_ERROR,
};

/*
 * The type attribute, checked against the stanza's kind. Absent on a
 * message means normal (RFC 6121 5.2.2), and so does a value the message
 * kind does not define; absent on a presence is NONE (available); an iq
 * without a valid type is NONE/UNKNOWN and gets bad-request.
 */
enum stanza_type stanza_type(const struct xml_node *st);

/* Stanza error conditions (RFC 6120 8.3.3). */
enum stanza_cond {
    STANZA_COND_BAD_REQUEST = 0,
    STANZA_COND_CONFLICT,
    STANZA_COND_FEATURE_NOT_IMPLEMENTED,
    STANZA_COND_FORBIDDEN,
    STANZA_COND_GONE,
    STANZA_COND_INTERNAL_SERVER_ERROR,
    STANZA_COND_ITEM_NOT_FOUND,
    STANZA_COND_JID_MALFORMED,
    STANZA_COND_NOT_ACCEPTABLE,
    STANZA_COND_NOT_ALLOWED,
    STANZA_COND_NOT_AUTHORIZED,
    STANZA_COND_POLICY_VIOLATION,
    STANZA_COND_RECIPIENT_UNAVAILABLE,
    STANZA_COND_REDIRECT,
    STANZA_COND_REGISTRATION_REQUIRED,
    STANZA_COND_REMOTE_SERVER_NOT_FOUND,
    STANZA_COND_REMOTE_SERVER_TIMEOUT,
    STANZA_COND_RESOURCE_CONSTRAINT,
    STANZA_COND_SERVICE_UNAVAILABLE,
    STANZA_COND_SUBSCRIPTION_REQUIRED,
    STANZA_COND_UNDEFINED_CONDITION,
    STANZA_COND_UNEXPECTED_REQUEST,
    STANZA_COND_COUNT
};

enum stanza_error_type {
    STANZA_ERROR_DEFAULT = 0, /* the condition's usual type */
    STANZA_ERROR_AUTH,
    STANZA_ERROR_CANCEL,
    STANZA_ERROR_CONTINUE,
    STANZA_ERROR_MODIFY,
    STANZA_ERROR_WAIT,
};

const char *stanza_cond_name(enum stanza_cond c);
enum stanza_error_type stanza_cond_default_type(enum stanza_cond c);
const char *stanza_error_type_name(enum stanza_error_type t);

struct stanza_error {
    enum stanza_cond cond;
    enum stanza_error_type type; /* STANZA_ERROR_DEFAULT: stanza_cond_default_type */
    const char *text;            /* human-readable, optional */
    const char *by;              /* the JID returning the error, optional */
    const char *app_ns;          /* an application-specific condition element */
    const char *app_name;        /* (XEP-0045, XEP-0313 define some), optional */
    bool with_payload;           /* copy the original's children (iq queries) */
};

/*
 * The error reply to st: same name and id, type='error', to = st's from and
 * from = st's to (when present), then the children if with_payload, then
 * <error type=...><cond xmlns='...stanzas'/><text>..</text><app/></error>.
 * 0 with *out set, -EINVAL when st is itself an error (RFC 6120 8.3.1: never
 * answer one) or not a stanza, -ENOMEM.
 */
int stanza_error_reply(const struct xml_node *st, const struct stanza_error *e,
                       struct xml_node **out);

/* Stream error conditions (RFC 6120 4.9.3). */
enum stanza_stream_cond {
    STANZA_STREAM_BAD_FORMAT = 0,
    STANZA_STREAM_BAD_NAMESPACE_PREFIX,
    STANZA_STREAM_CONFLICT,
    STANZA_STREAM_CONNECTION_TIMEOUT,
    STANZA_STREAM_HOST_GONE,
    STANZA_STREAM_HOST_UNKNOWN,
    STANZA_STREAM_IMPROPER_ADDRESSING,
    STANZA_STREAM_INTERNAL_SERVER_ERROR,
    STANZA_STREAM_INVALID_FROM,
    STANZA_STREAM_INVALID_NAMESPACE,
    STANZA_STREAM_INVALID_XML,
    STANZA_STREAM_NOT_AUTHORIZED,
    STANZA_STREAM_NOT_WELL_FORMED,
    STANZA_STREAM_POLICY_VIOLATION,
    STANZA_STREAM_REMOTE_CONNECTION_FAILED,
    STANZA_STREAM_RESET,
    STANZA_STREAM_RESOURCE_CONSTRAINT,
    STANZA_STREAM_RESTRICTED_XML,
    STANZA_STREAM_SEE_OTHER_HOST,
    STANZA_STREAM_SYSTEM_SHUTDOWN,
    STANZA_STREAM_UNDEFINED_CONDITION,
    STANZA_STREAM_UNSUPPORTED_ENCODING,
    STANZA_STREAM_UNSUPPORTED_FEATURE,
    STANZA_STREAM_UNSUPPORTED_STANZA_TYPE,
    STANZA_STREAM_UNSUPPORTED_VERSION,
    STANZA_STREAM_COUNT
};

const char *stanza_stream_cond_name(enum stanza_stream_cond c);
/* The condition for a parser failure (xml_stream_error). */
enum stanza_stream_cond stanza_stream_cond_from_xml(enum xml_error e);

enum stanza_framing {
    STANZA_FRAMING_TCP, /* RFC 6120 */
    STANZA_FRAMING_WS,  /* RFC 7395: each call's output is one WebSocket message */
};

struct stanza_header {
    const char *content_ns; /* XMPP_NS_CLIENT or XMPP_NS_SERVER; TCP only */
    const char *from, *to, *id, *lang; /* each optional */
    bool dialback;          /* declare xmlns:db (XEP-0220), s2s */
};

/*
 * Our stream header, version='1.0'. TCP: the XML declaration and
 * <stream:stream ...> left open; WS: a self-closed <open/>. Appended to out.
 */
int stanza_stream_header(struct buf *out, enum stanza_framing f, const struct stanza_header *h);
/* </stream:stream>, or <close xmlns='...framing'/> (see_other_uri NULL,
 * or the RFC 7395 3.6.1 redirect). */
int stanza_stream_close(struct buf *out, enum stanza_framing f, const char *see_other_uri);
/*
 * <stream:error><cond xmlns='...streams'/><text>..</text></stream:error>.
 * TCP: written inside our open stream, so the stream prefix is already
 * declared; follow it with stanza_stream_close in the same buffer. WS: one
 * self-contained message (xmlns:stream declared on it); the close is a
 * second message. text may be NULL.
 */
int stanza_stream_error(struct buf *out, enum stanza_framing f, enum stanza_stream_cond c,
                        const char *text);

/*
 * Serialize one stanza for a stream: TCP streams have content_ns as default
 * namespace, so it is left out; every WebSocket message carries its own.
 */
int stanza_write(struct buf *out, enum stanza_framing f, const char *content_ns,
                 const struct xml_node *st);

/*
 * Move a stanza between jabber:client and jabber:server: every element in
 * from_ns (the stanza and the children that inherited it, like <body>) is
 * put in to_ns. Routing from c2s to s2s and back needs it. 0 or -ENOMEM
 * (the tree is then partly moved; drop it).
 */
int stanza_set_content_ns(struct xml_node *st, const char *from_ns, const char *to_ns);

/*
 * Parse the JID in attribute attr ("to", "from") of st. 0, -ENOENT when the
 * attribute is absent, -EINVAL when malformed (jid-malformed), -ENOMEM.
 */
int stanza_jid(const struct xml_node *st, const char *attr, struct jid *out);

#define STANZA_ID_SIZE 23 /* 22 base64url characters of 16 random bytes, NUL */

/* A fresh random id (stream ids, stanza ids, XEP-0359). URL-safe, no
 * padding. 0, or -EIO when libsodium cannot start. */
int stanza_id_new(char out[STANZA_ID_SIZE]);

#endif
