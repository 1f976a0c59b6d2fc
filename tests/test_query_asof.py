"""Events with their visit from the rollup (beacon/query/asof.py) answer what the query-time plan answers.

The scripted days of tests/test_query_rollup.py (visits across midnight, a campaign in the
middle of a visit, bots, cookieless events, a partner) with a property on some events: the
event properties breakdown after visit filters, and funnels with visit, page and event name
filters, per visit and within a window, are asked through the rollup and through the
query-time plan, and the two answers must be equal.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from beacon import query
from beacon.query import asof, copies, funnel, rollup
from beacon.query.model import parse
from beacon.query.sql import Builder

from .test_query_rollup import ALL, MIDNIGHT, NOW, RANGE, insert, scripted

STEPS = ["pageview", "click", {"page": "/c"}]


def with_props() -> list[dict[str, Any]]:
    rnd = random.Random(13)
    rows = scripted()
    for row in rows:
        if row["visitor_id"] in ("cross", "camp", "gap") or rnd.random() < 0.4:
            row["props"] = {"plan": rnd.choice(["free", "pro", ""]), "other": "x"} if rnd.random() < 0.8 else {"other": "y"}
            if rnd.random() < 0.5:
                row["event"] = "signup"
    return rows


@pytest.fixture(scope="module")
def data(store: Any) -> Any:
    store.command(f"TRUNCATE TABLE {store.full_table}")
    insert(store, with_props())
    yield store
    store.command(f"TRUNCATE TABLE {store.full_table}")


def both(run: Any, store: Any, scope: str, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(answer through the rollup, answer of the query-time plan)."""
    rolled = run(store, scope, body, now=NOW)
    with monkeypatch.context() as m:
        m.setattr(rollup, "usable", lambda q, b: False)
        plain = run(store, scope, body, now=NOW)
    return rolled, plain


GOOGLE = ["is", "visit:source", ["Google"]]
PROPS = [
    {"metrics": ["visitors", "events"], "filters": [["is", "visit:source", ["Google"]]]},
    {"metrics": ALL, "filters": [["is_not", "visit:device", ["mobile"]]]},
    {"metrics": ALL, "filters": [["is_not", "visit:utm_campaign", ["spring"]]], "include": {"bots": True}},
    {"metrics": ["visitors", "visits", "pageviews"], "filters": [["contains", "visit:entry_page", ["/a", "/b"]]]},
    {"metrics": ALL, "filters": [["or", [["is", "visit:source", ["Newsletter"]], ["is", "visit:exit_page", ["/c"]]]]]},
    # no visit metric: one aggregation per visitor (`asof.visitor_rows`)
    {"metrics": ["visitors", "pageviews", "events"], "filters": [["is_not", "visit:device", ["mobile"]]], "include": {"bots": True}},
    {"metrics": ["events"], "filters": [["contains", "visit:exit_page", ["/c"]], ["is_not", "visit:utm_campaign", ["autumn"]]]},
]


