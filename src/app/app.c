/*
 * The application's routes, gathered: each part registers its own, this file
 * says which parts there are. main() calls it once the hub and the HLS
 * packager exist, since some routes need them.
 */
#include "app/app.h"
#include "app/auth.h"

int app_register_routes(struct app *app, struct http_server *srv)
{
    int rc = api_health_register(app, srv);
    if (rc == 0)
        rc = app_pages_register(app, srv);
    if (rc == 0)
        rc = api_auth_register(app, srv);
    return rc;
}
