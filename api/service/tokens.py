"""The token registry: issuing and revoking bearer tokens, recording their use, adopting
tokens issued before the registry existed. Tokens are stored hashed (sha256), never plain.

Deciders here run in the command service (api.service.commands); the HTTP layer
(api.http.auth) authenticates requests against what they record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from cryptography.fernet import Fernet
from eventsourcing.utils import get_topic

from adapters.ledger import Ledger, StreamKey, decode_payload, stream_id
from adapters.records import TokenIssued, TokenRevoked, TokensAdopted, TokenUsed
from adapters.sealing import fernet_for
from api.log import correlation_id
from api.service.commands import CommandService, Decision, Job, Result, ServiceWorld, decider
from atp.errors import AlreadyExists, NotFound

log = logging.getLogger("atp.auth")

ADMIN = "admin"
RESERVED_NAMES = frozenset({ADMIN})
"""Token names no issued token may take (`admin` is the ATP_ADMIN_TOKEN principal)."""
REGISTRY: StreamKey = ("tokens", "registry")
"""Every TokenIssued and TokenRevoked, in order: names, listing and deletion by name."""
ADMIN_IDENTITY = "ATP_ADMIN_TOKEN"
"""The bootstrap admin's `Principal.key` (issued tokens' keys are sha256 hex: never equal)."""
USE_RESOLUTION = timedelta(hours=1)
"""`last_used_at` is recorded at most this often per token and process."""


def token_stream(digest: str) -> StreamKey:
    """The stream of one token, by its sha256 hex digest."""
    return ("token", digest)


def use_stream(digest: str) -> StreamKey:
    """The stream where a token's uses are recorded (at most one per USE_RESOLUTION)."""
    return ("token-use", digest)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's name, scopes, rate limit and `key` (its
    sha256, or ADMIN_IDENTITY for ATP_ADMIN_TOKEN)."""

    name: str
    scopes: frozenset[str]
    rate_limit: float | None = None
    key: str = ""
    """The token's sha256: its identity (idempotency scope, rate-limit bucket)."""

    def allows(self, scope: str) -> bool:
        """Whether the principal holds `scope`."""
        return ADMIN in self.scopes or scope in self.scopes


def token_hash(token: str) -> str:
    """The sha256 hex digest of a token: what the ledger keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A random token: "atp_" and 43 URL-safe characters (256 bits)."""
    return "atp_" + secrets.token_urlsafe(32)


def sealer(secret: bytes, purpose: bytes) -> Fernet:
    """A Fernet keyed for one purpose from the server secret (adapters.sealing.fernet_for)."""
    return fernet_for(secret, purpose)


def active_tokens(registry: list[Any]) -> dict[str, TokenIssued]:
    """Name -> its TokenIssued, for tokens issued and not revoked, from the registry's records."""
    active: dict[str, TokenIssued] = {}
    for record in registry:
        if isinstance(record, TokenIssued):
            active[record.name] = record
        elif isinstance(record, TokenRevoked) and (
            (issued := active.get(record.name)) is not None
            and issued.token_hash == record.token_hash
        ):
            del active[record.name]
    return active


def principal_of(records: list[Any], digest: str) -> Principal | None:
    """The principal a token stream grants: its latest TokenIssued, unless revoked since."""
    principal = None
    for record in records:
        if isinstance(record, TokenIssued):
            principal = Principal(record.name, frozenset(record.scopes), record.rate_limit, digest)
        elif isinstance(record, TokenRevoked):
            principal = None
    return principal


@dataclass(frozen=True)
class IssueToken:
    """Decides issuing a token: `name` unique among live tokens (AlreadyExists), the
    token's sha256 `token_hash`, its `scopes` and requests-per-second `rate_limit`. Records
    TokenIssued on the token's stream and the registry."""

    name: str
    scopes: tuple[str, ...]
    token_hash: str
    rate_limit: float | None = None
    reads: Sequence[StreamKey] = (REGISTRY,)
    fresh: Sequence[StreamKey] = ()
    likely_new: Sequence[StreamKey] = ()

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision:
        if self.name in active_tokens(world.records(REGISTRY)):
            raise AlreadyExists("token", self.name)
        issued = TokenIssued(
            name=self.name,
            scopes=self.scopes,
            token_hash=self.token_hash,
            rate_limit=self.rate_limit,
            issued_at=now,
        )
        return [(token_stream(self.token_hash), issued), (REGISTRY, issued)]


