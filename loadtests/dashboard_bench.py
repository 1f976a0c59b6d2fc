"""Each dashboard panel's query time over millions of events in chDB: one command, printed figures.

    python loadtests/dashboard_bench.py [--rows 10000000] [--visitors 1000000] [--days 30] [--repeat 3]
                                        [--dir /tmp/dash10 --keep] [--periods day,7d,30d] [--panels NAMES]

Seeds an embedded chDB with synthetic enriched events (loadtests/seed.py: INSERT ... SELECT
from numbers(); a temporary directory, or --dir, reused when it already holds the same
rows), then runs every query the mall's dashboard makes, through `beacon.query.run` and
`beacon.query.funnel.run` (the code path of the page and of `POST /api/v2/query`), for
each period (today, 7 days, 30 days) and each view: unfiltered, and after clicking a
source, a page and a country. Before a period's panels, one query computes the visits
rollup of the range's days that have none yet (printed as `rollup`; it runs once per day
of data, then when the day's events change). Each panel prints the median wall time
of --repeat runs and the median CPU seconds of the process (chDB runs in it), against
the 300 ms target; the load average is printed at the start and the end. See
docs/benchmarks.md.
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
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import query  # noqa: E402
from beacon.dashboard import panels  # noqa: E402
from beacon.query import funnel  # noqa: E402
from beacon.store import Store  # noqa: E402
from loadtests.seed import seed  # noqa: E402

TARGET_MS = 300.0
VIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    "all": (),
    "source=Google": (("visit:source", "Google"),),
    "page=/shoes": (("event:page", "/shoes"),),
    "country=DE": (("visit:country", "DE"),),
}
Body = Mapping[str, object]


def bodies(state: panels.State) -> list[tuple[str, Body]]:
    out: list[tuple[str, Body]] = [  # the page asks the cards in two queries per period
        ("cards", panels.totals_body(state)),
        ("cards (previous)", panels.totals_body(state.previous())),
        ("cards: commerce", panels.totals_body(state, panels.COMMERCE)),
        ("cards: commerce prev", panels.totals_body(state.previous(), panels.COMMERCE)),
        ("series", panels.series_body(state)),
        ("realtime", panels.realtime_body(state)),
    ]
    for p in panels.LISTS.values():
        s = panels.State(state.period, state.start, state.end, state.filters, "plan") if p.name == "props" else state
        out.append((p.name, panels.list_body(p, s)))
    out.append(("funnel", panels.funnel_body(state)))
    return out


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median wall ms, median CPU s) of `repeat` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), cpu()
        run()
        walls.append((time.perf_counter() - t) * 1000)
        cpus.append(cpu() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--visitors", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="", help="chDB directory (default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the --dir data for the next run")
    ap.add_argument("--periods", default="day,7d,30d")
    ap.add_argument("--panels", default="", help="only these panels, comma-separated (e.g. 'cards: commerce,props,funnel')")
    args = ap.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="beacon-dash-bench-"))
    store = Store(f"chdb:///{tmp}/clickhouse", "bench", "events", 3650, 1000)
    try:
        store.migrate()
        total = args.rows + args.rows // 10
        have = store.query(f"SELECT count() FROM {store.full_table}")[0][0]
        now = dt.datetime.now(dt.timezone.utc)
        if have != total:
            store.command(f"TRUNCATE TABLE {store.full_table}")
            started = time.perf_counter()
            seed(store, "mall", args.rows, args.visitors, now, args.days, "v-")
            seed(store, "a", args.rows // 10, args.visitors // 10, now, args.days, "a-")
            print(f"seeded {total:,} events in {time.perf_counter() - started:.1f} s ", end="")
        else:
            newest = store.query(f"SELECT max(received_at) FROM {store.full_table}")[0][0]
            now = newest.replace(tzinfo=dt.timezone.utc) + dt.timedelta(seconds=1)
            print(f"reusing {total:,} events in {tmp} ", end="")
        print(f"({args.rows:,} mall, {args.rows // 10:,} partner a; {args.days} days; {args.visitors:,} mall visitors)")
        print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores\n")
        today = now.date()
        slow, count = 0, 0
        for period in args.periods.split(","):
            days = {"day": 0, "7d": 6, "30d": 29}[period]
            state = panels.State(period, today - dt.timedelta(days=days), today)
            views = {name: dataclass_with(state, f) for name, f in VIEWS.items()}
            warm = panels.totals_body(state, ("visits",))
            wall, spent = timed(lambda b=warm: query.run(store, "mall", b, now=now), 1)
            print(f"== {period}: {state.start} .. {state.end}; rollup of the range's days: {wall / 1000:.1f} s ({spent:.1f} CPU s)")
            print(f"{'panel':<22}" + "".join(f"{name:>22}" for name in views))
            per_view = {name: bodies(s) for name, s in views.items()}
            for i, (panel, _) in enumerate(per_view["all"]):
                if args.panels and panel not in args.panels.split(","):
                    continue
                cells = []
                for name in views:
                    body = per_view[name][i][1]
                    runner = funnel.run if panel == "funnel" else query.run
                    try:
                        ms, spent = timed(lambda r=runner, b=body: r(store, "mall", b, now=now), args.repeat)
                    except query.QueryError as exc:
                        cells.append(f"n/a ({str(exc)[:12]})")
                        continue
                    count += 1
                    slow += ms > TARGET_MS
                    cells.append(f"{ms:6.0f} ms{'!' if ms > TARGET_MS else ' '} {spent:5.2f} cpu")
                print(f"{panel:<22}" + "".join(f"{c:>22}" for c in cells))
            print()
        print(
            f"median of {args.repeat} runs each (wall ms, CPU s); '!' marks a query over the {TARGET_MS:.0f} ms target: "
            f"{slow} of {count}; load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def dataclass_with(state: panels.State, filters: tuple[tuple[str, str], ...]) -> panels.State:
    return panels.State(state.period, state.start, state.end, filters, state.prop)


if __name__ == "__main__":
    sys.exit(main())
