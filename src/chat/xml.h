/*
 * XMPP XML: the stream parser (bytes in, events out) and a small element
 * tree with a serializer (tree in, bytes out). No sockets here.
 *
 * An XMPP stream is one XML document that never ends: <stream:stream> is
 * opened once, and every element directly inside it is a stanza (or a
 * SASL/TLS/dialback element) that must be acted upon as soon as its end tag
 * arrives. The parser therefore hands out the stream header as soon as the
 * root's start tag is complete, then one small tree per top-level element,
 * then the close. Over WebSocket (RFC 7395) each message is instead a
 * complete element on its own; <open/> and <close/> in the framing
 * namespace stand for the stream header and footer. Both shapes produce the
 * same events, so c2s is written once.
 *
 * The calling pattern, with callbacks run from inside xml_stream_feed:
 *
 *     off = 0;
 *     while (off < len) {
 *         rc = xml_stream_feed(s, data + off, len - off, &used);
 *         off += used;
 *         if (rc < 0)  -> send the stream error xml_error_condition(
 *                         xml_stream_error(s)) and close
 *         if (rc == XML_STREAM_PAUSED) -> a callback asked to stop after its
 *                         element; data + off was not parsed. Later, either
 *                         xml_stream_reset(s) (STARTTLS, SASL success: a new
 *                         stream; drop or re-feed the rest as the protocol
 *                         says) or just feed the rest again (same stream).
 *     }
 *
 * Pausing is what makes stream restarts safe: after <starttls/> the bytes
 * that follow in the same read are plaintext the peer sent before TLS and
 * must be thrown away, not parsed into the new stream (the STARTTLS command
 * injection class of bugs); after <auth/> the check is asynchronous and the
 * stream must not run ahead of it.
 *
 * Limits (struct xml_limits): the bytes of one top-level element or stream
 * header on the wire, element depth, and nodes per stanza. Bytes are counted
 * before expat sees them, so expat never buffers more than one stanza's
 * worth. The c2s layer raises the stanza limit after authentication
 * (10 KB before, 256 KiB after, as issue 5 asks).
 *
 * Restricted XML (RFC 6120 11.1): a DTD, comment, processing instruction or
 * entity reference is a stream error (restricted-xml); an encoding other than
 * UTF-8 is unsupported-encoding.
 */
#ifndef HEARTH_CHAT_XML_H
#define HEARTH_CHAT_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* ---- tree ------------------------------------------------------------- */

enum xml_node_type { XML_NODE_ELEMENT = 0, XML_NODE_TEXT };

struct xml_attr {
    char *name;  /* local name */
    char *ns;    /* namespace URI; "" for an unprefixed attribute */
    char *value; /* the three share one allocation */
};

/*
 * An element or a text node. Elements have a local name and a namespace URI
 * (never NULL; "" for none), attributes and an ordered list of children;
 * adjacent text is always merged into one text node, so a tree does not
 * depend on how the bytes were split across reads. Prefixes are not kept:
 * the serializer writes its own declarations.
 */
struct xml_node {
    enum xml_node_type type;
    struct xml_node *parent;
    struct xml_node *prev, *next; /* siblings */
    struct xml_node *first; /* children */
    struct xml_node *last;
    /* XML_NODE_ELEMENT */
    char *name;
    char *ns;
    bool ns_owned; /* ns was changed and is a separate allocation */
    struct xml_attr *attrs;
    unsigned nattrs, attrs_cap;
    /* XML_NODE_TEXT: UTF-8, NUL-terminated, len excludes the NUL */
    char *text;
    size_t len, cap;
};

/* New element. ns NULL or "" = no namespace. NULL on -ENOMEM. */
struct xml_node *xml_element_new(const char *name, const char *ns);
/* New text node holding a copy of text[0..len). */
struct xml_node *xml_text_new(const char *text, size_t len);
/* Free a node and everything below it; unlinks it from its parent first. */
void xml_node_free(struct xml_node *n);
/* Take a node out of its parent's child list (it is then a root). */
void xml_node_unlink(struct xml_node *n);
/* Append child (which must be a root) as the last child of el. */
void xml_node_append(struct xml_node *el, struct xml_node *child);
/* Deep copy; NULL on -ENOMEM. */
struct xml_node *xml_node_copy(const struct xml_node *n);
/* Same names, namespaces, attributes (in any order), text and children. */
bool xml_node_equal(const struct xml_node *a, const struct xml_node *b);

/*
 * Add a child element to el and return it. ns NULL: the parent's namespace
 * (what an unprefixed child without xmlns means in a document).
 */
