"""Results of a load run (`Load`, `LagResult`), percentiles and medians over rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadtests.harness.cpu import Cpu


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Load:
    """One measured load: requests (or Redis calls) answered, wall time, latency."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    errors: int = 0
    """Transport errors and non-2xx answers."""
    cpu: Cpu | None = None
    server_hget: str = ""
    """Redis's own view of the HGETs during the load."""
    rounds: list[Load] = field(default_factory=list)
    """The rounds this load combines (then rate and latencies are their medians)."""

    @property
    def rate(self) -> float:
        if self.rounds:
            return median([r.rate for r in self.rounds])
        return self.requests / self.seconds if self.seconds > 0 else math.nan

    @property
    def server_us(self) -> float:
        """Server CPU per request (all its processes): steadier than req/s on a busy machine."""
        if self.cpu is None or not self.requests:
            return math.nan
        return 1e6 * self.cpu.server / self.requests


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def combine(name: str, rounds: list[Load]) -> Load:
    """Rounds of one load: medians of req/s and latency percentiles, CPU summed."""
    cpu = None
    for r in rounds:
        if r.cpu is not None:
            cpu = r.cpu if cpu is None else cpu + r.cpu
    return Load(
        name,
        requests=sum(r.requests for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        p50_ms=median([r.p50_ms for r in rounds]),
        p99_ms=median([r.p99_ms for r in rounds]),
        errors=sum(r.errors for r in rounds),
        cpu=cpu,
        server_hget=rounds[0].server_hget if rounds else "",
        rounds=rounds,
    )


@dataclass
class LagResult:
    events: int = 0
    requests: int = 0
    failed_requests: int = 0
    seconds: float = 0.0
    unseen: int = 0
    from_event_ms: list[float] = field(default_factory=list)
    from_commit_ms: list[float] = field(default_factory=list)
    writer_batches: int = 0
    writer_jobs: int = 0
    writer_conflicts: int = 0
    transactions: int = 0
    notifies: int = 0
    from_response_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    polls: int = 0
    poll_ms: float = math.nan
    cpu: Cpu | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan
