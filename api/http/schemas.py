"""Wire schemas: request and response bodies, separate from the ledger's events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from projections.views import AvailabilityView

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
Code = Annotated[str, msgspec.Meta(pattern=CODE_PATTERN)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
MAX_UNITS = 1_000_000_000
Units = Annotated[int, msgspec.Meta(ge=0, le=MAX_UNITS)]
"""A policy figure in units (buffer, backorder limit, threshold, safety stock): 0..10^9."""
MAX_POSITION = 2**63 - 1
"""Ledger positions are signed 64-bit integers in both SQLite and PostgreSQL."""
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An RFC 3339 time that carries its UTC offset (a naive time is ambiguous: 422)."""
Text = Annotated[str, msgspec.Meta(max_length=1000)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
"""Why stock moved outside a document (an adjustment, a transfer written off): never empty."""
Ttl = Annotated[int, msgspec.Meta(ge=1, le=86_400)]
Scope = Literal[
    "availability:read",
    "reservations:write",
    "orders:write",
    "stock:write",
    "policy:write",
    "admin",
]
MAX_LINES = 100


class LineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Code
    quantity: Quantity


# --- tokens --------------------------------------------------------------------------------


TOKEN_NAME_PATTERN = r"^[^/#\x00-\x1f\x7f]+$"
"""Token names are path segments (DELETE /v1/tokens/{name}): no '/', no control characters;
no '#', which `atp migrate` keeps for the names it gives clashing older tokens
(`name#<8 hex>`), so no token issued later can take one."""


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    rate_limit: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] | None = None
    """Requests per second (per API process); omitted: no limit."""


class TokenView(msgspec.Struct, omit_defaults=True):
    token: str
    name: str
    scopes: list[str]
    rate_limit: float | None = None


class TokenInfo(msgspec.Struct):
    """A token as `GET /v1/tokens` lists it: never the secret (nor its hash)."""

    name: str
    scopes: list[str]
    rate_limit: float | None
    created_at: datetime | None
    """None for a token issued before atp recorded issue times."""
    last_used_at: datetime | None
    """When it last authenticated a request, to within an hour; None: never."""


class TokenList(msgspec.Struct):
    tokens: list[TokenInfo]


class TokenDeleted(msgspec.Struct):
    name: str
    revoked_at: datetime


# --- policies ------------------------------------------------------------------------------


class LocationRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    kind: Literal["warehouse", "store", "dropship"]
    active: bool = True


class LocationView(msgspec.Struct):
    code: str
    name: str
    kind: str
    active: bool


class ChannelRequest(msgspec.Struct, forbid_unknown_fields=True):
    locations: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=100)]
    buffer: Units = 0
    share_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 100
    backorder_limit: Units = 0
    low_stock_threshold: Units = 5


class ChannelView(msgspec.Struct):
    code: str
    locations: list[str]
    buffer: int
    share_percent: int
    backorder_limit: int
    low_stock_threshold: int


class SafetyStockRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`PUT /v1/safety-stock`: a rule of `quantity` units held back for `sku` at `location`
    (0 removes it). null means every SKU or every location and must be said: both keys are
    required, and a body that leaves one out is a 400 naming it, never read as "every" (a
    rule for every SKU at every location holds stock back everywhere; the planner page asks
    for a ticked box the same way)."""

    sku: Code | None
    location: Code | None
    quantity: Units


class SafetyStockView(msgspec.Struct):
    sku: str | None
    location: str | None
    quantity: int


class LocationChange(LocationRequest, forbid_unknown_fields=True):
    """A location definition in a preview: the body of `PUT /v1/locations/{code}`."""


class ChannelChange(ChannelRequest, forbid_unknown_fields=True):
    """A channel definition in a preview: the body of `PUT /v1/channels/{code}`."""


class SafetyStockChange(SafetyStockRequest, forbid_unknown_fields=True):
    """A safety-stock rule in a preview: the body of `PUT /v1/safety-stock`."""


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/policies/preview`: the changes the policy PUTs would make, by code
    (an unknown field anywhere is refused: a misspelt figure must not preview as 0)."""

    channels: Annotated[dict[Code, ChannelChange], msgspec.Meta(max_length=100)] = {}
    locations: Annotated[dict[Code, LocationChange], msgspec.Meta(max_length=100)] = {}
    safety_stock: Annotated[list[SafetyStockChange], msgspec.Meta(max_length=1000)] = []


# --- stock movements -----------------------------------------------------------------------


class ReceiptRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Code
    lines: list[LineIn]
    reference: Text | None = None


class AdjustmentRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Code
    sku: Code
    delta: Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
    reason: Reason
    damaged: bool = False
    """Adjust damaged units (on-hand and damaged move together), e.g. a write-off."""


class CountLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Code
    counted: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]


class CountRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Code
    lines: list[CountLineIn]


class TransferRequest(msgspec.Struct, forbid_unknown_fields=True):
    transfer_id: Code
    from_location: Code
    to_location: Code
    lines: list[LineIn]


class TransferReceiptRequest(msgspec.Struct, forbid_unknown_fields=True):
    lines: list[LineIn] | None = None
    """What arrived; omitted: everything still in transit."""


class TransferCloseRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class IncomingLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Code
    quantity: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
    """The reference's expected units; 0 cancels the line (only with a reference)."""


class IncomingRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Code
    lines: list[IncomingLineIn]
    eta: UtcTime | None = None
    """Must carry a UTC offset; stored in UTC."""
    reference: Text | None = None


class MovementLine(msgspec.Struct):
    sku: str
    location: str
    on_hand: int
    in_transit: int
    incoming: int


class MovementView(msgspec.Struct, omit_defaults=True):
    kind: str
    lines: list[MovementLine]
    reference: str | None = None
    transfer_id: str | None = None
    status: str | None = None


# --- reservations and orders ---------------------------------------------------------------


class ReservationRequest(msgspec.Struct, forbid_unknown_fields=True):
    channel: Code
    lines: list[LineIn]
    ttl_seconds: Ttl = 900
    reference: Text | None = None


class ExtendRequest(msgspec.Struct, forbid_unknown_fields=True):
    ttl_seconds: Ttl


class CommitRequest(msgspec.Struct, forbid_unknown_fields=True):
    order_id: Code


class HoldView(msgspec.Struct, omit_defaults=True):
    location: str
    quantity: int
    backorder: bool = False


class ReservationLineView(msgspec.Struct):
    sku: str
    quantity: int
    holds: list[HoldView]


class ReservationView(msgspec.Struct, omit_defaults=True):
    reservation_id: str
    status: str
    expires_at: datetime
    channel: str
    lines: list[ReservationLineView]
    reference: str | None = None
    order_id: str | None = None


class OrderRequest(msgspec.Struct, forbid_unknown_fields=True):
    order_id: Code
    channel: Code
    lines: list[LineIn]


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    lines: list[LineIn] | None = None


class ShipmentRequest(msgspec.Struct, forbid_unknown_fields=True):
    shipment_id: Code
    location: Code
    lines: list[LineIn]


class ReturnLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Code
    quantity: Quantity
    disposition: Literal["restock", "damaged"] = "restock"


class ReturnRequest(msgspec.Struct, forbid_unknown_fields=True):
    return_id: Code
    location: Code
    lines: list[ReturnLineIn]


class OrderLineView(msgspec.Struct):
    sku: str
    quantity: int
    allocated: int
    shipped: int
    returned: int
    canceled: int


class UnmappedLineView(msgspec.Struct, omit_defaults=True):
    """A channel's order line atp could not map: its 0-based position, why, the SKU sent."""

    line: int
    reason: str
    sku: str | None = None


class OrderView(msgspec.Struct, omit_defaults=True):
    order_id: str
    status: str
    channel: str
    lines: list[OrderLineView]
    reservation_id: str | None = None
    unmapped: list[UnmappedLineView] = []


# --- availability and items ----------------------------------------------------------------


class HistoryPage(msgspec.Struct):
    entries: list[dict[str, Any]]
    next_after: int | None


class ShortLineView(msgspec.Struct):
    """A line a reservation or order could not cover (problem `insufficient-stock`)."""

    sku: str
    requested: int
    available: int


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem (media type application/problem+json), the body of every 4xx
    and 5xx answer. `code` is the stable machine name (also the last segment of `type`);
    `field` names the offending request member when one is at fault (`errors`: every
    validation error). The other members are carried by some domain problems (atp.errors):
    `lines` (shortfall per SKU), `resource`/`id`/`current_status` (not found, conflict,
    illegal state), `sku`/`location`/`quantity`/`current`/`change` (a figure that would go
    negative). Clients ignore members they do not know."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None
    lines: list[ShortLineView] | None = None
    resource: str | None = None
    id: str | None = None
    current_status: str | None = None
    sku: str | None = None
    location: str | None = None
    quantity: str | None = None
    current: int | None = None
    change: int | None = None


class AvailabilityList(msgspec.Struct):
    """GET /v1/availability/{channel}?sku=...: one read model document per SKU asked."""

    items: list[AvailabilityView]


class WebhookAnswer(msgspec.Struct, omit_defaults=True):
    """A webhook's answer: `status` is applied, unchanged (with `reason`), queued, pong,
    ignored (not an order topic) or echo (a product change atp made itself)."""

    status: str
    reason: str | None = None
