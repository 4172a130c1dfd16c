"""The planner's lists and preview on both read models (Redis, and the embedded one in
process), fed by the real projector from a real ledger (SQLite): indexes that follow every
write, cursors that neither repeat nor skip while writes go on, a rebuild that rebuilds the
indexes, and a preview that writes nothing and announces what the PUT then does."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.ledger import Ledger
from api.service.commands import CommandService
from api.service.planner import Planner, PolicyChange
from api.service.queries import ReadSide
from atp import commands as c
from atp.errors import DomainError
from projections.indexes import hold_memberships
from projections.projector import Projector
from projections.readmodel import MemoryReadModel, RedisReader, RedisStore
from tests.integration.conftest import Backend, Clock, run
from tests.support.redis_db import dump, prefixed, redis_url

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    """A ledger, its command service, a projector into one read model, and a planner over
    that read model (the async Redis client belongs to the test's event loop)."""

    kind: str
    backend: Backend
    service: CommandService
    ledger: Ledger
    store: Any
    redis: Any = None
    prefix: str = ""
    projector: Projector = field(init=False)

    def __post_init__(self) -> None:
        self.projector = Projector(self.ledger, self.store, self.backend.clock)

    def do(self, *commands: c.Command) -> None:
        """Write through the command service, then let the projector catch up."""
        for command in commands:
            run(self.service, command)
        self.project()

    def project(self) -> None:
        if isinstance(self.store, RedisStore) and self.store.build() is None:
            self.store.begin_build("test")
            self.projector.catch_up()
            self.store.complete_build("test")
        self.projector.catch_up()

    @asynccontextmanager
    async def planner(self, store: Any = None) -> AsyncIterator[Planner]:
        store = store or self.store
        if isinstance(store, MemoryReadModel):
            yield Planner(ReadSide(store), self.ledger, self.backend.clock)
            return
        client = aioredis.Redis.from_url(redis_url(0))
        try:
            reader = RedisReader(client, store.keys.prefix)
            yield Planner(ReadSide(reader), self.ledger, self.backend.clock)
        finally:
            await client.aclose()

    def snapshot(self) -> Any:
        """Everything the read model holds (to prove a preview changed nothing)."""
        if isinstance(self.store, MemoryReadModel):
            m = self.store
            indexes = {name: list(members) for name, members in m.indexes.items()}
            return (m.position, dict(m.ats), dict(m.items), indexes, dict(m.memberships))
        return dump(self.redis, self.prefix, frozenset({"heartbeat"}))


@pytest.fixture(params=["memory", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Stack]:
    backend = Backend(None, tmp_path, Clock())
    service = backend.service()
    ledger = backend.ledger()
    try:
        if request.param == "memory":
            yield Stack("memory", backend, service, ledger, MemoryReadModel())
        else:
            with prefixed(tag="planner") as (r, prefix):
                yield Stack("redis", backend, service, ledger, RedisStore(r, prefix), r, prefix)
    finally:
        ledger.close()
        backend.close()


def catalogue(stack: Stack, threshold: int = 3) -> None:
    stack.do(
        c.DefineLocation("WH1", "Main", "warehouse"),
        c.DefineLocation("ST1", "Store", "store"),
        c.DefineChannel("web", ("WH1", "ST1"), low_stock_threshold=threshold),
        c.DefineChannel("pos", ("ST1",), low_stock_threshold=1),
    )


def receive(location: str, **units: int) -> c.ReceiveStock:
    return c.ReceiveStock(location, tuple(c.Line(sku, n) for sku, n in units.items()))


async def all_items(planner: Planner, limit: int = 100, **filters: Any) -> list[str]:
    skus: list[str] = []
    cursor = None
    while True:
        page = await planner.list_items(limit=limit, cursor=cursor, **filters)
        skus += [row.sku for row in page.items]
        if (cursor := page.next_cursor) is None:
            return skus


# --- paging while writes go on ---------------------------------------------------------------


async def test_a_planner_pages_the_low_stock_report_while_the_shop_sells(stack: Stack) -> None:
    """Story: a planner reads the web low-stock report five SKUs a page while goods arrive
    and the web shop sells. New SKUs arrive before and after the page being read; listed
    SKUs sell out or are restocked.

    Invariant: every SKU in the list from the first page to the last is listed exactly
    once, in order; a SKU that joins or leaves meanwhile shows at most once."""
    catalogue(stack)
    steady = {f"S{i:02d}": 2 for i in range(0, 40, 2)}  # low (2 <= 3) throughout
    stack.do(receive("WH1", **steady))
    seen: list[str] = []
    cursor = None
    arrivals = iter(range(1, 40, 2))
    async with stack.planner() as planner:
        while True:
            page = await planner.list_items(
                channel="web", status="low_stock", limit=5, cursor=cursor
            )
            seen += [row.sku for row in page.items]
            assert all(row.channels[0].status == "low_stock" for row in page.items)
            if (cursor := page.next_cursor) is None:
                break
            # Between pages: two new low SKUs (one behind the cursor, one ahead of it), a
            # listed SKU restocked out of the list and back, a sale that empties another.
            behind, ahead = next(arrivals), 39 - next(arrivals)
            stack.do(receive("WH1", **{f"S{behind:02d}": 1, f"S{ahead:02d}": 1}))
            stack.do(receive("ST1", S00=50))
            stack.do(c.AdjustStock("ST1", "S00", -50, "recount"))
            stack.do(c.ReserveStock(f"r{len(seen)}", "web", (c.Line(f"S{ahead:02d}", 1),), 900))
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(steady) <= set(seen)


async def test_paging_during_concurrent_checkouts_never_repeats_or_skips(stack: Stack) -> None:
    """Invariant: with checkouts and receipts running in another thread (projected as they
    commit), paging the catalogue lists every SKU that existed before it began exactly
    once, in order."""
    catalogue(stack)
    first = {f"A{i:03d}": 5 for i in range(60)}
    stack.do(receive("WH1", **first))
    stop = threading.Event()
    errors: list[BaseException] = []

    def shop() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                sku = f"A{n * 7 % 60:03d}"
                run(stack.service, c.ReserveStock(f"c{n}", "web", (c.Line(sku, 1),), 900))
                run(stack.service, c.ReleaseReservation(f"c{n}"))
                run(stack.service, receive("WH1", **{f"B{n:03d}": 1}))
                stack.projector.catch_up()
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=shop)
    worker.start()
    try:
        async with stack.planner() as planner:
            listed = await all_items(planner, limit=7)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert listed == sorted(listed) and len(listed) == len(set(listed))
    assert set(first) <= set(listed)


# --- what the indexes list ----------------------------------------------------------------------


async def test_lists_follow_stock_holds_rules_and_expiry(stack: Stack) -> None:
    catalogue(stack)
    stack.do(receive("WH1", A=10, B=2, C=1), receive("ST1", C=6))
    stack.do(c.SetSafetyStock("B", "WH1", 1), c.SetSafetyStock(None, "ST1", 1))
    stack.do(c.ReserveStock("r1", "web", (c.Line("A", 3), c.Line("C", 1)), 60))
    async with stack.planner() as planner:
        assert await all_items(planner) == ["A", "B", "C"]
        assert await all_items(planner, location="ST1") == ["C"]
        assert await all_items(planner, channel="pos", status="out_of_stock") == ["A", "B"]
        assert await all_items(planner, channel="web", status="low_stock") == ["B"]
        assert await all_items(planner, prefix="B") == ["B"]
        page = await planner.list_items(channel="web", location="ST1", limit=10)
        (row,) = page.items
        assert [f.channel for f in row.channels] == ["web"]
        assert [f.location for f in row.locations] == ["ST1"]

        holds = (await planner.list_reservations(channel="web")).items
        assert [(h.sku, h.reservation_id, h.quantity) for h in holds] == [
            ("A", "r1", 3),
            ("C", "r1", 1),
        ]
        assert [h.sku for h in (await planner.list_reservations(sku="C")).items] == ["C"]
        assert (await planner.list_reservations(channel="pos")).items == []

        rules = (await planner.safety_stock_rules()).items
        assert [(r.sku, r.location, r.quantity) for r in rules] == [
            (None, "ST1", 1),
            ("B", "WH1", 1),
        ]

        stack.backend.clock.advance(61)  # the hold expires; nothing is recorded yet
        stack.projector.expire_due()
        assert (await planner.list_reservations()).items == []
        assert await all_items(planner, channel="web", status="low_stock") == ["B"]


def listed_holds(stack: Stack) -> set[tuple[str, str]]:
    """Every member of the `holds` and `holds:<channel>` indexes, as (index, member)."""
    if isinstance(stack.store, MemoryReadModel):
        return {
            (name, member)
            for name, members in stack.store.indexes.items()
            if name == "holds" or name.startswith("holds:")
            for member in members
        }
    found = set()
    for key in stack.redis.scan_iter(f"{stack.prefix}:{{index}}:holds*"):
        name = key.decode()[len(f"{stack.prefix}:{{index}}:") :]
        found |= {(name, m.decode()) for m in stack.redis.zrange(key, 0, -1)}
    return found


def live_holds(stack: Stack, skus: list[str]) -> set[tuple[str, str]]:
    """What the hold indexes must list: every live hold of the SKUs, from the ledger."""
    now = stack.backend.clock()
    return {m for sku in skus for m in hold_memberships(stack.ledger.load(("item", sku))[0], now)}


HOLD_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"), st.sampled_from(["web", "pos"]), st.sampled_from(["H1", "H2"])
        ),
        st.tuples(st.just("extend"), st.integers(0, 9), st.integers(1, 120)),
        st.tuples(st.just("release"), st.integers(0, 9)),
        st.tuples(st.just("commit"), st.integers(0, 9)),
        st.tuples(st.just("wait"), st.integers(1, 90)),
    ),
    max_size=14,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=HOLD_STEPS)
