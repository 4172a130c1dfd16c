"""eBay Sell Inventory API: `POST /sell/inventory/v1/bulk_update_price_quantity`, up to 25
requests a call, each `{"sku", "shipToLocationAvailability": {"quantity"}, "offers":
[{"offerId", "availableQuantity"}]}`.

* Offer-level quantities: an offer's `availableQuantity` caps the item quantity (the listing
  sells the lower of the two), so every write sets the item quantity and the quantity of
  each of the SKU's offers together (offer ids from `GET /offer?sku=`, cached; looked up
  again when eBay says an offer is not available), and `current` reports what the listing
  sells: the item quantity capped by the offers' quantities.
* The answer (200, or 207 when some failed) has one `responses` entry per offer (or per SKU
  without offers) with its own `statusCode`: 200 is taken, 429/5xx are retried, any other
  is a permanent error for that SKU only (an unknown SKU is errorId 25702).
* A call refused whole (HTTP 400) is bisected until the SKU at fault is alone: only that one
  is parked. When every SKU goes through alone, the store takes one SKU per call (eBay's
  documentation says both): it is remembered (in Redis when the service has it) and the
  store is written one SKU per call from then on.
* Revisions: eBay takes at most 250 revisions of a listing per calendar day. `RevisionBudget`
  counts them per SKU (kept in Redis per eBay day when the service has it, so a restart
  keeps the count) and spaces writes as the budget shrinks (the runner keeps only the
  newest figure meanwhile); the last tenth is kept for lowering a figure, so an item can
  always be taken down. A figure refused for the limit waits for the next day: it is never
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

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
OFFERS = "/sell/inventory/v1/offer"
REVISION_LIMIT = 250
"""Revisions of one listing eBay takes per calendar day."""
EBAY_DAY = ZoneInfo("America/Los_Angeles")
"""eBay's official time (the day the revision limit counts; uncertain, see docs)."""
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
OFFER_GONE = 25713
"""errorId: the offer is not available (deleted or ended): look the SKU's offers up again."""


def revision_limit_reached(errors: Sequence[Mapping[str, Any]]) -> bool:
    """Whether eBay refused because the listing's daily revisions are used up."""
    return any("revision" in str(e.get("message") or "").lower() for e in errors)