struct xml_node *xml_element_add(struct xml_node *el, const char *name, const char *ns);
/* Append text to el, merging with a trailing text child. 0 or -ENOMEM. */
int xml_element_add_text(struct xml_node *el, const char *text, size_t len);
/* xml_element_add + text, for <body>hello</body>. NULL on -ENOMEM. */
struct xml_node *xml_element_add_text_child(struct xml_node *el, const char *name,
                                            const char *ns, const char *text);

/* Put el in another namespace (jabber:client <-> jabber:server). */
int xml_element_set_ns(struct xml_node *el, const char *ns);

/* Set (replace or add) an unprefixed attribute. -EINVAL for xmlns names. */
int xml_attr_set(struct xml_node *el, const char *name, const char *value);
/* Same in a namespace (XMPP_NS_XML for xml:lang). ns "" = unprefixed. */
int xml_attr_set_ns(struct xml_node *el, const char *ns, const char *name, const char *value);
/* The value, or NULL when absent. */
const char *xml_attr_get(const struct xml_node *el, const char *name);
const char *xml_attr_get_ns(const struct xml_node *el, const char *ns, const char *name);
/* 0, or -ENOENT when it was not there. */
int xml_attr_remove(struct xml_node *el, const char *name);

/*
 * First child element matching name and ns (NULL matches any), or NULL.
 * xml_child_next continues after a previous match.
 */
struct xml_node *xml_child(const struct xml_node *el, const char *name, const char *ns);
struct xml_node *xml_child_next(const struct xml_node *prev, const char *name, const char *ns);
/* First element child whatever its name (the payload of an iq). */
struct xml_node *xml_first_element(const struct xml_node *el);
/* The text of el: its first text child, or NULL when it has none. With no
 * element children (body, subject, nick) that is all of its text. */
const char *xml_text(const struct xml_node *el);
/* xml_text of the first matching child, or NULL. */
const char *xml_child_text(const struct xml_node *el, const char *name, const char *ns);

/* ---- serializer ------------------------------------------------------- */

/*
 * Append n as XML to out. ctx_ns is the default namespace already in scope
 * where the bytes go: XMPP_NS_CLIENT inside a c2s stream writes stanzas
 * without xmlns, NULL (none in scope, as in each WebSocket message) writes
 * xmlns='jabber:client' on the stanza. Namespaces are declared where an
 * element's differs from its parent's; namespaced attributes get generated
 * prefixes (xml: for XMPP_NS_XML).
 *
 * The output is always well-formed: &, <, >, " and ' are escaped, and so are
 * tab, CR and LF in attributes and CR in text (so they survive a parse);
 * bytes that are not valid UTF-8 or not XML characters (controls, U+FFFE)
 * are written as U+FFFD. Names are not checked: they come from our code or
 * from a parser. On error out may hold a partial element; -EMSGSIZE when out
 * has a limit and it is reached.
 */
int xml_serialize(const struct xml_node *n, const char *ctx_ns, struct buf *out);
/* The escaping alone, for code that writes XML by hand. */
int xml_escape_text(struct buf *out, const char *s, size_t len);
int xml_escape_attr(struct buf *out, const char *s, size_t len);

/* ---- stream parser ---------------------------------------------------- */

/* Why parsing failed, one per stream error condition (RFC 6120 4.9.3). */
enum xml_error {
    XML_ERR_NONE = 0,
    XML_ERR_NOT_WELL_FORMED,
    XML_ERR_RESTRICTED_XML,       /* DTD, comment, PI, entity reference */
    XML_ERR_POLICY_VIOLATION,     /* a limit */
    XML_ERR_BAD_NAMESPACE_PREFIX, /* unbound or reserved prefix */
    XML_ERR_INVALID_NAMESPACE,    /* the root is not <stream> in the streams namespace */
    XML_ERR_BAD_FORMAT,           /* text directly inside the stream */
    XML_ERR_UNSUPPORTED_ENCODING, /* not UTF-8 */
    XML_ERR_RESOURCE_CONSTRAINT,  /* out of memory */
    XML_ERR_CALLBACK,             /* a callback returned a negative value */
};

/* The RFC 6120 stream error condition element name for e. */
const char *xml_error_condition(enum xml_error e);

struct xml_limits {
    size_t max_stanza;  /* bytes of one top-level element, or of the stream
                         * header, as received; default XML_LIMIT_PREAUTH */
    unsigned max_depth; /* element nesting, the stanza itself is 1; default 32 */
    size_t max_nodes;   /* elements, text nodes and attributes per stanza;
                         * default 8192 */
};

#define XML_LIMIT_PREAUTH 10000u        /* "10 KB" before authentication */
#define XML_LIMIT_POSTAUTH (256u * 1024) /* after */

