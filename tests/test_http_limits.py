"""The HTTP layer on the wire: raw sockets against `beacon up` (real uvicorn + beacon/http.py).

Host rules (RFC 9112 3.2), absolute-form targets, long request targets, the header
size limit and the header-read timeout: none of these can be seen through an ASGI
test client, so each is sent as bytes to a real server process.
"""

from __future__ import annotations

import re
import signal
import socket
import time

import httpx
import pytest

from beacon import partners as reg

from .conftest import free_port, start_beacon_up

METRICS_KEY = "metrics-key-for-wire-tests"
A_KEY = "bpk_wire-key-of-partner-a"
REGISTRY = f"""
[[partner]]
id = "a"
name = "Partner A"
hosts = ["ads.a.test"]
origins = ["https://ads.a.test"]
api_key_sha256 = "{reg.hash_key(A_KEY)}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("wire")
    (data / "partners.toml").write_text(REGISTRY)
    port = free_port()
    proc = start_beacon_up(
        data,
        port,
        data / "beacon.log",
        extra=(
            "--partners-file",
            str(data / "partners.toml"),
            "--mall-hosts",
            "shop.test",
            "--metrics-key",
            METRICS_KEY,
            "--header-timeout",
            "1",
        ),
    )
    yield port
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def exchange(port: int, request: bytes, wait: float = 10.0) -> bytes:
    """Send `request`, read until the server closes (or `wait` passes); a reset ends the read."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # the server may refuse before it has read everything
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return out
            if not data:
                return out
            out += data


