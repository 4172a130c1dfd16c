"""The token registry and store: tokens issued before the registry existed enter it once,
with unique names; unknown tokens cost a bounded number of lookups."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.ledger import sync_streams
from adapters.records import TokenIssued, TokenRevoked, TokensAdopted
from api.http import auth
from api.http.problems import ApiProblem
from api.service.commands import Job, ServiceWorld, decider
from api.service.tokens import (
    REGISTRY,
    Principal,
    active_tokens,
    adopt_legacy_tokens,
    token_hash,
    token_stream,
)
from tests.integration.conftest import Backend, Clock

pytestmark = pytest.mark.integration


def legacy_issue(backend: Backend, name: str, scopes: tuple[str, ...]) -> str:
    """Record a token as the version before the registry did: on its own stream only."""
    return legacy_issue_token(
        backend, f"atp_legacy_{name}_{len(scopes)}_{id(scopes)}", name, scopes
    )


def legacy_issue_token(
    backend: Backend, token: str, name: str, scopes: tuple[str, ...] = ("availability:read",)
) -> str:
    digest = token_hash(token)

    def decide(_: ServiceWorld, __: datetime) -> list[tuple[Any, Any]]:
        record = TokenIssued(name=name, scopes=scopes, token_hash=digest)
        return [(token_stream(digest), record)]

    backend.service().run_sync(Job(decider(decide), "legacy"))
    return digest


def test_an_upgraded_ledgers_tokens_can_be_listed_and_deleted_by_name(backend: Backend) -> None:
    """Story: a retailer upgrades from the version where names were not unique; it had issued
    two tokens named `shop` and a reservations token named `admin`.

    Invariant: after `atp migrate` every old token is live in the registry under a unique
    name (`admin` never), with its scopes; a second migrate adopts nothing and writes
    nothing; an empty ledger gets no record at all."""
    ledger = backend.ledger()
    try:
        assert adopt_legacy_tokens(ledger) == 0
        assert ledger.head() == 0
    finally:
        ledger.close()
    first = legacy_issue(backend, "shop", ("availability:read",))
    second = legacy_issue(backend, "shop", ("availability:read", "reservations:write"))
    impostor = legacy_issue(backend, "admin", ("reservations:write",))
    ledger = backend.ledger()
    try:
        assert adopt_legacy_tokens(ledger) == 3
        head = ledger.head()
        registry, _ = ledger.load(REGISTRY)
        live = active_tokens(registry)
        assert {name: t.token_hash for name, t in live.items()} == {
            "shop": first,
            f"shop#{second[:8]}": second,
            f"admin#{impostor[:8]}": impostor,
        }
        assert live[f"admin#{impostor[:8]}"].scopes == ("reservations:write",)
        assert all(t.issued_at is not None for t in live.values())
        assert sum(isinstance(r, TokensAdopted) for r in registry) == 1
        assert adopt_legacy_tokens(ledger) == 0
        assert ledger.head() == head
    finally:
        ledger.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ledger read the token store makes (counted, then done for real)."""
    calls: list[object] = []

    def counting(*args: Any) -> Any:
        calls.append(args)
        return sync_streams(*args)

    monkeypatch.setattr(auth, "sync_streams", counting)
    return calls


def test_unknown_tokens_past_the_burst_cost_no_lookup(
    tmp_path: Path, lookups: list[object]
) -> None:
    """Story: one address scans tokens while another shop's feed works normally.

    Invariant: the scanner's lookups stop at its burst (5 at 1/s): every later unknown token
    is a 429 without a ledger query; another address is unaffected; the map of addresses
    stays within its bound however many addresses there are."""
    backend = Backend(None, tmp_path, Clock())
    ledger = backend.ledger()
    store = auth.TokenStore(ledger, "admin-token", unknown_rate=1)

    async def scan() -> list[int]:
        statuses = []
        for i in range(15):
            try:
                statuses.append(200 if await store.resolve(f"atp_guess{i}", "10.0.0.1") else 401)
            except ApiProblem as problem:
                assert problem.status == 429 and int(problem.headers["Retry-After"]) >= 1
                statuses.append(429)
        return statuses

    try:
        statuses = asyncio.run(scan())
        assert statuses == [401] * 5 + [429] * 10
        assert len(lookups) == 5
        assert asyncio.run(store.resolve("atp_other", "10.0.0.2")) is None
        assert len(lookups) == 6

        async def many_addresses() -> None:
            for i in range(auth.CACHE_SIZE + 500):
                store._failure_bucket(f"10.1.{i // 256}.{i % 256}")

        asyncio.run(many_addresses())
        assert len(store.failures) <= auth.CACHE_SIZE
    finally:
        ledger.close()
        backend.close()


def test_a_busy_token_costs_one_lookup_a_second_per_process(
    backend: Backend, lookups: list[object]
) -> None:
    """Story: a storefront polls availability hundreds of times a second with one token.
    Invariant: its process reads the token's stream from the ledger at most once per
    CHECK_SECONDS; a revocation is seen by the first check after it."""
    token = "atp_legacy_feed_1_x"
    digest = legacy_issue_token(backend, token, "feed")
    ledger = backend.ledger()
    store = auth.TokenStore(ledger, None)

    async def poll(n: int) -> list[Principal | None]:
        return [await store.resolve(token, "10.0.0.1") for _ in range(n)]

    try:
        answers = asyncio.run(poll(200))
        assert all(p is not None and p.key == digest for p in answers)
        assert len(lookups) == 1
        revoke = TokenRevoked(name="feed", token_hash=digest, revoked_at=backend.clock.now)

        def decide(_: ServiceWorld, __: datetime) -> list[tuple[Any, Any]]:
            return [(token_stream(digest), revoke)]

        backend.service().run_sync(Job(decider(decide), "revoke"))
        time.sleep(auth.CHECK_SECONDS)
        assert asyncio.run(poll(1)) == [None]
        assert len(lookups) == 2
    finally:
        ledger.close()
