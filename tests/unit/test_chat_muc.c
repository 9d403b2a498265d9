/*
 * The MUC room state machine (muc_room.c) through a fake environment: every
 * stanza the room sends is serialized and kept with its recipient, and the
 * tests look at what each occupant got. Join and leave presences with their
 * status codes, nick conflicts and reserved nicks, roles and affiliations,
 * kick (307), ban (301) including the guest's IP, voice and visitors, the
 * rate limit, banned words, the length cap, the occupant cap, history on
 * join, retraction and moderation, self-ping, policy reloads, destruction.
 * Then the database side (mam.c) on a migrated SQLite file: loading a
 * room's policy and history, the ordered writes (messages, tombstones,
 * bans, retention) and MAM paging.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ftw.h>
#include <limits.h>
#include <unistd.h>

#include "chat/mam.h"
#include "chat/muc_room.h"
#include "chat/stanza.h"
#include "core/buf.h"
#include "store/db.h"
#include "store/migrate.h"

#define MAXSENT 4096

struct fake {
    int64_t now;
    size_t nsent;
    char *to[MAXSENT], *xml[MAXSENT];
    int archived, retracts, bans_added, bans_removed;
    char last_ban_ip[64], last_ban_jid[128], last_retract_author[64], last_retract_sid[64];
    int64_t last_ban_user;
    size_t count;
    /* re-entrancy: the first send to gone_jid calls muc_room_gone on
     * gone_room from inside env->send, as a dead stream does */
    struct muc_room *gone_room;
    char gone_jid[128];
    int verifies, verify_rc;
    char verify_sid[64], verify_oid[64], verify_bare[128];
};

static struct fake F;

static void fake_send(void *ud, const struct xml_node *st, const char *to)
{
    struct fake *f = ud;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(xml_serialize(st, XMPP_NS_CLIENT, &b), 0);
    buf_cstr(&b);
    assert_true(f->nsent < MAXSENT);
    f->to[f->nsent] = strdup(to);
    f->xml[f->nsent++] = b.data;
    if (f->gone_room && strcmp(to, f->gone_jid) == 0) {
        struct muc_room *r = f->gone_room;
        struct jid j;
        f->gone_room = NULL;
        assert_int_equal(jid_parse(&j, to), 0);
        muc_room_gone(r, &j);
        jid_free(&j);
    }
}

static int fake_verify(void *ud, const struct xml_node *st, const struct jid *from,
                       const struct jid *to, const char *sid, const char *oid, const char *bare)
{
    struct fake *f = ud;
    f->verifies++;
    snprintf(f->verify_sid, sizeof f->verify_sid, "%s", sid);
    snprintf(f->verify_oid, sizeof f->verify_oid, "%s", oid);
    snprintf(f->verify_bare, sizeof f->verify_bare, "%s", bare);
    return f->verify_rc;
}

static int64_t fake_now(void *ud) { return ((struct fake *)ud)->now; }

static void fake_archive(void *ud, const struct muc_archived *m)
{
    struct fake *f = ud;
    assert_non_null(m->stanza_id);
    assert_non_null(m->occupant_id);
    assert_null(xml_attr_get(m->st, "to"));
    f->archived++;
}

static void fake_retract(void *ud, int64_t ch, const char *sid, const char *author, const char *by,
                         const struct xml_node *ts)
{
    struct fake *f = ud;
    f->retracts++;
    snprintf(f->last_retract_author, sizeof f->last_retract_author, "%s", author ? author : "");
    snprintf(f->last_retract_sid, sizeof f->last_retract_sid, "%s", sid);
    assert_string_equal(ts->name, "retracted");
}

static void fake_ban_add(void *ud, int64_t ch, const struct muc_ban *b)
{
    struct fake *f = ud;
    f->bans_added++;
    snprintf(f->last_ban_ip, sizeof f->last_ban_ip, "%s", b->ip ? b->ip : "");
    snprintf(f->last_ban_jid, sizeof f->last_ban_jid, "%s", b->jid ? b->jid : "");
    f->last_ban_user = b->user_id;
}

static void fake_ban_remove(void *ud, int64_t ch, const char *jid) { ((struct fake *)ud)->bans_removed++; }
static void fake_count(void *ud, int64_t ch, size_t n) { ((struct fake *)ud)->count = n; }

static struct muc_env ENV = {
    .ud = &F,
    .muc_domain = "chat.example.org",
    .user_domain = "example.org",
    .guest_domain = "guest.example.org",
    .max_occupants = 10,
    .max_body_chars = 20,
    .burst = 3,
    .interval_ms = 1000,
    .history_max = 5,
    .history_default = 20,
    .presence_full_max = 100,
    .send = fake_send,
    .now_ms = fake_now,
    .archive = fake_archive,
    .retract = fake_retract,
    .ban_add = fake_ban_add,
    .ban_remove = fake_ban_remove,
    .count = fake_count,
    .verify_retract = fake_verify,
};

static void clear(void)
{
    for (size_t i = 0; i < F.nsent; i++)
        free(F.to[i]), free(F.xml[i]);
    F.nsent = 0;
}

static void reset_fake(void)
{
    clear();
    memset(&F, 0, sizeof F);
    F.now = 1700000000000;
}

/* ---- building stanzas --------------------------------------------------- */

static struct xml_node *parsed;
static int on_st(void *ud, struct xml_node *st)
{
    parsed = st;
    return 0;
}

static struct xml_node *parse(const char *s)
{
    static const struct xml_stream_callbacks cb = {.on_stanza = on_st};
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza = 1 << 20;
    struct xml_stream *x = xml_stream_new(XML_MODE_FRAMED, &lim, &cb, NULL);
    size_t used;
    parsed = NULL;
    assert_int_equal(xml_stream_feed_frame(x, s, strlen(s), &used), 0);
    xml_stream_free(x);
    assert_non_null(parsed);
    return parsed;
}

static struct muc_policy *policy(void)
{
    struct muc_policy *p = calloc(1, sizeof *p);
    p->channel_id = 7;
    p->slug = strdup("room");
    p->title = strdup("The Room");
    p->description = strdup("desc");
    p->owner_id = 1;
    p->owner_name = strdup("owner");
    p->guests_may_talk = true;
    p->mods = calloc(1, sizeof *p->mods);
    p->mods[0].user_id = 2;
    p->mods[0].name = strdup("mod");
    p->nmods = 1;
    p->words = calloc(1, sizeof *p->words);
    p->words[0] = strdup("darn");
    p->nwords = 1;
    return p;
}

/* Feed a stanza given as text; from and to are taken from the text. */
static void feed(struct muc_room *r, const struct muc_who *who, int64_t nick_owner, const char *fmt, ...)
{
    static char s[32768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof s, fmt, ap);
    va_end(ap);
    struct xml_node *st = parse(s);
    struct jid from, to;
    assert_int_equal(stanza_jid(st, "from", &from), 0);
    assert_int_equal(stanza_jid(st, "to", &to), 0);
    switch (stanza_kind(st)) {
    case STANZA_PRESENCE:
        muc_room_presence(r, st, &from, &to, who, nick_owner);
        break;
    case STANZA_MESSAGE:
        muc_room_message(r, st, &from, &to);
        break;
    default:
        muc_room_iq(r, st, &from, &to);
    }
    jid_free(&from), jid_free(&to);
    xml_node_free(st);
}

static const struct muc_who W_OWNER = {.user_id = 1, .account = "owner", .ip = "10.0.0.1"};
static const struct muc_who W_MOD = {.user_id = 2, .account = "mod", .ip = "10.0.0.2"};
static const struct muc_who W_ALICE = {.user_id = 3, .account = "alice", .ip = "10.0.0.3"};
static const struct muc_who W_GUEST = {.guest = true, .ip = "192.0.2.9"};
static const struct muc_who W_REMOTE = {0};

static void join_as(struct muc_room *r, const struct muc_who *who, const char *jid, const char *nick)
{
    feed(r, who, 0,
         "<presence from='%s' to='room@chat.example.org/%s'><x xmlns='http://jabber.org/protocol/muc'>"
         "<history maxstanzas='0'/></x></presence>",
         jid, nick);
}

