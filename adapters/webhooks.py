"""WooCommerce order webhooks: signature check, and what an order snapshot means for stock.

A webhook is a snapshot of the order when it was delivered, not a record of each change;
deliveries can be coalesced, repeated or arrive late. So a snapshot is applied only if it is
newer than the last one applied for that order, and applying the same state twice does
nothing: processing/on-hold/completed accept (allocate) the order, cancelled/failed and
refunded release what is not shipped, pending and checkout-draft are not sales.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.records import WebhookOrderApplied
from atp import commands as cmd
from atp.decide import decide, reads
from atp.errors import IllegalState, NotFound

log = logging.getLogger("atp.webhooks")
SALE = frozenset({"processing", "on-hold", "completed"})
RELEASE = frozenset({"cancelled", "failed", "refunded"})
_PING = re.compile(rb"^webhook_id=\d+$")


def signature(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(body: bytes, given: str | None, secrets: Iterable[str]) -> bool:
    """The raw body's signature against the current or the previous secret."""
    if not given:
        return False
    return any(hmac.compare_digest(signature(body, s), given) for s in secrets if s)


def is_ping(body: bytes) -> bool:
    return bool(_PING.match(body.strip()))


@dataclass
class OrderSnapshot:
    order_id: str
    status: str
    modified: str
    lines: list[cmd.Line]
    unmapped: list[dict[str, Any]] = field(default_factory=list)
    """Line items without a SKU: reported, never guessed."""


def snapshot(store: str, order: dict[str, Any]) -> OrderSnapshot:
    quantities: dict[str, int] = {}
    unmapped = []
    for item in order.get("line_items") or []:
        sku = str(item.get("sku") or "").strip()
        quantity = int(item.get("quantity") or 0)
        if not sku:
            unmapped.append(item)
            continue
        if quantity > 0:
            quantities[sku] = quantities.get(sku, 0) + quantity
    modified = str(order.get("date_modified_gmt") or order.get("date_modified") or "")
    return OrderSnapshot(
        order_id=f"woocommerce:{store}:{order['id']}",
        status=str(order.get("status") or ""),
        modified=modified,
        lines=[cmd.Line(sku, q) for sku, q in quantities.items()],
        unmapped=unmapped,
    )


def command_for(snap: OrderSnapshot, channel: str) -> cmd.Command | None:
    if snap.status in SALE and snap.lines:
        return cmd.AcceptOrder(order_id=snap.order_id, channel=channel, lines=tuple(snap.lines))
    if snap.status in RELEASE:
        return cmd.CancelOrder(order_id=snap.order_id)
    return None  # pending, checkout-draft, trash: not a sale


class OrderDecider:
    """Decides an order snapshot: its command's events plus the record of the snapshot, in
    one transaction; an older or repeated snapshot decides nothing."""

    def __init__(self, snap: OrderSnapshot, channel: str) -> None:
        self.snap = snap
        self.command = command_for(snap, channel)
        self.stream = ("webhook-order", snap.order_id)
        self.reads = [self.stream, *(reads(self.command) if self.command else [])]
        self.fresh: list[Any] = []

    def __call__(self, world: Any, now: datetime) -> list[tuple[Any, Any]]:
        applied = [r for r in world.records(self.stream) if isinstance(r, WebhookOrderApplied)]
        if applied and self.snap.modified and self.snap.modified <= applied[-1].modified:
            return []  # a late or repeated delivery of a state already applied
        events: list[tuple[Any, Any]] = []
        if self.command is not None:
            try:
                events = decide(self.command, world, now)
            except (NotFound, IllegalState):
                events = []  # e.g. a cancel for an order never accepted, or already canceled
        record = WebhookOrderApplied(
            order_id=self.snap.order_id, modified=self.snap.modified, status=self.snap.status
        )
        return [*events, (self.stream, record)]
