/*
 * Public user profiles: GET /api/v1/users/:name (api_users.c).
 */
#ifndef HEARTH_APP_API_USERS_H
#define HEARTH_APP_API_USERS_H

struct app;
struct http_server;

int api_users_register(struct app *app, struct http_server *srv);

#endif
