/*
 * Decoder configuration parsing: avcC + H.264 SPS, hvcC + HEVC SPS/VPS,
 * av1C + AV1 sequence header, AAC AudioSpecificConfig.
 *
 * How it reads: one small bit reader (struct bits) serves every codec. For
 * H.264/HEVC it drops emulation prevention bytes (00 00 03) as it loads each
 * byte, so parameter sets are read in place without an RBSP copy. A read past
 * the end never touches memory: it yields zeros and sets a sticky error flag,
 * which each parser checks before it trusts what it read. Every loop whose
 * count comes from the bitstream is bounded by the limit the spec puts on
 * that count, so a hostile record cannot make us spin.
 *
 * Only what the house needs is kept (size, rate, profile, level, bit depth,
 * aspect ratio, timing); the rest of each syntax structure is read only to
 * get past it, because the fields we want (VUI timing) come after it.
 */
#include "media/codec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Picture sizes past this are refused as nonsense (no level allows them). */
#define CODEC_MAX_DIMENSION 32768u

/* ---- bit reader -------------------------------------------------------- */

struct bits {
    const uint8_t *p;
    size_t len, pos;
    uint32_t cur;  /* the byte being consumed */
    int left;      /* bits of cur not yet consumed */
    int zeros;     /* zero bytes just read, for emulation prevention */
    bool epb;      /* H.264/HEVC RBSP: skip 00 00 03 */
    bool error;    /* read past the end (sticky) */
};

static void bits_init(struct bits *b, const uint8_t *p, size_t len, bool epb)
{
    b->p = p;
    b->len = len;
    b->pos = 0;
    b->cur = 0;
    b->left = 0;
    b->zeros = 0;
    b->epb = epb;
    b->error = false;
}

static bool bits_fill(struct bits *b)
{
    if (b->pos >= b->len) {
        b->error = true;
        return false;
    }
    uint8_t c = b->p[b->pos++];
    if (b->epb) {
        if (b->zeros >= 2 && c == 0x03) {
            if (b->pos >= b->len) {
                b->error = true;
                return false;
            }
            c = b->p[b->pos++];
            b->zeros = 0;
        }
        b->zeros = c == 0 ? b->zeros + 1 : 0;
    }
    b->cur = c;
    b->left = 8;
    return true;
}

/* n <= 32 bits, most significant first. */
static uint32_t bits_u(struct bits *b, int n)
{
    uint64_t v = 0;
    while (n > 0) {
        if (b->left == 0 && !bits_fill(b))
            return 0;
        int take = n < b->left ? n : b->left;
        v = (v << take) | ((b->cur >> (b->left - take)) & ((1u << take) - 1));
        b->left -= take;
        n -= take;
    }
    return (uint32_t)v;
}

static bool bits_flag(struct bits *b) { return bits_u(b, 1) != 0; }

static void bits_skip(struct bits *b, uint32_t n)
{
    while (n > 0 && !b->error) {
        int take = n > 32 ? 32 : (int)n;
        bits_u(b, take);
        n -= (uint32_t)take;
    }
}

/* Exp-Golomb ue(v); values above 2^32 - 2 are malformed. */
static uint32_t bits_ue(struct bits *b)
{
    int lz = 0;
    while (!bits_flag(b)) {
        if (b->error || ++lz > 31) {
            b->error = true;
            return 0;
        }
    }
    if (lz == 0)
        return 0;
    return (uint32_t)((1ull << lz) - 1 + bits_u(b, lz));
}

static int64_t bits_se(struct bits *b)
{
    uint32_t k = bits_ue(b);
    return (k & 1) ? (int64_t)(k / 2) + 1 : -(int64_t)(k / 2);
}

/* AV1 uvlc() (4.10.3). */
static uint32_t bits_uvlc(struct bits *b)
{
    int lz = 0;
    while (!bits_flag(b)) {
        if (b->error)
            return 0;
        lz++;
    }
    if (lz >= 32)
        return UINT32_MAX;
    return (uint32_t)(bits_u(b, lz) + ((1ull << lz) - 1));
}

/* AV1 leb128() (4.10.5); -EBADMSG when truncated or wider than 32 bits. */
static int leb128(const uint8_t *p, size_t len, uint64_t *value, size_t *used)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++) {
        if (i >= len)
            return -EBADMSG;
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (v > UINT32_MAX)
                return -EBADMSG;
            *value = v;
            *used = i + 1;
            return 0;
        }
    }
    return -EBADMSG;
}

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

/* ---- shared helpers ---------------------------------------------------- */

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* num/den reduced; left 0/0 when either is 0 or the reduced pair is not 32-bit. */
static void set_rate(uint32_t *out_num, uint32_t *out_den, uint64_t num, uint64_t den)
{
    *out_num = *out_den = 0;
    if (!num || !den)
        return;
    uint64_t g = gcd64(num, den);
    num /= g;
    den /= g;
    if (num > UINT32_MAX || den > UINT32_MAX)
        return;
    *out_num = (uint32_t)num;
    *out_den = (uint32_t)den;
}

/* H.264 Table E-1, shared by HEVC (Table E.1). Index 0 is "unspecified". */
static const uint8_t sar_table[17][2] = {
    {0, 0},   {1, 1},   {12, 11}, {10, 11}, {16, 11}, {40, 33}, {24, 11}, {20, 11}, {32, 11},
    {80, 33}, {18, 11}, {15, 11}, {64, 33}, {160, 99}, {4, 3},  {3, 2},   {2, 1},
};

/* aspect_ratio_info: the same syntax in H.264 and HEVC VUI. */
static void read_sar(struct bits *b, uint32_t *num, uint32_t *den)
{
    uint32_t idc = bits_u(b, 8);
    if (idc == 255) {
        *num = bits_u(b, 16);
        *den = bits_u(b, 16);
    } else if (idc < 17) {
        *num = sar_table[idc][0];
        *den = sar_table[idc][1];
    } else {
        *num = *den = 0;
    }
}

