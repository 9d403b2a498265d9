/*
 * The web app's side of chat (api_chat.c): chat tokens for the web client,
 * what a page needs to join a channel's room, and the room's policy as the
 * channel's owner and moderators edit it on the web page (settings,
 * moderators, bans, banned words), plus the site-wide bans and words.
 *
 * The policy lives in the database (0004_chat.sql); the MUC service
 * (chat/muc.h) reads it. Every change made here is followed by
 * chat_room_changed, so a room that is open now applies it at once.
 */
#ifndef HEARTH_APP_API_CHAT_H
#define HEARTH_APP_API_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct app;
struct auth_ctx;
struct channel_ext;
struct db;
struct http_request;
struct http_server;

#define CHAT_SUBJECT_MAX 200       /* characters (code points) */
#define CHAT_SLOW_MODE_MAX 3600    /* seconds */
#define CHAT_BANNED_WORDS_MAX 500  /* per channel, and site-wide */
#define CHAT_BANNED_WORD_MAX 100   /* characters */
#define CHAT_BAN_REASON_MAX 200    /* characters */

/* A channel's chat columns. */
struct chat_settings {
    bool guests_may_talk;
    int64_t slow_mode;                     /* seconds; 0 off */
    char subject[CHAT_SUBJECT_MAX * 4 + 1]; /* "" when none: the channel title is used */
};

/* Worker thread. 0, -ENOENT (no such channel) or a DB_E* code. */
int chat_settings_load(struct db *db, int64_t channel_id, struct chat_settings *out);

/*
 * The chat fields of a PATCH/POST body (chat_guests_may_talk,
 * chat_slow_mode, chat_subject), checked. Absent fields stay as they are.
 */
struct chat_patch {
    int guests_may_talk; /* -1 absent, 0, 1 */
    int64_t slow_mode;   /* -1 absent */
    bool subject_set;    /* subject NULL or "" then clears it */
    const char *subject;
};

/* Fill p from the body; false after writing a 400 into req. */
bool chat_patch_parse(struct http_request *req, json_t *body, struct chat_patch *p);
bool chat_patch_empty(const struct chat_patch *p);
/* Apply p to the channel (one UPDATE). 0 or a DB_E* code. */
int chat_patch_apply(struct db *db, int64_t channel_id, const struct chat_patch *p);

/* chat_guests_may_talk, chat_slow_mode, chat_subject (null when none) and chatters into o. */
void chat_channel_json(struct app *app, json_t *o, int64_t channel_id,
                       const struct chat_settings *s);

/* Occupants of the channel's room now; 0 without a MUC service. Any thread. */
size_t chat_occupants(struct app *app, int64_t channel_id);
/* Tell the MUC service (when there is one) that the channel's policy changed. Any thread. */
void chat_room_changed(struct app *app, int64_t channel_id, const char *old_slug);

/* The routes of api_chat.c. */
int api_chat_register(struct app *app, struct http_server *srv);

/*
 * Defined in api_channels.c: may the caller watch the channel (protected
 * channels: owner, admin, invited user, a watch-token cookie, ?invite=CODE)?
 * Worker thread; false when api_channels_register has not run.
 */
bool api_channels_may_watch(struct http_request *req, struct db *db, const struct auth_ctx *a,
                            const struct channel_ext *c);

#endif
