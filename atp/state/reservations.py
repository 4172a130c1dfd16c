"""The reservation stream: its lines, holds, expiry and status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, assert_never

import msgspec

from atp import events as ev

ReservationStatus = Literal["held", "released", "expired", "committed"]


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class ReservationState(msgspec.Struct, frozen=True, gc=False):
    """A reservation: its lines and holds, expiry (UTC) and status."""

    reservation_id: str
    channel: str
    lines: tuple[ev.ReservedLine, ...]
    expires_at: datetime
    reference: str | None
    status: ReservationStatus = "held"
    order_id: str | None = None

    def status_at(self, now: datetime) -> ReservationStatus:
        """An expired hold stops counting at `expires_at`, before any sweeper records it."""
        if self.status == "held" and now >= self.expires_at:
            return "expired"
        return self.status


def evolve_reservation(
    state: ReservationState | None, event: ev.ReservationEvent
) -> ReservationState | None:
    """The reservation after `event` (None until it is placed)."""
    if isinstance(event, ev.ReservationPlaced):
        return ReservationState(
            reservation_id=event.reservation_id,
            channel=event.channel,
            lines=event.lines,
            expires_at=event.expires_at,
            reference=event.reference,
        )
    if state is None:
        return None
    match event:
        case ev.ReservationExtended(expires_at=exp):
            return msgspec.structs.replace(state, expires_at=exp)
        case ev.ReservationReleased():
            return msgspec.structs.replace(state, status="released")
        case ev.ReservationExpired():
            return msgspec.structs.replace(state, status="expired")
        case ev.ReservationCommitted(order_id=order_id):
            return msgspec.structs.replace(state, status="committed", order_id=order_id)
        case _:
            assert_never(event)
