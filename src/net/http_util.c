#include "net/http_util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static const struct {
    const char *ext;
    const char *type;
} mime_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"map", "application/json"},
    {"json", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"m3u8", "application/vnd.apple.mpegurl"},
    {"mp4", "video/mp4"},
    {"m4s", "video/iso.segment"},
    {"m4v", "video/mp4"},
    {"m4a", "audio/mp4"},
    {"ts", "video/mp2t"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"vtt", "text/vtt; charset=utf-8"},
    {"pdf", "application/pdf"},
};

const char *http_mime_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot && dot[1]) {
        for (size_t i = 0; i < sizeof mime_types / sizeof mime_types[0]; i++)
            if (strcasecmp(dot + 1, mime_types[i].ext) == 0)
                return mime_types[i].type;
    }
    return "application/octet-stream";
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long http_percent_decode(const char *src, size_t len, char *out, bool plus_as_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval((unsigned char)src[i + 1]), l = hexval((unsigned char)src[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            if (c == '\0')
                return -1;
            i += 2;
        } else if (c == '+' && plus_as_space) {
            c = ' ';
        } else if (c == '\0') {
            return -1;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

bool http_path_is_safe(const char *path)
{
    if (path[0] != '/')
        return false;
    const char *seg = path + 1;
    for (const char *p = path + 1;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == '\0') {
            size_t n = (size_t)(p - seg);
            if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (c == '\0')
                return true;
            seg = p + 1;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return false;
    }
}

static bool parse_u64(const char **p, uint64_t *v)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return false;
    uint64_t n = 0;
    while (isdigit((unsigned char)*s)) {
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
        s++;
    }
    *v = n;
    *p = s;
    return true;
}

int http_range_parse(const char *value, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = value;
    while (*p == ' ')
        p++;
    if (strncasecmp(p, "bytes=", 6) != 0)
        return 0;
    p += 6;
    while (*p == ' ')
        p++;
    if (strchr(p, ','))
        return 0; /* several ranges: we answer with the whole representation */
    uint64_t a, b;
    if (*p == '-') {
        p++;
        if (!parse_u64(&p, &b))
            return 0;
        while (*p == ' ')
            p++;
        if (*p)
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 1;
    }
    if (!parse_u64(&p, &a) || *p != '-')
        return 0;
    p++;
    if (*p == '\0' || *p == ' ') {
        b = UINT64_MAX;
    } else if (!parse_u64(&p, &b)) {
        return 0;
    }
    while (*p == ' ')
        p++;
    if (*p || b < a)
        return 0;
    if (a >= size)
        return -1;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return 1;
}

void http_date_format(time_t t, char *out, size_t n)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Compare an entity tag from a list, ignoring weakness (RFC 9110 weak comparison). */
static bool etag_equal(const char *a, size_t alen, const char *b)
{
    if (alen >= 2 && a[0] == 'W' && a[1] == '/') {
        a += 2;
        alen -= 2;
    }
    if (b[0] == 'W' && b[1] == '/')
        b += 2;
    return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

bool http_etag_matches(const char *inm, const char *etag)
{
    if (!inm || !etag || !*etag)
        return false;
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return true;
        const char *start = p;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return false;
        const char *close = strchr(p + 1, '"');
        if (!close)
            return false;
        if (etag_equal(start, (size_t)(close + 1 - start), etag))
            return true;
        p = close + 1;
    }
    return false;
}

bool http_header_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
            return true;
    }
    return false;
}