def status(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else 0


def cookies(response: bytes) -> list[bytes]:
    return re.findall(rb"(?im)^set-cookie: ([^=]+)=", response)


def rejected(port: int, reason: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    m = re.search(rf'beacon_events_rejected_total{{reason="{reason}"}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def test_two_host_headers_answer_400_and_set_no_cookie(server):
    res = exchange(server, b"GET /p.gif HTTP/1.1\r\nHost: shop.test\r\nHost: ads.a.test\r\nConnection: close\r\n\r\n")
    assert status(res) == 400 and b"Host" in res and cookies(res) == []


@pytest.mark.parametrize("host", [b"shop.test/evil", b"u@shop.test", b"shop.test:80:80", b"shop test", b"shop.test\\x", b"[::1"])
def test_an_invalid_host_value_answers_400(server, host):
    res = exchange(server, b"GET /p.gif HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert status(res) == 400 and cookies(res) == [], host


def test_no_host_on_http_1_1_answers_400_but_http_1_0_is_served(server):
    res = exchange(server, b"GET /p.gif HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status(res) == 400 and cookies(res) == []
    old = exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status(old) == 200 and old.endswith(b"ok")


def test_an_absolute_form_target_is_served_for_its_own_authority(server):
    res = exchange(server, b"GET http://ads.a.test/p.gif HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    assert status(res) == 200 and b"GIF89a" in res
    assert cookies(res) == [b"a_uid"]  # the partner's cookie, not the mall's bcn
    mall = exchange(server, b"GET HTTPS://shop.test/p.gif?e=x HTTP/1.1\r\nHost: ads.a.test\r\nConnection: close\r\n\r\n")
    assert status(mall) == 200 and cookies(mall) == [b"bcn"]
    for bad in (b"http://u@shop.test/p.gif", b"http:///p.gif", b"ftp://shop.test/p.gif"):
        refused = exchange(server, b"GET " + bad + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        assert status(refused) == 400 and cookies(refused) == [], bad


@pytest.mark.parametrize(
    "target", [b"http://[zz/p.gif", b"http://ads.a.test:99999999/p.gif", b"http://ads.a.test:80:80/p.gif", b"http://ads .a.test/p.gif"]
)
def test_an_absolute_target_with_an_invalid_authority_answers_400(server, target):
    """Found from outside: the authority replaced the Host header without the Host header's checks."""
    res = exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    assert status(res) == 400 and cookies(res) == [], target


@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_a_huge_pixel_query_still_answers_the_gif_and_records_nothing(server, size):
    before = rejected(server, "query_too_long")
    res = exchange(server, b"GET /p.gif?e=pageview&u=" + b"a" * size + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    assert status(res) == 200 and res.endswith(b";") and b"GIF89a" in res
    assert rejected(server, "query_too_long") == before + 1


def test_a_huge_target_elsewhere_answers_414(server):
    res = exchange(server, b"GET /api/v1/stats?from=" + b"1" * 70_000 + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    assert status(res) == 414
    path = exchange(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    assert status(path) == 414


def test_header_fields_over_the_limit_answer_431(server):
    res = exchange(server, b"GET /p.gif HTTP/1.1\r\nHost: shop.test\r\nCookie: bcn=" + b"A" * 40_000 + b"\r\nConnection: close\r\n\r\n")
    assert status(res) == 431 and cookies(res) == []
    within = exchange(server, b"GET /p.gif HTTP/1.1\r\nHost: shop.test\r\nCookie: bcn=" + b"A" * 16_000 + b"\r\nConnection: close\r\n\r\n")
    assert status(within) == 200


def test_an_8_mb_header_is_refused_not_answered(server):
    res = exchange(server, b"GET /p.gif HTTP/1.1\r\nHost: shop.test\r\nX-Big: " + b"a" * 8_000_000 + b"\r\nConnection: close\r\n\r\n")
    assert status(res) in (0, 431)  # 431 (read while the server drops the rest), or a reset under load
    assert b"GIF89a" not in res
    assert httpx.get(f"http://127.0.0.1:{server}/healthz").text == "ok"


def test_a_slow_header_is_cut_off_after_the_timeout(server):
    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        s.sendall(b"GET /p.gif HTTP/1.1\r\nHost: shop.test\r\n")
        for _ in range(3):  # trickling bytes does not extend the deadline
            time.sleep(0.4)
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                break
        out = b""
        while True:
            data = s.recv(4096)  # TimeoutError here (15 s) would mean it was never closed
            if not data:
                break
            out += data
    assert status(out) == 408


def test_a_silent_connection_is_closed_after_the_timeout(server):
    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        assert status(s.recv(4096)) == 408
        assert s.recv(4096) == b""


def test_a_body_that_stops_coming_is_cut_off_after_the_timeout(server):
    """Found from outside: `POST /e` with Content-Length 100 and 5 bytes sent was held open for good."""
    start = time.monotonic()
    res = exchange(server, b'POST /e HTTP/1.1\r\nHost: shop.test\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n{"e":', wait=20)
    assert status(res) == 408 and b"body" in res and time.monotonic() - start < 10


def test_a_body_that_keeps_coming_gets_its_time_per_read(server):
    body = b'{"e": "slow", "u": "https://shop.test/"}'
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(
            b"POST /e HTTP/1.1\r\nHost: shop.test\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for part in (body[:10], body[10:20], body[20:]):  # 1.8 s in all, 0.6 s apart: under 1 s each
            time.sleep(0.6)
            s.sendall(part)
        assert status(s.recv(65536)) == 204


def test_a_request_answered_before_its_body_is_closed_without_a_stray_answer(server):
    res = exchange(
        server, b"POST /api/v2/query HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", wait=20
    )
    assert status(res) == 401 and res.count(b"HTTP/1.1 ") == 1


def test_keep_alive_requests_each_get_their_own_header_time(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n")
            got = b""
            while not got.endswith(b"ok"):
                got += s.recv(4096)
            assert status(got) == 200
            time.sleep(0.6)  # together longer than the 1 s header timeout


def test_health_answers_by_ip_with_mall_hosts_set(server):
    for host in (b"10.0.0.1", b"127.0.0.1:80", b"ads.a.test"):
        res = exchange(server, b"GET /readyz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        assert status(res) == 200, host


def test_the_partner_api_answers_on_the_partners_host(server):
    res = httpx.get(
        f"http://127.0.0.1:{server}/api/v1/partners/a/stats", headers={"host": "ads.a.test", "authorization": f"Bearer {A_KEY}"}
    )
    assert res.status_code == 200 and res.json()["scope"] == "a"


def test_nothing_here_was_answered_500(server):
    text = httpx.get(f"http://127.0.0.1:{server}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    assert 'status="500"' not in text
