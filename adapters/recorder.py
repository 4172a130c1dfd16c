"""The ledger's PostgreSQL recorder: eventsourcing's, inserting a batch as four arrays.

eventsourcing's `PostgresApplicationRecorder` sends a batch of events as one array of a
composite type (`unnest(%s::stored_event[])`). psycopg dumps such an array in Python, field
by field, which was about a quarter of the writer thread's CPU at checkout (issue 12,
docs/benchmarks.md). This recorder sends the same rows as four parallel arrays (uuid,
bigint, text, bytea), which psycopg dumps in C, and keeps everything else of the library's
insert: the same transaction, its `LOCK TABLE ... IN EXCLUSIVE MODE` (commit order equals
notification order), the NOTIFY, `RETURNING notification_id` in insert order, and the
IntegrityError on a duplicate (stream, version).

Selected by `ledger_env` through the library's APPLICATION_RECORDER_TOPIC setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class LedgerRecorder(PostgresApplicationRecorder):
    """`PostgresApplicationRecorder` whose insert sends columns, not composite rows (see the
    module docstring); table, locking, notification ids and errors are the library's."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_columns_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(datastore.schema), table=Identifier(self.events_table_name))
        self.notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name))

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self.notify_statement, prepare=True)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_columns_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )
