"""decide(command, world, now) -> events: every stock and policy rule lives here.

`World` gives the current state of the streams a command reads. Asking for a stream the
caller has not loaded raises `NeedStreams`, so the caller can load it and decide again;
that keeps the domain free of I/O while letting a command discover what it reads (a
reservation release reads the reservation, then the items it names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol

from atp import commands as cmd
from atp import events as ev
from atp.ats import channel_availability, location_figures, plan_holds
from atp.errors import (
    AlreadyExists,
    IllegalState,
    InsufficientStock,
    InvalidCommand,
    NegativeQuantity,
    NotFound,
    ShortLine,
    UnknownChannel,
    UnknownLocation,
)
from atp.events import Hold
from atp.state import (
    Channel,
    ItemState,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
)

StreamKind = Literal["policies", "item", "order", "reservation", "transfer"]
Stream = tuple[StreamKind, str]
POLICIES: Stream = ("policies", "global")
Decision = list[tuple[Stream, ev.Event]]

LOCATION_KINDS = ("warehouse", "store", "dropship")
DISPOSITIONS = ("restock", "damaged")


class NeedStreams(Exception):
    """The command reads streams the caller has not loaded yet."""

    def __init__(self, streams: Sequence[Stream]) -> None:
        super().__init__(streams)
        self.streams = tuple(streams)


class _LineLike(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...


class World(Protocol):
    """Read access to the current state of streams (raises NeedStreams when not loaded)."""

    def policies(self) -> Policies: ...
    def item(self, sku: str) -> ItemState: ...
    def items(self, skus: Iterable[str]) -> dict[str, ItemState]: ...
    def order(self, order_id: str) -> OrderState | None: ...
    def reservation(self, reservation_id: str) -> ReservationState | None: ...
    def transfer(self, transfer_id: str) -> TransferState | None: ...


def decide(command: cmd.Command, world: World, now: datetime) -> Decision:
    match command:
        case cmd.DefineLocation():
            return _define_location(command, world)
        case cmd.DefineChannel():
            return _define_channel(command, world)
        case cmd.SetSafetyStock():
            return _set_safety_stock(command, world)
        case cmd.ReceiveStock():
            return _receive(command, world)
        case cmd.AdjustStock():
            return _adjust(command, world)
        case cmd.CountStock():
            return _count(command, world)
        case cmd.ShipTransfer():
            return _ship_transfer(command, world, now)
        case cmd.ReceiveTransfer():
            return _receive_transfer(command, world)
        case cmd.ExpectIncoming():
            return _expect_incoming(command, world)
        case cmd.ReserveStock():
            return _reserve(command, world, now)
        case cmd.ExtendReservation():
            return _extend(command, world, now)
        case cmd.ReleaseReservation():
            return _release(command, world, now)
        case cmd.ExpireReservation():
            return _expire(command, world, now)
        case cmd.CommitReservation():
            return _commit(command, world, now)
        case cmd.PlaceOrder():
            return _place_order(command, world, now)
        case cmd.AcceptOrder():
            return _accept_order(command, world, now)
        case cmd.CancelOrder():
            return _cancel_order(command, world)
        case cmd.ShipOrder():
            return _ship_order(command, world, now)
        case cmd.ReturnOrder():
            return _return_order(command, world)
        case cmd.ReviseOrder():
            return _revise_order(command, world, now)
    raise InvalidCommand("type", f"unknown command {type(command).__name__}")


# --- checks shared by commands --------------------------------------------------------------


def _location(policies: Policies, code: str, field: str) -> None:
    if code not in policies.locations:
        raise UnknownLocation(field, code)


def _channel(policies: Policies, code: str, field: str = "channel") -> Channel:
    channel = policies.channels.get(code)
    if channel is None:
        raise UnknownChannel(field, code)
    return channel


def _lines(lines: Sequence[_LineLike], minimum: int = 1) -> None:
    if not lines:
        raise InvalidCommand("lines", "at least one line is required")
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.sku in seen:
            raise InvalidCommand(f"lines[{i}].sku", f"SKU {line.sku!r} appears more than once")
        seen.add(line.sku)
        if line.quantity < minimum:
            raise InvalidCommand(f"lines[{i}].quantity", f"quantity must be >= {minimum}")


def _non_negative(value: int, field: str) -> None:
    if value < 0:
        raise InvalidCommand(field, f"{field} must be >= 0")


# --- policies --------------------------------------------------------------------------------


def _define_location(c: cmd.DefineLocation, world: World) -> Decision:
    if c.kind not in LOCATION_KINDS:
        raise InvalidCommand("kind", f"kind must be one of {', '.join(LOCATION_KINDS)}")
    event = ev.LocationDefined(code=c.code, name=c.name, kind=c.kind, active=c.active)
    current = world.policies().locations.get(c.code)
    if current is not None and (current.name, current.kind, current.active) == (
        c.name,
        c.kind,
        c.active,
    ):
        return []
    return [(POLICIES, event)]


def _define_channel(c: cmd.DefineChannel, world: World) -> Decision:
    policies = world.policies()
    if not c.locations:
        raise InvalidCommand("locations", "a channel needs at least one location")
    if len(set(c.locations)) != len(c.locations):
        raise InvalidCommand("locations", "a location appears more than once")
    for i, code in enumerate(c.locations):
        _location(policies, code, f"locations[{i}]")
    for field in ("buffer", "backorder_limit", "low_stock_threshold"):
        _non_negative(getattr(c, field), field)
    if not 0 <= c.share_percent <= 100:
        raise InvalidCommand("share_percent", "share_percent must be between 0 and 100")
    event = ev.ChannelDefined(
        code=c.code,
        locations=c.locations,
        buffer=c.buffer,
        share_percent=c.share_percent,
        backorder_limit=c.backorder_limit,
        low_stock_threshold=c.low_stock_threshold,
    )
    current = policies.channels.get(c.code)
    if current is not None and (
        current.locations,
        current.buffer,
        current.share_percent,
        current.backorder_limit,
        current.low_stock_threshold,
    ) == (c.locations, c.buffer, c.share_percent, c.backorder_limit, c.low_stock_threshold):
        return []
    return [(POLICIES, event)]


def _set_safety_stock(c: cmd.SetSafetyStock, world: World) -> Decision:
    _non_negative(c.quantity, "quantity")
    if c.location is not None:
        _location(world.policies(), c.location, "location")
    key = c.location or "*"
    event = ev.SafetyStockSet(sku=c.sku, location=c.location, quantity=c.quantity)
    if c.sku is None:
        if world.policies().safety_stock.get(key, 0) == c.quantity:
            return []
        return [(POLICIES, event)]
    if world.item(c.sku).safety_stock.get(key, 0) == c.quantity:
        return []
    return [(("item", c.sku), event)]


# --- stock movements -------------------------------------------------------------------------


def _receive(c: cmd.ReceiveStock, world: World) -> Decision:
    _location(world.policies(), c.location, "location")
    _lines(c.lines)
    items = world.items(line.sku for line in c.lines)
    decision: Decision = []
    for line in c.lines:
        incoming = items[line.sku].at(c.location).incoming
        event = ev.StockReceived(
            sku=line.sku,
            location=c.location,
            quantity=line.quantity,
            reference=c.reference,
            incoming_consumed=min(incoming, line.quantity),
        )
        decision.append((("item", line.sku), event))
    return decision


def _adjust(c: cmd.AdjustStock, world: World) -> Decision:
    _location(world.policies(), c.location, "location")
    if c.delta == 0:
        raise InvalidCommand("delta", "delta must not be 0")
    stock = world.item(c.sku).at(c.location)
    if stock.on_hand + c.delta < 0:
        raise NegativeQuantity(c.sku, c.location, "on_hand", stock.on_hand, c.delta)
    if c.damaged and stock.damaged + c.delta < 0:
        raise NegativeQuantity(c.sku, c.location, "damaged", stock.damaged, c.delta)
    if not c.damaged and stock.on_hand - stock.damaged + c.delta < 0:
        # on_hand includes damaged units; a plain adjustment moves only the good ones.
        raise NegativeQuantity(
            c.sku, c.location, "undamaged on_hand", stock.on_hand - stock.damaged, c.delta
        )
    event = ev.StockAdjusted(
        sku=c.sku, location=c.location, delta=c.delta, reason=c.reason, damaged=c.damaged
    )
    return [(("item", c.sku), event)]


def _count(c: cmd.CountStock, world: World) -> Decision:
    _location(world.policies(), c.location, "location")
    if not c.lines:
        raise InvalidCommand("lines", "at least one line is required")
    seen: set[str] = set()
    for i, line in enumerate(c.lines):
        if line.sku in seen:
            raise InvalidCommand(f"lines[{i}].sku", f"SKU {line.sku!r} appears more than once")
        seen.add(line.sku)
        _non_negative(line.counted, f"lines[{i}].counted")
    items = world.items(seen)
    return [
        (
            ("item", line.sku),
            ev.StockCounted(
                sku=line.sku,
                location=c.location,
                counted=line.counted,
                previous=items[line.sku].at(c.location).on_hand,
            ),
        )
        for line in c.lines
    ]


def _free_to_leave(item: ItemState, policies: Policies, location: str, now: datetime) -> int:
    """Units physically at the location that nothing has claimed (safety stock may leave)."""
    f = location_figures(item, policies, location, now)
    uncovered = max(0, f.backordered - f.incoming)
    return max(0, f.on_hand - f.allocated - f.held - f.damaged - uncovered)


def _ship_transfer(c: cmd.ShipTransfer, world: World, now: datetime) -> Decision:
    policies = world.policies()
    _location(policies, c.from_location, "from_location")
    _location(policies, c.to_location, "to_location")
    if c.from_location == c.to_location:
        raise InvalidCommand("to_location", "a transfer needs two different locations")
    _lines(c.lines)
    if world.transfer(c.transfer_id) is not None:
        raise AlreadyExists("transfer", c.transfer_id)
    items = world.items(line.sku for line in c.lines)
    short = []
    for line in c.lines:
        free = _free_to_leave(items[line.sku], policies, c.from_location, now)
        if line.quantity > free:
            short.append(ShortLine(line.sku, line.quantity, free))
    if short:
        raise InsufficientStock(short)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.TransferDispatched(
                sku=line.sku,
                transfer_id=c.transfer_id,
                from_location=c.from_location,
                to_location=c.to_location,
                quantity=line.quantity,
            ),
        )
        for line in c.lines
    ]
    lines = tuple(ev.OrderLine(line.sku, line.quantity) for line in c.lines)
    shipped = ev.TransferShipped(
        transfer_id=c.transfer_id,
        from_location=c.from_location,
        to_location=c.to_location,
        lines=lines,
    )
    decision.append((("transfer", c.transfer_id), shipped))
    return decision


def _receive_transfer(c: cmd.ReceiveTransfer, world: World) -> Decision:
    transfer = world.transfer(c.transfer_id)
    if transfer is None:
        raise NotFound("transfer", c.transfer_id)
    if transfer.status != "in_transit":
        raise IllegalState("transfer", c.transfer_id, transfer.status, "receive")
    decision: Decision = [
        (
            ("item", line.sku),
            ev.TransferArrived(
                sku=line.sku,
                transfer_id=c.transfer_id,
                to_location=transfer.to_location,
                quantity=line.quantity,
            ),
        )
        for line in transfer.lines
    ]
    decision.append((("transfer", c.transfer_id), ev.TransferReceived(transfer_id=c.transfer_id)))
    return decision


def _expect_incoming(c: cmd.ExpectIncoming, world: World) -> Decision:
    _location(world.policies(), c.location, "location")
    _lines(c.lines)
    return [
        (
            ("item", line.sku),
            ev.IncomingExpected(
                sku=line.sku,
                location=c.location,
                quantity=line.quantity,
                eta=c.eta,
                reference=c.reference,
            ),
        )
        for line in c.lines
    ]


# --- reservations and orders -----------------------------------------------------------------


def _plan(
    world: World, channel_code: str, lines: Sequence[cmd.Line], now: datetime
) -> list[tuple[cmd.Line, tuple[Hold, ...]]]:
    """Holds for every line, or InsufficientStock naming each line that falls short.

    Lines are distinct SKUs, and each SKU is one aggregate, so deciding the lines one by
    one against their own item is exact: together they cannot over-reserve.
    """
    policies = world.policies()
    channel = _channel(policies, channel_code)
    _lines(lines)
    items = world.items(line.sku for line in lines)
    planned = []
    short = []
    for line in lines:
        plan = plan_holds(items[line.sku], policies, channel, line.quantity, now)
        if isinstance(plan, ShortLine):
            short.append(plan)
        else:
            planned.append((line, plan))
    if short:
        raise InsufficientStock(short)
    return planned


def _reserve(c: cmd.ReserveStock, world: World, now: datetime) -> Decision:
    if not 1 <= c.ttl_seconds <= 86_400:
        raise InvalidCommand("ttl_seconds", "ttl_seconds must be between 1 and 86400")
    if world.reservation(c.reservation_id) is not None:
        raise AlreadyExists("reservation", c.reservation_id)
    planned = _plan(world, c.channel, c.lines, now)
    expires_at = now + timedelta(seconds=c.ttl_seconds)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.StockHeld(
                sku=line.sku,
                reservation_id=c.reservation_id,
                channel=c.channel,
                holds=holds,
                expires_at=expires_at,
            ),
        )
        for line, holds in planned
    ]
    placed = ev.ReservationPlaced(
        reservation_id=c.reservation_id,
        channel=c.channel,
        lines=tuple(ev.ReservedLine(line.sku, line.quantity, holds) for line, holds in planned),
        expires_at=expires_at,
        reference=c.reference,
    )
    decision.append((("reservation", c.reservation_id), placed))
    return decision


def _held_reservation(
    world: World, reservation_id: str, now: datetime, action: str
) -> ReservationState:
    reservation = world.reservation(reservation_id)
    if reservation is None:
        raise NotFound("reservation", reservation_id)
    status = reservation.status_at(now)
    if status != "held":
        raise IllegalState("reservation", reservation_id, status, action)
    return reservation


def _extend(c: cmd.ExtendReservation, world: World, now: datetime) -> Decision:
    if not 1 <= c.ttl_seconds <= 86_400:
        raise InvalidCommand("ttl_seconds", "ttl_seconds must be between 1 and 86400")
    reservation = _held_reservation(world, c.reservation_id, now, "extend")
    expires_at = now + timedelta(seconds=c.ttl_seconds)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.HoldExtended(sku=line.sku, reservation_id=c.reservation_id, expires_at=expires_at),
        )
        for line in reservation.lines
    ]
    extended = ev.ReservationExtended(reservation_id=c.reservation_id, expires_at=expires_at)
    decision.append((("reservation", c.reservation_id), extended))
    return decision


def _release(c: cmd.ReleaseReservation, world: World, now: datetime) -> Decision:
    reservation = _held_reservation(world, c.reservation_id, now, "release")
    decision: Decision = [
        (("item", line.sku), ev.HoldReleased(sku=line.sku, reservation_id=c.reservation_id))
        for line in reservation.lines
    ]
    released = ev.ReservationReleased(reservation_id=c.reservation_id)
    decision.append((("reservation", c.reservation_id), released))
    return decision


def _expire(c: cmd.ExpireReservation, world: World, now: datetime) -> Decision:
    reservation = world.reservation(c.reservation_id)
    if reservation is None or reservation.status != "held" or now < reservation.expires_at:
        return []
    decision: Decision = [
        (("item", line.sku), ev.HoldExpired(sku=line.sku, reservation_id=c.reservation_id))
        for line in reservation.lines
    ]
    expired = ev.ReservationExpired(reservation_id=c.reservation_id)
    decision.append((("reservation", c.reservation_id), expired))
    return decision


def _commit(c: cmd.CommitReservation, world: World, now: datetime) -> Decision:
    reservation = _held_reservation(world, c.reservation_id, now, "commit")
    if world.order(c.order_id) is not None:
        raise AlreadyExists("order", c.order_id)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.HoldCommitted(sku=line.sku, reservation_id=c.reservation_id, order_id=c.order_id),
        )
        for line in reservation.lines
    ]
    committed = ev.ReservationCommitted(reservation_id=c.reservation_id, order_id=c.order_id)
    decision.append((("reservation", c.reservation_id), committed))
    placed = ev.OrderPlaced(
        order_id=c.order_id,
        channel=reservation.channel,
        lines=tuple(ev.OrderLine(line.sku, line.quantity) for line in reservation.lines),
        reservation_id=c.reservation_id,
    )
    decision.append((("order", c.order_id), placed))
    return decision


def _place_order(c: cmd.PlaceOrder, world: World, now: datetime) -> Decision:
    if world.order(c.order_id) is not None:
        raise AlreadyExists("order", c.order_id)
    planned = _plan(world, c.channel, c.lines, now)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.StockAllocated(
                sku=line.sku, order_id=c.order_id, channel=c.channel, allocations=holds
            ),
        )
        for line, holds in planned
    ]
    placed = ev.OrderPlaced(
        order_id=c.order_id,
        channel=c.channel,
        lines=tuple(ev.OrderLine(line.sku, line.quantity) for line, _ in planned),
        reservation_id=None,
    )
    decision.append((("order", c.order_id), placed))
    return decision


def _accept_order(c: cmd.AcceptOrder, world: World, now: datetime) -> Decision:
    if world.order(c.order_id) is not None:
        return []  # the same order seen again (a webhook redelivered or re-sent)
    policies = world.policies()
    channel = _channel(policies, c.channel)
    _lines(c.lines)
    items = world.items(line.sku for line in c.lines)
    decision: Decision = []
    shortfall: list[ev.OrderLine] = []
    for line in c.lines:
        events, missing = _allocate_or_owe(
            items[line.sku], policies, channel, c.order_id, line.quantity, now
        )
        decision += events
        if missing:
            shortfall.append(ev.OrderLine(line.sku, missing))
    placed = ev.OrderPlaced(
        order_id=c.order_id,
        channel=c.channel,
        lines=tuple(ev.OrderLine(line.sku, line.quantity) for line in c.lines),
        reservation_id=None,
        shortfall=tuple(shortfall),
    )
    decision.append((("order", c.order_id), placed))
    return decision


def _existing_order(world: World, order_id: str) -> OrderState:
    order = world.order(order_id)
    if order is None:
        raise NotFound("order", order_id)
    return order


def _order_lines(order: OrderState, lines: Sequence[_LineLike]) -> None:
    _lines(lines)
    for i, line in enumerate(lines):
        if order.line(line.sku) is None:
            raise InvalidCommand(f"lines[{i}].sku", f"SKU {line.sku!r} is not on the order")


def _take_back(allocations: tuple[Hold, ...], quantity: int) -> tuple[Hold, ...]:
    """Which allocations a cancel returns: backorder promises first, then the last sourced."""
    taken: list[Hold] = []
    ordered = [h for h in allocations if h.backorder] + [
        h for h in reversed(allocations) if not h.backorder
    ]
    for h in ordered:
        take = min(quantity, h.quantity)
        if take > 0:
            taken.append(Hold(h.location, take, h.backorder))
            quantity -= take
    return tuple(taken)


def _cancel_order(c: cmd.CancelOrder, world: World) -> Decision:
    order = _existing_order(world, c.order_id)
    if c.lines is None:
        wanted = [cmd.Line(line.sku, line.open) for line in order.lines if line.open > 0]
        if not wanted:
            raise IllegalState("order", c.order_id, order.status, "cancel")
    else:
        _order_lines(order, c.lines)
        wanted = list(c.lines)
        short = []
        for line in wanted:
            order_line = order.line(line.sku)
            assert order_line is not None
            if line.quantity > order_line.open:
                short.append(ShortLine(line.sku, line.quantity, order_line.open))
        if short:
            raise InsufficientStock(short, "cannot cancel more than the unshipped quantity")
    items = world.items(line.sku for line in wanted)
    decision: Decision = []
    for line in wanted:
        decision += _release_units(items[line.sku], c.order_id, line.quantity)[0]
    canceled = ev.OrderCanceled(
        order_id=c.order_id, lines=tuple(ev.OrderLine(line.sku, line.quantity) for line in wanted)
    )
    decision.append((("order", c.order_id), canceled))
    return decision


def _ship_order(c: cmd.ShipOrder, world: World, now: datetime) -> Decision:
    policies = world.policies()
    order = _existing_order(world, c.order_id)
    _location(policies, c.location, "location")
    if c.shipment_id in order.shipments:
        raise AlreadyExists("shipment", c.shipment_id)
    _order_lines(order, c.lines)
    items = world.items(line.sku for line in c.lines)
    decision: Decision = []
    for line in c.lines:
        order_line = order.line(line.sku)
        assert order_line is not None
        if line.quantity > order_line.open:
            raise InsufficientStock(
                [ShortLine(line.sku, line.quantity, order_line.open)],
                f"{line.sku!r}: only {order_line.open} unit(s) of the order are left to ship",
            )
        item = items[line.sku]
        allocations = item.allocations.get(c.order_id, ())
        regular = sum(
            h.quantity for h in allocations if h.location == c.location and not h.backorder
        )
        backorder = sum(h.quantity for h in allocations if h.location == c.location and h.backorder)
        if line.quantity > regular + backorder:
            raise InsufficientStock(
                [ShortLine(line.sku, line.quantity, regular + backorder)],
                f"{line.sku!r}: only {regular + backorder} unit(s) are allocated to the order "
                f"at {c.location!r}",
            )
        from_backorder = line.quantity - min(line.quantity, regular)
        live = location_figures(item, policies, c.location, now)
        good = live.on_hand - live.damaged
        if line.quantity > good:
            label = "undamaged on_hand" if live.damaged else "on_hand"
            raise NegativeQuantity(line.sku, c.location, label, good, -line.quantity)
        # Backordered units ship only out of stock nothing else claims (which includes the
        # deliveries that arrived for backorders), judged on live holds.
        unclaimed = live.on_hand - live.allocated - live.held - live.damaged
        if from_backorder > unclaimed:
            raise InsufficientStock(
                [ShortLine(line.sku, line.quantity, regular)],
                f"{line.sku!r}: the backordered units have not arrived at {c.location!r}",
            )
        shipped = ev.StockShipped(
            sku=line.sku,
            order_id=c.order_id,
            shipment_id=c.shipment_id,
            location=c.location,
            quantity=line.quantity,
            backorder_quantity=from_backorder,
        )
        decision.append((("item", line.sku), shipped))
    order_shipped = ev.OrderShipped(
        order_id=c.order_id,
        shipment_id=c.shipment_id,
        location=c.location,
        lines=tuple(ev.OrderLine(line.sku, line.quantity) for line in c.lines),
    )
    decision.append((("order", c.order_id), order_shipped))
    return decision


def _return_order(c: cmd.ReturnOrder, world: World) -> Decision:
    order = _existing_order(world, c.order_id)
    _location(world.policies(), c.location, "location")
    if c.return_id in order.returns:
        raise AlreadyExists("return", c.return_id)
    _order_lines(order, c.lines)
    decision: Decision = []
    short = []
    for i, line in enumerate(c.lines):
        if line.disposition not in DISPOSITIONS:
            raise InvalidCommand(
                f"lines[{i}].disposition", f"disposition must be one of {', '.join(DISPOSITIONS)}"
            )
        order_line = order.line(line.sku)
        assert order_line is not None
        returnable = order_line.shipped - order_line.returned
        if line.quantity > returnable:
            short.append(ShortLine(line.sku, line.quantity, returnable))
        returned = ev.StockReturned(
            sku=line.sku,
            order_id=c.order_id,
            return_id=c.return_id,
            location=c.location,
            quantity=line.quantity,
            disposition=line.disposition,
        )
        decision.append((("item", line.sku), returned))
    if short:
        raise InsufficientStock(short, "cannot return more than was shipped")
    order_returned = ev.OrderReturned(
        order_id=c.order_id,
        return_id=c.return_id,
        location=c.location,
        lines=tuple(ev.ReturnLine(line.sku, line.quantity, line.disposition) for line in c.lines),
    )
    decision.append((("order", c.order_id), order_returned))
    return decision


def _allocate_or_owe(
    item: ItemState,
    policies: Policies,
    channel: Channel,
    order_id: str,
    quantity: int,
    now: datetime,
) -> tuple[Decision, int]:
    """Units of a sale already made (never refused): what the channel can cover is allocated,
    the rest is recorded as the order's shortfall on the item. Returns the events and the
    shortfall (units)."""
    available = channel_availability(item, policies, channel, now).available
    take = min(quantity, max(0, available))
    decision: Decision = []
    if take:
        holds = plan_holds(item, policies, channel, take, now)
        assert not isinstance(holds, ShortLine)
        allocated = ev.StockAllocated(
            sku=item.sku, order_id=order_id, channel=channel.code, allocations=holds
        )
        decision.append((("item", item.sku), allocated))
    missing = quantity - take
    if missing:
        recorded = ev.ShortfallRecorded(sku=item.sku, order_id=order_id, quantity=missing)
        decision.append((("item", item.sku), recorded))
    return decision, missing


def _release_units(item: ItemState, order_id: str, quantity: int) -> tuple[Decision, int]:
    """Give back `quantity` unshipped units of an order: its shortfall first (units never
    covered), then its allocations (see `_take_back`). Returns the events and the shortfall
    units resolved."""
    decision: Decision = []
    unallocated = min(quantity, item.shortfalls.get(order_id, 0))
    if unallocated:
        resolved = ev.ShortfallResolved(sku=item.sku, order_id=order_id, quantity=unallocated)
        decision.append((("item", item.sku), resolved))
    released = _take_back(item.allocations.get(order_id, ()), quantity - unallocated)
    if released:
        event = ev.AllocationReleased(sku=item.sku, order_id=order_id, allocations=released)
        decision.append((("item", item.sku), event))
    return decision, unallocated


def _revise_order(c: cmd.ReviseOrder, world: World, now: datetime) -> Decision:
    """Converge an order a channel already took to the channel's desired state (see
    `cmd.ReviseOrder`): per SKU, the units left to ship become `desired - shipped` when the
    order is open, 0 when it is closed. Decides nothing when the ledger already holds that
    state. Raises UnknownChannel for a new order on an unknown channel, InvalidCommand for
    repeated SKUs or quantities below 1."""
    if c.lines:
        _lines(c.lines)
    order = world.order(c.order_id)
    unmapped: Decision = []
    if c.unmapped != (order.unmapped if order is not None else ()):
        lines_unmapped = ev.OrderLinesUnmapped(
            order_id=c.order_id, channel=c.channel, lines=c.unmapped
        )
        unmapped.append((("order", c.order_id), lines_unmapped))
    if order is None:
        if not (c.open and c.lines):
            return unmapped  # not a sale (yet): nothing to hold
        accept = cmd.AcceptOrder(order_id=c.order_id, channel=c.channel, lines=c.lines)
        return _accept_order(accept, world, now) + unmapped
    policies = world.policies()
    channel = _channel(policies, order.channel)
    desired = {line.sku: line.quantity for line in c.lines} if c.open else {}
    skus = [line.sku for line in order.lines] + [s for s in desired if order.line(s) is None]
    items = world.items(skus)
    decision: Decision = []
    revised: list[ev.RevisedLine] = []
    canceled: list[ev.OrderLine] = []
    changed = False
    for sku in skus:
        line = order.line(sku)
        shipped, now_open = (line.shipped, line.open) if line is not None else (0, 0)
        target = max(0, desired.get(sku, 0) - shipped)
        shortfall = items[sku].shortfalls.get(c.order_id, 0)
        if target > now_open:
            events, missing = _allocate_or_owe(
                items[sku], policies, channel, c.order_id, target - now_open, now
            )
            shortfall += missing
        else:
            events, resolved = _release_units(items[sku], c.order_id, now_open - target)
            shortfall -= resolved
            if now_open > target:
                canceled.append(ev.OrderLine(sku, now_open - target))
        decision += events
        quantity = shipped + target
        revised.append(ev.RevisedLine(sku, quantity, quantity - shortfall))
        changed = changed or line is None or (line.quantity, line.canceled) != (quantity, 0)
    if not c.open:
        if canceled:
            order_canceled = ev.OrderCanceled(order_id=c.order_id, lines=tuple(canceled))
            decision.append((("order", c.order_id), order_canceled))
    elif changed:
        reopened = bool(order.lines) and order.status == "canceled"
        order_revised = ev.OrderRevised(
            order_id=c.order_id, lines=tuple(revised), reopened=reopened
        )
        decision.append((("order", c.order_id), order_revised))
    return decision + unmapped


def reads(command: cmd.Command) -> list[Stream]:
    """Streams a command is known to read before it is decided, so a caller can load them
    in one go; a command may still discover more (NeedStreams)."""
    streams: list[Stream] = [POLICIES]
    by_id: tuple[tuple[str, StreamKind], ...] = (
        ("order_id", "order"),
        ("reservation_id", "reservation"),
        ("transfer_id", "transfer"),
    )
    for field, kind in by_id:
        value = getattr(command, field, None)
        if isinstance(value, str):
            streams.append((kind, value))
    sku = getattr(command, "sku", None)
    if isinstance(sku, str):
        streams.append(("item", sku))
    lines: Sequence[_LineLike] | None = getattr(command, "lines", None)
    streams += [("item", line.sku) for line in lines or ()]
    return streams
