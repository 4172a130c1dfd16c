"""A fake Amazon Selling Partner API, Listings Items 2021-08-01: the stock of a SKU through
`PATCH /listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=...` (and
`GET` of the same path to read it back).

Behaviour reproduced (from the published API model and public SP-API issue threads):

* Auth: the `x-amz-access-token` header must equal the configured LWA access token, else
  403 `{"errors":[{"code":"Unauthorized", ...}]}`. A token passed to `expire_token` gets the
  "expired" 403 that real clients must answer by refreshing the token. A `sellerId` other
  than the configured one is 403 as well.
* LWA token endpoint `POST /auth/o2/token` (form body: grant_type=refresh_token,
  refresh_token, client_id, client_secret): issues access tokens that expire
  `token_lifetime` seconds after issue (LWA: 3600); a request with an expired one gets the
  403 "The access token you provided has expired.". Bad client: 401 `invalid_client`; bad
  refresh token: 400 `invalid_grant` (LWA's bodies).
* Rate: 5 requests/s per seller with a burst of 5 (token bucket); past it 429
  `QuotaExceeded`. Every answer carries `x-amzn-RateLimit-Limit` and `x-amzn-RequestId`.
* A body SP-API cannot parse (not JSON, no `productType`, `patches` not a non-empty list of
  objects, an `op` outside add/replace/merge/delete, no `path`, no `value` where one is
  needed) or a missing/unknown `marketplaceIds` is HTTP 400 `{"errors":[{"code":
  "InvalidInput", ...}]}`.
* A parseable patch whose attribute values are wrong (fulfillment_availability not a list of
  objects, no fulfillment_channel_code, a quantity that is not a non-negative integer) is
  answered like SP-API does: HTTP 200 (`invalid_http_status`) with `status: "INVALID"` and
  `issues`, and nothing changes. Always check `status`, not only the HTTP code.
* A SKU the seller has no listing for is ACCEPTED by default, as SP-API does (the patch
  creates an incomplete offer); `unknown_sku="invalid"` (or `make_unknown`) answers INVALID
  with an issue instead. Issue codes are illustrative: match on `status`/`severity`.
* ACCEPTED means accepted for processing: `apply_delay` seconds may pass before the quantity
  shows (`quantity_of`, GET). `mode=VALIDATION_PREVIEW` answers VALID and changes nothing.
  `fail_after_accept(sku, ...)` makes the next ACCEPTED patch of a SKU fail in processing:
  the quantity never changes and the listing's `issues` (GET with `includedData=issues`)
  carry the ERROR; `warn_on_accept(sku, ...)` answers ACCEPTED with a WARNING issue.
* FBA: `add_listing(sku, q, fulfillment_channel="AMAZON_NA")` is a listing fulfilled by
  Amazon; a patch with a `DEFAULT` entry adds a merchant-fulfilled offer beside it, as SP-API
  does (`quantity_of(sku, "DEFAULT")` shows it).
* With `reject_special_skus=True` a SKU containing `/` or `#` gets 403 `Unauthorized` (as
  SP-API does for some such SKUs: a permanent refusal), whatever the token.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

from tests.support.fakes.base import (
    FakeServer,
    RecordedRequest,
    Response,
    TokenBucket,
    TokenIssuer,
)

LISTINGS = "/listings/2021-08-01/items/"
LWA_TOKEN = "/auth/o2/token"
FULFILLMENT_PATH = "/attributes/fulfillment_availability"
OPS = ("add", "replace", "merge", "delete")
_ITEM = re.compile(r"^/listings/2021-08-01/items/(?P<seller>[^/]+)/(?P<sku>[^/]+)/?$")


@dataclass
class Listing:
    sku: str
    product_type: str = "PRODUCT"
    quantities: dict[str, int | None] = field(default_factory=dict)
    """Visible quantity per fulfillment_channel_code ("DEFAULT" is merchant-fulfilled)."""
    pending: list[tuple[float, str, int | None]] = field(default_factory=list)
    """(visible_at, channel, quantity) accepted but not visible yet."""
    attributes: dict[str, Any] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    """What processing the last accepted submission found (GET `includedData=issues`)."""


@dataclass
class Submission:
    """One PATCH the fake answered 200/400 with a submission response."""

    seller_id: str
    sku: str
    status: str
    submission_id: str
    issues: list[dict[str, Any]]
    body: Any
    time: float


class _SpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _issue(code: str, message: str, severity: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "severity": severity,
        "attributeNames": ["fulfillment_availability"],
        "categories": [],
    }


def _invalid_input(
    message: str = "Request has missing or invalid parameters and cannot be parsed.",
) -> _SpError:
    return _SpError(400, "InvalidInput", message)


class FakeAmazon(FakeServer):
    """Fake SP-API Listings Items endpoint on 127.0.0.1.

    Constructor:
        access_token: the value `x-amz-access-token` must carry.
        seller_id: the only seller the token may act for.
        marketplace_ids: marketplaces the seller sells in (others are 400).
        rate, burst: token bucket per seller (5/s, burst 5).
        unknown_sku: "accept" (SP-API's behaviour) or "invalid".
        invalid_http_status: HTTP status of INVALID submissions (SP-API: 200).
        apply_delay: seconds before an accepted quantity becomes visible.
    """

    name = "amazon"

    def __init__(
        self,
        access_token: str = "Atza|fake-access-token",
        *,
        seller_id: str = "A1FAKESELLER",
        marketplace_ids: tuple[str, ...] | list[str] = ("ATVPDKIKX0DER",),
        rate: float = 5.0,
        burst: float = 5.0,
        unknown_sku: Literal["accept", "invalid"] = "accept",
        invalid_http_status: int = 200,
        apply_delay: float = 0.0,
        client_id: str = "amzn1.application-oa2-client.fake",
        client_secret: str = "fake-lwa-client-secret",
        refresh_token: str = "Atzr|fake-refresh-token",
        token_lifetime: float = 3600.0,
        reject_special_skus: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.access_token = access_token
        self.seller_id = seller_id
        self.marketplace_ids = tuple(marketplace_ids)
        self.rate = rate
        self.burst = burst
        self.unknown_sku = unknown_sku
        self.invalid_http_status = invalid_http_status
        self.apply_delay = apply_delay
        self._expired: set[str] = set()
        self.reject_special_skus = reject_special_skus
        self._fail_next: dict[str, dict[str, Any]] = {}
        self._warn_next: dict[str, dict[str, Any]] = {}
        self.lwa = TokenIssuer(
            "Atza|fake-lwa-",
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            lifetime=token_lifetime,
        )
        """The LWA token endpoint's state: `lwa.issued()`, `lwa.expire()`."""
        self._buckets: dict[str, TokenBucket] = {}
        self._buckets_lock = threading.Lock()
        self._listings: dict[str, Listing] = {}
        self._unknown: set[str] = set()
        self._submissions: list[Submission] = []

    # -- seeding and state ---------------------------------------------------------------
    def add_listing(
        self,
        sku: str,
        quantity: int | None = None,
        *,
        product_type: str = "PRODUCT",
        fulfillment_channel: str = "DEFAULT",
    ) -> None:
        """A listing the seller has; `quantity` is its quantity in `fulfillment_channel`
        (DEFAULT: merchant-fulfilled; AMAZON_NA, AMAZON_EU...: fulfilled by Amazon)."""
        with self._lock:
            listing = Listing(sku, product_type)
            if quantity is not None:
                listing.quantities[fulfillment_channel] = quantity
            self._listings[sku] = listing

    def fail_after_accept(
        self, sku: str, code: str = "18027", message: str = "The listing could not be updated."
    ) -> None:
        """The next ACCEPTED patch of `sku` fails in processing (an ERROR issue later)."""
        with self._lock:
            self._fail_next[sku] = _issue(code, message, "ERROR")

    def warn_on_accept(
        self, sku: str, code: str = "90220", message: str = "A value may be out of range."
    ) -> None:
        """The next ACCEPTED patch of `sku` comes with a WARNING issue."""
        with self._lock:
            self._warn_next[sku] = _issue(code, message, "WARNING")

    def quantity_of(self, sku: str, channel: str = "DEFAULT") -> int | None:
        """Visible quantity of a listing (None: never set). KeyError for no listing."""
        with self._lock:
            listing = self._listings[sku]
            self._settle(listing)
            return listing.quantities.get(channel)

    def listings(self) -> dict[str, dict[str, int | None]]:
        """SKU -> visible quantities per channel."""
        with self._lock:
            out = {}
            for sku, listing in self._listings.items():
                self._settle(listing)
                out[sku] = dict(listing.quantities)
            return out

    def submissions(self, sku: str | None = None) -> list[Submission]:
        with self._lock:
            return [s for s in self._submissions if sku is None or s.sku == sku]

    def make_unknown(self, *skus: str) -> None:
        """These SKUs answer INVALID as unknown (whatever `unknown_sku` says)."""
        with self._lock:
            self._unknown.update(skus)

    def make_known(self, *skus: str) -> None:
        with self._lock:
            self._unknown.difference_update(skus or set(self._unknown))

    def expire_token(self, token: str | None = None) -> None:
        """Make a token (default: the current one) answer 403 "expired"; set
        `access_token` to the new token a refresh would give."""
        with self._lock:
            self._expired.add(token or self.access_token)

    def reset_rate_limit(self) -> None:
        with self._buckets_lock:
            self._buckets.clear()

    def _settle(self, listing: Listing) -> None:
        now = time.monotonic()
        keep = []
        for visible_at, channel, quantity in listing.pending:
            if visible_at <= now:
                listing.quantities[channel] = quantity
            else:
                keep.append((visible_at, channel, quantity))
        listing.pending = keep

    # -- HTTP ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {
            "x-amzn-RequestId": str(uuid.uuid4()),
            "x-amzn-RateLimit-Limit": f"{self.rate:.1f}",
        }

    def _errors(self, status: int, code: str, message: str, details: str = "") -> Response:
        return Response.json(
            status,
            {"errors": [{"code": code, "message": message, "details": details}]},
            self._headers(),
        )

    def error_body(self, status: int, reason: str, kind: str) -> Response:
        if status == 429:
            return self._errors(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )
        if status == 503:
            return self._errors(503, "ServiceUnavailable", "Service temporarily unavailable.")
        return self._errors(
            status, "InternalFailure", "We encountered an internal error. Please try again."
        )

    def handle(self, request: RecordedRequest) -> Response:
        try:
            return self._handle(request)
        except _SpError as err:
            return self._errors(err.status, err.code, err.message, err.details)

    def _token_endpoint(self, request: RecordedRequest) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        status, payload = self.lwa.grant(
            form.get("client_id", ""), form.get("client_secret", ""), form
        )
        return Response.json(status, payload, {"Cache-Control": "no-store"})

    def _handle(self, request: RecordedRequest) -> Response:
        if request.path == LWA_TOKEN and request.method == "POST":
            return self._token_endpoint(request)
        token = request.header("x-amz-access-token")
        with self._lock:
            expired = token in self._expired
        grant = self.lwa.check(token)
        if grant == "valid" and not expired:
            token = self.access_token
        elif token is not None and (expired or grant == "expired"):
            raise _SpError(
                403,
                "Unauthorized",
                "Access to requested resource is denied.",
                "The access token you provided has expired.",
            )
        if token != self.access_token:
            raise _SpError(403, "Unauthorized", "Access to requested resource is denied.")
        match = _ITEM.match(request.path)
        if match is None or request.method not in ("GET", "PATCH"):
            raise _SpError(404, "NotFound", "Resource not found.")
        seller_id = unquote(match["seller"])
        sku = unquote(match["sku"])
        if seller_id != self.seller_id or (self.reject_special_skus and ("/" in sku or "#" in sku)):
            raise _SpError(403, "Unauthorized", "Access to requested resource is denied.")
        with self._buckets_lock:
            bucket = self._buckets.setdefault(seller_id, TokenBucket(self.rate, self.burst))
        if not bucket.take():
            raise _SpError(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )
        raw = request.param("marketplaceIds")
        if not raw:
            raise _invalid_input("Missing required 'marketplaceIds' parameter.")
        marketplaces = [m for m in raw.split(",") if m]
        if not marketplaces or any(m not in self.marketplace_ids for m in marketplaces):
            raise _invalid_input("Invalid 'sellerId' and 'marketplaceId' combination provided.")
        if request.method == "GET":
            return self._get(sku, (request.param("includedData") or "").split(","))
        return self._patch(request, seller_id, sku)

    def _get(self, sku: str, included: list[str]) -> Response:
        with self._lock:
            listing = self._listings.get(sku)
            if listing is None or sku in self._unknown:
                raise _SpError(404, "NOT_FOUND", f"SKU '{sku}' not found in marketplace.")
            self._settle(listing)
            availability = [
                {"fulfillmentChannelCode": channel, "quantity": quantity}
                for channel, quantity in listing.quantities.items()
                if quantity is not None
            ]
            issues = list(listing.issues)
        body: dict[str, Any] = {"sku": sku, "fulfillmentAvailability": availability}
        if "issues" in included:
            body["issues"] = issues
        return Response.json(200, body, self._headers())

    @staticmethod
    def _parse(request: RecordedRequest) -> tuple[str, list[dict[str, Any]]]:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise _invalid_input() from None
        if not isinstance(body, dict):
            raise _invalid_input()
        product_type = body.get("productType")
        patches = body.get("patches")
        if not isinstance(product_type, str) or not product_type:
            raise _invalid_input()
        if (
            not isinstance(patches, list)
            or not patches
            or not all(isinstance(p, dict) for p in patches)
        ):
            raise _invalid_input()
        for index, patch in enumerate(patches):
            op = patch.get("op")
            if not isinstance(op, str) or op.lower() not in OPS:
                raise _invalid_input(f"Invalid 'op' for patch at index of {index}.")
            if not isinstance(patch.get("path"), str) or not patch["path"].startswith(
                "/attributes/"
            ):
                raise _invalid_input(f"Path is missing or invalid for patch at index of {index}.")
            if op.lower() != "delete" and "value" not in patch:
                raise _invalid_input(f"Value is missing for patch at index of {index}.")
        return product_type, patches

    @staticmethod
    def _fulfillment_issues(value: Any) -> list[dict[str, Any]]:
        def issue(code: str, message: str, categories: list[str]) -> dict[str, Any]:
            return {
                "code": code,
                "message": message,
                "severity": "ERROR",
                "attributeNames": ["fulfillment_availability"],
                "categories": categories,
            }

        invalid = issue(
            "4000001", "The provided value for 'Fulfillment Availability' is invalid.", []
        )
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            return [invalid]
        issues = []
        for entry in value:
            if (
                not isinstance(entry.get("fulfillment_channel_code"), str)
                or not entry["fulfillment_channel_code"]
            ):
                issues.append(
                    issue(
                        "99022",
                        "The field 'fulfillment_channel_code' for the attribute "
                        "'fulfillment_availability' does not have enough values. "
                        "The required minimum is '1' value(s).",
                        ["INVALID_ATTRIBUTE"],
                    )
                )
            quantity = entry.get("quantity")
            if quantity is not None and (
                isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0
            ):
                issues.append(invalid)
        return issues

    def _patch(self, request: RecordedRequest, seller_id: str, sku: str) -> Response:
        product_type, patches = self._parse(request)
        preview = (request.param("mode") or "").upper() == "VALIDATION_PREVIEW"
        issues: list[dict[str, Any]] = []
        for patch in patches:
            if patch["path"] == FULFILLMENT_PATH and patch["op"].lower() != "delete":
                issues.extend(self._fulfillment_issues(patch["value"]))
        with self._lock:
            known = sku in self._listings and sku not in self._unknown
            if not known and (self.unknown_sku == "invalid" or sku in self._unknown):
                issues.append(
                    {
                        "code": "FAKE_SKU_NOT_FOUND",
                        "message": f"SKU '{sku}' does not match any listing of this seller.",
                        "severity": "ERROR",
                        "attributeNames": [],
                        "categories": [],
                    }
                )
            status = "INVALID" if issues else ("VALID" if preview else "ACCEPTED")
            failed = self._fail_next.pop(sku, None) if status == "ACCEPTED" else None
            if status == "ACCEPTED" and sku in self._warn_next:
                issues.append(self._warn_next.pop(sku))
            if failed is not None:
                listing = self._listings.setdefault(sku, Listing(sku, product_type))
                listing.issues = [failed]
            elif status == "ACCEPTED":
                listing = self._listings.setdefault(sku, Listing(sku, product_type))
                listing.issues = []
                visible_at = time.monotonic() + self.apply_delay
                for patch in patches:
                    if patch["path"] != FULFILLMENT_PATH:
                        listing.attributes[patch["path"]] = patch.get("value")
                        continue
                    if patch["op"].lower() == "delete":
                        for channel in list(listing.quantities):
                            listing.pending.append((visible_at, channel, None))
                        continue
                    for entry in patch["value"]:
                        listing.pending.append(
                            (visible_at, entry["fulfillment_channel_code"], entry.get("quantity"))
                        )
                self._settle(listing)
            submission_id = uuid.uuid4().hex
            self._submissions.append(
                Submission(
                    seller_id,
                    sku,
                    status,
                    submission_id,
                    issues,
                    json.loads(request.body),
                    time.time(),
                )
            )
        http_status = self.invalid_http_status if status == "INVALID" else 200
        payload = {"sku": sku, "status": status, "submissionId": submission_id, "issues": issues}
        return Response.json(http_status, payload, self._headers())
