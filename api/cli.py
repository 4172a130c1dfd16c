"""The `atp` command line: migrate, serve, sweep, demo, project, webhooks, push, dlq.

Settings come from ATP_* environment variables (api/settings.py), read once here; an option
given on the command line overrides its variable. A variable that does not convert ends the
command with one line naming it (exit status 2), never a traceback. Every command asks the
composition root (api.bootstrap) for the ledger, the command service and the clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

from adapters.ledger import Ledger
from api import cli_reconcile
from api.bootstrap import Services, bootstrap
from api.log import configure as configure_logging
from api.settings import SecretKeyMissing, Settings, SettingsError

log = logging.getLogger("atp")


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    from api.service.tokens import adopt_legacy_tokens

    services = bootstrap(settings, create_tables=True)
    try:
        adopted = adopt_legacy_tokens(services.ledger)
        head = services.ledger.head()
    finally:
        services.close()
    if adopted:
        print(f"{adopted} token(s) issued before the token registry entered into it")
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

    services = bootstrap(settings, create_tables=False)
    ledger = services.ledger
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
        services.close()
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
    services = bootstrap(settings, create_tables=False)
    try:
        services.ledger.head()
    except Exception as exc:
        sys.exit(f"atp: the ledger is not ready ({type(exc).__name__}: {exc}); run `atp migrate`")
    finally:
        services.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.http.httpserver import HTTP_LIMITS

    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    try:
        settings.token_secret  # noqa: B018 - refuse to start without a key
    except SecretKeyMissing as exc:
        sys.exit(f"atp: {exc}")
    if settings.embedded:
        cmd_migrate(settings, args)
    _check_migrated(settings)
    if not settings.admin_token:
        log.warning(
            "no ATP_ADMIN_TOKEN is set: only tokens created earlier with POST /v1/tokens are "
            "accepted (every other request answers 401). To get a token, restart with "
            "ATP_ADMIN_TOKEN=<a secret of your choice>, use it as `Authorization: Bearer "
            "<secret>` and create scoped tokens with POST /v1/tokens"
        )
    # uvicorn's one-process server re-raises the SIGTERM it stopped on once it put back the
    # handler it found: the default one killed the process before the `with` below cleaned
    # up (a metrics directory and env file left in /tmp per stop). Ours exits with 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Each worker reads the ATP_* settings itself (api.http.app:asgi_factory); host, port and
    # workers are uvicorn's own options.
    with _metrics_directory(workers) as env_file:
        uvicorn.run(
            "api.http.app:asgi_factory",
            factory=True,
            env_file=env_file,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level,
            log_config=None,  # uvicorn logs through atp's handler (text or JSON)
            access_log=False,  # atp logs one line per request itself
            **HTTP_LIMITS,
        )
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """`atp serve`'s SIGTERM handler: SystemExit(0), so that `with` and `finally` blocks run."""
    raise SystemExit(0)


@contextlib.contextmanager
def _metrics_directory(workers: int = 1) -> Iterator[str | None]:
    """The workers' shared places, named to them by an env file this command owns
    (uvicorn's `env_file`, loaded before the app is imported and inherited by every worker),
    never by writing this process's environment:

    - prometheus-client's multiprocess mode: every worker writes its samples under
      PROMETHEUS_MULTIPROC_DIR, and /metrics adds them all up. The variable may name a
      directory (emptied first); unset, a temporary one is used and removed afterwards;
    - with several workers, ATP_WRITER_SOCKET in a temporary directory of this command:
      the socket of the worker that decides every /v1 write (api.http.forwarding).

    Yields that file (None when there is nothing to name)."""
    import shutil
    import tempfile
    from pathlib import Path

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="atp-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    lines = [] if given else [f"PROMETHEUS_MULTIPROC_DIR={directory}"]
    run_dir = Path(tempfile.mkdtemp(prefix="atp-run-")) if workers > 1 else None
    if run_dir is not None:
        lines.append(f"ATP_WRITER_SOCKET={run_dir / 'writer.sock'}")
    env_file = None
    if lines:
        handle, name = tempfile.mkstemp(prefix="atp-serve-", suffix=".env")
        with os.fdopen(handle, "w") as out:
            out.write("\n".join(lines) + "\n")
        env_file = Path(name)
    try:
        yield None if env_file is None else str(env_file)
    finally:
        if env_file is not None:
            env_file.unlink(missing_ok=True)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


def cmd_sweep(settings: Settings, args: argparse.Namespace) -> int:
    from api.service.sweeper import Sweeper

    _check_migrated(settings)
    with bootstrap(settings).running() as services:
        sweeper = Sweeper(services.ledger, services.commands)
        if args.once:
            print(f"expired {sweeper.sweep_once()} reservation(s)")
            return 0
        stop = threading.Event()
        try:
            sweeper.run(args.interval, stop)
        except KeyboardInterrupt:
            stop.set()
        return 0


