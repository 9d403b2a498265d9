/*
 * The channel API: channels, the live directory, topics, following,
 * notifications, invitations and channel images, under /api/v1.
 *
 *   GET    /channels                     ?topic= ?q= ?owner= ?sort= ?limit= ?offset=
 *   POST   /channels                     {title, slug?, topic?, description?, record?,
 *                                         chat_enabled?, protected?}    streamer or admin
 *   GET    /channels/:slug               public view; owner: stream_key, obs; admin:
 *                                         rtmp_url, has_invite_code (never the key)
 *   PATCH  /channels/:slug               {title?, description?, topic?, live_title?,
 *                                         record?, chat_enabled?, protected?,
 *                                         chat_guests_may_talk?, chat_slow_mode?,
 *                                         chat_subject?}  owner/admin
 *   DELETE /channels/:slug               owner/admin; ends its stream
 *   POST   /channels/:slug/stream-key    owner/admin: a new key (shown to the owner only)
 *   POST   /channels/:slug/follow        {notify_email?}    a user
 *   DELETE /channels/:slug/follow
 *   POST   /channels/:slug/invite-code   owner/admin: a new code, shown once
 *   DELETE /channels/:slug/invite-code
 *   GET    /channels/:slug/invites       owner/admin
 *   POST   /channels/:slug/invites       {user}
 *   DELETE /channels/:slug/invites/:user
 *   GET|PUT|DELETE /channels/:slug/avatar, /channels/:slug/banner
 *   GET    /me/following
 *   GET    /me/notifications             ?unread=1
 *   POST   /me/notifications/read        {id?}
 *   GET    /live                         ?topic=
 *   GET    /topics
 *   POST   /topics                       {name}    admin
 *   PATCH  /topics/:slug                 {name}    admin; the slug stays
 *   DELETE /topics/:slug                 admin; its channels are left without a topic
 *   DELETE /me                           {password}: the account, as api_auth.c rules,
 *                                         and its channels as DELETE /channels/:slug
 *
 * Threads. Most of these need the database, which only a worker may touch,
 * and many also need the loop's state afterwards: a DELETE must end the
 * channel's stream in the hub, an edit must reach the live directory and the
 * door of protected channels, a channel's view shows its live viewer count.
 * So each such route is a loop handler that copies the request (method,
 * path, query, headers, body, parameters) into a job, answers HTTP_ASYNC and
 * queues the job on the worker pool. The worker identifies the caller
 * (auth_identify) and does the database work against the copy, so the
 * handler is plain synchronous code with the usual auth_require_* calls;
 * then the job's finish step runs on the loop, does the loop's part, and the
 * response is moved onto the real request. If the client leaves meanwhile,
 * the job goes on (the channel is still deleted and its stream still ends)
 * but nothing is sent. GET /live needs no database at all: it is answered
 * on the loop from the live directory (viewers.c), which the hub's hooks
 * keep current and a worker fills with titles when a stream starts.
 *
 * A channel that goes (DELETE /channels/:slug, or its owner's DELETE /me)
 * goes one way: the row is deleted on the worker, then its chat room is
 * told, its images are removed (channel_gone), and on the loop its stream
 * ends, which drops the publisher, and its HLS address answers 404 at once
 * rather than lingering (end_gone). DELETE /me is a route of this file for
 * that reason: the password and session rules stay in api_auth.c
 * (api_auth_me_delete), which calls back here for the channels.
 *
 * Peak viewers: the live directory keeps each stream's peak; the sweep hands
 * a rising peak to on_peak at most every VIEWERS_PEAK_SAVE_MS, and a worker
 * writes it to the stream's row, so a crash loses at most that much. The
 * stream's end writes the final one.
 *
 * Search: GET /channels?q= also returns "users", the accounts whose name
 * contains q, with or without channels.
 *
 * Nothing the server sends here is HTML: every answer is JSON (or an image
 * whose bytes were checked to be PNG, JPEG or WebP), with
 * X-Content-Type-Options: nosniff. Descriptions are Markdown, stored and
 * returned as text for the front end to render without raw HTML.
 *
 * Chat: a channel's JSON carries its chat settings (api_chat.c keeps the
 * rules for them) and "chatters", the occupants of its room now, as do the
 * items of GET /live. An edit or a deletion tells the MUC service
 * (chat_room_changed), so the open room follows at once. The slug cannot be
 * changed, so a room is never renamed from here.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "app/accounts.h"
#include "app/api_chat.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/channels_extra.h"
#include "app/mail.h"
#include "app/settings.h"
#include "app/viewers.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "media/stream.h"
#include "net/http.h"
#include "store/db.h"

#define SECRET_KEY "internal.access_token_secret"
#define AVATAR_MAX (1u << 20)
#define BANNER_MAX (4u << 20)
#define IMAGE_DIM_MAX 8192
#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX 100
#define QUERY_MAX 100
#define LIVE_MAIL_MAX 200 /* e-mails per go-live; the mail queue holds 256 */

struct chan_api {
    struct app *app;
    struct http_server *srv;
    struct stream_hub *hub;
    struct hls *hls;
    struct viewers *viewers;
    uv_loop_t *loop;
    unsigned char secret[VIEWERS_SECRET_BYTES];
    bool secure;
};

static struct chan_api *the_api;

struct viewers *api_channels_viewers(void) { return the_api ? the_api->viewers : NULL; }

/* ==== jobs: a loop handler, a worker step, a loop step ==================== */

struct job;
typedef void (*job_run_fn)(struct job *j, struct db *db);
typedef void (*job_finish_fn)(struct job *j);

struct job {
    uv_work_t work;
    struct chan_api *api;
    struct http_request *req; /* the real request; NULL once its client left */
    struct http_request sh;   /* the worker's copy */
    char *store;              /* the copy's strings */
    job_run_fn run;
    job_finish_fn finish;
    struct auth_ctx auth;

    /* Left by run for finish. */
    json_t *out; /* sent as JSON with status after finish, when not NULL */
    int status;
    char slug[CHANNEL_SLUG_MAX + 1];
    int64_t channel_id;
    bool access_changed; /* tell the door: */
    bool is_protected;
    int64_t access_gen;
    char invite_hash[CHANNEL_HASH_HEX + 1];
    bool info_changed; /* tell the live directory: */
    char live_title[CHANNEL_TITLE_MAX + 1];
    char owner[ACCOUNT_NAME_MAX + 1];
    char topic[TOPIC_NAME_MAX + 1];
    char topic_slug[CHANNEL_SLUG_MAX + 1];
    char avatar_url[200];
    struct gone *gone; /* channels deleted: finish ends their streams */
    size_t ngone, capgone;
    bool topic_changed; /* a topic was renamed or removed: */
    bool topic_removed;
    char topic_name[TOPIC_NAME_MAX + 1];
    bool add_live;    /* out is a channel: add "live" */
    bool add_live_list; /* out has "channels": add "live" to each */
};

struct gone {
    char slug[CHANNEL_SLUG_MAX + 1];
    int64_t channel_id;
};

static size_t str_need(const char *s) { return s ? strlen(s) + 1 : 0; }

static char *str_put(char **p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = *p;
    memcpy(d, s, n);
    *p += n;
    return d;
}

static void job_free(struct job *j)
{
    free(j->gone);
    json_decref(j->out);
    buf_free(&j->sh.body);
    buf_free(&j->sh.res.headers);
    buf_free(&j->sh.res.body);
    free(j->store);
    free(j);
}

static struct job *job_new(struct chan_api *api, struct http_request *req, job_run_fn run,
                           job_finish_fn finish)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    size_t need = str_need(req->method_name) + str_need(req->url) + str_need(req->path) +
                  str_need(req->query);
    for (int i = 0; i < req->nheaders; i++)
        need += str_need(req->headers[i].name) + str_need(req->headers[i].value);
    for (int i = 0; i < req->nparams; i++)
        need += str_need(req->params[i].value);
    j->store = malloc(need ? need : 1);
    if (!j->store) {
        free(j);
        return NULL;
    }
    char *p = j->store;
    struct http_request *sh = &j->sh;
    sh->server = req->server;
    sh->method = req->method;
    sh->method_name = str_put(&p, req->method_name);
    sh->url = str_put(&p, req->url);
    sh->path = str_put(&p, req->path);
    sh->query = str_put(&p, req->query);
    for (int i = 0; i < req->nheaders; i++) {
        sh->headers[i].name = str_put(&p, req->headers[i].name);
        sh->headers[i].value = str_put(&p, req->headers[i].value);
    }
    sh->nheaders = req->nheaders;
    for (int i = 0; i < req->nparams; i++) {
        sh->params[i].name = req->params[i].name; /* the router's, as long-lived as the server */
        sh->params[i].value = str_put(&p, req->params[i].value);
    }
    sh->nparams = req->nparams;
    sh->http_major = req->http_major;
    sh->http_minor = req->http_minor;
    sh->keep_alive = req->keep_alive;
    sh->head = req->head;
    memcpy(sh->remote, req->remote, sizeof sh->remote);
    sh->start_ns = req->start_ns;
    sh->route_flags = req->route_flags;
    buf_init(&sh->body, 0);
    buf_init(&sh->res.headers, 0);
    buf_init(&sh->res.body, 0);
    sh->res.file_fd = -1;
    if (req->body.len && (buf_append(&sh->body, req->body.data, req->body.len) < 0 ||
                          buf_cstr(&sh->body) < 0)) {
        job_free(j);
        return NULL;
    }
    j->api = api;
    j->req = req;
    j->run = run;
    j->finish = finish;
    j->status = 200;
    return j;
}

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct app *app = j->api->app;
    struct db *db = db_pool_acquire(app->db);
    if (!db) {
        http_response_error(&j->sh, 503, "unavailable", "the database is unavailable");
        return;
    }
    if (auth_identify(app, db, &j->sh, &j->auth) == 0) {
        /* A key that does not work is an error even where a guest may read:
         * a script must not quietly get the guest's view. */
        if (j->auth.bad_api_key)
            auth_require_user(&j->sh, &j->auth);
        else
            j->run(j, db);
    }
    db_pool_release(app->db, db);
}

