"""`beacon serve --workers 2` answers one `/metrics` that sums every worker's counts."""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import KEY, free_port

METRICS_KEY = "metrics-key-for-tests"
UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}


def start_serve(redis_url: str, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "PROMETHEUS_"))}
    env.update(
        {
            "BEACON_REDIS_URL": redis_url,
            "BEACON_SECRET_KEYS": KEY,
            "BEACON_DATA_DIR": str(data),
            "BEACON_CLICKHOUSE_URL": "http://127.0.0.1:1",
            "BEACON_COOKIE_SECURE": "false",
            "BEACON_METRICS_KEY": METRICS_KEY,
        }
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beacon", "serve", "--workers", "2", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(log.read_text())
        time.sleep(0.2)


def pixel_total(port: int) -> float:
    res = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=5)
    assert res.status_code == 200
    text = res.text
    match = re.search(r'^beacon_requests_total\{route="pixel",status="200"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def hit(port: int, n: int) -> None:
    def one(i: int) -> int:  # a new connection each time, so the kernel spreads them over the workers
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", f"/p.gif?u=https://shop.test/{i}", headers=UA)
            return conn.getresponse().status
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(n))) == {200}


def serving_workers(metrics_dir: Path) -> set[str]:
    """Pids whose own value file counts pixel requests (read with prometheus-client's merge)."""
    out = set()
    for f in metrics_dir.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(f)], accumulate=False):
            if any(s.name == "beacon_requests_total" and s.labels.get("route") == "pixel" and s.value > 0 for s in metric.samples):
                out.add(f.name.split("_")[1])
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_two_workers_answer_one_aggregated_metrics(redis_server, tmp_path) -> None:
    port = free_port()
    proc = start_serve(redis_server.url, tmp_path, port, tmp_path / "serve.log")
    try:
        sent = 0
        while len(serving_workers(tmp_path / "metrics")) < 2 and sent < 3000:  # a busy machine starts one late
            hit(port, 150)
            sent += 150
        # Both workers counted requests, and every scrape, whichever worker answers it, sums them.
        assert len(serving_workers(tmp_path / "metrics")) >= 2
        assert [pixel_total(port) for _ in range(12)] == [float(sent)] * 12
    finally:
        stop(proc)
    # A new run starts from zero: the old run's files were removed at start.
    proc = start_serve(redis_server.url, tmp_path, port, tmp_path / "serve.log")
    try:
        hit(port, 20)
        assert pixel_total(port) == 20.0
    finally:
        stop(proc)
