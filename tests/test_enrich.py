"""Golden tests of each derivation: known user agents, referrers, campaign URLs and addresses,
against the data the project ships (uap-core rules, Matomo's lists, iptocc)."""

from __future__ import annotations

import pytest

from beacon import config
from beacon.enrich import Enricher
from beacon.enrich.agent import Agents
from beacon.enrich.campaign import campaign
from beacon.enrich.geo import Geo
from beacon.enrich.source import Internal, Sources, classify, host_of

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1"
)
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
ANDROID_PHONE = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36"
ANDROID_TABLET = "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"


@pytest.fixture(scope="module")
def agents() -> Agents:
    return Agents()


@pytest.mark.parametrize(
    ("ua", "is_bot", "expected"),
    [
        (CHROME, False, {"browser": "Chrome", "browser_version": "131", "os": "Windows", "os_version": "10", "device": "desktop"}),
        (FIREFOX, False, {"browser": "Firefox", "browser_version": "133", "os": "Linux", "device": "desktop"}),
        (SAFARI, False, {"browser": "Safari", "browser_version": "18", "os": "Mac OS X", "os_version": "10.15", "device": "desktop"}),
        (IPHONE, False, {"browser": "Safari", "browser_version": "18", "os": "iOS", "os_version": "18.1", "device": "mobile"}),
        (IPAD, False, {"browser": "Safari", "browser_version": "17", "os": "iOS", "os_version": "17.6", "device": "tablet"}),
        (ANDROID_PHONE, False, {"browser": "Chrome", "browser_version": "131", "os": "Android", "os_version": "14", "device": "mobile"}),
        (ANDROID_TABLET, False, {"browser": "Chrome", "browser_version": "131", "os": "Android", "os_version": "13", "device": "tablet"}),
        (GOOGLEBOT, True, {"browser": "Googlebot", "browser_version": "2", "device": "bot"}),
        (CURL, True, {"browser": "curl", "browser_version": "8", "device": "bot"}),
        ("", False, {}),
    ],
)
def test_user_agents_give_browser_major_version_os_and_device(agents, ua, is_bot, expected):
    assert agents.fields(ua, is_bot) == expected


def test_a_crawler_that_ua_parser_does_not_know_is_still_a_bot_device(agents):
    assert agents.fields("Mozilla/5.0 (compatible; SomeNewCrawler/1.0)", True)["device"] == "bot"
    assert agents.fields("Googlebot/2.1 (+http://www.google.com/bot.html)", False)["device"] == "bot"


def test_an_unknown_agent_is_device_other_with_no_browser(agents):
    assert agents.fields("some-smart-fridge", False) == {"device": "other"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://shop.test/shoes?id=7", {}),
        ("https://shop.test/", {}),
        (
            "https://shop.test/?utm_source=newsletter&utm_medium=email&utm_campaign=nov%20sale&utm_term=boots&utm_content=hero",
            {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "nov sale", "utm_term": "boots", "utm_content": "hero"},
        ),
        (
            "https://shop.test/p?gclid=Cj0KCQ&gbraid=0AAA&wbraid=ClkK&fbclid=IwAR1&msclkid=abc123&ttclid=E.C.P&li_fat_id=9f2e",
            {
                "gclid": "Cj0KCQ",
                "gbraid": "0AAA",
                "wbraid": "ClkK",
                "fbclid": "IwAR1",
                "msclkid": "abc123",
                "ttclid": "E.C.P",
                "li_fat_id": "9f2e",
            },
        ),
        ("https://shop.test/?utm_source=Google&utm_medium=cpc+ads&UTM_CAMPAIGN=x", {"utm_source": "Google", "utm_medium": "cpc ads"}),
        ("https://shop.test/?utm_source=a&utm_source=b&utm_medium=", {"utm_source": "a"}),
        ("https://shop.test/?utm_source=a%00b%0A&utm_term=%20", {"utm_source": "ab"}),
        ("https://shop.test/?x=1#utm_source=hash", {}),
        ("https://shop.test/?utm_sourcex=1&my_gclid=2", {}),
    ],
)
def test_campaign_fields_come_from_the_page_url_query(url, expected):
    assert campaign(url) == expected


@pytest.fixture(scope="module")
def sources() -> Sources:
    return Sources()


