/*
 * The MUC service on chat.DOMAIN (see muc.h): the glue between the router,
 * the database and the rooms (muc_room.c), plus the service's own disco.
 *
 * A stanza for SLUG@chat.DOMAIN goes into that room's FIFO. The first one
 * loads the room on a worker (channel policy and the last messages, from
 * mam.c); a join whose nick could be an account's name waits for a worker
 * lookup (cached for a minute). The FIFO keeps each room's stanzas in
 * order across those waits, so a join and the message right after it
 * cannot swap. A room with nobody in it and nothing queued is unloaded.
 *
 * Writes (archived messages, retractions, bans, subject, retention) go on
 * one ordered queue, applied in batches by a single worker job at a time:
 * a room at hundreds of messages a second costs one transaction per batch,
 * and the loop never waits. MAM queries run on workers of their own.
 *
 * Re-entrancy: a delivery may notice a dead stream and call the session-
 * gone watcher (on_gone) while a room is in the middle of a broadcast or a
 * join. The rooms mark such occupants and remove them when their call
 * returns (muc_room.c); here, a room held on the stack (sr->busy, or the
 * room itself busy) or any room during on_gone's walk is never freed, and
 * a stanza routed back into a room while it is being pumped waits in its
 * FIFO for the pump already running.
 *
 * Limits: see muc.h (unknown rooms, loading rooms, queue bytes, MAM).
 *
 * Fan-out: the room gives one template per broadcast and a recipient JID;
 * we copy the tree per recipient and route it. See the report for the
 * prebuilt-bytes fast path proposal (xmpp_route_shared).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "chat/mam.h"
#include "chat/muc.h"
#include "chat/muc_room.h"
#include "chat/stanza.h"
#include "chat/xmpp.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

#define PENDING_MAX 2000          /* stanzas queued per room while it loads or waits */
#define PENDING_BYTES (1 << 20)   /* and their bytes, per room */
#define PENDING_SENDER_BYTES (64 << 10) /* of which one sender's */
#define LOADING_MAX 64            /* rooms loading from the database at once */
#define UNKNOWN_MAX 1024          /* slugs remembered as no room... */
#define UNKNOWN_TTL_MS 60000      /* ...for a minute */
#define MAM_INFLIGHT_MAX 16       /* archive queries on workers, whole service */
#define MAM_BURST 10              /* archive queries per requester at once (paging)... */
#define MAM_INTERVAL_MS 1000      /* ...then one a second, one at a time */
#define MAM_RATE_MAX 1024         /* requesters tracked */
#define NICK_CACHE_MAX 4096
#define NICK_CACHE_TTL_MS 60000
#define OPS_MAX 100000            /* writes waiting for the database */
#define OPS_BATCH 500
#define EXPIRE_EVERY_MS (10 * 60 * 1000)

struct pending {
    struct pending *next;
    struct xml_node *st;
    struct jid from, to;
    size_t bytes;
};

struct sroom {
    struct sroom *next;
    struct muc_service *m;
    char *slug;
    struct muc_room *room; /* NULL while loading */
    struct pending *head, *tail;
    size_t nq, qbytes;
    bool loading, blocked, reloading, pumping;
    unsigned busy; /* functions holding sr on the stack: never freed then */
};

/* A slug that named no room (or a room with chat off), recently. */
struct unknown_slug {
    char slug[JID_PART_MAX + 1];
    int64_t at_ms;
};

/* Archive queries per requester (full JID): a window count, one at a time. */
struct mam_rate {
    char *jid;
    int64_t tat_ms; /* GCRA: theoretical arrival time */
    bool busy;
};

struct count_slot {
    long long channel_id;
    size_t n;
};

struct nick_entry {
    char *nick;
    int64_t user_id, at_ms;
};

/* The watcher and host callbacks outlive the service (the router has no
 * way to unregister them): they go through this, which is cleared. */
struct muc_handle {
    struct muc_service *m;
    struct xmpp_server *srv;
    struct muc_handle *next; /* retired handles stay reachable (leak checkers) */
};

static struct muc_handle *retired;

struct muc_service {
    struct xmpp_server *srv;
    const struct config *cfg;
    struct muc_env env;
    struct muc_handle *handle;
    struct sroom *rooms;
    pthread_mutex_t count_lock;
    struct count_slot *counts;
    size_t ncounts;
    struct nick_entry *nicks;
    size_t nnicks;
    struct muc_op *ops_head, *ops_tail, *ops_flight;
    size_t nops;
    bool writing;
    uv_timer_t *expire;
    unsigned inflight; /* worker jobs that will come back */
    bool closing;
    size_t nloading;   /* rooms loading now (LOADING_MAX) */
    struct unknown_slug *unknown; /* ring of UNKNOWN_MAX */
    size_t nunknown, unknown_next;
    struct mam_rate *mam_rates; /* MAM_RATE_MAX */
    size_t nmam_rates;
    unsigned mam_inflight;
    unsigned walking; /* on_gone going over the rooms: unloading waits */
};

static void pump(struct sroom *sr);
static void flush_ops(struct muc_service *m);

/* ---- env callbacks ------------------------------------------------------ */

/*
 * The room's JIDs are already normalised (they came out of jid_format), so
 * a local recipient is found by splitting the text, without the stringprep
 * that xmpp_route would run on every 'to' and 'from' (about 4 us each: most
 * of a 10,000-occupant fan-out). Others (remote users) take the router.
 */
static void env_send(void *ud, const struct xml_node *st, const char *to)
{
    struct muc_service *m = ud;
    struct xml_node *c = xml_node_copy(st);
    if (!c)
        return;
    if (xml_attr_set(c, "to", to) ||
        (!xml_attr_get(c, "from") && xml_attr_set(c, "from", xmpp_server_muc_domain(m->srv)))) {
        xml_node_free(c);
        return;
    }
    char text[JID_MAX + 1];
    size_t n = strlen(to);
    char *slash, *at;
    if (n < sizeof text) {
        memcpy(text, to, n + 1);
        if ((slash = strchr(text, '/'))) {
            *slash = '\0';
            if ((at = strchr(text, '@'))) {
                *at = '\0';
                struct jid j = {.local = text, .domain = at + 1, .resource = slash + 1};
                const struct xmpp_session_ops *ops;
                void *sess = xmpp_server_session_find(m->srv, &j, &ops);
                if (sess) {
                    ops->deliver(sess, c);
                    return;
                }
            }
        }
    }
    xmpp_route(m->srv, c);
}

