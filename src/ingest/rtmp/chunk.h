/*
 * RTMP chunk stream: bytes in, messages out (reader); messages in, bytes out
 * (writer); and the protocol control messages (types 1-6) both ways.
 *
 * The reader is an incremental state machine. It is fed whatever slice of the
 * connection's bytes arrived, one byte or a megabyte, and hands back one
 * complete message at a time together with how many input bytes it used, so
 * the session loop is simply:
 *
 *     while (off < len) {
 *         rc = rtmp_chunk_read(&r, data + off, len - off, &used, &msg);
 *         off += used;
 *         if (rc < 0) -> log r.error, close the connection
 *         if (rc == RTMP_CHUNK_MSG) -> handle msg (payload valid until the
 *                                      next rtmp_chunk_read call)
 *     }
 *     if (rtmp_chunk_ack_due(&r, &seq)) -> rtmp_chunk_write_ack(...)
 *
 * Set Chunk Size, Abort Message and Window Acknowledgement Size from the peer
 * change how the following bytes are read, so the reader applies them itself
 * before it returns them; the session sees them too (for logging) but must
 * not act on them again.
 *
 * Everything that grows from the network is bounded by struct
 * rtmp_chunk_limits: message size, chunk size, number of chunk streams, and
 * the bytes held in partial (interleaved) messages altogether.
 */
#ifndef HEARTH_INGEST_RTMP_CHUNK_H
#define HEARTH_INGEST_RTMP_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "media/frame.h"

/* Message type ids (RTMP 1.0, 5.4 and 7.1). */
enum rtmp_msg_type {
    RTMP_MSG_SET_CHUNK_SIZE = 1,
    RTMP_MSG_ABORT = 2,
    RTMP_MSG_ACK = 3,
    RTMP_MSG_USER_CONTROL = 4,
    RTMP_MSG_WINDOW_ACK_SIZE = 5,
    RTMP_MSG_SET_PEER_BANDWIDTH = 6,
    RTMP_MSG_AUDIO = 8,
    RTMP_MSG_VIDEO = 9,
    RTMP_MSG_DATA_AMF3 = 15,
    RTMP_MSG_SHARED_OBJECT_AMF3 = 16,
    RTMP_MSG_COMMAND_AMF3 = 17,
    RTMP_MSG_DATA_AMF0 = 18,
    RTMP_MSG_SHARED_OBJECT_AMF0 = 19,
    RTMP_MSG_COMMAND_AMF0 = 20,
    RTMP_MSG_AGGREGATE = 22,
};

/* User Control Message event types (RTMP 1.0, 7.1.7). */
enum rtmp_uc_event {
    RTMP_UC_STREAM_BEGIN = 0,
    RTMP_UC_STREAM_EOF = 1,
    RTMP_UC_STREAM_DRY = 2,
    RTMP_UC_SET_BUFFER_LENGTH = 3,
    RTMP_UC_STREAM_IS_RECORDED = 4,
    RTMP_UC_PING_REQUEST = 6,
    RTMP_UC_PING_RESPONSE = 7,
};

/* Set Peer Bandwidth limit types. */
enum rtmp_bw_limit {
    RTMP_BW_HARD = 0,
    RTMP_BW_SOFT = 1,
    RTMP_BW_DYNAMIC = 2,
};

#define RTMP_CSID_MIN 2
#define RTMP_CSID_MAX 65599
#define RTMP_CSID_CONTROL 2          /* protocol control and user control */
#define RTMP_DEFAULT_CHUNK_SIZE 128  /* until Set Chunk Size says otherwise */
#define RTMP_MAX_MESSAGE_LEN 0xFFFFFF /* the length field has 24 bits */

#define RTMP_CHUNK_MSG 1 /* rtmp_chunk_read: *msg holds a complete message */

/* A complete message. payload points into the reader and stays valid until
 * the next rtmp_chunk_read call (or take it with rtmp_chunk_take_payload). */
