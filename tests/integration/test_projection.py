"""The read side on real PostgreSQL and Redis: the projector keeps Redis exactly equal to what
the domain computes from the ledger, through every event kind, policy fan-out, replays,
SIGKILLed projector processes, hold expiry without traffic, rebuilds and dropped connections.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from api.service.commands import CommandService
from atp import commands as c
from atp.errors import DomainError
from projections.projector import Projector
from projections.readmodel import MemoryReadModel, RedisStore, SkuWrite
from projections.runner import RedisProjection
from projections.views import sku_documents
from tests.integration.conftest import Backend, run
from tests.support.pg import fresh_database
from tests.support.projection import (
    assert_matches_domain,
    define_catalogue,
    figures,
    ledger_truth,
    meta_position,
    redis_documents,
    terminate_backends,
)
from tests.support.redis_db import (
    client,
    delete_prefix,
    dump,
    prefixed,
    redis_url,
    rename_prefix,
    scratch_databases,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class RealClock:
    """Wall-clock time, for tests whose projector runs in another process or in real time."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
def store() -> Iterator[tuple[redis.Redis, str]]:
    with prefixed(0, "proj") as (r, prefix):
        yield r, prefix


@pytest.fixture
def pg_real(tmp_path: Path) -> Iterator[Backend]:
    """A PostgreSQL backend whose command service runs on the real clock."""
    with fresh_database() as url:
        b = Backend(url, tmp_path, RealClock())  # type: ignore[arg-type]
        yield b
        b.close()


# --- what the domain says ---------------------------------------------------------------------


# --- every event kind ------------------------------------------------------------------------

L = c.Line
# (command, expected figures of SKU "A" afterwards: "<location>.<field>" or a channel code)
SCENARIO: list[tuple[str, Any, dict[str, Any]]] = [
    (
        "receipt",
        c.ReceiveStock(location="WH1", lines=(L("A", 20), L("B", 10))),
        {"WH1.on_hand": 20, "web": 20, "pos": 0, "bo": 20},
    ),
    (
        "receipt at a second location",
        c.ReceiveStock(location="ST1", lines=(L("A", 6),)),
        {"ST1.on_hand": 6, "web": 26, "pos": 2, "pos.status": "low_stock"},
    ),
    (
        "adjustment",
        c.AdjustStock(location="WH1", sku="A", delta=-2, reason="shrink"),
        {"WH1.on_hand": 18, "web": 24},
    ),
    (
        "damaged adjustment (found damaged)",
        c.AdjustStock(location="WH1", sku="A", delta=3, reason="found", damaged=True),
        {"WH1.on_hand": 21, "WH1.damaged": 3, "WH1.sellable": 18, "web": 24},
    ),
    (
        "damaged write-off",
        c.AdjustStock(location="WH1", sku="A", delta=-1, reason="scrap", damaged=True),
        {"WH1.on_hand": 20, "WH1.damaged": 2, "WH1.sellable": 18, "web": 24},
    ),
    (
        "cycle count",
        c.CountStock(location="WH1", lines=(c.CountLine("A", 19),)),
        {"WH1.on_hand": 19, "WH1.damaged": 2, "WH1.sellable": 17, "web": 23},
    ),
    (
        "transfer out",
        c.ShipTransfer(
            transfer_id="T1", from_location="WH1", to_location="ST1", lines=(L("A", 4),)
        ),
        {"WH1.on_hand": 15, "ST1.in_transit": 4, "ST1.on_hand": 6, "web": 19},
    ),
    (
        "transfer in",
        c.ReceiveTransfer(transfer_id="T1"),
        {"ST1.in_transit": 0, "ST1.on_hand": 10, "web": 23, "pos": 4},
    ),
    (
        "incoming",
        c.ExpectIncoming(location="WH1", lines=(L("A", 5),), reference="PO-1"),
        {"WH1.incoming": 5, "web": 23, "bo": 18},
    ),
    (
        "hold",
        c.ReserveStock(reservation_id="r1", channel="web", lines=(L("A", 3),), ttl_seconds=600),
        {"WH1.held": 3, "web": 20},
    ),
    (
        "extend",
        c.ExtendReservation(reservation_id="r1", ttl_seconds=1200),
        {"WH1.held": 3, "web": 20},
    ),
    ("release", c.ReleaseReservation(reservation_id="r1"), {"WH1.held": 0, "web": 23}),
    (
        "short hold",
        c.ReserveStock(reservation_id="r2", channel="web", lines=(L("A", 2),), ttl_seconds=60),
        {"WH1.held": 2, "web": 21},
    ),
    # "expiry" is special-cased below: time passes first, then the sweeper's command.
    ("expiry", c.ExpireReservation(reservation_id="r2"), {"WH1.held": 0, "web": 23}),
    (
        "hold to commit",
        c.ReserveStock(reservation_id="r3", channel="web", lines=(L("A", 5),), ttl_seconds=600),
        {"WH1.held": 5, "web": 18},
    ),
    (
        "commit",
        c.CommitReservation(reservation_id="r3", order_id="o1"),
        {"WH1.held": 0, "WH1.allocated": 5, "web": 18},
    ),
    (
        "order allocation",
        c.PlaceOrder(order_id="o2", channel="web", lines=(L("A", 3),)),
        {"WH1.allocated": 8, "web": 15},
    ),
    ("cancel", c.CancelOrder(order_id="o2"), {"WH1.allocated": 5, "web": 18}),
    (
        "shipment",
        c.ShipOrder(order_id="o1", shipment_id="s1", location="WH1", lines=(L("A", 5),)),
        {"WH1.on_hand": 10, "WH1.allocated": 0, "WH1.sellable": 8, "web": 18},
    ),
    (
        "return restock",
        c.ReturnOrder(order_id="o1", return_id="x1", location="WH1", lines=(c.ReturnLine("A", 1),)),
        {"WH1.on_hand": 11, "WH1.damaged": 2, "web": 19},
    ),
    (
        "return damaged",
        c.ReturnOrder(
            order_id="o1",
            return_id="x2",
            location="WH1",
            lines=(c.ReturnLine("A", 1, "damaged"),),
        ),
        {"WH1.on_hand": 12, "WH1.damaged": 3, "WH1.sellable": 9, "web": 19},
    ),
    (
        "SKU safety stock at a location",
        c.SetSafetyStock(sku="A", location="WH1", quantity=2),
        {"WH1.safety_stock": 2, "WH1.sellable": 7, "web": 17},
    ),
    (
        "SKU safety stock everywhere",
        c.SetSafetyStock(sku="A", location=None, quantity=1),
        {"WH1.safety_stock": 2, "ST1.safety_stock": 1, "ST1.sellable": 9, "web": 16, "pos": 3},
    ),
]


