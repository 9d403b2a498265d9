"""
A small RTMP publisher for the benchmarks: it plays an FLV file to a server
in real time, as `ffmpeg -re -c copy -f flv` would, and records the moment
each video frame was handed to the kernel, so a benchmark can tell how long
after a frame was sent the server made it available.

Protocol: the simple handshake (C0 C1 / S0 S1 S2 / C2), Set Chunk Size 4096,
connect, releaseStream, FCPublish, createStream, publish (waiting for
NetStream.Publish.Start), @setDataFrame onMetaData, then every audio and
video tag of the file as one message each, with a type-0 chunk header (the
absolute timestamp) on csid 4 (audio) or 6 (video). The file is looped, with
the timestamps carried on, for as long as asked. TCP_NODELAY is set, so the
time a frame is sent is not Nagle's.
"""
import os
import socket
import struct
import threading
import time

CHUNK = 4096


class RtmpError(Exception):
    pass


# --- FLV ---------------------------------------------------------------------


class Tag:
    __slots__ = ("type", "ts", "body", "key", "seq")

    def __init__(self, type_, ts, body):
        self.type = type_
        self.ts = ts
        self.body = body
        # Video: frame type 1 = keyframe; AVC packet type 0 = sequence header.
        self.key = type_ == 9 and (body[0] >> 4) == 1
        self.seq = (type_ == 9 and len(body) > 1 and (body[0] & 0x0F) == 7 and body[1] == 0) or (
            type_ == 8 and len(body) > 1 and (body[0] >> 4) == 10 and body[1] == 0)


def read_flv(path):
    """(metadata tag body or None, [Tag]) of an FLV file."""
    data = open(path, "rb").read()
    if data[:3] != b"FLV":
        raise ValueError(f"{path}: not an FLV file")
    off = int.from_bytes(data[5:9], "big") + 4
    meta = None
    tags = []
    while off + 11 <= len(data):
        t = data[off] & 0x1F
        size = int.from_bytes(data[off + 1:off + 4], "big")
        ts = int.from_bytes(data[off + 4:off + 7], "big") | (data[off + 7] << 24)
        body = data[off + 11:off + 11 + size]
        if len(body) < size:
            break
        if t == 18 and meta is None:
            meta = body
        elif t in (8, 9) and size > 0:
            tags.append(Tag(t, ts, body))
        off += 11 + size + 4
    return meta, tags


# --- AMF0 ----------------------------------------------------------------------


def amf_enc(v):
    if v is None:
        return b"\x05"
    if isinstance(v, bool):
        return b"\x01" + (b"\x01" if v else b"\x00")
    if isinstance(v, (int, float)):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, str):
        b = v.encode()
        return b"\x02" + struct.pack(">H", len(b)) + b
    if isinstance(v, dict):
        out = b"\x03"
        for k, x in v.items():
            kb = k.encode()
            out += struct.pack(">H", len(kb)) + kb + amf_enc(x)
        return out + b"\x00\x00\x09"
    raise TypeError(type(v))


def amf_dec(b, off=0):
    """(value, next offset)."""
    t = b[off]
    off += 1
    if t == 0x00:
        return struct.unpack(">d", b[off:off + 8])[0], off + 8
    if t == 0x01:
        return b[off] != 0, off + 1
    if t == 0x02:
        n = struct.unpack(">H", b[off:off + 2])[0]
        return b[off + 2:off + 2 + n].decode("utf-8", "replace"), off + 2 + n
    if t == 0x0C:
        n = struct.unpack(">I", b[off:off + 4])[0]
        return b[off + 4:off + 4 + n].decode("utf-8", "replace"), off + 4 + n
    if t in (0x03, 0x08):
        if t == 0x08:
            off += 4
        obj = {}
        while True:
            n = struct.unpack(">H", b[off:off + 2])[0]
            off += 2
            if n == 0 and b[off] == 0x09:
                return obj, off + 1
            k = b[off:off + n].decode("utf-8", "replace")
            off += n
            obj[k], off = amf_dec(b, off)
    if t == 0x0A:
        n = struct.unpack(">I", b[off:off + 4])[0]
        off += 4
        arr = []
        for _ in range(n):
            x, off = amf_dec(b, off)
            arr.append(x)
        return arr, off
    if t in (0x05, 0x06):
        return None, off
    if t == 0x0B:
        return struct.unpack(">d", b[off:off + 8])[0], off + 10
    raise RtmpError(f"AMF0 type 0x{t:02x} not understood")


