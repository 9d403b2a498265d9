/*
 * Multi-user chat (XEP-0045) on chat.DOMAIN: one persistent room per channel,
 * SLUG@chat.DOMAIN, with its archive (XEP-0313, mam.c).
 *
 * Rooms are the channels: a room exists while its channel exists and has
 * chat on. Its policy comes from the database (channels, chat_moderators,
 * chat_bans, chat_banned_words, users.roles for site admins) and is loaded
 * on a worker the first time someone joins, then kept in memory while the
 * room has occupants. The web app changes that policy on worker threads and
 * then calls muc_room_changed, which reloads it on the loop (and empties the
 * room when the channel went away or turned chat off).
 *
 * Affiliations: the channel owner's account is owner; the channel's
 * moderators and the site admins are admin; registered users are member;
 * guests and federated users are none; bans are outcast. Roles follow:
 * owner/admin -> moderator, member -> participant, none -> participant, or
 * visitor for guests when the channel does not let guests talk.
 *
 * A protected channel's room is members-only (XEP-0045 7.2.7): only the
 * owner, its moderators, site admins and invited accounts join or read the
 * archive; others get <registration-required/>; disco#items leaves it out.
 *
 * Limits against the network: a stanza for an unknown room costs a
 * database job, so unknown names are remembered for a minute and at most
 * 64 rooms load at once; a room's queue while it waits is bounded in bytes
 * (1 MiB, 64 KiB per sender); archive queries run one at a time per
 * requester, 10 in a row then one a second, 16 at once in all, 100
 * results a page at most.
 */
#ifndef HEARTH_CHAT_MUC_H
#define HEARTH_CHAT_MUC_H

#include <stddef.h>

struct xmpp_server;
struct muc_service;

/* Registers chat.DOMAIN with the router. NULL on -ENOMEM. Loop thread. */
struct muc_service *muc_service_new(struct xmpp_server *srv);
/* Occupants get an unavailable presence (room shutting down). */
void muc_service_free(struct muc_service *m);

/*
 * Any thread. The channel with this id changed (settings, moderators, bans,
 * banned words), was renamed (old_slug is what it was called; NULL when the
 * slug is unchanged) or deleted: reload its room's policy, apply it to the
 * occupants now in it (a new ban removes them, chat off or deletion
 * destroys the room with XEP-0045 <destroy/>, a rename destroys it with the
 * new address as alternate venue). 0 or -ENOMEM.
 */
int muc_room_changed(struct muc_service *m, long long channel_id, const char *old_slug);

/*
 * Loop thread. The server DOMAIN went away (its incoming s2s stream ended):
 * every occupant whose real JID is on it leaves every room with status 333.
 * The same happens when the session-gone watcher is called
 * (xmpp_server_notify_gone) with a JID that is only that domain. Local
 * domains are ignored. Safe to call from inside a delivery.
 */
void muc_domain_gone(struct muc_service *m, const char *domain);

/* Any thread: occupants of the channel's room now (0 when it is empty or
 * not loaded). */
size_t muc_room_occupants(struct muc_service *m, long long channel_id);

#endif
