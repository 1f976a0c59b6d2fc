"""The v2 query body, checked and typed: every mistake is a QueryError naming the bad part.

`parse` turns the untrusted JSON into a `Query`; `Answer` and `FunnelAnswer` are the JSON
answers of `POST /api/v2/query` and `/api/v2/funnel`.

The shape is Plausible's Stats API v2, so its users feel at home; what Beacon does not
have (sites, imports, goals before issue 12) is refused by name rather than ignored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import NotRequired, TypedDict, Union


class QueryError(ValueError):
    """A query Beacon cannot answer; the message names the bad part (answered 400)."""


# One metric's value in an answer: a count, a rate, or revenue per currency ({"EUR": "12.50"}).
Metric = int | float | dict[str, str]
# A filter as the answer echoes it: [op, dimension, [values]] (+ modifiers), [and|or, [filters]], [not, filter].
EchoFilter = list[Union[str, list[str], dict[str, bool], "EchoFilter", list["EchoFilter"]]]


class Include(TypedDict):
    bots: bool
    total_rows: bool


class Pagination(TypedDict):
    limit: int
    offset: int


class Echo(TypedDict):
    """The query as Beacon understood it (the answer's `query`)."""

    metrics: list[str]
    date_range: list[str]
    dimensions: list[str]
    filters: list[EchoFilter]
    order_by: list[list[str]]
    include: Include
    pagination: Pagination


class Result(TypedDict):
    dimensions: list[str]
    metrics: list[Metric]


class Meta(TypedDict):
    scope: str
    visit_timeout_minutes: int
    total_rows: NotRequired[int]  # when the query includes total_rows


class Answer(TypedDict):
    """The JSON answer of `POST /api/v2/query`."""

    results: list[Result]
    meta: Meta
    query: Echo


class FunnelStep(TypedDict):
    step: dict[str, str]  # {"event": name} or {"page": path}
    visitors: int
    dropoff: int
    conversion_rate: float
    step_conversion_rate: float


class FunnelMeta(TypedDict):
    scope: str
    window: str | int  # "visit" or seconds
    visit_timeout_minutes: int


class FunnelEcho(TypedDict):
    steps: list[dict[str, str]]
    date_range: list[str]
    window: object  # as given ("visit", seconds or null), checked
    filters: NotRequired[list[EchoFilter]]  # when the funnel takes filters
    include: dict[str, bool]


class FunnelAnswer(TypedDict):
    """The JSON answer of `POST /api/v2/funnel` (beacon/query/funnel.py)."""

    steps: list[FunnelStep]
    meta: FunnelMeta
    query: FunnelEcho


def fields(raw: object, what: str) -> Mapping[str, object]:
    """A JSON object of the body, or QueryError `what`: the boundary where untrusted JSON gets a type."""
    if not isinstance(raw, Mapping):
        raise QueryError(what)
    return raw


METRICS: tuple[str, ...] = ("visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit")

# Dimensions of one event, of the visit it belongs to (its first event's value), or of time.
EVENT_DIMENSIONS: tuple[str, ...] = ("event:page", "event:name")
VISIT_DIMENSIONS = (
    "visit:source",
    "visit:channel",
    "visit:referrer",
    "visit:utm_source",
    "visit:utm_medium",
    "visit:utm_campaign",
    "visit:utm_term",
    "visit:utm_content",
    "visit:browser",
    "visit:browser_version",
    "visit:os",
    "visit:os_version",
    "visit:device",
    "visit:country",
    "visit:region",
    "visit:city",
    "visit:entry_page",
    "visit:exit_page",
)
TIME_DIMENSIONS = ("time:hour", "time:day")
# Issue 12 (beacon/query/commerce.py): conversions, revenue per currency, signed-in customers.
COMMERCE_METRICS = ("conversions", "conversion_rate", "total_revenue", "average_revenue", "customers")
COMMERCE_DIMENSIONS = ("event:goal", "event:product")
METRICS += COMMERCE_METRICS
EVENT_DIMENSIONS += COMMERCE_DIMENSIONS
PROP_PREFIX = "event:props:"
PROP_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

OPERATORS = ("is", "is_not", "contains", "contains_not")
RELATIVE_RANGES = ("day", "7d", "28d", "30d", "91d", "month", "year", "realtime")
REALTIME = dt.timedelta(minutes=5)
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000
MAX_FILTER_VALUES = 1_000
MAX_FILTER_DEPTH = 8
MAX_VALUE_LENGTH = 2_048
KEYS = ("site_id", "metrics", "date_range", "dimensions", "filters", "order_by", "include", "pagination")
INCLUDE = ("bots", "total_rows")


@dataclasses.dataclass(frozen=True)
class Condition:
    op: str
    dimension: str
    values: tuple[str, ...]
    case_sensitive: bool = True


@dataclasses.dataclass(frozen=True)
class Combination:
    op: str  # "and" | "or"
    parts: tuple[Filter, ...]


@dataclasses.dataclass(frozen=True)
class Negation:
    part: Filter


Filter = Condition | Combination | Negation


def dimensions_of(f: Filter) -> set[str]:
    """The dimensions a filter reads, through its and/or/not."""
    if isinstance(f, Condition):
        return {f.dimension}
    if isinstance(f, Combination):
        return set().union(*(dimensions_of(p) for p in f.parts))
    return dimensions_of(f.part)


@dataclasses.dataclass(frozen=True)
class Query:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC
    filters: tuple[Filter, ...]
    order_by: tuple[tuple[str, str], ...]
    include_bots: bool
    total_rows: bool
    limit: int
    offset: int
    date_range: object  # as given

    def echo(self) -> Echo:
        """The query as Beacon understood it (Plausible echoes its query too)."""
        return {
            "metrics": list(self.metrics),
            "date_range": [self.start.isoformat(), self.end.isoformat()],
            "dimensions": list(self.dimensions),
            "filters": [_echo_filter(f) for f in self.filters],
            "order_by": [list(o) for o in self.order_by],
            "include": {"bots": self.include_bots, "total_rows": self.total_rows},
            "pagination": {"limit": self.limit, "offset": self.offset},
        }


def _echo_filter(f: Filter) -> EchoFilter:
    if isinstance(f, Condition):
        out: EchoFilter = [f.op, f.dimension, list(f.values)]
        if not f.case_sensitive:
            out.append({"case_sensitive": False})
        return out
    if isinstance(f, Combination):
        return [f.op, [_echo_filter(p) for p in f.parts]]
    return ["not", _echo_filter(f.part)]


def is_dimension(name: object) -> bool:
    if not isinstance(name, str):
        return False
    if name.startswith(PROP_PREFIX):
        return PROP_NAME.fullmatch(name[len(PROP_PREFIX) :]) is not None
    return name in EVENT_DIMENSIONS or name in VISIT_DIMENSIONS or name in TIME_DIMENSIONS


def is_event_level(name: str) -> bool:
    """Dimensions whose value differs between the events of one visit."""
    return name in EVENT_DIMENSIONS or name.startswith(PROP_PREFIX) or name in TIME_DIMENSIONS


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(raw: object, now: dt.datetime | None = None) -> Query:
    """The untrusted JSON body, checked into a Query; QueryError names the first bad part."""
    body = fields(raw, "the query must be a JSON object")
    unknown = [k for k in body if k not in KEYS]
    if unknown:
        raise QueryError(f"unknown key {_short(unknown[0])}; a query has {', '.join(KEYS)}")
    site_id = body.get("site_id")
    if site_id is not None and not isinstance(site_id, str):
        raise QueryError("site_id must be a string (it is ignored: the key decides the scope)")
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    metrics = _metrics(body.get("metrics"))
    dimensions = _dimensions(body.get("dimensions", []))
    start, end = _date_range(body.get("date_range"), now)
    filters = _filters(body.get("filters", []))
    include_bots, total_rows = _include(body.get("include", {}))
    limit, offset = _pagination(body.get("pagination", {}))
    order_by = _order_by(body.get("order_by"), metrics, dimensions)
    return Query(metrics, dimensions, start, end, filters, order_by, include_bots, total_rows, limit, offset, body.get("date_range"))


def _metrics(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise QueryError('metrics must be a non-empty list, e.g. ["visitors"]')
    for m in raw:
        if m not in METRICS:
            raise QueryError(f"unknown metric {_short(m)}; metrics are {', '.join(METRICS)}")
    if len(set(raw)) != len(raw):
        raise QueryError("metrics must not repeat")
    return tuple(raw)


def _dimensions(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise QueryError("dimensions must be a list")
    if len(raw) > 6:
        raise QueryError("at most 6 dimensions")
    for d in raw:
        if not is_dimension(d):
            raise QueryError(f"unknown dimension {_short(d)}")
    if len(set(raw)) != len(raw):
        raise QueryError("dimensions must not repeat")
    if sum(d in TIME_DIMENSIONS for d in raw) > 1:
        raise QueryError("at most one time dimension")
    return tuple(raw)


def _when(raw: object, end_of_day: bool) -> dt.datetime:
    """An ISO 8601 date (the whole day) or date-time (UTC unless it says otherwise)."""
    if not isinstance(raw, str) or len(raw) > 40:
        raise QueryError(f"date_range bound {_short(raw)} must be an ISO 8601 date or date-time")
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            value = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            value += dt.timedelta(days=1) if end_of_day else dt.timedelta(0)
        else:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise QueryError(f"date_range bound {_short(raw)} is not an ISO 8601 date or date-time") from None
    if not 1970 <= value.year <= 2299:  # what DateTime64(3) holds
        raise QueryError(f"date_range bound {_short(raw)} is outside 1970..2299")
    return value


def _date_range(raw: object, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC. Relative ranges end with today; "realtime" is the last 5 minutes."""
    if raw is None:
        raise QueryError('date_range is required: "day", "7d", "30d", "month", "realtime" or [from, to]')
    today = dt.datetime(now.year, now.month, now.day, tzinfo=dt.timezone.utc)
    tomorrow = today + dt.timedelta(days=1)
    if isinstance(raw, str):
        if raw not in RELATIVE_RANGES:
            raise QueryError(f"date_range {_short(raw)} must be one of {', '.join(RELATIVE_RANGES)} or [from, to]")
        if raw == "realtime":
            return now - REALTIME, now + dt.timedelta(milliseconds=1)
        if raw == "day":
            return today, tomorrow
        if raw == "month":
            return today.replace(day=1), tomorrow
        if raw == "year":
            return today.replace(month=1, day=1), tomorrow
        return tomorrow - dt.timedelta(days=int(raw[:-1])), tomorrow
    if not isinstance(raw, list) or len(raw) != 2:
        raise QueryError("date_range must be a string or a list [from, to]")
    start, end = _when(raw[0], False), _when(raw[1], True)
    if start >= end:
        raise QueryError("date_range: from must be before to")
    if end - start > dt.timedelta(days=3700):
        raise QueryError("date_range longer than ten years")
    return start, end


def _filters(raw: object) -> tuple[Filter, ...]:
    if not isinstance(raw, list):
        raise QueryError("filters must be a list")
    return tuple(_filter(f, 1) for f in raw)


def _filter(raw: object, depth: int) -> Filter:
    if depth > MAX_FILTER_DEPTH:
        raise QueryError(f"filters nested deeper than {MAX_FILTER_DEPTH}")
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise QueryError(f'filter {_short(raw)} must be [operator, dimension, [values]], ["and"|"or", [filters]] or ["not", filter]')
    op = raw[0]
    if op in ("and", "or"):
        if len(raw) != 2 or not isinstance(raw[1], list) or not raw[1]:
            raise QueryError(f"filter {op!r} takes one non-empty list of filters")
        return Combination(op, tuple(_filter(p, depth + 1) for p in raw[1]))
    if op == "not":
        if len(raw) != 2:
            raise QueryError("filter 'not' takes exactly one filter")
        return Negation(_filter(raw[1], depth + 1))
    if op not in OPERATORS:
        raise QueryError(f"unknown filter operator {_short(op)}; operators are {', '.join(OPERATORS)}, and, or, not")
    if len(raw) not in (3, 4):
        raise QueryError(f"filter {op!r} must be [{op!r}, dimension, [values]] with an optional modifiers object")
    dim, values = raw[1], raw[2]
    if not is_dimension(dim):
        raise QueryError(f"unknown filter dimension {_short(dim)}")
    if dim in TIME_DIMENSIONS:
        raise QueryError(f"cannot filter on {dim}; use date_range")
    if not isinstance(values, list) or not values or len(values) > MAX_FILTER_VALUES:
        raise QueryError(f"filter values for {dim} must be a list of 1..{MAX_FILTER_VALUES} strings")
    for v in values:
        if not isinstance(v, str) or len(v) > MAX_VALUE_LENGTH:
            raise QueryError(f"filter value {_short(v)} for {dim} must be a string of at most {MAX_VALUE_LENGTH} characters")
    case_sensitive = True
    if len(raw) == 4:
        mods = raw[3]
        if not isinstance(mods, Mapping) or set(mods) - {"case_sensitive"} or not isinstance(mods.get("case_sensitive", True), bool):
            raise QueryError('filter modifiers must be {"case_sensitive": true|false}')
        case_sensitive = mods.get("case_sensitive", True)
    return Condition(op, dim, tuple(values), case_sensitive)


def _include(raw: object) -> tuple[bool, bool]:
    if not isinstance(raw, Mapping):
        raise QueryError("include must be an object")
    for key, value in raw.items():
        if key not in INCLUDE:
            raise QueryError(f"unknown include {_short(key)}; include takes {', '.join(INCLUDE)}")
        if not isinstance(value, bool):
            raise QueryError(f"include.{key} must be true or false")
    return bool(raw.get("bots", False)), bool(raw.get("total_rows", False))


def _pagination(raw: object) -> tuple[int, int]:
    if not isinstance(raw, Mapping):
        raise QueryError('pagination must be an object {"limit": n, "offset": n}')
    unknown = set(raw) - {"limit", "offset"}
    if unknown:
        raise QueryError(f"unknown pagination key {_short(sorted(unknown)[0])}")
    limit, offset = raw.get("limit", MAX_LIMIT), raw.get("offset", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"pagination.limit must be an integer 1..{MAX_LIMIT}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"pagination.offset must be an integer 0..{MAX_OFFSET}")
    return limit, offset


UNSORTABLE = ("total_revenue", "average_revenue", "conversion_rate")


def _order_by(raw: object, metrics: tuple[str, ...], dimensions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Default: time ascending when there is a time dimension, else the first metric descending."""
    if raw is None:
        time = [d for d in dimensions if d in TIME_DIMENSIONS]
        if time:
            return ((time[0], "asc"),)
        # revenue is per currency and a rate has no order of its own: the first metric that sorts
        sortable = [m for m in metrics if m not in UNSORTABLE]
        return ((sortable[0], "desc"),) if sortable else ()
    if not isinstance(raw, list):
        raise QueryError('order_by must be a list of [metric_or_dimension, "asc"|"desc"]')
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2 or item[1] not in ("asc", "desc"):
            raise QueryError(f'order_by entry {_short(item)} must be [metric_or_dimension, "asc"|"desc"]')
        if item[0] not in metrics and item[0] not in dimensions:
            raise QueryError(f"order_by {_short(item[0])} is not one of the query's metrics or dimensions")
        out.append((item[0], item[1]))
    return tuple(out)
