"""The few request headers Beacon's plain-ASGI routes read (pixel, collect, sync, visitor rights), parsed once.

Its own module so that `consent` and `privacy` can take a `Request` without importing the routes.
"""

from __future__ import annotations

_WANTED = {
    b"host": 0,
    b"user-agent": 1,
    b"cookie": 2,
    b"referer": 3,
    b"x-forwarded-for": 4,
    b"origin": 5,
    b"content-type": 6,
    b"content-length": 7,
    b"sec-gpc": 8,
    b"dnt": 9,
}


class Request:
    """The few headers the beacon routes read, found in one pass."""

    __slots__ = (
        "host",
        "cookie",
        "referer",
        "user_agent",
        "forwarded_for",
        "origin",
        "content_type",
        "content_length",
        "gpc",
        "dnt",
        "signals",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.host = self.cookie = self.referer = self.user_agent = self.origin = self.content_type = b""
        self.forwarded_for: bytes | None = None
        self.content_length = -1
        self.gpc = self.dnt = False
        wanted = _WANTED
        for key, value in headers:
            field = wanted.get(key)  # one look-up per header; most headers are not read
            if field is None:
                continue
            if field == 0:
                self.host = value
            elif field == 1:
                self.user_agent = value
            elif field == 2:
                self.cookie = value if not self.cookie else self.cookie + b"; " + value
            elif field == 3:
                self.referer = value
            elif field == 4:
                self.forwarded_for = value if self.forwarded_for is None else self.forwarded_for + b"," + value
            elif field == 5:
                self.origin = value
            elif field == 6:
                self.content_type = value.split(b";", 1)[0].strip().lower()
            elif field == 7:
                self.content_length = int(value) if value.isdigit() else -1
            elif field == 8:
                self.gpc = value.strip() == b"1"
            else:
                self.dnt = value.strip() == b"1"
        # Whatever a consent decision could turn on: GPC, DNT, or an opt-out cookie.
        self.signals = self.gpc or self.dnt or b"_optout=" in self.cookie
