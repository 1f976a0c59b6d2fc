"""One error model: every error a client can cause is a `BeaconError` with a status and a reason.

Routes and the read API raise these; `as_response` turns one into the JSON answer in
one place (plain ASGI routes call it directly, Starlette routes through the exception
handler `app.py` installs). The pixel never answers an error: it records nothing,
counts why, and still sends the GIF.
"""

from __future__ import annotations

from typing import ClassVar


class BeaconError(Exception):
    """Root of Beacon's errors; `reason` is safe to show to the client that caused it."""

    status: ClassVar[int] = 500

    def __init__(self, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers


class BadRequest(BeaconError):
    """Malformed input: a body, an event, a query parameter or a cursor."""

    status = 400


class Invalid(BadRequest):
    """An event that fails validation; the reason names the field."""


class TooManyEvents(Invalid):
    status = 413


class BodyTooLarge(BeaconError):
    status = 413


class Unauthorized(BeaconError):
    status = 401

    def __init__(self, reason: str = "missing or wrong bearer key") -> None:
        super().__init__(reason, ((b"www-authenticate", b"Bearer"),))


class Forbidden(BeaconError):
    """An origin or a caller that is known and refused."""

    status = 403


class NotFound(BeaconError):
    status = 404


class MethodNotAllowed(BeaconError):
    status = 405

    def __init__(self, method: str, allow: str) -> None:
        super().__init__(f"method {method[:16]} not allowed; use {allow.split(',')[0]}", ((b"allow", allow.encode()),))


class UnsupportedMediaType(BeaconError):
    status = 415


class Unavailable(BeaconError):
    """Beacon cannot answer now (Redis or ClickHouse trouble, ours not the client's); the client may retry."""

    status = 503


class NotDurable(Unavailable):
    """Events that neither Redis nor the spool could take: nothing was stored, the client may retry."""


def as_response(exc: BeaconError) -> tuple[int, dict[str, str], tuple[tuple[bytes, bytes], ...]]:
    """(status, JSON body, extra headers) for an error: the only place errors become answers."""
    return exc.status, {"error": exc.reason}, exc.headers
