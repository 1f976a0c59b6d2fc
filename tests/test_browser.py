"""beacon.js in a real browser: headless Chromium, Beacon over real TLS, a mall page with two partners' ads.

Names resolve through Chromium's `--host-resolver-rules` (`*.test` -> 127.0.0.1):

- `https://shop.test:<page>/t/<token>/`: the mall page (tests/browser/site.py) with the
  README's mall tag (beacon/snippet.py): beacon.js from `https://beacon.shop.test:<beacon>`
  (the mall scope, cookie `bcn`, Domain=shop.test), and two ad iframes
  `https://ads.<a|b>.test:<ad>/ad.html`;
- each ad carries the README's partner tag: beacon.js from `https://ads.<a|b>.test:<beacon>`
  with `data-partner`, and the opt-out link. Partner "a": cookie `a_uid`, host-only,
  SameSite=None; partner "b": cookie `b_uid`, the same plus Partitioned (CHIPS);
- Beacon itself runs in its own process (tests/browser/launcher.py: embedded Redis,
  chDB, flusher, uvicorn with TLS), since chDB allows one engine per process.

Each visitor is a fresh Chromium profile. By default it allows third-party cookies, as
Chrome's default profile does; one test blocks them (what this Chromium, incognito
windows and most other browsers do) to show what a partner gets then.

Chromium: /usr/bin/chromium, installed with apt-get when missing and running as root;
otherwise the browser tests are skipped. Python: `playwright` (its bundled driver only,
never `playwright install`) and `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from beacon import partners as reg
from beacon import snippet

from .conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP *.test 127.0.0.1",
    "--ignore-certificate-errors",  # the throwaway certificate; Python clients verify it properly
]
HERE = Path(__file__).parent
SCRIPT = HERE.parent / "beacon" / "static" / "beacon.js"
MALL_KEY = "browser-test-mall-api-key"
A_KEY = "bpk_browser-test-partner-a"
B_KEY = "bpk_browser-test-partner-b"
SECRET = "browser-test-secret-0123456789abcdef0123456789"
SOON_AFTER_BEACON_JS = """if (location.hostname == "shop.test") var t = setInterval(function () {
  if (window.beacon && beacon.l) clearInterval(t), history.pushState({}, "", "?step=2"), beacon("event", "add_to_cart");
}, 1)"""
GPC_SCRIPT = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true, configurable: true})"


def test_the_script_stays_small():
    source = SCRIPT.read_bytes()
    assert len(source) < 2048, len(source)  # as served, readable; about 1.3 KB minified
    assert len(gzip.compress(source, 9)) < 1200


def test_the_readme_shows_the_tags_these_tests_load():
    """The pages below carry beacon/snippet.py's tags; the README must show the same, verbatim."""
    readme = (HERE.parent / "README.md").read_text()
    assert f"```html\n{snippet.mall_tag('https://beacon.shop.example')}\n```" in readme
    assert f"```html\n{snippet.partner_tag('https://ads.adco.example')}\n```" in readme
    assert "sendBeacon(" not in readme and '<img src="https://beacon.shop.example/p.gif"' not in readme


# -- the stack: Chromium, Beacon over TLS, the two static sites --------------------------------------------


def find_chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK) and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
            "not installed automatically unless running as root with apt-get)"
        )
    return CHROMIUM


