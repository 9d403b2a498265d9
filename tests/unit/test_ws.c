/*
 * WebSocket: the handshake's pieces (accept key, key check, token lists,
 * origins) and the framing machine on memory: frames built here as a
 * browser would send them (masked), the server's frames parsed back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "net/ws.h"

/* --- the handshake -------------------------------------------------------- */

static void test_accept_key(void **state)
{
    char out[29];
    /* RFC 6455 1.3 */
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /* RFC 6455 4.2.2's other example key, checked against Python's
     * base64(sha1(key + GUID)). */
    assert_int_equal(ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out), 0);
    assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void test_key_valid(void **state)
{
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=="));
    assert_false(ws_key_valid(NULL));
    assert_false(ws_key_valid(""));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ"));     /* no padding */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==="));  /* too long */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25j!Q=="));   /* not base64 */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQAA"));   /* 18 bytes, not 16 */
}

static void test_tokens(void **state)
{
    assert_true(ws_token_list_has("Upgrade", "upgrade", true));
    assert_true(ws_token_list_has("keep-alive, Upgrade", "upgrade", true));
    assert_true(ws_token_list_has(" keep-alive ,  upgrade  ", "upgrade", true));
    assert_false(ws_token_list_has("keep-alive, Upgraded", "upgrade", true));
    assert_false(ws_token_list_has("", "upgrade", true));
    assert_false(ws_token_list_has(NULL, "upgrade", true));
    /* Subprotocols are case-sensitive. */
    assert_true(ws_token_list_has("chat, xmpp", "xmpp", false));
    assert_false(ws_token_list_has("XMPP", "xmpp", false));
    assert_false(ws_token_list_has("xmpp-ish", "xmpp", false));
}

static void test_origins(void **state)
{
    const char *pub = "https://live.example.org/some/path";
    /* Empty list: the public URL's origin only. */
    assert_true(ws_origin_allowed("https://live.example.org", "", pub));
    assert_true(ws_origin_allowed("HTTPS://Live.Example.ORG", "", pub));
    assert_true(ws_origin_allowed("https://live.example.org:443", "", pub));
    assert_false(ws_origin_allowed("http://live.example.org", "", pub));
    assert_false(ws_origin_allowed("https://live.example.org:8443", "", pub));
    assert_false(ws_origin_allowed("https://evil.example.org", "", pub));
    assert_false(ws_origin_allowed("https://live.example.org.evil.net", "", pub));
    assert_false(ws_origin_allowed("null", "", pub));
    assert_false(ws_origin_allowed("", "", pub));
    assert_false(ws_origin_allowed("https://live.example.org", "", ""));
    assert_true(ws_origin_allowed("http://127.0.0.1:8080", "", "http://127.0.0.1:8080"));
    assert_true(ws_origin_allowed("http://localhost", NULL, "http://localhost:80/"));

    /* A list replaces the public URL. */
    const char *list = "https://a.example, http://b.example:8080/ ,https://[::1]:8443";
    assert_true(ws_origin_allowed("https://a.example", list, pub));
    assert_true(ws_origin_allowed("http://b.example:8080", list, pub));
    assert_true(ws_origin_allowed("https://[::1]:8443", list, pub));
    assert_false(ws_origin_allowed("https://live.example.org", list, pub));
    assert_false(ws_origin_allowed("http://b.example", list, pub));
    assert_false(ws_origin_allowed("https://a.example.evil", list, pub));
    assert_true(ws_origin_allowed("https://anything.example", "https://x, *", pub));
}

/* --- framing on memory ------------------------------------------------------ */

struct peer {
    struct ws_conn *ws;
    struct buf wire;     /* what the server wrote */
    struct buf messages; /* text messages it delivered, each followed by '|' */
    int nmessages;
    int closed_code;
    int ncloses;
    bool echo;       /* answer each message from inside the callback */
    bool close_on;   /* close from inside the callback */
};

static int on_out(void *ud, const char *data, size_t len)
{
    struct peer *p = ud;
    return buf_append(&p->wire, data, len);
}

static void on_message(void *ud, const char *data, size_t len)
{
    struct peer *p = ud;
    buf_append(&p->messages, data, len);
    buf_append_char(&p->messages, '|');
    p->nmessages++;
    if (p->echo)
        assert_int_equal(ws_send_text(p->ws, data, len), 0);
    if (p->close_on) {
        /* As c2s does it: its <close/>, then the transport's close. */
        assert_int_equal(ws_send_text(p->ws, "<close/>", 8), 0);
        ws_close(p->ws, 1000, "bye");
        assert_int_equal(ws_send_text(p->ws, "late", 4), -EPIPE);
    }
}

static void on_close(void *ud, int code)
{
    struct peer *p = ud;
    p->closed_code = code;
    p->ncloses++;
}

