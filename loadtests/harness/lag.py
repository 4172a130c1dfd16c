"""Projection lag: receipts posted at a steady rate while a watcher polls each SKU's
position in Redis; joined with the ledger, each event's lag from commit to visible."""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import redis

from loadtests.bench_reservations import writer_totals
from loadtests.harness.catalogue import LOCATIONS
from loadtests.harness.cpu import cpu_snapshot
from loadtests.harness.results import LagResult
from loadtests.harness.services import Served, wait_caught_up
from tests.support.server import ADMIN_TOKEN

WATCH_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, '_position') or false
end
return out
"""


def _watch(
    redis_url: str, keys: list[str], poll_s: float, max_seconds: float, stop: Any, out: Any
) -> None:
    """Runs in its own process: polls every key's `_position` (one script call) and records
    (wall time of the reply, position) whenever a key's position changes."""
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(WATCH_SCRIPT)
    last: list[int] = [-1] * len(keys)
    changes: list[list[tuple[float, int]]] = [[] for _ in keys]
    polls = 0
    started = time.monotonic()
    next_at = started
    while not stop.is_set() and time.monotonic() - started < max_seconds:
        values = script(keys=keys)
        now = time.time()
        polls += 1
        for i, raw in enumerate(values):
            position = int(raw) if raw else 0
            if position != last[i]:
                last[i] = position
                changes[i].append((now, position))
        next_at += poll_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    client.close()
    out.put((changes, polls, time.monotonic() - started))


def drive_lag(
    url: str,
    tag: str,
    skus: list[str],
    rate: float,
    lines: int,
    duration: float,
    connections: int,
) -> tuple[list[tuple[int, float, float, int, int]], float]:
    """POST receipts of `lines` distinct SKUs at `rate` receipts/s, paced from a schedule
    (a late sender catches up). Returns (k, sent, answered, status, position) per request
    (wall times) and the schedule's start."""
    parts = urlsplit(url)
    total = int(rate * duration)
    start_at = time.time() + 0.5
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}

    def run(index: int) -> list[tuple[int, float, float, int, int]]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        rng = random.Random(index)
        done = []
        hard_stop = start_at + duration + 30
        try:
            for k in range(index, total, connections):
                due = start_at + k / rate
                time.sleep(max(0.0, due - time.time()))
                if time.time() > hard_stop:
                    break
                chosen = rng.sample(skus, lines)
                body = json.dumps(
                    {
                        "location": LOCATIONS[0],
                        "lines": [{"sku": s, "quantity": 1} for s in chosen],
                        "reference": f"{tag}-{k}",
                    }
                ).encode()
                sent = time.time()
                try:
                    conn.request(
                        "POST",
                        "/v1/receipts",
                        body=body,
                        headers={
                            **headers,
                            "X-Correlation-ID": f"{tag}-{k}",
                            "Idempotency-Key": f"{tag}-{k}",
                        },
                    )
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                    done.append((k, sent, time.time(), 0, 0))
                    continue
                position = int(response.getheader("ATP-Position") or 0)
                done.append((k, sent, time.time(), response.status, position))
        finally:
            conn.close()
        return done

    with ThreadPoolExecutor(connections) as pool:
        results = [r for part in pool.map(run, range(connections)) for r in part]
    return results, start_at


def _listen(
    database_url: str, channel: str, max_seconds: float, ready: Any, stop: Any, out: Any
) -> None:
    """Runs in its own process: LISTENs on the ledger's channel (every events transaction
    NOTIFYs it, delivered at commit) and records the wall time each notification arrives."""
    import psycopg
    from psycopg import sql

    times: list[float] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(channel)))
        ready.set()
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < max_seconds:
            for _ in conn.notifies(timeout=0.1):
                times.append(time.time())
    out.put(times)


