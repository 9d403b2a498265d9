/*
 * The room archive (XEP-0313 MAM, urn:xmpp:mam:2) and the database side of
 * the MUC: loading a room's policy and recent history, the ordered queue of
 * writes (messages, retractions, bans, subject, retention), nick
 * reservations. Every function taking a struct db runs on a worker thread;
 * the rest is pure and runs anywhere.
 *
 * Paging (XEP-0059): result ids are the rooms' stanza-ids; rows are walked
 * by their integer primary key, which grows with arrival, so "after X" is
 * "id > id(X)". An empty <before/> asks for the last page.
 */
#ifndef HEARTH_CHAT_MAM_H
#define HEARTH_CHAT_MAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/muc_room.h"
#include "chat/xml.h"

struct db;

#define MAM_MAX_PAGE 100 /* results per page at most; the default too */

struct mam_query {
    int64_t channel_id;
    int64_t start_ms, end_ms; /* -1: unbounded */
    char *with_nick;          /* 'with' = room/nick; NULL: everyone */
    char *after, *before;     /* stanza-ids, NULL when absent */
    bool before_last;         /* <before/> empty: the last page */
    size_t max;
    char *queryid;
};

struct mam_item {
    char *stanza_id;
    int64_t ts_ms;
    struct xml_node *st; /* the archived <message/> */
};

struct mam_result {
    struct mam_item *items;
    size_t n;
    bool complete;
    int64_t count;
};

/* Read the iq's <query/> (form and RSM). 0, -EINVAL (bad-request). */
int mam_query_parse(const struct xml_node *query, struct mam_query *q);
void mam_query_clear(struct mam_query *q);
/* Worker. 0, -ENOENT (after/before is not in this archive), or negative. */
int mam_run(struct db *db, const struct mam_query *q, struct mam_result *out);
void mam_result_clear(struct mam_result *r);

/* One stanza from its text (what chat_messages.stanza holds). NULL when it
 * does not parse. Any thread. */
struct xml_node *mam_parse(const char *s, size_t len);

/* ---- room policy and history ------------------------------------------ */

struct muc_loaded {
    struct muc_policy *policy;
    struct xml_node **hist; /* oldest first */
    int64_t *hist_ts;
    size_t nhist;
};

/* Worker. By slug (channel_id 0) or by channel id. history: messages to
 * load, no older than since_ms. 0; -ENOENT when there is no such channel
 * or its chat is off; other negatives. */
int muc_store_load(struct db *db, const char *slug, int64_t channel_id, size_t history,
                   int64_t since_ms, struct muc_loaded *out);
void muc_loaded_clear(struct muc_loaded *l);

/* Worker. The account whose name is nick (prepared as a localpart): its
 * id, or 0. 0 or negative. */
int muc_store_nick_owner(struct db *db, const char *nick, int64_t *user_id);

/* Worker. Who wrote the archived message stanza_id of the channel (not
 * yet retracted): *is_author when its occupant_id is occupant_id or its
 * from_jid is bare. 0, -ENOENT when there is no such message, negative. */
int muc_store_message_author(struct db *db, int64_t channel_id, const char *stanza_id,
                             const char *occupant_id, const char *bare, bool *is_author);

/* ---- writes, in order -------------------------------------------------- */

enum muc_op_kind {
    MUC_OP_MESSAGE,    /* insert an archived message */
    MUC_OP_RETRACT,    /* tombstone stanza_id (author occupant_id, or any) */
    MUC_OP_BAN_ADD,
    MUC_OP_BAN_REMOVE, /* by channel and jid */
    MUC_OP_SUBJECT,
    MUC_OP_EXPIRE,     /* delete messages older than ts_ms, every room */
};

struct muc_op {
    struct muc_op *next;
    enum muc_op_kind kind;
    int64_t channel_id, ts_ms, user_id;
    char *stanza_id, *origin_id, *nick, *occupant_id, *jid, *body, *xml, *ip, *reason, *by;
};

void muc_op_free(struct muc_op *op);
/* Worker. Apply ops in one transaction (a failing op is logged and
 * skipped). user_domain: to find the account behind a banned NAME@DOMAIN.
 * 0 or negative. */
int muc_store_apply(struct db *db, const struct muc_op *ops, const char *user_domain);

#endif
