"""What every request goes through around its handler: one ASGI middleware before routing,
one `before_request` hook after it, and in the embedded mode one middleware for
read-your-writes.

`request_middleware` wraps the whole Litestar application (outside its exception handling
and its router), so that every answer, 401/403/404/429 and 500 included:

- is routed on the raw path with %2F kept, so codes may contain '/' (percent-encoded);
- carries X-Correlation-ID (the client's, else a new one), also given to handlers as
  `request.state.correlation_id` and to every log line of the request;
- is counted and timed in `atp_http_request_duration_seconds` by method, route template and
  status, and logged as one line at INFO (method, route, status, duration, correlation id).

`admit` runs after routing (Litestar's `before_request`, so it knows the route's `opt`): it
authenticates every /v1 route but the public ones, then decodes the input strictly.

`read_your_writes` (embedded mode only) holds a write's answer until the in-process read
model includes the write.

They were four nested middlewares (raw path, request, read-your-writes, auth), then two;
each layer is a frame, a coroutine and (after routing) one more Litestar exception layer per
request (docs/benchmarks.md, issue 12).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.path import normalize_path

from api.http.auth import TokenStore, authenticate
from api.http.decoding import strict_input
from api.http.metrics import REQUEST_DURATION
from api.log import correlation_id

log = logging.getLogger("atp.request")
wait_log = logging.getLogger("atp")

CORRELATION_HEADER = b"x-correlation-id"
POSITION_HEADER = b"atp-position"
MAX_OBSERVERS = 1024
"""Bound of the cache of histogram children (methods are client input)."""
_SAFE = "!$&'()*+,;=:@-._~"
_READS = frozenset(("GET", "HEAD"))
_random_bits = random.getrandbits


def routed_path(raw_path: bytes) -> str | None:
    """The path to route on when the raw path has percent-escapes (else None: keep `path`).

    Every segment is re-quoted from the raw bytes, so %2F stays inside its segment and
    handlers decode each segment exactly once: `TEE%252FBLK` names the code `TEE%2FBLK`,
    never `TEE/BLK`.
    """
    path = raw_path.split(b"?", 1)[0]
    if b"%" not in path:
        return None
    return "/".join(quote(unquote_to_bytes(seg), safe=_SAFE) for seg in path.split(b"/"))


def given_correlation_id(scope: Scope) -> str:
    """The request's X-Correlation-ID when it is usable (1 to 128 printable characters),
    else a new random one (24 hex digits)."""
    for name, value in scope["headers"]:
        if name == CORRELATION_HEADER:
            given = value.decode("latin-1")
            if 0 < len(given) <= 128 and given.isprintable():
                return given
            break
    # 96 random bits from the process's Mersenne Twister (seeded from os.urandom, reseeded
    # in a forked child): an id, not a secret; a getrandom syscall per request cost more.
    return f"{_random_bits(96):024x}"


def route_template(scope: Scope) -> str:
    """The route template Litestar's router finds for the request of `scope`: the
    `path_template` the request histogram labels its answers with, or "unmatched" when no
    route or method matches (the label of Litestar's 404 and 405). For answers given before
    routing (the forwarder's own 503: api.http.forwarding)."""
    raw = scope.get("raw_path")
    path: str = scope["path"]
    if raw and b"%" in raw:
        path = routed_path(raw) or path
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    try:
        found = scope["app"].asgi_router.handle_routing(
            path=normalize_path(path), method=scope.get("method")
        )
    except (NotFoundException, MethodNotAllowedException):
        return "unmatched"
    return str(found[4])


def record_answer(scope: Scope, status: int, took: float) -> None:
    """Count and log an answer given outside `request_middleware` (the forwarder's own
    503) as the middleware would: the request histogram by method, route template and
    status, and the INFO line. `took` is in seconds."""
    method = str(scope.get("method", ""))
    route = route_template(scope)
    REQUEST_DURATION.labels(method, route, str(status)).observe(took)
    _log_answer(method, route, status, took, scope["path"])


def _log_answer(method: str, route: str, status: int, took: float, path: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s %s %d %.1fms",
            method,
            route,
            status,
            took * 1000,
            extra={
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "duration_ms": round(took * 1000, 3),
            },
        )


def request_middleware(app: ASGIApp) -> ASGIApp:
    """Raw-path routing, X-Correlation-ID, the request histogram and the request log line
    around `app` (Litestar's `asgi_handler`). Histogram children are bound once per
    (method, route, status), not looked up on every request."""
    observers: dict[tuple[str, str, int], Any] = {}

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        raw = scope.get("raw_path")
        if raw and b"%" in raw and (path := routed_path(raw)) is not None:
            scope["path"] = path
        cid = given_correlation_id(scope)
        scope.setdefault("state", {})["correlation_id"] = cid
        token = correlation_id.set(cid)
        header = (CORRELATION_HEADER, cid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            took = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            key = (method, route, status)
            observer = observers.get(key)
            if observer is None:
                observer = REQUEST_DURATION.labels(method, route, str(status))
                if len(observers) < MAX_OBSERVERS:
                    observers[key] = observer
            observer.observe(took)
            _log_answer(method, route, status, took, scope["path"])
            correlation_id.reset(token)

    return middleware


async def admit(request: Request[Any, Any, Any]) -> None:
    """Litestar's `before_request` hook of every route: authentication of /v1 routes but the
    public ones (401/403/429, see `authenticate`; the principal goes to
    `request.state.principal`), then strict input (`api.http.decoding.strict_input`: 4xx
    problems naming the field). It runs after routing, so it knows the route's `opt`
    (`public`, `scopes`), and before Litestar parses the route's parameters.

    A hook rather than a route middleware: Litestar wraps a route that has middleware in one
    more exception-handling layer, two frames per request that a hook does not cost (issue
    12; docs/benchmarks.md, fifth day). Raises ApiProblem."""
    scope = request.scope
    if scope["path"].startswith("/v1/"):
        opt = scope["route_handler"].opt
        if not opt.get("public"):
            store: TokenStore = scope["app"].state["tokens"]  # item access: cheaper than getattr
            client = scope.get("client")
            principal = await authenticate(
                scope["headers"], store, opt.get("scopes", ()), client[0] if client else ""
            )
            scope["state"]["principal"] = principal
    await strict_input(request)


def read_your_writes(app: ASGIApp) -> ASGIApp:
    """Embedded mode only (the in-process read model; `create_app` installs it then): a
    write's answer (it carries ATP-Position) waits until the in-process read model includes
    that position, so a read sent after the answer sees the write. The projector is woken
    at once; past ATP_READ_WAIT the answer goes anyway (a read can still ask
    `min_position`). With Redis the projector is another process: a client passes a
    write's ATP-Position as a read's `?min_position=` (README)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] in _READS:
            await app(scope, receive, send)
            return
        state = scope["app"].state
        nudge = state["nudge"]  # set by the lifespan in the embedded mode, before any request

        async def settle_then_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                position = next(
                    (v for k, v in message.get("headers", ()) if k.lower() == POSITION_HEADER),
                    None,
                )
                if position is not None:
                    nudge.nudge()
                    wait = state.settings.read_wait
                    if not await state.positions.wait(int(position), wait):
                        wait_log.warning(
                            "the read model did not reach position %s in time", position
                        )
            await send(message)

        await app(scope, receive, settle_then_send)

    return middleware
