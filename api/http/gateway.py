"""Turns an HTTP request into a ledger job: idempotency keys, rendering, replay, and the
forwarding of checkout commands to the writer worker (api.http.forwarding)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any, Union

import msgspec
from litestar import Request, Response

from api.http.forwarding import (
    CommandOutcome,
    ForwardBroken,
    ForwardedCommand,
    WriterLink,
    WriterUnreachable,
)
from api.http.problems import (
    PROBLEM,
    ApiProblem,
    backing_service_unreachable,
    domain_problem,
    problem_body,
)
from api.http.views import order_view, reservation_view
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
from atp import commands as cmd
from atp.streams import Stream

log = logging.getLogger("atp.gateway")

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


class View(msgspec.Struct, frozen=True, array_like=True):
    """What a checkout write answers with: the state of stream (`kind`, `id`) after the
    decision, `kind` being "reservation" or "order", with HTTP `status`. Data, not a
    function, so that the writer worker can render it for a command another worker
    forwarded (ForwardedCommand)."""

    kind: str
    id: str
    status: int

    def render(self, world: ServiceWorld, now: datetime) -> tuple[int, Any]:
        """(status, view struct) of the stream in `world`."""
        if self.kind == "reservation":
            reservation = world.reservation(self.id)
            assert reservation is not None
            return self.status, reservation_view(reservation, now)
        order = world.order(self.id)
        assert order is not None
        return self.status, order_view(order)


def _concrete(base: type[Any]) -> Iterator[type[Any]]:
    sub: type[Any]
    for sub in base.__subclasses__():
        yield sub
        yield from _concrete(sub)


_command_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
    Union[tuple(_concrete(cmd.Command))]  # noqa: UP007
)
"""Any domain command, by its tag (the class name)."""


class WriterFailed(Exception):
    """The writer worker failed a forwarded command (it logged why): a 500."""


class WriterCannotReachLedger(ConnectionError):
    """The writer worker could not reach a backing service for a forwarded command: a 503
    with Retry-After, as when this worker cannot reach it (problems.UNREACHABLE)."""


def encoded(rendered: tuple[int, Any]) -> tuple[int, bytes]:
    """A route's (status, view) with the view encoded as JSON."""
    status, view = rendered
    return status, msgspec.json.encode(view)


