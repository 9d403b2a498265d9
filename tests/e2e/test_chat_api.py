"""
The web app's side of chat from outside (src/app/api_chat.c and the chat
fields of api_channels.c): a permission matrix for every endpoint (the
channel's owner, another user, a guest, an admin, the owner's API key and a
chat moderator the owner named, each cell asserted, with what the cell must
or must not have changed), CSRF on every write, validation (slow mode range,
subject length and HTML kept as text, banned word limits, who cannot be
banned), protected channels, the OpenAPI entries, a chat token that logs in
over XMPP (SASL PLAIN after STARTTLS, with slixmpp), and changes made on the
web reaching an open room at once (occupant counts, a ban removing the
occupant, a new moderator). The XMPP tests skip, saying why, when the server
does not listen for XMPP clients or its MUC service does not answer joins.

Users: alice (streamer, owns the channels), bob (streamer), carol (user),
dave (user; made a chat moderator of each test channel), eve (user; the one
who gets banned), root (admin).
"""
import asyncio
import glob
import socket
import sqlite3
import ssl
import subprocess
import uuid

import pytest
import requests

from hearthtest import HOST, Server, make_static_tree

API = "/api/v1"
JSON = "application/json"
PASSWORD = "correct horse battery staple"
XSS = '<script>alert("x")</script> & <b>bold</b>'
ROLES = ("owner", "other", "guest", "admin", "apikey", "mod")
DOMAIN = "chat-test.localhost"


# --- the server and its people --------------------------------------------------------------


def cli(srv, *args, input=None):
    res = subprocess.run([srv.bin, *args], input=input, env=srv.env(), capture_output=True, text=True,
                         timeout=60, cwd=str(srv.base))
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


