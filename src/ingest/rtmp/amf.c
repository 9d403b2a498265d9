/*
 * AMF0 decoder and encoder. See amf.h for the tree and the limits.
 *
 * The decoder is a recursive descent over a cursor that never reads past its
 * end. Recursion is bounded by the depth limit, so the stack is too. Counts
 * written on the wire (strict and ECMA arrays) are never used to size an
 * allocation: arrays grow as values actually decode, each value costs at
 * least one input byte and one unit of the element budget.
 *
 * ECMA arrays are read like objects, up to the empty-key end marker; the
 * count in front is only a hint (encoders get it wrong). One leniency: an ECMA
 * array that fills the input to its very end without the end marker, after
 * as many properties as its count announced, is accepted, because some
 * encoders of onMetaData leave the marker out.
 */
#include "ingest/rtmp/amf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct dec {
    const uint8_t *p;
    size_t len, pos;
    unsigned max_depth;
    size_t budget; /* values still allowed */
};

static void init_dec(struct dec *d, const uint8_t *p, size_t len, const struct amf_limits *lim)
{
    d->p = p;
    d->len = len;
    d->pos = 0;
    d->max_depth = lim && lim->max_depth ? lim->max_depth : AMF_MAX_DEPTH;
    d->budget = lim && lim->max_elements ? lim->max_elements : AMF_MAX_ELEMENTS;
}

static bool have(const struct dec *d, size_t n) { return d->len - d->pos >= n; }

static uint16_t rd16(struct dec *d)
{
    uint16_t v = (uint16_t)(d->p[d->pos] << 8 | d->p[d->pos + 1]);
    d->pos += 2;
    return v;
}

