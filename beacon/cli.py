"""`beacon up | serve | flush | migrate`: parse, build settings, call the library."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from beacon import __version__, config, snippet
from beacon.config import Settings

# The commands import the library where they use it (start-up time, not cycles): `beacon --help`
# and the light commands load no driver (uvicorn, redis-py, clickhouse-connect, chDB).
if TYPE_CHECKING:
    import uvicorn

    from beacon.flusher import Flusher
    from beacon.sharding import ShardedFlusher
    from beacon.store import Store
    from beacon.types import ASGIApp

log = logging.getLogger("beacon")


def _secret(path: Path, nbytes: int = 32) -> str:
    """A secret kept in the data dir (0600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _store(s: Settings, migrate: bool = False) -> Store:
    """The Store, opened (and migrated if asked); ConfigError with one line when it will not open."""
    from beacon.lock import check_chdb_free, open_error
    from beacon.store import Store

    dsn = config.clickhouse_dsn(s)
    check_chdb_free(dsn)
    store = Store(dsn, s.database, s.table, s.retention_days, s.dedup_window, s.cluster)
    try:
        if migrate:
            store.migrate()
        else:
            store.query("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one line naming the holder or cause
        raise open_error(dsn, exc) from None
    return store


def _bind(host: str, port: int) -> socket.socket:
    """The listening address, bound before anything is started or printed (uvicorn listens on it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening from here on: a client that connects once "Beacon is up" is printed waits in
        # the backlog until uvicorn accepts, instead of being refused (uvicorn listens again, harmlessly).
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise config.ConfigError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    sock.set_inheritable(True)
    return sock


def _flusher(s: Settings, store: Store) -> Flusher | ShardedFlusher:
    """One Flusher, or with a sharded stream one per shard (beacon/sharding.py)."""
    from beacon import sharding

    return sharding.flusher(s, store, s.consumer or f"{socket.gethostname()}-{os.getpid()}")


def _uvicorn_config(s: Settings, app: ASGIApp | str, factory: bool = False, workers: int | None = None) -> uvicorn.Config:
    import uvicorn

    from beacon.http import LimitedHttpToolsProtocol, configure

    return configure(
        uvicorn.Config(
            app,
            host=s.host,
            port=s.port,
            loop="uvloop",
            http=LimitedHttpToolsProtocol,
            lifespan="on",
            access_log=s.access_log,
            log_level=s.log_level,
            timeout_graceful_shutdown=10,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            factory=factory,
            workers=workers,
        ),
        s,
    )


def _run_server(server: uvicorn.Server, sock: socket.socket | None = None) -> None:
    """uvicorn drains, then re-raises the signal it caught into the handler that was set
    before it; a no-op handler there lets Beacon finish its own shutdown and exit 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock] if sock is not None else None)


def cmd_up(s: Settings) -> int:
    """Everything in one process: private Redis, chDB, flusher thread, web server."""
    import uvicorn

    from beacon.app import create_app
    from beacon.lock import DataDirLock
    from beacon.redis_server import EmbeddedRedis

    data = Path(s.data_dir)
    # In this order: nothing in the data dir is touched before it is ours, and nothing
    # is started, generated or printed before the port is.
    lock = DataDirLock(data)
    lock.acquire()
    embedded = None
    try:
        sock = _bind(s.host, s.port)
        if not s.redis_url:
            embedded = EmbeddedRedis(data, s.redis_server)
            s = dataclasses.replace(s, redis_url=config.Secret(embedded.start()))
        if not s.secret_keys:
            s = dataclasses.replace(s, secret_keys=(config.Secret(_secret(data / "secret_key")),))
        if not s.mall_api_key:
            s = dataclasses.replace(s, mall_api_key=config.Secret(_secret(data / "mall_api_key", 24)))
        if not s.site_origins:  # a trial on one machine: pages on localhost may send events (README, Embedding)
            s = dataclasses.replace(s, loopback_origins=True)
        store = _store(s, migrate=True)
        app = create_app(s, store)  # a bad partners file or GeoIP database stops us here, before "up"
        flusher = _flusher(s, store)
        thread = threading.Thread(target=flusher.run, name="flusher", daemon=True)
        thread.start()
        origin = f"http://{s.host}:{sock.getsockname()[1]}"  # the port bound (--port 0 picks one)
        # With BEACON_MALL_HOSTS set, a request by address is not the mall's: name a mall host.
        as_mall = f"-H 'Host: {s.mall_hosts[0]}' " if s.mall_hosts and s.host not in s.mall_hosts else ""
        note = (
            f"BEACON_MALL_HOSTS is set: pages must load the tag from one of {', '.join(s.mall_hosts)} "
            f"(the address above answers 404 to it)\n"
            if as_mall
            else ""
        )
        print(
            f"""
Beacon is up on {origin}  (data in {data.resolve()})

{snippet.up_message(origin, s.site_origins, s.loopback_origins)}{note}
Dashboard:
  {origin}/dashboard  (sign in with the mall API key below)

Stats:
  curl {as_mall}-H 'Authorization: Bearer {s.mall_api_key.reveal()}' '{origin}/api/v1/stats?interval=hour'
""",
            flush=True,
        )
        _run_server(uvicorn.Server(_uvicorn_config(s, app)), sock)
        flusher.stop()
        thread.join(30)
        store.close()
    finally:
        if embedded is not None:
            embedded.stop()
        lock.release()
    return 0


