"""Each dashboard panel's query time over millions of events in chDB: one command, printed figures.

    python loadtests/dashboard_bench.py [--rows 10000000] [--visitors 1000000] [--days 30] [--repeat 3]

Seeds an embedded chDB (in a temporary directory) with synthetic enriched events
(loadtests/seed.py: INSERT ... SELECT from numbers()), then runs every query the mall's
dashboard makes for the last 30 days, unfiltered and filtered by one source, through
`beacon.query.run` (the code path of the page and of `POST /api/v2/query`), and prints
the median of --repeat runs per panel against the 300 ms target. Panels whose metrics the
query API does not answer in this build are listed as such. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import query  # noqa: E402
from beacon.dashboard import panels  # noqa: E402
from beacon.query import funnel  # noqa: E402
from beacon.store import Store  # noqa: E402
from loadtests.seed import seed  # noqa: E402

TARGET_MS = 300.0


def bodies(state: panels.State) -> list[tuple[str, dict]]:
    cards = panels.HEADLINE + panels.COMMERCE  # the page asks all the cards in one query per period
    out = [
        ("cards", panels.totals_body(state, cards)),
        ("cards (previous)", panels.totals_body(state.previous(), cards)),
        ("series", panels.series_body(state)),
        ("realtime", panels.realtime_body(state)),
    ]
    for p in panels.LISTS.values():
        s = panels.State(state.period, state.start, state.end, state.filters, "plan") if p.name == "props" else state
        out.append((p.name, panels.list_body(p, s)))
    out.append(("funnel", panels.funnel_body(state)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--visitors", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="beacon-dash-bench-"))
    try:
        store = Store(f"chdb:///{tmp}/clickhouse", "bench", "events", 3650, 1000)
        store.migrate()
        now = dt.datetime.now(dt.timezone.utc)
        started = time.perf_counter()
        seed(store, "mall", args.rows, args.visitors, now, args.days, "v-")
        seed(store, "a", args.rows // 10, args.visitors // 10, now, args.days, "a-")
        total = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
        print(
            f"seeded {total:,} events in {time.perf_counter() - started:.1f} s "
            f"({args.rows:,} mall, {args.rows // 10:,} partner a; {args.days} days)\n"
        )
        today = now.date()
        state = panels.State("30d", today - dt.timedelta(days=29), today)
        filtered = panels.State("30d", state.start, state.end, (("visit:source", "Google"),))
        slow = 0
        print(f"{'panel':<24}{'30 days':>12}{'source=Google':>16}   rows")
        for (name, body), (_, fbody) in zip(bodies(state), bodies(filtered)):
            cells = []
            rows = ""
            for b in (body, fbody):
                times = []
                try:
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        answer = (funnel if name == "funnel" else query).run(store, "mall", b, now=now)
                        times.append((time.perf_counter() - t0) * 1000)
                except query.QueryError as exc:
                    cells.append("n/a")
                    rows = f"not available: {str(exc)[:60]}"
                    continue
                ms = statistics.median(times)
                slow += ms > TARGET_MS
                cells.append(f"{ms:8.0f} ms" + ("!" if ms > TARGET_MS else " "))
                rows = rows or str(len(answer.get("results", answer.get("steps", []))))
            print(f"{name:<24}{cells[0]:>12}{cells[1]:>16}   {rows}")
        print(f"\nmedian of {args.repeat} runs each; '!' marks a query over the {TARGET_MS:.0f} ms target ({slow} of them)")
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
