/*
 * The key table drives everything: defaults, parsing, the environment names,
 * the dump, and the docs test. Adding a key is one line here and one field in
 * struct config.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum key_type { T_STR, T_BOOL, T_INT, T_SIZE, T_DURATION, T_LISTEN, T_PUBLIC_URL, T_DB_URL, T_LOGLEVEL, T_DOMAIN };

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size;     /* for strings: capacity */
    const char *def; /* default, as text */
    long long min, max;
    const char *help;
};

#define F(field) offsetof(struct config, field), sizeof(((struct config *)0)->field)

static const struct key keys[] = {
    {"server", "workers", T_INT, F(server.workers), "4", 1, 128,
     "threads in the worker pool (database queries, blocking API handlers, file reads)"},

    {"http", "listen", T_LISTEN, F(http.listen), "0.0.0.0:8080", 0, 0,
     "address and port of the web server (HTTP API, pages, HLS)"},
    {"http", "max_header_bytes", T_SIZE, F(http.max_header_bytes), "16KiB", 1024, 1 << 20,
     "limit on a request's line plus headers; more is answered 431"},
    {"http", "max_body_bytes", T_SIZE, F(http.max_body_bytes), "16MiB", 0, 1LL << 34,
     "limit on a request body held in memory; more is answered 413"},
    {"http", "header_timeout", T_DURATION, F(http.header_timeout_ms), "10s", 100, 3600000,
     "time a client has to send a whole request head; slower is answered 408"},
    {"http", "idle_timeout", T_DURATION, F(http.idle_timeout_ms), "60s", 100, 86400000,
     "an idle keep-alive connection, or a body that stops arriving, is closed after this"},
    {"http", "shutdown_timeout", T_DURATION, F(http.shutdown_timeout_ms), "10s", 0, 3600000,
     "on SIGTERM, how long in-flight requests may take before the process exits anyway"},
    {"http", "max_connections", T_INT, F(http.max_connections), "10000", 1, 1000000,
     "open HTTP connections at most; more are closed at once"},
    {"http", "static_dir", T_STR, F(http.static_dir), "web/dist", 0, 0,
     "the built front end, served for paths no route claims"},
    {"http", "cors_origin", T_STR, F(http.cors_origin), "*", 0, 0,
     "Access-Control-Allow-Origin sent on public resources (HLS, static files, health); empty for none"},
    {"http", "access_log", T_BOOL, F(http.access_log), "true", 0, 0,
     "log one line per request: method, path, status, bytes, microseconds"},
    {"http", "trusted_proxies", T_STR, F(http.trusted_proxies), "", 0, 0,
     "addresses of reverse proxies (IPs or CIDR ranges, comma separated) whose X-Forwarded-For is believed for the client's address"},

    {"rtmp", "listen", T_LISTEN, F(rtmp.listen), "0.0.0.0:1935", 0, 0,
     "address and port for RTMP publishers (OBS: rtmp://HOST/live)"},
    {"rtmp", "max_message_size", T_SIZE, F(rtmp.max_message_size), "16MiB", 4096, 1 << 26,
     "largest RTMP message (one video frame) accepted; more ends that connection"},
    {"rtmp", "handshake_timeout", T_DURATION, F(rtmp.handshake_timeout_ms), "10s", 100, 600000,
     "time a client has to finish the RTMP handshake"},
    {"rtmp", "idle_timeout", T_DURATION, F(rtmp.idle_timeout_ms), "15s", 100, 3600000,
     "a publisher that sends no media for this long is dropped"},
    {"rtmp", "max_connections", T_INT, F(rtmp.max_connections), "1000", 1, 100000,
     "open RTMP connections at most"},

    {"hls", "segment_target", T_DURATION, F(hls.segment_target_ms), "2s", 500, 30000,
     "a segment ends at the first keyframe after this much media"},
    {"hls", "part_target", T_DURATION, F(hls.part_target_ms), "500ms", 200, 1000,
     "LL-HLS partial segment length (0.2 to 1 s); viewers sit about three parts behind"},
    {"hls", "window", T_DURATION, F(hls.window_ms), "60s", 6000, 3600000,
     "how much of a live stream the playlist keeps"},
    {"hls", "reconnect_grace", T_DURATION, F(hls.reconnect_grace_ms), "10s", 0, 600000,
     "a publisher that comes back within this continues the same playlist (with a discontinuity)"},

    {"storage", "data_dir", T_STR, F(storage.data_dir), "./data", 0, 0,
     "where the database, backups, recordings and uploads live"},

    {"db", "url", T_DB_URL, F(db.url), "", 0, 0,
     "database: sqlite:PATH (default sqlite:<data_dir>/hearth.db); DB_URL overrides it too"},

    {"site", "name", T_STR, F(site.name), "Hearth", 0, 0, "the instance's name, shown on pages"},
    {"site", "public_url", T_PUBLIC_URL, F(site.public_url), "http://localhost:8080", 0, 0,
     "the address people use to reach this instance; links and RTMP URLs are made from it"},
    {"site", "allow_registration", T_BOOL, F(site.allow_registration), "true", 0, 0,
     "whether anyone may create an account"},
    {"site", "require_verification", T_BOOL, F(site.require_verification), "false", 0, 0,
     "whether new accounts must confirm their e-mail address before logging in"},

    {"xmpp", "domain", T_DOMAIN, F(xmpp.domain), "localhost", 0, 0,
     "the chat domain: users are NAME@domain, rooms live on chat.domain"},
    {"xmpp", "c2s_listen", T_LISTEN, F(xmpp.c2s_listen), "0.0.0.0:5222", 0, 0,
     "address and port for XMPP clients (STARTTLS required)"},
    {"xmpp", "s2s_listen", T_LISTEN, F(xmpp.s2s_listen), "0.0.0.0:5269", 0, 0,
     "address and port for other XMPP servers (federation)"},
    {"xmpp", "federation", T_BOOL, F(xmpp.federation), "true", 0, 0,
     "whether users of other XMPP servers may join rooms (s2s); false: no s2s listener, no outgoing s2s"},
    {"xmpp", "tls_cert", T_STR, F(xmpp.tls_cert), "", 0, 0,
     "PEM certificate (chain) for c2s and s2s TLS; empty: a self-signed one is generated into data_dir/xmpp/ at first start"},
    {"xmpp", "tls_key", T_STR, F(xmpp.tls_key), "", 0, 0, "PEM private key for tls_cert"},
    {"xmpp", "tls_ca", T_STR, F(xmpp.tls_ca), "", 0, 0,
     "PEM CA bundle that peer servers' certificates are checked against; empty: the system's"},
    {"xmpp", "s2s_secure_auth", T_BOOL, F(xmpp.s2s_secure_auth), "false", 0, 0,
     "true: peers must present a valid certificate (SASL EXTERNAL); false: dialback is accepted too"},
    {"xmpp", "s2s_routes", T_STR, F(xmpp.s2s_routes), "", 0, 0,
     "static routes for federation, before DNS: DOMAIN=HOST:PORT, comma separated"},
    {"xmpp", "websocket_origins", T_STR, F(xmpp.websocket_origins), "", 0, 0,
     "origins allowed to open /xmpp-websocket, comma separated; empty: site.public_url's only"},
    {"xmpp", "max_connections", T_INT, F(xmpp.max_connections), "20000", 1, 1000000,
     "open XMPP connections at most (c2s, WebSocket and s2s together)"},
    {"xmpp", "keepalive", T_DURATION, F(xmpp.keepalive_ms), "60s", 1000, 3600000,
     "a whitespace keepalive goes to an idle TCP stream this often"},
    {"xmpp", "idle_timeout", T_DURATION, F(xmpp.idle_timeout_ms), "5m", 1000, 86400000,
     "a stream that sends nothing for this long is closed"},
    {"xmpp", "token_lifetime", T_DURATION, F(xmpp.token_lifetime_ms), "5m", 10000, 86400000,
     "how long a chat token from the web app may be used to log in"},
    {"xmpp", "max_occupants", T_INT, F(xmpp.max_occupants), "10000", 1, 1000000,
     "occupants per room at most"},
    {"xmpp", "max_message_length", T_INT, F(xmpp.max_message_length), "2000", 1, 100000,
     "longest chat message body, in characters"},
    {"xmpp", "message_burst", T_INT, F(xmpp.message_burst), "5", 1, 1000,
     "messages an occupant may send in a burst before the rate limit applies"},
    {"xmpp", "message_interval", T_DURATION, F(xmpp.message_interval_ms), "1s", 0, 3600000,
     "after a burst, one message per this interval (a channel's slow mode can ask for more)"},
    {"xmpp", "join_history", T_INT, F(xmpp.join_history), "20", 0, 1000,
     "messages a newcomer gets on joining a room, unless the client asks otherwise"},
    {"xmpp", "history_retention", T_DURATION, F(xmpp.history_retention_ms), "720h", 0,
     315360000000LL, "how long room messages are archived (MAM); 0 keeps them forever"},

    {"log", "level", T_LOGLEVEL, F(log.level), "info", 0, 0, "debug, info, warn or error"},

    {"debug", "echo", T_BOOL, F(debug.echo), "false", 0, 0,
     "serve POST /debug/echo, which answers a body's length and SHA-256: checks that a proxy in front passes bodies intact"},

    {"smtp", "host", T_STR, F(smtp.host), "", 0, 0,
     "mail server for verification and password-reset e-mail; empty: the messages are logged instead"},
    {"smtp", "port", T_INT, F(smtp.port), "587", 1, 65535,
     "mail server port (587 for starttls, 465 for tls)"},
    {"smtp", "user", T_STR, F(smtp.user), "", 0, 0, "SMTP login; empty for none"},
    {"smtp", "password", T_STR, F(smtp.password), "", 0, 0, "SMTP password"},
    {"smtp", "from", T_STR, F(smtp.from), "", 0, 0,
     "sender address; empty: noreply@ the host of site.public_url"},
    {"smtp", "tls", T_STR, F(smtp.tls), "starttls", 0, 0,
     "starttls (required), tls (smtps://, implicit TLS) or none (plain; local relays only)"},

    {"auth", "session_lifetime", T_DURATION, F(auth.session_lifetime_ms), "720h", 60000,
     31622400000LL, "a login lasts this long, then the user signs in again"},
    {"auth", "login_attempts", T_INT, F(auth.login_attempts), "10", 1, 100000,
     "failed logins allowed per IP address and per account within login_window; more are answered 429"},
    {"auth", "login_window", T_DURATION, F(auth.login_window_ms), "15m", 1000, 86400000,
     "the window that login_attempts counts in"},
};

