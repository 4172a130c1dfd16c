"""Random command histories against the whole ledger in memory, with a moving clock.

After every step: counters are never negative; stock is never promised twice (see
`check_claims_fit_on_hand` and `check_decision_respects_availability`); availability is never
negative; item counters agree with the holds and allocations they sum; an order's open
units are exactly its allocations plus its unfilled shortfall (so allocations never exceed
what orders demand); in-transit units and referenced incoming supply agree with their
documents; a rejected command changes nothing; and folding the recorded events from scratch
gives the same states.

The first test mixes every command; the second stays on one SKU at one location where
backorder promises, arrivals, expiries, claims and shipments interleave closely.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from atp import commands as cmd
from atp import events as ev
from atp.ats import channel_availability, location_figures
from atp.decide import Decision, Stream, decide
from atp.errors import DomainError
from atp.state import ItemState, OrderState, ReservationState, TransferState, state_enc_hook
from atp.world import StateSet, fold, initial_state
from tests.unit.scenario import NOW, decided

SKUS = ("A", "B", "C")
LOCATIONS = ("WH1", "ST1", "DS1")
CHANNELS = ("web", "pos", "pre")

SETUP = decided(
    cmd.DefineLocation(code="WH1", name="Warehouse", kind="warehouse"),
    cmd.DefineLocation(code="ST1", name="Store", kind="store"),
    cmd.DefineLocation(code="DS1", name="Dropship", kind="dropship"),
    cmd.DefineChannel(code="web", locations=("WH1", "ST1", "DS1"), backorder_limit=3),
    cmd.DefineChannel(code="pos", locations=("DS1", "ST1"), share_percent=50, buffer=1),
    cmd.DefineChannel(code="pre", locations=("DS1",), backorder_limit=5),
    cmd.DefineChannel(code="drop", locations=("DS1",)),
    cmd.ReceiveStock(location="WH1", lines=tuple(cmd.Line(s, 8) for s in SKUS)),
    cmd.ReceiveStock(location="ST1", lines=tuple(cmd.Line(s, 6) for s in SKUS)),
    cmd.ExpectIncoming(location="WH1", lines=(cmd.Line("A", 4),)),
    cmd.ExpectIncoming(location="DS1", lines=tuple(cmd.Line(s, 3) for s in SKUS)),
)

# --- strategies ----------------------------------------------------------------------------

sku = st.sampled_from(SKUS)
# Mostly known locations; now and then an unknown one (a rejection).
loc = st.sampled_from((*LOCATIONS, *LOCATIONS, *LOCATIONS, "XX"))
known_loc = st.sampled_from(LOCATIONS)
chan = st.sampled_from((*CHANNELS, *CHANNELS, *CHANNELS, "nope"))
quantity = st.sampled_from((0, *[1] * 6, *[2] * 4, 3, 3, 4, 5))  # 0 now and then: a rejection
# Few ids, so that commands often meet the reservation, order or transfer they name.
rid = st.sampled_from(("r0", "r1", "r2"))
oid = st.sampled_from(("o0", "o1", "o2"))
tid = st.sampled_from(("t0", "t1"))
sid = st.sampled_from(("s0", "s1", "s2", "s3"))
ret_id = st.sampled_from(("x0", "x1", "x2"))
po = st.sampled_from(("PO-1", "PO-2"))
ttl = st.integers(1, 900)


def lines_of(line: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[tuple]:
    return st.lists(line, min_size=1, max_size=max_size, unique_by=lambda x: x.sku).map(tuple)


lines = lines_of(st.builds(cmd.Line, sku, quantity))
channel_locations = st.permutations(LOCATIONS).flatmap(
    lambda p: st.integers(1, len(p)).map(lambda n: tuple(p[:n]))
)


def step_mix(*weighted: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One step, each kind drawn with the given weight."""
    return st.sampled_from([s for weight, s in weighted for _ in range(weight)]).flatmap(
        lambda s: s
    )


