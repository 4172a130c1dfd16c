"""`ReconcileStock` -> `StockReconciled`, and the as-of comparison (issue 13 §1-§3), given /
when / then on the pure decider and `atp.reconcile.compare`."""

from __future__ import annotations

import msgspec
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

from atp import commands as cmd
from atp import events as ev
from atp.errors import InvalidCommand, UnknownLocation
from atp.events import Uncovered
from atp.reconcile import beyond, compare, concerns
from atp.state import ItemState, evolve_item
from tests.unit.scenario import (
    NOW,
    available,
    channel,
    decided,
    given,
    item,
    later,
    location,
    order,
    received,
)

BASE = [location("WH1"), channel("web", "WH1")]
AS_OF = later(-600)


def reconcile(*lines: tuple[str, int], rid: str = "r1") -> cmd.ReconcileStock:
    drift = tuple(cmd.DriftLine(sku, d) for sku, d in lines)
    return cmd.ReconcileStock(location="WH1", reconciliation_id=rid, as_of=AS_OF, lines=drift)


def reconciled(sku: str, drift: int, rid: str = "r1") -> ev.StockReconciled:
    return ev.StockReconciled(
        sku=sku, location="WH1", drift=drift, as_of=AS_OF, reconciliation_id=rid
    )


class TestStockReconciled:
    def test_moves_on_hand_by_the_drift(self):
        """Given 5 on hand, when a drift of +3 is applied, then on-hand is 8 (not the
        snapshot's figure: what moved since survives)."""
        world = (
            given(BASE, received("A", "WH1", 5))
            .when(reconcile(("A", 3)))
            .then((item("A"), reconciled("A", 3)))
        )
        assert world.item("A").at("WH1").on_hand == 8

    def test_units_found_fill_the_oldest_shortfall_first(self):
        """Given an order owed 2 units (shortfall), when a drift of +5 is found, then 2 fill
        the order and 3 become sellable."""
        history = decided(
            *BASE,
            received("A", "WH1", 1),
            cmd.AcceptOrder(order_id="o1", channel="web", lines=(cmd.Line("A", 3),)),
        )
        world = (
            given(history)
            .when(reconcile(("A", 5)))
            .then(
                (item("A"), reconciled("A", 5)),
                (item("A"), ev.ShortfallFilled(sku="A", order_id="o1", location="WH1", quantity=2)),
                (
                    order("o1"),
                    ev.OrderShortfallFilled(order_id="o1", sku="A", location="WH1", quantity=2),
                ),
            )
        )
        assert world.item("A").shortfalls == {}
        assert available(world, "A", "web").available == 3

    def test_units_lost_below_the_allocations_record_an_over_promise(self):
        """Given 10 on hand and 6 allocated, when a drift of -6 is applied, then on-hand is
        4 and the over-promise of 2 is recorded with the order named; nothing is for sale."""
        history = decided(
            *BASE,
            received("A", "WH1", 10),
            cmd.PlaceOrder(order_id="o1", channel="web", lines=(cmd.Line("A", 6),)),
        )
        uncovered = (Uncovered(kind="order", id="o1", quantity=2),)
        world = (
            given(history)
            .when(reconcile(("A", -6)))
            .then(
                (item("A"), reconciled("A", -6)),
                (
                    item("A"),
                    ev.OverPromised(sku="A", location="WH1", quantity=2, uncovered=uncovered),
                ),
            )
        )
        assert available(world, "A", "web").available == 0

    def test_never_takes_on_hand_below_zero(self):
        """Given 2 on hand, when a drift of -5 arrives (units shipped since the snapshot),
        then on-hand goes to 0, never below."""
        world = (
            given(BASE, received("A", "WH1", 2))
            .when(reconcile(("A", -5)))
            .then((item("A"), msgspec.structs.replace(reconciled("A", -2), drift_found=-5)))
        )
        assert world.item("A").at("WH1").on_hand == 0

    def test_a_correction_stopped_at_zero_still_fixes_the_figure_as_of_then(self):
        """Given 10 on hand as of a count, 8 written off after it, and the count's drift of
        -10 applied as -2 (on-hand stops at 0), when the same count (0) is compared again,
        then there is no drift: as of then the figure is the count's, and today's on-hand
        (0) is that figure plus what moved since."""
        stopped = msgspec.structs.replace(reconciled("A", -2), drift_found=-10)
        written_off = ev.StockAdjusted(sku="A", location="WH1", delta=-8, reason="x")
        line = compare(state(receipt(10)), [written_off, stopped], "WH1", AS_OF, 0)
        assert (line.ledger_on_hand, line.drift, line.movements_after_as_of) == (0, 0, 0)

    def test_refuses_an_unknown_location_a_duplicate_and_a_zero_drift(self):
        unknown = cmd.ReconcileStock(location="XX", reconciliation_id="r", as_of=AS_OF, lines=())
        given(BASE).when(unknown).raises(UnknownLocation, field="location")
        given(BASE).when(reconcile(("A", 1), ("A", 2))).raises(InvalidCommand, field="lines[1].sku")
        given(BASE).when(reconcile(("A", 0))).raises(InvalidCommand, field="lines[0].drift")


