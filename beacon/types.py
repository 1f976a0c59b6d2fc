"""ASGI type aliases shared by every module; nothing else lives here.

"Scope" in Beacon means a cookie world (`beacon.scope.Scope`); the ASGI connection
mapping is `HTTPScope` (as uvicorn's `_types.py` names it) or `ASGIScope` in general.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal, TypedDict


class HTTPScope(TypedDict):
    type: Literal["http"]
    asgi: dict[str, str]
    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None


ASGIScope = MutableMapping[str, Any]  # Any: ASGI payloads are open-ended mappings
Message = MutableMapping[str, Any]  # Any: as above, per ASGI message type
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]
