"""Policy fan-out: how long a channel change takes to reach every SKU in Redis.

    python -m loadtests.bench_fanout [--skus 100000]

Seeds the ledger (fresh PostgreSQL database) with N SKUs, projects them into a Redis
database of its own, then changes a channel's buffer and times how long the projector takes
to rewrite every SKU's documents; checks afterwards that every SKU shows the new figure.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import redis

from adapters.ledger import Ledger, ledger_env
from api.service.commands import CommandService, Job, Rejected, command_decider
from atp import commands as c
from projections.projector import Projector
from projections.readmodel import RedisStore
from tests.support.pg import fresh_database


def run(service: CommandService, command: c.Command) -> None:
    result = service.run_sync(Job(command_decider(command), correlation_id="bench"))
    if isinstance(result, Rejected):
        raise result.error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    client: Any = redis.Redis(db=args.redis_db)
    client.flushdb()
    with fresh_database("atp_fanout") as url:
        Ledger(env=ledger_env(url, "/nonexistent", create_table=True)).close()
        ledger = Ledger(env=ledger_env(url, "/nonexistent", create_table=False))
        service = CommandService(ledger)
        service.start()
        try:
            started = time.perf_counter()
            run(service, c.DefineLocation(code="WH1", name="Main", kind="warehouse"))
            run(service, c.DefineLocation(code="ST1", name="Store", kind="store"))
            run(service, c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=0))
            run(service, c.DefineChannel(code="pos", locations=("ST1",)))
            for first in range(0, args.skus, 100):
                lines = tuple(c.Line(f"SKU-{i:06d}", 10) for i in range(first, first + 100))
                run(service, c.ReceiveStock(location="WH1", lines=lines))
            seeded = time.perf_counter() - started
            projector = Projector(ledger, RedisStore(client, "atp"))
            started = time.perf_counter()
            projector.catch_up()
            initial = time.perf_counter() - started
            run(service, c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=3))
            started = time.perf_counter()
            applied = projector.catch_up()
            fanout = time.perf_counter() - started
            pipe = client.pipeline(transaction=False)
            for i in range(args.skus):
                pipe.hget(f"atp:{{SKU-{i:06d}}}:ats", "web")
            wrong = sum(b'"available":7,' not in v for v in pipe.execute())
        finally:
            service.stop()
            ledger.close()
            client.flushdb()
    print(f"policy fan-out over {args.skus} SKUs ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    print(f"  seeding the ledger             {seeded:8.1f} s")
    print(f"  first projection of every SKU  {initial:8.1f} s")
    print(
        f"  channel change -> every SKU    {fanout:8.1f} s  ({applied} event, {args.skus / fanout:,.0f} SKUs/s)"
    )
    print(f"  SKUs not showing the new figure: {wrong}")


if __name__ == "__main__":
    main()
