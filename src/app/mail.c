/*
 * Outgoing e-mail (see mail.h): a bounded queue, one thread, libcurl.
 *
 * The thread starts with the first message. Each message is one libcurl
 * easy transfer with its own connection: verification and reset mail is
 * rare, and a fresh connection per message never leaves a half-broken
 * session behind. A failed send is logged with the recipient and curl's
 * reason, never with the body, which holds a secret link.
 *
 * Header injection is refused at the door: the recipient and subject must
 * not contain CR or LF, and the address must look like one.
 */
#include "app/mail.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

#define MAIL_TIMEOUT_S 30L
#define MAIL_CONNECT_TIMEOUT_S 10L

struct mail_item {
    struct mail_item *next;
    const struct config *cfg;
    char *to, *subject, *body;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    struct mail_item *head, *tail;
    size_t queued;
    bool started, stopping, busy;
    pthread_t thread;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER,
       .idle = PTHREAD_COND_INITIALIZER};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ok;

static void curl_setup(void) { curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

/* ---- checks and formatting ---- */

static bool one_line(const char *s) { return s && !strpbrk(s, "\r\n"); }

/* local@domain, printable ASCII or UTF-8, no spaces, no <> (so it cannot
 * close the angle brackets of a SMTP command). */
static bool address_ok(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    const char *at = n ? strrchr(a, '@') : NULL;
    if (n < 3 || n > 254 || !at || at == a || !at[1])
        return false;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>' || *p == ',' || *p == '"')
            return false;
    return true;
}

int mail_address_of(const char *from, char *out, size_t n)
{
    const char *lt = strrchr(from, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    const char *s = from;
    size_t len = strlen(from);
    if (lt && gt) {
        s = lt + 1;
        len = (size_t)(gt - s);
    }
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len >= n)
        return -ENAMETOOLONG;
    memcpy(out, s, len);
    out[len] = '\0';
    return address_ok(out) ? 0 : -EINVAL;
}

/* The host of an http(s) URL, without port, brackets kept off. */
static void url_host(const char *url, char *out, size_t n)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t len = strcspn(p, "/?#");
    const char *at = memchr(p, '@', len);
    if (at) {
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (*p == '[') {
        const char *close = memchr(p, ']', len);
        p++;
        len = close ? (size_t)(close - p) : 0;
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon)
            len = (size_t)(colon - p);
    }
    if (len >= n)
        len = n - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
}

void mail_from(const struct config *cfg, char *out, size_t n)
{
    if (cfg->smtp.from[0]) {
        snprintf(out, n, "%s", cfg->smtp.from);
        return;
    }
    char host[256];
    url_host(cfg->site.public_url, host, sizeof host);
    snprintf(out, n, "noreply@%s", host[0] ? host : "localhost");
}