def cmd_serve(s: Settings) -> int:
    import uvicorn

    from beacon.app import create_app

    if s.workers <= 1:
        app = create_app(s)
        _run_server(uvicorn.Server(_uvicorn_config(s, app)), _bind(s.host, s.port))
        return 0
    # Worker processes rebuild the settings from the environment.
    os.environ.update(config.to_environ(s))
    create_app(s)  # fail here, not in N workers, when the settings are unusable
    from beacon import workers

    workers.prepare_metrics_dir(Path(s.data_dir) / "metrics")  # one /metrics for all workers
    uv = _uvicorn_config(s, "beacon.app:from_env", factory=True, workers=s.workers)
    workers.Workers(uv, sockets=[_bind(s.host, s.port)]).run()
    return 0


def cmd_flush(s: Settings) -> int:
    if not s.redis_url:
        raise config.ConfigError("BEACON_REDIS_URL is empty: `beacon flush` reads a Redis you run")
    store = _store(s, migrate=True)
    flusher = _flusher(s, store)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: flusher.stop())
    log.info("flusher %s: %s -> %s", flusher.consumer, s.stream, config.clickhouse_dsn(s).split("@")[-1])
    flusher.run()
    store.close()
    return 0


def cmd_migrate(s: Settings, print_only: bool = False) -> int:
    """Create or update the events table; with --cluster, on every shard and replica (docs/cluster.md)."""
    if s.cluster:
        from beacon import cluster, partners

        stmts = cluster.statements(
            s.cluster, s.database, s.table, s.retention_days, s.dedup_window, partners.load(s.partners_file, s.cookie_name, s.mall_hosts)
        )
        if print_only:
            print(cluster.script(stmts), end="")
            return 0
        for sql in cluster.migrate(_store(s), stmts):
            print(f"partner user created (give its password to the partner, it is not shown again):\n  {sql}")
        print(f"{s.database}.{s.table} on cluster {s.cluster}: up to date ({len(stmts)} statements)")
        return 0
    if print_only:
        raise config.ConfigError("--print shows the statements of `migrate --cluster NAME`; give --cluster")
    store = _store(s, migrate=True)
    print(f"{store.full_table}: up to date (retention {s.retention_days} days)")
    return 0