def projection_lag(
    args: argparse.Namespace,
    served: Served,
    database_url: str,
    redis_url: str,
    prefix: str,
    skus: list[str],
    projector_pid: int,
) -> LagResult:
    from adapters.ledger import Ledger, decode_payload, ledger_env

    tag = f"lag{uuid.uuid4().hex[:6]}"
    keys = [f"{prefix}:{{{s}}}:ats" for s in skus]
    ctx = multiprocessing.get_context("spawn")
    stop, ready, watched_q, listened_q = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    max_seconds = args.lag_duration + 60
    ledger = Ledger(env=ledger_env(database_url, "./.atp", False))
    watcher = ctx.Process(
        target=_watch, args=(redis_url, keys, args.poll_ms / 1000, max_seconds, stop, watched_q)
    )
    listener = ctx.Process(
        target=_listen,
        args=(database_url, ledger.recorder.channel_name, max_seconds, ready, stop, listened_q),  # type: ignore[attr-defined]
    )
    result = LagResult()
    try:
        watcher.start()
        listener.start()
        if not ready.wait(30):
            raise TimeoutError("the NOTIFY listener did not start")
        time.sleep(1.0)  # the watcher's first polls record the starting positions
        head_before = ledger.head()
        writers = SimpleNamespace(url=served.url)
        before = writer_totals(writers, args.lag_workers)  # type: ignore[arg-type]
        cpu_before = cpu_snapshot(served.pid, projector_pid)
        requests, start_at = drive_lag(
            served.url,
            tag,
            skus,
            args.lag_rate / args.lag_lines,
            args.lag_lines,
            args.lag_duration,
            args.lag_connections,
        )
        head_after = ledger.head()
        wait_caught_up(redis_url, prefix, head_after, timeout=30)
        result.cpu = cpu_snapshot(served.pid, projector_pid) - cpu_before
        after = writer_totals(writers, args.lag_workers)  # type: ignore[arg-type]
        result.writer_batches = after.batches - before.batches
        result.writer_jobs = after.jobs - before.jobs
        result.writer_conflicts = after.conflicts - before.conflicts
        time.sleep(0.2)
        stop.set()
        changes, polls, watched = watched_q.get(timeout=60)
        notifies: list[float] = listened_q.get(timeout=60)
        watcher.join(timeout=10)
        listener.join(timeout=10)
    finally:
        stop.set()
        for process in (watcher, listener):
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    result.polls = polls
    result.poll_ms = watched / polls * 1e3 if polls else math.nan
    answered = {k: (sent, got) for k, sent, got, status, _ in requests if status == 201}
    result.requests = len(requests)
    result.failed_requests = len(requests) - len(answered)
    result.write_ms = [(got - sent) * 1e3 for sent, got in answered.values()]
    # Every event of this phase with its position, timestamp and request. A transaction's
    # events share one timestamp (the writer's clock for the batch) and transactions commit
    # in position order (the library locks the table), so the i-th run of equal timestamps
    # is the i-th commit, and the i-th NOTIFY the listener got is its commit time.
    index = {s: i for i, s in enumerate(skus)}
    rows: list[tuple[int, float, str | None, str]] = []
    start = head_before + 1
    for _ in range(100_000):
        batch = ledger.recorder.select_notifications(start, 1000, stop=head_after)
        if not batch:
            break
        for n in batch:
            event, occurred_at, metadata = decode_payload(n.topic, n.state)
            rows.append(
                (
                    n.id,
                    occurred_at.timestamp(),
                    getattr(event, "sku", None),
                    metadata.get("correlation_id", ""),
                )
            )
        start = batch[-1].id + 1
    ledger.close()
    transactions: list[int] = []
    for i, row in enumerate(rows):
        transactions.append(transactions[-1] + (row[1] != rows[i - 1][1]) if transactions else 0)
    result.transactions = (transactions[-1] + 1) if transactions else 0
    result.notifies = len(notifies)
    exact = result.transactions == result.notifies
    for (position, occurred, sku, cid), txn in zip(rows, transactions, strict=True):
        if not cid.startswith(tag + "-") or sku not in index:
            continue
        result.events += 1
        k = int(cid.rsplit("-", 1)[1])
        seen = next((t for t, pos in changes[index[sku]] if pos >= position), None)
        if seen is None:
            result.unseen += 1
            continue
        result.from_event_ms.append((seen - occurred) * 1e3)
        if exact:
            result.from_commit_ms.append((seen - notifies[txn]) * 1e3)
        if k in answered:
            result.from_response_ms.append((seen - answered[k][1]) * 1e3)
    last_answer = max((got for _, got in answered.values()), default=start_at)
    result.seconds = max(1e-9, last_answer - start_at)
    return result
