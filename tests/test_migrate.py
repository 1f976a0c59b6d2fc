"""`beacon migrate` brings a table made by the previous release up to date; old rows read ''."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from beacon.store import COLUMNS, Store

# The events table exactly as the release before enrichment created it (store.COLUMNS and
# Store.migrate as they were).
PREVIOUS = """CREATE TABLE IF NOT EXISTS {table} (
  `event_id` UUID,
  `received_at` DateTime64(3, 'UTC'),
  `scope` LowCardinality(String),
  `visitor_id` String,
  `mode` LowCardinality(String),
  `event` LowCardinality(String),
  `url` String,
  `referrer` String,
  `props` Map(LowCardinality(String), String),
  `ip` String,
  `user_agent` String,
  `is_bot` UInt8,
  `transport` LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (scope, received_at, event_id)
TTL toDateTime(received_at) + INTERVAL 395 DAY
SETTINGS non_replicated_deduplication_window = 1000"""
OLD_ROWS = (
    b'{"event_id":"01936a1e-0000-7000-8000-000000000001","received_at":"1764000000.000","scope":"mall",'
    b'"visitor_id":"v1","mode":"cookie","event":"pageview","url":"https://shop.test/?utm_source=x",'
    b'"referrer":"https://www.google.com/","props":{},"ip":"81.2.69.0","user_agent":"curl/8","is_bot":1,'
    b'"transport":"pixel"}\n'
    b'{"event_id":"01936a1e-0000-7000-8000-000000000002","received_at":"1764000001.000","scope":"mall",'
    b'"visitor_id":"v2","mode":"cookie","event":"add_to_cart","url":"https://shop.test/cart","referrer":"",'
    b'"props":{"sku":"X-1"},"ip":"8.8.8.0","user_agent":"","is_bot":0,"transport":"beacon"}\n'
)
NEW = [name for name, _ in COLUMNS[13:35]]  # enrichment (issue 11): strings, '' on old rows
COMMERCE = [name for name, _ in COLUMNS[35:]]  # issue 12: '' / 0 / [] on old rows


def test_the_previous_release_ends_with_transport_then_enrichment_then_commerce():
    assert [name for name, _ in COLUMNS[:13]][-1] == "transport" and len(NEW) == 22
    assert NEW[0] == "utm_source" and NEW[-1] == "city"
    assert COMMERCE == ["order_id", "revenue", "currency", "coupon", "items"]


def test_migrate_adds_the_new_columns_and_old_rows_read_empty(store):
    store.command("DROP DATABASE IF EXISTS beacon_prev")
    store.command("CREATE DATABASE beacon_prev")
    store.command(PREVIOUS.format(table="beacon_prev.events"))
    prev = Store(store.dsn, "beacon_prev", "events", 395, 1000)
    prev.insert_lines(OLD_ROWS, "old-release-batch")
    try:
        prev.migrate()
        prev.migrate()  # safe to repeat
        got = prev.query("SELECT name, type FROM system.columns WHERE database = 'beacon_prev' AND table = 'events' ORDER BY position")
        assert got == [(n, t) for n, t in COLUMNS]
        old = prev.query(f"SELECT visitor_id, event, props, {', '.join(NEW)} FROM beacon_prev.events ORDER BY visitor_id")
        assert old == [("v1", "pageview", {}, *[""] * 22), ("v2", "add_to_cart", {"sku": "X-1"}, *[""] * 22)]
        shop = prev.query("SELECT order_id, toString(revenue), currency, coupon, length(items) FROM beacon_prev.events")
        assert shop == [("", "0", "", "", 0)] * 2
        # a row of the new release lands beside them with its derived columns
        prev.insert_lines(
            OLD_ROWS.split(b"\n")[0][:-1].replace(b"-000000000001", b"-000000000003").replace(b'"v1"', b'"v3"')
            + b',"utm_source":"x","channel":"Unassigned","country":"GB"}\n',
            "new",
        )
        assert prev.query("SELECT utm_source, channel, country, browser FROM beacon_prev.events WHERE visitor_id = 'v3'") == [
            ("x", "Unassigned", "GB", "")
        ]
    finally:
        store.command("DROP DATABASE IF EXISTS beacon_prev")


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_beacon_migrate_command_upgrades_a_chdb_table_of_the_previous_release(tmp_path):
    dsn = f"chdb:///{tmp_path}/clickhouse"
    _python(f"""
        import clickhouse_connect
        c = clickhouse_connect.get_client(dsn={dsn!r})
        c.command("CREATE DATABASE prev")
        c.command({PREVIOUS.format(table="prev.events")!r})
        c.raw_insert("prev.events", None, {OLD_ROWS!r}, fmt="JSONEachRow")
        """)
    done = subprocess.run(
        [sys.executable, "-m", "beacon", "migrate", "--clickhouse-url", dsn, "--database", "prev"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = _python(f"""
        import clickhouse_connect
        c = clickhouse_connect.get_client(dsn={dsn!r})
        print(c.query("SELECT count(), countIf(source = '' AND channel = '' AND country = '' AND utm_source = '' "
                      "AND device = '' AND city = '') FROM prev.events").result_rows)
        print(len(c.query("SELECT name FROM system.columns WHERE database = 'prev' AND table = 'events'").result_rows))
        """)
    assert out.split() == ["[(2,", "2)]", str(len(COLUMNS))]
