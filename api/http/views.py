"""Response views built from domain state (pure functions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from api.http import schemas as s
from atp.events import Hold
from atp.state import ItemState, OrderState, ReservationState


def holds_view(holds: tuple[Hold, ...]) -> list[s.HoldView]:
    return [s.HoldView(h.location, h.quantity, h.backorder) for h in holds]


def reservation_view(r: ReservationState, now: datetime) -> s.ReservationView:
    return s.ReservationView(
        reservation_id=r.reservation_id,
        status=r.status_at(now),
        expires_at=r.expires_at,
        channel=r.channel,
        lines=[s.ReservationLineView(x.sku, x.quantity, holds_view(x.holds)) for x in r.lines],
        reference=r.reference,
        order_id=r.order_id,
    )


def order_view(o: OrderState) -> s.OrderView:
    return s.OrderView(
        order_id=o.order_id,
        status=o.status,
        channel=o.channel,
        lines=[
            s.OrderLineView(x.sku, x.quantity, x.allocated, x.shipped, x.returned, x.canceled)
            for x in o.lines
        ],
        reservation_id=o.reservation_id,
        unmapped=[s.UnmappedLineView(u.line, u.reason, u.sku) for u in o.unmapped],
    )


def movement_view(
    kind: str, pairs: list[tuple[str, str]], items: dict[str, ItemState], **extra: Any
) -> s.MovementView:
    lines = []
    for sku, location in pairs:
        stock = items[sku].at(location)
        lines.append(s.MovementLine(sku, location, stock.on_hand, stock.in_transit, stock.incoming))
    return s.MovementView(kind=kind, lines=lines, **extra)


def history_entry(
    position: int, occurred_at: datetime, metadata: dict[str, str], event: Any
) -> dict[str, Any]:
    fields = msgspec.to_builtins(event)
    fields.pop("type", None)
    entry: dict[str, Any] = {
        "position": position,
        "type": type(event).__name__,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "correlation_id": metadata.get("correlation_id"),
    }
    holds = getattr(event, "holds", None) or getattr(event, "allocations", None)
    if holds and "quantity" not in fields:
        entry["quantity"] = sum(h.quantity for h in holds)
        locations = {h.location for h in holds}
        if len(locations) == 1:
            entry["location"] = next(iter(locations))
    entry.update(fields)
    return entry
