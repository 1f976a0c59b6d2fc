"""The one place that decides, per scope and request, what may be set and recorded.

Today: a partner scope sets no cookie and records nothing when the request carries
`Sec-GPC: 1` or the visitor opted out of that scope (cookie `<cookie_name>_optout=1`).
The mall scope always records with its cookie. The privacy work (DNT, cookieless mall
mode, anonymous counts) extends `decide` and nothing else.
"""

from __future__ import annotations

from typing import Any

from beacon.identity import cookie_value

COOKIE = "cookie"  # identified by the scope's signed cookie
DROP = "drop"  # no cookie, no event


def optout_cookie_name(scope: Any) -> bytes:
    return f"{scope.cookie_name}_optout".encode()


def decide(scope: Any, req: Any) -> str:
    if scope.is_partner:
        if req.gpc:
            return DROP
        if req.cookie and cookie_value(req.cookie, optout_cookie_name(scope)) == "1":
            return DROP
    return COOKIE
