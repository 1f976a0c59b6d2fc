"""Beacon with a seeded data set for the dashboard browser tests, in its own process (chDB).

    python tests/browser/dash_launcher.py CONFIG.json

CONFIG holds data_dir, port, partners_file, api_key, secret_key and seed (scope -> [rows,
visitors, id_prefix]). Seeds the events table (loadtests/seed.py), then serves the app on
plain http://127.0.0.1:<port> for the hosts shop.test (mall) and the partners' hosts.
SIGTERM stops it cleanly.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from pathlib import Path

import uvicorn

from beacon import config
from beacon.app import create_app
from beacon.redis_server import EmbeddedRedis
from beacon.store import Store
from loadtests.seed import seed


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
                "mall_hosts": "shop.test",
                "cookie_secure": "false",
                "log_level": "warning",
            },
            environ={},
        )
        store = Store(config.clickhouse_dsn(s), s.database, s.table, s.retention_days, s.dedup_window)
        store.migrate()
        now = dt.datetime.now(dt.timezone.utc)
        for scope, (rows, visitors, prefix) in cfg["seed"].items():
            seed(store, scope, rows, visitors, now, 40, prefix)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(s, store),
                host="127.0.0.1",
                port=cfg["port"],
                lifespan="on",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        server.run()
        store.close()
    finally:
        embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
