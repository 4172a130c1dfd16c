"""Rebuild benchmark: how fast the Redis read model is rebuilt from the ledger.

A rebuild is how long reads answer 503 after Redis lost the model (FLUSHALL, a restart
without persistence), and how long `atp project --rebuild` takes. This run:

  1. generates a ledger into a fresh PostgreSQL database through the command service (the
     path the API writes by): receipts, holds, releases, commits, orders, cancellations,
     adjustments, counts, incoming supply, safety stock and channel changes over
     `--skus` SKUs and three locations, until the ledger holds `--events` events;
  2. projects it incrementally from position 0 (the projector's follow-the-ledger path,
     batches of 1,000 notifications: what a rebuild was before) into two empty Redis
     databases picked for the run;
  3. times `RedisProjection.rebuild()` (what `atp project --rebuild --once` runs: replay
     into the scratch database, hand-over, SWAPDB) and, after FLUSHDB, the projector's own
     in-place recovery (the 503 window of issue 8 §3);
  4. checks that each rebuilt model equals the incremental one, key for key;
  5. drops the database and flushes the two Redis databases.

Events/s counts every ledger event up to the head (reservation, order and idempotency
records included, as the ledger head counts them); the events the projector folds (item and
policy events) are printed too.

    python -m loadtests.bench_rebuild --events 120000 --skus 2000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from adapters.ledger import Ledger, ledger_env
from api.service.commands import CommandService, Job, Rejected, command_decider
from atp import commands as c
from projections.projector import Projector
from projections.readmodel import RedisStore
from projections.runner import RedisProjection
from tests.support.pg import fresh_database
from tests.support.redis_db import client, dump, redis_url, scratch_databases

PREFIX = "bench"
L = c.Line


def submit(service: CommandService, command: c.Command) -> bool:
    """Decide and append one command; False when the domain refused it."""
    result = service.run_sync(Job(command_decider(command), correlation_id="bench"))
    return not isinstance(result, Rejected)


class Generator:
    """A retailer's day, repeated: one thread of commands, each touching many SKUs."""

    def __init__(self, service: CommandService, skus: list[str], seed: int) -> None:
        self.service = service
        self.skus = skus
        self.rnd = random.Random(seed)
        self.held: list[str] = []
        self.orders: list[tuple[str, str, tuple[c.Line, ...]]] = []
        """Open orders: id, the location they ship from, their lines (none: cancel)."""
        self.n = 0

    def lines(self, count: int, most: int) -> tuple[c.Line, ...]:
        return tuple(L(s, self.rnd.randint(1, most)) for s in self.rnd.sample(self.skus, count))

    def catalogue(self) -> None:
        for command in (
            c.DefineLocation(code="WH1", name="Main", kind="warehouse"),
            c.DefineLocation(code="WH2", name="North", kind="warehouse"),
            c.DefineLocation(code="ST1", name="Store", kind="store"),
            c.DefineChannel(code="web", locations=("WH1", "WH2", "ST1")),
            c.DefineChannel(code="pos", locations=("ST1",), buffer=1, share_percent=50),
            c.DefineChannel(code="amazon", locations=("WH1",), backorder_limit=5),
        ):
            submit(self.service, command)
        for location in ("WH1", "WH2", "ST1"):
            for i in range(0, len(self.skus), 100):
                lines = tuple(L(s, 500) for s in self.skus[i : i + 100])
                submit(self.service, c.ReceiveStock(location=location, lines=lines))

    def one(self) -> None:
        """One command. Holds end (released or committed) and orders ship about as often as
        they start, so a SKU's live holds and open orders stay bounded as in a store whose
        holds expire and whose orders ship (the fold's cost per event grows with them)."""
        rnd, self.n = self.rnd, self.n + 1
        kind = rnd.random()
        if kind < 0.18:
            location = rnd.choice(("WH1", "WH2", "ST1"))
            submit(self.service, c.ReceiveStock(location=location, lines=self.lines(50, 20)))
        elif kind < 0.38:
            rid = f"r{self.n}"
            command = c.ReserveStock(
                reservation_id=rid, channel="web", lines=self.lines(20, 3), ttl_seconds=86_400
            )
            if submit(self.service, command):
                self.held.append(rid)
        elif kind < 0.49 and self.held:
            submit(self.service, c.ReleaseReservation(reservation_id=self.held.pop(0)))
        elif kind < 0.60 and self.held:
            oid = f"o{self.n}"
            rid = self.held.pop(0)
            if submit(self.service, c.CommitReservation(reservation_id=rid, order_id=oid)):
                self.orders.append((oid, "WH1", ()))
        elif kind < 0.68:
            oid = f"o{self.n}"
            channel, location = rnd.choice((("pos", "ST1"), ("amazon", "WH1")))
            lines = self.lines(10, 2)
            command = c.PlaceOrder(order_id=oid, channel=channel, lines=lines)
            if submit(self.service, command):
                self.orders.append((oid, location, lines))
        elif kind < 0.88 and self.orders:
            oid, location, lines = self.orders.pop(0)
            shipped = bool(lines) and submit(
                self.service,
                c.ShipOrder(order_id=oid, shipment_id=f"s{self.n}", location=location, lines=lines),
            )
            if not shipped:
                submit(self.service, c.CancelOrder(order_id=oid))
        elif kind < 0.92:
            lines = tuple(c.CountLine(s, rnd.randint(100, 600)) for s in rnd.sample(self.skus, 30))
            submit(self.service, c.CountStock(location="ST1", lines=lines))
        elif kind < 0.96:
            submit(self.service, c.ExpectIncoming(location="WH2", lines=self.lines(30, 50)))
        elif kind < 0.995:
            sku = rnd.choice(self.skus)
            command = c.SetSafetyStock(sku=sku, location="WH1", quantity=rnd.randint(0, 5))
            submit(self.service, command)
        else:
            # A policy change: every SKU's documents change.
            locations = ("WH1", "WH2", "ST1")
            command = c.DefineChannel(code="web", locations=locations, buffer=rnd.randint(0, 3))
            submit(self.service, command)


