"""WooCommerce order snapshots converge the order to their desired state (issue 7 §1).

Each delivery is decided the way the service decides it (adapters.webhooks.decide_snapshot)
against a ledger in memory: one location `WH`, channel `woo` sourcing from it, 10 units of
A and B received (3 of C, to make shortfalls).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest
from hypothesis import given as for_all
from hypothesis import settings
from hypothesis import strategies as st

from adapters.records import WebhookOrderApplied
from adapters.webhooks import (
    NotAnOrder,
    WooOrder,
    deleted_order,
    parse_order,
    refunded_units,
    signature,
    snapshot,
    verify,
)
from api.service.order_snapshots import decide_snapshot, deliveries_after, skip_reason
from atp import commands as cmd
from atp import events as ev
from atp.decide import decide
from atp.errors import InvalidCommand
from atp.events import Hold
from atp.state import OrderState
from atp.world import StateSet
from tests.unit.scenario import NOW, available, decided, given, item, order, world_of

SETUP = decided(
    cmd.DefineLocation(code="WH", name="Warehouse", kind="warehouse"),
    cmd.DefineChannel(code="woo", locations=("WH",)),
    cmd.ReceiveStock(location="WH", lines=(cmd.Line("A", 10), cmd.Line("B", 10), cmd.Line("C", 3))),
)


class Shop:
    """The ledger and the last applied snapshot of each order, as the service keeps them."""

    def __init__(self) -> None:
        self.world: StateSet = world_of(SETUP)
        self.last: dict[str, WebhookOrderApplied] = {}

    def deliver(
        self,
        oid: int,
        status: str,
        modified: str,
        refunded: dict[str, int] | None = None,
        **lines: Any,
    ) -> str | None:
        """Decide one delivery and apply its events; returns why it changed nothing."""
        items = [{"sku": sku, "quantity": q} for sku, q in lines.items()]
        order = WooOrder(id=oid, status=status, date_modified_gmt=modified, line_items=items)
        snap = snapshot("shop", order).with_refunded(refunded or {})
        key = snap.order_id
        events, reason = decide_snapshot(snap, "woo", self.last.get(key), self.world, NOW)
        for stream, event in events:
            if isinstance(event, WebhookOrderApplied):
                self.last[key] = event
            else:
                self.world.apply(stream, event)
        return reason

    def available(self, sku: str) -> int:
        return available(self.world, sku, "woo").available

    def allocated(self, sku: str) -> int:
        return self.world.item(sku).at("WH").allocated

    def order(self, oid: int) -> OrderState:
        order = self.world.order(f"woocommerce:shop:{oid}")
        assert order is not None
        return order

    def lines(self, oid: int) -> dict[str, int]:
        return {line.sku: line.open for line in self.order(oid).lines if line.open}


T0, T1 = "2026-11-26T10:00:00", "2026-11-26T10:00:01"


def test_a_status_change_within_the_same_second_is_applied() -> None:
    """Story: a checkout moves pending -> processing within one second (same
    date_modified_gmt). Invariant: the sale holds its 2 units (allocated 2, available 8)."""
    shop = Shop()
    assert shop.deliver(5001, "pending", T0, A=2) == "the ledger already holds this state"
    assert (shop.allocated("A"), shop.available("A")) == (0, 10)
    assert shop.deliver(5001, "processing", T0, A=2) is None
    assert (shop.allocated("A"), shop.available("A")) == (2, 8)
    assert (
        shop.deliver(5001, "processing", T0, A=2) == "the same state as the last applied snapshot"
    )
    assert (shop.allocated("A"), shop.available("A")) == (2, 8)


def test_b_an_order_edit_allocates_added_and_releases_removed_units() -> None:
    """Story: an admin edits an on-hold order from 1 x A to 2 x A + 1 x B, then removes A.
    Invariant: the order holds exactly its lines: A 8 / B 9, then A 10 / B 9."""
    shop = Shop()
    shop.deliver(6001, "on-hold", T0, A=1)
    assert shop.available("A") == 9
    shop.deliver(6001, "on-hold", T1, A=2, B=1)
    assert (shop.available("A"), shop.available("B")) == (8, 9)
    assert shop.lines(6001) == {"A": 2, "B": 1}
    shop.deliver(6001, "on-hold", "2026-11-26T10:00:02", B=1)
    assert (shop.available("A"), shop.available("B")) == (10, 9)
    assert shop.lines(6001) == {"B": 1}
    assert shop.allocated("A") == 0


def test_c_a_reopened_sale_holds_its_units_again() -> None:
    """Story: order 7001 for 5 goes processing, cancelled, cancelled again, completed,
    cancelled. Invariant: available goes 5, 10, 10, 5, 10."""
    shop = Shop()
    seen = []
    for second, status in enumerate(
        ("processing", "cancelled", "cancelled", "completed", "cancelled")
    ):
        shop.deliver(7001, status, f"2026-11-26T10:00:0{second}", A=5)
        seen.append(shop.available("A"))
    assert seen == [5, 10, 10, 5, 10]
    assert shop.order(7001).status == "canceled"


def test_an_older_snapshot_is_dropped_with_its_reason() -> None:
    """Story: a late copy of the processing snapshot arrives after the cancel. Invariant:
    the order stays canceled, nothing is held."""
    shop = Shop()
    shop.deliver(100, "processing", T0, A=2)
    shop.deliver(100, "cancelled", T1, A=2)
    reason = shop.deliver(100, "processing", T0, A=2)
    assert reason is not None and reason.startswith("older")
    assert shop.available("A") == 10


def test_an_undated_order_is_refused_and_only_a_deletion_may_be_undated() -> None:
    """Story: a proxy in front of the store strips `date_modified_gmt` from a late copy of
    an order edited after payment (2 units became 1, then 3). Invariant: the copy is
    refused naming the field (it would have counted as the newest state and undone the
    edit); an `order.deleted` delivery, which carries only the id, is still the newest."""
    late = {"id": 506, "status": "processing", "line_items": [{"sku": "A", "quantity": 1}]}
    with pytest.raises(NotAnOrder) as caught:
        parse_order(msgspec.json.encode(late))
    assert (caught.value.status, caught.value.field) == (422, "date_modified_gmt")
    trashed = parse_order(deleted_order(b'{"id": 506}'))
    assert (trashed.status, trashed.date_modified_gmt, trashed.line_items) == ("trash", "", [])


def test_a_sale_beyond_stock_becomes_a_shortfall_and_an_edit_reduces_it_first() -> None:
    """Story: a sale of 5 C when 3 are there, then the customer drops 2 units. Invariant:
    allocated + shortfall = what the order wants; the reduction takes the shortfall first."""
    shop = Shop()
    shop.deliver(300, "processing", T0, C=5)
    assert (shop.allocated("C"), shop.world.item("C").shortfalls) == (
        3,
        {"woocommerce:shop:300": 2},
    )
    shop.deliver(300, "processing", T1, C=3)
    assert (shop.allocated("C"), shop.world.item("C").shortfalls) == (3, {})
    assert shop.order(300).status == "allocated"


def test_a_partial_refund_releases_the_refunded_units() -> None:
    """Story: 4 x A processing, then 1 unit refunded (status and line_items unchanged).
    Invariant: the order holds 3; a later snapshot with the same refunds keeps 3."""
    shop = Shop()
    shop.deliver(400, "processing", T0, A=4)
    shop.deliver(400, "processing", T1, refunded={"A": 1}, A=4)
    assert (shop.allocated("A"), shop.available("A")) == (3, 7)
    units = refunded_units([{"line_items": [{"sku": "A", "quantity": -1}, {"sku": "B"}]}])
    assert units == {"A": 1}


def test_unmapped_lines_are_recorded_on_the_order_never_as_items() -> None:
    """Story: an order with a normal 2-unit line and lines atp cannot map (a German SKU with
    a space, a full-width ampersand, a list as SKU, 1.5 units, 10^30 units, no SKU).
    Invariant: A holds 2; the odd lines are on the order with a reason and no item exists."""
    shop = Shop()
    odd = [
        {"sku": "Tasse Grün", "quantity": 1},
        {"sku": "A\uff06B", "quantity": 1},
        {"sku": ["A"], "quantity": 1},
        {"sku": "B", "quantity": 1.5},
        {"sku": "B", "quantity": 10**30},
        {"name": "Gift wrap", "quantity": 1},
        {"sku": "B", "quantity": "2"},
    ]
    body = msgspec.json.encode(
        {
            "id": 500,
            "status": "processing",
            "date_modified_gmt": "2026-11-27T10:00:00",
            "line_items": [{"sku": "A", "quantity": 2}, *odd],
        }
    )
    snap = snapshot("shop", parse_order(body))
    events, _ = decide_snapshot(snap, "woo", None, shop.world, NOW)
    for stream, event in events:
        if not isinstance(event, WebhookOrderApplied):
            shop.world.apply(stream, event)
    assert shop.allocated("A") == 2
    assert shop.allocated("B") == 0
    order = shop.order(500)
    assert [line.sku for line in order.lines] == ["A"]
    assert [u.line for u in order.unmapped] == [1, 2, 3, 4, 5, 6, 7]
    assert order.unmapped[2] == ev.UnmappedLine(line=3, reason="sku is list, not a string")
    assert "not an integer" in order.unmapped[3].reason
    assert "between 1 and 1000000" in order.unmapped[4].reason
    item_streams = {stream for stream, _ in events if stream[0] == "item"}
    assert item_streams == {("item", "A")}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[1,2]", "body"),
        (b'"x"', "body"),
        (b'{"id":1,"status":"processing","line_items":{"a":1}}', "line_items"),
        (b'{"id":2,"status":"processing","line_items":[null]}', "line_items[0]"),
        (b'{"id":"3","status":"processing"}', "id"),
        (b'{"id":4,"status":"processing","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body"),
    ],
)
def test_a_signed_body_that_is_not_an_order_is_422(body: bytes, field: str) -> None:
    with pytest.raises(NotAnOrder) as caught:
        parse_order(body)
    assert (caught.value.status, caught.value.field) == (422, field)


def test_too_many_lines_is_413_and_bad_json_400() -> None:
    lines = [{"sku": f"S{i}", "quantity": 1} for i in range(101)]
    with pytest.raises(NotAnOrder) as caught:
        parse_order(msgspec.json.encode({"id": 1, "status": "processing", "line_items": lines}))
    assert caught.value.status == 413
    with pytest.raises(NotAnOrder) as caught:
        parse_order(b'{"id": 1, "status": "web\xff"}')
    assert caught.value.status == 400


def test_a_signature_with_non_ascii_characters_is_wrong_not_an_error() -> None:
    body = b'{"id": 1}'
    assert verify(body, signature(body, "s"), ["s"])
    assert not verify(body, "\u00e9" * 44, ["s"])


def test_shipped_units_stay_shipped_whatever_the_order_becomes() -> None:
    """Story: 4 x A processing, the warehouse ships 2, then the admin edits the order to 3,
    to 1 (below what left), and cancels it. Invariant: only unshipped units are released;
    the order keeps its 2 shipped units, on_hand is 8 throughout."""
    shop = Shop()
    shop.deliver(800, "processing", T0, A=4)
    ship = cmd.ShipOrder(
        order_id="woocommerce:shop:800", shipment_id="s1", location="WH", lines=(cmd.Line("A", 2),)
    )
    for stream, event in decide(ship, shop.world, NOW):
        shop.world.apply(stream, event)
    shop.deliver(800, "processing", T1, A=3)
    assert (shop.allocated("A"), shop.available("A"), shop.lines(800)) == (1, 7, {"A": 1})
    shop.deliver(800, "processing", "2026-11-26T10:00:02", A=1)
    assert (shop.allocated("A"), shop.available("A"), shop.lines(800)) == (0, 8, {})
    shop.deliver(800, "cancelled", "2026-11-26T10:00:03", A=1)
    line = shop.order(800).lines[0]
    assert (line.quantity, line.shipped, line.open) == (2, 2, 0)
    assert shop.world.item("A").at("WH").on_hand == 8
    assert shop.order(800).status == "shipped"


# --- the revision command, given / when / then ---------------------------------------------

OID = "woocommerce:shop:7001"


def _revise(open_: bool = True, **lines: int) -> cmd.ReviseOrder:
    wanted = tuple(cmd.Line(sku, q) for sku, q in lines.items())
    return cmd.ReviseOrder(order_id=OID, channel="woo", lines=wanted, open=open_)


def test_a_reopened_order_is_revised_with_reopened_in_its_history() -> None:
    placed = decided(*SETUP, _revise(A=5), _revise(open_=False, A=5))
    given(placed).when(_revise(A=5)).then(
        (
            item("A"),
            ev.StockAllocated(sku="A", order_id=OID, channel="woo", allocations=(Hold("WH", 5),)),
        ),
        (
            order(OID),
            ev.OrderRevised(order_id=OID, lines=(ev.RevisedLine("A", 5, 5),), reopened=True),
        ),
    )


def test_a_closed_order_releases_its_shortfall_before_its_allocations() -> None:
    placed = decided(*SETUP, _revise(C=5))
    given(placed).when(_revise(open_=False, C=5)).then(
        (item("C"), ev.ShortfallResolved(sku="C", order_id=OID, quantity=2)),
        (item("C"), ev.AllocationReleased(sku="C", order_id=OID, allocations=(Hold("WH", 3),))),
        (order(OID), ev.OrderCanceled(order_id=OID, lines=(ev.OrderLine("C", 5),))),
    )


def test_the_same_state_again_decides_nothing_and_bad_lines_are_refused() -> None:
    placed = decided(*SETUP, _revise(A=2, B=1))
    assert given(placed).when(_revise(A=2, B=1)).decision() == []
    given(placed).when(_revise(A=0)).raises(InvalidCommand, field="lines[0].quantity")


# --- the property -------------------------------------------------------------------------

STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed")
snapshot_step = st.tuples(
    st.sampled_from(STATUSES),
    st.integers(min_value=0, max_value=3),  # seconds: same-second times and late copies
    st.dictionaries(st.sampled_from(("A", "C")), st.integers(min_value=1, max_value=6)),
    st.booleans(),  # deliver this state twice
    st.booleans(),  # then the warehouse ships one allocated unit of A, if there is one
)


@settings(max_examples=300, deadline=None)
@for_all(st.lists(snapshot_step, min_size=1, max_size=12))
def test_any_snapshot_sequence_leaves_what_the_last_applied_one_demands(
    steps: list[tuple[str, int, dict[str, int], bool, bool]],
) -> None:
    """For any sequence of snapshots of one order (statuses, edits, duplicates, same-second
    times, late copies, cancels and re-opens) with shipments in between: the order's
    allocation plus shortfall per SKU equals what the last applied snapshot demands less
    what has shipped (nothing when closed), the order's lines say the same, and no
    quantity is ever negative."""
    shop = Shop()
    oid = "woocommerce:shop:1"
    last: tuple[str, str, dict[str, int]] | None = None  # the model: time, status, lines
    shipped: dict[str, int] = {}
    for n, (status, second, lines, twice, ship) in enumerate(steps):
        modified = f"2026-11-26T10:00:0{second}"
        for _ in range(2 if twice else 1):
            shop.deliver(1, status, modified, **lines)
            newer = last is None or modified > last[0]
            if newer or (last is not None and modified == last[0] and (status, lines) != last[1:]):
                last = (modified, status, lines)
            assert last is not None
            wants = last[2] if last[1] in ("processing", "on-hold", "completed") else {}
            demanded = {sku: q - shipped.get(sku, 0) for sku, q in wants.items()}
            demanded = {sku: q for sku, q in demanded.items() if q > 0}
            for sku in ("A", "C"):
                item = shop.world.item(sku)
                held = sum(h.quantity for h in item.allocations.get(oid, ()))
                assert held + item.shortfalls.get(oid, 0) == demanded.get(sku, 0)
                stock = item.at("WH")
                assert min(stock.on_hand, stock.allocated, item.shortfalls.get(oid, 0)) >= 0
                assert stock.on_hand == {"A": 10, "C": 3}[sku] - shipped.get(sku, 0)
                assert all(h.quantity > 0 for h in item.allocations.get(oid, ()))
            order = shop.world.order(oid)
            wanted = {x.sku: x.open for x in order.lines if x.open} if order else {}
            assert wanted == demanded
            if order is not None:
                assert all(
                    min(x.quantity, x.allocated, x.canceled, x.open, x.shipped) >= 0
                    for x in order.lines
                )
        if ship and shop.world.item("A").allocations.get(oid):
            one = (cmd.Line("A", 1),)
            shipment = cmd.ShipOrder(order_id=oid, shipment_id=f"s{n}", location="WH", lines=one)
            for stream, event in decide(shipment, shop.world, NOW):
                shop.world.apply(stream, event)
            shipped["A"] = shipped.get("A", 0) + 1


def _snap(status: str, modified: str, delivery: str) -> Any:
    body = {"id": 7, "status": status, "date_modified_gmt": modified, "line_items": []}
    return replace(snapshot("shop", parse_order(msgspec.json.encode(body))), delivery=delivery)


def test_a_redelivery_in_the_same_second_is_known_by_its_id_and_state() -> None:
    """A RabbitMQ redelivery (or a proxy's retry) of `processing` after `cancelled`, both in
    one second. Invariant: the same delivery of the same state is applied once; another
    state under the same id (WooCommerce derives the id from the webhook and the second) is
    still applied, and a newer second forgets the old ids."""
    first = _snap("processing", "2026-11-30T10:00:00", "d1")
    second = _snap("cancelled", "2026-11-30T10:00:00", "d2")
    applied: WebhookOrderApplied | None = None
    for snap in (first, second):
        assert skip_reason(snap, applied) is None
        applied = WebhookOrderApplied(
            order_id=snap.order_id,
            modified=snap.modified,
            status=snap.status,
            state=snap.state,
            deliveries=deliveries_after(snap, applied),
        )
    assert applied is not None
    assert "redelivery" in (skip_reason(first, applied) or "")
    assert skip_reason(_snap("on-hold", "2026-11-30T10:00:00", "d1"), applied) is None
    later = _snap("processing", "2026-11-30T10:00:01", "d1")
    assert skip_reason(later, applied) is None
    assert deliveries_after(later, applied) == (later.delivery_key,)


def test_snapshot_times_compare_as_instants() -> None:
    """`date_modified_gmt` in any ISO form: a space separator, an offset. Invariant: the
    snapshot rule compares instants (an offset is converted to GMT)."""
    assert _snap("processing", "2026-11-30 11:00:00", "").modified == "2026-11-30T11:00:00"
    assert _snap("processing", "2026-11-30T12:00:00+05:00", "").modified == "2026-11-30T07:00:00"
