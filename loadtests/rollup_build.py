"""How long the visits rollup takes to build for a range, from nothing: one command, printed figures.

    python loadtests/rollup_build.py --dir /tmp/copy-of-a-seeded-set [--days 31] [--scopes mall,a] [--ahead]

Opens the chDB directory of a seeded data set (loadtests/dashboard_bench.py --dir D --keep;
run it on a copy: this script empties the rollup tables), empties the rollup
(`<events>_visits` and `<events>_visit_days`), then builds it for the last --days days of
the data: by default through the first visits query over the range (what a dashboard
view does when it finds no rollup), with --ahead through `beacon.query.rollup.build` (what
the flusher's passes run, beacon/query/warm.py, here without their one-statement pace). Prints wall seconds and the process's
CPU seconds (chDB runs in it) per scope, and the load average. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import query  # noqa: E402
from beacon.query import rollup  # noqa: E402
from beacon.store import Store  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dir", required=True, help="chDB data set (a copy: its rollup is emptied)")
    ap.add_argument("--days", type=int, default=31)
    ap.add_argument("--scopes", default="mall,a")
    ap.add_argument("--ahead", action="store_true", help="build with beacon.query.rollup.build (the flusher's job)")
    args = ap.parse_args()
    store = Store(f"chdb:///{args.dir}/clickhouse", "bench", "events", 3650, 1000)
    try:
        store.migrate()
        for table in (rollup.visits_table(store), rollup.marks_table(store)):
            store.command(f"TRUNCATE TABLE {table}")
        newest = store.query(f"SELECT max(received_at) FROM {store.full_table}")[0][0]
        now = newest.replace(tzinfo=dt.timezone.utc) + dt.timedelta(seconds=1)
        end = now.date() + dt.timedelta(days=1)
        start = end - dt.timedelta(days=args.days)
        events = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
        print(f"{events:,} events in {args.dir}; rollup of {start} .. {end} (exclusive), bots excluded, timeout 30 min")
        print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        body = {"metrics": ["visits"], "date_range": [f"{start}T00:00:00Z", f"{end}T00:00:00Z"]}
        for scope in args.scopes.split(","):
            wall, spent = time.perf_counter(), cpu()
            if args.ahead:
                statements, _ = rollup.build(store, [scope], query.parse(body, now), 30, 10_000)
                print(f"{scope}: {statements} INSERT ... SELECT statements of at most {rollup.CHUNK_EVENTS:,} events")
            else:
                query.run(store, scope, body, now=now)
            wall, spent = time.perf_counter() - wall, cpu() - spent
            rows = store.query(f"SELECT count() FROM {rollup.visits_table(store)} WHERE scope = {{s:String}}", {"s": scope})[0][0]
            print(f"{scope}: {wall:.1f} s wall, {spent:.1f} CPU s; {rows:,} visit rows")
            wall, spent = time.perf_counter(), cpu()
            query.run(store, scope, body, now=now)
            print(f"{scope}: the next visits query over the range: {(time.perf_counter() - wall) * 1000:.0f} ms, {cpu() - spent:.2f} CPU s")
        if args.ahead:  # a new event today in every scope: what one pass of the flusher then recomputes
            scopes = args.scopes.split(",")
            for scope in scopes:
                line = orjson.dumps(
                    {"event_id": str(uuid.uuid4()), "received_at": f"{newest.timestamp():.3f}", "scope": scope, "visitor_id": "late"}
                    | {"mode": "cookie", "event": "pageview", "url": "https://shop.test/", "is_bot": 0, "transport": "pixel"}
                )
                store.insert_lines(line, f"rollup-build-{uuid.uuid4()}")
            wall, spent = time.perf_counter(), cpu()
            statements, _ = rollup.build(store, scopes, query.parse(body, now), 30, 10_000)
            took = f"{time.perf_counter() - wall:.2f} s, {cpu() - spent:.2f} CPU s"
            print(f"after one new event today in each of {', '.join(scopes)}: the pass recomputing today ({statements} INSERT): {took}")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
