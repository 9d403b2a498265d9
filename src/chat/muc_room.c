/*
 * One MUC room: see muc_room.h for the model.
 *
 * Occupants live in a dense array (iteration for broadcasts touches only
 * pointers) plus two chained hash tables, by real full JID (every stanza
 * from an occupant) and by nick (case-insensitive, so "Bob" cannot pose as
 * "bob"). An occupant is one allocation plus its nick and its last
 * presence payload: a few hundred bytes, so 10,000 viewers cost a few MB.
 *
 * A broadcast builds the stanza once as a template without 'to' and hands
 * it to env->send with each recipient's JID; the service decides how to get
 * it to each session (copy or serialize once). Presence has two templates,
 * with the real JID for moderators and without for the others.
 *
 * The last env->history_max messages stay in a ring in memory (loaded from
 * the archive when the room loads), so a join never waits on the database.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "chat/muc_room.h"
#include "chat/stanza.h"
#include "core/log.h"
#include "core/util.h"

#define MUC_SUBJECT_MAX 200 /* characters, as the web page allows */
#define MUC_NICK_MAX 64            /* characters of a nickname */
#define MUC_PRESENCE_PART_MAX 512 /* bytes of one kept presence element */
#define MUC_MESSAGE_EXTRA 8192    /* bytes a message may carry besides its body */

/* ---- names ------------------------------------------------------------ */

const char *muc_aff_name(enum muc_aff a)
{
    static const char *const n[] = {"none", "member", "admin", "owner", "outcast"};
    return (unsigned)a < 5 ? n[a] : "none";
}

const char *muc_role_name(enum muc_role r)
{
    static const char *const n[] = {"none", "visitor", "participant", "moderator"};
    return (unsigned)r < 4 ? n[r] : "none";
}

static int aff_parse(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, muc_aff_name(i)) == 0)
            return i;
    return -1;
}

static int role_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, muc_role_name(i)) == 0)
            return i;
    return -1;
}

/* ---- policy ----------------------------------------------------------- */

static void ban_clear(struct muc_ban *b)
{
    free(b->jid), free(b->ip), free(b->nick), free(b->reason), free(b->by);
}

void muc_policy_free(struct muc_policy *p)
{
    if (!p)
        return;
    free(p->slug), free(p->title), free(p->description), free(p->subject), free(p->owner_name);
    for (size_t i = 0; i < p->nmods; i++)
        free(p->mods[i].name);
    for (size_t i = 0; i < p->nadmins; i++)
        free(p->admins[i].name);
    for (size_t i = 0; i < p->nbans; i++)
        ban_clear(&p->bans[i]);
    for (size_t i = 0; i < p->nwords; i++)
        free(p->words[i]);
    free(p->mods), free(p->admins), free(p->bans), free(p->words), free(p->invited);
    free(p);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int muc_policy_add_ban(struct muc_policy *p, const struct muc_ban *b)
{
    struct muc_ban *nb = realloc(p->bans, (p->nbans + 1) * sizeof *nb);
    if (!nb)
        return -ENOMEM;
    p->bans = nb;
    struct muc_ban *d = &nb[p->nbans];
    *d = *b;
    d->jid = dup_or_null(b->jid), d->ip = dup_or_null(b->ip), d->nick = dup_or_null(b->nick);
    d->reason = dup_or_null(b->reason), d->by = dup_or_null(b->by);
    if ((b->jid && !d->jid) || (b->ip && !d->ip) || (b->nick && !d->nick) ||
        (b->reason && !d->reason) || (b->by && !d->by)) {
        ban_clear(d);
        return -ENOMEM;
    }
    p->nbans++;
    return 0;
}

/* ---- occupants -------------------------------------------------------- */

struct occ {
    struct occ *jnext, *nnext; /* hash chains */
    uint32_t jhash, nhash;
    uint32_t idx; /* in r->occ */
    enum muc_role role;
    enum muc_aff aff;
    bool guest, site_admin, announced;
    bool gone; /* its session went away while the room was busy: see sweep */
    int64_t tat_ms; /* rate limit: theoretical arrival time (GCRA) */
    int64_t user_id;
    char oid[23];
    char *nick;
    struct xml_node *pres; /* last presence, without the MUC <x/> */
    char *bare;            /* in mem */
    char *ip;              /* in mem or NULL */
    char jid[];            /* full real JID, then bare, then ip */
};

struct hist {
    struct xml_node *st;
    int64_t ts_ms;
};

struct muc_room {
    const struct muc_env *env;
    struct muc_policy *p;
    char *jid;
    struct occ **occ;
    size_t nocc, cap;
    struct occ **jb, **nb; /* buckets, nbuckets each */
    size_t nbuckets;
    struct hist *hist; /* ring */
    size_t hhead, hlen;
    unsigned busy; /* muc_room_* calls on the stack (env->send may re-enter) */
    size_t ngone;  /* occupants marked gone while busy */
};

static uint32_t hash_str(const char *s, bool fold)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (fold && c >= 'A' && c <= 'Z')
            c += 32;
        h = (h ^ c) * 16777619u;
    }
    return h;
}

static struct occ *find_jid(const struct muc_room *r, const char *full)
{
    uint32_t h = hash_str(full, false);
    for (struct occ *o = r->jb[h & (r->nbuckets - 1)]; o; o = o->jnext)
        if (o->jhash == h && strcmp(o->jid, full) == 0)
            return o;
    return NULL;
}

static struct occ *find_nick(const struct muc_room *r, const char *nick)
{
    uint32_t h = hash_str(nick, true);
    for (struct occ *o = r->nb[h & (r->nbuckets - 1)]; o; o = o->nnext)
        if (o->nhash == h && strcasecmp(o->nick, nick) == 0)
            return o;
    return NULL;
}

/*
 * Multi-session nicks (XEP-0045 7.2.x): one account joined from two
 * devices, or a client that reconnected before its old stream was found
 * dead, holds one nick with several sessions. Another session of o's nick
 * (same bare JID), or NULL.
 */
static struct occ *nick_sibling(const struct muc_room *r, const struct occ *o)
{
    for (struct occ *x = r->nb[o->nhash & (r->nbuckets - 1)]; x; x = x->nnext)
        if (x != o && x->nhash == o->nhash && strcasecmp(x->nick, o->nick) == 0 &&
            strcmp(x->bare, o->bare) == 0)
            return x;
    return NULL;
}

static void link_nick(struct muc_room *r, struct occ *o)
{
    o->nhash = hash_str(o->nick, true);
    struct occ **b = &r->nb[o->nhash & (r->nbuckets - 1)];
    o->nnext = *b;
    *b = o;
}

static void unlink_nick(struct muc_room *r, struct occ *o)
{
    for (struct occ **pp = &r->nb[o->nhash & (r->nbuckets - 1)]; *pp; pp = &(*pp)->nnext)
        if (*pp == o) {
            *pp = o->nnext;
            return;
        }
}

static int grow(struct muc_room *r)
{
    if (r->nocc < r->cap)
        return 0;
    size_t cap = r->cap ? r->cap * 2 : 16;
    struct occ **a = realloc(r->occ, cap * sizeof *a);
    if (!a)
        return -ENOMEM;
    r->occ = a;
    r->cap = cap;
    if (cap <= r->nbuckets)
        return 0;
    /* keep the load factor at most 1 */
    struct occ **jb = calloc(cap, sizeof *jb), **nb = calloc(cap, sizeof *nb);
    if (!jb || !nb) {
        free(jb), free(nb);
        return -ENOMEM;
    }
    free(r->jb), free(r->nb);
    r->jb = jb, r->nb = nb, r->nbuckets = cap;
    for (size_t i = 0; i < r->nocc; i++) {
        struct occ *o = r->occ[i];
        o->jnext = jb[o->jhash & (cap - 1)];
        jb[o->jhash & (cap - 1)] = o;
        link_nick(r, o);
    }
    return 0;
}

static void occ_free(struct occ *o)
{
    if (!o)
        return;
    free(o->nick);
    xml_node_free(o->pres);
    free(o);
}

/* Take o out of the tables and the array; the caller frees it. */
static void occ_remove(struct muc_room *r, struct occ *o)
{
    for (struct occ **pp = &r->jb[o->jhash & (r->nbuckets - 1)]; *pp; pp = &(*pp)->jnext)
        if (*pp == o) {
            *pp = o->jnext;
            break;
        }
    unlink_nick(r, o);
    struct occ *last = r->occ[--r->nocc];
    r->occ[o->idx] = last;
    last->idx = o->idx;
    if (r->env->count)
        r->env->count(r->env->ud, r->p->channel_id, r->nocc);
}

