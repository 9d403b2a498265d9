/*
 * The room archive and the MUC's database work: see mam.h.
 *
 * Messages are stored as the room broadcast them (serialized <message/>
 * without 'to'), so MAM and the join history replay them byte for byte; a
 * retraction rewrites the row into its tombstone: same ids and sender, the
 * content replaced by <retracted/> (XEP-0424/0425), so that paging, replies
 * and reactions still line up. All writes go through one ordered queue (the
 * service runs one batch at a time), so a retraction never overtakes the
 * insert of the message it retracts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/mam.h"
#include "chat/stanza.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

/* ---- parsing stored stanzas -------------------------------------------- */

static int on_one(void *ud, struct xml_node *st)
{
    struct xml_node **out = ud;
    if (*out)
        xml_node_free(st);
    else
        *out = st;
    return 0;
}

struct xml_node *mam_parse(const char *s, size_t len)
{
    static const struct xml_stream_callbacks cb = {.on_stanza = on_one};
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza = XML_LIMIT_POSTAUTH;
    struct xml_node *out = NULL;
    struct xml_stream *x = xml_stream_new(XML_MODE_FRAMED, &lim, &cb, &out);
    size_t used;
    if (!x)
        return NULL;
    if (xml_stream_feed_frame(x, s, len, &used) < 0) {
        xml_node_free(out);
        out = NULL;
    }
    xml_stream_free(x);
    return out;
}

/* ---- the query ---------------------------------------------------------- */

void mam_query_clear(struct mam_query *q)
{
    free(q->with_nick), free(q->after), free(q->before), free(q->queryid);
    memset(q, 0, sizeof *q);
}

int mam_query_parse(const struct xml_node *query, struct mam_query *q)
{
    memset(q, 0, sizeof *q);
    q->start_ms = q->end_ms = -1;
    q->max = MAM_MAX_PAGE;
    const char *qid = xml_attr_get(query, "queryid");
    if (qid && !(q->queryid = strdup(qid)))
        return -ENOMEM;
    const struct xml_node *x = xml_child(query, "x", "jabber:x:data");
    for (const struct xml_node *f = x ? xml_child(x, "field", NULL) : NULL; f;
         f = xml_child_next(f, "field", NULL)) {
        const char *var = xml_attr_get(f, "var"), *v = xml_child_text(f, "value", NULL);
        if (!var || !v)
            continue;
        if (strcmp(var, "start") == 0 || strcmp(var, "end") == 0) {
            int64_t t = muc_parse_stamp(v);
            if (t < 0)
                goto bad;
            *(strcmp(var, "start") == 0 ? &q->start_ms : &q->end_ms) = t;
        } else if (strcmp(var, "with") == 0) {
            struct jid w;
            if (jid_parse(&w, v))
                goto bad;
            if (w.resource && !(q->with_nick = strdup(w.resource))) {
                jid_free(&w);
                return -ENOMEM;
            }
            jid_free(&w);
        } else if (strcmp(var, "FORM_TYPE") != 0 && strcmp(var, "after-id") != 0 &&
                   strcmp(var, "before-id") != 0) {
            goto bad; /* an unknown field must be refused (XEP-0313 6.1.1) */
        }
    }
    const struct xml_node *set = xml_child(query, "set", "http://jabber.org/protocol/rsm");
    if (set) {
        const char *v = xml_child_text(set, "max", NULL);
        if (v) {
            long n = strtol(v, NULL, 10);
            if (n < 0)
                goto bad;
            q->max = (size_t)n < MAM_MAX_PAGE ? (size_t)n : MAM_MAX_PAGE;
        }
        if ((v = xml_child_text(set, "after", NULL)) && !(q->after = strdup(v)))
            return -ENOMEM;
        const struct xml_node *b = xml_child(set, "before", NULL);
        if (b) {
            v = xml_text(b);
            if (v && *v) {
                if (!(q->before = strdup(v)))
                    return -ENOMEM;
            } else {
                q->before_last = true;
            }
        }
    }
    return 0;
bad:
    mam_query_clear(q);
    return -EINVAL;
}

void mam_result_clear(struct mam_result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].stanza_id);
        xml_node_free(r->items[i].st);
    }
    free(r->items);
    memset(r, 0, sizeof *r);
}

static int row_id(struct db *db, int64_t channel_id, const char *sid, int64_t *out)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT id FROM chat_messages WHERE channel_id = ? AND stanza_id = ?", &st);
    if (rc)
        return rc;
    db_bind_int64(st, 1, channel_id);
    db_bind_text(st, 2, sid);
    rc = db_step(st);
    if (rc == DB_ROW)
        *out = db_column_int64(st, 0), rc = 0;
    else if (rc == DB_DONE)
        rc = -ENOENT;
    db_finalize(st);
    return rc;
}

