"""Applying a WooCommerce order snapshot: the snapshot rule (which snapshot is applied)
and the decision of one snapshot (the order's revision plus the record of the snapshot,
in one job). Mapping the store's JSON to a snapshot is adapters.webhooks' job."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from adapters.ledger import StreamKey
from adapters.records import WebhookOrderApplied
from adapters.webhooks import NOT_SALE, SALE, OrderSnapshot
from atp import commands as cmd
from atp.decide import decide, reads
from atp.streams import Stream


def skip_reason(snap: OrderSnapshot, last: WebhookOrderApplied | None) -> str | None:
    """Why a snapshot is not applied (the snapshot rule above), or None to apply it."""
    if snap.status not in SALE and snap.status not in NOT_SALE:
        return f"status {snap.status!r} is not one atp knows; the order is left as it is"
    if last is None:
        return None
    if snap.modified and snap.modified < last.modified:  # no time: a deletion, the newest
        return f"older ({snap.modified}) than the last applied snapshot ({last.modified})"
    if snap.modified == last.modified and snap.state == last.state:
        return "the same state as the last applied snapshot"
    if snap.modified == last.modified and snap.delivery_key in last.deliveries:
        return f"delivery {snap.delivery} was applied already (a redelivery)"
    return None


MAX_DELIVERIES = 50
"""Deliveries of one second remembered per order (a bound: one second holds few)."""


def deliveries_after(snap: OrderSnapshot, last: WebhookOrderApplied | None) -> tuple[str, ...]:
    """The `deliveries` to record once `snap` is applied: those of its second, plus its own."""
    kept = last.deliveries if last is not None and last.modified == snap.modified else ()
    if not snap.delivery_key:
        return kept
    return (*kept, snap.delivery_key)[-MAX_DELIVERIES:]


def last_applied(records: Iterable[Any]) -> WebhookOrderApplied | None:
    """The newest WebhookOrderApplied in an order's snapshot records (None: none yet)."""
    applied = [r for r in records if isinstance(r, WebhookOrderApplied)]
    return applied[-1] if applied else None


def revision(snap: OrderSnapshot, channel: str) -> cmd.ReviseOrder:
    """The domain command a snapshot asks for: revise the order to its lines and state."""
    return cmd.ReviseOrder(
        order_id=snap.order_id,
        channel=channel,
        lines=snap.lines,
        open=snap.status in SALE,
        unmapped=snap.unmapped,
    )


def decide_snapshot(
    snap: OrderSnapshot, channel: str, last: WebhookOrderApplied | None, world: Any, now: datetime
) -> tuple[list[tuple[Any, Any]], str | None]:
    """The events a snapshot decides (the order's revision plus the record of the snapshot)
    and, when it changes nothing, why. Pure: `world` is an `atp.decide.World`."""
    reason = skip_reason(snap, last)
    if reason is not None:
        return [], reason
    events = decide(revision(snap, channel), world, now)
    record = WebhookOrderApplied(
        order_id=snap.order_id,
        modified=snap.modified,
        status=snap.status,
        state=snap.state,
        refunds=snap.refunds,
        refunded=snap.refunded,
        deliveries=deliveries_after(snap, last),
    )
    return [*events, (applied_stream(snap.order_id), record)], (
        None if events else "the ledger already holds this state"
    )


def applied_stream(order_id: str) -> Stream:
    """The stream of an order's applied snapshots (WebhookOrderApplied records)."""
    return ("webhook-order", order_id)


class OrderDecider:
    """Decides an order snapshot as one job: its revision's events plus the record of the
    snapshot, in one transaction. `reason` says why a decided snapshot changed nothing."""

    def __init__(self, snap: OrderSnapshot, channel: str) -> None:
        self.snap = snap
        self.channel = channel
        self.stream = applied_stream(snap.order_id)
        self.reads: Sequence[StreamKey] = [self.stream, *reads(revision(snap, channel))]
        self.fresh: Sequence[StreamKey] = ()
        self.likely_new: Sequence[StreamKey] = ()
        self.reason: str | None = None

    def __call__(self, world: Any, now: datetime) -> list[tuple[Any, Any]]:
        last = last_applied(world.records(self.stream))
        events, self.reason = decide_snapshot(self.snap, self.channel, last, world, now)
        return events
