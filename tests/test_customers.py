"""Signed-in customers: linked server to server, seen by the mall only, forgotten on request."""

from __future__ import annotations

import logging

import pytest

from beacon import cli, customers
from beacon.identity import Identity

from .conftest import API_KEY, KEY
from .test_partners import A_ID, A_KEY, MALL, REGISTRY, A, B, set_cookies

ACCOUNT = "customer-4711@shop"
MALL_AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def links(store, r):
    store.command(f"TRUNCATE TABLE {customers.table(store)}")
    return lambda: store.query(f"SELECT DISTINCT visitor_id, account FROM {customers.table(store)} ORDER BY visitor_id")


@pytest.fixture
def make_pclient(make_client, tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)
    return lambda **kw: make_client(partners_file=str(path), mall_hosts="shop.test", site_origins=MALL, **kw)


def visit(c, *events: str) -> tuple[str, str]:
    """A new mall visitor loads pixels: (its cookie value, its visitor id)."""
    c.cookies.clear()
    value = set_cookies(c.get(f"{MALL}/p.gif?e={events[0]}"))[0].split(";")[0].split("=", 1)[1]
    for e in events[1:]:
        c.get(f"{MALL}/p.gif?e={e}", headers={"cookie": f"bcn={value}"})
    c.cookies.clear()
    return value, value.split(".")[0]


def identify(c, cookie: str, account: str = ACCOUNT, auth: dict | None = None):
    return c.post(f"{MALL}/api/v1/identify", json={"cookie": cookie, "account": account}, headers=MALL_AUTH if auth is None else auth)


def test_identify_links_a_verified_cookie_to_an_account(make_pclient, flush, links):
    c = make_pclient()
    phone, phone_id = visit(c, "pageview", "add_to_cart")
    laptop, laptop_id = visit(c, "pageview", "purchase_page")
    _, stranger_id = visit(c, "pageview")
    flush()
    res = identify(c, phone)
    assert res.status_code == 200 and res.json() == {"linked": True, "hashed": False}
    assert identify(c, laptop).status_code == 200
    assert identify(c, laptop).status_code == 200  # again: still one link
    assert links() == sorted([(phone_id, ACCOUNT), (laptop_id, ACCOUNT)])
    # reports: one customer over two devices, and the customer's events from both
    counts = c.get(f"{MALL}/api/v1/customers", headers=MALL_AUTH).json()
    assert (counts["customers"], counts["visitors"]) == (1, 2)
    events = c.get(f"{MALL}/api/v1/customers/events", params={"account": ACCOUNT}, headers=MALL_AUTH).json()
    assert sorted(e["event"] for e in events["events"]) == ["add_to_cart", "pageview", "pageview", "purchase_page"]
    assert stranger_id not in str(events)
    # /me shows the link to that browser only
    assert c.get(f"{MALL}/me", headers={"cookie": f"bcn={phone}"}).json()["accounts"] == [ACCOUNT]


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"cookie": "not-a-cookie", "account": ACCOUNT}, "not a valid"),
        ({"account": ACCOUNT}, "not a valid"),
        ({"cookie": "x", "account": ""}, "account must be"),
        ({"cookie": "x", "account": "a\nb"}, "account must be"),
        ({"cookie": "x", "account": "x" * 257}, "account must be"),
        ([1], "JSON object"),
    ],
)
def test_identify_refuses_what_it_cannot_verify(make_pclient, links, body, reason):
    c = make_pclient()
    res = c.post(f"{MALL}/api/v1/identify", json=body, headers=MALL_AUTH)
    assert res.status_code == 400 and reason in res.json()["error"]
    assert c.post(f"{MALL}/api/v1/identify", content=b"{", headers=MALL_AUTH).status_code == 400
    assert links() == []


