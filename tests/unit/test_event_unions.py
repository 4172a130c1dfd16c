"""The stream event unions in `atp.events` are complete, and a fold refuses an event that
does not belong on its stream (each evolve is exhaustive over its union: `assert_never`)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import pytest

from atp import events as ev
from atp.state import ItemState
from atp.world import evolve, fold

UNIONS = {
    "policies": ev.PolicyEvent,
    "item": ev.ItemEvent,
    "order": ev.OrderEvent,
    "reservation": ev.ReservationEvent,
    "transfer": ev.TransferEvent,
}


def _members(union: object) -> set[type]:
    return set(typing.get_args(union))


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_event_class_is_in_all_events_and_in_its_stream_unions() -> None:
    """Every event class is listed in ALL_EVENTS once and belongs to a stream's union;
    only SafetyStockSet belongs to two (a rule for every SKU is a policy, one for a SKU is
    the item's)."""
    assert len(ev.ALL_EVENTS) == len(set(ev.ALL_EVENTS))
    assert set(ev.ALL_EVENTS) == _all_subclasses(ev.Event)
    in_unions = [t for union in UNIONS.values() for t in _members(union)]
    assert set(in_unions) == set(ev.ALL_EVENTS)
    twice = {t for t in in_unions if in_unions.count(t) > 1}
    assert twice == {ev.SafetyStockSet}


def test_an_event_on_the_wrong_stream_is_refused_not_ignored() -> None:
    """Story: a bug appends a reservation's event to an item stream. Invariant: folding
    it raises instead of silently leaving the item's figures as they were."""
    placed = ev.ReservationPlaced(
        reservation_id="R1",
        channel="WEB",
        lines=(ev.ReservedLine(sku="MUG", quantity=1, holds=(ev.Hold("WH", 1),)),),
        expires_at=datetime(2026, 3, 1, tzinfo=UTC),
        reference=None,
    )
    with pytest.raises(TypeError, match="ReservationPlaced does not belong"):
        evolve(("item", "MUG"), ItemState(sku="MUG"), placed)
    with pytest.raises(ValueError, match="service records"):
        fold(("idempotency", "k"), [placed])
    assert fold(("reservation", "R1"), [placed]) is not None
