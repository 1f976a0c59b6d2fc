"""A throwaway TLS certificate and the two static sites the browser visits.

- `https://shop.test:<page_port>/t/<token>/...`: the mall's page (every path under
  `/t/<token>/` is the same single-page app), with the mall's tag (beacon.js from
  Beacon's mall host) and each partner's ad in an iframe (partner a's twice when the
  path holds `twoslots`);
- `https://ads.<a|b>.test:<ad_port>/ad.html?t=<token>`: a partner's ad, carrying the
  partner's tag: beacon.js from Beacon's host for that partner, and its opt-out link.

The token is in every URL the events carry, so each test finds its own rows.
"""

from __future__ import annotations

import datetime as dt
import html
import http.server
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from beacon import snippet

PARTNERS = ("a", "b")  # a: unpartitioned cookie; b: cookie_partitioned = true (CHIPS)
NAMES = ("shop.test", "*.shop.test", *(f"ads.{p}.test" for p in PARTNERS))


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for NAMES, valid for a day; (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


MALL_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Mall {token}</title>
<script>window.beacon=window.beacon||function(){{(beacon.q=beacon.q||[]).push(arguments)}};
beacon("event","queued_before_load",{{n:1}});</script>
</head><body><h1>Mall</h1>
{tag}
{ads}
</body></html>"""

AD_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Ad</title><body>
<p>An ad</p>
{tag}
</body></html>"""


class Site:
    """The mall page server (host shop.test) and one ad server for every partner host, both TLS.

    Pages carry the tags of beacon/snippet.py, the ones the README shows, verbatim.
    """

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

    def ad_origin(self, partner: str = "a") -> str:
        return f"https://ads.{partner}.test:{self.ad_port}"

    def page_url(self, token: str, rest: str = "") -> str:
        return f"{self.page_origin}/t/{token}/{rest}"

    def ad_url(self, token: str, partner: str = "a") -> str:
        return f"{self.ad_origin(partner)}/ad.html?t={token}"

    def _mall(self, host: str, path: str, query: dict[str, list[str]]) -> tuple[str, bytes] | None:
        parts = path.split("/")
        if host != "shop.test" or len(parts) < 3 or parts[1] != "t" or not parts[2].isalnum():
            return None
        slots = ("a", *PARTNERS) if "twoslots" in path else PARTNERS  # a second ad of partner a
        ads = "\n".join(
            f'<iframe src="{html.escape(self.ad_url(parts[2], p))}" width="300" height="250" title="ad {p}"></iframe>' for p in slots
        )
        tag = snippet.mall_tag(f"https://beacon.shop.test:{self.beacon_port}")
        return "text/html; charset=utf-8", MALL_PAGE.format(token=parts[2], tag=tag, ads=ads).encode()

    def _ad(self, host: str, path: str, query: dict[str, list[str]]) -> tuple[str, bytes] | None:
        partner = host.removeprefix("ads.").removesuffix(".test")
        token = query.get("t", [""])[0]
        if partner not in PARTNERS or path != "/ad.html" or not token.isalnum():
            return None
        tag = snippet.partner_tag(f"https://{host}:{self.beacon_port}")
        return "text/html; charset=utf-8", AD_PAGE.format(tag=tag).encode()

    def _serve(self, route) -> int:  # type: ignore[no-untyped-def]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                host = self.headers.get("host", "").rsplit(":", 1)[0].lower()
                found = route(host, parts.path, parse_qs(parts.query))
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
