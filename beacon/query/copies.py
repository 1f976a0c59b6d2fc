"""Copies of a few events (`<events>_<name>`), kept exact, so a query reads those events, not all of them.

Why: a materialized view copies each inserted event that satisfies a copy's condition into a
small table with the columns its queries read: the purchases (beacon/query/purchases.py) and
the events carrying properties (`PROPS`, the properties breakdown of beacon/query/asof.py:
one event in thirty-five in the benchmark's data, so reading them no longer scans every
event's `props` map).

A copy must hold exactly the events table's matching events, or the answers would differ:
- inserts: the view copies each inserted block's matching events (a block the events table
  refuses as a duplicate is not pushed to views). An event copied twice (migrate's backfill
  beside a running flusher, a partition copied again while inserts go on) is read once: the
  table is a ReplacingMergeTree on the events' key, read with FINAL wherever rows are summed;
- `forget` deletes the visitor's rows here too (after its events);
- retention: the events' TTL expression, changed by `migrate` with it. TTL removes rows at
  merges, which the two tables make at different times: an event past the retention may be
  in one table and not yet in the other (nothing in the retention is);
- TRUNCATE, DROP PARTITION or a part dropped whole by the TTL change the smallest block
  number of the events' partition. `<events>_<parts>` keeps, per partition, the smallest
  block number its copy was made from; before a query reads the copy (`ready`), a partition
  whose number moved, or that is new, is copied again from the events, and one gone from the
  events is dropped here. Lightweight deletes and merges keep block numbers.

Not on a cluster (`migrate --cluster` makes no such table): queries read the events there.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from beacon.columns import NO_SPARSE, int_of

if TYPE_CHECKING:  # annotations only: store.py calls migrate and forget
    from beacon.store import Store

GONE = -1  # the block number recorded for a partition the events no longer have
_lock = threading.Lock()  # one check-and-copy at a time in this process (a query must not read a half-copied partition)


@dataclasses.dataclass(frozen=True)
class Copy:
    """One copy: its table's suffix, its block numbers table's suffix, the events it holds, the columns it keeps."""

    suffix: str
    parts: str
    condition: str
    columns: tuple[str, ...]

    def table(self, store: Store) -> str:
        return f"{store.full_table}_{self.suffix}"

    def parts_table(self, store: Store) -> str:
        return f"{store.full_table}_{self.parts}"

    def ddl(self, store: Store) -> list[str]:
        """Statements `migrate` runs (all idempotent)."""
        from beacon.store import COLUMNS as EVENT_COLUMNS  # the events' types (store.py imports this module: no cycle at run time)

        types = dict(EVENT_COLUMNS)
        ttl = f"toDateTime(received_at) + INTERVAL {int(store.retention_days)} DAY"
        table, cols = self.table(store), ", ".join(self.columns)
        return [
            f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'`{c}` {types[c]}' for c in self.columns)}) ENGINE = ReplacingMergeTree "
            f"PARTITION BY toYYYYMM(received_at) ORDER BY (scope, received_at, event_id) TTL {ttl} SETTINGS {NO_SPARSE}",
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS SELECT {cols} FROM {store.full_table} WHERE {self.condition}",
            f"CREATE TABLE IF NOT EXISTS {self.parts_table(store)} (partition_id String, min_block Int64, "
            "at DateTime64(6, 'UTC') DEFAULT now64(6)) ENGINE = MergeTree ORDER BY partition_id",
            f"ALTER TABLE {table} MODIFY TTL {ttl}",
            f"ALTER TABLE {table} MODIFY SETTING {NO_SPARSE}",
        ]

    def migrate(self, store: Store) -> None:
        """Create the copy and its view, and copy the matching events the events table already holds."""
        if store.cluster:
            return
        for sql in self.ddl(store):
            store.command(sql)
        self.ready(store)

    def forget(self, store: Store, scope: str, visitor: str) -> None:
        """After the visitor's events are deleted: its rows here that the events no longer hold. An event of the
        visitor flushed between the two deletes (still in the Redis buffer when `forget` began) stays in both:
        deleting every row of the visitor here would leave the events holding one the copy lacks."""
        if store.cluster:
            return
        store.command(
            f"DELETE FROM {self.table(store)} WHERE scope = {{scope:String}} AND visitor_id = {{visitor:String}} "
            f"AND event_id NOT IN (SELECT event_id FROM {store.full_table} WHERE scope = {{scope:String}} "
            "AND visitor_id = {visitor:String})",
            {"scope": scope, "visitor": visitor},
        )

    def ready(self, store: Store) -> str:
        """The copy's name once every events partition's copy is current (partitions copied again as needed); '' on a cluster."""
        if store.cluster:
            return ""
        with _lock:
            current = store.first_blocks()
            copied = {
                str(pid): int_of(block)
                for pid, block in store.query(
                    f"SELECT partition_id, argMax(min_block, at) FROM {self.parts_table(store)} GROUP BY partition_id"
                )
            }
            for pid, block in sorted(current.items()):
                if copied.get(pid) != block:
                    self._copy(store, pid, block)
            for pid, block in sorted(copied.items()):
                if pid not in current and block != GONE:
                    self._drop(store, pid)
                    self._mark(store, pid, GONE)
        return self.table(store)

    def _drop(self, store: Store, pid: str) -> None:
        if not pid.isalnum():  # a partition id from system.parts (toYYYYMM: digits); ALTER takes no bound parameter
            raise ValueError(f"unexpected partition id {pid!r:.40}")
        store.command(f"ALTER TABLE {self.table(store)} DROP PARTITION ID '{pid}'")

    def _copy(self, store: Store, pid: str, block: int) -> None:
        """One partition's matching events again from the events (a row the view adds meanwhile is read once: FINAL)."""
        cols = ", ".join(self.columns)
        self._drop(store, pid)
        store.command(
            f"INSERT INTO {self.table(store)} ({cols}) SELECT {cols} FROM {store.full_table} WHERE _partition_id = {{p:String}} "
            f"AND {self.condition}",
            {"p": pid},
        )
        self._mark(store, pid, block)

    def _mark(self, store: Store, pid: str, block: int) -> None:
        store.command(
            f"INSERT INTO {self.parts_table(store)} (partition_id, min_block) VALUES ({{p:String}}, {{b:Int64}})", {"p": pid, "b": block}
        )


# the events carrying properties, with what the properties breakdown reads of them (beacon/query/asof.py)
PROPS = Copy(
    "props",
    "props_parts",
    "notEmpty(props)",
    ("event_id", "received_at", "scope", "visitor_id", "event", "url", "props", "is_bot"),
)
