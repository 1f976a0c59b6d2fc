"""Everything that is not the beacon hot path: health, readiness, metrics, the read API."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import itertools
import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from beacon import attribution, customers, metrics, query
from beacon.config import Secret
from beacon.flusher import lag_from
from beacon.query import funnel
from beacon.scope import MALL

log = logging.getLogger("beacon.api")


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_ok(request: Request, expected: Secret) -> bool:
    """Constant-time comparison of the bearer token; an empty expected key matches nothing."""
    token = bearer(request)
    if not token or not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.reveal().encode())


def key_owner(partners: Any, token: str) -> Any:
    """The partner whose key this is; every partner's hash is compared, in constant time each."""
    owner = None
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


def parse_page(get: Any) -> tuple[int, tuple[int, str] | None]:
    """`limit` (1..1000, default 100) and the `before` cursor of a paged event listing."""
    try:
        limit = int(get("limit") or "100")
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be 1..1000")
    raw = get("before")
    if not raw:
        return limit, None
    m = CURSOR.fullmatch(raw)
    if not m or int(m.group(1)) >= LATEST_MS:
        raise ValueError("before must be a cursor returned as next")
    return limit, (int(m.group(1)), m.group(2))


def next_cursor(rows: list[dict[str, Any]], limit: int) -> str | None:
    """The cursor of the page after `rows` (None on the last page); drops the rows' `_ms`."""
    cursor = f"{rows[-1]['_ms']}_{rows[-1]['event_id']}" if len(rows) == limit else None
    for row in rows:
        del row["_ms"]
    return cursor


def include_bots(request: Request) -> bool:
    return request.query_params.get("include_bots", "") in ("1", "true", "yes")


