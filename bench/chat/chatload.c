/*
 * chatload: a load generator for one XMPP MUC room, for bench/chat.
 *
 * Single thread, libuv + OpenSSL (memory BIOs). Opens N client streams to a
 * c2s port (at most --concurrency being set up at a time), and on each:
 * stream header, STARTTLS (no certificate check), stream restart, SASL
 * ANONYMOUS, restart, resource binding, then a join of ROOM with a unique
 * nick and <history maxstanzas='0'/>. The first --senders streams then send
 * groupchat messages at a steady total rate, spread evenly over the senders
 * (a 1 ms timer sends what is due); each body carries the send time
 * (CLOCK_MONOTONIC, the same clock the receivers read, one machine), so
 * every other occupant records the delivery latency of every message.
 *
 * No XML parser: the replies expected during set-up are recognised by
 * markers (</stream:features>, <proceed, <success, the bind result, the
 * self-presence status 110), and once joined only <body>lt ...</body> is
 * looked for. That is enough against servers that behave, and keeps the
 * client's cost per delivery small next to the server's.
 *
 * For each rate in --rates: --warmup seconds, then --window seconds
 * measured, then up to --drain seconds for the window's messages to
 * arrive. A delivery that never arrives counts as infinitely late in the
 * percentiles. Server CPU (utime + stime of --pid, from /proc/PID/stat)
 * is read at both ends of the window; VmRSS before the first connection and
 * after the last join gives the memory per occupant. The sweep stops at the
 * first rate the server cannot keep up with (p99 over --slow-ms or under 99 %
 * delivered). One JSON object per line on stdout; progress on stderr.
 *
 * Build: cc -O2 -o chatload chatload.c -luv -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

enum state {
    ST_CONNECTING,
    ST_FEATURES1,  /* waiting for the first features (starttls) */
    ST_PROCEED,
    ST_HANDSHAKE,
    ST_FEATURES2,  /* after TLS: mechanisms */
    ST_SASL,
    ST_FEATURES3,  /* after SASL: bind */
    ST_BIND,
    ST_JOIN,
    ST_JOINED,
    ST_DEAD,
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    int idx;
    enum state st;
    SSL *ssl;
    BIO *rbio, *wbio;
    char *rx;
    size_t rxlen, rxcap;
    bool counted_done;
};

struct wreq {
    uv_write_t w;
    char *data;
};

/* --- options ------------------------------------------------------------------ */

static const char *o_addr = "127.0.0.1";
static int o_port;
static const char *o_host = "guest.localhost";
static const char *o_room;
static int o_n = 1000;
static int o_senders = 10;
static double o_rates[32];
static int o_nrates;
static double o_window = 10, o_warmup = 2, o_drain = 3;
static int o_conc = 64;
static int o_pid;
static double o_deadline = 600;
static double o_slow_ms = 1000;
static double o_join_deadline = 0; /* s; 0: none. Then go on with those seated. */
static int o_body_pad = 40;
static int o_join = 1; /* 0: stop after binding (the cost of a bare stream) */

/* --- state ----------------------------------------------------------------------- */

static uv_loop_t *loop;
static SSL_CTX *ctx;
static struct conn *conns;
static int next_conn, inflight, joined, failed, dropped_after_join;
static uint64_t t_start_ns, t_join_start_ns, t_join_end_ns;
static long rss_before_kib, rss_after_kib;
static char readbuf[65536], plainbuf[65536];

/* latency histogram: 10 us buckets up to 10 s, one more for later */
#define HBUCKET_US 10
#define HBUCKETS 1000000
static uint32_t *hist;
static uint64_t hist_n, hist_over;
static bool measuring;
static uint64_t win_start_ns, win_end_ns;
static uint64_t win_sent;
static uint64_t total_recv;

/* sending */
static uv_timer_t send_timer, phase_timer, deadline_timer, join_timer;
static bool join_cut;
static double cur_rate;
static uint64_t send_epoch_ns, send_count;
static bool sending;
static uint32_t seqs[64];
static int rate_i;
static int phase; /* 0 warmup, 1 window, 2 drain */
static double cpu_start, self_cpu_start;
static uint64_t drain_until_ns;

static void conn_fail(struct conn *c, const char *why);
static void start_next_connections(void);
static void start_rates(void);

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chatload: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t now_ns(void) { return uv_hrtime(); }

