"""What every channel pusher shares: the client interface, per-SKU outcomes, the per-store
rate limit and the HTTP transport that classifies failures.

A channel is one module with a `ChannelClient` (read the store's figures, write a batch of
figures and say per SKU what happened) and a `create(record, hooks)` factory; the runner
(`adapters.pushers.runner`) does everything else: consuming, coalescing, batching, retries
with backoff, dead-lettering, reconciliation and metrics.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

log = logging.getLogger("atp.push")

MAX_RETRY_AFTER = 300.0
"""A Retry-After longer than this is treated as this (a bogus header must not park us)."""


# --- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    """The channel accepted the figure."""


@dataclass(frozen=True)
class Retry:
    """A transient failure (429, 5xx, timeout, dropped connection): try again later."""

    reason: str
    after: float | None = None
    """Seconds the channel asked us to wait (Retry-After), if it said."""
    wait: bool = False
    """The channel cannot take the figure until a condition passes that retrying cannot
    speed up (refused credentials, a daily limit): retried after `after`, never counted
    towards the attempts that dead-letter a figure."""


@dataclass(frozen=True)
class Permanent:
    """The channel will not take this figure as sent (unknown SKU, invalid value...)."""

    reason: str


@dataclass(frozen=True)
class Skip:
    """The figure must not be written to this channel (a SKU not listed on Amazon, an
    FBA listing whose quantity Amazon keeps): acknowledged, counted and logged, never
    retried or dead-lettered."""

    reason: str


Outcome = Ok | Retry | Permanent | Skip
OK = Ok()


@dataclass
class PushResult:
    """Per-SKU outcome of one `push`; a SKU left out counts as a retryable failure."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def ok(self, skus: Iterable[str]) -> None:
        for sku in skus:
            self.outcomes[sku] = OK

    def retry(
        self, skus: Iterable[str], reason: str, after: float | None = None, wait: bool = False
    ) -> None:
        for sku in skus:
            self.outcomes[sku] = Retry(reason, after, wait)

    def permanent(self, skus: Iterable[str], reason: str) -> None:
        for sku in skus:
            self.outcomes[sku] = Permanent(reason)

    def skip(self, skus: Iterable[str], reason: str) -> None:
        for sku in skus:
            self.outcomes[sku] = Skip(reason)

    def failed(self, skus: Iterable[str], error: Exception) -> None:
        """Record a whole-request failure for these SKUs."""
        if isinstance(error, RetryableError):
            self.retry(skus, error.reason, error.retry_after, error.wait)
        else:
            self.permanent(skus, str(error))

    def get(self, sku: str) -> Outcome:
        return self.outcomes.get(sku) or Retry("no answer for this SKU")

    def __contains__(self, sku: object) -> bool:
        return sku in self.outcomes


class RetryableError(Exception):
    """A whole request failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None, wait: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.wait = wait
        """See `Retry.wait`."""


class PermanentError(Exception):
    """A whole request was refused in a way retrying will not fix."""


# --- the interface ------------------------------------------------------------------------------


class ChannelClient(Protocol):
    """One store or account of one channel kind."""

    kind: str

    @property
    def max_batch(self) -> int:
        """The most SKUs the runner hands to one `push`."""
        ...

    async def current(self, skus: Sequence[str]) -> dict[str, int | None]:
        """The store's figures of these SKUs: a SKU the store does not have is left out;
        None means the store has it but does not track a quantity. Raises RetryableError
        (or PermanentError) when the store cannot be read."""
        ...

    async def push(self, figures: Mapping[str, int]) -> PushResult:
        """Write these figures; never raises for a failure of the channel, reports it per
        SKU instead. Writes are absolute (set the quantity), so a retry is harmless."""
        ...

    async def aclose(self) -> None: ...


RequestHook = Callable[[str], None]
"""Called once per HTTP request with its status ("200", "429", "timeout", "error")."""
EventHook = Callable[[str, Mapping[str, str]], None]
"""Called with a counter name of the pusher metrics and extra labels (e.g.
("channel_issues", {"severity": "ERROR"}))."""


@dataclass
class ClientHooks:
    """What the runner gives a client factory besides the integration settings."""

    on_request: RequestHook | None = None
    on_event: EventHook | None = None
    redis: Any = None
    """An asyncio Redis client when the service runs with Redis (for shared memories)."""
    redis_prefix: str = "atp"
    http_timeout: float = 10.0
    rate_burst: int = 1
    transport: httpx.AsyncBaseTransport | None = None


# --- rate limit and transport ---------------------------------------------------------------------


class RateLimiter:
    """A token bucket per store: `rate` requests a second, `burst` at once (default 1: evenly
    spaced, so no one-second window ever sees more than `rate` requests). `pause` holds every
    request back until a Retry-After has passed."""

    SAFETY = 1.02
    """Space requests 2% wider than the rate, so network jitter never makes the server see
    more than `rate` requests in a window."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._tokens = float(self.burst)
        self._at = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                rate = self.rate / self.SAFETY
                self._tokens = min(self.burst, self._tokens + (now - self._at) * rate)
                self._at = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / rate)


GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""
"""The generic cell rate algorithm on one Redis key (times in microseconds, Redis's own
clock): 0 when a request may go now, else the microseconds to wait."""


class SharedRateLimiter(RateLimiter):
    """A rate limit shared through Redis by every process that uses the same key (several
    atp stores on one Amazon seller share the seller's quota). If Redis cannot be reached,
    it falls back to this process's own bucket."""

    SHARED_SAFETY = 1.1
    """Wider than `SAFETY`: a permit comes from Redis, and the time from the permit to the
    request leaving varies more than a local sleep does."""

    def __init__(self, rate: float, burst: int, client: Any, key: str) -> None:
        super().__init__(rate, burst)
        self.key = key
        self._script = client.register_script(GCRA)

    async def acquire(self) -> None:
        interval = 1_000_000 * self.SHARED_SAFETY / self.rate
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            try:
                wait = int(await self._script(keys=[self.key], args=[interval, self.burst]))
            except Exception as exc:  # Redis down: limit this process at least
                log.warning("shared rate limit %s unavailable (%s); local only", self.key, exc)
                await super().acquire()
                return
            if wait <= 0:
                return
            await asyncio.sleep(wait / 1_000_000)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP-date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class Http:
    """httpx.AsyncClient behind the store's rate limit. Every request is counted; 429, 408,
    5xx, timeouts and dropped connections raise RetryableError (a Retry-After pauses the
    whole store); any other answer is returned for the channel's own interpretation."""

    def __init__(
        self,
        base_url: str,
        *,
        rate: float,
        hooks: ClientHooks,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.limiter = limiter or RateLimiter(rate, hooks.rate_burst)
        self.on_request = hooks.on_request
        kwargs: dict[str, Any] = {}
        if hooks.transport is not None:
            kwargs["transport"] = hooks.transport
        self.client = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            headers=dict(headers or {}),
            timeout=hooks.http_timeout,
            follow_redirects=False,
            **kwargs,
        )

    def _count(self, label: str) -> None:
        if self.on_request is not None:
            self.on_request(label)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        await self.limiter.acquire()
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            self._count("timeout")
            raise RetryableError(f"{method} {url}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self._count("error")
            raise RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        self._count(str(status))
        if status == 429 or status == 408 or status >= 500:
            after = parse_retry_after(response.headers.get("Retry-After"))
            if after:
                self.limiter.pause(after)
            raise RetryableError(f"{method} {url}: HTTP {status}", after)
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


def error_summary(response: httpx.Response, limit: int = 300) -> str:
    """A short description of an error answer, for logs and dead-letter reasons."""
    return f"HTTP {response.status_code}: {response.text[:limit]}"


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --- backoff ------------------------------------------------------------------------------------


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    jitter: float | None = None,
) -> float:
    """Exponential backoff with jitter for the `attempt`-th failure (1-based): a random
    delay in [half, all] of min(cap, base * 2^(attempt-1)); never less than Retry-After.
    `jitter` (0..1) fixes the random part, so SKUs that failed together retry together."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    delay = ceiling * (0.5 + 0.5 * (random.random() if jitter is None else jitter))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), max(1, size)):
        yield list(items[i : i + size])
