"""The pushers' integration-test kit: RabbitMQ, ledger and Redis fixtures, configuring a
store, publishing changes, and waiting for the fake channels to settle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
import redis

from adapters.amqp import (
    EXCHANGE,
    AvailabilityChanged,
    dead_letter_queue,
)
from adapters.ledger import Ledger, LedgerEvent, ledger_env, stream_id
from adapters.pushers.runner import (
    Pusher,
    PushOptions,
)
from adapters.records import IntegrationConfigured
from tests.support.fakes import FakeWooCommerce
from tests.support.pg import fresh_database
from tests.support.redis_db import prefixed

LISTINGS = "/listings/2021-08-01/items/"


AMQP_BASE = os.environ.get("ATP_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")


FAST = PushOptions(
    window=0.15,
    backoff_base=0.05,
    backoff_cap=1.0,
    reconnect_delay=0.2,
    depth_interval=0.3,
    max_attempts=6,
    drain_timeout=2.0,
)


_encoder = msgspec.json.Encoder()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A vhost of this test's own on the shared broker."""
    vhost = f"atptest-push-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_BASE}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with fresh_database() as url:
        Ledger(env=ledger_env(url, str(tmp_path), create_table=True)).close()
        ledger = Ledger(env=ledger_env(url, str(tmp_path), create_table=False))
        yield ledger
        ledger.close()


@pytest.fixture
def rds() -> Iterator[tuple[redis.Redis, str]]:
    with prefixed(0, "push") as (r, prefix):
        yield r, prefix


def configure(
    ledger: Ledger, kind: str, store: str, channel: str, settings: dict[str, Any]
) -> None:
    """Record an integration the way PUT /v1/integrations/{kind}/{store} does."""
    stream = ("integration", f"{kind}:{store}")
    _, version = ledger.load(stream)
    record = IntegrationConfigured(kind=kind, store=store, channel=channel, settings=settings)
    ledger.append([LedgerEvent(stream_id(stream), version + 1, datetime.now(UTC), record, {})])


def configure_wc(
    ledger: Ledger, wc: FakeWooCommerce, store: str = "shop", rate: float = 50
) -> None:
    configure(
        ledger,
        "woocommerce",
        store,
        "web",
        {
            "url": wc.url,
            "channel": "web",
            "consumer_key": "ck_fake",
            "consumer_secret": "cs_fake",
            "webhook_secrets": ["whsec"],
            "max_requests_per_second": rate,
        },
    )


def set_figures(
    r: redis.Redis, prefix: str, channel: str, figures: dict[str, tuple[int, int]]
) -> None:
    """Write figures into the read model's layout (as the projector does)."""
    pipe = r.pipeline(transaction=False)
    for sku, (available, position) in figures.items():
        doc = {"sku": sku, "channel": channel, "available": available, "status": "in_stock",
               "position": position}  # fmt: skip
        pipe.hset(
            f"{prefix}:{{{sku}}}:ats",
            mapping={channel: _encoder.encode(doc), "_position": position},
        )
        pipe.sadd(f"{prefix}:skus", sku)
    pipe.execute()


def change(sku: str, available: int, position: int, channel: str = "web") -> AvailabilityChanged:
    status = "in_stock" if available > 5 else ("out_of_stock" if available == 0 else "low_stock")
    return AvailabilityChanged(channel, sku, available, status, position, datetime.now(UTC))


async def publish(amqp_url: str, changes: list[AvailabilityChanged]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for i in range(0, len(changes), 500):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            _encoder.encode(ch),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=ch.message_id,
                            headers={"correlation_id": "test"},
                        ),
                        routing_key=ch.routing_key,
                    )
                    for ch in changes[i : i + 500]
                )
            )


async def queue_counts(amqp_url: str, queue: str) -> tuple[int, int]:
    """Messages ready in (queue, its dead-letter queue)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        dlq = await channel.declare_queue(dead_letter_queue(queue), passive=True)
        return (
            q.declaration_result.message_count or 0,
            dlq.declaration_result.message_count or 0,
        )


async def eventually(check: Callable[[], bool], within: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(pusher: Pusher) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(pusher.run(stop))
    try:
        await eventually(lambda: pusher.connected.is_set() or task.done(), what="pusher connected")
        if task.done():
            task.result()
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await pusher.aclose()


def stocks(wc: FakeWooCommerce, skus: list[str]) -> dict[str, int | None]:
    return {sku: wc.stock_of(sku) for sku in skus}


def batch_posts(wc: FakeWooCommerce) -> list[Any]:
    return [r for r in wc.requests("POST") if r.path.endswith("/batch")]


def settled(pusher: Pusher) -> bool:
    return not pusher.pending


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best
