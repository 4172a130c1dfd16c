"""The forwarding worker's own answers (api.http.forwarding) are counted like every other.

The forwarder answers 503 itself when the writer broke off a write that is not safe to
decide twice. That answer never reaches Litestar or the request middleware, so the
forwarder gives it what the middleware gives every answer: an X-Correlation-ID, a count in
`atp_http_request_duration_seconds` under the route Litestar would have matched, and the
log line; and it counts it in `atp_http_errors_total{kind="unavailable"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from litestar import Litestar, post
from litestar.params import FromPath
from prometheus_client import REGISTRY

from api.http.forwarding import WriterLink, forwarding
from api.http.middleware import request_middleware, route_template

TOKENS = "/v1/tokens"
TRANSFER = "/v1/transfers/{transfer_id:str}/receive"
TRANSFER_TEMPLATE = "/v1/transfers/{transfer_id}/receive"
"""The route's template as Litestar's router gives it (`scope["path_template"]`)."""


@post(TOKENS, sync_to_thread=False)
def create_token() -> None:
    raise AssertionError("a write the writer may have decided is not decided here too")


@post(TRANSFER, sync_to_thread=False)
def receive_transfer(transfer_id: FromPath[str]) -> None:
    raise AssertionError("not called")


def _count(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _killed_writer(socket_path: str) -> asyncio.AbstractServer:
    """A writer that reads a forwarded request and dies before answering."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(size)
        writer.close()

    return await asyncio.start_unix_server(connection, socket_path)


def test_a_writer_restart_while_a_token_is_issued_is_a_counted_503(tmp_path: Path) -> None:
    """Story: during a deploy the writer worker restarts while an admin's `POST /v1/tokens`
    (no Idempotency-Key: not safe to decide twice) is in flight on the other worker. The
    admin gets 503 with Retry-After, and the operator's dashboard, which alerts on 503s by
    route, shows it; the answer's correlation id finds its log line.

    Invariant: every answer the service gives is counted exactly once in the request
    histogram, under its route, every 503 in the 'unavailable' errors, and every answer
    carries the request's X-Correlation-ID."""
    app = Litestar([create_token])
    socket_path = str(tmp_path / "writer.sock")
    histogram = {"method": "POST", "route": TOKENS, "status": "503"}
    unavailable = {"kind": "unavailable"}
    before = (
        _count("atp_http_request_duration_seconds_count", histogram),
        _count("atp_http_errors_total", unavailable),
    )
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        server = await _killed_writer(socket_path)
        app.state.writer_link = WriterLink(socket_path)
        # As create_app stacks them: the forwarder outside the request middleware.
        handler = forwarding(request_middleware(app.asgi_handler))
        body = json.dumps({"name": "till-7", "scopes": ["reservations:write"]}).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": TOKENS,
            "raw_path": TOKENS.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-correlation-id", b"deploy-42"),
            ],
            "app": app,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        try:
            await handler(scope, receive, send)  # type: ignore[arg-type]
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    asyncio.run(scenario())
    start, body_message = sent
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-correlation-id"] == b"deploy-42"
    assert json.loads(body_message["body"])["code"] == "writer-unavailable"
    assert _count("atp_http_request_duration_seconds_count", histogram) == before[0] + 1
    assert _count("atp_http_errors_total", unavailable) == before[1] + 1


def test_the_forwarders_label_is_the_one_litestar_routes_to() -> None:
    """The label the request middleware gives an answer: the route template, also for a
    percent-encoded or trailing-slash path, and "unmatched" for no route or method (Litestar's
    404/405), so the forwarder's 503 adds no label of its own."""
    app = Litestar([receive_transfer])

    def label(method: str, path: str, raw: bytes | None = None) -> str:
        scope = {"type": "http", "method": method, "path": path, "app": app}
        if raw is not None:
            scope["raw_path"] = raw
        return route_template(scope)

    assert label("POST", "/v1/transfers/T-1/receive") == TRANSFER_TEMPLATE
    assert label("POST", "/v1/transfers/T-1/receive/") == TRANSFER_TEMPLATE
    assert label("POST", "/v1/transfers/T/1/receive", b"/v1/transfers/T%2F1/receive") == (
        TRANSFER_TEMPLATE
    )
    assert label("POST", "/v1/nowhere") == "unmatched"
    assert label("GET", "/v1/transfers/T-1/receive") == "unmatched"