static void default_sar(struct codec_config *out, uint32_t num, uint32_t den)
{
    if (num && den) {
        uint64_t g = gcd64(num, den);
        out->sar_num = (uint32_t)(num / g);
        out->sar_den = (uint32_t)(den / g);
    } else {
        out->sar_num = out->sar_den = 1;
    }
}

/* ---- H.264 ------------------------------------------------------------- */

static void h264_skip_scaling_list(struct bits *b, int size)
{
    int last = 8, next = 8;
    for (int j = 0; j < size && !b->error; j++) {
        if (next != 0) {
            int64_t delta = bits_se(b);
            if (delta < -128 || delta > 127) {
                b->error = true;
                return;
            }
            next = (int)((last + delta + 256) % 256);
        }
        last = next == 0 ? last : next;
    }
}

static bool h264_has_chroma_info(uint32_t profile)
{
    switch (profile) {
    case 100: case 110: case 122: case 244: case 44: case 83:
    case 86: case 118: case 128: case 138: case 139: case 134: case 135:
        return true;
    }
    return false;
}

int codec_h264_parse_sps(struct codec_config *out, const uint8_t *nal, size_t len)
{
    if (!nal || len < 4 || (nal[0] & 0x80) || (nal[0] & 0x1f) != 7)
        return -EBADMSG;
    struct bits b;
    bits_init(&b, nal + 1, len - 1, true);

    uint32_t profile = bits_u(&b, 8);
    uint32_t constraints = bits_u(&b, 8);
    uint32_t level = bits_u(&b, 8);
    if (bits_ue(&b) > 31) /* seq_parameter_set_id */
        return -EBADMSG;

    uint32_t chroma = 1, bd_luma = 8, bd_chroma = 8;
    bool separate_planes = false;
    if (h264_has_chroma_info(profile)) {
        chroma = bits_ue(&b);
        if (chroma > 3)
            return -EBADMSG;
        if (chroma == 3)
            separate_planes = bits_flag(&b);
        bd_luma = bits_ue(&b) + 8;
        bd_chroma = bits_ue(&b) + 8;
        if (bd_luma > 14 || bd_chroma > 14)
            return -EBADMSG;
        bits_flag(&b); /* qpprime_y_zero_transform_bypass_flag */
        if (bits_flag(&b)) { /* seq_scaling_matrix_present_flag */
            int lists = chroma != 3 ? 8 : 12;
            for (int i = 0; i < lists; i++)
                if (bits_flag(&b))
                    h264_skip_scaling_list(&b, i < 6 ? 16 : 64);
        }
    }
    if (bits_ue(&b) > 12) /* log2_max_frame_num_minus4 */
        return -EBADMSG;
    uint32_t poc_type = bits_ue(&b);
    if (poc_type > 2)
        return -EBADMSG;
    if (poc_type == 0) {
        if (bits_ue(&b) > 12) /* log2_max_pic_order_cnt_lsb_minus4 */
            return -EBADMSG;
    } else if (poc_type == 1) {
        bits_flag(&b); /* delta_pic_order_always_zero_flag */
        bits_se(&b);   /* offset_for_non_ref_pic */
        bits_se(&b);   /* offset_for_top_to_bottom_field */
        uint32_t cycle = bits_ue(&b);
        if (cycle > 255)
            return -EBADMSG;
        for (uint32_t i = 0; i < cycle && !b.error; i++)
            bits_se(&b);
    }
    bits_ue(&b);   /* max_num_ref_frames */
    bits_flag(&b); /* gaps_in_frame_num_value_allowed_flag */
    uint64_t width_mbs = (uint64_t)bits_ue(&b) + 1;
    uint64_t height_units = (uint64_t)bits_ue(&b) + 1;
    bool frame_mbs_only = bits_flag(&b);
    if (!frame_mbs_only)
        bits_flag(&b); /* mb_adaptive_frame_field_flag */
    bits_flag(&b);     /* direct_8x8_inference_flag */
    uint64_t crop[4] = {0, 0, 0, 0};
    if (bits_flag(&b))
        for (int i = 0; i < 4; i++)
            crop[i] = bits_ue(&b);
    if (b.error)
        return -EBADMSG;

    uint64_t width = width_mbs * 16;
    uint64_t height = height_units * 16 * (frame_mbs_only ? 1 : 2);
    uint64_t crop_x, crop_y;
    if (separate_planes || chroma == 0) {
        crop_x = 1;
        crop_y = frame_mbs_only ? 1 : 2;
    } else {
        crop_x = chroma == 3 ? 1 : 2;
        crop_y = (chroma == 1 ? 2 : 1) * (frame_mbs_only ? 1 : 2);
    }
    if (width > CODEC_MAX_DIMENSION || height > CODEC_MAX_DIMENSION)
        return -EBADMSG;
    if ((crop[0] + crop[1]) * crop_x >= width || (crop[2] + crop[3]) * crop_y >= height)
        return -EBADMSG;
    width -= (crop[0] + crop[1]) * crop_x;
    height -= (crop[2] + crop[3]) * crop_y;

    /* VUI: read into locals and keep only if complete, so an encoder that
     * truncates its VUI still gives us the size. */
    uint32_t sar_num = 0, sar_den = 0, nuit = 0, time_scale = 0;
    if (bits_flag(&b)) { /* vui_parameters_present_flag */
        struct bits v = b;
        if (bits_flag(&v)) /* aspect_ratio_info_present_flag */
            read_sar(&v, &sar_num, &sar_den);
        if (bits_flag(&v))  /* overscan_info_present_flag */
            bits_flag(&v);
        if (bits_flag(&v)) { /* video_signal_type_present_flag */
            bits_u(&v, 4);   /* video_format, video_full_range_flag */
            if (bits_flag(&v))
                bits_u(&v, 24); /* colour_primaries, transfer, matrix */
        }
        if (bits_flag(&v)) { /* chroma_loc_info_present_flag */
            bits_ue(&v);
            bits_ue(&v);
        }
        uint32_t t_nuit = 0, t_scale = 0;
        if (bits_flag(&v)) { /* timing_info_present_flag */
            t_nuit = bits_u(&v, 32);
            t_scale = bits_u(&v, 32);
        }
        if (!v.error) {
            nuit = t_nuit;
            time_scale = t_scale;
        } else {
            sar_num = sar_den = 0;
        }
    }

    out->codec = MEDIA_CODEC_H264;
    out->width = (uint32_t)width;
    out->height = (uint32_t)height;
    out->profile = (uint8_t)profile;
    out->constraints = (uint8_t)constraints;
    out->level = (uint8_t)level;
    out->tier = 0;
    out->chroma_format = (uint8_t)chroma;
    out->bit_depth = (uint8_t)bd_luma;
    out->bit_depth_chroma = (uint8_t)bd_chroma;
    default_sar(out, sar_num, sar_den);
    /* A frame is two fields' worth of ticks (H.264 E.2.1, with the usual
     * fixed_frame_rate / pic_struct assumptions encoders rely on). */
    set_rate(&out->fps_num, &out->fps_den, time_scale, 2ull * nuit);
    snprintf(out->codecs, sizeof out->codecs, "avc1.%02x%02x%02x",
             (unsigned)profile, (unsigned)constraints, (unsigned)level);
    return 0;
}

