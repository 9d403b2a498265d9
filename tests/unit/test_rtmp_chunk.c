/*
 * RTMP chunk stream: reassembly across chunk sizes and slicings, header
 * types 0-3, extended timestamps (both encoder styles on continuation
 * chunks), interleaving, Set Chunk Size and Abort, limits, the writer and the
 * protocol control helpers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/rtmp/chunk.h"

/* ---- helpers --------------------------------------------------------- */

struct got {
    uint8_t type;
    uint32_t ts, msid, csid;
    size_t len;
    uint8_t *data;
};

struct collect {
    struct got m[256];
    int n;
};

static void collect_free(struct collect *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->m[i].data);
    c->n = 0;
}

/* Feed p in slices of step bytes (0: all at once); returns 0 or the error. */
static int feed(struct rtmp_chunk_reader *r, const uint8_t *p, size_t len, size_t step,
                struct collect *c)
{
    size_t off = 0;
    if (step == 0)
        step = len ? len : 1;
    while (off < len) {
        size_t end = off + step < len ? off + step : len;
        while (off < end) {
            struct rtmp_msg m;
            size_t used;
            int rc = rtmp_chunk_read(r, p + off, end - off, &used, &m);
            off += used;
            if (rc < 0)
                return rc;
            if (rc == RTMP_CHUNK_MSG) {
                assert_true(c->n < 256);
                struct got *g = &c->m[c->n++];
                g->type = m.type;
                g->ts = m.timestamp;
                g->msid = m.stream_id;
                g->csid = m.csid;
                g->len = m.len;
                g->data = malloc(m.len + 1);
                memcpy(g->data, m.payload, m.len);
            } else {
                assert_int_equal(off, end); /* 0 means everything was used */
            }
        }
    }
    return 0;
}

static void collect_equal(const struct collect *a, const struct collect *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->m[i].type, b->m[i].type);
        assert_int_equal(a->m[i].ts, b->m[i].ts);
        assert_int_equal(a->m[i].msid, b->m[i].msid);
        assert_int_equal(a->m[i].csid, b->m[i].csid);
        assert_int_equal(a->m[i].len, b->m[i].len);
        assert_memory_equal(a->m[i].data, b->m[i].data, a->m[i].len);
    }
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
    return p;
}

/* Hand-made chunks, for what our writer does not produce. */
static void w8(struct buf *b, uint8_t v) { buf_append(b, &v, 1); }
static void w24(struct buf *b, uint32_t v)
{
    w8(b, (uint8_t)(v >> 16));
    w8(b, (uint8_t)(v >> 8));
    w8(b, (uint8_t)v);
}
static void w32(struct buf *b, uint32_t v)
{
    w8(b, (uint8_t)(v >> 24));
    w24(b, v);
}
static void wle32(struct buf *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        w8(b, (uint8_t)(v >> (8 * i)));
}
static void basic(struct buf *b, uint8_t fmt, uint32_t csid)
{
    if (csid < 64) {
        w8(b, (uint8_t)(fmt << 6 | csid));
    } else if (csid < 320) {
        w8(b, (uint8_t)(fmt << 6));
        w8(b, (uint8_t)(csid - 64));
    } else {
        w8(b, (uint8_t)(fmt << 6 | 1));
        w8(b, (uint8_t)((csid - 64) & 0xff));
        w8(b, (uint8_t)((csid - 64) >> 8));
    }
}
static void hdr0(struct buf *b, uint32_t csid, uint32_t ts, uint32_t len, uint8_t type, uint32_t msid)
{
    basic(b, 0, csid);
    w24(b, ts >= 0xFFFFFF ? 0xFFFFFF : ts);
    w24(b, len);
    w8(b, type);
    wle32(b, msid);
    if (ts >= 0xFFFFFF)
        w32(b, ts);
}
static void hdr1(struct buf *b, uint32_t csid, uint32_t delta, uint32_t len, uint8_t type)
{
    basic(b, 1, csid);
    w24(b, delta >= 0xFFFFFF ? 0xFFFFFF : delta);
    w24(b, len);
    w8(b, type);
    if (delta >= 0xFFFFFF)
        w32(b, delta);
}
static void hdr2(struct buf *b, uint32_t csid, uint32_t delta)
{
    basic(b, 2, csid);
    w24(b, delta >= 0xFFFFFF ? 0xFFFFFF : delta);
    if (delta >= 0xFFFFFF)
        w32(b, delta);
}
static void data(struct buf *b, const uint8_t *p, size_t n) { buf_append(b, p, n); }

