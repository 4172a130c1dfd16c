"""WooCommerce order webhooks, end to end: the fake store signs and delivers them, atp
verifies, queues (RabbitMQ, consumed by `atp webhooks`) or applies them (embedded), and the
ledger ends up with exactly one effect per order state."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.webhooks import signature
from adapters.woo_orders import StoreUnreachable, WooOrders
from tests.support.amqp import fresh_vhost
from tests.support.fakes import FakeWooCommerce
from tests.support.pg import fresh_database
from tests.support.redis_db import prefixed, redis_url
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
            assert short.get("status") == "accepted", short
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
            assert [line["sku"] for line in hold.get("lines", [])] == ["TEE"], hold

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


# --- each delivery is the desired state of the order (issue 7 §1) ---------------------------


def available(server: Server, sku: str) -> int:
    server.catch_up()
    with server.client() as c:
        figure: int = c.get(f"/v1/availability/web/{sku}").json()["available"]
    return figure


def test_deliveries_converge_the_order_to_its_state(shop: tuple[Server, FakeWooCommerce]) -> None:
    """Stories from WooCommerce bug reports: a checkout that moves pending -> processing
    within one second, an admin editing an order, a cancelled sale re-opened. Invariant:
    the order holds exactly what its last applied snapshot demands: TEE 5 -> 3 available
    (same second), CAP 0 after the edit adds it, TEE back to 5 on cancel, 3 on re-open."""
    server, woo = shop
    woo.send_order_webhook(order(5001, "pending", "2026-11-26T10:00:00", TEE=2))
    woo.send_order_webhook(order(5001, "processing", "2026-11-26T10:00:00", TEE=2))
    eventually(lambda: _assert(available(server, "TEE") == 3))
    woo.send_order_webhook(order(5001, "on-hold", "2026-11-26T10:00:05", TEE=1, CAP=1))
    eventually(lambda: _assert((available(server, "TEE"), available(server, "CAP")) == (4, 0)))
    with server.client() as c:
        lines = c.get("/v1/orders/woocommerce:shop:5001").json()["lines"]
    assert {x["sku"]: x["quantity"] for x in lines} == {"TEE": 1, "CAP": 1}
    woo.send_order_webhook(order(5001, "cancelled", "2026-11-26T10:01:00", TEE=1, CAP=1))
    eventually(lambda: _assert((available(server, "TEE"), available(server, "CAP")) == (5, 1)))
    woo.send_order_webhook(order(5001, "completed", "2026-11-26T10:02:00", TEE=2))
    eventually(lambda: _assert((available(server, "TEE"), available(server, "CAP")) == (3, 1)))
    with server.client() as c:
        assert c.get("/v1/orders/woocommerce:shop:5001").json()["status"] == "allocated"


@pytest.fixture
def embedded_shop() -> Iterator[tuple[Server, FakeWooCommerce]]:
    """The embedded service with store `shop` pointing at a fake WooCommerce (its REST API
    answers refunds and order lists with the registered keys)."""
    yield from _embedded_shop()


@pytest.fixture
def polled_shop() -> Iterator[tuple[Server, FakeWooCommerce]]:
    """As embedded_shop, with the store's orders polled every second."""
    yield from _embedded_shop(ATP_ORDER_POLL_SECONDS="1")


def _embedded_shop(**env: str) -> Iterator[tuple[Server, FakeWooCommerce]]:
    with (
        fresh_database() as url,
        running_service(service_env(url, **env)) as server,
        FakeWooCommerce(
            "ck_shop",
            "cs_shop",
            auth="oauth1",
            webhook_url=f"{server.url}/v1/webhooks/woocommerce/shop",
            order_webhook_secret=SECRET,
        ) as woo,
    ):
        _register(server, woo, TEE=5, CAP=1)
        yield server, woo


