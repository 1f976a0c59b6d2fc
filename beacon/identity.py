"""The visitor id of one scope: a signed cookie, verified on every hit, minted when absent.

Cookies are `<id>.<timestamp>.<signature>` from itsdangerous' TimestampSigner with a
salt per scope, so a cookie signed for one scope never verifies in another. A valid,
fresh cookie signed by the primary key costs one HMAC verify the first time this process
sees it; after that, a look-up of the exact signed value in a bounded cache of cookies
already verified, and the age check, which is made on every request, hit or miss.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re

from itsdangerous import BadSignature, Signer, TimestampSigner
from itsdangerous.encoding import base64_decode, base64_encode, int_to_bytes
from itsdangerous.signer import HMACAlgorithm

from beacon import clock as clocks
from beacon.scope import Scope


class _HMAC(HMACAlgorithm):
    """itsdangerous' HMAC, keyed once per key: each signature copies a keyed HMAC object
    (two hash states) instead of padding the key and hashing it again."""

    def __init__(self, digest_method: object = None) -> None:
        super().__init__(digest_method)
        self._keyed: dict[bytes, hmac.HMAC] = {}

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        keyed = self._keyed.get(key)
        if keyed is None:
            keyed = self._keyed[key] = hmac.new(key, digestmod=self.digest_method)
        mac = keyed.copy()
        mac.update(value)
        return mac.digest()


class _Signer(TimestampSigner):
    """TimestampSigner that derives each key once instead of on every call."""

    default_digest_method = staticmethod(hashlib.sha256)
    default_key_derivation = "hmac"

    def __init__(self, *args: object, clock: clocks.Clock = clocks.system, **kwargs: object) -> None:
        super().__init__(*args, algorithm=_HMAC(hashlib.sha256), **kwargs)  # type: ignore[arg-type, misc]
        self._derived: dict[bytes, bytes] = {}
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else (secret_key.encode() if isinstance(secret_key, str) else secret_key)
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = super().derive_key(key)
        return derived


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_RANDOM: list[bytes] = []  # 16-byte pieces of one os.urandom read, each handed out once


def _random16() -> bytes:
    """16 bytes from the OS's CSPRNG, read 4 KiB at a time: one system call per 256 ids.
    `list.pop` hands each piece out once, also between threads; a forked child drops the
    parent's pieces (os.register_at_fork below) so no id is made twice."""
    try:
        return _RANDOM.pop()
    except IndexError:
        raw = os.urandom(4096)
        _RANDOM.extend([raw[i : i + 16] for i in range(0, 4096, 16)])
        return _RANDOM.pop()


os.register_at_fork(after_in_child=_RANDOM.clear)


