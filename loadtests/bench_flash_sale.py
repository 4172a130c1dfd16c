"""A sustained flash sale: N minutes of shoppers on a few hot SKUs, two API workers.

Issue 12, target (4): "a 10-minute sustained flash sale with two workers: zero oversell,
zero 5xx, no batch failed, every 409 only after the stock was really gone".

Starts, on a fresh PostgreSQL database and a free Redis database, `atp serve --workers 2`
(its log to a file) and one `atp project`, seeds a location, a channel, a few hot SKUs
with little stock and some well-stocked cold ones, then runs the sale for --minutes:

  shoppers   client processes, each a pool of threads with one keep-alive connection
             (http.client): reserve 1-2 units (a hot SKU mostly, a cold one otherwise,
             a short TTL, a fresh Idempotency-Key each request), then commit the hold
             into an order (fresh order id), release it, or walk away (the hold expires
             and the sweeper inside `atp serve` records it);
  restocker  a thread of this process receives --restock units of every hot SKU every
             --restock-every seconds (`POST /v1/receipts`), so the hot SKUs sell out and
             are restocked many times.

Every answer is kept (status, problem code, latency, and the ATP-Position of each 409,
the position of its idempotency record). Afterwards, once the projector has caught up:

  oversell   held + allocated <= on_hand for every SKU at every location, both in the
             read model (`GET /v1/items/{sku}?min_position=<head>`) and in the ledger;
  5xx        no 5xx answer and no transport error;
  batches    the service log has no "writer failed a batch" line and no Traceback;
  409s       every `insufficient-stock` 409 was right: the ledger replayed up to just
             before its position (the SKU's stream and the policies, folded with the
             domain's evolve functions) gives the channel less than the requested
             quantity at the time of the decision (its idempotency record's
             `recorded_at`). A hold the sweeper of the other worker marked expired
             before that position, but whose expiry was still ahead of the decision,
             counts as held (it was);
  commits    the units allocated in the ledger are those of the commits answered 201.

It prints throughput, latency, the 201/409 split, units received against units sold,
the sell-outs shoppers met, the writers' batch and conflict counters, and a verdict
table; the exit status is 1 on any violation. Everything is torn down (services
stopped, database dropped, the Redis keys deleted).

    python -m loadtests.bench_flash_sale --minutes 10
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from psycopg.rows import tuple_row

from adapters.ledger import Ledger, decode_payload, history, ledger_env, stream_id
from adapters.records import ResponseRecorded
from atp import events as ev
from atp.ats import channel_availability
from atp.state import ItemState, Policies, evolve_item, evolve_policies
from atp.streams import POLICIES
from loadtests.bench_checkout import writer_totals
from loadtests.bench_reservations import (
    CHANNEL,
    LOCATION,
    KeepAliveConnection,
    WriterTotals,
    percentile,
    seed,
)
from loadtests.harness.redis_probe import pick_redis_db, redis_cleanup
from loadtests.harness.services import projector, wait_caught_up
from loadtests.harness.tables import render_table
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, running_service, service_env

INSUFFICIENT = "insufficient-stock"
BATCH_FAILED = "writer failed a batch"
HISTORY_PAGE = 10_000
RECORDS_PAGE = 5_000
SHOWN = 5
"""Examples of each violation printed."""


# --- shoppers (client processes) -----------------------------------------------------------


class Answer(NamedTuple):
    """One answered request of a shopper."""

    op: str
    """reserve, commit or release."""
    sku: str
    quantity: int
    """Units reserved (or committed, released: the reservation's)."""
    status: int
    code: str
    """The problem's `code` of an error answer ("" otherwise)."""
    latency: float
    """Seconds from sending the request to reading the whole answer."""
    position: int
    """The answer's ATP-Position header (0 when absent)."""


@dataclass(frozen=True)
class Shopping:
    """What every shopper does: the SKUs, the share of hot picks, the reservation TTL
    (seconds) and the shares of holds committed and released (the rest walk away)."""

    hot: tuple[str, ...]
    cold: tuple[str, ...]
    hot_share: float
    ttl: int
    commit: float
    release: float


def _code(status: int, body: bytes) -> str:
    if status < 400:
        return ""
    try:
        return str(json.loads(body).get("code", ""))
    except (ValueError, AttributeError):
        return ""


def shop(
    url: str, plan: Shopping, threads: int, start_at: float, duration: float, seed_: int
) -> tuple[list[Answer], int, float]:
    """Runs in a client process: `threads` shoppers, each with its own keep-alive
    connection, from `start_at` (epoch seconds) for `duration` seconds. Returns every
    answer, the transport errors (timeouts, resets: the answer was lost) and the CPU
    seconds this process used."""
    connections = [KeepAliveConnection(url, ADMIN_TOKEN) for _ in range(threads)]
    for connection in connections:  # connected before the start
        if connection.request("GET", "/health") != 200:
            raise RuntimeError("the service is not healthy")
    prefix = uuid.uuid4().hex[:12]

    def run(index: int) -> tuple[list[Answer], int]:
        conn = connections[index]
        rng = random.Random(seed_ * 1000 + index)
        answers: list[Answer] = []
        errors = 0
        deadline = start_at + duration
        n = 0

        def call(op: str, path: str, body: object, sku: str, quantity: int) -> bytes | None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                status, raw, position = conn.post(path, body, f"{prefix}-{index}-{n}-{op}")
            except (OSError, http.client.HTTPException):
                errors += 1
                return None
            latency = time.perf_counter() - t0
            answers.append(Answer(op, sku, quantity, status, _code(status, raw), latency, position))
            return raw if status < 300 else None

        while time.time() < deadline:
            n += 1
            pool = plan.hot if not plan.cold or rng.random() < plan.hot_share else plan.cold
            sku = rng.choice(pool)
            quantity = 1 if rng.random() < 0.7 else 2
            body = {
                "channel": CHANNEL,
                "lines": [{"sku": sku, "quantity": quantity}],
                "ttl_seconds": plan.ttl,
            }
            held = call("reserve", "/v1/reservations", body, sku, quantity)
            if held is None:
                continue
            reservation = json.loads(held)["reservation_id"]
            choice = rng.random()
            if choice < plan.commit:
                path = f"/v1/reservations/{reservation}/commit"
                call("commit", path, {"order_id": f"{prefix}-{index}-{n}"}, sku, quantity)
            elif choice < plan.commit + plan.release:
                call("release", f"/v1/reservations/{reservation}/release", {}, sku, quantity)
            # else: the shopper walks away; the hold expires after plan.ttl seconds.
        return answers, errors

    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = time.process_time()
    try:
        with ThreadPoolExecutor(threads) as executor:
            parts = list(executor.map(run, range(threads)))
    finally:
        for c in connections:
            c.close()
    cpu_used = time.process_time() - cpu_before
    return [a for p in parts for a in p[0]], sum(p[1] for p in parts), cpu_used


def _ready(_: int) -> int:
    """A no-op run in each client process before the sale (the spawn and imports done)."""
    return os.getpid()


# --- the restocker (a thread of this process) ------------------------------------------------


@dataclass
class Restocks:
    """What the restocker did: receipts answered (by status), units received (201s only),
    latencies (seconds) and transport errors."""

    statuses: Counter[int] = field(default_factory=Counter)
    units: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def restock(
    url: str, skus: Iterable[str], units: int, every: float, stop: threading.Event
) -> Restocks:
    """Receives `units` of each SKU at the bench location every `every` seconds (one
    receipt, a fresh Idempotency-Key) until `stop` is set."""
    done = Restocks()
    lines = [{"sku": sku, "quantity": units} for sku in skus]
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as client:
        n = 0
        while not stop.wait(every):
            n += 1
            body = {"location": LOCATION, "lines": lines, "reference": f"restock-{n}"}
            t0 = time.perf_counter()
            try:
                answer = client.post(
                    "/v1/receipts", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                )
            except httpx.HTTPError:
                done.errors += 1
                continue
            done.latencies.append(time.perf_counter() - t0)
            done.statuses[answer.status_code] += 1
            if answer.status_code == 201:
                done.units += units * len(lines)
    return done


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Check:
    """One verdict line: what was checked, how many violations, examples of them."""

    name: str
    checked: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def fail(self, example: str) -> None:
        self.violations += 1
        if len(self.examples) < SHOWN:
            self.examples.append(example)


def oversell_in_read_model(url: str, skus: list[str], head: int) -> Check:
    """held + allocated <= on_hand at every location of every SKU, read from the read
    model at or after ledger position `head`."""
    check = Check("no oversell (read model)")
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as client:
        for sku in skus:
            answer = client.get(f"/v1/items/{sku}", params={"min_position": head})
            answer.raise_for_status()
            for loc in answer.json()["locations"]:
                check.checked += 1
                if loc["held"] + loc["allocated"] > loc["on_hand"] or loc["held"] < 0:
                    check.fail(
                        f"{sku}@{loc['location']}: held {loc['held']} + allocated "
                        f"{loc['allocated']} > on hand {loc['on_hand']}"
                    )
    return check


def final_items(ledger: Ledger, skus: list[str]) -> dict[str, ItemState]:
    """Each SKU's state in the ledger now."""
    items = {}
    for sku in skus:
        item, _ = ledger.load(("item", sku))
        assert isinstance(item, ItemState)
        items[sku] = item
    return items


def oversell_in_ledger(items: dict[str, ItemState]) -> Check:
    """held + allocated <= on_hand at every location of every SKU, in the ledger."""
    check = Check("no oversell (ledger)")
    for sku, item in items.items():
        for code in item.locations:
            stock = item.at(code)
            check.checked += 1
            if stock.held + stock.allocated > stock.on_hand or stock.held < 0:
                check.fail(
                    f"{sku}@{code}: held {stock.held} + allocated {stock.allocated} "
                    f"> on hand {stock.on_hand}"
                )
    return check


def stored_records(ledger: Ledger, positions: list[int]) -> dict[int, Any]:
    """The payloads stored at the given ledger positions (notification ids)."""
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    sql = (
        f"SELECT notification_id, topic, state FROM {datastore.schema}.{table} "
        "WHERE notification_id = ANY(%s)"
    )
    found: dict[int, Any] = {}
    with datastore.get_connection() as conn:
        cursor = conn.cursor(binary=True, row_factory=tuple_row)
        for i in range(0, len(positions), RECORDS_PAGE):
            cursor.execute(sql, (positions[i : i + RECORDS_PAGE],))
            for position, topic, state in cursor.fetchall():
                found[int(position)] = decode_payload(topic, bytes(state))[0]
    return found


@dataclass
class Rejections:
    """The replay of the insufficient-stock 409s: the check, the sell-outs shoppers met
    (restock intervals of a SKU in which a 409 found nothing available), and whether
    the replay's final figures equal the ledger's (the checker's own check)."""

    check: Check
    sellouts: int = 0
    replay_mismatches: list[str] = field(default_factory=list)


def check_rejections(
    ledger: Ledger, answers: list[Answer], items: dict[str, ItemState]
) -> Rejections:
    """Every insufficient-stock 409 of a reservation came when the channel had less than
    the quantity asked for: each SKU's stream and the policies are folded in position
    order, and each 409 is judged on the state just before its position, at its
    decision time (`recorded_at` of the idempotency record at that position)."""
    check = Check("every 409 after stock was gone")
    result = Rejections(check)
    rejected = [a for a in answers if a.op == "reserve" and a.code == INSUFFICIENT]
    unplaced = [a for a in rejected if a.position <= 0]
    for a in unplaced:
        check.checked += 1
        check.fail(f"{a.sku}: a 409 without ATP-Position")
    placed = [a for a in rejected if a.position > 0]
    records = stored_records(ledger, sorted({a.position for a in placed}))
    by_sku: dict[str, list[tuple[int, int, datetime]]] = defaultdict(list)
    for a in placed:
        record = records.get(a.position)
        if not isinstance(record, ResponseRecorded) or record.status_code != 409:
            check.checked += 1
            check.fail(f"{a.sku}: position {a.position} holds no 409 record ({record!r:.80})")
            continue
        by_sku[a.sku].append((a.position, a.quantity, record.recorded_at))
    for sku in sorted(set(by_sku) | set(items)):
        _replay_sku(ledger, sku, sorted(by_sku.get(sku, [])), items.get(sku), result)
    return result


def _replay_sku(
    ledger: Ledger,
    sku: str,
    rejections: list[tuple[int, int, datetime]],
    final: ItemState | None,
    result: Rejections,
) -> None:
    check = result.check
    item_stream = stream_id(("item", sku))
    item = ItemState(sku=sku)
    policies = Policies()
    # Expiries the sweeper recorded, applied once a decision's time has reached the
    # hold's expires_at: (expires_at, reservation id, the event).
    deferred: list[tuple[datetime, str, ev.HoldExpired]] = []
    gone = False
    pending = iter(rejections)
    nxt = next(pending, None)

    def expire_until(now: datetime) -> None:
        nonlocal item
        while deferred and deferred[0][0] <= now:
            _, _, event = heapq.heappop(deferred)
            item = evolve_item(item, event)

    def judge(quantity: int, now: datetime, position: int) -> None:
        nonlocal gone
        expire_until(now)
        check.checked += 1
        channel = policies.channels.get(CHANNEL)
        if channel is None:
            check.fail(f"{sku}: 409 at {position} before the channel existed")
            return
        available = channel_availability(item, policies, channel, now).available
        if available >= quantity:
            check.fail(
                f"{sku}: 409 at position {position} ({now.isoformat()}) for {quantity} "
                f"unit(s) while {available} were available"
            )
        elif available == 0 and not gone:
            gone = True
            result.sellouts += 1

    after = 0
    while True:
        rows = history(ledger, [("item", sku), POLICIES], after, HISTORY_PAGE)
        for row in rows:
            while nxt is not None and nxt[0] < row.position:
                judge(nxt[1], nxt[2], nxt[0])
                nxt = next(pending, None)
            event = row.event
            if row.originator_id != item_stream:
                assert isinstance(event, ev.LocationDefined | ev.ChannelDefined | ev.SafetyStockSet)
                policies = evolve_policies(policies, event)
                continue
            if isinstance(event, ev.HoldExpired):
                hold = item.holds.get(event.reservation_id)
                if hold is not None:
                    heapq.heappush(deferred, (hold.expires_at, event.reservation_id, event))
                    continue
            if isinstance(event, ev.StockReceived):
                gone = False
            item = evolve_item(item, event)  # type: ignore[arg-type]
        if len(rows) < HISTORY_PAGE:
            break
        after = rows[-1].position
    while nxt is not None:
        judge(nxt[1], nxt[2], nxt[0])
        nxt = next(pending, None)
    for _, _, event in sorted(deferred, key=lambda d: d[0]):
        item = evolve_item(item, event)
    if final is not None and item.locations != final.locations:
        result.replay_mismatches.append(f"{sku}: replay {item.locations} != {final.locations}")


def commits_in_ledger(answers: list[Answer], items: dict[str, ItemState]) -> Check:
    """The units allocated to orders in the ledger, per SKU, equal the units of the
    commits answered 201 (no other writes allocate in this run)."""
    check = Check("commits = allocations")
    committed: Counter[str] = Counter()
    for a in answers:
        if a.op == "commit" and a.status == 201:
            committed[a.sku] += a.quantity
    for sku, item in items.items():
        check.checked += 1
        allocated = sum(item.at(code).allocated for code in item.locations)
        if allocated != committed[sku]:
            check.fail(f"{sku}: {allocated} allocated, {committed[sku]} committed (201)")
    return check


def log_problems(log: Path, running: int) -> Check:
    """The service log's lines naming a failed writer batch or a Traceback; `running` is
    the log's size (bytes) when the service was asked to stop: lines after it are marked
    as written while it stopped."""
    check = Check("no batch failed (service log)")
    raw = log.read_bytes() if log.exists() else b""
    offset = 0
    for line in raw.splitlines(keepends=True):
        text = line.decode(errors="replace")
        check.checked += 1
        if BATCH_FAILED in text or "Traceback" in text:
            check.fail(text.strip()[:200] + (" (while stopping)" if offset >= running else ""))
        offset += len(line)
    return check


def answered(answers: list[Answer], restocks: Restocks, errors: int) -> tuple[Check, Check]:
    """(no 5xx nor transport error, no answer but 200/201/insufficient-stock 409)."""
    server = Check("zero 5xx, zero transport errors")
    server.checked = len(answers) + restocks.statuses.total() + errors + restocks.errors
    for a in answers:
        if a.status >= 500:
            server.fail(f"{a.op} {a.sku}: {a.status} {a.code}")
    for status, count in restocks.statuses.items():
        for _ in range(count if status >= 500 else 0):
            server.fail(f"receipt: {status}")
    for _ in range(errors + restocks.errors):
        server.fail("transport error (no answer)")
    other = Check("no unexpected answers")
    other.checked = len(answers) + restocks.statuses.total()
    for a in answers:
        expected = a.status in (200, 201) or (a.op == "reserve" and a.code == INSUFFICIENT)
        if not expected and a.status < 500:
            other.fail(f"{a.op} {a.sku}: {a.status} {a.code}")
    for status, count in restocks.statuses.items():
        for _ in range(count if status not in (201,) and status < 500 else 0):
            other.fail(f"receipt: {status}")
    return server, other


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Sale:
    """What the sale did: every shopper's answer, transport errors, the restocker's
    receipts, its wall time (seconds), the shoppers' CPU seconds and the writers'
    counters over the run."""

    answers: list[Answer]
    errors: int
    restocks: Restocks
    wall: float
    client_cpu: float
    writer: WriterTotals


def run_sale(
    url: str, executor: ProcessPoolExecutor, plan: Shopping, args: argparse.Namespace
) -> Sale:
    """The sale: the shoppers in the client processes and the restocker in a thread here,
    for `args.minutes`."""
    list(executor.map(_ready, range(args.clients)))
    duration = args.minutes * 60
    before = writer_totals(url)
    start_at = time.time() + 1.0
    futures = [
        executor.submit(shop, url, plan, args.threads, start_at, duration, p)
        for p in range(args.clients)
    ]
    stop = threading.Event()
    restocked: list[Restocks] = []
    time.sleep(max(0.0, start_at - time.time()))
    restocker = threading.Thread(
        target=lambda: restocked.append(
            restock(url, plan.hot, args.restock, args.restock_every, stop)
        ),
        daemon=True,
    )
    restocker.start()
    answers: list[Answer] = []
    errors = 0
    client_cpu = 0.0
    try:
        for future in futures:
            part, lost, cpu = future.result(timeout=duration + 600)
            answers.extend(part)
            errors += lost
            client_cpu += cpu
    finally:
        stop.set()
        restocker.join(timeout=120)
    wall = time.time() - start_at
    time.sleep(1.5)  # the workers publish their counters about once a second
    after = writer_totals(url)
    writer = WriterTotals(
        batches=after.batches - before.batches,
        jobs=after.jobs - before.jobs,
        conflicts=after.conflicts - before.conflicts,
    )
    return Sale(
        answers, errors, restocked[0] if restocked else Restocks(), wall, client_cpu, writer
    )


# --- report ----------------------------------------------------------------------------------


def summary(
    sale: Sale, items: dict[str, ItemState], hot: list[str], sellouts: int, seeded: int
) -> str:
    """Throughput, latencies, the 201/409 split, units received and sold, sell-outs and
    the writers' counters, as text."""
    answers = sale.answers
    wall = sale.wall or 1.0
    reserves = [a for a in answers if a.op == "reserve"]
    statuses = Counter(a.status for a in reserves)
    commits = [a for a in answers if a.op == "commit" and a.status == 201]
    releases = [a for a in answers if a.op == "release" and a.status == 200]
    held = statuses[201]
    # Walked away: holds neither committed nor released (whatever the answer was).
    walked = held - sum(1 for a in answers if a.op in ("commit", "release"))
    hot_set = set(hot)
    hot_409 = sum(1 for a in reserves if a.status == 409 and a.sku in hot_set)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}"

    lat_all = [a.latency for a in reserves]
    lat_201 = [a.latency for a in reserves if a.status == 201]
    lat_409 = [a.latency for a in reserves if a.status == 409]
    lat_commit = [a.latency for a in commits]
    on_hand = sum(items[s].at(LOCATION).on_hand for s in hot)
    allocated = sum(items[s].at(LOCATION).allocated for s in hot)
    still_held = sum(items[s].at(LOCATION).held for s in hot)
    w = sale.writer
    lines = [
        f"duration {sale.wall:.1f} s; {len(answers):,} shopper requests, "
        f"{sale.restocks.statuses.total()} receipts",
        f"reservations  {len(reserves) / wall:8,.1f}/s  (201: {held:,} = "
        f"{100 * held / max(1, len(reserves)):.1f}%, 409: {statuses[409]:,} = "
        f"{100 * statuses[409] / max(1, len(reserves)):.1f}%, of them on hot SKUs {hot_409:,}; "
        f"other: {sum(n for k, n in statuses.items() if k not in (201, 409))})",
        f"  held        {held / wall:8,.1f}/s",
        f"commits       {len(commits) / wall:8,.1f}/s  ({len(commits):,}); releases "
        f"{len(releases):,}; walked away {walked:,}",
        f"latency ms    reserve p50 {ms(lat_all, 0.5)} p99 {ms(lat_all, 0.99)}  "
        f"(201: {ms(lat_201, 0.5)}/{ms(lat_201, 0.99)}, 409: {ms(lat_409, 0.5)}/"
        f"{ms(lat_409, 0.99)}); commit p50 {ms(lat_commit, 0.5)} p99 {ms(lat_commit, 0.99)}; "
        f"receipt p50 {ms(sale.restocks.latencies, 0.5)} p99 "
        f"{ms(sale.restocks.latencies, 0.99)}",
        f"hot SKUs ({len(hot)}): received {on_hand:,} units ({seeded:,} seeded + "
        f"{sale.restocks.units:,} restocked); sold {allocated + still_held:,} "
        f"(committed {allocated:,} + still held {still_held:,}); "
        f"left {on_hand - allocated - still_held:,}",
        f"sell-outs met by shoppers: {sellouts} (restock intervals of a SKU in which a 409 "
        "found 0 available)",
        f"writers: {w.batches:,} batches, {w.jobs:,} jobs ({w.jobs / max(1, w.batches):.1f} "
        f"per batch), {w.conflicts:,} version conflicts",
        f"client CPU {100 * sale.client_cpu / wall:.0f}% of one core; load average at the "
        f"end {os.getloadavg()[0]:.2f}",
    ]
    return "\n".join(lines)


