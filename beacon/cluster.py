"""`beacon migrate --cluster NAME`: the events table on a ClickHouse cluster.

Each shard holds `<table>_local`, a ReplicatedMergeTree whose Keeper path is
`/clickhouse/tables/{shard}/<db>/<table>_local` and replica name `{replica}` (macros
from each server's config). `<table>` is a Distributed table over them: web workers
and flushers use it exactly as they use the single-node table, with the same column
DDL (`store.create_table_sql`).

Exactly once through the Distributed table: the flusher's insert carries
`insert_deduplication_token` and `insert_distributed_sync = 1` (store.INSERT_SETTINGS),
so the INSERT returns only after every shard wrote its share, and each shard's write
carries the token. The sharding key is a function of the row (`cityHash64(event_id)`),
never `rand()`, so a retried batch splits into the same per-shard blocks, which each
shard's Replicated table recognises as seen (docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from beacon.columns import NO_SPARSE
from beacon.partners import Partner, row_policy_sql
from beacon.store import Store, alter_table_sql, create_table_sql

SHARDING_KEY = "cityHash64(event_id)"


def local_table(table: str) -> str:
    return f"{table}_local"


def replicated_engine(database: str, table: str) -> str:
    return f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/{local_table(table)}', '{{replica}}')"


def statements(
    cluster: str,
    database: str,
    table: str,
    retention_days: int,
    dedup_window: int,
    partners: Sequence[Partner] = (),
    engine: str | None = None,
    on_cluster: bool = True,
) -> list[str]:
    """Every statement of a cluster migration, in order; each safe to repeat.

    `engine` and `on_cluster=False` are for tests only: they run the statements on one
    chDB engine, which has no Keeper for ReplicatedMergeTree or distributed DDL.
    """
    on = f" ON CLUSTER {cluster}" if on_cluster else ""
    local = f"{database}.{local_table(table)}"
    dist = f"{database}.{table}"
    window = int(dedup_window)
    if engine is None:
        engine = replicated_engine(database, table)
        dedup = f"replicated_deduplication_window = {window}, {NO_SPARSE}"
    else:
        dedup = f"non_replicated_deduplication_window = {window}, {NO_SPARSE}"
    out = [
        f"CREATE DATABASE IF NOT EXISTS {database}{on}",
        create_table_sql(local, engine, retention_days, dedup, on),
        *alter_table_sql(local, retention_days, on),
        f"ALTER TABLE {local}{on} MODIFY SETTING {dedup}",
        f"CREATE TABLE IF NOT EXISTS {dist}{on} AS {local}\n"
        f"ENGINE = Distributed({cluster}, {database}, {local_table(table)}, {SHARDING_KEY})",
        *alter_table_sql(dist, retention_days, on, ttl=False),
    ]
    if partners:
        sql = row_policy_sql(list(partners), database, table, cluster)
        out += [line.rstrip(";") for line in sql.splitlines() if line and not line.startswith("--")]
    return out


def script(stmts: Sequence[str]) -> str:
    """Statements as a file for clickhouse-client --multiquery."""
    return "".join(s + ";\n\n" for s in stmts)


def migrate(store: Store, stmts: Sequence[str]) -> list[str]:
    """Run the statements in order; return the partner users created now (their passwords are
    in the statements, shown once by the caller). An existing user keeps its password."""
    existing = {row[0] for row in store.query("SELECT name FROM system.users")}
    created = []
    for sql in stmts:
        store.command(sql)
        if sql.startswith("CREATE USER IF NOT EXISTS "):
            name = sql.split()[5]
            if name not in existing:
                created.append(sql)
    return created
