/*
 * libFuzzer target: the RTMP chunk stream reader. The input is read twice,
 * whole and in slices whose size the first byte picks; both readings must
 * give the same messages and end the same way, since a real connection's
 * bytes arrive in arbitrary pieces. Small limits make the limit paths
 * reachable. Complete messages are written back with our writer and read
 * again, which must give them back unchanged.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_rtmp_chunk.c
 *        src/ingest/rtmp/chunk.c src/core/buf.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/rtmp/chunk.h"

/* A running digest of the messages seen: type, timestamp, ids, payload. */
struct trace {
    uint64_t h;
    unsigned n;
    int rc;
};

static void mix(struct trace *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        t->h = (t->h ^ b[i]) * 1099511628211ull;
}

static void read_all(const uint8_t *data, size_t size, size_t step, struct trace *t,
                     struct buf *rewrite)
{
    struct rtmp_chunk_limits lim;
    struct rtmp_chunk_reader r;
    struct rtmp_chunk_writer w;
    size_t off = 0;

    rtmp_chunk_limits_default(&lim);
    lim.max_message_size = 1 << 16;
    lim.max_pending = 1 << 17;
    lim.max_streams = 8;
    memset(t, 0, sizeof *t);
    t->h = 14695981039346656037ull;
    rtmp_chunk_writer_init(&w);
    if (rtmp_chunk_reader_init(&r, &lim))
        abort();
    while (off < size) {
        size_t end = step && off + step < size ? off + step : size;
        while (off < end) {
            struct rtmp_msg m;
            size_t used = 0;
            int rc = rtmp_chunk_read(&r, data + off, end - off, &used, &m);
            if (used > end - off)
                abort();
            off += used;
            if (rc < 0) {
                t->rc = rc;
                goto out;
            }
            if (rc == RTMP_CHUNK_MSG) {
                t->n++;
                mix(t, &m.type, sizeof m.type);
                mix(t, &m.timestamp, sizeof m.timestamp);
                mix(t, &m.stream_id, sizeof m.stream_id);
                mix(t, &m.csid, sizeof m.csid);
                mix(t, m.payload, m.len);
                if (rewrite) {
                    if (rtmp_chunk_write(&w, rewrite, m.csid, m.type, m.timestamp, m.stream_id,
                                         m.payload, m.len))
                        abort();
                    /* The reader has applied it; the writer follows, after
                     * writing it at the old size, as a peer would. */
                    if (m.type == RTMP_MSG_SET_CHUNK_SIZE)
                        w.chunk_size = r.chunk_size;
                }
                uint32_t seq;
                (void)rtmp_chunk_ack_due(&r, &seq);
            } else if (off != end) {
                abort();
            }
        }
    }
out:
    rtmp_chunk_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace whole, sliced, again;
    struct buf rewrite;

    if (size < 1)
        return 0;
    size_t step = 1 + data[0] % 64;
    data++;
    size--;

    buf_init(&rewrite, 0);
    read_all(data, size, 0, &whole, &rewrite);
    read_all(data, size, step, &sliced, NULL);
    if (whole.n != sliced.n || whole.h != sliced.h || whole.rc != sliced.rc)
        abort();

    /* Our own writer's output of those messages reads back the same: whole
     * messages with type 0 headers carry everything, and an Abort has no
     * partial message left to drop. */
    read_all((const uint8_t *)rewrite.data, rewrite.len, 0, &again, NULL);
    if (again.rc != 0 || again.n != whole.n || again.h != whole.h)
        abort();
    buf_free(&rewrite);
    return 0;
}