def cmd_partners(s: Settings, args: argparse.Namespace) -> int:
    """Edit the partner registry: add, list, rotate-key, sql (ClickHouse users and row policies)."""
    from beacon import partners as reg

    if not s.partners_file:
        raise config.ConfigError("set BEACON_PARTNERS_FILE or --partners-file")
    path = Path(s.partners_file)
    current = list(reg.load(path, s.cookie_name, s.mall_hosts)) if path.exists() else []
    if args.action == "list":
        for p in current:
            print(f"{p.id}\t{p.name}\thosts={','.join(p.hosts)}\tcookie={p.cookie_name}\tkey={'set' if p.api_key_sha256 else 'none'}")
        return 0
    if args.action == "sql":
        print(reg.row_policy_sql(current, s.database, s.table, s.cluster))
        return 0
    key = reg.new_key()
    if args.action == "add":
        if not args.id:
            raise config.ConfigError("partners add needs --id")
        raw = {
            "id": args.id,
            "name": args.name or args.id,
            "hosts": args.hosts,
            "origins": args.origins,
            "sync_allow": args.sync_allow,
            "api_key_sha256": reg.hash_key(key),
            "cookie_partitioned": args.partitioned,
        }
        if args.partner_cookie:
            raw["cookie_name"] = args.partner_cookie
        try:
            current.append(reg._partner(raw))
        except ValueError as exc:
            raise config.ConfigError(f"partners add: {exc}") from None
    elif args.action == "rotate-key":
        if not any(p.id == args.id for p in current):
            raise config.ConfigError(f"no partner {args.id!r} in {path}")
        current = [dataclasses.replace(p, api_key_sha256=reg.hash_key(key)) if p.id == args.id else p for p in current]
    # What we write must load (a duplicate id, host or cookie): checked on a copy, so a
    # refused change leaves the registry as it was and the next start still works.
    staged = path.with_name(path.name + ".new")
    reg.save(staged, current)
    try:
        reg.load(staged, s.cookie_name, s.mall_hosts)
    except reg.RegistryError as exc:
        staged.unlink()
        raise reg.RegistryError(str(exc).replace(str(staged), str(path))) from None
    staged.replace(path)
    print(f"API key for {args.id} (shown once; only its hash is stored): {key}")
    return 0


def cmd_dead_letter(s: Settings, args: argparse.Namespace) -> int:
    """Rows ClickHouse rejected: list them, replay them into the stream (after a fix), or drop them."""
    from beacon import rcluster, sharding
    from beacon.keys import dead_letter_key

    if not s.redis_url:
        raise config.ConfigError("set BEACON_REDIS_URL (for `beacon up`: unix://<data-dir>/redis/redis.sock)")
    r = rcluster.sync_client(s)
    streams = sharding.streams(s)
    keys = [dead_letter_key(stream) for stream in streams]
    # Every shard's dead letters; a replayed row goes back into its own shard (same slot: one MULTI).
    entries = [(stream, key, e) for stream, key in zip(streams, keys, strict=True) for e in rcluster.entries(r.xrange(key), "XRANGE")]
    if args.id:
        entries = [e for e in entries if e[2][0].decode() in args.id]
    if args.action == "list":
        for _, key, (entry_id, fields) in entries:
            shard = f"{key}\t" if len(keys) > 1 else ""
            print(
                f"{shard}{entry_id.decode()}\t{fields[b'error'].decode(errors='replace').splitlines()[0][:160]}\t"
                f"{fields[b'd'].decode(errors='replace')[:200]}"
            )
        print(f"{len(entries)} dead-letter rows in {', '.join(keys)}", file=sys.stderr)
        return 0
    for stream, key, (entry_id, fields) in entries:
        pipe = r.pipeline(transaction=True)
        if args.action == "replay":
            pipe.xadd(stream, {"d": fields[b"d"], "n": 1})
        pipe.xdel(key, entry_id)
        pipe.execute()
    print(f"{args.action}: {len(entries)} rows", file=sys.stderr)
    return 0


def _existing(store: Store) -> Store:
    """The store, once its events table is known to exist (a fresh or mistyped data dir has none)."""
    if not store.query(f"EXISTS TABLE {store.full_table}")[0][0]:
        raise config.ConfigError(f"no table {store.full_table} here: nothing to forget (wrong --data-dir, --clickhouse-url or --database?)")
    return store


def cmd_forget(s: Settings, args: argparse.Namespace) -> int:
    """Erase one visitor's rows in one scope (ClickHouse lightweight DELETE); audited without the id."""
    from beacon.privacy import forget_visitor

    if not s.secret_keys:
        s = dataclasses.replace(s, secret_keys=(config.Secret(_secret(Path(s.data_dir) / "secret_key")),))
    if bool(args.visitor) == bool(args.account):
        raise config.ConfigError("forget needs exactly one of --visitor ID (with --scope) or --account ID")
    if args.account:  # the mall's signed-in customer: every linked device, then the links
        from beacon.customers import account_key, forget_account

        account = account_key(s.account_hash_key.reveal(), args.account)
        visitors, rows = forget_account(_existing(_store(s)), s.secret_keys[0].reveal(), "mall", account, "operator")
        print(f"forgot {rows} rows of {visitors} visitor ids linked to one account, and the links")
        return 0
    if not args.scope:
        raise config.ConfigError("forget --visitor needs --scope (mall or a partner id)")
    rows = forget_visitor(_existing(_store(s)), s.secret_keys[0].reveal(), args.scope, args.visitor, "operator")
    print(f"forgot {rows} rows of one visitor in scope {args.scope}")
    return 0


