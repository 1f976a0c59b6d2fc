"""The audit trail of erasures: one log line each, naming a keyed hash of the id, never the id."""

from __future__ import annotations

import hashlib
import logging

log = logging.getLogger("beacon.audit")


def audit_id(secret: str, scope: str, visitor: str) -> str:
    return hashlib.sha256(f"{secret}\0{scope}\0{visitor}".encode()).hexdigest()[:16]
