"""WooCommerce order webhooks, end to end: the fake store signs and delivers them, atp
verifies, queues (RabbitMQ, consumed by `atp webhooks`) or applies them (embedded), and the
ledger ends up with exactly one effect per order state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.amqp import fresh_vhost
from tests.support.fakes import FakeWooCommerce
from tests.support.pg import fresh_database
from tests.support.server import Server, running_service, service_env

pytestmark = pytest.mark.integration
SECRET, OLD_SECRET = "whsec-current", "whsec-previous"


@pytest.fixture(params=["rabbitmq", "embedded"])
def shop(request: pytest.FixtureRequest) -> Iterator[tuple[Server, FakeWooCommerce]]:
    with fresh_database() as url:
        if request.param == "embedded":
            with running_service(service_env(url)) as server:
                yield from _with_store(server)
            return
        with fresh_vhost() as amqp:
            env = service_env(url, ATP_AMQP_URL=amqp)
            with running_service(env) as server:
                consumer = subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "webhooks"], env=env, start_new_session=True
                )
                try:
                    yield from _with_store(server)
                finally:
                    os.killpg(consumer.pid, signal.SIGTERM)
                    consumer.wait(timeout=15)


def _with_store(server: Server) -> Iterator[tuple[Server, FakeWooCommerce]]:
    with server.client() as c:
        c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"}).raise_for_status()
        c.put("/v1/channels/web", json={"locations": ["WH1"]}).raise_for_status()
        lines = [{"sku": "TEE", "quantity": 5}, {"sku": "CAP", "quantity": 1}]
        c.post("/v1/receipts", json={"location": "WH1", "lines": lines}).raise_for_status()
        integration = {
            "url": "http://127.0.0.1:9/shop",
            "channel": "web",
            "consumer_key": "ck",
            "consumer_secret": "cs",
            "webhook_secrets": [SECRET, OLD_SECRET],
        }
        c.put("/v1/integrations/woocommerce/shop", json=integration).raise_for_status()
    with FakeWooCommerce(
        webhook_url=f"{server.url}/v1/webhooks/woocommerce/shop", order_webhook_secret=SECRET
    ) as woo:
        yield server, woo


def order(oid: int, status: str, modified: str, **lines: int) -> dict[str, Any]:
    return {
        "id": oid,
        "status": status,
        "date_modified_gmt": modified,
        "line_items": [{"sku": sku, "quantity": q} for sku, q in lines.items()],
    }


def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def held_and_allocated(server: Server, sku: str) -> tuple[int, int]:
    server.catch_up()
    with server.client() as c:
        loc = c.get(f"/v1/items/{sku}").json()["locations"][0]
    return loc["allocated"], loc["held"]


def test_signatures_ping_and_unknown_store(shop: tuple[Server, FakeWooCommerce]) -> None:
    server, woo = shop
    assert woo.send_ping(7).status == 200
    bad = woo.send_order_webhook(
        order(1, "processing", "2026-11-26T10:00:00", TEE=1), signature="AAAA"
    )
    assert bad.status == 401
    forged = woo.send_order_webhook(
        order(2, "processing", "2026-11-26T10:00:00", TEE=1), secret="not-ours"
    )
    assert forged.status == 401
    with httpx.Client(base_url=server.url) as raw:
        unsigned = raw.post("/v1/webhooks/woocommerce/shop", content=b'{"id": 3}')
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"].startswith("application/problem+json")
        assert raw.post("/v1/webhooks/woocommerce/nope", content=b"webhook_id=1").status_code == 404
    previous = woo.send_order_webhook(
        order(4, "processing", "2026-11-26T10:00:00", TEE=1), secret=OLD_SECRET
    )
    assert previous.status in (200, 202)  # rotated secrets: the previous one still works
    eventually(lambda: _assert(held_and_allocated(server, "TEE") == (1, 0)))
    with server.client() as c:
        for oid in (1, 2, 3):  # nothing recorded for the rejected deliveries
            assert c.get(f"/v1/orders/woocommerce:shop:{oid}").status_code == 404


def test_order_states_apply_once_in_order(shop: tuple[Server, FakeWooCommerce]) -> None:
    server, woo = shop
    oid = "woocommerce:shop:100"
    # Drafts and pending payments are not sales.
    woo.send_order_webhook(order(100, "checkout-draft", "2026-11-26T10:00:00", TEE=2))
    woo.send_order_webhook(order(100, "pending", "2026-11-26T10:00:01", TEE=2))
    # The sale, delivered twice (WooCommerce and its hosts do that).
    sale = order(100, "processing", "2026-11-26T10:00:02", TEE=2)
    woo.send_order_webhook(sale)
    woo.send_order_webhook(sale)
    eventually(lambda: _assert(held_and_allocated(server, "TEE") == (2, 0)))
    with server.client() as c:
        assert c.get(f"/v1/orders/{oid}").json()["status"] == "allocated"
    # Cancelled, then a late copy of the older "processing" snapshot: stays canceled.
    woo.send_order_webhook(order(100, "cancelled", "2026-11-26T10:05:00", TEE=2))
    woo.send_order_webhook(sale)
    eventually(lambda: _assert(held_and_allocated(server, "TEE") == (0, 0)))
    time.sleep(0.5)
    assert held_and_allocated(server, "TEE") == (0, 0)
    with server.client() as c:
        assert c.get(f"/v1/orders/{oid}").json()["status"] == "canceled"
        history = c.get("/v1/items/TEE/history").json()["entries"]
    assert [e["type"] for e in history].count("StockAllocated") == 1


def test_refunds_restock_and_shortfalls_are_recorded(shop: tuple[Server, FakeWooCommerce]) -> None:
    server, woo = shop
    # More than atp can cover: a sale already made is never refused; the rest is a shortfall.
    woo.send_order_webhook(order(200, "processing", "2026-11-26T11:00:00", CAP=3))
    # A line without a SKU is reported, never guessed.
    woo.send_order_webhook(
        {
            "id": 201,
            "status": "on-hold",
            "date_modified_gmt": "2026-11-26T11:00:00",
            "line_items": [{"sku": "TEE", "quantity": 1}, {"name": "Gift wrap", "quantity": 1}],
        }
    )

    def accepted() -> None:
        server.catch_up()
        with server.client() as c:
            short = c.get("/v1/orders/woocommerce:shop:200").json()
            assert short["status"] == "accepted", short
            assert short["lines"] == [
                {
                    "sku": "CAP",
                    "quantity": 3,
                    "allocated": 1,
                    "shipped": 0,
                    "returned": 0,
                    "canceled": 0,
                }
            ]
            assert c.get("/v1/items/CAP").json()["shortfall"] == 2
            hold = c.get("/v1/orders/woocommerce:shop:201").json()
            assert [line["sku"] for line in hold["lines"]] == ["TEE"]

    eventually(accepted)
    woo.send_order_webhook(order(200, "refunded", "2026-11-26T12:00:00", CAP=3))

    def refunded() -> None:
        server.catch_up()
        with server.client() as c:
            assert c.get("/v1/orders/woocommerce:shop:200").json()["status"] == "canceled"
            item = c.get("/v1/items/CAP").json()
            assert item["shortfall"] == 0
            assert item["locations"][0]["allocated"] == 0

    eventually(refunded)


def _assert(condition: bool) -> None:
    assert condition
