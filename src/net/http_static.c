/*
 * Static files (the built front end in web/dist, and later anything else
 * that lives on disk).
 *
 * The loop never touches the disk: a file is looked up on the worker pool
 * (realpath containment check, stat, read) and the answer comes back to the
 * loop. Small files (up to STATIC_CACHE_FILE) are then kept in memory, so
 * the common case — the same few assets asked for again and again — is a
 * hash lookup and one write from memory, no thread hop. A cached entry is
 * checked against the disk again (stat on the pool) when it is more than a
 * second old, so a rebuilt front end shows up without a restart. Big files
 * are streamed from an open descriptor in chunks by the server.
 *
 * Entries are reference-counted on the loop thread: the table holds one
 * reference, and each response being written holds one, so replacing an
 * entry never frees bytes a socket is still sending.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "net/http_internal.h"
#include "net/http_util.h"

#define STATIC_BUCKETS 1024
#define STATIC_CACHE_FILE (1024 * 1024)
#define STATIC_CACHE_TOTAL (64 * 1024 * 1024)
#define STATIC_CACHE_ENTRIES 4096
#define STATIC_REVALIDATE_MS 1000

struct static_entry {
    struct static_entry *next;
    char *key;
    char *data;
    size_t size;
    int64_t mtime_ns;
    char etag[64];
    char last_modified[40];
    uint64_t checked_ms;
    int refs;
    bool in_table;
};

struct http_static {
    uv_loop_t *loop;
    char root[PATH_MAX];
    struct static_entry *buckets[STATIC_BUCKETS];
    size_t bytes, count;
};

struct static_job {
    uv_work_t work;
    struct http_static *st;
    struct http_request *req; /* NULL once the client has gone */
    char relpath[PATH_MAX];
    bool have_known;
    int64_t known_mtime_ns;
    size_t known_size;
    /* results */
    int result; /* 0, -ENOENT, -EISDIR (redirect to dir/), -EACCES */
    bool unchanged;
    char *data;
    size_t size;
    int64_t mtime_ns;
    uv_file fd;
};

static unsigned hash_key(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % STATIC_BUCKETS;
}

struct http_static *http_static_new(uv_loop_t *loop, const char *root)
{
    struct http_static *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->loop = loop;
    snprintf(st->root, sizeof st->root, "%s", root);
    size_t n = strlen(st->root);
    while (n > 1 && st->root[n - 1] == '/')
        st->root[--n] = '\0';
    return st;
}

static void entry_unref(struct static_entry *e)
{
    if (--e->refs > 0)
        return;
    free(e->key);
    free(e->data);
    free(e);
}

static void entry_release(void *opaque) { entry_unref(opaque); }

