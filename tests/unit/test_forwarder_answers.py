"""The forwarding worker's own answers (api.http.forwarding) are counted like every other.

The forwarder answers 503 itself when the writer broke off a write that is not safe to
decide twice. That answer never reaches Litestar or the request middleware, so the
forwarder counts it: in `atp_http_request_duration_seconds` under the route Litestar would
have matched, and in `atp_http_errors_total{kind="unavailable"}`.
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
from api.http.middleware import route_template

ROUTE = "/v1/transfers/{transfer_id:str}/receive"
TEMPLATE = "/v1/transfers/{transfer_id}/receive"
"""The route's template as Litestar's router gives it (`scope["path_template"]`)."""


@post(ROUTE, sync_to_thread=False)
def receive_transfer(transfer_id: FromPath[str]) -> None:
    raise AssertionError("a write the writer may have decided is not decided here too")


def _count(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _killed_writer(socket_path: str) -> asyncio.AbstractServer:
    """A writer that reads a forwarded request and dies before answering."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(size)
        writer.close()

    return await asyncio.start_unix_server(connection, socket_path)


def test_a_writer_restart_mid_transfer_is_a_counted_503(tmp_path: Path) -> None:
    """Story: during a deploy the writer worker restarts while a store manager's "receive
    transfer" (a POST without Idempotency-Key: not safe to decide twice) is in flight on the
    other worker. The manager gets 503 with Retry-After, and the operator's dashboard,
    which alerts on 503s by route, shows it.

    Invariant: every answer the service gives is counted once in the request histogram,
    under its route's template, and every 503 in the 'unavailable' errors."""
    app = Litestar([receive_transfer])
    socket_path = str(tmp_path / "writer.sock")
    histogram = {"method": "POST", "route": TEMPLATE, "status": "503"}
    unavailable = {"kind": "unavailable"}
    before = (
        _count("atp_http_request_duration_seconds_count", histogram),
        _count("atp_http_errors_total", unavailable),
    )
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        server = await _killed_writer(socket_path)
        app.state.writer_link = WriterLink(socket_path)
        middleware = forwarding(app.asgi_handler)
        body = json.dumps({"lines": [{"sku": "TEE", "quantity": 3}]}).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/transfers/T-17/receive",
            "raw_path": b"/v1/transfers/T-17/receive",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "app": app,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        try:
            await middleware(scope, receive, send)  # type: ignore[arg-type]
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    asyncio.run(scenario())
    start, body_message = sent
    assert start["status"] == 503
    assert dict(start["headers"])[b"retry-after"] == b"1"
    assert json.loads(body_message["body"])["code"] == "writer-unavailable"
    assert _count("atp_http_request_duration_seconds_count", histogram) == before[0] + 1
    assert _count("atp_http_errors_total", unavailable) == before[1] + 1


def test_a_path_no_route_matches_is_labelled_unmatched() -> None:
    """The label the request middleware gives answers Litestar found no route for (404/405),
    so the forwarder's 503 for such a path adds no label of its own."""
    app = Litestar([receive_transfer])
    scope = {"type": "http", "method": "POST", "path": "/v1/nowhere", "app": app}
    assert route_template(scope) == "unmatched"
    scope = {"type": "http", "method": "GET", "path": "/v1/transfers/T-1/receive", "app": app}
    assert route_template(scope) == "unmatched"
    scope = {"type": "http", "method": "POST", "path": "/v1/transfers/T-1/receive/", "app": app}
    assert route_template(scope) == TEMPLATE