static struct rtmp_chunk_reader *new_reader(const struct rtmp_chunk_limits *lim)
{
    struct rtmp_chunk_reader *r = malloc(sizeof *r);
    assert_int_equal(rtmp_chunk_reader_init(r, lim), 0);
    return r;
}

static void del_reader(struct rtmp_chunk_reader *r)
{
    rtmp_chunk_reader_free(r);
    free(r);
}

/* ---- tests ----------------------------------------------------------- */

/* Writer -> reader for every chunk size 1..4096 and a spread of message
 * sizes, the chunk size announced with Set Chunk Size as a peer would. */
static void test_roundtrip_chunk_sizes(void **state)
{
    static const size_t sizes[] = {0, 1, 2, 127, 128, 129, 1000, 4095, 4096, 4097, 9000};
    uint8_t *payload = pattern(9000, 1);

    for (uint32_t cs = 1; cs <= 4096; cs++) {
        struct rtmp_chunk_writer w;
        struct rtmp_chunk_reader *r = new_reader(NULL);
        struct buf out;
        struct collect c = {0};

        buf_init(&out, 0);
        rtmp_chunk_writer_init(&w);
        assert_int_equal(rtmp_chunk_write_set_chunk_size(&w, &out, cs), 0);
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            /* Only a few sizes for the smallest chunks, to keep it quick. */
            if (cs < 64 && sizes[i] > 1000)
                continue;
            assert_int_equal(rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, (uint32_t)(i * 40 + cs),
                                              1, payload, sizes[i]),
                             0);
        }
        assert_int_equal(feed(r, (uint8_t *)out.data, out.len, 0, &c), 0);
        assert_int_equal(r->chunk_size, cs);
        assert_int_equal(c.m[0].type, RTMP_MSG_SET_CHUNK_SIZE);
        int k = 1;
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            if (cs < 64 && sizes[i] > 1000)
                continue;
            assert_true(k < c.n);
            assert_int_equal(c.m[k].len, sizes[i]);
            assert_int_equal(c.m[k].ts, i * 40 + cs);
            assert_int_equal(c.m[k].msid, 1);
            assert_int_equal(c.m[k].csid, 6);
            assert_memory_equal(c.m[k].data, payload, sizes[i]);
            k++;
        }
        assert_int_equal(k, c.n);
        assert_int_equal(r->pending, 0);
        collect_free(&c);
        buf_free(&out);
        del_reader(r);
    }
    free(payload);
}

/* The same bytes fed whole, byte by byte and in odd slices give the same
 * messages. */
static void test_slicing_is_invisible(void **state)
{
    struct rtmp_chunk_writer w;
    struct buf out;
    uint8_t *big = pattern(70000, 2);
    uint32_t csids[] = {3, 4, 6, 63, 64, 200, 319, 320, 1000, 65599};

    buf_init(&out, 0);
    rtmp_chunk_writer_init(&w);
    for (int i = 0; i < 10; i++)
        assert_int_equal(rtmp_chunk_write(&w, &out, csids[i], RTMP_MSG_AUDIO, (uint32_t)i * 23, 1,
                                          big + i, 300 + (size_t)i * 50),
                         0);
    assert_int_equal(rtmp_chunk_write_set_chunk_size(&w, &out, 4096), 0);
    assert_int_equal(rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, 0x1234567, 1, big, 70000), 0);
    assert_int_equal(rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, 0xFFFFFF, 1, big, 5000), 0);
    assert_int_equal(rtmp_chunk_write(&w, &out, 5, RTMP_MSG_DATA_AMF0, 5, 1, big, 0), 0);

    struct collect whole = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);
    assert_int_equal(feed(r, (uint8_t *)out.data, out.len, 0, &whole), 0);
    del_reader(r);
    assert_int_equal(whole.n, 14);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(whole.m[i].csid, csids[i]);
        assert_int_equal(whole.m[i].len, 300 + i * 50);
    }
    assert_int_equal(whole.m[11].ts, 0x1234567);
    assert_int_equal(whole.m[11].len, 70000);
    assert_int_equal(whole.m[12].ts, 0xFFFFFF);
    assert_int_equal(whole.m[13].len, 0);

    size_t steps[] = {1, 2, 3, 5, 7, 11, 13, 17, 127, 128, 129, 4095, 4097};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        struct collect sliced = {0};
        r = new_reader(NULL);
        assert_int_equal(feed(r, (uint8_t *)out.data, out.len, steps[s], &sliced), 0);
        collect_equal(&whole, &sliced);
        collect_free(&sliced);
        del_reader(r);
    }
    collect_free(&whole);
    buf_free(&out);
    free(big);
}

