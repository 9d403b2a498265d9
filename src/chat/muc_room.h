/*
 * One MUC room (XEP-0045) as a state machine: occupants, roles and
 * affiliations, presence, messages, moderation. No sockets and no database:
 * the service (muc.c) resolves who is behind a JID and loads the policy,
 * then calls in here; everything the room says goes out through
 * env->send, everything it wants stored through the env's other callbacks.
 * That keeps the protocol logic testable with a fake env
 * (tests/unit/test_chat_muc.c).
 *
 * The room is semi-anonymous: real JIDs are shown to moderators (and to the
 * occupant itself), never to others; every message and presence carries an
 * XEP-0421 occupant-id, every message an XEP-0359 stanza-id.
 *
 * Large rooms. Broadcasting every join to every occupant costs O(N) per
 * join and O(N^2) to fill a room, which a 10,000-viewer stream cannot pay.
 * So an occupant's presence goes to everyone only when it joined while the
 * room held fewer than env->presence_full_max occupants, or is a moderator
 * ("announced"); the others' presence goes only to moderators and
 * themselves. Their messages still reach everyone (clients show nicks that
 * are not in the occupant list), like the big rooms of Twitch-style chats.
 *
 * Multi-session nicks: an account joined from two devices (or a client back
 * before its dead stream was noticed) holds one nick with two sessions;
 * others see one occupant, private messages reach both, a kick takes both.
 *
 * Bounds: a nick is at most 64 characters; of a presence only show, status,
 * priority, caps, avatar hash and idle are kept and relayed (512 bytes
 * each); a message carries at most 8 KB besides its body; presence changes,
 * nick changes and iqs (but pings) share the occupant's message rate limit.
 * What an occupant may not claim in a message is stripped: the older
 * fasten/moderate:0 forms, <moderated/>, nested ids naming the room.
 *
 * Re-entrancy: env->send may call muc_room_gone on the same room (a dead
 * stream noticed during a broadcast); see muc_room_gone.
 */
#ifndef HEARTH_CHAT_MUC_ROOM_H
#define HEARTH_CHAT_MUC_ROOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jid.h"
#include "chat/xml.h"

#define MUC_NS "http://jabber.org/protocol/muc"
#define MUC_NS_USER "http://jabber.org/protocol/muc#user"
#define MUC_NS_ADMIN "http://jabber.org/protocol/muc#admin"
#define MUC_NS_OWNER "http://jabber.org/protocol/muc#owner"
#define MUC_NS_SID "urn:xmpp:sid:0"
#define MUC_NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define MUC_NS_DELAY "urn:xmpp:delay"
#define MUC_NS_RETRACT "urn:xmpp:message-retract:1"
#define MUC_NS_RETRACT0 "urn:xmpp:message-retract:0"
#define MUC_NS_MODERATE "urn:xmpp:message-moderate:1"
#define MUC_NS_MODERATE0 "urn:xmpp:message-moderate:0"
#define MUC_NS_FASTEN "urn:xmpp:fasten:0"
#define MUC_NS_REACTIONS "urn:xmpp:reactions:0"
#define MUC_NS_REPLY "urn:xmpp:reply:0"
#define MUC_NS_PING "urn:xmpp:ping"
#define MUC_NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define MUC_NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define MUC_NS_DATA "jabber:x:data"
#define MUC_NS_MAM "urn:xmpp:mam:2"
#define MUC_NS_RSM "http://jabber.org/protocol/rsm"
#define MUC_NS_FORWARD "urn:xmpp:forward:0"
#define MUC_NS_ORIGIN_ID MUC_NS_SID

enum muc_aff { MUC_AFF_NONE = 0, MUC_AFF_MEMBER, MUC_AFF_ADMIN, MUC_AFF_OWNER, MUC_AFF_OUTCAST };
enum muc_role { MUC_ROLE_NONE = 0, MUC_ROLE_VISITOR, MUC_ROLE_PARTICIPANT, MUC_ROLE_MODERATOR };

const char *muc_aff_name(enum muc_aff a);
const char *muc_role_name(enum muc_role r);

/* ---- policy: what the database says about a channel's room ------------ */

struct muc_ban {
    char *jid;       /* bare JID, or NULL */
    int64_t user_id; /* 0: none */
    char *ip;        /* a guest's address, or NULL */
    char *nick, *reason, *by;
    int64_t expires_ms; /* 0: until lifted */
    bool site;          /* channel_id NULL in the table */
};

