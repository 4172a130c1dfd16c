"""The command service: load state, decide, append to the ledger, with group commit.

One writer thread per process owns the write-side cache. Requests queue jobs; the writer
drains whatever has queued while the previous transaction was committing, brings every
stream the batch reads up to date in one query (cached streams fast-forward), decides the
jobs in order, and appends all their events (and idempotency records) in one transaction,
which also checks that every stream the batch read and did not write is still at the
version it was read (adapters.recorder). Several processes stay correct through optimistic
concurrency: on a version conflict the batch is synced and decided again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from cachetools import LRUCache

from adapters.ledger import (
    IntegrityError,
    Ledger,
    LedgerEvent,
    StreamKey,
    snapshot_interval,
    stream_id,
    sync_streams,
)
from adapters.records import Record, ResponseRecorded
from api.log import correlation_id
from atp import commands as cmd
from atp.decide import POLICIES, NeedStreams, decide, discovered_reads, reads
from atp.errors import DomainError
from atp.world import StateSet

log = logging.getLogger("atp.service")

IDEMPOTENCY_TTL = timedelta(hours=24)
Decision = list[tuple[Any, Any]]
"""What a decider returns: (stream key, event or record) pairs to append, in order."""
V = TypeVar("V")


class Decider(Protocol):
    """One job's decision: `decider(world, now) -> [(stream, event), ...]`.

    `reads` are the streams it is known to read (loaded for the whole batch in one round
    trip); `fresh` the streams known not to exist yet (ids minted for this job: not read);
    `likely_new` those a client named that rarely exist (an order id): assumed absent in
    trusted attempts (`trust_cache`), where an existing one fails the append's version
    check and a rejection is decided again on read states. It may raise NeedStreams to
    have more streams loaded, or a DomainError to reject."""

    @property
    def reads(self) -> Sequence[StreamKey]:
        """Streams the decider reads, loaded for the whole batch in one round trip."""

    @property
    def fresh(self) -> Sequence[StreamKey]:
        """Streams known not to exist yet (ids minted for this job): not read."""

    @property
    def likely_new(self) -> Sequence[StreamKey]:
        """Streams assumed absent in trusted attempts only (see the class)."""

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision: ...


@dataclass(frozen=True)
class FunctionDecider:
    """A plain function `(world, now) -> Decision` with the streams it reads."""

    function: Callable[[ServiceWorld, datetime], Decision]
    reads: Sequence[StreamKey] = ()
    fresh: Sequence[StreamKey] = ()
    likely_new: Sequence[StreamKey] = ()

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision:
        return self.function(world, now)


def decider(
    function: Callable[[ServiceWorld, datetime], Decision],
    reads: Sequence[StreamKey] = (),
    fresh: Sequence[StreamKey] = (),
) -> FunctionDecider:
    """A Decider from a function and the streams it reads (see Decider)."""
    return FunctionDecider(function, tuple(reads), tuple(fresh))


class CommandDecider:
    """Decides one domain command (atp.decide); knows which streams it reads up front."""

    def __init__(
        self,
        command: cmd.Command,
        fresh: Sequence[StreamKey] = (),
        likely_new: Sequence[StreamKey] = (),
    ) -> None:
        self.command = command
        self.reads: Sequence[StreamKey] = reads(command)
        self.fresh: Sequence[StreamKey] = list(fresh)
        self.likely_new: Sequence[StreamKey] = list(likely_new)

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision:
        return decide(self.command, world, now)

    def discover(self, loaded: dict[Any, Any]) -> list[StreamKey]:
        """Streams the loaded states show the command will read (atp.decide.discovered_reads)."""
        return discovered_reads(self.command, loaded)


def command_decider(
    command: cmd.Command, fresh: Sequence[StreamKey] = (), likely_new: Sequence[StreamKey] = ()
) -> CommandDecider:
    """The Decider of one domain command; `fresh` names the streams its new ids create,
    `likely_new` those its client's ids almost always create (see Decider)."""
    return CommandDecider(command, fresh, likely_new)


@dataclass(frozen=True)
class Receipt:
    """The first answer to an idempotent request, kept verbatim in its idempotency record
    (committed in the same transaction as the effect) and replayed byte for byte."""

    status_code: int
    body: bytes


@dataclass(frozen=True)
class Applied(Generic[V]):
    """The job's events were appended. `value` is what its `view` made of the world after
    them (None without a view); `position` the ledger position of its last event (None
    when it appended nothing)."""

    value: V
    position: int | None = None


