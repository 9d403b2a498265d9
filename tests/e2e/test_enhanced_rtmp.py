"""
Enhanced RTMP video (issue 3, "FLV payloads"): FourCC `hvc1` and `av01` with
SequenceStart, CodedFrames, CodedFramesX and SequenceEnd, as OBS 30+ sends
HEVC and AV1; anything else refused with a logged reason.

Debian's ffmpeg 5.1 cannot publish Enhanced RTMP, so ffmpeg only encodes a
clip (libx265 / libaom-av1, 640x360 30 fps, a keyframe every 30 frames,
AAC-LC 48 kHz, 4 s, in an MP4) and the raw client in rtmpclient.py publishes
it with tags built by ertmp.py (against veovera's Enhanced RTMP v1/v2):

    video  [0x80 | frame type << 4 | packet type] [FourCC] ...
           SequenceStart  hvcC / av1C, as the MP4's sample entry has it
           CodedFrames    hvc1: SI24 composition time, then the 4-byte length
                          prefixed NAL units of the MP4 sample;
                          av01: the sample's OBUs (no composition time), led
                          by a temporal delimiter OBU
           CodedFramesX   hvc1 frames whose composition time is 0 (every other
                          one; the rest go as CodedFrames with an explicit 0)
           SequenceEnd    after the last frame
    audio  legacy FLV AAC (0xAF, AACPacketType, data)

What Hearth serves under /live/<slug>/ is then checked against what was sent:
CODECS (computed here from the record, RFC 6381 / ISO/IEC 14496-15 E.3 /
AV1-ISOBMFF), RESOLUTION and FRAME-RATE in master.m3u8; the init segment's sample entry
and record; init + the first complete segment read by ffprobe (codec, size,
frame count) and decoded by ffmpeg without errors; the segment's video samples
are the frames sent, byte for byte (temporal delimiters dropped for AV1), with
their keyframe flags and composition offsets; INDEPENDENT=YES exactly on the
parts that start with a keyframe, and no keyframe later in a part (test_live.py
asks the same; here the keyframe interval, 1 s, is shorter than a segment). SequenceEnd leaves the connection up; after
the publisher leaves (hls.reconnect_grace 1 s) the final playlist holds the
whole clip with EXT-X-ENDLIST.

An unknown FourCC (vp09) is refused with one log line naming it; the
connection carries on and its audio makes an audio-only stream.

The clips are published at 4x real time; every wait has a deadline.
"""
import re
import subprocess
import time

import pytest

import ertmp
import hlscheck
import mp4info
from livetools import FFMPEG, LiveServer, ffprobe, packets_of, stream_of
from rtmpclient import RtmpClient, Tag, amf_encode

SIZE = (640, 360)
FPS = 30
GOP = 30
SECONDS = 4
SEGMENT_FRAMES = 60  # hls.segment_target 2 s: a segment ends at the first keyframe at or past 2 s
RATE = 4  # publish at 4x real time

CODECS = {
    # codec -> (FourCC, init sample entry, ffprobe codec_name, CODECS string from the record)
    "hevc": (b"hvc1", "hvc1", "hevc", ertmp.hevc_codecs),
    "av1": (b"av01", "av01", "av1", ertmp.av1_codecs),
}


@pytest.fixture(scope="module")
def ls(bin_path, tmp_path_factory):
    """One server for the module; hls.reconnect_grace 1 s so a stream ends soon after its
    publisher leaves."""
    base = tmp_path_factory.mktemp("ertmp")
    srv = LiveServer(bin_path, base, None, {"HEARTH_HLS_RECONNECT_GRACE": "1s"})
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def server_alive(ls):
    assert ls.alive(), "server died before this test:\n" + ls.log_tail()
    yield
    assert ls.alive(), "server died during this test:\n" + ls.log_tail()


