"""Wiring: settings -> scopes, identities, buffer, store -> one ASGI app.

The two beacon routes are dispatched here in front of Starlette (a dict lookup on the
path); everything else goes through Starlette's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator

from crawlerdetect import CrawlerDetect
from starlette.applications import Starlette

from beacon import api, config, partners, rcluster, sharding
from beacon import clock as clocks
from beacon.consent import Consent
from beacon.enrich import Enricher
from beacon.errors import BeaconError, NotDurable
from beacon.event import Anonymiser, Limits
from beacon.http import TRUNCATED
from beacon.identity import Identity
from beacon.privacy import VisitorRights
from beacon.request import Request
from beacon.routes import BeaconRoutes, send_json
from beacon.scope import Resolver, Scope, mall_scope
from beacon.sink import Buffer
from beacon.spool import Spool
from beacon.store import Store
from beacon.types import ASGIScope, Receive, Send

log = logging.getLogger("beacon.app")

ANY_HOST = frozenset({"/healthz", "/readyz"})
BY_ADDRESS = ANY_HOST | {"/metrics"}  # what a balancer or a scraper asks for by IP (/metrics has its key)
PARTNER_API = "/api/v1/partners/"


class _NotStarted:
    """The buffer before `Core.start` (and after a failed one): nothing is durable yet."""

    async def append(self, lines: list[bytes]) -> None:
        raise NotDurable("the buffer is not started")

    async def close(self) -> None:
        pass


NOT_STARTED: Buffer = _NotStarted()


class Core:
    """What the request path needs, built once per process."""

    def __init__(self, settings: config.Settings, store: Store | None = None, clock: clocks.Clock = clocks.system) -> None:
        self.settings = settings
        self.clock = clock
        self.mall = mall_scope(settings)
        self.partners = partners.load(settings.partners_file, settings.cookie_name, settings.mall_hosts)
        self.resolver = Resolver(
            self.mall,
            settings.mall_hosts,
            tuple(p.scope(settings.cookie_refresh_age) for p in self.partners),
            {host: p.id for p in self.partners for host in p.hosts},
        )
        self.partner_by_id = {p.id: p for p in self.partners}
        self._identities: dict[int, Identity] = {}
        self.anonymiser = Anonymiser(settings.ipv4_prefix, settings.ipv6_prefix, settings.trusted_proxies)
        self.limits = Limits(settings)
        self.store = store or Store(
            config.clickhouse_dsn(settings),
            settings.database,
            settings.table,
            settings.retention_days,
            settings.dedup_window,
            settings.cluster,
        )
        self.consent = Consent(settings, clock=clock)
        self.is_bot = functools.lru_cache(maxsize=65536)(CrawlerDetect().isCrawler)
        self.enrich = Enricher(settings)
        self.redis: rcluster.AsyncRedis | None = None
        self.buffer: Buffer = NOT_STARTED
        self.spool: Spool | None = None
        self.streams = sharding.streams(settings)  # the stream's shards (one: BEACON_STREAM itself)
        self.spools: dict[str, Spool] = {}  # stream shard -> its spool
        self._replayer: asyncio.Task[None] | None = None

    def identity(self, sc: Scope) -> Identity:
        ident = self._identities.get(id(sc))
        if ident is None:
            ident = self._identities[id(sc)] = Identity(
                sc, tuple(k.reveal() for k in self.settings.secret_keys), self.settings.optout_max_age, self.clock
            )
        return ident

    async def start(self) -> None:
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations, so collections on the request path stay short.
        gc.freeze()
        s = self.settings
        self.redis = rcluster.async_client(s, socket_timeout=s.redis_timeout, socket_connect_timeout=s.redis_timeout)
        self.consent.redis = self.redis
        self.spools = sharding.spools(s)
        self.spool = next(iter(self.spools.values()))
        self.buffer = sharding.buffer(s, self.redis, self.spools)
        self._replayer = asyncio.get_running_loop().create_task(self._replay_spool())

    async def _replay_spool(self, every: float = 1.0) -> None:
        """Move spooled group commits into Redis whenever there are some and Redis answers."""
        spools = {**self.spools, **sharding.left_over_spools(self.settings, self.spools)}
        sync_redis = None  # made when first needed: a cluster client connects when made
        try:
            while True:
                if any(spool.pending() for spool in spools.values()):
                    try:
                        if sync_redis is None:
                            sync_redis = rcluster.sync_client(self.settings, socket_timeout=5)
                        await asyncio.to_thread(sharding.replay, self.settings, sync_redis, spools)
                    except rcluster.REDIS_OR_DISK_ERRORS as exc:
                        log.info("spool replay waits for Redis: %s", exc)
                await asyncio.sleep(every)
        finally:
            if sync_redis is not None:
                sync_redis.close()

    async def stop(self) -> None:
        await self.buffer.close()
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self.spools:
            if any(spool.pending() for spool in self.spools.values()):
                # one last replay, so a clean stop leaves no spool when Redis is up
                try:
                    sync_redis = rcluster.sync_client(self.settings, socket_timeout=2)
                    try:
                        await asyncio.to_thread(sharding.replay, self.settings, sync_redis, self.spools)
                    finally:
                        sync_redis.close()
                except rcluster.REDIS_OR_DISK_ERRORS:
                    pass
            for spool in self.spools.values():
                spool.close()
        if self.redis is not None:
            await self.redis.aclose()


class Beacon:
    def __init__(self, core: Core) -> None:
        self.core = core
        beacon = BeaconRoutes(core)
        rights = VisitorRights(core)
        self.pixel = beacon.pixel
        self.fast = {
            "/p.gif": beacon.pixel,
            "/e": beacon.collect,
            "/sync": beacon.sync,
            "/optout": rights.optout,
            "/optin": rights.optin,
            "/me": rights.me,
            "/me/forget": rights.forget,
        }
        self.resolve = core.resolver.resolve
        from beacon.dashboard import Dashboard  # (imported here: the dashboards are not on the beacon path)

        self.dashboard = Dashboard(core)
        self.starlette = Starlette(routes=api.routes(core), lifespan=self._lifespan, exception_handlers={BeaconError: api.error_response})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.core.start()
        try:
            yield
        finally:
            await self.core.stop()

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "/dashboard" in scope["path"] and await self.dashboard.dispatch(scope, receive, send, self.resolve):
                return  # every scope has its own dashboard (beacon/dashboard)
            req = Request(scope["headers"])
            sc, path = self.resolve(req.host.decode("latin-1"), scope["path"])
            if sc is None:
                if path in BY_ADDRESS:  # balancers and scrapers ask by IP address
                    await self.starlette(scope, receive, send)
                    return
                await send_json(send, 404, {"error": "unknown host or partner"})
                return
            handler = self.fast.get(path)
            if handler is not None:
                if TRUNCATED in scope and handler != self.pixel:
                    await send_json(send, 414, {"error": "request target too long"})
                    return
                await handler(scope, receive, send, sc, req)
                return
            if sc.is_partner:
                if not (path in ANY_HOST or path == "/beacon.js" or (not sc.path_prefix and path.startswith(PARTNER_API))):
                    await send_json(send, 404, {"error": "not found"})
                    return
                if sc.path_prefix:  # /partners/<id>/beacon.js, /partners/<id>/healthz: routed without the prefix
                    scope["path"] = path
                scope["beacon.scope"] = sc  # the partner API checks the host's partner against the key's
            elif TRUNCATED in scope:
                await send_json(send, 414, {"error": "request target too long"})
                return
        await self.starlette(scope, receive, send)


def create_app(settings: config.Settings, store: Store | None = None, clock: clocks.Clock = clocks.system) -> Beacon:
    """Raises ConfigError or partners.RegistryError with a message naming what is wrong."""
    if not settings.secret_keys:
        raise config.ConfigError("BEACON_SECRET_KEYS is empty: set at least one signing key")
    if not settings.redis_url:
        raise config.ConfigError("BEACON_REDIS_URL is empty (only `beacon up` starts its own Redis)")
    return Beacon(Core(settings, store, clock))


def from_env() -> Beacon:
    """Factory for `uvicorn --factory` worker processes: settings come from BEACON_* variables."""
    return create_app(config.load())
