"""The HTTP/1.1 protocol `atp serve` runs: uvicorn's httptools implementation, bounded.

An unauthenticated client must not hold memory or connections at will. uvicorn bounds
neither the size of a request head under httptools (a 16 MB header is read whole) nor the
time it takes to arrive (a head that trickles in, or a connection that sends nothing, is
held open indefinitely). Its h11 protocol bounds the size but answers a plain 400, and costs
about a third more CPU per request here. This subclass of the httptools protocol:

- caps the request line plus headers at MAX_HEADER_BYTES: 431 (RFC 6585 §5), problem body;
- gives each request's line and headers HEADER_TIMEOUT seconds from its first byte (or from
  the connection's start): then 408 and the connection is closed;
- writes each response's head and body in one write (see `_OneWrite`).

Idle keep-alive connections close after uvicorn's `timeout_keep_alive` (KEEP_ALIVE seconds).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024
HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 5

HTTP_LIMITS: dict[str, Any] = {
    "http": "api.http.httpserver:BoundedHttpToolsProtocol",
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


class _OneWrite:
    """The transport as one request's response cycle sees it: the response head (status line
    and headers) is held until the first body write and sent with it, so a response is one
    write (one `send` system call, one segment on the wire) instead of two. uvicorn writes
    the head on `http.response.start` and the body on `http.response.body`; the two always
    follow each other at once, and the second write was about a fifth of the server's CPU
    per request (docs/benchmarks.md). A `100 Continue` interim answer goes at once, and a
    close sends a head still held (an answer cut short keeps its head, as before)."""

    __slots__ = ("head", "started", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head = b""
        self.started = False

    def write(self, data: bytes) -> None:
        if self.head:
            data, self.head = self.head + data, b""
        elif not self.started and not data.startswith(b"HTTP/1.1 100 "):
            self.started = True
            self.head = data
            return
        self.transport.write(data)

    def close(self) -> None:
        if self.head:
            self.transport.write(self.head)
            self.head = b""
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into HttpParserCallbackError."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol with a request-head size cap (431) and deadline (408)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = False
        """Between a request's first byte and the end of its headers."""
        self.head_bytes = 0
        """Bytes of the current head: exact from the callbacks, or counted by data chunks."""
        self.head_too_large = False

    # --- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # the first request must begin (and end its head) in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        was_in_head = self.in_head
        super().data_received(data)
        # A head still incomplete after this chunk: httptools buffers a header's pieces until
        # it ends, so count what arrives (a chunk that began the head is bounded by the read
        # size, and the callbacks count what completed in it).
        if self.in_head and not self.transport.is_closing():
            if was_in_head:
                self.head_bytes += len(data)
            if self.head_bytes > MAX_HEADER_BYTES:
                self._refuse_head_too_large()
            else:
                # The deadline runs from the head's first chunk. Armed only for a head that
                # did not arrive whole in one chunk (almost every head does): a timer armed
                # and cancelled per request (a TimerHandle in the loop's heap) cost about
                # 4 us a request, a third of this protocol's cost over uvicorn's.
                self._arm_head_timer()

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # _count inlined: this runs for every header of every request.
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEADER_BYTES:
            self.head_too_large = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        # A HEAD answer has no body write to carry its head.
        if self.cycle is not None and self.scope["method"] != "HEAD":
            self.cycle.transport = _OneWrite(self.transport)  # type: ignore[assignment]

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEADER_BYTES:
            self.head_too_large = True
            raise _HeadTooLarge

    # --- answers ----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        if self.head_too_large:
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
        if self.transport.is_closing():
            return
        if self.in_head:
            detail = f"the request line and headers took longer than {HEADER_TIMEOUT:g} s"
            self._close_with(_raw_problem(408, "Request Timeout", detail))
        elif self.cycle is None:
            self.transport.close()  # connected and never sent a request
