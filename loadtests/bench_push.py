"""Channel push benchmark: an ATS change in the ledger -> the fake WooCommerce store updated.

Runs the whole pipeline on loopback, as `tests/e2e/test_channels.py` does (tests/support/channel_stack.py): a fresh
PostgreSQL database, RabbitMQ vhost and Redis key prefix; `atp migrate`, `atp serve
--workers 2`, `atp project` and `atp push woocommerce --store shop` as subprocesses; a
FakeWooCommerce (in this process) holding a catalogue of simple products (and, with
--parents, variable products with variations); the channel, the stock and the integration
record created through the API. The pusher first reconciles the whole catalogue.

Then it drives ATS changes at a fixed rate (open loop: change k is due at k/rate s) for a
fixed time: stock adjustments of +1..+3 units on random SKUs, each SKU owned by one sender
thread, so every SKU's figure only grows and each change's resulting figure is known.

  --driver api     POST /v1/adjustments from client processes (threads with keep-alive
                   connections), through the API like a WMS would;
  --driver ledger  AdjustStock commands straight into the ledger through a CommandService
                   in a client process (the API's writer, without HTTP), for when the API
                   cannot sustain the rate on this machine.

Per change, the delay runs from the ledger event's `occurred_at` (read back from the
ledger by its position) to the fake store's write of that SKU that reached the change's
figure or a later one (the fake's write log; a figure superseded before it was written
counts as delivered by the write that superseded it). It reports p50/p99/max, the
achieved rate, the HTTP requests the store received per 1,000 changes (ideal: 10, i.e.
100 SKUs in every request), checks that the store and the API end at exactly the final
figures with nothing dead-lettered, and prints PASS/FAIL against the target: p99 < 1 s at
500 changes/s. Everything is torn down at the end.

    python -m loadtests.bench_push --rate 500 --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.bench_reservations import percentile
from loadtests.harness.cpu import cpu_snapshot, processes
from tests.support.channel_stack import CHANNEL, STORE, Catalogue, ChannelStack, metric, samples
from tests.support.server import ADMIN_TOKEN

LOCATION = "WH1"
INITIAL = 1000
TARGET_P99 = 1.0
TARGET_RATE = 500.0

Change = tuple[int, str, int, float, float, int]
"""(index, sku, figure after the change, sent at, answered at (unix time), ledger position)."""


# --- the senders (client processes) --------------------------------------------------------------


def _schedule(
    sender: int, senders: int, skus: list[str], total: int, seed: int
) -> list[tuple[int, str, int]]:
    """The changes of one sender: every `senders`-th slot from `sender`, on its own SKUs."""
    own = skus[sender::senders]
    rng = random.Random(seed * 7919 + sender)
    return [(k, rng.choice(own), rng.randint(1, 3)) for k in range(sender, total, senders)]


class KeepAliveConnection:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {
            "Authorization": f"Bearer {ADMIN_TOKEN}",
            "Content-Type": "application/json",
        }
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, bytes, int]:
        # One key for every attempt: a retry after a lost answer adjusts once.
        headers = {**self.headers, "Idempotency-Key": os.urandom(16).hex()}
        for attempt in range(5):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                position = int(response.getheader("ATP-Position") or 0)
                if response.status >= 500 and attempt < 4:
                    time.sleep(0.1)
                    continue
                return response.status, data, position
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt == 4:
                    raise
                time.sleep(0.1)
        raise RuntimeError("unreachable")


def _send_api(
    url: str,
    first: int,
    senders: int,
    threads: int,
    skus: list[str],
    total: int,
    rate: float,
    start_at: float,
    seed: int,
) -> tuple[list[Change], int, float]:
    """Client process: senders first..first+threads-1 over HTTP. Returns the changes, the
    failed requests and the CPU seconds used."""
    connections = [KeepAliveConnection(url) for _ in range(threads)]
    for c in connections:
        c.conn.request("GET", "/health")
        c.conn.getresponse().read()

    def run(t: int) -> tuple[list[Change], int]:
        sender = first + t
        conn = connections[t]
        figure = dict.fromkeys(skus[sender::senders], INITIAL)
        out: list[Change] = []
        failed = 0
        for k, sku, delta in _schedule(sender, senders, skus, total, seed):
            time.sleep(max(0.0, start_at + k / rate - time.time()))
            body = {"location": LOCATION, "sku": sku, "delta": delta, "reason": "bench"}
            sent = time.time()
            status, data, position = conn.post("/v1/adjustments", json.dumps(body).encode())
            answered = time.time()
            if status != 201:
                failed += 1
                continue
            figure[sku] += delta
            on_hand = json.loads(data)["lines"][0]["on_hand"]
            if on_hand != figure[sku]:
                raise RuntimeError(f"{sku}: on_hand {on_hand}, expected {figure[sku]}")
            out.append((k, sku, figure[sku], sent, answered, position))
        return out, failed

    cpu = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(run, range(threads)))
    for c in connections:
        c.conn.close()
    return [x for p in parts for x in p[0]], sum(p[1] for p in parts), time.process_time() - cpu


def _send_ledger(
    database_url: str,
    senders: int,
    skus: list[str],
    total: int,
    rate: float,
    start_at: float,
    seed: int,
) -> tuple[list[Change], int, float]:
    """Client process: every sender as a thread submitting AdjustStock to a CommandService
    of its own (group commit over the threads), no HTTP."""
    from adapters.ledger import Ledger, ledger_env
    from api.service.commands import Applied, CommandService, Job, command_decider
    from atp import commands as c

    ledger = Ledger(env=ledger_env(database_url, tempfile.gettempdir(), create_table=False))
    service = CommandService(ledger)
    service.start()

    def run(sender: int) -> tuple[list[Change], int]:
        figure = dict.fromkeys(skus[sender::senders], INITIAL)
        out: list[Change] = []
        failed = 0
        for k, sku, delta in _schedule(sender, senders, skus, total, seed):
            time.sleep(max(0.0, start_at + k / rate - time.time()))
            command = c.AdjustStock(location=LOCATION, sku=sku, delta=delta, reason="bench")
            sent = time.time()
            try:
                result = service.run_sync(Job(command_decider(command), "bench"))
            except Exception:
                failed += 1
                continue
            answered = time.time()
            if not isinstance(result, Applied) or result.position is None:
                failed += 1
                continue
            figure[sku] += delta
            out.append((k, sku, figure[sku], sent, answered, result.position))
        return out, failed

    cpu = time.process_time()
    try:
        with ThreadPoolExecutor(senders) as pool:
            parts = list(pool.map(run, range(senders)))
    finally:
        service.stop()
        ledger.close()
    return [x for p in parts for x in p[0]], sum(p[1] for p in parts), time.process_time() - cpu


# --- measuring -----------------------------------------------------------------------------------


def event_times(database_url: str, positions: list[int]) -> dict[int, float]:
    """Ledger position -> the event's occurred_at (unix time)."""
    from adapters.ledger import Ledger, decode_payload, ledger_env

    wanted = set(positions)
    out: dict[int, float] = {}
    ledger = Ledger(env=ledger_env(database_url, tempfile.gettempdir(), create_table=False))
    try:
        start, stop = min(wanted), max(wanted)
        while start <= stop:
            batch = ledger.recorder.select_notifications(start, 1000, stop=stop)
            if not batch:
                break
            for n in batch:
                if n.id in wanted:
                    _, occurred_at, _ = decode_payload(n.topic, n.state)
                    out[n.id] = occurred_at.timestamp()
            start = batch[-1].id + 1
    finally:
        ledger.close()
    return out


