"""`atp dlq replay`: move dead-lettered push messages back to their work queue."""

from __future__ import annotations

import logging

import aio_pika

from adapters.amqp import (
    dead_letter_queue,
)

# Re-exported: the pushers' metrics live in adapters.pushers.metrics.
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics

log = logging.getLogger("atp.push")


async def replay_dead_letters(amqp_url: str, queue: str) -> int:
    """`atp dlq replay QUEUE`: move the messages parked in `<queue>.dlq` back to `<queue>`
    (QUEUE may name either); returns how many moved. Each is published with confirms to the
    work queue before it is removed from the dead-letter queue (at least once). Only the
    messages present at the start move, so one that fails again is not replayed in a loop.
    LookupError when the queue does not exist."""
    name = queue.removesuffix(".dlq")
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        probe = await connection.channel()
        try:
            await probe.declare_queue(name, passive=True)
            await probe.declare_queue(dead_letter_queue(name), passive=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise LookupError(f"no queue {name!r} with a dead-letter queue: {exc}") from None
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await channel.declare_queue(dead_letter_queue(name), passive=True)
        total = dlq.declaration_result.message_count or 0
        moved = 0
        for _ in range(total):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    timestamp=message.timestamp,
                    type=message.type,
                    app_id=message.app_id,
                ),
                routing_key=name,
                mandatory=True,
            )
            await message.ack()
            moved += 1
        log.info("moved %d message(s) from %s back to %s", moved, dead_letter_queue(name), name)
        return moved
