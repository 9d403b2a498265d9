/*
 * Page routes: paths that are pages of the front end rather than files.
 * /watch/<slug> is the player page (web/watch.html); the page itself reads
 * the slug from its address, so the server only hands out the built HTML.
 */
#include "app/app.h"
#include "net/http.h"

static int watch_page(struct http_request *req, void *ud)
{
    return http_response_static(req, "/watch.html");
}

int app_pages_register(struct app *app, struct http_server *srv)
{
    return http_server_route(srv, "GET", "/watch/:slug", watch_page, app, 0);
}
