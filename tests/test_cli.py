"""`beacon up` as a user runs it: one process, embedded Redis and chDB, real HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from beacon import snippet

from .conftest import free_port, start_beacon_up

METRICS_KEY = "metrics-key-for-cli-tests"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"


@pytest.fixture(scope="module")
def beacon_up(tmp_path_factory):
    data = tmp_path_factory.mktemp("up")
    port = free_port()
    proc = start_beacon_up(data, port, data / "beacon.log", extra=("--metrics-key", METRICS_KEY))
    base = f"http://127.0.0.1:{port}"
    yield base, data, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_up_prints_the_snippet_and_the_stats_url(beacon_up):
    base, data, _ = beacon_up
    out = (data / "beacon.log").read_text()
    assert snippet.up_message(base, (), loopback=True) in out  # the beacon.js tag for its own origin, and BEACON_SITE_ORIGINS
    assert f'<script async src="{base}/beacon.js"></script>' in out and "BEACON_SITE_ORIGINS is empty" in out
    assert f"{base}/api/v1/stats" in out
    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600


def test_1000_pixel_loads_show_as_1000_pageviews_within_seconds(beacon_up):
    base, data, _ = beacon_up
    key = (data / "mall_api_key").read_text().strip()

    def load(i: int) -> int:
        with httpx.Client(headers={"user-agent": BROWSER}) as c:
            return c.get(f"{base}/p.gif", params={"u": f"https://shop.test/item/{i % 10}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(load, range(1000))) == {200}
    deadline = time.monotonic() + 10
    while True:
        body = httpx.get(f"{base}/api/v1/stats", headers={"authorization": f"Bearer {key}"}).json()
        if body["totals"]["pageviews"] >= 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["totals"]["pageviews"] == 1000
    assert body["totals"]["visitors"] == 1000
    assert len(body["top_pages"]) == 10


def raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"GIF89a" in b"".join(chunks) or b"\r\n\r\n{" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_hostile_requests_on_the_wire_never_get_a_500(beacon_up):
    base, _, _ = beacon_up
    long_query = raw(base, b"GET /p.gif?u=" + b"a" * 16384 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert long_query.startswith(b"HTTP/1.1 200") and b"GIF89a" in long_query
    bad_bytes = raw(base, b"GET /p.gif?u=%ff%fe\xff\xfe&p.x=\x01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not bad_bytes.startswith(b"HTTP/1.1 5")
    bad_header = raw(base, b"GET /p.gif HTTP/1.1\r\nHost: x\r\nCookie: bcn=\xff\x00\r\nConnection: close\r\n\r\n")
    assert bad_header.startswith(b"HTTP/1.1 200") or bad_header.startswith(b"HTTP/1.1 400")
    huge_cookie = raw(base, b"GET /p.gif HTTP/1.1\r\nHost: x\r\nCookie: bcn=" + b"A" * 8000 + b"\r\nConnection: close\r\n\r\n")
    assert huge_cookie.startswith(b"HTTP/1.1 200") and b"GIF89a" in huge_cookie
    metrics = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"})
    assert metrics.status_code == 200 and 'status="500"' not in metrics.text
    assert httpx.get(base + "/metrics").status_code == 401  # closed without its key


def test_sigterm_stops_cleanly(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon", "up", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    httpx.get(f"http://127.0.0.1:{port}/p.gif")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not (Path(tmp_path) / "redis" / "redis.sock").exists() or not _listening(tmp_path)


def _listening(data: Path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(data / "redis" / "redis.sock"))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_the_printed_dashboard_url_shows_a_newcomers_visit(beacon_up):
    base, data, _ = beacon_up
    out = (data / "beacon.log").read_text()
    assert f"{base}/dashboard" in out
    key = (data / "mall_api_key").read_text().strip()
    with httpx.Client(base_url=base, headers={"user-agent": BROWSER}) as c:
        assert c.get("/p.gif", params={"u": "https://shop.test/newcomer-page"}).status_code == 200
        assert c.post("/dashboard/login", data={"key": key}, headers={"origin": base}).status_code == 303
        deadline = time.monotonic() + 10
        while True:
            pages = c.get("/dashboard/api/panel/pages", params={"period": "day", "f": "event:page=/newcomer-page"}).json()
            if any(row[0] == "/newcomer-page" for row in pages["rows"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [row for row in pages["rows"] if row[0] == "/newcomer-page"] == [["/newcomer-page", 1, 1]]
