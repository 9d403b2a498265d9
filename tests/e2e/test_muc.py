"""
Channel chat rooms (XEP-0045 on chat.<domain>, src/chat/muc*.c, mam.c)
against a real `hearth serve`, with slixmpp clients over TCP (STARTTLS,
the generated certificate accepted): guests and accounts joining and
talking, stanza-id and occupant-id on every message, join history with
delays, MAM with RSM paging, kick, ban (the guest's address too), voice in
a room where guests are visitors, retraction and moderation leaving
tombstones in the archive, self-ping, the length cap, the rate limit,
banned words, and a client that sends bad XML being cut off while the room
carries on. Protected channels are members-only rooms; unknown room names,
archive queries and retractions of old messages are bounded and checked.

The tests send raw stanzas (send_raw) and look at everything that comes
back, so they check the protocol rather than slixmpp's MUC plugin.
"""
import asyncio
import glob
import re
import socket
import sqlite3
import ssl
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from hearthtest import HOST, Server, make_static_tree

PASSWORD = "correct horse battery staple"
DOMAIN = "localhost"
GUEST = "guest." + DOMAIN
MUC = "chat." + DOMAIN
DEADLINE = 10.0

NS_USER = "{http://jabber.org/protocol/muc#user}"
NS_MAM = "{urn:xmpp:mam:2}"
NS_RSM = "{http://jabber.org/protocol/rsm}"

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402


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
def msrv(bin_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("muc")
    tree = make_static_tree(base)
    srv = Server(bin_path, base / "srv", static_dir=tree.static_dir,
                 env={"HEARTH_XMPP_FEDERATION": "false", "HEARTH_XMPP_DOMAIN": DOMAIN,
                      "HEARTH_XMPP_MAX_MESSAGE_LENGTH": "100",
                      "HEARTH_XMPP_MESSAGE_BURST": "5",
                      "HEARTH_XMPP_MESSAGE_INTERVAL": "1s"})
    srv.start()
    for name in ("alice", "bob", "carol"):
        cli(srv, "user", "add", name, "--password-stdin", input=PASSWORD + "\n")
    yield srv
    srv.stop()


@pytest.fixture
def server(msrv):
    assert msrv.alive(), "server died before this test:\n" + msrv.log_tail()
    yield msrv
    assert msrv.alive(), "server died during this test:\n" + msrv.log_tail()


def channel(srv, **cols):
    """A new channel owned by alice; its room JID."""
    title = "Room " + uuid.uuid4().hex[:8]
    res = cli(srv, "channel", "add", "--owner", "alice", "--title", title, "--json")
    slug = re.search(r'"slug":\s*"([^"]+)"', res.stdout).group(1)
    for k, v in cols.items():
        sql(srv, f"UPDATE channels SET {k} = ? WHERE slug = ?", v, slug)
    return f"{slug}@{MUC}", slug


# --- slixmpp in one event loop per test ----------------------------------------------------


def run(coro):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 90))
    finally:
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)


async def login(srv, jid, password="", mech=None):
    x = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    x.enable_plaintext = False
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    x.got = []
    for kind in ("message", "presence", "iq"):
        x.register_handler(Callback(f"muc-test-{kind}", MatchXPath("{jabber:client}%s" % kind),
                                    lambda st, x=x: x.got.append(st.xml)))
    result = asyncio.get_event_loop().create_future()

    def done(what):
        if not result.done():
            result.set_result(what)

    x.add_event_handler("session_bind", lambda _: done("ok"))
    x.add_event_handler("failed_all_auth", lambda _: done("failed_auth"))
    x.add_event_handler("connection_failed", lambda _: done("connection_failed"))
    x.add_event_handler("disconnected", lambda _: done("disconnected"))
    x.connect(address=(HOST, srv.c2s_port), force_starttls=True)
    got = await asyncio.wait_for(result, DEADLINE)
    assert got == "ok", got
    return x


async def guest(srv):
    return await login(srv, GUEST, mech="ANONYMOUS")


async def account(srv, name, resource="r"):
    return await login(srv, f"{name}@{DOMAIN}/{resource}", PASSWORD)


async def bye(*clients):
    for x in clients:
        w = x.disconnect()
        if w is not None:
            try:
                await asyncio.wait_for(w, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass


def text(el):
    return ET.tostring(el, encoding="unicode")


async def wait(x, pred, timeout=DEADLINE, what="a stanza"):
    """The first stanza x got that pred accepts (removed from x.got)."""
    deadline = time.monotonic() + timeout
    while True:
        for i, el in enumerate(x.got):
            if pred(el):
                return x.got.pop(i)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} for {x.boundjid}; got:\n" +
                                 "\n".join(text(e) for e in x.got[-15:]))
        await asyncio.sleep(0.02)


async def quiet(x, pred, seconds=0.5):
    """Nothing pred accepts arrives within seconds."""
    await asyncio.sleep(seconds)
    return not any(pred(el) for el in x.got)


def codes(el):
    return {s.get("code") for s in el.iter(NS_USER + "status")}