def _register(server: Server, woo: FakeWooCommerce, **received: int) -> None:
    """Location WH1, channel web, the units received there, and store `shop` pointing at the
    fake with its API key and the webhook secret."""
    with server.client() as c:
        c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"})
        c.put("/v1/channels/web", json={"locations": ["WH1"]}).raise_for_status()
        lines = [{"sku": sku, "quantity": q} for sku, q in received.items()]
        c.post("/v1/receipts", json={"location": "WH1", "lines": lines}).raise_for_status()
        integration = {
            "url": woo.url,
            "channel": "web",
            "consumer_key": "ck_shop",
            "consumer_secret": "cs_shop",
            "webhook_secrets": [SECRET],
        }
        c.put("/v1/integrations/woocommerce/shop", json=integration).raise_for_status()


def test_an_applied_delivery_answers_with_its_position(
    embedded_shop: tuple[Server, FakeWooCommerce],
) -> None:
    """Story: a storefront reads the figure right after its webhook was applied. Invariant:
    reading at the answered ATP-Position shows the order's 2 units held (3 available)."""
    server, _ = embedded_shop
    body = json.dumps(order(10, "processing", "2026-11-26T10:00:00", TEE=2)).encode()
    headers = {
        "X-WC-Webhook-Signature": signature(body, SECRET),
        "X-WC-Webhook-Topic": "order.updated",
    }
    with httpx.Client(base_url=server.url) as raw:
        delivery = raw.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
        assert delivery.status_code == 200
        position = delivery.headers["atp-position"]
        with server.client() as c:
            read = c.get("/v1/availability/web/TEE", params={"min_position": position})
        assert read.json()["available"] == 3
        again = raw.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
    assert again.json() == {
        "status": "unchanged",
        "reason": "the same state as the last applied snapshot",
    }
    assert available(server, "TEE") == 3


def test_unmapped_lines_are_shown_on_the_order_and_counted(
    shop: tuple[Server, FakeWooCommerce],
) -> None:
    """Story: an order with a normal line and lines whose SKU atp cannot take (German
    umlaut and space, a full-width ampersand, a list) or whose quantity is 1.5 or 10^30.
    Invariant: TEE holds its 2 units, the odd lines are listed on the order with reasons,
    counted in /metrics, and never become items."""
    server, woo = shop
    items = [
        {"sku": "TEE", "quantity": 2},
        {"sku": "Tasse Grün", "quantity": 1},
        {"sku": "A\uff06B", "quantity": 1},
        {"sku": ["A"], "quantity": 1},
        {"sku": "CAP", "quantity": 1.5},
        {"sku": "CAP", "quantity": 10**30},
    ]
    body = {"id": 20, "status": "processing", "line_items": items}
    assert woo.send_order_webhook(body).status in (200, 202)
    eventually(lambda: _assert(available(server, "TEE") == 3))
    assert available(server, "CAP") == 1
    with server.client() as c:
        view = eventually(lambda: _unmapped(c.get("/v1/orders/woocommerce:shop:20").json()))
        assert [x["sku"] for x in view["lines"]] == ["TEE"]
        assert [u["line"] for u in view["unmapped"]] == [1, 2, 3, 4, 5]
        assert view["unmapped"][0] == {
            "line": 1,
            "reason": "the SKU does not match the code pattern",
            "sku": "Tasse Grün",
        }
        assert c.get("/v1/items/Tasse%20Gr%C3%BCn").status_code == 404
        metrics = c.get("/metrics").text
    assert 'atp_webhook_unmapped_lines_total{store="shop",source="webhook"} 5' in metrics


def _unmapped(view: dict[str, Any]) -> dict[str, Any]:
    assert view.get("unmapped"), view
    return view


