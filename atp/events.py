"""Ledger events: frozen, tagged msgspec structs, named in the past tense.

Item events carry their SKU so that projections need nothing but the event.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class Event(msgspec.Struct, frozen=True, gc=False, tag=True, kw_only=True):
    """Base of every ledger event."""


class Hold(msgspec.Struct, frozen=True, gc=False):
    """Units of one SKU set aside at one location (for a hold or an allocation).

    `backorder` units are promised out of expected supply (`incoming`), not on-hand stock.
    """

    location: str
    quantity: int
    backorder: bool = False


# --- policies (stream: policies) -------------------------------------------------------


class LocationDefined(Event, frozen=True):
    """A location was created or updated."""

    code: str
    name: str
    kind: str
    active: bool


class ChannelDefined(Event, frozen=True):
    """A channel was created or updated, with its sourcing and buffers."""

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
    """Units arrived at a location; `incoming_consumed` of them were expected supply
    (they leave `incoming`)."""

    sku: str
    location: str
    quantity: int
    reference: str | None
    incoming_consumed: int


class StockAdjusted(Event, frozen=True):
    """On-hand units at a location corrected by `delta`; with `damaged`, on_hand and
    damaged (unsellable) both moved by `delta`."""

    sku: str
    location: str
    delta: int
    reason: str
    damaged: bool = False


class StockCounted(Event, frozen=True):
    """A count set the on-hand units at a location to `counted` (from `previous`)."""

    sku: str
    location: str
    counted: int
    previous: int


class StockReconciled(Event, frozen=True):
    """A reconciliation with an ERP/WMS snapshot found `drift` units (snapshot minus atp's
    on-hand at the location as of `as_of`) and moved today's on-hand by it, so movements
    after `as_of` survive; `reconciliation_id` names the report (issue 13 §3).
    `drift_found` is the drift the snapshot showed when on-hand could only go down to 0
    (`drift` is then less): what the on-hand really was as of `as_of` (None: `drift`)."""

    sku: str
    location: str
    drift: int
    as_of: datetime
    reconciliation_id: str
    drift_found: int | None = None


class Uncovered(msgspec.Struct, frozen=True, gc=False):
    """Units of one order's allocation (kind "order") or one reservation's hold (kind
    "hold") that on-hand stock at a location no longer covers."""

    kind: str
    id: str
    quantity: int


class OverPromised(Event, frozen=True):
    """A physical fact (count, adjustment, damage, shipment) left `on_hand` at a location
    below what is allocated and held there: recorded, never refused. `quantity` is the
    over-promised units after the fact, `uncovered` the claims left without stock (newest
    holds first, then newest orders)."""

    sku: str
    location: str
    quantity: int
    uncovered: tuple[Uncovered, ...]


class TransferDispatched(Event, frozen=True):
    """Units of a transfer left `from_location`; in transit to `to_location`."""

    sku: str
    transfer_id: str
    from_location: str
    to_location: str
    quantity: int


class TransferArrived(Event, frozen=True):
    """In-transit units of a transfer arrived at `to_location` (on hand there)."""

    sku: str
    transfer_id: str
    to_location: str
    quantity: int


class TransferLost(Event, frozen=True):
    """Units of a transfer that never arrived, written off when the transfer was closed."""

    sku: str
    transfer_id: str
    to_location: str
    quantity: int
    reason: str


class TransferReturned(Event, frozen=True):
    """A canceled transfer's units back on the source's shelves (nothing had arrived)."""

    sku: str
    transfer_id: str
    from_location: str
    to_location: str
    quantity: int


class IncomingExpected(Event, frozen=True):
    """Expected supply. With a reference (a purchase order), `quantity` is the reference's
    new total for this SKU and location and `previous` what it expected before (a revision
    replaces it; 0 cancels); without one, `quantity` adds to the anonymous supply."""

    sku: str
    location: str
    quantity: int
    eta: datetime | None
    reference: str | None
    previous: int = 0


class StockHeld(Event, frozen=True):
    """Units held for a reservation on a channel until `expires_at` (per location)."""

    sku: str
    reservation_id: str
    channel: str
    holds: tuple[Hold, ...]
    expires_at: datetime


class HoldExtended(Event, frozen=True):
    """A reservation's holds of this SKU now expire at `expires_at`."""

    sku: str
    reservation_id: str
    expires_at: datetime