struct muc_user {
    int64_t user_id;
    char *name; /* account name: NAME@DOMAIN */
};

struct muc_policy {
    int64_t channel_id;
    char *slug, *title, *description, *subject; /* subject NULL: the title */
    int64_t owner_id;
    char *owner_name;
    bool guests_may_talk;
    int slow_mode_s;
    struct muc_user *mods; /* the channel's moderators (admin) */
    size_t nmods;
    struct muc_user *admins; /* site admins (admin) */
    size_t nadmins;
    struct muc_ban *bans; /* the channel's and the site's, unexpired when loaded */
    size_t nbans;
    char **words; /* banned words, the channel's and the site's */
    size_t nwords;
    /* A protected channel (channels.protected): members-only. Only the
     * owner, the channel's moderators, site admins and the invited
     * accounts (channel_invites) join or read the archive; guests and
     * federated users never (the web's invite code is a cookie for the
     * player, not an XMPP identity). The room is hidden from disco#items. */
    bool members_only;
    int64_t *invited; /* user ids */
    size_t ninvited;
};

void muc_policy_free(struct muc_policy *p);
/* Append a ban (strings copied). 0 or -ENOMEM. */
int muc_policy_add_ban(struct muc_policy *p, const struct muc_ban *b);

/* ---- who is behind a real JID (the service asks the router) ----------- */

struct muc_who {
    bool guest;          /* on guest.DOMAIN */
    int64_t user_id;     /* an account of ours; 0 otherwise */
    const char *account; /* its name, or NULL */
    bool site_admin;
    const char *ip; /* local sessions; NULL for remote users */
};

/* ---- the environment: the service, or a test -------------------------- */

/* One message as the room broadcast it, for the archive. */
struct muc_archived {
    int64_t channel_id;
    const char *stanza_id, *origin_id; /* origin_id may be NULL */
    int64_t ts_ms;
    const char *nick, *occupant_id, *from_jid; /* from_jid: the real bare JID */
    int64_t user_id;
    const char *body;          /* may be NULL (reactions, retractions) */
    const struct xml_node *st; /* the <message/> without 'to' */
};

struct muc_env {
    void *ud;
    const char *muc_domain;   /* chat.DOMAIN */
    const char *user_domain;  /* DOMAIN: NAME@DOMAIN are accounts */
    const char *guest_domain; /* guest.DOMAIN */
    size_t max_occupants;
    size_t max_body_chars;
    int burst;            /* messages before the rate limit bites */
    int64_t interval_ms;  /* one message per interval after the burst */
    size_t history_max;   /* messages kept in memory for joins */
    size_t history_default; /* sent on join when the client does not ask */
    size_t presence_full_max; /* see "Large rooms" above */
    unsigned char occupant_key[32]; /* keys the XEP-0421 ids */

    /* Send st to 'to'. st is not given away: copy or serialize it. */
    void (*send)(void *ud, const struct xml_node *st, const char *to);
    int64_t (*now_ms)(void *ud);
    /* Optional: store a broadcast message. */
    void (*archive)(void *ud, const struct muc_archived *m);
    /* Optional: replace the archived message stanza_id with tombstone, only
     * when its occupant_id is author_oid (NULL: whoever wrote it). */
    void (*retract)(void *ud, int64_t channel_id, const char *stanza_id, const char *author_oid,
                    const char *by, const struct xml_node *tombstone);
    /* Optional: a moderator banned (ban_add) or lifted a ban (ban_remove,
     * by bare JID) through XEP-0045. */
    void (*ban_add)(void *ud, int64_t channel_id, const struct muc_ban *b);
    void (*ban_remove)(void *ud, int64_t channel_id, const char *jid);
    /* Optional: a moderator changed the subject. */
    void (*subject)(void *ud, int64_t channel_id, const char *subject);
    /* Optional: the occupant count changed. */
    void (*count)(void *ud, int64_t channel_id, size_t n);
    /*
     * Optional: a participant retracts its own message (XEP-0424) that is
     * no longer in memory, so the room cannot see who wrote it. Return 0
     * when the service took it: it checks the author in the archive and
     * then calls muc_room_retract_checked with the same stanza. Without it
     * (or on a negative return) such retractions are refused.
     */
    int (*verify_retract)(void *ud, const struct xml_node *st, const struct jid *from,
                          const struct jid *to, const char *stanza_id, const char *occupant_id,
                          const char *bare);
};

