"""uvicorn's request/response cycle, with response heads checked once and sent with their body.

uvicorn's `RequestResponseCycle.send` runs two regular expressions, a lower-casing and
three comparisons on every header of every response, and writes the head and the body
with a system call each. The pixel answers the same four headers millions of times:

- `prepared(headers)` checks a constant header list once, at import, exactly as uvicorn
  would (same expressions, same lower-casing, its content-length read), and returns it
  as a tuple. A response whose `headers` is that very tuple has its head from the bytes
  made then; a response that adds per-request headers to prepared ones (the pixel's
  Set-Cookie) has the prepared pairs from those bytes and only the others checked, each
  as uvicorn checks it. Every other head (no content-length, a `connection` or
  `transfer-encoding` header, default headers such as Date or Server) goes through
  uvicorn's own `send`, unchanged.
- A head made this way is written together with the body message that follows it: one
  write, one TCP segment, the same bytes. If the application fails in between, the head
  is written before the connection is closed, as uvicorn would have.

The bytes on the wire are uvicorn's, byte for byte (tests/test_cycle.py compares them).
"""

from __future__ import annotations

from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

Header = tuple[bytes, bytes]
# A prepared pair -> (its line as uvicorn writes it, its content-length or -1).
_LINES: dict[Header, tuple[bytes, int]] = {}
# id(prepared tuple) -> (the tuple, its lines, its content-length); the tuple is kept alive here.
_BLOCKS: dict[int, tuple[tuple[Header, ...], bytes, int]] = {}
_BLOCKS_BY_FIRST: dict[int, tuple[tuple[Header, ...], bytes, int]] = {}  # by id() of its first pair
# Header names already checked (not the three uvicorn acts on) -> lower-cased; a few hundred at most.
_NAMES: dict[bytes, bytes] = {}
# What uvicorn's HEADER_VALUE_RE refuses: control characters but the tab.
_CONTROLS = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
# Every byte to itself but those, which change: a value without them translates to itself.
# (A translation that deletes nothing takes CPython's short loop, without building a table.)
_FLAGGED = bytes(c ^ 0x80 if c in _CONTROLS else c for c in range(256))


def prepared(headers: list[Header] | tuple[Header, ...]) -> tuple[Header, ...]:
    """`headers`, checked now as uvicorn checks a response's headers, as a tuple to send as is."""
    block = tuple((bytes(name), bytes(value)) for name, value in headers)
    length = -1
    lines = []
    for name, value in block:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        low = name.lower()
        if low in (b"transfer-encoding", b"connection"):
            raise ValueError(f"a prepared head cannot hold {low.decode()}")
        n = int(value.decode()) if low == b"content-length" else -1
        if n >= 0 and length < 0:
            length = n  # uvicorn reads the first content-length
        line = low + b": " + value + b"\r\n"
        _LINES[(name, value)] = (line, n)
        lines.append(line)
    if length < 0:
        raise ValueError("a prepared head needs a content-length")
    _BLOCKS[id(block)] = _BLOCKS_BY_FIRST[id(block[0])] = (block, b"".join(lines), length)
    return block


def _checked_line(pair: object) -> tuple[bytes, int] | None:
    """A per-request header's line and its content-length (or -1), checked as uvicorn checks
    them; None for anything uvicorn should see itself (an error it raises, a content-length
    it would not take as a length, transfer-encoding, connection)."""
    if type(pair) is not tuple or len(pair) != 2:
        return None
    name, value = pair
    if type(name) is not bytes or type(value) is not bytes:
        return None
    low = _NAMES.get(name)
    if low is None:
        if HEADER_RE.search(name):
            return None
        low = name.lower()
        if low in (b"transfer-encoding", b"connection"):
            return None
        if len(_NAMES) < 256:
            _NAMES[name] = low
    if value.translate(_FLAGGED) != value:  # HEADER_VALUE_RE, as a C scan
        return None
    n = -1
    if low == b"content-length":
        try:
            n = int(value.decode())  # as uvicorn reads it
        except ValueError:
            return None
        if n < 0:
            return None
    return low + b": " + value + b"\r\n", n


