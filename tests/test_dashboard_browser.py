"""The dashboards in headless Chromium over a seeded data set: what a marketer and a partner see.

Beacon runs in its own process (tests/browser/dash_launcher.py) on plain http, with Chromium
resolving `*.test` to 127.0.0.1: the mall at http://shop.test:<port>/dashboard, partner "a"
on its own host http://ads.a.test:<port>/dashboard. Every number the page shows is checked
against `POST /api/v2/query` with the same body (built by beacon.dashboard.panels).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from beacon import partners as reg
from beacon.dashboard import panels
from beacon.dashboard.session import Sessions, fingerprint

from .conftest import free_port
from .test_browser import CHROMIUM_ARGS, find_chromium

HERE = Path(__file__).parent
# The README's screenshots: refreshed with BEACON_SCREENSHOTS=1 (otherwise taken into the test's tmp dir).
DOCS = HERE.parent / "docs"


def shot_dir(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("BEACON_SCREENSHOTS") == "1" else tmp_path


MALL_KEY = "dashboard-browser-mall-key"
A_KEY = "bpk_dashboard-browser-partner-a"
B_KEY = "bpk_dashboard-browser-partner-b"
SECRET = "dashboard-browser-secret-0123456789abcdef0123"
SEED = {"mall": [6000, 900, "mallvisitor-"], "a": [1500, 300, "avisitor-"], "b": [800, 200, "bvisitor-"]}


class Server:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        partners_file = root / "partners.toml"
        partners_file.write_text(f"""
[[partner]]
id = "a"
name = "Partner A"
hosts = ["ads.a.test"]
api_key_sha256 = "{reg.hash_key(A_KEY)}"
cookie_name = "a_uid"