class Stack:
    """Beacon (a subprocess) and the static sites, with ways to read what was stored."""

    def __init__(self, root: Path) -> None:
        from tests.browser.site import Site, make_certificate

        self.root = root
        self.certfile, self.keyfile = make_certificate(root)
        self.port = free_port()
        self.rows_port = free_port()
        self.site = Site(self.certfile, self.keyfile, self.port)
        partners_file = root / "partners.toml"
        # A partner's POST /e comes from its ad iframe: its Origin is the ad's, not the mall page's.
        partners_file.write_text(f"""
[[partner]]
id = "a"
name = "Partner A"
hosts = ["ads.a.test"]
origins = ["{self.site.ad_origin("a")}"]
api_key_sha256 = "{reg.hash_key(A_KEY)}"
cookie_name = "a_uid"

[[partner]]
id = "b"
name = "Partner B"
hosts = ["ads.b.test"]
origins = ["{self.site.ad_origin("b")}"]
api_key_sha256 = "{reg.hash_key(B_KEY)}"
cookie_name = "b_uid"
cookie_partitioned = true
""")
        cfg = {
            "data_dir": str(root / "data"),
            "port": self.port,
            "certfile": str(self.certfile),
            "keyfile": str(self.keyfile),
            "partners_file": str(partners_file),
            "site_origin": self.site.page_origin,
            "api_key": MALL_KEY,
            "secret_key": SECRET,
            "rows_port": self.rows_port,
        }
        (root / "launcher.json").write_text(json.dumps(cfg))
        self.log_path = root / "beacon.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "browser" / "launcher.py"), str(root / "launcher.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,
            env=env,
        )
        self.tls = ssl.create_default_context(cafile=str(self.certfile))
        self.http = httpx.Client(verify=self.tls, timeout=15)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("Beacon did not start:\n" + self.log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.1)

    def get(self, path: str, key: str = "") -> httpx.Response:
        """GET from Beacon's mall host, verifying its certificate for beacon.shop.test."""
        headers = {"host": f"beacon.shop.test:{self.port}"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return self.http.request(
            "GET", f"https://127.0.0.1:{self.port}{path}", headers=headers, extensions={"sni_hostname": "beacon.shop.test"}
        )

    def rows(self, token: str) -> list[dict[str, Any]]:
        """Stored rows whose URL holds `token`, after every answered event was flushed."""
        res = httpx.get(f"http://127.0.0.1:{self.rows_port}/rows", params={"q": token}, timeout=30)
        res.raise_for_status()
        return res.json()

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.site.close()


@pytest.fixture(scope="module")
def chromium_type() -> Any:
    path = find_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
    pytest.importorskip("cryptography", reason="browser tests need `pip install cryptography`")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    major = "".join(ch for ch in version.split(".")[0] if ch.isdigit()) or "140"
    # Chromium's headless user agent says HeadlessChrome, which Beacon (rightly) flags as a bot
    user_agent = f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    pw = sync_api.sync_playwright().start()
    yield pw.chromium, path, user_agent
    pw.stop()


@pytest.fixture(scope="module")
def stack(chromium_type: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Stack(tmp_path_factory.mktemp("browser"))
    yield s
    s.close()


class Visitor:
    """One browser profile on the mall, every request it makes recorded."""

    def __init__(
        self, chromium: Any, stack: Stack, profile: Path, third_party_cookies: bool = True, gpc: bool = False, init_script: str = ""
    ) -> None:
        self.stack = stack
        (profile / "Default").mkdir(parents=True)
        # cookie_controls_mode: 0 = allow third-party cookies (Chrome's default), 1 = block them
        (profile / "Default" / "Preferences").write_text(json.dumps({"profile": {"cookie_controls_mode": 0 if third_party_cookies else 1}}))
        browser_type, executable, user_agent = chromium
        self.context = browser_type.launch_persistent_context(
            str(profile),
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            user_agent=user_agent,
            extra_http_headers={"Sec-GPC": "1"} if gpc else None,
        )
        if gpc:
            self.context.add_init_script(GPC_SCRIPT)
        if init_script:
            self.context.add_init_script(init_script)
        self.requests: list[Any] = []
        self.finished: set[Any] = set()
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r))
        self.context.on("requestfinished", lambda r: self.finished.add(r))
        self.context.on("requestfailed", lambda r: self.finished.add(r))
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def close(self) -> None:
        self.context.close()

    def hits(self, host: str, path: str) -> list[Any]:
        """Finished requests to Beacon at https://<host>:<beacon port><path>."""
        out = []
        for r in self.requests:
            u = urlsplit(r.url)
            if u.hostname == host and u.port == self.stack.port and u.path == path and r in self.finished:
                out.append(r)
        return out

    def wait(self, what: str, condition: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; requests: {[(r.method, r.url[:100], r in self.finished) for r in self.requests]}"
                )
            self.page.wait_for_timeout(20)  # lets Playwright deliver its events

    def wait_hits(self, **counts: int) -> None:
        """wait_hits(mall_e=1, a_e=1, b_e=1): at least that many finished requests of each."""
        where = {
            "mall_e": ("beacon.shop.test", "/e"),
            "mall_gif": ("beacon.shop.test", "/p.gif"),
            "a_e": ("ads.a.test", "/e"),
            "b_e": ("ads.b.test", "/e"),
        }
        self.wait(f"beacon requests {counts}", lambda: all(len(self.hits(*where[k])) >= n for k, n in counts.items()))
        self.wait(
            "every request to Beacon to finish",
            lambda: all(r in self.finished for r in self.requests if urlsplit(r.url).port == self.stack.port),
        )

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("window.beacon && window.beacon.l")

    def ad_frame(self, partner: str = "a") -> Any:
        [frame] = [f for f in self.page.frames if urlsplit(f.url).hostname == f"ads.{partner}.test"]
        frame.wait_for_function("window.beacon && window.beacon.l")
        return frame

    def cookies(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.context.cookies() if c["name"] == name]

    def set_cookies(self, host: str) -> list[str]:
        """Set-Cookie headers Beacon answered on `host`."""
        out = []
        for r in self.requests:
            u = urlsplit(r.url)
            if u.hostname == host and u.port == self.stack.port and r.response() is not None:
                out += [h["value"] for h in r.response().headers_array() if h["name"].lower() == "set-cookie"]
        return out


