"""No oversell when physical facts race sales (issue 7 §1f, §2): the same many-process bursts
as test_concurrency.py, against the two-worker service on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.concurrency import (
    Call,
    describe,
    history_types,
    ok,
    pool,
    race,
    receive,
    setup_channel,
    statuses,
)
from tests.support.physical import deliver, item_at_head, register_store
from tests.support.server import Server

pytestmark = pytest.mark.e2e
__all__ = ["pool"]  # the client processes fixture (tests.support.concurrency)


def entries(client: httpx.Client, sku: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = ok(client.get(f"/v1/items/{sku}/history", params={"after": after, "limit": 1000}))
        out += [e for e in page["entries"] if e.get("sku") == sku]
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def rush(
    unique: str, channel: str, sku: str, total: int, facts: dict[int, tuple[str, dict[str, Any]]]
) -> list[Call]:
    """`total` one-unit orders of `sku`, with the physical facts (path, body) at their index."""
    calls: list[Call] = []
    for i in range(total):
        if i in facts:
            path, body = facts[i]
        else:
            line = [{"sku": sku, "quantity": 1}]
            path, body = (
                "/v1/orders",
                {"order_id": f"{unique}-o{i}", "channel": channel, "lines": line},
            )
        calls.append((i, path, body, f"{unique}-k{i}"))
    return calls


def outcome(calls: list[Call], results: list[dict]) -> tuple[list[dict], int]:
    """The facts' results, and how many of the rush's orders were accepted; every answer
    is a 201 or a 409."""
    assert set(statuses(results)) <= {201, 409}, describe(results)
    paths = [path for _, path, _, _ in sorted(calls)]
    facts = [r for p, r in zip(paths, results, strict=True) if p != "/v1/orders"]
    sold = sum(
        1 for p, r in zip(paths, results, strict=True) if p == "/v1/orders" and r["status"] == 201
    )
    return facts, sold


def test_receipts_racing_a_flash_sale_fill_owed_webhook_sales_first(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """10 on hand, five webhook sales of 4 (10 owed). During a rush of 60 one-unit orders,
    four receipts of 5 arrive. Owed units are never sold twice: every owed unit ends up
    allocated to its sale, the rush takes at most the 10 that were never owed, and
    allocated + sellable equals on hand."""
    sku, store = f"{unique}-OWED", f"{unique}-shop"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 10})
        register_store(admin, store, channel)
        for n in range(5):
            deliver(admin, store, n + 1, **{sku: 4})
        assert item_at_head(admin, sku)["shortfall"] == 10

        receipt = ("/v1/receipts", {"location": location, "lines": [{"sku": sku, "quantity": 5}]})
        calls = rush(unique, channel, sku, 64, {i: receipt for i in (8, 24, 40, 56)})
        results = race(pool, server, calls)

        receipts, sold = outcome(calls, results)
        assert [r["status"] for r in receipts] == [201] * 4
        assert sold <= 10
        item = item_at_head(admin, sku)
        (figures,) = [f for f in item["locations"] if f["location"] == location]
        assert item["shortfall"] == 0
        assert (figures["on_hand"], figures["allocated"]) == (30, 20 + sold)
        assert figures["sellable"] == 10 - sold
        for n in range(5):
            owed = ok(admin.get(f"/v1/orders/woocommerce:{store}:{n + 1}"))
            assert (owed["status"], owed["lines"][0]["allocated"]) == ("allocated", 4)
        assert history_types(admin, sku)["ShortfallFilled"] >= 3


def test_a_count_during_a_flash_sale_sells_nothing_the_shelf_lacks(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """40 received; 80 one-unit orders race a cycle count that finds 25. Orders decided
    after the count take at most what the count left unclaimed; if the count left the
    location over-promised it is recorded with the exact units, and the final figures
    agree: over_promised = max(0, allocated - 25), sellable = max(0, 25 - allocated)."""
    sku = f"{unique}-CNT"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 40})
        count = ("/v1/counts", {"location": location, "lines": [{"sku": sku, "counted": 25}]})
        results = race(pool, server, rush(unique, channel, sku, 81, {40: count}))

        assert set(statuses(results)) <= {201, 409}, describe(results)
        sold = sum(1 for r in results if r["status"] == 201) - 1  # less the count
        history = entries(admin, sku)
        (counted,) = [e for e in history if e["type"] == "StockCounted"]
        allocations = [e for e in history if e["type"] == "StockAllocated"]
        before = sum(1 for e in allocations if e["position"] < counted["position"])
        after = len(allocations) - before
        assert before + after == sold
        assert after <= max(0, 25 - before), (before, after)
        over = [e for e in history if e["type"] == "OverPromised"]
        assert [e["quantity"] for e in over] == ([before - 25] if before > 25 else [])
        item = item_at_head(admin, sku)
        (figures,) = [f for f in item["locations"] if f["location"] == location]
        assert (figures["on_hand"], figures["allocated"]) == (25, sold)
        assert figures.get("over_promised", 0) == max(0, sold - 25)
        assert figures["sellable"] == max(0, 25 - sold)


def test_split_shipments_racing_a_rush_never_free_units_twice(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """WH1 and WH2 hold 20 each; ten orders of 2 are allocated at WH1. While 40 one-unit
    orders rush in (taking WH2's free units), the WMS ships all ten orders from WH2. Each
    shipment moves its order's allocation to WH2 and hands the units it took from rush
    orders back to them at WH1, so the rush sells at most the 20 units that were ever
    free, no location ends over-promised, and allocated + sellable = on hand."""
    sku = f"{unique}-SPLIT"
    with server.client() as admin:
        wh1, wh2, channel = f"{unique}-WH1", f"{unique}-WH2", f"{unique}-WEB"
        for code in (wh1, wh2):
            ok(admin.put(f"/v1/locations/{code}", json={"name": code, "kind": "warehouse"}))
            receive(admin, code, {sku: 20})
        ok(admin.put(f"/v1/channels/{channel}", json={"locations": [wh1, wh2]}))
        first = [f"{unique}-first{n}" for n in range(10)]
        for order_id in first:
            line = [{"sku": sku, "quantity": 2}]
            body = {"order_id": order_id, "channel": channel, "lines": line}
            ok(admin.post("/v1/orders", json=body, headers={"Idempotency-Key": order_id}), 201)
        facts = {
            5 * n: (
                f"/v1/orders/{order_id}/shipments",
                {"shipment_id": "s1", "location": wh2, "lines": [{"sku": sku, "quantity": 2}]},
            )
            for n, order_id in enumerate(first)
        }
        calls = rush(unique, channel, sku, 50, facts)
        results = race(pool, server, calls)

        shipments, sold = outcome(calls, results)
        assert [r["status"] for r in shipments] == [201] * 10
        assert sold <= 20
        item = item_at_head(admin, sku)
        figures = [f for f in item["locations"] if f["location"] in (wh1, wh2)]
        assert sum(f["on_hand"] for f in figures) == 20
        assert sum(f["allocated"] for f in figures) == sold
        assert all(f.get("over_promised", 0) == 0 for f in figures), figures
        assert sum(f["sellable"] for f in figures) == 20 - sold
        for order_id in first:
            assert ok(admin.get(f"/v1/orders/{order_id}"))["status"] == "shipped"


def test_cancellations_racing_a_rush_fill_owed_webhook_sales_first(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """10 on hand, all allocated to five orders of 2; three webhook sales of 4 are then owed
    12. During a rush of 60 one-unit orders the five orders are cancelled. Invariant: units
    freed while sales are owed fill those sales first (oldest first), so the rush sells
    none of them: the owed sales end with 10 allocated and 2 still owed, the rush sells 0,
    and nothing is sellable."""
    sku, store = f"{unique}-FREED", f"{unique}-shop"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 10})
        register_store(admin, store, channel)
        first = [f"{unique}-first{n}" for n in range(5)]
        for order_id in first:
            line = [{"sku": sku, "quantity": 2}]
            body = {"order_id": order_id, "channel": channel, "lines": line}
            ok(admin.post("/v1/orders", json=body, headers={"Idempotency-Key": order_id}), 201)
        for n in range(3):
            deliver(admin, store, n + 1, **{sku: 4})
        assert item_at_head(admin, sku)["shortfall"] == 12

        facts = {
            12 * n + 5: (f"/v1/orders/{order_id}/cancel", {}) for n, order_id in enumerate(first)
        }
        calls = rush(unique, channel, sku, 65, facts)
        results = race(pool, server, calls)

        paths = [path for _, path, _, _ in sorted(calls)]
        by_path = list(zip(paths, results, strict=True))
        assert [r["status"] for p, r in by_path if p.endswith("/cancel")] == [200] * 5
        rush_statuses = {r["status"] for p, r in by_path if p == "/v1/orders"}
        assert rush_statuses <= {201, 409}, describe(results)
        sold = sum(1 for p, r in by_path if p == "/v1/orders" and r["status"] == 201)
        assert sold == 0
        item = item_at_head(admin, sku)
        (figures,) = [f for f in item["locations"] if f["location"] == location]
        assert item["shortfall"] == 2
        assert (figures["on_hand"], figures["allocated"], figures["sellable"]) == (10, 10, 0)
        allocated = [
            ok(admin.get(f"/v1/orders/woocommerce:{store}:{n}"))["lines"][0]["allocated"]
            for n in range(1, 4)
        ]
        assert allocated == [4, 4, 2]
        assert history_types(admin, sku)["ShortfallFilled"] >= 3