class RevisionBudget:
    """Revisions per SKU per eBay calendar day (`limit`, 250).

    `delay(sku, quantity)` says how long a write of this figure should wait (0: now):
    - while less than half of the day's budget is used, never;
    - a figure lower than the last one written (stock going down: the one that prevents
      overselling) goes at once while any revision is left;
    - a higher one waits when only the reserve (a tenth) is left, and otherwise is spaced
      so the rest of the budget lasts the rest of the day (the spacing grows as the budget
      shrinks, and the runner keeps only the newest figure meanwhile);
    - with nothing left (or after eBay refused for the limit: `exhausted`), until the day
      turns. A wait is at most `max_wait`, after which the write asks again.
    """

    def __init__(
        self,
        limit: int = REVISION_LIMIT,
        *,
        clock: Callable[[], float] = time.time,
        max_wait: float = 600.0,
    ) -> None:
        self.limit = limit
        self.reserve = max(1, limit // 10)
        self.clock = clock
        self.max_wait = max_wait
        self._day: dict[str, tuple[str, int]] = {}
        """SKU -> (day, revisions spent that day)."""
        self._last: dict[str, tuple[float, int]] = {}
        """SKU -> (when, quantity) of the last write."""
        self._exhausted: dict[str, str] = {}
        """SKU -> the day eBay refused it for the limit."""

    def _today(self, now: float) -> tuple[str, float]:
        """(the eBay day of `now`, seconds until the next one)."""
        local = datetime.fromtimestamp(now, EBAY_DAY)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = start + timedelta(days=1)  # wall-clock midnight, whatever DST does
        return local.date().isoformat(), max(1.0, following.timestamp() - now)

    def used(self, sku: str) -> int:
        """Revisions spent on this SKU's listings today."""
        day, _ = self._today(self.clock())
        spent_day, spent = self._day.get(sku, (day, 0))
        return spent if spent_day == day else 0

    def delay(self, sku: str, quantity: int) -> float:
        now = self.clock()
        day, until_reset = self._today(now)
        used = self.used(sku)
        left = self.limit - used
        if left <= 0 or self._exhausted.get(sku) == day:
            return min(self.max_wait, until_reset)
        if used < self.limit // 2:
            return 0.0
        last = self._last.get(sku)
        if last is not None and quantity < last[1]:
            return 0.0
        if left <= self.reserve:
            return min(self.max_wait, until_reset)
        if last is None:
            return 0.0
        spacing = until_reset / (left - self.reserve)
        return min(self.max_wait, max(0.0, last[0] + spacing - now))

    def spend(self, sku: str, quantity: int) -> None:
        """Book one revision: eBay took `quantity` for this SKU now."""
        now = self.clock()
        day, _ = self._today(now)
        self._day[sku] = (day, self.used(sku) + 1)
        self._last[sku] = (now, quantity)

    def restore(self, sku: str, day: str, spent: int) -> None:
        """What a previous process spent on this SKU on `day` (from Redis)."""
        today, _ = self._today(self.clock())
        if day == today and spent > self.used(sku):
            self._day[sku] = (day, spent)

    def today(self) -> str:
        """The current eBay day (YYYY-MM-DD)."""
        return self._today(self.clock())[0]

    def refused(self, sku: str) -> float:
        """eBay refused for the limit: nothing more today. Returns the wait."""
        day, until_reset = self._today(self.clock())
        self._exhausted[sku] = day
        return min(self.max_wait, until_reset)


class EbayClient:
    """One eBay seller account (see the module docstring)."""

    kind = "ebay"
    max_batch = MAX_REQUESTS

    def __init__(
        self,
        endpoint: str,
        tokens: TokenSource,
        *,
        rate: float = 5.0,
        hooks: ClientHooks | None = None,
        store: str = "",
        budget: RevisionBudget | None = None,
    ) -> None:
        hooks = hooks or ClientHooks()
        self.tokens = tokens
        self.http = Http(
            endpoint.rstrip("/"),
            rate=rate,
            hooks=hooks,
            auth=TokenAuth(tokens, "Authorization", token_expired, prefix="Bearer "),
            headers={
                "Accept": "application/json",
                "Content-Language": "en-US",
            },
        )
        self.budget = budget or RevisionBudget()
        self.offers: dict[str, list[str]] = {}
        """SKU -> its offer ids (cached)."""
        self.single_sku = False
        """The store refuses calls with more than one SKU (found by bisecting)."""
        self._redis = hooks.redis
        self._mode_key = f"{hooks.redis_prefix}:push:ebay:{store}:single_sku"
        self._mode_loaded = hooks.redis is None
        self._spent_key = f"{hooks.redis_prefix}:push:ebay:{store}:revisions"
        self._spent_loaded: set[tuple[str, str]] = set()

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.tokens.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        """What each SKU's listings sell: the item quantity capped by its offers'."""
        results = await asyncio.gather(*(self._read(sku) for sku in skus))
        return {sku: q for sku, (present, q) in zip(skus, results, strict=True) if present}

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise RetryableError(f"not authorised: {error_summary(response)}", 30.0)
        if response.status_code != 200:
            raise PermanentError(f"{what}: {error_summary(response)}")

    async def _read(self, sku: str) -> tuple[bool, int | None]:
        path = f"/sell/inventory/v1/inventory_item/{quote(sku, safe='')}"
        response = await self.http.request("GET", path)
        if response.status_code == 404:
            return False, None
        self._check(response, f"read {sku}")
        data = json_or_none(response) or {}
        ship = (data.get("availability") or {}).get("shipToLocationAvailability") or {}
        quantity = ship.get("quantity")
        if not isinstance(quantity, int):
            return True, None
        caps = await self._offer_quantities(sku)
        return True, min([quantity, *caps])

    async def _offer_quantities(self, sku: str) -> list[int]:
        """The availableQuantity of each of the SKU's offers that sets one (refreshes the
        offer cache)."""
        response = await self.http.request("GET", OFFERS, params={"sku": sku})
        if response.status_code == 404:
            self.offers[sku] = []
            return []
        self._check(response, f"offers of {sku}")
        data = json_or_none(response) or {}
        offers = [o for o in data.get("offers") or [] if isinstance(o, dict)]
        self.offers[sku] = [str(o["offerId"]) for o in offers if o.get("offerId")]
        return [q for o in offers if isinstance(q := o.get("availableQuantity"), int)]

    async def _resolve_offers(self, skus: Sequence[str], result: PushResult) -> None:
        async def one(sku: str) -> None:
            try:
                await self._offer_quantities(sku)
            except (RetryableError, PermanentError) as exc:
                result.failed([sku], exc)

        await asyncio.gather(*(one(sku) for sku in skus if sku not in self.offers))

    # -- writing -----------------------------------------------------------------------------

    async def push(self, figures: Mapping[str, int]) -> PushResult:
        result = PushResult()
        await self._load_mode()
        await self._load_spent(list(figures))
        todo: list[str] = []
        for sku, quantity in figures.items():
            wait = self.budget.delay(sku, quantity)
            if wait > 0:
                result.retry([sku], "eBay revision budget: coalescing", after=wait, wait=True)
            else:
                todo.append(sku)
        await self._resolve_offers(todo, result)
        todo = [sku for sku in todo if sku not in result]
        for i in range(0, len(todo), MAX_REQUESTS):
            await self._send(todo[i : i + MAX_REQUESTS], figures, result)
        return result

    def _request_of(self, sku: str, quantity: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"sku": sku, "shipToLocationAvailability": {"quantity": quantity}}
        offers = self.offers.get(sku)
        if offers:
            entry["offers"] = [{"offerId": o, "availableQuantity": quantity} for o in offers]
        return entry

    async def _send(self, skus: list[str], figures: Mapping[str, int], result: PushResult) -> int:
        """One bulk call; a call refused whole is bisected. Returns how many SKUs were
        refused alone (0 after bisecting: the store takes one SKU per call)."""
        if self.single_sku and len(skus) > 1:
            sent = await asyncio.gather(*(self._send([sku], figures, result) for sku in skus))
            return sum(sent)
        body = {"requests": [self._request_of(sku, figures[sku]) for sku in skus]}
        try:
            response = await self.http.request("POST", BULK, json=body)
        except RetryableError as exc:
            result.failed(skus, exc)
            return 0
        if response.status_code in (401, 403):
            log.error("ebay: %s", error_summary(response))
            result.retry(skus, f"not authorised: {error_summary(response)}", after=30.0)
            return 0
        data: Any = json_or_none(response)
        if response.status_code == 400 and len(skus) > 1:
            return await self._bisect(skus, figures, result, error_summary(response))
        if response.status_code not in (200, 207) or not isinstance(data, dict):
            errors = data.get("errors") if isinstance(data, dict) else None
            if revision_limit_reached([e for e in errors or [] if isinstance(e, dict)]):
                for sku in skus:
                    wait = self.budget.refused(sku)
                    result.retry([sku], "eBay revision limit reached", after=wait, wait=True)
                return 0
            log.error("ebay: bulk update refused: %s", error_summary(response))
            result.permanent(skus, f"bulk update refused: {error_summary(response)}")
            return len(skus) if response.status_code == 400 else 0
        await self._save_spent(self._book(skus, figures, data, result))
        return 0

    async def _bisect(
        self, skus: list[str], figures: Mapping[str, int], result: PushResult, why: str
    ) -> int:
        """A call of several SKUs refused whole: find the SKU(s) at fault by halves."""
        half = len(skus) // 2
        refused = await self._send(skus[:half], figures, result)
        refused += await self._send(skus[half:], figures, result)
        if refused == 0 and not self.single_sku and all(s in result for s in skus):
            log.warning(
                "ebay: a call of %d SKUs was refused (%s) but each SKU alone was taken: "
                "writing this store one SKU per call from now on",
                len(skus),
                why,
            )
            await self._remember_single_sku()
        return refused

    def _book(
        self,
        skus: list[str],
        figures: Mapping[str, int],
        data: Mapping[str, Any],
        result: PushResult,
    ) -> list[str]:
        """Book each SKU's outcome; returns the SKUs written (a revision spent)."""
        spent: list[str] = []
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
                self.budget.spend(sku, figures[sku])
                spent.append(sku)
                result.ok([sku])
            elif any(c == 429 or c >= 500 for c in codes):
                result.retry([sku], f"statusCode {codes}: {text}")
            elif revision_limit_reached(errors):
                wait = self.budget.refused(sku)
                log.warning("ebay: %s: daily revisions used up; waiting %.0fs", sku, wait)
                result.retry([sku], f"revision limit: {text}", after=wait, wait=True)
            elif any(e.get("errorId") == OFFER_GONE for e in errors):
                self.offers.pop(sku, None)  # offers changed: look them up again
                result.retry([sku], f"offers changed: {text}", after=0.0)
            else:
                log.warning("ebay: %s refused: %s", sku, text)
                result.permanent([sku], f"statusCode {codes}: {text}")
        return spent

    async def _load_spent(self, skus: list[str]) -> None:
        """The revisions a previous process spent today (Redis hash per eBay day), once
        per SKU and day, so a restart does not start the budget afresh."""
        day = self.budget.today()
        missing = [sku for sku in skus if (day, sku) not in self._spent_loaded]
        if self._redis is None or not missing:
            return
        try:
            counts = await self._redis.hmget(f"{self._spent_key}:{day}", missing)
        except Exception as exc:  # Redis down: eBay's own refusal still guards the limit
            log.debug("ebay: could not read the revision budget: %s", exc)
            return
        for sku, raw in zip(missing, counts, strict=True):
            if raw is not None:
                self.budget.restore(sku, day, int(raw))
            self._spent_loaded.add((day, sku))

    async def _save_spent(self, skus: list[str]) -> None:
        if self._redis is None or not skus:
            return
        key = f"{self._spent_key}:{self.budget.today()}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            for sku in skus:
                pipe.hincrby(key, sku, 1)
            pipe.expire(key, 2 * 86400)
            await pipe.execute()
        except Exception as exc:
            log.warning("ebay: could not record the revision budget: %s", exc)

    async def _load_mode(self) -> None:
        if self._mode_loaded:
            return
        try:
            self.single_sku = bool(await self._redis.get(self._mode_key))
            self._mode_loaded = True
        except Exception as exc:  # Redis down: decide again from eBay's answers
            log.debug("ebay: could not read the single-SKU mode: %s", exc)

    async def _remember_single_sku(self) -> None:
        self.single_sku = True
        if self._redis is not None:
            try:
                await self._redis.set(self._mode_key, "1")
            except Exception as exc:
                log.warning("ebay: could not remember the single-SKU mode: %s", exc)


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
        store=store,
    )