struct rtmp_msg {
    uint8_t type;        /* enum rtmp_msg_type, or whatever the peer sent */
    uint32_t timestamp;  /* milliseconds, full 32 bits, wraps as the peer's */
    uint32_t stream_id;  /* message stream id */
    uint32_t csid;       /* the chunk stream it came on */
    const uint8_t *payload;
    size_t len;
};

struct rtmp_chunk_limits {
    size_t max_message_size;  /* default 16 MiB */
    uint32_t min_chunk_size;  /* smallest Set Chunk Size accepted, default 1 */
    uint32_t max_chunk_size;  /* largest accepted, default 0xFFFFFF; the spec
                               * allows up to 0x7FFFFFFF but calls everything
                               * above 0xFFFFFF equivalent, so such values are
                               * read as 0xFFFFFF before this check */
    unsigned max_streams;     /* chunk stream ids tracked at once, default 64 */
    size_t max_pending;       /* payload bytes in unfinished messages, all
                               * chunk streams together; default 2 x max msg */
};

void rtmp_chunk_limits_default(struct rtmp_chunk_limits *lim);

/* What the reader remembers per chunk stream id (RTMP 1.0, 5.3.1.2). */
struct rtmp_chunk_stream {
    uint32_t csid;
    bool seen;           /* a header has set the fields below */
    bool partial;        /* a message is being assembled */
    bool ext;            /* the last type 0/1/2 header had an extended ts */
    uint8_t type;
    uint32_t stream_id;
    uint32_t length;
    uint32_t timestamp;  /* of the current (or last) message */
    uint32_t delta;      /* reused by type 3 headers that start a message */
    uint32_t ext_value;  /* the last extended timestamp field read */
    struct frame *frame; /* payload storage, grown as bytes arrive (limit:
                          * the message length, itself <= max_message_size) */
    size_t len;          /* payload bytes of the current message in frame */
};

struct rtmp_chunk_reader {
    struct rtmp_chunk_limits lim;
    uint32_t chunk_size;            /* incoming, from the peer's Set Chunk Size */

    /* Header parse state. */
    int state;
    uint8_t hdr[18];                /* basic(3) + message(11) + extended(4) */
    size_t hdr_len, hdr_need;
    size_t hdr_basic;               /* length of the basic header part */
    uint8_t fmt;
    bool unread;                    /* give the extended field back */
    bool first_chunk;               /* the current chunk starts a message */
    struct rtmp_chunk_stream *cur;
    uint32_t chunk_left;            /* payload bytes left in the current chunk */

    /* Bytes given back after peeking for an extended timestamp that a
     * type 3 continuation chunk turned out not to repeat. */
    uint8_t replay[8];
    size_t replay_len, replay_pos;

    struct rtmp_chunk_stream *streams; /* lim.max_streams slots */
    unsigned nstreams;
    struct rtmp_chunk_stream *emitted; /* its payload is handed out */
    size_t pending;                    /* bytes in partial messages */

    /* Acknowledgement (RTMP 1.0, 5.4.3): the peer's window, and our count. */
    uint64_t bytes_in;
    uint64_t acked_at;
    uint32_t ack_window;

    char error[160];                /* why rtmp_chunk_read failed */
};

/* lim NULL: defaults. Returns 0 or -ENOMEM. */
int rtmp_chunk_reader_init(struct rtmp_chunk_reader *r, const struct rtmp_chunk_limits *lim);
void rtmp_chunk_reader_free(struct rtmp_chunk_reader *r);

/*
 * Consume bytes until a message is complete or the input runs out.
 * *consumed: input bytes used (always set). Returns RTMP_CHUNK_MSG with *msg
 * filled, 0 when all input was used and no message is complete yet, or a
 * negative errno on a protocol violation or limit (r->error says which):
 * -EPROTO, -EMSGSIZE, -ERANGE (chunk size), -ENOSPC (chunk streams),
 * -ENOMEM. After an error the reader is unusable; close the connection.
 */
int rtmp_chunk_read(struct rtmp_chunk_reader *r, const uint8_t *data, size_t len,
                    size_t *consumed, struct rtmp_msg *msg);

/*
 * Keep the payload of the message just returned: out (initialised here)
 * receives a copy of it; the caller frees it. Only valid right after
 * rtmp_chunk_read returned RTMP_CHUNK_MSG; -EINVAL otherwise.
 */