/* --- /proc ---------------------------------------------------------------------- */

static double proc_cpu_s(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long ut = 0, st = 0;
    /* after ") ": state is field 3; utime 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long proc_rss_kib(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long v = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* --- output ------------------------------------------------------------------------ */

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    free(r->data);
    free(r);
}

static void raw_send(struct conn *c, const void *data, size_t len)
{
    if (c->st == ST_DEAD || len == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            conn_fail(c, uv_strerror(n));
            return;
        }
        if ((size_t)n == len)
            return;
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    struct wreq *r = malloc(sizeof *r);
    r->data = malloc(len);
    memcpy(r->data, data, len);
    b = uv_buf_init(r->data, (unsigned)len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(r->data);
        free(r);
        conn_fail(c, "write failed");
    }
}

static void tls_flush(struct conn *c)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(c->wbio, buf, sizeof buf)) > 0)
        raw_send(c, buf, (size_t)n);
}

static void send_text(struct conn *c, const char *s, size_t len)
{
    if (c->st == ST_DEAD)
        return;
    if (c->ssl) {
        if (SSL_write(c->ssl, s, (int)len) <= 0) {
            conn_fail(c, "SSL_write failed");
            return;
        }
        tls_flush(c);
    } else {
        raw_send(c, s, len);
    }
}

static void send_str(struct conn *c, const char *s) { send_text(c, s, strlen(s)); }

static void send_header(struct conn *c)
{
    char h[512];
    snprintf(h, sizeof h,
             "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
             o_host);
    send_str(c, h);
}

/* --- lifetime ------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) { (void)h; }

static void conn_fail(struct conn *c, const char *why)
{
    if (c->st == ST_DEAD)
        return;
    enum state was = c->st;
    c->st = ST_DEAD;
    if (was == ST_JOINED) {
        dropped_after_join++;
        if (dropped_after_join <= 5)
            logf_("stream %d dropped after joining: %s", c->idx, why);
    } else {
        failed++;
        inflight--;
        if (failed <= 5 && !join_cut) {
            int keep = c->rxlen > 300 ? 300 : (int)c->rxlen;
            logf_("stream %d failed in state %d: %s; last input: %.*s", c->idx, (int)was, why,
                  keep, c->rx ? c->rx + c->rxlen - keep : "");
        }
    }
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (was != ST_JOINED)
        start_next_connections();
}

/* --- input ------------------------------------------------------------------------------ */

static int rx_append(struct conn *c, const char *data, size_t len)
{
    if (c->rxlen + len + 1 > c->rxcap) {
        size_t cap = c->rxcap ? c->rxcap : 1024;
        while (cap < c->rxlen + len + 1)
            cap *= 2;
        if (cap > (16u << 20))
            return -1;
        char *p = realloc(c->rx, cap);
        if (!p)
            return -1;
        c->rx = p;
        c->rxcap = cap;
    }
    memcpy(c->rx + c->rxlen, data, len);
    c->rxlen += len;
    c->rx[c->rxlen] = '\0';
    return 0;
}

static void rx_consume(struct conn *c, size_t n)
{
    if (n >= c->rxlen) {
        c->rxlen = 0;
    } else {
        memmove(c->rx, c->rx + n, c->rxlen - n);
        c->rxlen -= n;
    }
    if (c->rx)
        c->rx[c->rxlen] = '\0';
}

/* Release the set-up buffer once joined: an idle receiver keeps little. */
static void rx_shrink(struct conn *c)
{
    if (c->rxlen == 0) {
        free(c->rx);
        c->rx = NULL;
        c->rxcap = 0;
    }
}

static void record_latency(uint64_t sent_ns, uint64_t now)
{
    if (!measuring || sent_ns < win_start_ns || sent_ns >= win_end_ns)
        return;
    uint64_t us = now > sent_ns ? (now - sent_ns) / 1000 : 0;
    uint64_t b = us / HBUCKET_US;
    if (b >= HBUCKETS)
        hist_over++;
    else
        hist[b]++;
    hist_n++;
}

