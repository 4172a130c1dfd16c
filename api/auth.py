"""Bearer tokens with scopes. Tokens are stored hashed (sha256) in the ledger, never logged."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass

from litestar.types import ASGIApp, Receive, Scope, Send

from adapters.ledger import Ledger
from adapters.records import TokenIssued
from api.problems import ApiProblem

ADMIN = "admin"
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    rate_limit: float | None = None
    key: str = ""
    """The token's sha256: keys its rate-limit bucket."""

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(secret: bytes, derive_from: str | None) -> str:
    """A random token, or (for an idempotent request) one derived from its key and body."""
    if derive_from is None:
        return "atp_" + secrets.token_urlsafe(32)
    digest = hmac.new(secret, derive_from.encode(), hashlib.sha256).digest()
    return "atp_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


class TokenBucket:
    """`rate` requests per second with a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a request may go now, else the seconds until it may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class TokenStore:
    """Resolves presented tokens; positive answers are cached briefly per process."""

    def __init__(self, ledger: Ledger, admin_token: str | None) -> None:
        self.ledger = ledger
        self.admin_token = admin_token
        self.cache: dict[str, tuple[float, Principal | None]] = {}
        self.buckets: dict[str, TokenBucket] = {}

    def throttle(self, principal: Principal) -> float:
        """Seconds the caller must wait (0: go ahead) under the token's rate limit."""
        if principal.rate_limit is None:
            return 0.0
        bucket = self.buckets.get(principal.key)
        if bucket is None or bucket.rate != principal.rate_limit:
            bucket = self.buckets[principal.key] = TokenBucket(principal.rate_limit)
        return bucket.take()

    async def resolve(self, token: str) -> Principal | None:
        if self.admin_token and hmac.compare_digest(token, self.admin_token):
            return Principal("admin", frozenset({ADMIN}))
        digest = token_hash(token)
        cached = self.cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        records, _ = await asyncio.to_thread(self.ledger.load, ("token", digest))
        principal = None
        for record in records:
            if isinstance(record, TokenIssued):
                principal = Principal(
                    record.name, frozenset(record.scopes), record.rate_limit, digest
                )
        if principal is not None:
            self.cache[digest] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal


async def authenticate(
    headers: list[tuple[bytes, bytes]], store: TokenStore, scopes: tuple[str, ...]
) -> Principal:
    """401 without a known bearer token, 403 without one of `scopes`, 429 past its limit."""
    header = b""
    for name, value in headers:
        if name == b"authorization":
            header = value
            break
    scheme, _, raw = header.decode("latin-1").partition(" ")
    token = raw.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiProblem(
            401,
            "unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await store.resolve(token)
    if principal is None:
        raise ApiProblem(
            401, "unauthorized", "unknown token", headers={"WWW-Authenticate": "Bearer"}
        )
    if scopes and not any(principal.allows(s) for s in scopes):
        raise ApiProblem(
            403,
            "forbidden",
            f"this token lacks the scope {' or '.join(scopes)}",
            required_scopes=list(scopes),
        )
    wait = store.throttle(principal)
    if wait > 0:
        raise ApiProblem(
            429,
            "rate-limited",
            f"this token may make {principal.rate_limit:g} request(s) per second",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return principal


def auth_middleware(app: ASGIApp) -> ASGIApp:
    """Authenticates every /v1 route but the public ones (a middleware, not a guard: it runs
    after routing, so it knows the route's scopes, without a guard's per-request cost)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            handler = scope.get("route_handler")  # type: ignore[typeddict-item]
            opt = handler.opt if handler is not None else {}
            if not opt.get("public"):
                store: TokenStore = scope["app"].state.tokens
                principal = await authenticate(scope["headers"], store, opt.get("scopes", ()))
                scope["state"]["principal"] = principal  # type: ignore[typeddict-item]
        await app(scope, receive, send)

    return middleware
