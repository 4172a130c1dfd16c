"""No oversell under real concurrency: many OS processes against two API worker processes.

Each burst is fired from several client processes, each running a pool of threads with their
own HTTP connections, all released at the same instant. The service runs with two uvicorn
workers on PostgreSQL, twice: as deployed, one worker decides every write and the other
forwards its writes to it (api.http.forwarding); and with forwarding off, so two
group-commit writers race on the same SKU streams and only optimistic concurrency keeps the
ledger right (what happens while the writer worker restarts).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from tests.support.concurrency import (
    PROCESSES,
    THREADS,
    Call,
    _sustain,
    describe,
    figures,
    held_by_sku,
    history_types,
    ok,
    pool,
    race,
    receive,
    setup_channel,
    statuses,
    writer_counters,
)
from tests.support.server import ADMIN_TOKEN, Server

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["one-writer", "racing-writers"])
def server(request: pytest.FixtureRequest, server: Server) -> Server:
    """Every test here runs on both: one writer behind two workers, two racing writers."""
    if request.param == "one-writer":
        return server
    racing: Server = request.getfixturevalue("racing_server")
    return racing


def racing(server: Server) -> bool:
    """Whether each worker of `server` decides its own writes (forwarding off)."""
    return server.env.get("ATP_WRITER_SOCKET") == ""


def jobs_by_worker(server: Server) -> dict[int, int]:
    return {w["pid"]: w["atp_writer_jobs_total"] for w in writer_counters(server)}


# --- client processes --------------------------------------------------------------------


# --- setup helpers -----------------------------------------------------------------------


# --- the tests ---------------------------------------------------------------------------


def test_single_sku_checkout_rush_sells_exactly_the_sellable_units(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    sku = f"{unique}-HOT"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        ok(admin.put("/v1/safety-stock", json={"sku": sku, "location": location, "quantity": 3}))
        receive(admin, location, {sku: 53})
        time.sleep(1.2)  # each worker samples its writer's counters every second
        jobs_before = jobs_by_worker(server)
        before = figures(admin, sku, location)
        assert (before["on_hand"], before["safety_stock"], before["sellable"]) == (53, 3, 50)

        calls = [
            (
                i,
                "/v1/reservations",
                {"channel": channel, "lines": [{"sku": sku, "quantity": 1}], "reference": f"c{i}"},
                f"{unique}-r{i}",
            )
            for i in range(200)
        ]
        results = race(pool, server, calls)

        assert statuses(results) == {201: 50, 409: 150}, describe(results)
        won = [r for r in results if r["status"] == 201]
        lost = [r for r in results if r["status"] == 409]
        assert all(r["body"]["code"] == "insufficient-stock" for r in lost)
        assert all(r["body"]["lines"][0]["sku"] == sku for r in lost)
        assert all(r["body"]["lines"][0]["available"] == 0 for r in lost)
        assert all(r["body"]["status"] == "held" for r in won)
        assert len({r["body"]["reservation_id"] for r in won}) == 50
        assert sum(held_by_sku(r)[sku] for r in won) == 50
        assert all(r["replayed"] is None for r in results)

        after = figures(admin, sku, location)
        assert after["held"] == 50
        assert after["sellable"] == 0
        assert after["allocated"] == 0
        free = after["on_hand"] - after["allocated"] - after["held"] - after["damaged"]
        assert free >= after["safety_stock"] == 3
        item = ok(admin.get(f"/v1/items/{sku}"))
        (web,) = [c for c in item["channels"] if c["channel"] == channel]
        assert web["available"] == 0
        assert web["status"] == "out_of_stock"
        # The ledger itself: one hold event per winner, nothing for the losers.
        assert history_types(admin, sku)["StockHeld"] == 50
        for r in won[:5]:
            got = ok(admin.get(f"/v1/reservations/{r['body']['reservation_id']}"))
            assert got["status"] == "held"
            assert got["lines"] == r["body"]["lines"]
        # Racing: both worker processes took writes, so two writers really raced. One
        # writer: one worker decided every reservation of the rush, the other's forwarded.
        deadline = time.monotonic() + 5  # each worker samples its writer every second

        def rush_jobs() -> list[int]:
            after = jobs_by_worker(server)
            return sorted(n - jobs_before.get(pid, 0) for pid, n in after.items())

        def sampled(jobs: list[int]) -> bool:
            if racing(server):
                return len(jobs) == 2 and all(n > 0 for n in jobs)
            return len(jobs) == 2 and jobs[-1] >= 200

        while not sampled(jobs := rush_jobs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sampled(jobs), jobs
        if not racing(server):
            assert jobs[0] < 200, jobs  # the other worker decided none of the rush


def test_multi_line_reservations_over_overlapping_skus_are_all_or_nothing(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    x, y, z = f"{unique}-X", f"{unique}-Y", f"{unique}-Z"
    combos = [(x, y), (y, z), (x, z), (x, y, z)]
    rng = random.Random(7)
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {x: 30, y: 30, z: 30})
        calls = []
        for i in range(160):
            lines = [{"sku": sku, "quantity": rng.randint(1, 2)} for sku in combos[i % 4]]
            rng.shuffle(lines)
            body = {"channel": channel, "lines": lines}
            calls.append((i, "/v1/reservations", body, f"{unique}-m{i}"))
        results = race(pool, server, calls)

        assert set(statuses(results)) <= {201, 409}, describe(results)
        totals = dict.fromkeys((x, y, z), 0)
        for (_, _, body, _), r in zip(sorted(calls), results, strict=True):
            asked = {line["sku"]: line["quantity"] for line in body["lines"]}
            if r["status"] == 201:
                # Every line, in full, from the one location.
                assert held_by_sku(r) == asked
                assert {line["sku"]: line["quantity"] for line in r["body"]["lines"]} == asked
                for sku, qty in asked.items():
                    totals[sku] += qty
            else:
                assert r["body"]["code"] == "insufficient-stock"
                short = r["body"]["lines"]
                assert short, r["body"]
                for line in short:
                    assert line["sku"] in asked
                    assert line["requested"] == asked[line["sku"]]
                    assert line["available"] < line["requested"]
        assert statuses(results)[201] > 0
        assert statuses(results)[409] > 0  # 160 requests ask for ~360 units of 90

        for sku in (x, y, z):
            assert totals[sku] <= 30, totals
            f = figures(admin, sku, location)
            assert f["held"] == totals[sku], (sku, f, totals)
            assert f["sellable"] == 30 - totals[sku]
            assert f["on_hand"] - f["allocated"] - f["held"] >= 0
            assert history_types(admin, sku)["StockHeld"] == sum(
                1
                for (_, _, body, _), r in zip(sorted(calls), results, strict=True)
                if r["status"] == 201 and any(line["sku"] == sku for line in body["lines"])
            )
        # Each SKU is exhausted past the point any request for it could still succeed:
        # with quantities of at most 2, fewer than 2 units of at least one SKU remain.
        assert min(30 - t for t in totals.values()) < 2, totals


def test_orders_racing_reservations_never_oversell(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    sku = f"{unique}-DUO"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 40})
        calls: list[Call] = []
        for i in range(120):
            line = [{"sku": sku, "quantity": 1}]
            if i % 2:
                body = {"order_id": f"{unique}-o{i}", "channel": channel, "lines": line}
                calls.append((i, "/v1/orders", body, f"{unique}-o{i}"))
            else:
                calls.append(
                    (i, "/v1/reservations", {"channel": channel, "lines": line}, f"{unique}-h{i}")
                )
        results = race(pool, server, calls)

        assert set(statuses(results)) <= {201, 409}, describe(results)
        orders = [r for c, r in zip(sorted(calls), results, strict=True) if c[1] == "/v1/orders"]
        holds = [r for c, r in zip(sorted(calls), results, strict=True) if c[1] != "/v1/orders"]
        allocated = sum(
            line["allocated"] for r in orders if r["status"] == 201 for line in r["body"]["lines"]
        )
        held = sum(held_by_sku(r)[sku] for r in holds if r["status"] == 201)
        assert all(r["body"]["code"] == "insufficient-stock" for r in results if r["status"] == 409)
        # Demand (120 x 1) exceeds supply: every unit goes, none twice.
        assert allocated + held == 40, (allocated, held)
        f = figures(admin, sku, location)
        assert (f["allocated"], f["held"], f["sellable"], f["on_hand"]) == (allocated, held, 0, 40)
        types = history_types(admin, sku)
        assert types["StockHeld"] == sum(1 for r in holds if r["status"] == 201)
        placed = [r for r in orders if r["status"] == 201]
        for r in placed[:5]:
            order = ok(admin.get(f"/v1/orders/{r['body']['order_id']}"))
            assert order["status"] == "allocated"


def test_a_connector_resending_orders_under_new_keys_never_allocates_an_order_twice(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """Story: a marketplace connector times out during a flash sale and resends each of
    its 30 orders at once under a new Idempotency-Key (the marketplace's order id is the
    same), racing the first sends, for a SKU with 20 units. The writer assumes an order id
    it has not seen is new (Decider.likely_new) and learns otherwise from the append.

    Invariant: each order id is allocated at most once, whatever the interleaving; the
    stock allocated is one unit per order id accepted, never above the 20 on hand; every
    refusal is a 409 naming an existing order or the lack of stock."""
    sku = f"{unique}-RESEND"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 20})
        calls: list[Call] = []
        for i in range(60):
            order_id = f"{unique}-amz-{i % 30}"
            body = {
                "order_id": order_id,
                "channel": channel,
                "lines": [{"sku": sku, "quantity": 1}],
            }
            calls.append((i, "/v1/orders", body, f"{unique}-send-{i}"))
        results = race(pool, server, calls)

        assert set(statuses(results)) <= {201, 409}, describe(results)
        codes = {r["body"]["code"] for r in results if r["status"] == 409}
        assert codes <= {"already-exists", "insufficient-stock"}, codes
        accepted = Counter(r["body"]["order_id"] for r in results if r["status"] == 201)
        assert all(n == 1 for n in accepted.values()), accepted
        assert len(accepted) == 20  # demand (30 orders) exceeds the 20 units: all go
        f = figures(admin, sku, location)
        assert (f["allocated"], f["sellable"], f["on_hand"]) == (20, 0, 20)
        assert history_types(admin, sku)["StockAllocated"] == 20


def test_one_idempotency_key_sent_twenty_times_at_once_holds_once(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    sku = f"{unique}-IDEM"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 10})
        body = {"channel": channel, "lines": [{"sku": sku, "quantity": 2}], "reference": "cart-1"}
        key = f"{unique}-the-one-key"
        # 20 copies: 4 processes x 5 threads, one request each, all at the same instant.
        results = race(pool, server, [(i, "/v1/reservations", body, key) for i in range(20)], 5)

        assert len({r["status"] for r in results}) == 1, describe(results)
        assert results[0]["status"] == 201, describe(results)
        ids = {r["body"]["reservation_id"] for r in results}
        assert len(ids) == 1, ids
        bodies = {str(r["body"]) for r in results}
        assert len(bodies) == 1
        replayed = [r for r in results if r["replayed"] == "true"]
        assert len(replayed) == 19, [r["replayed"] for r in results]

        f = figures(admin, sku, location)
        assert (f["held"], f["sellable"]) == (2, 8)
        assert history_types(admin, sku)["StockHeld"] == 1
        (reservation_id,) = ids
        assert ok(admin.get(f"/v1/reservations/{reservation_id}"))["status"] == "held"


def _serialisations(body: dict[str, Any], n: int, seed: int) -> list[bytes]:
    """`n` different byte strings of the same JSON object: key order and whitespace vary."""
    rng = random.Random(seed)
    out: list[bytes] = []
    while len(out) < n:
        items = list(body.items())
        rng.shuffle(items)
        text = json.dumps(
            dict(items),
            indent=rng.choice([None, 1, 4]),
            separators=rng.choice([(",", ":"), (", ", ": "), (" ,", " : ")]),
        )
        raw = (" " * rng.randint(0, 3) + text + "\n" * rng.randint(0, 2)).encode()
        if raw not in out:
            out.append(raw)
    return out


def test_one_key_retried_at_once_in_twenty_serialisations_holds_once(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """A checkout retried by a storefront, a proxy and a mobile client at the same moment,
    each re-serialising the JSON its own way (key order, whitespace), under one key.

    Invariant: one hold of 2 units (sellable 10 -> 8, one `StockHeld`), every answer the same
    201 (19 replays); then the same key with a different quantity, 20 times at once, is 422
    `idempotency-key-reused` every time and holds nothing more.
    """
    sku = f"{unique}-CANON"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 10})
        body = {"channel": channel, "lines": [{"sku": sku, "quantity": 2}], "ttl_seconds": 600}
        key = f"{unique}-one-key"
        copies = _serialisations(body, 20, seed=7)
        results = race(
            pool, server, [(i, "/v1/reservations", raw, key) for i, raw in enumerate(copies)], 5
        )

        assert {r["status"] for r in results} == {201}, describe(results)
        assert len({r["body"]["reservation_id"] for r in results}) == 1
        assert len([r for r in results if r["replayed"] == "true"]) == 19
        other = _serialisations({**body, "lines": [{"sku": sku, "quantity": 3}]}, 20, seed=8)
        results = race(
            pool, server, [(i, "/v1/reservations", raw, key) for i, raw in enumerate(other)], 5
        )
        assert {(r["status"], r["body"].get("code")) for r in results} == {
            (422, "idempotency-key-reused")
        }

        f = figures(admin, sku, location)
        assert (f["held"], f["sellable"]) == (2, 8)
        assert history_types(admin, sku)["StockHeld"] == 1


def test_sustained_flash_sale_never_fails_a_checkout(
    server: Server, pool: ProcessPoolExecutor, unique: str
) -> None:
    """Both writers hammer one hot SKU for seconds on end: each valid checkout is held
    (201), none is turned away with a 5xx because the other process kept winning."""
    sku = f"{unique}-FLASH"
    seconds = 8.0
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 100_000})
        body = {"channel": channel, "lines": [{"sku": sku, "quantity": 1}]}
        start_at = time.time() + 0.5
        futures = [
            pool.submit(
                _sustain, server.url, ADMIN_TOKEN, body, THREADS, start_at, seconds, f"{unique}{p}"
            )
            for p in range(PROCESSES)
        ]
        results = [x for future in futures for x in future.result(timeout=120)]
        counts = Counter(results)
        held = counts[(201, "")]
        f = figures(admin, sku, location)
        # Whatever failed left nothing behind; every 201 is one hold in the ledger.
        assert f["held"] == held, (f, dict(counts))
        assert history_types(admin, sku)["StockHeld"] == held
        assert held == len(results), f"{len(results)} checkouts: {dict(counts)}"


__all__ = ["pool"]  # fixtures from tests.support.concurrency