/* Steady state: find <body>lt S Q T</body>; keep an unfinished tail. */
static void scan_bodies(struct conn *c)
{
    uint64_t now = now_ns();
    char *p = c->rx, *end = c->rx + c->rxlen;
    for (;;) {
        char *b = memmem(p, (size_t)(end - p), "<body>", 6);
        if (!b) {
            /* keep what could be the start of a marker */
            size_t keep = (size_t)(end - p) < 5 ? (size_t)(end - p) : 5;
            rx_consume(c, (size_t)(end - c->rx) - keep);
            break;
        }
        char *e = memmem(b, (size_t)(end - b), "</body>", 7);
        if (!e) {
            rx_consume(c, (size_t)(b - c->rx));
            break;
        }
        int sender;
        unsigned seq;
        unsigned long long t;
        if (sscanf(b + 6, "lt %d %u %llu", &sender, &seq, &t) == 3) {
            total_recv++;
            if (sender != c->idx)
                record_latency((uint64_t)t, now);
        }
        p = e + 7;
    }
    rx_shrink(c);
}

static bool has(const struct conn *c, const char *s)
{
    return c->rx && strstr(c->rx, s) != NULL;
}

static void consume_through(struct conn *c, const char *marker)
{
    char *m = strstr(c->rx, marker);
    if (m)
        rx_consume(c, (size_t)(m - c->rx) + strlen(marker));
}

static void joined_one(struct conn *c)
{
    c->st = ST_JOINED;
    joined++;
    inflight--;
    rx_consume(c, c->rxlen);
    rx_shrink(c);
    if (joined % 1000 == 0 || joined == o_n)
        logf_("%d joined (%d failed) in %.1f s", joined, failed,
              (double)(now_ns() - t_join_start_ns) / 1e9);
    start_next_connections();
}

