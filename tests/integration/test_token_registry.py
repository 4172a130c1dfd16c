"""Tokens issued before the token registry existed enter it once, with unique names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from adapters.records import TokenIssued, TokensAdopted
from api.auth import REGISTRY, active_tokens, adopt_legacy_tokens, token_hash, token_stream
from api.service import Job, Reply, ServiceWorld
from tests.integration.conftest import Backend

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
