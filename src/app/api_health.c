/*
 * GET /healthz for load balancers and monitors, GET /api/v1/site (what a
 * front end needs to know about the instance before anyone signs in), and
 * the optional POST /debug/echo diagnostic.
 *
 * /healthz runs on the worker pool and asks the database for its schema
 * version, so "ok" means the process answers *and* its database works; a
 * broken database gives 503 with the reason.
 */
#include <jansson.h>
#include <sodium.h>
#include <string.h>

#include "app/app.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/http.h"
#include "store/db.h"

static int healthz(struct http_request *req, void *ud)
{
    struct app *app = ud;
    struct db *db = db_pool_acquire(app->db);
    int64_t schema = -1;
    const char *db_state = "ok";
    struct db_stmt *st = NULL;
    if (!db) {
        db_state = "unavailable";
    } else if (db_prepare(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &st) != 0) {
        db_state = "error";
        log_error("healthz: database: %s", db_errmsg(db));
    } else if (db_step(st) == DB_ROW) {
        schema = db_column_int64(st, 0);
    } else {
        db_state = "error";
        log_error("healthz: database: %s", db_errmsg(db));
    }
    if (st)
        db_finalize(st);
    if (db)
        db_pool_release(app->db, db);

    bool ok = strcmp(db_state, "ok") == 0;
    uint64_t uptime = (util_mono_ns() - app->started_ns) / 1000000000ull;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I}", "status", ok ? "ok" : "degraded",
                          "version", HEARTH_VERSION, "uptime_s", (json_int_t)uptime, "db", db_state,
                          "schema_version", (json_int_t)schema);
    http_response_json(req, ok ? 200 : 503, o);
    http_response_header(req, "Cache-Control", "no-store");
    json_decref(o);
    return 0;
}

/*
 * The instance as the front end sees it: its name, whether it takes new
 * accounts and whether they must confirm an e-mail address, and its public
 * address. All of it comes from the configuration, so it is answered on the
 * loop with no database; public and CORS-open like GET /api/v1/live.
 */
static int site_info(struct http_request *req, void *ud)
{
    const struct config *cfg = ((struct app *)ud)->cfg;
    json_t *o = json_pack("{s:s, s:b, s:b, s:s}", "name", cfg->site.name[0] ? cfg->site.name : "Hearth",
                          "allow_registration", cfg->site.allow_registration,
                          "require_verification", cfg->site.require_verification, "public_url",
                          cfg->site.public_url);
    if (!o || http_response_json(req, 200, o) < 0)
        http_response_error(req, 500, "internal", "out of memory");
    json_decref(o);
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    return 0;
}

static int debug_echo(struct http_request *req, void *ud)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    char hex[2 * sizeof hash + 1];
    crypto_hash_sha256(hash, (const unsigned char *)(req->body.data ? req->body.data : ""),
                       req->body.len);
    util_hex(hash, sizeof hash, hex);
    json_t *o = json_pack("{s:I, s:s}", "length", (json_int_t)req->body.len, "sha256", hex);
    http_response_json(req, 200, o);
    json_decref(o);
    return 0;
}

int api_health_register(struct app *app, struct http_server *srv)
{
    int rc = http_server_route(srv, "GET", "/healthz", healthz, app,
                               HTTP_ROUTE_BLOCKING | HTTP_ROUTE_CORS);
    if (rc == 0)
        rc = http_server_route(srv, "GET", "/api/v1/site", site_info, app, HTTP_ROUTE_CORS);
    if (rc == 0 && app->cfg->debug.echo)
        rc = http_server_route(srv, "POST", "/debug/echo", debug_echo, app, HTTP_ROUTE_BLOCKING);
    return rc;
}