@pytest.mark.parametrize(
    "body",
    [
        b"[1,2]",
        b'"x"',
        b'{"id":1,"status":"processing","line_items":{"a":1}}',
        b'{"id":2,"status":"processing","line_items":[null]}',
        b'{"id":3,"status":"processing","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_a_signed_body_that_is_not_an_order_is_422(
    embedded_shop: tuple[Server, FakeWooCommerce], body: bytes
) -> None:
    """Invariant: a 422 problem, nothing recorded (no order), stock unchanged."""
    server, _ = embedded_shop
    headers = {
        "X-WC-Webhook-Signature": signature(body, SECRET),
        "X-WC-Webhook-Topic": "order.updated",
    }
    with httpx.Client(base_url=server.url) as raw:
        answer = raw.post("/v1/webhooks/woocommerce/shop", content=body, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        bad_signature = raw.post(
            "/v1/webhooks/woocommerce/shop",
            content=b'{"id": 1}',
            headers={"X-WC-Webhook-Signature": b"\xc3\xa9t\xc3\xa9"},  # type: ignore[dict-item]
        )
        assert bad_signature.status_code == 401
    with server.client() as c:
        for oid in (1, 2, 3):
            assert c.get(f"/v1/orders/woocommerce:shop:{oid}").status_code == 404
    assert available(server, "TEE") == 5


def test_a_partial_refund_releases_the_refunded_units(
    embedded_shop: tuple[Server, FakeWooCommerce],
) -> None:
    """Story: 4 x TEE processing, then one unit refunded: WooCommerce keeps the status and
    the line quantities and only lists the refund. Invariant: atp fetches the refund from
    the store and holds 3 (2 available), and a later snapshot with the same refund keeps 3."""
    server, woo = embedded_shop
    placed = woo.save_order(order(30, "processing", "2026-11-26T10:00:00", TEE=4))
    woo.send_order_webhook(placed)
    assert available(server, "TEE") == 1
    refunded = woo.refund_order(30, "2026-11-26T10:05:00", reason="damaged in transit", TEE=1)
    assert refunded["refunds"] and refunded["line_items"][0]["quantity"] == 4
    assert woo.send_order_webhook(refunded).status == 200
    assert available(server, "TEE") == 2
    later = {**refunded, "date_modified_gmt": "2026-11-26T11:00:00", "customer_note": "thanks"}
    woo.send_order_webhook(later)
    assert available(server, "TEE") == 2
    with server.client() as c:
        line = c.get("/v1/orders/woocommerce:shop:30").json()["lines"][0]
    assert (line["quantity"], line["allocated"]) == (3, 3)


def test_lost_webhooks_are_caught_up_by_polling(
    polled_shop: tuple[Server, FakeWooCommerce],
) -> None:
    """Story: the store's order webhooks stop arriving (WooCommerce never retries and
    disables a webhook after 5 failures) while orders are placed, edited and cancelled.
    Invariant: polling the store's orders modified since the last applied one brings atp to
    the same figures as if every webhook had arrived (TEE 5 - 1 = 4, CAP 1 - 1 = 0, then
    CAP back to 1), and a store whose changes only polling finds is flagged."""
    server, woo = polled_shop

    def at(seconds_ago: int) -> str:
        moment = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds_ago)
        return moment.replace(microsecond=0).isoformat()

    woo.send_order_webhook(woo.save_order(order(40, "processing", at(60), TEE=2)))
    assert available(server, "TEE") == 3
    # From here on the webhooks are lost: the store only records the changes.
    woo.save_order(order(40, "processing", at(50), TEE=1))
    woo.save_order(order(41, "on-hold", at(40), CAP=1))
    eventually(lambda: _assert((available(server, "TEE"), available(server, "CAP")) == (4, 0)))
    with server.client() as c:
        lines = c.get("/v1/orders/woocommerce:shop:40").json()["lines"]
        assert {x["sku"]: x["quantity"] for x in lines} == {"TEE": 1}
    woo.save_order(order(41, "cancelled", at(0), CAP=1))
    eventually(lambda: _assert(available(server, "CAP") == 1))

    def flagged() -> None:
        with server.client() as c:
            metrics = c.get("/metrics").text
        assert 'atp_webhook_quiet{store="shop"} 1' in metrics, metrics

    eventually(flagged)
    with server.client() as c:
        history = c.get("/v1/items/TEE/history").json()["entries"]
    assert [e["type"] for e in history].count("AllocationReleased") == 1
    # The store's webhooks work again: the flag clears.
    woo.send_order_webhook(woo.save_order(order(42, "processing", at(0), TEE=1)))
    with server.client() as c:
        assert 'atp_webhook_quiet{store="shop"} 0' in c.get("/metrics").text


def test_order_listing_follows_the_stores_pages() -> None:
    """The store lists at most 100 orders a page (X-WP-TotalPages says how many): atp reads
    every page, oldest change first, and only orders modified strictly after the time."""
    with FakeWooCommerce("ck_shop", "cs_shop", auth="oauth1") as woo:
        for n in range(1, 151):
            woo.save_order(order(n, "processing", f"2026-11-26T10:{n // 60:02}:{n % 60:02}", TEE=1))
        client = WooOrders(woo.url, "ck_shop", "cs_shop")

        async def listing() -> list[dict[str, Any]]:
            try:
                return await client.modified_after("2026-11-26T10:00:10")
            finally:
                await client.aclose()

        orders = asyncio.run(listing())
    assert [o["id"] for o in orders] == list(range(11, 151))
    pages = [r for r in woo.requests() if r.path.endswith("/orders")]
    assert len(pages) == 2


def test_atp_webhooks_catches_up_lost_orders_and_reports_it(tmp_path: Any) -> None:
    """Story: RabbitMQ deployment; the store's order webhooks stop arriving while an order
    is edited and another placed and then cancelled. Invariant: `atp webhooks` polls the
    store and the orders end as the store has them (order 40: 1 x TEE; order 41: canceled),
    and the API's /metrics shows the store flagged (reported through Redis)."""
    with (
        fresh_database() as url,
        fresh_vhost() as amqp,
        prefixed(0, "wh") as (_, prefix),
        FakeWooCommerce("ck_shop", "cs_shop", auth="oauth1") as woo,
    ):
        env = service_env(
            url,
            ATP_AMQP_URL=amqp,
            ATP_REDIS_URL=redis_url(0),
            ATP_REDIS_PREFIX=prefix,
            ATP_ORDER_POLL_SECONDS="1",
        )
        with running_service(env) as server:
            woo.configure_webhook(None)
            woo.webhook_url = f"{server.url}/v1/webhooks/woocommerce/shop"
            woo.order_webhook_secret = SECRET
            _register(server, woo, TEE=5)
            log = (tmp_path / "webhooks.log").open("wb")
            consumer = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "webhooks"],
                env=env,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                # A product webhook is read for its echo (with Redis): a body nested deeply
                # is not a product, not a server error.
                deep = b"[" * 100_000 + b"]" * 100_000
                product = {
                    "X-WC-Webhook-Signature": signature(deep, SECRET),
                    "X-WC-Webhook-Topic": "product.updated",
                }
                with httpx.Client(base_url=server.url) as raw:
                    answer = raw.post(
                        "/v1/webhooks/woocommerce/shop", content=deep, headers=product
                    )
                assert answer.status_code == 200, answer.text
                _catch_up_story(server, woo)
            finally:
                os.killpg(consumer.pid, signal.SIGTERM)
                consumer.wait(timeout=15)
                log.close()


