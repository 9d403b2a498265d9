/*
 * XMPP XML stream parser on expat, the element tree, and the serializer.
 * See xml.h for the calling pattern.
 *
 * Expat runs with namespace processing on and returns names as
 * "uri\1local\1prefix" (the separator is U+0001, which XML 1.0 forbids
 * anywhere in a document, so it never occurs in a URI or a name). The
 * handlers keep a depth counter: depth 0 is the stream root, depth 1 the
 * top-level elements. Below depth 1 every event goes into the tree of the
 * current stanza; when its end tag closes, the tree goes to on_stanza.
 *
 * Stopping after an element. Expat cannot be told "parse up to here"; it
 * takes whole buffers. So a callback that wants to stop (pause) makes the
 * handler record the byte index just past the element's end tag and abort
 * the parser (XML_StopParser, not resumable: a suspended expat keeps the
 * rest of the buffer to itself, and those bytes may belong to a new stream
 * or be plaintext that must be dropped after STARTTLS). The bytes after the
 * element are reported as not consumed. Continuing the same stream then
 * needs a parser that is inside <stream:stream> again: a fresh expat is fed
 * a copy of the stream's start tag, rebuilt from the namespace declarations
 * the root made (the replay header), with no events, and then the caller's
 * bytes. Framed (WebSocket) streams use a fixed replay header
 * <hearth-frame xmlns='jabber:client'> as a permanent wrapper, so that each
 * message is parsed as a child of it and unqualified stanzas land in
 * jabber:client, as they would on TCP.
 *
 * The same trick bounds expat's own memory: expat keeps every distinct
 * element and attribute name it has seen in hash tables for the life of the
 * parser, so a peer sending ever-new names would grow them without limit.
 * Every RECYCLE_BYTES the parser is swapped for a fresh one at the next
 * stanza boundary, inside the feed call, invisibly to the caller.
 *
 * Byte limits. Before each XML_Parse call the input is cut so that expat
 * never holds more than max_stanza + 1 bytes of one top-level unit (a
 * stanza plus the whitespace before it, or the stream header); a unit that
 * reaches the limit is a policy-violation. Whitespace between stanzas
 * (keepalives) closes the unit, so hours of keepalives are fine.
 *
 * Reparse deferral (expat 2.6.0, and backported by Debian 12 into its 2.5.0
 * security updates): expat would wait for more input before retrying a big
 * token, which holds a stanza back until the peer sends something else. We
 * switch it off where the library has it (found by meson, not by version).
 */
#include "chat/xml.h"

#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/chat_config.h"
#include "chat/ns.h"

/* ---- tree ------------------------------------------------------------- */

static struct xml_node *element_alloc(const char *name, size_t nlen, const char *ns, size_t nslen)
{
    struct xml_node *n = calloc(1, sizeof *n + nlen + 1 + nslen + 1);
    if (!n)
        return NULL;
    n->type = XML_NODE_ELEMENT;
    n->name = (char *)(n + 1);
    memcpy(n->name, name, nlen);
    n->name[nlen] = '\0';
    n->ns = n->name + nlen + 1;
    if (nslen)
        memcpy(n->ns, ns, nslen);
    n->ns[nslen] = '\0';
    return n;
}

struct xml_node *xml_element_new(const char *name, const char *ns)
{
    if (!name)
        return NULL;
    if (!ns)
        ns = "";
    return element_alloc(name, strlen(name), ns, strlen(ns));
}

struct xml_node *xml_text_new(const char *text, size_t len)
{
    struct xml_node *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->type = XML_NODE_TEXT;
    n->text = malloc(len + 1);
    if (!n->text) {
        free(n);
        return NULL;
    }
    if (len)
        memcpy(n->text, text, len);
    n->text[len] = '\0';
    n->len = len;
    n->cap = len + 1;
    return n;
}

static void node_destroy(struct xml_node *n)
{
    struct xml_node *c = n->first;
    while (c) {
        struct xml_node *next = c->next;
        node_destroy(c);
        c = next;
    }
    if (n->type == XML_NODE_ELEMENT) {
        for (unsigned i = 0; i < n->nattrs; i++)
            free(n->attrs[i].name);
        free(n->attrs);
        if (n->ns_owned)
            free(n->ns);
    } else {
        free(n->text);
    }
    free(n);
}

void xml_node_unlink(struct xml_node *n)
{
    struct xml_node *p = n->parent;
    if (!p)
        return;
    if (n->prev)
        n->prev->next = n->next;
    else
        p->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        p->last = n->prev;
    n->parent = n->prev = n->next = NULL;
}

void xml_node_free(struct xml_node *n)
{
    if (!n)
        return;
    xml_node_unlink(n);
    node_destroy(n);
}

void xml_node_append(struct xml_node *el, struct xml_node *child)
{
    child->parent = el;
    child->next = NULL;
    child->prev = el->last;
    if (el->last)
        el->last->next = child;
    else
        el->first = child;
    el->last = child;
}

int xml_element_set_ns(struct xml_node *el, const char *ns)
{
    if (!ns)
        ns = "";
    size_t len = strlen(ns);
    /* The inline copy sits after the name; a longer one goes elsewhere. */
    if (el->ns_owned || len > strlen(el->ns)) {
        char *p = strdup(ns);
        if (!p)
            return -ENOMEM;
        if (el->ns_owned)
            free(el->ns);
        el->ns = p;
        el->ns_owned = true;
        return 0;
    }
    memcpy(el->ns, ns, len + 1);
    return 0;
}

/* Append to a text node, growing by doubling. */
static int text_append(struct xml_node *t, const char *s, size_t len)
{
    if (len > SIZE_MAX / 2 - t->len)
        return -ENOMEM;
    if (t->len + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 32;
        while (cap < t->len + len + 1)
            cap *= 2;
        char *p = realloc(t->text, cap);
        if (!p)
            return -ENOMEM;
        t->text = p;
        t->cap = cap;
    }
    memcpy(t->text + t->len, s, len);
    t->len += len;
    t->text[t->len] = '\0';
    return 0;
}

struct xml_node *xml_element_add(struct xml_node *el, const char *name, const char *ns)
{
    struct xml_node *c = xml_element_new(name, ns ? ns : el->ns);
    if (c)
        xml_node_append(el, c);
    return c;
}

int xml_element_add_text(struct xml_node *el, const char *text, size_t len)
{
    if (len == 0)
        return 0;
    if (el->last && el->last->type == XML_NODE_TEXT)
        return text_append(el->last, text, len);
    struct xml_node *t = xml_text_new(text, len);
    if (!t)
        return -ENOMEM;
    xml_node_append(el, t);
    return 0;
}

struct xml_node *xml_element_add_text_child(struct xml_node *el, const char *name,
                                            const char *ns, const char *text)
{
    struct xml_node *c = xml_element_add(el, name, ns);
    if (!c)
        return NULL;
    if (text && xml_element_add_text(c, text, strlen(text))) {
        xml_node_free(c);
        return NULL;
    }
    return c;
}

/* One block per attribute: name\0ns\0value\0. */
static int attr_fill(struct xml_attr *a, const char *ns, size_t nslen, const char *name,
                     size_t nlen, const char *value, size_t vlen)
{
    char *b = malloc(nlen + nslen + vlen + 3);
    if (!b)
        return -ENOMEM;
    a->name = b;
    memcpy(b, name, nlen);
    b[nlen] = '\0';
    a->ns = b + nlen + 1;
    memcpy(a->ns, ns, nslen);
    a->ns[nslen] = '\0';
    a->value = a->ns + nslen + 1;
    memcpy(a->value, value, vlen);
    a->value[vlen] = '\0';
    return 0;
}

static int attr_push(struct xml_node *el, const char *ns, size_t nslen, const char *name,
                     size_t nlen, const char *value, size_t vlen)
{
    if (el->nattrs == el->attrs_cap) {
        unsigned cap = el->attrs_cap ? el->attrs_cap * 2 : 4;
        struct xml_attr *a = realloc(el->attrs, cap * sizeof *a);
        if (!a)
            return -ENOMEM;
        el->attrs = a;
        el->attrs_cap = cap;
    }
    int rc = attr_fill(&el->attrs[el->nattrs], ns, nslen, name, nlen, value, vlen);
    if (rc == 0)
        el->nattrs++;
    return rc;
}

static struct xml_attr *attr_find(const struct xml_node *el, const char *ns, const char *name)
{
    if (!el || el->type != XML_NODE_ELEMENT)
        return NULL;
    for (unsigned i = 0; i < el->nattrs; i++)
        if (strcmp(el->attrs[i].name, name) == 0 && strcmp(el->attrs[i].ns, ns) == 0)
            return &el->attrs[i];
    return NULL;
}

int xml_attr_set_ns(struct xml_node *el, const char *ns, const char *name, const char *value)
{
    if (!ns)
        ns = "";
    if (!name || !*name || !value || el->type != XML_NODE_ELEMENT)
        return -EINVAL;
    /* Declarations are the serializer's business, never attributes. */
    if (!*ns && (strcmp(name, "xmlns") == 0 || strncmp(name, "xmlns:", 6) == 0))
        return -EINVAL;
    struct xml_attr *a = attr_find(el, ns, name);
    if (a) {
        struct xml_attr na;
        int rc = attr_fill(&na, ns, strlen(ns), name, strlen(name), value, strlen(value));
        if (rc)
            return rc;
        free(a->name);
        *a = na;
        return 0;
    }
    return attr_push(el, ns, strlen(ns), name, strlen(name), value, strlen(value));
}

int xml_attr_set(struct xml_node *el, const char *name, const char *value)
{
    return xml_attr_set_ns(el, "", name, value);
}

const char *xml_attr_get_ns(const struct xml_node *el, const char *ns, const char *name)
{
    struct xml_attr *a = attr_find(el, ns ? ns : "", name);
    return a ? a->value : NULL;
}

const char *xml_attr_get(const struct xml_node *el, const char *name)
{
    return xml_attr_get_ns(el, "", name);
}

int xml_attr_remove(struct xml_node *el, const char *name)
{
    struct xml_attr *a = attr_find(el, "", name);
    if (!a)
        return -ENOENT;
    free(a->name);
    size_t i = (size_t)(a - el->attrs);
    memmove(a, a + 1, (el->nattrs - i - 1) * sizeof *a);
    el->nattrs--;
    return 0;
}

static bool matches(const struct xml_node *c, const char *name, const char *ns)
{
    return c->type == XML_NODE_ELEMENT && (!name || strcmp(c->name, name) == 0) &&
           (!ns || strcmp(c->ns, ns) == 0);
}

struct xml_node *xml_child(const struct xml_node *el, const char *name, const char *ns)
{
    if (!el)
        return NULL;
    for (struct xml_node *c = el->first; c; c = c->next)
        if (matches(c, name, ns))
            return c;
    return NULL;
}

struct xml_node *xml_child_next(const struct xml_node *prev, const char *name, const char *ns)
{
    if (!prev)
        return NULL;
    for (struct xml_node *c = prev->next; c; c = c->next)
        if (matches(c, name, ns))
            return c;
    return NULL;
}

struct xml_node *xml_first_element(const struct xml_node *el)
{
    return xml_child(el, NULL, NULL);
}

const char *xml_text(const struct xml_node *el)
{
    if (!el)
        return NULL;
    for (struct xml_node *c = el->first; c; c = c->next)
        if (c->type == XML_NODE_TEXT)
            return c->text;
    return NULL;
}

const char *xml_child_text(const struct xml_node *el, const char *name, const char *ns)
{
    return xml_text(xml_child(el, name, ns));
}

struct xml_node *xml_node_copy(const struct xml_node *n)
{
    struct xml_node *c;
    if (n->type == XML_NODE_TEXT)
        return xml_text_new(n->text, n->len);
    c = element_alloc(n->name, strlen(n->name), n->ns, strlen(n->ns));
    if (!c)
        return NULL;
    for (unsigned i = 0; i < n->nattrs; i++) {
        const struct xml_attr *a = &n->attrs[i];
        if (attr_push(c, a->ns, strlen(a->ns), a->name, strlen(a->name), a->value,
                      strlen(a->value)))
            goto fail;
    }
    for (const struct xml_node *k = n->first; k; k = k->next) {
        struct xml_node *kc = xml_node_copy(k);
        if (!kc)
            goto fail;
        xml_node_append(c, kc);
    }
    return c;
fail:
    node_destroy(c);
    return NULL;
}

bool xml_node_equal(const struct xml_node *a, const struct xml_node *b)
{
    if (a->type != b->type)
        return false;
    if (a->type == XML_NODE_TEXT)
        return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
    if (strcmp(a->name, b->name) || strcmp(a->ns, b->ns) || a->nattrs != b->nattrs)
        return false;
    for (unsigned i = 0; i < a->nattrs; i++) {
        const struct xml_attr *x = attr_find(b, a->attrs[i].ns, a->attrs[i].name);
        if (!x || strcmp(x->value, a->attrs[i].value))
            return false;
    }
    const struct xml_node *x = a->first, *y = b->first;
    for (; x && y; x = x->next, y = y->next)
        if (!xml_node_equal(x, y))
            return false;
    return !x && !y;
}

/* ---- serializer ------------------------------------------------------- */

/*
 * Length of the valid UTF-8 sequence at p that encodes an XML Char
 * (production [2]: no surrogates, no U+FFFE/U+FFFF), or 0. Only for lead
 * bytes >= 0x80.
 */
static size_t utf8_xml_char(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F)
            return 0; /* surrogate */
        if (c == 0xEF && p[1] == 0xBF && p[2] >= 0xBE)
            return 0; /* U+FFFE, U+FFFF */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0;
        if (c == 0xF4 && p[1] > 0x8F)
            return 0;
        return 4;
    }
    return 0;
}

static int escape(struct buf *out, const char *s, size_t len, bool attr)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0;
    int rc;
    while (i < len) {
        unsigned char c = p[i];
        const char *rep = NULL;
        size_t adv = 1;
        if (c < 0x80) {
            switch (c) {
            case '&': rep = "&amp;"; break;
            case '<': rep = "&lt;"; break;
            case '>': rep = "&gt;"; break;
            case '"': rep = attr ? "&quot;" : NULL; break;
            case '\'': rep = attr ? "&apos;" : NULL; break;
            case '\t': rep = attr ? "&#9;" : NULL; break;
            case '\n': rep = attr ? "&#10;" : NULL; break;
            case '\r': rep = "&#13;"; break;
            default:
                if (c < 0x20) /* not XML characters, not even as &#n; */
                    rep = "\xEF\xBF\xBD";
                break;
            }
        } else {
            adv = utf8_xml_char(p + i, len - i);
            if (!adv) {
                rep = "\xEF\xBF\xBD";
                adv = 1;
            }
        }
        if (rep) {
            if ((rc = buf_append(out, s + run, i - run)) || (rc = buf_append_str(out, rep)))
                return rc;
            run = i + adv;
        }
        i += adv;
    }
    return buf_append(out, s + run, len - run);
}

int xml_escape_text(struct buf *out, const char *s, size_t len) { return escape(out, s, len, false); }

int xml_escape_attr(struct buf *out, const char *s, size_t len) { return escape(out, s, len, true); }

static int put_attr(struct buf *out, const char *prefix, const char *name, const char *value)
{
    int rc;
    if ((rc = buf_append_char(out, ' ')))
        return rc;
    if (prefix && ((rc = buf_append_str(out, prefix)) || (rc = buf_append_char(out, ':'))))
        return rc;
    if ((rc = buf_append_str(out, name)) || (rc = buf_append(out, "='", 2)) ||
        (rc = xml_escape_attr(out, value, strlen(value))))
        return rc;
    return buf_append_char(out, '\'');
}