[[partner]]
id = "b"
name = "Partner B"
hosts = ["ads.b.test"]
api_key_sha256 = "{reg.hash_key(B_KEY)}"
cookie_name = "b_uid"
""")
        cfg = {
            "data_dir": str(root / "data"),
            "port": self.port,
            "partners_file": str(partners_file),
            "api_key": MALL_KEY,
            "secret_key": SECRET,
            "seed": SEED,
        }
        (root / "dash.json").write_text(json.dumps(cfg))
        self.log_path = root / "beacon.log"
        log = open(self.log_path, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "browser" / "dash_launcher.py"), str(root / "dash.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", headers={"host": "shop.test"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("Beacon did not start:\n" + self.log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.1)

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def query(self, body: dict[str, Any], key: str = MALL_KEY, host: str = "shop.test") -> dict[str, Any]:
        """The API answer for `body`, read on the mall host (the API's host) with a mall or partner key."""
        res = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v2/query", json=body, timeout=30, headers={"host": host, "authorization": f"Bearer {key}"}
        )
        assert res.status_code == 200, res.text
        return res.json()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Server(tmp_path_factory.mktemp("dashboard"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Any:
    path = find_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
    pw = sync_api.sync_playwright().start()
    b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


class Tab:
    """One fresh browser context on one origin: every request, response body and console error kept."""

    def __init__(self, browser: Any, origin: str, timezone: str | None = None) -> None:
        self.origin = origin
        zone = {"timezone_id": timezone} if timezone else {}  # Chromium's time zone (CDP Emulation.setTimezoneOverride)
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900}, **zone)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.bodies: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("response", self._keep_body)
        self.page.on("console", lambda m: self.errors.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _keep_body(self, response: Any) -> None:
        try:
            self.bodies.append(response.text())
        except Exception:  # noqa: BLE001 - redirects and downloads have no body to read
            pass

    def goto(self, path: str) -> Any:
        return self.page.goto(self.origin + path)

    def sign_in(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.press("#key", "Enter")  # the keyboard, as a user would
        self.loaded()

    def loaded(self) -> None:
        # The first view of a range computes the visits rollup of its days and of the previous
        # period's (beacon/query/rollup.py), ~0.4-0.8 s a day on a shared 2-core machine: a 30-day
        # view of the 40 seeded days is ~40 such days, once.
        self.page.wait_for_selector("body[data-loaded='1']", timeout=90_000)

    def state(self) -> panels.State:
        params = parse_qs(urlsplit(self.page.url).query)

        class Params(dict):
            def getlist(self, name: str) -> list[str]:
                return params.get(name, [])

        return panels.parse_state(Params({k: v[0] for k, v in params.items()}), dt.datetime.now(dt.timezone.utc).date())

    def card(self, metric: str) -> str:
        return self.page.inner_text(f".card[data-metric='{metric}'] .value")

    def column(self, panel: str) -> list[str]:
        return self.page.eval_on_selector_all(f"[data-panel='{panel}'] tbody tr td:first-child", "cells => cells.map(c => c.textContent)")

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"console errors: {self.errors}"
        foreign = [u for u in self.requests if not u.startswith(self.origin + "/")]
        assert foreign == [], f"requests left the origin: {foreign}"


def shown(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def expect_headline(tab: Tab, server: Server, key: str = MALL_KEY, host: str = "shop.test") -> dict[str, Any]:
    answer = server.query(panels.totals_body(tab.state()), key, host)
    values = dict(zip(panels.HEADLINE, answer["results"][0]["metrics"]))
    for metric in ("visitors", "visits", "pageviews"):
        assert tab.card(metric) == shown(values[metric]), metric
    assert values["visitors"] > 0
    # Conversions light up when the API answers them (issue 12), and say so until then.
    res = httpx.post(
        f"http://127.0.0.1:{server.port}/api/v2/query",
        json=panels.totals_body(tab.state(), panels.HEADLINE + panels.COMMERCE),
        headers={"host": host, "authorization": f"Bearer {key}"},
        timeout=30,
    )
    if res.status_code != 200:  # a 400 before issue 12's metrics, or any failure of the API
        assert tab.card("conversions") == tab.card("total_revenue") == "not available"
    else:
        commerce = dict(zip(panels.HEADLINE + panels.COMMERCE, res.json()["results"][0]["metrics"]))
        assert tab.card("conversions") == shown(commerce["conversions"])
        revenue = ", ".join(f"{c} {float(v):,.2f}" for c, v in commerce["total_revenue"].items())
        assert tab.card("total_revenue") == (revenue or "0")  # no purchase: no currency
    return values


def expect_lists(tab: Tab, server: Server, key: str = MALL_KEY, host: str = "shop.test") -> None:
    """Each list panel shows the API's rows for the page's state (a panel the API cannot answer says so)."""
    state = tab.state()
    for panel in panels.LISTS.values():
        if panel.name == "props":
            continue
        res = httpx.post(
            f"http://127.0.0.1:{server.port}/api/v2/query",
            json=panels.list_body(panel, state),
            headers={"host": host, "authorization": f"Bearer {key}"},
            timeout=30,
        )
        box = f"[data-panel='{panel.name}']"
        if res.status_code != 200:
            assert tab.page.inner_text(f"{box} .na") == "Not available", panel.name
            continue
        assert res.status_code == 200, res.text
        expected = [str(r["dimensions"][0]) or "(none)" for r in res.json()["results"]]
        assert tab.column(panel.name) == (expected or ["No data for this period."]), panel.name


def test_the_mall_dashboard_shows_the_api_numbers_filters_exports_and_signs_out(browser: Any, server: Server, tmp_path: Path) -> None:
    tab = Tab(browser, server.origin("shop.test"))
    tab.goto("/dashboard")
    assert tab.page.is_visible("form.signin")
    tab.sign_in(MALL_KEY)
    assert tab.page.url == tab.origin + "/dashboard"
    expect_headline(tab, server)
    expect_lists(tab, server)
    assert tab.page.is_visible("[data-panel='series'] canvas")  # uPlot drew the time series
    assert len(tab.page.query_selector_all("[data-panel='series'] details tbody tr")) == 7  # its table
    assert re.fullmatch(r"\d+", tab.page.inner_text("#realtime b"))
    tab.page.screenshot(path=str(shot_dir(tmp_path) / "dashboard-mall.png"), full_page=True)

    # Click a source: the whole page is filtered by it, and the URL says so.
    tab.page.click("[data-panel='sources'] tbody a:text-is('Google')")
    tab.loaded()
    assert "f=visit%3Asource%3DGoogle" in tab.page.url
    assert tab.column("sources") == ["Google"]
    assert tab.column("channels") == ["Organic Search"]
    assert "Source is Google" in tab.page.inner_text("#filters")
    expect_headline(tab, server)
    expect_lists(tab, server)

    # The keyboard alone: remove the filter with its chip, then put it back by tabbing to the row.
    tab.page.focus("#filters a.chip")
    tab.page.keyboard.press("Enter")
    tab.loaded()
    assert "f=" not in tab.page.url and len(tab.column("sources")) > 1
    tab.page.focus("[data-panel='channels'] tbody a")
    tab.page.keyboard.press("Shift+Tab")
    tab.page.keyboard.press("Shift+Tab")  # back over the sources panel's CSV link to its last row
    assert tab.page.evaluate("document.activeElement.closest('[data-panel]').dataset.panel") == "sources"
    tab.page.goto(tab.origin + "/dashboard?f=visit%3Asource%3DGoogle")
    tab.loaded()

    # Change the range: the filter stays; the numbers follow.
    tab.page.select_option("#period", "30d")
    tab.page.click("#controls button[type='submit']:text-is('Apply')")
    tab.page.wait_for_url(re.compile(r"period=30d"))
    tab.loaded()
    assert "f=visit%3Asource%3DGoogle" in tab.page.url
    expect_headline(tab, server)
    today = dt.datetime.now(dt.timezone.utc).date()
    tab.page.select_option("#period", "custom")
    tab.page.fill("#from", (today - dt.timedelta(days=13)).isoformat())
    tab.page.fill("#to", today.isoformat())
    tab.page.click("#controls button[type='submit']:text-is('Apply')")
    tab.page.wait_for_url(re.compile(r"period=custom"))
    tab.loaded()
    assert len(tab.page.query_selector_all("[data-panel='series'] details tbody tr")) == 14
    expect_headline(tab, server)

    # Export a panel as CSV: the rows of the API, for this state.
    with tab.page.expect_download() as info:
        tab.page.click("[data-panel='pages'] a.csv")
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    answer = server.query(panels.list_body(panels.LISTS["pages"], tab.state(), 10_000))
    assert rows[0] == ["event:page", "visitors", "pageviews"]
    assert rows[1:] == [[str(x) for x in r["dimensions"] + r["metrics"]] for r in answer["results"]]

    # The operators' page, then sign out.
    tab.goto("/dashboard/ops")
    tab.loaded()
    assert "Redis answers" in tab.page.inner_text("#ops")
    tab.page.click("text=Sign out")
    tab.page.wait_for_selector("form.signin")
    tab.goto("/dashboard")
    assert tab.page.is_visible("form.signin")
    tab.close()


def test_a_partner_sees_only_its_scope(browser: Any, server: Server, tmp_path: Path) -> None:
    tab = Tab(browser, server.origin("ads.a.test"))
    tab.goto("/dashboard")
    tab.sign_in(A_KEY)
    assert "Partner A" in tab.page.inner_text("header")
    partner = expect_headline(tab, server, A_KEY)
    mall = server.query(panels.totals_body(tab.state()))["results"][0]["metrics"][0]
    assert partner["visitors"] != mall
    expect_lists(tab, server, A_KEY)
    tab.page.screenshot(path=str(shot_dir(tmp_path) / "dashboard-partner.png"), full_page=True)
    with tab.page.expect_download() as info:
        tab.page.click("[data-panel='sources'] a.csv")
    exported = Path(info.value.path()).read_text()
    seen = "\n".join([tab.page.content(), exported, *tab.bodies, *tab.requests])
    for other in ("mallvisitor-", "bvisitor-", "avisitor-", MALL_KEY, "Partner B"):
        assert other not in seen, other
    session = {c["name"]: c["value"] for c in tab.context.cookies()}
    assert list(session) == ["beacon_dash_a"]
    ops = httpx.get(f"http://127.0.0.1:{server.port}/dashboard/ops", cookies=session, headers={"host": "ads.a.test"})
    assert ops.status_code == 404  # with its session: no operators' page for a partner
    tab.close()


def test_a_wrong_key_and_an_expired_session_get_the_sign_in_page(browser: Any, server: Server) -> None:
    tab = Tab(browser, server.origin("shop.test"))
    tab.goto("/dashboard")
    tab.page.fill("#key", "not-the-key")
    tab.page.press("#key", "Enter")
    tab.page.wait_for_selector("text=That key does not open this dashboard.")
    tab.errors = [e for e in tab.errors if "401" not in e]  # the refused sign-in answers 401, as it should
    assert tab.page.is_visible("form.signin")
    stale = Sessions((SECRET,), 8 * 3600).dumps("mall", fingerprint(MALL_KEY), issued_at=time.time() - 9 * 3600)
    tab.context.add_cookies(
        [{"name": "beacon_dash", "value": stale, "domain": "shop.test", "path": "/dashboard", "httpOnly": True, "sameSite": "Strict"}]
    )
    tab.goto("/dashboard")
    assert tab.page.is_visible("text=Your session expired; sign in again.")
    assert tab.page.is_visible("form.signin")
    tab.close()


def test_the_chart_reads_utc_days_in_any_time_zone(browser: Any, server: Server) -> None:
    """The table and the range line are UTC days; so are the chart's axis and legend, in Los Angeles too."""
    charts = {}
    for timezone in ("UTC", "America/Los_Angeles"):
        tab = Tab(browser, server.origin("shop.test"), timezone)
        tab.goto("/dashboard?period=7d")
        tab.sign_in(MALL_KEY)
        assert tab.page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == timezone
        days = tab.page.eval_on_selector_all(
            "[data-panel='series'] details tbody tr td:first-child", "cells => cells.map(c => c.textContent)"
        )
        assert len(days) == 7
        charts[timezone] = tab.page.locator("[data-panel='series'] canvas").screenshot()  # the axis's labels are drawn in it
        over = tab.page.locator("[data-panel='series'] .u-over")
        box = over.bounding_box()
        legend = "[data-panel='series'] .u-legend .u-series:first-child .u-value"
        for i in (0, 6):  # the first and the last day, under the pointer
            over.hover(position={"x": 1 + i * (box["width"] - 2) / 6, "y": box["height"] / 2})
            assert tab.page.inner_text(legend) == days[i], (timezone, i)
        tab.close()
    assert charts["America/Los_Angeles"] == charts["UTC"]


def test_the_period_select_waits_for_enter_or_apply_from_the_keyboard(browser: Any, server: Server) -> None:
    """Arrow keys only move the choice (WCAG 3.2.2), so "Custom" is reachable; Enter or Apply applies it."""
    tab = Tab(browser, server.origin("shop.test"))
    tab.goto("/dashboard")
    tab.sign_in(MALL_KEY)
    url = tab.page.url
    tab.page.focus("#period")
    tab.page.keyboard.press("ArrowDown")
    assert tab.page.input_value("#period") == "30d"
    tab.page.keyboard.press("ArrowDown")
    assert tab.page.input_value("#period") == "custom" and tab.page.is_visible("#from")
    tab.page.wait_for_timeout(500)
    assert tab.page.url == url  # still the page it was, nothing reloaded
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=2)
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.id") == "from"
    tab.page.keyboard.type(start.strftime("%m%d%Y"))  # the date field's segments, in the context's en-US order
    tab.page.keyboard.press("Tab")
    while tab.page.evaluate("document.activeElement.id") != "to":  # past the from field's own segments
        tab.page.keyboard.press("Tab")
    tab.page.keyboard.type(today.strftime("%m%d%Y"))
    tab.page.focus("#controls button[type='submit']")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_url(re.compile(r"period=custom"))
    tab.loaded()
    assert f"from={start}" in tab.page.url and f"to={today}" in tab.page.url
    assert len(tab.page.query_selector_all("[data-panel='series'] details tbody tr")) == 3
    # Enter on the select applies what the arrows chose.
    tab.page.focus("#period")
    tab.page.keyboard.press("ArrowUp")
    tab.page.wait_for_timeout(300)
    assert "period=custom" in tab.page.url
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_url(re.compile(r"period=30d"))
    tab.loaded()
    # A choice made with the pointer still applies at once.
    tab.page.dispatch_event("#period", "pointerdown")
    tab.page.select_option("#period", "day")
    tab.page.wait_for_url(re.compile(r"period=day"))
    tab.loaded()
    tab.close()


def test_a_view_with_too_many_filters_says_so_instead_of_showing_another(browser: Any, server: Server) -> None:
    tab = Tab(browser, server.origin("shop.test"))
    tab.goto("/dashboard")
    tab.sign_in(MALL_KEY)
    google = "f=visit%3Asource%3DGoogle"
    tab.goto("/dashboard?" + "&".join([google] * 12))
    tab.loaded()
    assert tab.page.inner_text("#filters").count("Source is Google") == 1  # twelve copies are one filter
    assert tab.column("sources") == ["Google"]
    eleven = "&".join([google, *(f"f=event%3Apage%3D%2Fp{i}" for i in range(10))])
    tab.goto(f"/dashboard?{eleven}")
    tab.loaded()
    tab.errors = [e for e in tab.errors if "400" not in e]  # the page itself answers 400, as it should
    assert "at most 10 different filters, not 11" in tab.page.inner_text("[role='alert']")
    assert tab.page.query_selector_all("[data-panel]") == []
    assert tab.page.inner_text("#filters").count(" is ") == 11  # each one removable with its chip
    tab.page.click("#filters a.chip >> nth=0")
    tab.loaded()
    assert tab.page.query_selector("[role='alert']") is None and tab.page.is_visible("[data-panel='headline']")
    tab.close()
