"""
A permission matrix for the account routes, as test_channels_api.py has for
the channel routes: /auth/*, GET/PATCH/DELETE /me, /me/totp (three routes),
/me/api-keys (three) and GET /users/:name, each called by

    owner   "self", with their own session (the account the cell is about)
    other   another user, with their session
    guest   no credential
    admin   an admin, with their session
    apikey  self's own API key

and every cell asserted twice: the status (and error code), and what the
call did or did not do to whose account. /me always means the caller, so a
cell of "other" or "admin" on a /me route must change the caller's account
and never self's; an API key must not reach what needs a session (password,
e-mail, TOTP, new keys, deleting the account).

Cells that change an account for good (logging out, deleting it, turning
TOTP on and off) get fresh accounts of their own; the others share a few.
"""
import base64
import glob
import hashlib
import hmac
import sqlite3
import struct
import time
import uuid

import pytest
import requests

from hearthtest import Server, make_static_tree

API = "/api/v1"
JSON = "application/json"
PASSWORD = "correct horse battery staple"
ROLES = ("owner", "other", "guest", "admin", "apikey")


def totp(secret_b32, t=None, step=30):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if t is None else t) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[off:off + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


class Client:
    """A session (cookie + CSRF token), an API key, or a guest; with the account behind it."""

    def __init__(self, srv, name=None, password=PASSWORD, email=None, api_key=None):
        self.srv = srv
        self.s = requests.Session()
        self.name, self.password, self.email = name, password, email
        self.api_key = api_key
        self.csrf = None

    def req(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.api_key:
            h["X-API-Key"] = self.api_key
        if self.csrf and method not in ("GET", "HEAD"):
            h["X-CSRF-Token"] = self.csrf
        return self.s.request(method, self.srv.url + API + path, headers=h, json=body, timeout=20)

    def login(self):
        r = self.req("POST", "/auth/login", {"login": self.name, "password": self.password})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        return self


def check_json(r):
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == JSON, (r.status_code, ctype, r.text[:200])
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    return r.json()


def sql(srv, query, *args):
    con = sqlite3.connect(glob.glob(str(srv.data_dir / "*.db"))[0], timeout=10)
    try:
        rows = con.execute(query, args).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


class World:
    def __init__(self, srv):
        self.srv = srv
        self.self_ = self.account("self")
        self.other = self.account("other")
        self.admin = self.account("admin", admin=True)
        self.key = self.key_of(self.self_)
        self.guest = Client(srv)

    def account(self, prefix, admin=False):
        """A new account by registration (the instance's default roles), signed in."""
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        email = f"{name}@example.org"
        r = requests.post(self.srv.url + API + "/auth/register",
                          json={"name": name, "email": email, "password": PASSWORD}, timeout=20)
        assert r.status_code == 201, r.text
        if admin:
            sql(self.srv, "UPDATE users SET roles = 'admin' WHERE name = ?", name)
        return Client(self.srv, name, email=email).login()

    def key_of(self, c):
        r = c.req("POST", "/me/api-keys", {"name": "matrix"})
        assert r.status_code == 201, r.text
        k = Client(self.srv, c.name, email=c.email, api_key=r.json()["key"])
        k.key_id = r.json()["id"]
        return k

    def cast(self, fresh):
        """Who plays each role in a cell: fresh accounts, or the shared ones."""
        if not fresh:
            return {"owner": self.self_, "other": self.other, "guest": self.guest,
                    "admin": self.admin, "apikey": self.key, "self": self.self_}
        me = self.account("self")
        return {"owner": me, "other": self.account("other"), "guest": Client(self.srv),
                "admin": self.account("admin", admin=True), "apikey": self.key_of(me), "self": me}

    def exists(self, name):
        return bool(sql(self.srv, "SELECT 1 FROM users WHERE name = ?", name))

    def row(self, name, column):
        return sql(self.srv, f"SELECT {column} FROM users WHERE name = ?", name)[0][0]


@pytest.fixture(scope="module")
def world(bin_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("accountmatrix")
    tree = make_static_tree(base)
    srv = Server(bin_path, base / "srv", static_dir=tree.static_dir,
                 env={"HEARTH_AUTH_LOGIN_ATTEMPTS": "1000", "HEARTH_SERVER_WORKERS": "4"})
    srv.start()
    try:
        yield World(srv)
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def alive(world):
    yield
    assert world.srv.alive(), "server died:\n" + world.srv.log_tail()


# --- the cells: what to send, and what must have happened ---------------------------------------
#
# Each row: (name, method, path, body(cast, actor), expected statuses, fresh accounts?,
#            setup(world, cast, actor) -> extra path fields, check(world, cast, actor, role, response)).

SESSION_ONLY = dict(owner=200, other=200, guest=401, admin=200, apikey=403)
USERS = dict(owner=200, other=200, guest=401, admin=200, apikey=200)
ANYONE = dict(owner=200, other=200, guest=200, admin=200, apikey=200)


def acts_as(cast, role):
    """The account a role's call acts on (/me is the caller): None for a guest."""
    return None if role == "guest" else cast[role]


def chk_register(w, cast, actor, role, r, extra):
    # Anyone may open an account here (registration is open); what comes back is the new one.
    made = extra["made"]
    assert r.json()["user"]["name"] == made
    assert w.guest.req("GET", f"/users/{made}").status_code == 200
    if role != "guest":
        assert w.guest.req("GET", f"/users/{made}").json()["name"] != actor.name


def chk_login(w, cast, actor, role, r, _):
    # The credentials decide, not who asks: the answer is self's session.
    assert r.json()["user"]["name"] == cast["self"].name
    assert "hearth_session=" in r.headers.get("Set-Cookie", "")


def chk_logout(w, cast, actor, role, r, _):
    me = cast["self"]
    if role in ("owner", "other", "admin"):
        assert actor.req("GET", "/me").status_code == 401  # that session is over
    if role != "owner":
        assert me.req("GET", "/me").status_code == 200  # self's is not
    if role == "apikey":
        assert r.json()["code"] == "not_a_session"
        assert actor.req("GET", "/me").status_code == 200  # the key still works


def chk_reset(w, cast, actor, role, r, before):
    # A link for self goes out whoever asks (a person who lost the password has nothing else).
    now = sql(w.srv, "SELECT count(*) FROM auth_tokens t JOIN users u ON u.id = t.user_id"
                     " WHERE u.name = ? AND t.purpose = 'reset'", cast["self"].name)[0][0]
    assert now == before + 1


def w_email(c):
    """self's address as the database has it now (an "edit me" cell may have changed it)."""
    return sql(c.srv, "SELECT email FROM users WHERE name = ?", c.name)[0][0]


def count_resets(w, cast):
    return sql(w.srv, "SELECT count(*) FROM auth_tokens t JOIN users u ON u.id = t.user_id"
                      " WHERE u.name = ? AND t.purpose = 'reset'", cast["self"].name)[0][0]


def chk_unchanged_password(w, cast, actor, role, r, before):
    assert r.json()["code"] == "invalid_token"
    assert w.row(cast["self"].name, "password_hash") == before


def chk_verify(w, cast, actor, role, r, _):
    assert r.json()["code"] == "invalid_token"


def chk_me(w, cast, actor, role, r, _):
    if role == "guest":
        return
    doc = r.json()
    assert doc["user"]["name"] == actor.name  # the caller, never anyone else
    assert doc["user"]["email"] == w.row(actor.name, "email")
    assert doc["via"] == ("api_key" if role == "apikey" else "session")
    assert ("csrf_token" in doc) == (role != "apikey")


def chk_patch_me(w, cast, actor, role, r, new_email):
    me = cast["self"]
    assert (w.row(me.name, "email") == new_email) == (role == "owner")
    if role in ("other", "admin"):
        assert w.row(actor.name, "email") == new_email  # their own address changed


def chk_delete_me(w, cast, actor, role, r, _):
    me = cast["self"]
    assert w.exists(me.name) == (role != "owner")
    if role in ("other", "admin"):
        assert not w.exists(actor.name)  # they deleted themselves
    if role == "apikey":
        assert r.json()["code"] == "session_required"


def pending(w, name):
    return w.row(name, "COALESCE(totp_pending, '')")


def enabled(w, name):
    return w.row(name, "COALESCE(totp_secret, '')") != ""


def chk_totp_begin(w, cast, actor, role, r, _):
    me = cast["self"]
    assert (pending(w, me.name) != "") == (role == "owner")
    if role in ("other", "admin"):
        assert pending(w, actor.name) == r.json()["secret"]
        assert r.json()["uri"].startswith("otpauth://totp/")


def begin_totp(c):
    r = c.req("POST", "/me/totp")
    assert r.status_code == 200, r.text
    return r.json()["secret"]


def setup_totp_confirm(w, cast, actor, role):
    # Everyone who has a session starts setup; the call confirms with a right code.
    secrets = {}
    for who in ("self", "other", "admin"):
        secrets[cast[who].name] = begin_totp(cast[who])
    return {"secrets": secrets}


def body_totp_confirm(cast, actor, extra):
    name = actor.name if actor.name else cast["self"].name
    return {"code": totp(extra["secrets"][name])}


def chk_totp_confirm(w, cast, actor, role, r, _):
    me = cast["self"]
    assert enabled(w, me.name) == (role == "owner")
    if role in ("other", "admin"):
        assert enabled(w, actor.name) and r.json() == {"totp_enabled": True}


def setup_totp_on(w, cast, actor, role):
    for who in ("self", "other", "admin"):
        c = cast[who]
        r = c.req("POST", "/me/totp/confirm", {"code": totp(begin_totp(c))})
        assert r.status_code == 200, r.text
    return {}


def chk_totp_off(w, cast, actor, role, r, _):
    me = cast["self"]
    assert enabled(w, me.name) == (role != "owner")
    if role in ("other", "admin"):
        assert not enabled(w, actor.name) and r.json() == {"totp_enabled": False}


def chk_keys_list(w, cast, actor, role, r, _):
    if role == "guest":
        return
    ids = {k["id"] for k in r.json()["keys"]}
    assert (w.key.key_id in ids) == (role in ("owner", "apikey"))  # only one's own keys
    assert all("key" not in k for k in r.json()["keys"])  # never the secret itself


def chk_keys_create(w, cast, actor, role, r, _):
    if r.status_code != 201:
        if role == "apikey":
            assert r.json()["code"] == "session_required"
        return
    new = Client(w.srv, api_key=r.json()["key"])
    assert new.req("GET", "/me").json()["user"]["name"] == actor.name  # the caller's key
    new.req("DELETE", f"/me/api-keys/{r.json()['id']}")  # stay under the per-user cap


def setup_spare_key(w, cast, actor, role):
    k = w.key_of(cast["self"])
    return {"key_id": k.key_id, "spare": k}


def chk_keys_delete(w, cast, actor, role, r, extra):
    works = extra["spare"].req("GET", "/me").status_code == 200
    assert works == (role not in ("owner", "apikey"))  # only self (session or key) revokes it
    if not works:
        return
    extra["spare"].req("DELETE", f"/me/api-keys/{extra['key_id']}")  # tidy up


def chk_profile(w, cast, actor, role, r, _):
    doc = r.json()
    assert doc["name"] == cast["self"].name
    assert "email" not in doc and "roles" not in doc  # a profile, not the account


MATRIX = [
    ("register", "POST", "/auth/register",
     lambda cast, actor, x: {"name": x["made"], "email": f"{x['made']}@example.org", "password": PASSWORD},
     dict(owner=201, other=201, guest=201, admin=201, apikey=201), False,
     lambda w, cast, actor, role: {"made": f"new{uuid.uuid4().hex[:8]}"}, chk_register),
    ("verify", "POST", "/auth/verify", lambda cast, actor, x: {"token": "A" * 43},
     {k: 400 for k in ROLES}, False, None, chk_verify),
    ("login", "POST", "/auth/login",
     lambda cast, actor, x: {"login": cast["self"].name, "password": PASSWORD}, ANYONE, True, None, chk_login),
    ("logout", "POST", "/auth/logout", None, dict(ANYONE, apikey=400), True, None, chk_logout),
    ("password reset", "POST", "/auth/password-reset",
     lambda cast, actor, x: {"email": w_email(cast["self"])},
     {k: 202 for k in ROLES}, False, lambda w, cast, actor, role: {"before": count_resets(w, cast)},
     lambda w, cast, actor, role, r, x: chk_reset(w, cast, actor, role, r, x["before"])),
    ("password reset confirm", "POST", "/auth/password-reset/confirm",
     lambda cast, actor, x: {"token": "B" * 43, "password": "a brand new password"},
     {k: 400 for k in ROLES}, False,
     lambda w, cast, actor, role: {"hash": w.row(cast["self"].name, "password_hash")},
     lambda w, cast, actor, role, r, x: chk_unchanged_password(w, cast, actor, role, r, x["hash"])),
    ("me", "GET", "/me", None, dict(USERS), False, None, chk_me),
    ("edit me", "PATCH", "/me",
     lambda cast, actor, x: {"email": x["email"], "current_password": PASSWORD}, SESSION_ONLY, False,
     lambda w, cast, actor, role: {"email": f"m{uuid.uuid4().hex[:10]}@example.net"},
     lambda w, cast, actor, role, r, x: chk_patch_me(w, cast, actor, role, r, x["email"])),
    ("delete me", "DELETE", "/me", lambda cast, actor, x: {"password": PASSWORD}, SESSION_ONLY, True,
     None, chk_delete_me),
    ("begin totp", "POST", "/me/totp", None, SESSION_ONLY, True, None, chk_totp_begin),
    ("confirm totp", "POST", "/me/totp/confirm", body_totp_confirm, SESSION_ONLY, True,
     setup_totp_confirm, chk_totp_confirm),
    ("turn totp off", "DELETE", "/me/totp", lambda cast, actor, x: {"password": PASSWORD}, SESSION_ONLY,
     True, setup_totp_on, chk_totp_off),
    ("list api keys", "GET", "/me/api-keys", None, USERS, False, None, chk_keys_list),
    ("create api key", "POST", "/me/api-keys", lambda cast, actor, x: {"name": "cell"},
     dict(SESSION_ONLY, owner=201, other=201, admin=201), False, None, chk_keys_create),
    ("revoke api key", "DELETE", "/me/api-keys/{key_id}", None,
     dict(owner=200, other=404, guest=401, admin=404, apikey=200), False, setup_spare_key, chk_keys_delete),
    ("profile", "GET", "/users/{self}", None, ANYONE, False, None, chk_profile),
]


@pytest.mark.parametrize("name,method,path,body,expect,fresh,setup,check", MATRIX,
                         ids=[m[0] for m in MATRIX])
@pytest.mark.parametrize("role", ROLES)
def test_account_matrix(world, role, name, method, path, body, expect, fresh, setup, check):
    w = world
    cast = w.cast(fresh)
    actor = cast[role]
    extra = (setup(w, cast, actor, role) if setup else None) or {}
    fields = {"self": cast["self"].name, **{k: v for k, v in extra.items() if isinstance(v, (str, int))}}
    r = actor.req(method, path.format(**fields), body(cast, actor, extra) if body else None)
    want = expect[role]
    assert r.status_code == want, f"{name} as {role}: {r.status_code} {r.text[:300]}"
    doc = check_json(r)
    if want >= 400:
        assert isinstance(doc.get("error"), str) and doc["error"] and isinstance(doc.get("code"), str)
        if want == 401:
            assert doc["code"] == "unauthenticated"
        if want == 403 and role == "apikey":
            assert doc["code"] == "session_required"
        if want == 404:
            assert doc["code"] == "not_found"
    if path.startswith(("/me", "/auth")):
        assert "no-store" in r.headers.get("Cache-Control", ""), (name, role)
    check(w, cast, actor, role, r, extra)
