"""
XMPP clients against a real `hearth serve` (src/chat/c2s.c, xmpp.c,
app/chat_auth.c), with slixmpp as the client library: guests (SASL
ANONYMOUS on guest.<domain>), accounts with their password or a chat token
from the web app (SASL PLAIN after STARTTLS), resource binding, the
server's own iqs (disco#info, ping, roster), messages between local
sessions, guests kept off federation, and the stanza size limits before and
after authentication. A raw socket does the misbehaving (bad XML, a huge
stanza before logging in), while a slixmpp client checks that the others
are not disturbed.

Federation is off on this server (no s2s listener). The self-signed
certificate the server generates is accepted by turning verification off.
"""
import asyncio
import glob
import re
import socket
import sqlite3
import ssl
import subprocess
import time

import pytest
import requests

from hearthtest import HOST, Server, make_static_tree

PASSWORD = "correct horse battery staple"
DOMAIN = "localhost"
GUEST = "guest." + DOMAIN
DEADLINE = 15.0

slixmpp = pytest.importorskip("slixmpp")


# --- the server ---------------------------------------------------------------------------


def cli(srv, *args, input=None):
    res = subprocess.run([srv.bin, *args], input=input, env=srv.env(), capture_output=True,
                         text=True, timeout=60, cwd=str(srv.base))
    assert res.returncode == 0, f"hearth {' '.join(args)}: {res.stderr}"
    return res


def sql(srv, query, *args):
    paths = glob.glob(str(srv.data_dir / "*.db"))
    assert paths, "no database file"
    con = sqlite3.connect(paths[0], timeout=10)
    try:
        rows = con.execute(query, args).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


@pytest.fixture(scope="module")
def xsrv(bin_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("xmpp-c2s")
    tree = make_static_tree(base)
    srv = Server(bin_path, base / "srv", static_dir=tree.static_dir,
                 env={"HEARTH_XMPP_FEDERATION": "false", "HEARTH_XMPP_DOMAIN": DOMAIN})
    srv.start()
    for name in ("alice", "bob", "dora"):
        cli(srv, "user", "add", name, "--password-stdin", input=PASSWORD + "\n")
    sql(srv, "UPDATE users SET disabled = 1 WHERE name = 'dora'")
    yield srv
    srv.stop()


@pytest.fixture
def server(xsrv):
    assert xsrv.alive(), "server died before this test:\n" + xsrv.log_tail()
    yield xsrv
    assert xsrv.alive(), "server died during this test:\n" + xsrv.log_tail()


# --- slixmpp in one event loop per test ----------------------------------------------------


def run(coro):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))
    finally:
        # slixmpp leaves tasks behind (filters, keepalives): end them here.
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)


class LoginFailed(Exception):
    pass


async def login(srv, jid, password="", mech=None):
    """A connected, bound slixmpp client; LoginFailed(reason) otherwise."""
    x = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    x.register_plugin("xep_0030")
    x.register_plugin("xep_0199")
    x.enable_plaintext = False
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE  # the generated certificate is self-signed
    x.inbox = asyncio.Queue()
    x.errors = asyncio.Queue()
    x.add_event_handler("message", lambda m: x.inbox.put_nowait(m))
    x.add_event_handler("message_error", lambda m: x.errors.put_nowait(m))
    result = asyncio.get_event_loop().create_future()

    def done(what):
        if not result.done():
            result.set_result(what)

    x.add_event_handler("session_bind", lambda _: done("ok"))
    x.add_event_handler("failed_all_auth", lambda _: done("failed_auth"))
    x.add_event_handler("failed_auth", lambda _: done("failed_auth"))
    x.add_event_handler("connection_failed", lambda _: done("connection_failed"))
    x.add_event_handler("disconnected", lambda _: done("disconnected"))
    x.connect(address=(HOST, srv.c2s_port), force_starttls=True)
    try:
        got = await asyncio.wait_for(result, DEADLINE)
    except asyncio.TimeoutError:
        got = "timeout"
    if got != "ok":
        x.disconnect()
        raise LoginFailed(got)
    return x


