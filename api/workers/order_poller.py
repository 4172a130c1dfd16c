"""Catch-up polling of WooCommerce orders: WooCommerce never retries a webhook delivery (and
disables a webhook after 5 failures in a row), so a lost delivery would be a lost order.

At start and every `ATP_ORDER_POLL_SECONDS`, for every registered store, ask for the orders
modified since the newest one polling applied (less `OVERLAP_SECONDS`: times have one-second
resolution), oldest first, and apply each through the same snapshot path as webhooks
(api.service.order_sync): what a webhook already brought changes nothing. A store whose webhooks
stopped arriving while polling still finds changes is logged as a warning and flagged in
`atp_webhook_quiet{store}`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from adapters.ledger import Ledger
from adapters.records import INTEGRATION_INDEX, IntegrationConfigured, OrderPollCursor
from adapters.webhooks import NotAnOrder, parse_order
from adapters.woo_orders import StoreUnreachable, from_settings
from api.service.commands import CommandService, Job, decider
from api.service.integrations import current, integration_stream
from api.service.order_sync import IN_ORDER, METRICS, OrderSync
from atp.streams import Stream

log = logging.getLogger("atp.orderpoll")
OVERLAP_SECONDS = 5
FIRST_LOOKBACK = timedelta(days=1)
"""How far back the first poll of a store looks (no cursor yet)."""


def cursor_stream(store: str) -> Stream:
    return ("order-poll", f"woocommerce:{store}")


class OrderPoller:
    def __init__(
        self,
        ledger: Ledger,
        service: CommandService,
        service_key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.service = service
        self.service_key = service_key
        self.sync = OrderSync(ledger, service, service_key)
        self.clock = clock
        self.polls = 0
        self.last_poll: dict[str, datetime] = {}
        """When each store's previous poll started."""

    async def run(self, interval: float, stop: threading.Event) -> None:
        """Poll now, then every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("order poll failed; next poll in %s s", interval)
            await asyncio.to_thread(stop.wait, interval)

    async def stores(self) -> list[IntegrationConfigured]:
        index, _ = await asyncio.to_thread(self.ledger.load, INTEGRATION_INDEX)
        found = []
        for listed in {(r.kind, r.store) for r in index if getattr(r, "kind", None)}:
            if listed[0] != "woocommerce":
                continue
            records, _ = await asyncio.to_thread(self.ledger.load, integration_stream(*listed))
            record = current(records)
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda r: r.store)

    async def poll_once(self) -> dict[str, int]:
        """Poll every store once; returns the order changes found per store."""
        self.polls += 1
        found: dict[str, int] = {}
        for record in await self.stores():
            try:
                found[record.store] = await self.poll_store(record)
            except StoreUnreachable as e:
                log.warning("store %s: orders not polled: %s", record.store, e)
        return found

    async def poll_store(self, record: IntegrationConfigured) -> int:
        store = record.store
        started = datetime.now(UTC)
        records, _ = await asyncio.to_thread(self.ledger.load, cursor_stream(store))
        cursor = records[-1].modified if records else None
        since = _since(cursor, self.clock())
        client = from_settings(record.settings, self.service_key)
        try:
            orders = await client.modified_after(since)
        finally:
            await client.aclose()
        changed, newest = 0, cursor or ""
        for raw in orders:
            try:
                order = parse_order(msgspec.json.encode(raw))
            except NotAnOrder as e:
                log.error("store %s: order %r not applied: %s", store, raw.get("id"), e.detail)
                continue
            async with IN_ORDER(store, order.id):
                applied = await self.sync.apply_order_snapshot(
                    store, record, order, f"poll-{store}", "poll"
                )
            changed += applied.changed
            newest = max(newest, order.date_modified_gmt)
        if changed:
            METRICS.polled_changes[f'store="{store}"'] += changed
        # Changes found at the first poll are the ones made while atp was down.
        previous = self.last_poll.get(store)
        quiet = (
            bool(changed) and previous is not None and not METRICS.webhook_since(store, previous)
        )
        self.last_poll[store] = started
        if quiet:
            METRICS.quiet[f'store="{store}"'] = 1  # until a webhook of the store arrives
            log.warning(
                "store %s: polling found %d order change(s) no webhook brought; "
                "check its order webhooks (WooCommerce disables one after 5 failures)",
                store,
                changed,
            )
        if newest and newest != cursor:
            await self._advance(store, newest)
        return changed

    async def _advance(self, store: str, newest: str) -> None:
        stream = cursor_stream(store)

        def decide(world: Any, _: datetime) -> list[tuple[Any, Any]]:
            last = world.records(stream)
            if last and last[-1].modified >= newest:
                return []
            return [(stream, OrderPollCursor(store=store, modified=newest))]

        await self.service.submit(Job(decider(decide, reads=[stream]), f"poll-{store}"))


def _since(cursor: str | None, now: datetime) -> str:
    """`modified_after` for a poll: the cursor less the overlap, or the first look-back."""
    if cursor:
        moment = datetime.fromisoformat(cursor) - timedelta(seconds=OVERLAP_SECONDS)
    else:
        moment = now.astimezone(UTC).replace(tzinfo=None) - FIRST_LOOKBACK
    return moment.replace(microsecond=0).isoformat()