class Client:
    """A session (cookie + CSRF token), an API key, or a guest."""

    def __init__(self, srv, api_key=None):
        self.srv = srv
        self.s = requests.Session()
        self.csrf = None
        self.api_key = api_key
        self.name = None

    def login(self, name, password=PASSWORD):
        r = self.s.post(self.srv.url + API + "/auth/login", json={"login": name, "password": password},
                        timeout=15)
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        self.name = name
        return self

    def req(self, method, path, body=None, csrf=True, headers=None, **kw):
        h = dict(headers or {})
        if self.api_key:
            h["X-API-Key"] = self.api_key
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        if body is not None:
            kw["json"] = body
        url = self.srv.url + (path if path.startswith(("/api/", "/debug/")) else API + path)
        return self.s.request(method, url, headers=h, timeout=15, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.req("PUT", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.req("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)


def check_json(r):
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == JSON, (r.status_code, ctype, r.text[:200])
    assert r.headers.get("X-Content-Type-Options") == "nosniff", r.headers
    return r.json()


def check_error(r, status, code=None):
    body = check_json(r)
    assert r.status_code == status, (r.status_code, body)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    if code:
        assert body["code"] == code, body
    return body


class World:
    def __init__(self, srv, c2s_port):
        self.srv = srv
        self.c2s_port = c2s_port
        self.n = 0
        users = {
            "alice": "streamer,user",
            "bob": "streamer,user",
            "carol": "user",
            "dave": "user",
            "eve": "user",
            "root": "admin",
        }
        for name, roles in users.items():
            cli(srv, "user", "add", name, "--password-stdin", "--role", roles, input=PASSWORD + "\n")
        sql(srv, "UPDATE settings SET value = '1000' WHERE key = 'max_channels_per_user'")
        self.owner = Client(srv).login("alice")
        self.other = Client(srv).login("bob")
        self.plain = Client(srv).login("carol")
        self.mod = Client(srv).login("dave")
        self.admin = Client(srv).login("root")
        self.guest = Client(srv)
        r = self.owner.post("/me/api-keys", {"name": "chat matrix"})
        assert r.status_code == 201, r.text
        self.apikey = Client(srv, api_key=r.json()["key"])

    def client(self, role):
        return getattr(self, role)

    def channel(self, **fields):
        """A fresh channel of alice's, with dave as its chat moderator."""
        self.n += 1
        body = {"title": fields.pop("title", f"Chat {self.n} {uuid.uuid4().hex[:6]}")}
        body.update(fields)
        r = self.owner.post("/channels", body)
        assert r.status_code == 201, r.text
        ch = check_json(r)
        r = self.owner.post(f"/channels/{ch['slug']}/moderators", {"user": "dave"})
        assert r.status_code == 201, r.text
        return ch


@pytest.fixture(scope="module")
def world(bin_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("chatapi")
    tree = make_static_tree(base)
    env = {
        "HEARTH_AUTH_LOGIN_ATTEMPTS": "1000",
        "HEARTH_HTTP_IDLE_TIMEOUT": "30s",
        "HEARTH_HTTP_HEADER_TIMEOUT": "5s",
        "HEARTH_SERVER_WORKERS": "4",
        "HEARTH_XMPP_DOMAIN": DOMAIN,
        "HEARTH_XMPP_FEDERATION": "false",
    }
    srv = Server(bin_path, base / "srv", static_dir=tree.static_dir, env=env)
    srv.start()
    try:
        # hearthtest gives each server its own xmpp.c2s_listen port on 127.0.0.1.
        yield World(srv, getattr(srv, "c2s_port", None))
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def alive(request):
    yield
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        assert w.srv.alive(), "server died:\n" + w.srv.log_tail()


# --- the permission matrix ---------------------------------------------------------------------

# Who may do what: the owner and admins manage; the owner's API key acts as the owner; dave is a
# chat moderator of every test channel (bans and words, not moderators); bob is nobody here.
OWNER = dict(owner=None, other=403, guest=401, admin=None, apikey=None, mod=403)
MODS = dict(owner=None, other=403, guest=401, admin=None, apikey=None, mod=None)
ADMIN = dict(owner=403, other=403, guest=401, admin=None, apikey=403, mod=403)
USERS = dict(owner=200, other=200, guest=401, admin=200, apikey=200, mod=200)
ANYONE = {r: 200 for r in ROLES}


def ok(d, status):
    return {k: (status if v is None else v) for k, v in d.items()}


def ban_eve(w, ch):
    r = w.owner.post(f"/channels/{ch['slug']}/bans", {"user": "eve", "reason": "spam"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def admin_ban_jid(w, ch):
    r = w.admin.post("/admin/chat-bans", {"jid": f"troll{uuid.uuid4().hex[:6]}@evil.example"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def add_carol(w, ch):
    r = w.owner.post(f"/channels/{ch['slug']}/moderators", {"user": "carol"})
    assert r.status_code == 201, r.text


def moderator_names(w, slug):
    return [m["user"] for m in check_json(w.owner.get(f"/channels/{slug}/moderators"))["moderators"]]


def ban_users(w, slug):
    return [b["user"] for b in check_json(w.owner.get(f"/channels/{slug}/bans"))["bans"]]


def site_ban_ids(w):
    return [b["id"] for b in check_json(w.admin.get("/admin/chat-bans"))["bans"]]


# (name, method, path, body, expected per role, setup(world, channel) -> value for {id})
MATRIX = [
    ("token", "POST", "/chat/token", None, USERS, None),
    ("room info", "GET", "/channels/{slug}/chat", None, ANYONE, None),
    ("list moderators", "GET", "/channels/{slug}/moderators", None, ok(OWNER, 200), None),
    ("add moderator", "POST", "/channels/{slug}/moderators", {"user": "carol"}, ok(OWNER, 201), None),
    ("remove moderator", "DELETE", "/channels/{slug}/moderators/carol", None, ok(OWNER, 204), add_carol),
    ("list bans", "GET", "/channels/{slug}/bans", None, ok(MODS, 200), ban_eve),
    ("ban", "POST", "/channels/{slug}/bans", {"user": "eve", "reason": "flooding"}, ok(MODS, 201), None),
    ("lift ban", "DELETE", "/channels/{slug}/bans/{id}", None, ok(MODS, 204), ban_eve),
    ("banned words", "GET", "/channels/{slug}/banned-words", None, ok(MODS, 200), None),
    ("set banned words", "PUT", "/channels/{slug}/banned-words", {"words": ["spam", "scam"]}, ok(MODS, 200), None),
    ("site bans", "GET", "/admin/chat-bans", None, ok(ADMIN, 200), None),
    ("site ban", "POST", "/admin/chat-bans", "jid", ok(ADMIN, 201), None),
    ("lift site ban", "DELETE", "/admin/chat-bans/{id}", None, ok(ADMIN, 204), admin_ban_jid),
    ("site banned words", "GET", "/admin/banned-words", None, ok(ADMIN, 200), None),
    ("set site banned words", "PUT", "/admin/banned-words", "words", ok(ADMIN, 200), None),
]


@pytest.mark.parametrize("name,method,path,body,expect,setup", MATRIX, ids=[m[0] for m in MATRIX])
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(world, role, name, method, path, body, expect, setup):
    w = world
    ch = w.channel()  # a fresh channel of alice's for every cell
    s = ch["slug"]
    made = setup(w, ch) if setup else None
    if body == "jid":
        body = {"jid": f"troll{uuid.uuid4().hex[:6]}@evil.example", "reason": "matrix"}
    if body == "words":
        body = {"words": [f"site{uuid.uuid4().hex[:6]}"]}
    before_site = site_ban_ids(w) if name in ("site ban", "lift site ban") else None
    r = w.client(role).req(method, path.format(slug=s, id=made), body)
    want = expect[role]
    assert r.status_code == want, f"{name} as {role}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert "no-store" in r.headers.get("Cache-Control", "")
    if want == 204:
        assert r.content == b""
    else:
        doc = check_json(r)
        if want >= 400:
            check_error(r, want)
            if want == 401:
                assert doc["code"] == "unauthenticated"
            if want == 403:
                assert doc["code"] == "forbidden"
    done = want < 300
    # What each cell must (not) have done.
    if name == "token" and done:
        doc = r.json()
        me = {"apikey": "alice", "owner": "alice", "other": "bob", "admin": "root", "mod": "dave"}[role]
        assert doc["jid"] == f"{me}@{DOMAIN}"
        assert isinstance(doc["token"], str) and len(doc["token"]) >= 16
        assert isinstance(doc["expires_in"], int) and doc["expires_in"] > 0
    if name == "room info":
        doc = r.json()
        assert doc["room"] == f"{s}@chat.{DOMAIN}"
        assert doc["can_moderate"] is (role in ("owner", "admin", "apikey", "mod"))
    if name == "list moderators" and done:
        assert [m["user"] for m in r.json()["moderators"]] == ["dave"]
        assert r.json()["moderators"][0]["jid"] == f"dave@{DOMAIN}"
    if name == "add moderator":
        assert sorted(moderator_names(w, s)) == (["carol", "dave"] if done else ["dave"])
    if name == "remove moderator":
        assert sorted(moderator_names(w, s)) == (["dave"] if done else ["carol", "dave"])
    if name == "list bans" and done:
        bans = r.json()["bans"]
        assert [(b["user"], b["reason"], b["jid"]) for b in bans] == [("eve", "spam", f"eve@{DOMAIN}")]
        assert ("ip" in bans[0]) == (role == "admin")
    if name == "ban":
        assert ban_users(w, s) == (["eve"] if done else [])
        if done:
            by = {"apikey": "alice", "owner": "alice", "admin": "root", "mod": "dave"}[role]
            assert r.json()["banned_by"] == f"{by}@{DOMAIN}"
    if name == "lift ban":
        assert ban_users(w, s) == ([] if done else ["eve"])
    if name == "banned words" and done:
        assert r.json() == {"words": []}
    if name == "set banned words":
        words = check_json(w.owner.get(f"/channels/{s}/banned-words"))["words"]
        assert words == (["scam", "spam"] if done else [])
        if done:
            assert r.json()["words"] == ["scam", "spam"]
    if name == "site ban":
        after = site_ban_ids(w)
        assert len(after) == len(before_site) + (1 if done else 0)
    if name == "lift site ban":
        assert (made in site_ban_ids(w)) is (not done)
    if name == "set site banned words":
        words = check_json(w.admin.get("/admin/banned-words"))["words"]
        assert (body["words"][0] in words) is done


WRITES = [
    ("POST", "/chat/token", None),
    ("PATCH", "/channels/{slug}", {"chat_slow_mode": 30}),
    ("POST", "/channels/{slug}/moderators", {"user": "carol"}),
    ("DELETE", "/channels/{slug}/moderators/dave", None),
    ("POST", "/channels/{slug}/bans", {"user": "eve"}),
    ("DELETE", "/channels/{slug}/bans/{id}", None),
    ("PUT", "/channels/{slug}/banned-words", {"words": ["nope"]}),
    ("POST", "/admin/chat-bans", {"user": "eve"}),
    ("DELETE", "/admin/chat-bans/{site_id}", None),
    ("PUT", "/admin/banned-words", {"words": ["nope"]}),
]


@pytest.mark.parametrize("method,path,body", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_csrf_refused_without_token(world, method, path, body):
    w = world
    ch = w.channel()
    s = ch["slug"]
    ban_id = ban_eve(w, ch)
    site_id = admin_ban_jid(w, ch)
    client = w.admin if "/admin/" in path else w.owner
    p = path.format(slug=s, id=ban_id, site_id=site_id)
    site_words = check_json(w.admin.get("/admin/banned-words"))["words"]
    site_bans = site_ban_ids(w)
    check_error(client.req(method, p, body, csrf=False), 403, "csrf")
    check_error(client.req(method, p, body, headers={"X-CSRF-Token": "x" * 43}), 403, "csrf")
    # Nothing happened.
    doc = check_json(w.owner.get(f"/channels/{s}"))
    assert doc["chat_slow_mode"] == 0
    assert moderator_names(w, s) == ["dave"]
    assert ban_users(w, s) == ["eve"]
    assert check_json(w.owner.get(f"/channels/{s}/banned-words"))["words"] == []
    assert check_json(w.admin.get("/admin/banned-words"))["words"] == site_words
    assert site_ban_ids(w) == site_bans
    # With the token it works (the refusal was about CSRF, not the request).
    r = client.req(method, p, body)
    assert r.status_code < 300, r.text


def test_bad_api_key(world):
    w = world
    ch = w.channel()
    bad = Client(w.srv, api_key="hk_" + "A" * 43)
    check_error(bad.get(f"/channels/{ch['slug']}/chat"), 401, "invalid_api_key")
    check_error(bad.post("/chat/token"), 401, "invalid_api_key")
    check_error(bad.get("/admin/chat-bans"), 401, "invalid_api_key")


def test_unknown_channel(world):
    w = world
    for method, path in (("GET", "/chat"), ("GET", "/moderators"), ("GET", "/bans"),
                         ("GET", "/banned-words"), ("PUT", "/banned-words")):
        r = w.admin.req(method, f"/channels/no-such-channel{path}", {"words": []} if method == "PUT" else None)
        check_error(r, 404, "not_found")


# --- room info and channel settings -----------------------------------------------------------


def test_room_info(world):
    w = world
    ch = w.channel(title="Room title")
    s = ch["slug"]
    doc = check_json(w.guest.get(f"/channels/{s}/chat"))
    assert doc == {
        "enabled": True,
        "room": f"{s}@chat.{DOMAIN}",
        "websocket": f"ws://{HOST}:{w.srv.port}/xmpp-websocket",
        "domain": DOMAIN,
        "guest_domain": f"guest.{DOMAIN}",
        "muc_domain": f"chat.{DOMAIN}",
        "guests_may_talk": True,
        "slow_mode": 0,
        "subject": "Room title",  # no subject of its own: the channel title
        "occupants": 0,
        "can_moderate": False,
    }
    r = w.owner.patch(f"/channels/{s}", {"chat_guests_may_talk": False, "chat_slow_mode": 45,
                                         "chat_subject": "Today: speedruns"})
    doc = check_json(r)
    assert r.status_code == 200, doc
    assert doc["chat_guests_may_talk"] is False and doc["chat_slow_mode"] == 45
    assert doc["chat_subject"] == "Today: speedruns" and doc["chatters"] == 0
    doc = check_json(w.guest.get(f"/channels/{s}/chat"))
    assert doc["guests_may_talk"] is False and doc["slow_mode"] == 45
    assert doc["subject"] == "Today: speedruns"
    # Everyone's view of the channel has the settings and the chatter count.
    pub = check_json(w.guest.get(f"/channels/{s}"))
    assert pub["chat_guests_may_talk"] is False and pub["chat_slow_mode"] == 45
    assert pub["chat_subject"] == "Today: speedruns" and pub["chatters"] == 0
    listed = [c for c in check_json(w.guest.get("/channels", params={"q": "Room title"}))["channels"]
              if c["slug"] == s]
    assert listed and listed[0]["chatters"] == 0 and listed[0]["chat_slow_mode"] == 45
    # Fields left out stay; null clears the subject.
    doc = check_json(w.owner.patch(f"/channels/{s}", {"chat_subject": None}))
    assert doc["chat_subject"] is None and doc["chat_slow_mode"] == 45
    assert doc["chat_guests_may_talk"] is False
    assert check_json(w.guest.get(f"/channels/{s}/chat"))["subject"] == "Room title"
    # Chat off shows in the room info.
    check_json(w.owner.patch(f"/channels/{s}", {"chat_enabled": False}))
    assert check_json(w.guest.get(f"/channels/{s}/chat"))["enabled"] is False
    # Settings at creation too.
    ch2 = w.channel(chat_slow_mode=10, chat_guests_may_talk=False)
    assert ch2["chat_slow_mode"] == 10 and ch2["chat_guests_may_talk"] is False


def test_room_info_protected(world):
    w = world
    ch = w.channel(protected=True)
    s = ch["slug"]
    check_error(w.guest.get(f"/channels/{s}/chat"), 403, "protected")
    check_error(w.other.get(f"/channels/{s}/chat"), 403, "protected")
    check_error(w.plain.get(f"/channels/{s}/chat"), 403, "protected")
    assert check_json(w.owner.get(f"/channels/{s}/chat"))["can_moderate"] is True
    assert check_json(w.admin.get(f"/channels/{s}/chat"))["can_moderate"] is True
    assert check_json(w.mod.get(f"/channels/{s}/chat"))["can_moderate"] is True  # moderators get in
    # Invited, or holding the invite code: in, without moderation.
    assert w.owner.post(f"/channels/{s}/invites", {"user": "carol"}).status_code == 201
    assert check_json(w.plain.get(f"/channels/{s}/chat"))["can_moderate"] is False
    code = check_json(w.owner.post(f"/channels/{s}/invite-code"))["invite_code"]
    r = w.guest.get(f"/channels/{s}/chat", params={"invite": code})
    assert r.status_code == 200 and r.json()["room"] == f"{s}@chat.{DOMAIN}"
    # A watch-token cookie from the channel's page works for its chat path too.
    holder = Client(w.srv)
    assert holder.get(f"/channels/{s}", params={"invite": code}).status_code == 200
    assert holder.get(f"/channels/{s}/chat").status_code == 200


@pytest.mark.parametrize("value", [-1, 3601, 100000, "10", 1.5, True, None])
def test_slow_mode_out_of_range(world, value):
    w = world
    ch = w.channel()
    body = check_error(w.owner.patch(f"/channels/{ch['slug']}", {"chat_slow_mode": value}), 400, "invalid")
    assert "chat_slow_mode" in body["error"]
    assert check_json(w.owner.get(f"/channels/{ch['slug']}"))["chat_slow_mode"] == 0


def test_slow_mode_bounds_and_other_fields(world):
    w = world
    s = w.channel()["slug"]
    assert check_json(w.owner.patch(f"/channels/{s}", {"chat_slow_mode": 3600}))["chat_slow_mode"] == 3600
    assert check_json(w.owner.patch(f"/channels/{s}", {"chat_slow_mode": 0}))["chat_slow_mode"] == 0
    check_error(w.owner.patch(f"/channels/{s}", {"chat_guests_may_talk": "no"}), 400, "invalid")
    check_error(w.owner.patch(f"/channels/{s}", {"chat_guests_may_talk": 0}), 400, "invalid")
    check_error(w.owner.patch(f"/channels/{s}", {"chat_subject": 5}), 400, "invalid")
    # A refused field leaves the others of the same request undone.
    check_error(w.owner.patch(f"/channels/{s}", {"title": "Changed", "chat_slow_mode": -5}), 400, "invalid")
    assert check_json(w.owner.get(f"/channels/{s}"))["title"] != "Changed"
    # Only the owner (or an admin) edits them; a chat moderator does not.
    check_error(w.mod.patch(f"/channels/{s}", {"chat_slow_mode": 5}), 403, "forbidden")
    assert check_json(w.admin.patch(f"/channels/{s}", {"chat_slow_mode": 5}))["chat_slow_mode"] == 5


def test_subject_rules_and_html_as_text(world):
    w = world
    s = w.channel()["slug"]
    check_error(w.owner.patch(f"/channels/{s}", {"chat_subject": "x" * 201}), 400, "invalid")
    check_error(w.owner.patch(f"/channels/{s}", {"chat_subject": "two\nlines"}), 400, "invalid")
    check_error(w.owner.patch(f"/channels/{s}", {"chat_subject": "bell\u0007"}), 400, "invalid")
    # 200 characters, counted as characters, not bytes.
    doc = check_json(w.owner.patch(f"/channels/{s}", {"chat_subject": "é" * 200}))
    assert doc["chat_subject"] == "é" * 200
    # HTML is kept as the text it is, inside a JSON string, never as markup.
    r = w.owner.patch(f"/channels/{s}", {"chat_subject": XSS})
    assert check_json(r)["chat_subject"] == XSS
    for path in (f"/channels/{s}", f"/channels/{s}/chat"):
        r = w.guest.get(path)
        doc = check_json(r)
        assert doc.get("chat_subject", doc.get("subject")) == XSS
        assert r.headers["Content-Type"].startswith(JSON)
        assert '\\"x\\"' in r.text  # the quotes are escaped for JSON
        assert "&lt;" not in r.text  # and not HTML-escaped: it is text, not markup


# --- moderators, bans, words ------------------------------------------------------------------


def test_moderators(world):
    w = world
    s = w.channel()["slug"]
    r = w.owner.post(f"/channels/{s}/moderators", {"user": "carol"})
    assert r.status_code == 201 and check_json(r)["user"] == "carol"
    assert check_json(r)["jid"] == f"carol@{DOMAIN}"
    r = w.owner.post(f"/channels/{s}/moderators", {"user": "carol"})
    assert r.status_code == 200  # already one
    assert sorted(moderator_names(w, s)) == ["carol", "dave"]
    assert check_json(w.plain.get(f"/channels/{s}/chat"))["can_moderate"] is True
    check_error(w.owner.post(f"/channels/{s}/moderators", {"user": "alice"}), 400, "invalid")
    check_error(w.owner.post(f"/channels/{s}/moderators", {"user": "nobody-at-all"}), 404, "not_found")
    check_error(w.owner.post(f"/channels/{s}/moderators", {}), 400, "invalid")
    check_error(w.owner.post(f"/channels/{s}/moderators", {"user": "carol", "x": 1}), 400, "invalid")
    assert w.owner.delete(f"/channels/{s}/moderators/carol").status_code == 204
    check_error(w.owner.delete(f"/channels/{s}/moderators/carol"), 404, "not_found")
    check_error(w.owner.delete(f"/channels/{s}/moderators/nobody-at-all"), 404, "not_found")
    assert check_json(w.plain.get(f"/channels/{s}/chat"))["can_moderate"] is False
    # A moderator of one channel is nobody in another.
    s2 = w.channel()["slug"]
    w.owner.delete(f"/channels/{s2}/moderators/dave")
    check_error(w.mod.get(f"/channels/{s2}/bans"), 403, "forbidden")


def test_bans(world):
    w = world
    s = w.channel()["slug"]
    # Who cannot be banned.
    check_error(w.mod.post(f"/channels/{s}/bans", {"user": "alice"}), 409, "conflict")
    check_error(w.owner.post(f"/channels/{s}/bans", {"user": "dave"}), 409, "conflict")
    check_error(w.owner.post(f"/channels/{s}/bans", {"user": "root"}), 409, "conflict")
    check_error(w.owner.post(f"/channels/{s}/bans", {"jid": f"alice@{DOMAIN}"}), 409, "conflict")
    check_error(w.owner.post(f"/channels/{s}/bans", {"user": "nobody-at-all"}), 404, "not_found")
    # Shapes.
    for bad in ({}, {"user": "eve", "jid": "x@y.example"}, {"user": ""}, {"user": 5},
                {"jid": "not a jid@@"}, {"user": "eve", "duration": 0},
                {"user": "eve", "duration": "60"}, {"user": "eve", "reason": "x" * 201},
                {"user": "eve", "reason": "a\nb"}, {"ip": "10.0.0.1"}, {"user": "eve", "until": 5}):
        check_error(w.owner.post(f"/channels/{s}/bans", bad), 400, "invalid")
    assert ban_users(w, s) == []
    # A ban for a while, then a ban by JID of another server.
    r = w.mod.post(f"/channels/{s}/bans", {"user": "eve", "reason": XSS, "duration": 600})
    b = check_json(r)
    assert r.status_code == 201, b
    assert b["user"] == "eve" and b["jid"] == f"eve@{DOMAIN}" and b["reason"] == XSS
    assert b["expires_at"] - b["created_at"] == 600 and b["guest"] is False and "ip" not in b
    r = w.owner.post(f"/channels/{s}/bans", {"jid": "Troll@Evil.Example/phone"})
    j = check_json(r)
    assert r.status_code == 201 and j["jid"] == "troll@evil.example" and j["user"] is None
    assert j["expires_at"] is None
    bans = check_json(w.mod.get(f"/channels/{s}/bans"))["bans"]
    assert {(x["user"], x["jid"]) for x in bans} == {("eve", f"eve@{DOMAIN}"), (None, "troll@evil.example")}
    # Banning again replaces (one ban per person).
    check_json(w.owner.post(f"/channels/{s}/bans", {"user": "eve"}))
    bans = check_json(w.owner.get(f"/channels/{s}/bans"))["bans"]
    assert [x["expires_at"] for x in bans if x["user"] == "eve"] == [None]
    # A ban that ran out is not listed.
    sql(w.srv, "UPDATE chat_bans SET expires_at = 1 WHERE jid = 'troll@evil.example'")
    assert [x["jid"] for x in check_json(w.owner.get(f"/channels/{s}/bans"))["bans"]] == [f"eve@{DOMAIN}"]
    # Lifting: only this channel's bans, by id.
    other = w.channel()["slug"]
    eve_id = [x["id"] for x in check_json(w.owner.get(f"/channels/{s}/bans"))["bans"]][0]
    check_error(w.owner.delete(f"/channels/{other}/bans/{eve_id}"), 404, "not_found")
    check_error(w.owner.delete(f"/channels/{s}/bans/abc"), 404, "not_found")
    assert w.mod.delete(f"/channels/{s}/bans/{eve_id}").status_code == 204
    check_error(w.mod.delete(f"/channels/{s}/bans/{eve_id}"), 404, "not_found")
    assert ban_users(w, s) == []


def test_site_bans(world):
    w = world
    r = w.admin.post("/admin/chat-bans", {"ip": "2001:DB8::1", "reason": "raid"})
    b = check_json(r)
    assert r.status_code == 201 and b["ip"] == "2001:db8::1" and b["guest"] is True
    check_error(w.admin.post("/admin/chat-bans", {"ip": "300.1.1.1"}), 400, "invalid")
    check_error(w.admin.post("/admin/chat-bans", {"user": "root"}), 409, "conflict")
    r = w.admin.post("/admin/chat-bans", {"user": "eve"})
    assert r.status_code == 201
    listed = check_json(w.admin.get("/admin/chat-bans"))["bans"]
    assert b["id"] in [x["id"] for x in listed]
    # Site-wide bans are not a channel's: they do not show in its list and cannot be lifted there.
    s = w.channel()["slug"]
    assert ban_users(w, s) == []
    check_error(w.owner.delete(f"/channels/{s}/bans/{b['id']}"), 404, "not_found")
    assert w.admin.delete(f"/admin/chat-bans/{b['id']}").status_code == 204
    check_error(w.admin.delete(f"/admin/chat-bans/{b['id']}"), 404, "not_found")
    assert w.admin.delete(f"/admin/chat-bans/{r.json()['id']}").status_code == 204


def test_banned_words(world):
    w = world
    s = w.channel()["slug"]
    url = f"/channels/{s}/banned-words"
    # Blank entries are dropped, spaces trimmed, duplicates (any case) kept once, sorted.
    doc = check_json(w.mod.put(url, {"words": ["Spam", " scam ", "", "SPAM", "  ", XSS]}))
    assert doc["words"] == [XSS, "scam", "Spam"]
    assert check_json(w.owner.get(url))["words"] == doc["words"]
    # Limits: 500 words of at most 100 characters.
    check_error(w.owner.put(url, {"words": [f"w{i}" for i in range(501)]}), 400, "invalid")
    check_error(w.owner.put(url, {"words": ["x" * 101]}), 400, "invalid")
    check_error(w.owner.put(url, {"words": ["ok", 5]}), 400, "invalid")
    check_error(w.owner.put(url, {"words": ["tab\there"]}), 400, "invalid")
    check_error(w.owner.put(url, {"words": "spam"}), 400, "invalid")
    check_error(w.owner.put(url, {}), 400, "invalid")
    assert len(check_json(w.owner.get(url))["words"]) == 3  # unchanged by the refusals
    full = [f"{'ü' * 90}{i:05d}" for i in range(500)]  # 95 characters, 185 bytes each
    r = w.owner.put(url, {"words": full})
    doc = check_json(r)
    assert r.status_code == 200, doc
    assert len(doc["words"]) == 500 and set(doc["words"]) == set(full)
    assert check_json(w.owner.put(url, {"words": []}))["words"] == []
    # Site-wide words are their own list.
    word = f"site{uuid.uuid4().hex[:6]}"
    assert word in check_json(w.admin.put("/admin/banned-words", {"words": [word]}))["words"]
    assert check_json(w.owner.get(url))["words"] == []
    check_error(w.admin.put("/admin/banned-words", {"words": ["y" * 101]}), 400, "invalid")
    assert check_json(w.admin.get("/admin/banned-words"))["words"] == [word]


def test_channel_delete_takes_policy_along(world):
    w = world
    ch = w.channel()
    s = ch["slug"]
    ban_eve(w, ch)
    w.owner.put(f"/channels/{s}/banned-words", {"words": ["gone"]})
    assert w.owner.delete(f"/channels/{s}").status_code == 204
    assert sql(w.srv, "SELECT COUNT(*) FROM chat_bans WHERE channel_id = ?", ch["id"]) == [(0,)]
    assert sql(w.srv, "SELECT COUNT(*) FROM chat_moderators WHERE channel_id = ?", ch["id"]) == [(0,)]
    assert sql(w.srv, "SELECT COUNT(*) FROM chat_banned_words WHERE channel_id = ?", ch["id"]) == [(0,)]
    check_error(w.guest.get(f"/channels/{s}/chat"), 404, "not_found")


def test_openapi_has_chat_routes(world):
    w = world
    doc = check_json(w.guest.get("/openapi.json"))
    paths = doc["paths"]
    for method, path in (("post", "/api/v1/chat/token"), ("get", "/api/v1/channels/{slug}/chat"),
                         ("get", "/api/v1/channels/{slug}/moderators"),
                         ("post", "/api/v1/channels/{slug}/moderators"),
                         ("delete", "/api/v1/channels/{slug}/moderators/{name}"),
                         ("get", "/api/v1/channels/{slug}/bans"), ("post", "/api/v1/channels/{slug}/bans"),
                         ("delete", "/api/v1/channels/{slug}/bans/{id}"),
                         ("get", "/api/v1/channels/{slug}/banned-words"),
                         ("put", "/api/v1/channels/{slug}/banned-words"),
                         ("get", "/api/v1/admin/chat-bans"), ("post", "/api/v1/admin/chat-bans"),
                         ("delete", "/api/v1/admin/chat-bans/{id}"),
                         ("get", "/api/v1/admin/banned-words"), ("put", "/api/v1/admin/banned-words")):
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not in openapi.json"
    routes = check_json(w.guest.get("/debug/routes"))["routes"]
    routed = {(x["method"], x["path"]) for x in routes}
    assert ("POST", "/api/v1/chat/token") in routed
    assert ("PUT", "/api/v1/admin/banned-words") in routed
    props = doc["components"]["schemas"]["ChannelPatch"]["properties"]
    assert props["chat_slow_mode"]["maximum"] == 3600 and "chat_subject" in props


# --- the token logs in over XMPP --------------------------------------------------------------


def xmpp_listening(port):
    if not port:
        return False
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return True
    except OSError:
        return False


def xmpp_login(port, jid, password, timeout=15, then=None):
    """
    'ok' when slixmpp logs in (SASL PLAIN after STARTTLS), else what happened.
    then(x, loop): a coroutine run once logged in, whose result is returned.
    """
    import slixmpp

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        x = slixmpp.ClientXMPP(jid, password, sasl_mech="PLAIN")
        x.register_plugin("xep_0045")
        x.enable_plaintext = False
        x.ssl_context.check_hostname = False
        x.ssl_context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
        result = loop.create_future()

        def done(what):
            if not result.done():
                result.set_result(what)

        x.add_event_handler("session_start", lambda _: done("ok"))
        x.add_event_handler("failed_all_auth", lambda _: done("failed_auth"))
        x.add_event_handler("failed_auth", lambda _: done("failed_auth"))
        x.add_event_handler("connection_failed", lambda _: done("connection_failed"))
        x.add_event_handler("disconnected", lambda _: done("disconnected"))
        x.connect(address=(HOST, port), force_starttls=True)
        try:
            got = loop.run_until_complete(asyncio.wait_for(result, timeout))
            if got != "ok" or then is None:
                return got
            return loop.run_until_complete(then(x, loop))
        except asyncio.TimeoutError:
            return "timeout"
        finally:
            try:
                gone = x.disconnect()
                if gone is not None:
                    loop.run_until_complete(asyncio.wait_for(gone, 5))
            except Exception:  # noqa: BLE001 - already gone
                pass
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_token_logs_in_over_xmpp(world):
    w = world
    if not xmpp_listening(w.c2s_port):
        pytest.skip(f"the server does not listen for XMPP clients on xmpp.c2s_listen "
                    f"({HOST}:{w.c2s_port}) yet, so the token cannot be tried")
    doc = check_json(w.owner.post("/chat/token"))
    assert doc["jid"] == f"alice@{DOMAIN}"
    assert xmpp_login(w.c2s_port, doc["jid"], doc["token"]) == "ok", w.srv.log_tail()
    # Someone else's token, and a made-up one, do not.
    doc2 = check_json(w.apikey.post("/chat/token"))
    assert xmpp_login(w.c2s_port, f"bob@{DOMAIN}", doc2["token"]) != "ok"
    assert xmpp_login(w.c2s_port, f"alice@{DOMAIN}", "not-a-token-" + uuid.uuid4().hex) != "ok"


def test_occupants_and_a_ban_reach_the_room(world):
    """chatters/occupants count the room; a ban from the web page removes the occupant at once."""
    w = world
    if not xmpp_listening(w.c2s_port):
        pytest.skip("the server does not listen for XMPP clients yet")
    ch = w.channel()
    s = ch["slug"]
    room = f"{s}@chat.{DOMAIN}"
    eve = Client(w.srv).login("eve")
    tok = check_json(eve.post("/chat/token"))

    def http(fn):
        return asyncio.get_event_loop().run_in_executor(None, fn)

    async def scenario(x, loop):
        removed = loop.create_future()

        def on_presence(p):
            codes = {st.get("code") for st in p.xml.iter("{http://jabber.org/protocol/muc#user}status")}
            if p["type"] == "unavailable" and p["from"].resource == "eve" and not removed.done():
                removed.set_result(codes)

        x.add_event_handler(f"muc::{room}::presence", on_presence)
        try:
            await x.plugin["xep_0045"].join_muc_wait(room, "eve", timeout=5)
        except Exception as e:  # noqa: BLE001 - a timeout or an error presence
            return f"no room: {e!r}"
        info = await http(lambda: check_json(w.guest.get(f"/channels/{s}/chat")))
        assert info["occupants"] == 1, info
        doc = await http(lambda: check_json(w.guest.get(f"/channels/{s}")))
        assert doc["chatters"] == 1, doc
        r = await http(lambda: w.mod.post(f"/channels/{s}/bans", {"user": "eve", "reason": "test"}))
        assert r.status_code == 201, r.text
        codes = await asyncio.wait_for(removed, 10)
        assert "301" in codes, codes  # banned (XEP-0045 status 301)
        info = await http(lambda: check_json(w.guest.get(f"/channels/{s}/chat")))
        assert info["occupants"] == 0, info
        return "done"

    got = xmpp_login(w.c2s_port, tok["jid"], tok["token"], then=scenario)
    if got.startswith("no room"):
        pytest.skip(f"the MUC service does not let anyone join {room} yet ({got})")
    assert got == "done", w.srv.log_tail()



def room_scenario(w, who, steps):
    """
    Log in as who (a chat token), join a fresh channel's room, then run
    steps(ctx) (a coroutine) with ctx.room, ctx.slug, ctx.http(fn) and
    ctx.events (a list of stanzas received from the room). Skips when the
    server does not do XMPP or MUC yet.
    """
    if not xmpp_listening(w.c2s_port):
        pytest.skip("the server does not listen for XMPP clients yet")
    ch = w.channel()
    s = ch["slug"]
    room = f"{s}@chat.{DOMAIN}"
    tok = check_json(Client(w.srv).login(who).post("/chat/token"))

    class Ctx:
        pass

    async def scenario(x, loop):
        ctx = Ctx()
        ctx.room, ctx.slug, ctx.x, ctx.loop = room, s, x, loop
        ctx.http = lambda fn: loop.run_in_executor(None, fn)
        try:
            await x.plugin["xep_0045"].join_muc_wait(room, who, timeout=5)
        except Exception as e:  # noqa: BLE001 - a timeout or an error presence
            return f"no room: {e!r}"
        await steps(ctx)
        return "done"

    got = xmpp_login(w.c2s_port, tok["jid"], tok["token"], then=scenario)
    if got.startswith("no room"):
        pytest.skip(f"the MUC service does not let anyone join {room} yet ({got})")
    assert got == "done", w.srv.log_tail()


def muc_item(p):
    return p.xml.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item")


def test_new_moderator_reaches_the_room(world):
    """Naming a moderator on the web page makes them a room moderator at once."""
    w = world

    async def steps(ctx):
        promoted = ctx.loop.create_future()

        def on_presence(p):
            item = muc_item(p)
            if (p["from"].resource == "carol" and item is not None and item.get("affiliation") == "admin"
                    and not promoted.done()):
                promoted.set_result(item.get("role"))

        ctx.x.add_event_handler(f"muc::{ctx.room}::presence", on_presence)
        r = await ctx.http(lambda: w.owner.post(f"/channels/{ctx.slug}/moderators", {"user": "carol"}))
        assert r.status_code == 201, r.text
        assert await asyncio.wait_for(promoted, 10) == "moderator"

    room_scenario(w, "carol", steps)


def test_guests_may_talk_off_reaches_the_room(world):
    """Turning guests' voice off is policy the room reloads (a guest would become a visitor)."""
    w = world

    async def steps(ctx):
        r = await ctx.http(lambda: w.owner.patch(f"/channels/{ctx.slug}", {"chat_guests_may_talk": False}))
        assert r.status_code == 200, r.text
        info = await ctx.http(lambda: check_json(w.guest.get(f"/channels/{ctx.slug}/chat")))
        assert info["guests_may_talk"] is False and info["occupants"] == 1

    room_scenario(w, "carol", steps)


def test_new_subject_reaches_the_room(world):
    w = world

    async def steps(ctx):
        subject = ctx.loop.create_future()

        def on_subject(m):
            if m["subject"] == "Fresh subject <b>" and not subject.done():
                subject.set_result(True)

        ctx.x.add_event_handler("groupchat_subject", on_subject)
        r = await ctx.http(lambda: w.owner.patch(f"/channels/{ctx.slug}", {"chat_subject": "Fresh subject <b>"}))
        assert r.status_code == 200, r.text
        await asyncio.wait_for(subject, 10)

    room_scenario(w, "carol", steps)
