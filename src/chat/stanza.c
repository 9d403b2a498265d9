/*
 * Stanza helpers and stream-level bytes. See stanza.h.
 *
 * The headers, closes and stream errors are written as bytes rather than
 * built as trees: a TCP stream header is an unclosed start tag, which a tree
 * cannot express, and these few strings are the same every time. Stanza
 * error replies are trees, because the c2s and MUC layers route them like
 * any other stanza.
 */
#include "chat/stanza.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

static bool content_ns(const char *ns)
{
    return strcmp(ns, XMPP_NS_CLIENT) == 0 || strcmp(ns, XMPP_NS_SERVER) == 0;
}

enum stanza_kind stanza_kind(const struct xml_node *st)
{
    if (!st || st->type != XML_NODE_ELEMENT || !content_ns(st->ns))
        return STANZA_OTHER;
    if (strcmp(st->name, "message") == 0)
        return STANZA_MESSAGE;
    if (strcmp(st->name, "presence") == 0)
        return STANZA_PRESENCE;
    if (strcmp(st->name, "iq") == 0)
        return STANZA_IQ;
    return STANZA_OTHER;
}

struct type_name {
    const char *name;
    enum stanza_type type;
};

static const struct type_name message_types[] = {
    {"normal", STANZA_TYPE_NORMAL}, {"chat", STANZA_TYPE_CHAT},
    {"groupchat", STANZA_TYPE_GROUPCHAT}, {"headline", STANZA_TYPE_HEADLINE},
    {"error", STANZA_TYPE_ERROR}, {NULL, 0},
};
static const struct type_name presence_types[] = {
    {"unavailable", STANZA_TYPE_UNAVAILABLE}, {"probe", STANZA_TYPE_PROBE},
    {"subscribe", STANZA_TYPE_SUBSCRIBE}, {"subscribed", STANZA_TYPE_SUBSCRIBED},
    {"unsubscribe", STANZA_TYPE_UNSUBSCRIBE}, {"unsubscribed", STANZA_TYPE_UNSUBSCRIBED},
    {"error", STANZA_TYPE_ERROR}, {NULL, 0},
};
static const struct type_name iq_types[] = {
    {"get", STANZA_TYPE_GET}, {"set", STANZA_TYPE_SET}, {"result", STANZA_TYPE_RESULT},
    {"error", STANZA_TYPE_ERROR}, {NULL, 0},
};

enum stanza_type stanza_type(const struct xml_node *st)
{
    const struct type_name *t;
    enum stanza_kind k = stanza_kind(st);
    switch (k) {
    case STANZA_MESSAGE: t = message_types; break;
    case STANZA_PRESENCE: t = presence_types; break;
    case STANZA_IQ: t = iq_types; break;
    default: return STANZA_TYPE_UNKNOWN;
    }
    const char *v = xml_attr_get(st, "type");
    if (!v)
        return k == STANZA_MESSAGE ? STANZA_TYPE_NORMAL : STANZA_TYPE_NONE;
    for (; t->name; t++)
        if (strcmp(t->name, v) == 0)
            return t->type;
    return k == STANZA_MESSAGE ? STANZA_TYPE_NORMAL : STANZA_TYPE_UNKNOWN;
}