@pytest.fixture
def visitor(chromium_type: Any, stack: Stack, tmp_path: Path) -> Any:
    made: list[Visitor] = []

    def make(**options: Any) -> Visitor:
        v = Visitor(chromium_type, stack, tmp_path / f"profile-{len(made)}", **options)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()
    for v in made:
        assert v.errors == [], f"beacon.js threw into the page: {v.errors}"


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def uid(cookie: dict[str, Any]) -> str:
    return cookie["value"].split(".")[0]


def events(rows: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["scope"] == scope]


# -- the tests ---------------------------------------------------------------------------------------------


def test_each_cookie_stays_in_its_own_scope_and_the_events_land(stack, visitor):
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    v = visitor()
    token = new_token()
    page, ad_a, ad_b = stack.site.page_url(token), stack.site.ad_url(token, "a"), stack.site.ad_url(token, "b")
    v.open(page)
    v.wait_hits(mall_e=1, a_e=1, b_e=1)
    v.page.reload()
    v.wait_hits(mall_e=2, a_e=2, b_e=2)

    [bcn] = v.cookies("bcn")
    assert (bcn["domain"], bcn["path"], bcn["secure"], bcn["httpOnly"], bcn["sameSite"]) == (".shop.test", "/", True, True, "Lax")
    [a_uid] = v.cookies("a_uid")
    assert (a_uid["domain"], a_uid["path"], a_uid["secure"], a_uid["httpOnly"], a_uid["sameSite"]) == (
        "ads.a.test",
        "/",
        True,
        True,
        "None",
    )
    [b_set] = {h for h in v.set_cookies("ads.b.test") if h.startswith("b_uid=")}
    assert "; Partitioned" in b_set and "; SameSite=None" in b_set

    # on the wire: no request to a partner's host carried the mall cookie, and the other way round
    to_partner = [r for r in v.requests if urlsplit(r.url).hostname in ("ads.a.test", "ads.b.test")]
    to_mall = [r for r in v.requests if urlsplit(r.url).hostname.endswith("shop.test")]
    assert to_partner and to_mall
    for r in to_partner:
        assert "bcn=" not in r.all_headers().get("cookie", ""), r.url
    for r in to_mall:
        assert "a_uid=" not in r.all_headers().get("cookie", "") and "b_uid=" not in r.all_headers().get("cookie", "")
    # the reload's beacons carried their own scope's cookie (credentials: "include")
    assert f"bcn={bcn['value']}" in v.hits("beacon.shop.test", "/e")[-1].all_headers()["cookie"]
    assert f"a_uid={a_uid['value']}" in v.hits("ads.a.test", "/e")[-1].all_headers()["cookie"]
    assert "b_uid=" in v.hits("ads.b.test", "/e")[-1].all_headers()["cookie"]

    rows = stack.rows(token)
    mall, a, b = events(rows, "mall"), events(rows, "a"), events(rows, "b")
    assert len(rows) == len(mall) + len(a) + len(b)
    assert not any(r["is_bot"] for r in rows)
    # one request per page load: the pageview and the call queued before load, under one id
    assert [(r["event"], r["url"], r["referrer"], r["props"], r["transport"], r["visitor_id"]) for r in mall] == [
        ("pageview", page, "", {}, "beacon", uid(bcn)),
        ("queued_before_load", page, "", {"n": "1"}, "beacon", uid(bcn)),
    ] * 2
    # each ad: one pageview per page load, the mall's origin as referrer, one id from the first hit on
    assert [(r["event"], r["url"], r["referrer"], r["visitor_id"]) for r in a] == [
        ("pageview", ad_a, stack.site.page_origin + "/", uid(a_uid))
    ] * 2
    assert [(r["event"], r["url"], r["referrer"]) for r in b] == [("pageview", ad_b, stack.site.page_origin + "/")] * 2
    assert len({r["visitor_id"] for r in b}) == 1
    ids = [{r["visitor_id"] for r in rows_} for rows_ in (mall, a, b)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])

    # the public read APIs: the mall's stats, each partner's own events
    stats = stack.get(f"/api/v1/stats?from={quote(started.isoformat())}", key=MALL_KEY).json()
    assert stats["totals"] == {"events": 4, "pageviews": 2, "visitors": 1}
    assert stats["top_pages"] == [{"url": page, "pageviews": 2}]
    for pid, key, mine in (("a", A_KEY, a), ("b", B_KEY, b)):
        listed = stack.get(f"/api/v1/partners/{pid}/events?limit=1000", key=key).json()["events"]
        assert sorted((e["event"], e["visitor_id"]) for e in listed if token in e["url"]) == sorted(
            (r["event"], r["visitor_id"]) for r in mine
        )
    assert stack.get("/api/v1/partners/a/events", key=MALL_KEY).status_code == 401
    assert stack.get("/api/v1/partners/a/events", key=B_KEY).status_code == 403


