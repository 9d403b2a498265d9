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

struct app {
    const struct config *cfg;
    struct db_pool *db;
    struct http_server *http;
    uint64_t started_ns; /* monotonic */
};

/* Register every route of the application on the HTTP server. */
int app_register_routes(struct app *app, struct http_server *srv);

/* Routes of each part, called by app_register_routes. */
int api_health_register(struct app *app, struct http_server *srv);

#endif