def new_visitor_id() -> str:
    """128 random bits from the OS as a UUIDv4 string (the version and variant bits overwrite
    six of them), formatted without building a uuid.UUID."""
    h = _random16().hex()
    # version 4 in place of byte 6's high nibble; variant 10 in the top bits of byte 8
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _HmacSha256:
    """HMAC-SHA256 under one key (RFC 2104), with the keyed inner and outer hashes made once.

    What `hmac.new(key, msg, "sha256").digest()` gives (a test checks both), as the standard
    library's own fallback computes it: two SHA-256 states copied per message, without the
    `hmac.HMAC` object's Python layers (0.63 against 1.06 us per signature)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # SHA-256's block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_URLSAFE = bytes.maketrans(b"+/", b"-_")  # itsdangerous' base64_encode, without its layers
VERIFIED_MAX = 16384  # cookies remembered as verified (~250 bytes each); emptied when full
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _valid_id(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


class Identity:
    """Verify and mint the cookie of one scope."""

    def __init__(
        self, scope: Scope, secret_keys: tuple[str, ...], optout_max_age: int = 5 * 365 * 86400, clock: clocks.Clock = clocks.system
    ) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed to sign cookies")
        salt = f"beacon.visitor.{scope.id}"
        self.scope = scope
        self.cookie_name_b = scope.cookie_name.encode()
        self._clock = clock
        self._primary = _Signer(secret_keys[0], salt=salt, clock=clock)
        # itsdangerous signs with the last key and verifies with all of them.
        self._rotated = _Signer(list(reversed(secret_keys)), salt=salt, clock=clock) if len(secret_keys) > 1 else None
        self._mac = _HmacSha256(self._primary.derive_key())
        self._ts_at = -1
        self._ts_dot = b""
        self._max_age = scope.cookie_max_age
        # Exact signed value -> (id, signing time) of cookies whose HMAC (primary key) and id
        # checked out. The same bytes verify the same way every time, so a hit skips only the
        # HMAC and the base64 decode; a value not in it is verified in full.
        self._verified: dict[str, tuple[str, int]] = {}
        self._refresh_age = scope.cookie_refresh_age
        attrs = [f"Max-Age={scope.cookie_max_age}", f"Path={scope.cookie_path}"]
        if scope.cookie_domain:
            attrs.append(f"Domain={scope.cookie_domain}")
        if scope.cookie_secure or scope.cookie_samesite == "None":
            attrs.append("Secure")
        attrs.append("HttpOnly")
        attrs.append(f"SameSite={scope.cookie_samesite}")
        if scope.cookie_partitioned:
            attrs.append("Partitioned")
        self._prefix = f"{scope.cookie_name}=".encode()
        self._suffix = ("; " + "; ".join(attrs)).encode()
        expire = "; ".join(a for a in attrs if not a.startswith("Max-Age"))
        self.clear_cookie = self._prefix + f"; Max-Age=0; {expire}".encode()
        optout = f"{scope.cookie_name}_optout"
        self.optout_cookie = f"{optout}=1; Max-Age={optout_max_age}; {expire}".encode()
        self.optin_cookie = f"{optout}=; Max-Age=0; {expire}".encode()

    def visitor(self, cookie_value: str | None) -> tuple[str, bytes | None]:
        """(visitor id, Set-Cookie value or None when the cookie needs no re-issue)."""
        if cookie_value:
            hit = self._verified.get(cookie_value)
            if hit is not None:
                vid, ts = hit
                age = self._clock() - ts
                if -60 < age <= self._max_age:
                    return vid, (None if age < self._refresh_age else self.set_cookie(vid))
                vid = new_visitor_id()  # expired (or from the future): as on a miss
                return vid, self.set_cookie(vid)
            try:
                # itsdangerous checks the HMAC over "<id>.<ts>"; the age is read here without
                # the datetime objects TimestampSigner.unsign builds (a third of its cost).
                vid, _, ts_b64 = Signer.unsign(self._primary, cookie_value).decode("ascii").rpartition(".")
                ts = int.from_bytes(base64_decode(ts_b64), "big")
                if _valid_id(vid):
                    if len(self._verified) >= VERIFIED_MAX:
                        self._verified.clear()
                    self._verified[cookie_value] = (vid, ts)
                    age = self._clock() - ts
                    if -60 < age <= self._max_age:
                        return vid, (None if age < self._refresh_age else self.set_cookie(vid))
            except (BadSignature, UnicodeDecodeError, ValueError):
                if self._rotated is not None:
                    try:
                        raw = self._rotated.unsign(cookie_value, max_age=self._max_age)
                        vid = raw.decode("ascii")
                        if _valid_id(vid):
                            return vid, self.set_cookie(vid)
                    except (BadSignature, UnicodeDecodeError):
                        pass
        vid = new_visitor_id()
        return vid, self.set_cookie(vid)

    def verified(self, cookie_value: str | None) -> str | None:
        """The id of a valid cookie, or None; never mints one."""
        if not cookie_value:
            return None
        for signer in (self._primary, self._rotated):
            if signer is None:
                continue
            try:
                vid = signer.unsign(cookie_value, max_age=self._max_age).decode("ascii")
            except (BadSignature, UnicodeDecodeError):
                continue
            return vid if _valid_id(vid) else None
        return None

    def sign(self, vid: str) -> str:
        return self._signed(vid).decode("ascii")

    def set_cookie(self, vid: str) -> bytes:
        value = self._value(vid)
        return b"".join((self._prefix, value, b".", self._sig(value), self._suffix))

    def _signed(self, vid: str) -> bytes:
        """What `self._primary.sign(vid)` returns (itsdangerous' `<id>.<ts>.<sig>`, byte for
        byte), without its generic layers: the keyed HMAC is copied, and the encoded
        timestamp is reused within its second."""
        value = self._value(vid)
        return value + b"." + self._sig(value)

    def _value(self, vid: str) -> bytes:
        """`<id>.<ts>`: what is signed, the timestamp encoded once per second."""
        now = int(self._clock())
        if now != self._ts_at:
            self._ts_dot = b"." + base64_encode(int_to_bytes(now))
            self._ts_at = now
        return vid.encode("ascii") + self._ts_dot

    def _sig(self, value: bytes) -> bytes:
        """itsdangerous' signature of `value`: HMAC-SHA256, URL-safe base64 without padding."""
        return binascii.b2a_base64(self._mac.digest(value), newline=False).translate(_URLSAFE).rstrip(b"=")


def cookie_value(header: bytes, name: bytes) -> str | None:
    """The value of cookie `name` in a Cookie header; no other cookie is decoded."""
    start = 0
    n = len(name)
    while True:
        i = header.find(name, start)
        if i < 0:
            return None
        j = i + n
        if (i == 0 or header[i - 1] in b"; ") and header[j : j + 1] == b"=":
            end = header.find(b";", j)
            value = header[j + 1 :] if end < 0 else header[j + 1 : end]
            try:
                return value.strip().strip(b'"').decode("ascii")
            except UnicodeDecodeError:
                return None
        start = j
