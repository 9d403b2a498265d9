/*
 * libFuzzer target: the WebSocket server's framing (wslay behind ws.c) fed
 * client bytes on memory, split at a point the input chooses. Whatever
 * arrives, each delivered message stays within the limit, and once the
 * connection has failed or closed nothing more is delivered.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws.h"

#define FUZZ_MAX_MESSAGE 4096

struct state {
    int closed;
};

static void on_message(void *ud, const char *data, size_t len)
{
    struct state *s = ud;
    (void)data;
    if (s->closed || len > FUZZ_MAX_MESSAGE)
        abort();
}

static void on_close(void *ud, int code)
{
    struct state *s = ud;
    (void)code;
    s->closed = 1;
}

static int on_out(void *ud, const char *data, size_t len)
{
    (void)ud;
    (void)data;
    (void)len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t split = data[0] % (size);
    data++;
    size--;
    if (split > size)
        split = size;
    struct state st = {0};
    struct ws_options o = {.max_message = FUZZ_MAX_MESSAGE, .max_queue = 1 << 16};
    struct ws_handlers h = {.ud = &st, .on_message = on_message, .on_close = on_close};
    struct ws_conn *ws = ws_conn_new_mem(&o, &h, on_out, NULL);
    if (!ws)
        return 0;
    if (ws_conn_feed(ws, (const char *)data, split) == 0 && !ws_conn_closed(ws))
        ws_conn_feed(ws, (const char *)data + split, size - split);
    ws_conn_free(ws);
    return 0;
}
