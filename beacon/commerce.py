"""Commerce events: which they are, what each carries, and the checks made on ingest.

The fields live in their own columns of the events table (store.COLUMNS: `order_id`,
`revenue`, `currency`, `coupon`, `items`), so the flusher still inserts lines as they are.
Amounts are exact: a decimal string (or the shortest repr of a JSON number) checked
against the currency's minor unit from the ISO 4217 table the `iso4217` package ships,
stored as `Decimal(18, 4)`; no binary float ever holds money.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TypedDict

import orjson
from iso4217 import Currency

from beacon.event import Invalid, clean_text

EVENTS = frozenset({"product_view", "add_to_cart", "remove_from_cart", "begin_checkout", "purchase", "refund"})
NEEDS_ORDER = frozenset({"purchase", "refund"})
FIELDS = ("order_id", "revenue", "currency", "coupon", "items")
ITEM_FIELDS = ("sku", "name", "category", "quantity", "price")
MAX_ITEMS = 50
MAX_QUANTITY = 1_000_000
MAX_ID = 128
MAX_TEXT = 256

# Money currencies only: ISO 4217 codes with a minor unit (not gold, SDR, test or "no currency").
MINOR_UNITS: dict[str, int] = {c.code: c.exponent for c in Currency if c.exponent is not None and c.code != "XTS"}
_AMOUNT = re.compile(r"(\d{1,14})(?:\.(\d{1,4}))?")
_PIXEL_ITEM = re.compile(r"i\.(\d{1,2})\.(sku|name|category|quantity|price)")


class Item(TypedDict):
    """One line of an order, checked: amounts are exact decimal strings."""

    sku: str
    name: str
    category: str
    quantity: int
    price: str


class Fields(TypedDict, total=False):
    """The commerce columns of one event, as `check` returns them (a field left out is stored empty)."""

    order_id: str
    revenue: str
    currency: str
    coupon: str
    items: list[Item]


def _text(value: object, field: str, limit: int, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise Invalid(f"{field} is required")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string")
    text = clean_text(value, limit + 1).strip()
    if len(text) > limit:
        raise Invalid(f"{field} longer than {limit} characters")
    if required and not text:
        raise Invalid(f"{field} is required")
    return text


def amount(value: object, field: str, currency: str) -> str:
    """A non-negative amount as an exact decimal string with at most the currency's minor digits."""
    if isinstance(value, bool) or value is None:
        raise Invalid(f'{field} must be a decimal string like "19.99" or a number')
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)  # the shortest repr: the digits the sender wrote, never the binary expansion
        if text.endswith(".0"):
            text = text[:-2]
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise Invalid(f'{field} must be a decimal string like "19.99" or a number')
    m = _AMOUNT.fullmatch(text)
    if not m:
        raise Invalid(f"{field} {text[:40]!r} must be a non-negative decimal with a '.' point (at most 14 digits before it)")
    digits = MINOR_UNITS[currency]
    if m.group(2) and len(m.group(2).rstrip("0")) > digits:
        raise Invalid(f"{field} {text!r} has more decimals than {currency} has minor units ({digits})")
    return str(Decimal(text).quantize(Decimal(1).scaleb(-digits))) if digits else str(Decimal(text).to_integral_value())


def check(name: str, raw: Mapping[str, object]) -> Fields:
    """The typed fields of commerce event `name` from `raw` (JSON or pixel), checked; Invalid otherwise.

    In POST /e they sit at the event's top level or in its "c" object (what beacon.js sends)."""
    if "c" in raw:
        c = raw["c"]
        if not isinstance(c, dict):
            raise Invalid("c (the commerce fields) must be an object")
        raw = c
    out: Fields = {}
    order_id = _text(raw.get("order_id"), "order_id", MAX_ID, required=name in NEEDS_ORDER)
    if order_id:
        out["order_id"] = order_id
    items_raw = raw.get("items")
    has_price = isinstance(items_raw, list) and any(isinstance(i, dict) and i.get("price") not in (None, "") for i in items_raw)
    currency = raw.get("currency")
    code = ""  # the checked currency; amounts are only read once there is one
    revenue = raw.get("revenue")
    if name in NEEDS_ORDER and revenue in (None, ""):
        raise Invalid("revenue is required")
    if currency in (None, ""):
        if revenue not in (None, "") or has_price:
            raise Invalid("currency is required with revenue or prices")
    else:
        if not isinstance(currency, str) or currency not in MINOR_UNITS:
            raise Invalid(f"currency {str(currency)[:10]!r} is not an ISO 4217 currency code (upper case, e.g. EUR)")
        out["currency"] = code = currency
    if revenue not in (None, ""):
        out["revenue"] = amount(revenue, "revenue", code)
    coupon = _text(raw.get("coupon"), "coupon", MAX_ID)
    if coupon:
        out["coupon"] = coupon
    if items_raw is None:
        items_raw = []
    if not isinstance(items_raw, list):
        raise Invalid("items must be a list of objects")
    if len(items_raw) > MAX_ITEMS:
        raise Invalid(f"too many items: {len(items_raw)} > {MAX_ITEMS}")
    items: list[Item] = []
    for i, item in enumerate(items_raw):
        if not isinstance(item, dict):
            raise Invalid(f"items[{i}] must be an object")
        unknown = set(item) - set(ITEM_FIELDS)
        if unknown:
            raise Invalid(f"items[{i}]: unknown fields {sorted(unknown)}; use {', '.join(ITEM_FIELDS)}")
        quantity = item.get("quantity", 1)
        if isinstance(quantity, str) and quantity.isdigit():
            quantity = int(quantity)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
            raise Invalid(f"items[{i}].quantity must be a whole number 1..{MAX_QUANTITY}")
        price = item.get("price")
        items.append(
            {
                "sku": _text(item.get("sku"), f"items[{i}].sku", MAX_ID, required=True),
                "name": _text(item.get("name"), f"items[{i}].name", MAX_TEXT),
                "category": _text(item.get("category"), f"items[{i}].category", MAX_TEXT),
                "quantity": quantity,
                "price": "0" if price in (None, "") else amount(price, f"items[{i}].price", code),
            }
        )
    if items:
        out["items"] = items
    return out


def from_pixel(params: dict[str, str]) -> dict[str, object]:
    """Pixel parameters (order_id, revenue, currency, coupon, i.<n>.<field>) -> the raw fields `check` takes."""
    raw: dict[str, object] = {k: v for k, v in params.items() if k in FIELDS}  # str, or the list of items
    items: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        m = _PIXEL_ITEM.fullmatch(key)
        if m:
            items.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key not in FIELDS:
            raise Invalid(f"unknown commerce parameter {key[:40]!r}")
    if items:
        raw["items"] = [items[n] for n in sorted(items)]
    return raw


def splice(line: bytes, fields: Fields | None) -> bytes:
    """The encoded event line with the commerce columns added (two JSON objects joined); as it is without any."""
    if not fields:
        return line
    return line[:-1] + b"," + orjson.dumps(fields)[1:]


def without_fields(props: dict[str, str]) -> dict[str, str]:
    """Custom properties of a commerce event, less the typed fields beacon.js also leaves in them."""
    return {k: v for k, v in props.items() if k not in FIELDS} if any(k in FIELDS for k in props) else props
