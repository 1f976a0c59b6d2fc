"""The README's first command, end to end, as a newcomer meets it: `beacon up` on a fresh data
dir, a page carrying the printed snippet served from another local origin and loaded in
headless Chromium, and the visit on the printed dashboard URL (and in `/api/v2/query`).

Chromium and Playwright as tests/test_browser.py uses them (skipped when missing).
"""

from __future__ import annotations

import functools
import http.server
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from beacon import snippet

from .conftest import free_port, start_beacon_up
from .test_browser import CHROMIUM_ARGS, find_chromium


@pytest.fixture
def chromium() -> Any:
    path = find_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    major = "".join(ch for ch in version.split(".")[0] if ch.isdigit()) or "140"
    # Chromium's headless user agent says HeadlessChrome, which Beacon (rightly) counts as a bot
    user_agent = f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    pw = sync_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
    context = browser.new_context(user_agent=user_agent)
    yield context
    context.close()
    browser.close()
    pw.stop()


@pytest.fixture
def site(tmp_path: Path) -> Any:
    """A static site on its own loopback port (as `python -m http.server` would serve it)."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_newcomer_sees_the_visit_of_a_local_page_on_the_printed_dashboard(tmp_path, chromium, site):
    data = tmp_path / "fresh"
    port = free_port()
    proc = start_beacon_up(data, port, tmp_path / "up.log")
    try:
        printed = (tmp_path / "up.log").read_text()
        tag = printed.split("Embed on every page (one pageview per page load):\n", 1)[1].split("\n", 3)
        root, page_origin = site
        (root / "index.html").write_text(
            '<!doctype html><title>My shop</title><link rel=icon href="data:,"><body><h1>Hello</h1>\n'
            + "\n".join(line.strip() for line in tag[:3])
            + "\n</body>\n"
        )
        printed_tag = [line.strip() for line in tag[:3]]
        assert printed_tag == [line.strip() for line in snippet.mall_tag(f"http://127.0.0.1:{port}").splitlines()]
        [dashboard] = re.findall(r"^Dashboard:\n  (\S+)", printed, re.M)
        key = (data / "mall_api_key").read_text().strip()

        page = chromium.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        with page.expect_response(lambda r: r.url.endswith("/e") and r.request.method == "POST") as sent:
            page.goto(page_origin + "/")
        assert sent.value.status == 204, sent.value.text()
        assert errors == []

        body = {"metrics": ["visitors", "pageviews"], "date_range": "day"}
        deadline = time.monotonic() + 30
        while True:
            res = httpx.post(f"http://127.0.0.1:{port}/api/v2/query", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)
            assert res.status_code == 200, res.text
            if res.json()["results"][0]["metrics"] == [1, 1] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert res.json()["results"][0]["metrics"] == [1, 1]

        page.goto(dashboard)
        page.fill("#key", key)
        page.press("#key", "Enter")
        page.wait_for_selector("body[data-loaded='1']", timeout=90_000)
        assert page.inner_text(".card[data-metric='visitors'] .value") == "1"
        assert page.inner_text(".card[data-metric='pageviews'] .value") == "1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
