"""The machinery every fake shares: a real HTTP server on 127.0.0.1, a request log and
fault injection that tests can change while the fake is running.

A fake is a `FakeServer` subclass that implements `handle(request) -> Response`. Before
`handle` runs, every request goes through, in this order:

1. the request log (`requests()`, `request_count()`),
2. the added latency (`faults.latency`),
3. the queued one-shot faults (`faults.throttle_next`, `fail_next`, `disconnect_next`),
   which answer in place of the system, the way a host, CDN or gateway in front of it does,
4. the per-second rate limit (`faults.set_rate_limit`), a sliding one-second window.

All of it is thread-safe: the server answers each connection on its own thread, and tests
may change faults or seed data from any thread while requests are in flight.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

Predicate = Callable[["RecordedRequest"], bool]


@dataclass
class RecordedRequest:
    """One request as the fake received it (the raw bytes of the body included)."""

    method: str
    path: str
    """The path as sent, still percent-encoded, without the query string."""
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""
    body: bytes
    time: float
    """`time.time()` when the request line had been read."""
    status: int | None = None
    """The status answered, or None while in flight and when the connection was dropped."""
    fault: str | None = None
    """Which injected fault answered it: "throttle", "fail", "disconnect", "rate_limit"."""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def param(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter."""
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: Any, headers: dict[str, str] | None = None, *, dumps: Any = None
    ) -> Response:
        encode = dumps or (lambda o: json.dumps(o, separators=(",", ":")).encode())
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        return cls(status, encode(payload), all_headers)