def test_ten_new_browsers_are_ten_visitors_in_every_scope(stack, visitor):
    """The README's tags, verbatim, in 10 fresh profiles: one pageview per page load and ad, and
    one id per scope, even for partner a, whose ad is on the page twice (two frames racing)."""
    token = new_token()
    for _ in range(10):
        v = visitor()
        v.open(stack.site.page_url(token, "twoslots"))
        v.wait_hits(mall_e=1, a_e=2, b_e=1)
        v.close()
    rows = stack.rows(token)
    for scope, pageviews in (("mall", 10), ("a", 20), ("b", 10)):
        mine = events(rows, scope)
        assert len({r["visitor_id"] for r in mine}) == 10, scope
        assert sum(r["event"] == "pageview" for r in mine) == pageviews, scope


def test_events_sent_while_the_first_request_is_in_flight_wait_for_its_cookie(stack, visitor):
    """A router's pushState or a click right after load, before the first answer (held 0.5 s
    here, see tests/browser/launcher.py): the second request waits, so it carries the id."""
    v = visitor(init_script=SOON_AFTER_BEACON_JS)
    token = new_token()
    v.open(stack.site.page_url(token, "slowfirst"))
    v.wait_hits(mall_e=2)
    mall = events(stack.rows(token), "mall")
    assert sorted(r["event"] for r in mall) == ["add_to_cart", "pageview", "pageview", "queued_before_load"]
    [bcn] = v.cookies("bcn")
    assert {r["visitor_id"] for r in mall} == {uid(bcn)}
    # the two held events went together, after the first answer, with its cookie
    [one, two] = v.hits("beacon.shop.test", "/e")
    assert "cookie" not in one.all_headers() and "bcn=" in two.all_headers()["cookie"]


def test_spa_navigation_sends_a_pageview_per_url(stack, visitor):
    v = visitor()
    token = new_token()
    first, second = stack.site.page_url(token), stack.site.page_url(token, "cart?step=2")
    v.open(first)
    v.wait_hits(mall_e=1)
    v.page.evaluate("history.pushState({}, '', 'cart?step=2')")
    v.wait_hits(mall_e=2)
    v.page.evaluate("history.replaceState({x: 1}, '', location.href)")  # same URL: no pageview
    v.page.evaluate("history.back()")  # popstate
    v.wait_hits(mall_e=3)
    v.page.wait_for_timeout(150)
    assert len(v.hits("beacon.shop.test", "/e")) == 3
    pageviews = [(r["url"], r["referrer"]) for r in events(stack.rows(token), "mall") if r["event"] == "pageview"]
    assert pageviews == [(first, ""), (second, first), (first, second)]