def test_the_holds_list_follows_each_hold_on_a_flash_sale_sku(
    stack: Stack, steps: list[tuple[Any, ...]]
) -> None:
    """Story: a flash-sale SKU carries hundreds of live holds while shoppers reserve, extend,
    release, check out and walk away (their holds expiring with no event recorded yet).
    The projector touches only the holds an event or an expiry names (issue 12: the cost of
    a hold no longer grows with the SKU's live holds).

    Invariant: after every step the reservations list (`holds`, `holds:<channel>`) lists
    exactly the live holds the ledger holds at that time, on both read models."""
    if not stack.ledger.load(("item", "H1"))[1]:
        catalogue(stack)
        stack.do(receive("ST1", H1=10_000, H2=10_000))
        stack.do(
            *[c.ReserveStock(f"bulk-{i}", "web", (c.Line("H1", 1),), 3600) for i in range(300)]
        )
    taken: list[str] = []
    for step in steps:
        try:
            match step:
                case ("reserve", channel, sku):
                    rid = f"r-{uuid.uuid4().hex[:10]}"
                    stack.do(c.ReserveStock(rid, channel, (c.Line(sku, 1),), 60))
                    taken.append(rid)
                case ("extend", i, seconds) if taken:
                    stack.do(c.ExtendReservation(taken[i % len(taken)], seconds))
                case ("release", i) if taken:
                    stack.do(c.ReleaseReservation(taken[i % len(taken)]))
                case ("commit", i) if taken:
                    stack.do(
                        c.CommitReservation(taken[i % len(taken)], f"o-{uuid.uuid4().hex[:10]}")
                    )
                case ("wait", seconds):
                    stack.backend.clock.advance(seconds)
                    stack.projector.expire_due()
        except DomainError:
            pass  # extending or committing an expired or ended reservation is refused
        assert listed_holds(stack) == live_holds(stack, ["H1", "H2"]), step


