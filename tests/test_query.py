"""Query API v2 on the real chDB engine: every metric, every dimension, the filters, with exact numbers.

The scripted day (D, minutes after 10:00 UTC), mall scope:
  A  Chrome/Windows/desktop/DE   0 / (from Google), 3 /shoes, 10 add_to_cart /shoes, 12 /cart   -> visit A1
                                 50 /hats (38 minutes later)                                   -> visit A2 (bounce)
  B  Safari/iOS/mobile/FR        5 / (utm news/email/spring), 8 /shoes                        -> visit B1
                                 15 /sale (utm fb/paid_social/autumn), 20 /shoes                -> visit B2 (campaign changed)
                                 25 / (utm news/email/spring again)                             -> visit B3 (bounce)
  C  Firefox/Linux/desktop/DE    90 /shoes (from Bing), 91 signup /shoes {plan: pro}            -> visit C1 (bounce, 60 s)
  D  cookieless Chrome/Android   100 /, 105 /hats                                               -> visit D1
  a bot (excluded unless asked) 0 /; partner "a"'s visitor P (2 pageviews) and an anonymous
  partner event; and A once on the day before (/old).
Visits 7, pageviews 12, events 14, bounces 3 (43 %), durations 720+0+180+300+0+60+300 s.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson
import pytest

from beacon import query
from beacon.query import QueryError

UTC = dt.timezone.utc
D = dt.datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
NOW = D.replace(hour=23)
DAY = D.date().isoformat()
ALL = ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"]

AGENTS = {
    "A": {
        "browser": "Chrome",
        "browser_version": "120",
        "os": "Windows",
        "os_version": "10",
        "device": "desktop",
        "country": "DE",
        "region": "BE",
        "city": "Berlin",
    },
    "B": {
        "browser": "Safari",
        "browser_version": "17",
        "os": "iOS",
        "os_version": "17",
        "device": "mobile",
        "country": "FR",
        "region": "IDF",
        "city": "Paris",
    },
    "C": {
        "browser": "Firefox",
        "browser_version": "121",
        "os": "Linux",
        "os_version": "",
        "device": "desktop",
        "country": "DE",
        "region": "BY",
        "city": "Munich",
    },
    "D": {
        "browser": "Chrome",
        "browser_version": "120",
        "os": "Android",
        "os_version": "14",
        "device": "mobile",
        "country": "",
        "region": "",
        "city": "",
    },
    "bot": {"browser": "Googlebot", "device": "bot"},
    "P": {"browser": "Chrome", "device": "desktop", "country": "US"},
}
NEWS = {"utm_source": "news", "utm_medium": "email", "utm_campaign": "spring", "source": "Newsletter", "channel": "Email"}
FB = {
    "utm_source": "fb",
    "utm_medium": "paid_social",
    "utm_campaign": "autumn",
    "utm_term": "boots",
    "utm_content": "banner1",
    "source": "Facebook",
    "channel": "Paid Social",
    "referrer": "https://l.facebook.com/",
}
_ids = itertools.count(1)


def row(
    who: str, minute: float, page: str, event: str = "pageview", *, scope: str = "mall", day: dt.datetime = D, **fields: Any
) -> dict[str, Any]:
    """One events-table row as the pixel path writes it, with the enrichment columns filled."""
    vid = {"bot": "bot-1", "anon": ""}.get(who, f"visitor-{who}")
    out = {
        "event_id": f"00000000-0000-7000-8000-{next(_ids):012d}",
        "received_at": f"{(day + dt.timedelta(minutes=minute)).timestamp():.3f}",
        "scope": scope,
        "visitor_id": vid,
        "mode": "cookieless" if who == "D" else "cookie",
        "event": event,
        "url": "https://shop.test" + page,
        "referrer": "",
        "props": {},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "is_bot": int(who == "bot"),
        "transport": "pixel",
    }
    out.update(AGENTS.get(who, {}))
    out.update(fields)
    return out


def scripted() -> list[dict[str, Any]]:
    return [
        row("A", 0, "/", referrer="https://www.google.com/", source="Google", channel="Organic Search"),
        row("A", 3, "/shoes", referrer="https://shop.test/"),
        row("A", 10, "/shoes", "add_to_cart", props={"sku": "S1"}),
        row("A", 12, "/cart", referrer="https://shop.test/shoes"),
        row("A", 50, "/hats", channel="Direct"),
        row("B", 5, "/?utm_source=news&utm_medium=email&utm_campaign=spring", **NEWS),
        row("B", 8, "/shoes", referrer="https://shop.test/"),
        row("B", 15, "/sale?utm_source=fb", **FB),
        row("B", 20, "/shoes", referrer="https://shop.test/sale"),
        row("B", 25, "/?utm_source=news&utm_medium=email&utm_campaign=spring", **NEWS),
        row("C", 90, "/shoes", referrer="https://www.bing.com/", source="Bing", channel="Organic Search"),
        row("C", 91, "/shoes", "signup", props={"plan": "pro"}),
        row("D", 100, "/", channel="Direct"),
        row("D", 105, "/hats", referrer="https://shop.test/"),
        row("bot", 0, "/"),
        row("P", 1, "/ad", scope="a"),
        row("P", 2, "/ad2", scope="a"),
        row("anon", 3, "/ad", scope="a"),
        row("A", 120, "/old", day=D - dt.timedelta(days=1), channel="Direct"),
    ]


def insert(store: Any, rows: list[dict[str, Any]]) -> None:
    store.insert_lines(b"\n".join(orjson.dumps(r) for r in rows), f"test-{next(_ids)}")


@pytest.fixture(scope="module")
def data(store: Any) -> Any:
    store.command(f"TRUNCATE TABLE {store.full_table}")
    insert(store, scripted())
    yield store
    store.command(f"TRUNCATE TABLE {store.full_table}")


def ask(store: Any, scope: str = "mall", **body: Any) -> list[tuple[list[str], list[Any]]]:
    body.setdefault("date_range", "day")
    answer = query.run(store, scope, body, now=NOW)
    return [(r["dimensions"], r["metrics"]) for r in answer["results"]]


def totals(store: Any, **body: Any) -> dict[str, Any]:
    [(_, values)] = ask(store, metrics=ALL, **body)
    return dict(zip(ALL, values))


# -- metrics ----------------------------------------------------------------------


def test_every_metric_over_the_day(data):
    assert totals(data) == {
        "visitors": 4,
        "visits": 7,
        "pageviews": 12,
        "events": 14,
        "bounce_rate": 43,
        "visit_duration": 223,
        "views_per_visit": 1.71,
    }


@pytest.mark.parametrize(
    "metric, value",
    [
        ("visitors", 4),
        ("visits", 7),
        ("pageviews", 12),
        ("events", 14),
        ("bounce_rate", 43),
        ("visit_duration", 223),
        ("views_per_visit", 1.71),
    ],
)
def test_each_metric_alone(data, metric, value):
    assert ask(data, metrics=[metric]) == [([], [value])]


def test_bots_are_excluded_unless_asked(data):
    # the bot adds a visitor, a bounced visit of 0 s and a pageview; 13/8 = 1.625 rounds half up
    assert totals(data, include={"bots": True}) == {
        "visitors": 5,
        "visits": 8,
        "pageviews": 13,
        "events": 15,
        "bounce_rate": 50,
        "visit_duration": 195,
        "views_per_visit": 1.63,
    }


def test_an_empty_range_answers_zeros(data):
    future = (D + dt.timedelta(days=5)).date().isoformat()
    assert totals(data, date_range=[future, future]) == dict.fromkeys(ALL, 0)
    assert ask(data, metrics=["visitors"], dimensions=["visit:source"], date_range=[future, future]) == []


def test_date_ranges(data):
    assert totals(data, date_range="7d")["visits"] == 8  # A's visit the day before
    assert totals(data, date_range="7d")["visitors"] == 4
    assert totals(data, date_range=[(D - dt.timedelta(days=1)).date().isoformat(), DAY])["pageviews"] == 13
    assert totals(data, date_range=[f"{DAY}T10:00:00Z", f"{DAY}T10:30:00Z"])["visits"] == 4
    assert totals(data, date_range=[f"{DAY}T12:00:00+02:00", f"{DAY}T12:30:00+02:00"])["visits"] == 4


def test_a_longer_visit_timeout_joins_what_the_gap_split(data):
    one_hour = query.run(data, "mall", {"metrics": ["visits", "bounce_rate"], "date_range": "day"}, now=NOW, visit_timeout=60)
    assert one_hour["results"] == [{"dimensions": [], "metrics": [6, 33]}]  # A1+A2 joined; B3, C1 bounce


# -- dimensions -------------------------------------------------------------------

VISITS = ["visitors", "visits", "bounce_rate"]


@pytest.mark.parametrize(
    "dimension, expected",
    [
        (
            "visit:source",
            [([""], [2, 2, 50]), (["Newsletter"], [1, 2, 50]), (["Bing"], [1, 1, 100]), (["Facebook"], [1, 1, 0]), (["Google"], [1, 1, 0])],
        ),
        (
            "visit:channel",
            [(["Direct"], [2, 2, 50]), (["Email"], [1, 2, 50]), (["Organic Search"], [2, 2, 50]), (["Paid Social"], [1, 1, 0])],
        ),
        (
            "visit:referrer",
            [
                ([""], [3, 4, 50]),
                (["https://l.facebook.com/"], [1, 1, 0]),
                (["https://www.bing.com/"], [1, 1, 100]),
                (["https://www.google.com/"], [1, 1, 0]),
            ],
        ),
        ("visit:utm_source", [([""], [3, 4, 50]), (["news"], [1, 2, 50]), (["fb"], [1, 1, 0])]),
        ("visit:utm_medium", [([""], [3, 4, 50]), (["email"], [1, 2, 50]), (["paid_social"], [1, 1, 0])]),
        ("visit:utm_campaign", [([""], [3, 4, 50]), (["spring"], [1, 2, 50]), (["autumn"], [1, 1, 0])]),
        ("visit:utm_term", [([""], [4, 6, 50]), (["boots"], [1, 1, 0])]),
        ("visit:utm_content", [([""], [4, 6, 50]), (["banner1"], [1, 1, 0])]),
        ("visit:browser", [(["Chrome"], [2, 3, 33]), (["Safari"], [1, 3, 33]), (["Firefox"], [1, 1, 100])]),
        ("visit:browser_version", [(["120"], [2, 3, 33]), (["17"], [1, 3, 33]), (["121"], [1, 1, 100])]),
        ("visit:os", [(["iOS"], [1, 3, 33]), (["Windows"], [1, 2, 50]), (["Android"], [1, 1, 0]), (["Linux"], [1, 1, 100])]),
        ("visit:os_version", [(["17"], [1, 3, 33]), (["10"], [1, 2, 50]), ([""], [1, 1, 100]), (["14"], [1, 1, 0])]),
        ("visit:device", [(["mobile"], [2, 4, 25]), (["desktop"], [2, 3, 67])]),
        ("visit:country", [(["DE"], [2, 3, 67]), (["FR"], [1, 3, 33]), ([""], [1, 1, 0])]),
        ("visit:region", [(["IDF"], [1, 3, 33]), (["BE"], [1, 2, 50]), ([""], [1, 1, 0]), (["BY"], [1, 1, 100])]),
        ("visit:city", [(["Paris"], [1, 3, 33]), (["Berlin"], [1, 2, 50]), ([""], [1, 1, 0]), (["Munich"], [1, 1, 100])]),
        ("visit:entry_page", [(["/"], [3, 4, 25]), (["/hats"], [1, 1, 100]), (["/sale"], [1, 1, 0]), (["/shoes"], [1, 1, 100])]),
        ("visit:exit_page", [(["/shoes"], [2, 3, 33]), (["/hats"], [2, 2, 50]), (["/"], [1, 1, 100]), (["/cart"], [1, 1, 0])]),
    ],
)
def test_each_visit_dimension(data, dimension, expected):
    assert ask(data, metrics=VISITS, dimensions=[dimension], order_by=[["visits", "desc"], [dimension, "asc"]]) == expected


EVENTS = ["visitors", "visits", "pageviews", "events"]


@pytest.mark.parametrize(
    "dimension, expected",
    [
        (
            "event:page",
            [
                (["/"], [3, 4, 4, 4]),
                (["/shoes"], [3, 4, 4, 6]),
                (["/hats"], [2, 2, 2, 2]),
                (["/cart"], [1, 1, 1, 1]),
                (["/sale"], [1, 1, 1, 1]),
            ],
        ),
        ("event:name", [(["pageview"], [4, 7, 12, 12]), (["add_to_cart"], [1, 1, 0, 1]), (["signup"], [1, 1, 0, 1])]),
        ("event:props:sku", [([""], [4, 7, 12, 13]), (["S1"], [1, 1, 0, 1])]),
        ("event:props:plan", [([""], [4, 7, 12, 13]), (["pro"], [1, 1, 0, 1])]),
        ("time:hour", [([f"{DAY} 10:00:00"], [2, 5, 9, 10]), ([f"{DAY} 11:00:00"], [2, 2, 3, 4])]),
        ("time:day", [([DAY], [4, 7, 12, 14])]),
    ],
)
def test_each_event_dimension(data, dimension, expected):
    order = [["pageviews", "desc"], [dimension, "asc"]] if not dimension.startswith("time:") else None
    assert ask(data, metrics=EVENTS, dimensions=[dimension], **({"order_by": order} if order else {})) == expected


@pytest.mark.parametrize("dimension", ["event:page", "event:name", "event:props:sku", "time:hour", "time:day"])
def test_queries_without_visits_count_the_same(data, dimension):
    # visitors, pageviews and events alone skip the visit computation; the numbers must not change
    common = {"dimensions": [dimension], "order_by": [[dimension, "asc"]], "filters": [["not", ["is", "event:page", ["/cart"]]]]}
    full = ask(data, metrics=EVENTS, **common)
    lean = ask(data, metrics=["visitors", "pageviews", "events"], **common)
    assert lean == [(dims, [m[0], m[2], m[3]]) for dims, m in full] and lean


def test_time_day_over_a_week_in_date_order(data):
    assert ask(data, metrics=["visitors", "pageviews"], dimensions=["time:day"], date_range="7d") == [
        ([(D - dt.timedelta(days=1)).date().isoformat()], [1, 1]),
        ([DAY], [4, 12]),
    ]


def test_duration_and_views_per_visit_by_a_dimension(data):
    assert ask(data, metrics=["visit_duration", "views_per_visit"], dimensions=["visit:device"], order_by=[["visit:device", "asc"]]) == [
        (["desktop"], [260, 1.67]),
        (["mobile"], [195, 1.75]),
    ]
    assert ask(data, metrics=["views_per_visit"], dimensions=["visit:browser"]) == [
        (["Chrome"], [2.0]),
        (["Safari"], [1.67]),
        (["Firefox"], [1.0]),
    ]


def test_two_dimensions(data):
    assert ask(
        data,
        metrics=["visits"],
        dimensions=["visit:entry_page", "visit:exit_page"],
        order_by=[["visit:entry_page", "asc"], ["visit:exit_page", "asc"]],
    ) == [
        (["/", "/"], [1]),
        (["/", "/cart"], [1]),
        (["/", "/hats"], [1]),
        (["/", "/shoes"], [1]),
        (["/hats", "/hats"], [1]),
        (["/sale", "/shoes"], [1]),
        (["/shoes", "/shoes"], [1]),
    ]


def test_the_campaign_change_and_the_gap_make_visits(data):
    # B came three times within 20 minutes, each with another campaign than the last: three visits
    assert ask(
        data,
        metrics=["visits", "pageviews"],
        dimensions=["visit:utm_campaign"],
        filters=[["is", "visit:browser", ["Safari"]]],
        order_by=[["visit:utm_campaign", "asc"]],
    ) == [(["autumn"], [1, 2]), (["spring"], [2, 3])]
    # A's 38 minutes of silence split A in two; the second visit has no source of its own
    assert ask(
        data,
        metrics=["visits", "visit_duration"],
        dimensions=["visit:entry_page"],
        filters=[["is", "visit:browser", ["Chrome"]], ["is", "visit:device", ["desktop"]]],
        order_by=[["visit:entry_page", "asc"]],
    ) == [(["/"], [1, 720]), (["/hats"], [1, 0])]


def test_cookieless_visitors_get_visits(data):
    assert totals(data, filters=[["is", "visit:os", ["Android"]]]) == {
        "visitors": 1,
        "visits": 1,
        "pageviews": 2,
        "events": 2,
        "bounce_rate": 0,
        "visit_duration": 300,
        "views_per_visit": 2.0,
    }


# -- filters ----------------------------------------------------------------------

FOUR = ["visitors", "visits", "pageviews", "events"]


@pytest.mark.parametrize(
    "filters, expected",
    [
        ([["is", "visit:country", ["DE"]]], [2, 3, 5, 7]),
        ([["is", "visit:country", ["DE", "FR"]]], [3, 6, 10, 12]),
        ([["is_not", "visit:country", ["DE"]]], [2, 4, 7, 7]),
        ([["contains", "event:page", ["sho"]]], [3, 4, 4, 6]),
        ([["contains_not", "event:page", ["sho"]]], [3, 6, 8, 8]),
        ([["is", "event:name", ["add_to_cart", "signup"]]], [2, 2, 0, 2]),
        ([["is", "event:props:plan", ["pro"]]], [1, 1, 0, 1]),
        ([["is", "visit:entry_page", ["/"]]], [3, 4, 8, 9]),
        ([["is", "visit:exit_page", ["/shoes"]]], [2, 3, 5, 6]),
        ([["contains", "visit:source", ["GOO"]]], [0, 0, 0, 0]),
        ([["contains", "visit:source", ["GOO"], {"case_sensitive": False}]], [1, 1, 3, 4]),
        ([["is", "visit:city", ["paris"], {"case_sensitive": False}]], [1, 3, 5, 5]),
        ([["is", "visit:device", ["mobile"]], ["is", "event:page", ["/hats"]]], [1, 1, 1, 1]),
        ([["and", [["is", "visit:device", ["mobile"]], ["is", "event:page", ["/hats"]]]]], [1, 1, 1, 1]),
        ([["or", [["is", "visit:country", ["FR"]], ["is", "visit:browser", ["Firefox"]]]]], [2, 4, 6, 7]),
        ([["not", ["is", "visit:channel", ["Direct", "Email"]]]], [3, 3, 6, 8]),
        (
            [
                [
                    "or",
                    [
                        ["is", "event:page", ["/cart"]],
                        ["and", [["is", "visit:os", ["iOS"]], ["not", ["contains", "event:page", ["/shoes"]]]]],
                    ],
                ]
            ],
            [2, 4, 4, 4],
        ),
    ],
)
def test_filters_and_their_combinations(data, filters, expected):
    assert ask(data, metrics=FOUR, filters=filters) == [([], expected)]


def test_filter_with_a_breakdown(data):
    assert ask(data, metrics=["visitors", "events"], dimensions=["visit:source"], filters=[["is", "event:name", ["add_to_cart"]]]) == [
        (["Google"], [1, 1])
    ]


def test_filter_values_are_bound_not_spliced(data):
    evil = "x') OR 1=1 OR (url = '"
    assert ask(data, metrics=["events"], filters=[["is", "event:page", [evil]]]) == [([], [0])]
    assert ask(data, metrics=["events"], filters=[["contains", "visit:source", ["%' OR '1'='1"]]]) == [([], [0])]


# -- order, pagination, scope, realtime -------------------------------------------


def test_order_by_and_pagination(data):
    body = {
        "metrics": ["pageviews"],
        "dimensions": ["event:page"],
        "order_by": [["pageviews", "desc"], ["event:page", "asc"]],
        "date_range": "day",
        "pagination": {"limit": 2, "offset": 1},
        "include": {"total_rows": True},
    }
    answer = query.run(data, "mall", body, now=NOW)
    assert [(r["dimensions"], r["metrics"]) for r in answer["results"]] == [(["/shoes"], [4]), (["/hats"], [2])]
    assert answer["meta"]["total_rows"] == 5
    assert answer["query"]["pagination"] == {"limit": 2, "offset": 1}
    body["pagination"] = {"limit": 2, "offset": 10}
    answer = query.run(data, "mall", body, now=NOW)
    assert answer["results"] == [] and answer["meta"]["total_rows"] == 5
    assert ask(data, metrics=["pageviews"], dimensions=["event:page"], order_by=[["event:page", "desc"]])[0] == (["/shoes"], [4])


def test_a_scope_reads_only_its_own_rows(data):
    assert ask(data, "a", metrics=["visitors", "visits", "pageviews"]) == [([], [1, 2, 3])]  # anonymous: a visit, no visitor
    assert ask(data, "a", metrics=["visitors"], dimensions=["visit:country"]) == [(["US"], [1]), ([""], [0])]
    assert ask(data, "b", metrics=["visitors", "events"]) == [([], [0, 0])]
    assert ask(data, "mall", metrics=["visitors"], filters=[["is", "visit:country", ["US"]]]) == [([], [0])]


def test_realtime_is_the_last_five_minutes(data):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ago = now - dt.timedelta(minutes=30)
    insert(data, [row(who, minute, "/", day=ago, scope="rt") for who, minute in [("A", 26), ("B", 28), ("C", 10), ("bot", 29)]])
    answer = query.run(data, "rt", {"metrics": ["visitors", "pageviews"], "date_range": "realtime"}, now=now)
    assert answer["results"] == [{"dimensions": [], "metrics": [2, 2]}]
    assert answer["query"]["date_range"][0] == (now - dt.timedelta(minutes=5)).isoformat()


# -- bad queries ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, names",
    [
        ([], "JSON object"),
        ({"date_range": "day"}, "metrics"),
        ({"metrics": ["visitors", "money"], "date_range": "day"}, "unknown metric 'money'"),
        ({"metrics": "visitors", "date_range": "day"}, "metrics"),
        ({"metrics": ["visitors"], "date_range": "day", "dimensions": ["visit:shoe_size"]}, "unknown dimension 'visit:shoe_size'"),
        ({"metrics": ["visitors"], "date_range": "day", "dimensions": ["event:props:"]}, "unknown dimension"),
        ({"metrics": ["visitors"], "date_range": "day", "dimensions": ["event:props:x'] OR 1=1"]}, "unknown dimension"),
        ({"metrics": ["visitors"]}, "date_range is required"),
        ({"metrics": ["visitors"], "date_range": "fortnight"}, "date_range 'fortnight'"),
        ({"metrics": ["visitors"], "date_range": ["2026-01-01"]}, "date_range"),
        ({"metrics": ["visitors"], "date_range": ["2026-13-01", "2026-01-02"]}, "'2026-13-01'"),
        ({"metrics": ["visitors"], "date_range": ["2026-02-01", "2026-01-01"]}, "from must be before to"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["is", "visit:source"]]}, "filter 'is'"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["equals", "visit:source", ["x"]]]}, "operator 'equals'"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["is", "visit:nope", ["x"]]]}, "filter dimension 'visit:nope'"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["is", "visit:source", "Google"]]}, "filter values"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["is", "visit:source", [1]]]}, "filter value 1"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["and", []]]}, "'and'"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": [["not", ["is", "time:day", ["x"]]]]}, "time:day"),
        ({"metrics": ["visitors"], "date_range": "day", "filters": "x"}, "filters must be a list"),
        ({"metrics": ["visitors"], "date_range": "day", "order_by": [["visits", "desc"]]}, "order_by 'visits'"),
        ({"metrics": ["visitors"], "date_range": "day", "order_by": [["visitors", "up"]]}, "order_by entry"),
        ({"metrics": ["visitors"], "date_range": "day", "pagination": {"limit": 0}}, "pagination.limit"),
        ({"metrics": ["visitors"], "date_range": "day", "pagination": {"limit": 10001}}, "pagination.limit"),
        ({"metrics": ["visitors"], "date_range": "day", "pagination": {"offset": -1}}, "pagination.offset"),
        ({"metrics": ["visitors"], "date_range": "day", "include": {"imports": True}}, "unknown include 'imports'"),
        ({"metrics": ["visitors"], "date_range": "day", "include": {"bots": "yes"}}, "include.bots"),
        ({"metrics": ["visitors"], "date_range": "day", "scope": "a"}, "unknown key 'scope'"),
    ],
)
def test_bad_queries_name_the_bad_part(body, names):
    with pytest.raises(QueryError) as err:
        query.parse(body, NOW)
    assert names in str(err.value)


def test_deep_filters_are_refused():
    deep: Any = ["is", "visit:source", ["x"]]
    for _ in range(50):
        deep = ["not", deep]
    with pytest.raises(QueryError, match="nested deeper"):
        query.parse({"metrics": ["visitors"], "date_range": "day", "filters": [deep]}, NOW)