int mail_config_check(const struct config *cfg, char *err, size_t errlen)
{
    const char *t = cfg->smtp.tls;
    if (strcmp(t, "starttls") != 0 && strcmp(t, "tls") != 0 && strcmp(t, "none") != 0) {
        snprintf(err, errlen, "smtp.tls: bad value '%s': expected starttls, tls or none", t);
        return -EINVAL;
    }
    if (!one_line(cfg->smtp.host) || strpbrk(cfg->smtp.host, "/@ ")) {
        snprintf(err, errlen, "smtp.host: expected a host name or IP address");
        return -EINVAL;
    }
    char from[CONFIG_STR + 16], addr[CONFIG_STR + 16];
    mail_from(cfg, from, sizeof from);
    if (!one_line(from) || mail_address_of(from, addr, sizeof addr) != 0) {
        snprintf(err, errlen,
                 "smtp.from: '%s' is not an address (write addr@host or Name <addr@host>)", from);
        return -EINVAL;
    }
    return 0;
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* RFC 2047 "B" encoding, in words short enough for the 76-column rule. */
static int put_encoded_words(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    size_t i = 0;
    bool first = true;
    while (i < n) {
        /* 45 bytes of input make 60 of base64: a word of 72 with its frame. */
        size_t take = n - i > 45 ? 45 : n - i;
        while (take < n - i && take > 0 && ((unsigned char)s[i + take] & 0xc0) == 0x80)
            take--; /* do not split a UTF-8 character */
        if (take == 0)
            take = n - i > 45 ? 45 : n - i;
        char b64[sodium_base64_ENCODED_LEN(45, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)s + i, take,
                          sodium_base64_VARIANT_ORIGINAL);
        if (buf_printf(b, "%s=?UTF-8?B?%s?=", first ? "" : "\r\n ", b64) < 0)
            return -ENOMEM;
        first = false;
        i += take;
    }
    return 0;
}

int mail_format(const char *from, const char *to, const char *subject, const char *body,
                int64_t date, char **out)
{
    *out = NULL;
    if (!one_line(from) || !one_line(to) || !one_line(subject) || !body)
        return -EINVAL;
    struct buf b;
    buf_init(&b, 0);
    char datebuf[64];
    time_t t = (time_t)date;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(datebuf, sizeof datebuf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    unsigned char rnd[16];
    char id[33];
    randombytes_buf(rnd, sizeof rnd);
    util_hex(rnd, sizeof rnd, id);
    char addr[512];
    const char *domain = "localhost";
    if (mail_address_of(from, addr, sizeof addr) == 0)
        domain = strrchr(addr, '@') + 1;

    int rc = buf_printf(&b, "From: %s\r\nTo: %s\r\nSubject: ", from, to);
    if (rc >= 0)
        rc = is_ascii(subject) ? buf_printf(&b, "%s", subject) : put_encoded_words(&b, subject);
    if (rc >= 0)
        rc = buf_printf(&b,
                        "\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/plain; charset=UTF-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n\r\n",
                        datebuf, id, domain);
    /* The body with every line break as CRLF. */
    for (const char *p = body; rc >= 0 && *p;) {
        size_t len = strcspn(p, "\r\n");
        rc = buf_append(&b, p, len);
        if (rc >= 0)
            rc = buf_append(&b, "\r\n", 2);
        p += len;
        if (*p == '\r')
            p++;
        if (*p == '\n')
            p++;
    }
    if (rc < 0) {
        buf_free(&b);
        return -ENOMEM;
    }
    if (buf_cstr(&b) < 0) {
        buf_free(&b);
        return -ENOMEM;
    }
    *out = buf_steal(&b, NULL);
    return 0;
}

/* ---- sending ---- */

struct reader {
    const char *data;
    size_t len, off;
};

static size_t read_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct reader *r = ud;
    size_t room = size * nmemb;
    size_t left = r->len - r->off;
    size_t n = left < room ? left : room;
    memcpy(ptr, r->data + r->off, n);
    r->off += n;
    return n;
}

int mail_send_now(const struct config *cfg, const char *to, const char *subject,
                  const char *body, char *err, size_t errlen)
{
    char from[CONFIG_STR + 16], envelope_from[CONFIG_STR + 16];
    mail_from(cfg, from, sizeof from);
    if (mail_address_of(from, envelope_from, sizeof envelope_from) != 0) {
        snprintf(err, errlen, "smtp.from is not an address");
        return -EINVAL;
    }
    if (!address_ok(to)) {
        snprintf(err, errlen, "bad recipient address");
        return -EINVAL;
    }
    char *msg;
    int rc = mail_format(from, to, subject, body, util_now_unix(), &msg);
    if (rc < 0) {
        snprintf(err, errlen, "cannot format the message");
        return rc;
    }
    pthread_once(&curl_once, curl_setup);
    if (!curl_ok) {
        free(msg);
        snprintf(err, errlen, "libcurl failed to initialise");
        return -EIO;
    }
    CURL *curl = curl_easy_init();
    if (!curl) {
        free(msg);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    bool implicit_tls = strcmp(cfg->smtp.tls, "tls") == 0;
    bool v6 = strchr(cfg->smtp.host, ':') != NULL;
    char ehlo[256];
    url_host(cfg->site.public_url, ehlo, sizeof ehlo);
    /* The URL's path is the name curl greets the server with (EHLO). */
    char url[CONFIG_STR + 300];
    snprintf(url, sizeof url, "%s://%s%s%s:%d/%s", implicit_tls ? "smtps" : "smtp",
             v6 ? "[" : "", cfg->smtp.host, v6 ? "]" : "", cfg->smtp.port,
             ehlo[0] && !strchr(ehlo, ':') ? ehlo : "localhost");
    char mail_from_arg[CONFIG_STR + 20], rcpt_arg[300];
    snprintf(mail_from_arg, sizeof mail_from_arg, "<%s>", envelope_from);
    snprintf(rcpt_arg, sizeof rcpt_arg, "<%s>", to);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_arg);
    struct reader r = {.data = msg, .len = strlen(msg)};
    char curl_err[CURL_ERROR_SIZE] = "";

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, MAIL_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, MAIL_CONNECT_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    /* starttls: refuse to go on in the clear when the server does not offer it. */
    curl_easy_setopt(curl, CURLOPT_USE_SSL,
                     strcmp(cfg->smtp.tls, "none") == 0 ? (long)CURLUSESSL_NONE
                                                        : (long)CURLUSESSL_ALL);
    if (cfg->smtp.user[0]) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, cfg->smtp.user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, cfg->smtp.password);
    }
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, mail_from_arg);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(curl, CURLOPT_READDATA, &r);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    CURLcode cr = curl_easy_perform(curl);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);
    sodium_memzero(msg, r.len);
    free(msg);
    if (cr != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cr));
        return -EIO;
    }
    return 0;
}

