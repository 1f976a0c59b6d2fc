"""The flusher builds the visits rollup ahead (beacon/query/warm.py), many days per statement, and a view then computes nothing.

Real Redis stream, real flusher, real chDB: events of several days (visits across midnight, a campaign
carried over it, bots, a partner scope) are flushed by a flusher that also runs the rollup passes; the
dashboard's queries are then answered from the rollup without an INSERT, and equal the query-time plan's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from beacon import query
from beacon.flusher import Flusher
from beacon.query import rollup
from beacon.query.warm import Warmer
from beacon.store import Store
from tests.conftest import free_port
from tests.test_query_rollup import ALL, event

UTC = dt.timezone.utc
STREAM = "beacon:events"
TODAY = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
NOW = TODAY + dt.timedelta(hours=23, minutes=59)
MIN = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)
RANGE = [(TODAY - 29 * DAY).date().isoformat(), TODAY.date().isoformat()]  # the dashboard's 30 days
PREVIOUS = [(TODAY - 59 * DAY).date().isoformat(), (TODAY - 30 * DAY).date().isoformat()]
BODIES = [
    {"metrics": ALL, "date_range": RANGE},
    {"metrics": ALL, "date_range": PREVIOUS},
    {"metrics": ["visitors", "visits", "bounce_rate"], "date_range": RANGE, "dimensions": ["visit:source"]},
    {
        "metrics": ["visits", "pageviews"],
        "date_range": RANGE,
        "dimensions": ["event:page"],
        "filters": [["is", "visit:source", ["Google"]]],
    },
    {"metrics": ALL, "date_range": [TODAY.date().isoformat(), TODAY.date().isoformat()]},
]


def events() -> list[dict[str, Any]]:
    """Visits on several days, a few across midnight (one with a campaign carried over it), bots, a partner."""
    fb = {"utm_source": "fb", "utm_medium": "social", "utm_campaign": "autumn", "source": "Facebook"}
    rows = []
    for back in (40, 12, 3, 2, 1):  # a day of the previous period, then days of the 30
        m = TODAY - (back - 1) * DAY  # the midnight after the day `back` days ago
        rows += [
            event(f"cross-{back}", m - 10 * MIN, "/a", source="Google"),
            event(f"cross-{back}", m + 5 * MIN, "/b"),
            event(f"camp-{back}", m - 20 * MIN, "/a", **fb),
            event(f"camp-{back}", m + 10 * MIN, "/c", source="Google", utm_source="g", utm_campaign="x"),
            event(f"day-{back}", m - 6 * 60 * MIN, "/shoes", source="Bing"),
            event(f"day-{back}", m - 5 * 60 * MIN, "/bags"),
            event("bot", m - 3 * MIN, "/a", bot=1),
            event("", m - 2 * 60 * MIN, "/x"),
            event(f"p-{back}", m - 60 * MIN, "/ad", scope="partner"),
        ]
    rows += [event("today", TODAY + 60 * MIN, "/", source="Google"), event("today", TODAY + 65 * MIN, "/shoes")]
    return rows


def counts(store: Store) -> tuple[int, int]:
    """(rollup rows, marks): what a computation adds."""
    visits = store.query(f"SELECT count() FROM {rollup.visits_table(store)}")[0][0]
    return visits, store.query(f"SELECT count() FROM {rollup.marks_table(store)}")[0][0]


def query_time(store: Store, scope: str, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        m.setattr(rollup, "usable", lambda q, b: False)
        return query.run(store, scope, body, now=NOW)["results"]


def push(r: Any, rows: list[dict[str, Any]]) -> None:
    """As the web's group commit writes them: one stream entry of JSONEachRow lines."""
    r.xadd(STREAM, {"d": b"\n".join(orjson.dumps(x) for x in rows), "n": len(rows)})


@pytest.fixture
def empty(r: Any, store: Store) -> Iterator[Any]:
    """No events, no rollup, no day sums (of other modules' events) before and after."""
    tables = [store.full_table, rollup.visits_table(store), rollup.marks_table(store), rollup.days_table(store)]
    for table in tables:
        store.command(f"TRUNCATE TABLE {table}")
    yield r
    for table in tables:
        store.command(f"TRUNCATE TABLE {table}")


@contextlib.contextmanager
def running(flusher: Flusher) -> Iterator[None]:
    thread = threading.Thread(target=flusher.run)
    thread.start()
    try:
        yield
    finally:
        flusher.stop()
        thread.join(30)


