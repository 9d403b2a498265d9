"""
XMPP over WebSocket (RFC 7395) at /xmpp-websocket on the HTTP server: the
handshake (101, subprotocol xmpp, Origin), a guest logging in with RFC 7395
framing, the limits (message size, malformed XML), the close and the
server's shutdown, and plain HTTP on the same server going on beside it.

python3-websockets (asyncio) is the well-behaved client; a raw socket
sends what a library would tidy up (the handshake and the first frame in
one packet, a handshake without the subprotocol).
"""
import asyncio
import base64
import hashlib
import os
import re
import struct

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from hearthtest import HOST, GoodClient

PATH = "/xmpp-websocket"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WAIT = 10  # seconds for any one answer


def ws_url(server):
    return f"ws://{HOST}:{server.port}{PATH}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def connect(server, origin="self", subprotocols=("xmpp",), **kw):
    if origin == "self":
        origin = server.url
    return websockets.connect(
        ws_url(server),
        subprotocols=list(subprotocols) if subprotocols is not None else None,
        origin=origin,
        ping_interval=None,
        open_timeout=WAIT,
        close_timeout=WAIT,
        **kw,
    )


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), WAIT)


def open_el(to):
    return f'<open xmlns="{FRAMING}" to="{to}" version="1.0"/>'


async def guest_login(ws, domain="localhost"):
    """RFC 7395 guest login: open, ANONYMOUS, open again, bind. Returns the JID."""
    guest = "guest." + domain
    await ws.send(open_el(guest))
    opened = await recv(ws)
    assert opened.startswith("<open") and FRAMING in opened, opened
    features = await recv(ws)
    assert "<stream:features" in features and "ANONYMOUS" in features, features
    await ws.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>')
    success = await recv(ws)
    assert success.startswith("<success"), success
    await ws.send(open_el(guest))
    opened = await recv(ws)
    assert opened.startswith("<open"), opened
    features = await recv(ws)
    assert "urn:ietf:params:xml:ns:xmpp-bind" in features, features
    await ws.send(
        '<iq xmlns="jabber:client" type="set" id="b1">'
        '<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>'
    )
    result = await recv(ws)
    assert 'type="result"' in result or "type='result'" in result, result
    m = re.search(r"<jid>([^<]+)</jid>", result)
    assert m, result
    return m.group(1)


# --- a raw client -----------------------------------------------------------


def upgrade_request(server, key=None, origin=None, protocol="xmpp", extra=""):
    key = key or base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if origin:
        head += f"Origin: {origin}\r\n"
    if protocol:
        head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    return (head + extra + "\r\n").encode(), key


def client_frame(payload, opcode=0x1, fin=True):
    if isinstance(payload, str):
        payload = payload.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(conn):
    """One server frame off a hearthtest RawConn: (opcode, payload)."""
    head = conn._read_exact(2)
    assert head[1] & 0x80 == 0, "a server frame must not be masked"
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn._read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", conn._read_exact(8))[0]
    return head[0] & 0x0F, conn._read_exact(n)


# --- the handshake ------------------------------------------------------------


def test_handshake_101_with_accept_and_subprotocol(server):
    with server.raw() as c:
        req, key = upgrade_request(server, origin=server.url, protocol="chat, xmpp")
        c.send(req)
        r = c.read_response(head=True)
        assert r.status == 101
        assert r.header("upgrade").lower() == "websocket"
        assert "upgrade" in r.header("connection").lower()
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert r.header("sec-websocket-accept") == want
        assert r.header("sec-websocket-protocol") == "xmpp"
        assert r.header("content-length") is None


def test_library_client_negotiates_xmpp(server):
    async def go():
        async with connect(server) as ws:
            assert ws.subprotocol == "xmpp"
            # The keepalive ping of a client is answered.
            pong = await ws.ping(b"hi")
            await asyncio.wait_for(pong, WAIT)

    run(go())


