"""ClickHouse: the events table, its migration, raw inserts and the report queries.

The same code runs against a ClickHouse server (`http(s)://`) and the in-process chDB
engine (`chdb:///path`); only the DSN differs. chDB allows one engine per process, so
a Store is shared by everything in the process and serialises calls with a lock.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.summary import QuerySummary

from beacon.columns import NO_SPARSE, Row, datetime_of, int_of

# The visits rollup's tables live beside the events table: migrated and forgotten with it.
# (beacon.query imports nothing of Beacon's that imports this module: no cycle.)
from beacon.query import copies, purchases, rollup

# A query parameter's value: str, int, datetime, list[str], ... bound by the client.
Param = object
Params = dict[str, Param]


COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "UUID"),
    ("received_at", "DateTime64(3, 'UTC')"),
    ("scope", "LowCardinality(String)"),
    ("visitor_id", "String"),
    ("mode", "LowCardinality(String)"),
    ("event", "LowCardinality(String)"),
    ("url", "String"),
    ("referrer", "String"),
    ("props", "Map(LowCardinality(String), String)"),
    ("ip", "String"),
    ("user_agent", "String"),
    ("is_bot", "UInt8"),
    ("transport", "LowCardinality(String)"),
    ("utm_source", "String"),
    ("utm_medium", "String"),
    ("utm_campaign", "String"),
    ("utm_term", "String"),
    ("utm_content", "String"),
    ("gclid", "String"),
    ("gbraid", "String"),
    ("wbraid", "String"),
    ("fbclid", "String"),
    ("msclkid", "String"),
    ("ttclid", "String"),
    ("li_fat_id", "String"),
    ("source", "LowCardinality(String)"),
    ("channel", "LowCardinality(String)"),
    ("browser", "LowCardinality(String)"),
    ("browser_version", "LowCardinality(String)"),
    ("os", "LowCardinality(String)"),
    ("os_version", "LowCardinality(String)"),
    ("device", "LowCardinality(String)"),
    ("country", "LowCardinality(String)"),
    ("region", "LowCardinality(String)"),
    ("city", "String"),
    # commerce (issue 12, beacon/commerce.py): exact amounts, never floats; '' / 0 / [] on other events
    ("order_id", "String"),
    ("revenue", "Decimal(18, 4)"),
    ("currency", "LowCardinality(String)"),
    ("coupon", "String"),
    ("items", "Array(Tuple(sku String, name String, category String, quantity UInt32, price Decimal(18, 4)))"),
)


# Every insert's settings. insert_distributed_sync (alias distributed_foreground_insert) makes
# an insert into a Distributed table return only once every shard holds its rows, each
# shard's part carrying the token (docs/cluster.md); a MergeTree target ignores it.
INSERT_SETTINGS: dict[str, str | int] = {
    "insert_deduplicate": 1,
    "insert_distributed_sync": 1,
    "input_format_skip_unknown_fields": 0,
    "input_format_parallel_parsing": 0,
    "max_insert_block_size": 100_000_000,
    "min_insert_block_size_rows": 0,
    "min_insert_block_size_bytes": 0,
}


def ttl_sql(retention_days: int) -> str:
    return f"toDateTime(received_at) + INTERVAL {int(retention_days)} DAY"


def create_table_sql(full_table: str, engine: str, retention_days: int, settings: str = "", on_cluster: str = "") -> str:
    """The events table's DDL; single-node migrate and `beacon migrate --cluster` both use it."""
    cols = ",\n  ".join(f"`{name}` {type_}" for name, type_ in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {full_table}{on_cluster} (\n  {cols}\n)\n"
        f"ENGINE = {engine}\n"
        "PARTITION BY toYYYYMM(received_at)\n"
        "ORDER BY (scope, received_at, event_id)\n"
        f"TTL {ttl_sql(retention_days)}" + (f"\nSETTINGS {settings}" if settings else "")
    )


def alter_table_sql(full_table: str, retention_days: int, on_cluster: str = "", ttl: bool = True) -> list[str]:
    """Columns added since the table was made, and the current retention."""
    out = [f"ALTER TABLE {full_table}{on_cluster} ADD COLUMN IF NOT EXISTS `{name}` {type_}" for name, type_ in COLUMNS]
    if ttl:
        out.append(f"ALTER TABLE {full_table}{on_cluster} MODIFY TTL {ttl_sql(retention_days)}")
    return out