@dataclass(frozen=True)
class RevokeToken:
    """Decides revoking the live token `name` (NotFound when there is none): records
    TokenRevoked on its stream and the registry."""

    name: str
    reads: Sequence[StreamKey] = (REGISTRY,)
    fresh: Sequence[StreamKey] = ()
    likely_new: Sequence[StreamKey] = ()

    def __call__(self, world: ServiceWorld, now: datetime, /) -> Decision:
        issued = active_tokens(world.records(REGISTRY)).get(self.name)
        if issued is None:
            raise NotFound("token", self.name)
        revoked = TokenRevoked(name=self.name, token_hash=issued.token_hash, revoked_at=now)
        return [(token_stream(issued.token_hash), revoked), (REGISTRY, revoked)]


def revoked_last(world: ServiceWorld) -> TokenRevoked:
    """The revocation RevokeToken just recorded (the registry's last record)."""
    revoked = world.records(REGISTRY)[-1]
    assert isinstance(revoked, TokenRevoked)
    return revoked


def use_recorder(service: CommandService) -> Callable[[Principal], None]:
    """`record_use` for a TokenStore: records TokenUsed in the background (never delays the
    request; at most one per token per USE_RESOLUTION, whichever process sees it first)."""
    pending: set[asyncio.Future[Result]] = set()

    def finished(task: asyncio.Future[Result]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not record a token's use: %r", task.exception())

    def record(principal: Principal) -> None:
        stream = use_stream(principal.key)

        def decide(world: ServiceWorld, now: datetime) -> list[tuple[Any, Any]]:
            last = last_use(world.records(stream))
            if last is not None and now - last < USE_RESOLUTION:
                return []
            return [(stream, TokenUsed(at=now))]

        job = Job(decider(decide, reads=[stream]), correlation_id.get())
        task = asyncio.ensure_future(service.submit(job))
        pending.add(task)
        task.add_done_callback(finished)

    return record


def adopt_legacy_tokens(ledger: Ledger) -> int:
    """Enter tokens issued before the registry existed into it, once; returns how many.

    Such tokens have only their own ("token", sha256) stream, found here by the topic of
    their TokenIssued in the notification log (a full scan, skipped once TokensAdopted is
    recorded; an empty ledger needs none). Names were not unique then: a name already live, or `admin`, is entered as
    "name#<first 8 hex of the hash>", so every token can be listed and deleted by name.
    """
    registry, _ = ledger.load(REGISTRY)
    if ledger.head() == 0 or any(isinstance(r, TokensAdopted) for r in registry):
        return 0  # a new ledger has nothing to adopt
    registry_id = str(stream_id(REGISTRY))
    found: list[tuple[TokenIssued, datetime]] = []
    start = 1
    while batch := ledger.recorder.select_notifications(
        start, 1000, topics=[get_topic(TokenIssued)]
    ):
        for notification in batch:
            if str(notification.originator_id) != registry_id:
                record, occurred_at, _ = decode_payload(notification.topic, notification.state)
                assert isinstance(record, TokenIssued)
                found.append((record, occurred_at))
        start = batch[-1].id + 1
    adopted: list[TokenIssued] = []

    def decide(world: ServiceWorld, _: datetime) -> list[tuple[Any, Any]]:
        adopted.clear()
        records = world.records(REGISTRY)
        if any(isinstance(r, TokensAdopted) for r in records):
            return []
        known = {r.token_hash for r in records if isinstance(r, TokenIssued)}
        names = set(active_tokens(records))
        for record, occurred_at in found:
            if record.token_hash in known:
                continue
            name = record.name
            if name in names or name.lower() in RESERVED_NAMES:
                name = f"{name}#{record.token_hash[:8]}"
            names.add(name)
            known.add(record.token_hash)
            adopted.append(msgspec.structs.replace(record, name=name, issued_at=occurred_at))
        marker = TokensAdopted(count=len(adopted))
        return [(REGISTRY, r) for r in adopted] + [(REGISTRY, marker)]

    service = CommandService(ledger)
    service.start()
    try:
        service.run_sync(Job(decider(decide, reads=[REGISTRY]), "adopt-tokens"))
    finally:
        service.stop()
    return len(adopted)


def last_use(records: list[Any]) -> datetime | None:
    """When a token-use stream says the token was last used (to within USE_RESOLUTION)."""
    uses = [r.at for r in records if isinstance(r, TokenUsed)]
    return max(uses) if uses else None