@pytest.mark.parametrize("scope", ["mall", "partner"])
@pytest.mark.parametrize("one_day", [False, True])
@pytest.mark.parametrize("body", PROPS)
def test_properties_after_visit_filters_equal_the_query_time_plan(
    data: Any, body: dict[str, Any], one_day: bool, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {**body, "dimensions": ["event:props:plan"], "date_range": [MIDNIGHT.date().isoformat()] * 2 if one_day else RANGE}
    rolled, plain = both(query.run, data, scope, body, monkeypatch)
    assert rolled["results"] == plain["results"]
    if scope == "mall":
        assert {tuple(r["dimensions"]) for r in plain["results"]} >= {("free",), ("pro",), ("",)}, plain


def test_properties_after_a_visit_filter_read_only_the_carrying_events(data: Any) -> None:
    body = {"metrics": ALL, "date_range": RANGE, "dimensions": ["event:props:plan"], "filters": [["is", "visit:source", ["Google"]]]}
    q = parse(body, NOW)
    b = Builder(q, "mall", data.full_table, 30)
    assert rollup.usable(q, b)
    b.rollup = rollup.prepare(data, "mall", q, 30)
    sql, _ = b.build(10, 0, False)
    assert "ASOF JOIN" in sql and "arrayCumSum" not in sql  # no visit computed from events


SPLIT = [  # event filters read the events they pick; visit filters pick visits from the rollup
    {"metrics": ["visitors", "events"], "dimensions": ["event:name"], "filters": [["is", "event:page", ["/b"]], GOOGLE]},
    {"metrics": ALL, "dimensions": ["visit:source"], "filters": [["is", "event:props:plan", ["pro"]]]},
    {
        "metrics": ALL,
        "dimensions": ["event:page"],
        "filters": [["is", "event:props:plan", ["free", "pro"]], ["is_not", "visit:device", ["mobile"]]],
    },
    {"metrics": ALL, "dimensions": ["event:props:plan"], "filters": [["is", "event:page", ["/a"]], ["contains", "visit:exit_page", ["/"]]]},
    {"metrics": ["visitors", "pageviews"], "dimensions": ["time:hour"], "filters": [["is_not", "event:name", ["click"]], GOOGLE]},
    {"metrics": ALL, "filters": [["or", [["is", "event:props:other", ["y"]], ["is", "event:name", ["signup"]]]], ["not", GOOGLE]]},
    {
        "metrics": ALL,
        "dimensions": ["visit:entry_page", "event:props:other"],
        "filters": [["is", "event:name", ["signup"]]],
        "include": {"bots": True},
    },
]


@pytest.mark.parametrize("scope", ["mall", "partner"])
@pytest.mark.parametrize("body", SPLIT)
def test_event_filters_with_visit_filters_equal_the_query_time_plan(
    data: Any, body: dict[str, Any], scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {**body, "date_range": RANGE}
    q = parse(body, NOW)
    b = Builder(q, scope, data.full_table, 30)
    # page and name together are in the rollup's (page, name) pairs (`paged`); the others take the ASOF join
    assert rollup.usable(q, b) and (asof.event_split(b) or b.paged)
    rolled, plain = both(query.run, data, scope, body, monkeypatch)
    assert rolled["results"] == plain["results"]
    assert plain["results"] or scope == "partner"


def test_event_filters_without_visits_read_no_visit(data: Any) -> None:
    body = {"metrics": ["visitors", "events"], "date_range": RANGE, "dimensions": ["event:name"], "filters": [["is", "event:page", ["/b"]]]}
    q = parse(body, NOW)
    assert not asof.event_split(Builder(q, "mall", data.full_table, 30))  # `events_only`: no join, no visit


FILTERS = [
    [],
    [["is", "visit:source", ["Google"]]],
    [["is_not", "visit:device", ["mobile"]], ["is_not", "visit:utm_campaign", ["autumn"]]],
    [["is", "event:page", ["/b"]]],
    [["or", [["is", "visit:source", ["Newsletter"]], ["is", "event:page", ["/a"]]]]],
    [["is", "event:name", ["click"]]],
    [["contains", "visit:exit_page", ["/c"]]],
    [["is", "event:props:plan", ["pro"]], ["is", "visit:source", ["Google"]]],  # the query-time plan
]


@pytest.mark.parametrize("scope", ["mall", "partner"])
@pytest.mark.parametrize("window", ["visit", 3600])
@pytest.mark.parametrize("filters", FILTERS)
def test_funnels_through_the_rollup_equal_the_query_time_plan(
    data: Any, filters: list[Any], window: Any, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for steps in (STEPS, ["signup", "pageview"]):
        body = {"steps": steps, "date_range": RANGE, "filters": filters, "window": window, "include": {"bots": window == 3600}}
        rolled, plain = both(funnel.run, data, scope, body, monkeypatch)
        assert rolled == plain
    if scope == "mall" and not filters:
        assert rolled["steps"][0]["visitors"] > 20 and rolled["steps"][1]["visitors"] > 5


# event steps only (no pageview): each visit's sequence in the rollup (beacon/query/sequences.py)
EVENT_STEPS = (["click", "signup"], ["signup", "click", "signup"])
PAIR = [["is", "event:page", ["/a", "/c"]], ["is_not", "event:name", ["pageview"]], ["is", "visit:device", ["desktop"]]]


@pytest.mark.parametrize("scope", ["mall", "partner"])
@pytest.mark.parametrize("filters", [*FILTERS[:-1], PAIR, [["is_not", "event:page", ["/b"]]]])
def test_event_step_funnels_from_the_sequences_equal_the_query_time_plan(
    data: Any, filters: list[Any], scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for steps, bots in zip(EVENT_STEPS, (False, True)):
        body = {"steps": steps, "date_range": RANGE, "filters": filters, "include": {"bots": bots}}
        rolled, plain = both(funnel.run, data, scope, body, monkeypatch)
        assert rolled == plain
        if scope == "mall" and not filters:
            assert rolled["steps"][0]["visitors"] > 10 and rolled["steps"][1]["visitors"] > 3


def test_an_event_step_funnel_reads_the_sequences_not_the_events(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    run = data.query
    asked: list[str] = []
    monkeypatch.setattr(data, "query", lambda sql, *a, **k: asked.append(sql) or run(sql, *a, **k))
    for filters in ([], [GOOGLE], [["is", "event:page", ["/a"]]]):
        asked.clear()
        answer = funnel.run(data, "mall", {"steps": list(EVENT_STEPS[0]), "date_range": RANGE, "filters": filters}, now=NOW)
        assert answer["steps"][0]["visitors"] > 0
        [sql] = [s for s in asked if "windowFunnel" in s]
        assert "seq_names" in sql and "ASOF JOIN" not in sql and f"FROM {data.full_table} " not in sql


def test_a_funnel_over_whole_days_reads_the_rollup_not_every_visit(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = rollup.prepare
    monkeypatch.setattr(rollup, "prepare", lambda *a, **k: asked.append("rollup") or real(*a, **k))
    run = data.query
    monkeypatch.setattr(data, "query", lambda sql, *a, **k: asked.append(sql) or run(sql, *a, **k))
    for window, filters in (("visit", []), (3600, [["is", "visit:source", ["Google"]]]), (3600, [])):
        asked.clear()
        answer = funnel.run(data, "mall", {"steps": STEPS, "date_range": RANGE, "filters": filters, "window": window}, now=NOW)
        assert answer["steps"][0]["visitors"] > 0
        [sql] = [s for s in asked if "windowFunnel" in s]
        assert "arrayCumSum" not in sql  # no visit computed from the events
        assert ("rollup" in asked and "ASOF JOIN" in sql) == (window == "visit" or bool(filters))


def test_an_earlier_rollup_gets_the_sequences_and_its_rows_are_not_read(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VERSION 6 rollup (no event sequences): migrate adds the columns; its rows (sequences empty) are never read by a
    funnel, whose answer stays the query-time plan's."""
    from beacon.store import Store

    store.command("DROP DATABASE IF EXISTS beacon_v6_rollup")
    old = Store(store.dsn, "beacon_v6_rollup", "events", 395, 1000)
    try:
        old.migrate()
        old.command(f"DROP TABLE {rollup.visits_table(old)}")
        old.command(rollup.ddl(old)[0].replace(f", {rollup.SEQ_COLUMNS}", ""))
        insert(old, with_props())
        old.migrate()
        old.migrate()  # safe to repeat
        names = {n for (n,) in old.query("SELECT name FROM system.columns WHERE database = 'beacon_v6_rollup' AND table = 'events_visits'")}
        assert {"seq_names", "seq_ms"} <= names
        with monkeypatch.context() as m:  # rows of the earlier release: computed under its VERSION, without sequences
            m.setattr(rollup, "VERSION", 6)
            query.run(old, "mall", {"metrics": ["visits"], "date_range": RANGE}, now=NOW)
        old.command(f"ALTER TABLE {rollup.visits_table(old)} UPDATE seq_names = [], seq_ms = [] WHERE 1 SETTINGS mutations_sync = 2")
        body = {"steps": list(EVENT_STEPS[0]), "date_range": RANGE}
        rolled, plain = both(funnel.run, old, "mall", body, monkeypatch)
        assert rolled == plain and plain["steps"][1]["visitors"] > 0
    finally:
        store.command("DROP DATABASE IF EXISTS beacon_v6_rollup")


COPIED = [  # the carrying events from their copy, each visitor's other events from the rollup (`asof.copied_rows`)
    {"metrics": ["visitors", "events"]},  # the properties panel
    {"metrics": ["visitors", "pageviews", "events"], "filters": [["is", "event:page", ["/b"]]]},
    {"metrics": ["visitors", "events"], "filters": [["is_not", "event:page", ["/a"]]], "dimensions": ["event:props:other"]},
    {"metrics": ["visitors", "pageviews", "events"], "filters": [["is", "event:name", ["signup"]]]},
    {"metrics": ["visitors", "events"], "filters": [["is", "event:page", ["/a", "/c"]], ["is_not", "event:name", ["pageview"]]]},
    {"metrics": ["visitors", "pageviews", "events"], "filters": [["is", "event:page", ["/b"]], GOOGLE]},
    {"metrics": ["events", "visitors"], "filters": [["is", "event:name", ["signup"]], ["is_not", "visit:utm_campaign", ["spring"]]]},
]


@pytest.mark.parametrize("scope", ["mall", "partner"])
@pytest.mark.parametrize("one_day", [False, True])
@pytest.mark.parametrize("body", COPIED)
def test_properties_from_their_copy_equal_the_query_time_plan(
    data: Any, body: dict[str, Any], one_day: bool, scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"dimensions": ["event:props:plan"], **body, "date_range": [MIDNIGHT.date().isoformat()] * 2 if one_day else RANGE}
    q = parse(body, NOW)
    b = Builder(q, scope, data.full_table, 30)
    b.props = copies.PROPS.ready(data)
    assert asof.props_copied(b) and rollup.usable(q, b)
    rolled, plain = both(query.run, data, scope, body, monkeypatch)
    assert rolled["results"] == plain["results"]
    if scope == "mall" and not one_day:
        assert {r["dimensions"][0] for r in plain["results"]} >= {"free", "pro", ""} or body["dimensions"] != ["event:props:plan"], plain


def test_the_properties_panel_reads_the_copy_and_the_rollup_not_the_events(data: Any) -> None:
    body = {"metrics": ["visitors", "events"], "date_range": RANGE, "dimensions": ["event:props:plan"]}
    q = parse(body, NOW)
    b = Builder(q, "mall", data.full_table, 30)
    b.props = copies.PROPS.ready(data)
    b.rollup = rollup.prepare(data, "mall", q, 30)
    sql, _ = b.build(10, 0, False)
    assert f"FROM {data.full_table}_props FINAL WHERE" in sql and f"FROM {data.full_table}_visits WHERE" in sql
    assert f"FROM {data.full_table} " not in sql  # no event read from the events table
    # with bots, visit metrics or a property filter: the query-time plan, as before
    for other in ({"include": {"bots": True}}, {"metrics": ["visits"]}, {"filters": [["is", "event:props:other", ["x"]]]}):
        b = Builder(parse({**body, **other}, NOW), "mall", data.full_table, 30)
        b.props = copies.PROPS.table(data)
        assert not asof.props_copied(b)