static int h264_parse_avcc(struct codec_config *out, const uint8_t *p, size_t len)
{
    if (len < 7)
        return -EBADMSG;
    if (p[0] != 1)
        return -ENOTSUP;
    unsigned length_size = (p[4] & 3) + 1u;
    if (length_size == 3)
        return -EBADMSG;
    unsigned nsps = p[5] & 0x1f;
    size_t pos = 6;
    const uint8_t *sps = NULL;
    size_t sps_len = 0;
    for (unsigned i = 0; i < nsps; i++) {
        if (len - pos < 2)
            return -EBADMSG;
        size_t n = rd16(p + pos);
        pos += 2;
        if (len - pos < n)
            return -EBADMSG;
        if (!sps && n) {
            sps = p + pos;
            sps_len = n;
        }
        pos += n;
    }
    if (len - pos < 1)
        return -EBADMSG;
    unsigned npps = p[pos++];
    for (unsigned i = 0; i < npps; i++) {
        if (len - pos < 2)
            return -EBADMSG;
        size_t n = rd16(p + pos);
        pos += 2;
        if (len - pos < n)
            return -EBADMSG;
        pos += n;
    }
    /* What follows (the high-profile chroma/bit depth extension) repeats
     * what the SPS says; the SPS is authoritative. */
    if (!sps || npps == 0)
        return -EBADMSG;
    int rc = codec_h264_parse_sps(out, sps, sps_len);
    if (rc)
        return rc;
    out->nal_length_size = (uint8_t)length_size;
    return 0;
}

/* ---- HEVC -------------------------------------------------------------- */

struct hevc_ptl {
    uint32_t profile_space, tier, profile_idc, compat, level;
    uint8_t constraint[6];
};

/* profile_tier_level(1, max_sub_layers_minus1) (H.265 7.3.3). */
static void hevc_read_ptl(struct bits *b, unsigned max_sub_layers_minus1, struct hevc_ptl *ptl)
{
    ptl->profile_space = bits_u(b, 2);
    ptl->tier = bits_u(b, 1);
    ptl->profile_idc = bits_u(b, 5);
    ptl->compat = bits_u(b, 32);
    for (int i = 0; i < 6; i++)
        ptl->constraint[i] = (uint8_t)bits_u(b, 8);
    ptl->level = bits_u(b, 8);
    bool profile_present[8] = {false}, level_present[8] = {false};
    for (unsigned i = 0; i < max_sub_layers_minus1; i++) {
        profile_present[i] = bits_flag(b);
        level_present[i] = bits_flag(b);
    }
    if (max_sub_layers_minus1 > 0)
        for (unsigned i = max_sub_layers_minus1; i < 8; i++)
            bits_u(b, 2); /* reserved_zero_2bits */
    for (unsigned i = 0; i < max_sub_layers_minus1; i++) {
        if (profile_present[i])
            bits_skip(b, 88);
        if (level_present[i])
            bits_skip(b, 8);
    }
}

static void hevc_skip_scaling_list_data(struct bits *b)
{
    for (int size_id = 0; size_id < 4; size_id++) {
        for (int matrix_id = 0; matrix_id < 6; matrix_id += size_id == 3 ? 3 : 1) {
            if (b->error)
                return;
            if (!bits_flag(b)) { /* scaling_list_pred_mode_flag */
                bits_ue(b);      /* scaling_list_pred_matrix_id_delta */
                continue;
            }
            int coefs = 1 << (4 + (size_id << 1));
            if (coefs > 64)
                coefs = 64;
            if (size_id > 1)
                bits_se(b); /* scaling_list_dc_coef_minus8 */
            for (int i = 0; i < coefs && !b->error; i++)
                bits_se(b); /* scaling_list_delta_coef */
        }
    }
}

/* st_ref_pic_set() for all sets of an SPS (H.265 7.3.7); -EBADMSG on limits. */
static int hevc_skip_st_rps(struct bits *b, unsigned count)
{
    unsigned delta_pocs[64];
    for (unsigned i = 0; i < count; i++) {
        if (b->error)
            return -EBADMSG;
        bool inter = i != 0 && bits_flag(b);
        if (inter) {
            bits_flag(b); /* delta_rps_sign */
            if (bits_ue(b) > 32767) /* abs_delta_rps_minus1 */
                return -EBADMSG;
            /* In an SPS delta_idx_minus1 is absent: the reference is i - 1. */
            unsigned n = 0;
            for (unsigned j = 0; j <= delta_pocs[i - 1] && !b->error; j++) {
                bool used = bits_flag(b);
                bool use_delta = used ? true : bits_flag(b);
                if (used || use_delta)
                    n++;
            }
            if (n > 32)
                return -EBADMSG;
            delta_pocs[i] = n;
        } else {
            uint32_t neg = bits_ue(b), pos = bits_ue(b);
            if (neg > 16 || pos > 16)
                return -EBADMSG;
            for (uint32_t j = 0; j < neg + pos && !b->error; j++) {
                if (bits_ue(b) > 32767) /* delta_poc_s0/s1_minus1 */
                    return -EBADMSG;
                bits_flag(b); /* used_by_curr_pic_s0/s1_flag */
            }
            delta_pocs[i] = neg + pos;
        }
    }
    return b->error ? -EBADMSG : 0;
}

