"""Helpers of the physical-facts end-to-end tests: a registered WooCommerce store, a
delivered order webhook, an item read at the ledger's head."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.e2e.route_helpers import (
    created,
)
from tests.support.fakes import webhook_signature

SECRET = "whsec-physical"


def register_store(c: httpx.Client, store: str, channel: str) -> None:
    integration = {
        "url": "http://127.0.0.1:9/shop",
        "channel": channel,
        "consumer_key": "ck",
        "consumer_secret": "cs",
        "webhook_secrets": [SECRET],
    }
    created(c.put(f"/v1/integrations/woocommerce/{store}", json=integration), 200)


def deliver(c: httpx.Client, store: str, order_id: int, **quantities: int) -> None:
    """A signed `processing` order webhook (applied before the answer: no RabbitMQ here)."""
    order = {
        "id": order_id,
        "status": "processing",
        "date_modified_gmt": "2026-11-30T00:00:00",
        "line_items": [{"sku": sku, "quantity": q} for sku, q in quantities.items()],
    }
    body = json.dumps(order).encode()
    headers = {
        "X-WC-Webhook-Signature": webhook_signature(body, SECRET),
        "X-WC-Webhook-Topic": "order.created",
        "Content-Type": "application/json",
    }
    created(c.post(f"/v1/webhooks/woocommerce/{store}", content=body, headers=headers), 200)


def item_at_head(c: httpx.Client, sku: str) -> dict[str, Any]:
    """The item view including every write so far (a webhook answer carries no position)."""
    head = created(c.get("/ready"), 200)["checks"]["ledger"]["head"]
    return created(c.get(f"/v1/items/{sku}", params={"min_position": head}), 200)
