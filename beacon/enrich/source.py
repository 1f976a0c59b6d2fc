"""Referrer and campaign -> source ("Google", "Facebook", "newsletter", "example.org") and channel.

Sources come from Matomo's community lists of search engines, social networks and AI
assistants (data/referrers.json, CC0; `python -m beacon.enrich.update_referrers` rebuilds
it). Host patterns use Matomo's `{}` placeholder for a country code or a country
second-level domain (`google.{}` matches google.de and google.co.uk); a host matches its
longest listed suffix on a label boundary (`l.facebook.com` -> facebook.com).

The channel follows Google Analytics 4's default channel grouping, rule by rule; the table
is in the README ("Sources and channels").
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

DATA = Path(__file__).parent / "data" / "referrers.json"

DIRECT = "Direct"
# A click id names the network that sent the click even when the referrer was stripped.
CLICK_ID_SOURCE = {
    "gclid": "Google",
    "gbraid": "Google",
    "wbraid": "Google",
    "msclkid": "Bing",
    "fbclid": "Facebook",
    "ttclid": "TikTok",
    "li_fat_id": "LinkedIn",
}
PAID_SEARCH_IDS = ("gclid", "gbraid", "wbraid", "msclkid")  # set only on ad clicks
PAID_SOCIAL_IDS = ("ttclid", "li_fat_id")  # fbclid is on organic Facebook links too: not paid
PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
DISPLAY_MEDIA = frozenset(("display", "banner", "expandable", "interstitial", "cpm"))
SOCIAL_MEDIA = frozenset(("social", "social-network", "social-media", "sm", "social network", "social media"))
EMAIL = frozenset(("email", "e-mail", "e_mail", "e mail", "newsletter"))
REFERRAL_MEDIA = frozenset(("referral", "app", "link"))
_CC_SLD = frozenset(("com", "org", "net", "co", "it", "edu"))


def host_of(url: str) -> str:
    """Lower-case host of an absolute URL without port or userinfo; '' when there is none."""
    start = url.find("://")
    if start < 0:
        return ""
    rest = url[start + 3 :]
    for sep in "/?#":
        i = rest.find(sep)
        if i >= 0:
            rest = rest[:i]
    rest = rest.rpartition("@")[2]
    if rest.startswith("["):  # IPv6 literal
        return rest.partition("]")[0][1:].lower()
    return rest.partition(":")[0].lower().rstrip(".")


def bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _lossy(host: str) -> str:
    """Matomo's placeholder form: a country TLD (with com/org/net/co/it/edu before it) or a
    leading two-letter label becomes `{}`."""
    labels = host.split(".")
    if len(labels) >= 2 and len(labels[-1]) == 2 and labels[-1].isalpha():
        cut = 2 if len(labels) >= 3 and labels[-2] in _CC_SLD else 1
        labels = [*labels[:-cut], "{}"]
    if len(labels) >= 3 and len(labels[0]) == 2 and labels[0].isalpha():
        labels[0] = "{}"
    return ".".join(labels)


@functools.cache
def _load(path: Path) -> tuple[dict[str, tuple[str, str]], str]:
    """The vendored lists, host -> (source name, category), and the upstream ref they were taken at.
    Checked once at start: a hand-edited file names its bad entry instead of failing on a request."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    if not isinstance(hosts, dict):
        raise ValueError(f"{path}: no hosts table")
    table: dict[str, tuple[str, str]] = {}
    for host, entry in hosts.items():
        if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[0], str) or not isinstance(entry[1], str):
            raise ValueError(f"{path}: hosts[{host!r}] must be [source name, category], not {entry!r:.80}")
        table[host] = (entry[0], entry[1])
    ref = doc.get("ref", "")
    return table, ref if isinstance(ref, str) else ""


class Sources:
    """The referrer lists: host -> (source name, category) with category search, social or ai."""

    def __init__(self, path: Path = DATA) -> None:
        table, self.ref = _load(path)
        self.hosts: dict[str, tuple[str, str]] = dict(table)
        self.names: dict[str, tuple[str, str]] = {}
        for name, cat in self.hosts.values():
            self.names.setdefault(name.lower(), (name, cat))

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - one instance per process; hosts repeat
    def lookup(self, host: str) -> tuple[str, str] | None:
        """(name, category) of a listed host, its longest listed suffix, or its placeholder form."""
        if not host:
            return None
        for form in (host, _lossy(host)):
            labels = form.split(".")
            for i in range(max(len(labels) - 1, 1)):
                hit = self.hosts.get(".".join(labels[i:]))
                if hit is not None:
                    return hit
        return None

    def named(self, value: str) -> tuple[str, str] | None:
        """A utm_source that names a listed source ("google", "Facebook") or one of its hosts."""
        low = value.strip().lower()
        return self.names.get(low) or (self.lookup(host_of("https://" + low)) if "." in low else None)