static void on_plain(struct conn *c, const char *data, size_t len)
{
    if (rx_append(c, data, len) != 0) {
        conn_fail(c, "input buffer limit");
        return;
    }
    if (strstr(c->rx, "<stream:error") || strstr(c->rx, "</stream:stream>")) {
        conn_fail(c, "stream error or close from the server");
        return;
    }
    switch (c->st) {
    case ST_FEATURES1:
        if (!has(c, "</stream:features>"))
            return;
        if (!has(c, "urn:ietf:params:xml:ns:xmpp-tls")) {
            conn_fail(c, "no STARTTLS offered");
            return;
        }
        rx_consume(c, c->rxlen);
        c->st = ST_PROCEED;
        send_str(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        return;
    case ST_PROCEED:
        if (has(c, "<failure")) {
            conn_fail(c, "STARTTLS refused");
            return;
        }
        if (!has(c, "<proceed"))
            return;
        rx_consume(c, c->rxlen);
        c->ssl = SSL_new(ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
        SSL_set_tlsext_host_name(c->ssl, o_host);
        c->st = ST_HANDSHAKE;
        SSL_do_handshake(c->ssl);
        tls_flush(c);
        return;
    case ST_FEATURES2:
        if (!has(c, "</stream:features>"))
            return;
        if (!has(c, "ANONYMOUS")) {
            conn_fail(c, "no SASL ANONYMOUS offered");
            return;
        }
        rx_consume(c, c->rxlen);
        c->st = ST_SASL;
        send_str(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'>=</auth>");
        return;
    case ST_SASL:
        if (has(c, "<failure")) {
            conn_fail(c, "SASL failure");
            return;
        }
        if (has(c, "<challenge")) {
            consume_through(c, "<challenge");
            send_str(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>");
            return;
        }
        if (!has(c, "<success"))
            return;
        rx_consume(c, c->rxlen);
        c->st = ST_FEATURES3;
        send_header(c);
        return;
    case ST_FEATURES3:
        if (!has(c, "</stream:features>"))
            return;
        rx_consume(c, c->rxlen);
        c->st = ST_BIND;
        send_str(c, "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        return;
    case ST_BIND:
        if (!has(c, "</iq>") && !has(c, "/>"))
            return;
        if (!has(c, "<jid>")) {
            if (has(c, "type='error'") || has(c, "type=\"error\"")) {
                conn_fail(c, "bind failed");
            }
            return;
        }
        if (!has(c, "</iq>"))
            return;
        rx_consume(c, c->rxlen);
        c->st = ST_JOIN;
        if (!o_join) {
            joined_one(c);
            return;
        }
        {
            char p[512];
            snprintf(p, sizeof p,
                     "<presence to='%s/u%d'><x xmlns='http://jabber.org/protocol/muc'>"
                     "<history maxstanzas='0'/></x></presence>",
                     o_room, c->idx);
            send_str(c, p);
        }
        return;
    case ST_JOIN:
        /* Our own presence carries status 110; an error presence ends it. */
        if (has(c, "<presence") && (has(c, "type='error'") || has(c, "type=\"error\""))) {
            conn_fail(c, "join refused");
            return;
        }
        if (has(c, "code='110'") || has(c, "code=\"110\"")) {
            joined_one(c);
            return;
        }
        if (c->rxlen > 65536) /* other occupants' presence: drop what is done */
            rx_consume(c, c->rxlen - 64);
        return;
    case ST_JOINED:
        scan_bodies(c);
        return;
    default:
        return;
    }
}

static void tls_input(struct conn *c, const char *data, size_t len)
{
    BIO_write(c->rbio, data, (int)len);
    if (c->st == ST_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        tls_flush(c);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char err[160];
                ERR_error_string_n(ERR_get_error(), err, sizeof err);
                conn_fail(c, err);
            }
            return;
        }
        c->st = ST_FEATURES2;
        send_header(c);
    }
    for (;;) {
        int n = SSL_read(c->ssl, plainbuf, sizeof plainbuf);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            tls_flush(c);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            conn_fail(c, e == SSL_ERROR_ZERO_RETURN ? "TLS closed by the server" : "TLS error");
            return;
        }
        on_plain(c, plainbuf, (size_t)n);
        if (c->st == ST_DEAD)
            return;
    }
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    b->base = readbuf;
    b->len = sizeof readbuf;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n == 0 || c->st == ST_DEAD)
        return;
    if (n < 0) {
        conn_fail(c, n == UV_EOF ? "closed by the server" : uv_strerror((int)n));
        return;
    }
    if (c->ssl)
        tls_input(c, b->base, (size_t)n);
    else
        on_plain(c, b->base, (size_t)n);
}

static void on_connect(uv_connect_t *r, int status)
{
    struct conn *c = r->data;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->st = ST_FEATURES1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    send_header(c);
}

static void start_next_connections(void)
{
    while (inflight < o_conc && next_conn < o_n) {
        struct conn *c = &conns[next_conn];
        c->idx = next_conn++;
        c->st = ST_CONNECTING;
        uv_tcp_init(loop, &c->tcp);
        c->tcp.data = c;
        c->creq.data = c;
        struct sockaddr_in sa;
        uv_ip4_addr(o_addr, o_port, &sa);
        inflight++;
        if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&sa, on_connect) != 0) {
            conn_fail(c, "connect failed");
            continue;
        }
    }
    if (inflight == 0 && next_conn >= o_n && t_join_end_ns == 0) {
        t_join_end_ns = now_ns();
        uv_timer_stop(&join_timer);
        if (joined < o_senders + 1) {
            logf_("only %d streams joined (%d failed); giving up", joined, failed);
            printf("{\"error\":\"only %d of %d joined\"}\n", joined, o_n);
            fflush(stdout);
            exit(2);
        }
        start_rates();
    }
}

/* --- the measured phases ------------------------------------------------------------------ */

static void send_one(int s)
{
    struct conn *c = &conns[s];
    if (c->st != ST_JOINED)
        return;
    char msg[768];
    uint64_t t = now_ns();
    int n = snprintf(msg, sizeof msg,
                     "<message to='%s' type='groupchat'><body>lt %d %u %" PRIu64 " %.*s</body></message>",
                     o_room, s, ++seqs[s], t, o_body_pad,
                     "................................................................................"
                     "................................................................................");
    send_text(c, msg, (size_t)n);
    if (measuring && t >= win_start_ns && t < win_end_ns)
        win_sent++;
}

static void on_send_tick(uv_timer_t *t)
{
    if (!sending)
        return;
    uint64_t now = now_ns();
    uint64_t due = (uint64_t)((double)(now - send_epoch_ns) / 1e9 * cur_rate);
    while (send_count < due) {
        send_one((int)(send_count % (uint64_t)o_senders));
        send_count++;
    }
}

static double percentile(double p, uint64_t expected)
{
    /* Deliveries that never came count as the latest of all. */
    uint64_t total = expected > hist_n ? expected : hist_n;
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t acc = 0;
    for (uint64_t b = 0; b < HBUCKETS; b++) {
        acc += hist[b];
        if (acc > rank)
            return (double)(b * HBUCKET_US + HBUCKET_US / 2) / 1000.0;
    }
    return -1; /* beyond the histogram or missing: infinite */
}

