"""Everything that is not the beacon hot path: health, readiness, metrics, the read API."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from beacon import attribution, customers, metrics, query
from beacon.errors import BadRequest, BeaconError, Forbidden, NotFound, Unauthorized, Unavailable, as_response
from beacon.flusher import lag_from
from beacon.params import (
    bearer,
    bearer_ok,
    include_bots,
    key_owner,
    next_cursor,
    parse_page,
    parse_range,
)
from beacon.query import funnel
from beacon.scope import MALL, PARTNER_PREFIX

if TYPE_CHECKING:  # app.py builds these routes from its Core: a real cycle
    from beacon.app import Core

log = logging.getLogger("beacon.api")


QUERY_MAX_BYTES = 65536


async def read_query(request: Request, what: str = "query") -> Mapping[str, object]:
    """The JSON object of a v2 query (or funnel), at most QUERY_MAX_BYTES; BadRequest names what is wrong.
    Its members are checked by query.parse (funnel.run)."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest("content type must be application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > QUERY_MAX_BYTES:
        raise BadRequest(f"body larger than {QUERY_MAX_BYTES} bytes")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > QUERY_MAX_BYTES:
            raise BadRequest(f"body larger than {QUERY_MAX_BYTES} bytes")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"the {what} must be a JSON object")
    return doc


def guarded(rows: Iterator[bytes]) -> Iterator[bytes]:
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


async def lag(core: Core) -> tuple[int, float]:
    """Entries not yet flushed and the age of the oldest, over every shard of the stream."""
    if core.redis is None:
        raise ConnectionError("Redis is not connected yet")
    entries, age = 0, 0.0
    for stream in core.streams:
        oldest = await core.redis.xrange(stream, "-", "+", count=1)  # its shape is checked by lag_from
        n, a = lag_from(await core.redis.xlen(stream), oldest)
        entries, age = entries + n, max(age, a)
    return entries, age


async def error_response(request: Request, exc: Exception) -> Response:
    """Starlette's handler for BeaconError: the API routes raise, `errors.as_response` answers."""
    if not isinstance(exc, BeaconError):  # registered for BeaconError only
        raise exc
    status, body, headers = as_response(exc)
    return JSONResponse(body, status_code=status, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})


