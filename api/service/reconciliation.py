"""Reconciliation with ERP/WMS snapshots (issue 13): compare, report, apply, as of a time.

A snapshot is compared in parts of `PART` SKUs: each part's SKUs are folded as of the
snapshot's `as_of` from the ledger (adapters.ledger_sql, on asyncpg or SQLite), compared
(atp.reconcile), and one writer job appends the part's report lines and, with `apply`, its
`StockReconciled` corrections (atp.decide) in one transaction. The report is therefore
the ledger's own record of what was applied, and survives a restart.

The reconciliation's id comes from its Idempotency-Key (and the caller's identity): a retry
of the same file finds the parts already recorded and skips them (a crash half-way is
finished by the retry, nothing is applied twice); a finished one answers its report again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import msgspec

from adapters.ledger import HistoryRow
from adapters.ledger_sql import LedgerReader
from adapters.records import (
    DriftedLine,
    ReconciliationFinished,
    ReconciliationLines,
    ReconciliationListed,
    ReconciliationStarted,
)
from api.log import correlation_id
from api.service.commands import (
    Applied,
    CommandService,
    Decision,
    Job,
    Rejected,
    ServiceWorld,
    decider,
)
from atp import commands as cmd
from atp import events as ev
from atp.decide import POLICIES, decide
from atp.errors import InvalidCommand, UnknownLocation
from atp.reconcile import beyond, compare
from atp.state import ItemState, Policies
from atp.streams import Stream
from projections.views import ItemView, item_view

log = logging.getLogger("atp.reconcile")

PART = 1000
"""SKUs compared (and applied) per transaction."""
FIRST_LINES = 1000
"""Drifted lines a POST answers with; the rest through the report's pages."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STALLED = 2.0
"""Seconds without a new record after which a reconciliation started by another request
(with the same key) is taken as crashed and finished by this one."""
POLL = 0.1
"""Seconds between reads of a reconciliation another request is running."""
SnapshotLine = tuple[str, int]
"""(sku, on_hand) as the snapshot lists it."""


class KeyReusedError(Exception):
    """The Idempotency-Key already names a reconciliation of another snapshot."""


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """What to reconcile: the snapshot of `location` taken at `as_of` (aware), from
    `source`; `complete` when it lists every SKU there; `apply` to correct drifts beyond
    `tolerance` units."""

    location: str
    as_of: datetime
    source: str = ""
    complete: bool = False
    apply: bool = False
    tolerance: int = 0


class Report(msgspec.Struct, kw_only=True):
    """A reconciliation as the ledger records it (`status` finished, or in_progress when a
    crash interrupted it: a retry with the same key finishes it)."""

    reconciliation_id: str
    location: str
    as_of: datetime
    source: str
    complete: bool
    applied: bool
    """Whether drifts beyond `tolerance` were applied (the request's `apply`)."""
    tolerance: int
    status: str
    skus_compared: int
    skus_drifted: int
    units_drifted: int
    skus_beyond_tolerance: int
    skus_superseded: int
    """Lines a later snapshot's reconciliation already corrected (listed, never applied,
    not counted in `skus_drifted`, `units_drifted` or `skus_beyond_tolerance`)."""
    skus_applied: int
    started_at: datetime
    finished_at: datetime | None
    lines: list[DriftedLine]


def reconciliation_id(scope: str, key: str) -> str:
    """The id of the reconciliation an Idempotency-Key names for a caller (`scope`)."""
    return str(uuid5(NAMESPACE_URL, f"atp:reconciliation:{scope}\x1f{key}"))


def _stream(rid: str) -> Stream:
    return ("reconciliation", rid)


def _index(location: str) -> Stream:
    return ("reconciliation", f"location:{location}")


def report_of(records: Sequence[Any]) -> Report | None:
    """The report a reconciliation stream's records make (None: no such reconciliation)."""
    if not records or not isinstance(records[0], ReconciliationStarted):
        return None
    start: ReconciliationStarted = records[0]
    parts = sorted((r for r in records if isinstance(r, ReconciliationLines)), key=lambda r: r.part)
    finished = next((r for r in records if isinstance(r, ReconciliationFinished)), None)
    lines = [line for part in parts for line in part.lines]
    drifted = [line for line in lines if not line.superseded]
    return Report(
        reconciliation_id=start.reconciliation_id,
        location=start.location,
        as_of=start.as_of,
        source=start.source,
        complete=start.complete,
        applied=start.apply,
        tolerance=start.tolerance,
        status="finished" if finished else "in_progress",
        skus_compared=sum(p.compared for p in parts),
        skus_drifted=len(drifted),
        units_drifted=sum(abs(line.drift) for line in drifted),
        skus_beyond_tolerance=sum(1 for line in drifted if abs(line.drift) > start.tolerance),
        skus_superseded=len(lines) - len(drifted),
        skus_applied=sum(1 for line in lines if line.applied),
        started_at=start.started_at,
        finished_at=finished.finished_at if finished else None,
        lines=lines,
    )


