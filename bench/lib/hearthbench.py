"""
Shared helpers for the live-pipeline benchmarks (bench/ingest,
bench/availability, bench/viewers): process bookkeeping and clean-up, the
cached test file, starting Hearth (with its own data directory, users and
channels) and nginx with the RTMP module (configured as OSP ships it), CPU
and memory readings from /proc, and a small HLS playlist parser.

Everything listens on 127.0.0.1 only. Every process started here is put in
its own session and stopped, with its process group, at exit and on
SIGINT/SIGTERM/SIGHUP; the temporary directory goes with them.
"""
import atexit
import json
import os
import pathlib
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
REPO = pathlib.Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

NAME = "bench"
_procs = []
_tmpdirs = []
_cleanups = []
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy


# --- process bookkeeping -------------------------------------------------------


def setup(name):
    """Call first: names the script in messages and installs the clean-up."""
    global NAME
    NAME = name
    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    raise_nofile()


def _on_signal(signum, frame):
    cleanup()
    os._exit(128 + signum)


def at_cleanup(fn):
    _cleanups.append(fn)


def cleanup():
    # Only the process that installed it cleans up (not a forked helper).
    if os.getpid() != _owner_pid:
        return
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception:
            pass
    for p in reversed(_procs):
        stop(p)
    _procs.clear()
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)


_owner_pid = os.getpid()


def die(msg):
    print(f"{NAME}: {msg}", file=sys.stderr)
    sys.exit(1)


def warn(msg):
    print(f"{NAME}: warning: {msg}", file=sys.stderr)


def raise_nofile(want=65536):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mktemp():
    d = tempfile.mkdtemp(prefix=f"hearth-{NAME.replace('/', '-')}-")
    # nginx started as root runs its workers as nobody: they must get in.
    os.chmod(d, 0o755)
    _tmpdirs.append(d)
    return pathlib.Path(d)


def spawn(cmd, log, env=None, cwd=None):
    """Start cmd in its own session (so its whole group can be stopped)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                         start_new_session=True)
    if log:
        out.close()
    _procs.append(p)
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of the group (a child that outlived its parent).
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if p in _procs:
        _procs.remove(p)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def need(*tools):
    for tool in tools:
        if not (shutil.which(tool) or os.access(f"/usr/sbin/{tool}", os.X_OK)):
            die(f"{tool} is not installed (scripts/deps bench)")


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


# --- HTTP --------------------------------------------------------------------


def http_get(url, timeout=2):
    """(status, body bytes); status 0 when nothing answered."""
    try:
        with _opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_http(url, proc, what, deadline_s=15, want=200):
    deadline = time.monotonic() + deadline_s
    status = 0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            die(f"{what} exited with {proc.returncode} before answering {url}")
        status, body = http_get(url, timeout=1)
        if status == want:
            return body
        time.sleep(0.05)
    die(f"{what} did not answer {url} with {want} within {deadline_s}s (last status {status})")


def wait_port(port, proc, what, deadline_s=15):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    die(f"{what} is not listening on {HOST}:{port} after {deadline_s}s")


# --- /proc readings --------------------------------------------------------------


def children(pid):
    """All descendants of pid (nginx: its worker and cache manager)."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in pathlib.Path(f"/proc/{p}/task").iterdir():
                try:
                    kids = [int(x) for x in (task / "children").read_text().split()]
                except (FileNotFoundError, ProcessLookupError):
                    kids = []
                out += kids
                todo += kids
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def cpu_seconds(pids):
    """utime + stime, all threads, summed over pids."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def cpu_detail(pids):
    """(user s, system s, minor page faults), summed over pids."""
    u = k = flt = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        flt += int(fields[7])
        u += int(fields[11])
        k += int(fields[12])
    return u / CLK_TCK, k / CLK_TCK, flt


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class MemSampler:
    """Samples, every interval, the sum of VmRSS and of Pss over pids_fn()."""

    def __init__(self, pids_fn, interval=0.25):
        self.pids_fn = pids_fn
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids = self.pids_fn()
            self.peak_rss = max(self.peak_rss, sum(status_kib(p, "VmRSS") for p in pids))
            self.peak_pss = max(self.peak_pss, sum(pss_kib(p) for p in pids))
            self._stop.wait(self.interval)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join()


def machine_cpu():
    """(busy, total) CPU-seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                m = re.search(r"mem (\d+)", line)
                return int(m.group(1)) if m else 0
    return 0