static int64_t env_now(void *ud)
{
    struct timespec ts;
    (void)ud;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *sdup(const char *s) { return s ? strdup(s) : NULL; }

static void queue_op(struct muc_service *m, struct muc_op *op)
{
    if (m->nops >= OPS_MAX) {
        log_warn("muc: archive: %zu writes waiting for the database; dropping one (channel %lld)",
                 m->nops, (long long)op->channel_id);
        muc_op_free(op);
        return;
    }
    if (m->ops_tail)
        m->ops_tail->next = op;
    else
        m->ops_head = op;
    m->ops_tail = op;
    m->nops++;
    flush_ops(m);
}

static char *serialize(const struct xml_node *n)
{
    struct buf b;
    buf_init(&b, 0);
    if (xml_serialize(n, NULL, &b) || buf_cstr(&b)) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void env_archive(void *ud, const struct muc_archived *a)
{
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_MESSAGE;
    op->channel_id = a->channel_id;
    op->ts_ms = a->ts_ms;
    op->user_id = a->user_id;
    op->stanza_id = sdup(a->stanza_id), op->origin_id = sdup(a->origin_id);
    op->nick = sdup(a->nick), op->occupant_id = sdup(a->occupant_id);
    op->jid = sdup(a->from_jid), op->body = sdup(a->body), op->xml = serialize(a->st);
    if (!op->stanza_id || !op->nick || !op->occupant_id || !op->jid || !op->xml) {
        muc_op_free(op);
        return;
    }
    queue_op(ud, op);
}

static void env_retract(void *ud, int64_t channel_id, const char *sid, const char *author_oid,
                        const char *by, const struct xml_node *ts)
{
    struct muc_service *m = ud;
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_RETRACT;
    op->channel_id = channel_id;
    op->ts_ms = env_now(m);
    op->stanza_id = sdup(sid), op->occupant_id = sdup(author_oid), op->by = sdup(by);
    op->xml = serialize(ts);
    if (!op->stanza_id || !op->xml) {
        muc_op_free(op);
        return;
    }
    queue_op(m, op);
}

static void env_ban_add(void *ud, int64_t channel_id, const struct muc_ban *b)
{
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_BAN_ADD;
    op->channel_id = channel_id;
    op->user_id = b->user_id;
    op->jid = sdup(b->jid), op->ip = sdup(b->ip), op->nick = sdup(b->nick);
    op->reason = sdup(b->reason), op->by = sdup(b->by);
    queue_op(ud, op);
}

static void env_ban_remove(void *ud, int64_t channel_id, const char *jid)
{
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_BAN_REMOVE;
    op->channel_id = channel_id;
    op->jid = sdup(jid);
    queue_op(ud, op);
}

static void env_subject(void *ud, int64_t channel_id, const char *subject)
{
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_SUBJECT;
    op->channel_id = channel_id;
    op->body = sdup(subject);
    queue_op(ud, op);
}

static void set_count(struct muc_service *m, long long channel_id, size_t n)
{
    pthread_mutex_lock(&m->count_lock);
    size_t i;
    for (i = 0; i < m->ncounts; i++)
        if (m->counts[i].channel_id == channel_id)
            break;
    if (i == m->ncounts) {
        if (!n)
            goto out;
        /* reuse an empty slot first */
        for (i = 0; i < m->ncounts && m->counts[i].n; i++)
            ;
        if (i == m->ncounts) {
            struct count_slot *c = realloc(m->counts, (m->ncounts + 1) * sizeof *c);
            if (!c)
                goto out;
            m->counts = c;
            m->ncounts++;
        }
        m->counts[i].channel_id = channel_id;
    }
    m->counts[i].n = n;
out:
    pthread_mutex_unlock(&m->count_lock);
}

static void env_count(void *ud, int64_t channel_id, size_t n) { set_count(ud, channel_id, n); }

size_t muc_room_occupants(struct muc_service *m, long long channel_id)
{
    size_t n = 0;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->count_lock);
    for (size_t i = 0; i < m->ncounts; i++)
        if (m->counts[i].channel_id == channel_id)
            n = m->counts[i].n;
    pthread_mutex_unlock(&m->count_lock);
    return n;
}

/* ---- the write queue ---------------------------------------------------- */

struct ops_job {
    struct muc_service *m;
    struct muc_op *ops;
    int rc;
};

static void ops_work(void *arg)
{
    struct ops_job *j = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(j->m->srv));
    if (!db) {
        j->rc = -EIO;
        return;
    }
    j->rc = muc_store_apply(db, j->ops, xmpp_server_domain(j->m->srv));
    db_pool_release(xmpp_server_db(j->m->srv), db);
}

static void free_ops(struct muc_op *op)
{
    while (op) {
        struct muc_op *n = op->next;
        muc_op_free(op);
        op = n;
    }
}

static void service_release(struct muc_service *m);

static void ops_done(void *arg)
{
    struct ops_job *j = arg;
    struct muc_service *m = j->m;
    if (j->rc)
        log_warn("muc: archive: a batch of writes failed (%d)", j->rc);
    free_ops(j->ops);
    free(j);
    m->writing = false;
    m->inflight--;
    if (m->closing) {
        service_release(m);
        return;
    }
    flush_ops(m);
}

static void flush_ops(struct muc_service *m)
{
    if (m->writing || !m->ops_head || m->closing)
        return;
    struct ops_job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    /* take up to OPS_BATCH */
    struct muc_op *first = m->ops_head, *last = first;
    size_t n = 1;
    while (last->next && n < OPS_BATCH)
        last = last->next, n++;
    m->ops_head = last->next;
    if (!m->ops_head)
        m->ops_tail = NULL;
    last->next = NULL;
    m->nops -= n;
    j->m = m;
    j->ops = first;
    if (xmpp_server_work(m->srv, ops_work, ops_done, j)) {
        /* put them back; try again with the next write */
        last->next = m->ops_head;
        m->ops_head = first;
        if (!m->ops_tail)
            m->ops_tail = last;
        m->nops += n;
        free(j);
        return;
    }
    m->writing = true;
    m->inflight++;
}

static void on_expire(uv_timer_t *t)
{
    struct muc_service *m = t->data;
    uint64_t keep = m->cfg->xmpp.history_retention_ms;
    if (!keep)
        return;
    struct muc_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = MUC_OP_EXPIRE;
    op->ts_ms = env_now(m) - (int64_t)keep;
    queue_op(m, op);
}

/* ---- rooms: lookup, loading, unloading ----------------------------------- */

static struct sroom *find_room(struct muc_service *m, const char *slug)
{
    for (struct sroom *r = m->rooms; r; r = r->next)
        if (strcmp(r->slug, slug) == 0)
            return r;
    return NULL;
}

static struct sroom *find_room_by_channel(struct muc_service *m, long long channel_id)
{
    for (struct sroom *r = m->rooms; r; r = r->next)
        if (r->room && muc_room_channel(r->room) == channel_id)
            return r;
    return NULL;
}

static void pending_free(struct pending *p)
{
    xml_node_free(p->st);
    jid_free(&p->from);
    jid_free(&p->to);
    free(p);
}

static void room_unlink_free(struct sroom *sr)
{
    struct muc_service *m = sr->m;
    for (struct sroom **pp = &m->rooms; *pp; pp = &(*pp)->next)
        if (*pp == sr) {
            *pp = sr->next;
            break;
        }
    while (sr->head) {
        struct pending *p = sr->head;
        sr->head = p->next;
        pending_free(p);
    }
    if (sr->room) {
        set_count(m, muc_room_channel(sr->room), 0);
        muc_room_free(sr->room);
    }
    free(sr->slug);
    free(sr);
}

