/*
 * Public user profiles:
 *
 *   GET /api/v1/users/:name   -> {name, created_at, channels: [channel + live]}
 *
 * What a profile shows is what anyone may see of an account: its name (as
 * stored, whatever case was asked for), when it was made, and its channels
 * with their live state. Never the e-mail address, the roles, or whether
 * two-factor login is on. An unknown or disabled account is the same 404,
 * so a profile does not tell which names were banned. Protected channels
 * are listed only to those who may watch them (the owner, admins, invited
 * users), as GET /channels does.
 *
 * Threads. The account and its channels come from the database, which only
 * a worker may touch; the live state (viewer counts) is the loop's live
 * directory (viewers.c), which only the loop may read. So the route is a
 * loop handler that copies the little the worker needs (the name, and the
 * Cookie and X-API-Key headers for auth_identify) into a job, answers
 * HTTP_ASYNC, and queues the job; the worker builds the JSON; back on the
 * loop the live state is added and the answer moves onto the request. If
 * the client left meanwhile (on_abort), the job finishes and sends nothing.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "app/accounts.h"
#include "app/api_users.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/channels_extra.h"
#include "app/viewers.h"
#include "core/config.h"
#include "core/log.h"
#include "net/http.h"
#include "store/db.h"

#define PROFILE_CHANNELS_MAX 100

struct user_job {
    uv_work_t work;
    struct app *app;
    struct http_request *req; /* the real request; NULL once its client left */
    struct http_request sh;   /* the worker's copy: the credentials, nothing else */
    char name[ACCOUNT_NAME_MAX + 1];
    char hdr_value[2][8192];
    json_t *out; /* the profile; NULL when sh holds an error */
};

static void user_job_free(struct user_job *j)
{
    json_decref(j->out);
    buf_free(&j->sh.body);
    buf_free(&j->sh.res.headers);
    buf_free(&j->sh.res.body);
    free(j);
}

static int channel_one(const struct channel_ext *c, void *ud)
{
    struct user_job *j = ud;
    const struct config *cfg = j->app->cfg;
    json_t *o = channel_ext_to_json(c, cfg->site.public_url, cfg->rtmp.listen, CHANNEL_VIEW_PUBLIC);
    json_t *arr = json_object_get(j->out, "channels");
    return o && json_array_append_new(arr, o) == 0 ? 0 : -ENOMEM;
}

static void user_work(uv_work_t *w)
{
    struct user_job *j = w->data;
    struct db *db = db_pool_acquire(j->app->db);
    if (!db) {
        http_response_error(&j->sh, 503, "unavailable", "the database is unavailable");
        return;
    }
    struct auth_ctx a;
    char err[256];
    struct user u;
    if (auth_identify(j->app, db, &j->sh, &a) < 0)
        goto out; /* the 500 is in sh */
    if (a.bad_api_key) {
        auth_require_user(&j->sh, &a);
        goto out;
    }
    int rc = account_user_find(db, j->name, &u, err, sizeof err);
    if (rc == -ENOENT || (rc == 0 && u.disabled)) {
        http_response_error(&j->sh, 404, "not_found", "no such user");
        goto out;
    }
    if (rc < 0) {
        log_error("http %s: users: cannot read user '%s': %s", j->sh.remote, j->name, err);
        http_response_error(&j->sh, 500, "internal", "database error");
        goto out;
    }
    j->out = json_pack("{s:s, s:I, s:[]}", "name", u.name, "created_at",
                       (json_int_t)u.created_at, "channels");
    if (!j->out) {
        http_response_error(&j->sh, 503, "unavailable", "out of memory");
        goto out;
    }
    struct channel_query cq = {
        .owner = u.name,
        .viewer_id = auth_is_user(&a) ? a.user.id : 0,
        .viewer_admin = auth_is_admin(&a),
        .sort = CHANNEL_SORT_SLUG,
        .limit = PROFILE_CHANNELS_MAX,
    };
    rc = channel_ext_list(db, &cq, channel_one, j, err, sizeof err);
    if (rc < 0) {
        json_decref(j->out);
        j->out = NULL;
        log_error("http %s: users: cannot list the channels of '%s': %s", j->sh.remote, u.name,
                  err);
        http_response_error(&j->sh, 500, "internal", "database error");
    }
out:
    db_pool_release(j->app->db, db);
}

