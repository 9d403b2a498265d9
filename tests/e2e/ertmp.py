"""
Enhanced RTMP for the tests: what Debian's ffmpeg 5.1 cannot send (its FLV
muxer only knows the legacy codec ids), built by hand from an MP4 that ffmpeg
can write.

    clip = make_clip(path, "hevc")     # or "av1": an MP4, video + AAC
    mp4 = read_clip(path)              # config records and samples, in ms
    tags, counts = publish_tags(mp4, b"hvc1")  # rtmpclient.Tags, interleaved by time
    send_tags(client, tags, rate=4)    # at 4x real time

The layouts follow veovera's Enhanced RTMP v1 (and v2, which keeps them):

    ExVideoTagHeader  [IsExHeader=1 : 1 | FrameType : 3 | PacketType : 4] [FourCC : UI32]
    PacketType        0 SequenceStart (the body is hvcC / av1C)
                      1 CodedFrames   (hvc1/avc1: SI24 composition time, then the
                                       frame; av01: the OBUs, no composition time)
                      2 SequenceEnd   (no body)
                      3 CodedFramesX  (the frame; composition time implied 0)

Audio goes as legacy FLV AAC: 0xAF, AACPacketType (0 AudioSpecificConfig,
1 raw frame), data.

Also the RFC 6381 CODECS strings a playlist should carry for an hvcC
(ISO/IEC 14496-15 annex E) and an av1C (AV1-ISOBMFF "Codecs Parameter
String"), computed here independently of the server.
"""
import pathlib
import struct
import subprocess
import time

import mp4info
from rtmpclient import Tag

FFMPEG = "/usr/bin/ffmpeg"

SEQUENCE_START, CODED_FRAMES, SEQUENCE_END, CODED_FRAMES_X = 0, 1, 2, 3
KEY_FRAME, INTER_FRAME = 1, 2

ENCODERS = {
    # name -> (ffmpeg encoder, its options); keyframes exactly every `gop` frames, closed GOPs
    "hevc": ("libx265", lambda gop: [
        "-preset", "ultrafast", "-tag:v", "hvc1",
        "-x265-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:log-level=error"]),
    "av1": ("libaom-av1", lambda gop: [
        "-usage", "realtime", "-cpu-used", "8", "-row-mt", "1", "-b:v", "600k",
        "-g", str(gop), "-keyint_min", str(gop)]),
}


def encoder_available(codec):
    """Whether Debian's ffmpeg has the encoder this codec is made with."""
    enc = ENCODERS[codec][0]
    res = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True,
                         timeout=30)
    return any(line.split()[1:2] == [enc] for line in res.stdout.splitlines())


def make_clip(path, codec, seconds=4, size=(640, 360), fps=30, gop=30, timeout=120):
    """testsrc2 + a sine: `codec` video with a keyframe every `gop` frames, AAC-LC 48 kHz
    stereo, in a plain MP4 (a fragmented one written by ffmpeg 5.1 has an empty av1C and
    a stretched first sample)."""
    enc, opts = ENCODERS[codec]
    w, h = size
    cmd = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", enc, *opts(gop), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "96k",
        "-f", "mp4", str(path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"ffmpeg could not make the {codec} clip: {res.stderr[-2000:]}")
    return pathlib.Path(path)


# --- reading the clip -------------------------------------------------------------------


class Frame:
    __slots__ = ("dts", "cts", "key", "data")

    def __init__(self, dts, cts, key, data):
        self.dts, self.cts, self.key, self.data = dts, cts, key, data

    def __repr__(self):
        return f"<Frame dts={self.dts} cts={self.cts}{' K' if self.key else ''} {len(self.data)}B>"


class Clip:
    def __init__(self):
        self.video_entry = None  # 'hvc1' / 'av01'
        self.video_config = None  # hvcC / av1C payload (the record, without the box header)
        self.video = []  # [Frame], ms
        self.asc = None  # AudioSpecificConfig
        self.audio = []  # [Frame], ms


def _stbl(data, tp, te):
    _, dp, de = mp4info.child(data, tp, te, "mdia")
    _, p, _ = mp4info.child(data, dp, de, "mdhd")
    ver = data[p]
    timescale = struct.unpack_from(">I", data, p + (20 if ver == 1 else 12))[0]
    _, p, e = mp4info.child(data, dp, de, "hdlr")
    handler = data[p + 8:p + 12].decode("latin-1")
    _, ip, ie = mp4info.child(data, dp, de, "minf")
    _, sp, se = mp4info.child(data, ip, ie, "stbl")
    return handler, timescale, sp, se


def _sample_entry_child(data, sp, se, header_len, want):
    """(entry type, payload of box `want` inside the stsd's first sample entry)."""
    _, sdp, sde = mp4info.child(data, sp, se, "stsd")
    typ, es, ep, ee = next(mp4info.boxes(data, sdp + 8, sde))
    got = mp4info.child(data, ep + header_len, ee, want)
    if not got:
        raise AssertionError(f"sample entry {typ} has no {want}")
    return typ, bytes(data[got[1]:got[2]])