def _catch_up_story(server: Server, woo: FakeWooCommerce) -> None:
    def at(seconds_ago: int) -> str:
        moment = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds_ago)
        return moment.replace(microsecond=0).isoformat()

    def lines(oid: int) -> dict[str, int]:
        with server.client() as c:
            view = c.get(f"/v1/orders/woocommerce:shop:{oid}").json()
        return {x["sku"]: x["quantity"] - x["canceled"] for x in view.get("lines", [])}

    woo.send_order_webhook(woo.save_order(order(40, "processing", at(60), TEE=2)))
    eventually(lambda: _assert(lines(40) == {"TEE": 2}))
    woo.save_order(order(40, "processing", at(50), TEE=1))  # lost
    woo.save_order(order(41, "on-hold", at(40), TEE=3))  # lost
    eventually(lambda: _assert((lines(40), lines(41)) == ({"TEE": 1}, {"TEE": 3})))
    woo.save_order(order(41, "cancelled", at(0), TEE=3))  # lost
    eventually(lambda: _assert(lines(41) == {"TEE": 0}))

    def flagged() -> None:
        with server.client() as c:
            metrics = c.get("/metrics").text
        assert 'atp_webhook_quiet{store="shop"} 1' in metrics

    eventually(flagged, timeout=20)


