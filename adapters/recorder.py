"""The ledger's recorders: eventsourcing's, with an append that checks the streams it read.

eventsourcing's recorders send a batch of events (or snapshots) as one array of a composite
type (`unnest(%s::stored_event[])`), which psycopg dumps as text in Python, field by field,
escaping every byte of `state`: about a quarter of the writer thread's CPU at checkout,
and most of it when a SKU with 10,000 live holds was snapshotted (issue 12,
docs/benchmarks.md). These recorders send the same rows as four parallel arrays in binary
(uuid, bigint, text, bytea: no escaping), and keep everything else of the library's insert:
for the events, one transaction, its `LOCK TABLE ... IN EXCLUSIVE MODE` (commit order
equals notification order), the NOTIFY and `RETURNING notification_id` in insert order; for
both, the IntegrityError on a duplicate (stream, version).

On PostgreSQL the whole append is one statement, so one round trip (issue 12: the writer
spent most of a batch waiting on its three round trips, policies sync, insert, COMMIT, each
a wake-up of PostgreSQL and of the writer on a busy machine). `LedgerRecorder.insert_events`
calls a PL/pgSQL function (created with the table by `atp migrate`, or on first use)
that, inside the implicit transaction of that one statement, takes the library's
`LOCK TABLE ... IN EXCLUSIVE MODE`, checks the streams the batch read, sends the NOTIFY and
inserts the rows returning their notification ids.

**Read checks.** `insert_events(stored_events, reads=[(originator_id, version), ...])`
names streams the batch read but does not write, at the versions it read them. Under the
table lock, if any of them has another last version now, nothing is inserted and the
library's IntegrityError is raised, as for a written stream that moved (the append's
expected versions). So a decision is appended only if every stream it rests on is still as
it was read: serialisable, whatever other process writes. The SQLite recorder does the same
check inside its write transaction (`SQLiteLedgerFactory`).

Selected by `ledger_env` as the persistence module (`LedgerFactory`, the library's
PostgreSQL factory with these two recorder classes; `SQLiteLedgerFactory` embedded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.errors import UndefinedFunction
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

Reads = Sequence[tuple[UUID, int]]
"""(originator id, version read) of each stream a batch read and does not write."""

MOVED = "atp: a stream this batch read has moved"
"""The message of the IntegrityError raised when a read check fails."""


def _insert_columns(datastore: PostgresDatastore, table: str, returning: bool) -> Composed:
    """INSERT of (originator_id, originator_version, topic, state) rows given as four
    binary arrays, optionally returning each row's notification id in insert order."""
    return SQL(
        "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
        "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]){returning}"
    ).format(
        schema=Identifier(datastore.schema),
        table=Identifier(table),
        returning=SQL(" RETURNING notification_id" if returning else ""),
    )


def _columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


class SnapshotRecorder(PostgresAggregateRecorder):
    """`PostgresAggregateRecorder` (the snapshots table) whose insert sends binary columns."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_columns_statement = _insert_columns(datastore, events_table_name, False)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        curs.execute(self.insert_columns_statement, _columns(stored_events), prepare=True)


class LedgerRecorder(PostgresApplicationRecorder):
    """`PostgresApplicationRecorder` whose append is one statement with read checks (see the
    module docstring); table, lock, NOTIFY, notification ids and errors are the library's."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        function = Identifier(datastore.schema, f"atp_append_{events_table_name}")
        self.create_append_statement = SQL(
            "CREATE OR REPLACE FUNCTION {function}("
            "ids uuid[], versions bigint[], topics text[], states bytea[], "
            "read_ids uuid[], read_versions bigint[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ "
            "BEGIN "
            "SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "LOCK TABLE {table} IN EXCLUSIVE MODE; "
            "IF EXISTS (SELECT 1 FROM unnest(read_ids, read_versions) AS r(id, version) "
            "WHERE COALESCE((SELECT max(e.originator_version) FROM {table} e "
            "WHERE e.originator_id = r.id), 0) <> r.version) THEN "
            "RAISE EXCEPTION '{moved}' USING ERRCODE = 'unique_violation'; "
            "END IF; "
            "NOTIFY {channel}; "
            "RETURN QUERY INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id; "
            "END; $body$"
        ).format(
            function=function,
            lock_timeout=SQL(str(int(datastore.lock_timeout))),
            table=Identifier(datastore.schema, events_table_name),
            moved=SQL(MOVED),
            channel=Identifier(self.channel_name),
        )
        self.sql_create_statements.append(self.create_append_statement)
        self.append_statement = SQL(
            "SELECT id FROM {function}(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], "
            "%b::uuid[], %b::bigint[]) AS t(id)"
        ).format(function=function)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's
    def insert_events(
        self, stored_events: Sequence[StoredEvent], *, reads: Reads = (), **_: Any
    ) -> Sequence[int] | None:
        """Append `stored_events` in one statement (one transaction) after checking `reads`;
        returns their notification ids in order. Raises IntegrityError when a written
        stream's version is taken or a read stream moved (nothing is inserted)."""
        if not stored_events:
            return []
        params = (
            *_columns(stored_events),
            [r[0] for r in reads],
            [r[1] for r in reads],
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            try:
                curs.execute(self.append_statement, params, prepare=True)
            except UndefinedFunction:
                # A ledger created before this function existed (`atp migrate` creates
                # it). The connection is in autocommit: the failed statement left nothing.
                curs.execute(self.create_append_statement, prepare=False)
                curs.execute(self.append_statement, params, prepare=True)
            return [row["id"] for row in curs.fetchall()]


class LedgerFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory with the ledger's two recorders."""

    aggregate_recorder_class = SnapshotRecorder
    application_recorder_class = LedgerRecorder


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    """`SQLiteApplicationRecorder` whose insert checks the streams the batch read (see the
    module docstring), inside the same write transaction, after its inserts took the lock."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        for originator_id, version in kwargs.get("reads", ()):
            c.execute(
                f"SELECT max(originator_version) FROM {self.events_table_name} "
                "WHERE originator_id = ?",
                (originator_id.hex,),
            )
            row = c.fetchone()
            if (row[0] or 0) != version:
                raise IntegrityError(MOVED)
        return ids


class SQLiteLedgerFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with the ledger's recorder (read checks)."""

    application_recorder_class = SQLiteLedgerRecorder
