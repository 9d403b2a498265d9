"""
A playlist checker for the LL-HLS tests: every tag and attribute of a Media
or Multivariant Playlist against HLS 2nd edition (draft-pantos-hls-rfc8216bis,
"RFC 8216bis"), plus the rules that tie successive reloads of one playlist,
and a Playlist Delta Update, to each other.

    check_media(text)            one Media Playlist
    check_reload(prev, cur)      a later reload of the same playlist
    check_delta(delta, full)     an _HLS_skip=YES answer against the full one
    check_master(text)           a Multivariant Playlist

Each returns a Report: `errors` (a MUST, or a SHOULD the Hearth issue makes a
requirement) and `warnings` (a SHOULD); report.assert_ok() fails a test with
all of them and the playlist. Section numbers below are those of the draft.

Also a command line tool:  python3 hlscheck.py URL [--reloads N]
"""
import datetime
import math
import re
import sys

# --- attribute lists (4.2) ---------------------------------------------------

NAME_RX = re.compile(r"[A-Z0-9-]+")
INT_RX = re.compile(r"^[0-9]{1,20}$")
FLOAT_RX = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
SFLOAT_RX = re.compile(r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
HEX_RX = re.compile(r"^0[xX][0-9A-Fa-f]+$")
ENUM_RX = re.compile(r'^[^\s",]+$')
RES_RX = re.compile(r"^[0-9]+x[0-9]+$")
PDT_RX = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")

Q = "quoted-string"
I = "decimal-integer"
F = "decimal-floating-point"
SF = "signed-decimal-floating-point"
E = "enumerated-string"
R = "decimal-resolution"
H = "hexadecimal-sequence"


class AttrError(ValueError):
    pass


def parse_attributes(s):
    """
    An attribute-list (4.2) -> {name: (value, quoted)}. Strict: names from
    [A-Z0-9-], '=' with no whitespace around it, quoted strings without CR,
    LF or '"', no empty unquoted values, no name twice.
    """
    out = {}
    i, n = 0, len(s)
    if n == 0:
        raise AttrError("empty attribute list")
    while True:
        m = NAME_RX.match(s, i)
        if not m:
            raise AttrError(f"bad attribute name at {s[i:i + 20]!r}")
        name = m.group(0)
        i = m.end()
        if i >= n or s[i] != "=":
            raise AttrError(f"attribute {name} has no '='")
        i += 1
        if i < n and s[i] == '"':
            j = s.find('"', i + 1)
            if j < 0:
                raise AttrError(f"attribute {name}: unterminated quoted-string")
            value, quoted = s[i + 1:j], True
            if "\r" in value or "\n" in value:
                raise AttrError(f"attribute {name}: CR or LF in a quoted-string")
            i = j + 1
        else:
            j = s.find(",", i)
            j = n if j < 0 else j
            value, quoted = s[i:j], False
            if not value:
                raise AttrError(f"attribute {name} has an empty value")
            if '"' in value or any(c.isspace() for c in value):
                raise AttrError(f"attribute {name}: bad unquoted value {value!r}")
            i = j
        if name in out:
            raise AttrError(f"attribute {name} appears twice")  # 4.2
        out[name] = (value, quoted)
        if i == n:
            return out
        if s[i] != ",":
            raise AttrError(f"expected ',' after {name}, found {s[i:i + 10]!r}")
        i += 1
        if i == n:
            raise AttrError("attribute list ends with ','")


def value_ok(kind, value, quoted):
    if kind == Q:
        return quoted
    if quoted:
        return False
    return {
        I: INT_RX, F: FLOAT_RX, SF: SFLOAT_RX, E: ENUM_RX, R: RES_RX, H: HEX_RX,
    }[kind].match(value) is not None


# tag -> {attribute: (type, required, allowed enumerated values or None)}
ATTRS = {
    "EXT-X-PART": {
        "URI": (Q, True, None), "DURATION": (F, True, None), "INDEPENDENT": (E, False, {"YES"}),
        "BYTERANGE": (Q, False, None), "GAP": (E, False, {"YES"})},
    "EXT-X-PART-INF": {"PART-TARGET": (F, True, None)},
    "EXT-X-SERVER-CONTROL": {
        "CAN-SKIP-UNTIL": (F, False, None), "CAN-SKIP-DATERANGES": (E, False, {"YES"}),
        "HOLD-BACK": (F, False, None), "PART-HOLD-BACK": (F, False, None),
        "CAN-BLOCK-RELOAD": (E, False, {"YES"})},
    "EXT-X-PRELOAD-HINT": {
        "TYPE": (E, True, {"PART", "MAP"}), "URI": (Q, True, None),
        "BYTERANGE-START": (I, False, None), "BYTERANGE-LENGTH": (I, False, None)},
    "EXT-X-SKIP": {"SKIPPED-SEGMENTS": (I, True, None), "RECENTLY-REMOVED-DATERANGES": (Q, False, None)},
    "EXT-X-MAP": {"URI": (Q, True, None), "BYTERANGE": (Q, False, None)},
    "EXT-X-START": {"TIME-OFFSET": (SF, True, None), "PRECISE": (E, False, {"YES", "NO"})},
    "EXT-X-RENDITION-REPORT": {"URI": (Q, True, None), "LAST-MSN": (I, True, None), "LAST-PART": (I, False, None)},
    "EXT-X-STREAM-INF": {
        "BANDWIDTH": (I, True, None), "AVERAGE-BANDWIDTH": (I, False, None), "SCORE": (F, False, None),
        "CODECS": (Q, False, None), "SUPPLEMENTAL-CODECS": (Q, False, None), "RESOLUTION": (R, False, None),
        "FRAME-RATE": (F, False, None), "HDCP-LEVEL": (E, False, {"TYPE-0", "TYPE-1", "NONE"}),
        "ALLOWED-CPC": (Q, False, None), "VIDEO-RANGE": (E, False, {"SDR", "HLG", "PQ"}),
        "REQ-VIDEO-LAYOUT": (Q, False, None), "STABLE-VARIANT-ID": (Q, False, None),
        "AUDIO": (Q, False, None), "VIDEO": (Q, False, None), "SUBTITLES": (Q, False, None),
        "CLOSED-CAPTIONS": (Q, False, None), "PATHWAY-ID": (Q, False, None), "PROGRAM-ID": (I, False, None)},
}

# 4.4.2 and 4.4.3: at most once per playlist
ONCE_ANY = {"EXT-X-VERSION", "EXT-X-INDEPENDENT-SEGMENTS", "EXT-X-START"}
MEDIA_PLAYLIST_TAGS = {
    "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE", "EXT-X-DISCONTINUITY-SEQUENCE", "EXT-X-ENDLIST",
    "EXT-X-PLAYLIST-TYPE", "EXT-X-I-FRAMES-ONLY", "EXT-X-PART-INF", "EXT-X-SERVER-CONTROL"}
MEDIA_SEGMENT_TAGS = {
    "EXTINF", "EXT-X-BYTERANGE", "EXT-X-DISCONTINUITY", "EXT-X-KEY", "EXT-X-MAP",
    "EXT-X-PROGRAM-DATE-TIME", "EXT-X-GAP", "EXT-X-BITRATE", "EXT-X-PART"}
MEDIA_METADATA_TAGS = {"EXT-X-DATERANGE", "EXT-X-SKIP", "EXT-X-PRELOAD-HINT", "EXT-X-RENDITION-REPORT"}
MULTIVARIANT_TAGS = {
    "EXT-X-MEDIA", "EXT-X-STREAM-INF", "EXT-X-I-FRAME-STREAM-INF", "EXT-X-SESSION-DATA",
    "EXT-X-SESSION-KEY", "EXT-X-CONTENT-STEERING"}
KNOWN_TAGS = (ONCE_ANY | {"EXTM3U", "EXT-X-DEFINE"} | MEDIA_PLAYLIST_TAGS | MEDIA_SEGMENT_TAGS
              | MEDIA_METADATA_TAGS | MULTIVARIANT_TAGS)
# Tags that apply to a Parent Segment and so come before its first EXT-X-PART (4.4.4.9).
BEFORE_FIRST_PART = {"EXT-X-DISCONTINUITY", "EXT-X-KEY", "EXT-X-MAP", "EXT-X-PROGRAM-DATE-TIME"}

EPS = 1e-6  # for comparing decimal numbers the server rounded


class Report:
    def __init__(self, what, text=""):
        self.what = what
        self.text = text
        self.errors = []
        self.warnings = []

    def error(self, msg):
        self.errors.append(msg)

    def warn(self, msg):
        self.warnings.append(msg)

    def extend(self, other):
        self.errors += other.errors
        self.warnings += other.warnings
        return self

    @property
    def ok(self):
        return not self.errors

    def __str__(self):
        out = [f"{self.what}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        out += [f"  ERROR {e}" for e in self.errors]
        out += [f"  warning {w}" for w in self.warnings]
        return "\n".join(out)

    __repr__ = __str__

    def assert_ok(self):
        if self.errors:
            raise AssertionError(f"{self}\n--- playlist ---\n{self.text}")
        return self


# --- parsing ------------------------------------------------------------------


class Part:
    def __init__(self, attrs, line):
        self.attrs = attrs
        self.line = line
        self.uri = attrs.get("URI", ("", True))[0]
        try:
            self.duration = float(attrs.get("DURATION", ("nan", False))[0])
        except ValueError:
            self.duration = float("nan")
        self.independent = attrs.get("INDEPENDENT", ("", False))[0] == "YES"
        self.gap = attrs.get("GAP", ("", False))[0] == "YES"

    def key(self):
        return (self.uri, round(self.duration, 5), self.independent, self.gap)

    def __repr__(self):
        return f"<Part {self.uri} {self.duration}{' I' if self.independent else ''}>"


class Segment:
    def __init__(self):
        self.msn = None
        self.duration = None  # EXTINF
        self.uri = None  # None: the open segment at the live edge (parts only)
        self.parts = []
        self.discontinuity = False
        self.disc_seq = None
        self.map_uri = None
        self.pdt = None
        self.pdt_raw = None
        self.gap = False
        self.line = None

    @property
    def complete(self):
        return self.uri is not None

    def key(self):
        return (self.uri, None if self.duration is None else round(self.duration, 5),
                self.map_uri, self.pdt_raw)

    def __repr__(self):
        return f"<Segment {self.msn} {self.uri} {self.duration} parts={len(self.parts)}>"


class MediaPlaylist:
    def __init__(self, text):
        self.text = text
        self.errors = []  # syntax, found while parsing
        self.tags = []  # (line number, name, value)
        self.version = None
        self.target_duration = None
        self.media_sequence = 0
        self.disc_sequence = 0
        self.endlist = False
        self.part_target = None
        self.server_control = {}
        self.skip = None
        self.skipped = 0
        self.preload_hints = []
        self.segments = []
        self.independent_segments = False

    # conveniences for tests
    def complete_segments(self):
        return [s for s in self.segments if s.complete]

    def open_segment(self):
        return self.segments[-1] if self.segments and not self.segments[-1].complete else None

    def parts(self):
        """[(msn, index, Part)] in playlist order."""
        return [(s.msn, i, p) for s in self.segments for i, p in enumerate(s.parts)
                if s.msn is not None]

    def parts_count(self):
        return sum(len(s.parts) for s in self.segments)

    def segment(self, msn):
        for s in self.segments:
            if s.msn == msn:
                return s
        return None

    def next_part(self):
        """(msn, index) of the part that comes next: where the preload hint points."""
        if not self.segments:
            return (self.media_sequence + self.skipped, 0)
        last = self.segments[-1]
        if last.complete:
            return (last.msn + 1, 0)
        return (last.msn, len(last.parts))

    def last_part(self):
        ps = self.parts()
        return ps[-1] if ps else None

    def hint(self, typ="PART"):
        for h in self.preload_hints:
            if h.get("TYPE", ("", False))[0] == typ:
                return h.get("URI", ("", True))[0]
        return None

    def duration(self):
        return sum(s.duration for s in self.complete_segments())


def _split_tag(line):
    body = line[1:]
    name, sep, value = body.partition(":")
    return name, (value if sep else None)


def parse_media(text):
    """Parse a Media Playlist (leniently: syntax errors go to pl.errors)."""
    pl = MediaPlaylist(text)
    if text.startswith("\ufeff"):
        pl.errors.append("the playlist starts with a byte order mark (4.1)")
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cur = Segment()
    pending_extinf = None
    map_uri = None
    seen_media = False
    disc_count = 0
    for no, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in line):
            pl.errors.append(f"line {no}: control character (4.1)")
        if not line.strip():
            continue
        if line != line.strip():
            pl.errors.append(f"line {no}: leading or trailing whitespace: {line!r}")
        if not line.startswith("#"):
            # a URI line: closes the segment
            if pending_extinf is None:
                pl.errors.append(f"line {no}: URI {line!r} without an EXTINF (4.4.4.1)")
                pending_extinf = 0.0
            cur.uri = line
            cur.duration = pending_extinf
            cur.map_uri = map_uri
            cur.line = no
            pl.segments.append(cur)
            cur = Segment()
            pending_extinf = None
            seen_media = True
            continue
        if not line.startswith("#EXT"):
            continue  # a comment
        name, value = _split_tag(line)
        pl.tags.append((no, name, value))
        attrs = None
        if name in ATTRS:
            try:
                attrs = parse_attributes(value or "")
            except AttrError as e:
                pl.errors.append(f"line {no}: {name}: {e}")
                attrs = {}
            spec = ATTRS[name]
            for an, (av, aq) in attrs.items():
                if an not in spec:
                    if not an.startswith("X-"):
                        pl.errors.append(f"line {no}: {name}: unknown attribute {an}")
                    continue
                kind, _, allowed = spec[an]
                if not value_ok(kind, av, aq):
                    shown = f'"{av}"' if aq else av
                    pl.errors.append(f"line {no}: {name}: {an}={shown} is not a {kind}")
                elif allowed is not None and av not in allowed:
                    pl.errors.append(f"line {no}: {name}: {an}={av} is not one of {sorted(allowed)}")
            for an, (kind, required, _) in spec.items():
                if required and an not in attrs:
                    pl.errors.append(f"line {no}: {name} lacks its required {an}")
        if name == "EXTM3U":
            if no != 1:
                pl.errors.append(f"line {no}: EXTM3U is not the first line (4.4.1.1)")
        elif name == "EXT-X-VERSION":
            if value is None or not INT_RX.match(value):
                pl.errors.append(f"line {no}: EXT-X-VERSION:{value}")
            else:
                pl.version = int(value)
        elif name == "EXT-X-TARGETDURATION":
            if value is None or not INT_RX.match(value):
                pl.errors.append(f"line {no}: TARGETDURATION {value!r} is not a decimal-integer (4.4.3.1)")
            else:
                pl.target_duration = int(value)
        elif name == "EXT-X-MEDIA-SEQUENCE":
            if value is None or not INT_RX.match(value):
                pl.errors.append(f"line {no}: MEDIA-SEQUENCE {value!r} is not a decimal-integer")
            else:
                pl.media_sequence = int(value)
            if seen_media:
                pl.errors.append(f"line {no}: MEDIA-SEQUENCE after the first segment (4.4.3.2)")
        elif name == "EXT-X-DISCONTINUITY-SEQUENCE":
            if value is None or not INT_RX.match(value):
                pl.errors.append(f"line {no}: DISCONTINUITY-SEQUENCE {value!r} is not a decimal-integer")
            else:
                pl.disc_sequence = int(value)
            if seen_media or disc_count:
                pl.errors.append(f"line {no}: DISCONTINUITY-SEQUENCE after a segment or an "
                                 f"EXT-X-DISCONTINUITY (4.4.3.3)")
        elif name == "EXT-X-ENDLIST":
            pl.endlist = True
        elif name == "EXT-X-INDEPENDENT-SEGMENTS":
            pl.independent_segments = True
        elif name == "EXT-X-PART-INF":
            try:
                pl.part_target = float(attrs.get("PART-TARGET", ("nan", False))[0])
            except ValueError:
                pass
        elif name == "EXT-X-SERVER-CONTROL":
            pl.server_control = {k: v for k, (v, _) in attrs.items()}
        elif name == "EXT-X-SKIP":
            if pl.skip is not None:
                pl.errors.append(f"line {no}: a second EXT-X-SKIP (4.4.5.2)")
            pl.skip = {k: v for k, (v, _) in attrs.items()}
            try:
                pl.skipped = int(pl.skip.get("SKIPPED-SEGMENTS", "0"))
            except ValueError:
                pass
            if seen_media or cur.parts or pending_extinf is not None:
                pl.errors.append(f"line {no}: EXT-X-SKIP after the first segment: it replaces the "
                                 f"oldest segments (4.4.5.2)")
        elif name == "EXT-X-PRELOAD-HINT":
            pl.preload_hints.append(attrs)
        elif name == "EXTINF":
            dur, _, _title = (value or "").partition(",")
            if value is None or "," not in value:
                pl.errors.append(f"line {no}: EXTINF without ',' (4.4.4.1)")
            if not FLOAT_RX.match(dur):
                pl.errors.append(f"line {no}: EXTINF duration {dur!r} is not a decimal number")
                pending_extinf = float("nan")
            else:
                pending_extinf = float(dur)
        elif name == "EXT-X-PART":
            if pending_extinf is not None:
                pl.errors.append(f"line {no}: EXT-X-PART between an EXTINF and its URI")
            cur.parts.append(Part(attrs, no))
        elif name == "EXT-X-DISCONTINUITY":
            cur.discontinuity = True
            disc_count += 1
        elif name == "EXT-X-MAP":
            map_uri = attrs.get("URI", (None, True))[0]
        elif name == "EXT-X-PROGRAM-DATE-TIME":
            cur.pdt_raw = value
            m = PDT_RX.match(value or "")
            if not m:
                pl.errors.append(f"line {no}: PROGRAM-DATE-TIME {value!r} is not an ISO 8601 "
                                 f"date-time (4.4.4.6)")
            else:
                try:
                    tz = m.group(8) or "Z"
                    iso = (value[:-1] + "+00:00") if tz == "Z" else value
                    if not m.group(8):
                        iso = value + "+00:00"
                    cur.pdt = datetime.datetime.fromisoformat(iso)
                except ValueError as e:
                    pl.errors.append(f"line {no}: PROGRAM-DATE-TIME {value!r}: {e}")
        elif name == "EXT-X-GAP":
            cur.gap = True
        if name in BEFORE_FIRST_PART and cur.parts:
            pl.errors.append(f"line {no}: {name} after the first EXT-X-PART of its Parent Segment "
                             f"(4.4.4.9)")
        if name not in KNOWN_TAGS:
            pl.errors.append(f"line {no}: unknown tag #{name}")
    if pending_extinf is not None:
        pl.errors.append("EXTINF at the end with no URI")
    if cur.parts or cur.discontinuity or cur.pdt_raw:
        cur.map_uri = map_uri
        pl.segments.append(cur)  # the open segment: parts, no URI yet
    # media sequence and discontinuity sequence numbers
    msn = pl.media_sequence + pl.skipped
    dseq = pl.disc_sequence
    for s in pl.segments:
        s.msn = msn
        msn += 1
        if s.discontinuity:
            dseq += 1
        s.disc_seq = dseq
    return pl


# --- one Media Playlist ---------------------------------------------------------


def required_version(pl):
    v, why = 1, "nothing"
    for _, name, value in pl.tags:
        if name == "EXTINF" and value and "." in value.partition(",")[0] and v < 3:
            v, why = 3, "EXTINF with a decimal-floating-point duration"
        if name in ("EXT-X-BYTERANGE", "EXT-X-I-FRAMES-ONLY") and v < 4:
            v, why = 4, name
        if name == "EXT-X-MAP" and v < 6:
            v, why = 6, "EXT-X-MAP"
        if name == "EXT-X-SKIP" and v < 9:
            v, why = 9, "EXT-X-SKIP"
            if value and "RECENTLY-REMOVED-DATERANGES" in value:
                v, why = 10, "EXT-X-SKIP with RECENTLY-REMOVED-DATERANGES"
    return v, why


def check_media(text, delta=False):
    """
    Every tag of one Media Playlist. `delta`: this answers _HLS_skip (EXT-X-SKIP
    is expected to be possible there, and nowhere else).
    """
    pl = parse_media(text) if isinstance(text, str) else text
    rep = Report("media playlist", pl.text)
    for e in pl.errors:
        rep.error(e)
    lines = [l for l in pl.text.split("\n")]
    if not lines or lines[0].rstrip("\r") != "#EXTM3U":
        rep.error("the first line is not #EXTM3U (4.4.1.1)")

    counts = {}
    for _, name, _ in pl.tags:
        counts[name] = counts.get(name, 0) + 1
    for name in ONCE_ANY | MEDIA_PLAYLIST_TAGS | {"EXT-X-SKIP"}:
        if counts.get(name, 0) > 1:
            rep.error(f"{name} appears {counts[name]} times; at most once (4.4.2, 4.4.3)")
    for name in MULTIVARIANT_TAGS:
        if counts.get(name):
            rep.error(f"multivariant tag {name} in a media playlist (4.4.6)")

    # version (4.4.1.2, section 8)
    need, why = required_version(pl)
    if pl.version is None:
        if need > 1:
            rep.error(f"no EXT-X-VERSION, but {why} needs version {need}")
    elif pl.version < need:
        rep.error(f"EXT-X-VERSION:{pl.version}, but {why} needs {need} (8)")
    elif pl.version > need:
        rep.warn(f"EXT-X-VERSION:{pl.version} is more than the {need} its tags need (6.2.1: "
                 f"SHOULD NOT be greater)")

    # target duration (4.4.3.1)
    td = pl.target_duration
    if td is None:
        rep.error("no EXT-X-TARGETDURATION (REQUIRED, 4.4.3.1)")
        td = float("inf")
    elif td < 1:
        rep.error(f"TARGETDURATION {td} is less than 1 (4.4.3.1)")
    for s in pl.segments:
        if s.complete and s.duration is not None and s.duration == s.duration:
            if math.floor(s.duration + 0.5) > td:
                rep.error(f"segment {s.msn}: EXTINF {s.duration} rounds to more than "
                          f"TARGETDURATION {td} (4.4.3.1)")
            if s.duration <= 0:
                rep.error(f"segment {s.msn}: EXTINF {s.duration} is not positive")

    # URIs
    seg_uris = [s.uri for s in pl.segments if s.complete]
    part_uris = [p.uri for s in pl.segments for p in s.parts]
    for what, uris in (("segment", seg_uris), ("part", part_uris)):
        dup = {u for u in uris if uris.count(u) > 1}
        if dup:
            rep.error(f"{what} URIs listed twice: {sorted(dup)}")
    if set(seg_uris) & set(part_uris):
        rep.error(f"URIs used for both a segment and a part: {sorted(set(seg_uris) & set(part_uris))}")

    # media initialization (4.4.4.5): fMP4 segments need an EXT-X-MAP in force
    for s in pl.segments:
        names = ([s.uri] if s.uri else []) + [p.uri for p in s.parts]
        if any(n.endswith((".m4s", ".mp4")) for n in names) and not s.map_uri:
            rep.error(f"segment {s.msn}: fMP4 media with no EXT-X-MAP before it (4.4.4.5)")

    # partial segments (4.4.3.7, 4.4.4.9)
    has_parts = any(s.parts for s in pl.segments)
    pt = pl.part_target
    if has_parts and pt is None:
        rep.error("EXT-X-PART without EXT-X-PART-INF (REQUIRED, 4.4.3.7)")
    if pt is not None:
        if not pt > 0:
            rep.error(f"PART-TARGET {pt} is not positive")
        for s in pl.segments:
            for i, p in enumerate(s.parts):
                if not p.duration > 0:
                    rep.error(f"part {s.msn}.{i}: DURATION {p.duration} is not positive")
                    continue
                if p.duration > pt + EPS:
                    rep.error(f"part {s.msn}.{i} ({p.uri}): DURATION {p.duration} is more than "
                              f"PART-TARGET {pt} (4.4.4.9)")
                final = i == len(s.parts) - 1
                next_gap = not final and s.parts[i + 1].gap
                # The open segment's newest part may yet turn out to be its final one.
                exempt = p.independent or p.gap or next_gap or final
                if not exempt and p.duration < 0.85 * pt - EPS:
                    rep.error(f"part {s.msn}.{i} ({p.uri}): DURATION {p.duration} is less than 85% "
                              f"of PART-TARGET {pt}, and it is not its segment's last (4.4.4.9)")
        first_with_parts = next((s for s in pl.segments if s.parts), None)
        for s in pl.segments:
            # The oldest segment that lists parts may have lost its first ones (6.2.2).
            if s.complete and s.parts and s is not first_with_parts:
                total = sum(p.duration for p in s.parts)
                if abs(total - s.duration) > 1e-3 + 1e-5 * len(s.parts):
                    rep.error(f"segment {s.msn}: its parts add up to {total:.5f} s, its EXTINF "
                              f"says {s.duration} (parts divide their Parent Segment)")
        if pl.independent_segments:
            for s in pl.segments:
                if s.parts and not (s is first_with_parts and s.complete) and not s.parts[0].independent:
                    rep.error(f"segment {s.msn}: EXT-X-INDEPENDENT-SEGMENTS, but its first part "
                              f"{s.parts[0].uri} is not INDEPENDENT=YES")

    # server control (4.4.3.8)
    sc = pl.server_control
    if pt is not None and "PART-HOLD-BACK" not in sc:
        rep.error("EXT-X-PART-INF without PART-HOLD-BACK in EXT-X-SERVER-CONTROL (4.4.3.8)")
    if "PART-HOLD-BACK" in sc and pt is not None:
        phb = float(sc["PART-HOLD-BACK"])
        if phb < 2 * pt - EPS:
            rep.error(f"PART-HOLD-BACK {phb} is less than twice PART-TARGET {pt} (MUST, 4.4.3.8)")
        elif phb < 3 * pt - EPS:
            rep.error(f"PART-HOLD-BACK {phb} is less than three times PART-TARGET {pt} "
                      f"(SHOULD in 4.4.3.8; the Hearth issue requires it)")
    if "HOLD-BACK" in sc and float(sc["HOLD-BACK"]) < 3 * td - EPS:
        rep.error(f"HOLD-BACK {sc['HOLD-BACK']} is less than three times TARGETDURATION {td}")
    if "CAN-SKIP-UNTIL" in sc and float(sc["CAN-SKIP-UNTIL"]) < 6 * td - EPS:
        rep.error(f"CAN-SKIP-UNTIL {sc['CAN-SKIP-UNTIL']} is less than six times "
                  f"TARGETDURATION {td} (4.4.3.8)")
    if "CAN-SKIP-DATERANGES" in sc and "CAN-SKIP-UNTIL" not in sc:
        rep.error("CAN-SKIP-DATERANGES without CAN-SKIP-UNTIL (4.4.3.8)")

    # delta updates (4.4.5.2, 6.2.5.1)
    if pl.skip is not None:
        if "CAN-SKIP-UNTIL" not in sc:
            rep.error("EXT-X-SKIP in a playlist without CAN-SKIP-UNTIL (4.4.5.2)")
        if not delta:
            rep.error("EXT-X-SKIP in a playlist that did not ask for a delta update")
        if pl.endlist:
            rep.error("EXT-X-SKIP with EXT-X-ENDLIST: a server MUST ignore _HLS_skip when the "
                      "playlist has ended (6.2.5.1)")

    # preload hints (4.4.5.3, 6.2.6)
    types = [h.get("TYPE", ("", False))[0] for h in pl.preload_hints]
    for t in set(types):
        if types.count(t) > 1:
            rep.error(f"{types.count(t)} EXT-X-PRELOAD-HINT tags of TYPE={t} (6.2.6: SHOULD NOT "
                      f"add more than one)")
    if pl.endlist and pl.preload_hints:
        rep.error("EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST (4.4.5.3)")
    for h in pl.preload_hints:
        uri = h.get("URI", ("", True))[0]
        if uri in part_uris or uri in seg_uris:
            rep.error(f"EXT-X-PRELOAD-HINT names {uri}, which is already listed")
    if has_parts and not pl.endlist and "PART" not in types:
        rep.error("a live playlist with parts but no EXT-X-PRELOAD-HINT TYPE=PART for the next "
                  "one (the Hearth issue asks for it)")

    # program date time (4.4.4.6, 6.2.1)
    with_pdt = [s for s in pl.segments if s.pdt is not None]
    for s in pl.segments:
        if s.pdt_raw and PDT_RX.match(s.pdt_raw):
            m = PDT_RX.match(s.pdt_raw)
            if not m.group(8) or not m.group(7):
                rep.warn(f"segment {s.msn}: PROGRAM-DATE-TIME {s.pdt_raw} without a time zone or "
                         f"milliseconds (4.4.4.6 SHOULD)")
    if with_pdt:
        for s in pl.segments:
            if s.discontinuity and s.pdt is None:
                rep.warn(f"segment {s.msn}: EXT-X-DISCONTINUITY without PROGRAM-DATE-TIME (6.2.1)")
        for a, b in zip(pl.segments, pl.segments[1:]):
            if a.pdt is None or b.pdt is None or a.duration is None:
                continue
            gap = (b.pdt - a.pdt).total_seconds()
            if gap <= 0:
                rep.error(f"segments {a.msn}, {b.msn}: PROGRAM-DATE-TIME does not increase "
                          f"({a.pdt_raw} -> {b.pdt_raw}): the mapping is ambiguous (6.2.1)")
            elif gap < a.duration - 1.0:
                rep.error(f"segment {b.msn} starts {a.duration - gap:.3f} s before segment {a.msn} "
                          f"ends: more than a sub-second overlap (6.2.1)")

    # discontinuities: also signalled by DISCONTINUITY-SEQUENCE
    if counts.get("EXT-X-DISCONTINUITY") and "EXT-X-DISCONTINUITY-SEQUENCE" not in counts:
        rep.warn("EXT-X-DISCONTINUITY without EXT-X-DISCONTINUITY-SEQUENCE (needed once segments "
                 "are removed, 6.2.2)")

    # a live playlist keeps three target durations (6.2.2)
    if not pl.endlist and pl.complete_segments() and pl.skip is None:
        first_live = pl.segments[0].msn
        if first_live > 0 and pl.duration() < 3 * td - 1e-3:
            rep.error(f"segments were removed from a live playlist that now lasts {pl.duration():.3f} "
                      f"s, less than three target durations (6.2.2)")

    # parts older than three target durations SHOULD be gone (6.2.2)
    tail = 0.0
    for s in reversed(pl.segments):
        if s.parts and s.complete and tail > 3 * td + td:
            rep.warn(f"segment {s.msn} still lists parts {tail:.1f} s from the end (6.2.2: "
                     f"SHOULD remove them after three target durations)")
        tail += s.duration if s.complete else sum(p.duration for p in s.parts)
    return rep


# --- successive reloads -------------------------------------------------------


def check_reload(prev, cur):
    """`cur` is a later reload of the playlist `prev` was (6.2.1, 6.2.2)."""
    prev = parse_media(prev) if isinstance(prev, str) else prev
    cur = parse_media(cur) if isinstance(cur, str) else cur
    rep = Report("reload", f"--- earlier ---\n{prev.text}\n--- later ---\n{cur.text}")
    if prev.target_duration != cur.target_duration:
        rep.error(f"TARGETDURATION changed from {prev.target_duration} to {cur.target_duration}: "
                  f"it MUST NOT change (6.2.1)")
    if cur.media_sequence < prev.media_sequence:
        rep.error(f"MEDIA-SEQUENCE went back from {prev.media_sequence} to {cur.media_sequence} (6.2.2)")
    if cur.disc_sequence < prev.disc_sequence:
        rep.error(f"DISCONTINUITY-SEQUENCE went back from {prev.disc_sequence} to "
                  f"{cur.disc_sequence} (6.2.2)")
    if prev.endlist and not cur.endlist:
        rep.error("EXT-X-ENDLIST went away")
    if prev.segments and cur.segments:
        if cur.segments[-1].msn < prev.segments[-1].msn:
            rep.error(f"the playlist lost its newest segments: it ended at {prev.segments[-1].msn}, "
                      f"now at {cur.segments[-1].msn}")
    first_cur = cur.segments[0].msn if cur.segments else cur.media_sequence
    for a in prev.segments:
        if a.msn < first_cur:
            continue  # removed from the front, as allowed
        b = cur.segment(a.msn)
        if b is None:
            rep.error(f"segment {a.msn} ({a.uri}) disappeared from the middle of the playlist")
            continue
        if a.complete:
            if not b.complete or b.key() != a.key():
                rep.error(f"segment {a.msn} changed: {a.key()} -> {b.key()}")
        if a.disc_seq != b.disc_seq:
            rep.error(f"segment {a.msn}: discontinuity sequence number changed from {a.disc_seq} "
                      f"to {b.disc_seq} (6.2.2)")
        if a.map_uri and b.map_uri != a.map_uri:
            rep.error(f"segment {a.msn}: EXT-X-MAP changed from {a.map_uri} to {b.map_uri}")
        if b.parts:  # parts may be removed once they are old, never changed
            n = min(len(a.parts), len(b.parts))
            if [p.key() for p in a.parts[:n]] != [p.key() for p in b.parts[:n]] or \
                    len(b.parts) < len(a.parts):
                rep.error(f"segment {a.msn}: parts changed from {a.parts} to {b.parts}")
        if prev.endlist and b.key() != a.key():
            rep.error(f"segment {a.msn} changed after EXT-X-ENDLIST")
    if prev.endlist and len(cur.segments) > len(prev.segments):
        rep.error("segments were added after EXT-X-ENDLIST")
    # the preload hint names the part that is added next (4.4.5.3)
    hint = prev.hint("PART")
    if hint:
        pos = prev.next_part()
        later = [(m, i, p) for m, i, p in cur.parts() if (m, i) >= pos]
        if later:
            at = [p for m, i, p in later if (m, i) == pos]
            if not at:
                rep.error(f"the hinted part {hint} at {pos} never appeared; the next listed part is "
                          f"{later[0][2].uri} at {later[0][:2]}")
            elif at[0].uri != hint:
                rep.error(f"EXT-X-PRELOAD-HINT said {hint}, but the part added at {pos} is "
                          f"{at[0].uri} (4.4.5.3: MUST match)")
    return rep


# --- delta updates ------------------------------------------------------------


def check_delta(delta, full):
    """
    `delta` answered ?_HLS_skip=YES when `full` (a plain reload of the same
    moment) was current (6.2.5.1, 4.4.5.2).
    """
    d = parse_media(delta) if isinstance(delta, str) else delta
    f = parse_media(full) if isinstance(full, str) else full
    rep = Report("delta update", f"--- delta ---\n{d.text}\n--- full ---\n{f.text}")
    # the delta's own tags; what is wrong in the full playlist too is reported there
    inherited = set(check_media(f).errors)
    own = check_media(d, delta=True)
    rep.errors += [e for e in own.errors if e not in inherited]
    rep.warnings += [w for w in own.warnings]
    if f.endlist:
        if d.skip is not None:
            rep.error("EXT-X-SKIP in a playlist with EXT-X-ENDLIST (6.2.5.1: MUST ignore _HLS_skip)")
        return rep
    if "CAN-SKIP-UNTIL" not in f.server_control:
        if d.skip is not None:
            rep.error("EXT-X-SKIP although the playlist does not offer CAN-SKIP-UNTIL")
        return rep
    boundary = float(f.server_control["CAN-SKIP-UNTIL"])
    # The version may differ: a delta update needs 9 for EXT-X-SKIP (RFC 8216bis 7),
    # the full playlist only 6, and neither should declare more than it needs.
    for tag in ("target_duration", "media_sequence", "disc_sequence", "part_target",
                "server_control"):
        if getattr(d, tag) != getattr(f, tag):
            rep.error(f"{tag} differs: delta {getattr(d, tag)!r}, full {getattr(f, tag)!r}")
    skipped = d.skipped if d.skip is not None else 0
    if d.skip is not None and skipped == 0:
        rep.warn("EXT-X-SKIP:SKIPPED-SEGMENTS=0")
    if skipped > len(f.complete_segments()):
        rep.error(f"SKIPPED-SEGMENTS={skipped}, but the playlist has only "
                  f"{len(f.complete_segments())} complete segments")
        return rep
    # what is left is exactly the full playlist's tail (6.2.5.1: all tags not skipped remain)
    tail = f.segments[skipped:]
    if [(s.msn, s.key(), s.discontinuity, [p.key() for p in s.parts]) for s in d.segments] != \
            [(s.msn, s.key(), s.discontinuity, [p.key() for p in s.parts]) for s in tail]:
        rep.error(f"the delta's segments {d.segments} are not the full playlist's from "
                  f"{f.media_sequence + skipped} on: {tail}")
    if [h for h in d.preload_hints] != [h for h in f.preload_hints]:
        rep.error("the delta's preload hints differ from the full playlist's")
    # distance of each segment's end from the end of the last Parent Segment
    ends = []
    acc = 0.0
    for s in reversed(f.segments):
        ends.append((s, acc))
        acc += s.duration if s.complete else sum(p.duration for p in s.parts)
    ends.reverse()
    for s, dist_end in ends[:skipped]:
        dist_start = dist_end + (s.duration or 0)
        if dist_start <= boundary + EPS:
            rep.error(f"segment {s.msn} was skipped, but it starts {dist_start:.3f} s from the end, "
                      f"within the Skip Boundary {boundary} (6.2.5.1)")
    for s, dist_end in ends[skipped:]:
        if s.complete and dist_end >= boundary + EPS:
            rep.error(f"segment {s.msn} lies wholly beyond the Skip Boundary ({dist_end:.3f} s from "
                      f"the end) but was not skipped (6.2.5.1)")
    return rep


# --- the multivariant playlist ----------------------------------------------


class Variant:
    def __init__(self, attrs, uri):
        self.attrs = {k: v for k, (v, _) in attrs.items()}
        self.uri = uri

    def get(self, k, default=None):
        return self.attrs.get(k, default)


def parse_master(text):
    lines = [l.rstrip("\r") for l in text.split("\n")]
    variants, errors, tags = [], [], []
    pending = None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.startswith("#EXT"):
            name, value = _split_tag(line)
            tags.append((no, name, value))
            if name == "EXT-X-STREAM-INF":
                if pending is not None:
                    errors.append(f"line {no}: EXT-X-STREAM-INF without a URI line after the previous one")
                try:
                    pending = parse_attributes(value or "")
                except AttrError as e:
                    errors.append(f"line {no}: EXT-X-STREAM-INF: {e}")
                    pending = {}
            continue
        if line.startswith("#"):
            continue
        if pending is None:
            errors.append(f"line {no}: URI {line!r} without EXT-X-STREAM-INF")
        else:
            variants.append(Variant(pending, line))
            pending = None
    if pending is not None:
        errors.append("EXT-X-STREAM-INF at the end without its URI line (4.4.6.2)")
    return variants, errors, tags


CODEC_RX = re.compile(r"^[A-Za-z0-9]{4}(\.[A-Za-z0-9]+)*$")


def check_master(text):
    rep = Report("multivariant playlist", text)
    if text.split("\n")[0].rstrip("\r") != "#EXTM3U":
        rep.error("the first line is not #EXTM3U (4.4.1.1)")
    variants, errors, tags = parse_master(text)
    for e in errors:
        rep.error(e)
    counts = {}
    for _, name, _ in tags:
        counts[name] = counts.get(name, 0) + 1
        if name in MEDIA_PLAYLIST_TAGS or name in MEDIA_SEGMENT_TAGS or name in MEDIA_METADATA_TAGS:
            rep.error(f"media playlist tag {name} in a multivariant playlist (4.4.6)")
        elif name not in KNOWN_TAGS:
            rep.error(f"unknown tag #{name}")
    for name in ONCE_ANY:
        if counts.get(name, 0) > 1:
            rep.error(f"{name} appears {counts[name]} times")
    if not variants:
        rep.error("no variant stream")
    spec = ATTRS["EXT-X-STREAM-INF"]
    for _, name, value in tags:
        if name != "EXT-X-STREAM-INF":
            continue
        try:
            attrs = parse_attributes(value or "")
        except AttrError:
            continue
        for an, (av, aq) in attrs.items():
            if an in spec:
                kind, _, allowed = spec[an]
                if not value_ok(kind, av, aq):
                    rep.error(f"EXT-X-STREAM-INF: {an}={av!r} is not a {kind}")
                elif allowed and av not in allowed:
                    rep.error(f"EXT-X-STREAM-INF: {an}={av} is not one of {sorted(allowed)}")
            elif not an.startswith("X-"):
                rep.error(f"EXT-X-STREAM-INF: unknown attribute {an}")
        if "BANDWIDTH" not in attrs:
            rep.error("EXT-X-STREAM-INF without BANDWIDTH (REQUIRED, 4.4.6.2)")
    for v in variants:
        bw = v.get("BANDWIDTH")
        avg = v.get("AVERAGE-BANDWIDTH")
        if bw and INT_RX.match(bw) and int(bw) <= 0:
            rep.error(f"BANDWIDTH={bw}")
        if bw and avg and INT_RX.match(bw) and INT_RX.match(avg) and int(avg) > int(bw):
            rep.error(f"AVERAGE-BANDWIDTH {avg} is more than the peak BANDWIDTH {bw}")
        codecs = v.get("CODECS")
        if codecs is None:
            rep.warn("EXT-X-STREAM-INF without CODECS (SHOULD, 4.4.6.2)")
        else:
            for c in codecs.split(","):
                if not CODEC_RX.match(c):
                    rep.error(f"CODECS entry {c!r} is not an RFC 6381 format")
        fr = v.get("FRAME-RATE")
        if fr is not None and FLOAT_RX.match(fr):
            if "." in fr and len(fr.split(".")[1]) > 3:
                rep.error(f"FRAME-RATE {fr} is not rounded to three decimal places (4.4.6.2)")
        has_video = codecs is None or any(c.split(".")[0] in ("avc1", "avc3", "hvc1", "hev1", "av01", "vp09")
                                          for c in (codecs or "").split(","))
        if has_video and codecs is not None:
            if v.get("RESOLUTION") is None:
                rep.warn("a video variant without RESOLUTION")
            if fr is None:
                rep.warn("a video variant without FRAME-RATE (SHOULD above 30 fps)")
    return rep


# --- command line -------------------------------------------------------------


def _main(argv):
    import time
    import urllib.parse

    import requests

    if len(argv) < 2:
        print(__doc__)
        return 2
    url = argv[1]
    reloads = int(argv[argv.index("--reloads") + 1]) if "--reloads" in argv else 5
    text = requests.get(url, timeout=10).text
    worst = 0
    if "#EXT-X-STREAM-INF" in text:
        rep = check_master(text)
        print(rep)
        worst |= not rep.ok
        url = urllib.parse.urljoin(url, parse_master(text)[0][0].uri)
        text = requests.get(url, timeout=10).text
    prev = None
    for k in range(reloads):
        pl = parse_media(text)
        rep = check_media(pl)
        if prev is not None:
            rep.extend(check_reload(prev, pl))
        print(f"[{k}] {rep}")
        worst |= not rep.ok
        prev = pl
        if pl.endlist:
            break
        msn, part = pl.next_part()
        text = requests.get(f"{url}?_HLS_msn={msn}&_HLS_part={part}", timeout=15).text
        time.sleep(0)
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