/* Two chunk streams whose chunks alternate. */
static void test_interleaved(void **state)
{
    uint8_t *a = pattern(300, 3), *v = pattern(300, 4);
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);

    buf_init(&b, 0);
    hdr0(&b, 4, 100, 300, RTMP_MSG_AUDIO, 1);
    data(&b, a, 128);
    hdr0(&b, 6, 90, 300, RTMP_MSG_VIDEO, 1);
    data(&b, v, 128);
    basic(&b, 3, 4);
    data(&b, a + 128, 128);
    basic(&b, 3, 6);
    data(&b, v + 128, 128);
    basic(&b, 3, 6); /* video finishes first */
    data(&b, v + 256, 44);
    basic(&b, 3, 4);
    data(&b, a + 256, 44);

    for (size_t step = 0; step < 4; step++) {
        r->chunk_size = 128;
        assert_int_equal(feed(r, (uint8_t *)b.data, b.len, step, &c), 0);
        assert_int_equal(c.n, 2);
        assert_int_equal(c.m[0].csid, 6);
        assert_int_equal(c.m[0].ts, 90);
        assert_memory_equal(c.m[0].data, v, 300);
        assert_int_equal(c.m[1].csid, 4);
        assert_int_equal(c.m[1].ts, 100);
        assert_memory_equal(c.m[1].data, a, 300);
        collect_free(&c);
        del_reader(r);
        r = new_reader(NULL);
    }
    del_reader(r);
    buf_free(&b);
    free(a);
    free(v);
}

/* Types 1, 2 and 3 inherit what they leave out; a type 3 that starts a
 * message adds the previous delta, and after a type 0 the delta is the type
 * 0 timestamp (RTMP 1.0, 5.3.1.2.4). */
static void test_header_reuse(void **state)
{
    uint8_t *p = pattern(64, 5);
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);

    buf_init(&b, 0);
    hdr0(&b, 5, 1000, 10, RTMP_MSG_VIDEO, 7);
    data(&b, p, 10);
    hdr1(&b, 5, 33, 20, RTMP_MSG_AUDIO);
    data(&b, p, 20);
    hdr2(&b, 5, 40);
    data(&b, p + 1, 20);
    basic(&b, 3, 5);
    data(&b, p + 2, 20);
    basic(&b, 3, 5);
    data(&b, p + 3, 20);
    /* A new chunk stream: type 0 then a type 3 new message. */
    hdr0(&b, 9, 26, 4, RTMP_MSG_AUDIO, 1);
    data(&b, p, 4);
    basic(&b, 3, 9);
    data(&b, p, 4);
    basic(&b, 3, 9);
    data(&b, p, 4);

    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 1, &c), 0);
    assert_int_equal(c.n, 8);
    uint32_t ts[] = {1000, 1033, 1073, 1113, 1153, 26, 52, 78};
    size_t len[] = {10, 20, 20, 20, 20, 4, 4, 4};
    uint8_t type[] = {9, 8, 8, 8, 8, 8, 8, 8};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(c.m[i].ts, ts[i]);
        assert_int_equal(c.m[i].len, len[i]);
        assert_int_equal(c.m[i].type, type[i]);
        assert_int_equal(c.m[i].msid, i < 5 ? 7 : 1);
    }
    assert_memory_equal(c.m[3].data, p + 2, 20);
    collect_free(&c);
    del_reader(r);
    buf_free(&b);
    free(p);
}

/* librtmp starts a ping on a fresh csid 2 with a type 1 header (SRS notes
 * it); message stream 0 is implied. Type 2 or 3 on a fresh csid is an error. */