/* Nobody in it, nothing queued, nothing in flight, nobody holding it on
 * the stack (a delivery inside a broadcast can call on_gone): let it go. */
static void maybe_unload(struct sroom *sr)
{
    if (sr->room && !sr->head && !sr->loading && !sr->blocked && !sr->reloading && !sr->busy &&
        !sr->m->walking && !muc_room_busy(sr->room) && muc_room_count(sr->room) == 0)
        room_unlink_free(sr);
}

/* ---- slugs that are no room: a short negative cache --------------------- */

static bool unknown_slug(struct muc_service *m, const char *slug)
{
    int64_t now = env_now(m);
    for (size_t i = 0; i < m->nunknown; i++)
        if (now - m->unknown[i].at_ms < UNKNOWN_TTL_MS && strcmp(m->unknown[i].slug, slug) == 0)
            return true;
    return false;
}

static void unknown_put(struct muc_service *m, const char *slug)
{
    if (strlen(slug) > JID_PART_MAX)
        return;
    struct unknown_slug *u = &m->unknown[m->unknown_next];
    snprintf(u->slug, sizeof u->slug, "%s", slug);
    u->at_ms = env_now(m);
    m->unknown_next = (m->unknown_next + 1) % UNKNOWN_MAX;
    if (m->nunknown < UNKNOWN_MAX)
        m->nunknown++;
}

struct load_job {
    struct muc_service *m;
    char *slug;
    long long channel_id;
    struct muc_loaded res;
    int rc;
};

static void load_work(void *arg)
{
    struct load_job *j = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(j->m->srv));
    if (!db) {
        j->rc = -EIO;
        return;
    }
    uint64_t keep = j->m->cfg->xmpp.history_retention_ms;
    int64_t since = keep ? env_now(NULL) - (int64_t)keep : 0;
    j->rc = muc_store_load(db, j->slug, j->channel_id, j->m->env.history_max, since, &j->res);
    db_pool_release(xmpp_server_db(j->m->srv), db);
}

static void refuse_all(struct sroom *sr, int cond, const char *text)
{
    sr->qbytes = 0;
    while (sr->head) {
        struct pending *p = sr->head;
        sr->head = p->next;
        enum stanza_type t = stanza_type(p->st);
        if (t != STANZA_TYPE_UNAVAILABLE && t != STANZA_TYPE_ERROR && t != STANZA_TYPE_RESULT)
            xmpp_route_error(sr->m->srv, p->st, cond, text);
        else
            xml_node_free(p->st);
        p->st = NULL;
        pending_free(p);
    }
    sr->tail = NULL;
    sr->nq = 0;
}

static void load_done(void *arg)
{
    struct load_job *j = arg;
    struct muc_service *m = j->m;
    m->inflight--;
    m->nloading--;
    if (m->closing) {
        muc_loaded_clear(&j->res);
        free(j->slug), free(j);
        service_release(m);
        return;
    }
    if (j->rc == -ENOENT)
        unknown_put(m, j->slug);
    struct sroom *sr = find_room(m, j->slug);
    if (sr && sr->loading) {
        sr->loading = false;
        if (j->rc == 0)
            sr->room = muc_room_new(&m->env, j->res.policy);
        if (sr->room) {
            j->res.policy = NULL;
            for (size_t i = 0; i < j->res.nhist; i++) {
                muc_room_history_push(sr->room, j->res.hist[i], j->res.hist_ts[i]);
                j->res.hist[i] = NULL;
            }
            log_debug("muc %s: loaded (channel %lld, %zu messages of history)",
                      muc_room_jid(sr->room), (long long)muc_room_channel(sr->room), j->res.nhist);
            pump(sr);
        } else {
            if (j->rc != -ENOENT)
                log_warn("muc: room %s@%s: cannot load (%d)", j->slug,
                         xmpp_server_muc_domain(m->srv), j->rc);
            sr->busy++; /* the refusals are deliveries too */
            refuse_all(sr, j->rc == -ENOENT ? STANZA_COND_ITEM_NOT_FOUND
                                            : STANZA_COND_INTERNAL_SERVER_ERROR,
                       j->rc == -ENOENT ? "No such room (or its chat is off)" : NULL);
            sr->busy--;
            room_unlink_free(sr);
        }
    }
    muc_loaded_clear(&j->res);
    free(j->slug), free(j);
}

static int start_load(struct sroom *sr)
{
    struct load_job *j = calloc(1, sizeof *j);
    if (!j || !(j->slug = strdup(sr->slug))) {
        free(j);
        return -ENOMEM;
    }
    j->m = sr->m;
    int rc = xmpp_server_work(sr->m->srv, load_work, load_done, j);
    if (rc) {
        free(j->slug), free(j);
        return rc;
    }
    sr->m->inflight++;
    sr->m->nloading++;
    sr->loading = true;
    return 0;
}

/* ---- retractions of messages no longer in memory ------------------------- */

/*
 * The room asks (env->verify_retract) when a participant retracts a
 * message older than its history ring: the archive says who wrote it. The
 * room's FIFO waits meanwhile (blocked, like a nick lookup), so what the
 * sender says next cannot overtake the retraction.
 */
struct retract_job {
    struct muc_service *m;
    char *slug;
    struct pending *p;
    char *sid, *oid, *bare;
    int64_t channel_id;
    bool author, found;
    int rc;
};

static void retract_work(void *arg)
{
    struct retract_job *j = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(j->m->srv));
    if (!db) {
        j->rc = -EIO;
        return;
    }
    j->rc = muc_store_message_author(db, j->channel_id, j->sid, j->oid, j->bare, &j->author);
    j->found = j->rc == 0;
    db_pool_release(xmpp_server_db(j->m->srv), db);
}

static void retract_job_free(struct retract_job *j)
{
    if (j->p)
        pending_free(j->p);
    free(j->slug), free(j->sid), free(j->oid), free(j->bare), free(j);
}

static void retract_done(void *arg)
{
    struct retract_job *j = arg;
    struct muc_service *m = j->m;
    m->inflight--;
    if (m->closing) {
        retract_job_free(j);
        service_release(m);
        return;
    }
    struct sroom *sr = find_room(m, j->slug);
    if (sr && sr->room) {
        sr->busy++;
        if (j->rc && j->rc != -ENOENT)
            log_warn("muc %s: cannot check the author of %s (%d)", muc_room_jid(sr->room), j->sid,
                     j->rc);
        muc_room_retract_checked(sr->room, j->p->st, &j->p->from, &j->p->to, j->author, j->found);
        sr->busy--;
        sr->blocked = false;
        retract_job_free(j);
        pump(sr);
        return;
    }
    retract_job_free(j);
}