def html_error_page(status: int, reason: str) -> bytes:
    """What nginx or a CDN puts in front of an error: HTML, not the API's JSON."""
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def retry_after_value(value: float | int | str | None) -> str | None:
    """Retry-After is whole seconds or an HTTP-date; a float is rounded up."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(max(0, math.ceil(value)))


@dataclass
class _Rule:
    kind: str  # "throttle" | "fail" | "disconnect"
    remaining: int
    status: int = 0
    retry_after: float | int | str | None = None
    html: bool = False
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    when: Predicate | None = None


@dataclass
class Fault:
    """The answer an injected fault gives (the fake renders it with `fault_response`)."""

    kind: str
    status: int
    retry_after: str | None
    html: bool
    body: bytes | None
    headers: dict[str, str]


class Faults:
    """Runtime fault knobs of one fake. Every method is thread-safe and takes effect on the
    next request. One-shot faults are used in the order they were queued; a fault with a
    `when` predicate only counts requests it matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._latency = 0.0
        self._rate_limit: float | None = None
        self._window: deque[float] = deque()

    # -- one-shot faults ---------------------------------------------------------------
    def throttle_next(
        self,
        n: int = 1,
        *,
        retry_after: float | int | str | None = 1,
        html: bool = False,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        when: Predicate | None = None,
    ) -> None:
        """The next `n` requests answer 429 with `Retry-After: retry_after` (seconds, or an
        HTTP-date string; None leaves the header out). `html=True` answers with an HTML page
        the way hosts and CDNs do, instead of the system's own JSON error."""
        self._add(_Rule("throttle", n, 429, retry_after, html, body, dict(headers or {}), when))

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        retry_after: float | int | str | None = None,
        html: bool = False,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        when: Predicate | None = None,
    ) -> None:
        """The next `n` requests answer `status` (500, 502, 503, 504...) without being
        processed: nothing changes in the fake's state."""
        self._add(_Rule("fail", n, status, retry_after, html, body, dict(headers or {}), when))

    def disconnect_next(self, n: int = 1, *, when: Predicate | None = None) -> None:
        """The next `n` requests are read and then the connection is closed without any
        answer (the client sees a dropped connection; nothing changes in the state)."""
        self._add(_Rule("disconnect", n, when=when))

    def _add(self, rule: _Rule) -> None:
        if rule.remaining < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._rules.append(rule)

    def pending(self) -> int:
        """How many one-shot faults are still queued."""
        with self._lock:
            return sum(r.remaining for r in self._rules)

    # -- latency and rate limit ----------------------------------------------------------
    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` before answering every request (0 turns it off)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(seconds)

    @property
    def rate_limit(self) -> float | None:
        with self._lock:
            return self._rate_limit

    def set_rate_limit(self, per_second: float | None) -> None:
        """At most `per_second` requests are let through in any one-second window; the rest
        answer 429 with Retry-After. None turns the limit off."""
        with self._lock:
            self._rate_limit = per_second
            self._window.clear()

    def clear(self) -> None:
        """Remove every fault: queued one-shots, latency and the rate limit."""
        with self._lock:
            self._rules.clear()
            self._latency = 0.0
            self._rate_limit = None
            self._window.clear()

    # -- used by the server ------------------------------------------------------------
    def _take(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.when is not None and not rule.when(request):
                    continue
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
                return Fault(
                    rule.kind,
                    rule.status,
                    retry_after_value(rule.retry_after),
                    rule.html,
                    rule.body,
                    dict(rule.headers),
                )
            if self._rate_limit is not None:
                now = time.monotonic()
                while self._window and now - self._window[0] >= 1.0:
                    self._window.popleft()
                if len(self._window) >= self._rate_limit:
                    wait = 1.0 - (now - self._window[0]) if self._window else 1.0
                    return Fault("rate_limit", 429, retry_after_value(wait), False, None, {})
                self._window.append(now)
            return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: many clients may connect at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeServer) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        body = self._read_body()
        record = RecordedRequest(
            method=self.command,
            path=split.path,
            raw_query=split.query,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            time=time.time(),
        )
        response = fake._process(record)
        if response is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class FakeServer:
    """Base of the fakes: `start()`/`stop()` or `with Fake(...) as fake:`; `fake.url`."""

    name: ClassVar[str] = "fake"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self.faults = Faults()
        self._lock = threading.RLock()
        self._log: list[RecordedRequest] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{self.name}-server",
            daemon=True,
        )
        self._thread.start()
        self._on_start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._on_stop()
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:41234."""
        return f"http://{self.host}:{self.port}"

    def _on_start(self) -> None:
        """Hook for subclasses (e.g. background workers)."""

    def _on_stop(self) -> None:
        """Hook for subclasses."""

    # -- request log -------------------------------------------------------------------
    def requests(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        path_prefix: str | None = None,
    ) -> list[RecordedRequest]:
        """A snapshot of the log, oldest first, optionally filtered."""
        with self._lock:
            records = list(self._log)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_prefix is None or r.path.startswith(path_prefix))
        ]

    def request_count(
        self, method: str | None = None, path: str | None = None, *, path_prefix: str | None = None
    ) -> int:
        return len(self.requests(method, path, path_prefix=path_prefix))

    def status_counts(self) -> Counter[int | None]:
        """How many requests were answered with each status (None: dropped connection)."""
        with self._lock:
            return Counter(r.status for r in self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def iter_requests(self) -> Iterator[RecordedRequest]:
        yield from self.requests()

    # -- processing --------------------------------------------------------------------
    def _process(self, record: RecordedRequest) -> Response | None:
        with self._lock:
            self._log.append(record)
        latency = self.faults.latency
        if latency:
            time.sleep(latency)
        try:
            fault = self.faults._take(record)
            if fault is not None:
                record.fault = fault.kind
                if fault.kind == "disconnect":
                    return None
                response = self.fault_response(fault)
            else:
                response = self.handle(record)
        except Exception as exc:  # a bug in the fake or a predicate must not hang the client
            response = Response(
                500, f"fake {self.name} crashed: {exc!r}".encode(), {"Content-Type": "text/plain"}
            )
        record.status = response.status
        return response

    def fault_response(self, fault: Fault) -> Response:
        """Render an injected fault; fakes override `error_body` to answer in their style."""
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers.setdefault("Retry-After", fault.retry_after)
        reason = {
            429: "Too Many Requests",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Temporarily Unavailable",
            504: "Gateway Time-out",
        }.get(fault.status, "Error")
        if fault.body is not None:
            headers.setdefault("Content-Type", "application/octet-stream")
            return Response(fault.status, fault.body, headers)
        if fault.html:
            headers["Content-Type"] = "text/html"
            return Response(fault.status, html_error_page(fault.status, reason), headers)
        response = self.error_body(fault.status, reason, fault.kind)
        response.headers.update(headers)
        return response

    def error_body(self, status: int, reason: str, kind: str) -> Response:
        return Response.json(status, {"error": reason})

    def handle(self, request: RecordedRequest) -> Response:
        raise NotImplementedError


class TokenBucket:
    """A thread-safe token bucket: `rate` tokens a second, at most `burst` stored."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass
class TokenGrant:
    """One access token a fake's OAuth token endpoint issued."""

    token: str
    expires_at: float
    """`time.monotonic()` after which the API answers it as expired."""
    scope: str = ""


class TokenIssuer:
    """The OAuth 2 refresh-token grant of a marketplace (RFC 6749 §6), thread-safe: it
    knows one client (id, secret) and one refresh token, and issues access tokens that
    expire `lifetime` seconds after issue (Amazon LWA: 3600, eBay user tokens: 7200).
    `check(token)` says whether an API request's token is "valid", "expired" or
    "unknown"; `expire(token)` ends a token early (a revoked or clock-skewed token)."""

    def __init__(
        self,
        prefix: str,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        lifetime: float,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        self.prefix = prefix
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.lifetime = lifetime
        self.scopes = scopes
        self._grants: dict[str, TokenGrant] = {}
        self._count = 0
        self._lock = threading.Lock()

    def grant(
        self, client_id: str, client_secret: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """Answer a token request: (HTTP status, JSON body) as RFC 6749 §5.1/§5.2."""
        if client_id != self.client_id or client_secret != self.client_secret:
            return 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed",
            }
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type"}
        if form.get("refresh_token") != self.refresh_token:
            return 400, {
                "error": "invalid_grant",
                "error_description": "The request has an invalid grant parameter : refresh_token",
            }
        asked = set((form.get("scope") or "").split())
        if asked - self.scopes:
            return 400, {
                "error": "invalid_scope",
                "error_description": "The requested scope is invalid, unknown, malformed, or "
                "exceeds the scope granted to the client",
            }
        with self._lock:
            self._count += 1
            token = f"{self.prefix}{self._count}-{uuid.uuid4().hex[:12]}"
            self._grants[token] = TokenGrant(
                token, time.monotonic() + self.lifetime, " ".join(sorted(asked))
            )
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime}

    def check(self, token: str | None) -> str:
        with self._lock:
            grant = self._grants.get(token or "")
        if grant is None:
            return "unknown"
        return "valid" if time.monotonic() < grant.expires_at else "expired"

    def expire(self, token: str | None = None) -> None:
        """End a token (default: every token issued so far) now."""
        with self._lock:
            for grant in self._grants.values():
                if token is None or grant.token == token:
                    grant.expires_at = 0.0

    def issued(self) -> int:
        """How many access tokens were issued."""
        with self._lock:
            return self._count
