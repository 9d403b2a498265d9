/*
 * RTMP handshake, server side: C0 C1 C2 in, S0 S1 S2 out.
 *
 * The client opens with C0 (one version byte, 3 for plain RTMP) and C1 (1536
 * bytes). We answer S0 S1 S2 in one go as soon as C1 is complete, then wait
 * for C2 (1536 bytes), whose content nobody checks (nginx-rtmp and SRS do not
 * either: real clients send an echo, a digest or garbage there).
 *
 * Two forms of C1 exist. The simple form (RTMP 1.0 spec) has zero in bytes
 * 4..7 and we answer with a random S1 and an S2 that echoes C1. The digest
 * ("complex") form, sent by Flash Player, FMLE, librtmp and ffmpeg, carries
 * an HMAC-SHA256 of C1 keyed with the "Genuine Adobe Flash Player 001" key,
 * placed at an offset that one of two schemas derives from C1's own bytes.
 * When we find a valid digest we answer in kind: S1 carries our digest under
 * the "Genuine Adobe Flash Media Server 001" key, in the same schema, and S2
 * ends with an HMAC keyed from the client's digest. Players that verify the
 * server (ffmpeg when playing, Flash) need that; publishers mostly do not, but
 * answering in kind costs nothing. A C1 that claims the digest form but has
 * no valid digest falls back to the simple echo, as nginx-rtmp does.
 *
 * The code is socket-free: feed it whatever bytes arrived, it says how many it
 * used (bytes after C2 belong to the chunk stream) and appends what must be
 * sent to an output buffer.
 */
#ifndef HEARTH_INGEST_RTMP_HANDSHAKE_H
#define HEARTH_INGEST_RTMP_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define RTMP_HS_VERSION 3
#define RTMP_HS_SIZE 1536       /* C1, C2, S1, S2 */
#define RTMP_HS_DIGEST_LEN 32   /* SHA-256 */

enum rtmp_hs_result {
    RTMP_HS_AGAIN = 0, /* feed more bytes */
    RTMP_HS_DONE = 1,  /* C2 received; the rest of the input is chunk stream */
};

enum rtmp_hs_stage {
    RTMP_HS_WAIT_C0C1 = 0,
    RTMP_HS_WAIT_C2,
    RTMP_HS_FINISHED,
    RTMP_HS_FAILED,
};

struct rtmp_handshake {
    enum rtmp_hs_stage stage;
    uint32_t epoch;                 /* our timestamp in S1 */
    size_t have;                    /* bytes of the current packet so far */
    uint8_t pkt[1 + RTMP_HS_SIZE];  /* C0+C1, then C2 (only counted) */
    bool digest;                    /* the client used the digest form */
    int schema;                     /* 0: digest after byte 8, 1: after 772 */
    uint32_t peer_epoch;            /* C1 bytes 0..3 */
    uint32_t peer_version;          /* C1 bytes 4..7, 0 for the simple form */
    const char *error;              /* why the handshake failed, for the log */
};

/* epoch: the milliseconds we put in S1 (any value works; a clock is polite). */
void rtmp_hs_init(struct rtmp_handshake *hs, uint32_t epoch);

/*
 * Feed received bytes. *consumed is set to the bytes used; on RTMP_HS_DONE the
 * bytes past *consumed are the start of the chunk stream. S0 S1 S2 are
 * appended to out once C0+C1 are in. Returns RTMP_HS_AGAIN, RTMP_HS_DONE, or
 * a negative errno: -EPROTO (not RTMP: bad C0), -EPROTONOSUPPORT (RTMPE,
 * encrypted), or what appending to out returned. hs->error says why.
 */
int rtmp_hs_feed(struct rtmp_handshake *hs, const uint8_t *data, size_t len,
                 size_t *consumed, struct buf *out);

/*
 * Digest helpers, exposed for tests and for a client side if one is ever
 * needed. pkt is a 1536-byte C1/S1 (without the version byte).
 */
size_t rtmp_hs_digest_offset(const uint8_t *pkt, int schema);
/* HMAC-SHA256 of pkt without the 32 bytes at digest_off. */
int rtmp_hs_calc_digest(const uint8_t *pkt, size_t digest_off, const uint8_t *key,
                        size_t key_len, uint8_t out[RTMP_HS_DIGEST_LEN]);
/* Returns the schema (0 or 1) whose digest validates, or -1. */
int rtmp_hs_find_digest(const uint8_t *pkt, const uint8_t *key, size_t key_len);

/* The published keys. The "partial" lengths are the text part alone. */
extern const uint8_t rtmp_hs_client_key[62];
extern const uint8_t rtmp_hs_server_key[68];
#define RTMP_HS_CLIENT_KEY_PARTIAL 30
#define RTMP_HS_SERVER_KEY_PARTIAL 36

#endif
