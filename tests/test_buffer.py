"""Group commit against a real redis-server, including one that goes away."""

from __future__ import annotations

import asyncio

import httpx
import redis

from beacon import config, metrics
from beacon.app import create_app
from beacon.redis_server import EmbeddedRedis

from .conftest import KEY


async def hit_concurrently(app, n: int, path: str = "/p.gif", **kw) -> list[httpx.Response]:
    await app.core.start()
    try:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as c:
            return await asyncio.gather(*(c.request(kw.get("method", "GET"), path, params={"p.n": str(i)},
                                                    content=kw.get("content")) for i in range(n)))
    finally:
        await app.core.stop()


def test_concurrent_requests_share_redis_writes_and_every_event_lands(make_settings, store, r, flush):
    app = create_app(make_settings(), store)
    responses = asyncio.run(hit_concurrently(app, 300))
    assert all(res.status_code == 200 for res in responses)
    entries = r.xrange("beacon:events")
    assert sum(int(f[b"n"]) for _, f in entries) == 300
    assert len(entries) < 300 / 5  # group commit: many requests per XADD
    assert flush() == 300
    assert store.query(f"SELECT uniqExact(props['n']) FROM {store.full_table}") == [(300,)]


def test_a_group_never_exceeds_commit_max_lines(make_settings, store, r):
    app = create_app(make_settings(commit_max_lines="7"), store)
    asyncio.run(hit_concurrently(app, 100))
    sizes = [int(f[b"n"]) for _, f in r.xrange("beacon:events")]
    assert sum(sizes) == 100 and max(sizes) <= 7


def test_with_redis_down_answers_come_from_the_spool_and_reach_redis_when_it_is_back(tmp_path, store):
    server = EmbeddedRedis(tmp_path / "r")
    server.start()
    server.stop()  # the socket path is known, nothing listens on it
    s = config.load({"redis_url": server.url, "secret_keys": (KEY,), "data_dir": tmp_path,
                     "redis_timeout": "0.2"}, environ={})
    app = create_app(s, store)
    pixels = asyncio.run(hit_concurrently(app, 20))
    assert {p.status_code for p in pixels} == {200}
    posts = asyncio.run(hit_concurrently(app, 3, path="/e", method="POST", content=b'[{"e":"x"},{"e":"y"}]'))
    assert {p.status_code for p in posts} == {204}
    spooled = list((tmp_path / "spool").glob("spool-*.log"))
    assert spooled and sum(f.stat().st_size for f in spooled) > 0
    server.start()  # Redis is back: the next start of the app replays the spool
    try:
        asyncio.run(hit_concurrently(app, 1))
        r = redis.Redis.from_url(server.url)
        assert sum(int(f[b"n"]) for _, f in r.xrange("beacon:events")) == 20 + 6 + 1
        assert not list((tmp_path / "spool").glob("spool-*.log"))
    finally:
        server.stop()


def test_with_redis_and_the_spool_down_the_pixel_still_answers_and_post_gets_503(tmp_path, store):
    server = EmbeddedRedis(tmp_path / "r")
    server.start()
    server.stop()
    s = config.load({"redis_url": server.url, "secret_keys": (KEY,), "data_dir": tmp_path,
                     "redis_timeout": "0.2", "spool_max_bytes": "0"}, environ={})
    app = create_app(s, store)
    lost = metrics.EVENTS_LOST._value.get()
    pixels = asyncio.run(hit_concurrently(app, 5))
    assert {p.status_code for p in pixels} == {200}
    assert all(p.content[:6] == b"GIF89a" for p in pixels)
    assert metrics.EVENTS_LOST._value.get() == lost + 5
    posts = asyncio.run(hit_concurrently(app, 2, path="/e", method="POST", content=b'{"e":"x"}'))
    assert {p.status_code for p in posts} == {503}
    assert "spool full" in posts[0].json()["error"]


def test_with_group_commit_off_each_request_is_its_own_entry(make_settings, store, r, flush):
    app = create_app(make_settings(group_commit="false"), store)
    asyncio.run(hit_concurrently(app, 40))
    assert r.xlen("beacon:events") == 40
    assert flush() == 40
