"""Which failures are an outage (503, retry) and which are a fault of this service (500)."""

from __future__ import annotations

import sqlite3

import aiormq.exceptions
import psycopg
import pytest
import redis.exceptions
from eventsourcing import persistence

from api.http.problems import backing_service_unreachable


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("ping timed out"),
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        psycopg.OperationalError("terminating connection due to administrator command"),
        aiormq.exceptions.AMQPConnectionError("connection closed"),
        _raised_from(
            persistence.OperationalError("database is locked"),
            sqlite3.OperationalError("database is locked"),
        ),
        _raised_from(
            persistence.OperationalError("server closed the connection unexpectedly"),
            psycopg.OperationalError("server closed the connection unexpectedly"),
        ),
    ],
)
def test_an_unreachable_backing_service_is_an_outage(error: Exception) -> None:
    """Invariant: PostgreSQL, Redis or RabbitMQ out of reach, or SQLite locked, is a 503."""
    assert backing_service_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("invalid literal for int() with base 10: '²'"),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        RecursionError("maximum recursion depth exceeded"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        KeyError("channel"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        _raised_from(
            persistence.OperationalError("no such table: stored_events"),
            sqlite3.OperationalError("no such table: stored_events"),
        ),
        _raised_from(RuntimeError("render failed"), sqlite3.IntegrityError("UNIQUE")),
    ],
)
def test_a_bug_or_bad_input_is_not_an_outage(error: Exception) -> None:
    """Invariant: a fault of this service is a 500, never a 503 that clients retry forever."""
    assert not backing_service_unreachable(error)
