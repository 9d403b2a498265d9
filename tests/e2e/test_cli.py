"""
The command line: users, channels, stream keys, topics, the admin settings
kept in the database (checked, and taking effect on a running server),
migrations, exit codes.

Each test gets its own data_dir (the `cli` fixture sets
HEARTH_STORAGE_DATA_DIR) and runs in an empty working directory.
"""
import json
import re
import sqlite3
import subprocess

import pytest
import requests

from hearthtest import HOST, free_port

KEY_RX = re.compile(r"^[A-Za-z0-9_-]{43}$")
PASSWORD = "correct horse battery staple"
PUBLIC = "https://tv.example.org"


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


def fails(res, code=None):
    """A refused command: non-zero (or exactly `code`), with a message on stderr."""
    if code is None:
        assert res.returncode != 0, f"expected failure\nstdout: {res.stdout}"
    else:
        assert res.returncode == code, f"expected exit {code}, got {res.returncode}\nstderr: {res.stderr}"
    assert res.stderr.strip(), "no message on stderr"
    return res


def roles_of(user):
    r = user["roles"]
    if isinstance(r, str):
        r = [x for x in r.split(",") if x]
    return set(r)


def add_user(cli, name, *extra, password=PASSWORD, env=None):
    return cli("user", "add", name, *extra, "--password-stdin", input=password + "\n", env=env)


def users(cli, env=None):
    res = ok(cli("user", "list", "--json", env=env))
    doc = json.loads(res.stdout)
    assert isinstance(doc, dict) and isinstance(doc["users"], list)
    return doc["users"]


def channels(cli, env=None):
    res = ok(cli("channel", "list", "--json", env=env))
    doc = json.loads(res.stdout)
    assert isinstance(doc, dict) and isinstance(doc["channels"], list)
    return doc["channels"]


def add_channel(cli, owner, title, *extra, env=None):
    res = ok(cli("channel", "add", "--owner", owner, "--title", title, *extra, "--json", env=env))
    return json.loads(res.stdout)


def owner_name(ch):
    o = ch["owner"]
    return o["name"] if isinstance(o, dict) else o


# --- general ------------------------------------------------------------------------------


def test_version(cli):
    res = ok(cli("version"))
    assert re.search(r"\d+\.\d+\.\d+", res.stdout)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("user",),
        ("user", "frobnicate"),
        ("user", "add"),
        ("channel",),
        ("channel", "add", "--title", "no owner"),
        ("channel", "key-reset"),
        ("migrate",),
        ("migrate", "sideways"),
        ("serve", "--no-such-option"),
        ("user", "list", "--config"),
        ("topic",),
        ("topic", "frobnicate"),
        ("topic", "add"),
        ("topic", "remove"),
        ("topic", "list", "extra"),
        ("setting",),
        ("setting", "get"),
        ("setting", "set", "max_channels_per_user"),
        ("setting", "get", "no_such_setting"),
        ("setting", "set", "internal.access_token_secret", "x"),
    ],
)
def test_usage_errors_exit_2(cli, args):
    fails(cli(*args), code=2)


# --- users ------------------------------------------------------------------------------------


def test_user_add_and_list(cli):
    res = ok(add_user(cli, "alice", "--email", "alice@example.org", "--role", "streamer", "--json"))
    added = json.loads(res.stdout)
    if "user" in added:
        added = added["user"]
    assert added["name"] == "alice"

    (u,) = users(cli)
    assert u["name"] == "alice"
    assert u["email"] == "alice@example.org"
    assert "streamer" in roles_of(u)
    assert isinstance(u["id"], int)
    assert isinstance(u["created_at"], int) and u["created_at"] > 1_600_000_000
    assert u["disabled"] is False
    assert u["id"] == added["id"]


def test_user_default_role_and_no_email(cli):
    ok(add_user(cli, "bob"))
    (u,) = users(cli)
    assert roles_of(u) == {"user"}
    assert u["email"] in (None, "")


def test_user_several_roles(cli):
    ok(add_user(cli, "carol", "--role", "admin,streamer"))
    (u,) = users(cli)
    assert roles_of(u) == {"admin", "streamer"}


def test_user_list_text(cli):
    ok(add_user(cli, "alice"))
    ok(add_user(cli, "bob"))
    res = ok(cli("user", "list"))
    assert "alice" in res.stdout and "bob" in res.stdout


