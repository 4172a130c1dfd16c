"""Backends for integration tests: every scenario runs on SQLite and on PostgreSQL. The
pusher tests' fixtures (a RabbitMQ vhost, a ledger, a Redis prefix) come from
tests.support.pushers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.ledger import Ledger, ledger_env
from api.service.commands import CommandService, Job, Rejected, Result, command_decider
from atp.commands import Command
from atp.errors import DomainError
from tests.support.pg import fresh_database
from tests.support.pushers import amqp_url, ledger, rds

__all__ = ["amqp_url", "ledger", "rds"]  # fixtures of the pusher tests


class Clock:
    """Time is an input: tests move it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Backend:
    """Opens ledgers and command services on one database."""

    def __init__(self, database_url: str | None, data_dir: Path, clock: Clock) -> None:
        self.database_url = database_url
        self.data_dir = str(data_dir)
        self.clock = clock
        self.opened: list[tuple[CommandService, Ledger]] = []
        Ledger(env=ledger_env(database_url, self.data_dir, create_table=True)).close()

    def ledger(self) -> Ledger:
        return Ledger(env=ledger_env(self.database_url, self.data_dir, create_table=False))

    def service(self) -> CommandService:
        ledger = self.ledger()
        service = CommandService(ledger, clock=self.clock)
        service.start()
        self.opened.append((service, ledger))
        return service

    def close(self) -> None:
        for service, opened in self.opened:
            service.stop()
            opened.close()


def run(service: CommandService, command: Command) -> Result:
    """Decide and append one command; raises the DomainError if it was rejected."""
    result = service.run_sync(Job(command_decider(command), correlation_id="test"))
    if isinstance(result, Rejected):
        raise result.error
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    clock = Clock()
    if request.param == "sqlite":
        b = Backend(None, tmp_path, clock)
        yield b
        b.close()
        return
    with fresh_database() as url:
        b = Backend(url, tmp_path, clock)
        yield b
        b.close()


@pytest.fixture
def pg_backend(tmp_path: Path) -> Iterator[Backend]:
    with fresh_database() as url:
        b = Backend(url, tmp_path, Clock())
        yield b
        b.close()


RunFn = Callable[[CommandService, Command], Result]
__all__ = ["Backend", "Clock", "DomainError", "run"]