int rtmp_chunk_take_payload(struct rtmp_chunk_reader *r, struct buf *out);

/*
 * Take the message just returned as an unpublished frame, without a copy:
 * refs 1, codec MEDIA_CODEC_NONE, data/size the whole payload (msg->payload
 * points into it and stays valid for the new owner). The caller sets the
 * codec and kind, trims the container header with frame_trim, and publishes
 * or unrefs it. NULL (and nothing taken) for an empty message or outside the
 * moment after rtmp_chunk_read returned RTMP_CHUNK_MSG.
 */
struct frame *rtmp_chunk_take_frame(struct rtmp_chunk_reader *r);

/*
 * True when the peer's acknowledgement window has been crossed since the last
 * ACK; *seq is then the sequence number to send (bytes received, mod 2^32)
 * and the window starts over. Bytes count from the first chunk-stream byte.
 */
bool rtmp_chunk_ack_due(struct rtmp_chunk_reader *r, uint32_t *seq);

/* ---- writer ---------------------------------------------------------- */

struct rtmp_chunk_writer {
    uint32_t chunk_size; /* outgoing; changed by rtmp_chunk_write_set_chunk_size */
};

void rtmp_chunk_writer_init(struct rtmp_chunk_writer *w);

/*
 * Serialise one message: a type 0 header, then type 3 continuation chunks,
 * each repeating the extended timestamp when it is >= 0xFFFFFF (as FMS,
 * ffmpeg and SRS expect). Appends to out all or nothing. Returns 0, -EINVAL
 * (csid outside 2..65599, payload over 0xFFFFFF) or what out returned.
 */
int rtmp_chunk_write(struct rtmp_chunk_writer *w, struct buf *out, uint32_t csid, uint8_t type,
                     uint32_t timestamp, uint32_t stream_id, const void *payload, size_t len);

/* Protocol control messages, on csid 2, message stream 0. Set Chunk Size is
 * written at the old size and then becomes w's size (1..0x7FFFFFFF). */
int rtmp_chunk_write_set_chunk_size(struct rtmp_chunk_writer *w, struct buf *out, uint32_t size);
int rtmp_chunk_write_abort(struct rtmp_chunk_writer *w, struct buf *out, uint32_t csid);
int rtmp_chunk_write_ack(struct rtmp_chunk_writer *w, struct buf *out, uint32_t seq);
int rtmp_chunk_write_window_ack_size(struct rtmp_chunk_writer *w, struct buf *out, uint32_t size);
int rtmp_chunk_write_set_peer_bandwidth(struct rtmp_chunk_writer *w, struct buf *out,
                                        uint32_t size, enum rtmp_bw_limit limit);
/* User Control: event + 4-byte value (stream id, or timestamp for pings). */
int rtmp_chunk_write_user_control(struct rtmp_chunk_writer *w, struct buf *out,
                                  enum rtmp_uc_event event, uint32_t value);
int rtmp_chunk_write_stream_begin(struct rtmp_chunk_writer *w, struct buf *out, uint32_t stream_id);
int rtmp_chunk_write_ping_request(struct rtmp_chunk_writer *w, struct buf *out, uint32_t ts);
int rtmp_chunk_write_ping_response(struct rtmp_chunk_writer *w, struct buf *out, uint32_t ts);

/* ---- parsing control messages from the peer --------------------------- */

struct rtmp_user_control {
    uint16_t event;  /* enum rtmp_uc_event */
    uint32_t value;  /* stream id, or the ping timestamp */
    uint32_t value2; /* Set Buffer Length: the buffer length in ms */
};

/* A User Control payload; -EBADMSG when short for its event. */
int rtmp_user_control_parse(const uint8_t *p, size_t len, struct rtmp_user_control *uc);
/* The 4-byte value of Set Chunk Size, Abort, Ack, Window Ack Size, and the
 * first field of Set Peer Bandwidth; -EBADMSG when short. */
int rtmp_control_parse_u32(const struct rtmp_msg *msg, uint32_t *value);

#endif