static void table_remove(struct http_static *st, struct static_entry *e)
{
    struct static_entry **pp = &st->buckets[hash_key(e->key)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    e->in_table = false;
    st->bytes -= e->size;
    st->count--;
    entry_unref(e);
}

void http_static_free(struct http_static *st)
{
    if (!st)
        return;
    for (int i = 0; i < STATIC_BUCKETS; i++)
        while (st->buckets[i])
            table_remove(st, st->buckets[i]);
    free(st);
}

static struct static_entry *table_find(struct http_static *st, const char *key)
{
    for (struct static_entry *e = st->buckets[hash_key(key)]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void set_validators(struct static_entry *e)
{
    snprintf(e->etag, sizeof e->etag, "\"%llx-%zx\"", (unsigned long long)e->mtime_ns, e->size);
    http_date_format((time_t)(e->mtime_ns / 1000000000), e->last_modified, sizeof e->last_modified);
}

static void common_headers(struct http_request *req, const char *relpath, const char *last_modified)
{
    http_response_header(req, "Content-Type", http_mime_type(relpath));
    http_response_header(req, "Last-Modified", last_modified);
    /* Vite puts content-hashed names under /assets/: those never change. */
    if (strncmp(relpath, "/assets/", 8) == 0)
        http_response_header(req, "Cache-Control", "public, max-age=31536000, immutable");
    else
        http_response_header(req, "Cache-Control", "no-cache");
    req->res.allow_range = true;
}

static void serve_entry(struct http_request *req, struct static_entry *e)
{
    http_response_status(req, 200);
    common_headers(req, e->key, e->last_modified);
    e->refs++;
    http_response_body_ref(req, e->data, e->size, entry_release, e);
    http_response_etag(req, e->etag);
}

/* --- on the worker pool ---------------------------------------------------- */

static void job_run(uv_work_t *w)
{
    struct static_job *job = w->data;
    char full[PATH_MAX * 2];
    char real[PATH_MAX], root_real[PATH_MAX];
    job->fd = -1;
    if (!realpath(job->st->root, root_real)) {
        job->result = -ENOENT;
        return;
    }
    snprintf(full, sizeof full, "%s%s", job->st->root, job->relpath);
    if (!realpath(full, real)) {
        job->result = -ENOENT;
        return;
    }
    /* Symlinks may not lead out of the static directory. */
    size_t rl = strlen(root_real);
    if (strncmp(real, root_real, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
        job->result = -EACCES;
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        job->result = errno == EACCES ? -EACCES : -ENOENT;
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        job->result = -ENOENT;
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        job->result = -EISDIR;
        return;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        job->result = -EACCES;
        return;
    }
    job->size = (size_t)sb.st_size;
    job->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    if (job->have_known && job->known_size == job->size && job->known_mtime_ns == job->mtime_ns) {
        close(fd);
        job->unchanged = true;
        return;
    }
    if (job->size > STATIC_CACHE_FILE) {
        fcntl(fd, F_SETFL, 0);
        job->fd = fd;
        return;
    }
    job->data = malloc(job->size ? job->size : 1);
    if (!job->data) {
        close(fd);
        job->result = -ENOMEM;
        return;
    }
    size_t got = 0;
    while (got < job->size) {
        ssize_t n = read(fd, job->data + got, job->size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    job->size = got; /* a file that shrank while we read is served as read */
}

/* --- back on the loop -------------------------------------------------------- */

static void job_abort(struct http_request *req)
{
    struct static_job *job = req->user;
    job->req = NULL;
}

static void job_done(uv_work_t *w, int status)
{
    struct static_job *job = w->data;
    struct http_static *st = job->st;
    struct http_request *req = job->req;
    if (!req || status < 0) {
        if (job->fd >= 0)
            close(job->fd);
        free(job->data);
        if (req) {
            http_response_error(req, 503, "unavailable", "request cancelled");
            http_request_finish(req);
        }
        free(job);
        return;
    }
    req->on_abort = NULL;
    struct static_entry *known = table_find(st, job->relpath);

    if (job->result == -EISDIR) {
        char loc[PATH_MAX + 2];
        snprintf(loc, sizeof loc, "%s/", job->relpath);
        http_response_status(req, 301);
        http_response_header(req, "Location", loc);
    } else if (job->result == -EACCES) {
        http_response_error(req, 403, "forbidden", "not allowed");
    } else if (job->result < 0) {
        if (known)
            table_remove(st, known);
        http_response_error(req, 404, "not_found", "no such resource");
    } else if (job->unchanged && known) {
        known->checked_ms = uv_now(st->loop);
        serve_entry(req, known);
    } else if (job->fd >= 0) {
        if (known)
            table_remove(st, known);
        struct static_entry tmp = {.size = job->size, .mtime_ns = job->mtime_ns};
        set_validators(&tmp);
        http_response_status(req, 200);
        common_headers(req, job->relpath, tmp.last_modified);
        http_response_etag(req, tmp.etag);
        req->res.body_kind = HTTP_BODY_FILE;
        req->res.file_fd = job->fd;
        req->res.file_off = 0;
        req->res.file_len = job->size;
        req->res.file_size = job->size;
        job->fd = -1;
    } else {
        if (known)
            table_remove(st, known);
        struct static_entry *e = calloc(1, sizeof *e);
        if (e)
            e->key = strdup(job->relpath);
        if (!e || !e->key) {
            free(e);
            free(job->data);
            http_response_error(req, 500, "internal", "out of memory");
        } else {
            e->data = job->data;
            e->size = job->size;
            e->mtime_ns = job->mtime_ns;
            e->refs = 1;
            e->checked_ms = uv_now(st->loop);
            set_validators(e);
            job->data = NULL;
            if (st->count < STATIC_CACHE_ENTRIES && st->bytes + e->size <= STATIC_CACHE_TOTAL) {
                unsigned h = hash_key(e->key);
                e->next = st->buckets[h];
                st->buckets[h] = e;
                e->in_table = true;
                e->refs++;
                st->bytes += e->size;
                st->count++;
            }
            serve_entry(req, e);
            entry_unref(e); /* the response and maybe the table hold it now */
        }
    }
    free(job);
    http_request_finish(req);
}

int http_static_serve(struct http_static *st, struct http_request *req, const char *relpath)
{
    if (!http_path_is_safe(relpath)) {
        log_info("http %s: refused unsafe path %s", req->remote, req->url);
        http_response_error(req, 400, "bad_path", "bad path");
        return 0;
    }
    char path[PATH_MAX];
    size_t n = strlen(relpath);
    int w = snprintf(path, sizeof path, "%s%s", relpath, relpath[n - 1] == '/' ? "index.html" : "");
    if (w < 0 || (size_t)w >= sizeof path) {
        http_response_error(req, 414, "uri_too_long", "path too long");
        return 0;
    }

    struct static_entry *e = table_find(st, path);
    if (e && uv_now(st->loop) - e->checked_ms < STATIC_REVALIDATE_MS) {
        serve_entry(req, e);
        return 0;
    }

    struct static_job *job = calloc(1, sizeof *job);
    if (!job) {
        http_response_error(req, 503, "unavailable", "out of memory");
        return 0;
    }
    job->st = st;
    job->req = req;
    job->fd = -1;
    memcpy(job->relpath, path, strlen(path) + 1);
    if (e) {
        job->have_known = true;
        job->known_mtime_ns = e->mtime_ns;
        job->known_size = e->size;
    }
    job->work.data = job;
    if (uv_queue_work(st->loop, &job->work, job_run, job_done) != 0) {
        free(job);
        http_response_error(req, 503, "unavailable", "worker pool unavailable");
        return 0;
    }
    req->user = job;
    req->on_abort = job_abort;
    return HTTP_ASYNC;
}
