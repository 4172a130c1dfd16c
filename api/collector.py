"""The cyclic garbage collector's settings for atp's long-running processes (issue 12).

`atp serve` workers and `atp project` both keep large, long-lived state that is replaced
object by object as events come: the writer's cache of stream states, the projector's folded
SKU states with their holds. At CPython's thresholds (700, 10, 10) enough of it lived long
enough to reach the oldest generation that full collections ran every few seconds under
load, each with the GIL held: up to 830 ms in the writer's process, and in `atp project`
13 full collections of 167 ms each (wall time, 184,000 objects tracked) in 3.5 minutes of
checkout load, each a pause of the read model's freshness (docs/benchmarks.md).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 20, 100)
"""gc.set_threshold for atp's long-running processes: a young collection every 20,000
allocations (so states replaced within a few batches die young), a full one at most every
100 middle ones (CPython's are 700, 10, 10)."""


def settle() -> None:
    """Collect once, freeze what survives (the process's start-up objects: out of every
    later collection, still freed by reference counting) and apply GC_THRESHOLDS. Call once
    per process, after start-up and before the load: process-wide (the `gc` module's)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
