"""The tags a page embeds, written once: the README shows them, `beacon up` prints them,
the browser tests load them (tests/test_browser.py checks the README against these).

Each sends one pageview per page load in one request, so a new visitor gets one id:
beacon.js sends the pageview (with any calls queued before it loaded) and holds later
events until that first request has answered and its cookie is set; the pixel lives
only in `<noscript>`, for browsers without JavaScript.
"""

from __future__ import annotations


def mall_tag(origin: str) -> str:
    """Every mall page; `origin` is Beacon's mall origin, e.g. https://beacon.shop.example."""
    return (
        f'<script async src="{origin}/beacon.js"></script>\n'
        f'<noscript><img src="{origin}/p.gif?e=pageview" alt="" width="1" height="1"\n'
        '  referrerpolicy="no-referrer-when-downgrade"></noscript>'
    )


def partner_tag(origin: str) -> str:
    """A partner's ad tag, in the ad's iframe; `origin` is Beacon's host for the partner.

    The link opens the opt-out page inside the ad's own frame: there it reaches the
    cookies this ad uses on this mall, partitioned or not.
    """
    return (
        f'<script async src="{origin}/beacon.js" data-partner></script>\n'
        f'<noscript><img src="{origin}/p.gif?e=pageview" alt="" width="1" height="1"\n'
        '  referrerpolicy="no-referrer-when-downgrade"></noscript>\n'
        f'<a href="{origin}/optout" target="_self">Opt out of this advertiser</a>'
    )


def up_message(origin: str, site_origins: tuple[str, ...], loopback: bool = False) -> str:
    """What `beacon up` prints about embedding: the tag for its own origin and what POST /e accepts."""
    tag = "\n".join("  " + line for line in mall_tag(origin).splitlines())
    local = "http(s)://localhost, 127.0.0.1 or [::1] on any port"
    if site_origins:
        allowed = f"POST {origin}/e accepts events from pages on: {', '.join(site_origins)} (BEACON_SITE_ORIGINS)"
        allowed += f"\nand from pages on this machine ({local}; BEACON_LOOPBACK_ORIGINS)." if loopback else "."
    elif loopback:
        allowed = (
            f"BEACON_SITE_ORIGINS is empty, so POST {origin}/e accepts events only from pages on\n"
            f"this machine ({local}), for a trial:\n"
            "a page with the tag served by `python3 -m http.server` shows on the dashboard below.\n"
            "Before real pages embed the tag, set BEACON_SITE_ORIGINS to their origins, comma-separated,\n"
            "e.g. BEACON_SITE_ORIGINS=https://shop.example (`beacon serve` accepts no page until it is set)."
        )
    else:
        allowed = (
            f"BEACON_SITE_ORIGINS is empty, so POST {origin}/e answers 403 to every page and beacon.js's\n"
            "events are lost: set it to the origins of the pages that embed the tag, comma-separated,\n"
            "e.g. BEACON_SITE_ORIGINS=https://shop.example (the <noscript> pixel needs nothing)."
        )
    return f"Embed on every page (one pageview per page load):\n{tag}\n{allowed}\n"
