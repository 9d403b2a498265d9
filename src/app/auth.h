/*
 * Who is calling, and may they: sessions, CSRF, API keys, login throttling
 * and TOTP, for every API handler.
 *
 * A caller is identified by exactly one of:
 *   - an X-API-Key header ("hk_" + 43 base64url characters): no ambient
 *     authority, so such requests need no CSRF token. When the header is
 *     present it is the only credential looked at: a wrong key does not fall
 *     back to the cookie (that would let a junk header skip the CSRF check);
 *   - the hearth_session cookie: a state-changing request (POST, PUT, PATCH,
 *     DELETE) must then carry X-CSRF-Token equal to the session's token, and
 *     an Origin header, when sent, must be this site's;
 *   - nothing: a guest.
 * Only SHA-256 digests of session tokens and API keys are stored, so a copy of
 * the database does not let anyone log in.
 *
 * The usual handler (a HTTP_ROUTE_BLOCKING route, on a worker):
 *
 *     struct auth_ctx a;
 *     if (auth_identify(app, db, req, &a) < 0)
 *         goto out;                        // a 500 has been written
 *     if (!auth_require_user(req, &a))     // 401, or 403 "csrf" on a write
 *         goto out;
 *     if (!auth_require_owner(req, &a, channel.owner_id))   // 403 "forbidden"
 *         goto out;
 *
 * Every auth_require_* writes the JSON error ({"error", "code"}) and returns
 * false, or returns true and writes nothing. http_response_error() clears
 * headers set before it, so set headers after the error, not before.
 *
 * The pure helpers further down (tokens, cookies, TOTP, throttle, origin)
 * take everything as arguments, so the unit tests drive them without a
 * server or a clock.
 */
#ifndef HEARTH_APP_AUTH_H
#define HEARTH_APP_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/accounts.h"

struct app;
struct db;
struct http_request;
struct http_server;

#define AUTH_SESSION_COOKIE "hearth_session"
#define AUTH_CSRF_HEADER "X-CSRF-Token"
#define AUTH_API_KEY_HEADER "X-API-Key"
#define AUTH_API_KEY_PREFIX "hk_"
#define AUTH_TOKEN_LEN 43                            /* 32 random bytes, base64url, no padding */
#define AUTH_API_KEY_LEN (3 + AUTH_TOKEN_LEN)        /* "hk_" + token */
#define AUTH_HASH_HEX 64                             /* SHA-256 in lowercase hex */
#define AUTH_TOTP_SECRET_BYTES 20                    /* 160 bits, as RFC 4226 recommends */
#define AUTH_TOTP_SECRET_B32 32                      /* base32 of 20 bytes, no padding */
#define AUTH_TOTP_STEP 30
#define AUTH_TOTP_DIGITS 6

/* The body limit for the small JSON bodies of the account API. */
#define AUTH_JSON_MAX 16384

enum auth_via {
    AUTH_GUEST = 0,
    AUTH_VIA_SESSION, /* the hearth_session cookie */
    AUTH_VIA_API_KEY, /* X-API-Key */
};

struct auth_ctx {
    enum auth_via via;
    struct user user;  /* valid unless via == AUTH_GUEST (then zeroed) */
    int64_t session_id; /* AUTH_VIA_SESSION: the sessions row */
    int64_t api_key_id; /* AUTH_VIA_API_KEY: the api_keys row */
    char csrf_token[AUTH_TOKEN_LEN + 1]; /* AUTH_VIA_SESSION; "" otherwise */
    bool write;    /* the method changes state: POST, PUT, PATCH or DELETE */
    /*
     * False only for a session-authenticated write without the right
     * X-CSRF-Token, or with an Origin from another site. Guests and API keys
     * always pass (there is no ambient authority to abuse).
     */
    bool csrf_ok;
    /* An X-API-Key was sent but is unknown, expired, or its owner disabled. */
    bool bad_api_key;
};

/*
 * Fill *out for this request (a guest when no valid credential came). Runs
 * on a worker: it reads the database, and touches last_seen / last_used at
 * most once a minute. Returns 0; a negative code only when the database
 * failed, after writing a 500 error into the response.
 */
int auth_identify(struct app *app, struct db *db, struct http_request *req, struct auth_ctx *out);

/* ---- questions (write nothing) ---- */

bool auth_is_user(const struct auth_ctx *a);
bool auth_is_admin(const struct auth_ctx *a);
/* The user has role; an admin has every role. False for guests. */
bool auth_has_role(const struct auth_ctx *a, const char *role);
/* The user owns the thing (owner_id), or is an admin. False for guests. */
bool auth_can_manage(const struct auth_ctx *a, int64_t owner_id);

/* ---- requirements (write the error and return false) ---- */

/*
 * A signed-in user. 401 "unauthenticated" for a guest, 401
 * "invalid_api_key" for a rejected key, 403 "csrf" for a session write that
 * failed the CSRF check.
 */
bool auth_require_user(struct http_request *req, const struct auth_ctx *a);
/* auth_require_user, then 403 "forbidden" without the role (admins pass). */
bool auth_require_role(struct http_request *req, const struct auth_ctx *a, const char *role);
/* auth_require_user, then 403 "forbidden" unless owner or admin. */
bool auth_require_owner(struct http_request *req, const struct auth_ctx *a, int64_t owner_id);
/* auth_require_user, then 403 "forbidden" unless admin. */
bool auth_require_admin(struct http_request *req, const struct auth_ctx *a);
/*
 * auth_require_user, then 403 "session_required" for API-key callers: for
 * what a leaked key must not be able to do (mint keys, change the password
 * or e-mail, set up TOTP, delete the account).
 */