static void add_live(struct chan_api *api, json_t *ch);

static void job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct http_request *sh = &j->sh;
    if (status == 0 && j->finish)
        j->finish(j);
    if (status < 0) {
        json_decref(j->out);
        j->out = NULL;
        http_response_error(sh, 500, "internal", "the request was cancelled");
    }
    if (j->out) {
        if (j->add_live)
            add_live(j->api, j->out);
        if (j->add_live_list) {
            size_t i;
            json_t *c;
            json_array_foreach(json_object_get(j->out, "channels"), i, c) add_live(j->api, c);
        }
        if (http_response_json(sh, j->status, j->out) < 0)
            http_response_error(sh, 500, "internal", "out of memory");
    }
    struct http_request *req = j->req;
    if (req) {
        req->on_abort = NULL;
        req->user = NULL;
        http_response_status(req, sh->res.status ? sh->res.status : 200);
        if (sh->res.headers.len)
            buf_append(&req->res.headers, sh->res.headers.data, sh->res.headers.len);
        http_response_header(req, "X-Content-Type-Options", "nosniff");
        if (sh->res.body_kind == HTTP_BODY_BUF && sh->res.body.len)
            http_response_body(req, sh->res.body.data, sh->res.body.len);
        if (sh->res.etag[0])
            http_response_etag(req, sh->res.etag);
        http_request_finish(req);
    }
    job_free(j);
}

static void job_abort(struct http_request *req)
{
    struct job *j = req->user;
    if (j)
        j->req = NULL;
}

static int job_start(struct chan_api *api, struct http_request *req, job_run_fn run,
                     job_finish_fn finish)
{
    struct job *j = job_new(api, req, run, finish);
    if (!j) {
        http_response_error(req, 503, "unavailable", "out of memory");
        return 0;
    }
    j->work.data = j;
    if (uv_queue_work(api->loop, &j->work, job_work, job_done) != 0) {
        job_free(j);
        http_response_error(req, 503, "unavailable", "worker pool unavailable");
        return 0;
    }
    req->user = j;
    req->on_abort = job_abort;
    return HTTP_ASYNC;
}

/* One loop handler per (run, finish) pair. */
#define JOB_ROUTE(name, run, finish)                                                             \
    static int name(struct http_request *req, void *ud) { return job_start(ud, req, run, finish); }

/* ==== small helpers (worker side) ========================================= */

static const struct config *cfg_of(struct job *j) { return j->api->app->cfg; }

static void reply(struct job *j, int status, json_t *o)
{
    json_decref(j->out);
    j->out = o;
    j->status = status;
    if (!o)
        http_response_error(&j->sh, 500, "internal", "out of memory");
}

/* Map a channels/accounts error to a status. */
static void fail_rc(struct job *j, int rc, const char *err)
{
    switch (rc) {
    case -EINVAL: http_response_error(&j->sh, 400, "invalid", err); break;
    case -EEXIST: http_response_error(&j->sh, 409, "conflict", err); break;
    case -ENOENT: http_response_error(&j->sh, 404, "not_found", err); break;
    case -EACCES: http_response_error(&j->sh, 403, "forbidden", err); break;
    case -ENOMEM: http_response_error(&j->sh, 503, "unavailable", "out of memory"); break;
    default:
        log_error("http %s: %s %s: %s", j->sh.remote, j->sh.method_name, j->sh.path, err);
        http_response_error(&j->sh, 500, "internal", "database error");
    }
}

static void db_fail(struct job *j, struct db *db, int rc, const char *what)
{
    char err[256];
    snprintf(err, sizeof err, "database error while %s: %s", what, db_errmsg(db));
    fail_rc(j, rc < 0 && rc > -1000 && rc != -ENOMEM ? DB_EERROR : rc, err);
}

static void bad_field(struct job *j, const char *key, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "'%s' %s", key, what);
    http_response_error(&j->sh, 400, "invalid", msg);
}

/* The channel named by :slug (malloc'd: it holds a 2 KB description), or NULL after a 404/500. */
static struct channel_ext *load_channel(struct job *j, struct db *db)
{
    const char *slug = http_request_param(&j->sh, "slug");
    struct channel_ext *c = malloc(sizeof *c);
    if (!c) {
        http_response_error(&j->sh, 503, "unavailable", "out of memory");
        return NULL;
    }
    char err[256];
    int rc = channel_ext_find(db, slug, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        free(c);
        return NULL;
    }
    snprintf(j->slug, sizeof j->slug, "%s", c->c.slug);
    j->channel_id = c->c.id;
    return c;
}

/* Remember what the loop's door and live directory must learn about c. */
static void note_channel(struct job *j, const struct channel_ext *c)
{
    j->access_changed = true;
    j->is_protected = c->is_protected;
    j->access_gen = c->access_gen;
    snprintf(j->invite_hash, sizeof j->invite_hash, "%s", c->invite_code_hash);
    j->info_changed = true;
    snprintf(j->live_title, sizeof j->live_title, "%s", channel_ext_live_title(c));
    snprintf(j->owner, sizeof j->owner, "%s", c->c.owner_name);
    snprintf(j->topic, sizeof j->topic, "%s", c->c.topic);
    snprintf(j->topic_slug, sizeof j->topic_slug, "%s", c->topic_slug);
    json_t *tmp = channel_ext_to_json(c, NULL, NULL, CHANNEL_VIEW_PUBLIC);
    const char *av = json_string_value(json_object_get(tmp, "avatar_url"));
    snprintf(j->avatar_url, sizeof j->avatar_url, "%s", av ? av : "");
    json_decref(tmp);
}

/* What the caller may see of c: the key is its owner's alone. */
static enum channel_view view_of(struct job *j, const struct channel_ext *c)
{
    if (auth_is_user(&j->auth) && j->auth.user.id == c->c.owner_id)
        return CHANNEL_VIEW_OWNER;
    if (auth_can_manage(&j->auth, c->c.owner_id))
        return CHANNEL_VIEW_MANAGER;
    return CHANNEL_VIEW_PUBLIC;
}

/*
 * A channel as the API shows it, with its chat settings and the room's
 * occupants: as the caller may see it when personal, else the public view
 * (lists never carry anyone's key).
 */
static json_t *channel_json(struct job *j, struct db *db, const struct channel_ext *c,
                            bool personal)
{
    json_t *o = channel_ext_to_json(c, cfg_of(j)->site.public_url, cfg_of(j)->rtmp.listen,
                                    personal ? view_of(j, c) : CHANNEL_VIEW_PUBLIC);
    struct chat_settings cs;
    if (o && chat_settings_load(db, c->c.id, &cs) == 0)
        chat_channel_json(j->api->app, o, c->c.id, &cs);
    return o;
}

/* A valid hearth_access cookie for c in the request. */
static bool has_access_token(const struct chan_api *api, struct http_request *req,
                             const struct channel_ext *c)
{
    int64_t now = util_now_unix();
    for (int h = 0; h < req->nheaders; h++) {
        if (strcasecmp(req->headers[h].name, "Cookie") != 0)
            continue;
        for (int i = 0; i < 4; i++) {
            char tok[VIEWERS_TOKEN_LEN + 2];
            int rc = auth_cookie_get(req->headers[h].value, VIEWERS_ACCESS_COOKIE, i, tok,
                                     sizeof tok);
            if (rc == -ENOENT)
                break;
            if (rc == 0 && viewers_token_check(api->secret, tok, c->c.id, c->access_gen, now, NULL))
                return true;
        }
    }
    return false;
}

/*
 * May the caller watch c (and see it)? Owner, admin, invited user, a watch
 * token, or ?invite=CODE. Also for the chat routes (api_chat.c).
 */
bool api_channels_may_watch(struct http_request *req, struct db *db, const struct auth_ctx *a,
                            const struct channel_ext *c)
{
    if (!c->is_protected)
        return true;
    if (auth_can_manage(a, c->c.owner_id))
        return true;
    bool invited = false;
    if (auth_is_user(a) && channel_is_invited(db, c->c.id, a->user.id, &invited) == 0 && invited)
        return true;
    if (the_api && has_access_token(the_api, req, c))
        return true;
    char code[128];
    return c->invite_code_hash[0] && http_request_query(req, "invite", code, sizeof code) == 0 &&
           channel_invite_code_matches(c->invite_code_hash, code);
}

static bool may_watch(struct job *j, struct db *db, const struct channel_ext *c)
{
    return api_channels_may_watch(&j->sh, db, &j->auth, c);
}

static void refuse_protected(struct job *j)
{
    http_response_error(&j->sh, 403, "protected",
                        "this channel is protected: only its owner, invited users and holders of "
                        "its invite code may watch it");
}

/* Watch-token cookies for the channel's HLS and for its API paths. */
static void give_access(struct job *j, const struct channel_ext *c)
{
    char token[VIEWERS_TOKEN_LEN + 1], path[96], cookie[256];
    int64_t now = util_now_unix();
    viewers_token_make(j->api->secret, c->c.id, c->access_gen, now + VIEWERS_TOKEN_TTL, token);
    snprintf(path, sizeof path, "/live/%s/", c->c.slug);
    if (viewers_access_cookie(cookie, sizeof cookie, token, path, VIEWERS_TOKEN_TTL, j->api->secure) == 0)
        http_response_header(&j->sh, "Set-Cookie", cookie);
    snprintf(path, sizeof path, "/api/v1/channels/%s", c->c.slug);
    if (viewers_access_cookie(cookie, sizeof cookie, token, path, VIEWERS_TOKEN_TTL, j->api->secure) == 0)
        http_response_header(&j->sh, "Set-Cookie", cookie);
}

