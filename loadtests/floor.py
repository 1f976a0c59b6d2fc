"""The floor: the cheapest pixel Python can serve, for the benchmark's row (d).

A bare ASGI callable (no framework, no cookie, no Redis, no event) answering every
request with the same 43-byte GIF and the same headers as Beacon's `GET /p.gif`, run by
the same server Beacon runs on (uvicorn, uvloop, httptools, no access log, no Server or
Date header). Beacon's pixel divided by this row is how much of the Python budget the
actual work (verify or mint the cookie, build and encode the event, group commit) costs.

    python loadtests/floor.py --port 8099 [--limited]

`--limited` serves it through Beacon's own protocol (beacon/http.py: header-read timeout,
header size limit, Host rules), so the cost of those protections is a row of its own.
"""

from __future__ import annotations

import argparse
from typing import Any

# Byte for byte beacon.routes.GIF (nginx's empty_gif); kept literal so this file
# imports nothing from Beacon.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x01\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x01\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x4c\x01\x00;"
)
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"image/gif"),
        (b"content-length", str(len(GIF)).encode()),
        (b"cache-control", b"no-store"),
        (b"cross-origin-resource-policy", b"cross-origin"),
    ],
}
BODY = {"type": "http.response.body", "body": GIF}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(START)
    await send(BODY)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--limited", action="store_true", help="use beacon.http.LimitedHttpToolsProtocol")
    args = parser.parse_args()
    http: Any = "httptools"
    if args.limited:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from beacon.http import LimitedHttpToolsProtocol

        http = LimitedHttpToolsProtocol  # its defaults are Beacon's: 15 s header timeout, 32 KiB of headers
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=http,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
