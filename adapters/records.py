"""Ledger records that are not inventory facts: issued API tokens and idempotent responses.

They live in the same ledger so that a response and the effect it reports commit in one
transaction: a crash can never leave an effect without its idempotency record.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from atp.streams import Stream


# gc=False (msgspec): immutable values, never part of a reference cycle, so the collector
# need not track them: the writer caches ~100,000 states built of these (issue 12).
class Record(msgspec.Struct, frozen=True, gc=False, tag=True, kw_only=True):
    """Base of service records kept in the ledger."""


class TokenIssued(Record, frozen=True):
    """A token was issued: on its own stream ("token", sha256) and on the token registry."""

    name: str
    scopes: tuple[str, ...]
    token_hash: str
    rate_limit: float | None = None
    """Requests per second this token may make (per API process); None: unlimited."""
    issued_at: datetime | None = None


class TokenRevoked(Record, frozen=True):
    """A token was deleted: refused from then on (same two streams as its TokenIssued)."""

    name: str
    token_hash: str
    revoked_at: datetime


class TokensAdopted(Record, frozen=True):
    """The registry took in the tokens issued before it existed (done once, by `atp migrate`)."""

    count: int


class TokenUsed(Record, frozen=True):
    """A token authenticated a request (recorded at most once an hour per token and process)."""

    at: datetime


class SessionEnded(Record, frozen=True):
    """A planner-page session was signed out (on its stream ("ui-session", id)): its cookie
    is refused from then on, by every process, even a copy taken before."""

    at: datetime


class ResponseRecorded(Record, frozen=True):
    """The response to an idempotent request: replayed for the same key within 24 h."""

    scope: str
    key: str
    request_hash: str
    status_code: int
    body: bytes
    recorded_at: datetime


class IntegrationConfigured(Record, frozen=True):
    """A channel integration (a WooCommerce store, an Amazon or eBay account).

    `settings` holds everything, secrets included: the pushers need them. The API never
    returns the secret fields.
    """

    kind: str
    store: str
    channel: str
    settings: dict[str, object]


class WebhookOrderApplied(Record, frozen=True):
    """The newest snapshot of a channel order applied so far (older ones are skipped)."""

    order_id: str
    modified: str
    status: str
    state: str = ""
    """Digest of the snapshot's desired state (status, lines, unmapped lines, refund ids)."""
    refunds: tuple[int, ...] = ()
    """Ids of the order's refunds the snapshot listed."""
    refunded: dict[str, int] = {}
    """Units per SKU those refunds gave back (fetched from the store)."""
    deliveries: tuple[str, ...] = ()
    """`<delivery id>:<state>` of the deliveries applied with this `modified` time, so a
    redelivery (RabbitMQ after a crash, a proxy retry) of an earlier state in the same
    second is known as such. WooCommerce derives X-WC-Webhook-Delivery-ID from the webhook
    and the second it was sent, so the id alone does not tell two states apart."""


class IntegrationListed(Record, frozen=True):
    """A store registered for the first time (stream `INTEGRATION_INDEX`): what the order
    poller walks, since stream ids cannot be listed."""

    kind: str
    store: str


INTEGRATION_INDEX: Stream = ("integration", "index")
"""The stream listing every integration (no store key has that form: theirs are kind:store)."""


class OrderPollCursor(Record, frozen=True):
    """The newest `date_modified_gmt` (store time) order polling has applied for a store."""

    store: str
    modified: str


class ReconciliationStarted(Record, frozen=True):
    """A reconciliation with an ERP/WMS snapshot began (stream ("reconciliation", id)):
    what it compares and how; `request_hash` tells a retry (same key, same file) from a
    reuse of its key."""

    reconciliation_id: str
    location: str
    as_of: datetime
    source: str
    complete: bool
    apply: bool
    tolerance: int
    request_hash: str
    started_at: datetime


class DriftedLine(msgspec.Struct, frozen=True, gc=False):
    """One drifted SKU of a report (units; see atp.reconcile.ComparedLine): `applied` when
    a correction moved on-hand, by `applied_drift` units (the drift, or less when on-hand
    could only go down to 0); `superseded` when a later snapshot's reconciliation already
    corrected it (never applied, not counted as drift)."""

    sku: str
    ledger_on_hand: int
    snapshot_on_hand: int
    drift: int
    movements_after_as_of: int
    applied: bool
    superseded: bool = False
    applied_drift: int = 0


class ReconciliationLines(Record, frozen=True):
    """One part (`part`, from 0) of the snapshot compared: `compared` SKUs, the drifted
    ones in `lines`. Appended in the transaction that applied its corrections, so the
    report is exactly what was applied."""

    part: int
    compared: int
    lines: tuple[DriftedLine, ...]


class ReconciliationFinished(Record, frozen=True):
    """Every part is recorded; the totals are the sums over the parts."""

    skus_compared: int
    skus_drifted: int
    units_drifted: int
    finished_at: datetime


class ReconciliationListed(Record, frozen=True):
    """A finished reconciliation, on its location's index stream
    ("reconciliation", "location:<code>"), oldest first."""

    reconciliation_id: str
    as_of: datetime
    finished_at: datetime
