/*
 * libFuzzer target: the XMPP XML stream parser, both framings.
 *
 * The first two bytes choose the shape: TCP or WebSocket framing, whether a
 * valid stream header comes first (so stanzas are reached at once), small
 * or default limits, and the read size the rest is cut into. Stanza
 * callbacks pause or fail now and then (by the stanza's name), and the
 * driver continues or resets as c2s would, and trims the parser between
 * reads when asked. Every stanza the parser hands
 * out must serialize to bytes that parse back to an equal tree.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/ns.h"
#include "chat/xml.h"

#define HDR                                                                                    \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "   \
    "xmlns:db='jabber:server:dialback' to='example.com' version='1.0'>"

static struct xml_node *reparsed;

static int keep(void *ud, struct xml_node *st)
{
    if (reparsed)
        abort(); /* one element in, one out */
    reparsed = st;
    return 0;
}

/* The serializer's promise: its output parses back to the same tree. */
static void check_roundtrip(const struct xml_node *st)
{
    struct buf b;
    buf_init(&b, 0);
    if (xml_serialize(st, XMPP_NS_CLIENT, &b))
        abort();
    struct xml_limits lim = {.max_stanza = 1u << 30, .max_depth = 1000, .max_nodes = 1u << 30};
    struct xml_stream_callbacks cb = {.on_stanza = keep};
    struct xml_stream *s = xml_stream_new(XML_MODE_STREAM, &lim, &cb, NULL);
    size_t used;
    if (!s || xml_stream_feed(s, HDR, strlen(HDR), &used) ||
        xml_stream_feed(s, b.data, b.len, &used) || !reparsed || !xml_node_equal(st, reparsed))
        abort();
    xml_node_free(reparsed);
    reparsed = NULL;
    xml_stream_free(s);
    buf_free(&b);
}

static int on_stanza(void *ud, struct xml_node *st)
{
    check_roundtrip(st);
    int rc = 0;
    if (st->name[0] == 'p')
        rc = XML_STREAM_PAUSE;
    else if (st->name[0] == 'f')
        rc = -EPERM;
    xml_node_free(st);
    return rc;
}

static int on_open(void *ud, const struct xml_open *o)
{
    if (!o->el || (o->framed && !o->content_ns))
        abort();
    return o->to && o->to[0] == 'p' ? XML_STREAM_PAUSE : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0], cut = data[1];
    data += 2;
    size -= 2;
    bool framed = mode & 1, header = mode & 2, small = mode & 4;
    struct xml_limits lim = {0};
    if (small)
        lim = (struct xml_limits){.max_stanza = 64 + (mode >> 3) * 16, .max_depth = 4,
                                  .max_nodes = 16};
    struct xml_stream_callbacks cb = {on_open, on_stanza, NULL};
    struct xml_stream *s =
        xml_stream_new(framed ? XML_MODE_FRAMED : XML_MODE_STREAM, NULL, &cb, NULL);
    if (!s)
        return 0;
    size_t used;
    if (header && !framed && xml_stream_feed(s, HDR, strlen(HDR), &used) != 0)
        abort();
    if (small)
        xml_stream_set_limits(s, &lim);

    /* Framed: messages are separated by NUL bytes. TCP: reads of `cut`
     * bytes (0: all at once). */
    const char *p = (const char *)data;
    size_t left = size;
    int rc = 0;
    while (left > 0 && rc >= 0) {
        size_t n;
        if (framed) {
            const char *z = memchr(p, '\0', left);
            n = z ? (size_t)(z - p) : left;
            rc = xml_stream_feed_frame(s, p, n, &used);
            if (used > n)
                abort();
            if (z)
                n++;
        } else {
            n = cut ? (cut < left ? cut : left) : left;
            size_t off = 0;
            while (off < n) {
                rc = xml_stream_feed(s, p + off, n - off, &used);
                if (used > n - off)
                    abort();
                off += used;
                if (rc < 0)
                    break;
                if (rc == XML_STREAM_PAUSED && (mode & 0x80) && xml_stream_reset(s))
                    abort();
            }
        }
        if (rc < 0 && xml_stream_error(s) == XML_ERR_NONE)
            abort();
        if (mode & 0x40) {
            int t = xml_stream_trim(s); /* between reads, as an idle timer would */
            if (t != 0 && t != -EAGAIN)
                abort();
        }
        p += n;
        left -= n;
    }
    xml_stream_free(s);
    return 0;
}
