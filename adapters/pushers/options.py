"""How a pusher batches, retries and reconciles (`PushOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

# Re-exported: the pushers' metrics live in adapters.pushers.metrics.
from adapters.pushers.metrics import PusherMetrics as PusherMetrics
from adapters.pushers.metrics import serve_metrics as serve_metrics


@dataclass(frozen=True)
class PushOptions:
    window: float = 0.1
    """A burst is flushed once no change has arrived for this many seconds..."""
    max_delay: float = 0.5
    """...or once its first change has waited this long (a steady stream never goes quiet)."""
    prefetch: int = 2000
    """Unacked messages the broker lets us hold (coalescing happens among them)."""
    max_in_flight: int = 2
    """Concurrent push calls (each of at most `max_batch` SKUs)."""
    max_attempts: int = 10
    """Tries of one figure before it is dead-lettered (retryable failures)."""
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    reconnect_delay: float = 1.0
    depth_interval: float = 5.0
    """Seconds between queue-depth samples."""
    drain_timeout: float = 5.0
    """On a graceful stop, how long held figures may take to be written."""
    http_timeout: float = 10.0
    rate_burst: int = 1
    reconcile: bool = True
    reconcile_chunk: int = 500
