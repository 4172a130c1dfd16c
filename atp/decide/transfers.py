"""Transfers between locations: ship, receive, close and cancel."""

from __future__ import annotations

from datetime import datetime

from atp import commands as cmd
from atp import events as ev
from atp.decide.base import Decision, World, _lines, _location
from atp.decide.stock import _fact, _free_to_leave
from atp.errors import (
    AlreadyExists,
    IllegalState,
    InsufficientStock,
    InvalidCommand,
    NotFound,
    ShortLine,
)
from atp.state import (
    TransferState,
)


def _ship_transfer(c: cmd.ShipTransfer, world: World, now: datetime) -> Decision:
    policies = world.policies()
    _location(policies, c.from_location, "from_location")
    _location(policies, c.to_location, "to_location")
    if c.from_location == c.to_location:
        raise InvalidCommand("to_location", "a transfer needs two different locations")
    _lines(c.lines)
    if world.transfer(c.transfer_id) is not None:
        raise AlreadyExists("transfer", c.transfer_id)
    items = world.items(line.sku for line in c.lines)
    short = []
    for line in c.lines:
        free = _free_to_leave(items[line.sku], policies, c.from_location, now)
        if line.quantity > free:
            short.append(ShortLine(line.sku, line.quantity, free))
    if short:
        raise InsufficientStock(short)
    decision: Decision = [
        (
            ("item", line.sku),
            ev.TransferDispatched(
                sku=line.sku,
                transfer_id=c.transfer_id,
                from_location=c.from_location,
                to_location=c.to_location,
                quantity=line.quantity,
            ),
        )
        for line in c.lines
    ]
    lines = tuple(ev.OrderLine(line.sku, line.quantity) for line in c.lines)
    shipped = ev.TransferShipped(
        transfer_id=c.transfer_id,
        from_location=c.from_location,
        to_location=c.to_location,
        lines=lines,
    )
    decision.append((("transfer", c.transfer_id), shipped))
    return decision


def _open_transfer(world: World, transfer_id: str, action: str) -> TransferState:
    transfer = world.transfer(transfer_id)
    if transfer is None:
        raise NotFound("transfer", transfer_id)
    if transfer.status != "in_transit":
        raise IllegalState("transfer", transfer_id, transfer.status, action)
    return transfer


def _receive_transfer(c: cmd.ReceiveTransfer, world: World, now: datetime) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "receive")
    if c.lines is None:
        lines = [
            ev.OrderLine(line.sku, transfer.in_transit(line.sku))
            for line in transfer.lines
            if transfer.in_transit(line.sku) > 0
        ]
    else:
        _lines(c.lines)
        short = []
        for i, given in enumerate(c.lines):
            if not any(shipped.sku == given.sku for shipped in transfer.lines):
                raise InvalidCommand(
                    f"lines[{i}].sku", f"SKU {given.sku!r} is not on transfer {c.transfer_id!r}"
                )
            if given.quantity > transfer.in_transit(given.sku):
                short.append(ShortLine(given.sku, given.quantity, transfer.in_transit(given.sku)))
        if short:
            raise InsufficientStock(short, "cannot receive more than is still in transit")
        lines = [ev.OrderLine(given.sku, given.quantity) for given in c.lines]
    items = world.items(line.sku for line in lines)
    decision: Decision = []
    for line in lines:
        arrived = ev.TransferArrived(
            sku=line.sku,
            transfer_id=c.transfer_id,
            to_location=transfer.to_location,
            quantity=line.quantity,
        )
        decision += _fact(world, items[line.sku], arrived, transfer.to_location, line.quantity, now)
    received = ev.TransferReceived(transfer_id=c.transfer_id, lines=tuple(lines))
    decision.append((("transfer", c.transfer_id), received))
    return decision


def _close_transfer(c: cmd.CloseTransfer, world: World) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "close")
    if not c.reason.strip():
        raise InvalidCommand("reason", "a reason is required to write units off as lost")
    lost = [
        ev.OrderLine(line.sku, transfer.in_transit(line.sku))
        for line in transfer.lines
        if transfer.in_transit(line.sku) > 0
    ]
    decision: Decision = [
        (
            ("item", line.sku),
            ev.TransferLost(
                sku=line.sku,
                transfer_id=c.transfer_id,
                to_location=transfer.to_location,
                quantity=line.quantity,
                reason=c.reason,
            ),
        )
        for line in lost
    ]
    closed = ev.TransferClosed(transfer_id=c.transfer_id, reason=c.reason, lines=tuple(lost))
    decision.append((("transfer", c.transfer_id), closed))
    return decision


def _cancel_transfer(c: cmd.CancelTransfer, world: World, now: datetime) -> Decision:
    transfer = _open_transfer(world, c.transfer_id, "cancel")
    if any(transfer.received.values()):
        raise IllegalState("transfer", c.transfer_id, "partially received", "cancel")
    items = world.items(line.sku for line in transfer.lines)
    decision: Decision = []
    for line in transfer.lines:
        returned = ev.TransferReturned(
            sku=line.sku,
            transfer_id=c.transfer_id,
            from_location=transfer.from_location,
            to_location=transfer.to_location,
            quantity=line.quantity,
        )
        source = transfer.from_location
        decision += _fact(world, items[line.sku], returned, source, line.quantity, now)
    decision.append((("transfer", c.transfer_id), ev.TransferCanceled(transfer_id=c.transfer_id)))
    return decision