static void on_phase(uv_timer_t *t);

static void begin_rate(void)
{
    cur_rate = o_rates[rate_i];
    memset(hist, 0, sizeof(uint32_t) * HBUCKETS);
    hist_n = hist_over = 0;
    win_sent = 0;
    send_epoch_ns = now_ns();
    send_count = 0;
    sending = true;
    phase = 0;
    logf_("rate %.1f msg/s: warm-up %.0f s", cur_rate, o_warmup);
    uv_timer_start(&phase_timer, on_phase, (uint64_t)(o_warmup * 1000), 0);
}

static void finish_rate(void)
{
    uint64_t receivers = (uint64_t)(joined - dropped_after_join - 1);
    uint64_t expected = win_sent * receivers;
    double cpu_end = proc_cpu_s(o_pid);
    double self_cpu = self_cpu_s() - self_cpu_start;
    double win = (double)(win_end_ns - win_start_ns) / 1e9;
    double p50 = percentile(0.50, expected), p99 = percentile(0.99, expected);
    double frac = expected ? (double)hist_n / (double)expected : 0;
    long rss = proc_rss_kib(o_pid);
    printf("{\"rate\":%.2f,\"occupants\":%d,\"sent\":%" PRIu64 ",\"expected\":%" PRIu64
           ",\"delivered\":%" PRIu64 ",\"delivered_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"cpu_s\":%.2f,\"client_cpu_s\":%.2f,\"window_s\":%.2f,\"cpu_wall_s\":%.2f,\"rss_kib\":%ld,\"dropped\":%d}\n",
           cur_rate, joined - dropped_after_join, win_sent, expected, hist_n,
           (double)hist_n / win, p50, p99, cpu_end - cpu_start, self_cpu, win, (double)(now_ns() - win_start_ns) / 1e9, rss, dropped_after_join);
    fflush(stdout);
    logf_("rate %.1f: p50 %.2f ms p99 %.2f ms, %.1f%% delivered, %.0f deliveries/s, server CPU %.2f s",
          cur_rate, p50, p99, frac * 100, (double)hist_n / win, cpu_end - cpu_start);
    bool saturated = p99 < 0 || p99 > o_slow_ms || frac < 0.99;
    rate_i++;
    if (saturated || rate_i >= o_nrates) {
        if (saturated && rate_i < o_nrates)
            logf_("the server does not keep up at %.1f msg/s: stopping the sweep", cur_rate);
        uv_stop(loop);
        return;
    }
    begin_rate();
}

static void on_phase(uv_timer_t *t)
{
    if (phase == 0) {
        phase = 1;
        measuring = true;
        win_start_ns = now_ns();
        win_end_ns = win_start_ns + (uint64_t)(o_window * 1e9);
        cpu_start = proc_cpu_s(o_pid);
        self_cpu_start = self_cpu_s();
        uv_timer_start(&phase_timer, on_phase, (uint64_t)(o_window * 1000), 0);
    } else if (phase == 1) {
        phase = 2;
        sending = false;
        win_end_ns = now_ns();
        drain_until_ns = win_end_ns + (uint64_t)(o_drain * 1e9);
        uv_timer_start(&phase_timer, on_phase, 50, 50);
    } else {
        uint64_t receivers = (uint64_t)(joined - dropped_after_join - 1);
        if (hist_n >= win_sent * receivers || now_ns() >= drain_until_ns) {
            uv_timer_stop(&phase_timer);
            measuring = false;
            finish_rate();
        }
    }
}

static void on_settled(uv_timer_t *t)
{
    rss_after_kib = proc_rss_kib(o_pid);
    double secs = (double)(t_join_end_ns - t_join_start_ns) / 1e9;
    printf("{\"joined\":%d,\"wanted\":%d,\"cut\":%s,\"failed\":%d,\"join_s\":%.2f,\"rss_before_kib\":%ld,"
           "\"rss_after_kib\":%ld,\"rss_per_occupant_b\":%.0f}\n",
           joined, o_n, join_cut ? "true" : "false", failed, secs, rss_before_kib, rss_after_kib,
           joined ? (double)(rss_after_kib - rss_before_kib) * 1024.0 / joined : 0);
    fflush(stdout);
    if (o_nrates == 0) {
        uv_stop(loop);
        return;
    }
    uv_timer_start(&send_timer, on_send_tick, 1, 1);
    begin_rate();
}

