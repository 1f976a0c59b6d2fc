"""A visit across midnight is glued from its segments in time order, also where the rollup's parts are sparse.

chDB 26.9 answers `groupArray` over a sparse column wrongly when the aggregation has one group:
the non-default values come first. The glued visits of an irregular visitor (one whose visit
crosses midnight) were gathered one `groupArray` per column, so a sparse `link` (mostly 0)
landed on the wrong segment, the visit was never glued, and it counted as two (found in review:
entry pages and a funnel A -> B across midnight differed from the query-time plan). Beacon's
tables now store every column in full (`beacon/columns.py` NO_SPARSE), and the glue gathers one
array of tuples, which is right either way: both are checked here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from beacon import query
from beacon.query import funnel, rollup
from beacon.store import Store

from .test_query_asof import both
from .test_query_rollup import MIDNIGHT, NOW, event, insert

RANGE = [(MIDNIGHT - dt.timedelta(days=1)).date().isoformat(), (MIDNIGHT + dt.timedelta(days=1)).date().isoformat()]


def rows(scope: str) -> list[dict[str, Any]]:
    """Four visitors over two days; "night" has one visit from 23:59 to 00:25 (A, then B after midnight)."""
    at = [
        ("day1", -1191.6, "C", "/b"),
        ("day1", -1121.6, "pageview", "/b"),
        ("busy", 302.2, "pageview", "/x"),
        ("busy", 602.2, "pageview", "/b"),
        ("busy", 673.2, "A", "/c"),
        ("busy", 762.2, "B", "/c"),
        ("busy", 1191.2, "B", "/c"),
        ("night", -0.75, "A", "/a"),
        ("night", 25.25, "B", "/a"),
        ("night", 364.25, "pageview", "/x"),
        ("late", -36.0, "pageview", "/c"),
        ("late", -5.0, "pageview", "/b"),
        ("late", 55.0, "pageview", "/a"),
    ]
    return [event(vid, MIDNIGHT + dt.timedelta(minutes=m), page, name=name, scope=scope) for vid, m, name, page in at]


@pytest.fixture(params=["full", "sparse"])
def store_of(request: pytest.FixtureRequest, store: Any) -> Iterator[Store]:
    """A store of its own; "sparse" lets its rollup store mostly-default columns sparse, as parts of an earlier release."""
    name = f"sparse_{request.param}"
    s = Store(store.dsn, name, "events", 395, 1000)
    s.migrate()
    if request.param == "sparse":
        s.command(f"ALTER TABLE {rollup.visits_table(s)} MODIFY SETTING ratio_of_defaults_for_sparse_serialization = 0.5")
    try:
        yield s
    finally:
        store.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.parametrize("scope", ["mall", "partner"])
def test_a_visit_across_midnight_counts_once_through_the_rollup(store_of: Store, scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    insert(store_of, rows(scope))
    totals = {"metrics": ["visitors", "visits", "events"], "date_range": RANGE}
    rolled, plain = both(query.run, store_of, scope, totals, monkeypatch)
    assert rolled["results"][0]["metrics"] == plain["results"][0]["metrics"] == [4, 12, 13]  # 2 + 5 + 2 + 3 visits
    entry = {**totals, "dimensions": ["visit:entry_page"]}
    rolled, plain = both(query.run, store_of, scope, entry, monkeypatch)
    assert rolled["results"] == plain["results"]
    steps = both(funnel.run, store_of, scope, {"steps": ["A", "B"], "date_range": RANGE}, monkeypatch)
    assert steps[0] == steps[1]
    assert [s["visitors"] for s in steps[0]["steps"]] == [2, 1]  # only "night" does A then B in one visit (across midnight)


def test_beacons_tables_store_no_sparse_column(store: Any) -> None:
    s = Store(store.dsn, "sparse_none", "events", 395, 1000)
    try:
        s.migrate()
        insert(s, rows("mall"))
        query.run(s, "mall", {"metrics": ["visits"], "date_range": RANGE}, now=NOW)  # computes the rollup's days
        sparse = s.query(
            "SELECT table, column FROM system.parts_columns WHERE database = {d:String} AND active AND serialization_kind = 'Sparse'",
            {"d": s.database},
        )
        assert s.query("SELECT count() FROM system.parts_columns WHERE database = {d:String} AND active", {"d": s.database})[0][0] > 0
        assert sparse == []
    finally:
        store.command("DROP DATABASE IF EXISTS sparse_none")
