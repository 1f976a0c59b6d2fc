"""Beacon's closed sets, each declared once: consent modes, transports, and why an event was not stored.

They are `StrEnum`s, so a member is its own string in SQL, JSON and metric labels; metric
label values and the README's list of reasons are generated from these classes.
"""

from __future__ import annotations

import re
import sys
from enum import StrEnum
from pathlib import Path


class ConsentMode(StrEnum):
    """How an event was identified; stored in the `mode` column."""

    COOKIE = "cookie"  # identified by the scope's signed cookie
    COOKIELESS = "cookieless"  # mall only: daily-salted hash, no cookie
    ANONYMOUS = "anonymous"  # counted, no visitor id
    DROP = "drop"  # no cookie, no event


class Transport(StrEnum):
    """Which endpoint carried an event; stored in the `transport` column."""

    PIXEL = "pixel"  # GET /p.gif
    BEACON = "beacon"  # POST /e (navigator.sendBeacon, fetch)


class Reason(StrEnum):
    """Why an event that reached Beacon was not recorded: `beacon_events_rejected_total{reason=...}`."""

    CONSENT = "consent"
    INVALID = "invalid"
    INVALID_COMMERCE = "invalid_commerce"
    QUERY_TOO_LONG = "query_too_long"
    BOT = "bot"
    DEAD_LETTER = "dead_letter"
    HTTP_400 = "http_400"
    HTTP_403 = "http_403"
    HTTP_405 = "http_405"
    HTTP_413 = "http_413"
    HTTP_415 = "http_415"
    HTTP_503 = "http_503"

    @classmethod
    def for_status(cls, status: int) -> Reason:
        return cls(f"http_{status}")

    @property
    def help(self) -> str:
        return REASON_HELP[self]


REASON_HELP: dict[Reason, str] = {
    Reason.CONSENT: "GPC, DNT or an opt-out asked for it and the scope's consent mode is `drop`.",
    Reason.INVALID: "A pixel event that failed validation (the GIF is still served).",
    Reason.INVALID_COMMERCE: "A pixel commerce event whose fields failed validation (the GIF is still served).",
    Reason.QUERY_TOO_LONG: "A pixel query longer than `BEACON_MAX_QUERY_BYTES`, or a request target the server cut short.",
    Reason.BOT: "A known bot, with `BEACON_DROP_BOTS` on.",
    Reason.DEAD_LETTER: "ClickHouse refused the row; it waits in the dead-letter stream.",
    Reason.HTTP_400: "`POST /e`: malformed body or an invalid event.",
    Reason.HTTP_403: "`POST /e`: the page's origin is not allowed.",
    Reason.HTTP_405: "`POST /e`: wrong method.",
    Reason.HTTP_413: "`POST /e`: body or batch too large.",
    Reason.HTTP_415: "`POST /e`: wrong content type.",
    Reason.HTTP_503: "Not made durable (Redis and the spool both failed); the client may retry.",
}


def markdown_reasons() -> str:
    """The README's list of rejection reasons, generated from `Reason`."""
    return "\n".join(f"- `{r.value}`: {r.help}" for r in Reason)


def rewrite_readme(path: Path) -> None:
    """Replace what lies between the README's `reasons` markers with `markdown_reasons()`."""
    text = path.read_text()
    path.write_text(
        re.sub(
            r"(<!-- reasons:begin[^>]*-->\n).*?(<!-- reasons:end -->)",
            lambda m: m.group(1) + markdown_reasons() + "\n" + m.group(2),
            text,
            flags=re.S,
        )
    )


if __name__ == "__main__":  # rewrite the list of rejection reasons in README.md
    rewrite_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
