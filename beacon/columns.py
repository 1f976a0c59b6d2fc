"""Result rows of clickhouse-connect, and the narrowing of their columns where they are read.

The client leaves a row's values untyped; each column's Python type follows the SQL. These
helpers give it its type at the point of use, or a TypeError naming what came instead. They
import nothing of Beacon's, so `store` and `query` both use them without a cycle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

Row = Sequence[object]

# Every Beacon table stores each column in full: chDB 26.9 (ClickHouse 25.x) answers an order-sensitive aggregate
# (groupArray) over a sparse column wrongly when the aggregation has one group (the non-default values come first:
# `SELECT groupArray(f) FROM t WHERE k = 7` gave [1,0,0,0] for rows [0,1,0,0]), and the glued visits gather one
# array per column in time order. See docs/architecture.md ("Sparse columns: none").
NO_SPARSE = "ratio_of_defaults_for_sparse_serialization = 1"


def int_of(value: object) -> int:
    """An integer column (count(), UInt*, Int*)."""
    if isinstance(value, int):
        return value
    raise TypeError(f"expected an integer column, got {type(value).__name__}: {value!r:.80}")


def ints_of(value: object) -> list[int]:
    """An Array(UInt64) column."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an Array column, got {type(value).__name__}: {value!r:.80}")
    return [int_of(v) for v in value]


def str_of(value: object) -> str:
    """A String column."""
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a String column, got {type(value).__name__}: {value!r:.80}")


def date_of(value: object) -> dt.date:
    """A Date column."""
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a Date column, got {type(value).__name__}: {value!r:.80}")


def datetime_of(value: object) -> dt.datetime:
    """A DateTime/DateTime64 column (naive, in UTC, as the client returns it)."""
    if isinstance(value, dt.datetime):
        return value
    raise TypeError(f"expected a DateTime column, got {type(value).__name__}: {value!r:.80}")
