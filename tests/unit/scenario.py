"""Given/when/then for the pure decider: given events, when a command, then events (or an error).

    given(location("WH1"), received("A", "WH1", 5)).when(cmd.ReserveStock(...)).then(
        (item("A"), ev.StockHeld(...)), (reservation("r1"), ev.ReservationPlaced(...))
    )

Each given item is a `(stream, event)` pair, or a (nested) list of them: the helpers below
that describe a whole history return lists. `then` returns the world after the decided events,
so a test can go on to look at states and availability.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atp import commands as cmd
from atp import events as ev
from atp.ats import Availability, channel_availability
from atp.decide import POLICIES, Decision, Stream, decide
from atp.errors import DomainError
from atp.events import Hold
from atp.world import StateSet

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 900
EXPIRES = NOW + timedelta(seconds=TTL)

Given = tuple[Stream, ev.Event] | list[tuple[Stream, ev.Event]]


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# --- streams -----------------------------------------------------------------------------


def item(sku: str) -> Stream:
    return ("item", sku)


def order(order_id: str) -> Stream:
    return ("order", order_id)


def reservation(reservation_id: str) -> Stream:
    return ("reservation", reservation_id)


def transfer(transfer_id: str) -> Stream:
    return ("transfer", transfer_id)


# --- the scenario ------------------------------------------------------------------------


def world_of(*given: Given) -> StateSet:
    world = StateSet(complete=True)
    for stream, event in _flatten(given):
        world.apply(stream, event)
    return world


def _flatten(given: Iterable[Any]) -> list[tuple[Stream, ev.Event]]:
    flat: list[tuple[Stream, ev.Event]] = []
    for g in given:
        if isinstance(g, list):
            flat.extend(_flatten(g))
        else:
            flat.append(g)
    return flat


class given:  # lower case: it reads as given(...).when(...).then(...)
    def __init__(self, *events: Given) -> None:
        self.world = world_of(*events)

    def when(self, command: cmd.Command, now: datetime = NOW) -> When:
        return When(self.world, command, now)


class When:
    def __init__(self, world: StateSet, command: cmd.Command, now: datetime) -> None:
        self.world, self.command, self.now = world, command, now

    def decision(self) -> Decision:
        return decide(self.command, self.world, self.now)

    def then(self, *expected: tuple[Stream, ev.Event]) -> StateSet:
        decision = self.decision()
        assert decision == list(expected)
        for stream, event in decision:
            self.world.apply(stream, event)
        return self.world

    def raises(self, error: type[DomainError], **attrs: Any) -> DomainError:
        try:
            decision = decide(self.command, self.world, self.now)
        except error as caught:
            err = caught
        else:
            pytest.fail(f"expected {error.__name__}, but the command was accepted: {decision}")
        assert type(err) is error, f"expected exactly {error.__name__}, got {type(err).__name__}"
        for name, value in attrs.items():
            actual = err.data[name] if name in err.data else getattr(err, name)
            assert actual == value, f"{name}: expected {value!r}, got {actual!r}"
        return err


# --- given events ------------------------------------------------------------------------


def location(code: str, kind: str = "warehouse", active: bool = True) -> Given:
    return (POLICIES, ev.LocationDefined(code=code, name=code, kind=kind, active=active))


def channel(
    code: str,
    *locations: str,
    buffer: int = 0,
    share_percent: int = 100,
    backorder_limit: int = 0,
    low_stock_threshold: int = 5,
) -> Given:
    return (
        POLICIES,
        ev.ChannelDefined(
            code=code,
            locations=locations,
            buffer=buffer,
            share_percent=share_percent,
            backorder_limit=backorder_limit,
            low_stock_threshold=low_stock_threshold,
        ),
    )


def safety(sku: str | None, loc: str | None, quantity: int) -> Given:
    stream = POLICIES if sku is None else item(sku)
    return (stream, ev.SafetyStockSet(sku=sku, location=loc, quantity=quantity))


def received(sku: str, loc: str, quantity: int, consumed: int = 0) -> Given:
    return (
        item(sku),
        ev.StockReceived(
            sku=sku, location=loc, quantity=quantity, reference=None, incoming_consumed=consumed
        ),
    )


def adjusted(sku: str, loc: str, delta: int, damaged: bool = False) -> Given:
    return (
        item(sku),
        ev.StockAdjusted(sku=sku, location=loc, delta=delta, reason="test", damaged=damaged),
    )


def expected(sku: str, loc: str, quantity: int) -> Given:
    return (
        item(sku),
        ev.IncomingExpected(sku=sku, location=loc, quantity=quantity, eta=None, reference=None),
    )


def reserved(
    rid: str,
    chan: str,
    holds: dict[str, tuple[Hold, ...]],
    expires_at: datetime = EXPIRES,
) -> list[tuple[Stream, ev.Event]]:
    """A placed reservation: its StockHeld per SKU and its ReservationPlaced."""
    pairs: list[tuple[Stream, ev.Event]] = [
        (
            item(sku),
            ev.StockHeld(sku=sku, reservation_id=rid, channel=chan, holds=h, expires_at=expires_at),
        )
        for sku, h in holds.items()
    ]
    lines = tuple(ev.ReservedLine(sku, sum(x.quantity for x in h), h) for sku, h in holds.items())
    pairs.append(
        (
            reservation(rid),
            ev.ReservationPlaced(
                reservation_id=rid, channel=chan, lines=lines, expires_at=expires_at, reference=None
            ),
        )
    )
    return pairs


def ordered(
    oid: str, chan: str, allocations: dict[str, tuple[Hold, ...]]
) -> list[tuple[Stream, ev.Event]]:
    """A placed order (no reservation): its StockAllocated per SKU and its OrderPlaced."""
    pairs: list[tuple[Stream, ev.Event]] = [
        (item(sku), ev.StockAllocated(sku=sku, order_id=oid, channel=chan, allocations=a))
        for sku, a in allocations.items()
    ]
    lines = tuple(ev.OrderLine(sku, sum(x.quantity for x in a)) for sku, a in allocations.items())
    pairs.append(
        (
            order(oid),
            ev.OrderPlaced(order_id=oid, channel=chan, lines=lines, reservation_id=None),
        )
    )
    return pairs


def decided(*history: Given | cmd.Command, now: datetime = NOW) -> list[tuple[Stream, ev.Event]]:
    """Events given as they are and the events commands record, in order: for givens too
    long to spell out event by event."""
    world = StateSet(complete=True)
    recorded: list[tuple[Stream, ev.Event]] = []
    for step in history:
        pairs = decide(step, world, now) if isinstance(step, cmd.Command) else _flatten([step])
        for stream, event in pairs:
            world.apply(stream, event)
            recorded.append((stream, event))
    return recorded


def available(world: StateSet, sku: str, chan: str, now: datetime = NOW) -> Availability:
    policies = world.policies()
    return channel_availability(world.item(sku), policies, policies.channels[chan], now)
