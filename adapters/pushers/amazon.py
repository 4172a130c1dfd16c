"""Amazon Selling Partner API, Listings Items 2021-08-01: one PATCH per SKU.

    PATCH /listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=...
    {"productType": ..., "patches": [{"op": "merge",
      "path": "/attributes/fulfillment_availability",
      "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": N}]}]}

The answer's `status` decides, not the HTTP code: ACCEPTED (or VALID) is taken, INVALID is a
permanent error whose issues are logged. Besides:

* ACCEPTED only means queued: WARNING issues that come with it are counted, and
  `verify_after` seconds later the listing's `issues` are read back; what processing found
  (ERROR, WARNING) is counted in the `channel_issues` metric by severity and logged.
* A SKU is patched only when the seller has a listing for it (looked up with
  `GET .../items/{sellerId}/{sku}` first, cached for `LISTING_TTL`): patching an unlisted SKU
  creates an incomplete listing, so it is skipped and reported (`skipped`).
* FBA listings (fulfillment channel codes `AMAZON_*`) never get a `DEFAULT` (merchant)
  entry: Amazon keeps their quantity, so they are skipped and reported.
* A 403 for a SKU containing `/` or `#` (that is not an expired token) is permanent for
  that SKU; other 401/403 are retried every 30 s.
* The rate quota belongs to the seller: every atp store on one seller shares one bucket
  (in Redis when the service has it, else per process), `max_requests_per_second` each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from adapters.pushers.base import (
    ClientHooks,
    Http,
    PermanentError,
    PushResult,
    RateLimiter,
    RetryableError,
    SharedRateLimiter,
    error_summary,
    json_or_none,
)
from adapters.pushers.oauth import TokenAuth, TokenSource, token_source

log = logging.getLogger("atp.push.amazon")

FULFILLMENT_PATH = "/attributes/fulfillment_availability"
LISTING_TTL = 3600.0
"""Seconds a looked-up listing (its fulfillment channels) is trusted."""
VERIFY_AFTER = 120.0
"""Seconds after an ACCEPTED patch before its listing's issues are read back."""
_SELLER_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
"""(endpoint, seller id) -> the bucket of every store of that seller in this process."""


class ForbiddenSku(PermanentError):
    """SP-API answers 403 for this SKU (it contains `/` or `#`) whatever the token."""


def seller_limiter(endpoint: str, seller_id: str, rate: float, hooks: ClientHooks) -> RateLimiter:
    """The rate limiter of a seller's quota: shared through Redis when there is one, else
    by every client of this process."""
    if hooks.redis is not None:
        key = f"{hooks.redis_prefix}:push:amazon:rate:{seller_id}"
        return SharedRateLimiter(rate, hooks.rate_burst, hooks.redis, key)
    return _SELLER_LIMITERS.setdefault((endpoint, seller_id), RateLimiter(rate, hooks.rate_burst))


def token_expired(response: httpx.Response) -> bool:
    """SP-API's answer to an expired LWA token: 403 (sometimes 401) whose error says the
    access token "has expired"."""
    return response.status_code in (401, 403) and "expired" in response.text.lower()


