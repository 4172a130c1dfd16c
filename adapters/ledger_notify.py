"""Waking on the ledger's PostgreSQL NOTIFY: the eventsourcing library's PostgreSQL recorder
notifies its channel on every write; a dedicated autocommit connection LISTENs to it."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from psycopg import sql

from adapters.ledger import Ledger

log = logging.getLogger("atp.ledger")


class NotificationListener:
    """Wakes on the ledger's NOTIFY (every write notifies); times out to poll anyway."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.conn = self._listen()

    def _listen(self) -> Any:
        datastore = self.ledger.recorder.datastore  # type: ignore[attr-defined]
        conn = psycopg.connect(
            dbname=datastore.pool.kwargs.get("dbname")
            if hasattr(datastore.pool, "kwargs")
            else None,
            conninfo=datastore.pool.conninfo,
            autocommit=True,
        )
        channel = self.ledger.recorder.channel_name  # type: ignore[attr-defined]
        conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(channel)))
        return conn

    def wait(self, timeout: float) -> None:
        try:
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.OperationalError:
            # The connection was dropped (restart, pg_terminate_backend): listen again at
            # once and return, so the projector polls for what it may have missed. If the
            # database is really down, connecting raises and the projector backs off.
            log.warning("the LISTEN connection dropped; listening again")
            self.close()
            self.conn = self._listen()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