static int serialize_el(const struct xml_node *n, const char *dflt, struct buf *out)
{
    int rc;
    if (n->type == XML_NODE_TEXT)
        return xml_escape_text(out, n->text, n->len);
    if ((rc = buf_append_char(out, '<')) || (rc = buf_append_str(out, n->name)))
        return rc;
    if (strcmp(n->ns, dflt) != 0 && (rc = put_attr(out, NULL, "xmlns", n->ns)))
        return rc;
    for (unsigned i = 0; i < n->nattrs; i++) {
        const struct xml_attr *a = &n->attrs[i];
        if (!*a->ns) {
            rc = put_attr(out, NULL, a->name, a->value);
        } else if (strcmp(a->ns, XMPP_NS_XML) == 0) {
            rc = put_attr(out, "xml", a->name, a->value);
        } else {
            /* Prefix aN, N the first attribute in this namespace; declared
             * there. Elements never use prefixes, so these cannot clash. */
            unsigned j = 0;
            while (strcmp(n->attrs[j].ns, a->ns) != 0)
                j++;
            char prefix[16];
            snprintf(prefix, sizeof prefix, "a%u", j);
            rc = 0;
            if (j == i) {
                char decl[24];
                snprintf(decl, sizeof decl, "xmlns:%s", prefix);
                rc = put_attr(out, NULL, decl, a->ns);
            }
            if (!rc)
                rc = put_attr(out, prefix, a->name, a->value);
        }
        if (rc)
            return rc;
    }
    if (!n->first)
        return buf_append(out, "/>", 2);
    if ((rc = buf_append_char(out, '>')))
        return rc;
    for (const struct xml_node *c = n->first; c; c = c->next)
        if ((rc = serialize_el(c, n->ns, out)))
            return rc;
    if ((rc = buf_append(out, "</", 2)) || (rc = buf_append_str(out, n->name)))
        return rc;
    return buf_append_char(out, '>');
}

int xml_serialize(const struct xml_node *n, const char *ctx_ns, struct buf *out)
{
    return serialize_el(n, ctx_ns ? ctx_ns : "", out);
}

/* ---- stream parser ---------------------------------------------------- */

#define NSSEP '\x01'
#define RECYCLE_BYTES (1u << 20) /* swap expat for a fresh one this often */
#define MAX_ROOT_DECLS 32        /* namespace declarations on the header */
#define FRAME_WRAPPER "<hearth-frame xmlns='" XMPP_NS_CLIENT "'>"

enum stop { STOP_NONE = 0, STOP_PAUSE, STOP_RECYCLE, STOP_ERROR };

struct xml_stream {
    XML_Parser p;
    enum xml_mode mode;
    struct xml_limits lim;
    struct xml_stream_callbacks cb;
    void *ud;

    unsigned depth;          /* open elements, the root (or wrapper) included */
    bool root_open;          /* TCP: the header arrived and the replay header is built */
    bool closed;             /* the stream ended; only whitespace may follow */
    bool replaying;          /* feeding the replay header: no events */
    bool need_parser;        /* stopped: build a parser (and replay) first */
    bool in_parse;           /* inside XML_Parse: StopParser is allowed */
    bool in_feed;            /* a callback is on the stack */
    struct xml_node *top;    /* the stanza being built */
    struct xml_node *cur;    /* its innermost open element */
    size_t nodes;            /* counted against lim.max_nodes */
    unsigned frame_elems;    /* framed: top-level elements in this message */

    struct xml_node *header; /* <stream:stream> or the last <open/> */
    struct xml_nsdecl decls[MAX_ROOT_DECLS]; /* on the header element */
    size_t ndecls;
    struct buf replay;       /* what a fresh parser is fed before the caller's bytes */

    /* Byte indexes in the current parser's input (the replay included). */
    int64_t fed;             /* given to expat so far */
    int64_t unit_start;      /* where the current top-level unit began */
    int64_t unit_end;        /* STOP_PAUSE, STOP_RECYCLE: just past the element */

    enum stop stop;
    int rc;                  /* sticky failure */
    enum xml_error err;
    char errtext[192];
};

const char *xml_error_condition(enum xml_error e)
{
    switch (e) {
    case XML_ERR_NONE: return "undefined-condition";
    case XML_ERR_NOT_WELL_FORMED: return "not-well-formed";
    case XML_ERR_RESTRICTED_XML: return "restricted-xml";
    case XML_ERR_POLICY_VIOLATION: return "policy-violation";
    case XML_ERR_BAD_NAMESPACE_PREFIX: return "bad-namespace-prefix";
    case XML_ERR_INVALID_NAMESPACE: return "invalid-namespace";
    case XML_ERR_BAD_FORMAT: return "bad-format";
    case XML_ERR_UNSUPPORTED_ENCODING: return "unsupported-encoding";
    case XML_ERR_RESOURCE_CONSTRAINT: return "resource-constraint";
    case XML_ERR_CALLBACK: return "undefined-condition";
    }
    return "undefined-condition";
}

void xml_limits_default(struct xml_limits *lim)
{
    lim->max_stanza = XML_LIMIT_PREAUTH;
    lim->max_depth = 32;
    lim->max_nodes = 8192;
}

static void set_limits(struct xml_stream *s, const struct xml_limits *lim)
{
    struct xml_limits d;
    xml_limits_default(&d);
    if (lim) {
        if (lim->max_stanza)
            d.max_stanza = lim->max_stanza;
        if (lim->max_depth)
            d.max_depth = lim->max_depth;
        if (lim->max_nodes)
            d.max_nodes = lim->max_nodes;
    }
    /* Keep max_stanza + 1 inside one XML_Parse call. */
    if (d.max_stanza > INT_MAX - 1)
        d.max_stanza = INT_MAX - 1;
    s->lim = d;
}

void xml_stream_set_limits(struct xml_stream *s, const struct xml_limits *lim) { set_limits(s, lim); }

static void stop_parser(struct xml_stream *s, enum stop why)
{
    s->stop = why;
    if (s->in_parse)
        XML_StopParser(s->p, XML_FALSE);
}