void muc_room_occupant_id(const struct muc_room *r, const char *bare, char out[23])
{
    unsigned char h[16];
    char in[32];
    crypto_generichash_state s;
    int n = snprintf(in, sizeof in, "%lld:", (long long)r->p->channel_id);
    crypto_generichash_init(&s, r->env->occupant_key, sizeof r->env->occupant_key, sizeof h);
    crypto_generichash_update(&s, (const unsigned char *)in, (size_t)n);
    crypto_generichash_update(&s, (const unsigned char *)bare, strlen(bare));
    crypto_generichash_final(&s, h, sizeof h);
    sodium_bin2base64(out, 23, h, sizeof h, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* ---- room ------------------------------------------------------------- */

struct muc_room *muc_room_new(const struct muc_env *env, struct muc_policy *policy)
{
    struct muc_room *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->env = env;
    r->p = policy;
    size_t n = strlen(policy->slug) + 1 + strlen(env->muc_domain) + 1;
    r->jid = malloc(n);
    size_t hmax = env->history_max ? env->history_max : 1;
    r->hist = calloc(hmax, sizeof *r->hist);
    if (!r->jid || !r->hist || grow(r)) {
        free(r->jid), free(r->hist), free(r->occ), free(r->jb), free(r->nb), free(r);
        return NULL;
    }
    snprintf(r->jid, n, "%s@%s", policy->slug, env->muc_domain);
    return r;
}

void muc_room_free(struct muc_room *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nocc; i++)
        occ_free(r->occ[i]);
    size_t hmax = r->env->history_max ? r->env->history_max : 1;
    for (size_t i = 0; i < r->hlen; i++)
        xml_node_free(r->hist[(r->hhead + i) % hmax].st);
    free(r->hist), free(r->occ), free(r->jb), free(r->nb), free(r->jid);
    muc_policy_free(r->p);
    free(r);
}

const char *muc_room_jid(const struct muc_room *r) { return r->jid; }
int64_t muc_room_channel(const struct muc_room *r) { return r->p->channel_id; }
const struct muc_policy *muc_room_policy(const struct muc_room *r) { return r->p; }
size_t muc_room_count(const struct muc_room *r) { return r->nocc; }

/* ---- sending ---------------------------------------------------------- */

void muc_send_error(const struct muc_env *env, const struct xml_node *st, int cond,
                    const char *text)
{
    struct stanza_error e = {.cond = cond, .text = text};
    struct xml_node *reply;
    const char *to = xml_attr_get(st, "from");
    if (!to || stanza_error_reply(st, &e, &reply))
        return;
    /* XEP-0045 join errors carry the MUC <x/> */
    if (stanza_kind(st) == STANZA_PRESENCE && reply->last) {
        struct xml_node *err = reply->last, *x = xml_element_new("x", MUC_NS);
        if (x) {
            xml_node_unlink(err); /* <x/> first, <error/> last */
            xml_node_append(reply, x);
            xml_node_append(reply, err);
        }
    }
    env->send(env->ud, reply, to);
    xml_node_free(reply);
}

static void send_error_wait(const struct muc_env *env, const struct xml_node *st, int cond,
                            const char *text)
{
    struct stanza_error e = {.cond = cond, .type = STANZA_ERROR_WAIT, .text = text};
    struct xml_node *reply;
    const char *to = xml_attr_get(st, "from");
    if (!to || stanza_error_reply(st, &e, &reply))
        return;
    env->send(env->ud, reply, to);
    xml_node_free(reply);
}

static void send_to(struct muc_room *r, const struct xml_node *st, const struct occ *o)
{
    if (!o->gone)
        r->env->send(r->env->ud, st, o->jid);
}


static int nick_jid(const struct muc_room *r, const char *nick, char *out, size_t n)
{
    int k = snprintf(out, n, "%s/%s", r->jid, nick);
    return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

static void fmt_stamp(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    snprintf(out, 32, "%.31s", tmp);
}

/* XEP-0082 date-time to Unix ms; -1 when malformed. */
static int64_t parse_stamp(const char *s)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
        return -1;
    tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d;
    tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    const char *p = s + n;
    if (*p == '.') {
        int64_t frac = 0, scale = 1000;
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (scale > 1)
                scale /= 10, frac += (*p - '0') * scale;
        ms += frac;
    }
    if (*p == 'Z' && !p[1])
        return ms;
    int oh, om;
    if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2) {
        int64_t off = ((int64_t)oh * 60 + om) * 60000;
        return *p == '+' ? ms - off : ms + off;
    }
    return -1;
}

int64_t muc_parse_stamp(const char *s) { return parse_stamp(s); }
void muc_fmt_stamp(int64_t ms, char out[32]) { fmt_stamp(ms, out); }

/* ---- presence --------------------------------------------------------- */

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool rate_ok(struct muc_room *r, struct occ *o);

struct pres_opts {
    bool unavailable;
    const int *codes;
    size_t ncodes;
    const char *newnick;   /* 303 */
    const char *reason;    /* kick, ban */
    const char *actor;     /* nick of the moderator */
    bool status_self_only; /* codes only in the self-presence */
};

static struct xml_node *build_presence(struct muc_room *r, const struct occ *o,
                                       const struct pres_opts *po, bool with_jid, bool self)
{
    char from[JID_MAX + 1];
    if (nick_jid(r, o->nick, from, sizeof from))
        return NULL;
    struct xml_node *p;
    if (!po->unavailable && o->pres) {
        p = xml_node_copy(o->pres);
    } else {
        p = xml_element_new("presence", XMPP_NS_CLIENT);
    }
    if (!p || xml_attr_set(p, "from", from) ||
        (po->unavailable && xml_attr_set(p, "type", "unavailable")))
        goto fail;
    struct xml_node *x = xml_element_add(p, "x", MUC_NS_USER);
    struct xml_node *item = x ? xml_element_add(x, "item", NULL) : NULL;
    if (!item || xml_attr_set(item, "affiliation", muc_aff_name(o->aff)) ||
        xml_attr_set(item, "role", po->unavailable ? "none" : muc_role_name(o->role)) ||
        (with_jid && xml_attr_set(item, "jid", o->jid)) ||
        (po->newnick && xml_attr_set(item, "nick", po->newnick)))
        goto fail;
    if (po->actor) {
        struct xml_node *a = xml_element_add(item, "actor", NULL);
        if (!a || xml_attr_set(a, "nick", po->actor))
            goto fail;
    }
    if (po->reason && !xml_element_add_text_child(item, "reason", NULL, po->reason))
        goto fail;
    if (self || !po->status_self_only) {
        for (size_t i = 0; i < po->ncodes; i++) {
            char c[8];
            snprintf(c, sizeof c, "%d", po->codes[i]);
            struct xml_node *s = xml_element_add(x, "status", NULL);
            if (!s || xml_attr_set(s, "code", c))
                goto fail;
        }
    }
    if (self) {
        struct xml_node *s = xml_element_add(x, "status", NULL);
        if (!s || xml_attr_set(s, "code", "110"))
            goto fail;
    }
    struct xml_node *oid = xml_element_add(p, "occupant-id", MUC_NS_OCCUPANT_ID);
    if (!oid || xml_attr_set(oid, "id", o->oid))
        goto fail;
    return p;
fail:
    xml_node_free(p);
    return NULL;
}

/*
 * Tell the room about o. The self-presence goes to o when self is set (o
 * may already be out of the array). Others get it per the large-room rule.
 */
static void broadcast_presence(struct muc_room *r, struct occ *o, const struct pres_opts *po,
                               bool self)
{
    struct xml_node *pm = NULL, *pn = NULL;
    for (size_t i = 0; i < r->nocc; i++) {
        struct occ *x = r->occ[i];
        if (x == o)
            continue;
        if (x->role == MUC_ROLE_MODERATOR) {
            if (!pm && !(pm = build_presence(r, o, po, true, false)))
                goto out;
            send_to(r, pm, x);
        } else if (o->announced) {
            if (!pn && !(pn = build_presence(r, o, po, false, false)))
                goto out;
            send_to(r, pn, x);
        }
    }
    if (self) {
        struct xml_node *ps = build_presence(r, o, po, true, true);
        if (ps)
            send_to(r, ps, o);
        xml_node_free(ps);
    }
out:
    xml_node_free(pm);
    xml_node_free(pn);
}

/* Rough serialized size of a tree: names, attributes and text. */
static size_t tree_bytes(const struct xml_node *n)
{
    if (n->type == XML_NODE_TEXT)
        return n->len;
    size_t b = 2 * strlen(n->name) + 5;
    for (unsigned i = 0; i < n->nattrs; i++)
        b += strlen(n->attrs[i].name) + strlen(n->attrs[i].value) + 4;
    for (const struct xml_node *c = n->first; c; c = c->next)
        b += tree_bytes(c);
    return b;
}

/*
 * Keep what others should see of a presence, and no more: it is copied to
 * every occupant on each change and held while the occupant stays, so a
 * few known elements of bounded size (show, status, priority, caps, avatar
 * hash, idle), one of each.
 */
static struct xml_node *presence_payload(const struct xml_node *st)
{
    static const char *const keep[][2] = {
        {"show", XMPP_NS_CLIENT},
        {"status", XMPP_NS_CLIENT},
        {"priority", XMPP_NS_CLIENT},
        {"c", "http://jabber.org/protocol/caps"},
        {"x", "vcard-temp:x:update"},
        {"idle", "urn:xmpp:idle:1"},
    };
    struct xml_node *p = xml_element_new("presence", XMPP_NS_CLIENT);
    if (!p)
        return NULL;
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
        const struct xml_node *c = xml_child(st, keep[i][0], keep[i][1]);
        if (!c || tree_bytes(c) > MUC_PRESENCE_PART_MAX)
            continue;
        struct xml_node *k = xml_node_copy(c);
        if (!k) {
            xml_node_free(p);
            return NULL;
        }
        xml_node_append(p, k);
    }
    return p;
}

static const struct muc_ban *find_ban(const struct muc_room *r, const struct muc_who *who,
                                      const char *bare)
{
    int64_t now = r->env->now_ms(r->env->ud);
    for (size_t i = 0; i < r->p->nbans; i++) {
        const struct muc_ban *b = &r->p->bans[i];
        if (b->expires_ms && b->expires_ms <= now)
            continue;
        if ((b->user_id && who->user_id == b->user_id) || (b->jid && strcmp(b->jid, bare) == 0) ||
            (b->ip && who->guest && who->ip && strcmp(b->ip, who->ip) == 0))
            return b;
    }
    return NULL;
}

static bool user_in(const struct muc_user *u, size_t n, int64_t id)
{
    for (size_t i = 0; id && i < n; i++)
        if (u[i].user_id == id)
            return true;
    return false;
}

/* The affiliation the platform gives; outcast when banned. */
static enum muc_aff policy_aff(const struct muc_room *r, const struct muc_who *who,
                               const char *bare)
{
    if (who->user_id && who->user_id == r->p->owner_id)
        return MUC_AFF_OWNER;
    if (who->site_admin || user_in(r->p->mods, r->p->nmods, who->user_id) ||
        user_in(r->p->admins, r->p->nadmins, who->user_id))
        return MUC_AFF_ADMIN;
    if (find_ban(r, who, bare))
        return MUC_AFF_OUTCAST;
    return who->user_id ? MUC_AFF_MEMBER : MUC_AFF_NONE;
}

static enum muc_role default_role(const struct muc_room *r, enum muc_aff aff, bool guest)
{
    if (aff == MUC_AFF_OWNER || aff == MUC_AFF_ADMIN)
        return MUC_ROLE_MODERATOR;
    if (guest && !r->p->guests_may_talk)
        return MUC_ROLE_VISITOR;
    return MUC_ROLE_PARTICIPANT;
}

