/*
 * The admin settings kept in the database (the `settings` table), as
 * opposed to hearth.conf: what an admin changes on a running instance
 * without a restart. Each key has a default, a sentence saying what it is,
 * and a rule; `hearth setting list|get|set` and the API read and write them
 * through here, so a value that breaks the rule never reaches the table.
 *
 *   registration_roles     the roles a new account gets at registration:
 *                          known role names, comma separated, never admin
 *   max_channels_per_user  how many channels a user who is not an admin may
 *                          own: a whole number from 1 to 100000
 *
 * The table also holds the server's secrets (internal.*): those are not
 * settings, and nothing here shows or changes them.
 *
 * Plain synchronous functions on a `struct db *` (a worker or the CLI).
 * They return 0 or a negative code (-ENOENT unknown key, -EINVAL a value
 * that breaks the rule, DB_E* from store/db.h) and write a sentence into
 * err when it is not NULL.
 */
#ifndef HEARTH_APP_SETTINGS_H
#define HEARTH_APP_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

struct db;

#define SETTING_VALUE_MAX 256

struct setting_def {
    const char *key;
    const char *def;   /* the value while the table has none */
    const char *about; /* one sentence for `hearth setting list` and the docs */
    /* Check value and write its normal form into out (SETTING_VALUE_MAX bytes). */
    int (*check)(const char *value, char *out, char *err, size_t errlen);
};

/* Every setting, in the order they are listed; *n is how many. */
const struct setting_def *settings_all(size_t *n);
/* The setting called key, or NULL. */
const struct setting_def *settings_find(const char *key);

/*
 * The value of key (SETTING_VALUE_MAX bytes into out); the default when the
 * table has none or holds one that breaks the rule (logged). *is_default,
 * when not NULL, says which.
 */
int settings_get(struct db *db, const char *key, char out[SETTING_VALUE_MAX], bool *is_default,
                 char *err, size_t errlen);
/* Check value and store its normal form (also written to out when not NULL). */
int settings_set(struct db *db, const char *key, const char *value, char out[SETTING_VALUE_MAX],
                 char *err, size_t errlen);

#endif