static void fail(struct xml_stream *s, enum xml_error e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(struct xml_stream *s, enum xml_error e, int rc, const char *fmt, ...)
{
    if (s->stop == STOP_ERROR || s->rc)
        return;
    s->err = e;
    s->rc = rc;
    size_t n = 0;
    if (s->p)
        n = (size_t)snprintf(s->errtext, sizeof s->errtext, "line %lu, column %lu: ",
                             (unsigned long)XML_GetCurrentLineNumber(s->p),
                             (unsigned long)XML_GetCurrentColumnNumber(s->p));
    if (n >= sizeof s->errtext)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errtext + n, sizeof s->errtext - n, fmt, ap);
    va_end(ap);
    stop_parser(s, STOP_ERROR);
}

static int64_t event_end(struct xml_stream *s)
{
    return (int64_t)XML_GetCurrentByteIndex(s->p) + XML_GetCurrentByteCount(s->p);
}

/* A callback's answer: go on, pause after this element, or fail. */
static void after_callback(struct xml_stream *s, int rc, int64_t end)
{
    if (rc < 0) {
        fail(s, XML_ERR_CALLBACK, rc, "refused by the stream handler (%d)", rc);
    } else if (rc == XML_STREAM_PAUSE) {
        s->unit_end = end;
        stop_parser(s, STOP_PAUSE);
    } else if (end > (int64_t)RECYCLE_BYTES && !s->closed) {
        s->unit_end = end;
        stop_parser(s, STOP_RECYCLE);
    }
}

struct qname {
    const char *uri, *local, *prefix;
    size_t urilen, locallen, prefixlen;
};

/* Expat's "uri\1local\1prefix", "uri\1local" or "local". */
static void split_name(const char *s, struct qname *q)
{
    const char *a = strchr(s, NSSEP);
    q->prefix = "";
    q->prefixlen = 0;
    if (!a) {
        q->uri = "";
        q->urilen = 0;
        q->local = s;
        q->locallen = strlen(s);
        return;
    }
    q->uri = s;
    q->urilen = (size_t)(a - s);
    q->local = a + 1;
    const char *b = strchr(q->local, NSSEP);
    if (b) {
        q->locallen = (size_t)(b - q->local);
        q->prefix = b + 1;
        q->prefixlen = strlen(b + 1);
    } else {
        q->locallen = strlen(q->local);
    }
}

static bool qname_is(const struct qname *q, const char *ns, const char *local)
{
    return q->urilen == strlen(ns) && memcmp(q->uri, ns, q->urilen) == 0 &&
           q->locallen == strlen(local) && memcmp(q->local, local, q->locallen) == 0;
}

static bool count_node(struct xml_stream *s)
{
    if (++s->nodes > s->lim.max_nodes) {
        fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "more than %zu nodes in one stanza",
             s->lim.max_nodes);
        return false;
    }
    return true;
}

static struct xml_node *build_element(struct xml_stream *s, const char *name, const char **atts,
                                      bool count)
{
    struct qname q;
    split_name(name, &q);
    if (count && !count_node(s))
        return NULL;
    struct xml_node *el = element_alloc(q.local, q.locallen, q.uri, q.urilen);
    if (!el)
        goto nomem;
    for (; atts[0]; atts += 2) {
        if (count && !count_node(s)) {
            node_destroy(el);
            return NULL;
        }
        split_name(atts[0], &q);
        if (attr_push(el, q.uri, q.urilen, q.local, q.locallen, atts[1], strlen(atts[1]))) {
            node_destroy(el);
            goto nomem;
        }
    }
    return el;
nomem:
    fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
    return NULL;
}

static void clear_decls(struct xml_stream *s)
{
    for (size_t i = 0; i < s->ndecls; i++) {
        free(s->decls[i].prefix);
        free(s->decls[i].uri);
    }
    s->ndecls = 0;
}

static void emit_open(struct xml_stream *s, int64_t end)
{
    struct xml_open o = {
        .el = s->header,
        .framed = s->mode == XML_MODE_FRAMED,
        .to = xml_attr_get(s->header, "to"),
        .from = xml_attr_get(s->header, "from"),
        .id = xml_attr_get(s->header, "id"),
        .version = xml_attr_get(s->header, "version"),
        .lang = xml_attr_get_ns(s->header, XMPP_NS_XML, "lang"),
        .decls = s->decls,
        .ndecls = s->ndecls,
    };
    if (o.framed) {
        o.content_ns = XMPP_NS_CLIENT;
    } else {
        for (size_t i = 0; i < s->ndecls; i++)
            if (!*s->decls[i].prefix)
                o.content_ns = *s->decls[i].uri ? s->decls[i].uri : NULL;
    }
    int rc = s->cb.on_open ? s->cb.on_open(s->ud, &o) : 0;
    after_callback(s, rc, end);
}

/* The replay header: the root's start tag with the declarations it made. */
static int build_replay(struct xml_stream *s, const struct qname *q)
{
    struct buf *b = &s->replay;
    int rc = 0;
    buf_reset(b);
    rc |= buf_append_char(b, '<');
    if (q->prefixlen) {
        rc |= buf_append(b, q->prefix, q->prefixlen);
        rc |= buf_append_char(b, ':');
    }
    rc |= buf_append(b, q->local, q->locallen);
    for (size_t i = 0; i < s->ndecls; i++) {
        rc |= buf_append(b, " xmlns", 6);
        if (*s->decls[i].prefix) {
            rc |= buf_append_char(b, ':');
            rc |= buf_append_str(b, s->decls[i].prefix);
        }
        rc |= buf_append(b, "='", 2);
        rc |= xml_escape_attr(b, s->decls[i].uri, strlen(s->decls[i].uri));
        rc |= buf_append_char(b, '\'');
    }
    rc |= buf_append_char(b, '>');
    return rc ? -ENOMEM : 0;
}

