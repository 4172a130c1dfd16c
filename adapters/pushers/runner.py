"""Wiring of a store's pusher: its integration record (secrets opened), its channel client,
its read-model figure source and metrics hooks (`build_pusher`), and `run_pusher`, the
`atp push` process. The pusher itself is `adapters.pushers.pusher`; the names importers
used from this module are re-exported."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import Any

import msgspec

from adapters.amqp import push_queue as push_queue
from adapters.pushers.base import ChannelClient, ClientHooks
from adapters.pushers.dlq import replay_dead_letters as replay_dead_letters
from adapters.pushers.figures import RedisFigures
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics
from adapters.pushers.options import PushOptions as PushOptions
from adapters.pushers.pusher import Pusher as Pusher
from adapters.pushers.reconcile import ReconcileReport as ReconcileReport
from adapters.records import IntegrationConfigured
from adapters.sealing import SECRETS, SealError, is_sealed, open_settings

KINDS: dict[str, str] = {
    "woocommerce": "adapters.pushers.woocommerce",
    "amazon": "adapters.pushers.amazon",
    "ebay": "adapters.pushers.ebay",
}
"""Channel kind -> module with `create(settings, store, hooks) -> ChannelClient`."""


def load_integration(
    ledger: Any, kind: str, store: str, secret_key: bytes | None = None
) -> IntegrationConfigured:
    """The current IntegrationConfigured of a store with its secrets opened with the
    service key (synchronous: call it in a thread). LookupError when there is none;
    SealError when a sealed secret does not open (no key, or another key)."""
    records, _ = ledger.load(("integration", f"{kind}:{store}"))
    found = [r for r in records if isinstance(r, IntegrationConfigured)]
    if not found:
        raise LookupError(f"no {kind} integration {store!r}")
    record = found[-1]
    names = SECRETS.get(kind, ())
    if any(is_sealed(record.settings.get(name)) for name in names):
        if not secret_key:
            raise SealError(f"{kind} integration {store!r} has sealed secrets and no key given")
        settings = open_settings(record.settings, names, secret_key)
        record = msgspec.structs.replace(record, settings=settings)
    return record


def create_client(record: IntegrationConfigured, hooks: ClientHooks) -> ChannelClient:
    if record.kind not in KINDS:
        raise LookupError(f"no pusher for integration kind {record.kind!r}")
    module = importlib.import_module(KINDS[record.kind])
    client: ChannelClient = module.create(record.settings, record.store, hooks)
    return client


async def build_pusher(
    kind: str,
    store: str,
    *,
    ledger: Any,
    amqp_url: str,
    redis_url: str | None = None,
    redis_prefix: str = "atp",
    metrics: PusherMetrics | None = None,
    options: PushOptions | None = None,
    secret_key: bytes | None = None,
    redis: Any = None,
) -> Pusher:
    """A pusher for the store registered under `kind`/`store` (call `aclose()` after);
    `secret_key` (Settings.token_secret) opens the integration's sealed secrets. `redis`
    (an asyncio client the caller owns, e.g. from api.bootstrap) is used as it is; else
    one is made for `redis_url` and closed with the pusher."""
    record = await asyncio.to_thread(load_integration, ledger, kind, store, secret_key)
    options = options or PushOptions()
    metrics = metrics or PusherMetrics()
    labels = metrics.labels(kind, store, record.channel)
    redis_client = redis
    owned = redis is None and redis_url is not None
    if redis is None and redis_url is not None:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(redis_url)

    def on_request(status: str) -> None:
        metrics.inc("requests", (*labels, ("status", status)))

    def on_event(name: str, extra: Mapping[str, str]) -> None:
        metrics.inc(name, (*labels, *sorted(extra.items())))

    hooks = ClientHooks(
        on_request=on_request,
        on_event=on_event,
        redis=redis_client,
        redis_prefix=redis_prefix,
        http_timeout=options.http_timeout,
        rate_burst=options.rate_burst,
    )
    try:
        client = create_client(record, hooks)
    except Exception:
        if owned:
            await redis_client.aclose()
        raise
    pusher = Pusher(
        client,
        kind=kind,
        store=store,
        channel=record.channel,
        amqp_url=amqp_url,
        figures=RedisFigures(redis_client, redis_prefix) if redis_client is not None else None,
        metrics=metrics,
        options=options,
    )
    if redis_client is not None:
        if owned:
            pusher._closers.append(redis_client.aclose)
        pusher.report_to = (redis_client, report_key(redis_prefix, kind, store))
    return pusher


def report_key(prefix: str, kind: str, store: str) -> str:
    return f"{prefix}:push:{kind}:{store}"


async def run_pusher(
    kind: str,
    store: str,
    *,
    ledger: Any,
    amqp_url: str,
    redis_url: str | None = None,
    redis_prefix: str = "atp",
    stop_event: asyncio.Event | None = None,
    metrics: PusherMetrics | None = None,
    options: PushOptions | None = None,
    secret_key: bytes | None = None,
    redis: Any = None,
) -> None:
    """`atp push <kind> --store NAME`: reconcile the store, then push changes until
    `stop_event` is set (graceful: held figures are written first) or the task is
    cancelled. Raises LookupError for an unknown integration."""
    pusher = await build_pusher(
        kind,
        store,
        ledger=ledger,
        amqp_url=amqp_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        metrics=metrics,
        options=options,
        secret_key=secret_key,
        redis=redis,
    )
    try:
        await pusher.run(stop_event)
    finally:
        await pusher.aclose()
