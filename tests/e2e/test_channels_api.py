"""
The channel API from outside: a permission matrix for every endpoint it adds
(the owner, another user, a guest, an admin and the owner's API key, each
cell asserted), CSRF on every write, validation, search (channels and
users), topics (the defaults of a fresh database, rename, remove), the
per-user channel cap, images, protected channels (API and HLS), the live
directory with viewer counts while ffmpeg publishes, follows and go-live
notifications (in-app and by e-mail, through a small SMTP sink here), the
peak viewer count in the database (written while live, not only at the
end), deleting a channel or a whole account while live, GET /api/v1/site,
the OpenGraph image of channel pages, and the OpenAPI document checked
against the router both ways.

The stream key is its owner's alone: the owner's session and the owner's
API key see it; an admin manages the channel (edits it, makes a new key)
but never reads the key.

No user-supplied text may come back as HTML: every answer of the API is JSON
with X-Content-Type-Options: nosniff, and titles such as
<script>alert(1)</script> never appear unescaped in a page.

Sessions come from POST /api/v1/auth/login (the hearth_session cookie and a
CSRF token for X-CSRF-Token); API keys from POST /api/v1/me/api-keys.
"""
import glob
import json
import os
import pathlib
import re
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
import zlib

import pytest
import requests

from hearthtest import HOST, Server, clean_env, free_port, make_static_tree

API = "/api/v1"
JSON = "application/json"
PASSWORD = "correct horse battery staple"
XSS = "<script>alert(1)</script>"
REPO = pathlib.Path(__file__).resolve().parents[2]
ROLES = ("owner", "other", "guest", "admin", "apikey")


# --- a small SMTP sink ----------------------------------------------------------------------


class SmtpSink(threading.Thread):
    """Plain SMTP on 127.0.0.1: accepts every message and keeps (recipients, text)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.messages = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rwb")

        def say(line):
            f.write(line.encode() + b"\r\n")
            f.flush()

        try:
            say("220 sink ready")
            rcpts, data = [], None
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                up = cmd.upper()
                if up.startswith("EHLO") or up.startswith("HELO"):
                    say("250-sink")
                    say("250 8BITMIME")
                elif up.startswith("MAIL FROM"):
                    rcpts = []
                    say("250 ok")
                elif up.startswith("RCPT TO"):
                    rcpts.append(cmd.split(":", 1)[1].strip().strip("<>"))
                    say("250 ok")
                elif up == "DATA":
                    say("354 go on")
                    lines = []
                    while True:
                        l = f.readline()
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        lines.append(l)
                    data = b"".join(lines).decode(errors="replace")
                    with self.lock:
                        self.messages.append((rcpts, data))
                    say("250 queued")
                elif up == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 ok")
        except OSError:
            return
        finally:
            conn.close()

    def for_rcpt(self, rcpt):
        with self.lock:
            return [m for m in self.messages if rcpt in m[0]]

    def close(self):
        self.stop_event.set()
        self.sock.close()


# --- the server and its people --------------------------------------------------------------


def hearth_path():
    from conftest import hearth_bin

    return hearth_bin()


def cli(srv, *args, input=None):
    env = srv.env()
    res = subprocess.run([srv.bin, *args], input=input, env=env, capture_output=True, text=True,
                         timeout=60, cwd=str(srv.base))
    assert res.returncode == 0, f"hearth {' '.join(args)}: {res.stderr}"
    return res


def db_path(srv):
    paths = glob.glob(str(srv.data_dir / "*.db"))
    assert paths, "no database file"
    return paths[0]


def sql(srv, query, *args):
    con = sqlite3.connect(db_path(srv), timeout=10)
    try:
        cur = con.execute(query, args)
        rows = cur.fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def uname(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


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
        assert self.s.cookies.get("hearth_session")
        return self

    def req(self, method, path, body=None, csrf=True, headers=None, raw=None, **kw):
        h = dict(headers or {})
        if self.api_key:
            h["X-API-Key"] = self.api_key
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        if body is not None:
            kw["json"] = body
        if raw is not None:
            kw["data"] = raw
        if path.startswith("http"):
            url = path
        elif path.startswith(("/api/", "/live/", "/debug/")):
            url = self.srv.url + path
        else:
            url = self.srv.url + API + path
        return self.s.request(method, url, headers=h, timeout=15, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body, **kw)

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
    def __init__(self, srv, sink):
        self.srv = srv
        self.sink = sink
        self.n = 0
        users = {
            "alice": ("streamer,user", "alice@hearth.test"),
            "bob": ("streamer,user", "bob@hearth.test"),
            "carol": ("user", None),
            "root": ("admin", None),
        }
        for name, (roles, email) in users.items():
            args = ["user", "add", name, "--password-stdin", "--role", roles]
            if email:
                args += ["--email", email]
            cli(srv, *args, input=PASSWORD + "\n")
        # Plenty of room for the matrix; the cap has a test of its own.
        sql(srv, "UPDATE settings SET value = '1000' WHERE key = 'max_channels_per_user'")
        self.owner = Client(srv).login("alice")
        self.other = Client(srv).login("bob")
        self.plain = Client(srv).login("carol")
        self.admin = Client(srv).login("root")
        self.guest = Client(srv)
        r = self.owner.post("/me/api-keys", {"name": "matrix"})
        assert r.status_code == 201, r.text
        self.apikey = Client(srv, api_key=r.json()["key"])
        r = self.admin.post("/topics", {"name": "Speedruns"})
        assert r.status_code == 201, r.text
        self.topic = r.json()

    def client(self, role):
        return getattr(self, role)

    def channel(self, **fields):
        """A fresh channel of alice's."""
        self.n += 1
        body = {"title": fields.pop("title", f"Channel {self.n} {uuid.uuid4().hex[:6]}")}
        body.update(fields)
        r = self.owner.post("/channels", body)
        assert r.status_code == 201, r.text
        return check_json(r)