def tcp_mem_limits():
    try:
        return [int(x) for x in pathlib.Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()]
    except (OSError, ValueError):
        return [0, 0, 0]


class TcpMemSampler(MemSampler):
    """Peak of the kernel's TCP buffer memory (pages), every interval."""

    def __init__(self, interval=0.25):
        super().__init__(None, interval)
        self.peak = 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tcp_mem_pages())
            self._stop.wait(self.interval)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def busy_others(exclude=()):
    """Processes, not ours, that used a noticeable share of a CPU over 1 s."""
    def snapshot():
        out = {}
        for d in pathlib.Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                s = (d / "stat").read_text()
                f = s[s.rindex(")") + 2 :].split()
                out[int(d.name)] = (s[s.index("(") + 1 : s.rindex(")")], int(f[11]) + int(f[12]))
            except (OSError, ValueError):
                pass
        return out

    a = snapshot()
    time.sleep(1)
    b = snapshot()
    busy = []
    for pid, (name, t) in b.items():
        if pid in exclude or pid == os.getpid() or pid not in a:
            continue
        share = (t - a[pid][1]) / CLK_TCK
        if share >= 0.05:
            busy.append((share, name, pid))
    return sorted(busy, reverse=True)


def report_machine():
    busy = busy_others()
    total = sum(s for s, _, _ in busy)
    line = f"{os.cpu_count()} CPUs, load average {loadavg()}"
    if busy:
        line += "; other processes busy now: " + ", ".join(
            f"{n}[{p}] {s * 100:.0f}%" for s, n, p in busy[:5])
    print(line)
    if total > 0.2:
        print(f"note: other processes use {total * 100:.0f}% of a CPU: figures are noisier than on an idle machine")


# --- the test file --------------------------------------------------------------


