"""
Just enough ISO BMFF reading to check what the LL-HLS packager writes,
independently of ffprobe: the tracks of an init segment (moov), and the
samples of a part or segment (styp? (moof mdat)+) with their decode times
(tfdt + durations), sizes, composition offsets and sync flags (trun / tfhd /
trex defaults). Also checks the structure: every box fits its parent, every
trun's data lies inside the mdat that follows its moof.
"""
import struct


class Mp4Error(AssertionError):
    pass


def boxes(data, start=0, end=None):
    """Yield (type, box_start, payload_start, box_end) for the boxes in data[start:end]."""
    end = len(data) if end is None else end
    off = start
    while off < end:
        if end - off < 8:
            raise Mp4Error(f"{end - off} stray bytes at offset {off}")
        size, typ = struct.unpack_from(">I4s", data, off)
        hdr = 8
        if size == 1:
            if end - off < 16:
                raise Mp4Error(f"truncated largesize box at {off}")
            size = struct.unpack_from(">Q", data, off + 8)[0]
            hdr = 16
        elif size == 0:
            size = end - off
        if size < hdr or off + size > end:
            raise Mp4Error(f"box {typ!r} at {off} has size {size}, beyond its parent (ends {end})")
        yield typ.decode("latin-1"), off, off + hdr, off + size
        off += size


def child(data, payload_start, box_end, typ):
    for t, s, p, e in boxes(data, payload_start, box_end):
        if t == typ:
            return s, p, e
    return None


def children(data, payload_start, box_end, typ):
    return [(s, p, e) for t, s, p, e in boxes(data, payload_start, box_end) if t == typ]


def top_types(data):
    return [t for t, _, _, _ in boxes(data)]


class Track:
    def __init__(self):
        self.track_id = None
        self.handler = None  # 'vide' / 'soun'
        self.timescale = None
        self.sample_entry = None  # 'avc1', 'mp4a', ...
        self.default_duration = 0
        self.default_size = 0
        self.default_flags = 0

    @property
    def kind(self):
        return {"vide": "video", "soun": "audio"}.get(self.handler, self.handler)

    def __repr__(self):
        return f"<Track {self.track_id} {self.kind} {self.sample_entry} ts={self.timescale}>"


def parse_init(data):
    """The tracks of an init segment: {track_id: Track}. Checks ftyp + moov with mvex."""
    types = top_types(data)
    if not types or types[0] != "ftyp":
        raise Mp4Error(f"init segment starts with {types[:1]}, not ftyp")
    if "moov" not in types:
        raise Mp4Error(f"init segment has no moov: {types}")
    if "moof" in types or "mdat" in types:
        raise Mp4Error(f"init segment carries media: {types}")
    _, mp, me = child(data, 0, len(data), "moov")
    tracks = {}
    for _, tp, te in children(data, mp, me, "trak"):
        t = Track()
        _, hp, he = child(data, tp, te, "tkhd")
        ver = data[hp]
        t.track_id = struct.unpack_from(">I", data, hp + (20 if ver == 1 else 12))[0]
        _, dp, de = child(data, tp, te, "mdia")
        _, p, e = child(data, dp, de, "mdhd")
        ver = data[p]
        t.timescale = struct.unpack_from(">I", data, p + (20 if ver == 1 else 12))[0]
        _, p, e = child(data, dp, de, "hdlr")
        t.handler = data[p + 8:p + 12].decode("latin-1")
        _, ip, ie = child(data, dp, de, "minf")
        _, sp, se = child(data, ip, ie, "stbl")
        _, sdp, sde = child(data, sp, se, "stsd")
        entries = list(boxes(data, sdp + 8, sde))
        t.sample_entry = entries[0][0] if entries else None
        tracks[t.track_id] = t
    mvex = child(data, mp, me, "mvex")
    if not mvex:
        raise Mp4Error("moov has no mvex: not a fragmented MP4 init segment")
    for _, p, e in children(data, mvex[1], mvex[2], "trex"):
        tid, _, dur, size, flags = struct.unpack_from(">IIIII", data, p + 4)
        if tid in tracks:
            tracks[tid].default_duration = dur
            tracks[tid].default_size = size
            tracks[tid].default_flags = flags
    return tracks


class Sample:
    __slots__ = ("track_id", "dts", "duration", "size", "flags", "cto", "offset")

    @property
    def sync(self):
        # ISO/IEC 14496-12 8.8.3.1: sample_is_non_sync_sample is bit 16 of the flags
        return not (self.flags >> 16) & 1

    @property
    def pts(self):
        return self.dts + self.cto

    def __repr__(self):
        return f"<Sample t{self.track_id} dts={self.dts} dur={self.duration} sync={self.sync}>"


