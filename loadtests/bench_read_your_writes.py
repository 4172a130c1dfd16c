"""Read-your-writes of the embedded service: what a write costs, and whether the read sent
right after its answer shows it.

    python -m loadtests.bench_read_your_writes [--writes 300]

Starts `atp serve` (embedded: SQLite in a temporary directory, one worker), then times N
receipts of one unit, each followed at once by a read of the SKU's availability, and counts
the reads that show an older figure than the receipts answered so far.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

import httpx

from tests.support.server import ADMIN_TOKEN, running_service, service_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, running_service(service_env(None, data)) as s:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=s.url, headers=auth, timeout=30) as http:
            http.put("/v1/locations/WH1", json={"name": "WH1", "kind": "warehouse"})
            http.put("/v1/channels/web", json={"locations": ["WH1"]}).raise_for_status()
            latencies, stale = [], 0
            for i in range(1, args.writes + 1):
                started = time.perf_counter()
                http.post(
                    "/v1/receipts",
                    json={"location": "WH1", "lines": [{"sku": "RYW-1", "quantity": 1}]},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                ).raise_for_status()
                latencies.append(time.perf_counter() - started)
                if http.get("/v1/availability/web/RYW-1").json()["available"] != i:
                    stale += 1
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"{args.writes} receipts: median {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {p99 * 1000:.2f} ms; reads right after the answer showing an older figure: "
        f"{stale}/{args.writes}"
    )


if __name__ == "__main__":
    main()