@pytest.fixture(scope="module")
def world(bin_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("channels")
    tree = make_static_tree(base)
    dist = REPO / "web" / "dist"
    static = dist if (dist / "index.html").exists() else tree.static_dir
    sink = SmtpSink()
    sink.start()
    env = {
        "HEARTH_HLS_RECONNECT_GRACE": "1s",
        "HEARTH_AUTH_LOGIN_ATTEMPTS": "1000",
        "HEARTH_HTTP_IDLE_TIMEOUT": "30s",
        "HEARTH_HTTP_HEADER_TIMEOUT": "5s",
        "HEARTH_SERVER_WORKERS": "4",
        "HEARTH_SMTP_HOST": HOST,
        "HEARTH_SMTP_PORT": str(sink.port),
        "HEARTH_SMTP_TLS": "none",
        "HEARTH_SMTP_FROM": "Hearth Test <noreply@hearth.test>",
    }
    srv = Server(bin_path, base / "srv", static_dir=static, env=env)
    srv.start()
    try:
        yield World(srv, sink)
    finally:
        srv.stop()
        sink.close()


@pytest.fixture(autouse=True)
def alive(request):
    yield
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        assert w.srv.alive(), "server died:\n" + w.srv.log_tail()


def png(w=2, h=2):
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# --- the permission matrix ---------------------------------------------------------------------

OWNER_ONLY = dict(owner=None, other=403, guest=401, admin=None, apikey=None)
USERS = dict(owner=200, other=200, guest=401, admin=200, apikey=200)
ANYONE = dict(owner=200, other=200, guest=200, admin=200, apikey=200)


def with_ok(d, ok):
    return {k: (ok if v is None else v) for k, v in d.items()}


def put_avatar(w, ch):
    r = w.owner.req("PUT", f"/channels/{ch['slug']}/avatar", raw=png(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text


def put_banner(w, ch):
    r = w.owner.req("PUT", f"/channels/{ch['slug']}/banner", raw=png(4, 2), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text


def new_topic(w, ch):
    r = w.admin.post("/topics", {"name": "Matrix " + uuid.uuid4().hex[:8]})
    assert r.status_code == 201, r.text
    t = r.json()
    ch["topic_slug_made"] = t["slug"]
    return {"topic": t["slug"]}


def invite_carol(w, ch):
    r = w.owner.post(f"/channels/{ch['slug']}/invites", {"user": "carol"})
    assert r.status_code == 201, r.text


# (name, method, path, body, expected per role, setup(world, channel) before each cell)
MATRIX = [
    ("list channels", "GET", "/channels", None, ANYONE, None),
    ("create channel", "POST", "/channels", {"title": "Made in the matrix"},
     dict(owner=201, other=201, guest=401, admin=201, apikey=201), None),
    ("channel", "GET", "/channels/{slug}", None, ANYONE, None),
    ("edit channel", "PATCH", "/channels/{slug}", {"description": "edited"}, with_ok(OWNER_ONLY, 200), None),
    ("delete channel", "DELETE", "/channels/{slug}", None, with_ok(OWNER_ONLY, 204), None),
    ("new stream key", "POST", "/channels/{slug}/stream-key", None, with_ok(OWNER_ONLY, 200), None),
    ("follow", "POST", "/channels/{slug}/follow", None, USERS, None),
    ("unfollow", "DELETE", "/channels/{slug}/follow", None, USERS, None),
    ("new invite code", "POST", "/channels/{slug}/invite-code", None, with_ok(OWNER_ONLY, 200), None),
    ("remove invite code", "DELETE", "/channels/{slug}/invite-code", None, with_ok(OWNER_ONLY, 204), None),
    ("list invites", "GET", "/channels/{slug}/invites", None, with_ok(OWNER_ONLY, 200), None),
    ("invite", "POST", "/channels/{slug}/invites", {"user": "carol"}, with_ok(OWNER_ONLY, 201), None),
    ("withdraw invite", "DELETE", "/channels/{slug}/invites/carol", None, with_ok(OWNER_ONLY, 204), invite_carol),
    ("avatar", "GET", "/channels/{slug}/avatar", None, ANYONE, put_avatar),
    ("set avatar", "PUT", "/channels/{slug}/avatar", "png", with_ok(OWNER_ONLY, 200), None),
    ("remove avatar", "DELETE", "/channels/{slug}/avatar", None, with_ok(OWNER_ONLY, 204), put_avatar),
    ("banner", "GET", "/channels/{slug}/banner", None, ANYONE, put_banner),
    ("set banner", "PUT", "/channels/{slug}/banner", "png", with_ok(OWNER_ONLY, 200), None),
    ("remove banner", "DELETE", "/channels/{slug}/banner", None, with_ok(OWNER_ONLY, 204), None),
    ("following", "GET", "/me/following", None, USERS, None),
    ("notifications", "GET", "/me/notifications", None, USERS, None),
    ("read notifications", "POST", "/me/notifications/read", {}, USERS, None),
    ("live", "GET", "/live", None, ANYONE, None),
    ("topics", "GET", "/topics", None, ANYONE, None),
    ("add topic", "POST", "/topics", "topic", dict(owner=403, other=403, guest=401, admin=201, apikey=403), None),
    ("rename topic", "PATCH", "/topics/{topic}", "rename", dict(owner=403, other=403, guest=401, admin=200, apikey=403), new_topic),
    ("remove topic", "DELETE", "/topics/{topic}", None, dict(owner=403, other=403, guest=401, admin=204, apikey=403), new_topic),
    ("site", "GET", "/site", None, ANYONE, None),
    ("openapi", "GET", "/openapi.json", None, ANYONE, None),
]


def send(w, role, method, path, body):
    c = w.client(role)
    if body == "png":
        return c.req(method, path, raw=png(), headers={"Content-Type": "image/png"})
    if body == "topic":
        body = {"name": "Topic " + uuid.uuid4().hex[:8]}
    if body == "rename":
        body = {"name": "Renamed " + uuid.uuid4().hex[:8]}
    return c.req(method, path, body)


@pytest.mark.parametrize("name,method,path,body,expect,setup", MATRIX, ids=[m[0] for m in MATRIX])
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(world, role, name, method, path, body, expect, setup):
    w = world
    ch = w.channel()  # a fresh channel of alice's for every cell
    extra = (setup(w, ch) if setup else None) or {}
    r = send(w, role, method, path.format(slug=ch["slug"], **extra), body)
    want = expect[role]
    assert r.status_code == want, f"{name} as {role}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    if want == 204:
        assert r.content == b""
    elif name == "avatar" and want == 200:
        assert r.headers["Content-Type"] == "image/png"
        assert r.content == png()
    elif name == "banner" and want == 200:
        assert r.headers["Content-Type"] == "image/png"
        assert r.content == png(4, 2)
    else:
        doc = check_json(r)
        if want >= 400:
            check_error(r, want)
            if want == 401:
                assert doc["code"] == "unauthenticated"
            if want == 403 and role == "other":
                assert doc["code"] == "forbidden"
    # What each cell must (not) show. The key: the owner's session and key only.
    owner_view = role in ("owner", "apikey")
    if name in ("channel", "edit channel", "new stream key", "set avatar", "set banner") and want == 200:
        doc = r.json()
        assert ("stream_key" in doc) == owner_view, (name, role, doc)
        assert ("obs" in doc) == owner_view, (name, role)
        assert ch["stream_key"] not in r.text or (owner_view and name != "new stream key")
        # Owner and admin see how the channel is set up; others do not.
        assert ("has_invite_code" in doc) == (role in ("owner", "apikey", "admin")), (name, role)
        assert ("rtmp_url" in doc) == (role in ("owner", "apikey", "admin")), (name, role)
    if name == "channel":
        doc = r.json()
        if owner_view:
            assert doc["obs"]["key"] == doc["stream_key"] == ch["stream_key"]
            assert doc["obs"]["server"].startswith("rtmp://") and doc["obs"]["server"].endswith("/live")
        assert doc["live"] is None
    if name == "list channels":
        for c in r.json()["channels"]:
            assert "stream_key" not in c and "obs" not in c
    if name in ("delete channel",) and want == 204:
        assert w.guest.get(f"/channels/{ch['slug']}").status_code == 404
    if name == "delete channel" and want != 204:
        assert w.guest.get(f"/channels/{ch['slug']}").status_code == 200
    if name == "new stream key":
        key = w.owner.get(f"/channels/{ch['slug']}").json()["stream_key"]
        assert (key != ch["stream_key"]) == (want == 200)
        if want == 200 and owner_view:
            assert r.json()["stream_key"] == key  # the owner reads the new key in the answer
    if name in ("rename topic", "remove topic"):
        topics = {t["slug"]: t["name"] for t in w.guest.get("/topics").json()["topics"]}
        made = ch["topic_slug_made"]
        if name == "remove topic":
            assert (made in topics) == (want != 204)
        else:
            assert made in topics  # the slug stays
            assert topics[made].startswith("Renamed ") == (want == 200)
            if want == 200:
                assert r.json() == {**r.json(), "slug": made, "name": topics[made]}
    if name == "site":
        doc = r.json()
        assert doc == {"name": "Hearth", "allow_registration": True, "require_verification": False,
                       "public_url": w.srv.url}
    if name == "edit channel":
        desc = w.guest.get(f"/channels/{ch['slug']}").json()["description"]
        assert desc == ("edited" if want == 200 else "")


def test_create_needs_streamer_role(world):
    r = world.plain.post("/channels", {"title": "Carol tries"})
    check_error(r, 403, "forbidden")


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/channels", {"title": "no csrf"}),
    ("PATCH", "/channels/{slug}", {"title": "no csrf"}),
    ("DELETE", "/channels/{slug}", None),
    ("POST", "/channels/{slug}/stream-key", None),
    ("POST", "/channels/{slug}/follow", None),
    ("DELETE", "/channels/{slug}/follow", None),
    ("POST", "/channels/{slug}/invite-code", None),
    ("DELETE", "/channels/{slug}/invite-code", None),
    ("POST", "/channels/{slug}/invites", {"user": "bob"}),
    ("DELETE", "/channels/{slug}/invites/bob", None),
    ("PUT", "/channels/{slug}/avatar", "png"),
    ("DELETE", "/channels/{slug}/avatar", None),
    ("POST", "/me/notifications/read", {}),
    ("POST", "/topics", "topic"),
])
def test_csrf_refused_without_token(world, method, path, body):
    w = world
    ch = w.channel()
    client = w.admin if "topics" in path else w.owner
    p = path.format(slug=ch["slug"])
    if body == "png":
        r = client.req(method, p, raw=png(), headers={"Content-Type": "image/png"}, csrf=False)
    else:
        r = client.req(method, p, {"name": "T " + uuid.uuid4().hex[:6]} if body == "topic" else body, csrf=False)
    check_error(r, 403, "csrf")
    r = client.req(method, p, None if body in ("png", "topic") else body,
                   headers={"X-CSRF-Token": "x" * 43}, raw=png() if body == "png" else None)
    check_error(r, 403, "csrf")
    # Nothing happened.
    assert w.guest.get(f"/channels/{ch['slug']}").status_code == 200
    assert w.owner.get(f"/channels/{ch['slug']}").json()["stream_key"] == ch["stream_key"]


def test_bad_api_key(world):
    bad = Client(world.srv, api_key="hk_" + "A" * 43)
    check_error(bad.post("/channels", {"title": "x"}), 401, "invalid_api_key")
    check_error(bad.get("/me/following"), 401, "invalid_api_key")
    check_error(bad.get("/channels"), 401, "invalid_api_key")


# --- channels -------------------------------------------------------------------------------


def test_create_and_view(world):
    w = world
    slug = "show-" + uuid.uuid4().hex[:6]
    r = w.owner.post("/channels", {"title": "My show", "slug": slug, "topic": w.topic["slug"],
                                   "description": "# Hello\n\nMarkdown *here*", "chat_enabled": False})
    assert r.status_code == 201, r.text
    ch = check_json(r)
    assert r.headers["Location"] == f"/api/v1/channels/{slug}"
    assert ch["slug"] == slug and ch["title"] == "My show" and ch["owner"] == "alice"
    assert ch["topic"] == "Speedruns" and ch["topic_slug"] == w.topic["slug"]
    assert ch["description"] == "# Hello\n\nMarkdown *here*"
    assert ch["chat_enabled"] is False and ch["protected"] is False and ch["record"] is True
    assert len(ch["stream_key"]) == 43 and ch["obs"]["key"] == ch["stream_key"]
    assert ch["followers"] == 0 and ch["live"] is None and ch["avatar_url"] is None
    assert ch["hls_url"].endswith(f"/live/{slug}/master.m3u8")
    pub = check_json(w.other.get(f"/channels/{slug}"))
    assert pub["title"] == "My show" and "stream_key" not in pub and "rtmp_url" not in pub
    assert pub["following"] is False
    assert "following" not in check_json(w.guest.get(f"/channels/{slug}"))
    # The owner's view is never cached by anyone else.
    assert "no-store" in w.owner.get(f"/channels/{slug}").headers["Cache-Control"]

    check_error(w.owner.post("/channels", {"title": "again", "slug": slug}), 409, "conflict")
    check_error(w.owner.post("/channels", {"title": "x", "slug": "api"}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": "x", "slug": "Bad Slug"}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": "x", "topic": "no-such-topic"}), 400, "invalid")
    check_error(w.owner.post("/channels", {}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": ""}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": "x" * 141}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": "x", "stream_key": "mine"}), 400, "invalid")
    check_error(w.owner.post("/channels", {"title": 5}), 400, "invalid")
    check_error(w.owner.req("POST", "/channels", raw=b"{not json", headers={"Content-Type": JSON}), 400)
    check_error(w.owner.req("POST", "/channels", raw=b"title=x",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    check_error(w.guest.get("/channels/no-such-channel"), 404, "not_found")


def test_edit(world):
    w = world
    ch = w.channel()
    s = ch["slug"]
    r = w.owner.patch(f"/channels/{s}", {"title": "New title", "description": "line 1\nline 2\ttab",
                                          "topic": "Speedruns", "record": False, "chat_enabled": False,
                                          "live_title": "Tonight"})
    doc = check_json(r)
    assert r.status_code == 200, doc
    assert doc["title"] == "New title" and doc["description"] == "line 1\nline 2\ttab"
    assert doc["topic"] == "Speedruns" and doc["record"] is False and doc["chat_enabled"] is False
    assert doc["live_title"] == "Tonight"
    doc = check_json(w.owner.patch(f"/channels/{s}", {"topic": None, "live_title": None}))
    assert doc["topic"] is None and doc["live_title"] is None and doc["title"] == "New title"
    for bad in ({"title": ""}, {"title": "a\u0007b"}, {"description": "x" * 2001},
                {"description": "bell\u0007"}, {"record": "yes"}, {"topic": "nope"},
                {"slug": "other"}, {"owner": "bob"}, {"stream_key": "k"}, {"protected": 1}):
        check_error(w.owner.patch(f"/channels/{s}", bad), 400, "invalid")
    assert check_json(w.guest.get(f"/channels/{s}"))["title"] == "New title"


def test_search_and_topics(world):
    w = world
    tag = uuid.uuid4().hex[:6]
    a = w.channel(title=f"Findme {tag} cooking")
    b = w.channel(title=f"Other {tag}", topic="Speedruns")
    r = w.guest.get("/channels", params={"q": f"findme {tag}"})
    assert [c["slug"] for c in check_json(r)["channels"]] == [a["slug"]]
    slugs = [c["slug"] for c in w.guest.get("/channels", params={"q": tag}).json()["channels"]]
    assert sorted(slugs) == sorted([a["slug"], b["slug"]])
    slugs = [c["slug"] for c in w.guest.get("/channels", params={"q": tag, "topic": "speedruns"}).json()["channels"]]
    assert slugs == [b["slug"]]
    # By owner name, and wildcards are just characters.
    names = {c["owner"] for c in w.guest.get("/channels", params={"q": "alic", "limit": 100}).json()["channels"]}
    assert names == {"alice"}
    assert w.guest.get("/channels", params={"q": "%"}).json()["channels"] == []
    r = w.guest.get("/channels", params={"limit": 2, "offset": 1, "sort": "new"})
    assert check_json(r)["limit"] == 2 and len(r.json()["channels"]) == 2
    check_error(w.guest.get("/channels", params={"limit": 0}), 400, "invalid")
    check_error(w.guest.get("/channels", params={"limit": "x"}), 400, "invalid")
    check_error(w.guest.get("/channels", params={"sort": "random"}), 400, "invalid")
    check_error(w.guest.get("/channels", params={"q": "x" * 101}), 400, "invalid")
    topics = check_json(w.guest.get("/topics"))["topics"]
    assert any(t["slug"] == w.topic["slug"] for t in topics)
    check_error(w.admin.post("/topics", {"name": "Speedruns"}), 409, "conflict")
    check_error(w.admin.post("/topics", {"name": ""}), 400, "invalid")
    check_error(w.admin.post("/topics", {}), 400, "invalid")


DEFAULT_TOPICS = {"art": "Art", "education": "Education", "entertainment": "Entertainment",
                  "gaming": "Gaming", "music": "Music", "other": "Other",
                  "science-technology": "Science & Technology",
                  "software-development": "Software Development", "sports": "Sports",
                  "talk-shows": "Talk Shows"}


def test_default_topics_rename_and_remove(world):
    w = world
    # A fresh database comes with topics to file channels under.
    topics = {t["slug"]: t for t in check_json(w.guest.get("/topics"))["topics"]}
    for slug, name in DEFAULT_TOPICS.items():
        assert topics[slug]["name"] == name, (slug, topics.get(slug))
        assert set(topics[slug]) == {"id", "name", "slug", "created_at"}

    made = check_json(w.admin.post("/topics", {"name": "Retro " + uuid.uuid4().hex[:6]}))
    ch = w.channel(topic=made["slug"])
    s, t = ch["slug"], made["slug"]
    # Rename: the slug stays, the channels follow.
    r = w.admin.patch(f"/topics/{t}", {"name": "Retro games"})
    doc = check_json(r)
    assert r.status_code == 200 and doc == {**made, "name": "Retro games"}
    assert w.guest.get(f"/channels/{s}").json()["topic"] == "Retro games"
    assert w.guest.get(f"/channels/{s}").json()["topic_slug"] == t
    assert s in [c["slug"] for c in w.guest.get("/channels", params={"topic": t, "limit": 100}).json()["channels"]]
    assert check_json(w.admin.patch(f"/topics/{t}", {"name": "RETRO games"}))["name"] == "RETRO games"
    check_error(w.admin.patch(f"/topics/{t}", {"name": "speedruns"}), 409, "conflict")
    for bad in ({}, {"name": ""}, {"name": " "}, {"name": 5}, {"name": None}, {"name": "x" * 65},
                {"name": "tab\there"}, {"name": "ok", "slug": "other"}):
        check_error(w.admin.patch(f"/topics/{t}", bad), 400, "invalid")
    check_error(w.admin.req("PATCH", f"/topics/{t}", raw=b"{", headers={"Content-Type": JSON}), 400)
    check_error(w.admin.patch("/topics/no-such-topic", {"name": "Whatever"}), 404, "not_found")
    check_error(w.admin.delete("/topics/no-such-topic"), 404, "not_found")
    # Remove: the channel stays, without a topic.
    r = w.admin.delete(f"/topics/{t}")
    assert r.status_code == 204 and r.content == b""
    assert t not in {x["slug"] for x in w.guest.get("/topics").json()["topics"]}
    doc = check_json(w.guest.get(f"/channels/{s}"))
    assert doc["topic"] is None and doc["topic_slug"] is None
    check_error(w.admin.delete(f"/topics/{t}"), 404, "not_found")
    check_error(w.owner.patch(f"/channels/{s}", {"topic": t}), 400, "invalid")
    # CSRF as on every other write.
    check_error(w.admin.req("DELETE", "/topics/gaming", csrf=False), 403, "csrf")
    assert "gaming" in {x["slug"] for x in w.guest.get("/topics").json()["topics"]}


def test_search_finds_users(world):
    w = world
    tag = uuid.uuid4().hex[:6]
    lonely = f"lonely{tag}"  # an account with no channel at all
    cli(w.srv, "user", "add", lonely, "--password-stdin", input=PASSWORD + "\n")
    streamer = f"Tag{tag}Streamer"
    cli(w.srv, "user", "add", streamer, "--password-stdin", "--role", "streamer", input=PASSWORD + "\n")
    doc = check_json(w.guest.get("/channels", params={"q": tag}))
    assert doc["channels"] == []  # nobody's channel matches
    by_name = {u["name"]: u for u in doc["users"]}
    assert set(by_name) == {lonely, streamer}
    assert by_name[lonely]["profile_url"] == f"/u/{lonely}"
    assert set(by_name[lonely]) == {"name", "created_at", "profile_url"}  # nothing private
    assert w.guest.get(w.srv.url + by_name[lonely]["profile_url"]).status_code == 200
    # An exact name comes first, whatever the case.
    doc = check_json(w.guest.get("/channels", params={"q": streamer.lower()}))
    assert [u["name"] for u in doc["users"]] == [streamer]
    # Channel matches keep coming as before, with the owner among the users.
    ch = w.channel(title=f"Cooking {tag}")
    doc = check_json(w.guest.get("/channels", params={"q": tag}))
    assert [c["slug"] for c in doc["channels"]] == [ch["slug"]]
    assert {u["name"] for u in doc["users"]} == {lonely, streamer}
    assert "alice" in [u["name"] for u in check_json(w.guest.get("/channels", params={"q": "alic"}))["users"]]
    # No q: no users; wildcards are characters; disabled accounts are not found.
    assert check_json(w.guest.get("/channels"))["users"] == []
    assert check_json(w.guest.get("/channels", params={"q": "%"}))["users"] == []
    sql(w.srv, "UPDATE users SET disabled = 1 WHERE name = ?", lonely)
    assert [u["name"] for u in check_json(w.guest.get("/channels", params={"q": tag}))["users"]] == [streamer]


def test_site(world):
    w = world
    r = w.guest.get("/site", headers={"Origin": "https://elsewhere.example"})
    doc = check_json(r)
    assert doc == {"name": "Hearth", "allow_registration": True, "require_verification": False,
                   "public_url": w.srv.url}
    assert r.headers.get("Access-Control-Allow-Origin") == "*"  # public, like GET /live


def og_tags(html):
    return dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)"', html))


def check_png(data, size=None):
    """A PNG whose chunks all pass their CRC and whose image data inflates; its (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, dims = 8, b"", None
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0] == zlib.crc32(kind + body), kind
        if kind == b"IHDR":
            dims = struct.unpack(">II", body[:8])
        if kind == b"IDAT":
            idat += body
        i += 12 + n
    assert zlib.decompress(idat) and dims
    if size:
        assert dims == size
    return dims


def test_og_image(world):
    w = world
    ch = w.channel(title="Shared link", description="About the show")
    s = ch["slug"]
    r = w.guest.get(w.srv.url + f"/c/{s}")
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    og = og_tags(r.text)
    assert og["og:title"] == "Shared link" and og["og:description"] == "About the show"
    # No avatar: the default picture, which is a real PNG of the size the page says.
    assert og["og:image"] == w.srv.url + "/og-default.png", og
    assert og["twitter:card"] == "summary_large_image"
    img = requests.get(og["og:image"], timeout=10)
    assert img.status_code == 200 and img.headers["Content-Type"] == "image/png"
    assert check_png(img.content) == (int(og["og:image:width"]), int(og["og:image:height"])) == (600, 315)
    # With an avatar: the avatar.
    put_avatar(w, ch)
    og = og_tags(w.guest.get(w.srv.url + f"/c/{s}").text)
    avatar = w.guest.get(f"/channels/{s}").json()["avatar_url"]
    assert og["og:image"] == w.srv.url + avatar
    assert w.guest.get(og["og:image"]).content == png()
    # A protected channel's page tells nothing, not even a picture.
    p = w.channel(title="Hidden", protected=True)
    og = og_tags(w.guest.get(w.srv.url + f"/c/{p['slug']}").text)
    assert "og:image" not in og and "og:title" not in og


def test_og_image_from_the_front_end(bin_path, tmp_path):
    """A front end that ships public/og-image.png gets it used instead of the drawn one."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><html><head><title>Hearth</title>"
                                       "<!--hearth:head--></head><body></body></html>")
    (static / "og-image.png").write_bytes(png(8, 4))
    srv = Server(bin_path, tmp_path / "srv", static_dir=static, env={})
    srv.start()
    try:
        cli(srv, "user", "add", "ogowner", "--password-stdin", "--role", "streamer", input=PASSWORD + "\n")
        out = cli(srv, "channel", "add", "--owner", "ogowner", "--title", "Plain", "--json").stdout
        slug = json.loads(out)["slug"]
        og = og_tags(requests.get(f"{srv.url}/c/{slug}", timeout=10).text)
        assert og["og:image"] == srv.url + "/og-image.png"
        assert "og:image:width" not in og  # the size is the front end's to say
        assert requests.get(og["og:image"], timeout=10).content == png(8, 4)
    finally:
        srv.stop()


def test_channel_cap(world):
    w = world
    name = uname("cap")
    cli(w.srv, "user", "add", name, "--password-stdin", "--role", "streamer", input=PASSWORD + "\n")
    c = Client(w.srv).login(name)
    old = cli(w.srv, "setting", "get", "max_channels_per_user").stdout.strip()
    assert cli(w.srv, "setting", "set", "max_channels_per_user", "2").stdout.strip() == "max_channels_per_user = 2"
    try:
        for i in range(2):
            assert c.post("/channels", {"title": f"{name} {i}"}).status_code == 201
        check_error(c.post("/channels", {"title": f"{name} 3"}), 403, "channel_limit")
        # Admins are not capped.
        for i in range(3):
            assert w.admin.post("/channels", {"title": f"admin {name} {i}"}).status_code == 201
    finally:
        cli(w.srv, "setting", "set", "max_channels_per_user", old)


def test_follow_and_following(world):
    w = world
    ch = w.channel()
    s = ch["slug"]
    doc = check_json(w.other.post(f"/channels/{s}/follow"))
    assert doc == {"slug": s, "following": True, "notify_email": False, "followers": 1}
    doc = check_json(w.other.post(f"/channels/{s}/follow", {"notify_email": True}))
    assert doc["notify_email"] is True and doc["followers"] == 1
    assert check_json(w.other.get(f"/channels/{s}"))["following"] is True
    following = check_json(w.other.get("/me/following"))["channels"]
    assert s in [c["slug"] for c in following]
    assert all("stream_key" not in c for c in following)
    # each follow's own e-mail choice comes with it (the notifications tab)
    assert [c["notify_email"] for c in following if c["slug"] == s] == [True]
    check_json(w.other.post(f"/channels/{s}/follow", {"notify_email": False}))
    following = check_json(w.other.get("/me/following"))["channels"]
    assert [c["notify_email"] for c in following if c["slug"] == s] == [False]
    check_error(w.other.post(f"/channels/{s}/follow", {"notify_email": "yes"}), 400, "invalid")
    check_error(w.other.post("/channels/no-such/follow"), 404, "not_found")
    doc = check_json(w.other.delete(f"/channels/{s}/follow"))
    assert doc["following"] is False and doc["followers"] == 0
    assert check_json(w.other.delete(f"/channels/{s}/follow"))["following"] is False  # idempotent
    assert s not in [c["slug"] for c in w.other.get("/me/following").json()["channels"]]


def test_images(world):
    w = world
    ch = w.channel()
    s = ch["slug"]
    url = f"/channels/{s}/avatar"
    check_error(w.owner.req("PUT", url, raw=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                            headers={"Content-Type": "image/svg+xml"}), 415)
    check_error(w.owner.req("PUT", url, raw=b"<html>" + XSS.encode(),
                            headers={"Content-Type": "image/png"}), 400, "bad_image")
    check_error(w.owner.req("PUT", url, raw=png(), headers={"Content-Type": "image/jpeg"}), 400, "bad_image")
    check_error(w.owner.req("PUT", url, raw=png(9000, 1), headers={"Content-Type": "image/png"}), 400, "bad_image")
    check_error(w.owner.req("PUT", url, raw=png() + b"\0" * (1 << 20), headers={"Content-Type": "image/png"}), 413)
    doc = check_json(w.owner.req("PUT", url, raw=png(), headers={"Content-Type": "image/png"}))
    assert doc["avatar_url"].startswith(f"/api/v1/channels/{s}/avatar?v=avatar-")
    r = w.guest.get(w.srv.url + doc["avatar_url"])
    assert r.status_code == 200 and r.content == png()
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    etag = r.headers["ETag"]
    assert w.guest.get(url, headers={"If-None-Match": etag}).status_code == 304
    # A new image: a new URL; the old file is gone from the data directory.
    files_before = set(glob.glob(str(w.srv.data_dir / "channels" / "*" / "avatar-*")))
    doc2 = check_json(w.owner.req("PUT", url, raw=png(3, 3), headers={"Content-Type": "image/png"}))
    assert doc2["avatar_url"] != doc["avatar_url"]
    files_after = set(glob.glob(str(w.srv.data_dir / "channels" / "*" / "avatar-*")))
    assert len(files_after) == len(files_before)
    assert w.owner.delete(url).status_code == 204
    check_error(w.guest.get(url), 404, "not_found")
    assert check_json(w.guest.get(f"/channels/{s}"))["avatar_url"] is None


# --- protected channels (API side) -----------------------------------------------------------


def test_protected_channel_api(world):
    w = world
    ch = w.channel(protected=True, title="Members only")
    s = ch["slug"]
    assert ch["protected"] is True and ch["has_invite_code"] is False
    # Not for guests or other users, not in lists, not followable.
    check_error(w.guest.get(f"/channels/{s}"), 403, "protected")
    check_error(w.other.get(f"/channels/{s}"), 403, "protected")
    check_error(w.other.post(f"/channels/{s}/follow"), 403, "protected")
    assert s not in [c["slug"] for c in w.guest.get("/channels", params={"limit": 100, "q": "Members only"}).json()["channels"]]
    assert s not in [c["slug"] for c in w.other.get("/channels", params={"limit": 100, "q": "Members only"}).json()["channels"]]
    # The owner and admins see it.
    assert w.owner.get(f"/channels/{s}").status_code == 200
    assert w.admin.get(f"/channels/{s}").status_code == 200
    assert s in [c["slug"] for c in w.admin.get("/channels", params={"limit": 100, "q": "Members only"}).json()["channels"]]
    # An invited user does.
    assert w.owner.post(f"/channels/{s}/invites", {"user": "bob"}).status_code == 201
    check_error(w.owner.post(f"/channels/{s}/invites", {"user": "nobody-here"}), 404, "not_found")
    invites = check_json(w.owner.get(f"/channels/{s}/invites"))["invites"]
    assert [i["user"] for i in invites] == ["bob"]
    r = w.other.get(f"/channels/{s}")
    assert r.status_code == 200
    assert s in [c["slug"] for c in w.other.get("/channels", params={"limit": 100, "q": "Members only"}).json()["channels"]]
    assert w.other.post(f"/channels/{s}/follow").status_code == 200
    # The watch token comes as cookies for the HLS path and this channel's API path only.
    cookies = r.headers.get("Set-Cookie", "")
    assert f"Path=/live/{s}/" in cookies and f"Path=/api/v1/channels/{s}" in cookies
    assert "HttpOnly" in cookies and "SameSite=Lax" in cookies

    # The invite code: shown once, then anyone holding it gets in (and a cookie).
    doc = check_json(w.owner.post(f"/channels/{s}/invite-code"))
    code = doc["invite_code"]
    assert doc["invite_url"].endswith(f"/c/{s}?invite={code}")
    assert w.owner.get(f"/channels/{s}").json()["has_invite_code"] is True
    assert code not in json.dumps(w.owner.get(f"/channels/{s}").json())
    check_error(w.guest.get(f"/channels/{s}", params={"invite": "wrong"}), 403, "protected")
    holder = Client(w.srv)
    r = holder.get(f"/channels/{s}", params={"invite": code})
    assert r.status_code == 200 and r.json()["title"] == "Members only"
    assert "stream_key" not in r.json()
    assert holder.get(f"/channels/{s}").status_code == 200  # the cookie alone, now
    assert holder.get(f"/channels/{s}/avatar").status_code == 404  # allowed, just no image
    # A new code revokes what the old one gave.
    code2 = check_json(w.owner.post(f"/channels/{s}/invite-code"))["invite_code"]
    assert code2 != code
    check_error(holder.get(f"/channels/{s}"), 403, "protected")
    check_error(Client(w.srv).get(f"/channels/{s}", params={"invite": code}), 403, "protected")
    assert Client(w.srv).get(f"/channels/{s}", params={"invite": code2}).status_code == 200
    # Withdrawing bob's invitation shuts him out.
    assert w.owner.delete(f"/channels/{s}/invites/bob").status_code == 204
    check_error(w.owner.delete(f"/channels/{s}/invites/bob"), 404, "not_found")
    check_error(w.other.get(f"/channels/{s}"), 403, "protected")
    # Unprotected: open to all.
    assert w.owner.patch(f"/channels/{s}", {"protected": False}).status_code == 200
    assert w.guest.get(f"/channels/{s}").status_code == 200
    assert w.owner.delete(f"/channels/{s}/invite-code").status_code == 204


# --- no HTML ---------------------------------------------------------------------------------


def test_no_user_text_as_html(world):
    w = world
    r = w.admin.post("/topics", {"name": XSS + uuid.uuid4().hex[:4]})
    assert r.status_code == 201
    topic = check_json(r)
    ch = w.channel(title=XSS, description=XSS + "\n<img src=x onerror=alert(2)>", topic=topic["name"],
                   live_title=XSS)
    s = ch["slug"]
    assert ch["title"] == XSS and ch["description"].startswith(XSS)  # kept as text, as typed
    answers = [
        w.guest.get(f"/channels/{s}"), w.owner.get(f"/channels/{s}"),
        w.guest.get("/channels", params={"q": "script"}), w.guest.get("/topics"),
        w.owner.patch(f"/channels/{s}", {"title": XSS + "!"}),
        w.guest.get("/channels/" + requests.utils.quote(XSS, safe="")),
        w.owner.patch(f"/channels/{s}", {"topic": XSS + "-none"}),
        w.owner.get("/me/following"), w.guest.get("/live"),
        w.guest.get("/channels", params={"topic": XSS}),
    ]
    for r in answers:
        check_json(r)  # JSON + nosniff, whatever the status
    # Pages a browser renders: the text is nowhere raw.
    for page in ("/", f"/c/{s}", f"/watch/{s}", "/u/alice", f"/live/{s}/master.m3u8",
                 f"/api/v1/channels/{s}/avatar"):
        r = w.guest.get(w.srv.url + page)
        assert XSS.encode() not in r.content, (page, r.status_code)
        ctype = r.headers.get("Content-Type", "")
        if "html" in ctype:
            assert b"<script>alert" not in r.content


# --- OpenAPI against the router ----------------------------------------------------------------


def test_openapi_matches_router(world):
    w = world
    r = w.guest.get("/openapi.json")
    doc = check_json(r)
    assert doc["openapi"].startswith("3.")
    documented = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            documented.add((method.upper(), path))
            assert op["summary"] and op["x-hearth-auth"] in (
                "none", "optional", "user", "session", "owner", "streamer", "admin"), (path, method)
            assert op["responses"] and "security" in op
            for ref in json.dumps(op).split('"$ref": "')[1:]:
                name = ref.split('"')[0].rsplit("/", 1)[1]
                assert name in doc["components"]["schemas"], (path, method, name)
            for p in [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]:
                assert any(x["name"] == p and x["in"] == "path" for x in op["parameters"]), (path, p)
    routes = check_json(w.guest.get(w.srv.url + "/debug/routes"))["routes"]

    def openapi_form(pattern):
        return "/".join("{" + seg[1:] + "}" if seg.startswith(":") else seg for seg in pattern.split("/"))

    routed = {(x["method"], openapi_form(x["path"])) for x in routes if x["path"].startswith("/api/v1/")}
    assert routed, routes
    assert routed - documented == set(), f"routes missing from openapi.json: {sorted(routed - documented)}"
    assert documented - routed == set(), f"openapi.json documents no such routes: {sorted(documented - routed)}"


# --- live: the directory, viewers, notifications, protected HLS --------------------------------


FFMPEG = "/usr/bin/ffmpeg"


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    if not os.access(FFMPEG, os.X_OK):
        pytest.skip("ffmpeg is needed to publish")
    from livetools import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "small.flv", seconds=4, size=(320, 180), fps=30,
                     gop=30, bitrate="300k")


@pytest.fixture
def publish(world, small_clip):
    from livetools import Publisher

    started = []

    def start(key):
        p = Publisher(small_clip, world.srv.rtmp_port, key, log_path=world.srv.base / f"ffmpeg-{uuid.uuid4().hex[:6]}.log")
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def live_entry(w, slug):
    for e in check_json(w.guest.get("/live"))["live"]:
        if e["slug"] == slug:
            return e
    return None


def test_live_directory_viewers_and_notifications(world, publish):
    w = world
    ch = w.channel(title="Going live", topic="Speedruns")
    s = ch["slug"]
    w.other.post(f"/channels/{s}/follow", {"notify_email": True})
    w.plain.post(f"/channels/{s}/follow")
    p = publish(ch["stream_key"])
    e = wait_until(lambda: live_entry(w, s), 20, "the channel in /live")
    assert e["title"] == "Going live" and e["owner"] == "alice" and e["topic"] == "Speedruns"
    assert e["topic_slug"] == w.topic["slug"] and e["viewers"] == 0
    assert abs(e["started_at"] - time.time()) < 60
    assert e["hls_url"].endswith(f"/live/{s}/master.m3u8") and e["channel_url"].endswith(f"/c/{s}")
    assert live_entry_topic(w, s, "speedruns") and not live_entry_topic(w, s, "nope")
    probe = {"User-Agent": "probe/1"}  # one cookieless player, whatever it asks for
    wait_until(lambda: requests.get(f"{w.srv.url}/live/{s}/index.m3u8", headers=probe, timeout=10).status_code == 200,
               20, "the media playlist")

    # Viewers: a browser keeps its hearth_vid cookie; players without cookies count by
    # address + User-Agent (every player here is on 127.0.0.1, so each has its own UA).
    def viewers():
        return live_entry(w, s)["viewers"]

    assert viewers() == 1  # the probe
    a = requests.Session()
    a.headers["User-Agent"] = "browser-a"
    r = a.get(f"{w.srv.url}/live/{s}/master.m3u8", timeout=10)
    assert r.status_code == 200 and a.cookies.get("hearth_vid")
    assert "private" in r.headers["Cache-Control"]  # it set a cookie: no shared cache
    assert a.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10).status_code == 200
    assert viewers() == 2
    b = requests.Session()
    b.headers["User-Agent"] = "browser-b"
    b.get(f"{w.srv.url}/live/{s}/master.m3u8", timeout=10)
    b.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10)
    assert viewers() == 3
    a.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10)
    a.get(f"{w.srv.url}/live/{s}/master.m3u8", timeout=10)
    assert viewers() == 3
    for _ in range(2):
        requests.get(f"{w.srv.url}/live/{s}/index.m3u8", headers={"User-Agent": "VLC/3.0.20"}, timeout=10)
    assert viewers() == 4
    r = requests.get(f"{w.srv.url}/live/{s}/index.m3u8", headers=probe, timeout=10)
    assert r.headers["Cache-Control"].startswith("public")  # nothing personal in it
    assert viewers() == 4
    doc = check_json(w.guest.get(f"/channels/{s}"))
    assert doc["live"]["viewers"] == 4 and doc["live"]["title"] == "Going live"
    listed = {c["slug"]: c for c in w.guest.get("/channels", params={"q": "Going live", "limit": 100}).json()["channels"]}
    assert listed[s]["live"]["viewers"] == 4

    # A new title shows at once while live.
    assert w.owner.patch(f"/channels/{s}", {"title": "Renamed live"}).status_code == 200
    assert live_entry(w, s)["title"] == "Renamed live"
    assert w.owner.patch(f"/channels/{s}", {"live_title": "Stream title"}).status_code == 200
    assert live_entry(w, s)["title"] == "Stream title"
    assert w.guest.get(f"/channels/{s}").json()["live"]["title"] == "Stream title"

    # Followers were told, in the app and (bob asked for it) by e-mail.
    def note(client):
        for n in check_json(client.get("/me/notifications", params={"unread": 1}))["notifications"]:
            if n["kind"] == "live" and n["channel"] and n["channel"]["slug"] == s:
                return n
        return None

    n = wait_until(lambda: note(w.other), 10, "bob's notification")
    assert n["read_at"] is None
    assert wait_until(lambda: note(w.plain), 10, "carol's notification")
    assert check_json(w.other.post("/me/notifications/read", {"id": n["id"]}))["marked"] == 1
    assert note(w.other) is None
    assert check_json(w.plain.post("/me/notifications/read"))["marked"] >= 1
    mails = wait_until(lambda: w.sink.for_rcpt("bob@hearth.test"), 15, "bob's go-live e-mail")
    assert f"/c/{s}" in mails[0][1]
    assert not w.sink.for_rcpt("alice@hearth.test")

    # The peak is written while the stream runs (a crash would not lose it): the first
    # rise at once, later ones at most every 30 s, so at least the first viewer is there.
    live_peak = wait_until(lambda: sql(w.srv, "SELECT peak_viewers FROM streams WHERE channel_id = ?"
                                              " AND ended_at IS NULL AND peak_viewers > 0", ch["id"]),
                           10, "the peak in the open streams row")
    assert 1 <= live_peak[0][0] <= 4

    # The stream ends: gone from /live, and its peak is in the database.
    p.stop()
    wait_until(lambda: live_entry(w, s) is None, 20, "the channel leaving /live")
    peak = wait_until(lambda: sql(w.srv, "SELECT peak_viewers FROM streams WHERE channel_id = ? "
                                          "AND peak_viewers > 0", ch["id"]), 10, "the peak in streams")
    assert peak[0][0] == 4
    assert w.guest.get(f"/channels/{s}").json()["live"] is None


