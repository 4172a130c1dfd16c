"""The one ATS function (atp/ats.py) on hand-built states (contract: "Availability")."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from atp.ats import (
    all_location_figures,
    channel_availability,
    location_figures,
    plan_holds,
    safety_stock_for,
    status_for,
)
from atp.errors import ShortLine
from atp.events import Hold
from atp.state import (
    GLOBAL,
    Channel,
    Holds,
    ItemHold,
    ItemState,
    Location,
    LocationStock,
    Policies,
)
from tests.unit.scenario import EXPIRES, NOW

POLICIES = Policies(
    locations={
        "WH1": Location("WH1", "Warehouse", "warehouse", True),
        "ST1": Location("ST1", "Store", "store", True),
        "OFF": Location("OFF", "Closed", "store", False),
    }
)
WEB = Channel(
    code="web",
    locations=("WH1", "ST1"),
    buffer=0,
    share_percent=100,
    backorder_limit=0,
    low_stock_threshold=5,
)


def channel(**changes: object) -> Channel:
    return msgspec.structs.replace(WEB, **changes)


def item(holds: dict[str, ItemHold] | None = None, **stock: LocationStock) -> ItemState:
    holds = holds or {}
    next_expiry = min((h.expires_at for h in holds.values()), default=None)
    return ItemState(sku="A", locations=stock, holds=Holds(holds), next_expiry=next_expiry)


def avail(state: ItemState, chan: Channel = WEB, policies: Policies = POLICIES, now=NOW):
    return channel_availability(state, policies, chan, now)


class TestStatus:
    @pytest.mark.parametrize(
        ("on_hand", "incoming", "limit", "threshold", "status"),
        [
            (0, 0, 0, 5, "out_of_stock"),
            (0, 9, 0, 5, "out_of_stock"),  # incoming without backorders sells nothing
            (1, 0, 0, 5, "low_stock"),
            (5, 0, 0, 5, "low_stock"),  # <= threshold
            (6, 0, 0, 5, "in_stock"),
            (1, 0, 0, 0, "in_stock"),
            (0, 4, 2, 5, "backorder"),  # only incoming covers it
            (0, 40, 20, 5, "backorder"),  # however much incoming there is
            (1, 4, 2, 5, "low_stock"),
            (4, 4, 2, 5, "in_stock"),  # 4 + 2 > 5
        ],
    )
    def test_status(self, on_hand, incoming, limit, threshold, status):
        state = item(WH1=LocationStock(on_hand=on_hand, incoming=incoming))
        result = avail(state, channel(backorder_limit=limit, low_stock_threshold=threshold))
        assert result.status == status

    @pytest.mark.parametrize(
        ("available", "on_hand_available", "threshold", "status"),
        [
            (0, 0, 5, "out_of_stock"),
            (-1, 0, 5, "out_of_stock"),
            (3, 0, 5, "backorder"),
            (3, 3, 5, "low_stock"),
            (5, 5, 5, "low_stock"),
            (6, 6, 5, "in_stock"),
            (6, 1, 5, "in_stock"),
        ],
    )
    def test_status_for(self, available, on_hand_available, threshold, status):
        assert status_for(available, on_hand_available, threshold) == status

    def test_unknown_sku_is_out_of_stock_with_zeros(self):
        result = avail(ItemState(sku="Z"))
        assert (result.available, result.status, result.pool) == (0, "out_of_stock", 0)


class TestDerivation:
    def test_fields_explain_the_figure(self):
        state = item(
            WH1=LocationStock(on_hand=10, allocated=1, held=2, damaged=1, incoming=3),
            ST1=LocationStock(on_hand=4, in_transit=5, incoming=6, backordered=2),
        )
        chan = channel(share_percent=50, buffer=1, backorder_limit=4, low_stock_threshold=2)
        result = avail(state, chan)
        wh1, st1 = result.locations
        assert wh1 == wh1.__class__(
            location="WH1",
            on_hand=10,
            allocated=1,
            held=2,
            damaged=1,
            in_transit=0,
            incoming=3,
            backordered=0,
            safety_stock=0,
            sellable=6,
            unpromised_incoming=3,
            active=True,
        )
        assert (st1.sellable, st1.in_transit, st1.unpromised_incoming) == (4, 5, 4)
        assert result.pool == 10
        assert result.on_hand_available == 4  # floor(10 * 50%) - 1
        # min(limit 4 less the 2 already promised against incoming, unpromised 3 + 4)
        assert result.backorder_available == 2
        assert result.available == 6
        assert result.status == "in_stock"
        assert (result.share_percent, result.buffer, result.backorder_limit) == (50, 1, 4)
        assert result.low_stock_threshold == 2
        assert result.channel == "web"

    def test_locations_follow_the_sourcing_order(self):
        result = avail(item(), channel(locations=("ST1", "OFF", "WH1")))
        assert [f.location for f in result.locations] == ["ST1", "OFF", "WH1"]

    @pytest.mark.parametrize(
        ("pool", "share", "buffer", "expected"),
        [
            (10, 33, 0, 3),
            (7, 50, 0, 3),
            (10, 33, 1, 2),
            (3, 100, 5, 0),
            (10, 0, 0, 0),
            (1, 99, 0, 0),
        ],
    )
    def test_share_percent_floors_then_the_buffer_applies(self, pool, share, buffer, expected):
        result = avail(
            item(WH1=LocationStock(on_hand=pool)), channel(share_percent=share, buffer=buffer)
        )
        assert result.on_hand_available == expected
        assert result.available == expected

    def test_backorder_available_is_capped_by_unpromised_incoming(self):
        state = item(WH1=LocationStock(incoming=3, backordered=2))
        assert avail(state, channel(backorder_limit=10)).backorder_available == 1
        assert avail(state, channel(backorder_limit=0)).backorder_available == 0


class TestSellable:
    def test_subtracts_allocated_held_damaged_and_safety_stock(self):
        state = item(WH1=LocationStock(on_hand=10, allocated=2, held=3, damaged=1))
        policies = msgspec.structs.replace(POLICIES, safety_stock={GLOBAL: 1})
        assert location_figures(state, policies, "WH1", NOW).sellable == 3

    @pytest.mark.parametrize(
        "stock",
        [
            LocationStock(on_hand=1, allocated=3),
            LocationStock(on_hand=2, held=5),
            LocationStock(on_hand=2, damaged=2, allocated=1),
            LocationStock(on_hand=0, backordered=4),
        ],
    )
    def test_never_negative_and_never_eats_another_locations_stock(self, stock):
        state = item(WH1=stock, ST1=LocationStock(on_hand=4))
        result = avail(state)
        assert result.locations[0].sellable == 0
        assert result.pool == 4
        assert result.available == 4

    def test_safety_stock_above_on_hand_gives_zero(self):
        state = item(WH1=LocationStock(on_hand=2))
        policies = msgspec.structs.replace(POLICIES, safety_stock={"WH1": 5})
        assert location_figures(state, policies, "WH1", NOW).sellable == 0

    def test_in_transit_and_incoming_are_not_on_hand(self):
        state = item(WH1=LocationStock(in_transit=5, incoming=5))
        assert location_figures(state, POLICIES, "WH1", NOW).sellable == 0

    def test_an_inactive_location_adds_nothing(self):
        state = item(OFF=LocationStock(on_hand=9, incoming=9), WH1=LocationStock(on_hand=1))
        chan = channel(locations=("OFF", "WH1"), backorder_limit=5)
        result = avail(state, chan)
        off = result.locations[0]
        assert (off.on_hand, off.sellable, off.unpromised_incoming, off.active) == (9, 0, 0, False)
        assert result.available == 1

    def test_an_undefined_location_counts_as_inactive(self):
        f = location_figures(item(XX=LocationStock(on_hand=3)), POLICIES, "XX", NOW)
        assert (f.on_hand, f.sellable, f.active) == (3, 0, False)

    def test_backorder_promises_that_incoming_no_longer_covers_fall_on_on_hand(self):
        # 3 units were promised out of incoming; 2 of the 3 arrived (incoming left: 1).
        state = item(WH1=LocationStock(on_hand=5, incoming=1, backordered=3))
        f = location_figures(state, POLICIES, "WH1", NOW)
        assert (f.sellable, f.unpromised_incoming) == (3, 0)


class TestExpiredHolds:
    def hold(self, *holds: Hold, expires_at=EXPIRES) -> dict[str, ItemHold]:
        return {"r1": ItemHold("r1", "web", holds, expires_at)}

    def test_an_expired_hold_stops_counting_at_expires_at(self):
        state = item(
            self.hold(Hold("WH1", 2), Hold("WH1", 1, backorder=True)),
            WH1=LocationStock(on_hand=5, held=2, incoming=4, backordered=1),
        )
        before = location_figures(state, POLICIES, "WH1", EXPIRES - timedelta(microseconds=1))
        assert (before.held, before.backordered, before.sellable, before.unpromised_incoming) == (
            2,
            1,
            3,
            3,
        )
        at = location_figures(state, POLICIES, "WH1", EXPIRES)
        assert (at.held, at.backordered, at.sellable, at.unpromised_incoming) == (0, 0, 5, 4)

    def test_only_the_expired_reservation_stops_counting(self):
        holds = {
            **self.hold(Hold("WH1", 2)),
            "r2": ItemHold("r2", "web", (Hold("WH1", 1), Hold("ST1", 1)), EXPIRES + timedelta(1)),
        }
        state = item(
            holds, WH1=LocationStock(on_hand=5, held=3), ST1=LocationStock(on_hand=1, held=1)
        )
        result = avail(state, now=EXPIRES)
        assert [f.held for f in result.locations] == [1, 1]
        assert result.available == 4


class TestSafetyStockFor:
    @pytest.mark.parametrize(
        ("sku_rules", "location_rules", "expected"),
        [
            ({}, {}, 0),
            ({}, {GLOBAL: 1}, 1),
            ({}, {GLOBAL: 1, "WH1": 2}, 2),
            ({GLOBAL: 3}, {GLOBAL: 1, "WH1": 2}, 3),
            ({GLOBAL: 3, "WH1": 4}, {GLOBAL: 1, "WH1": 2}, 4),
            ({"WH1": 4}, {}, 4),
            ({"ST1": 4}, {GLOBAL: 1}, 1),
            ({}, {"ST1": 2}, 0),
        ],
    )
    def test_most_specific_rule_wins(self, sku_rules, location_rules, expected):
        state = ItemState(sku="A", safety_stock=sku_rules)
        policies = msgspec.structs.replace(POLICIES, safety_stock=location_rules)
        assert safety_stock_for(state, policies, "WH1") == expected


class TestAllLocationFigures:
    def test_every_defined_location_and_every_location_with_stock(self):
        state = item(XX=LocationStock(on_hand=1), WH1=LocationStock(on_hand=2))
        codes = [f.location for f in all_location_figures(state, POLICIES, NOW)]
        assert codes == ["WH1", "ST1", "OFF", "XX"]


class TestPlanHolds:
    def test_short_line_names_what_the_channel_can_give(self):
        state = item(WH1=LocationStock(on_hand=3))
        short = plan_holds(state, POLICIES, WEB, 4, NOW)
        assert isinstance(short, ShortLine)
        assert short.as_dict() == {"sku": "A", "requested": 4, "available": 3}

    def test_splits_in_sourcing_order_then_backorders(self):
        state = item(
            WH1=LocationStock(on_hand=2, incoming=1), ST1=LocationStock(on_hand=1, incoming=5)
        )
        plan = plan_holds(state, POLICIES, channel(backorder_limit=3), 6, NOW)
        assert plan == (
            Hold("WH1", 2),
            Hold("ST1", 1),
            Hold("WH1", 1, backorder=True),
            Hold("ST1", 2, backorder=True),
        )

    def test_share_percent_limits_the_on_hand_part(self):
        state = item(WH1=LocationStock(on_hand=4), ST1=LocationStock(on_hand=4, incoming=2))
        chan = channel(share_percent=50, backorder_limit=2)
        # on-hand part: floor(8 * 50%) = 4, all from WH1; the rest out of ST1's incoming
        plan = plan_holds(state, POLICIES, chan, 6, NOW)
        assert plan == (Hold("WH1", 4), Hold("ST1", 2, backorder=True))