class Fragment:
    """One moof (+ its mdat)."""

    def __init__(self, sequence):
        self.sequence = sequence
        self.samples = {}  # track_id -> [Sample]
        self.base_dts = {}  # track_id -> tfdt


def parse_media(data, tracks):
    """
    The fragments of a part or segment: [Fragment]. `tracks` from parse_init.
    Checks that each moof is followed by an mdat holding every byte its truns
    name.
    """
    frags = []
    items = list(boxes(data))
    types = [t for t, _, _, _ in items]
    for t in types:
        if t not in ("styp", "moof", "mdat", "prft", "emsg", "sidx", "free"):
            raise Mp4Error(f"unexpected top-level box {t!r} in media: {types}")
    for i, (typ, ms, mp, me) in enumerate(items):
        if typ != "moof":
            continue
        if i + 1 >= len(items) or items[i + 1][0] != "mdat":
            raise Mp4Error(f"moof at {ms} is not followed by an mdat: {types}")
        _, _, dp, de = items[i + 1]
        _, p, _ = child(data, mp, me, "mfhd")
        frag = Fragment(struct.unpack_from(">I", data, p + 4)[0])
        for _, tp, te in children(data, mp, me, "traf"):
            _, hp, he = child(data, tp, te, "tfhd")
            flags = int.from_bytes(data[hp + 1:hp + 4], "big")
            tid = struct.unpack_from(">I", data, hp + 4)[0]
            if tid not in tracks:
                raise Mp4Error(f"traf for track {tid}, which the init segment does not have")
            tr = tracks[tid]
            q = hp + 8
            base = ms  # default-base-is-moof, or the moof when nothing says otherwise
            if flags & 0x1:
                base = struct.unpack_from(">Q", data, q)[0]
                q += 8
            if flags & 0x2:
                q += 4
            ddur, dsize, dflags = tr.default_duration, tr.default_size, tr.default_flags
            if flags & 0x8:
                ddur = struct.unpack_from(">I", data, q)[0]
                q += 4
            if flags & 0x10:
                dsize = struct.unpack_from(">I", data, q)[0]
                q += 4
            if flags & 0x20:
                dflags = struct.unpack_from(">I", data, q)[0]
                q += 4
            tfdt = child(data, tp, te, "tfdt")
            if not tfdt:
                raise Mp4Error(f"traf of track {tid} has no tfdt")
            _, p, _ = tfdt
            if data[p] == 1:
                dts = struct.unpack_from(">Q", data, p + 4)[0]
            else:
                dts = struct.unpack_from(">I", data, p + 4)[0]
            frag.base_dts[tid] = dts
            out = frag.samples.setdefault(tid, [])
            for _, rp, re_ in children(data, tp, te, "trun"):
                ver = data[rp]
                rflags = int.from_bytes(data[rp + 1:rp + 4], "big")
                count = struct.unpack_from(">I", data, rp + 4)[0]
                q = rp + 8
                data_off = 0
                if rflags & 0x1:
                    data_off = struct.unpack_from(">i", data, q)[0]
                    q += 4
                first_flags = None
                if rflags & 0x4:
                    first_flags = struct.unpack_from(">I", data, q)[0]
                    q += 4
                pos = base + data_off
                for k in range(count):
                    s = Sample()
                    s.track_id = tid
                    s.duration, s.size, s.flags, s.cto = ddur, dsize, dflags, 0
                    if rflags & 0x100:
                        s.duration = struct.unpack_from(">I", data, q)[0]
                        q += 4
                    if rflags & 0x200:
                        s.size = struct.unpack_from(">I", data, q)[0]
                        q += 4
                    if rflags & 0x400:
                        s.flags = struct.unpack_from(">I", data, q)[0]
                        q += 4
                    if rflags & 0x800:
                        s.cto = struct.unpack_from(">i" if ver == 1 else ">I", data, q)[0]
                        q += 4
                    if k == 0 and first_flags is not None:
                        s.flags = first_flags
                    if q > re_:
                        raise Mp4Error(f"trun of track {tid} is shorter than its {count} samples")
                    s.dts = dts
                    s.offset = pos
                    if not (dp <= pos and pos + s.size <= de):
                        raise Mp4Error(
                            f"sample {k} of track {tid} at {pos}+{s.size} is outside its mdat "
                            f"[{dp}, {de})")
                    pos += s.size
                    dts += s.duration
                    out.append(s)
        frags.append(frag)
    if not frags:
        raise Mp4Error(f"no moof in media: {types}")
    return frags


def samples_by_track(frags):
    out = {}
    for f in frags:
        for tid, ss in f.samples.items():
            out.setdefault(tid, []).extend(ss)
    return out


def track_of_kind(tracks, kind):
    for t in tracks.values():
        if t.kind == kind:
            return t
    return None
