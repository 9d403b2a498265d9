/*
 * Growable byte buffer.
 *
 * Every buffer that grows from the network is given a limit when it is made;
 * an append past the limit fails with -EMSGSIZE and leaves the buffer as it
 * was, so the caller can answer the peer (413, 431, a stream error) and close.
 */
#ifndef HEARTH_CORE_BUF_H
#define HEARTH_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit; /* 0 = no limit (only for buffers we fill ourselves) */
};

void buf_init(struct buf *b, size_t limit);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_append_char(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* NUL-terminate without counting the NUL in len. */
int buf_cstr(struct buf *b);
/* Hand the storage to the caller; the buffer is left empty. */
char *buf_steal(struct buf *b, size_t *len);

#endif