/* Name and usual type, in the order of enum stanza_cond. */
static const struct {
    const char *name;
    enum stanza_error_type type;
} conds[STANZA_COND_COUNT] = {
    [STANZA_COND_BAD_REQUEST] = {"bad-request", STANZA_ERROR_MODIFY},
    [STANZA_COND_CONFLICT] = {"conflict", STANZA_ERROR_CANCEL},
    [STANZA_COND_FEATURE_NOT_IMPLEMENTED] = {"feature-not-implemented", STANZA_ERROR_CANCEL},
    [STANZA_COND_FORBIDDEN] = {"forbidden", STANZA_ERROR_AUTH},
    [STANZA_COND_GONE] = {"gone", STANZA_ERROR_CANCEL},
    [STANZA_COND_INTERNAL_SERVER_ERROR] = {"internal-server-error", STANZA_ERROR_CANCEL},
    [STANZA_COND_ITEM_NOT_FOUND] = {"item-not-found", STANZA_ERROR_CANCEL},
    [STANZA_COND_JID_MALFORMED] = {"jid-malformed", STANZA_ERROR_MODIFY},
    [STANZA_COND_NOT_ACCEPTABLE] = {"not-acceptable", STANZA_ERROR_MODIFY},
    [STANZA_COND_NOT_ALLOWED] = {"not-allowed", STANZA_ERROR_CANCEL},
    [STANZA_COND_NOT_AUTHORIZED] = {"not-authorized", STANZA_ERROR_AUTH},
    [STANZA_COND_POLICY_VIOLATION] = {"policy-violation", STANZA_ERROR_MODIFY},
    [STANZA_COND_RECIPIENT_UNAVAILABLE] = {"recipient-unavailable", STANZA_ERROR_WAIT},
    [STANZA_COND_REDIRECT] = {"redirect", STANZA_ERROR_MODIFY},
    [STANZA_COND_REGISTRATION_REQUIRED] = {"registration-required", STANZA_ERROR_AUTH},
    [STANZA_COND_REMOTE_SERVER_NOT_FOUND] = {"remote-server-not-found", STANZA_ERROR_CANCEL},
    [STANZA_COND_REMOTE_SERVER_TIMEOUT] = {"remote-server-timeout", STANZA_ERROR_WAIT},
    [STANZA_COND_RESOURCE_CONSTRAINT] = {"resource-constraint", STANZA_ERROR_WAIT},
    [STANZA_COND_SERVICE_UNAVAILABLE] = {"service-unavailable", STANZA_ERROR_CANCEL},
    [STANZA_COND_SUBSCRIPTION_REQUIRED] = {"subscription-required", STANZA_ERROR_AUTH},
    [STANZA_COND_UNDEFINED_CONDITION] = {"undefined-condition", STANZA_ERROR_CANCEL},
    [STANZA_COND_UNEXPECTED_REQUEST] = {"unexpected-request", STANZA_ERROR_WAIT},
};

const char *stanza_cond_name(enum stanza_cond c)
{
    return (unsigned)c < STANZA_COND_COUNT ? conds[c].name : "undefined-condition";
}

enum stanza_error_type stanza_cond_default_type(enum stanza_cond c)
{
    return (unsigned)c < STANZA_COND_COUNT ? conds[c].type : STANZA_ERROR_CANCEL;
}

const char *stanza_error_type_name(enum stanza_error_type t)
{
    switch (t) {
    case STANZA_ERROR_AUTH: return "auth";
    case STANZA_ERROR_CONTINUE: return "continue";
    case STANZA_ERROR_MODIFY: return "modify";
    case STANZA_ERROR_WAIT: return "wait";
    case STANZA_ERROR_CANCEL:
    case STANZA_ERROR_DEFAULT: break;
    }
    return "cancel";
}

int stanza_error_reply(const struct xml_node *st, const struct stanza_error *e,
                       struct xml_node **out)
{
    *out = NULL;
    if (stanza_kind(st) == STANZA_OTHER || stanza_type(st) == STANZA_TYPE_ERROR)
        return -EINVAL;
    struct xml_node *r = xml_element_new(st->name, st->ns);
    if (!r)
        return -ENOMEM;
    const char *from = xml_attr_get(st, "from"), *to = xml_attr_get(st, "to"),
               *id = xml_attr_get(st, "id");
    if ((from && xml_attr_set(r, "to", from)) || (to && xml_attr_set(r, "from", to)) ||
        (id && xml_attr_set(r, "id", id)) || xml_attr_set(r, "type", "error"))
        goto nomem;
    if (e->with_payload) {
        for (const struct xml_node *c = st->first; c; c = c->next) {
            if (c->type == XML_NODE_ELEMENT && strcmp(c->name, "error") == 0)
                continue;
            struct xml_node *k = xml_node_copy(c);
            if (!k)
                goto nomem;
            xml_node_append(r, k);
        }
    }
    struct xml_node *err = xml_element_add(r, "error", NULL);
    enum stanza_error_type type = e->type ? e->type : stanza_cond_default_type(e->cond);
    if (!err || xml_attr_set(err, "type", stanza_error_type_name(type)) ||
        (e->by && xml_attr_set(err, "by", e->by)) ||
        !xml_element_add(err, stanza_cond_name(e->cond), XMPP_NS_STANZA_ERRORS) ||
        (e->text && !xml_element_add_text_child(err, "text", XMPP_NS_STANZA_ERRORS, e->text)) ||
        (e->app_name && !xml_element_add(err, e->app_name, e->app_ns ? e->app_ns : "")))
        goto nomem;
    *out = r;
    return 0;
nomem:
    xml_node_free(r);
    return -ENOMEM;
}

