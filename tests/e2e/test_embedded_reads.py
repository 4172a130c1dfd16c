"""Read-your-writes in the embedded mode (SQLite ledger, in-process read model, one worker as
`make run` starts it): a read sent after a write's answer shows the write, with no
`min_position` and no sleep, at every step of any sequence and under concurrent checkouts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e

CHANNEL = "rw"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("embedded")
    with running_service(service_env(None, str(Path(data)))) as server:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            http.put("/v1/locations/WH1", json={"name": "WH1", "kind": "warehouse"})
            http.put(f"/v1/channels/{CHANNEL}", json={"locations": ["WH1"]}).raise_for_status()
        yield server


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


OPS = st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 5)),
    st.tuples(st.just("reserve"), st.integers(1, 5)),
    st.tuples(st.just("release"), st.integers(0, 10)),
    st.tuples(st.just("commit"), st.integers(0, 10)),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(OPS, min_size=1, max_size=10))
def test_every_read_right_after_a_write_shows_it(
    embedded: Server, ops: list[tuple[str, int]]
) -> None:
    """A store clerk receives, the web reserves, releases and commits, and after each answer
    the storefront reads at once. Invariant: each read equals on_hand minus the units held
    or allocated so far (the model kept here); a reservation beyond it is refused (409),
    never oversold."""
    sku = f"RW-{uuid.uuid4().hex[:10]}"
    on_hand = 0
    open_holds: list[tuple[str, int]] = []
    committed = 0
    with httpx.Client(base_url=embedded.url, headers=AUTH, timeout=30) as http:
        for op, n in ops:
            if op == "receive":
                body = {"location": "WH1", "lines": [{"sku": sku, "quantity": n}]}
                r = http.post("/v1/receipts", json=body, headers=key())
                assert r.status_code == 201, r.text
                on_hand += n
            elif op == "reserve":
                body = {"channel": CHANNEL, "lines": [{"sku": sku, "quantity": n}]}
                r = http.post("/v1/reservations", json=body, headers=key())
                available = on_hand - committed - sum(q for _, q in open_holds)
                if n <= available:
                    assert r.status_code == 201, r.text
                    open_holds.append((r.json()["reservation_id"], n))
                else:
                    assert r.status_code == 409, r.text
                    continue
            elif open_holds:
                rid, q = open_holds.pop(n % len(open_holds))
                if op == "release":
                    r = http.post(f"/v1/reservations/{rid}/release", headers=key())
                    assert r.status_code == 200, r.text
                else:
                    order = {"order_id": f"o-{uuid.uuid4().hex[:8]}"}
                    r = http.post(f"/v1/reservations/{rid}/commit", json=order, headers=key())
                    assert r.status_code == 201, r.text
                    committed += q
            else:
                continue
            read = http.get(f"/v1/availability/{CHANNEL}/{sku}").json()
            expected = on_hand - committed - sum(q for _, q in open_holds)
            assert (read["available"], op) == (expected, op)


def test_concurrent_checkouts_each_see_their_own_hold_and_none_oversells(
    embedded: Server,
) -> None:
    """A flash sale on the embedded shop: 24 shoppers reserve 1 of 10 units at once, each
    reading availability the moment its answer arrives. Invariant: exactly 10 holds, 14
    refusals; every shopper's read already excludes its own hold and those answered before
    it (available <= 9); afterwards 0 available and 10 held at WH1."""
    sku = f"RW-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=embedded.url, headers=AUTH, timeout=30) as http:
        body = {"location": "WH1", "lines": [{"sku": sku, "quantity": 10}]}
        http.post("/v1/receipts", json=body, headers=key()).raise_for_status()
    results: list[tuple[int, int | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(24)

    def shopper() -> None:
        with httpx.Client(base_url=embedded.url, headers=AUTH, timeout=30) as http:
            start.wait()
            body = {"channel": CHANNEL, "lines": [{"sku": sku, "quantity": 1}]}
            r = http.post("/v1/reservations", json=body, headers=key())
            seen = None
            if r.status_code == 201:
                seen = http.get(f"/v1/availability/{CHANNEL}/{sku}").json()["available"]
            with lock:
                results.append((r.status_code, seen))

    threads = [threading.Thread(target=shopper) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 10 + [409] * 14
    assert all(seen is not None and 0 <= seen <= 9 for status, seen in results if status == 201)
    with httpx.Client(base_url=embedded.url, headers=AUTH, timeout=30) as http:
        item = http.get(f"/v1/items/{sku}").json()
    wh1 = next(loc for loc in item["locations"] if loc["location"] == "WH1")
    assert (wh1["on_hand"], wh1["held"], wh1["sellable"]) == (10, 10, 0)
    assert http_available(embedded, sku) == 0


def http_available(server: Server, sku: str) -> int:
    r = httpx.get(f"{server.url}/v1/availability/{CHANNEL}/{sku}", headers=AUTH, timeout=30)
    available: int = r.json()["available"]
    return available
