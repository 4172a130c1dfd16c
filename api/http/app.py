"""The Litestar application: `create_app(services)` over what api.bootstrap wired."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from cachetools import TTLCache
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp

from adapters.webhook_queue import WebhookQueue
from api.bootstrap import Services, bootstrap
from api.collector import settle
from api.http.auth import TokenStore
from api.http.controllers import (
    admin,
    checkout,
    integrations,
    planner,
    policies,
    reads,
    reconciliations,
    stock,
    webhooks,
)
from api.http.forwarding import WriterLink, claim_writer, forwarding, serve_writer
from api.http.gateway import Gateway
from api.http.metrics import (
    WriterSampler,
    record_reconciliation,
    worker_exit,
)
from api.http.middleware import admit, read_your_writes, request_middleware
from api.http.openapi import annotate, assets_router, complete, openapi_config
from api.http.problems import EXCEPTION_HANDLERS, domain_problem, problem_response
from api.http.ui import router as ui_router
from api.http.ui import template_config
from api.http.ui.access import on_unrouted, under_ui
from api.http.ui.session import SESSION_SECONDS
from api.log import configure as configure_logging
from api.service.queries import PositionWaiters, ReadSide
from api.service.sweeper import Sweeper
from api.service.tokens import use_recorder
from api.service.ui_sessions import SessionEnds
from api.settings import Settings
from api.workers.order_poller import OrderPoller
from atp.errors import DomainError
from projections.projector import Nudge, Projector
from projections.readmodel import MemoryReadModel, RedisReader


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    # A path under /ui that no route matched answers the planner page's HTML error page.
    if exc.status_code < 500 and under_ui(request.url.path):
        return on_unrouted(request, exc)
    on_http: Callable[[Request[Any, Any, Any], HTTPException], Response[Any]]
    on_http = EXCEPTION_HANDLERS[HTTPException]
    return on_http(request, exc)


def _on_domain_error(_: Any, exc: DomainError) -> Any:
    status, _body = domain_problem(exc)
    return problem_response(status, exc.kind, exc.detail, **exc.data)


def create_app(services: Services | None = None) -> Litestar:
    """The Litestar app over `services` (api.bootstrap; default: bootstrapped from the
    ATP_* environment). Its lifespan opens them, builds the read side (the Redis reader, or
    the in-process read model and its projector in embedded mode), the webhook queue and
    the background tasks, and closes everything on shutdown."""
    services = services or bootstrap(Settings.from_env())
    settings = services.settings
    clock = services.clock
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        settings.token_secret  # noqa: B018 - no key, no start (SecretKeyMissing)
        services.open()
        ledger = services.ledger
        service = services.commands
        app.state.settings = settings
        app.state.ledger = ledger
        app.state.service = service
        app.state.tokens = TokenStore(
            ledger, settings.admin_token, settings.unknown_token_rate, use_recorder(service)
        )
        app.state.ui_sessions = SessionEnds(ledger, service, SESSION_SECONDS)
        app.state.writer_sampler = WriterSampler(service)
        app.state.reconciliations = services.reconciliations(record_reconciliation)
        app.state.gateway = Gateway(service, app.state.reconciliations.reader.last_position)
        # Keyed by store names from unauthenticated webhook URLs: bounded.
        app.state.integrations = TTLCache(maxsize=1024, ttl=60)
        app.state.webhook_queue = services.bus
        own_queue = services.bus is None and bool(settings.amqp_url)
        if own_queue:
            app.state.webhook_queue = WebhookQueue(settings.amqp_url or "")
            await app.state.webhook_queue.start()
        stop = threading.Event()
        threads = []
        redis_client = None
        app.state.redis = None
        app.state.nudge = None
        if settings.redis_url:
            # The projector runs on its own (`atp project`); this process only reads.
            redis_client = services.async_redis()
            app.state.redis = redis_client
            reader = services.read_model or RedisReader(redis_client, settings.redis_prefix)
            app.state.read = ReadSide(reader, settings.read_wait)
            app.state.projector = None
        else:
            # Embedded: the same projection code keeps an in-process read model.
            memory = services.read_model or MemoryReadModel()
            projector = Projector(ledger, memory, clock)
            await asyncio.to_thread(projector.catch_up)
            app.state.nudge = Nudge()
            app.state.positions = PositionWaiters(
                asyncio.get_running_loop(), lambda: memory.position
            )
            memory.on_write = app.state.positions.reached
            threads.append(
                threading.Thread(
                    target=projector.run, args=(stop, 0.5, app.state.nudge), daemon=True
                )
            )
            app.state.read = ReadSide(memory, settings.read_wait)
            app.state.projector = projector
        app.state.planner = services.planner(app.state.read)
        if settings.sweep_interval > 0:
            sweeper = Sweeper(ledger, service)
            threads.append(
                threading.Thread(
                    target=sweeper.run,
                    args=(settings.sweep_interval, stop, lambda: _decides_writes(app)),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        polling = None
        if not settings.amqp_url and settings.order_poll_seconds > 0:
            # Embedded: this process applies the webhooks, so it also catches up on them.
            poller = OrderPoller(ledger, service, settings.token_secret, clock)
            polling = asyncio.create_task(poller.run(settings.order_poll_seconds, stop))
        # Start-up objects live as long as the process: keep them out of the collector's
        # full passes (they were most of its pause time under load). The writer's cache
        # keeps up to 100,000 stream states that are replaced batch after batch: at the
        # default thresholds full collections ran several times every 10 s, up to 830 ms
        # each with the GIL held, 10-16% of the writer process (api.collector).
        settle()
        sampling = asyncio.create_task(_sample_writer(app.state.writer_sampler))
        # Several workers: one decides every /v1 write, the others forward theirs to it.
        app.state.writer_link = None
        writer_lock = writer_server = None
        if settings.writer_socket:
            writer_lock = claim_writer(settings.writer_socket)
            if writer_lock is not None:
                writer_server = await serve_writer(
                    app, settings.writer_socket, app.state.gateway.run_forwarded
                )
            else:
                app.state.writer_link = WriterLink(settings.writer_socket)
        # The worker that decides the writes decides on its cached states first (a stream
        # another process moved costs a version conflict; a rejection is always checked
        # against the ledger): one query less per batch (CommandService.trust_cache).
        service.trust_cache = app.state.writer_link is None
        try:
            yield
        finally:
            if writer_server is not None:
                writer_server.close()
            if app.state.writer_link is not None:
                app.state.writer_link.close()
            if writer_lock is not None:
                os.close(writer_lock)
            sampling.cancel()
            worker_exit()
            stop.set()
            if polling is not None:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)
            for thread in threads:
                thread.join(timeout=5)
            if redis_client is not None:
                await redis_client.aclose()
            if own_queue:
                await app.state.webhook_queue.close()
            await app.state.reconciliations.reader.close()
            services.close()

    route_handlers = [
        *policies.ROUTES,
        *planner.ROUTES,
        *stock.ROUTES,
        *checkout.ROUTES,
        *reads.ROUTES,
        *admin.ROUTES,
        *integrations.ROUTES,
        *webhooks.ROUTES,
        *reconciliations.ROUTES,
    ]
    annotate(route_handlers)
    app = Litestar(
        route_handlers=[*route_handlers, assets_router(), ui_router()],
        lifespan=[lifespan],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            HTTPException: _on_http,
            DomainError: _on_domain_error,
        },
        openapi_config=openapi_config(),
        template_config=template_config(),
        # Read-your-writes waits on the in-process read model: with Redis there is none, and
        # a route with no middleware has one exception-handling layer less per request.
        middleware=[] if settings.redis_url else [read_your_writes],
        before_request=admit,
        logging_config=None,  # api.log configures the process (text or JSON)
        debug=False,
    )
    complete(app, route_handlers)
    # Outside Litestar's exception handling and routing, so that the answers they produce
    # (401/403/429 raised by auth, 404 of the router, 500) are counted and carry the id too,
    # and so that it routes on the raw path. Forwarding exists only with several workers.
    app.asgi_handler = request_middleware(app.asgi_handler)
    if settings.writer_socket:
        app.asgi_handler = forwarding(app.asgi_handler, _settle)
    return app


def _decides_writes(app: Litestar) -> bool:
    """Whether this worker decides its writes (the writer, or no forwarding): it sweeps."""
    return getattr(app.state, "writer_link", None) is None


async def _settle(scope: Any, position: int) -> None:
    """Embedded read-your-writes for a write the writer worker decided: this worker's own
    read model includes it before the answer goes (as read_your_writes does for its own)."""
    state = scope["app"].state
    if state.nudge is None:
        return
    state.nudge.nudge()
    await state.positions.wait(position, state.settings.read_wait)


async def _sample_writer(sampler: WriterSampler, every: float = 1.0) -> None:
    """Carry this worker's writer counts into the shared metrics until cancelled."""
    while True:
        sampler.sample()
        await asyncio.sleep(every)


def asgi(services: Services | None = None) -> ASGIApp:
    """The ASGI callable served by `atp serve`."""
    return create_app(services)


def asgi_factory() -> ASGIApp:
    """uvicorn's factory (`api.http.app:asgi_factory`): each worker reads the settings
    once from the environment and bootstraps its own services."""
    return asgi(bootstrap(Settings.from_env()))
