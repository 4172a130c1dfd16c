"""WooCommerce webhooks: verified on the raw body, queued durably, answered fast.

No bearer token: the HMAC signature (current or previous secret) authenticates a delivery.
A bad or missing signature is 401 and nothing is recorded; a signed body that is not an
order is 422 (413 past the line limit), nothing recorded or queued. Accepted order deliveries go to
the durable queue `atp.webhooks.woocommerce` (RabbitMQ, with publisher confirms) before the
2xx, or, in the embedded mode without RabbitMQ, straight into the ledger (answered with
`ATP-Position`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.params import FromPath

from adapters.pushers.woocommerce import is_echo
from adapters.records import IntegrationConfigured
from adapters.sealing import unseal
from adapters.webhooks import NotAnOrder, deleted_order, is_ping, parse_order, snapshot, verify
from api.http import schemas as s
from api.http.controllers.common import ledger, path_code, service
from api.http.gateway import POSITION_HEADER
from api.http.openapi import returns
from api.http.problems import PROBLEM, ApiProblem, domain_problem
from api.service.integrations import current, integration_stream
from api.service.order_sync import IN_ORDER, METRICS, OrderSync

log = logging.getLogger("atp.webhooks")
CACHE_SECONDS = 5.0
JSON = "application/json"


async def integration(request: Request[Any, Any, Any], store: str) -> IntegrationConfigured | None:
    cache: dict[str, tuple[float, IntegrationConfigured | None]] = request.app.state.integrations
    hit = cache.get(store)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    records, _ = await asyncio.to_thread(
        ledger(request).load, integration_stream("woocommerce", store)
    )
    record = current(records)
    cache[store] = (time.monotonic() + CACHE_SECONDS, record)
    return record


@post(
    "/v1/webhooks/woocommerce/{store:str}",
    opt={"public": True},
    status_code=200,
    responses={
        **returns(200, s.WebhookAnswer, "Applied, unchanged (with the reason) or pong"),
        **returns(202, s.WebhookAnswer, "Queued: applied by `atp webhooks`"),
    },
)
async def woocommerce_webhook(
    request: Request[Any, Any, Any], store: FromPath[str]
) -> Response[bytes]:
    store = path_code(store, "store")
    record = await integration(request, store)
    if record is None:
        raise ApiProblem(404, "not-found", f"no WooCommerce store {store!r}")
    body = await request.body()
    given = request.headers.get("x-wc-webhook-signature")
    if given is None and is_ping(body):
        return Response(b'{"status":"pong"}', media_type=JSON)
    sealed = record.settings.get("webhook_secrets")
    secrets: list[str] = list(
        unseal(sealed, request.app.state.settings.token_secret, as_list=True) or []
    )
    if not verify(body, given, secrets):
        raise ApiProblem(401, "bad-signature", "the webhook signature does not match")
    topic = request.headers.get("x-wc-webhook-topic", "")
    if not topic.startswith("order."):
        # Product updates include the echo of atp's own stock writes; atp owns the figure
        # either way, but an edit made in the store is worth a line in the log.
        status = b'{"status":"ignored"}'
        redis_client = request.app.state.redis
        if topic == "product.updated" and redis_client is not None:
            try:
                product = json.loads(body)
                if await is_echo(
                    redis_client, request.app.state.settings.redis_prefix, store, product
                ):
                    status = b'{"status":"echo"}'
                else:
                    log.warning(
                        "store %s changed the stock of %r itself (%r); atp's figure stands",
                        store,
                        product.get("sku"),
                        product.get("stock_quantity"),
                    )
            except (ValueError, AttributeError, RecursionError):
                pass  # not a product: nothing to log about it
        return Response(status, media_type=JSON)
    try:
        if topic == "order.deleted":  # the body is only {"id": N}
            body = deleted_order(body)
        order = parse_order(body)
    except NotAnOrder as e:
        raise ApiProblem(e.status, "bad-order", e.detail, field=e.field) from None
    METRICS.count_unmapped(snapshot(store, order), store, "webhook")
    queue = request.app.state.webhook_queue
    headers = {
        "store": store,
        "topic": topic,
        "delivery_id": request.headers.get("x-wc-webhook-delivery-id", ""),
        "correlation_id": request.state.correlation_id,
    }
    if queue is not None:
        await queue.publish(body, headers)
        return Response(b'{"status":"queued"}', media_type=JSON, status_code=202)
    # Embedded mode: the ledger itself is the durable record.
    sync = OrderSync(ledger(request), service(request), request.app.state.settings.token_secret)
    async with IN_ORDER(store, order.id):  # same-second states: arrival order decides
        applied = await sync.apply_order_snapshot(
            store,
            record,
            order,
            request.state.correlation_id,
            delivery=headers["delivery_id"],
        )
    position = {POSITION_HEADER: str(applied.position)} if applied.position is not None else {}
    if applied.error is not None:
        code, problem = domain_problem(applied.error)
        return Response(problem, media_type=PROBLEM, status_code=code, headers=position)
    body = b'{"status":"applied"}'
    if applied.unchanged is not None:
        body = msgspec.json.encode({"status": "unchanged", "reason": applied.unchanged})
    return Response(body, media_type=JSON, status_code=200, headers=position)


ROUTES = [woocommerce_webhook]