STEP = step_mix(
    # stock movements
    (3, st.builds(cmd.ReceiveStock, location=loc, lines=lines)),
    (
        2,
        st.builds(
            cmd.AdjustStock,
            location=loc,
            sku=sku,
            delta=st.integers(-4, 4),
            reason=st.just("x"),
            damaged=st.booleans(),
        ),
    ),
    (
        1,
        st.builds(
            cmd.CountStock,
            location=loc,
            lines=lines_of(st.builds(cmd.CountLine, sku, st.integers(0, 8)), 2),
        ),
    ),
    (2, st.builds(cmd.ExpectIncoming, location=loc, lines=lines)),
    # purchase orders: revisions replace a reference's lines (0 cancels), receipts consume
    (2, st.builds(cmd.ExpectIncoming, location=loc, lines=lines, reference=po)),
    (2, st.builds(cmd.ReceiveStock, location=loc, lines=lines, reference=po)),
    (
        2,
        st.builds(
            cmd.ShipTransfer, transfer_id=tid, from_location=loc, to_location=loc, lines=lines
        ),
    ),
    (2, st.builds(cmd.ReceiveTransfer, transfer_id=tid)),
    (2, st.builds(cmd.ReceiveTransfer, transfer_id=tid, lines=lines)),
    (1, st.builds(cmd.CloseTransfer, transfer_id=tid, reason=st.sampled_from(("lost", " ")))),
    (1, st.builds(cmd.CancelTransfer, transfer_id=tid)),
    # reservations
    (
        6,
        st.builds(cmd.ReserveStock, reservation_id=rid, channel=chan, lines=lines, ttl_seconds=ttl),
    ),
    (2, st.builds(cmd.ExtendReservation, reservation_id=rid, ttl_seconds=ttl)),
    (2, st.builds(cmd.ReleaseReservation, reservation_id=rid)),
    (2, st.builds(cmd.ExpireReservation, reservation_id=rid)),
    (4, st.builds(cmd.CommitReservation, reservation_id=rid, order_id=oid)),
    # orders
    (5, st.builds(cmd.PlaceOrder, order_id=oid, channel=chan, lines=lines)),
    # sales a channel already made (webhooks): never refused, short units owed
    (3, st.builds(cmd.AcceptOrder, order_id=oid, channel=chan, lines=lines)),
    (2, st.builds(cmd.CancelOrder, order_id=oid, lines=st.none() | lines)),
    (1, st.builds(cmd.ShipOrder, order_id=oid, shipment_id=sid, location=loc, lines=lines)),
    (
        1,
        st.builds(
            cmd.ReturnOrder,
            order_id=oid,
            return_id=ret_id,
            location=loc,
            lines=lines_of(
                st.builds(
                    cmd.ReturnLine, sku, quantity, st.sampled_from(("restock", "damaged", "x"))
                )
            ),
        ),
    ),
    # Expected supply arriving, in part or in full (backorders become shippable).
    (3, st.tuples(st.just("arrive"), sku, known_loc, st.integers(1, 4))),
    # Random shipments and returns rarely fit an order: these ship and return what it has.
    (5, st.tuples(st.just("ship"), oid, sid, st.integers(1, 5))),
    # ...or from another location than the allocation's (a split shipment re-sources)
    (2, st.tuples(st.just("ship_from"), oid, sid, known_loc, st.integers(1, 5))),
    (
        3,
        st.tuples(
            st.just("return"), oid, ret_id, known_loc, st.sampled_from(("restock", "damaged"))
        ),
    ),
    # policies
    (
        1,
        st.builds(
            cmd.DefineLocation,
            code=known_loc,
            name=st.just("n"),
            kind=st.sampled_from(("warehouse", "store", "dropship", "depot")),
            active=st.booleans(),
        ),
    ),
    (
        1,
        st.builds(
            cmd.DefineChannel,
            code=chan,
            locations=channel_locations,
            buffer=st.integers(0, 2),
            share_percent=st.sampled_from((0, 50, 67, 100, 100)),
            backorder_limit=st.integers(0, 3),
            low_stock_threshold=st.integers(0, 3),
        ),
    ),
    (
        1,
        st.builds(
            cmd.SetSafetyStock,
            sku=st.none() | sku,
            location=st.none() | loc,
            quantity=st.integers(0, 2),
        ),
    ),
    # the clock (reservations live 1..900 s) and the sweeper
    (3, st.tuples(st.just("advance"), st.integers(1, 1200))),
    (1, st.just(("sweep",))),
)
STEPS = st.lists(STEP, min_size=20, max_size=60)

