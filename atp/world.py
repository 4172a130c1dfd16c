"""A set of loaded stream states that implements `World` and folds decided events in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

from atp import events as ev
from atp.decide import NeedStreams
from atp.state import (
    ItemState,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
    evolve_item,
    evolve_order,
    evolve_policies,
    evolve_reservation,
    evolve_transfer,
)
from atp.streams import POLICIES, Stream

StreamState = Policies | ItemState | OrderState | ReservationState | TransferState | None


def initial_state(stream: Stream) -> StreamState:
    """A stream's state before its first event: empty policies, an item with no stock, or
    None (an order, reservation or transfer that does not exist yet, and record streams)."""
    kind, key = stream
    if kind == "policies":
        return Policies()
    if kind == "item":
        return ItemState(sku=key)
    return None


def evolve(stream: Stream, state: StreamState, event: ev.Event) -> StreamState:
    """`state` of `stream` after `event`, by the stream kind's own evolve.

    Raises TypeError when the event does not belong on that kind of stream (its union in
    `atp.events`), and ValueError for a stream of service records, which the domain
    does not fold."""
    kind = stream[0]
    match kind:
        case "policies":
            assert isinstance(state, Policies)
            if isinstance(event, ev.PolicyEvent):
                return evolve_policies(state, event)
        case "item":
            assert isinstance(state, ItemState)
            if isinstance(event, ev.ItemEvent):
                return evolve_item(state, event)
        case "order":
            assert state is None or isinstance(state, OrderState)
            if isinstance(event, ev.OrderEvent):
                return evolve_order(state, event)
        case "reservation":
            assert state is None or isinstance(state, ReservationState)
            if isinstance(event, ev.ReservationEvent):
                return evolve_reservation(state, event)
        case "transfer":
            assert state is None or isinstance(state, TransferState)
            if isinstance(event, ev.TransferEvent):
                return evolve_transfer(state, event)
        case (
            "token"
            | "token-use"
            | "tokens"
            | "idempotency"
            | "integration"
            | "webhook-order"
            | "order-poll"
            | "reconciliation"
            | "ui-session"
        ):
            raise ValueError(f"{stream} holds service records, not domain events")
        case _:
            assert_never(kind)
    raise TypeError(f"{type(event).__name__} does not belong on stream {stream}")


def fold(stream: Stream, events: Iterable[ev.Event], state: Any = ...) -> StreamState:
    """The state of `stream` after `events`, from `state` (default: its initial state)."""
    current: StreamState = initial_state(stream) if state is ... else state
    for event in events:
        current = evolve(stream, current, event)
    return current


class StateSet:
    """States by stream. Unknown streams raise NeedStreams unless `complete` is set, in
    which case they start empty (used where the whole ledger is in memory)."""

    def __init__(self, complete: bool = False) -> None:
        self.states: dict[Stream, StreamState] = {}
        self.complete = complete

    def put(self, stream: Stream, state: StreamState) -> None:
        """Set the loaded state of a stream."""
        self.states[stream] = state

    def get(self, stream: Stream) -> StreamState:
        """The state of a stream; NeedStreams when it is not loaded (unless `complete`)."""
        try:
            return self.states[stream]
        except KeyError:
            if not self.complete:
                raise NeedStreams([stream]) from None
            state = initial_state(stream)
            self.states[stream] = state
            return state

    def apply(self, stream: Stream, event: ev.Event) -> None:
        """Fold `event` into the stream's state (`evolve`)."""
        self.states[stream] = evolve(stream, self.get(stream), event)

    # World protocol

    def policies(self) -> Policies:
        """The policies (World protocol)."""
        state = self.get(POLICIES)
        assert isinstance(state, Policies)
        return state

    def item(self, sku: str) -> ItemState:
        """The state of one SKU (World protocol)."""
        state = self.get(("item", sku))
        assert isinstance(state, ItemState)
        return state

    def items(self, skus: Iterable[str]) -> dict[str, ItemState]:
        """The states of several SKUs, by SKU; NeedStreams names every one not loaded."""
        wanted = list(dict.fromkeys(skus))
        missing: list[Stream] = [("item", s) for s in wanted if ("item", s) not in self.states]
        if missing and not self.complete:
            raise NeedStreams(missing)
        return {sku: self.item(sku) for sku in wanted}

    def order(self, order_id: str) -> OrderState | None:
        """The order, or None (World protocol)."""
        state = self.get(("order", order_id))
        assert state is None or isinstance(state, OrderState)
        return state

    def reservation(self, reservation_id: str) -> ReservationState | None:
        """The reservation, or None (World protocol)."""
        state = self.get(("reservation", reservation_id))
        assert state is None or isinstance(state, ReservationState)
        return state

    def transfer(self, transfer_id: str) -> TransferState | None:
        """The transfer, or None (World protocol)."""
        state = self.get(("transfer", transfer_id))
        assert state is None or isinstance(state, TransferState)
        return state