static const char *const stream_conds[STANZA_STREAM_COUNT] = {
    [STANZA_STREAM_BAD_FORMAT] = "bad-format",
    [STANZA_STREAM_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
    [STANZA_STREAM_CONFLICT] = "conflict",
    [STANZA_STREAM_CONNECTION_TIMEOUT] = "connection-timeout",
    [STANZA_STREAM_HOST_GONE] = "host-gone",
    [STANZA_STREAM_HOST_UNKNOWN] = "host-unknown",
    [STANZA_STREAM_IMPROPER_ADDRESSING] = "improper-addressing",
    [STANZA_STREAM_INTERNAL_SERVER_ERROR] = "internal-server-error",
    [STANZA_STREAM_INVALID_FROM] = "invalid-from",
    [STANZA_STREAM_INVALID_NAMESPACE] = "invalid-namespace",
    [STANZA_STREAM_INVALID_XML] = "invalid-xml",
    [STANZA_STREAM_NOT_AUTHORIZED] = "not-authorized",
    [STANZA_STREAM_NOT_WELL_FORMED] = "not-well-formed",
    [STANZA_STREAM_POLICY_VIOLATION] = "policy-violation",
    [STANZA_STREAM_REMOTE_CONNECTION_FAILED] = "remote-connection-failed",
    [STANZA_STREAM_RESET] = "reset",
    [STANZA_STREAM_RESOURCE_CONSTRAINT] = "resource-constraint",
    [STANZA_STREAM_RESTRICTED_XML] = "restricted-xml",
    [STANZA_STREAM_SEE_OTHER_HOST] = "see-other-host",
    [STANZA_STREAM_SYSTEM_SHUTDOWN] = "system-shutdown",
    [STANZA_STREAM_UNDEFINED_CONDITION] = "undefined-condition",
    [STANZA_STREAM_UNSUPPORTED_ENCODING] = "unsupported-encoding",
    [STANZA_STREAM_UNSUPPORTED_FEATURE] = "unsupported-feature",
    [STANZA_STREAM_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
    [STANZA_STREAM_UNSUPPORTED_VERSION] = "unsupported-version",
};

const char *stanza_stream_cond_name(enum stanza_stream_cond c)
{
    return (unsigned)c < STANZA_STREAM_COUNT ? stream_conds[c] : "undefined-condition";
}

enum stanza_stream_cond stanza_stream_cond_from_xml(enum xml_error e)
{
    switch (e) {
    case XML_ERR_NOT_WELL_FORMED: return STANZA_STREAM_NOT_WELL_FORMED;
    case XML_ERR_RESTRICTED_XML: return STANZA_STREAM_RESTRICTED_XML;
    case XML_ERR_POLICY_VIOLATION: return STANZA_STREAM_POLICY_VIOLATION;
    case XML_ERR_BAD_NAMESPACE_PREFIX: return STANZA_STREAM_BAD_NAMESPACE_PREFIX;
    case XML_ERR_INVALID_NAMESPACE: return STANZA_STREAM_INVALID_NAMESPACE;
    case XML_ERR_BAD_FORMAT: return STANZA_STREAM_BAD_FORMAT;
    case XML_ERR_UNSUPPORTED_ENCODING: return STANZA_STREAM_UNSUPPORTED_ENCODING;
    case XML_ERR_RESOURCE_CONSTRAINT: return STANZA_STREAM_RESOURCE_CONSTRAINT;
    case XML_ERR_NONE:
    case XML_ERR_CALLBACK: break;
    }
    return STANZA_STREAM_UNDEFINED_CONDITION;
}

static int put_attr(struct buf *out, const char *name, const char *value)
{
    int rc;
    if (!value)
        return 0;
    if ((rc = buf_printf(out, " %s='", name)) || (rc = xml_escape_attr(out, value, strlen(value))))
        return rc;
    return buf_append_char(out, '\'');
}

int stanza_stream_header(struct buf *out, enum stanza_framing f, const struct stanza_header *h)
{
    int rc;
    if (f == STANZA_FRAMING_WS) {
        rc = buf_append_str(out, "<open xmlns='" XMPP_NS_FRAMING "'");
    } else {
        if ((rc = buf_append_str(out, "<?xml version='1.0'?><stream:stream xmlns='")) ||
            (rc = xml_escape_attr(out, h->content_ns ? h->content_ns : XMPP_NS_CLIENT,
                                  strlen(h->content_ns ? h->content_ns : XMPP_NS_CLIENT))) ||
            (rc = buf_append_str(out, "' xmlns:stream='" XMPP_NS_STREAMS "'")))
            return rc;
        if (h->dialback)
            rc = buf_append_str(out, " xmlns:db='" XMPP_NS_DIALBACK "'");
    }
    if (rc || (rc = put_attr(out, "id", h->id)) || (rc = put_attr(out, "from", h->from)) ||
        (rc = put_attr(out, "to", h->to)) || (rc = put_attr(out, "version", "1.0")) ||
        (rc = put_attr(out, "xml:lang", h->lang)))
        return rc;
    return buf_append_str(out, f == STANZA_FRAMING_WS ? "/>" : ">");
}

int stanza_stream_close(struct buf *out, enum stanza_framing f, const char *see_other_uri)
{
    int rc;
    if (f == STANZA_FRAMING_TCP)
        return buf_append_str(out, "</stream:stream>");
    if ((rc = buf_append_str(out, "<close xmlns='" XMPP_NS_FRAMING "'")) ||
        (rc = put_attr(out, "see-other-uri", see_other_uri)))
        return rc;
    return buf_append_str(out, "/>");
}

int stanza_stream_error(struct buf *out, enum stanza_framing f, enum stanza_stream_cond c,
                        const char *text)
{
    int rc;
    rc = buf_append_str(out, f == STANZA_FRAMING_WS
                                 ? "<stream:error xmlns:stream='" XMPP_NS_STREAMS "'>"
                                 : "<stream:error>");
    if (rc || (rc = buf_printf(out, "<%s xmlns='" XMPP_NS_STREAM_ERRORS "'/>",
                               stanza_stream_cond_name(c))))
        return rc;
    if (text && ((rc = buf_append_str(out, "<text xmlns='" XMPP_NS_STREAM_ERRORS "'>")) ||
                 (rc = xml_escape_text(out, text, strlen(text))) ||
                 (rc = buf_append_str(out, "</text>"))))
        return rc;
    return buf_append_str(out, "</stream:error>");
}

int stanza_write(struct buf *out, enum stanza_framing f, const char *content_ns,
                 const struct xml_node *st)
{
    return xml_serialize(st, f == STANZA_FRAMING_TCP ? content_ns : NULL, out);
}

int stanza_set_content_ns(struct xml_node *st, const char *from_ns, const char *to_ns)
{
    if (st->type != XML_NODE_ELEMENT)
        return 0;
    if (strcmp(st->ns, from_ns) == 0) {
        int rc = xml_element_set_ns(st, to_ns);
        if (rc)
            return rc;
    }
    for (struct xml_node *c = st->first; c; c = c->next) {
        int rc = stanza_set_content_ns(c, from_ns, to_ns);
        if (rc)
            return rc;
    }
    return 0;
}

int stanza_jid(const struct xml_node *st, const char *attr, struct jid *out)
{
    const char *v = xml_attr_get(st, attr);
    if (!v) {
        out->domain = out->local = out->resource = NULL;
        return -ENOENT;
    }
    return jid_parse(out, v);
}

_Static_assert(sodium_base64_ENCODED_LEN(16, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   STANZA_ID_SIZE,
               "STANZA_ID_SIZE");

int stanza_id_new(char out[STANZA_ID_SIZE])
{
    unsigned char raw[16];
    if (sodium_init() < 0)
        return -EIO;
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, STANZA_ID_SIZE, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}
