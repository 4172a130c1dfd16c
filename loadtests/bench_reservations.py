"""Reservation throughput benchmark: POST /v1/reservations over HTTP, end to end.

Creates a fresh PostgreSQL database, runs `atp migrate` and `atp serve --workers N` on
loopback, seeds a catalogue, then drives checkout reservations from several client
processes (each a pool of threads with their own keep-alive connection) for a fixed time
per scenario:

  uniform  every request reserves 1 unit of a random SKU out of many, all well stocked;
  hot      every request reserves 1 unit of ONE SKU whose stock sells out partway
           (a flash sale), after which the requests keep coming and get 409.

It prints, side by side: requests/s (all answers and 201s only), p50/p99 latency, the
writers' batch counts from /metrics (jobs per transaction = the group commit effect), the
version conflicts between the worker processes, and the oversell computed afterwards from
GET /v1/items (held + allocated beyond what was sellable; must be 0). Everything is torn
down at the end (server stopped, database dropped).

    python -m loadtests.bench_reservations --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from loadtests.harness.cpu import Cpu, cpu_snapshot
from loadtests.harness.results import pct as nearest_rank
from loadtests.harness.tables import render_table
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

LOCATION = "BENCH-WH"
CHANNEL = "BENCH-WEB"
RECEIPT_LINES = 100


# --- client processes --------------------------------------------------------------------


class KeepAliveConnection:
    """A keep-alive HTTP/1.1 connection (http.client: a fraction of httpx's client CPU,
    which matters when the clients share the two cores with the service)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> int:
        try:
            self.conn.request(method, path, body=body, headers={**self.headers, **headers})
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            raise

    def post(self, path: str, body: object, key: str) -> tuple[int, bytes, int]:
        """POST `body` as JSON with Idempotency-Key `key`: (status, body, ATP-Position or 0).
        Raises OSError or HTTPException (reconnected for the next request)."""
        try:
            headers = {**self.headers, "Idempotency-Key": key}
            self.conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            response = self.conn.getresponse()
            answer = response.read()
            return response.status, answer, int(response.getheader("ATP-Position") or 0)
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            raise

    def close(self) -> None:
        self.conn.close()


def _drive(
    url: str,
    token: str,
    skus: list[str],
    threads: int,
    start_at: float,
    duration: float,
    max_requests: int,
    seed: int,
) -> tuple[list[tuple[float, float, int]], dict[str, int], int, float]:
    """Runs in a client process. Returns (start offset, latency, status) per request, the
    201s per SKU, transport errors (timeouts, resets) and the CPU seconds this used."""
    connections = [KeepAliveConnection(url, token) for _ in range(threads)]
    for connection in connections:  # connect before the start
        if connection.request("GET", "/health") != 200:
            raise RuntimeError("the service is not healthy")
    prefix = uuid.uuid4().hex[:12]
    per_thread = max(1, max_requests // threads)

    def run(index: int) -> tuple[list[tuple[float, float, int]], Counter[str], int]:
        connection = connections[index]
        rng = random.Random(seed * 1000 + index)
        samples: list[tuple[float, float, int]] = []
        won: Counter[str] = Counter()
        errors = 0
        deadline = start_at + duration
        for n in range(per_thread):
            began = time.time()
            if began >= deadline:
                break
            sku = skus[rng.randrange(len(skus))]
            body = json.dumps({"channel": CHANNEL, "lines": [{"sku": sku, "quantity": 1}]})
            key = f"{prefix}-{index}-{n}"
            t0 = time.perf_counter()
            try:
                status = connection.request(
                    "POST", "/v1/reservations", body.encode(), **{"Idempotency-Key": key}
                )
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            latency = time.perf_counter() - t0
            samples.append((began - start_at, latency, status))
            if status == 201:
                won[sku] += 1
        return samples, won, errors

    try:
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = time.process_time()
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(run, range(threads)))
        cpu_used = time.process_time() - cpu_before
    finally:
        for connection in connections:
            connection.close()
    samples = [s for part in parts for s in part[0]]
    won: Counter[str] = Counter()
    for part in parts:
        won.update(part[1])
    return samples, dict(won), sum(part[2] for part in parts), cpu_used