def metadata_tag(fourcc):
    """@setDataFrame onMetaData as OBS sends it; videocodecid is the FourCC as a number
    (Enhanced RTMP, "onMetaData")."""
    meta = {"width": float(SIZE[0]), "height": float(SIZE[1]), "framerate": float(FPS),
            "videocodecid": float(int.from_bytes(fourcc, "big")), "audiocodecid": 10.0,
            "audiosamplerate": 48000.0, "audiochannels": 2.0, "encoder": "hearth-test ertmp"}
    return Tag(18, 0, amf_encode("@setDataFrame") + amf_encode("onMetaData") + amf_encode(meta))


def open_publisher(ls, key):
    c = RtmpClient(ls.rtmp_port)
    try:
        c.handshake()
        c.connect("live")
        c.create_stream()
        status = c.publish(key)
        assert status.get("code") == "NetStream.Publish.Start", status
    except BaseException:
        c.close()
        raise
    return c


def session_lines(ls, slug, pattern):
    rx = re.compile(r"rtmp \S+ " + re.escape(slug) + r": " + pattern)
    return [l for l in ls.log().splitlines() if rx.search(l)]


def unpublish(c, key):
    """FCUnpublish + deleteStream, as OBS stops; the code of the onStatus answered."""
    c.command("FCUnpublish", None, key)
    c.command("deleteStream", None, float(c.stream_id))
    vals = c.wait_command({"onStatus"}, 5)
    return vals[3].get("code") if len(vals) > 3 and isinstance(vals[3], dict) else vals


class Published:
    """A clip published with Enhanced RTMP, the publisher still connected, and what the
    server served once the first segment was complete."""

    def __init__(self, codec, clip, channel, client, counts, live, text, pl, files):
        self.codec, self.clip, self.channel, self.client = codec, clip, channel, client
        self.counts, self.live, self.text, self.pl, self.files = counts, live, text, pl, files
        self.fourcc, self.entry, self.probe_name, codecs_of = CODECS[codec]
        self.expected_codecs = codecs_of(clip.video_config)
        self.slug = channel["slug"]

    @property
    def seg(self):
        return self.pl.complete_segments()[0]


@pytest.fixture(scope="module", params=["hevc", "av1"])
def published(request, ls, tmp_path_factory):
    codec = request.param
    if not ertmp.encoder_available(codec):
        pytest.skip(f"Debian's ffmpeg has no {ertmp.ENCODERS[codec][0]} encoder")
    path = ertmp.make_clip(tmp_path_factory.mktemp(f"clip-{codec}") / f"{codec}.mp4", codec,
                           seconds=SECONDS, size=SIZE, fps=FPS, gop=GOP)
    clip = ertmp.read_clip(path)
    fourcc = CODECS[codec][0]
    assert clip.video_entry == CODECS[codec][1], clip.video_entry
    keys = [i for i, f in enumerate(clip.video) if f.key]
    assert keys == list(range(0, SECONDS * FPS, GOP)), f"the encoder put keyframes at {keys}"

    ch = ls.channel(f"Enhanced {codec}")
    tags, counts = ertmp.publish_tags(clip, fourcc)
    c = open_publisher(ls, ch["stream_key"])
    try:
        c.send_tag(metadata_tag(fourcc))
        ertmp.send_tags(c, tags, rate=RATE)
        live = ls.live(ch["slug"])
        text, pl = live.wait_playlist(lambda p: p.complete_segments(), 10,
                                      "a first complete segment")
        # everything the test checks, fetched while the stream is live
        files = {}
        seg = pl.complete_segments()[0]
        for name in [seg.map_uri, seg.uri] + [p.uri for s in pl.segments for p in s.parts]:
            files[name] = live.fetch(name)
        files["master.m3u8"] = live.fetch("master.m3u8")
        pub = Published(codec, clip, ch, c, counts, live, text, pl, files)
        yield pub
    finally:
        c.close()


# --- the playlists --------------------------------------------------------------------------


