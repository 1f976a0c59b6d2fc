"""Synthetic enriched events written straight into ClickHouse/chDB with one INSERT ... SELECT.

Used by the dashboard benchmark (10 million rows) and the dashboard browser tests (a few
thousand): ClickHouse generates the rows itself from `numbers(n)`, so seeding costs seconds,
not a Python loop. Every value is a pure function of the row number, so a data set is
reproducible; `id_prefix` marks the visitor ids so a test can look for them where they must
not appear.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SOURCES = "['', 'Google', 'Facebook', 'Newsletter', 'Bing', 'news.example']"
CHANNELS = "['Direct', 'Organic Search', 'Organic Social', 'Email', 'Organic Search', 'Referral']"
REFERRERS = "['', 'https://www.google.com/', 'https://www.facebook.com/', '', 'https://www.bing.com/', 'https://news.example/a']"
PAGES = "['/', '/shoes', '/bags', '/sale', '/checkout', '/about']"
BROWSERS = "['Chrome', 'Firefox', 'Safari', 'Edge']"
OSES = "['Windows', 'macOS', 'Android', 'iOS', 'Linux']"
DEVICES = "['desktop', 'mobile', 'tablet']"
COUNTRIES = "['DE', 'FR', 'US', 'GB', 'NL', 'ES']"
# A visitor's run of 7 events walks down the purchase funnel as far as its hash allows.
EVENT = (
    "multiIf(number % 7 = 1 AND {v} % 2 = 0, 'product_view', number % 7 = 2 AND {v} % 4 = 0, 'add_to_cart', "
    "number % 7 = 3 AND {v} % 8 = 0, 'begin_checkout', number % 7 = 4 AND {v} % 16 = 0, 'purchase', "
    "number % 7 = 5 AND {v} % 5 = 0, 'signup', 'pageview')"
)
COMMERCE = (
    ", if({e} = 'purchase', concat('order-', toString(number)), ''), "
    "if({e} = 'purchase', toDecimal64(25 + (number % 4) * 10, 4), toDecimal64(0, 4)), "
    "if({e} = 'purchase', 'EUR', '')"
)


def seed(
    store: Any,
    scope: str,
    rows: int,
    visitors: int,
    end: dt.datetime,
    days: int,
    id_prefix: str,
    host: str = "shop.test",
    chunk: int = 2_000_000,
) -> None:
    """`rows` events of `visitors` visitors in `scope`, spread evenly (in row order) over the `days` before `end`."""
    has = {
        r[0]
        for r in store.query(
            "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}", {"d": store.database, "t": store.table}
        )
    }
    for first in range(0, rows, chunk):
        _seed(store, scope, first, min(chunk, rows - first), rows, visitors, end, days, id_prefix, host, "order_id" in has)


def _seed(
    store: Any,
    scope: str,
    first: int,
    count: int,
    rows: int,
    visitors: int,
    end: dt.datetime,
    days: int,
    id_prefix: str,
    host: str,
    commerce: bool,
) -> None:
    span_ms = days * 86_400_000
    end_ms = int(end.timestamp() * 1000)
    v = f"cityHash64(intDiv(number, 7) % {int(visitors)}, '{scope}')"  # a visitor's row runs: one visit
    pick = "arrayElement({arr}, ({h} % length({arr})) + 1)"
    source = pick.format(arr=SOURCES, h=v)
    store.command(
        f"""
        INSERT INTO {store.full_table}
            (event_id, received_at, scope, visitor_id, mode, event, url, referrer, props, ip, user_agent, is_bot,
             transport, utm_source, utm_medium, utm_campaign, source, channel, browser, browser_version, os,
             device, country{", order_id, revenue, currency" if commerce else ""})
        SELECT
            generateUUIDv4(number),
            fromUnixTimestamp64Milli(toInt64({end_ms - span_ms} + intDiv(number * {span_ms}, {int(rows)})), 'UTC'),
            {{scope:String}},
            concat({{prefix:String}}, toString({v} % 1000000007)),
            'cookie',
            {EVENT.format(v=v)},
            concat('https://{host}', {pick.format(arr=PAGES, h="cityHash64(number)")}),
            if(number % 7 = 0, {pick.format(arr=REFERRERS, h=v)}, ''),
            if({EVENT.format(v=v)} = 'signup', map('plan', arrayElement(['free', 'pro'], (number % 2) + 1)), map()),
            '203.0.113.0', 'Mozilla/5.0 (seed)', 0, 'beacon',
            if({source} = 'Newsletter', 'newsletter', ''),
            if({source} = 'Newsletter', 'email', ''),
            if({source} = 'Newsletter', 'winter-sale', ''),
            {source},
            {pick.format(arr=CHANNELS, h=v)},
            {pick.format(arr=BROWSERS, h=f"({v} + 1)")},
            '120',
            {pick.format(arr=OSES, h=f"({v} + 2)")},
            {pick.format(arr=DEVICES, h=f"({v} + 3)")},
            {pick.format(arr=COUNTRIES, h=f"({v} + 4)")}
            {COMMERCE.format(e=EVENT.format(v=v)) if commerce else ""}
        FROM numbers({int(first)}, {int(count)})
    """,
        {"scope": scope, "prefix": id_prefix},
    )
