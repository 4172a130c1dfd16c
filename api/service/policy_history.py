"""Who changed which policy: the ledger's policies stream folded from its start, so each
change carries the policy before and after it, and the token name its metadata records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from adapters.ledger import Ledger, history
from atp import events as ev
from atp.decide import POLICIES
from atp.state import GLOBAL, Policies, evolve_policies


class PolicyChangeEntry(msgspec.Struct, frozen=True):
    """One policy change from the ledger's policies stream: when (`occurred_at`, UTC), who
    (`token_name`; None for changes recorded before atp kept it, or made by atp itself),
    what (`kind` location, channel or safety_stock, and its `code`: the location or
    channel code, or the location of a safety-stock rule, None for the global rule) and
    the policy `before` (None: it did not exist) and `after`."""

    position: int
    occurred_at: datetime
    token_name: str | None
    correlation_id: str | None
    kind: Literal["location", "channel", "safety_stock"]
    code: str | None
    before: dict[str, Any] | None
    after: dict[str, Any]


class PolicyHistoryPage(msgspec.Struct, frozen=True):
    """Policy changes, newest first."""

    items: list[PolicyChangeEntry]
    next_cursor: str | None


def policy_changes(ledger: Ledger, page: int = 1000) -> list[PolicyChangeEntry]:
    """Every change of the ledger's policies stream, newest first, with the policy before
    and after it (the stream folded from its start)."""
    entries: list[PolicyChangeEntry] = []
    policies = Policies()
    after = 0
    while rows := history(ledger, [POLICIES], after, page):
        for row in rows:
            event = row.event
            assert isinstance(event, ev.PolicyEvent)
            kind, code, was = _policy_before(policies, event)
            policies = evolve_policies(policies, event)
            _, _, now_is = _policy_before(policies, event)
            assert now_is is not None
            entries.append(
                PolicyChangeEntry(
                    position=row.position,
                    occurred_at=row.occurred_at,
                    token_name=row.metadata.get("token_name"),
                    correlation_id=row.metadata.get("correlation_id"),
                    kind=kind,
                    code=code,
                    before=was,
                    after=now_is,
                )
            )
        after = rows[-1].position
    entries.reverse()
    return entries


def _policy_before(
    policies: Policies, event: ev.PolicyEvent
) -> tuple[Literal["location", "channel", "safety_stock"], str | None, dict[str, Any] | None]:
    """(kind, code, the policy `event` changes as it is in `policies`, or None)."""
    match event:
        case ev.LocationDefined(code=code):
            found = policies.locations.get(code)
            return "location", code, msgspec.to_builtins(found) if found else None
        case ev.ChannelDefined(code=code):
            channel = policies.channels.get(code)
            return "channel", code, msgspec.to_builtins(channel) if channel else None
        case ev.SafetyStockSet(location=location):
            quantity = policies.safety_stock.get(location or GLOBAL, 0)
            return "safety_stock", location, {"location": location, "quantity": quantity}
    raise AssertionError(event)  # pragma: no cover - PolicyEvent is exhaustive
