"""The token registry and store: tokens issued before the registry existed enter it once,
with unique names; unknown tokens cost a bounded number of lookups."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.ledger import sync_streams
from adapters.records import TokenIssued, TokensAdopted
from api import auth
from api.auth import REGISTRY, active_tokens, adopt_legacy_tokens, token_hash, token_stream
from api.problems import ApiProblem
from api.service import Job, Reply, ServiceWorld
from tests.integration.conftest import Backend, Clock

pytestmark = pytest.mark.integration


def legacy_issue(backend: Backend, name: str, scopes: tuple[str, ...]) -> str:
    """Record a token as the version before the registry did: on its own stream only."""
    token = f"atp_legacy_{name}_{len(scopes)}_{id(scopes)}"
    digest = token_hash(token)

    def decide(_: ServiceWorld, __: datetime) -> list[tuple[Any, Any]]:
        record = TokenIssued(name=name, scopes=scopes, token_hash=digest)
        return [(token_stream(digest), record)]

    backend.service().run_sync(Job(decide, lambda _: Reply(201, b""), "legacy"))
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


def test_unknown_tokens_past_the_burst_cost_no_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Story: one address scans tokens while another shop's feed works normally.

    Invariant: the scanner's lookups stop at its burst (5 at 1/s): every later unknown token
    is a 429 without a ledger query; another address is unaffected; the map of addresses
    stays within its bound however many addresses there are."""
    backend = Backend(None, tmp_path, Clock())
    ledger = backend.ledger()
    lookups: list[object] = []

    def counting(*args: Any) -> Any:
        lookups.append(args)
        return sync_streams(*args)

    monkeypatch.setattr(auth, "sync_streams", counting)
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
