"""Physical facts through the command service on SQLite and PostgreSQL (issue 7 §1f, §2, §6):
the writer discovers the owed orders' streams a receipt fills, and a fresh process folds
the same state from the ledger."""

from __future__ import annotations

import pytest

from atp import commands as c
from atp.ats import channel_availability
from atp.errors import InsufficientStock
from atp.events import Hold
from atp.world import fold
from tests.integration.conftest import Backend, run

pytestmark = pytest.mark.integration


def test_a_receipt_fills_the_owed_webhook_sale_first(backend: Backend) -> None:
    """3 on hand, a webhook sale of 5 (shortfall 2), receive 2: the sale's 5 are allocated,
    available 0, a new order cannot take the 2, and a second process sees the same."""
    service = backend.service()
    for command in (
        c.DefineLocation(code="WH", name="Main", kind="warehouse"),
        c.DefineChannel(code="woo", locations=("WH",)),
        c.ReceiveStock(location="WH", lines=(c.Line("A", 3),)),
        c.AcceptOrder(order_id="woo:1", channel="woo", lines=(c.Line("A", 5),)),
        c.ReceiveStock(location="WH", lines=(c.Line("A", 2),)),
    ):
        run(service, command)
    with pytest.raises(InsufficientStock):
        run(service, c.PlaceOrder(order_id="o2", channel="woo", lines=(c.Line("A", 1),)))

    ledger = backend.ledger()
    item, _ = ledger.load(("item", "A"))
    policies, _ = ledger.load(("policies", "global"))
    assert item.shortfalls == {}
    assert item.allocations == {"woo:1": (Hold("WH", 5),)}
    assert (
        channel_availability(item, policies, policies.channels["woo"], backend.clock()).available
        == 0
    )
    order, _ = ledger.load(("order", "woo:1"))
    assert (order.status, order.line("A").allocated) == ("allocated", 5)
    assert fold(("item", "A"), [e.event for e in ledger.records(("item", "A"))]) == item
    ledger.close()


def test_a_short_transfer_receipt_and_its_write_off_are_recorded(backend: Backend) -> None:
    """Transfer 10, receive 8, close the rest as lost: the store has 8 and nothing in
    transit; the source keeps what stayed. The ledger replays to the same figures."""
    service = backend.service()
    for command in (
        c.DefineLocation(code="WH", name="Main", kind="warehouse"),
        c.DefineLocation(code="ST", name="Store", kind="store"),
        c.ReceiveStock(location="WH", lines=(c.Line("A", 12),)),
        c.ShipTransfer(
            transfer_id="t1", from_location="WH", to_location="ST", lines=(c.Line("A", 10),)
        ),
        c.ReceiveTransfer(transfer_id="t1", lines=(c.Line("A", 8),)),
        c.CloseTransfer(transfer_id="t1", reason="short delivery"),
    ):
        run(service, command)
    ledger = backend.ledger()
    item, _ = ledger.load(("item", "A"))
    assert (item.at("ST").on_hand, item.at("ST").in_transit) == (8, 0)
    assert item.at("WH").on_hand == 2
    transfer, _ = ledger.load(("transfer", "t1"))
    assert (transfer.status, transfer.received, transfer.lost) == ("closed", {"A": 8}, {"A": 2})
    ledger.close()
