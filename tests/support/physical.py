"""Helpers of the end-to-end tests that take orders by WooCommerce webhook (physical facts,
QA findings): a registered WooCommerce store, a signed delivery, an item read at the
ledger's head."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.e2e.route_helpers import (
    created,
)
from tests.support.fakes import webhook_signature

SECRET = "whsec-physical"


def register_store(c: httpx.Client, store: str, channel: str, secret: str = SECRET) -> None:
    """WooCommerce store `store` selling `channel`, its webhooks signed with `secret`."""
    integration = {
        "url": "http://127.0.0.1:9/shop",
        "channel": channel,
        "consumer_key": "ck",
        "consumer_secret": "cs",
        "webhook_secrets": [secret],
    }
    created(c.put(f"/v1/integrations/woocommerce/{store}", json=integration), 200)


def order_payload(woo_id: int, status: str, modified: str, **quantities: int) -> dict[str, Any]:
    """A WooCommerce order as its webhook carries it: id, status, date_modified_gmt and one
    line item per SKU (sku=quantity)."""
    return {
        "id": woo_id,
        "status": status,
        "date_modified_gmt": modified,
        "line_items": [{"sku": sku, "quantity": q} for sku, q in quantities.items()],
    }


def post_webhook(
    c: httpx.Client,
    store: str,
    payload: Any,
    topic: str,
    secret: str = SECRET,
    delivery: str | None = None,
) -> httpx.Response:
    """A WooCommerce delivery of `payload` on `topic` (e.g. "order.updated") to `store`,
    signed with `secret`, with `X-WC-Webhook-Delivery-ID: delivery` when given (applied
    before the answer: no RabbitMQ in these tests)."""
    body = json.dumps(payload).encode()
    headers = {
        "X-WC-Webhook-Signature": webhook_signature(body, secret),
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.split(".")[0],
        "X-WC-Webhook-Event": topic.split(".")[-1],
        "Content-Type": "application/json",
    }
    if delivery is not None:
        headers["X-WC-Webhook-Delivery-ID"] = delivery
    return c.post(f"/v1/webhooks/woocommerce/{store}", content=body, headers=headers)


def deliver(c: httpx.Client, store: str, order_id: int, **quantities: int) -> None:
    """A signed `processing` order webhook (applied before the answer: no RabbitMQ here)."""
    order = order_payload(order_id, "processing", "2026-11-30T00:00:00", **quantities)
    created(post_webhook(c, store, order, "order.created"), 200)


def item_at_head(c: httpx.Client, sku: str) -> dict[str, Any]:
    """The item view including every write so far (a webhook answer carries no position)."""
    head = created(c.get("/ready"), 200)["checks"]["ledger"]["head"]
    return created(c.get(f"/v1/items/{sku}", params={"min_position": head}), 200)
