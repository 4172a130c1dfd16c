"""The services under load, started as subprocesses (atp, the projector, the bare baseline
app), and the catalogue seeded through the API."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from loadtests.harness.catalogue import CHANNELS, LOCATIONS, RECEIPT_LINES
from tests.support.server import ADMIN_TOKEN, free_port, running_service, stop


@contextmanager
def projector(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`atp project` (it takes the lease and follows the ledger until stopped)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project"], env=env, start_new_session=True
    )
    try:
        yield process
    finally:
        stop(process)


@dataclass
class Served:
    url: str
    pid: int


@contextmanager
def served(
    module: str,
    args: list[str],
    env: dict[str, str],
    probe: str,
    log: Path | None = None,
) -> Iterator[Served]:
    """`python -m <module> --port <free port> <args>` in its own session, ready once `probe`
    answers 200 (60 s at most; RuntimeError if it exits first, with the tail of `log` when
    its output goes there); stopped, with its whole process group, on exit."""
    port = free_port()
    with ExitStack() as stack:
        output = None if log is None else stack.enter_context(log.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port), *args],
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=None if log is None else subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    tail = "" if log is None else f": {log.read_text()[-2000:]}"
                    raise RuntimeError(f"{module} exited with {process.returncode}{tail}")
                try:
                    if httpx.get(url + probe, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{module} did not start")
                time.sleep(0.1)
            yield Served(url, process.pid)
        finally:
            stop(process)


@contextmanager
def bare_app(env: dict[str, str], workers: int, probe: str) -> Iterator[Served]:
    """The bare Litestar app (`loadtests.bare_app`), the baseline of the read benchmark."""
    with served("loadtests.bare_app", ["--workers", str(workers)], env, probe) as app:
        yield app


@contextmanager
def atp_server(env: dict[str, str], workers: int) -> Iterator[Served]:
    with running_service(env, workers=workers) as server:
        yield Served(server.url, server.process.pid)


def seed(url: str, skus: list[str]) -> str:
    """Locations, channels and stock through the API; returns a read-scoped token."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as client:

        def ok(r: httpx.Response) -> httpx.Response:
            if r.status_code not in (200, 201):
                raise RuntimeError(f"seeding failed: {r.status_code} {r.text}")
            return r

        for code in LOCATIONS:
            kind = "store" if "ST" in code else "warehouse"
            ok(client.put(f"/v1/locations/{code}", json={"name": code, "kind": kind}))
        for code, body in CHANNELS.items():
            ok(client.put(f"/v1/channels/{code}", json=body))
        for location in LOCATIONS:
            for i in range(0, len(skus), RECEIPT_LINES):
                lines = [
                    {"sku": sku, "quantity": 1 + zlib.crc32(f"{sku}@{location}".encode()) % 200}
                    for sku in skus[i : i + RECEIPT_LINES]
                ]
                body = {"location": location, "lines": lines, "reference": f"seed-{i}"}
                key = {"Idempotency-Key": uuid.uuid4().hex}
                ok(client.post("/v1/receipts", json=body, headers=key))
        reader = ok(
            client.post(
                "/v1/tokens", json={"name": "bench-reader", "scopes": ["availability:read"]}
            )
        )
        token: str = reader.json()["token"]
        return token


def wait_caught_up(redis_url: str, prefix: str, head: int, timeout: float = 120) -> float:
    """Wait until the read model's position reaches `head`; returns the seconds it took."""
    client = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    try:
        while int(client.hget(f"{prefix}:meta", "position") or 0) < head:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the projector did not reach position {head}")
            time.sleep(0.05)
    finally:
        client.close()
    return time.monotonic() - started


def ledger_head(database_url: str) -> int:
    from adapters.ledger import Ledger, ledger_env

    ledger = Ledger(env=ledger_env(database_url, "./.atp", False))
    try:
        return ledger.head()
    finally:
        ledger.close()