def is_(kind, frm=None, typ=None):
    def p(el):
        return (el.tag == "{jabber:client}" + kind and (frm is None or el.get("from") == frm)
                and (typ is None or el.get("type") == typ))
    return p


def body_is(b):
    return lambda el: el.tag == "{jabber:client}message" and el.findtext("{jabber:client}body") == b


def error_cond(el):
    e = el.find("{jabber:client}error")
    if e is None:
        return None
    for c in e:
        if c.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and not c.tag.endswith("text"):
            return c.tag.split("}")[1]
    return None


async def join(x, room, nick, history=None, expect_ok=True):
    h = f"<history {history}/>" if history else ""
    x.send_raw(f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{h}</x></presence>")
    p = await wait(x, lambda el: el.tag == "{jabber:client}presence" and
                   el.get("from") == f"{room}/{nick}" and ("110" in codes(el) or el.get("type") == "error"),
                   what=f"self-presence in {room}")
    if expect_ok:
        assert p.get("type") is None, text(p)
        # the subject ends the join
        await wait(x, lambda el: el.find("{jabber:client}subject") is not None, what="subject")
    return p


def say(x, room, body, extra="", mid=None):
    mid = mid or uuid.uuid4().hex
    x.send_raw(f"<message type='groupchat' to='{room}' id='{mid}'><body>{body}</body>{extra}</message>")
    return mid


async def iq(x, to, payload, typ="set"):
    qid = uuid.uuid4().hex
    x.send_raw(f"<iq type='{typ}' to='{to}' id='{qid}'>{payload}</iq>")
    return await wait(x, lambda el: el.tag == "{jabber:client}iq" and el.get("id") == qid,
                      what=f"iq answer {qid}")


def stanza_id(el):
    s = el.find("{urn:xmpp:sid:0}stanza-id")
    return s.get("id") if s is not None else None


def occupant_id(el):
    s = el.find("{urn:xmpp:occupant-id:0}occupant-id")
    return s.get("id") if s is not None else None


# --- tests ---------------------------------------------------------------------------------


def test_guest_and_account_join_and_talk(server):
    room, slug = channel(server)

    async def go():
        a = await account(server, "alice")
        g = await guest(server)
        p = await join(a, room, "alice")
        assert {"110", "170"} <= codes(p) and "100" not in codes(p)  # semi-anonymous, logged
        item = p.find(NS_USER + "x").find(NS_USER + "item")
        assert item.get("affiliation") == "owner" and item.get("role") == "moderator"
        alice_oid = occupant_id(p)
        assert alice_oid
        p = await join(g, room, "viewer")
        item = p.find(NS_USER + "x").find(NS_USER + "item")
        assert item.get("affiliation") == "none" and item.get("role") == "participant"
        # alice (a moderator) sees the guest's real JID; the guest does not see hers
        pa = await wait(a, is_("presence", f"{room}/viewer"))
        assert pa.find(NS_USER + "x").find(NS_USER + "item").get("jid") == str(g.boundjid)
        await wait(g, is_("presence", f"{room}/alice"))  # occupant list (came before self)
        say(g, room, "hello room", mid="m-1")
        m = await wait(a, body_is("hello room"))
        assert m.get("from") == f"{room}/viewer" and m.get("id") == "m-1"
        sid = stanza_id(m)
        assert sid and m.find("{urn:xmpp:sid:0}stanza-id").get("by") == room
        oid = occupant_id(m)
        assert oid
        echo = await wait(g, body_is("hello room"))  # the sender's echo, same ids
        assert stanza_id(echo) == sid and occupant_id(echo) == oid
        # occupant-id is stable per user: alice's in presence and message agree
        say(a, room, "hi viewer")
        m2 = await wait(g, body_is("hi viewer"))
        assert occupant_id(m2) == alice_oid and alice_oid != oid
        # disco#info of the room
        info = await iq(g, room, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "get")
        feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert {"http://jabber.org/protocol/muc", "muc_persistent", "muc_public", "muc_open",
                "muc_semianonymous", "urn:xmpp:mam:2", "urn:xmpp:sid:0",
                "urn:xmpp:occupant-id:0", "urn:xmpp:message-moderate:1"} <= feats
        # the service lists the room (it has occupants)
        items = await iq(g, MUC, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "get")
        assert room in {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
        sinfo = await iq(g, MUC, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "get")
        ident = sinfo.find("{http://jabber.org/protocol/disco#info}query/{http://jabber.org/protocol/disco#info}identity")
        assert ident.get("category") == "conference" and ident.get("type") == "text"
        # self-ping (XEP-0410)
        r = await iq(g, f"{room}/viewer", "<ping xmlns='urn:xmpp:ping'/>", "get")
        assert r.get("type") == "result", text(r)
        # leaving
        g.send_raw(f"<presence type='unavailable' to='{room}/viewer'/>")
        lp = await wait(a, is_("presence", f"{room}/viewer", "unavailable"))
        assert lp is not None
        r = await iq(g, f"{room}/viewer", "<ping xmlns='urn:xmpp:ping'/>", "get")
        assert r.get("type") == "error" and error_cond(r) == "not-acceptable"
        await bye(a, g)

    run(go())


def test_reserved_nick_and_conflict(server):
    room, _ = channel(server)

    async def go():
        g = await guest(server)
        b = await account(server, "bob")
        p = await join(g, room, "Alice", expect_ok=False)  # alice's account name
        assert p.get("type") == "error" and error_cond(p) == "conflict", text(p)
        await join(b, room, "bob")  # his own name: fine
        g2 = await guest(server)
        p = await join(g2, room, "BOB", expect_ok=False)  # in use (and reserved)
        assert error_cond(p) == "conflict"
        await join(g, room, "someone")
        await bye(g, b, g2)

    run(go())


def test_history_on_join_and_mam_paging(server):
    room, _ = channel(server)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        for i in range(7):
            say(a, room, f"msg {i}")
            await wait(a, body_is(f"msg {i}"))
        g = await guest(server)
        await join(g, room, "late", history="maxstanzas='3'")
        hist = [el for el in g.got if el.findtext("{jabber:client}body")]
        assert [el.findtext("{jabber:client}body") for el in hist] == ["msg 4", "msg 5", "msg 6"]
        for el in hist:
            d = el.find("{urn:xmpp:delay}delay")
            assert d is not None and d.get("from") == room and d.get("stamp")

        # give the archive a moment to be written (batched on a worker)
        await asyncio.sleep(0.5)

        async def page(rsm, qid):
            r = await iq(g, room, f"<query xmlns='urn:xmpp:mam:2' queryid='{qid}'>"
                                  f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query>")
            assert r.get("type") == "result", text(r)
            res = [el for el in g.got if el.find(NS_MAM + "result") is not None and
                   el.find(NS_MAM + "result").get("queryid") == qid]
            for el in res:
                g.got.remove(el)
            fin = r.find(NS_MAM + "fin")
            bodies = [el.find(f"{NS_MAM}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
                      .findtext("{jabber:client}body") for el in res]
            return bodies, fin, res

        bodies, fin, res = await page("<max>3</max>", "q1")
        assert bodies == ["msg 0", "msg 1", "msg 2"]
        assert fin.get("complete") != "true"
        last = fin.find(NS_RSM + "set").findtext(NS_RSM + "last")
        assert last == res[-1].find(NS_MAM + "result").get("id")
        assert fin.find(NS_RSM + "set").findtext(NS_RSM + "count") == "7"
        fwd = res[0].find(f"{NS_MAM}result/{{urn:xmpp:forward:0}}forwarded")
        assert fwd.find("{urn:xmpp:delay}delay").get("stamp")
        bodies, fin, _ = await page(f"<max>3</max><after>{last}</after>", "q2")
        assert bodies == ["msg 3", "msg 4", "msg 5"]
        last = fin.find(NS_RSM + "set").findtext(NS_RSM + "last")
        bodies, fin, _ = await page(f"<max>3</max><after>{last}</after>", "q3")
        assert bodies == ["msg 6"] and fin.get("complete") == "true"
        bodies, fin, _ = await page("<max>2</max><before/>", "q4")  # the last page
        assert bodies == ["msg 5", "msg 6"]
        first = fin.find(NS_RSM + "set").findtext(NS_RSM + "first")
        bodies, fin, _ = await page(f"<max>2</max><before>{first}</before>", "q5")
        assert bodies == ["msg 3", "msg 4"]
        r = await iq(g, room, "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                              "<after>no-such-id</after></set></query>")
        assert r.get("type") == "error" and error_cond(r) == "item-not-found"

        # a room reloaded from the database still has its history
        await bye(g)
        a.send_raw(f"<presence type='unavailable' to='{room}/alice'/>")
        await wait(a, is_("presence", f"{room}/alice", "unavailable"))
        await asyncio.sleep(0.3)
        g = await guest(server)
        await join(g, room, "again", history="maxstanzas='2'")
        hist = [el.findtext("{jabber:client}body") for el in g.got if el.findtext("{jabber:client}body")]
        assert hist == ["msg 5", "msg 6"]
        await bye(a, g)

    run(go())


def test_kick_ban_and_unban(server):
    room, slug = channel(server)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        await join(g, room, "troll")
        # a guest cannot kick
        r = await iq(g, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              "<item nick='alice' role='none'/></query>")
        assert error_cond(r) in ("forbidden", "not-allowed")
        # kick: 307
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              "<item nick='troll' role='none'><reason>calm down</reason></item></query>")
        assert r.get("type") == "result", text(r)
        p = await wait(g, is_("presence", f"{room}/troll", "unavailable"))
        assert {"307", "110"} <= codes(p)
        await wait(a, lambda el: is_("presence", f"{room}/troll", "unavailable")(el) and "307" in codes(el))
        # back in, then banned: 301, and the guest's address is on the ban list
        await join(g, room, "troll")
        jid = g.boundjid.bare
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              f"<item jid='{jid}' affiliation='outcast'><reason>spam</reason></item></query>")
        assert r.get("type") == "result", text(r)
        p = await wait(g, is_("presence", f"{room}/troll", "unavailable"))
        assert "301" in codes(p)
        await asyncio.sleep(0.5)
        rows = sql(server, "SELECT jid, ip, reason FROM chat_bans WHERE channel_id ="
                           " (SELECT id FROM channels WHERE slug = ?)", slug)
        assert rows == [(jid, "127.0.0.1", "spam")], rows
        # a new guest JID from the same address is refused
        g2 = await guest(server)
        p = await join(g2, room, "troll2", expect_ok=False)
        assert p.get("type") == "error" and error_cond(p) == "forbidden"
        # an account from that address is not a guest: welcome
        b = await account(server, "bob")
        await join(b, room, "bob")
        # the outcast list, then the ban lifted
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              "<item affiliation='outcast'/></query>", "get")
        assert jid in {i.get("jid") for i in r.iter("{http://jabber.org/protocol/muc#admin}item")}
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              f"<item jid='{jid}' affiliation='none'/></query>")
        assert r.get("type") == "result"
        await asyncio.sleep(0.5)
        assert sql(server, "SELECT COUNT(*) FROM chat_bans WHERE jid = ?", jid) == [(0,)]
        await join(g2, room, "troll2")
        await bye(a, g, g2, b)

    run(go())


def test_visitors_and_voice(server):
    room, _ = channel(server, chat_guests_may_talk=0)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        p = await join(g, room, "quiet")
        assert p.find(NS_USER + "x").find(NS_USER + "item").get("role") == "visitor"
        say(g, room, "can I talk?")
        e = await wait(g, is_("message", room, "error"))
        assert error_cond(e) == "forbidden"
        assert await quiet(a, body_is("can I talk?"))
        # an account is a participant
        b = await account(server, "bob")
        p = await join(b, room, "bob")
        assert p.find(NS_USER + "x").find(NS_USER + "item").get("role") == "participant"
        # voice
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                              "<item nick='quiet' role='participant'/></query>")
        assert r.get("type") == "result", text(r)
        await wait(g, lambda el: is_("presence", f"{room}/quiet")(el) and "110" in codes(el))
        say(g, room, "thanks")
        await wait(a, body_is("thanks"))
        info = await iq(g, room, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "get")
        feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert "muc_moderated" in feats
        # the owner reads the configuration form; a guest may not
        r = await iq(a, room, "<query xmlns='http://jabber.org/protocol/muc#owner'/>", "get")
        assert r.get("type") == "result" and "muc#roomconfig_moderatedroom" in text(r)
        r = await iq(g, room, "<query xmlns='http://jabber.org/protocol/muc#owner'/>", "get")
        assert error_cond(r) == "forbidden"
        await bye(a, g, b)

    run(go())