static void hevc_write_codecs(struct codec_config *out, const struct hevc_ptl *ptl)
{
    /* ISO/IEC 14496-15 Annex E.3: compatibility flags in reverse bit order,
     * then the constraint bytes with trailing zero bytes left out. */
    uint32_t rev = 0;
    for (int i = 0; i < 32; i++)
        if (ptl->compat & (1u << i))
            rev |= 1u << (31 - i);
    static const char *space[4] = {"", "A", "B", "C"};
    int n = snprintf(out->codecs, sizeof out->codecs, "hvc1.%s%u.%X.%c%u", space[ptl->profile_space & 3],
                     (unsigned)ptl->profile_idc, (unsigned)rev, ptl->tier ? 'H' : 'L', (unsigned)ptl->level);
    int last = 5;
    while (last >= 0 && ptl->constraint[last] == 0)
        last--;
    for (int i = 0; i <= last && n > 0 && (size_t)n < sizeof out->codecs; i++)
        n += snprintf(out->codecs + n, sizeof out->codecs - (size_t)n, ".%X", ptl->constraint[i]);
}

int codec_hevc_parse_sps(struct codec_config *out, const uint8_t *nal, size_t len)
{
    if (!nal || len < 3 || (nal[0] & 0x80) || ((nal[0] >> 1) & 0x3f) != 33)
        return -EBADMSG;
    struct bits b;
    bits_init(&b, nal + 2, len - 2, true);

    bits_u(&b, 4); /* sps_video_parameter_set_id */
    unsigned max_sub_layers_minus1 = bits_u(&b, 3);
    if (max_sub_layers_minus1 > 6)
        return -EBADMSG;
    bits_flag(&b); /* sps_temporal_id_nesting_flag */
    struct hevc_ptl ptl;
    hevc_read_ptl(&b, max_sub_layers_minus1, &ptl);
    if (bits_ue(&b) > 15) /* sps_seq_parameter_set_id */
        return -EBADMSG;
    uint32_t chroma = bits_ue(&b);
    if (chroma > 3)
        return -EBADMSG;
    bool separate_planes = chroma == 3 && bits_flag(&b);
    uint64_t width = bits_ue(&b), height = bits_ue(&b);
    if (width == 0 || height == 0 || width > CODEC_MAX_DIMENSION || height > CODEC_MAX_DIMENSION)
        return -EBADMSG;
    uint64_t win[4] = {0, 0, 0, 0};
    if (bits_flag(&b)) /* conformance_window_flag */
        for (int i = 0; i < 4; i++)
            win[i] = bits_ue(&b);
    uint32_t bd_luma = bits_ue(&b) + 8, bd_chroma = bits_ue(&b) + 8;
    if (bd_luma > 16 || bd_chroma > 16)
        return -EBADMSG;
    uint32_t log2_max_poc_lsb = bits_ue(&b) + 4;
    if (log2_max_poc_lsb > 16)
        return -EBADMSG;
    bool ordering_all = bits_flag(&b);
    for (unsigned i = ordering_all ? 0 : max_sub_layers_minus1; i <= max_sub_layers_minus1; i++) {
        bits_ue(&b); /* sps_max_dec_pic_buffering_minus1 */
        bits_ue(&b); /* sps_max_num_reorder_pics */
        bits_ue(&b); /* sps_max_latency_increase_plus1 */
    }
    for (int i = 0; i < 6; i++)
        bits_ue(&b); /* coding/transform block sizes, hierarchy depths */
    if (bits_flag(&b) && bits_flag(&b)) /* scaling_list_enabled, sps_scaling_list_data_present */
        hevc_skip_scaling_list_data(&b);
    bits_flag(&b); /* amp_enabled_flag */
    bits_flag(&b); /* sample_adaptive_offset_enabled_flag */
    if (bits_flag(&b)) { /* pcm_enabled_flag */
        bits_u(&b, 8);   /* pcm sample bit depths */
        bits_ue(&b);
        bits_ue(&b);
        bits_flag(&b);
    }
    uint32_t num_rps = bits_ue(&b);
    if (num_rps > 64 || b.error)
        return -EBADMSG;
    if (hevc_skip_st_rps(&b, num_rps))
        return -EBADMSG;
    if (bits_flag(&b)) { /* long_term_ref_pics_present_flag */
        uint32_t n = bits_ue(&b);
        if (n > 32)
            return -EBADMSG;
        for (uint32_t i = 0; i < n; i++)
            bits_u(&b, (int)log2_max_poc_lsb + 1); /* lt_ref_pic_poc_lsb_sps, used flag */
    }
    bits_flag(&b); /* sps_temporal_mvp_enabled_flag */
    bits_flag(&b); /* strong_intra_smoothing_enabled_flag */
    if (b.error)
        return -EBADMSG;

    unsigned sub_w = 1, sub_h = 1;
    if (!separate_planes && (chroma == 1 || chroma == 2))
        sub_w = 2;
    if (!separate_planes && chroma == 1)
        sub_h = 2;
    if ((win[0] + win[1]) * sub_w >= width || (win[2] + win[3]) * sub_h >= height)
        return -EBADMSG;
    width -= (win[0] + win[1]) * sub_w;
    height -= (win[2] + win[3]) * sub_h;

    uint32_t sar_num = 0, sar_den = 0, nuit = 0, time_scale = 0;
    if (bits_flag(&b)) { /* vui_parameters_present_flag */
        struct bits v = b;
        if (bits_flag(&v))
            read_sar(&v, &sar_num, &sar_den);
        if (bits_flag(&v)) /* overscan_info_present_flag */
            bits_flag(&v);
        if (bits_flag(&v)) { /* video_signal_type_present_flag */
            bits_u(&v, 4);
            if (bits_flag(&v))
                bits_u(&v, 24);
        }
        if (bits_flag(&v)) { /* chroma_loc_info_present_flag */
            bits_ue(&v);
            bits_ue(&v);
        }
        bits_u(&v, 3); /* neutral_chroma, field_seq, frame_field_info_present */
        if (bits_flag(&v)) /* default_display_window_flag */
            for (int i = 0; i < 4; i++)
                bits_ue(&v);
        uint32_t t_nuit = 0, t_scale = 0;
        if (bits_flag(&v)) { /* vui_timing_info_present_flag */
            t_nuit = bits_u(&v, 32);
            t_scale = bits_u(&v, 32);
        }
        if (!v.error) {
            nuit = t_nuit;
            time_scale = t_scale;
        } else {
            sar_num = sar_den = 0;
        }
    }

    out->codec = MEDIA_CODEC_HEVC;
    out->width = (uint32_t)width;
    out->height = (uint32_t)height;
    out->profile = (uint8_t)ptl.profile_idc;
    out->level = (uint8_t)ptl.level;
    out->tier = (uint8_t)ptl.tier;
    out->constraints = 0;
    out->chroma_format = (uint8_t)chroma;
    out->bit_depth = (uint8_t)bd_luma;
    out->bit_depth_chroma = (uint8_t)bd_chroma;
    default_sar(out, sar_num, sar_den);
    set_rate(&out->fps_num, &out->fps_den, time_scale, nuit);
    hevc_write_codecs(out, &ptl);
    return 0;
}

