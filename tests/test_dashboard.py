"""The dashboards' sign-in, sessions, headers and scoping, driven through the app (no browser).

The browser tests (tests/test_dashboard_browser.py) show the page itself; these show the
rules around it: who gets a session, what the cookie looks like, what each scope can open.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import pytest

from beacon import partners as reg
from beacon.dashboard.session import Sessions, fingerprint

from .conftest import API_KEY, KEY, with_partners

A_KEY, B_KEY = "bpk_dash-partner-a", "bpk_dash-partner-b"
MALL = "https://shop.test"
REGISTRY = f"""
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
"""
STATIC = Path(__file__).parent.parent / "beacon" / "dashboard" / "static"


@pytest.fixture
def dash(make_client, tmp_path):
    return with_partners(make_client, tmp_path, REGISTRY)


def sign_in(client, key=API_KEY, base=MALL, prefix=""):
    return client.post(f"{base}{prefix}/dashboard/login", data={"key": key}, headers={"origin": base}, follow_redirects=False)


def set_cookie(res):
    return res.headers.get("set-cookie", "")


def test_without_a_session_the_page_is_the_sign_in_form_under_a_strict_csp(dash):
    res = dash.get("/dashboard")
    assert res.status_code == 200
    assert '<form class="signin" method="post" action="/dashboard/login">' in res.text
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["cache-control"] == "no-store"


def test_the_mall_key_opens_a_strict_httponly_expiring_session_that_is_not_the_visitor_cookie(dash):
    res = sign_in(dash)
    assert res.status_code == 303 and res.headers["location"] == "/dashboard"
    cookie = set_cookie(res)
    name = cookie.split("=", 1)[0]
    assert name == "beacon_dash" and name != dash.app.core.settings.cookie_name
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "secure" in flags
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/dashboard"
    assert flags["max-age"] == f"Max-Age={8 * 3600}"
    page = dash.get("/dashboard")
    assert page.status_code == 200 and 'data-panel="sources"' in page.text and "Sign out" in page.text


def test_plain_http_sessions_are_not_marked_secure(dash):
    res = sign_in(dash, base="http://shop.test")
    assert res.status_code == 303
    assert "secure" not in set_cookie(res).lower()


def test_a_wrong_key_gets_the_sign_in_page_and_no_session(dash):
    for key in ("wrong", "", A_KEY):
        res = sign_in(dash, key)
        assert res.status_code == 401
        assert "That key does not open this dashboard." in res.text
        assert "beacon_dash=" not in set_cookie(res) or 'beacon_dash=""' in set_cookie(res)
    assert dash.get("/dashboard/api/panel/headline").status_code == 401


def test_sign_in_and_out_from_another_origin_are_refused(dash):
    res = dash.post("/dashboard/login", data={"key": API_KEY}, headers={"origin": "https://evil.test"}, follow_redirects=False)
    assert res.status_code == 403 and "set-cookie" not in res.headers
    res = dash.post("/dashboard/login", data={"key": API_KEY}, follow_redirects=False)  # no Origin at all
    assert res.status_code == 403
    for broken in ("http://[::1", "https://[zz]"):  # not origins at all: refused, not a 500
        assert dash.post("/dashboard/login", data={"key": API_KEY}, headers={"origin": broken}).status_code == 403
    assert sign_in(dash).status_code == 303
    assert dash.post("/dashboard/logout", headers={"origin": "https://evil.test"}).status_code == 403
    assert 'data-panel="headline"' in dash.get("/dashboard").text  # still signed in


def test_sign_out_ends_the_session(dash):
    sign_in(dash)
    res = dash.post("/dashboard/logout", headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 303
    assert set_cookie(res).startswith('beacon_dash=""') and "Max-Age=0" in set_cookie(res)
    assert "signin" in dash.get("/dashboard").text
    assert dash.get("/dashboard/api/panel/headline").status_code == 401


def test_a_copy_of_the_cookie_opens_nothing_after_sign_out(make_client, dash):
    sign_in(dash)
    token = dash.cookies.get("beacon_dash")
    assert dash.get("/dashboard/api/csv/pages").status_code == 200
    assert dash.post("/dashboard/logout", headers={"origin": MALL}, follow_redirects=False).status_code == 303
    # The copied cookie, in this app and in another worker of the same deployment (same Redis).
    for client in (dash, with_partners(make_client, dash.app.core.settings.data_dir, REGISTRY)):
        client.cookies.set("beacon_dash", token, domain="shop.test", path="/dashboard")
        page = client.get("/dashboard")
        assert "You signed out; sign in again." in page.text and 'data-panel="headline"' not in page.text
        assert client.get("/dashboard/api/panel/headline").status_code == 401
        assert client.get("/dashboard/api/csv/pages").status_code == 401
        assert client.get("/dashboard/ops/data").status_code == 401
    sign_in(dash)  # signing in again opens a new session
    assert dash.get("/dashboard/api/panel/headline").status_code == 200


def test_a_partners_copied_cookie_opens_nothing_after_sign_out(dash):
    a = "https://ads.a.test"
    sign_in(dash, A_KEY, base=a)
    token = dash.cookies.get("beacon_dash_a")
    assert dash.get(f"{a}/dashboard/api/panel/headline").status_code == 200
    assert dash.post(f"{a}/dashboard/logout", headers={"origin": a}, follow_redirects=False).status_code == 303
    dash.cookies.set("beacon_dash_a", token, domain="ads.a.test", path="/dashboard")
    assert dash.get(f"{a}/dashboard/api/panel/headline").status_code == 401
    assert dash.get(f"{a}/dashboard/api/csv/pages").status_code == 401


def test_signing_out_of_the_operators_page_ends_the_metrics_key_session(make_client):
    client = make_client(metrics_key="the-metrics-key")
    client.post("/dashboard/ops/login", data={"key": "the-metrics-key"}, headers={"origin": MALL})
    token = client.cookies.get("beacon_ops")
    page = client.get("/dashboard/ops")
    assert 'action="/dashboard/ops/logout"' in page.text  # the path the ops cookie is sent to
    res = client.post("/dashboard/ops/logout", headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 303 and 'beacon_ops=""' in set_cookie(res)
    client.cookies.set("beacon_ops", token, domain="shop.test", path="/dashboard/ops")
    assert client.get("/dashboard/ops/data").status_code == 401


def test_while_redis_is_down_sessions_are_refused_with_a_503_not_a_500(dash):
    import redis.asyncio

    from .conftest import free_port

    sign_in(dash)
    core = dash.app.core
    up = core.redis
    core.redis = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        page = dash.get("/dashboard")
        assert page.status_code == 503 and "Sessions cannot be checked while Redis is unreachable" in page.text
        for path in ("/dashboard/api/panel/headline", "/dashboard/api/csv/pages", "/dashboard/ops/data"):
            res = dash.get(path)
            assert res.status_code == 503 and "Redis is unreachable" in res.json()["error"], path
        token = dash.cookies.get("beacon_dash")
        assert dash.post("/dashboard/logout", headers={"origin": MALL}, follow_redirects=False).status_code == 303
    finally:
        core.redis = up
    assert dash.get("/dashboard/api/panel/headline").status_code == 401  # cookie cleared
    dash.cookies.set("beacon_dash", token, domain="shop.test", path="/dashboard")
    assert dash.get("/dashboard/api/panel/headline").status_code == 401  # this process remembers the sign-out


def test_behind_a_trusted_tls_proxy_the_session_cookie_is_secure(make_client, tmp_path):
    from .conftest import PEER

    behind = with_partners(make_client, tmp_path, REGISTRY, trusted_proxies=f"{PEER}/32")
    https = {"x-forwarded-proto": "https", "origin": "https://shop.test"}
    res = behind.post("http://shop.test/dashboard/login", data={"key": API_KEY}, headers=https, follow_redirects=False)
    assert res.status_code == 303 and "; secure" in set_cookie(res).lower()
    assert behind.get("http://shop.test/dashboard", headers={"x-forwarded-proto": "https"}).headers["cross-origin-opener-policy"]
    # A page on http:// cannot sign in to the https dashboard behind the proxy.
    res = behind.post(
        "http://shop.test/dashboard/login",
        data={"key": API_KEY},
        headers={"x-forwarded-proto": "https", "origin": "http://shop.test"},
        follow_redirects=False,
    )
    assert res.status_code == 403
    # Without the proxy over plain http: no Secure flag, and the header from an untrusted peer is ignored.
    assert (
        "secure"
        not in set_cookie(
            behind.post(
                "http://shop.test/dashboard/login", data={"key": API_KEY}, headers={"origin": "http://shop.test"}, follow_redirects=False
            )
        ).lower()
    )
    untrusted = with_partners(make_client, tmp_path, REGISTRY)
    res = untrusted.post("http://shop.test/dashboard/login", data={"key": API_KEY}, headers=https, follow_redirects=False)
    assert res.status_code == 303 and "secure" not in set_cookie(res).lower()


def test_an_expired_or_forged_session_gets_the_sign_in_page(dash):
    sessions = Sessions((KEY,), 8 * 3600)
    stale = sessions.dumps("mall", fingerprint(API_KEY), issued_at=time.time() - 9 * 3600)
    dash.cookies.set("beacon_dash", stale, domain="shop.test", path="/dashboard")
    res = dash.get("/dashboard")
    assert "Your session expired; sign in again." in res.text and 'data-panel="headline"' not in res.text
    assert dash.get("/dashboard/api/panel/headline").status_code == 401
    forged = Sessions(("another-secret-key-0123456789",), 3600).dumps("mall", fingerprint(API_KEY))
    dash.cookies.set("beacon_dash", forged, domain="shop.test", path="/dashboard")
    assert 'data-panel="headline"' not in dash.get("/dashboard").text


def test_a_longer_session_age_set_later_does_not_extend_a_session(dash):
    """A session ends when it was opened to end: a sign-out is remembered until then, so raising
    BEACON_DASHBOARD_SESSION_AGE afterwards must not revive a cookie that was signed out (or just old)."""
    short = Sessions((KEY,), 6).dumps("mall", fingerprint(API_KEY), issued_at=time.time() - 8)
    session, why = Sessions((KEY,), 8 * 3600).open(short, "mall", fingerprint(API_KEY))
    assert session is None and why == "Your session expired; sign in again."
    assert dash.app.core.settings.dashboard_session_age == 8 * 3600
    dash.cookies.set("beacon_dash", short, domain="shop.test", path="/dashboard")
    assert dash.get("/dashboard/api/panel/headline").status_code == 401


def test_a_rotated_mall_key_ends_its_sessions(make_client, dash):
    sign_in(dash)
    token = dash.cookies.get("beacon_dash")
    other = make_client(mall_api_key="the-new-mall-key")
    other.cookies.set("beacon_dash", token, domain="shop.test", path="/dashboard")
    assert 'data-panel="headline"' not in other.get("/dashboard").text


def test_partners_sign_in_on_their_host_or_under_their_prefix_and_reach_only_their_scope(dash):
    a = "https://ads.a.test"
    assert sign_in(dash, API_KEY, base=a).status_code == 401  # the mall key is not a partner's key
    assert sign_in(dash, B_KEY, base=a).status_code == 401  # nor is another partner's
    res = sign_in(dash, A_KEY, base=a)
    assert res.status_code == 303 and set_cookie(res).startswith("beacon_dash_a=")
    page = dash.get(f"{a}/dashboard")
    assert "Beacon · Partner A" in page.text and "/ops" not in page.text
    # A partner session is worth nothing on the mall's or another partner's dashboard.
    token = dash.cookies.get("beacon_dash_a")
    for host in ("https://shop.test", "https://ads.b.test"):
        for name in ("beacon_dash", "beacon_dash_b"):
            dash.cookies.set(name, token, domain=host.split("//")[1], path="/dashboard")
        assert 'data-panel="headline"' not in dash.get(f"{host}/dashboard").text
        assert dash.get(f"{host}/dashboard/api/panel/headline").status_code == 401
    assert dash.get(f"{a}/dashboard/ops").status_code == 404
    assert dash.get(f"{a}/dashboard/ops/data").status_code == 404
    # The fallback prefix on the mall host: its own cookie path.
    res = sign_in(dash, A_KEY, prefix="/partners/a")
    assert res.status_code == 303 and res.headers["location"] == "/partners/a/dashboard"
    assert "Path=/partners/a/dashboard" in set_cookie(res)
    assert "Beacon · Partner A" in dash.get(f"{MALL}/partners/a/dashboard").text


def test_the_operators_page_needs_the_mall_session(dash):
    assert "signin" in dash.get("/dashboard/ops").text
    assert dash.get("/dashboard/ops/data").status_code == 401
    sign_in(dash)
    assert dash.get("/dashboard/ops").status_code == 200
    ops = dash.get("/dashboard/ops/data").json()
    assert ops["redis"]["ok"] is True and ops["clickhouse"]["ok"] is True
    assert ops["stream"]["entries"] == 0 and ops["stream"]["dead_letters"] == 0
    assert set(ops) >= {"spool", "flush", "ingest", "drops"}


def test_bad_page_state_is_a_400_with_a_reason(dash):
    sign_in(dash)
    for query, word in (
        ("period=year", "period"),
        ("period=custom&from=2026-01-02", "custom"),
        ("f=visit:user_id=1", "filter"),
        ("f=nonsense", "filter"),
        ("prop=a%20b", "prop"),
    ):
        res = dash.get(f"/dashboard/api/panel/sources?{query}")
        assert res.status_code == 400 and word in res.json()["error"], query
    assert dash.get("/dashboard/api/panel/nope").status_code == 404
    assert dash.get("/dashboard/api/csv/nope").status_code == 404


def test_pages_carry_no_inline_script_or_style_and_weigh_under_200_kb_compressed(dash):
    sign_in(dash)
    html = dash.get("/dashboard").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\s(on\w+|style)=", html)
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html)
    assert len(assets) == 4
    total = len(gzip.compress(html.encode()))
    for path in assets:
        res = dash.get(path, headers={"accept-encoding": "identity"})
        assert res.status_code == 200 and "default-src 'self'" in res.headers["content-security-policy"]
        total += len(gzip.compress(res.content))
    assert total < 200_000, total
    assert (STATIC / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")


def test_operators_sign_in_on_their_page_with_the_mall_key(dash):
    page = dash.get("/dashboard/ops")
    assert 'action="/dashboard/ops/login"' in page.text
    res = dash.post("/dashboard/ops/login", data={"key": "wrong"}, headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 401 and "operators" in res.text
    res = dash.post("/dashboard/ops/login", data={"key": API_KEY}, headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/dashboard/ops"
    assert dash.get("/dashboard/ops/data").json()["redis"]["ok"] is True


def test_the_metrics_key_opens_the_operators_page_and_nothing_else(make_client):
    client = make_client(metrics_key="the-metrics-key")
    res = client.post("/dashboard/ops/login", data={"key": "the-metrics-key"}, headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 303 and "beacon_ops=" in set_cookie(res) and "Path=/dashboard/ops" in set_cookie(res)
    assert client.get("/dashboard/ops/data").status_code == 200
    assert client.get("/dashboard/api/panel/headline").status_code == 401
    assert "signin" in client.get("/dashboard").text


def test_the_headline_csv_lists_each_card_now_and_before(dash):
    sign_in(dash)
    res = dash.get("/dashboard/api/csv/headline?period=7d")
    assert res.status_code == 200, res.text
    assert res.headers["content-disposition"] == 'attachment; filename="mall-headline.csv"'
    rows = res.text.splitlines()
    assert rows[0] == "metric,current,previous"
    assert [r.split(",")[0] for r in rows[1:]] == [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
        "conversions",
        "total_revenue",
    ]


def test_the_property_csv_without_a_property_name_is_a_400_with_the_hint(dash):
    sign_in(dash)
    res = dash.get("/dashboard/api/csv/props")
    assert res.status_code == 400 and "property name" in res.json()["error"]


def test_the_series_has_every_day_of_the_range_and_every_hour_of_a_day(dash, flush):
    """Days (hours) without events are zeros, not missing rows: the chart and its table have no gaps."""
    import datetime as dt

    before = dt.datetime.now(dt.timezone.utc)
    assert dash.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fshoes", headers={"referer": "https://shop.test/"}).status_code == 200
    assert flush() == 1
    sign_in(dash)
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=9)
    res = dash.get(f"/dashboard/api/csv/series?period=custom&from={start}&to={today}")
    assert res.status_code == 200, res.text
    rows = [r.split(",") for r in res.text.splitlines()]
    assert rows[0] == ["time", "visitors", "pageviews"]
    assert [r[0] for r in rows[1:]] == [(start + dt.timedelta(days=i)).isoformat() for i in range(10)]
    assert sorted(tuple(r[1:]) for r in rows[1:]) == [("0", "0")] * 9 + [("1", "1")]
    day = [r.split(",") for r in dash.get("/dashboard/api/csv/series?period=day").text.splitlines()[1:]]
    assert [r[0] for r in day] == [f"{today} {h:02d}:00:00" for h in range(24)]
    if before.date() == today:  # not across midnight: the one pageview is in its hour, the others are zeros
        assert [r[1:] for r in day if r[1:] != ["0", "0"]] == [["1", "1"]]
        assert [r[0] for r in day if r[1:] == ["1", "1"]][0][11:13] in {f"{before.hour:02d}", f"{(before.hour + 1) % 24:02d}"}


def test_a_custom_range_outside_what_the_store_holds_is_a_400_with_a_reason(dash):
    """The period before a range is compared with it, so it too must start on 1970-01-01 or later."""
    sign_in(dash)
    assert sign_in(dash, A_KEY, prefix="/partners/a").status_code == 303
    for base in ("/dashboard", "/partners/a/dashboard"):
        for api in ("panel", "csv"):
            for dates, word in (
                ("from=0001-01-01&to=0001-01-02", "from must be on or after 1970-01-03"),
                ("from=1970-01-01&to=1970-01-01", "from must be on or after 1970-01-02"),
                ("from=2105-12-31&to=2106-01-01", "to must be on or before 2105-12-31"),
                ("from=9999-12-31&to=9999-12-31", "to must be on or before"),
            ):
                res = dash.get(f"{base}/api/{api}/headline?period=custom&{dates}")
                assert res.status_code == 400 and word in res.json()["error"], (base, api, dates)
        page = dash.get(f"{base}?period=custom&from=0001-01-01&to=0001-01-02")
        assert page.status_code == 400 and "from must be on or after 1970-01-03" in page.text
    # The earliest and the latest range the page can show are answered.
    for dates in ("from=1970-01-02&to=1970-01-02", "from=2105-12-31&to=2105-12-31"):
        res = dash.get(f"/dashboard/api/panel/headline?period=custom&{dates}")
        assert res.status_code == 200 and res.json()["unavailable"] == {}, res.text
        assert res.json()["current"]["visitors"] == 0


FILTERS = [f"f=event:page=/p{i}" for i in range(10)]


def test_the_same_filter_twice_is_one_and_an_eleventh_is_refused_not_dropped(dash, flush):
    assert dash.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fshoes").status_code == 200
    assert flush() == 1
    sign_in(dash)

    def visitors(filters):
        res = dash.get("/dashboard/api/panel/headline?period=day&" + "&".join(filters))
        assert res.status_code == 200, res.text
        return res.json()["current"]["visitors"]

    shoes = "f=event:page=/shoes"
    assert visitors([shoes] * 10) == 1
    assert visitors([shoes] * 10 + ["f=event:name=signup"]) == 0  # the filter after ten copies applies
    assert visitors([shoes, *FILTERS[:9]]) == 0
    eleven = "&".join([shoes, *FILTERS])
    for path in ("/dashboard/api/panel/headline", "/dashboard/api/csv/headline", "/dashboard/api/panel/sources"):
        res = dash.get(f"{path}?period=day&{eleven}")
        assert res.status_code == 400 and "at most 10 different filters, not 11" in res.json()["error"], path
    page = dash.get(f"/dashboard?period=day&{eleven}")
    assert page.status_code == 400 and 'role="alert"' in page.text and "at most 10 different filters, not 11" in page.text
    assert "data-panel" not in page.text  # no panel of some other view
    assert 'data-panel="headline"' in dash.get(f"/dashboard?period=day&{'&'.join([shoes] * 20)}").text
    # A long value is matched whole (a page URL may have 2,048 characters), or refused: never cut.
    long = "/" + "x" * 1499
    assert dash.get(f"/p.gif?u=https%3A%2F%2Fshop.test{long}").status_code == 200
    assert flush() == 1
    assert visitors([f"f=event:page={long}"]) == 1
    res = dash.get(f"/dashboard/api/panel/headline?period=day&f=event:page=/{'x' * 2048}")
    assert res.status_code == 400 and "longer than 2048 characters" in res.json()["error"]