static void send_history(struct muc_room *r, const struct xml_node *join, struct occ *o)
{
    const struct xml_node *x = xml_child(join, "x", MUC_NS);
    const struct xml_node *h = x ? xml_child(x, "history", MUC_NS) : NULL;
    size_t want = r->env->history_default;
    int64_t since = 0;
    if (h) {
        const char *v;
        if ((v = xml_attr_get(h, "maxstanzas")))
            want = strtoul(v, NULL, 10);
        if ((v = xml_attr_get(h, "maxchars")) && strtoul(v, NULL, 10) == 0)
            want = 0;
        if ((v = xml_attr_get(h, "seconds")))
            since = r->env->now_ms(r->env->ud) - (int64_t)strtoll(v, NULL, 10) * 1000;
        if ((v = xml_attr_get(h, "since"))) {
            int64_t s = parse_stamp(v);
            if (s > since)
                since = s;
        }
    }
    size_t hmax = r->env->history_max ? r->env->history_max : 1;
    size_t n = r->hlen < want ? r->hlen : want;
    for (size_t i = r->hlen - n; i < r->hlen; i++) {
        const struct hist *e = &r->hist[(r->hhead + i) % hmax];
        if (e->ts_ms < since)
            continue;
        struct xml_node *m = xml_node_copy(e->st);
        struct xml_node *d = m ? xml_element_add(m, "delay", MUC_NS_DELAY) : NULL;
        char stamp[32];
        fmt_stamp(e->ts_ms, stamp);
        if (d && !xml_attr_set(d, "from", r->jid) && !xml_attr_set(d, "stamp", stamp))
            send_to(r, m, o);
        xml_node_free(m);
    }
}

static void send_subject(struct muc_room *r, struct occ *o)
{
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    const char *subj = r->p->subject ? r->p->subject : r->p->title ? r->p->title : "";
    if (m && !xml_attr_set(m, "from", r->jid) && !xml_attr_set(m, "type", "groupchat") &&
        xml_element_add_text_child(m, "subject", NULL, subj))
        send_to(r, m, o);
    xml_node_free(m);
}

