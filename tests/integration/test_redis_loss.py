"""Redis lost under load (issue 8 §3): FLUSHALL, or a Redis restarted empty, never yields a
wrong figure.

The service (`atp serve`) and the projector (`atp project`) run as processes on real
PostgreSQL and Redis. Each test has a Redis database of its own, so `FLUSHDB` there is what
`FLUSHALL` is to a dedicated Redis (the server is shared with other test runs).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters.ledger import HistoryRow, Ledger, history, ledger_env, stream_id
from atp import commands as c
from atp.ats import channel_availability
from atp.decide import POLICIES
from atp.state import ItemState, Policies, state_enc_hook
from projections.readmodel import RedisStore
from tests.integration.conftest import Backend, Clock, run
from tests.support.pg import fresh_database
from tests.support.projection import assert_matches_domain, define_catalogue
from tests.support.read_model import HEADERS, PREFIX, wait_complete
from tests.support.read_stack import Stack
from tests.support.redis_db import client, delete_prefix, prefixed, redis_url, scratch_databases
from tests.support.server import atp, running_service, service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SKUS = [f"F{i:03d}" for i in range(60)]
CHANNELS = ("web", "pos")


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


@pytest.fixture
def stack() -> Iterator[Stack]:
    with fresh_database() as url, scratch_databases(1) as (db,):
        env = service_env(url, ATP_REDIS_URL=redis_url(db), ATP_REDIS_PREFIX=PREFIX)
        env["PYTHONPATH"] = str(ROOT)
        with running_service(env) as server:
            s = Stack(server, client(db), PREFIX, env, url)
            s.start_projector()
            try:
                with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as c:
                    _ok(c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"}))
                    _ok(c.put("/v1/locations/ST1", json={"name": "Store", "kind": "store"}))
                    _ok(c.put("/v1/channels/web", json={"locations": ["WH1", "ST1"]}))
                    _ok(
                        c.put(
                            "/v1/channels/pos",
                            json={"locations": ["ST1"], "buffer": 1, "share_percent": 50},
                        )
                    )
                    for location, units in (("WH1", 500), ("ST1", 20)):
                        lines = [{"sku": sku, "quantity": units} for sku in SKUS]
                        _ok(
                            c.post(
                                "/v1/receipts",
                                json={"location": location, "lines": lines},
                                headers={"Idempotency-Key": uuid.uuid4().hex},
                            ),
                            201,
                        )
                wait_complete(s)
                yield s
            finally:
                s.stop_projector()
                s.redis.close()


# --- the ledger's truth at a position -----------------------------------------------------------


class Truth:
    """Each SKU's state and the policies folded from the ledger up to a given position."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.rows: dict[str, list[HistoryRow]] = {}

    def at(self, sku: str, position: int) -> tuple[ItemState, Policies]:
        if sku not in self.rows:
            self.rows[sku] = history(self.ledger, [("item", sku), POLICIES], 0, 1_000_000)
        item: Any = Ledger._initial(("item", sku))
        policies: Any = Ledger._initial(POLICIES)
        for row in self.rows[sku]:
            if row.position > position:
                break
            if row.originator_id == POLICIES_ID:
                policies = Ledger.fold_one(POLICIES, policies, row.event)
            else:
                item = Ledger.fold_one(("item", sku), item, row.event)
        return item, policies

    def figure(self, sku: str, channel: str, position: int, now: datetime) -> tuple[int, str]:
        item, policies = self.at(sku, position)
        a = channel_availability(item, policies, policies.channels[channel], now)
        return a.available, a.status


POLICIES_ID = stream_id(POLICIES)


# --- the stories ---------------------------------------------------------------------------------


