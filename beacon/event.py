"""One event: server-side fields plus validated client fields, encoded once as a JSONEachRow line.

The keys of the encoded line are columns of the events table (store.COLUMNS): all the raw
ones, and the derived (enrichment) ones that are not empty; the flusher never decodes it again.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import re
from typing import TypedDict
from urllib.parse import unquote_to_bytes

import orjson

from beacon.config import Network, Settings
from beacon.errors import Invalid as Invalid  # re-exported: validation raises it

EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
COMMERCE_PARAMS = frozenset({"order_id", "revenue", "currency", "coupon"})  # and i.<n>.<field>: beacon/commerce.py
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_last_ms = 0
_seq = 0
# Event ids need uniqueness, not secrecy: a PRNG seeded from the OS, no syscall per id.
_random = random.Random(os.urandom(32))


def uuid7(now: float) -> str:
    """Time-ordered unique id (RFC 9562 UUIDv7): 48-bit ms timestamp, a 12-bit counter
    that keeps ids from one process increasing within a millisecond, 62 random bits."""
    global _last_ms, _seq
    ms = int(now * 1000)
    if ms <= _last_ms:
        _seq += 1
        if _seq > 0xFFF:  # 4096 ids in one ms: borrow the next millisecond
            _last_ms += 1
            _seq = 0
        ms = _last_ms
    else:
        _last_ms, _seq = ms, 0
    v = (ms << 80) | (0x7 << 76) | (_seq << 64) | (0b10 << 62) | _random.getrandbits(62)
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Anonymiser:
    """Client address -> truncated address, trusting X-Forwarded-For only from proxies."""

    def __init__(self, ipv4_prefix: int, ipv6_prefix: int, trusted: tuple[Network, ...]) -> None:
        self.v4 = ipv4_prefix
        self.v6 = ipv6_prefix
        self.trusted = trusted

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one instance per app, keys are addresses
    def _is_trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def trusts(self, peer: str) -> bool:
        """Whether `peer` is one of the trusted proxies, whose forwarded headers are believed."""
        return bool(self.trusted) and self._is_trusted(peer)

    def client(self, peer: str, forwarded_for: bytes | None) -> str:
        if forwarded_for is None or not self.trusted or not self._is_trusted(peer):
            return peer
        # Walk from the right: the first hop that is not one of our proxies is the client.
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if hop and not self._is_trusted(hop):
                return hop
        return hops[0] if hops and hops[0] else peer

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - addresses repeat; a miss costs ~2 us
    def anonymise(self, addr: str) -> str:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return ""
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = self.v4 if ip.version == 4 else self.v6
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class Limits:
    def __init__(self, s: Settings) -> None:
        self.url = s.max_url_length
        self.event = s.max_event_length
        self.props = s.max_props
        self.prop_key = s.max_prop_key_length
        self.prop_value = s.max_prop_value_length
        self.user_agent = s.max_user_agent_length


def clean_text(value: str, limit: int) -> str:
    """Control characters removed, then cut to `limit` characters."""
    # isprintable() is False for every control character (and some more): a C scan that
    # spares the regex for the usual text.
    if not value.isprintable() and _CONTROL.search(value):
        value = _CONTROL.sub("", value)
    return value[:limit]


def check_event_name(name: object, limits: Limits) -> str:
    if name == "pageview":  # the default and most common name: valid under any limit >= 8
        return "pageview" if limits.event >= 8 else _check_name(name, limits)
    return _check_name(name, limits)


def _check_name(name: object, limits: Limits) -> str:
    if not isinstance(name, str) or not name:
        raise Invalid("event name must be a non-empty string")
    if len(name) > limits.event or not EVENT_NAME.fullmatch(name):
        raise Invalid(f"event name {name[:80]!r} must be 1-{limits.event} of A-Z a-z 0-9 _ . : -")
    return name


def check_props(props: object, limits: Limits) -> dict[str, str]:
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise Invalid("p (properties) must be an object of strings")
    if len(props) > limits.props:
        raise Invalid(f"too many properties: {len(props)} > {limits.props}")
    out: dict[str, str] = {}
    for key, value in props.items():
        if not key or len(key) > limits.prop_key or not EVENT_NAME.fullmatch(key):
            raise Invalid(f"property name {key[:80]!r} must be 1-{limits.prop_key} of A-Z a-z 0-9 _ . : -")
        if isinstance(value, bool) or value is None:
            value = "" if value is None else ("true" if value else "false")
        elif isinstance(value, (int, float)):
            value = repr(value)
        elif not isinstance(value, str):
            raise Invalid(f"property {key!r} must be a string, number or boolean")
        out[key] = clean_text(value, limits.prop_value)
    return out


def check_url(value: object, limits: Limits, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string")
    return clean_text(value, limits.url)


@functools.lru_cache(maxsize=4096)
def _unquoted(raw: bytes) -> str:
    """A percent-encoded parameter, decoded. Cached: page URLs and referrers repeat across
    visitors (a UnicodeDecodeError is raised again on every call: not cached)."""
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")


def _unquote(raw: bytes) -> str:
    if b"%" in raw or b"+" in raw:
        return _unquoted(raw) if len(raw) <= 1024 else unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    return raw.decode("utf-8")


class PixelFields(TypedDict, total=False):
    """The client fields of a pixel query, named as in a POST /e event; checked by check_*."""

    e: str
    u: str
    r: str
    p: dict[str, str]
    c: dict[str, str]  # commerce parameters, for commerce.from_pixel


def parse_pixel_query(qs: bytes, limits: Limits) -> tuple[PixelFields, int]:
    """Pixel query -> client fields, and how many parameters were dropped as invalid.

    Parameters that are not valid percent-encoded UTF-8 are dropped one by one;
    unknown parameters are ignored.
    """
    fields: PixelFields = {}
    props: dict[str, str] = {}
    dropped = 0
    for pair in qs.split(b"&"):
        if not pair:
            continue
        key_b, _, value_b = pair.partition(b"=")
        try:
            if b"%" in pair or b"+" in pair:
                key = _unquote(key_b)
                value = _unquote(value_b)
            else:  # nothing encoded: plain UTF-8
                key = key_b.decode("utf-8")
                value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            dropped += 1
            continue
        if key == "e":
            fields["e"] = value
        elif key == "u":
            fields["u"] = value
        elif key == "r":
            fields["r"] = value
        elif key.startswith("p.") and len(props) < limits.props:
            props[key[2:]] = value
        elif key in COMMERCE_PARAMS or key.startswith("i."):
            fields.setdefault("c", {})[key] = value
    if props:
        fields["p"] = props
    return fields, dropped


def query_value(qs: bytes, key: str) -> str | None:
    """The first value of `key` in a query string; None when absent or not valid UTF-8."""
    want = key.encode()
    for pair in qs.split(b"&"):
        k, _, v = pair.partition(b"=")
        if unquote_to_bytes(k.replace(b"+", b" ")) == want:
            try:
                return unquote_to_bytes(v.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def encode(
    *,
    event_id: str,
    received_at: float,
    scope: str,
    visitor_id: str,
    mode: str,
    event: str,
    url: str,
    referrer: str,
    props: dict[str, str],
    ip: str,
    user_agent: str,
    transport: str,
    is_bot: int = 0,
    derived: bytes = b"",
) -> bytes:
    """One JSONEachRow line. `derived` is the enrichment columns already encoded as JSON members
    (`,"browser":"Chrome",...`, see beacon.enrich), spliced in as they are; columns left out of
    the line are stored as ''."""
    line = orjson.dumps(
        {
            "event_id": event_id,
            "received_at": f"{received_at:.3f}",
            "scope": scope,
            "visitor_id": visitor_id,
            "mode": mode,
            "event": event,
            "url": url,
            "referrer": referrer,
            "props": props,
            "ip": ip,
            "user_agent": user_agent,
            "is_bot": is_bot,
            "transport": transport,
        }
    )
    return line[:-1] + derived + b"}" if derived else line
