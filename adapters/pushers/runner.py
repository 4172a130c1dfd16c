"""The channel pusher: consumes a store's push queue and keeps the store's figures equal to
atp's, whatever the channel (see `base.ChannelClient`).

    exchange atp.availability --<channel>.#--> atp.push.<kind>.<store> (quorum, DLQ after
    DELIVERY_LIMIT deliveries) --> Pusher --> ChannelClient.push --> the store

* Start (and restart): declare the queue, reconcile, then consume. Every SKU of the channel
  in the Redis read model (`<prefix>:skus`, `<prefix>:{sku}:ats` field <channel>) is
  compared with the store's figure and written where they differ, so a crash or a message
  published before the queue existed never leaves the channel behind. A SKU the store does
  not have is counted, not created. Without Redis there is nothing to reconcile against.
* Coalescing: per SKU only the newest figure matters. Messages whose `position` is not newer
  than the last figure applied are acked and dropped (stale); the rest are held (unacked)
  until the figure of the newest one is accepted by the channel, then all of them are acked.
  A burst is flushed once it has been quiet for `window` seconds, or `max_delay` after its
  first change (at once when there is a full batch for every push slot), in batches of at
  most the client's `max_batch` SKUs; a SKU is never in two writes at once, so writes of
  one SKU can never overtake each other.
* Failures, per SKU: retryable (429, 5xx, timeouts) -> exponential backoff with jitter, never
  sooner than Retry-After (which also pauses the whole store); permanent, or still failing
  after `max_attempts` -> the newest message is rejected without requeue, so the queue
  dead-letters it to `<queue>.dlq` (older superseded ones are acked: the parked one carries
  the newer figure). `replay_dead_letters` moves parked messages back.
* A dropped RabbitMQ connection: reconnect with backoff; the broker redelivers what was not
  acked, and redelivered figures already applied are dropped as stale.
* Run one pusher per store: two consumers of one queue could write a SKU out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from adapters.amqp import (
    EXCHANGE,
    AvailabilityChanged,
    dead_letter_queue,
    declare_work_queue,
    push_queue,
)
from adapters.pushers.base import (
    ChannelClient,
    ClientHooks,
    Ok,
    Permanent,
    PushResult,
    Retry,
    RetryableError,
    Skip,
    backoff_delay,
    chunks,
)

# Re-exported: the pushers' metrics live in adapters.pushers.metrics.
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics
from adapters.records import IntegrationConfigured
from adapters.sealing import SECRETS, SealError, is_sealed, open_settings

log = logging.getLogger("atp.push")

KINDS: dict[str, str] = {
    "woocommerce": "adapters.pushers.woocommerce",
    "amazon": "adapters.pushers.amazon",
    "ebay": "adapters.pushers.ebay",
}
"""Channel kind -> module with `create(settings, store, hooks) -> ChannelClient`."""

_decoder = msgspec.json.Decoder(AvailabilityChanged)
REPORT_SECONDS = 2.0
RECONCILE_ATTEMPTS = 3
"""Whole reconciliations tried (each read already retried up to max_attempts) before the
pusher starts consuming without one."""


@dataclass(frozen=True)
class PushOptions:
    window: float = 0.1
    """A burst is flushed once no change has arrived for this many seconds..."""
    max_delay: float = 0.5
    """...or once its first change has waited this long (a steady stream never goes quiet)."""
    prefetch: int = 2000
    """Unacked messages the broker lets us hold (coalescing happens among them)."""
    max_in_flight: int = 2
    """Concurrent push calls (each of at most `max_batch` SKUs)."""
    max_attempts: int = 10
    """Tries of one figure before it is dead-lettered (retryable failures)."""
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    reconnect_delay: float = 1.0
    depth_interval: float = 5.0
    """Seconds between queue-depth samples."""
    drain_timeout: float = 5.0
    """On a graceful stop, how long held figures may take to be written."""
    http_timeout: float = 10.0
    rate_burst: int = 1
    reconcile: bool = True
    reconcile_chunk: int = 500


# --- where the true figures come from ------------------------------------------------------------


class FigureSource(Protocol):
    async def figures(self, channel: str) -> dict[str, tuple[int, int]]:
        """Every SKU's current figure for the channel: sku -> (available, position)."""
        ...


class _AtsDoc(msgspec.Struct):
    available: int
    position: int