def test_missing_origin_is_allowed(server):
    # Non-browser clients send no Origin; only a wrong one is refused.
    async def go():
        async with connect(server, origin=None) as ws:
            assert ws.subprotocol == "xmpp"

    run(go())


@pytest.mark.parametrize("origin", ["http://evil.example", "null", f"http://{HOST}:1"])
def test_wrong_origin_is_403(server, origin):
    async def go():
        with pytest.raises(InvalidStatusCode) as ei:
            async with connect(server, origin=origin):
                pass
        assert ei.value.status_code == 403

    run(go())
    with server.raw() as c:
        c.send(upgrade_request(server, origin=origin)[0])
        r = c.read_response()
        assert r.status == 403
        assert r.header("sec-websocket-accept") is None


def test_subprotocol_xmpp_is_required(server):
    async def go(protocols):
        with pytest.raises(InvalidStatusCode) as ei:
            async with connect(server, subprotocols=protocols):
                pass
        assert ei.value.status_code == 400

    run(go(None))
    run(go(("chat",)))
    run(go(("XMPP",)))


def test_not_a_websocket_request(server):
    r = requests.get(server.url + PATH, timeout=5)
    assert r.status_code == 426
    assert r.headers.get("Upgrade", "").lower() == "websocket"
    with server.raw() as c:
        c.send(upgrade_request(server, extra="")[0].replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
        r = c.read_response()
        assert r.status == 426
        assert r.header("sec-websocket-version") == "13"
    with server.raw() as c:
        c.send(upgrade_request(server, key="short")[0])
        assert c.read_response().status == 400
    # The connection that was refused still serves HTTP.
    with server.raw() as c:
        c.send(upgrade_request(server, origin="http://evil.example")[0])
        assert c.read_response().status == 403
        assert c.request("GET", "/healthz").status == 200


def test_first_frame_in_the_same_packet_as_the_handshake(server):
    # What the client sent right behind the request head belongs to the
    # WebSocket: it must not be lost in the hand-over from HTTP.
    with server.raw() as c:
        req, _ = upgrade_request(server, origin=server.url)
        c.send(req + client_frame(open_el("guest.localhost")))
        r = c.read_response(head=True)
        assert r.status == 101
        op, payload = read_frame(c)
        assert op == 0x1
        assert payload.startswith(b"<open") and FRAMING.encode() in payload
        op, payload = read_frame(c)
        assert b"ANONYMOUS" in payload
        # Close handshake: the server answers our close and closes TCP.
        c.send(client_frame(struct.pack("!H", 1000), opcode=0x8))
        while True:
            op, payload = read_frame(c)
            if op == 0x8:
                break
        assert struct.unpack("!H", payload[:2])[0] == 1000
        assert c.wait_closed(WAIT)


# --- XMPP over it ------------------------------------------------------------------


def test_guest_logs_in_and_closes(server):
    async def go():
        async with connect(server) as ws:
            jid = await guest_login(ws)
            assert re.fullmatch(r"[^@/]+@guest\.localhost/.+", jid), jid
            # RFC 7395 3.6: <close/> is answered with <close/>, then the
            # server closes the WebSocket.
            await ws.send(f'<close xmlns="{FRAMING}"/>')
            msg = await recv(ws)
            assert msg.startswith("<close"), msg
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1000

    with GoodClient(server):
        run(go())


def test_oversized_message_closes_only_that_connection(server):
    async def go():
        async with connect(server) as other:
            await other.send(open_el("guest.localhost"))
            assert (await recv(other)).startswith("<open")
            await recv(other)  # features
            async with connect(server) as big:
                await big.send("<message>" + "x" * (300 * 1024) + "</message>")
                with pytest.raises(ConnectionClosed):
                    await recv(big)
                assert big.close_code == 1009
            # The other session carries on: it logs in after all that.
            await other.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>')
            assert (await recv(other)).startswith("<success")
        # And a fresh one works too.
        async with connect(server) as again:
            assert "@guest.localhost/" in await guest_login(again)

    with GoodClient(server):
        run(go())
    assert server.wait_for_log(r"ws .*closing \(1009\)")


def test_fragmented_messages_are_reassembled_and_counted_whole(server):
    async def go():
        async with connect(server) as ws:
            el = open_el("guest.localhost")
            await ws.send(iter([el[:10], el[10:30], el[30:]]))
            assert (await recv(ws)).startswith("<open")
            assert "ANONYMOUS" in await recv(ws)
        # 300 KiB in fragments of 60 KiB: no one frame is too big, the
        # message is.
        async with connect(server) as ws:
            await ws.send(open_el("guest.localhost"))
            await recv(ws)
            await recv(ws)
            body = "<message>" + "y" * (300 * 1024) + "</message>"
            await ws.send(iter([body[i:i + 60 * 1024] for i in range(0, len(body), 60 * 1024)]))
            with pytest.raises(ConnectionClosed):
                while True:
                    await recv(ws)
            assert ws.close_code == 1009

    run(go())


def test_malformed_xml_gets_a_stream_error_and_close(server):
    async def go():
        async with connect(server) as ws:
            await ws.send(open_el("guest.localhost"))
            await recv(ws)
            await recv(ws)
            await ws.send("<message><body>oops</message>")
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(await recv(ws))
            text = "".join(got)
            assert "<stream:error" in text, got
            assert "not-well-formed" in text or "bad-format" in text, got
            assert got[-1].startswith("<close"), got
            assert ws.close_code == 1000

    with GoodClient(server):
        run(go())


def test_binary_message_is_refused(server):
    async def go():
        async with connect(server) as ws:
            await ws.send(b"\x00\x01")
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == 1003

    run(go())


def test_many_sessions_and_http_at_once(server):
    async def go():
        conns = [await connect(server).__aenter__() for _ in range(10)]
        try:
            jids = await asyncio.gather(*(guest_login(ws) for ws in conns))
            assert len(set(jids)) == 10
            r = await asyncio.get_running_loop().run_in_executor(
                None, lambda: requests.get(server.url + "/healthz", timeout=5))
            assert r.status_code == 200
        finally:
            for ws in conns:
                await ws.close()

    with GoodClient(server):
        run(go())


def test_shutdown_closes_websockets(start_server):
    srv = start_server()

    async def go():
        async with connect(srv) as ws:
            await guest_login(ws)
            srv.signal(__import__("signal").SIGTERM)
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(await recv(ws))
            text = "".join(got)
            assert "system-shutdown" in text, got

    run(go())
    assert srv.wait_exit() == 0, srv.log_tail()


def test_websocket_origins_setting(start_server):
    srv = start_server(env={"HEARTH_XMPP_WEBSOCKET_ORIGINS": "https://chat.example, https://b.example"})

    async def go(origin):
        try:
            async with connect(srv, origin=origin) as ws:
                return ws.subprotocol
        except InvalidStatusCode as e:
            return e.status_code

    assert run(go("https://chat.example")) == "xmpp"
    assert run(go("https://b.example:443")) == "xmpp"
    # The list replaces site.public_url's origin.
    assert run(go(srv.url)) == 403


def test_silent_client_is_pinged_then_timed_out(start_server):
    # A client that answers nothing (not even pings) is pinged every
    # xmpp.keepalive, and after xmpp.idle_timeout its stream ends with
    # connection-timeout and a close.
    srv = start_server(env={"HEARTH_XMPP_KEEPALIVE": "1s", "HEARTH_XMPP_IDLE_TIMEOUT": "2s"})
    with srv.raw(timeout=WAIT) as c:
        req, _ = upgrade_request(srv, origin=srv.url)
        c.send(req + client_frame(open_el("guest.localhost")))
        assert c.read_response(head=True).status == 101
        seen = []
        while True:
            op, payload = read_frame(c)
            seen.append((op, payload))
            if op == 0x8:
                break
        ops = [op for op, _ in seen]
        assert 0x9 in ops, ops  # pinged before giving up
        text = b"".join(p for op, p in seen if op == 0x1)
        assert b"connection-timeout" in text, seen
        # Answer the close: the server then closes the TCP connection.
        c.send(client_frame(struct.pack("!H", 1000), opcode=0x8))
        assert c.wait_closed(WAIT)
    # A client that answers pings is not timed out meanwhile.
    async def go():
        async with connect(srv) as ws:
            await ws.send(open_el("guest.localhost"))
            await recv(ws)
            await recv(ws)
            await asyncio.sleep(3)
            await ws.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>')
            assert (await recv(ws)).startswith("<success")

    run(go())


# --- a WebSocket that is closing while the room talks to it ---------------------------------


def hearth_cli(srv, *args, input=None):
    res = __import__("subprocess").run([srv.bin, *args], input=input, env=srv.env(),
                                       capture_output=True, text=True, timeout=60,
                                       cwd=str(srv.base))
    assert res.returncode == 0, f"hearth {' '.join(args)}: {res.stderr}"
    return res.stdout


def raw_guest(srv):
    """A raw WebSocket guest, logged in and bound: (RawConn, JID)."""
    c = srv.raw(timeout=WAIT)
    req, _ = upgrade_request(srv, origin=srv.url)
    c.send(req)
    assert c.read_response(head=True).status == 101
    c.send(client_frame(open_el("guest.localhost")))
    read_frame(c), read_frame(c)
    c.send(client_frame('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>'))
    assert read_frame(c)[1].startswith(b"<success")
    c.send(client_frame(open_el("guest.localhost")))
    read_frame(c), read_frame(c)
    c.send(client_frame('<iq xmlns="jabber:client" type="set" id="b1">'
                        '<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>'))
    m = re.search(rb"<jid>([^<]+)</jid>", read_frame(c)[1])
    assert m
    return c, m.group(1).decode()


def test_room_delivery_to_a_closing_websocket(start_server):
    # A guest joins a room that is not loaded yet and, in the same packet,
    # sends a WebSocket close frame, keeping TCP open. The room answers the
    # join after its database lookup, when every write to that WebSocket
    # fails: the session must go away later, not from inside the room's
    # delivery (that freed the room under the MUC: a use-after-free, caught
    # by an ASan build as a crash or a report in the log).
    srv = start_server(env={"HEARTH_XMPP_FEDERATION": "false", "HEARTH_XMPP_DOMAIN": "localhost"})
    hearth_cli(srv, "user", "add", "alice", "--password-stdin",
               input="correct horse battery staple\n")
    out = hearth_cli(srv, "channel", "add", "--owner", "alice", "--title", "Closing", "--json")
    room = re.search(r'"slug":\s*"([^"]+)"', out).group(1) + "@chat.localhost"
    conns = []
    try:
        for i in range(3):
            c, _ = raw_guest(srv)
            conns.append(c)
            nick = "n" + os.urandom(4).hex()  # not cached: the room looks it up first
            join = (f'<presence xmlns="jabber:client" to="{room}/{nick}">'
                    '<x xmlns="http://jabber.org/protocol/muc"/></presence>')
            c.send(client_frame(join) + client_frame(struct.pack("!H", 1000), opcode=0x8))
            assert srv.wait_for_log(r"xmpp c2s .*write failed", timeout=WAIT, count=i + 1), \
                srv.log_tail()
            assert srv.alive(), srv.log_tail()
        # The room carries on: a new guest joins and is told it is in.
        c, jid = raw_guest(srv)
        conns.append(c)
        c.send(client_frame(f'<presence xmlns="jabber:client" to="{room}/steady">'
                            '<x xmlns="http://jabber.org/protocol/muc"/></presence>'))
        seen = b""
        while b"status code='110'" not in seen and b'status code="110"' not in seen:
            op, payload = read_frame(c)
            assert op == 0x1, (op, payload)
            seen += payload
    finally:
        for c in conns:
            c.close()
    assert srv.alive(), srv.log_tail()
    log = srv.log()
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-4000:]
