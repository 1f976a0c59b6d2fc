"""Beacon on a real Redis Cluster: 3 masters, 3 replicas, a stream in 3 shards, counted.

Six Debian redis-servers in cluster mode (`redis-cli --cluster create --cluster-replicas 1`)
on 127.0.0.1. A real `beacon serve` (BEACON_REDIS_CLUSTER=true, BEACON_STREAM_SHARDS=3)
takes numbered events while a flusher is SIGKILLed with a batch in flight and another
takes over, and the master of a shard is SIGKILLed and its replica promoted (CLUSTER
FAILOVER TAKEOVER, so the test does not wait for the cluster's node timeout), then
restarted (it rejoins as the new master's replica). Then every event answered 2xx must
be in ClickHouse exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
import redis.cluster

from beacon.keys import dead_letter_key, manifests_key, shard_streams

from .conftest import KEY, free_port
from .test_faults import Traffic, count_in_clickhouse, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
STREAMS = shard_streams("beacon:events", 3, tagged=True)


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port in taken or port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        taken.add(port)
        return port


class Node:
    def __init__(self, port: int, tmp: Path) -> None:
        self.port = port
        self.dir = tmp / f"redis-{port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=1)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",  # a replica's full sync starts at once (default: waits 5 s)
                "0",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.client.ping(), timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def node_id(self) -> str:
        return self.client.execute_command("CLUSTER MYID").decode()


class RedisCluster:
    def __init__(self, tmp: Path) -> None:
        taken: set[int] = set()
        self.nodes = [Node(cluster_port(taken), tmp) for _ in range(6)]

    @property
    def url(self) -> str:
        return ",".join(f"redis://127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.healthy, timeout=30)

    def healthy(self) -> bool:
        """Every slot served, and every master with a replica in sync (WAIT 1 can succeed)."""
        masters = 0
        for node in self.live():
            info = node.client.cluster("info")
            if info["cluster_state"] != "ok":
                return False
            repl = node.client.info("replication")
            if repl["role"] == "master":
                masters += 1
                if repl["connected_slaves"] < 1 or repl["slave0"]["state"] != "online":
                    return False
        return masters == 3

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def master_of(self, key: str) -> Node:
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=self.live()[0].port)
        try:
            port = client.get_node_from_key(key).port
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, master: Node) -> Node:
        ident = master.node_id()
        for node in self.live():
            if node is not master and node.client.info("replication").get("master_port") == master.port:
                return node
        raise AssertionError(f"no replica of {ident}")

    def fail_over(self, key: str) -> tuple[Node, Node]:
        """SIGKILL the master of `key`'s slot, promote its replica, restart the old master."""
        master = self.master_of(key)
        replica = self.replica_of(master)
        master.kill()
        replica.client.execute_command("CLUSTER FAILOVER TAKEOVER")
        wait_for(lambda: replica.client.info("replication")["role"] == "master", timeout=20)
        return master, replica

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
            node.client.close()


def cluster_client(cl: RedisCluster) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster(host="127.0.0.1", port=cl.live()[0].port, socket_timeout=5)


def test_redis_cluster_failover_and_flusher_kill_lose_nothing_and_double_nothing(tmp_path):
    cl = RedisCluster(tmp_path)
    web: subprocess.Popen[bytes] | None = None
    flusher: subprocess.Popen[bytes] | None = None
    logs = tmp_path / "logs"
    logs.mkdir()
    ch = tmp_path / "ch"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_")}
    env.update(
        {
            "BEACON_SECRET_KEYS": KEY,
            "BEACON_CLICKHOUSE_URL": f"chdb:///{ch}",
            "BEACON_LOG_LEVEL": "warning",
            "BEACON_REDIS_CLUSTER": "true",
            "BEACON_STREAM_SHARDS": "3",
        }
    )

    def start_flusher(consumer: str) -> subprocess.Popen[bytes]:
        with open(logs / f"flusher-{consumer}.log", "ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "beacon",
                    "flush",
                    "--consumer",
                    consumer,
                    "--lease",
                    "1",
                    "--batch-rows",
                    "300",
                    "--batch-age",
                    "0.3",
                ],
                env=env,
                stdout=log,
                stderr=log,
            )

    report: list[str] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        report.append(f"{time.monotonic() - t0:5.1f}s {what}")

    try:
        cl.start()
        env["BEACON_REDIS_URL"] = cl.url
        mark("cluster formed")
        rc = cluster_client(cl)
        with open(logs / "web.log", "ab") as log:
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "beacon",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(tmp_path / "web"),
                    "--redis-timeout",
                    "0.5",
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200)
        flusher = start_flusher("f1")
        mark("web up")
        with Traffic(port) as traffic:
            # A flusher SIGKILLed with a batch in flight (a manifest open in some shard).
            wait_for(lambda: any(rc.hlen(manifests_key(s)) for s in STREAMS), every=0.005)
            flusher.kill()
            flusher.wait()
            mark("flusher f1 killed with a batch in flight")
            flusher = start_flusher("f2")  # takes f1's batches over when f1's lease (1 s) lapses
            time.sleep(1.5)

            # The master of shard 0 is SIGKILLed under traffic and its replica promoted.
            old, new = cl.fail_over(STREAMS[0])
            mark(f"master :{old.port} killed, replica :{new.port} promoted")
            time.sleep(2)
            old.start()  # rejoins as the new master's replica: commits to shard 0 are replicated again
            wait_for(cl.healthy, timeout=30)
            mark(f"node :{old.port} back as a replica")
            time.sleep(1.5)
        assert web.poll() is None, (logs / "web.log").read_text()
        rc.close()
        rc = cluster_client(cl)
        # Drain: every shard's spool replayed, stream and manifests empty.
        spool = tmp_path / "web" / "spool"
        wait_for(lambda: not any(p.stat().st_size for p in spool.glob("shard-*/spool-*.log")), timeout=30)
        wait_for(lambda: all(rc.xlen(s) == 0 and rc.hlen(manifests_key(s)) == 0 for s in STREAMS), timeout=30)
        flusher.send_signal(signal.SIGTERM)
        assert flusher.wait(30) == 0
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0

        mark("drained and stopped")
        got = count_in_clickhouse(ch)
        answered = traffic.answered
        stored = got["n"]
        missing = sorted(answered - set(stored))
        mark(
            f"answered {len(answered)}, stored {got['count']}, unique event ids {got['uniq_event_id']}, "
            f"missing {len(missing)} {missing[:10]}, statuses {traffic.statuses}"
        )
        print("\n".join(report))
        assert len(answered) > 300
        assert got["count"] == len(answered)
        assert got["uniq_event_id"] == len(answered)
        assert set(stored) == answered
        # The failover did reach the web process: commits to the lost master went to the spool.
        assert "group commits go to the spool" in (logs / "web.log").read_text()
        assert all(rc.xlen(dead_letter_key(s)) == 0 for s in STREAMS)
        assert {status for _, status in traffic.statuses} <= {200, 204, 503}
        rc.close()
    finally:
        for proc in (web, flusher):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        cl.stop()