class RedisFigures:
    """The Redis read model: `<prefix>:skus` and `<prefix>:{sku}:ats` field <channel>."""

    def __init__(self, client: Any, prefix: str = "atp") -> None:
        from adapters.redis_keys import RedisKeys

        self.client = client
        self.keys = RedisKeys(prefix)
        self._decoder = msgspec.json.Decoder(_AtsDoc)

    async def figures(self, channel: str) -> dict[str, tuple[int, int]]:
        skus = sorted(s.decode() for s in await self.client.smembers(self.keys.skus))
        out: dict[str, tuple[int, int]] = {}
        for chunk in chunks(skus, 1000):
            pipe = self.client.pipeline(transaction=False)
            for sku in chunk:
                pipe.hget(self.keys.ats(sku), channel)
            for sku, raw in zip(chunk, await pipe.execute(), strict=True):
                if raw is None:
                    continue
                try:
                    doc = self._decoder.decode(raw)
                except msgspec.DecodeError:
                    log.warning("read model: unreadable figure of %s/%s", channel, sku)
                    continue
                out[sku] = (doc.available, doc.position)
        return out


# --- the pusher ----------------------------------------------------------------------------------


@dataclass
class _Held:
    message: AbstractIncomingMessage
    change: AvailabilityChanged
    generation: int
    arrived: float


@dataclass
class _Entry:
    sku: str
    first_seen: float
    held: list[_Held] = field(default_factory=list)
    attempts: int = 0
    next_at: float = 0.0
    in_flight: bool = False
    figure: tuple[int, int] | None = None
    """(available, position) of a figure waiting for the channel (a daily limit, refused
    credentials) whose messages were acked: it lives here (and in the read model, which
    reconciliation writes from after a restart) until the channel takes it."""

    def newest(self) -> _Held | None:
        return max(self.held, key=lambda h: h.change.position) if self.held else None

    def newest_figure(self) -> tuple[int, int] | None:
        """(available, position) of the newest figure held or waiting."""
        newest = self.newest()
        figures = [f for f in (self.figure,) if f is not None]
        if newest is not None:
            figures.append((newest.change.available, newest.change.position))
        return max(figures, key=lambda f: f[1]) if figures else None


@dataclass
class ReconcileReport:
    skus: int = 0
    equal: int = 0
    written: int = 0
    not_in_store: int = 0
    refused: int = 0
    unfinished: int = 0
    waiting: int = 0
    """SKUs the channel cannot take now (a daily limit): kept pending, written later."""