static void join(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                 const struct jid *to, const struct muc_who *who, int64_t nick_owner)
{
    const struct muc_env *env = r->env;
    char full[JID_MAX + 1], bare[JID_MAX + 1];
    if (!to->resource) {
        muc_send_error(env, st, STANZA_COND_JID_MALFORMED, "A nickname is required");
        return;
    }
    if (jid_format(from, full, sizeof full) || jid_format_bare(from, bare, sizeof bare))
        return;
    if (utf8_chars(to->resource) > MUC_NICK_MAX) {
        muc_send_error(env, st, STANZA_COND_NOT_ACCEPTABLE, "The nickname is too long");
        return;
    }
    enum muc_aff aff = policy_aff(r, who, bare);
    if (aff == MUC_AFF_OUTCAST) {
        log_info("muc %s: %s refused: banned", r->jid, full);
        muc_send_error(env, st, STANZA_COND_FORBIDDEN, "You are banned from this room");
        return;
    }
    if (!muc_room_admits(r, who)) {
        /* XEP-0045 7.2.7: members-only, registration-required (auth) */
        log_info("muc %s: %s refused: the channel is protected and it is not invited", r->jid,
                 full);
        muc_send_error(env, st, STANZA_COND_REGISTRATION_REQUIRED,
                       "This channel is private: only invited accounts may join");
        return;
    }
    struct occ *same = find_nick(r, to->resource);
    if (same && !who->guest && strcmp(same->bare, bare) == 0 &&
        strcmp(same->nick, to->resource) == 0)
        same = NULL; /* another session of the same user: it shares the nick */
    if (same || (nick_owner && nick_owner != who->user_id)) {
        muc_send_error(env, st, STANZA_COND_CONFLICT,
                       same ? "That nickname is in use" : "That nickname is reserved");
        return;
    }
    if (r->nocc >= env->max_occupants && aff != MUC_AFF_OWNER && aff != MUC_AFF_ADMIN) {
        log_info("muc %s: %s refused: room full (%zu)", r->jid, full, r->nocc);
        muc_send_error(env, st, STANZA_COND_SERVICE_UNAVAILABLE, "The room is full");
        return;
    }
    size_t lf = strlen(full) + 1, lb = strlen(bare) + 1,
           li = who->guest && who->ip ? strlen(who->ip) + 1 : 0;
    struct occ *o = calloc(1, sizeof *o + lf + lb + li);
    if (!o || grow(r) || !(o->nick = strdup(to->resource)) || !(o->pres = presence_payload(st))) {
        occ_free(o);
        muc_send_error(env, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    memcpy(o->jid, full, lf);
    o->bare = o->jid + lf;
    memcpy(o->bare, bare, lb);
    if (li) {
        o->ip = o->bare + lb;
        memcpy(o->ip, who->ip, li);
    }
    o->aff = aff;
    o->role = default_role(r, aff, who->guest);
    o->guest = who->guest;
    o->site_admin = who->site_admin;
    o->user_id = who->user_id;
    o->announced = r->nocc < env->presence_full_max || o->role == MUC_ROLE_MODERATOR;
    muc_room_occupant_id(r, bare, o->oid);

    /* In the tables before anything is sent to it: if its stream turns out
     * dead while we send, muc_room_gone finds it (no ghost occupant). */
    o->jhash = hash_str(o->jid, false);
    o->jnext = r->jb[o->jhash & (r->nbuckets - 1)];
    r->jb[o->jhash & (r->nbuckets - 1)] = o;
    link_nick(r, o);
    o->idx = (uint32_t)r->nocc;
    r->occ[r->nocc++] = o;

    /* the occupant list first, then the self-presence last (XEP-0045 7.2.3) */
    bool mod = o->role == MUC_ROLE_MODERATOR;
    struct pres_opts plain = {0};
    for (size_t i = 0; i < r->nocc && !o->gone; i++) {
        struct occ *x = r->occ[i];
        if (x == o || (!x->announced && !mod))
            continue;
        struct xml_node *p = build_presence(r, x, &plain, mod, false);
        if (p)
            send_to(r, p, o);
        xml_node_free(p);
    }
    static const int codes[] = {170}; /* the room is logged (MAM) */
    struct pres_opts po = {.codes = codes, .ncodes = 1, .status_self_only = true};
    broadcast_presence(r, o, &po, true);
    send_history(r, st, o);
    send_subject(r, o);
    log_debug("muc %s: %s joined as %s (%s, %s), %zu occupants", r->jid, full, o->nick,
              muc_aff_name(o->aff), muc_role_name(o->role), r->nocc);
    if (env->count)
        env->count(env->ud, r->p->channel_id, r->nocc);
}

/* o leaves: everyone is told with po, o gets its self-presence. */
static void leave(struct muc_room *r, struct occ *o, const struct pres_opts *po, bool self)
{
    occ_remove(r, o);
    if (nick_sibling(r, o)) {
        /* the nick stays in the room with its other session */
        struct xml_node *ps = self ? build_presence(r, o, po, true, true) : NULL;
        if (ps)
            send_to(r, ps, o);
        xml_node_free(ps);
    } else {
        broadcast_presence(r, o, po, self);
    }
    occ_free(o);
}

static void change_nick(struct muc_room *r, struct occ *o, const struct xml_node *st,
                        const struct jid *to, int64_t nick_owner)
{
    struct occ *same = find_nick(r, to->resource);
    if (utf8_chars(to->resource) > MUC_NICK_MAX) {
        muc_send_error(r->env, st, STANZA_COND_NOT_ACCEPTABLE, "The nickname is too long");
        return;
    }
    if (nick_sibling(r, o)) {
        muc_send_error(r->env, st, STANZA_COND_NOT_ACCEPTABLE,
                       "Your other sessions hold this nickname; leave with them first");
        return;
    }
    if ((same && same != o) || (nick_owner && nick_owner != o->user_id)) {
        muc_send_error(r->env, st, STANZA_COND_CONFLICT,
                       same ? "That nickname is in use" : "That nickname is reserved");
        return;
    }
    char *nn = strdup(to->resource);
    if (!nn)
        return;
    static const int c303[] = {303};
    struct pres_opts po = {.unavailable = true, .codes = c303, .ncodes = 1, .newnick = nn};
    broadcast_presence(r, o, &po, true);
    unlink_nick(r, o);
    free(o->nick);
    o->nick = nn;
    link_nick(r, o);
    struct pres_opts plain = {0};
    broadcast_presence(r, o, &plain, true);
}

/*
 * Re-entrancy. env->send may find the recipient's stream dead and, through
 * the session-gone watcher, call muc_room_gone on this very room while we
 * are in the middle of a loop over the occupants (or of a join, holding o).
 * So every entry point holds the room busy; while busy, a gone occupant is
 * only marked (and sent nothing more); the outermost call removes the
 * marked ones on its way out, each with a 333 presence to the others.
 */
static void enter(struct muc_room *r) { r->busy++; }

static void sweep(struct muc_room *r)
{
    static const int c333[] = {333};
    struct pres_opts po = {.unavailable = true, .codes = c333, .ncodes = 1};
    while (r->ngone) {
        r->ngone = 0;
        for (size_t i = r->nocc; i-- > 0;) {
            if (i >= r->nocc || !r->occ[i]->gone)
                continue;
            log_debug("muc %s: %s gone (noticed while busy)", r->jid, r->occ[i]->jid);
            leave(r, r->occ[i], &po, false);
        }
    }
}

static void done(struct muc_room *r)
{
    if (r->busy == 1 && r->ngone)
        sweep(r); /* still busy: goners found meanwhile are marked, and looped on */
    r->busy--;
}

bool muc_room_busy(const struct muc_room *r) { return r->busy > 0; }

static void room_presence(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                          const struct jid *to, const struct muc_who *who, int64_t nick_owner)
{
    char full[JID_MAX + 1];
    if (jid_format(from, full, sizeof full))
        return;
    struct occ *o = find_jid(r, full);
    enum stanza_type t = stanza_type(st);
    if (!o) {
        if (t == STANZA_TYPE_NONE)
            join(r, st, from, to, who, nick_owner);
        return;
    }
    if (t == STANZA_TYPE_UNAVAILABLE) {
        struct pres_opts po = {.unavailable = true};
        leave(r, o, &po, true);
        return;
    }
    if (t == STANZA_TYPE_ERROR) {
        static const int c333[] = {333};
        struct pres_opts po = {.unavailable = true, .codes = c333, .ncodes = 1};
        leave(r, o, &po, false);
        return;
    }
    if (t != STANZA_TYPE_NONE)
        return;
    if (!to->resource) {
        muc_send_error(r->env, st, STANZA_COND_JID_MALFORMED, NULL);
        return;
    }
    if (strcmp(to->resource, o->nick) != 0) {
        if (!rate_ok(r, o)) {
            send_error_wait(r->env, st, STANZA_COND_POLICY_VIOLATION, "Too many changes; slow down");
            return;
        }
        change_nick(r, o, st, to, nick_owner);
        return;
    }
    struct xml_node *p = presence_payload(st);
    if (!p)
        return;
    xml_node_free(o->pres);
    o->pres = p;
    /* status changes cost a broadcast each: they share the message budget,
     * and one over it is kept but not sent (the next one carries it) */
    if (!rate_ok(r, o))
        return;
    struct pres_opts plain = {0};
    broadcast_presence(r, o, &plain, true);
}

/* o's session or server went away: 333 to the others, or a mark while busy. */
static void gone(struct muc_room *r, struct occ *o)
{
    if (o->gone)
        return;
    o->gone = true;
    r->ngone++;
    if (r->busy)
        return;
    enter(r);
    done(r);
}

void muc_room_gone(struct muc_room *r, const struct jid *full)
{
    char s[JID_MAX + 1];
    struct occ *o;
    if (jid_format(full, s, sizeof s) || !(o = find_jid(r, s)))
        return;
    gone(r, o);
}

void muc_room_domain_gone(struct muc_room *r, const char *domain)
{
    for (size_t i = 0; i < r->nocc; i++) {
        const char *at = strchr(r->occ[i]->bare, '@');
        const char *d = at ? at + 1 : r->occ[i]->bare;
        if (strcmp(d, domain) == 0 && !r->occ[i]->gone) {
            r->occ[i]->gone = true;
            r->ngone++;
        }
    }
    if (r->ngone && !r->busy) {
        enter(r);
        done(r);
    }
}

bool muc_room_is_occupant(const struct muc_room *r, const struct jid *full)
{
    char s[JID_MAX + 1];
    return !jid_format(full, s, sizeof s) && find_jid(r, s);
}

bool muc_room_admits(const struct muc_room *r, const struct muc_who *who)
{
    const struct muc_policy *p = r->p;
    if (!p->members_only)
        return true;
    if (who->guest || !who->user_id) /* guests and federated users */
        return false;
    if (who->user_id == p->owner_id || who->site_admin ||
        user_in(p->mods, p->nmods, who->user_id) || user_in(p->admins, p->nadmins, who->user_id))
        return true;
    for (size_t i = 0; i < p->ninvited; i++)
        if (p->invited[i] == who->user_id)
            return true;
    return false;
}

int muc_room_read_access(const struct muc_room *r, const struct jid *full,
                         const struct muc_who *who)
{
    char bare[JID_MAX + 1];
    if (jid_format_bare(full, bare, sizeof bare))
        return STANZA_COND_JID_MALFORMED;
    if (policy_aff(r, who, bare) == MUC_AFF_OUTCAST)
        return STANZA_COND_FORBIDDEN;
    if (!muc_room_admits(r, who))
        return STANZA_COND_REGISTRATION_REQUIRED;
    return 0;
}

bool muc_room_may_read(const struct muc_room *r, const struct jid *full, const struct muc_who *who)
{
    return muc_room_read_access(r, full, who) == 0;
}

/* ---- messages --------------------------------------------------------- */


static bool word_char(unsigned char c)
{
    return c >= 0x80 || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
}

/* A banned word appears as a whole word, ignoring ASCII case. */
static const char *banned_word(const struct muc_policy *p, const char *body)
{
    for (size_t i = 0; i < p->nwords; i++) {
        const char *w = p->words[i];
        size_t wl = strlen(w);
        if (!wl)
            continue;
        for (const char *s = body; *s; s++) {
            if (strncasecmp(s, w, wl) != 0)
                continue;
            bool start = s == body || !word_char((unsigned char)s[-1]) || !word_char((unsigned char)w[0]);
            bool end = !s[wl] || !word_char((unsigned char)s[wl]) || !word_char((unsigned char)w[wl - 1]);
            if (start && end)
                return w;
        }
    }
    return NULL;
}

/* GCRA: at most burst at once, then one per interval. */
static bool rate_ok(struct muc_room *r, struct occ *o)
{
    if (o->role == MUC_ROLE_MODERATOR)
        return true;
    int64_t now = r->env->now_ms(r->env->ud);
    int64_t iv = r->env->interval_ms, burst = r->env->burst > 0 ? r->env->burst : 1;
    if (r->p->slow_mode_s > 0) {
        int64_t slow = (int64_t)r->p->slow_mode_s * 1000;
        if (slow > iv)
            iv = slow;
        burst = 1;
    }
    int64_t tat = o->tat_ms > now ? o->tat_ms : now;
    if (tat - now > (burst - 1) * iv)
        return false;
    o->tat_ms = tat + iv;
    return true;
}

static struct hist *hist_find(struct muc_room *r, const char *sid)
{
    size_t hmax = r->env->history_max ? r->env->history_max : 1;
    for (size_t i = r->hlen; i-- > 0;) {
        struct hist *e = &r->hist[(r->hhead + i) % hmax];
        const struct xml_node *s = xml_child(e->st, "stanza-id", MUC_NS_SID);
        const char *v = s ? xml_attr_get(s, "id") : NULL;
        if (v && strcmp(v, sid) == 0)
            return e;
    }
    return NULL;
}

static void hist_add(struct muc_room *r, struct xml_node *st, int64_t ts)
{
    size_t hmax = r->env->history_max;
    if (!hmax) {
        xml_node_free(st);
        return;
    }
    if (r->hlen == hmax) {
        xml_node_free(r->hist[r->hhead].st);
        r->hist[r->hhead] = (struct hist){st, ts};
        r->hhead = (r->hhead + 1) % hmax;
    } else {
        r->hist[(r->hhead + r->hlen++) % hmax] = (struct hist){st, ts};
    }
}

void muc_room_history_push(struct muc_room *r, struct xml_node *st, int64_t ts_ms)
{
    hist_add(r, st, ts_ms);
}

static const char *occupant_id_of(const struct xml_node *m)
{
    const struct xml_node *o = xml_child(m, "occupant-id", MUC_NS_OCCUPANT_ID);
    return o ? xml_attr_get(o, "id") : NULL;
}

/* Replace a history entry's content with its tombstone (keeps ids). */
static void tombstone(struct hist *e, const struct xml_node *retracted)
{
    struct xml_node *c = e->st->first;
    while (c) {
        struct xml_node *next = c->next;
        bool keep = c->type == XML_NODE_ELEMENT &&
                    (strcmp(c->ns, MUC_NS_SID) == 0 || strcmp(c->ns, MUC_NS_OCCUPANT_ID) == 0);
        if (!keep)
            xml_node_free(c);
        c = next;
    }
    struct xml_node *k = xml_node_copy(retracted);
    if (k)
        xml_node_append(e->st, k);
}

static void broadcast(struct muc_room *r, const struct xml_node *m)
{
    for (size_t i = 0; i < r->nocc; i++)
        send_to(r, m, r->occ[i]);
}

/* A client may not forge the room's ids (or a delay) at the top level. */
static void strip_forged(struct xml_node *m)
{
    xml_attr_remove(m, "to");
    for (struct xml_node *c = m->first, *next; c; c = next) {
        next = c->next;
        if (c->type == XML_NODE_ELEMENT &&
            ((strcmp(c->name, "stanza-id") == 0 && strcmp(c->ns, MUC_NS_SID) == 0) ||
             strcmp(c->ns, MUC_NS_OCCUPANT_ID) == 0 || strcmp(c->ns, MUC_NS_DELAY) == 0))
            xml_node_free(c);
    }
}

/* Stamp a message as the room's: from, stanza-id, occupant-id. */
static int stamp_message(struct muc_room *r, struct xml_node *m, const char *from,
                         const char *oid, char sid[STANZA_ID_SIZE])
{
    strip_forged(m);
    if (stanza_id_new(sid) || xml_attr_set(m, "from", from) ||
        xml_attr_set(m, "type", "groupchat"))
        return -ENOMEM;
    struct xml_node *s = xml_element_add(m, "stanza-id", MUC_NS_SID);
    if (!s || xml_attr_set(s, "id", sid) || xml_attr_set(s, "by", r->jid))
        return -ENOMEM;
    if (oid) {
        struct xml_node *o = xml_element_add(m, "occupant-id", MUC_NS_OCCUPANT_ID);
        if (!o || xml_attr_set(o, "id", oid))
            return -ENOMEM;
    }
    return 0;
}

static void archive(struct muc_room *r, struct occ *o, struct xml_node *m, const char *sid,
                    int64_t now)
{
    if (!r->env->archive)
        return;
    const struct xml_node *oidn = xml_child(m, "origin-id", MUC_NS_SID);
    struct muc_archived a = {
        .channel_id = r->p->channel_id,
        .stanza_id = sid,
        .origin_id = oidn ? xml_attr_get(oidn, "id") : xml_attr_get(m, "id"),
        .ts_ms = now,
        .nick = o->nick,
        .occupant_id = o->oid,
        .from_jid = o->bare,
        .user_id = o->user_id,
        .body = xml_child_text(m, "body", NULL),
        .st = m,
    };
    r->env->archive(r->env->ud, &a);
}

/* The room's rules for what an occupant sends: length, size, banned
 * words (moderators are trusted with the last). Refuses with an error. */
static bool message_ok(struct muc_room *r, const struct occ *o, const struct xml_node *st,
                       const char *body)
{
    const struct muc_env *env = r->env;
    if (body && env->max_body_chars && utf8_chars(body) > env->max_body_chars) {
        muc_send_error(env, st, STANZA_COND_NOT_ACCEPTABLE, "The message is too long");
        return false;
    }
    if (tree_bytes(st) > MUC_MESSAGE_EXTRA + 4 * env->max_body_chars) {
        muc_send_error(env, st, STANZA_COND_NOT_ACCEPTABLE, "The message is too large");
        return false;
    }
    if (body && o->role != MUC_ROLE_MODERATOR && banned_word(r->p, body)) {
        log_info("muc %s: message from %s refused: banned word", r->jid, o->jid);
        muc_send_error(env, st, STANZA_COND_NOT_ACCEPTABLE,
                       "The message contains a word that is not allowed here");
        return false;
    }
    return true;
}

static void sanitize(struct muc_room *r, struct xml_node *n, int depth);

/* To one occupant by nick (every session of it): the room's rules apply as
 * to groupchat, and it carries the sender's occupant-id (XEP-0421). */
static void private_message(struct muc_room *r, struct occ *o, const struct xml_node *st,
                            const struct jid *to)
{
    enum stanza_type t = stanza_type(st);
    if (t == STANZA_TYPE_GROUPCHAT) {
        muc_send_error(r->env, st, STANZA_COND_BAD_REQUEST, NULL);
        return;
    }
    if (t == STANZA_TYPE_ERROR)
        return;
    struct occ *target = find_nick(r, to->resource);
    if (!target || strcmp(target->nick, to->resource) != 0) {
        muc_send_error(r->env, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
        return;
    }
    if (!message_ok(r, o, st, xml_child_text(st, "body", NULL)))
        return;
    if (!rate_ok(r, o)) {
        send_error_wait(r->env, st, STANZA_COND_POLICY_VIOLATION, "Too many messages; slow down");
        return;
    }
    char from[JID_MAX + 1];
    struct xml_node *m = xml_node_copy(st);
    if (m) {
        sanitize(r, m, 0);
        strip_forged(m);
    }
    struct xml_node *oid = m ? xml_element_add(m, "occupant-id", MUC_NS_OCCUPANT_ID) : NULL;
    if (!oid || xml_attr_set(oid, "id", o->oid) || nick_jid(r, o->nick, from, sizeof from) ||
        xml_attr_set(m, "from", from)) {
        xml_node_free(m);
        return;
    }
    if (!xml_child(m, "x", MUC_NS_USER))
        xml_element_add(m, "x", MUC_NS_USER);
    /* every session of the nick */
    for (struct occ *x = r->nb[target->nhash & (r->nbuckets - 1)]; x; x = x->nnext)
        if (x->nhash == target->nhash && strcmp(x->nick, target->nick) == 0)
            send_to(r, m, x);
    xml_node_free(m);
}

static void set_subject(struct muc_room *r, struct occ *o, const struct xml_node *st,
                        const char *subj)
{
    if (o->role != MUC_ROLE_MODERATOR) {
        muc_send_error(r->env, st, STANZA_COND_FORBIDDEN, "Only moderators change the subject");
        return;
    }
    /* the web page's rule for chat_subject: one line, 200 characters */
    if (!util_text_ok(subj, NULL) || utf8_chars(subj) > MUC_SUBJECT_MAX) {
        muc_send_error(r->env, st, STANZA_COND_NOT_ACCEPTABLE,
                       "The subject is one line of at most 200 characters");
        return;
    }
    char *s = subj[0] ? strdup(subj) : NULL;
    if (subj[0] && !s)
        return;
    free(r->p->subject);
    r->p->subject = s;
    if (r->env->subject)
        r->env->subject(r->env->ud, r->p->channel_id, s);
    if (!s)
        s = r->p->title ? r->p->title : "";
    char from[JID_MAX + 1];
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    if (m && !nick_jid(r, o->nick, from, sizeof from) && !xml_attr_set(m, "from", from) &&
        !xml_attr_set(m, "type", "groupchat") && xml_element_add_text_child(m, "subject", NULL, s))
        broadcast(r, m);
    xml_node_free(m);
}

/*
 * Whether an error an occupant's side returned means it is gone (Prosody's
 * list): its server or session is unreachable, so it is removed with 333
 * (XEP-0045 "kicked due to an error") rather than kept as a ghost that
 * every broadcast bounces off.
 */
static bool kickable_error(const struct xml_node *st)
{
    static const char *const kick[] = {
        "gone", "internal-server-error", "item-not-found", "jid-malformed",
        "recipient-unavailable", "redirect", "remote-server-not-found", "remote-server-timeout",
        "service-unavailable",
    };
    const struct xml_node *e = xml_child(st, "error", NULL);
    if (!e)
        return true; /* malformed error */
    for (const struct xml_node *c = e->first; c; c = c->next) {
        if (c->type != XML_NODE_ELEMENT || strcmp(c->ns, "urn:ietf:params:xml:ns:xmpp-stanzas") != 0 ||
            strcmp(c->name, "text") == 0)
            continue;
        for (size_t i = 0; i < sizeof kick / sizeof *kick; i++)
            if (strcmp(c->name, kick[i]) == 0)
                return true;
        return false;
    }
    return true;
}

/*
 * What an occupant may not put in a message the room stamps as its own:
 * the older XEP-0424/0425 forms riding on <apply-to xmlns='urn:xmpp:fasten:0'>
 * (only the room announces moderation; a self-retraction uses the :1
 * <retract/>, which is checked), any <moderated/>, and nested occupant-id
 * or stanza-id elements naming this room (they would pass for the room's
 * word in clients that look deeper than the top level).
 */
static void sanitize(struct muc_room *r, struct xml_node *n, int depth)
{
    for (struct xml_node *c = n->first, *next; c; c = next) {
        next = c->next;
        if (c->type != XML_NODE_ELEMENT)
            continue;
        const char *by = xml_attr_get(c, "by");
        bool drop = (strcmp(c->ns, MUC_NS_FASTEN) == 0 && strcmp(c->name, "apply-to") == 0 &&
                     (xml_child(c, "retract", MUC_NS_RETRACT0) || xml_child(c, "moderated", NULL) ||
                      xml_child(c, "moderate", NULL))) ||
                    strcmp(c->name, "moderated") == 0 ||
                    (depth > 0 && strcmp(c->ns, MUC_NS_OCCUPANT_ID) == 0) ||
                    (depth > 0 && strcmp(c->ns, MUC_NS_SID) == 0 && strcmp(c->name, "stanza-id") == 0 &&
                     (!by || strcasecmp(by, r->jid) == 0 ||
                      strncasecmp(by, r->jid, strlen(r->jid)) == 0));
        if (drop)
            xml_node_free(c);
        else if (depth < 8)
            sanitize(r, c, depth + 1);
    }
}

static void room_message(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                         const struct jid *to, bool checked)
{
    const struct muc_env *env = r->env;
    char full[JID_MAX + 1];
    if (jid_format(from, full, sizeof full))
        return;
    struct occ *o = find_jid(r, full);
    enum stanza_type t = stanza_type(st);
    if (t == STANZA_TYPE_ERROR) {
        /* a bounce of what we sent to an occupant: its session or server is gone */
        if (o && kickable_error(st)) {
            log_info("muc %s: %s removed: a message to it bounced", r->jid, full);
            gone(r, o);
        }
        return;
    }
    if (!o) {
        muc_send_error(env, st, STANZA_COND_NOT_ACCEPTABLE, "You are not in the room");
        return;
    }
    if (to->resource) {
        private_message(r, o, st, to);
        return;
    }
    if (t != STANZA_TYPE_GROUPCHAT)
        return; /* invitations, voice requests: not supported; dropped */
    const char *body = xml_child_text(st, "body", NULL);
    const char *subj = xml_child_text(st, "subject", NULL);
    if (!body && xml_child(st, "subject", NULL)) {
        set_subject(r, o, st, subj ? subj : "");
        return;
    }
    if (o->role == MUC_ROLE_VISITOR) {
        muc_send_error(env, st, STANZA_COND_FORBIDDEN, "Visitors may not speak in this room");
        return;
    }
    if (!message_ok(r, o, st, body))
        return;
    const struct xml_node *retract = xml_child(st, "retract", MUC_NS_RETRACT);
    const char *rid = retract ? xml_attr_get(retract, "id") : NULL;
    if (retract && !rid) {
        muc_send_error(env, st, STANZA_COND_BAD_REQUEST, "A retraction names its message");
        return;
    }
    struct hist *target = rid ? hist_find(r, rid) : NULL;
    if (target) {
        const char *author = occupant_id_of(target->st);
        if (!author || strcmp(author, o->oid) != 0) {
            muc_send_error(env, st, STANZA_COND_FORBIDDEN, "Only the author may retract");
            return;
        }
    } else if (rid && !checked) {
        /* older than the history in memory: the archive knows the author */
        if (!env->verify_retract ||
            env->verify_retract(env->ud, st, from, to, rid, o->oid, o->bare) < 0)
            muc_send_error(env, st, STANZA_COND_FORBIDDEN,
                           "That message cannot be retracted any more");
        return;
    }
    if (!rate_ok(r, o)) {
        send_error_wait(env, st, STANZA_COND_POLICY_VIOLATION, "Too many messages; slow down");
        return;
    }
    char nfrom[JID_MAX + 1], sid[STANZA_ID_SIZE];
    struct xml_node *m = xml_node_copy(st);
    if (m)
        sanitize(r, m, 0);
    if (!m || nick_jid(r, o->nick, nfrom, sizeof nfrom) || stamp_message(r, m, nfrom, o->oid, sid)) {
        xml_node_free(m);
        return;
    }
    int64_t now = env->now_ms(env->ud);
    bool keep = body || xml_child(st, "reactions", MUC_NS_REACTIONS) || rid;
    if (rid) {
        char stamp[32];
        fmt_stamp(now, stamp);
        struct xml_node *ts = xml_element_new("retracted", MUC_NS_RETRACT);
        if (ts && !xml_attr_set(ts, "stamp", stamp)) {
            if (target)
                tombstone(target, ts);
            if (env->retract)
                env->retract(env->ud, r->p->channel_id, rid, o->oid, o->bare, ts);
        }
        xml_node_free(ts);
    }
    broadcast(r, m);
    if (keep) {
        archive(r, o, m, sid, now);
        hist_add(r, m, now);
    } else {
        xml_node_free(m);
    }
}

/* ---- moderation (XEP-0425) -------------------------------------------- */

/*
 * checked: the archive was asked whether sid is a message of this room (one
 * older than the history in memory); it was, or this is the retry after it
 * said so (muc_room_retract_checked). A message unknown to both is
 * item-not-found, and nothing is announced.
 */
static void moderate(struct muc_room *r, struct occ *actor, const struct xml_node *st,
                     const char *sid, const char *reason, const struct jid *from,
                     const struct jid *to, bool checked)
{
    const struct muc_env *env = r->env;
    if (!actor || actor->role != MUC_ROLE_MODERATOR) {
        muc_send_error(env, st, STANZA_COND_FORBIDDEN, NULL);
        return;
    }
    if (!checked && !hist_find(r, sid) && env->verify_retract) {
        if (env->verify_retract(env->ud, st, from, to, sid, "", "") < 0)
            send_error_wait(env, st, STANZA_COND_RESOURCE_CONSTRAINT,
                            "The archive cannot be asked now; try again");
        return; /* or back through muc_room_retract_checked */
    }
    char by[JID_MAX + 1], stamp[32], msid[STANZA_ID_SIZE];
    if (nick_jid(r, actor->nick, by, sizeof by))
        return;
    int64_t now = env->now_ms(env->ud);
    fmt_stamp(now, stamp);
    /* the tombstone: <retracted><moderated/><reason/></retracted> */
    struct xml_node *ts = xml_element_new("retracted", MUC_NS_RETRACT);
    struct xml_node *md = ts ? xml_element_add(ts, "moderated", MUC_NS_MODERATE) : NULL;
    struct xml_node *mo = md ? xml_element_add(md, "occupant-id", MUC_NS_OCCUPANT_ID) : NULL;
    /* the announcement, in the :1 and the older :0 forms */
    struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
    struct xml_node *rt = m ? xml_element_add(m, "retract", MUC_NS_RETRACT) : NULL;
    struct xml_node *rm = rt ? xml_element_add(rt, "moderated", MUC_NS_MODERATE) : NULL;
    struct xml_node *ro = rm ? xml_element_add(rm, "occupant-id", MUC_NS_OCCUPANT_ID) : NULL;
    struct xml_node *ap = m ? xml_element_add(m, "apply-to", MUC_NS_FASTEN) : NULL;
    struct xml_node *am = ap ? xml_element_add(ap, "moderated", MUC_NS_MODERATE0) : NULL;
    bool ok = mo && ro && am && !xml_attr_set(ts, "stamp", stamp) && !xml_attr_set(md, "by", by) &&
              !xml_attr_set(mo, "id", actor->oid) && !xml_attr_set(rt, "id", sid) &&
              !xml_attr_set(rm, "by", by) && !xml_attr_set(ro, "id", actor->oid) &&
              !xml_attr_set(ap, "id", sid) && !xml_attr_set(am, "by", by) &&
              xml_element_add(am, "retract", MUC_NS_RETRACT0) &&
              (!reason || (xml_element_add_text_child(ts, "reason", NULL, reason) &&
                           xml_element_add_text_child(rt, "reason", NULL, reason) &&
                           xml_element_add_text_child(am, "reason", NULL, reason))) &&
              !stamp_message(r, m, r->jid, NULL, msid);
    if (ok) {
        struct hist *e = hist_find(r, sid);
        if (e)
            tombstone(e, ts);
        if (env->retract)
            env->retract(env->ud, r->p->channel_id, sid, NULL, actor->bare, ts);
        broadcast(r, m);
        log_info("muc %s: %s (%s) retracted message %s", r->jid, actor->nick, actor->bare, sid);
        struct xml_node *res = xml_element_new("iq", XMPP_NS_CLIENT);
        const char *id = xml_attr_get(st, "id");
        if (res && !xml_attr_set(res, "type", "result") && !xml_attr_set(res, "from", r->jid) &&
            (!id || !xml_attr_set(res, "id", id)))
            send_to(r, res, actor);
        xml_node_free(res);
    } else {
        muc_send_error(env, st, STANZA_COND_INTERNAL_SERVER_ERROR, NULL);
    }
    xml_node_free(ts);
    xml_node_free(m);
}

/* ---- admin (roles and affiliations) ----------------------------------- */

static void iq_result(struct muc_room *r, const struct xml_node *st, struct xml_node *payload,
                      const char *from)
{
    struct xml_node *res = xml_element_new("iq", XMPP_NS_CLIENT);
    const char *id = xml_attr_get(st, "id"), *to = xml_attr_get(st, "from");
    if (res && to && !xml_attr_set(res, "type", "result") &&
        !xml_attr_set(res, "from", from ? from : r->jid) && (!id || !xml_attr_set(res, "id", id))) {
        if (payload) {
            xml_node_append(res, payload);
            payload = NULL;
        }
        r->env->send(r->env->ud, res, to);
    }
    xml_node_free(payload);
    xml_node_free(res);
}

static bool is_account_jid(const struct muc_room *r, const char *bare, const char *name)
{
    const char *at = strchr(bare, '@');
    return at && name && (size_t)(at - bare) == strlen(name) &&
           strncasecmp(bare, name, (size_t)(at - bare)) == 0 &&
           strcmp(at + 1, r->env->user_domain) == 0;
}

/* The platform affiliation of a bare JID that may not be present. */
static enum muc_aff bare_aff(const struct muc_room *r, const char *bare)
{
    for (size_t i = 0; i < r->nocc; i++)
        if (strcmp(r->occ[i]->bare, bare) == 0 && r->occ[i]->aff != MUC_AFF_NONE)
            return r->occ[i]->aff;
    if (is_account_jid(r, bare, r->p->owner_name))
        return MUC_AFF_OWNER;
    for (size_t i = 0; i < r->p->nmods; i++)
        if (is_account_jid(r, bare, r->p->mods[i].name))
            return MUC_AFF_ADMIN;
    for (size_t i = 0; i < r->p->nadmins; i++)
        if (is_account_jid(r, bare, r->p->admins[i].name))
            return MUC_AFF_ADMIN;
    return MUC_AFF_NONE;
}

static int set_role(struct muc_room *r, struct occ *actor, const struct xml_node *item,
                    enum muc_role role)
{
    const char *nick = xml_attr_get(item, "nick");
    const char *reason = xml_child_text(item, "reason", NULL);
    struct occ *t = nick ? find_nick(r, nick) : NULL;
    if (!nick)
        return STANZA_COND_BAD_REQUEST;
    if (!t)
        return STANZA_COND_ITEM_NOT_FOUND;
    bool actor_high = actor->aff == MUC_AFF_OWNER || actor->aff == MUC_AFF_ADMIN;
    if (role == MUC_ROLE_MODERATOR && !actor_high)
        return STANZA_COND_FORBIDDEN;
    if (strcmp(t->bare, actor->bare) == 0 && role == MUC_ROLE_NONE)
        return STANZA_COND_NOT_ALLOWED;
    /* only an owner takes a role from an admin; nobody from an owner */
    if (t != actor && (t->aff == MUC_AFF_OWNER || t->aff == MUC_AFF_ADMIN) &&
        role != MUC_ROLE_MODERATOR && !(actor->aff == MUC_AFF_OWNER && t->aff == MUC_AFF_ADMIN))
        return STANZA_COND_NOT_ALLOWED;
    if (t->role == MUC_ROLE_MODERATOR && role != MUC_ROLE_MODERATOR && !actor_high)
        return STANZA_COND_NOT_ALLOWED;
    if (role == MUC_ROLE_NONE) {
        static const int c307[] = {307};
        struct pres_opts po = {.unavailable = true, .codes = c307, .ncodes = 1,
                               .reason = reason, .actor = actor->nick};
        log_info("muc %s: %s kicked %s (%s)", r->jid, actor->nick, t->nick, t->jid);
        do /* every session of the nick */
            leave(r, t, &po, true);
        while ((t = find_nick(r, nick)));
        return 0;
    }
    struct pres_opts po = {.reason = reason, .actor = actor->nick};
    for (size_t i = 0; i < r->nocc; i++) {
        struct occ *x = r->occ[i];
        if (x->role == role || strcasecmp(x->nick, t->nick) != 0)
            continue;
        x->role = role;
        if (role == MUC_ROLE_MODERATOR)
            x->announced = true;
        broadcast_presence(r, x, &po, true);
    }
    return 0;
}

static int ban(struct muc_room *r, struct occ *actor, const char *bare, const char *reason)
{
    if (bare_aff(r, bare) == MUC_AFF_OWNER || bare_aff(r, bare) == MUC_AFF_ADMIN)
        return STANZA_COND_NOT_ALLOWED;
    struct muc_ban b = {.jid = (char *)bare, .reason = (char *)reason, .by = actor->bare};
    for (size_t i = 0; i < r->nocc; i++) {
        struct occ *o = r->occ[i];
        if (strcmp(o->bare, bare) != 0)
            continue;
        b.nick = o->nick;
        if (o->user_id)
            b.user_id = o->user_id;
        if (o->guest && o->ip)
            b.ip = o->ip;
    }
    if (muc_policy_add_ban(r->p, &b))
        return STANZA_COND_RESOURCE_CONSTRAINT;
    if (r->env->ban_add)
        r->env->ban_add(r->env->ud, r->p->channel_id, &b);
    log_info("muc %s: %s banned %s%s%s", r->jid, actor->bare, bare, b.ip ? " ip " : "",
             b.ip ? b.ip : "");
    /* everyone it now matches leaves (301), the guest's IP included */
    static const int c301[] = {301};
    struct pres_opts po = {.unavailable = true, .codes = c301, .ncodes = 1, .reason = reason,
                           .actor = actor->nick};
    for (size_t i = r->nocc; i-- > 0;) {
        if (i >= r->nocc)
            continue;
        struct occ *o = r->occ[i];
        struct muc_who who = {.guest = o->guest, .user_id = o->user_id, .ip = o->ip,
                              .site_admin = o->site_admin};
        if (o->aff != MUC_AFF_OWNER && o->aff != MUC_AFF_ADMIN && find_ban(r, &who, o->bare)) {
            o->aff = MUC_AFF_OUTCAST;
            leave(r, o, &po, true);
        }
    }
    return 0;
}

static int unban(struct muc_room *r, const char *bare)
{
    bool found = false;
    for (size_t i = 0; i < r->p->nbans;) {
        struct muc_ban *b = &r->p->bans[i];
        if (!b->site && b->jid && strcmp(b->jid, bare) == 0) {
            ban_clear(b);
            r->p->bans[i] = r->p->bans[--r->p->nbans];
            found = true;
        } else {
            i++;
        }
    }
    if (found && r->env->ban_remove)
        r->env->ban_remove(r->env->ud, r->p->channel_id, bare);
    return 0;
}

static int set_aff(struct muc_room *r, struct occ *actor, const struct xml_node *item,
                   enum muc_aff aff)
{
    if (actor->aff != MUC_AFF_OWNER && actor->aff != MUC_AFF_ADMIN)
        return STANZA_COND_FORBIDDEN;
    const char *j = xml_attr_get(item, "jid"), *nick = xml_attr_get(item, "nick");
    char bare[JID_MAX + 1];
    if (j) {
        struct jid pj;
        if (jid_parse(&pj, j))
            return STANZA_COND_JID_MALFORMED;
        int rc = jid_format_bare(&pj, bare, sizeof bare);
        jid_free(&pj);
        if (rc)
            return STANZA_COND_JID_MALFORMED;
    } else if (nick) {
        struct occ *t = find_nick(r, nick);
        if (!t)
            return STANZA_COND_ITEM_NOT_FOUND;
        snprintf(bare, sizeof bare, "%s", t->bare);
    } else {
        return STANZA_COND_BAD_REQUEST;
    }
    switch (aff) {
    case MUC_AFF_OUTCAST:
        return ban(r, actor, bare, xml_child_text(item, "reason", NULL));
    case MUC_AFF_NONE:
    case MUC_AFF_MEMBER:
        return unban(r, bare);
    default: /* owner and admins come from the channel page */
        return STANZA_COND_NOT_ALLOWED;
    }
}

static struct xml_node *list_item(struct xml_node *q, const char *jid, const char *nick,
                                  enum muc_aff aff, int role, const char *reason)
{
    struct xml_node *it = xml_element_add(q, "item", NULL);
    if (!it || xml_attr_set(it, "affiliation", muc_aff_name(aff)) ||
        (role >= 0 && xml_attr_set(it, "role", muc_role_name(role))) ||
        (jid && xml_attr_set(it, "jid", jid)) || (nick && xml_attr_set(it, "nick", nick)) ||
        (reason && !xml_element_add_text_child(it, "reason", NULL, reason)))
        return NULL;
    return it;
}

static void admin_get(struct muc_room *r, struct occ *actor, const struct xml_node *st,
                      const struct xml_node *item)
{
    const char *as = xml_attr_get(item, "affiliation"), *rs = xml_attr_get(item, "role");
    int aff = as ? aff_parse(as) : -1, role = rs ? role_parse(rs) : -1;
    if (aff < 0 && role < 0) {
        muc_send_error(r->env, st, STANZA_COND_BAD_REQUEST, NULL);
        return;
    }
    if (actor->role != MUC_ROLE_MODERATOR) {
        muc_send_error(r->env, st, STANZA_COND_FORBIDDEN, NULL);
        return;
    }
    struct xml_node *q = xml_element_new("query", MUC_NS_ADMIN);
    if (!q)
        return;
    char j[JID_MAX + 1];
    if (role >= 0) {
        for (size_t i = 0; i < r->nocc; i++)
            if ((int)r->occ[i]->role == role)
                list_item(q, r->occ[i]->jid, r->occ[i]->nick, r->occ[i]->aff, role, NULL);
    } else if (aff == MUC_AFF_OUTCAST) {
        for (size_t i = 0; i < r->p->nbans; i++) {
            const struct muc_ban *b = &r->p->bans[i];
            if (b->jid)
                list_item(q, b->jid, NULL, MUC_AFF_OUTCAST, -1, b->reason);
        }
    } else if (aff == MUC_AFF_OWNER) {
        snprintf(j, sizeof j, "%s@%s", r->p->owner_name ? r->p->owner_name : "",
                 r->env->user_domain);
        list_item(q, j, NULL, MUC_AFF_OWNER, -1, NULL);
    } else if (aff == MUC_AFF_ADMIN) {
        for (size_t i = 0; i < r->p->nmods; i++) {
            snprintf(j, sizeof j, "%s@%s", r->p->mods[i].name, r->env->user_domain);
            list_item(q, j, NULL, MUC_AFF_ADMIN, -1, NULL);
        }
        for (size_t i = 0; i < r->p->nadmins; i++) {
            snprintf(j, sizeof j, "%s@%s", r->p->admins[i].name, r->env->user_domain);
            list_item(q, j, NULL, MUC_AFF_ADMIN, -1, NULL);
        }
    } else if (aff == MUC_AFF_MEMBER) {
        for (size_t i = 0; i < r->nocc; i++)
            if (r->occ[i]->aff == MUC_AFF_MEMBER)
                list_item(q, r->occ[i]->bare, r->occ[i]->nick, MUC_AFF_MEMBER, -1, NULL);
    }
    iq_result(r, st, q, NULL);
}

static void admin_iq(struct muc_room *r, struct occ *actor, const struct xml_node *st,
                     const struct xml_node *q)
{
    if (!actor) {
        muc_send_error(r->env, st, STANZA_COND_FORBIDDEN, "You are not in the room");
        return;
    }
    const struct xml_node *item = xml_child(q, "item", MUC_NS_ADMIN);
    if (!item) {
        muc_send_error(r->env, st, STANZA_COND_BAD_REQUEST, NULL);
        return;
    }
    if (stanza_type(st) == STANZA_TYPE_GET) {
        admin_get(r, actor, st, item);
        return;
    }
    if (actor->role != MUC_ROLE_MODERATOR) {
        muc_send_error(r->env, st, STANZA_COND_FORBIDDEN, NULL);
        return;
    }
    for (; item; item = xml_child_next(item, "item", MUC_NS_ADMIN)) {
        const char *rs = xml_attr_get(item, "role"), *as = xml_attr_get(item, "affiliation");
        int cond;
        if (rs) {
            int role = role_parse(rs);
            cond = role < 0 ? STANZA_COND_BAD_REQUEST : set_role(r, actor, item, role);
        } else if (as) {
            int aff = aff_parse(as);
            cond = aff < 0 ? STANZA_COND_BAD_REQUEST : set_aff(r, actor, item, aff);
        } else {
            cond = STANZA_COND_BAD_REQUEST;
        }
        if (cond) {
            muc_send_error(r->env, st, cond, NULL);
            return;
        }
    }
    iq_result(r, st, NULL, NULL);
}

/* ---- owner: the configuration form, read-only here ------------------- */

static void form_field(struct xml_node *x, const char *var, const char *type, const char *label,
                       const char *value)
{
    struct xml_node *f = xml_element_add(x, "field", NULL);
    if (!f || xml_attr_set(f, "var", var) || (type && xml_attr_set(f, "type", type)) ||
        (label && xml_attr_set(f, "label", label)))
        return;
    xml_element_add_text_child(f, "value", NULL, value ? value : "");
}

static void owner_iq(struct muc_room *r, struct occ *actor, const struct xml_node *st)
{
    /* XEP-0045 10.2: the configuration is the owner's (admins moderate) */
    if (!actor || actor->aff != MUC_AFF_OWNER) {
        muc_send_error(r->env, st, STANZA_COND_FORBIDDEN, "Only the room owner configures it");
        return;
    }
    if (stanza_type(st) == STANZA_TYPE_SET) {
        muc_send_error(r->env, st, STANZA_COND_NOT_ALLOWED,
                       "Room settings are changed on the channel page");
        return;
    }
    struct xml_node *q = xml_element_new("query", MUC_NS_OWNER);
    struct xml_node *x = q ? xml_element_add(q, "x", MUC_NS_DATA) : NULL;
    if (!x || xml_attr_set(x, "type", "form")) {
        xml_node_free(q);
        return;
    }
    char n[32], slow[16];
    snprintf(n, sizeof n, "%zu", r->env->max_occupants);
    snprintf(slow, sizeof slow, "%d", r->p->slow_mode_s);
    xml_element_add_text_child(x, "title", NULL, "Room configuration (change it on the channel page)");
    form_field(x, "FORM_TYPE", "hidden", NULL, "http://jabber.org/protocol/muc#roomconfig");
    form_field(x, "muc#roomconfig_roomname", "text-single", "Name", r->p->title);
    form_field(x, "muc#roomconfig_roomdesc", "text-single", "Description", r->p->description);
    form_field(x, "muc#roomconfig_persistentroom", "boolean", "Persistent", "1");
    form_field(x, "muc#roomconfig_publicroom", "boolean", "Public", r->p->members_only ? "0" : "1");
    form_field(x, "muc#roomconfig_membersonly", "boolean", "Members only (protected channel)",
               r->p->members_only ? "1" : "0");
    form_field(x, "muc#roomconfig_moderatedroom", "boolean", "Guests are visitors",
               r->p->guests_may_talk ? "0" : "1");
    form_field(x, "muc#roomconfig_whois", "list-single", "Real JIDs visible to", "moderators");
    form_field(x, "muc#roomconfig_maxusers", "text-single", "Maximum occupants", n);
    form_field(x, "muc#roomconfig_changesubject", "boolean", "Occupants change the subject", "0");
    form_field(x, "muc#roomconfig_enablelogging", "boolean", "Archived", "1");
    form_field(x, "muc#roomconfig_enablearchiving", "boolean", "Archived (MAM)", "1");
    form_field(x, "urn:hearth:chat#slow_mode", "text-single", "Slow mode (seconds)", slow);
    iq_result(r, st, q, NULL);
}

/* ---- disco ------------------------------------------------------------ */

static void feature(struct xml_node *q, const char *var)
{
    struct xml_node *f = xml_element_add(q, "feature", NULL);
    if (f)
        xml_attr_set(f, "var", var);
}

static void disco_info(struct muc_room *r, const struct xml_node *st, bool insider)
{
    /* a protected channel tells outsiders that it exists and is closed,
     * not its title, description, subject or head count */
    bool closed = r->p->members_only && !insider;
    struct xml_node *q = xml_element_new("query", MUC_NS_DISCO_INFO);
    struct xml_node *id = q ? xml_element_add(q, "identity", NULL) : NULL;
    if (!id || xml_attr_set(id, "category", "conference") || xml_attr_set(id, "type", "text") ||
        xml_attr_set(id, "name", closed || !r->p->title ? r->p->slug : r->p->title)) {
        xml_node_free(q);
        return;
    }
    feature(q, r->p->members_only ? "muc_membersonly" : "muc_open");
    feature(q, r->p->members_only ? "muc_hidden" : "muc_public");
    static const char *const feats[] = {
        MUC_NS, "muc_persistent", "muc_semianonymous",
        "muc_unsecured", MUC_NS_MAM, MUC_NS_SID, MUC_NS_OCCUPANT_ID, MUC_NS_MODERATE,
        MUC_NS_MODERATE0, MUC_NS_DISCO_INFO, MUC_NS_PING, "http://jabber.org/protocol/muc#stable_id",
        "http://jabber.org/protocol/muc#self-ping-optimization",
    };
    for (size_t i = 0; i < sizeof feats / sizeof *feats; i++)
        feature(q, feats[i]);
    feature(q, r->p->guests_may_talk ? "muc_unmoderated" : "muc_moderated");
    struct xml_node *x = closed ? NULL : xml_element_add(q, "x", MUC_NS_DATA);
    if (x && !xml_attr_set(x, "type", "result")) {
        char n[32];
        snprintf(n, sizeof n, "%zu", r->nocc);
        form_field(x, "FORM_TYPE", "hidden", NULL, "http://jabber.org/protocol/muc#roominfo");
        form_field(x, "muc#roominfo_description", NULL, NULL, r->p->description);
        form_field(x, "muc#roominfo_subject", NULL, NULL,
                   r->p->subject ? r->p->subject : r->p->title);
        form_field(x, "muc#roominfo_occupants", NULL, NULL, n);
        form_field(x, "muc#roomconfig_roomname", NULL, NULL, r->p->title);
    }
    iq_result(r, st, q, NULL);
}

/* An XEP-0425 request, in the :1 form or the older :0 one: false when q is
 * neither. */
static bool moderation_request(struct muc_room *r, struct occ *o, const struct xml_node *st,
                               const struct xml_node *q, const struct jid *from,
                               const struct jid *to, bool checked)
{
    const char *id = xml_attr_get(q, "id");
    const struct xml_node *mm = NULL;
    if (!id)
        return false;
    if (strcmp(q->name, "moderate") == 0 && strcmp(q->ns, MUC_NS_MODERATE) == 0)
        mm = q;
    else if (strcmp(q->name, "apply-to") == 0 && strcmp(q->ns, MUC_NS_FASTEN) == 0)
        mm = xml_child(q, "moderate", MUC_NS_MODERATE0);
    if (!mm)
        return false;
    moderate(r, o, st, id, xml_child_text(mm, "reason", NULL), from, to, checked);
    return true;
}

static void room_iq(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                    const struct jid *to)
{
    enum stanza_type t = stanza_type(st);
    if (t == STANZA_TYPE_RESULT || t == STANZA_TYPE_ERROR)
        return;
    const struct xml_node *q = xml_first_element(st);
    if ((t != STANZA_TYPE_GET && t != STANZA_TYPE_SET) || !q) {
        muc_send_error(r->env, st, STANZA_COND_BAD_REQUEST, NULL);
        return;
    }
    char full[JID_MAX + 1];
    if (jid_format(from, full, sizeof full))
        return;
    struct occ *o = find_jid(r, full);
    if (to->resource) {
        /* XEP-0410: a client asks whether it is still joined */
        if (t == STANZA_TYPE_GET && strcmp(q->name, "ping") == 0 && strcmp(q->ns, MUC_NS_PING) == 0) {
            struct occ *target = find_nick(r, to->resource);
            if (!o)
                muc_send_error(r->env, st, STANZA_COND_NOT_ACCEPTABLE, "You are not in the room");
            else if (!target)
                muc_send_error(r->env, st, STANZA_COND_ITEM_NOT_FOUND, NULL);
            else {
                char nj[JID_MAX + 1];
                if (!nick_jid(r, to->resource, nj, sizeof nj))
                    iq_result(r, st, NULL, nj);
            }
            return;
        }
        muc_send_error(r->env, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    /* iqs cost work (lists, forms, moderation): an occupant's share the
     * message budget; pings (XEP-0410 self-ping, above, and below) do not */
    bool ping = t == STANZA_TYPE_GET && strcmp(q->ns, MUC_NS_PING) == 0;
    if (o && !ping && !rate_ok(r, o)) {
        send_error_wait(r->env, st, STANZA_COND_POLICY_VIOLATION, "Too many requests; slow down");
        return;
    }
    if (strcmp(q->ns, MUC_NS_ADMIN) == 0) {
        admin_iq(r, o, st, q);
    } else if (strcmp(q->ns, MUC_NS_OWNER) == 0) {
        owner_iq(r, o, st);
    } else if (t == STANZA_TYPE_GET && strcmp(q->ns, MUC_NS_DISCO_INFO) == 0) {
        disco_info(r, st, o != NULL);
    } else if (t == STANZA_TYPE_GET && strcmp(q->ns, MUC_NS_DISCO_ITEMS) == 0) {
        iq_result(r, st, xml_element_new("query", MUC_NS_DISCO_ITEMS), NULL);
    } else if (t == STANZA_TYPE_GET && strcmp(q->ns, MUC_NS_PING) == 0) {
        iq_result(r, st, NULL, NULL);
    } else if (t == STANZA_TYPE_SET && moderation_request(r, o, st, q, from, to, false)) {
        /* done */
    } else {
        muc_send_error(r->env, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
    }
}

/* ---- policy changes and destruction ----------------------------------- */

static const char *subject_of(const struct muc_policy *p)
{
    return p->subject ? p->subject : p->title ? p->title : "";
}

static void room_set_policy(struct muc_room *r, struct muc_policy *p)
{
    bool new_subject = strcmp(subject_of(r->p), subject_of(p)) != 0;
    muc_policy_free(r->p);
    r->p = p;
    if (new_subject) {
        /* the page changed the subject (or the title standing for it) */
        struct xml_node *m = xml_element_new("message", XMPP_NS_CLIENT);
        if (m && !xml_attr_set(m, "from", r->jid) && !xml_attr_set(m, "type", "groupchat") &&
            xml_element_add_text_child(m, "subject", NULL, subject_of(p)))
            broadcast(r, m);
        xml_node_free(m);
    }
    static const int c301[] = {301};
    struct pres_opts ban_po = {.unavailable = true, .codes = c301, .ncodes = 1};
    for (size_t i = r->nocc; i-- > 0;) {
        if (i >= r->nocc)
            continue;
        struct occ *o = r->occ[i];
        struct muc_who who = {.guest = o->guest, .user_id = o->user_id, .ip = o->ip,
                              .site_admin = o->site_admin};
        enum muc_aff aff = policy_aff(r, &who, o->bare);
        if (aff == MUC_AFF_OUTCAST) {
            log_info("muc %s: %s removed: banned", r->jid, o->jid);
            o->aff = MUC_AFF_OUTCAST;
            leave(r, o, &ban_po, true);
            continue;
        }
        if (!muc_room_admits(r, &who)) {
            /* XEP-0045 9.9: removed because the room became members-only
             * (or the invitation was withdrawn): 321 */
            static const int c321[] = {321};
            struct pres_opts po = {.unavailable = true, .codes = c321, .ncodes = 1};
            log_info("muc %s: %s removed: the channel is protected and it is not invited", r->jid,
                     o->jid);
            leave(r, o, &po, true);
            continue;
        }
        enum muc_role role = default_role(r, aff, o->guest);
        if (aff == o->aff && (role == o->role || (o->role == MUC_ROLE_PARTICIPANT && !o->guest)))
            continue;
        o->aff = aff;
        o->role = role;
        if (role == MUC_ROLE_MODERATOR)
            o->announced = true;
        struct pres_opts plain = {0};
        broadcast_presence(r, o, &plain, true);
    }
}

static void room_destroy(struct muc_room *r, const char *alt_jid, const char *reason)
{
    while (r->nocc) {
        struct occ *o = r->occ[r->nocc - 1];
        occ_remove(r, o);
        struct xml_node *p = xml_element_new("presence", XMPP_NS_CLIENT);
        char from[JID_MAX + 1];
        struct xml_node *x = p ? xml_element_add(p, "x", MUC_NS_USER) : NULL;
        struct xml_node *it = x ? xml_element_add(x, "item", NULL) : NULL;
        struct xml_node *d = it ? xml_element_add(x, "destroy", NULL) : NULL;
        if (d && !nick_jid(r, o->nick, from, sizeof from) && !xml_attr_set(p, "from", from) &&
            !xml_attr_set(p, "type", "unavailable") && !xml_attr_set(it, "affiliation", "none") &&
            !xml_attr_set(it, "role", "none") && (!alt_jid || !xml_attr_set(d, "jid", alt_jid)) &&
            (!reason || xml_element_add_text_child(d, "reason", NULL, reason))) {
            struct xml_node *s = xml_element_add(x, "status", NULL);
            if (s && !xml_attr_set(s, "code", "110"))
                send_to(r, p, o);
        }
        xml_node_free(p);
        occ_free(o);
    }
}

static void room_shutdown(struct muc_room *r)
{
    static const int c332[] = {332};
    struct pres_opts po = {.unavailable = true, .codes = c332, .ncodes = 1};
    while (r->nocc) {
        struct occ *o = r->occ[r->nocc - 1];
        occ_remove(r, o);
        struct xml_node *p = build_presence(r, o, &po, true, true);
        if (p)
            send_to(r, p, o);
        xml_node_free(p);
        occ_free(o);
    }
}

/* ---- entry points: every one holds the room busy (see sweep) ----------- */

void muc_room_presence(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                       const struct jid *to, const struct muc_who *who, int64_t nick_owner)
{
    enter(r);
    room_presence(r, st, from, to, who, nick_owner);
    done(r);
}

void muc_room_message(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                      const struct jid *to)
{
    enter(r);
    room_message(r, st, from, to, false);
    done(r);
}

void muc_room_retract_checked(struct muc_room *r, const struct xml_node *st,
                              const struct jid *from, const struct jid *to, bool ok, bool found)
{
    enter(r);
    char full[JID_MAX + 1];
    if (strcmp(st->name, "iq") == 0) {
        /* a moderator's request: only whether the message exists matters */
        struct occ *o = jid_format(from, full, sizeof full) ? NULL : find_jid(r, full);
        if (found)
            moderation_request(r, o, st, xml_first_element(st), from, to, true);
        else
            muc_send_error(r->env, st, STANZA_COND_ITEM_NOT_FOUND, "No such message in this room");
    } else if (ok) {
        room_message(r, st, from, to, true);
    } else {
        muc_send_error(r->env, st, found ? STANZA_COND_FORBIDDEN : STANZA_COND_ITEM_NOT_FOUND,
                       found ? "Only the author may retract" : "No such message in this room");
    }
    done(r);
}

void muc_room_iq(struct muc_room *r, const struct xml_node *st, const struct jid *from,
                 const struct jid *to)
{
    enter(r);
    room_iq(r, st, from, to);
    done(r);
}

void muc_room_set_policy(struct muc_room *r, struct muc_policy *p)
{
    enter(r);
    room_set_policy(r, p);
    done(r);
}

void muc_room_destroy(struct muc_room *r, const char *alt_jid, const char *reason)
{
    enter(r);
    room_destroy(r, alt_jid, reason);
    done(r);
}

void muc_room_shutdown(struct muc_room *r)
{
    enter(r);
    room_shutdown(r);
    done(r);
}

size_t muc_stanza_bytes(const struct xml_node *n) { return tree_bytes(n); }