void xml_limits_default(struct xml_limits *lim);

enum xml_mode {
    XML_MODE_STREAM, /* TCP: one <stream:stream> document */
    XML_MODE_FRAMED, /* RFC 7395 WebSocket: fed with xml_stream_feed_frame */
};

struct xml_nsdecl {
    char *prefix; /* "" for the default namespace */
    char *uri;    /* "" for xmlns='' */
};

/* The stream header: <stream:stream ...> or, framed, <open .../>. */
struct xml_open {
    const struct xml_node *el;  /* the element; attributes, no children */
    bool framed;
    /* Stanzas' default namespace: the xmlns on <stream:stream>
     * (jabber:client, jabber:server) or NULL when it had none; always
     * jabber:client when framed (RFC 7395 3.3.3). */
    const char *content_ns;
    /* Attributes, NULL when absent. lang is xml:lang. */
    const char *to, *from, *id, *version, *lang;
    /* Every namespace declaration on the element (xmlns:db for dialback). */
    const struct xml_nsdecl *decls;
    size_t ndecls;
};

/*
 * Callbacks, run from inside xml_stream_feed. Each returns 0 to go on,
 * XML_STREAM_PAUSE to stop right after this element (feed then returns
 * XML_STREAM_PAUSED), or a negative value to fail the feed with that value
 * (xml_stream_error is then XML_ERR_CALLBACK). They must not call
 * xml_stream_feed, xml_stream_reset or xml_stream_free on the same stream;
 * xml_stream_set_limits is fine. Any may be NULL.
 */
struct xml_stream_callbacks {
    int (*on_open)(void *ud, const struct xml_open *open);
    /* The stanza is the callback's to keep or free, whatever it returns. */
    int (*on_stanza)(void *ud, struct xml_node *stanza);
    int (*on_close)(void *ud);
};

#define XML_STREAM_PAUSE 1  /* callback return */
#define XML_STREAM_PAUSED 1 /* xml_stream_feed return */

struct xml_stream; /* opaque: it holds an expat parser */

/* lim NULL: defaults. NULL on -ENOMEM. */
struct xml_stream *xml_stream_new(enum xml_mode mode, const struct xml_limits *lim,
                                  const struct xml_stream_callbacks *cb, void *ud);
void xml_stream_free(struct xml_stream *s);

/*
 * Parse bytes. *consumed is always set: all of len unless paused or failed.
 * Returns 0, XML_STREAM_PAUSED, -EPROTO (bad XML or a limit:
 * xml_stream_error says which), -ENOMEM, a callback's negative value, or
 * -EBUSY when called from a callback. After a failure every call fails the
 * same way until xml_stream_reset. In XML_MODE_FRAMED use
 * xml_stream_feed_frame instead.
 */
int xml_stream_feed(struct xml_stream *s, const char *data, size_t len, size_t *consumed);

/*
 * XML_MODE_FRAMED: one complete WebSocket message, which must hold at most
 * one element (and whitespace); anything else is not-well-formed. Stanzas
 * without xmlns are taken as jabber:client. Same returns as
 * xml_stream_feed, except that *consumed is always len unless it fails: the
 * message holds one element, so a pause leaves nothing to feed again.
 */
int xml_stream_feed_frame(struct xml_stream *s, const char *data, size_t len, size_t *consumed);

/*
 * Start a new stream on the same object: after STARTTLS and SASL success,
 * the peer sends a new header. Drops whatever the old parser held. Keeps
 * callbacks and limits. 0, -ENOMEM, or -EBUSY from a callback.
 */
int xml_stream_reset(struct xml_stream *s);

/*
 * Give back expat's memory (about 11 KB) while the stream is idle between
 * stanzas; the next feed builds a fresh parser from the replay header (about
 * 2.5 us). For the WebSocket glue after each message, for TCP on an idle
 * timer: a room of 10,000 quiet occupants should not hold 10,000 parsers.
 * 0, -EAGAIN when part of a stanza is buffered (try later), -EBUSY from a
 * callback.
 */
int xml_stream_trim(struct xml_stream *s);

/* Limits for what comes next (the stanza being parsed keeps counting). */
void xml_stream_set_limits(struct xml_stream *s, const struct xml_limits *lim);

enum xml_error xml_stream_error(const struct xml_stream *s);
/* A line for the log: what and where ("line 1, column 7: mismatched tag"). */
const char *xml_stream_error_text(const struct xml_stream *s);
/* The current stream header element, NULL before it arrived. */
const struct xml_node *xml_stream_header(const struct xml_stream *s);

#endif
