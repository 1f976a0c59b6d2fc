"""The dashboard's sign-in session: a signed, expiring cookie that is never a visitor cookie.

It holds the scope it was opened for and a fingerprint of the key that opened it, so a
session opens one scope only and ends when that key is rotated away.
"""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

SALT = "beacon.dashboard.session"


def fingerprint(secret: str) -> str:
    """A short digest of the key (or of the key's stored hash) that opened the session."""
    return hashlib.sha256(("beacon-dashboard:" + secret).encode()).hexdigest()[:24]


class Sessions:
    def __init__(self, secret_keys: tuple[str, ...], max_age: int) -> None:
        # itsdangerous signs with the last key and verifies with all; settings list the newest first.
        self.max_age = max_age
        self._serializer = URLSafeTimedSerializer(list(reversed(secret_keys)), salt=SALT)

    def dumps(self, scope: str, key_fingerprint: str, issued_at: float | None = None) -> str:
        data = {"s": scope, "k": key_fingerprint}
        if issued_at is None:
            return self._serializer.dumps(data)
        return _at(self._serializer, issued_at).dumps(data)

    def loads(self, token: str, scope: str, key_fingerprint: str) -> tuple[bool, str]:
        """(valid, why not): a session is valid for its own scope and key, within max_age."""
        if not token:
            return False, ""
        try:
            data: object = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired:
            return False, "Your session expired; sign in again."
        except BadSignature:
            return False, ""
        if not isinstance(data, dict) or data.get("s") != scope or data.get("k") != key_fingerprint:
            return False, ""
        return True, ""


def _at(serializer: URLSafeTimedSerializer, issued_at: float) -> URLSafeTimedSerializer:
    """The same serializer with a fixed clock (to issue a session as of another time)."""

    class FixedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(issued_at)

    clone = URLSafeTimedSerializer(serializer.secret_keys, salt=serializer.salt, signer=FixedSigner)
    return clone
