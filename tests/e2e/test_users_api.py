"""
Public user profiles from outside: GET /api/v1/users/:name.

What anyone may see of an account, and nothing more: the name as stored,
when it was made, its channels with their live state. Never the e-mail
address, the roles, the stream keys. Unknown, disabled and deleted accounts
are the same 404. Protected channels show only to those who may watch them.
Titles with HTML in them come back as JSON text, and the /u/<name> page
does not carry them as markup. While ffmpeg publishes, the channel's live
state (started_at, viewers) is on the profile.
"""
import glob
import shutil
import sqlite3
import subprocess
import time
import uuid

import pytest
import requests

from hearthtest import HOST, Server, make_static_tree

API = "/api/v1"
JSON = "application/json"
PASSWORD = "correct horse battery staple"
XSS = "<script>alert(1)</script>"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


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


def uname(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Client:
    def __init__(self, srv):
        self.srv = srv
        self.s = requests.Session()
        self.csrf = None

    def login(self, name):
        r = self.s.post(self.srv.url + API + "/auth/login", json={"login": name, "password": PASSWORD},
                        timeout=15)
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        return self

    def req(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.csrf and method not in ("GET", "HEAD"):
            h["X-CSRF-Token"] = self.csrf
        url = path if path.startswith("http") else self.srv.url + API + path
        return self.s.request(method, url, headers=h, json=body, timeout=15)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None):
        return self.req("POST", path, body)


def check_json(r):
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == JSON, (r.status_code, ctype, r.text[:200])
    assert r.headers.get("X-Content-Type-Options") == "nosniff", r.headers
    return r.json()


def check_404(r):
    body = check_json(r)
    assert r.status_code == 404, (r.status_code, body)
    assert body.get("code") == "not_found" and body.get("error"), body
    return body


def add_user(srv, name, roles="streamer,user", email=None):
    args = ["user", "add", name, "--password-stdin", "--role", roles]
    if email:
        args += ["--email", email]
    cli(srv, *args, input=PASSWORD + "\n")


class World:
    def __init__(self, srv):
        self.srv = srv
        self.alice = uname("alice")
        self.alice_email = f"{self.alice}@secret-mail.test"
        add_user(srv, self.alice, email=self.alice_email)
        self.bob = uname("bob")
        add_user(srv, self.bob, "user", email=f"{self.bob}@secret-mail.test")
        self.eve = uname("eve")
        add_user(srv, self.eve, "user")
        self.owner = Client(srv).login(self.alice)
        self.guest = Client(srv)
        self.channels = []
        for title in ("Plain channel", f"Tricky {XSS} & \"quotes\""):
            r = self.owner.post("/channels", {"title": title})
            assert r.status_code == 201, r.text
            self.channels.append(r.json())
        r = self.owner.post("/channels", {"title": "Members only", "protected": True})
        assert r.status_code == 201, r.text
        self.protected = r.json()
        r = self.owner.post(f"/channels/{self.protected['slug']}/invites", {"user": self.bob})
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def world(bin_path, tmp_path_factory):
    from conftest import REPO

    base = tmp_path_factory.mktemp("users")
    tree = make_static_tree(base)
    dist = REPO / "web" / "dist"
    static = dist if (dist / "index.html").exists() else tree.static_dir
    srv = Server(bin_path, base / "srv", static_dir=static,
                 env={"HEARTH_AUTH_LOGIN_ATTEMPTS": "1000", "HEARTH_SERVER_WORKERS": "2"})
    srv.start()
    try:
        yield World(srv)
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def alive(world):
    yield
    assert world.srv.alive(), "the server died:\n" + world.srv.log_tail()


def test_profile_fields_and_nothing_private(world):
    w = world
    r = w.guest.get(f"/users/{w.alice}")
    body = check_json(r)
    assert r.status_code == 200, body
    assert set(body) == {"name", "created_at", "channels"}, body
    assert body["name"] == w.alice
    assert isinstance(body["created_at"], int) and abs(body["created_at"] - time.time()) < 3600
    # Public channels, by slug; the protected one is not shown to a guest.
    assert sorted(c["slug"] for c in body["channels"]) == sorted(c["slug"] for c in w.channels)
    for c in body["channels"]:
        assert c["owner"] == w.alice
        assert c["live"] is None
        for private in ("stream_key", "obs", "rtmp_url", "has_invite_code", "email"):
            assert private not in c, (private, c)
    # Nothing about the account beyond its name: no e-mail, no roles, not even by accident.
    text = r.text
    assert w.alice_email not in text and "secret-mail" not in text, text
    assert "roles" not in text and "streamer" not in text and "totp" not in text, text
    for c in w.channels:
        assert c["stream_key"] not in text
    # A signed-in owner asking gets no more private fields either (it is a public view).
    r = w.owner.get(f"/users/{w.alice}")
    mine = check_json(r)
    assert r.status_code == 200
    assert w.alice_email not in r.text and all("stream_key" not in c for c in mine["channels"])
    assert "private" in r.headers.get("Cache-Control", ""), r.headers


def test_name_lookup_ignores_case(world):
    w = world
    r = w.guest.get(f"/users/{w.alice.upper()}")
    body = check_json(r)
    assert r.status_code == 200, body
    assert body["name"] == w.alice  # as stored, not as asked


def test_unknown_disabled_and_deleted_are_404(world):
    w = world
    check_404(w.guest.get(f"/users/{uname('nobody')}"))
    check_404(w.guest.get("/users/" + "x" * 300))
    check_404(w.guest.get("/users/%3Cscript%3E"))
    # A user without channels is a profile with none.
    r = w.guest.get(f"/users/{w.eve}")
    assert r.status_code == 200 and check_json(r)["channels"] == []
    # Disabled: the same 404 as unknown, to guests and to signed-in users.
    sql(w.srv, "UPDATE users SET disabled = 1 WHERE name = ?", w.eve)
    try:
        body = check_404(w.guest.get(f"/users/{w.eve}"))
        assert w.eve not in body["error"]
        check_404(Client(w.srv).login(w.bob).get(f"/users/{w.eve}"))
    finally:
        sql(w.srv, "UPDATE users SET disabled = 0 WHERE name = ?", w.eve)
    assert w.guest.get(f"/users/{w.eve}").status_code == 200
    # Deleted through the API: gone.
    gone = uname("gone")
    add_user(w.srv, gone, "user")
    c = Client(w.srv).login(gone)
    r = c.req("DELETE", "/me", {"password": PASSWORD})
    assert r.status_code in (200, 204), r.text
    check_404(w.guest.get(f"/users/{gone}"))


def test_protected_channels_only_for_those_who_may_watch(world):
    w = world
    slug = w.protected["slug"]

    def slugs(client):
        r = client.get(f"/users/{w.alice}")
        assert r.status_code == 200, r.text
        return {c["slug"] for c in check_json(r)["channels"]}

    assert slug not in slugs(w.guest)
    assert slug not in slugs(Client(w.srv).login(w.eve))
    assert slug in slugs(Client(w.srv).login(w.bob))  # invited
    assert slug in slugs(w.owner)


def test_html_in_titles_stays_text(world):
    w = world
    r = w.guest.get(f"/users/{w.alice}")
    titles = [c["title"] for c in check_json(r)["channels"]]
    assert f"Tricky {XSS} & \"quotes\"" in titles  # the text as typed, in JSON
    # The page at /u/<name> is the app's shell: nothing of the user's text as markup.
    page = w.guest.get(w.srv.url + f"/u/{w.alice}")
    assert page.status_code == 200
    assert page.headers.get("Content-Type", "").startswith("text/html")
    assert XSS not in page.text and "alert(1)" not in page.text


def test_openapi_documents_the_route(world):
    doc = check_json(world.guest.get("/openapi.json"))
    op = doc["paths"]["/api/v1/users/{name}"]["get"]
    assert op["x-hearth-auth"] == "optional"
    assert any(p["name"] == "name" and p["in"] == "path" for p in op["parameters"])
    assert "UserProfile" in doc["components"]["schemas"]
    props = doc["components"]["schemas"]["UserProfile"]["properties"]
    assert "email" not in props and set(props) == {"name", "created_at", "channels"}


@pytest.mark.skipif(not shutil.which(FFMPEG), reason="ffmpeg is not installed")
def test_live_state_while_publishing(world):
    w = world
    ch = w.channels[0]
    r = w.owner.get(f"/channels/{ch['slug']}")
    key = r.json()["stream_key"]
    ff = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-b:a", "64k", "-t", "60",
         "-f", "flv", f"rtmp://{HOST}:{w.srv.rtmp_port}/live/{key}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        live = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and live is None:
            assert ff.poll() is None, ff.stderr.read().decode(errors="replace")
            body = check_json(w.guest.get(f"/users/{w.alice}"))
            live = next(c for c in body["channels"] if c["slug"] == ch["slug"])["live"]
            if live is None:
                time.sleep(0.25)
        assert live is not None, "the profile never showed the channel live"
        assert isinstance(live["started_at"], int) and abs(live["started_at"] - time.time()) < 120
        assert isinstance(live["viewers"], int) and live["viewers"] >= 0
        # The other channels are not live.
        assert all(c["live"] is None for c in body["channels"] if c["slug"] != ch["slug"])
    finally:
        ff.terminate()
        try:
            ff.wait(10)
        except subprocess.TimeoutExpired:
            ff.kill()
            ff.wait()
    # And off again once the publisher is gone (the hub ends the stream).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = check_json(w.guest.get(f"/users/{w.alice}"))
        if next(c for c in body["channels"] if c["slug"] == ch["slug"])["live"] is None:
            break
        time.sleep(0.25)
    else:
        pytest.fail("the channel stayed live on the profile after ffmpeg stopped")