# --- the server side ---------------------------------------------------------------------


@dataclass
class WriterTotals:
    batches: int = 0
    jobs: int = 0
    conflicts: int = 0
    workers_seen: int = 0
    head: int = 0
    busy: float = 0.0
    """Seconds the writers spent on batches (atp_writer_busy_seconds_total)."""
    append: float = 0.0
    """Seconds of the writers' appends, commit included (atp_writer_append_seconds_total)."""


def writer_totals(server: Server, workers: int, tries: int = 60) -> WriterTotals:
    """Sum of the writers' counters over the worker processes.

    /metrics is per process; fresh connections land on either worker, so sample until as
    many distinct counter sets as workers have been seen (counters are quiet between runs).
    """
    seen: dict[tuple[int, ...], dict[str, int]] = {}
    head = 0
    for _ in range(tries):
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line.startswith("atp_") and " " in line:
                name, value = line.rsplit(" ", 1)
                values[name] = int(float(value))
        head = max(head, values.get("atp_ledger_head_position", 0))
        ident = (values["atp_writer_batches_total"], values["atp_writer_jobs_total"])
        seen[ident] = values
        if len(seen) >= workers:
            break
    return WriterTotals(
        batches=sum(v["atp_writer_batches_total"] for v in seen.values()),
        jobs=sum(v["atp_writer_jobs_total"] for v in seen.values()),
        conflicts=sum(v["atp_writer_conflicts_total"] for v in seen.values()),
        workers_seen=len(seen),
        head=head,
    )


