"""The HTTP/1.1 protocol `atp serve` runs: uvicorn's h11 implementation, bounded.

An unauthenticated client must not hold memory or connections at will. uvicorn's own h11
protocol answers an oversized request head with a plain 400 and never times out a head that
trickles in (nor a connection that sends nothing). This subclass:

- caps the request line plus headers at MAX_HEADER_BYTES: 431 (RFC 6585 §5), problem body;
- gives each request's line and headers HEADER_TIMEOUT seconds from the first byte (or from
  the connection's start): then 408 and the connection is closed.

Idle keep-alive connections close after uvicorn's `timeout_keep_alive` (KEEP_ALIVE seconds).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import msgspec
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 5

HTTP_LIMITS: dict[str, Any] = {
    "http": "api.httpserver:BoundedH11Protocol",
    "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    "timeout_keep_alive": KEEP_ALIVE,
}
"""Keyword arguments for `uvicorn.run` (the protocol by import path: workers import it)."""


def _raw_problem(status: int, reason: str, detail: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response carrying an RFC 9457 problem."""
    code = reason.lower().replace(" ", "-")
    body = msgspec.json.encode(
        {
            "type": f"/problems/{code}",
            "title": reason,
            "status": status,
            "detail": detail,
            "code": code,
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Connection(h11.Connection):
    """Keeps the protocol error it raised, so the answer can use h11's status hint (431)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


class BoundedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with a request-head size cap (431) and read deadline (408)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, MAX_HEADER_BYTES)
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # h11 bounds only a head still incomplete; one that arrives whole is checked here.
            pending = self.conn.trailing_data[0] + data
            if (
                len(pending) > MAX_HEADER_BYTES
                and pending.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4) == -1
            ):
                self._refuse_head_too_large()
                return
        super().data_received(data)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is complete (or the connection is done)
        else:
            self._arm_head_timer()  # part of a head: it must be complete in time

    def send_400_response(self, msg: str) -> None:
        if getattr(self.conn.error, "error_status_hint", 400) == 431:
            self._refuse_head_too_large()
        else:
            self._close_with(_raw_problem(400, "Bad Request", "the HTTP request is malformed"))

    def _refuse_head_too_large(self) -> None:
        detail = f"the request line and headers exceed {MAX_HEADER_BYTES} bytes"
        self._close_with(_raw_problem(431, "Request Header Fields Too Large", detail))

    def _close_with(self, response: bytes) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            detail = f"the request line and headers took longer than {HEADER_TIMEOUT:g} s"
            self._close_with(_raw_problem(408, "Request Timeout", detail))
        else:
            self.transport.close()
