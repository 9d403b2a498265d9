"""
A small RTMP publisher written for the tests, for what ffmpeg will not do:
stop in the middle of a chunk, send a handshake and then nothing, and read
the exact onStatus code the server answers with.

    c = RtmpClient(port)          # TCP to 127.0.0.1
    c.handshake()                 # simple (non-digest) form: C0 C1 / S0 S1 S2 / C2
    c.connect("live")             # -> the _result's info object
    c.create_stream()             # -> stream id
    status = c.publish(key)       # -> onStatus info: {"code": "NetStream.Publish.Start", ...}
    c.send_tag(tag)               # one FLV tag from flv_tags() as an RTMP message
    c.send_partial(tag, nbytes)   # the first nbytes of a message's chunks, no more
    c.close()

Also flv_tags(path): the tags of an FLV file, to publish a real stream.
"""
import os
import select
import socket
import struct
import time

HOST = "127.0.0.1"


# --- AMF0 ------------------------------------------------------------------


class Undefined:
    pass


def amf_encode(v):
    if v is None:
        return b"\x05"
    if v is Undefined:
        return b"\x06"
    if isinstance(v, bool):
        return b"\x01" + (b"\x01" if v else b"\x00")
    if isinstance(v, (int, float)):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, str):
        b = v.encode()
        if len(b) > 0xFFFF:
            return b"\x0c" + struct.pack(">I", len(b)) + b
        return b"\x02" + struct.pack(">H", len(b)) + b
    if isinstance(v, dict):
        out = b"\x03"
        for k, x in v.items():
            kb = k.encode()
            out += struct.pack(">H", len(kb)) + kb + amf_encode(x)
        return out + b"\x00\x00\x09"
    raise TypeError(f"cannot AMF0-encode {v!r}")


def amf_decode(data, off=0):
    """(value, next offset)"""
    t = data[off]
    off += 1
    if t == 0x00:
        return struct.unpack_from(">d", data, off)[0], off + 8
    if t == 0x01:
        return data[off] != 0, off + 1
    if t == 0x02:
        n = struct.unpack_from(">H", data, off)[0]
        return data[off + 2:off + 2 + n].decode(errors="replace"), off + 2 + n
    if t == 0x0C:
        n = struct.unpack_from(">I", data, off)[0]
        return data[off + 4:off + 4 + n].decode(errors="replace"), off + 4 + n
    if t in (0x03, 0x08):
        if t == 0x08:
            off += 4
        obj = {}
        while True:
            n = struct.unpack_from(">H", data, off)[0]
            off += 2
            if n == 0 and data[off] == 0x09:
                return obj, off + 1
            k = data[off:off + n].decode(errors="replace")
            off += n
            obj[k], off = amf_decode(data, off)
    if t == 0x05:
        return None, off
    if t == 0x06:
        return Undefined, off
    if t == 0x0A:
        n = struct.unpack_from(">I", data, off)[0]
        off += 4
        arr = []
        for _ in range(n):
            x, off = amf_decode(data, off)
            arr.append(x)
        return arr, off
    if t == 0x0B:
        return struct.unpack_from(">d", data, off)[0], off + 10
    raise ValueError(f"AMF0 type {t:#x} at {off - 1}")


def amf_decode_all(data):
    out, off = [], 0
    while off < len(data):
        v, off = amf_decode(data, off)
        out.append(v)
    return out


# --- FLV files ---------------------------------------------------------------


class Tag:
    __slots__ = ("type", "timestamp", "data")

    def __init__(self, typ, ts, data):
        self.type, self.timestamp, self.data = typ, ts, data

    @property
    def is_video(self):
        return self.type == 9

    @property
    def is_keyframe(self):
        return self.type == 9 and self.data[0] >> 4 == 1

    @property
    def is_config(self):
        if self.type == 9:
            return len(self.data) > 1 and self.data[1] == 0
        if self.type == 8:
            return len(self.data) > 1 and self.data[0] >> 4 == 10 and self.data[1] == 0
        return False


def flv_tags(path):
    data = open(path, "rb").read()
    assert data[:3] == b"FLV", "not an FLV file"
    off = struct.unpack_from(">I", data, 5)[0] + 4
    tags = []
    while off + 11 <= len(data):
        typ = data[off] & 0x1F
        size = int.from_bytes(data[off + 1:off + 4], "big")
        ts = int.from_bytes(data[off + 4:off + 7], "big") | data[off + 7] << 24
        body = data[off + 11:off + 11 + size]
        if len(body) < size:
            break
        tags.append(Tag(typ, ts, body))
        off += 11 + size + 4
    return tags


# --- the client ----------------------------------------------------------------


class RtmpError(AssertionError):
    pass