def test_a_partner_cookie_or_a_forged_one_cannot_be_linked(make_pclient, links):
    c = make_pclient()
    core = c.app.core
    partner_cookie = Identity(core.resolver.partners["a"], (KEY,)).sign(A_ID)
    forged = Identity(core.mall, ("some-other-key-0123456789",)).sign(A_ID)
    for cookie in (partner_cookie, forged):
        assert identify(c, cookie).status_code == 400
    assert links() == []


def test_only_the_mall_key_on_the_mall_host_reaches_customer_routes(make_pclient, flush, links):
    c = make_pclient()
    cookie, _ = visit(c, "pageview")
    flush()
    for auth in ({}, {"authorization": f"Bearer {A_KEY}"}, {"authorization": "Bearer wrong"}):
        assert identify(c, cookie, auth=auth).status_code == 401
        assert c.get(f"{MALL}/api/v1/customers", headers=auth).status_code == 401
        assert c.get(f"{MALL}/api/v1/customers/events?account=x", headers=auth).status_code == 401
    for host in (A, B):  # partner hosts do not serve them at all, even with the mall key
        assert c.post(f"{host}/api/v1/identify", json={"cookie": cookie, "account": ACCOUNT}, headers=MALL_AUTH).status_code == 404
        assert c.get(f"{host}/api/v1/customers", headers=MALL_AUTH).status_code == 404
    assert links() == []


def test_the_hash_setting_stores_a_keyed_hash_never_the_account(make_pclient, flush, links):
    c = make_pclient(account_hash_key="hash-key-of-the-mall")
    cookie, vid = visit(c, "pageview")
    flush()
    assert identify(c, cookie).json() == {"linked": True, "hashed": True}
    [(linked_vid, stored)] = links()
    assert linked_vid == vid and stored.startswith("hmac:") and ACCOUNT not in stored
    assert stored == customers.account_key("hash-key-of-the-mall", ACCOUNT)
    assert stored != customers.account_key("another-key", ACCOUNT)
    assert c.get(f"{MALL}/me", headers={"cookie": f"bcn={cookie}"}).json()["accounts"] == [stored]
    events = c.get(f"{MALL}/api/v1/customers/events", params={"account": ACCOUNT}, headers=MALL_AUTH).json()
    assert [e["visitor_id"] for e in events["events"]] == [vid]


def test_me_forget_removes_every_linked_device_and_the_link(make_pclient, flush, rows, links, caplog):
    c = make_pclient()
    phone, phone_id = visit(c, "pageview", "add_to_cart")
    laptop, _ = visit(c, "pageview")
    _, stranger_id = visit(c, "other")
    flush()
    identify(c, phone)
    identify(c, laptop)
    with caplog.at_level(logging.INFO, logger="beacon.audit"):
        res = c.post(f"{MALL}/me/forget", headers={"cookie": f"bcn={laptop}"})
    assert res.json() == {"forgotten": 3, "accounts_unlinked": 1}
    assert [(r["visitor_id"], r["event"]) for r in rows()] == [(stranger_id, "other")]
    assert links() == []
    assert "account_hash=" in caplog.text and ACCOUNT not in caplog.text and phone_id not in caplog.text


def test_beacon_forget_account_from_the_cli(make_pclient, flush, rows, links, store, monkeypatch, capsys, caplog):
    c = make_pclient()
    phone, _ = visit(c, "pageview", "signup")
    _, stranger_id = visit(c, "other")
    flush()
    identify(c, phone)
    monkeypatch.setattr(cli, "_store", lambda s: store)  # the test session's real chDB engine
    with caplog.at_level(logging.INFO, logger="beacon.audit"):
        assert cli.main(["forget", "--account", ACCOUNT, "--secret-keys", KEY]) == 0
    assert "forgot 2 rows of 1 visitor ids" in capsys.readouterr().out
    assert [r["visitor_id"] for r in rows()] == [stranger_id] and links() == []
    assert ACCOUNT not in caplog.text
    assert cli.main(["forget", "--secret-keys", KEY]) == 2
    assert "exactly one of" in capsys.readouterr().err
