/*
 * Accounts, topics and channels: the rules about names, roles, passwords,
 * slugs and stream keys, on top of store/db.h.
 *
 * Plain synchronous functions on a `struct db *`: they run on a worker
 * thread (API handlers) or in the CLI, never on the loop thread. Each returns
 * 0 or a negative code and, when err is not NULL, writes a sentence a person
 * can act on into err:
 *   -EINVAL  a value breaks a rule (the message says which rule)
 *   -EEXIST  the name, email or slug is taken
 *   -ENOENT  no such user, topic, channel or stream key
 *   -EACCES  wrong password, or a disabled account
 *   -ENOMEM, or a DB_E* code from store/db.h for database failures.
 *
 * Who may do what (only admins add users, streamers add their own channels)
 * is the caller's decision; these functions only keep the data valid.
 */
#ifndef HEARTH_APP_ACCOUNTS_H
#define HEARTH_APP_ACCOUNTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;

#define ACCOUNT_NAME_MAX 32        /* bytes; the name is also an XMPP localpart */
#define ACCOUNT_EMAIL_MAX 254
#define ACCOUNT_PASSWORD_MIN 8
#define ACCOUNT_PASSWORD_MAX 1024
#define CHANNEL_TITLE_MAX 140      /* bytes of UTF-8 */
#define CHANNEL_SLUG_MAX 48
#define CHANNEL_DESCRIPTION_MAX 2000
#define CHANNEL_STREAM_KEY_LEN 43  /* 32 random bytes, base64url without padding */
#define TOPIC_NAME_MAX 64

/* The roles, in the order they are stored and shown. */
#define ACCOUNT_ROLES "admin,streamer,recorder,uploader,user"

struct user {
    int64_t id;
    char name[ACCOUNT_NAME_MAX + 1];
    char email[ACCOUNT_EMAIL_MAX + 1]; /* "" when none */
    char roles[64];                    /* normalised: "admin,user" */
    int64_t created_at;
    bool disabled;
};

struct topic {
    int64_t id;
    char name[TOPIC_NAME_MAX + 1];
    char slug[CHANNEL_SLUG_MAX + 1];
    int64_t created_at;
};

struct channel {
    int64_t id;
    int64_t owner_id;
    char owner_name[ACCOUNT_NAME_MAX + 1];
    char slug[CHANNEL_SLUG_MAX + 1];
    char title[CHANNEL_TITLE_MAX + 1];
    char topic[TOPIC_NAME_MAX + 1]; /* the topic's name, "" when none */
    char description[CHANNEL_DESCRIPTION_MAX + 1];
    char stream_key[CHANNEL_STREAM_KEY_LEN + 1];
    bool record;
    int64_t created_at;
    bool owner_disabled; /* a disabled owner may not go live */
};

/* ---- users ---- */

/*
 * Add a user. email may be NULL or "" (none); roles NULL means "user".
 * The password is hashed with argon2id (interactive limits, ~0.1-0.5 s and
 * 64 MiB), so call this from a worker, not the loop.
 */
int account_user_add(struct db *db, const char *name, const char *email, const char *roles,
                     const char *password, struct user *out, char *err, size_t errlen);

/* Name lookup ignores case, as the UNIQUE constraint does. */
int account_user_find(struct db *db, const char *name, struct user *out, char *err,
                      size_t errlen);

/*
 * Call fn for every user, ordered by name. A non-zero return from fn stops
 * the walk and is returned.
 */
int account_user_list(struct db *db, int (*fn)(const struct user *u, void *ud), void *ud,
                      char *err, size_t errlen);

int account_user_set_password(struct db *db, const char *name, const char *password, char *err,
                              size_t errlen);
int account_user_set_roles(struct db *db, const char *name, const char *roles, char *err,
                           size_t errlen);
int account_user_set_disabled(struct db *db, const char *name, bool disabled, char *err,
                              size_t errlen);
/* Also deletes the user's channels and their streams (ON DELETE CASCADE). */
int account_user_delete(struct db *db, const char *name, char *err, size_t errlen);

/* 0 when password matches the stored hash, -EACCES otherwise. */
int account_password_verify(const char *hash, const char *password);

