"""HTTP load generators: wrk with a Lua script rotating SKUs, or a multi-process Python
client when wrk is missing; both report the same `Load`."""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from loadtests.harness.cpu import cpu_snapshot
from loadtests.harness.redis_probe import describe_redis, redis_view
from loadtests.harness.results import Load, pct
from loadtests.harness.services import Served

WRK_SCRIPT = """
local paths = {%(paths)s}
local token = "%(token)s"
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. token
  reqs = {}
  for k, p in ipairs(paths) do
    reqs[k] = wrk.format("GET", p)
  end
  counter = (id or 0) * 997
end

function request()
  counter = counter + 1
  return reqs[(counter %% #reqs) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"errors": %%d, "status_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(
    url: str, paths: list[str], token: str, duration: float, connections: int, threads: int
) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, errors) from one wrk run."""
    script = WRK_SCRIPT % {
        "paths": ",".join(json.dumps(p) for p in paths),
        "token": token,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                path,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(path)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(line[6:])
    return (
        r["requests"],
        r["duration_us"] / 1e6,
        r["p50_us"] / 1e3,
        r["p99_us"] / 1e3,
        r["errors"] + r["status_errors"],
    )


def _py_client(
    url: str,
    paths: list[str],
    token: str,
    threads: int,
    start_at: float,
    duration: float,
    max_requests: int,
    seed: int,
) -> tuple[list[float], int]:
    """Runs in a client process: closed-loop keep-alive GETs; (latencies, errors)."""
    parts = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}"}

    def run(index: int) -> tuple[list[float], int]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        rng = random.Random(seed * 1000 + index)
        latencies: list[float] = []
        errors = 0
        time.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + duration
        try:
            for _ in range(max_requests // threads):
                if time.time() >= deadline:
                    break
                t0 = time.perf_counter()
                try:
                    conn.request("GET", paths[rng.randrange(len(paths))], headers=headers)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                    continue
                if response.status != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            conn.close()
        return latencies, errors

    with ThreadPoolExecutor(threads) as pool:
        parts_out = list(pool.map(run, range(threads)))
    return [x for p in parts_out for x in p[0]], sum(p[1] for p in parts_out)


def run_python_client(
    pool: ProcessPoolExecutor,
    processes: int,
    url: str,
    paths: list[str],
    token: str,
    duration: float,
    connections: int,
) -> tuple[int, float, float, float, int]:
    threads = max(1, connections // processes)
    start_at = time.time() + 1.0
    futures = [
        pool.submit(_py_client, url, paths, token, threads, start_at, duration, 10_000_000, i)
        for i in range(processes)
    ]
    latencies: list[float] = []
    errors = 0
    for fut in futures:
        lat, err = fut.result(timeout=duration + 120)
        latencies += lat
        errors += err
    return len(latencies), duration, pct(latencies, 50) * 1e3, pct(latencies, 99) * 1e3, errors


@dataclass
class LoadGen:
    kind: str
    duration: float
    warmup: float
    connections: int
    threads: int
    redis_url: str
    pool: ProcessPoolExecutor | None = None

    def run(
        self,
        name: str,
        served: Served,
        paths: list[str],
        token: str,
        projector_pid: int | None,
        warmup: bool = True,
    ) -> Load:
        admin = redis.Redis.from_url(self.redis_url)
        try:
            if warmup and self.warmup > 0:
                self._go(served.url, paths, token, self.warmup)
            before_cpu = cpu_snapshot(served.pid, projector_pid)
            before = redis_view(admin)
            requests, seconds, p50, p99, errors = self._go(served.url, paths, token, self.duration)
            after = redis_view(admin)
            cpu = cpu_snapshot(served.pid, projector_pid) - before_cpu
        finally:
            admin.close()
        return Load(name, requests, seconds, p50, p99, errors, cpu, describe_redis(before, after))

    def _go(
        self, url: str, paths: list[str], token: str, duration: float
    ) -> tuple[int, float, float, float, int]:
        if self.kind == "wrk":
            return run_wrk(url, paths, token, duration, self.connections, self.threads)
        assert self.pool is not None
        return run_python_client(
            self.pool, self.threads, url, paths, token, duration, self.connections
        )