@dataclass
class Result:
    args: argparse.Namespace
    changes: list[Change] = field(default_factory=list)
    failed: int = 0
    client_cpu: float = 0.0
    delays: list[float] = field(default_factory=list)
    from_answer: list[float] = field(default_factory=list)
    undelivered: int = 0
    latencies: list[float] = field(default_factory=list)
    rate: float = 0.0
    drive_seconds: float = 0.0
    settle_seconds: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int | None] = field(default_factory=Counter)
    items_written: int = 0
    distinct_skus: int = 0
    wrong_store: int = 0
    wrong_api: int = 0
    queue: tuple[int, int] = (0, 0)
    pusher_under_1s: float = math.nan
    pusher_count: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    logdir: Path | None = None

    @property
    def per_1000(self) -> float:
        total = sum(self.requests.values())
        return 1000 * total / len(self.changes) if self.changes else math.nan

    @property
    def passed(self) -> bool:
        return (
            bool(self.changes)
            and percentile(self.delays, 0.99) < TARGET_P99
            and self.rate >= 0.95 * self.args.rate
            and self.args.rate >= TARGET_RATE
            and not (self.wrong_store or self.wrong_api or self.undelivered or self.failed)
            and self.queue == (0, 0)
        )


def measure(stack: ChannelStack, result: Result, drive_started: float) -> None:
    """Delays from the fake's write log, and the requests it received."""
    writes: dict[str, tuple[list[float], list[int]]] = {}
    for w in stack.wc.writes():  # oldest first
        if w.time >= drive_started and w.after is not None:
            times, highest = writes.setdefault(w.sku, ([], []))
            times.append(w.time)
            # Figures only grow: the first write at or above a figure delivered it.
            highest.append(max(w.after, highest[-1]) if highest else w.after)
    occurred = event_times(stack.database_url, [c[5] for c in result.changes])
    for _, sku, figure, sent, answered, position in result.changes:
        result.latencies.append(answered - sent)
        times, highest = writes.get(sku, ([], []))
        i = bisect_left(highest, figure)
        if i >= len(highest):
            result.undelivered += 1
            continue
        result.delays.append(times[i] - occurred.get(position, sent))
        result.from_answer.append(times[i] - answered)
    result.distinct_skus = len({c[1] for c in result.changes})
    for r in stack.wc.requests():
        if r.time >= drive_started:
            kind = "POST batch" if r.method == "POST" else f"{r.method} lookup"
            result.requests[kind] += 1
            result.statuses[r.status] += 1
            if r.method == "POST" and r.status == 200:
                result.items_written += len(r.json().get("update", []))