/* Stanzas sent to `to` containing every one of the NULL-terminated needles. */
static int count_to(const char *to, ...)
{
    int n = 0;
    for (size_t i = 0; i < F.nsent; i++) {
        if (strcmp(F.to[i], to) != 0)
            continue;
        va_list ap;
        va_start(ap, to);
        bool all = true;
        for (const char *k; (k = va_arg(ap, const char *));)
            if (!strstr(F.xml[i], k))
                all = false;
        va_end(ap);
        n += all;
    }
    return n;
}

static const char *last_to(const char *to)
{
    for (size_t i = F.nsent; i-- > 0;)
        if (strcmp(F.to[i], to) == 0)
            return F.xml[i];
    return "";
}

static struct muc_room *room_new(void)
{
    reset_fake();
    struct muc_room *r = muc_room_new(&ENV, policy());
    assert_non_null(r);
    return r;
}

/* ---- tests -------------------------------------------------------------- */

static void test_join_and_leave(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(F.count, 1);
    /* self-presence: 110 (self) and 170 (logged), member/participant, its own JID */
    assert_int_equal(count_to("alice@example.org/a", "from='room@chat.example.org/Alice'",
                              "code='110'", "code='170'", "affiliation='member'",
                              "role='participant'", "jid='alice@example.org/a'",
                              "urn:xmpp:occupant-id:0", NULL),
                     1);
    /* semi-anonymous: no 100 */
    assert_int_equal(count_to("alice@example.org/a", "code='100'", NULL), 0);
    /* the subject comes last */
    assert_non_null(strstr(last_to("alice@example.org/a"), "<subject>The Room</subject>"));

    clear();
    join_as(r, &W_GUEST, "g1@guest.example.org/x", "Guest");
    /* the guest sees Alice without her real JID (not a moderator) */
    assert_int_equal(count_to("g1@guest.example.org/x", "from='room@chat.example.org/Alice'", NULL), 1);
    assert_int_equal(count_to("g1@guest.example.org/x", "jid='alice@example.org/a'", NULL), 0);
    /* Alice is told, without the guest's JID and without 110 */
    assert_int_equal(count_to("alice@example.org/a", "from='room@chat.example.org/Guest'", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", "g1@guest", NULL), 0);
    assert_int_equal(count_to("alice@example.org/a", "code='110'", NULL), 0);

    /* the owner is a moderator and sees real JIDs */
    clear();
    join_as(r, &W_OWNER, "owner@example.org/o", "Owner");
    assert_int_equal(count_to("owner@example.org/o", "code='110'", "affiliation='owner'",
                              "role='moderator'", NULL),
                     1);
    assert_int_equal(count_to("owner@example.org/o", "jid='g1@guest.example.org/x'", NULL), 1);

    clear();
    feed(r, &W_GUEST, 0, "<presence type='unavailable' from='g1@guest.example.org/x' to='room@chat.example.org/Guest'/>");
    assert_int_equal(muc_room_count(r), 2);
    assert_int_equal(count_to("g1@guest.example.org/x", "type='unavailable'", "code='110'", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", "type='unavailable'", "room@chat.example.org/Guest", NULL), 1);
    /* the moderator's copy has the real JID */
    assert_int_equal(count_to("owner@example.org/o", "type='unavailable'", "jid='g1@guest.example.org/x'", NULL), 1);

    /* a session that vanished leaves too */
    clear();
    struct jid j;
    jid_parse(&j, "alice@example.org/a");
    muc_room_gone(r, &j);
    jid_free(&j);
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(count_to("owner@example.org/o", "type='unavailable'", "code='333'", NULL), 1);
    muc_room_free(r);
    clear();
}

static void test_nick_conflict_and_reserved(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    clear();
    join_as(r, &W_GUEST, "g1@guest.example.org/x", "alice"); /* case-insensitive */
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(count_to("g1@guest.example.org/x", "type='error'", "<conflict", NULL), 1);
    /* the error keeps the MUC <x/> (XEP-0045 7.2.9) */
    assert_int_equal(count_to("g1@guest.example.org/x", "http://jabber.org/protocol/muc'", NULL), 1);

    /* "bob" is the account 9's name: others get 409, bob gets in */
    clear();
    feed(r, &W_GUEST, 9, "<presence from='g2@guest.example.org/x' to='room@chat.example.org/bob'/>");
    assert_int_equal(count_to("g2@guest.example.org/x", "<conflict", NULL), 1);
    struct muc_who bob = {.user_id = 9, .account = "bob"};
    feed(r, &bob, 9, "<presence from='bob@example.org/b' to='room@chat.example.org/bob'/>");
    assert_int_equal(muc_room_count(r), 2);

    /* a nick change: 303 with the new nick, then the new presence */
    clear();
    feed(r, &W_ALICE, 0, "<presence from='alice@example.org/a' to='room@chat.example.org/Ally'/>");
    assert_int_equal(count_to("bob@example.org/b", "type='unavailable'", "code='303'", "nick='Ally'", NULL), 1);
    assert_int_equal(count_to("bob@example.org/b", "from='room@chat.example.org/Ally'", NULL), 1);
    /* and to a nick in use: 409 */
    clear();
    feed(r, &W_ALICE, 0, "<presence from='alice@example.org/a' to='room@chat.example.org/BOB'/>");
    assert_int_equal(count_to("alice@example.org/a", "<conflict", NULL), 1);
    /* too long a nick */
    clear();
    join_as(r, &W_GUEST, "g4@guest.example.org/x",
            "a123456789b123456789c123456789d123456789e123456789f123456789g1234");
    assert_int_equal(count_to("g4@guest.example.org/x", "<not-acceptable", NULL), 1);
    /* no nick at all: jid-malformed */
    clear();
    feed(r, &W_GUEST, 0, "<presence from='g3@guest.example.org/x' to='room@chat.example.org'/>");
    assert_int_equal(count_to("g3@guest.example.org/x", "<jid-malformed", NULL), 1);
    muc_room_free(r);
    clear();
}

static void test_messages_ids_and_limits(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    clear();
    feed(r, &W_ALICE, 0,
         "<message type='groupchat' id='m1' from='alice@example.org/a' to='room@chat.example.org'>"
         "<body>hello</body><stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='room@chat.example.org'/></message>");
    assert_int_equal(count_to("carol@remote.example/c", "<body>hello</body>", "from='room@chat.example.org/Alice'",
                              "urn:xmpp:sid:0", "urn:xmpp:occupant-id:0", "id='m1'", NULL),
                     1);
    assert_int_equal(count_to("carol@remote.example/c", "forged", NULL), 0);
    /* the sender gets its echo */
    assert_int_equal(count_to("alice@example.org/a", "<body>hello</body>", NULL), 1);
    assert_int_equal(F.archived, 1);

    /* too long (20 characters; "é" counts once) */
    clear();
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<body>ééééééééééééééééééé</body></message>");
    assert_int_equal(count_to("carol@remote.example/c", NULL), 1);
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<body>123456789012345678901</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<not-acceptable", NULL), 1);
    assert_int_equal(count_to("carol@remote.example/c", NULL), 1);

    /* banned words: whole words, any case; "darned" is another word */
    F.now += 10000;
    clear();
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<body>oh DARN it</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<not-acceptable", NULL), 1);
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<body>darned</body></message>");
    assert_int_equal(count_to("carol@remote.example/c", "<body>darned</body>", NULL), 1);

    /* rate limit: a burst of 3, then one per second */
    F.now += 10000;
    clear();
    for (int i = 0; i < 4; i++)
        feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                             "<body>m%d</body></message>", i);
    assert_int_equal(count_to("carol@remote.example/c", NULL), 3);
    assert_int_equal(count_to("alice@example.org/a", "type='wait'", "<policy-violation", NULL), 1);
    F.now += 1000;
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<body>later</body></message>");
    assert_int_equal(count_to("carol@remote.example/c", "<body>later</body>", NULL), 1);

    /* not an occupant */
    clear();
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='x@guest.example.org/x' to='room@chat.example.org'><body>hi</body></message>");
    assert_int_equal(count_to("x@guest.example.org/x", "<not-acceptable", NULL), 1);
    assert_int_equal(count_to("carol@remote.example/c", NULL), 0);

    /* private message to a nick */
    clear();
    F.now += 10000;
    feed(r, &W_REMOTE, 0, "<message type='chat' from='carol@remote.example/c' to='room@chat.example.org/Alice'><body>psst</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "from='room@chat.example.org/Carol'", "<body>psst</body>",
                              "http://jabber.org/protocol/muc#user", NULL),
                     1);
    muc_room_free(r);
    clear();
}

static void test_slow_mode(void **state)
{
    struct muc_room *r = room_new();
    struct muc_policy *p = policy();
    p->slow_mode_s = 30;
    muc_room_set_policy(r, p);
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    clear();
    for (int i = 0; i < 2; i++)
        feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>x</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<body>x</body>", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", "<policy-violation", NULL), 1);
    F.now += 29000;
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>x</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<policy-violation", NULL), 2);
    F.now += 1000;
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>x</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<body>x</body>", NULL), 2);
    muc_room_free(r);
    clear();
}