def amf_dec_all(b):
    out = []
    off = 0
    while off < len(b):
        v, off = amf_dec(b, off)
        out.append(v)
    return out


# --- chunk stream ----------------------------------------------------------------


def chunks(csid, ts, mtype, msid, payload, size=CHUNK):
    ext = ts >= 0xFFFFFF
    head = bytes([csid]) + (0xFFFFFF if ext else ts).to_bytes(3, "big") + len(payload).to_bytes(3, "big") + \
        bytes([mtype]) + msid.to_bytes(4, "little")
    if ext:
        head += ts.to_bytes(4, "big")
    cont = bytes([0xC0 | csid]) + (ts.to_bytes(4, "big") if ext else b"")
    parts = [head, payload[:size]]
    for i in range(size, len(payload), size):
        parts += [cont, payload[i:i + size]]
    return b"".join(parts)


class Reader:
    """Reassembles the server's messages (only what comes before publishing)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.size = 128
        self.st = {}

    def _n(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise RtmpError("the server closed the connection")
            self.buf += d
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def message(self):
        while True:
            b0 = self._n(1)[0]
            fmt, csid = b0 >> 6, b0 & 0x3F
            if csid == 0:
                csid = 64 + self._n(1)[0]
            elif csid == 1:
                x = self._n(2)
                csid = 64 + x[0] + x[1] * 256
            s = self.st.setdefault(csid, {"ts": 0, "delta": 0, "len": 0, "type": 0, "msid": 0,
                                           "data": bytearray(), "ext": False})
            if fmt <= 2:
                t = int.from_bytes(self._n(3), "big")
                if fmt <= 1:
                    s["len"] = int.from_bytes(self._n(3), "big")
                    s["type"] = self._n(1)[0]
                if fmt == 0:
                    s["msid"] = int.from_bytes(self._n(4), "little")
                s["ext"] = t == 0xFFFFFF
                if s["ext"]:
                    t = int.from_bytes(self._n(4), "big")
                if fmt == 0:
                    s["ts"] = t
                    s["delta"] = 0
                else:
                    s["delta"] = t
                    s["ts"] += t
            else:
                if s["ext"]:
                    self._n(4)
                if not s["data"]:
                    s["ts"] += s["delta"]
            want = min(self.size, s["len"] - len(s["data"]))
            s["data"] += self._n(want)
            if len(s["data"]) >= s["len"]:
                payload = bytes(s["data"])
                s["data"] = bytearray()
                if s["type"] == 1 and len(payload) >= 4:
                    self.size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                return s["type"], s["msid"], s["ts"], payload


# --- the publisher -----------------------------------------------------------------


class Publisher:
    def __init__(self, host, port, app, key, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app, self.key = app, key
        self.tc_url = f"rtmp://{host}:{port}/{app}"
        self.reader = Reader(self.sock)
        self.sid = None
        self.closed = threading.Event()

    def _send(self, data):
        self.sock.sendall(data)

    def _command(self, name, txn, *args, msid=0, csid=3):
        payload = amf_enc(name) + amf_enc(float(txn)) + b"".join(amf_enc(a) for a in args)
        self._send(chunks(csid, 0, 20, msid, payload))

    def _wait(self, pred, what):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mtype, msid, ts, payload = self.reader.message()
            if mtype != 20:
                continue
            vals = amf_dec_all(payload)
            r = pred(vals)
            if r is not None:
                return r
        raise RtmpError(f"no {what} within 10 s")

    def handshake(self):
        c1 = struct.pack(">II", 0, 0) + os.urandom(1528)
        self._send(b"\x03" + c1)
        s = self.reader._n(1 + 1536 + 1536)
        if s[0] != 3:
            raise RtmpError(f"S0 version {s[0]}")
        self._send(s[1:1537])  # C2 echoes S1

    def start(self):
        self.handshake()
        self._send(chunks(2, 0, 1, 0, CHUNK.to_bytes(4, "big")))
        self._command("connect", 1, {"app": self.app, "type": "nonprivate", "flashVer": "FMLE/3.0",
                                     "tcUrl": self.tc_url})

        def connected(v):
            if v[0] == "_error" and v[1] == 1:
                raise RtmpError(f"connect refused: {v}")
            return True if v[0] == "_result" and v[1] == 1 else None

        self._wait(connected, "connect _result")
        self._command("releaseStream", 2, None, self.key)
        self._command("FCPublish", 3, None, self.key)
        self._command("createStream", 4, None)
        self.sid = int(self._wait(lambda v: v[3] if v[0] == "_result" and v[1] == 4 else None,
                                  "createStream _result"))
        self._command("publish", 5, None, self.key, "live", msid=self.sid, csid=8)

        def published(v):
            if v[0] == "onStatus":
                info = v[3] if len(v) > 3 and isinstance(v[3], dict) else {}
                code = info.get("code", "")
                if code == "NetStream.Publish.Start":
                    return True
                if code.startswith("NetStream.Publish.") or info.get("level") == "error":
                    raise RtmpError(f"publish refused: {code} {info.get('description', '')}")
            if v[0] == "_error":
                raise RtmpError(f"publish refused: {v}")
            return None

        self._wait(published, "NetStream.Publish.Start")
        # From here the server only sends acknowledgements and pings: drain them.
        self.sock.settimeout(None)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.closed.set()

    def play(self, meta, tags, duration, on_video=None):
        """Send tags paced in real time for `duration` seconds, looping.

        on_video(media_ms, t_sent, key) is called for each video frame (not
        for sequence headers) right after it was handed to the kernel;
        media_ms is its timestamp less the first video frame's, t_sent
        time.monotonic(). Returns the largest lateness of a send against
        its schedule, in seconds.
        """
        if meta is not None:
            self._send(chunks(5, 0, 18, self.sid, amf_enc("@setDataFrame") + meta))
        vts = [t.ts for t in tags if t.type == 9 and not t.seq]
        if len(vts) < 2:
            raise RtmpError("the file has no video")
        step = sorted(b - a for a, b in zip(vts, vts[1:]))[len(vts) // 2]
        # The next loop's first frame follows the last one by one frame, as
        # ffmpeg -stream_loop does (video is continuous; audio is within a frame).
        loop_len = vts[-1] - vts[0] + step
        first_v = vts[0]
        t0 = time.monotonic()
        base = min(t.ts for t in tags)
        late = 0.0
        offset = 0
        loop = 0
        while True:
            for t in tags:
                if t.seq and loop > 0:
                    continue
                ts = t.ts + offset
                due = t0 + (ts - base) / 1000.0
                if due - t0 > duration:
                    return late
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                else:
                    late = max(late, now - due)
                if self.closed.is_set():
                    raise RtmpError("the server closed the connection while publishing")
                self._send(chunks(6 if t.type == 9 else 4, ts, t.type, self.sid, t.body))
                if t.type == 9 and not t.seq and on_video:
                    on_video(ts - first_v, time.monotonic(), t.key)
            offset += loop_len
            loop += 1

    def close(self):
        try:
            self._command("FCUnpublish", 6, None, self.key)
            self._command("deleteStream", 7, None, float(self.sid or 1))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
