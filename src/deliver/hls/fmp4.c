/*
 * CMAF fMP4 writer: init segments and moof+mdat fragments.
 *
 * The init segment is small and written once per configuration, so it is
 * built with nested boxes whose sizes are patched when each box closes
 * (struct out tracks the first buf error so the code reads as a straight
 * description of the box tree).
 *
 * Fragments carry the payload, so they are built differently: one pass
 * validates the input and works out every box size, the buffer is reserved
 * once for the exact total, and a second pass writes headers and copies each
 * payload straight to its final place. The trun data_offset then is simply
 * moof size + mdat header + the run's offset inside mdat (tfhd says
 * default-base-is-moof, as CMAF requires), with no patching afterwards.
 *
 * Choices a player sees, and why:
 *   ftyp  major 'iso5' (needed for default-base-is-moof), compatible 'iso5',
 *         'iso6' (tfdt in every traf), 'cmfc' (CMAF), 'mp41' - as ffmpeg's
 *         hlsenc/movenc write for CMAF output; hls.js, Safari and ExoPlayer
 *         take it.
 *   styp  'msdh' + 'cmfs' on the first part of a segment.
 *   trun  version 1 (signed composition offsets) whenever offsets are
 *         written, so B-frames with pts < dts still work; video runs always
 *         carry offsets, audio runs only when some pts != dts.
 *   flags per sample: sync = depends on nothing; non-sync = depends on others
 *         and sample_is_non_sync_sample, which is what players use to find
 *         random access points inside a part (INDEPENDENT=YES parts).
 */
#include "deliver/hls/fmp4.h"

#include <errno.h>
#include <string.h>

#define SAMPLE_FLAGS_SYNC 0x02000000u
#define SAMPLE_FLAGS_NON_SYNC 0x01010000u

#define TRUN_DATA_OFFSET 0x000001u
#define TRUN_DURATION 0x000100u
#define TRUN_SIZE 0x000200u
#define TRUN_FLAGS 0x000400u
#define TRUN_CTO 0x000800u
#define TFHD_DEFAULT_BASE_IS_MOOF 0x020000u

/* Guard against absurd runs: a 1 s part at 60 fps is 60 samples. */
#define FMP4_MAX_SAMPLES (1u << 20)

static const uint32_t unity_matrix[9] = {0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000};

uint32_t fmp4_timescale(const struct codec_config *c)
{
    if (media_codec_kind(c->codec) == MEDIA_KIND_VIDEO)
        return FMP4_VIDEO_TIMESCALE;
    return c->sample_rate;
}

/* ---- init segment ------------------------------------------------------ */

struct out {
    struct buf *b;
    int err;
};

static void put_bytes(struct out *o, const void *p, size_t n)
{
    if (!o->err)
        o->err = buf_append(o->b, p, n);
}

static void put_zeros(struct out *o, size_t n)
{
    static const uint8_t zeros[32];
    while (n > 0 && !o->err) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        put_bytes(o, zeros, k);
        n -= k;
    }
}

static void put_u8(struct out *o, uint32_t v)
{
    uint8_t c = (uint8_t)v;
    put_bytes(o, &c, 1);
}

static void put_u16(struct out *o, uint32_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(o, p, 2);
}