COMMANDS = {"up": cmd_up, "serve": cmd_serve, "flush": cmd_flush, "migrate": cmd_migrate}

# The settings each command reads (its --help lists these); a setting not named here
# is a web setting, read by `up` and `serve`.
_STORE = ("data_dir", "clickhouse_url", "database", "table", "cluster", "retention_days", "dedup_window")
_FLUSHER = ("batch_rows", "batch_age", "claim_idle", "lease", "consumer")
_ONLY = {
    "flush": (
        "redis_url",
        "redis_cluster",
        "stream_shards",
        "redis_timeout",
        "stream",
        *_STORE,
        *_FLUSHER,
        "log_level",
        "visit_timeout",
        "rollup_interval",
    ),
    "migrate": (*_STORE, "partners_file", "log_level"),
    "forget": (*_STORE, "secret_keys", "account_hash_key", "log_level"),
    "partners": ("partners_file", "cookie_name", "mall_hosts", "database", "table", "cluster", "log_level"),
    "dead-letter": ("redis_url", "redis_cluster", "stream_shards", "stream", "log_level"),
}
_NOT = {"up": ("workers",), "serve": ("redis_server", "retention_days", "dedup_window", *_FLUSHER)}


def _flags(parser: argparse.ArgumentParser, command: str) -> None:
    only, skip = _ONLY.get(command), set(_NOT.get(command, ()))
    config.add_flags(parser, [o.name for o in config.OPTIONS if (o.name in only if only is not None else o.name not in skip)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beacon", description="Web beacon server: pixel, cookies, events.")
    parser.add_argument("--version", action="version", version=f"beacon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        _flags(sp := sub.add_parser(name, help=fn.__doc__), name)
        if name == "migrate":
            sp.add_argument(
                "--print", dest="print_sql", action="store_true", help="print the statements of `migrate --cluster` instead of running them"
            )
    p = sub.add_parser("partners", help=cmd_partners.__doc__)
    p.add_argument("action", choices=["add", "list", "rotate-key", "sql"])
    p.add_argument("--id", default="")
    p.add_argument("--name", default="")
    p.add_argument("--ad-host", dest="hosts", action="append", default=[], help="ad hostname (repeat)")
    p.add_argument("--origin", dest="origins", action="append", default=[], help="allowed page origin (repeat)")
    p.add_argument("--sync-allow", action="append", default=[], help="sync redirect prefix (repeat)")
    p.add_argument("--partner-cookie", dest="partner_cookie", default="", help="cookie name (default <id>_uid)")
    p.add_argument("--partitioned", action="store_true", help="set the cookie Partitioned (CHIPS)")
    _flags(p, "partners")
    f = sub.add_parser("forget", help=cmd_forget.__doc__)
    f.add_argument("--scope", default="")
    f.add_argument("--visitor", default="")
    f.add_argument("--account", default="", help="a signed-in customer's account id (mall): all its devices")
    _flags(f, "forget")
    d = sub.add_parser("dead-letter", help=cmd_dead_letter.__doc__)
    d.add_argument("action", choices=["list", "replay", "drop"])
    d.add_argument("--id", action="append", default=[], help="only these entry ids (repeat); default all")
    _flags(d, "dead-letter")
    args = parser.parse_args(argv)
    try:
        s = config.from_args(args)
    except config.ConfigError as exc:
        print(f"beacon: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level="DEBUG" if s.log_level == "trace" else s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The HTTP client's own retry warnings would come before Beacon's one line naming the cause.
    for noisy in ("urllib3.connectionpool", "clickhouse_connect"):  # clickhouse_connect resets "urllib3"
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
    from beacon.partners import RegistryError

    try:
        if args.command == "partners":
            return cmd_partners(s, args)
        if args.command == "dead-letter":
            return cmd_dead_letter(s, args)
        if args.command == "forget":
            return cmd_forget(s, args)
        if args.command == "migrate":
            return cmd_migrate(s, args.print_sql)
        return COMMANDS[args.command](s)
    except (config.ConfigError, RegistryError) as exc:
        print(f"beacon: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the embedded redis-server would not start
        print(f"beacon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a data dir that is a file, unwritable, full...
        print(f"beacon: {exc.strerror}: {exc.filename}" if exc.filename else f"beacon: {exc}", file=sys.stderr)
        return 1