int mam_run(struct db *db, const struct mam_query *q, struct mam_result *out)
{
    memset(out, 0, sizeof *out);
    int64_t after = 0, before = 0;
    int rc;
    if (q->after && (rc = row_id(db, q->channel_id, q->after, &after)))
        return rc;
    if (q->before && (rc = row_id(db, q->channel_id, q->before, &before)))
        return rc;
    bool backward = q->before || q->before_last;
    char sql[512];
    const char *filters = " FROM chat_messages WHERE channel_id = ?1 AND (?2 < 0 OR ts_ms >= ?2)"
                          " AND (?3 < 0 OR ts_ms <= ?3) AND (?4 IS NULL OR nick = ?4)";
    snprintf(sql, sizeof sql, "SELECT stanza_id, ts_ms, stanza%s AND (?5 = 0 OR id > ?5)"
             " AND (?6 = 0 OR id < ?6) ORDER BY id %s LIMIT ?7", filters, backward ? "DESC" : "ASC");
    struct db_stmt *st;
    if ((rc = db_prepare(db, sql, &st)))
        return rc;
    db_bind_int64(st, 1, q->channel_id);
    db_bind_int64(st, 2, q->start_ms);
    db_bind_int64(st, 3, q->end_ms);
    db_bind_text(st, 4, q->with_nick);
    db_bind_int64(st, 5, after);
    db_bind_int64(st, 6, before);
    db_bind_int64(st, 7, (int64_t)q->max + 1);
    out->items = calloc(q->max + 1, sizeof *out->items);
    if (!out->items) {
        db_finalize(st);
        return -ENOMEM;
    }
    size_t rows = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        if (rows++ >= q->max)
            continue; /* the one past the page: there is more */
        const char *s = db_column_text(st, 2);
        struct mam_item *it = &out->items[out->n];
        it->stanza_id = strdup(db_column_text(st, 0));
        it->ts_ms = db_column_int64(st, 1);
        it->st = s ? mam_parse(s, strlen(s)) : NULL;
        if (!it->stanza_id || !it->st) {
            free(it->stanza_id);
            xml_node_free(it->st);
            continue;
        }
        out->n++;
    }
    db_finalize(st);
    if (rc < 0) {
        mam_result_clear(out);
        return rc;
    }
    out->complete = rows <= q->max;
    if (backward) /* walked newest first: give them oldest first */
        for (size_t i = 0; i < out->n / 2; i++) {
            struct mam_item t = out->items[i];
            out->items[i] = out->items[out->n - 1 - i];
            out->items[out->n - 1 - i] = t;
        }
    snprintf(sql, sizeof sql, "SELECT COUNT(*)%s", filters);
    if (db_prepare(db, sql, &st) == 0) {
        db_bind_int64(st, 1, q->channel_id);
        db_bind_int64(st, 2, q->start_ms);
        db_bind_int64(st, 3, q->end_ms);
        db_bind_text(st, 4, q->with_nick);
        if (db_step(st) == DB_ROW)
            out->count = db_column_int64(st, 0);
        db_finalize(st);
    }
    return 0;
}

/* ---- loading a room ---------------------------------------------------- */

static char *col_dup(struct db_stmt *st, int c)
{
    const char *s = db_column_text(st, c);
    return s ? strdup(s) : NULL;
}

void muc_loaded_clear(struct muc_loaded *l)
{
    muc_policy_free(l->policy);
    for (size_t i = 0; i < l->nhist; i++)
        xml_node_free(l->hist[i]);
    free(l->hist), free(l->hist_ts);
    memset(l, 0, sizeof *l);
}

static int load_users(struct db *db, const char *sql, int64_t channel_id, struct muc_user **out,
                      size_t *n)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st);
    if (rc)
        return rc;
    if (channel_id)
        db_bind_int64(st, 1, channel_id);
    while ((rc = db_step(st)) == DB_ROW) {
        struct muc_user *u = realloc(*out, (*n + 1) * sizeof *u);
        if (!u) {
            rc = -ENOMEM;
            break;
        }
        *out = u;
        u[*n].user_id = db_column_int64(st, 0);
        if (!(u[*n].name = col_dup(st, 1))) {
            rc = -ENOMEM;
            break;
        }
        (*n)++;
    }
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

