"""Beacon over real TLS for the browser tests, in its own process (chDB: one engine per process).

    python tests/browser/launcher.py CONFIG.json

CONFIG holds data_dir, port, certfile, keyfile, partners_file, site_origin, api_key,
secret_key and rows_port. Runs what `beacon up` runs (embedded Redis, migrate, a
Flusher thread, the app under uvicorn), with TLS, plus a test-only endpoint on
http://127.0.0.1:<rows_port>/rows?q=<substring> answering the stored rows whose URL
contains the substring, once the Redis stream is empty (every answered event flushed).
A POST /e without a cookie whose body holds `slowfirst` is held 0.5 s before Beacon
sees it (`slow_first`), so a test can send a second request while the first is in flight.
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
import uvicorn

from beacon import config
from beacon.app import create_app
from beacon.flusher import Flusher
from beacon.redis_server import EmbeddedRedis
from beacon.store import Store

COLUMNS = ("scope", "visitor_id", "mode", "event", "url", "referrer", "props", "transport", "is_bot")
COLUMNS += ("order_id", "toString(revenue) AS revenue", "currency", "coupon", "length(items) AS items")  # issue 12


def rows_server(port: int, store: Store, r: redis.Redis, stream: str) -> http.server.ThreadingHTTPServer:
    class Rows(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            q = parse_qs(parts.query).get("q", [""])[0]
            if parts.path != "/rows" or len(q) < 8:
                self.send_error(404)
                return
            deadline = time.monotonic() + 10
            while r.xlen(stream) and time.monotonic() < deadline:  # entries are deleted with their ack
                time.sleep(0.02)
            found = store.query(
                f"SELECT {', '.join(COLUMNS)} FROM {store.full_table} "
                "WHERE position(url, {q:String}) > 0 ORDER BY received_at, toUInt128(event_id)",
                {"q": q},
            )
            names = [c.split(" AS ")[-1] for c in COLUMNS]
            body = json.dumps([dict(zip(names, row)) for row in found], default=_plain).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Rows)
    threading.Thread(target=server.serve_forever, name="rows", daemon=True).start()
    return server


def slow_first(app: Any) -> Any:
    """Delay a cookie-less POST /e that mentions `slowfirst`, as a slow network would."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/e" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if b"slowfirst" in body and not any(k == b"cookie" for k, _ in scope["headers"]):
            await asyncio.sleep(0.5)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return wrapped


def _plain(value: object) -> object:
    if isinstance(value, (uuid.UUID, dt.datetime)):
        return str(value)
    raise TypeError(type(value).__name__)


def main(path: str) -> int:
    cfg = json.loads(Path(path).read_text())
    embedded = EmbeddedRedis(Path(cfg["data_dir"]))
    redis_url = embedded.start()
    try:
        s = config.load(
            {
                "data_dir": cfg["data_dir"],
                "redis_url": redis_url,
                "secret_keys": cfg["secret_key"],
                "mall_api_key": cfg["api_key"],
                "partners_file": cfg["partners_file"],
                "mall_hosts": "beacon.shop.test",
                "site_origins": cfg["site_origin"],
                "cookie_domain": "shop.test",
                "batch_age": "0.05",
                "log_level": "warning",
            },
            environ={},
        )
        store = Store(config.clickhouse_dsn(s), s.database, s.table, s.retention_days, s.dedup_window)
        store.migrate()
        r = redis.Redis.from_url(redis_url)
        flusher = Flusher(r, store, s.stream, "browser-tests", s.batch_rows, s.batch_age, s.claim_idle)
        thread = threading.Thread(target=flusher.run, name="flusher", daemon=True)
        thread.start()
        rows = rows_server(cfg["rows_port"], store, redis.Redis.from_url(redis_url), s.stream)
        server = uvicorn.Server(
            uvicorn.Config(
                slow_first(create_app(s, store)),
                host="127.0.0.1",
                port=cfg["port"],
                ssl_keyfile=cfg["keyfile"],
                ssl_certfile=cfg["certfile"],
                lifespan="on",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn re-raises into these after draining
            signal.signal(sig, lambda *_: None)
        server.run()
        rows.shutdown()
        flusher.stop()
        thread.join(10)
        store.close()
    finally:
        embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