@dataclass(frozen=True)
class Rejected:
    """The decision raised a domain error: nothing of the job was appended (but for its
    idempotency record, whose position is `position`)."""

    error: DomainError
    position: int | None = None


@dataclass(frozen=True)
class Replayed:
    """The key was seen with the same request within IDEMPOTENCY_TTL: the first answer, as
    recorded. `position`: its ATP-Position (None here; api.http.gateway looks it up)."""

    receipt: Receipt
    position: int | None = None


@dataclass(frozen=True)
class KeyReused:
    """The idempotency key was seen with a different request: nothing done."""


Result = Applied[Any] | Rejected | Replayed | KeyReused
"""What a submitted job came to."""


@dataclass(frozen=True)
class Idempotency:
    """An idempotency key: `scope` (who, which route), `key` (the client's), and the hash
    of the request it first came with."""

    scope: str
    key: str
    request_hash: str

    @property
    def stream(self) -> StreamKey:
        """The record stream of this key: ("idempotency", scope + US + key)."""
        return ("idempotency", f"{self.scope}\x1f{self.key}")


@dataclass
class Job:
    """One unit of work for the writer.

    `view(world, now)` turns the world after a successful decision into the Applied value;
    `receipt(result)` (only with an idempotency key) gives what the idempotency record keeps
    for an Applied or Rejected result, or None to record nothing. Both run in the writer
    thread, before the batch is appended: an exception in either fails this job alone.
    """

    decide: Decider
    correlation_id: str
    view: Callable[[ServiceWorld, datetime], Any] | None = None
    receipt: Callable[[Applied[Any] | Rejected], Receipt | None] | None = None
    idempotency: Idempotency | None = None
    done: Callable[[Result | BaseException], None] = field(default=lambda _: None)
    token_name: str = ""
    """The name of the token the work is done for (kept in each event's metadata as
    `token_name`: who changed a policy); "" for the system's own work."""


class ServiceWorld(StateSet):
    """StateSet over domain streams plus record streams (tokens, idempotency): any
    (kind, id) stream key, a record stream's state being its list of records."""

    states: dict[Any, Any]

    def put(self, stream: StreamKey, state: Any) -> None:
        """Set a stream's state (a domain state, or a record stream's records)."""
        super().put(stream, state)

    def get(self, stream: StreamKey) -> Any:
        """A stream's state; raises NeedStreams when it is not loaded yet."""
        return super().get(stream)

    def apply(self, stream: Any, event: Any) -> None:
        """Fold one event or record into its stream's state."""
        self.states[stream] = Ledger.fold_one(stream, self.get(stream), event)

    def records(self, stream: StreamKey) -> list[Record]:
        """A record stream's records (tokens, idempotency, integrations), oldest first."""
        return list(self.get(stream))