static void test_fresh_stream_rules(void **state)
{
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);
    const uint8_t ping[6] = {0, 6, 0, 0, 0x0d, 0x0f};

    buf_init(&b, 0);
    hdr1(&b, 2, 0, 6, RTMP_MSG_USER_CONTROL);
    data(&b, ping, 6);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.m[0].msid, 0);
    struct rtmp_user_control uc;
    assert_int_equal(rtmp_user_control_parse(c.m[0].data, c.m[0].len, &uc), 0);
    assert_int_equal(uc.event, RTMP_UC_PING_REQUEST);
    assert_int_equal(uc.value, 0x0d0f);
    collect_free(&c);
    del_reader(r);

    for (uint8_t fmt = 2; fmt <= 3; fmt++) {
        r = new_reader(NULL);
        buf_reset(&b);
        basic(&b, fmt, 4);
        w24(&b, 0);
        w8(&b, 0);
        assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EPROTO);
        assert_non_null(strstr(r->error, "csid 4"));
        del_reader(r);
    }
    buf_free(&b);
}

/* Extended timestamp, encoder repeats it on type 3 continuation chunks (FMS,
 * ffmpeg, OBS): our writer does that. */
static void test_ext_ts_repeated(void **state)
{
    struct rtmp_chunk_writer w;
    struct buf out;
    uint8_t *p = pattern(1000, 6);

    buf_init(&out, 0);
    rtmp_chunk_writer_init(&w);
    assert_int_equal(rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, 0x7FFFFFF0, 1, p, 1000), 0);
    /* 1 + 11 + 4 header, then 7 continuation chunks of 1 + 4 header. */
    assert_int_equal(out.len, 16 + 1000 + 7 * 5);
    assert_int_equal((uint8_t)out.data[16 + 128], 0xC6);
    assert_memory_equal(out.data + 16 + 128 + 1, "\x7f\xff\xff\xf0", 4);

    for (size_t step = 0; step <= 3; step++) {
        struct collect c = {0};
        struct rtmp_chunk_reader *r = new_reader(NULL);
        assert_int_equal(feed(r, (uint8_t *)out.data, out.len, step, &c), 0);
        assert_int_equal(c.n, 1);
        assert_int_equal(c.m[0].ts, 0x7FFFFFF0);
        assert_int_equal(c.m[0].len, 1000);
        assert_memory_equal(c.m[0].data, p, 1000);
        collect_free(&c);
        del_reader(r);
    }
    buf_free(&out);
    free(p);
}

/* Extended timestamp, encoder does not repeat it on continuation chunks
 * (older librtmp): the four bytes after the type 3 header are payload. Also
 * a last chunk shorter than four bytes, followed by another chunk stream. */
static void test_ext_ts_not_repeated(void **state)
{
    uint8_t *p = pattern(300, 7);
    struct buf b;
    const uint32_t ts = 0x01000000;

    buf_init(&b, 0);
    hdr0(&b, 6, ts, 258, RTMP_MSG_VIDEO, 1);
    data(&b, p, 128);
    basic(&b, 3, 6);
    data(&b, p + 128, 128);
    basic(&b, 3, 6);
    data(&b, p + 256, 2); /* shorter than the field we peek for */
    hdr0(&b, 4, 5, 3, RTMP_MSG_AUDIO, 1);
    data(&b, p, 3);
    /* A type 1 with an extended delta, continued without repeating it. */
    hdr1(&b, 6, 0x01000001, 200, RTMP_MSG_VIDEO);
    data(&b, p, 128);
    basic(&b, 3, 6);
    data(&b, p + 128, 72);

    for (size_t step = 0; step <= 5; step++) {
        struct collect c = {0};
        struct rtmp_chunk_reader *r = new_reader(NULL);
        assert_int_equal(feed(r, (uint8_t *)b.data, b.len, step, &c), 0);
        assert_int_equal(c.n, 3);
        assert_int_equal(c.m[0].ts, ts);
        assert_int_equal(c.m[0].len, 258);
        assert_memory_equal(c.m[0].data, p, 258);
        assert_int_equal(c.m[1].csid, 4);
        assert_int_equal(c.m[1].ts, 5);
        assert_memory_equal(c.m[1].data, p, 3);
        assert_int_equal(c.m[2].ts, ts + 0x01000001);
        assert_memory_equal(c.m[2].data, p, 200);
        assert_int_equal(r->bytes_in, b.len);
        collect_free(&c);
        del_reader(r);
    }
    buf_free(&b);
    free(p);
}

/* A type 3 header starting a new message after an extended one carries the
 * field, and it is the delta to add. */
