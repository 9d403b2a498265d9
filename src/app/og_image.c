/*
 * The default OpenGraph image: a hearth fire (two flames over crossed logs)
 * on a dark ground, 600 x 315, drawn in code and written as a PNG.
 *
 * Why drawn rather than shipped: link previews (Facebook, X, Slack,
 * Discord, Mastodon) take PNG or JPEG, not SVG, and a binary image in git
 * is what the project avoids. Four colours make it an indexed PNG of two
 * bits a pixel; zlib compresses the rows (a few KB) and gives each chunk
 * its CRC-32. It is made once at start-up.
 */
#include "app/og_image.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

enum { BG, OUTER, INNER, WOOD };

static const unsigned char palette[4][3] = {
    {0x17, 0x17, 0x1c}, /* the ground */
    {0xf0, 0x7d, 0x1a}, /* the outer flame */
    {0xff, 0xcf, 0x4d}, /* the inner flame */
    {0x6b, 0x42, 0x26}, /* the logs */
};

/* A teardrop: a circle (cx, cy, r) with a cone up to a tip at (cx, ty). */
static int in_drop(double x, double y, double cx, double cy, double r, double ty)
{
    double dx = x - cx, dy = y - cy;
    if (dx * dx + dy * dy <= r * r)
        return 1;
    double d = cy - ty;
    /* The cone's sides touch the circle at this height; below it the circle alone. */
    if (d <= r || y < ty || y > ty + (d * d - r * r) / d)
        return 0;
    double slope = r / sqrt(d * d - r * r);
    return fabs(dx) <= (y - ty) * slope;
}

/* Within w/2 of the segment (x0, y0)-(x1, y1): a log with round ends. */
static int in_log(double x, double y, double x0, double y0, double x1, double y1, double w)
{
    double vx = x1 - x0, vy = y1 - y0;
    double t = ((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double px = x0 + t * vx - x, py = y0 + t * vy - y;
    return px * px + py * py <= w * w / 4;
}

static int pixel(int ix, int iy)
{
    double x = ix + 0.5, y = iy + 0.5;
    if (in_drop(x, y, 300, 190, 44, 118))
        return INNER;
    if (in_drop(x, y, 300, 172, 72, 38))
        return OUTER;
    if (in_log(x, y, 210, 248, 390, 280, 24) || in_log(x, y, 210, 280, 390, 248, 24))
        return WOOD;
    return BG;
}

static unsigned char *put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

/* length, type, data, CRC over type and data */
static unsigned char *chunk(unsigned char *p, const char *type, const unsigned char *data, size_t n)
{
    p = put32(p, (uint32_t)n);
    unsigned char *crc_from = p;
    memcpy(p, type, 4);
    p += 4;
    if (n)
        memcpy(p, data, n);
    p += n;
    return put32(p, (uint32_t)crc32(0L, crc_from, (uInt)(n + 4)));
}

int og_image_render(unsigned char **out, size_t *len)
{
    enum { W = OG_IMAGE_WIDTH, H = OG_IMAGE_HEIGHT, ROW = 1 + (W + 3) / 4 };
    uLong raw_len = (uLong)ROW * H;
    uLongf z_len = compressBound(raw_len);
    unsigned char *raw = calloc(1, raw_len); /* filter type 0 and padding bits: zero */
    unsigned char *z = malloc(z_len);
    unsigned char *png = malloc(8 + 25 + 12 + 4 * 3 + 12 + z_len + 12);
    if (!raw || !z || !png) {
        free(raw), free(z), free(png);
        return -ENOMEM;
    }
    for (int y = 0; y < H; y++) {
        unsigned char *row = raw + (size_t)y * ROW;
        for (int x = 0; x < W; x++)
            row[1 + x / 4] |= (unsigned char)(pixel(x, y) << (6 - 2 * (x % 4)));
    }
    int zrc = compress2(z, &z_len, raw, raw_len, Z_BEST_COMPRESSION);
    free(raw);
    if (zrc != Z_OK) {
        free(z), free(png);
        return -ENOMEM;
    }

    unsigned char ihdr[13], plte[12];
    put32(ihdr, W);
    put32(ihdr + 4, H);
    ihdr[8] = 2;  /* bits per pixel */
    ihdr[9] = 3;  /* indexed colour */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering */
    ihdr[12] = 0; /* no interlace */
    memcpy(plte, palette, sizeof plte);

    unsigned char *p = png;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    p = chunk(p, "IHDR", ihdr, sizeof ihdr);
    p = chunk(p, "PLTE", plte, sizeof plte);
    p = chunk(p, "IDAT", z, z_len);
    p = chunk(p, "IEND", NULL, 0);
    free(z);
    *out = png;
    *len = (size_t)(p - png);
    return 0;
}