int muc_store_load(struct db *db, const char *slug, int64_t channel_id, size_t history,
                   int64_t since_ms, struct muc_loaded *out)
{
    memset(out, 0, sizeof *out);
    struct muc_policy *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    out->policy = p;
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT c.id, c.slug, c.title, c.description, c.owner_id, u.name,"
                        " c.chat_enabled, c.chat_guests_may_talk, c.chat_slow_mode, c.chat_subject,"
                        " c.protected FROM channels c JOIN users u ON u.id = c.owner_id"
                        " WHERE (?1 IS NOT NULL AND c.slug = ?1) OR c.id = ?2",
                        &st);
    if (rc)
        goto fail;
    db_bind_text(st, 1, slug);
    db_bind_int64(st, 2, channel_id);
    rc = db_step(st);
    if (rc != DB_ROW || !db_column_int64(st, 6)) {
        db_finalize(st);
        rc = rc < 0 ? rc : -ENOENT;
        goto fail;
    }
    p->channel_id = db_column_int64(st, 0);
    p->slug = col_dup(st, 1), p->title = col_dup(st, 2), p->description = col_dup(st, 3);
    p->owner_id = db_column_int64(st, 4);
    p->owner_name = col_dup(st, 5);
    p->guests_may_talk = db_column_int64(st, 7) != 0;
    p->slow_mode_s = (int)db_column_int64(st, 8);
    p->subject = col_dup(st, 9);
    p->members_only = db_column_int64(st, 10) != 0;
    db_finalize(st);
    if (!p->slug || !p->title || !p->owner_name) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = load_users(db, "SELECT m.user_id, u.name FROM chat_moderators m JOIN users u"
                             " ON u.id = m.user_id WHERE m.channel_id = ?",
                         p->channel_id, &p->mods, &p->nmods)) ||
        (rc = load_users(db, "SELECT id, name FROM users WHERE disabled = 0 AND"
                             " (',' || roles || ',') LIKE '%,admin,%'",
                         0, &p->admins, &p->nadmins)))
        goto fail;

    int64_t now_s = util_now_unix();
    if ((rc = db_prepare(db, "SELECT jid, user_id, ip, nick, reason, banned_by, expires_at,"
                             " channel_id IS NULL FROM chat_bans WHERE (channel_id = ? OR"
                             " channel_id IS NULL) AND (expires_at IS NULL OR expires_at > ?)",
                         &st)))
        goto fail;
    db_bind_int64(st, 1, p->channel_id);
    db_bind_int64(st, 2, now_s);
    while ((rc = db_step(st)) == DB_ROW) {
        struct muc_ban b = {
            .jid = (char *)db_column_text(st, 0), .user_id = db_column_int64(st, 1),
            .ip = (char *)db_column_text(st, 2), .nick = (char *)db_column_text(st, 3),
            .reason = (char *)db_column_text(st, 4), .by = (char *)db_column_text(st, 5),
            .expires_ms = db_column_int64(st, 6) * 1000, .site = db_column_int64(st, 7) != 0,
        };
        if ((rc = muc_policy_add_ban(p, &b)))
            break;
    }
    db_finalize(st);
    if (rc < 0)
        goto fail;

    if (p->members_only) {
        /* who may come in: the invited accounts (owner, moderators and
         * admins are in the policy already) */
        if ((rc = db_prepare(db, "SELECT user_id FROM channel_invites WHERE channel_id = ?", &st)))
            goto fail;
        db_bind_int64(st, 1, p->channel_id);
        while ((rc = db_step(st)) == DB_ROW) {
            int64_t *v = realloc(p->invited, (p->ninvited + 1) * sizeof *v);
            if (!v) {
                rc = -ENOMEM;
                break;
            }
            p->invited = v;
            v[p->ninvited++] = db_column_int64(st, 0);
        }
        db_finalize(st);
        if (rc < 0)
            goto fail;
    }

    if ((rc = db_prepare(db, "SELECT word FROM chat_banned_words WHERE channel_id = ? OR"
                             " channel_id IS NULL", &st)))
        goto fail;
    db_bind_int64(st, 1, p->channel_id);
    while ((rc = db_step(st)) == DB_ROW) {
        char **w = realloc(p->words, (p->nwords + 1) * sizeof *w);
        if (!w) {
            rc = -ENOMEM;
            break;
        }
        p->words = w;
        if (!(w[p->nwords] = col_dup(st, 0))) {
            rc = -ENOMEM;
            break;
        }
        p->nwords++;
    }
    db_finalize(st);
    if (rc < 0)
        goto fail;

    if (history) {
        out->hist = calloc(history, sizeof *out->hist);
        out->hist_ts = calloc(history, sizeof *out->hist_ts);
        if (!out->hist || !out->hist_ts) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = db_prepare(db, "SELECT stanza, ts_ms FROM (SELECT id, stanza, ts_ms FROM"
                                 " chat_messages WHERE channel_id = ? AND ts_ms >= ?"
                                 " ORDER BY id DESC LIMIT ?) ORDER BY id",
                             &st)))
            goto fail;
        db_bind_int64(st, 1, p->channel_id);
        db_bind_int64(st, 2, since_ms);
        db_bind_int64(st, 3, (int64_t)history);
        while ((rc = db_step(st)) == DB_ROW && out->nhist < history) {
            const char *s = db_column_text(st, 0);
            struct xml_node *m = s ? mam_parse(s, strlen(s)) : NULL;
            if (!m)
                continue;
            out->hist[out->nhist] = m;
            out->hist_ts[out->nhist++] = db_column_int64(st, 1);
        }
        db_finalize(st);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    muc_loaded_clear(out);
    return rc;
}