def routes(core: Core) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        problems = {}
        stream: dict[str, int | float] = {}
        try:
            if core.redis is None:
                raise ConnectionError("Redis is not connected yet")
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
            raise Forbidden("/metrics is closed: set BEACON_METRICS_KEY and send it as a bearer key")
        if not bearer_ok(request, core.settings.metrics_key):
            raise Unauthorized()
        try:
            entries, age = await lag(core)
            metrics.STREAM_PENDING.set(entries)
            metrics.STREAM_OLDEST_AGE.set(age)
        except Exception:  # noqa: BLE001 - metrics still answer without Redis
            pass
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        if not bearer_ok(request, core.settings.mall_api_key):
            raise Unauthorized()
        start, end, interval = parse_range(request)
        body = await asyncio.to_thread(core.store.stats, MALL, start, end, interval, 10, include_bots(request))
        return JSONResponse(body)

    async def partner_api(request: Request) -> Response:
        owner = key_owner(core.partners, bearer(request))
        if owner is None:
            raise Unauthorized()
        path = posixpath.normpath("/" + request.path_params["rest"])
        pid, _, endpoint = path[1:].partition("/")
        host_scope = request.scope.get("beacon.scope")
        if pid != owner.id or (host_scope is not None and host_scope.is_partner and host_scope.id != owner.id):
            raise Forbidden("this key reads only its own partner scope")
        if endpoint == "stats":
            start, end, interval = parse_range(request)
            return JSONResponse(await asyncio.to_thread(core.store.stats, owner.id, start, end, interval, 10, include_bots(request)))
        if endpoint == "events":
            return await partner_events(request, owner.id)
        if endpoint == "conversions":  # issue 12: aggregate counts for its own clicks, if the mall allows
            if not owner.attribution:
                raise Forbidden("attribution is not enabled for this partner")
            start, end, _ = parse_range(request)
            return JSONResponse(
                {
                    "partner": owner.id,
                    "window_days": owner.attribution_window_days,
                    "min_count": owner.attribution_min_count,
                    **await asyncio.to_thread(attribution.conversions, core.store, core.partners, owner, start, end),
                }
            )
        raise NotFound("not found; use stats or events")

    async def partner_events(request: Request, scope: str) -> Response:
        q = request.query_params
        limit, before = parse_page(q.get)
        fmt = q.get("format", "ndjson" if "ndjson" in request.headers.get("accept", "") else "json")
        if fmt not in ("json", "ndjson"):
            raise BadRequest("format must be json or ndjson")
        rows = await asyncio.to_thread(core.store.events, scope, limit, before)
        cursor = next_cursor(rows, limit)
        headers = {"x-next-cursor": cursor} if cursor else {}
        if fmt == "ndjson":
            body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
            return Response(body, media_type="application/x-ndjson", headers=headers)
        return Response(orjson.dumps({"events": rows, "next": cursor}), media_type="application/json", headers=headers)

    async def query_v2(request: Request) -> Response:
        if bearer_ok(request, core.settings.mall_api_key):
            scope = MALL
        else:
            owner = key_owner(core.partners, bearer(request))
            if owner is None:
                raise Unauthorized()
            scope = owner.id
        try:
            body = await read_query(request)
            fmt = export_format(request.headers.get("accept", ""))
            if fmt is None:
                answer = await asyncio.to_thread(query.run, core.store, scope, body, visit_timeout=core.settings.visit_timeout)
                return Response(orjson.dumps(answer), media_type="application/json")
            rows = query.export(core.store, scope, body, fmt, visit_timeout=core.settings.visit_timeout)
            first = await asyncio.to_thread(next, rows, b"")  # the first page: ClickHouse trouble is still a 503
        except query.QueryError as exc:
            raise BadRequest(str(exc)) from None
        except BeaconError:
            raise
        except Exception as exc:  # noqa: BLE001 - ClickHouse trouble is ours, not the client's: one line, 503
            log.error("query v2 failed: %s", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
            raise Unavailable("the query could not be answered now; try again") from None
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(guarded(itertools.chain([first], rows)), media_type=media)

    async def funnel_v2(request: Request) -> Response:
        """Funnels (issue 12, beacon/query/funnel.py): scoped by the key like /api/v2/query."""
        owner = None if bearer_ok(request, core.settings.mall_api_key) else key_owner(core.partners, bearer(request))
        if owner is None and not bearer_ok(request, core.settings.mall_api_key):
            raise Unauthorized()
        try:
            body = await read_query(request, "funnel")
            answer = await asyncio.to_thread(
                funnel.run, core.store, owner.id if owner else MALL, body, visit_timeout=core.settings.visit_timeout
            )
        except query.QueryError as exc:
            raise BadRequest(str(exc)) from None
        except BeaconError:
            raise
        except Exception as exc:  # noqa: BLE001 - ClickHouse trouble is ours, not the client's: one line, 503
            log.error("funnel failed: %s", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            raise Unavailable("the funnel could not be answered now; try again") from None
        return Response(orjson.dumps(answer), media_type="application/json")

    script = (Path(__file__).parent / "static" / "beacon.js").read_bytes()
    scripts = {"": (script, '"' + hashlib.sha256(script).hexdigest()[:32] + '"')}
    # Under `/partners/<id>/` the script must send to that prefix, not to the bare origin
    # (the mall's scope): the copy served there says so where it picks its endpoint.
    origin = b"new URL(s.src).origin"
    if origin not in script:
        raise RuntimeError("beacon.js no longer picks its endpoint where /partners/<id>/beacon.js expects")
    for prefix in (f"{PARTNER_PREFIX}{p.id}" for p in core.partners):
        body = script.replace(origin, origin + b" + " + orjson.dumps(prefix), 1)
        scripts[prefix] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    async def beacon_js(request: Request) -> Response:
        sc = request.scope.get("beacon.scope")
        body, etag = scripts[sc.path_prefix if sc is not None else ""]
        headers = {"etag": etag, "cache-control": "public, max-age=604800", "cross-origin-resource-policy": "cross-origin"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

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
