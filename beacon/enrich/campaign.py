"""Campaign parameters and ad click ids from the page URL.

Most page URLs carry none, so a substring test skips the parse for them; the rest are
parsed by the standard library (percent-decoding, `+` as space, first value wins).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CLICK_IDS = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid", "ttclid", "li_fat_id")
FIELDS = UTM + CLICK_IDS
_WANTED = frozenset(FIELDS)
# Every name above contains one of these; a URL with none of them has no campaign.
_MARKERS = ("utm_", "clid", "clkid", "braid", "li_fat_id")
_LIMIT = 512  # longest kept value; click ids run to ~100 characters


def campaign(url: str) -> dict[str, str]:
    """{field: value} for the campaign fields present in the URL's query string, else {}."""
    q = url.find("?")
    if q < 0:
        return {}
    tail = url[q + 1:].partition("#")[0]
    low = tail.lower()
    if not any(m in low for m in _MARKERS):
        return {}
    out: dict[str, str] = {}
    for part in tail.split("&"):
        key, _, _ = part.partition("=")
        if key.lower() not in _WANTED:
            continue
        for k, v in parse_qsl(part, keep_blank_values=False):
            k = k.lower()
            if k in _WANTED and k not in out:
                v = v.strip()
                if v:
                    out[k] = v[:_LIMIT]
    return out