static void test_ext_ts_type3_new_message(void **state)
{
    uint8_t *p = pattern(16, 8);
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);

    buf_init(&b, 0);
    hdr0(&b, 7, 10, 8, RTMP_MSG_AUDIO, 1);
    data(&b, p, 8);
    hdr2(&b, 7, 0x01000000);
    data(&b, p, 8);
    basic(&b, 3, 7);
    w32(&b, 0x01000000);
    data(&b, p + 8, 8);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 1, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.m[0].ts, 10);
    assert_int_equal(c.m[1].ts, 10 + 0x01000000);
    assert_int_equal(c.m[2].ts, 10 + 2 * 0x01000000);
    assert_memory_equal(c.m[2].data, p + 8, 8);
    collect_free(&c);
    del_reader(r);
    buf_free(&b);
    free(p);
}

/* Set Chunk Size in the middle of a stream, between two chunk streams'
 * partial messages; and the bounds it is held to. */
static void test_set_chunk_size(void **state)
{
    uint8_t *p = pattern(5000, 9);
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);

    buf_init(&b, 0);
    hdr0(&b, 4, 0, 200, RTMP_MSG_AUDIO, 1);
    data(&b, p, 128); /* at the default 128 */
    hdr0(&b, 2, 0, 4, RTMP_MSG_SET_CHUNK_SIZE, 0);
    w32(&b, 1000);
    basic(&b, 3, 4);
    data(&b, p + 128, 72); /* the rest fits in one chunk now */
    hdr0(&b, 6, 0, 2500, RTMP_MSG_VIDEO, 1);
    data(&b, p, 1000);
    basic(&b, 3, 6);
    data(&b, p + 1000, 1000);
    basic(&b, 3, 6);
    data(&b, p + 2000, 500);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 3, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.m[0].type, RTMP_MSG_SET_CHUNK_SIZE);
    assert_int_equal(r->chunk_size, 1000);
    assert_memory_equal(c.m[1].data, p, 200);
    assert_memory_equal(c.m[2].data, p, 2500);
    collect_free(&c);
    del_reader(r);

    /* 0, the top bit, and above the configured limit are refused; above
     * 0xFFFFFF (up to 0x7FFFFFFF) reads as 0xFFFFFF. */
    struct rtmp_chunk_limits lim;
    rtmp_chunk_limits_default(&lim);
    lim.max_chunk_size = 65536;
    lim.min_chunk_size = 128;
    uint32_t vals[] = {0, 0x80000000u, 65537, 127, 0x7FFFFFFF, 128, 65536};
    int want[] = {-ERANGE, -ERANGE, -ERANGE, -ERANGE, -ERANGE, 0, 0};
    for (int i = 0; i < 7; i++) {
        r = new_reader(&lim);
        buf_reset(&b);
        hdr0(&b, 2, 0, 4, RTMP_MSG_SET_CHUNK_SIZE, 0);
        w32(&b, vals[i]);
        assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), want[i]);
        if (want[i] == 0)
            assert_int_equal(r->chunk_size, vals[i]);
        else
            assert_non_null(strstr(r->error, "Set Chunk Size"));
        collect_free(&c);
        del_reader(r);
    }
    r = new_reader(NULL);
    buf_reset(&b);
    hdr0(&b, 2, 0, 4, RTMP_MSG_SET_CHUNK_SIZE, 0);
    w32(&b, 0x7FFFFFFF);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), 0);
    assert_int_equal(r->chunk_size, 0xFFFFFF);
    collect_free(&c);
    /* A short Set Chunk Size is a protocol error. */
    buf_reset(&b);
    hdr0(&b, 2, 0, 2, RTMP_MSG_SET_CHUNK_SIZE, 0);
    w8(&b, 0);
    w8(&b, 1);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EPROTO);
    del_reader(r);
    buf_free(&b);
    free(p);
}

/* Abort drops the partial message of the named chunk stream, which may then
 * start over with a type 0 header. */
