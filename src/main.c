/*
 * hearth: the server and its command line, one binary.
 *
 *   hearth serve                 run the server
 *   hearth config                print the effective configuration
 *   hearth migrate status|up     look at or apply database migrations
 *   hearth user add|list         accounts
 *   hearth channel add|list|key-reset
 *   hearth topic add|list|remove  the topics channels are filed under
 *   hearth setting list|get|set   admin settings kept in the database
 *   hearth version
 *
 * Every command reads the same configuration (--config PATH, $HEARTH_CONFIG,
 * ./hearth.conf, then the environment) and opens the same database, migrating
 * it first, so the CLI and a running server always agree on the schema.
 * Exit codes: 0 done, 1 failed, 2 bad usage or bad configuration.
 */
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "app/accounts.h"
#include "app/app.h"
#include "app/settings.h"
#include "chat/c2s_ws.h"
#include "chat/muc.h"
#include "chat/xmpp.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "deliver/hls/hls.h"
#include "ingest/rtmp/rtmp_server.h"
#include "media/stream.h"
#include "net/http.h"
#include "store/db.h"
#include "store/migrate.h"

extern char **environ;

#define EXIT_USAGE 2

struct args {
    const char *config_path;
    const char *pos[8]; /* positional words after the command */
    int npos;
    const char *email, *role, *owner, *title, *slug, *topic;
    bool json, password_stdin;
};

static void usage(FILE *f)
{
    fputs("usage: hearth <command> [options]   (--config PATH works with every command)\n"
          "\n"
          "  serve                                  run the server\n"
          "  config                                 print the effective configuration\n"
          "  migrate status | up                    show or apply database migrations\n"
          "  user add NAME --password-stdin [--email E] [--role admin,streamer,...] [--json]\n"
          "  user list [--json]\n"
          "  channel add --owner NAME --title TITLE [--slug S] [--topic T] [--json]\n"
          "  channel list [--json]\n"
          "  channel key-reset SLUG [--json]\n"
          "  topic add NAME [--json]\n"
          "  topic list [--json]\n"
          "  topic remove SLUG\n"
          "  setting list [--json]                  registration_roles, max_channels_per_user\n"
          "  setting get KEY\n"
          "  setting set KEY VALUE\n"
          "  version\n",
          f);
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("hearth: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n(try: hearth help)\n", stderr);
    return EXIT_USAGE;
}

/* Parse options anywhere after the command; the rest are positional words. */
static int parse_args(int argc, char **argv, int start, struct args *a)
{
    static const struct {
        const char *name;
        size_t off;
    } valued[] = {
        {"--config", offsetof(struct args, config_path)},
        {"--email", offsetof(struct args, email)},
        {"--role", offsetof(struct args, role)},
        {"--roles", offsetof(struct args, role)},
        {"--owner", offsetof(struct args, owner)},
        {"--title", offsetof(struct args, title)},
        {"--slug", offsetof(struct args, slug)},
        {"--topic", offsetof(struct args, topic)},
    };
    for (int i = start; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (strcmp(arg, "--password-stdin") == 0) {
            a->password_stdin = true;
            continue;
        }
        if (strncmp(arg, "--", 2) == 0) {
            bool found = false;
            for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
                size_t nl = strlen(valued[k].name);
                const char **slot = (const char **)((char *)a + valued[k].off);
                if (strcmp(arg, valued[k].name) == 0) {
                    if (i + 1 >= argc)
                        return usage_error("%s needs a value", arg);
                    *slot = argv[++i];
                    found = true;
                } else if (strncmp(arg, valued[k].name, nl) == 0 && arg[nl] == '=') {
                    *slot = arg + nl + 1;
                    found = true;
                }
                if (found)
                    break;
            }
            if (!found)
                return usage_error("unknown option %s", arg);
            continue;
        }
        if (a->npos == (int)(sizeof a->pos / sizeof a->pos[0]))
            return usage_error("too many arguments (at %s)", arg);
        a->pos[a->npos++] = arg;
    }
    return 0;
}