def test_master_playlist(published):
    p = published
    text = p.files["master.m3u8"].decode()
    rep = hlscheck.check_master(text)
    assert rep.ok, rep
    variants, _, _ = hlscheck.parse_master(text)
    assert len(variants) == 1, text
    v = variants[0]
    codecs = v.get("CODECS") or ""
    assert codecs.startswith(p.fourcc.decode() + "."), text
    assert codecs.lower() == (p.expected_codecs + ",mp4a.40.2").lower(), \
        f"CODECS={codecs!r}; from the {p.entry} record: {p.expected_codecs!r},mp4a.40.2"
    assert v.get("RESOLUTION") == f"{SIZE[0]}x{SIZE[1]}", text
    # 30 fps in millisecond RTMP timestamps: frame durations of 33 and 34 ms; measured over
    # more than one frame that is 30 within a few hundredths
    fr = v.get("FRAME-RATE")
    assert fr is not None, text
    assert abs(float(fr) - FPS) < 0.05, \
        f"FRAME-RATE={fr} for a {FPS} fps stream (the clip's sequence header / VUI " \
        f"{'has' if p.codec == 'hevc' else 'may have no'} timing info)\n{text}"


def test_media_playlist(published):
    p = published
    rep = hlscheck.check_media(p.text)
    assert rep.ok, f"{rep}\n--- playlist ---\n{p.text}"
    assert abs(p.seg.duration - SEGMENT_FRAMES / FPS) < 0.002, p.text


def test_ingest_log(published, ls):
    """The session logged the codec it read from the SequenceStart record, and nothing was
    refused or malformed."""
    p = published
    lines = session_lines(ls, p.slug, r"video ")
    assert any(f"video {p.expected_codecs} {SIZE[0]}x{SIZE[1]}".lower() in l.lower()
               for l in lines), "\n".join(lines) or ls.log_tail()
    bad = session_lines(ls, p.slug, r"(refused|cannot read|closing|malformed)")
    assert not bad, "\n".join(bad)


# --- what the segment holds ---------------------------------------------------------------


def test_init_segment(published):
    p = published
    init = p.files[p.seg.map_uri]
    tracks = mp4info.parse_init(init)
    vt = mp4info.track_of_kind(tracks, "video")
    at = mp4info.track_of_kind(tracks, "audio")
    assert vt and vt.sample_entry == p.entry, tracks
    assert at and at.sample_entry == "mp4a", tracks
    box = {"hvc1": b"hvcC", "av01": b"av1C"}[p.entry]
    i = init.find(box)
    assert i > 4, f"no {box!r} in the init segment"
    size = int.from_bytes(init[i - 4:i], "big")
    assert init[i + 4:i - 4 + size] == p.clip.video_config, \
        f"the init segment's {box.decode()} is not the record the publisher sent"


def test_segment_plays(published, tmp_path):
    """init + segment: ffprobe reads the codec at 640x360 with 2 s of frames and AAC; ffmpeg
    decodes it without a single error."""
    p = published
    data = p.files[p.seg.map_uri] + p.files[p.seg.uri]
    doc = ffprobe(data, tmpdir=tmp_path)
    v, a = stream_of(doc, "video"), stream_of(doc, "audio")
    assert v and v["codec_name"] == p.probe_name, v
    assert (v["width"], v["height"]) == SIZE, v
    assert a and a["codec_name"] == "aac" and int(a["sample_rate"]) == 48000, a
    vp = packets_of(doc, "video")
    assert len(vp) == SEGMENT_FRAMES, f"{len(vp)} video frames in the segment"
    assert vp[0]["flags"].startswith("K"), vp[0]
    assert [i for i, x in enumerate(vp) if x["flags"].startswith("K")] == \
        list(range(0, SEGMENT_FRAMES, GOP)), [x["flags"] for x in vp]
    path = tmp_path / "seg.mp4"
    path.write_bytes(data)
    res = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr[-2000:]


