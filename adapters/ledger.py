"""The ledger: the eventsourcing library's event store, with msgspec events and snapshots.

Streams are addressed by natural keys (`("item", "SKU-1")`); their ids are uuid5 of them.
The library is synchronous: call this module from worker threads, never the event loop.
"""

from __future__ import annotations

import functools
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import unquote, urlparse
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic, resolve_topic

from adapters.records import Record
from atp.events import Event
from atp.state import (
    ItemState,
    OrderState,
    Policies,
    ReservationState,
    TransferState,
    state_dec_hook,
    state_enc_hook,
)
from atp.streams import POLICIES, Stream
from atp.world import StreamState, evolve, initial_state

__all__ = ["IntegrityError", "Ledger", "LedgerEvent", "ledger_env", "stream_id"]

SNAPSHOT_TOPIC = "atp:snapshot"
SNAPSHOT_INTERVAL = 100
Payload = Event | Record
StreamKey = Stream
"""The stream key type, defined once in `atp.streams` (this name is kept for its importers)."""


@functools.lru_cache(maxsize=20_000)
def stream_id(stream: StreamKey) -> UUID:
    """The stream's id in the event store: uuid5 of "atp:<kind>:<key>" (cached: the writer
    asks for the same hot streams' ids batch after batch). 20,000 ids, not more: every
    cached UUID is an object the collector scans, and at 200,000 they were half of the
    writer process's tracked objects (issue 12, docs/benchmarks.md)."""
    kind, key = stream
    return uuid5(NAMESPACE_URL, f"atp:{kind}:{key}")


def snapshot_interval(state: Any) -> int:
    """Events between two snapshots of an item or order stream: SNAPSHOT_INTERVAL, doubled
    until it is at least the holds and allocations the state carries. Encoding a snapshot
    costs O(that size), so its cost per event stays bounded however many live holds a hot
    SKU has (issue 12), and a cold load replays at most about twice that many events."""
    size = len(getattr(state, "holds", ())) + len(getattr(state, "allocations", ()))
    every = SNAPSHOT_INTERVAL
    while every < size:
        every *= 2
    return every