static uint32_t rd32(struct dec *d)
{
    const uint8_t *q = d->p + d->pos;
    d->pos += 4;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

static double rd_double(struct dec *d)
{
    uint64_t u = 0;
    double v;
    for (int i = 0; i < 8; i++)
        u = u << 8 | d->p[d->pos + i];
    d->pos += 8;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int rd_bytes(struct dec *d, size_t n, char **out)
{
    if (!have(d, n))
        return -EBADMSG;
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, d->p + d->pos, n);
    s[n] = '\0';
    d->pos += n;
    *out = s;
    return 0;
}

void amf_value_free(struct amf_value *v)
{
    if (!v)
        return;
    switch (v->type) {
    case AMF_STRING:
    case AMF_LONG_STRING:
        free(v->u.str.ptr);
        break;
    case AMF_OBJECT:
    case AMF_ECMA_ARRAY:
        for (size_t i = 0; i < v->u.obj.count; i++) {
            free(v->u.obj.props[i].key);
            amf_value_free(&v->u.obj.props[i].value);
        }
        free(v->u.obj.props);
        break;
    case AMF_STRICT_ARRAY:
        amf_values_free(v->u.arr.items, v->u.arr.count);
        break;
    default:
        break;
    }
    memset(v, 0, sizeof *v);
    v->type = AMF_NULL;
}

void amf_values_free(struct amf_value *vals, size_t count)
{
    if (!vals)
        return;
    for (size_t i = 0; i < count; i++)
        amf_value_free(&vals[i]);
    free(vals);
}

/* Grow an array of elem-sized items so that one more fits. */
static int grow(void **arr, size_t count, size_t *cap, size_t elem)
{
    if (count < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int dec_value(struct dec *d, struct amf_value *v, unsigned depth);

/* Properties up to the end marker, into v (already typed object/ECMA). */
static int dec_props(struct dec *d, struct amf_value *v, unsigned depth, bool ecma, uint32_t hint)
{
    size_t cap = 0;
    for (;;) {
        if (ecma && d->pos == d->len && v->u.obj.count == hint)
            return 0; /* the marker-less ECMA array, see the top of the file */
        if (!have(d, 2))
            return -EBADMSG;
        uint16_t klen = rd16(d);
        if (klen == 0) {
            if (!have(d, 1))
                return -EBADMSG;
            if (d->p[d->pos] == AMF_OBJECT_END) {
                d->pos++;
                return 0;
            }
        }
        struct amf_prop prop = {0};
        int rc = rd_bytes(d, klen, &prop.key);
        if (rc)
            return rc;
        prop.key_len = klen;
        rc = dec_value(d, &prop.value, depth + 1);
        if (rc == 0)
            rc = grow((void **)&v->u.obj.props, v->u.obj.count, &cap, sizeof prop);
        if (rc) {
            free(prop.key);
            amf_value_free(&prop.value);
            return rc;
        }
        v->u.obj.props[v->u.obj.count++] = prop;
    }
}

static int dec_value(struct dec *d, struct amf_value *v, unsigned depth)
{
    memset(v, 0, sizeof *v);
    v->type = AMF_NULL;
    if (depth > d->max_depth || d->budget == 0)
        return -E2BIG;
    d->budget--;
    if (!have(d, 1))
        return -EBADMSG;
    uint8_t marker = d->p[d->pos++];
    int rc = 0;

    switch (marker) {
    case AMF_NUMBER:
        if (!have(d, 8))
            return -EBADMSG;
        v->type = AMF_NUMBER;
        v->u.number = rd_double(d);
        return 0;
    case AMF_BOOLEAN:
        if (!have(d, 1))
            return -EBADMSG;
        v->type = AMF_BOOLEAN;
        v->u.boolean = d->p[d->pos++] != 0;
        return 0;
    case AMF_STRING:
    case AMF_LONG_STRING: {
        size_t n;
        if (!have(d, marker == AMF_STRING ? 2 : 4))
            return -EBADMSG;
        n = marker == AMF_STRING ? rd16(d) : rd32(d);
        char *s;
        if ((rc = rd_bytes(d, n, &s)))
            return rc;
        v->type = marker;
        v->u.str.ptr = s;
        v->u.str.len = n;
        return 0;
    }
    case AMF_NULL:
    case AMF_UNDEFINED:
        v->type = marker;
        return 0;
    case AMF_DATE:
        if (!have(d, 10))
            return -EBADMSG;
        v->type = AMF_DATE;
        v->u.date.ms = rd_double(d);
        v->u.date.tz = (int16_t)rd16(d);
        return 0;
    case AMF_OBJECT:
        v->type = AMF_OBJECT;
        rc = dec_props(d, v, depth, false, 0);
        break;
    case AMF_ECMA_ARRAY: {
        if (!have(d, 4))
            return -EBADMSG;
        uint32_t hint = rd32(d);
        v->type = AMF_ECMA_ARRAY;
        rc = dec_props(d, v, depth, true, hint);
        break;
    }
    case AMF_STRICT_ARRAY: {
        if (!have(d, 4))
            return -EBADMSG;
        uint32_t n = rd32(d);
        size_t cap = 0;
        v->type = AMF_STRICT_ARRAY;
        for (uint32_t i = 0; i < n && rc == 0; i++) {
            struct amf_value item;
            rc = dec_value(d, &item, depth + 1);
            if (rc == 0)
                rc = grow((void **)&v->u.arr.items, v->u.arr.count, &cap, sizeof item);
            if (rc)
                amf_value_free(&item);
            else
                v->u.arr.items[v->u.arr.count++] = item;
        }
        break;
    }
    case AMF_OBJECT_END:
        return -EBADMSG; /* only valid after an empty key */
    default:
        return -ENOTSUP; /* 0x04 movieclip, 0x07 reference, 0x0D.. and beyond */
    }
    if (rc)
        amf_value_free(v);
    return rc;
}

int amf_decode(const uint8_t *p, size_t len, size_t *used, struct amf_value *out,
               const struct amf_limits *lim)
{
    struct dec d;
    init_dec(&d, p, len, lim);
    int rc = dec_value(&d, out, 0);
    if (used)
        *used = rc ? 0 : d.pos;
    return rc;
}

int amf_decode_all(const uint8_t *p, size_t len, struct amf_value **vals, size_t *count,
                   const struct amf_limits *lim)
{
    struct dec d;
    struct amf_value *arr = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    init_dec(&d, p, len, lim);
    while (d.pos < d.len) {
        struct amf_value v;
        rc = dec_value(&d, &v, 0);
        if (rc == 0)
            rc = grow((void **)&arr, n, &cap, sizeof v);
        if (rc) {
            amf_value_free(&v);
            amf_values_free(arr, n);
            *vals = NULL;
            *count = 0;
            return rc;
        }
        arr[n++] = v;
    }
    *vals = arr;
    *count = n;
    return 0;
}

int amf_command_decode(const uint8_t *p, size_t len, struct amf_command *cmd,
                       const struct amf_limits *lim)
{
    memset(cmd, 0, sizeof *cmd);
    int rc = amf_decode_all(p, len, &cmd->values, &cmd->count, lim);
    if (rc)
        return rc;
    if (cmd->count < 2 || !amf_string(&cmd->values[0]) ||
        amf_number(&cmd->values[1], &cmd->transaction_id)) {
        amf_command_free(cmd);
        return -EBADMSG;
    }
    cmd->name = cmd->values[0].u.str.ptr;
    cmd->args = cmd->values + 2;
    cmd->nargs = cmd->count - 2;
    return 0;
}

void amf_command_free(struct amf_command *cmd)
{
    amf_values_free(cmd->values, cmd->count);
    memset(cmd, 0, sizeof *cmd);
}

/* ---- reading a tree ---------------------------------------------------- */

const struct amf_value *amf_get(const struct amf_value *v, const char *key)
{
    if (!v || (v->type != AMF_OBJECT && v->type != AMF_ECMA_ARRAY))
        return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < v->u.obj.count; i++) {
        const struct amf_prop *pr = &v->u.obj.props[i];
        if (pr->key_len == klen && memcmp(pr->key, key, klen) == 0)
            return &pr->value;
    }
    return NULL;
}

const char *amf_string(const struct amf_value *v)
{
    if (!v || (v->type != AMF_STRING && v->type != AMF_LONG_STRING))
        return NULL;
    if (strlen(v->u.str.ptr) != v->u.str.len)
        return NULL;
    return v->u.str.ptr;
}

int amf_number(const struct amf_value *v, double *out)
{
    if (!v || v->type != AMF_NUMBER)
        return -EINVAL;
    *out = v->u.number;
    return 0;
}

const char *amf_get_string(const struct amf_value *obj, const char *key)
{
    return amf_string(amf_get(obj, key));
}

int amf_get_number(const struct amf_value *obj, const char *key, double *out)
{
    return amf_number(amf_get(obj, key), out);
}

int amf_get_boolean(const struct amf_value *obj, const char *key, bool *out)
{
    const struct amf_value *v = amf_get(obj, key);
    if (v && v->type == AMF_BOOLEAN) {
        *out = v->u.boolean;
        return 0;
    }
    if (v && v->type == AMF_NUMBER) {
        *out = v->u.number != 0;
        return 0;
    }
    return -EINVAL;
}

/* ---- encoding ---------------------------------------------------------- */

static int put_u16(struct buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return buf_append(b, p, 2);
}

static int put_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return buf_append(b, p, 4);
}

static int put_double(struct buf *b, double v)
{
    uint64_t u;
    uint8_t p[8];
    memcpy(&u, &v, sizeof u);
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)u;
        u >>= 8;
    }
    return buf_append(b, p, 8);
}

