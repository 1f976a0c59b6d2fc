"""The few request headers Beacon's plain-ASGI routes read (pixel, collect, sync, visitor rights), parsed once.

Its own module so that `consent` and `privacy` can take a `Request` without importing the routes.
"""

from __future__ import annotations


class Request:
    """The few headers the beacon routes read, found in one pass."""

    __slots__ = ("host", "cookie", "referer", "user_agent", "forwarded_for", "origin", "content_type",
                 "content_length", "gpc", "dnt", "signals")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.host = self.cookie = self.referer = self.user_agent = self.origin = self.content_type = b""
        self.forwarded_for: bytes | None = None
        self.content_length = -1
        self.gpc = self.dnt = False
        for key, value in headers:
            if key == b"cookie":
                self.cookie = value if not self.cookie else self.cookie + b"; " + value
            elif key == b"host":
                self.host = value
            elif key == b"user-agent":
                self.user_agent = value
            elif key == b"referer":
                self.referer = value
            elif key == b"x-forwarded-for":
                self.forwarded_for = value if self.forwarded_for is None else self.forwarded_for + b"," + value
            elif key == b"origin":
                self.origin = value
            elif key == b"content-type":
                self.content_type = value.split(b";", 1)[0].strip().lower()
            elif key == b"content-length":
                self.content_length = int(value) if value.isdigit() else -1
            elif key == b"sec-gpc":
                self.gpc = value.strip() == b"1"
            elif key == b"dnt":
                self.dnt = value.strip() == b"1"
        # Anything a consent decision could turn on: GPC, DNT, or an opt-out cookie.
        self.signals = self.gpc or self.dnt or b"_optout=" in self.cookie
