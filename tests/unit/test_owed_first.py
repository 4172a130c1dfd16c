"""Owed sales come first (issue 7 §1f's kind, "owed units sold twice"): a sale a channel
already made takes every sellable unit of its channel's locations before it is owed, and
units that become free at a location (a cancel, a revision, a released or expired hold, a
re-sourced shipment) fill open shortfalls there, oldest order first, before they are sold
again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from atp import commands as cmd
from atp import events as ev
from atp.decide import POLICIES, NeedStreams, decide
from atp.events import Hold
from atp.world import StateSet
from tests.unit.scenario import (
    EXPIRES,
    NOW,
    available,
    channel,
    decided,
    given,
    item,
    location,
    order,
    received,
    reserved,
    safety,
)

L = cmd.Line
WH = [location("WH"), location("ST", "store")]


def accept(oid: str, quantity: int, chan: str = "web") -> cmd.AcceptOrder:
    return cmd.AcceptOrder(order_id=oid, channel=chan, lines=(L("A", quantity),))


def filled(oid: str, quantity: int, at: str = "WH") -> list[tuple[tuple[str, str], ev.Event]]:
    return [
        (item("A"), ev.ShortfallFilled(sku="A", order_id=oid, location=at, quantity=quantity)),
        (
            order(oid),
            ev.OrderShortfallFilled(order_id=oid, sku="A", location=at, quantity=quantity),
        ),
    ]


class TestASaleTakesEveryUnitOnTheShelf:
    def test_buffer_and_share_do_not_keep_units_from_a_sale_already_made(self) -> None:
        """3 on hand; `web` (buffer 2, share 50 %) shows 0, and a WooCommerce sale of 5
        arrives. Invariant: the sale takes the 3 units the shelf has (shortfall 2); nothing
        sellable is left beside the owed units."""
        world = given(
            WH, channel("web", "WH", buffer=2, share_percent=50), received("A", "WH", 3)
        ).when(accept("w1", 5))
        state = world.then(
            (
                item("A"),
                ev.StockAllocated(
                    sku="A", order_id="w1", channel="web", allocations=(Hold("WH", 3),)
                ),
            ),
            (item("A"), ev.ShortfallRecorded(sku="A", order_id="w1", quantity=2)),
            (
                order("w1"),
                ev.OrderPlaced(
                    order_id="w1",
                    channel="web",
                    lines=(ev.OrderLine("A", 5),),
                    reservation_id=None,
                    shortfall=(ev.OrderLine("A", 2),),
                ),
            ),
        )
        assert state.item("A").at("WH").allocated == 3
        assert state.item("A").shortfalls == {"w1": 2}

    def test_safety_stock_stays_and_sourcing_order_is_kept(self) -> None:
        """Safety stock 1 at WH, 3 on hand at WH and 2 at ST; `web` (buffer 4) sources
        WH then ST and sells 6. Invariant: the sale takes WH's 2 sellable units then ST's 2,
        never the safety stock; 2 are owed."""
        events = decided(
            *WH,
            channel("web", "WH", "ST", buffer=4),
            safety("A", "WH", 1),
            received("A", "WH", 3),
            received("A", "ST", 2),
            accept("w1", 6),
        )
        allocated = [e for _, e in events if isinstance(e, ev.StockAllocated)]
        assert allocated[0].allocations == (Hold("WH", 2), Hold("ST", 2))
        recorded = [e for _, e in events if isinstance(e, ev.ShortfallRecorded)]
        assert [e.quantity for e in recorded] == [2]

    def test_a_revision_adding_units_takes_buffered_units_too(self) -> None:
        """An order edited after payment (1 → 4 units) with 4 on hand and `web` buffer 3.
        Invariant: the added 3 units are allocated out of the shelf; nothing is owed."""
        world = replay(*WH, channel("web", "WH", buffer=3), received("A", "WH", 4), accept("w1", 1))
        revise = cmd.ReviseOrder(order_id="w1", channel="web", lines=(L("A", 4),))
        for stream, e in decide(revise, world, NOW):
            world.apply(stream, e)
        assert world.item("A").at("WH").allocated == 4
        assert world.item("A").shortfalls == {}


def replay(*history: object) -> StateSet:
    """The world after `history` (givens and commands, see `decided`)."""
    world = StateSet(complete=True)
    for stream, e in decided(*history):  # type: ignore[arg-type]
        world.apply(stream, e)
    return world


def held_then_owed() -> StateSet:
    """2 on hand at WH, both held at checkout (r1); a WooCommerce sale of 2 is owed."""
    return replay(
        *WH,
        channel("web", "WH"),
        received("A", "WH", 2),
        reserved("r1", "web", {"A": (Hold("WH", 2),)}),
        accept("w1", 2),
    )


def owed_world(*extra: object) -> StateSet:
    """3 on hand at WH; `web` sells WH; w1 took 3, w2 (3) and w3 (1) are owed."""
    return replay(
        *WH,
        channel("web", "WH"),
        received("A", "WH", 3),
        accept("w1", 3),
        accept("w2", 3),
        accept("w3", 1),
        *extra,
    )


class TestFreedUnitsFillShortfallsFirst:
    def test_a_cancelled_order_fills_the_oldest_owed_order_first(self) -> None:
        """w1 (3 allocated) is cancelled while w2 (3) and w3 (1) are owed. Invariant: the
        3 freed units become w2's allocation (the oldest owed order); none go back on
        sale while w3 is still owed."""
        world = owed_world()
        decision = decide(cmd.CancelOrder(order_id="w1"), world, NOW)
        released = ev.AllocationReleased(sku="A", order_id="w1", allocations=(Hold("WH", 3),))
        assert decision[:3] == [(item("A"), released), *filled("w2", 3)]
        for stream, e in decision:
            world.apply(stream, e)
        assert world.item("A").shortfalls == {"w3": 1}
        assert world.item("A").allocations == {"w2": (Hold("WH", 3),)}
        assert available(world, "A", "web").available == 0

    def test_a_revision_down_fills_owed_orders_then_the_rest_goes_on_sale(self) -> None:
        """w1 is edited from 3 units to 1 (2 freed) while w2 and w3 are owed 4 in all;
        then w1 is closed (1 more freed). Invariant: freed units fill w2 first,
        then w3; only once nothing is owed does a unit go back on sale."""
        world = owed_world()
        revise = cmd.ReviseOrder(order_id="w1", channel="web", lines=(L("A", 1),))
        for stream, e in decide(revise, world, NOW):
            world.apply(stream, e)
        assert world.item("A").shortfalls == {"w2": 1, "w3": 1}
        assert available(world, "A", "web").available == 0
        close = cmd.ReviseOrder(order_id="w1", channel="web", lines=(L("A", 1),), open=False)
        for stream, e in decide(close, world, NOW):
            world.apply(stream, e)
        assert world.item("A").shortfalls == {"w3": 1}
        assert world.order("w2").line("A").open == 3
        assert available(world, "A", "web").available == 0

    def test_a_released_checkout_hold_fills_the_owed_sale(self) -> None:
        """2 on hand, both held at checkout (r1); a WooCommerce sale of 2 is owed; the
        shopper leaves. Invariant: the 2 units cover the owed sale, not the next shopper."""
        world = held_then_owed()
        decision = decide(cmd.ReleaseReservation(reservation_id="r1"), world, NOW)
        assert decision[1:3] == filled("w1", 2)
        for stream, e in decision:
            world.apply(stream, e)
        assert world.item("A").shortfalls == {}
        assert available(world, "A", "web").available == 0

    def test_an_expired_hold_swept_late_fills_the_owed_sale(self) -> None:
        """The same with the hold expiring (ttl over) and the sweeper running a minute
        later. Invariant: the swept units cover the owed sale."""
        world = held_then_owed()
        later = EXPIRES + timedelta(minutes=1)
        decision = decide(cmd.ExpireReservation(reservation_id="r1"), world, later)
        assert decision[0] == (item("A"), ev.HoldExpired(sku="A", reservation_id="r1"))
        assert decision[1:3] == filled("w1", 2)
        for stream, e in decision:
            world.apply(stream, e)
        assert world.item("A").shortfalls == {}
        assert available(world, "A", "web", later).available == 0

    def test_units_freed_where_the_owed_channel_does_not_source_go_on_sale(self) -> None:
        """`pos` sells ST only and owes 2; a `web` order at WH is cancelled. Invariant:
        units freed at WH cannot fill a sale whose channel does not source from WH."""
        world = replay(
            *WH,
            channel("web", "WH"),
            channel("pos", "ST"),
            received("A", "WH", 2),
            accept("w1", 2),
            accept("p1", 2, "pos"),
        )
        for stream, e in decide(cmd.CancelOrder(order_id="w1"), world, NOW):
            world.apply(stream, e)
        assert world.item("A").shortfalls == {"p1": 2}
        assert available(world, "A", "web").available == 2

    def test_a_release_reads_the_owed_orders_it_fills(self) -> None:
        """A release decided against a world that has not loaded the owed order asks for
        it (NeedStreams) instead of guessing its channel: the decision stays pure."""
        full = owed_world()
        partial = StateSet()
        for stream in [POLICIES, item("A"), order("w1")]:
            partial.put(stream, full.get(stream))
        with pytest.raises(NeedStreams) as need:
            decide(cmd.CancelOrder(order_id="w1"), partial, NOW)
        assert order("w2") in need.value.streams


class TestAReSourcedShipment:
    def test_units_left_at_the_allocated_location_fill_owed_sales(self) -> None:
        """w1 is allocated 2 at ST but the warehouse ships them from WH; w2 (sold through
        `pos`, which sources ST only) is owed 2. Invariant: the 2 units w1 no longer
        needs at ST become w2's, not `pos`'s next sale."""
        world = replay(
            *WH,
            channel("web", "ST", "WH"),
            channel("pos", "ST"),
            received("A", "ST", 2),
            received("A", "WH", 2),
            accept("w1", 2),
            accept("w2", 2, "pos"),
        )
        assert world.item("A").shortfalls == {"w2": 2}
        ship = cmd.ShipOrder(order_id="w1", shipment_id="s1", location="WH", lines=(L("A", 2),))
        decision = decide(ship, world, NOW)
        assert decision[-3:-1] == filled("w2", 2, at="ST")
        for stream, e in decision:
            world.apply(stream, e)
        assert world.item("A").shortfalls == {}
        assert available(world, "A", "pos").available == 0
