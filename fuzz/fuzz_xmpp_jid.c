/*
 * libFuzzer target: JID parsing and the stringprep parts. What parses must
 * format, fit the limits, and parse again to the same JID (normalisation is
 * a fixed point); strict preparation may only refuse more, never differ.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jid.h"

static void check_part(int (*prep)(const char *, size_t, char *, bool), const char *in,
                       size_t len)
{
    char a[JID_PART_MAX + 1], b[JID_PART_MAX + 1], c[JID_PART_MAX + 1];
    int loose = prep(in, len, a, false);
    int strict = prep(in, len, b, true);
    if (strict == 0 && (loose != 0 || strcmp(a, b)))
        abort();
    if (loose == 0) {
        size_t n = strlen(a);
        if (n == 0 || n > JID_PART_MAX)
            abort();
        if (prep(a, n, c, false) != 0 || strcmp(a, c))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct jid j, k;
    if (jid_parse_len(&j, s, size) == 0) {
        char out[JID_MAX + 1], again[JID_MAX + 1];
        if (!j.domain || jid_format(&j, out, sizeof out))
            abort();
        if ((j.local && strlen(j.local) > JID_PART_MAX) || strlen(j.domain) > JID_PART_MAX ||
            (j.resource && strlen(j.resource) > JID_PART_MAX))
            abort();
        if (jid_parse(&k, out) || !jid_equal(&j, &k) || jid_format(&k, again, sizeof again) ||
            strcmp(out, again))
            abort();
        jid_free(&k);
        if (jid_bare(&k, &j) || !jid_bare_equal(&j, &k) || k.resource)
            abort();
        jid_free(&k);
        jid_free(&j);
    } else if (j.domain) {
        abort();
    }
    check_part(jid_prep_local, s, size);
    check_part(jid_prep_domain, s, size);
    check_part(jid_prep_resource, s, size);
    return 0;
}