static void test_visitors_and_voice(void **state)
{
    struct muc_room *r = room_new();
    struct muc_policy *p = policy();
    p->guests_may_talk = false;
    muc_room_set_policy(r, p);
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    assert_int_equal(count_to("mod@example.org/m", "affiliation='admin'", "role='moderator'", "code='110'", NULL), 1);
    join_as(r, &W_GUEST, "g1@guest.example.org/x", "Guest");
    assert_int_equal(count_to("g1@guest.example.org/x", "role='visitor'", "code='110'", NULL), 1);
    clear();
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='g1@guest.example.org/x' to='room@chat.example.org'><body>hi</body></message>");
    assert_int_equal(count_to("g1@guest.example.org/x", "<forbidden", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "<body>hi</body>", NULL), 0);

    /* voice */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='v1' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Guest' role='participant'/></query></iq>");
    assert_int_equal(count_to("mod@example.org/m", "type='result'", "id='v1'", NULL), 1);
    assert_int_equal(count_to("g1@guest.example.org/x", "role='participant'", "code='110'", NULL), 1);
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='g1@guest.example.org/x' to='room@chat.example.org'><body>hi</body></message>");
    assert_int_equal(count_to("mod@example.org/m", "<body>hi</body>", NULL), 1);

    /* a guest may not devoice anyone */
    clear();
    feed(r, &W_GUEST, 0, "<iq type='set' id='v2' from='g1@guest.example.org/x' to='room@chat.example.org'>"
                         "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Mod' role='visitor'/></query></iq>");
    assert_int_equal(count_to("g1@guest.example.org/x", "type='error'", "<forbidden", NULL), 1);
    /* nor may a moderator devoice an admin */
    join_as(r, &W_OWNER, "owner@example.org/o", "Owner");
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='v3' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Owner' role='visitor'/></query></iq>");
    assert_int_equal(count_to("mod@example.org/m", "<not-allowed", NULL), 1);

    /* devoice again */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='v4' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Guest' role='visitor'/></query></iq>");
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='g1@guest.example.org/x' to='room@chat.example.org'><body>hi</body></message>");
    assert_int_equal(count_to("g1@guest.example.org/x", "<forbidden", NULL), 1);
    muc_room_free(r);
    clear();
}

static void test_kick(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='k1' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Alice' role='none'>"
                       "<reason>spam</reason></item></query></iq>");
    assert_int_equal(muc_room_count(r), 2);
    assert_int_equal(count_to("alice@example.org/a", "type='unavailable'", "code='307'", "code='110'",
                              "<reason>spam</reason>", "nick='Mod'", NULL),
                     1);
    assert_int_equal(count_to("carol@remote.example/c", "type='unavailable'", "code='307'", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "type='result'", "id='k1'", NULL), 1);
    /* unknown nick */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='k2' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Nobody' role='none'/></query></iq>");
    assert_int_equal(count_to("mod@example.org/m", "<item-not-found", NULL), 1);
    /* a participant cannot kick */
    clear();
    feed(r, &W_REMOTE, 0, "<iq type='set' id='k3' from='carol@remote.example/c' to='room@chat.example.org'>"
                          "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Mod' role='none'/></query></iq>");
    assert_int_equal(count_to("carol@remote.example/c", "<forbidden", NULL), 1);
    assert_int_equal(muc_room_count(r), 2);
    muc_room_free(r);
    clear();
}

static void test_ban_and_unban(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_GUEST, "g1@guest.example.org/x", "Guest");
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='b1' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item jid='g1@guest.example.org' affiliation='outcast'>"
                       "<reason>rude</reason></item></query></iq>");
    assert_int_equal(count_to("g1@guest.example.org/x", "type='unavailable'", "code='301'", "code='110'",
                              "affiliation='outcast'", NULL),
                     1);
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(F.bans_added, 1);
    assert_string_equal(F.last_ban_ip, "192.0.2.9");
    assert_string_equal(F.last_ban_jid, "g1@guest.example.org");

    /* the same guest with a new throwaway JID, same address: refused */
    clear();
    join_as(r, &W_GUEST, "g2@guest.example.org/y", "Guest2");
    assert_int_equal(count_to("g2@guest.example.org/y", "type='error'", "<forbidden", NULL), 1);
    assert_int_equal(muc_room_count(r), 1);
    /* a logged-in user from that address is not a guest: welcome */
    struct muc_who acct = {.user_id = 4, .account = "dave", .ip = "192.0.2.9"};
    join_as(r, &acct, "dave@example.org/d", "Dave");
    assert_int_equal(muc_room_count(r), 2);

    /* the outcast list */
    clear();
    feed(r, &W_MOD, 0, "<iq type='get' id='l1' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>");
    assert_int_equal(count_to("mod@example.org/m", "type='result'", "jid='g1@guest.example.org'", "<reason>rude</reason>", NULL), 1);

    /* an account ban holds by user id */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='b2' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Dave' affiliation='outcast'/></query></iq>");
    assert_int_equal(F.last_ban_user, 4);
    assert_int_equal(muc_room_count(r), 1);
    /* admins cannot be banned */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='b3' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item jid='owner@example.org' affiliation='outcast'/></query></iq>");
    assert_int_equal(count_to("mod@example.org/m", "<not-allowed", NULL), 1);

    /* lifting: affiliation none */
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='u1' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item jid='g1@guest.example.org' affiliation='none'/></query></iq>");
    assert_int_equal(F.bans_removed, 1);
    join_as(r, &W_GUEST, "g3@guest.example.org/z", "Guest3");
    assert_int_equal(muc_room_count(r), 2);

    /* a ban arriving with a policy reload removes the occupant (301) */
    clear();
    struct muc_policy *p = policy();
    struct muc_ban b = {.ip = "192.0.2.9", .site = true};
    muc_policy_add_ban(p, &b);
    muc_room_set_policy(r, p);
    assert_int_equal(count_to("g3@guest.example.org/z", "type='unavailable'", "code='301'", NULL), 1);
    assert_int_equal(muc_room_count(r), 1);
    /* an expired ban is ignored */
    p = policy();
    b.expires_ms = F.now - 1;
    muc_policy_add_ban(p, &b);
    muc_room_set_policy(r, p);
    join_as(r, &W_GUEST, "g4@guest.example.org/z", "Guest4");
    assert_int_equal(muc_room_count(r), 2);
    muc_room_free(r);
    clear();
}

static void test_max_occupants(void **state)
{
    struct muc_room *r = room_new();
    char jid[64], nick[16];
    for (int i = 0; i < 10; i++) {
        snprintf(jid, sizeof jid, "u%d@guest.example.org/r", i);
        snprintf(nick, sizeof nick, "n%d", i);
        join_as(r, &W_GUEST, jid, nick);
    }
    assert_int_equal(muc_room_count(r), 10);
    clear();
    join_as(r, &W_GUEST, "late@guest.example.org/r", "late");
    assert_int_equal(count_to("late@guest.example.org/r", "<service-unavailable", NULL), 1);
    /* moderators still get in */
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    assert_int_equal(muc_room_count(r), 11);
    muc_room_free(r);
    clear();
}