def test_custom_events_land_and_bad_calls_neither_throw_nor_send(stack, visitor):
    v = visitor()
    token = new_token()
    v.open(stack.site.page_url(token))
    v.wait_hits(mall_e=1)
    v.page.evaluate("""() => {
        beacon('event', 'bad name!', {sku: 'X'});
        beacon('event', 'x'.repeat(65));
        beacon('event', 42);
        beacon('event');
        beacon();
        beacon('unknown-command', 1, 2);
        beacon('event', 'add_to_cart', {sku: 'X', qty: 2, gift: true, nested: {a: 1}, list: [1], nan: NaN,
                                         'bad key': 1, fn: () => 1});
    }""")
    v.wait_hits(mall_e=2)
    v.page.wait_for_timeout(150)
    assert len(v.hits("beacon.shop.test", "/e")) == 2
    [cart] = [r for r in events(stack.rows(token), "mall") if r["event"] == "add_to_cart"]
    assert cart["props"] == {"sku": "X", "qty": "2", "gift": "true"}
    assert cart["url"] == stack.site.page_url(token) and cart["transport"] == "beacon"


PURCHASE = (
    "beacon('purchase', {order_id: 'O-77', revenue: 59.9, currency: 'EUR', coupon: 'SUMMER', gift: true, "
    "items: [{sku: 'X-1', name: 'Boot', quantity: 2, price: '19.95'}, {sku: 'Y-2', price: 20}]})"
)


def test_beacon_purchase_sends_a_typed_order(stack, visitor):
    v = visitor()
    token = new_token()
    v.open(stack.site.page_url(token))
    v.wait_hits(mall_e=1)
    v.page.evaluate(PURCHASE)
    v.wait_hits(mall_e=2)
    [order] = [r for r in events(stack.rows(token), "mall") if r["event"] == "purchase"]
    got = tuple(order[k] for k in ("order_id", "revenue", "currency", "coupon", "items"))
    assert got == ("O-77", "59.9", "EUR", "SUMMER", 2)
    assert order["props"] == {"gift": "true"}


@pytest.mark.parametrize("partitioned", [False, True], ids=["unpartitioned", "partitioned"])
@pytest.mark.parametrize("third_party_cookies", [True, False], ids=["3p-allowed", "3p-blocked"])
def test_the_opt_out_link_in_the_ad_stops_that_partner_on_later_mall_pages(stack, visitor, partitioned, third_party_cookies):
    """The README's partner tag carries an opt-out link that opens in the ad's own frame: the
    opt-out cookie lands where that ad's requests on this mall will carry it (Beacon sets it
    both unpartitioned and partitioned), whatever the partner's cookie and the browser's setting."""
    partner, other = ("b", "a") if partitioned else ("a", "b")
    v = visitor(third_party_cookies=third_party_cookies)
    token = new_token()
    page = stack.site.page_url(token)
    v.open(page)
    v.wait_hits(mall_e=1, a_e=1, b_e=1)
    frame = v.ad_frame(partner)
    if partitioned:  # the id lives in the mall's partition: /me sees it inside the ad's frame only
        [held] = events(stack.rows(token), partner)
        elsewhere = v.context.new_page()
        assert elsewhere.goto(f"https://ads.b.test:{stack.port}/me").json()["visitor_id"] is None
        elsewhere.close()
        assert frame.goto(f"https://ads.b.test:{stack.port}/me").json()["visitor_id"] == held["visitor_id"]
        frame.goto(stack.site.ad_url(token, "b"))  # back to the ad (one more pageview)
        v.wait_hits(b_e=2)
        frame = v.ad_frame(partner)
    before = events(stack.rows(token), partner)
    assert len(before) == (2 if partitioned else 1) and len({r["visitor_id"] for r in before}) == 1
    sent_before = len(v.hits(f"ads.{partner}.test", "/e"))
    frame.get_by_text("Opt out of this advertiser").click()
    frame.wait_for_url(f"https://ads.{partner}.test:{stack.port}/optout")
    assert "You have opted out" in frame.content()
    v.open(page)  # a later mall page
    v.wait_hits(mall_e=2, a_e=2, b_e=2 + partitioned)  # the ad's beacon.js still posts; Beacon drops it
    rows = stack.rows(token)
    assert events(rows, partner) == before  # nothing since the opt-out: no row under the old id nor any other
    assert len(events(rows, other)) == 2  # the other partner is not opted out
    assert [r["event"] for r in events(rows, "mall")] == ["pageview", "queued_before_load"] * 2
    cookie = f"{partner}_uid_optout=1"
    assert all(cookie in r.all_headers().get("cookie", "") for r in v.hits(f"ads.{partner}.test", "/e")[sent_before:])