def wait_for(done: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done()


def run_until(flusher: Flusher, done: Any) -> None:
    with running(flusher):
        wait_for(done)


def test_the_flusher_builds_the_rollup_and_a_view_after_it_computes_nothing(
    empty: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollup, "CHUNK_EVENTS", 20)  # a few days per statement, several statements
    push(empty, events())
    warmer = Warmer(store, interval=0.05, timeout=30, today=lambda: TODAY.date())
    flusher = Flusher(empty, store, STREAM, "warm", batch_rows=1000, batch_age=0.05, claim_idle=0, warmer=warmer)
    left: list[int] = []
    real_run = warmer.run
    monkeypatch.setattr(warmer, "run", lambda *a: left.append(real_run(*a)) or left[-1])
    run_until(flusher, lambda: empty.xlen(STREAM) == 0 and left and left[-1] == 0 and warmer.passes > 2)
    days = {
        s: store.query(f"SELECT count() FROM {rollup.marks_table(store)} WHERE scope = {{s:String}}", {"s": s})[0][0]
        for s in ("mall", "partner")
    }
    assert days == {"mall": 8, "partner": 5}  # every day with events, once (the partner has none today)
    assert max(left) > 0  # built over several passes, one statement each
    per_statement = store.query(f"SELECT uniqExact(scope) FROM {rollup.marks_table(store)} GROUP BY at")
    assert max(n for (n,) in per_statement) == 2  # a statement computes days of both scopes
    before = counts(store)
    for scope in ("mall", "partner"):
        for body in BODIES:
            rolled = query.run(store, scope, body, now=NOW)["results"]
            assert counts(store) == before, body  # no INSERT: the view read what the flusher built
            assert rolled == query_time(store, scope, body, monkeypatch), (scope, body)


def test_many_days_are_computed_in_one_statement_with_the_rows_of_one_at_a_time(
    empty: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_lines(b"\n".join(orjson.dumps(x) for x in events()), "warm-one-statement")
    body = {"metrics": ALL, "date_range": [(TODAY - 59 * DAY).date().isoformat(), TODAY.date().isoformat()]}
    rolled = query.run(store, "mall", body, now=NOW)["results"]
    # one INSERT of the days' marks: ClickHouse evaluated their `at` once
    assert store.query(f"SELECT count(), uniqExact(at) FROM {rollup.marks_table(store)} WHERE scope = 'mall'")[0] == (8, 1)
    assert rolled == query_time(store, "mall", body, monkeypatch)
    monkeypatch.setattr(rollup, "CHUNK_EVENTS", 1)  # now one day per statement: the same rows
    for table in (rollup.visits_table(store), rollup.marks_table(store)):
        store.command(f"TRUNCATE TABLE {table}")
    assert query.run(store, "mall", body, now=NOW)["results"] == rolled
    assert store.query(f"SELECT uniqExact(at) FROM {rollup.marks_table(store)} WHERE scope = 'mall'")[0][0] == 8


def test_a_day_still_receiving_events_is_read_from_the_last_pass_within_the_age_allowed(
    empty: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_lines(b"\n".join(orjson.dumps(x) for x in events()), "warm-today")
    warmer = Warmer(store, interval=10, timeout=30, today=lambda: TODAY.date())
    while warmer.run():  # one statement a pass
        pass
    today = {"metrics": ALL, "date_range": [TODAY.date().isoformat(), TODAY.date().isoformat()]}
    last_pass = query.run(store, "mall", today, now=NOW)["results"]
    store.insert_lines(orjson.dumps(event("late", TODAY + 120 * MIN, "/sale")), "warm-today-late")
    before = counts(store)
    assert query.run(store, "mall", today, now=NOW, rollup_age=30)["results"] == last_pass  # the last pass, nothing computed
    assert counts(store) == before
    exact = query.run(store, "mall", today, now=NOW)["results"]  # no age allowed: today is computed now
    assert counts(store) != before
    assert exact == query_time(store, "mall", today, monkeypatch) != last_pass
    computed = counts(store)
    assert warmer.run() == 0 and counts(store) == computed  # already current: nothing to do


def test_a_clickhouse_failure_in_a_rollup_pass_is_one_line_and_flushing_goes_on(
    empty: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    down = Store(f"http://127.0.0.1:{free_port()}", "beacon", "events", 30, 1000)  # nothing listens there
    warmer = Warmer(down, interval=0.05, timeout=30)
    flusher = Flusher(empty, store, STREAM, "warm-fails", batch_rows=1000, batch_age=0.05, claim_idle=0, warmer=warmer)
    push(empty, events()[:5])
    failures = []
    with caplog.at_level(logging.WARNING, logger="beacon.rollup"), running(flusher):
        wait_for(lambda: len([rec for rec in caplog.records if rec.name == "beacon.rollup"]) >= 2)
        push(empty, events()[5:9])  # after the failed passes
        wait_for(lambda: store.query(f"SELECT count() FROM {store.full_table}")[0][0] == 9 and not empty.xlen(STREAM))
        failures = [rec for rec in caplog.records if rec.name == "beacon.rollup"]
    assert failures and all(rec.getMessage().startswith("rollup pass failed (") and rec.exc_info is None for rec in failures)
    assert all("\n" not in rec.getMessage() for rec in failures)


def test_the_api_counts_an_event_flushed_after_the_flushers_last_pass(make_client, store, r, flush):
    """The rollup pass computed today; a visitor who comes after it is in the next answer of
    `/api/v2/query` at once (the API never reads a rollup behind its events)."""
    from tests.conftest import API_KEY

    client = make_client()
    body = {"metrics": ["visitors", "visits", "pageviews"], "date_range": "day"}
    headers = {"authorization": f"Bearer {API_KEY}"}
    first = client.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fa", headers={"referer": "https://shop.test/"})
    assert first.status_code == 200 and flush() == 1
    warmer = Warmer(store, 10, 30)
    assert warmer.run(r, "test") == 0 and warmer.passes == 1  # today's rollup, with the one visitor
    assert store.query(f"SELECT count() FROM {rollup.visits_table(store)}")[0][0] == 1
    assert client.post("/api/v2/query", json=body, headers=headers).json()["results"][0]["metrics"] == [1, 1, 1]
    client.cookies.clear()  # a second visitor
    assert client.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fb", headers={"referer": "https://shop.test/"}).status_code == 200
    assert flush() == 1
    assert client.post("/api/v2/query", json=body, headers=headers).json()["results"][0]["metrics"] == [2, 2, 2]


@pytest.mark.parametrize("lag", [0, 30])
def test_the_dashboard_lags_behind_its_events_only_when_told_to(make_client, store, r, flush, lag):
    """BEACON_DASHBOARD_MAX_LAG: 0 (the default) counts a visitor flushed after the last pass at once;
    30 reads the last pass's rollup for up to 30 s (the README's Freshness)."""
    from tests.conftest import API_KEY
    from tests.test_dashboard import sign_in

    client = make_client(dashboard_max_lag=lag)
    assert client.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fa", headers={"referer": "https://shop.test/"}).status_code == 200
    assert flush() == 1 and Warmer(store, 10, 30).run(r, "test") == 0
    client.cookies.clear()
    assert client.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fb", headers={"referer": "https://shop.test/"}).status_code == 200
    assert flush() == 1
    sign_in(client, API_KEY)
    rows = dict(line.split(",", 1) for line in client.get("/dashboard/api/csv/headline?period=day").text.splitlines()[1:])
    assert rows["visitors"].split(",")[0] == ("2" if lag == 0 else "1")


def test_a_pass_never_waits_for_a_query_computing_days(make_client, store, r, flush):
    """In `beacon up` a view that computes a cold range holds the store's build lock for seconds; the
    flusher's pass then skips (flushing goes on) and a later pass computes what is left."""
    client = make_client()
    assert client.get("/p.gif?u=https%3A%2F%2Fshop.test%2Fa", headers={"referer": "https://shop.test/"}).status_code == 200
    assert flush() == 1  # today's events changed: its rollup is due

    def newest_mark() -> object:
        return store.query(f"SELECT max(at) FROM {rollup.marks_table(store)}")[0][0]

    before = newest_mark()
    warmer = Warmer(store, 10, 30)
    with rollup._build_lock(store):  # what a query computing days holds
        done = threading.Event()
        worker = threading.Thread(target=lambda: (warmer.run(r, "test"), done.set()))
        worker.start()
        assert done.wait(10), "the pass waited for the query's lock"
        worker.join()
    assert newest_mark() == before  # skipped: nothing computed
    assert warmer.run(r, "test") == 0
    assert newest_mark() != before  # the next pass computed today