def test_user_add_without_password_stdin_is_usage_error(cli):
    fails(cli("user", "add", "alice", input=PASSWORD + "\n"), code=2)
    assert users(cli) == []


def test_user_duplicate_name_ignores_case(cli):
    ok(add_user(cli, "alice"))
    fails(add_user(cli, "ALICE"))
    fails(add_user(cli, "alice"))
    assert [u["name"] for u in users(cli)] == ["alice"]


def test_user_unknown_role_refused(cli):
    fails(add_user(cli, "alice", "--role", "wizard"))
    assert users(cli) == []


@pytest.mark.parametrize("name", ["al ice", "al@ice", "", "a/b"])
def test_user_bad_name_refused(cli, name):
    fails(add_user(cli, name))
    assert users(cli) == []


@pytest.mark.parametrize("password", ["", "short"])
def test_user_weak_password_refused(cli, password):
    fails(add_user(cli, "alice", password=password))
    assert users(cli) == []


def test_password_is_not_stored_in_clear(cli):
    secret = "Very-Unusual-Passphrase-4711"
    ok(add_user(cli, "alice", password=secret))
    found = []
    for f in cli.data_dir.rglob("*"):
        if f.is_file() and secret.encode() in f.read_bytes():
            found.append(str(f))
    assert not found, f"the password is in {found}"


# --- channels ------------------------------------------------------------------------------------


def test_channel_add_json(cli):
    env = {"HEARTH_SITE_PUBLIC_URL": PUBLIC}
    ok(add_user(cli, "alice", "--role", "streamer"))
    ch = add_channel(cli, "alice", "My stream", env=env)
    for field in ("id", "slug", "title", "owner", "stream_key", "rtmp_url", "hls_url", "watch_url"):
        assert field in ch, field
    assert ch["title"] == "My stream"
    assert owner_name(ch) == "alice"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", ch["slug"]), ch["slug"]
    assert KEY_RX.match(ch["stream_key"]), ch["stream_key"]
    assert ch["hls_url"] == f"{PUBLIC}/live/{ch['slug']}/master.m3u8"
    assert ch["rtmp_url"] == "rtmp://tv.example.org/live"
    assert ch["watch_url"].startswith(PUBLIC + "/")
    assert ch["slug"] in ch["watch_url"]


def test_channel_rtmp_url_carries_a_non_default_port(cli):
    env = {"HEARTH_SITE_PUBLIC_URL": PUBLIC, "HEARTH_RTMP_LISTEN": "0.0.0.0:1936"}
    ok(add_user(cli, "alice"))
    ch = add_channel(cli, "alice", "Port test", env=env)
    assert ch["rtmp_url"] == "rtmp://tv.example.org:1936/live"


def test_channel_explicit_slug(cli):
    ok(add_user(cli, "alice"))
    ch = add_channel(cli, "alice", "Anything", "--slug", "speedruns")
    assert ch["slug"] == "speedruns"


def test_channel_slug_taken(cli):
    ok(add_user(cli, "alice"))
    add_channel(cli, "alice", "First", "--slug", "mine")
    fails(cli("channel", "add", "--owner", "alice", "--title", "Second", "--slug", "mine", "--json"))
    assert [c["title"] for c in channels(cli)] == ["First"]


def test_channel_same_title_gets_distinct_slugs(cli):
    ok(add_user(cli, "alice"))
    a = add_channel(cli, "alice", "My stream")
    b = add_channel(cli, "alice", "My stream")
    assert a["slug"] != b["slug"]
    assert a["stream_key"] != b["stream_key"]


def test_channel_unknown_owner(cli):
    fails(cli("channel", "add", "--owner", "nobody", "--title", "Ghost", "--json"))
    assert channels(cli) == []


def test_channel_owner_is_case_insensitive(cli):
    ok(add_user(cli, "alice"))
    ch = add_channel(cli, "alice", "Case", "--slug", "case")
    ch2 = add_channel(cli, "ALICE", "Case 2", "--slug", "case-2")
    assert owner_name(ch).lower() == owner_name(ch2).lower() == "alice"


