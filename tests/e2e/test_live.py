"""
The live pipeline end to end: ffmpeg publishes the test clip (1080p60 H.264
High, 2 s keyframe interval, AAC 48 kHz; made once per session) over RTMP,
and what /live/<slug>/ serves is read the way a player reads it: the
multivariant and media playlists (checked tag by tag by hlscheck.py),
blocking reloads, the init segment, parts and segments (read by ffprobe and
by mp4info.py).

Two servers start with the module and run side by side:
  - `live` (hls.reconnect_grace 30 s): the main channel, published in real
    time for the whole module and followed by a Recorder (blocking reloads,
    as hls.js does; every init segment, part and segment fetched the moment
    it is listed); a channel published at 4x for delta updates; and the
    pause (503) and reconnect scenarios, each in a thread of its own.
  - `ended` (hls.reconnect_grace 1 s): channels whose publisher plays the
    clip once (faster than real time) and leaves, so that their playlists
    end: the final playlist, audio only, video only, a 4.5 s keyframe
    interval, and _HLS_skip after EXT-X-ENDLIST.
The test that owns a scenario waits for its result and asserts on it.

Timings are never asserted, except where the issue asks for one: a blocked
request is answered within 50 ms of its part's arrival, and a request that
cannot be satisfied gets 503 after about three target durations.
"""
import concurrent.futures
import re
import subprocess
import threading
import time

import pytest
import requests

import hlscheck
import mp4info
from hearthtest import RawConn
from livetools import (FFMPEG, LiveServer, complete_segments, ffprobe, make_clip, packets_of,
                       ratio, stream_of)

PLAYLIST_TYPES = {"application/vnd.apple.mpegurl", "audio/mpegurl"}
MEDIA_TYPES = {"video/mp4", "video/iso.segment", "audio/mp4"}


def media_type(v):
    return (v or "").split(";")[0].strip().lower()


# --- the recorder ----------------------------------------------------------------


