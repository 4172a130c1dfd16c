"""Reconciliation: on start, every SKU whose store figure differs from the read model's is
written, so a crash or a message published before the queue existed never leaves a channel
behind; a SKU the store does not have is counted, not created."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from adapters.pushers.base import (
    ChannelClient,
    Ok,
    Permanent,
    PushResult,
    RetryableError,
    Skip,
    backoff_delay,
    chunks,
)
from adapters.pushers.figures import FigureSource
from adapters.pushers.metrics import Labels

# Re-exported: the pushers' metrics live in adapters.pushers.metrics.
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics
from adapters.pushers.options import PushOptions

log = logging.getLogger("atp.push")

RECONCILE_ATTEMPTS = 3
"""Whole reconciliations tried (each read already retried up to max_attempts) before the
pusher starts consuming without one."""


@dataclass
class ReconcileReport:
    skus: int = 0
    equal: int = 0
    written: int = 0
    not_in_store: int = 0
    refused: int = 0
    unfinished: int = 0
    waiting: int = 0
    """SKUs the channel cannot take now (a daily limit): kept pending, written later."""


class Reconcilable(Protocol):
    """What reconciliation needs of a pusher (`adapters.pushers.pusher.Pusher`)."""

    client: ChannelClient
    channel: str
    queue_name: str
    figure_source: FigureSource | None
    metrics: PusherMetrics
    labels: Labels
    options: PushOptions

    async def safe_push(self, figures: dict[str, int]) -> PushResult:
        """Push figures (sku -> available); an unexpected error becomes a retry of all."""
        ...

    def mark_applied(self, sku: str, position: int) -> None:
        """The channel has the figure of ledger position `position` for `sku`."""
        ...

    def wait_with(self, sku: str, figure: tuple[int, int], after: float) -> None:
        """Keep (available, position) pending for `sku`, tried again after `after` seconds."""
        ...


async def reconcile_until_done(pusher: Reconcilable, stop: asyncio.Event) -> ReconcileReport | None:
    """Reconcile, retrying a failed reconciliation with backoff up to RECONCILE_ATTEMPTS
    times; the report, or None when it gave up (or `stop` was set)."""
    attempt = 0
    while not stop.is_set():
        try:
            return await reconcile(pusher)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempt += 1
            if attempt >= RECONCILE_ATTEMPTS:
                log.error(
                    "%s: reconciliation failed %d times (%s); consuming without it",
                    pusher.queue_name,
                    attempt,
                    exc,
                )
                return None
            delay = backoff_delay(
                attempt,
                pusher.options.backoff_base,
                pusher.options.backoff_cap,
                getattr(exc, "retry_after", None),
            )
            log.warning(
                "%s: reconciliation failed (%s); again in %.1fs", pusher.queue_name, exc, delay
            )
            await sleep_or_stop(stop, delay)
    return None


async def reconcile(pusher: Reconcilable) -> ReconcileReport:
    """Write every SKU whose store figure differs from the read model's."""
    report = ReconcileReport()
    if pusher.figure_source is None:
        log.warning("%s: no read model to reconcile against; skipped", pusher.queue_name)
        return report
    truth = await pusher.figure_source.figures(pusher.channel)
    report.skus = len(truth)
    for chunk in chunks(sorted(truth), pusher.options.reconcile_chunk):
        current = await _read_with_retries(pusher, chunk)
        todo: dict[str, int] = {}
        for sku in chunk:
            available, position = truth[sku]
            if sku not in current:
                report.not_in_store += 1
                continue
            if current[sku] == available:
                report.equal += 1
                pusher.mark_applied(sku, position)
            else:
                todo[sku] = available
        await _reconcile_write(pusher, todo, truth, report)
    pusher.metrics.inc("reconciled", pusher.labels, report.written)
    pusher.metrics.inc("not_in_store", pusher.labels, report.not_in_store)
    log.info(
        "%s: reconciled %d SKU(s): %d equal, %d written, %d not in the store, %d refused, "
        "%d unfinished, %d waiting",
        pusher.queue_name,
        report.skus,
        report.equal,
        report.written,
        report.not_in_store,
        report.refused,
        report.unfinished,
        report.waiting,
    )
    return report


async def _read_with_retries(pusher: Reconcilable, skus: Sequence[str]) -> dict[str, int | None]:
    attempt = 0
    while True:
        try:
            return await pusher.client.current(skus)
        except RetryableError as exc:
            attempt += 1
            if attempt >= pusher.options.max_attempts:
                raise
            await asyncio.sleep(
                backoff_delay(
                    attempt,
                    pusher.options.backoff_base,
                    pusher.options.backoff_cap,
                    exc.retry_after,
                )
            )


async def _reconcile_write(
    pusher: Reconcilable,
    todo: dict[str, int],
    truth: Mapping[str, tuple[int, int]],
    report: ReconcileReport,
) -> None:
    attempt = 0
    while todo:
        after: float | None = None
        for batch in chunks(list(todo), pusher.client.max_batch):
            result = await pusher.safe_push({sku: todo[sku] for sku in batch})
            for sku in batch:
                outcome = result.get(sku)
                if isinstance(outcome, Ok):
                    pusher.mark_applied(sku, truth[sku][1])
                    report.written += 1
                    pusher.metrics.inc("items", pusher.labels)
                    del todo[sku]
                elif isinstance(outcome, Permanent | Skip):
                    report.refused += 1
                    skipped = isinstance(outcome, Skip)
                    pusher.metrics.inc("skipped" if skipped else "permanent_errors", pusher.labels)
                    log.warning(
                        "%s: reconcile %s %s: %s",
                        pusher.queue_name,
                        sku,
                        "skipped" if skipped else "refused",
                        outcome.reason,
                    )
                    del todo[sku]
                elif outcome.wait:  # e.g. a daily limit: pending until it is taken
                    report.waiting += 1
                    pusher.wait_with(sku, truth[sku], outcome.after or 0.0)
                    del todo[sku]
                elif outcome.after is not None:
                    after = max(after or 0.0, outcome.after)
        if not todo:
            return
        attempt += 1
        if attempt >= pusher.options.max_attempts:
            report.unfinished += len(todo)
            log.error("%s: reconcile gave up on %d SKU(s)", pusher.queue_name, len(todo))
            return
        pusher.metrics.inc("retries", pusher.labels, len(todo))
        await asyncio.sleep(
            backoff_delay(attempt, pusher.options.backoff_base, pusher.options.backoff_cap, after)
        )


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
