"""The copy of the events carrying properties (beacon/query/copies.py `PROPS`) holds exactly the events' carrying events.

The scripted days of tests/test_query_asof.py: the copy made by `migrate` from existing events
and by its view from new ones, after `forget`, after a TRUNCATE of the events and with an event
copied twice; each time the properties panel read from the copy equals the query-time plan's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from beacon import query
from beacon.query import copies

from .test_query_asof import both, with_props
from .test_query_rollup import MIDNIGHT, NOW, RANGE, event, insert

PANEL = {"metrics": ["visitors", "events"], "dimensions": ["event:props:plan"], "date_range": RANGE}
COPY = copies.PROPS


@pytest.fixture
def data(store: Any) -> Any:
    store.command(f"TRUNCATE TABLE {store.full_table}")
    insert(store, with_props())
    yield store
    store.command(f"TRUNCATE TABLE {store.full_table}")


def copied(store: Any, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM {COPY.table(store)} FINAL WHERE {where}")[0][0])


def carrying(store: Any, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM {store.full_table} WHERE notEmpty(props) AND {where}")[0][0])


def same(store: Any, monkeypatch: pytest.MonkeyPatch, scope: str = "mall") -> list[Any]:
    """The panel's rows (from the copy, equal to the query-time plan's), checked with a page filter too."""
    answers = []
    for body in (PANEL, {**PANEL, "filters": [["is", "event:page", ["/b"]]]}):
        rolled, plain = both(query.run, store, scope, body, monkeypatch)
        assert rolled["results"] == plain["results"]
        answers.append(rolled["results"])
    return list(answers[0])


def test_migrate_copies_the_existing_carrying_events_and_the_view_the_new_ones(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (f"{COPY.table(data)}_mv", COPY.table(data), COPY.parts_table(data)):
        data.command(f"DROP TABLE IF EXISTS {name}")
    data.migrate()
    assert copied(data) == carrying(data) > 50
    insert(data, [{**event("new", MIDNIGHT, "/b"), "props": {"plan": "team"}}])
    assert copied(data, "visitor_id = 'new'") == 1
    assert ["team"] in [r["dimensions"] for r in same(data, monkeypatch)]


@pytest.mark.parametrize("scope", ["mall", "partner"])
def test_forget_reaches_the_copy(data: Any, scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = {"scope": "partner", "props": {"plan": "pro"}}
    insert(data, [event("pp", MIDNIGHT, "/a", **partner), event("pp", MIDNIGHT + dt.timedelta(minutes=2), "/b", **partner)])
    visitor = data.query(
        f"SELECT min(visitor_id) FROM {COPY.table(data)} WHERE scope = {{s:String}} AND visitor_id != '' "
        "AND props['plan'] != '' AND is_bot = 0 AND received_at >= {t:DateTime64(3, 'UTC')}",
        {"s": scope, "t": MIDNIGHT.replace(tzinfo=None) - dt.timedelta(days=1)},
    )
    forgotten = str(visitor[0][0])
    assert forgotten and copied(data, f"visitor_id = '{forgotten}'") > 0
    before = same(data, monkeypatch, scope)
    assert data.forget(scope, forgotten) > 0
    assert copied(data, f"visitor_id = '{forgotten}'") == 0
    assert same(data, monkeypatch, scope) != before


def test_a_truncated_events_table_is_copied_again(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    COPY.ready(data)
    data.command(f"TRUNCATE TABLE {data.full_table}")
    insert(data, [{**event("v1", MIDNIGHT, "/a"), "props": {"plan": "free"}}, event("v1", MIDNIGHT + dt.timedelta(minutes=1), "/b")])
    assert same(data, monkeypatch) == [
        {"dimensions": [""], "metrics": [1, 1]},
        {"dimensions": ["free"], "metrics": [1, 1]},
    ]
    assert copied(data) == 1


def test_an_event_copied_twice_counts_once(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    COPY.ready(data)
    before = same(data, monkeypatch)
    cols = ", ".join(COPY.columns)
    data.command(f"INSERT INTO {COPY.table(data)} ({cols}) SELECT {cols} FROM {data.full_table} WHERE notEmpty(props)")
    assert int(data.query(f"SELECT count() FROM {COPY.table(data)}")[0][0]) == 2 * carrying(data)
    assert same(data, monkeypatch) == before
    assert query.run(data, "mall", PANEL, now=NOW)["results"] == before


def test_an_event_flushed_while_its_visitor_is_forgotten_stays_in_the_copy(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`forget` deletes the events, then the copy's rows: an event of the visitor flushed in between (it was still in
    the Redis buffer) is in the events afterwards, so it must be in the copy too."""
    insert(data, [{**event("f", MIDNIGHT, "/a"), "props": {"plan": "free"}}])
    real = type(data).command

    def command(self: Any, sql: str, parameters: Any = None) -> Any:
        out = real(self, sql, parameters)
        if sql.startswith(f"DELETE FROM {data.full_table} WHERE"):  # the flusher's next block, between the two deletes
            insert(data, [{**event("f", MIDNIGHT + dt.timedelta(minutes=62), "/c"), "props": {"plan": "pro"}}])
        return out

    monkeypatch.setattr(type(data), "command", command)
    data.forget("mall", "f")
    monkeypatch.undo()
    assert carrying(data, "visitor_id = 'f'") == copied(data, "visitor_id = 'f'") == 1
    same(data, monkeypatch)


def test_a_lagging_rollup_is_not_read_beside_the_current_copy(data: Any) -> None:
    """With BEACON_DASHBOARD_MAX_LAG the rollup may be older than the copy: the panel then reads the events as they are."""
    insert(data, [event("g", MIDNIGHT + dt.timedelta(minutes=70), "/a"), event("g", MIDNIGHT + dt.timedelta(minutes=71), "/b")])
    query.run(data, "mall", PANEL, now=NOW, rollup_age=3600)  # the rollup of these days, now
    later = [{**event(v, MIDNIGHT + dt.timedelta(minutes=m), "/c"), "props": {"plan": "pro"}} for v, m in (("g", 72), ("h", 80))]
    insert(data, later)
    assert query.run(data, "mall", PANEL, now=NOW, rollup_age=3600)["results"] == query.run(data, "mall", PANEL, now=NOW)["results"]
