"""No oversell when physical facts race sales (issue 7 §1f, §2): the same many-process bursts
as test_concurrency.py, against the two-worker service on PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e import test_concurrency
from tests.e2e.test_concurrency import (
    Call,
    describe,
    history_types,
    ok,
    race,
    receive,
    setup_channel,
    statuses,
)
from tests.support.fakes import webhook_signature
from tests.support.server import Server

pytestmark = pytest.mark.e2e
SECRET = "whsec-flash"
pool = test_concurrency.pool  # the module's client processes, shared as a fixture


def item_at_head(client: httpx.Client, sku: str) -> dict[str, Any]:
    head = ok(client.get("/ready"))["checks"]["ledger"]["head"]
    return ok(client.get(f"/v1/items/{sku}", params={"min_position": head}))


def entries(client: httpx.Client, sku: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = ok(client.get(f"/v1/items/{sku}/history", params={"after": after, "limit": 1000}))
        out += [e for e in page["entries"] if e.get("sku") == sku]
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def deliver(client: httpx.Client, store: str, order: dict[str, Any]) -> None:
    body = json.dumps(order).encode()
    headers = {
        "X-WC-Webhook-Signature": webhook_signature(body, SECRET),
        "X-WC-Webhook-Topic": "order.created",
        "Content-Type": "application/json",
    }
    ok(client.post(f"/v1/webhooks/woocommerce/{store}", content=body, headers=headers))


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
        integration = {
            "url": "http://127.0.0.1:9/shop",
            "channel": channel,
            "consumer_key": "ck",
            "consumer_secret": "cs",
            "webhook_secrets": [SECRET],
        }
        ok(admin.put(f"/v1/integrations/woocommerce/{store}", json=integration))
        for n in range(5):
            line = [{"sku": sku, "quantity": 4}]
            order = {"id": n, "status": "processing", "line_items": line}
            deliver(admin, store, {**order, "date_modified_gmt": "2026-11-30T00:00:00"})
        assert item_at_head(admin, sku)["shortfall"] == 10

        receipt = ("/v1/receipts", {"location": location, "lines": [{"sku": sku, "quantity": 5}]})
        calls = rush(unique, channel, sku, 64, {i: receipt for i in (8, 24, 40, 56)})
        results = race(pool, server, calls)

        assert set(statuses(results)) <= {201, 409}, describe(results)
        paths = [path for _, path, _, _ in sorted(calls)]
        receipts = [r for p, r in zip(paths, results, strict=True) if p == "/v1/receipts"]
        assert [r["status"] for r in receipts] == [201] * 4
        sold = sum(
            1
            for p, r in zip(paths, results, strict=True)
            if p == "/v1/orders" and r["status"] == 201
        )
        assert sold <= 10
        item = item_at_head(admin, sku)
        (figures,) = [f for f in item["locations"] if f["location"] == location]
        assert item["shortfall"] == 0
        assert (figures["on_hand"], figures["allocated"]) == (30, 20 + sold)
        assert figures["sellable"] == 10 - sold
        for n in range(5):
            owed = ok(admin.get(f"/v1/orders/woocommerce:{store}:{n}"))
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