class LedgerEvent:
    """An event with its place in a stream: what the library stores and returns."""

    __slots__ = ("event", "metadata", "originator_id", "originator_version", "timestamp")

    def __init__(
        self,
        originator_id: UUID,
        originator_version: int,
        timestamp: datetime,
        event: Payload,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.originator_id = originator_id
        self.originator_version = originator_version
        self.timestamp = timestamp
        self.event = event
        self.metadata = metadata or {}


class Snapshot:
    """A stream's state at a version, so long streams load without a full replay."""

    __slots__ = ("originator_id", "originator_version", "state", "timestamp", "topic")

    def __init__(
        self,
        originator_id: UUID,
        originator_version: int,
        timestamp: datetime,
        topic: str,
        state: bytes,
    ) -> None:
        self.originator_id = originator_id
        self.originator_version = originator_version
        self.timestamp = timestamp
        self.topic = topic
        self.state = state


class _Envelope(msgspec.Struct, frozen=True):
    t: datetime
    e: msgspec.Raw
    m: dict[str, str] = {}


class _SnapshotEnvelope(msgspec.Struct, frozen=True):
    t: datetime
    kind: str
    s: msgspec.Raw


_encoder = msgspec.json.Encoder(enc_hook=state_enc_hook)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_snapshot_decoder = msgspec.json.Decoder(_SnapshotEnvelope)


@functools.cache
def _decoder_for(topic: str) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(resolve_topic(topic))


_STATE_TYPES: dict[str, Any] = {
    "policies": Policies,
    "item": ItemState,
    "order": OrderState | None,
    "reservation": ReservationState | None,
    "transfer": TransferState | None,
}
_state_decoders = {
    kind: msgspec.json.Decoder(type_, dec_hook=state_dec_hook)
    for kind, type_ in _STATE_TYPES.items()
}


def decode_state(stream: StreamKey, raw: bytes) -> Any:
    """A domain stream's state from a snapshot's JSON (`ItemState` and the other states,
    with the persistent holds map decoded by `atp.state.state_dec_hook`)."""
    return _state_decoders[stream[0]].decode(raw)


def decode_payload(topic: str, state: bytes) -> tuple[Payload, datetime, dict[str, str]]:
    envelope = _envelope_decoder.decode(state)
    payload: Payload = _decoder_for(topic).decode(envelope.e)
    return payload, envelope.t, envelope.m


class MsgspecMapper(Mapper[UUID]):
    """Stores events as msgspec JSON; the topic names the event class."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if isinstance(domain_event, Snapshot):
            body = _encoder.encode(
                _SnapshotEnvelope(
                    t=domain_event.timestamp,
                    kind=domain_event.topic,
                    s=msgspec.Raw(domain_event.state),
                )
            )
            topic = SNAPSHOT_TOPIC
        else:
            body = _encoder.encode(
                _Envelope(
                    t=domain_event.timestamp,
                    e=msgspec.Raw(_encoder.encode(domain_event.event)),
                    m=domain_event.metadata,
                )
            )
            topic = get_topic(type(domain_event.event))
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=body,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        if stored_event.topic == SNAPSHOT_TOPIC:
            snap = _snapshot_decoder.decode(stored_event.state)
            return Snapshot(
                originator_id, stored_event.originator_version, snap.t, snap.kind, snap.s
            )
        payload, timestamp, metadata = decode_payload(stored_event.topic, stored_event.state)
        return LedgerEvent(
            originator_id, stored_event.originator_version, timestamp, payload, metadata
        )


class _NoTranscoder(Transcoder):
    """The mapper already produces bytes."""

    def encode(self, obj: Any) -> bytes:  # pragma: no cover - unused
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:  # pragma: no cover - unused
        raise NotImplementedError


PRE_PING_AFTER_IDLE = 1.0
"""Seconds a pooled connection may rest before it is checked again when lent."""


def _check_all_when_one_is_dead(pool: Any) -> Callable[[Any], None]:
    """The pool's pre-ping (POSTGRES_PRE_PING), made cheaper and extended.

    A connection lent again within PRE_PING_AFTER_IDLE seconds of its last use is not
    pinged: under load every transaction would otherwise pay a second round trip (issue 12:
    a fifth of the writer's and the projector's samples were this ping). A connection that
    died within that second fails its statement and comes back broken; `pool.putconn` is
    wrapped so that this, too, has every idle connection checked at once.

    When a pinged connection is found dead, the others most likely died with it (a restart,
    a failover, pg_terminate_backend), so every idle one is checked at once (psycopg_pool's
    `ConnectionPool.check`) and the dead ones reconnected in the background. The request
    that found it waits for the pool's one back-off (about a second) and gets a fresh
    connection, instead of meeting each dead connection in turn until its timeout."""
    from psycopg_pool import ConnectionPool

    pool_ref = weakref.ref(pool)
    checked: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def check(conn: Any) -> None:
        now = time.monotonic()
        if now - checked.get(conn, -PRE_PING_AFTER_IDLE) < PRE_PING_AFTER_IDLE:
            checked[conn] = now
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            checked.pop(conn, None)
            live = pool_ref()
            if live is not None:
                live.check()
            raise
        checked[conn] = now

    put = pool.putconn

    def putconn(conn: Any) -> None:
        broken = bool(conn.broken or conn.closed)
        put(conn)
        if broken:
            pool.check()

    pool.putconn = putconn
    return check


def ledger_env(
    database_url: str | None,
    data_dir: str,
    create_table: bool,
    *,
    pool_size: int = 5,
    connect_timeout: int = 2,
) -> dict[str, str]:
    """eventsourcing settings for PostgreSQL (when a URL is given) or the embedded SQLite file.

    `pool_size` is PostgreSQL connections per process; `connect_timeout` the seconds to
    wait for a connection (api.settings: ATP_DB_POOL_SIZE, ATP_DB_CONNECT_TIMEOUT)."""
    env = {"CREATE_TABLE": "y" if create_table else "n", "IS_SNAPSHOTTING_ENABLED": "y"}
    if database_url:
        url = urlparse(database_url)
        env.update(
            # eventsourcing's PostgreSQL factory, with recorders that insert binary columns
            # (adapters.recorder).
            PERSISTENCE_MODULE="adapters.recorder:LedgerFactory",
            POSTGRES_DBNAME=unquote(url.path.lstrip("/")) or "postgres",
            POSTGRES_HOST=url.hostname or "127.0.0.1",
            POSTGRES_PORT=str(url.port or 5432),
            POSTGRES_USER=unquote(url.username or "postgres"),
            POSTGRES_PASSWORD=unquote(url.password or ""),
            POSTGRES_POOL_SIZE=str(pool_size),
            POSTGRES_LOCK_TIMEOUT="5",
            # Fail fast (503 + Retry-After) when the database is unreachable, rather than
            # holding requests for the pool's default 30 s.
            POSTGRES_CONNECT_TIMEOUT=str(connect_timeout),
            # Check a pooled connection before lending it (psycopg_pool's check_connection):
            # after PostgreSQL drops connections (restart, failover, pg_terminate_backend)
            # the dead ones are replaced instead of failing one request each.
            POSTGRES_PRE_PING="y",
        )
    else:
        os.makedirs(data_dir, exist_ok=True)
        env.update(
            # eventsourcing's SQLite factory, whose recorder checks the streams a batch
            # read (adapters.recorder).
            PERSISTENCE_MODULE="adapters.recorder:SQLiteLedgerFactory",
            SQLITE_DBNAME=os.path.join(data_dir, "ledger.sqlite"),
            SQLITE_LOCK_TIMEOUT="10",
        )
    return env


class Ledger(Application[UUID]):
    """The one event store of atp. Streams are folded with the domain's `evolve`."""

    name = "atp"

    def construct_mapper(self) -> Mapper[UUID]:
        return MsgspecMapper(transcoder=_NoTranscoder())

    def construct_recorder(self) -> ApplicationRecorder:
        """The library's recorder; on PostgreSQL its pool's pre-ping checks every idle
        connection once one is found dead (eventsourcing builds the pool itself, and
        psycopg_pool keeps the check callback in `_check`)."""
        recorder = super().construct_recorder()
        pool = getattr(getattr(recorder, "datastore", None), "pool", None)
        if pool is not None and getattr(pool, "_check", None) is not None:
            pool._check = _check_all_when_one_is_dead(pool)
        return recorder

    @functools.cached_property
    def is_postgres(self) -> bool:
        """Whether the event store is PostgreSQL (else the embedded SQLite file)."""
        from eventsourcing.postgres import PostgresApplicationRecorder

        return isinstance(self.recorder, PostgresApplicationRecorder)

    def load(self, stream: StreamKey) -> tuple[Any, int]:
        """The stream's current state and version (0: no events yet)."""
        return sync_streams(self, {stream: None})[stream]

    def records(self, stream: StreamKey) -> list[LedgerEvent]:
        # The event store yields what our mapper builds from every stored event: LedgerEvent.
        return cast(list[LedgerEvent], list(self.events.get(stream_id(stream))))

    @staticmethod
    def _initial(stream: StreamKey) -> Any:
        if stream[0] in _STATE_TYPES:
            return initial_state(stream)
        return []

    @staticmethod
    def fold_one(stream: StreamKey, state: Any, event: Payload) -> Any:
        """Domain streams fold with `evolve`; record streams keep their list of records."""
        if stream[0] in _STATE_TYPES:
            assert isinstance(event, Event)
            return evolve(stream, state, event)
        return [*state, event]

    def append(
        self,
        events: Sequence[LedgerEvent],
        snapshots: Iterable[tuple[StreamKey, int, Any]] = (),
        reads: Iterable[tuple[StreamKey, int]] = (),
    ) -> list[int]:
        """Append events atomically (one transaction); return their notification ids.

        `reads` are (stream, version) of streams the events' decisions read without writing
        them: checked in the same transaction (adapters.recorder). Raises IntegrityError if
        any written stream moved past the expected version or any read stream moved, and
        appends nothing then. Snapshots are written after, in their own transaction.
        """
        checks = [(stream_id(stream), version) for stream, version in reads]
        recordings = self.events.put(list(events), reads=checks)
        positions = [r.notification.id for r in recordings]
        self._snapshot(snapshots)
        return positions

    def _snapshot(self, snapshots: Iterable[tuple[StreamKey, int, StreamState]]) -> None:
        assert self.snapshots is not None
        taken = [
            Snapshot(
                stream_id(stream), version, datetime.now(UTC), stream[0], _encoder.encode(state)
            )
            for stream, version, state in snapshots
        ]
        if taken:
            self.snapshots.put(taken)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def ping(self) -> int:
        """The head position, read once without the library's retries (for readiness)."""
        table = self.recorder.events_table_name  # type: ignore[attr-defined]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        column = "notification_id" if self.is_postgres else "rowid"
        name = f"{datastore.schema}.{table}" if self.is_postgres else table
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT max({column}) AS head FROM {name}")
            row = cursor.fetchone()
        return int(row["head"] or 0)


class HistoryRow(msgspec.Struct, frozen=True):
    position: int
    originator_id: UUID
    event: Payload
    occurred_at: datetime
    metadata: dict[str, str]


def notification_page(
    ledger: Ledger, topics: Sequence[str], after: int, stop: int, limit: int
) -> list[tuple[int, str, bytes]]:
    """Up to `limit` events of the given topics with positions in (after, stop], oldest
    first, as (position, topic, stored state): one query of three columns, for reading the
    whole ledger fast (a rebuild), where the library's `select_notifications` builds an
    object per row with its stream id parsed."""
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if ledger.is_postgres:
        from psycopg.rows import tuple_row

        sql = (
            f"SELECT notification_id, topic, state FROM {datastore.schema}.{table} "
            "WHERE notification_id > %s AND notification_id <= %s AND topic = ANY(%s) "
            "ORDER BY notification_id LIMIT %s"
        )
        with datastore.get_connection() as conn:
            cursor = conn.cursor(binary=True, row_factory=tuple_row)
            cursor.execute(sql, (after, stop, list(topics), limit))
            return cursor.fetchall()  # type: ignore[no-any-return]
    marks = ",".join("?" for _ in topics)
    sql = (
        f"SELECT rowid, topic, state FROM {table} WHERE rowid > ? AND rowid <= ? "
        f"AND topic IN ({marks}) ORDER BY rowid LIMIT ?"
    )
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(sql, (after, stop, *topics, limit))
        return [(row[0], row[1], bytes(row[2])) for row in cursor.fetchall()]


def next_notifications(
    ledger: Ledger, topics: Sequence[str], after: int, limit: int
) -> tuple[int, list[tuple[int, str, bytes]]]:
    """(head, rows): the ledger's head position and up to `limit` events of the given topics
    with positions in (after, head], oldest first, as (position, topic, stored state), read
    in one statement (one snapshot, one round trip on PostgreSQL; the projector's step).

    Positions are given in commit order (the library's recorder inserts under a table
    lock), so every event up to the head is visible in the same snapshot: a follower may
    advance to the head even when none of the newest events are of its topics."""
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if ledger.is_postgres:
        from psycopg.rows import tuple_row

        name = f"{datastore.schema}.{table}"
        sql = (
            f"WITH h AS (SELECT max(notification_id) AS head FROM {name}) "
            "SELECT h.head, e.notification_id, e.topic, e.state FROM h LEFT JOIN LATERAL ("
            f"SELECT notification_id, topic, state FROM {name} WHERE notification_id > %s "
            "AND notification_id <= h.head AND topic = ANY(%s) "
            "ORDER BY notification_id LIMIT %s) e ON true"
        )
        with datastore.get_connection() as conn:
            cursor = conn.cursor(binary=True, row_factory=tuple_row)
            cursor.execute(sql, (after, list(topics), limit))
            fetched = cursor.fetchall()
        head = int(fetched[0][0] or 0) if fetched else 0
        return head, [(r[1], r[2], r[3]) for r in fetched if r[1] is not None]
    marks = ",".join("?" for _ in topics)
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT max(rowid) AS head FROM {table}")
        head = int(cursor.fetchone()["head"] or 0)
        cursor.execute(
            f"SELECT rowid, topic, state FROM {table} WHERE rowid > ? AND rowid <= ? "
            f"AND topic IN ({marks}) ORDER BY rowid LIMIT ?",
            (after, head, *topics, limit),
        )
        return head, [(row[0], row[1], bytes(row[2])) for row in cursor.fetchall()]


def history(ledger: Ledger, streams: list[StreamKey], after: int, limit: int) -> list[HistoryRow]:
    """Events of the given streams after a position, oldest first (one SQL query)."""
    ids = [stream_id(s) for s in streams]
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if ledger.is_postgres:
        sql = (
            f"SELECT notification_id AS n, originator_id, topic, state FROM {datastore.schema}.{table} "
            "WHERE originator_id = ANY(%s) AND notification_id > %s "
            "ORDER BY notification_id LIMIT %s"
        )
        params: tuple[Any, ...] = (ids, after, limit)
    else:
        marks = ",".join("?" for _ in ids)
        sql = (
            f"SELECT rowid AS n, originator_id, topic, state FROM {table} "
            f"WHERE originator_id IN ({marks}) AND rowid > ? ORDER BY rowid LIMIT ?"
        )
        params = (*[i.hex for i in ids], after, limit)
    rows: list[HistoryRow] = []
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            payload, occurred_at, metadata = decode_payload(row["topic"], bytes(row["state"]))
            originator = row["originator_id"]
            if not isinstance(originator, UUID):
                originator = UUID(str(originator))
            rows.append(HistoryRow(row["n"], originator, payload, occurred_at, metadata))
    return rows


def item_history(ledger: Ledger, sku: str, after: int, limit: int) -> list[HistoryRow]:
    """The events behind a SKU's figures after a position, oldest first: its own stream's
    and every policy event (channels, locations, location and global safety stock bear on
    its figures; its own safety-stock rules are on its own stream)."""
    return history(ledger, [("item", sku), POLICIES], after, limit)


def sync_streams(
    ledger: Ledger, streams: dict[StreamKey, tuple[Any, int] | None]
) -> dict[StreamKey, tuple[Any, int]]:
    """Bring many streams up to date: one statement on PostgreSQL, two queries on SQLite.

    A stream given as (state, version) gets only the events after that version; one given as
    None starts from its latest snapshot (or from nothing).
    """
    if not streams:
        return {}
    if ledger.is_postgres:
        return _sync_postgres(ledger, streams)
    base: dict[StreamKey, tuple[Any, int]] = {}
    missing = [s for s, v in streams.items() if v is None]
    for stream, value in streams.items():
        if value is not None:
            base[stream] = value
    if missing:
        snaps = _latest_snapshots(ledger, [s for s in missing if s[0] in _STATE_TYPES])
        for stream in missing:
            base[stream] = snaps.get(stream) or (Ledger._initial(stream), 0)
    by_id = {stream_id(s): s for s in base}
    rows = _events_after(ledger, [(stream_id(s), v) for s, (_, v) in base.items()])
    return _fold_rows(base, by_id, rows)


def _fold_rows(
    base: dict[StreamKey, tuple[Any, int]],
    by_id: dict[UUID, StreamKey],
    rows: Iterable[tuple[UUID, int, str, bytes]],
) -> dict[StreamKey, tuple[Any, int]]:
    result = dict(base)
    for originator_id, version, topic, state in rows:
        stream = by_id[originator_id]
        payload, _, _ = decode_payload(topic, state)
        current, _ = result[stream]
        result[stream] = (Ledger.fold_one(stream, current, payload), version)
    return result


def _sync_postgres(
    ledger: Ledger, streams: dict[StreamKey, tuple[Any, int] | None]
) -> dict[StreamKey, tuple[Any, int]]:
    """sync_streams in one statement and one round trip (the pool's connections autocommit:
    no BEGIN/ROLLBACK around it): the latest snapshot of each stream given as None, and the
    events of every stream after its version or its snapshot's, in version order. It
    replaced two queries in their own transactions (issue 12: half of the writer's waits)."""
    from psycopg.rows import tuple_row

    events = ledger.recorder
    datastore = events.datastore  # type: ignore[attr-defined]
    events_table = f"{datastore.schema}.{events.events_table_name}"  # type: ignore[attr-defined]
    by_id = {stream_id(s): s for s in streams}
    ids = list(by_id)
    versions = [0 if v is None else v[1] for v in streams.values()]
    snapshot_ids = [stream_id(s) for s, v in streams.items() if v is None and s[0] in _STATE_TYPES]
    if snapshot_ids and ledger.snapshots is not None:
        recorder = ledger.snapshots.recorder
        snapshots_table = f"{recorder.datastore.schema}.{recorder.events_table_name}"  # type: ignore[attr-defined]
        # LATERAL with OFFSET 0 (which the planner cannot pull up into a join): one index
        # lookup per stream. As a join, the planner misjudged how many events a stream has
        # and hash-joined a sequential scan of the whole table (42 ms at 68,000 events;
        # EXPLAIN ANALYZE, issue 12).
        sql = (
            "WITH want(id, ver) AS (SELECT * FROM unnest(%s::uuid[], %s::int[])), "
            "s AS (SELECT sn.* FROM unnest(%s::uuid[]) AS k(id) CROSS JOIN LATERAL ("
            f"SELECT originator_id, originator_version, state FROM {snapshots_table} "
            "WHERE originator_id = k.id ORDER BY originator_version DESC LIMIT 1) sn) "
            "SELECT true, s.originator_id, s.originator_version, NULL, s.state FROM s "
            "UNION ALL "
            "SELECT false, w.id, e.originator_version, e.topic, e.state "
            "FROM want w LEFT JOIN s ON s.originator_id = w.id CROSS JOIN LATERAL ("
            f"SELECT originator_version, topic, state FROM {events_table} "
            "WHERE originator_id = w.id "
            "AND originator_version > GREATEST(w.ver, COALESCE(s.originator_version, 0)) "
            "OFFSET 0) e "
            "ORDER BY 2, 1 DESC, 3"
        )
        params: tuple[Any, ...] = (ids, versions, snapshot_ids)
    else:
        sql = (
            "SELECT false, w.id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::int[]) AS w(id, ver) CROSS JOIN LATERAL ("
            f"SELECT originator_version, topic, state FROM {events_table} "
            "WHERE originator_id = w.id AND originator_version > w.ver OFFSET 0) e "
            "ORDER BY 2, 3"
        )
        params = (ids, versions)
    with datastore.get_connection() as conn:
        cursor = conn.cursor(binary=True, row_factory=tuple_row)
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    base: dict[StreamKey, tuple[Any, int]] = {
        s: (Ledger._initial(s), 0) if v is None else v for s, v in streams.items()
    }
    rows: list[tuple[UUID, int, str, bytes]] = []
    for is_snapshot, originator_id, version, topic, state in fetched:
        stream = by_id[_uuid(originator_id)]
        if is_snapshot:
            snap = _snapshot_decoder.decode(bytes(state))
            base[stream] = (decode_state(stream, snap.s), version)
        else:
            rows.append((_uuid(originator_id), version, topic, bytes(state)))
    return _fold_rows(base, by_id, rows)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _events_after(
    ledger: Ledger, pairs: list[tuple[UUID, int]]
) -> list[tuple[UUID, int, str, bytes]]:
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if ledger.is_postgres:
        sql = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::int[]) AS v(id, ver) "
            f"JOIN {datastore.schema}.{table} e "
            "ON e.originator_id = v.id AND e.originator_version > v.ver "
            "ORDER BY e.originator_id, e.originator_version"
        )
        params: tuple[Any, ...] = ([p[0] for p in pairs], [p[1] for p in pairs])
    else:
        values = ",".join("(?, ?)" for _ in pairs)
        sql = (
            f"WITH v(id, ver) AS (VALUES {values}) "
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM v JOIN {table} e ON e.originator_id = v.id AND e.originator_version > v.ver "
            "ORDER BY e.originator_id, e.originator_version"
        )
        params = tuple(x for uid, ver in pairs for x in (uid.hex, ver))
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(sql, params)
        return [
            (_uuid(r["originator_id"]), r["originator_version"], r["topic"], bytes(r["state"]))
            for r in cursor.fetchall()
        ]


def _latest_snapshots(ledger: Ledger, streams: list[StreamKey]) -> dict[StreamKey, tuple[Any, int]]:
    if not streams or ledger.snapshots is None:
        return {}
    recorder = ledger.snapshots.recorder
    table = recorder.events_table_name  # type: ignore[attr-defined]
    datastore = recorder.datastore  # type: ignore[attr-defined]
    by_id = {stream_id(s): s for s in streams}
    if ledger.is_postgres:
        sql = (
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, state "
            f"FROM {datastore.schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version DESC"
        )
        params: tuple[Any, ...] = (list(by_id),)
    else:
        marks = ",".join("?" for _ in by_id)
        sql = (
            "SELECT originator_id, max(originator_version) AS originator_version, state "
            f"FROM {table} WHERE originator_id IN ({marks}) GROUP BY originator_id"
        )
        params = tuple(uid.hex for uid in by_id)
    found: dict[StreamKey, tuple[Any, int]] = {}
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(sql, params)
        for r in cursor.fetchall():
            stream = by_id[_uuid(r["originator_id"])]
            snap = _snapshot_decoder.decode(bytes(r["state"]))
            state = decode_state(stream, snap.s)
            found[stream] = (state, r["originator_version"])
    return found
