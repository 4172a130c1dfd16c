"""Bearer tokens with scopes. Tokens are stored hashed (sha256) in the ledger, never logged.

A token's identity is its sha256 (`Principal.key`): idempotency keys and rate-limit buckets
are scoped by it, never by the token's name. A process re-reads a token's stream from the
ledger (one indexed query from the cached version) once its last read is CHECK_SECONDS old,
and a deletion answers only after CHECK_SECONDS, so a deleted token is refused by every
worker process from the deletion's answer on. Unknown tokens are rate-limited per client
address before they cost a query.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TTLCache

from adapters.ledger import Ledger, sync_streams
from api.http.problems import ApiProblem
from api.service.tokens import (
    ADMIN,
    ADMIN_IDENTITY,
    USE_RESOLUTION,
    Principal,
    principal_of,
    token_stream,
)

log = logging.getLogger("atp.auth")

MAX_TOKEN_LENGTH = 512
CACHE_SIZE = 10_000
"""Bound of every per-process map keyed by client input (tokens, addresses)."""
CHECK_SECONDS = 1.0
"""A process re-reads a token's ledger stream at most this long after its last read began;
`DELETE /v1/tokens/{name}` answers this long after the revocation committed, so from its
answer on every process (on any host) refuses the token."""


class TokenBucket:
    """`rate` requests per second with a burst of `burst` (default: one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate if burst is None else burst)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def wait(self) -> float:
        """0 if a request may go now, else the seconds until it may (takes nothing)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> float:
        """0 if a request may go now (and counts it), else the seconds until it may."""
        wait = self.wait()
        if wait == 0:
            self.tokens -= 1
        return wait


@dataclass(frozen=True)
class _Check:
    """What the ledger said about a token: its stream, and when the read started."""

    records: list[Any]
    version: int
    principal: Principal | None
    started: float
    """time.monotonic() before the read: the answer is used until CHECK_SECONDS after it."""


class TokenStore:
    """Resolves presented tokens against the ledger; bounded per-process state.

    `unknown_rate`: unknown-token answers allowed per second per client address (burst of
    five seconds' worth); past it, 429 before any ledger query. `record_use(principal)`, if
    given, is called (at most once per USE_RESOLUTION per token) to record a use.
    """

    def __init__(
        self,
        ledger: Ledger,
        admin_token: str | None,
        unknown_rate: float = 10.0,
        record_use: Callable[[Principal], None] | None = None,
    ) -> None:
        self.ledger = ledger
        # One identity whatever its value: a rotated ATP_ADMIN_TOKEN replays its answers.
        self.admin = (
            Principal(ADMIN, frozenset({ADMIN}), None, ADMIN_IDENTITY) if admin_token else None
        )
        self.admin_token = admin_token.encode() if admin_token else b""
        self.unknown_rate = unknown_rate
        self.record_use = record_use
        self.checks: LRUCache[str, _Check] = LRUCache(CACHE_SIZE)
        self.buckets: LRUCache[str, TokenBucket] = LRUCache(CACHE_SIZE)
        self.failures: TTLCache[str, TokenBucket] = TTLCache(CACHE_SIZE, ttl=60)
        self.noted: LRUCache[str, float] = LRUCache(CACHE_SIZE)

    def throttle(self, principal: Principal) -> float:
        """Seconds the caller must wait (0: go ahead) under the token's rate limit."""
        if principal.rate_limit is None:
            return 0.0
        bucket = self.buckets.get(principal.key)
        if bucket is None or bucket.rate != principal.rate_limit:
            bucket = self.buckets[principal.key] = TokenBucket(principal.rate_limit)
        return bucket.take()

    def _failure_bucket(self, address: str) -> TokenBucket | None:
        if self.unknown_rate <= 0:
            return None
        bucket = self.failures.get(address)
        if bucket is None:
            bucket = self.failures[address] = TokenBucket(self.unknown_rate, 5 * self.unknown_rate)
        return bucket

    async def resolve(self, token: str, address: str = "") -> Principal | None:
        """The token's principal, or None if it is unknown or revoked.

        Raises ApiProblem 429 (with Retry-After) when `address` sent too many unknown tokens.
        """
        raw = token.encode()
        if self.admin is not None and hmac.compare_digest(raw, self.admin_token):
            return self.admin
        digest = hashlib.sha256(raw).hexdigest()
        now = time.monotonic()
        check = self.checks.get(digest)
        fresh = check is not None and now - check.started < CHECK_SECONDS
        if fresh and check is not None and check.principal is not None:
            self._note_use(check.principal)
            return check.principal
        bucket = None
        if check is None or check.principal is None:
            bucket = self._failure_bucket(address)
            if bucket is not None and (wait := bucket.wait()) > 0:
                raise ApiProblem(
                    429,
                    "rate-limited",
                    "too many unknown tokens from this address",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if not fresh:
            stream = token_stream(digest)
            known = None if check is None else (check.records, check.version)
            try:
                records, version = (
                    await asyncio.to_thread(sync_streams, self.ledger, {stream: known})
                )[stream]
            except Exception:
                if check is None or check.principal is None:
                    raise  # unknown here: the ledger's outage is the answer (503)
                # The ledger is unreachable, so nothing can be revoked meanwhile either: a
                # token valid at its last check keeps reading (storefronts keep their figures).
                log.warning("token check without the ledger: using the last answer")
                return check.principal
            check = _Check(records, version, principal_of(records, digest), now)
            if version:
                self.checks[digest] = check
        assert check is not None
        if check.principal is None:
            if bucket is not None:
                bucket.take()
            return None
        self._note_use(check.principal)
        return check.principal

    def _note_use(self, principal: Principal) -> None:
        if self.record_use is None:
            return
        now = time.monotonic()
        last = self.noted.get(principal.key)
        if last is None or now - last >= USE_RESOLUTION.total_seconds():
            self.noted[principal.key] = now
            self.record_use(principal)


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    headers: Iterable[tuple[bytes, bytes]],
    store: TokenStore,
    scopes: tuple[str, ...],
    address: str = "",
) -> Principal:
    """401 without a known bearer token, 403 without one of `scopes`, 429 past its limit
    (or past the address's limit of unknown tokens)."""
    header = b""
    for name, value in headers:
        if name == b"authorization":
            header = value
            break
    scheme, _, raw = header.decode("latin-1").partition(" ")
    token = raw.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("a bearer token is required")
    # atp's tokens are printable ASCII: anything else is unknown without a lookup.
    if len(token) > MAX_TOKEN_LENGTH or not (token.isascii() and token.isprintable()):
        raise _unauthorized("unknown token")
    principal = await store.resolve(token, address)
    if principal is None:
        raise _unauthorized("unknown token")
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
