"""`atp serve` sends each response's head and body in one write (api.http.httpserver)."""

from __future__ import annotations

from typing import Any

from api.http.httpserver import _OneWrite


class _Transport:
    """Records what the response cycle writes, and whether it closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _one_write() -> tuple[_OneWrite, _Transport]:
    transport = _Transport()
    return _OneWrite(transport), transport  # type: ignore[arg-type]


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_the_head_goes_out_with_the_body_in_one_write() -> None:
    """Given a response cycle, when it writes the head and then the body, then the transport
    gets one write carrying both, in order; later body chunks go straight through."""
    wrapped, transport = _one_write()
    wrapped.write(HEAD)
    assert transport.writes == []
    wrapped.write(b"{}")
    wrapped.write(b"more")
    assert transport.writes == [HEAD + b"{}", b"more"]


def test_100_continue_is_not_held() -> None:
    """Given a client that sent `Expect: 100-continue`, when the cycle answers 100 Continue,
    then it goes at once (the client waits for it before sending its body), and the final
    head still travels with its body."""
    wrapped, transport = _one_write()
    wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    wrapped.write(HEAD)
    wrapped.write(b"{}")
    assert transport.writes[1:] == [HEAD + b"{}"]


def test_a_close_sends_a_head_still_held() -> None:
    """Given a head written and no body (the app failed after starting its answer), when
    the cycle closes the connection, then the head is written before the close; other
    transport calls reach the transport itself."""
    wrapped, transport = _one_write()
    wrapped.write(HEAD)
    wrapped.close()
    assert transport.writes == [HEAD]
    assert transport.closed
    check: Any = wrapped.is_closing
    assert check() is True
