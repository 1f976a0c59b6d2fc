"""Beacon under a realistic traffic mix: the operators' load test.

    pip install -e '.[load]'
    BEACON_MALL_API_KEY=$(cat .beacon/mall_api_key) \\
      locust -f loadtests/locustfile.py --headless -u 200 -r 20 -t 5m --stop-timeout 10 \\
             --host http://127.0.0.1:8080

Users (weights are relative, override with BEACON_LOAD_WEIGHT_<CLASS>=n):

- MallVisitor (10): browses the mall. Each user keeps its own cookie jar, so its first
  pixel mints a visitor id (Set-Cookie) and the following ones are a returning visitor;
  after a visit of a few pages it either comes back later (keeps the jar) or is replaced
  by a new visitor (clears the jar). Page loads are `GET /p.gif` with `u=`, `r=` and
  `p.*` properties, and a browser User-Agent.
- ScriptedVisitor (4): the same visitor as seen by page scripts: `navigator.sendBeacon`
  batches, `POST /e` with a text/plain JSON array of 1-20 events, cookie included.
- Operator (1): reads `GET /api/v1/stats` with `Authorization: Bearer $BEACON_MALL_API_KEY`.
  Not run when BEACON_MALL_API_KEY is unset.
- PartnerPixel (1 per partner, 0 without partners): partner pixels by the path form;
  BEACON_LOAD_PARTNERS="id1,id2" turns it on.

Thresholds (headless runs exit 1 when one is broken, 0 otherwise):

- BEACON_LOAD_MAX_FAIL_RATIO (default 0): largest share of failed requests, 0..1.
- BEACON_LOAD_MAX_P99_MS (default 500): largest p99 response time over all requests.

Events counted: every pixel answered 200 counts one event, every `POST /e` answered 204
counts the events it carried. Mall events are printed at the end and, when
BEACON_LOAD_COUNT_FILE is set, written there as JSON ({"events": n, ...}); `events`
is what the mall's `/api/v1/stats` totals must reach once the flusher caught up
(partner events are counted apart: they land in the partners' scopes, not the mall's).
In distributed mode the workers report their counts to the master, which writes the file.

Run with `--stop-timeout` (a few seconds) so a request in flight when the time is up is
answered and counted rather than cut off: a cut-off pixel may still be recorded.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, between, events, task

log = logging.getLogger("beacon.load")

MALL_API_KEY = os.environ.get("BEACON_MALL_API_KEY", "").strip()
PARTNERS = [p.strip() for p in os.environ.get("BEACON_LOAD_PARTNERS", "").split(",") if p.strip()]
MAX_FAIL_RATIO = float(os.environ.get("BEACON_LOAD_MAX_FAIL_RATIO", "0"))
MAX_P99_MS = float(os.environ.get("BEACON_LOAD_MAX_P99_MS", "500"))
COUNT_FILE = os.environ.get("BEACON_LOAD_COUNT_FILE", "")
SITE = os.environ.get("BEACON_LOAD_SITE", "https://shop.example").rstrip("/")


def weight(name: str, default: int) -> int:
    return int(os.environ.get(f"BEACON_LOAD_WEIGHT_{name.upper()}", default))


# -- what the events look like --------------------------------------------------------

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
]
EXTERNAL_REFERRERS = [
    "",
    "",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.instagram.com/",
    "https://news.example/deals",
]
CATEGORIES = ["shoes", "bags", "jackets", "kids", "garden", "kitchen", "sale"]
SCRIPT_EVENTS = ["view_item", "add_to_cart", "remove_from_cart", "scroll", "click", "video_play", "begin_checkout"]


def page() -> tuple[str, dict[str, str]]:
    """A mall page and the properties its pixel carries."""
    kind = random.random()
    if kind < 0.5:
        item = random.randrange(1, 20_000)
        return f"{SITE}/item/{item}", {"p.sku": f"SKU-{item}", "p.category": random.choice(CATEGORIES)}
    if kind < 0.8:
        cat = random.choice(CATEGORIES)
        return f"{SITE}/c/{cat}?page={random.randint(1, 5)}", {"p.category": cat}
    if kind < 0.95:
        return f"{SITE}/search?q={random.choice(CATEGORIES)}", {"p.results": str(random.randint(0, 400))}
    return f"{SITE}/", {}


def script_event(url: str) -> dict[str, Any]:
    name = random.choice(SCRIPT_EVENTS)
    props: dict[str, Any] = {"sku": f"SKU-{random.randrange(1, 20_000)}"}
    if name in ("add_to_cart", "remove_from_cart"):
        props.update(qty=random.randint(1, 3), price=round(random.uniform(5, 300), 2))
    elif name == "scroll":
        props = {"depth": random.choice([25, 50, 75, 100])}
    elif name == "video_play":
        props["autoplay"] = random.random() < 0.3
    return {"e": name, "u": url, "r": f"{SITE}/", "p": props}


# -- the count of events that were answered as stored -----------------------------------


class Counter:
    def __init__(self) -> None:
        self.pixel = 0
        self.beacon = 0
        self.partners: dict[str, int] = {}
        self.new_cookies = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.pixel + self.beacon,
            "pixel_events": self.pixel,
            "beacon_events": self.beacon,
            "partner_events": dict(self.partners),
            "cookies_minted": self.new_cookies,
        }

    def add(self, other: dict[str, Any]) -> None:
        self.pixel += other.get("pixel_events", 0)
        self.beacon += other.get("beacon_events", 0)
        self.new_cookies += other.get("cookies_minted", 0)
        for pid, n in other.get("partner_events", {}).items():
            self.partners[pid] = self.partners.get(pid, 0) + n


COUNT = Counter()


# -- users --------------------------------------------------------------------------


class _Visitor(FastHttpUser):
    """A browser: its own cookie jar and User-Agent.

    The jar is kept here rather than in the HTTP client's CookieJar: Beacon's cookies are
    `Secure`, and a browser on https sends them back while a jar on a plain-http test host
    would not; this jar returns every cookie it was given, like the browser would.
    """

    abstract = True

    def on_start(self) -> None:
        self.new_visitor()

    def new_visitor(self) -> None:
        self.jar: dict[str, str] = {}
        self.ua = random.choice(USER_AGENTS)
        self.pages_left = random.randint(1, 8)
        self.current = page()[0]

    def end_of_page(self) -> None:
        """After a visit: come back later as the same visitor, or make room for a new one."""
        self.pages_left -= 1
        if self.pages_left <= 0:
            if random.random() < 0.6:
                self.new_visitor()
            else:
                self.pages_left = random.randint(1, 8)

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"User-Agent": self.ua, **extra}
        if self.jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        return h

    def keep_cookies(self, resp: Any) -> None:
        """Store what Set-Cookie says (a Max-Age=0 removes); count the cookies minted."""
        values = resp.headers.get_all("set-cookie") if hasattr(resp.headers, "get_all") else None
        if values is None:
            one = resp.headers.get("set-cookie")
            values = [one] if one else []
        for value in values:
            name, _, rest = value.partition("=")
            val, _, attrs = rest.partition(";")
            if "max-age=0" in attrs.lower().replace(" ", ""):
                self.jar.pop(name.strip(), None)
            else:
                self.jar[name.strip()] = val.strip()
                COUNT.new_cookies += 1

    def pixel(self, path: str, referrer: str, props: dict[str, str], name: str) -> bool:
        """One page load's pixel for `self.current`; True when answered with the GIF."""
        query = {"u": self.current, "r": referrer, **props}
        with self.client.get(
            f"{path}?{urlencode(query)}", headers=self.headers(Referer=self.current), name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200 or not (resp.content or b"").startswith(b"GIF89a"):
                resp.failure(f"pixel answered {resp.status_code}")
                return False
            self.keep_cookies(resp)
            resp.success()
            return True


class MallVisitor(_Visitor):
    weight = weight("MallVisitor", 10)
    wait_time = between(0.5, 3)

    @task
    def view_page(self) -> None:
        referrer = self.current if self.pages_left < 8 and random.random() < 0.7 else random.choice(EXTERNAL_REFERRERS)
        self.current, props = page()
        if self.pixel("/p.gif", referrer, props or {"p.view": "home"}, "GET /p.gif"):
            COUNT.pixel += 1
        self.end_of_page()


class ScriptedVisitor(_Visitor):
    weight = weight("ScriptedVisitor", 4)
    wait_time = between(1, 5)

    @task
    def send_beacon(self) -> None:
        self.current = page()[0]
        batch = [script_event(self.current) for _ in range(random.randint(1, 20))]
        with self.client.post(
            "/e",
            data=json.dumps(batch, separators=(",", ":")),
            headers=self.headers(**{"Content-Type": "text/plain;charset=UTF-8", "Referer": self.current}),
            name="POST /e",
            catch_response=True,
        ) as resp:
            if resp.status_code != 204:
                resp.failure(f"POST /e answered {resp.status_code}: {(resp.text or '')[:200]}")
                return
            self.keep_cookies(resp)
            resp.success()
        COUNT.beacon += len(batch)
        self.end_of_page()


class Operator(FastHttpUser):
    """Reads the mall's numbers the way a dashboard does. Needs BEACON_MALL_API_KEY."""

    abstract = not MALL_API_KEY
    weight = weight("Operator", 1)
    wait_time = between(5, 15)

    @task(3)
    def last_day_by_hour(self) -> None:
        self.stats({"interval": "hour"}, "GET /api/v1/stats (24h, hour)")

    @task(1)
    def last_month_by_day(self) -> None:
        import datetime as dt

        today = dt.date.today()
        self.stats({"interval": "day", "from": (today - dt.timedelta(days=30)).isoformat()}, "GET /api/v1/stats (30d, day)")

    def stats(self, params: dict[str, str], name: str) -> None:
        with self.client.get(
            f"/api/v1/stats?{urlencode(params)}", headers={"Authorization": f"Bearer {MALL_API_KEY}"}, name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"stats answered {resp.status_code}")
                return
            body = json.loads(resp.content or b"{}")
            if "totals" not in body:
                resp.failure("stats without totals")
                return
            resp.success()


# Partner pixels, by the path form `GET /partners/<id>/p.gif` on the mall host, for every
# id in BEACON_LOAD_PARTNERS (ids must exist in Beacon's BEACON_PARTNERS_FILE, or Beacon
# answers 404 and the run fails). Each user keeps its own jar, so a partner cookie is
# minted once and then returned. Events land in the partner's scope and are counted under
# "partner_events", not the mall's "events". Not covered yet: the Host-header form,
# partner sendBeacon batches, sync redirects, and partner API reads.
class PartnerPixel(_Visitor):
    abstract = not PARTNERS
    weight = weight("PartnerPixel", len(PARTNERS))
    wait_time = between(1, 5)

    @task
    def partner_pixel(self) -> None:
        pid = random.choice(PARTNERS)
        self.current, props = page()
        if self.pixel(f"/partners/{pid}/p.gif", random.choice(EXTERNAL_REFERRERS), props or {"p.slot": "top"}, "GET /partners/[id]/p.gif"):
            COUNT.partners[pid] = COUNT.partners.get(pid, 0) + 1
        self.end_of_page()


# -- thresholds and the count ------------------------------------------------------


@events.report_to_master.add_listener
def _report_count(client_id: str, data: dict[str, Any]) -> None:
    data["beacon_count"] = COUNT.as_dict()
    COUNT.__init__()  # reported: the master keeps the sum


@events.worker_report.add_listener
def _sum_count(client_id: str, data: dict[str, Any]) -> None:
    COUNT.add(data.get("beacon_count", {}))


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        return  # the master judges and writes the count
    total = environment.stats.total
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    if total.fail_ratio > MAX_FAIL_RATIO:
        problems.append(f"fail ratio {total.fail_ratio:.4f} > BEACON_LOAD_MAX_FAIL_RATIO {MAX_FAIL_RATIO}")
    p99 = total.get_response_time_percentile(0.99) or 0
    if p99 > MAX_P99_MS:
        problems.append(f"p99 {p99:.0f} ms > BEACON_LOAD_MAX_P99_MS {MAX_P99_MS:g}")
    counted = COUNT.as_dict()
    log.info("beacon events answered as stored: %s", json.dumps(counted))
    print(f"beacon events answered as stored: {json.dumps(counted)}", flush=True)
    if COUNT_FILE:
        with open(COUNT_FILE, "w") as f:
            json.dump(counted, f)
    if problems:
        for p in problems:
            log.error("threshold broken: %s", p)
            print(f"threshold broken: {p}", flush=True)
        environment.process_exit_code = 1
    elif environment.process_exit_code is None:
        environment.process_exit_code = 0
