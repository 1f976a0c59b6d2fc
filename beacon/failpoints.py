"""Named crash points for the fault tests: `BEACON_FAILPOINT=<name>` makes the process
SIGKILL itself the first time it reaches `hit("<name>")`. Unset (always, in production),
`hit` is one attribute check. Used at batch granularity only, never per event.
"""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("BEACON_FAILPOINT", "")


def hit(name: str) -> None:
    if ARMED and ARMED == name:
        os.kill(os.getpid(), signal.SIGKILL)