static void on_start_root(struct xml_stream *s, const char *name, const char **atts)
{
    struct qname q;
    split_name(name, &q);
    if (!qname_is(&q, XMPP_NS_STREAMS, "stream")) {
        fail(s, XML_ERR_INVALID_NAMESPACE, -EPROTO,
             "the stream must open with <stream> in " XMPP_NS_STREAMS);
        return;
    }
    int64_t end = event_end(s);
    if (end - s->unit_start > (int64_t)s->lim.max_stanza) {
        fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "stream header over %zu bytes",
             s->lim.max_stanza);
        return;
    }
    struct xml_node *el = build_element(s, name, atts, false);
    if (!el)
        return;
    xml_node_free(s->header);
    s->header = el;
    if (build_replay(s, &q)) {
        fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
        return;
    }
    s->root_open = true;
    s->depth = 1;
    s->unit_start = end;
    emit_open(s, end);
}

static void XMLCALL on_start(void *ud, const char *name, const char **atts)
{
    struct xml_stream *s = ud;
    if (s->stop)
        return;
    if (s->replaying) {
        s->depth++;
        return;
    }
    if (s->depth == 0) {
        on_start_root(s, name, atts);
        return;
    }
    if (s->depth > s->lim.max_depth) {
        fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "elements nested deeper than %u",
             s->lim.max_depth);
        return;
    }
    if (s->depth == 1) {
        if (s->mode == XML_MODE_FRAMED && ++s->frame_elems > 1) {
            fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO,
                 "more than one element in a WebSocket message");
            return;
        }
        s->nodes = 0;
    }
    struct xml_node *el = build_element(s, name, atts, true);
    if (!el)
        return;
    if (s->depth == 1)
        s->top = el;
    else
        xml_node_append(s->cur, el);
    s->cur = el;
    s->depth++;
}

static void top_done(struct xml_stream *s)
{
    int64_t end = event_end(s);
    struct xml_node *el = s->top;
    s->top = s->cur = NULL;
    if (end - s->unit_start > (int64_t)s->lim.max_stanza) {
        xml_node_free(el);
        fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "stanza over %zu bytes", s->lim.max_stanza);
        return;
    }
    s->unit_start = end;
    if (s->mode == XML_MODE_FRAMED && strcmp(el->ns, XMPP_NS_FRAMING) == 0 &&
        (strcmp(el->name, "open") == 0 || strcmp(el->name, "close") == 0)) {
        if (el->name[0] == 'o') {
            xml_node_free(s->header);
            s->header = el;
            emit_open(s, end);
        } else {
            xml_node_free(el);
            s->closed = true;
            after_callback(s, s->cb.on_close ? s->cb.on_close(s->ud) : 0, end);
        }
        return;
    }
    int rc = 0;
    if (s->cb.on_stanza)
        rc = s->cb.on_stanza(s->ud, el);
    else
        xml_node_free(el);
    after_callback(s, rc, end);
}

static void XMLCALL on_end(void *ud, const char *name)
{
    struct xml_stream *s = ud;
    if (s->stop || s->replaying)
        return;
    if (s->depth == 0)
        return; /* cannot happen: expat matches tags */
    s->depth--;
    if (s->depth >= 2) {
        s->cur = s->cur->parent;
    } else if (s->depth == 1) {
        top_done(s);
    } else if (s->mode == XML_MODE_FRAMED) {
        fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO, "a WebSocket message closed the framing");
    } else {
        s->closed = true;
        s->root_open = false;
        after_callback(s, s->cb.on_close ? s->cb.on_close(s->ud) : 0, event_end(s));
    }
}

static bool all_space(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

static void XMLCALL on_text(void *ud, const char *text, int len)
{
    struct xml_stream *s = ud;
    if (s->stop || s->replaying || len <= 0)
        return;
    if (s->depth <= 1) {
        /* Between stanzas only whitespace (keepalives, pretty printing). */
        if (!all_space(text, (size_t)len)) {
            fail(s, XML_ERR_BAD_FORMAT, -EPROTO, "text directly inside the stream");
            return;
        }
        s->unit_start = event_end(s);
        return;
    }
    struct xml_node *last = s->cur->last;
    if (last && last->type == XML_NODE_TEXT) {
        if (text_append(last, text, (size_t)len))
            fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
        return;
    }
    if (!count_node(s))
        return;
    struct xml_node *t = xml_text_new(text, (size_t)len);
    if (!t) {
        fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
        return;
    }
    xml_node_append(s->cur, t);
}

static void XMLCALL on_ns_start(void *ud, const char *prefix, const char *uri)
{
    struct xml_stream *s = ud;
    if (s->stop || s->replaying)
        return;
    /* Only the header's declarations are kept: those on the TCP root (the
     * replay header needs every one), and those on a framed top-level
     * element, which may be an <open/> (expat reports them before the
     * element's name; xml_stream_feed_frame clears them per message). */
    if (s->depth == 0) {
        if (s->ndecls == MAX_ROOT_DECLS) {
            fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO,
                 "more than %d namespace declarations on the stream header", MAX_ROOT_DECLS);
            return;
        }
    } else if (s->depth != 1 || s->mode != XML_MODE_FRAMED || s->ndecls == MAX_ROOT_DECLS) {
        return;
    }
    struct xml_nsdecl *d = &s->decls[s->ndecls];
    d->prefix = strdup(prefix ? prefix : "");
    d->uri = strdup(uri ? uri : "");
    s->ndecls++;
    if (!d->prefix || !d->uri)
        fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
}