/* VPS timing (H.265 7.3.2.1), used when the SPS VUI has none. */
static void hevc_vps_timing(const uint8_t *nal, size_t len, uint64_t *nuit, uint64_t *time_scale)
{
    *nuit = *time_scale = 0;
    if (len < 3)
        return;
    struct bits b;
    bits_init(&b, nal + 2, len - 2, true);
    bits_u(&b, 12); /* id, base layer flags, max_layers_minus1 */
    unsigned max_sub_layers_minus1 = bits_u(&b, 3);
    if (max_sub_layers_minus1 > 6)
        return;
    bits_u(&b, 17); /* temporal_id_nesting, reserved 0xffff */
    struct hevc_ptl ptl;
    hevc_read_ptl(&b, max_sub_layers_minus1, &ptl);
    bool ordering_all = bits_flag(&b);
    for (unsigned i = ordering_all ? 0 : max_sub_layers_minus1; i <= max_sub_layers_minus1; i++) {
        bits_ue(&b);
        bits_ue(&b);
        bits_ue(&b);
    }
    unsigned max_layer_id = bits_u(&b, 6);
    uint32_t num_layer_sets_minus1 = bits_ue(&b);
    if (num_layer_sets_minus1 > 1023 || b.error)
        return;
    bits_skip(&b, num_layer_sets_minus1 * (max_layer_id + 1));
    if (bits_flag(&b)) {
        uint32_t n = bits_u(&b, 32);
        uint32_t t = bits_u(&b, 32);
        if (!b.error) {
            *nuit = n;
            *time_scale = t;
        }
    }
}

static int hevc_parse_hvcc(struct codec_config *out, const uint8_t *p, size_t len)
{
    if (len < 23)
        return -EBADMSG;
    if (p[0] != 1)
        return -ENOTSUP;
    unsigned length_size = (p[21] & 3) + 1u;
    if (length_size == 3)
        return -EBADMSG;
    unsigned narrays = p[22];
    size_t pos = 23;
    const uint8_t *sps = NULL, *vps = NULL;
    size_t sps_len = 0, vps_len = 0;
    for (unsigned a = 0; a < narrays; a++) {
        if (len - pos < 3)
            return -EBADMSG;
        unsigned type = p[pos] & 0x3f;
        unsigned nnal = rd16(p + pos + 1);
        pos += 3;
        for (unsigned i = 0; i < nnal; i++) {
            if (len - pos < 2)
                return -EBADMSG;
            size_t n = rd16(p + pos);
            pos += 2;
            if (len - pos < n)
                return -EBADMSG;
            if (type == 33 && !sps && n) {
                sps = p + pos;
                sps_len = n;
            } else if (type == 32 && !vps && n) {
                vps = p + pos;
                vps_len = n;
            }
            pos += n;
        }
    }
    if (!sps)
        return -EBADMSG;
    int rc = codec_hevc_parse_sps(out, sps, sps_len);
    if (rc)
        return rc;
    if (!out->fps_num && vps) {
        uint64_t nuit, time_scale;
        hevc_vps_timing(vps, vps_len, &nuit, &time_scale);
        set_rate(&out->fps_num, &out->fps_den, time_scale, nuit);
    }
    out->nal_length_size = (uint8_t)length_size;
    return 0;
}

/* ---- AV1 --------------------------------------------------------------- */

#define AV1_OBU_SEQUENCE_HEADER 1

static void av1_write_codecs(struct codec_config *out)
{
    snprintf(out->codecs, sizeof out->codecs, "av01.%u.%02u%c.%02u", (unsigned)out->profile,
             (unsigned)out->level, out->tier ? 'H' : 'M', (unsigned)out->bit_depth);
}

