"""uvicorn's httptools protocol with the limits a public HTTP/1.1 server needs.

uvicorn has no header-read timeout and no header size limit, takes any number of
`Host` headers, drops the authority of an absolute-form request target, and answers
`400` to any request target over 64 KiB (httptools' URL parser counts in 16 bits).
This subclass adds, per connection:

- a header-read timeout: the request line and headers must arrive within
  `header_timeout` seconds of the connection opening (or of the previous response):
  `408` and close otherwise (nginx: `client_header_timeout`);
- a body-read timeout, the same number of seconds between two reads of a request's
  body (nginx: `client_body_timeout`): `408` and close, so a body that stops coming
  (a slow POST) does not hold the connection and the handler forever;
- a size limit on the header fields (`max_header_bytes`, names + values): `431`
  and close; the bytes are counted while they arrive, so an endless header never
  piles up in memory;
- RFC 9112 section 3.2: two `Host` headers, or none on HTTP/1.1, answer `400`; an
  absolute-form target (`GET http://host/path`) is served for its own authority,
  which replaces the `Host` header (section 3.2.2);
- a request target kept up to `TARGET_KEEP` bytes: the rest is read and dropped,
  and the request is marked `beacon.truncated` in its ASGI scope, so the pixel can
  still answer its GIF (and count the drop) and every other route answers `414`.

Everything else is uvicorn's own code path.
"""

from __future__ import annotations

import asyncio
import re

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from beacon.config import Settings
from beacon.types import ASGIScope, Receive, Send

# httptools.parse_url stores offsets in 16 bits; stay well below.
TARGET_KEEP = 32 * 1024
TRUNCATED = "beacon.truncated"
# RFC 3986 host (reg-name or IP literal) and optional port: no `/`, `@`, spaces or `\`.
HOST_VALUE = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]{0,5})?")
LINGER = 2.0  # seconds a refused connection's input is still read (and dropped) before closing


async def _refuse_app(status: int, reason: bytes, scope: ASGIScope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(reason)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reason})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Reads `beacon_header_timeout` and `beacon_max_header_bytes` from the uvicorn Config."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout: float = getattr(config, "beacon_header_timeout", 15.0)
        self.max_header_bytes: int = getattr(config, "beacon_max_header_bytes", 32768)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # bytes received while reading the current request's head
        self._target_bytes = 0  # of which were its request target
        self._discarding = False  # answered and closing: input is dropped
        self._body_timer: asyncio.TimerHandle | None = None
        self.url = b""

    # -- the header-read timeout ---------------------------------------------

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a response is in progress: a pipelined head gets its time after it
            return
        self._close_with(408, b"request header not received in time")

    def _close_with(self, status: int, reason: bytes) -> None:
        """Answer, then close. Like nginx's lingering close, what the client is still sending
        is read and dropped for a moment first: closing with unread bytes would reset the
        connection and the client would likely never see the answer."""
        if self.transport.is_closing() or self._discarding:
            return
        self._discarding = True
        self._disarm()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: ",
                    str(len(reason)).encode(),
                    b"\r\n",
                    b"connection: close\r\n\r\n",
                    reason,
                ]
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head must come in time too

    # -- the header size limit -----------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        reading_head = self._header_timer is not None
        if reading_head:
            self._header_bytes += len(data)
        super().data_received(data)
        if reading_head and self._header_timer is not None and self._header_bytes - self._target_bytes > self.max_header_bytes:
            self._close_with(431, b"request header fields too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()
        self._target_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        room = TARGET_KEEP - len(self.url)
        if room > 0:
            self.url += url[:room]

    # -- the body-read timeout (nginx: client_body_timeout, between two reads) ---

    def _arm_body(self) -> None:
        self._disarm_body()
        self._body_timer = self.loop.call_later(self.header_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            self.transport.close()  # answered without its body (a 401, say), which never came
        elif cycle is None or not cycle.response_started:
            self._close_with(408, b"request body not received in time")

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._body_timer is not None:
            self._arm_body()  # the next part gets its own time

    def on_message_complete(self) -> None:
        self._disarm_body()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_body()
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._header_bytes = 0
        refusal = self._check_head()
        if refusal is None:
            self._arm_body()  # disarmed at once by a request without a body
            super().on_headers_complete()
            return
        status, reason = refusal
        app = self.app
        self.app = lambda scope, receive, send: _refuse_app(status, reason, scope, receive, send)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _check_head(self) -> tuple[int, bytes] | None:
        """A refusal (status, reason) for a head we must not serve; fixes up the target otherwise."""
        size = 0
        hosts = 0
        host = b""
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
                host = value
        if size > self.max_header_bytes:
            return 431, b"request header fields too large"
        if hosts > 1:
            return 400, b"more than one Host header"
        if hosts == 0 and self.parser.get_http_version() == "1.1":
            return 400, b"HTTP/1.1 request without a Host header"
        if not HOST_VALUE.fullmatch(host):
            return 400, b"invalid Host header"
        url = self.url
        if url[:1] != b"/" and url != b"*":
            scheme, sep, rest = url.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                return 400, b"request target must be a path or an absolute http(s) URL"
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
            authority, target = rest[:cut], rest[cut:]
            if not authority or b"@" in authority:
                return 400, b"absolute request target needs a host and no user information"
            if not HOST_VALUE.fullmatch(authority):  # held to what a Host header must be
                return 400, b"invalid authority in the absolute request target"
            # RFC 9112 3.2.2: the target's authority wins over any Host header.
            self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"] + [(b"host", authority)]
            self.url = url = target if target[:1] == b"/" else b"/" + target
        if self._target_bytes > TARGET_KEEP:
            if b"?" not in url:
                return 414, b"request target too long"
            self.scope[TRUNCATED] = True  # type: ignore[literal-required]
        return None


def configure(uvicorn_config: uvicorn.Config, settings: Settings) -> uvicorn.Config:
    """Put Beacon's limits where the protocol reads them (a plain attribute: it survives
    the pickling of the config into `--workers` processes)."""
    uvicorn_config.beacon_header_timeout = settings.header_timeout  # type: ignore[attr-defined]  # Beacon's own
    uvicorn_config.beacon_max_header_bytes = settings.max_header_bytes  # type: ignore[attr-defined]
    return uvicorn_config
