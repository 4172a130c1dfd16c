"""The `atp` command line: migrate, serve, sweep, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time

from adapters.ledger import Ledger, ledger_env
from api.log import configure as configure_logging
from api.settings import Settings

log = logging.getLogger("atp")


def _ledger(settings: Settings, create: bool) -> Ledger:
    return Ledger(env=ledger_env(settings.database_url, settings.data_dir, create))


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    ledger = _ledger(settings, create=True)
    head = ledger.head()
    ledger.close()
    where = "PostgreSQL" if settings.database_url else f"SQLite in {settings.data_dir}"
    print(f"ledger tables ready ({where}); head position {head}")
    if settings.amqp_url:
        pushers = _registered_pushers(settings)
        asyncio.run(_declare_topology(settings.amqp_url, pushers))
        print(f"RabbitMQ exchanges and queues ready ({len(pushers)} push queue(s))")
    return 0


def _registered_pushers(settings: Settings) -> list[tuple[str, str, str]]:
    """(kind, store, channel) of every registered integration, newest record of each."""
    from eventsourcing.utils import get_topic

    from adapters.ledger import decode_payload
    from adapters.records import IntegrationConfigured

    ledger = _ledger(settings, create=False)
    found: dict[tuple[str, str], str] = {}
    start = 1
    try:
        while batch := ledger.recorder.select_notifications(
            start, 1000, topics=[get_topic(IntegrationConfigured)]
        ):
            for notification in batch:
                record, _, _ = decode_payload(notification.topic, notification.state)
                assert isinstance(record, IntegrationConfigured)
                found[(record.kind, record.store)] = record.channel
            start = batch[-1].id + 1
    finally:
        ledger.close()
    return [(kind, store, channel) for (kind, store), channel in found.items()]


async def _declare_topology(url: str, pushers: list[tuple[str, str, str]]) -> None:
    import aio_pika

    from adapters.amqp import declare_topology

    connection = await aio_pika.connect_robust(url)
    async with connection:
        await declare_topology(await connection.channel(), pushers)


def _check_migrated(settings: Settings) -> None:
    if settings.embedded:
        return
    try:
        ledger = _ledger(settings, create=False)
        ledger.head()
        ledger.close()
    except Exception as exc:
        sys.exit(f"atp: the ledger is not ready ({type(exc).__name__}: {exc}); run `atp migrate`")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    if settings.embedded:
        cmd_migrate(settings, args)
    _check_migrated(settings)
    os.environ.update(ATP_HOST=host, ATP_PORT=str(port))
    uvicorn.run(
        "api.app:asgi_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,
    )
    return 0


def cmd_sweep(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import CommandService
    from api.sweeper import Sweeper

    _check_migrated(settings)
    ledger = _ledger(settings, create=settings.embedded)
    service = CommandService(ledger)
    service.start()
    sweeper = Sweeper(ledger, service)
    try:
        if args.once:
            print(f"expired {sweeper.sweep_once()} reservation(s)")
            return 0
        stop = threading.Event()
        try:
            sweeper.run(args.interval, stop)
        except KeyboardInterrupt:
            stop.set()
        return 0
    finally:
        service.stop()
        ledger.close()


def cmd_project(settings: Settings, args: argparse.Namespace) -> int:
    from projections.runner import RedisProjection

    if not settings.redis_url:
        sys.exit(
            "atp: `atp project` keeps the Redis read model; set ATP_REDIS_URL "
            "(without it, `atp serve` projects in process)"
        )
    _check_migrated(settings)
    ledger = _ledger(settings, create=settings.embedded)
    publisher = None
    if settings.amqp_url:
        from adapters.amqp import Publisher

        publisher = Publisher(settings.amqp_url)
    projection = RedisProjection(
        ledger,
        settings.redis_url,
        settings.redis_prefix,
        settings.redis_rebuild_db,
        publisher=publisher,
    )
    try:
        if args.rebuild:
            started = time.monotonic()
            position = projection.rebuild()
            print(
                f"read model rebuilt up to position {position} in {time.monotonic() - started:.1f}s"
            )
            if args.once:
                return 0
        elif args.once:
            projection.projector.resume()
            print(f"projected {projection.projector.catch_up()} event(s)")
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            projection.run(stop)
        except KeyboardInterrupt:
            stop.set()
        return 0
    finally:
        if publisher is not None:
            publisher.close()
        ledger.close()


def cmd_webhooks(settings: Settings, _: argparse.Namespace) -> int:
    from api.service import CommandService
    from api.webhook_consumer import WebhookConsumer

    if not settings.amqp_url:
        sys.exit("atp: `atp webhooks` consumes RabbitMQ; set ATP_AMQP_URL")
    _check_migrated(settings)
    ledger = _ledger(settings, create=settings.embedded)
    service = CommandService(ledger)
    service.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        asyncio.run(WebhookConsumer(ledger, service, settings.amqp_url).run(stop))
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        ledger.close()
    return 0


def cmd_push(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.pushers.runner import PusherMetrics, run_pusher, serve_metrics
    from adapters.sealing import SealError

    if not settings.amqp_url:
        sys.exit("atp: `atp push` consumes RabbitMQ; set ATP_AMQP_URL")
    _check_migrated(settings)
    ledger = _ledger(settings, create=settings.embedded)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics = PusherMetrics()
        server = None
        if args.metrics_port:
            server = await serve_metrics(metrics, port=args.metrics_port)
        try:
            await run_pusher(
                args.kind,
                args.store,
                ledger=ledger,
                amqp_url=settings.amqp_url or "",
                redis_url=settings.redis_url,
                redis_prefix=settings.redis_prefix,
                stop_event=stop,
                metrics=metrics,
                secret_key=settings.token_secret,
            )
        finally:
            if server is not None:
                server.close()

    try:
        asyncio.run(main())
    except SealError as exc:
        sys.exit(f"atp: {exc}")
    except LookupError as exc:
        sys.exit(f"atp: {exc}")
    finally:
        ledger.close()
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.pushers.runner import replay_dead_letters

    if not settings.amqp_url:
        sys.exit("atp: `atp dlq replay` needs RabbitMQ; set ATP_AMQP_URL")
    try:
        moved = asyncio.run(replay_dead_letters(settings.amqp_url, args.queue))
    except LookupError as exc:
        sys.exit(f"atp: {exc}")
    print(f"moved {moved} message(s) back to {args.queue.removesuffix('.dlq')}")
    return 0


def cmd_demo(settings: Settings, _: argparse.Namespace) -> int:
    from api.demo import demo_skus, load_demo
    from api.service import CommandService

    _check_migrated(settings)
    ledger = _ledger(settings, create=settings.embedded)
    service = CommandService(ledger)
    service.start()
    try:
        started = time.monotonic()
        changed = load_demo(service)
        took = time.monotonic() - started
        print(
            f"demo catalogue loaded: 3 locations, 3 channels, {len(demo_skus())} SKUs "
            f"({changed} command(s) recorded changes, {took:.2f}s)"
        )
    finally:
        service.stop()
        ledger.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atp", description="Central available-to-sell service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the ledger tables (safe to run again)")
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    sweep = sub.add_parser("sweep", help="record expiry of holds past their expires_at")
    sweep.add_argument("--once", action="store_true", help="sweep once and exit")
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between sweeps")
    sub.add_parser("demo", help="load the demo catalogue")
    project = sub.add_parser("project", help="keep the Redis read model up to date")
    project.add_argument(
        "--rebuild", action="store_true", help="rebuild it from the ledger, then switch over"
    )
    project.add_argument("--once", action="store_true", help="catch up (or rebuild) and exit")
    sub.add_parser("webhooks", help="apply queued WooCommerce order webhooks to the ledger")
    push = sub.add_parser("push", help="push availability changes to one channel integration")
    push.add_argument("kind", choices=["woocommerce", "amazon", "ebay"])
    push.add_argument("--store", required=True, help="the integration's name")
    push.add_argument(
        "--metrics-port", type=int, default=0, help="serve this pusher's /metrics on this port"
    )
    dlq = sub.add_parser("dlq", help="dead-letter queues")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    replay = dlq_sub.add_parser("replay", help="move dead-lettered messages back to their queue")
    replay.add_argument("queue", help="e.g. atp.push.woocommerce.shop (or its .dlq)")
    return parser


COMMANDS = {
    "migrate": cmd_migrate,
    "serve": cmd_serve,
    "sweep": cmd_sweep,
    "demo": cmd_demo,
    "project": cmd_project,
    "webhooks": cmd_webhooks,
    "push": cmd_push,
    "dlq": cmd_dlq,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
