/*
 * JID parsing and normalisation on libidn's stringprep. See jid.h for the
 * rules and why these profiles.
 *
 * libidn prepares in place in a caller's buffer and a string can grow under
 * preparation (NFKC turns one ligature into up to 18 characters), so each
 * part is copied into a PREP_BUF-byte scratch buffer first; a raw part that
 * does not fit, or a result that does not, is longer than JID_PART_MAX
 * anyway. Input is checked to be UTF-8 without NUL before libidn sees it
 * (libidn would say ICONV_ERROR, but a NUL would end its string early).
 */
#include "chat/jid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <idna.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#define PREP_BUF 4096

static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        if (c >= 0xC2 && c <= 0xDF)
            k = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 4;
        else
            return false;
        if (n - i < k)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] > 0x9F) ||
            (c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] > 0x8F))
            return false; /* overlong, surrogate, above U+10FFFF */
        i += k;
    }
    return true;
}

/* Copy in to tmp and run a profile over it; the result is in tmp. */
static int prep(const char *in, size_t len, char *tmp, const Stringprep_profile *profile,
                bool strict)
{
    if (len == 0 || len >= PREP_BUF || !utf8_valid((const unsigned char *)in, len))
        return -EINVAL;
    memcpy(tmp, in, len);
    tmp[len] = '\0';
    if (stringprep(tmp, PREP_BUF, strict ? STRINGPREP_NO_UNASSIGNED : 0, profile) !=
        STRINGPREP_OK)
        return -EINVAL;
    size_t n = strlen(tmp);
    if (n == 0 || n > JID_PART_MAX)
        return -EINVAL;
    return 0;
}

int jid_prep_local(const char *in, size_t len, char *out, bool strict)
{
    char tmp[PREP_BUF];
    int rc = prep(in, len, tmp, stringprep_xmpp_nodeprep, strict);
    if (rc)
        return rc;
    /* Nodeprep prohibits these already (RFC 6122 A.5); RFC 7622 3.3.1 says
     * so again, and the check costs nothing. */
    if (strpbrk(tmp, "\"&'/:<>@ "))
        return -EINVAL;
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

int jid_prep_resource(const char *in, size_t len, char *out, bool strict)
{
    char tmp[PREP_BUF];
    int rc = prep(in, len, tmp, stringprep_xmpp_resourceprep, strict);
    if (rc)
        return rc;
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

/* An IP literal in canonical form, 0; -ENOENT when in is not one. */
static int ip_literal(const char *in, size_t len, char *out)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    unsigned char addr[16];
    if (len >= 2 && in[0] == '[') {
        if (in[len - 1] != ']' || len - 2 >= sizeof tmp)
            return -EINVAL;
        memcpy(tmp, in + 1, len - 2);
        tmp[len - 2] = '\0';
        if (inet_pton(AF_INET6, tmp, addr) != 1)
            return -EINVAL;
        out[0] = '[';
        if (!inet_ntop(AF_INET6, addr, out + 1, INET6_ADDRSTRLEN))
            return -EINVAL;
        strcat(out, "]");
        return 0;
    }
    for (size_t i = 0; i < len; i++)
        if ((in[i] < '0' || in[i] > '9') && in[i] != '.')
            return -ENOENT;
    if (len >= sizeof tmp)
        return -EINVAL;
    memcpy(tmp, in, len);
    tmp[len] = '\0';
    /* All digits and dots but not an address ("1.2.3"): not a name either. */
    if (inet_pton(AF_INET, tmp, addr) != 1)
        return -EINVAL;
    return inet_ntop(AF_INET, addr, out, INET_ADDRSTRLEN) ? 0 : -EINVAL;
}

/* IDNA label separators (U+3002, U+FF0E, U+FF61) become dots (RFC 3490
 * 3.1); returns the new length. */
static size_t map_dots(const char *in, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 &&
            (memcmp(in + i, "\xE3\x80\x82", 3) == 0 || memcmp(in + i, "\xEF\xBC\x8E", 3) == 0 ||
             memcmp(in + i, "\xEF\xBD\xA1", 3) == 0)) {
            out[n++] = '.';
            i += 3;
        } else {
            out[n++] = in[i++];
        }
    }
    return n;
}

int jid_prep_domain(const char *in, size_t len, char *out, bool strict)
{
    char raw[PREP_BUF], tmp[PREP_BUF];
    if (len == 0 || len >= PREP_BUF)
        return -EINVAL;
    size_t n = map_dots(in, len, raw);
    /* One trailing dot is the DNS root, not part of the name (7622 3.2). */
    if (n > 0 && raw[n - 1] == '.')
        n--;
    if (n == 0)
        return -EINVAL;
    int rc = ip_literal(raw, n, out);
    if (rc != -ENOENT)
        return rc;
    if ((rc = prep(raw, n, tmp, stringprep_nameprep, strict)) != 0)
        return rc;
    /* NFKC can make a separator (U+FE12 -> U+3002); map it and prepare
     * again, so that a prepared domain is a fixed point. */
    size_t tl = strlen(tmp);
    size_t mapped = map_dots(tmp, tl, raw);
    if (mapped != tl) {
        if ((rc = prep(raw, mapped, tmp, stringprep_nameprep, strict)) != 0)
            return rc;
        tl = strlen(tmp);
    }
    /* Preparation can drop what kept it from being an address ("1\u200B.2.3.4"):
     * look again, so that parsing the result gives the same result. */
    if ((rc = ip_literal(tmp, tl, out)) != -ENOENT)
        return rc;
    /* Empty labels, then IDNA's own checks: LDH, 63 octets a label. */
    if (tmp[0] == '.' || tmp[tl - 1] == '.' || strstr(tmp, ".."))
        return -EINVAL;
    char *ascii = NULL;
    int flags = IDNA_USE_STD3_ASCII_RULES | (strict ? 0 : IDNA_ALLOW_UNASSIGNED);
    if (idna_to_ascii_8z(tmp, &ascii, flags) != IDNA_SUCCESS) {
        free(ascii);
        return -EINVAL;
    }
    free(ascii);
    memcpy(out, tmp, tl + 1);
    return 0;
}

