"""Routes of the dashboards: sign-in, the page, its data endpoints, CSV export, operators' page.

Beacon's app hands every `/dashboard...` request here with the scope it resolved from the
Host (or the `/partners/<id>` prefix); the session cookie must have been opened for that
same scope, so a partner's page can only ever ask the query API about its own scope.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hmac
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from beacon import query
from beacon.config import Secret
from beacon.dashboard import panels
from beacon.dashboard.ops import Ops
from beacon.dashboard.session import Revocations, Session, Sessions, SessionsUnchecked, fingerprint
from beacon.dashboard.throttle import SigninLimit
from beacon.query import funnel
from beacon.query.model import Answer, FunnelAnswer, Metric
from beacon.scope import MALL, Scope
from beacon.types import ASGIScope, Message, Receive, Send

if TYPE_CHECKING:  # app.py builds the dashboard from its Core: a real cycle
    from beacon.app import Core

log = logging.getLogger("beacon.dashboard")
T = TypeVar("T")
Resolve = Callable[[str, str], tuple[Scope | None, str]]  # Resolver.resolve: (host, path) -> (scope, path in it)
Cell = str | Metric  # a dimension's value or a metric's


class Table(TypedDict, total=False):
    """A panel's answer: its columns and rows (a note, a hint), or why it is not available."""

    columns: list[str]
    dimension: str
    rows: Sequence[Sequence[Cell]]
    note: str
    hint: str
    unavailable: str


class Headline(TypedDict):
    """The cards: each metric now and in the period before, and the metrics the API cannot answer."""

    current: dict[str, Metric]
    previous: dict[str, Metric]
    unavailable: dict[str, str]
    range: dict[str, list[str]]


HERE = Path(__file__).parent
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # "-5", a property's number: a number, not a formula
OPS_COOKIE = "beacon_ops"
MAX_QUERY = 8192  # the page state: a period, dates, ten filters, a property name
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class Unavailable(Exception):
    """The query API does not answer this (yet): the panel says so instead of breaking."""