def verdict(checks: list[Check]) -> str:
    """The verdict table: one row per check (checked, violations, PASS/FAIL), then the
    first examples of each violation."""
    rows = [["check", "checked", "violations", "verdict"]]
    rows += [
        [c.name, f"{c.checked:,}", f"{c.violations:,}", "PASS" if not c.violations else "FAIL"]
        for c in checks
    ]
    lines = [render_table(rows)]
    for c in checks:
        if c.note:
            lines.append(f"  {c.name}: {c.note}")
        for example in c.examples:
            lines.append(f"  {c.name}: {example}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_flash_sale",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="length of the sale (10)")
    p.add_argument("--workers", type=int, default=2, help="atp serve --workers (2)")
    p.add_argument("--clients", type=int, default=4, help="shopper processes (4)")
    p.add_argument("--threads", type=int, default=8, help="shoppers per process (8)")
    p.add_argument("--hot-skus", type=int, default=3, help="hot SKUs (3)")
    p.add_argument("--hot-stock", type=int, default=200, help="initial units per hot SKU (200)")
    p.add_argument("--cold-skus", type=int, default=20, help="cold SKUs (20)")
    p.add_argument("--cold-stock", type=int, default=5000, help="units per cold SKU (5000)")
    p.add_argument("--hot-share", type=float, default=0.9, help="reservations of hot SKUs (0.9)")
    p.add_argument("--ttl", type=int, default=30, help="reservation TTL, seconds (30)")
    p.add_argument("--commit", type=float, default=0.7, help="holds committed (0.7)")
    p.add_argument(
        "--release", type=float, default=0.2, help="holds released (0.2; the rest walk away)"
    )
    p.add_argument("--restock", type=int, default=40, help="units per hot SKU per receipt (40)")
    p.add_argument("--restock-every", type=float, default=5.0, help="seconds between receipts (5)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 120:
        p.error("--minutes must be in (0, 120]")
    if args.hot_skus < 1 or args.cold_skus < 0 or args.clients < 1 or args.threads < 1:
        p.error("--hot-skus, --clients and --threads must be >= 1, --cold-skus >= 0")
    if min(args.commit, args.release) < 0 or args.commit + args.release > 1:
        p.error("--commit and --release are shares adding up to at most 1")
    if not 1 <= args.ttl <= 86_400 or args.restock_every <= 0:
        p.error("--ttl must be in 1..86400 and --restock-every > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = " ".join(
        ["python -m loadtests.bench_flash_sale", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.monotonic()
    print(
        f"flash sale: {args.minutes:g} min, {args.workers} workers, {args.clients} shopper "
        f"processes x {args.threads}, {args.hot_skus} hot SKU(s) x {args.hot_stock} units "
        f"(+{args.restock} every {args.restock_every:g} s), {args.cold_skus} cold x "
        f"{args.cold_stock}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    hot = [f"HOT-{i + 1}" for i in range(args.hot_skus)]
    cold = [f"COLD-{i + 1:03d}" for i in range(args.cold_skus)]
    stock = {**dict.fromkeys(hot, args.hot_stock), **dict.fromkeys(cold, args.cold_stock)}
    plan = Shopping(tuple(hot), tuple(cold), args.hot_share, args.ttl, args.commit, args.release)
    checks: list[Check] = []
    with ExitStack() as outer:
        tmp = Path(outer.enter_context(tempfile.TemporaryDirectory()))
        log = tmp / "atp.log"
        database = outer.enter_context(fresh_database("atp_flash"))
        redis_url = f"{args.redis.rstrip('/')}/{pick_redis_db(args.redis, None)}"
        prefix = f"atpflash{os.getpid()}"
        outer.callback(redis_cleanup, redis_url, prefix)
        env = service_env(database, ATP_REDIS_URL=redis_url, ATP_REDIS_PREFIX=prefix)
        with ExitStack() as services:
            server = services.enter_context(running_service(env, workers=args.workers, log=log))
            services.enter_context(projector(env))
            executor = services.enter_context(
                ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
            )
            with server.client() as admin:
                seed(admin, stock)
            print(f"  ready in {time.monotonic() - started:.0f}s; selling", flush=True)
            sale = run_sale(server.url, executor, plan, args)
            print(f"  sale over: {len(sale.answers):,} answers; checking", flush=True)
            head = int(
                httpx.get(f"{server.url}/ready", timeout=30).json()["checks"]["ledger"]["head"]
            )
            wait_caught_up(redis_url, prefix, head)
            checks.append(oversell_in_read_model(server.url, [*hot, *cold], head))
            running = log.stat().st_size
        # The services are stopped: the ledger stands still (no sweeper expires holds any
        # more) and the whole log is written.
        ledger = Ledger(env=ledger_env(database, "/nonexistent", create_table=False))
        try:
            items = final_items(ledger, [*hot, *cold])
            rejections = check_rejections(ledger, sale.answers, items)
        finally:
            ledger.close()
        server_check, other = answered(sale.answers, sale.restocks, sale.errors)
        replay = Check("replay = ledger (the checker itself)", checked=len(items))
        for mismatch in rejections.replay_mismatches:
            replay.fail(mismatch)
        checks += [
            oversell_in_ledger(items),
            server_check,
            log_problems(log, running),
            rejections.check,
            replay,
            commits_in_ledger(sale.answers, items),
            other,
        ]
    print()
    print(summary(sale, items, hot, rejections.sellouts, args.hot_stock * len(hot)))
    print()
    print(verdict(checks))
    failed = [c.name for c in checks if c.violations]
    print()
    print(f"command: {command}")
    print(
        f"total wall time {time.monotonic() - started:.0f}s (services stopped, database "
        "dropped, Redis keys deleted)"
    )
    if failed:
        print(f"VERDICT: FAIL ({', '.join(failed)})")
        return 1
    print("VERDICT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
