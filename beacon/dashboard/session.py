"""The dashboard's sign-in session: a signed, expiring cookie that is never a visitor cookie.

It holds the scope it was opened for, a fingerprint of the key that opened it and a random
session id, so a session opens one scope only, ends when that key is rotated away, and ends
when it is signed out: sign-out records the id in Redis (`Revocations`) until the cookie
would have expired anyway, and every check of a session looks there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from beacon.keys import revoked_session_key
from beacon.rcluster import AsyncRedis

log = logging.getLogger("beacon.dashboard")
SALT = "beacon.dashboard.session"


def fingerprint(secret: str) -> str:
    """A short digest of the key (or of the key's stored hash) that opened the session."""
    return hashlib.sha256(("beacon-dashboard:" + secret).encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class Session:
    id: str
    expires_at: float  # epoch seconds: its signature is refused from then on


class Sessions:
    def __init__(self, secret_keys: tuple[str, ...], max_age: int) -> None:
        # itsdangerous signs with the last key and verifies with all; settings list the newest first.
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(list(reversed(secret_keys)), salt=SALT)

    def dumps(self, scope: str, key_fingerprint: str, issued_at: float | None = None) -> str:
        # "e": the end the session was opened with. A sign-out is remembered until then, so a longer
        # BEACON_DASHBOARD_SESSION_AGE set later must not extend it (nor revive a signed-out cookie)
        end = math.floor(time.time() if issued_at is None else issued_at) + self.max_age
        data = {"s": scope, "k": key_fingerprint, "i": secrets.token_urlsafe(16), "e": end}
        if issued_at is None:
            return self._serializer.dumps(data)
        return _at(self._serializer, issued_at).dumps(data)

    def open(self, token: str, scope: str, key_fingerprint: str) -> tuple[Session | None, str]:
        """(the session, or None and why not): valid for its own scope and key, within max_age.
        Whether it was signed out is the caller's question (`Revocations`)."""
        if not token:
            return None, ""
        try:
            data, issued = self._serializer.loads(token, max_age=self.max_age, return_timestamp=True)
        except SignatureExpired:
            return None, "Your session expired; sign in again."
        except BadSignature:
            return None, ""
        if not isinstance(data, dict) or data.get("s") != scope or data.get("k") != key_fingerprint:
            return None, ""
        sid, end = data.get("i"), data.get("e")
        if not isinstance(sid, str) or not sid or not isinstance(end, int):  # a session from before sign-out could end it
            return None, ""
        expires_at = min(issued.timestamp() + self.max_age, end)
        if time.time() > expires_at:
            return None, "Your session expired; sign in again."
        return Session(sid, expires_at), ""

    def loads(self, token: str, scope: str, key_fingerprint: str) -> tuple[bool, str]:
        """(valid, why not), revocation aside."""
        session, why = self.open(token, scope, key_fingerprint)
        return session is not None, why


class SessionsUnchecked(Exception):
    """Redis did not answer whether a session was signed out: the session is not accepted."""


class Revocations:
    """Signed-out sessions, in Redis so that every worker and host sees a sign-out at once.

    When Redis does not answer a check, the session is refused (`SessionsUnchecked`, a 503):
    a sign-out must hold, and the dashboards cannot work without their stores anyway. A
    sign-out that cannot reach Redis is remembered in this process and logged.
    """

    def __init__(self, redis: Callable[[], AsyncRedis | None]) -> None:
        self._redis = redis  # the shared async Redis client, made when the app starts
        self._local: dict[str, float] = {}  # session id -> its expiry (sign-outs Redis missed)

    async def revoke(self, session: Session) -> None:
        now = time.time()
        self._local = {sid: until for sid, until in self._local.items() if until > now}
        self._local[session.id] = session.expires_at
        client = self._redis()
        try:
            if client is None:
                raise ConnectionError("Redis is not connected")
            await client.set(revoked_session_key(session.id), b"1", ex=max(1, math.ceil(session.expires_at - now) + 1))
        except Exception as exc:  # noqa: BLE001 - Redis down: this process still refuses it; say so
            log.warning("dashboard sign-out: Redis did not answer (%s); the session is refused by this process only", type(exc).__name__)

    async def revoked(self, session: Session) -> bool:
        if session.id in self._local:
            return True
        client = self._redis()
        try:
            if client is None:
                raise ConnectionError("Redis is not connected")
            return bool(await client.exists(revoked_session_key(session.id)))
        except Exception as exc:  # noqa: BLE001 - any Redis failure refuses the session (503), never a 500
            log.warning("dashboard session check: Redis did not answer (%s); refusing sessions", type(exc).__name__)
            raise SessionsUnchecked from None


def _at(serializer: URLSafeTimedSerializer, issued_at: float) -> URLSafeTimedSerializer:
    """The same serializer with a fixed clock (to issue a session as of another time)."""

    class FixedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(issued_at)

    clone = URLSafeTimedSerializer(serializer.secret_keys, salt=serializer.salt, signer=FixedSigner)
    return clone
