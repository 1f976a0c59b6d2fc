"""A client event once validated: what the routes hand to identification and encoding."""

from __future__ import annotations

from typing import NamedTuple

from beacon.commerce import Fields


class CheckedEvent(NamedTuple):
    name: str
    url: str
    referrer: str
    props: dict[str, str]
    shop: Fields | None  # commerce fields (None unless a commerce event)
