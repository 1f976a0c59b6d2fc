"""The local disk spool: where a group commit goes when Redis cannot take it.

Append-only files of records `MAGIC | length | n | crc32 | proc | seq | payload`, one
record per group commit, fsynced before the requests in it are answered, bounded in
total size. A replayer moves records into the Redis stream, in order, once Redis
answers again, with the same commit script as the live path: a record whose
(proc, seq) Redis already holds is skipped, so nothing is added twice, whether the
original write landed unseen or a replay died before removing its file. Each process
writes its own file and holds an flock on it; files of dead processes are replayed by
whoever finds them unlocked.

The replay of our own records never holds the append lock across Redis round trips:
the open file is sealed (appends go on into a fresh one, and `degraded` keeps every
batch in the spool meanwhile), replayed, and removed; the spool leaves `degraded` only
when, under the lock, no record of ours is left. So an append waits for a file switch,
never for a replay.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path

from beacon import metrics
from beacon.keys import COMMIT_LUA, marker_key
from beacon.rcluster import SyncCommit, SyncRedis

log = logging.getLogger("beacon.spool")

MAGIC = b"BSP2"
HEADER = struct.Struct(">4sIII32sQ")  # magic, payload length, line count, crc32(rest), proc, seq


class SpoolFull(RuntimeError):
    pass


def read_records(path: Path) -> list[tuple[int, bytes, int, bytes]]:
    """(n, proc, seq, payload) of every intact record; stops at the first torn or corrupt one."""
    out = []
    data = path.read_bytes()
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, length, n, crc, proc, seq = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if magic != MAGIC or end > len(data):
            break
        payload = data[pos + HEADER.size : end]
        if zlib.crc32(payload, zlib.crc32(proc + seq.to_bytes(8, "big"))) != crc:
            break
        out.append((n, proc, seq, payload))
        pos = end
    return out


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # guards the open file, the sealed list and `degraded`
        self._replaying = threading.Lock()  # one replay at a time
        # True from the first spooled batch until the replayer drained our files: meanwhile
        # every batch goes to the spool, so (proc, seq) reach Redis in order.
        self.degraded = False
        self._fd: int | None = None
        self._path: Path | None = None
        self._sealed: list[tuple[Path, int]] = []  # our files waiting for replay, oldest first (fd keeps the flock)
        self._name = uuid.uuid4().hex
        self._files = 0

    def _open(self) -> int:
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            # One name prefix per Spool and a counter: a process's files sort in the order they
            # were written, which is the order their (proc, seq) must reach Redis in.
            self._files += 1
            self._path = self.dir / f"spool-{self._name}-{self._files:08d}.log"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self._fd

    def size(self) -> int:
        total = 0
        for path in self.dir.glob("spool-*.log") if self.dir.exists() else ():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # replayed and removed since the listing (replay runs unlocked)
                continue
        return total

    def append(self, payload: bytes, n: int, proc: str, seq: int) -> None:
        """Durable on return (written and fsynced), or SpoolFull / OSError."""
        proc_b = proc.encode()
        crc = zlib.crc32(payload, zlib.crc32(proc_b + seq.to_bytes(8, "big")))
        record = HEADER.pack(MAGIC, len(payload), n, crc, proc_b, seq) + payload
        with self.lock:
            if self.size() + len(record) > self.max_bytes:
                metrics.SPOOL_FULL.inc()  # logged once per outage by the buffer
                raise SpoolFull(f"spool {self.dir} full ({self.max_bytes} bytes)")
            fd = self._open()
            os.write(fd, record)
            os.fsync(fd)
            self.degraded = True
        metrics.SPOOL_RECORDS.inc()
        metrics.SPOOL_EVENTS.inc(n)

    def pending(self) -> bool:
        return self.degraded or (self.dir.exists() and any(self.dir.glob("spool-*.log")))

    def replay(self, r: SyncRedis, stream: str, commit: SyncCommit | None = None) -> int:
        """Move every spooled record into Redis (sync client), in order; return events moved.

        `commit(keys=, args=)` is the live path's commit: the Lua script, or on Redis Cluster
        the script followed by a WAIT for a replica (beacon/rcluster.py)."""
        if commit is None:
            commit = r.register_script(COMMIT_LUA)
        keys = [stream, marker_key(stream)]
        moved = 0
        with self._replaying:
            r.ping()  # Redis down: raise before sealing, so an outage does not pile up files
            ours = {p for p, _ in self._sealed} | {self._path}
            paths = sorted(self.dir.glob("spool-*.log")) if self.dir.exists() else []
            for path in paths:
                if path in ours:
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
                    moved += self._replay_file(commit, keys, path)
                    path.unlink()
                finally:
                    os.close(fd)
            while True:
                with self.lock:
                    if self._path is not None:  # seal it: appends go on into a fresh file
                        self._sealed.append((self._path, self._fd))  # type: ignore[arg-type]
                        self._path = self._fd = None
                    if not self._sealed:  # nothing of ours left: batches may go to Redis again
                        self.degraded = False
                        return moved
                    path, fd = self._sealed[0]
                moved += self._replay_file(commit, keys, path)  # raises (file kept) if Redis fails
                path.unlink()
                os.close(fd)
                with self.lock:
                    self._sealed.pop(0)

    @staticmethod
    def _replay_file(commit: SyncCommit, keys: list[str], path: Path) -> int:
        moved = 0
        for n, proc, seq, payload in read_records(path):
            if commit(keys=keys, args=[proc.decode(), seq, payload, n]):
                moved += n
        metrics.SPOOL_REPLAYED.inc(moved)
        if moved:
            log.info("replayed %d spooled events from %s", moved, path.name)
        return moved

    def close(self) -> None:
        with self.lock:
            for _, fd in self._sealed:
                os.close(fd)
            self._sealed = []
            if self._fd is not None:
                os.close(self._fd)
                self._fd = self._path = None  # the files stay for the next start (or another process) to replay
