"""Physical events are facts (issue 7 §1f, §2, §4, §6; contract "Stock movements", "Orders").

Each test is a story a retailer lived; its docstring states the invariant it keeps, and it
asserts the figures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from atp import commands as cmd
from atp import events as ev
from atp.ats import location_figures
from atp.decide import decide
from atp.errors import IllegalState, InsufficientStock, InvalidCommand, NegativeQuantity
from atp.events import Hold
from atp.state import ExpectedSupply, LocationStock
from atp.world import StateSet
from tests.unit.scenario import NOW, available, decided, location, world_of

L = cmd.Line
WEB = [location("WH"), cmd.DefineChannel(code="web", locations=("WH",))]


def run(*steps: object) -> StateSet:
    return world_of(decided(*steps))  # type: ignore[arg-type]


def events_of(world: StateSet, command: cmd.Command) -> list[ev.Event]:
    decision = decide(command, world, NOW)
    for stream, event in decision:
        world.apply(stream, event)
    return [event for _, event in decision]


def receive(loc: str, *lines: cmd.Line, reference: str | None = None) -> cmd.ReceiveStock:
    return cmd.ReceiveStock(location=loc, lines=lines, reference=reference)


def place(order_id: str, *lines: cmd.Line, chan: str = "web") -> cmd.PlaceOrder:
    return cmd.PlaceOrder(order_id=order_id, channel=chan, lines=lines)


def ship(order_id: str, shipment: str, loc: str, *lines: cmd.Line) -> cmd.ShipOrder:
    return cmd.ShipOrder(order_id=order_id, shipment_id=shipment, location=loc, lines=lines)


def count(loc: str, sku: str, counted: int) -> cmd.CountStock:
    return cmd.CountStock(location=loc, lines=(cmd.CountLine(sku, counted),))


# --- §2 over-promise: allocated units ship while they are there ---------------------------


class TestOverPromise:
    def test_a_count_below_allocations_does_not_freeze_shipping(self):
        """Receive 10, order 6, count 4, ship 1: the shipment is a fact on_hand covers, so it
        is accepted; the count leaves 2 over-promised (the order named), sellable 0."""
        world = run(*WEB, receive("WH", L("A", 10)), place("o1", L("A", 6)))
        counted = events_of(world, count("WH", "A", 4))
        assert counted[1] == ev.OverPromised(
            sku="A", location="WH", quantity=2, uncovered=(ev.Uncovered("order", "o1", 2),)
        )
        events_of(world, ship("o1", "s1", "WH", L("A", 1)))
        assert world.item("A").at("WH") == LocationStock(on_hand=3, allocated=5)
        figures = location_figures(world.item("A"), world.policies(), "WH", NOW)
        assert (figures.over_promised, figures.sellable) == (2, 0)
        assert world.order("o1").line("A").shipped == 1

    def test_a_count_below_an_order_and_a_hold_ships_the_order(self):
        """Receive 10, order 2, checkout hold 8, count 5, ship the order's 2: accepted. The
        hold is left uncovered before the order (orders are sales made): 5 over-promised,
        all of them the hold's; after the shipment 3 on hand cover 3 of the hold's 8."""
        world = run(
            *WEB,
            receive("WH", L("A", 10)),
            place("o1", L("A", 2)),
            cmd.ReserveStock(
                reservation_id="r1", channel="web", lines=(L("A", 8),), ttl_seconds=900
            ),
        )
        counted = events_of(world, count("WH", "A", 5))
        assert counted[1].uncovered == (ev.Uncovered("hold", "r1", 5),)
        events_of(world, ship("o1", "s1", "WH", L("A", 2)))
        assert world.item("A").at("WH") == LocationStock(on_hand=3, held=8)
        figures = location_figures(world.item("A"), world.policies(), "WH", NOW)
        assert (figures.over_promised, figures.sellable) == (5, 0)

    def test_a_late_till_sale(self):
        """A store has 3; a web order takes 2 there; the POS then reports its sale of 2 made
        on a stale figure (adjustment -2, accepted). 1 unit is over-promised, the web order
        named; the 1 unit left ships to the web order; nothing is sellable there."""
        world = run(
            location("ST", "store"),
            cmd.DefineChannel(code="web", locations=("ST",)),
            receive("ST", L("A", 3)),
            place("web-1", L("A", 2)),
        )
        adjusted = events_of(
            world, cmd.AdjustStock(location="ST", sku="A", delta=-2, reason="pos sale")
        )
        assert adjusted[1] == ev.OverPromised(
            sku="A", location="ST", quantity=1, uncovered=(ev.Uncovered("order", "web-1", 1),)
        )
        assert available(world, "A", "web").available == 0
        events_of(world, ship("web-1", "s1", "ST", L("A", 1)))
        assert world.item("A").at("ST") == LocationStock(on_hand=0, allocated=1)
        with pytest.raises(NegativeQuantity):  # the second unit is not on the shelf
            decide(ship("web-1", "s2", "ST", L("A", 1)), world, NOW)

    def test_uncovered_claims_are_named_newest_hold_first_then_newest_order(self):
        """Over-promise falls on the newest claims: holds before orders, newest first."""
        world = run(
            *WEB,
            receive("WH", L("A", 10)),
            place("o1", L("A", 3)),
            place("o2", L("A", 3)),
            cmd.ReserveStock(
                reservation_id="r1", channel="web", lines=(L("A", 2),), ttl_seconds=900
            ),
        )
        counted = events_of(world, count("WH", "A", 3))
        assert counted[1] == ev.OverPromised(
            sku="A",
            location="WH",
            quantity=5,
            uncovered=(ev.Uncovered("hold", "r1", 2), ev.Uncovered("order", "o2", 3)),
        )

    def test_a_backorder_still_covered_by_supply_is_not_named(self):
        """A count short of the on-hand order names that order, not the newer backorder
        that expected supply still covers."""
        world = run(
            location("WH"),
            cmd.DefineChannel(code="web", locations=("WH",), backorder_limit=6),
            receive("WH", L("A", 5)),
            place("o1", L("A", 5)),
            cmd.ExpectIncoming(location="WH", lines=(L("A", 10),), reference="PO-1"),
            place("b1", L("A", 2)),
        )
        assert world.item("A").allocations["b1"] == (Hold("WH", 2, backorder=True),)
        counted = events_of(world, count("WH", "A", 3))
        assert counted[1].uncovered == (ev.Uncovered("order", "o1", 2),)

    def test_a_count_that_leaves_claims_covered_records_no_over_promise(self):
        """Only a fact that raises the over-promise is recorded as one."""
        world = run(*WEB, receive("WH", L("A", 10)), place("o1", L("A", 6)))
        assert len(events_of(world, count("WH", "A", 7))) == 1


class TestSplitShipment:
    def story(self, wh2_on_hand: int) -> StateSet:
        return run(
            location("WH1"),
            location("WH2"),
            cmd.DefineChannel(code="web", locations=("WH1", "WH2")),
            receive("WH1", L("A", 5)),
            receive("WH2", L("A", wh2_on_hand)),
            place("o1", L("A", 10)),
        )

    def test_units_shipped_from_the_other_warehouse_move_the_allocation(self):
        """An order of 10 allocated 5 + 5 at WH1 and WH2; the WMS ships 8 from WH2 and 2 from
        WH1. Both shipments are recorded, the allocation follows the units (re-sourcing),
        the order is shipped and atp matches the shelves: WH1 3, WH2 2, nothing allocated."""
        world = self.story(10)
        assert world.item("A").allocations["o1"] == (Hold("WH1", 5), Hold("WH2", 5))
        first = events_of(world, ship("o1", "s1", "WH2", L("A", 8)))
        assert first[0] == ev.AllocationMoved(
            sku="A", order_id="o1", to_location="WH2", moved=(Hold("WH1", 3),)
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5, allocated=2)
        events_of(world, ship("o1", "s2", "WH1", L("A", 2)))
        state = world.item("A")
        assert state.at("WH1") == LocationStock(on_hand=3)
        assert state.at("WH2") == LocationStock(on_hand=2)
        assert state.allocations == {}
        assert world.order("o1").status == "shipped"
        assert available(world, "A", "web").available == 5

    def test_units_taken_from_another_order_swap_allocations_instead_of_freeing_stock(self):
        """WH1 and WH2 hold 2 each; o1 is allocated at WH1, o2 at WH2. The WMS ships o1 from
        WH2 (the shelf it reached first). o2 takes over o1's allocation at WH1: nothing is
        over-promised, and the 2 units freed at WH1 are not sold to anybody else."""
        world = run(
            location("WH1"),
            location("WH2"),
            cmd.DefineChannel(code="web", locations=("WH1", "WH2")),
            receive("WH1", L("A", 2)),
            receive("WH2", L("A", 2)),
            place("o1", L("A", 2)),
            place("o2", L("A", 2)),
        )
        assert world.item("A").allocations == {"o1": (Hold("WH1", 2),), "o2": (Hold("WH2", 2),)}
        shipped = events_of(world, ship("o1", "s1", "WH2", L("A", 2)))
        assert shipped[2] == ev.AllocationMoved(
            sku="A", order_id="o2", to_location="WH1", moved=(Hold("WH2", 2),)
        )
        state = world.item("A")
        assert state.allocations == {"o2": (Hold("WH1", 2),)}
        assert state.at("WH1") == LocationStock(on_hand=2, allocated=2)
        assert state.at("WH2") == LocationStock(on_hand=0)
        assert not any(isinstance(e, ev.OverPromised) for e in shipped)
        assert available(world, "A", "web").available == 0

    def test_units_covering_a_backorder_swap_the_promise_to_the_freed_shelf(self):
        """A drop-shipper DS1 expects 3 units; a pre-order channel promised all 3 (backorder).
        One unit arrives at DS1 without a reference (it covers one promise). The WMS ships a
        web order, allocated at WH1, from DS1 instead. Invariant (found by the property
        test): the pre-order takes over the unit freed at WH1, so nothing is over-promised and
        every promise stays covered (WH1 1 allocated; DS1 2 promised against 2 expected)."""
        world = run(
            location("WH1"),
            location("DS1"),
            cmd.DefineChannel(code="web", locations=("WH1", "DS1")),
            cmd.DefineChannel(code="pre", locations=("DS1",), backorder_limit=3),
            receive("WH1", L("A", 1)),
            cmd.ExpectIncoming(location="DS1", lines=(L("A", 3),)),
            place("o0", L("A", 1)),
            place("o1", L("A", 3), chan="pre"),
            receive("DS1", L("A", 1)),
        )
        assert world.item("A").allocations["o1"] == (Hold("DS1", 3, True),)
        shipped = events_of(world, ship("o0", "s0", "DS1", L("A", 1)))
        assert not any(isinstance(e, ev.OverPromised) for e in shipped), shipped
        state = world.item("A")
        assert state.allocations == {"o1": (Hold("DS1", 2, True), Hold("WH1", 1))}
        assert state.at("WH1") == LocationStock(on_hand=1, allocated=1)
        assert (state.at("DS1").on_hand, state.at("DS1").incoming) == (0, 2)
        assert state.at("DS1").backordered == 2

    def test_refused_when_the_other_warehouse_has_not_the_units(self):
        """WH2 holds only 6: shipping 8 from it is refused (409) and nothing changes."""
        world = self.story(6)
        before = world.item("A")
        with pytest.raises(NegativeQuantity):
            decide(ship("o1", "s1", "WH2", L("A", 8)), world, NOW)
        assert world.item("A") == before

    def test_never_more_than_the_order_has_allocated(self):
        """Units an order was never allocated (its shortfall) cannot ship: 409."""
        world = run(*WEB, receive("WH", L("A", 3)))
        events_of(world, cmd.AcceptOrder(order_id="w1", channel="web", lines=(L("A", 5),)))
        with pytest.raises(InsufficientStock) as caught:
            decide(ship("w1", "s1", "WH", L("A", 5)), world, NOW)
        assert caught.value.lines[0].available == 3


# --- §1f shortfalls are filled by arrivals --------------------------------------------------


def accept(order_id: str, *lines: cmd.Line, chan: str = "web") -> cmd.AcceptOrder:
    return cmd.AcceptOrder(order_id=order_id, channel=chan, lines=lines)


class TestShortfallFilling:
    def test_owed_units_are_not_sold_twice(self):
        """3 on hand; a webhook sale of 5 (shortfall 2); receive 2: the order's 5 are all
        allocated, available 0, and a new order cannot take the 2."""
        world = run(*WEB, receive("WH", L("A", 3)), accept("w1", L("A", 5)))
        assert world.item("A").shortfalls == {"w1": 2}
        received = events_of(world, receive("WH", L("A", 2)))
        assert received[1:] == [
            ev.ShortfallFilled(sku="A", order_id="w1", location="WH", quantity=2),
            ev.OrderShortfallFilled(order_id="w1", sku="A", location="WH", quantity=2),
        ]
        state = world.item("A")
        assert state.shortfalls == {}
        assert state.allocations["w1"] == (Hold("WH", 5),)
        assert state.at("WH") == LocationStock(on_hand=5, allocated=5)
        assert available(world, "A", "web").available == 0
        assert world.order("w1").status == "allocated"
        with pytest.raises(InsufficientStock):
            decide(place("o2", L("A", 1)), world, NOW)
        events_of(world, ship("w1", "s1", "WH", L("A", 5)))
        assert world.order("w1").status == "shipped"

    def test_oldest_sale_first_and_only_the_rest_becomes_sellable(self):
        """Two sales owed 2 and 3; 4 arrive: the oldest gets 2, the next 2 (1 still owed),
        nothing sellable; 3 more arrive: 1 fills the rest, 2 become sellable."""
        world = run(*WEB, accept("w1", L("A", 2)), accept("w2", L("A", 3)))
        events_of(world, receive("WH", L("A", 4)))
        assert world.item("A").shortfalls == {"w2": 1}
        assert world.item("A").allocations == {"w1": (Hold("WH", 2),), "w2": (Hold("WH", 2),)}
        assert available(world, "A", "web").available == 0
        events_of(world, receive("WH", L("A", 3)))
        assert world.item("A").shortfalls == {}
        assert available(world, "A", "web").available == 2

    def test_only_arrivals_at_the_orders_channel_locations_fill_it(self):
        """A sale through `web` (WH) is not filled by a receipt at a store web does not
        source from: those units are the store's to sell."""
        world = run(
            *WEB,
            location("ST", "store"),
            cmd.DefineChannel(code="pos", locations=("ST",)),
            accept("w1", L("A", 2)),
        )
        assert len(events_of(world, receive("ST", L("A", 2)))) == 1
        assert world.item("A").shortfalls == {"w1": 2}
        assert available(world, "A", "pos").available == 2

    def test_transfer_arrivals_and_restocked_returns_fill_shortfalls(self):
        """Units arriving by transfer or as a restocked return go to the owed order first;
        a damaged return fills nothing."""
        world = run(
            *WEB,
            location("ST", "store"),
            cmd.DefineChannel(code="pos", locations=("ST",)),
            receive("ST", L("A", 4)),
            place("p1", L("A", 2), chan="pos"),
            ship("p1", "s1", "ST", L("A", 2)),
            accept("w1", L("A", 3)),
            cmd.ShipTransfer(
                transfer_id="t1", from_location="ST", to_location="WH", lines=(L("A", 1),)
            ),
        )
        assert world.item("A").shortfalls == {"w1": 3}
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1"))
        assert world.item("A").shortfalls == {"w1": 2}
        damaged = cmd.ReturnOrder(
            order_id="p1", return_id="x1", location="WH", lines=(cmd.ReturnLine("A", 1, "damaged"),)
        )
        events_of(world, damaged)
        assert world.item("A").shortfalls == {"w1": 2}
        restock = cmd.ReturnOrder(
            order_id="p1", return_id="x2", location="WH", lines=(cmd.ReturnLine("A", 1, "restock"),)
        )
        events_of(world, restock)
        assert world.item("A").shortfalls == {"w1": 1}
        assert world.item("A").allocations["w1"] == (Hold("WH", 2),)
        assert world.order("w1").line("A").allocated == 2

    def test_units_found_by_a_count_or_an_adjustment_go_to_the_owed_sale(self):
        """Units that turn up (a count above the book, a found adjustment) are units that
        appeared at the location: the owed sale gets them before a new sale can."""
        world = run(*WEB, receive("WH", L("A", 1)), accept("w1", L("A", 4)))
        events_of(world, count("WH", "A", 3))
        assert world.item("A").shortfalls == {"w1": 1}
        events_of(world, cmd.AdjustStock(location="WH", sku="A", delta=2, reason="found"))
        assert world.item("A").shortfalls == {}
        assert world.item("A").at("WH") == LocationStock(on_hand=5, allocated=4)
        assert available(world, "A", "web").available == 1

    def test_a_called_off_transfer_fills_the_source_s_owed_sale(self):
        """The units of a canceled transfer come back to the source: an order owed there
        since they left gets them first."""
        world = run(
            *STORE,
            cmd.ShipTransfer(
                transfer_id="t1", from_location="WH", to_location="ST", lines=(L("A", 10),)
            ),
            accept("w1", L("A", 3)),
        )
        events_of(world, cmd.CancelTransfer(transfer_id="t1"))
        assert world.item("A").allocations == {"w1": (Hold("WH", 3),)}
        assert available(world, "A", "web").available == 7

    def test_arrivals_cover_an_over_promise_before_a_shortfall(self):
        """A location that owes its own allocations (a count found less) covers them first."""
        world = run(*WEB, receive("WH", L("A", 4)), place("o1", L("A", 4)), count("WH", "A", 2))
        events_of(world, accept("w1", L("A", 1)))
        events_of(world, receive("WH", L("A", 3)))
        assert world.item("A").shortfalls == {}
        assert world.item("A").at("WH") == LocationStock(on_hand=5, allocated=5)
        assert available(world, "A", "web").available == 0


