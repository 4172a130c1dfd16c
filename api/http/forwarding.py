"""One writer behind several API workers: every /v1 write is decided by one worker process.

With `atp serve --workers N` (N > 1) every worker accepts HTTP, but the first worker to take
an exclusive lock on `<ATP_WRITER_SOCKET>.lock` becomes the **writer**: it listens on the
Unix socket ATP_WRITER_SOCKET, and every other worker forwards its /v1 writes (any method
but GET, HEAD and OPTIONS) there as they came (method, path, query, headers, body) and
sends back the writer's answer as it is. Reads stay where they arrive.

Why (issue 12, `loadtests/bench_checkout`): two workers that each decide writes race for the
same streams. On one hot SKU a third of their batches were decided twice after version
conflicts, each worker's cache went stale with the other's events (one more read per
batch), and batches were half as large. One worker alone reserved 1.6 times as fast as
two. With one writer no batch is decided twice and every stream's cached state stays
current, while the HTTP work of reads still spreads over every worker.

Correctness never rests on this: the ledger's optimistic concurrency still guards every
append, so a worker that cannot reach the writer (it is restarting: its lock is free and
the next worker to start takes it) decides the write itself. A request whose forward broke
after it was sent is decided locally only when deciding it twice is harmless (an
Idempotency-Key, or PUT/DELETE); otherwise it answers 503 with Retry-After.

Checkout writes (reservations and orders, the routes of nearly every write under load) are
forwarded one step later and smaller: the worker where the request arrived runs it through
Litestar itself (authentication, decoding, validation, the log line, the metrics) and the
route's gateway sends the writer only the decided-by-data job, a `ForwardedCommand` (the
domain command, the view to answer with, the idempotency key), which the writer decides and
answers with a `CommandOutcome` (status, body, position). Why (issue 12, py-spy with
`--gil` on the writer worker at 1,000 reservations/s): Litestar's handling of the other
worker's forwarded requests took 41% of the writer process's GIL and its own HTTP 25%, the
decisions 22%: the writer process was the one saturated process while the other worker
used 28% of a core. `FORWARDED_AS_COMMANDS` names those paths; the middleware leaves them
to Litestar here.

The link is a hand-written frame protocol (4-byte length, msgpack) over a pool of Unix
socket connections, one request at a time each: an HTTP client (httpx) cost more CPU per
forwarded request than the writer's own decision (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.types import ASGIApp

from api.http.metrics import FORWARDED_WRITES, HTTP_ERRORS
from api.http.middleware import CORRELATION_HEADER, given_correlation_id, record_answer
from api.http.problems import PROBLEM, problem_body
from api.log import correlation_id

log = logging.getLogger("atp.forwarding")

FORWARDED = "atp.forwarded"
"""Scope key marking a request the writer received from another worker (never forwarded)."""
MAX_FORWARDED_BODY = 1 << 20
"""Bodies larger than this (a reconciliation's CSV) are decided where they arrive."""
LOCAL_PATHS = ("/v1/reconciliations",)
"""Writes decided where they arrive: long, streamed uploads, serialised per location by
their own lock."""
POOL_SIZE = 64
"""Idle connections a worker keeps to the writer."""
FORWARDED_AS_COMMANDS = ("/v1/reservations", "/v1/orders")
"""Writes under these paths run through Litestar where they arrive; their routes send the
writer a ForwardedCommand (api.http.gateway.Gateway.command)."""
_READS = frozenset(("GET", "HEAD", "OPTIONS"))
# Litestar's ASGI TypedDicts distinguish HTTP from WebSocket messages this module never
# sees; plain aliases keep the frames' code readable.
Scope = Any
Message = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
_SAFE_TO_REDO = frozenset(("PUT", "DELETE"))


class ForwardedRequest(msgspec.Struct, array_like=True, tag="http"):
    """What crosses the socket: the request as the worker received it."""

    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    scheme: str
    body: bytes


class ForwardedResponse(msgspec.Struct, array_like=True):
    """The writer's answer: status, headers and body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ForwardedCommand(msgspec.Struct, array_like=True, tag="command"):
    """A checkout write decoded where it arrived: `command` (an atp.commands struct,
    msgpack), the `view` its answer shows (kind "reservation" or "order", the stream's id,
    the status of success), its idempotency key (scope, key, request hash) or None, and the
    request's correlation id and token name (ledger metadata)."""

    command: bytes
    view: tuple[str, str, int]
    idempotency: tuple[str, str, str] | None
    correlation_id: str
    token_name: str


class CommandOutcome(msgspec.Struct, array_like=True):
    """The writer's answer to a ForwardedCommand. `kind`: "decided" (status and body of the
    view or of the domain problem; `position` the ledger position of its last event or
    idempotency record), "replayed" (the key's first answer), "reused" (the key came with
    another request), "unavailable" (the writer could not reach a backing service: the
    ledger) or "failed" (the job failed in the writer: a bug)."""

    kind: str
    status: int = 0
    body: bytes = b""
    position: int | None = None


CommandHandler = Callable[[ForwardedCommand], Awaitable[CommandOutcome]]
"""The writer's handler of forwarded commands (api.http.gateway.Gateway.run_forwarded)."""


_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(ForwardedRequest | ForwardedCommand)
_response_decoder = msgspec.msgpack.Decoder(ForwardedResponse)
_outcome_decoder = msgspec.msgpack.Decoder(CommandOutcome)


class WriterUnreachable(Exception):
    """No connection to the writer could be made: nothing was sent."""


class ForwardBroken(Exception):
    """The connection failed after the request was sent: it may have been decided."""


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(size)


def claim_writer(socket_path: str) -> int | None:
    """Try to become the writer: an exclusive, non-blocking lock on `<socket_path>.lock`.
    Returns the lock's file descriptor (held for the life of the process: the kernel frees
    it when the process dies) or None when another worker holds it."""
    fd = os.open(socket_path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def serve_writer(
    app: ASGIApp, socket_path: str, on_command: CommandHandler
) -> asyncio.AbstractServer:
    """Listen on `socket_path` for other workers' writes: run each forwarded request through
    `app` (the whole Litestar application: authentication, validation, the decision, the log
    line and the metrics happen here, once) and each forwarded command through
    `on_command`."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = _request_decoder.decode(await _read_frame(reader))
                response: ForwardedResponse | CommandOutcome
                if isinstance(request, ForwardedCommand):
                    response = await on_command(request)
                else:
                    response = await _call(app, request)
                writer.write(_frame(_encoder.encode(response)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(connection, socket_path)


async def _call(app: ASGIApp, request: ForwardedRequest) -> ForwardedResponse:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": None,
        "client": request.client,
        "scheme": request.scheme,
        "method": request.method,
        "root_path": "",
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "headers": request.headers,
        "state": {},
        FORWARDED: True,
    }
    sent = False
    finished = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    try:
        await app(scope, receive, send)  # type: ignore[arg-type]
    finally:
        finished.set()
    return ForwardedResponse(status, headers, b"".join(parts))


class WriterLink:
    """A worker's connections to the writer: `forward(scope, body)` sends one request and
    returns the writer's answer. Raises WriterUnreachable (nothing sent) or ForwardBroken
    (sent, fate unknown)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def forward(self, scope: Scope, body: bytes) -> ForwardedResponse:
        """Send the request of `scope` with `body`; the writer's answer."""
        client = scope.get("client")
        request = ForwardedRequest(
            scope["method"],
            scope["path"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            [(bytes(k), bytes(v)) for k, v in scope["headers"]],
            (client[0], client[1]) if client else None,
            scope.get("scheme", "http"),
            body,
        )
        answer: ForwardedResponse = _response_decoder.decode(await self._exchange(request))
        return answer

    async def command(self, command: ForwardedCommand) -> CommandOutcome:
        """Send a checkout write's command; the writer's outcome."""
        outcome: CommandOutcome = _outcome_decoder.decode(await self._exchange(command))
        return outcome

    async def _exchange(self, frame: ForwardedRequest | ForwardedCommand) -> bytes:
        kind = "command" if isinstance(frame, ForwardedCommand) else "request"
        # An idle connection the writer closed (it was killed or restarted) has seen EOF:
        # sending on it would break off a request no writer ever received (a 503 for a POST
        # without Idempotency-Key, or a write decided here while a new writer runs).
        while self.idle:
            reader, writer = self.idle.pop()
            if not (reader.at_eof() or writer.is_closing()):
                break
            writer.close()
        else:
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                FORWARDED_WRITES.labels(kind=kind, outcome="unreachable").inc()
                raise WriterUnreachable(str(exc)) from exc
        try:
            writer.write(_frame(_encoder.encode(frame)))
            await writer.drain()
            answer = await _read_frame(reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            writer.close()
            FORWARDED_WRITES.labels(kind=kind, outcome="broken").inc()
            raise ForwardBroken(str(exc)) from exc
        except BaseException:
            writer.close()  # cancelled mid-request: the connection's state is unknown
            raise
        if len(self.idle) < POOL_SIZE:
            self.idle.append((reader, writer))
        else:
            writer.close()
        FORWARDED_WRITES.labels(kind=kind, outcome="answered").inc()
        return answer

    def close(self) -> None:
        """Close the idle connections."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's body messages, and the whole body when it is at most
    MAX_FORWARDED_BODY (else None: the rest is left unread)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > MAX_FORWARDED_BODY:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` again, then reads on."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def forwarding(
    app: ASGIApp, settle: Callable[[Scope, int], Awaitable[None]] | None = None
) -> ASGIApp:
    """Forward /v1 writes to the writer when this worker has a WriterLink
    (`app.state.writer_link`, set by the lifespan: None in the writer and with one worker).
    `settle(scope, position)` runs before a forwarded answer that carries ATP-Position is
    sent (the embedded read model of this worker catches up: read-your-writes)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _READS
            or FORWARDED in scope
            or not scope["path"].startswith("/v1/")
            or scope["path"].startswith(LOCAL_PATHS)
            or scope["path"].startswith(FORWARDED_AS_COMMANDS)
        ):
            await app(scope, receive, send)
            return
        link: WriterLink | None = getattr(scope["app"].state, "writer_link", None)
        if link is None:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        messages, body = await _read_body(receive)
        if body is None:
            await app(scope, _replaying(messages, receive), send)
            return
        try:
            response = await link.forward(scope, body)
        except WriterUnreachable:
            await app(scope, _replaying(messages, receive), send)
            return
        except ForwardBroken as exc:
            headers = {k.lower(): v for k, v in scope["headers"]}
            if b"idempotency-key" in headers or scope["method"] in _SAFE_TO_REDO:
                log.warning("the writer broke off a forwarded write (%s): deciding it here", exc)
                await app(scope, _replaying(messages, receive), send)
                return
            # This answer never reaches Litestar or the request middleware: it gets its
            # correlation id, metrics and log line here, as every other 503 does.
            cid = given_correlation_id(scope)
            token = correlation_id.set(cid)
            try:
                log.warning("the writer broke off a forwarded write (%s): 503", exc)
                HTTP_ERRORS.labels(kind="unavailable").inc()
                body = problem_body(503, "writer-unavailable", "the writer restarted; retry")
                answer = [
                    (b"content-type", PROBLEM.encode()),
                    (b"retry-after", b"1"),
                    (CORRELATION_HEADER, cid.encode()),
                ]
                await send({"type": "http.response.start", "status": 503, "headers": answer})
                await send({"type": "http.response.body", "body": body})
                record_answer(scope, 503, time.perf_counter() - started)
            finally:
                correlation_id.reset(token)
            return
        if settle is not None:
            position = next((v for k, v in response.headers if k == b"atp-position"), None)
            if position is not None:
                await settle(scope, int(position))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    return middleware