async def test_a_rebuild_rebuilds_the_indexes(stack: Stack) -> None:
    """Invariant: a read model replayed from the ledger lists exactly what the one that
    followed it lists (and, in Redis, holds the same index keys)."""
    catalogue(stack)
    stack.do(receive("WH1", **{f"K{i:02d}": i % 5 + 1 for i in range(1, 30)}))
    stack.do(c.ReserveStock("r1", "web", (c.Line("K04", 2),), 900))
    stack.do(c.SetSafetyStock("K09", None, 2), c.ReleaseReservation("r1"))
    stack.do(c.ReserveStock("r2", "web", (c.Line("K08", 1),), 900))
    with prefixed(tag="rebuilt") as (r, prefix):
        rebuilt: Any
        if isinstance(stack.store, MemoryReadModel):
            rebuilt = MemoryReadModel()
            Projector(stack.ledger, rebuilt, stack.backend.clock).replay()
            assert rebuilt.indexes.keys() == stack.store.indexes.keys()
            for name, members in stack.store.indexes.items():
                assert list(rebuilt.indexes[name]) == list(members), name
        else:
            rebuilt = RedisStore(r, prefix)
            rebuilt.begin_build("rebuilt")
            Projector(stack.ledger, rebuilt, stack.backend.clock).replay()
            rebuilt.complete_build("rebuilt")
            followed_keys = dump(r, stack.prefix)
            replayed_keys = dump(r, prefix)
            indexes = {
                key[len(stack.prefix) :]: value
                for key, value in followed_keys.items()
                if "{index}" in key
            }
            assert indexes, "the followed model has no index keys"
            assert {
                key[len(prefix) :]: value
                for key, value in replayed_keys.items()
                if "{index}" in key
            } == indexes
        async with stack.planner() as followed, stack.planner(rebuilt) as replayed:
            for filters in ({}, {"channel": "web", "status": "low_stock"}, {"location": "WH1"}):
                assert await all_items(replayed, 4, **filters) == await all_items(
                    followed, 4, **filters
                )
            assert await replayed.safety_stock_rules() == await followed.safety_stock_rules()


