"""Policy preview: how long `POST /v1/policies/preview` takes over 100,000 SKUs (target 5 s).

    python -m loadtests.bench_preview [--skus 100000] [--repeat 3] [--write-costs]

Writes N SKUs (stock at three locations, a live hold on every tenth) into a Redis read
model under a prefix of its own and into the embedded read model, with the projector's own
write path (documents and list indexes from `projections.views.sku_documents`), then times
`Planner.preview` of one change (the web channel's buffer 2 -> 5) on each, side by side with
its two parts measured alone: reading every SKU's state from the read model, and running
the ATS function over them (before and after). With --write-costs, also the list indexes'
share of the projector's Redis writes (with and without them, side by side). Prints wall
time, this process's CPU time, Redis's CPU time (the server is shared: it includes others'
commands) and the ratio to the 5 s target; checks the preview's totals against the ATS
function run directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from adapters.ledger import Ledger, ledger_env
from api.service.planner import Planner
from api.service.preview import PolicyChange, apply_change, preview_states
from api.service.queries import ReadSide
from atp import commands as c
from atp import events as ev
from atp.ats import channel_availability
from atp.events import Hold
from atp.state import ItemState, Policies, evolve_item, evolve_policies
from projections.readmodel import MemoryReadModel, RedisReader, RedisStore, SkuWrite
from projections.views import sku_documents
from tests.support.redis_db import prefixed, redis_url

TARGET = 5.0
NOW = datetime.now(UTC).replace(microsecond=0)
POLICY_EVENTS: list[ev.PolicyEvent] = [
    ev.LocationDefined("WH1", "Central", "warehouse", True),
    ev.LocationDefined("WH2", "East", "warehouse", True),
    ev.LocationDefined("ST1", "Flagship", "store", True),
    ev.ChannelDefined("web", ("WH1", "WH2", "ST1"), 2, 100, 10, 5),
    ev.ChannelDefined("amazon", ("WH1", "WH2"), 1, 60, 0, 3),
    ev.ChannelDefined("pos", ("ST1",), 0, 100, 0, 2),
]
CHANGE = PolicyChange(
    channels=(c.DefineChannel("web", ("WH1", "WH2", "ST1"), 5, 100, 10, 5),),
)


def policies() -> Policies:
    state = Policies()
    for event in POLICY_EVENTS:
        state = evolve_policies(state, event)
    return state


def item(i: int) -> ItemState:
    """SKU i: a few units at each location (0 now and then), a live hold on every tenth."""
    sku = f"SKU-{i:06d}"
    state = ItemState(sku=sku)
    for location, units in (("WH1", i * 7 % 23), ("WH2", i * 5 % 11), ("ST1", i % 4)):
        if units:
            state = evolve_item(state, ev.StockReceived(sku, location, units, None, 0))
    if i % 10 == 0 and state.at("WH1").on_hand:
        hold = ev.StockHeld(sku, f"r{i}", "web", (Hold("WH1", 1),), NOW + timedelta(hours=1))
        state = evolve_item(state, hold)
    return state


@dataclass
class Measure:
    name: str
    wall: float
    cpu: float
    redis_cpu: float | None = None


def documents(states: list[ItemState], rules: Policies) -> list[SkuWrite]:
    """Every SKU's documents and index memberships, as the projector computes them."""
    return [SkuWrite(sku_documents(s, rules, NOW, i + 1), s) for i, s in enumerate(states)]