def _table(data, sp, se, typ, fmt, skip=0):
    """The entries of a sample table box: [tuple] (after version/flags, `skip` bytes, count)."""
    got = mp4info.child(data, sp, se, typ)
    if not got:
        return None
    _, p, e = got
    p += 4 + skip
    n = struct.unpack_from(">I", data, p)[0]
    p += 4
    size = struct.calcsize(fmt)
    if p + n * size > e:
        raise AssertionError(f"{typ} has {n} entries, more than its size")
    return [struct.unpack_from(fmt, data, p + i * size) for i in range(n)]


def _samples(data, sp, se):
    """[(dts, cto, sync, offset, size)] of a track of a plain (not fragmented) MP4, in its
    timescale, from stts / ctts / stss / stsz / stsc / stco (or co64)."""
    got = mp4info.child(data, sp, se, "stsz")
    _, p, _ = got
    fixed, count = struct.unpack_from(">II", data, p + 4)
    sizes = [fixed] * count if fixed else \
        list(struct.unpack_from(f">{count}I", data, p + 12))
    durs = [d for n, d in _table(data, sp, se, "stts", ">II") for _ in range(n)]
    ctts = _table(data, sp, se, "ctts", ">Ii")
    ctos = [o for n, o in ctts for _ in range(n)] if ctts else [0] * count
    stss = _table(data, sp, se, "stss", ">I")
    sync = {n - 1 for (n,) in stss} if stss is not None else set(range(count))
    chunks = _table(data, sp, se, "stco", ">I") or _table(data, sp, se, "co64", ">Q")
    stsc = _table(data, sp, se, "stsc", ">III")
    assert len(durs) == count == len(ctos), (len(durs), count, len(ctos))
    out, k, dts = [], 0, 0
    for ci, (coff,) in enumerate(chunks, 1):
        per = [spc for first, spc, _ in stsc if first <= ci][-1]
        off = coff
        for _ in range(per):
            out.append((dts, ctos[k], k in sync, off, sizes[k]))
            off += sizes[k]
            dts += durs[k]
            k += 1
    assert k == count, f"the chunks hold {k} samples, stsz says {count}"
    return out


def _descriptor(data, off):
    """(tag, payload start, payload end) of an MPEG-4 descriptor (ISO/IEC 14496-1 8.3.3)."""
    tag = data[off]
    off += 1
    size = 0
    for _ in range(4):
        b = data[off]
        off += 1
        size = size << 7 | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, off, off + size


def asc_from_esds(esds):
    """The AudioSpecificConfig in an esds payload (ES_Descriptor > DecoderConfigDescriptor >
    DecoderSpecificInfo)."""
    tag, p, e = _descriptor(esds, 4)  # after the full box version/flags
    assert tag == 0x03, f"esds starts with descriptor {tag:#x}"
    flags = esds[p + 2]
    p += 3
    if flags & 0x80:
        p += 2
    if flags & 0x40:
        p += 1 + esds[p]
    if flags & 0x20:
        p += 2
    tag, p, e = _descriptor(esds, p)
    assert tag == 0x04, f"no DecoderConfigDescriptor ({tag:#x})"
    tag, p, e = _descriptor(esds, p + 13)
    assert tag == 0x05, f"no DecoderSpecificInfo ({tag:#x})"
    return bytes(esds[p:e])


