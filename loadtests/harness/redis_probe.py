"""Redis for a benchmark: a free database number, cleanup by key prefix, Redis's own view
of HGET (LATENCY HISTOGRAM, INFO commandstats), and raw HGET loads from Python."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from loadtests.harness.catalogue import CHANNEL
from loadtests.harness.results import Load, pct


def pick_redis_db(base_url: str, wanted: int | None) -> int:
    """The requested database number, or the highest empty one (leaving room for the
    projector's rebuild database at +1); refuses a non-empty database."""
    client = redis.Redis.from_url(base_url)
    try:
        count = int(client.config_get("databases").get("databases", 16))
        candidates = [wanted] if wanted is not None else list(range(count - 2, 0, -1))
        for db in candidates:
            if not redis.Redis.from_url(base_url, db=db).dbsize():
                return db
    finally:
        client.close()
    raise SystemExit(f"no empty Redis database among {candidates}; pass --redis-db")


def redis_cleanup(url: str, prefix: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        ours = list(client.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(ours), 1000):
            client.delete(*ours[i : i + 1000])
        left = client.dbsize()
        if left == 0:
            client.flushdb()
            return f"deleted {len(ours)} key(s); database empty and flushed"
        return f"deleted {len(ours)} key(s); {left} other key(s) left alone"
    finally:
        client.close()


@dataclass
class RedisView:
    calls: int
    usec: int
    histogram: dict[int, int]


def redis_view(client: redis.Redis) -> RedisView:
    stats = client.info("commandstats").get("cmdstat_hget", {})
    raw: Any = client.execute_command("LATENCY", "HISTOGRAM", "hget")
    entry = raw.get(b"hget") or raw.get("hget") or {}
    hist = entry.get(b"histogram_usec") or entry.get("histogram_usec") or {}
    return RedisView(
        int(stats.get("calls", 0)),
        int(stats.get("usec", 0)),
        {int(k): int(v) for k, v in hist.items()},
    )


def describe_redis(before: RedisView, after: RedisView) -> str:
    """HGETs executed, mean and p99 (a power-of-2 bucket bound) as Redis measured them."""
    calls = after.calls - before.calls
    if calls <= 0:
        return "-"
    mean = (after.usec - before.usec) / calls
    p50 = p99 = None
    for bound in sorted(after.histogram):
        done = after.histogram[bound] - before.histogram.get(bound, 0)
        if p50 is None and done >= 0.5 * calls:
            p50 = bound
        if done >= 0.99 * calls:
            p99 = bound
            break
    return f"{calls} calls, mean {mean:.2f} us, p50<={p50} us, p99<={p99} us"


def redis_cli_latency(url: str) -> str:
    """`redis-cli --latency --raw`: PING round trips for about a second (min max avg n)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return "redis-cli not found"
    parts = urlsplit(url)
    try:
        out = subprocess.run(
            [
                cli,
                "-h",
                parts.hostname or "127.0.0.1",
                "-p",
                str(parts.port or 6379),
                "--latency",
                "--raw",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"redis-cli failed: {exc}"
    if len(out) != 4:
        return "redis-cli: unexpected output"
    return f"PING min {out[0]} ms, max {out[1]} ms, avg {out[2]} ms over {out[3]} samples"


def raw_sync(
    url: str, keys: list[str], groups: list[list[str]], duration: float, max_ops: int
) -> tuple[Load, Load]:
    """(a) with redis-py (hiredis), one connection: single HGETs, then 100-HGET pipelines."""
    client = redis.Redis.from_url(url)
    client.ping()
    admin = redis.Redis.from_url(url)
    loads = []
    try:
        for bulk in (False, True):
            load = Load("(a) raw redis-py" + (" bulk" if bulk else ""))
            latencies: list[float] = []
            before = redis_view(admin)
            started = time.perf_counter()
            deadline = started + duration
            for n in range(max_ops):
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                if bulk:
                    pipe = client.pipeline(transaction=False)
                    for key in groups[n % len(groups)]:
                        pipe.hget(key, CHANNEL)
                    pipe.execute()
                else:
                    client.hget(keys[n % len(keys)], CHANNEL)
                latencies.append(time.perf_counter() - t0)
            load.seconds = time.perf_counter() - started
            load.server_hget = describe_redis(before, redis_view(admin))
            load.requests = len(latencies)
            load.p50_ms, load.p99_ms = pct(latencies, 50) * 1e3, pct(latencies, 99) * 1e3
            loads.append(load)
    finally:
        client.close()
        admin.close()
    return loads[0], loads[1]


def raw_async(
    url: str, keys: list[str], groups: list[list[str]], duration: float, max_ops: int
) -> tuple[Load, Load]:
    """(a) with redis.asyncio on uvloop, one connection, as both servers use it."""
    import redis.asyncio as aioredis

    async def run(bulk: bool) -> Load:
        client = aioredis.Redis.from_url(url)
        try:
            await client.ping()
            load = Load("(a) raw redis.asyncio" + (" bulk" if bulk else ""))
            latencies: list[float] = []
            started = time.perf_counter()
            deadline = started + duration
            for n in range(max_ops):
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                if bulk:
                    pipe = client.pipeline(transaction=False)
                    for key in groups[n % len(groups)]:
                        pipe.hget(key, CHANNEL)
                    await pipe.execute()
                else:
                    await client.hget(keys[n % len(keys)], CHANNEL)
                latencies.append(time.perf_counter() - t0)
            load.seconds = time.perf_counter() - started
            load.requests = len(latencies)
            load.p50_ms, load.p99_ms = pct(latencies, 50) * 1e3, pct(latencies, 99) * 1e3
            return load
        finally:
            await client.aclose()

    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(run(False)), runner(run(True))