def test_channel_list_json(cli):
    env = {"HEARTH_SITE_PUBLIC_URL": PUBLIC}
    ok(add_user(cli, "alice"))
    ok(add_user(cli, "bob"))
    made = [
        add_channel(cli, "alice", "Cooking", "--slug", "cooking", env=env),
        add_channel(cli, "bob", "Chess", "--slug", "chess", env=env),
    ]
    listed = {c["slug"]: c for c in channels(cli, env=env)}
    assert set(listed) == {"cooking", "chess"}
    for m in made:
        c = listed[m["slug"]]
        for field in ("id", "slug", "title", "owner", "stream_key", "rtmp_url", "hls_url", "watch_url"):
            assert c[field] == m[field], field
    assert listed["cooking"]["stream_key"] != listed["chess"]["stream_key"]


def test_channel_key_reset(cli):
    ok(add_user(cli, "alice"))
    ch = add_channel(cli, "alice", "Keys", "--slug", "keys")
    res = ok(cli("channel", "key-reset", "keys", "--json"))
    out = json.loads(res.stdout)
    new_key = out["stream_key"]
    assert KEY_RX.match(new_key)
    assert new_key != ch["stream_key"]
    (listed,) = channels(cli)
    assert listed["stream_key"] == new_key


def test_channel_key_reset_unknown_slug(cli):
    fails(cli("channel", "key-reset", "no-such-channel", "--json"))


# --- --config, HEARTH_CONFIG, DB_URL ------------------------------------------------------------------


@pytest.mark.parametrize(
    "place",
    ["before", "after_command", "at_end"],
)
def test_config_option_anywhere(cli, tmp_path, place):
    data = tmp_path / "from-config"
    conf = tmp_path / "hearth.conf"
    conf.write_text(f"[storage]\ndata_dir = {data}\n")
    env = {"HEARTH_STORAGE_DATA_DIR": None}
    ok(cli("user", "add", "dora", "--password-stdin", "--config", str(conf), input=PASSWORD + "\n", env=env))
    assert (data / "hearth.db").is_file()
    args = {
        "before": ("--config", str(conf), "user", "list", "--json"),
        "after_command": ("user", "--config", str(conf), "list", "--json"),
        "at_end": ("user", "list", "--json", "--config", str(conf)),
    }[place]
    res = ok(cli(*args, env=env))
    assert [u["name"] for u in json.loads(res.stdout)["users"]] == ["dora"]


def test_hearth_config_env(cli, tmp_path):
    data = tmp_path / "via-env-config"
    conf = tmp_path / "other.conf"
    conf.write_text(f"[storage]\ndata_dir = {data}\n")
    env = {"HEARTH_STORAGE_DATA_DIR": None, "HEARTH_CONFIG": str(conf)}
    ok(add_user(cli, "erin", env=env))
    assert (data / "hearth.db").is_file()
    assert [u["name"] for u in users(cli, env=env)] == ["erin"]


def test_db_url_env(cli, tmp_path):
    other = tmp_path / "elsewhere" / "x.db"
    env = {"DB_URL": f"sqlite:{other}"}
    ok(add_user(cli, "frank", env=env))
    assert other.is_file()
    assert not (cli.data_dir / "hearth.db").exists()
    assert [u["name"] for u in users(cli, env=env)] == ["frank"]
    assert users(cli) == []


def test_missing_config_file_is_exit_2(cli, tmp_path):
    fails(cli("--config", str(tmp_path / "absent.conf"), "user", "list"), code=2)


# --- migrations ---------------------------------------------------------------------------------------


def schema_rows(path):
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    finally:
        db.close()


def test_migrate_up_and_status(cli):
    ok(cli("migrate", "up"))
    db = cli.data_dir / "hearth.db"
    assert db.is_file()
    rows = schema_rows(db)
    assert rows and rows[0][0] == 1
    res = ok(cli("migrate", "status"))
    assert "up to date" in res.stdout
    # Nothing pending: running it again changes nothing.
    ok(cli("migrate", "up"))
    assert schema_rows(db) == rows


def test_fresh_database_is_not_backed_up(cli):
    ok(cli("migrate", "up"))
    backups = cli.data_dir / "backups"
    assert not backups.exists() or not any(backups.iterdir())


