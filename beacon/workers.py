"""`beacon serve --workers N`: uvicorn's worker supervisor, plus one `/metrics` for all workers.

prometheus-client's multiprocess mode keeps each worker's values in files under
PROMETHEUS_MULTIPROC_DIR; the directory is emptied before the workers start (stale files
of an earlier run would be summed in), and a worker that exits or dies is marked dead so
its live gauges leave the sum while its counters keep counting in the total.
"""

from __future__ import annotations

import os
from pathlib import Path

from uvicorn.supervisors import Multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(default: Path) -> Path:
    """Point prometheus-client at PROMETHEUS_MULTIPROC_DIR (default: `default`), created if
    missing, and remove the value files an earlier run left there (only those)."""
    path = Path(os.environ.get(MULTIPROC_ENV) or default)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class Workers(Multiprocess):
    """uvicorn's Multiprocess, marking every worker that is replaced or stopped as dead."""

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {p.pid for p in self.processes}:
            _mark_dead(pid)

    def join_all(self) -> None:
        super().join_all()
        for p in self.processes:
            _mark_dead(p.pid)


def _mark_dead(pid: int | None) -> None:
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus-client is untyped here
