"""
Federation (src/chat/s2s.c): a user on Debian's Prosody 0.12 joins a Hearth
room with their own client, gets its history, talks both ways, and is kicked
and banned by the room's owner like anyone else; when Prosody dies, its user
leaves the room; plaintext s2s is refused; a raw peer cannot make Hearth
authenticate (and so connect to) more than 16 domain pairs per stream, and
servers count toward xmpp.max_connections.

Two runs: self-signed certificates on both sides (so each side checks the
other with dialback, XEP-0220, both directions, including answering
db:verify), and a test CA that signed both (SASL EXTERNAL, with
s2s_secure_auth on the Prosody side).

Addresses: Hearth (hearth.test, rooms on chat.hearth.test) listens for
servers on 127.0.0.2:5269, Prosody (prosody.test) on 127.0.0.3:5269. Prosody
finds Hearth through a hosts file (`unbound = { hoststxt = ... }`: A
records, so the default port); Hearth finds Prosody through
xmpp.s2s_routes. Prosody runs as a child process with its config, data and
log in the test's directory.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from hearthtest import free_port

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
HEARTH_IP = "127.0.0.2"
PROSODY_IP = "127.0.0.3"
S2S_PORT = 5269
HEARTH = "hearth.test"
MUC = "chat.hearth.test"
PROSODY_DOMAIN = "prosody.test"
PASSWORD = "correct horse battery staple"
DEADLINE = 20.0

pytestmark = pytest.mark.skipif(
    not (os.access(PROSODY, os.X_OK) and os.access(PROSODYCTL, os.X_OK)),
    reason="Prosody is not installed (apt install prosody lua-unbound)",
)


def port_free(ip, port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


# --- certificates -------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d, with_ca):
    """hearth.pem (hearth.test, chat.hearth.test), prosody.pem; signed by ca.pem when with_ca."""
    d.mkdir(parents=True, exist_ok=True)
    if with_ca:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=Hearth Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, names in (("hearth", [HEARTH, MUC]), ("prosody", [PROSODY_DOMAIN])):
        san = ",".join(f"DNS:{n}" for n in names)
        if with_ca:
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={names[0]}",
                    cwd=d)
            (d / f"{name}.ext").write_text(
                f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n"
                "basicConstraints=CA:FALSE\n")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                    "-extfile", f"{name}.ext", cwd=d)
        else:
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                    "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}", cwd=d)
        os.chmod(d / f"{name}.key", 0o644)
    return d


# --- Prosody --------------------------------------------------------------------


class Prosody:
    def __init__(self, base, certs, secure, c2s_port):
        self.base = base
        self.c2s_port = c2s_port
        base.mkdir(parents=True, exist_ok=True)
        (base / "data").mkdir(exist_ok=True)
        self.log_path = base / "prosody.log"
        hosts = base / "hosts"
        hosts.write_text(f"{HEARTH_IP} {HEARTH}\n{HEARTH_IP} {MUC}\n"
                         f"{PROSODY_IP} {PROSODY_DOMAIN}\n")
        cafile = f'cafile = "{certs}/ca.pem";' if secure else ""
        self.config = base / "prosody.cfg.lua"
        self.config.write_text(f"""
