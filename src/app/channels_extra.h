/*
 * Channels beyond accounts.h: the web app's columns (chat, protection,
 * images, live title), edits, invitations and invite codes, following,
 * in-app notifications, the per-user channel cap, and the peak viewer count
 * of a stream.
 *
 * Like accounts.h: plain synchronous functions on a `struct db *`, for
 * worker threads and the CLI, never the loop. They return 0 or a negative
 * code (-EINVAL a rule, -EEXIST taken, -ENOENT missing, -ENOMEM, DB_E*) and
 * write a sentence a person can act on into err when it is not NULL. Who may
 * do what is the caller's decision.
 */
#ifndef HEARTH_APP_CHANNELS_EXTRA_H
#define HEARTH_APP_CHANNELS_EXTRA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/accounts.h"

struct db;

#define CHANNEL_INVITE_CODE_LEN 22 /* 16 random bytes, base64url without padding */
#define CHANNEL_HASH_HEX 64        /* SHA-256, lowercase hex */
#define CHANNEL_IMAGE_PATH_MAX 160 /* relative to storage.data_dir */
#define CHANNELS_PER_USER_DEFAULT 5

/* A channel with everything the web app shows or decides on. */
struct channel_ext {
    struct channel c;
    char topic_slug[CHANNEL_SLUG_MAX + 1]; /* "" when none */
    char live_title[CHANNEL_TITLE_MAX + 1]; /* "" when the channel's title is used */
    bool chat_enabled;
    bool is_protected;
    char invite_code_hash[CHANNEL_HASH_HEX + 1]; /* "" when there is no invite code */
    int64_t access_gen;
    char avatar_path[CHANNEL_IMAGE_PATH_MAX]; /* "" when none */
    char banner_path[CHANNEL_IMAGE_PATH_MAX];
    int64_t followers;
    int64_t last_live_at; /* start of the latest stream; 0 never */
};

/* What the live directory shows: the title while live. */
const char *channel_ext_live_title(const struct channel_ext *c);

int channel_ext_find(struct db *db, const char *slug, struct channel_ext *out, char *err,
                     size_t errlen);
int channel_ext_find_id(struct db *db, int64_t id, struct channel_ext *out, char *err,
                        size_t errlen);

enum channel_sort { CHANNEL_SORT_SLUG = 0, CHANNEL_SORT_RECENT, CHANNEL_SORT_NEW };

struct channel_query {
    const char *topic;   /* a topic's slug or name; NULL: any */
    const char *q;       /* substring of title, live title, slug or owner name; NULL: any */
    const char *owner;   /* an owner's name; NULL: any */
    int64_t followed_by; /* only channels this user follows; 0: any */
    /* Protected channels are listed only to those who may watch them. */
    int64_t viewer_id; /* 0 for a guest */
    bool viewer_admin;
    enum channel_sort sort;
    int limit, offset;
};

/* Call fn for each matching channel; a non-zero return stops and is returned. */
int channel_ext_list(struct db *db, const struct channel_query *q,
                     int (*fn)(const struct channel_ext *c, void *ud), void *ud, char *err,
                     size_t errlen);

/* Call fn for every protected channel (for the loop's door at start-up). */
int channel_protected_foreach(struct db *db,
                              int (*fn)(const char *slug, int64_t id, int64_t access_gen,
                                        const char *invite_hash, void *ud),
                              void *ud);

/* Text rules (also for forms). A description may hold newlines and tabs. */
int channel_title_valid(const char *title, char *err, size_t errlen);
int channel_description_valid(const char *description, char *err, size_t errlen);

/* An edit: NULL / -1 leave a field as it is. */
struct channel_patch {
    const char *title;
    const char *description;
    bool topic_set;   /* topic NULL or "" then clears it */
    const char *topic; /* a topic's name or slug */
    bool live_title_set; /* live_title NULL or "" then clears it */
    const char *live_title;
    int record, chat_enabled, is_protected; /* -1, 0 or 1 */
};

/* Apply an edit in one transaction; *out (if not NULL) is the result. */
int channel_update(struct db *db, const char *slug, const struct channel_patch *p,
                   struct channel_ext *out, char *err, size_t errlen);

/* Images: set (relpath) or clear (NULL); the path it had goes to old (may be ""). */
int channel_set_image(struct db *db, int64_t channel_id, bool banner, const char *relpath,
                      char old[CHANNEL_IMAGE_PATH_MAX], char *err, size_t errlen);

/* ---- protection ---- */

/* A new invite code (the old one stops working, and so do watch tokens). */
int channel_invite_code_new(struct db *db, int64_t channel_id,
                            char code[CHANNEL_INVITE_CODE_LEN + 1], char *err, size_t errlen);
int channel_invite_code_clear(struct db *db, int64_t channel_id, char *err, size_t errlen);
/* Constant-time check of a code against the channel's hash. */
bool channel_invite_code_matches(const char *hash_hex, const char *code);
/* The SHA-256 hex of a code, as stored. */
void channel_invite_code_hash(const char *code, char out[CHANNEL_HASH_HEX + 1]);

int channel_invite_add(struct db *db, int64_t channel_id, const char *user_name,
                       struct user *out, char *err, size_t errlen);
/* Withdraws the invitation and revokes the channel's watch tokens. */
int channel_invite_remove(struct db *db, int64_t channel_id, const char *user_name, char *err,
                          size_t errlen);
int channel_invite_list(struct db *db, int64_t channel_id,
                        int (*fn)(const struct user *u, int64_t invited_at, void *ud), void *ud,
                        char *err, size_t errlen);
int channel_is_invited(struct db *db, int64_t channel_id, int64_t user_id, bool *out);

/* ---- following ---- */

/* Follow (or update notify_email: -1 keeps it, 0/1 sets it). */
int channel_follow(struct db *db, int64_t user_id, int64_t channel_id, int notify_email,
                   char *err, size_t errlen);
/* -ENOENT when the user did not follow the channel. */
int channel_unfollow(struct db *db, int64_t user_id, int64_t channel_id, char *err,
                     size_t errlen);
int channel_follow_state(struct db *db, int64_t user_id, int64_t channel_id, bool *following,
                         bool *notify_email);

/* ---- notifications ---- */

/*
 * The channel went live: one 'live' notification for each follower, unless
 * they got one for this channel in the last ten minutes (a streamer whose
 * connection flaps does not flood anyone). *count: how many were added.
 */
int notifications_channel_live(struct db *db, int64_t channel_id, int64_t now, int64_t *count);

struct notification {
    int64_t id;
    char kind[16];
    int64_t channel_id; /* 0 when none */
    char channel_slug[CHANNEL_SLUG_MAX + 1];
    char channel_title[CHANNEL_TITLE_MAX + 1];
    int64_t created_at;
    int64_t read_at; /* 0 unread */
};

int notifications_list(struct db *db, int64_t user_id, bool unread_only, int limit,
                       int (*fn)(const struct notification *n, void *ud), void *ud, char *err,
                       size_t errlen);
/* Mark one (id) or all (id 0) of the user's notifications read; *changed says how many. */
int notifications_mark_read(struct db *db, int64_t user_id, int64_t id, int64_t now,
                            int64_t *changed);

/* ---- settings, counts, streams ---- */

/* An integer setting; def when it is missing or not a number. */
int settings_get_int(struct db *db, const char *key, int64_t def, int64_t *out);
/* 32 secret bytes kept under key, made on first use. */
int settings_secret(struct db *db, const char *key, unsigned char out[32]);

int channel_count_owned(struct db *db, int64_t owner_id, int64_t *out);

/*
 * Record a stream's peak viewer count: the latest streams row of the channel
 * that started within 2 s of started_unix keeps the larger of its value and
 * peak. Called while the stream runs (as the peak rises) and when it ends;
 * a row not yet written (its insert is queued too) is left alone rather
 * than the previous stream's row being given this one's peak.
 */
int stream_peak_record(struct db *db, int64_t channel_id, int64_t started_unix, int64_t peak);

/* ---- JSON ---- */

/*
 * Who looks at a channel, for what its JSON shows. The stream key is the
 * owner's alone: an admin who manages the channel sees its settings but not
 * the key, which would let them broadcast as the owner (they may still make
 * a new one, which the owner then reads).
 */
enum channel_view {
    CHANNEL_VIEW_PUBLIC = 0, /* anyone who may watch it */
    CHANNEL_VIEW_OWNER = 1,  /* its owner, by session or by their own API key */
    CHANNEL_VIEW_MANAGER = 2, /* an admin who is not its owner */
};

/*
 * channel_to_json() plus topic_slug, live_title, chat_enabled, protected,
 * followers, last_live_at, avatar_url and banner_url (null when none).
 * CHANNEL_VIEW_MANAGER adds rtmp_url and has_invite_code; CHANNEL_VIEW_OWNER
 * those and stream_key and obs {server, key}. The public view has no RTMP
 * address either.
 */
json_t *channel_ext_to_json(const struct channel_ext *c, const char *public_url,
                            const char *rtmp_listen, enum channel_view view);

/* ---- search ---- */

#define USER_SEARCH_MAX 20

/*
 * Call fn for enabled users whose name contains q (no case, LIKE wildcards
 * taken literally), an exact match first, then by name; at most limit
 * (1 to USER_SEARCH_MAX). Users without channels are found too.
 */
int user_search(struct db *db, const char *q, int limit,
                int (*fn)(const struct user *u, void *ud), void *ud, char *err, size_t errlen);

#endif
