"""AcceptOrder: a sale a channel already made (a WooCommerce checkout) is never refused;
what atp cannot cover is recorded as a shortfall for ops to resolve."""

from __future__ import annotations

from atp import commands as cmd
from atp import events as ev
from atp.events import Hold
from atp.state import LocationStock
from tests.unit.scenario import available, channel, given, item, location, order, received

BASE = [location("WH1"), location("ST1", "store"), channel("web", "WH1", "ST1")]
L = cmd.Line


def accept(*lines: cmd.Line, oid: str = "woo:shop:1") -> cmd.AcceptOrder:
    return cmd.AcceptOrder(order_id=oid, channel="web", lines=lines)


def test_allocates_like_an_order_when_stock_covers_it() -> None:
    world = (
        given(BASE, received("A", "WH1", 2), received("A", "ST1", 3))
        .when(accept(L("A", 4)))
        .then(
            (
                item("A"),
                ev.StockAllocated(
                    sku="A",
                    order_id="woo:shop:1",
                    channel="web",
                    allocations=(Hold("WH1", 2), Hold("ST1", 2)),
                ),
            ),
            (
                order("woo:shop:1"),
                ev.OrderPlaced(
                    order_id="woo:shop:1",
                    channel="web",
                    lines=(ev.OrderLine("A", 4),),
                    reservation_id=None,
                ),
            ),
        )
    )
    assert world.order("woo:shop:1").status == "allocated"


def test_records_a_shortfall_instead_of_refusing() -> None:
    world = (
        given(BASE, received("A", "WH1", 1))
        .when(accept(L("A", 3), L("B", 2)))
        .then(
            (
                item("A"),
                ev.StockAllocated(
                    sku="A", order_id="woo:shop:1", channel="web", allocations=(Hold("WH1", 1),)
                ),
            ),
            (item("A"), ev.ShortfallRecorded(sku="A", order_id="woo:shop:1", quantity=2)),
            (item("B"), ev.ShortfallRecorded(sku="B", order_id="woo:shop:1", quantity=2)),
            (
                order("woo:shop:1"),
                ev.OrderPlaced(
                    order_id="woo:shop:1",
                    channel="web",
                    lines=(ev.OrderLine("A", 3), ev.OrderLine("B", 2)),
                    reservation_id=None,
                    shortfall=(ev.OrderLine("A", 2), ev.OrderLine("B", 2)),
                ),
            ),
        )
    )
    assert world.order("woo:shop:1").status == "accepted"  # not fully allocated
    assert world.item("A").shortfalls == {"woo:shop:1": 2}
    assert world.item("A").at("WH1") == LocationStock(on_hand=1, allocated=1)
    assert available(world, "A", "web").available == 0


def test_the_same_order_again_does_nothing() -> None:
    first = given(BASE, received("A", "WH1", 5)).when(accept(L("A", 1)))
    history = first.then(
        (
            item("A"),
            ev.StockAllocated(
                sku="A", order_id="woo:shop:1", channel="web", allocations=(Hold("WH1", 1),)
            ),
        ),
        (
            order("woo:shop:1"),
            ev.OrderPlaced(
                order_id="woo:shop:1",
                channel="web",
                lines=(ev.OrderLine("A", 1),),
                reservation_id=None,
            ),
        ),
    )
    from atp.decide import decide
    from tests.unit.scenario import NOW

    assert decide(accept(L("A", 1)), history, NOW) == []


def test_cancel_clears_the_shortfall_before_releasing_allocations() -> None:
    accepted = [
        BASE,
        received("A", "WH1", 1),
        (
            item("A"),
            ev.StockAllocated(
                sku="A", order_id="woo:shop:1", channel="web", allocations=(Hold("WH1", 1),)
            ),
        ),
        (item("A"), ev.ShortfallRecorded(sku="A", order_id="woo:shop:1", quantity=2)),
        (
            order("woo:shop:1"),
            ev.OrderPlaced(
                order_id="woo:shop:1",
                channel="web",
                lines=(ev.OrderLine("A", 3),),
                reservation_id=None,
                shortfall=(ev.OrderLine("A", 2),),
            ),
        ),
    ]
    world = (
        given(*accepted)
        .when(cmd.CancelOrder(order_id="woo:shop:1"))
        .then(
            (item("A"), ev.ShortfallResolved(sku="A", order_id="woo:shop:1", quantity=2)),
            (
                item("A"),
                ev.AllocationReleased(
                    sku="A", order_id="woo:shop:1", allocations=(Hold("WH1", 1),)
                ),
            ),
            (
                order("woo:shop:1"),
                ev.OrderCanceled(order_id="woo:shop:1", lines=(ev.OrderLine("A", 3),)),
            ),
        )
    )
    assert world.item("A").shortfalls == {}
    assert world.order("woo:shop:1").status == "canceled"
    assert available(world, "A", "web").available == 1
