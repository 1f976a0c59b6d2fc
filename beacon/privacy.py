"""A visitor's own controls, per scope (host-resolved): opt out, opt in, see, forget.

Every erasure is audited in one log line that names the scope and a keyed hash of the
id, never the id itself.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import TYPE_CHECKING

from beacon import customers, metrics
from beacon.audit import audit_id
from beacon.errors import BadRequest, as_response
from beacon.event import query_value
from beacon.identity import Identity, cookie_value
from beacon.params import next_cursor, parse_page
from beacon.request import Request
from beacon.routes import send_json
from beacon.scope import Scope
from beacon.store import Store
from beacon.types import ASGIScope, Receive, Send

if TYPE_CHECKING:  # app.py builds these routes from its Core: a real cycle
    from beacon.app import Core

audit = logging.getLogger("beacon.audit")

PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title><body style="font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto">
<h1>{title}</h1><p>{text}</p><p><a href="{other}">{other_label}</a></p></body></html>"""


def both_jars(sc: Scope, cookie: bytes) -> list[bytes]:
    """A partner's Set-Cookie, unpartitioned and partitioned (CHIPS); the mall's as it is.

    Opened inside the partner's ad frame on the mall (the link in its tag), the
    partitioned copy lands in the mall's partition, where that ad's requests carry it
    even when third-party cookies are blocked; the unpartitioned copy reaches the
    partner's ads on every site where they are allowed. Browsers keep the two apart,
    so opting out sets both and opting in or clearing removes both.
    """
    if not sc.is_partner:
        return [cookie]
    plain = cookie.replace(b"; Partitioned", b"")
    return [plain, plain + b"; Partitioned"]


def forget_visitor(store: Store, secret: str, scope: str, visitor: str, via: str) -> int:
    """Delete every row of `visitor` in `scope`; audited without the id in clear."""
    rows = store.forget(scope, visitor)
    audit.info("forget scope=%s visitor_hash=%s rows=%d via=%s", scope, audit_id(secret, scope, visitor), rows, via)
    return rows


class VisitorRights:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _visitor(self, sc: Scope, req: Request) -> tuple[Identity, str | None]:
        """The scope's identity and the id of this browser's valid cookie (None: none; never minted)."""
        ident = self.core.identity(sc)
        return ident, ident.verified(cookie_value(req.cookie, ident.cookie_name_b))

    def _name(self, sc: Scope) -> str:
        p = self.core.partner_by_id.get(sc.id)
        return html.escape(p.name if p else "this shop")

    async def _page(self, send: Send, title: str, text: str, cookies: list[bytes], other: str, label: str) -> None:
        body = PAGE.format(title=title, text=text, other=other, other_label=label).encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-robots-tag", b"noindex"),
        ]
        headers += [(b"set-cookie", c) for c in cookies]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def optout(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        ident = self.core.identity(sc)
        metrics.request("optout", 200)
        await self._page(
            send,
            "You have opted out",
            f"{self._name(sc)} will no longer set an identifying cookie in this browser or record your "
            "visits under an id. Your id cookie has been deleted. This choice is kept in a cookie; "
            "clearing your cookies undoes it.",
            [*both_jars(sc, ident.optout_cookie), *both_jars(sc, ident.clear_cookie)],
            f"{sc.path_prefix}/optin",
            "Opt back in",
        )

    async def optin(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        ident = self.core.identity(sc)
        metrics.request("optin", 200)
        await self._page(
            send,
            "You have opted back in",
            f"{self._name(sc)} may set its cookie again on your next visit.",
            both_jars(sc, ident.optin_cookie),
            f"{sc.path_prefix}/optout",
            "Opt out",
        )

    async def me(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        if asgi["method"] != "GET":
            return await send_json(send, 405, {"error": "use GET"}, [(b"allow", b"GET")])
        ident, visitor = self._visitor(sc, req)
        if visitor is None:
            return await send_json(
                send,
                200,
                {
                    "scope": sc.id,
                    "visitor_id": None,
                    "events": [],
                    "next": None,
                    "note": "no valid id cookie in this browser for this scope",
                },
            )
        qs = asgi["query_string"]
        try:
            limit, before = parse_page(lambda key: query_value(qs, key))
        except BadRequest as exc:
            status, error, headers = as_response(exc)
            return await send_json(send, status, error, list(headers))
        rows = await asyncio.to_thread(self.core.store.events, sc.id, limit, before, visitor)
        cursor = next_cursor(rows, limit)
        body: dict[str, object] = {"scope": sc.id, "visitor_id": visitor, "events": rows, "next": cursor}
        if not sc.is_partner:  # the account this browser was linked to by the mall (stored form: id or hash)
            body["accounts"] = await asyncio.to_thread(customers.accounts_of, self.core.store, sc.id, visitor)
        await send_json(send, 200, body)

    async def forget(self, asgi: ASGIScope, receive: Receive, send: Send, sc: Scope, req: Request) -> None:
        if asgi["method"] != "POST":
            return await send_json(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
        ident, visitor = self._visitor(sc, req)
        if visitor is None:
            return await send_json(
                send,
                200,
                {"forgotten": 0, "note": "no valid id cookie for this scope"},
                [(b"set-cookie", c) for c in both_jars(sc, ident.clear_cookie)],
            )
        secret = self.core.settings.secret_keys[0].reveal()
        linked = [] if sc.is_partner else await asyncio.to_thread(customers.accounts_of, self.core.store, sc.id, visitor)
        rows = 0
        for account in linked:  # every device of the account, and the link itself
            rows += (await asyncio.to_thread(customers.forget_account, self.core.store, secret, sc.id, account, "visitor"))[1]
        rows += await asyncio.to_thread(forget_visitor, self.core.store, secret, sc.id, visitor, "visitor")
        body = {"forgotten": rows, "accounts_unlinked": len(linked)} if linked else {"forgotten": rows}
        await send_json(send, 200, body, [(b"set-cookie", c) for c in both_jars(sc, ident.clear_cookie)])
