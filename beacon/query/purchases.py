"""A copy of every purchase event (`<events>_purchases`), so the commerce cards read purchases, not events.

Why: a purchase counts once per (scope, order_id): only the first purchase recorded for an
order over the scope's whole history counts (query/commerce.py). Finding that first
purchase read every event of the scope (~0.35 CPU s a query over 10M events), and the
cards' purchases of the range read every event of the range. About one event in a hundred
is a purchase; a materialized view copies each one, with the columns those queries read,
as it is inserted, and they read the copy.

The copy is kept exact as every copy is (beacon/query/copies.py): the view copies inserted
purchases, `forget` and the retention reach it, and a partition whose first block number moved
(TRUNCATE, DROP PARTITION) is copied again before a query reads it. A purchase copied twice is
read once (FINAL; the first purchase of an order is the same with a duplicate).

Not on a cluster (`migrate --cluster` makes no such table): queries read the events there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beacon.query.copies import Copy

if TYPE_CHECKING:  # annotations only: store.py calls migrate and forget
    from beacon.store import Store

# what the commerce queries read of a purchase (sql.py `events_shop` with `purchases_only`, commerce.py `inner`)
COLUMNS = ("event_id", "received_at", "scope", "visitor_id", "event", "url", "props", "is_bot", "order_id", "revenue", "currency", "items")
COPY = Copy("purchases", "purchase_parts", "event = 'purchase'", COLUMNS)


def table(store: Store) -> str:
    return COPY.table(store)


def parts_table(store: Store) -> str:
    return COPY.parts_table(store)


def migrate(store: Store) -> None:
    """Create the copy and its view, and copy the purchases the events already hold."""
    COPY.migrate(store)


def forget(store: Store, scope: str, visitor: str) -> None:
    """After the visitor's events are deleted: its purchases here."""
    COPY.forget(store, scope, visitor)


def ready(store: Store) -> str:
    """The copy's name once every events partition's copy is current; '' on a cluster."""
    return COPY.ready(store)