int amf_encode_number(struct buf *b, double v)
{
    int rc = buf_reserve(b, 9); /* all or nothing: no half values on a limit */
    if (rc)
        return rc;
    buf_append_char(b, AMF_NUMBER);
    return put_double(b, v);
}

int amf_encode_boolean(struct buf *b, bool v)
{
    uint8_t p[2] = {AMF_BOOLEAN, v ? 1 : 0};
    return buf_append(b, p, 2);
}

int amf_encode_string_len(struct buf *b, const char *s, size_t len)
{
    bool lng = len > 0xFFFF;
    if (len > UINT32_MAX)
        return -EINVAL;
    int rc = buf_reserve(b, len + (lng ? 5 : 3));
    if (rc)
        return rc;
    buf_append_char(b, lng ? AMF_LONG_STRING : AMF_STRING);
    if (lng)
        put_u32(b, (uint32_t)len);
    else
        put_u16(b, (uint16_t)len);
    return buf_append(b, s, len);
}

int amf_encode_string(struct buf *b, const char *s) { return amf_encode_string_len(b, s, strlen(s)); }

int amf_encode_null(struct buf *b) { return buf_append_char(b, AMF_NULL); }

int amf_encode_undefined(struct buf *b) { return buf_append_char(b, AMF_UNDEFINED); }

int amf_encode_date(struct buf *b, double ms, int16_t tz)
{
    int rc = buf_reserve(b, 11);
    if (rc)
        return rc;
    buf_append_char(b, AMF_DATE);
    put_double(b, ms);
    return put_u16(b, (uint16_t)tz);
}

