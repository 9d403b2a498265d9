/*
 * The admin settings in the database (see settings.h): a short table of
 * known keys, each with its default and its rule, and get/set on top of the
 * `settings` table.
 *
 * Why a table of known keys rather than free key/value pairs: the server
 * reads these values on every registration and every new channel, and a
 * typo (a role that does not exist, a cap of "five") would otherwise be
 * found only then, by a user, as a silent fallback. Here it is refused when
 * it is typed. A value that got into the table some other way (raw SQL) is
 * still read safely: settings_get falls back to the default and says so in
 * the log.
 */
#include "app/settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/accounts.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

#define MAX_CHANNELS_CAP 100000

/*
 * Roles for new accounts. Admin is refused: with open registration a slip
 * here would hand the instance to whoever signs up next.
 */
static int check_roles(const char *value, char *out, char *err, size_t errlen)
{
    int rc = account_roles_normalize(value, out, SETTING_VALUE_MAX, err, errlen);
    if (rc < 0)
        return rc == -ENAMETOOLONG ? util_fail(-EINVAL, err, errlen, "role list too long") : rc;
    if (account_has_role(out, "admin"))
        return util_fail(-EINVAL, err, errlen,
                    "new accounts may not be admins; give admin to a person with "
                    "`hearth user add --role admin`");
    return 0;
}

static int check_cap(const char *value, char *out, char *err, size_t errlen)
{
    char *end = NULL;
    long long x = value && *value >= '0' && *value <= '9' ? strtoll(value, &end, 10) : 0;
    if (!end || *end || x < 1 || x > MAX_CHANNELS_CAP)
        return util_fail(-EINVAL, err, errlen, "max_channels_per_user is a whole number from 1 to %d",
                    MAX_CHANNELS_CAP);
    snprintf(out, SETTING_VALUE_MAX, "%lld", x);
    return 0;
}

static const struct setting_def defs[] = {
    {"registration_roles", "streamer,user",
     "roles a new account gets when it registers (known roles, comma separated; not admin)",
     check_roles},
    {"max_channels_per_user", "5",
     "how many channels a user who is not an admin may own (1 to 100000)", check_cap},
};

const struct setting_def *settings_all(size_t *n)
{
    *n = sizeof defs / sizeof defs[0];
    return defs;
}

const struct setting_def *settings_find(const char *key)
{
    for (size_t i = 0; key && i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i].key, key) == 0)
            return &defs[i];
    return NULL;
}

static int unknown(const char *key, char *err, size_t errlen)
{
    char names[256];
    size_t n = 0;
    names[0] = '\0';
    for (size_t i = 0; i < sizeof defs / sizeof defs[0] && n < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", defs[i].key);
    return util_fail(-ENOENT, err, errlen, "no setting '%.64s' (settings: %s)",
                key && util_text_ok(key, NULL) ? key : "?", names);
}

int settings_get(struct db *db, const char *key, char out[SETTING_VALUE_MAX], bool *is_default,
                 char *err, size_t errlen)
{
    const struct setting_def *d = settings_find(key);
    if (!d)
        return unknown(key, err, errlen);
    snprintf(out, SETTING_VALUE_MAX, "%s", d->def);
    if (is_default)
        *is_default = true;
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT value FROM settings WHERE key = ?", &st);
    if (rc < 0)
        return util_fail(rc, err, errlen, "database error while reading %s: %s", key, db_errmsg(db));
    db_bind_text(st, 1, key);
    rc = db_step(st);
    if (rc == DB_ROW) {
        char why[256], norm[SETTING_VALUE_MAX];
        const char *v = db_column_text(st, 0);
        if (d->check(v ? v : "", norm, why, sizeof why) == 0) {
            memcpy(out, norm, SETTING_VALUE_MAX);
            if (is_default)
                *is_default = false;
        } else {
            log_warn("settings: the stored %s breaks its rule (%s); using '%s'", key, why, d->def);
        }
    }
    db_finalize(st);
    if (rc < 0)
        return util_fail(rc, err, errlen, "database error while reading %s: %s", key, db_errmsg(db));
    return 0;
}

int settings_set(struct db *db, const char *key, const char *value, char out[SETTING_VALUE_MAX],
                 char *err, size_t errlen)
{
    const struct setting_def *d = settings_find(key);
    if (!d)
        return unknown(key, err, errlen);
    char norm[SETTING_VALUE_MAX];
    if (!value || strlen(value) >= SETTING_VALUE_MAX)
        return util_fail(-EINVAL, err, errlen, "a setting's value is at most %d bytes",
                    SETTING_VALUE_MAX - 1);
    int rc = d->check(value, norm, err, errlen);
    if (rc < 0)
        return rc;
    struct db_stmt *st;
    if ((rc = db_prepare(db,
                         "INSERT INTO settings (key, value) VALUES (?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         &st)) < 0)
        return util_fail(rc, err, errlen, "database error while setting %s: %s", key, db_errmsg(db));
    db_bind_text(st, 1, key);
    db_bind_text(st, 2, norm);
    rc = db_step(st);
    db_finalize(st);
    if (rc < 0)
        return util_fail(rc, err, errlen, "database error while setting %s: %s", key, db_errmsg(db));
    log_info("settings: %s = %s", key, norm);
    if (out)
        memcpy(out, norm, SETTING_VALUE_MAX);
    return 0;
}