async def bye(*clients):
    waits = [x.disconnect() for x in clients]
    for w in waits:
        if w is not None:
            try:
                await asyncio.wait_for(w, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass


async def next_message(q, timeout=DEADLINE):
    return await asyncio.wait_for(q.get(), timeout)


# --- raw streams, for misbehaving ----------------------------------------------------------


def raw_stream(srv, to=DOMAIN):
    s = socket.create_connection((HOST, srv.c2s_port), timeout=DEADLINE)
    s.sendall((f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               f"xmlns:stream='http://etherx.jabber.org/streams' to='{to}' "
               f"version='1.0'>").encode())
    return s


def read_until_closed(s, timeout=DEADLINE):
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            return data, True
        data += chunk
    return data, False


# --- tests ---------------------------------------------------------------------------------


def test_guest_anonymous_login(server):
    async def go():
        g = await login(server, GUEST, mech="ANONYMOUS")
        jid = g.boundjid
        await bye(g)
        return jid

    jid = run(go())
    assert jid.domain == GUEST
    assert jid.user and jid.resource


def test_account_password_login_with_resource(server):
    async def go():
        a = await login(server, f"alice@{DOMAIN}/desk", PASSWORD)
        jid = a.boundjid.full
        await bye(a)
        return jid

    assert run(go()) == f"alice@{DOMAIN}/desk"
    assert server.wait_for_log(r"xmpp c2s .*bound alice@localhost/desk")


def test_wrong_password_and_disabled_account_are_refused(server):
    async def go(jid, pw):
        try:
            x = await login(server, jid, pw)
        except LoginFailed as e:
            return str(e)
        await bye(x)
        return "ok"

    assert run(go(f"alice@{DOMAIN}", "not the password")) == "failed_auth"
    assert run(go(f"nobody@{DOMAIN}", PASSWORD)) == "failed_auth"
    assert run(go(f"dora@{DOMAIN}", PASSWORD)) == "failed_auth"
    assert server.wait_for_log(r"authentication failed \(account-disabled")
    assert server.wait_for_log(r"authentication failed \(not-authorized")


def test_token_login(server):
    s = requests.Session()
    r = s.post(server.url + "/api/v1/auth/login", json={"login": "bob", "password": PASSWORD},
               timeout=15)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    r = s.post(server.url + "/api/v1/chat/token", headers={"X-CSRF-Token": csrf}, timeout=15)
    if r.status_code == 404:
        pytest.skip("POST /api/v1/chat/token is not there yet")
    assert r.status_code == 200, r.text
    token = r.json()["token"]

    async def go(jid, secret):
        try:
            x = await login(server, jid, secret)
        except LoginFailed as e:
            return str(e)
        got = x.boundjid.bare
        await bye(x)
        return got

    assert run(go(f"bob@{DOMAIN}", token)) == f"bob@{DOMAIN}"
    # bob's token is not alice's, and a changed one is nobody's
    assert run(go(f"alice@{DOMAIN}", token)) == "failed_auth"
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert run(go(f"bob@{DOMAIN}", forged)) == "failed_auth"


def test_disco_ping_roster(server):
    async def go():
        a = await login(server, f"alice@{DOMAIN}/disco", PASSWORD)
        info = await a["xep_0030"].get_info(jid=DOMAIN, timeout=DEADLINE)
        items = await a["xep_0030"].get_items(jid=DOMAIN, timeout=DEADLINE)
        rtt = await a["xep_0199"].ping(jid=DOMAIN, timeout=DEADLINE)
        rtt_self = await a["xep_0199"].ping(jid=f"alice@{DOMAIN}", timeout=DEADLINE)
        roster = await a.get_roster(timeout=DEADLINE)
        await bye(a)
        return info, items, rtt, rtt_self, roster

    info, items, rtt, rtt_self, roster = run(go())
    q = info["disco_info"]
    assert ("server", "im") in {(i[0], i[1]) for i in q["identities"]}
    assert "urn:xmpp:ping" in q["features"]
    assert f"chat.{DOMAIN}" in {i[0] for i in items["disco_items"]["items"]}
    assert rtt is not None and rtt_self is not None
    assert roster["type"] == "result"
    assert len(roster["roster"]["items"]) == 0


def test_messages_between_local_sessions(server):
    async def go():
        a = await login(server, f"alice@{DOMAIN}/m", PASSWORD)
        b = await login(server, f"bob@{DOMAIN}/m", PASSWORD)
        a.send_message(mto=f"bob@{DOMAIN}", mbody="hello bob", mtype="chat")
        m1 = await next_message(b.inbox)
        b.send_message(mto=f"alice@{DOMAIN}/m", mbody="hello alice", mtype="chat")
        m2 = await next_message(a.inbox)
        # a big one after authentication: 200 KiB of body
        big = "z" * (200 * 1024)
        a.send_message(mto=f"bob@{DOMAIN}/m", mbody=big, mtype="chat")
        m3 = await next_message(b.inbox)
        await bye(a, b)
        return m1, m2, m3

    m1, m2, m3 = run(go())
    assert m1["body"] == "hello bob" and m1["from"].full == f"alice@{DOMAIN}/m"
    assert m2["body"] == "hello alice" and m2["from"].full == f"bob@{DOMAIN}/m"
    assert len(m3["body"]) == 200 * 1024


def test_guest_cannot_reach_other_servers(server):
    async def go():
        g = await login(server, GUEST, mech="ANONYMOUS")
        g.send_message(mto="someone@example.org", mbody="hi", mtype="chat")
        err = await next_message(g.errors)
        await bye(g)
        return err

    err = run(go())
    assert err["type"] == "error"
    assert err["error"]["condition"] == "service-unavailable"


def test_bad_xml_ends_only_that_stream(server):
    async def go():
        a = await login(server, f"alice@{DOMAIN}/steady", PASSWORD)
        loop = asyncio.get_event_loop()

        def misbehave():
            s = raw_stream(server)
            s.sendall(b"<message><body>oops</bod></message>")
            data, closed = read_until_closed(s)
            s.close()
            return data, closed

        data, closed = await loop.run_in_executor(None, misbehave)
        rtt = await a["xep_0199"].ping(jid=DOMAIN, timeout=DEADLINE)
        await bye(a)
        return data, closed, rtt

    data, closed, rtt = run(go())
    assert b"not-well-formed" in data
    assert closed
    assert rtt is not None
    assert server.wait_for_log(r"xmpp c2s .*stream error not-well-formed: .*mismatched tag")


def test_big_stanza_before_auth_cuts_the_stream(server):
    s = raw_stream(server)
    try:
        s.sendall(b"<iq type='get' id='x'><query xmlns='urn:x'>" + b"a" * 12000 + b"</query></iq>")
        data, closed = read_until_closed(s)
    finally:
        s.close()
    assert b"policy-violation" in data
    assert closed
    assert server.wait_for_log(r"xmpp c2s .*stream error policy-violation: .*over 10000 bytes")


def test_stanza_over_256k_after_auth_is_refused(server):
    async def go():
        a = await login(server, f"alice@{DOMAIN}/huge", PASSWORD)
        gone = asyncio.get_event_loop().create_future()
        a.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(True))
        a.send_message(mto=f"bob@{DOMAIN}", mbody="z" * (300 * 1024), mtype="chat")
        try:
            await asyncio.wait_for(gone, DEADLINE)
            return True
        except asyncio.TimeoutError:
            await bye(a)
            return False

    assert run(go())
    assert server.wait_for_log(r"xmpp c2s .*huge: stream error policy-violation: .*over 262144")


