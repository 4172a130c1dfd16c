"""The ledger's read-side SQL for reconciliation (issue 13 §7): as-of folds, record
streams (the reports), the history between two times and the SKUs a location has held.

On PostgreSQL it runs on asyncpg, on the event loop (ARCHITECTURE decision 4: the
eventsourcing library is for writes, from a thread); embedded, the same queries run on
SQLite's own driver in a worker thread. Both read the library's tables as they are
(`stored_events`/`atp_events`, `..._snapshots`): originator id, version, topic, and the
msgspec envelope whose `t` is when the event occurred (adapters.ledger).

As of a time: a stream's state is its newest snapshot whose version's event occurred at
or before that time, then its events after that snapshot while they occurred at or before
it (a prefix of the stream: a state the stream really had). So a SKU with 10,000 events
costs one snapshot and at most `SNAPSHOT_INTERVAL` events, not a replay.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import msgspec

from adapters.ledger import HistoryRow, Ledger, Payload, decode_payload, stream_id
from atp.events import Event
from atp.reconcile import concerns
from atp.streams import Stream
from atp.world import evolve, initial_state

_ITEM_STATES = ("policies", "item")

_LOCK_SPACE = 0x617470  # "atp": the advisory lock space of PostgresReader.exclusive

LOCATION_TOPICS = tuple(
    f"atp.events:{name}"
    for name in (
        "StockReceived",
        "StockAdjusted",
        "StockCounted",
        "StockReconciled",
        "StockReturned",
        "TransferArrived",
        "TransferReturned",
    )
)
"""Every event that can put units on hand at a location (`complete` snapshots)."""


class _When(msgspec.Struct):
    t: datetime


class _Snap(msgspec.Struct):
    s: msgspec.Raw


_when = msgspec.json.Decoder(_When)
_snap = msgspec.json.Decoder(_Snap)


@dataclass
class AsOf:
    """A stream as of a time: `state` after the events that occurred by then, the ledger
    `position` of the last of them (0: none), and `later`, the events after them in stream
    order (only when asked for)."""

    state: Any
    position: int = 0
    later: list[Event] = field(default_factory=list)


class LedgerReader(Protocol):
    """The read-side queries of reconciliation, on asyncpg or SQLite."""

    async def as_of(
        self, streams: Sequence[Stream], when: datetime, later: bool = False
    ) -> dict[Stream, AsOf]:
        """Each domain stream as of `when` (see the module doc); `later` keeps the events
        after it."""

    async def records(self, stream: Stream) -> list[Payload]:
        """Every event or record of a stream, oldest first."""

    async def last_position(self, stream: Stream) -> int | None:
        """The ledger position of the stream's last event or record (None: no such stream)."""

    async def history(
        self,
        stream: Stream,
        since: datetime | None,
        until: datetime,
        after: int,
        limit: int,
        location: str | None = None,
    ) -> list[HistoryRow]:
        """Up to `limit` events of `stream` past position `after` that occurred in
        (`since`, `until`], oldest first; with `location`, only those that concern it
        (atp.reconcile.concerns)."""

    async def skus_at(self, location: str) -> set[str]:
        """Every SKU that ever had units put on hand at `location`."""

    def exclusive(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held by one holder of `key` at a time, across every process on the same ledger
        (PostgreSQL: a session advisory lock; embedded: one process, an asyncio lock)."""

    async def close(self) -> None:
        """Release the connections."""


class _LocalLocks:
    """One asyncio lock per key (kept: keys are locations, few), for this process's tasks."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(key, asyncio.Lock()):
            yield


def _fold(
    stream: Stream,
    snapshot: tuple[Any, int] | None,
    rows: list[tuple[int, int, str, bytes]],
    when: datetime,
    later: bool,
) -> AsOf:
    state, _ = snapshot or (initial_state(stream), 0)
    result = AsOf(state)
    folding = True
    for position, _version, topic, body in rows:
        payload, occurred_at, _ = decode_payload(topic, body)
        assert isinstance(payload, Event)
        if folding and occurred_at <= when:
            result.state = evolve(stream, result.state, payload)
            result.position = position
            continue
        folding = False
        if not later:
            break
        result.later.append(payload)
    return result


def _pick(
    candidates: list[tuple[UUID, int, bytes]], when: datetime
) -> tuple[dict[UUID, int], dict[UUID, int]]:
    """From every snapshot version with its event's envelope: per stream the newest version
    that occurred by `when`, and the oldest one after it (where an as-of fold may stop)."""
    best: dict[UUID, int] = {}
    stop: dict[UUID, int] = {}
    for uid, version, body in candidates:
        if _when.decode(body).t <= when:
            best[uid] = max(best.get(uid, 0), version)
        else:
            stop[uid] = min(stop.get(uid, version), version)
    return best, stop


def _state_of(stream: Stream, body: bytes) -> Any:
    from adapters.ledger import decode_state

    return decode_state(stream, _snap.decode(body).s)


class PostgresReader:
    """LedgerReader on asyncpg (one small pool per process, opened on first use)."""

    def __init__(self, dsn: str, events: str, snapshots: str, pool_size: int = 4) -> None:
        self.dsn = dsn
        self.events = events
        self.snapshots = snapshots
        self.pool_size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._local = _LocalLocks()

    async def _conn_pool(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self.pool_size, command_timeout=60
                )
        return self._pool

    async def as_of(
        self, streams: Sequence[Stream], when: datetime, later: bool = False
    ) -> dict[Stream, AsOf]:
        by_id = {stream_id(s): s for s in streams}
        ids = list(by_id)
        pool = await self._conn_pool()
        async with pool.acquire() as conn:
            candidates = await conn.fetch(
                f"SELECT s.originator_id, s.originator_version, e.state FROM {self.snapshots} s "
                f"JOIN {self.events} e ON e.originator_id = s.originator_id "
                "AND e.originator_version = s.originator_version "
                "WHERE s.originator_id = ANY($1::uuid[])",
                ids,
            )
            best, stop = _pick([(r[0], r[1], r[2]) for r in candidates], when)
            snaps: dict[UUID, tuple[Any, int]] = {}
            if best:
                rows = await conn.fetch(
                    f"SELECT s.originator_id, s.originator_version, s.state "
                    f"FROM unnest($1::uuid[], $2::int[]) AS v(id, ver) JOIN {self.snapshots} s "
                    "ON s.originator_id = v.id AND s.originator_version = v.ver",
                    list(best),
                    list(best.values()),
                )
                for r in rows:
                    snaps[r[0]] = (_state_of(by_id[r[0]], r[2]), r[1])
            bounds = [
                (uid, best.get(uid, 0), 2**31 - 1 if later else stop.get(uid, 2**31 - 1))
                for uid in ids
            ]
            rows = await conn.fetch(
                "SELECT e.originator_id, e.notification_id, e.originator_version, e.topic, "
                "e.state FROM unnest($1::uuid[], $2::int[], $3::int[]) AS v(id, ver, upto) "
                f"JOIN {self.events} e ON e.originator_id = v.id "
                "AND e.originator_version > v.ver AND e.originator_version <= v.upto "
                "ORDER BY e.originator_id, e.originator_version",
                [b[0] for b in bounds],
                [b[1] for b in bounds],
                [b[2] for b in bounds],
            )
        grouped: dict[UUID, list[tuple[int, int, str, bytes]]] = {uid: [] for uid in ids}
        for r in rows:
            grouped[r[0]].append((r[1], r[2], r[3], r[4]))
        return {
            stream: _fold(stream, snaps.get(uid), grouped[uid], when, later)
            for uid, stream in by_id.items()
        }

    async def records(self, stream: Stream) -> list[Payload]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"SELECT topic, state FROM {self.events} WHERE originator_id = $1 "
            "ORDER BY originator_version",
            stream_id(stream),
        )
        return [decode_payload(r[0], r[1])[0] for r in rows]

    async def last_position(self, stream: Stream) -> int | None:
        pool = await self._conn_pool()
        found: int | None = await pool.fetchval(
            f"SELECT max(notification_id) FROM {self.events} WHERE originator_id = $1",
            stream_id(stream),
        )
        return found

    async def history(
        self,
        stream: Stream,
        since: datetime | None,
        until: datetime,
        after: int,
        limit: int,
        location: str | None = None,
    ) -> list[HistoryRow]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            f"SELECT notification_id, originator_id, topic, state FROM {self.events} "
            "WHERE originator_id = $1 AND notification_id > $2 ORDER BY originator_version",
            stream_id(stream),
            after,
        )
        return _between(rows, since, until, limit, location)

    async def skus_at(self, location: str) -> set[str]:
        pool = await self._conn_pool()
        rows = await pool.fetch(
            "SELECT DISTINCT j #>> '{e,sku}' FROM ("
            f"SELECT convert_from(state, 'UTF8')::jsonb AS j FROM {self.events} "
            "WHERE topic = ANY($1::text[])) AS x WHERE $2 IN "
            "(j #>> '{e,location}', j #>> '{e,to_location}', j #>> '{e,from_location}')",
            list(LOCATION_TOPICS),
            location,
        )
        return {r[0] for r in rows}

    @asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[None]:
        # Tasks of this process queue on an asyncio lock, so one connection per process
        # waits on the advisory lock; the connection is its own (not the pool's: holders
        # need the pool for their reads). Closing it releases the lock whatever happened.
        import asyncpg

        async with self._local.hold(key):
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(
                    "SELECT pg_advisory_lock($1::int, hashtext($2))", _LOCK_SPACE, key
                )
                yield
            finally:
                await conn.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _between(
    rows: Sequence[Any], since: datetime | None, until: datetime, limit: int, location: str | None
) -> list[HistoryRow]:
    found: list[HistoryRow] = []
    for position, originator, topic, body in rows:
        payload, occurred_at, metadata = decode_payload(topic, bytes(body))
        if occurred_at > until:
            break
        if since is not None and occurred_at <= since:
            continue
        if location is not None and not concerns(payload, location):
            continue
        uid = originator if isinstance(originator, UUID) else UUID(str(originator))
        found.append(HistoryRow(position, uid, payload, occurred_at, metadata))
        if len(found) == limit:
            break
    return found


