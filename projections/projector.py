"""The projector: follows the ledger's notification log and keeps the read model exact.

For every item or policy event it folds the SKU's state with the domain's own `evolve`,
computes each channel's figure with the one ATS function, and writes the SKU's documents
with the event's position. A SKU's documents and position change in one atomic step and a
write never replaces newer documents, so replaying events after a crash neither loses nor
double-applies anything. A policy change recomputes every SKU; a hold's expiry recomputes
its SKU when the clock passes `expires_at`, even if no event arrives.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

import msgspec
from eventsourcing.utils import get_topic

from adapters.amqp import AvailabilityChanged, Publisher
from adapters.ledger import Ledger, decode_payload, next_notifications, notification_page
from adapters.ledger_notify import NotificationListener
from atp import events as ev
from atp.state import ItemState, Policies, evolve_item, evolve_policies
from projections.readmodel import ReadModelStore, SkuWrite
from projections.views import SkuDocuments, sku_documents

log = logging.getLogger("atp.projector")
HEARTBEAT_SECONDS = 2.0
REPLAY_PAGE = 50_000
"""Ledger events read per query when rebuilding from nothing."""

POLICY_EVENTS: tuple[type[ev.Event], ...] = (ev.LocationDefined, ev.ChannelDefined)
ITEM_EVENTS: tuple[type[ev.Event], ...] = (
    ev.StockReceived,
    ev.StockAdjusted,
    ev.StockCounted,
    ev.StockReconciled,
    ev.TransferDispatched,
    ev.TransferArrived,
    ev.IncomingExpected,
    ev.StockHeld,
    ev.HoldExtended,
    ev.HoldReleased,
    ev.HoldExpired,
    ev.HoldCommitted,
    ev.StockAllocated,
    ev.AllocationReleased,
    ev.StockShipped,
    ev.StockReturned,
    ev.ShortfallRecorded,
    ev.ShortfallResolved,
    ev.ShortfallFilled,
    ev.OverPromised,
    ev.AllocationMoved,
    ev.TransferLost,
    ev.TransferReturned,
)
_PROJECTED: tuple[type[ev.Event], ...] = (*POLICY_EVENTS, ev.SafetyStockSet, *ITEM_EVENTS)
TOPICS = [get_topic(t) for t in _PROJECTED]


class Projector:
    def __init__(
        self,
        ledger: Ledger,
        store: ReadModelStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 1000,
        publisher: Publisher | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.publisher = publisher
        self.published: dict[tuple[str, str], tuple[int, str]] = {}
        self.clock = clock
        self.batch_size = batch_size
        self.position = 0
        self.policies = Policies()
        self.items: dict[str, tuple[ItemState, int]] = {}
        self.expiries: list[tuple[datetime, str, str, str]] = []
        """(expires_at, sku, reservation id, channel) of every hold taken or extended: a
        heap, with entries of holds that ended since left in until they are due."""
        self.touched: dict[str, dict[str, str]] = {}
        """SKU -> the holds (reservation id -> channel) that changed since it was written."""
        self.replaying = False
        """A rebuild is folding history: holds are tracked once, by its full write."""
        self.applied = 0
        self.last_heartbeat = 0.0

    def resume(self) -> None:
        """Continue from what the store holds."""
        state = self.store.load()
        self.position = state.position
        self.policies = state.policies
        self.items = state.items
        self.published = state.published
        self.expiries = []
        self.touched = {}
        for sku, (item, _) in self.items.items():
            # Holds that expired while no projector ran are due at once.
            for hold in item.holds.unordered():
                self._track_expiry(sku, hold.reservation_id, hold.channel, hold.expires_at)
        if self.publisher is not None:
            self.reconcile_published()

    # --- applying events ---------------------------------------------------------------------

    def step(self) -> int:
        """Apply the next batch of notifications; returns how many there were."""
        # One statement reads the head and the events up to it (see next_notifications): the
        # position may advance to the head even when the newest events are none of ours
        # (reservation, order, idempotency records).
        head, rows = next_notifications(self.ledger, TOPICS, self.position, self.batch_size)
        if not rows:
            if head > self.position:
                self.position = head
                self.store.write([], head, None, None)
            return 0
        dirty, correlation, policies_changed, last_time = self._fold(rows)
        position = rows[-1][0]
        if len(rows) < self.batch_size:
            position = max(position, head)
        policies = self.policies if policies_changed else None
        self._flush(list(dirty), False, position, policies, last_time, correlation)
        self.position = position
        self.applied += len(rows)
        return len(rows)

    def _fold(
        self, notifications: Sequence[tuple[int, str, bytes]]
    ) -> tuple[dict[str, int], dict[str, tuple[str, datetime]], bool, float | None]:
        """Fold (position, topic, stored state) rows into the in-memory states; returns the
        SKUs changed (with the position of the last event that changed each), their
        correlation ids, whether the policies changed, and the time of the last event
        (epoch seconds)."""
        dirty: dict[str, int] = {}
        correlation: dict[str, tuple[str, datetime]] = {}
        """SKU -> the correlation id and time of the event that last changed it."""
        policies_changed = False
        last_time = None
        for position, topic, stored in notifications:
            event, occurred_at, metadata = decode_payload(topic, stored)
            last_time = occurred_at.timestamp()
            if isinstance(event, POLICY_EVENTS) or (
                isinstance(event, ev.SafetyStockSet) and event.sku is None
            ):
                assert isinstance(event, ev.PolicyEvent)
                self.policies = evolve_policies(self.policies, event)
                policies_changed = True
                for sku in self.items:
                    dirty[sku] = position
                    correlation[sku] = (metadata.get("correlation_id", ""), occurred_at)
            else:
                sku = event.sku  # type: ignore[union-attr]
                assert isinstance(sku, str) and isinstance(event, ev.ItemEvent)
                item, applied = self.items.get(sku) or (ItemState(sku=sku), 0)
                if position <= applied:
                    # Resumed after a crash that stored this SKU but not the projector's
                    # position: its state already includes the event.
                    continue
                after = evolve_item(item, event)
                if isinstance(event, ev.StockHeld) and event.reservation_id not in item.holds:
                    # A new hold is numbered with its position: the stored order key is the
                    # same whether the model was built, resumed or rebuilt (readmodel).
                    holds = after.holds.numbered(event.reservation_id, position)
                    after = msgspec.structs.replace(after, holds=holds)
                self.items[sku] = (after, position)
                dirty[sku] = position
                rid = getattr(event, "reservation_id", None)
                if rid is not None and not self.replaying:
                    self._touch(sku, rid, item, after)
                correlation[sku] = (metadata.get("correlation_id", ""), occurred_at)
        # A policy change re-dates every SKU to its own position.
        for sku, dated in dirty.items():
            item, _ = self.items[sku]
            self.items[sku] = (item, dated)
        return dirty, correlation, policies_changed, last_time

    def replay(
        self, page_size: int = REPLAY_PAGE, on_page: Callable[[], None] | None = None
    ) -> int:
        """Rebuild from nothing, fast: fold the whole ledger (up to the head read first) in
        memory, in large pages in position order, with the same `evolve` functions `step`
        uses, then write each SKU's documents once, pipelined, at the position of the last
        event that changed it (so the result equals an incremental projection's).

        `on_page` runs after each page (a long rebuild renews its lease there; it may raise
        to abort). Returns the number of events folded; `step` continues from the head.
        """
        self.position = 0
        self.policies = Policies()
        self.items = {}
        self.expiries = []
        self.touched = {}
        head = self.ledger.ping()
        folded = 0
        policies_changed = False
        last_time = None
        self.replaying = True
        try:
            # The next page is read while this one is folded.
            with ThreadPoolExecutor(1, thread_name_prefix="replay") as reader:

                def read(after: int) -> Future[list[tuple[int, str, bytes]]]:
                    return reader.submit(
                        notification_page, self.ledger, TOPICS, after, head, page_size
                    )

                page = read(0)
                while rows := page.result():
                    if len(rows) == page_size:
                        page = read(rows[-1][0])
                    _, _, changed, page_time = self._fold(rows)
                    policies_changed = policies_changed or changed
                    last_time = page_time if page_time is not None else last_time
                    self.position = rows[-1][0]
                    folded += len(rows)
                    if on_page is not None:
                        on_page()
                    if len(rows) < page_size:
                        break
        finally:
            self.replaying = False
        self.position = head
        policies = self.policies if policies_changed else None
        # Every SKU's live holds are written and listed, not only the touched ones; forced,
        # so that a model kept in place (one of an older layout) is replaced, not skipped.
        self.touched = {}
        self._flush(sorted(self.items), True, head, policies, last_time, full=True)
        self.applied += folded
        return folded

    def _flush(
        self,
        skus: list[str],
        force: bool,
        position: int,
        policies: Policies | None = None,
        last_time: float | None = None,
        correlation: dict[str, tuple[str, datetime]] | None = None,
        full: bool = False,
    ) -> None:
        """Write the SKUs' documents, then the projector's position (a resume hint: every
        SKU write is guarded by its own position, so replaying from it is harmless); then
        publish the figures that changed. `full` lists every live hold of each SKU (a
        rebuild into an empty model); otherwise only the holds touched since the last write
        are added or removed."""
        now = self.clock()
        writes = []
        for sku in skus:
            item, sku_position = self.items[sku]
            touched = None if full else self.touched.pop(sku, {})
            docs = sku_documents(
                item,
                self.policies,
                now,
                sku_position,
                figures=self.publisher is not None,
                touched=touched,
            )
            writes.append(SkuWrite(docs, item, force, None if touched is None else list(touched)))
            if full:
                for hold in item.holds.unordered():
                    self._track_expiry(sku, hold.reservation_id, hold.channel, hold.expires_at)
        self.store.write(writes, position, policies, last_time)
        if self.publisher is not None:
            self._publish([w.documents for w in writes], now, correlation or {})

    def _publish(
        self,
        documents: list[SkuDocuments],
        now: datetime,
        correlation: dict[str, tuple[str, datetime]],
    ) -> None:
        """Publish each channel figure that differs from the last one published (confirmed
        by the broker before it is recorded as published: at least once, never skipped)."""
        assert self.publisher is not None
        changes = []
        published: dict[tuple[str, str], tuple[int, str]] = {}
        for docs in documents:
            for channel, figure in docs.figures.items():
                if self.published.get((docs.sku, channel)) != figure:
                    cause, occurred_at = correlation.get(docs.sku, ("", now))
                    change = AvailabilityChanged(
                        channel, docs.sku, figure[0], figure[1], docs.position, occurred_at
                    )
                    changes.append((change, cause))
                    published[(docs.sku, channel)] = figure
        if changes:
            self.publisher.publish(changes)
            self.store.write_published(published)
            self.published.update(published)

    def reconcile_published(self) -> int:
        """After a restart: publish every figure that differs from the last one published
        (a crash may have come between writing documents and publishing them)."""
        now = self.clock()
        documents = [
            sku_documents(item, self.policies, now, position, figures=True, touched={})
            for item, position in self.items.values()
        ]
        before = self.publisher.published if self.publisher is not None else 0
        for i in range(0, len(documents), 1000):
            self._publish(documents[i : i + 1000], now, {})
        return (self.publisher.published - before) if self.publisher is not None else 0

    def _touch(self, sku: str, reservation_id: str, before: ItemState, after: ItemState) -> None:
        """Note a hold an event may have changed, for the SKU's next write; a hold taken or
        extended is tracked until it expires."""
        hold = after.holds.get(reservation_id) or before.holds.get(reservation_id)
        if hold is None:
            return
        self.touched.setdefault(sku, {})[reservation_id] = hold.channel
        current = after.holds.get(reservation_id)
        previous = before.holds.get(reservation_id)
        if current is not None and (previous is None or previous.expires_at != current.expires_at):
            self._track_expiry(sku, reservation_id, current.channel, current.expires_at)

    def _track_expiry(self, sku: str, reservation_id: str, channel: str, at: datetime) -> None:
        heapq.heappush(self.expiries, (at, sku, reservation_id, channel))

    def expire_due(self) -> int:
        """Rewrite the SKUs whose holds expired since they were last written (their figures
        and their holds' list memberships change with time, not with an event)."""
        now = self.clock()
        due: set[str] = set()
        while self.expiries and self.expiries[0][0] <= now:
            _, sku, reservation_id, channel = heapq.heappop(self.expiries)
            if sku in self.items:
                due.add(sku)
                self.touched.setdefault(sku, {})[reservation_id] = channel
        if due:
            self._flush(sorted(due), True, self.position)
        return len(due)

    def seconds_to_next_expiry(self) -> float | None:
        if not self.expiries:
            return None
        return max(0.0, (self.expiries[0][0] - self.clock()).total_seconds())

    def catch_up(self) -> int:
        total = 0
        while n := self.step():
            total += n
        return total

    # --- running -------------------------------------------------------------------------------

    def tick(self, waiter: Waiter, poll_interval: float = 0.5) -> None:
        """One turn: apply what is new; unless a whole batch came (more is waiting), publish
        due expiries and wait for news. A write committed during the step has notified
        already, so the wait returns at once: no empty step after each one (issue 12)."""
        if self.step() >= self.batch_size:
            return
        self.expire_due()
        if time.monotonic() - self.last_heartbeat > HEARTBEAT_SECONDS:
            self.store.heartbeat()  # readers can tell an idle projector from a dead one
            self.last_heartbeat = time.monotonic()
        timeout = poll_interval
        next_expiry = self.seconds_to_next_expiry()
        if next_expiry is not None:
            timeout = min(timeout, next_expiry + 0.005)
        waiter.wait(timeout)

    def run(
        self, stop: threading.Event, poll_interval: float = 0.5, waiter: Waiter | None = None
    ) -> None:
        """Follow the ledger until `stop` is set; resumes by itself after errors. `waiter`
        (default: LISTEN on PostgreSQL, polling on SQLite) says when to look again."""
        given = waiter
        waiter = given or waiter_for(self.ledger)
        while not stop.is_set():
            try:
                self.tick(waiter, poll_interval)
            except Exception:
                log.exception("projector step failed; resuming from the stored position")
                waiter.close()
                stop.wait(1.0)
                with contextlib.suppress(Exception):
                    self.resume()
                waiter = given or waiter_for(self.ledger)
        waiter.close()


class Waiter(Protocol):
    def wait(self, timeout: float) -> None: ...
    def close(self) -> None: ...


class _Poller:
    def __init__(self, interval: float) -> None:
        self.interval = interval

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, self.interval))

    def close(self) -> None:
        pass


class Nudge:
    """A waiter the writer wakes (`nudge()`) right after it commits, so the in-process read
    model of the embedded service follows each write within milliseconds; it still polls
    every `interval` seconds for writes of other processes (`atp demo`, `atp sweep`)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.event = threading.Event()

    def nudge(self) -> None:
        self.event.set()

    def wait(self, timeout: float) -> None:
        self.event.wait(min(timeout, self.interval))
        self.event.clear()  # the step that follows reads every write committed before this

    def close(self) -> None:
        pass


def waiter_for(ledger: Ledger) -> Waiter:
    if ledger.is_postgres:
        try:
            return NotificationListener(ledger)
        except Exception:
            log.exception("LISTEN failed; polling the ledger instead")
    return _Poller(0.05)