# One SKU at the dropship location, where "pre" sells only expected supply (backorders) and
# "drop" sells arrived units: promises, arrivals, expiries and shipments interleave.
pre_lines = st.tuples(st.builds(cmd.Line, st.just("A"), st.integers(1, 3)))
more_oids = st.sampled_from(tuple(f"o{i}" for i in range(6)))
more_rids = st.sampled_from(tuple(f"r{i}" for i in range(4)))
BACKORDER_STEP = step_mix(
    (
        4,
        st.builds(
            cmd.ReserveStock,
            reservation_id=more_rids,
            channel=st.sampled_from(("pre", "drop")),
            lines=pre_lines,
            ttl_seconds=st.integers(1, 60),
        ),
    ),
    (
        3,
        st.builds(
            cmd.PlaceOrder,
            order_id=more_oids,
            channel=st.sampled_from(("pre", "drop")),
            lines=pre_lines,
        ),
    ),
    (3, st.builds(cmd.CommitReservation, reservation_id=more_rids, order_id=more_oids)),
    (
        2,
        st.builds(
            cmd.AcceptOrder,
            order_id=more_oids,
            channel=st.sampled_from(("pre", "drop")),
            lines=pre_lines,
        ),
    ),
    (1, st.builds(cmd.ReleaseReservation, reservation_id=more_rids)),
    (1, st.builds(cmd.CancelOrder, order_id=more_oids)),
    (1, st.builds(cmd.ExpectIncoming, location=st.just("DS1"), lines=pre_lines)),
    (3, st.tuples(st.just("arrive"), st.just("A"), st.just("DS1"), st.integers(1, 2))),
    (5, st.tuples(st.just("ship"), more_oids, sid, st.integers(1, 3))),
    (2, st.tuples(st.just("claim"), more_oids)),
    (3, st.tuples(st.just("advance"), st.integers(1, 60))),
)
BACKORDER_STEPS = st.lists(BACKORDER_STEP, min_size=10, max_size=40)


DERIVED = (ev.ShortfallFilled, ev.OverPromised, ev.AllocationMoved, ev.TransferLost)
"""Events a fact implies, counted in the statistics so a run shows they were reached."""

# --- the model ---------------------------------------------------------------------------


