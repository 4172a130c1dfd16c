"""Orders: place, accept (allocate or owe), cancel, ship (re-sourcing what moved),
return and revise (an order edited after it was placed)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import datetime

from atp import commands as cmd
from atp import events as ev
from atp.ats import (
    location_figures,
    plan_sale,
)
from atp.decide.base import (
    DISPOSITIONS,
    Decision,
    World,
    _by_sku,
    _channel,
    _LineLike,
    _lines,
    _location,
)
from atp.decide.reservations import _plan
from atp.decide.stock import _fact, _fill_freed, _over_promise
from atp.errors import (
    AlreadyExists,
    IllegalState,
    InsufficientStock,
    InvalidCommand,
    NegativeQuantity,
    NotFound,
    ShortLine,
)
from atp.events import Hold
from atp.state import (
    Channel,
    ItemState,
    OrderState,
    Policies,
    evolve_item,
)


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


def _cancel_order(c: cmd.CancelOrder, world: World, now: datetime) -> Decision:
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
        decision += _release_units(world, items[line.sku], c.order_id, line.quantity, now)[0]
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
        # On-hand allocations first, then promises against incoming supply that the units
        # on hand were covering (arrived units cover backorders before anything is sellable).
        for backorder in (False, True):
            here = sum(
                h.quantity
                for h in allocations
                if h.location == location and h.backorder == backorder
            )
            while here > 0 and excess > 0 and freed:
                source = freed[0]
                take = min(here, excess, source.quantity)
                swaps.append(
                    ev.AllocationMoved(
                        sku=item.sku,
                        order_id=other_id,
                        to_location=source.location,
                        moved=(Hold(location, take, backorder),),
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
        if moved is not None:
            # What the moved allocations left at their locations fills shortfalls first.
            sources = [h.location for h in moved.moved]
            decision += _fill_freed(world, before, after, sources, now)
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
    shortfall (units). Every sellable unit of the channel's locations is taken before a
    shortfall is recorded, past the channel's share and buffer (see `plan_sale`)."""
    holds = plan_sale(item, policies, channel, quantity, now)
    take = sum(h.quantity for h in holds)
    decision: Decision = []
    if take:
        allocated = ev.StockAllocated(
            sku=item.sku, order_id=order_id, channel=channel.code, allocations=holds
        )
        decision.append((("item", item.sku), allocated))
    missing = quantity - take
    if missing:
        recorded = ev.ShortfallRecorded(sku=item.sku, order_id=order_id, quantity=missing)
        decision.append((("item", item.sku), recorded))
    return decision, missing


def _release_units(
    world: World, item: ItemState, order_id: str, quantity: int, now: datetime
) -> tuple[Decision, int]:
    """Give back `quantity` unshipped units of an order: its shortfall first (units never
    covered), then its allocations (see `_take_back`); the released units fill other
    orders' open shortfalls first (`_fill_freed`). Returns the events and the shortfall
    units resolved. Raises NeedStreams when the owed orders are not loaded."""
    decision: Decision = []
    unallocated = min(quantity, item.shortfalls.get(order_id, 0))
    if unallocated:
        resolved = ev.ShortfallResolved(sku=item.sku, order_id=order_id, quantity=unallocated)
        decision.append((("item", item.sku), resolved))
        item = evolve_item(item, resolved)
    released = _take_back(item.allocations.get(order_id, ()), quantity - unallocated)
    if released:
        event = ev.AllocationReleased(sku=item.sku, order_id=order_id, allocations=released)
        decision.append((("item", item.sku), event))
        where = [h.location for h in released]
        decision += _fill_freed(world, item, evolve_item(item, event), where, now)
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
            events, resolved = _release_units(world, items[sku], c.order_id, now_open - target, now)
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
