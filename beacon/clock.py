"""The one source of "now" for identity, consent's daily salt, event ids and received_at.

Production passes `time.time`; tests pass a `ManualClock` and move it, instead of
touching private fields (as itsdangerous' tests override `get_timestamp`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
system: Clock = time.time


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