class Recorder(threading.Thread):
    """
    Follows a media playlist with blocking reloads (_HLS_msn/_HLS_part for the
    next part, as hls.js does) and fetches every init segment, part and
    segment as soon as a playlist lists it. Keeps every playlist it got, every
    byte it fetched, and every failure.
    """

    def __init__(self, live):
        super().__init__(daemon=True)
        self.live = live
        self.http = requests.Session()
        self.playlists = []  # (monotonic time, text)
        self.files = {}  # uri -> bytes
        self.failures = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def _get(self, name, timeout=15):
        return self.http.get(self.live.url(name), timeout=timeout)

    def run(self):
        prev = None
        while not self.stop_event.is_set():
            try:
                if prev is None:
                    r = self._get("index.m3u8")
                else:
                    msn, part = prev.next_part()
                    r = self._get(f"index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
            except requests.RequestException as e:
                if not self.stop_event.is_set():
                    self.failures.append(f"playlist request: {e!r}")
                return
            if r.status_code == 404 and prev is None:
                time.sleep(0.05)  # not live yet
                continue
            if r.status_code != 200:
                self.failures.append(f"blocking reload {r.url}: {r.status_code} {r.text[:200]!r}")
                time.sleep(0.2)
                prev = None
                continue
            pl = hlscheck.parse_media(r.text)
            with self.lock:
                self.playlists.append((time.monotonic(), r.text))
            names = []
            for s in pl.segments:
                if s.map_uri:
                    names.append(s.map_uri)
                names += [p.uri for p in s.parts]
                if s.complete:
                    names.append(s.uri)
            for name in names:
                if name in self.files:
                    continue
                try:
                    f = self._get(name)
                except requests.RequestException as e:
                    self.failures.append(f"GET {name}: {e!r}")
                    continue
                if f.status_code != 200 or not f.content:
                    # RFC 8216bis 6.2.1: available for immediate download once listed
                    self.failures.append(f"GET {name} just after it was listed: {f.status_code}")
                    continue
                with self.lock:
                    self.files[name] = f.content
            prev = pl
            if pl.endlist:
                return

    def stop(self):
        self.stop_event.set()
        self.join(timeout=20)

    def snapshot(self):
        with self.lock:
            return list(self.playlists), dict(self.files)

    def wait(self, pred, timeout, what):
        """Wait until pred(latest parsed playlist, files) holds; returns (parsed, files)."""
        deadline = time.monotonic() + timeout
        while True:
            pls, files = self.snapshot()
            if pls:
                pl = hlscheck.parse_media(pls[-1][1])
                if pred(pl, files):
                    return pl, files
            if time.monotonic() > deadline or not self.is_alive():
                raise AssertionError(
                    f"{what}: not within {timeout}s (recorder alive: {self.is_alive()}, failures: "
                    f"{self.failures[:5]})\nlast playlist:\n{pls[-1][1] if pls else None}")
            time.sleep(0.05)

    def have_segments(self, n):
        """The first n complete segments with every part and init fetched."""

        def pred(pl, files):
            done = [s for s in pl.complete_segments() if s.msn < n]
            if len(done) < n:
                return False
            allpl = [hlscheck.parse_media(t) for _, t in self.snapshot()[0]]
            for s in done:
                if s.uri not in files or s.map_uri not in files:
                    return False
                parts = self.parts_of(allpl, s.msn)
                if not parts or any(p.uri not in files for p in parts):
                    return False
            return True

        return pred

    @staticmethod
    def parts_of(playlists, msn):
        """The parts of segment msn, from the newest playlist that lists it complete with parts."""
        for pl in reversed(playlists):
            s = pl.segment(msn)
            if s is not None and s.complete and s.parts:
                return s.parts
        return []


# --- scenarios ----------------------------------------------------------------------
#
# What takes wall time (a stream that must run 16 s, a 6 s blocking wait, a
# publisher that leaves and comes back) runs in a thread started with the
# module's servers, beside the other tests; the test that owns it waits for
# its result and asserts on it.


class Scenario(threading.Thread):
    def __init__(self, fn, *args):
        super().__init__(daemon=True, name=fn.__name__)
        self.fn, self.args = fn, args
        self.value, self.error = None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def result(self, timeout=60):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"scenario {self.name} did not finish within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


def scenario_paused(ls):
    """A publisher leaves; then a blocking request for the next part, and a request for
    the hinted part, both made at t0."""
    ch = ls.channel("Paused")
    lv = ls.live(ch["slug"])
    pub = ls.publish(ch["stream_key"])
    lv.wait_playlist(lambda pl: pl.parts_count() >= 2, 30, "two parts")
    pub.stop()
    text, pl = lv.wait_playlist(lambda pl: pl.segments and pl.segments[-1].complete, 10,
                                "the open segment to close when the publisher left")
    msn, part = pl.next_part()
    hint = pl.hint("PART")
    base = f"/live/{ch['slug']}/"
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        fp = ex.submit(timed_get, ls.port, f"{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}", 30)
        fh = ex.submit(timed_get, ls.port, base + hint, 30) if hint else None
        blocked = fp.result(timeout=40)
        hinted = fh.result(timeout=40) if fh else None
    after, _ = lv.playlist()
    return dict(lv=lv, text=text, pl=pl, t0=t0, blocked=blocked, hinted=hinted, after=after)


def scenario_reconnect(ls):
    """Publish, leave, come back within the grace; the playlists along the way."""
    ch = ls.channel("Comeback")
    lv = ls.live(ch["slug"])
    pub = ls.publish(ch["stream_key"])
    before, _ = lv.wait_playlist(complete_segments(1), 30, "a complete segment")
    pub.stop()
    lv.wait_playlist(lambda pl: pl.segments[-1].complete, 10, "the pause")
    paused, _ = lv.playlist()
    ls.publish(ch["stream_key"])
    text, _ = lv.wait_playlist(
        lambda pl: any(s.discontinuity and s.complete for s in pl.segments), 30,
        "a complete segment after the discontinuity")
    return dict(lv=lv, before=before, paused=paused, text=text)


def scenario_skip_after_end(ls):
    """16 s of media (4x real time), the publisher leaves, the playlist ends; then _HLS_skip."""
    ch = ls.channel("Long and short")
    lv = ls.live(ch["slug"])
    pub = ls.publish(ch["stream_key"], readrate=4)
    lv.wait_playlist(lambda pl: pl.duration() > 16, 30, "16 s of segments")
    pub.stop()
    full, _ = lv.wait_playlist(lambda p: p.endlist, 15, "EXT-X-ENDLIST")
    return dict(full=full, delta=lv.get("index.m3u8?_HLS_skip=YES"))


def recorded(ls, title, **publish):
    """A channel published with **publish and followed by a Recorder from the start."""
    ch = ls.channel(title)
    lv = ls.live(ch["slug"])
    rec = Recorder(lv)
    rec.start()
    ls.recorders.append(rec)
    rec.publisher = ls.publish(ch["stream_key"], **publish)
    return rec


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ended(bin_path, live_clip, tmp_path_factory):
    """
    A server whose streams end (EXT-X-ENDLIST) one second after their publisher
    leaves, with its channels published (faster than real time, the clip once)
    and recorded from the module's start.
    """
    base = tmp_path_factory.mktemp("ended")
    ls = LiveServer(bin_path, base, live_clip, {"HEARTH_HLS_RECONNECT_GRACE": "1s"})
    ls.recorders = []
    try:
        ls.final = recorded(ls, "Ends", loop=False, readrate=2)
        ls.audio = recorded(ls, "Audio only", loop=False, readrate=2, extra_out=["-vn"])
        ls.video = recorded(ls, "Video only", loop=False, readrate=2, extra_out=["-an"])
        # 4.5 s between keyframes, where hls.segment_target is 2 s
        clip = make_clip(base / "longgop.flv", seconds=9, size=(320, 180), fps=30, gop=135,
                         bitrate="300k")
        ls.longgop = recorded(ls, "Long GOP", clip=clip, loop=False, readrate=3)
        ls.skip_after_end = Scenario(scenario_skip_after_end, ls)
        yield ls
    finally:
        for r in ls.recorders:
            r.stop_event.set()
        ls.close()
        for r in ls.recorders:
            r.join(timeout=10)


@pytest.fixture(scope="module")
def live(bin_path, live_clip, tmp_path_factory, ended):
    """
    The main server (hls.reconnect_grace 30 s): the main channel, published in
    real time and recorded for the whole module; a fast channel for delta
    updates; the pause and reconnect scenarios. (`ended` starts first, so that
    its streams run beside these tests.)
    """
    ls = LiveServer(bin_path, tmp_path_factory.mktemp("live"), live_clip,
                    {"HEARTH_HLS_RECONNECT_GRACE": "30s"})
    ls.recorders = []
    try:
        ls.recorder = recorded(ls, "Main")
        ls.main = ls.recorder.live
        ls.main_publisher = ls.recorder.publisher
        fast = ls.channel("Fast")
        ls.fast = ls.live(fast["slug"])
        ls.fast_publisher = ls.publish(fast["stream_key"], readrate=4)
        ls.paused = Scenario(scenario_paused, ls)
        ls.reconnect = Scenario(scenario_reconnect, ls)
        yield ls
    finally:
        for r in ls.recorders:
            r.stop_event.set()
        ls.close()
        for r in ls.recorders:
            r.join(timeout=10)


@pytest.fixture
def main(live):
    """The main channel's Live; the server and its publisher must survive the test."""
    assert live.alive(), "server died before this test:\n" + live.log_tail()
    yield live.main
    assert live.alive(), "server died during this test:\n" + live.log_tail()
    assert live.main_publisher.alive(), "the main publisher stopped:\n" + live.main_publisher.log()


# --- helpers ---------------------------------------------------------------------------


def timed_get(port, path, timeout=20):
    """GET on a fresh connection: (monotonic time the first byte of the answer came, Response)."""
    with RawConn(port, timeout=timeout) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        if not c.readable(timeout):
            raise AssertionError(f"GET {path}: no answer within {timeout}s")
        t = time.monotonic()
        return t, c.read_response()


def probe_media(init, *media):
    return ffprobe(init + b"".join(media))


def packet_tuples(doc, kind):
    return [(p.get("pts"), p.get("dts"), p.get("duration"), p.get("size"), p.get("flags"))
            for p in packets_of(doc, kind)]


def check_av_streams(doc, video=True, audio=True):
    v, a = stream_of(doc, "video"), stream_of(doc, "audio")
    if video:
        assert v is not None, f"no video stream: {doc['streams']}"
        assert v["codec_name"] == "h264", v
        assert v.get("profile") == "High", v
        assert (v["width"], v["height"]) == (1920, 1080), v
        assert abs(ratio(v["r_frame_rate"]) - 60) < 0.5, v
        # average over what the file holds: the clip's loop seam adds a frame's worth of time
        assert abs(ratio(v["avg_frame_rate"]) - 60) < 1.0, v
    else:
        assert v is None, f"a video stream in an audio-only publish: {v}"
    if audio:
        assert a is not None, f"no audio stream: {doc['streams']}"
        assert a["codec_name"] == "aac", a
        assert int(a["sample_rate"]) == 48000, a
        assert a["channels"] == 2, a
    else:
        assert a is None, f"an audio stream in a video-only publish: {a}"
    return v, a


def assert_media_playlist_ok(text, what=""):
    rep = hlscheck.check_media(text)
    assert rep.ok, f"{what}\n{rep}\n--- playlist ---\n{text}"


# --- the multivariant playlist -------------------------------------------------------


def test_master_playlist(main, live):
    live.recorder.wait(lambda pl, f: pl.complete_segments(), 30, "a first complete segment")
    r = main.get("master.m3u8")
    assert r.status_code == 200, r.text
    assert media_type(r.headers.get("Content-Type")) in PLAYLIST_TYPES
    rep = hlscheck.check_master(r.text)
    assert rep.ok, rep
    variants, _, _ = hlscheck.parse_master(r.text)
    assert len(variants) == 1
    v = variants[0]
    assert main.get(v.uri).status_code == 200, f"the variant's URI {v.uri} does not resolve"
    bw, avg = int(v.get("BANDWIDTH")), int(v.get("AVERAGE-BANDWIDTH"))
    # measured from what the clip carries (about 4.2 Mbit/s): plausible, not exact
    assert 1_000_000 < avg <= bw < 20_000_000, (avg, bw)
    assert re.fullmatch(r"avc1\.64[0-9A-Fa-f]{4},mp4a\.40\.2", v.get("CODECS")), v.get("CODECS")
    assert v.get("RESOLUTION") == "1920x1080"
    assert abs(float(v.get("FRAME-RATE")) - 60.0) < 0.01, v.get("FRAME-RATE")


# --- what ffprobe reads ---------------------------------------------------------------


def test_init_parts_and_segments_play(main, live, tmp_path):
    """
    init + segment, and init + the segment's parts, read by ffprobe: H.264 High
    1920x1080 60 fps and AAC 48 kHz; the parts are the segment, byte for byte
    and packet for packet; timestamps run on without gaps from part to part
    and from segment to segment (segments 0-2: the clip's first pass, before
    ffmpeg's -stream_loop seam).
    """
    rec = live.recorder
    pl, files = rec.wait(rec.have_segments(3), 40, "three complete segments with their parts")
    playlists = [hlscheck.parse_media(t) for _, t in rec.snapshot()[0]]
    segs = [pl.segment(m) for m in range(3)]
    init = files[segs[0].map_uri]
    tracks = mp4info.parse_init(init)
    vt, at = mp4info.track_of_kind(tracks, "video"), mp4info.track_of_kind(tracks, "audio")
    assert vt and vt.sample_entry == "avc1" and at and at.sample_entry == "mp4a", tracks

    frame = vt.timescale / 60
    prev_end = {}
    for s in segs:
        assert s.map_uri == segs[0].map_uri
        seg = files[s.uri]
        parts = rec.parts_of(playlists, s.msn)
        assert seg == b"".join(files[p.uri] for p in parts), \
            f"segment {s.msn} is not the concatenation of its parts"
        doc_seg = probe_media(init, seg)
        check_av_streams(doc_seg)
        doc_parts = probe_media(init, *(files[p.uri] for p in parts))
        for kind in ("video", "audio"):
            assert packet_tuples(doc_seg, kind) == packet_tuples(doc_parts, kind), \
                f"segment {s.msn}: init+parts and init+segment differ in {kind} packets"
        # 2 s of 60 fps video per segment, starting with a keyframe
        vp = packets_of(doc_seg, "video")
        assert len(vp) == 120, f"segment {s.msn} has {len(vp)} video frames"
        assert vp[0]["flags"].startswith("K"), vp[0]

        # timestamps: continuous across parts, and from segment to segment
        for t in (vt, at):
            samples = []
            for p in parts:
                frags = mp4info.parse_media(files[p.uri], tracks)
                ss = mp4info.samples_by_track(frags).get(t.track_id, [])
                if samples and ss:
                    end = samples[-1].dts + samples[-1].duration
                    assert ss[0].dts == end, \
                        f"{t.kind}: part {p.uri} starts at {ss[0].dts}, the previous ended at {end}"
                samples += ss
            dts = [x.dts for x in samples]
            assert dts == sorted(dts) and len(set(dts)) == len(dts), f"{t.kind} dts not increasing"
            if t.track_id in prev_end:
                gap = samples[0].dts - prev_end[t.track_id]
                limit = frame if t is vt else 1
                assert 0 <= gap <= limit, \
                    f"{t.kind}: segment {s.msn} starts {gap} ticks after segment {s.msn - 1} ended"
            prev_end[t.track_id] = samples[-1].dts + samples[-1].duration
            if t is at:
                assert all(x.duration == 1024 for x in samples[:-1]), "AAC frames not 1024 samples"

    # the three segments in a row: one continuous presentation to ffprobe
    doc = probe_media(init, *(files[s.uri] for s in segs))
    for kind, step in (("video", 1 / 60), ("audio", 1024 / 48000)):
        ts = [float(p["dts_time"]) for p in packets_of(doc, kind)]
        steps = [b - a for a, b in zip(ts, ts[1:])]
        assert min(steps) > 0, f"{kind} dts does not increase"
        assert max(steps) < step * 1.5 + 0.001, f"{kind}: a gap of {max(steps):.4f} s"

    # and it decodes
    path = tmp_path / "seg1.mp4"
    path.write_bytes(init + files[segs[1].uri])
    res = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr[-2000:]


def test_independent_parts_start_with_a_keyframe(main, live):
    """INDEPENDENT=YES exactly on the parts whose first video sample is a sync sample; DURATION
    is what the part holds."""
    rec = live.recorder
    rec.wait(rec.have_segments(3), 40, "three complete segments")
    playlists, files = rec.snapshot()
    seen = {}
    for _, text in playlists:
        pl = hlscheck.parse_media(text)
        for s in pl.segments:
            for i, p in enumerate(s.parts):
                seen[p.uri] = (s, i, p)
    checked = 0
    for uri, (s, i, p) in seen.items():
        if uri not in files or s.map_uri not in files:
            continue
        tracks = mp4info.parse_init(files[s.map_uri])
        vt = mp4info.track_of_kind(tracks, "video")
        ss = mp4info.samples_by_track(mp4info.parse_media(files[uri], tracks))[vt.track_id]
        assert ss, f"{uri} has no video"
        assert p.independent == ss[0].sync, \
            f"{uri}: INDEPENDENT={'YES' if p.independent else 'absent'}, first sample sync={ss[0].sync}"
        if any(x.sync for x in ss):
            assert p.independent, f"{uri} holds a keyframe but is not INDEPENDENT=YES"
        held = sum(x.duration for x in ss) / vt.timescale
        assert abs(held - p.duration) < 0.002, f"{uri}: DURATION={p.duration}, holds {held:.5f} s"
        checked += 1
    assert checked >= 12, f"only {checked} parts checked"


# --- the media playlist against RFC 8216bis --------------------------------------------


def test_playlists_during_publish_conform(main, live):
    """Every playlist the recorder got (blocking reloads) passes hlscheck, each reload is
    consistent with the one before, and everything listed could be fetched at once."""
    rec = live.recorder
    rec.wait(lambda pl, f: len(pl.complete_segments()) >= 2, 40, "two complete segments")
    time.sleep(1.5)  # a few more reloads, across a segment boundary
    playlists, _ = rec.snapshot()
    assert len(playlists) >= 8, f"only {len(playlists)} playlists"
    problems = []
    prev = None
    for _, text in playlists:
        pl = hlscheck.parse_media(text)
        rep = hlscheck.check_media(pl)
        if prev is not None:
            rep.extend(hlscheck.check_reload(prev, pl))
            assert pl.parts_count() and pl.next_part() > prev.next_part() or pl.endlist, \
                "a blocking reload answered without the part it asked for"
        if not rep.ok:
            problems.append(f"{rep}\n--- playlist ---\n{text}")
        prev = pl
    assert not rec.failures, rec.failures[:10]
    assert not problems, f"{len(problems)} of {len(playlists)} playlists fail:\n" + "\n".join(problems[:3])


def test_parts_stay_within_part_target_across_a_timestamp_gap(main, live):
    """
    ffmpeg's -stream_loop leaves a one-frame gap in video decode times at the
    clip's seam (dts 5.983 s -> 6.017 s), as an encoder that drops a frame
    does. EXT-X-PART durations must still not exceed PART-TARGET (4.4.4.9).
    """
    rec = live.recorder
    pl, _ = rec.wait(lambda pl, f: len(pl.complete_segments()) >= 4, 40, "four complete segments")
    pt = pl.part_target
    too_long = []
    for _, text in rec.snapshot()[0]:
        for msn, i, p in hlscheck.parse_media(text).parts():
            if p.duration > pt + 1e-6:
                too_long.append(f"{p.uri} DURATION={p.duration} > PART-TARGET={pt}")
    assert not too_long, sorted(set(too_long))


def test_delta_update(live):
    """_HLS_skip=YES: EXT-X-SKIP in place of the segments beyond CAN-SKIP-UNTIL, the rest
    exactly as in the full playlist (6.2.5.1). On a channel published at 4x real time."""
    lv = live.fast

    def skippable(pl):
        boundary = float(pl.server_control.get("CAN-SKIP-UNTIL", "1e9"))
        return pl.duration() > boundary + 2 * pl.target_duration

    lv.wait_playlist(skippable, 40, "a playlist long enough to skip segments")
    for attempt in range(50):
        f1 = lv.get("index.m3u8").text
        d = lv.get("index.m3u8?_HLS_skip=YES")
        f2 = lv.get("index.m3u8").text
        if f1 == f2:
            break
    else:
        pytest.fail("the playlist never held still long enough to compare a delta update with it")
    assert d.status_code == 200
    assert media_type(d.headers.get("Content-Type")) in PLAYLIST_TYPES
    rep = hlscheck.check_delta(d.text, f1)
    assert rep.ok, rep
    delta = hlscheck.parse_media(d.text)
    assert delta.skip is not None and delta.skipped >= 1, d.text
    # a blocking request can ask for a delta update too
    msn, part = hlscheck.parse_media(f1).next_part()
    r = lv.get(f"index.m3u8?_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES", timeout=15)
    assert r.status_code == 200
    assert hlscheck.parse_media(r.text).skip is not None, r.text


# --- blocking reload ------------------------------------------------------------------------


def test_blocking_reload_is_answered_when_its_part_arrives(main, live):
    """
    _HLS_msn/_HLS_part for the next part, and the preload-hinted part itself,
    asked at once on two connections: both wait for the part, the playlist
    lists it, and both answers come within 50 ms of each other (the same
    arrival wakes them). Three parts in a row.
    """
    main.wait_live()
    for _ in range(3):
        text, pl = main.playlist()
        msn, part = pl.next_part()
        hint = pl.hint("PART")
        assert hint, text
        base = f"/live/{main.slug}/"
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            fp = ex.submit(timed_get, live.port, f"{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
            fh = ex.submit(timed_get, live.port, base + hint)
            t_pl, r_pl = fp.result(timeout=30)
            t_part, r_part = fh.result(timeout=30)
        assert r_pl.status == 200, r_pl
        assert r_part.status == 200, r_part
        answer = hlscheck.parse_media(r_pl.body.decode())
        listed = {(m, i): p.uri for m, i, p in answer.parts()}
        assert listed.get((msn, part)) == hint, \
            f"the answer to _HLS_msn={msn}&_HLS_part={part} does not list {hint}:\n{r_pl.body.decode()}"
        assert r_part.body == main.fetch(hint)
        assert abs(t_pl - t_part) <= 0.050, \
            f"the playlist and the part were answered {abs(t_pl - t_part) * 1000:.1f} ms apart"


def test_blocking_reload_past_the_last_part_waits_for_the_next_segment(main, live):
    """
    RFC 8216bis 6.2.5.2: a Part Index past the final part of its Parent
    Segment is a request for part 0 of the next segment. Right after segment
    M completes, _HLS_msn=M&_HLS_part=<its part count> must wait for part 0
    of M+1 and list it.
    """
    text, pl = main.wait_live()
    m = pl.segments[-1].msn if not pl.segments[-1].complete else pl.segments[-1].msn + 1
    r = main.get(f"index.m3u8?_HLS_msn={m}", timeout=15)  # answered when M is complete
    assert r.status_code == 200
    pl = hlscheck.parse_media(r.text)
    seg = pl.segment(m)
    assert seg is not None and seg.complete, r.text
    n = len(seg.parts)
    r = main.get(f"index.m3u8?_HLS_msn={m}&_HLS_part={n}", timeout=15)
    assert r.status_code == 200
    answer = hlscheck.parse_media(r.text)
    nxt = answer.segment(m + 1)
    assert nxt is not None and nxt.parts, \
        f"_HLS_msn={m}&_HLS_part={n} (segment {m} has {n} parts) was answered before part 0 of " \
        f"segment {m + 1} existed:\n{r.text}"


def test_blocking_reload_within_the_advance_part_limit_is_not_refused(main, live):
    """
    RFC 8216bis 6.2.5.2: 400 is for a _HLS_part beyond the last part by more
    than the Advance Part Limit (3 / PART-TARGET = 6 parts at 0.5 s). Four
    parts past the last listed one is within it: the request waits (for part
    0 of the next segment, when the index is past the segment's last part)
    and is answered.
    """
    text, pl = main.wait_playlist(
        lambda pl: pl.open_segment() is not None and 1 <= len(pl.open_segment().parts) <= 2, 20,
        "a playlist whose newest part is the first or second of the open segment")
    limit = int(3 / pl.part_target) if pl.part_target < 1 else 3
    assert limit >= 5
    last_msn, last_i, _ = pl.last_part()
    r = main.get(f"index.m3u8?_HLS_msn={last_msn}&_HLS_part={last_i + 4}", timeout=15)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"


def test_blocking_reload_bad_requests(main, live):
    text, pl = main.wait_live()
    last = pl.segments[-1].msn
    # too far ahead: answered at once, not parked (6.2.5.2)
    for q in (f"_HLS_msn={last + 3}", f"_HLS_msn={last + 3}&_HLS_part=0", f"_HLS_msn={last + 100}"):
        r = main.get(f"index.m3u8?{q}", timeout=2)
        assert r.status_code == 400, f"{q}: {r.status_code} {r.text[:200]}"
    # _HLS_part without _HLS_msn (6.2.5.2 MUST), and values that are not numbers
    for q in ("_HLS_part=1", "_HLS_msn=abc", "_HLS_msn=-1", "_HLS_msn=1&_HLS_part=x"):
        r = main.get(f"index.m3u8?{q}", timeout=2)
        assert r.status_code == 400, f"{q}: {r.status_code} {r.text[:200]}"
    # an msn already in the playlist: answered at once
    r = main.get(f"index.m3u8?_HLS_msn={pl.segments[0].msn}&_HLS_part=0", timeout=2)
    assert r.status_code == 200


def test_not_hinted_and_unknown_resources_are_404(main, live):
    text, pl = main.wait_live()
    sid = re.search(r"part-([0-9a-f]+)-", text).group(1)
    last = pl.segments[-1].msn
    for name in (f"part-{sid}-{last + 5}.0.m4s", f"seg-{sid}-{last + 1}.m4s",
                 f"part-deadbeef-{last}.0.m4s", f"init-{sid}-999.mp4", "nothing.m3u8",
                 f"seg-{sid}-x.m4s"):
        r = main.get(name, timeout=2)
        assert r.status_code == 404, f"{name}: {r.status_code}"
    assert requests.get(f"{live.url}/live/no-such-channel/index.m3u8", timeout=2).status_code == 404


def test_http_headers_of_live_resources(main, live):
    text, pl = main.wait_playlist(complete_segments(1), 30)
    seg = pl.complete_segments()[-1]
    origin = {"Origin": "http://player.example"}
    for name, types in (("index.m3u8", PLAYLIST_TYPES), ("master.m3u8", PLAYLIST_TYPES),
                        (seg.map_uri, MEDIA_TYPES), (seg.uri, MEDIA_TYPES),
                        (pl.parts()[-1][2].uri, MEDIA_TYPES)):
        r = main.get(name, headers=origin)
        assert r.status_code == 200, name
        assert media_type(r.headers.get("Content-Type")) in types, (name, r.headers)
        assert r.headers.get("ETag"), (name, r.headers)
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin["Origin"]), (name, r.headers)
        cc = r.headers.get("Cache-Control", "")
        if name.endswith(".m3u8"):
            age = re.search(r"max-age=(\d+)", cc)
            assert age and int(age.group(1)) <= 2 and "immutable" not in cc, (name, cc)
        else:
            assert "immutable" in cc or re.search(r"max-age=\d{5,}", cc), (name, cc)
            # immutable: the same URI, the same bytes, a conditional request gets 304
            r2 = main.get(name, headers={"If-None-Match": r.headers["ETag"]})
            assert r2.status_code == 304, (name, r2.status_code)


def test_removed_parts_stay_downloadable(main, live):
    """
    RFC 8216bis 6.2.2: clients MUST be able to download a Partial Segment for
    at least three target durations after its EXT-X-PART tag is removed from
    the playlist.
    """
    text, pl = main.wait_playlist(complete_segments(2), 30)
    oldest = next(s for s in pl.segments if s.parts)
    uri = oldest.parts[0].uri
    body = main.fetch(uri)
    _, pl2 = main.wait_playlist(lambda p: uri not in {x.uri for _, _, x in p.parts()}, 20,
                                f"{uri} to leave the playlist")
    r = main.get(uri)
    assert r.status_code == 200, \
        f"{uri} answered {r.status_code} right after its EXT-X-PART left the playlist"
    assert r.content == body


def test_unsatisfiable_blocking_request_is_503_after_three_target_durations(live):
    """
    The publisher stops (the stream waits out hls.reconnect_grace): a blocking
    request for the next part, and a request for the hinted part, are
    answered 503 after about three target durations (6.2.5.2), not before.
    """
    res = live.paused.result(60)
    pl, t0 = res["pl"], res["t0"]
    assert not pl.endlist
    td = pl.target_duration
    t_pl, r_pl = res["blocked"]
    assert r_pl.status == 503, r_pl
    assert t_pl - t0 >= 3 * td - 0.5, f"503 after {t_pl - t0:.2f} s, before 3 x {td} s"
    assert res["hinted"] is not None, "the paused playlist has no preload hint"
    t_h, r_h = res["hinted"]
    assert r_h.status == 503, r_h
    assert t_h - t0 >= 3 * td - 0.5, f"503 after {t_h - t0:.2f} s, before 3 x {td} s"
    # still within the grace: the playlist is served, as it was, without ENDLIST
    after = hlscheck.parse_media(res["after"])
    assert not after.endlist and after.segments[-1].msn == pl.segments[-1].msn, res["after"]


def test_reconnect_continues_the_playlist_with_a_discontinuity(live):
    """
    The publisher leaves and comes back within hls.reconnect_grace: the same
    playlist (same sid in every URI) goes on, EXT-X-DISCONTINUITY before the
    first new segment, media sequence numbers keep increasing, decode times
    do not go back, and the new segment plays.
    """
    res = live.reconnect.result(60)
    lv, text = res["lv"], res["text"]
    before, paused, pl = (hlscheck.parse_media(res[k]) for k in ("before", "paused", "text"))
    sid = re.search(r"seg-([0-9a-f]+)-", res["before"]).group(1)
    rep = hlscheck.check_reload(before, paused).extend(hlscheck.check_reload(paused, pl))
    assert rep.ok, rep
    uris = re.findall(r'(?:URI="|^)((?:init|seg|part)-[^"\n]+)', text, re.M)
    assert uris and all(u.split("-")[1] == sid for u in uris), (sid, uris)
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1, text
    assert not pl.endlist
    after = next(s for s in pl.segments if s.discontinuity)
    last_before = paused.segments[-1]
    assert after.msn == last_before.msn + 1, text
    msns = [s.msn for s in pl.segments]
    assert msns == list(range(msns[0], msns[0] + len(msns)))

    init = lv.fetch(after.map_uri)
    doc = probe_media(init, lv.fetch(after.uri))
    check_av_streams(doc)
    tracks = mp4info.parse_init(init)
    old = mp4info.samples_by_track(mp4info.parse_media(
        lv.fetch(last_before.uri), mp4info.parse_init(lv.fetch(last_before.map_uri))))
    new = mp4info.samples_by_track(mp4info.parse_media(lv.fetch(after.uri), tracks))
    for tid, ss in new.items():
        if tid in old and old[tid]:
            assert ss[0].dts >= old[tid][-1].dts + old[tid][-1].duration, \
                f"track {tid}: decode time went back across the discontinuity"
    assert_media_playlist_ok(text, "the playlist after the reconnect")


# --- streams that end -----------------------------------------------------------------------


def final_of(rec, timeout=40):
    """The recorder's last playlist, once it has EXT-X-ENDLIST; and everything it fetched."""
    pl, files = rec.wait(lambda pl, f: pl.endlist, timeout, "EXT-X-ENDLIST")
    rec.join(timeout=10)
    return rec.snapshot()[0][-1][1], pl, files


def test_final_playlist_after_the_grace(ended):
    """The publisher leaves (the clip ends); hls.reconnect_grace (1 s) later the playlist ends:
    EXT-X-ENDLIST, no preload hint, everything it lists still served, it passes hlscheck."""
    rec = ended.final
    text, pl, files = final_of(rec)
    assert rec.publisher.wait(10) == 0, rec.publisher.log()
    lv = rec.live
    assert not pl.preload_hints
    assert len(pl.complete_segments()) == 3 and not pl.open_segment(), text
    assert abs(pl.duration() - 6.0) < 0.1, pl.duration()
    for s in pl.segments:
        assert lv.fetch(s.uri) == files[s.uri]
        for p in s.parts:
            assert lv.fetch(p.uri) == files[p.uri]
    # blocking directives are ignored once the playlist has ended (6.2.5.2)
    last = pl.segments[-1].msn
    r = lv.get(f"index.m3u8?_HLS_msn={last + 50}&_HLS_part=0", timeout=3)
    assert r.status_code == 200 and r.text == text
    assert lv.get("master.m3u8").status_code == 200
    # and every version along the way
    problems, prev = [], None
    for _, t in rec.snapshot()[0]:
        cur = hlscheck.parse_media(t)
        rep = hlscheck.check_media(cur)
        if prev is not None:
            rep.extend(hlscheck.check_reload(prev, cur))
        if not rep.ok:
            problems.append(str(rep))
        prev = cur
    assert not rec.failures, rec.failures
    assert_media_playlist_ok(text, "the final playlist")
    assert not problems, "\n".join(problems[:3])


def test_delta_update_is_ignored_after_endlist(ended):
    """RFC 8216bis 6.2.5.1: a server MUST ignore _HLS_skip once the playlist has EXT-X-ENDLIST."""
    res = ended.skip_after_end.result(60)
    r = res["delta"]
    assert r.status_code == 200
    d = hlscheck.parse_media(r.text)
    assert d.skip is None, f"EXT-X-SKIP in the answer to _HLS_skip=YES after EXT-X-ENDLIST:\n{r.text}"
    assert r.text == res["full"]


@pytest.mark.parametrize("only", ["audio", "video"])
def test_single_track_publish(ended, only):
    """ffmpeg -vn / -an: the playlist works and its segments hold that one stream."""
    rec = getattr(ended, only)
    text, pl, files = final_of(rec)
    assert not rec.failures, rec.failures
    assert_media_playlist_ok(text, f"{only}-only playlist")
    master = rec.live.get("master.m3u8").text
    assert hlscheck.check_master(master).ok, hlscheck.check_master(master)
    v = hlscheck.parse_master(master)[0][0]
    if only == "audio":
        assert v.get("CODECS") == "mp4a.40.2" and v.get("RESOLUTION") is None, master
    else:
        assert re.fullmatch(r"avc1\.64[0-9A-Fa-f]{4}", v.get("CODECS")), master
        assert v.get("RESOLUTION") == "1920x1080", master
    assert len(pl.complete_segments()) >= 2
    for s in pl.complete_segments():
        init = files[s.map_uri]
        doc = probe_media(init, files[s.uri])
        assert len(doc["streams"]) == 1, doc["streams"]
        check_av_streams(doc, video=only == "video", audio=only == "audio")
        doc = probe_media(init, *(files[p.uri] for p in s.parts))
        assert len(doc["streams"]) == 1
        assert packets_of(doc, only)


def test_target_duration_never_changes_with_a_long_keyframe_interval(ended):
    """
    RFC 8216bis 6.2.1: EXT-X-TARGETDURATION MUST NOT change. A publisher with
    a 4.5 s keyframe interval (hls.segment_target is 2 s) makes 4.5 s
    segments; the playlist must say so from its first version on.
    """
    rec = ended.longgop
    final_of(rec)
    playlists = [hlscheck.parse_media(t) for _, t in rec.snapshot()[0]]
    seen = [pl.target_duration for pl in playlists]
    problems = []
    for prev, cur in zip(playlists, playlists[1:]):
        rep = hlscheck.check_media(cur).extend(hlscheck.check_reload(prev, cur))
        if not rep.ok:
            problems.append(str(rep))
    assert len(set(seen)) == 1, \
        f"TARGETDURATION took the values {sorted(set(seen))} over {len(seen)} reloads"
    assert not problems, problems[:3]


# --- the checker itself ---------------------------------------------------------------------
#
# hlscheck.py must find what it claims to: a known-good LL-HLS playlist passes, and each of
# these faults, put into it, is reported.

GOOD = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init-ab12-1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T11:50:13.713Z
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-6.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-6.1.m4s"
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-6.2.m4s"
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-6.3.m4s"
#EXTINF:2.00000,
seg-ab12-6.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T11:50:15.713Z
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-7.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-7.1.m4s"
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-7.2.m4s"
#EXT-X-PART:DURATION=0.45000,URI="part-ab12-7.3.m4s"
#EXTINF:1.95000,
seg-ab12-7.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-24T11:50:17.663Z
#EXT-X-PART:DURATION=0.50000,URI="part-ab12-8.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.48000,URI="part-ab12-8.1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.2.m4s"
"""

MEDIA_FAULTS = {
    "no EXTM3U": (lambda t: t.replace("#EXTM3U\n", ""), "not #EXTM3U"),
    "part over PART-TARGET": (lambda t: t.replace("0.50000,URI=\"part-ab12-7.1", "0.52000,URI=\"part-ab12-7.1"),
                              "more than PART-TARGET"),
    "short part in the middle": (lambda t: t.replace("0.50000,URI=\"part-ab12-7.2", "0.40000,URI=\"part-ab12-7.2"),
                                 "less than 85%"),
    "parts do not add up": (lambda t: t.replace("#EXTINF:1.95000", "#EXTINF:1.90000"), "add up to"),
    "EXTINF over TARGETDURATION": (lambda t: t.replace("#EXTINF:1.95000", "#EXTINF:2.60000"),
                                   "rounds to more than TARGETDURATION"),
    "PART-HOLD-BACK under 3 parts": (lambda t: t.replace("PART-HOLD-BACK=1.500", "PART-HOLD-BACK=1.200"),
                                     "three times PART-TARGET"),
    "CAN-SKIP-UNTIL under 6 TD": (lambda t: t.replace("CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=8.0"), "six times"),
    "unquoted URI": (lambda t: t.replace('URI="part-ab12-7.1.m4s"', "URI=part-ab12-7.1.m4s"), "quoted-string"),
    "decimal comma": (lambda t: t.replace("DURATION=0.48000", "DURATION=0,48"), "DURATION"),
    "attribute twice": (lambda t: t.replace("INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.48",
                                            "INDEPENDENT=YES,INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.48"),
                        "appears twice"),
    "lowercase enum": (lambda t: t.replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=yes"), "not one of"),
    "hint with ENDLIST": (lambda t: t + "#EXT-X-ENDLIST\n", "EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST"),
    "two part hints": (lambda t: t + '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.3.m4s"\n', "PRELOAD-HINT tags of TYPE=PART"),
    "hint without TYPE": (lambda t: t.replace("PRELOAD-HINT:TYPE=PART,", "PRELOAD-HINT:"), "lacks its required TYPE"),
    "no hint while live": (lambda t: t.replace('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.2.m4s"\n', ""),
                           "no EXT-X-PRELOAD-HINT"),
    "MAP after the first part": (lambda t: t.replace('#EXT-X-PART:DURATION=0.50000,URI="part-ab12-8.0.m4s",INDEPENDENT=YES\n',
                                                     '#EXT-X-PART:DURATION=0.50000,URI="part-ab12-8.0.m4s",INDEPENDENT=YES\n'
                                                     '#EXT-X-MAP:URI="init-ab12-2.mp4"\n'), "after the first EXT-X-PART"),
    "no PART-INF": (lambda t: t.replace("#EXT-X-PART-INF:PART-TARGET=0.500\n", ""), "without EXT-X-PART-INF"),
    "first part not INDEPENDENT": (lambda t: t.replace('part-ab12-8.0.m4s",INDEPENDENT=YES', 'part-ab12-8.0.m4s"'),
                                   "not INDEPENDENT=YES"),
    "no MAP": (lambda t: t.replace('#EXT-X-MAP:URI="init-ab12-1.mp4"\n', ""), "no EXT-X-MAP"),
    "bad date": (lambda t: t.replace("2026-11-24T11:50:17.663Z", "24/11/2026 11:50:17"), "ISO 8601"),
    "date going back": (lambda t: t.replace("2026-11-24T11:50:17.663Z", "2026-11-24T11:50:15.000Z"),
                        "does not increase"),
    "TARGETDURATION twice": (lambda t: t.replace("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE"),
                             "appears 2 times"),
    "VERSION too low": (lambda t: t.replace("#EXT-X-VERSION:9", "#EXT-X-VERSION:3"), "needs 6"),
    "SKIP unasked": (lambda t: t.replace("#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"),
                     "did not ask for a delta update"),
    "media tag in a URI's place": (lambda t: t.replace("seg-ab12-7.m4s\n", "#EXT-X-BOGUS\nseg-ab12-7.m4s\n"), "unknown tag"),
    "URI without EXTINF": (lambda t: t.replace("#EXTINF:1.95000,\n", ""), "without an EXTINF"),
}


def test_hlscheck_passes_a_good_playlist():
    rep = hlscheck.check_media(GOOD)
    assert rep.ok, rep
    pl = hlscheck.parse_media(GOOD)
    assert [s.msn for s in pl.segments] == [0, 1, 2] and pl.next_part() == (2, 2)
    assert pl.hint() == "part-ab12-8.2.m4s"


@pytest.mark.parametrize("fault", list(MEDIA_FAULTS))
def test_hlscheck_finds(fault):
    mutate, expected = MEDIA_FAULTS[fault]
    bad = mutate(GOOD)
    assert bad != GOOD, "the fault was not put in"
    rep = hlscheck.check_media(bad)
    assert any(expected in e for e in rep.errors), f"{fault}: expected {expected!r} in\n{rep}"


def test_hlscheck_finds_reload_faults():
    later = GOOD.replace('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.2.m4s"\n',
                         '#EXT-X-PART:DURATION=0.50000,URI="part-ab12-8.2.m4s"\n'
                         '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.3.m4s"\n')
    assert hlscheck.check_reload(GOOD, later).ok, hlscheck.check_reload(GOOD, later)
    faults = {
        "TARGETDURATION changed": (later.replace("TARGETDURATION:2", "TARGETDURATION:3"), "MUST NOT change"),
        "hint not kept": (later.replace('URI="part-ab12-8.2.m4s"\n#EXT-X-PRE', 'URI="part-ab12-8.2b.m4s"\n#EXT-X-PRE'),
                          "MUST match"),
        "segment changed": (later.replace("#EXTINF:1.95000", "#EXTINF:1.96000"), "segment 1 changed"),
        "part changed": (later.replace("DURATION=0.48000", "DURATION=0.49000"), "parts changed"),
    }
    for name, (text, expected) in faults.items():
        rep = hlscheck.check_reload(GOOD, text)
        assert any(expected in e for e in rep.errors), f"{name}: expected {expected!r} in\n{rep}"
    rep = hlscheck.check_reload(GOOD.replace("MEDIA-SEQUENCE:0", "MEDIA-SEQUENCE:1"), GOOD)
    assert any("went back" in e for e in rep.errors), rep


def test_hlscheck_finds_delta_faults():
    segs = "".join(f"#EXTINF:2.00000,\nseg-ab12-{n}.m4s\n" for n in range(6))
    full = GOOD.replace('#EXT-X-MAP:URI="init-ab12-1.mp4"\n', '#EXT-X-MAP:URI="init-ab12-1.mp4"\n' + segs)
    assert hlscheck.check_media(full).ok, hlscheck.check_media(full)
    assert [s.msn for s in hlscheck.parse_media(full).segments] == list(range(9))
    # 17.43 s in all: segments 0-1 end more than 12 s before the end and are skipped
    head, tail = full.split('#EXT-X-MAP:URI="init-ab12-1.mp4"\n')
    keep = tail.split("seg-ab12-1.m4s\n", 1)[1]
    delta = head + '#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI="init-ab12-1.mp4"\n' + keep
    assert hlscheck.check_delta(delta, full).ok, hlscheck.check_delta(delta, full)
    wrong = delta.replace("SKIPPED-SEGMENTS=2", "SKIPPED-SEGMENTS=3")
    assert not hlscheck.check_delta(wrong, full).ok
    too_few = head + '#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n#EXT-X-MAP:URI="init-ab12-1.mp4"\n' + \
        tail.split("seg-ab12-0.m4s\n", 1)[1]
    rep = hlscheck.check_delta(too_few, full)
    assert any("not skipped" in e for e in rep.errors), rep
    hint = '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-ab12-8.2.m4s"\n'
    ended = full.replace(hint, "") + "#EXT-X-ENDLIST\n"
    rep = hlscheck.check_delta(delta.replace(hint, "") + "#EXT-X-ENDLIST\n", ended)
    assert any("ENDLIST" in e for e in rep.errors), rep


def test_hlscheck_master():
    good = ('#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=4425976,'
            'AVERAGE-BANDWIDTH=4415210,CODECS="avc1.64002a,mp4a.40.2",RESOLUTION=1920x1080,FRAME-RATE=60.000\n'
            'index.m3u8\n')
    assert hlscheck.check_master(good).ok, hlscheck.check_master(good)
    for bad, expected in (
        (good.replace("AVERAGE-BANDWIDTH=4415210", "AVERAGE-BANDWIDTH=5415210"), "more than the peak"),
        (good.replace("BANDWIDTH=4425976,", ""), "without BANDWIDTH"),
        (good.replace("1920x1080", "1920*1080"), "decimal-resolution"),
        (good.replace("60.000", "60.0001"), "three decimal places"),
        (good.replace("index.m3u8\n", ""), "without its URI"),
        (good + "#EXT-X-TARGETDURATION:2\n", "media playlist tag"),
        (good.replace('"avc1.64002a,mp4a.40.2"', "avc1.64002a"), "quoted-string"),
    ):
        rep = hlscheck.check_master(bad)
        assert any(expected in e for e in rep.errors), f"expected {expected!r} in\n{rep}"