/*
 * Log in: 0 and *out filled when the user exists, is enabled and the
 * password matches; -EACCES otherwise, with the same message and about the
 * same time whether or not the user exists.
 */
int account_authenticate(struct db *db, const char *name, const char *password,
                         struct user *out, char *err, size_t errlen);

/* Normalise a comma-separated role list into out ("user,admin" -> "admin,user"). */
int account_roles_normalize(const char *roles, char *out, size_t outlen, char *err,
                            size_t errlen);
/* Whether a normalised role list contains role. */
bool account_has_role(const char *roles, const char *role);

/* Rule checks, also for forms that want to answer before submitting. */
int account_name_valid(const char *name, char *err, size_t errlen);
int account_email_valid(const char *email, char *err, size_t errlen);

/* ---- topics ---- */

/* The slug is derived from the name as channel slugs are. */
int topic_add(struct db *db, const char *name, struct topic *out, char *err, size_t errlen);
int topic_list(struct db *db, int (*fn)(const struct topic *t, void *ud), void *ud, char *err,
               size_t errlen);
/* The topic with this slug; -ENOENT when there is none. */
int topic_find(struct db *db, const char *slug, struct topic *out, char *err, size_t errlen);
/*
 * A new name for the topic with this slug. The slug stays, so /topic/<slug>
 * links keep working. -EEXIST when another topic has the name.
 */
int topic_rename(struct db *db, const char *slug, const char *name, struct topic *out, char *err,
                 size_t errlen);
/* Remove a topic; its channels are left without one. */
int topic_remove(struct db *db, const char *slug, char *err, size_t errlen);

/* ---- channels ---- */

/*
 * Add a channel owned by owner_name. slug NULL or "" derives one from the
 * title ("-2", "-3"... on collision); an explicit slug that is taken or
 * reserved is an error. topic NULL or "" means none; otherwise it must name
 * an existing topic (by name or slug). A fresh stream key is made.
 */
int channel_add(struct db *db, const char *owner_name, const char *title, const char *slug,
                const char *topic, struct channel *out, char *err, size_t errlen);

int channel_find_by_slug(struct db *db, const char *slug, struct channel *out, char *err,
                         size_t errlen);

/*
 * Call fn for every channel, or only those of owner_name when not NULL,
 * ordered by slug. A non-zero return from fn stops the walk and is returned.
 */
int channel_list(struct db *db, const char *owner_name,
                 int (*fn)(const struct channel *c, void *ud), void *ud, char *err,
                 size_t errlen);

/* Replace the stream key; the old one stops working at once. */
int channel_key_reset(struct db *db, const char *slug, struct channel *out, char *err,
                      size_t errlen);

/*
 * The channel a publisher's key belongs to: looked up by the key's SHA-256,
 * then compared in constant time. -ENOENT for an unknown key. A disabled
 * owner is not an error here: out->owner_disabled says so, and the ingest
 * decides.
 */
int channel_find_by_stream_key(struct db *db, const char *key, struct channel *out, char *err,
                               size_t errlen);

int channel_delete(struct db *db, const char *slug, char *err, size_t errlen);

int channel_slug_valid(const char *slug, char *err, size_t errlen);
/* Derive a slug from free text; always yields a valid slug (maybe reserved). */
void channel_slug_derive(const char *text, char out[CHANNEL_SLUG_MAX + 1]);
bool channel_slug_reserved(const char *slug);

/*
 * "rtmp://<host of public_url>/live", with ":<port>" when rtmp_listen's port
 * is not 1935. -EINVAL when public_url has no host.
 */
int channel_rtmp_url(const char *public_url, const char *rtmp_listen, char *out, size_t outlen);

/* ---- JSON for the API ---- */

/* id, name, email (null when none), roles (array), created_at, disabled. */
json_t *user_to_json(const struct user *u);

/*
 * id, slug, title, owner, topic (null when none), description, record,
 * created_at, owner_disabled, rtmp_url, hls_url, watch_url, and stream_key
 * only when with_key. public_url NULL leaves the URLs out.
 */
json_t *channel_to_json(const struct channel *c, const char *public_url, const char *rtmp_listen,
                        bool with_key);

#endif