#define NKEYS (sizeof keys / sizeof keys[0])

static const char *type_hint(enum key_type t)
{
    switch (t) {
    case T_BOOL: return "expected true or false";
    case T_INT: return "expected a whole number";
    case T_SIZE: return "expected a size such as 4096, 64KiB or 16MiB";
    case T_DURATION: return "expected a duration such as 500ms, 10s or 2m";
    case T_LISTEN: return "expected HOST:PORT, e.g. 0.0.0.0:8080 or [::]:8080";
    case T_PUBLIC_URL: return "expected an http:// or https:// URL";
    case T_DB_URL: return "expected sqlite:PATH or postgresql://...";
    case T_LOGLEVEL: return "expected debug, info, warn or error";
    case T_DOMAIN: return "expected a DNS domain name";
    default: return "bad value";
    }
}

int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_number(const char *s, unsigned long long *v, const char **rest)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    *v = strtoull(s, &end, 10);
    if (errno)
        return -ERANGE;
    *rest = end;
    return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    unsigned long long v;
    const char *u;
    if (parse_number(s, &v, &u))
        return -EINVAL;
    unsigned long long mul;
    if (*u == '\0' || strcmp(u, "s") == 0)
        mul = 1000;
    else if (strcmp(u, "ms") == 0)
        mul = 1;
    else if (strcmp(u, "m") == 0 || strcmp(u, "min") == 0)
        mul = 60000;
    else if (strcmp(u, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mul)
        return -ERANGE;
    *ms = v * mul;
    return 0;
}

