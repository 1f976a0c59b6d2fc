"""Group commit against a real redis-server, including one that goes away."""

from __future__ import annotations

import asyncio
import logging
import subprocess

import httpx
import pytest
import redis

from beacon import config, metrics
from beacon.app import create_app
from beacon.redis_server import EmbeddedRedis
from beacon.routes import GIF

from .conftest import KEY


async def hit_concurrently(app, n: int, path: str = "/p.gif", **kw) -> list[httpx.Response]:
    await app.core.start()
    try:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as c:
            return await asyncio.gather(
                *(c.request(kw.get("method", "GET"), path, params={"p.n": str(i)}, content=kw.get("content")) for i in range(n))
            )
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
    s = config.load({"redis_url": server.url, "secret_keys": (KEY,), "data_dir": tmp_path, "redis_timeout": "0.2"}, environ={})
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


def lost_events() -> float:
    return metrics.EVENTS_LOST._value.get()


def outage_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "beacon.buffer" and ("not being stored" in r.getMessage() or "stored again" in r.getMessage())
    ]


def test_an_event_neither_redis_nor_a_full_spool_takes_is_answered_503_counted_and_logged_once(tmp_path, store, caplog):
    server = EmbeddedRedis(tmp_path / "r")
    server.start()
    server.stop()  # the socket path is known, nothing listens on it
    s = config.load(
        {"redis_url": server.url, "secret_keys": (KEY,), "data_dir": tmp_path, "redis_timeout": "0.2", "spool_max_bytes": "0"}, environ={}
    )
    app = create_app(s, store)
    lost = lost_events()
    caplog.set_level(logging.WARNING, logger="beacon.buffer")
    waves: list[list[httpx.Response]] = []

    async def run() -> None:  # one process lifetime: Redis goes, comes back, goes again
        await app.core.start()
        try:
            transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1))
            async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as c:

                async def wave(n: int, path: str = "/p.gif", body: bytes | None = None) -> None:
                    method = "GET" if body is None else "POST"
                    waves.append(await asyncio.gather(*(c.request(method, path, params={"p.n": str(i)}, content=body) for i in range(n))))

                await wave(5)
                await wave(5)
                await wave(2, "/e", b'[{"e":"x"},{"e":"y"}]')
                server.start()
                await wave(3)
                server.stop()
                await wave(4)
                server.start()
        finally:
            await app.core.stop()

    try:
        asyncio.run(run())
        down1, down2, posts, up, down3 = waves
        assert {p.status_code for p in down1 + down2 + down3} == {503}
        assert all(p.content == GIF and p.headers["content-type"] == "image/gif" for p in down1 + down2 + down3)
        assert {p.status_code for p in posts} == {503}
        assert "spool" in posts[0].json()["error"] and "full" in posts[0].json()["error"]
        assert {p.status_code for p in up} == {200}
        assert lost_events() == lost + 5 + 5 + 4 + 4
        said = outage_lines(caplog)  # one line per outage start and end, not one per request
        assert [("not being stored" in x, "stored again" in x) for x in said] == [(True, False), (False, True), (True, False)]
        r = redis.Redis.from_url(server.url)
        assert sum(int(f[b"n"]) for _, f in r.xrange("beacon:events")) == 3  # exactly the 2xx ones
        assert not list((tmp_path / "spool").glob("spool-*.log"))
    finally:
        server.stop()


def test_an_unwritable_spool_with_redis_down_refuses_and_stores_nothing(tmp_path, store):
    if subprocess.run(["chattr", "--help"], capture_output=True).returncode not in (0, 1):
        pytest.fail("chattr is needed to make the spool directory unwritable (root ignores modes)")
    server = EmbeddedRedis(tmp_path / "r")
    server.start()
    server.stop()
    spool = tmp_path / "spool"
    spool.mkdir()
    s = config.load({"redis_url": server.url, "secret_keys": (KEY,), "data_dir": tmp_path, "redis_timeout": "0.2"}, environ={})
    app = create_app(s, store)
    lost = lost_events()
    subprocess.run(["chattr", "+i", str(spool)], check=True)
    try:
        pixels = asyncio.run(hit_concurrently(app, 6))
        posts = asyncio.run(hit_concurrently(app, 1, path="/e", method="POST", content=b'{"e":"x"}'))
    finally:
        subprocess.run(["chattr", "-i", str(spool)], check=True)
    assert {p.status_code for p in pixels} == {503} and pixels[0].content == GIF
    assert posts[0].status_code == 503 and "not stored" in posts[0].json()["error"]
    assert lost_events() == lost + 7
    assert not list(spool.iterdir())


def test_with_group_commit_off_each_request_is_its_own_entry(make_settings, store, r, flush):
    # Generous timeouts: 40 connections opened at once on a busy machine are slow, and this
    # test is about the shape of the writes, not about timeouts.
    app = create_app(make_settings(group_commit="false", redis_timeout="10", commit_timeout="10"), store)
    assert {res.status_code for res in asyncio.run(hit_concurrently(app, 40))} == {200}
    assert r.xlen("beacon:events") == 40
    assert flush() == 40
