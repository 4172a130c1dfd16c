"""Commands: imperative, validated at the edge, decided by `atp.decide`."""

from __future__ import annotations

from datetime import datetime

import msgspec

from atp.events import UnmappedLine


class Command(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Base of every command."""


class Line(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class CountLine(msgspec.Struct, frozen=True):
    sku: str
    counted: int


class ReturnLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    disposition: str = "restock"


# --- policies ----------------------------------------------------------------------------


class DefineLocation(Command, frozen=True):
    code: str
    name: str
    kind: str
    active: bool = True


class DefineChannel(Command, frozen=True):
    code: str
    locations: tuple[str, ...]
    buffer: int = 0
    share_percent: int = 100
    backorder_limit: int = 0
    low_stock_threshold: int = 5


class SetSafetyStock(Command, frozen=True):
    sku: str | None
    location: str | None
    quantity: int


# --- stock movements ---------------------------------------------------------------------


class ReceiveStock(Command, frozen=True):
    location: str
    lines: tuple[Line, ...]
    reference: str | None = None


class AdjustStock(Command, frozen=True):
    location: str
    sku: str
    delta: int
    reason: str
    damaged: bool = False


class CountStock(Command, frozen=True):
    location: str
    lines: tuple[CountLine, ...]


class ShipTransfer(Command, frozen=True):
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
    reservation_id: str
    channel: str
    lines: tuple[Line, ...]
    ttl_seconds: int
    reference: str | None = None


class ExtendReservation(Command, frozen=True):
    reservation_id: str
    ttl_seconds: int


class ReleaseReservation(Command, frozen=True):
    reservation_id: str


class ExpireReservation(Command, frozen=True):
    """Recorded by the sweeper; a no-op unless the reservation is held and past expiry."""

    reservation_id: str


class CommitReservation(Command, frozen=True):
    reservation_id: str
    order_id: str


# --- orders ------------------------------------------------------------------------------


class PlaceOrder(Command, frozen=True):
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
    order_id: str
    lines: tuple[Line, ...] | None = None


class ShipOrder(Command, frozen=True):
    order_id: str
    shipment_id: str
    location: str
    lines: tuple[Line, ...]


class ReturnOrder(Command, frozen=True):
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
