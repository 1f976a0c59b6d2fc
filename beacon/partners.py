"""The partner registry: a TOML file of advertisers, each its own cookie scope.

```toml
[[partner]]
id = "adco"                                   # [a-z0-9-], 1-32, not "mall"
name = "AdCo"
hosts = ["ads.adco.example"]                  # ad hostnames served for it
origins = ["https://shop.example"]            # pages allowed to POST /e (CORS)
sync_allow = ["https://match.adco.example/sync"]  # redirect allowlist: scheme://host[:port]/path-prefix
api_key_sha256 = "…"                          # sha256 hex of its API key, never the key
cookie_name = "adco_uid"
cookie_max_age = 31536000
cookie_partitioned = false                    # CHIPS
attribution = false                           # aggregate conversion counts for its clicks (README)
click_param = "adco_click"                    # its click parameter on mall landing pages
attribution_window_days = 7
attribution_min_count = 5                     # days with fewer conversions are left out
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import ada_url
import tomli_w

from beacon.errors import BadRequest
from beacon.scope import MALL, Scope

PARTNER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:\d{1,5})?")
COOKIE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class RegistryError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Partner:
    id: str
    name: str
    hosts: tuple[str, ...]
    origins: tuple[str, ...] = ()
    sync_allow: tuple[str, ...] = ()
    api_key_sha256: str = ""
    cookie_name: str = ""
    cookie_max_age: int = 365 * 86400
    cookie_partitioned: bool = False
    # partner attribution (beacon/attribution.py), off by default
    attribution: bool = False
    click_param: str = ""
    attribution_window_days: int = 7
    attribution_min_count: int = 5

    def scope(self, refresh_age: int) -> Scope:
        return Scope(
            id=self.id,
            cookie_name=self.cookie_name,
            cookie_domain="",
            cookie_path="/",
            cookie_max_age=self.cookie_max_age,
            cookie_refresh_age=refresh_age,
            cookie_secure=True,
            cookie_samesite="None",
            cookie_partitioned=self.cookie_partitioned,
            origins=frozenset(self.origins),
            is_partner=True,
        )

    def key_matches(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return bool(self.api_key_sha256) and hmac.compare_digest(digest, self.api_key_sha256)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "bpk_" + secrets.token_urlsafe(32)


def _lines_of_tables(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if line.strip().replace(" ", "") == "[[partner]]"]


def _check_allow(entry: str) -> str:
    parts = urlsplit(entry)
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or "\\" in entry
        or _url(entry) is None
    ):
        raise ValueError(f"sync_allow entry {entry!r} must look like https://host[:port]/path-prefix")
    return entry


def _partner(raw: Mapping[str, object]) -> Partner:  # TOML values, each checked here
    known = {f.name for f in dataclasses.fields(Partner)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    pid = raw.get("id")
    if not isinstance(pid, str) or not PARTNER_ID.fullmatch(pid) or pid == MALL:
        raise ValueError(f"id {pid!r} must be 1-32 of a-z 0-9 - (and not 'mall')")
    hosts = raw.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and HOSTNAME.fullmatch(h) for h in hosts):
        raise ValueError(f"hosts {hosts!r} must be a list of lower-case host names")
    origins = raw.get("origins", [])
    if not isinstance(origins, list) or not all(
        isinstance(o, str) and o.startswith(("https://", "http://")) and o.count("/") == 2 for o in origins
    ):
        raise ValueError(f"origins {origins!r} must be a list like ['https://shop.example']")
    allow = raw.get("sync_allow", [])
    if not isinstance(allow, list):
        raise ValueError("sync_allow must be a list")
    cookie = raw.get("cookie_name", f"{pid.replace('-', '_')}_uid")
    if not isinstance(cookie, str) or not COOKIE_NAME.fullmatch(cookie):
        raise ValueError(f"cookie_name {cookie!r} must be 1-64 of A-Z a-z 0-9 _ -")
    key_hash = raw.get("api_key_sha256", "")
    if not isinstance(key_hash, str) or (key_hash and not re.fullmatch(r"[0-9a-f]{64}", key_hash)):
        raise ValueError("api_key_sha256 must be 64 hex digits")
    max_age = raw.get("cookie_max_age", 365 * 86400)
    if not isinstance(max_age, int) or max_age <= 0:
        raise ValueError("cookie_max_age must be a positive integer")
    partitioned = raw.get("cookie_partitioned", False)
    if not isinstance(partitioned, bool):
        raise ValueError("cookie_partitioned must be true or false")
    attribution = raw.get("attribution", False)
    click_param = raw.get("click_param", "")
    window = raw.get("attribution_window_days", 7)
    min_count = raw.get("attribution_min_count", 5)
    if not isinstance(attribution, bool):
        raise ValueError("attribution must be true or false")
    if not isinstance(click_param, str) or (click_param and not COOKIE_NAME.fullmatch(click_param)):
        raise ValueError(f"click_param {click_param!r} must be 1-64 of A-Z a-z 0-9 _ -")
    if attribution and not click_param:
        raise ValueError("attribution = true needs a click_param")
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 90:
        raise ValueError("attribution_window_days must be 1..90")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or not 1 <= min_count <= 1000:
        raise ValueError("attribution_min_count must be 1..1000")
    return Partner(
        id=pid,
        name=str(raw.get("name", pid)),
        hosts=tuple(hosts),
        origins=tuple(origins),
        sync_allow=tuple(_check_allow(a) for a in allow),
        api_key_sha256=key_hash,
        cookie_name=cookie,
        cookie_max_age=max_age,
        cookie_partitioned=partitioned,
        attribution=attribution,
        click_param=click_param,
        attribution_window_days=window,
        attribution_min_count=min_count,
    )


def parse(text: str, source: str, mall_cookie: str = "", mall_hosts: tuple[str, ...] = ()) -> tuple[Partner, ...]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    unknown = set(doc) - {"partner"}
    if unknown:
        raise RegistryError(f"{source}: unknown top-level keys {sorted(unknown)}; partners are [[partner]] tables")
    lines = _lines_of_tables(text)
    partners: list[Partner] = []
    seen_hosts: dict[str, str] = {h.lower(): MALL for h in mall_hosts}
    seen_cookies = {mall_cookie: MALL} if mall_cookie else {}
    tables = doc.get("partner", [])
    if not isinstance(tables, list):
        raise RegistryError(f"{source}: partner must be [[partner]] tables, not a {type(tables).__name__}")
    for i, raw in enumerate(tables):
        where = f"{source} line {lines[i] if i < len(lines) else '?'} (partner #{i + 1})"
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: a partner is a [[partner]] table, not a {type(raw).__name__}")
        try:
            p = _partner(raw)
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}") from None
        if any(q.id == p.id for q in partners):
            raise RegistryError(f"{where}: id {p.id!r} appears twice")
        for h in p.hosts:
            if h in seen_hosts:
                raise RegistryError(f"{where}: host {h!r} already belongs to {seen_hosts[h]!r}")
            seen_hosts[h] = p.id
        if p.cookie_name in seen_cookies:
            raise RegistryError(f"{where}: cookie_name {p.cookie_name!r} already used by {seen_cookies[p.cookie_name]!r}")
        seen_cookies[p.cookie_name] = p.id
        partners.append(p)
    return tuple(partners)


def load(path: str | Path, mall_cookie: str = "", mall_hosts: tuple[str, ...] = ()) -> tuple[Partner, ...]:
    if not path:
        return ()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RegistryError(f"partners file {str(p)!r}: {exc.strerror}") from None
    return parse(text, str(p), mall_cookie, mall_hosts)


def save(path: str | Path, partners: tuple[Partner, ...] | list[Partner]) -> None:
    doc = {"partner": [{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(p).items()} for p in partners]}
    tmp = Path(str(path) + ".tmp")
    tmp.write_text("# Beacon partner registry; edit with `beacon partners`.\n" + tomli_w.dumps(doc))
    tmp.replace(path)


class SyncRefused(BadRequest):
    """A /sync target that is refused: 400, the reason names why."""


_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
# `/` or `\` hidden by (repeated) percent-encoding, a doubly encoded `.`, or an empty
# segment: harmless to a browser, but a partner server that decodes again or joins
# paths naively could be walked out of its prefix with them.
_HIDDEN_SEPARATOR = re.compile(r"%(25)*(2f|5c)|%(25)+2e|//", re.I)


def _url(text: str) -> ada_url.URL | None:
    try:
        return ada_url.URL(text)
    except ValueError:
        return None


def sync_target(partner: Partner, to: str, uid: str) -> str:
    """The redirect URL for `to` with the partner's own id in place of {uid}; SyncRefused otherwise.

    `to` is parsed as a browser parses a Location (the WHATWG URL standard, by ada-url):
    `..` and `%2e%2e` segments are resolved, case, default ports and IDNA normalised,
    and the *resolved* URL must be under an allowlisted prefix. It is also what is sent.
    """
    if not to:
        raise SyncRefused("to is required")
    if _UNSAFE.search(to):
        raise SyncRefused("to contains whitespace, control characters or backslashes")
    url = _url(to)
    if url is None or url.protocol not in ("https:", "http:"):
        raise SyncRefused("to must be an absolute http(s) URL")
    authority = re.split(r"[/?#]", to.partition("://")[2], maxsplit=1)[0]
    if url.username or url.password or "@" in authority:
        raise SyncRefused("to must not carry user information")
    if "%" in authority:
        raise SyncRefused("to must not percent-encode its host")
    if _HIDDEN_SEPARATOR.search(url.pathname):
        raise SyncRefused("to must not hide / or \\ as %2F or %5C, nor have an empty segment, in its path")
    for allowed in partner.sync_allow:
        a = ada_url.URL(allowed)
        prefix = a.pathname
        if (
            url.protocol == a.protocol
            and url.host == a.host
            and (url.pathname == prefix or url.pathname.startswith(prefix if prefix.endswith("/") else prefix + "/"))
        ):
            return url.href.replace("{uid}", uid).replace("%7Buid%7D", uid).replace("%7buid%7d", uid)
    raise SyncRefused("to is not on this partner's sync allowlist")


def row_policy_sql(partners: tuple[Partner, ...] | list[Partner], database: str, table: str, cluster: str = "") -> str:
    """DDL for a readonly ClickHouse user per partner whose SELECTs see only its own scope's rows.

    Each user gets a fresh random password, printed here once. Users without a row policy
    (Beacon's own) keep reading every row (`users_without_row_policies_can_read_rows`,
    on by default). On a cluster every statement runs ON CLUSTER, and the grant and the
    policy cover the Distributed table and the shards' `<table>_local`, which the shards
    read as the partner's user when the cluster has an inter-server `<secret>`.
    """
    on = f" ON CLUSTER {cluster}" if cluster else ""
    tables = (table, f"{table}_local") if cluster else (table,)
    out = [
        "-- Generated by `beacon partners sql`: one readonly user per partner, rows of its scope only.",
        "-- Give each partner its user name and password; run on every ClickHouse server (or ON CLUSTER).",
    ]
    for p in partners:
        user = f"beacon_partner_{p.id.replace('-', '_')}"
        password = secrets.token_urlsafe(24)
        out.append(f"CREATE USER IF NOT EXISTS {user}{on} IDENTIFIED WITH sha256_password BY '{password}' SETTINGS readonly = 1;")
        for t in tables:
            out += [
                f"GRANT{on} SELECT ON {database}.{t} TO {user};",
                f"CREATE ROW POLICY OR REPLACE {user}_scope{on} ON {database}.{t} FOR SELECT USING scope = '{p.id}' TO {user};",
            ]
    return "\n".join(out)
