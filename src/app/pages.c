/*
 * Page routes: paths that are pages of the front end rather than files.
 *
 * The front end (web/) is one page application: every page path below is
 * answered with the same built shell, web/dist/index.html, and the app picks
 * the page from the address. So a deep link or a reload works, and an
 * unknown path still falls through to the static files (and their 404).
 *
 *   /, /search, /login, /register, /verify, /reset, /following,
 *   /settings, /settings/<rest>, /u/<name>, /topic/<slug>   -> the shell
 *   /c/<slug>      the shell with the channel's OpenGraph tags (worker)
 *   /watch/<slug>  302 to /c/<slug> (the old address of the player)
 *
 * /c/<slug> runs on the worker pool: it reads the channel from the database
 * and the shell from static_dir, and writes og:title, og:description,
 * og:image and og:url into the head, every value HTML-escaped, so a link
 * shared elsewhere shows the channel's title and avatar. A channel without
 * an avatar still gets an og:image: the front end's og-image.png when its
 * build has one (web/public/og-image.png lands in static_dir), otherwise
 * the picture og_image.c draws, served from memory as /og-default.png. A
 * protected channel's page says nothing about it. An unknown slug gets the
 * shell with 404, and the app says there is no such channel.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/app.h"
#include "app/channels_extra.h"
#include "app/og_image.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/http.h"
#include "store/db.h"

#define SHELL "/index.html"
#define SHELL_MAX (256 * 1024)
#define OG_DESCRIPTION_MAX 200
#define HEAD_MARK "<!--hearth:head-->"
#define TITLE_MARK "<title>Hearth</title>"
#define OG_STATIC "/og-image.png"   /* the front end's own, when it ships one */
#define OG_DEFAULT "/og-default.png" /* ours */

static int shell_page(struct http_request *req, void *ud)
{
    (void)ud;
    return http_response_static(req, SHELL);
}

/* Characters a path segment may carry as they are; the rest is %XX. */
static bool unreserved(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

static int watch_redirect(struct http_request *req, void *ud)
{
    (void)ud;
    const char *slug = http_request_param(req, "slug");
    char loc[1024];
    size_t n = (size_t)snprintf(loc, sizeof loc, "/c/");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)(slug ? slug : ""); *p && n + 4 < sizeof loc; p++) {
        if (unreserved(*p)) {
            loc[n++] = (char)*p;
        } else {
            loc[n++] = '%';
            loc[n++] = hex[*p >> 4];
            loc[n++] = hex[*p & 15];
        }
    }
    loc[n] = '\0';
    /* Keep the query (an invite code) when it is plain printable ASCII. */
    bool keep = req->query && *req->query && strlen(req->query) + n + 2 < sizeof loc;
    for (const char *q = req->query; keep && *q; q++)
        if ((unsigned char)*q <= ' ' || (unsigned char)*q >= 127)
            keep = false;
    if (keep) {
        loc[n++] = '?';
        memcpy(loc + n, req->query, strlen(req->query) + 1);
    }
    http_response_status(req, 302);
    http_response_header(req, "Location", loc);
    http_response_header(req, "Content-Type", "text/plain; charset=utf-8");
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_printf(req, "See %s\n", loc);
    return 0;
}

/* --- /c/<slug> with OpenGraph tags (worker thread) --------------------------- */

static void escape_html(struct buf *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len && s[i]; i++) {
        switch (s[i]) {
        case '&': buf_append_str(b, "&amp;"); break;
        case '<': buf_append_str(b, "&lt;"); break;
        case '>': buf_append_str(b, "&gt;"); break;
        case '"': buf_append_str(b, "&quot;"); break;
        case '\'': buf_append_str(b, "&#39;"); break;
        case '\r':
        case '\n':
        case '\t': buf_append_str(b, " "); break;
        default: buf_append(b, &s[i], 1);
        }
    }
}

static void meta(struct buf *b, const char *attr, const char *name, const char *value, size_t len)
{
    buf_append_str(b, "<meta ");
    buf_append_str(b, attr);
    buf_append_str(b, "=\"");
    buf_append_str(b, name);
    buf_append_str(b, "\" content=\"");
    escape_html(b, value, len);
    buf_append_str(b, "\" />\n    ");
}

/* At most max bytes of s, not cutting a UTF-8 sequence in two. */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

