/*
 * The application's routes, gathered: each part registers its own, this file
 * says which parts there are. main() calls it once the hub and the HLS
 * packager exist, since some routes need them.
 */
#include "app/api_chat.h"
#include "app/app.h"
#include "app/api_users.h"
#include "app/auth.h"
#include "app/viewers.h"
#include "deliver/hls/hls.h"

int app_register_routes(struct app *app, struct http_server *srv)
{
    int rc = api_health_register(app, srv);
    if (rc == 0)
        rc = app_pages_register(app, srv);
    if (rc == 0)
        rc = api_auth_register(app, srv);
    if (rc == 0)
        rc = api_channels_register(app, srv, app->hub, app->hls);
    if (rc == 0)
        rc = api_chat_register(app, srv);
    if (rc == 0)
        rc = api_users_register(app, srv);
    if (rc == 0 && app->hls) {
        /* Protected channels and viewer counting see every HLS request. */
        app->hls->on_request = viewers_hls_request;
        app->hls->on_request_ud = api_channels_viewers();
    }
    return rc;
}
