"""The command service: load state, decide, append to the ledger, with group commit.

One writer thread per process owns the write-side cache. Requests queue jobs; the writer
drains whatever has queued while the previous transaction was committing, brings every
stream the batch reads up to date in one query (cached streams fast-forward), decides the
jobs in order, and appends all their events (and idempotency records) in one transaction.
Several processes stay correct through optimistic concurrency: on a version conflict the
batch is synced and decided again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.ledger import (
    IntegrityError,
    Ledger,
    LedgerEvent,
    StreamKey,
    stream_id,
    sync_streams,
)
from adapters.records import Record, ResponseRecorded
from api.log import correlation_id
from atp.decide import POLICIES, NeedStreams
from atp.errors import DomainError
from atp.world import StateSet

log = logging.getLogger("atp.service")

IDEMPOTENCY_TTL = timedelta(hours=24)
SNAPSHOT_INTERVAL = 100
DecideFn = Callable[["ServiceWorld", datetime], list[tuple[Any, Any]]]


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: bytes
    position: int | None = None
    replayed: bool = False
    reused: bool = False
    """The idempotency key was used before with a different request body."""
    stored: bytes | None = None
    """What the idempotency record keeps instead of `body` (secrets redacted)."""


@dataclass(frozen=True)
class Idempotency:
    scope: str
    key: str
    request_hash: str

    @property
    def stream(self) -> StreamKey:
        return ("idempotency", f"{self.scope}\x1f{self.key}")


@dataclass
class Outcome:
    """What a job's decision came to: the world after it, or the domain error."""

    world: ServiceWorld
    error: DomainError | None = None


@dataclass
class Job:
    decide: DecideFn
    render: Callable[[Outcome], Reply]
    correlation_id: str
    idempotency: Idempotency | None = None
    reads: list[StreamKey] = field(default_factory=list)
    """Streams the job is known to read: loaded for the whole batch in one round trip."""
    fresh: list[StreamKey] = field(default_factory=list)
    """Streams known not to exist yet (ids minted for this job): not read."""
    done: Callable[[Reply | BaseException], None] = field(default=lambda _: None)

    def __post_init__(self) -> None:
        # A domain command's decider knows what it reads and which ids it minted.
        self.reads = self.reads or list(getattr(self.decide, "reads", ()))
        self.fresh = self.fresh or list(getattr(self.decide, "fresh", ()))


class ServiceWorld(StateSet):
    """StateSet over domain streams plus record streams (tokens, idempotency)."""

    def apply(self, stream: Any, event: Any) -> None:
        self.states[stream] = Ledger.fold_one(stream, self.get(stream), event)

    def records(self, stream: StreamKey) -> list[Record]:
        state: Any = self.get(stream)  # type: ignore[arg-type]
        return list(state)


