"""The flusher's second job: the visits rollup of the dashboard's ranges, built before a view asks for it.

Why: computing a day's visits takes about a second of ClickHouse's time per million events, and a
view that finds no rollup for its range computes it (beacon/query/rollup.py), so the first look at
a 30-day range of 10 million events would wait half a minute, and every view of a day still
receiving events would recompute it. Here the flusher computes them ahead, off the web's path.

What: for the dashboard's defaults (the visit timeout setting, bots excluded) and each scope
with events in the last DAYS days (the 30-day view, its previous period and today), the days
whose rollup is missing or not of their current events. Past days are computed once (again
only if late events or a forgotten visitor change them); today is recomputed at each pass
that finds new events in it. A view then reads it (README, "Freshness").

When: from the flusher's loop, between batches, only when the last batch was not full (no
backlog) and `interval` seconds after the previous pass; a pass runs at most one INSERT
(rollup.CHUNK_EVENTS events at most, of every scope's days, the newest first: planning a
statement costs ~0.4 s whatever its size) and the next comes at once while days are left,
so a flush waits for one statement at most. With several flusher processes, a Redis key (SET NX PX,
renewed by its holder) gives the passes to one of them.

Failures: any error is one log line; the pass is tried again `interval` seconds later, and
flushing goes on meanwhile.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from beacon.columns import Row, str_of
from beacon.query import rollup
from beacon.query.model import parse

if TYPE_CHECKING:  # annotations only
    from beacon.rcluster import SyncRedis
    from beacon.store import Store

log = logging.getLogger("beacon.rollup")

DAYS = 61
KEY = "beacon:rollup:warmer"


class Warmer:
    def __init__(
        self,
        store: Store,
        interval: float,
        timeout: int,
        days: int = DAYS,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.timezone.utc).date(),
    ) -> None:
        self.store = store
        self.interval = interval
        self.timeout = timeout
        self.days = days
        self.clock = clock
        self.today = today
        self._next = 0.0
        self.passes = 0  # passes that ran (tests, logs)

    def due(self) -> bool:
        return self.interval > 0 and self.clock() >= self._next

    def run(self, r: SyncRedis | None = None, owner: str = "") -> int:
        """One pass: at most one INSERT; returns the days left to compute (0: all ready)."""
        self._next = self.clock() + self.interval
        started = time.monotonic()
        try:
            if r is not None and not self._claim(r, owner):
                return 0
            end = self.today() + dt.timedelta(days=1)
            first = end - dt.timedelta(days=self.days)
            scopes = self.store.query(
                f"SELECT scope FROM {rollup.days_table(self.store)} WHERE day >= {{a:Date}} AND is_bot = 0 "
                "GROUP BY scope HAVING sum(events) > 0 ORDER BY scope",
                {"a": first},
            )
            q = parse({"metrics": ["visits"], "date_range": [first.isoformat(), (end - dt.timedelta(days=1)).isoformat()]})
            ran, left = rollup.build(self.store, [str_of(scope) for (scope,) in scopes], q, self.timeout, 1)
            if ran:
                log.info("rollup: computed days of %s in %.1f s; %d days left", _names(scopes), time.monotonic() - started, left)
        except Exception as exc:  # noqa: BLE001 - any failure: one line, the next pass retries, flushing goes on
            log.warning("rollup pass failed (%s); retrying in %g s", str(exc).strip().splitlines()[0][:300], self.interval)
            return 0
        self.passes += 1
        if left:
            self._next = self.clock()  # days left: the next pass at once (after the flusher's next read)
        return left

    def _claim(self, r: SyncRedis, owner: str) -> bool:
        """This process's turn: the key is free (then ours) or already ours."""
        ms = max(1000, int(self.interval * 3000))
        if r.set(KEY, owner, nx=True, px=ms):
            return True
        if r.get(KEY) == owner.encode():
            r.pexpire(KEY, ms)
            return True
        return False


def _names(scopes: Sequence[Row]) -> str:
    names = [str_of(s) for (s,) in scopes]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more scopes" if len(names) > 5 else "")