int config_parse_size(const char *s, size_t *bytes)
{
    unsigned long long v;
    const char *u;
    if (parse_number(s, &v, &u))
        return -EINVAL;
    unsigned long long mul;
    if (*u == '\0' || strcasecmp(u, "b") == 0)
        mul = 1;
    else if (strcasecmp(u, "k") == 0 || strcasecmp(u, "kb") == 0 || strcasecmp(u, "kib") == 0)
        mul = 1ULL << 10;
    else if (strcasecmp(u, "m") == 0 || strcasecmp(u, "mb") == 0 || strcasecmp(u, "mib") == 0)
        mul = 1ULL << 20;
    else if (strcasecmp(u, "g") == 0 || strcasecmp(u, "gb") == 0 || strcasecmp(u, "gib") == 0)
        mul = 1ULL << 30;
    else
        return -EINVAL;
    if (v > SIZE_MAX / mul)
        return -ERANGE;
    *bytes = (size_t)(v * mul);
    return 0;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    unsigned long long p;
    const char *rest;
    if (parse_number(colon + 1, &p, &rest) || *rest || p > 65535)
        return -EINVAL;
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

static bool valid_domain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-'))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0;
}

static int set_key(struct config *cfg, const struct key *k, const char *value, char *err,
                   size_t errlen)
{
    void *field = (char *)cfg + k->offset;
    int rc = 0;
    switch (k->type) {
    case T_STR:
    case T_DB_URL:
    case T_PUBLIC_URL:
    case T_DOMAIN:
    case T_LISTEN: {
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s.%s: value is too long (at most %zu characters)", k->section,
                     k->name, k->size - 1);
            return -EINVAL;
        }
        if (k->type == T_LISTEN) {
            char host[64];
            int port;
            if (config_parse_listen(value, host, sizeof host, &port))
                rc = -EINVAL;
        } else if (k->type == T_PUBLIC_URL) {
            if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
                rc = -EINVAL;
            else if (value[strncmp(value, "https", 5) == 0 ? 8 : 7] == '\0')
                rc = -EINVAL;
        } else if (k->type == T_DB_URL) {
            if (*value && strncmp(value, "sqlite:", 7) != 0 &&
                strncmp(value, "postgresql://", 13) != 0 && strncmp(value, "postgres://", 11) != 0)
                rc = -EINVAL;
            else if (strcmp(value, "sqlite:") == 0)
                rc = -EINVAL;
        } else if (k->type == T_DOMAIN) {
            if (!valid_domain(value))
                rc = -EINVAL;
        }
        if (rc == 0)
            memcpy(field, value, strlen(value) + 1);
        break;
    }
    case T_BOOL:
        rc = config_parse_bool(value, (bool *)field);
        break;
    case T_INT: {
        unsigned long long v;
        const char *rest;
        if (parse_number(value, &v, &rest) || *rest)
            rc = -EINVAL;
        else if ((long long)v < k->min || (long long)v > k->max) {
            snprintf(err, errlen, "%s.%s: %s is out of range (%lld to %lld)", k->section, k->name,
                     value, k->min, k->max);
            return -ERANGE;
        } else
            *(int *)field = (int)v;
        break;
    }
    case T_SIZE: {
        size_t v;
        if (config_parse_size(value, &v))
            rc = -EINVAL;
        else if ((long long)v < k->min || (long long)v > k->max) {
            snprintf(err, errlen, "%s.%s: %s is out of range (%lld to %lld bytes)", k->section,
                     k->name, value, k->min, k->max);
            return -ERANGE;
        } else
            *(size_t *)field = v;
        break;
    }
    case T_DURATION: {
        uint64_t v;
        if (config_parse_duration(value, &v))
            rc = -EINVAL;
        else if ((long long)v < k->min || (long long)v > k->max) {
            snprintf(err, errlen, "%s.%s: %s is out of range (%lldms to %lldms)", k->section,
                     k->name, value, k->min, k->max);
            return -ERANGE;
        } else
            *(uint64_t *)field = v;
        break;
    }
    case T_LOGLEVEL:
        rc = log_level_parse(value, (enum log_level *)field);
        break;
    }
    if (rc) {
        snprintf(err, errlen, "%s.%s: bad value '%s': %s", k->section, k->name, value,
                 type_hint(k->type));
        return -EINVAL;
    }
    return 0;
}

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static bool known_section(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return true;
    return false;
}

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char err[256];
    for (size_t i = 0; i < NKEYS; i++) {
        if (set_key(cfg, &keys[i], keys[i].def, err, sizeof err) != 0) {
            /* A default that does not parse is a bug in the table above. */
            fprintf(stderr, "hearth: internal error: %s\n", err);
            abort();
        }
    }
}