int amf_encode_object_begin(struct buf *b) { return buf_append_char(b, AMF_OBJECT); }

static int begin_counted(struct buf *b, uint8_t marker, uint32_t count)
{
    int rc = buf_reserve(b, 5);
    if (rc)
        return rc;
    buf_append_char(b, (char)marker);
    return put_u32(b, count);
}

int amf_encode_ecma_array_begin(struct buf *b, uint32_t count)
{
    return begin_counted(b, AMF_ECMA_ARRAY, count);
}

int amf_encode_strict_array_begin(struct buf *b, uint32_t count)
{
    return begin_counted(b, AMF_STRICT_ARRAY, count);
}

static int encode_key_len(struct buf *b, const char *key, size_t len)
{
    if (len > 0xFFFF)
        return -EINVAL;
    int rc = buf_reserve(b, len + 2);
    if (rc)
        return rc;
    put_u16(b, (uint16_t)len);
    return buf_append(b, key, len);
}

int amf_encode_key(struct buf *b, const char *key) { return encode_key_len(b, key, strlen(key)); }

int amf_encode_object_end(struct buf *b)
{
    static const uint8_t end[3] = {0, 0, AMF_OBJECT_END};
    return buf_append(b, end, 3);
}

int amf_encode_prop_number(struct buf *b, const char *key, double v)
{
    int rc = amf_encode_key(b, key);
    return rc ? rc : amf_encode_number(b, v);
}

int amf_encode_prop_boolean(struct buf *b, const char *key, bool v)
{
    int rc = amf_encode_key(b, key);
    return rc ? rc : amf_encode_boolean(b, v);
}

int amf_encode_prop_string(struct buf *b, const char *key, const char *v)
{
    int rc = amf_encode_key(b, key);
    return rc ? rc : amf_encode_string(b, v);
}

int amf_encode_prop_null(struct buf *b, const char *key)
{
    int rc = amf_encode_key(b, key);
    return rc ? rc : amf_encode_null(b);
}

int amf_encode_value(struct buf *b, const struct amf_value *v)
{
    int rc = 0;
    switch (v->type) {
    case AMF_NUMBER:
        return amf_encode_number(b, v->u.number);
    case AMF_BOOLEAN:
        return amf_encode_boolean(b, v->u.boolean);
    case AMF_STRING:
        if (v->u.str.len > 0xFFFF)
            return -EINVAL;
        return amf_encode_string_len(b, v->u.str.ptr, v->u.str.len);
    case AMF_LONG_STRING: {
        /* Keep the marker the tree says, even for a short string. */
        if (v->u.str.len > UINT32_MAX)
            return -EINVAL;
        if ((rc = buf_reserve(b, 5 + v->u.str.len)))
            return rc;
        buf_append_char(b, AMF_LONG_STRING);
        put_u32(b, (uint32_t)v->u.str.len);
        return buf_append(b, v->u.str.ptr, v->u.str.len);
    }
    case AMF_NULL:
        return amf_encode_null(b);
    case AMF_UNDEFINED:
        return amf_encode_undefined(b);
    case AMF_DATE:
        return amf_encode_date(b, v->u.date.ms, v->u.date.tz);
    case AMF_OBJECT:
    case AMF_ECMA_ARRAY:
        if (v->u.obj.count > UINT32_MAX)
            return -EINVAL;
        rc = v->type == AMF_OBJECT ? amf_encode_object_begin(b)
                                   : amf_encode_ecma_array_begin(b, (uint32_t)v->u.obj.count);
        for (size_t i = 0; rc == 0 && i < v->u.obj.count; i++) {
            const struct amf_prop *pr = &v->u.obj.props[i];
            rc = encode_key_len(b, pr->key, pr->key_len);
            if (rc == 0)
                rc = amf_encode_value(b, &pr->value);
        }
        return rc ? rc : amf_encode_object_end(b);
    case AMF_STRICT_ARRAY:
        if (v->u.arr.count > UINT32_MAX)
            return -EINVAL;
        rc = amf_encode_strict_array_begin(b, (uint32_t)v->u.arr.count);
        for (size_t i = 0; rc == 0 && i < v->u.arr.count; i++)
            rc = amf_encode_value(b, &v->u.arr.items[i]);
        return rc;
    case AMF_OBJECT_END:
        break;
    }
    return -EINVAL;
}
