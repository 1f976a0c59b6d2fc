"""An in-memory sink for fast unit tests of the logic above the buffer (routes, scope, consent,
identity, config). It is never used by the service, and never stands in for a test of
anything that touches Redis or ClickHouse: those keep their real-engine tests.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.testclient import TestClient

from beacon import clock as clocks
from beacon import config
from beacon.app import create_app
from beacon.errors import NotDurable


class MemoryBuffer:
    """Keeps appended lines in a list; `failing = True` makes it refuse like a dead Redis and spool."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.failing = False

    async def append(self, lines: list[bytes]) -> None:
        if self.failing:
            raise NotDurable("memory buffer set to fail")
        self.lines.extend(lines)

    async def close(self) -> None:
        self.failing = True

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


def unit_client(clock: clocks.Clock = clocks.system, **overrides: Any) -> tuple[TestClient, MemoryBuffer]:
    """The whole ASGI app over the in-memory sink; no lifespan, so no Redis or ClickHouse is touched."""
    base: dict[str, Any] = {
        "redis_url": "redis://127.0.0.1:9/0",
        "secret_keys": ("unit-key-0123456789abcdef",),
        "mall_api_key": "unit-mall-key",
        "clickhouse_url": "http://127.0.0.1:9/",
    }
    base.update(overrides)
    app = create_app(config.load(base, environ={}), clock=clock)
    buffer = MemoryBuffer()
    app.core.buffer = buffer
    return TestClient(app, base_url="https://shop.test", client=("203.0.113.9", 40000)), buffer
