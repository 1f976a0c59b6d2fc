"""Query API v2 over many events in chDB: seed N events (default 10 million), time some queries.

    python loadtests/query_bench.py                      # 10M events in a temporary chDB directory
    python loadtests/query_bench.py --events 1000000 --dir /tmp/qb --keep

The events are made by ClickHouse itself (INSERT ... SELECT FROM numbers()), so seeding
takes a minute rather than an hour of Python: 30 days, ~600k visitors, visits of five
events whose first one or more are pageviews (one pageview: a bounce), a landing source,
channel and campaign on each visit's first event, browser/OS/device/country per visitor,
2 % bots, 10 % of the events in a partner scope. Each query is run `--repeat` times; the
first (cold: for a visit query it computes the visits rollup of days not yet computed) and the
median of the rest are printed, against the query's target (1 s, a dashboard panel 300 ms). Figures depend on the machine;
compare runs on the same one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import query  # noqa: E402
from beacon.store import Store  # noqa: E402

SEED = """
INSERT INTO {table} (event_id, received_at, scope, visitor_id, mode, event, url, referrer, props, ip, user_agent,
                     is_bot, transport, utm_source, utm_medium, utm_campaign, source, channel, browser,
                     browser_version, os, os_version, device, country, region, city)
SELECT
    generateUUIDv4(number) AS event_id,
    fromUnixTimestamp64Milli(toInt64({start_ms:Int64} + (cityHash64(visit, 1) % {span_s:UInt64}) * 1000
                             + pos * 60000 + cityHash64(number, 2) % 30000), 'UTC') AS received_at,
    if(cityHash64(visitor, 9) % 10 = 0, 'partner-a', 'mall') AS scope,
    concat('v', toString(visitor)) AS visitor_id,
    'cookie' AS mode,
    if(pos < 1 + cityHash64(visit, 3) % 5, 'pageview', 'engagement') AS event,
    concat('https://shop.test/p/', toString(cityHash64(number, 4) % 500)) AS url,
    if(pos = 0, ['', 'https://www.google.com/', 'https://www.bing.com/', 'https://l.facebook.com/', ''][landing + 1], '')
        AS referrer,
    map() AS props,
    '203.0.113.0' AS ip,
    'Mozilla/5.0' AS user_agent,
    toUInt8(cityHash64(visitor, 5) % 50 = 0) AS is_bot,
    'pixel' AS transport,
    if(pos = 0 AND landing = 4, 'news', '') AS utm_source,
    if(pos = 0 AND landing = 4, 'email', '') AS utm_medium,
    if(pos = 0 AND landing = 4, concat('c', toString(cityHash64(visit, 6) % 20)), '') AS utm_campaign,
    if(pos = 0, ['', 'Google', 'Bing', 'Facebook', 'Newsletter'][landing + 1], '') AS source,
    if(pos = 0, ['Direct', 'Organic Search', 'Organic Search', 'Organic Social', 'Email'][landing + 1], '') AS channel,
    ['Chrome', 'Safari', 'Firefox', 'Edge'][cityHash64(visitor, 7) % 4 + 1] AS browser,
    toString(100 + cityHash64(visitor, 7) % 30) AS browser_version,
    ['Windows', 'iOS', 'Android', 'macOS', 'Linux'][cityHash64(visitor, 8) % 5 + 1] AS os,
    toString(cityHash64(visitor, 8) % 15) AS os_version,
    ['desktop', 'mobile', 'tablet'][cityHash64(visitor, 8) % 3 + 1] AS device,
    ['DE', 'FR', 'US', 'GB', 'IT', 'ES', 'NL', ''][cityHash64(visitor, 10) % 8 + 1] AS country,
    '' AS region,
    '' AS city