def test_segment_is_what_was_sent(published):
    """The segment's video samples are the clip's first 60 frames: the same bytes, keyframe
    flags, and composition offsets (so CodedFrames' SI24 and CodedFramesX' implied 0 were
    both read right); it is its parts, concatenated."""
    p = published
    if p.codec == "hevc":
        assert p.counts.get(ertmp.CODED_FRAMES_X, 0) >= 5, p.counts
        assert p.counts.get(ertmp.CODED_FRAMES, 0) >= 5, p.counts
    tracks = mp4info.parse_init(p.files[p.seg.map_uri])
    vt = mp4info.track_of_kind(tracks, "video")
    seg = p.files[p.seg.uri]
    assert seg == b"".join(p.files[x.uri] for x in p.seg.parts), \
        "the segment is not the concatenation of its parts"
    ss = mp4info.samples_by_track(mp4info.parse_media(seg, tracks))[vt.track_id]
    sent = p.clip.video[:SEGMENT_FRAMES]
    assert len(ss) == len(sent), f"{len(ss)} video samples, {len(sent)} frames sent"
    tick = vt.timescale / 1000  # the publisher's timestamps are in ms
    for k, (s, f) in enumerate(zip(ss, sent)):
        got = seg[s.offset:s.offset + s.size]
        assert got == f.data, \
            f"sample {k}: {len(got)} bytes {got[:16].hex()}..., sent {len(f.data)} bytes " \
            f"{f.data[:16].hex()}..."
        assert s.sync == f.key, f"sample {k}: sync={s.sync}, sent as keyframe={f.key}"
        assert abs(s.cto - f.cts * tick) <= 1, \
            f"sample {k}: composition offset {s.cto / tick:.2f} ms, sent {f.cts} ms"
        assert abs((s.dts - ss[0].dts) - f.dts * tick) <= 1.5 * tick, \
            f"sample {k}: decode time {(s.dts - ss[0].dts) / tick:.2f} ms, sent {f.dts} ms"


def test_independent_parts(published):
    """INDEPENDENT=YES exactly on the parts whose first video sample is a keyframe."""
    p = published
    tracks = mp4info.parse_init(p.files[p.seg.map_uri])
    vt = mp4info.track_of_kind(tracks, "video")
    seen = {True: 0, False: 0}
    for s in p.pl.segments:
        for part in s.parts:
            ss = mp4info.samples_by_track(
                mp4info.parse_media(p.files[part.uri], tracks)).get(vt.track_id, [])
            assert ss, f"{part.uri} has no video"
            assert part.independent == ss[0].sync, \
                f"{part.uri}: INDEPENDENT={'YES' if part.independent else 'absent'}, " \
                f"first sample sync={ss[0].sync}\n{p.text}"
            inner = [(k, x.dts / vt.timescale) for k, x in enumerate(ss) if k and x.sync]
            assert not inner, \
                f"{part.uri} (INDEPENDENT={'YES' if part.independent else 'absent'}) holds a " \
                f"keyframe as its sample {inner[0][0]} of {len(ss)} (at {inner[0][1]:.3f} s), not " \
                f"first: a part holding an independent frame is not marked INDEPENDENT=YES, and a " \
                f"viewer cannot join there\n{p.text}"
            seen[part.independent] += 1
    assert seen[True] >= 2 and seen[False] >= 2, f"parts checked: {seen}\n{p.text}"


# --- the end of the stream --------------------------------------------------------------------


def test_sequence_end_then_the_stream_ends(published, ls):
    """SequenceEnd is taken quietly (the connection stays up); when the publisher then
    unpublishes, the final playlist (EXT-X-ENDLIST) holds the whole clip."""
    p = published
    c = p.client
    last = p.clip.video[-1].dts + 1000 // FPS
    c.send_tag(Tag(9, last, ertmp.ex_video(ertmp.SEQUENCE_END, p.fourcc)))
    time.sleep(0.3)
    bad = session_lines(ls, p.slug, r"(refused|closed|malformed|violation)")
    assert not bad, "\n".join(bad)
    # the session still answers: the unpublish is acknowledged
    assert unpublish(c, p.channel["stream_key"]) == "NetStream.Unpublish.Success"
    c.close()
    text, pl = p.live.wait_playlist(lambda x: x.endlist, 10, "EXT-X-ENDLIST")
    rep = hlscheck.check_media(text)
    assert rep.ok, f"{rep}\n{text}"
    segs = pl.complete_segments()
    total = sum(s.duration for s in segs)
    assert abs(total - SECONDS) < 0.05, f"the final playlist holds {total:.3f} s:\n{text}"