int config_set(struct config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t errlen)
{
    const struct key *k = find_key(section, key);
    if (!k) {
        if (known_section(section))
            snprintf(err, errlen, "unknown key '%s' in section [%s]", key, section);
        else
            snprintf(err, errlen, "unknown section [%s] (key '%s')", section, key);
        return -ENOENT;
    }
    return set_key(cfg, k, value, err, errlen);
}

struct ini_ctx {
    struct config *cfg;
    char *err;
    size_t errlen;
    const char *path;
    FILE *f;
    int lineno;      /* lines read so far: the line being handled */
    int failed_line; /* where the handler refused a key, 0 if none */
};

/* inih's reader hook, used only to know which line the handler sees. */
static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_ctx *c = stream;
    char *r = fgets(str, num, c->f);
    if (r)
        c->lineno++;
    return r;
}

static int on_ini(void *user, const char *section, const char *name, const char *value
#if INI_HANDLER_LINENO
                  , int lineno
#endif
)
{
    struct ini_ctx *c = user;
    if (c->failed_line)
        return 0;
    char msg[512];
    int bad = 0;
    if (!section || !*section) {
        snprintf(msg, sizeof msg, "key '%s' is outside any [section]", name);
        bad = 1;
    } else if (config_set(c->cfg, section, name, value, msg, sizeof msg) != 0) {
        bad = 1;
    }
    if (bad) {
        c->failed_line = c->lineno;
        snprintf(c->err, c->errlen, "%s:%d: %s", c->path, c->lineno, msg);
        return 0;
    }
    return 1;
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -ENOENT;
    }
    struct ini_ctx c = {.cfg = cfg, .err = err, .errlen = errlen, .path = path, .f = f};
    int line = ini_parse_stream(ini_read_line, &c, on_ini, &c);
    fclose(f);
    /* inih reports the first bad line; it is ours when the handler refused it. */
    if (line != 0 && (!c.failed_line || line < c.failed_line)) {
        snprintf(err, errlen, "%s:%d: syntax error", path, line);
        return -EINVAL;
    }
    if (c.failed_line)
        return -EINVAL;
    snprintf(cfg->source, sizeof cfg->source, "%s", path);
    return 0;
}