def test_the_fake_store_serves_refunds_as_woocommerce_does() -> None:
    """GET /orders/<id>/refunds: newest first, line items with negative quantities; an
    unknown order is 400 woocommerce_rest_order_invalid_id; no credentials: 401."""
    with FakeWooCommerce("ck_shop", "cs_shop", auth="oauth1") as woo:
        woo.save_order(order(7, "processing", "2026-11-26T10:00:00", TEE=4, CAP=1))
        woo.refund_order(7, "2026-11-26T10:01:00", TEE=1)
        after = woo.refund_order(7, "2026-11-26T10:02:00", TEE=2, CAP=1)
        assert [r["id"] for r in after["refunds"]] == [9000, 9001]
        assert after["status"] == "processing" and after["line_items"][0]["quantity"] == 4
        client = WooOrders(woo.url, "ck_shop", "cs_shop")

        async def read() -> tuple[list[dict[str, Any]], str]:
            try:
                refunds = await client.refunds(7)
                try:
                    await client.refunds(8)
                except StoreUnreachable as e:
                    return refunds, str(e)
                raise AssertionError("order 8 does not exist")
            finally:
                await client.aclose()

        refunds, missing = asyncio.run(read())
        assert [[(x["sku"], x["quantity"]) for x in r["line_items"]] for r in refunds] == [
            [("TEE", -2), ("CAP", -1)],
            [("TEE", -1)],
        ]
        assert "HTTP 400" in missing
        assert httpx.get(f"{woo.url}/wp-json/wc/v3/orders/7/refunds").status_code == 401


def test_issue_7_cases_a_b_c_over_http(embedded_shop: tuple[Server, FakeWooCommerce]) -> None:
    """Issue 7 §1 a, b, c as filed (10 units of each SKU received), over signed deliveries.
    Invariants: a) pending then processing in one second: allocated 2, available 8;
    b) on-hold 1 x A edited to 2 x A + 1 x B: A 8, B 9, order lines {A: 2, B: 1};
    c) processing, cancelled, cancelled, completed, cancelled: available 5, 10, 10, 5, 10."""
    server, woo = embedded_shop
    with server.client() as c:
        lines = [{"sku": "A", "quantity": 10}, {"sku": "B", "quantity": 10}]
        c.post("/v1/receipts", json={"location": "WH1", "lines": lines}).raise_for_status()
    woo.send_order_webhook(order(5001, "pending", "2026-11-26T10:00:00", A=2))
    woo.send_order_webhook(order(5001, "processing", "2026-11-26T10:00:00", A=2))
    assert held_and_allocated(server, "A") == (2, 0)
    assert available(server, "A") == 8
    woo.send_order_webhook(order(5001, "cancelled", "2026-11-26T10:00:01", A=2))

    woo.send_order_webhook(order(6001, "on-hold", "2026-11-26T10:00:00", A=1))
    woo.send_order_webhook(order(6001, "on-hold", "2026-11-26T10:00:09", A=2, B=1))
    assert (available(server, "A"), available(server, "B")) == (8, 9)
    with server.client() as c:
        view = c.get("/v1/orders/woocommerce:shop:6001").json()
    assert {x["sku"]: x["quantity"] for x in view["lines"]} == {"A": 2, "B": 1}
    woo.send_order_webhook(order(6001, "cancelled", "2026-11-26T10:00:10", A=2, B=1))

    seen = []
    for second, status in enumerate(
        ("processing", "cancelled", "cancelled", "completed", "cancelled")
    ):
        woo.send_order_webhook(order(7001, status, f"2026-11-26T10:00:0{second}", A=5))
        seen.append(available(server, "A"))
    assert seen == [5, 10, 10, 5, 10]