int muc_store_nick_owner(struct db *db, const char *nick, int64_t *user_id)
{
    struct db_stmt *st;
    *user_id = 0;
    int rc = db_prepare(db, "SELECT id FROM users WHERE name = ?", &st);
    if (rc)
        return rc;
    db_bind_text(st, 1, nick);
    rc = db_step(st);
    if (rc == DB_ROW)
        *user_id = db_column_int64(st, 0);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

int muc_store_message_author(struct db *db, int64_t channel_id, const char *stanza_id,
                             const char *occupant_id, const char *bare, bool *is_author)
{
    struct db_stmt *st;
    *is_author = false;
    int rc = db_prepare(db, "SELECT occupant_id, from_jid FROM chat_messages WHERE channel_id = ?"
                            " AND stanza_id = ? AND retracted_at IS NULL", &st);
    if (rc)
        return rc;
    db_bind_int64(st, 1, channel_id);
    db_bind_text(st, 2, stanza_id);
    rc = db_step(st);
    if (rc == DB_ROW) {
        const char *o = db_column_text(st, 0), *j = db_column_text(st, 1);
        *is_author = (occupant_id && o && strcmp(o, occupant_id) == 0) ||
                     (bare && j && strcmp(j, bare) == 0);
        rc = 0;
    } else if (rc == DB_DONE) {
        rc = -ENOENT;
    }
    db_finalize(st);
    return rc;
}

/* ---- writes ------------------------------------------------------------ */

void muc_op_free(struct muc_op *op)
{
    if (!op)
        return;
    free(op->stanza_id), free(op->origin_id), free(op->nick), free(op->occupant_id);
    free(op->jid), free(op->body), free(op->xml), free(op->ip), free(op->reason), free(op->by);
    free(op);
}

static int exec_bound(struct db *db, const char *sql, struct db_stmt **out)
{
    return db_prepare(db, sql, out);
}

static int step_done(struct db_stmt *st)
{
    int rc = db_step(st);
    db_finalize(st);
    return rc < 0 ? rc : 0;
}

/* Rewrite the archived message into its tombstone. */
static int retract(struct db *db, const struct muc_op *op)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT id, stanza FROM chat_messages WHERE channel_id = ? AND"
                            " stanza_id = ? AND (? IS NULL OR occupant_id = ?) AND"
                            " retracted_at IS NULL", &st);
    if (rc)
        return rc;
    db_bind_int64(st, 1, op->channel_id);
    db_bind_text(st, 2, op->stanza_id);
    db_bind_text(st, 3, op->occupant_id);
    db_bind_text(st, 4, op->occupant_id);
    rc = db_step(st);
    if (rc != DB_ROW) {
        db_finalize(st);
        return rc < 0 ? rc : 0; /* not there, or not the author's: nothing to do */
    }
    int64_t id = db_column_int64(st, 0);
    const char *s = db_column_text(st, 1);
    struct xml_node *m = s ? mam_parse(s, strlen(s)) : NULL;
    db_finalize(st);
    struct xml_node *ts = op->xml ? mam_parse(op->xml, strlen(op->xml)) : NULL;
    struct buf b;
    buf_init(&b, 0);
    rc = -ENOMEM;
    if (m && ts) {
        for (struct xml_node *c = m->first, *next; c; c = next) {
            next = c->next;
            if (!(c->type == XML_NODE_ELEMENT && (strcmp(c->ns, MUC_NS_SID) == 0 ||
                                                  strcmp(c->ns, MUC_NS_OCCUPANT_ID) == 0)))
                xml_node_free(c);
        }
        xml_node_append(m, ts);
        ts = NULL;
        if (xml_serialize(m, NULL, &b) == 0 && buf_cstr(&b) == 0 &&
            db_prepare(db, "UPDATE chat_messages SET stanza = ?, body = NULL, retracted_at = ?,"
                           " retracted_by = ? WHERE id = ?", &st) == 0) {
            db_bind_text(st, 1, b.data);
            db_bind_int64(st, 2, op->ts_ms);
            db_bind_text(st, 3, op->by);
            db_bind_int64(st, 4, id);
            rc = step_done(st);
        }
    }
    buf_free(&b);
    xml_node_free(m);
    xml_node_free(ts);
    return rc;
}