int config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errlen)
{
    if (!envp)
        return 0;
    for (char *const *e = envp; *e; e++) {
        const char *var = *e;
        const char *eq = strchr(var, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - var);
        const char *value = eq + 1;
        char name[128];
        if (nlen >= sizeof name)
            continue;
        memcpy(name, var, nlen);
        name[nlen] = '\0';

        if (strcmp(name, "DB_URL") == 0) {
            char msg[512];
            if (config_set(cfg, "db", "url", value, msg, sizeof msg)) {
                snprintf(err, errlen, "environment DB_URL: %s", msg);
                return -EINVAL;
            }
            continue;
        }
        if (strncmp(name, "HEARTH_", 7) != 0 || strcmp(name, "HEARTH_CONFIG") == 0)
            continue;
        /* HEARTH_<SECTION>_<KEY>: sections have no '_', keys may. */
        const char *rest = name + 7;
        const char *us = strchr(rest, '_');
        char section[64], key[64];
        if (!us || (size_t)(us - rest) >= sizeof section || strlen(us + 1) >= sizeof key) {
            snprintf(err, errlen, "environment %s: not of the form HEARTH_<SECTION>_<KEY>", name);
            return -EINVAL;
        }
        size_t sl = (size_t)(us - rest);
        for (size_t i = 0; i < sl; i++)
            section[i] = (char)tolower((unsigned char)rest[i]);
        section[sl] = '\0';
        size_t kl = strlen(us + 1);
        for (size_t i = 0; i <= kl; i++)
            key[i] = (char)tolower((unsigned char)us[1 + i]);
        char msg[512];
        if (config_set(cfg, section, key, value, msg, sizeof msg)) {
            snprintf(err, errlen, "environment %s: %s", name, msg);
            return -EINVAL;
        }
    }
    return 0;
}

