"""What enrichment adds to the pixel's own work, in-process, robust to a busy machine.

    python loadtests/enrich_cost.py [-n 5000] [--rounds 15]

Runs the same pixel request as hotpath.py, alternating in one process between the real
Enricher and one that derives nothing, and prints the fastest round of each (a busy
machine only ever adds time) and their ratio; then the cost of each derivation alone,
on a cache hit and on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import config  # noqa: E402
from beacon.app import create_app  # noqa: E402
from beacon.enrich import Enricher  # noqa: E402
from beacon.enrich.campaign import campaign  # noqa: E402
from loadtests.hotpath import KEY, QS, UA, Committed  # noqa: E402


class NoEnrichment:
    def client(self, addr: str, ua: str, is_bot: bool, precise: bool = True) -> bytes:
        return b""

    def event(self, url: str, referrer: str) -> bytes:
        return b""


async def rounds(n: int, count: int) -> dict[str, float]:
    s = config.load({"redis_url": "redis://127.0.0.1:1", "secret_keys": KEY}, environ={})
    app = create_app(s)
    app.core.buffer = Committed()
    real = app.core.enrich
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/p.gif",
        "query_string": QS,
        "client": ("81.2.69.142", 50000),
        "headers": [
            (b"host", b"beacon.shop.example"),
            (b"user-agent", UA),
            (b"accept", b"image/*"),
            (b"referer", b"https://shop.example/item/4242"),
        ],
    }

    async def receive() -> dict:
        return {"type": "http.request"}

    async def send(message: dict) -> None:
        return None

    best = {"with enrichment": float("inf"), "without": float("inf")}
    for _ in range(count):
        for label, enrich in (("without", NoEnrichment()), ("with enrichment", real)):
            app.core.enrich = enrich
            for _ in range(500):
                await app(scope, receive, send)
            t = time.perf_counter()
            for _ in range(n):
                await app(scope, receive, send)
            best[label] = min(best[label], (time.perf_counter() - t) / n * 1e6)
    return best


def per_call(fn, args_list: list[tuple], repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for _ in range(repeat):
        for a in args_list:
            fn(*a)
    return (time.perf_counter() - t) / (repeat * len(args_list)) * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    best = asyncio.run(rounds(args.n, args.rounds))
    for label, us in best.items():
        print(f"pixel {label:16s} {us:6.1f} us/request (fastest of {args.rounds} rounds of {args.n})")
    print(f"ratio with/without        {best['with enrichment'] / best['without']:6.3f}")
    e = Enricher(config.load({"secret_keys": KEY}, environ={}))
    ua = UA.decode()
    url = "https://shop.example/item/4242?colour=red"
    ref = "https://www.google.com/"
    e.client("81.2.69.142", ua, False)
    e.event(url, ref)
    print(f"client (geo+agent) hit    {per_call(e.client, [('81.2.69.142', ua, False)], 100_000):6.2f} us")
    print(f"event (source) hit        {per_call(e.event, [(url, ref)], 100_000):6.2f} us")
    print(f"event, no referrer        {per_call(e.event, [(url, '')], 100_000):6.2f} us")
    print(f"campaign, no utm_ in URL  {per_call(campaign, [(url,)], 100_000):6.2f} us")
    utm = url + "&utm_source=newsletter&utm_medium=email&utm_campaign=nov"
    print(f"event with utm_ (parsed)  {per_call(e.event, [(utm, ref)], 20_000):6.2f} us")
    addrs = [(e.geo, f"81.2.{i % 250}.{i % 200}") for i in range(5000)]
    print(f"geo miss (new address)    {per_call(e.geo.fields.__wrapped__, addrs):6.2f} us")
    uas = [(e.agents, ua + str(i), False) for i in range(500)]
    print(f"agent miss (new UA)       {per_call(e.agents.fields.__wrapped__, uas):6.2f} us")


if __name__ == "__main__":
    main()