class Ledger:
    def __init__(self) -> None:
        self.world = StateSet(complete=True)
        self.recorded: list[tuple[Stream, ev.Event]] = []
        self.now = NOW
        # Units that left on-hand without a claim being released: shrinkage found by counts and
        # (non-damaged) negative adjustments. Nothing else may make claims exceed on-hand.
        self.shrinkage: Counter[tuple[str, str]] = Counter()
        for stream, e in SETUP:
            self.apply(stream, e)

    def apply(self, stream: Stream, e: ev.Event) -> None:
        if isinstance(e, ev.StockCounted):
            self.shrinkage[e.sku, e.location] += max(0, e.previous - e.counted)
        if isinstance(e, ev.StockAdjusted) and e.delta < 0 and not e.damaged:
            self.shrinkage[e.sku, e.location] -= e.delta
        # A purchase order revised down leaves promises against it uncovered: a fact.
        if isinstance(e, ev.IncomingExpected) and e.quantity < e.previous:
            self.shrinkage[e.sku, e.location] += e.previous - e.quantity
        self.world.apply(stream, e)
        self.recorded.append((stream, e))

    def step(self, step: Any) -> None:
        if isinstance(step, tuple) and step[0] == "advance":
            self.now += timedelta(seconds=step[1])
            return
        if isinstance(step, tuple) and step[0] == "sweep":
            for kind, key in list(self.world.states):
                if kind == "reservation":
                    self.step(cmd.ExpireReservation(reservation_id=key))
            return
        command = self.command_for(step) if isinstance(step, tuple) else step
        if command is None:
            return
        before = self.snapshot()
        try:
            decision = decide(command, self.world, self.now)
        except DomainError as error:
            event(f"rejected {type(command).__name__}: {error.kind}")
            assert self.snapshot() == before, f"{command} was rejected but changed state"
            return
        event(f"accepted {type(command).__name__}" + ("" if decision else " (no-op)"))
        wanted = self.availability_before(command)
        over = self.over_promised(command)
        owed_on_sale = self.owed_on_sale()
        for stream, e in decision:
            if isinstance(e, DERIVED):
                event(f"recorded {type(e).__name__}")
            self.apply(stream, e)
        self.check_owed_units_are_not_on_sale(command, owed_on_sale)
        self.check_shipment_displaces_only_holds(command, over)
        self.check_decision_respects_availability(command, decision, wanted)

    def command_for(self, step: tuple) -> cmd.Command | None:
        world = self.world
        if step[0] == "claim":  # an order for every unit "drop" can sell
            policies = world.policies()
            drop = policies.channels["drop"]
            a = channel_availability(world.item("A"), policies, drop, self.now)
            if not a.available:
                return None
            line = cmd.Line("A", a.available)
            return cmd.PlaceOrder(order_id=step[1], channel="drop", lines=(line,))
        if step[0] == "arrive":
            _, sku_code, location, most = step
            incoming = world.item(sku_code).at(location).incoming
            if not incoming:
                return None
            line = cmd.Line(sku_code, min(most, incoming))
            return cmd.ReceiveStock(location=location, lines=(line,))
        if step[0] == "ship_from":
            _, order_id, shipment_id, location, most = step
            order = world.order(order_id)
            if order is None:
                return None
            allocated = {
                line.sku: sum(
                    h.quantity for h in world.item(line.sku).allocations.get(order_id, ())
                )
                for line in order.lines
            }
            wanted = [cmd.Line(sku, min(most, q)) for sku, q in allocated.items() if q]
            if not wanted:
                return None
            return cmd.ShipOrder(
                order_id=order_id, shipment_id=shipment_id, location=location, lines=tuple(wanted)
            )
        if step[0] == "ship":
            _, order_id, shipment_id, most = step
            order = world.order(order_id)
            if order is None:
                return None
            by_location: dict[str, list[cmd.Line]] = {}
            for line in order.lines:
                for h in world.item(line.sku).allocations.get(order_id, ()):
                    by_location.setdefault(h.location, []).append(
                        cmd.Line(line.sku, min(most, h.quantity))
                    )
            for location, wanted in by_location.items():
                merged = {line.sku: line for line in wanted}  # one line per SKU
                return cmd.ShipOrder(
                    order_id=order_id,
                    shipment_id=shipment_id,
                    location=location,
                    lines=tuple(merged.values()),
                )
            return None
        _, order_id, return_id, location, disposition = step
        order = world.order(order_id)
        if order is None:
            return None
        back = [
            cmd.ReturnLine(line.sku, line.shipped - line.returned, disposition)
            for line in order.lines
            if line.shipped > line.returned
        ]
        if not back:
            return None
        return cmd.ReturnOrder(
            order_id=order_id, return_id=return_id, location=location, lines=tuple(back)
        )

    # --- what the invariants read ------------------------------------------------------

    def snapshot(self) -> dict[Stream, bytes]:
        """States by stream, encoded (so an in-place change would show), empty ones left out."""
        return {
            stream: msgspec.msgpack.encode(state, enc_hook=state_enc_hook)
            for stream, state in self.world.states.items()
            if state != initial_state(stream)
        }

    def items(self) -> list[ItemState]:
        return [s for (kind, _), s in self.world.states.items() if kind == "item" and s]

    def availability_before(self, command: cmd.Command) -> dict[str, Any]:
        if not isinstance(command, cmd.ReserveStock | cmd.PlaceOrder):
            return {}
        policies = self.world.policies()
        channel = policies.channels[command.channel]
        return {
            line.sku: channel_availability(self.world.item(line.sku), policies, channel, self.now)
            for line in command.lines
        }

    def over_promised(self, command: cmd.Command) -> dict[str, int]:
        if not isinstance(command, cmd.ShipOrder):
            return {}
        policies = self.world.policies()
        return {
            line.sku: location_figures(
                self.world.item(line.sku), policies, command.location, self.now
            ).over_promised
            for line in command.lines
        }

    def owed_on_sale(self) -> set[tuple[str, str, str]]:
        """(sku, location, order) where the order's open shortfall and units sellable to its
        channel at one of the channel's locations coexist."""
        policies = self.world.policies()
        found: set[tuple[str, str, str]] = set()
        for item in self.items():
            for order_id in item.shortfalls:
                order = self.world.order(order_id)
                channel = policies.channels.get(order.channel) if order else None
                for code in channel.locations if channel else ():
                    if location_figures(item, policies, code, self.now).sellable > 0:
                        found.add((item.sku, code, order_id))
        return found

    # --- invariants --------------------------------------------------------------------

    def check_owed_units_are_not_on_sale(
        self, command: cmd.Command, before: set[tuple[str, str, str]]
    ) -> None:
        """After a stock command (anything but a policy change, which moves no units), an
        open shortfall and units its channel could take never coexist at a location where
        they did not already: a sale already made takes every sellable unit before it is
        owed, and units arriving or freed (a cancel, a revision, a released or expired hold)
        fill what is owed first."""
        if isinstance(command, cmd.DefineChannel | cmd.DefineLocation | cmd.SetSafetyStock):
            return
        assert self.owed_on_sale() <= before, (command, self.owed_on_sale() - before)

    def check_shipment_displaces_only_holds(
        self, command: cmd.Command, before: dict[str, int]
    ) -> None:
        """A shipment from another location than the allocation's swaps allocations with the
        orders whose units it took, so it over-promises at most what holds claim there (a
        fact the claims invariant then allows)."""
        if not isinstance(command, cmd.ShipOrder):
            return
        policies = self.world.policies()
        for sku_code, was in before.items():
            f = location_figures(self.world.item(sku_code), policies, command.location, self.now)
            increase = f.over_promised - was
            assert increase <= f.held, (command, f, was)
            self.shrinkage[sku_code, command.location] += max(0, increase)

    def check_decision_respects_availability(
        self, command: cmd.Command, decision: Decision, before: dict[str, Any]
    ) -> None:
        """An accepted reservation or order takes at most what the channel could give, only
        from its active locations, and never leaves a location it took from with fewer free
        units than its safety stock, nor promises incoming supply twice."""
        if not before:
            return
        policies = self.world.policies()
        channel = policies.channels[command.channel]
        for _, e in decision:
            if not isinstance(e, ev.StockHeld | ev.StockAllocated):
                continue
            holds = e.holds if isinstance(e, ev.StockHeld) else e.allocations
            wanted = next(line.quantity for line in command.lines if line.sku == e.sku)
            avail = before[e.sku]
            assert sum(h.quantity for h in holds) == wanted <= avail.available
            assert sum(h.quantity for h in holds if not h.backorder) <= avail.on_hand_available
            assert sum(h.quantity for h in holds if h.backorder) <= avail.backorder_available
            item = self.world.item(e.sku)
            for h in holds:
                assert h.quantity > 0
                assert h.location in channel.locations
                assert policies.locations[h.location].active
                f = location_figures(item, policies, h.location, self.now)
                if h.backorder:
                    assert f.backordered <= f.incoming, (e, f)
                else:
                    free = f.on_hand - f.allocated - f.held - f.damaged
                    assert free >= f.safety_stock, (e, f)
                    uncovered = max(0, f.backordered - f.incoming)
                    assert free - uncovered >= f.safety_stock, (e, f)

    def check(self) -> None:
        self.check_counters()
        self.check_claims_fit_on_hand()
        self.check_availability()
        self.check_reservations_match_holds()
        self.check_orders_match_allocations()
        self.check_documents_match_items()
        self.check_replay()

    def check_counters(self) -> None:
        for item in self.items():
            held: Counter[str] = Counter()
            allocated: Counter[str] = Counter()
            backordered: Counter[str] = Counter()
            for hold in item.holds.values():
                for h in hold.holds:
                    (backordered if h.backorder else held)[h.location] += h.quantity
            for allocations in item.allocations.values():
                for h in allocations:
                    assert h.quantity > 0, (item.sku, allocations)
                    (backordered if h.backorder else allocated)[h.location] += h.quantity
            for code, stock in item.locations.items():
                for name in stock.__struct_fields__:
                    assert getattr(stock, name) >= 0, (item.sku, code, stock)
                assert stock.held == held[code], (item.sku, code, stock, item.holds)
                assert stock.allocated == allocated[code], (item.sku, code, stock)
                assert stock.backordered == backordered[code], (item.sku, code, stock)
            assert item.next_expiry == min(
                (h.expires_at for h in item.holds.values()), default=None
            )

    def check_claims_fit_on_hand(self) -> None:
        policies = self.world.policies()
        for item in self.items():
            for code in item.locations:
                f = location_figures(item, policies, code, self.now)
                uncovered = max(0, f.backordered - f.incoming)
                claims = f.allocated + f.held + f.damaged + uncovered
                assert claims <= f.on_hand + self.shrinkage[item.sku, code], (item.sku, code, f)

    def check_availability(self) -> None:
        policies = self.world.policies()
        for item in self.items():
            for channel in policies.channels.values():
                a = channel_availability(item, policies, channel, self.now)
                assert a.available >= 0
                assert a.on_hand_available >= 0
                assert a.available <= a.pool + channel.backorder_limit
                assert all(f.sellable >= 0 for f in a.locations)

    def check_reservations_match_holds(self) -> None:
        for (kind, key), state in self.world.states.items():
            if kind != "reservation" or state is None:
                continue
            assert isinstance(state, ReservationState)
            for line in state.lines:
                hold = self.world.item(line.sku).holds.get(key)
                if state.status == "held":
                    assert hold is not None
                    assert (hold.holds, hold.expires_at) == (line.holds, state.expires_at)
                    assert sum(h.quantity for h in line.holds) == line.quantity
                else:
                    assert hold is None

    def check_orders_match_allocations(self) -> None:
        for (kind, key), state in self.world.states.items():
            if kind != "order" or state is None:
                continue
            assert isinstance(state, OrderState)
            for line in state.lines:
                item = self.world.item(line.sku)
                allocs = item.allocations.get(key, ())
                owed = item.shortfalls.get(key, 0)
                # filled shortfall + allocations = ordered - shipped - canceled
                assert sum(h.quantity for h in allocs) + owed == line.open, (key, line, allocs)
                assert owed >= 0
                assert 0 <= line.returned <= line.shipped
                assert line.open >= 0

    def check_documents_match_items(self) -> None:
        """Units in transit are what open transfers still carry; referenced incoming supply
        is part of the location's incoming and never negative."""
        in_transit: Counter[tuple[str, str]] = Counter()
        for (kind, _), state in self.world.states.items():
            if kind == "transfer" and state is not None:
                assert isinstance(state, TransferState)
                for line in state.lines:
                    assert state.in_transit(line.sku) >= 0
                    if state.status in ("in_transit", "received"):
                        in_transit[line.sku, state.to_location] += state.in_transit(line.sku)
        for item in self.items():
            for code, stock in item.locations.items():
                assert stock.in_transit == in_transit[item.sku, code], (item.sku, code)
            for code, supply in item.expected.items():
                assert all(s.quantity > 0 for s in supply.values()), (item.sku, supply)
                assert sum(s.quantity for s in supply.values()) <= item.at(code).incoming

    def check_replay(self) -> None:
        by_stream: dict[Stream, list[ev.Event]] = {}
        for stream, e in self.recorded:
            by_stream.setdefault(stream, []).append(e)
        replayed = {stream: fold(stream, events) for stream, events in by_stream.items()}
        live = {
            stream: state
            for stream, state in self.world.states.items()
            if state != initial_state(stream) or stream in replayed
        }
        assert live == replayed


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run(history: list[Any]) -> None:
    ledger = Ledger()
    ledger.check()
    for step in history:
        ledger.step(step)
        ledger.check()


@PROPERTY_SETTINGS
@given(STEPS)
def test_random_histories_keep_the_ledger_consistent(history):
    run(history)


@PROPERTY_SETTINGS
@given(BACKORDER_STEPS)
def test_backorder_histories_keep_the_ledger_consistent(history):
    run(history)
