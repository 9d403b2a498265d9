/*
 * The picture a shared link to a channel shows when the channel has no
 * avatar (og:image on /c/<slug>, pages.c): drawn at start-up, served from
 * memory as GET /og-default.png.
 */
#ifndef HEARTH_APP_OG_IMAGE_H
#define HEARTH_APP_OG_IMAGE_H

#include <stddef.h>

#define OG_IMAGE_WIDTH 600
#define OG_IMAGE_HEIGHT 315 /* 1.91:1, the ratio link previews use */

/* A PNG of the default image, malloc'd into *out. 0, or -ENOMEM. */
int og_image_render(unsigned char **out, size_t *len);

#endif
