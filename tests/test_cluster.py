"""`beacon migrate --cluster`: every statement parses in ClickHouse, the ones chDB can run
run, and an insert through the Distributed table keeps its deduplication token.

Not run here (no ClickHouse server, no Keeper): ReplicatedMergeTree, ON CLUSTER
(distributed DDL), CREATE USER / GRANT / ROW POLICY. docs/cluster.md names them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from beacon import cluster
from beacon.partners import Partner
from beacon.store import Store

PARTNER = Partner(id="adco", name="AdCo", hosts=("ads.adco.example",), origins=(), sync_allow=(), cookie_name="adco_uid", api_key_sha256="")


def test_every_cluster_statement_parses_in_clickhouse(store: Store) -> None:
    stmts = cluster.statements("beacon", "beacon", "events", 395, 1000, [PARTNER])
    assert stmts[0] == "CREATE DATABASE IF NOT EXISTS beacon ON CLUSTER beacon"
    for sql in stmts:
        formatted = store.query("SELECT formatQuery({sql:String})", {"sql": sql})[0][0]
        assert "ON CLUSTER beacon" in formatted, sql
    text = "\n".join(stmts)
    assert "ReplicatedMergeTree('/clickhouse/tables/{shard}/beacon/events_local', '{replica}')" in text
    assert "ENGINE = Distributed(beacon, beacon, events_local, cityHash64(event_id))" in text
    for table in ("events", "events_local"):
        assert (
            f"CREATE ROW POLICY OR REPLACE beacon_partner_adco_scope ON CLUSTER beacon ON beacon.{table} "
            "FOR SELECT USING scope = 'adco' TO beacon_partner_adco" in text
        )


def test_migrate_print_shows_the_statements_and_runs_nothing(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "beacon", "migrate", "--cluster", "beacon", "--print", "--clickhouse-url", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("CREATE DATABASE IF NOT EXISTS beacon ON CLUSTER beacon;\n")
    assert out.stdout.count(";\n") == len(cluster.statements("beacon", "beacon", "events", 395, 100000))


def test_migrate_print_without_cluster_is_one_clear_line() -> None:
    out = subprocess.run([sys.executable, "-m", "beacon", "migrate", "--print"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["beacon: --print shows the statements of `migrate --cluster NAME`; give --cluster"]


# A cluster of one local shard: chDB resolves Distributed inserts to it in-process.
CONFIG = """<clickhouse>
  <tcp_port>9000</tcp_port>
  <remote_servers><beacon><shard><internal_replication>true</internal_replication>
    <replica><host>localhost</host><port>9000</port></replica></shard></beacon></remote_servers>
</clickhouse>"""

SCRIPT = textwrap.dedent("""
    import json, sys
    from chdb.state import sqlitelike
    from beacon import cluster
    from beacon.store import INSERT_SETTINGS
    conn = sqlitelike.connect(f"///{sys.argv[1]}/db?config-file={sys.argv[1]}/config.xml")
    q = lambda sql: str(conn.query(sql, "TSV")).strip()
    stmts = cluster.statements("beacon", "beacon", "events", 395, 1000, engine="MergeTree", on_cluster=False)
    for _ in range(2):  # twice: every statement is safe to repeat
        for sql in stmts:
            q(sql)
    rows = "\\n".join(json.dumps({"event_id": f"00000000-0000-4000-8000-{i:012d}",
                                  "received_at": "2026-11-25 10:00:00.000", "scope": "mall"}) for i in range(500))
    def insert(token):
        settings = ", ".join(f"{k} = {v!r}" for k, v in {**INSERT_SETTINGS, "insert_deduplication_token": token}.items())
        q(f"INSERT INTO beacon.events SETTINGS {settings} FORMAT JSONEachRow\\n" + rows)
    for _ in range(3):  # the same batch, the same token: a flusher's retry
        insert("t1")
    once = q("SELECT count() FROM beacon.events")
    insert("t2")  # the token decides, not the rows: another token is another batch
    print(json.dumps({"once": once, "dist": q("SELECT count() FROM beacon.events"),
                      "local": q("SELECT count() FROM beacon.events_local"),
                      "engine": q("SELECT engine_full FROM system.tables WHERE name = 'events'")}))
""")


def test_cluster_ddl_runs_and_a_retried_insert_through_distributed_lands_once(tmp_path) -> None:
    (tmp_path / "config.xml").write_text(CONFIG)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["once"] == "500"
    assert got["dist"] == got["local"] == "1000"
    assert got["engine"].replace("\\'", "'").startswith("Distributed('beacon', 'beacon', 'events_local', cityHash64(event_id))")
