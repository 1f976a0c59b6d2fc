"""The visits rollup (beacon/query/rollup.py) answers exactly what the query-time plan answers.

Visitors whose visits cross midnight, a campaign arriving in the middle of a day's visit,
bots, cookieless events and a second scope; each query is asked through the rollup and
through the query-time plan, and the two answers must be equal. Then the rollup follows
new events and a forgotten visitor.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import orjson
import pytest

from beacon import query
from beacon.query import rollup

UTC = dt.timezone.utc
MIDNIGHT = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
NOW = MIDNIGHT + dt.timedelta(days=3, hours=12)
RANGE = [(MIDNIGHT - dt.timedelta(days=1)).date().isoformat(), (MIDNIGHT + dt.timedelta(days=1)).date().isoformat()]
ALL = ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"]
_ids = itertools.count(1)


def event(
    vid: str, at: dt.datetime, page: str, *, name: str = "pageview", bot: int = 0, scope: str = "mall", **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": f"00000000-0000-7000-9000-{next(_ids):012d}",
        "received_at": f"{at.timestamp():.3f}",
        "scope": scope,
        "visitor_id": vid,
        "mode": "cookie",
        "event": name,
        "url": "https://shop.test" + page,
        "referrer": "",
        "props": {},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "is_bot": bot,
        "transport": "pixel",
        **fields,
    }


def scripted() -> list[dict[str, Any]]:
    m = MIDNIGHT
    mins = dt.timedelta(minutes=1)
    news = {"utm_source": "news", "utm_medium": "email", "utm_campaign": "spring", "source": "Newsletter"}
    fb = {"utm_source": "fb", "utm_medium": "social", "utm_campaign": "autumn", "source": "Facebook"}
    rows = [
        # one visit across midnight: 23:50, 23:55, 00:10 (15 min gap), 00:20
        event("cross", m - 10 * mins, "/a", source="Google", country="DE"),
        event("cross", m - 5 * mins, "/b"),
        event("cross", m + 10 * mins, "/c"),
        event("cross", m + 20 * mins, "/d"),
        # a gap over 30 minutes at midnight: two visits
        event("gap", m - 20 * mins, "/a", source="Bing"),
        event("gap", m + 15 * mins, "/b", source="Google"),
        # a campaign carried from the evening before, a new campaign mid-visit after midnight: split by the range,
        # not by the day alone
        event("camp", m - 40 * mins, "/a", **news),
        event("camp", m - 10 * mins, "/b"),
        event("camp", m + 10 * mins, "/c"),
        event("camp", m + 20 * mins, "/d", **fb),
        event("camp", m + 25 * mins, "/e"),
        # a campaign mid-visit on a day with no campaign before: no split
        event("late", m + 5 * 60 * mins, "/a"),
        event("late", m + 5 * 60 * mins + 5 * mins, "/b", **fb),
        # bots, cookieless events, another scope
        event("bot-1", m - 2 * mins, "/a", bot=1),
        event("bot-1", m + 2 * mins, "/b", bot=1),
        event("", m + 3 * mins, "/x"),
        event("", m - 3 * mins, "/y"),
        event("p", m + 1 * mins, "/a", scope="partner"),
    ]
    rnd = random.Random(11)
    for v in range(120):  # random visitors over three days, many near midnight
        at = m - dt.timedelta(hours=rnd.choice([1, 20, 26]), minutes=rnd.randrange(60))
        for _ in range(rnd.randrange(1, 9)):
            at += dt.timedelta(minutes=rnd.choice([1, 5, 20, 29, 31, 45, 200]))
            extra = rnd.choice([{}, {}, news, fb, {"source": "Google"}])
            rows.append(
                event(
                    f"r{v}",
                    at,
                    rnd.choice(["/a", "/b", "/c"]),
                    name=rnd.choice(["pageview", "pageview", "click"]),
                    bot=int(rnd.random() < 0.05),
                    device=rnd.choice(["desktop", "mobile"]),
                    **extra,
                )
            )
    return rows


def insert(store: Any, rows: list[dict[str, Any]]) -> None:
    store.insert_lines(b"\n".join(orjson.dumps(r) for r in rows), f"rollup-test-{next(_ids)}")


@pytest.fixture(scope="module")
def data(store: Any) -> Any:
    store.command(f"TRUNCATE TABLE {store.full_table}")
    insert(store, scripted())
    yield store
    store.command(f"TRUNCATE TABLE {store.full_table}")


def both(store: Any, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch, scope: str = "mall") -> tuple[Any, Any]:
    """(answer through the rollup, answer of the query-time plan)."""
    rolled = query.run(store, scope, body, now=NOW)["results"]
    with monkeypatch.context() as m:
        m.setattr(rollup, "usable", lambda q, b: False)
        plain = query.run(store, scope, body, now=NOW)["results"]
    return rolled, plain


QUERIES = [
    {"metrics": ALL, "date_range": RANGE},
    {"metrics": ALL, "date_range": RANGE, "include": {"bots": True}},
    {"metrics": ALL, "date_range": [RANGE[1], RANGE[1]]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:source"]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:utm_campaign", "visit:device"]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:entry_page"]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:exit_page"], "filters": [["is_not", "visit:source", ["Bing"]]]},
    {"metrics": ["visitors", "visits"], "date_range": RANGE, "filters": [["contains", "visit:entry_page", ["/a"]]]},
    # event:page from each visit's pages (issue 13): the breakdown, page filters, pages with visit filters
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["event:page"]},
    {"metrics": ["visitors", "pageviews"], "date_range": RANGE, "dimensions": ["event:page"], "include": {"bots": True}},
    {
        "metrics": ["visitors", "pageviews"],
        "date_range": RANGE,
        "dimensions": ["event:page"],
        "filters": [["is", "visit:source", ["Google"]]],
    },
    {"metrics": ALL, "date_range": RANGE, "filters": [["is", "event:page", ["/b"]]]},
    {"metrics": ALL, "date_range": [RANGE[1], RANGE[1]], "filters": [["is", "event:page", ["/c", "/d"]]]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/a", "/c"]]]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:exit_page"], "filters": [["is_not", "event:page", ["/a"]]]},
    {
        "metrics": ALL,
        "date_range": RANGE,
        "dimensions": ["visit:entry_page", "event:page"],
        "filters": [["or", [["is", "visit:device", ["mobile"]], ["is_not", "event:page", ["/a"]]]]],
    },
    {
        "metrics": ["visitors", "visits", "events"],
        "date_range": RANGE,
        "dimensions": ["visit:utm_campaign"],
        "filters": [["not", ["is", "event:page", ["/b"]]], ["is", "visit:device", ["desktop"]]],
    },
    # the dashboard's series with its filters: each day's pieces of the visits (glued ones too)
    {
        "metrics": ["visitors", "pageviews"],
        "date_range": RANGE,
        "dimensions": ["time:day"],
        "filters": [["is", "visit:source", ["Google"]]],
    },
    {
        "metrics": ["visitors", "pageviews", "events"],
        "date_range": RANGE,
        "dimensions": ["time:day"],
        "filters": [["is", "event:page", ["/c"]]],
    },
    {
        "metrics": ["visitors", "pageviews"],
        "date_range": RANGE,
        "dimensions": ["time:day", "event:page"],
        "filters": [["is", "visit:utm_campaign", ["spring"]]],
    },
    {
        "metrics": ["visitors", "events"],
        "date_range": RANGE,
        "dimensions": ["time:day", "visit:device"],
        "filters": [["is_not", "visit:source", ["Bing"]]],
        "include": {"bots": True},
    },
    # event:name from each visit's event names: the custom events panel with its filters
    {"metrics": ["visitors", "events"], "date_range": RANGE, "dimensions": ["event:name"]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["event:name"], "filters": [["is", "visit:source", ["Google"]]]},
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:device"], "filters": [["is", "event:name", ["click"]]]},
    {
        "metrics": ["visitors", "pageviews", "events"],
        "date_range": RANGE,
        "dimensions": ["time:day", "event:name"],
        "filters": [["is_not", "visit:utm_campaign", ["spring"]]],
    },
    # a page filter (any case) with a visit filter: pages checked per page, the visit filter once per visit
    {
        "metrics": ["visitors", "pageviews", "bounce_rate"],
        "date_range": RANGE,
        "dimensions": ["visit:source"],
        "filters": [["is", "event:page", ["/A", "/c"], {"case_sensitive": False}], ["is_not", "visit:device", ["mobile"]]],
    },
    {
        "metrics": ["visitors", "pageviews"],
        "date_range": RANGE,
        "dimensions": ["event:page"],
        "filters": [["is", "event:page", ["/a", "/b"]], ["is", "visit:source", ["Google", "Bing"]]],
    },
    # page and name together, from each visit's (page, name) pairs: the custom events panel after clicking a page,
    # the top pages after clicking an event, both as dimensions, a visit breakdown and the series with both filters
    {"metrics": ["visitors", "events"], "date_range": RANGE, "dimensions": ["event:name"], "filters": [["is", "event:page", ["/b"]]]},
    {
        "metrics": ALL,
        "date_range": RANGE,
        "dimensions": ["event:page"],
        "filters": [["is", "event:name", ["click"]], ["is_not", "visit:device", ["mobile"]]],
    },
    {"metrics": ALL, "date_range": RANGE, "dimensions": ["event:page", "event:name"], "filters": [["is_not", "event:page", ["/a"]]]},
    {
        "metrics": ALL,
        "date_range": RANGE,
        "dimensions": ["visit:source"],
        "filters": [["or", [["is", "event:page", ["/c"]], ["is", "event:name", ["click"]]]]],
    },
    {
        "metrics": ["visitors", "pageviews", "events"],
        "date_range": RANGE,
        "dimensions": ["time:day", "event:name"],
        "filters": [["contains", "event:page", ["/b", "/d"]]],
    },
]


@pytest.mark.parametrize("body", QUERIES)
def test_rollup_answers_what_the_query_time_plan_answers(data: Any, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rolled, plain = both(data, body, monkeypatch)
    assert rolled == plain and plain


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": ALL, "date_range": RANGE, "dimensions": ["event:page"]},
        {"metrics": ALL, "date_range": RANGE, "filters": [["is", "event:page", ["/a"]]]},
        {"metrics": ["visitors"], "date_range": RANGE, "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/a"]]]},
    ],
)
def test_a_partner_rollup_answer_is_its_own_scope_s(data: Any, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rolled, plain = both(data, body, monkeypatch, "partner")
    assert rolled == plain and plain
    assert plain[0]["metrics"][0] == 1  # the partner's one visitor, none of the mall's


def test_page_queries_read_the_rollup_not_the_events(data: Any) -> None:
    from beacon.query.model import parse
    from beacon.query.sql import Builder

    for body in QUERIES[-23:]:
        q = parse(body, NOW)
        b = Builder(q, "mall", data.full_table, 30)
        assert rollup.usable(q, b), body
        b.rollup = rollup.prepare(data, "mall", q, 30)
        sql, _ = b.build(10, 0, False)
        assert rollup.visits_table(data) in sql and f"FROM {data.full_table} " not in sql, body


def test_the_rollup_is_read_and_flags_the_visitors_it_cannot_give(data: Any) -> None:
    query.run(data, "mall", {"metrics": ["visits"], "date_range": RANGE}, now=NOW)
    days = data.query(f"SELECT DISTINCT day FROM {rollup.visits_table(data)} WHERE scope = 'mall'")
    with_events = data.query(
        f"SELECT DISTINCT toDate(received_at) FROM {data.full_table} WHERE scope = 'mall' "
        f"AND is_bot = 0 AND toDate(received_at) BETWEEN '{RANGE[0]}' AND '{RANGE[1]}'"
    )
    assert set(with_events) <= set(days) and len(with_events) >= 2  # rows of other tests' days may remain
    flagged = data.query(
        f"SELECT count(DISTINCT vkey) FROM {rollup.visits_table(data)} WHERE (link = 1 OR cut = 1) "
        "AND vkey IN (cityHash64('cross'), cityHash64('camp'))"
    )[0][0]
    assert flagged == 2


def test_the_rollup_follows_new_events_and_forgotten_visitors(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"metrics": ALL, "date_range": RANGE, "dimensions": ["visit:source"]}
    before, _ = both(data, body, monkeypatch)
    insert(data, [event("new", MIDNIGHT + dt.timedelta(hours=3), "/n", source="Direct-ish")])
    after, plain = both(data, body, monkeypatch)
    assert after == plain and after != before
    assert data.forget("mall", "visitor-none") == 0
    assert data.forget("mall", "new") == 1
    assert data.query(f"SELECT count() FROM {rollup.visits_table(data)} WHERE vkey = cityHash64('new')")[0][0] == 0
    again, plain = both(data, body, monkeypatch)
    assert again == plain == before


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": ["visitors", "pageviews", "events"], "date_range": RANGE, "dimensions": ["time:day"]},
        {"metrics": ["visitors", "pageviews"], "date_range": RANGE, "dimensions": ["time:day"], "include": {"bots": True}},
        {"metrics": ["events", "visitors"], "date_range": RANGE},
    ],
)
def test_daily_counts_from_the_rollup_equal_the_events(data: Any, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rolled, plain = both(data, body, monkeypatch)
    assert rolled == plain and plain


def test_migrate_adds_the_rollup_to_a_table_of_the_previous_release(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from beacon.store import Store
    from tests.test_migrate import OLD_ROWS, PREVIOUS

    store.command("DROP DATABASE IF EXISTS beacon_prev_rollup")
    store.command("CREATE DATABASE beacon_prev_rollup")
    store.command(PREVIOUS.format(table="beacon_prev_rollup.events"))
    prev = Store(store.dsn, "beacon_prev_rollup", "events", 395, 1000)
    prev.insert_lines(OLD_ROWS, "old-release-rollup")
    try:
        prev.migrate()
        prev.migrate()  # safe to repeat: the old rows are summed once
        assert prev.query(
            f"SELECT scope, day, is_bot, sum(events) FROM {rollup.days_table(prev)} GROUP BY scope, day, is_bot ORDER BY is_bot"
        ) == [("mall", dt.date(2025, 11, 24), 0, 1), ("mall", dt.date(2025, 11, 24), 1, 1)]
        body = {"metrics": ALL, "date_range": ["2025-11-24", "2025-11-24"], "include": {"bots": True}}
        rolled, plain = both(prev, body, monkeypatch)
        assert rolled == plain == [{"dimensions": [], "metrics": [2, 2, 1, 2, 50, 0, 0.5]}]
        prev.insert_lines(
            OLD_ROWS.replace(b"-000000000001", b"-000000000003").replace(b"-000000000002", b"-000000000004"), "new-release-rollup"
        )  # new inserts reach the day sums
        assert prev.query(f"SELECT sum(events) FROM {rollup.days_table(prev)}") == [(4,)]
    finally:
        store.command("DROP DATABASE IF EXISTS beacon_prev_rollup")


def test_migrate_turns_the_strings_of_an_earlier_rollup_into_dictionary_codes(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VERSION 3 rollup (pages and names as strings, with rows) is emptied and retyped; answers stay the plan's."""
    from beacon.store import Store

    store.command("DROP DATABASE IF EXISTS beacon_v3_rollup")
    old = Store(store.dsn, "beacon_v3_rollup", "events", 395, 1000)
    try:
        old.migrate()
        old.command(f"DROP TABLE {rollup.visits_table(old)}")
        strings = rollup.ddl(old)[0].replace("Array(LowCardinality(String))", "Array(String)")
        old.command(strings.replace("_page LowCardinality(String)", "_page String"))
        insert(old, scripted())
        body = {"metrics": ["visitors", "pageviews"], "date_range": RANGE, "dimensions": ["event:page"]}
        query.run(old, "mall", body, now=NOW)  # rows of the strings' table
        assert old.query(f"SELECT count() FROM {rollup.visits_table(old)}")[0][0] > 0
        old.migrate()
        old.migrate()  # safe to repeat
        types = dict(old.query("SELECT name, type FROM system.columns WHERE database = 'beacon_v3_rollup' AND table = 'events_visits'"))
        assert {name: types[name] for name in rollup.DICTIONARY} == rollup.DICTIONARY
        assert old.query(f"SELECT count() FROM {rollup.visits_table(old)}")[0][0] == 0
        rolled, plain = both(old, body, monkeypatch)
        assert rolled == plain and plain
        assert old.query(f"SELECT count() FROM {rollup.visits_table(old)}")[0][0] > 0  # computed again, as dictionary codes
    finally:
        store.command("DROP DATABASE IF EXISTS beacon_v3_rollup")


@pytest.mark.parametrize(
    "body",
    [
        {"date_range": RANGE, "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/a", "/b"]]]},
        {"date_range": RANGE, "dimensions": ["event:page"]},
        {"date_range": RANGE, "dimensions": ["event:name"], "filters": [["is_not", "event:page", ["/c"]]]},
    ],
)
def test_a_metric_asked_alone_is_its_column_of_every_metric(data: Any, body: dict[str, Any]) -> None:
    """Only the columns a query's metrics read are computed (sql.NEEDS): each metric alone gives what it gives among all."""
    order = [["visit:source" if "visit:source" in body["dimensions"] else body["dimensions"][0], "asc"]]
    every = query.run(data, "mall", {**body, "metrics": ALL, "order_by": order}, now=NOW)["results"]
    assert every
    for i, metric in enumerate(ALL):
        alone = query.run(data, "mall", {**body, "metrics": [metric], "order_by": order}, now=NOW)["results"]
        assert alone == [{"dimensions": r["dimensions"], "metrics": [r["metrics"][i]]} for r in every], metric
