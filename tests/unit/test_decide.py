"""Every command of atp/commands.py, decided against given events (contract sections
"Master data and policies", "Stock movements", "Availability", "Reservations at checkout",
"Orders")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from atp import commands as cmd
from atp import events as ev
from atp.decide import POLICIES
from atp.errors import (
    AlreadyExists,
    DomainError,
    IllegalState,
    InsufficientStock,
    InvalidCommand,
    NegativeQuantity,
    NotFound,
    UnknownChannel,
    UnknownLocation,
)
from atp.events import Hold
from atp.state import LocationStock, OrderLineState, OrderState
from tests.unit.scenario import (
    EXPIRES,
    NOW,
    TTL,
    When,
    adjusted,
    available,
    channel,
    decided,
    expected,
    given,
    item,
    later,
    location,
    order,
    ordered,
    received,
    reservation,
    reserved,
    safety,
    transfer,
)

BASE = [location("WH1"), location("ST1", "store"), channel("web", "WH1", "ST1")]
L = cmd.Line


def short(sku: str, requested: int, avail: int) -> dict[str, object]:
    return {"sku": sku, "requested": requested, "available": avail}


def assert_damaged_within_on_hand(when: When) -> None:
    """on_hand counts every unit at the location, damaged ones included, so damaged can
    never exceed it: the command is either rejected or leaves damaged <= on_hand."""
    try:
        decision = when.decision()
    except DomainError:
        return
    world = when.then(*decision)
    for sku, stream_state in world.states.items():
        if sku[0] == "item":
            for code, stock in stream_state.locations.items():
                assert stock.damaged <= stock.on_hand, (sku, code, stock)


def held(rid: str, sku: str, *holds: Hold, expires_at=EXPIRES, chan="web") -> tuple:
    return (
        item(sku),
        ev.StockHeld(sku=sku, reservation_id=rid, channel=chan, holds=holds, expires_at=expires_at),
    )


def placed(rid: str, *lines: ev.ReservedLine, expires_at=EXPIRES, chan="web") -> tuple:
    return (
        reservation(rid),
        ev.ReservationPlaced(
            reservation_id=rid, channel=chan, lines=lines, expires_at=expires_at, reference=None
        ),
    )


def reserve(*lines: cmd.Line, rid: str = "r1", chan: str = "web", ttl: int = TTL):
    return cmd.ReserveStock(reservation_id=rid, channel=chan, lines=lines, ttl_seconds=ttl)


def place(*lines: cmd.Line, oid: str = "o1", chan: str = "web"):
    return cmd.PlaceOrder(order_id=oid, channel=chan, lines=lines)


def ship(oid: str, loc: str, *lines: cmd.Line, sid: str = "s1"):
    return cmd.ShipOrder(order_id=oid, shipment_id=sid, location=loc, lines=lines)


def ret(oid: str, loc: str, *lines: cmd.ReturnLine, rid: str = "ret1"):
    return cmd.ReturnOrder(order_id=oid, return_id=rid, location=loc, lines=lines)


# === master data and policies ============================================================


class TestDefineLocation:
    @pytest.mark.parametrize("kind", ["warehouse", "store", "dropship"])
    def test_records_the_location(self, kind):
        given().when(cmd.DefineLocation(code="L1", name="One", kind=kind)).then(
            (POLICIES, ev.LocationDefined(code="L1", name="One", kind=kind, active=True))
        )

    def test_rejects_an_unknown_kind(self):
        given().when(cmd.DefineLocation(code="L1", name="One", kind="depot")).raises(
            InvalidCommand, field="kind"
        )

    def test_unchanged_put_records_nothing(self):
        given(location("WH1")).when(
            cmd.DefineLocation(code="WH1", name="WH1", kind="warehouse")
        ).then()

    @pytest.mark.parametrize("change", [{"name": "Other"}, {"kind": "store"}, {"active": False}])
    def test_changed_put_records_the_new_definition(self, change):
        fields = {"code": "WH1", "name": "WH1", "kind": "warehouse", "active": True, **change}
        world = (
            given(location("WH1"))
            .when(cmd.DefineLocation(**fields))
            .then((POLICIES, ev.LocationDefined(**fields)))
        )
        assert world.policies().locations["WH1"].active is fields["active"]


class TestDefineChannel:
    def test_records_the_channel_with_defaults(self):
        world = (
            given(BASE)
            .when(cmd.DefineChannel(code="pos", locations=("ST1", "WH1")))
            .then(channel("pos", "ST1", "WH1"))
        )
        assert world.policies().channels["pos"].locations == ("ST1", "WH1")

    def test_unchanged_put_records_nothing(self):
        given(BASE).when(cmd.DefineChannel(code="web", locations=("WH1", "ST1"))).then()

    def test_a_new_sourcing_order_is_a_change(self):
        given(BASE).when(cmd.DefineChannel(code="web", locations=("ST1", "WH1"))).then(
            channel("web", "ST1", "WH1")
        )

    def test_changed_figures_are_recorded(self):
        c = cmd.DefineChannel(
            code="web",
            locations=("WH1", "ST1"),
            buffer=2,
            share_percent=50,
            backorder_limit=3,
            low_stock_threshold=1,
        )
        given(BASE).when(c).then(
            channel(
                "web",
                "WH1",
                "ST1",
                buffer=2,
                share_percent=50,
                backorder_limit=3,
                low_stock_threshold=1,
            )
        )

    def test_needs_a_location(self):
        given(BASE).when(cmd.DefineChannel(code="x", locations=())).raises(
            InvalidCommand, field="locations"
        )

    def test_rejects_a_location_listed_twice(self):
        given(BASE).when(cmd.DefineChannel(code="x", locations=("WH1", "WH1"))).raises(
            InvalidCommand, field="locations"
        )

    def test_rejects_an_unknown_location(self):
        given(BASE).when(cmd.DefineChannel(code="x", locations=("WH1", "XX"))).raises(
            UnknownLocation, field="locations[1]", code="XX"
        )

    @pytest.mark.parametrize("field", ["buffer", "backorder_limit", "low_stock_threshold"])
    def test_rejects_negative_figures(self, field):
        c = cmd.DefineChannel(code="x", locations=("WH1",), **{field: -1})
        given(BASE).when(c).raises(InvalidCommand, field=field)

    @pytest.mark.parametrize("share", [-1, 101])
    def test_rejects_share_percent_outside_0_to_100(self, share):
        c = cmd.DefineChannel(code="x", locations=("WH1",), share_percent=share)
        given(BASE).when(c).raises(InvalidCommand, field="share_percent")

    @pytest.mark.parametrize("share", [0, 100])
    def test_accepts_share_percent_bounds(self, share):
        c = cmd.DefineChannel(code="x", locations=("WH1",), share_percent=share)
        given(BASE).when(c).then(channel("x", "WH1", share_percent=share))


class TestSetSafetyStock:
    @pytest.mark.parametrize(
        ("sku", "loc", "stream"),
        [
            (None, None, POLICIES),
            (None, "WH1", POLICIES),
            ("A", None, item("A")),
            ("A", "WH1", item("A")),
        ],
    )
    def test_records_the_rule_on_its_stream(self, sku, loc, stream):
        given(BASE).when(cmd.SetSafetyStock(sku=sku, location=loc, quantity=3)).then(
            (stream, ev.SafetyStockSet(sku=sku, location=loc, quantity=3))
        )

    def test_rejects_an_unknown_location(self):
        given(BASE).when(cmd.SetSafetyStock(sku="A", location="XX", quantity=1)).raises(
            UnknownLocation, field="location", code="XX"
        )

    def test_rejects_a_negative_quantity(self):
        given(BASE).when(cmd.SetSafetyStock(sku=None, location=None, quantity=-1)).raises(
            InvalidCommand, field="quantity"
        )

    @pytest.mark.parametrize(
        ("sku", "loc"), [(None, None), (None, "WH1"), ("A", None), ("A", "WH1")]
    )
    def test_unchanged_rule_records_nothing(self, sku, loc):
        given(BASE, safety(sku, loc, 3)).when(
            cmd.SetSafetyStock(sku=sku, location=loc, quantity=3)
        ).then()

    @pytest.mark.parametrize(("sku", "loc"), [(None, None), ("A", "WH1")])
    def test_removing_an_absent_rule_records_nothing(self, sku, loc):
        given(BASE).when(cmd.SetSafetyStock(sku=sku, location=loc, quantity=0)).then()

    def test_quantity_zero_removes_the_rule(self):
        world = (
            given(BASE, safety("A", "WH1", 3), safety(None, None, 2))
            .when(cmd.SetSafetyStock(sku="A", location="WH1", quantity=0))
            .then((item("A"), ev.SafetyStockSet(sku="A", location="WH1", quantity=0)))
        )
        assert world.item("A").safety_stock == {}
        world = (
            given(BASE, safety(None, None, 2))
            .when(cmd.SetSafetyStock(sku=None, location=None, quantity=0))
            .then((POLICIES, ev.SafetyStockSet(sku=None, location=None, quantity=0)))
        )
        assert world.policies().safety_stock == {}

    # WH1 holds 20 units of A; each case lists the rules and what the channel can still sell.
    @pytest.mark.parametrize(
        ("rules", "sellable"),
        [
            ([], 20),
            ([(None, None, 1)], 19),
            ([(None, None, 1), (None, "WH1", 2)], 18),
            ([(None, None, 1), (None, "WH1", 2), ("A", None, 3)], 17),
            ([(None, None, 1), (None, "WH1", 2), ("A", None, 3), ("A", "WH1", 4)], 16),
            ([("A", "WH1", 4), ("A", None, 3), (None, "WH1", 2), (None, None, 1)], 16),
            ([(None, "ST1", 7), (None, None, 1)], 19),
            ([("A", "ST1", 7), (None, "WH1", 2)], 18),
            ([("B", None, 7), (None, None, 1)], 19),
            ([("A", None, 3), (None, "WH1", 2)], 17),
            ([(None, None, 1), ("A", "WH1", 0)], 19),
            ([("A", "WH1", 4), ("A", "WH1", 0), ("A", None, 3)], 17),
        ],
    )
    def test_the_most_specific_rule_wins(self, rules, sellable):
        history = [BASE, channel("wh", "WH1"), received("A", "WH1", 20)]
        history += [safety(sku, loc, q) for sku, loc, q in rules]
        given(*history).when(reserve(L("A", 21), chan="wh")).raises(
            InsufficientStock, lines=[short("A", 21, sellable)]
        )
        given(*history).when(reserve(L("A", sellable), chan="wh")).then(
            held("r1", "A", Hold("WH1", sellable), chan="wh"),
            placed("r1", ev.ReservedLine("A", sellable, (Hold("WH1", sellable),)), chan="wh"),
        )


# === stock movements =====================================================================


class TestReceiveStock:
    def test_records_each_line(self):
        c = cmd.ReceiveStock(location="WH1", lines=(L("A", 5), L("B", 2)), reference="po-1")
        world = (
            given(BASE)
            .when(c)
            .then(
                (
                    item("A"),
                    ev.StockReceived(
                        sku="A", location="WH1", quantity=5, reference="po-1", incoming_consumed=0
                    ),
                ),
                (
                    item("B"),
                    ev.StockReceived(
                        sku="B", location="WH1", quantity=2, reference="po-1", incoming_consumed=0
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5)
        assert available(world, "A", "web").available == 5

    @pytest.mark.parametrize(("qty", "consumed", "left"), [(3, 3, 1), (4, 4, 0), (6, 4, 0)])
    def test_receipts_consume_expected_supply(self, qty, consumed, left):
        world = (
            given(BASE, expected("A", "WH1", 4))
            .when(cmd.ReceiveStock(location="WH1", lines=(L("A", qty),)))
            .then(received("A", "WH1", qty, consumed=consumed))
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=qty, incoming=left)

    def test_only_the_receiving_locations_incoming_is_consumed(self):
        world = (
            given(BASE, expected("A", "ST1", 4))
            .when(cmd.ReceiveStock(location="WH1", lines=(L("A", 2),)))
            .then(received("A", "WH1", 2))
        )
        assert world.item("A").at("ST1").incoming == 4

    def test_rejects_an_unknown_location(self):
        given(BASE).when(cmd.ReceiveStock(location="XX", lines=(L("A", 1),))).raises(
            UnknownLocation, field="location", code="XX"
        )

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("A", 1), L("A", 2)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
            ((L("A", 1), L("B", -1)), "lines[1].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE).when(cmd.ReceiveStock(location="WH1", lines=lines)).raises(
            InvalidCommand, field=field
        )


class TestAdjustStock:
    @pytest.mark.parametrize("delta", [4, -3])
    def test_records_the_adjustment(self, delta):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=delta, reason="shrink")
        world = (
            given(BASE, received("A", "WH1", 5))
            .when(c)
            .then(
                (item("A"), ev.StockAdjusted(sku="A", location="WH1", delta=delta, reason="shrink"))
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5 + delta)

    def test_a_damaged_adjustment_moves_on_hand_and_damaged_together(self):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=2, reason="broken", damaged=True)
        world = (
            given(BASE, received("A", "WH1", 5))
            .when(c)
            .then(
                (
                    item("A"),
                    ev.StockAdjusted(
                        sku="A", location="WH1", delta=2, reason="broken", damaged=True
                    ),
                )
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=7, damaged=2)
        assert available(world, "A", "web").available == 5

    def test_writing_off_damaged_units(self):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=-2, reason="scrap", damaged=True)
        world = (
            given(BASE, received("A", "WH1", 5), adjusted("A", "WH1", 3, damaged=True))
            .when(c)
            .then(
                (
                    item("A"),
                    ev.StockAdjusted(
                        sku="A", location="WH1", delta=-2, reason="scrap", damaged=True
                    ),
                )
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=6, damaged=1)

    def test_rejects_a_zero_delta(self):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=0, reason="x")
        given(BASE).when(c).raises(InvalidCommand, field="delta")

    def test_rejects_an_unknown_location(self):
        c = cmd.AdjustStock(location="XX", sku="A", delta=1, reason="x")
        given(BASE).when(c).raises(UnknownLocation, field="location", code="XX")

    def test_on_hand_never_goes_below_zero(self):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=-4, reason="x")
        given(BASE, received("A", "WH1", 3)).when(c).raises(
            NegativeQuantity, sku="A", location="WH1", quantity="on_hand", current=3, change=-4
        )

    def test_on_hand_may_go_to_exactly_zero_even_below_allocations(self):
        # Shrinkage is physical: the count wins even when orders are allocated.
        c = cmd.AdjustStock(location="WH1", sku="A", delta=-3, reason="x")
        world = (
            given(BASE, received("A", "WH1", 3), ordered("o1", "web", {"A": (Hold("WH1", 2),)}))
            .when(c)
            .then(
                (item("A"), ev.StockAdjusted(sku="A", location="WH1", delta=-3, reason="x")),
                (
                    item("A"),
                    ev.OverPromised(
                        sku="A",
                        location="WH1",
                        quantity=2,
                        uncovered=(ev.Uncovered("order", "o1", 2),),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=0, allocated=2)
        assert available(world, "A", "web").locations[0].sellable == 0

    def test_a_plain_write_off_cannot_take_damaged_units(self):
        # 5 on hand, 3 of them damaged: only 2 good units can be written off as good ones.
        c = cmd.AdjustStock(location="WH1", sku="A", delta=-4, reason="lost")
        history = [BASE, received("A", "WH1", 2), adjusted("A", "WH1", 3, damaged=True)]
        assert_damaged_within_on_hand(given(*history).when(c))

    def test_damaged_never_goes_below_zero(self):
        c = cmd.AdjustStock(location="WH1", sku="A", delta=-3, reason="x", damaged=True)
        given(BASE, received("A", "WH1", 10), adjusted("A", "WH1", 2, damaged=True)).when(c).raises(
            NegativeQuantity, sku="A", location="WH1", quantity="damaged", current=2, change=-3
        )


class TestCountStock:
    def test_records_the_count_with_the_previous_figure(self):
        c = cmd.CountStock(location="WH1", lines=(cmd.CountLine("A", 7), cmd.CountLine("B", 0)))
        world = (
            given(BASE, received("A", "WH1", 5), received("B", "WH1", 2))
            .when(c)
            .then(
                (item("A"), ev.StockCounted(sku="A", location="WH1", counted=7, previous=5)),
                (item("B"), ev.StockCounted(sku="B", location="WH1", counted=0, previous=2)),
            )
        )
        assert world.item("A").at("WH1").on_hand == 7
        assert world.item("B").at("WH1").on_hand == 0

    def test_a_count_of_an_unknown_sku_starts_from_zero(self):
        c = cmd.CountStock(location="WH1", lines=(cmd.CountLine("Z", 3),))
        given(BASE).when(c).then(
            (item("Z"), ev.StockCounted(sku="Z", location="WH1", counted=3, previous=0))
        )

    def test_damaged_never_exceeds_the_count(self):
        c = cmd.CountStock(location="WH1", lines=(cmd.CountLine("A", 1),))
        world = (
            given(BASE, received("A", "WH1", 5), adjusted("A", "WH1", 3, damaged=True))
            .when(c)
            .then((item("A"), ev.StockCounted(sku="A", location="WH1", counted=1, previous=8)))
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=1, damaged=1)

    def test_rejects_an_unknown_location(self):
        c = cmd.CountStock(location="XX", lines=(cmd.CountLine("A", 1),))
        given(BASE).when(c).raises(UnknownLocation, field="location", code="XX")

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((cmd.CountLine("A", 1), cmd.CountLine("A", 2)), "lines[1].sku"),
            ((cmd.CountLine("A", -1),), "lines[0].counted"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE).when(cmd.CountStock(location="WH1", lines=lines)).raises(
            InvalidCommand, field=field
        )


def ship_transfer(*lines: cmd.Line, tid="t1", src="WH1", dst="ST1"):
    return cmd.ShipTransfer(transfer_id=tid, from_location=src, to_location=dst, lines=lines)


class TestShipTransfer:
    def test_source_on_hand_drops_and_destination_is_in_transit(self):
        world = (
            given(BASE, received("A", "WH1", 5), received("B", "WH1", 2))
            .when(ship_transfer(L("A", 3), L("B", 2)))
            .then(
                (
                    item("A"),
                    ev.TransferDispatched(
                        sku="A",
                        transfer_id="t1",
                        from_location="WH1",
                        to_location="ST1",
                        quantity=3,
                    ),
                ),
                (
                    item("B"),
                    ev.TransferDispatched(
                        sku="B",
                        transfer_id="t1",
                        from_location="WH1",
                        to_location="ST1",
                        quantity=2,
                    ),
                ),
                (
                    transfer("t1"),
                    ev.TransferShipped(
                        transfer_id="t1",
                        from_location="WH1",
                        to_location="ST1",
                        lines=(ev.OrderLine("A", 3), ev.OrderLine("B", 2)),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=2)
        assert world.item("A").at("ST1") == LocationStock(in_transit=3)
        assert available(world, "A", "web").available == 2
        assert world.transfer("t1").status == "in_transit"

    def test_only_units_not_allocated_held_or_damaged_may_leave(self):
        history = [
            BASE,
            received("A", "WH1", 10),
            adjusted("A", "WH1", 1, damaged=True),  # on hand 11, damaged 1
            ordered("o1", "web", {"A": (Hold("WH1", 3),)}),
            reserved("r1", "web", {"A": (Hold("WH1", 2),)}),
        ]
        given(*history).when(ship_transfer(L("A", 6))).raises(
            InsufficientStock, lines=[short("A", 6, 5)]
        )
        given(*history).when(ship_transfer(L("A", 5))).then(
            (
                item("A"),
                ev.TransferDispatched(
                    sku="A", transfer_id="t1", from_location="WH1", to_location="ST1", quantity=5
                ),
            ),
            (
                transfer("t1"),
                ev.TransferShipped(
                    transfer_id="t1",
                    from_location="WH1",
                    to_location="ST1",
                    lines=(ev.OrderLine("A", 5),),
                ),
            ),
        )

    def test_names_every_short_line(self):
        given(BASE, received("A", "WH1", 1), received("B", "WH1", 5)).when(
            ship_transfer(L("A", 2), L("B", 5), L("C", 1))
        ).raises(InsufficientStock, lines=[short("A", 2, 1), short("C", 1, 0)])

    def test_safety_stock_may_leave(self):
        decision = (
            given(BASE, received("A", "WH1", 5), safety(None, None, 5))
            .when(ship_transfer(L("A", 5)))
            .decision()
        )
        assert decision[0][1].quantity == 5

    def test_an_expired_hold_no_longer_blocks(self):
        history = [BASE, received("A", "WH1", 5), reserved("r1", "web", {"A": (Hold("WH1", 5),)})]
        given(*history).when(ship_transfer(L("A", 1)), now=EXPIRES - timedelta(seconds=1)).raises(
            InsufficientStock, lines=[short("A", 1, 0)]
        )
        assert given(*history).when(ship_transfer(L("A", 5)), now=EXPIRES).decision()

    def test_backorder_promises_that_arrived_may_not_leave(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            expected("A", "WH1", 3),
            reserved("r1", "web", {"A": (Hold("WH1", 3, backorder=True),)}),
            received("A", "WH1", 5, consumed=3),
        ]
        given(*history).when(ship_transfer(L("A", 3))).raises(
            InsufficientStock, lines=[short("A", 3, 2)]
        )

    def test_rejects_the_same_location_twice(self):
        given(BASE).when(ship_transfer(L("A", 1), dst="WH1")).raises(
            InvalidCommand, field="to_location"
        )

    @pytest.mark.parametrize(
        ("src", "dst", "field"), [("XX", "ST1", "from_location"), ("WH1", "XX", "to_location")]
    )
    def test_rejects_unknown_locations(self, src, dst, field):
        given(BASE).when(ship_transfer(L("A", 1), src=src, dst=dst)).raises(
            UnknownLocation, field=field, code="XX"
        )

    def test_rejects_a_transfer_id_in_use(self):
        history = decided(BASE, received("A", "WH1", 5), ship_transfer(L("A", 1)))
        given(history).when(ship_transfer(L("A", 1))).raises(
            AlreadyExists, resource="transfer", id="t1"
        )

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE, received("A", "WH1", 5)).when(ship_transfer(*lines)).raises(
            InvalidCommand, field=field
        )


class TestReceiveTransfer:
    def test_destination_gets_the_units(self):
        history = decided(
            BASE,
            received("A", "WH1", 5),
            received("B", "WH1", 5),
            ship_transfer(L("A", 3), L("B", 1)),
        )
        world = (
            given(history)
            .when(cmd.ReceiveTransfer(transfer_id="t1"))
            .then(
                (
                    item("A"),
                    ev.TransferArrived(sku="A", transfer_id="t1", to_location="ST1", quantity=3),
                ),
                (
                    item("B"),
                    ev.TransferArrived(sku="B", transfer_id="t1", to_location="ST1", quantity=1),
                ),
                (
                    transfer("t1"),
                    ev.TransferReceived(
                        transfer_id="t1", lines=(ev.OrderLine("A", 3), ev.OrderLine("B", 1))
                    ),
                ),
            )
        )
        assert world.item("A").at("ST1") == LocationStock(on_hand=3)
        assert world.item("A").at("WH1") == LocationStock(on_hand=2)
        assert world.transfer("t1").status == "received"
        assert available(world, "A", "web").available == 5

    def test_unknown_transfer_is_not_found(self):
        given(BASE).when(cmd.ReceiveTransfer(transfer_id="t9")).raises(
            NotFound, resource="transfer", id="t9"
        )

    def test_a_received_transfer_cannot_be_received_again(self):
        history = decided(
            BASE,
            received("A", "WH1", 5),
            ship_transfer(L("A", 3)),
            cmd.ReceiveTransfer(transfer_id="t1"),
        )
        given(history).when(cmd.ReceiveTransfer(transfer_id="t1")).raises(
            IllegalState, resource="transfer", id="t1", current_status="received"
        )


class TestExpectIncoming:
    def test_records_expected_supply(self):
        c = cmd.ExpectIncoming(location="ST1", lines=(L("A", 4),), eta=later(3600), reference="asn")
        world = (
            given(BASE)
            .when(c)
            .then(
                (
                    item("A"),
                    ev.IncomingExpected(
                        sku="A", location="ST1", quantity=4, eta=later(3600), reference="asn"
                    ),
                )
            )
        )
        assert world.item("A").at("ST1") == LocationStock(incoming=4)
        assert available(world, "A", "web").available == 0  # not on hand, no backorders

    def test_rejects_an_unknown_location(self):
        c = cmd.ExpectIncoming(location="XX", lines=(L("A", 4),))
        given(BASE).when(c).raises(UnknownLocation, field="location", code="XX")

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE).when(cmd.ExpectIncoming(location="WH1", lines=lines)).raises(
            InvalidCommand, field=field
        )


# === reservations ========================================================================


class TestReserveStock:
    def test_holds_at_the_first_location(self):
        world = (
            given(BASE, received("A", "WH1", 5))
            .when(reserve(L("A", 2)))
            .then(
                held("r1", "A", Hold("WH1", 2)),
                placed("r1", ev.ReservedLine("A", 2, (Hold("WH1", 2),))),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5, held=2)
        assert world.reservation("r1").status_at(NOW) == "held"
        assert available(world, "A", "web").available == 3

    def test_splits_across_locations_in_sourcing_order(self):
        holds = (Hold("WH1", 3), Hold("ST1", 3))
        given(BASE, received("A", "WH1", 3), received("A", "ST1", 5)).when(reserve(L("A", 6))).then(
            held("r1", "A", *holds), placed("r1", ev.ReservedLine("A", 6, holds))
        )

    def test_sourcing_order_is_the_channels(self):
        holds = (Hold("ST1", 5), Hold("WH1", 1))
        given(
            BASE, channel("web", "ST1", "WH1"), received("A", "WH1", 3), received("A", "ST1", 5)
        ).when(reserve(L("A", 6))).then(
            held("r1", "A", *holds), placed("r1", ev.ReservedLine("A", 6, holds))
        )

    def test_every_line_in_one_decision(self):
        c = cmd.ReserveStock(
            reservation_id="r1",
            channel="web",
            lines=(L("A", 1), L("B", 2)),
            ttl_seconds=60,
            reference="cart-9",
        )
        exp = NOW + timedelta(seconds=60)
        given(BASE, received("A", "WH1", 3), received("B", "ST1", 5)).when(c).then(
            held("r1", "A", Hold("WH1", 1), expires_at=exp),
            held("r1", "B", Hold("ST1", 2), expires_at=exp),
            (
                reservation("r1"),
                ev.ReservationPlaced(
                    reservation_id="r1",
                    channel="web",
                    expires_at=exp,
                    reference="cart-9",
                    lines=(
                        ev.ReservedLine("A", 1, (Hold("WH1", 1),)),
                        ev.ReservedLine("B", 2, (Hold("ST1", 2),)),
                    ),
                ),
            ),
        )

    def test_an_inactive_location_adds_nothing_and_takes_no_holds(self):
        history = [
            BASE,
            location("WH1", active=False),
            received("A", "WH1", 5),
            received("A", "ST1", 3),
        ]
        given(*history).when(reserve(L("A", 4))).raises(InsufficientStock, lines=[short("A", 4, 3)])
        given(*history).when(reserve(L("A", 3))).then(
            held("r1", "A", Hold("ST1", 3)),
            placed("r1", ev.ReservedLine("A", 3, (Hold("ST1", 3),))),
        )

    def test_all_lines_or_none_and_the_409_names_each_short_line(self):
        history = [BASE, received("A", "WH1", 1), received("B", "WH1", 5), received("C", "ST1", 2)]
        given(*history).when(reserve(L("A", 2), L("B", 5), L("C", 3), L("D", 1))).raises(
            InsufficientStock, lines=[short("A", 2, 1), short("C", 3, 2), short("D", 1, 0)]
        )

    def test_allocated_held_damaged_and_safety_stock_are_not_available(self):
        history = [
            BASE,
            channel("wh", "WH1"),
            received("A", "WH1", 10),
            adjusted("A", "WH1", 1, damaged=True),
            ordered("o1", "wh", {"A": (Hold("WH1", 2),)}),
            reserved("r0", "wh", {"A": (Hold("WH1", 3),)}),
            safety(None, "WH1", 2),
        ]
        # 11 on hand - 1 damaged - 2 allocated - 3 held - 2 safety stock
        given(*history).when(reserve(L("A", 4), chan="wh")).raises(
            InsufficientStock, lines=[short("A", 4, 3)]
        )

    @pytest.mark.parametrize(
        ("pool", "share", "buffer", "avail"),
        [
            (10, 100, 0, 10),
            (10, 33, 0, 3),  # floor(3.3)
            (7, 50, 0, 3),  # floor(3.5)
            (10, 33, 1, 2),  # share first, then the buffer
            (10, 100, 4, 6),
            (3, 100, 5, 0),  # never negative
            (10, 0, 0, 0),
            (9, 99, 0, 8),  # floor(8.91)
        ],
    )
    def test_share_percent_then_buffer(self, pool, share, buffer, avail):
        history = [
            BASE,
            channel("web", "WH1", "ST1", share_percent=share, buffer=buffer),
            received("A", "WH1", pool - 1),
            received("A", "ST1", 1),
        ]
        given(*history).when(reserve(L("A", avail + 1))).raises(
            InsufficientStock, lines=[short("A", avail + 1, avail)]
        )

    def test_backorders_come_out_of_incoming_supply_after_on_hand(self):
        history = [
            BASE,
            channel("web", "WH1", "ST1", backorder_limit=4),
            received("A", "WH1", 2),
            expected("A", "WH1", 1),
            expected("A", "ST1", 10),
        ]
        holds = (Hold("WH1", 2), Hold("WH1", 1, backorder=True), Hold("ST1", 2, backorder=True))
        world = (
            given(*history)
            .when(reserve(L("A", 5)))
            .then(held("r1", "A", *holds), placed("r1", ev.ReservedLine("A", 5, holds)))
        )
        assert world.item("A").at("WH1") == LocationStock(
            on_hand=2, held=2, incoming=1, backordered=1
        )
        assert world.item("A").at("ST1") == LocationStock(incoming=10, backordered=2)
        figures = available(world, "A", "web")
        assert figures.on_hand_available == 0
        assert figures.status == "backorder"

    def test_backorders_are_capped_by_the_limit(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=3),
            received("A", "WH1", 2),
            expected("A", "WH1", 10),
        ]
        given(*history).when(reserve(L("A", 6))).raises(InsufficientStock, lines=[short("A", 6, 5)])

    def test_no_backorders_without_a_limit(self):
        given(BASE, expected("A", "WH1", 10)).when(reserve(L("A", 1))).raises(
            InsufficientStock, lines=[short("A", 1, 0)]
        )

    def test_no_backorders_from_an_inactive_location(self):
        history = [
            BASE,
            channel("web", "WH1", "ST1", backorder_limit=3),
            location("ST1", "store", active=False),
            expected("A", "ST1", 10),
        ]
        given(*history).when(reserve(L("A", 1))).raises(InsufficientStock, lines=[short("A", 1, 0)])

    def test_promised_incoming_is_not_promised_twice(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            expected("A", "WH1", 3),
            reserved("r0", "web", {"A": (Hold("WH1", 2, backorder=True),)}),
        ]
        given(*history).when(reserve(L("A", 2))).raises(InsufficientStock, lines=[short("A", 2, 1)])

    def test_an_expired_hold_stops_counting_at_expires_at(self):
        history = [BASE, received("A", "WH1", 5), reserved("r0", "web", {"A": (Hold("WH1", 5),)})]
        given(*history).when(reserve(L("A", 1)), now=EXPIRES - timedelta(microseconds=1)).raises(
            InsufficientStock, lines=[short("A", 1, 0)]
        )
        at = EXPIRES
        exp = at + timedelta(seconds=TTL)
        world = (
            given(*history)
            .when(reserve(L("A", 5)), now=at)
            .then(
                held("r1", "A", Hold("WH1", 5), expires_at=exp),
                placed("r1", ev.ReservedLine("A", 5, (Hold("WH1", 5),)), expires_at=exp),
            )
        )
        assert world.reservation("r0").status_at(at) == "expired"
        assert world.reservation("r0").status == "held"  # nothing swept yet

    def test_an_expired_backorder_hold_stops_counting_too(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            expected("A", "WH1", 3),
            reserved("r0", "web", {"A": (Hold("WH1", 3, backorder=True),)}),
        ]
        given(*history).when(reserve(L("A", 1))).raises(InsufficientStock, lines=[short("A", 1, 0)])
        assert given(*history).when(reserve(L("A", 3)), now=EXPIRES).decision()

    def test_unknown_channel(self):
        given(BASE).when(reserve(L("A", 1), chan="nope")).raises(
            UnknownChannel, field="channel", code="nope"
        )

    def test_a_reservation_id_is_used_once(self):
        history = decided(
            BASE,
            received("A", "WH1", 5),
            reserve(L("A", 1)),
            cmd.ReleaseReservation(reservation_id="r1"),
        )
        given(history).when(reserve(L("A", 1))).raises(
            AlreadyExists, resource="reservation", id="r1"
        )

    @pytest.mark.parametrize("ttl", [0, -5, 86_401])
    def test_rejects_a_ttl_outside_1_to_86400(self, ttl):
        given(BASE, received("A", "WH1", 5)).when(reserve(L("A", 1), ttl=ttl)).raises(
            InvalidCommand, field="ttl_seconds"
        )

    @pytest.mark.parametrize("ttl", [1, 86_400])
    def test_accepts_ttl_bounds(self, ttl):
        decision = given(BASE, received("A", "WH1", 5)).when(reserve(L("A", 1), ttl=ttl)).decision()
        assert decision[-1][1].expires_at == NOW + timedelta(seconds=ttl)

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
            ((L("A", -1),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE, received("A", "WH1", 5)).when(reserve(*lines)).raises(
            InvalidCommand, field=field
        )


def held_r1(*extra, **kwargs):
    """WH1 has 5 A and 5 B; r1 holds 2 A and 1 B there (until EXPIRES unless told)."""
    return [
        BASE,
        received("A", "WH1", 5),
        received("B", "WH1", 5),
        reserved("r1", "web", {"A": (Hold("WH1", 2),), "B": (Hold("WH1", 1),)}, **kwargs),
        *extra,
    ]


RELEASED = (reservation("r1"), ev.ReservationReleased(reservation_id="r1"))
SWEPT = (reservation("r1"), ev.ReservationExpired(reservation_id="r1"))
COMMITTED = (reservation("r1"), ev.ReservationCommitted(reservation_id="r1", order_id="o0"))
NOT_HELD = [
    pytest.param(RELEASED, NOW, "released", id="released"),
    pytest.param(COMMITTED, NOW, "committed", id="committed"),
    pytest.param(SWEPT, EXPIRES, "expired", id="expired-swept"),
    pytest.param([], EXPIRES, "expired", id="expired-unswept"),
    pytest.param([], EXPIRES + timedelta(days=1), "expired", id="expired-long-ago"),
]


class TestExtendReservation:
    def test_sets_expires_at_to_now_plus_ttl(self):
        at = later(100)
        exp = at + timedelta(seconds=1800)
        world = (
            given(held_r1())
            .when(cmd.ExtendReservation(reservation_id="r1", ttl_seconds=1800), now=at)
            .then(
                (item("A"), ev.HoldExtended(sku="A", reservation_id="r1", expires_at=exp)),
                (item("B"), ev.HoldExtended(sku="B", reservation_id="r1", expires_at=exp)),
                (reservation("r1"), ev.ReservationExtended(reservation_id="r1", expires_at=exp)),
            )
        )
        assert world.reservation("r1").expires_at == exp
        assert world.item("A").holds["r1"].expires_at == exp
        assert world.item("A").next_expiry == exp
        assert available(world, "A", "web", now=EXPIRES).available == 3  # still held
        assert available(world, "A", "web", now=exp).available == 5

    def test_extend_may_shorten(self):
        exp = NOW + timedelta(seconds=10)
        decision = (
            given(held_r1())
            .when(cmd.ExtendReservation(reservation_id="r1", ttl_seconds=10))
            .decision()
        )
        assert decision[-1] == (
            reservation("r1"),
            ev.ReservationExtended(reservation_id="r1", expires_at=exp),
        )

    @pytest.mark.parametrize("ttl", [0, 86_401])
    def test_rejects_a_bad_ttl(self, ttl):
        given(held_r1()).when(cmd.ExtendReservation(reservation_id="r1", ttl_seconds=ttl)).raises(
            InvalidCommand, field="ttl_seconds"
        )

    def test_unknown_reservation(self):
        given(BASE).when(cmd.ExtendReservation(reservation_id="r9", ttl_seconds=60)).raises(
            NotFound, resource="reservation", id="r9"
        )

    @pytest.mark.parametrize(("after", "now", "status"), NOT_HELD)
    def test_only_a_held_reservation_can_be_extended(self, after, now, status):
        given(held_r1(after)).when(
            cmd.ExtendReservation(reservation_id="r1", ttl_seconds=60), now=now
        ).raises(IllegalState, resource="reservation", id="r1", current_status=status)


class TestReleaseReservation:
    def test_releases_every_line(self):
        world = (
            given(held_r1())
            .when(cmd.ReleaseReservation(reservation_id="r1"))
            .then(
                (item("A"), ev.HoldReleased(sku="A", reservation_id="r1")),
                (item("B"), ev.HoldReleased(sku="B", reservation_id="r1")),
                RELEASED,
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5)
        assert world.item("A").holds == {}
        assert world.item("A").next_expiry is None
        assert world.reservation("r1").status == "released"
        assert available(world, "A", "web").available == 5

    def test_releasing_backorder_holds_frees_the_incoming(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            expected("A", "WH1", 3),
            reserved("r1", "web", {"A": (Hold("WH1", 3, backorder=True),)}),
        ]
        world = (
            given(*history)
            .when(cmd.ReleaseReservation(reservation_id="r1"))
            .then((item("A"), ev.HoldReleased(sku="A", reservation_id="r1")), RELEASED)
        )
        assert world.item("A").at("WH1") == LocationStock(incoming=3)

    def test_unknown_reservation(self):
        given(BASE).when(cmd.ReleaseReservation(reservation_id="r9")).raises(
            NotFound, resource="reservation", id="r9"
        )

    @pytest.mark.parametrize(("after", "now", "status"), NOT_HELD)
    def test_only_a_held_reservation_can_be_released(self, after, now, status):
        given(held_r1(after)).when(cmd.ReleaseReservation(reservation_id="r1"), now=now).raises(
            IllegalState, resource="reservation", id="r1", current_status=status
        )


class TestExpireReservation:
    def test_is_a_no_op_before_expiry(self):
        given(held_r1()).when(
            cmd.ExpireReservation(reservation_id="r1"), now=EXPIRES - timedelta(microseconds=1)
        ).then()

    @pytest.mark.parametrize("at", [EXPIRES, EXPIRES + timedelta(hours=3)])
    def test_records_the_expiry_once_past_expires_at(self, at):
        world = (
            given(held_r1())
            .when(cmd.ExpireReservation(reservation_id="r1"), now=at)
            .then(
                (item("A"), ev.HoldExpired(sku="A", reservation_id="r1")),
                (item("B"), ev.HoldExpired(sku="B", reservation_id="r1")),
                SWEPT,
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5)
        assert world.item("A").holds == {}
        assert world.reservation("r1").status == "expired"

    def test_an_extended_reservation_expires_at_its_new_time(self):
        extended = decided(
            held_r1(), cmd.ExtendReservation(reservation_id="r1", ttl_seconds=TTL), now=later(600)
        )
        given(extended).when(cmd.ExpireReservation(reservation_id="r1"), now=EXPIRES).then()

    @pytest.mark.parametrize(
        "after", [RELEASED, COMMITTED, SWEPT], ids=lambda p: type(p[1]).__name__
    )
    def test_is_a_no_op_unless_held(self, after):
        given(held_r1(after)).when(cmd.ExpireReservation(reservation_id="r1"), now=EXPIRES).then()

    def test_is_a_no_op_for_an_unknown_reservation(self):
        given(BASE).when(cmd.ExpireReservation(reservation_id="r9"), now=EXPIRES).then()


class TestCommitReservation:
    def test_holds_become_the_orders_allocations(self):
        world = (
            given(held_r1())
            .when(cmd.CommitReservation(reservation_id="r1", order_id="o1"))
            .then(
                (item("A"), ev.HoldCommitted(sku="A", reservation_id="r1", order_id="o1")),
                (item("B"), ev.HoldCommitted(sku="B", reservation_id="r1", order_id="o1")),
                (reservation("r1"), ev.ReservationCommitted(reservation_id="r1", order_id="o1")),
                (
                    order("o1"),
                    ev.OrderPlaced(
                        order_id="o1",
                        channel="web",
                        reservation_id="r1",
                        lines=(ev.OrderLine("A", 2), ev.OrderLine("B", 1)),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=5, allocated=2)
        assert world.item("A").holds == {}
        assert world.item("A").allocations == {"o1": (Hold("WH1", 2),)}
        assert world.reservation("r1").status == "committed"
        assert world.reservation("r1").order_id == "o1"
        assert world.order("o1").status == "allocated"
        assert world.order("o1").reservation_id == "r1"
        # Allocations do not expire.
        assert available(world, "A", "web", now=EXPIRES + timedelta(days=9)).available == 3

    def test_backorder_holds_stay_backorders(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            received("A", "WH1", 1),
            expected("A", "WH1", 3),
            reserved("r1", "web", {"A": (Hold("WH1", 1), Hold("WH1", 2, backorder=True))}),
        ]
        world = (
            given(*history)
            .when(cmd.CommitReservation(reservation_id="r1", order_id="o1"))
            .then(
                (item("A"), ev.HoldCommitted(sku="A", reservation_id="r1", order_id="o1")),
                (reservation("r1"), ev.ReservationCommitted(reservation_id="r1", order_id="o1")),
                (
                    order("o1"),
                    ev.OrderPlaced(
                        order_id="o1",
                        channel="web",
                        reservation_id="r1",
                        lines=(ev.OrderLine("A", 3),),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(
            on_hand=1, allocated=1, incoming=3, backordered=2
        )
        assert world.item("A").allocations["o1"] == (Hold("WH1", 1), Hold("WH1", 2, True))

    def test_unknown_reservation(self):
        given(BASE).when(cmd.CommitReservation(reservation_id="r9", order_id="o1")).raises(
            NotFound, resource="reservation", id="r9"
        )

    @pytest.mark.parametrize(("after", "now", "status"), NOT_HELD)
    def test_only_a_held_reservation_can_be_committed(self, after, now, status):
        given(held_r1(after)).when(
            cmd.CommitReservation(reservation_id="r1", order_id="o1"), now=now
        ).raises(IllegalState, resource="reservation", id="r1", current_status=status)

    def test_the_order_id_must_be_new(self):
        given(held_r1(ordered("o1", "web", {"A": (Hold("WH1", 1),)}))).when(
            cmd.CommitReservation(reservation_id="r1", order_id="o1")
        ).raises(AlreadyExists, resource="order", id="o1")


# === orders ==============================================================================


class TestPlaceOrder:
    def test_allocates_without_a_hold(self):
        allocs = (Hold("WH1", 1), Hold("ST1", 3))
        world = (
            given(BASE, received("A", "WH1", 1), received("A", "ST1", 5), received("B", "ST1", 1))
            .when(place(L("A", 4), L("B", 1)))
            .then(
                (
                    item("A"),
                    ev.StockAllocated(sku="A", order_id="o1", channel="web", allocations=allocs),
                ),
                (
                    item("B"),
                    ev.StockAllocated(
                        sku="B", order_id="o1", channel="web", allocations=(Hold("ST1", 1),)
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderPlaced(
                        order_id="o1",
                        channel="web",
                        reservation_id=None,
                        lines=(ev.OrderLine("A", 4), ev.OrderLine("B", 1)),
                    ),
                ),
            )
        )
        assert world.item("A").at("ST1") == LocationStock(on_hand=5, allocated=3)
        assert world.item("A").allocations == {"o1": allocs}
        assert world.order("o1").status == "allocated"
        assert available(world, "A", "web").available == 2

    def test_backorder_allocation(self):
        history = [BASE, channel("web", "WH1", backorder_limit=2), expected("A", "WH1", 5)]
        world = (
            given(*history)
            .when(place(L("A", 2)))
            .then(
                (
                    item("A"),
                    ev.StockAllocated(
                        sku="A",
                        order_id="o1",
                        channel="web",
                        allocations=(Hold("WH1", 2, backorder=True),),
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderPlaced(
                        order_id="o1",
                        channel="web",
                        reservation_id=None,
                        lines=(ev.OrderLine("A", 2),),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(incoming=5, backordered=2)

    def test_all_lines_or_none(self):
        given(BASE, received("A", "WH1", 5)).when(place(L("A", 5), L("B", 1))).raises(
            InsufficientStock, lines=[short("B", 1, 0)]
        )

    def test_the_order_id_must_be_new(self):
        given(BASE, received("A", "WH1", 5), ordered("o1", "web", {"A": (Hold("WH1", 1),)})).when(
            place(L("A", 1))
        ).raises(AlreadyExists, resource="order", id="o1")

    def test_unknown_channel(self):
        given(BASE).when(place(L("A", 1), chan="nope")).raises(
            UnknownChannel, field="channel", code="nope"
        )

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(BASE, received("A", "WH1", 5)).when(place(*lines)).raises(InvalidCommand, field=field)


def order_o1(*extra):
    """o1: 3 A from WH1 then 2 A from ST1, and 1 B from WH1."""
    return [
        BASE,
        received("A", "WH1", 3),
        received("A", "ST1", 4),
        received("B", "WH1", 2),
        ordered("o1", "web", {"A": (Hold("WH1", 3), Hold("ST1", 2)), "B": (Hold("WH1", 1),)}),
        *extra,
    ]


class TestCancelOrder:
    def test_cancels_everything_unshipped(self):
        world = (
            given(order_o1())
            .when(cmd.CancelOrder(order_id="o1"))
            .then(
                (
                    item("A"),
                    ev.AllocationReleased(
                        sku="A", order_id="o1", allocations=(Hold("ST1", 2), Hold("WH1", 3))
                    ),
                ),
                (
                    item("B"),
                    ev.AllocationReleased(sku="B", order_id="o1", allocations=(Hold("WH1", 1),)),
                ),
                (
                    order("o1"),
                    ev.OrderCanceled(
                        order_id="o1", lines=(ev.OrderLine("A", 5), ev.OrderLine("B", 1))
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=3)
        assert world.item("A").allocations == {}
        assert world.order("o1").status == "canceled"
        assert available(world, "A", "web").available == 7

    def test_a_partial_cancel_returns_the_last_sourced_units_first(self):
        world = (
            given(order_o1())
            .when(cmd.CancelOrder(order_id="o1", lines=(L("A", 3),)))
            .then(
                (
                    item("A"),
                    ev.AllocationReleased(
                        sku="A", order_id="o1", allocations=(Hold("ST1", 2), Hold("WH1", 1))
                    ),
                ),
                (order("o1"), ev.OrderCanceled(order_id="o1", lines=(ev.OrderLine("A", 3),))),
            )
        )
        assert world.item("A").allocations == {"o1": (Hold("WH1", 2),)}
        assert world.order("o1").status == "allocated"
        assert world.order("o1").line("A").canceled == 3

    def test_a_cancel_returns_backorder_promises_first(self):
        allocs = (Hold("WH1", 2), Hold("WH1", 2, backorder=True))
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            received("A", "WH1", 2),
            expected("A", "WH1", 2),
            ordered("o1", "web", {"A": allocs}),
        ]
        world = (
            given(*history)
            .when(cmd.CancelOrder(order_id="o1", lines=(L("A", 3),)))
            .then(
                (
                    item("A"),
                    ev.AllocationReleased(
                        sku="A", order_id="o1", allocations=(Hold("WH1", 2, True), Hold("WH1", 1))
                    ),
                ),
                (order("o1"), ev.OrderCanceled(order_id="o1", lines=(ev.OrderLine("A", 3),))),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=2, allocated=1, incoming=2)

    def test_only_unshipped_units_are_canceled(self):
        history = decided(order_o1(), ship("o1", "WH1", L("A", 3)))
        world = (
            given(history)
            .when(cmd.CancelOrder(order_id="o1"))
            .then(
                (
                    item("A"),
                    ev.AllocationReleased(sku="A", order_id="o1", allocations=(Hold("ST1", 2),)),
                ),
                (
                    item("B"),
                    ev.AllocationReleased(sku="B", order_id="o1", allocations=(Hold("WH1", 1),)),
                ),
                (
                    order("o1"),
                    ev.OrderCanceled(
                        order_id="o1", lines=(ev.OrderLine("A", 2), ev.OrderLine("B", 1))
                    ),
                ),
            )
        )
        assert world.order("o1").status == "shipped"
        assert world.item("A").allocations == {}

    def test_cannot_cancel_more_than_is_unshipped(self):
        given(order_o1()).when(cmd.CancelOrder(order_id="o1", lines=(L("A", 6), L("B", 1)))).raises(
            InsufficientStock, lines=[short("A", 6, 5)]
        )

    def test_a_canceled_line_cannot_be_canceled_again(self):
        history = decided(order_o1(), cmd.CancelOrder(order_id="o1", lines=(L("B", 1),)))
        given(history).when(cmd.CancelOrder(order_id="o1", lines=(L("B", 1),))).raises(
            InsufficientStock, lines=[short("B", 1, 0)]
        )

    @pytest.mark.parametrize(
        ("done", "status"),
        [
            (cmd.CancelOrder(order_id="o1"), "canceled"),
            (ship("o1", "WH1", L("B", 1)), "shipped"),
        ],
    )
    def test_nothing_left_to_cancel(self, done, status):
        history = decided(
            BASE, received("B", "WH1", 2), ordered("o1", "web", {"B": (Hold("WH1", 1),)}), done
        )
        given(history).when(cmd.CancelOrder(order_id="o1")).raises(
            IllegalState, resource="order", id="o1", current_status=status
        )

    def test_unknown_order(self):
        given(BASE).when(cmd.CancelOrder(order_id="o9")).raises(NotFound, resource="order", id="o9")

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("C", 1),), "lines[0].sku"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(order_o1()).when(cmd.CancelOrder(order_id="o1", lines=lines)).raises(
            InvalidCommand, field=field
        )


class TestShipOrder:
    def test_on_hand_and_allocated_both_drop(self):
        world = (
            given(order_o1())
            .when(ship("o1", "WH1", L("A", 2), L("B", 1)))
            .then(
                (
                    item("A"),
                    ev.StockShipped(
                        sku="A",
                        order_id="o1",
                        shipment_id="s1",
                        location="WH1",
                        quantity=2,
                        backorder_quantity=0,
                    ),
                ),
                (
                    item("B"),
                    ev.StockShipped(
                        sku="B",
                        order_id="o1",
                        shipment_id="s1",
                        location="WH1",
                        quantity=1,
                        backorder_quantity=0,
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderShipped(
                        order_id="o1",
                        shipment_id="s1",
                        location="WH1",
                        lines=(ev.OrderLine("A", 2), ev.OrderLine("B", 1)),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=1, allocated=1)
        assert world.item("A").allocations == {"o1": (Hold("WH1", 1), Hold("ST1", 2))}
        assert world.order("o1").status == "partially_shipped"
        assert world.order("o1").shipments == ("s1",)
        assert available(world, "A", "web").available == 2

    def test_cannot_ship_more_than_is_open(self):
        given(order_o1()).when(ship("o1", "WH1", L("B", 2))).raises(
            InsufficientStock, lines=[short("B", 2, 1)]
        )

    def test_cannot_ship_canceled_units(self):
        history = decided(order_o1(), cmd.CancelOrder(order_id="o1", lines=(L("A", 2),)))
        given(history).when(ship("o1", "WH1", L("A", 4))).raises(
            InsufficientStock, lines=[short("A", 4, 3)]
        )

    def test_cannot_ship_from_a_location_the_channel_does_not_source_from(self):
        history = order_o1(location("DS9", "dropship"), received("B", "DS9", 5))
        given(history).when(ship("o1", "DS9", L("B", 1))).raises(
            InsufficientStock, lines=[short("B", 1, 0)]
        )

    def test_units_shipped_from_another_channel_location_move_the_allocation_there(self):
        # 3 allocated at WH1 and 2 at ST1; ST1 (4 on hand) ships 3: one unit moves from WH1.
        moved = ev.AllocationMoved(
            sku="A", order_id="o1", to_location="ST1", moved=(Hold("WH1", 1),)
        )
        shipped = ev.StockShipped(
            sku="A",
            order_id="o1",
            shipment_id="s1",
            location="ST1",
            quantity=3,
            backorder_quantity=0,
        )
        world = (
            given(order_o1())
            .when(ship("o1", "ST1", L("A", 3)))
            .then(
                (item("A"), moved),
                (item("A"), shipped),
                (
                    order("o1"),
                    ev.OrderShipped(
                        order_id="o1",
                        shipment_id="s1",
                        location="ST1",
                        lines=(ev.OrderLine("A", 3),),
                    ),
                ),
            )
        )
        assert world.item("A").allocations["o1"] == (Hold("WH1", 2),)
        assert world.item("A").at("WH1") == LocationStock(on_hand=3, allocated=2)
        assert world.item("A").at("ST1") == LocationStock(on_hand=1, allocated=0)

    def test_cannot_ship_units_that_are_not_on_hand(self):
        given(order_o1(adjusted("A", "WH1", -2))).when(ship("o1", "WH1", L("A", 3))).raises(
            NegativeQuantity, sku="A", location="WH1", quantity="on_hand", current=1, change=-3
        )

    def test_backordered_units_ship_once_they_arrived(self):
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            received("A", "WH1", 3),
            expected("A", "WH1", 3),
            ordered("o0", "web", {"A": (Hold("WH1", 2),)}),
            ordered("o1", "web", {"A": (Hold("WH1", 1), Hold("WH1", 2, backorder=True))}),
        ]
        # 3 on hand, all allocated: the backordered units are not there yet.
        given(*history).when(ship("o1", "WH1", L("A", 2))).raises(
            InsufficientStock, lines=[short("A", 2, 1)]
        )
        arrived = [*history, received("A", "WH1", 3, consumed=3)]
        world = (
            given(*arrived)
            .when(ship("o1", "WH1", L("A", 3)))
            .then(
                (
                    item("A"),
                    ev.StockShipped(
                        sku="A",
                        order_id="o1",
                        shipment_id="s1",
                        location="WH1",
                        quantity=3,
                        backorder_quantity=2,
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderShipped(
                        order_id="o1",
                        shipment_id="s1",
                        location="WH1",
                        lines=(ev.OrderLine("A", 3),),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=3, allocated=2)
        assert world.item("A").allocations == {"o0": (Hold("WH1", 2),)}
        assert world.order("o1").status == "shipped"

    def test_backordered_units_that_have_not_arrived_do_not_ship_after_a_hold_expired(self):
        # Incoming 4 at WH1 was promised to r1 (2, expired at EXPIRES, not swept yet) and to
        # o1 (2); 2 arrived. With r1 expired, the 2 arrived units were free and o2 took them,
        # so every unit on hand (4) is allocated to o0 and o2, and o1's 2 units are still
        # on their way (incoming 2). Shipping o1 now would ship o0's and o2's units.
        history = [
            BASE,
            channel("web", "WH1", backorder_limit=5),
            received("A", "WH1", 2),
            ordered("o0", "web", {"A": (Hold("WH1", 2),)}),
            expected("A", "WH1", 4),
            reserved("r1", "web", {"A": (Hold("WH1", 2, backorder=True),)}),
            ordered("o1", "web", {"A": (Hold("WH1", 2, backorder=True),)}),
            received("A", "WH1", 2, consumed=2),
            ordered("o2", "web", {"A": (Hold("WH1", 2),)}),
        ]
        world = given(*history).world
        figures = available(world, "A", "web", now=EXPIRES).locations[0]
        assert (figures.on_hand, figures.allocated, figures.incoming, figures.backordered) == (
            4,
            4,
            2,
            2,
        )
        given(*history).when(ship("o1", "WH1", L("A", 2)), now=EXPIRES).raises(
            InsufficientStock, lines=[short("A", 2, 0)]
        )

    def test_damaged_units_do_not_ship(self):
        # 6 on hand, 1 of them damaged; 5 allocated to o1; a count then finds only 5 units
        # (the damaged one among them). Only 4 good units are there to ship.
        history = [
            BASE,
            received("A", "WH1", 5),
            adjusted("A", "WH1", 1, damaged=True),
            ordered("o1", "web", {"A": (Hold("WH1", 5),)}),
            (item("A"), ev.StockCounted(sku="A", location="WH1", counted=5, previous=6)),
        ]
        assert_damaged_within_on_hand(given(*history).when(ship("o1", "WH1", L("A", 5))))

    def test_a_shipment_id_is_used_once(self):
        history = decided(order_o1(), ship("o1", "WH1", L("A", 1)))
        given(history).when(ship("o1", "WH1", L("A", 1))).raises(
            AlreadyExists, resource="shipment", id="s1"
        )

    def test_unknown_location(self):
        given(order_o1()).when(ship("o1", "XX", L("A", 1))).raises(
            UnknownLocation, field="location", code="XX"
        )

    def test_unknown_order(self):
        given(BASE).when(ship("o9", "WH1", L("A", 1))).raises(NotFound, resource="order", id="o9")

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((L("C", 1),), "lines[0].sku"),
            ((L("A", 1), L("A", 1)), "lines[1].sku"),
            ((L("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(order_o1()).when(ship("o1", "WH1", *lines)).raises(InvalidCommand, field=field)


def shipped_o1():
    """o1 of order_o1 with 3 A shipped from WH1 (s1) and 1 B shipped from WH1 (s2)."""
    return decided(order_o1(), ship("o1", "WH1", L("A", 3)), ship("o1", "WH1", L("B", 1), sid="s2"))


RL = cmd.ReturnLine


class TestReturnOrder:
    def test_a_restocked_return_raises_on_hand(self):
        world = (
            given(shipped_o1())
            .when(ret("o1", "ST1", RL("A", 2)))
            .then(
                (
                    item("A"),
                    ev.StockReturned(
                        sku="A",
                        order_id="o1",
                        return_id="ret1",
                        location="ST1",
                        quantity=2,
                        disposition="restock",
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderReturned(
                        order_id="o1",
                        return_id="ret1",
                        location="ST1",
                        lines=(ev.ReturnLine("A", 2, "restock"),),
                    ),
                ),
            )
        )
        assert world.item("A").at("ST1") == LocationStock(on_hand=6, allocated=2)
        assert world.order("o1").line("A").returned == 2
        assert world.order("o1").returns == ("ret1",)

    def test_a_damaged_return_raises_on_hand_and_damaged(self):
        world = (
            given(shipped_o1())
            .when(ret("o1", "WH1", RL("A", 1, "damaged")))
            .then(
                (
                    item("A"),
                    ev.StockReturned(
                        sku="A",
                        order_id="o1",
                        return_id="ret1",
                        location="WH1",
                        quantity=1,
                        disposition="damaged",
                    ),
                ),
                (
                    order("o1"),
                    ev.OrderReturned(
                        order_id="o1",
                        return_id="ret1",
                        location="WH1",
                        lines=(ev.ReturnLine("A", 1, "damaged"),),
                    ),
                ),
            )
        )
        assert world.item("A").at("WH1") == LocationStock(on_hand=1, damaged=1)
        assert available(world, "A", "web").locations[0].sellable == 0

    def test_rejects_a_bad_disposition(self):
        given(shipped_o1()).when(ret("o1", "WH1", RL("B", 1), RL("A", 1, "lost"))).raises(
            InvalidCommand, field="lines[1].disposition"
        )

    def test_cannot_return_more_than_was_shipped(self):
        given(shipped_o1()).when(ret("o1", "WH1", RL("A", 4), RL("B", 1))).raises(
            InsufficientStock, lines=[short("A", 4, 3)]
        )

    def test_cannot_return_units_already_returned(self):
        history = decided(shipped_o1(), ret("o1", "WH1", RL("A", 2)))
        given(history).when(ret("o1", "WH1", RL("A", 2), rid="ret2")).raises(
            InsufficientStock, lines=[short("A", 2, 1)]
        )

    def test_cannot_return_what_never_shipped(self):
        given(order_o1()).when(ret("o1", "WH1", RL("A", 1))).raises(
            InsufficientStock, lines=[short("A", 1, 0)]
        )

    def test_a_return_id_is_used_once(self):
        history = decided(shipped_o1(), ret("o1", "WH1", RL("A", 1)))
        given(history).when(ret("o1", "WH1", RL("A", 1))).raises(
            AlreadyExists, resource="return", id="ret1"
        )

    def test_unknown_location(self):
        given(shipped_o1()).when(ret("o1", "XX", RL("A", 1))).raises(
            UnknownLocation, field="location", code="XX"
        )

    def test_unknown_order(self):
        given(BASE).when(ret("o9", "WH1", RL("A", 1))).raises(NotFound, resource="order", id="o9")

    @pytest.mark.parametrize(
        ("lines", "field"),
        [
            ((), "lines"),
            ((RL("C", 1),), "lines[0].sku"),
            ((RL("A", 1), RL("A", 1)), "lines[1].sku"),
            ((RL("A", 0),), "lines[0].quantity"),
        ],
    )
    def test_rejects_bad_lines(self, lines, field):
        given(shipped_o1()).when(ret("o1", "WH1", *lines)).raises(InvalidCommand, field=field)


# === anything else =======================================================================


class Unheard(cmd.Command, frozen=True):
    pass


def test_an_unknown_command_is_invalid():
    given(BASE).when(Unheard()).raises(InvalidCommand, field="type")


# === order status ========================================================================


def status_after(*history) -> str:
    world = given(decided(*history)).world
    return world.order("o1").status


class TestOrderStatus:
    def test_accepted_until_fully_allocated(self):
        state = OrderState(
            order_id="o1", channel="web", lines=(OrderLineState(sku="A", quantity=2, allocated=1),)
        )
        assert state.status == "accepted"

    def test_lifecycle_through_shipping(self):
        steps = [order_o1()]
        assert status_after(*steps) == "allocated"
        steps.append(ship("o1", "WH1", L("A", 3)))
        assert status_after(*steps) == "partially_shipped"
        steps.append(ship("o1", "ST1", L("A", 2), sid="s2"))
        assert status_after(*steps) == "partially_shipped"
        steps.append(ship("o1", "WH1", L("B", 1), sid="s3"))
        assert status_after(*steps) == "shipped"
        steps.append(ret("o1", "WH1", RL("A", 5)))
        assert status_after(*steps) == "partially_returned"
        steps.append(ret("o1", "WH1", RL("B", 1), rid="ret2"))
        assert status_after(*steps) == "returned"

    def test_partly_canceled_then_the_rest_shipped_is_shipped(self):
        steps = [order_o1(), cmd.CancelOrder(order_id="o1", lines=(L("A", 2),))]
        assert status_after(*steps) == "allocated"
        steps.append(ship("o1", "WH1", L("A", 3), L("B", 1)))
        assert status_after(*steps) == "shipped"

    def test_partly_shipped_then_the_rest_canceled_is_shipped(self):
        steps = [order_o1(), ship("o1", "WH1", L("A", 1)), cmd.CancelOrder(order_id="o1")]
        assert status_after(*steps) == "shipped"

    def test_canceled(self):
        assert status_after(order_o1(), cmd.CancelOrder(order_id="o1")) == "canceled"

    def test_return_states_win_over_shipping_states(self):
        partly_shipped = [order_o1(), ship("o1", "WH1", L("A", 3))]
        assert status_after(*partly_shipped, ret("o1", "WH1", RL("A", 1))) == "partially_returned"
        # every shipped unit came back, though some were never shipped
        assert status_after(*partly_shipped, ret("o1", "WH1", RL("A", 3))) == "returned"

    def test_returned_means_every_shipped_unit_came_back(self):
        steps = [order_o1(), ship("o1", "WH1", L("A", 3), L("B", 1))]
        assert status_after(*steps, ret("o1", "WH1", RL("A", 3))) == "partially_returned"
        assert status_after(*steps, ret("o1", "WH1", RL("A", 3), RL("B", 1))) == "returned"