static int env_verify_retract(void *ud, const struct xml_node *st, const struct jid *from,
                              const struct jid *to, const char *sid, const char *oid,
                              const char *bare)
{
    struct muc_service *m = ud;
    struct sroom *sr = to->local ? find_room(m, to->local) : NULL;
    if (!sr || !sr->room || sr->blocked)
        return -EINVAL;
    struct retract_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->m = m;
    j->channel_id = muc_room_channel(sr->room);
    j->slug = strdup(sr->slug);
    j->sid = strdup(sid), j->oid = strdup(oid), j->bare = strdup(bare);
    j->p = calloc(1, sizeof *j->p);
    if (!j->slug || !j->sid || !j->oid || !j->bare || !j->p || !(j->p->st = xml_node_copy(st)) ||
        jid_copy(&j->p->from, from) || jid_copy(&j->p->to, to) ||
        xmpp_server_work(m->srv, retract_work, retract_done, j)) {
        retract_job_free(j);
        return -ENOMEM;
    }
    m->inflight++;
    sr->blocked = true;
    return 0;
}

/* ---- nick reservations --------------------------------------------------- */

static bool nick_cached(struct muc_service *m, const char *nick, int64_t *uid)
{
    int64_t now = env_now(m);
    for (size_t i = 0; i < m->nnicks; i++)
        if (strcmp(m->nicks[i].nick, nick) == 0) {
            if (now - m->nicks[i].at_ms > NICK_CACHE_TTL_MS)
                return false;
            *uid = m->nicks[i].user_id;
            return true;
        }
    return false;
}

static void nick_cache_clear(struct muc_service *m)
{
    for (size_t i = 0; i < m->nnicks; i++)
        free(m->nicks[i].nick);
    m->nnicks = 0;
}

static void nick_cache_put(struct muc_service *m, const char *nick, int64_t uid)
{
    int64_t now = env_now(m);
    for (size_t i = 0; i < m->nnicks; i++)
        if (strcmp(m->nicks[i].nick, nick) == 0) {
            m->nicks[i].user_id = uid, m->nicks[i].at_ms = now;
            return;
        }
    if (m->nnicks >= NICK_CACHE_MAX)
        nick_cache_clear(m);
    char *s = strdup(nick);
    if (!s)
        return;
    m->nicks[m->nnicks++] = (struct nick_entry){s, uid, now};
}

/* The nick as an account name would be: a prepared localpart, or "". */
static void nick_key(const char *nick, char out[JID_PART_MAX + 1])
{
    if (jid_prep_local(nick, strlen(nick), out, false))
        out[0] = '\0';
}

struct nick_job {
    struct muc_service *m;
    char *slug;
    char key[JID_PART_MAX + 1];
    int64_t uid;
    int rc;
};

static void nick_work(void *arg)
{
    struct nick_job *j = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(j->m->srv));
    if (!db) {
        j->rc = -EIO;
        return;
    }
    j->rc = muc_store_nick_owner(db, j->key, &j->uid);
    db_pool_release(xmpp_server_db(j->m->srv), db);
}

static void nick_done(void *arg)
{
    struct nick_job *j = arg;
    struct muc_service *m = j->m;
    m->inflight--;
    if (m->closing) {
        free(j->slug), free(j);
        service_release(m);
        return;
    }
    /* on a database error, let it through rather than lock everyone out */
    nick_cache_put(m, j->key, j->rc ? 0 : j->uid);
    struct sroom *sr = find_room(m, j->slug);
    if (sr) {
        sr->blocked = false;
        pump(sr);
    }
    free(j->slug), free(j);
}

/* ---- dispatch ----------------------------------------------------------- */

static void who_of(struct muc_service *m, const struct jid *from, struct muc_who *who)
{
    memset(who, 0, sizeof *who);
    const struct xmpp_peer *p = xmpp_server_peer(m->srv, from);
    if (p) {
        who->guest = p->guest;
        who->user_id = p->account.user_id;
        who->account = p->account.user_id ? p->account.name : NULL;
        who->site_admin = p->account.admin;
        who->ip = p->ip[0] ? p->ip : NULL;
    }
    if (strcmp(from->domain, xmpp_server_guest_domain(m->srv)) == 0)
        who->guest = true;
}

static void mam_query_start(struct sroom *sr, struct pending *p, const struct xml_node *q);

static void mam_form(struct sroom *sr, struct pending *p)
{
    struct xml_node *res = xml_element_new("iq", XMPP_NS_CLIENT);
    struct xml_node *q = res ? xml_element_add(res, "query", MUC_NS_MAM) : NULL;
    struct xml_node *x = q ? xml_element_add(q, "x", MUC_NS_DATA) : NULL;
    const char *id = xml_attr_get(p->st, "id"), *from = xml_attr_get(p->st, "from");
    if (x && !xml_attr_set(res, "type", "result") && !xml_attr_set(res, "to", from) &&
        !xml_attr_set(res, "from", muc_room_jid(sr->room)) && (!id || !xml_attr_set(res, "id", id)) &&
        !xml_attr_set(x, "type", "form")) {
        static const char *const vars[][2] = {
            {"FORM_TYPE", "hidden"}, {"with", "jid-single"}, {"start", "text-single"},
            {"end", "text-single"}};
        for (size_t i = 0; i < 4; i++) {
            struct xml_node *f = xml_element_add(x, "field", NULL);
            if (f && !xml_attr_set(f, "var", vars[i][0]) && !xml_attr_set(f, "type", vars[i][1]) &&
                i == 0)
                xml_element_add_text_child(f, "value", NULL, MUC_NS_MAM);
        }
        xmpp_route(sr->m->srv, res);
        return;
    }
    xml_node_free(res);
}

static void dispatch(struct sroom *sr, struct pending *p, int64_t nick_owner)
{
    struct muc_service *m = sr->m;
    struct muc_who who;
    switch (stanza_kind(p->st)) {
    case STANZA_PRESENCE:
        /* a local session that went away while this waited (the room was
         * loading) must not join: nothing would ever take it out */
        if (stanza_type(p->st) == STANZA_TYPE_NONE &&
            xmpp_server_is_local(m->srv, p->from.domain) && !xmpp_server_peer(m->srv, &p->from) &&
            !muc_room_is_occupant(sr->room, &p->from))
            break;
        who_of(m, &p->from, &who);
        muc_room_presence(sr->room, p->st, &p->from, &p->to, &who, nick_owner);
        break;
    case STANZA_MESSAGE:
        muc_room_message(sr->room, p->st, &p->from, &p->to);
        break;
    case STANZA_IQ: {
        const struct xml_node *q = xml_first_element(p->st);
        enum stanza_type t = stanza_type(p->st);
        if (q && !p->to.resource && strcmp(q->ns, MUC_NS_MAM) == 0 && strcmp(q->name, "query") == 0) {
            who_of(m, &p->from, &who);
            int cond = muc_room_read_access(sr->room, &p->from, &who);
            if (cond) {
                muc_send_error(&m->env, p->st, cond,
                               cond == STANZA_COND_REGISTRATION_REQUIRED
                                   ? "This channel is private: only invited accounts read its archive"
                                   : NULL);
            } else if (t == STANZA_TYPE_GET) {
                mam_form(sr, p);
            } else if (t == STANZA_TYPE_SET) {
                mam_query_start(sr, p, q);
                return; /* p is the job's now */
            } else {
                muc_send_error(&m->env, p->st, STANZA_COND_BAD_REQUEST, NULL);
            }
        } else {
            muc_room_iq(sr->room, p->st, &p->from, &p->to);
        }
        break;
    }
    default:
        break;
    }
    pending_free(p);
}