def test_retraction_and_moderation_in_mam(server):
    room, _ = channel(server)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        await join(g, room, "typo")
        say(g, room, "teh message")
        m = await wait(a, body_is("teh message"))
        sid = stanza_id(m)
        say(g, room, "/me retracted a message",
            f"<retract xmlns='urn:xmpp:message-retract:1' id='{sid}'/>"
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>")
        r = await wait(a, lambda el: el.find("{urn:xmpp:message-retract:1}retract") is not None)
        assert r.find("{urn:xmpp:message-retract:1}retract").get("id") == sid
        assert occupant_id(r) == occupant_id(m)
        # someone else's message cannot be retracted by a participant
        say(a, room, "alice speaks")
        m2 = await wait(g, body_is("alice speaks"))
        say(g, room, "nope", f"<retract xmlns='urn:xmpp:message-retract:1' id='{stanza_id(m2)}'/>")
        e = await wait(g, is_("message", room, "error"))
        assert error_cond(e) == "forbidden"
        # a moderator removes a message (XEP-0425)
        say(g, room, "spam spam")
        m3 = await wait(a, body_is("spam spam"))
        r = await iq(a, room, f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{stanza_id(m3)}'>"
                              "<retract xmlns='urn:xmpp:message-retract:1'/><reason>spam</reason></moderate>")
        assert r.get("type") == "result", text(r)
        ann = await wait(g, lambda el: el.find("{urn:xmpp:message-retract:1}retract") is not None and
                         el.find("{urn:xmpp:message-retract:1}retract").get("id") == stanza_id(m3))
        assert ann.get("from") == room
        assert ann.find("{urn:xmpp:message-retract:1}retract/{urn:xmpp:message-moderate:1}moderated") is not None
        assert ann.find("{urn:xmpp:fasten:0}apply-to/{urn:xmpp:message-moderate:0}moderated") is not None
        # a guest cannot moderate
        r = await iq(g, room, f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{stanza_id(m2)}'>"
                              "<retract xmlns='urn:xmpp:message-retract:1'/></moderate>")
        assert error_cond(r) == "forbidden"
        # reactions and replies are relayed with ids
        say(a, room, "re", f"<reply xmlns='urn:xmpp:reply:0' to='{room}/typo' id='{stanza_id(m2)}'/>")
        await wait(g, lambda el: el.find("{urn:xmpp:reply:0}reply") is not None)
        a.send_raw(f"<message type='groupchat' to='{room}'><reactions xmlns='urn:xmpp:reactions:0'"
                   f" id='{stanza_id(m2)}'><reaction>👍</reaction></reactions></message>")
        rx = await wait(g, lambda el: el.find("{urn:xmpp:reactions:0}reactions") is not None)
        assert stanza_id(rx)
        # the archive holds tombstones, not the text
        await asyncio.sleep(0.7)
        r = await iq(a, room, "<query xmlns='urn:xmpp:mam:2' queryid='t'/>")
        assert r.get("type") == "result"
        arch = {}
        for el in a.got:
            res = el.find(NS_MAM + "result")
            if res is not None and res.get("queryid") == "t":
                arch[res.get("id")] = res.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        assert sid in arch and stanza_id(m3) in arch
        t1 = arch[sid]
        assert t1.findtext("{jabber:client}body") is None
        assert t1.find("{urn:xmpp:message-retract:1}retracted") is not None
        t3 = arch[stanza_id(m3)]
        assert t3.findtext("{jabber:client}body") is None
        assert t3.find("{urn:xmpp:message-retract:1}retracted/{urn:xmpp:message-moderate:1}moderated") is not None
        assert arch[stanza_id(m2)].findtext("{jabber:client}body") == "alice speaks"
        assert any(el.find("{urn:xmpp:reactions:0}reactions") is not None for el in arch.values())
        # and a newcomer's history has no trace of the retracted text
        g2 = await guest(server)
        await join(g2, room, "new")
        assert not any(el.findtext("{jabber:client}body") in ("teh message", "spam spam") for el in g2.got)
        await bye(a, g, g2)

    run(go())


def test_limits(server):
    room, slug = channel(server)
    sql(server, "INSERT INTO chat_banned_words (channel_id, word, created_at) VALUES"
                " ((SELECT id FROM channels WHERE slug = ?), 'frobnicate', 0)", slug)

    async def go():
        g = await guest(server)
        await join(g, room, "chatty")
        say(g, room, "x" * 101)
        e = await wait(g, is_("message", room, "error"))
        assert error_cond(e) == "not-acceptable"
        say(g, room, "please FROBNICATE it")
        e = await wait(g, is_("message", room, "error"))
        assert error_cond(e) == "not-acceptable"
        # burst of 5, then the rate limit
        for i in range(8):
            say(g, room, f"flood {i}")
        e = await wait(g, is_("message", room, "error"))
        assert error_cond(e) == "policy-violation"
        assert e.find("{jabber:client}error").get("type") == "wait"
        got = [el.findtext("{jabber:client}body") for el in g.got if el.findtext("{jabber:client}body")]
        assert "flood 0" in got and "flood 7" not in got
        await bye(g)

    run(go())


def test_private_messages_follow_the_room_rules(server):
    """A message to one occupant carries the sender's occupant-id (not a
    forged one), and the length cap and banned words hold as in the room."""
    room, slug = channel(server)
    sql(server, "INSERT INTO chat_banned_words (channel_id, word, created_at) VALUES"
                " ((SELECT id FROM channels WHERE slug = ?), 'frobnicate', 0)", slug)

    async def go():
        a, b = await guest(server), await guest(server)
        pa = await join(a, room, "sender")
        await join(b, room, "receiver")
        forged = ("<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/>"
                  "<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='%s'/>" % room)
        a.send_raw(f"<message type='chat' to='{room}/receiver'><body>psst</body>{forged}</message>")
        m = await wait(b, body_is("psst"), what="the private message")
        assert m.get("from") == f"{room}/sender", text(m)
        oids = [e.get("id") for e in m.iter("{urn:xmpp:occupant-id:0}occupant-id")]
        assert oids == [occupant_id(pa)], text(m)
        assert stanza_id(m) is None, text(m)
        for body in ("x" * 101, "you FROBNICATE"):
            a.send_raw(f"<message type='chat' to='{room}/receiver'><body>{body}</body></message>")
            e = await wait(a, is_("message", f"{room}/receiver", "error"))
            assert error_cond(e) == "not-acceptable", text(e)
        assert await quiet(b, lambda el: "FROBNICATE" in (el.findtext("{jabber:client}body") or ""))
        await bye(a, b)

    run(go())


def test_bad_xml_client_cut_off_room_carries_on(server):
    room, _ = channel(server)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        await join(g, room, "bad")
        # the misbehaving client: it writes broken XML on its stream
        g.send_raw("<message to='x'><body>unclosed</nobody></message>")
        p = await wait(a, is_("presence", f"{room}/bad", "unavailable"))
        assert p is not None
        # the room carries on
        g2 = await guest(server)
        await join(g2, room, "good")
        say(g2, room, "still here")
        await wait(a, body_is("still here"))
        await bye(a, g2)
        try:
            await bye(g)
        except Exception:  # noqa: BLE001 - already cut off
            pass

    run(go())


def test_flooding_client_is_cut_off(server):
    """A raw client that floods stanzas past the limits is disconnected; others keep chatting."""
    room, _ = channel(server)

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        await join(g, room, "flood")
        # one stanza past the post-authentication size limit (256 KiB)
        g.send_raw(f"<message type='groupchat' to='{room}'><body>{'y' * (300 * 1024)}</body></message>")
        await wait(a, is_("presence", f"{room}/flood", "unavailable"), timeout=15)
        say(a, room, "fine")
        await wait(a, body_is("fine"))
        await bye(a)

    run(go())


# --- the web page changes the room (muc_room_changed) -------------------------------------------


def web_login(srv, name):
    import requests
    s = requests.Session()
    r = s.post(srv.url + "/api/v1/auth/login", json={"login": name, "password": PASSWORD}, timeout=15)
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]

    def call(method, path, body=None):
        return s.request(method, srv.url + "/api/v1" + path, json=body,
                         headers={"X-CSRF-Token": csrf}, timeout=15)
    return call


