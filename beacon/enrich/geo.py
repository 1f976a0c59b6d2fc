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
from typing import TYPE_CHECKING

import iptocc

from beacon.config import ConfigError

if TYPE_CHECKING:
    from maxminddb import Reader

FIELDS = ("country", "region", "city")


class GeoError(ConfigError):
    """The configured database cannot be opened; the message names the file and why."""


class Geo:
    def __init__(self, mmdb_path: str = "") -> None:
        self.reader: Reader | None = None
        self.path = mmdb_path
        if mmdb_path:
            import maxminddb  # only with an operator's database (BEACON_GEOIP_DB)

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
            out = self._mmdb(self.reader, ip)
            if out.get("country"):
                return out
        cc = iptocc.country_code(str(ip))
        return {"country": cc.upper()} if cc and len(cc) == 2 else {}

    def _mmdb(self, reader: Reader, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, str]:
        try:
            rec = reader.get(ip)
        except ValueError:
            return {}
        country = str(_at(rec, "country", "iso_code") or "").upper()
        if len(country) != 2:
            return {}
        out = {"country": country}
        code = _at(rec, "subdivisions", 0, "iso_code")
        region = f"{country}-{code}" if code else _at(rec, "subdivisions", 0, "names", "en")
        if region:
            out["region"] = str(region)
        city = _at(rec, "city", "names", "en")
        if city:
            out["city"] = str(city)
        return out


def _at(rec: object, *path: str | int) -> object:
    """The member at `path` of a database record; None where it has none (or another shape)."""
    for key in path:
        if isinstance(key, int):
            rec = rec[key] if isinstance(rec, list) and len(rec) > key else None
        else:
            rec = rec.get(key) if isinstance(rec, dict) else None
    return rec