class _Cache:
    """LRU of (state, version) by stream, owned by the writer thread."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.entries: OrderedDict[StreamKey, tuple[Any, int]] = OrderedDict()

    def get(self, stream: StreamKey) -> tuple[Any, int] | None:
        entry = self.entries.get(stream)
        if entry is not None:
            self.entries.move_to_end(stream)
        return entry

    def put(self, stream: StreamKey, state: Any, version: int) -> None:
        self.entries[stream] = (state, version)
        self.entries.move_to_end(stream)
        while len(self.entries) > self.maxsize:
            self.entries.popitem(last=False)


class CommandService:
    def __init__(
        self,
        ledger: Ledger,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_batch: int = 200,
        cache_size: int = 100_000,
        retry_seconds: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.cache = _Cache(cache_size)
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0
        self.conflicts = 0
        self.recorded: Counter[str] = Counter()
        """Events this process appended, by event type name (for /metrics)."""
        self.unsure: set[StreamKey] = set()
        """Streams assumed new that a conflict showed may exist: read them next time."""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="atp-writer", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=10)
            self.thread = None

    # --- submitting ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Reply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()

        def done(result: Reply | BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, future, result)

        job.done = done
        self.queue.put(job)
        return await future

    def run_sync(self, job: Job) -> Reply:
        """Submit from a non-async caller (CLI, sweeper) and wait."""
        event = threading.Event()
        box: list[Reply | BaseException] = []

        def done(result: Reply | BaseException) -> None:
            box.append(result)
            event.set()

        job.done = done
        self.queue.put(job)
        event.wait()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # --- the writer ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                self._process(batch)
            except Exception as exc:  # the ledger is unreachable or broken
                log.exception("writer failed a batch of %d job(s)", len(batch))
                for job in batch:
                    job.done(exc)
            if stop:
                return

    def _process(self, batch: list[Job]) -> None:
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            result = self._attempt(batch)
            if result is not None:
                self.batches += 1
                self.jobs += len(batch)
                for job, reply in zip(batch, result, strict=True):
                    job.done(reply)
                return
            self.conflicts += 1
            attempt += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {attempt} version conflicts")
            # Jitter, so two writers racing for one hot SKU take turns rather than collide.
            time.sleep(random.uniform(0, min(0.02, 0.001 * attempt)))

    def _sync(self, world: ServiceWorld, streams: Any, base: dict[StreamKey, int]) -> None:
        """Load streams into the world at their ledger versions (one or two queries)."""
        wanted: dict[StreamKey, tuple[Any, int] | None] = {}
        for stream in streams:
            if stream not in world.states and stream not in wanted:
                wanted[stream] = self.cache.get(stream)
        for stream, (state, version) in sync_streams(self.ledger, wanted).items():
            self.cache.put(stream, state, version)
            world.put(stream, state)
            base[stream] = version

    def _decide(
        self, job: Job, world: ServiceWorld, base: dict[StreamKey, int], now: datetime
    ) -> Any:
        while True:
            try:
                return job.decide(world, now)
            except NeedStreams as need:
                self._sync(world, need.streams, base)

    def _attempt(self, batch: list[Job]) -> list[Reply | Exception] | None:
        now = self.clock()
        world = ServiceWorld()
        base: dict[StreamKey, int] = {}
        # Known-new streams (ids this process minted) are not read, unless a conflict
        # said otherwise; idempotency keys this process has not seen are assumed new.
        for job in batch:
            for stream in job.fresh:
                if stream not in self.unsure:
                    world.put(stream, None)
                    base[stream] = 0
            if job.idempotency is not None:
                stream = job.idempotency.stream
                if stream not in self.unsure and self.cache.get(stream) is None:
                    world.put(stream, [])
                    base[stream] = 0
        # Every stream the batch is known to read, brought up to date in one round trip:
        # decisions (rejections included) rest on the ledger as it is, not on a stale cache.
        hinted = [POLICIES]
        for job in batch:
            hinted += job.reads
            if job.idempotency is not None:
                hinted.append(job.idempotency.stream)
        self._sync(world, hinted, base)
        pending: list[tuple[StreamKey, Any, Job]] = []
        replies: list[Reply | Exception] = []
        for job in batch:
            if job.idempotency is not None:
                replay = self._replay(job.idempotency, world, base, now)
                if replay is not None:
                    replies.append(replay)
                    continue
            touched: dict[Any, Any] = {}
            try:
                decision = self._decide(job, world, base, now)
            except DomainError as error:
                outcome = Outcome(world, error)
            except Exception as exc:  # a bug in one job must not fail its batch
                correlation_id.set(job.correlation_id)
                log.exception("job failed")
                replies.append(exc)
                continue
            else:
                # Streams written without being read (a commit's items) need their versions.
                self._sync(world, [stream for stream, _ in decision], base)
                touched = {stream: world.states[stream] for stream, _ in decision}
                for stream, event in decision:
                    world.apply(stream, event)
                outcome = Outcome(world)
            try:
                reply = job.render(outcome)
            except Exception as exc:
                log.exception("rendering a job's response failed")
                world.states.update(touched)  # this job takes no effect
                replies.append(exc)
                continue
            if outcome.error is None:
                pending.extend((stream, event, job) for stream, event in decision)
            if job.idempotency is not None and reply.status_code < 500:
                record = ResponseRecorded(
                    scope=job.idempotency.scope,
                    key=job.idempotency.key,
                    request_hash=job.idempotency.request_hash,
                    status_code=reply.status_code,
                    body=reply.body if reply.stored is None else reply.stored,
                    recorded_at=now,
                )
                world.apply(job.idempotency.stream, record)
                pending.append((job.idempotency.stream, record, job))
            replies.append(reply)
        positions = self._append(pending, world, base, now)
        if positions is None:
            return None
        done: list[Reply | Exception] = []
        for job, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Reply):
                reply = Reply(
                    reply.status_code,
                    reply.body,
                    positions.get(id(job)),
                    reply.replayed,
                    reply.reused,
                )
            done.append(reply)
        return done

    def _replay(
        self, idem: Idempotency, world: ServiceWorld, base: dict[StreamKey, int], now: datetime
    ) -> Reply | None:
        for record in reversed(world.records(idem.stream)):
            if isinstance(record, ResponseRecorded) and now - record.recorded_at < IDEMPOTENCY_TTL:
                if record.request_hash != idem.request_hash:
                    return Reply(422, b"", reused=True)
                return Reply(record.status_code, record.body, replayed=True)
        return None

    def _append(
        self,
        pending: list[tuple[StreamKey, Any, Job]],
        world: ServiceWorld,
        base: dict[StreamKey, int],
        now: datetime,
    ) -> dict[int, int] | None:
        if not pending:
            return {}
        versions = dict(base)
        events: list[LedgerEvent] = []
        for stream, event, job in pending:
            version = versions.get(stream, 0) + 1
            versions[stream] = version
            metadata = {"correlation_id": job.correlation_id}
            if job.idempotency is not None:
                metadata["idempotency_key"] = job.idempotency.key
            events.append(LedgerEvent(stream_id(stream), version, now, event, metadata))
        written = {stream for stream, _, _ in pending}
        snapshots = [
            (stream, versions[stream], world.states[stream])
            for stream in written
            if stream[0] in ("item", "order")
            and versions[stream] // SNAPSHOT_INTERVAL > base.get(stream, 0) // SNAPSHOT_INTERVAL
        ]
        try:
            ids = self.ledger.append(events, snapshots)
        except IntegrityError:
            # Another process wrote one of these streams first. The next attempt reads them
            # at their new versions (cached ones by fast-forward); streams assumed new are
            # read for real.
            self.unsure.update(s for s in written if self.cache.get(s) is None)
            return None
        for stream in written:
            self.cache.put(stream, world.states[stream], versions[stream])
            self.unsure.discard(stream)
        self.recorded.update(type(event).__name__ for _, event, _ in pending)
        positions: dict[int, int] = {}
        for (_, _, job), position in zip(pending, ids, strict=True):
            positions[id(job)] = max(positions.get(id(job), 0), position)
        return positions


def _resolve(future: asyncio.Future[Reply], result: Reply | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
