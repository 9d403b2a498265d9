/*
 * What c2s needs from the router beyond xmpp.h: the session object behind
 * a full JID, so that binding a resource that is taken can end the old
 * stream (RFC 6120 7.7.2.2, "conflict": the newest session wins).
 * Candidate for xmpp.h once other modules need it.
 */
#ifndef HEARTH_CHAT_XMPP_INTERNAL_H
#define HEARTH_CHAT_XMPP_INTERNAL_H

#include "chat/xmpp.h"

/* The sess given to xmpp_server_session_add for full, and its ops; NULL
 * when full is not a local session. */
void *xmpp_server_session_find(const struct xmpp_server *srv, const struct jid *full,
                               const struct xmpp_session_ops **ops);

/* Tell the session-gone watchers (the MUC) that full went away without
 * being a local session: a remote occupant whose s2s stream died. */
void xmpp_server_notify_gone(struct xmpp_server *srv, const struct jid *full);

#endif
