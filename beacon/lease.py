"""A flusher's lease: a Redis key that lives only while its flusher does.

Each flusher sets `<stream>:lease:<consumer>` with a time to live of `ttl` seconds and
renews it from a thread of its own every ttl/3, so a busy flusher (a long insert, a
ClickHouse outage) keeps its lease; a killed or frozen one loses it within `ttl`. Another
flusher that finds a consumer with pending entries and no lease takes its batches over
(XCLAIM, at least `ttl` idle so two takers cannot both win) instead of waiting for the
idle-claim timeout. A flusher that restarts under the same consumer name renews the
lease first and takes its own batches back at once.
"""

from __future__ import annotations

import logging
import threading
import uuid

from beacon.keys import lease_key
from beacon.rcluster import REDIS_ERRORS, SyncRedis

log = logging.getLogger("beacon.lease")


class Lease:
    def __init__(self, r: SyncRedis, stream: str, consumer: str, ttl: float) -> None:
        self.r = r
        self.key = lease_key(stream, consumer)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        self.r.set(self.key, self.token, px=self.ttl_ms)

    def start(self) -> None:
        try:
            self.renew()
        except REDIS_ERRORS as exc:
            log.warning("lease %s not set yet (%s); the heartbeat keeps trying", self.key, exc)
        self._thread = threading.Thread(target=self._beat, name="flusher-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.renew()
            except REDIS_ERRORS as exc:
                log.warning("lease %s not renewed: %s", self.key, exc)

    def stop(self) -> None:
        """On a clean stop the flusher has finished its batch: give the lease up at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            if self.r.get(self.key) == self.token.encode():
                self.r.delete(self.key)
        except REDIS_ERRORS:
            pass


def dead_consumers(r: SyncRedis, stream: str, group: str, me: str) -> list[str]:
    """Consumers of the group, other than `me`, that hold pending entries and no lease."""
    out = []
    for c in r.xinfo_consumers(stream, group):
        name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        if name != me and c["pending"] and not r.exists(lease_key(stream, name)):
            out.append(name)
    return out
