"""Channel integrations (admin): WooCommerce stores, Amazon and eBay accounts.

Secrets are write-only: a GET returns the record without them, and a PUT that leaves them
out keeps the stored ones. They are sealed (`adapters.sealing`) before they reach the
ledger, so the events table never holds them in plain text.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, put
from litestar.params import FromPath

from adapters.sealing import SECRETS
from api.http.controllers.common import ADMIN, gateway, ledger, operations, path_code
from api.http.decoding import decode_body
from api.http.openapi import returns
from api.http.problems import ApiProblem
from api.http.schemas import Code
from api.service.commands import ServiceWorld
from api.service.integrations import (
    current,
    integration_stream,
    public_view,
)

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=2000)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Rate = Annotated[float, msgspec.Meta(gt=0, le=1000)]


class WooCommerceIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    channel: Code
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    webhook_secrets: Annotated[list[Secret], msgspec.Meta(min_length=1, max_length=2)] | None = None
    auth: Literal["auto", "basic", "query", "oauth1"] = "auto"
    """auto: Basic over https://, OAuth 1.0a over http://; query: consumer_key/secret in
    the query string (hosts that drop the Authorization header); oauth1: also behind a TLS
    proxy that makes WordPress see plain HTTP."""
    pretty_permalinks: bool = True
    """False: the store serves the API only at `/?rest_route=/wc/v3/...`."""
    max_requests_per_second: Rate = 5.0


class AmazonIn(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: Url
    channel: Code
    seller_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    marketplace_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    product_type: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "PRODUCT"
    access_token: Secret | None = None
    client_id: Secret | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    token_endpoint: Url = "https://api.amazon.com/auth/o2/token"
    max_requests_per_second: Rate = 5.0


class EbayIn(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: Url
    channel: Code
    access_token: Secret | None = None
    client_id: Secret | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    token_endpoint: Url = "https://api.ebay.com/identity/v1/oauth2/token"
    scope: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)] = (
        "https://api.ebay.com/oauth/api_scope/sell.inventory"
    )
    max_requests_per_second: Rate = 5.0


KINDS: dict[str, tuple[type[msgspec.Struct], tuple[str, ...]]] = {
    "woocommerce": (WooCommerceIn, SECRETS["woocommerce"]),
    "amazon": (AmazonIn, SECRETS["amazon"]),
    "ebay": (EbayIn, SECRETS["ebay"]),
}
Kind = Literal["woocommerce", "amazon", "ebay"]


@put(
    "/v1/integrations/{kind:str}/{store:str}",
    # body: the document shows the three kinds' bodies (decoded by hand, per `kind`).
    opt={"scopes": (ADMIN,), "body": (WooCommerceIn, AmazonIn, EbayIn)},
    status_code=200,
    responses=returns(200, dict[str, Any], "The integration, secrets left out"),
)
async def put_integration(
    request: Request[Any, Any, Any], kind: FromPath[str], store: FromPath[str]
) -> Response[bytes]:
    if kind not in KINDS:
        raise ApiProblem(404, "not-found", f"no integration kind {kind!r}")
    store = path_code(store, "store", creating=True)
    schema = KINDS[kind][0]
    data = decode_body(await request.body(), schema)
    given = msgspec.structs.asdict(data)
    service_key: bytes = request.app.state.settings.token_secret
    stream = integration_stream(kind, store)

    def render(world: ServiceWorld, _: datetime) -> tuple[int, Any]:
        record = current(world.records(stream))
        assert record is not None
        return 200, public_view(record)

    configure = partial(operations(request).configure_integration, kind, store, given, service_key)
    response = await gateway(request).execute(request, configure, render)
    queue = request.app.state.webhook_queue
    if response.status_code == 200 and queue is not None:
        await queue.declare_pusher(kind, store, given["channel"])
    return response


@get("/v1/integrations/{kind:str}/{store:str}", opt={"scopes": (ADMIN,)})
async def get_integration(
    request: Request[Any, Any, Any], kind: FromPath[str], store: FromPath[str]
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ApiProblem(404, "not-found", f"no integration kind {kind!r}")
    store = path_code(store, "store")
    records, _ = await asyncio.to_thread(ledger(request).load, integration_stream(kind, store))
    record = current(records)
    if record is None:
        raise ApiProblem(404, "not-found", f"no {kind} integration {store!r}")
    return public_view(record)


ROUTES = [put_integration, get_integration]
