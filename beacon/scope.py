"""Which cookie world a request belongs to: the mall's, or one partner's.

A Scope is resolved once per request from the Host header (or the `/partners/<id>`
path prefix) and every later step takes it from there; no query parameter or body
field can change it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

from beacon.config import Settings

MALL = "mall"
PARTNER_PREFIX = "/partners/"


@dataclasses.dataclass(frozen=True)
class Scope:
    id: str
    cookie_name: str
    cookie_domain: str = ""
    cookie_path: str = "/"
    cookie_max_age: int = 395 * 86400
    cookie_refresh_age: int = 7 * 86400
    cookie_secure: bool = True
    cookie_samesite: str = "Lax"
    cookie_partitioned: bool = False
    origins: frozenset[str] = frozenset()
    loopback_origins: bool = False  # and any page on this machine (`beacon up` without BEACON_SITE_ORIGINS)
    is_partner: bool = False
    path_prefix: str = ""  # "/partners/<id>" when served under the fallback prefix


def mall_scope(s: Settings) -> Scope:
    return Scope(
        id=MALL,
        cookie_name=s.cookie_name,
        cookie_domain=s.cookie_domain,
        cookie_path=s.cookie_path,
        cookie_max_age=s.cookie_max_age,
        cookie_refresh_age=s.cookie_refresh_age,
        cookie_secure=s.cookie_secure,
        cookie_samesite="Lax",
        origins=frozenset(s.site_origins),
        loopback_origins=s.loopback_origins,
    )


def is_loopback_origin(origin: str) -> bool:
    """`http(s)://localhost`, `127.0.0.1` (any 127/8 address) or `[::1]`, on any port, and nothing else."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
        host = parts.hostname or ""
    except ValueError:  # `http://[::1`, `http://a:x`: no origin at all
        return False
    if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Resolver:
    """Host (and fallback path prefix) -> Scope, precomputed into dicts."""

    def __init__(
        self, mall: Scope, mall_hosts: tuple[str, ...], partners: tuple[Scope, ...] = (), partner_hosts: dict[str, str] | None = None
    ) -> None:
        self.mall = mall
        self.any_host_is_mall = not mall_hosts
        self._hosts: dict[str, Scope] = {h.lower(): mall for h in mall_hosts}
        by_id = {p.id: p for p in partners}
        for host, pid in (partner_hosts or {}).items():
            self._hosts[host.lower()] = by_id[pid]
        self._prefixed = {
            pid: dataclasses.replace(p, cookie_path=f"{PARTNER_PREFIX}{pid}/", cookie_domain="", path_prefix=f"{PARTNER_PREFIX}{pid}")
            for pid, p in by_id.items()
        }
        self.partners = by_id

    def resolve(self, host: str, path: str) -> tuple[Scope | None, str]:
        """Return (scope, path within the scope); (None, path) for a host we do not serve."""
        name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host.lower()
        scope = self._hosts.get(name)
        if scope is None:
            if not self.any_host_is_mall:
                return None, path
            scope = self.mall
        if scope is self.mall and path.startswith(PARTNER_PREFIX):
            pid, sep, rest = path[len(PARTNER_PREFIX) :].partition("/")
            partner = self._prefixed.get(pid)
            if partner is None:
                return None, path
            return partner, "/" + rest
        return scope, path
