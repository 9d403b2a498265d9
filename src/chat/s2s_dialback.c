/*
 * The pure parts of federation, kept apart from the sockets so they can be
 * tested alone: the dialback key and the static route table.
 *
 * Dialback key (XEP-0185): the originating server proves, through DNS, that
 * a key it sent on one stream is its own, when the receiving server asks it
 * back on another (db:verify). The key must be something only we can make
 * and that binds the two domains and the stream: HMAC-SHA256 keyed with
 * hex(SHA256(secret)) over "receiving originating stream-id", in lowercase hex,
 * exactly as the XEP says, so its test vector checks us. The secret is
 * random per process (s2s.c): keys are only checked while the stream that
 * carried them is being authenticated, so a restart loses nothing.
 *
 * Routes (xmpp.s2s_routes): "DOMAIN=HOST:PORT" entries, comma separated,
 * tried before DNS, for private deployments and tests.
 */
#include "chat/s2s.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

int s2s_dialback_key(const void *secret, size_t secret_len, const char *receiving,
                     const char *originating, const char *stream_id,
                     char out[S2S_DIALBACK_KEY_SIZE])
{
    if (!secret || !receiving || !originating || !stream_id || !*receiving || !*originating ||
        !*stream_id)
        return -EINVAL;
    /* The XEP's example (and Prosody) key the HMAC with the hex form of
     * SHA256(secret), so do the same: its test vector then checks us. */
    unsigned char h[crypto_hash_sha256_BYTES];
    char k[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(h, secret, secret_len);
    sodium_bin2hex(k, sizeof k, h, sizeof h);

    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)k, sizeof k - 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)receiving, strlen(receiving));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)" ", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)originating, strlen(originating));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)" ", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)stream_id, strlen(stream_id));
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, S2S_DIALBACK_KEY_SIZE, mac, sizeof mac);
    sodium_memzero(k, sizeof k);
    sodium_memzero(h, sizeof h);
    return 0;
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* One "DOMAIN=HOST:PORT" in [s, e). */
static int parse_one(const char *s, const char *e, struct s2s_route *r)
{
    trim(&s, &e);
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq)
        return -EINVAL;
    const char *ds = s, *de = eq;
    trim(&ds, &de);
    size_t dl = (size_t)(de - ds);
    if (dl == 0 || dl >= sizeof r->domain)
        return -EINVAL;
    for (size_t i = 0; i < dl; i++) {
        unsigned char c = (unsigned char)ds[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return -EINVAL;
        r->domain[i] = (char)tolower(c);
    }
    r->domain[dl] = '\0';
    if (r->domain[dl - 1] == '.')
        r->domain[dl - 1] = '\0';

    const char *hs = eq + 1, *he = e;
    trim(&hs, &he);
    const char *colon;
    const char *hstart = hs, *hend;
    if (hs < he && *hs == '[') {
        const char *close = memchr(hs, ']', (size_t)(he - hs));
        if (!close || close + 1 >= he || close[1] != ':')
            return -EINVAL;
        hstart = hs + 1;
        hend = close;
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = he; p > hs; p--)
            if (p[-1] == ':') {
                colon = p - 1;
                break;
            }
        if (!colon)
            return -EINVAL;
        hend = colon;
        if (memchr(hstart, ':', (size_t)(hend - hstart))) /* v6 without brackets */
            return -EINVAL;
    }
    size_t hl = (size_t)(hend - hstart);
    if (hl == 0 || hl >= sizeof r->host)
        return -EINVAL;
    for (size_t i = 0; i < hl; i++)
        if (isspace((unsigned char)hstart[i]) || hstart[i] == '=' || hstart[i] == ',')
            return -EINVAL;
    memcpy(r->host, hstart, hl);
    r->host[hl] = '\0';

    const char *ps = colon + 1;
    if (ps >= he)
        return -EINVAL;
    long port = 0;
    for (const char *p = ps; p < he; p++) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        port = port * 10 + (*p - '0');
        if (port > 65535)
            return -EINVAL;
    }
    if (port < 1)
        return -EINVAL;
    r->port = (int)port;
    return 0;
}

int s2s_routes_parse(const char *spec, struct s2s_route *out, size_t max, size_t *n,
                     char *err, size_t errlen)
{
    *n = 0;
    if (!spec)
        return 0;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *s = p, *t = e;
        trim(&s, &t);
        if (s < t) {
            if (*n >= max) {
                snprintf(err, errlen, "xmpp.s2s_routes: more than %zu routes", max);
                return -EINVAL;
            }
            if (parse_one(s, t, &out[*n]) < 0) {
                snprintf(err, errlen, "xmpp.s2s_routes: bad route '%.*s' (want DOMAIN=HOST:PORT)",
                         (int)(t - s), s);
                return -EINVAL;
            }
            if (s2s_routes_find(out, *n, out[*n].domain)) {
                snprintf(err, errlen, "xmpp.s2s_routes: '%s' is routed twice", out[*n].domain);
                return -EINVAL;
            }
            (*n)++;
        }
        p = *e ? e + 1 : e;
    }
    return 0;
}

const struct s2s_route *s2s_routes_find(const struct s2s_route *r, size_t n, const char *domain)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(r[i].domain, domain) == 0)
            return &r[i];
    return NULL;
}
