/*
 * AMF0 (Action Message Format, version 0): the encoding of RTMP commands
 * (connect, createStream, publish, _result, onStatus) and data messages
 * (@setDataFrame / onMetaData).
 *
 * The decoder turns bytes into a small tree of struct amf_value; objects and
 * ECMA arrays are arrays of key/value pairs in wire order, which is all a
 * handful of lookups by name needs. Strings are copied (NUL-terminated) so a
 * tree outlives the message it came from. Input is untrusted: every read is
 * bounds-checked, nesting is limited (default depth 32) and so is the number
 * of values in one decode (default 4096), which also bounds memory, since
 * counts on the wire are never trusted for allocation.
 *
 * The encoder appends to a struct buf; the session builds its replies with
 * it value by value (amf_encode_*), or writes back a decoded tree.
 *
 * Error codes: -EBADMSG truncated or malformed, -ENOTSUP a marker we do not
 * take (reference, typed object, XML, AMF3 switch, movieclip, recordset),
 * -E2BIG past the depth or element limit, -ENOMEM.
 */
#ifndef HEARTH_INGEST_RTMP_AMF_H
#define HEARTH_INGEST_RTMP_AMF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* The markers double as the types. */
enum amf_type {
    AMF_NUMBER = 0x00,
    AMF_BOOLEAN = 0x01,
    AMF_STRING = 0x02,
    AMF_OBJECT = 0x03,
    AMF_NULL = 0x05,
    AMF_UNDEFINED = 0x06,
    AMF_ECMA_ARRAY = 0x08,
    AMF_OBJECT_END = 0x09, /* only ever a terminator; never in a tree */
    AMF_STRICT_ARRAY = 0x0A,
    AMF_DATE = 0x0B,
    AMF_LONG_STRING = 0x0C,
};

#define AMF_MAX_DEPTH 32
#define AMF_MAX_ELEMENTS 4096

struct amf_limits {
    unsigned max_depth;  /* nesting of objects and arrays */
    size_t max_elements; /* values in one decode call, nested ones included */
};

struct amf_prop;

struct amf_value {
    enum amf_type type;
    union {
        double number;
        bool boolean;
        struct {
            char *ptr; /* NUL-terminated copy; may hold NULs inside */
            size_t len;
        } str;         /* AMF_STRING, AMF_LONG_STRING */
        struct {
            struct amf_prop *props;
            size_t count;
        } obj;         /* AMF_OBJECT, AMF_ECMA_ARRAY */
        struct {
            struct amf_value *items;
            size_t count;
        } arr;         /* AMF_STRICT_ARRAY */
        struct {
            double ms; /* since the epoch, UTC */
            int16_t tz; /* reserved, should be 0 */
        } date;
    } u;
};

struct amf_prop {
    char *key; /* NUL-terminated copy */
    size_t key_len;
    struct amf_value value;
};

/* lim NULL everywhere means AMF_MAX_DEPTH / AMF_MAX_ELEMENTS. */

/* Decode one value from p; *used says how many bytes it took. On error *out
 * is left as AMF_NULL with nothing to free. */
int amf_decode(const uint8_t *p, size_t len, size_t *used, struct amf_value *out,
               const struct amf_limits *lim);

/* Decode values until the input ends. *vals is an array of *count values
 * (NULL, 0 for empty input); free with amf_values_free. */
int amf_decode_all(const uint8_t *p, size_t len, struct amf_value **vals, size_t *count,
                   const struct amf_limits *lim);

/* Free what a value owns (not the value itself), leaving it AMF_NULL. */
void amf_value_free(struct amf_value *v);
void amf_values_free(struct amf_value *vals, size_t count);

/*
 * A command message (type 20): name, transaction id, then the rest, which is
 * usually the command object (or null) followed by the arguments, e.g.
 * publish: [null, "streamkey", "live"]. For type 17 (AMF3 command) skip the
 * payload's first byte (0) and call this on the remainder.
 */
struct amf_command {
    const char *name;      /* the command name; no embedded NULs */
    double transaction_id;
    struct amf_value *args; /* the values after the transaction id */
    size_t nargs;
    struct amf_value *values; /* storage: values[0] name, [1] txn id, then args */
    size_t count;
};

int amf_command_decode(const uint8_t *p, size_t len, struct amf_command *cmd,
                       const struct amf_limits *lim);
void amf_command_free(struct amf_command *cmd);

/* ---- reading a tree ---------------------------------------------------- */

/* The property named key of an object or ECMA array; NULL when v is neither
 * or has no such key. */
const struct amf_value *amf_get(const struct amf_value *v, const char *key);
/* The string, or NULL if v is not a string or holds a NUL (a key or a name
 * with a NUL inside is never legitimate, and C code would cut it short). */
const char *amf_string(const struct amf_value *v);
/* 0, or -EINVAL when v is NULL or not a number. */
int amf_number(const struct amf_value *v, double *out);
/* Shorthands for amf_string(amf_get(obj, key)) and friends. */
const char *amf_get_string(const struct amf_value *obj, const char *key);
int amf_get_number(const struct amf_value *obj, const char *key, double *out);
/* Boolean properties; encoders also send numbers for flags. */
int amf_get_boolean(const struct amf_value *obj, const char *key, bool *out);

/* ---- encoding ---------------------------------------------------------- */

int amf_encode_number(struct buf *b, double v);
int amf_encode_boolean(struct buf *b, bool v);
int amf_encode_string(struct buf *b, const char *s);
/* Writes a long string when len > 0xFFFF. */
int amf_encode_string_len(struct buf *b, const char *s, size_t len);
int amf_encode_null(struct buf *b);
int amf_encode_undefined(struct buf *b);
int amf_encode_date(struct buf *b, double ms, int16_t tz);
/* Containers: begin, then amf_encode_key + a value per property (objects and
 * ECMA arrays) or count values (strict arrays), then amf_encode_object_end
 * for objects and ECMA arrays. */
int amf_encode_object_begin(struct buf *b);
int amf_encode_ecma_array_begin(struct buf *b, uint32_t count);
int amf_encode_strict_array_begin(struct buf *b, uint32_t count);
int amf_encode_key(struct buf *b, const char *key); /* -EINVAL when over 0xFFFF */
int amf_encode_object_end(struct buf *b);
/* key + value in one call, for building _result and onStatus objects. */
int amf_encode_prop_number(struct buf *b, const char *key, double v);
int amf_encode_prop_boolean(struct buf *b, const char *key, bool v);
int amf_encode_prop_string(struct buf *b, const char *key, const char *v);
int amf_encode_prop_null(struct buf *b, const char *key);
/* A tree (decoded, or built by hand) back to bytes. */
int amf_encode_value(struct buf *b, const struct amf_value *v);

#endif