/* Does p need the nick's owner first? Then *key is the lookup. */
static bool needs_nick(struct sroom *sr, struct pending *p, char key[JID_PART_MAX + 1])
{
    if (stanza_kind(p->st) != STANZA_PRESENCE || stanza_type(p->st) != STANZA_TYPE_NONE ||
        !p->to.resource)
        return false;
    nick_key(p->to.resource, key);
    return key[0] != '\0';
}

static void pump(struct sroom *sr)
{
    struct muc_service *m = sr->m;
    /* a stanza routed back to this room from inside a dispatch (a bounce)
     * was queued; the loop below, further up the stack, takes it */
    if (sr->pumping)
        return;
    sr->pumping = true;
    sr->busy++;
    while (sr->room && !sr->blocked && sr->head) {
        struct pending *p = sr->head;
        char key[JID_PART_MAX + 1];
        int64_t owner = 0;
        if (needs_nick(sr, p, key) && !nick_cached(m, key, &owner)) {
            struct nick_job *j = calloc(1, sizeof *j);
            if (j && (j->slug = strdup(sr->slug))) {
                j->m = m;
                memcpy(j->key, key, sizeof j->key);
                if (xmpp_server_work(m->srv, nick_work, nick_done, j) == 0) {
                    m->inflight++;
                    sr->blocked = true;
                    sr->busy--;
                    sr->pumping = false;
                    return;
                }
                free(j->slug);
            }
            free(j);
            /* no worker: go on without the check */
        }
        sr->head = p->next;
        if (!sr->head)
            sr->tail = NULL;
        sr->nq--;
        sr->qbytes -= p->bytes;
        dispatch(sr, p, owner);
    }
    sr->busy--;
    sr->pumping = false;
    maybe_unload(sr);
}

/* ---- MAM ---------------------------------------------------------------- */

struct mam_job {
    struct muc_service *m;
    struct pending *p;
    char *room_jid;
    char *requester; /* its full JID, the mam_rates key */
    struct mam_query q;
    struct mam_result res;
    int rc;
};

/*
 * MAM queries are the most expensive thing a client can ask for (a query
 * and a count on a worker, up to MAM_MAX_PAGE stanzas back). Per requester
 * (full JID): one at a time, MAM_BURST in a row (a client paging back
 * through the archive), then one per MAM_INTERVAL_MS; for the whole
 * service, MAM_INFLIGHT_MAX at once. 0 when the query may run (then
 * mam_rate_release once it is answered), or the condition to refuse with.
 */
static int mam_rate_take(struct muc_service *m, const char *jid)
{
    if (m->mam_inflight >= MAM_INFLIGHT_MAX)
        return STANZA_COND_RESOURCE_CONSTRAINT;
    int64_t now = env_now(m);
    struct mam_rate *free_slot = NULL, *r = NULL;
    for (size_t i = 0; i < m->nmam_rates; i++) {
        struct mam_rate *x = &m->mam_rates[i];
        if (strcmp(x->jid, jid) == 0) {
            r = x;
            break;
        }
        if (!free_slot && !x->busy && x->tat_ms <= now)
            free_slot = x; /* its budget is back to full: forgettable */
    }
    if (!r) {
        char *s = strdup(jid);
        if (!s)
            return STANZA_COND_RESOURCE_CONSTRAINT;
        if (!free_slot && m->nmam_rates < MAM_RATE_MAX)
            free_slot = &m->mam_rates[m->nmam_rates++];
        if (!free_slot) {
            free(s);
            return STANZA_COND_RESOURCE_CONSTRAINT;
        }
        free(free_slot->jid);
        *free_slot = (struct mam_rate){.jid = s, .tat_ms = now};
        r = free_slot;
    }
    if (r->busy)
        return STANZA_COND_RESOURCE_CONSTRAINT;
    int64_t tat = r->tat_ms > now ? r->tat_ms : now;
    if (tat - now > (int64_t)(MAM_BURST - 1) * MAM_INTERVAL_MS)
        return STANZA_COND_POLICY_VIOLATION;
    r->tat_ms = tat + MAM_INTERVAL_MS;
    r->busy = true;
    return 0;
}

static void mam_rate_release(struct muc_service *m, const char *jid)
{
    for (size_t i = 0; jid && i < m->nmam_rates; i++)
        if (strcmp(m->mam_rates[i].jid, jid) == 0) {
            m->mam_rates[i].busy = false;
            return;
        }
}

static void mam_work(void *arg)
{
    struct mam_job *j = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(j->m->srv));
    if (!db) {
        j->rc = -EIO;
        return;
    }
    j->rc = mam_run(db, &j->q, &j->res);
    db_pool_release(xmpp_server_db(j->m->srv), db);
}

static void mam_done(void *arg)
{
    struct mam_job *j = arg;
    struct muc_service *m = j->m;
    m->inflight--;
    if (m->closing)
        goto out;
    struct xml_node *st = j->p->st;
    const char *to = xml_attr_get(st, "from"), *id = xml_attr_get(st, "id");
    if (j->rc) {
        muc_send_error(&m->env, st,
                       j->rc == -ENOENT ? STANZA_COND_ITEM_NOT_FOUND : STANZA_COND_INTERNAL_SERVER_ERROR,
                       NULL);
        goto out;
    }
    for (size_t i = 0; i < j->res.n; i++) {
        struct mam_item *it = &j->res.items[i];
        struct xml_node *msg = xml_element_new("message", XMPP_NS_CLIENT);
        struct xml_node *r = msg ? xml_element_add(msg, "result", MUC_NS_MAM) : NULL;
        struct xml_node *fw = r ? xml_element_add(r, "forwarded", MUC_NS_FORWARD) : NULL;
        struct xml_node *d = fw ? xml_element_add(fw, "delay", MUC_NS_DELAY) : NULL;
        char stamp[32];
        muc_fmt_stamp(it->ts_ms, stamp);
        if (!d || xml_attr_set(msg, "to", to) || xml_attr_set(msg, "from", j->room_jid) ||
            xml_attr_set(r, "id", it->stanza_id) ||
            (j->q.queryid && xml_attr_set(r, "queryid", j->q.queryid)) ||
            xml_attr_set(d, "stamp", stamp)) {
            xml_node_free(msg);
            continue;
        }
        xml_node_append(fw, it->st);
        it->st = NULL;
        xmpp_route(m->srv, msg);
    }
    struct xml_node *res = xml_element_new("iq", XMPP_NS_CLIENT);
    struct xml_node *fin = res ? xml_element_add(res, "fin", MUC_NS_MAM) : NULL;
    struct xml_node *set = fin ? xml_element_add(fin, "set", MUC_NS_RSM) : NULL;
    if (set && !xml_attr_set(res, "type", "result") && !xml_attr_set(res, "to", to) &&
        !xml_attr_set(res, "from", j->room_jid) && (!id || !xml_attr_set(res, "id", id)) &&
        (!j->res.complete || !xml_attr_set(fin, "complete", "true"))) {
        if (j->res.n) {
            struct xml_node *first =
                xml_element_add_text_child(set, "first", NULL, j->res.items[0].stanza_id);
            if (first)
                xml_attr_set(first, "index", "0");
            xml_element_add_text_child(set, "last", NULL, j->res.items[j->res.n - 1].stanza_id);
        }
        char n[32];
        snprintf(n, sizeof n, "%lld", (long long)j->res.count);
        xml_element_add_text_child(set, "count", NULL, n);
        xmpp_route(m->srv, res);
    } else {
        xml_node_free(res);
    }
out:
    mam_rate_release(m, j->requester);
    m->mam_inflight--;
    mam_result_clear(&j->res);
    mam_query_clear(&j->q);
    pending_free(j->p);
    free(j->room_jid);
    free(j->requester);
    free(j);
    if (m->closing)
        service_release(m);
}