def read_clip(path):
    """The video config record and frames, the AAC config and frames of a clip from
    make_clip(), with times in milliseconds from the first sample of each track (edit
    lists are not applied)."""
    data = open(path, "rb").read()
    clip = Clip()
    _, mp, me = mp4info.child(data, 0, len(data), "moov")

    def ms(t, ts):
        return (t * 1000 + ts // 2) // ts

    for _, tp, te in mp4info.children(data, mp, me, "trak"):
        handler, ts, sp, se = _stbl(data, tp, te)
        samples = _samples(data, sp, se)
        if handler == "vide":
            # VisualSampleEntry: 8 bytes of SampleEntry, then 70
            _, sdp, sde = mp4info.child(data, sp, se, "stsd")
            typ = next(mp4info.boxes(data, sdp + 8, sde))[0]
            cfg_box = {"hvc1": "hvcC", "hev1": "hvcC", "av01": "av1C"}[typ]
            clip.video_entry, clip.video_config = _sample_entry_child(data, sp, se, 78, cfg_box)
            if not clip.video_config:
                raise AssertionError(f"{path}: an empty {cfg_box}")
            for dts, cto, sync, off, size in samples:
                d, p = ms(dts, ts), ms(dts + cto, ts)
                clip.video.append(Frame(d, p - d, sync, data[off:off + size]))
        elif handler == "soun":
            # AudioSampleEntry: 8 bytes of SampleEntry, then 20
            _, esds = _sample_entry_child(data, sp, se, 28, "esds")
            clip.asc = asc_from_esds(esds)
            for dts, _, _, off, size in samples:
                clip.audio.append(Frame(ms(dts, ts), 0, True, data[off:off + size]))
    assert clip.video and clip.audio, f"{path}: video and audio expected"
    return clip


# --- FLV tag bodies -----------------------------------------------------------------------


def si24(v):
    assert -(1 << 23) <= v < (1 << 23)
    return (v & 0xFFFFFF).to_bytes(3, "big")


def ex_video(packet_type, fourcc, body=b"", frame_type=KEY_FRAME, cts=None):
    """An Enhanced RTMP video tag body. `cts` is written (SI24) only when given: pass it for
    CodedFrames of hvc1/avc1, leave it out for CodedFramesX and for av01."""
    assert len(fourcc) == 4
    out = bytes([0x80 | (frame_type & 7) << 4 | (packet_type & 0x0F)]) + fourcc
    if cts is not None:
        out += si24(cts)
    return out + body


def aac_audio(packet_type, body):
    """Legacy FLV AAC: SoundFormat 10, 44 kHz, 16 bit, stereo (as FLV says for AAC)."""
    return bytes([0xAF, packet_type]) + body


TEMPORAL_DELIMITER = b"\x12\x00"  # OBU type 2, has_size_field, size 0


def publish_tags(clip, fourcc, x_every=2, av1_temporal_delimiters=True):
    """
    The tags for a clip, in the order an encoder sends them: the two sequence
    headers at time 0, then video and audio frames interleaved by decode time.

    hvc1: frames whose composition time is not 0 go as CodedFrames (SI24); of
    those whose composition time is 0, every `x_every`-th goes as CodedFramesX
    and the others as CodedFrames with an explicit 0 (both forms are legal).
    av01: CodedFrames without a composition time (AV1 has no reordering on the
    wire), each frame led by a temporal delimiter OBU as AV1 bitstreams carry
    them (the server drops those: MP4 samples carry none).

    Returns ([Tag], {packet type: count of video tags}).
    """
    tags = [
        Tag(9, 0, ex_video(SEQUENCE_START, fourcc, clip.video_config)),
        Tag(8, 0, aac_audio(0, clip.asc)),
    ]
    counts = {SEQUENCE_START: 1}
    media = []
    zero = 0
    for f in clip.video:
        ft = KEY_FRAME if f.key else INTER_FRAME
        if fourcc == b"av01":
            assert f.cts == 0, f"an AV1 frame with a composition offset: {f}"
            body = (TEMPORAL_DELIMITER if av1_temporal_delimiters else b"") + f.data
            pt, tag = CODED_FRAMES, ex_video(CODED_FRAMES, fourcc, body, ft)
        elif f.cts == 0 and zero % x_every == 0:
            zero += 1
            pt, tag = CODED_FRAMES_X, ex_video(CODED_FRAMES_X, fourcc, f.data, ft)
        else:
            if f.cts == 0:
                zero += 1
            pt, tag = CODED_FRAMES, ex_video(CODED_FRAMES, fourcc, f.data, ft, cts=f.cts)
        counts[pt] = counts.get(pt, 0) + 1
        media.append((f.dts, 1, Tag(9, f.dts, tag)))
    for f in clip.audio:
        media.append((f.dts, 0, Tag(8, f.dts, aac_audio(1, f.data))))
    media.sort(key=lambda x: (x[0], x[1]))
    return tags + [t for _, _, t in media], counts


def send_tags(client, tags, rate=None):
    """Send the tags; with `rate`, paced at that multiple of real time."""
    t0 = time.monotonic()
    for tag in tags:
        if rate:
            due = t0 + tag.timestamp / 1000.0 / rate
            left = due - time.monotonic()
            if left > 0:
                time.sleep(left)
        client.send_tag(tag)


# --- CODECS strings ----------------------------------------------------------------------


def hevc_codecs(hvcc):
    """RFC 6381 / ISO/IEC 14496-15 E.3: hvc1.<space><profile>.<compat, bit-reversed hex>.
    <L|H><level>[.<constraint byte hex>...] with trailing zero constraint bytes left out."""
    b1 = hvcc[1]
    space, tier, profile = b1 >> 6, (b1 >> 5) & 1, b1 & 0x1F
    compat = struct.unpack_from(">I", hvcc, 2)[0]
    rev = int(f"{compat:032b}"[::-1], 2)
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    level = hvcc[12]
    s = "hvc1." + ("", "A", "B", "C")[space] + str(profile) + f".{rev:X}." + \
        ("H" if tier else "L") + str(level)
    return s + "".join(f".{c:X}" for c in constraints)


def av1_codecs(av1c):
    """AV1-ISOBMFF: av01.<profile>.<level, 2 digits><M|H>.<bit depth, 2 digits> (the
    mandatory fields; the optional ones may follow)."""
    b1, b2 = av1c[1], av1c[2]
    profile, level = b1 >> 5, b1 & 0x1F
    tier, high, twelve = b2 >> 7, (b2 >> 6) & 1, (b2 >> 5) & 1
    depth = 12 if (high and twelve) else 10 if high else 8
    return f"av01.{profile}.{level:02d}{'H' if tier else 'M'}.{depth:02d}"
