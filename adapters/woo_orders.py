"""Reading orders from a WooCommerce store (wc/v3): the orders modified since a time, and an
order's refunds, with the store's stored credentials.

* `GET /orders?modified_after=<time>&dates_are_gmt=true&orderby=modified&order=asc`, paged
  (`per_page` <= 100, `X-WP-TotalPages` says how many pages there are).
* `GET /orders/<id>/refunds`: each refund's `line_items[]` carry a negative `quantity`.
* Auth and routing as the stock pusher does (adapters.pushers.woocommerce): the store's
  `auth` mode (`auto`: HTTP Basic over HTTPS, one-legged OAuth 1.0a over plain HTTP) and
  `?rest_route=` for stores without pretty permalinks; credentials are stored sealed
  (adapters.sealing) and opened with the service key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import httpx

from adapters.pushers.woocommerce import API, ROUTE, AuthMode, resolve_auth, store_auth
from adapters.sealing import unseal

PER_PAGE = 100
MAX_PAGES = 1000
"""A bound on one catch-up (100,000 orders); the next poll continues from the last applied."""


class StoreUnreachable(Exception):
    """The store did not answer, or answered with an error."""


class WooOrders:
    def __init__(
        self,
        url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        auth: AuthMode = "auto",
        pretty_permalinks: bool = True,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = url.rstrip("/")
        credentials = store_auth(resolve_auth(auth, base), consumer_key, consumer_secret)
        self.pretty_permalinks = pretty_permalinks
        self.http = httpx.AsyncClient(
            base_url=base + API if pretty_permalinks else base + "/",
            auth=credentials,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "atp-orders/1"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, params: Mapping[str, str | int]) -> httpx.Response:
        query = dict(params)
        if not self.pretty_permalinks:
            path, query = "", {"rest_route": ROUTE + path, **query}
        try:
            response = await self.http.get(path, params=query)
        except httpx.HTTPError as e:
            raise StoreUnreachable(f"GET {path}: {type(e).__name__}: {e}") from e
        if response.status_code >= 400:
            raise StoreUnreachable(f"GET {path}: HTTP {response.status_code}")
        return response

    async def refunds(self, order_id: int) -> list[dict[str, Any]]:
        """The order's refunds (each with `line_items` of negative quantities)."""
        response = await self._get(f"/orders/{order_id}/refunds", {"per_page": PER_PAGE})
        body = response.json()
        if not isinstance(body, list):
            raise StoreUnreachable(f"refunds of order {order_id}: not a list")
        return [r for r in body if isinstance(r, dict)]

    async def modified_after(self, since: str) -> list[dict[str, Any]]:
        """Every order modified after `since` (UTC, `YYYY-MM-DDTHH:MM:SS`), oldest first."""
        orders: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= min(pages, MAX_PAGES):
            params: dict[str, str | int] = {
                "modified_after": since,
                "dates_are_gmt": "true",
                "orderby": "modified",
                "order": "asc",
                "per_page": PER_PAGE,
                "page": page,
            }
            response = await self._get("/orders", params)
            body = response.json()
            if not isinstance(body, list):
                raise StoreUnreachable("orders: not a list")
            orders += [o for o in body if isinstance(o, dict)]
            pages = int(response.headers.get("x-wp-totalpages") or 1)
            page += 1
        return orders


def from_settings(
    settings: Mapping[str, Any], service_key: bytes, timeout: float = 10.0
) -> WooOrders:
    """From an IntegrationConfigured's settings (url, sealed consumer_key and consumer_secret,
    auth, pretty_permalinks). Raises adapters.sealing.SealError when the credentials do not
    open with `service_key`."""
    return WooOrders(
        str(settings["url"]),
        str(unseal(settings.get("consumer_key"), service_key) or ""),
        str(unseal(settings.get("consumer_secret"), service_key) or ""),
        auth=cast(AuthMode, settings.get("auth") or "auto"),
        pretty_permalinks=settings.get("pretty_permalinks") is not False,
        timeout=timeout,
    )
