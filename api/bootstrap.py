"""The composition root: `bootstrap(settings, ...)` wires the ledger, the command service,
the read model and the bus for every process (the HTTP app, each CLI command, the tests).

Nothing connects when `bootstrap` returns: `open()` (or `running()`) opens the ledger and
starts the writer, in the Litestar lifespan or the worker's `main`. A part given to
`bootstrap` (a clock, a ledger, a read model, a bus) is used instead of the one settings
would build, and is left open by `close()`: whoever made it closes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters.ledger import Ledger, ledger_env
from adapters.sealing import derive_key
from api.service.commands import CommandService
from api.service.planner import CURSOR_PURPOSE, Planner
from api.service.queries import ReadSide
from api.settings import Settings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock (timezone-aware, UTC): the clock of every process but the tests'."""
    return datetime.now(UTC)


@dataclass
class Services:
    """What a process runs on. `ledger` and `commands` exist between `open()` and
    `close()`; `read_model` and `bus` are the parts given to bootstrap (None: the process
    builds them from `settings`, e.g. the Redis reader or the in-process read model)."""

    settings: Settings
    clock: Clock
    read_model: Any = None
    bus: Any = None
    create_tables: bool = False
    """Create the ledger tables if missing (embedded mode, `atp migrate`)."""
    _ledger: Ledger | None = None
    _owns_ledger: bool = True
    _commands: CommandService | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def ledger(self) -> Ledger:
        """The ledger: the one given to bootstrap, or one opened from the settings."""
        if self._ledger is None:
            s = self.settings
            env = ledger_env(
                s.database_url,
                s.data_dir,
                self.create_tables,
                pool_size=s.db_pool_size,
                connect_timeout=s.db_connect_timeout,
            )
            self._ledger = Ledger(env=env)
        return self._ledger

    @property
    def commands(self) -> CommandService:
        """The command service over `ledger` (its writer started by `open()`)."""
        if self._commands is None:
            self._commands = CommandService(self.ledger, clock=self.clock)
        return self._commands

    def reconciliations(self, on_finished: Callable[[Any], None] = lambda _: None) -> Any:
        """The reconciliation use cases (api.service.reconciliation) over `commands` and
        the ledger's read-side SQL (asyncpg on PostgreSQL, SQLite embedded);
        `on_finished(report)` is told of each finished reconciliation."""
        from adapters.ledger_sql import reader_for
        from api.service.reconciliation import Reconciliations

        return Reconciliations(
            self.commands,
            reader_for(self.ledger, self.settings.database_url),
            self.clock,
            self.settings.drift_alert_units,
            on_finished,
        )

    def planner(self, read: ReadSide) -> Planner:
        """The planner's queries (lists, preview, policy history) over the read side
        `read` (built by the process: the Redis reader or the in-process read model) and
        `ledger`. Its cursors are signed with a key derived from the service key
        (Settings.token_secret), so every worker takes back another's cursors."""
        key = derive_key(self.settings.token_secret, CURSOR_PURPOSE)
        return Planner(read, self.ledger, self.clock, key)

    def open(self) -> Services:
        """Open the ledger and start the command service's writer; returns self."""
        self.commands.start()
        return self

    def close(self) -> None:
        """Stop the writer, close what bootstrap opened (not what it was given)."""
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        if self._commands is not None:
            self._commands.stop()
            self._commands = None
        if self._ledger is not None and self._owns_ledger:
            self._ledger.close()
            self._ledger = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Services]:
        """`open()`, then `close()` whatever happens."""
        try:
            yield self.open()
        finally:
            self.close()

    def redis(self, **options: Any) -> Any:
        """A synchronous Redis client for ATP_REDIS_URL (redis-py `options`, e.g.
        socket_timeout in seconds; closed by `close()`). Raises LookupError when no Redis
        is configured."""
        import redis

        if not self.settings.redis_url:
            raise LookupError("ATP_REDIS_URL is not set")
        client = redis.Redis.from_url(self.settings.redis_url, **options)
        self._closers.append(client.close)
        return client

    def async_redis(self) -> Any:
        """An asyncio Redis client for ATP_REDIS_URL; the caller awaits its `aclose()`
        (it belongs to the caller's event loop). Raises LookupError without Redis."""
        import redis.asyncio as aioredis

        if not self.settings.redis_url:
            raise LookupError("ATP_REDIS_URL is not set")
        return aioredis.Redis.from_url(self.settings.redis_url)

    def publisher(self) -> Any:
        """The bus given to bootstrap, else an AMQP publisher for ATP_AMQP_URL (closed by
        `close()`), else None (no RabbitMQ: the in-process bus)."""
        if self.bus is not None:
            return self.bus
        if not self.settings.amqp_url:
            return None
        from adapters.amqp import Publisher

        publisher = Publisher(self.settings.amqp_url)
        self._closers.append(publisher.close)
        return publisher


def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ledger: Ledger | None = None,
    read_model: Any = None,
    bus: Any = None,
    create_tables: bool | None = None,
) -> Services:
    """Wire a process's parts from `settings` (read once, by the caller), with any part
    given here used instead: `clock` (default: UTC wall clock), `ledger` (an open Ledger,
    left open), `read_model` (a read model or reader for the HTTP app), `bus` (a publisher
    of channel changes / webhook queue). `create_tables` defaults to embedded mode.
    Opens nothing: see Services.open."""
    return Services(
        settings=settings,
        clock=clock or utc_now,
        read_model=read_model,
        bus=bus,
        create_tables=settings.embedded if create_tables is None else create_tables,
        _ledger=ledger,
        _owns_ledger=ledger is None,
    )