static int apply_one(struct db *db, const struct muc_op *op, const char *user_domain)
{
    struct db_stmt *st;
    int rc;
    switch (op->kind) {
    case MUC_OP_MESSAGE:
        if ((rc = exec_bound(db, "INSERT INTO chat_messages (channel_id, stanza_id, origin_id,"
                                 " ts_ms, nick, occupant_id, from_jid, user_id, body, stanza)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT id FROM users WHERE id = ?),"
                                 " ?, ?)", &st)))
            return rc;
        db_bind_int64(st, 1, op->channel_id);
        db_bind_text(st, 2, op->stanza_id);
        db_bind_text(st, 3, op->origin_id);
        db_bind_int64(st, 4, op->ts_ms);
        db_bind_text(st, 5, op->nick);
        db_bind_text(st, 6, op->occupant_id);
        db_bind_text(st, 7, op->jid);
        db_bind_int64(st, 8, op->user_id);
        db_bind_text(st, 9, op->body);
        db_bind_text(st, 10, op->xml);
        return step_done(st);
    case MUC_OP_RETRACT:
        return retract(db, op);
    case MUC_OP_BAN_ADD: {
        int64_t uid = op->user_id;
        const char *at = op->jid ? strchr(op->jid, '@') : NULL;
        if (!uid && at && strcmp(at + 1, user_domain) == 0) {
            char name[JID_PART_MAX + 1];
            snprintf(name, sizeof name, "%.*s", (int)(at - op->jid), op->jid);
            muc_store_nick_owner(db, name, &uid);
        }
        if ((rc = exec_bound(db, "INSERT INTO chat_bans (channel_id, jid, user_id, ip, nick,"
                                 " reason, banned_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             &st)))
            return rc;
        db_bind_int64(st, 1, op->channel_id);
        db_bind_text(st, 2, op->jid);
        if (uid)
            db_bind_int64(st, 3, uid);
        else
            db_bind_null(st, 3);
        db_bind_text(st, 4, op->ip);
        db_bind_text(st, 5, op->nick);
        db_bind_text(st, 6, op->reason);
        db_bind_text(st, 7, op->by);
        db_bind_int64(st, 8, util_now_unix());
        return step_done(st);
    }
    case MUC_OP_BAN_REMOVE:
        if ((rc = exec_bound(db, "DELETE FROM chat_bans WHERE channel_id = ? AND jid = ?", &st)))
            return rc;
        db_bind_int64(st, 1, op->channel_id);
        db_bind_text(st, 2, op->jid);
        return step_done(st);
    case MUC_OP_SUBJECT:
        if ((rc = exec_bound(db, "UPDATE channels SET chat_subject = ? WHERE id = ?", &st)))
            return rc;
        db_bind_text(st, 1, op->body);
        db_bind_int64(st, 2, op->channel_id);
        return step_done(st);
    case MUC_OP_EXPIRE:
        if ((rc = exec_bound(db, "DELETE FROM chat_messages WHERE ts_ms < ?", &st)))
            return rc;
        db_bind_int64(st, 1, op->ts_ms);
        rc = step_done(st);
        if (rc == 0 && db_changes(db) > 0)
            log_info("muc: archive: %lld messages past retention deleted",
                     (long long)db_changes(db));
        return rc;
    }
    return -EINVAL;
}

int muc_store_apply(struct db *db, const struct muc_op *ops, const char *user_domain)
{
    int rc = db_begin(db);
    if (rc)
        return rc;
    for (const struct muc_op *op = ops; op; op = op->next) {
        rc = apply_one(db, op, user_domain);
        if (rc)
            log_warn("muc: archive: channel %lld: op %d failed (%d): %s",
                     (long long)op->channel_id, (int)op->kind, rc, db_errmsg(db));
    }
    return db_commit(db);
}