@pytest.mark.parametrize("third_party_cookies", [True, False], ids=["3p-allowed", "3p-blocked"])
def test_opting_out_on_the_partner_host_reaches_the_ads_only_with_third_party_cookies(stack, visitor, third_party_cookies):
    """Opened as a page of its own, /optout reaches the ads on the mall only through its
    unpartitioned cookie, which the browser sends in third-party frames only when it allows
    third-party cookies. Blocked, the partners go on counting (what the README says: use the
    link in the ad)."""
    v = visitor(third_party_cookies=third_party_cookies)
    token = new_token()
    page = stack.site.page_url(token)
    v.open(page)
    v.wait_hits(mall_e=1, a_e=1, b_e=1)
    for partner in ("a", "b"):
        res = v.page.goto(f"https://ads.{partner}.test:{stack.port}/optout")
        assert res.status == 200 and "text/html" in res.headers["content-type"]
    assert v.cookies("a_uid") == []
    v.open(page)
    v.wait_hits(mall_e=2, a_e=2, b_e=2)
    rows = stack.rows(token)
    a, b = events(rows, "a"), events(rows, "b")
    if third_party_cookies:
        assert "a_uid_optout=1" in v.hits("ads.a.test", "/e")[-1].all_headers().get("cookie", "")
        assert "b_uid_optout=1" in v.hits("ads.b.test", "/e")[-1].all_headers().get("cookie", "")
        assert len(a) == 1 and len(b) == 1  # the first visit's pageviews, nothing since
    else:
        assert len(a) == 2 and len({r["visitor_id"] for r in a}) == 2  # a new id per ad load, still counted
        assert len(b) == 2 and len({r["visitor_id"] for r in b}) == 1  # still counted under the old id
    assert len(events(rows, "mall")) == 4


def test_gpc_partner_sends_nothing_and_gets_no_cookie(stack, visitor):
    v = visitor(gpc=True)
    token = new_token()
    v.open(stack.site.page_url(token))
    for partner in ("a", "b"):
        assert v.ad_frame(partner).evaluate("navigator.globalPrivacyControl") is True
    v.wait_hits(mall_e=1)
    v.page.wait_for_timeout(200)
    assert v.hits("ads.a.test", "/e") == [] and v.hits("ads.b.test", "/e") == []
    to_beacon = [r for r in v.requests if urlsplit(r.url).port == stack.port]
    assert all(r.all_headers().get("sec-gpc") == "1" for r in to_beacon)
    assert v.set_cookies("ads.a.test") == [] and v.set_cookies("ads.b.test") == []
    rows = stack.rows(token)
    assert events(rows, "a") == [] and events(rows, "b") == []
    assert [r["event"] for r in events(rows, "mall")] == ["pageview", "queued_before_load"]  # the mall still counts


def test_gpc_mall_records_without_a_cookie(stack, visitor):
    """Cookieless mall mode: under Sec-GPC the mall records the page but sets no cookie."""
    v = visitor(gpc=True)
    token = new_token()
    v.open(stack.site.page_url(token))
    v.wait_hits(mall_e=1)
    mall = events(stack.rows(token), "mall")
    assert [r["event"] for r in mall] == ["pageview", "queued_before_load"]
    assert v.set_cookies("beacon.shop.test") == [] and v.cookies("bcn") == []
    assert all(r["mode"] != "cookie" for r in mall), [r["mode"] for r in mall]


def test_with_third_party_cookies_blocked_only_a_partitioned_partner_keeps_its_id(stack, visitor):
    """What most browsers do today (and this Chromium, and Chrome's incognito windows): a
    partner's unpartitioned SameSite=None cookie in the mall's page is refused, so each of its
    hits is a new visitor; a partitioned one (CHIPS) is kept, one id per top-level site.
    The mall's first-party cookie works as before."""
    v = visitor(third_party_cookies=False)
    token = new_token()
    v.open(stack.site.page_url(token))
    v.wait_hits(mall_e=1, a_e=1, b_e=1)
    v.page.reload()
    v.wait_hits(mall_e=2, a_e=2, b_e=2)
    assert v.cookies("a_uid") == []
    assert len(v.set_cookies("ads.a.test")) == 2  # Beacon offered one each time; the browser refused it
    assert len(v.set_cookies("ads.b.test")) == 1  # kept, and sent back on the reload
    rows = stack.rows(token)
    assert len({r["visitor_id"] for r in events(rows, "a")}) == 2
    assert len({r["visitor_id"] for r in events(rows, "b")}) == 1
    [bcn] = v.cookies("bcn")
    assert {r["visitor_id"] for r in events(rows, "mall")} == {uid(bcn)}
