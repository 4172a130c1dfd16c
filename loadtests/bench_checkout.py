"""Checkout side by side: atp against a plain row-update service, the same load, one run.

Starts, each on a fresh PostgreSQL database (fsync as the server has it), the plain service
(`loadtests.plain_service`: one transaction per request, a conditional UPDATE per line) and
`atp serve` on loopback, both with the same number of uvicorn workers (atp as deployed: the
Redis read model kept by one `atp project`, in a free Redis database; `--read-model
embedded` has each worker project in process instead), loads the same
catalogue into both and drives both with the same load: client processes, each a pool of
threads with one keep-alive connection each (http.client), every request with a fresh
`Idempotency-Key`. Each round runs every scenario on both services back to back, so the
two see the same machine within seconds: the plain service first in odd rounds, atp first
in even ones (and holds-N before holds-10 in even rounds), so neither side of a pair
always runs second, after the other's load. Scenarios:

  uniform   1-line reservation of 1 unit of a random SKU out of --skus          (a)
  hot       1-line reservation of 1 unit of ONE SKU (stock never runs out)      (b)
  holds-10  atp only: reserve then release 1 unit of a SKU with 10 live holds;  (c)
  holds-N   the same on a SKU with --holds live holds (taken before round 1);
            the rate of the reservations is measured
  5-line    reservation of 5 distinct SKUs out of the first 50 (overlapping)    (d)
  commit    reserve 1 unit, then commit it; the commits are measured            (e)
  release   reserve 1 unit, then release it; the releases are measured         (e)
  order     direct order (`POST /v1/orders`) of 1 unit of a random SKU          (e)

and, as the database's own limit, pgbench (16 clients, no HTTP) of the conditional UPDATE
on one hot row and on --skus uniform rows, once per round.

The table gives medians over the rounds: operations/s, p50/p99 latency of the measured
operation, 409s, 5xx and transport errors, and CPU per operation from /proc (the service's
process tree and every PostgreSQL backend, and for atp on Redis the projector and the Redis
server too; for commit/release/holds the CPU of the whole
cycle of two requests). At the end every SKU of both services is checked for oversell
(held + allocated > on hand); the exit status is 1 on any oversell, 5xx or lost answer.
Everything is torn down (services stopped, databases dropped).

    python -m loadtests.bench_checkout --duration 8 --rounds 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from loadtests.bench_reservations import (
    CHANNEL,
    KeepAliveConnection,
    WriterTotals,
    percentile,
    seed,
)
from loadtests.harness import results
from loadtests.harness.cpu import cpu_snapshot
from loadtests.harness.redis_probe import pick_redis_db, redis_cleanup
from loadtests.harness.services import projector, served
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, running_service, service_env

HOT = "HOT-1"
HOLDS_FEW = "HOLDS-10"
HOLDS_MANY = "HOLDS-N"
FEW_HOLDS = 10
STOCK = 1_000_000
OVERLAP = 50
LONG_TTL = 86_400


@dataclass(frozen=True)
class Scenario:
    """What one load does: `ops` per cycle (`reserve`, `commit`, `release`, `order`), the
    index of the measured one, the SKU pool, the lines per request, and which services."""

    name: str
    ops: tuple[str, ...]
    measured: int
    pool: str
    lines: int = 1
    atp_only: bool = False


SCENARIOS = (
    Scenario("uniform", ("reserve",), 0, "uniform"),
    Scenario("hot", ("reserve",), 0, "hot"),
    Scenario("holds-10", ("reserve", "release"), 0, "holds-few", atp_only=True),
    Scenario("holds-N", ("reserve", "release"), 0, "holds-many", atp_only=True),
    Scenario("5-line", ("reserve",), 0, "overlap", lines=5),
    Scenario("commit", ("reserve", "commit"), 1, "uniform"),
    Scenario("release", ("reserve", "release"), 1, "uniform"),
    Scenario("order", ("order",), 0, "uniform"),
)


# --- client processes --------------------------------------------------------------------


Sample = tuple[str, float, int]
"""(operation, latency in seconds, HTTP status)."""


def drive(
    url: str,
    scenario: Scenario,
    pool: list[str],
    threads: int,
    start_at: float,
    duration: float,
    max_cycles: int,
    ttl: int,
    seed_: int,
) -> tuple[list[Sample], int, float]:
    """Runs in a client process: cycles of `scenario.ops` until the deadline or `max_cycles`
    (over all threads). Returns the samples, transport errors and CPU seconds used."""
    connections = [KeepAliveConnection(url, ADMIN_TOKEN) for _ in range(threads)]
    prefix = uuid.uuid4().hex[:12]

    def run(index: int) -> tuple[list[Sample], int]:
        conn = connections[index]
        rng = random.Random(seed_ * 1000 + index)
        samples: list[Sample] = []
        errors = 0
        deadline = start_at + duration
        for n in range(max_cycles // threads + (index < max_cycles % threads)):
            if time.time() >= deadline:
                break
            skus = rng.sample(pool, scenario.lines) if scenario.lines > 1 else [rng.choice(pool)]
            lines = [{"sku": sku, "quantity": 1} for sku in skus]
            reservation = ""
            for op in scenario.ops:
                key = f"{prefix}-{index}-{n}-{op}"
                if op == "reserve":
                    path, body = (
                        "/v1/reservations",
                        {"channel": CHANNEL, "lines": lines, "ttl_seconds": ttl},
                    )
                elif op == "order":
                    path, body = (
                        "/v1/orders",
                        {"order_id": key, "channel": CHANNEL, "lines": lines},
                    )
                elif op == "commit":
                    path, body = f"/v1/reservations/{reservation}/commit", {"order_id": key}
                else:
                    path, body = f"/v1/reservations/{reservation}/release", {}
                t0 = time.perf_counter()
                try:
                    status, answer, _ = conn.post(path, body, key)
                except (OSError, http.client.HTTPException):
                    errors += 1
                    break
                samples.append((op, time.perf_counter() - t0, status))
                if op == "reserve":
                    if status != 201:
                        break
                    reservation = json.loads(answer)["reservation_id"]
        return samples, errors

    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = time.process_time()
    try:
        with ThreadPoolExecutor(threads) as executor:
            parts = list(executor.map(run, range(threads)))
    finally:
        for c in connections:
            c.conn.close()
    cpu_used = time.process_time() - cpu_before
    return [s for p in parts for s in p[0]], sum(p[1] for p in parts), cpu_used


# --- the two services --------------------------------------------------------------------


@dataclass
class Service:
    name: str
    url: str
    pid: int
    database: str
    projector_pid: int | None = None
    """atp on Redis: `atp project`, whose CPU (and Redis's) is counted as atp's."""


@contextmanager
def plain_service(database: str, workers: int, log: Path) -> Iterator[Service]:
    """`python -m loadtests.plain_service --migrate` on a free port; waits for /health."""
    env = {**os.environ, "PLAIN_DATABASE_URL": database}
    args = ["--migrate", "--workers", str(workers)]
    with served("loadtests.plain_service", args, env, "/health", log) as plain:
        yield Service("plain", plain.url, plain.pid, database)


def seed_plain(database: str, stock: dict[str, int]) -> None:
    with (
        psycopg.connect(database) as conn,
        conn.cursor() as cur,
        cur.copy("COPY stock (sku, on_hand) FROM STDIN") as copy,
    ):
        for sku, units in stock.items():
            copy.write_row((sku, units))


def pools(skus: int) -> dict[str, list[str]]:
    uniform = [f"U-{i:05d}" for i in range(skus)]
    return {
        "uniform": uniform,
        "hot": [HOT],
        "holds-few": [HOLDS_FEW],
        "holds-many": [HOLDS_MANY],
        "overlap": uniform[: max(5, min(OVERLAP, skus))],
    }


def round_order(round_: int) -> list[Scenario]:
    """The scenarios in the order round `round_` (0-based) runs them: as listed in even
    rounds; in odd rounds with holds-10 and holds-N swapped, as the services' order is
    (plain then atp in even rounds, atp then plain in odd ones). Whatever one load leaves
    behind (live reservations, a longer ledger, garbage, a warmer cache) then weighs on
    each side of a pair alike over the rounds, not always on the second."""
    order = list(SCENARIOS)
    if round_ % 2:
        few, many = (
            next(i for i, s in enumerate(order) if s.name == n) for n in ("holds-10", "holds-N")
        )
        order[few], order[many] = order[many], order[few]
    return order


def oversold(service: Service, skus: int) -> int:
    """SKUs whose held + allocated exceed on hand (must be 0)."""
    if service.name == "plain":
        with psycopg.connect(service.database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM stock WHERE held < 0 OR allocated < 0 "
                "OR held + allocated > on_hand"
            ).fetchone()
            return int(row[0]) if row else 0
    bad = 0
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    ) as client:
        # Every write of the run included (the Redis read model may trail by milliseconds).
        head = client.get("/ready").json()["checks"]["ledger"]["head"]
        for sku in {s for pool in pools(skus).values() for s in pool}:
            item = client.get(f"/v1/items/{sku}", params={"min_position": head})
            item.raise_for_status()
            for loc in item.json()["locations"]:
                if loc["held"] + loc["allocated"] > loc["on_hand"] or loc["held"] < 0:
                    bad += 1
    return bad


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Run:
    """One scenario on one service in one round."""

    ops: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    cpu_per_op: float = 0.0
    """CPU seconds of the service's processes and PostgreSQL per measured operation."""
    client_cpu: float = 0.0
    """CPU seconds of the bench's own client processes during the load."""
    requests: int = 0
    """Requests the clients made (every operation of the scenario, answered or not)."""
    cpu_parts: dict[str, float] = field(default_factory=dict)
    """CPU seconds per measured operation by process: the service's, PostgreSQL's, the
    projector's and Redis's (the last two atp's only, with the Redis read model)."""
    busy: float = 0.0
    """Fraction of the machine busy (2 cores = 2.0)."""
    writer: WriterTotals | None = None
    """atp only: the writers' batches, jobs and version conflicts during the load."""

    @property
    def rate(self) -> float:
        return self.ops / self.wall if self.wall else 0.0


def writer_totals(url: str) -> WriterTotals:
    """The atp writers' batches, jobs and version conflicts, summed over the workers by one
    scrape of /metrics (prometheus-client's multiprocess mode adds the processes' counters).
    Each worker publishes its counts about once a second, so a load's last second may be
    counted in neither window; jobs per batch and conflicts per batch are unaffected."""
    values: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("atp_writer_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return WriterTotals(
        batches=int(values.get("atp_writer_batches_total", 0)),
        jobs=int(values.get("atp_writer_jobs_total", 0)),
        conflicts=int(values.get("atp_writer_conflicts_total", 0)),
        busy=values.get("atp_writer_busy_seconds_total", 0.0),
        append=values.get("atp_writer_append_seconds_total", 0.0),
    )


def measure(
    service: Service,
    scenario: Scenario,
    executor: ProcessPoolExecutor,
    args: argparse.Namespace,
    pool: list[str],
    round_: int,
    max_cycles: int = 10_000_000,
    duration: float | None = None,
) -> Run:
    duration = args.duration if duration is None else duration
    start_at = time.time() + 0.5
    futures = [
        executor.submit(
            drive,
            service.url,
            scenario,
            pool,
            args.threads,
            start_at,
            duration,
            max_cycles // args.clients + (p < max_cycles % args.clients),
            LONG_TTL if scenario.atp_only else 900,
            round_ * 100 + p,
        )
        for p in range(args.clients)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    before = cpu_snapshot(service.pid, service.projector_pid)
    # The writers' counters of measured loads only (round 0 is set-up and warm-up).
    counted = service.name == "atp" and round_ > 0
    writers = writer_totals(service.url) if counted else None
    samples: list[Sample] = []
    run = Run()
    for future in futures:
        part, errors, cpu = future.result(timeout=duration + 600)
        samples.extend(part)
        run.errors += errors
        run.client_cpu += cpu
    used = cpu_snapshot(service.pid, service.projector_pid) - before
    if writers is not None:
        after = writer_totals(service.url)
        run.writer = WriterTotals(
            batches=after.batches - writers.batches,
            jobs=after.jobs - writers.jobs,
            conflicts=after.conflicts - writers.conflicts,
            busy=after.busy - writers.busy,
            append=after.append - writers.append,
        )
    measured = scenario.ops[scenario.measured]
    mine = [s for s in samples if s[0] == measured]
    run.wall = used.wall
    run.ops = sum(1 for s in mine if s[2] < 300)
    run.latencies = [s[1] for s in mine]
    run.statuses = Counter(s[2] for s in samples)
    run.requests = len(samples)
    used_by = used.server + used.postgres
    run.cpu_parts = {
        part: getattr(used, part) / run.ops if run.ops else float("nan")
        for part in ("server", "postgres", "projector", "redis")
    }
    if service.projector_pid is not None:
        used_by += used.projector + used.redis
    run.cpu_per_op = used_by / run.ops if run.ops else float("nan")
    run.busy = used.busy / used.wall if used.wall else 0.0
    return run


def pgbench(database: str, clients: int, duration: float, skus: int) -> dict[str, float]:
    """Transactions/s of the conditional UPDATE, one hot row and `skus` uniform rows."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS stock (sku int PRIMARY KEY, on_hand bigint, held bigint)"
        )
        conn.execute("TRUNCATE stock")
        conn.execute(
            "INSERT INTO stock SELECT g, 1000000000, 0 FROM generate_series(1, %s) g", (skus,)
        )
    parts = urlsplit(database)
    scripts = {
        "hot": "UPDATE stock SET held = held + 1 WHERE sku = 1 AND on_hand - held >= 1;\n",
        "uniform": f"\\set sku random(1, {skus})\n"
        "UPDATE stock SET held = held + 1 WHERE sku = :sku AND on_hand - held >= 1;\n",
    }
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in scripts.items():
            script = Path(tmp, f"{name}.sql")
            script.write_text(text)
            out = subprocess.run(
                [
                    *("pgbench", "-n", "-c", str(clients), "-j", "2"),
                    *("-T", str(max(1, round(duration))), "-f", str(script)),
                    *("-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)),
                    *("-U", parts.username or "postgres", parts.path.lstrip("/")),
                ],
                capture_output=True,
                text=True,
                timeout=duration + 120,
            )
            if out.returncode != 0:
                raise RuntimeError(f"pgbench failed: {out.stderr.strip()}")
            found = re.search(r"tps = ([\d.]+)", out.stdout)
            rates[name] = float(found.group(1)) if found else float("nan")
    return rates


# --- report ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    """The harness's median of the values that are not nan (nan when none is)."""
    return results.median([v for v in values if v == v])


def report(
    runs: dict[tuple[str, str], list[Run]],
    bench: list[dict[str, float]],
    args: argparse.Namespace,
) -> str:
    def cell(service: str, name: str) -> str:
        rs = runs.get((name, service))
        if not rs:
            return "-"
        rates = "/".join(f"{r.rate:,.0f}" for r in rs)
        lat = [x for r in rs for x in r.latencies]
        p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
        s409 = sum(r.statuses[409] for r in rs)
        bad = sum(n for r in rs for k, n in r.statuses.items() if k >= 500) + sum(
            r.errors for r in rs
        )
        cpu = median([r.cpu_per_op for r in rs]) * 1000
        return f"{rates:>13} {p50:6.1f} {p99:7.1f} {s409:6d} {bad:4d} {cpu:6.2f}"

    head = f"{'ops/s rounds':>13} {'p50ms':>6} {'p99ms':>7} {'409s':>6} {'5xx':>4} {'cpu ms':>6}"
    lines = [
        f"{'scenario':<9} | {'plain service':<{len(head)}} | {'atp':<{len(head)}} | atp/plain",
        f"{'':<9} | {head} | {head} |",
        "-" * (9 + 2 * len(head) + 18),
    ]

    def rate(service: str, name: str) -> float:
        return median([r.rate for r in runs.get((name, service), [])])

    for scenario in (s for s in SCENARIOS if s.name in args.scenarios):
        ratio = rate("atp", scenario.name) / rate("plain", scenario.name)
        shown = "-" if scenario.atp_only else f"{ratio:.2f}x"
        lines.append(
            f"{scenario.name:<9} | {cell('plain', scenario.name):<{len(head)}} | "
            f"{cell('atp', scenario.name)} | {shown}"
        )
    lines.append("")
    lines.append(
        "atp writers (over the rounds): jobs per batch, version conflicts / batches; the "
        "writer's busy share of the load's wall time, and its append (one statement and "
        "commit) on average"
    )
    for scenario in SCENARIOS:
        rs = [r for r in runs.get((scenario.name, "atp"), []) if r.writer]
        totals = [r.writer for r in rs if r.writer]
        if totals:
            batches = sum(t.batches for t in totals)
            jobs = sum(t.jobs for t in totals)
            conflicts = sum(t.conflicts for t in totals)
            busy = sum(t.busy for t in totals) / max(1e-9, sum(r.wall for r in rs))
            append = sum(t.append for t in totals) / max(1, batches + conflicts)
            lines.append(
                f"  {scenario.name:<9} {jobs / max(1, batches):5.1f} jobs/batch  "
                f"{conflicts:6,} conflicts / {batches:6,} batches"
                f" ({100 * conflicts / max(1, batches + conflicts):.0f}% of attempts redone)"
                f"  busy {100 * busy:3.0f}%  append {1000 * append:4.1f} ms each"
            )
    lines.append("")
    lines.append("CPU ms per operation by process, medians over rounds (server = the API workers):")
    for scenario in (s for s in SCENARIOS if s.name in args.scenarios):
        for service in ("plain", "atp"):
            rs = runs.get((scenario.name, service), [])
            if rs:
                parts = "  ".join(
                    f"{part} {1000 * median([r.cpu_parts[part] for r in rs]):.2f}"
                    for part in ("server", "postgres", "projector", "redis")
                    if service == "atp" or part in ("server", "postgres")
                )
                lines.append(f"  {scenario.name:<9} {service:<6} {parts}")
    lines.append("")
    if bench:
        for name in ("hot", "uniform"):
            rates = "/".join(f"{b[name]:,.0f}" for b in bench)
            lines.append(
                f"pgbench {name:<8} {args.pgbench_clients} clients, conditional UPDATE: "
                f"{rates} transactions/s"
            )
    lines.append(
        "bench clients' CPU us per request, by round: the same requests each round, so a "
        "service's rounds that differ here ran on a slower machine (compare one service's "
        "rounds: the two services' answers differ in size):"
    )
    for scenario in (s for s in SCENARIOS if s.name in args.scenarios):
        for service in ("plain", "atp"):
            rs = runs.get((scenario.name, service), [])
            if rs:
                per = "/".join(f"{1e6 * r.client_cpu / max(1, r.requests):.0f}" for r in rs)
                lines.append(f"  {scenario.name:<9} {service:<6} {per}")
    lines.append("")
    busy = [r.busy for rs in runs.values() for r in rs]
    client = median([r.client_cpu / r.wall for rs in runs.values() for r in rs if r.wall])
    lines.append(
        f"machine busy during the loads: median {100 * median(busy):.0f}% of "
        f"{100 * (os.cpu_count() or 1)}% (bench clients {100 * client:.0f}%); "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    lines.append("")
    uni = {s: rate(s, "uniform") for s in ("plain", "atp")}

    def rounds(top: tuple[str, str], bottom: tuple[str, str]) -> str:
        """The ratio in each round (the two loads of a round ran seconds apart)."""
        pairs = zip(runs.get(top, []), runs.get(bottom, []), strict=False)
        return "/".join(f"{t.rate / b.rate:.2f}" for t, b in pairs if b.rate)

    lines += [
        "ratios (medians over rounds; each round's own ratio after it), issue 12 targets in"
        " brackets:",
        f"  (a) uniform, atp/plain            {rate('atp', 'uniform') / uni['plain']:.2f}x"
        f"  [>= 1.0x]  {rounds(('uniform', 'atp'), ('uniform', 'plain'))}",
        f"  (b) hot SKU, atp/plain            {rate('atp', 'hot') / rate('plain', 'hot'):.2f}x"
        f"  [>= 1.5x, atp p99 <= plain p99]  {rounds(('hot', 'atp'), ('hot', 'plain'))}",
        f"  (c) atp, {args.holds} live holds / {FEW_HOLDS}   "
        f"{rate('atp', 'holds-N') / rate('atp', 'holds-10'):.2f}x  [>= 0.9x]  "
        f"{rounds(('holds-N', 'atp'), ('holds-10', 'atp'))}",
        f"  (d) 5-line / 1-line, plain        {rate('plain', '5-line') / uni['plain']:.2f}x",
        f"  (d) 5-line / 1-line, atp          {rate('atp', '5-line') / uni['atp']:.2f}x  [>= 0.5x]",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_checkout",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load (8)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over every scenario (2)")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of each service (2)")
    p.add_argument("--clients", type=int, default=4, help="client processes (4)")
    p.add_argument("--threads", type=int, default=8, help="connections per client process (8)")
    p.add_argument("--skus", type=int, default=1000, help="uniform SKUs (1000)")
    p.add_argument("--holds", type=int, default=10_000, help="live holds of holds-N (10000)")
    p.add_argument("--pgbench-clients", type=int, default=16, help="pgbench clients (16)")
    p.add_argument("--no-pgbench", action="store_true", help="skip the pgbench runs")
    p.add_argument(
        "--read-model",
        choices=("redis", "embedded"),
        default="redis",
        help="atp as deployed (redis: the Redis read model and one `atp project`, their CPU "
        "counted as atp's) or embedded (each worker projects in process and holds a write's "
        "answer until its model includes it)",
    )
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    p.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenarios to run (all; e.g. uniform,hot for a profile)",
    )
    p.add_argument(
        "--only", choices=("plain", "atp"), help="drive one service alone (both by default)"
    )
    args = p.parse_args(argv)
    names = {s.name for s in SCENARIOS}
    args.scenarios = [n for n in args.scenarios.split(",") if n]
    if not args.scenarios or not set(args.scenarios) <= names:
        p.error(f"--scenarios must name some of {', '.join(sorted(names))}")
    if not 0 < args.duration <= 120 or not 1 <= args.rounds <= 10:
        p.error("--duration must be in (0, 120] and --rounds in 1..10")
    if args.skus < 5 or args.holds < FEW_HOLDS:
        p.error(f"--skus must be >= 5 and --holds >= {FEW_HOLDS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    print(
        f"checkout side by side: {args.workers} workers each (atp's read model: "
        f"{args.read_model}), {args.clients} client processes"
        f" x {args.threads} connections, {args.rounds} round(s) of {args.duration:g}s; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    by_name = pools(args.skus)
    catalogue = {sku: STOCK for pool in by_name.values() for sku in pool}
    runs: dict[tuple[str, str], list[Run]] = {}
    bench: list[dict[str, float]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        plain_db = stack.enter_context(fresh_database("plain_bench"))
        atp_db = stack.enter_context(fresh_database("atp_bench"))
        pg_db = None if args.no_pgbench else stack.enter_context(fresh_database("pgbench"))
        plain = stack.enter_context(plain_service(plain_db, args.workers, tmp / "plain.log"))
        env = service_env(atp_db)
        if args.read_model == "redis":
            db = pick_redis_db(args.redis, None)
            redis_url = f"{args.redis.rstrip('/')}/{db}"
            prefix = f"atpcheckout{os.getpid()}"
            env = service_env(atp_db, ATP_REDIS_URL=redis_url, ATP_REDIS_PREFIX=prefix)
            stack.callback(redis_cleanup, redis_url, prefix)
        server = stack.enter_context(
            running_service(env, workers=args.workers, log=tmp / "atp.log")
        )
        projecting = None
        if args.read_model == "redis":
            projecting = stack.enter_context(projector(env))
        atp = Service(
            "atp",
            server.url,
            server.process.pid,
            atp_db,
            projecting.pid if projecting is not None else None,
        )
        executor = stack.enter_context(
            ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
        )
        seed_plain(plain_db, catalogue)
        with server.client() as admin:
            seed(admin, catalogue)
        # The live holds of (c), taken before the clock starts; they last the whole run.
        for sku, count, name in (
            (HOLDS_FEW, FEW_HOLDS, "holds-10"),
            (HOLDS_MANY, args.holds, "holds-N"),
        ):
            if name not in args.scenarios:
                continue
            scenario = Scenario("prepare", ("reserve",), 0, "", atp_only=True)
            taken = measure(atp, scenario, executor, args, [sku], 0, count, duration=600)
            if taken.ops != count:
                raise RuntimeError(f"{sku}: {taken.ops} of {count} holds taken")
        # Warm-up, not recorded: every pooled connection of both services has served and
        # prepared its statements before the first measured load.
        for service in (plain, atp):
            measure(service, SCENARIOS[0], executor, args, by_name["uniform"], 0, duration=1)
        print(f"  ready in {time.monotonic() - started:.0f}s", flush=True)
        for round_ in range(args.rounds):
            if pg_db is not None:
                bench.append(pgbench(pg_db, args.pgbench_clients, args.duration, args.skus))
            for scenario in round_order(round_):
                if scenario.name not in args.scenarios:
                    continue
                for service in (plain, atp) if round_ % 2 == 0 else (atp, plain):
                    if (scenario.atp_only and service is plain) or args.only not in (
                        None,
                        service.name,
                    ):
                        continue
                    run = measure(
                        service, scenario, executor, args, by_name[scenario.pool], round_ + 1
                    )
                    runs.setdefault((scenario.name, service.name), []).append(run)
                    print(
                        f"  round {round_ + 1} {scenario.name:<8} {service.name:<5} "
                        f"{run.rate:8,.0f} ops/s",
                        flush=True,
                    )
        over = {s.name: oversold(s, args.skus) for s in (plain, atp)}
        failed = sum(
            n for rs in runs.values() for r in rs for k, n in r.statuses.items() if k >= 500
        ) + sum(r.errors for rs in runs.values() for r in rs)
    print()
    print(report(runs, bench, args))
    print()
    print(
        f"oversold SKUs: plain {over['plain']}, atp {over['atp']}; total wall time "
        f"{time.monotonic() - started:.0f}s (services stopped, databases dropped)"
    )
    if failed or any(over.values()):
        print(f"FAILED: {failed} answer(s) 5xx or lost, oversold {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