class Dashboard:
    def __init__(self, core: Core) -> None:
        self.core = core
        s = core.settings
        self.sessions = Sessions(tuple(reveal(k) for k in s.secret_keys), int(s.dashboard_session_age))
        self.revocations = Revocations(lambda: core.redis)
        self.ops = Ops(core)
        self.limit = SigninLimit(
            lambda: core.redis, s.dashboard_signin_limit, s.dashboard_signin_scope_limit, s.dashboard_signin_window, core.clock
        )
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
        self.static = StaticFiles(directory=HERE / "static")
        self.app = Starlette(
            routes=[
                Route("/dashboard", self.page, methods=["GET"]),
                Route("/dashboard/", self.slash, methods=["GET"]),
                Route("/dashboard/login", self.login, methods=["POST"]),
                Route("/dashboard/logout", self.logout, methods=["POST"]),
                Route("/dashboard/api/panel/{name}", self.panel, methods=["GET"]),
                Route("/dashboard/api/csv/{name}", self.csv, methods=["GET"]),
                Route("/dashboard/ops", self.ops_page, methods=["GET"]),
                Route("/dashboard/ops/login", self.ops_login, methods=["POST"]),
                Route("/dashboard/ops/logout", self.logout, methods=["POST"]),  # the path where the ops cookie is sent
                Route("/dashboard/ops/data", self.ops_data, methods=["GET"]),
                Mount("/dashboard/static", app=self.static),
            ],
            middleware=[Middleware(GZipMiddleware, minimum_size=800)],
            exception_handlers={SessionsUnchecked: self.unchecked},
        )

    async def dispatch(self, scope: ASGIScope, receive: Receive, send: Send, resolve: Resolve) -> bool:
        """Serve the request when it is for a dashboard of a scope this host serves; else False."""
        host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
        sc, path = resolve(host, scope["path"])
        if sc is None or not (path == "/dashboard" or path.startswith("/dashboard/")):
            return False
        if len(scope.get("query_string", b"")) > MAX_QUERY:
            await JSONResponse({"error": "request target too long"}, status_code=414)(scope, receive, send)
            return True
        await self(scope, receive, send, sc, path)
        return True

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send, sc: Scope, path: str) -> None:
        inner = dict(scope)
        inner["path"] = path
        inner["beacon.scope"] = sc

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                if self.https(scope):  # browsers ignore (and complain about) COOP over http
                    headers.append((b"cross-origin-opener-policy", b"same-origin"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(inner, receive, send_secured)

    # -- who is asking -----------------------------------------------------------------------------------

    @staticmethod
    def scope_of(request: Request) -> Scope:
        sc: Scope = request.scope["beacon.scope"]
        return sc

    def base(self, sc: Scope) -> str:
        return sc.path_prefix + "/dashboard"

    def cookie_name(self, sc: Scope) -> str:
        return "beacon_dash" if sc.id == MALL else f"beacon_dash_{sc.id}"

    def key_fingerprint(self, sc: Scope) -> str:
        if sc.id == MALL:
            mall_key = reveal(self.core.settings.mall_api_key)
            return fingerprint(mall_key) if mall_key else ""
        partner = self.core.partner_by_id.get(sc.id)
        return fingerprint(partner.api_key_sha256) if partner is not None and partner.api_key_sha256 else ""

    def key_ok(self, sc: Scope, key: str) -> bool:
        if not key:
            return False
        if sc.id == MALL:
            expected = reveal(self.core.settings.mall_api_key)
            return bool(expected) and hmac.compare_digest(key.encode(), expected.encode())
        partner = self.core.partner_by_id.get(sc.id)
        return partner is not None and partner.key_matches(key)

    def opened(self, request: Request) -> tuple[Session | None, str]:
        """The request's session of its scope by its signature (revocation aside), or why not."""
        sc = self.scope_of(request)
        expected = self.key_fingerprint(sc)
        if not expected:
            return None, ""
        return self.sessions.open(request.cookies.get(self.cookie_name(sc), ""), sc.id, expected)

    async def session(self, request: Request) -> tuple[bool, str]:
        """(valid, why not): signed for this scope and key, unexpired, not signed out.
        Raises SessionsUnchecked (a 503) when Redis cannot say whether it was signed out."""
        return await self.accepted(self.opened(request))

    async def accepted(self, opened: tuple[Session | None, str]) -> tuple[bool, str]:
        session, why = opened
        if session is None:
            return False, why
        if await self.revocations.revoked(session):
            return False, "You signed out; sign in again."
        return True, ""

    async def unchecked(self, request: Request, exc: Exception) -> Response:
        """Redis did not answer a session check: 503, the sign-in page or JSON, never a 500."""
        message = "Sessions cannot be checked while Redis is unreachable; try again shortly."
        if "/api/" in request.url.path or request.url.path.endswith("/ops/data"):
            return JSONResponse({"error": message}, status_code=503, headers={"retry-after": "5"})
        ops = request.url.path.endswith("/ops")
        response = self.signin(request, message, status=503, ops=ops, clear=False)  # the session may well be valid
        response.headers["retry-after"] = "5"
        return response

    def https(self, scope: ASGIScope) -> bool:
        """Whether the browser's request came over https: its own scheme, or `X-Forwarded-Proto:
        https` from a trusted proxy (BEACON_TRUSTED_PROXIES, as the client address is read)."""
        if scope.get("scheme") == "https":
            return True
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        proto: bytes | None = next((v for k, v in scope["headers"] if k == b"x-forwarded-proto"), None)
        if proto is None or not self.core.anonymiser.trusts(peer):
            return False
        return bool(proto.split(b",")[0].strip().lower() == b"https")

    def same_origin(self, request: Request) -> bool:
        """CSRF guard for POSTs (besides SameSite=Strict): the Origin must be this host, and an
        https one when the request came over https (an http page cannot sign in to an https one)."""
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site") == "same-origin"
        host = request.headers.get("host", "").lower()
        try:
            parts = urlsplit(origin)
        except ValueError:  # `http://[::1`: not an origin, not this one
            return False
        if parts.scheme != "https" and self.https(request.scope):
            return False
        return bool(host) and parts.netloc.lower() == host

    def render(self, name: str, status: int = 200, **context: object) -> HTMLResponse:
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status)

    def signin(self, request: Request, message: str = "", status: int = 200, ops: bool = False, clear: bool = True) -> HTMLResponse:
        sc = self.scope_of(request)
        base = self.base(sc)
        label = (
            ("Mall API key or metrics key" if self.metrics_key() else "Mall API key")
            if ops
            else ("Mall API key" if sc.id == MALL else "Partner API key")
        )
        response = self.render(
            "signin.html",
            status,
            base=base,
            title="Operators" if ops else self.title(sc),
            message=message,
            action=base + ("/ops/login" if ops else "/login"),
            label=label,
        )
        if clear and request.cookies.get(self.cookie_name(sc)) and not ops:
            self.clear_cookie(response, sc)
        return response

    def title(self, sc: Scope) -> str:
        if sc.id == MALL:
            return "Mall"
        partner = self.core.partner_by_id.get(sc.id)
        return partner.name if partner is not None else sc.id

    def clear_cookie(self, response: Response, sc: Scope) -> None:
        response.delete_cookie(self.cookie_name(sc), path=self.base(sc), httponly=True, samesite="strict")

    def set_session(self, request: Request, response: Response, name: str, path: str, scope: str, key_fp: str) -> None:
        response.set_cookie(
            name,
            self.sessions.dumps(scope, key_fp),
            max_age=self.sessions.max_age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=self.https(request.scope),
        )

    # -- operators: the mall's session, or one opened with the metrics key (BEACON_METRICS_KEY) -------------

    def metrics_key(self) -> str:
        return reveal(self.core.settings.metrics_key)

    def ops_opened(self, request: Request) -> tuple[Session | None, str]:
        """The session of the operators' cookie (opened with the metrics key), revocation aside."""
        token = request.cookies.get(OPS_COOKIE, "")
        if not token or not self.metrics_key():
            return None, ""
        return self.sessions.open(token, "ops", fingerprint(self.metrics_key()))

    async def ops_session(self, request: Request) -> tuple[bool, str]:
        ok, why = await self.session(request)
        if ok or not self.metrics_key() or not request.cookies.get(OPS_COOKIE):
            return ok, why
        return await self.accepted(self.ops_opened(request))

    # -- pages ---------------------------------------------------------------------------------------------

    async def slash(self, request: Request) -> Response:
        return RedirectResponse(self.base(self.scope_of(request)), status_code=308)

    async def page(self, request: Request) -> Response:
        ok, why = await self.session(request)
        if not ok:
            return self.signin(request, why)
        sc = self.scope_of(request)
        error, status = "", 200
        try:
            panels.parse_state(request.query_params, dt.datetime.now(dt.timezone.utc).date())
        except panels.StateError as exc:  # say so, rather than show panels of some other view
            error, status = str(exc), 400
        return self.render(
            "dashboard.html",
            status,
            base=self.base(sc),
            title=self.title(sc),
            is_mall=sc.id == MALL,
            lists=panels.LISTS.values(),
            error=error,
        )

    async def login(self, request: Request) -> Response:
        sc = self.scope_of(request)
        if not self.same_origin(request):
            return JSONResponse({"error": "sign-in must come from this site's own page"}, status_code=403)
        refused = await self.too_many(request)
        if refused is not None:
            return refused
        key = await form_key(request)
        if not self.key_ok(sc, key):
            await self.limit.failed(sc.id, self.address(request))
            return self.signin(request, "That key does not open this dashboard.", status=401)
        response = RedirectResponse(self.base(sc), status_code=303)
        self.set_session(request, response, self.cookie_name(sc), self.base(sc), sc.id, self.key_fingerprint(sc))
        return response

    def address(self, request: Request) -> str:
        """The client's address, through the trusted proxies as the event path reads it."""
        peer = request.client.host if request.client else ""
        forwarded = request.headers.get("x-forwarded-for")
        return str(self.core.anonymiser.client(peer, forwarded.encode("latin-1") if forwarded is not None else None))

    async def too_many(self, request: Request, ops: bool = False) -> Response | None:
        """429 with Retry-After while this address or this scope has used up its failed sign-ins;
        a right key is refused too until the window ends (else the limit would only slow guessing)."""
        wait = await self.limit.wait(self.scope_of(request).id, self.address(request))
        if not wait:
            return None
        minutes = (wait + 59) // 60
        message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        response = self.signin(request, message, status=429, ops=ops)
        response.headers["retry-after"] = str(wait)
        return response

    async def logout(self, request: Request) -> Response:
        sc = self.scope_of(request)
        if not self.same_origin(request):
            return JSONResponse({"error": "sign-out must come from this site's own page"}, status_code=403)
        # Signed out on the server too: a copy of the cookie opens nothing from now on.
        for session in (self.opened(request)[0], self.ops_opened(request)[0] if sc.id == MALL else None):
            if session is not None:
                await self.revocations.revoke(session)
        response = RedirectResponse(self.base(sc), status_code=303)
        self.clear_cookie(response, sc)
        if sc.id == MALL and request.cookies.get(OPS_COOKIE):
            response.delete_cookie(OPS_COOKIE, path=self.base(sc) + "/ops", httponly=True, samesite="strict")
        return response

    async def ops_page(self, request: Request) -> Response:
        sc = self.scope_of(request)
        if sc.id != MALL:
            return JSONResponse({"error": "not found"}, status_code=404)
        ok, why = await self.ops_session(request)
        if not ok:
            return self.signin(request, why, ops=True)
        return self.render("ops.html", base=self.base(sc), title="Operators")

    async def ops_login(self, request: Request) -> Response:
        sc = self.scope_of(request)
        if sc.id != MALL:
            return JSONResponse({"error": "not found"}, status_code=404)
        if not self.same_origin(request):
            return JSONResponse({"error": "sign-in must come from this site's own page"}, status_code=403)
        refused = await self.too_many(request, ops=True)
        if refused is not None:
            return refused
        key = await form_key(request)
        response = RedirectResponse(self.base(sc) + "/ops", status_code=303)
        metrics_key = self.metrics_key()
        if metrics_key and hmac.compare_digest(key.encode(), metrics_key.encode()):
            self.set_session(request, response, OPS_COOKIE, self.base(sc) + "/ops", "ops", fingerprint(metrics_key))
        elif self.key_ok(sc, key):
            self.set_session(request, response, self.cookie_name(sc), self.base(sc), sc.id, self.key_fingerprint(sc))
        else:
            await self.limit.failed(sc.id, self.address(request))
            return self.signin(request, "That key does not open the operators' page.", status=401, ops=True)
        return response

    async def ops_data(self, request: Request) -> Response:
        sc = self.scope_of(request)
        if sc.id != MALL:
            return JSONResponse({"error": "not found"}, status_code=404)
        if not (await self.ops_session(request))[0]:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        return JSONResponse(await self.ops.snapshot())

    # -- data ----------------------------------------------------------------------------------------------

    async def ask(self, scope: str, body: Mapping[str, object]) -> Answer:
        """A panel's query through the same code as `/api/v2/query`, with the same settings."""
        age = self.core.settings.dashboard_max_lag  # 0: exact; else a rollup the flusher refreshed may lag (README, Freshness)
        return await self.answer(
            lambda: query.run(self.core.store, scope, body, visit_timeout=self.core.settings.visit_timeout, rollup_age=age)
        )

    async def ask_funnel(self, scope: str, body: Mapping[str, object]) -> FunnelAnswer:
        """The funnel panel's query through the same code as `/api/v2/funnel`."""
        return await self.answer(lambda: funnel.run(self.core.store, scope, body, visit_timeout=self.core.settings.visit_timeout))

    async def answer(self, call: Callable[[], T]) -> T:
        """Run a query off the event loop; a QueryError or a failure becomes Unavailable (logged)."""
        try:
            return await asyncio.to_thread(call)
        except query.QueryError as exc:
            raise Unavailable(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - one failing query costs its panel, not the page (no 500)
            log.error("dashboard query failed: %s", (str(exc).splitlines() or [type(exc).__name__])[0][:300])
            raise Unavailable("the query failed; the server log says why") from None

    async def panel_data(self, request: Request, name: str, limit: int = 10) -> Table | Headline:
        """The panel's answer: the cards, `{"columns": [...], "rows": [[...]]}` or `{"unavailable": reason}`."""
        sc = self.scope_of(request)
        state = panels.parse_state(request.query_params, dt.datetime.now(dt.timezone.utc).date())
        if name == "headline":
            return await self.headline(sc.id, state)
        return await self.table(sc.id, state, name, limit)

    async def table(self, scope: str, state: panels.State, name: str, limit: int) -> Table:
        """Every panel but the cards; KeyError for a name that is no panel."""
        try:
            if name == "series":
                answer = await self.ask(scope, panels.series_body(state))
                return {"columns": ["time", "visitors", "pageviews"], "rows": filled(rows_of(answer), state)}
            if name == "realtime":
                answer = await self.ask(scope, panels.realtime_body(state))
                return {"columns": ["visitors"], "rows": [r["metrics"] for r in answer.get("results", [])]}
            if name == "funnel":
                steps = await self.ask_funnel(scope, panels.funnel_body(state))
                rows: list[list[Cell]] = [
                    [next(iter(s["step"].values())), s["visitors"], s["conversion_rate"], s["dropoff"]] for s in steps.get("steps", [])
                ]
                return {"columns": ["step", "visitors", "conversion_rate", "dropoff"], "rows": rows}
            panel = panels.LISTS.get(name)
            if panel is None:
                raise KeyError(name)
            if panel.name == "props" and not state.prop:
                return {"hint": "Type a property name (say, plan) to break events down by it."}
            answer = await self.ask(scope, panels.list_body(panel, state, limit))
            dimension = panel.dimension + state.prop if panel.name == "props" else panel.dimension
            return {"columns": [dimension, *panel.metrics], "dimension": dimension, "rows": rows_of(answer)}
        except Unavailable as exc:
            return {"unavailable": f"Not available: {exc}"}

    async def headline(self, scope: str, state: panels.State) -> Headline:
        """The cards in two queries per period: the visit metrics (read from the visits rollup) and
        conversions and revenue (read from the purchases alone); one that fails marks its cards unavailable."""
        current: dict[str, Metric] = {}
        previous: dict[str, Metric] = {}
        unavailable: dict[str, str] = {}
        for metrics in (panels.HEADLINE, panels.COMMERCE):
            try:
                now = await self.ask(scope, panels.totals_body(state, metrics))
                before = await self.ask(scope, panels.totals_body(state.previous(), metrics))
            except Unavailable as exc:
                for m in metrics:
                    unavailable[m] = str(exc)
                continue
            current.update(zip(metrics, first_metrics(now)))
            previous.update(zip(metrics, first_metrics(before)))
        period = {"current": state.date_range(), "previous": state.previous().date_range()}
        return {"current": current, "previous": previous, "unavailable": unavailable, "range": period}

    async def panel(self, request: Request) -> Response:
        if not (await self.session(request))[0]:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        name = request.path_params["name"]
        try:
            return JSONResponse(await self.panel_data(request, name))
        except panels.StateError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except KeyError:
            return JSONResponse({"error": f"no panel named {name[:40]!r}"}, status_code=404)

    async def csv(self, request: Request) -> Response:
        if not (await self.session(request))[0]:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        name = request.path_params["name"]
        sc = self.scope_of(request)
        try:
            state = panels.parse_state(request.query_params, dt.datetime.now(dt.timezone.utc).date())
            if name == "headline":
                data = cards_table(await self.headline(sc.id, state))
            else:
                data = await self.table(sc.id, state, name, limit=10_000)
        except panels.StateError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except KeyError:
            return JSONResponse({"error": f"no panel named {name[:40]!r}"}, status_code=404)
        if "unavailable" in data:
            return JSONResponse({"error": data["unavailable"]}, status_code=409)
        if "hint" in data:  # the properties panel without a property name
            return JSONResponse({"error": data["hint"]}, status_code=400)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([plain(c) for c in data["columns"]])
        writer.writerows([plain(v) for v in row] for row in data["rows"])
        filename = f"{sc.id}-{name}.csv"
        return Response(
            out.getvalue(), media_type="text/csv; charset=utf-8", headers={"content-disposition": f'attachment; filename="{filename}"'}
        )


async def form_key(request: Request, limit: int = 4096) -> str:
    """The `key` field of the urlencoded sign-in form (stdlib parsing: no multipart dependency)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return ""
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4).get("key")
    except ValueError:  # more fields than a sign-in form has
        return ""
    return values[0].strip() if values else ""


def reveal(value: Secret | str | None) -> str:
    """The plain text of a setting that is a `config.Secret` (masked in `str`)."""
    return value.reveal() if isinstance(value, Secret) else str(value or "")


def cards_table(cards: Headline) -> Table:
    """The cards as a table (their CSV): metric, current, previous; unavailable when none answered."""
    if not cards["current"] and cards["unavailable"]:
        return {"unavailable": "Not available: " + next(iter(cards["unavailable"].values()))}
    rows = [[metric, value, cards["previous"].get(metric, "")] for metric, value in cards["current"].items()]
    return {"columns": ["metric", "current", "previous"], "rows": rows}


def first_metrics(answer: Answer) -> list[Metric]:
    results = answer.get("results") or []
    return list(results[0]["metrics"]) if results else []


def rows_of(answer: Answer) -> list[list[Cell]]:
    return [[*r.get("dimensions", []), *r.get("metrics", [])] for r in answer.get("results", [])]


def filled(rows: list[list[Cell]], state: panels.State) -> list[list[Cell]]:
    """The series with every day of the range (every hour of a one-day view), a bucket without
    events as zeros: the chart's time axis and its table have no gaps."""
    have = {str(r[0]): r for r in rows if r}
    if state.start == state.end:
        labels = [f"{state.start.isoformat()} {h:02d}:00:00" for h in range(24)]
    else:
        labels = [(state.start + dt.timedelta(days=i)).isoformat() for i in range((state.end - state.start).days + 1)]
    return [have.get(label) or [label, 0, 0] for label in labels]


def plain(value: object) -> object:
    """A CSV cell as the panel shows it: revenue per currency (`{"EUR": "12.50"}`) as `EUR 12.50`,
    `0` without any. The file is opened in spreadsheets, so text that one would run as a formula
    (visitors write campaigns, sources, properties) is kept text by a leading `'` (OWASP, CSV
    injection); numbers stay numbers, a negative one too, also as text ("-5", a property's value)."""
    if isinstance(value, dict):
        return "; ".join(f"{c} {v}" for c, v in value.items()) or "0"
    if isinstance(value, str) and value.startswith(FORMULA) and not NUMBER.fullmatch(value):
        return "'" + value
    return "" if value is None else value