def test_existing_database_is_backed_up_before_migrating(cli):
    # A database that holds tables but no migrations yet: it has a schema,
    # so it is copied before the first migration touches it.
    cli.data_dir.mkdir(parents=True)
    db = sqlite3.connect(str(cli.data_dir / "hearth.db"))
    db.execute("CREATE TABLE legacy (x TEXT)")
    db.execute("INSERT INTO legacy VALUES ('kept')")
    db.commit()
    db.close()

    ok(cli("migrate", "up"))
    copies = sorted((cli.data_dir / "backups").glob("*.db"))
    assert len(copies) == 1, list((cli.data_dir / "backups").iterdir())
    b = sqlite3.connect(str(copies[0]))
    try:
        assert b.execute("SELECT x FROM legacy").fetchall() == [("kept",)]
        names = {r[0] for r in b.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "schema_migrations" not in names, "the backup was taken after migrating"
    finally:
        b.close()
    assert schema_rows(cli.data_dir / "hearth.db")


def tamper(path, sql):
    db = sqlite3.connect(str(path))
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()


def refused(res):
    fails(res)
    assert "refus" in res.stderr.lower(), res.stderr


def serve_refuses(cli, static_dir):
    """`hearth serve` on this data_dir must exit non-zero instead of serving."""
    env = {
        "HEARTH_HTTP_LISTEN": f"{HOST}:{free_port()}",
        "HEARTH_RTMP_LISTEN": f"{HOST}:{free_port()}",
        "HEARTH_HTTP_STATIC_DIR": str(static_dir),
    }
    try:
        res = cli("serve", env=env, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("hearth serve started on a database it should have refused")
    refused(res)


def test_newer_database_is_refused_and_left_alone(cli, workdir):
    ok(cli("migrate", "up"))
    db = cli.data_dir / "hearth.db"
    tamper(db, "INSERT INTO schema_migrations VALUES (9999, '9999_future', 'x', 0)")
    before = schema_rows(db)
    refused(cli("migrate", "up"))
    res = cli("migrate", "status")
    assert res.returncode != 0
    serve_refuses(cli, workdir)
    assert schema_rows(db) == before
    backups = cli.data_dir / "backups"
    assert not backups.exists() or not any(backups.iterdir())


def test_changed_migration_is_refused(cli, workdir):
    ok(cli("migrate", "up"))
    db = cli.data_dir / "hearth.db"
    tamper(db, "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = 1")
    refused(cli("migrate", "up"))
    serve_refuses(cli, workdir)


# --- the CLI and the server on one database ---------------------------------------------------------


# --- topics -------------------------------------------------------------------------------------


DEFAULT_TOPICS = ["art", "education", "entertainment", "gaming", "music", "other",
                  "science-technology", "software-development", "sports", "talk-shows"]


def topics(cli):
    doc = json.loads(ok(cli("topic", "list", "--json")).stdout)
    return {t["slug"]: t["name"] for t in doc["topics"]}


def test_topic_add_list_remove(cli):
    # A fresh database comes with the default topics.
    assert sorted(topics(cli)) == DEFAULT_TOPICS
    assert topics(cli)["science-technology"] == "Science & Technology"
    res = ok(cli("topic", "list"))
    assert res.stdout.splitlines()[0].split() == ["SLUG", "NAME"]
    assert any(l.split()[0] == "talk-shows" for l in res.stdout.splitlines()[1:])

    t = json.loads(ok(cli("topic", "add", "Speed Runs", "--json")).stdout)
    assert t["name"] == "Speed Runs" and t["slug"] == "speed-runs" and t["id"] > 0
    assert "speed-runs" in topics(cli)
    assert "added" in ok(cli("topic", "add", "Retro")).stdout
    res = fails(cli("topic", "add", "speed runs"), code=1)
    assert "already exists" in res.stderr
    fails(cli("topic", "add", ""), code=1)

    # Removing a topic leaves its channels without one.
    ok(add_user(cli, "alice", "--role", "streamer"))
    ch = add_channel(cli, "alice", "Runs", "--topic", "speed-runs")
    assert ch["topic"] == "Speed Runs"
    res = ok(cli("topic", "remove", "speed-runs"))
    assert "removed" in res.stdout
    assert "speed-runs" not in topics(cli)
    assert [c["topic"] for c in channels(cli) if c["slug"] == ch["slug"]] == [None]
    res = fails(cli("topic", "remove", "speed-runs"), code=1)
    assert "no topic 'speed-runs'" in res.stderr
    # Admins may remove the defaults too, and nothing brings them back.
    for slug in DEFAULT_TOPICS:
        ok(cli("topic", "remove", slug))
    ok(cli("migrate", "up"))
    assert topics(cli) == {"retro": "Retro"}


# --- settings -----------------------------------------------------------------------------------


def test_setting_list_get_set(cli):
    doc = json.loads(ok(cli("setting", "list", "--json")).stdout)
    got = {x["key"]: x for x in doc["settings"]}
    assert set(got) == {"registration_roles", "max_channels_per_user"}  # never the secrets
    assert got["registration_roles"]["value"] == "streamer,user"
    assert got["max_channels_per_user"]["value"] == "5" and got["max_channels_per_user"]["default"] == "5"
    assert all(x["about"] for x in doc["settings"])
    text = ok(cli("setting", "list")).stdout
    assert "registration_roles" in text and "max_channels_per_user" in text
    assert "internal." not in text

    res = ok(cli("setting", "set", "registration_roles", "User, uploader"))
    assert res.stdout.strip() == "registration_roles = uploader,user"  # normalised
    assert ok(cli("setting", "get", "registration_roles")).stdout == "uploader,user\n"
    assert ok(cli("setting", "set", "max_channels_per_user", "3")).stdout.strip() == "max_channels_per_user = 3"
    assert ok(cli("setting", "get", "max_channels_per_user")).stdout.strip() == "3"
    for key, bad, why in [("registration_roles", "wizard", "unknown role 'wizard'"),
                          ("registration_roles", "admin,user", "may not be admins"),
                          ("registration_roles", ",", "at least one role"),
                          ("max_channels_per_user", "0", "whole number"),
                          ("max_channels_per_user", "-2", "whole number"),
                          ("max_channels_per_user", "five", "whole number"),
                          ("max_channels_per_user", "100001", "whole number")]:
        res = fails(cli("setting", "set", key, bad), code=1)
        assert why in res.stderr, (key, bad, res.stderr)
    # Refused values changed nothing.
    assert ok(cli("setting", "get", "registration_roles")).stdout.strip() == "uploader,user"
    assert ok(cli("setting", "get", "max_channels_per_user")).stdout.strip() == "3"
    # The table itself holds the normal form.
    db = sqlite3.connect(str(cli.data_dir / "hearth.db"))
    try:
        assert db.execute("SELECT value FROM settings WHERE key = 'registration_roles'").fetchone() == ("uploader,user",)
    finally:
        db.close()


def test_settings_take_effect_on_a_running_server(cli, start_server):
    srv = start_server(env={"HEARTH_STORAGE_DATA_DIR": str(cli.data_dir)})
    api = srv.url + "/api/v1"

    def register(name):
        r = requests.post(api + "/auth/register", json={"name": name, "password": PASSWORD}, timeout=20)
        assert r.status_code == 201, r.text
        return r.json()["user"]

    assert set(register("first")["roles"]) == {"streamer", "user"}
    ok(cli("setting", "set", "registration_roles", "user"))
    assert register("second")["roles"] == ["user"]  # no restart needed

    ok(cli("setting", "set", "max_channels_per_user", "1"))
    s = requests.Session()
    r = s.post(api + "/auth/login", json={"login": "first", "password": PASSWORD}, timeout=20)
    assert r.status_code == 200, r.text
    h = {"X-CSRF-Token": r.json()["csrf_token"]}
    assert s.post(api + "/channels", json={"title": "One"}, headers=h, timeout=20).status_code == 201
    r = s.post(api + "/channels", json={"title": "Two"}, headers=h, timeout=20)
    assert r.status_code == 403 and r.json()["code"] == "channel_limit"
    assert "at most 1 channel" in r.json()["error"]
    ok(cli("setting", "set", "max_channels_per_user", "2"))
    assert s.post(api + "/channels", json={"title": "Two"}, headers=h, timeout=20).status_code == 201


def test_server_starts_on_a_database_the_cli_made(cli, start_server):
    ok(add_user(cli, "alice"))
    add_channel(cli, "alice", "Before", "--slug", "before")
    srv = start_server(env={"HEARTH_STORAGE_DATA_DIR": str(cli.data_dir)})
    h = requests.get(srv.url + "/healthz", timeout=5).json()
    assert h["db"] == "ok"
    assert h["schema_version"] == schema_rows(cli.data_dir / "hearth.db")[-1][0]


def test_cli_works_while_the_server_runs(cli, start_server):
    srv = start_server(env={"HEARTH_STORAGE_DATA_DIR": str(cli.data_dir)})
    ok(add_user(cli, "alice"))
    add_channel(cli, "alice", "During", "--slug", "during")
    assert [c["slug"] for c in channels(cli)] == ["during"]
    r = requests.get(srv.url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["db"] == "ok"