def test_redis_restarted_without_its_scripts_mid_sale_the_model_stays_exact(
    pg_backend: Backend, store: tuple[redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Story: during a sale the Redis server was restarted (or an operator ran SCRIPT
    FLUSH, or loaded only some scripts back by hand); the projector had loaded its scripts
    before. Invariant: the next writes still land, whole and exactly once, the model keeps
    matching the ledger, and the model's position never passes a document not yet
    written; and a write asks no SCRIPT EXISTS (issue 12: the projector calls its scripts
    by SHA1 inside its pipelines)."""
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("A", 20), L("B", 10))))
    ledger = pg_backend.ledger()
    model = RedisStore(r, prefix)
    projector = Projector(ledger, model, clock)
    projector.catch_up()
    asked: list[int] = []
    monkeypatch.setattr(redis.client.Pipeline, "load_scripts", lambda _: asked.append(1))
    loads: list[int] = []
    load_scripts = model._load_scripts

    def counted_load() -> None:
        # Called after a pipeline met NOSCRIPT: what it sent is applied in part.
        loads.append(meta_position(r, prefix))
        load_scripts()

    monkeypatch.setattr(model, "_load_scripts", counted_load)

    def sell(reservation_id: str, a: int, b: int) -> None:
        lines = (L("A", a), L("B", b))
        run(
            service,
            c.ReserveStock(
                reservation_id=reservation_id, channel="web", lines=lines, ttl_seconds=600
            ),
        )

    for n in range(3):
        sell(f"w{n}", 2, 1)
        projector.catch_up()
    assert (asked, loads) == ([], [])
    assert_matches_domain(r, prefix, ledger, ["A", "B"], clock())
    assert (figures(r, prefix, "A")["web"], figures(r, prefix, "B")["web"]) == (14, 7)

    # Every script gone.
    r.script_flush()
    before = meta_position(r, prefix)
    sell("after-flush", 4, 2)
    projector.catch_up()
    assert loads == [before]
    assert meta_position(r, prefix) == ledger.ping()
    assert_matches_domain(r, prefix, ledger, ["A", "B"], clock())
    assert (figures(r, prefix, "A")["web"], figures(r, prefix, "B")["web"]) == (10, 5)

    # Only some back: the SKU documents' and the meta's scripts land, the indexes' script
    # fails; the documents' pipeline is sent again whole, and the position waits for it.
    r.script_flush()
    r.script_load(model.script.script)
    r.script_load(model.meta_script.script)
    before = meta_position(r, prefix)
    sell("after-partial", 1, 1)
    projector.catch_up()
    assert loads[1:] == [before]
    assert meta_position(r, prefix) == ledger.ping() > before
    assert_matches_domain(r, prefix, ledger, ["A", "B"], clock())
    assert (figures(r, prefix, "A")["web"], figures(r, prefix, "B")["web"]) == (9, 4)
    # The re-sent documents counted nothing twice: each live hold is in A's holds once.
    assert r.hlen(f"{prefix}:{{A}}:holds") == 5
    assert asked == []


def test_every_event_kind_projects_as_the_domain_computes(
    pg_backend: Backend, store: tuple[redis.Redis, str]
) -> None:
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    define_catalogue(service)
    ledger = pg_backend.ledger()
    projector = Projector(ledger, RedisStore(r, prefix), clock)
    memory = MemoryReadModel()
    embedded_ledger = pg_backend.ledger()
    embedded = Projector(embedded_ledger, memory, clock)
    b_position = None
    for name, command, expected in SCENARIO:
        if name == "expiry":
            # The hold stops counting at expires_at, before anything is recorded: the
            # projector republishes the SKU on its own...
            clock.advance(61)
            head = ledger.ping()
            assert projector.expire_due() == 1, name
            assert ledger.ping() == head
            published = figures(r, prefix, "A")
            assert (published["WH1.held"], published["web"]) == (0, 23), name
            assert_matches_domain(r, prefix, ledger, ["A"], clock())
        run(service, command)
        projector.catch_up()
        embedded.catch_up()
        assert meta_position(r, prefix) == ledger.ping() == memory.position, name
        assert_matches_domain(r, prefix, ledger, ["A", "B"], clock())
        published = figures(r, prefix, "A")
        assert {k: published[k] for k in expected} == expected, name
        # The embedded read model holds the same documents (same projection code).
        for sku in ("A", "B"):
            ats, item_doc = redis_documents(r, prefix, sku)
            ats.pop("_position")
            assert memory.ats[sku] == ats, (name, sku)
            assert memory.items[sku] == item_doc, (name, sku)
        # B only moves with its own events and policy changes.
        b = r.hget(f"{prefix}:{{B}}:ats", "_position")
        if b_position is not None:
            assert b == b_position, name
        b_position = b
    ledger.close()
    embedded_ledger.close()


# --- policy fan-out ----------------------------------------------------------------------------

FANOUT_SKUS = 2000


def _all_positions(r: redis.Redis, prefix: str, skus: list[str]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for sku in skus:
        pipe.hget(f"{prefix}:{{{sku}}}:ats", "_position")
    return [int(p) for p in pipe.execute()]


def _all_available(r: redis.Redis, prefix: str, skus: list[str], channel: str) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for sku in skus:
        pipe.hget(f"{prefix}:{{{sku}}}:ats", channel)
    return [msgspec.json.decode(v)["available"] for v in pipe.execute()]


def test_policy_changes_fan_out_to_every_sku(
    pg_backend: Backend, store: tuple[redis.Redis, str]
) -> None:
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    define_catalogue(service)
    skus = [f"F{i:04d}" for i in range(FANOUT_SKUS)]
    wh1 = {sku: 5 + i % 17 for i, sku in enumerate(skus)}
    st1 = {sku: i % 7 for i, sku in enumerate(skus)}
    run(service, c.ReceiveStock(location="WH1", lines=tuple(L(s, q) for s, q in wh1.items())))
    run(
        service,
        c.ReceiveStock(location="ST1", lines=tuple(L(s, q) for s, q in st1.items() if q)),
    )
    ledger = pg_backend.ledger()
    projector = Projector(ledger, RedisStore(r, prefix), clock)
    projector.catch_up()
    positions = _all_positions(r, prefix, skus)
    assert r.scard(f"{prefix}:skus") == FANOUT_SKUS

    # A concurrent reader never sees a SKU's position go backwards or a document vanish.
    sample = skus[::97]
    seen: dict[str, int] = {}
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        rr = client(0)
        while not stop.is_set():
            pipe = rr.pipeline(transaction=False)
            for sku in sample:
                pipe.hget(f"{prefix}:{{{sku}}}:ats", "_position")
            for sku, raw in zip(sample, pipe.execute(), strict=True):
                if raw is None:
                    problems.append(f"{sku} missing")
                elif int(raw) < seen.get(sku, 0):
                    problems.append(f"{sku}: {seen[sku]} -> {int(raw)}")
                else:
                    seen[sku] = int(raw)
        rr.close()

    thread = threading.Thread(target=reader)
    thread.start()

    def sellable(q: int, safety: int, active: bool = True) -> int:
        return max(0, q - safety) if active else 0

    steps: list[tuple[str, Any, Any]] = [
        (
            "channel buffer",
            c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=3),
            lambda s: {"web": max(0, wh1[s] + st1[s] - 3), "pos": max(0, st1[s] // 2 - 1)},
        ),
        (
            "location inactive",
            c.DefineLocation(code="ST1", name="Store", kind="store", active=False),
            lambda s: {"web": max(0, wh1[s] - 3), "pos": 0},
        ),
        (
            "global safety stock",
            c.SetSafetyStock(sku=None, location=None, quantity=2),
            lambda s: {"web": max(0, sellable(wh1[s], 2) - 3), "bo": sellable(wh1[s], 2)},
        ),
        (
            "location safety stock",
            c.SetSafetyStock(sku=None, location="WH1", quantity=4),
            lambda s: {"web": max(0, sellable(wh1[s], 4) - 3), "bo": sellable(wh1[s], 4)},
        ),
        (
            "location active again",
            c.DefineLocation(code="ST1", name="Store", kind="store", active=True),
            lambda s: {
                "web": max(0, sellable(wh1[s], 4) + sellable(st1[s], 2) - 3),
                "pos": max(0, sellable(st1[s], 2) // 2 - 1),
            },
        ),
    ]
    try:
        for name, command, expect in steps:
            run(service, command)
            head = ledger.ping()
            started = time.monotonic()
            projector.catch_up()
            took = time.monotonic() - started
            new_positions = _all_positions(r, prefix, skus)
            assert all(p == head for p in new_positions), name
            assert all(n >= o for n, o in zip(new_positions, positions, strict=True)), name
            positions = new_positions
            for channel in ("web", "pos", "bo"):
                got = _all_available(r, prefix, skus, channel)
                want = [expect(s).get(channel) for s in skus]
                mismatched = [
                    (s, g, w)
                    for s, g, w in zip(skus, got, want, strict=True)
                    if w is not None and g != w
                ]
                assert not mismatched, (name, channel, mismatched[:5])
            assert took < 15, (name, took)
        # A SKU's own rule re-dates that SKU only.
        run(service, c.SetSafetyStock(sku=skus[0], location=None, quantity=1))
        projector.catch_up()
        after = _all_positions(r, prefix, skus)
        assert after[0] == ledger.ping() and after[1:] == positions[1:]
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:5]
    assert_matches_domain(r, prefix, ledger, skus[:3] + skus[-3:] + sample[:5], clock())
    ledger.close()


# --- exactly once -------------------------------------------------------------------------------


def _busy_history(service: CommandService) -> None:
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("A", 10), L("B", 10), L("C", 4))))
    run(service, c.ReceiveStock(location="ST1", lines=(L("A", 5),)))
    run(
        service,
        c.ReserveStock(
            reservation_id="h1", channel="web", lines=(L("A", 2), L("B", 3)), ttl_seconds=600
        ),
    )
    run(service, c.PlaceOrder(order_id="o1", channel="web", lines=(L("C", 1),)))
    run(service, c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=1))
    run(service, c.AdjustStock(location="WH1", sku="A", delta=-1, reason="shrink"))
    run(service, c.SetSafetyStock(sku="B", location=None, quantity=1))


def test_replaying_notifications_changes_nothing(
    pg_backend: Backend, store: tuple[redis.Redis, str]
) -> None:
    """A projector that resumes from an older stored position (it crashed after writing the
    SKUs, before writing its position) re-reads events it already applied: nothing changes,
    now or later."""
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    _busy_history(service)
    ledger = pg_backend.ledger()
    Projector(ledger, RedisStore(r, prefix), clock).catch_up()
    before = dump(r, prefix)
    head = ledger.ping()
    skus = ["A", "B", "C"]
    for older in (head - 3, 1):
        r.hset(f"{prefix}:meta", "position", older)
        again = Projector(ledger, RedisStore(r, prefix), clock)
        again.resume()
        assert again.position == older
        assert again.catch_up() > 0
        assert dump(r, prefix) == before, older
    # The replayed projector goes on: its next events must land on the true state, not on
    # one where the replayed events were applied twice.
    run(service, c.AdjustStock(location="WH1", sku="A", delta=1, reason="found"))
    run(service, c.ReceiveStock(location="WH1", lines=(L("B", 1), L("C", 1))))
    again.catch_up()
    assert_matches_domain(r, prefix, ledger, skus, clock())
    ledger.close()


def test_position_guard_rejects_older_writes(
    pg_backend: Backend, store: tuple[redis.Redis, str]
) -> None:
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("A", 10),)))
    ledger = pg_backend.ledger()
    old_item, policies, old_position = ledger_truth(ledger, "A")
    run(service, c.ReceiveStock(location="WH1", lines=(L("A", 5),)))
    item, _, position = ledger_truth(ledger, "A")
    old = sku_documents(old_item, policies, clock(), old_position)
    new = sku_documents(item, policies, clock(), position)

    for model in ("memory", "redis"):
        mem = MemoryReadModel()
        target: Any = RedisStore(r, prefix) if model == "redis" else mem
        delete_prefix(r, prefix)

        def docs(model: str = model, mem: MemoryReadModel = mem) -> tuple[Any, Any]:
            if model == "redis":
                ats, item_doc = redis_documents(r, prefix, "A")
                return ats.get("web"), item_doc
            return mem.ats.get("A", {}).get("web"), mem.items.get("A")

        def position_now(model: str = model, mem: MemoryReadModel = mem) -> int:
            return meta_position(r, prefix) if model == "redis" else mem.position

        target.write([SkuWrite(new, item)], position, policies, None)
        assert docs() == (new.availability["web"], new.item), model
        # An older write (a stale projector, a replay) changes no document, forced or not.
        target.write([SkuWrite(old, old_item)], old_position, policies, None)
        assert docs() == (new.availability["web"], new.item), model
        target.write([SkuWrite(old, old_item, force=True)], old_position, policies, None)
        assert docs() == (new.availability["web"], new.item), model
        # The same position is rewritten only when forced (a hold expired).
        stale_same = sku_documents(old_item, policies, clock(), position)
        target.write([SkuWrite(stale_same, old_item)], position, policies, None)
        assert docs() == (new.availability["web"], new.item), model
        target.write([SkuWrite(stale_same, old_item, force=True)], position, policies, None)
        assert docs() == (stale_same.availability["web"], stale_same.item), model
        # The read model's position (what min_position waits for, what /metrics reports)
        # does not go back either, whichever store holds it.
        target.write([], old_position, None, None)
        assert position_now() == position, (
            f"{model}: the read model's position went back from {position} to "
            f"{position_now()} on a write at {old_position}"
        )
    ledger.close()


# --- a projector process killed at random moments --------------------------------------------


def _projector_env(database_url: str, db: int, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    env.update(
        ATP_DATABASE_URL=database_url,
        ATP_REDIS_URL=redis_url(db),
        ATP_REDIS_PREFIX=prefix,
        ATP_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _start_projector(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project", *args],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_position(r: redis.Redis, prefix: str, position: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while meta_position(r, prefix) < position:
        assert time.monotonic() < deadline, (
            f"read model at {meta_position(r, prefix)}, ledger at {position}"
        )
        time.sleep(0.02)


class Traffic:
    """Writes a mix of every kind of command from a thread until stopped."""

    def __init__(self, service: CommandService, skus: list[str], seed: int) -> None:
        self.service = service
        self.skus = skus
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.count = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()
        assert not self.errors, self.errors[:3]

    def _loop(self) -> None:
        rnd, n = self.random, 0
        held: list[str] = []
        orders: list[str] = []
        while not self.stop.is_set():
            n += 1
            sku = rnd.choice(self.skus)
            kind = rnd.random()
            try:
                if kind < 0.25:
                    loc = rnd.choice(("WH1", "ST1"))
                    run(
                        self.service,
                        c.ReceiveStock(location=loc, lines=(L(sku, rnd.randint(1, 5)),)),
                    )
                elif kind < 0.45:
                    rid = f"r{n}"
                    run(
                        self.service,
                        c.ReserveStock(
                            reservation_id=rid, channel="web", lines=(L(sku, 1),), ttl_seconds=3600
                        ),
                    )
                    held.append(rid)
                elif kind < 0.55 and held:
                    run(self.service, c.ReleaseReservation(reservation_id=held.pop(0)))
                elif kind < 0.62 and held:
                    oid = f"o{n}"
                    run(self.service, c.CommitReservation(reservation_id=held.pop(0), order_id=oid))
                    orders.append(oid)
                elif kind < 0.72:
                    oid = f"o{n}"
                    run(self.service, c.PlaceOrder(order_id=oid, channel="web", lines=(L(sku, 1),)))
                    orders.append(oid)
                elif kind < 0.78 and orders:
                    run(self.service, c.CancelOrder(order_id=orders.pop(0)))
                elif kind < 0.84:
                    run(
                        self.service,
                        c.AdjustStock(
                            location="WH1",
                            sku=sku,
                            delta=1,
                            reason="found",
                            damaged=rnd.random() < 0.3,
                        ),
                    )
                elif kind < 0.88:
                    run(
                        self.service,
                        c.CountStock(location="ST1", lines=(c.CountLine(sku, rnd.randint(0, 9)),)),
                    )
                elif kind < 0.92:
                    run(self.service, c.ExpectIncoming(location="WH1", lines=(L(sku, 2),)))
                elif kind < 0.96:
                    run(
                        self.service,
                        c.SetSafetyStock(sku=sku, location="WH1", quantity=rnd.randint(0, 2)),
                    )
                else:
                    # Policy changes fan out to every SKU.
                    run(
                        self.service,
                        c.DefineChannel(
                            code="web", locations=("WH1", "ST1"), buffer=rnd.randint(0, 3)
                        ),
                    )
                self.count += 1
            except DomainError:
                pass
            except BaseException as exc:  # pragma: no cover - reported by __exit__
                self.errors.append(exc)
                return
            time.sleep(rnd.random() * 0.004)


def test_sigkilled_projector_converges_to_the_ledger(pg_real: Backend) -> None:
    service = pg_real.service()
    define_catalogue(service)
    skus = [f"K{i}" for i in range(25)]
    run(service, c.ReceiveStock(location="WH1", lines=tuple(L(s, 20) for s in skus)))
    ledger = pg_real.ledger()
    rnd = random.Random(os.getpid())
    with prefixed(0, "crash") as (r, prefix), prefixed(0, "crashref") as (_, ref_prefix):
        env = _projector_env(pg_real.database_url or "", 0, prefix)
        kills = 0
        with Traffic(service, skus, seed=os.getpid()):
            for i in range(5):
                process = _start_projector(env)
                deadline = time.monotonic() + 15
                while not r.exists(f"{prefix}:lock"):  # it is projecting
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.01)
                time.sleep(rnd.uniform(0.0, 0.8))
                assert process.poll() is None, "the projector exited by itself"
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                if i < 4:
                    # The dead projector's lease would lapse within 10 s; end it now.
                    r.delete(f"{prefix}:lock")
        head = ledger.ping()
        assert kills == 5 and head > 100
        assert meta_position(r, prefix) > 0  # the killed projectors made progress
        # The last one's lease is left to lapse: the next projector waits, then takes over.
        assert r.exists(f"{prefix}:lock")
        process = _start_projector(env)
        try:
            _wait_for_position(r, prefix, head, timeout=30)
        finally:
            _stop(process)
        # A fresh projector over the whole ledger, into other keys, gives exactly the same.
        Projector(ledger, RedisStore(r, ref_prefix)).catch_up()
        assert rename_prefix(dump(r, prefix), prefix, ref_prefix) == dump(r, ref_prefix)
        assert_matches_domain(r, prefix, ledger, skus, datetime.now(UTC))
    ledger.close()


# --- expiry without other traffic ---------------------------------------------------------------


def test_expired_hold_is_published_within_two_seconds(pg_real: Backend) -> None:
    service = pg_real.service()
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("E", 10),)))
    ledger = pg_real.ledger()
    with scratch_databases(1) as (db,):
        prefix = "exp"
        r = client(db)
        projection = RedisProjection(ledger, redis_url(db), prefix)
        stop = threading.Event()
        thread = threading.Thread(target=projection.run, args=(stop,))
        thread.start()
        try:
            _wait_for_position(r, prefix, ledger.ping(), timeout=10)

            def web() -> int:
                raw = r.hget(f"{prefix}:{{E}}:ats", "web")
                return int(msgspec.json.decode(raw)["available"]) if raw else -1

            assert web() == 10
            run(
                service,
                c.ReserveStock(
                    reservation_id="x", channel="web", lines=(L("E", 4),), ttl_seconds=1
                ),
            )
            reservation, _ = ledger.load(("reservation", "x"))
            expires_at = reservation.expires_at.timestamp()
            head = ledger.ping()
            _wait_for_position(r, prefix, head, timeout=5)
            assert web() == 6
            while web() == 6:
                assert time.time() < expires_at + 2.0, "the expiry was not published in time"
                time.sleep(0.01)
            published_at = time.time()
            assert web() == 10
            assert published_at >= expires_at - 0.05, "published before expires_at"
            assert ledger.ping() == head, "no event was needed"
            item = msgspec.json.decode(r.get(f"{prefix}:{{E}}:item"))
            (wh1,) = [loc for loc in item["locations"] if loc["location"] == "WH1"]
            assert wh1["held"] == 0 and wh1["sellable"] == 10
        finally:
            stop.set()
            thread.join(timeout=10)
            r.close()
    ledger.close()


def test_hold_that_expired_while_the_projector_was_down_is_published_on_resume(
    pg_backend: Backend, store: tuple[redis.Redis, str]
) -> None:
    """The projector stops before a hold's expires_at and starts again after it, with no
    event in between (no sweeper): the resumed projector publishes the figure without the
    hold, as the domain computes it now."""
    r, prefix = store
    service = pg_backend.service()
    clock = pg_backend.clock
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("E", 10),)))
    run(
        service,
        c.ReserveStock(reservation_id="x", channel="web", lines=(L("E", 4),), ttl_seconds=60),
    )
    ledger = pg_backend.ledger()
    Projector(ledger, RedisStore(r, prefix), clock).catch_up()
    assert figures(r, prefix, "E")["web"] == 6
    clock.advance(61)  # the projector is down meanwhile
    resumed = Projector(ledger, RedisStore(r, prefix), clock)
    resumed.resume()
    resumed.catch_up()
    resumed.expire_due()
    published = figures(r, prefix, "E")
    assert (published["WH1.held"], published["web"]) == (0, 10), published
    assert_matches_domain(r, prefix, ledger, ["E"], clock())
    ledger.close()


# --- rebuild -------------------------------------------------------------------------------------


def _without(data: dict[str, Any], prefix: str, *fields: str) -> dict[str, Any]:
    out = dict(data)
    meta = dict(out.get(f"{prefix}:meta", {}))
    for f in fields:
        meta.pop(f, None)
    out[f"{prefix}:meta"] = meta
    return out


def test_rebuild_equals_incremental_and_readers_never_see_partial_data(pg_real: Backend) -> None:
    service = pg_real.service()
    define_catalogue(service)
    skus = [f"R{i}" for i in range(40)]
    run(service, c.ReceiveStock(location="WH1", lines=tuple(L(s, 30) for s in skus)))
    ledger = pg_real.ledger()
    prefix = "rb"
    with scratch_databases(2) as (live, scratch):
        r = client(live)
        projection = RedisProjection(ledger, redis_url(live), prefix, rebuild_db=scratch)
        stop = threading.Event()
        incremental = threading.Thread(target=projection.run, args=(stop,))
        incremental.start()

        # A reader of every SKU, as a storefront would read it, while rebuilds switch over.
        problems: list[str] = []
        reads = [0]
        reading = threading.Event()
        reader_stop = threading.Event()

        def reader() -> None:
            rr = client(live)
            last: dict[str, int] = {}
            last_meta = 0
            while not reader_stop.is_set():
                pipe = rr.pipeline(transaction=False)
                for sku in skus:
                    pipe.hmget(f"{prefix}:{{{sku}}}:ats", "_position", "web")
                pipe.hget(f"{prefix}:meta", "position")
                *values, meta = pipe.execute()
                if meta is None or int(meta) < last_meta:
                    problems.append(f"meta position {last_meta} -> {meta}")
                last_meta = int(meta or 0)
                for sku, (position, web) in zip(skus, values, strict=True):
                    if position is None or web is None:
                        problems.append(f"{sku} missing")
                    elif int(position) < last.get(sku, 0):
                        problems.append(f"{sku}: {last[sku]} -> {int(position)}")
                    else:
                        last[sku] = int(position)
                reads[0] += 1
                reading.set()
            rr.close()

        thread = None
        try:
            with Traffic(service, skus, seed=7):
                time.sleep(1.0)
            _wait_for_position(r, prefix, ledger.ping(), timeout=20)
            thread = threading.Thread(target=reader)
            thread.start()
            assert reading.wait(10)
            incremental_dump = dump(r, prefix)

            # 1. Rebuild while the incremental projector runs (it hands over) and nothing
            # new is written: the same content, with a new generation.
            rebuild_ledger = pg_real.ledger()
            rebuilder = RedisProjection(rebuild_ledger, redis_url(live), prefix, rebuild_db=scratch)
            position = rebuilder.rebuild()
            rebuilder.client.close()
            rebuild_ledger.close()
            assert position == ledger.ping()
            rebuilt = dump(r, prefix)
            assert rebuilt[f"{prefix}:meta"]["generation"] == b"1"
            assert _without(rebuilt, prefix, "generation") == incremental_dump
            scratch_client = client(scratch)
            assert scratch_client.dbsize() == 0
            scratch_client.close()

            # 2. `atp project --rebuild --once` while writes go on: readers switch over with
            # nothing missing, and the result is what the ledger says.
            env = _projector_env(
                pg_real.database_url or "", live, prefix, ATP_REDIS_REBUILD_DB=str(scratch)
            )
            with Traffic(service, skus, seed=8):
                time.sleep(0.3)
                before = reads[0]
                subprocess.run(
                    [sys.executable, "-m", "api.cli", "project", "--rebuild", "--once"],
                    env=env,
                    cwd=ROOT,
                    check=True,
                    timeout=60,
                    capture_output=True,
                )
                time.sleep(0.3)
            assert reads[0] > before
            assert r.hget(f"{prefix}:meta", "generation") == b"2"
            head = ledger.ping()
            _wait_for_position(r, prefix, head, timeout=20)  # the incremental one took over
        finally:
            reader_stop.set()
            if thread is not None:
                thread.join()
            stop.set()
            incremental.join(timeout=15)
        assert not problems, problems[:10]
        # The live model equals a fresh projection of the same ledger (in another prefix).
        Projector(ledger, RedisStore(r, "rbref")).catch_up()
        assert rename_prefix(_without(dump(r, prefix), prefix, "generation"), prefix, "rbref") == (
            dump(r, "rbref")
        )
        assert_matches_domain(r, prefix, ledger, skus[:10], datetime.now(UTC))
        r.close()
    ledger.close()


# --- dropped connections -------------------------------------------------------------------------


def _kill_redis_clients(r: redis.Redis, db: int) -> int:
    mine = r.client_id()
    killed = 0
    for info in r.client_list():
        if int(info["db"]) == db and int(info["id"]) != mine:
            r.client_kill_filter(_id=info["id"])
            killed += 1
    return killed


def _run_with_retry(service: CommandService, command: Any) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            run(service, command)
            return
        except DomainError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


RECONNECT_SECONDS = 10.0
"""How long a projector may take to resume after a dropped connection: beyond it, /ready
calls it stale (api/routes/admin.py STALE_SECONDS)."""


@pytest.fixture
def running_projection(pg_real: Backend) -> Iterator[tuple[CommandService, redis.Redis, str, int]]:
    """A RedisProjection running in a thread (as `atp project` runs it), on its own ledger."""
    service = pg_real.service()
    define_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(L("P", 10), L("Q", 3))))
    projector_ledger = pg_real.ledger()
    with scratch_databases(1) as (db,):
        prefix = "rc"
        r = client(db)
        projection = RedisProjection(projector_ledger, redis_url(db), prefix)
        stop = threading.Event()
        thread = threading.Thread(target=projection.run, args=(stop, 0.2))
        thread.start()
        try:
            with pg_real.ledger() as ledger:
                _wait_for_position(r, prefix, ledger.ping(), timeout=10)
            yield service, r, prefix, db
            assert thread.is_alive()
        finally:
            stop.set()
            thread.join(timeout=15)
            projection.client.close()
            r.close()
    projector_ledger.close()


def test_projector_reconnects_after_postgresql_drops_its_connections(
    pg_real: Backend, running_projection: tuple[CommandService, redis.Redis, str, int]
) -> None:
    service, r, prefix, _ = running_projection
    # PostgreSQL drops every connection of the database: the projector's pool and its
    # LISTEN connection (and the test writer's, which retries).
    assert terminate_backends(pg_real.database_url or "") >= 2
    _run_with_retry(service, c.ReceiveStock(location="WH1", lines=(L("P", 1),)))
    _run_with_retry(service, c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=2))
    ledger = pg_real.ledger()
    _wait_for_position(r, prefix, ledger.ping(), timeout=RECONNECT_SECONDS)
    assert_matches_domain(r, prefix, ledger, ["P", "Q"], datetime.now(UTC))
    ledger.close()


def test_projector_reconnects_after_redis_drops_its_connections(
    pg_real: Backend, running_projection: tuple[CommandService, redis.Redis, str, int]
) -> None:
    service, r, prefix, db = running_projection
    assert _kill_redis_clients(r, db) >= 1
    run(service, c.AdjustStock(location="WH1", sku="Q", delta=-1, reason="shrink"))
    ledger = pg_real.ledger()
    _wait_for_position(r, prefix, ledger.ping(), timeout=RECONNECT_SECONDS)
    assert_matches_domain(r, prefix, ledger, ["P", "Q"], datetime.now(UTC))
    ledger.close()
