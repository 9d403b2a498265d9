"""
http.trusted_proxies: the client address behind a reverse proxy.

Without the setting X-Forwarded-For is ignored: the access log, the login
throttle and the chat see the connection's address. With 127.0.0.1
trusted, a request from 127.0.0.1 is taken to come from the right-most
X-Forwarded-For address that is not a trusted proxy; one from another
address (127.0.0.2, which Linux routes to lo too) is not believed. A list
that does not parse stops the server at start.
"""
import http.client
import json
import re

import pytest

from hearthtest import HOST
from test_xmpp_websocket import client_frame, open_el, read_frame, upgrade_request

API = "/api/v1"


def get(server, path, xff=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10, source_address=(source, 0))
    try:
        headers = {"X-Forwarded-For": xff} if xff else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def login(server, name, xff=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/json"}
        if xff:
            headers["X-Forwarded-For"] = xff
        conn.request("POST", API + "/auth/login",
                     body=json.dumps({"login": name, "password": "wrong password"}),
                     headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def env(**extra):
    e = {"HEARTH_AUTH_LOGIN_ATTEMPTS": "2", "HEARTH_AUTH_LOGIN_WINDOW": "60s"}
    e.update(extra)
    return e


def test_without_the_setting_forwarded_for_is_ignored(start_server):
    srv = start_server(env=env())
    assert get(srv, "/healthz?plain", xff="203.0.113.50") == 200
    lines = srv.wait_for_log(r'"GET /healthz\?plain"')
    assert lines and re.search(r"http 127\.0\.0\.1 \"GET", lines[0]), lines
    assert "203.0.113.50" not in srv.log()
    # One address for the throttle, whatever the header says.
    assert login(srv, "nobody-a", xff="198.51.100.1") == 401
    assert login(srv, "nobody-b", xff="198.51.100.1") == 401
    assert login(srv, "nobody-c", xff="198.51.100.2") == 429


def test_forwarded_for_from_a_trusted_proxy(start_server):
    srv = start_server(env=env(HEARTH_HTTP_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1"))
    # The right-most address that is not a proxy; what the client wrote
    # itself (left of it) is not believed.
    assert get(srv, "/healthz?fwd", xff="6.6.6.6, 203.0.113.50, 10.1.1.1") == 200
    lines = srv.wait_for_log(r'"GET /healthz\?fwd"')
    assert lines and re.search(r"http 203\.0\.113\.50 via 127\.0\.0\.1:\d+ \"GET", lines[0]), lines
    # Login throttling counts each client behind the proxy on its own.
    assert login(srv, "nobody-a", xff="198.51.100.1") == 401
    assert login(srv, "nobody-b", xff="198.51.100.1") == 401
    assert login(srv, "nobody-c", xff="198.51.100.1") == 429
    assert login(srv, "nobody-d", xff="198.51.100.2") == 401
    # A peer that is not a trusted proxy cannot choose its address.
    assert get(srv, "/healthz?untrusted", xff="198.51.100.7", source="127.0.0.2") == 200
    lines = srv.wait_for_log(r'"GET /healthz\?untrusted"')
    assert lines and re.search(r"http 127\.0\.0\.2 \"GET", lines[0]), lines
    assert login(srv, "nobody-e", xff="198.51.100.9", source="127.0.0.2") == 401
    assert login(srv, "nobody-f", xff="198.51.100.10", source="127.0.0.2") == 401
    assert login(srv, "nobody-g", xff="198.51.100.11", source="127.0.0.2") == 429


def test_chat_over_websocket_sees_the_forwarded_address(start_server):
    srv = start_server(env=env(HEARTH_HTTP_TRUSTED_PROXIES="127.0.0.1"))
    with srv.raw(timeout=10) as c:
        req, _ = upgrade_request(srv, origin=srv.url, extra="X-Forwarded-For: 203.0.113.77\r\n")
        c.send(req + client_frame(open_el("guest.localhost")))
        assert c.read_response(head=True).status == 101
        read_frame(c), read_frame(c)
        c.send(client_frame('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" '
                            'mechanism="ANONYMOUS"/>'))
        assert read_frame(c)[1].startswith(b"<success")
    assert srv.wait_for_log(r"xmpp c2s 203\.0\.113\.77: authenticated .*@guest\.localhost")


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "1.2.3.4:80"])
def test_a_bad_list_stops_the_server(start_server, value):
    srv = start_server(env={"HEARTH_HTTP_TRUSTED_PROXIES": value}, wait=False)
    assert srv.wait_exit() not in (None, 0)
    assert "http.trusted_proxies" in srv.log(), srv.log_tail()
