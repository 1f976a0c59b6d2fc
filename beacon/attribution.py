"""Partner attribution: aggregate conversion counts for a partner's own clicks, off by default.

A partner's ad links to a mall page with its own click parameter (`click_param` in the
registry, e.g. `?adco_click=<its click id>`). The mall's pageview of that landing page is
a mall row like any other. A mall purchase (the first of its order_id, bots excluded) is
attributed to the partner when the buyer's last landing with any partner's click
parameter before it, within `attribution_window_days`, carries this partner's parameter
(last touch; ClickHouse ASOF JOIN over the mall's own rows).

What the partner gets is a count per day and nothing else: no visitor id, order id,
account, revenue, URL or click id, and a day whose count is below
`attribution_min_count` is left out (as is the total), so a partner that knows who
clicked cannot single out one person's purchase. The join happens inside Beacon on mall
rows; nothing about it is written to the partner's scope, cookie or sync redirect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TypedDict

from beacon.columns import int_of, str_of
from beacon.partners import Partner
from beacon.scope import MALL
from beacon.store import Store


class Day(TypedDict):
    date: str
    conversions: int


def conversions(
    store: Store, partners: Sequence[Partner], partner: Partner, start: dt.datetime, end: dt.datetime
) -> dict[str, object]:  # the JSON answer
    """{"days": [{"date", "conversions"}], "total"} for `partner`, counts under its minimum left out.

    The range is widened to whole UTC days, so narrowing it cannot isolate one purchase, and the
    total is the sum of the days shown, so subtracting cannot reveal a day left out."""
    start = dt.datetime.combine(start.date(), dt.time(), dt.timezone.utc)
    end_day = end.date() if end.time() == dt.time() else end.date() + dt.timedelta(days=1)
    end = dt.datetime.combine(end_day, dt.time(), dt.timezone.utc)
    params: dict[str, object] = {
        "mall": MALL,
        "start": start,
        "end": end,
        "me": partner.id,
        "window": int(partner.attribution_window_days) * 86400,
    }
    owners = []
    for i, p in enumerate(x for x in partners if x.click_param):
        params[f"param{i}"], params[f"owner{i}"] = p.click_param, p.id
        owners.append(f"extractURLParameter(url, {{param{i}:String}}) != '', {{owner{i}:String}}")
    if not owners:
        return {"from": start.isoformat(), "to": end.isoformat(), "days": [], "total": 0}
    touch_owner = f"multiIf({', '.join(owners)}, '')"
    t = store.full_table
    sql = (
        "SELECT toString(toDate(p_at)) AS day, count() AS n FROM ("
        "  SELECT order_id, argMin(visitor_id, (received_at, event_id)) AS visitor_id, min(received_at) AS p_at "
        f"  FROM {t} WHERE scope = {{mall:String}} AND event = 'purchase' AND is_bot = 0 AND order_id != '' "
        "  GROUP BY order_id HAVING p_at >= {start:DateTime64(3)} AND p_at < {end:DateTime64(3)}"
        ") AS purchases ASOF JOIN ("
        f"  SELECT visitor_id, received_at AS t_at, {touch_owner} AS owner FROM {t} "
        "  WHERE scope = {mall:String} AND event = 'pageview' AND visitor_id != '' AND owner != '' "
        "  AND received_at >= {start:DateTime64(3)} - toIntervalSecond({window:UInt32}) AND received_at < {end:DateTime64(3)}"
        ") AS touches ON purchases.visitor_id = touches.visitor_id AND purchases.p_at >= touches.t_at "
        "WHERE touches.owner = {me:String} AND dateDiff('second', touches.t_at, purchases.p_at) <= {window:UInt32} "
        "GROUP BY day ORDER BY day"
    )
    rows = store.query(sql, params)
    k = int(partner.attribution_min_count)
    days: list[Day] = [{"date": str_of(day), "conversions": int_of(n)} for day, n in rows if int_of(n) >= k]
    return {"from": start.isoformat(), "to": end.isoformat(), "days": days, "total": sum(d["conversions"] for d in days)}