/* One block: domain\0local\0resource\0, domain first so it owns it. */
static int assemble(struct jid *j, const char *local, const char *domain, const char *resource)
{
    size_t dl = strlen(domain) + 1, ll = local ? strlen(local) + 1 : 0,
           rl = resource ? strlen(resource) + 1 : 0;
    char *b = malloc(dl + ll + rl);
    if (!b)
        return -ENOMEM;
    memcpy(b, domain, dl);
    j->domain = b;
    j->local = local ? memcpy(b + dl, local, ll) : NULL;
    j->resource = resource ? memcpy(b + dl + ll, resource, rl) : NULL;
    return 0;
}

static void clear(struct jid *j) { j->domain = j->local = j->resource = NULL; }

int jid_parse_len(struct jid *j, const char *s, size_t len)
{
    char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1], resource[JID_PART_MAX + 1];
    bool has_local = false, has_resource = false;
    int rc;

    clear(j);
    if (!s)
        return -EINVAL;
    /* RFC 7622 3.1: the first '/' starts the resource (which may hold '@'
     * and '/'); an '@' before it ends the localpart. */
    const char *end = s + len;
    const char *slash = memchr(s, '/', len);
    const char *dend = slash ? slash : end;
    const char *at = memchr(s, '@', (size_t)(dend - s));
    const char *dstart = s;
    if (at) {
        if ((rc = jid_prep_local(s, (size_t)(at - s), local, false)))
            return rc;
        has_local = true;
        dstart = at + 1;
    }
    if ((rc = jid_prep_domain(dstart, (size_t)(dend - dstart), domain, false)))
        return rc;
    if (slash) {
        if ((rc = jid_prep_resource(slash + 1, (size_t)(end - slash - 1), resource, false)))
            return rc;
        has_resource = true;
    }
    return assemble(j, has_local ? local : NULL, domain, has_resource ? resource : NULL);
}

int jid_parse(struct jid *j, const char *s)
{
    if (!s) {
        clear(j);
        return -EINVAL;
    }
    return jid_parse_len(j, s, strlen(s));
}

int jid_set(struct jid *j, const char *local, const char *domain, const char *resource)
{
    char l[JID_PART_MAX + 1], d[JID_PART_MAX + 1], r[JID_PART_MAX + 1];
    int rc;
    clear(j);
    if (!domain)
        return -EINVAL;
    if (local && (rc = jid_prep_local(local, strlen(local), l, false)))
        return rc;
    if ((rc = jid_prep_domain(domain, strlen(domain), d, false)))
        return rc;
    if (resource && (rc = jid_prep_resource(resource, strlen(resource), r, false)))
        return rc;
    return assemble(j, local ? l : NULL, d, resource ? r : NULL);
}

void jid_free(struct jid *j)
{
    free(j->domain);
    clear(j);
}

int jid_copy(struct jid *dst, const struct jid *src)
{
    clear(dst);
    if (!src->domain)
        return -EINVAL;
    return assemble(dst, src->local, src->domain, src->resource);
}

int jid_bare(struct jid *dst, const struct jid *src)
{
    clear(dst);
    if (!src->domain)
        return -EINVAL;
    return assemble(dst, src->local, src->domain, NULL);
}

int jid_with_resource(struct jid *dst, const struct jid *src, const char *resource)
{
    char r[JID_PART_MAX + 1];
    int rc;
    clear(dst);
    if (!src->domain)
        return -EINVAL;
    if (resource && (rc = jid_prep_resource(resource, strlen(resource), r, false)))
        return rc;
    return assemble(dst, src->local, src->domain, resource ? r : NULL);
}

static bool part_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

bool jid_bare_equal(const struct jid *a, const struct jid *b)
{
    return part_eq(a->domain, b->domain) && part_eq(a->local, b->local);
}

bool jid_equal(const struct jid *a, const struct jid *b)
{
    return jid_bare_equal(a, b) && part_eq(a->resource, b->resource);
}

static int format(const struct jid *j, bool bare, char *out, size_t n)
{
    if (!j->domain || n == 0)
        return -EINVAL;
    size_t need = strlen(j->domain) + (j->local ? strlen(j->local) + 1 : 0) +
                  (!bare && j->resource ? strlen(j->resource) + 1 : 0);
    if (need + 1 > n) {
        out[0] = '\0';
        return -ENAMETOOLONG;
    }
    char *p = out;
    if (j->local) {
        p = stpcpy(p, j->local);
        *p++ = '@';
    }
    p = stpcpy(p, j->domain);
    if (!bare && j->resource) {
        *p++ = '/';
        stpcpy(p, j->resource);
    }
    return 0;
}

int jid_format(const struct jid *j, char *out, size_t n) { return format(j, false, out, n); }

int jid_format_bare(const struct jid *j, char *out, size_t n) { return format(j, true, out, n); }

int jid_append(struct buf *out, const struct jid *j, bool bare)
{
    char tmp[JID_MAX + 1];
    int rc = format(j, bare, tmp, sizeof tmp);
    return rc ? rc : buf_append_str(out, tmp);
}

char *jid_to_string(const struct jid *j, bool bare)
{
    char tmp[JID_MAX + 1];
    if (format(j, bare, tmp, sizeof tmp))
        return NULL;
    return strdup(tmp);
}
