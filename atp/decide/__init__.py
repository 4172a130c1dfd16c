"""decide(command, world, now) -> events: every stock and policy rule lives here.

`World` gives the current state of the streams a command reads. Asking for a stream the
caller has not loaded raises `NeedStreams`, so the caller can load it and decide again;
that keeps the domain free of I/O while letting a command discover what it reads (a
reservation release reads the reservation, then the items it names).

One module per feature: `policies`, `stock` (receipts, adjustments, counts, expected
supply), `transfers`, `reservations`, `orders`; `base` holds `World`, `Decision` and the
checks they share. This module dispatches a command to its feature and says what it reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from atp import commands as cmd
from atp.decide.base import (
    DISPOSITIONS,
    LOCATION_KINDS,
    Decision,
    NeedStreams,
    World,
    _LineLike,
)
from atp.decide.orders import (
    _accept_order,
    _cancel_order,
    _place_order,
    _return_order,
    _revise_order,
    _ship_order,
)
from atp.decide.policies import _define_channel, _define_location, _set_safety_stock
from atp.decide.reservations import _commit, _expire, _extend, _release, _reserve
from atp.decide.stock import _adjust, _count, _expect_incoming, _receive, _reconcile
from atp.decide.transfers import (
    _cancel_transfer,
    _close_transfer,
    _receive_transfer,
    _ship_transfer,
)
from atp.errors import InvalidCommand
from atp.streams import POLICIES, DomainKind, Stream, StreamKind

__all__ = [
    "DISPOSITIONS",
    "LOCATION_KINDS",
    "POLICIES",
    "Decision",
    "NeedStreams",
    "Stream",
    "StreamKind",
    "World",
    "decide",
    "reads",
]


def decide(command: cmd.Command, world: World, now: datetime) -> Decision:
    """The events `command` decides against `world` at `now` (UTC), each with the stream it
    is appended to; nothing when it changes nothing.

    Raises a DomainError (InvalidCommand and its kinds, NotFound, AlreadyExists,
    IllegalState, InsufficientStock) when the command is refused, and NeedStreams when it
    reads a stream `world` has not loaded (load it and decide again)."""
    match command:
        case cmd.DefineLocation():
            return _define_location(command, world)
        case cmd.DefineChannel():
            return _define_channel(command, world)
        case cmd.SetSafetyStock():
            return _set_safety_stock(command, world)
        case cmd.ReceiveStock():
            return _receive(command, world, now)
        case cmd.AdjustStock():
            return _adjust(command, world, now)
        case cmd.CountStock():
            return _count(command, world, now)
        case cmd.ReconcileStock():
            return _reconcile(command, world, now)
        case cmd.ShipTransfer():
            return _ship_transfer(command, world, now)
        case cmd.ReceiveTransfer():
            return _receive_transfer(command, world, now)
        case cmd.CloseTransfer():
            return _close_transfer(command, world)
        case cmd.CancelTransfer():
            return _cancel_transfer(command, world, now)
        case cmd.ExpectIncoming():
            return _expect_incoming(command, world, now)
        case cmd.ReserveStock():
            return _reserve(command, world, now)
        case cmd.ExtendReservation():
            return _extend(command, world, now)
        case cmd.ReleaseReservation():
            return _release(command, world, now)
        case cmd.ExpireReservation():
            return _expire(command, world, now)
        case cmd.CommitReservation():
            return _commit(command, world, now)
        case cmd.PlaceOrder():
            return _place_order(command, world, now)
        case cmd.AcceptOrder():
            return _accept_order(command, world, now)
        case cmd.CancelOrder():
            return _cancel_order(command, world, now)
        case cmd.ShipOrder():
            return _ship_order(command, world, now)
        case cmd.ReturnOrder():
            return _return_order(command, world, now)
        case cmd.ReviseOrder():
            return _revise_order(command, world, now)
    raise InvalidCommand("type", f"unknown command {type(command).__name__}")


def discovered_reads(command: cmd.Command, loaded: Mapping[Stream, object]) -> list[Stream]:
    """Item streams a command will read that its loaded reservation or order names (a
    commit, release or extension reads the reservation's SKUs; a cancellation, shipment or
    return the order's), so a caller loads them for a whole batch in one go instead of
    meeting them one job at a time (NeedStreams). `loaded` maps streams to their states
    (absent: not loaded; None: no such reservation or order)."""
    streams: list[Stream] = []
    by_id: tuple[tuple[str, DomainKind], ...] = (
        ("reservation_id", "reservation"),
        ("order_id", "order"),
    )
    for field, kind in by_id:
        value = getattr(command, field, None)
        if isinstance(value, str):
            state = loaded.get((kind, value))
            lines: Sequence[_LineLike] = getattr(state, "lines", None) or ()
            streams += [("item", line.sku) for line in lines]
    return streams


def reads(command: cmd.Command) -> list[Stream]:
    """Streams a command is known to read before it is decided, so a caller can load them
    in one go; a command may still discover more (NeedStreams)."""
    streams: list[Stream] = [POLICIES]
    by_id: tuple[tuple[str, DomainKind], ...] = (
        ("order_id", "order"),
        ("reservation_id", "reservation"),
        ("transfer_id", "transfer"),
    )
    for field, kind in by_id:
        value = getattr(command, field, None)
        if isinstance(value, str):
            streams.append((kind, value))
    sku = getattr(command, "sku", None)
    if isinstance(sku, str):
        streams.append(("item", sku))
    lines: Sequence[_LineLike] | None = getattr(command, "lines", None)
    streams += [("item", line.sku) for line in lines or ()]
    return streams