# --- the preview ------------------------------------------------------------------------------


async def test_a_preview_writes_nothing(stack: Stack) -> None:
    catalogue(stack)
    stack.do(receive("WH1", A=4, B=9), c.ReserveStock("r1", "web", (c.Line("A", 1),), 900))
    head, before = stack.ledger.ping(), stack.snapshot()
    change = PolicyChange(
        locations=(c.DefineLocation("WH1", "Main", "warehouse", active=False),),
        channels=(c.DefineChannel("web", ("WH1", "ST1"), buffer=2, low_stock_threshold=3),),
        safety_stock=(c.SetSafetyStock("B", None, 3), c.SetSafetyStock(None, None, 1)),
    )
    async with stack.planner() as planner:
        preview = await planner.preview(change)
    assert preview.changed > 0
    stack.projector.catch_up()
    assert stack.ledger.ping() == head
    assert stack.snapshot() == before


changes = st.builds(
    PolicyChange,
    locations=st.lists(
        st.builds(
            c.DefineLocation, st.just("ST1"), st.just("Store"), st.just("store"), st.booleans()
        ),
        max_size=1,
    ).map(tuple),
    channels=st.lists(
        st.builds(
            c.DefineChannel,
            st.just("web"),
            st.sampled_from([("WH1",), ("WH1", "ST1"), ("ST1", "WH1")]),
            st.integers(0, 6),
            st.integers(0, 100),
            st.integers(0, 4),
            st.integers(0, 6),
        ),
        max_size=1,
    ).map(tuple),
    safety_stock=st.lists(
        st.builds(
            c.SetSafetyStock,
            st.sampled_from([None, "A", "B", "C"]),
            st.sampled_from([None, "WH1", "ST1"]),
            st.integers(0, 4),
        ),
        max_size=2,
    ).map(tuple),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(change=changes)
async def test_the_preview_is_what_the_read_model_shows_after_the_put(
    stack: Stack, change: PolicyChange
) -> None:
    """Invariant: for any policy change, each figure the preview announces after it is the
    figure the read model serves once the PUTs are made (through the command service and
    the projector), and every figure it does not announce stays as it was."""
    if not stack.ledger.ping():
        catalogue(stack)
        stack.do(receive("WH1", A=3, B=8, C=1), receive("ST1", B=2, C=5))
        stack.do(c.ExpectIncoming("WH1", (c.Line("A", 4),), reference="PO-1"))
        stack.do(c.ReserveStock("r1", "web", (c.Line("B", 2),), 3600))
    async with stack.planner() as planner:
        preview = await planner.preview(change, limit=1000)
        before = {
            (row.sku, f.channel): (f.available, f.status)
            for row in (await planner.list_items()).items
            for f in row.channels
        }
        stack.do(*(command for _, command in change.commands()))
        after = {
            (row.sku, f.channel): (f.available, f.status)
            for row in (await planner.list_items()).items
            for f in row.channels
        }
    announced = {(x.sku, x.channel): (x.available_after, x.status_after) for x in preview.changes}
    assert preview.changed == len(announced)
    for key, figure in after.items():
        assert figure == announced.get(key, before.get(key)), (key, change)
    for total in preview.totals:
        served = [figure for (_, channel), figure in after.items() if channel == total.channel]
        assert total.after.available == sum(a for a, _ in served)
        assert total.after.out_of_stock == sum(s == "out_of_stock" for _, s in served)
        assert total.after.low_stock == sum(s == "low_stock" for _, s in served)
    assert msgspec.json.encode(preview)  # the answer encodes as the route sends it


async def test_the_item_page_reads_figures_and_history(stack: Stack) -> None:
    catalogue(stack)
    stack.do(receive("WH1", A=4), c.SetSafetyStock("A", None, 1))
    async with stack.planner() as planner:
        item = await planner.item("A")
        assert [(f.location, f.on_hand, f.sellable) for f in item.locations] == [
            ("WH1", 4, 3),
            ("ST1", 0, 0),
        ]
        assert {x.channel: x.available for x in item.channels} == {"web": 3, "pos": 0}
        unknown = await planner.item("NEVER-SEEN")
        assert all(x.available == 0 for x in unknown.channels)
        rows, next_after = await planner.item_history("A", limit=2)
        assert [type(r.event).__name__ for r in rows] == ["LocationDefined", "LocationDefined"]
        rest, last = await planner.item_history("A", after=next_after or 0, limit=1000)
        assert [type(r.event).__name__ for r in rest][-2:] == ["StockReceived", "SafetyStockSet"]
        assert last is None
