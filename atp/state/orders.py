"""The order stream: its lines (ordered, allocated, shipped, returned, cancelled),
shipments, returns and unmapped channel lines."""

from __future__ import annotations

from typing import Literal, assert_never

import msgspec

from atp import events as ev

OrderStatus = Literal[
    "accepted",
    "allocated",
    "partially_shipped",
    "shipped",
    "canceled",
    "partially_returned",
    "returned",
]


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class OrderLineState(msgspec.Struct, frozen=True, gc=False):
    """One SKU of an order: units ordered, allocated, shipped, returned and cancelled."""

    sku: str
    quantity: int
    allocated: int = 0
    shipped: int = 0
    returned: int = 0
    canceled: int = 0

    @property
    def open(self) -> int:
        """Units still to ship: ordered, less canceled and shipped."""
        return self.quantity - self.canceled - self.shipped


class OrderState(msgspec.Struct, frozen=True, gc=False):
    """An order: its lines, the reservation it came from, its shipments and returns."""

    order_id: str
    channel: str
    lines: tuple[OrderLineState, ...]
    reservation_id: str | None = None
    shipments: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    unmapped: tuple[ev.UnmappedLine, ...] = ()
    """The channel's lines atp could not map to an item (with the reason); never item state."""

    def line(self, sku: str) -> OrderLineState | None:
        """The order's line of `sku`, or None."""
        return next((line for line in self.lines if line.sku == sku), None)

    @property
    def status(self) -> OrderStatus:
        """allocated, accepted (some units owed), partially_shipped, shipped, canceled,
        partially_returned or returned, derived from the lines."""
        shipped = sum(line.shipped for line in self.lines)
        returned = sum(line.returned for line in self.lines)
        if returned:
            return "returned" if returned >= shipped else "partially_returned"
        if all(line.quantity == line.canceled for line in self.lines):
            return "canceled"
        if shipped:
            return "shipped" if all(line.open == 0 for line in self.lines) else "partially_shipped"
        wanted = all(line.allocated >= line.quantity - line.canceled for line in self.lines)
        return "allocated" if wanted else "accepted"


def _update_lines(
    state: OrderState, lines: tuple[ev.OrderLine, ...] | tuple[ev.ReturnLine, ...], field: str
) -> tuple[OrderLineState, ...]:
    added: dict[str, int] = {}
    for line in lines:
        added[line.sku] = added.get(line.sku, 0) + line.quantity
    return tuple(
        msgspec.structs.replace(line, **{field: getattr(line, field) + added[line.sku]})
        if line.sku in added
        else line
        for line in state.lines
    )


def evolve_order(state: OrderState | None, event: ev.OrderEvent) -> OrderState | None:
    """The order after `event` (None until it is placed, or until a channel order with
    only unmapped lines is recorded)."""
    if isinstance(event, ev.OrderPlaced):
        short = {line.sku: line.quantity for line in event.shortfall}
        return OrderState(
            order_id=event.order_id,
            channel=event.channel,
            lines=tuple(
                OrderLineState(
                    sku=line.sku,
                    quantity=line.quantity,
                    allocated=line.quantity - short.get(line.sku, 0),
                )
                for line in event.lines
            ),
            reservation_id=event.reservation_id,
        )
    if state is None:
        if isinstance(event, ev.OrderLinesUnmapped):
            return OrderState(
                order_id=event.order_id, channel=event.channel, lines=(), unmapped=event.lines
            )
        return None
    match event:
        case ev.OrderShortfallFilled(sku=sku, quantity=q):
            filled = (ev.OrderLine(sku, q),)
            return msgspec.structs.replace(state, lines=_update_lines(state, filled, "allocated"))
        case ev.OrderCanceled(lines=lines):
            return msgspec.structs.replace(state, lines=_update_lines(state, lines, "canceled"))
        case ev.OrderShipped(shipment_id=sid, lines=lines):
            return msgspec.structs.replace(
                state,
                lines=_update_lines(state, lines, "shipped"),
                shipments=(*state.shipments, sid),
            )
        case ev.OrderReturned(return_id=rid, lines=lines):
            return msgspec.structs.replace(
                state, lines=_update_lines(state, lines, "returned"), returns=(*state.returns, rid)
            )
        case ev.OrderRevised(lines=lines):
            return msgspec.structs.replace(state, lines=_revised_lines(state, lines))
        case ev.OrderLinesUnmapped(lines=lines):
            return msgspec.structs.replace(state, unmapped=lines)
        case _:
            assert_never(event)


def _revised_lines(
    state: OrderState, revised: tuple[ev.RevisedLine, ...]
) -> tuple[OrderLineState, ...]:
    """The order's lines after a revision: new quantities, nothing canceled; shipped and
    returned units stay. A line left with nothing ordered, shipped or returned goes."""
    by_sku = {line.sku: line for line in revised}
    lines = []
    for line in state.lines:
        new = by_sku.pop(line.sku, None)
        if new is not None:
            line = msgspec.structs.replace(
                line, quantity=new.quantity, allocated=new.allocated, canceled=0
            )
        lines.append(line)
    lines += [OrderLineState(x.sku, x.quantity, allocated=x.allocated) for x in by_sku.values()]
    return tuple(x for x in lines if x.quantity or x.shipped or x.returned)
