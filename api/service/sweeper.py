"""Expires holds: follows reservation events in the ledger and records HoldExpired.

An expired hold already stops counting at `expires_at` (the ATS function ignores it); the
sweeper makes that a fact in the ledger so projections and histories show it.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from eventsourcing.utils import get_topic

from adapters.ledger import Ledger, decode_payload
from api.service.commands import CommandService, Job, command_decider
from atp import commands as cmd
from atp import events as ev

log = logging.getLogger("atp.sweeper")
TOPICS = [
    get_topic(t)
    for t in (
        ev.ReservationPlaced,
        ev.ReservationExtended,
        ev.ReservationReleased,
        ev.ReservationExpired,
        ev.ReservationCommitted,
    )
]


class Sweeper:
    """Records expiry of held reservations past their expires_at: it follows the ledger
    for live reservations and submits ExpireReservation for each one due.

    `live` maps each held reservation id to its current expires_at (UTC); `due` is a heap
    of (expires_at, reservation id) with entries made stale by an extension, a release, a
    commit or an expiry left in place and skipped when they come up, so a sweep costs
    O(k log n) for k reservations due among n live ones, not a scan of every live hold
    (a flash sale holds 10^5 of them, swept every second in the writer's process)."""

    def __init__(self, ledger: Ledger, service: CommandService) -> None:
        self.ledger = ledger
        self.service = service
        self.position = 0
        self.live: dict[str, datetime] = {}
        self.due: list[tuple[datetime, str]] = []

    def _hold(self, reservation_id: str, expires_at: datetime) -> None:
        self.live[reservation_id] = expires_at
        heapq.heappush(self.due, (expires_at, reservation_id))

    def _compact(self) -> None:
        """Drop stale heap entries once they outnumber the live ones (keeps memory O(n))."""
        if len(self.due) > 2 * len(self.live) + 1024:
            self.due = [(at, rid) for rid, at in self.live.items()]
            heapq.heapify(self.due)

    def catch_up(self) -> None:
        """Read the ledger's new reservation events into the live set."""
        while True:
            batch = self.ledger.recorder.select_notifications(
                self.position + 1, 1000, topics=TOPICS
            )
            for notification in batch:
                self.position = max(self.position, notification.id)
                event, _, _ = decode_payload(notification.topic, notification.state)
                match event:
                    case ev.ReservationPlaced() | ev.ReservationExtended():
                        self._hold(event.reservation_id, event.expires_at)
                    case (
                        ev.ReservationReleased()
                        | ev.ReservationExpired()
                        | ev.ReservationCommitted()
                    ):
                        self.live.pop(event.reservation_id, None)
            if len(batch) < 1000:
                self._compact()
                return

    def sweep_once(self) -> int:
        """Record expiry of every held reservation past its expiry; returns how many.

        Raises what `CommandService.run_sync` raises (the ledger unreachable): the
        reservations not yet expired stay due for the next sweep."""
        self.catch_up()
        now = self.service.clock()
        due: dict[str, None] = {}  # in expiry order, each reservation once
        while self.due and self.due[0][0] <= now:
            expires_at, reservation_id = heapq.heappop(self.due)
            if self.live.get(reservation_id) == expires_at:
                due[reservation_id] = None
        for n, reservation_id in enumerate(due):
            command = cmd.ExpireReservation(reservation_id=reservation_id)
            job = Job(decide=command_decider(command), correlation_id=f"sweep:{reservation_id}")
            try:
                self.service.run_sync(job)
            except BaseException:
                for later in list(due)[n:]:
                    heapq.heappush(self.due, (self.live[later], later))
                raise
            self.live.pop(reservation_id, None)
        return len(due)

    def run(
        self,
        interval: float,
        stop: threading.Event,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        """Sweep every `interval` seconds until `stop` is set (a failed sweep is logged),
        while `active()` says so (in `atp serve` with several workers, only the worker that
        decides the writes sweeps: another's expiries would race its writer)."""
        while not stop.wait(interval):
            if not active():
                continue
            try:
                swept = self.sweep_once()
                if swept:
                    log.info("expired %d reservation(s)", swept)
            except Exception:
                log.exception("sweep failed; retrying")
