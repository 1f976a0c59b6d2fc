"""Who holds a data directory: the `beacon up` lock and chDB's own status file.

`beacon up` takes an exclusive `flock` on `<data_dir>/beacon.lock` before it touches
anything there (the Redis socket, the spool, chDB): a second `up` on the same
directory stops with the first one's pid. The kernel drops the lock when the process
dies, so a stale file never blocks a restart.

chDB (like a ClickHouse server) writes `status` with the owner's `PID:` in its data
path and refuses a second engine there with a bare BAD_ARGUMENTS; `chdb_holder`
reads that file so `beacon migrate` and `beacon forget` can name the process instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from beacon.config import ConfigError


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "beacon.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Raises ConfigError naming the holder when another process has the directory."""
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ConfigError(f"data dir {str(self.path.parent)!r} is not a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the process
        except OSError as exc:
            raise ConfigError(f"data dir {str(self.path.parent)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ConfigError(
                f"data dir {str(self.path.parent)!r} is in use by `beacon up` pid {holder}; stop it or use another --data-dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def _chdb_dir(dsn: str) -> str:
    return "/" + dsn.removeprefix("chdb://").split("?", 1)[0].lstrip("/")


def chdb_holder(dsn: str) -> str | None:
    """The pid named in the chDB directory's status file while another engine holds its lock."""
    if not dsn.startswith("chdb://"):
        return None
    status = Path(_chdb_dir(dsn)) / "status"
    try:
        f = open(status, "rb")  # noqa: SIM115 - closed below; never written
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # ClickHouse holds an exclusive flock on it while running
            first = f.read(200).decode(errors="replace").split("\n", 1)[0]
            return first.removeprefix("PID:").strip() or "unknown"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def check_chdb_free(dsn: str) -> None:
    """ConfigError naming the holder, before chDB itself would fail with a bare error."""
    pid = chdb_holder(dsn)
    if pid is not None:
        raise ConfigError(
            f"ClickHouse data {_chdb_dir(dsn)!r} is in use by pid {pid} "
            "(a running `beacon up`?); stop it, or run this through a ClickHouse server"
        )


def open_error(dsn: str, exc: Exception) -> ConfigError:
    """One line for a store that would not open: the holder of a chDB directory, or the error's first line."""
    try:
        check_chdb_free(dsn)
    except ConfigError as held:
        return held
    text = str(exc).strip()
    return ConfigError(f"ClickHouse {dsn.split('@')[-1]!r}: {text.splitlines()[0][:300] if text else repr(exc)}")
