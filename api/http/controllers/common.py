"""Helpers shared by route handlers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import unquote

from litestar import Request

from adapters.ledger import Ledger
from api.http.gateway import Gateway
from api.http.problems import ApiProblem
from api.http.schemas import CODE_PATTERN, MAX_LINES
from api.service.commands import CommandService
from api.service.operations import Operation, Operations
from atp import commands as cmd

_CODE = re.compile(CODE_PATTERN)

AVAILABILITY_READ = "availability:read"
RESERVATIONS_WRITE = "reservations:write"
ORDERS_WRITE = "orders:write"
STOCK_WRITE = "stock:write"
POLICY_WRITE = "policy:write"
ADMIN = "admin"


def path_code(value: str, name: str, creating: bool = False) -> str:
    """A code from the path (percent-encoded there; `/` arrives as %2F).

    An invalid code names nothing that can exist (404), unless the request creates it (422).
    """
    code = unquote(value)
    if not _CODE.fullmatch(code):  # in full: `$` alone would let a trailing newline through
        if creating:
            raise ApiProblem(
                422,
                "validation-failed",
                f"{name} code {code!r} does not match {CODE_PATTERN}",
                field="code",
            )
        raise ApiProblem(404, "not-found", f"{name} {code!r} is not a valid code")
    return code


def is_code(value: str) -> bool:
    """Whether `value` matches the code pattern in full (a trailing newline included)."""
    return bool(_CODE.fullmatch(value))


def query_code(value: str, name: str, repeatable: bool = False) -> str:
    """A code given as a query parameter: decoded once by the server, so taken as it is; one
    that does not match the code pattern in full is the client's input error (422 naming the
    parameter), not an unknown resource. `repeatable`: the parameter takes several codes
    (the message says how to give them)."""
    if not _CODE.fullmatch(value):
        how = f" (one code per parameter: repeat it, ?{name}=A&{name}=B)" if repeatable else ""
        raise ApiProblem(
            422,
            "validation-failed",
            f"{name} {value!r:.80} does not match {CODE_PATTERN}{how}",
            field=name,
        )
    return value


def check_lines(lines: Sequence[Any] | None, field: str = "lines") -> None:
    if lines is not None and len(lines) > MAX_LINES:
        raise ApiProblem(
            413,
            "too-many-lines",
            f"{field} has {len(lines)} entries; at most {MAX_LINES}",
            field=field,
            limit=MAX_LINES,
        )


def gateway(request: Request[Any, Any, Any]) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def ledger(request: Request[Any, Any, Any]) -> Ledger:
    lg: Ledger = request.app.state.ledger
    return lg


def service(request: Request[Any, Any, Any]) -> CommandService:
    svc: CommandService = request.app.state.service
    return svc


def operations(request: Request[Any, Any, Any]) -> Operations:
    """The application's named operations (api.service.operations)."""
    return gateway(request).operations


def handle(request: Request[Any, Any, Any], command: cmd.Command) -> Operation:
    """The operation that decides one domain command."""
    return partial(operations(request).handle, command)