def generate(database_url: str, skus: int, events: int, seed: int) -> tuple[int, float]:
    """Fill the ledger until its head reaches `events`; returns the head and the seconds."""
    ledger = Ledger(env=ledger_env(database_url, "/nonexistent", create_table=True))
    service = CommandService(ledger)
    service.start()
    started = time.monotonic()
    try:
        gen = Generator(service, [f"SKU-{i:05d}" for i in range(skus)], seed)
        gen.catalogue()
        last_report = time.monotonic()
        while (head := ledger.head()) < events:
            for _ in range(20):
                gen.one()
            if time.monotonic() - last_report > 10:
                print(f"  ... {head:,} events", flush=True)
                last_report = time.monotonic()
        return head, time.monotonic() - started
    finally:
        service.stop()
        ledger.close()


def timed(label: str, head: int, fn: Callable[[], Any]) -> float:
    """Run `fn`; print its wall time and this process's CPU time (all threads), each with
    ledger events per second. On a shared machine the wall figure moves with the
    neighbours; the CPU figure much less (PostgreSQL's and Redis's own time is not in it)."""
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{label:<56} wall {seconds:6.2f} s {head / seconds:9,.0f}/s   "
        f"cpu {cpu:6.2f} s {head / cpu:9,.0f}/s",
        flush=True,
    )
    return seconds


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A dump without the fields only a rebuild writes (its generation) or a build id."""
    out = dict(data)
    meta = dict(out.get(f"{PREFIX}:meta", {}))
    for name in ("generation", "build", "building"):
        meta.pop(name, None)
    out[f"{PREFIX}:meta"] = meta
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=120_000, help="ledger events to generate")
    p.add_argument("--skus", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--database",
        help="time an existing ledger (a PostgreSQL URL) instead of generating one; kept",
    )
    p.add_argument(
        "--skip-incremental",
        action="store_true",
        help="do not time the incremental projection (the model is compared with a rebuild)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    print(
        f"atp rebuild benchmark: {args.events:,} ledger events over {args.skus:,} SKUs, "
        f"{os.cpu_count()} CPU(s)",
        flush=True,
    )
    with ExitStack() as stack:
        live, scratch = stack.enter_context(scratch_databases(2))
        database_url = args.database
        if database_url is None:
            database_url = stack.enter_context(fresh_database("atp_bench"))
            generated, seconds = generate(database_url, args.skus, args.events, args.seed)
            print(f"generated {generated:,} ledger events in {seconds:.1f} s", flush=True)
        r = client(live)
        ledger = Ledger(env=ledger_env(database_url, "/nonexistent", create_table=False))
        head = ledger.ping()
        try:
            incremental = Projector(ledger, RedisStore(r, PREFIX))
            if args.skip_incremental:
                incremental.replay()
            else:
                timed(
                    "incremental projection from 0 (batches of 1,000)", head, incremental.catch_up
                )
            print(f"projector folds {incremental.applied:,} item and policy events", flush=True)
            reference = comparable(dump(r, PREFIX))

            projection = RedisProjection(ledger, redis_url(live), PREFIX, rebuild_db=scratch)
            timed("atp project --rebuild --once (scratch db, SWAPDB)", head, projection.rebuild)
            assert comparable(dump(r, PREFIX)) == reference, "the rebuilt model differs"

            r.flushdb()
            recovering = RedisProjection(ledger, redis_url(live), PREFIX, rebuild_db=scratch)
            assert recovering.acquire()
            timed(
                "recovery after FLUSHALL (in place; reads 503 meanwhile)",
                head,
                recovering.take_over,
            )
            assert comparable(dump(r, PREFIX)) == reference, "the recovered model differs"
            print("both rebuilt models equal the incremental one, key for key", flush=True)
            recovering.client.close()
            projection.client.close()
        finally:
            ledger.close()
            r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