def cache_dir():
    d = pathlib.Path(os.environ.get("BENCH_CACHE_DIR") or (REPO / "bench" / ".cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


TEST_SECONDS = 30


def test_file():
    """1080p60 testsrc2 + 440 Hz sine, x264 ~5 Mbit/s, 2 s GOP, AAC 48 kHz, FLV.

    Made once (about a minute on two cores) and kept in bench/.cache/.
    """
    need("ffmpeg")
    path = cache_dir() / f"testsrc2-1080p60-5M-g120-aac48k-{TEST_SECONDS}s.flv"
    if path.exists() and path.stat().st_size > 1_000_000:
        return path
    print(f"making the test file {path} (once; about a minute)...", flush=True)
    part = path.with_suffix(".part.flv")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=60",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(TEST_SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-b:v", "5M", "-maxrate", "5M", "-bufsize", "10M",
        "-g", "120", "-keyint_min", "120", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
        "-f", "flv", str(part),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        part.unlink(missing_ok=True)
        die(f"ffmpeg could not make the test file:\n{r.stderr}")
    part.rename(path)
    return path


def file_bitrate(path):
    return path.stat().st_size * 8 / TEST_SECONDS


# --- Hearth ------------------------------------------------------------------------


class Hearth:
    def __init__(self, tmp, channels=1, extra_env=None, access_log=True):
        self.bin = os.path.abspath(os.environ.get("HEARTH_BIN") or str(REPO / "build" / "hearth"))
        if not os.access(self.bin, os.X_OK):
            die(f"no hearth binary at {self.bin} (run `ninja -C build` first, or set HEARTH_BIN)")
        self.dir = tmp / "hearth"
        self.dir.mkdir()
        self.http_port, self.rtmp_port = free_port(), free_port()
        # Only HEARTH_HLS_* passes through (e.g. HEARTH_HLS_WINDOW=30s, the
        # length nginx-rtmp keeps); the rest of the configuration is the default.
        env = {k: v for k, v in os.environ.items()
               if (not k.startswith("HEARTH_") or k.startswith("HEARTH_HLS_")) and k != "DB_URL"}
        env.update({
            "HEARTH_HTTP_LISTEN": f"{HOST}:{self.http_port}",
            "HEARTH_RTMP_LISTEN": f"{HOST}:{self.rtmp_port}",
            "HEARTH_STORAGE_DATA_DIR": str(self.dir / "data"),
            "HEARTH_HTTP_STATIC_DIR": str(self.dir),
            "HEARTH_HTTP_ACCESS_LOG": "true" if access_log else "false",
            "HEARTH_SITE_PUBLIC_URL": f"http://{HOST}:{self.http_port}",
        })
        env.update(extra_env or {})
        self.env = env
        self.log = self.dir / "hearth.log"
        self.channels = []
        self._cli(["user", "add", "bench", "--role", "streamer", "--password-stdin"], stdin="pw12345678\n")
        for i in range(channels):
            out = self._cli(["channel", "add", "--owner", "bench", "--title", f"bench {i}", "--slug",
                             f"bench{i}", "--json"])
            try:
                ch = json.loads(out)
            except ValueError:
                die(f"hearth channel add did not print JSON: {out!r}")
            self.channels.append({"slug": ch["slug"], "key": ch["stream_key"]})
        self.proc = spawn([self.bin, "serve"], self.log, env=env, cwd=str(self.dir))
        wait_http(f"http://{HOST}:{self.http_port}/healthz", self.proc, "hearth")
        wait_port(self.rtmp_port, self.proc, "hearth rtmp")

    def _cli(self, args, stdin=None):
        r = subprocess.run([self.bin] + args, env=self.env, input=stdin, capture_output=True, text=True,
                           cwd=str(self.dir), timeout=60)
        if r.returncode != 0:
            die(f"hearth {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def pids(self):
        return [self.proc.pid]

    def rtmp_url(self, i):
        return f"rtmp://{HOST}:{self.rtmp_port}/live/{self.channels[i]['key']}"

    def base(self, i):
        return f"http://{HOST}:{self.http_port}/live/{self.channels[i]['slug']}/"

    def playlist_url(self, i):
        return self.base(i) + "index.m3u8"

    def playlist(self, i):
        status, body = http_get(self.playlist_url(i))
        return body.decode("utf-8", "replace") if status == 200 else None

    def alive(self):
        return self.proc.poll() is None

    def log_problems(self):
        """warn/error lines of the log (the access log lines are info)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [l for l in lines if re.search(r"\s(warn|error)\s", l)]

    def stop(self):
        stop(self.proc)

    def version(self):
        r = subprocess.run([self.bin, "version"], capture_output=True, text=True)
        return r.stdout.strip().replace("hearth ", "") or "?"


# --- nginx + nginx-rtmp ----------------------------------------------------------

RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

NGINX_CONF = """\
load_module {module};
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 16384; }}

# As OSP ships it (its nginx-rtmp.conf), on 127.0.0.1 and in a temporary directory.
rtmp {{
    server {{
        listen {host}:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            hls on;
            hls_path {hls};
            hls_fragment 1;
            hls_playlist_length 30s;
            hls_nested on;
        }}
    }}
}}

