"""
The account API from outside: registration open and closed, e-mail
verification and password reset through a real SMTP conversation (an
aiosmtpd sink on 127.0.0.1), login by name and by e-mail, throttling,
sessions and CSRF, API keys and their expiry, verification and reset links
that expire (their rows aged in SQLite), Secure cookies when site.public_url
is https, GET /api/v1/site, TOTP (codes computed here with hmac/hashlib),
account deletion, and no answer that a browser could take for HTML.

Throttling is counted per client address, and every test here connects from
127.0.0.1; the tests that are about throttling connect from other loopback
addresses (127.0.0.2 and on) so that each has a clean count.
"""
import base64
import email
import email.policy
import hashlib
import hmac
import http.client
import json
import re
import sqlite3
import struct
import subprocess
import threading
import time
import uuid

import pytest
import requests

from hearthtest import HOST, Server, clean_env, free_port, make_static_tree

try:
    import aiosmtpd.controller as aiosmtpd_controller
except ImportError:  # a missing package must not quietly skip the account tests
    raise ImportError("the SMTP sink needs Debian's python3-aiosmtpd (scripts/deps test)")

API = "/api/v1"
JSON = "application/json"


# --- the SMTP sink ----------------------------------------------------------------------------


class Sink:
    """Keeps every message it is given; wait_for() hands them to a test."""

    def __init__(self):
        self.messages = []  # (envelope recipients, email.message.EmailMessage)
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.cond:
            self.messages.append((list(envelope.rcpt_tos), envelope.mail_from, msg))
            self.cond.notify_all()
        return "250 Message accepted for delivery"

    def for_rcpt(self, rcpt):
        with self.cond:
            return [m for m in self.messages if rcpt in m[0]]

    def wait_for(self, rcpt, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [m for m in self.messages if rcpt in m[0]]
                if len(got) >= count:
                    return got[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail for {rcpt} within {timeout}s")
                self.cond.wait(left)


@pytest.fixture(scope="module")
def smtp():
    sink = Sink()
    ctl = aiosmtpd_controller.Controller(sink, hostname=HOST, port=free_port())
    ctl.start()
    sink.port = ctl.port
    yield sink
    ctl.stop()


# --- servers ------------------------------------------------------------------------------------


def hearth_path():
    from conftest import hearth_bin

    return hearth_bin()


def start(tmp_path_factory, name, env):
    base = tmp_path_factory.mktemp(name)
    tree = make_static_tree(base)
    srv = Server(hearth_path(), base / "srv", static_dir=tree.static_dir, env=env)
    srv.start()
    return srv


def smtp_env(smtp, **extra):
    env = {
        "HEARTH_SMTP_HOST": HOST,
        "HEARTH_SMTP_PORT": str(smtp.port),
        "HEARTH_SMTP_TLS": "none",
        "HEARTH_SMTP_FROM": "Hearth Test <noreply@hearth.test>",
        # Every test but the throttling ones connects from 127.0.0.1.
        "HEARTH_AUTH_LOGIN_ATTEMPTS": "1000",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def srv(bin_path, tmp_path_factory, smtp):
    """Registration open, no verification, mail to the sink."""
    s = start(tmp_path_factory, "auth", smtp_env(smtp))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vsrv(bin_path, tmp_path_factory, smtp):
    """Verification required."""
    s = start(tmp_path_factory, "authv", smtp_env(smtp, HEARTH_SITE_REQUIRE_VERIFICATION="true"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tsrv(bin_path, tmp_path_factory, smtp):
    """Throttling at 3 failures a minute."""
    s = start(
        tmp_path_factory,
        "autht",
        smtp_env(smtp, HEARTH_AUTH_LOGIN_ATTEMPTS="3", HEARTH_AUTH_LOGIN_WINDOW="60s"),
    )
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def servers_alive(request):
    yield
    for name in ("srv", "vsrv", "tsrv"):
        if name in request.fixturenames:
            s = request.getfixturevalue(name)
            assert s.alive(), f"{name} died:\n" + s.log_tail()


# --- a client -----------------------------------------------------------------------------------


def uname(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def check_json(r):
    """Every answer of the API is JSON that no browser would sniff into HTML."""
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == JSON, (r.status_code, ctype, r.text[:200])
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert "no-store" in r.headers.get("Cache-Control", "")
    return r.json()


def check_error(r, status, code):
    body = check_json(r)
    assert r.status_code == status, (r.status_code, body)
    assert body.get("code") == code, body
    assert isinstance(body.get("error"), str) and body["error"]
    return body


class Client:
    def __init__(self, server):
        self.srv = server
        self.s = requests.Session()
        self.csrf = None

    def url(self, path):
        return self.srv.url + API + path

    def req(self, method, path, body=None, csrf=True, headers=None, **kw):
        h = dict(headers or {})
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        if body is not None:
            kw["json"] = body
        return self.s.request(method, self.url(path), headers=h, timeout=15, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body, **kw)

    def register(self, name=None, email=None, password="correct horse battery"):
        name = name or uname()
        body = {"name": name, "password": password}
        if email is not None:
            body["email"] = email
        r = self.post("/auth/register", body)
        assert r.status_code == 201, r.text
        check_json(r)
        self.name, self.password, self.email = name, password, email
        return r.json()

    def login(self, login=None, password=None, totp=None, expect=200):
        body = {"login": login or self.name, "password": password or self.password}
        if totp is not None:
            body["totp"] = totp
        r = self.post("/auth/login", body)
        assert r.status_code == expect, r.text
        if expect == 200:
            self.csrf = check_json(r)["csrf_token"]
        return r

    def cookie(self):
        return self.s.cookies.get("hearth_session")


def new_user(server, **kw):
    c = Client(server)
    c.register(**kw)
    c.login()
    return c


# --- registration -----------------------------------------------------------------------------


def test_register_and_login_by_name_and_by_email(srv):
    c = Client(srv)
    name = uname("Al.")
    addr = f"{name.lower()}@example.org"
    body = c.register(name=name, email=addr)
    assert body["verification_required"] is False
    u = body["user"]
    assert u["name"] == name and u["email"] == addr
    assert u["roles"] == ["streamer", "user"]  # the registration_roles setting
    assert u["verified"] is True and u["totp_enabled"] is False
    assert c.cookie() is None  # registering does not sign in

    r = c.login(login=name.upper())  # names ignore case
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("hearth_session=")
    attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # public_url is http here
    assert any(a.startswith("max-age=") and int(a[8:]) > 86400 for a in attrs)
    token = r.json()["csrf_token"]
    assert len(token) == 43 and r.json()["user"]["name"] == name

    me = check_json(c.get("/me"))
    assert me["user"]["name"] == name and me["via"] == "session"
    assert me["csrf_token"] == token

    c2 = Client(srv)
    c2.name, c2.password = addr.upper(), c.password  # e-mail, any case
    r = c2.login()
    assert r.json()["user"]["name"] == name
    assert c2.cookie() != c.cookie()  # every login is its own session
    assert check_json(c.get("/me"))["user"]["name"] == name


def test_register_validation(srv):
    c = Client(srv)
    name = uname()
    good = {"name": name, "email": f"{name}@example.org", "password": "correct horse"}

    def post(body=None, **kw):
        return c.post("/auth/register", body, **kw)

    check_error(post({k: v for k, v in good.items() if k != "password"}), 400, "invalid")
    check_error(post({k: v for k, v in good.items() if k != "name"}), 400, "invalid")
    check_error(post({**good, "name": "bad name!"}), 400, "invalid")
    check_error(post({**good, "name": 12}), 400, "invalid")
    check_error(post({**good, "password": "short"}), 400, "invalid")
    check_error(post({**good, "email": "nope"}), 400, "invalid")
    check_error(post({**good, "roles": ["admin"]}), 400, "unknown_field")  # no self-promotion
    check_error(post([good]), 400, "bad_json")
    check_error(c.s.post(c.url("/auth/register"), data=json.dumps(good), timeout=5,
                         headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    check_error(c.s.post(c.url("/auth/register"), data=good, timeout=5), 415,
                "unsupported_media_type")
    check_error(post({**good, "password": "x" * 20000}), 413, "too_large")

    assert post(good).status_code == 201
    check_error(post({**good, "name": name.upper(), "email": None}), 409, "exists")
    check_error(post({**good, "name": uname()}), 409, "exists")  # the e-mail is taken


def test_register_closed(start_server):
    s = start_server({"HEARTH_SITE_ALLOW_REGISTRATION": "false",
                      "HEARTH_SITE_REQUIRE_VERIFICATION": "true", "HEARTH_SITE_NAME": "Closed Club"})
    c = Client(s)
    check_error(c.post("/auth/register", {"name": uname(), "password": "correct horse"}), 403,
                "registration_closed")
    # What the front end reads to hide its sign-up form.
    r = requests.get(s.url + API + "/site", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(JSON)
    assert r.json() == {"name": "Closed Club", "allow_registration": False,
                        "require_verification": True, "public_url": s.url}


def test_site_open(srv):
    r = requests.get(srv.url + API + "/site", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"name": "Hearth", "allow_registration": True, "require_verification": False,
                        "public_url": srv.url}


def test_wrong_password_and_unknown_user(srv):
    c = new_user(srv)
    other = Client(srv)
    r1 = other.post("/auth/login", {"login": c.name, "password": "wrong password"})
    r2 = other.post("/auth/login", {"login": uname(), "password": "wrong password"})
    b1, b2 = check_error(r1, 401, "bad_credentials"), check_error(r2, 401, "bad_credentials")
    assert b1["error"] == b2["error"]  # nothing tells which names exist
    assert "Set-Cookie" not in r1.headers
    check_error(other.get("/me"), 401, "unauthenticated")
    check_error(other.post("/auth/login", {"login": c.name}), 400, "invalid")


def test_logout(srv):
    c = new_user(srv)
    old = c.cookie()
    check_error(c.post("/auth/logout", csrf=False), 403, "csrf")
    assert check_json(c.get("/me"))["user"]["name"] == c.name  # still signed in
    r = c.post("/auth/logout")
    assert r.status_code == 200 and check_json(r)["ok"] is True
    assert "max-age=0" in r.headers["Set-Cookie"].lower()
    check_error(c.get("/me"), 401, "unauthenticated")
    # the old cookie value is dead on the server, not just forgotten by the client
    r = requests.get(c.url("/me"), cookies={"hearth_session": old}, timeout=5)
    check_error(r, 401, "unauthenticated")
    # a guest may log out too (a stale cookie is cleared)
    assert Client(srv).post("/auth/logout").status_code == 200


# --- CSRF -------------------------------------------------------------------------------------


def test_csrf_on_every_cookie_write(srv):
    c = new_user(srv)
    key = {"name": "deploy"}
    check_error(c.post("/me/api-keys", key, csrf=False), 403, "csrf")
    check_error(c.post("/me/api-keys", key, headers={"X-CSRF-Token": "A" * 43}), 403, "csrf")
    check_error(c.post("/me/api-keys", key, headers={"X-CSRF-Token": ""}), 403, "csrf")
    check_error(c.req("PATCH", "/me", {"email": "x@example.org", "current_password": c.password},
                      csrf=False), 403, "csrf")
    check_error(c.req("DELETE", "/me", {"password": c.password}, csrf=False), 403, "csrf")
    check_error(c.post("/me/totp", csrf=False), 403, "csrf")
    # the right token, sent from another site's page, is refused as well
    check_error(c.post("/me/api-keys", key, headers={"Origin": "https://evil.example"}), 403,
                "csrf")
    # another session's token is not this session's
    other = new_user(srv)
    check_error(c.post("/me/api-keys", key, headers={"X-CSRF-Token": other.csrf}), 403, "csrf")
    # the right one
    r = c.post("/me/api-keys", key, headers={"Origin": srv.url})
    assert r.status_code == 201, r.text
    assert check_json(c.get("/me/api-keys"))["keys"][0]["name"] == "deploy"


def test_login_csrf_origin_check(srv):
    c = Client(srv)
    c.register()
    body = {"login": c.name, "password": c.password}
    check_error(c.post("/auth/login", body, headers={"Origin": "https://evil.example"}), 403,
                "bad_origin")
    check_error(c.post("/auth/login", body, headers={"Origin": "null"}), 403, "bad_origin")
    check_error(c.post("/auth/register", {"name": uname(), "password": "correct horse"},
                       headers={"Origin": "https://evil.example"}), 403, "bad_origin")
    check_error(c.post("/auth/password-reset", {"email": "a@example.org"},
                       headers={"Origin": "http://evil.example"}), 403, "bad_origin")
    assert c.cookie() is None
    # what an HTML form can send is not JSON
    r = c.s.post(c.url("/auth/login"), data=body, timeout=5)
    check_error(r, 415, "unsupported_media_type")
    r = c.s.post(c.url("/auth/login"), data=json.dumps(body), timeout=5,
                 headers={"Content-Type": "text/plain"})
    check_error(r, 415, "unsupported_media_type")
    # the site's own origin, and the Host the request was sent to, pass
    assert c.post("/auth/login", body, headers={"Origin": srv.url}).status_code == 200
    host = f"localhost:{srv.port}"
    r = c.post("/auth/login", body, headers={"Origin": f"http://{host}", "Host": host})
    assert r.status_code == 200


# --- API keys ---------------------------------------------------------------------------------


def test_api_keys(srv):
    c = new_user(srv)
    r = c.post("/me/api-keys", {"name": "ci"})
    assert r.status_code == 201
    k = check_json(r)
    key = k["key"]
    assert re.fullmatch(r"hk_[A-Za-z0-9_-]{43}", key)
    assert key.startswith(k["prefix"]) and k["expires_at"] is None

    listed = check_json(c.get("/me/api-keys"))["keys"]
    assert [x["id"] for x in listed] == [k["id"]]
    assert "key" not in listed[0] and key not in json.dumps(listed)  # shown once only

    api = requests.Session()
    api.headers["X-API-Key"] = key
    me = check_json(api.get(c.url("/me"), timeout=5))
    assert me["user"]["name"] == c.name and me["via"] == "api_key"
    assert "csrf_token" not in me
    assert check_json(api.get(c.url("/me/api-keys"), timeout=5))["keys"][0]["last_used"]

    # what a stolen key must not do
    for method, path, body in [
        ("POST", "/me/api-keys", {"name": "more"}),
        ("PATCH", "/me", {"password": "new password!", "current_password": c.password}),
        ("DELETE", "/me", {"password": c.password}),
        ("POST", "/me/totp", None),
    ]:
        check_error(api.request(method, c.url(path), json=body, timeout=5), 403,
                    "session_required")
    check_error(api.post(c.url("/auth/logout"), timeout=5), 400, "not_a_session")

    # revoking needs no CSRF token with a key (there is no cookie to abuse)
    k2 = check_json(c.post("/me/api-keys", {"name": "second"}))
    r = api.delete(c.url(f"/me/api-keys/{k2['id']}"), timeout=5)
    assert r.status_code == 200, r.text
    check_error(api.delete(c.url(f"/me/api-keys/{k2['id']}"), timeout=5), 404, "not_found")
    check_error(api.delete(c.url("/me/api-keys/abc"), timeout=5), 404, "not_found")

    # another user's key id is not found, for them
    other = new_user(srv)
    check_error(other.req("DELETE", f"/me/api-keys/{k['id']}"), 404, "not_found")
    assert check_json(c.get("/me/api-keys"))["keys"][0]["id"] == k["id"]

    # revoked: the key stops working, and a valid cookie beside it is not a fallback
    assert c.req("DELETE", f"/me/api-keys/{k['id']}").status_code == 200
    check_error(api.get(c.url("/me"), timeout=5), 401, "invalid_api_key")
    r = c.get("/me", headers={"X-API-Key": key})
    check_error(r, 401, "invalid_api_key")
    check_error(c.get("/me", headers={"X-API-Key": "hk_" + "A" * 43}), 401, "invalid_api_key")
    check_error(c.get("/me", headers={"X-API-Key": "garbage"}), 401, "invalid_api_key")


def test_api_key_validation_and_expiry(srv):
    c = new_user(srv)
    now = int(time.time())
    check_error(c.post("/me/api-keys", {}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": ""}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": "a\nb"}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": "x" * 65}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": "k", "expires_at": now - 10}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": "k", "expires_at": "tomorrow"}), 400, "invalid")
    check_error(c.post("/me/api-keys", {"name": "k", "scope": "all"}), 400, "unknown_field")

    k = check_json(c.post("/me/api-keys", {"name": "short-lived", "expires_at": now + 2}))
    assert k["expires_at"] == now + 2
    h = {"X-API-Key": k["key"]}
    assert requests.get(c.url("/me"), headers=h, timeout=5).status_code == 200
    time.sleep(max(0, now + 3 - time.time()))
    check_error(requests.get(c.url("/me"), headers=h, timeout=5), 401, "invalid_api_key")
    listed = check_json(c.get("/me/api-keys"))["keys"]
    assert listed[0]["expired"] is True


# --- throttling -------------------------------------------------------------------------------


def call_from(server, source_ip, method, path, body=None):
    """One request from another loopback address (Linux routes all of 127/8 to lo)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10,
                                      source_address=(source_ip, 0))
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": JSON} if data is not None else {}
        conn.request(method, API + path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_throttle_per_account(tsrv):
    c = Client(tsrv)
    c.register()
    bad = {"login": c.name, "password": "wrong password"}
    for _ in range(3):
        assert call_from(tsrv, "127.0.0.2", "POST", "/auth/login", bad)[0] == 401
    # the account is locked for everyone, with the right password, from elsewhere
    status, headers, body = call_from(tsrv, "127.0.0.3", "POST", "/auth/login",
                                      {"login": c.name, "password": c.password})
    assert status == 429 and body["code"] == "too_many_attempts", body
    assert 0 < int(headers["Retry-After"]) <= 60
    assert headers["Content-Type"].startswith(JSON)
    # ...also when named by its e-mail address? it has none; by name in another case, yes
    status, _, _ = call_from(tsrv, "127.0.0.3", "POST", "/auth/login",
                             {"login": c.name.upper(), "password": c.password})
    assert status == 429


def test_throttle_per_address(tsrv):
    c = Client(tsrv)
    c.register()
    for _ in range(3):  # three different unknown accounts, one address
        status, _, _ = call_from(tsrv, "127.0.0.4", "POST", "/auth/login",
                                 {"login": uname(), "password": "wrong password"})
        assert status == 401
    good = {"login": c.name, "password": c.password}
    status, headers, body = call_from(tsrv, "127.0.0.4", "POST", "/auth/login", good)
    assert status == 429 and "Retry-After" in headers, body
    # the account itself is not locked: another address gets in
    status, _, body = call_from(tsrv, "127.0.0.5", "POST", "/auth/login", good)
    assert status == 200, body


def test_throttle_success_clears_the_account(tsrv):
    c = Client(tsrv)
    c.register()
    bad = {"login": c.name, "password": "wrong password"}
    good = {"login": c.name, "password": c.password}
    for ip in ("127.0.0.6", "127.0.0.7"):
        assert call_from(tsrv, ip, "POST", "/auth/login", bad)[0] == 401
    assert call_from(tsrv, "127.0.0.8", "POST", "/auth/login", good)[0] == 200
    for ip in ("127.0.0.9", "127.0.0.10"):
        assert call_from(tsrv, ip, "POST", "/auth/login", bad)[0] == 401
    assert call_from(tsrv, "127.0.0.11", "POST", "/auth/login", good)[0] == 200


# --- e-mail: verification and reset -----------------------------------------------------------


def link_token(msg, page):
    text = msg.get_body(preferencelist=("plain",)).get_content()
    m = re.search(r"(http://[^\s/]+)/" + page + r"\?token=([A-Za-z0-9_-]{43})\b", text)
    assert m, text
    return m.group(1), m.group(2)


def test_verification_flow(vsrv, smtp):
    c = Client(vsrv)
    check_error(c.post("/auth/register", {"name": uname(), "password": "correct horse"}), 400,
                "invalid")  # an address is required here
    name = uname()
    addr = f"{name}@example.org"
    body = c.register(name=name, email=addr)
    assert body["verification_required"] is True
    assert body["user"]["verified"] is False

    rcpts, mail_from, msg = smtp.wait_for(addr)
    assert rcpts == [addr] and mail_from == "noreply@hearth.test"
    assert msg["To"] == addr and "Hearth" in msg["Subject"]
    assert msg.get_content_type() == "text/plain"
    base, token = link_token(msg, "verify")
    assert base == vsrv.url  # links are made from site.public_url

    r = c.post("/auth/login", {"login": name, "password": c.password})
    check_error(r, 403, "unverified")
    assert "Set-Cookie" not in r.headers
    time.sleep(0.3)
    assert len(smtp.for_rcpt(addr)) == 1  # no new link while the last is fresh

    check_error(c.post("/auth/verify", {"token": "A" * 43}), 400, "invalid_token")
    check_error(c.post("/auth/verify", {"token": "../etc"}), 400, "invalid_token")
    r = c.post("/auth/verify", {"token": token})
    assert r.status_code == 200, r.text
    assert check_json(r)["user"]["verified"] is True
    check_error(c.post("/auth/verify", {"token": token}), 400, "invalid_token")  # once only
    c.login()
    assert check_json(c.get("/me"))["user"]["email"] == addr


def token_row(server, token):
    """(created_at, expires_at) of an e-mailed token, found by its SHA-256 as stored."""
    db = sqlite3.connect(str(server.data_dir / "hearth.db"), timeout=10)
    try:
        return db.execute("SELECT created_at, expires_at FROM auth_tokens WHERE token_hash = ?",
                          (hashlib.sha256(token.encode()).hexdigest(),)).fetchone()
    finally:
        db.close()


def age_token(server, token, seconds):
    """Move a token's times back, as if it had been sent `seconds` ago."""
    db = sqlite3.connect(str(server.data_dir / "hearth.db"), timeout=10)
    try:
        n = db.execute("UPDATE auth_tokens SET created_at = created_at - ?, expires_at = expires_at - ?"
                       " WHERE token_hash = ?",
                       (seconds, seconds, hashlib.sha256(token.encode()).hexdigest())).rowcount
        db.commit()
    finally:
        db.close()
    assert n == 1


def test_expired_verification_link(vsrv, smtp):
    c = Client(vsrv)
    name = uname()
    addr = f"{name}@example.org"
    c.register(name=name, email=addr)
    msg = smtp.wait_for(addr)[2]
    _, token = link_token(msg, "verify")
    created, expires = token_row(vsrv, token)
    assert expires - created == 24 * 3600  # what the mail promises
    assert "24 hours" in msg.get_body(preferencelist=("plain",)).get_content()
    # A day and a second later the link is dead.
    age_token(vsrv, token, 24 * 3600 + 1)
    check_error(c.post("/auth/verify", {"token": token}), 400, "invalid_token")
    # Still unverified; logging in sends a fresh link (the last is old), and that one works.
    check_error(c.post("/auth/login", {"login": name, "password": c.password}), 403, "unverified")
    msg2 = smtp.wait_for(addr, count=2)[2]
    _, token2 = link_token(msg2, "verify")
    assert token2 != token
    check_error(c.post("/auth/verify", {"token": token}), 400, "invalid_token")
    r = c.post("/auth/verify", {"token": token2})
    assert r.status_code == 200 and check_json(r)["user"]["verified"] is True
    c.login()


def test_expired_reset_link(srv, smtp):
    name = uname()
    addr = f"{name}@example.org"
    c = Client(srv)
    c.register(name=name, email=addr)
    anon = Client(srv)
    assert anon.post("/auth/password-reset", {"email": addr}).status_code == 202
    msg = smtp.wait_for(addr)[2]
    _, token = link_token(msg, "reset")
    created, expires = token_row(srv, token)
    assert expires - created == 3600
    assert "one hour" in msg.get_body(preferencelist=("plain",)).get_content()
    age_token(srv, token, 3601)
    check_error(anon.post("/auth/password-reset/confirm", {"token": token, "password": "a new password"}),
                400, "invalid_token")
    c.login()  # the old password still works: nothing changed
    # A new link works; the expired one never does.
    assert anon.post("/auth/password-reset", {"email": addr}).status_code == 202
    _, token2 = link_token(smtp.wait_for(addr, count=2)[2], "reset")
    check_error(anon.post("/auth/password-reset/confirm", {"token": token, "password": "a new password"}),
                400, "invalid_token")
    r = anon.post("/auth/password-reset/confirm", {"token": token2, "password": "a new password"})
    assert r.status_code == 200, r.text
    c.login(password="a new password")


def cookie_attrs(set_cookie, name):
    """The attributes of the Set-Cookie for name, lower-cased: {"httponly", "secure", ...}."""
    for part in re.split(r",\s*(?=[A-Za-z_]+=)", set_cookie):
        if part.startswith(name + "="):
            return {a.strip().split("=")[0].lower() for a in part.split(";")[1:]}
    raise AssertionError(f"no {name} cookie in {set_cookie!r}")


def test_secure_cookies_when_public_url_is_https(start_server, srv):
    s = start_server({"HEARTH_SITE_PUBLIC_URL": "https://hearth.example",
                      "HEARTH_AUTH_LOGIN_ATTEMPTS": "1000"})
    name = uname()
    reg = requests.post(s.url + API + "/auth/register", json={"name": name, "password": "correct horse"},
                        timeout=20)
    assert reg.status_code == 201, reg.text
    r = requests.post(s.url + API + "/auth/login", json={"login": name, "password": "correct horse"},
                      timeout=20)
    assert r.status_code == 200, r.text
    attrs = cookie_attrs(r.headers["Set-Cookie"], "hearth_session")
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= attrs, attrs
    assert "samesite=lax" in r.headers["Set-Cookie"].lower()
    # A Secure cookie is not sent back over http by a browser (nor by requests): send it by hand.
    session = re.search(r"hearth_session=([^;]+)", r.headers["Set-Cookie"]).group(1)
    auth = {"Cookie": f"hearth_session={session}", "X-CSRF-Token": r.json()["csrf_token"]}
    # The watch token of a protected channel is Secure too.
    ch = requests.post(s.url + API + "/channels", json={"title": "Locked", "protected": True},
                       headers=auth, timeout=20)
    assert ch.status_code == 201, ch.text
    view = requests.get(s.url + API + f"/channels/{ch.json()['slug']}", headers=auth, timeout=20)
    assert view.status_code == 200
    assert "secure" in cookie_attrs(view.headers["Set-Cookie"], "hearth_access")
    # Logging out clears the cookie with the same attributes.
    out = requests.post(s.url + API + "/auth/logout", headers=auth, timeout=20)
    assert out.status_code == 200
    assert {"secure", "max-age"} <= cookie_attrs(out.headers["Set-Cookie"], "hearth_session")
    assert "max-age=0" in out.headers["Set-Cookie"].lower()
    # Over plain http (the other server), no Secure: the browser would drop the cookie.
    c = Client(srv)
    c.register()
    r = c.login()
    attrs = cookie_attrs(r.headers["Set-Cookie"], "hearth_session")
    assert "secure" not in attrs and "httponly" in attrs


def test_change_email_with_verification(vsrv, smtp):
    c = Client(vsrv)
    name = uname()
    c.register(name=name, email=f"{name}@example.org")
    _, token = link_token(smtp.wait_for(f"{name}@example.org")[2], "verify")
    assert c.post("/auth/verify", {"token": token}).status_code == 200
    c.login()
    new = f"{name}.new@example.org"
    r = c.req("PATCH", "/me", {"email": new, "current_password": c.password})
    body = check_json(r)
    assert r.status_code == 200 and body["email_pending"] == new
    assert body["user"]["email"] == f"{name}@example.org"  # not until confirmed
    _, token = link_token(smtp.wait_for(new)[2], "verify")
    assert c.post("/auth/verify", {"token": token}).status_code == 200
    assert check_json(c.get("/me"))["user"]["email"] == new


def test_password_reset_flow(srv, smtp):
    name = uname()
    addr = f"{name}@example.org"
    c = Client(srv)
    c.register(name=name, email=addr)
    c.login()
    before = len(smtp.messages)

    anon = Client(srv)
    r = anon.post("/auth/password-reset", {"email": f"nobody-{name}@example.org"})
    assert r.status_code == 202
    unknown_body = check_json(r)
    r = anon.post("/auth/password-reset", {"email": addr.upper()})
    assert r.status_code == 202
    assert check_json(r) == unknown_body  # the same answer whether or not it exists
    check_error(anon.post("/auth/password-reset", {"email": "nope"}), 400, "invalid")

    _, _, msg = smtp.wait_for(addr)
    _, token = link_token(msg, "reset")
    assert not [m for m in smtp.messages[before:] if f"nobody-{name}@example.org" in m[0]]

    check_error(anon.post("/auth/password-reset/confirm", {"token": token, "password": "short"}),
                400, "invalid")
    check_error(anon.post("/auth/password-reset/confirm",
                          {"token": "B" * 43, "password": "a new password"}), 400,
                "invalid_token")
    r = anon.post("/auth/password-reset/confirm", {"token": token, "password": "a new password"})
    assert r.status_code == 200, r.text
    check_error(anon.post("/auth/password-reset/confirm",
                          {"token": token, "password": "another one!"}), 400, "invalid_token")

    check_error(c.get("/me"), 401, "unauthenticated")  # every session ended
    check_error(anon.post("/auth/login", {"login": name, "password": c.password}), 401,
                "bad_credentials")
    c.login(password="a new password")


def test_mail_is_logged_without_smtp(start_server):
    s = start_server({"HEARTH_SITE_REQUIRE_VERIFICATION": "true"})
    c = Client(s)
    name = uname()
    c.register(name=name, email=f"{name}@example.org")
    lines = s.wait_for_log(r"smtp\.host is empty.*/verify\?token=")
    assert lines, s.log_tail()
    token = re.search(r"/verify\?token=([A-Za-z0-9_-]{43})", lines[0]).group(1)
    assert c.post("/auth/verify", {"token": token}).status_code == 200
    c.login()


def test_starttls_is_not_skipped(start_server, smtp):
    """smtp.tls = starttls against a server that offers no STARTTLS: nothing is sent."""
    s = start_server(smtp_env(smtp, HEARTH_SMTP_TLS="starttls",
                              HEARTH_SITE_REQUIRE_VERIFICATION="true"))
    c = Client(s)
    name = uname()
    c.register(name=name, email=f"{name}@example.org")
    assert s.wait_for_log(r"mail: could not send .*" + name), s.log_tail()
    assert not smtp.for_rcpt(f"{name}@example.org")


def test_bad_smtp_tls_stops_serve(start_server):
    s = start_server({"HEARTH_SMTP_TLS": "ssl"}, wait=False)
    assert s.wait_exit(15) == 1
    assert "smtp.tls" in s.log()


# --- /me ----------------------------------------------------------------------------------------


def test_patch_me(srv):
    c = new_user(srv, email=None)
    other_session = Client(srv)
    other_session.name, other_session.password = c.name, c.password
    other_session.login()

    new = f"{c.name}@example.net"
    check_error(c.req("PATCH", "/me", {"email": new}), 400, "invalid")  # no current password
    check_error(c.req("PATCH", "/me", {"email": new, "current_password": "wrong password"}), 403,
                "wrong_password")
    check_error(c.req("PATCH", "/me", {"current_password": c.password}), 400, "invalid")
    check_error(c.req("PATCH", "/me", {"name": "renamed", "current_password": c.password}), 400,
                "unknown_field")
    r = c.req("PATCH", "/me", {"email": new, "current_password": c.password})
    assert r.status_code == 200, r.text
    assert check_json(r)["user"]["email"] == new

    check_error(c.req("PATCH", "/me", {"password": "short", "current_password": c.password}),
                400, "invalid")
    r = c.req("PATCH", "/me", {"password": "brand new password", "current_password": c.password})
    assert r.status_code == 200, r.text
    assert check_json(c.get("/me"))["user"]["name"] == c.name  # this session goes on
    check_error(other_session.get("/me"), 401, "unauthenticated")  # the others end
    c.password = "brand new password"
    c2 = Client(srv)
    c2.name, c2.password = new, c.password
    c2.login()


def test_delete_account(srv, cli_env):
    c = new_user(srv)
    key = check_json(c.post("/me/api-keys", {"name": "k"}))["key"]
    # a channel, made with the CLI on the server's database
    out = cli_env("channel", "add", "--owner", c.name, "--title", "Doomed channel", "--json")
    assert out.returncode == 0, out.stderr

    check_error(c.req("DELETE", "/me", {"password": "wrong password"}), 403, "wrong_password")
    check_error(c.req("DELETE", "/me", {}), 400, "invalid")
    check_error(requests.delete(c.url("/me"), json={"password": c.password},
                                headers={"X-API-Key": key}, timeout=5), 403, "session_required")
    r = c.req("DELETE", "/me", {"password": c.password})
    assert r.status_code == 200, r.text
    assert "max-age=0" in r.headers["Set-Cookie"].lower()

    check_error(c.get("/me"), 401, "unauthenticated")
    check_error(requests.get(c.url("/me"), headers={"X-API-Key": key}, timeout=5), 401,
                "invalid_api_key")
    check_error(Client(srv).post("/auth/login", {"login": c.name, "password": c.password}), 401,
                "bad_credentials")
    db = sqlite3.connect(f"file:{srv.data_dir / 'hearth.db'}?mode=ro", uri=True)
    try:
        users = db.execute("SELECT count(*) FROM users WHERE name = ?", (c.name,)).fetchone()[0]
        channels = db.execute("SELECT count(*) FROM channels WHERE title = 'Doomed channel'"
                              ).fetchone()[0]
    finally:
        db.close()
    assert users == 0 and channels == 0


@pytest.fixture
def cli_env(srv):
    def run(*args):
        e = clean_env()
        e["HEARTH_STORAGE_DATA_DIR"] = str(srv.data_dir)
        return subprocess.run([hearth_path(), *args], env=e, capture_output=True, text=True,
                              timeout=30, cwd=str(srv.base))
    return run


# --- TOTP ---------------------------------------------------------------------------------------


def totp(secret_b32, t=None, digits=6, step=30):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if t is None else t) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 10**digits
    return f"{code:0{digits}d}"


def test_totp_helper_matches_rfc6238():
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, 59, digits=8) == "94287082"
    assert totp(secret, 1111111109, digits=8) == "07081804"
    assert totp(secret, 2000000000, digits=8) == "69279037"


def test_totp_enable_login_disable(srv):
    c = new_user(srv)
    r = c.post("/me/totp")
    assert r.status_code == 200, r.text
    t = check_json(r)
    secret = t["secret"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert t["uri"].startswith("otpauth://totp/") and f"secret={secret}" in t["uri"]
    assert f":{c.name}?" in t["uri"] and "issuer=Hearth" in t["uri"]
    assert check_json(c.get("/me"))["user"]["totp_enabled"] is False  # not before a code

    wrong = f"{(int(totp(secret)) + 500000) % 1000000:06d}"
    check_error(c.post("/me/totp/confirm", {"code": wrong}), 400, "bad_totp")
    now = time.time()
    r = c.post("/me/totp/confirm", {"code": totp(secret, now)})
    assert r.status_code == 200, r.text
    assert check_json(c.get("/me"))["user"]["totp_enabled"] is True
    check_error(c.post("/me/totp"), 409, "totp_enabled")

    anon = Client(srv)
    creds = {"login": c.name, "password": c.password}
    check_error(anon.post("/auth/login", creds), 401, "totp_required")
    check_error(anon.post("/auth/login", {**creds, "totp": wrong}), 401, "bad_totp")
    # the code that confirmed is spent: a code works once
    check_error(anon.post("/auth/login", {**creds, "totp": totp(secret, now)}), 401, "bad_totp")
    nxt = totp(secret, now + 30)  # one step ahead is within the window
    r = anon.post("/auth/login", {**creds, "totp": nxt})
    assert r.status_code == 200, r.text
    check_error(Client(srv).post("/auth/login", {**creds, "totp": nxt}), 401, "bad_totp")
    check_error(anon.post("/auth/login", {"login": c.name, "password": "wrong password",
                                          "totp": totp(secret, now + 60)}), 401,
                "bad_credentials")

    # turning it off takes the password (or a fresh code)
    check_error(c.req("DELETE", "/me/totp", {}), 400, "invalid")
    check_error(c.req("DELETE", "/me/totp", {"password": "wrong password"}), 403,
                "wrong_password")
    check_error(c.req("DELETE", "/me/totp", {"code": nxt}), 403, "bad_totp")
    r = c.req("DELETE", "/me/totp", {"password": c.password})
    assert r.status_code == 200, r.text
    assert check_json(c.get("/me"))["user"]["totp_enabled"] is False
    c3 = Client(srv)
    c3.name, c3.password = c.name, c.password
    c3.login()


# --- nothing comes back as HTML -----------------------------------------------------------------


XSS = "<img src=x onerror=alert(1)><script>alert(1)</script>"


def test_no_answer_is_html(srv):
    c = new_user(srv)
    anon = Client(srv)
    calls = [
        (anon, "POST", "/auth/register", {"name": XSS, "email": XSS, "password": XSS}),
        (anon, "POST", "/auth/register", {"name": uname(), "email": XSS + "@x.y",
                                          "password": "correct horse"}),
        (anon, "POST", "/auth/login", {"login": XSS, "password": XSS}),
        (anon, "POST", "/auth/login", {"login": XSS}),
        (anon, "POST", "/auth/verify", {"token": XSS}),
        (anon, "POST", "/auth/password-reset", {"email": XSS}),
        (anon, "POST", "/auth/password-reset/confirm", {"token": XSS, "password": XSS}),
        (anon, "GET", "/me", None),
        (anon, "POST", "/auth/logout", None),
        (c, "POST", "/me/api-keys", {"name": XSS}),
        (c, "POST", "/me/api-keys", {XSS: 1}),
        (c, "PATCH", "/me", {"email": XSS, "current_password": c.password}),
        (c, "POST", "/me/totp/confirm", {"code": XSS}),
        (c, "DELETE", "/me/api-keys/" + requests.utils.quote(XSS, safe=""), None),
        (c, "GET", "/me/api-keys", None),
        (c, "GET", "/me", None),
    ]
    for client, method, path, body in calls:
        r = client.req(method, path, body)
        data = check_json(r)  # application/json, nosniff, no-store
        assert r.status_code < 500, (method, path, r.status_code, data)
    # a raw body that is not JSON at all
    r = anon.s.post(anon.url("/auth/login"), data=XSS, timeout=5,
                    headers={"Content-Type": JSON})
    check_error(r, 400, "bad_json")
    # the key made with a hostile name comes back as a JSON string, never markup
    listed = check_json(c.get("/me/api-keys"))["keys"]
    assert any(k["name"] == XSS for k in listed)