static int load_config(struct config *cfg, const struct args *a)
{
    char err[1024];
    if (config_load(cfg, a->config_path, environ, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: configuration error: %s\n", err);
        return EXIT_USAGE;
    }
    log_set_level(cfg->log.level);
    return 0;
}

/* Open the database, migrating it (with a backup first) when needed. */
static int open_db(const struct config *cfg, struct db **out, bool migrate)
{
    char err[1024];
    int rc = util_mkdir_p(cfg->storage.data_dir);
    if (rc) {
        fprintf(stderr, "hearth: cannot create data directory %s: %s\n", cfg->storage.data_dir,
                strerror(-rc));
        return 1;
    }
    if (db_open(cfg->db.url, out, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: database %s: %s\n", cfg->db.url, err);
        return 1;
    }
    if (!migrate)
        return 0;
    char backups[CONFIG_PATH + 16], backup_path[CONFIG_PATH + 128];
    snprintf(backups, sizeof backups, "%s/backups", cfg->storage.data_dir);
    if (migrate_up(*out, backups, backup_path, sizeof backup_path, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: database %s: %s\n", cfg->db.url, err);
        db_close(*out);
        *out = NULL;
        return 1;
    }
    if (backup_path[0])
        log_info("database: copied to %s before migrating", backup_path);
    return 0;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
}

/* ---- serve ------------------------------------------------------------- */

struct server_state {
    uv_loop_t *loop;
    struct http_server *http;
    struct rtmp_server *rtmp;
    struct stream_hub *hub;
    struct hls *hls;
    struct xmpp_server *xmpp;
    struct muc_service *muc;
    bool http_down, rtmp_down, xmpp_down;
    uv_signal_t sigterm, sigint;
    uv_timer_t deadline;
    bool stopping;
    const struct config *cfg;
};

static void maybe_stopped(struct server_state *s)
{
    if (!s->http_down || !s->rtmp_down || !s->xmpp_down)
        return;
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->deadline, NULL);
}

static void on_http_down(struct http_server *srv, void *arg)
{
    struct server_state *s = arg;
    log_info("http: all requests finished");
    s->http_down = true;
    maybe_stopped(s);
}

static void on_rtmp_down(void *arg)
{
    struct server_state *s = arg;
    s->rtmp_down = true;
    maybe_stopped(s);
}

static void on_xmpp_down(struct xmpp_server *srv, void *arg)
{
    struct server_state *s = arg;
    log_info("xmpp: all streams closed");
    s->xmpp_down = true;
    maybe_stopped(s);
}

static void on_deadline(uv_timer_t *t)
{
    struct server_state *s = t->data;
    log_warn("shutdown: requests still running after http.shutdown_timeout; exiting anyway");
    uv_stop(s->loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server_state *s = h->data;
    if (s->stopping) {
        log_warn("second %s: exiting now", strsignal(signum));
        uv_stop(s->loop);
        return;
    }
    s->stopping = true;
    log_info("%s: shutting down (no new connections; finishing requests in flight)",
             strsignal(signum));
    uv_timer_start(&s->deadline, on_deadline, s->cfg->http.shutdown_timeout_ms, 0);
    /* Publishers first, then the streams (players waiting on a part get their
     * answer and an ENDLIST), then HTTP, which waits for requests in flight. */
    rtmp_server_shutdown(s->rtmp, on_rtmp_down, s);
    /* Every XMPP stream gets system-shutdown; the rooms empty as their
     * occupants' sessions go (the MUC itself is freed after the loop, since
     * API handlers still finishing may call muc_room_changed). */
    xmpp_server_shutdown(s->xmpp, on_xmpp_down, s);
    stream_hub_free(s->hub);
    s->hub = NULL;
    hls_free(s->hls);
    s->hls = NULL;
    http_server_shutdown(s->http, on_http_down, s);
}

static int cmd_serve(const struct config *cfg)
{
    char workers[16];
    snprintf(workers, sizeof workers, "%d", cfg->server.workers);
    setenv("UV_THREADPOOL_SIZE", workers, 1);
    signal(SIGPIPE, SIG_IGN);
    /* The live window is megabyte-sized blobs (HLS segments) freed as new
     * ones arrive. Above glibc's mmap threshold each would be a fresh mmap,
     * page-faulted in and unmapped for good a minute later; from the heap,
     * the memory of the segment that left the window serves the next one.
     * Setting it turns off glibc's own tuning of the trim threshold too,
     * which would then give the heap top back after nearly every big free:
     * keep up to about one stream's window (40 MB at 5 Mbit/s) instead.
     * Measured with 8 publishers, window full: no page faults left (from
     * 1,200 a second) and 12 % less CPU. */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);

    struct db *db;
    int rc = open_db(cfg, &db, true);
    if (rc)
        return rc;
    char err[1024];
    struct migrate_status ms;
    migrate_check(db, &ms, err, sizeof err);
    db_close(db);

    struct app app = {.cfg = cfg, .started_ns = util_mono_ns()};
    if (db_pool_create(cfg->db.url, cfg->server.workers, &app.db, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: database %s: %s\n", cfg->db.url, err);
        return 1;
    }

    struct server_state s = {.cfg = cfg};
    s.loop = uv_default_loop();
    s.http = http_server_new(s.loop, cfg);
    if (!s.http) {
        fprintf(stderr, "hearth: out of memory\n");
        return 1;
    }
    app.http = s.http;
    s.hub = stream_hub_new(s.loop, cfg->hls.reconnect_grace_ms);
    struct hls_config hc = {
        .part_target = (int64_t)cfg->hls.part_target_ms * (MEDIA_TIMEBASE / 1000),
        .segment_target = (int64_t)cfg->hls.segment_target_ms * (MEDIA_TIMEBASE / 1000),
        .window = (int64_t)cfg->hls.window_ms * (MEDIA_TIMEBASE / 1000),
        .linger_ms = 60000,
    };
    s.hls = s.hub ? hls_new(s.loop, &hc, s.hub) : NULL;
    s.rtmp = rtmp_server_new(s.loop, cfg, s.hub, app_live_authorize, &app);
    if (!s.hub || !s.hls || !s.rtmp || app_live_init(&app, s.hub) != 0 ||
        hls_register_routes(s.hls, s.http) != 0) {
        fprintf(stderr, "hearth: out of memory\n");
        return 1;
    }
    app.hub = s.hub;
    app.hls = s.hls;
    if (app_chat_init(&app) != 0) {
        fprintf(stderr, "hearth: chat: cannot load the chat token secret from the database\n");
        return 1;
    }
    struct xmpp_hooks hooks = {.ud = &app, .authenticate = app_chat_authenticate};
    s.xmpp = xmpp_server_new(s.loop, cfg, app.db, &hooks);
    if (!s.xmpp) {
        fprintf(stderr, "hearth: xmpp: cannot start the chat server (see the log above)\n");
        return 1;
    }
    app.xmpp = s.xmpp;
    s.muc = muc_service_new(s.xmpp);
    if (!s.muc) {
        fprintf(stderr, "hearth: out of memory\n");
        return 1;
    }
    app.muc = s.muc;
    if (c2s_ws_register(s.xmpp, s.http) != 0) {
        fprintf(stderr, "hearth: out of memory\n");
        return 1;
    }
    if (app_register_routes(&app, s.http) != 0) {
        fprintf(stderr, "hearth: internal error registering routes\n");
        return 1;
    }
    if (http_server_listen(s.http, cfg->http.listen, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: http.listen: %s\n", err);
        return 1;
    }
    if (rtmp_server_listen(s.rtmp, cfg->rtmp.listen, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: rtmp.listen: %s\n", err);
        return 1;
    }
    if (xmpp_server_listen(s.xmpp, err, sizeof err) != 0) {
        fprintf(stderr, "hearth: xmpp.c2s_listen / xmpp.s2s_listen: %s\n", err);
        return 1;
    }
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    uv_timer_init(s.loop, &s.deadline);
    s.sigterm.data = s.sigint.data = s.deadline.data = &s;
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);

    char s2s_note[CONFIG_STR + 64] = "";
    if (cfg->xmpp.federation)
        snprintf(s2s_note, sizeof s2s_note, ", xmpp s2s on %s (port %d)", cfg->xmpp.s2s_listen,
                 xmpp_server_s2s_port(s.xmpp));
    log_info("hearth %s: serving http on %s (port %d), rtmp on %s (port %d), xmpp c2s on %s "
             "(port %d)%s for %s, %s, schema version %d, data in %s%s%s",
             HEARTH_VERSION, cfg->http.listen, http_server_port(s.http), cfg->rtmp.listen,
             rtmp_server_port(s.rtmp), cfg->xmpp.c2s_listen, xmpp_server_c2s_port(s.xmpp),
             s2s_note, xmpp_server_domain(s.xmpp), cfg->db.url, ms.current,
             cfg->storage.data_dir, cfg->source[0] ? ", config " : "", cfg->source);

    uv_run(s.loop, UV_RUN_DEFAULT);

    /* HTTP first (its WebSocket streams leave their rooms), then the rooms
     * while the router still stands, then the router and its streams. */
    http_server_free(s.http);
    rtmp_server_free(s.rtmp);
    if (s.muc)
        muc_service_free(s.muc);
    xmpp_server_free(s.xmpp);
    uv_run(s.loop, UV_RUN_NOWAIT); /* let the chat server's last handle close */
    db_pool_destroy(app.db);
    log_info("hearth: stopped");
    return 0;
}

/* ---- migrate ------------------------------------------------------------ */

static int cmd_migrate(const struct config *cfg, const struct args *a)
{
    if (a->npos != 1 || (strcmp(a->pos[0], "status") != 0 && strcmp(a->pos[0], "up") != 0))
        return usage_error("%s", "usage: hearth migrate status|up");
    bool up = strcmp(a->pos[0], "up") == 0;
    struct db *db;
    int rc = open_db(cfg, &db, false);
    if (rc)
        return rc;
    char err[1024];
    if (up) {
        struct migrate_status before;
        if (migrate_check(db, &before, err, sizeof err) != 0) {
            fprintf(stderr, "hearth: %s\n", err);
            db_close(db);
            return 1;
        }
        char backups[CONFIG_PATH + 16], backup_path[CONFIG_PATH + 128];
        snprintf(backups, sizeof backups, "%s/backups", cfg->storage.data_dir);
        if (migrate_up(db, backups, backup_path, sizeof backup_path, err, sizeof err) != 0) {
            fprintf(stderr, "hearth: %s\n", err);
            db_close(db);
            return 1;
        }
        if (backup_path[0])
            printf("backup of the previous database: %s\n", backup_path);
        printf("applied %d migration%s\n", before.pending, before.pending == 1 ? "" : "s");
    }
    rc = migrate_print_status(db, stdout, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "hearth: %s\n", err);
    db_close(db);
    return rc ? 1 : 0;
}

/* ---- users ----------------------------------------------------------------- */

static int read_password(char *out, size_t n)
{
    if (!fgets(out, (int)n, stdin)) {
        fprintf(stderr, "hearth: no password on standard input\n");
        return -1;
    }
    size_t len = strlen(out);
    if (len == n - 1 && out[len - 1] != '\n') {
        fprintf(stderr, "hearth: password is too long\n");
        return -1;
    }
    while (len && (out[len - 1] == '\n' || out[len - 1] == '\r'))
        out[--len] = '\0';
    return 0;
}

static int print_user_row(const struct user *u, void *ud)
{
    json_t *arr = ud;
    if (arr)
        return json_array_append_new(arr, user_to_json(u));
    printf("%-20s %-32s %-30s%s\n", u->name, u->roles, u->email[0] ? u->email : "-",
           u->disabled ? "  (disabled)" : "");
    return 0;
}

static int cmd_user(const struct config *cfg, const struct args *a)
{
    if (a->npos < 1)
        return usage_error("%s", "usage: hearth user add|list ...");
    const char *sub = a->pos[0];
    char err[1024];
    if (strcmp(sub, "add") == 0) {
        if (a->npos != 2)
            return usage_error("%s", "usage: hearth user add NAME --password-stdin [--email E] [--role R]");
        if (!a->password_stdin)
            return usage_error("%s", "user add needs --password-stdin (the password is read from standard input, never from the command line)");
        char password[ACCOUNT_PASSWORD_MAX + 2];
        if (read_password(password, sizeof password) != 0)
            return 1;
        struct db *db;
        int rc = open_db(cfg, &db, true);
        if (rc)
            return rc;
        struct user u;
        rc = account_user_add(db, a->pos[1], a->email, a->role, password, &u, err, sizeof err);
        sodium_memzero(password, sizeof password);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        if (a->json) {
            json_t *o = user_to_json(&u);
            print_json(o);
            json_decref(o);
        } else {
            printf("user '%s' added (roles: %s)\n", u.name, u.roles);
        }
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        if (a->npos != 1)
            return usage_error("%s", "usage: hearth user list [--json]");
        struct db *db;
        int rc = open_db(cfg, &db, true);
        if (rc)
            return rc;
        json_t *arr = a->json ? json_array() : NULL;
        if (!a->json)
            printf("%-20s %-32s %-30s\n", "NAME", "ROLES", "EMAIL");
        rc = account_user_list(db, print_user_row, arr, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            json_decref(arr);
            return 1;
        }
        if (arr) {
            json_t *o = json_pack("{s:o}", "users", arr);
            print_json(o);
            json_decref(o);
        }
        return 0;
    }
    return usage_error("unknown user command '%s'", sub);
}

/* ---- channels ---------------------------------------------------------------- */

struct channel_print {
    const struct config *cfg;
    json_t *arr;
};

static int print_channel_row(const struct channel *c, void *ud)
{
    struct channel_print *p = ud;
    if (p->arr)
        return json_array_append_new(
            p->arr, channel_to_json(c, p->cfg->site.public_url, p->cfg->rtmp.listen, true));
    printf("%-24s %-20s %s\n", c->slug, c->owner_name, c->title);
    return 0;
}

static void print_channel_human(const struct config *cfg, const struct channel *c, const char *what)
{
    char rtmp[512];
    if (channel_rtmp_url(cfg->site.public_url, cfg->rtmp.listen, rtmp, sizeof rtmp) != 0)
        snprintf(rtmp, sizeof rtmp, "rtmp://HOST/live");
    const char *base = cfg->site.public_url;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    printf("channel '%s' %s\n"
           "  OBS Server:     %s\n"
           "  OBS Stream Key: %s\n"
           "  Watch:          %.*s/c/%s\n"
           "  HLS:            %.*s/live/%s/master.m3u8\n",
           c->slug, what, rtmp, c->stream_key, (int)bl, base, c->slug, (int)bl, base, c->slug);
}

static int cmd_channel(const struct config *cfg, const struct args *a)
{
    if (a->npos < 1)
        return usage_error("%s", "usage: hearth channel add|list|key-reset ...");
    const char *sub = a->pos[0];
    char err[1024];
    struct db *db;
    int rc;
    if (strcmp(sub, "add") == 0) {
        if (a->npos != 1 || !a->owner || !a->title)
            return usage_error("%s", "usage: hearth channel add --owner NAME --title TITLE [--slug S] [--topic T] [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        struct channel c;
        rc = channel_add(db, a->owner, a->title, a->slug, a->topic, &c, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        if (a->json) {
            json_t *o = channel_to_json(&c, cfg->site.public_url, cfg->rtmp.listen, true);
            print_json(o);
            json_decref(o);
        } else {
            print_channel_human(cfg, &c, "created");
        }
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        if (a->npos != 1)
            return usage_error("%s", "usage: hearth channel list [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        struct channel_print p = {cfg, a->json ? json_array() : NULL};
        if (!a->json)
            printf("%-24s %-20s %s\n", "SLUG", "OWNER", "TITLE");
        rc = channel_list(db, a->owner, print_channel_row, &p, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            json_decref(p.arr);
            return 1;
        }
        if (p.arr) {
            json_t *o = json_pack("{s:o}", "channels", p.arr);
            print_json(o);
            json_decref(o);
        }
        return 0;
    }
    if (strcmp(sub, "key-reset") == 0) {
        if (a->npos != 2)
            return usage_error("%s", "usage: hearth channel key-reset SLUG [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        struct channel c;
        rc = channel_key_reset(db, a->pos[1], &c, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        if (a->json) {
            json_t *o = channel_to_json(&c, cfg->site.public_url, cfg->rtmp.listen, true);
            print_json(o);
            json_decref(o);
        } else {
            print_channel_human(cfg, &c, "has a new stream key");
        }
        return 0;
    }
    return usage_error("unknown channel command '%s'", sub);
}

/* ---- topics ------------------------------------------------------------------ */

static json_t *topic_json(const struct topic *t)
{
    return json_pack("{s:I, s:s, s:s, s:I}", "id", (json_int_t)t->id, "name", t->name, "slug",
                     t->slug, "created_at", (json_int_t)t->created_at);
}

static int print_topic_row(const struct topic *t, void *ud)
{
    if (ud)
        return json_array_append_new(ud, topic_json(t));
    printf("%-24s %s\n", t->slug, t->name);
    return 0;
}

static int cmd_topic(const struct config *cfg, const struct args *a)
{
    if (a->npos < 1)
        return usage_error("%s", "usage: hearth topic add|list|remove ...");
    const char *sub = a->pos[0];
    char err[1024];
    struct db *db;
    int rc;
    if (strcmp(sub, "add") == 0) {
        if (a->npos != 2)
            return usage_error("%s", "usage: hearth topic add NAME [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        struct topic t;
        rc = topic_add(db, a->pos[1], &t, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        if (a->json) {
            json_t *o = topic_json(&t);
            print_json(o);
            json_decref(o);
        } else {
            printf("topic '%s' added (slug %s)\n", t.name, t.slug);
        }
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        if (a->npos != 1)
            return usage_error("%s", "usage: hearth topic list [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        json_t *arr = a->json ? json_array() : NULL;
        if (!arr)
            printf("%-24s %s\n", "SLUG", "NAME");
        rc = topic_list(db, print_topic_row, arr, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            json_decref(arr);
            return 1;
        }
        if (arr) {
            json_t *o = json_pack("{s:o}", "topics", arr);
            print_json(o);
            json_decref(o);
        }
        return 0;
    }
    if (strcmp(sub, "remove") == 0) {
        if (a->npos != 2)
            return usage_error("%s", "usage: hearth topic remove SLUG");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        rc = topic_remove(db, a->pos[1], err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        printf("topic '%s' removed; its channels have no topic now\n", a->pos[1]);
        return 0;
    }
    return usage_error("unknown topic command '%s'", sub);
}

/* ---- settings ------------------------------------------------------------------ */

static int cmd_setting(const struct config *cfg, const struct args *a)
{
    if (a->npos < 1)
        return usage_error("%s", "usage: hearth setting list|get|set ...");
    const char *sub = a->pos[0];
    char err[1024], value[SETTING_VALUE_MAX];
    struct db *db;
    int rc;
    if (strcmp(sub, "list") == 0) {
        if (a->npos != 1)
            return usage_error("%s", "usage: hearth setting list [--json]");
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        size_t n;
        const struct setting_def *defs = settings_all(&n);
        json_t *arr = a->json ? json_array() : NULL;
        if (!arr)
            printf("%-24s %-24s %s\n", "KEY", "VALUE", "ABOUT");
        for (size_t i = 0; i < n; i++) {
            bool is_default;
            if ((rc = settings_get(db, defs[i].key, value, &is_default, err, sizeof err)) < 0) {
                fprintf(stderr, "hearth: %s\n", err);
                json_decref(arr);
                db_close(db);
                return 1;
            }
            if (arr)
                json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b, s:s}", "key",
                                                     defs[i].key, "value", value, "default",
                                                     defs[i].def, "is_default", is_default,
                                                     "about", defs[i].about));
            else
                printf("%-24s %-24s %s%s\n", defs[i].key, value, defs[i].about,
                       is_default ? " (default)" : "");
        }
        db_close(db);
        if (arr) {
            json_t *o = json_pack("{s:o}", "settings", arr);
            print_json(o);
            json_decref(o);
        }
        return 0;
    }
    if (strcmp(sub, "get") == 0) {
        if (a->npos != 2)
            return usage_error("%s", "usage: hearth setting get KEY");
        if (!settings_find(a->pos[1]))
            return usage_error("unknown setting '%s' (see: hearth setting list)", a->pos[1]);
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        rc = settings_get(db, a->pos[1], value, NULL, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        puts(value);
        return 0;
    }
    if (strcmp(sub, "set") == 0) {
        if (a->npos != 3)
            return usage_error("%s", "usage: hearth setting set KEY VALUE");
        if (!settings_find(a->pos[1]))
            return usage_error("unknown setting '%s' (see: hearth setting list)", a->pos[1]);
        if ((rc = open_db(cfg, &db, true)))
            return rc;
        rc = settings_set(db, a->pos[1], a->pos[2], value, err, sizeof err);
        db_close(db);
        if (rc) {
            fprintf(stderr, "hearth: %s\n", err);
            return 1;
        }
        printf("%s = %s\n", a->pos[1], value);
        return 0;
    }
    return usage_error("unknown setting command '%s'", sub);
}

/* ---- main -------------------------------------------------------------------- */

static char **argv_copy;
static void free_argv(void) { free(argv_copy); }

int main(int argc, char **argv)
{
    /* --config may come before the command too: take it out first. */
    const char *early_config = NULL;
    static char **av;
    av = calloc((size_t)argc + 1, sizeof *av);
    if (!av)
        return 1;
    atexit(free_argv);
    int ac = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && ac == 1 && strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", "--config");
            early_config = argv[++i];
            continue;
        }
        if (i > 0 && ac == 1 && strncmp(argv[i], "--config=", 9) == 0) {
            early_config = argv[i] + 9;
            continue;
        }
        av[ac++] = argv[i];
    }
    argc = ac;
    argv = av;
    argv_copy = av;
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("hearth %s\n", HEARTH_VERSION);
        return 0;
    }
    struct args a = {.config_path = early_config};
    int rc = parse_args(argc, argv, 2, &a);
    if (rc)
        return rc;
    if (sodium_init() < 0) {
        fprintf(stderr, "hearth: libsodium failed to initialise\n");
        return 1;
    }
    static struct config cfg;
    if ((rc = load_config(&cfg, &a)))
        return rc;

    if (strcmp(cmd, "serve") == 0) {
        if (a.npos)
            return usage_error("serve takes no arguments (got %s)", a.pos[0]);
        return cmd_serve(&cfg);
    }
    if (strcmp(cmd, "config") == 0) {
        config_write(&cfg, stdout);
        return 0;
    }
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(&cfg, &a);
    if (strcmp(cmd, "user") == 0)
        return cmd_user(&cfg, &a);
    if (strcmp(cmd, "channel") == 0)
        return cmd_channel(&cfg, &a);
    if (strcmp(cmd, "topic") == 0)
        return cmd_topic(&cfg, &a);
    if (strcmp(cmd, "setting") == 0)
        return cmd_setting(&cfg, &a);
    return usage_error("unknown command '%s'", cmd);
}
