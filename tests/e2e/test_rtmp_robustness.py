"""
RTMP ingest against misbehaving clients, each while a good stream flows on
another channel: its playlist must keep advancing (new parts, fetchable, in
the same session with no discontinuity) and /healthz must stay ok.

  - a bad stream key (ffmpeg fails; a raw client gets NetStream.Publish.BadName);
  - a second publisher on a live channel (refused; the first carries on);
  - garbage on the RTMP port: random bytes, a valid C0 then junk, an HTTP
    request, a malformed AMF0 command;
  - a truncated handshake (C0 + half of C1, then close) and a stalled one
    (C0 + C1, then nothing: closed after rtmp.handshake_timeout = 1 s);
  - a publisher that vanishes in the middle of a chunk (a raw session that
    sends half a video message and closes), and one killed with SIGKILL: the
    stream goes into hls.reconnect_grace, the server stays up.

Timings are not asserted; every wait has a deadline.
"""
import os
import re
import socket
import time

import pytest

import hlscheck
from livetools import LiveServer, log_lines, wait_until
from rtmpclient import RtmpClient, flv_tags

HOST = "127.0.0.1"


class GoodStream:
    """The channel that must keep flowing whatever happens on other connections."""

    def __init__(self, ls, live):
        self.ls = ls
        self.live = live
        text, self.pl = live.wait_playlist(lambda pl: pl.parts_count() >= 2, 30, "the good stream")
        self.sid = re.search(r"part-([0-9a-f]+)-", text).group(1)

    def assert_flowing(self, parts=2):
        """`parts` new parts arrive (blocking reloads), are fetchable, in the same session."""
        assert self.ls.alive(), "the server died:\n" + self.ls.log_tail()
        for _ in range(parts):
            msn, part = self.pl.next_part()
            r = self.live.get(f"index.m3u8?_HLS_msn={msn}&_HLS_part={part}", timeout=15)
            assert r.status_code == 200, f"the good stream stalled: {r.status_code} {r.text[:200]}"
            pl = hlscheck.parse_media(r.text)
            rep = hlscheck.check_reload(self.pl, pl)
            assert rep.ok, rep
            listed = {(m, i): p.uri for m, i, p in pl.parts()}
            assert (msn, part) in listed, f"the answer does not list part {msn}.{part}:\n{r.text}"
            uri = listed[(msn, part)]
            assert f"-{self.sid}-" in uri, f"the good stream restarted: {uri}"
            assert self.live.get(uri).status_code == 200
            assert "#EXT-X-DISCONTINUITY\n" not in r.text and not pl.endlist, r.text
            self.pl = pl
        assert self.ls.healthz(), "/healthz is not ok"


@pytest.fixture(scope="module")
def rig(bin_path, live_clip, tmp_path_factory):
    ls = LiveServer(bin_path, tmp_path_factory.mktemp("robust"), live_clip,
                    {"HEARTH_RTMP_HANDSHAKE_TIMEOUT": "1s", "HEARTH_HLS_RECONNECT_GRACE": "30s"})
    try:
        good = ls.channel("Good")
        ls.good_channel = good
        ls.good_publisher = ls.publish(good["stream_key"])
        ls.good = GoodStream(ls, ls.live(good["slug"]))
        ls.tags = flv_tags(live_clip)
        yield ls
    finally:
        ls.close()


@pytest.fixture
def good(rig):
    assert rig.alive(), "server died before this test:\n" + rig.log_tail()
    yield rig.good
    rig.good.assert_flowing(parts=1)
    assert rig.good_publisher.alive(), "the good publisher stopped:\n" + rig.good_publisher.log()


def lines_for(ls, sock_port, pattern=""):
    """Server log lines about the connection from 127.0.0.1:<sock_port>."""
    return log_lines(ls, rf"rtmp 127\.0\.0\.1:{sock_port}\b.*{pattern}")


def wait_log(ls, sock_port, pattern, timeout=10):
    return wait_until(lambda: lines_for(ls, sock_port, pattern), timeout,
                      f"a log line for 127.0.0.1:{sock_port} matching {pattern!r}:\n{ls.log_tail(20)}")