class Cycle(RequestResponseCycle):
    """uvicorn's cycle; `send` takes a shorter path for heads built from prepared headers."""

    _head = b""  # a head made here, not yet written: it goes out with the body

    def _prepared_head(self, message: ASGISendEvent) -> bytes | None:
        """The head uvicorn would write for this start message, or None to let uvicorn do it."""
        headers = message.get("headers", ())
        status = message["status"]  # type: ignore[typeddict-item]
        if self.default_headers or status not in STATUS_LINE:
            return None
        block = _BLOCKS.get(id(headers))
        if block is not None and block[0] is headers:
            lines, length = block[1], block[2]
        elif type(headers) is list or type(headers) is tuple:
            # A prepared block and what the request adds after it (the pixel's Set-Cookie)?
            block = _BLOCKS_BY_FIRST.get(id(headers[0])) if headers else None
            if block is not None and headers[0] is block[0][0] and tuple(headers[: len(block[0])]) == block[0]:
                lines, length = block[1], block[2]
                if len(headers) == len(block[0]) + 1:  # one header of the request's own: the pixel's Set-Cookie
                    hit = _checked_line(headers[-1])
                    if hit is None:
                        return None
                    head = STATUS_LINE[status] + lines + hit[0]  # a block has its content-length: it counts
                    return self._started(status, length, head)
                rest = headers[len(block[0]) :]
                known: dict[Header, tuple[bytes, int]] = {}  # what follows a block is the request's own
            else:
                lines, length = b"", -1
                rest = headers
                known = _LINES
            parts = [lines]
            for pair in rest:
                try:
                    hit = known.get(pair) if type(pair) is tuple else None
                except TypeError:  # an unhashable name or value (a bytearray): uvicorn's path
                    return None
                if hit is None:
                    hit = _checked_line(pair)
                    if hit is None:
                        return None
                parts.append(hit[0])
                if hit[1] >= 0 and length < 0:
                    length = hit[1]  # uvicorn reads the first content-length
            if length < 0:
                return None
            lines = b"".join(parts)
        else:
            return None
        return self._started(status, length, STATUS_LINE[status] + lines)

    def _started(self, status: int, length: int, head: bytes) -> bytes:
        """The response has started with `head` (status line and headers, not yet ended)."""
        self.response_started = True
        self.waiting_for_100_continue = False
        if self.access_log:  # as uvicorn logs it
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status,
            )
        self.expected_content_length = length
        self.chunked_encoding = False
        if self.keep_alive:
            return head + b"\r\n"
        return head + b"connection: close\r\n\r\n"

    def _flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self.transport.write(head)

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # as uvicorn
        if self.disconnected:
            return
        head = self._head
        if not self.response_started:
            if message["type"] == "http.response.start":
                made = self._prepared_head(message)
                if made is not None:
                    self._head = made
                    return
        elif head and not self.response_complete and message["type"] == "http.response.body":
            self._head = b""
            body = message.get("body", b"")
            if self.scope["method"] == "HEAD":
                self.expected_content_length = 0
                self.transport.write(head)
            elif len(body) > self.expected_content_length:
                self.transport.write(head)
                raise RuntimeError("Response content longer than Content-Length")
            else:
                self.expected_content_length -= len(body)
                if type(body) is bytes:
                    self.transport.write(head + body)
                else:  # a bytearray or memoryview, written as uvicorn writes it
                    self.transport.write(head)
                    self.transport.write(body)
            if not message.get("more_body", False):
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
            return
        self._flush()
        await super().send(message)

    async def run_asgi(self, app: ASGI3Application) -> None:
        """uvicorn's, with a head not yet written flushed before the connection is closed."""
        try:
            result = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self._flush()
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._flush()
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self._flush()
                self.transport.close()
        finally:
            self.on_response = lambda: None
