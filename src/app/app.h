/*
 * The application: what the HTTP routes and the CLI share. One `struct app`
 * per process, made by main; handlers get it as their user data.
 */
#ifndef HEARTH_APP_APP_H
#define HEARTH_APP_APP_H

#include <stdint.h>

struct config;
struct db_pool;
struct http_server;

struct stream_hub;
struct hls;
struct xmpp_server;
struct muc_service;

struct app {
    const struct config *cfg;
    struct db_pool *db;
    struct http_server *http;
    struct stream_hub *hub; /* loop thread only */
    struct hls *hls;        /* loop thread only */
    struct xmpp_server *xmpp; /* loop thread only */
    struct muc_service *muc;  /* muc_room_changed / muc_room_occupants: any thread */
    uint64_t started_ns; /* monotonic */
};

/* Register every route of the application on the HTTP server. */
int app_register_routes(struct app *app, struct http_server *srv);

/* Routes of each part, called by app_register_routes. */
int api_health_register(struct app *app, struct http_server *srv);
int app_pages_register(struct app *app, struct http_server *srv);

struct stream_hub;
struct rtmp_auth;
/* Stream keys for the RTMP server (runs on a worker thread). */
int app_live_authorize(void *ud, const char *key, struct rtmp_auth *out);
/* Record live sessions in the streams table as the hub starts and ends them. */
int app_live_init(struct app *app, struct stream_hub *hub);

/* ---- chat logins (chat_auth.c) ---- */
struct xmpp_account;
/*
 * xmpp_hooks.authenticate (worker thread): user and secret from SASL PLAIN;
 * the secret is the account password or a chat token; ip the client's
 * address (failed passwords are throttled per address and per address and
 * name; valid tokens never). 0 with *out filled, -EPERM wrong, -EACCES
 * disabled or unverified, -EAGAIN throttled.
 */
int app_chat_authenticate(void *ud /* struct app * */, const char *user, const char *secret,
                          const char *ip, struct xmpp_account *out);
/* A chat token for user_id, valid xmpp.token_lifetime (worker thread or CLI).
 * 0, -ENAMETOOLONG when n is too small (128 is enough), or a db error. */
int app_chat_token_issue(struct app *app, int64_t user_id, char *out, size_t n);
/* Load the token secret and the login throttle at start-up, so that issuing
 * a token never needs a second database connection. 0 or negative. */
int app_chat_init(struct app *app);

#endif
