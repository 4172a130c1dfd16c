"""Reservations: plan holds across a channel's sourcing, reserve, extend, release,
expire and commit (a commit places the order)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from atp import commands as cmd
from atp import events as ev
from atp.ats import (
    plan_holds,
)
from atp.decide.base import Decision, World, _channel, _lines
from atp.decide.stock import _fill_freed
from atp.errors import (
    AlreadyExists,
    IllegalState,
    InsufficientStock,
    InvalidCommand,
    NotFound,
    ShortLine,
)
from atp.events import Hold
from atp.state import (
    ReservationState,
    evolve_item,
)


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


def _give_back(
    world: World,
    reservation: ReservationState,
    event: Callable[[str], ev.HoldReleased | ev.HoldExpired],
    now: datetime,
) -> Decision:
    """The item events giving back `reservation`'s holds (`event` of each SKU), each
    followed by the open shortfalls the freed units fill first (`_fill_freed`). Reads the
    items (and the owed orders), so it may raise NeedStreams."""
    items = world.items(line.sku for line in reservation.lines)
    decision: Decision = []
    for line in reservation.lines:
        item = items[line.sku]
        given = event(line.sku)
        decision.append((("item", line.sku), given))
        hold = item.holds.get(reservation.reservation_id)
        if hold is None:
            continue
        where = [h.location for h in hold.holds]
        # Counted while the hold was live: an expired one freed its units only now.
        live = min(now, hold.expires_at - timedelta(microseconds=1))
        decision += _fill_freed(world, item, evolve_item(item, given), where, now, live)
    return decision


def _release(c: cmd.ReleaseReservation, world: World, now: datetime) -> Decision:
    reservation = _held_reservation(world, c.reservation_id, now, "release")

    def released_hold(sku: str) -> ev.HoldReleased:
        return ev.HoldReleased(sku=sku, reservation_id=c.reservation_id)

    decision = _give_back(world, reservation, released_hold, now)
    released = ev.ReservationReleased(reservation_id=c.reservation_id)
    decision.append((("reservation", c.reservation_id), released))
    return decision


def _expire(c: cmd.ExpireReservation, world: World, now: datetime) -> Decision:
    reservation = world.reservation(c.reservation_id)
    if reservation is None or reservation.status != "held" or now < reservation.expires_at:
        return []

    def expired_hold(sku: str) -> ev.HoldExpired:
        return ev.HoldExpired(sku=sku, reservation_id=c.reservation_id)

    decision = _give_back(world, reservation, expired_hold, now)
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
