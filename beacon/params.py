"""What the read API and the visitor routes take from a request: bearer keys, date ranges, pages.

Every mistake is a `BadRequest` naming the parameter and the bad value; the caller answers
it through `errors.as_response` (Starlette's handler, or the plain ASGI routes directly).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Callable, Iterable

from starlette.requests import Request

from beacon.config import Secret
from beacon.errors import BadRequest
from beacon.partners import Partner


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_ok(request: Request, expected: Secret) -> bool:
    """Constant-time comparison of the bearer token; an empty expected key matches nothing."""
    token = bearer(request)
    if not token or not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.reveal().encode())


def key_owner(partners: Iterable[Partner], token: str) -> Partner | None:
    """The partner whose key this is; every partner's hash is compared, in constant time each."""
    owner: Partner | None = None
    if token:
        for p in partners:
            if p.key_matches(token):
                owner = p
    return owner


CURSOR = re.compile(r"([0-9]{1,16})_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
# Dates a report or a cursor may name: what ClickHouse's DateTime64 holds, and then some.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)
LATEST_MS = int(LATEST.timestamp() * 1000)


def parse_page(get: Callable[[str], str | None]) -> tuple[int, tuple[int, str] | None]:
    """`limit` (1..1000, default 100) and the `before` cursor of a paged event listing; BadRequest otherwise."""
    try:
        limit = int(get("limit") or "100")
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be 1..1000")
    raw = get("before")
    if not raw:
        return limit, None
    m = CURSOR.fullmatch(raw)
    if not m or int(m.group(1)) >= LATEST_MS:
        raise BadRequest("before must be a cursor returned as next")
    return limit, (int(m.group(1)), m.group(2))


def next_cursor(rows: list[dict[str, object]], limit: int) -> str | None:
    """The cursor of the page after `rows` (None on the last page); drops the rows' `_ms`."""
    cursor = f"{rows[-1]['_ms']}_{rows[-1]['event_id']}" if len(rows) == limit else None
    for row in rows:
        del row["_ms"]
    return cursor


def include_bots(request: Request) -> bool:
    return request.query_params.get("include_bots", "") in ("1", "true", "yes")


def parse_range(request: Request) -> tuple[dt.datetime, dt.datetime, str]:
    """`from`, `to` (ISO 8601 dates or times, UTC unless they say otherwise) and `interval`; BadRequest otherwise."""
    q = request.query_params
    now = dt.datetime.now(dt.timezone.utc)
    interval = q.get("interval", "hour")
    if interval not in ("hour", "day"):
        raise BadRequest(f"interval must be hour or day, not {interval[:20]!r}")

    def when(name: str, default: dt.datetime) -> dt.datetime:
        raw = q.get(name)
        if not raw:
            return default
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise BadRequest(f"{name} must be an ISO 8601 date or time, not {raw[:40]!r}") from None
        if not EARLIEST <= value <= LATEST:
            raise BadRequest(f"{name} must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        return value

    end = when("to", now + dt.timedelta(minutes=1))
    start = when("from", max(end - dt.timedelta(days=1), EARLIEST))
    if start >= end:
        raise BadRequest("from must be before to")
    if (end - start) > dt.timedelta(days=3700):
        raise BadRequest("range longer than ten years")
    return start, end, interval