# --- what is refused ---------------------------------------------------------------------------


def test_unknown_fourcc_is_refused_and_audio_flows(ls, tmp_path):
    """vp09 (defined by Enhanced RTMP, not offered by Hearth): one log line names it, the
    video is ignored, the connection carries on and its AAC makes an audio-only stream."""
    clip_path = tmp_path / "audio.mp4"
    # any clip will do for the audio; the vp09 "frames" are never decoded
    if not ertmp.encoder_available("hevc"):
        pytest.skip("Debian's ffmpeg has no libx265 encoder")
    clip = ertmp.read_clip(ertmp.make_clip(clip_path, "hevc", seconds=3, size=(320, 180),
                                           fps=FPS, gop=GOP))
    ch = ls.channel("Enhanced vp09")
    slug = ch["slug"]
    vpcc = bytes([1, 0, 0, 0]) + bytes([0, 10, 0x80, 1, 1, 1, 0, 0])  # vpcC v1: profile 0 ...
    tags = [Tag(9, 0, ertmp.ex_video(ertmp.SEQUENCE_START, b"vp09", vpcc)),
            Tag(8, 0, ertmp.aac_audio(0, clip.asc))]
    media = []
    for f in clip.video:
        ft = ertmp.KEY_FRAME if f.key else ertmp.INTER_FRAME
        media.append((f.dts, 1, Tag(9, f.dts, ertmp.ex_video(ertmp.CODED_FRAMES, b"vp09",
                                                             b"\x82\x49\x83" + f.data[:64], ft))))
    for f in clip.audio:
        media.append((f.dts, 0, Tag(8, f.dts, ertmp.aac_audio(1, f.data))))
    media.sort(key=lambda x: (x[0], x[1]))
    tags += [t for _, _, t in media]

    c = open_publisher(ls, ch["stream_key"])
    try:
        c.send_tag(metadata_tag(b"vp09"))
        ertmp.send_tags(c, tags, rate=RATE)
        live = ls.live(slug)
        live.wait_playlist(lambda p: p.complete_segments(), 10, "a first complete segment")
        refused = session_lines(ls, slug, r"refused media")
        assert len(refused) == 1, "\n".join(refused) or ls.log_tail(20)
        assert "'vp09'" in refused[0], refused[0]
        assert not session_lines(ls, slug, r"(closed|malformed|violation|video )"), \
            ls.log_tail(20)

        master = live.fetch("master.m3u8").decode()
        assert hlscheck.check_master(master).ok, hlscheck.check_master(master)
        v = hlscheck.parse_master(master)[0][0]
        assert v.get("CODECS") == "mp4a.40.2" and v.get("RESOLUTION") is None, master
        _, pl = live.playlist()
        seg = pl.complete_segments()[0]
        tracks = mp4info.parse_init(live.fetch(seg.map_uri))
        assert [t.kind for t in tracks.values()] == ["audio"], tracks
        doc = ffprobe(live.fetch(seg.map_uri) + live.fetch(seg.uri), tmpdir=tmp_path)
        assert stream_of(doc, "video") is None, doc["streams"]
        assert len(packets_of(doc, "audio")) >= 80, len(packets_of(doc, "audio"))
        # the connection carried on all along: the unpublish is acknowledged
        assert unpublish(c, ch["stream_key"]) == "NetStream.Unpublish.Success", ls.log_tail(20)
    finally:
        c.close()
