"""RFC 9457 problem details: every error a client can cause, and none with a stack trace."""

from __future__ import annotations

import logging
import socket
import sqlite3
from typing import Any

import aiormq.exceptions
import msgspec
import psycopg
import redis.exceptions
from eventsourcing import persistence
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.http.metrics import HTTP_ERRORS
from api.service.errors import (
    ApplicationError,
    ChannelNotFound,
    InvalidQuery,
    LocationNotFound,
    ReadModelBehind,
    ReadModelRebuilding,
)
from atp.errors import (
    Conflict,
    DomainError,
    InsufficientStock,
    InvalidCommand,
    NotFound,
)

log = logging.getLogger("atp.api")
PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ApiProblem(Exception):
    """Raise from a handler to answer with a problem."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


RESERVED = frozenset({"type", "title", "status", "detail", "code"})


def problem_body(status: int, kind: str, detail: str, **extra: Any) -> bytes:
    # Extension members never override the standard ones.
    extra = {k: v for k, v in extra.items() if k not in RESERVED and v is not None}
    body = {
        "type": f"/problems/{kind}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": kind,
        **extra,
    }
    return msgspec.json.encode(body)


def problem_response(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[bytes]:
    return Response(
        content=problem_body(status, kind, detail, **extra),
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


def status_for(error: DomainError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidCommand):
        return 422
    if isinstance(error, InsufficientStock | Conflict):
        return 409
    return 409


def domain_problem(error: DomainError) -> tuple[int, bytes]:
    status = status_for(error)
    return status, problem_body(status, error.kind, error.detail, **error.data)


APPLICATION_STATUS: dict[type[ApplicationError], tuple[int, dict[str, str]]] = {
    ReadModelRebuilding: (503, {"Retry-After": "1"}),
    ReadModelBehind: (409, {}),
    ChannelNotFound: (404, {}),
    LocationNotFound: (404, {}),
    InvalidQuery: (422, {}),
}
"""The status (and headers) of each application error; anything else is a 409."""


def _on_application_error(_: Request[Any, Any, Any], exc: ApplicationError) -> Response[bytes]:
    status, headers = APPLICATION_STATUS.get(type(exc), (409, {}))
    return problem_response(status, exc.kind, exc.detail, headers or None, **exc.data)


def _on_api_problem(_: Request[Any, Any, Any], exc: ApiProblem) -> Response[bytes]:
    return problem_response(exc.status, exc.kind, exc.detail, exc.headers, **exc.extra)


def _on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    messages = [str(e.get("message", "")) for e in errors]
    keys = [str(e.get("key", "")) for e in errors]
    # No body, a body that is not JSON, or a missing required field: 400. Otherwise the
    # body was well-formed but invalid: 422 naming the field.
    if (
        not errors
        or any(k in ("", "data") for k in keys)
        or any("missing required field" in m or "malformed" in m for m in messages)
    ):
        if messages and messages[0] != "'data'":
            detail = messages[0]
        elif not errors and exc.detail and "Validation failed" not in str(exc.detail):
            detail = str(exc.detail)  # e.g. a missing required query parameter
        else:
            detail = "a JSON body is required"
        kind = "malformed-json" if "malformed" in detail else "bad-request"
        return problem_response(400, kind, detail)
    first = errors[0] if isinstance(errors[0], dict) else {}
    field = str(first.get("key", "")).removeprefix("data.").removeprefix("data")
    return problem_response(
        422, "validation-failed", f"{field}: {first.get('message', '')}", field=field, errors=errors
    )


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    kind = {
        400: "bad-request",
        401: "unauthorized",
        403: "forbidden",
        404: "not-found",
        405: "method-not-allowed",
        413: "content-too-large",
        429: "rate-limited",
    }.get(status, "http-error")
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
        HTTP_ERRORS.labels(kind="unhandled").inc()
        return problem_response(status, "server-error", "the service could not answer")
    detail = str(exc.detail) or TITLES.get(status, "error")
    if status == 400 and "JSON" in detail:
        kind = "malformed-json"
    return problem_response(status, kind, detail, headers=exc.headers)


UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # builtin: refused, reset, aborted; aio-pika/aiormq connection errors
    TimeoutError,  # builtin (asyncio's too): a backing service did not answer in time
    socket.gaierror,
    persistence.OperationalError,  # the eventsourcing library's wrap of the drivers' errors
    persistence.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
)
"""Errors that mean a backing service (PostgreSQL, Redis, RabbitMQ) could not be reached."""


def backing_service_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) means a backing service is unreachable.

    SQLite is embedded: of its errors only a locked or busy database is worth a retry (an
    `OperationalError` such as "no such table" is a fault of this service, not an outage).
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for error in chain:
        if isinstance(error, sqlite3.Error):
            message = str(error).lower()
            return isinstance(error, sqlite3.OperationalError) and (
                "locked" in message or "busy" in message
            )
    return any(isinstance(error, UNREACHABLE) for error in chain)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Never a stack trace in the body. Only a backing service that cannot be reached is a
    # 503 (retry); anything else is this service's fault (500), which retrying will not fix.
    if backing_service_unreachable(exc):
        log.warning("backing service unreachable: %s: %s", type(exc).__name__, exc)
        HTTP_ERRORS.labels(kind="unavailable").inc()
        return problem_response(
            503,
            "service-unavailable",
            "a backing service is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled error: %s", type(exc).__name__)
    HTTP_ERRORS.labels(kind="unhandled").inc()
    return problem_response(
        500, "internal-error", "the service failed to answer this request; it has been logged"
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiProblem: _on_api_problem,
    ApplicationError: _on_application_error,
    ValidationException: _on_validation,
    HTTPException: _on_http,
    Exception: _on_unexpected,
}
