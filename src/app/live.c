/*
 * The live side of the application: who may publish (stream keys, checked
 * on the worker pool for the RTMP server), and the `streams` table, one row
 * per live session, written when a stream starts and when it ends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/accounts.h"
#include "app/app.h"
#include "core/log.h"
#include "core/util.h"
#include "ingest/rtmp/rtmp_server.h"
#include "media/stream.h"
#include "store/db.h"

int app_live_authorize(void *ud, const char *key, struct rtmp_auth *out)
{
    struct app *app = ud;
    char err[256];
    struct channel c;
    struct db *db = db_pool_acquire(app->db);
    if (!db) {
        snprintf(out->why, sizeof out->why, "database unavailable");
        return -EIO;
    }
    int rc = channel_find_by_stream_key(db, key, &c, err, sizeof err);
    db_pool_release(app->db, db);
    if (rc == -ENOENT) {
        snprintf(out->why, sizeof out->why, "unknown stream key");
        return rc;
    }
    if (rc != 0) {
        snprintf(out->why, sizeof out->why, "%.120s", err);
        return rc;
    }
    if (c.owner_disabled) {
        snprintf(out->why, sizeof out->why, "the owner of channel %s is disabled", c.slug);
        return -EACCES;
    }
    out->channel_id = c.id;
    snprintf(out->slug, sizeof out->slug, "%s", c.slug);
    return 0;
}

struct row_job {
    uv_work_t work;
    struct app *app;
    int64_t channel_id;
    int64_t at;
    bool start;
};

static void row_work(uv_work_t *w)
{
    struct row_job *j = w->data;
    struct db *db = db_pool_acquire(j->app->db);
    if (!db)
        return;
    struct db_stmt *st;
    const char *sql = j->start
        ? "INSERT INTO streams (channel_id, started_at) VALUES (?, ?)"
        : "UPDATE streams SET ended_at = ? WHERE channel_id = ? AND ended_at IS NULL";
    if (db_prepare(db, sql, &st) == 0) {
        if (j->start) {
            db_bind_int64(st, 1, j->channel_id);
            db_bind_int64(st, 2, j->at);
        } else {
            db_bind_int64(st, 1, j->at);
            db_bind_int64(st, 2, j->channel_id);
        }
        if (db_step(st) < 0)
            log_error("streams: cannot record channel %lld: %s", (long long)j->channel_id, db_errmsg(db));
        db_finalize(st);
    }
    db_pool_release(j->app->db, db);
}

static void row_done(uv_work_t *w, int status) { free(w->data); }

static void queue_row(struct app *app, int64_t channel_id, bool start)
{
    struct row_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->work.data = j;
    j->app = app;
    j->channel_id = channel_id;
    j->at = util_now_unix();
    j->start = start;
    if (uv_queue_work(uv_default_loop(), &j->work, row_work, row_done) != 0)
        free(j);
}

static void on_stream_start(struct stream *s, void *ud)
{
    log_info("stream %s: live", s->slug);
    queue_row(ud, s->channel_id, true);
}

static void on_stream_end(struct stream *s, void *ud)
{
    log_info("stream %s: ended", s->slug);
    queue_row(ud, s->channel_id, false);
}

int app_live_init(struct app *app, struct stream_hub *hub)
{
    /* Rows left open by a crash end now: those sessions are over. */
    struct db *db = db_pool_acquire(app->db);
    if (db) {
        struct db_stmt *st;
        if (db_prepare(db, "UPDATE streams SET ended_at = ? WHERE ended_at IS NULL", &st) == 0) {
            db_bind_int64(st, 1, util_now_unix());
            db_step(st);
            if (db_changes(db) > 0)
                log_info("streams: closed %lld session(s) left open by an earlier run",
                         (long long)db_changes(db));
            db_finalize(st);
        }
        db_pool_release(app->db, db);
    }
    struct stream_hub_hooks hooks = {.on_stream_start = on_stream_start,
                                     .on_stream_end = on_stream_end,
                                     .ud = app};
    stream_hub_add_hooks(hub, &hooks);
    return 0;
}
