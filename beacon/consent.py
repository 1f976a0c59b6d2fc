"""The one place that decides, per scope and request, what may be set and recorded.

Signals: `Sec-GPC: 1`, the scope's opt-out cookie (`<cookie_name>_optout=1`, set by
`/optout`), and `DNT: 1` when BEACON_RESPECT_DNT is on. Under any of them:

- a partner scope sets no cookie and records no identifiable event: `drop` (default)
  or `anonymous` (counted with no visitor id);
- the mall scope either goes `cookieless` (default: no Set-Cookie; the visitor id is a
  hash of a secret salt of the day with the anonymised IP, user agent and scope, so
  ids cannot be linked across days once the salt is discarded) or `drop`.

Each event records the mode that produced it in its `mode` column.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets

from beacon import clock as clocks
from beacon.config import Settings
from beacon.enums import ConsentMode
from beacon.identity import cookie_value
from beacon.keys import salt_key
from beacon.rcluster import AsyncRedis
from beacon.request import Request
from beacon.scope import Scope

log = logging.getLogger("beacon.consent")

COOKIE = ConsentMode.COOKIE
COOKIELESS = ConsentMode.COOKIELESS
ANONYMOUS = ConsentMode.ANONYMOUS
DROP = ConsentMode.DROP


def optout_cookie_name(scope: Scope) -> bytes:
    return f"{scope.cookie_name}_optout".encode()


class Consent:
    def __init__(self, settings: Settings, redis: AsyncRedis | None = None, clock: clocks.Clock = clocks.system) -> None:
        self.clock = clock
        self.respect_dnt = settings.respect_dnt
        self.mall_mode = settings.mall_consent_mode
        self.partner_mode = settings.partner_consent_mode
        self.redis = redis
        self._salt_day = ""
        self._salt = b""

    def signalled(self, scope: Scope, req: Request) -> bool:
        if req.gpc or (self.respect_dnt and req.dnt):
            return True
        return bool(req.cookie) and cookie_value(req.cookie, optout_cookie_name(scope)) == "1"

    def decide(self, scope: Scope, req: Request) -> ConsentMode:
        if not self.signalled(scope, req):
            return COOKIE
        return self.partner_mode if scope.is_partner else self.mall_mode

    async def salt(self) -> bytes:
        """Today's secret salt, shared by every worker through Redis; it expires with the day."""
        day = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).date()
        if day.isoformat() != self._salt_day:
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            key = salt_key(day.isoformat())
            try:
                if self.redis is None:
                    raise ConnectionError("Redis is not connected yet")
                await self.redis.set(key, secrets.token_bytes(32), nx=True, exat=int(end.timestamp()))
                shared = await self.redis.get(key)
                if not isinstance(shared, bytes):  # expired between the two calls
                    raise ConnectionError(f"{key} vanished")
                self._salt = shared
            except Exception as exc:  # noqa: BLE001 - a private salt still unlinks days
                log.warning("daily salt not shared (%s); using a per-process salt", exc)
                self._salt = secrets.token_bytes(32)
            self._salt_day = day.isoformat()
        return self._salt

    async def cookieless_id(self, scope: Scope, ip: str, user_agent: str) -> str:
        digest = hashlib.sha256(await self.salt() + f"\0{scope.id}\0{ip}\0{user_agent}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
