"""
Helpers for the end-to-end tests: starting and stopping a hearth server, a
raw HTTP/1.1 connection for the cases a client library would tidy up
(malformed requests, pipelining, slow clients), and a "good client" thread
that keeps asking /healthz while a test misbehaves on another connection.

Everything binds or connects to 127.0.0.1 only, and every wait has a deadline.
"""
import hashlib
import os
import pathlib
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time
import types
import uuid

import requests

HOST = "127.0.0.1"
START_DEADLINE = 10.0  # seconds for a server to answer /healthz
STOP_DEADLINE = 15.0  # seconds for a server to exit after SIGTERM


def clean_env():
    """The environment without any Hearth setting the caller may have exported."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HEARTH_") and k != "DB_URL"
    }
    env.setdefault("PATH", "/usr/bin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# --- static files ---------------------------------------------------------

# name -> (bytes, acceptable media types). Where registries disagree the
# common alternatives are all accepted; the point is that the type is right.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
STATIC_TYPES = {
    "index.html": (b"<!doctype html><title>hearth test</title><p>INDEX-ROOT</p>\n", {"text/html"}),
    "style.css": (b"body { color: #333 }\n", {"text/css"}),
    "app.js": (b"console.log('hearth');\n", {"text/javascript"}),
    "mod.mjs": (b"export const x = 1;\n", {"text/javascript"}),
    "data.json": (b'{"hello": "world"}\n', {"application/json"}),
    "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>\n', {"image/svg+xml"}),
    "img.png": (PNG, {"image/png"}),
    "photo.jpg": (JPEG, {"image/jpeg"}),
    "pic.webp": (b"RIFF\x00\x00\x00\x00WEBPVP8 ", {"image/webp"}),
    "font.woff2": (b"wOF2" + b"\x00" * 16, {"font/woff2"}),
    "mod.wasm": (b"\x00asm\x01\x00\x00\x00", {"application/wasm"}),
    "live.m3u8": (
        b"#EXTM3U\n#EXT-X-VERSION:3\n",
        {"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl"},
    ),
    "video.mp4": (b"\x00\x00\x00\x18ftypisom", {"video/mp4"}),
    "seg.m4s": (b"\x00\x00\x00\x18styp", {"video/iso.segment", "video/mp4"}),
    "notes.txt": (b"plain text\n", {"text/plain"}),
}


def make_static_tree(base):
    """
    base/static/      the static_dir, with one file per content type, a
                      subdirectory with its own index.html and a binary blob
    base/secret.txt   next to static_dir: must never be served
    base/static-private/secret.txt
                      a sibling whose name starts with static_dir's: catches a
                      containment check done with a string prefix
    """
    base = pathlib.Path(base)
    static = base / "static"
    (static / "sub").mkdir(parents=True)
    files = {}
    for name, (data, _) in STATIC_TYPES.items():
        (static / name).write_bytes(data)
        files[name] = data
    files["sub/index.html"] = b"<!doctype html><p>INDEX-SUB</p>\n"
    files["a.txt"] = b"first file\n"
    files["b.txt"] = b"second file\n"
    files["hello world.txt"] = b"a name with a space\n"
    rnd = random.Random(1935)
    files["blob.bin"] = bytes(rnd.getrandbits(8) for _ in range(1024 * 1024 + 3))
    files["small.bin"] = bytes(rnd.getrandbits(8) for _ in range(4096))
    for name, data in files.items():
        (static / name).write_bytes(data)

    secret = ("SECRET-" + uuid.uuid4().hex).encode()
    (base / "secret.txt").write_bytes(secret + b"\n")
    (base / "static-private").mkdir()
    (base / "static-private" / "secret.txt").write_bytes(secret + b"\n")
    return types.SimpleNamespace(static_dir=static, files=files, secret=secret, base=base)


# --- the server -------------------------------------------------------------


class Server:
    """A `hearth serve` subprocess with its own ports and data_dir."""

    def __init__(self, bin_path, base, static_dir, env):
        self.bin = bin_path
        self.base = pathlib.Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base / "data"
        self.static_dir = pathlib.Path(static_dir)
        self.overrides = dict(env)
        self.proc = None
        self.port = None
        self.rtmp_port = None
        self.c2s_port = None
        self.s2s_port = None
        self.stderr_path = self.base / "stderr.log"
        self.stdout_path = self.base / "stdout.log"
        self.returncode = None
        self._files = []

    @property
    def url(self):
        return f"http://{HOST}:{self.port}"

    def env(self):
        e = clean_env()
        e.update(
            {
                "HEARTH_HTTP_LISTEN": f"{HOST}:{self.port}",
                "HEARTH_RTMP_LISTEN": f"{HOST}:{self.rtmp_port}",
                "HEARTH_XMPP_C2S_LISTEN": f"{HOST}:{self.c2s_port}",
                "HEARTH_XMPP_S2S_LISTEN": f"{HOST}:{self.s2s_port}",
                "HEARTH_STORAGE_DATA_DIR": str(self.data_dir),
                "HEARTH_HTTP_STATIC_DIR": str(self.static_dir),
                "HEARTH_SITE_PUBLIC_URL": f"http://{HOST}:{self.port}",
                "HEARTH_HTTP_HEADER_TIMEOUT": "1s",
                "HEARTH_HTTP_IDLE_TIMEOUT": "2s",
                "HEARTH_HTTP_SHUTDOWN_TIMEOUT": "5s",
                "HEARTH_DEBUG_ECHO": "true",
                "HEARTH_SERVER_WORKERS": "2",
            }
        )
        for k, v in self.overrides.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def start(self, wait=True):
        for attempt in range(3):
            self.port = free_port()
            self.rtmp_port = free_port()
            self.c2s_port = free_port()
            self.s2s_port = free_port()
            out = open(self.stdout_path, "ab")
            err = open(self.stderr_path, "ab")
            self._files += [out, err]
            self.proc = subprocess.Popen(
                [self.bin, "serve"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env(),
                cwd=str(self.base),
                start_new_session=True,
            )
            if not wait:
                return self
            state = self.wait_ready()
            if state == "ready":
                return self
            # Another process may have taken the port between free_port() and
            # the bind: try again with new ports; anything else is a failure.
            self.stop()
            if "in use" not in self.log().lower():
                break
        raise AssertionError(
            f"hearth serve did not answer /healthz within {START_DEADLINE}s "
            f"(exit {self.returncode}):\n{self.log_tail()}"
        )

    def wait_ready(self):
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            try:
                r = requests.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return "ready"
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return "timeout"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_DEADLINE):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self):
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_DEADLINE)
        self.returncode = self.proc.returncode
        for f in self._files:
            f.close()
        self._files = []
        return self.returncode

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_for_log(self, pattern, timeout=5.0, count=1):
        """Wait until `pattern` (a regex) matches at least `count` lines of stderr."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log().splitlines() if rx.search(l)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def raw(self, timeout=5.0):
        return RawConn(self.port, timeout=timeout)