def test_redis_restarted_empty_while_the_projector_was_down_answers_503_then_the_truth(
    stack: Stack,
) -> None:
    """Story: the Redis host reboots without persistence while `atp project` is being
    redeployed, and a storefront keeps asking for stock.

    Invariant: while the read model is missing, no read answers a figure (no 0 for a SKU
    with 500 units, no 404 for a defined channel): 503 with Retry-After; `/ready` says the
    read model is rebuilding and stays in rotation (writes go on); once the projector is
    back, every figure is the ledger's, including a receipt taken during the outage, and no
    position is lower than one served before."""
    with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
        before = _ok(c.get("/v1/availability/web/F001"))
        assert before["available"] == 520
        stack.stop_projector()
        stack.redis.flushdb()

        for path in (
            "/v1/availability/web/F001",
            "/v1/availability/web?sku=F001&sku=F002",
            "/v1/items/F001",
            "/v1/availability/pos/F001?min_position=1",
            "/v1/availability/web/NEVER-SOLD",
        ):
            r = c.get(path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "read-model-rebuilding"
        ready = c.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["read_model"] == {"status": "rebuilding", "kind": "redis"}

        # Checkout does not need the read model.
        _ok(
            c.post(
                "/v1/receipts",
                json={"location": "WH1", "lines": [{"sku": "F001", "quantity": 7}]},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
            201,
        )

        stack.start_projector()
        head = wait_complete(stack)
        after = _ok(c.get("/v1/availability/web/F001"))
        assert (after["available"], after["status"]) == (527, "in_stock")
        assert after["position"] >= before["position"] and after["position"] <= head
        assert _ok(c.get("/v1/availability/web/NEVER-SOLD"))["available"] == 0
        assert _ok(c.get("/ready"))["checks"]["read_model"]["status"] == "ok"
    with stack.ledger() as ledger:
        assert_matches_domain(stack.redis, PREFIX, ledger, SKUS[:5], datetime.now(UTC))


def test_flushall_under_load_never_yields_a_wrong_figure(stack: Stack) -> None:
    """Story: during a busy afternoon an operator runs FLUSHALL on the Redis the read model
    lives in (twice), while storefronts read stock and checkouts hold and release units.

    Invariant: every answer a reader gets is either a 503 with Retry-After or exactly the
    ledger's figure at the position the answer carries (so no 0 for a stocked SKU, no
    over-statement, no 404 for a defined channel); for each reader, a SKU's position never
    goes backwards; afterwards the model equals the ledger."""
    stop = threading.Event()
    answers: list[tuple[str, str, int, str, int]] = []
    """(sku, channel, available, status, position) of every figure served."""
    bad: list[str] = []
    counts = {"ok": 0, "503": 0, "writes": 0}
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        last: dict[tuple[str, str], int] = {}
        with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
            while not stop.is_set():
                channel = rnd.choice(CHANNELS)
                kind = rnd.random()
                if kind < 0.5:
                    r = c.get(f"/v1/availability/{channel}/{rnd.choice(SKUS)}")
                elif kind < 0.8:
                    skus = rnd.sample(SKUS, 10)
                    r = c.get(f"/v1/availability/{channel}", params=[("sku", s) for s in skus])
                else:
                    r = c.get(f"/v1/items/{rnd.choice(SKUS)}")
                if r.status_code == 503:
                    if r.headers.get("retry-after") != "1":
                        bad.append(f"503 without Retry-After: {r.text}")
                    with lock:
                        counts["503"] += 1
                    continue
                if r.status_code != 200:
                    bad.append(f"{r.request.url}: {r.status_code} {r.text}")
                    continue
                body = r.json()
                if "channels" in body:  # an item document
                    docs = [
                        {**ch, "sku": body["sku"], "position": body["position"]}
                        for ch in body["channels"]
                    ]
                else:
                    docs = body.get("items", [body])
                with lock:
                    counts["ok"] += 1
                    for d in docs:
                        key = (d["sku"], d["channel"])
                        if d["position"] < last.get(key, 0):
                            bad.append(f"{key}: position {last[key]} -> {d['position']}")
                        last[key] = d["position"]
                        answers.append(
                            (d["sku"], d["channel"], d["available"], d["status"], d["position"])
                        )

    def writer() -> None:
        rnd = random.Random(1)
        held: list[str] = []
        with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
            while not stop.is_set():
                sku = rnd.choice(SKUS)
                kind = rnd.random()
                if kind < 0.4:
                    lines = [{"sku": sku, "quantity": rnd.randint(1, 5)}]
                    r = c.post(
                        "/v1/receipts",
                        json={"location": "WH1", "lines": lines},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                elif kind < 0.8 or not held:
                    r = c.post(
                        "/v1/reservations",
                        json={
                            "channel": "web",
                            "lines": [{"sku": sku, "quantity": rnd.randint(1, 3)}],
                            "ttl_seconds": 3600,
                        },
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code == 201:
                        held.append(r.json()["reservation_id"])
                else:
                    r = c.post(
                        f"/v1/reservations/{held.pop(0)}/release",
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                if r.status_code not in (200, 201):
                    bad.append(f"write {r.request.url}: {r.status_code} {r.text}")
                with lock:
                    counts["writes"] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    served_before_flush = 0
    try:
        for _ in range(2):
            time.sleep(1.5)
            served_before_flush = counts["ok"]
            stack.redis.flushdb()  # FLUSHALL, for this test's own database
            time.sleep(1.5)
            assert counts["ok"] > served_before_flush, "no reads were served after the flush"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not bad, bad[:10]
    assert counts["writes"] > 20 and counts["ok"] > 50, counts
    assert stack.projector is not None and stack.projector.poll() is None
    wait_complete(stack)

    now = datetime.now(UTC)
    with stack.ledger() as ledger:
        truth = Truth(ledger)
        wrong = []
        for sku, channel, available, status, position in answers:
            expected = truth.figure(sku, channel, position, now)
            if (available, status) != expected:
                wrong.append((sku, channel, position, (available, status), expected))
            if available == 0:
                wrong.append((sku, channel, position, "0 for a stocked SKU"))
        assert not wrong, (len(wrong), len(answers), wrong[:10])
        assert_matches_domain(stack.redis, PREFIX, ledger, SKUS, now)


def test_a_build_interrupted_by_a_flush_is_not_marked_complete() -> None:
    """Story: Redis is flushed again while the projector is rebuilding the model.

    Invariant: the build that lost its documents is never marked complete (readers would
    take its missing documents for unknown SKUs); the projector builds again."""
    with prefixed(0, "build") as (r, prefix):
        store = RedisStore(r, prefix)
        store.begin_build("b1")
        assert store.build() is None
        delete_prefix(r, prefix)  # what a flush does to it
        assert not store.complete_build("b1")
        assert store.build() is None
        store.begin_build("b2")
        assert store.complete_build("b2") and store.build() == "b2"


@contextmanager
def _catalogue_ledger(
    name: str, *commands: c.Command
) -> Iterator[tuple[Any, str, dict[str, str], str]]:
    """A migrated fresh ledger with the test catalogue and `commands` decided, and a Redis
    prefix of its own: (redis client, prefix, the service's environment, database URL)."""
    with fresh_database() as url, prefixed(0, name) as (r, prefix):
        env = service_env(url, ATP_REDIS_URL=redis_url(0), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        atp("migrate", env=env)
        backend = Backend(url, Path("/nonexistent"), Clock())
        try:
            service = backend.service()
            define_catalogue(service)
            for command in commands:
                run(service, command)
        finally:
            backend.close()
        yield r, prefix, env, url


def test_project_once_on_an_empty_redis_leaves_a_complete_model() -> None:
    """Story: an operator brings a new Redis up and fills it with `atp project --once`
    before starting the API.

    Invariant: the model it leaves is marked complete (else every read of an unknown SKU
    would answer 503 forever), and equals the ledger."""
    receipt = c.ReceiveStock(location="WH1", lines=(c.Line("O1", 4),))
    with _catalogue_ledger("once", receipt) as (r, prefix, env, url):
        out = atp("project", "--once", env=env).stdout
        assert "projected" in out, out
        assert r.hget(f"{prefix}:meta", "build") is not None
        with Ledger(env=ledger_env(url, "/nonexistent", create_table=False)) as ledger:
            assert int(r.hget(f"{prefix}:meta", "position") or 0) == ledger.ping()
            assert_matches_domain(r, prefix, ledger, ["O1"], datetime.now(UTC))
        # Once complete, a second run resumes (no rebuild) and changes nothing.
        before = r.hget(f"{prefix}:meta", "build")
        assert "projected 0 event(s)" in atp("project", "--once", env=env).stdout
        assert r.hget(f"{prefix}:meta", "build") == before


def test_a_model_of_the_previous_layout_is_rebuilt_not_resumed() -> None:
    """Story: a retailer upgrades atp during a sale. Redis holds the model the previous
    release wrote: every SKU's live holds inside its state, no `layout` in the meta.

    Invariant: the new projector does not resume from it (its per-hold changes would lose
    the holds kept inside the old states, and the planner would see fewer holds than the
    ledger has); it rebuilds, and the model equals the ledger, every live hold included."""
    receipt = c.ReceiveStock(location="WH1", lines=(c.Line("U1", 9),))
    holds = [c.ReserveStock(f"r{i}", "web", (c.Line("U1", 1),), 3600) for i in range(3)]
    with _catalogue_ledger("layout", receipt, *holds) as (r, prefix, env, url):
        atp("project", "--once", env=env)
        assert r.hlen(f"{prefix}:{{U1}}:holds") == 3
        # What the previous release left: holds inside the state, no holds hash, no layout.
        with Ledger(env=ledger_env(url, "/nonexistent", create_table=False)) as ledger:
            item, _ = ledger.load(("item", "U1"))
            old = msgspec.json.Encoder(enc_hook=state_enc_hook).encode(item)
            r.set(f"{prefix}:{{U1}}:state", old)
            r.delete(f"{prefix}:{{U1}}:holds")
            r.hdel(f"{prefix}:meta", "layout")
            assert RedisStore(r, prefix).build() is None  # not a model this release resumes
            atp("project", "--once", env=env)
            assert r.hget(f"{prefix}:meta", "layout") == b"2"
            assert r.hlen(f"{prefix}:{{U1}}:holds") == 3
            assert_matches_domain(r, prefix, ledger, ["U1"], datetime.now(UTC))
