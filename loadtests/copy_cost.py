"""What the copies' materialized views cost each insert: chDB's own insert with and without one view.

    python loadtests/copy_cost.py [--events 900000] [--batch 100000] [--rounds 3] [--view props]

Makes a fresh embedded store per run (`Store.migrate`, every view Beacon has), drops the
named copy's view (`<events>_<view>_mv`) in every other run, and inserts the same
`loadtests/bench.py` realistic events (40% carry properties) in batches, as the flusher
does (`Store.insert_lines`). Prints the process's CPU seconds (chDB runs in it) and wall
seconds per run, alternating without/with the view. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon.store import Store  # noqa: E402
from loadtests.bench import realistic_lines  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(bodies: list[bytes], drop: str) -> tuple[float, float]:
    tmp = tempfile.mkdtemp(prefix="beacon-copy-cost-")
    store = Store(f"chdb:///{tmp}/clickhouse", "bench", "events", 3650, 1000)
    try:
        store.migrate()
        if drop:
            store.command(f"DROP VIEW IF EXISTS {store.full_table}_{drop}_mv")
        store.insert_lines(bodies[0], "warm-up")
        spent, started = cpu(), time.perf_counter()
        for i, body in enumerate(bodies[1:]):
            store.insert_lines(body, f"batch-{i}")
        return cpu() - spent, time.perf_counter() - started
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, default=900_000, help="events measured (one more batch warms up)")
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--view", default="props", help="the copy whose view is dropped: props or purchases")
    args = ap.parse_args()
    n = args.events + args.batch
    bodies = [b"\n".join(realistic_lines(min(args.batch, n - s), seed=s)) for s in range(0, n, args.batch)]
    for _ in range(args.rounds):
        for drop in (args.view, ""):
            spent, wall = run(bodies, drop)
            label = f"without the {args.view} view" if drop else f"with the {args.view} view   "
            print(f"{label}: {spent:6.2f} CPU s, {wall:6.2f} s wall for {args.events:,} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