static void test_abort(void **state)
{
    uint8_t *p = pattern(300, 10);
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);

    buf_init(&b, 0);
    hdr0(&b, 4, 0, 300, RTMP_MSG_AUDIO, 1);
    data(&b, p, 128);
    hdr0(&b, 2, 0, 4, RTMP_MSG_ABORT, 0);
    w32(&b, 4);
    hdr0(&b, 4, 50, 10, RTMP_MSG_AUDIO, 1);
    data(&b, p + 100, 10);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 1, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.m[0].type, RTMP_MSG_ABORT);
    assert_int_equal(c.m[1].ts, 50);
    assert_int_equal(c.m[1].len, 10);
    assert_memory_equal(c.m[1].data, p + 100, 10);
    assert_int_equal(r->pending, 0);
    collect_free(&c);
    del_reader(r);

    /* Without the Abort, a type 0 inside a message is a violation. */
    r = new_reader(NULL);
    buf_reset(&b);
    hdr0(&b, 4, 0, 300, RTMP_MSG_AUDIO, 1);
    data(&b, p, 128);
    hdr0(&b, 4, 50, 10, RTMP_MSG_AUDIO, 1);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EPROTO);
    assert_non_null(strstr(r->error, "type 0"));
    /* And the reader stays failed. */
    struct rtmp_msg m;
    size_t used;
    assert_int_equal(rtmp_chunk_read(r, p, 10, &used, &m), -EPROTO);
    assert_int_equal(used, 0);
    del_reader(r);

    /* A type 1 that changes the length mid-message is one too. */
    r = new_reader(NULL);
    buf_reset(&b);
    hdr0(&b, 4, 0, 300, RTMP_MSG_AUDIO, 1);
    data(&b, p, 128);
    hdr1(&b, 4, 0, 301, RTMP_MSG_AUDIO);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EPROTO);
    del_reader(r);
    buf_free(&b);
    free(p);
}

static void test_limits(void **state)
{
    struct rtmp_chunk_limits lim;
    struct buf b;
    struct collect c = {0};
    struct rtmp_chunk_reader *r;
    uint8_t *p = pattern(5000, 11);

    rtmp_chunk_limits_default(&lim);
    assert_int_equal(lim.max_message_size, 16 * 1024 * 1024);
    assert_int_equal(lim.max_streams, 64);

    /* A message over the size limit is refused at its header. */
    lim.max_message_size = 1000;
    lim.max_pending = 1500;
    lim.max_streams = 3;
    r = new_reader(&lim);
    buf_init(&b, 0);
    hdr0(&b, 4, 0, 1001, RTMP_MSG_VIDEO, 1);
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EMSGSIZE);
    assert_non_null(strstr(r->error, "1001"));
    del_reader(r);

    /* Exactly the limit is fine. */
    r = new_reader(&lim);
    buf_reset(&b);
    hdr0(&b, 4, 0, 1000, RTMP_MSG_VIDEO, 1);
    for (int i = 0; i < 8; i++) {
        if (i)
            basic(&b, 3, 4);
        data(&b, p, i < 7 ? 128 : 1000 - 7 * 128);
    }
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), 0);
    assert_int_equal(c.n, 1);
    collect_free(&c);
    del_reader(r);

    /* Partial messages together may not exceed max_pending. */
    r = new_reader(&lim);
    buf_reset(&b);
    for (uint32_t cs = 4; cs <= 6; cs++) {
        hdr0(&b, cs, 0, 1000, RTMP_MSG_VIDEO, 1);
        data(&b, p, 128);
    }
    for (int i = 0; i < 4; i++)
        for (uint32_t cs = 4; cs <= 6; cs++) {
            basic(&b, 3, cs);
            data(&b, p, 128);
        }
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -EMSGSIZE);
    assert_non_null(strstr(r->error, "unfinished"));
    del_reader(r);

    /* No more chunk streams than the limit. */
    r = new_reader(&lim);
    buf_reset(&b);
    for (uint32_t cs = 3; cs <= 6; cs++) {
        hdr0(&b, cs, 0, 1, RTMP_MSG_AUDIO, 1);
        data(&b, p, 1);
    }
    assert_int_equal(feed(r, (uint8_t *)b.data, b.len, 0, &c), -ENOSPC);
    assert_int_equal(c.n, 3);
    collect_free(&c);
    del_reader(r);

    /* The wire cannot say more than 0xFFFFFF; the writer refuses more. */
    struct rtmp_chunk_writer w;
    rtmp_chunk_writer_init(&w);
    assert_int_equal(rtmp_chunk_write(&w, &b, 6, 9, 0, 1, p, 0x1000000), -EINVAL);
    assert_int_equal(rtmp_chunk_write(&w, &b, 1, 9, 0, 1, p, 1), -EINVAL);
    assert_int_equal(rtmp_chunk_write(&w, &b, 65600, 9, 0, 1, p, 1), -EINVAL);
    buf_free(&b);
    free(p);
}

