"""WooCommerce order snapshots racing a checkout rush: two API worker processes on
PostgreSQL apply the deliveries in process (no RabbitMQ), so their writers race on the same
SKU and order streams and only optimistic concurrency keeps the ledger right."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from adapters.webhooks import signature
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e
SECRET = "whsec-race"
STOCK = 30
OPEN = ("processing", "on-hold", "completed")


@pytest.fixture(scope="module")
def shop() -> Iterator[Server]:
    with fresh_database() as url:
        env = service_env(url, ATP_ORDER_POLL_SECONDS="0")
        with running_service(env, workers=2) as server:
            with server.client() as c:
                c.put("/v1/locations/WH", json={"name": "Main", "kind": "warehouse"})
                c.put("/v1/channels/woo", json={"locations": ["WH"]}).raise_for_status()
                receipt = {"location": "WH", "lines": [{"sku": "MUG", "quantity": STOCK}]}
                c.post("/v1/receipts", json=receipt, headers={"Idempotency-Key": "r1"})
                store = {
                    "url": "http://127.0.0.1:9/shop",
                    "channel": "woo",
                    "consumer_key": "ck",
                    "consumer_secret": "cs",
                    "webhook_secrets": [SECRET],
                }
                c.put("/v1/integrations/woocommerce/shop", json=store).raise_for_status()
            yield server


def _snapshots(rng: random.Random, oid: int) -> list[dict[str, Any]]:
    """Four states of one order, one second apart: edits, cancels and re-opens."""
    return [
        {
            "id": oid,
            "status": rng.choice((*OPEN, "cancelled", "pending")),
            "date_modified_gmt": f"2026-11-26T10:00:0{second}",
            "line_items": [{"sku": "MUG", "quantity": rng.randint(1, 5)}],
        }
        for second in range(4)
    ]


def test_order_edits_racing_a_checkout_rush_never_oversell(shop: Server) -> None:
    """Story: a flash sale on the storefront (40 checkouts of 1 mug) while admins edit,
    cancel and re-open 10 WooCommerce orders, every delivery sent twice, all at once across
    two API workers. Invariant: each order holds exactly what its newest snapshot demands
    (allocated + shortfall), checkouts hold only units nothing else claims
    (allocated + held <= on_hand = 30), and every successful checkout is held once."""
    rng = random.Random(7)
    snapshots = {oid: _snapshots(rng, oid) for oid in range(9001, 9011)}
    deliveries = [s for states in snapshots.values() for s in states] * 2
    calls: list[tuple[str, Any]] = [("webhook", s) for s in deliveries]
    calls += [("checkout", n) for n in range(40)]
    rng.shuffle(calls)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call(item: tuple[str, Any]) -> tuple[str, int]:
        kind, payload = item
        with httpx.Client(base_url=shop.url, timeout=60) as c:
            if kind == "webhook":
                body = json.dumps(payload).encode()
                headers = {
                    "X-WC-Webhook-Signature": signature(body, SECRET),
                    "X-WC-Webhook-Topic": "order.updated",
                }
                r = c.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
            else:
                hold = {"channel": "woo", "lines": [{"sku": "MUG", "quantity": 1}]}
                headers = {**auth, "Idempotency-Key": f"rush-{payload}"}
                r = c.post("/v1/reservations", json=hold, headers=headers)
            return kind, r.status_code

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, calls))
    assert {s for k, s in results if k == "webhook"} == {200}, results
    assert {s for k, s in results if k == "checkout"} <= {201, 409}, results
    held = sum(1 for k, s in results if k == "checkout" and s == 201)

    shop.catch_up()
    with shop.client() as c:
        demanded = 0
        for oid, states in snapshots.items():
            newest = states[-1]
            wants = newest["line_items"][0]["quantity"] if newest["status"] in OPEN else 0
            demanded += wants
            r = c.get(f"/v1/orders/woocommerce:shop:{oid}")
            lines = r.json().get("lines", []) if r.status_code == 200 else []
            holds = sum(x["quantity"] - x["canceled"] - x["shipped"] for x in lines)
            assert holds == wants, (oid, newest, r.json())
        item = c.get("/v1/items/MUG").json()
    wh = item["locations"][0]
    assert wh["on_hand"] == STOCK
    assert wh["allocated"] + item["shortfall"] == demanded
    assert wh["held"] == held
    assert wh["allocated"] + wh["held"] <= STOCK