static void peer_open(struct peer *p, size_t max_message, size_t max_queue)
{
    memset(p, 0, sizeof *p);
    buf_init(&p->wire, 0);
    buf_init(&p->messages, 0);
    struct ws_options o = {.max_message = max_message, .max_queue = max_queue};
    struct ws_handlers h = {.ud = p, .on_message = on_message, .on_close = on_close};
    p->ws = ws_conn_new_mem(&o, &h, on_out, p);
    assert_non_null(p->ws);
}

static void peer_free(struct peer *p)
{
    ws_conn_free(p->ws);
    buf_free(&p->wire);
    buf_free(&p->messages);
}

/* A client frame: masked, as RFC 6455 5.3 requires. */
static size_t client_frame(uint8_t *out, bool fin, int opcode, const void *payload, size_t len,
                           bool mask)
{
    size_t o = 0;
    out[o++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[o++] = (uint8_t)(m | len);
    } else if (len < 65536) {
        out[o++] = m | 126;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)len;
    } else {
        out[o++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[o++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (mask) {
        memcpy(out + o, key, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[o + i] = (uint8_t)(((const uint8_t *)payload)[i] ^ (mask ? key[i % 4] : 0));
    return o + len;
}

static int feed_frame(struct peer *p, bool fin, int opcode, const void *payload, size_t len)
{
    uint8_t *f = malloc(len + 16);
    size_t n = client_frame(f, fin, opcode, payload, len, true);
    int rc = ws_conn_feed(p->ws, (const char *)f, n);
    free(f);
    return rc;
}

struct sframe {
    bool fin;
    int opcode;
    const uint8_t *payload;
    size_t len;
};

/* Parse the next server frame off p->wire (unmasked). 0 or -1 when none. */
static int next_frame(struct peer *p, size_t *off, struct sframe *f)
{
    const uint8_t *d = (const uint8_t *)p->wire.data;
    size_t n = p->wire.len, o = *off;
    if (n - o < 2)
        return -1;
    f->fin = d[o] & 0x80;
    f->opcode = d[o] & 0x0f;
    assert_int_equal(d[o + 1] & 0x80, 0); /* servers never mask */
    uint64_t len = d[o + 1] & 0x7f;
    o += 2;
    if (len == 126) {
        len = ((uint64_t)d[o] << 8) | d[o + 1];
        o += 2;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | d[o + i];
        o += 8;
    }
    assert_true(o + len <= n);
    f->payload = d + o;
    f->len = (size_t)len;
    *off = o + (size_t)len;
    return 0;
}

static int close_code(const struct sframe *f)
{
    assert_int_equal(f->opcode, 0x8);
    if (f->len < 2)
        return 0;
    return (f->payload[0] << 8) | f->payload[1];
}

static void test_text_both_ways(void **state)
{
    struct peer p;
    peer_open(&p, 0, 0);
    const char *open = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
    assert_int_equal(feed_frame(&p, true, 0x1, open, strlen(open)), 0);
    assert_int_equal(p.nmessages, 1);
    assert_int_equal(p.messages.len, strlen(open) + 1);
    assert_memory_equal(p.messages.data, open, strlen(open));

    assert_int_equal(ws_send_text(p.ws, "<open/>", 7), 0);
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_true(f.fin);
    assert_int_equal(f.opcode, 0x1);
    assert_int_equal(f.len, 7);
    assert_memory_equal(f.payload, "<open/>", 7);
    assert_int_equal(next_frame(&p, &off, &f), -1);
    assert_false(ws_conn_closed(p.ws));
    peer_free(&p);
}

static void test_fragments_and_split_reads(void **state)
{
    struct peer p;
    peer_open(&p, 0, 0);
    /* One message in three frames, with a ping between them, delivered one
     * byte at a time. */
    uint8_t wire[256];
    size_t n = 0;
    n += client_frame(wire + n, false, 0x1, "<message>", 9, true);
    n += client_frame(wire + n, false, 0x0, "<body>hi", 8, true);
    n += client_frame(wire + n, true, 0x9, "pp", 2, true);
    n += client_frame(wire + n, true, 0x0, "</body></message>", 17, true);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ws_conn_feed(p.ws, (const char *)wire + i, 1), 0);
    assert_int_equal(p.nmessages, 1);
    assert_memory_equal(p.messages.data, "<message><body>hi</body></message>|", 35);
    /* The ping was answered with its payload. */
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(f.opcode, 0xA);
    assert_int_equal(f.len, 2);
    assert_memory_equal(f.payload, "pp", 2);
    peer_free(&p);
}

static void test_echo_from_callback(void **state)
{
    struct peer p;
    peer_open(&p, 0, 0);
    p.echo = true;
    uint8_t wire[64];
    size_t n = client_frame(wire, true, 0x1, "one", 3, true);
    n += client_frame(wire + n, true, 0x1, "two", 3, true);
    assert_int_equal(ws_conn_feed(p.ws, (const char *)wire, n), 0);
    assert_int_equal(p.nmessages, 2);
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_memory_equal(f.payload, "one", 3);
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_memory_equal(f.payload, "two", 3);
    peer_free(&p);
}

static void test_too_big(void **state)
{
    struct peer p;
    peer_open(&p, 1024, 0);
    char big[2000];
    memset(big, 'a', sizeof big);
    /* In fragments too: the total counts. */
    assert_int_equal(feed_frame(&p, false, 0x1, big, 600), 0);
    feed_frame(&p, true, 0x0, big, 600);
    assert_int_equal(p.nmessages, 0);
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(close_code(&f), 1009);
    /* Nothing more is delivered; the client's answer ends it. */
    feed_frame(&p, true, 0x1, "late", 4);
    assert_int_equal(p.nmessages, 0);
    uint8_t code[2] = {0x03, 0xf1};
    feed_frame(&p, true, 0x8, code, 2);
    assert_true(ws_conn_closed(p.ws));
    assert_int_equal(p.ncloses, 1);
    assert_int_equal(p.closed_code, 1009);
    assert_int_equal(ws_send_text(p.ws, "x", 1), -EPIPE);

    /* The same size in one message is fine under a bigger limit. */
    struct peer q;
    peer_open(&q, 4096, 0);
    assert_int_equal(feed_frame(&q, true, 0x1, big, sizeof big), 0);
    assert_int_equal(q.nmessages, 1);
    assert_int_equal(q.messages.len, sizeof big + 1);
    peer_free(&q);
    peer_free(&p);
}

static void test_close_handshake(void **state)
{
    /* The client closes: the server answers with the same code, and the
     * connection is over. */
    struct peer p;
    peer_open(&p, 0, 0);
    uint8_t code[2] = {0x03, 0xe8};
    assert_true(feed_frame(&p, true, 0x8, code, 2) <= 0);
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(close_code(&f), 1000);
    assert_true(ws_conn_closed(p.ws));
    assert_int_equal(p.closed_code, 1000);
    assert_int_equal(p.ncloses, 1);
    peer_free(&p);

    /* The server closes from inside a callback: its last message goes out
     * first, then the close (wslay would put control frames first), and
     * the client's answer finishes it. */
    peer_open(&p, 0, 0);
    p.close_on = true;
    assert_int_equal(feed_frame(&p, true, 0x1, "</close>", 8), 0);
    feed_frame(&p, true, 0x1, "ignored", 7);
    assert_int_equal(p.nmessages, 1);
    off = 0;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(f.opcode, 0x1);
    assert_memory_equal(f.payload, "<close/>", 8);
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(close_code(&f), 1000);
    assert_memory_equal(f.payload + 2, "bye", 3);
    assert_false(ws_conn_closed(p.ws));
    feed_frame(&p, true, 0x8, code, 2);
    assert_true(ws_conn_closed(p.ws));
    assert_int_equal(p.ncloses, 1);
    peer_free(&p);
}

static void test_protocol_errors(void **state)
{
    /* An unmasked client frame. */
    struct peer p;
    peer_open(&p, 0, 0);
    uint8_t wire[32];
    size_t n = client_frame(wire, true, 0x1, "hi", 2, false);
    ws_conn_feed(p.ws, (const char *)wire, n);
    assert_int_equal(p.nmessages, 0);
    size_t off = 0;
    struct sframe f;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(close_code(&f), 1002);
    peer_free(&p);

    /* A binary message: XMPP over WebSocket is text (RFC 7395 3.2). */
    peer_open(&p, 0, 0);
    feed_frame(&p, true, 0x2, "\x01\x02", 2);
    assert_int_equal(p.nmessages, 0);
    off = 0;
    assert_int_equal(next_frame(&p, &off, &f), 0);
    assert_int_equal(close_code(&f), 1003);
    peer_free(&p);
}

static void test_queue_limit(void **state)
{
    struct peer p;
    peer_open(&p, 0, 4096);
    char big[5000];
    memset(big, 'b', sizeof big);
    assert_int_equal(ws_send_text(p.ws, big, 1000), 0);
    assert_int_equal(ws_send_text(p.ws, big, sizeof big), -ENOBUFS);
    assert_true(ws_conn_closed(p.ws));
    assert_int_equal(p.ncloses, 1);
    assert_int_equal(p.closed_code, 1008);
    peer_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_text_both_ways),
        cmocka_unit_test(test_fragments_and_split_reads),
        cmocka_unit_test(test_echo_from_callback),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_close_handshake),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_queue_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