/* ---- the queue ---- */

static void item_free(struct mail_item *it)
{
    if (!it)
        return;
    if (it->body)
        sodium_memzero(it->body, strlen(it->body));
    free(it->to);
    free(it->subject);
    free(it->body);
    free(it);
}

static void *mail_thread(void *arg)
{
    pthread_mutex_lock(&q.lock);
    for (;;) {
        while (!q.head && !q.stopping)
            pthread_cond_wait(&q.wake, &q.lock);
        if (!q.head && q.stopping)
            break;
        struct mail_item *it = q.head;
        q.head = it->next;
        if (!q.head)
            q.tail = NULL;
        q.queued--;
        q.busy = true;
        pthread_mutex_unlock(&q.lock);

        char err[CURL_ERROR_SIZE + 64];
        if (mail_send_now(it->cfg, it->to, it->subject, it->body, err, sizeof err) == 0)
            log_info("mail: sent \"%s\" to %s via %s", it->subject, it->to, it->cfg->smtp.host);
        else
            log_warn("mail: could not send \"%s\" to %s via %s:%d: %s", it->subject, it->to,
                     it->cfg->smtp.host, it->cfg->smtp.port, err);
        item_free(it);

        pthread_mutex_lock(&q.lock);
        q.busy = false;
        if (!q.head)
            pthread_cond_broadcast(&q.idle);
    }
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

/* Log a message that is not sent: one line, line breaks shown as " | ". */
static void log_unsent(const char *to, const char *subject, const char *body)
{
    struct buf b;
    buf_init(&b, 0);
    for (const char *p = body; *p;) {
        size_t len = strcspn(p, "\r\n");
        if (len && buf_printf(&b, "%s%.*s", b.len ? " | " : "", (int)len, p) < 0)
            break;
        p += len;
        p += strspn(p, "\r\n");
    }
    buf_cstr(&b);
    log_info("mail: smtp.host is empty, so this message is logged, not sent: to %s, "
             "subject \"%s\": %s",
             to, subject, b.data ? b.data : "");
    buf_free(&b);
}

int mail_send(const struct config *cfg, const char *to, const char *subject, const char *body)
{
    if (!address_ok(to) || !one_line(subject) || !body)
        return -EINVAL;
    if (!cfg->smtp.host[0]) {
        log_unsent(to, subject, body);
        return 0;
    }
    struct mail_item *it = calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    it->cfg = cfg;
    it->to = strdup(to);
    it->subject = strdup(subject);
    it->body = strdup(body);
    if (!it->to || !it->subject || !it->body) {
        item_free(it);
        return -ENOMEM;
    }
    pthread_mutex_lock(&q.lock);
    if (q.stopping || q.queued >= MAIL_QUEUE_MAX) {
        pthread_mutex_unlock(&q.lock);
        log_warn("mail: queue full (%d messages); dropped \"%s\" to %s", MAIL_QUEUE_MAX, subject,
                 to);
        item_free(it);
        return -ENOSPC;
    }
    if (!q.started) {
        pthread_once(&curl_once, curl_setup);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_JOINABLE);
        int prc = pthread_create(&q.thread, &attr, mail_thread, NULL);
        pthread_attr_destroy(&attr);
        if (prc != 0) {
            pthread_mutex_unlock(&q.lock);
            log_error("mail: cannot start the mail thread: %s", strerror(prc));
            item_free(it);
            return -prc;
        }
        q.started = true;
    }
    if (q.tail)
        q.tail->next = it;
    else
        q.head = it;
    q.tail = it;
    q.queued++;
    pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.lock);
    return 0;
}

void mail_shutdown(uint64_t timeout_ms)
{
    pthread_mutex_lock(&q.lock);
    if (!q.started) {
        pthread_mutex_unlock(&q.lock);
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(timeout_ms / 1000);
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while ((q.head || q.busy) &&
           pthread_cond_timedwait(&q.idle, &q.lock, &deadline) == 0)
        ;
    bool drained = !q.head && !q.busy;
    q.stopping = true;
    /* What is still queued is dropped: nobody waits for it any more. */
    struct mail_item *it = q.head;
    q.head = q.tail = NULL;
    q.queued = 0;
    pthread_cond_broadcast(&q.wake);
    pthread_mutex_unlock(&q.lock);
    while (it) {
        struct mail_item *next = it->next;
        log_warn("mail: shutting down; dropped \"%s\" to %s", it->subject, it->to);
        item_free(it);
        it = next;
    }
    if (drained)
        pthread_join(q.thread, NULL);
    else
        pthread_detach(q.thread); /* a send is stuck in curl; it ends with its timeout */
    pthread_mutex_lock(&q.lock);
    q.started = false;
    q.stopping = false;
    pthread_mutex_unlock(&q.lock);
}
