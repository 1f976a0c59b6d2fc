"""A throwaway TLS certificate and the two static sites the browser visits.

- `https://shop.test:<page_port>/t/<token>/...`: the mall's page (every path under
  `/t/<token>/` is the same single-page app), embedding beacon.js from Beacon's mall
  host and the partner's ad in an iframe;
- `https://ads.a.test:<ad_port>/ad.html?t=<token>`: the partner's ad, which loads the
  partner pixel and runs beacon.js (the partner's own copy, `/beacon.js`) with
  `data-partner` and `data-endpoint` pointing at Beacon's partner host.

The token is in every URL the events carry, so each test finds its own rows.
"""

from __future__ import annotations

import datetime as dt
import html
import http.server
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("shop.test", "*.shop.test", "ads.a.test")
SCRIPT = Path(__file__).resolve().parents[2] / "beacon" / "static" / "beacon.js"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for NAMES, valid for a day; (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


MALL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Mall {token}</title>
<script>window.beacon=window.beacon||function(){{(beacon.q=beacon.q||[]).push(arguments)}};
beacon("event","queued_before_load",{{n:1}});</script>
<script async src="https://beacon.shop.test:{beacon_port}/beacon.js"></script>
</head><body><h1>Mall</h1>
<iframe src="{ad_url}" width="300" height="250" title="ad"></iframe>
</body></html>"""

AD_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Ad</title>
<img src="https://ads.a.test:{beacon_port}/p.gif?e=impression&amp;u={ad_url_q}" alt="" width="1" height="1">
<script async src="/beacon.js" data-endpoint="https://ads.a.test:{beacon_port}" data-partner="a"></script>
<p>An ad</p></html>"""


class Site:
    """The mall page server (host shop.test) and the ad server (host ads.a.test), both TLS."""

    def __init__(self, certfile: Path, keyfile: Path, beacon_port: int) -> None:
        self.beacon_port = beacon_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self.page_port = self._serve(self._mall)
        self.ad_port = self._serve(self._ad)

    @property
    def page_origin(self) -> str:
        return f"https://shop.test:{self.page_port}"

    @property
    def ad_origin(self) -> str:
        return f"https://ads.a.test:{self.ad_port}"

    def page_url(self, token: str, rest: str = "") -> str:
        return f"{self.page_origin}/t/{token}/{rest}"

    def ad_url(self, token: str) -> str:
        return f"{self.ad_origin}/ad.html?t={token}"

    def _mall(self, path: str, query: dict[str, list[str]]) -> tuple[str, bytes] | None:
        parts = path.split("/")
        if len(parts) < 3 or parts[1] != "t" or not parts[2].isalnum():
            return None
        return "text/html; charset=utf-8", MALL_PAGE.format(
            token=parts[2], beacon_port=self.beacon_port, ad_url=html.escape(self.ad_url(parts[2]))).encode()

    def _ad(self, path: str, query: dict[str, list[str]]) -> tuple[str, bytes] | None:
        if path == "/beacon.js":
            return "text/javascript; charset=utf-8", SCRIPT.read_bytes()
        token = query.get("t", [""])[0]
        if path != "/ad.html" or not token.isalnum():
            return None
        return "text/html; charset=utf-8", AD_PAGE.format(
            beacon_port=self.beacon_port, ad_url_q=quote(self.ad_url(token), safe="")).encode()

    def _serve(self, route) -> int:  # type: ignore[no-untyped-def]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                found = route(parts.path, parse_qs(parts.query))
                ctype, body = found if found else ("text/plain", b"not found")
                self.send_response(200 if found else 404)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self.ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=server.serve_forever, name="static-site", daemon=True).start()
        self._servers.append(server)
        return server.server_address[1]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
