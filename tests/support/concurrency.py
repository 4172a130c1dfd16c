"""Concurrent clients for the end-to-end concurrency tests: a process pool of HTTP
clients (the `pool` fixture), races, and the figures and histories they check."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.server import ADMIN_TOKEN, Server

PROCESSES = 4


THREADS = 8


Call = tuple[int, str, dict[str, Any] | bytes, str]
"""(index, path, JSON body (or its bytes as sent), Idempotency-Key) of one POST."""


def _warm(_: int) -> int:
    time.sleep(0.3)  # keeps every pool process busy, so all of them get started
    return multiprocessing.current_process().pid or 0


def _burst(url: str, token: str, calls: list[Call], threads: int, start_at: float) -> list[dict]:
    """Runs in a client process: POSTs `calls` from `threads` connections, from `start_at`."""
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(threads)]
    try:
        for client in clients:  # open every connection before the start signal
            client.get("/health").raise_for_status()
        chunks = [calls[i::threads] for i in range(threads)]

        def run(client: httpx.Client, chunk: list[Call]) -> list[dict]:
            out = []
            for index, path, body, key in chunk:
                headers = {"Idempotency-Key": key}
                if isinstance(body, bytes):
                    headers["Content-Type"] = "application/json"
                    r = client.post(path, content=body, headers=headers)
                else:
                    r = client.post(path, json=body, headers=headers)
                try:
                    payload = r.json()
                except ValueError:
                    payload = {"raw": r.text}
                out.append(
                    {
                        "index": index,
                        "status": r.status_code,
                        "replayed": r.headers.get("idempotent-replayed"),
                        "body": payload,
                        "pid": multiprocessing.current_process().pid,
                    }
                )
            return out

        time.sleep(max(0.0, start_at - time.time()))
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(run, clients, chunks))
        return [result for part in parts for result in part]
    finally:
        for client in clients:
            client.close()


def _sustain(
    url: str, token: str, body: dict, threads: int, start_at: float, seconds: float, prefix: str
) -> list[tuple[int, str]]:
    """Runs in a client process: every thread POSTs the reservation `body` (fresh key each
    time) back to back for `seconds`. Returns (status, problem code) per request."""
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(threads)]
    try:
        for client in clients:
            client.get("/health").raise_for_status()

        def run(index: int) -> list[tuple[int, str]]:
            out = []
            n = 0
            while time.time() < start_at + seconds:
                n += 1
                key = {"Idempotency-Key": f"{prefix}-{index}-{n}"}
                r = clients[index].post("/v1/reservations", json=body, headers=key)
                code = r.json().get("code", "") if r.status_code >= 400 else ""
                out.append((r.status_code, code))
            return out

        time.sleep(max(0.0, start_at - time.time()))
        with ThreadPoolExecutor(threads) as pool:
            return [x for part in pool.map(run, range(threads)) for x in part]
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as executor:
        pids = set(executor.map(_warm, range(PROCESSES)))
        assert len(pids) == PROCESSES
        yield executor


def race(
    pool: ProcessPoolExecutor, server: Server, calls: list[Call], threads: int = THREADS
) -> list[dict]:
    """Fire `calls` concurrently from every pool process; results in call order."""
    start_at = time.time() + 0.5
    futures = [
        pool.submit(_burst, server.url, ADMIN_TOKEN, calls[p::PROCESSES], threads, start_at)
        for p in range(PROCESSES)
    ]
    results = [result for future in futures for result in future.result(timeout=120)]
    results.sort(key=lambda r: r["index"])
    assert [r["index"] for r in results] == [c[0] for c in sorted(calls)]
    return results


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def setup_channel(client: httpx.Client, unique: str) -> tuple[str, str]:
    location, channel = f"{unique}-WH", f"{unique}-WEB"
    ok(client.put(f"/v1/locations/{location}", json={"name": "DC", "kind": "warehouse"}))
    ok(client.put(f"/v1/channels/{channel}", json={"locations": [location]}))
    return location, channel


def receive(client: httpx.Client, location: str, stock: dict[str, int]) -> None:
    lines = [{"sku": sku, "quantity": qty} for sku, qty in stock.items()]
    body = {"location": location, "lines": lines, "reference": f"PO-{uuid.uuid4().hex[:8]}"}
    ok(client.post("/v1/receipts", json=body), 201)


def figures(client: httpx.Client, sku: str, location: str) -> dict:
    # Reads come from the read model: ask for one that includes every write made so far
    # (the writes came from other processes, so this client has no ATP-Position of its own).
    head = ok(client.get("/ready"))["checks"]["ledger"]["head"]
    item = ok(client.get(f"/v1/items/{sku}", params={"min_position": head}))
    (loc,) = [f for f in item["locations"] if f["location"] == location]
    return loc


def history_types(client: httpx.Client, sku: str) -> Counter[str]:
    types: Counter[str] = Counter()
    after = 0
    while True:
        page = ok(client.get(f"/v1/items/{sku}/history", params={"after": after, "limit": 1000}))
        types.update(e["type"] for e in page["entries"] if e.get("sku") == sku)
        if page["next_after"] is None:
            return types
        after = page["next_after"]


def held_by_sku(result: dict) -> dict[str, int]:
    """Units a 201 reservation response holds, per SKU (from its holds)."""
    return {
        line["sku"]: sum(h["quantity"] for h in line["holds"]) for line in result["body"]["lines"]
    }


def writer_counters(server: Server) -> list[dict[str, int]]:
    """Each live worker process's writer jobs, from the one scrape that covers them all
    (`atp_worker_writer_jobs{pid=...}`, prometheus-client's multiprocess mode)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [
        {"pid": int(line.split('pid="')[1].split('"')[0]), "atp_writer_jobs_total": int(float(v))}
        for line, v in (row.rsplit(" ", 1) for row in text.splitlines() if " " in row)
        if line.startswith("atp_worker_writer_jobs{")
    ]


def statuses(results: list[dict]) -> Counter[int]:
    return Counter(r["status"] for r in results)


def describe(results: list[dict]) -> str:
    odd = [r for r in results if r["status"] not in (201, 409)]
    return f"statuses {dict(statuses(results))}; unexpected e.g. {odd[:3]}"
