"""Physical events are facts, over HTTP against the real service (issue 7 §2, §4, §6).

Each test is a story a retailer lived; its docstring states the invariant it keeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.route_helpers import (
    Env,
    assert_problem,
    available,
    chan,
    created,
    get_item,
    history,
    loc,
    make_env,
    own,
    unchanged,
)
from tests.support.physical import (
    deliver,
    item_at_head,
    register_store,
)
from tests.support.server import Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(server: Server, unique: str) -> Iterator[Env]:
    """Warehouses WH and ST (here a second warehouse), channel `web` sourcing WH then ST."""
    with server.client() as c:
        yield make_env(c, unique, st_kind="warehouse")


def lines(env: Env, **quantities: int) -> list[dict[str, Any]]:
    return [{"sku": env.sku(name), "quantity": q} for name, q in quantities.items()]


def ship(env: Env, order_id: str, shipment: str, location: str, **quantities: int) -> Any:
    body = {"shipment_id": shipment, "location": location, "lines": lines(env, **quantities)}
    return env.client.post(f"/v1/orders/{order_id}/shipments", json=body, headers=env.idem())


def count(env: Env, location: str, counted: int) -> None:
    body = {"location": location, "lines": [{"sku": env.sku(), "counted": counted}]}
    created(env.client.post("/v1/counts", json=body, headers=env.idem()))


def metric(env: Env, name: str) -> int:
    text = env.client.get("/metrics").text
    value = next(line.split()[-1] for line in text.splitlines() if line.startswith(name))
    return int(float(value))


def metric_reaches(env: Env, name: str, wanted: int, seconds: float = 5.0) -> int:
    """The metric once it reaches `wanted` (or its value after `seconds`): each worker
    carries its writer's counts into /metrics about once a second, and the write was
    decided by the writer worker, not necessarily the one answering the scrape."""
    deadline = time.monotonic() + seconds
    while (value := metric(env, name)) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


OVER_PROMISED = 'atp_stock_exceptions_total{type="OverPromised"}'


def test_a_count_below_allocations_shows_the_over_promise_and_ships(env: Env) -> None:
    """Receive 10, order 6, count 4, ship 1 (201). The item view shows 2 over-promised at
    WH with the order named, sellable 0; history and /metrics record it."""
    c, sku = env.client, env.sku()
    env.receive(env.wh, A=10)
    created(env.order(f"{env.prefix}-o1", A=6))
    before = metric(env, OVER_PROMISED)
    count(env, env.wh, 4)
    wh = loc(get_item(c, sku), env.wh)
    assert (wh["on_hand"], wh["allocated"], wh["sellable"]) == (4, 6, 0)
    assert wh["over_promised"] == 2
    assert wh["uncovered"] == [{"quantity": 2, "order_id": f"{env.prefix}-o1"}]
    entry = own(history(c, sku), sku)[-1]
    assert (entry["type"], entry["location"], entry["quantity"]) == ("OverPromised", env.wh, 2)
    assert metric_reaches(env, OVER_PROMISED, before + 1) == before + 1

    created(ship(env, f"{env.prefix}-o1", "s1", env.wh, A=1))
    wh = loc(get_item(c, sku), env.wh)
    assert (wh["on_hand"], wh["allocated"], wh["over_promised"]) == (3, 5, 2)
    assert chan(get_item(c, sku), env.web)["available"] == 0


def test_a_count_below_an_order_and_a_hold_ships_the_order(env: Env) -> None:
    """Receive 10, order 2, checkout hold 8, count 5: shipping the order's 2 is 201; the
    hold is what is left uncovered."""
    c, sku = env.client, env.sku()
    env.receive(env.wh, A=10)
    created(env.order(f"{env.prefix}-o1", A=2))
    reservation = created(env.reserve(A=8))
    count(env, env.wh, 5)
    wh = loc(get_item(c, sku), env.wh)
    assert wh["uncovered"] == [{"quantity": 5, "reservation_id": reservation["reservation_id"]}]
    created(ship(env, f"{env.prefix}-o1", "s1", env.wh, A=2))
    wh = loc(get_item(c, sku), env.wh)
    assert (wh["on_hand"], wh["allocated"], wh["held"], wh["over_promised"]) == (3, 0, 8, 5)


def test_a_split_shipment_moves_the_allocation(env: Env) -> None:
    """An order of 10 allocated 5 + 5 at WH and ST; ST ships 8 and WH 2 (both 201): the
    order is shipped and the figures match the shelves (WH 3, ST 2, nothing allocated)."""
    c, sku, order_id = env.client, env.sku(), f"{env.prefix}-o1"
    env.receive(env.wh, A=5)
    env.receive(env.st, A=10)
    created(c.put(f"/v1/channels/{env.web}", json={"locations": [env.wh, env.st]}), 200)
    created(env.order(order_id, A=10))
    item = get_item(c, sku)
    assert (loc(item, env.wh)["allocated"], loc(item, env.st)["allocated"]) == (5, 5)
    with unchanged(c, sku):  # more than WH has on hand: 409, nothing moves
        assert_problem(ship(env, order_id, "s0", env.wh, A=6), 409)
    created(ship(env, order_id, "s1", env.st, A=8))
    created(ship(env, order_id, "s2", env.wh, A=2))
    item = get_item(c, sku)
    assert (loc(item, env.wh)["on_hand"], loc(item, env.wh)["allocated"]) == (3, 0)
    assert (loc(item, env.st)["on_hand"], loc(item, env.st)["allocated"]) == (2, 0)
    assert created(c.get(f"/v1/orders/{order_id}"), 200)["status"] == "shipped"
    assert "AllocationMoved" in [e["type"] for e in own(history(c, sku), sku)]


def test_one_return_restocks_one_and_writes_off_another(env: Env) -> None:
    """Two lines of one SKU, restock and damaged: 201, 1 back on sale, 1 damaged, order
    partially_returned; 2 + 2 of 3 shipped is a 409 that changes nothing."""
    c, sku, order_id = env.client, env.sku(), f"{env.prefix}-o1"
    env.receive(env.wh, A=3)
    created(env.order(order_id, A=3))
    created(ship(env, order_id, "s1", env.wh, A=3))
    back = [
        {"sku": sku, "quantity": 2, "disposition": "restock"},
        {"sku": sku, "quantity": 2, "disposition": "damaged"},
    ]
    with unchanged(c, sku):
        body = {"return_id": "x0", "location": env.wh, "lines": back}
        r = c.post(f"/v1/orders/{order_id}/returns", json=body, headers=env.idem())
        problem = assert_problem(r, 409, "insufficient-stock")
        assert problem["lines"] == [{"sku": sku, "requested": 4, "available": 3}]
    back = [{**line, "quantity": 1} for line in back]
    body = {"return_id": "x1", "location": env.wh, "lines": back}
    view = created(c.post(f"/v1/orders/{order_id}/returns", json=body, headers=env.idem()))
    assert view["status"] == "partially_returned"
    wh = loc(get_item(c, sku), env.wh)
    assert (wh["on_hand"], wh["damaged"], wh["sellable"]) == (2, 1, 1)


def transfer(env: Env, tid: str, quantity: int) -> None:
    body = {
        "transfer_id": tid,
        "from_location": env.wh,
        "to_location": env.st,
        "lines": lines(env, A=quantity),
    }
    created(env.client.post("/v1/transfers", json=body, headers=env.idem()))


def test_a_short_transfer_receipt_creates_no_phantom_stock(env: Env) -> None:
    """Transfer 10, the store receives 8: 8 on hand and 2 in transit; closing writes the 2
    off as lost (recorded with its reason); the channel never sees units that did not
    arrive."""
    c, sku, tid = env.client, env.sku(), f"{env.prefix}-T1"
    env.receive(env.wh, A=10)
    transfer(env, tid, 10)
    body = {"lines": lines(env, A=8)}
    view = created(c.post(f"/v1/transfers/{tid}/receive", json=body, headers=env.idem()), 200)
    assert (view["status"], view["lines"][0]["on_hand"], view["lines"][0]["in_transit"]) == (
        "in_transit",
        8,
        2,
    )
    assert available(c, env.web, sku)["available"] == 8
    with unchanged(c, sku):
        r = c.post(f"/v1/transfers/{tid}/receive", json={"lines": lines(env, A=3)})
        assert_problem(r, 409, "insufficient-stock")
        r = c.post(f"/v1/transfers/{tid}/cancel", headers=env.idem())
        assert_problem(r, 409, "illegal-state")
        r = env.post_without_key(f"/v1/transfers/{tid}/close", json={"reason": "lost"})
        assert_problem(r, 400, "idempotency-key-required")
        r = c.post(f"/v1/transfers/{tid}/close", json={"reason": ""}, headers=env.idem())
        assert_problem(r, 422, field="reason")
    r = c.post(f"/v1/transfers/{tid}/close", json={"reason": "lost"}, headers=env.idem())
    assert created(r, 200)["status"] == "closed"
    st = loc(get_item(c, sku), env.st)
    assert (st["on_hand"], st["in_transit"]) == (8, 0)
    lost = own(history(c, sku), sku)[-1]
    assert (lost["type"], lost["quantity"], lost["reason"]) == ("TransferLost", 2, "lost")


def test_a_transfer_called_off_returns_its_units(env: Env) -> None:
    """Cancel while nothing arrived: the source has its units back, nothing in transit."""
    c, sku, tid = env.client, env.sku(), f"{env.prefix}-T1"
    env.receive(env.wh, A=10)
    transfer(env, tid, 4)
    view = created(c.post(f"/v1/transfers/{tid}/cancel", headers=env.idem()), 200)
    assert view["status"] == "canceled"
    item = get_item(c, sku)
    assert (loc(item, env.wh)["on_hand"], loc(item, env.st)["in_transit"]) == (10, 0)
    assert_problem(c.post(f"/v1/transfers/{env.prefix}-nope/cancel", headers=env.idem()), 404)


def test_incoming_follows_its_purchase_order(env: Env) -> None:
    """PO sent again with a new ETA: incoming stays 10 (not 20); 0 cancels; a naive ETA is
    422 and changes nothing; an ETA with an offset is stored in UTC."""
    c, sku = env.client, env.sku()

    def expect(quantity: int, eta: str | None = "2026-03-01T10:00:00+01:00") -> Any:
        body = {"location": env.wh, "lines": lines(env, A=quantity), "reference": "PO-1"}
        if eta is not None:
            body["eta"] = eta
        return c.post("/v1/incoming", json=body, headers=env.idem())

    created(expect(10))
    created(expect(10, "2026-03-08T09:00:00Z"))
    assert loc(get_item(c, sku), env.wh)["incoming"] == 10
    entries = [e for e in own(history(c, sku), sku) if e["type"] == "IncomingExpected"]
    assert [e["eta"] for e in entries] == ["2026-03-01T09:00:00Z", "2026-03-08T09:00:00Z"]
    with unchanged(c, sku):
        assert_problem(expect(5, "2026-03-08T09:00:00"), 422, field="eta")
    created(expect(0))
    assert loc(get_item(c, sku), env.wh)["incoming"] == 0


def test_the_backorder_limit_bounds_everything_promised(env: Env) -> None:
    """Limit 6 on 10 expected: three backorders of 2, a fourth refused; the 10 arrive and
    cover the 6 promised first: 4 sellable."""
    c, sku, pre = env.client, env.sku(), f"{env.prefix}-pre"
    created(c.put(f"/v1/channels/{pre}", json={"locations": [env.wh], "backorder_limit": 6}), 200)
    body = {"location": env.wh, "lines": lines(env, A=10), "reference": "PO-1"}
    created(c.post("/v1/incoming", json=body, headers=env.idem()))
    for n in range(3):
        created(env.order(f"{env.prefix}-b{n}", channel=pre, A=2))
    with unchanged(c, sku):
        assert_problem(env.order(f"{env.prefix}-b3", channel=pre, A=1), 409, "insufficient-stock")
    receipt = {"location": env.wh, "lines": lines(env, A=10), "reference": "PO-1"}
    created(c.post("/v1/receipts", json=receipt, headers=env.idem()))
    assert available(c, pre, sku)["available"] == 4
    assert loc(get_item(c, sku), env.wh)["incoming"] == 0


def test_a_late_till_sale(env: Env) -> None:
    """A store has 3; a web order takes 2 there; the POS reports its sale of 2 made on a
    stale figure (adjustment -2: 201). The item view shows 1 over-promised with the web
    order named; shipping the 1 unit left to it is 201; sellable stays 0."""
    c, sku, order_id = env.client, env.sku(), f"{env.prefix}-web1"
    created(c.put(f"/v1/channels/{env.web}", json={"locations": [env.st]}), 200)
    env.receive(env.st, A=3)
    created(env.order(order_id, A=2))
    sale = {"location": env.st, "sku": sku, "delta": -2, "reason": "pos sale"}
    created(c.post("/v1/adjustments", json=sale, headers=env.idem()))
    st = loc(get_item(c, sku), env.st)
    assert (st["on_hand"], st["allocated"], st["sellable"]) == (1, 2, 0)
    assert (st["over_promised"], st["uncovered"]) == (1, [{"quantity": 1, "order_id": order_id}])
    created(ship(env, order_id, "s1", env.st, A=1))
    st = loc(get_item(c, sku), env.st)
    assert (st["on_hand"], st["allocated"], st["over_promised"], st["sellable"]) == (0, 1, 1, 0)


def test_owed_units_are_not_sold_twice(env: Env) -> None:
    """3 on hand; a webhook sale of 5 (shortfall 2); receive 2: the sale's 5 are allocated
    (ShortfallFilled in history), available 0, and a new order for 1 is a 409."""
    c, sku, store = env.client, env.sku(), f"{env.prefix}-shop"
    register_store(c, store, env.web)
    env.receive(env.wh, A=3)
    deliver(c, store, 7, **{sku: 5})
    assert item_at_head(c, sku)["shortfall"] == 2
    env.receive(env.wh, A=2)
    item = get_item(c, sku)
    assert item["shortfall"] == 0
    wh = loc(item, env.wh)
    assert (wh["on_hand"], wh["allocated"], wh["sellable"]) == (5, 5, 0)
    assert available(c, env.web, sku)["available"] == 0
    order = created(c.get(f"/v1/orders/woocommerce:{store}:7"), 200)
    assert (order["status"], order["lines"][0]["allocated"]) == ("allocated", 5)
    assert [e["type"] for e in own(history(c, sku), sku)][-1] == "ShortfallFilled"
    with unchanged(c, sku):
        assert_problem(env.order(f"{env.prefix}-o2", A=1), 409, "insufficient-stock")