static void put_u24(struct out *o, uint32_t v)
{
    uint8_t p[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(o, p, 3);
}

static void put_u32(struct out *o, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(o, p, 4);
}

static void put_fourcc(struct out *o, const char *s) { put_bytes(o, s, 4); }

static void put_matrix(struct out *o)
{
    for (int i = 0; i < 9; i++)
        put_u32(o, unity_matrix[i]);
}

static size_t box_open(struct out *o, const char *type)
{
    size_t at = o->b->len;
    put_u32(o, 0);
    put_fourcc(o, type);
    return at;
}

static size_t fullbox_open(struct out *o, const char *type, uint8_t version, uint32_t flags)
{
    size_t at = box_open(o, type);
    put_u32(o, (uint32_t)version << 24 | (flags & 0xffffff));
    return at;
}

static void box_close(struct out *o, size_t at)
{
    if (o->err)
        return;
    size_t n = o->b->len - at;
    if (n > UINT32_MAX) {
        o->err = -EMSGSIZE;
        return;
    }
    uint8_t *p = (uint8_t *)o->b->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

static void write_ftyp(struct out *o)
{
    size_t at = box_open(o, "ftyp");
    put_fourcc(o, "iso5");
    put_u32(o, 512);
    put_fourcc(o, "iso5");
    put_fourcc(o, "iso6");
    put_fourcc(o, "cmfc");
    put_fourcc(o, "mp41");
    box_close(o, at);
}

static void write_mvhd(struct out *o)
{
    size_t at = fullbox_open(o, "mvhd", 0, 0);
    put_u32(o, 0);          /* creation_time */
    put_u32(o, 0);          /* modification_time */
    put_u32(o, 1000);       /* timescale: unused, every duration is 0 */
    put_u32(o, 0);          /* duration: live, unknown */
    put_u32(o, 0x00010000); /* rate 1.0 */
    put_u16(o, 0x0100);     /* volume 1.0 */
    put_zeros(o, 10);       /* reserved */
    put_matrix(o);
    put_zeros(o, 24);       /* pre_defined */
    put_u32(o, 3);          /* next_track_ID */
    box_close(o, at);
}

/* Display size in 16.16: the coded size stretched by the sample aspect ratio. */
static void track_display_size(const struct codec_config *c, uint32_t *w, uint32_t *h)
{
    uint64_t width = c->width;
    if (c->sar_num && c->sar_den && c->sar_num != c->sar_den)
        width = width * c->sar_num / c->sar_den;
    if (width > 0xffff)
        width = 0xffff;
    *w = (uint32_t)width << 16;
    *h = (c->height > 0xffff ? 0xffffu : c->height) << 16;
}

static void write_tkhd(struct out *o, uint32_t track_id, const struct codec_config *c)
{
    bool video = media_codec_kind(c->codec) == MEDIA_KIND_VIDEO;
    size_t at = fullbox_open(o, "tkhd", 0, 0x000003); /* enabled, in movie */
    put_u32(o, 0);                                    /* creation_time */
    put_u32(o, 0);                                    /* modification_time */
    put_u32(o, track_id);
    put_u32(o, 0);                    /* reserved */
    put_u32(o, 0);                    /* duration */
    put_zeros(o, 8);                  /* reserved */
    put_u16(o, 0);                    /* layer */
    put_u16(o, 0);                    /* alternate_group: no alternatives */
    put_u16(o, video ? 0 : 0x0100);   /* volume */
    put_u16(o, 0);                    /* reserved */
    put_matrix(o);
    uint32_t w = 0, h = 0;
    if (video)
        track_display_size(c, &w, &h);
    put_u32(o, w);
    put_u32(o, h);
    box_close(o, at);
}

static void write_mdhd(struct out *o, uint32_t timescale)
{
    size_t at = fullbox_open(o, "mdhd", 0, 0);
    put_u32(o, 0);
    put_u32(o, 0);
    put_u32(o, timescale);
    put_u32(o, 0);
    put_u16(o, 0x55c4); /* language "und", packed ISO-639-2/T */
    put_u16(o, 0);
    box_close(o, at);
}

static void write_hdlr(struct out *o, bool video)
{
    size_t at = fullbox_open(o, "hdlr", 0, 0);
    put_u32(o, 0); /* pre_defined */
    put_fourcc(o, video ? "vide" : "soun");
    put_zeros(o, 12);
    const char *name = video ? "VideoHandler" : "SoundHandler";
    put_bytes(o, name, strlen(name) + 1);
    box_close(o, at);
}

static void write_dinf(struct out *o)
{
    size_t dinf = box_open(o, "dinf");
    size_t dref = fullbox_open(o, "dref", 0, 0);
    put_u32(o, 1);
    size_t url = fullbox_open(o, "url ", 0, 0x000001); /* media is in this file */
    box_close(o, url);
    box_close(o, dref);
    box_close(o, dinf);
}

static void write_visual_entry(struct out *o, const struct codec_config *c)
{
    const char *entry, *config;
    switch (c->codec) {
    case MEDIA_CODEC_H264: entry = "avc1"; config = "avcC"; break;
    /* hvc1, not hev1: parameter sets in the sample entry, which Apple
     * requires for HEVC in HLS. */
    case MEDIA_CODEC_HEVC: entry = "hvc1"; config = "hvcC"; break;
    default: entry = "av01"; config = "av1C"; break;
    }
    size_t at = box_open(o, entry);
    put_zeros(o, 6);  /* reserved */
    put_u16(o, 1);    /* data_reference_index */
    put_zeros(o, 16); /* pre_defined, reserved, pre_defined[3] */
    put_u16(o, c->width > 0xffff ? 0xffff : c->width);
    put_u16(o, c->height > 0xffff ? 0xffff : c->height);
    put_u32(o, 0x00480000); /* 72 dpi */
    put_u32(o, 0x00480000);
    put_u32(o, 0);      /* reserved */
    put_u16(o, 1);      /* frame_count */
    put_zeros(o, 32);   /* compressorname: empty Pascal string */
    put_u16(o, 0x0018); /* depth */
    put_u16(o, 0xffff); /* pre_defined = -1 */
    size_t cfg = box_open(o, config);
    put_bytes(o, c->record, c->record_len);
    box_close(o, cfg);
    if (c->sar_num && c->sar_den && c->sar_num != c->sar_den) {
        size_t pasp = box_open(o, "pasp");
        put_u32(o, c->sar_num);
        put_u32(o, c->sar_den);
        box_close(o, pasp);
    }
    box_close(o, at);
}

/* An MPEG-4 descriptor header (14496-1 8.3.3) with a minimal size field. */
static void put_descriptor(struct out *o, uint8_t tag, size_t len)
{
    put_u8(o, tag);
    uint8_t size[4];
    int n = 0;
    do {
        size[n++] = (uint8_t)(len & 0x7f);
        len >>= 7;
    } while (len && n < 4);
    while (n-- > 0)
        put_u8(o, size[n] | (n ? 0x80 : 0));
}

static size_t descriptor_size(size_t payload)
{
    size_t n = 1;
    for (size_t l = payload >> 7; l; l >>= 7)
        n++;
    return 1 + n + payload;
}

static void write_audio_entry(struct out *o, const struct codec_config *c)
{
    size_t at = box_open(o, "mp4a");
    put_zeros(o, 6); /* reserved */
    put_u16(o, 1);   /* data_reference_index */
    put_zeros(o, 8); /* reserved */
    put_u16(o, c->channels);
    put_u16(o, 16);  /* samplesize */
    put_u16(o, 0);   /* pre_defined */
    put_u16(o, 0);   /* reserved */
    put_u32(o, c->sample_rate <= 0xffff ? c->sample_rate << 16 : 0);

    /* esds: ES_Descriptor { DecoderConfigDescriptor { DecSpecificInfo = ASC },
     * SLConfigDescriptor } (14496-1 7.2.6, 14496-14 3.1.2). */
    size_t esds = fullbox_open(o, "esds", 0, 0);
    size_t dsi = descriptor_size(c->record_len);
    size_t dcd = descriptor_size(13 + dsi);
    size_t sl = descriptor_size(1);
    put_descriptor(o, 0x03, 3 + dcd + sl);
    put_u16(o, 0); /* ES_ID: 0 in MP4 files, the track ID names the stream */
    put_u8(o, 0);  /* no dependence, URL or OCR stream */
    put_descriptor(o, 0x04, 13 + dsi);
    put_u8(o, 0x40);            /* objectTypeIndication: MPEG-4 Audio */
    put_u8(o, 0x05 << 2 | 0x1); /* streamType audio, upStream 0, reserved 1 */
    put_u24(o, 0);              /* bufferSizeDB: unknown for a live stream */
    put_u32(o, 0);              /* maxBitrate */
    put_u32(o, 0);              /* avgBitrate */
    put_descriptor(o, 0x05, c->record_len);
    put_bytes(o, c->record, c->record_len);
    put_descriptor(o, 0x06, 1);
    put_u8(o, 0x02); /* predefined: MP4 */
    box_close(o, esds);
    box_close(o, at);
}

static void write_stbl(struct out *o, const struct codec_config *c)
{
    size_t stbl = box_open(o, "stbl");
    size_t stsd = fullbox_open(o, "stsd", 0, 0);
    put_u32(o, 1);
    if (media_codec_kind(c->codec) == MEDIA_KIND_VIDEO)
        write_visual_entry(o, c);
    else
        write_audio_entry(o, c);
    box_close(o, stsd);
    /* Fragmented: the sample tables are empty, samples live in trun. */
    static const char *empty[] = {"stts", "stsc", "stco"};
    for (int i = 0; i < 3; i++) {
        size_t at = fullbox_open(o, empty[i], 0, 0);
        put_u32(o, 0);
        box_close(o, at);
    }
    size_t stsz = fullbox_open(o, "stsz", 0, 0);
    put_u32(o, 0); /* sample_size */
    put_u32(o, 0); /* sample_count */
    box_close(o, stsz);
    box_close(o, stbl);
}

static void write_trak(struct out *o, uint32_t track_id, const struct codec_config *c)
{
    bool video = media_codec_kind(c->codec) == MEDIA_KIND_VIDEO;
    size_t trak = box_open(o, "trak");
    write_tkhd(o, track_id, c);
    size_t mdia = box_open(o, "mdia");
    write_mdhd(o, fmp4_timescale(c));
    write_hdlr(o, video);
    size_t minf = box_open(o, "minf");
    if (video) {
        size_t vmhd = fullbox_open(o, "vmhd", 0, 0x000001);
        put_zeros(o, 8); /* graphicsmode, opcolor */
        box_close(o, vmhd);
    } else {
        size_t smhd = fullbox_open(o, "smhd", 0, 0);
        put_u32(o, 0); /* balance, reserved */
        box_close(o, smhd);
    }
    write_dinf(o);
    write_stbl(o, c);
    box_close(o, minf);
    box_close(o, mdia);
    box_close(o, trak);
}

static void write_trex(struct out *o, uint32_t track_id)
{
    size_t at = fullbox_open(o, "trex", 0, 0);
    put_u32(o, track_id);
    put_u32(o, 1); /* default_sample_description_index */
    put_u32(o, 0); /* default_sample_duration */
    put_u32(o, 0); /* default_sample_size */
    put_u32(o, 0); /* default_sample_flags */
    box_close(o, at);
}

static bool init_config_ok(const struct codec_config *c, enum media_kind kind)
{
    if (c->codec == MEDIA_CODEC_NONE || media_codec_kind(c->codec) != kind)
        return false;
    if (!c->record || c->record_len == 0 || c->record_len > CODEC_RECORD_MAX)
        return false;
    return kind == MEDIA_KIND_VIDEO || c->sample_rate > 0;
}

int fmp4_write_init(struct buf *out, const struct codec_config *video, const struct codec_config *audio)
{
    if (!video && !audio)
        return -EINVAL;
    if ((video && !init_config_ok(video, MEDIA_KIND_VIDEO)) ||
        (audio && !init_config_ok(audio, MEDIA_KIND_AUDIO)))
        return -EINVAL;
    struct out o = {out, 0};
    size_t start = out->len;
    write_ftyp(&o);
    size_t moov = box_open(&o, "moov");
    write_mvhd(&o);
    if (video)
        write_trak(&o, FMP4_TRACK_VIDEO, video);
    if (audio)
        write_trak(&o, FMP4_TRACK_AUDIO, audio);
    size_t mvex = box_open(&o, "mvex");
    if (video)
        write_trex(&o, FMP4_TRACK_VIDEO);
    if (audio)
        write_trex(&o, FMP4_TRACK_AUDIO);
    box_close(&o, mvex);
    box_close(&o, moov);
    if (o.err)
        out->len = start;
    return o.err;
}

/* ---- fragments --------------------------------------------------------- */

static const char styp_brands[][5] = {"msdh", "msdh", "cmfs"}; /* major, then compatible */
#define STYP_SIZE (8 + 4 + 4 * (sizeof styp_brands / sizeof styp_brands[0]))

struct run_layout {
    uint32_t trun_flags;
    size_t per_sample;  /* trun bytes per sample */
    size_t traf_size;
    uint64_t data_size; /* this run's bytes in mdat */
};

struct layout {
    struct run_layout runs[2];
    size_t moof_size;
    uint64_t mdat_size;
    uint64_t total;
};

static uint32_t sample_duration(const struct fmp4_run *r, size_t i, bool *ok)
{
    const struct fmp4_sample *s = &r->samples[i];
    int64_t d = s->duration;
    if (d == 0 && i + 1 < r->count)
        d = r->samples[i + 1].dts - s->dts;
    if (d <= 0 || d > UINT32_MAX)
        *ok = false;
    return (uint32_t)d;
}

/* Validate and size everything; -EINVAL for input the writer cannot express. */
static int fragment_layout(const struct fmp4_fragment *f, struct layout *l)
{
    if (!f || !f->runs || f->nruns < 1 || f->nruns > 2)
        return -EINVAL;
    if (f->nruns == 2 && f->runs[0].track_id == f->runs[1].track_id)
        return -EINVAL;
    memset(l, 0, sizeof *l);
    l->moof_size = 8 + 16; /* moof header + mfhd */
    l->mdat_size = 8;
    for (size_t k = 0; k < f->nruns; k++) {
        const struct fmp4_run *r = &f->runs[k];
        struct run_layout *rl = &l->runs[k];
        if (r->track_id != FMP4_TRACK_VIDEO && r->track_id != FMP4_TRACK_AUDIO)
            return -EINVAL;
        if (!r->samples || r->count == 0 || r->count > FMP4_MAX_SAMPLES)
            return -EINVAL;
        if (r->samples[0].dts < 0)
            return -EINVAL; /* tfdt is unsigned */
        bool ok = true, any_cto = false;
        for (size_t i = 0; i < r->count; i++) {
            const struct fmp4_sample *s = &r->samples[i];
            sample_duration(r, i, &ok);
            int64_t cto = s->pts - s->dts;
            if (cto < INT32_MIN || cto > INT32_MAX)
                ok = false;
            if (cto)
                any_cto = true;
            if (s->size && !s->data)
                ok = false;
            rl->data_size += s->size;
        }
        if (!ok)
            return -EINVAL;
        rl->trun_flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;
        rl->per_sample = 12;
        if (r->track_id == FMP4_TRACK_VIDEO || any_cto) {
            rl->trun_flags |= TRUN_CTO;
            rl->per_sample = 16;
        }
        size_t trun = 8 + 4 + 4 + 4 + rl->per_sample * r->count;
        rl->traf_size = 8 + 16 /* tfhd */ + 20 /* tfdt v1 */ + trun;
        l->moof_size += rl->traf_size;
        l->mdat_size += rl->data_size;
    }
    l->total = (f->styp ? STYP_SIZE : 0) + l->moof_size + l->mdat_size;
    /* trun data_offset is a signed 32-bit offset from moof. */
    if (l->total > INT32_MAX)
        return -EINVAL;
    return 0;
}

size_t fmp4_fragment_size(const struct fmp4_fragment *frag)
{
    struct layout l;
    return fragment_layout(frag, &l) ? 0 : (size_t)l.total;
}

static uint8_t *wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static uint8_t *wr64(uint8_t *p, uint64_t v)
{
    p = wr32(p, (uint32_t)(v >> 32));
    return wr32(p, (uint32_t)v);
}

static uint8_t *wrbox(uint8_t *p, size_t size, const char *type)
{
    p = wr32(p, (uint32_t)size);
    memcpy(p, type, 4);
    return p + 4;
}

int fmp4_write_fragment(struct buf *out, const struct fmp4_fragment *f)
{
    struct layout l;
    int rc = fragment_layout(f, &l);
    if (rc)
        return rc;
    rc = buf_reserve(out, (size_t)l.total);
    if (rc)
        return rc;
    uint8_t *base = (uint8_t *)out->data + out->len;
    uint8_t *p = base;

    if (f->styp) {
        p = wrbox(p, STYP_SIZE, "styp");
        memcpy(p, styp_brands[0], 4);
        p = wr32(p + 4, 0); /* minor_version */
        for (size_t i = 1; i < sizeof styp_brands / sizeof styp_brands[0]; i++) {
            memcpy(p, styp_brands[i], 4);
            p += 4;
        }
    }

    p = wrbox(p, l.moof_size, "moof");
    p = wrbox(p, 16, "mfhd");
    p = wr32(p, 0);
    p = wr32(p, f->sequence);

    /* Offsets are from the first byte of moof (default-base-is-moof). */
    uint64_t data_offset = l.moof_size + 8;
    for (size_t k = 0; k < f->nruns; k++) {
        const struct fmp4_run *r = &f->runs[k];
        const struct run_layout *rl = &l.runs[k];
        bool video = r->track_id == FMP4_TRACK_VIDEO;
        p = wrbox(p, rl->traf_size, "traf");
        p = wrbox(p, 16, "tfhd");
        p = wr32(p, TFHD_DEFAULT_BASE_IS_MOOF);
        p = wr32(p, r->track_id);
        p = wrbox(p, 20, "tfdt");
        p = wr32(p, 1u << 24); /* version 1: 64-bit baseMediaDecodeTime */
        p = wr64(p, (uint64_t)r->samples[0].dts);
        p = wrbox(p, 8 + 12 + rl->per_sample * r->count, "trun");
        p = wr32(p, ((rl->trun_flags & TRUN_CTO) ? 1u << 24 : 0) | rl->trun_flags);
        p = wr32(p, (uint32_t)r->count);
        p = wr32(p, (uint32_t)data_offset);
        for (size_t i = 0; i < r->count; i++) {
            const struct fmp4_sample *s = &r->samples[i];
            bool ok = true;
            p = wr32(p, sample_duration(r, i, &ok));
            p = wr32(p, s->size);
            p = wr32(p, !video || s->keyframe ? SAMPLE_FLAGS_SYNC : SAMPLE_FLAGS_NON_SYNC);
            if (rl->trun_flags & TRUN_CTO)
                p = wr32(p, (uint32_t)(int32_t)(s->pts - s->dts));
        }
        data_offset += rl->data_size;
    }

    p = wrbox(p, (size_t)l.mdat_size, "mdat");
    for (size_t k = 0; k < f->nruns; k++) {
        const struct fmp4_run *r = &f->runs[k];
        for (size_t i = 0; i < r->count; i++) {
            if (r->samples[i].size) {
                memcpy(p, r->samples[i].data, r->samples[i].size);
                p += r->samples[i].size;
            }
        }
    }
    out->len += (size_t)(p - base);
    return 0;
}
