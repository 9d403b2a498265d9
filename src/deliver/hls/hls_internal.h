/* What hls.c and hls_http.c share. */
#ifndef HEARTH_DELIVER_HLS_INTERNAL_H
#define HEARTH_DELIVER_HLS_INTERNAL_H

#include "deliver/hls/hls.h"

/* TARGETDURATION in whole seconds. */
int64_t hls_target_duration(const struct hls_stream *hs);
struct hls_blob *hls_init_blob(struct hls_stream *hs, unsigned id);
/* Answer the parked requests that can be answered now. */
void hls_wake(struct hls_stream *hs);
/* Answer every parked request (the stream is going away). */
void hls_unpark_all(struct hls_stream *hs);
/* The stream ended: keep its playlist a while, then free it. */
void hls_linger(struct hls_stream *hs);
void hls_stream_destroy(struct hls_stream *hs);

#endif
