"""decide(command, world, now) -> events: every stock and policy rule lives here.

`World` gives the current state of the streams a command reads. Asking for a stream the
caller has not loaded raises `NeedStreams`, so the caller can load it and decide again;
that keeps the domain free of I/O while letting a command discover what it reads (a
reservation release reads the reservation, then the items it names).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from atp import commands as cmd
from atp import events as ev
from atp.ats import (
    channel_availability,
    is_active,
    location_figures,
    plan_holds,
    uncovered_claims,
)
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
    evolve_item,
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
            return _receive(command, world, now)
        case cmd.AdjustStock():
            return _adjust(command, world, now)
        case cmd.CountStock():
            return _count(command, world, now)
        case cmd.ShipTransfer():
            return _ship_transfer(command, world, now)
        case cmd.ReceiveTransfer():
            return _receive_transfer(command, world, now)
        case cmd.CloseTransfer():
            return _close_transfer(command, world)
        case cmd.CancelTransfer():
            return _cancel_transfer(command, world, now)
        case cmd.ExpectIncoming():
            return _expect_incoming(command, world, now)
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
            return _return_order(command, world, now)
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


def _by_sku(line: _LineLike) -> Hashable:
    return line.sku


def _lines(
    lines: Sequence[_LineLike],
    minimum: int = 1,
    key: Callable[[_LineLike], Hashable] = _by_sku,
) -> None:
    """At least one line, each distinct by `key` (the SKU unless a line kind says more),
    each quantity >= `minimum`."""
    if not lines:
        raise InvalidCommand("lines", "at least one line is required")
    seen: set[Hashable] = set()
    for i, line in enumerate(lines):
        if key(line) in seen:
            label = f"SKU {line.sku!r}" if key is _by_sku else f"line {key(line)!r}"
            raise InvalidCommand(f"lines[{i}].sku", f"{label} appears more than once")
        seen.add(key(line))
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


def _receive(c: cmd.ReceiveStock, world: World, now: datetime) -> Decision:
    policies = world.policies()
    _location(policies, c.location, "location")
    _lines(c.lines)
    items = world.items(line.sku for line in c.lines)
    decision: Decision = []
    for line in c.lines:
        item = items[line.sku]
        supply = item.expected.get(c.location, {}).get(c.reference or "")
        # A known reference consumes only its own supply; any other receipt, any incoming.
        expected = supply.quantity if supply else item.at(c.location).incoming
        event = ev.StockReceived(
            sku=line.sku,
            location=c.location,
            quantity=line.quantity,
            reference=c.reference,
            incoming_consumed=min(expected, line.quantity),
        )
        decision += _fact(world, item, event, c.location, line.quantity, now)
    return decision


def _fact(
    world: World, item: ItemState, event: ev.Event, location: str, arrived: int, now: datetime
) -> Decision:
    """A physical fact about `item` at `location` and what it implies: units that appeared
    there (`arrived` > 0: a receipt, a transfer arrival or call-off, a restocked return,
    units found by a count or an adjustment) fill owed orders first; a fact that takes
    units away may leave the location over-promised, which is recorded."""
    after = evolve_item(item, event)
    decision: Decision = [(("item", item.sku), event)]
    if arrived > 0:
        return decision + _fill_shortfalls(world, after, location, arrived, now)
    return decision + _over_promise(world.policies(), item, after, location, now)


def _fill_shortfalls(
    world: World, item: ItemState, location: str, arrived: int, now: datetime
) -> Decision:
    """Units that just arrived at `location` (`item` already counts them) fill the open
    shortfalls of orders sold through channels sourcing from it, oldest order first, as
    those orders' allocations; only what is left becomes sellable. Units the location
    already owes to its own allocations and holds (an over-promise) are covered first, and
    safety stock does not keep owed units from an order that was already sold."""
    policies = world.policies()
    if not item.shortfalls or not is_active(policies, location):
        return []
    orders: dict[str, OrderState | None] = {}
    missing: list[Stream] = []
    for order_id in item.shortfalls:
        try:
            orders[order_id] = world.order(order_id)
        except NeedStreams as need:
            missing += need.streams
    if missing:
        raise NeedStreams(missing)
    free = min(arrived, _free_to_leave(item, policies, location, now))
    decision: Decision = []
    for order_id, owed in item.shortfalls.items():
        order = orders[order_id]
        channel = policies.channels.get(order.channel) if order else None
        take = min(owed, free)
        if channel is None or location not in channel.locations or take <= 0:
            continue
        free -= take
        filled = ev.ShortfallFilled(
            sku=item.sku, order_id=order_id, location=location, quantity=take
        )
        decision.append((("item", item.sku), filled))
        order_filled = ev.OrderShortfallFilled(
            order_id=order_id, sku=item.sku, location=location, quantity=take
        )
        decision.append((("order", order_id), order_filled))
    return decision


def _over_promise(
    policies: Policies, before: ItemState, after: ItemState, location: str, now: datetime
) -> Decision:
    """An OverPromised record when a physical fact raised the over-promise at `location`."""
    was = location_figures(before, policies, location, now).over_promised
    units = location_figures(after, policies, location, now).over_promised
    if units <= was:
        return []
    uncovered = uncovered_claims(after, location, units, now)
    event = ev.OverPromised(sku=after.sku, location=location, quantity=units, uncovered=uncovered)
    return [(("item", after.sku), event)]


def _adjust(c: cmd.AdjustStock, world: World, now: datetime) -> Decision:
    policies = world.policies()
    _location(policies, c.location, "location")
    if c.delta == 0:
        raise InvalidCommand("delta", "delta must not be 0")
    item = world.item(c.sku)
    stock = item.at(c.location)
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
    found = 0 if c.damaged else c.delta
    return _fact(world, item, event, c.location, found, now)


def _count(c: cmd.CountStock, world: World, now: datetime) -> Decision:
    policies = world.policies()
    _location(policies, c.location, "location")
    if not c.lines:
        raise InvalidCommand("lines", "at least one line is required")
    seen: set[str] = set()
    for i, line in enumerate(c.lines):
        if line.sku in seen:
            raise InvalidCommand(f"lines[{i}].sku", f"SKU {line.sku!r} appears more than once")
        seen.add(line.sku)
        _non_negative(line.counted, f"lines[{i}].counted")
    items = world.items(seen)
    decision: Decision = []
    for line in c.lines:
        item = items[line.sku]
        event = ev.StockCounted(
            sku=line.sku,
            location=c.location,
            counted=line.counted,
            previous=item.at(c.location).on_hand,
        )
        found = line.counted - event.previous
        decision += _fact(world, item, event, c.location, found, now)
    return decision


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


def _open_transfer(world: World, transfer_id: str, action: str) -> TransferState:
    transfer = world.transfer(transfer_id)
    if transfer is None:
        raise NotFound("transfer", transfer_id)
    if transfer.status != "in_transit":
        raise IllegalState("transfer", transfer_id, transfer.status, action)
    return transfer


def _receive_transfer(c: cmd.ReceiveTransfer, world: World, now: datetime) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "receive")
    if c.lines is None:
        lines = [
            ev.OrderLine(line.sku, transfer.in_transit(line.sku))
            for line in transfer.lines
            if transfer.in_transit(line.sku) > 0
        ]
    else:
        _lines(c.lines)
        short = []
        for i, given in enumerate(c.lines):
            if not any(shipped.sku == given.sku for shipped in transfer.lines):
                raise InvalidCommand(
                    f"lines[{i}].sku", f"SKU {given.sku!r} is not on transfer {c.transfer_id!r}"
                )
            if given.quantity > transfer.in_transit(given.sku):
                short.append(ShortLine(given.sku, given.quantity, transfer.in_transit(given.sku)))
        if short:
            raise InsufficientStock(short, "cannot receive more than is still in transit")
        lines = [ev.OrderLine(given.sku, given.quantity) for given in c.lines]
    items = world.items(line.sku for line in lines)
    decision: Decision = []
    for line in lines:
        arrived = ev.TransferArrived(
            sku=line.sku,
            transfer_id=c.transfer_id,
            to_location=transfer.to_location,
            quantity=line.quantity,
        )
        decision += _fact(world, items[line.sku], arrived, transfer.to_location, line.quantity, now)
    received = ev.TransferReceived(transfer_id=c.transfer_id, lines=tuple(lines))
    decision.append((("transfer", c.transfer_id), received))
    return decision


def _close_transfer(c: cmd.CloseTransfer, world: World) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "close")
    if not c.reason.strip():
        raise InvalidCommand("reason", "a reason is required to write units off as lost")
    lost = [
        ev.OrderLine(line.sku, transfer.in_transit(line.sku))
        for line in transfer.lines
        if transfer.in_transit(line.sku) > 0
    ]
    decision: Decision = [
        (
            ("item", line.sku),
            ev.TransferLost(
                sku=line.sku,
                transfer_id=c.transfer_id,
                to_location=transfer.to_location,
                quantity=line.quantity,
                reason=c.reason,
            ),
        )
        for line in lost
    ]
    closed = ev.TransferClosed(transfer_id=c.transfer_id, reason=c.reason, lines=tuple(lost))
    decision.append((("transfer", c.transfer_id), closed))
    return decision


def _cancel_transfer(c: cmd.CancelTransfer, world: World, now: datetime) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "cancel")
    if any(transfer.received.values()):
        raise IllegalState("transfer", c.transfer_id, "partially received", "cancel")
    items = world.items(line.sku for line in transfer.lines)
    decision: Decision = []
    for line in transfer.lines:
        returned = ev.TransferReturned(
            sku=line.sku,
            transfer_id=c.transfer_id,
            from_location=transfer.from_location,
            to_location=transfer.to_location,
            quantity=line.quantity,
        )
        source = transfer.from_location
        decision += _fact(world, items[line.sku], returned, source, line.quantity, now)
    decision.append((("transfer", c.transfer_id), ev.TransferCanceled(transfer_id=c.transfer_id)))
    return decision


def _expect_incoming(c: cmd.ExpectIncoming, world: World, now: datetime) -> Decision:
    _location(world.policies(), c.location, "location")
    if c.eta is not None and c.eta.utcoffset() is None:
        raise InvalidCommand("eta", "eta must carry a UTC offset (e.g. 2026-03-01T09:00:00Z)")
    eta = c.eta.astimezone(UTC) if c.eta is not None else None
    # With a reference a line replaces what the reference expected, so 0 cancels it.
    _lines(c.lines, minimum=0 if c.reference else 1)
    items = world.items(line.sku for line in c.lines)
    decision: Decision = []
    for line in c.lines:
        had = items[line.sku].expected.get(c.location, {}).get(c.reference or "")
        previous = had.quantity if had else 0
        unchanged = had is not None and (had.quantity, had.eta) == (line.quantity, eta)
        if c.reference is not None and (unchanged or line.quantity == previous == 0):
            continue  # the same document again, or a cancel of nothing: no change
        event = ev.IncomingExpected(
            sku=line.sku,
            location=c.location,
            quantity=line.quantity,
            eta=eta,
            reference=c.reference,
            previous=previous if c.reference is not None else 0,
        )
        # A purchase order cut below what was promised against it leaves promises uncovered.
        decision += _fact(world, items[line.sku], event, c.location, 0, now)
    return decision


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


def _order_lines(
    order: OrderState, lines: Sequence[_LineLike], key: Callable[[_LineLike], Hashable] = _by_sku
) -> None:
    _lines(lines, key=key)
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


def _resource(
    item: ItemState, policies: Policies, order: OrderState, location: str, quantity: int
) -> ev.AllocationMoved | None:
    """The order's allocations to move to `location` so `quantity` units can ship from
    there (a warehouse shipped them from another of the channel's locations), or None when
    enough is allocated there already. InsufficientStock when the order has fewer units
    allocated anywhere, or `location` is not one its channel sources from."""
    allocations = item.allocations.get(order.order_id, ())
    here = sum(h.quantity for h in allocations if h.location == location)
    if quantity <= here:
        return None
    total = sum(h.quantity for h in allocations)
    channel = policies.channels.get(order.channel)
    if quantity > total or channel is None or location not in channel.locations:
        where = f"at {location!r}" if quantity <= total else "in all"
        available = here if quantity <= total else total
        raise InsufficientStock(
            [ShortLine(item.sku, quantity, available)],
            f"{item.sku!r}: only {available} unit(s) are allocated to the order {where}",
        )
    need = quantity - here
    moved: list[Hold] = []
    others = [h for h in allocations if h.location != location]
    for h in sorted(others, key=lambda h: h.backorder):  # on-hand allocations move first
        take = min(need, h.quantity)
        if take > 0:
            moved.append(Hold(h.location, take, h.backorder))
            need -= take
    return ev.AllocationMoved(
        sku=item.sku, order_id=order.order_id, to_location=location, moved=tuple(moved)
    )


def _swap_displaced(
    item: ItemState,
    policies: Policies,
    order_id: str,
    moved: ev.AllocationMoved,
    was_over: int,
    now: datetime,
) -> list[ev.AllocationMoved]:
    """A re-sourced shipment (`moved`, already folded into `item` with its StockShipped)
    took units other orders were allocated at its location: those orders, newest first,
    take over the on-hand allocations the shipment left at the source locations, so the
    units freed there cover them instead of becoming sellable. What holds claim stays an
    over-promise."""
    location = moved.to_location
    excess = location_figures(item, policies, location, now).over_promised - was_over
    freed = [h for h in moved.moved if not h.backorder]
    swaps: list[ev.AllocationMoved] = []
    for other_id, allocations in reversed(item.allocations.items()):
        if other_id == order_id:
            continue
        here = sum(h.quantity for h in allocations if h.location == location and not h.backorder)
        while here > 0 and excess > 0 and freed:
            source = freed[0]
            take = min(here, excess, source.quantity)
            swaps.append(
                ev.AllocationMoved(
                    sku=item.sku,
                    order_id=other_id,
                    to_location=source.location,
                    moved=(Hold(location, take),),
                )
            )
            here, excess = here - take, excess - take
            freed[0] = Hold(source.location, source.quantity - take)
            if not freed[0].quantity:
                freed.pop(0)
    return swaps


def _ship_order(c: cmd.ShipOrder, world: World, now: datetime) -> Decision:
    """A shipment is a fact reported by the warehouse: it is refused only when on-hand
    stock at the location does not cover it (or the order has not that many units
    allocated), never because the location is over-promised to other claims."""
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
        before = item = items[line.sku]
        moved = _resource(item, policies, order, c.location, line.quantity)
        if moved is not None:
            decision.append((("item", line.sku), moved))
            item = evolve_item(item, moved)
        allocations = item.allocations.get(c.order_id, ())
        regular = sum(
            h.quantity for h in allocations if h.location == c.location and not h.backorder
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
        if from_backorder > 0 and from_backorder > unclaimed:
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
        after = evolve_item(item, shipped)
        if moved is not None:
            was_over = location_figures(before, policies, c.location, now).over_promised
            for swap in _swap_displaced(after, policies, c.order_id, moved, was_over, now):
                decision.append((("item", line.sku), swap))
                after = evolve_item(after, swap)
        decision += _over_promise(policies, before, after, c.location, now)
    order_shipped = ev.OrderShipped(
        order_id=c.order_id,
        shipment_id=c.shipment_id,
        location=c.location,
        lines=tuple(ev.OrderLine(line.sku, line.quantity) for line in c.lines),
    )
    decision.append((("order", c.order_id), order_shipped))
    return decision


def _by_sku_and_disposition(line: _LineLike) -> Hashable:
    return (line.sku, getattr(line, "disposition", None))


def _return_order(c: cmd.ReturnOrder, world: World, now: datetime) -> Decision:
    """Return lines are distinct by SKU and disposition; what may come back (shipped less
    returned) bounds the sum of a SKU's lines (409 when exceeded)."""
    order = _existing_order(world, c.order_id)
    _location(world.policies(), c.location, "location")
    if c.return_id in order.returns:
        raise AlreadyExists("return", c.return_id)
    _order_lines(order, c.lines, key=_by_sku_and_disposition)
    for i, line in enumerate(c.lines):
        if line.disposition not in DISPOSITIONS:
            raise InvalidCommand(
                f"lines[{i}].disposition", f"disposition must be one of {', '.join(DISPOSITIONS)}"
            )
    totals: dict[str, int] = {}
    for line in c.lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    short = []
    for sku, quantity in totals.items():
        order_line = order.line(sku)
        assert order_line is not None
        returnable = order_line.shipped - order_line.returned
        if quantity > returnable:
            short.append(ShortLine(sku, quantity, returnable))
    if short:
        raise InsufficientStock(short, "cannot return more than was shipped")
    items = dict(world.items(totals))
    decision: Decision = []
    for line in c.lines:
        returned = ev.StockReturned(
            sku=line.sku,
            order_id=c.order_id,
            return_id=c.return_id,
            location=c.location,
            quantity=line.quantity,
            disposition=line.disposition,
        )
        restocked = line.quantity if line.disposition == "restock" else 0
        decision += _fact(world, items[line.sku], returned, c.location, restocked, now)
        items[line.sku] = evolve_item(items[line.sku], returned)
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
