"""Stream keys: every stream the ledger holds is named by a (kind, key) pair.

The domain decides on five kinds; the service keeps its own records (tokens, idempotency,
integrations, webhook orders) in streams of the same shape, so one type names them all.
"""

from __future__ import annotations

from typing import Literal

DomainKind = Literal["policies", "item", "order", "reservation", "transfer"]
"""Kinds of stream the domain decides on and folds (`atp.world.evolve`)."""

RecordKind = Literal[
    "token",
    "token-use",
    "tokens",
    "idempotency",
    "integration",
    "webhook-order",
    "order-poll",
    "reconciliation",
    "ui-session",
]
"""Kinds of stream holding the service's own records (`adapters.records`), never decided on."""

StreamKind = DomainKind | RecordKind

Stream = tuple[StreamKind, str]
"""A stream in the ledger: ("item", sku), ("order", order_id), ("policies", "global"),
("token", sha256) ..."""

POLICIES: Stream = ("policies", "global")
"""The one stream of policies: locations, channels and safety stock."""
