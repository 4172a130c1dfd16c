"""The pushers' metrics on prometheus-client: counters, gauges and the delivery-delay
histogram of every pusher in a process, labelled by kind, store and channel (the request
counter also by the channel's answer status).

`atp push --metrics-port N` serves them (`serve_metrics`); the pusher also reports them to
Redis, and the API's /metrics merges every pusher's report into its own scrape.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client; no `_created` series next to each counter and histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
COUNTERS = {
    "requests": "HTTP requests made to the channel, by answer status",
    "items": "Figures the channel accepted",
    "retries": "Figures scheduled for another try after a retryable failure",
    "dead_letters": "Messages sent to the dead-letter queue",
    "permanent_errors": "Figures the channel refused for good",
    "stale": "Messages dropped because a newer figure was already applied",
    "superseded": "Messages acked because a newer figure of their SKU was accepted",
    "reconciled": "SKUs written by reconciliation because the store differed",
    "not_in_store": "SKUs reconciliation found missing in the store",
    "skipped": "Figures not written because the channel must not take them (not listed, FBA)",
    "channel_issues": "Problems a channel reported after accepting a figure, by severity",
}
GAUGES = {
    "queue_depth": "Messages ready in the push queue (last sample)",
    "pending_skus": "SKUs held in the pusher waiting to be written",
}
LABELS = ("kind", "store", "channel")
EXTRA_LABELS = {"requests": ("status",), "channel_issues": ("severity",)}
Labels = tuple[tuple[str, str], ...]


class PusherMetrics:
    """The metrics of the pushers of one process, in a registry of their own (so tests may
    make several). Metric names: `atp_push_<counter>_total`, `atp_push_<gauge>`,
    `atp_push_delay_seconds` (seconds from a change's occurred_at to the channel accepting
    it); `render()` gives the Prometheus text lines."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counters = {
            name: Counter(
                f"atp_push_{name}",
                f"{text}.",
                [*LABELS, *EXTRA_LABELS.get(name, ())],
                registry=self.registry,
            )
            for name, text in COUNTERS.items()
        }
        self.gauges = {
            name: Gauge(f"atp_push_{name}", f"{text}.", LABELS, registry=self.registry)
            for name, text in GAUGES.items()
        }
        self.delay = Histogram(
            "atp_push_delay_seconds",
            "Seconds from a change (occurred_at) to the channel accepting it.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    @staticmethod
    def labels(kind: str, store: str, channel: str, **extra: str) -> Labels:
        return (("kind", kind), ("store", store), ("channel", channel), *sorted(extra.items()))

    def inc(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        self.counters[name].labels(**dict(labels)).inc(amount)

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges[name].labels(**dict(labels)).set(value)

    def observe_delay(self, labels: Labels, seconds: float) -> None:
        self.delay.labels(**dict(labels)).observe(max(0.0, seconds))

    def _sum(
        self, metric: Counter | Gauge | Histogram, suffix: str, wanted: dict[str, str]
    ) -> float:
        return sum(
            sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name.endswith(suffix) and wanted.items() <= sample.labels.items()
        )

    def value(
        self, name: str, kind: str | None = None, store: str | None = None, **extra: str
    ) -> float:
        """Sum of a counter or gauge over the series matching the given labels (for tests
        and health checks)."""
        wanted = {k: v for k, v in (("kind", kind), ("store", store), *extra.items()) if v}
        if name in self.counters:
            return self._sum(self.counters[name], "_total", wanted)
        return self._sum(self.gauges[name], "", wanted)

    def delay_count(self, kind: str, store: str) -> int:
        return int(self._sum(self.delay, "_count", {"kind": kind, "store": store}))

    def render(self) -> list[str]:
        return generate_latest(self.registry).decode().splitlines()


async def serve_metrics(
    metrics: PusherMetrics, host: str = "127.0.0.1", port: int = 9464
) -> asyncio.Server:
    """An HTTP endpoint on the pusher's event loop answering every request with the
    Prometheus text of `metrics` (for `atp push`, which has no web server of its own)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = generate_latest(metrics.registry)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