static void test_take_payload(void **state)
{
    struct rtmp_chunk_writer w;
    struct buf out, mine;
    struct rtmp_chunk_reader *r = new_reader(NULL);
    struct rtmp_msg m;
    size_t used;
    uint8_t *p = pattern(3000, 12);

    buf_init(&out, 0);
    rtmp_chunk_writer_init(&w);
    rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, 1, 1, p, 3000);
    rtmp_chunk_write(&w, &out, 6, RTMP_MSG_VIDEO, 2, 1, p + 1, 2000);
    assert_int_equal(rtmp_chunk_take_payload(r, &mine), -EINVAL);
    assert_int_equal(rtmp_chunk_read(r, (uint8_t *)out.data, out.len, &used, &m), RTMP_CHUNK_MSG);
    assert_int_equal(rtmp_chunk_take_payload(r, &mine), 0);
    assert_int_equal(mine.len, 3000);
    assert_memory_equal(mine.data, p, 3000);
    size_t off = used;
    assert_int_equal(rtmp_chunk_read(r, (uint8_t *)out.data + off, out.len - off, &used, &m),
                     RTMP_CHUNK_MSG);
    assert_int_equal(m.len, 2000);
    assert_memory_equal(m.payload, p + 1, 2000);
    assert_memory_equal(mine.data, p, 3000); /* ours, untouched */
    buf_free(&mine);
    buf_free(&out);
    del_reader(r);
    free(p);
}

static void test_ack_window(void **state)
{
    struct rtmp_chunk_writer w;
    struct buf out;
    struct collect c = {0};
    struct rtmp_chunk_reader *r = new_reader(NULL);
    uint8_t *p = pattern(1000, 13);
    uint32_t seq;

    buf_init(&out, 0);
    rtmp_chunk_writer_init(&w);
    assert_false(rtmp_chunk_ack_due(r, &seq)); /* no window yet */
    rtmp_chunk_write_window_ack_size(&w, &out, 2500);
    for (int i = 0; i < 3; i++)
        rtmp_chunk_write(&w, &out, 4, RTMP_MSG_AUDIO, (uint32_t)i, 1, p, 1000);
    size_t first = 16; /* the window message alone */
    assert_int_equal(feed(r, (uint8_t *)out.data, first, 0, &c), 0);
    assert_int_equal(r->ack_window, 2500);
    assert_false(rtmp_chunk_ack_due(r, &seq));
    assert_int_equal(feed(r, (uint8_t *)out.data + first, out.len - first, 0, &c), 0);
    assert_true(out.len >= 2500);
    assert_true(rtmp_chunk_ack_due(r, &seq));
    assert_int_equal(seq, out.len);
    assert_false(rtmp_chunk_ack_due(r, &seq)); /* window starts over */
    collect_free(&c);
    buf_free(&out);
    del_reader(r);
    free(p);
}

/* Exact bytes of the protocol control messages. */
static void test_control_writers(void **state)
{
    struct rtmp_chunk_writer w;
    struct buf out;
    buf_init(&out, 0);
    rtmp_chunk_writer_init(&w);

    assert_int_equal(rtmp_chunk_write_set_chunk_size(&w, &out, 4096), 0);
    assert_int_equal(w.chunk_size, 4096);
    assert_int_equal(out.len, 16);
    assert_memory_equal(out.data, "\x02\0\0\0\0\0\x04\x01\0\0\0\0\0\0\x10\0", 16);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_window_ack_size(&w, &out, 2500000), 0);
    assert_memory_equal(out.data, "\x02\0\0\0\0\0\x04\x05\0\0\0\0\x00\x26\x25\xa0", 16);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_set_peer_bandwidth(&w, &out, 2500000, RTMP_BW_DYNAMIC), 0);
    assert_memory_equal(out.data, "\x02\0\0\0\0\0\x05\x06\0\0\0\0\x00\x26\x25\xa0\x02", 17);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_ack(&w, &out, 0x01020304), 0);
    assert_memory_equal(out.data + 7, "\x03\0\0\0\0\x01\x02\x03\x04", 9);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_stream_begin(&w, &out, 1), 0);
    assert_memory_equal(out.data, "\x02\0\0\0\0\0\x06\x04\0\0\0\0\0\0\0\0\0\x01", 18);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_ping_response(&w, &out, 0xdeadbeef), 0);
    assert_memory_equal(out.data + 12, "\0\x07\xde\xad\xbe\xef", 6);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_ping_request(&w, &out, 5), 0);
    assert_memory_equal(out.data + 12, "\0\x06\0\0\0\x05", 6);
    buf_reset(&out);
    assert_int_equal(rtmp_chunk_write_abort(&w, &out, 6), 0);
    assert_int_equal(rtmp_chunk_write_set_chunk_size(&w, &out, 0), -EINVAL);
    assert_int_equal(w.chunk_size, 4096);

    /* A refused append leaves the buffer as it was. */
    struct buf small;
    uint8_t big[300] = {0};
    buf_init(&small, 100);
    assert_int_equal(rtmp_chunk_write(&w, &small, 3, 20, 0, 0, big, sizeof big), -EMSGSIZE);
    assert_int_equal(small.len, 0);
    buf_free(&small);
    buf_free(&out);
}

