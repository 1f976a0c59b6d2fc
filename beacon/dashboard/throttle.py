"""Failed dashboard sign-ins, limited per client address and per scope, in fixed windows.

Why Redis: every web worker (and every host behind the balancer) shares it, so the limit
is one limit, not one per process; an attacker spreading guesses over workers gains
nothing. A key is `beacon:signin:ip:<digest of the address>:<window>` or
`beacon:signin:scope:<scope>:<window>`, counted with INCR and expiring with its window;
no address is stored in the clear. When Redis does not answer, the counts fall back to
this process (still a limit, per worker), so sign-in neither opens up nor locks everyone
out while Redis is down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable

from beacon.clock import Clock
from beacon.rcluster import AsyncRedis

log = logging.getLogger("beacon.dashboard")
PREFIX = "beacon:signin:"


def client_key(address: str) -> str:
    """A digest of the client's address (an IPv6 client by its /64: one host holds the whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
        if ip.version == 6:
            address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        pass
    return hashlib.sha256(("beacon-signin:" + address).encode()).hexdigest()[:24]


class SigninLimit:
    def __init__(self, redis: Callable[[], AsyncRedis | None], per_address: int, per_scope: int, window: int, clock: Clock) -> None:
        self._redis = redis  # the shared async Redis client, made when the app starts
        self.per_address = per_address
        self.per_scope = per_scope
        self.window = max(1, window)
        self.clock = clock
        self._local: dict[str, int] = {}

    def _keys(self, scope: str, address: str) -> tuple[tuple[str, int], tuple[str, int], float]:
        now = self.clock()
        n = int(now // self.window)
        left = (n + 1) * self.window - now
        return (f"{PREFIX}ip:{client_key(address)}:{n}", self.per_address), (f"{PREFIX}scope:{scope}:{n}", self.per_scope), left

    async def wait(self, scope: str, address: str) -> int:
        """Seconds until sign-in may be tried again (0: it may be tried now)."""
        by_address, by_scope, left = self._keys(scope, address)
        for key, limit in (by_address, by_scope):
            if limit > 0 and await self._count(key) >= limit:
                return max(1, int(left + 0.999))
        return 0

    async def failed(self, scope: str, address: str) -> None:
        by_address, by_scope, _ = self._keys(scope, address)
        for key, _limit in (by_address, by_scope):
            await self._add(key)

    async def _count(self, key: str) -> int:
        client = self._redis()
        if client is not None:
            try:
                value = await client.get(key)
                return int(value or 0)
            except Exception as exc:  # noqa: BLE001 - Redis down: count in this process
                log.warning("sign-in limit: Redis did not answer (%s); counting in this process", type(exc).__name__)
        return self._local.get(key, 0)

    async def _add(self, key: str) -> None:
        client = self._redis()
        if client is not None:
            try:
                await client.incr(key)
                await client.expire(key, self.window + 1)
                return
            except Exception as exc:  # noqa: BLE001 - Redis down: count in this process
                log.warning("sign-in limit: Redis did not answer (%s); counting in this process", type(exc).__name__)
        current = str(int(self.clock() // self.window))
        self._local = {k: v for k, v in self._local.items() if k.endswith(":" + current)}  # older windows are over
        self._local[key] = self._local.get(key, 0) + 1