static void XMLCALL on_xmldecl(void *ud, const char *version, const char *encoding, int standalone)
{
    struct xml_stream *s = ud;
    if (s->stop)
        return;
    if (encoding && strcasecmp(encoding, "UTF-8") != 0)
        fail(s, XML_ERR_UNSUPPORTED_ENCODING, -EPROTO, "encoding %.40s, not UTF-8", encoding);
    else if (version && strcmp(version, "1.0") != 0)
        fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO, "XML version %.20s, not 1.0", version);
}

static void XMLCALL on_doctype(void *ud, const char *name, const char *sysid, const char *pubid,
                               int has_internal_subset)
{
    fail(ud, XML_ERR_RESTRICTED_XML, -EPROTO, "DTD");
}

static void XMLCALL on_comment(void *ud, const char *data)
{
    fail(ud, XML_ERR_RESTRICTED_XML, -EPROTO, "comment");
}

static void XMLCALL on_pi(void *ud, const char *target, const char *data)
{
    fail(ud, XML_ERR_RESTRICTED_XML, -EPROTO, "processing instruction");
}

static void XMLCALL on_entity_decl(void *ud, const char *name, int is_pe, const char *value,
                                   int value_len, const char *base, const char *sysid,
                                   const char *pubid, const char *notation)
{
    fail(ud, XML_ERR_RESTRICTED_XML, -EPROTO, "entity declaration");
}

static int XMLCALL on_external_entity(XML_Parser p, const char *context, const char *base,
                                      const char *sysid, const char *pubid)
{
    fail(XML_GetUserData(p), XML_ERR_RESTRICTED_XML, -EPROTO, "external entity");
    return XML_STATUS_ERROR;
}

static void map_expat_error(struct xml_stream *s)
{
    enum XML_Error code = XML_GetErrorCode(s->p);
    enum xml_error e;
    switch (code) {
    case XML_ERROR_NO_MEMORY:
        fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "out of memory");
        return;
    case XML_ERROR_UNBOUND_PREFIX:
    case XML_ERROR_UNDECLARING_PREFIX:
    case XML_ERROR_RESERVED_PREFIX_XML:
    case XML_ERROR_RESERVED_PREFIX_XMLNS:
    case XML_ERROR_RESERVED_NAMESPACE_URI:
        e = XML_ERR_BAD_NAMESPACE_PREFIX;
        break;
    case XML_ERROR_UNKNOWN_ENCODING:
    case XML_ERROR_INCORRECT_ENCODING:
        e = XML_ERR_UNSUPPORTED_ENCODING;
        break;
    case XML_ERROR_UNDEFINED_ENTITY:
    case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
    case XML_ERROR_ENTITY_DECLARED_IN_PE:
    case XML_ERROR_NOT_STANDALONE:
        e = XML_ERR_RESTRICTED_XML;
        break;
    default:
        e = XML_ERR_NOT_WELL_FORMED;
        break;
    }
    fail(s, e, -EPROTO, "%s", XML_ErrorString(code));
}

static void free_tree(struct xml_stream *s)
{
    xml_node_free(s->top);
    s->top = s->cur = NULL;
}

/* A fresh expat; inside the stream again (replay) when there is one. */
static int parser_start(struct xml_stream *s)
{
    free_tree(s);
    if (s->p)
        XML_ParserFree(s->p);
    s->p = XML_ParserCreateNS("UTF-8", NSSEP);
    if (!s->p)
        return -ENOMEM;
    XML_Parser p = s->p;
    XML_SetUserData(p, s);
    XML_SetReturnNSTriplet(p, XML_TRUE);
    XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
#if HAVE_XML_SETREPARSEDEFERRALENABLED
    XML_SetReparseDeferralEnabled(p, XML_FALSE);
#endif
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    XML_SetStartNamespaceDeclHandler(p, on_ns_start);
    XML_SetXmlDeclHandler(p, on_xmldecl);
    XML_SetStartDoctypeDeclHandler(p, on_doctype);
    XML_SetCommentHandler(p, on_comment);
    XML_SetProcessingInstructionHandler(p, on_pi);
    XML_SetEntityDeclHandler(p, on_entity_decl);
    XML_SetExternalEntityRefHandler(p, on_external_entity);
    s->depth = 0;
    s->fed = s->unit_start = 0;
    s->need_parser = false;
    s->stop = STOP_NONE;
    if (s->mode == XML_MODE_FRAMED || s->root_open) {
        s->replaying = true;
        enum XML_Status st = XML_Parse(p, s->replay.data, (int)s->replay.len, XML_FALSE);
        s->replaying = false;
        if (st != XML_STATUS_OK || s->depth != 1)
            return -EPROTO;
        s->fed = s->unit_start = (int64_t)s->replay.len;
    }
    return 0;
}

struct xml_stream *xml_stream_new(enum xml_mode mode, const struct xml_limits *lim,
                                  const struct xml_stream_callbacks *cb, void *ud)
{
    struct xml_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->mode = mode;
    set_limits(s, lim);
    if (cb)
        s->cb = *cb;
    s->ud = ud;
    buf_init(&s->replay, 0);
    if (mode == XML_MODE_FRAMED && buf_append_str(&s->replay, FRAME_WRAPPER)) {
        xml_stream_free(s);
        return NULL;
    }
    if (parser_start(s)) {
        xml_stream_free(s);
        return NULL;
    }
    return s;
}

