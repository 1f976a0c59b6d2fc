"""The sink seam: where the request path hands encoded events over to be made durable.

`GroupCommit` (the default) and `DirectWrite` (the measured baseline) implement it
against Redis and the spool. Unit tests of the logic above it (routes, scope, consent,
identity, config) may use `tests/memory.py`'s in-memory sink; every behaviour that
touches Redis or ClickHouse keeps its real-engine test.
"""

from __future__ import annotations

from typing import Protocol


class Buffer(Protocol):
    async def append(self, lines: list[bytes]) -> None:
        """Return once `lines` are durable; raise `errors.NotDurable` when they cannot be made so."""

    async def close(self) -> None:
        """Finish what was appended and refuse more."""
