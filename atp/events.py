"""Ledger events: frozen, tagged msgspec structs, named in the past tense.

Item events carry their SKU so that projections need nothing but the event.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class Event(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Base of every ledger event."""


class Hold(msgspec.Struct, frozen=True):
    """Units of one SKU set aside at one location (for a hold or an allocation).

    `backorder` units are promised out of expected supply (`incoming`), not on-hand stock.
    """

    location: str
    quantity: int
    backorder: bool = False


# --- policies (stream: policies) -------------------------------------------------------


class LocationDefined(Event, frozen=True):
    code: str
    name: str
    kind: str
    active: bool


class ChannelDefined(Event, frozen=True):
    code: str
    locations: tuple[str, ...]
    buffer: int
    share_percent: int
    backorder_limit: int
    low_stock_threshold: int


class SafetyStockSet(Event, frozen=True):
    """A safety-stock rule; quantity 0 removes it. SKU rules live on the item's stream."""

    sku: str | None
    location: str | None
    quantity: int


# --- items (stream: item per SKU) ------------------------------------------------------


class StockReceived(Event, frozen=True):
    sku: str
    location: str
    quantity: int
    reference: str | None
    incoming_consumed: int


class StockAdjusted(Event, frozen=True):
    sku: str
    location: str
    delta: int
    reason: str
    damaged: bool = False


class StockCounted(Event, frozen=True):
    sku: str
    location: str
    counted: int
    previous: int


class TransferDispatched(Event, frozen=True):
    sku: str
    transfer_id: str
    from_location: str
    to_location: str
    quantity: int


class TransferArrived(Event, frozen=True):
    sku: str
    transfer_id: str
    to_location: str
    quantity: int


class IncomingExpected(Event, frozen=True):
    sku: str
    location: str
    quantity: int
    eta: datetime | None
    reference: str | None


class StockHeld(Event, frozen=True):
    sku: str
    reservation_id: str
    channel: str
    holds: tuple[Hold, ...]
    expires_at: datetime


class HoldExtended(Event, frozen=True):
    sku: str
    reservation_id: str
    expires_at: datetime


class HoldReleased(Event, frozen=True):
    sku: str
    reservation_id: str


class HoldExpired(Event, frozen=True):
    sku: str
    reservation_id: str


class HoldCommitted(Event, frozen=True):
    """The reservation's holds of this SKU became the order's allocations."""

    sku: str
    reservation_id: str
    order_id: str


class StockAllocated(Event, frozen=True):
    sku: str
    order_id: str
    channel: str
    allocations: tuple[Hold, ...]


class AllocationReleased(Event, frozen=True):
    """Unshipped allocations of an order returned to stock (a cancel)."""

    sku: str
    order_id: str
    allocations: tuple[Hold, ...]


class StockShipped(Event, frozen=True):
    sku: str
    order_id: str
    shipment_id: str
    location: str
    quantity: int
    backorder_quantity: int


class ShortfallRecorded(Event, frozen=True):
    """An order accepted from a channel that had already sold units atp could not cover:
    recorded for ops to resolve, never refused."""

    sku: str
    order_id: str
    quantity: int


class ShortfallResolved(Event, frozen=True):
    sku: str
    order_id: str
    quantity: int


class StockReturned(Event, frozen=True):
    sku: str
    order_id: str
    return_id: str
    location: str
    quantity: int
    disposition: str


# --- reservations (stream: reservation per id) ----------------------------------------


class ReservedLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    holds: tuple[Hold, ...]


class ReservationPlaced(Event, frozen=True):
    reservation_id: str
    channel: str
    lines: tuple[ReservedLine, ...]
    expires_at: datetime
    reference: str | None


class ReservationExtended(Event, frozen=True):
    reservation_id: str
    expires_at: datetime


class ReservationReleased(Event, frozen=True):
    reservation_id: str


class ReservationExpired(Event, frozen=True):
    reservation_id: str


class ReservationCommitted(Event, frozen=True):
    reservation_id: str
    order_id: str


# --- orders (stream: order per id) ----------------------------------------------------


class OrderLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class ReturnLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    disposition: str


class OrderPlaced(Event, frozen=True):
    """An order accepted with every line allocated (all or nothing)."""

    order_id: str
    channel: str
    lines: tuple[OrderLine, ...]
    reservation_id: str | None
    shortfall: tuple[OrderLine, ...] = ()
    """Units of the lines that could not be allocated (a sale made elsewhere)."""


class OrderCanceled(Event, frozen=True):
    order_id: str
    lines: tuple[OrderLine, ...]


class OrderShipped(Event, frozen=True):
    order_id: str
    shipment_id: str
    location: str
    lines: tuple[OrderLine, ...]


class OrderReturned(Event, frozen=True):
    order_id: str
    return_id: str
    location: str
    lines: tuple[ReturnLine, ...]


# --- transfers (stream: transfer per id) ----------------------------------------------


class TransferShipped(Event, frozen=True):
    transfer_id: str
    from_location: str
    to_location: str
    lines: tuple[OrderLine, ...]


class TransferReceived(Event, frozen=True):
    transfer_id: str


PolicyEvent = LocationDefined | ChannelDefined | SafetyStockSet
ItemEvent = (
    StockReceived
    | StockAdjusted
    | StockCounted
    | TransferDispatched
    | TransferArrived
    | IncomingExpected
    | StockHeld
    | HoldExtended
    | HoldReleased
    | HoldExpired
    | HoldCommitted
    | StockAllocated
    | AllocationReleased
    | StockShipped
    | StockReturned
    | SafetyStockSet
    | ShortfallRecorded
    | ShortfallResolved
)
ReservationEvent = (
    ReservationPlaced
    | ReservationExtended
    | ReservationReleased
    | ReservationExpired
    | ReservationCommitted
)
OrderEvent = OrderPlaced | OrderCanceled | OrderShipped | OrderReturned
TransferEvent = TransferShipped | TransferReceived

ALL_EVENTS: tuple[type[Event], ...] = (
    LocationDefined,
    ChannelDefined,
    SafetyStockSet,
    StockReceived,
    StockAdjusted,
    StockCounted,
    TransferDispatched,
    TransferArrived,
    IncomingExpected,
    StockHeld,
    HoldExtended,
    HoldReleased,
    HoldExpired,
    HoldCommitted,
    StockAllocated,
    AllocationReleased,
    StockShipped,
    StockReturned,
    ShortfallRecorded,
    ShortfallResolved,
    ReservationPlaced,
    ReservationExtended,
    ReservationReleased,
    ReservationExpired,
    ReservationCommitted,
    OrderPlaced,
    OrderCanceled,
    OrderShipped,
    OrderReturned,
    TransferShipped,
    TransferReceived,
)