def cmd_project(settings: Settings, args: argparse.Namespace) -> int:
    from api.collector import settle
    from projections.runner import RedisProjection

    if not settings.redis_url:
        sys.exit(
            "atp: `atp project` keeps the Redis read model; set ATP_REDIS_URL "
            "(without it, `atp serve` projects in process)"
        )
    if args.check:
        return _check_projector(settings)
    _check_migrated(settings)
    services = bootstrap(settings)
    settle()  # its folded states churn: see api.collector
    projection = RedisProjection(
        services.ledger,
        settings.redis_url,
        settings.redis_prefix,
        settings.redis_rebuild_db,
        publisher=services.publisher(),
        client=services.redis(),
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
            if not projection.acquire():
                print("another projector holds the lease and keeps the read model")
                return 0
            try:
                projection.take_over()  # rebuilds the model if Redis lost it
                print(f"projected {projection.projector.catch_up()} event(s)")
            finally:
                projection.release()
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            projection.run(stop)
        except KeyboardInterrupt:
            stop.set()
        return 0
    finally:
        services.close()


CHECK_STALE_SECONDS = 30.0
"""`--check` of a long-running command fails when its process has not shown life for this long."""


def _check_projector(settings: Settings) -> int:
    """`atp project --check` (a container healthcheck): 0 when the projector's heartbeat in
    the read model (written every 2 s, idle or not) is younger than CHECK_STALE_SECONDS."""
    from adapters.redis_keys import RedisKeys

    services = bootstrap(settings)
    try:
        raw = services.redis(socket_timeout=5).hget(
            RedisKeys(settings.redis_prefix).meta, "heartbeat"
        )
    finally:
        services.close()
    age = None if raw is None else time.time() - float(raw)
    if age is None or age > CHECK_STALE_SECONDS:
        print(f"atp: no projector heartbeat for {'ever' if age is None else f'{age:.0f}s'}")
        return 1
    print(f"projector alive (heartbeat {age:.1f}s ago)")
    return 0


def _check_consumed(url: str, queue: str) -> int:
    """`atp webhooks|push --check` (a container healthcheck): 0 when `queue` has a consumer
    (a pusher still waiting for its store to be registered has none: unhealthy, with why)."""
    import aio_pika

    async def consumers() -> int:
        connection = await aio_pika.connect(url, timeout=5)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.consumer_count or 0

    try:
        count = asyncio.run(consumers())
    except Exception as exc:
        print(f"atp: cannot inspect queue {queue} ({type(exc).__name__}: {exc})")
        return 1
    if not count:
        print(f"atp: nothing consumes {queue}")
        return 1
    print(f"{queue}: {count} consumer(s)")
    return 0


def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.amqp import WEBHOOK_QUEUE
    from api.service.order_sync import report_loop
    from api.workers.order_poller import OrderPoller
    from api.workers.webhook_consumer import WebhookConsumer

    if not settings.amqp_url:
        sys.exit("atp: `atp webhooks` consumes RabbitMQ; set ATP_AMQP_URL")
    if args.check:
        return _check_consumed(settings.amqp_url, WEBHOOK_QUEUE)
    _check_migrated(settings)
    services = bootstrap(settings).open()
    ledger, service = services.ledger, services.commands
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = WebhookConsumer(ledger, service, settings.amqp_url, settings.token_secret)

    async def main() -> None:
        tasks = [consumer.run(stop)]
        if settings.order_poll_seconds > 0:
            tasks.append(
                OrderPoller(ledger, service, settings.token_secret).run(
                    settings.order_poll_seconds, stop
                )
            )
        reporter = None
        if settings.redis_url:
            client = services.async_redis()
            reporter = asyncio.create_task(report_loop(client, settings.redis_prefix))
        try:
            await asyncio.gather(*tasks)
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
                await client.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        services.close()
    return 0


def cmd_push(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.pushers.metrics import PusherMetrics, serve_metrics
    from adapters.pushers.runner import run_pusher
    from adapters.sealing import SealError

    if not settings.amqp_url:
        sys.exit("atp: `atp push` consumes RabbitMQ; set ATP_AMQP_URL")
    if args.check:
        from adapters.amqp import push_queue

        return _check_consumed(settings.amqp_url, push_queue(args.kind, args.store))
    _check_migrated(settings)
    services = bootstrap(settings)
    ledger = services.ledger

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics = PusherMetrics()
        redis_client = services.async_redis() if settings.redis_url else None
        server = None
        if args.metrics_port:
            server = await serve_metrics(metrics, port=args.metrics_port)
        try:
            waited = await _wait_for_integration(
                ledger, args.kind, args.store, stop, args.poll, settings.token_secret
            )
            if not waited:
                return
            await run_pusher(
                args.kind,
                args.store,
                ledger=ledger,
                amqp_url=settings.amqp_url or "",
                redis_prefix=settings.redis_prefix,
                stop_event=stop,
                metrics=metrics,
                secret_key=settings.token_secret,
                redis=redis_client,
            )
        finally:
            if server is not None:
                server.close()
            if redis_client is not None:
                await redis_client.aclose()

    try:
        asyncio.run(main())
    except SealError as exc:
        sys.exit(f"atp: {exc}")
    except LookupError as exc:
        sys.exit(f"atp: {exc}")
    finally:
        services.close()
    return 0


async def _wait_for_integration(
    ledger: Ledger, kind: str, store: str, stop: asyncio.Event, interval: float, key: bytes
) -> bool:
    """Wait until `kind`/`store` is registered (PUT /v1/integrations/{kind}/{store}),
    checking every `interval` seconds and saying why at the first check and every minute;
    False when `stop` is set first. A pusher started before its store exists thus waits
    instead of exiting (and being restarted in a loop by its supervisor). `key` opens the
    store's sealed secrets (a SealError when they do not open ends the command)."""
    from adapters.pushers.runner import load_integration

    said_at: float | None = None
    while not stop.is_set():
        try:
            await asyncio.to_thread(load_integration, ledger, kind, store, key)
        except LookupError:
            now = time.monotonic()
            if said_at is None or now - said_at >= 60:
                log.warning(
                    "waiting for the %s store %r to be registered "
                    "(PUT /v1/integrations/%s/%s); checking every %gs",
                    kind,
                    store,
                    kind,
                    store,
                    interval,
                )
                said_at = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            continue
        if said_at is not None:
            log.warning("the %s store %r is registered: pushing", kind, store)
        return True
    return False


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


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    _check_migrated(settings)
    with bootstrap(settings).running() as services:
        return _load_demo(services, args.force)


def _load_demo(services: Services, force: bool) -> int:
    from api.service.demo import demo_skus, load_demo

    head = services.ledger.head()
    if head and not force:
        print(
            f"the ledger already holds events (head position {head}): demo not loaded "
            "(`atp demo --force` loads it anyway, setting the demo SKUs' counts again)"
        )
        return 0
    started = time.monotonic()
    changed = load_demo(services.commands)
    took = time.monotonic() - started
    print(
        f"demo catalogue loaded: 3 locations, 3 channels, {len(demo_skus())} SKUs "
        f"({changed} command(s) recorded changes, {took:.2f}s)"
    )
    return 0


def version() -> str:
    """The installed distribution's version ("unknown" when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("atp")
    except PackageNotFoundError:
        return "unknown"


def _overrides(variable: str, text: str) -> str:
    """Help text naming the environment variable an option overrides, and its default."""
    default = Settings.__struct_defaults__[Settings.__struct_fields__.index(variable.lower()[4:])]
    return f"{text} (overrides {variable}; default {default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atp",
        description="Central available-to-sell service",
        epilog="Configured by ATP_* environment variables (see the README's table); "
        "an option overrides the variable it names.",
    )
    parser.add_argument("--version", action="version", version=f"atp {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the ledger tables (safe to run again)")
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help=_overrides("ATP_HOST", "address to listen on"))
    serve.add_argument("--port", type=int, help=_overrides("ATP_PORT", "TCP port to listen on"))
    serve.add_argument(
        "--workers", type=int, help=_overrides("ATP_WORKERS", "API worker processes")
    )
    sweep = sub.add_parser("sweep", help="record expiry of holds past their expires_at")
    sweep.add_argument("--once", action="store_true", help="sweep once and exit")
    sweep.add_argument("--interval", type=float, default=1.0, help="seconds between sweeps")
    demo = sub.add_parser("demo", help="load the demo catalogue into an empty ledger")
    demo.add_argument(
        "--force",
        action="store_true",
        help="load it even into a ledger that has events (resets the demo SKUs' counts)",
    )
    project = sub.add_parser("project", help="keep the Redis read model up to date")
    project.add_argument(
        "--rebuild", action="store_true", help="rebuild it from the ledger, then switch over"
    )
    project.add_argument("--once", action="store_true", help="catch up (or rebuild) and exit")
    project.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if the running projector's heartbeat is fresh, else 1 (a healthcheck)",
    )
    webhooks = sub.add_parser(
        "webhooks", help="apply queued WooCommerce order webhooks to the ledger"
    )
    webhooks.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if something consumes the webhook queue, else 1 (a healthcheck)",
    )
    push = sub.add_parser("push", help="push availability changes to one channel integration")
    push.add_argument(
        "kind", choices=["woocommerce", "amazon", "ebay"], help="the integration's channel kind"
    )
    push.add_argument("--store", required=True, help="the integration's name")
    push.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if something consumes this store's push queue, else 1 (a healthcheck)",
    )
    push.add_argument(
        "--metrics-port", type=int, default=0, help="serve this pusher's /metrics on this port"
    )
    push.add_argument(
        "--poll",
        type=float,
        default=5.0,
        help="seconds between checks for the store's registration while it is missing (default 5)",
    )
    dlq = sub.add_parser("dlq", help="dead-letter queues")
    dlq_sub = dlq.add_subparsers(dest="action", required=True)
    replay = dlq_sub.add_parser("replay", help="move dead-lettered messages back to their queue")
    replay.add_argument("queue", help="e.g. atp.push.woocommerce.shop (or its .dlq)")
    cli_reconcile.add_parser(sub)
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
    "reconcile": cli_reconcile.command,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"atp: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
