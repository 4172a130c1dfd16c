"""The Litestar application: `create_app()` is the one composition root."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import redis.asyncio as aioredis
from cachetools import TTLCache
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters.ledger import Ledger, ledger_env
from api.auth import TokenStore, auth_middleware, use_recorder
from api.gateway import Gateway
from api.log import configure as configure_logging
from api.log import correlation_id
from api.metrics import RequestMetrics
from api.problems import EXCEPTION_HANDLERS, domain_problem, problem_response
from api.readside import ReadSide
from api.routes import admin, checkout, integrations, policies, reads, stock, webhooks
from api.service import CommandService
from api.settings import Settings
from api.sweeper import Sweeper
from api.webhook_queue import WebhookQueue
from atp.errors import DomainError
from projections.projector import Projector
from projections.readmodel import MemoryReadModel, RedisReader

log = logging.getLogger("atp")
CORRELATION_HEADER = b"x-correlation-id"


def _keep_encoded_slashes(app: ASGIApp) -> ASGIApp:
    """Route on the raw path with %2F kept, so codes may contain '/' (percent-encoded)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and b"%2f" in raw.lower():
            path = raw.split(b"?", 1)[0]
            segments = [
                quote(unquote_to_bytes(seg), safe="!$&'()*+,;=:@-._~") for seg in path.split(b"/")
            ]
            scope = {**scope, "path": "/".join(segments)}  # type: ignore[typeddict-item]
        await app(scope, receive, send)

    return middleware


def _correlation(app: ASGIApp) -> ASGIApp:
    """Accept or generate X-Correlation-ID; return it and expose it to handlers."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cid = ""
        for name, value in scope["headers"]:
            if name == CORRELATION_HEADER:
                given = value.decode("latin-1")
                if 0 < len(given) <= 128 and given.isprintable():
                    cid = given
                break
        if not cid:
            cid = os.urandom(12).hex()
        scope.setdefault("state", {})["correlation_id"] = cid  # type: ignore[typeddict-item]
        correlation_id.set(cid)
        header = (CORRELATION_HEADER, cid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]  # type: ignore[typeddict-unknown-key]
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware


def _on_domain_error(_: Any, exc: DomainError) -> Any:
    status, _body = domain_problem(exc)
    return problem_response(status, exc.kind, exc.detail, **exc.data)


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], datetime] | None = None,
    migrate: bool | None = None,
) -> Litestar:
    settings = settings or Settings.from_env()
    clock = clock or (lambda: datetime.now(UTC))
    configure_logging(settings.log_level)
    create_tables = settings.embedded if migrate is None else migrate

    metrics = RequestMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.token_secret  # noqa: B018 - no key, no start (SecretKeyMissing)
        ledger = Ledger(env=ledger_env(settings.database_url, settings.data_dir, create_tables))
        service = CommandService(ledger, clock=clock)
        service.start()
        app.state.settings = settings
        app.state.ledger = ledger
        app.state.service = service
        app.state.gateway = Gateway(service)
        app.state.tokens = TokenStore(
            ledger, settings.admin_token, settings.unknown_token_rate, use_recorder(service)
        )
        app.state.metrics = metrics
        # Keyed by store names from unauthenticated webhook URLs: bounded.
        app.state.integrations = TTLCache(maxsize=1024, ttl=60)
        app.state.webhook_queue = None
        if settings.amqp_url:
            app.state.webhook_queue = WebhookQueue(settings.amqp_url)
            await app.state.webhook_queue.start()
        stop = threading.Event()
        threads = []
        redis_client = None
        app.state.redis = None
        if settings.redis_url:
            # The projector runs on its own (`atp project`); this process only reads.
            redis_client = aioredis.Redis.from_url(settings.redis_url)
            app.state.redis = redis_client
            app.state.read = ReadSide(
                RedisReader(redis_client, settings.redis_prefix), settings.read_wait
            )
            app.state.projector = None
        else:
            # Embedded: the same projection code keeps an in-process read model.
            memory = MemoryReadModel()
            projector = Projector(ledger, memory, clock)
            await asyncio.to_thread(projector.catch_up)
            threads.append(threading.Thread(target=projector.run, args=(stop,), daemon=True))
            app.state.read = ReadSide(memory, settings.read_wait)
            app.state.projector = projector
        if settings.sweep_interval > 0:
            sweeper = Sweeper(ledger, service)
            threads.append(
                threading.Thread(
                    target=sweeper.run, args=(settings.sweep_interval, stop), daemon=True
                )
            )
        for thread in threads:
            thread.start()
        # Start-up objects live as long as the process: keep them out of the collector's
        # full passes (they were most of its pause time under load).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5)
            service.stop()
            if redis_client is not None:
                await redis_client.aclose()
            if app.state.webhook_queue is not None:
                await app.state.webhook_queue.close()
            ledger.close()

    route_handlers = [
        *policies.ROUTES,
        *stock.ROUTES,
        *checkout.ROUTES,
        *reads.ROUTES,
        *admin.ROUTES,
        *integrations.ROUTES,
        *webhooks.ROUTES,
    ]
    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        exception_handlers={**EXCEPTION_HANDLERS, DomainError: _on_domain_error},
        openapi_config=OpenAPIConfig(title="atp", version="0.1.0", path="/schema"),
        middleware=[_correlation, metrics.middleware, auth_middleware],
        debug=False,
    )
    return app


def asgi(settings: Settings | None = None) -> ASGIApp:
    """The ASGI callable served by `atp serve` (adds raw-path routing in front)."""
    return _keep_encoded_slashes(create_app(settings))


def asgi_factory() -> ASGIApp:
    return asgi()