def test_guests_cannot_message_accounts(server):
    # Guests talk in rooms; a message to an account (bare or full JID) is
    # refused with service-unavailable and never delivered.
    async def go():
        a = await login(server, f"alice@{DOMAIN}/inbox", PASSWORD)
        b = await login(server, f"bob@{DOMAIN}/marker", PASSWORD)
        g = await login(server, GUEST, mech="ANONYMOUS")
        g.send_message(mto=f"alice@{DOMAIN}", mbody="spam bare", mtype="chat")
        e1 = await next_message(g.errors)
        g.send_message(mto=f"alice@{DOMAIN}/inbox", mbody="spam full", mtype="chat")
        e2 = await next_message(g.errors)
        # Whatever reached alice came before this marker.
        b.send_message(mto=f"alice@{DOMAIN}/inbox", mbody="marker", mtype="chat")
        first = await next_message(a.inbox)
        await bye(a, b, g)
        return e1, e2, first

    e1, e2, first = run(go())
    for e in (e1, e2):
        assert e["type"] == "error"
        assert e["error"]["condition"] == "service-unavailable"
    assert first["body"] == "marker"


def chat_token(srv, name):
    s = requests.Session()
    r = s.post(srv.url + "/api/v1/auth/login", json={"login": name, "password": PASSWORD},
               timeout=15)
    assert r.status_code == 200, r.text
    r = s.post(srv.url + "/api/v1/chat/token",
               headers={"X-CSRF-Token": r.json()["csrf_token"]}, timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def test_wrong_passwords_do_not_lock_out_a_token_login(bin_path, tmp_path):
    # Failed passwords are throttled per client address (and address +
    # name), never per name alone, and a valid chat token is checked before
    # the throttle: someone guessing bob's password cannot keep bob's web
    # chat out.
    tree = make_static_tree(tmp_path)
    srv = Server(bin_path, tmp_path / "srv", static_dir=tree.static_dir,
                 env={"HEARTH_XMPP_FEDERATION": "false", "HEARTH_XMPP_DOMAIN": DOMAIN,
                      "HEARTH_AUTH_LOGIN_ATTEMPTS": "3"})
    srv.start()
    try:
        cli(srv, "user", "add", "bob", "--password-stdin", input=PASSWORD + "\n")
        token = chat_token(srv, "bob")

        async def go(jid, secret):
            try:
                x = await login(srv, jid, secret)
            except LoginFailed as e:
                return str(e)
            got = x.boundjid.bare
            await bye(x)
            return got

        for _ in range(3):
            assert run(go(f"bob@{DOMAIN}", "not the password")) == "failed_auth"
        # From this address passwords wait now, even the right one ...
        assert run(go(f"bob@{DOMAIN}", PASSWORD)) == "failed_auth"
        assert srv.wait_for_log(r"chat: login for 'bob' from 127\.0\.0\.1 throttled")
        # ... but the chat token of the web client gets in.
        assert run(go(f"bob@{DOMAIN}", token)) == f"bob@{DOMAIN}"
        assert srv.alive()
    finally:
        srv.stop()
