"""The two beacon routes, as plain ASGI: `GET /p.gif` and `POST /e`.

This is the hot path. Everything done per request is visible here; everything
that can be computed once (GIF, header lists, Set-Cookie affixes) is.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import orjson

from beacon import commerce, consent, metrics
from beacon.checked import CheckedEvent
from beacon.cycle import prepared
from beacon.enums import Reason
from beacon.errors import Invalid, NotDurable, TooManyEvents
from beacon.event import (
    check_event_name,
    check_props,
    check_url,
    clean_text,
    encode,
    parse_pixel_query,
    query_value,
    uuid7,
)
from beacon.identity import cookie_value
from beacon.partners import SyncRefused, sync_target
from beacon.request import Request
from beacon.scope import Scope, is_loopback_origin
from beacon.types import ASGIScope, Receive, Send

if TYPE_CHECKING:  # app.py builds the routes from its Core: a real cycle
    from beacon.app import Core

# nginx's empty_gif, byte for byte: 1x1, one transparent colour.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x01\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x01\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x4c\x01\x00;"
)
# Checked once here as uvicorn would check them (beacon/cycle.py), not on every response.
GIF_HEADERS = prepared(
    [
        (b"content-type", b"image/gif"),
        (b"content-length", str(len(GIF)).encode()),
        (b"cache-control", b"no-store"),
        (b"cross-origin-resource-policy", b"cross-origin"),
    ]
)
GIF_START = {"type": "http.response.start", "status": 200, "headers": GIF_HEADERS}
GIF_BODY = {"type": "http.response.body", "body": GIF}
NO_CONTENT = {"type": "http.response.body", "body": b""}
JSON_TYPES = (b"", b"text/plain", b"application/json")
Checked = CheckedEvent
CLIENT_CACHE = 16384  # (peer, X-Forwarded-For, User-Agent, precise) -> derived client fields
QUERY_CACHE = 4096  # (pixel query, Referer) -> the checked event, or why it was refused
QUERY_CACHE_BYTES = 1024  # longer pairs are checked every time, not remembered


async def send_json(send: Send, status: int, body: Mapping[str, object], extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BeaconRoutes:
    """Pixel and sendBeacon endpoints for whatever scope the request resolved to."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.s = core.settings
        # A visitor's requests repeat their peer, X-Forwarded-For and User-Agent: everything
        # derived from them is looked up once per visitor, not once per request.
        self._client = functools.lru_cache(maxsize=CLIENT_CACHE)(self._client_fields)
        self._queries: dict[tuple[bytes, bytes], tuple[list[Checked], int, Reason | None]] = {}

    def _server_fields(self, asgi: ASGIScope, req: Request, mode: str) -> tuple[str, str, bool, bytes]:
        """(truncated ip, user agent, is_bot, encoded geo and agent columns)."""
        client = asgi.get("client")
        return self._client(client[0] if client else "", req.forwarded_for, req.user_agent, mode != consent.ANONYMOUS)

    def _client_fields(self, peer: str, forwarded_for: bytes | None, user_agent: bytes, precise: bool) -> tuple[str, str, bool, bytes]:
        """The full address is used for the country here and goes no further (it is a key
        of this process's caches, never stored or logged)."""
        core = self.core
        addr = core.anonymiser.client(peer, forwarded_for)
        ua = clean_text(user_agent.decode("latin-1"), core.limits.user_agent) if user_agent else ""
        is_bot = core.is_bot(ua) if ua else False
        derived = core.enrich.client(addr, ua, is_bot, precise)
        return core.anonymiser.anonymise(addr), ua, is_bot, derived

    async def pixel(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        method = asgi["method"]
        if method != "GET":
            if method == "HEAD":
                await send(GIF_START)
                await send(NO_CONTENT)
                return
            metrics.request("pixel", 405)
            await send_json(send, 405, {"error": f"method {method} not allowed; use GET"}, [(b"allow", b"GET, HEAD")])
            return
        core = self.core
        mode = core.consent.decide(sc, req) if req.signals else consent.COOKIE
        set_cookie = None
        if mode == consent.DROP:
            metrics.EVENTS_REJECTED.labels(Reason.CONSENT).inc()
        else:
            lines, set_cookie = await self._encode(asgi, req, sc, mode, self._pixel_fields(asgi, req), "pixel")
            if lines:
                try:
                    await core.buffer.append(lines)
                    metrics.accepted(sc.id)
                except NotDurable:  # not stored (counted by the buffer): no 2xx, the GIF all the same
                    metrics.request("pixel", 503)
                    headers = GIF_HEADERS if set_cookie is None else (*GIF_HEADERS, (b"set-cookie", set_cookie))
                    await send({"type": "http.response.start", "status": 503, "headers": headers})
                    await send(GIF_BODY)
                    return
        if set_cookie is None:
            await send(GIF_START)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": (*GIF_HEADERS, (b"set-cookie", set_cookie))})
        await send(GIF_BODY)
        metrics.PIXEL_OK_COUNT.n += 1

    def _pixel_fields(self, asgi: ASGIScope, req: Request) -> list[Checked]:
        """The pixel's one event, validated; [] when it cannot be recorded (counted).

        The outcome is a function of the query and the Referer alone, and a site's pixels
        repeat them across visitors: it is remembered per exact (query, Referer) pair, and
        its counts are made again on every request. Pairs over `QUERY_CACHE_BYTES` are not
        remembered; the cache is emptied when full."""
        qs = asgi["query_string"]
        if len(qs) > self.s.max_query_bytes or "beacon.truncated" in asgi:  # see beacon/http.py
            metrics.EVENTS_REJECTED.labels(Reason.QUERY_TOO_LONG).inc()
            return []
        key = (qs, req.referer)
        known = self._queries.get(key)
        if known is None:
            known = self._check_query(qs, req)
            if len(qs) + len(req.referer) <= QUERY_CACHE_BYTES:
                if len(self._queries) >= QUERY_CACHE:
                    self._queries.clear()
                self._queries[key] = known
        checked, dropped, rejected = known
        if dropped:
            metrics.FIELDS_DROPPED.inc(dropped)
        if rejected is not None:
            metrics.EVENTS_REJECTED.labels(rejected).inc()
            return []
        return checked

    def _check_query(self, qs: bytes, req: Request) -> tuple[list[Checked], int, Reason | None]:
        """(the event, parameters dropped, why it is refused or None)."""
        core = self.core
        fields, dropped = parse_pixel_query(qs, core.limits) if qs else ({}, 0)
        try:
            name = check_event_name(fields.get("e", "pageview"), core.limits)
            shop = None
            if name in commerce.EVENTS:
                try:
                    shop = commerce.check(name, commerce.from_pixel(fields.get("c", {})))
                except Invalid:
                    return [], dropped, Reason.INVALID_COMMERCE
            props = check_props(fields.get("p"), core.limits)
            event = CheckedEvent(
                name,
                check_url(fields.get("u") or req.referer.decode("latin-1"), core.limits, "u"),
                check_url(fields.get("r"), core.limits, "r"),
                props if shop is None else commerce.without_fields(props),
                shop,
            )
            return [event], dropped, None
        except Invalid:
            return [], dropped, Reason.INVALID

    async def _encode(
        self,
        asgi: ASGIScope,
        req: Request,
        sc: Scope,
        mode: str,
        checked: list[Checked],
        transport: str,
    ) -> tuple[list[bytes], bytes | None]:
        """Identify the visitor as `mode` allows and encode the events: (lines, Set-Cookie or None)."""
        core = self.core
        if not checked:  # nothing to record: only the cookie is kept up to date
            if mode != consent.COOKIE:
                return [], None
            ident = core.identity(sc)
            return [], ident.visitor(cookie_value(req.cookie, ident.cookie_name_b))[1]
        ip, ua, is_bot, client = self._server_fields(asgi, req, mode)
        if is_bot and self.s.drop_bots:
            metrics.EVENTS_REJECTED.labels(Reason.BOT).inc(len(checked))
            return [], None
        set_cookie = None
        if mode == consent.COOKIE:
            ident = core.identity(sc)
            visitor, set_cookie = ident.visitor(cookie_value(req.cookie, ident.cookie_name_b))
        elif mode == consent.COOKIELESS:
            visitor = await core.consent.cookieless_id(sc, ip, ua)
        else:  # anonymous: counted, nothing that points at a person
            visitor, ip, ua = "", "", ""
        t = core.clock()
        bot = 1 if is_bot else 0
        enrich = core.enrich
        return [
            commerce.splice(
                encode(
                    event_id=uuid7(t),
                    received_at=t,
                    scope=sc.id,
                    visitor_id=visitor,
                    mode=mode,
                    event=name,
                    url=url,
                    referrer=ref,
                    props=props,
                    ip=ip,
                    user_agent=ua,
                    transport=transport,
                    is_bot=bot,
                    derived=client + enrich.event(url, ref),
                ),
                shop,
            )
            for name, url, ref, props, shop in checked
        ], set_cookie

    async def collect(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        cors = self._cors(sc, req)
        method = asgi["method"]
        if method == "OPTIONS":
            await self._preflight(send, cors, req)
            return
        if method != "POST":
            return await self._refuse(send, 405, f"method {method} not allowed; use POST", [(b"allow", b"POST, OPTIONS")])
        if req.origin and cors is None:
            return await self._refuse(send, 403, f"origin {req.origin.decode('latin-1')[:200]!r} is not allowed")
        if req.content_type not in JSON_TYPES:
            return await self._refuse(send, 415, "content type must be text/plain or application/json", cors)
        limit = self.s.max_body_bytes
        if req.content_length > limit:
            return await self._refuse(send, 413, f"body larger than {limit} bytes", cors)
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await self._refuse(send, 413, f"body larger than {limit} bytes", cors)
        try:
            checked = self._check_events(req, body)
        except Invalid as exc:
            return await self._refuse(send, exc.status, exc.reason, cors)
        mode = self.core.consent.decide(sc, req) if req.signals else consent.COOKIE
        if mode == consent.DROP:  # validated, then neither identified nor stored
            metrics.EVENTS_REJECTED.labels(Reason.CONSENT).inc(len(checked))
            await send({"type": "http.response.start", "status": 204, "headers": list(cors or ())})
            await send(NO_CONTENT)
            return
        lines, visitor_cookie = await self._encode(asgi, req, sc, mode, checked, "beacon")
        if not lines:
            await send({"type": "http.response.start", "status": 204, "headers": list(cors or ())})
            await send(NO_CONTENT)
            return
        try:
            await self.core.buffer.append(lines)
        except NotDurable as exc:
            return await self._refuse(send, 503, f"events not stored: {exc}", cors)
        metrics.accepted(sc.id, len(lines))
        headers = list(cors or ())
        if visitor_cookie is not None:
            headers.append((b"set-cookie", visitor_cookie))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send(NO_CONTENT)
        metrics.COLLECT_OK.inc()

    def _check_events(self, req: Request, body: bytes) -> list[Checked]:
        core = self.core
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Invalid(f"malformed JSON: {exc}") from None
        events = doc if isinstance(doc, list) else [doc]
        if not events:
            raise Invalid("no events in body")
        if len(events) > self.s.max_batch_events:
            raise TooManyEvents(f"too many events: {len(events)} > {self.s.max_batch_events}")
        checked = []
        for i, ev in enumerate(events):
            if not isinstance(ev, dict):
                raise Invalid(f"event {i}: must be an object")
            try:
                name = check_event_name(ev.get("e", "pageview"), core.limits)
                shop = commerce.check(name, ev) if name in commerce.EVENTS else None
                props = check_props(ev.get("p"), core.limits)
                checked.append(
                    CheckedEvent(
                        name,
                        check_url(ev.get("u", req.referer.decode("latin-1")), core.limits, "u"),
                        check_url(ev.get("r"), core.limits, "r"),
                        props if shop is None else commerce.without_fields(props),
                        shop,
                    )
                )
            except Invalid as exc:
                raise Invalid(f"event {i}: {exc.reason}") from None
        return checked

    async def sync(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        """Partner cookie sync: 302 to an allowlisted URL with the partner's own id for {uid}."""
        if not sc.is_partner:
            return await send_json(send, 404, {"error": "sync exists only on partner scopes"})
        if asgi["method"] != "GET":
            return await send_json(send, 405, {"error": "use GET"}, [(b"allow", b"GET")])
        if req.signals and self.core.consent.decide(sc, req) != consent.COOKIE:
            metrics.request("sync", 204)
            await send({"type": "http.response.start", "status": 204, "headers": [(b"cache-control", b"no-store")]})
            return await send(NO_CONTENT)
        partner = self.core.partner_by_id[sc.id]
        to = query_value(asgi["query_string"], "to") or ""
        ident = self.core.identity(sc)
        visitor, set_cookie = ident.visitor(cookie_value(req.cookie, ident.cookie_name_b))
        try:
            if not to.isascii():
                raise SyncRefused("to must be ASCII (percent-encode the rest)")
            target = sync_target(partner, to, visitor)
        except SyncRefused as exc:
            metrics.request("sync", 400)
            return await send_json(send, 400, {"error": str(exc)})
        headers = [(b"location", target.encode("ascii")), (b"cache-control", b"no-store"), (b"content-length", b"0")]
        if set_cookie is not None:
            headers.append((b"set-cookie", set_cookie))
        metrics.request("sync", 302)
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send(NO_CONTENT)

    def _cors(self, sc: Scope, req: Request) -> list[tuple[bytes, bytes]] | None:
        if not req.origin:
            return []
        origin = req.origin.decode("latin-1")
        if origin not in sc.origins and not (sc.loopback_origins and is_loopback_origin(origin)):
            return None
        return [(b"access-control-allow-origin", req.origin), (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]

    async def _preflight(self, send: Send, cors: list[tuple[bytes, bytes]] | None, req: Request) -> None:
        if not cors:
            return await self._refuse(send, 403, "origin is not allowed" if req.origin else "preflight needs an Origin")
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *cors,
                    (b"access-control-allow-methods", b"POST, OPTIONS"),
                    (b"access-control-allow-headers", b"content-type"),
                    (b"access-control-max-age", b"86400"),
                ],
            }
        )
        await send(NO_CONTENT)

    async def _refuse(self, send: Send, status: int, reason: str, extra: Sequence[tuple[bytes, bytes]] | None = None) -> None:
        metrics.request("collect", status)
        metrics.EVENTS_REJECTED.labels(Reason.for_status(status)).inc()
        await send_json(send, status, {"error": reason}, list(extra or ()))