void xml_stream_free(struct xml_stream *s)
{
    if (!s)
        return;
    free_tree(s);
    if (s->p)
        XML_ParserFree(s->p);
    xml_node_free(s->header);
    clear_decls(s);
    buf_free(&s->replay);
    free(s);
}

int xml_stream_reset(struct xml_stream *s)
{
    if (s->in_feed)
        return -EBUSY;
    xml_node_free(s->header);
    s->header = NULL;
    clear_decls(s);
    s->root_open = false;
    s->closed = false;
    s->rc = 0;
    s->err = XML_ERR_NONE;
    s->errtext[0] = '\0';
    s->frame_elems = 0;
    int rc = parser_start(s);
    if (rc) {
        s->need_parser = true;
        s->rc = rc;
        s->err = XML_ERR_RESOURCE_CONSTRAINT;
    }
    return rc;
}

int xml_stream_trim(struct xml_stream *s)
{
    if (s->in_feed)
        return -EBUSY;
    if (!s->p || s->need_parser)
        return 0;
    /* Only between units: a fresh parser with the replay header is then in
     * exactly the state this one is in. */
    if (s->fed != s->unit_start || s->top)
        return -EAGAIN;
    XML_ParserFree(s->p);
    s->p = NULL;
    s->need_parser = true;
    return 0;
}

enum xml_error xml_stream_error(const struct xml_stream *s) { return s->err; }

const char *xml_stream_error_text(const struct xml_stream *s) { return s->errtext; }

const struct xml_node *xml_stream_header(const struct xml_stream *s) { return s->header; }

static int feed(struct xml_stream *s, const char *data, size_t len, size_t *consumed)
{
    size_t off = 0;
    int rc = 0;

    *consumed = 0;
    if (s->in_feed)
        return -EBUSY;
    if (s->rc)
        return s->rc;
    if (s->closed) {
        if (!all_space(data, len)) {
            fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO, "data after the end of the stream");
            return s->rc;
        }
        *consumed = len;
        return 0;
    }
    if (s->need_parser && (rc = parser_start(s)) != 0) {
        fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "cannot restart the parser");
        return s->rc;
    }
    s->in_feed = true;
    int64_t origin = s->fed; /* parser index of data[0] */
    while (off < len) {
        int64_t pending = s->fed - s->unit_start;
        if (pending > (int64_t)s->lim.max_stanza) {
            fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "stanza over %zu bytes",
                 s->lim.max_stanza);
            rc = s->rc;
            break;
        }
        size_t n = len - off, room = s->lim.max_stanza - (size_t)pending + 1;
        if (n > room)
            n = room;
        s->stop = STOP_NONE;
        s->in_parse = true;
        enum XML_Status st = XML_Parse(s->p, data + off, (int)n, XML_FALSE);
        s->in_parse = false;
        s->fed += (int64_t)n;
        if (st == XML_STATUS_OK) {
            off += n;
            continue;
        }
        if (s->stop == STOP_PAUSE || s->stop == STOP_RECYCLE) {
            off = (size_t)(s->unit_end - origin);
            s->need_parser = !s->closed;
            if (s->stop == STOP_PAUSE) {
                rc = XML_STREAM_PAUSED;
                break;
            }
            if ((rc = parser_start(s)) != 0) {
                fail(s, XML_ERR_RESOURCE_CONSTRAINT, -ENOMEM, "cannot restart the parser");
                rc = s->rc;
                break;
            }
            origin = s->fed - (int64_t)off;
            continue;
        }
        if (s->stop != STOP_ERROR)
            map_expat_error(s);
        rc = s->rc;
        break;
    }
    if (rc == 0 && s->fed - s->unit_start > (int64_t)s->lim.max_stanza) {
        fail(s, XML_ERR_POLICY_VIOLATION, -EPROTO, "stanza over %zu bytes", s->lim.max_stanza);
        rc = s->rc;
    }
    s->in_feed = false;
    *consumed = rc == 0 ? len : off;
    if (rc < 0)
        free_tree(s);
    return rc;
}

int xml_stream_feed(struct xml_stream *s, const char *data, size_t len, size_t *consumed)
{
    if (s->mode != XML_MODE_STREAM) {
        *consumed = 0;
        return -EINVAL;
    }
    return feed(s, data, len, consumed);
}

int xml_stream_feed_frame(struct xml_stream *s, const char *data, size_t len, size_t *consumed)
{
    if (s->mode != XML_MODE_FRAMED) {
        *consumed = 0;
        return -EINVAL;
    }
    s->frame_elems = 0;
    clear_decls(s);
    int rc = feed(s, data, len, consumed);
    if (rc == XML_STREAM_PAUSED) {
        /* Nothing but whitespace may follow the one element; say so now,
         * so that the caller never has to feed the rest of a message. */
        if (!all_space(data + *consumed, len - *consumed)) {
            fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO,
                 "more than one element in a WebSocket message");
            return s->rc;
        }
        *consumed = len;
        return rc;
    }
    if (rc != 0 || s->closed)
        return rc;
    /* The message must have ended on an element boundary: nothing open,
     * and only whitespace since the last top-level event. */
    int64_t pending = s->fed - s->unit_start;
    if (s->depth != 1 || pending > (int64_t)len ||
        !all_space(data + len - (size_t)pending, (size_t)pending)) {
        fail(s, XML_ERR_NOT_WELL_FORMED, -EPROTO,
             "a WebSocket message must hold one complete element");
        free_tree(s);
        return s->rc;
    }
    return 0;
}
