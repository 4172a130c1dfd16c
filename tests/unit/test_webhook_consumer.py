"""`atp webhooks` applies the queued deliveries of one order in the order they were queued.

RabbitMQ hands the consumer up to 32 deliveries at once and each is handled as its own task;
two states of an order with the same `date_modified_gmt` are told apart by arrival alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.webhooks import WooOrder
from api.service.order_sync import IN_ORDER
from api.workers.webhook_consumer import WebhookConsumer


class Message:
    """What the consumer uses of an aio_pika incoming message."""

    def __init__(self, order: dict[str, Any]) -> None:
        self.body = json.dumps(order).encode()
        self.headers = {"store": "shop", "correlation_id": "c"}
        self.correlation_id = "c"
        self.outcome = ""

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nack(self, requeue: bool = True) -> None:
        self.outcome = "nack"

    async def reject(self, requeue: bool = False) -> None:
        self.outcome = "reject"


class Recording(WebhookConsumer):
    """Applies nothing: records the order of application; the first state is slow."""

    def __init__(self) -> None:
        super().__init__(None, None, "amqp://unused", b"k" * 32)  # type: ignore[arg-type]
        self.seen: list[tuple[int, str]] = []

    async def apply(self, store: str, order: WooOrder, cid: str, delivery: str = "") -> None:
        await asyncio.sleep(0.05 if order.status == "pending" else 0)
        self.seen.append((order.id, order.status))


def test_one_orders_deliveries_are_applied_in_queue_order() -> None:
    """Story: a checkout's pending and processing snapshots (same second) and another
    order's delivery arrive together. Invariant: order 1 ends with processing applied last,
    whatever the handlers' timing; other orders do not wait for it; nothing is left locked."""
    consumer = Recording()
    same = "2026-11-26T10:00:00"
    messages = [
        Message({"id": 1, "status": "pending", "date_modified_gmt": same}),
        Message({"id": 1, "status": "processing", "date_modified_gmt": same}),
        Message({"id": 2, "status": "processing", "date_modified_gmt": same}),
        Message([1, 2]),  # type: ignore[arg-type]
    ]

    async def deliver() -> None:
        await asyncio.gather(*(asyncio.create_task(consumer.handle(m)) for m in messages))

    asyncio.run(deliver())
    assert consumer.seen == [(2, "processing"), (1, "pending"), (1, "processing")]
    assert [m.outcome for m in messages] == ["ack", "ack", "ack", "reject"]
    assert IN_ORDER.locks == {}