def raw_connect(ls):
    s = socket.create_connection((HOST, ls.rtmp_port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.getsockname()[1]


def closed_by_server(s, timeout):
    """True when the server closes within timeout (whatever it sent first is read and dropped)."""
    deadline = time.monotonic() + timeout
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, OSError):
            return True
    return False


# --- stream keys -------------------------------------------------------------------------


def test_bad_stream_key_with_ffmpeg(rig, good):
    pub = rig.publish("not-a-stream-key", loop=False)
    code = pub.wait(20)
    assert code is not None, "ffmpeg kept publishing with a bad stream key"
    assert code != 0, pub.log()
    assert log_lines(rig, r"publish refused: unknown stream key"), rig.log_tail()


def test_bad_stream_key_gets_badname(rig, good):
    with RtmpClient(rig.rtmp_port) as c:
        c.handshake()
        c.connect("live")
        c.create_stream()
        status = c.publish("wrong-key")
        assert status.get("code") == "NetStream.Publish.BadName", status
        assert status.get("level") == "error", status
        assert c.wait_closed(10), "the connection stayed open after BadName"
    assert log_lines(rig, r"publish refused: unknown stream key")


def test_duplicate_publisher_is_refused_and_the_first_carries_on(rig, good):
    key = rig.good_channel["stream_key"]
    second = rig.publish(key, loop=False)
    code = second.wait(20)
    assert code is not None and code != 0, f"the second publisher was not refused:\n{second.log()}"
    assert log_lines(rig, rf"publish refused: channel {rig.good_channel['slug']} is already live")
    with RtmpClient(rig.rtmp_port) as c:
        c.handshake()
        c.connect("stream")  # the other app name refuses it the same way
        c.create_stream()
        status = c.publish(key)
        assert status.get("code") == "NetStream.Publish.BadName", status
        assert c.wait_closed(10)
    assert rig.good_publisher.alive()
    # the good stream is the same session: no discontinuity, same sid (the `good` fixture checks)


# --- garbage on the port -----------------------------------------------------------------------


def garbage_random(s):
    rnd = bytearray(os.urandom(4096))
    rnd[0] = 0x47  # not 3 (RTMP), 6 or 8 (RTMPE)
    s.sendall(bytes(rnd))
    return r"closed: C0 is not RTMP version 3"


def garbage_c0_then_junk(s):
    # a valid C0, 3072 random bytes taken as C1 and C2, then a chunk that
    # opens chunk stream 63 with a type 3 header, which no stream may do
    s.sendall(b"\x03" + os.urandom(3072) + b"\xff" + os.urandom(1000))
    return r"closed: .*csid 63 starts with a type 3 header"


def garbage_http(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return r"closed: C0 is not RTMP version 3"


GARBAGE = {"random bytes": garbage_random, "C0 then junk": garbage_c0_then_junk,
           "an HTTP request": garbage_http}


@pytest.mark.parametrize("what", list(GARBAGE))
def test_garbage_is_turned_away(rig, good, what):
    s, port = raw_connect(rig)
    try:
        why = GARBAGE[what](s)
        assert closed_by_server(s, 10), f"{what}: the server kept the connection open"
    finally:
        s.close()
    wait_log(rig, port, why)


def test_malformed_amf_command_closes_that_connection(rig, good):
    with RtmpClient(rig.rtmp_port) as c:
        port = c.sock.getsockname()[1]
        c.handshake()
        # an AMF0 command: a string marker, then a length longer than the message
        c.send_message(3, 20, 0, 0, b"\x02\x00\x07conn")
        assert c.wait_closed(10), "the server kept a connection that sent a broken command"
    wait_log(rig, port, r"closed: malformed AMF0 command")


# --- handshakes ------------------------------------------------------------------------------


def test_truncated_handshake(rig, good):
    s, port = raw_connect(rig)
    s.sendall(b"\x03" + os.urandom(768))  # C0 and half of C1
    time.sleep(0.2)
    s.close()
    wait_log(rig, port, r"closed: client disconnected")


def test_stalled_handshake_times_out(rig, good):
    s, port = raw_connect(rig)
    try:
        s.sendall(b"\x03" + bytes(8) + os.urandom(1528))  # C0 C1, and never C2
        got = b""
        s.settimeout(10)
        while len(got) < 1 + 1536 + 1536:
            chunk = s.recv(65536)
            assert chunk, "closed before S0 S1 S2"
            got += chunk
        assert got[0] == 3
        # rtmp.handshake_timeout is 1 s here; the check runs once a second
        assert closed_by_server(s, 10), "a handshake that stalled was not timed out"
    finally:
        s.close()
    wait_log(rig, port, r"handshake not completed within rtmp\.handshake_timeout")


# --- publishers that vanish ------------------------------------------------------------------------


def publish_raw(rig, key, seconds=2.5):
    """A raw session publishing the clip's first `seconds`; returns (client, tags sent)."""
    c = RtmpClient(rig.rtmp_port)
    c.handshake()
    c.connect("live")
    c.create_stream()
    status = c.publish(key)
    assert status.get("code") == "NetStream.Publish.Start", status
    sent = 0
    for t in rig.tags:
        if t.timestamp > seconds * 1000:
            break
        c.send_tag(t)
        sent += 1
    return c, sent


@pytest.mark.parametrize("how", ["FIN", "RST"])
def test_publisher_vanishes_mid_chunk(rig, good, how):
    """A raw publisher sends half of a video message, then its socket closes (FIN) or is
    reset (RST): that session ends, the stream waits out the grace, nothing else notices."""
    ch = rig.channel(f"Vanishing {how}")
    lv = rig.live(ch["slug"])
    c, sent = publish_raw(rig, ch["stream_key"])
    port = c.sock.getsockname()[1]
    try:
        _, pl = lv.wait_playlist(lambda pl: pl.parts_count() >= 2, 20, "the raw publisher's parts")
        big = next(t for t in rig.tags[sent:] if t.is_video and len(t.data) > 20000)
        c.send_partial(big, 9000)  # its header, two 4096-byte chunks and a few bytes of a third
        time.sleep(0.2)
    finally:
        c.abort() if how == "RST" else c.close()
    wait_log(rig, port, r"closed: (publisher disconnected|connection reset by peer)")
    wait_log(rig, port, r"publish ended")
    # the stream waits out the grace: still served, not ended
    text, pl2 = lv.playlist()
    assert not pl2.endlist, text
    assert pl2.segments[0].msn == pl.segments[0].msn
    rep = hlscheck.check_reload(pl, pl2)
    assert rep.ok, rep
    assert rig.healthz()


def test_publisher_killed(rig, good):
    ch = rig.channel("Killed")
    lv = rig.live(ch["slug"])
    pub = rig.publish(ch["stream_key"])
    lv.wait_playlist(lambda pl: pl.parts_count() >= 2, 20, "the publisher's parts")
    gone = r"closed: (publisher disconnected|connection reset by peer)"
    n = len(log_lines(rig, gone))
    pub.kill()
    wait_until(lambda: len(log_lines(rig, gone)) > n, 10,
               "the server to notice the killed publisher")
    text, pl = lv.playlist()
    assert not pl.endlist, text
    assert rig.healthz()


def test_many_bad_clients_at_once(rig, good):
    """All of the above at the same time, twice over: the good stream does not notice."""
    garbage, stalled = [], []
    try:
        for _ in range(2):
            for fn in GARBAGE.values():
                s, _ = raw_connect(rig)
                fn(s)
                garbage.append(s)
            s, _ = raw_connect(rig)
            s.sendall(b"\x03" + os.urandom(1536))
            stalled.append(s)
        good.assert_flowing(parts=2)
        for s in garbage:
            assert closed_by_server(s, 10), "a garbage connection was kept open"
    finally:
        for s in garbage + stalled:
            s.close()
