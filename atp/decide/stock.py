"""Stock movements at one location: receipts, adjustments, counts and expected
incoming supply, and the shortfalls and over-promises each one settles or reveals."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from atp import commands as cmd
from atp import events as ev
from atp.ats import (
    is_active,
    location_figures,
    uncovered_claims,
)
from atp.decide.base import Decision, NeedStreams, World, _lines, _location, _non_negative
from atp.errors import (
    InvalidCommand,
    NegativeQuantity,
)
from atp.state import (
    ItemState,
    OrderState,
    Policies,
    evolve_item,
)
from atp.streams import Stream


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
    world: World, item: ItemState, event: ev.ItemEvent, location: str, arrived: int, now: datetime
) -> Decision:
    """A physical fact about `item` at `location` and what it implies: units that appeared
    there (`arrived` > 0: a receipt, a transfer arrival or call-off, a restocked return,
    units found by a count or an adjustment) fill owed orders first, and so do on-hand units
    the fact frees (more expected supply covering backorder promises that had fallen on
    them); a fact that takes units away may leave the location over-promised, which is
    recorded."""
    after = evolve_item(item, event)
    decision: Decision = [(("item", item.sku), event)]
    if arrived > 0:
        return decision + _fill_shortfalls(world, after, location, arrived, now)
    filled = _fill_freed(world, item, after, [location], now)
    if filled:
        return decision + filled
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


def _fill_freed(
    world: World,
    before: ItemState,
    after: ItemState,
    locations: Iterable[str],
    now: datetime,
    as_of: datetime | None = None,
) -> Decision:
    """Units a decision freed at `locations` (`before` and `after` it: an order's released
    allocations, a released or expired hold, more expected supply covering backorder
    promises that had fallen on on-hand units) fill open shortfalls there exactly as
    arrivals do (`_fill_shortfalls`), location by location; only the rest becomes sellable.
    The units freed at a location are how many more nothing claims there, so an
    over-promise is covered first; `as_of` (default `now`) is when they are counted, so a
    hold swept after it expired counts as the claim it was. Raises NeedStreams for the
    owed orders' streams when they are not loaded."""
    policies = world.policies()
    when = now if as_of is None else as_of
    decision: Decision = []
    for location in dict.fromkeys(locations):
        freed = _free_to_leave(after, policies, location, when)
        freed -= _free_to_leave(before, policies, location, when)
        if freed <= 0:
            continue
        filled = _fill_shortfalls(world, after, location, freed, now)
        for _, event in filled:
            if isinstance(event, ev.ShortfallFilled):
                after = evolve_item(after, event)
        decision += filled
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


def _reconcile(c: cmd.ReconcileStock, world: World, now: datetime) -> Decision:
    """Each line's drift moves today's on-hand at the location by the drift (not to the
    snapshot's figure, so movements after the snapshot survive), as `StockReconciled`,
    through `_fact`: units found fill open shortfalls oldest order first, units lost may
    leave the location over-promised, which is recorded (docs/contract.md, over-promise).
    A drift below today's on-hand is applied down to 0 on hand, never below. Raises
    InvalidCommand for an unknown location, an `as_of` without a UTC offset, a SKU listed
    twice or a drift of 0."""
    _location(world.policies(), c.location, "location")
    if c.as_of.utcoffset() is None:
        raise InvalidCommand("as_of", "as_of must carry a UTC offset")
    seen: set[str] = set()
    for i, line in enumerate(c.lines):
        if line.sku in seen:
            raise InvalidCommand(f"lines[{i}].sku", f"SKU {line.sku!r} appears more than once")
        if line.drift == 0:
            raise InvalidCommand(f"lines[{i}].drift", "drift must not be 0")
        seen.add(line.sku)
    items = world.items(seen)
    decision: Decision = []
    for line in c.lines:
        item = items[line.sku]
        drift = max(line.drift, -item.at(c.location).on_hand)
        if drift == 0:
            continue
        event = ev.StockReconciled(
            sku=line.sku,
            location=c.location,
            drift=drift,
            as_of=c.as_of.astimezone(UTC),
            reconciliation_id=c.reconciliation_id,
            drift_found=line.drift if drift != line.drift else None,
        )
        decision += _fact(world, item, event, c.location, drift, now)
    return decision


def _free_to_leave(item: ItemState, policies: Policies, location: str, now: datetime) -> int:
    """Units physically at the location that nothing has claimed (safety stock may leave)."""
    f = location_figures(item, policies, location, now)
    uncovered = max(0, f.backordered - f.incoming)
    return max(0, f.on_hand - f.allocated - f.held - f.damaged - uncovered)


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
