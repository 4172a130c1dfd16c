"""Turns an HTTP request into a ledger job: idempotency keys, rendering, replay."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response

from api.http.problems import PROBLEM, ApiProblem, domain_problem, problem_body
from api.service.commands import (
    Applied,
    CommandService,
    Idempotency,
    KeyReused,
    Receipt,
    Rejected,
    Replayed,
    Result,
    ServiceWorld,
)
from api.service.operations import Call, Operation, Operations

POSITION_HEADER = "ATP-Position"
Render = Callable[[ServiceWorld, datetime], tuple[int, Any]]


def canonical_body(raw: bytes) -> bytes:
    """The request as decoded, re-encoded one way: whitespace and key order do not matter.

    Idempotency compares this form (contract: "Same body" means the same decoded request).
    A body that is not JSON (only routes that take none get this far with one) stays as sent.
    """
    if not raw.strip():
        return b""
    try:
        return msgspec.json.encode(msgspec.json.decode(raw), order="sorted")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return raw


def encoded(rendered: tuple[int, Any]) -> tuple[int, bytes]:
    """A route's (status, view) with the view encoded as JSON."""
    status, view = rendered
    return status, msgspec.json.encode(view)


class Gateway:
    """Runs an application operation for an HTTP request: the Idempotency-Key, the
    in-process wait for a duplicate in flight, and the mapping of its typed result to a
    response (status, body, ATP-Position, Idempotent-Replayed)."""

    def __init__(self, service: CommandService) -> None:
        self.service = service
        self.operations = Operations(service)
        self.inflight: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def execute(
        self,
        request: Request[Any, Any, Any],
        operation: Operation,
        render: Render,
        *,
        require_key: bool = False,
        on_replay: Callable[[bytes], bytes] | None = None,
        stored_body: Callable[[bytes], bytes] | None = None,
    ) -> Response[bytes]:
        key = request.headers.get("idempotency-key")
        require_key = require_key or request.route_handler.opt.get("idempotency_key") == "required"
        if key is not None and not 1 <= len(key) <= 255:
            raise ApiProblem(
                400, "bad-idempotency-key", "Idempotency-Key must be 1..255 characters"
            )
        if key is None and require_key:
            raise ApiProblem(
                400, "idempotency-key-required", "this route requires an Idempotency-Key header"
            )
        # The scope's own values: `request.state` and `request.url` build objects per call.
        state = request.scope["state"]
        idem = None
        if key is not None:
            method = request.scope["method"]
            path = request.scope.get("root_path", "") + request.scope["path"]  # request.url.path
            body = canonical_body(await request.body())
            request_hash = hashlib.sha256(
                method.encode() + b" " + path.encode() + b"\n" + body
            ).hexdigest()
            # Scoped by the token's identity (its stored hash), never its name.
            scope = f"{state['principal'].key} {method} {path}"
            idem = Idempotency(scope, key, request_hash)

        def receipt(result: Applied[Any] | Rejected) -> Receipt | None:
            reply = self._reply(result)
            if reply.status_code >= 500:
                return None
            if stored_body is not None and isinstance(result, Applied):
                return Receipt(reply.status_code, stored_body(reply.body))
            return reply

        call = Call(
            correlation_id=state["correlation_id"],
            idempotency=idem,
            view=lambda world, _: Receipt(*encoded(render(world, self.service.clock()))),
            receipt=receipt,
            token_name=state["principal"].name,
        )
        if idem is None:
            return self._response(await operation(call), None)
        slot = (idem.scope, idem.key)
        # A duplicate in flight in this process waits for the first, then replays it.
        while (first := self.inflight.get(slot)) is not None:
            await asyncio.shield(first)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight[slot] = mine
        try:
            result = await operation(call)
        finally:
            del self.inflight[slot]
            mine.set_result(None)
        return self._response(result, on_replay)

    @staticmethod
    def _reply(result: Applied[Any] | Rejected) -> Receipt:
        """The status and body of a decided job: its view's, or its domain error's problem."""
        if isinstance(result, Rejected):
            return Receipt(*domain_problem(result.error))
        reply: Receipt = result.value
        return reply

    def _response(
        self, result: Result, on_replay: Callable[[bytes], bytes] | None
    ) -> Response[bytes]:
        headers = {}
        position = result.position if isinstance(result, Applied | Rejected) else None
        if position is not None:
            headers[POSITION_HEADER] = str(position)
        if isinstance(result, Replayed):
            headers["Idempotent-Replayed"] = "true"
            reply = result.receipt
            body = on_replay(reply.body) if on_replay else reply.body
        elif isinstance(result, KeyReused):
            raise ApiProblem(
                422,
                "idempotency-key-reused",
                "this Idempotency-Key was used with a different request",
            )
        else:
            reply = self._reply(result)
            body = reply.body
        media = PROBLEM if reply.status_code >= 400 else "application/json"
        if not body and reply.status_code >= 400:
            body = problem_body(reply.status_code, "error", "request failed")
        return Response(
            content=body, status_code=reply.status_code, media_type=media, headers=headers
        )
