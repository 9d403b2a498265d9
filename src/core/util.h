/* Small helpers shared by every layer: time, directories, hex. */
#ifndef HEARTH_CORE_UTIL_H
#define HEARTH_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall-clock Unix seconds. */
int64_t util_now_unix(void);
/* Monotonic nanoseconds. */
uint64_t util_mono_ns(void);
/* mkdir -p with mode 0750 for what we create. */
int util_mkdir_p(const char *path);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void util_hex(const unsigned char *in, size_t n, char *out);
/*
 * Valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF)
 * without control characters (C0, DEL, C1) except those listed in `allow`
 * (NULL for none): text people type, bound for HTML, JSON, XMPP and logs.
 */
bool util_text_ok(const char *s, const char *allow);
/* Write the message into err (when there is one) and return rc: for
 * functions that report why they failed in a caller's buffer. */
int util_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Copy src into dst of size n, always NUL-terminated; -ENAMETOOLONG if cut. */
int util_strlcpy(char *dst, const char *src, size_t n);

#endif