bool auth_require_session(struct http_request *req, const struct auth_ctx *a);
/*
 * For state-changing requests that anyone may make (login, register,
 * password reset): 403 "bad_origin" when the request carries an Origin that
 * is neither site.public_url's origin nor the Host it was sent to. A
 * cross-site form or fetch cannot then log a victim into the attacker's
 * account (login CSRF); clients that send no Origin (curl, scripts) are not
 * browsers acting for someone else and pass.
 */
bool auth_require_same_origin(struct app *app, struct http_request *req);

/*
 * The request body as a JSON object: 415 "unsupported_media_type" unless
 * Content-Type is application/json, 413 "too_large" over max_bytes, 400
 * "bad_json" when it does not parse or is not an object. NULL after writing
 * the error; otherwise a new reference the caller decrefs.
 */
json_t *auth_json_body(struct http_request *req, size_t max_bytes);

/* ---- tokens and cookies (pure) ---- */

/* 32 random bytes as 43 base64url characters. */
void auth_token_new(char out[AUTH_TOKEN_LEN + 1]);
/* Lowercase hex SHA-256 of a token: what the database keeps. */
void auth_token_hash(const char *token, char out[AUTH_HASH_HEX + 1]);
/* A token's shape: exactly AUTH_TOKEN_LEN base64url characters. */
bool auth_token_shaped(const char *token);
/* Constant-time comparison of two CSRF tokens; false when either is empty. */
bool auth_csrf_equal(const char *expected, const char *given);

/*
 * "hearth_session=VALUE; Path=/; Max-Age=N; HttpOnly; SameSite=Lax[; Secure]".
 * An empty value with max_age 0 clears the cookie. -ENAMETOOLONG when out is
 * too small.
 */
int auth_cookie_build(char *out, size_t n, const char *value, int64_t max_age, bool secure);
/*
 * The index-th value (0 first) of cookie `name` in a Cookie header; -ENOENT
 * when there is no such one, -ENAMETOOLONG when it does not fit.
 */
int auth_cookie_get(const char *header, const char *name, int index, char *out, size_t n);
/* Whether cookies must be Secure: site.public_url is https. */
bool auth_url_is_https(const char *public_url);

/*
 * The rule of auth_require_same_origin: true when origin is NULL, or equals
 * public_url's origin (scheme, host and port; default ports and case do not
 * matter), or its host[:port] equals the Host header. "null" never passes.
 */
bool auth_origin_allowed(const char *public_url, const char *origin, const char *host);

/* ---- TOTP, RFC 6238 (HMAC-SHA1) ---- */

/* The HOTP value (RFC 4226) for counter, reduced to digits (6 to 8) digits. */
uint32_t auth_hotp(const unsigned char *key, size_t keylen, uint64_t counter, int digits);
/*
 * Check a 6-digit code at Unix time now, allowing one step either side.
 * Codes of a step at or before last_step (the last one used) are refused, so
 * a code works once. Returns 0 and the matching step in *step, or -EACCES.
 */
int auth_totp_check(const unsigned char *key, size_t keylen, const char *code, int64_t now,
                    int64_t last_step, int64_t *step);
/* RFC 4648 base32 without padding; -ENAMETOOLONG when out is too small. */
int auth_base32_encode(const unsigned char *in, size_t n, char *out, size_t outlen);
/* Decodes upper or lower case, ignores spaces and '='; returns bytes written or -EINVAL. */
long auth_base32_decode(const char *in, unsigned char *out, size_t outlen);

/* ---- login throttling (thread-safe, in memory) ---- */

/*
 * Failures per key (an IP address, an account) within a window. Once
 * max_failures have happened since the key's window opened, further attempts
 * are refused until the window closes. Keys are hashed with a per-process
 * random key, so the table keeps no addresses or names and its slots cannot
 * be aimed at; when full, the entry whose window is oldest is forgotten.
 */
struct auth_throttle;

struct auth_throttle *auth_throttle_new(size_t slots, int max_failures, int64_t window_s);
void auth_throttle_free(struct auth_throttle *t);
/* 0 when an attempt is allowed now, else the seconds to wait (Retry-After). */
int64_t auth_throttle_check(struct auth_throttle *t, const char *key, int64_t now);
/* Count one failure. */
void auth_throttle_fail(struct auth_throttle *t, const char *key, int64_t now);
/* Forget a key (a successful login clears its account's count). */
void auth_throttle_clear(struct auth_throttle *t, const char *key);

/*
 * The throttle key of a peer address as http_request.remote writes it
 * ("1.2.3.4:5678", "[2001:db8::1]:5678"): "ip:1.2.3.4", or for IPv6 the /64
 * ("ip6:2001:db8:0:0::/64"), since one host usually holds a whole /64.
 */
void auth_throttle_ip_key(const char *remote, char *out, size_t n);

/* ---- routes ---- */

/* /api/v1/auth/..., /api/v1/me, /api/v1/me/api-keys, /api/v1/me/totp. */
int api_auth_register(struct app *app, struct http_server *srv);

/*
 * DELETE /api/v1/me on a worker, for the route api_channels.c registers:
 * checks what api_auth.c asks of it (a session, not an API key; the
 * password, throttled like logins; a JSON body {password}), then calls fn to
 * delete the account and what it owns. fn returns 0 or a negative code with
 * a sentence in err (accounts.h codes). The answer is written into req:
 * 200 {"ok": true} with the session cookie cleared, or the error.
 */
typedef int (*api_auth_delete_fn)(struct db *db, const struct user *u, void *ud, char *err,
                                  size_t errlen);
int api_auth_me_delete(struct app *app, struct db *db, struct http_request *req,
                       const struct auth_ctx *a, api_auth_delete_fn fn, void *ud);

#endif
