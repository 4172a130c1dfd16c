"""RabbitMQ: the topology atp relies on, and the confirmed publisher of availability changes.

    exchange atp.availability (topic)  --<channel>.#-->  atp.push.<kind>.<store>  (quorum)
    exchange atp.dead-letter (direct)  --<queue>-->     <queue>.dlq              (quorum)
    atp.webhooks.woocommerce (quorum): accepted WooCommerce webhook deliveries

Every work queue dead-letters to its own `.dlq` after `DELIVERY_LIMIT` deliveries, so a
message that keeps failing is parked, never dropped; `atp dlq replay QUEUE` moves it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

EXCHANGE = "atp.availability"
DEAD_LETTER_EXCHANGE = "atp.dead-letter"
WEBHOOK_QUEUE = "atp.webhooks.woocommerce"
DELIVERY_LIMIT = 10


def push_queue(kind: str, store: str) -> str:
    return f"atp.push.{kind}.{store}"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


class AvailabilityChanged(msgspec.Struct, frozen=True):
    """The body of a message on atp.availability."""

    channel: str
    sku: str
    available: int
    status: str
    position: int
    occurred_at: datetime

    @property
    def routing_key(self) -> str:
        return f"{self.channel}.{self.sku}"

    @property
    def message_id(self) -> str:
        return f"{self.channel}:{self.sku}:{self.position}"


_encoder = msgspec.json.Encoder()


async def declare_work_queue(channel: AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    """A durable quorum queue with its dead-letter queue."""
    dlx = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        dead_letter_queue(name), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dlq.bind(dlx, routing_key=name)
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": DELIVERY_LIMIT,
            # One consumer at a time, so a store's figures are never written out of order.
            "x-single-active-consumer": True,
        },
    )


async def declare_topology(
    channel: AbstractChannel, pushers: Iterable[tuple[str, str, str]] = ()
) -> None:
    """Exchanges, the webhook queue, and one push queue per (kind, store, channel code)."""
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await declare_work_queue(channel, WEBHOOK_QUEUE)
    for kind, store, channel_code in pushers:
        queue = await declare_work_queue(channel, push_queue(kind, store))
        await queue.bind(exchange, routing_key=f"{channel_code}.#")


class Publisher:
    """Publishes availability changes with publisher confirms, from synchronous code.

    It owns an event loop in a thread; `publish` returns once the broker confirmed every
    message (or raises), so the caller can record its position only after that.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection: AbstractRobustConnection | None = None
        self.exchange: Any = None
        self.published = 0
        self._call(self._connect())

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def _connect(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        channel = await self.connection.channel(publisher_confirms=True)
        await declare_topology(channel)
        self.exchange = await channel.get_exchange(EXCHANGE)

    async def _publish(self, changes: list[tuple[AvailabilityChanged, str]]) -> None:
        await asyncio.gather(
            *(
                self.exchange.publish(
                    aio_pika.Message(
                        _encoder.encode(change),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=change.message_id,
                        headers={"correlation_id": correlation_id},
                        correlation_id=correlation_id,
                    ),
                    routing_key=change.routing_key,
                )
                for change, correlation_id in changes
            )
        )

    def publish(self, changes: list[tuple[AvailabilityChanged, str]]) -> None:
        if changes:
            self._call(self._publish(changes))
            self.published += len(changes)

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                self._call(self.connection.close(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