def live_entry_topic(w, slug, topic):
    return any(e["slug"] == slug for e in w.guest.get("/live", params={"topic": topic}).json()["live"])


def test_protected_hls(world, publish):
    w = world
    ch = w.channel(title="Secret stream", protected=True)
    s = ch["slug"]
    code = check_json(w.owner.post(f"/channels/{s}/invite-code"))["invite_code"]
    publish(ch["stream_key"])
    master = f"{w.srv.url}/live/{s}/master.m3u8"
    # Listed nowhere public, and the door is shut without a credential.
    wait_until(lambda: w.guest.get(master).status_code in (403,), 20, "a 403 from the protected channel")
    time.sleep(0.5)
    assert live_entry(w, s) is None
    r = requests.get(master, timeout=10)
    check_error(r, 403, "protected")
    assert "no-store" in r.headers["Cache-Control"]
    check_error(requests.get(master + "?invite=wrong", timeout=10), 403, "protected")
    # The code opens it, and the cookie keeps it open (private answers only).
    viewer = requests.Session()
    r = wait_until(lambda: (lambda x: x if x.status_code == 200 else None)(viewer.get(master + "?invite=" + code, timeout=10)),
                   20, "the master playlist with the invite code")
    assert "private" in r.headers["Cache-Control"]
    assert viewer.cookies.get("hearth_access", path=f"/live/{s}/")
    r = viewer.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10)
    assert r.status_code == 200 and "private" in r.headers["Cache-Control"]
    # The owner gets a token from the channel's page; an invited user too.
    owner = w.owner
    assert owner.get(f"/channels/{s}").status_code == 200
    assert owner.s.get(master, timeout=10).status_code == 200
    w.owner.post(f"/channels/{s}/invites", {"user": "carol"})
    assert w.plain.get(f"/channels/{s}").status_code == 200
    assert w.plain.s.get(master, timeout=10).status_code == 200
    assert w.other.s.get(master, timeout=10).status_code == 403
    # A new invite code revokes the old cookies.
    w.owner.post(f"/channels/{s}/invite-code")
    assert viewer.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10).status_code == 403


