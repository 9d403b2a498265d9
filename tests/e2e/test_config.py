"""
Configuration: `hearth config`, the file, the environment, DB_URL, errors
that name the key (exit 2), and docs/configuration.md agreeing with the
binary about which keys exist and what their defaults are.
"""
import pathlib
import re
import socket
import subprocess

import pytest

from hearthtest import HOST, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "configuration.md"

SPEC_KEYS = {
    "server.workers",
    "http.listen",
    "http.max_header_bytes",
    "http.max_body_bytes",
    "http.header_timeout",
    "http.idle_timeout",
    "http.shutdown_timeout",
    "http.max_connections",
    "http.static_dir",
    "http.cors_origin",
    "http.access_log",
    "rtmp.listen",
    "storage.data_dir",
    "db.url",
    "site.name",
    "site.public_url",
    "site.allow_registration",
    "site.require_verification",
    "xmpp.domain",
    "log.level",
    "debug.echo",
}

# No HEARTH_* at all: the defaults.
DEFAULTS_ENV = {"HEARTH_STORAGE_DATA_DIR": None}


def parse_ini(text):
    """
    [(section, key, value, comment)] in order, where comment is the '; ...'
    line just above the key (None when there is none).
    """
    out = []
    section = None
    prev = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
            prev = None
            continue
        m = re.match(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$", s)
        if m:
            assert section, f"key outside a section: {line!r}"
            comment = prev[1:].strip() if prev and prev.startswith(";") else None
            out.append((section, m.group(1), m.group(2).strip(), comment))
        prev = s
    return out


def config_values(cli, env=None, args=()):
    res = cli("config", *args, env=env)
    assert res.returncode == 0, res.stderr
    return {f"{s}.{k}": v for s, k, v, _ in parse_ini(res.stdout)}


def env_name(dotted):
    section, key = dotted.split(".", 1)
    return f"HEARTH_{section.upper()}_{key.upper()}"


# --- hearth config ---------------------------------------------------------------------------


def test_config_prints_every_key_with_help(cli):
    res = cli("config", env=DEFAULTS_ENV)
    assert res.returncode == 0, res.stderr
    entries = parse_ini(res.stdout)
    keys = [f"{s}.{k}" for s, k, _, _ in entries]
    assert len(keys) == len(set(keys)), "a key is printed twice"
    missing = SPEC_KEYS - set(keys)
    assert not missing, f"keys not printed: {sorted(missing)}"
    for s, k, _, comment in entries:
        assert comment, f"{s}.{k} has no '; help' line above it"


def test_config_defaults(cli):
    v = config_values(cli, env=DEFAULTS_ENV)
    # What README's quick start promises.
    assert v["http.listen"] == "0.0.0.0:8080"
    assert v["rtmp.listen"] == "0.0.0.0:1935"
    assert v["storage.data_dir"] == "./data"
    assert v["db.url"] == "sqlite:./data/hearth.db"
    assert v["site.public_url"] == "http://localhost:8080"
    assert v["http.cors_origin"] == "*"
    assert v["debug.echo"] == "false"
    assert v["log.level"] == "info"


def test_config_output_reads_back_the_same(cli, tmp_path):
    env = {
        "HEARTH_STORAGE_DATA_DIR": None,
        "HEARTH_HTTP_LISTEN": "127.0.0.1:18080",
        "HEARTH_HTTP_HEADER_TIMEOUT": "1500ms",
        "HEARTH_HTTP_MAX_BODY_BYTES": "3MiB",
        "HEARTH_SITE_NAME": "Round Trip TV",
    }
    first = cli("config", env=env)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "dumped.conf"
    path.write_text(first.stdout)
    second = cli("config", "--config", str(path), env=DEFAULTS_ENV)
    assert second.returncode == 0, second.stderr
    assert parse_ini(second.stdout) == parse_ini(first.stdout)


# --- where values come from -------------------------------------------------------------------


def test_env_overrides(cli):
    v = config_values(
        cli,
        env={
            "HEARTH_HTTP_LISTEN": "127.0.0.1:18080",
            "HEARTH_HTTP_HEADER_TIMEOUT": "1500ms",
            "HEARTH_HTTP_MAX_BODY_BYTES": "1MiB",
            "HEARTH_SITE_ALLOW_REGISTRATION": "false",
            "HEARTH_SERVER_WORKERS": "7",
            "HEARTH_LOG_LEVEL": "debug",
            "HEARTH_DEBUG_ECHO": "true",
        },
    )
    assert v["http.listen"] == "127.0.0.1:18080"
    assert v["http.header_timeout"] == "1500ms"
    assert v["http.max_body_bytes"] == "1MiB"
    assert v["site.allow_registration"] == "false"
    assert v["server.workers"] == "7"
    assert v["log.level"] == "debug"
    assert v["debug.echo"] == "true"


def test_file_then_env(cli, tmp_path):
    conf = tmp_path / "h.conf"
    conf.write_text(
        "; a comment\n[http]\nlisten = 127.0.0.1:1111\ncors_origin = https://a.example\n"
        "[site]\nname = From File\n"
    )
    v = config_values(cli, env={"HEARTH_HTTP_LISTEN": "127.0.0.1:2222"}, args=("--config", str(conf)))
    assert v["http.listen"] == "127.0.0.1:2222"  # env wins
    assert v["http.cors_origin"] == "https://a.example"  # file
    assert v["site.name"] == "From File"


def test_hearth_config_env_names_the_file(cli, tmp_path):
    conf = tmp_path / "named.conf"
    conf.write_text("[site]\nname = Named By Env\n")
    v = config_values(cli, env={"HEARTH_CONFIG": str(conf)})
    assert v["site.name"] == "Named By Env"


def test_hearth_conf_in_working_directory(cli, workdir):
    (workdir / "hearth.conf").write_text("[site]\nname = Local File\n")
    v = config_values(cli)
    assert v["site.name"] == "Local File"


def test_db_url_follows_data_dir(cli, tmp_path):
    v = config_values(cli, env={"HEARTH_STORAGE_DATA_DIR": "/srv/hearth"})
    assert v["db.url"] == "sqlite:/srv/hearth/hearth.db"


def test_db_url_env(cli, tmp_path):
    conf = tmp_path / "db.conf"
    conf.write_text("[db]\nurl = sqlite:/from/file.db\n")
    assert config_values(cli, args=("--config", str(conf)))["db.url"] == "sqlite:/from/file.db"
    v = config_values(cli, env={"DB_URL": "sqlite:/from/env.db"}, args=("--config", str(conf)))
    assert v["db.url"] == "sqlite:/from/env.db"


# --- errors: exit 2, naming the key --------------------------------------------------------------


BAD_VALUES = [
    ("http", "listen", "abc"),
    ("http", "listen", "127.0.0.1:99999"),
    ("http", "max_header_bytes", "lots"),
    ("http", "max_header_bytes", "10"),
    ("http", "header_timeout", "soon"),
    ("http", "idle_timeout", "10parsecs"),
    ("http", "access_log", "maybe"),
    ("server", "workers", "0"),
    ("server", "workers", "many"),
    ("site", "public_url", "ftp://example.org"),
    ("site", "allow_registration", "perhaps"),
    ("log", "level", "loud"),
    ("db", "url", "mysql://example.org/hearth"),
    ("xmpp", "domain", "bad domain"),
    ("rtmp", "listen", "localhost"),
]


@pytest.mark.parametrize("section,key,value", BAD_VALUES)
def test_bad_value_in_env_is_exit_2(cli, section, key, value):
    res = cli("config", env={env_name(f"{section}.{key}"): value})
    assert res.returncode == 2, res.stdout
    assert f"{section}.{key}" in res.stderr
    assert value in res.stderr


@pytest.mark.parametrize("section,key,value", BAD_VALUES)
def test_bad_value_in_file_is_exit_2(cli, tmp_path, section, key, value):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[{section}]\n{key} = {value}\n")
    res = cli("config", "--config", str(conf))
    assert res.returncode == 2, res.stdout
    assert f"{section}.{key}" in res.stderr
    assert value in res.stderr


def test_unknown_key_in_file(cli, tmp_path):
    conf = tmp_path / "unknown.conf"
    conf.write_text("[http]\nlisten = 127.0.0.1:8080\nfoo = 1\n")
    res = cli("config", "--config", str(conf))
    assert res.returncode == 2
    assert "foo" in res.stderr and "http" in res.stderr


def test_unknown_key_in_env(cli):
    res = cli("config", env={"HEARTH_HTTP_FOO": "1"})
    assert res.returncode == 2
    assert "HEARTH_HTTP_FOO" in res.stderr or ("foo" in res.stderr and "http" in res.stderr)


def test_unknown_section(cli, tmp_path):
    conf = tmp_path / "section.conf"
    conf.write_text("[htttp]\nlisten = 127.0.0.1:8080\n")
    res = cli("config", "--config", str(conf))
    assert res.returncode == 2
    assert "htttp" in res.stderr


def test_key_outside_section(cli, tmp_path):
    conf = tmp_path / "nosection.conf"
    conf.write_text("listen = 127.0.0.1:8080\n")
    res = cli("config", "--config", str(conf))
    assert res.returncode == 2
    assert "listen" in res.stderr


def test_syntax_error(cli, tmp_path):
    conf = tmp_path / "syntax.conf"
    conf.write_text("[http]\nthis line is not ini\n")
    res = cli("config", "--config", str(conf))
    assert res.returncode == 2
    assert res.stderr.strip()


def test_every_command_checks_the_config(cli):
    env = {"HEARTH_HTTP_LISTEN": "abc"}
    for args in (("user", "list"), ("channel", "list"), ("migrate", "status")):
        res = cli(*args, env=env)
        assert res.returncode == 2, args
        assert "http.listen" in res.stderr


def test_serve_with_bad_config_exits_2(cli, workdir):
    try:
        res = cli("serve", env={"HEARTH_HTTP_LISTEN": "abc"}, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("hearth serve started with http.listen = abc")
    assert res.returncode == 2
    assert "http.listen" in res.stderr


def test_serve_port_in_use_exits_1(cli, workdir):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        env = {
            "HEARTH_HTTP_LISTEN": f"{HOST}:{port}",
            "HEARTH_RTMP_LISTEN": f"{HOST}:{free_port()}",
            "HEARTH_HTTP_STATIC_DIR": str(workdir),
        }
        try:
            res = cli("serve", env=env, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("hearth serve kept running on a port it could not bind")
    assert res.returncode == 1, res.stderr
    assert str(port) in res.stderr


# --- the docs agree with the binary ------------------------------------------------------------------


def docs_rows():
    """`section.key` -> the table row documenting it in docs/configuration.md."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_]+\.[a-z0-9_]+)`\s*\|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_docs_document_every_key(cli):
    res = cli("config", env=DEFAULTS_ENV)
    assert res.returncode == 0, res.stderr
    printed = [f"{s}.{k}" for s, k, _, _ in parse_ini(res.stdout)]
    text = DOCS.read_text()
    rows = docs_rows()
    missing = [k for k in printed if k not in rows]
    assert not missing, f"docs/configuration.md has no table row for {missing}"
    no_env = [k for k in printed if env_name(k) not in text]
    assert not no_env, f"docs/configuration.md does not name the variables {[env_name(k) for k in no_env]}"
    stale = [k for k in rows if k not in printed]
    assert not stale, f"docs/configuration.md documents keys hearth does not have: {stale}"


def test_docs_show_the_defaults(cli):
    res = cli("config", env=DEFAULTS_ENV)
    assert res.returncode == 0, res.stderr
    rows = docs_rows()
    wrong = []
    for s, k, v, _ in parse_ini(res.stdout):
        key = f"{s}.{k}"
        if key == "db.url":  # derived from data_dir; the docs explain how
            continue
        if key in rows and f"`{v}`" not in rows[key]:
            wrong.append((key, v))
    assert not wrong, f"docs/configuration.md shows other defaults than `hearth config`: {wrong}"
