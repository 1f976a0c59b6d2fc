"""What an event's raw fields say about where the visitor came from and what they use.

One module per derivation: `campaign` (UTM parameters and click ids from the page URL),
`source` (referrer and campaign -> source and channel), `agent` (user agent -> browser,
OS, device type) and `geo` (full client address -> country, region, city). `Enricher`
puts them on the hot path: each returns the derived columns already encoded as JSON
members, cached by what they depend on (user agent and address per visitor, referrer host
per referrer), so a returning visitor costs a few dictionary look-ups. Empty columns are
left out of the line; ClickHouse stores '' for them.
"""

from __future__ import annotations

import functools

import orjson

from beacon.config import Settings
from beacon.enrich.agent import Agents
from beacon.enrich.campaign import campaign, maybe
from beacon.enrich.geo import Geo, GeoError
from beacon.enrich.source import Internal, Sources, bare, classify, host_of, on_host

__all__ = ["Enricher", "GeoError", "members"]


def members(fields: dict[str, str]) -> bytes:
    """`,"k":"v",...` for splicing into an encoded row; b"" when there is nothing."""
    return b"," + orjson.dumps(fields)[1:-1] if fields else b""


class Enricher:
    def __init__(self, settings: Settings) -> None:
        hosts = [*settings.site_origins, *settings.mall_hosts, *settings.internal_hosts]
        self.sources = Sources()
        self.internal = Internal(hosts, settings.cookie_domain)
        self.agents = Agents()
        self.geo = Geo(settings.geoip_db)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one instance per process; keyed per visitor
    def client(self, addr: str, ua: str, is_bot: bool, precise: bool = True) -> bytes:
        """Geo and agent columns of one request, encoded. `precise=False` (anonymous mode)
        leaves out region and city."""
        fields = {**self.geo.fields(addr), **self.agents.fields(ua, is_bot)}
        if not precise:
            fields.pop("region", None)
            fields.pop("city", None)
        return members(fields)

    def event(self, url: str, referrer: str) -> bytes:
        """Campaign, source and channel columns of one event, encoded."""
        if maybe(url):
            camp = campaign(url)
            if camp:
                source, channel = classify(self.sources, self.internal, host_of(url), host_of(referrer), camp)
                return members({**camp, "source": source, "channel": channel} if source else {**camp, "channel": channel})
        if not referrer:
            return _DIRECT
        host, encoded = self._referrer(referrer)
        if encoded is _DIRECT or on_host(url, host):  # no referrer host, or an internal one
            return _DIRECT
        return encoded

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - one instance per process; referrers repeat
    def _referrer(self, referrer: str) -> tuple[str, bytes]:
        """(referrer host without `www.`, its encoded source and channel), the latter _DIRECT when
        the referrer has no host or is one of the mall's own."""
        host = bare(host_of(referrer))
        if not host or self.internal.listed(host):
            return host, _DIRECT
        source, channel = classify(self.sources, self.internal, "", host, {})
        return host, members({"source": source, "channel": channel})


_DIRECT = members({"channel": "Direct"})