struct muc_room;

/* The room SLUG@env->muc_domain; takes policy. NULL on -ENOMEM. */
struct muc_room *muc_room_new(const struct muc_env *env, struct muc_policy *policy);
/* Frees without telling anyone (see muc_room_destroy). */
void muc_room_free(struct muc_room *r);

const char *muc_room_jid(const struct muc_room *r); /* SLUG@chat.DOMAIN */
int64_t muc_room_channel(const struct muc_room *r);
const struct muc_policy *muc_room_policy(const struct muc_room *r);
size_t muc_room_count(const struct muc_room *r);

/* Take a new policy (muc_room_changed): bans remove occupants (301), roles
 * and affiliations follow. The slug must be the same. */
void muc_room_set_policy(struct muc_room *r, struct muc_policy *p);
/* Everyone leaves with an XEP-0045 <destroy/> (alt_jid: the new address). */
void muc_room_destroy(struct muc_room *r, const char *alt_jid, const char *reason);

/* A message from the archive, oldest first, when the room loads. Takes st. */
void muc_room_history_push(struct muc_room *r, struct xml_node *st, int64_t ts_ms);

/*
 * Stanzas addressed to the room or an occupant, from a checked full JID.
 * nick_owner: the account whose name equals the nick (0: none), which the
 * service looked up for presences; who: from the router.
 */
void muc_room_presence(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                       const struct jid *to, const struct muc_who *who, int64_t nick_owner);
void muc_room_message(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                      const struct jid *to);
/* iqs other than MAM (which needs the database: muc.c / mam.c). */
void muc_room_iq(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                 const struct jid *to);
/* The answer to env->verify_retract. For a message (a self-retraction): ok
 * when the archive says the sender (its occupant-id or bare JID) wrote
 * stanza_id; not ok: forbidden, or item-not-found when missing (found
 * false). For an iq (a moderator's XEP-0425 request): carried out when
 * found, else item-not-found. */
void muc_room_retract_checked(struct muc_room *r, const struct xml_node *st,
                              const struct jid *from, const struct jid *to, bool ok, bool found);
/*
 * The session of full went away: it leaves without a word from it (333).
 * Safe to call from inside env->send (a failed delivery noticed at once):
 * while the room is busy (any muc_room_* call on the stack) the occupant is
 * only marked gone, gets nothing more, and is removed when the outermost
 * call returns.
 */
void muc_room_gone(struct muc_room *r, const struct jid *full);
/* Every occupant whose real JID is on domain leaves (333): their server's
 * stream went away. Same re-entrancy rule as muc_room_gone. */
void muc_room_domain_gone(struct muc_room *r, const char *domain);
/* Whether a muc_room_* call on this room is on the stack: the service must
 * not free the room then. */
bool muc_room_busy(const struct muc_room *r);
/* Whether full may read the archive (not banned). */
bool muc_room_may_read(const struct muc_room *r, const struct jid *full, const struct muc_who *who);
/* Whether full may read the archive: 0, or the stanza condition to refuse
 * with (forbidden: banned; registration-required: members-only room). */
int muc_room_read_access(const struct muc_room *r, const struct jid *full,
                         const struct muc_who *who);
/* Whether who may join a members-only room (always true for others). */
bool muc_room_admits(const struct muc_room *r, const struct muc_who *who);
/* Whether full is an occupant. */
bool muc_room_is_occupant(const struct muc_room *r, const struct jid *full);

/* Everyone leaves with status 332 (the service is shutting down). */
void muc_room_shutdown(struct muc_room *r);

/* XEP-0082 date-times: parse to Unix ms (-1 when malformed), format. */
int64_t muc_parse_stamp(const char *s);
void muc_fmt_stamp(int64_t ms, char out[32]);

/* XEP-0421 id for a real bare JID in this room (23 bytes with the NUL). */
void muc_room_occupant_id(const struct muc_room *r, const char *bare, char out[23]);

/* Rough serialized size of a stanza tree in bytes (queue accounting). */
size_t muc_stanza_bytes(const struct xml_node *n);

/* Send an error reply to st (helper shared with muc.c). */
void muc_send_error(const struct muc_env *env, const struct xml_node *st, int cond,
                    const char *text);

#endif
