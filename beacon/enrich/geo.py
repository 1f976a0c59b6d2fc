"""Full client address -> country (and region, city with an operator's database).

Called with the address before it is truncated; the address itself is neither stored
nor logged. The shipped database is iptocc's (embedded in its wheel, rebuilt nightly from
the five Regional Internet Registries' delegation files): the country a block is
registered in, ISO 3166-1 alpha-2, about 95% in agreement with commercial geolocation.
An operator's MaxMind or DB-IP `.mmdb` (BEACON_GEOIP_DB) is read first through maxminddb
and adds region (ISO 3166-2, or the subdivision's name) and city. Private, reserved and
unparseable addresses give no country.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

import iptocc

from beacon.config import ConfigError

FIELDS = ("country", "region", "city")


class GeoError(ConfigError):
    """The configured database cannot be opened; the message names the file and why."""


class Geo:
    def __init__(self, mmdb_path: str = "") -> None:
        self.reader: Any = None
        self.path = mmdb_path
        if mmdb_path:
            import maxminddb

            try:
                self.reader = maxminddb.open_database(mmdb_path)
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                raise GeoError(f"BEACON_GEOIP_DB={mmdb_path!r}: {exc}") from None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per process; addresses repeat
    def fields(self, addr: str) -> dict[str, str]:
        """The geo columns of one full address; only non-empty ones are present. Read-only."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return {}
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global:
            return {}
        if self.reader is not None:
            out = self._mmdb(ip)
            if out.get("country"):
                return out
        cc = iptocc.country_code(str(ip))
        return {"country": cc.upper()} if cc and len(cc) == 2 else {}

    def _mmdb(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, str]:
        try:
            rec = self.reader.get(ip)
        except ValueError:
            return {}
        if not isinstance(rec, dict):
            return {}
        country = str((rec.get("country") or {}).get("iso_code") or "").upper()
        if len(country) != 2:
            return {}
        out = {"country": country}
        subs = rec.get("subdivisions") or []
        if subs:
            sub = subs[0]
            code = sub.get("iso_code")
            region = f"{country}-{code}" if code else (sub.get("names") or {}).get("en", "")
            if region:
                out["region"] = str(region)
        city = ((rec.get("city") or {}).get("names") or {}).get("en")
        if city:
            out["city"] = str(city)
        return out
