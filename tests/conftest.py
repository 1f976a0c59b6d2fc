"""Real engines for every test: one redis-server and one chDB engine per test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from beacon import clock as clocks
from beacon import config
from beacon.app import create_app
from beacon.flusher import Flusher
from beacon.redis_server import EmbeddedRedis
from beacon.store import Store

KEY = "test-key-0123456789abcdef0123456789abcdef"
OLD_KEY = "old-key-fedcba9876543210fedcba9876543210"
API_KEY = "mall-api-key-for-tests"
PEER = "203.0.113.77"


# Debian programs the suite drives for real: the Redis Cluster test (redis-server, redis-cli) and
# the deploy test (nginx -t). On a fresh Debian machine run as root (as CI is) they are
# installed once here, as tests/test_browser.py installs Chromium.
DEBIAN = {"redis-server": "redis-server", "redis-cli": "redis-tools", "nginx": "nginx"}


def pytest_configure(config: pytest.Config) -> None:
    missing = sorted({pkg for cmd, pkg in DEBIAN.items() if not shutil.which(cmd)})
    if not missing or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(install, env=env, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(f"chdb:///{tmp_path_factory.mktemp('ch')}/clickhouse", "beacon_test", "events", 395, 1000)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def r(redis_server: EmbeddedRedis, store: Store) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    store.command(f"TRUNCATE TABLE {store.full_table}")
    yield client
    client.close()


@pytest.fixture
def make_settings(redis_server: EmbeddedRedis, tmp_path: Any) -> Any:
    def make(**overrides: Any) -> Any:
        base = {
            "redis_url": redis_server.url,
            "secret_keys": (KEY,),
            "mall_api_key": API_KEY,
            "database": "beacon_test",
            "data_dir": tmp_path,
        }
        base.update(overrides)
        return config.load(base, environ={})

    return make


@pytest.fixture
def make_client(make_settings: Any, store: Store, r: redis.Redis) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(clock: Any = clocks.system, **overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides), store, clock), base_url="https://shop.test", client=(PEER, 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client()


@pytest.fixture
def flush(r: redis.Redis, store: Store) -> Any:
    """Drain the stream into ClickHouse with a real Flusher; return rows inserted."""

    def run(stream: str = "beacon:events", consumer: str = "test-flusher") -> int:
        return Flusher(r, store, stream, consumer, batch_rows=10_000, batch_age=0.05, claim_idle=0).drain()

    return run


@pytest.fixture
def rows(store: Store) -> Any:
    cols = [
        "event_id",
        "received_at",
        "scope",
        "visitor_id",
        "mode",
        "event",
        "url",
        "referrer",
        "props",
        "ip",
        "user_agent",
        "is_bot",
        "transport",
    ]

    def fetch(where: str = "1") -> list[dict[str, Any]]:
        result = store.query(f"SELECT {', '.join(cols)} FROM {store.full_table} WHERE {where} ORDER BY received_at, toUInt128(event_id)")
        return [dict(zip(cols, row)) for row in result]

    return fetch


def with_partners(make_client: Any, tmp_path: Any, registry: str, **overrides: Any) -> Any:
    """An app client with `registry` as its partners file and shop.test as the mall's host."""
    path = tmp_path / "partners.toml"
    path.write_text(registry)
    return make_client(partners_file=str(path), mall_hosts="shop.test", **overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_beacon_up(data: Any, port: int, log_path: Any, cwd: Any = None, extra: tuple[str, ...] = ()) -> Any:
    """`python -m beacon up` in a subprocess, returned once /readyz answers 200."""
    import subprocess
    import sys
    import time

    import httpx

    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon", "up", "--data-dir", str(data), "--port", str(port), "--batch-age", "0.2", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    log.close()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(open(log_path).read())
        time.sleep(0.2)
