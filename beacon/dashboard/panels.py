"""What each dashboard panel asks the query API, built from the page's state (its URL).

The page, its CSV export and the benchmark all build their v2 queries here, so a number
on the page is the number `POST /api/v2/query` answers for the same body.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence

from beacon.query.model import MAX_VALUE_LENGTH

PERIODS = ("day", "7d", "30d", "custom")
HEADLINE = ("visitors", "visits", "pageviews", "bounce_rate", "visit_duration")
COMMERCE = ("conversions", "total_revenue")  # a query of their own: it reads only the purchases
PROP = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_DAYS = 3700
MAX_FILTERS = 10
# The days a view (and the period before it, as long) may cover: what ClickHouse's Date and
# DateTime hold, with room to spare; outside, the page answers 400 rather than a query error.
FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date(2105, 12, 31)


@dataclasses.dataclass(frozen=True)
class Panel:
    name: str
    title: str
    dimension: str
    metrics: tuple[str, ...] = ("visitors",)


LISTS: dict[str, Panel] = {
    p.name: p
    for p in (
        Panel("pages", "Top pages", "event:page", ("visitors", "pageviews")),
        Panel("entry_pages", "Entry pages", "visit:entry_page", ("visitors", "visits")),
        Panel("exit_pages", "Exit pages", "visit:exit_page", ("visitors", "visits")),
        Panel("sources", "Sources", "visit:source"),
        Panel("channels", "Channels", "visit:channel"),
        Panel("campaigns", "Campaigns", "visit:utm_campaign"),
        Panel("browsers", "Browsers", "visit:browser"),
        Panel("os", "Operating systems", "visit:os"),
        Panel("devices", "Devices", "visit:device"),
        Panel("countries", "Countries", "visit:country"),
        Panel("events", "Custom events", "event:name", ("visitors", "events")),
        Panel("props", "Event properties", "event:props:", ("visitors", "events")),
    )
}
FILTERABLE = frozenset(p.dimension for p in LISTS.values() if p.name != "props")


class StateError(ValueError):
    """A page state (URL) the dashboard cannot read; the message names the bad part."""


@dataclasses.dataclass(frozen=True)
class State:
    period: str
    start: dt.date
    end: dt.date
    filters: tuple[tuple[str, str], ...] = ()
    prop: str = ""

    def previous(self) -> State:
        days = (self.end - self.start).days + 1
        return dataclasses.replace(self, start=self.start - dt.timedelta(days=days), end=self.end - dt.timedelta(days=days))

    def date_range(self) -> list[str]:
        return [self.start.isoformat(), self.end.isoformat()]

    def v2_filters(self) -> list[list[str | list[str]]]:
        return [["is", dim, [value]] for dim, value in self.filters]


def parse_state(params: Mapping[str, str], today: dt.date) -> State:
    """The page state from URL parameters: `period`, `from`, `to`, repeated `f=<dimension>=<value>`, `prop`."""
    get = params.get
    period = get("period") or "7d"
    if period not in PERIODS:
        raise StateError(f"period must be one of {', '.join(PERIODS)}")
    if period == "custom":
        try:
            start = dt.date.fromisoformat(get("from") or "")
            end = dt.date.fromisoformat(get("to") or "")
        except ValueError:
            raise StateError("a custom period needs from and to as YYYY-MM-DD dates") from None
        if start > end:
            raise StateError("from must not be after to")
        if (end - start).days > MAX_DAYS:
            raise StateError("the period is longer than ten years")
        days = (end - start).days + 1
        if end > LAST_DAY:
            raise StateError(f"to must be on or before {LAST_DAY}")
        if (start - FIRST_DAY).days < days:
            earliest = FIRST_DAY + dt.timedelta(days=days)
            raise StateError(
                f"from must be on or after {earliest}: the {days} days before it, compared with it, start on {FIRST_DAY} or later"
            )
    else:
        end = today
        start = today - dt.timedelta(days={"day": 0, "7d": 6, "30d": 29}[period])
    filters: list[tuple[str, str]] = []
    raw_filters = params.getlist("f") if hasattr(params, "getlist") else []
    for raw in raw_filters:
        dim, sep, value = raw.partition("=")
        if not sep or not (dim in FILTERABLE or (dim.startswith("event:props:") and PROP.fullmatch(dim[12:]))):
            raise StateError(f"filter {raw[:80]!r} is not <dimension>=<value> on a dashboard dimension")
        if len(value) > MAX_VALUE_LENGTH:  # refused, not cut: a cut value would filter by another one
            raise StateError(f"filter {raw[:80]!r}... is longer than {MAX_VALUE_LENGTH} characters")
        if (dim, value) not in filters:  # the same filter twice is one filter
            filters.append((dim, value))
    if len(filters) > MAX_FILTERS:
        raise StateError(f"at most {MAX_FILTERS} different filters, not {len(filters)}: remove one to see this view")
    prop = get("prop") or ""
    if prop and not PROP.fullmatch(prop):
        raise StateError("prop must be a property name (letters, digits, _ . : -)")
    return State(period, start, end, tuple(filters), prop)


def list_body(panel: Panel, state: State, limit: int = 10) -> dict[str, object]:
    dimension = panel.dimension + state.prop if panel.name == "props" else panel.dimension
    return {
        "metrics": list(panel.metrics),
        "date_range": state.date_range(),
        "dimensions": [dimension],
        "filters": state.v2_filters(),
        "order_by": [[panel.metrics[0], "desc"], [dimension, "asc"]],
        "pagination": {"limit": limit, "offset": 0},
    }


def totals_body(state: State, metrics: Sequence[str] = HEADLINE) -> dict[str, object]:
    return {"metrics": list(metrics), "date_range": state.date_range(), "filters": state.v2_filters()}


def series_body(state: State) -> dict[str, object]:
    dimension = "time:hour" if state.start == state.end else "time:day"
    return {
        "metrics": ["visitors", "pageviews"],
        "date_range": state.date_range(),
        "dimensions": [dimension],
        "filters": state.v2_filters(),
        "order_by": [[dimension, "asc"]],
    }


def funnel_body(state: State) -> dict[str, object]:
    """The purchase funnel (issue 12's default steps: product_view, add_to_cart, begin_checkout, purchase).

    The page's filters pick the visits, as they do for the other panels."""
    return {"date_range": state.date_range(), "filters": state.v2_filters()}


def realtime_body(state: State) -> dict[str, object]:
    return {"metrics": ["visitors"], "date_range": "realtime", "filters": state.v2_filters()}