def parse_range(request: Request) -> tuple[dt.datetime, dt.datetime, str]:
    """`from`, `to` (ISO 8601 dates or times, UTC unless they say otherwise) and `interval`."""
    q = request.query_params
    now = dt.datetime.now(dt.timezone.utc)
    interval = q.get("interval", "hour")
    if interval not in ("hour", "day"):
        raise ValueError(f"interval must be hour or day, not {interval[:20]!r}")

    def when(name: str, default: dt.datetime) -> dt.datetime:
        raw = q.get(name)
        if not raw:
            return default
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise ValueError(f"{name} must be an ISO 8601 date or time, not {raw[:40]!r}") from None
        if not EARLIEST <= value <= LATEST:
            raise ValueError(f"{name} must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        return value

    end = when("to", now + dt.timedelta(minutes=1))
    start = when("from", max(end - dt.timedelta(days=1), EARLIEST))
    if start >= end:
        raise ValueError("from must be before to")
    if (end - start) > dt.timedelta(days=3700):
        raise ValueError("range longer than ten years")
    return start, end, interval


QUERY_MAX_BYTES = 65536


async def read_query(request: Request) -> Any:
    """The JSON body of a v2 query, at most QUERY_MAX_BYTES; QueryError names what is wrong."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise query.QueryError("content type must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > QUERY_MAX_BYTES:
        raise query.QueryError(f"body larger than {QUERY_MAX_BYTES} bytes")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > QUERY_MAX_BYTES:
            raise query.QueryError(f"body larger than {QUERY_MAX_BYTES} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise query.QueryError(f"malformed JSON: {exc}") from None


def guarded(rows: Any) -> Any:
    """An export's chunks; a failure after the first one ends the stream with one log line."""
    try:
        yield from rows
    except Exception as exc:  # noqa: BLE001 - the status is sent already: log it and end the body
        log.error("query v2 export stopped: %s", (str(exc).splitlines() or [type(exc).__name__])[0][:300])


def export_format(accept: str) -> str | None:
    """csv or ndjson when the client asks for that type first; None for JSON."""
    for part in accept.split(","):
        kind = part.split(";", 1)[0].strip().lower()
        if kind in query.EXPORT_TYPES:
            return query.EXPORT_TYPES[kind]
        if kind in ("application/json", "*/*", "application/*"):
            return None
    return None


async def lag(core: Any) -> tuple[int, float]:
    stream = core.settings.stream
    return lag_from(await core.redis.xlen(stream), await core.redis.xrange(stream, "-", "+", count=1))


def routes(core: Any) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        problems = {}
        stream: dict[str, Any] = {}
        try:
            await core.redis.ping()
            entries, age = await lag(core)
            stream = {"entries": entries, "oldest_age_seconds": round(age, 3)}
        except Exception as exc:  # noqa: BLE001
            problems["redis"] = str(exc)[:200]
        if not await asyncio.to_thread(core.store.ping):
            problems["clickhouse"] = "not answering"
        body = {"ready": not problems, "problems": problems, "stream": stream}
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics_view(request: Request) -> Response:
        if not core.settings.metrics_key:
            return JSONResponse({"error": "/metrics is closed: set BEACON_METRICS_KEY and send it as a bearer key"},
                                status_code=403)
        if not bearer_ok(request, core.settings.metrics_key):
            return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        try:
            entries, age = await lag(core)
            metrics.STREAM_PENDING.set(entries)
            metrics.STREAM_OLDEST_AGE.set(age)
        except Exception:  # noqa: BLE001 - metrics still answer without Redis
            pass
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        if not bearer_ok(request, core.settings.mall_api_key):
            return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        try:
            start, end, interval = parse_range(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        body = await asyncio.to_thread(core.store.stats, MALL, start, end, interval, 10, include_bots(request))
        return JSONResponse(body)

    async def partner_api(request: Request) -> Response:
        owner = key_owner(core.partners, bearer(request))
        if owner is None:
            return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        path = posixpath.normpath("/" + request.path_params["rest"])
        pid, _, endpoint = path[1:].partition("/")
        host_scope = request.scope.get("beacon.scope")
        if pid != owner.id or (host_scope is not None and host_scope.is_partner and host_scope.id != owner.id):
            return JSONResponse({"error": "this key reads only its own partner scope"}, status_code=403)
        if endpoint == "stats":
            try:
                start, end, interval = parse_range(request)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(await asyncio.to_thread(core.store.stats, owner.id, start, end, interval, 10,
                                                        include_bots(request)))
        if endpoint == "events":
            return await partner_events(request, owner.id)
        if endpoint == "conversions":  # issue 12: aggregate counts for its own clicks, if the mall allows
            if not owner.attribution:
                return JSONResponse({"error": "attribution is not enabled for this partner"}, status_code=403)
            try:
                start, end, _ = parse_range(request)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"partner": owner.id, "window_days": owner.attribution_window_days,
                                 "min_count": owner.attribution_min_count,
                                 **await asyncio.to_thread(attribution.conversions, core.store, core.partners, owner,
                                                           start, end)})
        return JSONResponse({"error": "not found; use stats or events"}, status_code=404)

    async def partner_events(request: Request, scope: str) -> Response:
        q = request.query_params
        try:
            limit, before = parse_page(q.get)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        fmt = q.get("format", "ndjson" if "ndjson" in request.headers.get("accept", "") else "json")
        if fmt not in ("json", "ndjson"):
            return JSONResponse({"error": "format must be json or ndjson"}, status_code=400)
        rows = await asyncio.to_thread(core.store.events, scope, limit, before)
        cursor = next_cursor(rows, limit)
        headers = {"x-next-cursor": cursor} if cursor else {}
        if fmt == "ndjson":
            body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
            return Response(body, media_type="application/x-ndjson", headers=headers)
        return Response(orjson.dumps({"events": rows, "next": cursor}), media_type="application/json",
                        headers=headers)

    async def query_v2(request: Request) -> Response:
        if bearer_ok(request, core.settings.mall_api_key):
            scope = MALL
        else:
            owner = key_owner(core.partners, bearer(request))
            if owner is None:
                return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                    headers={"www-authenticate": "Bearer"})
            scope = owner.id
        try:
            body = await read_query(request)
            fmt = export_format(request.headers.get("accept", ""))
            if fmt is None:
                answer = await asyncio.to_thread(query.run, core.store, scope, body,
                                                 visit_timeout=core.settings.visit_timeout)
                return Response(orjson.dumps(answer), media_type="application/json")
            rows = query.export(core.store, scope, body, fmt, visit_timeout=core.settings.visit_timeout)
            first = await asyncio.to_thread(next, rows, b"")  # the first page: ClickHouse trouble is still a 503
        except query.QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # noqa: BLE001 - ClickHouse trouble is ours, not the client's: one line, 503
            log.error("query v2 failed: %s", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
            return JSONResponse({"error": "the query could not be answered now; try again"}, status_code=503)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(guarded(itertools.chain([first], rows)), media_type=media)

    async def funnel_v2(request: Request) -> Response:
        """Funnels (issue 12, beacon/query/funnel.py): scoped by the key like /api/v2/query."""
        owner = None if bearer_ok(request, core.settings.mall_api_key) else key_owner(core.partners, bearer(request))
        if owner is None and not bearer_ok(request, core.settings.mall_api_key):
            return JSONResponse({"error": "missing or wrong bearer key"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        try:
            body = await read_query(request)
            answer = await asyncio.to_thread(funnel.run, core.store, owner.id if owner else MALL, body,
                                             visit_timeout=core.settings.visit_timeout)
        except query.QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # noqa: BLE001 - ClickHouse trouble is ours, not the client's: one line, 503
            log.error("funnel failed: %s", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            return JSONResponse({"error": "the funnel could not be answered now; try again"}, status_code=503)
        return Response(orjson.dumps(answer), media_type="application/json")

    script = (Path(__file__).parent / "static" / "beacon.js").read_bytes()
    script_etag = '"' + hashlib.sha256(script).hexdigest()[:32] + '"'

    async def beacon_js(request: Request) -> Response:
        headers = {"etag": script_etag, "cache-control": "public, max-age=604800",
                   "cross-origin-resource-policy": "cross-origin"}
        if script_etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(script, media_type="text/javascript; charset=utf-8", headers=headers)

    return [
        Route("/beacon.js", beacon_js),
        Route("/api/v1/partners/{rest:path}", partner_api),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_view),
        Route("/api/v1/stats", stats),
        Route("/api/v2/query", query_v2, methods=["POST"]),
        Route("/api/v2/funnel", funnel_v2, methods=["POST"]),
        *customers.routes(core),
    ]