FROM (
    SELECT number, intDiv(number, 5) AS visit, number % 5 AS pos, cityHash64(intDiv(number, 5)) % {visitors:UInt64} AS visitor,
           cityHash64(intDiv(number, 5), 11) % 5 AS landing
    FROM numbers({first:UInt64}, {count:UInt64})
)
"""


def _panel(dim: str, metrics: tuple[str, ...] = ("visitors",)) -> dict:
    return {
        "metrics": list(metrics),
        "date_range": "30d",
        "dimensions": [dim],
        "order_by": [[metrics[0], "desc"], [dim, "asc"]],
        "pagination": {"limit": 10},
    }


# issue 11's target: a breakdown under 1 s; issue 13's: each dashboard panel under 300 ms
QUERIES = {
    "breakdown visit:source (visitors, visits, bounce_rate), 30d": (
        {"metrics": ["visitors", "visits", "bounce_rate"], "date_range": "30d", "dimensions": ["visit:source"]},
        1.0,
    ),
    "totals (all seven metrics), 30d": (
        {"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"], "date_range": "30d"},
        1.0,
    ),
    "breakdown event:page (visitors, pageviews), 30d, top 10": (
        {"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["event:page"], "pagination": {"limit": 10}},
        1.0,
    ),
    "breakdown visit:country filtered by visit:device, 7d": (
        {
            "metrics": ["visitors", "visits", "visit_duration"],
            "date_range": "7d",
            "dimensions": ["visit:country"],
            "filters": [["is", "visit:device", ["mobile"]]],
        },
        1.0,
    ),
    "panel cards (headline), 30d": (
        {"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "date_range": "30d"},
        0.3,
    ),
    "panel time series time:day, 30d": ({"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["time:day"]}, 0.3),
    "panel top pages": (_panel("event:page", ("visitors", "pageviews")), 0.3),
    "panel entry pages": (_panel("visit:entry_page", ("visitors", "visits")), 0.3),
    "panel exit pages": (_panel("visit:exit_page", ("visitors", "visits")), 0.3),
    "panel sources": (_panel("visit:source"), 0.3),
    "panel channels": (_panel("visit:channel"), 0.3),
    "panel campaigns": (_panel("visit:utm_campaign"), 0.3),
    "panel browsers": (_panel("visit:browser"), 0.3),
    "panel OS": (_panel("visit:os"), 0.3),
    "panel devices": (_panel("visit:device"), 0.3),
    "panel countries": (_panel("visit:country"), 0.3),
    "panel realtime visitors": ({"metrics": ["visitors"], "date_range": "realtime"}, 0.3),
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--visitors", type=int, default=600_000)
    ap.add_argument("--dir", default="", help="chDB directory (default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the seeded directory")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    path = Path(args.dir or tempfile.mkdtemp(prefix="beacon-qbench-"))
    store = Store(f"chdb:///{path}/clickhouse", "bench", "events", 395, 1000)
    store.migrate()
    now = dt.datetime.now(dt.timezone.utc)
    have = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
    if have != args.events:
        store.command(f"TRUNCATE TABLE {store.full_table}")
        t = time.perf_counter()
        start_ms = int((now - dt.timedelta(days=30)).timestamp() * 1000)
        chunk = 1_000_000
        for first in range(0, args.events, chunk):
            store.command(
                SEED.replace("{table}", store.full_table),
                {
                    "start_ms": start_ms,
                    "span_s": 30 * 86400 - 600,
                    "visitors": args.visitors,
                    "first": first,
                    "count": min(chunk, args.events - first),
                },
            )
        store.command(f"OPTIMIZE TABLE {store.full_table} FINAL")
        print(f"seeded {args.events:,} events in {time.perf_counter() - t:.1f} s ({path})")
    mall = store.query(f"SELECT count() FROM {store.full_table} WHERE scope = 'mall'")[0][0]
    print(f"{args.events:,} events, {mall:,} in the mall scope; {args.repeat} runs each\n")
    print(f"{'query':<58} {'cold s':>8} {'warm s':>8} {'cpu s':>8} {'target':>7}  rows")
    for name, (body, target) in QUERIES.items():
        times, cpus = [], []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), cpu()
            answer = query.run(store, "mall", body, now=now)
            times.append(time.perf_counter() - t)
            cpus.append(cpu() - c)
        warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
        met = "met" if warm < target else "MISSED"
        print(
            f"{name:<58} {times[0]:>8.3f} {warm:>8.3f} {statistics.median(cpus):>8.3f} {target:>5.1f}s {met:<6}  {len(answer['results'])}"
        )
    print(
        f"\nwarm: median wall time of runs 2..{args.repeat}; cpu: median CPU seconds of the process (chDB runs in it); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    store.close()
    if not args.keep and not args.dir:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
