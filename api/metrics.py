"""Request latency histograms per route, in the Prometheus text format (per process)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict

from litestar.types import ASGIApp, Receive, Scope, Send

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class RequestMetrics:
    def __init__(self) -> None:
        self.latency: defaultdict[tuple[str, str, str], Histogram] = defaultdict(Histogram)
        self.errors: dict[str, int] = {"unhandled": 0, "unavailable": 0}

    def count_error(self, kind: str) -> None:
        """Count a 500 (`unhandled`: a fault of this service) or a 503 (`unavailable`)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = ["500"]

            async def capture(message: dict) -> None:  # type: ignore[type-arg]
                if message["type"] == "http.response.start":
                    status[0] = str(message["status"])
                await send(message)  # type: ignore[arg-type]

            try:
                await app(scope, receive, capture)  # type: ignore[arg-type]
            finally:
                route = scope.get("path_template") or "unmatched"  # type: ignore[typeddict-item]
                key = (scope["method"], route, status[0][0] + "xx")
                self.latency[key].observe(time.perf_counter() - started)

        return record

    def render(self) -> list[str]:
        name = "atp_http_request_duration_seconds"
        lines = [
            f"# HELP {name} Time to answer a request, by route (this process).",
            f"# TYPE {name} histogram",
        ]
        for (method, route, status), h in sorted(self.latency.items()):
            labels = f'method="{method}",route="{route}",status="{status}"'
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), h.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}')
            lines.append(f"{name}_sum{{{labels}}} {h.sum:.6f}")
            lines.append(f"{name}_count{{{labels}}} {cumulative}")
        errors = "atp_http_errors_total"
        lines += [
            f"# HELP {errors} Requests answered 500 (unhandled) or 503 (unavailable), this process.",
            f"# TYPE {errors} counter",
            *(f'{errors}{{kind="{kind}"}} {n}' for kind, n in sorted(self.errors.items())),
        ]
        return lines