def state(*events: ev.ItemEvent) -> ItemState:
    current = ItemState(sku="A")
    for event in events:
        current = evolve_item(current, event)
    return current


def receipt(quantity: int) -> ev.StockReceived:
    return ev.StockReceived(
        sku="A", location="WH1", quantity=quantity, reference=None, incoming_consumed=0
    )


class TestCompare:
    def test_movements_after_as_of_are_not_drift(self):
        """Given 10 on hand as of the export and +3, -1 after it, when the snapshot says 10,
        then the drift is 0 and the movements after it are +2."""
        later_events = [
            receipt(3),
            ev.StockAdjusted(sku="A", location="WH1", delta=-1, reason="x"),
        ]
        line = compare(state(receipt(10)), later_events, "WH1", AS_OF, 10)
        assert (line.ledger_on_hand, line.drift, line.movements_after_as_of) == (10, 0, 2)

    def test_a_later_correction_of_an_earlier_snapshot_counts_as_of_then(self):
        """A correction applied after the export for a snapshot taken before it counts in
        the figure as of the export (the same drift is never applied twice); one for a later
        snapshot is a movement after it."""
        earlier = reconciled("A", 4)
        newer = ev.StockReconciled(
            sku="A", location="WH1", drift=1, as_of=NOW, reconciliation_id="r2"
        )
        line = compare(state(receipt(10)), [earlier, newer], "WH1", AS_OF, 14)
        assert (line.ledger_on_hand, line.drift, line.movements_after_as_of) == (14, 0, 1)
        assert line.superseded

    def test_a_snapshot_older_than_an_applied_correction_is_superseded(self):
        """Given 10 on hand as of an old export and a correction of +5 applied for a later
        snapshot, when the old export (15) is compared, then its drift of +5 is reported but
        superseded, so it is never beyond any tolerance (never applied again); a correction
        at another location supersedes nothing here."""
        newer = ev.StockReconciled(
            sku="A", location="WH1", drift=5, as_of=NOW, reconciliation_id="r2"
        )
        line = compare(state(receipt(10)), [newer], "WH1", AS_OF, 15)
        assert (line.drift, line.superseded, beyond(line, 0)) == (5, True, False)
        elsewhere = ev.StockReconciled(
            sku="A", location="WH2", drift=5, as_of=NOW, reconciliation_id="r3"
        )
        line = compare(state(receipt(10)), [elsewhere], "WH1", AS_OF, 15)
        assert (line.drift, line.superseded, beyond(line, 0)) == (5, False, True)

    def test_tolerance(self):
        line = compare(state(receipt(10)), [], "WH1", AS_OF, 12)
        assert (beyond(line, 1), beyond(line, 2)) == (True, False)

    @hypothesis_given(
        st.lists(st.integers(1, 20), max_size=6),
        st.lists(st.integers(-5, 20), max_size=6),
        st.integers(0, 60),
    )
    def test_drift_is_the_snapshot_minus_the_figure_as_of(self, before, after, snapshot):
        """Whatever moved before and after `as_of`: the ledger figure is the on-hand folded
        up to `as_of`, the drift is the snapshot minus it, and applying the drift to today's
        on-hand gives the snapshot plus what moved after."""
        at = state(*(receipt(q) for q in before))
        moves = [ev.StockAdjusted(sku="A", location="WH1", delta=d, reason="x") for d in after if d]
        line = compare(at, moves, "WH1", AS_OF, snapshot)
        assert line.ledger_on_hand == sum(before)
        assert line.drift == snapshot - sum(before)
        today = sum(before) + sum(after)
        assert today + line.drift == snapshot + line.movements_after_as_of


class TestConcerns:
    def test_a_lines_history_keeps_the_locations_own_story(self):
        """Given events at WH1, at WH2 and a shortfall naming no location, then the ones
        naming WH1 or no location concern WH1, the one naming only WH2 does not."""
        at_wh2 = ev.StockAdjusted(sku="A", location="WH2", delta=1, reason="x")
        shortfall = ev.ShortfallRecorded(sku="A", order_id="o1", quantity=2)
        assert concerns(receipt(3), "WH1") and not concerns(at_wh2, "WH1")
        assert concerns(shortfall, "WH1") and concerns(at_wh2, "WH2")