class Gateway:
    """Runs an application operation for an HTTP request: the Idempotency-Key, the
    in-process wait for a duplicate in flight, and the mapping of its typed result to a
    response (status, body, ATP-Position, Idempotent-Replayed)."""

    def __init__(
        self,
        service: CommandService,
        last_position: Callable[[Stream], Awaitable[int | None]] | None = None,
    ) -> None:
        self.service = service
        self.last_position = last_position
        """The ledger position of a stream's last event or record (LedgerReader): a
        replay's ATP-Position, the position of its key's record."""
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
        """Run `operation` for `request` in this worker; answer with `render`'s view.
        Raises ApiProblem 400 for a missing or malformed Idempotency-Key."""
        idem = await self._idempotency(request, require_key)
        state = request.scope["state"]
        call = self._call(
            state["correlation_id"], state["principal"].name, idem, render, stored_body
        )
        result = await self._once(idem, lambda: operation(call))
        return self._response(await self._positioned(result, idem), on_replay)

    async def command(
        self, request: Request[Any, Any, Any], command: cmd.Command, view: View
    ) -> Response[bytes]:
        """Decide a checkout `command` for `request` (an Idempotency-Key is required) and
        answer with `view`. With a writer worker (`app.state.writer_link`) the command is
        forwarded to it as data; if the writer cannot be reached the command is decided
        here (optimistic concurrency keeps it correct; a forward broken after it was sent
        is safe to decide again: the key replays it if the writer did decide it). Raises
        ApiProblem 400 without a key, WriterFailed when the writer failed the job."""
        idem = await self._idempotency(request, True)
        state = request.scope["state"]
        correlation, token_name = state["correlation_id"], state["principal"].name
        link: WriterLink | None = getattr(request.app.state, "writer_link", None)

        async def run() -> Result:
            if link is not None:
                forwarded = ForwardedCommand(
                    msgspec.msgpack.encode(command),
                    (view.kind, view.id, view.status),
                    None if idem is None else (idem.scope, idem.key, idem.request_hash),
                    correlation,
                    token_name,
                )
                try:
                    return self._result(await link.command(forwarded))
                except WriterUnreachable:
                    pass
                except ForwardBroken as exc:
                    log.warning(
                        "the writer broke off a forwarded command (%s): deciding it here", exc
                    )
            call = self._call(correlation, token_name, idem, view.render, None)
            return await self.operations.handle(command, call)

        return self._response(await self._positioned(await self._once(idem, run), idem), None)

    async def run_forwarded(self, forwarded: ForwardedCommand) -> CommandOutcome:
        """Decide a command another worker forwarded (see `command`), in the writer."""
        idem = None if forwarded.idempotency is None else Idempotency(*forwarded.idempotency)
        view = View(*forwarded.view)
        call = self._call(forwarded.correlation_id, forwarded.token_name, idem, view.render, None)
        try:
            command = _command_decoder.decode(forwarded.command)
            # A replay's position is looked up here too, so a ledger out of reach for that
            # lookup is "unavailable" to the forwarding worker, as for the decision.
            result = await self._positioned(await self.operations.handle(command, call), idem)
        except Exception as exc:
            if backing_service_unreachable(exc):
                log.warning("a forwarded command: backing service unreachable: %s", exc)
                return CommandOutcome("unavailable")
            log.exception("a forwarded command failed")
            return CommandOutcome("failed")
        if isinstance(result, Replayed):
            receipt = result.receipt
            return CommandOutcome("replayed", receipt.status_code, receipt.body, result.position)
        if isinstance(result, KeyReused):
            return CommandOutcome("reused")
        reply = self._reply(result)
        return CommandOutcome("decided", reply.status_code, reply.body, result.position)

    @staticmethod
    def _result(outcome: CommandOutcome) -> Result:
        """The Result a forwarded command's outcome stands for (a decision's reply kept as
        the Applied value, as `_reply` gives it back)."""
        if outcome.kind == "decided":
            return Applied(Receipt(outcome.status, outcome.body), outcome.position)
        if outcome.kind == "replayed":
            return Replayed(Receipt(outcome.status, outcome.body), outcome.position)
        if outcome.kind == "reused":
            return KeyReused()
        if outcome.kind == "unavailable":
            raise WriterCannotReachLedger("the writer worker could not reach a backing service")
        raise WriterFailed("the writer worker failed this command (see its log)")

    async def _idempotency(
        self, request: Request[Any, Any, Any], require_key: bool
    ) -> Idempotency | None:
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
        if key is None:
            return None
        # The scope's own values: `request.state` and `request.url` build objects per call.
        state = request.scope["state"]
        method = request.scope["method"]
        path = request.scope.get("root_path", "") + request.scope["path"]  # request.url.path
        body = canonical_body(await request.body())
        request_hash = hashlib.sha256(
            method.encode() + b" " + path.encode() + b"\n" + body
        ).hexdigest()
        # Scoped by the token's identity (its stored hash), never its name.
        scope = f"{state['principal'].key} {method} {path}"
        return Idempotency(scope, key, request_hash)

    def _call(
        self,
        correlation: str,
        token_name: str,
        idem: Idempotency | None,
        render: Render,
        stored_body: Callable[[bytes], bytes] | None,
    ) -> Call:
        def receipt(result: Applied[Any] | Rejected) -> Receipt | None:
            reply = self._reply(result)
            if reply.status_code >= 500:
                return None
            if stored_body is not None and isinstance(result, Applied):
                return Receipt(reply.status_code, stored_body(reply.body))
            return reply

        return Call(
            correlation_id=correlation,
            idempotency=idem,
            view=lambda world, _: Receipt(*encoded(render(world, self.service.clock()))),
            receipt=receipt,
            token_name=token_name,
        )

    async def _once(self, idem: Idempotency | None, run: Callable[[], Any]) -> Result:
        """`run()`, after any request with the same key in flight in this process finished
        (a duplicate then replays the first's answer)."""
        if idem is None:
            result: Result = await run()
            return result
        slot = (idem.scope, idem.key)
        while (first := self.inflight.get(slot)) is not None:
            await asyncio.shield(first)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight[slot] = mine
        try:
            result = await run()
        finally:
            del self.inflight[slot]
            mine.set_result(None)
        return result

    async def _positioned(self, result: Result, idem: Idempotency | None) -> Result:
        """A replay with the position its first answer carried: that of its key's record
        (contract: "A replay answers with ATP-Position too"), so a client that retried after
        a timeout can still read its own write with `min_position`. One query, on replays
        only; any other result as it is."""
        if (
            isinstance(result, Replayed)
            and result.position is None
            and idem is not None
            and self.last_position is not None
        ):
            return replace(result, position=await self.last_position(idem.stream))
        return result

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
        position = result.position if isinstance(result, Applied | Rejected | Replayed) else None
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