/* Let the join traffic settle before reading memory. */
static void start_rates(void) { uv_timer_start(&phase_timer, on_settled, 1000, 0); }

/* The server seats occupants too slowly: measure with those already in. */
static void on_join_deadline(uv_timer_t *t)
{
    if (t_join_end_ns)
        return;
    logf_("join deadline of %.0f s: going on with the %d occupants seated", o_join_deadline, joined);
    join_cut = true;
    next_conn = o_n;
    int was_failed = failed;
    for (int i = 0; i < o_n; i++) {
        struct conn *c = &conns[i];
        if (c->st != ST_JOINED && c->st != ST_DEAD && c->tcp.loop)
            conn_fail(c, "join deadline");
    }
    failed = was_failed; /* abandoned, not failed: joined < wanted says it */
    start_next_connections();
}

static void on_deadline(uv_timer_t *t)
{
    logf_("deadline of %.0f s reached", o_deadline);
    printf("{\"error\":\"deadline\"}\n");
    fflush(stdout);
    exit(3);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: chatload --port P --room ROOM@HOST [--host guest.localhost] [--addr 127.0.0.1]\n"
            "  [--occupants N] [--senders 10] [--rates 10,20,50] [--window 10] [--warmup 2]\n"
            "  [--drain 3] [--concurrency 64] [--pid SERVER_PID] [--deadline 600] [--slow-ms 1000]\n");
    exit(64);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--port"))
            o_port = atoi(v);
        else if (!strcmp(a, "--addr"))
            o_addr = v;
        else if (!strcmp(a, "--host"))
            o_host = v;
        else if (!strcmp(a, "--room"))
            o_room = v;
        else if (!strcmp(a, "--occupants"))
            o_n = atoi(v);
        else if (!strcmp(a, "--senders"))
            o_senders = atoi(v);
        else if (!strcmp(a, "--window"))
            o_window = atof(v);
        else if (!strcmp(a, "--warmup"))
            o_warmup = atof(v);
        else if (!strcmp(a, "--drain"))
            o_drain = atof(v);
        else if (!strcmp(a, "--concurrency"))
            o_conc = atoi(v);
        else if (!strcmp(a, "--pid"))
            o_pid = atoi(v);
        else if (!strcmp(a, "--deadline"))
            o_deadline = atof(v);
        else if (!strcmp(a, "--slow-ms"))
            o_slow_ms = atof(v);
        else if (!strcmp(a, "--join-deadline"))
            o_join_deadline = atof(v);
        else if (!strcmp(a, "--join"))
            o_join = atoi(v);
        else if (!strcmp(a, "--pad"))
            o_body_pad = atoi(v);
        else if (!strcmp(a, "--rates")) {
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t && o_nrates < 32; t = strtok_r(NULL, ",", &save))
                o_rates[o_nrates++] = atof(t);
            free(dup);
        } else
            usage();
    }
    if (!o_port || !o_room || o_n < 2 || o_senders < 1 || o_senders > 64 || o_senders >= o_n ||
        o_body_pad < 0 || o_body_pad > 160)
        usage();

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    conns = calloc((size_t)o_n, sizeof *conns);
    hist = calloc(HBUCKETS, sizeof *hist);
    if (!ctx || !conns || !hist) {
        fprintf(stderr, "chatload: out of memory\n");
        return 1;
    }
    loop = uv_default_loop();
    uv_timer_init(loop, &send_timer);
    uv_timer_init(loop, &phase_timer);
    uv_timer_init(loop, &deadline_timer);
    uv_timer_init(loop, &join_timer);
    if (o_join_deadline > 0) {
        uv_timer_start(&join_timer, on_join_deadline, (uint64_t)(o_join_deadline * 1000), 0);
        uv_unref((uv_handle_t *)&join_timer);
    }
    uv_timer_start(&deadline_timer, on_deadline, (uint64_t)(o_deadline * 1000), 0);
    uv_unref((uv_handle_t *)&deadline_timer);

    t_start_ns = t_join_start_ns = now_ns();
    rss_before_kib = proc_rss_kib(o_pid);
    start_next_connections();
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
