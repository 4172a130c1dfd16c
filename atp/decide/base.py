"""What every decision shares: the `World` it reads, the `Decision` it returns, and the
checks on locations, channels and lines that several commands make."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Protocol

from atp import events as ev
from atp.errors import (
    InvalidCommand,
    UnknownChannel,
    UnknownLocation,
)
from atp.state import (
    Channel,
    ItemState,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
)
from atp.streams import Stream

Decision = list[tuple[Stream, ev.Event]]
"""What a command decided: each event with the stream it is appended to, in order."""

LOCATION_KINDS = ("warehouse", "store", "dropship")
DISPOSITIONS = ("restock", "damaged")


class NeedStreams(Exception):
    """The command reads streams the caller has not loaded yet."""

    def __init__(self, streams: Sequence[Stream]) -> None:
        super().__init__(streams)
        self.streams = tuple(streams)


class _LineLike(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...


class World(Protocol):
    """Read access to the current state of streams (raises NeedStreams when not loaded)."""

    def policies(self) -> Policies:
        """The policies (locations, channels, location-wide safety stock)."""
        ...

    def item(self, sku: str) -> ItemState:
        """The state of one SKU (empty when it has no events)."""
        ...

    def items(self, skus: Iterable[str]) -> dict[str, ItemState]:
        """The states of several SKUs, by SKU."""
        ...

    def order(self, order_id: str) -> OrderState | None:
        """The order, or None when it does not exist."""
        ...

    def reservation(self, reservation_id: str) -> ReservationState | None:
        """The reservation, or None when it does not exist."""
        ...

    def transfer(self, transfer_id: str) -> TransferState | None:
        """The transfer, or None when it does not exist."""
        ...


def _location(policies: Policies, code: str, field: str) -> None:
    if code not in policies.locations:
        raise UnknownLocation(field, code)


def _channel(policies: Policies, code: str, field: str = "channel") -> Channel:
    channel = policies.channels.get(code)
    if channel is None:
        raise UnknownChannel(field, code)
    return channel


def _by_sku(line: _LineLike) -> Hashable:
    return line.sku


def _lines(
    lines: Sequence[_LineLike],
    minimum: int = 1,
    key: Callable[[_LineLike], Hashable] = _by_sku,
) -> None:
    """At least one line, each distinct by `key` (the SKU unless a line kind says more),
    each quantity >= `minimum`."""
    if not lines:
        raise InvalidCommand("lines", "at least one line is required")
    seen: set[Hashable] = set()
    for i, line in enumerate(lines):
        if key(line) in seen:
            label = f"SKU {line.sku!r}" if key is _by_sku else f"line {key(line)!r}"
            raise InvalidCommand(f"lines[{i}].sku", f"{label} appears more than once")
        seen.add(key(line))
        if line.quantity < minimum:
            raise InvalidCommand(f"lines[{i}].quantity", f"quantity must be >= {minimum}")


def _non_negative(value: int, field: str) -> None:
    if value < 0:
        raise InvalidCommand(field, f"{field} must be >= 0")
