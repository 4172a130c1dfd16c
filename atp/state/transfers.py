"""The transfer stream: its lines, what arrived and what was lost."""

from __future__ import annotations

from typing import Literal, assert_never

import msgspec

from atp import events as ev

TransferStatus = Literal["in_transit", "received", "closed", "canceled"]


class TransferState(msgspec.Struct, frozen=True, gc=False):
    """A transfer between two locations: its lines, what arrived, what was lost."""

    transfer_id: str
    from_location: str
    to_location: str
    lines: tuple[ev.OrderLine, ...]
    status: TransferStatus = "in_transit"
    received: dict[str, int] = {}
    """Units received so far, by SKU."""
    lost: dict[str, int] = {}
    """Units written off when the transfer was closed, by SKU."""

    def in_transit(self, sku: str) -> int:
        """Units of `sku` shipped and neither received nor written off."""
        shipped = sum(line.quantity for line in self.lines if line.sku == sku)
        return shipped - self.received.get(sku, 0) - self.lost.get(sku, 0)


def evolve_transfer(state: TransferState | None, event: ev.TransferEvent) -> TransferState | None:
    """The transfer after `event` (None until it is shipped)."""
    if isinstance(event, ev.TransferShipped):
        return TransferState(
            transfer_id=event.transfer_id,
            from_location=event.from_location,
            to_location=event.to_location,
            lines=event.lines,
        )
    if state is None:
        return None
    match event:
        case ev.TransferReceived(lines=lines):
            received = dict(state.received)
            for line in lines or state.lines:
                received[line.sku] = received.get(line.sku, 0) + line.quantity
            moved = msgspec.structs.replace(state, received=received)
            done = all(moved.in_transit(line.sku) == 0 for line in state.lines)
            return msgspec.structs.replace(moved, status="received") if done else moved
        case ev.TransferClosed(lines=lines):
            lost = {line.sku: line.quantity for line in lines}
            return msgspec.structs.replace(state, lost=lost, status="closed")
        case ev.TransferCanceled():
            return msgspec.structs.replace(state, status="canceled")
        case _:
            assert_never(event)