# --- §4 return lines are keyed by SKU and disposition ---------------------------------------


def returning(*lines: tuple[str, int]) -> cmd.ReturnOrder:
    """Return x1 of order o1 at WH: (disposition, quantity) lines of SKU A."""
    back = tuple(cmd.ReturnLine("A", quantity, disposition) for disposition, quantity in lines)
    return cmd.ReturnOrder(order_id="o1", return_id="x1", location="WH", lines=back)


class TestReturnLines:
    def shipped(self) -> StateSet:
        return run(
            *WEB,
            receive("WH", L("A", 5)),
            place("o1", L("A", 3)),
            ship("o1", "s1", "WH", L("A", 3)),
        )

    def test_one_return_restocks_one_unit_and_writes_off_another(self):
        """One return of 1 restock + 1 damaged of the same SKU: accepted, 1 unit back on sale,
        1 damaged, order partially_returned."""
        world = self.shipped()
        events_of(world, returning(("restock", 1), ("damaged", 1)))
        assert world.item("A").at("WH") == LocationStock(on_hand=4, damaged=1)
        assert available(world, "A", "web").available == 3
        assert world.order("o1").status == "partially_returned"
        assert world.order("o1").line("A").returned == 2

    def test_a_mixed_over_return_is_a_conflict(self):
        """Lines of one SKU add up against what was shipped: 2 + 2 of 3 shipped is a 409."""
        world = self.shipped()
        with pytest.raises(InsufficientStock) as caught:
            decide(returning(("restock", 2), ("damaged", 2)), world, NOW)
        assert caught.value.lines[0].as_dict() == {"sku": "A", "requested": 4, "available": 3}

    def test_the_same_sku_and_disposition_twice_is_invalid(self):
        world = self.shipped()
        with pytest.raises(InvalidCommand) as caught:
            decide(returning(("restock", 1), ("restock", 1)), world, NOW)
        assert caught.value.field == "lines[1].sku"


# --- §6 transfers follow their documents ----------------------------------------------------

STORE = [*WEB, location("ST", "store"), receive("WH", L("A", 10))]


def transfer_10() -> StateSet:
    return run(
        *STORE,
        cmd.ShipTransfer(
            transfer_id="t1", from_location="WH", to_location="ST", lines=(L("A", 10),)
        ),
    )


class TestTransfers:
    def test_a_short_receipt_leaves_the_rest_in_transit_until_closed_as_lost(self):
        """Transfer 10, the store receives 8: 8 on hand, 2 still in transit (no phantom
        stock); closing writes the 2 off as lost, recorded with the reason."""
        world = transfer_10()
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1", lines=(L("A", 8),)))
        assert world.item("A").at("ST") == LocationStock(on_hand=8, in_transit=2)
        assert world.transfer("t1").status == "in_transit"
        closed = events_of(world, cmd.CloseTransfer(transfer_id="t1", reason="lost in truck"))
        assert closed[0] == ev.TransferLost(
            sku="A", transfer_id="t1", to_location="ST", quantity=2, reason="lost in truck"
        )
        assert world.item("A").at("ST") == LocationStock(on_hand=8)
        assert world.transfer("t1").status == "closed"
        with pytest.raises(IllegalState):
            decide(cmd.ReceiveTransfer(transfer_id="t1"), world, NOW)

    def test_receiving_without_lines_takes_everything_still_in_transit(self):
        """8 received, then a receipt without lines brings the other 2."""
        world = transfer_10()
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1", lines=(L("A", 8),)))
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1"))
        assert world.item("A").at("ST") == LocationStock(on_hand=10)
        assert world.transfer("t1").status == "received"

    def test_cannot_receive_more_than_is_in_transit(self):
        world = transfer_10()
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1", lines=(L("A", 8),)))
        with pytest.raises(InsufficientStock):
            decide(cmd.ReceiveTransfer(transfer_id="t1", lines=(L("A", 3),)), world, NOW)
        with pytest.raises(InvalidCommand):
            decide(cmd.ReceiveTransfer(transfer_id="t1", lines=(L("B", 1),)), world, NOW)

    def test_a_transfer_called_off_returns_its_units_to_the_source(self):
        """Cancel while nothing arrived: WH has its 10 again, nothing in transit."""
        world = transfer_10()
        events_of(world, cmd.CancelTransfer(transfer_id="t1"))
        assert world.item("A").at("WH") == LocationStock(on_hand=10)
        assert world.item("A").at("ST") == LocationStock()
        assert world.transfer("t1").status == "canceled"
        assert available(world, "A", "web").available == 10

    def test_a_partly_received_transfer_cannot_be_canceled(self):
        world = transfer_10()
        events_of(world, cmd.ReceiveTransfer(transfer_id="t1", lines=(L("A", 1),)))
        with pytest.raises(IllegalState):
            decide(cmd.CancelTransfer(transfer_id="t1"), world, NOW)


# --- §6 incoming supply follows its purchase order ------------------------------------------


def expect(*lines: cmd.Line, reference: str | None = "PO-1", eta: datetime | None = None):
    return cmd.ExpectIncoming(location="WH", lines=lines, eta=eta, reference=reference)


class TestIncomingByReference:
    def test_a_moved_delivery_date_does_not_double_the_supply(self):
        """PO-1 for 10, sent again with a new ETA: incoming stays 10, the ETA moves."""
        eta1 = datetime(2026, 2, 1, 9, tzinfo=UTC)
        eta2 = datetime(2026, 2, 8, 9, tzinfo=UTC)
        world = run(*WEB, expect(L("A", 10), eta=eta1), expect(L("A", 10), eta=eta2))
        state = world.item("A")
        assert state.at("WH").incoming == 10
        assert state.expected == {"WH": {"PO-1": ExpectedSupply(10, eta2)}}

    def test_a_revision_replaces_and_zero_cancels(self):
        """PO-1 for 10 A and 4 B, revised to 6 A and 0 B: incoming A 6, B 0."""
        world = run(*WEB, expect(L("A", 10), L("B", 4)), expect(L("A", 6), L("B", 0)))
        assert world.item("A").at("WH").incoming == 6
        assert world.item("B").at("WH").incoming == 0
        assert world.item("B").expected == {}

    def test_the_same_document_twice_changes_nothing(self):
        world = run(*WEB, expect(L("A", 10)))
        assert events_of(world, expect(L("A", 10))) == []

    def test_a_receipt_with_the_reference_consumes_its_supply(self):
        """PO-1 expects 10 and PO-2 5; a receipt of 4 against PO-2 consumes PO-2 only."""
        world = run(*WEB, expect(L("A", 10)), expect(L("A", 5), reference="PO-2"))
        events_of(world, receive("WH", L("A", 4), reference="PO-2"))
        state = world.item("A")
        assert state.at("WH") == LocationStock(on_hand=4, incoming=11)
        assert state.expected["WH"]["PO-1"].quantity == 10
        assert state.expected["WH"]["PO-2"].quantity == 1

    def test_an_eta_without_an_offset_is_refused_and_one_with_an_offset_is_stored_in_utc(self):
        with pytest.raises(InvalidCommand) as caught:
            decide(expect(L("A", 1), eta=datetime(2026, 2, 1, 9)), run(*WEB), NOW)
        assert caught.value.field == "eta"
        paris = datetime(2026, 2, 1, 10, tzinfo=timezone(timedelta(hours=1)))
        (event,) = events_of(run(*WEB), expect(L("A", 1), eta=paris))
        assert event.eta == datetime(2026, 2, 1, 9, tzinfo=UTC)
        assert event.eta.tzinfo == UTC


class TestBackorderLimit:
    def test_the_limit_bounds_every_unit_promised_against_incoming(self):
        """Limit 6, 10 expected: three backorders of 2 are taken, more is refused; then the
        10 arrive and cover the 6 promised first: 4 sellable."""
        world = run(
            location("WH"),
            cmd.DefineChannel(code="web", locations=("WH",), backorder_limit=6),
            expect(L("A", 10)),
        )
        assert available(world, "A", "web").available == 6
        for n in range(3):
            events_of(world, place(f"b{n}", L("A", 2)))
        assert available(world, "A", "web").available == 0
        with pytest.raises(InsufficientStock):
            decide(place("b3", L("A", 1)), world, NOW)
        events_of(world, receive("WH", L("A", 10), reference="PO-1"))
        assert available(world, "A", "web").available == 4
        assert world.item("A").at("WH").incoming == 0

    def test_a_purchase_order_cut_below_its_promises_is_an_over_promise(self):
        """Three backorders of 2 against PO-1 for 10; the supplier cuts PO-1 to 2: 4 promised
        units have no supply. The revision is a fact (accepted); it records 4 over-promised
        naming the two newest backorders, and nothing is available."""
        world = run(
            location("WH"),
            cmd.DefineChannel(code="web", locations=("WH",), backorder_limit=6),
            expect(L("A", 10)),
            *(place(f"b{n}", L("A", 2)) for n in range(3)),
        )
        revised = events_of(world, expect(L("A", 2)))
        assert revised[1] == ev.OverPromised(
            sku="A",
            location="WH",
            quantity=4,
            uncovered=(ev.Uncovered("order", "b2", 2), ev.Uncovered("order", "b1", 2)),
        )
        assert available(world, "A", "web").available == 0
        events_of(world, receive("WH", L("A", 6), reference="PO-1"))
        figures = location_figures(world.item("A"), world.policies(), "WH", NOW)
        assert (figures.over_promised, figures.sellable) == (0, 0)