class HoldReleased(Event, frozen=True):
    """A reservation's holds of this SKU were given back."""

    sku: str
    reservation_id: str


class HoldExpired(Event, frozen=True):
    """A reservation's holds of this SKU expired and were given back."""

    sku: str
    reservation_id: str


class HoldCommitted(Event, frozen=True):
    """The reservation's holds of this SKU became the order's allocations."""

    sku: str
    reservation_id: str
    order_id: str


class StockAllocated(Event, frozen=True):
    """Units allocated to an order (per location; `backorder` holds are promised against
    incoming supply)."""

    sku: str
    order_id: str
    channel: str
    allocations: tuple[Hold, ...]


class AllocationReleased(Event, frozen=True):
    """Unshipped allocations of an order returned to stock (a cancel)."""

    sku: str
    order_id: str
    allocations: tuple[Hold, ...]


class AllocationMoved(Event, frozen=True):
    """An order's units shipped from another of its channel's locations than the one they
    were allocated at: the allocations `moved` (per source location) now sit at
    `to_location` (re-sourcing, a fact reported by the warehouse)."""

    sku: str
    order_id: str
    to_location: str
    moved: tuple[Hold, ...]


class StockShipped(Event, frozen=True):
    """Units of an order left a location; `backorder_quantity` of them had been promised
    against incoming supply."""

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
    """Units an order was owed are no longer owed (the order was cancelled or reduced)."""

    sku: str
    order_id: str
    quantity: int


class ShortfallFilled(Event, frozen=True):
    """Units that arrived at `location` became the allocation of an order owed them."""

    sku: str
    order_id: str
    location: str
    quantity: int


class StockReturned(Event, frozen=True):
    """Shipped units came back to a location: `restock` (sellable) or `damaged`."""

    sku: str
    order_id: str
    return_id: str
    location: str
    quantity: int
    disposition: str


# --- reservations (stream: reservation per id) ----------------------------------------


class ReservedLine(msgspec.Struct, frozen=True, gc=False):
    """A reserved SKU: its units and the holds (per location) that cover them."""

    sku: str
    quantity: int
    holds: tuple[Hold, ...]


class ReservationPlaced(Event, frozen=True):
    """A reservation was placed on a channel, held until `expires_at`."""

    reservation_id: str
    channel: str
    lines: tuple[ReservedLine, ...]
    expires_at: datetime
    reference: str | None


class ReservationExtended(Event, frozen=True):
    """The reservation now expires at `expires_at`."""

    reservation_id: str
    expires_at: datetime


class ReservationReleased(Event, frozen=True):
    """The reservation was released; its holds were given back."""

    reservation_id: str


class ReservationExpired(Event, frozen=True):
    """The reservation expired; its holds were given back."""

    reservation_id: str


class ReservationCommitted(Event, frozen=True):
    """The reservation became order `order_id`."""

    reservation_id: str
    order_id: str


# --- orders (stream: order per id) ----------------------------------------------------


class OrderLine(msgspec.Struct, frozen=True, gc=False):
    """Units of a SKU on an order (or a transfer)."""

    sku: str
    quantity: int


class ReturnLine(msgspec.Struct, frozen=True, gc=False):
    """Returned units of a SKU and their disposition (`restock` or `damaged`)."""

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


class OrderShortfallFilled(Event, frozen=True):
    """Owed units of the order's line became allocated (arrivals filled its shortfall)."""

    order_id: str
    sku: str
    location: str
    quantity: int


class OrderCanceled(Event, frozen=True):
    """Units of the order's lines were cancelled."""

    order_id: str
    lines: tuple[OrderLine, ...]