/* sequence_header_obu() payload (AV1 5.5). */
static int av1_parse_sequence_header_payload(struct codec_config *out, const uint8_t *p, size_t len)
{
    struct bits b;
    bits_init(&b, p, len, false);
    uint32_t profile = bits_u(&b, 3);
    if (profile > 2)
        return -EBADMSG;
    bits_flag(&b); /* still_picture */
    bool reduced = bits_flag(&b);
    uint32_t level = 0, tier = 0;
    uint64_t tick = 0, time_scale = 0, ticks_per_picture = 0;
    if (reduced) {
        level = bits_u(&b, 5);
    } else {
        bool decoder_model_info = false;
        uint32_t buffer_delay_length = 0;
        if (bits_flag(&b)) { /* timing_info_present_flag */
            tick = bits_u(&b, 32);
            time_scale = bits_u(&b, 32);
            if (bits_flag(&b)) { /* equal_picture_interval */
                uint32_t v = bits_uvlc(&b);
                if (v == UINT32_MAX)
                    return -EBADMSG;
                ticks_per_picture = (uint64_t)v + 1;
            }
            decoder_model_info = bits_flag(&b);
            if (decoder_model_info) {
                buffer_delay_length = bits_u(&b, 5) + 1;
                bits_u(&b, 32); /* num_units_in_decoding_tick */
                bits_u(&b, 10); /* buffer_removal_time_length, frame_presentation_time_length */
            }
        }
        bool initial_display_delay = bits_flag(&b);
        uint32_t ops = bits_u(&b, 5) + 1;
        for (uint32_t i = 0; i < ops; i++) {
            bits_u(&b, 12); /* operating_point_idc */
            uint32_t op_level = bits_u(&b, 5);
            uint32_t op_tier = op_level > 7 ? bits_u(&b, 1) : 0;
            if (i == 0) {
                level = op_level;
                tier = op_tier;
            }
            if (decoder_model_info && bits_flag(&b)) /* decoder_model_present_for_this_op */
                bits_skip(&b, 2 * buffer_delay_length + 1);
            if (initial_display_delay && bits_flag(&b))
                bits_u(&b, 4);
        }
    }
    uint32_t wbits = bits_u(&b, 4) + 1, hbits = bits_u(&b, 4) + 1;
    uint64_t width = (uint64_t)bits_u(&b, (int)wbits) + 1;
    uint64_t height = (uint64_t)bits_u(&b, (int)hbits) + 1;
    if (!reduced && bits_flag(&b)) /* frame_id_numbers_present_flag */
        bits_u(&b, 7);
    bits_u(&b, 3); /* use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter */
    if (!reduced) {
        bits_u(&b, 4); /* interintra, masked compound, warped motion, dual filter */
        bool order_hint = bits_flag(&b);
        if (order_hint)
            bits_u(&b, 2); /* jnt_comp, ref_frame_mvs */
        uint32_t force_sct = 2;
        if (!bits_flag(&b)) /* seq_choose_screen_content_tools */
            force_sct = bits_u(&b, 1);
        if (force_sct > 0 && !bits_flag(&b)) /* seq_choose_integer_mv */
            bits_u(&b, 1);
        if (order_hint)
            bits_u(&b, 3); /* order_hint_bits_minus_1 */
    }
    bits_u(&b, 3); /* enable_superres, enable_cdef, enable_restoration */
    /* color_config() */
    uint32_t bit_depth = 8;
    bool high_bitdepth = bits_flag(&b);
    if (profile == 2 && high_bitdepth)
        bit_depth = bits_flag(&b) ? 12 : 10;
    else
        bit_depth = high_bitdepth ? 10 : 8;
    bool mono = profile != 1 && bits_flag(&b);
    uint32_t cp = 2, tc = 2, mc = 2;
    if (bits_flag(&b)) { /* color_description_present_flag */
        cp = bits_u(&b, 8);
        tc = bits_u(&b, 8);
        mc = bits_u(&b, 8);
    }
    uint32_t sub_x = 1, sub_y = 1;
    if (!mono) {
        if (cp == 1 && tc == 13 && mc == 0) {
            sub_x = sub_y = 0;
        } else {
            bits_flag(&b); /* color_range */
            if (profile == 0) {
                sub_x = sub_y = 1;
            } else if (profile == 1) {
                sub_x = sub_y = 0;
            } else if (bit_depth == 12) {
                sub_x = bits_u(&b, 1);
                sub_y = sub_x ? bits_u(&b, 1) : 0;
            } else {
                sub_x = 1;
                sub_y = 0;
            }
        }
    }
    if (b.error)
        return -EBADMSG;
    if (width > CODEC_MAX_DIMENSION || height > CODEC_MAX_DIMENSION)
        return -EBADMSG;

    out->codec = MEDIA_CODEC_AV1;
    out->width = (uint32_t)width;
    out->height = (uint32_t)height;
    out->profile = (uint8_t)profile;
    out->level = (uint8_t)level;
    out->tier = (uint8_t)tier;
    out->constraints = 0;
    out->bit_depth = out->bit_depth_chroma = (uint8_t)bit_depth;
    out->chroma_format = mono ? 0 : (sub_x && sub_y) ? 1 : sub_x ? 2 : 3;
    out->sar_num = out->sar_den = 1;
    if (ticks_per_picture)
        set_rate(&out->fps_num, &out->fps_den, time_scale, tick * ticks_per_picture);
    else
        out->fps_num = out->fps_den = 0;
    av1_write_codecs(out);
    return 0;
}

/* One OBU's header: its type and where its payload lies in p[0..len). */
static int av1_obu_header(const uint8_t *p, size_t len, unsigned *type, size_t *payload_off,
                          size_t *payload_len)
{
    if (len < 1 || (p[0] & 0x80))
        return -EBADMSG;
    *type = (p[0] >> 3) & 0x0f;
    size_t hdr = (p[0] & 0x04) ? 2 : 1;
    if (len < hdr)
        return -EBADMSG;
    if (p[0] & 0x02) { /* obu_has_size_field */
        uint64_t size;
        size_t used;
        if (leb128(p + hdr, len - hdr, &size, &used))
            return -EBADMSG;
        hdr += used;
        if (size > len - hdr)
            return -EBADMSG;
        *payload_len = (size_t)size;
    } else {
        *payload_len = len - hdr;
    }
    *payload_off = hdr;
    return 0;
}

int codec_av1_parse_sequence_header(struct codec_config *out, const uint8_t *obu, size_t len)
{
    if (!obu)
        return -EBADMSG;
    unsigned type;
    size_t off, n;
    if (av1_obu_header(obu, len, &type, &off, &n) || type != AV1_OBU_SEQUENCE_HEADER)
        return -EBADMSG;
    return av1_parse_sequence_header_payload(out, obu + off, n);
}

