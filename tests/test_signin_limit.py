"""Failed dashboard sign-ins are limited per client address and per scope, counted in the real Redis."""

from __future__ import annotations

import pytest

from beacon.clock import ManualClock

from .conftest import API_KEY, PEER
from .test_partners import A_KEY, MALL, REGISTRY

A = "https://ads.a.test"


@pytest.fixture
def clock():
    return ManualClock(1_800_000_000.0)  # the start of a 900 s window


@pytest.fixture
def make(make_client, tmp_path, clock):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)

    def build():
        return make_client(
            clock,
            partners_file=str(path),
            mall_hosts="shop.test",
            trusted_proxies=f"{PEER}/32",
            dashboard_signin_limit=3,
            dashboard_signin_scope_limit=5,
            dashboard_signin_window=900,
        )

    return build


def sign_in(client, key, address="198.51.100.1", base=MALL, path="/dashboard/login"):
    return client.post(f"{base}{path}", data={"key": key}, headers={"origin": base, "x-forwarded-for": address}, follow_redirects=False)


def test_after_the_limit_even_the_right_key_waits_for_the_window_to_end(make, clock, r):
    client = make()
    for _ in range(3):
        assert sign_in(client, "wrong").status_code == 401
    refused = sign_in(client, API_KEY)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "900"
    assert "Too many failed sign-ins. Try again in 15 minutes." in refused.text
    assert "beacon_dash=" not in refused.headers.get("set-cookie", "")
    assert any(k.startswith(b"beacon:signin:ip:") for k in r.keys("beacon:signin:*"))  # shared by every worker
    assert not any(b"198.51.100.1" in k for k in r.keys("*"))  # the address is not stored in the clear
    clock.advance(600)
    later = sign_in(client, API_KEY)
    assert later.status_code == 429 and later.headers["retry-after"] == "300"
    clock.advance(300)
    assert sign_in(client, API_KEY).status_code == 303


def test_another_worker_sees_the_same_counts(make, r):
    first, second = make(), make()
    for _ in range(3):
        assert sign_in(first, "wrong").status_code == 401
    assert sign_in(second, API_KEY).status_code == 429


def test_another_address_still_signs_in_until_the_scope_limit(make):
    client = make()
    for _ in range(3):
        sign_in(client, "wrong", "198.51.100.1")
    assert sign_in(client, API_KEY, "198.51.100.1").status_code == 429
    assert sign_in(client, API_KEY, "198.51.100.2").status_code == 303
    for _ in range(2):
        assert sign_in(client, "wrong", "198.51.100.3").status_code == 401
    # five failures against the mall from any address: the mall's sign-in waits, a partner's does not
    assert sign_in(client, API_KEY, "198.51.100.4").status_code == 429
    assert sign_in(client, A_KEY, "198.51.100.4", base=A).status_code == 303


def test_the_operators_sign_in_counts_too(make):
    client = make()
    for _ in range(3):
        assert sign_in(client, "wrong", path="/dashboard/ops/login").status_code == 401
    refused = sign_in(client, API_KEY, path="/dashboard/ops/login")
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text and refused.headers["retry-after"]


def test_without_redis_the_limit_holds_in_the_process(make, redis_server):
    client = make()
    redis_server.stop()
    try:
        for _ in range(3):
            assert sign_in(client, "wrong").status_code == 401
        assert sign_in(client, API_KEY).status_code == 429
    finally:
        redis_server.start()
