"""Consent decides per scope and request what may be set and recorded (unit tests, no engines)."""

from __future__ import annotations

import asyncio

from beacon import config
from beacon.clock import ManualClock
from beacon.consent import Consent
from beacon.enums import ConsentMode
from beacon.routes import Request
from beacon.scope import Scope

MALL = Scope(id="mall", cookie_name="bcn")
PARTNER = Scope(id="a", cookie_name="a_uid", is_partner=True)


def req(**headers: str) -> Request:
    return Request([(k.encode(), v.encode()) for k, v in headers.items()])


def consent(**overrides: object) -> Consent:
    return Consent(config.load(overrides, environ={}))


def test_no_signal_means_the_cookie():
    assert consent().decide(MALL, req()) is ConsentMode.COOKIE
    assert consent().decide(PARTNER, req()) is ConsentMode.COOKIE


def test_gpc_makes_the_mall_cookieless_and_drops_the_partner():
    c = consent()
    assert c.decide(MALL, req(**{"sec-gpc": "1"})) is ConsentMode.COOKIELESS
    assert c.decide(PARTNER, req(**{"sec-gpc": "1"})) is ConsentMode.DROP


def test_modes_follow_the_settings():
    c = consent(mall_consent_mode="drop", partner_consent_mode="anonymous")
    assert c.decide(MALL, req(**{"sec-gpc": "1"})) is ConsentMode.DROP
    assert c.decide(PARTNER, req(**{"sec-gpc": "1"})) is ConsentMode.ANONYMOUS


def test_dnt_counts_only_when_respected():
    assert consent().decide(MALL, req(dnt="1")) is ConsentMode.COOKIE
    assert consent(respect_dnt=True).decide(MALL, req(dnt="1")) is ConsentMode.COOKIELESS


def test_an_opt_out_cookie_is_per_scope():
    c = consent()
    assert c.decide(PARTNER, req(cookie="a_uid_optout=1")) is ConsentMode.DROP
    assert c.decide(MALL, req(cookie="a_uid_optout=1")) is ConsentMode.COOKIE  # another scope's opt-out
    assert c.decide(MALL, req(cookie="bcn_optout=1")) is ConsentMode.COOKIELESS


def test_cookieless_ids_are_stable_within_a_day_and_change_with_it():
    clock = ManualClock(1_750_000_000.0)
    c = Consent(config.load(environ={}), clock=clock)  # no Redis: a per-process salt

    def vid(ip: str = "203.0.113.0") -> str:
        return asyncio.run(c.cookieless_id(MALL, ip, "UA"))

    first = vid()
    assert vid() == first and vid("198.51.100.0") != first
    clock.advance(86400)
    assert vid() != first