static int av1_parse_av1c(struct codec_config *out, const uint8_t *p, size_t len)
{
    if (len < 4 || !(p[0] & 0x80))
        return -EBADMSG;
    if ((p[0] & 0x7f) != 1)
        return -ENOTSUP;
    out->codec = MEDIA_CODEC_AV1;
    out->profile = p[1] >> 5;
    out->level = p[1] & 0x1f;
    out->tier = p[2] >> 7;
    bool high_bitdepth = p[2] & 0x40, twelve_bit = p[2] & 0x20, mono = p[2] & 0x10;
    bool sub_x = p[2] & 0x08, sub_y = p[2] & 0x04;
    out->bit_depth = out->bit_depth_chroma = high_bitdepth ? (twelve_bit ? 12 : 10) : 8;
    out->chroma_format = mono ? 0 : (sub_x && sub_y) ? 1 : sub_x ? 2 : 3;
    out->sar_num = out->sar_den = 1;
    av1_write_codecs(out);

    /* configOBUs: the sequence header, if the muxer put one there (OBS and
     * ffmpeg do), gives the size. Without it the size comes later, from the
     * sequence header in the first keyframe. */
    size_t pos = 4;
    while (pos < len) {
        unsigned type;
        size_t off, n;
        if (av1_obu_header(p + pos, len - pos, &type, &off, &n))
            return -EBADMSG;
        if (type == AV1_OBU_SEQUENCE_HEADER)
            return av1_parse_sequence_header_payload(out, p + pos + off, n);
        pos += off + n;
    }
    return 0;
}

/* ---- AAC --------------------------------------------------------------- */

static const uint32_t aac_rates[13] = {
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
};

/* channelConfiguration -> channel count (14496-3 Table 1.19, 23003-3 for 11-14). */
static const uint8_t aac_channels[16] = {0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 7, 8, 24, 8, 0};

static uint32_t aac_object_type(struct bits *b)
{
    uint32_t aot = bits_u(b, 5);
    return aot == 31 ? 32 + bits_u(b, 6) : aot;
}

static uint32_t aac_rate(struct bits *b)
{
    uint32_t idx = bits_u(b, 4);
    if (idx == 15)
        return bits_u(b, 24);
    return idx < 13 ? aac_rates[idx] : 0;
}

/* program_config_element() (14496-3 4.4.1.1): the channel count it describes. */
static unsigned aac_pce_channels(struct bits *b)
{
    bits_u(b, 10); /* element_instance_tag, object_type, sampling_frequency_index */
    unsigned front = bits_u(b, 4), side = bits_u(b, 4), back = bits_u(b, 4);
    unsigned lfe = bits_u(b, 2);
    bits_u(b, 3); /* num_assoc_data_elements */
    bits_u(b, 4); /* num_valid_cc_elements */
    if (bits_flag(b))
        bits_u(b, 4); /* mono_mixdown_element_number */
    if (bits_flag(b))
        bits_u(b, 4); /* stereo_mixdown_element_number */
    if (bits_flag(b))
        bits_u(b, 3); /* matrix_mixdown_idx, pseudo_surround_enable */
    unsigned channels = 0;
    for (unsigned i = 0; i < front + side + back; i++) {
        channels += bits_flag(b) ? 2 : 1; /* *_element_is_cpe */
        bits_u(b, 4);
    }
    for (unsigned i = 0; i < lfe; i++) {
        channels++;
        bits_u(b, 4);
    }
    return channels;
}

static bool aac_is_ga(uint32_t aot)
{
    switch (aot) {
    case 1: case 2: case 3: case 4: case 6: case 7:
    case 17: case 19: case 20: case 21: case 22: case 23:
        return true;
    }
    return false;
}

int codec_aac_parse_asc(struct codec_config *out, const uint8_t *asc, size_t len)
{
    if (!asc || len < 2)
        return -EBADMSG;
    struct bits b;
    bits_init(&b, asc, len, false);
    uint32_t aot = aac_object_type(&b);
    uint32_t rate = aac_rate(&b);
    uint32_t chan_config = bits_u(&b, 4);
    uint32_t out_rate = rate;
    uint32_t core_aot = aot;
    if (aot == 5 || aot == 29) { /* explicit SBR (HE-AAC) / PS (HE-AACv2) */
        out_rate = aac_rate(&b);
        core_aot = aac_object_type(&b);
        if (core_aot == 22)
            bits_u(&b, 4); /* extensionChannelConfiguration */
    }
    if (b.error || aot == 0 || core_aot == 0 || rate == 0 || out_rate == 0)
        return -EBADMSG;
    unsigned channels = aac_channels[chan_config];
    if (chan_config != 0 && channels == 0)
        return -EBADMSG;
    unsigned frame = 1024;
    if (aac_is_ga(core_aot)) { /* GASpecificConfig */
        if (bits_flag(&b))     /* frameLengthFlag */
            frame = 960;
        if (bits_flag(&b)) /* dependsOnCoreCoder */
            bits_u(&b, 14);
        bits_flag(&b); /* extensionFlag */
        if (chan_config == 0)
            channels = aac_pce_channels(&b);
        if (b.error)
            return -EBADMSG;
    } else {
        return -ENOTSUP;
    }
    if (channels == 0 || channels > 255)
        return -EBADMSG;
    /* Parametric stereo turns the mono core into two output channels. */
    if (aot == 29 && channels == 1)
        channels = 2;
    /* An SBR access unit is 2048 output samples at twice the core rate. */
    uint64_t samples = (uint64_t)frame * out_rate / rate;
    if ((uint64_t)frame * out_rate % rate || samples == 0 || samples > 4096)
        return -EBADMSG;

    out->codec = MEDIA_CODEC_AAC;
    out->profile = (uint8_t)aot;
    out->sample_rate = out_rate;
    out->core_sample_rate = rate;
    out->channels = (uint8_t)channels;
    out->frame_samples = (uint16_t)samples;
    snprintf(out->codecs, sizeof out->codecs, "mp4a.40.%u", (unsigned)aot);
    return 0;
}

/* ---- records ----------------------------------------------------------- */