class RtmpClient:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.in_chunk = 128
        self.out_chunk = 128
        self.streams = {}  # csid -> [ts, length, type, sid, payload, ts_delta, ext]
        self.txn = 0
        self.stream_id = 0
        self.messages = []  # every message read: (type, stream id, payload)

    # bytes ----------------------------------------------------------------
    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with a RST, as a crashed publisher's kernel might."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RtmpError("timed out waiting for the server")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise RtmpError("timed out waiting for the server")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buf += chunk

    def _read(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def wait_closed(self, timeout):
        """True when the server closes the connection within timeout (data read is dropped)."""
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
            except (ConnectionResetError, OSError):
                return True
            if not chunk:
                return True

    # handshake ------------------------------------------------------------
    def handshake(self):
        c1 = struct.pack(">II", 0, 0) + os.urandom(1528)
        self.send(b"\x03" + c1)
        deadline = time.monotonic() + self.timeout
        s0 = self._read(1, deadline)
        if s0 != b"\x03":
            raise RtmpError(f"S0 is {s0!r}")
        s1 = self._read(1536, deadline)
        s2 = self._read(1536, deadline)
        if s2 != c1:
            raise RtmpError("S2 does not echo C1 (simple handshake)")
        self.send(s1)  # C2

    # chunks -----------------------------------------------------------------
    def chunks(self, csid, typ, sid, ts, payload):
        """The bytes of one message: a type 0 chunk, then type 3 continuations."""
        ext = ts >= 0xFFFFFF
        hdr = bytes([csid & 0x3F]) if csid < 64 else bytes([0, csid - 64])
        out = hdr + (min(ts, 0xFFFFFF)).to_bytes(3, "big") + len(payload).to_bytes(3, "big") + \
            bytes([typ]) + struct.pack("<I", sid)
        if ext:
            out += struct.pack(">I", ts)
        off = 0
        first = True
        while first or off < len(payload):
            if not first:
                out += bytes([0xC0 | (csid & 0x3F)]) if csid < 64 else bytes([0xC0, csid - 64])
                if ext:
                    out += struct.pack(">I", ts)
            n = min(self.out_chunk, len(payload) - off)
            out += payload[off:off + n]
            off += n
            first = False
        return out

    def send_message(self, csid, typ, sid, ts, payload):
        self.send(self.chunks(csid, typ, sid, ts, payload))

    def set_chunk_size(self, n):
        self.send_message(2, 1, 0, 0, struct.pack(">I", n))
        self.out_chunk = n

    def command(self, name, *args, csid=3, sid=0, txn=None):
        if txn is None:
            self.txn += 1
            txn = self.txn
        payload = amf_encode(name) + amf_encode(txn) + b"".join(amf_encode(a) for a in args)
        self.send_message(csid, 20, sid, 0, payload)
        return txn

    def read_message(self, deadline):
        while True:
            b0 = self._read(1, deadline)[0]
            fmt, csid = b0 >> 6, b0 & 0x3F
            if csid == 0:
                csid = 64 + self._read(1, deadline)[0]
            elif csid == 1:
                b = self._read(2, deadline)
                csid = 64 + b[0] + b[1] * 256
            st = self.streams.setdefault(csid, [0, 0, 0, 0, b"", 0, False])
            if fmt <= 2:
                h = self._read((11, 7, 3)[fmt], deadline)
                ts = int.from_bytes(h[0:3], "big")
                st[6] = ts == 0xFFFFFF
                if fmt <= 1:
                    st[1] = int.from_bytes(h[3:6], "big")
                    st[2] = h[6]
                if fmt == 0:
                    st[3] = struct.unpack("<I", h[7:11])[0]
                if st[6]:
                    ts = struct.unpack(">I", self._read(4, deadline))[0]
                if fmt == 0:
                    st[0] = ts
                elif not st[4]:
                    st[5] = ts
                    st[0] += ts
            else:
                if st[6]:
                    self._read(4, deadline)
                if not st[4] and st[1]:
                    st[0] += st[5]
            n = min(self.in_chunk, st[1] - len(st[4]))
            st[4] += self._read(n, deadline)
            if len(st[4]) >= st[1]:
                payload, st[4] = st[4], b""
                typ, sid = st[2], st[3]
                if typ == 1:
                    self.in_chunk = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                self.messages.append((typ, sid, payload))
                return typ, sid, payload

    def wait_command(self, names, timeout=None):
        """The next command message whose name is in `names`: [name, txn, ...]."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            typ, sid, payload = self.read_message(deadline)
            if typ in (20, 17):
                vals = amf_decode_all(payload[1:] if typ == 17 else payload)
                if vals and vals[0] in names:
                    return vals

    # the publisher's commands -------------------------------------------------
    def connect(self, app="live"):
        self.set_chunk_size(4096)
        tc = f"rtmp://{HOST}/{app}"
        txn = self.command("connect", {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0",
                                       "tcUrl": tc, "objectEncoding": 0})
        vals = self.wait_command({"_result", "_error"})
        if vals[0] != "_result" or vals[1] != txn:
            raise RtmpError(f"connect answered {vals}")
        return vals[3] if len(vals) > 3 else None

    def create_stream(self):
        self.command("releaseStream", None, "x")
        self.command("FCPublish", None, "x")
        txn = self.command("createStream", None)
        while True:
            vals = self.wait_command({"_result", "_error"})
            if vals[1] == txn:
                break
        if vals[0] != "_result":
            raise RtmpError(f"createStream answered {vals}")
        self.stream_id = int(vals[3])
        return self.stream_id

    def publish(self, key, timeout=None):
        """The onStatus info object the server answers publish with."""
        self.command("publish", None, key, "live", csid=4, sid=self.stream_id, txn=0)
        vals = self.wait_command({"onStatus"}, timeout)
        return vals[3] if len(vals) > 3 and isinstance(vals[3], dict) else {}

    def send_tag(self, tag, ts=None):
        ts = tag.timestamp if ts is None else ts
        csid = 6 if tag.type == 9 else 4 if tag.type == 8 else 5
        typ = 18 if tag.type == 18 else tag.type
        self.send_message(csid, typ, self.stream_id, ts, tag.data)

    def send_partial(self, tag, nbytes, ts=None):
        """The first `nbytes` bytes of the tag's message on the wire, then nothing."""
        ts = tag.timestamp if ts is None else ts
        csid = 6 if tag.type == 9 else 4
        raw = self.chunks(csid, tag.type, self.stream_id, ts, tag.data)
        assert nbytes < len(raw)
        self.send(raw[:nbytes])
