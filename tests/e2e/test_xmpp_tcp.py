"""
XMPP over TCP, the transport (src/chat/c2s_tcp.c, src/net/tls.c): STARTTLS
before logging in, the generated certificate, whitespace keepalives, the
idle timeout, a client that stops reading, xmpp.max_connections, and the
end of every stream at shutdown.

A small raw client (socket + ssl) is used instead of slixmpp: these tests
look at bytes a library would hide (a single space, the exact stream error)
and misbehave on purpose. Every server gets its own c2s port on 127.0.0.1;
federation is off.
"""
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from hearthtest import HOST, free_port

DEADLINE = 10.0
NS_STREAM = "http://etherx.jabber.org/streams"


def xmpp_env(**extra):
    env = {
        "HEARTH_XMPP_C2S_LISTEN": f"{HOST}:{free_port()}",
        "HEARTH_XMPP_S2S_LISTEN": f"{HOST}:{free_port()}",
        "HEARTH_XMPP_FEDERATION": "false",
    }
    env.update(extra)
    return env


def c2s_port(srv):
    return int(srv.overrides["HEARTH_XMPP_C2S_LISTEN"].rsplit(":", 1)[1])


class Client:
    """One client stream; `buf` holds what was received and not yet matched."""

    def __init__(self, port, host="guest.localhost", rcvbuf=None, timeout=DEADLINE):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((HOST, port))
        self.sock = s
        self.host = host
        self.buf = b""
        self.tls = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv_some(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("closed by the server")
        self.buf += chunk
        return chunk

    def expect(self, pattern, timeout=DEADLINE):
        """Read until pattern (bytes regex) matches; consume through the match."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; got {self.buf[-500:]!r}")
            try:
                self.recv_some(left)
            except socket.timeout:
                pass

    def read_to_eof(self, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.recv_some(deadline - time.monotonic())
            except EOFError:
                return self.buf
            except (ConnectionResetError, ssl.SSLError, OSError):
                return self.buf
            except socket.timeout:
                break
        raise AssertionError(f"the server did not close within {timeout}s; got {self.buf[-300:]!r}")

    def header(self):
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.host}' xmlns='jabber:client' "
            f"xmlns:stream='{NS_STREAM}' version='1.0'>"
        )

    def features(self):
        return self.expect(rb"<stream:features.*?</stream:features>").group(0)

    def starttls(self, cafile=None, server_name=None):
        self.header()
        f = self.features()
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in f
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect(rb"<proceed[^>]*/>")
        assert self.buf == b""
        if cafile:
            ctx = ssl.create_default_context(cafile=cafile)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(DEADLINE)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_name or self.host)
        self.tls = True
        self.header()
        return self.features()

    def login_guest(self, cafile=None, server_name=None):
        f = self.starttls(cafile, server_name)
        assert b"ANONYMOUS" in f
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'>=</auth>")
        self.expect(rb"<success[^>]*(/>|>.*?</success>)")
        self.header()
        f = self.features()
        assert b"urn:ietf:params:xml:ns:xmpp-bind" in f
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        m = self.expect(rb"<jid>([^<]+)</jid>")
        self.expect(rb"</iq>")
        return m.group(1).decode()

    def ping(self, id_="p1"):
        self.send(f"<iq type='get' id='{id_}'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.expect(rb"<iq[^>]*id=['\"]" + re.escape(id_.encode()) + rb"['\"][^>]*type=['\"]result|"
                    rb"<iq[^>]*type=['\"]result['\"][^>]*id=['\"]" + re.escape(id_.encode()) + rb"['\"]")


@pytest.fixture
def xmpp_server(start_server):
    def start(**extra):
        return start_server(env=xmpp_env(**extra))

    return start


def test_guest_login_over_starttls_with_generated_certificate(xmpp_server):
    srv = xmpp_server()
    cert = srv.data_dir / "xmpp" / "cert.pem"
    key = srv.data_dir / "xmpp" / "key.pem"
    assert cert.exists() and key.exists()
    assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
    # Strict verification against the generated certificate: it must name
    # the guest host (and the others) in subjectAltName.
    c = Client(c2s_port(srv))
    try:
        jid = c.login_guest(cafile=str(cert), server_name="guest.localhost")
        assert jid.endswith("@guest.localhost/" + jid.split("/", 1)[1])
        c.ping()
    finally:
        c.close()
    for name in ("localhost", "chat.localhost"):
        c = Client(c2s_port(srv), host="localhost")
        try:
            c.starttls(cafile=str(cert), server_name=name)
        finally:
            c.close()
    # A name the certificate does not carry fails verification.
    c = Client(c2s_port(srv), host="localhost")
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            c.starttls(cafile=str(cert), server_name="other.example")
    finally:
        c.close()
    assert srv.alive()


def test_auth_before_starttls_is_refused(xmpp_server):
    srv = xmpp_server()
    c = Client(c2s_port(srv))
    try:
        c.header()
        f = c.features()
        assert re.search(rb"<starttls[^>]*>\s*<required/>", f)
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'>=</auth>")
        c.expect(rb"<failure[^>]*>\s*<encryption-required/>")
        c.expect(rb"<stream:error>.*policy-violation.*</stream:error>")
        c.expect(rb"</stream:stream>")
        c.read_to_eof()
    finally:
        c.close()
    # A stanza before TLS gets no further either.
    c = Client(c2s_port(srv))
    try:
        c.header()
        c.features()
        c.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
        c.expect(rb"<stream:error>")
        tail = c.read_to_eof()
        assert b"type='result'" not in tail and b'type="result"' not in tail
    finally:
        c.close()


def test_garbage_instead_of_tls_handshake_closes_cleanly(xmpp_server):
    srv = xmpp_server()
    c = Client(c2s_port(srv))
    try:
        c.header()
        c.features()
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        c.expect(rb"<proceed[^>]*/>")
        c.send(b"this is not a TLS ClientHello\r\n" * 10)
        c.read_to_eof()
    finally:
        c.close()
    # The server is fine and serves the next client.
    c = Client(c2s_port(srv))
    try:
        c.login_guest()
        c.ping()
    finally:
        c.close()
    assert srv.alive()


def test_whitespace_keepalive(xmpp_server):
    srv = xmpp_server(HEARTH_XMPP_KEEPALIVE="1s", HEARTH_XMPP_IDLE_TIMEOUT="60s")
    c = Client(c2s_port(srv))
    try:
        c.login_guest()
        c.buf = b""
        got = b""
        deadline = time.monotonic() + DEADLINE
        while b" " not in got and time.monotonic() < deadline:
            try:
                got += c.recv_some(deadline - time.monotonic())
            except socket.timeout:
                break
        assert got.strip() == b"" and b" " in got, f"expected a whitespace keepalive, got {got!r}"
        c.ping()  # the stream is intact after it
    finally:
        c.close()


def test_idle_timeout_ends_silent_streams_only(xmpp_server):
    srv = xmpp_server(HEARTH_XMPP_IDLE_TIMEOUT="2s", HEARTH_XMPP_KEEPALIVE="60s")
    silent, chatty = Client(c2s_port(srv)), Client(c2s_port(srv))
    try:
        silent.login_guest()
        chatty.login_guest()
        stop = threading.Event()

        def keep_talking():
            while not stop.is_set():
                try:
                    chatty.send(b" ")
                except OSError:
                    return
                stop.wait(0.2)

        t = threading.Thread(target=keep_talking, daemon=True)
        t.start()
        try:
            silent.expect(rb"<stream:error>.*connection-timeout.*</stream:error>", timeout=DEADLINE)
            silent.expect(rb"</stream:stream>")
            silent.read_to_eof()
        finally:
            stop.set()
            t.join(timeout=5)
        chatty.ping("still-here")
    finally:
        silent.close()
        chatty.close()
    assert srv.wait_for_log(r"connection-timeout")


def test_client_that_stops_reading_is_cut_off_alone(xmpp_server):
    # The stanza rate limit would end this stream first: off, as with
    # xmpp.message_interval = 0.
    srv = xmpp_server(HEARTH_XMPP_MESSAGE_INTERVAL="0")
    port = c2s_port(srv)
    other = Client(port)
    slow = Client(port, rcvbuf=4096)
    try:
        other.login_guest()
        slow.login_guest()
        # Pings with long ids, never reading the answers: the answers pile
        # up in the server until it stops reading us and then cuts us off.
        pad = "x" * 900
        result = {}

        def flood():
            try:
                for i in range(100000):
                    slow.send(f"<iq type='get' id='{pad}{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
                result["end"] = "sent everything"
            except (OSError, ssl.SSLError) as e:
                result["end"] = repr(e)

        slow.sock.settimeout(60)
        t = threading.Thread(target=flood, daemon=True)
        t.start()
        lines = srv.wait_for_log(r"c2s .*cut off: .*the client does not read", timeout=45)
        assert lines, "the server never cut the slow client off:\n" + srv.log_tail()
        # Everyone else is served as before.
        other.ping("after-cut")
        t.join(timeout=60)
        assert result.get("end") not in (None, "sent everything"), result
    finally:
        slow.close()
        other.close()
    assert srv.alive()


def test_max_connections(xmpp_server):
    srv = xmpp_server(HEARTH_XMPP_MAX_CONNECTIONS="2")
    port = c2s_port(srv)
    a, b = Client(port), Client(port)
    try:
        for c in (a, b):
            c.header()
            c.features()
        third = Client(port)
        try:
            third.header()
        except OSError:
            pass
        try:
            third.read_to_eof()
            assert b"<stream:features" not in third.buf
        finally:
            third.close()
        assert srv.wait_for_log(r"connection refused: xmpp.max_connections")
        # A place frees up when one leaves.
        a.close()
        deadline = time.monotonic() + DEADLINE
        while True:
            c = Client(port)
            try:
                c.header()
                c.features()
                break
            except (EOFError, OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                c.close()
    finally:
        a.close()
        b.close()


def test_shutdown_ends_every_stream(xmpp_server):
    srv = xmpp_server()
    port = c2s_port(srv)
    clients = [Client(port) for _ in range(3)]
    try:
        clients[0].login_guest()
        clients[1].starttls()
        clients[2].header()
        clients[2].features()
        srv.signal(signal.SIGTERM)
        for c in clients:
            c.expect(rb"system-shutdown")
            c.expect(rb"</stream:stream>")
            c.read_to_eof()
        assert srv.wait_exit() == 0, srv.log_tail()
    finally:
        for c in clients:
            c.close()


def test_stanza_flood_is_refused_then_the_stream_ends(xmpp_server):
    # 50 at once, then 10 a second: past that stanzas are refused with
    # policy-violation, and a client that keeps going is cut off.
    srv = xmpp_server()
    port = c2s_port(srv)
    flooder, other = Client(port), Client(port)
    try:
        flooder.login_guest()
        other.login_guest()
        flooder.send("".join(f"<iq type='get' id='f{i}'><ping xmlns='urn:xmpp:ping'/></iq>"
                             for i in range(300)))
        m = flooder.expect(rb"(.*?)<stream:error>(.*?)</stream:error>")
        flooder.read_to_eof()
    finally:
        flooder.close()
    try:
        other.ping("unaffected")
    finally:
        other.close()
    before, err = m.group(1), m.group(2)
    assert b"policy-violation" in err and b"too many stanzas" in err
    answered = len(re.findall(rb"type=['\"]result['\"]", before))
    refused = len(re.findall(rb"<policy-violation xmlns=['\"]urn:ietf:params:xml:ns:xmpp-stanzas", before))
    assert 50 <= answered < 300, answered
    assert refused > 0, before[-1000:]
    assert srv.wait_for_log(r"xmpp c2s .*refusing stanzas")
    assert srv.wait_for_log(r"xmpp c2s .*stream error policy-violation: too many stanzas")


def test_c2s_tls_asks_for_no_client_certificate(xmpp_server):
    # Clients would prompt their user for a certificate: c2s must not send a
    # CertificateRequest (s2s keeps asking, for SASL EXTERNAL).
    srv = xmpp_server()
    res = subprocess.run(
        ["openssl", "s_client", "-connect", f"{HOST}:{c2s_port(srv)}", "-starttls", "xmpp",
         "-xmpphost", "guest.localhost", "-msg"],
        input="", capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    assert "ServerHello" in out or "Server hello" in out or "Handshake" in out, out[-2000:]
    assert "CertificateRequest" not in out and "Certificate Request" not in out, out[-2000:]


class SClient:
    """`openssl s_client -starttls xmpp`: OpenSSL's own client, whose command
    letters ('K': KeyUpdate, update requested) reach what Python's ssl hides."""

    def __init__(self, port):
        self.p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-starttls", "xmpp",
             "-xmpphost", "guest.localhost", "-tls1_3", "-msg"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for chunk in iter(lambda: self.p.stdout.read1(65536), b""):
            with self.lock:
                self.out += chunk

    def line(self, text):
        self.p.stdin.write(text.encode() + b"\n")
        self.p.stdin.flush()

    def expect(self, pattern, after=0, timeout=DEADLINE):
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                m = rx.search(self.out, after)
            if m:
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n{self.out[after:][-3000:].decode(errors='replace')}")

    def close(self):
        self.p.kill()
        self.p.wait(timeout=10)


def test_key_update_from_an_openssl_client(xmpp_server):
    # After the TLS 1.3 handshake the c2s stream keeps only its traffic keys
    # (src/net/tls_records.c). A client's KeyUpdate that asks for ours is
    # answered with our own, and the stream goes on under the new keys.
    srv = xmpp_server()
    c = SClient(c2s_port(srv))
    try:
        c.expect(rb"Protocol\s*: TLSv1\.3|New, TLSv1\.3")
        c.line("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
               " to='guest.localhost' version='1.0'>")
        m = c.expect(rb"<mechanism>ANONYMOUS</mechanism>")
        c.line("K")
        m = c.expect(rb"<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate", m.end())
        c.line("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
        m = c.expect(rb"<success", m.end())
        c.line("K")
        m = c.expect(rb"<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate", m.end())
        c.line("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
               " to='guest.localhost' version='1.0'>")
        m = c.expect(rb"urn:ietf:params:xml:ns:xmpp-bind", m.end())
        c.line("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        c.expect(rb"<jid>[^<]+@guest\.localhost/[^<]+</jid>", m.end())
    finally:
        c.close()
    assert srv.alive(), srv.log_tail()