static void test_history_on_join(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    for (int i = 0; i < 7; i++) {
        F.now += 5000;
        feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                             "<body>msg%d</body></message>", i);
    }
    clear();
    feed(r, &W_GUEST, 0, "<presence from='g@guest.example.org/x' to='room@chat.example.org/G'>"
                         "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='2'/></x></presence>");
    assert_int_equal(count_to("g@guest.example.org/x", "<body>", NULL), 2);
    assert_int_equal(count_to("g@guest.example.org/x", "<body>msg6</body>", "urn:xmpp:delay", "stamp=", NULL), 1);
    assert_int_equal(count_to("g@guest.example.org/x", "<body>msg5</body>", NULL), 1);
    /* the ring holds 5: asking for all gives 5 */
    clear();
    feed(r, &W_GUEST, 0, "<presence from='h@guest.example.org/x' to='room@chat.example.org/H'/>");
    assert_int_equal(count_to("h@guest.example.org/x", "<body>", NULL), 5);
    /* seconds='12': the last two (5 s apart) and the one at exactly -10 s */
    clear();
    feed(r, &W_GUEST, 0, "<presence from='i@guest.example.org/x' to='room@chat.example.org/I'>"
                         "<x xmlns='http://jabber.org/protocol/muc'><history seconds='12'/></x></presence>");
    assert_int_equal(count_to("i@guest.example.org/x", "<body>", NULL), 3);
    muc_room_free(r);
    clear();
}

static const char *sid_of(const char *xml, char *out, size_t n)
{
    const char *p = strstr(xml, "<stanza-id");
    assert_non_null(p);
    p = strstr(p, " id='");
    assert_non_null(p);
    p += 5;
    size_t k = strcspn(p, "'");
    snprintf(out, n, "%.*s", (int)k, p);
    return out;
}

static void test_retraction_and_moderation(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    clear();
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>oops</body></message>");
    char sid[64];
    sid_of(last_to("carol@remote.example/c"), sid, sizeof sid);

    /* Carol may not retract Alice's message */
    clear();
    feed(r, &W_REMOTE, 0, "<message type='groupchat' from='carol@remote.example/c' to='room@chat.example.org'>"
                          "<retract xmlns='urn:xmpp:message-retract:1' id='%s'/><body>/me retracted</body></message>", sid);
    assert_int_equal(count_to("carol@remote.example/c", "<forbidden", NULL), 1);
    assert_int_equal(F.retracts, 0);

    /* Alice may */
    clear();
    F.now += 10000;
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<retract xmlns='urn:xmpp:message-retract:1' id='%s'/><fallback xmlns='urn:xmpp:fallback:0'/>"
                         "<body>retracted</body></message>", sid);
    assert_int_equal(count_to("carol@remote.example/c", "urn:xmpp:message-retract:1", sid, NULL), 1);
    assert_int_equal(F.retracts, 1);
    assert_string_equal(F.last_retract_sid, sid);
    assert_true(F.last_retract_author[0] != '\0'); /* only if Alice wrote it, in the archive too */

    /* the tombstone replaces the message in the history */
    clear();
    feed(r, &W_GUEST, 0, "<presence from='g@guest.example.org/x' to='room@chat.example.org/G'/>");
    assert_int_equal(count_to("g@guest.example.org/x", "<body>oops</body>", NULL), 0);
    assert_int_equal(count_to("g@guest.example.org/x", "<retracted", sid, NULL), 1);

    /* moderation, :1 and :0 forms in the announcement */
    feed(r, &W_REMOTE, 0, "<message type='groupchat' from='carol@remote.example/c' to='room@chat.example.org'><body>spam</body></message>");
    sid_of(last_to("alice@example.org/a"), sid, sizeof sid);
    clear();
    feed(r, &W_ALICE, 0, "<iq type='set' id='x1' from='alice@example.org/a' to='room@chat.example.org'>"
                         "<moderate xmlns='urn:xmpp:message-moderate:1' id='%s'><retract xmlns='urn:xmpp:message-retract:1'/></moderate></iq>", sid);
    assert_int_equal(count_to("alice@example.org/a", "<forbidden", NULL), 1);
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='x2' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<moderate xmlns='urn:xmpp:message-moderate:1' id='%s'><retract xmlns='urn:xmpp:message-retract:1'/>"
                       "<reason>spam</reason></moderate></iq>", sid);
    assert_int_equal(count_to("mod@example.org/m", "type='result'", "id='x2'", NULL), 1);
    assert_int_equal(count_to("carol@remote.example/c", "urn:xmpp:message-moderate:1", "urn:xmpp:message-moderate:0",
                              "urn:xmpp:fasten:0", "by='room@chat.example.org/Mod'", "<reason>spam</reason>", sid, NULL),
                     1);
    assert_int_equal(F.retracts, 2);
    assert_string_equal(F.last_retract_author, ""); /* whoever wrote it */

    /* the older form */
    feed(r, &W_REMOTE, 0, "<message type='groupchat' from='carol@remote.example/c' to='room@chat.example.org'><body>more</body></message>");
    sid_of(last_to("alice@example.org/a"), sid, sizeof sid);
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='x3' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<apply-to xmlns='urn:xmpp:fasten:0' id='%s'><moderate xmlns='urn:xmpp:message-moderate:0'>"
                       "<retract xmlns='urn:xmpp:message-retract:0'/></moderate></apply-to></iq>", sid);
    assert_int_equal(count_to("mod@example.org/m", "type='result'", "id='x3'", NULL), 1);
    assert_int_equal(F.retracts, 3);

    /* reactions are relayed and archived */
    int before = F.archived;
    clear();
    feed(r, &W_REMOTE, 0, "<message type='groupchat' from='carol@remote.example/c' to='room@chat.example.org'>"
                          "<reactions xmlns='urn:xmpp:reactions:0' id='%s'><reaction>+1</reaction></reactions></message>", sid);
    assert_int_equal(count_to("alice@example.org/a", "urn:xmpp:reactions:0", NULL), 1);
    assert_int_equal(F.archived, before + 1);
    /* chat states are relayed, not archived */
    feed(r, &W_REMOTE, 0, "<message type='groupchat' from='carol@remote.example/c' to='room@chat.example.org'>"
                          "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    assert_int_equal(F.archived, before + 1);
    muc_room_free(r);
    clear();
}