static void mam_query_start(struct sroom *sr, struct pending *p, const struct xml_node *q)
{
    struct muc_service *m = sr->m;
    char who[JID_MAX + 1];
    if (jid_format(&p->from, who, sizeof who)) {
        pending_free(p);
        return;
    }
    int cond = mam_rate_take(m, who);
    if (cond) {
        log_info("muc %s: archive query from %s refused: %s", muc_room_jid(sr->room), who,
                 cond == STANZA_COND_POLICY_VIOLATION ? "too many" : "one is running");
        struct stanza_error e = {.cond = cond, .type = STANZA_ERROR_WAIT,
                                 .text = cond == STANZA_COND_POLICY_VIOLATION
                                             ? "Too many archive queries; slow down"
                                             : "One archive query at a time"};
        struct xml_node *reply;
        if (stanza_error_reply(p->st, &e, &reply) == 0)
            m->env.send(m->env.ud, reply, who), xml_node_free(reply);
        pending_free(p);
        return;
    }
    struct mam_job *j = calloc(1, sizeof *j);
    if (!j || !(j->requester = strdup(who))) {
        mam_rate_release(m, who);
        free(j);
        pending_free(p);
        return;
    }
    if (mam_query_parse(q, &j->q)) {
        mam_rate_release(m, who);
        free(j->requester);
        muc_send_error(&m->env, p->st, STANZA_COND_BAD_REQUEST, NULL);
        pending_free(p);
        free(j);
        return;
    }
    j->m = m;
    j->p = p;
    j->q.channel_id = muc_room_channel(sr->room);
    j->room_jid = strdup(muc_room_jid(sr->room));
    if (!j->room_jid || xmpp_server_work(m->srv, mam_work, mam_done, j)) {
        muc_send_error(&m->env, p->st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
        mam_rate_release(m, who);
        mam_query_clear(&j->q);
        free(j->room_jid);
        free(j->requester);
        pending_free(p);
        free(j);
        return;
    }
    m->inflight++;
    m->mam_inflight++;
}

/* ---- the service's own address (chat.DOMAIN) ------------------------------ */

static void service_iq(struct muc_service *m, struct xml_node *st)
{
    const struct xml_node *q = xml_first_element(st);
    enum stanza_type t = stanza_type(st);
    if (t == STANZA_TYPE_RESULT || t == STANZA_TYPE_ERROR) {
        xml_node_free(st);
        return;
    }
    if (t != STANZA_TYPE_GET || !q) {
        xmpp_route_error(m->srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    struct xml_node *res = xml_element_new("iq", XMPP_NS_CLIENT);
    const char *id = xml_attr_get(st, "id");
    if (!res || xml_attr_set(res, "type", "result") ||
        xml_attr_set(res, "to", xml_attr_get(st, "from")) ||
        xml_attr_set(res, "from", xmpp_server_muc_domain(m->srv)) || (id && xml_attr_set(res, "id", id)))
        goto fail;
    if (strcmp(q->ns, MUC_NS_DISCO_INFO) == 0) {
        struct xml_node *r = xml_element_add(res, "query", MUC_NS_DISCO_INFO);
        struct xml_node *idn = r ? xml_element_add(r, "identity", NULL) : NULL;
        if (!idn || xml_attr_set(idn, "category", "conference") || xml_attr_set(idn, "type", "text") ||
            xml_attr_set(idn, "name", "Channel chat rooms"))
            goto fail;
        static const char *const feats[] = {MUC_NS, MUC_NS_MAM, MUC_NS_DISCO_INFO, MUC_NS_DISCO_ITEMS,
                                            MUC_NS_PING, MUC_NS_SID, MUC_NS_OCCUPANT_ID};
        for (size_t i = 0; i < sizeof feats / sizeof *feats; i++) {
            struct xml_node *f = xml_element_add(r, "feature", NULL);
            if (f)
                xml_attr_set(f, "var", feats[i]);
        }
    } else if (strcmp(q->ns, MUC_NS_DISCO_ITEMS) == 0) {
        struct xml_node *r = xml_element_add(res, "query", MUC_NS_DISCO_ITEMS);
        if (!r)
            goto fail;
        size_t n = 0;
        for (struct sroom *sr = m->rooms; sr && n < 1000; sr = sr->next) {
            if (!sr->room || !muc_room_count(sr->room))
                continue;
            const struct muc_policy *p = muc_room_policy(sr->room);
            if (p->members_only)
                continue; /* protected channels are not listed */
            struct xml_node *it = xml_element_add(r, "item", NULL);
            char name[512];
            snprintf(name, sizeof name, "%s (%zu)", p->title ? p->title : p->slug,
                     muc_room_count(sr->room));
            if (it) {
                xml_attr_set(it, "jid", muc_room_jid(sr->room));
                xml_attr_set(it, "name", name);
            }
            n++;
        }
    } else if (strcmp(q->ns, MUC_NS_PING) == 0) {
        /* empty result */
    } else {
        xml_node_free(res);
        xmpp_route_error(m->srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    xml_node_free(st);
    xmpp_route(m->srv, res);
    return;
fail:
    xml_node_free(res);
    xmpp_route_error(m->srv, st, STANZA_COND_INTERNAL_SERVER_ERROR, NULL);
}

/* Bytes one sender has queued in the room (the queue is at most
 * PENDING_MAX long, and only long while the room waits). */
static size_t sender_bytes(const struct sroom *sr, const struct jid *from)
{
    size_t n = 0;
    for (const struct pending *p = sr->head; p; p = p->next)
        if (jid_equal(&p->from, from))
            n += p->bytes;
    return n;
}

static void on_stanza(void *ud, struct xml_node *st, const struct jid *from, const struct jid *to)
{
    struct muc_handle *h = ud;
    struct muc_service *m = h->m;
    if (!m || m->closing) {
        xmpp_route_error(h->srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (!to->local) {
        if (stanza_kind(st) == STANZA_IQ && !to->resource)
            service_iq(m, st);
        else if (stanza_kind(st) == STANZA_MESSAGE && stanza_type(st) != STANZA_TYPE_ERROR)
            xmpp_route_error(m->srv, st, STANZA_COND_SERVICE_UNAVAILABLE, NULL);
        else
            xml_node_free(st);
        return;
    }
    struct sroom *sr = find_room(m, to->local);
    if (!sr) {
        /* only a join, a query or a message to a room loads it */
        enum stanza_type t = stanza_type(st);
        if (t == STANZA_TYPE_ERROR || t == STANZA_TYPE_UNAVAILABLE || t == STANZA_TYPE_RESULT) {
            xml_node_free(st);
            return;
        }
        /* Each new room is a database job: anyone on the network could ask
         * for random names, so names that were no room are remembered for
         * a minute, and only so many rooms load at once. */
        if (unknown_slug(m, to->local)) {
            xmpp_route_error(m->srv, st, STANZA_COND_ITEM_NOT_FOUND,
                             "No such room (or its chat is off)");
            return;
        }
        if (m->nloading >= LOADING_MAX) {
            log_warn("muc: %zu rooms loading; refusing %s@%s for now", m->nloading, to->local,
                     to->domain);
            struct stanza_error e = {.cond = STANZA_COND_RESOURCE_CONSTRAINT,
                                     .type = STANZA_ERROR_WAIT, .text = "Busy; try again"};
            struct xml_node *reply;
            if (stanza_error_reply(st, &e, &reply) == 0)
                xmpp_route(m->srv, reply);
            xml_node_free(st);
            return;
        }
        sr = calloc(1, sizeof *sr);
        if (!sr || !(sr->slug = strdup(to->local))) {
            free(sr);
            xmpp_route_error(m->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
            return;
        }
        sr->m = m;
        sr->next = m->rooms;
        m->rooms = sr;
        if (start_load(sr)) {
            room_unlink_free(sr);
            xmpp_route_error(m->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
            return;
        }
    }
    size_t bytes = muc_stanza_bytes(st) + sizeof(struct pending);
    if (sr->head && (sr->nq >= PENDING_MAX || sr->qbytes + bytes > PENDING_BYTES ||
                     sender_bytes(sr, from) + bytes > PENDING_SENDER_BYTES)) {
        log_warn("muc room %s: %zu stanzas (%zu bytes) waiting; refusing more from %s%s%s",
                 sr->slug, sr->nq, sr->qbytes, from->local ? from->local : "",
                 from->local ? "@" : "", from->domain);
        xmpp_route_error(m->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p || jid_copy(&p->from, from) || jid_copy(&p->to, to)) {
        if (p)
            jid_free(&p->from), jid_free(&p->to);
        free(p);
        xmpp_route_error(m->srv, st, STANZA_COND_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    p->st = st;
    p->bytes = bytes;
    sr->qbytes += bytes;
    if (sr->tail)
        sr->tail->next = p;
    else
        sr->head = p;
    sr->tail = p;
    sr->nq++;
    pump(sr);
}

/*
 * A session (or, with a JID that is only a domain, a whole remote server)
 * went away. This can run inside one of our own deliveries, so no room is
 * freed while we walk (m->walking; the rooms mark goners while busy), and
 * the empty ones are let go after the outermost walk. room_unlink_free
 * sends nothing, so that last loop cannot be re-entered.
 */
static void gone_walk(struct muc_service *m, const struct jid *full, const char *domain)
{
    m->walking++;
    for (struct sroom *sr = m->rooms; sr; sr = sr->next) {
        if (!sr->room)
            continue;
        if (domain)
            muc_room_domain_gone(sr->room, domain);
        else if (muc_room_is_occupant(sr->room, full))
            muc_room_gone(sr->room, full);
    }
    if (--m->walking)
        return;
    for (struct sroom *sr = m->rooms, *next; sr; sr = next) {
        next = sr->next;
        maybe_unload(sr);
    }
}

static void on_gone(void *ud, const struct jid *full)
{
    struct muc_handle *h = ud;
    struct muc_service *m = h->m;
    if (!m)
        return;
    if (!full->local && !full->resource) {
        /* a server-to-server stream ended: everyone on that domain */
        if (!xmpp_server_is_local(m->srv, full->domain))
            gone_walk(m, NULL, full->domain);
        return;
    }
    gone_walk(m, full, NULL);
}

void muc_domain_gone(struct muc_service *m, const char *domain)
{
    if (!m || m->closing || !domain || xmpp_server_is_local(m->srv, domain))
        return;
    log_info("muc: occupants from %s removed: its server went away", domain);
    gone_walk(m, NULL, domain);
}

/* ---- muc_room_changed ------------------------------------------------------ */

struct change {
    struct muc_service *m;
    long long channel_id;
    struct muc_loaded res;
    int rc;
};

static void change_work(void *arg)
{
    struct change *c = arg;
    struct db *db = db_pool_acquire(xmpp_server_db(c->m->srv));
    if (!db) {
        c->rc = -EIO;
        return;
    }
    c->rc = muc_store_load(db, NULL, c->channel_id, 0, 0, &c->res);
    db_pool_release(xmpp_server_db(c->m->srv), db);
}

static void change_done(void *arg)
{
    struct change *c = arg;
    struct muc_service *m = c->m;
    m->inflight--;
    if (m->closing)
        goto out;
    struct sroom *sr = find_room_by_channel(m, c->channel_id);
    if (!sr)
        goto out;
    sr->reloading = false;
    sr->busy++; /* what the room sends may come back to on_gone */
    char alt[JID_MAX + 1];
    if (c->rc == -ENOENT) {
        log_info("muc %s: destroyed: the channel is gone or its chat is off", muc_room_jid(sr->room));
        muc_room_destroy(sr->room, NULL, "The chat of this channel is closed");
        sr->busy--;
        room_unlink_free(sr);
    } else if (c->rc) {
        log_warn("muc %s: cannot reload the policy (%d)", muc_room_jid(sr->room), c->rc);
        sr->busy--;
        maybe_unload(sr);
    } else if (strcmp(c->res.policy->slug, sr->slug) != 0) {
        snprintf(alt, sizeof alt, "%s@%s", c->res.policy->slug, xmpp_server_muc_domain(m->srv));
        log_info("muc %s: channel renamed: moving to %s", muc_room_jid(sr->room), alt);
        muc_room_destroy(sr->room, alt, "The channel was renamed");
        sr->busy--;
        room_unlink_free(sr);
    } else {
        muc_room_set_policy(sr->room, c->res.policy);
        c->res.policy = NULL;
        sr->busy--;
        maybe_unload(sr);
    }
out:
    muc_loaded_clear(&c->res);
    free(c);
    if (m->closing)
        service_release(m);
}

static void on_changed(void *arg)
{
    struct change *c = arg;
    struct muc_service *m = c->m;
    nick_cache_clear(m); /* a renamed account frees or takes a nick */
    m->nunknown = 0;     /* and a renamed or new channel may be a name we said was no room */
    struct sroom *sr = find_room_by_channel(m, c->channel_id);
    if (!sr || m->closing || xmpp_server_work(m->srv, change_work, change_done, c)) {
        free(c);
        return;
    }
    sr->reloading = true;
    m->inflight++;
}

int muc_room_changed(struct muc_service *m, long long channel_id, const char *old_slug)
{
    (void)old_slug; /* rooms are found by channel id; the reload sees the new slug */
    if (!m)
        return 0;
    struct change *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->m = m;
    c->channel_id = channel_id;
    if (xmpp_server_post(m->srv, on_changed, c)) {
        free(c);
        return -ENOMEM;
    }
    return 0;
}

/* ---- life ------------------------------------------------------------------ */

static void load_occupant_key(struct muc_service *m)
{
    /* Stable across restarts, so XEP-0421 ids in the archive stay valid:
     * a key file beside the database, made once. */
    char path[CONFIG_PATH + 64];
    snprintf(path, sizeof path, "%s/xmpp/occupant-id.key", m->cfg->storage.data_dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t n = fread(m->env.occupant_key, 1, sizeof m->env.occupant_key, f);
        fclose(f);
        if (n == sizeof m->env.occupant_key)
            return;
    }
    randombytes_buf(m->env.occupant_key, sizeof m->env.occupant_key);
    char dir[CONFIG_PATH + 64];
    snprintf(dir, sizeof dir, "%s/xmpp", m->cfg->storage.data_dir);
    if (util_mkdir_p(dir) == 0 && (f = fopen(path, "wb"))) {
        fwrite(m->env.occupant_key, 1, sizeof m->env.occupant_key, f);
        fclose(f);
    }
}

struct muc_service *muc_service_new(struct xmpp_server *srv)
{
    if (sodium_init() < 0)
        return NULL;
    struct muc_service *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->srv = srv;
    m->cfg = xmpp_server_config(srv);
    m->nicks = calloc(NICK_CACHE_MAX, sizeof *m->nicks);
    m->handle = calloc(1, sizeof *m->handle);
    m->expire = calloc(1, sizeof *m->expire);
    m->unknown = calloc(UNKNOWN_MAX, sizeof *m->unknown);
    m->mam_rates = calloc(MAM_RATE_MAX, sizeof *m->mam_rates);
    if (!m->nicks || !m->handle || !m->expire || !m->unknown || !m->mam_rates ||
        pthread_mutex_init(&m->count_lock, NULL)) {
        free(m->nicks), free(m->handle), free(m->expire), free(m->unknown), free(m->mam_rates);
        free(m);
        return NULL;
    }
    m->handle->m = m;
    m->handle->srv = srv;
    const struct config *cfg = m->cfg;
    struct muc_env *e = &m->env;
    e->ud = m;
    e->muc_domain = xmpp_server_muc_domain(srv);
    e->user_domain = xmpp_server_domain(srv);
    e->guest_domain = xmpp_server_guest_domain(srv);
    e->max_occupants = cfg->xmpp.max_occupants > 0 ? (size_t)cfg->xmpp.max_occupants : 10000;
    e->max_body_chars = cfg->xmpp.max_message_length > 0 ? (size_t)cfg->xmpp.max_message_length : 0;
    e->burst = cfg->xmpp.message_burst;
    e->interval_ms = (int64_t)cfg->xmpp.message_interval_ms;
    e->history_default = cfg->xmpp.join_history >= 0 ? (size_t)cfg->xmpp.join_history : 20;
    e->history_max = e->history_default > 50 ? e->history_default : 50;
    e->presence_full_max = 100;
    e->send = env_send;
    e->now_ms = env_now;
    e->archive = env_archive;
    e->retract = env_retract;
    e->ban_add = env_ban_add;
    e->ban_remove = env_ban_remove;
    e->subject = env_subject;
    e->count = env_count;
    e->verify_retract = env_verify_retract;
    load_occupant_key(m);
    if (xmpp_server_add_host(srv, e->muc_domain, on_stanza, m->handle) ||
        xmpp_server_on_session_gone(srv, on_gone, m->handle)) {
        log_error("muc: cannot register %s with the router", e->muc_domain);
        pthread_mutex_destroy(&m->count_lock);
        free(m->nicks), free(m->expire), free(m->unknown), free(m->mam_rates), free(m);
        /* the handle may be registered: leave it, pointing nowhere */
        return NULL;
    }
    uv_timer_init(xmpp_server_loop(srv), m->expire);
    m->expire->data = m;
    if (cfg->xmpp.history_retention_ms) {
        uv_timer_start(m->expire, on_expire, 60 * 1000, EXPIRE_EVERY_MS);
        uv_unref((uv_handle_t *)m->expire); /* never keeps the server running */
    }
    log_info("muc: rooms on %s (at most %zu occupants each)", e->muc_domain, e->max_occupants);
    return m;
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

/* The last of the service once closing and nothing is in flight. */
static void service_release(struct muc_service *m)
{
    if (m->inflight)
        return;
    free_ops(m->ops_head);
    nick_cache_clear(m);
    free(m->nicks);
    free(m->counts);
    for (size_t i = 0; i < m->nmam_rates; i++)
        free(m->mam_rates[i].jid);
    free(m->mam_rates);
    free(m->unknown);
    pthread_mutex_destroy(&m->count_lock);
    free(m);
}

void muc_service_free(struct muc_service *m)
{
    if (!m)
        return;
    m->handle->m = NULL; /* should the router still call it: it answers nothing */
    if (xmpp_server_remove_host(m->srv, m->env.muc_domain) == 0 &&
        xmpp_server_off_session_gone(m->srv, on_gone, m->handle) == 0) {
        free(m->handle);
    } else {
        m->handle->next = retired;
        retired = m->handle;
    }
    m->handle = NULL;
    while (m->rooms) {
        struct sroom *sr = m->rooms;
        if (sr->room)
            muc_room_shutdown(sr->room); /* XEP-0045 332 */
        room_unlink_free(sr);
    }
    /* the writes still queued: the loop has stopped, so waiting is fine */
    if (m->ops_head && !m->writing) {
        struct db *db = db_pool_acquire(xmpp_server_db(m->srv));
        if (db) {
            muc_store_apply(db, m->ops_head, xmpp_server_domain(m->srv));
            db_pool_release(xmpp_server_db(m->srv), db);
        }
    }
    free_ops(m->ops_head);
    m->ops_head = m->ops_tail = NULL;
    uv_close((uv_handle_t *)m->expire, on_timer_closed);
    m->closing = true;
    service_release(m);
}
