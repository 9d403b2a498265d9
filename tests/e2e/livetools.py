"""
Helpers for the live-pipeline tests: the test clip, ffmpeg publishers,
channels made with the CLI, fetching what /live/<slug>/ serves, and ffprobe.

Every process started here is a child of the test run, started in its own
session, and stopped by whoever started it (the fixtures in conftest.py stop
what a test left running). Everything talks to 127.0.0.1 only; every wait
has a deadline.
"""
import json
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import urllib.parse

import requests

import hlscheck
from hearthtest import HOST, clean_env

FFMPEG = "/usr/bin/ffmpeg"
FFPROBE = "/usr/bin/ffprobe"
PASSWORD = "correct horse battery staple"

# The test clip: what the issue asks the pipeline to carry.
CLIP_SECONDS = 6
CLIP_FPS = 60
CLIP_SIZE = (1920, 1080)
CLIP_GOP = 120  # frames: a keyframe every 2 s
CLIP_RATE = 48000


def make_clip(path, seconds=CLIP_SECONDS, size=CLIP_SIZE, fps=CLIP_FPS, gop=CLIP_GOP,
              bitrate="4M", timeout=180):
    """
    testsrc2 + a sine, H.264 High (CABAC, B-frames, 8x8 transform: avc1.64xxxx;
    the ultrafast preset with those switched back on costs half of veryfast),
    a keyframe every `gop` frames and no others, AAC-LC 48 kHz stereo, in FLV
    (what ffmpeg will publish with -c copy).
    """
    w, h = size
    cmd = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={CLIP_RATE}",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast",
        "-x264-params", "cabac=1:bframes=2:b-adapt=0:8x8dct=1",
        "-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
        "-c:a", "aac", "-ar", str(CLIP_RATE), "-ac", "2", "-b:a", "128k",
        "-f", "flv", str(path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"ffmpeg could not make the test clip: {res.stderr[-2000:]}")
    return pathlib.Path(path)


# --- channels ---------------------------------------------------------------


def cli(bin_path, data_dir, *args, input=None, timeout=30):
    env = clean_env()
    env["HEARTH_STORAGE_DATA_DIR"] = str(data_dir)
    res = subprocess.run([bin_path, *args], input=input, env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=str(data_dir.parent))
    if res.returncode != 0:
        raise AssertionError(f"hearth {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return res


def add_user(bin_path, data_dir, name):
    data_dir.mkdir(parents=True, exist_ok=True)
    cli(bin_path, data_dir, "user", "add", name, "--password-stdin", input=PASSWORD + "\n")


def add_channel(bin_path, data_dir, owner, title):
    """Returns the channel as `hearth channel add --json` prints it (slug, stream_key, ...)."""
    res = cli(bin_path, data_dir, "channel", "add", "--owner", owner, "--title", title, "--json")
    ch = json.loads(res.stdout)
    assert ch["slug"] and ch["stream_key"], ch
    return ch


# --- publishers ---------------------------------------------------------------


class Publisher:
    """`ffmpeg -re -stream_loop -1 -i CLIP -c copy -f flv rtmp://...` as a child process."""

    def __init__(self, clip, port, key, app="live", loop=True, extra_out=(), readrate=None,
                 log_path=None):
        self.url = f"rtmp://{HOST}:{port}/{app}/{key}"
        self.log_path = pathlib.Path(log_path or tempfile.mktemp(prefix="ffmpeg-", suffix=".log"))
        rate = ["-readrate", str(readrate)] if readrate else ["-re"]
        cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning", *rate]
        if loop:
            cmd += ["-stream_loop", "-1"]
        cmd += ["-i", str(clip), "-c", "copy", *extra_out, "-f", "flv", self.url]
        self.cmd = cmd
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        """The exit status, or None if it is still running after `timeout` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        """A clean stop (ffmpeg unpublishes on SIGINT); SIGKILL if that does not work."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                self.kill()
        self._close_log()
        return self.proc.returncode

    def kill(self):
        """SIGKILL: the publisher vanishes without a word."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self._close_log()
        return self.proc.returncode

    def _close_log(self):
        if not self._log.closed:
            self._log.close()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Publishers:
    """Starts publishers and stops every one of them in close()."""

    def __init__(self, clip, server):
        self.clip = clip
        self.server = server
        self.started = []
        self.closed = False

    def __call__(self, key, clip=None, **kw):
        if self.closed:  # a scenario thread still running after teardown
            raise AssertionError("the publishers are closed")
        kw.setdefault("log_path", self.server.base / f"ffmpeg-{len(self.started)}.log")
        p = Publisher(clip or self.clip, self.server.rtmp_port, key, **kw)
        self.started.append(p)
        return p

    def close(self):
        self.closed = True
        for p in self.started:
            p.kill()


# --- fetching ------------------------------------------------------------------


class Live:
    """What the server serves for one channel under /live/<slug>/."""

    def __init__(self, server, slug):
        self.server = server
        self.slug = slug
        self.base = f"{server.url}/live/{slug}/"
        self.http = requests.Session()

    def url(self, name):
        return urllib.parse.urljoin(self.base, name)

    def get(self, name, timeout=10, **kw):
        return self.http.get(self.url(name), timeout=timeout, **kw)

    def fetch(self, name, timeout=10):
        r = self.get(name, timeout=timeout)
        assert r.status_code == 200, f"GET {name}: {r.status_code} {r.text[:300]!r}"
        assert r.content, f"GET {name}: empty body"
        return r.content

    def playlist(self, query="", timeout=10):
        """(text, parsed) of index.m3u8[?query]; asserts 200."""
        r = self.get("index.m3u8" + (("?" + query) if query else ""), timeout=timeout)
        assert r.status_code == 200, f"index.m3u8?{query}: {r.status_code} {r.text[:300]!r}"
        return r.text, hlscheck.parse_media(r.text)

    def wait_playlist(self, pred, timeout=20.0, what="the playlist"):
        """Reload (plainly, not blocking) until pred(parsed) holds; returns (text, parsed)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            r = self.get("index.m3u8")
            if r.status_code == 200:
                last = r.text
                pl = hlscheck.parse_media(r.text)
                if pred(pl):
                    return r.text, pl
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not come within {timeout}s; last playlist:\n{last}\n"
                    f"server log:\n{self.server.log_tail(30)}")
            time.sleep(0.1)

    def wait_live(self, timeout=20.0):
        return self.wait_playlist(lambda pl: pl.parts_count() > 0, timeout, "a first part")


