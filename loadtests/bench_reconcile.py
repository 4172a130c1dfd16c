"""Reconciliation at scale (issue 13 §7): a 100,000-line snapshot through the real path, and
as-of reads of a SKU with 10,000 events, on PostgreSQL (asyncpg read side) or embedded
(SQLite, `--backend sqlite`).

On a fresh PostgreSQL database (or SQLite file) it seeds, straight into the ledger (the library's own
append, one event per SKU: a receipt of 10 at WH1), --skus SKUs, and one hot SKU with
--history events (adjustments of +1/-1, a snapshot every 100 as the writer takes them, one
millisecond apart). Then, side by side in one run:

  reconcile  `atp serve` (one worker, fresh for each size) receives the snapshot as a
             streamed `text/csv` body of --small and of --skus lines, 1% of them drifted by
             +1, with `apply=true`: wall time, lines/s, CPU per 1,000 lines (the service's
             process tree and every PostgreSQL process), and the service's peak RSS
             (VmHWM) above its RSS before the upload: flat memory means the two sizes grow
             it alike;
  as-of      GET /v1/items/HOT from the read model, ?as_of= the middle of its history and
             ?as_of= now (both from the ledger), p50/p99 over --reads requests each; and, in
             this process, the hot SKU folded by a full replay (what as-of would cost
             without snapshots), for the ratio.

    python -m loadtests.bench_reconcile --skus 100000 --small 10000 --history 10000
    python -m loadtests.bench_reconcile --backend sqlite    # the embedded ledger
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from adapters.ledger import Ledger, LedgerEvent, ledger_env, stream_id
from atp import events as ev
from atp.decide import POLICIES
from atp.state import ItemState, evolve_item
from atp.world import fold
from loadtests.harness.cpu import cpu_snapshot
from loadtests.harness.results import pct
from loadtests.harness.tables import render_table
from tests.support.pg import create_database, drop_database
from tests.support.server import ADMIN_TOKEN, running_service, service_env

WH = "WH1"
HOT = "HOT-1"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def sku(i: int) -> str:
    return f"RC-{i:06d}"


def seed(url: str | None, data: str, skus: int, history: int, start: datetime) -> datetime:
    """The catalogue and the hot SKU, appended directly; returns the hot SKU's middle time."""
    ledger = Ledger(env=ledger_env(url, data, False))
    try:
        policies = [
            ev.LocationDefined(code=WH, name=WH, kind="warehouse", active=True),
            ev.ChannelDefined(
                code="web",
                locations=(WH,),
                buffer=0,
                share_percent=100,
                backorder_limit=0,
                low_stock_threshold=5,
            ),
        ]
        ledger.append(
            [LedgerEvent(stream_id(POLICIES), v + 1, start, e) for v, e in enumerate(policies)]
        )
        batch: list[LedgerEvent] = []
        for i in range(skus):
            received = ev.StockReceived(
                sku=sku(i), location=WH, quantity=10, reference=None, incoming_consumed=0
            )
            batch.append(LedgerEvent(stream_id(("item", sku(i))), 1, start, received))
            if len(batch) == 5000:
                ledger.append(batch)
                batch = []
        if batch:
            ledger.append(batch)
        state = ItemState(sku=HOT)
        hot_id = stream_id(("item", HOT))
        events: list[LedgerEvent] = []
        for version in range(1, history + 1):
            if version == 1:
                event: ev.ItemEvent = ev.StockReceived(
                    sku=HOT, location=WH, quantity=100, reference=None, incoming_consumed=0
                )
            else:
                delta = 1 if version % 2 else -1
                event = ev.StockAdjusted(sku=HOT, location=WH, delta=delta, reason="bench")
            at = start + timedelta(milliseconds=version)
            events.append(LedgerEvent(hot_id, version, at, event))
            state = evolve_item(state, event)
            if version % 100 == 0:
                ledger.append(events, [(("item", HOT), version, state)])
                events = []
        if events:
            ledger.append(events)
    finally:
        ledger.close()
    return start + timedelta(milliseconds=history // 2)


def csv_file(path: Path, lines: int) -> int:
    """A snapshot of the first `lines` SKUs, 1% of them one unit over atp; the drifted count."""
    rng = random.Random(lines)
    drifted = 0
    with path.open("w") as f:
        f.write("sku,on_hand\n")
        for i in range(lines):
            over = rng.random() < 0.01
            drifted += over
            f.write(f"{sku(i)},{11 if over else 10}\n")
    return drifted


def status(pid: int, field: str) -> int:
    """A VmRSS/VmHWM figure (kB) of the service's process tree root."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    """The pid and its descendants (uvicorn's worker does the work)."""
    found = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[1]) in found:
                found.append(int(p))
    return found


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            yield chunk


def reconcile_run(env: dict[str, str], path: Path, lines: int, as_of: datetime) -> list[str]:
    with running_service(env) as server:
        pids = tree(server.process.pid)
        before = {p: status(p, "VmRSS") for p in pids}
        cpu0 = cpu_snapshot(server.process.pid)
        t0 = time.perf_counter()
        r = httpx.post(
            f"{server.url}/v1/reconciliations",
            params={"location": WH, "as_of": as_of.isoformat(), "apply": "true"},
            content=chunks(path),
            headers={**AUTH, "content-type": "text/csv", "Idempotency-Key": f"bench-{lines}"},
            timeout=600,
        )
        wall = time.perf_counter() - t0
        cpu = cpu_snapshot(server.process.pid) - cpu0
        r.raise_for_status()
        report = r.json()
        growth = max(status(p, "VmHWM") - before[p] for p in pids) / 1024
        peak = max(status(p, "VmHWM") for p in pids) / 1024
    assert report["skus_compared"] == lines, report
    per_k = 1000 / lines
    return [
        f"{lines:,}",
        f"{wall:.1f}",
        f"{lines / wall:,.0f}",
        f"{report['skus_drifted']:,}",
        f"{cpu.server * per_k * 1000:.0f}",
        f"{cpu.postgres * per_k * 1000:.0f}",
        f"{peak:.0f}",
        f"{growth:.0f}",
    ]


def timed_gets(client: httpx.Client, path: str, params: dict[str, str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def as_of_run(
    env: dict[str, str], url: str | None, data: str, middle: datetime, reads: int
) -> list[list[str]]:
    rows = []
    with running_service(env) as server, httpx.Client(base_url=server.url, headers=AUTH) as c:
        now = datetime.now(UTC).isoformat()
        cases = [
            ("read model (no as_of)", {}),
            ("as_of middle of history", {"as_of": middle.isoformat()}),
            ("as_of now", {"as_of": now}),
        ]
        for name, params in cases:
            timed_gets(c, f"/v1/items/{HOT}", params, 10)  # warm up
            times = timed_gets(c, f"/v1/items/{HOT}", params, reads)
            rows.append([name, f"{pct(times, 50):.2f}", f"{pct(times, 99):.2f}"])
    ledger = Ledger(env=ledger_env(url, data, False))
    try:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fold(("item", HOT), [r.event for r in ledger.records(("item", HOT))])  # type: ignore[misc]
            times.append((time.perf_counter() - t0) * 1000)
        rows.append(["full replay, in process", f"{pct(times, 50):.2f}", f"{pct(times, 99):.2f}"])
    finally:
        ledger.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument(
        "--backend", choices=["postgres", "sqlite"], default="postgres", help="the ledger"
    )
    args = parser.parse_args(argv)
    url = create_database("atp_bench_recon") if args.backend == "postgres" else None
    data = tempfile.mkdtemp(prefix="atp-bench-recon-")
    try:
        env = service_env(url, data, ATP_LOG_LEVEL="warning")
        with running_service(env):
            pass  # `atp migrate`: the tables
        start = datetime.now(UTC) - timedelta(hours=1)
        t0 = time.perf_counter()
        middle = seed(url, data, args.skus, args.history, start)
        print(
            f"  seeded {args.skus:,} SKUs and {args.history:,} events of {HOT} "
            f"in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
        as_of = datetime.now(UTC)
        time.sleep(0.01)
        rows = [
            [
                "lines",
                "wall s",
                "lines/s",
                "drifted",
                "service CPU ms/1k lines",
                "PostgreSQL CPU ms/1k lines",
                "peak RSS MiB",
                "RSS growth MiB",
            ]
        ]
        with tempfile.TemporaryDirectory() as tmp:
            for lines in (args.small, args.skus):
                path = Path(tmp) / f"snapshot-{lines}.csv"
                csv_file(path, lines)
                rows.append(reconcile_run(env, path, lines, as_of))
        print(render_table(rows))
        as_of_rows = as_of_run(env, url, data, middle, args.reads)
        print(
            render_table(
                [
                    [f"GET /v1/items/{HOT} ({args.history:,} events)", "p50 ms", "p99 ms"],
                    *as_of_rows,
                ]
            )
        )
        with open("/proc/loadavg") as f:
            print(f"load average: {f.read().split()[:3]}")
    finally:
        if url is not None:
            drop_database(url)
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