/* The JSON body, or NULL after an error. Empty bodies are {} when allowed. */
static json_t *body_object(struct job *j, bool empty_ok)
{
    if (empty_ok && j->sh.body.len == 0)
        return json_object();
    return auth_json_body(&j->sh, AUTH_JSON_MAX);
}

/* Integer query parameter in [lo, hi]; def when absent; false after a 400. */
static bool query_int(struct job *j, const char *name, int def, int lo, int hi, int *out)
{
    char v[32];
    *out = def;
    int rc = http_request_query(&j->sh, name, v, sizeof v);
    if (rc == -ENOENT)
        return true;
    char *end;
    long x = rc == 0 ? strtol(v, &end, 10) : 0;
    if (rc != 0 || end == v || *end || x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' must be a whole number from %d to %d", name, lo, hi);
        http_response_error(&j->sh, 400, "invalid", msg);
        return false;
    }
    *out = (int)x;
    return true;
}

/* ==== loop-side finishing ================================================= */

static void add_live(struct chan_api *api, json_t *ch)
{
    const char *slug = json_string_value(json_object_get(ch, "slug"));
    const struct viewers_live *l = slug ? viewers_live_find(api->viewers, slug) : NULL;
    if (!l) {
        json_object_set_new(ch, "live", json_null());
        return;
    }
    const char *title = l->info_loaded ? l->title : NULL;
    if (!title)
        title = json_string_value(json_object_get(ch, "live_title"));
    if (!title)
        title = json_string_value(json_object_get(ch, "title"));
    json_object_set_new(ch, "live",
                        json_pack("{s:I, s:I, s:I, s:s?}", "started_at", (json_int_t)l->started_at,
                                  "viewers", (json_int_t)l->count, "peak_viewers",
                                  (json_int_t)l->peak, "title", title));
}

/* A channel's row is gone (worker): what else it had goes too, and finish ends its stream. */
static void channel_gone(struct job *j, const struct channel_ext *c);

/* The loop's part of a channel that is gone. */
static void end_gone(struct chan_api *api, const struct gone *g)
{
    /* Its HLS address answers 404 now, not for the last minute of an ended
     * stream, live or lingering; first, so that lifting the channel's
     * protection below never opens that minute to everyone. */
    viewers_channel_gone(api->viewers, g->slug, uv_now(api->loop));
    viewers_access_set(api->viewers, g->slug, g->channel_id, false, 0, NULL);
    /* Only streams the directory knows: the hub is gone once they have all ended. */
    if (!viewers_live_find(api->viewers, g->slug) || !api->hub)
        return;
    struct stream *s = stream_hub_find(api->hub, g->slug);
    if (!s)
        return;
    log_info("stream %s: the channel was deleted; ending its stream", g->slug);
    stream_end(s); /* the publisher is dropped on its next frame */
}

/* A topic was renamed or removed: live channels filed under it show that at once. */
struct topic_fix {
    char slug[CHANNEL_SLUG_MAX + 1];
    uint64_t session;
    char title[CHANNEL_TITLE_MAX + 1];
    char owner[ACCOUNT_NAME_MAX + 1];
    char avatar_url[200];
};

struct topic_fixes {
    const char *topic_slug;
    struct topic_fix *v;
    size_t n, cap;
};

static void topic_fix_one(const struct viewers_live *l, void *ud)
{
    struct topic_fixes *f = ud;
    if (!l->info_loaded || strcmp(l->topic_slug, f->topic_slug) != 0)
        return;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        struct topic_fix *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return;
        f->v = v;
        f->cap = cap;
    }
    struct topic_fix *x = &f->v[f->n++];
    snprintf(x->slug, sizeof x->slug, "%s", l->slug);
    x->session = l->session;
    snprintf(x->title, sizeof x->title, "%s", l->title);
    snprintf(x->owner, sizeof x->owner, "%s", l->owner);
    snprintf(x->avatar_url, sizeof x->avatar_url, "%s", l->avatar_url);
}

static void finish_topic(struct job *j)
{
    if (!j->topic_changed)
        return;
    struct topic_fixes f = {.topic_slug = j->slug};
    viewers_live_foreach(j->api->viewers, topic_fix_one, &f);
    for (size_t i = 0; i < f.n; i++)
        viewers_live_set_info(j->api->viewers, f.v[i].slug, f.v[i].session, f.v[i].title,
                              f.v[i].owner, j->topic_removed ? "" : j->topic_name,
                              j->topic_removed ? "" : j->slug, f.v[i].avatar_url);
    free(f.v);
}

/* The door and the live directory learn what the worker changed. */
static void finish_channel(struct job *j)
{
    struct chan_api *api = j->api;
    for (size_t i = 0; i < j->ngone; i++)
        end_gone(api, &j->gone[i]);
    if (j->ngone || !j->slug[0])
        return;
    if (j->access_changed)
        viewers_access_set(api->viewers, j->slug, j->channel_id, j->is_protected, j->access_gen,
                           j->invite_hash);
    const struct viewers_live *l = viewers_live_find(api->viewers, j->slug);
    if (j->info_changed && l)
        viewers_live_set_info(api->viewers, j->slug, l->session, j->live_title, j->owner, j->topic,
                              j->topic_slug, j->avatar_url);
}

/* ==== channels ============================================================= */

struct list_ctx {
    struct job *j;
    struct db *db;
    json_t *arr;
};

static int list_one(const struct channel_ext *c, void *ud)
{
    struct list_ctx *lc = ud;
    json_t *o = channel_json(lc->j, lc->db, c, false);
    return o && json_array_append_new(lc->arr, o) == 0 ? 0 : -ENOMEM;
}

/* A user found by a search: what a public profile shows, and where it is. */
static int user_one(const struct user *u, void *ud)
{
    char url[ACCOUNT_NAME_MAX * 3 + 8];
    size_t n = (size_t)snprintf(url, sizeof url, "/u/");
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)u->name; *p && n + 4 < sizeof url; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            url[n++] = (char)*p;
        } else {
            url[n++] = '%';
            url[n++] = hex[*p >> 4];
            url[n++] = hex[*p & 15];
        }
    }
    url[n] = '\0';
    json_t *o = json_pack("{s:s, s:I, s:s}", "name", u->name, "created_at",
                          (json_int_t)u->created_at, "profile_url", url);
    return o && json_array_append_new(ud, o) == 0 ? 0 : -ENOMEM;
}

static void run_list(struct job *j, struct db *db)
{
    char topic[TOPIC_NAME_MAX + 1] = "", q[QUERY_MAX + 1] = "", owner[ACCOUNT_NAME_MAX + 1] = "",
         sort[16] = "";
    int limit, offset;
    int rc;
    if ((rc = http_request_query(&j->sh, "topic", topic, sizeof topic)) < 0 && rc != -ENOENT) {
        http_response_error(&j->sh, 400, "invalid", "'topic' is too long");
        return;
    }
    if ((rc = http_request_query(&j->sh, "q", q, sizeof q)) < 0 && rc != -ENOENT) {
        http_response_error(&j->sh, 400, "invalid", "'q' is at most 100 bytes");
        return;
    }
    if ((rc = http_request_query(&j->sh, "owner", owner, sizeof owner)) < 0 && rc != -ENOENT) {
        http_response_error(&j->sh, 400, "invalid", "'owner' is too long");
        return;
    }
    http_request_query(&j->sh, "sort", sort, sizeof sort);
    if (!query_int(j, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX, &limit) ||
        !query_int(j, "offset", 0, 0, 1000000, &offset))
        return;
    struct channel_query cq = {
        .topic = topic,
        .q = q,
        .owner = owner,
        .viewer_id = auth_is_user(&j->auth) ? j->auth.user.id : 0,
        .viewer_admin = auth_is_admin(&j->auth),
        .limit = limit,
        .offset = offset,
    };
    if (!sort[0] || strcmp(sort, "slug") == 0)
        cq.sort = CHANNEL_SORT_SLUG;
    else if (strcmp(sort, "recent") == 0)
        cq.sort = CHANNEL_SORT_RECENT;
    else if (strcmp(sort, "new") == 0)
        cq.sort = CHANNEL_SORT_NEW;
    else {
        http_response_error(&j->sh, 400, "invalid", "'sort' is slug, recent or new");
        return;
    }
    struct list_ctx lc = {.j = j, .db = db, .arr = json_array()};
    char err[256];
    rc = channel_ext_list(db, &cq, list_one, &lc, err, sizeof err);
    if (rc < 0) {
        json_decref(lc.arr);
        fail_rc(j, rc, err);
        return;
    }
    json_t *users = json_array();
    if (q[0] && (rc = user_search(db, q, USER_SEARCH_MAX, user_one, users, err, sizeof err)) < 0) {
        json_decref(lc.arr);
        json_decref(users);
        fail_rc(j, rc, err);
        return;
    }
    reply(j, 200, json_pack("{s:o, s:o, s:i, s:i}", "channels", lc.arr, "users", users, "limit",
                            limit, "offset", offset));
    j->add_live_list = true;
    http_response_header(&j->sh, "Cache-Control", "no-cache");
}

