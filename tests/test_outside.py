"""Found from outside: cases a user, an advertiser, an attacker or an operator tried
against a running Beacon, each kept here once fixed (real engines)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys

import httpx
import pytest

from beacon import query

from .conftest import API_KEY, free_port, with_partners
from .test_commerce_query import DAY, NOW, ask, day  # noqa: F401 - `day` is a fixture
from .test_operators import beacon, one_line

# -- Query API v2: ordering by issue 12's metrics -----------------------------------------


def test_ordering_by_conversions_or_customers_answers(day):  # noqa: F811
    """The README's advice for revenue ("order by conversions") used to be a 503."""
    rows = ask(
        day, metrics=["visitors", "conversions"], dimensions=["event:goal"], order_by=[["conversions", "desc"], ["event:goal", "asc"]]
    )
    assert [(r["dimensions"][0], r["metrics"][1]) for r in rows] == [
        ("add_to_cart", 4),
        ("product_view", 4),
        ("purchase", 4),
        ("begin_checkout", 3),
    ]
    [row] = ask(day, metrics=["visitors", "customers"], order_by=[["customers", "desc"]])
    assert row["metrics"] == [6, 2]


@pytest.mark.parametrize(
    "metrics, expected",
    [
        (["conversions"], [4]),
        (["customers", "visitors"], [2, 6]),
        (["total_revenue"], [{"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]),
        (["conversion_rate", "visitors"], [66.67, 6]),
    ],
)
def test_the_default_order_works_whatever_metric_comes_first(day, metrics, expected):  # noqa: F811
    """Without order_by the first metric orders the rows; one that cannot be ordered by
    (revenue per currency, a rate) is skipped instead of refusing a query nobody ordered."""
    [row] = ask(day, metrics=metrics)
    assert row["metrics"] == expected


def test_an_empty_order_by_is_no_order(day):  # noqa: F811
    [row] = ask(day, metrics=["visitors"], order_by=[])
    assert row["metrics"] == [6]
    rows = ask(day, metrics=["visitors"], dimensions=["event:goal"], order_by=[])
    assert [r["dimensions"][0] for r in rows] == ["add_to_cart", "begin_checkout", "product_view", "purchase"]


def test_a_csv_export_writes_revenue_cells_as_json(day):  # noqa: F811
    body = {"metrics": ["conversions", "total_revenue"], "date_range": [DAY, DAY]}
    text = b"".join(query.export(day, "mall", body, "csv", now=NOW)).decode()
    assert text == 'conversions,total_revenue\r\n4,"{""EUR"":""59.95"",""JPY"":""1500"",""USD"":""10.00""}"\r\n'


def test_ordering_by_conversions_over_http_is_not_a_503(day, client):  # noqa: F811
    res = client.post(
        "/api/v2/query",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={"metrics": ["conversions"], "date_range": [DAY, DAY], "order_by": [["conversions", "desc"]]},
    )
    assert res.status_code == 200, res.text


# -- Operators: one line, nothing printed as up, nothing broken -----------------------------


@pytest.mark.parametrize(
    "flag, value, named",
    [
        ("--port", "70000", "BEACON_PORT"),
        ("--port", "-1", "BEACON_PORT"),
        ("--retention-days", "-5", "BEACON_RETENTION_DAYS"),  # a TTL in the past deletes every row
        ("--max-body-bytes", "-1", "BEACON_MAX_BODY_BYTES"),
        ("--batch-rows", "0", "BEACON_BATCH_ROWS"),
        ("--cookie-name", "bcn;Domain=evil.example", "BEACON_COOKIE_NAME"),
        ("--mall-hosts", "localhost:8080", "BEACON_MALL_HOSTS"),  # never matches a Host: everything 404
    ],
)
def test_a_bad_value_is_one_line_and_nothing_starts(tmp_path, flag, value, named):
    res = beacon("up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), f"{flag}={value}")
    assert named in one_line(res)
    assert "Beacon is up" not in res.stdout and not (tmp_path / "d" / "redis").exists()


@pytest.mark.parametrize(
    "setting, value, named",
    [
        ("BEACON_GEOIP_DB", "/etc/hostname", "BEACON_GEOIP_DB"),
        ("BEACON_PARTNERS_FILE", "/etc/hostname", "/etc/hostname"),
    ],
)
def test_a_bad_file_stops_up_before_it_says_up(tmp_path, setting, value, named):
    """These used to print "Beacon is up", the snippet and a key, then a flusher warning and the error."""
    res = beacon("up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), env={setting: value})
    assert named in one_line(res)
    assert "Beacon is up" not in res.stdout and "Bearer" not in res.stdout


def test_partners_add_that_would_break_the_registry_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "partners.toml"
    env = {"BEACON_PARTNERS_FILE": str(path)}
    assert beacon("partners", "add", "--id", "adco", "--ad-host", "ads.a.test", env=env).returncode == 0
    before = path.read_text()
    assert "appears twice" in one_line(beacon("partners", "add", "--id", "adco", "--ad-host", "ads.z.test", env=env))
    assert "already belongs" in one_line(beacon("partners", "add", "--id", "zz", "--ad-host", "ads.a.test", env=env))
    assert "partners add: id" in one_line(beacon("partners", "add", "--id", "BAD!", env=env))
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["partners.toml"]
    listed = beacon("partners", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("adco\t")


@pytest.mark.parametrize("target", [["--scope", "mall", "--visitor", "x"], ["--account", "x"]])
def test_forget_on_a_data_dir_without_events_is_one_line(tmp_path, target):
    assert "nothing to forget" in one_line(beacon("forget", "--data-dir", str(tmp_path), *target))


def test_up_prints_the_port_it_bound_and_a_mall_host_when_hosts_are_set(tmp_path):
    data = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon", "up", "--data-dir", str(data), "--port", "0", "--mall-hosts", "shop.test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "api/v1/stats" in line:
                break
        text = "".join(lines)
        port = int(re.search(r"Beacon is up on http://127\.0\.0\.1:(\d+)", text).group(1))
        assert port != 0
        curl = re.search(r"curl (.*) '(http://[^']+)'", text)
        headers = dict(h.split(": ", 1) for h in re.findall(r"-H '([^']+)'", curl.group(1)))
        res = httpx.get(curl.group(2), headers=headers, timeout=10)  # what the operator pastes answers
        assert res.status_code == 200 and res.json()["scope"] == "mall"
        assert "BEACON_MALL_HOSTS is set" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # reads and closes the pipe (unclosed, it is a ResourceWarning)


# -- /partners/<id>/ on a single host: the partner's tag must reach the partner's scope -----

# beacon.js run by node with the least of a browser around it: where does its first request go?
NODE_HARNESS = """
const sent = [];
globalThis.window = globalThis;
globalThis.location = {href: "https://shop.test/item"};
globalThis.history = {pushState() {}, replaceState() {}};
globalThis.addEventListener = () => {};
Object.defineProperty(globalThis, "navigator", {value: {}});
globalThis.document = {referrer: "", currentScript: {src: process.argv.at(-1), getAttribute: () => null,
                                                     hasAttribute: () => false}};
globalThis.fetch = (url) => { sent.push(url); return new Promise(() => {}); };
eval(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(sent));
"""


@pytest.fixture
def prefixed(make_client, tmp_path):
    from .test_partners import REGISTRY

    return with_partners(make_client, tmp_path, REGISTRY)


def test_beacon_js_is_served_under_the_partner_prefix_and_sends_there(prefixed):
    """`https://beacon.shop.example/partners/<id>/beacon.js` answered 404, and the script
    loaded from there would have sent the partner's ad events to the mall's scope."""
    res = prefixed.get("https://shop.test/partners/a/beacon.js")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/javascript")
    mall = prefixed.get("https://shop.test/beacon.js")
    assert mall.status_code == 200 and res.headers["etag"] != mall.headers["etag"]
    assert prefixed.get("https://shop.test/partners/a/beacon.js", headers={"if-none-match": res.headers["etag"]}).status_code == 304
    assert prefixed.get("https://shop.test/partners/nobody/beacon.js").status_code == 404
    assert prefixed.get("https://shop.test/partners/a/healthz").status_code == 200
    node = shutil.which("node")
    if node is None:  # the server half above always runs; the script's half needs node
        pytest.skip("node is not installed")
    for script, src, endpoint in [
        (res.text, "https://shop.test/partners/a/beacon.js", "https://shop.test/partners/a/e"),
        (mall.text, "https://shop.test/beacon.js", "https://shop.test/e"),
    ]:
        out = subprocess.run([node, "-e", NODE_HARNESS, src], input=script, capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout) == [endpoint], out.stderr


def test_a_pageview_sent_to_the_prefix_lands_in_the_partner_scope(prefixed, flush, rows):
    res = prefixed.post(
        "https://shop.test/partners/a/e", content=b'{"e":"pageview","u":"https://shop.test/x"}', headers={"content-type": "text/plain"}
    )
    assert res.status_code == 204
    assert flush() == 1 and [r["scope"] for r in rows()] == ["a"]


def test_an_unreachable_clickhouse_is_one_line_without_the_clients_warnings(tmp_path):
    line = one_line(beacon("migrate", "--data-dir", str(tmp_path), "--clickhouse-url", f"http://127.0.0.1:{free_port()}"))
    assert line.startswith("beacon: ClickHouse 'http://127.0.0.1:")


@pytest.mark.parametrize("url", ["ftp://clickhouse.example", "clickhouse.example:8123"])
def test_a_clickhouse_url_of_another_scheme_is_refused(tmp_path, url):
    """It was taken for http://localhost:8123 or http://<host>:8123 without a word."""
    assert "BEACON_CLICKHOUSE_URL" in one_line(beacon("migrate", "--data-dir", str(tmp_path), "--clickhouse-url", url))
