"""One path for every WooCommerce order snapshot, from a webhook or from polling: map it,
fetch its refunds when they changed, decide it with its last applied snapshot, append.

It also keeps this process's webhook figures for `/metrics` (unmapped lines, deliveries
that changed nothing, orders polling caught up, stores whose webhooks went quiet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from adapters.ledger import Ledger
from adapters.records import IntegrationConfigured
from adapters.webhooks import (
    OrderSnapshot,
    WooOrder,
    needs_refunds,
    refunded_units,
    snapshot,
)
from adapters.woo_orders import StoreUnreachable, from_settings
from api.service.commands import Applied, CommandService, Job, Rejected
from api.service.order_snapshots import OrderDecider, applied_stream, last_applied
from atp.errors import DomainError

log = logging.getLogger("atp.webhooks")


class WebhookMetrics:
    """Counters of this process, rendered in the Prometheus text format. Series are keyed by
    their label set; each process counts what it applies (the API process: webhooks applied
    in process and unmapped lines of every delivery; `atp webhooks`: the rest, reported
    through Redis, see `report_loop`), so no series is counted by two processes."""

    def __init__(self) -> None:
        self.unmapped_lines: Counter[str] = Counter()
        self.unchanged: Counter[str] = Counter()
        self.polled_changes: Counter[str] = Counter()
        self.quiet: dict[str, int] = {}
        self.last_webhook: dict[str, datetime] = {}

    def count_unmapped(self, snap: OrderSnapshot, store: str, source: str) -> None:
        """Count the snapshot's lines atp could not map, by store and source."""
        if not snap.unmapped:
            return
        self.unmapped_lines[f'store="{store}",source="{source}"'] += len(snap.unmapped)
        log.warning(
            "order %s: %d line(s) not mapped: %s",
            snap.order_id,
            len(snap.unmapped),
            "; ".join(f"line {u.line}: {u.reason}" for u in snap.unmapped),
        )

    def webhook_since(self, store: str, moment: datetime) -> bool:
        """Whether a webhook of the store was applied at or after `moment`."""
        last = self.last_webhook.get(store)
        return last is not None and last >= moment

    def render(self) -> list[str]:
        """These counters in the Prometheus text format."""
        lines: list[str] = []
        series = (
            ("atp_webhook_unmapped_lines_total", "Order lines atp could not map.", "counter"),
            ("atp_webhook_unchanged_total", "Order snapshots that changed nothing.", "counter"),
            ("atp_order_poll_changes_total", "Order changes found by polling.", "counter"),
            ("atp_webhook_quiet", "1: polling found changes no webhook brought.", "gauge"),
        )
        values = (self.unmapped_lines, self.unchanged, self.polled_changes, self.quiet)
        for (name, help_text, kind), by_labels in zip(series, values, strict=True):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{{{labels}}} {n}" for labels, n in sorted(by_labels.items())]
        return lines


REPORT_SECONDS = 5.0
REFUNDS_TIMEOUT = 3.0
"""Seconds to wait for a store's refunds (a webhook is waiting for its answer)."""


def report_key(prefix: str) -> str:
    """The Redis key under which this process reports its webhook figures."""
    return f"{prefix}:webhooks:report"


async def report_loop(redis_client: Any, prefix: str) -> None:
    """`atp webhooks`: publish this process's figures for the API's /metrics."""
    while True:
        with contextlib.suppress(Exception):
            key = report_key(prefix)
            metrics = "\n".join(METRICS.render())
            await redis_client.hset(key, mapping={"metrics": metrics, "heartbeat": time.time()})
            await redis_client.expire(key, 300)
        await asyncio.sleep(REPORT_SECONDS)


async def reported(redis_client: Any, prefix: str) -> list[dict[str, str]]:
    """What `atp webhooks` published (for merging into /metrics), if anything."""
    raw = await redis_client.hgetall(report_key(prefix))
    return [{k.decode(): v.decode() for k, v in raw.items()}] if raw else []


METRICS = WebhookMetrics()


class InOrder:
    """Per-order FIFO locks: deliveries of one order are applied in the order they took the
    lock (take it before the first await to keep arrival order); other orders never wait."""

    def __init__(self) -> None:
        self.locks: dict[tuple[str, int], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, store: str, order_id: int) -> AsyncIterator[None]:
        key = (store, order_id)
        lock, users = self.locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self.locks[key]


IN_ORDER = InOrder()
"""This process's order locks (webhook route, queue consumer and poller share them)."""


@dataclass(frozen=True)
class SnapshotApplied:
    """What applying one order snapshot came to: a domain `error` (nothing applied), or
    the `unchanged` reason when the ledger already held its state, or a change; `position`
    is the ledger position of its last record (None when rejected)."""

    position: int | None = None
    error: DomainError | None = None
    unchanged: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the snapshot changed the ledger (not rejected, not unchanged)."""
        return self.error is None and self.unchanged is None


class OrderSync:
    """apply_order_snapshot: one path for every WooCommerce order snapshot."""

    def __init__(self, ledger: Ledger, service: CommandService, service_key: bytes) -> None:
        self.ledger = ledger
        self.service = service
        self.service_key = service_key
        """Opens the store's sealed credentials (adapters.sealing) to fetch refunds."""

    async def apply_order_snapshot(
        self,
        store: str,
        integration: IntegrationConfigured,
        order: WooOrder,
        cid: str,
        source: str = "webhook",
        delivery: str = "",
    ) -> SnapshotApplied:
        """Apply one snapshot of a store's order (from a "webhook" or a "poll") and say
        what it came to (a domain rejection included). Raises what the command service
        raises (the ledger unreachable)."""
        if source == "webhook":
            METRICS.last_webhook[store] = datetime.now(UTC)
            if f'store="{store}"' in METRICS.quiet:
                METRICS.quiet[f'store="{store}"'] = 0  # the store's webhooks arrive again
        snap = replace(snapshot(store, order), delivery=delivery[:200])
        if source != "webhook":  # a webhook's lines are counted where it arrives
            METRICS.count_unmapped(snap, store, source)
        records, _ = await asyncio.to_thread(self.ledger.load, applied_stream(snap.order_id))
        last = last_applied(records)
        snap = await self._with_refunds(snap, last, integration)
        decider = OrderDecider(snap, integration.channel)

        result = await self.service.submit(Job(decider, cid))
        assert isinstance(result, Applied | Rejected)  # no idempotency key: no replay
        if isinstance(result, Rejected):
            error = result.error
            log.error("order %s was not applied: %s (%s)", snap.order_id, error.detail, error.kind)
            return SnapshotApplied(error=error)
        if decider.reason is not None:
            METRICS.unchanged[f'store="{store}"'] += 1
            log.info(
                "order %s (%s): changed nothing: %s", snap.order_id, snap.modified, decider.reason
            )
            return SnapshotApplied(result.position, unchanged=decider.reason)
        return SnapshotApplied(result.position)

    async def _with_refunds(
        self, snap: OrderSnapshot, last: Any, integration: IntegrationConfigured
    ) -> OrderSnapshot:
        """The snapshot with its refunded units: fetched when its refunds changed, else those
        of the last applied snapshot. A store that cannot be asked leaves the refunds as they
        were (and the next snapshot or poll asks again)."""
        if not needs_refunds(snap, last):
            kept = dict(last.refunded) if last is not None and snap.refunds else {}
            return snap.with_refunded(kept)
        # WooCommerce gives up on a webhook after 5 s by default: leave room for the rest.
        client = from_settings(integration.settings, self.service_key, timeout=REFUNDS_TIMEOUT)
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