/* Optional booleans of a body: -1 absent, 0/1; false after a 400. */
static bool body_bool(struct job *j, json_t *o, const char *key, int *out)
{
    json_t *v = json_object_get(o, key);
    *out = -1;
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        bad_field(j, key, "must be true or false");
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/* Optional string: absent NULL (*present false); null allowed only when nullable. */
static bool body_str(struct job *j, json_t *o, const char *key, bool nullable, const char **out,
                     bool *present)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (present)
        *present = v != NULL;
    if (!v)
        return true;
    if (json_is_null(v) && nullable)
        return true;
    if (!json_is_string(v)) {
        bad_field(j, key, nullable ? "must be a string or null" : "must be a string");
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool only_keys(struct job *j, json_t *o, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown field '%.64s'", key);
            http_response_error(&j->sh, 400, "invalid", msg);
            return false;
        }
    }
    return true;
}

/* The editable fields of a body into p and cp (chat); false after a 400. */
static bool parse_patch(struct job *j, json_t *b, struct channel_patch *p, struct chat_patch *cp,
                        bool creating)
{
    static const char *const edit_keys[] = {"title", "description", "topic", "live_title", "record",
                                            "chat_enabled", "protected", "chat_guests_may_talk",
                                            "chat_slow_mode", "chat_subject", NULL};
    static const char *const create_keys[] = {"title", "slug", "description", "topic", "live_title",
                                              "record", "chat_enabled", "protected",
                                              "chat_guests_may_talk", "chat_slow_mode",
                                              "chat_subject", NULL};
    memset(p, 0, sizeof *p);
    if (!only_keys(j, b, creating ? create_keys : edit_keys))
        return false;
    if (!chat_patch_parse(&j->sh, b, cp))
        return false;
    char err[256];
    if (!body_str(j, b, "title", false, &p->title, NULL) ||
        !body_str(j, b, "description", false, &p->description, NULL) ||
        !body_str(j, b, "topic", true, &p->topic, &p->topic_set) ||
        !body_str(j, b, "live_title", true, &p->live_title, &p->live_title_set) ||
        !body_bool(j, b, "record", &p->record) || !body_bool(j, b, "chat_enabled", &p->chat_enabled) ||
        !body_bool(j, b, "protected", &p->is_protected))
        return false;
    if (p->title && channel_title_valid(p->title, err, sizeof err) < 0) {
        http_response_error(&j->sh, 400, "invalid", err);
        return false;
    }
    if (p->description && channel_description_valid(p->description, err, sizeof err) < 0) {
        http_response_error(&j->sh, 400, "invalid", err);
        return false;
    }
    return true;
}

static void run_create(struct job *j, struct db *db)
{
    if (!auth_require_role(&j->sh, &j->auth, "streamer"))
        return;
    json_t *b = body_object(j, false);
    if (!b)
        return;
    struct channel_patch p;
    struct chat_patch cp;
    const char *slug = NULL;
    if (!parse_patch(j, b, &p, &cp, true) || !body_str(j, b, "slug", true, &slug, NULL))
        goto out;
    if (!p.title) {
        bad_field(j, "title", "is required");
        goto out;
    }
    bool admin = auth_is_admin(&j->auth);
    int64_t cap = CHANNELS_PER_USER_DEFAULT, owned = 0;
    int rc;
    if (!admin) {
        char v[SETTING_VALUE_MAX], why[256];
        if ((rc = settings_get(db, "max_channels_per_user", v, NULL, why, sizeof why)) < 0 ||
            (rc = channel_count_owned(db, j->auth.user.id, &owned)) < 0) {
            db_fail(j, db, rc, "counting channels");
            goto out;
        }
        cap = strtoll(v, NULL, 10);
        if (owned >= cap) {
            char msg[128];
            snprintf(msg, sizeof msg, "you may own at most %lld channel%s", (long long)cap,
                     cap == 1 ? "" : "s");
            http_response_error(&j->sh, 403, "channel_limit", msg);
            goto out;
        }
    }
    char err[256];
    struct channel ch;
    rc = channel_add(db, j->auth.user.name, p.title, slug, p.topic_set ? p.topic : NULL, &ch, err,
                     sizeof err);
    if (rc == -ENOENT && p.topic) /* the topic; the user exists, we just identified them */
        rc = -EINVAL;
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    /* Two requests racing past the check: the later one gives its channel back. */
    if (!admin && channel_count_owned(db, j->auth.user.id, &owned) == 0 && owned > cap) {
        channel_delete(db, ch.slug, NULL, 0);
        http_response_error(&j->sh, 403, "channel_limit", "you reached your channel limit");
        goto out;
    }
    struct channel_ext *c = malloc(sizeof *c);
    if (!c) {
        channel_delete(db, ch.slug, NULL, 0);
        http_response_error(&j->sh, 503, "unavailable", "out of memory");
        goto out;
    }
    p.title = NULL;
    p.topic_set = false;
    rc = channel_update(db, ch.slug, &p, c, err, sizeof err);
    if (rc == 0 && (rc = chat_patch_apply(db, ch.id, &cp)) < 0)
        snprintf(err, sizeof err, "database error while saving chat settings: %s", db_errmsg(db));
    if (rc < 0) {
        channel_delete(db, ch.slug, NULL, 0);
        fail_rc(j, rc, err);
        free(c);
        goto out;
    }
    snprintf(j->slug, sizeof j->slug, "%s", c->c.slug);
    j->channel_id = c->c.id;
    note_channel(j, c);
    reply(j, 201, channel_json(j, db, c, true));
    http_response_headerf(&j->sh, "Location", "/api/v1/channels/%s", c->c.slug);
    http_response_header(&j->sh, "Cache-Control", "no-store");
    j->add_live = true;
    /* a name probed before it existed is remembered as unknown for a while */
    chat_room_changed(j->api->app, c->c.id, NULL);
    free(c);
out:
    json_decref(b);
}

static void run_get(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!may_watch(j, db, c)) {
        refuse_protected(j);
        free(c);
        return;
    }
    json_t *o = channel_json(j, db, c, true);
    if (o && auth_is_user(&j->auth)) {
        bool following = false, notify = false;
        channel_follow_state(db, j->auth.user.id, c->c.id, &following, &notify);
        json_object_set_new(o, "following", json_boolean(following));
        json_object_set_new(o, "notify_email", json_boolean(notify));
    }
    reply(j, 200, o);
    if (c->is_protected)
        give_access(j, c);
    /* Personal (following, the key): never from a shared cache. */
    http_response_header(&j->sh, "Cache-Control", "private, no-store");
    j->add_live = true;
    free(c);
}