def test_delete_while_live(world, publish):
    w = world
    ch = w.channel(title="Short lived")
    s = ch["slug"]
    p = publish(ch["stream_key"])
    wait_until(lambda: live_entry(w, s), 20, "the channel in /live")
    master = f"{w.srv.url}/live/{s}/master.m3u8"
    wait_until(lambda: requests.get(master, timeout=10).status_code == 200, 20, "the master playlist")
    assert w.owner.delete(f"/channels/{s}").status_code == 204
    # The stream ended on the loop before the answer went out, and its HLS is gone with it
    # (not served for the minute an ended stream lingers).
    assert live_entry(w, s) is None
    check_error(requests.get(master, timeout=10), 404, "not_found")
    check_error(w.guest.get(f"/channels/{s}"), 404, "not_found")
    assert w.srv.wait_for_log(rf"stream {s}: the channel was deleted; ending its stream", timeout=5)
    # The publisher is dropped, and its key no longer works.
    assert p.wait(15) is not None, "ffmpeg is still publishing to a deleted channel"
    assert w.srv.wait_for_log(rf"rtmp .* {s}: closed: the stream was ended by the server", timeout=5)


def test_delete_protected_while_its_stream_lingers(world, publish):
    """An ended stream's HLS lingers for a minute; deleting its protected
    channel then must not open that minute to everyone."""
    w = world
    ch = w.channel(title="Private and over", protected=True)
    s = ch["slug"]
    p = publish(ch["stream_key"])
    master = f"{w.srv.url}/live/{s}/master.m3u8"
    owner = w.owner
    assert owner.get(f"/channels/{s}").status_code == 200  # the owner's access token
    wait_until(lambda: owner.s.get(master, timeout=10).status_code == 200, 20, "the master playlist")
    p.stop()
    assert w.srv.wait_for_log(rf"stream {s}.*(ended|unpublish|closed)", timeout=20)
    check_error(requests.get(master, timeout=10), 403, "protected")
    assert w.owner.delete(f"/channels/{s}").status_code == 204
    for path in ("master.m3u8", "index.m3u8"):
        check_error(requests.get(f"{w.srv.url}/live/{s}/{path}", timeout=10), 404, "not_found")


