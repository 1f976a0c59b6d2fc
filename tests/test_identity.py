from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from itsdangerous import TimestampSigner

from beacon.clock import ManualClock
from beacon.identity import Identity, _HmacSha256, _Signer, cookie_value
from beacon.scope import Scope

from .conftest import KEY, OLD_KEY

SALT = "beacon.visitor.mall"
VID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


def signed(vid: str, key: str = KEY, salt: str = SALT, age: float = 0) -> str:
    class Old(_Signer):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    return Old(key, salt=salt).sign(vid).decode()


def visitor_of(res) -> str:
    return res.cookies["bcn"].split(".")[0]


def test_a_new_visitor_gets_a_cookie_with_exact_attributes(client):
    res = client.get("/p.gif")
    header = res.headers["set-cookie"]
    name_value, *attrs = header.split("; ")
    assert name_value.startswith("bcn=")
    assert attrs == ["Max-Age=34128000", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"]


def test_cookie_name_domain_path_and_max_age_are_configurable(make_client):
    c = make_client(cookie_name="mall_id", cookie_domain="shop.test", cookie_path="/t", cookie_max_age="3600", cookie_secure="false")
    header = c.get("/p.gif").headers["set-cookie"]
    assert header.split("; ")[1:] == ["Max-Age=3600", "Path=/t", "Domain=shop.test", "HttpOnly", "SameSite=Lax"]
    assert header.startswith("mall_id=")


def test_a_returning_visitor_keeps_its_id_and_gets_no_set_cookie(client, flush, rows):
    cookie = signed(VID)
    res = client.get("/p.gif", headers={"cookie": f"other=1; bcn={cookie}; x=y"})
    assert "set-cookie" not in res.headers
    flush()
    assert [r["visitor_id"] for r in rows()] == [VID]


def test_tampered_expired_foreign_key_and_garbage_cookies_get_a_new_id(client, flush, rows):
    good = signed(VID)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    swapped = signed("2b4e28ba-2fa1-41d2-883f-0016d3cca427").split(".", 1)[1]
    cases = {
        "tampered": tampered,
        "expired": signed(VID, age=396 * 86400),
        "foreign": signed(VID, key="someone-elses-key-000000000000000000"),
        "other_salt": signed(VID, salt="beacon.visitor.partner-a"),
        "plain_itsdangerous": TimestampSigner(KEY, salt=SALT).sign(VID).decode(),
        "id_swapped": f"{VID}.{swapped}",
        "garbage": "%%%\x7f;;",
        "not_an_id": signed("not-a-uuid"),
    }
    for name, cookie in cases.items():
        res = client.get("/p.gif", params={"e": name}, headers={"cookie": f"bcn={cookie}"})
        assert res.status_code == 200
        assert visitor_of(res) != VID, name
    flush()
    assert {r["event"] for r in rows()} == set(cases)
    assert all(r["visitor_id"] != VID for r in rows())


def test_after_key_rotation_an_old_key_cookie_keeps_its_id_and_is_reissued_under_the_new_key(make_client, flush, rows):
    client = make_client(secret_keys=f"{KEY},{OLD_KEY}")
    res = client.get("/p.gif", headers={"cookie": f"bcn={signed(VID, key=OLD_KEY)}"})
    reissued = res.cookies["bcn"]
    assert visitor_of(res) == VID
    assert _Signer(KEY, salt=SALT).unsign(reissued).decode() == VID
    again = client.get("/p.gif", headers={"cookie": f"bcn={reissued}"})
    assert "set-cookie" not in again.headers
    flush()
    assert [r["visitor_id"] for r in rows()] == [VID, VID]


def test_a_cookie_older_than_the_refresh_age_is_reissued_with_the_same_id(make_client):
    client = make_client(cookie_refresh_age="3600")
    fresh = client.get("/p.gif", headers={"cookie": f"bcn={signed(VID, age=60)}"})
    assert "set-cookie" not in fresh.headers
    stale = client.get("/p.gif", headers={"cookie": f"bcn={signed(VID, age=7200)}"})
    assert visitor_of(stale) == VID


def test_identity_verifies_only_its_own_scope():
    mall = Identity(Scope("mall", "bcn"), (KEY,))
    partner = Identity(Scope("ads-a", "bcn"), (KEY,))
    vid, _ = mall.visitor(None)
    assert mall.visitor(mall.sign(vid)) == (vid, None)
    other, cookie = partner.visitor(mall.sign(vid))
    assert other != vid and cookie is not None


def test_cookie_value_finds_only_the_named_cookie():
    header = b"xbcn=1; bcn_other=2; bcn=abc; z=3"
    assert cookie_value(header, b"bcn") == "abc"
    assert cookie_value(b"a=1", b"bcn") is None
    assert cookie_value(b'bcn="q"', b"bcn") == "q"
    assert cookie_value(b"bcn=\xff\xfe", b"bcn") is None


def test_a_cookie_verified_once_is_still_aged_on_every_later_request():
    clock = ManualClock()
    ident = Identity(Scope("mall", "bcn", cookie_max_age=3600, cookie_refresh_age=600), (KEY,), clock=clock)
    cookie = signed(VID, age=100)
    assert ident.visitor(cookie) == (VID, None)  # verified in full, remembered
    clock.advance(1000)  # past the refresh age
    vid, set_cookie = ident.visitor(cookie)
    assert vid == VID and set_cookie is not None
    clock.advance(3000)  # past the max age
    vid, set_cookie = ident.visitor(cookie)
    assert vid != VID and set_cookie is not None


def test_a_remembered_cookie_with_one_byte_changed_is_verified_and_refused():
    ident = Identity(Scope("mall", "bcn"), (KEY,))
    cookie = signed(VID)
    assert ident.visitor(cookie) == (VID, None)
    i = cookie.rindex(".") + 1  # the signature's first character (the last one carries padding bits)
    forged = cookie[:i] + ("A" if cookie[i] != "A" else "B") + cookie[i + 1 :]
    vid, set_cookie = ident.visitor(forged)
    assert vid != VID and set_cookie is not None
    assert ident.visitor(cookie) == (VID, None)


def test_cookies_signed_by_beacon_verify_with_plain_itsdangerous_and_back():
    plain = TimestampSigner(KEY, salt=SALT, digest_method=hashlib.sha256, key_derivation="hmac")
    ident = Identity(Scope("mall", "bcn"), (KEY,))
    assert plain.unsign(ident.sign(VID), max_age=60) == VID.encode()
    assert ident.visitor(plain.sign(VID).decode()) == (VID, None)


def test_a_cookie_in_the_second_of_two_cookie_headers_is_found(client, flush, rows):
    res = client.get("/p.gif", headers=[("cookie", "other=1"), ("cookie", f"bcn={signed(VID)}")])
    assert res.status_code == 200 and "set-cookie" not in res.headers
    flush()
    assert [r["visitor_id"] for r in rows()] == [VID]


@pytest.mark.parametrize("key", [b"", b"k", b"k" * 32, b"k" * 64, b"k" * 65, bytes(range(200))])
def test_the_keyed_hmac_is_the_standard_librarys(key: bytes) -> None:
    """Identity signs with its own HMAC-SHA256 (made once per key); it must be RFC 2104's."""
    mac = _HmacSha256(key)
    for msg in (b"", b"x", b"0190c4e2-1b7c-4a7e-9f4e-1c2d3e4f5a6b.ZpXyAA", bytes(range(256)) * 3):
        assert mac.digest(msg) == hmac.new(key, msg, hashlib.sha256).digest()
