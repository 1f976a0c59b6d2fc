"""Real engines: what a pixel hit or a sendBeacon batch stores in the derived columns."""

from __future__ import annotations

import pytest

from .test_enrich import ANDROID_TABLET, CHROME, CURL, IPHONE

DERIVED = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "gbraid",
    "wbraid",
    "fbclid",
    "msclkid",
    "ttclid",
    "li_fat_id",
    "source",
    "channel",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "country",
    "region",
    "city",
]
EMPTY = dict.fromkeys(DERIVED, "")


@pytest.fixture
def derived(store):
    def fetch() -> list[dict[str, str]]:
        cols = ["event", "ip", "mode", *DERIVED]
        result = store.query(f"SELECT {', '.join(cols)} FROM {store.full_table} ORDER BY received_at, toUInt128(event_id)")
        return [dict(zip(cols, row)) for row in result]

    return fetch


@pytest.fixture
def mall(make_client):
    return make_client(trusted_proxies="203.0.113.0/24", site_origins="https://shop.test")


def test_a_pixel_hit_stores_campaign_source_agent_and_country(mall, flush, derived):
    url = (
        "https://shop.test/boots?utm_source=newsletter&utm_medium=email&utm_campaign=nov%20sale"
        "&utm_term=boots&utm_content=hero&gclid=Cj0KCQ&fbclid=IwAR1&li_fat_id=9f2e"
    )
    mall.get("/p.gif", params={"u": url, "r": "https://www.google.com/"}, headers={"user-agent": IPHONE, "x-forwarded-for": "81.2.69.142"})
    assert flush() == 1
    [row] = derived()
    assert row == {
        "event": "pageview",
        "ip": "81.2.69.0",
        "mode": "cookie",
        **EMPTY,
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "nov sale",
        "utm_term": "boots",
        "utm_content": "hero",
        "gclid": "Cj0KCQ",
        "fbclid": "IwAR1",
        "li_fat_id": "9f2e",
        "source": "newsletter",
        "channel": "Paid Search",
        "browser": "Safari",
        "browser_version": "18",
        "os": "iOS",
        "os_version": "18.1",
        "device": "mobile",
        "country": "GB",
    }


def test_referrers_give_sources_and_channels_and_internal_ones_none(mall, flush, derived):
    for ref in ("https://www.bing.com/search?q=boots", "https://t.co/x", "https://shop.test/cart", "https://blog.example.org/p", ""):
        mall.get("/p.gif", params={"u": "https://shop.test/boots", "r": ref}, headers={"user-agent": CHROME})
    flush()
    assert [(r["source"], r["channel"]) for r in derived()] == [
        ("Bing", "Organic Search"),
        ("Twitter", "Organic Social"),
        ("", "Direct"),
        ("blog.example.org", "Referral"),
        ("", "Direct"),
    ]


def test_a_private_address_stores_no_country_and_curl_is_a_bot_device(client, flush, derived):
    client.get("/p.gif", params={"u": "https://shop.test/"}, headers={"user-agent": CURL})  # peer 203.0.113.77
    flush()
    [row] = derived()
    assert (row["country"], row["device"], row["browser"]) == ("", "bot", "curl")


def test_cookieless_mode_gets_the_same_enrichment(mall, flush, derived):
    params = {"u": "https://shop.test/?utm_source=google&utm_medium=cpc", "r": "https://www.google.de/"}
    headers = {"user-agent": ANDROID_TABLET, "x-forwarded-for": "217.160.0.1"}
    mall.get("/p.gif", params=params, headers=headers)
    mall.get("/p.gif", params=params, headers={**headers, "sec-gpc": "1"})
    flush()
    cookie, cookieless = derived()
    assert (cookie["mode"], cookieless["mode"]) == ("cookie", "cookieless")
    assert (
        {k: cookie[k] for k in DERIVED}
        == {k: cookieless[k] for k in DERIVED}
        == {
            **EMPTY,
            "utm_source": "google",
            "utm_medium": "cpc",
            "source": "Google",
            "channel": "Paid Search",
            "browser": "Chrome",
            "browser_version": "131",
            "os": "Android",
            "os_version": "13",
            "device": "tablet",
            "country": "DE",
        }
    )


def test_a_sendbeacon_batch_enriches_each_event_from_its_own_url(mall, flush, derived):
    res = mall.post(
        "/e",
        content=b'[{"e": "pageview", "u": "https://shop.test/?utm_source=fb&utm_medium=paid", '
        b'"r": "https://m.facebook.com/"}, {"e": "add_to_cart", "u": "https://shop.test/cart", '
        b'"r": "https://shop.test/"}]',
        headers={"content-type": "text/plain", "user-agent": CHROME, "x-forwarded-for": "8.8.8.8"},
    )
    assert res.status_code == 204
    flush()
    first, second = derived()
    assert (first["source"], first["channel"], first["utm_source"]) == ("fb", "Paid Other", "fb")
    assert (second["source"], second["channel"], second["utm_source"]) == ("", "Direct", "")
    assert first["country"] == second["country"] == "US" and first["device"] == second["device"] == "desktop"