def check_final(stack: ChannelStack, expected: dict[str, int], result: Result) -> None:
    skus = sorted(expected)
    store = stack.store_stock(skus)
    result.wrong_store = sum(1 for s in skus if store[s] != expected[s])
    position = stack.catch_up()
    api: dict[str, int] = {}
    for i in range(0, len(skus), 100):
        params: list[tuple[str, str | int]] = [("sku", s) for s in skus[i : i + 100]]
        params.append(("min_position", position))
        r = stack.http.get(f"/v1/availability/{CHANNEL}", params=params)
        r.raise_for_status()
        api.update({item["sku"]: item["available"] for item in r.json()["items"]})
    result.wrong_api = sum(1 for s in skus if api.get(s) != expected[s])
    result.queue = stack.queues()


def converged(stack: ChannelStack, expected: dict[str, int]) -> bool:
    return all(stack.wc.stock_of(s) == q for s, q in expected.items())


# --- running -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Result:
    simple = [f"B-{i:05d}" for i in range(args.skus - args.parents * args.per_parent)]
    variable = {
        f"BV-{p:03d}": [f"BV-{p:03d}-{v:02d}" for v in range(args.per_parent)]
        for p in range(args.parents)
    }
    cat = Catalogue(simple, variable)
    skus = cat.skus
    result = Result(args)
    total = int(args.rate * args.duration)
    logdir = result.logdir = Path(tempfile.mkdtemp(prefix="atp-bench-push-"))
    with ChannelStack(
        logdir,
        cat,
        workers=args.workers,
        rate=args.store_rate,
        webhooks=False,
        pusher_log_level="warning",
        tag="atp_bench_push",
    ) as stack:
        print(f"service on {stack.url}; logs in {logdir}", flush=True)
        started = time.monotonic()
        stack.seed({LOCATION: dict.fromkeys(skus, INITIAL)}, locations=(LOCATION,))
        stack.start_pusher()
        expected = dict.fromkeys(skus, INITIAL)
        deadline = time.monotonic() + 120
        while not converged(stack, expected):
            if time.monotonic() > deadline:
                raise RuntimeError("the initial reconciliation did not finish in 120 s")
            time.sleep(0.5)
        print(f"  catalogue of {len(skus)} SKUs seeded and reconciled in "
              f"{time.monotonic() - started:.1f}s", flush=True)  # fmt: skip

        time.sleep(2.5)  # the pusher's report of the reconciliation, before the clock runs
        histogram_before = pusher_histogram(stack)
        senders = args.clients * args.threads if args.driver == "api" else args.threads
        context = multiprocessing.get_context("spawn")
        processes = args.clients if args.driver == "api" else 1
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            list(pool.map(time.sleep, [0.2] * processes))  # started before the clock runs
            start_at = time.time() + 1.0
            cpu_before = {name: cpu_snapshot(p.pid) for name, p in stack.procs.items()}
            named_before, own_before = cpu_by_name(), time.process_time()
            if args.driver == "api":
                futures = [
                    pool.submit(
                        _send_api,
                        stack.url,
                        p * args.threads,
                        senders,
                        args.threads,
                        skus,
                        total,
                        args.rate,
                        start_at,
                        args.seed,
                    )
                    for p in range(args.clients)
                ]
            else:
                futures = [
                    pool.submit(
                        _send_ledger,
                        stack.database_url,
                        senders,
                        skus,
                        total,
                        args.rate,
                        start_at,
                        args.seed,
                    )
                ]
            for future in futures:
                changes, failed, cpu = future.result(timeout=args.duration + 600)
                result.changes += changes
                result.failed += failed
                result.client_cpu += cpu
        result.changes.sort()
        last_answer = max((c[4] for c in result.changes), default=start_at)
        result.drive_seconds = last_answer - start_at
        result.rate = len(result.changes) / result.drive_seconds if result.drive_seconds else 0
        print(f"  drove {len(result.changes)} changes in {result.drive_seconds:.1f}s", flush=True)

        for _, sku, figure, *_ in result.changes:
            expected[sku] = max(expected[sku], figure)
        deadline = time.monotonic() + 120
        while not converged(stack, expected) and time.monotonic() < deadline:
            time.sleep(0.2)
        result.settle_seconds = time.time() - last_answer
        cpu_after = {name: cpu_snapshot(p.pid) for name, p in stack.procs.items()}
        named_after, own_after = cpu_by_name(), time.process_time()
        wall = cpu_after["api"].wall - cpu_before["api"].wall
        cpu = result.cpu
        cpu["machine, all of it"] = (cpu_after["api"].busy - cpu_before["api"].busy) / wall
        for name in cpu_before:
            cpu[f"atp {name}"] = (cpu_after[name].server - cpu_before[name].server) / wall
        cpu["postgres"] = (cpu_after["api"].postgres - cpu_before["api"].postgres) / wall
        for name in named_after:
            cpu[name] = (named_after[name] - named_before.get(name, 0.0)) / wall
        cpu["senders"] = result.client_cpu / wall
        cpu["this process (the fake store)"] = (own_after - own_before) / wall
        accounted = sum(v for k, v in cpu.items() if k != "machine, all of it")
        cpu["anything else"] = cpu["machine, all of it"] - accounted
        time.sleep(2.5)  # the pusher's last report
        check_final(stack, expected, result)
        measure(stack, result, start_at)
        histogram = pusher_histogram(stack)
        count = histogram.get("count", 0) - histogram_before.get("count", 0)
        under = histogram.get("1", 0) - histogram_before.get("1", 0)
        result.pusher_count = int(count)
        result.pusher_under_1s = under / count if count else math.nan
    return result


