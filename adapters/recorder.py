"""The ledger's PostgreSQL recorders: eventsourcing's, inserting a batch as four arrays.

eventsourcing's recorders send a batch of events (or snapshots) as one array of a composite
type (`unnest(%s::stored_event[])`), which psycopg dumps as text in Python, field by field,
escaping every byte of `state`: about a quarter of the writer thread's CPU at checkout,
and most of it when a SKU with 10,000 live holds was snapshotted (issue 12,
docs/benchmarks.md). These recorders send the same rows as four parallel arrays in binary
(uuid, bigint, text, bytea: no escaping), and keep everything else of the library's insert:
for the events, the same transaction, its `LOCK TABLE ... IN EXCLUSIVE MODE` (commit order
equals notification order), the NOTIFY and `RETURNING notification_id` in insert order; for
both, the IntegrityError on a duplicate (stream, version).

Selected by `ledger_env` as the persistence module (`LedgerFactory`, the library's
PostgreSQL factory with these two recorder classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier


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
    """`PostgresApplicationRecorder` whose insert sends columns, not composite rows (see the
    module docstring); table, locking, notification ids and errors are the library's."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_columns_statement = _insert_columns(datastore, events_table_name, True)
        self.notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name))

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self.notify_statement, prepare=True)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self.insert_columns_statement, _columns(stored_events), prepare=True)


class LedgerFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory with the ledger's two recorders."""

    aggregate_recorder_class = SnapshotRecorder
    application_recorder_class = LedgerRecorder
