"""`atp webhooks`: applies queued WooCommerce order deliveries to the ledger.

Each delivery is decided with its order's last applied snapshot (see adapters.webhooks), so
redeliveries, coalesced snapshots and late arrivals do nothing twice. A delivery that cannot
be read is dead-lettered at once; one that fails for another reason is retried by RabbitMQ
until the queue's delivery limit parks it in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import aio_pika

from adapters.amqp import WEBHOOK_QUEUE, declare_work_queue
from adapters.ledger import Ledger
from adapters.webhooks import OrderDecider, snapshot
from api.log import correlation_id
from api.routes.integrations import current, integration_stream
from api.service import CommandService, Job, Outcome, Reply

log = logging.getLogger("atp.webhooks")


class WebhookConsumer:
    def __init__(self, ledger: Ledger, service: CommandService, amqp_url: str) -> None:
        self.ledger = ledger
        self.service = service
        self.amqp_url = amqp_url
        self.applied = 0
        self.unmapped_lines = 0
        self.dead_lettered = 0

    def apply(self, store: str, body: bytes, cid: str) -> None:
        records, _ = self.ledger.load(integration_stream("woocommerce", store))
        record = current(records)
        if record is None:
            raise LookupError(f"no WooCommerce store {store!r}")
        snap = snapshot(store, json.loads(body))
        if snap.unmapped:
            self.unmapped_lines += len(snap.unmapped)
            log.warning(
                "order %s: %d line(s) without a SKU were not mapped: %s",
                snap.order_id,
                len(snap.unmapped),
                [item.get("name") or item.get("product_id") for item in snap.unmapped],
            )

        def render(outcome: Outcome) -> Reply:
            if outcome.error is not None:
                raise outcome.error
            return Reply(200, b"")

        self.service.run_sync(Job(OrderDecider(snap, record.channel), render, cid))
        self.applied += 1

    async def handle(self, message: Any) -> None:
        headers = message.headers or {}
        store = str(headers.get("store", ""))
        cid = str(headers.get("correlation_id") or message.correlation_id or "")
        correlation_id.set(cid or "-")
        try:
            json.loads(message.body)
        except ValueError:
            log.error("undecodable delivery for store %r: dead-lettered", store)
            self.dead_lettered += 1
            await message.reject(requeue=False)
            return
        try:
            await asyncio.to_thread(self.apply, store, message.body, cid)
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