/* The loop's part: live state from the live directory, as GET /channels has it. */
static void add_live(struct viewers *v, json_t *ch)
{
    const char *slug = json_string_value(json_object_get(ch, "slug"));
    const struct viewers_live *l = v && slug ? viewers_live_find(v, slug) : NULL;
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

static void user_done(uv_work_t *w, int status)
{
    struct user_job *j = w->data;
    struct http_request *req = j->req;
    if (req) {
        req->on_abort = NULL;
        req->user = NULL;
        if (status < 0) {
            http_response_error(req, 500, "internal", "the request was cancelled");
        } else if (j->out) {
            struct viewers *v = api_channels_viewers();
            size_t i;
            json_t *c;
            json_array_foreach(json_object_get(j->out, "channels"), i, c) add_live(v, c);
            if (http_response_json(req, 200, j->out) < 0)
                http_response_error(req, 500, "internal", "out of memory");
        } else {
            http_response_status(req, j->sh.res.status ? j->sh.res.status : 500);
            if (j->sh.res.headers.len)
                buf_append(&req->res.headers, j->sh.res.headers.data, j->sh.res.headers.len);
            if (j->sh.res.body_kind == HTTP_BODY_BUF && j->sh.res.body.len)
                http_response_body(req, j->sh.res.body.data, j->sh.res.body.len);
        }
        /* The answer depends on who asks (protected channels). */
        http_response_header(req, "Cache-Control", "private, no-cache");
        http_response_header(req, "X-Content-Type-Options", "nosniff");
        http_request_finish(req);
    }
    user_job_free(j);
}

static void user_abort(struct http_request *req)
{
    struct user_job *j = req->user;
    if (j)
        j->req = NULL;
}

static int h_user(struct http_request *req, void *ud)
{
    struct app *app = ud;
    const char *name = http_request_param(req, "name");
    if (!name || !*name || strlen(name) > ACCOUNT_NAME_MAX) {
        http_response_error(req, 404, "not_found", "no such user");
        http_response_header(req, "X-Content-Type-Options", "nosniff");
        return 0;
    }
    struct user_job *j = calloc(1, sizeof *j);
    if (!j) {
        http_response_error(req, 503, "unavailable", "out of memory");
        return 0;
    }
    j->app = app;
    j->req = req;
    snprintf(j->name, sizeof j->name, "%s", name);

    /* The copy holds what auth_identify reads: method, target, peer, credentials. */
    struct http_request *sh = &j->sh;
    sh->server = req->server;
    sh->method = req->method;
    sh->method_name = "GET";
    sh->url = "/api/v1/users/:name";
    sh->path = sh->url;
    memcpy(sh->remote, req->remote, sizeof sh->remote);
    sh->start_ns = req->start_ns;
    buf_init(&sh->body, 0);
    buf_init(&sh->res.headers, 0);
    buf_init(&sh->res.body, 0);
    sh->res.file_fd = -1;
    static const char *const wanted[] = {"Cookie", AUTH_API_KEY_HEADER};
    for (int i = 0; i < req->nheaders && sh->nheaders < 2; i++) {
        for (int k = 0; k < 2; k++) {
            if (strcasecmp(req->headers[i].name, wanted[k]) != 0)
                continue;
            /* A credential header longer than the copy is not one we could have issued. */
            if (strlen(req->headers[i].value) >= sizeof j->hdr_value[0])
                break;
            snprintf(j->hdr_value[sh->nheaders], sizeof j->hdr_value[0], "%s",
                     req->headers[i].value);
            sh->headers[sh->nheaders].name = wanted[k];
            sh->headers[sh->nheaders].value = j->hdr_value[sh->nheaders];
            sh->nheaders++;
            break;
        }
    }

    j->work.data = j;
    if (uv_queue_work(uv_default_loop(), &j->work, user_work, user_done) != 0) {
        user_job_free(j);
        http_response_error(req, 503, "unavailable", "worker pool unavailable");
        return 0;
    }
    req->user = j;
    req->on_abort = user_abort;
    return HTTP_ASYNC;
}

int api_users_register(struct app *app, struct http_server *srv)
{
    int rc = http_server_route(srv, "GET", "/api/v1/users/:name", h_user, app, HTTP_ROUTE_CORS);
    if (rc < 0)
        log_error("users: cannot add route GET /api/v1/users/:name");
    return rc;
}
