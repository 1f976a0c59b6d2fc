"""A client event once validated: what the routes hand to identification and encoding."""

from __future__ import annotations

from typing import Any, NamedTuple


class CheckedEvent(NamedTuple):
    name: str
    url: str
    referrer: str
    props: dict[str, str]
    shop: dict[str, Any] | None  # commerce fields (None unless a commerce event); Any: JSON values (amounts, items)