static void test_iqs(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_OWNER, "owner@example.org/o", "Owner");
    /* self-ping */
    clear();
    feed(r, &W_ALICE, 0, "<iq type='get' id='p1' from='alice@example.org/a' to='room@chat.example.org/Alice'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_int_equal(count_to("alice@example.org/a", "type='result'", "id='p1'", NULL), 1);
    feed(r, &W_GUEST, 0, "<iq type='get' id='p2' from='x@guest.example.org/a' to='room@chat.example.org/Alice'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_int_equal(count_to("x@guest.example.org/a", "type='error'", "<not-acceptable", NULL), 1);
    /* disco#info */
    clear();
    feed(r, &W_GUEST, 0, "<iq type='get' id='d1' from='x@guest.example.org/a' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    const char *d = last_to("x@guest.example.org/a");
    assert_non_null(strstr(d, "category='conference'"));
    assert_non_null(strstr(d, "muc_persistent"));
    assert_non_null(strstr(d, "muc_semianonymous"));
    assert_non_null(strstr(d, "urn:xmpp:mam:2"));
    assert_non_null(strstr(d, "urn:xmpp:occupant-id:0"));
    assert_non_null(strstr(d, "urn:xmpp:message-moderate:1"));
    assert_non_null(strstr(d, "muc_unmoderated"));
    assert_non_null(strstr(d, "<value>2</value>")); /* occupants */
    /* the config form: owners read it, others may not, nobody sets it here */
    clear();
    feed(r, &W_OWNER, 0, "<iq type='get' id='c1' from='owner@example.org/o' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    assert_int_equal(count_to("owner@example.org/o", "type='result'", "muc#roomconfig_roomname", "The Room", NULL), 1);
    feed(r, &W_ALICE, 0, "<iq type='get' id='c2' from='alice@example.org/a' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    assert_int_equal(count_to("alice@example.org/a", "<forbidden", NULL), 1);
    /* XEP-0045 10.2: owners only; an admin (the channel's moderator) may not */
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    clear();
    feed(r, &W_MOD, 0, "<iq type='get' id='c4' from='mod@example.org/m' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>");
    assert_int_equal(count_to("mod@example.org/m", "id='c4'", "<forbidden", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "muc#roomconfig", NULL), 0);
    feed(r, &W_OWNER, 0, "<iq type='set' id='c3' from='owner@example.org/o' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>");
    assert_int_equal(count_to("owner@example.org/o", "<not-allowed", NULL), 1);
    /* subject: moderators only */
    clear();
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><subject>mine</subject></message>");
    assert_int_equal(count_to("alice@example.org/a", "<forbidden", NULL), 1);
    feed(r, &W_OWNER, 0, "<message type='groupchat' from='owner@example.org/o' to='room@chat.example.org'><subject>New</subject></message>");
    assert_int_equal(count_to("alice@example.org/a", "<subject>New</subject>", NULL), 1);
    /* a subject set on the page reaches the room with the reload */
    clear();
    struct muc_policy *np = policy();
    np->subject = strdup("From the page");
    muc_room_set_policy(r, np);
    assert_int_equal(count_to("alice@example.org/a", "<subject>From the page</subject>", NULL), 1);
    muc_room_set_policy(r, policy()); /* back to the title */
    assert_int_equal(count_to("alice@example.org/a", "<subject>The Room</subject>", NULL), 1);
    clear();
    muc_room_set_policy(r, policy()); /* unchanged: nothing */
    assert_int_equal(count_to("alice@example.org/a", "<subject>", NULL), 0);
    /* destroy on rename */
    clear();
    muc_room_destroy(r, "new@chat.example.org", "renamed");
    assert_int_equal(muc_room_count(r), 0);
    assert_int_equal(count_to("alice@example.org/a", "type='unavailable'", "<destroy", "jid='new@chat.example.org'", NULL), 1);
    muc_room_free(r);
    clear();
}

/* Large rooms: presence of late joiners goes to moderators only. */
static void test_large_room_presence(void **state)
{
    struct muc_env env = ENV;
    env.presence_full_max = 2;
    env.max_occupants = 100;
    reset_fake();
    struct muc_room *r = muc_room_new(&env, policy());
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    clear();
    join_as(r, &W_GUEST, "g@guest.example.org/x", "G");
    /* G (third) is told about both announced occupants; Alice is not told about G */
    assert_int_equal(count_to("g@guest.example.org/x", "from='room@chat.example.org/Alice'", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", "room@chat.example.org/G", NULL), 0);
    assert_int_equal(count_to("mod@example.org/m", "room@chat.example.org/G", NULL), 1);
    /* but G's messages reach everyone */
    clear();
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='g@guest.example.org/x' to='room@chat.example.org'><body>hi</body></message>");
    assert_int_equal(count_to("alice@example.org/a", "<body>hi</body>", NULL), 1);
    muc_room_free(r);
    clear();
}


/* What others see of a presence is bounded; status floods and huge
 * messages do not fan out. */
static void test_presence_payload_and_floods(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    char big[2048];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    clear();
    feed(r, &W_GUEST, 0,
         "<presence from='g@guest.example.org/x' to='room@chat.example.org/G'><show>away</show>"
         "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/>"
         "<junk xmlns='urn:example:junk'>%s</junk><status>%s</status></presence>", big, big);
    const char *p = NULL;
    for (size_t i = 0; i < F.nsent; i++)
        if (strcmp(F.to[i], "alice@example.org/a") == 0)
            p = F.xml[i];
    assert_non_null(p);
    assert_non_null(strstr(p, "<show>away</show>"));
    assert_non_null(strstr(p, "http://jabber.org/protocol/caps"));
    assert_null(strstr(p, "junk"));
    assert_null(strstr(p, "zzzz")); /* an oversized status is dropped */

    /* status changes: the burst (3) goes out, the rest is held back */
    clear();
    for (int i = 0; i < 6; i++)
        feed(r, &W_GUEST, 0, "<presence from='g@guest.example.org/x' to='room@chat.example.org/G'>"
                             "<status>s%d</status></presence>", i);
    assert_int_equal(count_to("alice@example.org/a", "<status>", NULL), 3);
    F.now += 5000;
    feed(r, &W_GUEST, 0, "<presence from='g@guest.example.org/x' to='room@chat.example.org/G'>"
                         "<status>later</status></presence>");
    assert_int_equal(count_to("alice@example.org/a", "<status>later</status>", NULL), 1);

    /* a message with a small body but a huge payload */
    F.now += 5000;
    clear();
    feed(r, &W_GUEST, 0, "<message type='groupchat' from='g@guest.example.org/x' to='room@chat.example.org'>"
                         "<body>hi</body><x xmlns='urn:example:big'>%s%s%s%s%s</x></message>",
         big, big, big, big, big);
    assert_int_equal(count_to("g@guest.example.org/x", "<not-acceptable", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", NULL), 0);
    muc_room_free(r);
    clear();
}

/* One account, two sessions, one nick. */
static void test_multi_session_nick(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/phone", "Alice");
    clear();
    join_as(r, &W_ALICE, "alice@example.org/desk", "Alice");
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(count_to("alice@example.org/desk", "code='110'", NULL), 1);
    /* but not for someone else, even an account */
    join_as(r, &W_REMOTE, "alice@remote.example/x", "Alice");
    assert_int_equal(count_to("alice@remote.example/x", "<conflict", NULL), 1);
    /* a private message reaches both sessions */
    clear();
    feed(r, &W_MOD, 0, "<message type='chat' from='mod@example.org/m' to='room@chat.example.org/Alice'><body>pm</body></message>");
    assert_int_equal(count_to("alice@example.org/phone", "<body>pm</body>", NULL), 1);
    assert_int_equal(count_to("alice@example.org/desk", "<body>pm</body>", NULL), 1);
    /* one session leaves: the nick stays, the others are not told */
    clear();
    feed(r, &W_ALICE, 0, "<presence type='unavailable' from='alice@example.org/phone' to='room@chat.example.org/Alice'/>");
    assert_int_equal(count_to("alice@example.org/phone", "type='unavailable'", "code='110'", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "type='unavailable'", NULL), 0);
    /* back, then a kick takes every session */
    join_as(r, &W_ALICE, "alice@example.org/phone", "Alice");
    clear();
    feed(r, &W_MOD, 0, "<iq type='set' id='k' from='mod@example.org/m' to='room@chat.example.org'>"
                       "<query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Alice' role='none'/></query></iq>");
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(count_to("alice@example.org/phone", "code='307'", NULL), 1);
    assert_int_equal(count_to("alice@example.org/desk", "code='307'", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "type='unavailable'", "code='307'", NULL), 1);
    muc_room_free(r);
    clear();
}

/* ---- the database side (mam.c) ----------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void exec_ok(struct db *db, const char *sql)
{
    if (db_exec(db, sql) != 0)
        fail_msg("%s: %s", sql, db_errmsg(db));
}

static struct muc_op *op_msg(int64_t ch, const char *sid, int64_t ts, const char *nick,
                             const char *oid, const char *body)
{
    struct muc_op *op = calloc(1, sizeof *op);
    char xml[512];
    snprintf(xml, sizeof xml,
             "<message xmlns='jabber:client' type='groupchat' from='room@chat.example.org/%s'>"
             "<body>%s</body><stanza-id xmlns='urn:xmpp:sid:0' id='%s' by='room@chat.example.org'/>"
             "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='%s'/></message>",
             nick, body, sid, oid);
    op->kind = MUC_OP_MESSAGE;
    op->channel_id = ch;
    op->ts_ms = ts;
    op->stanza_id = strdup(sid), op->nick = strdup(nick), op->occupant_id = strdup(oid);
    op->jid = strdup("someone@example.org"), op->body = strdup(body), op->xml = strdup(xml);
    return op;
}

static size_t page(struct db *db, struct mam_query *q, const char *want_first, bool complete)
{
    struct mam_result res;
    assert_int_equal(mam_run(db, q, &res), 0);
    size_t n = res.n;
    if (want_first) {
        assert_true(n > 0);
        assert_string_equal(xml_child_text(res.items[0].st, "body", NULL), want_first);
    }
    assert_int_equal(res.complete, complete);
    mam_result_clear(&res);
    return n;
}

/*
 * A delivery that finds its stream dead calls the session-gone watcher at
 * once, inside the room's own loops: the room must keep going with what it
 * holds and remove the goner afterwards (333), in a broadcast, while the
 * occupant list goes to a joiner (which must not stay as a ghost), and
 * while its history goes out. Under ASan a use-after-free shows here.
 */
static void test_reentrant_gone(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    join_as(r, &W_GUEST, "g@guest.example.org/x", "G");
    assert_int_equal(muc_room_count(r), 4);

    /* during a broadcast: Carol's stream dies when her copy is sent */
    clear();
    F.gone_room = r;
    snprintf(F.gone_jid, sizeof F.gone_jid, "carol@remote.example/c");
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>hi</body></message>");
    assert_null(F.gone_room); /* it fired */
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(F.count, 3);
    /* everyone else still got the message, then Carol's 333 */
    assert_int_equal(count_to("mod@example.org/m", "<body>hi</body>", NULL), 1);
    assert_int_equal(count_to("g@guest.example.org/x", "<body>hi</body>", NULL), 1);
    assert_int_equal(count_to("alice@example.org/a", "<body>hi</body>", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "room@chat.example.org/Carol", "type='unavailable'",
                              "code='333'", NULL), 1);
    struct jid cj;
    jid_parse(&cj, "carol@remote.example/c");
    assert_false(muc_room_is_occupant(r, &cj));
    jid_free(&cj);

    /* during a join: the joiner's stream dies on the first occupant presence */
    clear();
    F.gone_room = r;
    snprintf(F.gone_jid, sizeof F.gone_jid, "dave@example.org/d");
    struct muc_who dave = {.user_id = 12, .account = "dave"};
    feed(r, &dave, 0, "<presence from='dave@example.org/d' to='room@chat.example.org/Dave'>"
                      "<x xmlns='http://jabber.org/protocol/muc'/></presence>");
    assert_null(F.gone_room);
    struct jid dj;
    jid_parse(&dj, "dave@example.org/d");
    assert_false(muc_room_is_occupant(r, &dj)); /* no ghost */
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(F.count, 3);
    /* Dave got one stanza (the one that failed) and nothing after */
    assert_int_equal(count_to("dave@example.org/d", "", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "room@chat.example.org/Dave", "code='333'", NULL), 1);
    /* the nick is free again */
    clear();
    feed(r, &dave, 0, "<presence from='dave@example.org/d' to='room@chat.example.org/Dave'/>");
    assert_true(muc_room_is_occupant(r, &dj));
    jid_free(&dj);

    /* during the join history: gone on the second history message */
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>two</body></message>");
    clear();
    F.gone_room = r;
    snprintf(F.gone_jid, sizeof F.gone_jid, "e@guest.example.org/e");
    feed(r, &W_GUEST, 0, "<presence from='e@guest.example.org/e' to='room@chat.example.org/E'/>");
    assert_int_equal(count_to("e@guest.example.org/e", "", NULL), 1);
    assert_int_equal(muc_room_count(r), 4);

    /* gone outside any call: at once, and twice is harmless */
    clear();
    jid_parse(&dj, "dave@example.org/d");
    muc_room_gone(r, &dj);
    muc_room_gone(r, &dj);
    jid_free(&dj);
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(count_to("mod@example.org/m", "room@chat.example.org/Dave", "code='333'", NULL), 1);
    assert_false(muc_room_busy(r));
    muc_room_free(r);
    clear();
}

/* A message error from an occupant (a bounce): gone, 333; and whole domains. */
static void test_bounces_and_dead_servers(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    join_as(r, &W_REMOTE, "dan@remote.example/d", "Dan");
    join_as(r, &W_REMOTE, "erin@other.example/e", "Erin");
    clear();
    /* an error that does not say it is gone: stays */
    feed(r, &W_REMOTE, 0, "<message type='error' from='erin@other.example/e' to='room@chat.example.org'>"
                          "<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    assert_int_equal(muc_room_count(r), 4);
    /* its server is not found: out with 333 */
    feed(r, &W_REMOTE, 0, "<message type='error' from='erin@other.example/e' to='room@chat.example.org'>"
                          "<error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(count_to("mod@example.org/m", "room@chat.example.org/Erin", "type='unavailable'", "code='333'", NULL), 1);
    /* a private message that bounced says the same */
    feed(r, &W_REMOTE, 0, "<message type='error' from='dan@remote.example/d' to='room@chat.example.org/Mod'>"
                          "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    assert_int_equal(muc_room_count(r), 2);
    /* a server whose stream ended: everyone from it */
    join_as(r, &W_REMOTE, "dan@remote.example/d", "Dan");
    clear();
    muc_room_domain_gone(r, "remote.example");
    assert_int_equal(muc_room_count(r), 1);
    assert_int_equal(count_to("mod@example.org/m", "code='333'", NULL), 2);
    muc_room_domain_gone(r, "example.org"); /* not the mod's: she is mod@example.org */
    assert_int_equal(muc_room_count(r), 0);
    muc_room_free(r);
    clear();
}

static struct muc_policy *protected_policy(void)
{
    struct muc_policy *p = policy();
    p->members_only = true;
    p->invited = calloc(1, sizeof *p->invited);
    p->invited[0] = 3; /* alice */
    p->ninvited = 1;
    return p;
}

/* A protected channel: members-only (XEP-0045 7.2.7). */
static void test_members_only(void **state)
{
    reset_fake();
    struct muc_room *r = muc_room_new(&ENV, protected_policy());
    /* guests, federated users and accounts not invited: registration-required, auth */
    join_as(r, &W_GUEST, "g@guest.example.org/x", "G");
    assert_int_equal(count_to("g@guest.example.org/x", "type='error'", "type='auth'", "<registration-required", NULL), 1);
    join_as(r, &W_REMOTE, "carol@remote.example/c", "Carol");
    assert_int_equal(count_to("carol@remote.example/c", "<registration-required", NULL), 1);
    struct muc_who bob = {.user_id = 9, .account = "bob"};
    join_as(r, &bob, "bob@example.org/b", "bob");
    assert_int_equal(count_to("bob@example.org/b", "<registration-required", NULL), 1);
    assert_int_equal(muc_room_count(r), 0);
    /* invited, owner, channel moderator, site admin: in */
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    join_as(r, &W_OWNER, "owner@example.org/o", "Owner");
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    struct muc_who boss = {.user_id = 20, .account = "boss", .site_admin = true};
    join_as(r, &boss, "boss@example.org/b", "Boss");
    assert_int_equal(muc_room_count(r), 4);
    /* the archive, likewise */
    struct jid j;
    jid_parse(&j, "g@guest.example.org/x");
    assert_int_equal(muc_room_read_access(r, &j, &W_GUEST), STANZA_COND_REGISTRATION_REQUIRED);
    assert_false(muc_room_may_read(r, &j, &W_GUEST));
    jid_free(&j);
    jid_parse(&j, "bob@example.org/b");
    assert_int_equal(muc_room_read_access(r, &j, &bob), STANZA_COND_REGISTRATION_REQUIRED);
    jid_free(&j);
    jid_parse(&j, "alice@example.org/a");
    assert_int_equal(muc_room_read_access(r, &j, &W_ALICE), 0);
    jid_free(&j);
    /* disco#info: members-only and hidden; outsiders do not get the title */
    clear();
    feed(r, &W_GUEST, 0, "<iq type='get' id='d1' from='g@guest.example.org/x' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    const char *d = last_to("g@guest.example.org/x");
    assert_non_null(strstr(d, "muc_membersonly"));
    assert_non_null(strstr(d, "muc_hidden"));
    assert_null(strstr(d, "muc_open"));
    assert_null(strstr(d, "muc_public"));
    assert_null(strstr(d, "The Room"));
    assert_null(strstr(d, "muc#roominfo"));
    feed(r, &W_ALICE, 0, "<iq type='get' id='d2' from='alice@example.org/a' to='room@chat.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_int_equal(count_to("alice@example.org/a", "muc_membersonly", "The Room", "muc#roominfo", NULL), 1);
    /* the invitation withdrawn (the page reloads the policy): Alice out with 321 */
    clear();
    struct muc_policy *np = protected_policy();
    np->ninvited = 0;
    muc_room_set_policy(r, np);
    assert_int_equal(muc_room_count(r), 3);
    assert_int_equal(count_to("alice@example.org/a", "type='unavailable'", "code='321'", "code='110'", NULL), 1);
    assert_int_equal(count_to("owner@example.org/o", "room@chat.example.org/Alice", "code='321'", NULL), 1);
    /* the channel made public again: anyone */
    muc_room_set_policy(r, policy());
    join_as(r, &W_GUEST, "g@guest.example.org/x", "G");
    assert_int_equal(muc_room_count(r), 4);
    muc_room_free(r);
    clear();
}

/* Retractions of messages no longer in memory; what an occupant may not claim. */
static void test_retraction_checked_and_forged_elements(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_MOD, "mod@example.org/m", "Mod");
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    /* the service cannot check: refused */
    clear();
    F.verify_rc = -ENOMEM;
    const char *retr = "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'>"
                       "<retract xmlns='urn:xmpp:message-retract:1' id='old-one'/><body>retracted</body></message>";
    feed(r, &W_ALICE, 0, "%s", retr);
    assert_int_equal(F.verifies, 1);
    assert_int_equal(count_to("alice@example.org/a", "type='error'", "<forbidden", NULL), 1);
    assert_int_equal(count_to("mod@example.org/m", "urn:xmpp:message-retract:1", NULL), 0);
    /* the service checks: nothing goes out until it answers */
    clear();
    F.verify_rc = 0;
    feed(r, &W_ALICE, 0, "%s", retr);
    assert_int_equal(F.verifies, 2);
    assert_string_equal(F.verify_sid, "old-one");
    assert_string_equal(F.verify_bare, "alice@example.org");
    assert_true(F.verify_oid[0] != '\0');
    assert_int_equal(F.nsent, 0);
    /* not hers */
    struct xml_node *st = parse(retr);
    struct jid from, to;
    stanza_jid(st, "from", &from);
    stanza_jid(st, "to", &to);
    muc_room_retract_checked(r, st, &from, &to, false, true);
    assert_int_equal(count_to("alice@example.org/a", "<forbidden", NULL), 1);
    assert_int_equal(F.retracts, 0);
    /* no such message */
    clear();
    muc_room_retract_checked(r, st, &from, &to, false, false);
    assert_int_equal(count_to("alice@example.org/a", "<item-not-found", NULL), 1);
    /* hers: broadcast and tombstoned in the archive */
    clear();
    muc_room_retract_checked(r, st, &from, &to, true, true);
    assert_int_equal(count_to("mod@example.org/m", "urn:xmpp:message-retract:1", "old-one", NULL), 1);
    assert_int_equal(F.retracts, 1);
    assert_int_equal(F.verifies, 2); /* not asked again */
    jid_free(&from), jid_free(&to);
    xml_node_free(st);

    /* forged moderation and ids are stripped from an occupant's message */
    clear();
    F.now += 60000;
    feed(r, &W_ALICE, 0, "<message type='groupchat' from='alice@example.org/a' to='room@chat.example.org'><body>look</body>"
                         "<apply-to xmlns='urn:xmpp:fasten:0' id='x1'><moderated xmlns='urn:xmpp:message-moderate:0' by='room@chat.example.org/Mod'>"
                         "<retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to>"
                         "<apply-to xmlns='urn:xmpp:fasten:0' id='x2'><retract xmlns='urn:xmpp:message-retract:0'/></apply-to>"
                         "<moderated xmlns='urn:xmpp:message-moderate:1' by='room@chat.example.org/Mod'/>"
                         "<reply xmlns='urn:xmpp:reply:0' id='r1'><stanza-id xmlns='urn:xmpp:sid:0' id='fake' by='room@chat.example.org'/>"
                         "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='fakeoid'/></reply>"
                         "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='fake-top'/></message>");
    const char *m = last_to("mod@example.org/m");
    assert_non_null(strstr(m, "<body>look</body>"));
    assert_null(strstr(m, "urn:xmpp:fasten:0"));
    assert_null(strstr(m, "moderated"));
    assert_null(strstr(m, "fake"));
    assert_non_null(strstr(m, "urn:xmpp:reply:0")); /* the reply itself stays */
    assert_non_null(strstr(m, "urn:xmpp:occupant-id:0")); /* the room's own */
    muc_room_free(r);
    clear();
}

/* iqs share the occupant's budget; pings do not. */
static void test_iq_rate(void **state)
{
    struct muc_room *r = room_new();
    join_as(r, &W_ALICE, "alice@example.org/a", "Alice");
    clear();
    for (int i = 0; i < 4; i++)
        feed(r, &W_ALICE, 0, "<iq type='get' id='i%d' from='alice@example.org/a' to='room@chat.example.org'>"
                             "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>", i);
    assert_int_equal(count_to("alice@example.org/a", "type='result'", NULL), 3); /* burst 3 */
    assert_int_equal(count_to("alice@example.org/a", "id='i3'", "<policy-violation", "type='wait'", NULL), 1);
    for (int i = 0; i < 5; i++)
        feed(r, &W_ALICE, 0, "<iq type='get' id='p%d' from='alice@example.org/a' to='room@chat.example.org/Alice'>"
                             "<ping xmlns='urn:xmpp:ping'/></iq>", i);
    assert_int_equal(count_to("alice@example.org/a", "type='result'", "id='p", NULL), 5);
    muc_room_free(r);
    clear();
}

static void test_store_and_mam(void **state)
{
    char dir[PATH_MAX], url[PATH_MAX + 32], err[512];
    snprintf(dir, sizeof dir, "/tmp/hearth-test-muc-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(url, sizeof url, "sqlite:%s/hearth.db", dir);
    struct db *db;
    assert_int_equal(db_open(url, &db, err, sizeof err), 0);
    assert_int_equal(migrate_up(db, NULL, NULL, 0, err, sizeof err), 0);
    exec_ok(db, "INSERT INTO users (id, name, password_hash, roles, created_at) VALUES"
                " (1, 'owner', 'x', 'streamer', 0), (2, 'mod', 'x', 'user', 0),"
                " (3, 'boss', 'x', 'user,admin', 0), (4, 'Alice', 'x', 'user', 0)");
    exec_ok(db, "INSERT INTO channels (id, owner_id, slug, title, stream_key, stream_key_hash,"
                " created_at, chat_guests_may_talk, chat_slow_mode) VALUES"
                " (7, 1, 'room', 'The Room', 'k1', 'h1', 0, 0, 5),"
                " (8, 1, 'off', 'Off', 'k2', 'h2', 0, 1, 0)");
    exec_ok(db, "UPDATE channels SET chat_enabled = 0 WHERE id = 8");
    exec_ok(db, "INSERT INTO chat_moderators VALUES (7, 2, 0)");
    exec_ok(db, "INSERT INTO chat_banned_words (channel_id, word, created_at) VALUES (7, 'darn', 0),"
                " (NULL, 'heck', 0), (8, 'other', 0)");
    exec_ok(db, "INSERT INTO chat_bans (channel_id, ip, created_at) VALUES (NULL, '192.0.2.1', 0)");
    exec_ok(db, "INSERT INTO chat_bans (channel_id, jid, created_at, expires_at) VALUES"
                " (7, 'old@example.org', 0, 1)"); /* expired long ago */

    /* writes, in order: five messages, a retraction by the author, one by
     * someone else (ignored), a moderation, a ban and its removal */
    struct muc_op *head = NULL, **tail = &head;
    const char *bodies[] = {"one", "two", "three", "four", "five"};
    for (int i = 0; i < 5; i++) {
        char sid[8];
        snprintf(sid, sizeof sid, "s%d", i);
        *tail = op_msg(7, sid, 1000 + i * 1000, i % 2 ? "bob" : "ann", i % 2 ? "ob" : "oa", bodies[i]);
        tail = &(*tail)->next;
    }
    struct muc_op *r1 = calloc(1, sizeof *r1);
    r1->kind = MUC_OP_RETRACT, r1->channel_id = 7, r1->stanza_id = strdup("s0");
    r1->occupant_id = strdup("oa"), r1->ts_ms = 9000;
    r1->xml = strdup("<retracted xmlns='urn:xmpp:message-retract:1' stamp='x'/>");
    *tail = r1, tail = &r1->next;
    struct muc_op *r2 = calloc(1, sizeof *r2);
    r2->kind = MUC_OP_RETRACT, r2->channel_id = 7, r2->stanza_id = strdup("s1");
    r2->occupant_id = strdup("oa"), r2->ts_ms = 9000; /* s1 is bob's */
    r2->xml = strdup("<retracted xmlns='urn:xmpp:message-retract:1' stamp='x'/>");
    *tail = r2, tail = &r2->next;
    struct muc_op *b1 = calloc(1, sizeof *b1);
    b1->kind = MUC_OP_BAN_ADD, b1->channel_id = 7, b1->jid = strdup("alice@example.org");
    b1->reason = strdup("spam");
    *tail = b1, tail = &b1->next;
    struct muc_op *b2 = calloc(1, sizeof *b2);
    b2->kind = MUC_OP_BAN_ADD, b2->channel_id = 7, b2->jid = strdup("g@guest.example.org");
    b2->ip = strdup("198.51.100.7");
    *tail = b2, tail = &b2->next;
    struct muc_op *b3 = calloc(1, sizeof *b3);
    b3->kind = MUC_OP_BAN_REMOVE, b3->channel_id = 7, b3->jid = strdup("g@guest.example.org");
    *tail = b3, tail = &b3->next;
    assert_int_equal(muc_store_apply(db, head, "example.org"), 0);
    while (head) {
        struct muc_op *n = head->next;
        muc_op_free(head);
        head = n;
    }

    /* the policy as the room sees it */
    struct muc_loaded l;
    assert_int_equal(muc_store_load(db, "room", 0, 3, 0, &l), 0);
    struct muc_policy *p = l.policy;
    assert_int_equal(p->channel_id, 7);
    assert_string_equal(p->owner_name, "owner");
    assert_false(p->guests_may_talk);
    assert_int_equal(p->slow_mode_s, 5);
    assert_int_equal(p->nmods, 1);
    assert_int_equal(p->mods[0].user_id, 2);
    assert_int_equal(p->nadmins, 1);
    assert_string_equal(p->admins[0].name, "boss");
    assert_int_equal(p->nwords, 2); /* the channel's and the site's */
    /* the site-wide IP ban and alice's (found by her account), not the expired one */
    assert_int_equal(p->nbans, 2);
    bool site_ip = false, alice = false;
    for (size_t i = 0; i < p->nbans; i++) {
        site_ip |= p->bans[i].site && p->bans[i].ip && strcmp(p->bans[i].ip, "192.0.2.1") == 0;
        alice |= p->bans[i].jid && strcmp(p->bans[i].jid, "alice@example.org") == 0 &&
                 p->bans[i].user_id == 4;
    }
    assert_true(site_ip && alice);
    /* the last three messages, oldest first */
    assert_int_equal(l.nhist, 3);
    assert_string_equal(xml_child_text(l.hist[0], "body", NULL), "three");
    assert_string_equal(xml_child_text(l.hist[2], "body", NULL), "five");
    muc_loaded_clear(&l);
    assert_int_equal(muc_store_load(db, "off", 0, 3, 0, &l), -ENOENT); /* chat off */
    assert_int_equal(muc_store_load(db, "nope", 0, 3, 0, &l), -ENOENT);
    assert_int_equal(muc_store_load(db, NULL, 7, 0, 0, &l), 0); /* by id */
    assert_false(l.policy->members_only);
    assert_int_equal(l.policy->ninvited, 0);
    muc_loaded_clear(&l);
    /* a protected channel: members-only, with its invitations */
    exec_ok(db, "UPDATE channels SET protected = 1 WHERE id = 7");
    exec_ok(db, "INSERT INTO channel_invites (channel_id, user_id, created_at) VALUES (7, 4, 0)");
    assert_int_equal(muc_store_load(db, NULL, 7, 0, 0, &l), 0);
    assert_true(l.policy->members_only);
    assert_int_equal(l.policy->ninvited, 1);
    assert_int_equal(l.policy->invited[0], 4);
    muc_loaded_clear(&l);
    exec_ok(db, "UPDATE channels SET protected = 0 WHERE id = 7");

    /* who wrote an archived message (retractions of old messages) */
    bool author;
    assert_int_equal(muc_store_message_author(db, 7, "s1", "ob", NULL, &author), 0);
    assert_true(author);
    assert_int_equal(muc_store_message_author(db, 7, "s1", "oa", "nobody@example.org", &author), 0);
    assert_false(author);
    assert_int_equal(muc_store_message_author(db, 7, "s0", "oa", NULL, &author), -ENOENT); /* retracted */
    assert_int_equal(muc_store_message_author(db, 8, "s1", "ob", NULL, &author), -ENOENT); /* other room */
    assert_int_equal(muc_store_message_author(db, 7, "nope", "ob", NULL, &author), -ENOENT);

    /* MAM: the tombstone keeps ids, loses the body; bob's message is intact */
    struct mam_query q = {.channel_id = 7, .start_ms = -1, .end_ms = -1, .max = 100};
    struct mam_result res;
    assert_int_equal(mam_run(db, &q, &res), 0);
    assert_int_equal(res.n, 5);
    assert_int_equal(res.count, 5);
    assert_true(res.complete);
    assert_null(xml_child(res.items[0].st, "body", NULL));
    assert_non_null(xml_child(res.items[0].st, "retracted", MUC_NS_RETRACT));
    assert_non_null(xml_child(res.items[0].st, "stanza-id", MUC_NS_SID));
    assert_string_equal(xml_child_text(res.items[1].st, "body", NULL), "two");
    mam_result_clear(&res);

    /* paging forward, backward and the last page */
    q.max = 2;
    assert_int_equal(page(db, &q, NULL, false), 2);
    q.after = strdup("s1");
    assert_int_equal(page(db, &q, "three", false), 2);
    free(q.after);
    q.after = strdup("s3");
    assert_int_equal(page(db, &q, "five", true), 1);
    free(q.after);
    q.after = NULL;
    q.before_last = true;
    assert_int_equal(page(db, &q, "four", false), 2);
    q.before_last = false;
    q.before = strdup("s3");
    assert_int_equal(page(db, &q, "two", false), 2);
    free(q.before);
    q.before = strdup("nope");
    assert_int_equal(mam_run(db, &q, &res), -ENOENT);
    free(q.before);
    q.before = NULL;
    /* time window and 'with' */
    q.max = 100;
    q.start_ms = 2000, q.end_ms = 4000;
    assert_int_equal(page(db, &q, "two", true), 3);
    q.start_ms = q.end_ms = -1;
    q.with_nick = strdup("bob");
    assert_int_equal(page(db, &q, "two", true), 2);
    free(q.with_nick);
    q.with_nick = NULL;

    /* retention */
    struct muc_op ex = {.kind = MUC_OP_EXPIRE, .ts_ms = 3500};
    assert_int_equal(muc_store_apply(db, &ex, "example.org"), 0);
    assert_int_equal(page(db, &q, "four", true), 2);

    /* the query form */
    struct xml_node *iq = parse(
        "<iq type='set' id='q' xmlns='jabber:client'><query xmlns='urn:xmpp:mam:2' queryid='f'>"
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
        "<field var='start'><value>2010-08-07T00:00:00Z</value></field>"
        "<field var='with'><value>room@chat.example.org/bob</value></field></x>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set></query></iq>");
    struct mam_query pq;
    assert_int_equal(mam_query_parse(xml_first_element(iq), &pq), 0);
    assert_int_equal(pq.start_ms, 1281139200000LL);
    assert_int_equal(pq.end_ms, -1);
    assert_string_equal(pq.with_nick, "bob");
    assert_int_equal(pq.max, MAM_MAX_PAGE);
    assert_true(pq.before_last);
    assert_string_equal(pq.queryid, "f");
    mam_query_clear(&pq);
    xml_node_free(iq);
    iq = parse("<iq type='set' id='q' xmlns='jabber:client'><query xmlns='urn:xmpp:mam:2'>"
               "<x xmlns='jabber:x:data' type='submit'><field var='bogus'><value>1</value></field></x>"
               "</query></iq>");
    assert_int_equal(mam_query_parse(xml_first_element(iq), &pq), -EINVAL);
    xml_node_free(iq);

    db_close(db);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_and_leave),
        cmocka_unit_test(test_nick_conflict_and_reserved),
        cmocka_unit_test(test_messages_ids_and_limits),
        cmocka_unit_test(test_slow_mode),
        cmocka_unit_test(test_visitors_and_voice),
        cmocka_unit_test(test_kick),
        cmocka_unit_test(test_ban_and_unban),
        cmocka_unit_test(test_max_occupants),
        cmocka_unit_test(test_history_on_join),
        cmocka_unit_test(test_retraction_and_moderation),
        cmocka_unit_test(test_iqs),
        cmocka_unit_test(test_large_room_presence),
        cmocka_unit_test(test_presence_payload_and_floods),
        cmocka_unit_test(test_multi_session_nick),
        cmocka_unit_test(test_reentrant_gone),
        cmocka_unit_test(test_bounces_and_dead_servers),
        cmocka_unit_test(test_members_only),
        cmocka_unit_test(test_retraction_checked_and_forged_elements),
        cmocka_unit_test(test_iq_rate),
        cmocka_unit_test(test_store_and_mam),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