def pusher_histogram(stack: ChannelStack) -> dict[str, float]:
    """The pusher's atp_push_delay_seconds as merged into /metrics: le -> cumulative count."""
    text = stack.metrics()
    labels = {"kind": "woocommerce", "store": STORE, "channel": CHANNEL}
    out = {s["le"]: v for s, v in samples(text, "atp_push_delay_seconds_bucket", **labels)}
    out["count"] = metric(text, "atp_push_delay_seconds_count", **labels)
    return out


SERVERS = {"beam.smp": "rabbitmq", "redis-server": "redis"}


def cpu_by_name() -> dict[str, float]:
    """CPU seconds used so far by RabbitMQ and Redis (by process name)."""
    out = dict.fromkeys(SERVERS.values(), 0.0)
    for name, _, seconds in processes().values():
        if name in SERVERS:
            out[SERVERS[name]] += seconds
    return out


def table(r: Result) -> str:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f}" if values else "-"

    a = r.args
    p99 = percentile(r.delays, 0.99) if r.delays else math.inf
    total_requests = sum(r.requests.values())
    rows = [
        (
            "driver",
            f"{a.driver} ({'POST /v1/adjustments' if a.driver == 'api' else 'CommandService'})",
        ),
        ("catalogue", f"{a.skus} SKUs ({a.parents} variable x {a.per_parent} variations)"),
        ("store rate limit (req/s)", f"{a.store_rate:g}"),
        ("changes planned / done", f"{int(a.rate * a.duration)} / {len(r.changes)}"),
        ("  failed writes", str(r.failed)),
        ("target rate (changes/s)", f"{a.rate:g}"),
        ("achieved rate (changes/s)", f"{r.rate:.0f}"),
        ("distinct SKUs changed", str(r.distinct_skus)),
        ("write latency p50/p99 (ms)", f"{ms(r.latencies, 0.5)}/{ms(r.latencies, 0.99)}"),
        ("ledger event -> store, p50 (ms)", ms(r.delays, 0.5)),
        ("ledger event -> store, p90 (ms)", ms(r.delays, 0.9)),
        ("ledger event -> store, p99 (ms)", ms(r.delays, 0.99)),
        ("ledger event -> store, max (ms)", ms(r.delays, 1.0)),
        (
            "write answered -> store, p50/p99 (ms)",
            f"{ms(r.from_answer, 0.5)}/{ms(r.from_answer, 0.99)}",
        ),
        (
            "pusher's own histogram: <= 1 s",
            f"{100 * r.pusher_under_1s:.1f}% of {r.pusher_count} writes of a figure",
        ),
        ("changes never delivered", str(r.undelivered)),
        (
            "store requests",
            f"{total_requests} ({', '.join(f'{k} {v}' for k, v in sorted(r.requests.items()))})",
        ),
        ("  by status", " ".join(f"{k}x{v}" for k, v in sorted(r.statuses.items(), key=str))),
        ("SKU figures written", str(r.items_written)),
        ("  per POST (max 100)", f"{r.items_written / max(1, r.requests['POST batch']):.1f}"),
        ("requests per 1,000 changes (ideal 10)", f"{r.per_1000:.1f}"),
        ("settled after last write (s)", f"{r.settle_seconds:.1f}"),
        ("store != final figure (SKUs)", str(r.wrong_store)),
        ("API != final figure (SKUs)", str(r.wrong_api)),
        ("push queue ready / dead letters", f"{r.queue[0]} / {r.queue[1]}"),
    ]
    rows.append(("CPU, % of one core (2 cores = 200)", ""))
    for name, share in r.cpu.items():
        rows.append((f"  {name}", f"{100 * share:.0f}"))
    verdict = "PASS" if r.passed else "FAIL"
    rows.append(
        (f"TARGET p99 < {TARGET_P99:g} s at {TARGET_RATE:g}/s",
         f"{verdict} (p99 {p99 * 1000:.0f} ms at {r.rate:.0f}/s)")
    )  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_push",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--driver",
        choices=["api", "ledger"],
        default="api",
        help="api: POST /v1/adjustments; ledger: CommandService in process (api)",
    )
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="ATS changes per second (500)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of changes (15)")
    p.add_argument("--skus", type=int, default=2000, help="SKUs in the catalogue (2000)")
    p.add_argument(
        "--parents", type=int, default=0, help="variable products among them (0: all simple)"
    )
    p.add_argument("--per-parent", type=int, default=10, help="variations per variable product")
    p.add_argument(
        "--store-rate",
        type=float,
        default=25.0,
        help="the integration's max_requests_per_second (25)",
    )
    p.add_argument("--workers", type=int, default=2, help="atp serve --workers (2)")
    p.add_argument("--clients", type=int, default=3, help="client processes, driver api (3)")
    p.add_argument("--threads", type=int, default=8, help="sender threads per client process (8)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)  # fmt: skip
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120]")
    if not 0 < args.rate <= 5000:
        p.error("--rate must be in (0, 5000]")
    if args.parents * args.per_parent >= args.skus:
        p.error("--parents x --per-parent must leave some simple products")
    if args.skus > 20_000:
        p.error("--skus must be at most 20000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(
        f"atp push benchmark ({datetime.now().astimezone():%Y-%m-%d %H:%M %Z}): "
        f"{args.rate:g} changes/s for {args.duration:g}s over {args.skus} SKUs, driver {args.driver}",
        flush=True,
    )
    started = time.monotonic()
    result = run(args)
    print()
    print(table(result))
    print()
    print(f"total wall time {time.monotonic() - started:.0f}s (everything stopped and dropped)")
    if result.passed and result.logdir is not None:
        shutil.rmtree(result.logdir, ignore_errors=True)
    elif result.logdir is not None:
        print(f"the services' logs are kept in {result.logdir}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
