"""deploy/: what can be checked without Docker, a ClickHouse server or systemd as PID 1.

Checked here: the compose file parses and refers to files that exist, every BEACON_*
variable it and the env example set is a real setting, the ClickHouse and Keeper XML
parse and name the compose hosts, nginx accepts its config (`nginx -t`, throwaway cert),
`systemd-analyze verify` has nothing to say about the units, and the Redis Cluster node
config boots a redis-server in cluster mode. Not run: the compose stack itself.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import redis
import yaml

from beacon import config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SETTINGS = {o.env for o in config.OPTIONS}
# Every BEACON_* variable deploy/ names is a setting (Redis Cluster's included since issue 14, part 1).
NOT_YET_SETTINGS: set[str] = set()


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_the_whole_cluster_and_its_files_exist() -> None:
    services = compose()["services"]
    for name in (
        "keeper-1",
        "keeper-2",
        "keeper-3",
        "ch-s1-r1",
        "ch-s1-r2",
        "ch-s2-r1",
        "ch-s2-r2",
        *(f"redis-{i}" for i in range(1, 7)),
        "redis-init",
        "migrate",
        "web-1",
        "web-2",
        "flusher-1",
        "flusher-2",
        "nginx",
    ):
        assert name in services, name
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and not source.startswith("./tls"):
                assert (DEPLOY / source).exists(), source
    assert (DEPLOY / services["web-1"]["build"]["dockerfile"].removeprefix("deploy/")).exists()
    assert services["flusher-1"]["environment"]["BEACON_CONSUMER"] != services["flusher-2"]["environment"]["BEACON_CONSUMER"]


def test_every_beacon_variable_in_deploy_is_a_setting() -> None:
    names = set(re.findall(r"^(BEACON_[A-Z_]+)=", (DEPLOY / "beacon.env.example").read_text(), re.M))
    for service in compose()["services"].values():
        env = service.get("environment", {})
        names |= {k for k in env if k.startswith("BEACON_")}
    for unit in (DEPLOY / "systemd").glob("*.service"):
        names |= set(re.findall(r"^Environment=(BEACON_[A-Z_]+)=", unit.read_text(), re.M))
    assert names - SETTINGS == NOT_YET_SETTINGS


def test_clickhouse_cluster_config_names_the_compose_hosts() -> None:
    services = compose()["services"]
    cluster = ET.parse(DEPLOY / "clickhouse/config.d/beacon-cluster.xml").getroot()
    shards = cluster.findall("./remote_servers/beacon/shard")
    assert len(shards) == 2
    for shard in shards:
        assert shard.findtext("internal_replication") == "true"
        hosts = [r.findtext("host") for r in shard.findall("replica")]
        assert len(hosts) == 2 and all(h in services for h in hosts)
    assert cluster.find("./remote_servers/beacon/secret").get("from_env") == "CLICKHOUSE_CLUSTER_SECRET"
    keepers = [n.findtext("host") for n in cluster.findall("./zookeeper/node")]
    assert keepers == ["keeper-1", "keeper-2", "keeper-3"] and all(k in services for k in keepers)
    raft = ET.parse(DEPLOY / "clickhouse/keeper/keeper.xml").getroot().findall(".//raft_configuration/server")
    assert [s.findtext("hostname") for s in raft] == keepers
    ET.parse(DEPLOY / "clickhouse/users.d/beacon.xml")


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
def test_nginx_accepts_the_tls_front(tmp_path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=beacon.shop.example",
            "-keyout",
            tmp_path / "privkey.pem",
            "-out",
            tmp_path / "fullchain.pem",
        ],
        check=True,
        capture_output=True,
    )
    # Compose's service names resolve only inside compose: point the upstreams at loopback.
    conf = (DEPLOY / "nginx/beacon.conf").read_text().replace("/etc/nginx/tls", str(tmp_path))
    conf = conf.replace("web-1:8080", "127.0.0.1:18081").replace("web-2:8080", "127.0.0.1:18082")
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    (tmp_path / "beacon.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n  include {tmp_path}/beacon.conf;\n}}\n"
    )
    out = subprocess.run(["nginx", "-t", "-c", tmp_path / "nginx.conf", "-p", tmp_path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_units_verify_clean(tmp_path) -> None:
    beacon = shutil.which("beacon") or str(Path(__file__).resolve().parent.parent / ".venv/bin/beacon")
    units = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/beacon/.venv/bin/beacon", beacon)
        text = text.replace("/etc/beacon/beacon.env", str(DEPLOY / "beacon.env.example"))
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    assert len(units) == 3
    out = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, env={"SYSTEMD_LOG_LEVEL": "notice", "PATH": "/usr/bin:/bin"}
    )
    # Unknown keys are only warnings (exit 0): any output at all is a finding.
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "beacon" in ln]
    assert out.returncode == 0 and lines == [], out.stderr


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: Redis Cluster needs both."""
    while True:
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


def test_redis_cluster_node_config_boots_in_cluster_mode(tmp_path) -> None:
    port = cluster_port()
    with open(tmp_path / "redis.log", "wb") as log:
        proc = subprocess.Popen(
            ["redis-server", str(DEPLOY / "redis/redis-cluster.conf"), "--port", str(port), "--bind", "127.0.0.1"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        r = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "redis.log").read_text()
            try:
                info = r.info()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert info["cluster_enabled"] == 1
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)
