"""Signed-in customers: the mall's server links an account to a visitor id, server to server.

The link (scope, visitor id -> account) lives in its own table, `<events table>_accounts`,
never in the events and never in anything a partner can reach: the identify and customer
routes answer the mall key only, and the app serves them on the mall's hosts only.

Threat model, in short: the browser is never trusted with an account. The mall's
backend, which has just authenticated the user, sends `POST /api/v1/identify` with the
mall key and the visitor's signed cookie value as it received it; Beacon verifies the
signature (itsdangerous, the mall's salt and keys) before it links anything, so a
forged or foreign cookie cannot be linked to an account, and a page script cannot
link anything at all (it has neither the key nor, with HttpOnly, the cookie).
With `BEACON_ACCOUNT_HASH_KEY` set, Beacon stores HMAC-SHA256(key, account) instead
of the account: a leak of the table yields no account id without the key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beacon.audit import audit_id
from beacon.columns import int_of, str_of
from beacon.errors import BadRequest, BodyTooLarge, Unauthorized
from beacon.params import bearer_ok, next_cursor, parse_page, parse_range
from beacon.scope import MALL
from beacon.store import Store

if TYPE_CHECKING:  # app.py builds these routes from its Core (through api.py): a real cycle
    from beacon.app import Core

audit = logging.getLogger("beacon.audit")

MAX_ACCOUNT = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_BODY = 4096


def table(store: Store) -> str:
    """The links table; made by `Store.migrate` (its DDL is `store.accounts_ddl`)."""
    return store.accounts_table


def account_key(hash_key: str, account: str) -> str:
    """What is stored for `account`: the id itself, or its HMAC-SHA256 under BEACON_ACCOUNT_HASH_KEY."""
    if not hash_key:
        return account
    return "hmac:" + hmac.new(hash_key.encode(), account.encode(), hashlib.sha256).hexdigest()


def check_account(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_ACCOUNT or _CONTROL.search(value):
        raise BadRequest(f"account must be a string of 1-{MAX_ACCOUNT} printable characters")
    return value


def link(store: Store, scope: str, visitor: str, account: str) -> None:
    store.command(
        f"INSERT INTO {table(store)} (scope, visitor_id, account, linked_at) "
        "VALUES ({scope:String}, {visitor:String}, {account:String}, now64(3))",
        {"scope": scope, "visitor": visitor, "account": account},
    )


def accounts_of(store: Store, scope: str, visitor: str) -> list[str]:
    return [
        str_of(a)
        for (a,) in store.query(
            f"SELECT DISTINCT account FROM {table(store)} WHERE scope = {{scope:String}} "
            "AND visitor_id = {visitor:String} ORDER BY account",
            {"scope": scope, "visitor": visitor},
        )
    ]


def visitors_of(store: Store, scope: str, account: str) -> list[str]:
    return [
        str_of(v)
        for (v,) in store.query(
            f"SELECT DISTINCT visitor_id FROM {table(store)} WHERE scope = {{scope:String}} "
            "AND account = {account:String} ORDER BY visitor_id",
            {"scope": scope, "account": account},
        )
    ]


def count(store: Store, scope: str, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Customers (distinct accounts) whose linked visitors have events in [start, end), and those visitors."""
    row = store.query(
        f"SELECT uniqExact(account), uniqExact(visitor_id) FROM {table(store)} WHERE scope = {{scope:String}} "
        f"AND visitor_id IN (SELECT DISTINCT visitor_id FROM {store.full_table} WHERE scope = {{scope:String}} "
        "AND received_at >= {start:DateTime64(3)} AND received_at < {end:DateTime64(3)} AND is_bot = 0 "
        "AND visitor_id != '')",
        {"scope": scope, "start": start, "end": end},
    )[0]
    return {"customers": int_of(row[0]), "visitors": int_of(row[1])}


def forget_account(store: Store, secret: str, scope: str, account: str, via: str) -> tuple[int, int]:
    """Delete the events of every visitor id linked to `account` (stored form) and the links; audited
    with a keyed hash, never the account or the ids. Returns (visitor ids, event rows)."""
    visitors = visitors_of(store, scope, account)
    rows = sum(store.forget(scope, v) for v in visitors)
    store.command(
        f"DELETE FROM {table(store)} WHERE scope = {{scope:String}} AND account = {{account:String}}", {"scope": scope, "account": account}
    )
    audit.info(
        "forget scope=%s account_hash=%s visitors=%d rows=%d via=%s",
        scope,
        audit_id(secret, scope, "account:" + account),
        len(visitors),
        rows,
        via,
    )
    return len(visitors), rows


def unauthorized() -> Unauthorized:
    return Unauthorized("missing or wrong bearer key (the mall key)")


def routes(core: Core) -> list[Route]:
    """Mall-key-only routes: identify, customer counts, a customer's events across devices."""
    s = core.settings

    async def identify(request: Request) -> Response:
        if not bearer_ok(request, s.mall_api_key):
            raise unauthorized()
        body = await request.body()
        if len(body) > MAX_BODY:
            raise BodyTooLarge(f"body larger than {MAX_BODY} bytes")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest('body must be JSON: {"cookie": "…", "account": "…"}') from None
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        account = check_account(doc.get("account"))
        cookie = doc.get("cookie")
        visitor = core.identity(core.mall).verified(cookie) if isinstance(cookie, str) and len(cookie) < 512 else None
        if visitor is None:
            raise BadRequest(
                "cookie is not a valid, unexpired Beacon cookie of the mall: send the "
                f"value of the {s.cookie_name} cookie as your server received it"
            )
        await asyncio.to_thread(link, core.store, MALL, visitor, account_key(s.account_hash_key.reveal(), account))
        return JSONResponse({"linked": True, "hashed": bool(s.account_hash_key)})

    async def customer_counts(request: Request) -> Response:
        if not bearer_ok(request, s.mall_api_key):
            raise unauthorized()
        start, end, _ = parse_range(request)
        body = await asyncio.to_thread(count, core.store, MALL, start, end)
        return JSONResponse({"from": start.isoformat(), "to": end.isoformat(), **body})

    async def customer_events(request: Request) -> Response:
        """Events of every device (visitor id) linked to one account, newest first."""
        if not bearer_ok(request, s.mall_api_key):
            raise unauthorized()
        q = request.query_params
        account = account_key(s.account_hash_key.reveal(), check_account(q.get("account")))
        limit, before = parse_page(q.get)
        rows = await asyncio.to_thread(customer_rows, core.store, MALL, account, limit, before)
        cursor = next_cursor(rows, limit)
        return Response(orjson.dumps({"events": rows, "next": cursor}), media_type="application/json")

    return [
        Route("/api/v1/identify", identify, methods=["POST"]),
        Route("/api/v1/customers", customer_counts),
        Route("/api/v1/customers/events", customer_events),
    ]


def customer_rows(
    store: Store, scope: str, account: str, limit: int, before: tuple[int, str] | None
) -> list[dict[str, object]]:  # JSON rows, keyed by column
    visitors = visitors_of(store, scope, account)
    if not visitors:
        return []
    return store.events(scope, limit, before, visitors=visitors)