def seed(client: httpx.Client, stock: dict[str, int]) -> None:
    def ok(r: httpx.Response) -> None:
        if r.status_code not in (200, 201):
            raise RuntimeError(f"seeding failed: {r.status_code} {r.text}")

    ok(client.put(f"/v1/locations/{LOCATION}", json={"name": "Bench DC", "kind": "warehouse"}))
    ok(client.put(f"/v1/channels/{CHANNEL}", json={"locations": [LOCATION]}))
    items = list(stock.items())
    for i in range(0, len(items), RECEIPT_LINES):
        lines = [{"sku": sku, "quantity": q} for sku, q in items[i : i + RECEIPT_LINES]]
        body = {"location": LOCATION, "lines": lines, "reference": f"seed-{i}"}
        ok(client.post("/v1/receipts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}))


def oversell(client: httpx.Client, stock: dict[str, int], won: dict[str, int]) -> tuple[int, int]:
    """(units held or allocated beyond what was sellable, SKUs whose held != the 201s seen)."""
    over = mismatched = 0
    for sku, sellable in stock.items():
        item = client.get(f"/v1/items/{sku}")
        item.raise_for_status()
        (loc,) = [x for x in item.json()["locations"] if x["location"] == LOCATION]
        promised = loc["held"] + loc["allocated"]
        over += max(0, promised - sellable)
        if loc["held"] != won.get(sku, 0):
            mismatched += 1
    return over, mismatched


# --- one scenario ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    skus: int
    stock: int
    duration: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    latencies_201: list[float] = field(default_factory=list)
    sold_out_at: float | None = None
    early_409s: int = 0
    writer: WriterTotals = field(default_factory=WriterTotals)
    oversell: int = 0
    mismatched: int = 0
    cpu: Cpu = field(default_factory=Cpu)
    client_cpu: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..1 (the harness's `pct`); nan when empty."""
    return nearest_rank(values, q * 100)


def run_scenario(
    name: str,
    server: Server,
    pool: ProcessPoolExecutor,
    args: argparse.Namespace,
    stock: dict[str, int],
) -> Result:
    with server.client() as admin:
        seed(admin, stock)
    before = writer_totals(server, args.workers)
    skus = list(stock)
    start_at = time.time() + 1.0
    time.sleep(0.9)
    cpu_before = cpu_snapshot(server.process.pid)
    per_process = max(1, args.max_requests // args.clients)
    futures = [
        pool.submit(
            _drive,
            server.url,
            ADMIN_TOKEN,
            skus,
            args.threads,
            start_at,
            args.duration,
            per_process,
            p + (100 if name == "hot" else 0),
        )
        for p in range(args.clients)
    ]
    result = Result(name, len(stock), sum(stock.values()))
    won: Counter[str] = Counter()
    samples: list[tuple[float, float, int]] = []
    for future in futures:
        part, part_won, errors, client_cpu = future.result(timeout=args.duration + 300)
        samples.extend(part)
        won.update(part_won)
        result.errors += errors
        result.client_cpu += client_cpu
    result.cpu = cpu_snapshot(server.process.pid) - cpu_before
    result.duration = max((s[0] + s[1] for s in samples), default=args.duration)
    result.statuses = Counter(s[2] for s in samples)
    result.latencies = [s[1] for s in samples]
    result.latencies_201 = [s[1] for s in samples if s[2] == 201]
    # Without releases, every hold of the hot SKU is decided before every rejection: a 409
    # answered before some 201 was even sent was decided on stale state (a false rejection).
    held = [s for s in samples if s[2] == 201]
    rejected = [s for s in samples if s[2] == 409]
    if rejected and held:
        result.sold_out_at = max(s[0] + s[1] for s in held)
        if len(stock) == 1:
            last_sent = max(s[0] for s in held)
            result.early_409s = sum(1 for s in rejected if s[0] + s[1] < last_sent)
    after = writer_totals(server, args.workers)
    result.writer = WriterTotals(
        batches=after.batches - before.batches,
        jobs=after.jobs - before.jobs,
        conflicts=after.conflicts - before.conflicts,
        workers_seen=min(before.workers_seen, after.workers_seen),
        head=after.head - before.head,
    )
    with server.client() as admin:
        result.oversell, result.mismatched = oversell(admin, stock, won)
    return result


# --- report ------------------------------------------------------------------------------


def table(results: list[Result], args: argparse.Namespace) -> str:
    def ms(x: float) -> str:
        return f"{x * 1000:.1f}"

    def pct(r: Result, seconds: float) -> str:
        return f"{100 * seconds / r.cpu.wall:.0f}" if r.cpu.wall > 0 else "-"

    rows: list[tuple[str, ...]] = [("", *(r.name for r in results))]

    def row(label: str, fn: Any) -> None:
        rows.append((label, *(fn(r) for r in results)))

    row("SKUs x stock", lambda r: f"{r.skus} x {r.stock // r.skus}")
    row("requests", lambda r: str(r.total))
    row("  201 held", lambda r: str(r.statuses[201]))
    row("  409 insufficient", lambda r: str(r.statuses[409]))
    row(
        "  other statuses",
        lambda r: (
            " ".join(f"{k}x{v}" for k, v in sorted(r.statuses.items()) if k not in (201, 409))
            or "0"
        ),
    )
    row("  transport errors", lambda r: str(r.errors))
    row("wall time (s)", lambda r: f"{r.duration:.1f}")
    row("requests/s", lambda r: f"{r.total / r.duration:.0f}")
    row("201/s", lambda r: f"{r.statuses[201] / r.duration:.0f}")
    row("latency p50 (ms)", lambda r: ms(percentile(r.latencies, 0.5)))
    row("latency p99 (ms)", lambda r: ms(percentile(r.latencies, 0.99)))
    row(
        "201 latency p50/p99 (ms)",
        lambda r: "/".join(ms(percentile(r.latencies_201, q)) for q in (0.5, 0.99)),
    )
    row(
        "sold out at (s)",
        lambda r: "-" if r.sold_out_at is None else f"{r.sold_out_at:.1f}",
    )
    row("409s done before last 201 sent", lambda r: str(r.early_409s))
    row("writer jobs", lambda r: str(r.writer.jobs))
    row("writer batches (txns)", lambda r: str(r.writer.batches))
    row(
        "jobs per batch",
        lambda r: f"{r.writer.jobs / r.writer.batches:.1f}" if r.writer.batches else "-",
    )
    row("version conflicts", lambda r: str(r.writer.conflicts))
    row("ledger head advance", lambda r: str(r.writer.head))
    row("workers seen in /metrics", lambda r: str(r.writer.workers_seen))
    row("CPU busy, 2 cores = 200 (%)", lambda r: pct(r, r.cpu.busy))
    row("  atp server (%)", lambda r: pct(r, r.cpu.server))
    row("  postgres, all backends (%)", lambda r: pct(r, r.cpu.postgres))
    row("  bench clients (%)", lambda r: pct(r, r.client_cpu))
    row(
        "  anything else (%)",
        lambda r: pct(r, r.cpu.busy - r.cpu.server - r.cpu.postgres - r.client_cpu),
    )
    row("OVERSELL (units)", lambda r: str(r.oversell))
    row("SKUs held != 201s seen", lambda r: str(r.mismatched))
    return render_table([list(r) for r in rows])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_reservations",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--duration", type=float, default=15.0, help="seconds per scenario (15)")
    p.add_argument("--workers", type=int, default=2, help="atp serve --workers (2)")
    p.add_argument("--clients", type=int, default=3, help="client processes (3)")
    p.add_argument("--threads", type=int, default=8, help="connections per client process (8)")
    p.add_argument("--skus", type=int, default=1000, help="SKUs in the uniform scenario (1000)")
    p.add_argument(
        "--uniform-stock", type=int, default=100_000, help="units of each uniform SKU (100000)"
    )
    p.add_argument(
        "--hot-stock",
        type=int,
        default=0,
        help="units of the hot SKU; 0 (default): a third of what the uniform run sold in the "
        "same time, so it sells out partway",
    )
    p.add_argument(
        "--max-requests",
        type=int,
        default=200_000,
        help="cap on requests per scenario, over all clients (200000)",
    )
    p.add_argument(
        "--scenario",
        choices=["uniform", "hot", "both"],
        default="both",
        help="which scenarios to run (both)",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.duration > 600:
        p.error("--duration must be in (0, 600]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results: list[Result] = []
    print(
        f"atp reservation benchmark: {args.workers} API workers, {args.clients} client processes"
        f" x {args.threads} connections, {args.duration:g}s per scenario",
        flush=True,
    )
    started = time.monotonic()
    with (
        fresh_database("atp_bench") as url,
        running_service(service_env(url), workers=args.workers) as server,
        ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        print(f"service on {server.url}, database {url.rsplit('/', 1)[1]}", flush=True)
        if args.scenario in ("uniform", "both"):
            stock = {f"U-{i:05d}": args.uniform_stock for i in range(args.skus)}
            results.append(run_scenario("uniform", server, pool, args, stock))
            print(f"  uniform done: {results[-1].total} requests", flush=True)
        if args.scenario in ("hot", "both"):
            hot = args.hot_stock
            if hot <= 0:
                sold = results[0].statuses[201] if results else int(300 * args.duration)
                hot = max(10, sold // 3)
            results.append(run_scenario("hot", server, pool, args, {"HOT-1": hot}))
            print(f"  hot done: {results[-1].total} requests", flush=True)
    print()
    print(table(results, args))
    print()
    print(f"total wall time {time.monotonic() - started:.0f}s (server stopped, database dropped)")
    bad = sum(r.oversell + r.mismatched + r.early_409s for r in results)
    failed = sum(n for r in results for k, n in r.statuses.items() if k >= 500) + sum(
        r.errors for r in results
    )
    if bad or failed:
        print(
            f"FAILED: {bad} oversold/mismatched/early-409 unit(s), {failed} checkout(s) "
            "answered 5xx or not at all (see table)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