def write(store: Any, writes: list[SkuWrite], rules: Policies) -> Measure:
    """Write every SKU as the projector does (1,000 a batch); wall and CPU seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    for first in range(0, len(writes), 1000):
        store.write(writes[first : first + 1000], len(POLICY_EVENTS) + first + 1000, rules, None)
    return Measure("", time.perf_counter() - wall, time.process_time() - cpu)


class NoIndexRedisStore(RedisStore):
    """The Redis store as it was before the list indexes: the baseline of their cost."""

    def write_indexes(self, writes: list[SkuWrite], pipe: Any) -> None:
        pass


def write_costs(client: Any, writes: list[SkuWrite], rules: Policies) -> list[Measure]:
    """The list indexes' share of the projector's Redis writes, side by side: every SKU
    written to an empty model (first projection), then every SKU rewritten with the same
    figures (what a policy fan-out does when few statuses move)."""
    forced = [SkuWrite(w.documents, w.state, force=True) for w in writes]
    measures = []
    for label, kind in (
        ("with list indexes", RedisStore),
        ("without (baseline)", NoIndexRedisStore),
    ):
        with prefixed(tag="preview-write") as (_, prefix):
            store = kind(client, prefix)
            before = redis_cpu(client)
            first = write(store, writes, rules)
            first.name, first.redis_cpu = f"first write, {label}", redis_cpu(client) - before
            before = redis_cpu(client)
            again = write(store, forced, rules)
            again.name, again.redis_cpu = f"rewrite all, {label}", redis_cpu(client) - before
            measures += [first, again]
    return measures


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(
    name: str, work: Callable[[], Awaitable[Any]], client: Any = None
) -> tuple[Measure, Any]:
    redis_before = redis_cpu(client) if client is not None else 0.0
    cpu, wall = time.process_time(), time.perf_counter()
    result = await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    spent = redis_cpu(client) - redis_before if client is not None else None
    return Measure(name, wall, cpu, spent), result


async def bench(args: argparse.Namespace, ledger: Ledger) -> list[Measure]:
    rules = policies()
    states = [item(i) for i in range(args.skus)]
    started = time.perf_counter()
    writes = documents(states, rules)
    print(f"  computing every SKU's documents {time.perf_counter() - started:6.1f} s")
    measures: list[Measure] = []
    memory = MemoryReadModel()
    print(f"  writing the embedded read model {write(memory, writes, rules).wall:6.1f} s")
    with prefixed(tag="preview") as (client, prefix):
        store = RedisStore(client, prefix)
        store.begin_build("bench")
        print(f"  writing the Redis read model    {write(store, writes, rules).wall:6.1f} s")
        store.complete_build("bench")
        if args.write_costs:
            measures += write_costs(client, writes, rules)
        async_client = aioredis.Redis.from_url(redis_url(0))
        try:
            planners = {
                "redis": Planner(ReadSide(RedisReader(async_client, prefix)), ledger, lambda: NOW),
                "memory": Planner(ReadSide(memory), ledger, lambda: NOW),
            }
            after, _ = apply_change(CHANGE, rules, {}, NOW)
            for _ in range(args.repeat):
                for name, planner in planners.items():
                    spy = client if name == "redis" else None
                    m, preview = await timed(
                        f"preview, {name} read model", lambda p=planner: p.preview(CHANGE), spy
                    )
                    measures.append(m)
                    check(preview, states, after)

                    async def read_all(p: Planner = planner) -> int:
                        return sum([1 async for _ in p._all_states()])

                    m, _ = await timed(f"  reading every state, {name}", read_all, spy)
                    measures.append(m)

                async def compute() -> Any:
                    return preview_states(states, rules, after, {}, NOW)

                m, _ = await timed("  ATS before and after, no I/O", compute)
                measures.append(m)
        finally:
            await async_client.aclose()
    return measures


def check(preview: Any, states: list[ItemState], after: Policies) -> None:
    """The preview's web total is the ATS function's, SKU by SKU, under the new policy."""
    web = after.channels["web"]
    expected = sum(channel_availability(s, after, web, NOW).available for s in states)
    total = next(t for t in preview.totals if t.channel == "web")
    assert preview.skus == len(states), (preview.skus, len(states))
    assert total.after.available == expected, (total.after.available, expected)
    assert preview.changed > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--write-costs",
        action="store_true",
        help="also time the projector's Redis writes with and without the list indexes",
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"policy preview over {args.skus:,} SKUs, 3 channels, web buffer 2 -> 5 "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load[0]:.2f} {load[1]:.2f})"
    )
    # The planner reads the ledger only for channels, locations and history: an empty one.
    with tempfile.TemporaryDirectory() as data_dir:
        ledger = Ledger(env=ledger_env(None, data_dir, True))
        try:
            measures = asyncio.run(bench(args, ledger))
        finally:
            ledger.close()
    print(f"  {'':34} {'wall s':>8} {'cpu s':>8} {'redis cpu s':>12} {'wall/5 s':>9}")
    for name in dict.fromkeys(m.name for m in measures):
        runs = [m for m in measures if m.name == name]
        best = min(runs, key=lambda m: m.wall)
        spent = f"{best.redis_cpu:12.2f}" if best.redis_cpu is not None else f"{'':12}"
        print(
            f"  {name:34} {best.wall:8.2f} {best.cpu:8.2f} {spent} {best.wall / TARGET:9.2f}"
            f"   (of {len(runs)}: {', '.join(f'{m.wall:.2f}' for m in runs)})"
        )
    print(f"  load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
