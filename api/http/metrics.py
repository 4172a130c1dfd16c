"""The API's Prometheus metrics (prometheus-client); `api.http.middleware` observes requests.

With several uvicorn workers, `atp serve` points PROMETHEUS_MULTIPROC_DIR at a directory of
its own before any worker starts (prometheus-client's multiprocess mode): every worker writes
its samples there and `/metrics`, answered by any worker, reads them all, so one scrape
covers the whole service. Without the variable (a single process) the process's own
registry is exposed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# No `_created` series next to each counter and histogram.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_DURATION = Histogram(
    "atp_http_request_duration_seconds",
    "Time to answer a request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=BUCKETS,
)
WRITER_BATCHES = Counter("atp_writer_batches", "Transactions committed by the writers.")
WRITER_BUSY = Counter(
    "atp_writer_busy_seconds",
    "Wall time the writers spent on batches, conflict retries included (its rate: the "
    "writers' utilisation, 1.0 per atp instance when its writer never waits for work).",
)
WRITER_APPEND = Counter(
    "atp_writer_append_seconds",
    "Wall time of the writers' appends, one statement and commit each (divided by "
    "atp_writer_batches_total + atp_writer_conflicts_total: what an append waits for the "
    "ledger).",
)
WRITER_JOBS = Counter("atp_writer_jobs", "Commands decided by the writers.")
WRITER_CONFLICTS = Counter(
    "atp_writer_conflicts", "Batches decided again after a version conflict."
)
STOCK_EXCEPTIONS = Counter(
    "atp_stock_exceptions",
    "Stock exceptions the writers recorded, by event type.",
    ["type"],
)
STOCK_EXCEPTION_EVENTS = (
    "OverPromised",  # a physical fact left on-hand below what was allocated and held
    "ShortfallRecorded",  # a channel sold units atp could not cover
    "ShortfallFilled",  # arriving units filled an owed order
    "AllocationMoved",  # a shipment moved an order's allocation to another location
    "TransferLost",  # a closed transfer wrote units off as lost
)
for _kind in STOCK_EXCEPTION_EVENTS:
    STOCK_EXCEPTIONS.labels(type=_kind)  # every series exists from the start, at 0
HTTP_ERRORS = Counter(
    "atp_http_errors",
    "Requests answered 500 (kind=unhandled: a fault of this service) or 503 "
    "(kind=unavailable: a backing service could not be reached).",
    ["kind"],
)
for _kind in ("unhandled", "unavailable"):
    HTTP_ERRORS.labels(kind=_kind)
FORWARDED_WRITES = Counter(
    "atp_forwarded_writes",
    "Writes a worker sent to the writer worker, by kind (command: a checkout command "
    "decoded where it arrived; request: the whole HTTP request) and outcome (answered; "
    "unreachable or broken: decided where it arrived, or 503 when that is not safe).",
    ["kind", "outcome"],
)
WRITER_QUEUE = Gauge(
    "atp_writer_queue_depth",
    "Commands waiting for the writers (sum over the live workers).",
    multiprocess_mode="livesum",
)
WORKER_JOBS = Gauge(
    "atp_worker_writer_jobs",
    "Commands decided by each live worker's writer (label pid): shows the load is shared.",
    multiprocess_mode="liveall",
)

RECONCILIATION_TIME = Gauge(
    "atp_reconciliation_last_timestamp_seconds",
    "When the last reconciliation of each location finished (Unix time).",
    ["location"],
    multiprocess_mode="mostrecent",
)
RECONCILIATION_SKUS = Gauge(
    "atp_reconciliation_skus_drifted",
    "SKUs the last reconciliation of each location found drifted.",
    ["location"],
    multiprocess_mode="mostrecent",
)
RECONCILIATION_UNITS = Gauge(
    "atp_reconciliation_units_drifted",
    "Units of drift (sum of |drift|) the last reconciliation of each location found.",
    ["location"],
    multiprocess_mode="mostrecent",
)


def record_reconciliation(report: Any) -> None:
    """Carry a finished reconciliation (api.service.reconciliation.Report) into /metrics."""
    finished = report.finished_at or report.started_at
    RECONCILIATION_TIME.labels(location=report.location).set(finished.timestamp())
    RECONCILIATION_SKUS.labels(location=report.location).set(report.skus_drifted)
    RECONCILIATION_UNITS.labels(location=report.location).set(report.units_drifted)


class WriterSampler:
    """Carries one process's writer counts (CommandService.batches/jobs/conflicts, its busy
    and append seconds, its queue) into the shared metrics; call `sample()` now and then
    (each call adds what is new)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.seen: tuple[float, ...] = (0, 0, 0, 0.0, 0.0)
        self.seen_exceptions: dict[str, int] = {}

    def sample(self) -> None:
        svc = self.service
        now = (svc.batches, svc.jobs, svc.conflicts, svc.busy_seconds, svc.append_seconds)
        counters = (WRITER_BATCHES, WRITER_JOBS, WRITER_CONFLICTS, WRITER_BUSY, WRITER_APPEND)
        for counter, new, old in zip(counters, now, self.seen, strict=True):
            if new > old:
                counter.inc(new - old)
        self.seen = now
        for kind in STOCK_EXCEPTION_EVENTS:
            count = svc.recorded[kind]
            new = count - self.seen_exceptions.get(kind, 0)
            if new > 0:
                STOCK_EXCEPTIONS.labels(type=kind).inc(new)
            self.seen_exceptions[kind] = count
        WRITER_QUEUE.set(svc.queue.qsize())
        WORKER_JOBS.set(svc.jobs)


def _multiprocess_directory() -> str | None:
    """The shared directory when this process's metrics live there: prometheus-client picks
    its value class when it is first imported, so a single-worker `atp serve` (which imports
    it before uvicorn loads the variable) keeps its metrics in memory even with the variable
    set, and must expose its own registry."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """The Prometheus text of every worker (multiprocess mode) or of this process."""
    directory = _multiprocess_directory()
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def gauges_now(values: list[tuple[str, str, float]]) -> bytes:
    """Prometheus text of gauges measured at scrape time ((name, help, value) each), such as
    the projector's lag, which every worker sees alike (so not kept per process)."""
    registry = CollectorRegistry()
    registry.register(_Snapshot([GaugeMetricFamily(n, h, value=v) for n, h, v in values]))
    return generate_latest(registry)


def worker_exit() -> None:
    """Drop this process's live gauges from the shared directory (graceful shutdown)."""
    if _multiprocess_directory():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
