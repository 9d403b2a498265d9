/*
 * Pure helpers of the HTTP server, kept apart so they can be tested alone:
 * status texts, MIME types, percent-decoding, safe paths, Range, dates.
 */
#ifndef HEARTH_NET_HTTP_UTIL_H
#define HEARTH_NET_HTTP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

const char *http_status_text(int status);

/* MIME type from a file name's extension; application/octet-stream when unknown. */
const char *http_mime_type(const char *path);

/*
 * Percent-decode src[0..len) into out (NUL-terminated, size at least len+1).
 * Returns the decoded length, or -1 for a bad escape or an encoded NUL.
 * plus_as_space is for query strings.
 */
long http_percent_decode(const char *src, size_t len, char *out, bool plus_as_space);

/*
 * A decoded request path is safe to map under a directory when it starts with
 * '/', has no "." or ".." segment, no backslash and no control byte.
 */
bool http_path_is_safe(const char *path);

/*
 * Parse a Range header against a representation of `size` bytes.
 * Returns 1 with [*first, *last] filled for one satisfiable range, 0 when the
 * header should be ignored (not bytes=, several ranges, malformed), and -1
 * when it is unsatisfiable (416).
 */
int http_range_parse(const char *value, uint64_t size, uint64_t *first, uint64_t *last);

/* "Tue, 24 Nov 2026 11:20:58 GMT" into out (at least 30 bytes). */
void http_date_format(time_t t, char *out, size_t n);

/* Does an If-None-Match value match etag ("*", lists, W/ prefixes)? */
bool http_etag_matches(const char *if_none_match, const char *etag);

/* Case-insensitive token search in a comma list ("keep-alive, Upgrade"). */
bool http_header_has_token(const char *value, const char *token);

#endif
