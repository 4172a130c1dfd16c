"""A crash of the API process at any moment leaves the ledger consistent and loses nothing
it acknowledged; retrying with the same Idempotency-Key never applies a request twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from adapters.ledger import Ledger, ledger_env
from atp.world import fold
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, running_service, service_env

pytestmark = pytest.mark.integration
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _seed(url: str) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        client.put(
            "/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"}
        ).raise_for_status()
        client.put("/v1/channels/web", json={"locations": ["WH1"]}).raise_for_status()
        lines = [{"sku": f"S{i}", "quantity": 1000} for i in range(5)]
        client.post(
            "/v1/receipts",
            json={"location": "WH1", "lines": lines},
            headers={"Idempotency-Key": "seed-receipt"},
        ).raise_for_status()


def _reserve(client: httpx.Client, key: str, sku: str) -> httpx.Response:
    body = {"channel": "web", "lines": [{"sku": sku, "quantity": 1}], "ttl_seconds": 3600}
    return client.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})


def test_sigkill_during_writes_loses_nothing_acknowledged(database: str) -> None:
    env = service_env(database)
    acknowledged: dict[str, str] = {}
    attempted: list[tuple[str, str]] = []
    stop = threading.Event()

    with running_service(env, workers=2) as server:
        _seed(server.url)

        def client_loop(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=HEADERS, timeout=5) as client:
                i = 0
                while not stop.is_set():
                    key, sku = f"k{n}-{i}", f"S{i % 5}"
                    attempted.append((key, sku))
                    i += 1
                    try:
                        response = _reserve(client, key, sku)
                    except httpx.HTTPError:
                        continue
                    if response.status_code == 201:
                        acknowledged[key] = response.json()["reservation_id"]

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(server.process.pid, signal.SIGKILL)  # mid-traffic, no shutdown
        server.process.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(acknowledged) >= 150

    # The ledger is consistent: every item stream replays to counters that match its holds.
    ledger = Ledger(env=ledger_env(database, "/nonexistent", create_table=False))
    total_held = 0
    for i in range(5):
        item, _ = ledger.load(("item", f"S{i}"))
        assert item == fold(("item", f"S{i}"), [e.event for e in ledger.records(("item", f"S{i}"))])
        held = sum(h.quantity for hold in item.holds.values() for h in hold.holds)
        assert item.at("WH1").held == held
        assert item.at("WH1").on_hand == 1000
        total_held += held
    # Nothing acknowledged was lost.
    for key, reservation_id in acknowledged.items():
        state, _ = ledger.load(("reservation", reservation_id))
        assert state is not None and state.status == "held", key
    ledger.close()

    # After a restart, retrying every attempted request (same key) never holds twice.
    with running_service(env, workers=2) as server, server.client() as client:
        outcomes: dict[str, str] = {}
        for key, sku in attempted:
            response = _reserve(client, key, sku)
            assert response.status_code == 201, response.text
            outcomes[key] = response.json()["reservation_id"]
            if key in acknowledged:
                assert response.headers.get("Idempotent-Replayed") == "true"
                assert outcomes[key] == acknowledged[key]
        held_after = sum(
            sum(loc["held"] for loc in client.get(f"/v1/items/S{i}").json()["locations"])
            for i in range(5)
        )
    assert held_after == len(set(outcomes.values())) == len(attempted)
    assert total_held <= held_after


def test_the_writer_worker_killed_mid_sale_loses_nothing_and_oversells_nothing(
    database: str,
) -> None:
    """Story: during a flash sale the worker that decides every write (api.http.forwarding)
    is killed (the OOM killer, a bad deploy). Tills keep posting and retry what got no
    answer with the same Idempotency-Key.

    Invariant: every acknowledged hold is in the ledger, every key holds at most once, the
    holds never exceed the stock, the surviving worker decides writes itself until uvicorn's
    supervisor has started a new worker, and the new worker becomes the one writer."""
    from tests.support.concurrency import writer_counters

    env = service_env(database)
    stock = 150
    acknowledged: dict[str, str] = {}
    refused: set[str] = set()
    stop = threading.Event()
    with running_service(env, workers=2) as server:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as client:
            client.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"})
            client.put("/v1/channels/web", json={"locations": ["WH1"]}).raise_for_status()
            client.post(
                "/v1/receipts",
                json={"location": "WH1", "lines": [{"sku": "HOT", "quantity": stock}]},
                headers={"Idempotency-Key": "seed"},
            ).raise_for_status()

        def till(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as client:
                i = 0
                while not stop.is_set():
                    key = f"till{n}-{i}"
                    i += 1
                    while not stop.is_set():  # the same key until an answer comes
                        try:
                            response = _reserve(client, key, "HOT")
                        except httpx.HTTPError:
                            time.sleep(0.05)
                            continue
                        if response.status_code == 201:
                            acknowledged[key] = response.json()["reservation_id"]
                        elif response.status_code == 409:
                            refused.add(key)
                        else:
                            assert response.status_code == 503, response.text
                            time.sleep(0.05)
                            continue
                        break

        tills = [threading.Thread(target=till, args=(n,)) for n in range(6)]
        for t in tills:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.2)  # the workers sample their writers' counters every second
        before = writer_counters(server)
        (writer,) = [w["pid"] for w in before if w["atp_writer_jobs_total"]]
        os.kill(writer, signal.SIGKILL)
        time.sleep(4)
        stop.set()
        for t in tills:
            t.join()
        # uvicorn starts a new worker (on a loaded machine that can take several seconds);
        # once it holds the writer's lock, the next writes are its.
        deadline = time.monotonic() + 60
        while _writer_worker(server.process.pid) in (None, writer):
            assert time.monotonic() < deadline, "no new writer"
            time.sleep(0.1)
        time.sleep(1)  # the new writer listens; the survivor's event loop saw the EOFs
        with server.client() as client:
            client.post(
                "/v1/receipts",
                json={"location": "WH1", "lines": [{"sku": "COLD", "quantity": 5}]},
            ).raise_for_status()
            # Workers publish their counters about once a second: on a loaded machine that
            # can take longer, so wait for the new worker's count (up to 15 s).
            waited = time.monotonic() + 15
            while True:
                time.sleep(1.2)
                new = {
                    w["pid"]: w["atp_writer_jobs_total"]
                    for w in writer_counters(server)
                    if w["pid"] not in {b["pid"] for b in before}
                }
                if (len(new) == 1 and next(iter(new.values())) > 0) or time.monotonic() > waited:
                    break
            assert len(new) == 1 and next(iter(new.values())) > 0, (before, new)
            held = sum(loc["held"] for loc in client.get("/v1/items/HOT").json()["locations"])
    assert len(acknowledged) >= 40 and len(acknowledged) + len(refused) > 40
    assert held == len(acknowledged) <= stock  # no oversell, no hold lost or doubled
    ledger = Ledger(env=ledger_env(database, "/nonexistent", create_table=False))
    item, _ = ledger.load(("item", "HOT"))
    assert item == fold(("item", "HOT"), [e.event for e in ledger.records(("item", "HOT"))])
    assert item.at("WH1").held == len(acknowledged)
    for key, reservation_id in acknowledged.items():
        state, _ = ledger.load(("reservation", reservation_id))
        assert state is not None and state.status == "held", key
    ledger.close()


def _writer_worker(server_pid: int) -> int | None:
    """The worker of `atp serve` (pid `server_pid`) holding the writer's lock file open."""
    try:
        with open(f"/proc/{server_pid}/task/{server_pid}/children") as children:
            workers = [int(pid) for pid in children.read().split()]
    except OSError:
        return None
    for pid in workers:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("writer.sock.lock"):
                    return pid
            except OSError:
                continue
    return None


def test_writes_after_the_writer_restarted_reach_the_new_writer(database: str) -> None:
    """Story: the writer worker was killed and uvicorn started a new one, which took the
    writer's lock. The surviving worker's pooled connections to the dead writer are not
    used: the next writes it forwards (a POST without Idempotency-Key) reach the new writer
    and answer as usual, instead of a 503 for a request no writer ever received."""
    from collections import Counter

    env = service_env(database)
    with running_service(env, workers=2) as server:

        def burst(name: str) -> Counter[int]:
            answers: list[int] = []

            def one(i: int) -> None:
                # A connection each: both workers get some; the forwarder pools its links.
                with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as c:
                    body = {"name": f"{name}-{i}", "scopes": ["availability:read"]}
                    answers.append(c.post("/v1/tokens", json=body).status_code)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return Counter(answers)

        assert burst("before") == {201: 30}
        writer = _writer_worker(server.process.pid)
        assert writer is not None
        os.kill(writer, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _writer_worker(server.process.pid) in (None, writer):
            assert time.monotonic() < deadline, "no new writer"
            time.sleep(0.1)
        time.sleep(1)  # the new writer listens; the survivor's event loop saw the EOFs
        assert burst("after") == {201: 30}