# --- a raw HTTP connection --------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


class RawConn:
    """One TCP connection; bytes in, parsed responses out."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, but the peer may already have closed: returns False then."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def readable(self, timeout):
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError("response head too long")
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def read_response(self, head=False):
        """Read one response; `head`: it answers a HEAD request (no body)."""
        raw = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")
        m = re.match(r"(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        version, status, reason = m.group(1), int(m.group(2)), m.group(3)
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = Response(version, status, reason, headers, b"")
        if head or status in (204, 304) or 100 <= status < 200:
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            body = b""
            while True:
                size_line = self._read_until(b"\r\n").decode("latin-1")
                size = int(size_line.split(";")[0].strip(), 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self._read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self._read_exact(size)
                assert self._read_exact(2) == b"\r\n"
            resp.body = body
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            resp.body = self._read_to_eof()
        return resp

    def request(self, method, path, headers=None, body=b"", version="HTTP/1.1"):
        h = {"Host": f"{HOST}"}
        h.update(headers or {})
        if body and "Content-Length" not in h and "Transfer-Encoding" not in h:
            h["Content-Length"] = str(len(body))
        head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.send(head.encode("latin-1") + body)
        return self.read_response(head=(method == "HEAD"))

    def wait_closed(self, timeout):
        """
        True when the server closes the connection within `timeout` seconds.
        Bytes that arrive meanwhile are kept in self.buf.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk


# --- a well-behaved client running beside a misbehaving one -----------------


class GoodClient:
    """
    `with GoodClient(server):` runs a thread that keeps doing GET /healthz on
    fresh connections. On exit it makes sure a few requests succeeded and
    none failed: one bad client must not stall the others.
    """

    def __init__(self, server, min_ok=3):
        self.server = server
        self.min_ok = min_ok
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        url = self.server.url + "/healthz"
        while not self._stop.is_set():
            try:
                r = requests.get(url, timeout=5)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]!r}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        # Give the good client the chance to make a few requests after the
        # misbehaviour too, then stop it.
        start_ok = self.ok
        deadline = time.monotonic() + 10
        while (self.ok < self.min_ok or self.ok == start_ok) and not self.failures:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(timeout=10)
        if exc_type is None:
            assert not self.failures, (
                f"a good client was not served while another misbehaved: {self.failures[:5]}\n"
                + self.server.log_tail()
            )
            assert self.ok >= self.min_ok, f"only {self.ok} good requests were served"
        return False