class OrderShipped(Event, frozen=True):
    """Units of the order left `location` (shipment `shipment_id`)."""

    order_id: str
    shipment_id: str
    location: str
    lines: tuple[OrderLine, ...]


class OrderReturned(Event, frozen=True):
    """Shipped units of the order came back to `location` (return `return_id`)."""

    order_id: str
    return_id: str
    location: str
    lines: tuple[ReturnLine, ...]


class RevisedLine(msgspec.Struct, frozen=True, gc=False):
    """One line of an order after a revision: units ordered (shipped ones included) and how
    many of them atp covers (the rest is the order's shortfall of that SKU)."""

    sku: str
    quantity: int
    allocated: int


class UnmappedLine(msgspec.Struct, frozen=True, gc=False):
    """A channel's order line atp cannot map to an item: its position in the channel's
    order (0-based), the SKU as sent when it was a string, and why it was not mapped."""

    line: int
    reason: str
    sku: str | None = None


class OrderRevised(Event, frozen=True):
    """An order a channel had already taken changed to the channel's newer state: lines
    added, removed or edited, or a canceled order re-opened (`reopened`). `lines` is every
    line after the revision; canceled units are reset (the revision is the whole demand)."""

    order_id: str
    lines: tuple[RevisedLine, ...]
    reopened: bool = False


class OrderLinesUnmapped(Event, frozen=True):
    """The channel's lines of this order atp cannot map (replaces the previous list); they
    never become item state. Creates the order record if it has no mapped line yet."""

    order_id: str
    channel: str
    lines: tuple[UnmappedLine, ...]


# --- transfers (stream: transfer per id) ----------------------------------------------


class TransferShipped(Event, frozen=True):
    """A transfer was created and its units sent from `from_location` to `to_location`."""

    transfer_id: str
    from_location: str
    to_location: str
    lines: tuple[OrderLine, ...]


class TransferReceived(Event, frozen=True):
    """Lines received at the destination; no lines (older events): everything in transit."""

    transfer_id: str
    lines: tuple[OrderLine, ...] = ()


class TransferClosed(Event, frozen=True):
    """What was still in transit (`lines`) written off as lost."""

    transfer_id: str
    reason: str
    lines: tuple[OrderLine, ...]


class TransferCanceled(Event, frozen=True):
    """Nothing had arrived: every unit went back to the source."""

    transfer_id: str


PolicyEvent = LocationDefined | ChannelDefined | SafetyStockSet
ItemEvent = (
    StockReceived
    | StockAdjusted
    | StockCounted
    | StockReconciled
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
    | ShortfallFilled
    | OverPromised
    | AllocationMoved
    | TransferLost
    | TransferReturned
)
ReservationEvent = (
    ReservationPlaced
    | ReservationExtended
    | ReservationReleased
    | ReservationExpired
    | ReservationCommitted
)
OrderEvent = (
    OrderPlaced
    | OrderCanceled
    | OrderShipped
    | OrderReturned
    | OrderShortfallFilled
    | OrderRevised
    | OrderLinesUnmapped
)
TransferEvent = TransferShipped | TransferReceived | TransferClosed | TransferCanceled

ALL_EVENTS: tuple[type[Event], ...] = (
    LocationDefined,
    ChannelDefined,
    SafetyStockSet,
    StockReceived,
    StockAdjusted,
    StockCounted,
    StockReconciled,
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
    ShortfallFilled,
    OverPromised,
    AllocationMoved,
    TransferLost,
    TransferReturned,
    ReservationPlaced,
    ReservationExtended,
    ReservationReleased,
    ReservationExpired,
    ReservationCommitted,
    OrderPlaced,
    OrderCanceled,
    OrderShipped,
    OrderReturned,
    OrderShortfallFilled,
    TransferShipped,
    TransferReceived,
    TransferClosed,
    TransferCanceled,
    OrderRevised,
    OrderLinesUnmapped,
)
