"""A copy of every purchase event (`<events>_purchases`), so the commerce cards read purchases, not events.

Why: a purchase counts once per (scope, order_id): only the first purchase recorded for an
order over the scope's whole history counts (query/commerce.py). Finding that first
purchase read every event of the scope (~0.35 CPU s a query over 10M events), and the
cards' purchases of the range read every event of the range. About one event in a hundred
is a purchase; a materialized view copies each one, with the columns those queries read,
as it is inserted, and they read the copy.

The copy must hold exactly the events table's purchases, or the answers would differ:
- inserts: the view copies each inserted block's purchases (a block the events table
  refuses as a duplicate is not pushed to views). A purchase copied twice (migrate's
  backfill beside a running flusher, a partition copied again while inserts go on) is read
  once: the table is a ReplacingMergeTree on the events' key, read with FINAL wherever rows
  are summed (the first purchase of an order is the same with a duplicate);
- `forget` deletes the visitor's purchases here too (after its events);
- retention: the events' TTL expression, changed by `migrate` with it. TTL removes rows at
  merges, which the two tables make at different times: a purchase past the retention may
  be in one table and not yet in the other (nothing in the retention is);
- TRUNCATE, DROP PARTITION or a part dropped whole by the TTL change the smallest block
  number of the events' partition. `<events>_purchase_parts` keeps, per partition, the
  smallest block number its copy was made from; before a query reads the copy (`ready`),
  a partition whose number moved, or that is new, is copied again from the events, and one
  gone from the events is dropped here. Lightweight deletes and merges keep block numbers.

Not on a cluster (`migrate --cluster` makes no such table): queries read the events there.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from beacon.columns import int_of

if TYPE_CHECKING:  # annotations only: store.py calls migrate and forget
    from beacon.store import Store

# what the commerce queries read of a purchase (sql.py `events_shop` with `purchases_only`, commerce.py `inner`)
COLUMNS = ("event_id", "received_at", "scope", "visitor_id", "event", "url", "props", "is_bot", "order_id", "revenue", "currency", "items")
GONE = -1  # the block number recorded for a partition the events no longer have
_lock = threading.Lock()  # one check-and-copy at a time in this process (a query must not read a half-copied partition)


def table(store: Store) -> str:
    return f"{store.full_table}_purchases"


def parts_table(store: Store) -> str:
    return f"{store.full_table}_purchase_parts"


def ddl(store: Store) -> list[str]:
    """Statements `migrate` runs (all idempotent)."""
    from beacon.store import COLUMNS as EVENT_COLUMNS  # the events' types (store.py imports this module: no cycle at run time)

    types = dict(EVENT_COLUMNS)
    ttl = f"toDateTime(received_at) + INTERVAL {int(store.retention_days)} DAY"
    cols = ", ".join(COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {table(store)} ({', '.join(f'`{c}` {types[c]}' for c in COLUMNS)}) ENGINE = ReplacingMergeTree "
        f"PARTITION BY toYYYYMM(received_at) ORDER BY (scope, received_at, event_id) TTL {ttl}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table(store)}_mv TO {table(store)} AS "
        f"SELECT {cols} FROM {store.full_table} WHERE event = 'purchase'",
        f"CREATE TABLE IF NOT EXISTS {parts_table(store)} (partition_id String, min_block Int64, "
        "at DateTime64(6, 'UTC') DEFAULT now64(6)) ENGINE = MergeTree ORDER BY partition_id",
        f"ALTER TABLE {table(store)} MODIFY TTL {ttl}",
    ]


def migrate(store: Store) -> None:
    """Create the copy and its view, and copy the purchases the events already hold."""
    if store.cluster:
        return
    for sql in ddl(store):
        store.command(sql)
    ready(store)


def forget(store: Store, scope: str, visitor: str) -> None:
    """After the visitor's events are deleted: its purchases here (a copy made in between is copied from what is left)."""
    if store.cluster:
        return
    store.command(
        f"DELETE FROM {table(store)} WHERE scope = {{scope:String}} AND visitor_id = {{visitor:String}}",
        {"scope": scope, "visitor": visitor},
    )


def ready(store: Store) -> str:
    """The copy's name once every events partition's copy is current (partitions copied again as needed); '' on a cluster."""
    if store.cluster:
        return ""
    with _lock:
        current = store.first_blocks()
        copied = {
            str(pid): int_of(block)
            for pid, block in store.query(f"SELECT partition_id, argMax(min_block, at) FROM {parts_table(store)} GROUP BY partition_id")
        }
        for pid, block in sorted(current.items()):
            if copied.get(pid) != block:
                _copy(store, pid, block)
        for pid, block in sorted(copied.items()):
            if pid not in current and block != GONE:
                _drop(store, pid)
                _mark(store, pid, GONE)
    return table(store)


def _drop(store: Store, pid: str) -> None:
    if not pid.isalnum():  # a partition id from system.parts (toYYYYMM: digits); ALTER takes no bound parameter
        raise ValueError(f"unexpected partition id {pid!r:.40}")
    store.command(f"ALTER TABLE {table(store)} DROP PARTITION ID '{pid}'")


def _copy(store: Store, pid: str, block: int) -> None:
    """One partition's purchases again from the events (a purchase the view adds meanwhile is read once: FINAL)."""
    cols = ", ".join(COLUMNS)
    _drop(store, pid)
    store.command(
        f"INSERT INTO {table(store)} ({cols}) SELECT {cols} FROM {store.full_table} WHERE _partition_id = {{p:String}} "
        "AND event = 'purchase'",
        {"p": pid},
    )
    _mark(store, pid, block)


def _mark(store: Store, pid: str, block: int) -> None:
    store.command(f"INSERT INTO {parts_table(store)} (partition_id, min_block) VALUES ({{p:String}}, {{b:Int64}})", {"p": pid, "b": block})
