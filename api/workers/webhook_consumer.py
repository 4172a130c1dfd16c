"""`atp webhooks`: applies queued WooCommerce order deliveries to the ledger.

Each delivery goes through the same snapshot path as the embedded webhook route and the
poller (api.service.order_sync), so redeliveries, coalesced snapshots and late arrivals do nothing
twice. A delivery that cannot
be read is dead-lettered at once; one that fails for another reason is retried by RabbitMQ
until the queue's delivery limit parks it in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import aio_pika

from adapters.amqp import WEBHOOK_QUEUE, declare_work_queue
from adapters.ledger import Ledger
from adapters.webhooks import NotAnOrder, WooOrder, parse_order
from api.log import correlation_id
from api.service.commands import CommandService
from api.service.integrations import current, integration_stream
from api.service.order_sync import IN_ORDER, OrderSync

log = logging.getLogger("atp.webhooks")


class WebhookConsumer:
    def __init__(
        self, ledger: Ledger, service: CommandService, amqp_url: str, service_key: bytes
    ) -> None:
        self.ledger = ledger
        self.service = service
        self.amqp_url = amqp_url
        self.sync = OrderSync(ledger, service, service_key)
        self.applied = 0
        self.dead_lettered = 0

    async def apply(self, store: str, order: WooOrder, cid: str, delivery: str = "") -> None:
        records, _ = await asyncio.to_thread(
            self.ledger.load, integration_stream("woocommerce", store)
        )
        record = current(records)
        if record is None:
            raise LookupError(f"no WooCommerce store {store!r}")
        await self.sync.apply_order_snapshot(store, record, order, cid, delivery=delivery)
        self.applied += 1

    async def handle(self, message: Any) -> None:
        headers = message.headers or {}
        store = str(headers.get("store", ""))
        cid = str(headers.get("correlation_id") or message.correlation_id or "")
        correlation_id.set(cid or "-")
        try:
            order = parse_order(message.body)
        except NotAnOrder as e:
            log.error("unreadable delivery for store %r (%s): dead-lettered", store, e.detail)
            self.dead_lettered += 1
            await message.reject(requeue=False)
            return
        # Deliveries of one order are applied in the order they were queued: two states
        # with the same time are told apart by arrival alone. Handlers start in delivery
        # order and take the order's lock before their first await.
        try:
            async with IN_ORDER(store, order.id):
                await self.apply(store, order, cid, str(headers.get("delivery_id") or ""))
        except Exception:
            log.exception("delivery for store %r failed; RabbitMQ will redeliver it", store)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def run(self, stop: threading.Event) -> None:
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=32)
            queue = await declare_work_queue(channel, WEBHOOK_QUEUE)
            await queue.consume(self.handle)
            await asyncio.to_thread(stop.wait)