int codec_config_parse(struct codec_config *out, enum media_codec codec, const uint8_t *record,
                       size_t len)
{
    memset(out, 0, sizeof *out);
    if (!record || len == 0 || len > CODEC_RECORD_MAX)
        return -EBADMSG;
    int rc;
    switch (codec) {
    case MEDIA_CODEC_H264: rc = h264_parse_avcc(out, record, len); break;
    case MEDIA_CODEC_HEVC: rc = hevc_parse_hvcc(out, record, len); break;
    case MEDIA_CODEC_AV1: rc = av1_parse_av1c(out, record, len); break;
    case MEDIA_CODEC_AAC: rc = codec_aac_parse_asc(out, record, len); break;
    default: rc = -ENOTSUP; break;
    }
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->codec = codec;
    out->record = malloc(len);
    if (!out->record) {
        memset(out, 0, sizeof *out);
        return -ENOMEM;
    }
    memcpy(out->record, record, len);
    out->record_len = len;
    /* Frames carry 4-byte NAL lengths whatever the publisher used; the
     * record in the init segment must say so. */
    if (codec == MEDIA_CODEC_H264)
        out->record[4] |= 0x03;
    else if (codec == MEDIA_CODEC_HEVC)
        out->record[21] |= 0x03;
    return 0;
}

void codec_config_free(struct codec_config *c)
{
    if (!c)
        return;
    free(c->record);
    c->record = NULL;
    c->record_len = 0;
}

int codec_config_copy(struct codec_config *dst, const struct codec_config *src)
{
    *dst = *src;
    dst->record = NULL;
    dst->record_len = 0;
    if (src->record_len) {
        dst->record = malloc(src->record_len);
        if (!dst->record)
            return -ENOMEM;
        memcpy(dst->record, src->record, src->record_len);
        dst->record_len = src->record_len;
    }
    return 0;
}

bool codec_config_equal(const struct codec_config *a, const struct codec_config *b)
{
    return a->codec == b->codec && a->record_len == b->record_len &&
           (a->record_len == 0 || memcmp(a->record, b->record, a->record_len) == 0);
}

/* ---- Annex B -> avcC --------------------------------------------------- */

/* Next NAL unit after *pos in Annex B data; trailing zero bytes trimmed. */
static bool annexb_next(const uint8_t *p, size_t len, size_t *pos, const uint8_t **nal, size_t *nal_len)
{
    size_t i = *pos;
    /* Find a start code 00 00 01. */
    while (i + 3 <= len && !(p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1))
        i++;
    if (i + 3 > len)
        return false;
    size_t start = i + 3, end = start;
    while (end + 3 <= len && !(p[end] == 0 && p[end + 1] == 0 && p[end + 2] <= 1))
        end++;
    if (end + 3 > len)
        end = len;
    size_t next = end;
    while (end > start && p[end - 1] == 0)
        end--;
    *nal = p + start;
    *nal_len = end - start;
    *pos = next;
    return true;
}

int codec_avcc_from_annexb(struct buf *out, const uint8_t *data, size_t len)
{
    enum { MAX_SPS = 31, MAX_PPS = 255, MAX_EXT = 255 };
    const uint8_t *sps[MAX_SPS], *pps[MAX_PPS], *ext[MAX_EXT];
    size_t sps_len[MAX_SPS], pps_len[MAX_PPS], ext_len[MAX_EXT];
    unsigned nsps = 0, npps = 0, next = 0;
    size_t pos = 0;
    const uint8_t *nal;
    size_t nal_len;
    if (!data)
        return -EBADMSG;
    while (annexb_next(data, len, &pos, &nal, &nal_len)) {
        if (nal_len == 0 || nal_len > 0xffff)
            continue;
        switch (nal[0] & 0x1f) {
        case 7:
            if (nsps < MAX_SPS) {
                sps[nsps] = nal;
                sps_len[nsps++] = nal_len;
            }
            break;
        case 8:
            if (npps < MAX_PPS) {
                pps[npps] = nal;
                pps_len[npps++] = nal_len;
            }
            break;
        case 13:
            if (next < MAX_EXT) {
                ext[next] = nal;
                ext_len[next++] = nal_len;
            }
            break;
        }
    }
    if (nsps == 0 || npps == 0)
        return -EBADMSG;
    struct codec_config c;
    memset(&c, 0, sizeof c);
    int rc = codec_h264_parse_sps(&c, sps[0], sps_len[0]);
    if (rc)
        return rc;

    size_t start = out->len;
    uint8_t head[6] = {1, sps[0][1], sps[0][2], sps[0][3], 0xff, (uint8_t)(0xe0 | nsps)};
    rc = buf_append(out, head, sizeof head);
    for (unsigned i = 0; i < nsps && !rc; i++) {
        uint8_t l[2] = {(uint8_t)(sps_len[i] >> 8), (uint8_t)sps_len[i]};
        rc = buf_append(out, l, 2);
        if (!rc)
            rc = buf_append(out, sps[i], sps_len[i]);
    }
    if (!rc)
        rc = buf_append_char(out, (char)npps);
    for (unsigned i = 0; i < npps && !rc; i++) {
        uint8_t l[2] = {(uint8_t)(pps_len[i] >> 8), (uint8_t)pps_len[i]};
        rc = buf_append(out, l, 2);
        if (!rc)
            rc = buf_append(out, pps[i], pps_len[i]);
    }
    /* 14496-15 5.3.3.1.2: the extension only for the profiles that carry
     * chroma_format_idc; players that meet it elsewhere may choke. */
    if (!rc && (c.profile == 100 || c.profile == 110 || c.profile == 122 || c.profile == 144)) {
        uint8_t tail[4] = {(uint8_t)(0xfc | c.chroma_format), (uint8_t)(0xf8 | (c.bit_depth - 8)),
                           (uint8_t)(0xf8 | (c.bit_depth_chroma - 8)), (uint8_t)next};
        rc = buf_append(out, tail, sizeof tail);
        for (unsigned i = 0; i < next && !rc; i++) {
            uint8_t l[2] = {(uint8_t)(ext_len[i] >> 8), (uint8_t)ext_len[i]};
            rc = buf_append(out, l, 2);
            if (!rc)
                rc = buf_append(out, ext[i], ext_len[i]);
        }
    }
    if (rc)
        out->len = start;
    return rc;
}
