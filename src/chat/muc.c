/*
 * Multi-user chat service (XEP-0045) on chat.DOMAIN: see muc.h.
 * Placeholder while the service is written: it registers nothing yet.
 */
#include <errno.h>
#include <stdlib.h>

#include "chat/muc.h"

struct muc_service {
    struct xmpp_server *srv;
};

struct muc_service *muc_service_new(struct xmpp_server *srv)
{
    struct muc_service *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->srv = srv;
    return m;
}

void muc_service_free(struct muc_service *m) { free(m); }

int muc_room_changed(struct muc_service *m, long long channel_id, const char *old_slug)
{
    (void)m, (void)channel_id, (void)old_slug;
    return 0;
}

size_t muc_room_occupants(struct muc_service *m, long long channel_id)
{
    (void)m, (void)channel_id;
    return 0;
}