def test_web_changes_reach_the_room(server):
    room, slug = channel(server)
    web = web_login(server, "alice")

    async def http(method, path, body=None):
        return await asyncio.get_event_loop().run_in_executor(None, lambda: web(method, path, body))

    async def go():
        g = await guest(server)
        await join(g, room, "viewer")
        b = await account(server, "bob")
        await join(b, room, "bob")
        info = await http("GET", f"/channels/{slug}/chat")
        assert info.json()["occupants"] == 2, info.text
        # banned words from the page
        r = await http("PUT", f"/channels/{slug}/banned-words", {"words": ["zap"]})
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.5)
        say(b, room, "zap zap")
        e = await wait(b, is_("message", room, "error"))
        assert error_cond(e) == "not-acceptable"
        # guests may not talk any more: the guest becomes a visitor
        r = await http("PATCH", f"/channels/{slug}", {"chat_guests_may_talk": False})
        assert r.status_code == 200, r.text
        p = await wait(g, lambda el: is_("presence", f"{room}/viewer")(el) and "110" in codes(el))
        assert p.find(NS_USER + "x").find(NS_USER + "item").get("role") == "visitor"
        # bob named moderator: admin, moderator role
        r = await http("POST", f"/channels/{slug}/moderators", {"user": "bob"})
        assert r.status_code == 201, r.text
        p = await wait(b, lambda el: is_("presence", f"{room}/bob")(el) and "110" in codes(el))
        item = p.find(NS_USER + "x").find(NS_USER + "item")
        assert (item.get("affiliation"), item.get("role")) == ("admin", "moderator")
        # chat off: the room is destroyed
        r = await http("PATCH", f"/channels/{slug}", {"chat_enabled": False})
        assert r.status_code == 200, r.text
        p = await wait(g, is_("presence", f"{room}/viewer", "unavailable"))
        assert p.find(f"{NS_USER}x/{NS_USER}destroy") is not None
        # and cannot be joined
        g2 = await guest(server)
        p = await join(g2, room, "late", expect_ok=False)
        assert p.get("type") == "error" and error_cond(p) == "item-not-found"
        info = await http("GET", f"/channels/{slug}/chat")
        assert info.json()["occupants"] == 0, info.text
        await bye(g, b, g2)

    run(go())