def accounts_ddl(accounts_table: str, retention_days: int) -> str:
    """The account links of signed-in customers (beacon/customers.py), a table of their own.
    ReplacingMergeTree: identifying the same pair again keeps one row (read with DISTINCT until merged)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {accounts_table} (\n"
        "  `scope` LowCardinality(String),\n  `visitor_id` String,\n  `account` String,\n"
        "  `linked_at` DateTime64(3, 'UTC')\n)\nENGINE = ReplacingMergeTree(linked_at)\n"
        "ORDER BY (scope, visitor_id, account)\n"
        f"TTL toDateTime(linked_at) + INTERVAL {int(retention_days)} DAY\n"
        f"SETTINGS {NO_SPARSE}"
    )


class Store:
    def __init__(self, dsn: str, database: str, table: str, retention_days: int, dedup_window: int, cluster: str = "") -> None:
        self.dsn = dsn
        self.cluster = cluster  # set: `table` is a Distributed table over `<table>_local` on every shard
        self.database = database
        self.table = table
        self.full_table = f"{database}.{table}"
        self.accounts_table = f"{self.full_table}_accounts"  # signed-in customers' links (beacon/customers.py)
        self.retention_days = retention_days
        self.dedup_window = dedup_window
        self._lock = threading.Lock()
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            if self.dsn.startswith("chdb://"):
                self._client = clickhouse_connect.get_client(dsn=self.dsn)
            else:
                self._client = clickhouse_connect.get_client(dsn=self.dsn, connect_timeout=5, send_receive_timeout=60)
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def command(self, sql: str, parameters: Params | None = None) -> str | int | Sequence[str] | QuerySummary:
        with self._lock:
            return self.client.command(sql, parameters=parameters)

    def query(self, sql: str, parameters: Params | None = None) -> Sequence[Row]:
        with self._lock:
            rows: Sequence[Row] = self.client.query(sql, parameters=parameters).result_rows
            return rows

    def first_blocks(self) -> dict[str, int]:
        """partition id -> the first block number of the events table's active parts there. A TRUNCATE or a
        dropped partition changes it: the visits rollup and the copies (query/copies.py) notice by it."""
        return {
            str(pid): int_of(block)
            for pid, block in self.query(
                "SELECT partition_id, min(min_block_number) FROM system.parts WHERE database = {d:String} AND table = {t:String} "
                "AND active GROUP BY partition_id",
                {"d": self.database, "t": self.table},
            )
        }

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1") == [(1,)]
        except Exception:  # noqa: BLE001 - readiness only asks "does it answer"
            return False

    # -- schema ---------------------------------------------------------------

    def migrate(self) -> None:
        """Create or bring up to date the database and the events table; safe to repeat."""
        window = int(self.dedup_window)
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        settings = f"non_replicated_deduplication_window = {window}, {NO_SPARSE}"
        self.command(create_table_sql(self.full_table, "MergeTree", self.retention_days, settings))
        for sql in alter_table_sql(self.full_table, self.retention_days):
            self.command(sql)
        self.command(f"ALTER TABLE {self.full_table} MODIFY SETTING {settings}")  # a table of an earlier release: new parts
        self.command(accounts_ddl(self.accounts_table, self.retention_days))
        self.command(f"ALTER TABLE {self.accounts_table} MODIFY SETTING {NO_SPARSE}")
        rollup.migrate(self)  # the visits rollup and the day sums that keep it fresh
        purchases.migrate(self)  # the copy of the purchase events the commerce queries read
        copies.PROPS.migrate(self)  # and of the events carrying properties (the properties breakdown)

    # -- writes ---------------------------------------------------------------

    def insert_lines(self, body: bytes | Sequence[bytes], token: str) -> None:
        """Insert JSONEachRow bytes as they are; a retry with the same token is a no-op.

        Parsed serially into one block, so a malformed row fails the whole insert before
        anything is written (no partial insert that a split retry would duplicate).
        `body` may come in pieces (the flusher's batch): chDB's client writes them to its
        input file one by one, with no joined copy; over HTTP they are joined, so the client
        keeps its bytes body (which it may resend on a closed connection).
        """
        data: bytes | Iterator[bytes]
        if isinstance(body, bytes):
            data = body
        elif self.dsn.startswith("chdb://"):
            data = (piece for piece in body)
        else:
            data = b"".join(body)
        with self._lock:
            self.client.raw_insert(
                self.full_table, None, data, fmt="JSONEachRow", settings={**INSERT_SETTINGS, "insert_deduplication_token": token}
            )

    # -- reports --------------------------------------------------------------

    def stats(
        self, scope: str, start: dt.datetime, end: dt.datetime, interval: str, top: int = 10, include_bots: bool = False
    ) -> dict[str, object]:  # the JSON document of /api/v1/stats
        bucket = {"hour": "toStartOfHour", "day": "toStartOfDay"}[interval]
        in_range = "scope = {scope:String} AND received_at >= {start:DateTime64(3)} AND received_at < {end:DateTime64(3)}"
        where = in_range if include_bots else in_range + " AND is_bot = 0"
        params = {"scope": scope, "start": start, "end": end}
        bots = self.query(f"SELECT countIf(is_bot = 1) FROM {self.full_table} WHERE {in_range}", params)[0][0]
        series = self.query(
            f"SELECT {bucket}(received_at) AS t, count() AS events, countIf(event = 'pageview') AS pageviews, "
            f"uniqExactIf(visitor_id, visitor_id != '') AS visitors FROM {self.full_table} WHERE {where} "
            "GROUP BY t ORDER BY t",
            params,
        )
        totals = self.query(
            f"SELECT count(), countIf(event = 'pageview'), uniqExactIf(visitor_id, visitor_id != '') FROM {self.full_table} WHERE {where}",
            params,
        )[0]
        pages = self.query(
            f"SELECT url, count() AS c FROM {self.full_table} WHERE {where} AND event = 'pageview' "
            f"GROUP BY url ORDER BY c DESC, url LIMIT {int(top)}",
            params,
        )
        refs = self.query(
            f"SELECT referrer, count() AS c FROM {self.full_table} WHERE {where} AND referrer != '' "
            f"GROUP BY referrer ORDER BY c DESC, referrer LIMIT {int(top)}",
            params,
        )
        return {
            "scope": scope,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "interval": interval,
            "bots": "included" if include_bots else "excluded",
            "totals": {"events": totals[0], "pageviews": totals[1], "visitors": totals[2]},
            "bot_events": bots,
            "series": [
                {"t": datetime_of(t).replace(tzinfo=dt.timezone.utc).isoformat(), "events": e, "pageviews": p, "visitors": v}
                for t, e, p, v in series
            ],
            "top_pages": [{"url": u, "pageviews": c} for u, c in pages],
            "top_referrers": [{"referrer": r, "events": c} for r, c in refs],
        }

    PARTNER_COLUMNS = ("event_id", "received_at", "visitor_id", "event", "url", "referrer", "props", "mode", "is_bot")

    def events(
        self, scope: str, limit: int, before: tuple[int, str] | None = None, visitor: str | None = None, visitors: list[str] | None = None
    ) -> list[dict[str, object]]:  # JSON rows for the API, keyed by column
        """Rows of one scope (one visitor's, if given), newest first; `before` is the (ms, event_id)
        cursor of the last row seen."""
        cols = ", ".join(self.PARTNER_COLUMNS)
        params: Params = {"scope": scope}
        cursor = ""
        if visitor is not None:
            params["visitor"] = visitor
            cursor = "AND visitor_id = {visitor:String} "
        if visitors is not None:  # one customer's devices (beacon/customers.py)
            params["visitors"] = visitors
            cursor += "AND has({visitors:Array(String)}, visitor_id) "
        if before is not None:
            params["ms"], params["eid"] = before
            cursor += "AND (received_at, event_id) < (fromUnixTimestamp64Milli({ms:Int64}, 'UTC'), toUUID({eid:String})) "
        result = self.query(
            f"SELECT {cols}, toUnixTimestamp64Milli(received_at) FROM {self.full_table} "
            f"WHERE scope = {{scope:String}} {cursor}ORDER BY received_at DESC, event_id DESC LIMIT {int(limit)}",
            params,
        )
        out = []
        for row in result:
            item = dict(zip(self.PARTNER_COLUMNS, row[:-1]))
            item["event_id"] = str(item["event_id"])
            item["received_at"] = datetime_of(item["received_at"]).replace(tzinfo=dt.timezone.utc).isoformat()
            item["_ms"] = row[-1]
            out.append(item)
        return out

    def forget(self, scope: str, visitor: str) -> int:
        """Lightweight DELETE of one visitor's rows in one scope; return how many there were."""
        params: Params = {"scope": scope, "visitor": visitor}
        where = "scope = {scope:String} AND visitor_id = {visitor:String}"
        rows = self.query(f"SELECT count() FROM {self.full_table} WHERE {where}", params)[0][0]
        if rows:
            rollup.forget(self, scope, visitor)  # the visitor's visits and day sums go first
            target = f"{self.full_table}_local ON CLUSTER {self.cluster}" if self.cluster else self.full_table
            self.command(f"DELETE FROM {target} WHERE {where}", params)
            purchases.forget(self, scope, visitor)  # and the copy of its purchases
            copies.PROPS.forget(self, scope, visitor)  # and of its events carrying properties
        return int_of(rows)
