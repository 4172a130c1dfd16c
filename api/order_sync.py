"""One path for every WooCommerce order snapshot, from a webhook or from polling: map it,
fetch its refunds when they changed, decide it with its last applied snapshot, append.

It also keeps this process's webhook figures for `/metrics` (unmapped lines, deliveries
that changed nothing, orders polling caught up, stores whose webhooks went quiet).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.ledger import Ledger
from adapters.records import IntegrationConfigured
from adapters.webhooks import (
    OrderDecider,
    OrderSnapshot,
    WooOrder,
    applied_stream,
    last_applied,
    needs_refunds,
    refunded_units,
    snapshot,
)
from adapters.woo_orders import StoreUnreachable, from_settings
from api.problems import domain_problem
from api.service import CommandService, Job, Outcome, Reply

log = logging.getLogger("atp.webhooks")


class WebhookMetrics:
    """Counters of this process, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.unmapped_lines: Counter[str] = Counter()
        self.unchanged: Counter[str] = Counter()
        self.polled_changes: Counter[str] = Counter()
        self.quiet: dict[str, int] = {}
        self.last_webhook: dict[str, datetime] = {}

    def webhook_since(self, store: str, moment: datetime) -> bool:
        """Whether a webhook of the store was applied at or after `moment`."""
        last = self.last_webhook.get(store)
        return last is not None and last >= moment

    def render(self) -> list[str]:
        lines: list[str] = []
        series = (
            ("atp_webhook_unmapped_lines_total", "Order lines atp could not map.", "counter"),
            ("atp_webhook_unchanged_total", "Order snapshots that changed nothing.", "counter"),
            ("atp_order_poll_changes_total", "Order changes found by polling.", "counter"),
            ("atp_webhook_quiet", "1: webhooks stopped while polling finds changes.", "gauge"),
        )
        values = (self.unmapped_lines, self.unchanged, self.polled_changes, self.quiet)
        for (name, help_text, kind), by_store in zip(series, values, strict=True):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{store="{store}"}} {n}' for store, n in sorted(by_store.items())]
        return lines


METRICS = WebhookMetrics()


@dataclass(frozen=True)
class Applied:
    status: int
    body: bytes
    position: int | None = None
    changed: bool = False


class OrderSync:
    def __init__(self, ledger: Ledger, service: CommandService) -> None:
        self.ledger = ledger
        self.service = service

    async def apply(
        self,
        store: str,
        integration: IntegrationConfigured,
        order: WooOrder,
        cid: str,
        source: str = "webhook",
    ) -> Applied:
        """Apply one snapshot of a store's order (from a "webhook" or a "poll"); a domain
        rejection is a problem reply."""
        if source == "webhook":
            METRICS.last_webhook[store] = datetime.now(UTC)
        snap = snapshot(store, order)
        if snap.unmapped:
            METRICS.unmapped_lines[store] += len(snap.unmapped)
            log.warning(
                "order %s: %d line(s) not mapped: %s",
                snap.order_id,
                len(snap.unmapped),
                "; ".join(f"line {u.line}: {u.reason}" for u in snap.unmapped),
            )
        records, _ = await asyncio.to_thread(self.ledger.load, applied_stream(snap.order_id))
        last = last_applied(records)
        snap = await self._with_refunds(snap, last, integration)
        decider = OrderDecider(snap, integration.channel)

        def render(outcome: Outcome) -> Reply:
            if outcome.error is not None:
                return Reply(*domain_problem(outcome.error))
            return Reply(200, b"")

        reply = await self.service.submit(Job(decider, render, cid))
        if reply.status_code >= 400:
            log.error("order %s was not applied: %s", snap.order_id, reply.body.decode())
            return Applied(reply.status_code, reply.body)
        if decider.reason is not None:
            METRICS.unchanged[store] += 1
            log.info(
                "order %s (%s): changed nothing: %s", snap.order_id, snap.modified, decider.reason
            )
            body = msgspec.json.encode({"status": "unchanged", "reason": decider.reason})
            return Applied(200, body, reply.position)
        return Applied(200, b'{"status":"applied"}', reply.position, changed=True)

    async def _with_refunds(
        self, snap: OrderSnapshot, last: Any, integration: IntegrationConfigured
    ) -> OrderSnapshot:
        """The snapshot with its refunded units: fetched when its refunds changed, else those
        of the last applied snapshot. A store that cannot be asked leaves the refunds as they
        were (and the next snapshot or poll asks again)."""
        if not needs_refunds(snap, last):
            kept = dict(last.refunded) if last is not None and snap.refunds else {}
            return snap.with_refunded(kept)
        client = from_settings(integration.settings)
        try:
            refunds = await client.refunds(snap.woo_id)
        except StoreUnreachable as e:
            log.warning("order %s: refunds not fetched (%s); asked again later", snap.order_id, e)
            if last is None:
                return replace(snap, refunds=())
            return replace(snap, refunds=tuple(last.refunds), refunded=dict(last.refunded))
        finally:
            await client.aclose()
        return snap.with_refunded(refunded_units(refunds))