INTERNAL = Internal(["https://shop.test", "beacon.shop.test"], "shop.test")
PAGE = "https://shop.test/shoes"


@pytest.mark.parametrize(
    ("referrer", "url", "expected"),
    [
        ("https://www.google.com/", PAGE, ("Google", "Organic Search")),
        ("https://www.google.co.uk/search?q=boots", PAGE, ("Google", "Organic Search")),
        ("https://www.bing.com/search?q=boots", PAGE, ("Bing", "Organic Search")),
        ("https://duckduckgo.com/", PAGE, ("DuckDuckGo", "Organic Search")),
        ("https://l.facebook.com/l.php?u=x", PAGE, ("Facebook", "Organic Social")),
        ("https://t.co/Ab12", PAGE, ("Twitter", "Organic Social")),
        ("https://www.linkedin.com/feed/", PAGE, ("LinkedIn", "Organic Social")),
        ("https://chatgpt.com/", PAGE, ("ChatGPT", "AI Assistant")),
        ("", PAGE + "?utm_source=newsletter&utm_medium=email&utm_campaign=nov", ("newsletter", "Email")),
        ("https://shop.test/cart", PAGE, ("", "Direct")),
        ("https://www.shop.test/cart", PAGE, ("", "Direct")),
        ("https://beacon.shop.test/", PAGE, ("", "Direct")),
        ("https://blog.example.org/post/1", PAGE, ("blog.example.org", "Referral")),
        ("https://www.example.net/", PAGE, ("example.net", "Referral")),
        ("", PAGE, ("", "Direct")),
        ("not a url", PAGE, ("", "Direct")),
        # utm_source wins over the referrer, and names a listed source by its canonical name
        ("https://www.bing.com/", PAGE + "?utm_source=google&utm_medium=cpc", ("Google", "Paid Search")),
        ("https://www.facebook.com/", PAGE + "?utm_source=facebook&utm_medium=paid_social", ("Facebook", "Paid Social")),
        ("", PAGE + "?utm_source=adnet&utm_medium=display", ("adnet", "Display")),
        ("", PAGE + "?utm_source=partner&utm_medium=affiliate", ("partner", "Affiliates")),
        ("", PAGE + "?utm_source=spring&utm_campaign=x", ("spring", "Unassigned")),
        # click ids name the network when the referrer was stripped
        ("", PAGE + "?gclid=abc", ("Google", "Paid Search")),
        ("", PAGE + "?msclkid=abc", ("Bing", "Paid Search")),
        ("", PAGE + "?fbclid=abc", ("Facebook", "Organic Social")),
        ("", PAGE + "?ttclid=abc", ("TikTok", "Paid Social")),
        ("https://www.google.com/", PAGE + "?gclid=abc", ("Google", "Paid Search")),
    ],
)
def test_referrer_and_campaign_give_source_and_channel(sources, referrer, url, expected):
    assert classify(sources, INTERNAL, host_of(url), host_of(referrer), campaign(url)) == expected


def test_hosts_are_read_without_port_userinfo_or_case():
    assert host_of("https://User:pw@WWW.Google.COM:443/x?y#z") == "www.google.com"
    assert host_of("android-app://com.google.android.googlequicksearchbox/") == "com.google.android.googlequicksearchbox"
    assert host_of("https://[2001:db8::1]:8443/") == "2001:db8::1"
    assert host_of("/relative/path") == ""


def test_the_shipped_referrer_list_names_its_origin_and_licence(sources):
    assert len(sources.ref) == 40 and len(sources.hosts) > 800


@pytest.fixture(scope="module")
def geo() -> Geo:
    return Geo()


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("8.8.8.8", {"country": "US"}),
        ("81.2.69.142", {"country": "GB"}),
        ("217.160.0.1", {"country": "DE"}),
        ("1.0.16.1", {"country": "JP"}),
        ("2a02:1810::1", {"country": "BE"}),
        ("::ffff:217.160.0.1", {"country": "DE"}),
        ("10.1.2.3", {}),
        ("192.168.0.1", {}),
        ("127.0.0.1", {}),
        ("100.64.0.1", {}),
        ("169.254.1.1", {}),
        ("203.0.113.77", {}),
        ("::1", {}),
        ("fe80::1", {}),
        ("2001:db8::1", {}),
        ("", {}),
        ("not-an-ip", {}),
    ],
)
def test_addresses_give_a_country_and_private_ones_none(geo, addr, expected):
    assert geo.fields(addr) == expected


