"""Amazon Selling Partner API, Listings Items 2021-08-01: one PATCH per SKU.

    PATCH /listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=...
    {"productType": ..., "patches": [{"op": "merge",
      "path": "/attributes/fulfillment_availability",
      "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": N}]}]}

The answer's `status` decides, not the HTTP code: ACCEPTED (or VALID) is taken, INVALID is a
permanent error whose issues are logged. The seller's quota is 5 requests/s (burst 5): the
store's `max_requests_per_second` (default 5) spaces our requests below it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from adapters.pushers.base import (
    ClientHooks,
    Http,
    PermanentError,
    PushResult,
    RetryableError,
    error_summary,
    json_or_none,
)
from adapters.pushers.oauth import TokenAuth, TokenSource, token_source

log = logging.getLogger("atp.push.amazon")

FULFILLMENT_PATH = "/attributes/fulfillment_availability"


def token_expired(response: httpx.Response) -> bool:
    """SP-API's answer to an expired LWA token: 403 (sometimes 401) whose error says the
    access token "has expired"."""
    return response.status_code in (401, 403) and "expired" in response.text.lower()


class AmazonClient:
    kind = "amazon"
    max_batch = 10
    """SKUs handed to one push (each its own request, spaced by the rate limit)."""

    def __init__(
        self,
        endpoint: str,
        seller_id: str,
        marketplace_id: str,
        tokens: TokenSource,
        *,
        product_type: str = "PRODUCT",
        rate: float = 5.0,
        hooks: ClientHooks | None = None,
    ) -> None:
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self.product_type = product_type
        self.tokens = tokens
        self.http = Http(
            endpoint.rstrip("/"),
            rate=rate,
            hooks=hooks or ClientHooks(),
            auth=TokenAuth(tokens, "x-amz-access-token", token_expired),
            headers={
                "Accept": "application/json",
                "User-Agent": "atp-pusher/1 (Language=Python)",
            },
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.tokens.aclose()

    def _path(self, sku: str) -> str:
        return f"/listings/2021-08-01/items/{quote(self.seller_id, safe='')}/{quote(sku, safe='')}"

    # -- reading -----------------------------------------------------------------------------

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        results = await asyncio.gather(*(self._read(sku) for sku in skus))
        return {sku: q for sku, (present, q) in zip(skus, results, strict=True) if present}

    async def _read(self, sku: str) -> tuple[bool, int | None]:
        params = {"marketplaceIds": self.marketplace_id, "includedData": "fulfillmentAvailability"}
        response = await self.http.request("GET", self._path(sku), params=params)
        if response.status_code == 404:
            return False, None
        if response.status_code in (401, 403):
            raise RetryableError(f"not authorised: {error_summary(response)}", 30.0)
        if response.status_code != 200:
            raise PermanentError(f"read {sku}: {error_summary(response)}")
        data = json_or_none(response) or {}
        for entry in data.get("fulfillmentAvailability") or []:
            if entry.get("fulfillmentChannelCode") == "DEFAULT":
                quantity = entry.get("quantity")
                return True, quantity if isinstance(quantity, int) else None
        return True, None

    # -- writing -----------------------------------------------------------------------------

    async def push(self, figures: Mapping[str, int]) -> PushResult:
        result = PushResult()
        await asyncio.gather(*(self._write(sku, q, result) for sku, q in figures.items()))
        return result

    async def _write(self, sku: str, quantity: int, result: PushResult) -> None:
        body = {
            "productType": self.product_type,
            "patches": [
                {
                    "op": "merge",
                    "path": FULFILLMENT_PATH,
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}],
                }
            ],
        }
        params = {"marketplaceIds": self.marketplace_id}
        try:
            response = await self.http.request("PATCH", self._path(sku), params=params, json=body)
        except RetryableError as exc:
            result.failed([sku], exc)
            return
        data: Any = json_or_none(response)
        status = data.get("status") if isinstance(data, dict) else None
        if response.status_code in (401, 403):
            log.error("amazon: %s: %s", sku, error_summary(response))
            result.retry([sku], f"not authorised: {error_summary(response)}", after=30.0)
        elif status in ("ACCEPTED", "VALID") and response.status_code < 300:
            result.ok([sku])
        elif status == "INVALID":
            issues = data.get("issues") or []
            log.warning(
                "amazon: %s INVALID (submission %s): %s", sku, data.get("submissionId"), issues
            )
            text = "; ".join(
                f"{i.get('code')}: {i.get('message')}" for i in issues if isinstance(i, dict)
            )
            result.permanent([sku], f"INVALID: {text or 'no issues given'}")
        else:
            log.warning("amazon: %s refused: %s", sku, error_summary(response))
            result.permanent([sku], error_summary(response))


def create(settings: Mapping[str, Any], store: str, hooks: ClientHooks) -> AmazonClient:
    """From the settings (endpoint, seller_id, marketplace_id, product_type,
    max_requests_per_second, and access_token and/or the LWA refresh credentials
    token_endpoint, client_id, client_secret, refresh_token)."""
    return AmazonClient(
        str(settings["endpoint"]),
        str(settings["seller_id"]),
        str(settings["marketplace_id"]),
        token_source(settings, store, hooks, client_auth="client_secret_post"),
        product_type=str(settings.get("product_type") or "PRODUCT"),
        rate=float(settings.get("max_requests_per_second") or 5.0),
        hooks=hooks,
    )
