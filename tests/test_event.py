"""The event: validation, the pixel query parser, UUIDv7 ids, anonymised addresses, the encoded line."""

from __future__ import annotations

import ipaddress
import uuid

import orjson
import pytest

from beacon import config
from beacon.errors import BeaconError
from beacon.event import (
    Anonymiser,
    Invalid,
    Limits,
    check_event_name,
    check_props,
    check_url,
    encode,
    parse_pixel_query,
    uuid7,
)

LIMITS = Limits(config.load(environ={}))


def test_event_names_are_checked():
    assert check_event_name("add_to_cart", LIMITS) == "add_to_cart"
    for bad in ("", "a b", "x" * 65, 7, None):
        with pytest.raises(Invalid):
            check_event_name(bad, LIMITS)


def test_invalid_is_a_client_error_with_a_reason():
    with pytest.raises(BeaconError) as info:
        check_event_name("a b", LIMITS)
    assert info.value.status == 400 and "event name" in info.value.reason


def test_props_become_strings_and_are_bounded():
    assert check_props({"n": 7, "ok": True, "s": "x"}, LIMITS) == {"n": "7", "ok": "true", "s": "x"}
    with pytest.raises(Invalid, match="too many properties"):
        check_props({f"k{i}": "v" for i in range(33)}, LIMITS)
    with pytest.raises(Invalid):
        check_props({"k": {"nested": 1}}, LIMITS)


def test_urls_are_truncated_not_refused():
    assert len(check_url("https://shop.test/" + "a" * 5000, LIMITS, "u")) == 2048
    with pytest.raises(Invalid):
        check_url(["x"], LIMITS, "u")


def test_the_pixel_query_decodes_fields_and_counts_what_it_drops():
    fields, dropped = parse_pixel_query(b"e=view&u=https%3A%2F%2Fshop.test%2F&p.k=v+w&p.bad=%ff&zz=1", LIMITS)
    assert fields["e"] == "view" and fields["u"] == "https://shop.test/"
    assert fields["p"] == {"k": "v w"}
    assert dropped >= 1


def test_uuid7_ids_are_version_7_and_ordered():
    ids = [uuid.UUID(uuid7(1_750_000_000.0 + i / 1000)) for i in range(50)]
    assert all(u.version == 7 for u in ids)
    assert ids == sorted(ids, key=lambda u: u.int)


def test_addresses_are_truncated_and_proxies_trusted_only_when_configured():
    a = Anonymiser(24, 48, (ipaddress.ip_network("10.0.0.0/8"),))
    assert a.anonymise("203.0.113.77") == "203.0.113.0"
    assert a.anonymise("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert a.client("10.1.2.3", b"198.51.100.7") == "198.51.100.7"
    assert a.client("203.0.113.1", b"198.51.100.7") == "203.0.113.1"


def test_the_encoded_line_has_exactly_the_table_columns():
    line = encode(
        event_id=uuid7(1.0),
        received_at=1.5,
        scope="mall",
        visitor_id="v",
        mode="cookie",
        event="pageview",
        url="u",
        referrer="",
        props={},
        ip="203.0.113.0",
        user_agent="UA",
        transport="pixel",
    )
    row = orjson.loads(line)
    assert row["received_at"] == "1.500" and row["scope"] == "mall" and row["transport"] == "pixel"
