"""The API's side of the webhook queue: publish an accepted delivery, confirmed."""

from __future__ import annotations

from typing import Any

import aio_pika

from adapters.amqp import WEBHOOK_QUEUE, declare_topology, declare_work_queue


class WebhookQueue:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = None
        self.channel: Any = None

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await declare_work_queue(self.channel, WEBHOOK_QUEUE)

    async def publish(self, body: bytes, headers: dict[str, str]) -> None:
        """Returns once RabbitMQ has the message on disk (publisher confirm)."""
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers),
            correlation_id=headers.get("correlation_id"),
        )
        await self.channel.default_exchange.publish(message, routing_key=WEBHOOK_QUEUE)

    async def declare_pusher(self, kind: str, store: str, channel: str) -> None:
        """A registered integration's push queue exists from then on, so no change published
        before its pusher first starts is lost."""
        await declare_topology(self.channel, [(kind, store, channel)])

    async def ping(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
