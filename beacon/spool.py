"""The local disk spool: where a group commit goes when Redis cannot take it.

Append-only files of records `MAGIC | length | n | crc32 | payload`, one record per
group commit, fsynced before the requests in it are answered, bounded in total size.
A replayer moves records into the Redis stream once Redis answers again. Each record
has an id (`<file uuid>:<offset>`) that is added to a Redis set in the same MULTI as its
XADD, so a replay that crashes before it truncates the file never adds a record twice.
Each process writes its own file and holds an flock on it; files of dead processes
are replayed by whoever finds them unlocked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from beacon import metrics

log = logging.getLogger("beacon.spool")

MAGIC = b"BSP1"
HEADER = struct.Struct(">4sIII")  # magic, payload length, line count, crc32(payload)


class SpoolFull(RuntimeError):
    pass


def read_records(path: Path) -> list[tuple[int, int, bytes]]:
    """(offset, n, payload) of every intact record; stops at the first torn or corrupt one."""
    out = []
    data = path.read_bytes()
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, n, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if magic != MAGIC or end > len(data):
            break
        payload = data[pos + HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        out.append((pos, n, payload))
        pos = end
    return out


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # appends and the replay of our own file exclude each other
        self._fd: int | None = None
        self._path: Path | None = None
        self._last_full_log = 0.0

    def _open(self) -> int:
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._path = self.dir / f"spool-{uuid.uuid4().hex}.log"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self._fd

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("spool-*.log")) if self.dir.exists() else 0

    def append(self, payload: bytes, n: int) -> None:
        """Durable on return (written and fsynced), or SpoolFull / OSError."""
        record = HEADER.pack(MAGIC, len(payload), n, zlib.crc32(payload)) + payload
        with self.lock:
            if self.size() + len(record) > self.max_bytes:
                metrics.SPOOL_FULL.inc()
                if time.monotonic() - self._last_full_log > 10:
                    self._last_full_log = time.monotonic()
                    log.error("spool %s is full (%d bytes max): events are being lost", self.dir, self.max_bytes)
                raise SpoolFull(f"spool full ({self.max_bytes} bytes)")
            fd = self._open()
            os.write(fd, record)
            os.fsync(fd)
        metrics.SPOOL_RECORDS.inc()
        metrics.SPOOL_EVENTS.inc(n)

    def replay(self, r: Any, stream: str) -> int:
        """Move every spooled record into Redis (sync client); return events moved."""
        if not self.dir.exists():
            return 0
        moved = 0
        for path in sorted(self.dir.glob("spool-*.log")):
            if path == self._path:
                with self.lock:  # no append meanwhile; the next append opens a fresh file
                    moved += self._replay_file(r, stream, path)
                    os.close(self._fd)  # type: ignore[arg-type]
                    self._fd = self._path = None
                    path.unlink()
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process owns it and replays it itself
            try:
                moved += self._replay_file(r, stream, path)
                path.unlink()
            finally:
                os.close(fd)
        return moved

    def _replay_file(self, r: Any, stream: str, path: Path) -> int:
        moved = 0
        done_key = f"{stream}:spool-replayed"
        for offset, n, payload in read_records(path):
            record_id = f"{path.name}:{offset}"
            if r.sismember(done_key, record_id):
                continue
            pipe = r.pipeline(transaction=True)
            pipe.xadd(stream, {"d": payload, "n": n})
            pipe.sadd(done_key, record_id)
            pipe.expire(done_key, 7 * 86400)
            pipe.execute()
            moved += n
        metrics.SPOOL_REPLAYED.inc(moved)
        if moved:
            log.info("replayed %d spooled events from %s", moved, path.name)
        return moved

    def pending(self) -> bool:
        return self.dir.exists() and any(self.dir.glob("spool-*.log"))

    def close(self) -> None:
        with self.lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None  # the file stays for the next start (or another process) to replay