run_as_root = true
daemonize = false
pidfile = "{base}/prosody.pid"
data_path = "{base}/data"
plugin_paths = {{ }}
log = {{ debug = "{self.log_path}" }}
interfaces = {{ "{PROSODY_IP}" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ {S2S_PORT} }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admin_socket = "{base}/admin.sock"
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix"; }}
modules_disabled = {{ "s2s_bidi"; "offline"; "c2s_limits"; "admin_shell"; }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if secure else "false"}
s2s_timeout = 20
use_ipv6 = false
unbound = {{ hoststxt = "{hosts}"; resolvconf = false; forward = {{ "127.0.0.1@9" }} }}
ssl = {{ certificate = "{certs}/prosody.pem"; key = "{certs}/prosody.key"; {cafile} }}
VirtualHost "{PROSODY_DOMAIN}"
    ssl = {{ certificate = "{certs}/prosody.pem"; key = "{certs}/prosody.key"; {cafile} }}
""")
        self.proc = None

    def ctl(self, *args):
        return subprocess.run([PROSODYCTL, "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=30)

    def start(self):
        self.proc = subprocess.Popen([PROSODY, "--config", str(self.config)],
                                     stdout=open(self.base / "stdout.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("prosody exited:\n" + self.log_tail())
            try:
                socket.create_connection((PROSODY_IP, self.c2s_port), timeout=1).close()
                socket.create_connection((PROSODY_IP, S2S_PORT), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("prosody did not start:\n" + self.log_tail())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n=60):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        out = (self.base / "stdout.log")
        extra = out.read_text(errors="replace") if out.exists() else ""
        return "\n".join(lines[-n:]) + "\n" + extra[-2000:]


# --- clients --------------------------------------------------------------------


def slixmpp_client(jid, password, host, port):
    import slixmpp

    class Client(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__(jid, password)
            self.stanzas = []
            self.changed = asyncio.Event()
            self.ready = asyncio.Event()
            self.failed = None
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
            self.add_event_handler("session_start", self._start)
            self.add_event_handler("failed_auth", self._failed)
            self.add_event_handler("message", self._got)
            self.add_event_handler("presence", self._got)

        async def _start(self, _):
            self.send_presence()
            self.ready.set()

        def _failed(self, _):
            self.failed = "auth"
            self.ready.set()

        def _got(self, st):
            self.stanzas.append(st)
            self.changed.set()

        async def wait(self, pred, what, timeout=DEADLINE):
            deadline = time.monotonic() + timeout
            while True:
                for st in self.stanzas:
                    if pred(st):
                        self.stanzas.remove(st)
                        return st
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{jid}: no {what} within {timeout}s; got "
                                         + "\n".join(str(s) for s in self.stanzas[-10:]))
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except asyncio.TimeoutError:
                    pass

        async def online(self):
            self.connect(address=(host, port), force_starttls=True)
            await asyncio.wait_for(self.ready.wait(), DEADLINE)
            assert self.failed is None, f"{jid}: login failed"

    return Client()


NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"


def statuses(st):
    return {c.get("code") for c in st.xml.iter(f"{{{NS_MUC_USER}}}status")}


def is_error(st, cond=None):
    if st["type"] != "error":
        return False
    return cond is None or st.xml.find(f".//{{urn:ietf:params:xml:ns:xmpp-stanzas}}{cond}") is not None


# --- the scenario ---------------------------------------------------------------


def hearth_cli(bin_path, data_dir, *args, input=None):
    from hearthtest import clean_env

    env = clean_env()
    env["HEARTH_STORAGE_DATA_DIR"] = str(data_dir)
    env["HEARTH_XMPP_DOMAIN"] = HEARTH
    res = subprocess.run([bin_path, *args], input=input, env=env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, f"hearth {args}: {res.stderr}"
    return res


def run_federation(bin_path, start_server, tmp_path, secure, play=None):
    for ip in (HEARTH_IP, PROSODY_IP):
        if not port_free(ip, S2S_PORT):
            pytest.skip(f"{ip}:{S2S_PORT} is taken on this machine")
    certs = make_certs(tmp_path / "certs", with_ca=secure)

    # Hearth: an owner with a channel (its room), before the server starts.
    data_dir = tmp_path / "srv0" / "data"
    hearth_cli(bin_path, data_dir, "user", "add", "owner", "--password-stdin",
               input=PASSWORD + "\n")
    ch = json.loads(hearth_cli(bin_path, data_dir, "channel", "add", "--owner", "owner",
                               "--title", "Federated", "--slug", "fed", "--json").stdout)
    slug = ch.get("slug") or ch.get("channel", {}).get("slug") or "fed"
    room = f"{slug}@{MUC}"

    hearth_c2s = free_port()
    env = {
        "HEARTH_XMPP_DOMAIN": HEARTH,
        "HEARTH_XMPP_C2S_LISTEN": f"127.0.0.1:{hearth_c2s}",
        "HEARTH_XMPP_S2S_LISTEN": f"{HEARTH_IP}:{S2S_PORT}",
        "HEARTH_XMPP_FEDERATION": "true",
        "HEARTH_XMPP_TLS_CERT": str(certs / "hearth.pem"),
        "HEARTH_XMPP_TLS_KEY": str(certs / "hearth.key"),
        "HEARTH_XMPP_S2S_ROUTES": f"{PROSODY_DOMAIN}={PROSODY_IP}:{S2S_PORT}",
        "HEARTH_XMPP_S2S_SECURE_AUTH": "true" if secure else "false",
        "HEARTH_LOG_LEVEL": "debug",
    }
    if secure:
        env["HEARTH_XMPP_TLS_CA"] = str(certs / "ca.pem")
    srv = start_server(env=env)
    assert srv.data_dir == data_dir

    prosody = Prosody(tmp_path / "prosody", certs, secure, free_port())
    res = prosody.ctl("register", "remote", PROSODY_DOMAIN, PASSWORD)
    assert res.returncode == 0, res.stdout + res.stderr
    prosody.start()
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            play = play or scenario
            loop.run_until_complete(asyncio.wait_for(
                play(room, hearth_c2s, prosody.c2s_port, prosody), 120))
        finally:
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
            asyncio.set_event_loop(None)
    except BaseException:
        print("--- hearth log ---\n" + srv.log_tail(120))
        print("--- prosody log ---\n" + prosody.log_tail(120))
        raise
    finally:
        prosody.stop()
    if play is not scenario:
        return srv, prosody
    log = srv.log()
    if secure:
        assert "SASL EXTERNAL" in log
    else:
        assert "by dialback" in log
        assert re.search(r"db:verify from \S+ for \S+: valid", log), "never answered db:verify"
    return srv, prosody


async def scenario(room, hearth_c2s, prosody_c2s, prosody=None):
    owner = slixmpp_client(f"owner@{HEARTH}/web", PASSWORD, "127.0.0.1", hearth_c2s)
    remote = slixmpp_client(f"remote@{PROSODY_DOMAIN}/laptop", PASSWORD, PROSODY_IP, prosody_c2s)
    try:
        await owner.online()
        await remote.online()
        # One to one, both ways: each server opens its stream to the other.
        remote.send_message(mto=f"owner@{HEARTH}/web", mtype="chat", mbody="hi from prosody")
        await owner.wait(lambda s: s.name == "message" and s["body"] == "hi from prosody"
                         and s["from"] == remote.boundjid, "a direct message from Prosody",
                         timeout=45)
        owner.send_message(mto=remote.boundjid, mtype="chat", mbody="hi from hearth")
        await remote.wait(lambda s: s.name == "message" and s["body"] == "hi from hearth"
                          and s["from"] == owner.boundjid, "a direct message from Hearth",
                          timeout=45)

        # The owner joins and says something before the remote user comes: history.
        owner.send_presence(pto=f"{room}/Owner", pfrom=owner.boundjid)
        await owner.wait(lambda s: s.name == "presence" and s["from"].bare == room
                         and "110" in statuses(s), "own presence in the room")
        owner.send_message(mto=room, mtype="groupchat", mbody="before you came")
        await owner.wait(lambda s: s.name == "message" and s["body"] == "before you came",
                         "own message echoed")

        join = remote.make_presence(pto=f"{room}/Remote")
        join.append(ET.Element(
            f"{{{NS_MUC}}}x"))
        join.send()
        p = await remote.wait(lambda s: s.name == "presence" and s["from"].bare == room
                              and (s["type"] == "error" or "110" in statuses(s)),
                              "self-presence from the Hearth room", timeout=45)
        assert p["type"] != "error", f"join refused: {p}"
        h = await remote.wait(lambda s: s.name == "message" and s["body"] == "before you came",
                              "the room's history")
        assert h.xml.find("{urn:xmpp:delay}delay") is not None, "history without a delay"
        await owner.wait(lambda s: s.name == "presence" and str(s["from"]) == f"{room}/Remote",
                         "the remote user's arrival")

        # Both ways.
        remote.send_message(mto=room, mtype="groupchat", mbody="hello from prosody")
        await owner.wait(lambda s: s.name == "message" and s["body"] == "hello from prosody"
                         and str(s["from"]) == f"{room}/Remote", "the remote user's message")
        owner.send_message(mto=room, mtype="groupchat", mbody="welcome, remote")
        await remote.wait(lambda s: s.name == "message" and s["body"] == "welcome, remote"
                          and str(s["from"]) == f"{room}/Owner", "the owner's message")

        # Kick: 307 to the remote user.
        iq = owner.make_iq_set(ito=room)
        q = ET.Element(
            f"{{{NS_MUC_ADMIN}}}query")
        ET.SubElement(q, f"{{{NS_MUC_ADMIN}}}item", {"nick": "Remote", "role": "none"})
        iq.append(q)
        await iq.send(timeout=DEADLINE)
        k = await remote.wait(lambda s: s.name == "presence" and s["type"] == "unavailable"
                              and s["from"].bare == room and "307" in statuses(s),
                              "the kick (307)")
        assert "110" in statuses(k)

        # Back in, then banned: 301, and rejoining is refused.
        join = remote.make_presence(pto=f"{room}/Remote")
        join.append(ET.Element(
            f"{{{NS_MUC}}}x"))
        join.send()
        await remote.wait(lambda s: s.name == "presence" and s["from"].bare == room
                          and "110" in statuses(s) and s["type"] != "unavailable", "rejoin")
        iq = owner.make_iq_set(ito=room)
        q = ET.Element(f"{{{NS_MUC_ADMIN}}}query")
        ET.SubElement(q, f"{{{NS_MUC_ADMIN}}}item",
                      {"jid": f"remote@{PROSODY_DOMAIN}", "affiliation": "outcast"})
        iq.append(q)
        await iq.send(timeout=DEADLINE)
        await remote.wait(lambda s: s.name == "presence" and s["type"] == "unavailable"
                          and s["from"].bare == room and "301" in statuses(s), "the ban (301)")
        join = remote.make_presence(pto=f"{room}/Remote")
        join.append(ET.Element(f"{{{NS_MUC}}}x"))
        join.send()
        await remote.wait(lambda s: s.name == "presence" and s["from"].bare == room
                          and is_error(s, "forbidden"), "the rejoin refused (forbidden)")
    finally:
        for c in (owner, remote):
            try:
                c.disconnect()
            except Exception:
                pass
        await asyncio.sleep(0.2)


async def remote_server_dies(room, hearth_c2s, prosody_c2s, prosody):
    """The remote user is in the room; Prosody is killed (no goodbye): the
    owner sees the user leave (333) as soon as Hearth's stream from Prosody
    breaks."""
    owner = slixmpp_client(f"owner@{HEARTH}/web", PASSWORD, "127.0.0.1", hearth_c2s)
    remote = slixmpp_client(f"remote@{PROSODY_DOMAIN}/laptop", PASSWORD, PROSODY_IP, prosody_c2s)
    try:
        await owner.online()
        await remote.online()
        owner.send_presence(pto=f"{room}/Owner", pfrom=owner.boundjid)
        await owner.wait(lambda s: s.name == "presence" and s["from"].bare == room
                         and "110" in statuses(s), "own presence in the room")
        join = remote.make_presence(pto=f"{room}/Remote")
        join.append(ET.Element(f"{{{NS_MUC}}}x"))
        join.send()
        p = await remote.wait(lambda s: s.name == "presence" and s["from"].bare == room
                              and (s["type"] == "error" or "110" in statuses(s)),
                              "self-presence from the Hearth room", timeout=45)
        assert p["type"] != "error", f"join refused: {p}"
        await owner.wait(lambda s: s.name == "presence" and str(s["from"]) == f"{room}/Remote"
                         and s["type"] != "unavailable", "the remote user's arrival")

        os.kill(prosody.proc.pid, signal.SIGKILL)
        prosody.proc.wait(10)
        gone = await owner.wait(lambda s: s.name == "presence"
                                and str(s["from"]) == f"{room}/Remote"
                                and s["type"] == "unavailable",
                                "the remote user leaving after Prosody died", timeout=30)
        assert "333" in statuses(gone), gone
        # The room no longer lists the remote user: a message from the
        # owner is echoed and nothing about Remote comes back.
        owner.send_message(mto=room, mtype="groupchat", mbody="still here")
        await owner.wait(lambda s: s.name == "message" and s["body"] == "still here",
                         "own message echoed")
    finally:
        for c in (owner, remote):
            try:
                c.disconnect()
            except Exception:
                pass
        await asyncio.sleep(0.2)


def plaintext_refused(ip, port):
    """A server that skips STARTTLS: its first stanza ends the stream."""
    with socket.create_connection((ip, port), timeout=DEADLINE) as s:
        s.sendall(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  f"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                  f"from='{PROSODY_DOMAIN}' to='{HEARTH}' version='1.0'>".encode())
        buf = b""
        while b"</stream:features>" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"closed early: {buf!r}"
            buf += chunk
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in buf and b"<required/>" in buf
        s.sendall(f"<db:result from='{PROSODY_DOMAIN}' to='{HEARTH}'>abc</db:result>"
                  f"<message from='x@{PROSODY_DOMAIN}' to='owner@{HEARTH}' type='chat'>"
                  f"<body>plain</body></message>".encode())
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        assert b"policy-violation" in buf, buf
        assert buf.rstrip().endswith(b"</stream:stream>"), buf


def test_federation_dialback(bin_path, start_server, tmp_path):
    run_federation(bin_path, start_server, tmp_path, secure=False)


def test_federation_sasl_external(bin_path, start_server, tmp_path):
    run_federation(bin_path, start_server, tmp_path, secure=True)


def test_plaintext_s2s_refused(start_server):
    port = free_port()
    srv = start_server(env={
        "HEARTH_XMPP_DOMAIN": HEARTH,
        "HEARTH_XMPP_C2S_LISTEN": f"127.0.0.1:{free_port()}",
        "HEARTH_XMPP_S2S_LISTEN": f"127.0.0.1:{port}",
        "HEARTH_XMPP_FEDERATION": "true",
    })
    plaintext_refused("127.0.0.1", port)
    assert "plaintext federation is refused" in srv.log()
    assert srv.alive()


def test_federation_remote_server_dies(bin_path, start_server, tmp_path):
    srv, _ = run_federation(bin_path, start_server, tmp_path, secure=False,
                            play=remote_server_dies)
    assert re.search(r"prosody\.test is gone .*: [1-9]\d* remote users dropped", srv.log()), \
        srv.log_tail(60)


# --- raw peers -------------------------------------------------------------------

STREAM_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                 "xmlns:stream='http://etherx.jabber.org/streams' "
                 "xmlns:db='jabber:server:dialback' from='{frm}' to='{to}' version='1.0'>")


def read_until(s, marker, what):
    buf = b""
    while marker not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before {what}: {buf!r}"
        buf += chunk
    return buf


def read_to_end(s):
    buf = b""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout, ssl.SSLError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def raw_peer_tls(ip, port, frm):
    """A server that does STARTTLS (accepting any certificate) and is left
    at the features of the encrypted stream."""
    raw = socket.create_connection((ip, port), timeout=DEADLINE)
    raw.sendall(STREAM_HEADER.format(frm=frm, to=HEARTH).encode())
    read_until(raw, b"</stream:features>", "the features")
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(raw, b"<proceed", "proceed")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(raw, server_hostname=HEARTH)
    s.sendall(STREAM_HEADER.format(frm=frm, to=HEARTH).encode())
    feats = read_until(s, b"</stream:features>", "the features after TLS")
    assert b"dialback" in feats, feats
    return s


def test_dialback_pairs_capped(start_server):
    """Each db:result naming a new domain makes Hearth connect to that
    domain's server to check the key: one stream may ask for 16 pairs, the
    17th ends it (policy-violation), and no 17th outgoing stream is made."""
    domains = [f"d{i}.example" for i in range(17)]
    port = free_port()
    srv = start_server(env={
        "HEARTH_XMPP_DOMAIN": HEARTH,
        "HEARTH_XMPP_C2S_LISTEN": f"127.0.0.1:{free_port()}",
        "HEARTH_XMPP_S2S_LISTEN": f"127.0.0.1:{port}",
        "HEARTH_XMPP_FEDERATION": "true",
        # Nothing listens on port 1: each check fails fast, without DNS.
        "HEARTH_XMPP_S2S_ROUTES": ",".join(f"{d}=127.0.0.1:1" for d in domains),
        "HEARTH_LOG_LEVEL": "debug",
    })
    with raw_peer_tls("127.0.0.1", port, domains[0]) as s:
        s.sendall("".join(f"<db:result from='{d}' to='{HEARTH}'>abcdef</db:result>"
                          for d in domains).encode())
        buf = read_to_end(s)
    assert b"policy-violation" in buf, buf
    assert buf.count(b"<db:result") <= 16, buf
    log = srv.log()
    assert "asks for more than 16 domain pairs" in log, srv.log_tail(60)
    routed = set(re.findall(r"s2s out #\d+ \S+ -> (d\d+\.example)", log))
    assert 0 < len(routed) <= 16, routed
    assert "d16.example" not in routed, routed
    assert srv.alive()


def test_s2s_connections_capped(start_server):
    """Incoming servers count toward xmpp.max_connections: past it, Hearth
    closes the connection at once, before a single byte."""
    port = free_port()
    srv = start_server(env={
        "HEARTH_XMPP_DOMAIN": HEARTH,
        "HEARTH_XMPP_C2S_LISTEN": f"127.0.0.1:{free_port()}",
        "HEARTH_XMPP_S2S_LISTEN": f"127.0.0.1:{port}",
        "HEARTH_XMPP_FEDERATION": "true",
        "HEARTH_XMPP_MAX_CONNECTIONS": "2",
    })
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            held.append(s)
            s.sendall(STREAM_HEADER.format(frm="a.example", to=HEARTH).encode())
            read_until(s, b"</stream:features>", "the features")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
            s.sendall(STREAM_HEADER.format(frm="b.example", to=HEARTH).encode())
            assert read_to_end(s) == b""
        assert re.search(r"s2s in \S+: connection refused", srv.log()), srv.log_tail(20)
        # One goes away: room for another.
        held.pop().close()
        deadline = time.monotonic() + DEADLINE
        while True:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
                s.sendall(STREAM_HEADER.format(frm="c.example", to=HEARTH).encode())
                if b"</stream:features>" in read_to_end_marker(s, b"</stream:features>"):
                    break
            assert time.monotonic() < deadline, "no room after a connection closed"
            time.sleep(0.2)
    finally:
        for s in held:
            s.close()
    assert srv.alive()


def read_to_end_marker(s, marker):
    buf = b""
    while marker not in buf:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        buf += chunk
    return buf