class CommandService:
    """The write side: one writer thread batches jobs, decides them in order and
    appends each batch in one transaction (see the module docstring). `clock` gives `now`
    to every decision; `max_batch` caps a batch (jobs); `cache_size` the stream states
    kept; `retry_seconds` how long version conflicts are retried before TimeoutError."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_batch: int = 200,
        cache_size: int = 100_000,
        retry_seconds: float = 10.0,
        trust_cache: bool = False,
    ) -> None:
        self.ledger = ledger
        self.trust_cache = trust_cache
        """Decide a batch on the cached states first, without reading them again (see
        `_process`): for the one process that decides (nearly) every write."""
        self.clock = clock
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.cache = _StreamCache(cache_size)
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.batches = 0
        self.jobs = 0
        self.conflicts = 0
        self.busy_seconds = 0.0
        """Wall time the writer spent on batches (deciding, appending, answering, and the
        pauses between attempts after a version conflict): its rate is the writer's
        utilisation, 1.0 when it never waits for work."""
        self.append_seconds = 0.0
        """Wall time of the appends (one statement and its commit each, failed ones
        included): over `batches + conflicts`, what an append waits for the ledger."""
        self.unsure_rejections = 0
        """Batches decided again because a trusted cache led to a rejection."""
        self.recorded: Counter[str] = Counter()
        """Events this process appended, by event type name (for /metrics)."""
        self.unsure: set[StreamKey] = set()
        """Streams assumed new that a conflict showed may exist: read them next time."""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="atp-writer", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Stop the writer after the jobs already queued (waits up to 10 s)."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=10)
            self.thread = None

    # --- submitting ------------------------------------------------------------------------

    async def submit(self, job: Job) -> Result:
        """Queue `job` for the writer and wait for its Result. Raises what failed the job
        alone (a bug in its decider, view or receipt) or its batch (the ledger unreachable,
        TimeoutError after version conflicts for `retry_seconds`)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()

        def done(result: Result | BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, future, result)

        job.done = done
        self.queue.put(job)
        return await future

    def run_sync(self, job: Job) -> Result:
        """Submit from a non-async caller (CLI, sweeper) and wait; raises as `submit`."""
        event = threading.Event()
        box: list[Result | BaseException] = []

        def done(result: Result | BaseException) -> None:
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
            started = time.perf_counter()
            try:
                self._process(batch)
            except Exception as exc:  # the ledger is unreachable or broken
                log.exception("writer failed a batch of %d job(s)", len(batch))
                for job in batch:
                    job.done(exc)
            self.busy_seconds += time.perf_counter() - started
            if stop:
                return

    def _process(self, batch: list[Job]) -> None:
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        # With trust_cache the first attempt decides on the cached states as they are: an
        # acceptance is still checked by the append, in the same statement (each written
        # stream's expected version, and each stream read but not written at the version
        # it was read: adapters.recorder), so a state another process moved only costs a
        # conflict and a second attempt. A rejection is never trusted to a cache: the
        # batch is decided again on states read from the ledger (issue 12: "every 409 only
        # after the stock was really gone").
        trusted = self.trust_cache
        while True:
            result = self._attempt(batch, trusted)
            if result is _DECIDE_AGAIN:
                self.unsure_rejections += 1
                trusted = False
                continue
            if result is not None:
                self.batches += 1
                self.jobs += len(batch)
                for job, reply in zip(batch, result, strict=True):
                    job.done(reply)
                return
            self.conflicts += 1
            trusted = False
            attempt += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {attempt} version conflicts")
            # Jitter, so two writers racing for one hot SKU take turns rather than collide.
            time.sleep(random.uniform(0, min(0.02, 0.001 * attempt)))

    def _sync(
        self, world: ServiceWorld, streams: Any, base: dict[StreamKey, int], trusted: bool = False
    ) -> None:
        """Load streams into the world at their ledger versions (one or two queries);
        `trusted`: cached streams as cached, without a query."""
        wanted: dict[StreamKey, tuple[Any, int] | None] = {}
        for stream in streams:
            if stream not in world.states and stream not in wanted:
                cached = self.cache.get(stream)
                if trusted and cached is not None:
                    world.put(stream, cached[0])
                    base[stream] = cached[1]
                    continue
                wanted[stream] = cached
        for stream, (state, version) in sync_streams(self.ledger, wanted).items():
            self.cache.put(stream, state, version)
            world.put(stream, state)
            base[stream] = version

    def _decide(
        self,
        job: Job,
        world: ServiceWorld,
        base: dict[StreamKey, int],
        now: datetime,
        trusted: bool,
    ) -> Any:
        while True:
            try:
                return job.decide(world, now)
            except NeedStreams as need:
                self._sync(world, need.streams, base, trusted)

    def _attempt(self, batch: list[Job], trusted: bool = False) -> list[Result | Exception] | None:
        """Decide the batch and append it: its results, or None after a version conflict
        (nothing appended), or _DECIDE_AGAIN when a `trusted` attempt rejected a job
        (nothing appended)."""
        now = self.clock()
        world = ServiceWorld()
        base: dict[StreamKey, int] = {}
        # Known-new streams (ids this process minted) are not read, unless a conflict
        # said otherwise; idempotency keys this process has not seen are assumed new, and
        # so are likely-new streams it has not seen in a trusted attempt.
        for job in batch:
            assumed = job.decide.fresh
            if trusted and job.decide.likely_new:
                unseen = [s for s in job.decide.likely_new if self.cache.get(s) is None]
                assumed = [*assumed, *unseen]
            for stream in assumed:
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
        hinted: list[StreamKey] = [POLICIES]
        for job in batch:
            hinted += job.decide.reads
            if job.idempotency is not None:
                hinted.append(job.idempotency.stream)
        self._sync(world, hinted, base, trusted)
        # Streams the loaded states name (a commit's items, from its reservation): one more
        # round trip for the whole batch instead of one per job (NeedStreams).
        discovered: list[StreamKey] = []
        for job in batch:
            discover = getattr(job.decide, "discover", None)
            if discover is not None:
                discovered += discover(world.states)
        if discovered:
            self._sync(world, discovered, base, trusted)
        pending: list[tuple[StreamKey, Any, Job]] = []
        results: list[Result | Exception] = []
        for job in batch:
            if job.idempotency is not None:
                replay = self._replay(job.idempotency, world, now)
                if replay is not None:
                    results.append(replay)
                    continue
            touched: dict[Any, Any] = {}
            decision: Decision = []
            result: Applied[Any] | Rejected
            try:
                decision = self._decide(job, world, base, now, trusted)
            except DomainError as error:
                result = Rejected(error)
            except Exception as exc:  # a bug in one job must not fail its batch
                correlation_id.set(job.correlation_id)
                log.exception("job failed")
                results.append(exc)
                continue
            else:
                # Streams written without being read (a commit's items) need their versions.
                self._sync(world, [stream for stream, _ in decision], base, trusted)
                touched = {stream: world.states[stream] for stream, _ in decision}
                for stream, event in decision:
                    world.apply(stream, event)
                result = Applied(None)
            try:
                if isinstance(result, Applied) and job.view is not None:
                    result = Applied(job.view(world, now))
                receipt = None
                if job.idempotency is not None and job.receipt is not None:
                    receipt = job.receipt(result)
            except Exception as exc:
                log.exception("rendering a job's result failed")
                world.states.update(touched)  # this job takes no effect
                results.append(exc)
                continue
            if isinstance(result, Applied):
                pending.extend((stream, event, job) for stream, event in decision)
            if job.idempotency is not None and receipt is not None:
                record = ResponseRecorded(
                    scope=job.idempotency.scope,
                    key=job.idempotency.key,
                    request_hash=job.idempotency.request_hash,
                    status_code=receipt.status_code,
                    body=receipt.body,
                    recorded_at=now,
                )
                world.apply(job.idempotency.stream, record)
                pending.append((job.idempotency.stream, record, job))
            results.append(result)
        if trusted and any(isinstance(r, Rejected) for r in results):
            return _DECIDE_AGAIN  # nothing appended: decided again on the ledger's states
        positions = self._append(pending, world, base, now)
        if positions is None:
            return None
        done: list[Result | Exception] = []
        for job, outcome in zip(batch, results, strict=True):
            if isinstance(outcome, Applied | Rejected):
                done.append(replace(outcome, position=positions.get(id(job))))
            else:
                done.append(outcome)
        return done

    def _replay(self, idem: Idempotency, world: ServiceWorld, now: datetime) -> Result | None:
        for record in reversed(world.records(idem.stream)):
            if isinstance(record, ResponseRecorded) and now - record.recorded_at < IDEMPOTENCY_TTL:
                if record.request_hash != idem.request_hash:
                    return KeyReused()
                return Replayed(Receipt(record.status_code, record.body))
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
            if job.token_name:
                metadata["token_name"] = job.token_name
            events.append(LedgerEvent(stream_id(stream), version, now, event, metadata))
        written = {stream for stream, _, _ in pending}
        snapshots = []
        for stream in written:
            if stream[0] in ("item", "order"):
                every = snapshot_interval(world.states[stream])
                if versions[stream] // every > base.get(stream, 0) // every:
                    snapshots.append((stream, versions[stream], world.states[stream]))
        # The streams the batch's decisions read and do not write, checked by the append
        # at the versions they were read (cached ones included: trust_cache).
        reads = [(stream, version) for stream, version in base.items() if stream not in written]
        started = time.perf_counter()
        try:
            ids = self.ledger.append(events, snapshots, reads)
        except IntegrityError:
            # Another process wrote one of these streams first, or moved one the batch
            # read. The next attempt reads them at their new versions (cached ones by
            # fast-forward); streams assumed new are read for real.
            self.unsure.update(s for s in written if self.cache.get(s) is None)
            return None
        finally:
            self.append_seconds += time.perf_counter() - started
        for stream in written:
            self.cache.put(stream, world.states[stream], versions[stream])
            self.unsure.discard(stream)
        self.recorded.update(type(event).__name__ for _, event, _ in pending)
        positions: dict[int, int] = {}
        for (_, _, job), position in zip(pending, ids, strict=True):
            positions[id(job)] = max(positions.get(id(job), 0), position)
        return positions


_DECIDE_AGAIN: list[Result | Exception] = []
"""_attempt's answer when a decision on trusted cached states rejected a job."""


class _StreamCache(LRUCache[StreamKey, tuple[Any, int]]):
    """(state, version) by stream, least recently used dropped first (cachetools), owned by
    the writer thread."""

    def put(self, stream: StreamKey, state: Any, version: int) -> None:
        self[stream] = (state, version)


def _resolve(future: asyncio.Future[Result], result: Result | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