def complete_segments(n):
    return lambda pl: len(pl.complete_segments()) >= n


# --- ffprobe ---------------------------------------------------------------------


def ffprobe(data, *, packets=True, tmpdir=None, name="probe.mp4"):
    """ffprobe's JSON for bytes (init + media); raises with ffprobe's stderr on failure."""
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        path = pathlib.Path(d) / name
        path.write_bytes(data)
        cmd = [FFPROBE, "-hide_banner", "-loglevel", "error", "-of", "json", "-show_streams",
               "-show_format"]
        if packets:
            cmd += ["-show_packets"]
        res = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise AssertionError(f"ffprobe failed: {res.stderr[-2000:]}")
    doc = json.loads(res.stdout)
    doc["stderr"] = res.stderr
    return doc


def stream_of(doc, kind):
    ss = [s for s in doc.get("streams", []) if s.get("codec_type") == kind]
    return ss[0] if ss else None


def packets_of(doc, kind):
    s = stream_of(doc, kind)
    if s is None:
        return []
    return [p for p in doc.get("packets", []) if p.get("stream_index") == s["index"]]


def ratio(s):
    n, _, d = s.partition("/")
    return float(n) / float(d or 1) if float(d or 1) else 0.0


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def log_lines(server, pattern):
    rx = re.compile(pattern)
    return [l for l in server.log().splitlines() if rx.search(l)]


# --- a server with channels and publishers -----------------------------------------


class LiveServer:
    """
    A `hearth serve` (hearthtest.Server) with a user who owns channels, and
    the publishers started against it. close() stops the publishers, then
    the server.
    """

    OWNER = "streamer"

    def __init__(self, bin_path, base, clip, env=None):
        from hearthtest import Server, make_static_tree

        base = pathlib.Path(base)
        tree = make_static_tree(base)
        e = {"HEARTH_HTTP_IDLE_TIMEOUT": "30s", "HEARTH_HTTP_HEADER_TIMEOUT": "5s"}
        e.update(env or {})
        self.srv = Server(bin_path, base / "srv", static_dir=tree.static_dir, env=e)
        self.bin = bin_path
        self.clip = clip
        self.base = self.srv.base
        self.publishers = Publishers(clip, self.srv)
        add_user(bin_path, self.srv.data_dir, self.OWNER)
        self._n = 0
        self.srv.start()

    def __getattr__(self, name):  # url, port, rtmp_port, log(), log_tail(), alive() ...
        if name == "srv":
            raise AttributeError(name)
        return getattr(self.srv, name)

    def channel(self, title=None):
        self._n += 1
        return add_channel(self.bin, self.srv.data_dir, self.OWNER, title or f"Live {self._n}")

    def publish(self, key, **kw):
        return self.publishers(key, **kw)

    def live(self, slug):
        return Live(self.srv, slug)

    def healthz(self):
        r = requests.get(self.srv.url + "/healthz", timeout=5)
        return r.status_code == 200 and r.json().get("status") == "ok"

    def close(self):
        try:
            self.publishers.close()
        finally:
            self.srv.stop()