# --- protected channels, limits, old retractions ------------------------------------------------


def user_id(srv, name):
    return sql(srv, "SELECT id FROM users WHERE name = ?", name)[0][0]


def test_protected_channel_is_members_only(server):
    """channels.protected: owner, moderators, admins and invited accounts only (XEP-0045 7.2.7)."""
    room, slug = channel(server, protected=1)
    sql(server, "INSERT INTO channel_invites (channel_id, user_id, created_at) VALUES"
                " ((SELECT id FROM channels WHERE slug = ?), ?, 0)", slug, user_id(server, "bob"))

    async def go():
        g = await guest(server)
        p = await join(g, room, "snoop", expect_ok=False)
        assert p.get("type") == "error" and error_cond(p) == "registration-required", text(p)
        assert p.find("{jabber:client}error").get("type") == "auth"
        c = await account(server, "carol")
        p = await join(c, room, "carol", expect_ok=False)
        assert error_cond(p) == "registration-required", text(p)
        a = await account(server, "alice")
        await join(a, room, "alice")  # the owner
        b = await account(server, "bob")
        await join(b, room, "bob")  # invited
        say(b, room, "members only")
        await wait(a, body_is("members only"))
        # the archive: refused to outsiders, open to the invited
        await asyncio.sleep(0.3)
        for x in (g, c):
            r = await iq(x, room, "<query xmlns='urn:xmpp:mam:2'/>")
            assert r.get("type") == "error" and error_cond(r) == "registration-required", text(r)
            assert not any(el.find(NS_MAM + "result") is not None for el in x.got)
        r = await iq(b, room, "<query xmlns='urn:xmpp:mam:2' queryid='b'/>")
        assert r.get("type") == "result", text(r)
        # not listed, and says what it is
        items = await iq(g, MUC, "<query xmlns='http://jabber.org/protocol/disco#items'/>", "get")
        assert room not in {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
        info = await iq(g, room, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "get")
        feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
        assert "muc_membersonly" in feats and "muc_open" not in feats and "muc_public" not in feats
        await bye(g, c, a, b)

    run(go())


def test_channel_turned_protected_removes_outsiders(server):
    """The page makes the channel protected: occupants who may not stay leave with 321."""
    room, slug = channel(server)
    web = web_login(server, "alice")

    async def go():
        a = await account(server, "alice")
        await join(a, room, "alice")
        g = await guest(server)
        await join(g, room, "viewer")
        r = await asyncio.get_event_loop().run_in_executor(
            None, lambda: web("PATCH", f"/channels/{slug}", {"protected": True}))
        assert r.status_code == 200, r.text
        p = await wait(g, is_("presence", f"{room}/viewer", "unavailable"))
        assert {"321", "110"} <= codes(p), text(p)
        await wait(a, lambda el: is_("presence", f"{room}/viewer", "unavailable")(el) and "321" in codes(el))
        # the owner stays and can still talk
        say(a, room, "still mine")
        await wait(a, body_is("still mine"))
        await bye(a, g)

    run(go())


def test_unknown_rooms_are_bounded(bin_path, tmp_path):
    """Random room names cost a database load each: at most 64 at once, then a minute's memory."""
    # a server without the per-session stanza rate limit, so one client can
    # put 300 joins in one write (the loads are then all asked for at once)
    tree = make_static_tree(tmp_path)
    server = Server(bin_path, tmp_path / "srv", static_dir=tree.static_dir,
                    env={"HEARTH_XMPP_FEDERATION": "false", "HEARTH_XMPP_DOMAIN": DOMAIN,
                         "HEARTH_XMPP_MESSAGE_INTERVAL": "0"})
    server.start()
    cli(server, "user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")

    async def go():
        g = await guest(server)
        n = 300
        slugs = [f"nope{uuid.uuid4().hex[:12]}" for _ in range(n)]
        g.send_raw("".join(f"<presence to='{s}@{MUC}/x'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                           for s in slugs))
        errs = {}
        deadline = time.monotonic() + 20
        while len(errs) < n and time.monotonic() < deadline:
            for el in list(g.got):
                frm = el.get("from") or ""
                if el.get("type") == "error" and frm.split("@")[0] in slugs:
                    errs[frm.split("@")[0]] = (error_cond(el), el.find("{jabber:client}error").get("type"))
                    g.got.remove(el)
            await asyncio.sleep(0.05)
        assert len(errs) == n, f"{len(errs)} of {n} answered; got {[text(e) for e in g.got[:3]]}\n{server.log_tail()}"
        conds = {c for c, _ in errs.values()}
        assert conds <= {"item-not-found", "resource-constraint"}, conds
        # more than 64 arrived before any load came back: the rest were told to wait
        assert ("resource-constraint", "wait") in errs.values(), conds
        # a name that was no room is answered from memory now, even once it is a channel
        known = next(s for s, (c, _) in errs.items() if c == "item-not-found")
        _, fresh = channel(server)
        sql(server, "UPDATE channels SET slug = ? WHERE slug = ?", known, fresh)
        p = await join(g, f"{known}@{MUC}", "again", expect_ok=False)
        assert error_cond(p) == "item-not-found", text(p)
        await bye(g)

    try:
        run(go())
        assert server.alive(), server.log_tail()
    finally:
        server.stop()


def test_archive_queries_are_bounded(server):
    """MAM: one query at a time per session, 10 in a row then one a second, 100 results a page."""
    room, slug = channel(server)
    cid = sql(server, "SELECT id FROM channels WHERE slug = ?", slug)[0][0]
    for i in range(130):
        sql(server, "INSERT INTO chat_messages (channel_id, stanza_id, ts_ms, nick, occupant_id,"
                    " from_jid, body, stanza) VALUES (?, ?, ?, 'old', 'o', 'old@localhost', ?, ?)",
            cid, f"{slug}-{i}", 1000 + i, f"old {i}",
            f"<message xmlns='jabber:client' type='groupchat' from='{room}/old'><body>old {i}</body>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' id='{slug}-{i}' by='{room}'/></message>")

    async def go():
        g = await guest(server)
        await join(g, room, "reader")
        # three at once: one runs, the others are told to wait
        g.send_raw("".join(f"<iq type='set' to='{room}' id='burst{i}'><query xmlns='urn:xmpp:mam:2'"
                           f" queryid='burst{i}'><set xmlns='http://jabber.org/protocol/rsm'><max>1000</max>"
                           f"</set></query></iq>" for i in range(3)))
        answers = []
        for i in range(3):
            answers.append(await wait(g, lambda el, i=i: el.tag == "{jabber:client}iq" and
                                      el.get("id") == f"burst{i}", what=f"answer to burst{i}"))
        ok = [r for r in answers if r.get("type") == "result"]
        assert len(ok) == 1, [text(r) for r in answers]
        for r in answers:
            if r.get("type") == "error":
                assert error_cond(r) == "resource-constraint"
                assert r.find("{jabber:client}error").get("type") == "wait"
        # the page is capped at 100, whatever max asked for
        qid = ok[0].get("id")
        results = [el for el in g.got if el.find(NS_MAM + "result") is not None and
                   el.find(NS_MAM + "result").get("queryid") == qid]
        assert len(results) == 100, len(results)
        assert ok[0].find(NS_MAM + "fin").get("complete") != "true"
        # one after another: ten in a row (paging), then one a second
        for i in range(40):
            r = await iq(g, room, f"<query xmlns='urn:xmpp:mam:2' queryid='seq{i}'>"
                                  "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query>")
            if r.get("type") == "error":
                break
        assert r.get("type") == "error" and error_cond(r) == "policy-violation", text(r)
        assert r.find("{jabber:client}error").get("type") == "wait"
        assert i >= 9, i  # the first (burst) query and at least nine more went through
        await bye(g)

    run(go())


def test_retraction_of_an_old_message_is_checked(server):
    """A message no longer in the room's memory: the archive says who may retract it."""
    room, slug = channel(server)
    cid = sql(server, "SELECT id FROM channels WHERE slug = ?", slug)[0][0]

    async def go():
        a = await account(server, "alice")
        p = await join(a, room, "alice")
        alice_oid = occupant_id(p)
        b = await account(server, "bob")
        await join(b, room, "bob")
        for sid, oid, jid, body in ((f"{slug}-a", alice_oid, "alice@localhost", "alice long ago"),
                                    (f"{slug}-b", "someone-else", "carol@localhost", "carol long ago")):
            sql(server, "INSERT INTO chat_messages (channel_id, stanza_id, ts_ms, nick, occupant_id,"
                        " from_jid, body, stanza) VALUES (?, ?, 1000, 'x', ?, ?, ?, ?)", cid, sid, oid, jid, body,
                f"<message xmlns='jabber:client' type='groupchat' from='{room}/x'><body>{body}</body>"
                f"<stanza-id xmlns='urn:xmpp:sid:0' id='{sid}' by='{room}'/></message>")
        # someone else's: refused, and nobody hears of it
        say(a, room, "/me retracted", f"<retract xmlns='urn:xmpp:message-retract:1' id='{slug}-b'/>")
        e = await wait(a, is_("message", room, "error"))
        assert error_cond(e) == "forbidden", text(e)
        # no such message
        say(a, room, "/me retracted", f"<retract xmlns='urn:xmpp:message-retract:1' id='{slug}-none'/>")
        e = await wait(a, is_("message", room, "error"))
        assert error_cond(e) == "item-not-found", text(e)
        assert await quiet(b, lambda el: el.find("{urn:xmpp:message-retract:1}retract") is not None)
        # her own: announced, and the archive keeps a tombstone
        say(a, room, "/me retracted", f"<retract xmlns='urn:xmpp:message-retract:1' id='{slug}-a'/>")
        r = await wait(b, lambda el: el.find("{urn:xmpp:message-retract:1}retract") is not None)
        assert r.find("{urn:xmpp:message-retract:1}retract").get("id") == f"{slug}-a"
        await asyncio.sleep(0.7)
        rows = sql(server, "SELECT stanza_id, retracted_at IS NOT NULL, body FROM chat_messages"
                           " WHERE channel_id = ? AND stanza_id LIKE ? ORDER BY stanza_id", cid, f"{slug}-%")
        assert rows == [(f"{slug}-a", 1, None), (f"{slug}-b", 0, "carol long ago")], rows
        # a forged moderation on a message is not relayed
        say(b, room, "look", "<apply-to xmlns='urn:xmpp:fasten:0' id='x'><moderated xmlns='urn:xmpp:message-moderate:0'"
                             f" by='{room}/alice'><retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to>")
        m = await wait(a, body_is("look"))
        assert m.find("{urn:xmpp:fasten:0}apply-to") is None, text(m)
        # a moderator (alice owns the channel): a message nobody ever wrote is
        # item-not-found and nothing is announced ...
        def moderate(sid):
            return iq(a, room, f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
                               "<retract xmlns='urn:xmpp:message-retract:1'/></moderate>")
        r = await moderate(f"{slug}-none")
        assert error_cond(r) == "item-not-found", text(r)
        retracts = lambda el: el.find("{urn:xmpp:message-retract:1}retract") is not None
        assert await quiet(b, retracts)
        # ... and one that only the archive still has is removed for everyone
        r = await moderate(f"{slug}-b")
        assert r.get("type") == "result", text(r)
        ann = await wait(b, retracts)
        assert ann.find("{urn:xmpp:message-retract:1}retract").get("id") == f"{slug}-b"
        await asyncio.sleep(0.7)
        rows = sql(server, "SELECT retracted_at IS NOT NULL, body FROM chat_messages"
                           " WHERE channel_id = ? AND stanza_id = ?", cid, f"{slug}-b")
        assert rows == [(1, None)], rows
        await bye(a, b)

    run(go())