class AmazonClient:
    """One Amazon seller account in one marketplace (see the module docstring)."""

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
        verify_after: float = VERIFY_AFTER,
    ) -> None:
        hooks = hooks or ClientHooks()
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self.product_type = product_type
        self.tokens = tokens
        self.on_event = hooks.on_event
        self.verify_after = verify_after
        self.http = Http(
            endpoint.rstrip("/"),
            rate=rate,
            hooks=hooks,
            auth=TokenAuth(tokens, "x-amz-access-token", token_expired),
            headers={
                "Accept": "application/json",
                "User-Agent": "atp-pusher/1 (Language=Python)",
            },
            limiter=seller_limiter(endpoint.rstrip("/"), seller_id, rate, hooks),
        )
        self.listings: dict[str, tuple[float, frozenset[str]]] = {}
        """SKU -> (when looked up, its fulfillment channel codes) of listed SKUs."""
        self._verifying: set[asyncio.Task[None]] = set()
        self._verify_due: set[str] = set()

    async def aclose(self) -> None:
        for task in list(self._verifying):
            task.cancel()
        await asyncio.gather(*self._verifying, return_exceptions=True)
        await self.http.aclose()
        await self.tokens.aclose()

    def _path(self, sku: str) -> str:
        return f"/listings/2021-08-01/items/{quote(self.seller_id, safe='')}/{quote(sku, safe='')}"

    def _event(self, name: str, **labels: str) -> None:
        if self.on_event is not None:
            self.on_event(name, labels)

    # -- reading -----------------------------------------------------------------------------

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        results = await asyncio.gather(*(self._read(sku) for sku in skus))
        return {sku: q for sku, (present, q) in zip(skus, results, strict=True) if present}

    async def _listing(self, sku: str, included: str) -> dict[str, Any] | None:
        """The listing (None: the seller has none for this SKU). Raises RetryableError, or
        PermanentError (a 403 for a SKU with `/` or `#`, another error)."""
        params = {"marketplaceIds": self.marketplace_id, "includedData": included}
        response = await self.http.request("GET", self._path(sku), params=params)
        if response.status_code == 404:
            self.listings.pop(sku, None)
            return None
        if response.status_code in (401, 403):
            if "/" in sku or "#" in sku:
                raise ForbiddenSku(f"{sku}: 403 for a SKU with '/' or '#' (permanent)")
            raise RetryableError(f"not authorised: {error_summary(response)}", 30.0)
        if response.status_code != 200:
            raise PermanentError(f"read {sku}: {error_summary(response)}")
        data = json_or_none(response)
        data = data if isinstance(data, dict) else {}
        codes = frozenset(
            str(e.get("fulfillmentChannelCode"))
            for e in data.get("fulfillmentAvailability") or []
            if isinstance(e, dict) and e.get("fulfillmentChannelCode")
        )
        self.listings[sku] = (time.monotonic(), codes)
        return data

    async def _read(self, sku: str) -> tuple[bool, int | None]:
        try:
            data = await self._listing(sku, "fulfillmentAvailability")
        except ForbiddenSku as exc:  # one such SKU must not stop reconciling the others
            log.warning("amazon: %s", exc)
            return False, None
        if data is None:
            return False, None
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

    async def _may_write(self, sku: str, result: PushResult) -> bool:
        """Whether the SKU is listed and merchant-fulfillable (else its outcome is set)."""
        known = self.listings.get(sku)
        if known is None or time.monotonic() - known[0] > LISTING_TTL:
            try:
                if await self._listing(sku, "fulfillmentAvailability") is None:
                    result.skip(
                        [sku], "not listed on Amazon: a patch would create an incomplete listing"
                    )
                    return False
            except (RetryableError, PermanentError) as exc:
                result.failed([sku], exc)
                return False
            known = self.listings[sku]
        codes = known[1]
        if any(c.startswith("AMAZON_") for c in codes) and "DEFAULT" not in codes:
            result.skip(
                [sku],
                f"fulfilled by Amazon ({', '.join(sorted(codes))}): Amazon keeps its quantity",
            )
            return False
        return True

    async def _write(self, sku: str, quantity: int, result: PushResult) -> None:
        if not await self._may_write(sku, result):
            return
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
        if response.status_code in (401, 403) and ("/" in sku or "#" in sku):
            log.error("amazon: %s: 403 for a SKU with '/' or '#': %s", sku, error_summary(response))
            result.permanent([sku], f"403 for a SKU with '/' or '#': {error_summary(response)}")
        elif response.status_code in (401, 403):
            log.error("amazon: %s: %s", sku, error_summary(response))
            result.retry([sku], f"not authorised: {error_summary(response)}", after=30.0)
        elif status in ("ACCEPTED", "VALID") and response.status_code < 300:
            result.ok([sku])
            self._count_issues(sku, data.get("issues"), f"submission {data.get('submissionId')}")
            if status == "ACCEPTED":
                self._verify_later(sku)
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

    # -- after ACCEPTED ------------------------------------------------------------------------

    def _count_issues(self, sku: str, issues: Any, where: str) -> None:
        for issue in issues if isinstance(issues, list) else []:
            if not isinstance(issue, dict):
                continue
            severity = str(issue.get("severity") or "UNKNOWN").upper()
            self._event("channel_issues", severity=severity)
            level = logging.ERROR if severity == "ERROR" else logging.WARNING
            log.log(
                level, "amazon: %s (%s): %s %s: %s", sku, where, severity,
                issue.get("code"), issue.get("message"),
            )  # fmt: skip

    def _verify_later(self, sku: str) -> None:
        if sku in self._verify_due:  # one read-back covers every write before it
            return
        self._verify_due.add(sku)
        task = asyncio.create_task(self._verify(sku))
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)

    async def _verify(self, sku: str) -> None:
        """Read the listing's issues back once processing had time to run."""
        await asyncio.sleep(self.verify_after)
        self._verify_due.discard(sku)
        with contextlib.suppress(RetryableError, PermanentError):
            data = await self._listing(sku, "issues,fulfillmentAvailability")
            if data is not None:
                self._count_issues(sku, data.get("issues"), "after processing")


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
