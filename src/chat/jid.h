/*
 * JIDs: localpart@domainpart/resourcepart, parsed and normalised.
 *
 * RFC 7622 normalises with PRECIS, which has no C library in Debian; libidn
 * has the RFC 6122 stringprep profiles (nodeprep, nameprep, resourceprep),
 * which Prosody and ejabberd use too, and which agree with PRECIS on
 * everything a chat service meets: case folding in the local and domain
 * parts, compatibility forms, the characters a localpart may not hold
 * (" & ' / : < > @ and space), resourceparts keeping their case. So
 * a JID is normalised once, when it enters (an attribute, a login, a room
 * name), and compared bytewise afterwards.
 *
 * Each part is 1..1023 bytes after preparation (RFC 7622 3.1). The
 * domainpart has its one trailing dot stripped, IDNA dots (U+3002, U+FF0E,
 * U+FF61) turned into '.', is nameprep'd and must then pass IDNA ToASCII with
 * the STD3 rules (LDH labels of at most 63 octets); IP literals ([v6] or
 * dotted v4) are kept in canonical form. Anything else is jid-malformed.
 */
#ifndef HEARTH_CHAT_JID_H
#define HEARTH_CHAT_JID_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define JID_PART_MAX 1023                   /* bytes of one part, prepared */
#define JID_MAX (3 * JID_PART_MAX + 2)      /* local@domain/resource */

/*
 * A normalised JID. The parts share one allocation owned by the struct:
 * free it with jid_free, copy it with jid_copy. A zeroed struct is empty
 * (domain NULL) and safe to free.
 */
struct jid {
    char *domain;   /* never NULL in a parsed JID; owns the block */
    char *local;    /* NULL when absent */
    char *resource; /* NULL when absent */
};

/*
 * Parse and normalise s (NUL-terminated; jid_parse_len for a length).
 * 0, -EINVAL (jid-malformed: the stanza error, or the stream error
 * improper-addressing / invalid-from, is the caller's choice) or -ENOMEM.
 * j is left empty on failure.
 */
int jid_parse(struct jid *j, const char *s);
int jid_parse_len(struct jid *j, const char *s, size_t len);
/* Build from parts (local, resource may be NULL), each prepared. */
int jid_set(struct jid *j, const char *local, const char *domain, const char *resource);
void jid_free(struct jid *j);
int jid_copy(struct jid *dst, const struct jid *src);
/* dst = src without the resource. */
int jid_bare(struct jid *dst, const struct jid *src);
/* dst = bare src + resource (prepared); resource NULL = bare. */
int jid_with_resource(struct jid *dst, const struct jid *src, const char *resource);

bool jid_equal(const struct jid *a, const struct jid *b);
bool jid_bare_equal(const struct jid *a, const struct jid *b);
static inline bool jid_is_bare(const struct jid *j) { return !j->resource; }

/* Text form into out (n bytes, NUL-terminated): 0, or -ENAMETOOLONG. A
 * buffer of JID_MAX + 1 bytes always suffices. */
int jid_format(const struct jid *j, char *out, size_t n);
int jid_format_bare(const struct jid *j, char *out, size_t n);
/* Append the text form to a buffer. */
int jid_append(struct buf *out, const struct jid *j, bool bare);
/* malloc'd text form, NULL on -ENOMEM. */
char *jid_to_string(const struct jid *j, bool bare);

/*
 * One part on its own (a registration name, a resource to bind, a MUC
 * nickname, a host name from the config). in[0..len) is UTF-8; out gets the
 * prepared part, NUL-terminated, and must hold JID_PART_MAX + 1 bytes.
 * strict refuses unassigned code points, for strings that are stored (RFC
 * 3454 7: account names, reserved nicknames); lookups leave it false.
 * 0 or -EINVAL.
 */
int jid_prep_local(const char *in, size_t len, char *out, bool strict);
int jid_prep_domain(const char *in, size_t len, char *out, bool strict);
int jid_prep_resource(const char *in, size_t len, char *out, bool strict);

#endif
