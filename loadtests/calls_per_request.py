"""Python function calls per request on the event-loop thread of atp's ASGI app, in process.

A count that does not move with the neighbours' load, unlike CPU time on a shared machine:
the app (no uvicorn, no socket) runs embedded on a fresh SQLite ledger in a temporary
directory, and cProfile counts the calls the event-loop thread makes for

  - `GET /v1/availability/web/{sku}` (the read path; the in-process read model), and
  - `POST /v1/reservations` of 1 unit with a fresh Idempotency-Key (the writer thread's
    work is not counted: cProfile follows only the thread it is enabled on).

Run it from the tree whose code it should measure:

    python -m loadtests.calls_per_request [--reads 1000] [--reservations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

ADMIN = "calls-per-request-admin-token"
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Asgi, scope: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    """One request through the app; (status, body)."""
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _measure(app: Asgi, reads: int, reservations: int) -> dict[str, float]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def life_send(message: dict[str, Any]) -> None:
        started.append(message)
        answered.set()

    await queue.put({"type": "lifespan.startup"})
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    life = asyncio.create_task(app(lifespan, queue.get, life_send))
    await answered.wait()
    if started[0]["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started[0]}")
    auth = [(b"authorization", f"Bearer {ADMIN}".encode())]
    writes = [*auth, (b"content-type", b"application/json")]

    async def write(method: str, path: str, body: object, key: str | None = None) -> int:
        headers = writes + ([(b"idempotency-key", key.encode())] if key else [])
        status, _ = await _call(app, _scope(method, path, headers), json.dumps(body).encode())
        return status

    setup = [
        await write("PUT", "/v1/locations/WH1", {"name": "warehouse", "kind": "warehouse"}),
        await write("PUT", "/v1/channels/web", {"locations": ["WH1"]}),
        await write(
            "POST",
            "/v1/receipts",
            {"location": "WH1", "lines": [{"sku": "S1", "quantity": 10**6}]},
            "receipt-1",
        ),
    ]
    if any(status >= 300 for status in setup):
        raise RuntimeError(f"setup answered {setup}")
    read = _scope("GET", "/v1/availability/web/S1", auth)
    hold = {"channel": "web", "lines": [{"sku": "S1", "quantity": 1}], "ttl_seconds": 900}
    for n in range(100):  # warm caches and the read model before counting
        assert (await _call(app, read))[0] == 200
        assert await write("POST", "/v1/reservations", hold, f"warm-{n}") == 201
    counts = {}
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(reads):
        await _call(app, read)
    profile.disable()
    counts["GET /v1/availability/{channel}/{sku}"] = pstats.Stats(profile).total_calls / reads
    profile = cProfile.Profile()
    profile.enable()
    for n in range(reservations):
        await write("POST", "/v1/reservations", hold, f"hold-{n}")
    profile.disable()
    counts["POST /v1/reservations"] = pstats.Stats(profile).total_calls / reservations
    await queue.put({"type": "lifespan.shutdown"})
    await life
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.calls_per_request",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--reads", type=int, default=1000, help="reads counted (1000)")
    p.add_argument("--reservations", type=int, default=300, help="reservations counted (300)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
        env.update(
            ATP_DATA_DIR=data,
            ATP_ADMIN_TOKEN=ADMIN,
            ATP_SECRET_KEY="c" * 64,
            ATP_LOG_LEVEL="warning",
            ATP_SWEEP_INTERVAL="0",
        )
        subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, check=True)
        os.environ.clear()
        os.environ.update(env)
        from api.http.app import asgi_factory

        counts = asyncio.run(_measure(asgi_factory(), args.reads, args.reservations))
    for route, calls in counts.items():
        print(f"{route:<40} {calls:8.1f} Python function calls per request (event-loop thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
