"""Campaign parameters and ad click ids from the page URL.

Most page URLs carry none, so a substring test (`maybe`) skips the parse for them; the
rest are parsed by the standard library (percent-decoding, `+` as space, first value
wins). Names are matched in lower case only, as Google Analytics does.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from beacon.event import clean_text

UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CLICK_IDS = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid", "ttclid", "li_fat_id")
FIELDS = UTM + CLICK_IDS
_WANTED = frozenset(FIELDS)
_LIMIT = 512  # longest kept value; click ids run to ~100 characters


def maybe(url: str) -> bool:
    """False when the URL cannot carry a campaign field (the common case, decided cheaply)."""
    return "utm_" in url or "clid" in url or "clkid" in url or "braid" in url or "li_fat_id" in url


def campaign(url: str) -> dict[str, str]:
    """{field: value} for the campaign fields present in the URL's query string, else {}."""
    q = url.find("?")
    if q < 0 or not maybe(url):
        return {}
    out: dict[str, str] = {}
    for part in url[q + 1 :].partition("#")[0].split("&"):
        if part.partition("=")[0] not in _WANTED:
            continue
        for k, v in parse_qsl(part, keep_blank_values=False):
            if k in _WANTED and k not in out:
                v = clean_text(v, _LIMIT).strip()  # %00 and friends decode to control characters
                if v:
                    out[k] = v
    return out