static void run_patch(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    json_t *b = NULL;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    if (!(b = body_object(j, false)))
        goto out;
    struct channel_patch p;
    struct chat_patch cp;
    if (!parse_patch(j, b, &p, &cp, false))
        goto out;
    char err[256];
    /* channel_update checks the rest (a topic may not exist); the chat fields are checked
     * already, so after it only a database failure can stop them. */
    int rc = channel_update(db, c->c.slug, &p, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    if ((rc = chat_patch_apply(db, c->c.id, &cp)) < 0) {
        db_fail(j, db, rc, "saving chat settings");
        goto out;
    }
    /* The room's policy, subject (the title when it has none) or chat on/off may have changed. */
    chat_room_changed(j->api->app, c->c.id, NULL);
    note_channel(j, c);
    reply(j, 200, channel_json(j, db, c, true));
    http_response_header(&j->sh, "Cache-Control", "no-store");
    j->add_live = true;
out:
    json_decref(b);
    free(c);
}

static void remove_file(struct job *j, const char *rel)
{
    if (!rel || !rel[0] || strstr(rel, ".."))
        return;
    char path[CONFIG_PATH + CHANNEL_IMAGE_PATH_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", cfg_of(j)->storage.data_dir, rel);
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("channels: cannot remove %s: %s", path, strerror(errno));
}

static void channel_gone(struct job *j, const struct channel_ext *c)
{
    chat_room_changed(j->api->app, c->c.id, NULL); /* the room closes */
    remove_file(j, c->avatar_path);
    remove_file(j, c->banner_path);
    if (j->ngone == j->capgone) {
        size_t cap = j->capgone ? 2 * j->capgone : 4;
        struct gone *g = realloc(j->gone, cap * sizeof *g);
        if (!g) {
            log_error("http %s: channel '%s' deleted, but its live stream (if any) goes on: out "
                      "of memory", j->sh.remote, c->c.slug);
            return;
        }
        j->gone = g;
        j->capgone = cap;
    }
    struct gone *g = &j->gone[j->ngone++];
    snprintf(g->slug, sizeof g->slug, "%s", c->c.slug);
    g->channel_id = c->c.id;
}

static void run_delete(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    char err[256];
    int rc = channel_delete(db, c->c.slug, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    log_info("http %s: channel '%s' deleted by '%s'", j->sh.remote, c->c.slug, j->auth.user.name);
    channel_gone(j, c);
    http_response_status(&j->sh, 204);
out:
    free(c);
}

static void run_stream_key(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    char err[256];
    int rc = channel_key_reset(db, c->c.slug, NULL, err, sizeof err);
    if (rc == 0)
        rc = channel_ext_find(db, c->c.slug, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    reply(j, 200, channel_json(j, db, c, true));
    http_response_header(&j->sh, "Cache-Control", "no-store");
out:
    free(c);
}

/* ==== following ============================================================ */

static void run_follow(struct job *j, struct db *db)
{
    if (!auth_require_user(&j->sh, &j->auth))
        return;
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    json_t *b = NULL;
    if (!may_watch(j, db, c)) {
        refuse_protected(j);
        goto out;
    }
    bool del = j->sh.method_name && strcmp(j->sh.method_name, "DELETE") == 0;
    char err[256];
    int rc;
    if (del) {
        rc = channel_unfollow(db, j->auth.user.id, c->c.id, err, sizeof err);
        if (rc == -ENOENT)
            rc = 0; /* DELETE is idempotent */
    } else {
        int notify = -1;
        if (!(b = body_object(j, true)))
            goto out;
        static const char *const keys[] = {"notify_email", NULL};
        if (!only_keys(j, b, keys) || !body_bool(j, b, "notify_email", &notify))
            goto out;
        rc = channel_follow(db, j->auth.user.id, c->c.id, notify, err, sizeof err);
    }
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    bool following = false, notify = false;
    channel_follow_state(db, j->auth.user.id, c->c.id, &following, &notify);
    channel_ext_find_id(db, c->c.id, c, NULL, 0);
    reply(j, 200, json_pack("{s:s, s:b, s:b, s:I}", "slug", c->c.slug, "following", following,
                            "notify_email", notify, "followers", (json_int_t)c->followers));
    http_response_header(&j->sh, "Cache-Control", "no-store");
out:
    json_decref(b);
    free(c);
}

/* A followed channel, with the follower's own e-mail choice for it. */
static int following_one(const struct channel_ext *c, void *ud)
{
    struct list_ctx *lc = ud;
    json_t *o = channel_json(lc->j, lc->db, c, false);
    bool following = false, notify = false;
    if (o)
        channel_follow_state(lc->db, lc->j->auth.user.id, c->c.id, &following, &notify);
    if (o)
        json_object_set_new(o, "notify_email", json_boolean(notify));
    return o && json_array_append_new(lc->arr, o) == 0 ? 0 : -ENOMEM;
}

static void run_following(struct job *j, struct db *db)
{
    if (!auth_require_user(&j->sh, &j->auth))
        return;
    int limit, offset;
    if (!query_int(j, "limit", LIST_LIMIT_MAX, 1, LIST_LIMIT_MAX, &limit) ||
        !query_int(j, "offset", 0, 0, 1000000, &offset))
        return;
    struct channel_query cq = {
        .followed_by = j->auth.user.id,
        .viewer_id = j->auth.user.id,
        .viewer_admin = auth_is_admin(&j->auth),
        .sort = CHANNEL_SORT_RECENT,
        .limit = limit,
        .offset = offset,
    };
    struct list_ctx lc = {.j = j, .db = db, .arr = json_array()};
    char err[256];
    int rc = channel_ext_list(db, &cq, following_one, &lc, err, sizeof err);
    if (rc < 0) {
        json_decref(lc.arr);
        fail_rc(j, rc, err);
        return;
    }
    reply(j, 200, json_pack("{s:o, s:i, s:i}", "channels", lc.arr, "limit", limit, "offset", offset));
    j->add_live_list = true;
    http_response_header(&j->sh, "Cache-Control", "no-store");
}

/* ==== notifications ======================================================== */

static int notification_one(const struct notification *n, void *ud)
{
    json_t *arr = ud;
    json_t *ch = n->channel_id ? json_pack("{s:s, s:s}", "slug", n->channel_slug, "title",
                                           n->channel_title)
                               : json_null();
    json_t *o = json_pack("{s:I, s:s, s:o, s:I, s:o}", "id", (json_int_t)n->id, "kind", n->kind,
                          "channel", ch ? ch : json_null(), "created_at", (json_int_t)n->created_at,
                          "read_at", n->read_at ? json_integer((json_int_t)n->read_at) : json_null());
    return o && json_array_append_new(arr, o) == 0 ? 0 : -ENOMEM;
}

static void run_notifications(struct job *j, struct db *db)
{
    if (!auth_require_user(&j->sh, &j->auth))
        return;
    int limit, unread;
    if (!query_int(j, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX, &limit) ||
        !query_int(j, "unread", 0, 0, 1, &unread))
        return;
    json_t *arr = json_array();
    char err[256];
    int rc = notifications_list(db, j->auth.user.id, unread, limit, notification_one, arr, err,
                                sizeof err);
    if (rc < 0) {
        json_decref(arr);
        fail_rc(j, rc, err);
        return;
    }
    reply(j, 200, json_pack("{s:o}", "notifications", arr));
    http_response_header(&j->sh, "Cache-Control", "no-store");
}

static void run_notifications_read(struct job *j, struct db *db)
{
    if (!auth_require_user(&j->sh, &j->auth))
        return;
    json_t *b = body_object(j, true);
    if (!b)
        return;
    static const char *const keys[] = {"id", NULL};
    json_t *id = json_object_get(b, "id");
    if (!only_keys(j, b, keys))
        goto out;
    if (id && (!json_is_integer(id) || json_integer_value(id) <= 0)) {
        bad_field(j, "id", "must be a notification id");
        goto out;
    }
    int64_t changed = 0;
    int rc = notifications_mark_read(db, j->auth.user.id, id ? json_integer_value(id) : 0,
                                     util_now_unix(), &changed);
    if (rc < 0) {
        db_fail(j, db, rc, "marking notifications read");
        goto out;
    }
    reply(j, 200, json_pack("{s:I}", "marked", (json_int_t)changed));
    http_response_header(&j->sh, "Cache-Control", "no-store");
out:
    json_decref(b);
}

/* ==== protection: invite code and invitations ============================== */

static void run_invite_code(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    bool del = strcmp(j->sh.method_name, "DELETE") == 0;
    char err[256], code[CHANNEL_INVITE_CODE_LEN + 1];
    int rc = del ? channel_invite_code_clear(db, c->c.id, err, sizeof err)
                 : channel_invite_code_new(db, c->c.id, code, err, sizeof err);
    if (rc == 0)
        rc = channel_ext_find_id(db, c->c.id, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    note_channel(j, c);
    j->info_changed = false;
    if (del) {
        http_response_status(&j->sh, 204);
        goto out;
    }
    const char *pub = cfg_of(j)->site.public_url;
    size_t base = strlen(pub);
    while (base > 0 && pub[base - 1] == '/')
        base--;
    char url[512];
    snprintf(url, sizeof url, "%.*s/c/%s?invite=%s", (int)base, pub, c->c.slug, code);
    reply(j, 200, json_pack("{s:s, s:s, s:b}", "invite_code", code, "invite_url", url, "protected",
                            c->is_protected));
    http_response_header(&j->sh, "Cache-Control", "no-store");
    sodium_memzero(code, sizeof code);
out:
    free(c);
}

static int invite_one(const struct user *u, int64_t at, void *ud)
{
    json_t *o = json_pack("{s:s, s:I}", "user", u->name, "invited_at", (json_int_t)at);
    return o && json_array_append_new(ud, o) == 0 ? 0 : -ENOMEM;
}

static void run_invites(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    json_t *b = NULL;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    char err[256];
    int rc;
    if (strcmp(j->sh.method_name, "GET") == 0) {
        json_t *arr = json_array();
        rc = channel_invite_list(db, c->c.id, invite_one, arr, err, sizeof err);
        if (rc < 0) {
            json_decref(arr);
            fail_rc(j, rc, err);
            goto out;
        }
        reply(j, 200, json_pack("{s:o}", "invites", arr));
        http_response_header(&j->sh, "Cache-Control", "no-store");
        goto out;
    }
    if (strcmp(j->sh.method_name, "POST") == 0) {
        if (!(b = body_object(j, false)))
            goto out;
        static const char *const keys[] = {"user", NULL};
        const char *name;
        if (!only_keys(j, b, keys) || !body_str(j, b, "user", false, &name, NULL))
            goto out;
        if (!name) {
            bad_field(j, "user", "is required");
            goto out;
        }
        struct user u;
        rc = channel_invite_add(db, c->c.id, name, &u, err, sizeof err);
        if (rc < 0) {
            fail_rc(j, rc, err);
            goto out;
        }
        reply(j, 201, json_pack("{s:s, s:I}", "user", u.name, "invited_at", (json_int_t)util_now_unix()));
        chat_room_changed(j->api->app, c->c.id, NULL); /* a protected room admits them */
        goto out;
    }
    /* DELETE /invites/:user */
    rc = channel_invite_remove(db, c->c.id, http_request_param(&j->sh, "user"), err, sizeof err);
    if (rc == 0)
        rc = channel_ext_find_id(db, c->c.id, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    note_channel(j, c);
    j->info_changed = false;
    http_response_status(&j->sh, 204);
    chat_room_changed(j->api->app, c->c.id, NULL); /* a withdrawn invitee leaves (321) */
out:
    json_decref(b);
    free(c);
}

/* ==== images =============================================================== */

static unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * The type of an image by its bytes, with its size: "image/png", "image/jpeg",
 * "image/webp" or NULL. Only the headers are read; nothing is decoded.
 */
static const char *image_sniff(const unsigned char *p, size_t n, unsigned *w, unsigned *h,
                               const char **ext)
{
    *w = *h = 0;
    if (n >= 24 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(p + 12, "IHDR", 4) == 0) {
        *w = be32(p + 16);
        *h = be32(p + 20);
        *ext = "png";
        return "image/png";
    }
    if (n >= 4 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        size_t i = 2;
        while (i + 4 <= n) {
            if (p[i] != 0xff)
                return NULL;
            unsigned m = p[i + 1];
            if (m == 0xff) {
                i++;
                continue;
            }
            if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) {
                i += 2;
                continue;
            }
            if (m == 0xd9 || m == 0xda)
                return NULL; /* no frame header before the image data */
            unsigned len = be16(p + i + 2);
            if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
                if (i + 9 > n)
                    return NULL;
                *h = be16(p + i + 5);
                *w = be16(p + i + 7);
                *ext = "jpg";
                return "image/jpeg";
            }
            if (len < 2)
                return NULL;
            i += 2 + len;
        }
        return NULL;
    }
    if (n >= 30 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) {
        *ext = "webp";
        if (memcmp(p + 12, "VP8 ", 4) == 0 && p[23] == 0x9d && p[24] == 0x01 && p[25] == 0x2a) {
            *w = (p[26] | (unsigned)p[27] << 8) & 0x3fff;
            *h = (p[28] | (unsigned)p[29] << 8) & 0x3fff;
        } else if (memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2f) {
            uint32_t b = p[21] | (uint32_t)p[22] << 8 | (uint32_t)p[23] << 16 | (uint32_t)p[24] << 24;
            *w = (b & 0x3fff) + 1;
            *h = ((b >> 14) & 0x3fff) + 1;
        } else if (memcmp(p + 12, "VP8X", 4) == 0) {
            *w = (p[24] | (unsigned)p[25] << 8 | (unsigned)p[26] << 16) + 1;
            *h = (p[27] | (unsigned)p[28] << 8 | (unsigned)p[29] << 16) + 1;
        } else {
            return NULL;
        }
        return "image/webp";
    }
    return NULL;
}

static bool is_banner(struct job *j) { return strstr(j->sh.path, "/banner") != NULL; }

static int write_file(const char *path, const void *data, size_t len)
{
    char tmp[CONFIG_PATH + 300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

static void run_image_put(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    bool banner = is_banner(j);
    size_t max = banner ? BANNER_MAX : AVATAR_MAX;
    const char *ct = http_request_header(&j->sh, "Content-Type");
    char type[64] = "";
    if (ct)
        snprintf(type, sizeof type, "%.*s", (int)strcspn(ct, "; "), ct);
    if (strcasecmp(type, "image/png") != 0 && strcasecmp(type, "image/jpeg") != 0 &&
        strcasecmp(type, "image/webp") != 0) {
        http_response_error(&j->sh, 415, "unsupported_media_type",
                            "send the image as the body, with Content-Type image/png, image/jpeg "
                            "or image/webp");
        goto out;
    }
    if (j->sh.body.len > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "the %s is at most %zu KiB", banner ? "banner" : "avatar", max >> 10);
        http_response_error(&j->sh, 413, "too_large", msg);
        goto out;
    }
    unsigned w, h;
    const char *ext = NULL;
    const char *sniffed = image_sniff((const unsigned char *)j->sh.body.data, j->sh.body.len, &w, &h, &ext);
    if (!sniffed || strcasecmp(sniffed, type) != 0) {
        http_response_error(&j->sh, 400, "bad_image",
                            "the body is not a PNG, JPEG or WebP image of the type it claims");
        goto out;
    }
    if (w == 0 || h == 0 || w > IMAGE_DIM_MAX || h > IMAGE_DIM_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "an image is at most %d x %d pixels", IMAGE_DIM_MAX, IMAGE_DIM_MAX);
        http_response_error(&j->sh, 400, "bad_image", msg);
        goto out;
    }
    unsigned char rnd[8];
    char hex[17], rel[CHANNEL_IMAGE_PATH_MAX], dir[CONFIG_PATH + 64], path[CONFIG_PATH + 256];
    randombytes_buf(rnd, sizeof rnd);
    util_hex(rnd, sizeof rnd, hex);
    snprintf(rel, sizeof rel, "channels/%lld/%s-%s.%s", (long long)c->c.id,
             banner ? "banner" : "avatar", hex, ext);
    snprintf(dir, sizeof dir, "%s/channels/%lld", cfg_of(j)->storage.data_dir, (long long)c->c.id);
    snprintf(path, sizeof path, "%s/%s", cfg_of(j)->storage.data_dir, rel);
    int rc = util_mkdir_p(dir);
    if (rc == 0)
        rc = write_file(path, j->sh.body.data, j->sh.body.len);
    if (rc < 0) {
        log_error("channels: cannot write %s: %s", path, strerror(-rc));
        http_response_error(&j->sh, 500, "internal", "cannot store the image");
        goto out;
    }
    char old[CHANNEL_IMAGE_PATH_MAX], err[256];
    rc = channel_set_image(db, c->c.id, banner, rel, old, err, sizeof err);
    if (rc == 0)
        rc = channel_ext_find_id(db, c->c.id, c, err, sizeof err);
    if (rc < 0) {
        unlink(path);
        fail_rc(j, rc, err);
        goto out;
    }
    remove_file(j, old);
    note_channel(j, c);
    reply(j, 200, channel_json(j, db, c, true));
    http_response_header(&j->sh, "Cache-Control", "no-store");
out:
    free(c);
}

static void run_image_delete(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    if (!auth_require_owner(&j->sh, &j->auth, c->c.owner_id))
        goto out;
    char old[CHANNEL_IMAGE_PATH_MAX], err[256];
    int rc = channel_set_image(db, c->c.id, is_banner(j), NULL, old, err, sizeof err);
    if (rc == 0)
        rc = channel_ext_find_id(db, c->c.id, c, err, sizeof err);
    if (rc < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    remove_file(j, old);
    note_channel(j, c);
    http_response_status(&j->sh, 204);
out:
    free(c);
}

static void run_image_get(struct job *j, struct db *db)
{
    struct channel_ext *c = load_channel(j, db);
    if (!c)
        return;
    const char *rel = is_banner(j) ? c->banner_path : c->avatar_path;
    char path[CONFIG_PATH + CHANNEL_IMAGE_PATH_MAX + 2];
    int fd = -1;
    char *data = NULL;
    if (!may_watch(j, db, c)) {
        refuse_protected(j);
        goto out;
    }
    if (!rel[0] || strstr(rel, "..")) {
        http_response_error(&j->sh, 404, "not_found", "this channel has no such image");
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s", cfg_of(j)->storage.data_dir, rel);
    struct stat sb;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)BANNER_MAX) {
        log_warn("channels: image %s of '%s' is missing or unreadable", path, c->c.slug);
        http_response_error(&j->sh, 404, "not_found", "this channel has no such image");
        goto out;
    }
    size_t len = (size_t)sb.st_size, got = 0;
    data = malloc(len ? len : 1);
    while (data && got < len) {
        ssize_t r = read(fd, data + got, len - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    unsigned w, h;
    const char *ext;
    const char *type = data && got == len ? image_sniff((unsigned char *)data, len, &w, &h, &ext) : NULL;
    if (!type) {
        http_response_error(&j->sh, 500, "internal", "the stored image cannot be read");
        goto out;
    }
    http_response_status(&j->sh, 200);
    http_response_header(&j->sh, "Content-Type", type);
    http_response_header(&j->sh, "Content-Security-Policy", "default-src 'none'; sandbox");
    http_response_header(&j->sh, "Cache-Control",
                         c->is_protected ? "private, max-age=3600" : "public, max-age=31536000, immutable");
    const char *base = strrchr(rel, '/');
    char etag[80];
    snprintf(etag, sizeof etag, "\"%.64s\"", base ? base + 1 : rel);
    http_response_etag(&j->sh, etag);
    http_response_body(&j->sh, data, len);
out:
    if (fd >= 0)
        close(fd);
    free(data);
    free(c);
}

/* ==== topics =============================================================== */

static int topic_one(const struct topic *t, void *ud)
{
    json_t *o = json_pack("{s:I, s:s, s:s, s:I}", "id", (json_int_t)t->id, "name", t->name, "slug",
                          t->slug, "created_at", (json_int_t)t->created_at);
    return o && json_array_append_new(ud, o) == 0 ? 0 : -ENOMEM;
}

static void run_topics(struct job *j, struct db *db)
{
    char err[256];
    if (strcmp(j->sh.method_name, "POST") == 0) {
        if (!auth_require_admin(&j->sh, &j->auth))
            return;
        json_t *b = body_object(j, false);
        if (!b)
            return;
        static const char *const keys[] = {"name", NULL};
        const char *name;
        struct topic t;
        if (only_keys(j, b, keys) && body_str(j, b, "name", false, &name, NULL)) {
            int rc = name ? topic_add(db, name, &t, err, sizeof err) : -EINVAL;
            if (!name)
                bad_field(j, "name", "is required");
            else if (rc < 0)
                fail_rc(j, rc, err);
            else {
                json_t *arr = json_array();
                topic_one(&t, arr);
                reply(j, 201, json_incref(json_array_get(arr, 0)));
                json_decref(arr);
            }
        }
        json_decref(b);
        return;
    }
    json_t *arr = json_array();
    int rc = topic_list(db, topic_one, arr, err, sizeof err);
    if (rc < 0) {
        json_decref(arr);
        fail_rc(j, rc, err);
        return;
    }
    reply(j, 200, json_pack("{s:o}", "topics", arr));
    http_response_header(&j->sh, "Cache-Control", "no-cache");
}

/* PATCH /topics/:slug {name} and DELETE /topics/:slug (admin). */
static void run_topic(struct job *j, struct db *db)
{
    if (!auth_require_admin(&j->sh, &j->auth))
        return;
    const char *slug = http_request_param(&j->sh, "slug");
    char err[256];
    struct topic t;
    int rc;
    if (strcmp(j->sh.method_name, "DELETE") == 0) {
        if ((rc = topic_find(db, slug, &t, err, sizeof err)) < 0 ||
            (rc = topic_remove(db, t.slug, err, sizeof err)) < 0) {
            fail_rc(j, rc, err);
            return;
        }
        log_info("http %s: topic '%s' removed by '%s'", j->sh.remote, t.slug, j->auth.user.name);
        j->topic_changed = j->topic_removed = true;
        snprintf(j->slug, sizeof j->slug, "%s", t.slug);
        http_response_status(&j->sh, 204);
        return;
    }
    json_t *b = body_object(j, false);
    if (!b)
        return;
    static const char *const keys[] = {"name", NULL};
    const char *name;
    if (!only_keys(j, b, keys) || !body_str(j, b, "name", false, &name, NULL))
        goto out;
    if (!name) {
        bad_field(j, "name", "is required");
        goto out;
    }
    if ((rc = topic_rename(db, slug, name, &t, err, sizeof err)) < 0) {
        fail_rc(j, rc, err);
        goto out;
    }
    log_info("http %s: topic '%s' renamed by '%s'", j->sh.remote, t.slug, j->auth.user.name);
    j->topic_changed = true;
    snprintf(j->slug, sizeof j->slug, "%s", t.slug);
    snprintf(j->topic_name, sizeof j->topic_name, "%s", t.name);
    json_t *arr = json_array();
    topic_one(&t, arr);
    reply(j, 200, json_incref(json_array_get(arr, 0)));
    json_decref(arr);
out:
    json_decref(b);
}

/* ==== DELETE /me: the account, and its channels as DELETE /channels/:slug ==== */

struct owned {
    struct channel_ext *v;
    size_t n, cap;
};

static int collect_owned(const struct channel_ext *c, void *ud)
{
    struct owned *o = ud;
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 4;
        struct channel_ext *v = realloc(o->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = *c;
    return 0;
}

/*
 * The account may go (api_auth.c checked the session and the password):
 * its channels are listed and the account deleted (the channels with it, ON
 * DELETE CASCADE) in one transaction, so a channel made meanwhile cannot
 * slip past; then each goes as DELETE /channels/:slug makes it go.
 */
static int delete_account(struct db *db, const struct user *u, void *ud, char *err, size_t errlen)
{
    struct job *j = ud;
    struct channel_query cq = {.owner = u->name, .viewer_admin = true, .limit = 1000000};
    struct owned list = {0};
    int rc = db_begin(db);
    if (rc < 0) {
        snprintf(err, errlen, "database error while deleting the account: %s", db_errmsg(db));
        return rc;
    }
    rc = channel_ext_list(db, &cq, collect_owned, &list, err, errlen);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory listing the account's channels");
    if (rc == 0)
        rc = account_user_delete(db, u->name, err, errlen);
    if (rc == 0 && (rc = db_commit(db)) < 0)
        snprintf(err, errlen, "database error while deleting the account: %s", db_errmsg(db));
    if (rc < 0) {
        db_rollback(db);
        free(list.v);
        return rc;
    }
    for (size_t i = 0; i < list.n; i++) {
        log_info("http %s: channel '%s' deleted with the account of '%s'", j->sh.remote,
                 list.v[i].c.slug, u->name);
        channel_gone(j, &list.v[i]);
    }
    free(list.v);
    return 0;
}

static void run_me_delete(struct job *j, struct db *db)
{
    api_auth_me_delete(j->api->app, db, &j->sh, &j->auth, delete_account, j);
}

static void finish_me_delete(struct job *j)
{
    finish_channel(j);
    /* api_auth_me_delete says no-store on every answer; a refused API key never got there. */
    if (j->auth.bad_api_key)
        http_response_header(&j->sh, "Cache-Control", "no-store");
}

/* ==== GET /live, on the loop =============================================== */

struct live_ctx {
    struct chan_api *api;
    const char *topic;
    json_t *arr;
    const char *pub;
    int publen;
};

static void live_one(const struct viewers_live *l, void *ud)
{
    struct live_ctx *lc = ud;
    if (!l->info_loaded || l->is_protected)
        return;
    if (lc->topic[0] && strcmp(lc->topic, l->topic_slug) != 0 && strcasecmp(lc->topic, l->topic) != 0)
        return;
    char hls[512], page[512];
    snprintf(hls, sizeof hls, "%.*s/live/%s/master.m3u8", lc->publen, lc->pub, l->slug);
    snprintf(page, sizeof page, "%.*s/c/%s", lc->publen, lc->pub, l->slug);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:I, s:I, s:I, s:s?, s:s, s:s, s:I}", "slug",
                          l->slug, "title", l->title, "owner", l->owner, "topic",
                          l->topic[0] ? l->topic : NULL, "topic_slug",
                          l->topic_slug[0] ? l->topic_slug : NULL, "viewers", (json_int_t)l->count,
                          "peak_viewers", (json_int_t)l->peak, "started_at",
                          (json_int_t)l->started_at, "avatar_url",
                          l->avatar_url[0] ? l->avatar_url : NULL, "hls_url", hls, "channel_url",
                          page, "chatters",
                          (json_int_t)chat_occupants(lc->api->app, l->channel_id));
    if (o)
        json_array_append_new(lc->arr, o);
}

static int by_viewers(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t vx = json_integer_value(json_object_get(x, "viewers"));
    json_int_t vy = json_integer_value(json_object_get(y, "viewers"));
    if (vx != vy)
        return vx > vy ? -1 : 1;
    json_int_t sx = json_integer_value(json_object_get(x, "started_at"));
    json_int_t sy = json_integer_value(json_object_get(y, "started_at"));
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return strcmp(json_string_value(json_object_get(x, "slug")),
                  json_string_value(json_object_get(y, "slug")));
}

static int h_live(struct http_request *req, void *ud)
{
    struct chan_api *api = ud;
    char topic[TOPIC_NAME_MAX + 1] = "";
    int rc = http_request_query(req, "topic", topic, sizeof topic);
    if (rc < 0 && rc != -ENOENT) {
        http_response_error(req, 400, "invalid", "'topic' is too long");
        return 0;
    }
    const char *pub = api->app->cfg->site.public_url;
    size_t base = strlen(pub);
    while (base > 0 && pub[base - 1] == '/')
        base--;
    struct live_ctx lc = {.api = api, .topic = topic, .arr = json_array(), .pub = pub, .publen = (int)base};
    viewers_live_foreach(api->viewers, live_one, &lc);
    /* Most watched first: sort a plain array of the objects, then rebuild. */
    size_t n = json_array_size(lc.arr);
    json_t **items = n ? malloc(n * sizeof *items) : NULL;
    json_t *sorted = json_array();
    if (items) {
        for (size_t i = 0; i < n; i++)
            items[i] = json_incref(json_array_get(lc.arr, i));
        qsort(items, n, sizeof *items, by_viewers);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(sorted, items[i]);
        free(items);
    }
    json_t *o = json_pack("{s:o, s:I}", "live", sorted, "count", (json_int_t)json_array_size(sorted));
    json_decref(lc.arr);
    if (!o) {
        http_response_error(req, 500, "internal", "out of memory");
        return 0;
    }
    http_response_json(req, 200, o);
    json_decref(o);
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    return 0;
}

/* ==== the hub's hooks ======================================================= */

struct start_job {
    uv_work_t work;
    struct chan_api *api;
    char slug[64];
    int64_t channel_id;
    uint64_t session;
    bool found;
    struct channel_ext c;
    char avatar_url[200];
    int64_t peak, started_at;
};

static void start_work(uv_work_t *w)
{
    struct start_job *sj = w->data;
    struct app *app = sj->api->app;
    struct db *db = db_pool_acquire(app->db);
    if (!db)
        return;
    char err[256];
    if (channel_ext_find_id(db, sj->channel_id, &sj->c, err, sizeof err) == 0) {
        sj->found = true;
        json_t *tmp = channel_ext_to_json(&sj->c, NULL, NULL, CHANNEL_VIEW_PUBLIC);
        const char *av = json_string_value(json_object_get(tmp, "avatar_url"));
        snprintf(sj->avatar_url, sizeof sj->avatar_url, "%s", av ? av : "");
        json_decref(tmp);
    } else {
        log_warn("stream %s: cannot load the channel: %s", sj->slug, err);
    }
    int64_t now = util_now_unix(), count = 0;
    if (sj->found && notifications_channel_live(db, sj->channel_id, now, &count) < 0)
        log_error("stream %s: cannot notify followers: %s", sj->slug, db_errmsg(db));
    if (count > 0) {
        log_info("stream %s: %lld follower(s) notified", sj->slug, (long long)count);
        /* E-mail for those who asked for it and were notified just now. */
        struct db_stmt *st;
        if (db_prepare(db,
                       "SELECT u.email FROM notifications n"
                       " JOIN follows f ON f.user_id = n.user_id AND f.channel_id = n.channel_id"
                       " JOIN users u ON u.id = n.user_id"
                       " WHERE n.channel_id = ? AND n.kind = 'live' AND n.created_at = ?"
                       " AND f.notify_email = 1 AND u.email IS NOT NULL AND u.disabled = 0"
                       " LIMIT ?",
                       &st) == 0) {
            db_bind_int64(st, 1, sj->channel_id);
            db_bind_int64(st, 2, now);
            db_bind_int64(st, 3, LIVE_MAIL_MAX);
            const struct config *cfg = app->cfg;
            const char *pub = cfg->site.public_url;
            size_t base = strlen(pub);
            while (base > 0 && pub[base - 1] == '/')
                base--;
            char subject[256], body[1024];
            snprintf(subject, sizeof subject, "%s is live: %s", sj->c.c.owner_name,
                     channel_ext_live_title(&sj->c));
            snprintf(body, sizeof body,
                     "%s is live on %s:\n\n  %s\n\n%.*s/c/%s\n\n"
                     "You get this because you follow the channel and asked for e-mail when it "
                     "goes live; change that on the channel's page.\n",
                     sj->c.c.owner_name, cfg->site.name, channel_ext_live_title(&sj->c), (int)base,
                     pub, sj->c.c.slug);
            while (db_step(st) == DB_ROW) {
                const char *to = db_column_text(st, 0);
                if (to && mail_send(cfg, to, subject, body) < 0)
                    log_warn("stream %s: a go-live e-mail was not queued", sj->slug);
            }
            db_finalize(st);
        }
    }
    db_pool_release(app->db, db);
}

static void start_done(uv_work_t *w, int status)
{
    struct start_job *sj = w->data;
    struct chan_api *api = sj->api;
    if (status == 0 && sj->found) {
        const struct channel_ext *c = &sj->c;
        viewers_access_set(api->viewers, c->c.slug, c->c.id, c->is_protected, c->access_gen,
                           c->invite_code_hash);
        viewers_live_set_info(api->viewers, sj->slug, sj->session, channel_ext_live_title(c),
                              c->c.owner_name, c->c.topic, c->topic_slug, sj->avatar_url);
    } else {
        /* Listed under its slug rather than not at all. */
        viewers_live_set_info(api->viewers, sj->slug, sj->session, sj->slug, "", "", "", "");
    }
    free(sj);
}

static void peak_work(uv_work_t *w)
{
    struct start_job *sj = w->data;
    struct db *db = db_pool_acquire(sj->api->app->db);
    if (!db)
        return;
    if (stream_peak_record(db, sj->channel_id, sj->started_at, sj->peak) < 0)
        log_error("stream %s: cannot record the peak viewer count: %s", sj->slug, db_errmsg(db));
    db_pool_release(sj->api->app->db, db);
}

static void peak_done(uv_work_t *w, int status) { free(w->data); }

/* The sweep says a live stream's peak rose (at most every VIEWERS_PEAK_SAVE_MS): write it. */
static void on_peak(const struct viewers_live *l, void *ud)
{
    struct chan_api *api = ud;
    struct start_job *sj = calloc(1, sizeof *sj);
    if (!sj)
        return;
    sj->work.data = sj;
    sj->api = api;
    snprintf(sj->slug, sizeof sj->slug, "%s", l->slug);
    sj->channel_id = l->channel_id;
    sj->peak = l->peak;
    sj->started_at = l->started_at;
    if (uv_queue_work(api->loop, &sj->work, peak_work, peak_done) != 0)
        free(sj);
}

static void on_stream_start(struct stream *s, void *ud)
{
    struct chan_api *api = ud;
    struct start_job *sj = calloc(1, sizeof *sj);
    uint64_t session = viewers_stream_start(api->viewers, s->slug, s->channel_id, s->started_unix);
    if (!sj)
        return;
    sj->work.data = sj;
    sj->api = api;
    snprintf(sj->slug, sizeof sj->slug, "%s", s->slug);
    sj->channel_id = s->channel_id;
    sj->session = session;
    if (uv_queue_work(api->loop, &sj->work, start_work, start_done) != 0)
        free(sj);
}

static void on_stream_end(struct stream *s, void *ud)
{
    struct chan_api *api = ud;
    unsigned peak = 0;
    int64_t started = 0;
    if (viewers_stream_end(api->viewers, s->slug, &peak, &started) < 0 || peak == 0)
        return;
    log_info("stream %s: peak of %u viewer(s)", s->slug, peak);
    struct start_job *sj = calloc(1, sizeof *sj);
    if (!sj)
        return;
    sj->work.data = sj;
    sj->api = api;
    snprintf(sj->slug, sizeof sj->slug, "%s", s->slug);
    sj->channel_id = s->channel_id;
    sj->peak = peak;
    sj->started_at = started;
    if (uv_queue_work(api->loop, &sj->work, peak_work, peak_done) != 0)
        free(sj);
}

/* ==== registration ========================================================= */

JOB_ROUTE(h_list, run_list, NULL)
JOB_ROUTE(h_create, run_create, finish_channel)
JOB_ROUTE(h_get, run_get, NULL)
JOB_ROUTE(h_patch, run_patch, finish_channel)
JOB_ROUTE(h_delete, run_delete, finish_channel)
JOB_ROUTE(h_stream_key, run_stream_key, NULL)
JOB_ROUTE(h_follow, run_follow, NULL)
JOB_ROUTE(h_following, run_following, NULL)
JOB_ROUTE(h_notifications, run_notifications, NULL)
JOB_ROUTE(h_notifications_read, run_notifications_read, NULL)
JOB_ROUTE(h_invite_code, run_invite_code, finish_channel)
JOB_ROUTE(h_invites, run_invites, finish_channel)
JOB_ROUTE(h_image_get, run_image_get, NULL)
JOB_ROUTE(h_image_put, run_image_put, finish_channel)
JOB_ROUTE(h_image_delete, run_image_delete, finish_channel)
JOB_ROUTE(h_topics, run_topics, NULL)
JOB_ROUTE(h_topic, run_topic, finish_topic)
JOB_ROUTE(h_me_delete, run_me_delete, finish_me_delete)

static int load_protected(const char *slug, int64_t id, int64_t gen, const char *hash, void *ud)
{
    viewers_access_set(ud, slug, id, true, gen, hash);
    return 0;
}

int api_channels_register(struct app *app, struct http_server *srv, struct stream_hub *hub,
                          struct hls *hls)
{
    if (the_api) {
        log_error("channels: api_channels_register called twice");
        return -EEXIST;
    }
    if (!app || !app->db || !srv) {
        log_error("channels: api_channels_register needs the app's database pool and the server");
        return -EINVAL;
    }
    if (sodium_init() < 0)
        return -EIO;
    struct chan_api *api = calloc(1, sizeof *api);
    if (!api)
        return -ENOMEM;
    api->app = app;
    api->srv = srv;
    api->hub = hub;
    api->hls = hls;
    api->loop = uv_default_loop();
    api->secure = auth_url_is_https(app->cfg->site.public_url);

    /* Start-up, before the loop runs: the database may be used here. */
    struct db *db = db_pool_acquire(app->db);
    int rc = db ? settings_secret(db, SECRET_KEY, api->secret) : -EIO;
    if (rc < 0) {
        log_error("channels: cannot read or make the watch-token secret: %s",
                  db ? db_errmsg(db) : "database unavailable");
        if (db)
            db_pool_release(app->db, db);
        free(api);
        return rc;
    }
    api->viewers = viewers_new(api->loop, api->secret, api->secure);
    if (!api->viewers) {
        db_pool_release(app->db, db);
        free(api);
        return -ENOMEM;
    }
    viewers_set_peak_hook(api->viewers, on_peak, api);
    if ((rc = channel_protected_foreach(db, load_protected, api->viewers)) < 0)
        log_error("channels: cannot load the protected channels: %s", db_errmsg(db));
    db_pool_release(app->db, db);
    if (rc < 0) {
        viewers_free(api->viewers);
        free(api);
        return rc;
    }

    static const struct {
        const char *method, *path;
        http_handler_fn fn;
        unsigned flags;
    } routes[] = {
        {"GET", "/api/v1/channels", h_list, HTTP_ROUTE_CORS},
        {"POST", "/api/v1/channels", h_create, 0},
        {"GET", "/api/v1/channels/:slug", h_get, HTTP_ROUTE_CORS},
        {"PATCH", "/api/v1/channels/:slug", h_patch, 0},
        {"DELETE", "/api/v1/channels/:slug", h_delete, 0},
        {"POST", "/api/v1/channels/:slug/stream-key", h_stream_key, 0},
        {"POST", "/api/v1/channels/:slug/follow", h_follow, 0},
        {"DELETE", "/api/v1/channels/:slug/follow", h_follow, 0},
        {"POST", "/api/v1/channels/:slug/invite-code", h_invite_code, 0},
        {"DELETE", "/api/v1/channels/:slug/invite-code", h_invite_code, 0},
        {"GET", "/api/v1/channels/:slug/invites", h_invites, 0},
        {"POST", "/api/v1/channels/:slug/invites", h_invites, 0},
        {"DELETE", "/api/v1/channels/:slug/invites/:user", h_invites, 0},
        {"GET", "/api/v1/channels/:slug/avatar", h_image_get, HTTP_ROUTE_CORS},
        {"PUT", "/api/v1/channels/:slug/avatar", h_image_put, 0},
        {"DELETE", "/api/v1/channels/:slug/avatar", h_image_delete, 0},
        {"GET", "/api/v1/channels/:slug/banner", h_image_get, HTTP_ROUTE_CORS},
        {"PUT", "/api/v1/channels/:slug/banner", h_image_put, 0},
        {"DELETE", "/api/v1/channels/:slug/banner", h_image_delete, 0},
        {"GET", "/api/v1/me/following", h_following, 0},
        {"GET", "/api/v1/me/notifications", h_notifications, 0},
        {"POST", "/api/v1/me/notifications/read", h_notifications_read, 0},
        {"GET", "/api/v1/live", h_live, HTTP_ROUTE_CORS},
        {"GET", "/api/v1/topics", h_topics, HTTP_ROUTE_CORS},
        {"POST", "/api/v1/topics", h_topics, 0},
        {"PATCH", "/api/v1/topics/:slug", h_topic, 0},
        {"DELETE", "/api/v1/topics/:slug", h_topic, 0},
        {"DELETE", "/api/v1/me", h_me_delete, 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        rc = http_server_route(srv, routes[i].method, routes[i].path, routes[i].fn, api,
                               routes[i].flags);
        if (rc < 0) {
            log_error("channels: cannot add route %s %s", routes[i].method, routes[i].path);
            return rc;
        }
    }
    if ((rc = openapi_register(app, srv)) < 0)
        return rc;
    if (hub) {
        struct stream_hub_hooks hooks = {.on_stream_start = on_stream_start,
                                         .on_stream_end = on_stream_end,
                                         .ud = api};
        stream_hub_add_hooks(hub, &hooks);
    }
    the_api = api;
    return 0;
}