def test_the_enricher_encodes_only_what_is_not_empty():
    e = Enricher(config.load({"site_origins": "https://shop.test", "secret_keys": "k"}, environ={}))
    assert e.client("81.2.69.142", IPHONE, False) == (
        b',"country":"GB","device":"mobile","browser":"Safari","browser_version":"18","os":"iOS","os_version":"18.1"'
    )
    assert e.client("10.0.0.1", "", False) == b""
    assert e.event(PAGE, "") == b',"channel":"Direct"'
    assert e.event(PAGE, "https://www.google.de/") == b',"source":"Google","channel":"Organic Search"'
    assert e.event(PAGE + "?utm_source=nl&utm_medium=email", "https://t.co/x") == (
        b',"utm_source":"nl","utm_medium":"email","source":"nl","channel":"Email"'
    )


def _city_mmdb(path) -> str:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    w.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB"},
            "city": {"names": {"en": "London"}},
            "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        },
    )
    w.insert_network(IPSet(["2a02:1810::/32"]), {"country": {"iso_code": "BE"}, "subdivisions": [{"names": {"en": "Flanders"}}]})
    w.to_db_file(str(path))
    return str(path)


def test_an_operators_mmdb_adds_region_and_city_and_the_shipped_data_fills_its_gaps(tmp_path):
    geo = Geo(_city_mmdb(tmp_path / "city.mmdb"))
    assert geo.fields("81.2.69.142") == {"country": "GB", "region": "GB-ENG", "city": "London"}
    assert geo.fields("2a02:1810::1") == {"country": "BE", "region": "Flanders"}
    assert geo.fields("8.8.8.8") == {"country": "US"}  # not in the operator's file
    assert geo.fields("10.0.0.1") == {}
    geo.close()


def test_anonymous_mode_gets_country_but_not_region_or_city(tmp_path):
    e = Enricher(config.load({"secret_keys": "k", "geoip_db": _city_mmdb(tmp_path / "c.mmdb")}, environ={}))
    assert e.client("81.2.69.142", "", False) == b',"country":"GB","region":"GB-ENG","city":"London"'
    assert e.client("81.2.69.142", "", False, precise=False) == b',"country":"GB"'


def test_a_geoip_db_that_cannot_be_read_is_one_clear_line_from_the_cli(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    done = subprocess.run(
        [sys.executable, "-m", "beacon", "serve", "--geoip-db", str(bad), "--secret-keys", "k", "--redis-url", "redis://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"beacon: BEACON_GEOIP_DB='{bad}'") and "Traceback" not in done.stderr


def test_a_referrer_on_the_pages_own_host_is_internal_whatever_the_www():
    from beacon.enrich.source import on_host

    assert on_host("https://www.shop.test/a", "shop.test") and on_host("http://shop.test", "shop.test")
    assert on_host("https://shop.test:8443/", "shop.test")
    assert not on_host("https://shop.test.evil.example/", "shop.test")
    assert not on_host("https://myshop.test/", "shop.test") and not on_host("", "shop.test")


def test_the_update_script_turns_matomos_yaml_into_the_shipped_table():
    from beacon.enrich.update_referrers import build

    table = build(
        {
            "ai": "ChatGPT:\n  - chatgpt.com\n",
            "search": "Google:\n  -\n    urls:\n      - google.com\n      - 'google.{}'\n    params:\n      - q\n"
            "ChatGPT:\n  -\n    urls:\n      - chatgpt.com\n    params: []\n"
            "Bing Images:\n  -\n    urls:\n      - bing.com/images/search\n    params:\n      - q\n",
            "social": "Twitter:\n  - twitter.com\n  - t.co\n",
        }
    )
    assert table == {
        "chatgpt.com": ["ChatGPT", "ai"],
        "google.com": ["Google", "search"],
        "google.{}": ["Google", "search"],
        "bing.com": ["Bing Images", "search"],
        "twitter.com": ["Twitter", "social"],
        "t.co": ["Twitter", "social"],
    }
