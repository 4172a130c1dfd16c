"""Shared fixtures: fresh databases on the real PostgreSQL, the service as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pg import fresh_database
from tests.support.server import Server, running_service, service_env


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One fresh database for the session (dropped at the end)."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A fresh database for one test."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def server(pg_url: str) -> Iterator[Server]:
    """The real service on PostgreSQL with two worker processes, shared by e2e tests.

    Tests isolate from each other by using their own SKUs, orders and keys (see `unique`).
    """
    with running_service(service_env(pg_url), workers=2) as srv:
        yield srv


@pytest.fixture(scope="session")
def racing_server(pg_url: str) -> Iterator[Server]:
    """The same service with forwarding off (ATP_WRITER_SOCKET empty, which the env file of
    `atp serve` does not override): each of its two workers decides the writes it
    receives, so two group-commit writers race on the same streams, as when a worker
    cannot reach the writer (api.http.forwarding)."""
    with running_service(service_env(pg_url, ATP_WRITER_SOCKET=""), workers=2) as srv:
        yield srv


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short prefix unique to the test, for SKUs, codes and idempotency keys."""
    import uuid

    return f"t{uuid.uuid4().hex[:10]}"