def test_delete_account_while_live(world, publish):
    """DELETE /me goes the way DELETE /channels/:slug goes, for every channel of the account."""
    w = world
    name = uname("leaver")
    cli(w.srv, "user", "add", name, "--password-stdin", "--role", "streamer", input=PASSWORD + "\n")
    me = Client(w.srv).login(name)
    topic = check_json(w.admin.post("/topics", {"name": "Leaving " + uuid.uuid4().hex[:6]}))
    live = check_json(me.post("/channels", {"title": "Last show", "topic": topic["slug"]}))
    quiet = check_json(me.post("/channels", {"title": "Quiet one"}))
    for ch in (live, quiet):
        assert me.req("PUT", f"/channels/{ch['slug']}/avatar", raw=png(), headers={"Content-Type": "image/png"}).status_code == 200
        assert me.req("PUT", f"/channels/{ch['slug']}/banner", raw=png(4, 2), headers={"Content-Type": "image/png"}).status_code == 200
    files = glob.glob(str(w.srv.data_dir / "channels" / str(live["id"]) / "*")) + \
        glob.glob(str(w.srv.data_dir / "channels" / str(quiet["id"]) / "*"))
    assert len(files) == 4, files
    w.other.post(f"/channels/{live['slug']}/follow")
    s = live["slug"]
    p = publish(live["stream_key"])
    e = wait_until(lambda: live_entry(w, s), 20, "the channel in /live")
    assert e["topic"] == topic["name"]
    master = f"{w.srv.url}/live/{s}/master.m3u8"
    wait_until(lambda: requests.get(master, timeout=10).status_code == 200, 20, "the master playlist")

    # While it is live, an admin renames its topic: the live directory shows it at once.
    assert w.admin.patch(f"/topics/{topic['slug']}", {"name": "Left early"}).status_code == 200
    assert live_entry(w, s)["topic"] == "Left early"
    assert [x["slug"] for x in w.guest.get("/live", params={"topic": topic["slug"]}).json()["live"]] == [s]

    # A wrong password changes nothing.
    check_error(me.req("DELETE", "/me", {"password": "not the password"}), 403, "wrong_password")
    assert live_entry(w, s) and all(os.path.exists(f) for f in files)

    r = me.req("DELETE", "/me", {"password": PASSWORD})
    assert r.status_code == 200 and check_json(r) == {"ok": True}
    assert "no-store" in r.headers["Cache-Control"]
    assert "max-age=0" in r.headers["Set-Cookie"].lower()
    # The stream ended on the loop before the answer: not listed, HLS gone, publisher dropped.
    assert live_entry(w, s) is None
    check_error(requests.get(master, timeout=10), 404, "not_found")
    check_error(requests.get(f"{w.srv.url}/live/{s}/index.m3u8", timeout=10), 404, "not_found")
    assert p.wait(15) is not None, "ffmpeg is still publishing for a deleted account"
    # The channels, their images and the account are gone; so is the follow.
    for ch in (live, quiet):
        check_error(w.guest.get(f"/channels/{ch['slug']}"), 404, "not_found")
        check_error(w.guest.get(f"/channels/{ch['slug']}/avatar"), 404, "not_found")
    assert not [f for f in files if os.path.exists(f)], "image files left behind"
    check_error(w.guest.get(f"/users/{name}"), 404, "not_found")
    assert s not in [c["slug"] for c in w.other.get("/me/following").json()["channels"]]
    assert sql(w.srv, "SELECT count(*) FROM channels WHERE id IN (?, ?)", live["id"], quiet["id"]) == [(0,)]
    check_error(me.get("/me"), 401, "unauthenticated")
    for ch in (live, quiet):
        assert w.srv.wait_for_log(rf"channel '{ch['slug']}' deleted with the account of '{name}'", timeout=5)
    # The key is dead too: publishing again is refused.
    p2 = publish(live["stream_key"])
    assert p2.wait(15) is not None
    time.sleep(0.5)
    assert live_entry(w, s) is None


def test_client_leaving_mid_request(world):
    """The job goes on without its client: the channel is still deleted, nothing breaks."""
    w = world
    for _ in range(5):
        ch = w.channel()
        s = ch["slug"]
        sock = socket.create_connection((HOST, w.srv.port), timeout=5)
        cookie = "; ".join(f"{k}={v}" for k, v in w.owner.s.cookies.items())
        req = (f"DELETE {API}/channels/{s} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\n"
               f"X-CSRF-Token: {w.owner.csrf}\r\nContent-Length: 0\r\n\r\n")
        sock.sendall(req.encode())
        sock.close()
        wait_until(lambda: w.guest.get(f"/channels/{s}").status_code == 404, 10, "the deletion")
        # Many reads that leave at once.
        for _ in range(20):
            c = socket.create_connection((HOST, w.srv.port), timeout=5)
            c.sendall(f"GET {API}/channels?limit=100 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            c.close()
    assert w.guest.get("/live").status_code == 200
    assert w.guest.get("/channels").status_code == 200
