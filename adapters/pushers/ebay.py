"""eBay Sell Inventory API: `POST /sell/inventory/v1/bulk_update_price_quantity`, up to 25
requests a call, each `{"sku", "shipToLocationAvailability": {"quantity"}}`.

The answer (200, or 207 when some failed) has one `responses` entry per SKU with its own
`statusCode`: 200 is taken, 429/5xx are retried, any other is a permanent error for that SKU
only (an unknown SKU is errorId 25702).
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

log = logging.getLogger("atp.push.ebay")

BULK = "/sell/inventory/v1/bulk_update_price_quantity"
SELL_INVENTORY = "https://api.ebay.com/oauth/api_scope/sell.inventory"


def token_expired(response: httpx.Response) -> bool:
    """eBay's answer to an expired user token: 401 with errorId 1001 "Invalid access
    token" (the same as for a wrong one: renewing is the only way to tell)."""
    if response.status_code != 401:
        return False
    data = json_or_none(response)
    errors = data.get("errors") if isinstance(data, dict) else None
    return any(isinstance(e, dict) and e.get("errorId") == 1001 for e in errors or [])


MAX_REQUESTS = 25


class EbayClient:
    kind = "ebay"
    max_batch = MAX_REQUESTS

    def __init__(
        self,
        endpoint: str,
        tokens: TokenSource,
        *,
        rate: float = 5.0,
        hooks: ClientHooks | None = None,
    ) -> None:
        self.tokens = tokens
        self.http = Http(
            endpoint.rstrip("/"),
            rate=rate,
            hooks=hooks or ClientHooks(),
            auth=TokenAuth(tokens, "Authorization", token_expired, prefix="Bearer "),
            headers={
                "Accept": "application/json",
                "Content-Language": "en-US",
            },
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.tokens.aclose()

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        results = await asyncio.gather(*(self._read(sku) for sku in skus))
        return {sku: q for sku, (present, q) in zip(skus, results, strict=True) if present}

    async def _read(self, sku: str) -> tuple[bool, int | None]:
        path = f"/sell/inventory/v1/inventory_item/{quote(sku, safe='')}"
        response = await self.http.request("GET", path)
        if response.status_code == 404:
            return False, None
        if response.status_code in (401, 403):
            raise RetryableError(f"not authorised: {error_summary(response)}", 30.0)
        if response.status_code != 200:
            raise PermanentError(f"read {sku}: {error_summary(response)}")
        data = json_or_none(response) or {}
        ship = (data.get("availability") or {}).get("shipToLocationAvailability") or {}
        quantity = ship.get("quantity")
        return True, quantity if isinstance(quantity, int) else None

    async def push(self, figures: Mapping[str, int]) -> PushResult:
        result = PushResult()
        skus = list(figures)
        for i in range(0, len(skus), MAX_REQUESTS):
            await self._bulk(skus[i : i + MAX_REQUESTS], figures, result)
        return result

    async def _bulk(self, skus: list[str], figures: Mapping[str, int], result: PushResult) -> None:
        body = {
            "requests": [
                {"sku": sku, "shipToLocationAvailability": {"quantity": figures[sku]}}
                for sku in skus
            ]
        }
        try:
            response = await self.http.request("POST", BULK, json=body)
        except RetryableError as exc:
            result.failed(skus, exc)
            return
        if response.status_code in (401, 403):
            log.error("ebay: %s", error_summary(response))
            result.retry(skus, f"not authorised: {error_summary(response)}", after=30.0)
            return
        data: Any = json_or_none(response)
        if response.status_code not in (200, 207) or not isinstance(data, dict):
            log.error("ebay: bulk update refused: %s", error_summary(response))
            result.permanent(skus, f"bulk update refused: {error_summary(response)}")
            return
        wanted = set(skus)
        seen: dict[str, list[dict[str, Any]]] = {}
        for entry in data.get("responses") or []:
            if isinstance(entry, dict) and entry.get("sku") in wanted:
                seen.setdefault(entry["sku"], []).append(entry)
        for sku in skus:
            entries = seen.get(sku)
            if not entries:
                result.retry([sku], "no answer for this SKU in the bulk response")
                continue
            codes = [int(e.get("statusCode") or 0) for e in entries]
            errors = [err for e in entries for err in (e.get("errors") or [])]
            text = "; ".join(f"{e.get('errorId')}: {e.get('message')}" for e in errors)
            if all(200 <= c < 300 for c in codes):
                result.ok([sku])
            elif any(c == 429 or c >= 500 for c in codes):
                result.retry([sku], f"statusCode {codes}: {text}")
            else:
                log.warning("ebay: %s refused: %s", sku, text)
                result.permanent([sku], f"statusCode {codes}: {text}")


def create(settings: Mapping[str, Any], store: str, hooks: ClientHooks) -> EbayClient:
    """From the settings (endpoint, max_requests_per_second, and access_token and/or the
    refresh credentials token_endpoint, client_id, client_secret, refresh_token, scope)."""
    return EbayClient(
        str(settings["endpoint"]),
        token_source(
            settings,
            store,
            hooks,
            client_auth="client_secret_basic",
            scope=str(settings.get("scope") or SELL_INVENTORY),
        ),
        rate=float(settings.get("max_requests_per_second") or 5.0),
        hooks=hooks,
    )
