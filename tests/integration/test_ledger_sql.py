"""The read-side SQL of reconciliation (adapters.ledger_sql) on SQLite and on PostgreSQL
(asyncpg): streams as of a time, from the snapshot before it, and the history between two
times (issue 13 §1, §4, §7)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from adapters.ledger import stream_id
from adapters.ledger_sql import reader_for
from atp import commands as cmd
from atp.decide import POLICIES
from atp.state import ItemState, Policies
from tests.integration.conftest import Backend, run

pytestmark = pytest.mark.integration


async def test_a_long_stream_as_of_any_time_is_the_fold_of_what_occurred_by_then(
    backend: Backend,
) -> None:
    """Story: a SKU adjusted 250 times, one a second (the writer snapshots it at 100 and
    200), its channel's buffer raised after the 150th. Invariant: as of any time the
    reader's state is exactly the stream's events that occurred by then (snapshot or not),
    the policies are as of then too, the events after it are returned in order when asked,
    and the history between two times holds exactly the events that occurred in it."""
    service = backend.service()
    run(service, cmd.DefineLocation(code="WH", name="WH", kind="warehouse"))
    run(service, cmd.DefineChannel(code="web", locations=("WH",)))
    times: dict[int, datetime] = {}
    for i in range(1, 251):
        backend.clock.advance(1)
        run(service, cmd.AdjustStock(location="WH", sku="A", delta=1, reason="found"))
        times[i] = backend.clock.now
        if i == 150:
            backend.clock.advance(0.5)
            run(service, cmd.DefineChannel(code="web", locations=("WH",), buffer=3))
    ledger = service.ledger
    assert ledger.snapshots is not None
    assert len(list(ledger.snapshots.get(stream_id(("item", "A"))))) == 2
    reader = reader_for(ledger, backend.database_url)
    try:
        for k in (1, 99, 100, 101, 150, 199, 200, 201, 250):
            folded = await reader.as_of([("item", "A"), POLICIES], times[k], later=True)
            item, policies = folded[("item", "A")], folded[POLICIES]
            assert isinstance(item.state, ItemState) and isinstance(policies.state, Policies)
            assert item.state.at("WH").on_hand == k, k
            assert len(item.later) == 250 - k, k
            assert policies.state.channels["web"].buffer == (3 if k > 150 else 0), k
        rows = await reader.history(("item", "A"), times[100], times[110], 0, 1000)
        assert len(rows) == 10 and rows[0].occurred_at == times[101]
        page = await reader.history(("item", "A"), times[100], times[110], rows[4].position, 1000)
        assert [r.position for r in page] == [r.position for r in rows[5:]]
        before = await reader.as_of([("item", "A")], times[1].replace(year=2020))
        assert before[("item", "A")].state.at("WH").on_hand == 0
        assert await reader.skus_at("WH") == {"A"}
    finally:
        await reader.close()


async def test_exclusive_admits_one_holder_per_key_across_processes(backend: Backend) -> None:
    """Story: two worker processes (two readers on PostgreSQL; embedded is one process, one
    reader) reconcile WH at once while a third run reconciles ST. Invariant: one holder of
    a key at a time (the second enters only after the first left), other keys never
    wait."""
    service = backend.service()
    first = reader_for(service.ledger, backend.database_url)
    second = reader_for(service.ledger, backend.database_url) if backend.database_url else first
    order: list[str] = []
    a_in, c_in = asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with first.exclusive("reconciliation:WH"):
            order.append("a+")
            a_in.set()
            await asyncio.wait_for(c_in.wait(), 30)  # another key enters meanwhile
            await asyncio.sleep(0.2)
            order.append("a-")

    async def b() -> None:
        await a_in.wait()
        async with second.exclusive("reconciliation:WH"):
            order.append("b+")

    async def c() -> None:
        await a_in.wait()
        async with second.exclusive("reconciliation:ST"):
            order.append("c+")
            c_in.set()

    try:
        await asyncio.gather(a(), b(), c())
    finally:
        await first.close()
        await second.close()
    assert order.index("b+") > order.index("a-") > order.index("c+")