static void test_user_control_parse(void **state)
{
    struct rtmp_user_control uc;
    const uint8_t buflen[10] = {0, 3, 0, 0, 0, 1, 0, 0, 0x0b, 0xb8};
    assert_int_equal(rtmp_user_control_parse(buflen, 10, &uc), 0);
    assert_int_equal(uc.event, RTMP_UC_SET_BUFFER_LENGTH);
    assert_int_equal(uc.value, 1);
    assert_int_equal(uc.value2, 3000);
    assert_int_equal(rtmp_user_control_parse(buflen, 6, &uc), -EBADMSG);
    assert_int_equal(rtmp_user_control_parse(buflen, 1, &uc), -EBADMSG);
    const uint8_t ping[6] = {0, 6, 0, 0, 1, 0};
    assert_int_equal(rtmp_user_control_parse(ping, 6, &uc), 0);
    assert_int_equal(uc.event, RTMP_UC_PING_REQUEST);
    assert_int_equal(uc.value, 256);
    assert_int_equal(rtmp_user_control_parse(ping, 5, &uc), -EBADMSG);
    const uint8_t odd[2] = {0, 31}; /* Flash's buffer empty, no data */
    assert_int_equal(rtmp_user_control_parse(odd, 2, &uc), 0);
    assert_int_equal(uc.event, 31);

    struct rtmp_msg m = {.payload = ping, .len = 3};
    uint32_t v;
    assert_int_equal(rtmp_control_parse_u32(&m, &v), -EBADMSG);
    m.len = 4;
    assert_int_equal(rtmp_control_parse_u32(&m, &v), 0);
    assert_int_equal(v, 0x60000);
}

/* Random bytes never crash the reader, and slicing never changes what it
 * makes of them (same messages, same error). */
static void test_garbage(void **state)
{
    uint32_t s = 99;
    uint8_t junk[2048];
    for (int round = 0; round < 300; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            s = s * 1664525u + 1013904223u;
            junk[i] = (uint8_t)(s >> 24);
        }
        /* Small lengths so that messages complete now and then. */
        for (size_t i = 0; i < sizeof junk; i += 37)
            junk[i] &= 0xC7;
        struct collect a = {0}, b = {0};
        struct rtmp_chunk_reader *r1 = new_reader(NULL), *r2 = new_reader(NULL);
        int rc1 = feed(r1, junk, sizeof junk, 0, &a);
        int rc2 = feed(r2, junk, sizeof junk, 1 + round % 5, &b);
        assert_int_equal(rc1, rc2);
        collect_equal(&a, &b);
        collect_free(&a);
        collect_free(&b);
        del_reader(r1);
        del_reader(r2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_chunk_sizes),
        cmocka_unit_test(test_slicing_is_invisible),
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_header_reuse),
        cmocka_unit_test(test_fresh_stream_rules),
        cmocka_unit_test(test_ext_ts_repeated),
        cmocka_unit_test(test_ext_ts_not_repeated),
        cmocka_unit_test(test_ext_ts_type3_new_message),
        cmocka_unit_test(test_set_chunk_size),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_take_payload),
        cmocka_unit_test(test_ack_window),
        cmocka_unit_test(test_control_writers),
        cmocka_unit_test(test_user_control_parse),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
