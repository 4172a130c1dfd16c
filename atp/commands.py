"""Commands: imperative, validated at the edge, decided by `atp.decide`."""

from __future__ import annotations

from datetime import datetime

import msgspec

from atp.events import UnmappedLine


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class Command(msgspec.Struct, frozen=True, gc=False, tag=True, kw_only=True):
    """Base of every command."""


class Line(msgspec.Struct, frozen=True, gc=False):
    """A SKU and a quantity of units (>= 1 unless the command says otherwise)."""

    sku: str
    quantity: int


class CountLine(msgspec.Struct, frozen=True, gc=False):
    """A SKU and the units a physical count found (>= 0)."""

    sku: str
    counted: int


class ReturnLine(msgspec.Struct, frozen=True, gc=False):
    """Returned units of a SKU and what becomes of them: `restock` (sellable again) or
    `damaged` (on hand, not sellable)."""

    sku: str
    quantity: int
    disposition: str = "restock"


# --- policies ----------------------------------------------------------------------------


class DefineLocation(Command, frozen=True):
    """Create or update a location (`kind`: warehouse, store or dropship); an inactive
    location keeps its stock but sells none."""

    code: str
    name: str
    kind: str
    active: bool = True


class DefineChannel(Command, frozen=True):
    """Create or update a sales channel: the locations it sources from, its buffer (units
    kept back), share percent of the pool, backorder limit (units it may promise against
    incoming supply) and low-stock threshold."""

    code: str
    locations: tuple[str, ...]
    buffer: int = 0
    share_percent: int = 100
    backorder_limit: int = 0
    low_stock_threshold: int = 5


class SetSafetyStock(Command, frozen=True):
    """Set a safety-stock rule (units never sold): for a SKU, a location, both, or
    (both None) everything; quantity 0 removes the rule."""

    sku: str | None
    location: str | None
    quantity: int


# --- stock movements ---------------------------------------------------------------------


class ReceiveStock(Command, frozen=True):
    """Units arrived at a location (a goods receipt); `reference` names the expected
    supply (purchase order) they fulfil."""

    location: str
    lines: tuple[Line, ...]
    reference: str | None = None


class AdjustStock(Command, frozen=True):
    """A correction of on-hand units at a location by `delta` (+/-), with a reason;
    with `damaged`, the units are damaged ones (on hand, unsellable): on_hand and damaged
    both move by `delta`."""

    location: str
    sku: str
    delta: int
    reason: str
    damaged: bool = False


class CountStock(Command, frozen=True):
    """A physical count: each line's on-hand units at the location become `counted`."""

    location: str
    lines: tuple[CountLine, ...]


class DriftLine(msgspec.Struct, frozen=True, gc=False):
    """One SKU's drift in units: the snapshot's on-hand minus atp's as of the snapshot."""

    sku: str
    drift: int


class ReconcileStock(Command, frozen=True):
    """Correct on-hand at `location` by each line's drift found by reconciliation
    `reconciliation_id` against a snapshot taken at `as_of` (issue 13 §3)."""

    location: str
    reconciliation_id: str
    as_of: datetime
    lines: tuple[DriftLine, ...]


class ShipTransfer(Command, frozen=True):
    """Send units from one location to another: they leave `from_location` at once and
    are in transit until received."""

    transfer_id: str
    from_location: str
    to_location: str
    lines: tuple[Line, ...]


class ReceiveTransfer(Command, frozen=True):
    """Receive the lines given (a short receipt leaves the rest in transit); no lines:
    everything still in transit."""

    transfer_id: str
    lines: tuple[Line, ...] | None = None


class CloseTransfer(Command, frozen=True):
    """Write off what is still in transit as lost."""

    transfer_id: str
    reason: str


class CancelTransfer(Command, frozen=True):
    """Call a transfer off: its units go back to the source (only while nothing arrived)."""

    transfer_id: str


class ExpectIncoming(Command, frozen=True):
    """Expected supply. With a reference, each line replaces what that reference expected
    of the SKU at the location (quantity 0 cancels it); `eta` must carry a UTC offset."""

    location: str
    lines: tuple[Line, ...]
    eta: datetime | None = None
    reference: str | None = None


# --- reservations ------------------------------------------------------------------------


class ReserveStock(Command, frozen=True):
    """Hold units for a checkout on a channel for `ttl_seconds`; all lines or none
    (InsufficientStock names each short line)."""

    reservation_id: str
    channel: str
    lines: tuple[Line, ...]
    ttl_seconds: int
    reference: str | None = None


class ExtendReservation(Command, frozen=True):
    """Move a held reservation's expiry to `ttl_seconds` from now."""

    reservation_id: str
    ttl_seconds: int


class ReleaseReservation(Command, frozen=True):
    """Give a held reservation's units back (the shopper left)."""

    reservation_id: str


class ExpireReservation(Command, frozen=True):
    """Recorded by the sweeper; a no-op unless the reservation is held and past expiry."""

    reservation_id: str


class CommitReservation(Command, frozen=True):
    """Turn a held reservation into order `order_id`: its holds become allocations."""

    reservation_id: str
    order_id: str


# --- orders ------------------------------------------------------------------------------


class PlaceOrder(Command, frozen=True):
    """An order without a reservation, all lines allocated or none (InsufficientStock)."""

    order_id: str
    channel: str
    lines: tuple[Line, ...]


class AcceptOrder(Command, frozen=True):
    """An order a channel has already taken (a WooCommerce checkout): allocate what can be
    allocated and record the rest as a shortfall. A no-op if the order exists."""

    order_id: str
    channel: str
    lines: tuple[Line, ...]


class CancelOrder(Command, frozen=True):
    """Cancel the given units of an order (None: every unshipped unit); what was
    allocated returns to stock, what was owed is no longer owed."""

    order_id: str
    lines: tuple[Line, ...] | None = None


class ShipOrder(Command, frozen=True):
    """Units of an order left `location` (shipment `shipment_id`); units allocated at
    another of the channel's locations are re-sourced (AllocationMoved)."""

    order_id: str
    shipment_id: str
    location: str
    lines: tuple[Line, ...]


class ReturnOrder(Command, frozen=True):
    """Shipped units of an order came back to `location` (return `return_id`)."""

    order_id: str
    return_id: str
    location: str
    lines: tuple[ReturnLine, ...]


class ReviseOrder(Command, frozen=True):
    """The desired state of an order a channel has already taken (a WooCommerce snapshot):
    its lines (units still wanted, refunds deducted) and whether it is open (a sale) or
    closed (canceled, refunded, not yet paid).

    atp applies the difference from what it holds for the order: added units are allocated
    (what the channel cannot cover becomes a shortfall: a sale made is never refused),
    removed or reduced units are released (shortfall first, then allocations), a closed
    order releases everything unshipped, an open order that was canceled is re-opened.
    The same state twice decides nothing. `unmapped` lists the channel's lines atp cannot
    map; they are recorded on the order, never as item state.
    """

    order_id: str
    channel: str
    lines: tuple[Line, ...]
    open: bool = True
    unmapped: tuple[UnmappedLine, ...] = ()