@dataclass
class Reconciliations:
    """The reconciliation use cases over the writer (`commands`) and the read-side SQL
    (`reader`). `on_finished(report)` is told of every finished one (metrics);
    `alert_units` (ATP_DRIFT_ALERT_UNITS, 0: off) logs a warning above it."""

    commands: CommandService
    reader: LedgerReader
    clock: Callable[[], datetime]
    alert_units: int = 0
    on_finished: Callable[[Report], None] = lambda _: None
    inflight: dict[str, asyncio.Future[None]] = dataclasses.field(default_factory=dict)
    """Reconciliations being run by this process, by id: a duplicate waits for the first."""

    async def policies(self, when: datetime) -> Policies:
        """The policies as of `when`."""
        state = (await self.reader.as_of([POLICIES], when))[POLICIES].state
        assert isinstance(state, Policies)
        return state

    async def check(self, request: Request) -> None:
        """Refuse, before anything is recorded, a request that cannot be reconciled:
        InvalidCommand for an `as_of` without offset or in the future or a negative
        tolerance, UnknownLocation for a location atp does not have."""
        self._check_time(request.as_of)
        if request.tolerance < 0:
            raise InvalidCommand("tolerance", "tolerance must be >= 0")
        if request.location not in (await self.policies(self.clock())).locations:
            raise UnknownLocation("location", request.location)

    def _check_time(self, when: datetime) -> None:
        """InvalidCommand (`as_of`) for a time without offset, in the future, or before
        1970 (no ledger event is older)."""
        if when.utcoffset() is None:
            raise InvalidCommand("as_of", "as_of must carry a UTC offset")
        if when > self.clock():
            raise InvalidCommand("as_of", f"as_of {when.isoformat()} is in the future")
        if when < EPOCH:
            raise InvalidCommand("as_of", "as_of must not be before 1970-01-01T00:00:00Z")

    @staticmethod
    def check_unique(skus: Iterable[tuple[str, str]]) -> set[str]:
        """The snapshot's SKUs, given as (field naming the line, sku); InvalidCommand
        naming the line of a SKU listed twice."""
        seen: set[str] = set()
        for field, sku in skus:
            if sku in seen:
                raise InvalidCommand(field, f"SKU {sku!r} appears more than once")
            seen.add(sku)
        return seen

    @contextlib.asynccontextmanager
    async def _alone(self, rid: str) -> AsyncIterator[None]:
        """Run `rid` alone in this process: wait for a run of it in flight first."""
        while (first := self.inflight.get(rid)) is not None:
            await asyncio.shield(first)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight[rid] = mine
        try:
            yield
        finally:
            del self.inflight[rid]
            mine.set_result(None)

    async def run(
        self,
        rid: str,
        request: Request,
        request_hash: str,
        parts: Callable[[], AsyncIterator[list[SnapshotLine]]],
        skus: set[str],
    ) -> tuple[Report, bool, int | None]:
        """Reconcile the snapshot `parts()` yields (already checked: `check`,
        `check_unique`, whose SKUs are `skus`) as `rid`; returns the report, whether it is a
        replay (this call wrote nothing: the reconciliation was already finished, or another
        request with the same key finished it meanwhile) and the ledger position of its
        last write (a replay's: that of the reconciliation's last record). A duplicate of a
        run in flight in this process waits for it, then replays it. Raises KeyReusedError
        when `rid` names another snapshot.

        Runs that apply are serialised per location, from the first read to the last
        write (`LedgerReader.exclusive`, across processes): each compares with the
        corrections the runs before it applied, so a snapshot sent twice at once (two
        cron hosts, a retry under a new key) applies its drift once."""
        hold: AbstractAsyncContextManager[None] = (
            self.reader.exclusive(f"reconciliation:{request.location}")
            if request.apply
            else nullcontext()
        )
        async with self._alone(rid), hold:
            records = await self.reader.records(_stream(rid))
            done = self._check_same(records, request_hash)
            report = report_of(records)
            if report is not None and report.status == "finished":
                return report, True, await self.reader.last_position(_stream(rid))
            started = ReconciliationStarted(
                reconciliation_id=rid,
                location=request.location,
                as_of=request.as_of,
                source=request.source,
                complete=request.complete,
                apply=request.apply,
                tolerance=request.tolerance,
                request_hash=request_hash,
                started_at=self.clock(),
            )
            position = await self._submit(rid, lambda world, _: self._start(world, started), [])
            if position is None:
                # Another request with this key started it: wait while it makes progress (it
                # may be running in another worker process), and replay it once finished.
                report = await self._await_other(rid)
                if report is not None:
                    return report, True, await self.reader.last_position(_stream(rid))
            # Part n+1 is read and compared while part n is being written (other SKUs: the
            # as-of figures do not depend on it); parts are still recorded in order.
            writing: asyncio.Task[int | None] | None = None
            part = 0
            try:
                async for lines in self._all_parts(request, parts, skus):
                    if part not in done:
                        write = await self._part(rid, request, part, lines)
                        try:
                            if writing is not None:
                                position = await writing or position
                        except BaseException:
                            write.close()  # never started: nothing of this part is written
                            raise
                        writing = asyncio.create_task(write)
                    part += 1
            finally:
                if writing is not None:
                    # A part handed to the writer is awaited whatever failed after it.
                    last = (await asyncio.gather(writing, return_exceptions=True))[0]
                    if isinstance(last, BaseException):
                        raise last
                    position = last or position
            finish = await self._submit(
                rid, lambda world, now: self._finish(world, now, rid, request), []
            )
            report = report_of(await self.reader.records(_stream(rid)))
            assert report is not None
            if position is None and finish is None:
                # Every record was written by another request with this key (another worker
                # process ran it meanwhile): a replay of its report.
                return report, True, await self.reader.last_position(_stream(rid))
            self._finished(report)
            return report, False, finish or position

    async def _await_other(self, rid: str) -> Report | None:
        """The report of `rid` once another request finishes it; None when it records
        nothing for STALLED seconds (that request crashed: this one finishes it)."""
        seen = len(await self.reader.records(_stream(rid)))
        waited = 0.0
        while waited < STALLED:
            await asyncio.sleep(POLL)
            records = await self.reader.records(_stream(rid))
            report = report_of(records)
            if report is not None and report.status == "finished":
                return report
            waited = 0.0 if len(records) > seen else waited + POLL
            seen = len(records)
        return None

    async def _all_parts(
        self,
        request: Request,
        parts: Callable[[], AsyncIterator[list[SnapshotLine]]],
        skus: set[str],
    ) -> AsyncIterator[list[SnapshotLine]]:
        """The snapshot's parts, then (`complete`) the SKUs atp has had at the location
        that it omits, as 0."""
        async for lines in parts():
            yield lines
        if request.complete:
            omitted = sorted((await self.reader.skus_at(request.location)) - skus)
            for start in range(0, len(omitted), PART):
                yield [(sku, 0) for sku in omitted[start : start + PART]]

    def _check_same(self, records: Sequence[Any], request_hash: str) -> set[int]:
        first = records[0] if records else None
        if isinstance(first, ReconciliationStarted) and first.request_hash != request_hash:
            raise KeyReusedError(first.reconciliation_id)
        return {r.part for r in records if isinstance(r, ReconciliationLines)}

    def _start(self, world: ServiceWorld, started: ReconciliationStarted) -> Decision:
        records = world.get(_stream(started.reconciliation_id))
        if records:
            self._check_same(records, started.request_hash)
            return []
        return [(_stream(started.reconciliation_id), started)]

    async def _part(
        self, rid: str, request: Request, part: int, lines: list[SnapshotLine]
    ) -> Coroutine[Any, Any, int | None]:
        """Read and compare one part; returns its write (the report record and, with
        `apply`, its corrections, in one writer job), not yet awaited."""
        streams: list[Stream] = [("item", sku) for sku, _ in lines]
        folded = await self.reader.as_of(streams, request.as_of, later=True)
        drifted: list[DriftedLine] = []
        for sku, on_hand in lines:
            state = folded[("item", sku)]
            assert isinstance(state.state, ItemState)
            found = compare(state.state, state.later, request.location, request.as_of, on_hand)  # type: ignore[arg-type]
            if found.drift == 0:
                continue
            applied = request.apply and beyond(found, request.tolerance)
            drifted.append(DriftedLine(**msgspec.structs.asdict(found), applied=applied))
        record = ReconciliationLines(part=part, compared=len(lines), lines=tuple(drifted))
        command = cmd.ReconcileStock(
            location=request.location,
            reconciliation_id=rid,
            as_of=request.as_of,
            lines=tuple(cmd.DriftLine(d.sku, d.drift) for d in drifted if d.applied),
        )

        def decision(world: ServiceWorld, now: datetime) -> Decision:
            records = world.get(_stream(rid))
            if any(isinstance(r, ReconciliationLines) and r.part == part for r in records):
                return []  # recorded by an earlier attempt: never applied twice
            applied: Decision = decide(command, world, now) if command.lines else []
            # What the corrections really moved (a drift down stops at 0 on hand).
            moved = {e.sku: e.drift for _, e in applied if isinstance(e, ev.StockReconciled)}
            lines = tuple(
                msgspec.structs.replace(
                    line, applied=line.sku in moved, applied_drift=moved.get(line.sku, 0)
                )
                for line in record.lines
            )
            return [*applied, (_stream(rid), msgspec.structs.replace(record, lines=lines))]

        reads = [_stream(rid), POLICIES, *(("item", line.sku) for line in command.lines)]
        return self._submit(rid, decision, reads)

    def _finish(self, world: ServiceWorld, now: datetime, rid: str, request: Request) -> Decision:
        report = report_of(world.get(_stream(rid)))
        if report is None or report.status == "finished":
            return []
        finished = ReconciliationFinished(
            skus_compared=report.skus_compared,
            skus_drifted=report.skus_drifted,
            units_drifted=report.units_drifted,
            finished_at=now,
        )
        listed = ReconciliationListed(reconciliation_id=rid, as_of=request.as_of, finished_at=now)
        return [(_stream(rid), finished), (_index(request.location), listed)]

    async def _submit(
        self,
        rid: str,
        function: Callable[[ServiceWorld, datetime], Decision],
        reads: Sequence[Stream],
    ) -> int | None:
        # The request's correlation id (api.log) goes into the ledger metadata, as for any write.
        cid = correlation_id.get()
        job = Job(decider(function, [_stream(rid), *reads]), cid if cid != "-" else rid)
        result = await self.commands.submit(job)
        if isinstance(result, Rejected):
            raise result.error
        assert isinstance(result, Applied)
        return result.position

    def _finished(self, report: Report) -> None:
        self.on_finished(report)
        if self.alert_units and report.units_drifted > self.alert_units:
            log.warning(
                "reconciliation %s of %s found %d units of drift (alert above %d)",
                report.reconciliation_id,
                report.location,
                report.units_drifted,
                self.alert_units,
            )

    # --- reads ---------------------------------------------------------------------------

    async def report(self, rid: str) -> Report | None:
        """The report of reconciliation `rid`, or None."""
        return report_of(await self.reader.records(_stream(rid)))

    async def listing(self, location: str, limit: int) -> list[Report]:
        """The newest `limit` finished reconciliations of `location`, newest first, with
        no lines."""
        index = await self.reader.records(_index(location))
        found: list[Report] = []
        for listed in reversed(index):
            assert isinstance(listed, ReconciliationListed)
            report = await self.report(listed.reconciliation_id)
            if report is not None:
                report.lines = []
                found.append(report)
            if len(found) == limit:
                break
        return found

    async def previous_as_of(self, report: Report) -> datetime | None:
        """The `as_of` of the location's reconciliation finished before `report`'s."""
        index = [
            r
            for r in await self.reader.records(_index(report.location))
            if isinstance(r, ReconciliationListed)
        ]
        ids = [r.reconciliation_id for r in index]
        at = ids.index(report.reconciliation_id) if report.reconciliation_id in ids else len(ids)
        return index[at - 1].as_of if at > 0 else None

    async def line_history(
        self, report: Report, sku: str, after: int, limit: int
    ) -> list[HistoryRow] | None:
        """The SKU's ledger events at the report's location (atp.reconcile.concerns)
        between the location's previous reconciliation and this one (occurred in (previous
        as_of, as_of]): the movements that explain its drift. None when the SKU is not a
        line of the report."""
        if not any(line.sku == sku for line in report.lines):
            return None
        since = await self.previous_as_of(report)
        return await self.reader.history(
            ("item", sku), since, report.as_of, after, limit, report.location
        )

    async def item_as_of(self, sku: str, when: datetime) -> ItemView:
        """The item view (per location and channel, with derivation) as it stood at `when`:
        the SKU and the policies folded from the ledger as of then. InvalidCommand for a
        future `when`."""
        self._check_time(when)
        folded = await self.reader.as_of([("item", sku), POLICIES], when)
        item, policies = folded[("item", sku)], folded[POLICIES]
        assert isinstance(item.state, ItemState) and isinstance(policies.state, Policies)
        return item_view(item.state, policies.state, when, max(item.position, policies.position))
