"""Scope resolution: the Host (or the /partners/<id> prefix) decides the cookie world, nothing else."""

from __future__ import annotations

from beacon.scope import MALL, Resolver, Scope

MALL_SCOPE = Scope(id=MALL, cookie_name="bcn")
PARTNER = Scope(id="a", cookie_name="a_uid", is_partner=True, cookie_samesite="None")


def resolver(mall_hosts: tuple[str, ...] = ("shop.test",)) -> Resolver:
    return Resolver(MALL_SCOPE, mall_hosts, (PARTNER,), {"ads.a.test": "a"})


def test_host_names_resolve_to_their_scope_case_and_port_blind():
    r = resolver()
    assert r.resolve("shop.test", "/p.gif") == (MALL_SCOPE, "/p.gif")
    assert r.resolve("SHOP.test:8443", "/p.gif")[0] is MALL_SCOPE
    assert r.resolve("ads.a.test", "/p.gif") == (PARTNER, "/p.gif")


def test_an_unknown_host_is_not_served_when_mall_hosts_are_set():
    assert resolver().resolve("evil.test", "/p.gif") == (None, "/p.gif")


def test_any_host_is_the_mall_when_mall_hosts_are_empty():
    assert resolver(()).resolve("10.0.0.5:8080", "/p.gif")[0] is MALL_SCOPE


def test_the_partner_prefix_on_the_mall_host_gives_a_path_scoped_partner_cookie():
    sc, path = resolver().resolve("shop.test", "/partners/a/p.gif")
    assert sc is not None and sc.id == "a" and path == "/p.gif"
    assert sc.cookie_path == "/partners/a/" and sc.cookie_domain == ""


def test_an_unknown_partner_prefix_is_not_served():
    assert resolver().resolve("shop.test", "/partners/zz/p.gif")[0] is None


def test_a_partner_host_cannot_reach_the_mall_or_another_partner_by_path():
    sc, path = resolver().resolve("ads.a.test", "/partners/b/p.gif")
    assert sc is PARTNER and path == "/partners/b/p.gif"  # no scope switch on a partner host