int config_finalize(struct config *cfg, char *err, size_t errlen)
{
    if (cfg->db.url[0] == '\0') {
        int n = snprintf(cfg->db.url, sizeof cfg->db.url, "sqlite:%s/hearth.db",
                         cfg->storage.data_dir);
        if (n < 0 || (size_t)n >= sizeof cfg->db.url) {
            snprintf(err, errlen, "storage.data_dir: path is too long");
            return -EINVAL;
        }
    }
    if (cfg->storage.data_dir[0] == '\0') {
        snprintf(err, errlen, "storage.data_dir: must not be empty");
        return -EINVAL;
    }
    return 0;
}

int config_load(struct config *cfg, const char *path, char *const *envp, char *err, size_t errlen)
{
    config_defaults(cfg);
    if (!path) {
        const char *env_path = NULL;
        for (char *const *e = envp; e && *e; e++)
            if (strncmp(*e, "HEARTH_CONFIG=", 14) == 0)
                env_path = *e + 14;
        if (env_path && *env_path)
            path = env_path;
        else if (access("hearth.conf", R_OK) == 0)
            path = "hearth.conf";
    }
    int rc;
    if (path && (rc = config_load_file(cfg, path, err, errlen)) != 0)
        return rc;
    if ((rc = config_apply_env(cfg, envp, err, errlen)) != 0)
        return rc;
    return config_finalize(cfg, err, errlen);
}

static void format_value(const struct config *cfg, const struct key *k, char *out, size_t n)
{
    const void *field = (const char *)cfg + k->offset;
    static const char *const lv[] = {"debug", "info", "warn", "error"};
    switch (k->type) {
    case T_BOOL: snprintf(out, n, "%s", *(const bool *)field ? "true" : "false"); break;
    case T_INT: snprintf(out, n, "%d", *(const int *)field); break;
    case T_SIZE: {
        size_t v = *(const size_t *)field;
        if (v && v % (1 << 20) == 0)
            snprintf(out, n, "%zuMiB", v >> 20);
        else if (v && v % 1024 == 0)
            snprintf(out, n, "%zuKiB", v >> 10);
        else
            snprintf(out, n, "%zu", v);
        break;
    }
    case T_DURATION: {
        uint64_t v = *(const uint64_t *)field;
        if (v % 1000 == 0)
            snprintf(out, n, "%llus", (unsigned long long)(v / 1000));
        else
            snprintf(out, n, "%llums", (unsigned long long)v);
        break;
    }
    case T_LOGLEVEL: snprintf(out, n, "%s", lv[*(const enum log_level *)field]); break;
    default: snprintf(out, n, "%s", (const char *)field); break;
    }
}

void config_write(const struct config *cfg, void *file)
{
    FILE *f = file;
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(f, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        char v[CONFIG_PATH + 32];
        format_value(cfg, k, v, sizeof v);
        fprintf(f, "; %s\n%s = %s\n", k->help, k->name, v);
    }
}

int config_key_at(size_t i, const char **section, const char **key, const char **help)
{
    if (i >= NKEYS)
        return -ENOENT;
    *section = keys[i].section;
    *key = keys[i].name;
    if (help)
        *help = keys[i].help;
    return 0;
}