http {{
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    default_type application/octet-stream;
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen {host}:{http_port};
        location /hls/ {{
            alias {hls}/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp, access_log=True):
        need("nginx")
        if not os.path.exists(RTMP_MODULE):
            die(f"no {RTMP_MODULE} (apt-get install libnginx-mod-rtmp; scripts/deps bench)")
        self.dir = tmp / "nginx"
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        (self.dir / "tmp").mkdir()
        self.hls = self.dir / "hls"
        self.hls.mkdir()
        os.chmod(self.hls, 0o777)  # the worker (nobody) writes here
        self.rtmp_port, self.http_port = free_port(), free_port()
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(
            module=RTMP_MODULE, nofile=raise_nofile(), dir=self.dir, host=HOST, rtmp_port=self.rtmp_port,
            http_port=self.http_port, hls=self.hls,
            access_log=f"{self.dir}/nginx-access.log" if access_log else "off"))
        self.proc = spawn([tool("nginx"), "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
                          self.dir / "nginx-stderr.log", cwd=str(self.dir))
        wait_port(self.http_port, self.proc, "nginx")
        wait_port(self.rtmp_port, self.proc, "nginx rtmp")
        deadline = time.monotonic() + 5
        while len(self.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(self.pids()) < 2:
            die(f"nginx: no worker process (pids {self.pids()})")

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def rtmp_url(self, name):
        return f"rtmp://{HOST}:{self.rtmp_port}/live/{name}"

    def base(self, name):
        return f"http://{HOST}:{self.http_port}/hls/{name}/"

    def playlist_url(self, name):
        return self.base(name) + "index.m3u8"

    def hls_bytes(self):
        """What nginx-rtmp keeps on disk (page cache): its fragments and playlists."""
        total = 0
        for f in self.hls.rglob("*"):
            try:
                if f.is_file():
                    total += f.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def playlist_file(self, name):
        try:
            return (self.hls / name / "index.m3u8").read_text()
        except FileNotFoundError:
            return None

    def alive(self):
        return self.proc.poll() is None

    def log_problems(self):
        out = []
        for f in ("nginx-error.log", "nginx-stderr.log"):
            try:
                out += [l for l in (self.dir / f).read_text(errors="replace").splitlines() if l.strip()]
            except FileNotFoundError:
                pass
        return out

    def stop(self):
        stop(self.proc)

    @staticmethod
    def version():
        r = subprocess.run([tool("nginx"), "-v"], capture_output=True, text=True)
        m = re.search(r"nginx/([\d.]+)", r.stderr)
        return m.group(1) if m else "?"


def ffmpeg_version():
    r = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True)
    m = re.search(r"ffmpeg version (\S+)", r.stdout)
    return m.group(1) if m else "?"


def publish(src, url, log, loop=True):
    """ffmpeg -re [-stream_loop -1] -i src -c copy -f flv url"""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(src), "-c", "copy", "-f", "flv", url]
    return spawn(cmd, log)


# --- playlists -------------------------------------------------------------------


class Playlist:
    """The parts of a media playlist the benchmarks need.

    segments: list of dicts {msn, duration, uri, parts: [(duration, uri)]}
    (the last one may be open: duration None); hint: (msn, part) of the
    preload hint or None.
    """

    def __init__(self, text):
        self.text = text
        self.media_sequence = 0
        self.segments = []
        self.hint = None
        self.endlist = False
        msn = None
        cur = None
        pending_inf = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                self.media_sequence = int(line.split(":", 1)[1])
                msn = self.media_sequence
            elif line.startswith("#EXT-X-PART:"):
                if cur is None:
                    cur = {"msn": msn, "duration": None, "uri": None, "parts": []}
                    self.segments.append(cur)
                a = attrs(line)
                cur["parts"].append((float(a["DURATION"]), a["URI"]))
            elif line.startswith("#EXTINF:"):
                pending_inf = float(line.split(":", 1)[1].split(",")[0])
            elif line.startswith("#EXT-X-PRELOAD-HINT:"):
                m = re.search(r"-(\d+)\.(\d+)\.m4s", attrs(line)["URI"])
                if m:
                    self.hint = (int(m.group(1)), int(m.group(2)))
            elif line.startswith("#EXT-X-ENDLIST"):
                self.endlist = True
            elif line and not line.startswith("#"):
                if cur is None:
                    cur = {"msn": msn, "duration": None, "uri": None, "parts": []}
                    self.segments.append(cur)
                cur["duration"] = pending_inf
                cur["uri"] = line
                pending_inf = None
                cur = None
                msn += 1
        if msn is None:
            self.segments = []

    def complete(self):
        return [s for s in self.segments if s["uri"]]


def attrs(line):
    out = {}
    for m in re.finditer(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1]):
        out[m.group(1)] = m.group(2).strip('"')
    return out


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mib(kib):
    return kib / 1024