class Pusher:
    """One store's pusher. `run(stop)` until `stop` is set (or the task is cancelled)."""

    def __init__(
        self,
        client: ChannelClient,
        *,
        kind: str,
        store: str,
        channel: str,
        amqp_url: str,
        figures: FigureSource | None = None,
        metrics: PusherMetrics | None = None,
        options: PushOptions | None = None,
        queue: str | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.store = store
        self.channel = channel
        self.amqp_url = amqp_url
        self.figure_source = figures
        self.metrics = metrics or PusherMetrics()
        self.options = options or PushOptions()
        self.queue_name = queue or push_queue(kind, store)
        self.labels = self.metrics.labels(kind, store, channel)
        self.pending: dict[str, _Entry] = {}
        self.last_applied: dict[str, int] = {}
        """SKU -> position of the newest figure the channel has (or was found to have)."""
        self.generation = 0
        self.connected = asyncio.Event()
        self.connections = 0
        """How many times consuming started (reconnections included)."""
        self.reconciled = asyncio.Event()
        self.last_reconcile: ReconcileReport | None = None
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.options.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._last_arrival = 0.0
        self._closers: list[Any] = []
        self.report_to: tuple[Any, str] | None = None
        """(async Redis client, key): where the pusher publishes its metrics and lag for
        the API's /metrics and /ready."""

    def lag_seconds(self) -> float:
        """Age of the oldest change this pusher holds that the channel has not accepted."""
        if not self.pending:
            return 0.0
        return max(0.0, time.monotonic() - min(e.first_seen for e in self.pending.values()))

    async def _report_loop(self) -> None:
        assert self.report_to is not None
        client, key = self.report_to
        while True:
            with contextlib.suppress(Exception):
                await client.hset(
                    key,
                    mapping={
                        "kind": self.kind,
                        "store": self.store,
                        "channel": self.channel,
                        "lag_seconds": self.lag_seconds(),
                        "heartbeat": time.time(),
                        "metrics": "\n".join(self.metrics.render()),
                    },
                )
                await client.expire(key, 300)
            await asyncio.sleep(REPORT_SECONDS)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        flusher = asyncio.create_task(self._flush_loop(), name=f"push-flush-{self.queue_name}")
        reporter = None
        if self.report_to is not None:
            reporter = asyncio.create_task(self._report_loop(), name=f"push-report-{self.store}")
        try:
            await self._consume(stop)
        finally:
            flusher.cancel()
            if reporter is not None:
                reporter.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(flusher, *self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.client.aclose()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()

    # -- reconciliation ----------------------------------------------------------------------

    async def _reconcile_until_done(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                self.last_reconcile = await self.reconcile()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                if attempt >= RECONCILE_ATTEMPTS:
                    log.error(
                        "%s: reconciliation failed %d times (%s); consuming without it",
                        self.queue_name,
                        attempt,
                        exc,
                    )
                    return
                delay = backoff_delay(
                    attempt,
                    self.options.backoff_base,
                    self.options.backoff_cap,
                    getattr(exc, "retry_after", None),
                )
                log.warning(
                    "%s: reconciliation failed (%s); again in %.1fs", self.queue_name, exc, delay
                )
                await _sleep_or_stop(stop, delay)

    async def reconcile(self) -> ReconcileReport:
        """Write every SKU whose store figure differs from the read model's."""
        report = ReconcileReport()
        if self.figure_source is None:
            log.warning("%s: no read model to reconcile against; skipped", self.queue_name)
            return report
        truth = await self.figure_source.figures(self.channel)
        report.skus = len(truth)
        for chunk in chunks(sorted(truth), self.options.reconcile_chunk):
            current = await self._read_with_retries(chunk)
            todo: dict[str, int] = {}
            for sku in chunk:
                available, position = truth[sku]
                if sku not in current:
                    report.not_in_store += 1
                    continue
                if current[sku] == available:
                    report.equal += 1
                    self._applied(sku, position)
                else:
                    todo[sku] = available
            await self._reconcile_write(todo, truth, report)
        self.metrics.inc("reconciled", self.labels, report.written)
        self.metrics.inc("not_in_store", self.labels, report.not_in_store)
        log.info(
            "%s: reconciled %d SKU(s): %d equal, %d written, %d not in the store, %d refused, "
            "%d unfinished, %d waiting",
            self.queue_name,
            report.skus,
            report.equal,
            report.written,
            report.not_in_store,
            report.refused,
            report.unfinished,
            report.waiting,
        )
        return report

    async def _read_with_retries(self, skus: Sequence[str]) -> dict[str, int | None]:
        attempt = 0
        while True:
            try:
                return await self.client.current(skus)
            except RetryableError as exc:
                attempt += 1
                if attempt >= self.options.max_attempts:
                    raise
                await asyncio.sleep(
                    backoff_delay(
                        attempt,
                        self.options.backoff_base,
                        self.options.backoff_cap,
                        exc.retry_after,
                    )
                )

    async def _reconcile_write(
        self,
        todo: dict[str, int],
        truth: Mapping[str, tuple[int, int]],
        report: ReconcileReport,
    ) -> None:
        attempt = 0
        while todo:
            after: float | None = None
            for batch in chunks(list(todo), self.client.max_batch):
                result = await self._safe_push({sku: todo[sku] for sku in batch})
                for sku in batch:
                    outcome = result.get(sku)
                    if isinstance(outcome, Ok):
                        self._applied(sku, truth[sku][1])
                        report.written += 1
                        self.metrics.inc("items", self.labels)
                        del todo[sku]
                    elif isinstance(outcome, Permanent | Skip):
                        report.refused += 1
                        skipped = isinstance(outcome, Skip)
                        self.metrics.inc("skipped" if skipped else "permanent_errors", self.labels)
                        log.warning(
                            "%s: reconcile %s %s: %s",
                            self.queue_name,
                            sku,
                            "skipped" if skipped else "refused",
                            outcome.reason,
                        )
                        del todo[sku]
                    elif outcome.wait:  # e.g. a daily limit: pending until it is taken
                        report.waiting += 1
                        self._wait_with(sku, truth[sku], outcome.after or 0.0)
                        del todo[sku]
                    elif outcome.after is not None:
                        after = max(after or 0.0, outcome.after)
            if not todo:
                return
            attempt += 1
            if attempt >= self.options.max_attempts:
                report.unfinished += len(todo)
                log.error("%s: reconcile gave up on %d SKU(s)", self.queue_name, len(todo))
                return
            self.metrics.inc("retries", self.labels, len(todo))
            await asyncio.sleep(
                backoff_delay(attempt, self.options.backoff_base, self.options.backoff_cap, after)
            )

    def _wait_with(self, sku: str, figure: tuple[int, int], after: float) -> None:
        """Keep a figure the channel cannot take yet as pending, without a message."""
        entry = self.pending.get(sku)
        if entry is None:
            entry = self.pending[sku] = _Entry(sku, time.monotonic())
        if entry.figure is None or entry.figure[1] < figure[1]:
            entry.figure = figure
        entry.next_at = time.monotonic() + after
        self._wake.set()

    def _applied(self, sku: str, position: int) -> None:
        if position > self.last_applied.get(sku, -1):
            self.last_applied[sku] = position

    # -- consuming -------------------------------------------------------------------------------

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await declare_work_queue(channel, self.queue_name)
        await queue.bind(exchange, routing_key=f"{self.channel}.#")
        return queue

    async def _consume(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            lost = asyncio.Event()
            connection = None
            try:
                connection = await aio_pika.connect(
                    self.amqp_url,
                    timeout=10,
                    client_properties={"connection_name": f"atp-push {self.queue_name}"},
                )
                self.connection = connection
                connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
                channel = await connection.channel(publisher_confirms=False)
                channel.close_callbacks.add(lambda *_, lost=lost: lost.set())
                await channel.set_qos(prefetch_count=self.options.prefetch)
                queue = await self._declare(channel)
                if not self.reconciled.is_set():
                    # The queue exists (and collects changes) before the read model is read:
                    # nothing published after that read can be missed.
                    if self.options.reconcile:
                        await self._reconcile_until_done(stop)
                    self.reconciled.set()
                    if stop.is_set():
                        break
                tag = await queue.consume(self._on_message)
                self.connected.set()
                self.connections += 1
                failures = 0
                depth = asyncio.create_task(self._watch_depth(queue))
                try:
                    await _wait_any(stop, lost)
                    if stop.is_set() and not lost.is_set():
                        with contextlib.suppress(Exception):
                            await queue.cancel(tag)
                        await self._drain()
                finally:
                    depth.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await depth
                if lost.is_set() and not stop.is_set():
                    log.warning("%s: RabbitMQ connection lost; reconnecting", self.queue_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: RabbitMQ: %s: %s", self.queue_name, type(exc).__name__, exc)
            finally:
                self.connected.clear()
                self._forget_deliveries()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 5)
            if not stop.is_set():
                failures += 1
                await _sleep_or_stop(
                    stop, backoff_delay(failures, self.options.reconnect_delay, 30.0)
                )

    def _forget_deliveries(self) -> None:
        """The channel is gone: its unacked messages will be redelivered, so drop them."""
        self.generation += 1
        for sku, entry in list(self.pending.items()):
            entry.held = [h for h in entry.held if h.generation == self.generation]
            if not entry.held and not entry.in_flight and entry.figure is None:
                del self.pending[sku]
        self._update_pending_gauge()

    async def _watch_depth(self, queue: AbstractQueue) -> None:
        while True:
            with contextlib.suppress(Exception):
                declared = await queue.declare()
                self.metrics.set("queue_depth", self.labels, declared.message_count or 0)
            self._update_pending_gauge()
            await asyncio.sleep(self.options.depth_interval)

    def _update_pending_gauge(self) -> None:
        self.metrics.set("pending_skus", self.labels, len(self.pending))

    async def _drain(self) -> None:
        """Graceful stop: write what is held now, within `drain_timeout`."""
        self._draining = True
        self._wake.set()
        deadline = time.monotonic() + self.options.drain_timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            busy = any(e.in_flight or (e.held and e.next_at <= now) for e in self.pending.values())
            if not busy:
                break
            await asyncio.sleep(0.02)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            change = _decoder.decode(message.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("%s: unreadable message %s: %s", self.queue_name, message.message_id, exc)
            self.metrics.inc("dead_letters", self.labels)
            await _settle_message(message, requeue=False)
            return
        if change.channel != self.channel:
            await _settle_message(message)
            return
        if change.position <= self.last_applied.get(change.sku, -1):
            self.metrics.inc("stale", self.labels)
            await _settle_message(message)
            return
        now = time.monotonic()
        self._last_arrival = now
        entry = self.pending.get(change.sku)
        if entry is None:
            entry = self.pending[change.sku] = _Entry(change.sku, now)
        elif entry.held:
            # Already waiting: the flusher has a deadline for it (no need to wake it).
            entry.held.append(_Held(message, change, self.generation, now))
            return
        else:
            entry.first_seen = now
        entry.held.append(_Held(message, change, self.generation, now))
        self._wake.set()

    # -- flushing --------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._slots.acquire()
            self._wake.clear()
            batch, wait = self._take_batch()
            if batch:
                task = asyncio.create_task(self._push_batch(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            self._slots.release()
            self._update_pending_gauge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _take_batch(self) -> tuple[dict[str, tuple[int, int]], float | None]:
        """Pick the next batch (marking it in flight): sku -> (available, position) of the
        newest figure held; or nothing and how long to wait before looking again."""
        now = time.monotonic()
        due: list[_Entry] = []
        wake_at: float | None = None
        for entry in self.pending.values():
            if entry.in_flight or not (entry.held or entry.figure):
                continue
            if entry.next_at > now:
                wake_at = entry.next_at if wake_at is None else min(wake_at, entry.next_at)
                continue
            due.append(entry)
        if not due:
            return {}, (None if wake_at is None else max(0.0, wake_at - now))
        limit = max(1, self.client.max_batch)
        oldest = min(e.first_seen for e in due)
        quiet_at = self._last_arrival + self.options.window
        latest_at = oldest + self.options.max_delay
        # A burst coalesces until it goes quiet (or its first change has waited max_delay);
        # a backlog that fills every push slot with a full batch goes at once.
        if not (
            self._draining
            or now >= quiet_at
            or now >= latest_at
            or len(due) >= limit * self.options.max_in_flight
        ):
            ready_at = min(quiet_at, latest_at)
            wake_at = ready_at if wake_at is None else min(wake_at, ready_at)
            return {}, max(0.0, wake_at - now)
        due.sort(key=lambda e: e.first_seen)
        # Channels that write per group (WooCommerce: one batch route per parent product)
        # get batches of one group, led by the oldest change, rather than mixed batches
        # that split into a request per group.
        group_of = getattr(self.client, "batch_group", None)
        if group_of is not None:
            group = group_of(due[0].sku)
            due = [e for e in due if group_of(e.sku) == group]
        batch: dict[str, tuple[int, int]] = {}
        for entry in due[:limit]:
            newest = entry.newest_figure()
            assert newest is not None
            entry.in_flight = True
            batch[entry.sku] = newest
        return batch, None

    async def _safe_push(self, figures: dict[str, int]) -> PushResult:
        try:
            return await self.client.push(figures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: push failed unexpectedly", self.queue_name)
            result = PushResult()
            result.retry(figures, f"{type(exc).__name__}: {exc}")
            return result

    async def _push_batch(self, batch: dict[str, tuple[int, int]]) -> None:
        settle: list[tuple[AbstractIncomingMessage, bool | None]] = []
        try:
            result = await self._safe_push({sku: fig[0] for sku, fig in batch.items()})
            # Book every outcome before the first await, so no entry of this batch can be
            # picked again (or get messages) halfway through.
            jitter = random.random()  # one for the batch: its SKUs retry together
            for sku, (_, position) in batch.items():
                entry = self.pending.get(sku)
                if entry is not None:
                    settle += self._settle(entry, position, result.get(sku), jitter)
        finally:
            for sku in batch:
                entry = self.pending.get(sku)
                if entry is not None:
                    entry.in_flight = False
            self._slots.release()
            self._wake.set()
        for message, requeue in settle:
            await _settle_message(message, requeue)

    def _settle(
        self, entry: _Entry, position: int, outcome: Ok | Retry | Permanent | Skip, jitter: float
    ) -> list[tuple[AbstractIncomingMessage, bool | None]]:
        """Book the outcome of writing `entry`'s figure at `position`; returns the messages
        to ack (None) or reject without requeue (False)."""
        sku = entry.sku
        entry.in_flight = False
        if isinstance(outcome, Retry):
            if not outcome.wait:  # a wait (credentials, a daily limit) never dead-letters
                entry.attempts += 1
            if outcome.wait or entry.attempts < self.options.max_attempts:
                delay = backoff_delay(
                    max(1, entry.attempts),
                    self.options.backoff_base,
                    self.options.backoff_cap,
                    outcome.after,
                    jitter,
                )
                entry.next_at = time.monotonic() + delay
                self.metrics.inc("retries", self.labels)
                if outcome.wait and entry.held and self.figure_source is not None:
                    # A long wait: ack now (RabbitMQ would time the delivery out) and keep
                    # the newest figure; after a restart reconciliation brings it back.
                    entry.figure = entry.newest_figure()
                    acked, entry.held = entry.held, []
                    log.info("%s: %s waits: %s", self.queue_name, sku, outcome.reason)
                    return [(h.message, None) for h in acked]
                log.info(
                    "%s: %s: %s; try %d in %.2fs",
                    self.queue_name,
                    sku,
                    outcome.reason,
                    entry.attempts + 1,
                    delay,
                )
                return []
            reason = f"gave up after {entry.attempts} attempts: {outcome.reason}"
        else:
            reason = outcome.reason if isinstance(outcome, Permanent) else ""
        # Everything up to the written position is settled; newer messages stay held.
        done = [h for h in entry.held if h.change.position <= position]
        entry.held = [h for h in entry.held if h.change.position > position]
        if entry.figure is not None and entry.figure[1] <= position:
            entry.figure = None
        entry.attempts = 0
        entry.next_at = 0.0
        if entry.held:
            entry.first_seen = min(h.arrived for h in entry.held)
        elif self.pending.get(sku) is entry and entry.figure is None:
            del self.pending[sku]
        newest = max(done, key=lambda h: h.change.position) if done else None
        if isinstance(outcome, Ok):
            self._applied(sku, position)
            self.metrics.inc("items", self.labels)
            if newest is not None:
                delay = (datetime.now(UTC) - newest.change.occurred_at).total_seconds()
                self.metrics.observe_delay(self.labels, delay)
            if len(done) > 1:
                self.metrics.inc("superseded", self.labels, len(done) - 1)
            return [(h.message, None) for h in done]
        if isinstance(outcome, Skip):
            self._applied(sku, position)
            self.metrics.inc("skipped", self.labels)
            log.warning("%s: %s (position %d) skipped: %s", self.queue_name, sku, position,
                        outcome.reason)  # fmt: skip
            return [(h.message, None) for h in done]
        self.metrics.inc("permanent_errors", self.labels)
        log.error("%s: %s (position %d) dead-lettered: %s", self.queue_name, sku, position, reason)
        out: list[tuple[AbstractIncomingMessage, bool | None]] = []
        for held in done:
            if held is newest:
                self.metrics.inc("dead_letters", self.labels)
                out.append((held.message, False))
            else:
                self.metrics.inc("superseded", self.labels)
                out.append((held.message, None))
        return out


async def _settle_message(message: AbstractIncomingMessage, requeue: bool | None = None) -> None:
    """Ack (requeue None) or reject; a message of a channel that is gone is redelivered
    anyway, so failing to settle it is not an error."""
    try:
        if requeue is None:
            await message.ack()
        else:
            await message.nack(requeue=requeue)
    except Exception as exc:
        log.debug("could not settle message %s: %s", message.message_id, exc)


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# --- entry points -------------------------------------------------------------------------------


def load_integration(
    ledger: Any, kind: str, store: str, secret_key: bytes | None = None
) -> IntegrationConfigured:
    """The current IntegrationConfigured of a store with its secrets opened with the
    service key (synchronous: call it in a thread). LookupError when there is none;
    SealError when a sealed secret does not open (no key, or another key)."""
    records, _ = ledger.load(("integration", f"{kind}:{store}"))
    found = [r for r in records if isinstance(r, IntegrationConfigured)]
    if not found:
        raise LookupError(f"no {kind} integration {store!r}")
    record = found[-1]
    names = SECRETS.get(kind, ())
    if any(is_sealed(record.settings.get(name)) for name in names):
        if not secret_key:
            raise SealError(f"{kind} integration {store!r} has sealed secrets and no key given")
        settings = open_settings(record.settings, names, secret_key)
        record = msgspec.structs.replace(record, settings=settings)
    return record


def create_client(record: IntegrationConfigured, hooks: ClientHooks) -> ChannelClient:
    if record.kind not in KINDS:
        raise LookupError(f"no pusher for integration kind {record.kind!r}")
    module = importlib.import_module(KINDS[record.kind])
    client: ChannelClient = module.create(record.settings, record.store, hooks)
    return client


async def build_pusher(
    kind: str,
    store: str,
    *,
    ledger: Any,
    amqp_url: str,
    redis_url: str | None = None,
    redis_prefix: str = "atp",
    metrics: PusherMetrics | None = None,
    options: PushOptions | None = None,
    secret_key: bytes | None = None,
) -> Pusher:
    """A pusher for the store registered under `kind`/`store` (call `aclose()` after);
    `secret_key` (Settings.token_secret) opens the integration's sealed secrets."""
    record = await asyncio.to_thread(load_integration, ledger, kind, store, secret_key)
    options = options or PushOptions()
    metrics = metrics or PusherMetrics()
    labels = metrics.labels(kind, store, record.channel)
    redis_client = None
    if redis_url:
        import redis.asyncio as aioredis

        redis_client = aioredis.Redis.from_url(redis_url)

    def on_request(status: str) -> None:
        metrics.inc("requests", (*labels, ("status", status)))

    def on_event(name: str, extra: Mapping[str, str]) -> None:
        metrics.inc(name, (*labels, *sorted(extra.items())))

    hooks = ClientHooks(
        on_request=on_request,
        on_event=on_event,
        redis=redis_client,
        redis_prefix=redis_prefix,
        http_timeout=options.http_timeout,
        rate_burst=options.rate_burst,
    )
    try:
        client = create_client(record, hooks)
    except Exception:
        if redis_client is not None:
            await redis_client.aclose()
        raise
    pusher = Pusher(
        client,
        kind=kind,
        store=store,
        channel=record.channel,
        amqp_url=amqp_url,
        figures=RedisFigures(redis_client, redis_prefix) if redis_client is not None else None,
        metrics=metrics,
        options=options,
    )
    if redis_client is not None:
        pusher._closers.append(redis_client.aclose)
        pusher.report_to = (redis_client, report_key(redis_prefix, kind, store))
    return pusher


def report_key(prefix: str, kind: str, store: str) -> str:
    return f"{prefix}:push:{kind}:{store}"


async def run_pusher(
    kind: str,
    store: str,
    *,
    ledger: Any,
    amqp_url: str,
    redis_url: str | None = None,
    redis_prefix: str = "atp",
    stop_event: asyncio.Event | None = None,
    metrics: PusherMetrics | None = None,
    options: PushOptions | None = None,
    secret_key: bytes | None = None,
) -> None:
    """`atp push <kind> --store NAME`: reconcile the store, then push changes until
    `stop_event` is set (graceful: held figures are written first) or the task is
    cancelled. Raises LookupError for an unknown integration."""
    pusher = await build_pusher(
        kind,
        store,
        ledger=ledger,
        amqp_url=amqp_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        metrics=metrics,
        options=options,
        secret_key=secret_key,
    )
    try:
        await pusher.run(stop_event)
    finally:
        await pusher.aclose()


async def replay_dead_letters(amqp_url: str, queue: str) -> int:
    """`atp dlq replay QUEUE`: move the messages parked in `<queue>.dlq` back to `<queue>`
    (QUEUE may name either); returns how many moved. Each is published with confirms to the
    work queue before it is removed from the dead-letter queue (at least once). Only the
    messages present at the start move, so one that fails again is not replayed in a loop.
    LookupError when the queue does not exist."""
    name = queue.removesuffix(".dlq")
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        probe = await connection.channel()
        try:
            await probe.declare_queue(name, passive=True)
            await probe.declare_queue(dead_letter_queue(name), passive=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise LookupError(f"no queue {name!r} with a dead-letter queue: {exc}") from None
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await channel.declare_queue(dead_letter_queue(name), passive=True)
        total = dlq.declaration_result.message_count or 0
        moved = 0
        for _ in range(total):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    timestamp=message.timestamp,
                    type=message.type,
                    app_id=message.app_id,
                ),
                routing_key=name,
                mandatory=True,
            )
            await message.ack()
            moved += 1
        log.info("moved %d message(s) from %s back to %s", moved, dead_letter_queue(name), name)
        return moved