static int read_shell(const char *dir, struct buf *out)
{
    char path[CONFIG_PATH + 32];
    snprintf(path, sizeof path, "%s%s", dir, SHELL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char chunk[16384];
    ssize_t r;
    int rc = 0;
    while ((r = read(fd, chunk, sizeof chunk)) > 0) {
        if (out->len + (size_t)r > SHELL_MAX) {
            rc = -EFBIG;
            break;
        }
        if (buf_append(out, chunk, (size_t)r) < 0) {
            rc = -ENOMEM;
            break;
        }
    }
    if (r < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Replace the first `mark` in the shell with `with`; append before </head> when absent. */
static void shell_splice(struct buf *dst, const struct buf *shell, const char *mark, const char *with,
                   size_t with_len)
{
    const char *s = shell->data ? (const char *)shell->data : "";
    const char *at = memmem(s, shell->len, mark, strlen(mark));
    size_t skip = strlen(mark);
    if (!at) {
        at = memmem(s, shell->len, "</head>", 7);
        skip = 0;
    }
    if (!at) {
        buf_append(dst, s, shell->len);
        return;
    }
    buf_append(dst, s, (size_t)(at - s));
    buf_append(dst, with, with_len);
    buf_append(dst, at + skip, shell->len - (size_t)(at - s) - skip);
}

static int channel_page(struct http_request *req, void *ud)
{
    struct app *app = ud;
    const struct config *cfg = app->cfg;
    const char *slug = http_request_param(req, "slug");
    struct buf shell = {0}, head = {0}, title = {0}, step = {0}, page = {0};

    int rc = read_shell(cfg->http.static_dir, &shell);
    if (rc < 0) {
        log_warn("http %s: pages: cannot read %s%s: %s", req->remote, cfg->http.static_dir, SHELL,
                 strerror(-rc));
        http_response_error(req, 404, "not_found", "the front end is not built (make)");
        goto out;
    }

    struct channel_ext *c = calloc(1, sizeof *c);
    bool found = false;
    struct db *db = c ? db_pool_acquire(app->db) : NULL;
    if (db) {
        rc = channel_ext_find(db, slug ? slug : "", c, NULL, 0);
        found = rc == 0;
        if (rc < 0 && rc != -ENOENT)
            log_warn("http %s: pages: channel '%s' for its page: error %d", req->remote,
                     slug ? slug : "", rc);
        db_pool_release(app->db, db);
    }

    const char *site = cfg->site.name[0] ? cfg->site.name : "Hearth";
    size_t base = strlen(cfg->site.public_url);
    while (base > 0 && cfg->site.public_url[base - 1] == '/')
        base--;
    meta(&head, "property", "og:site_name", site, strlen(site));
    buf_append_str(&title, "<title>");
    if (found && !c->is_protected) {
        const char *t = c->c.title;
        escape_html(&title, t, strlen(t));
        buf_append_str(&title, " — ");
        meta(&head, "property", "og:title", t, strlen(t));
        meta(&head, "name", "twitter:title", t, strlen(t));
        meta(&head, "property", "og:type", "video.other", strlen("video.other"));
        if (c->c.description[0]) {
            size_t n = utf8_prefix(c->c.description, OG_DESCRIPTION_MAX);
            meta(&head, "property", "og:description", c->c.description, n);
            meta(&head, "name", "description", c->c.description, n);
        }
        char url[1024];
        snprintf(url, sizeof url, "%.*s/c/%s", (int)base, cfg->site.public_url, c->c.slug);
        meta(&head, "property", "og:url", url, strlen(url));
        json_t *j = channel_ext_to_json(c, cfg->site.public_url, cfg->rtmp.listen, CHANNEL_VIEW_PUBLIC);
        const char *avatar = j ? json_string_value(json_object_get(j, "avatar_url")) : NULL;
        if (avatar) {
            snprintf(url, sizeof url, "%.*s%s", (int)base, cfg->site.public_url, avatar);
            meta(&head, "property", "og:image", url, strlen(url));
            meta(&head, "name", "twitter:card", "summary", strlen("summary"));
        } else {
            char file[CONFIG_PATH + 32];
            snprintf(file, sizeof file, "%s%s", cfg->http.static_dir, OG_STATIC);
            bool own = access(file, R_OK) == 0;
            snprintf(url, sizeof url, "%.*s%s", (int)base, cfg->site.public_url,
                     own ? OG_STATIC : OG_DEFAULT);
            meta(&head, "property", "og:image", url, strlen(url));
            if (!own) {
                meta(&head, "property", "og:image:type", "image/png", strlen("image/png"));
                meta(&head, "property", "og:image:width", "600", 3);
                meta(&head, "property", "og:image:height", "315", 3);
            }
            meta(&head, "name", "twitter:card", "summary_large_image",
                 strlen("summary_large_image"));
        }
        json_decref(j);
    }
    escape_html(&title, site, strlen(site));
    buf_append_str(&title, "</title>");
    free(c);

    shell_splice(&step, &shell, TITLE_MARK, title.data ? (const char *)title.data : "", title.len);
    shell_splice(&page, &step, HEAD_MARK, head.data ? (const char *)head.data : "", head.len);

    http_response_status(req, found ? 200 : 404);
    http_response_header(req, "Content-Type", "text/html; charset=utf-8");
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    http_response_body(req, page.data, page.len);
out:
    buf_free(&shell);
    buf_free(&head);
    buf_free(&title);
    buf_free(&step);
    buf_free(&page);
    return 0;
}

/* --- /og-default.png ------------------------------------------------------------ */

static unsigned char *og_png;
static size_t og_len;

static void release_nothing(void *opaque) { (void)opaque; }

static int og_default(struct http_request *req, void *ud)
{
    (void)ud;
    http_response_status(req, 200);
    http_response_header(req, "Content-Type", "image/png");
    http_response_header(req, "Cache-Control", "public, max-age=86400");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    http_response_body_ref(req, og_png, og_len, release_nothing, NULL);
    return 0;
}

int app_pages_register(struct app *app, struct http_server *srv)
{
    if (!og_png && og_image_render(&og_png, &og_len) < 0) {
        log_error("pages: out of memory drawing the default OpenGraph image");
        return -ENOMEM;
    }
    static const char *const shell_paths[] = {
        "/search", "/login", "/register", "/verify", "/reset", "/following",
        "/settings", "/settings/*rest", "/u/:name", "/topic/:slug", "/c/:slug/chat",
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof shell_paths / sizeof shell_paths[0]; i++)
        rc = http_server_route(srv, "GET", shell_paths[i], shell_page, app, 0);
    if (rc == 0)
        rc = http_server_route(srv, "GET", "/c/:slug", channel_page, app, HTTP_ROUTE_BLOCKING);
    if (rc == 0)
        rc = http_server_route(srv, "GET", "/watch/:slug", watch_redirect, app, 0);
    if (rc == 0)
        rc = http_server_route(srv, "GET", OG_DEFAULT, og_default, app, HTTP_ROUTE_CORS);
    return rc;
}
