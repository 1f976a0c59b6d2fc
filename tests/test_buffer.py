"""Group commit against a real redis-server, including one that goes away."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from beacon import config
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


@pytest.fixture
def dead_redis(tmp_path):
    server = EmbeddedRedis(tmp_path)
    server.start()
    server.stop()  # the socket path is known, nothing listens on it
    return server.url


def test_with_redis_down_the_pixel_answers_the_gif_and_post_answers_503(dead_redis, store, tmp_path):
    s = config.load({"redis_url": dead_redis, "secret_keys": (KEY,), "commit_timeout": "0.5",
                     "data_dir": tmp_path}, environ={})
    app = create_app(s, store)
    pixels = asyncio.run(hit_concurrently(app, 5))
    assert {p.status_code for p in pixels} == {200}
    assert all(p.content[:6] == b"GIF89a" for p in pixels)
    posts = asyncio.run(hit_concurrently(app, 2, path="/e", method="POST", content=b'{"e":"x"}'))
    assert {p.status_code for p in posts} == {503}
    assert "not stored" in posts[0].json()["error"]


def test_with_group_commit_off_each_request_is_its_own_entry(make_settings, store, r, flush):
    app = create_app(make_settings(group_commit="false"), store)
    asyncio.run(hit_concurrently(app, 40))
    assert r.xlen("beacon:events") == 40
    assert flush() == 40
