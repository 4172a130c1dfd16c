"""A fake eBay Sell Inventory API: `POST /sell/inventory/v1/bulk_update_price_quantity`
(and `GET /sell/inventory/v1/inventory_item/{sku}` to read a quantity back).

Behaviour reproduced (from eBay's published API docs):

* Auth: `Authorization: Bearer <token>` with the configured user token or one the token
  endpoint issued and that has not expired, else 401 with errorId 1001 "Invalid access
  token" (eBay answers an expired token exactly so).
* Token endpoint `POST /identity/v1/oauth2/token`: client id and secret in HTTP Basic, form
  body grant_type=refresh_token, refresh_token, scope (a subset of the consented scopes);
  issues user tokens that expire `token_lifetime` seconds after issue (eBay: 7200). Bad
  client: 401 `invalid_client`; bad refresh token: 400 `invalid_grant`; a scope beyond the
  consent: 400 `invalid_scope`.
* Body `{"requests": [{"sku", "shipToLocationAvailability": {"quantity"}, "offers":
  [{"offerId", "availableQuantity", "price"}]}]}`. A body that cannot be read, or one with
  more than `max_requests` (25) requests, is HTTP 400 with an `errors` list and nothing is
  applied. eBay's docs disagree on whether the 25 is per call or per SKU (the method page
  says one SKU per call with up to 25 offers); `single_sku_per_call=True` enforces the
  stricter reading, `max_offers_per_request` caps the offers of one request.
* Otherwise one entry per offer (or, for a request without offers, one per SKU) in
  `{"responses": [{"statusCode", "sku", "offerId"?, "errors"?, "warnings"?}]}`; entries fail
  independently (unknown SKU: statusCode 400 with errorId 25702; an offer that is not this
  SKU's: errorId 25713; a quantity that is not a non-negative integer: errorId 25709). The
  HTTP status is 200 when every entry succeeded and 207 (Multi-Status) otherwise
  (`multi_status`). Error ids are modelled on eBay's Inventory API list; match on
  statusCode rather than on ids.
* An offer's `availableQuantity` caps the item quantity: the listing sells the lower of
  the two (`listing_quantity`). `GET /sell/inventory/v1/offer?sku=X` lists a SKU's offers
  (`{"total", "offers": [{"offerId", "sku", "availableQuantity"?, "listing"}]}`; a SKU
  without offers is 404 errorId 25713).
* `fail_calls_with(*skus)`: a call that includes one of these SKUs is refused as a whole
  (HTTP 400, errorId 25002, nothing applied), as eBay does for some errors of one SKU.
* Revisions: a listing (an offer; an item without offers counts as one) can be revised
  `revision_limit` (250) times a calendar day; each entry that changes a quantity is a
  revision of the listings it touches. Past the limit the entry fails with statusCode 400,
  errorId 25020 "...maximum number of revisions..." (illustrative id: match the message)
  and nothing of it changes until `new_day()`.
* Rate limiting is the shared `faults.set_rate_limit` knob; 429 bodies carry errorId 2001.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.support.fakes.base import FakeServer, RecordedRequest, Response, TokenIssuer

BULK = "/sell/inventory/v1/bulk_update_price_quantity"
TOKEN = "/identity/v1/oauth2/token"
OFFERS = "/sell/inventory/v1/offer"
SCOPES = frozenset(
    {
        "https://api.ebay.com/oauth/api_scope",
        "https://api.ebay.com/oauth/api_scope/sell.inventory",
        "https://api.ebay.com/oauth/api_scope/sell.account",
    }
)
"""The scopes the seller consented to (a refresh may ask for these or fewer)."""
_ITEM = re.compile(r"^/sell/inventory/v1/inventory_item/(?P<sku>[^/]+)/?$")


@dataclass
class InventoryItem:
    sku: str
    quantity: int = 0
    offers: dict[str, int | None] = field(default_factory=dict)
    """offerId -> availableQuantity (None: not set)."""
    prices: dict[str, Any] = field(default_factory=dict)


@dataclass
class BulkUpdate:
    """One accepted bulk call (HTTP 200/207) and what it answered."""

    body: Any
    status: int
    responses: list[dict[str, Any]]
    time: float


def _error(
    error_id: int, message: str, *, category: str = "REQUEST", **params: Any
) -> dict[str, Any]:
    err: dict[str, Any] = {
        "errorId": error_id,
        "domain": "API_INVENTORY",
        "subdomain": "Selling",
        "category": category,
        "message": message,
    }
    if params:
        err["parameters"] = [{"name": k, "value": str(v)} for k, v in params.items()]
    return err


def _is_quantity(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class FakeEbay(FakeServer):
    """Fake eBay Inventory API on 127.0.0.1.

    Constructor:
        token: the OAuth user token expected after "Bearer ".
        max_requests: most requests per call (25).
        max_offers_per_request: most offers in one request (25).
        single_sku_per_call: reject calls that touch more than one SKU.
        multi_status: HTTP status when some entries failed (207).
    """

    name = "ebay"

    def __init__(
        self,
        token: str = "v^1.1#i^1#fake-user-token",
        *,
        max_requests: int = 25,
        max_offers_per_request: int = 25,
        single_sku_per_call: bool = False,
        multi_status: int = 207,
        client_id: str = "fake-ebay-app-id",
        client_secret: str = "PRD-fake-cert-id",
        refresh_token: str = "v^1.1#i^1#r^1#fake-refresh-token",
        token_lifetime: float = 7200.0,
        revision_limit: int = 250,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.max_requests = max_requests
        self.max_offers_per_request = max_offers_per_request
        self.single_sku_per_call = single_sku_per_call
        self.multi_status = multi_status
        self._items: dict[str, InventoryItem] = {}
        self._offer_owner: dict[str, str] = {}
        self._offer_ids = itertools.count(5000000001)
        self._unknown: set[str] = set()
        self._updates: list[BulkUpdate] = []
        self.revision_limit = revision_limit
        self._revisions: dict[str, int] = {}
        """listing (offer id, or "item:<sku>") -> revisions today."""
        self._poison: set[str] = set()
        self.oauth = TokenIssuer(
            "v^1.1#i^1#fake-user-token-",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            lifetime=token_lifetime,
            scopes=SCOPES,
        )
        """The token endpoint's state: `oauth.issued()`, `oauth.expire()`."""

    # -- seeding and state ---------------------------------------------------------------
    def add_item(self, sku: str, quantity: int = 0, *, offers: int = 0) -> list[str]:
        """An inventory item with `quantity` ship-to-home and `offers` new offers; returns
        the new offer ids."""
        with self._lock:
            self._items[sku] = InventoryItem(sku, quantity)
        return [self.add_offer(sku) for _ in range(offers)]

    def add_offer(self, sku: str, offer_id: str | None = None, quantity: int | None = None) -> str:
        with self._lock:
            item = self._items[sku]
            oid = offer_id or str(next(self._offer_ids))
            item.offers[oid] = quantity
            self._offer_owner[oid] = sku
            return oid

    def quantity_of(self, sku: str) -> int:
        """shipToLocationAvailability quantity; KeyError for an unknown SKU."""
        with self._lock:
            return self._items[sku].quantity

    def offer_quantity(self, offer_id: str) -> int | None:
        with self._lock:
            return self._items[self._offer_owner[offer_id]].offers[offer_id]

    def items(self) -> dict[str, int]:
        with self._lock:
            return {sku: item.quantity for sku, item in self._items.items()}

    def updates(self) -> list[BulkUpdate]:
        with self._lock:
            return list(self._updates)

    def listing_quantity(self, sku: str) -> int:
        """What the listings of a SKU sell: the item quantity, capped by the lowest offer
        `availableQuantity` that is set."""
        with self._lock:
            item = self._items[sku]
            caps = [q for q in item.offers.values() if q is not None]
            return min([item.quantity, *caps])

    def revisions(self, sku: str) -> int:
        """The most revisions today of any listing of this SKU."""
        with self._lock:
            return max(self._revisions.get(name, 0) for name in self._listings_of(sku))

    def new_day(self) -> None:
        """The calendar day turns: every listing's revision count starts again."""
        with self._lock:
            self._revisions.clear()

    def fail_calls_with(self, *skus: str) -> None:
        """Calls including any of these SKUs are refused whole (400) until cleared with no
        arguments."""
        with self._lock:
            if skus:
                self._poison.update(skus)
            else:
                self._poison.clear()

    def _listings_of(self, sku: str) -> list[str]:
        item = self._items.get(sku)
        return list(item.offers) if item is not None and item.offers else [f"item:{sku}"]

    def make_unknown(self, *skus: str) -> None:
        """These SKUs answer as unknown (per-entry 400) until `make_known`."""
        with self._lock:
            self._unknown.update(skus)

    def make_known(self, *skus: str) -> None:
        with self._lock:
            self._unknown.difference_update(skus or set(self._unknown))

    # -- HTTP ----------------------------------------------------------------------------
    @staticmethod
    def _errors(
        status: int, *errors: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Response:
        return Response.json(status, {"errors": list(errors)}, headers)

    def error_body(self, status: int, reason: str, kind: str) -> Response:
        if status == 429:
            return self._errors(
                429,
                {
                    "errorId": 2001,
                    "domain": "ACCESS",
                    "category": "REQUEST",
                    "message": "Too many requests. The request limit has been reached for the resource.",
                },
            )
        return self._errors(
            status,
            _error(25001, "A system error has occurred. Please try again.", category="APPLICATION"),
        )

    def _token_endpoint(self, request: RecordedRequest) -> Response:
        client_id = client_secret = ""
        auth = request.header("authorization") or ""
        if auth[:6].lower() == "basic ":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                decoded = base64.b64decode(auth[6:].strip()).decode()
                client_id, _, client_secret = decoded.partition(":")
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        status, payload = self.oauth.grant(client_id, client_secret, form)
        if status == 200:
            payload["token_type"] = "User Access Token"
        return Response.json(status, payload)

    def handle(self, request: RecordedRequest) -> Response:
        if request.path == TOKEN and request.method == "POST":
            return self._token_endpoint(request)
        auth = request.header("authorization") or ""
        bearer = auth[7:] if auth.startswith("Bearer ") else None
        if auth != f"Bearer {self.token}" and self.oauth.check(bearer) != "valid":
            return self._errors(
                401,
                {
                    "errorId": 1001,
                    "domain": "OAuth",
                    "category": "REQUEST",
                    "message": "Invalid access token",
                    "longMessage": "Invalid access token. Check the value of the Authorization HTTP request header.",
                },
            )
        if request.path == BULK and request.method == "POST":
            return self._bulk(request)
        if request.path == OFFERS and request.method == "GET":
            return self._offers(request.param("sku") or "")
        match = _ITEM.match(request.path)
        if match and request.method == "GET":
            sku = unquote(match["sku"])
            with self._lock:
                item = self._items.get(sku)
                if item is None or sku in self._unknown:
                    return self._errors(
                        404,
                        _error(
                            25710, "We didn't find the resource/entity you are requesting.", sku=sku
                        ),
                    )
                return Response.json(
                    200,
                    {
                        "sku": sku,
                        "availability": {"shipToLocationAvailability": {"quantity": item.quantity}},
                    },
                )
        return self._errors(404, _error(2002, "Resource not found", category="REQUEST"))

    def _offers(self, sku: str) -> Response:
        with self._lock:
            item = self._items.get(sku)
            if item is None or sku in self._unknown or not item.offers:
                return self._errors(404, _error(25713, "This Offer is not available.", sku=sku))
            offers = []
            for offer_id, quantity in item.offers.items():
                offer: dict[str, Any] = {
                    "offerId": offer_id,
                    "sku": sku,
                    "marketplaceId": "EBAY_US",
                    "format": "FIXED_PRICE",
                    "status": "PUBLISHED",
                    "listing": {"listingId": f"11{offer_id}", "listingStatus": "ACTIVE"},
                }
                if quantity is not None:
                    offer["availableQuantity"] = quantity
                offers.append(offer)
        return Response.json(200, {"total": len(offers), "size": len(offers), "offers": offers})

    def _bulk(self, request: RecordedRequest) -> Response:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return self._errors(
                400, _error(25709, "Invalid value for body. The request could not be parsed.")
            )
        requests = body.get("requests") if isinstance(body, dict) else None
        if (
            not isinstance(requests, list)
            or not requests
            or not all(isinstance(r, dict) for r in requests)
        ):
            return self._errors(
                400, _error(25709, "Invalid value for requests.", fieldName="requests")
            )
        if len(requests) > self.max_requests:
            return self._errors(
                400,
                _error(
                    25709,
                    f"Invalid value for requests. The number of requests cannot exceed {self.max_requests}.",
                    fieldName="requests",
                ),
            )
        if self.single_sku_per_call and len({r.get("sku") for r in requests}) > 1:
            return self._errors(
                400, _error(25709, "Only one SKU can be updated per call.", fieldName="requests")
            )
        for r in requests:
            offers = r.get("offers")
            if offers is not None and (
                not isinstance(offers, list) or len(offers) > self.max_offers_per_request
            ):
                return self._errors(
                    400,
                    _error(
                        25709,
                        f"Invalid value for offers. At most {self.max_offers_per_request} offers per request.",
                        fieldName="offers",
                    ),
                )
        with self._lock:
            poisoned = sorted({str(r.get("sku")) for r in requests} & self._poison)
        if poisoned:
            return self._errors(
                400,
                _error(
                    25002,
                    "A user error has occurred. The inventory item could not be processed.",
                    sku=poisoned[0],
                ),
            )
        responses: list[dict[str, Any]] = []
        with self._lock:
            for r in requests:
                responses.extend(self._apply(r))
            failed = any(e["statusCode"] != 200 for e in responses)
            status = self.multi_status if failed else 200
            self._updates.append(BulkUpdate(body, status, responses, time.time()))
        return Response.json(status, {"responses": responses})

    def _revised_listings(
        self, item: InventoryItem, quantity: int | None, offers: list[Any]
    ) -> list[str]:
        """The listings an entry changes (lock held): all of the SKU's when the item
        quantity changes, else the offers whose availableQuantity changes."""
        names: set[str] = set()
        if quantity is not None and quantity != item.quantity:
            names.update(self._listings_of(item.sku))
        for offer in offers:
            if not isinstance(offer, dict):
                continue
            offer_id = offer.get("offerId")
            if offer_id in item.offers and offer.get("availableQuantity") not in (
                None,
                item.offers[offer_id],
            ):
                names.add(offer_id)
        return sorted(names)

    def _apply(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply one request (lock held) and return its response entries."""
        sku = r.get("sku")
        offers = r.get("offers") or []
        sku_errors: list[dict[str, Any]] = []
        item = self._items.get(sku) if isinstance(sku, str) else None
        if not isinstance(sku, str) or not sku:
            sku_errors.append(_error(25709, "Invalid value for sku.", fieldName="sku"))
        elif item is None or sku in self._unknown:
            item = None
            sku_errors.append(_error(25702, f"SKU {sku} is not available in the system.", sku=sku))
        availability = r.get("shipToLocationAvailability")
        quantity: int | None = None
        if availability is not None:
            value = availability.get("quantity") if isinstance(availability, dict) else None
            if not _is_quantity(value):
                sku_errors.append(
                    _error(
                        25709,
                        "Invalid value for shipToLocationAvailability.quantity.",
                        fieldName="quantity",
                    )
                )
            else:
                quantity = value
        if not sku_errors and item is not None:
            touched = self._revised_listings(item, quantity, offers)
            if any(self._revisions.get(name, 0) >= self.revision_limit for name in touched):
                sku_errors.append(
                    _error(
                        25020,
                        "The listing has reached the maximum number of revisions allowed "
                        f"today ({self.revision_limit}). Try again tomorrow.",
                        sku=sku,
                    )
                )
            else:
                for name in touched:
                    self._revisions[name] = self._revisions.get(name, 0) + 1
        if not sku_errors and item is not None and quantity is not None:
            item.quantity = quantity
        if not offers:
            entry: dict[str, Any] = {"statusCode": 400 if sku_errors else 200, "sku": sku}
            if sku_errors:
                entry["errors"] = sku_errors
            return [entry]
        entries = []
        seen: set[str] = set()
        for offer in offers:
            offer_id = offer.get("offerId") if isinstance(offer, dict) else None
            errors = list(sku_errors)
            if not errors:
                if not isinstance(offer_id, str) or item is None or offer_id not in item.offers:
                    errors.append(_error(25713, "This Offer is not available.", offerId=offer_id))
                elif offer_id in seen:
                    errors.append(_error(25709, "Duplicate offerId in request.", offerId=offer_id))
                elif "availableQuantity" in offer and not _is_quantity(offer["availableQuantity"]):
                    errors.append(
                        _error(
                            25709,
                            "Invalid value for availableQuantity.",
                            fieldName="availableQuantity",
                        )
                    )
            if not errors and item is not None and isinstance(offer_id, str):
                seen.add(offer_id)
                if "availableQuantity" in offer:
                    item.offers[offer_id] = offer["availableQuantity"]
                if "price" in offer:
                    item.prices[offer_id] = offer["price"]
            entry = {"statusCode": 400 if errors else 200, "sku": sku, "offerId": offer_id}
            if errors:
                entry["errors"] = errors
            entries.append(entry)
        return entries