class Internal:
    """The mall's own hosts: a referrer from one of them (or from the page's own host) is no source."""

    def __init__(self, hosts: Iterable[str], suffix: str = "") -> None:
        self.hosts = frozenset(bare(host_of(h if "://" in h else "https://" + h)) for h in hosts if h)
        suffix = suffix.strip().lstrip(".").lower()
        self.suffix = "." + suffix if suffix else ""
        self.bare = suffix

    def listed(self, host: str) -> bool:
        """One of the configured hosts (`host` without `www.`)."""
        return host in self.hosts or (bool(self.suffix) and (host == self.bare or host.endswith(self.suffix)))

    def __call__(self, host: str, page_host: str) -> bool:
        host = bare(host)
        return host == bare(page_host) or self.listed(host)


def on_host(url: str, host: str) -> bool:
    """Whether the absolute `url` is on `host` (given without `www.`), without parsing the URL."""
    i = url.find("://") + 3
    if url.startswith("www.", i):
        i += 4
    if not url.startswith(host, i):
        return False
    j = i + len(host)
    return j == len(url) or url[j] in "/?#:"


def classify(sources: Sources, internal: Internal, page_host: str, ref_host: str, camp: Mapping[str, str]) -> tuple[str, str]:
    """(source, channel) of one event from the hosts of its page and referrer (host_of) and its
    campaign fields. utm_source wins over the referrer; an internal referrer counts as none; an
    unknown referrer's source is its host."""
    if ref_host and internal(ref_host, page_host):
        ref_host = ""
    if not camp:  # the common case: only the referrer speaks
        if not ref_host:
            return "", DIRECT
        hit = sources.lookup(ref_host)
        if hit is None:
            return bare(ref_host), "Referral"
        return hit[0], _ORGANIC[hit[1]]
    utm_source = camp.get("utm_source", "")
    category = ""
    if utm_source:
        hit = sources.named(utm_source)
        source, category = (hit[0], hit[1]) if hit else (utm_source, "")
    elif ref_host:
        hit = sources.lookup(ref_host)
        source, category = (hit[0], hit[1]) if hit else (bare(ref_host), "")
    else:
        source = next((CLICK_ID_SOURCE[k] for k in CLICK_ID_SOURCE if k in camp), "")
        hit = sources.named(source) if source else None
        category = hit[1] if hit else ""
    return source, channel(category, camp, referred=bool(ref_host), source=source)


_ORGANIC = {"search": "Organic Search", "social": "Organic Social", "ai": "AI Assistant"}


def channel(category: str, camp: Mapping[str, str], referred: bool, source: str) -> str:
    """GA4's default channel grouping over (source category, utm_medium, utm_campaign, click ids)."""
    medium = camp.get("utm_medium", "").lower()
    campaign = camp.get("utm_campaign", "").lower()
    src = source.lower()
    paid = bool(PAID_MEDIUM.match(medium)) if medium else False
    if not source and not medium and not campaign and not referred:
        return DIRECT
    if "cross-network" in campaign:
        return "Cross-network"
    if any(k in camp for k in PAID_SEARCH_IDS) or (category == "search" and paid):
        return "Paid Search"
    if any(k in camp for k in PAID_SOCIAL_IDS) or (category == "social" and paid):
        return "Paid Social"
    if medium in DISPLAY_MEDIA:
        return "Display"
    if paid:
        return "Paid Other"
    if category == "social" or medium in SOCIAL_MEDIA:
        return "Organic Social"
    if "video" in medium:
        return "Organic Video"
    if category == "search" or medium == "organic":
        return "Organic Search"
    if category == "ai":
        return "AI Assistant"
    if medium in EMAIL or src in EMAIL:
        return "Email"
    if medium == "affiliate":
        return "Affiliates"
    if medium in REFERRAL_MEDIA or (referred and not medium):
        return "Referral"
    if medium == "audio":
        return "Audio"
    if medium == "sms" or src == "sms":
        return "SMS"
    if medium.endswith("push") or "mobile" in medium or "notification" in medium or src == "firebase":
        return "Mobile Push Notifications"
    return "Unassigned"