class SqliteReader:
    """LedgerReader on the embedded SQLite file: the same queries on the stdlib driver,
    each in a worker thread with its own read-only connection (WAL: never blocks the
    writer)."""

    def __init__(self, path: str, events: str, snapshots: str) -> None:
        self.path = path
        self.events = events
        self.snapshots = snapshots
        self._local = _LocalLocks()

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        finally:
            conn.close()

    def _as_of(self, streams: Sequence[Stream], when: datetime, later: bool) -> dict[Stream, AsOf]:
        by_hex = {stream_id(s).hex: s for s in streams}
        marks = ",".join("?" for _ in by_hex)
        candidates = self._query(
            f"SELECT s.originator_id, s.originator_version, e.state FROM {self.snapshots} s "
            f"JOIN {self.events} e ON e.originator_id = s.originator_id "
            f"AND e.originator_version = s.originator_version WHERE s.originator_id IN ({marks})",
            list(by_hex),
        )
        best, stop = _pick([(UUID(r[0]), r[1], bytes(r[2])) for r in candidates], when)
        snaps: dict[str, tuple[Any, int]] = {}
        if best:
            pairs = ",".join("(?, ?)" for _ in best)
            rows = self._query(
                f"WITH v(id, ver) AS (VALUES {pairs}) SELECT s.originator_id, "
                f"s.originator_version, s.state FROM v JOIN {self.snapshots} s "
                "ON s.originator_id = v.id AND s.originator_version = v.ver",
                [x for uid, ver in best.items() for x in (uid.hex, ver)],
            )
            for r in rows:
                snaps[r[0]] = (_state_of(by_hex[r[0]], bytes(r[2])), r[1])
        limit = 2**62
        triples = ",".join("(?, ?, ?)" for _ in by_hex)
        params: list[Any] = []
        for hex_id in by_hex:
            uid = UUID(hex_id)
            params += [hex_id, best.get(uid, 0), limit if later else stop.get(uid, limit)]
        rows = self._query(
            f"WITH v(id, ver, upto) AS (VALUES {triples}) SELECT e.originator_id, e.rowid, "
            f"e.originator_version, e.topic, e.state FROM v JOIN {self.events} e "
            "ON e.originator_id = v.id AND e.originator_version > v.ver "
            "AND e.originator_version <= v.upto ORDER BY e.originator_id, e.originator_version",
            params,
        )
        grouped: dict[str, list[tuple[int, int, str, bytes]]] = {h: [] for h in by_hex}
        for r in rows:
            grouped[r[0]].append((r[1], r[2], r[3], bytes(r[4])))
        return {
            stream: _fold(stream, snaps.get(hex_id), grouped[hex_id], when, later)
            for hex_id, stream in by_hex.items()
        }

    async def as_of(
        self, streams: Sequence[Stream], when: datetime, later: bool = False
    ) -> dict[Stream, AsOf]:
        return await asyncio.to_thread(self._as_of, streams, when, later)

    async def records(self, stream: Stream) -> list[Payload]:
        rows = await asyncio.to_thread(
            self._query,
            f"SELECT topic, state FROM {self.events} WHERE originator_id = ? "
            "ORDER BY originator_version",
            [stream_id(stream).hex],
        )
        return [decode_payload(r[0], bytes(r[1]))[0] for r in rows]

    async def last_position(self, stream: Stream) -> int | None:
        rows = await asyncio.to_thread(
            self._query,
            f"SELECT max(rowid) FROM {self.events} WHERE originator_id = ?",
            [stream_id(stream).hex],
        )
        return rows[0][0] if rows else None

    async def history(
        self,
        stream: Stream,
        since: datetime | None,
        until: datetime,
        after: int,
        limit: int,
        location: str | None = None,
    ) -> list[HistoryRow]:
        rows = await asyncio.to_thread(
            self._query,
            f"SELECT rowid, originator_id, topic, state FROM {self.events} "
            "WHERE originator_id = ? AND rowid > ? ORDER BY originator_version",
            [stream_id(stream).hex, after],
        )
        return _between(rows, since, until, limit, location)

    async def skus_at(self, location: str) -> set[str]:
        marks = ",".join("?" for _ in LOCATION_TOPICS)
        rows = await asyncio.to_thread(
            self._query,
            "SELECT DISTINCT json_extract(j, '$.e.sku') FROM ("
            f"SELECT CAST(state AS TEXT) AS j FROM {self.events} WHERE topic IN ({marks})) "
            "WHERE ? IN (json_extract(j, '$.e.location'), json_extract(j, '$.e.to_location'), "
            "json_extract(j, '$.e.from_location'))",
            [*LOCATION_TOPICS, location],
        )
        return {r[0] for r in rows}

    def exclusive(self, key: str) -> AbstractAsyncContextManager[None]:
        # Embedded mode is one process: its tasks queue on an asyncio lock.
        return self._local.hold(key)

    async def close(self) -> None:
        return None


def reader_for(ledger: Ledger, database_url: str | None) -> LedgerReader:
    """The reader over the same tables as `ledger`: asyncpg with `database_url`
    (postgresql://...), else the embedded SQLite file."""
    events = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    assert ledger.snapshots is not None
    snapshots = ledger.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if database_url:
        schema = datastore.schema
        return PostgresReader(database_url, f"{schema}.{events}", f"{schema}.{snapshots}")
    return SqliteReader(datastore.pool.db_name, events, snapshots)
