"""Read path benchmark: availability reads from Redis, and how fresh the read model is.

One run, side by side, on loopback:

  (a) raw Redis from Python: the HGET the endpoint does (`HGET <prefix>:{SKU}:ats
      <channel>`), single and 100 pipelined, over one connection (redis-py with hiredis,
      and redis.asyncio as the servers use it), plus Redis's own view of HGET
      (LATENCY HISTOGRAM, INFO commandstats) and `redis-cli --latency`;
  (b) a bare Litestar app (`loadtests/bare_app.py`) under uvicorn with the same paths, one
      HGET per request, or one pipeline of 100 for the bulk route;
  (c) atp's `GET /v1/availability/{channel}/{sku}` and `GET /v1/availability/{channel}?sku=
      ...x100` served by `atp serve` with ATP_REDIS_URL, with a read-scoped bearer token.

(b) and (c) get the same load generator (wrk with a Lua script rotating SKUs, else a
multi-process Python client), the same worker count, connections and duration, one after
the other, in rounds of alternating order (b c, c b, ...; medians reported): this machine
is shared, and a neighbour's burst should land on both rather than on one. Server CPU per
request is reported too: it moves much less with the neighbours than req/s does. Then, with `atp project` following the ledger, receipts are posted to atp at a
steady rate (~1,000 ledger events/s) and a watcher polls every written SKU's `_position` in
Redis. Joined with the ledger afterwards, each event gives its projection lag: from its
commit (when an independent LISTEN connection got the NOTIFY of its transaction) to the
poll that first saw the SKU at or past the event's position. The same is reported from the
event's timestamp (taken before the transaction: an upper bound) and from the client's
receipt of the write's answer.

Setup: a fresh PostgreSQL database, an empty Redis database number with a run-unique key
prefix, `atp migrate`, a catalogue seeded through the API (1,000 SKUs, 3 locations, 2
channels), `atp project` caught up. Teardown: every process stopped, the database dropped,
the run's Redis keys deleted (the Redis database flushed if nothing else is in it).

    python -m loadtests.bench_reads --duration 10 --workers 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from loadtests.bench_reservations import writer_totals
from tests.support.pg import fresh_database
from tests.support.server import ADMIN_TOKEN, atp, free_port, running_service, service_env

LOCATIONS = ("BR-WH1", "BR-WH2", "BR-ST1")
CHANNELS = {
    "BR-WEB": {"locations": list(LOCATIONS), "buffer": 0, "low_stock_threshold": 5},
    "BR-MKT": {"locations": list(LOCATIONS[:2]), "buffer": 1, "share_percent": 60},
}
CHANNEL = "BR-WEB"
"""The channel every read asks for."""
BULK = 100
RECEIPT_LINES = 100
TARGET_RATIO = 0.8
TARGET_REDIS_P99_MS = 1.0
TARGET_LAG_P99_MS = 50.0


def sku_code(i: int) -> str:
    return f"R-{i:05d}"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


# --- CPU accounting (Linux /proc) ---------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _procs() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds) for every process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        seconds = int(fields[11]) + int(fields[12])
        if int(pid) == os.getpid():  # with its waited-for children (wrk runs)
            seconds += int(fields[13]) + int(fields[14])
        out[int(pid)] = (name, int(fields[1]), seconds / TICK)
    return out


def _tree(procs: dict[int, tuple[str, int, float]], root: int | None) -> set[int]:
    if root is None:
        return set()
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (_, ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


@dataclass
class Cpu:
    """CPU seconds so far: machine busy, the server tree, Redis, PostgreSQL, the projector,
    this benchmark (load generator included)."""

    wall: float = 0.0
    busy: float = 0.0
    steal: float = 0.0
    """Time the hypervisor gave our virtual CPUs to someone else (counted in busy)."""
    server: float = 0.0
    redis: float = 0.0
    postgres: float = 0.0
    projector: float = 0.0
    bench: float = 0.0
    postgres_pids: dict[int, float] = field(default_factory=dict)
    """Per PostgreSQL process (backends come and go; only their growth counts)."""

    _SUMMED = ("wall", "busy", "steal", "server", "redis", "postgres", "projector", "bench")

    def __sub__(self, other: Cpu) -> Cpu:
        out = Cpu(*(getattr(self, f) - getattr(other, f) for f in self._SUMMED))
        if self.postgres_pids:
            out.postgres = sum(
                s - other.postgres_pids.get(pid, 0.0) for pid, s in self.postgres_pids.items()
            )
        return out

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(*(getattr(self, f) + getattr(other, f) for f in self._SUMMED))

    def percent(self, name: str) -> float:
        return 100 * getattr(self, name) / self.wall if self.wall > 0 else math.nan

    @property
    def other(self) -> float:
        parts = self.server + self.redis + self.postgres + self.projector + self.bench
        return self.busy - self.steal - parts


def cpu_snapshot(server_pid: int | None, projector_pid: int | None) -> Cpu:
    cpu = Cpu(wall=time.monotonic())
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return cpu
    cpu.busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK
    cpu.steal = ticks[7] / TICK
    procs = _procs()
    server, projector = _tree(procs, server_pid), _tree(procs, projector_pid)
    bench = _tree(procs, os.getpid()) - server - projector
    cpu.server = sum(procs[p][2] for p in server if p in procs)
    cpu.projector = sum(procs[p][2] for p in projector if p in procs)
    cpu.bench = sum(procs[p][2] for p in bench if p in procs)
    cpu.redis = sum(s for n, _, s in procs.values() if n.startswith("redis-server"))
    cpu.postgres_pids = {p: s for p, (n, _, s) in procs.items() if n == "postgres"}
    cpu.postgres = sum(cpu.postgres_pids.values())
    return cpu


# --- results ------------------------------------------------------------------------------


@dataclass
class Load:
    """One measured load: requests (or Redis calls) answered, wall time, latency."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    errors: int = 0
    """Transport errors and non-2xx answers."""
    cpu: Cpu | None = None
    server_hget: str = ""
    """Redis's own view of the HGETs during the load."""
    rounds: list[Load] = field(default_factory=list)
    """The rounds this load combines (then rate and latencies are their medians)."""

    @property
    def rate(self) -> float:
        if self.rounds:
            return median([r.rate for r in self.rounds])
        return self.requests / self.seconds if self.seconds > 0 else math.nan

    @property
    def server_us(self) -> float:
        """Server CPU per request (all its processes): steadier than req/s on a busy machine."""
        if self.cpu is None or not self.requests:
            return math.nan
        return 1e6 * self.cpu.server / self.requests


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def combine(name: str, rounds: list[Load]) -> Load:
    """Rounds of one load: medians of req/s and latency percentiles, CPU summed."""
    cpu = None
    for r in rounds:
        if r.cpu is not None:
            cpu = r.cpu if cpu is None else cpu + r.cpu
    return Load(
        name,
        requests=sum(r.requests for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        p50_ms=median([r.p50_ms for r in rounds]),
        p99_ms=median([r.p99_ms for r in rounds]),
        errors=sum(r.errors for r in rounds),
        cpu=cpu,
        server_hget=rounds[0].server_hget if rounds else "",
        rounds=rounds,
    )


@dataclass
class LagResult:
    events: int = 0
    requests: int = 0
    failed_requests: int = 0
    seconds: float = 0.0
    unseen: int = 0
    from_event_ms: list[float] = field(default_factory=list)
    from_commit_ms: list[float] = field(default_factory=list)
    writer_batches: int = 0
    writer_jobs: int = 0
    writer_conflicts: int = 0
    transactions: int = 0
    notifies: int = 0
    from_response_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    polls: int = 0
    poll_ms: float = math.nan
    cpu: Cpu | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan


# --- Redis --------------------------------------------------------------------------------


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


# --- processes ----------------------------------------------------------------------------


def _stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def projector(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`atp project` (it takes the lease and follows the ledger until stopped)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project"], env=env, start_new_session=True
    )
    try:
        yield process
    finally:
        _stop(process)


@dataclass
class Served:
    url: str
    pid: int


@contextmanager
def bare_app(env: dict[str, str], workers: int, probe: str) -> Iterator[Served]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests.bare_app",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bare app exited with {process.returncode}")
            try:
                if httpx.get(url + probe, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the bare app did not start")
            time.sleep(0.1)
        yield Served(url, process.pid)
    finally:
        _stop(process)


@contextmanager
def atp_server(env: dict[str, str], workers: int) -> Iterator[Served]:
    with running_service(env, workers=workers) as server:
        yield Served(server.url, server.process.pid)


# --- seeding ------------------------------------------------------------------------------


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


# --- HTTP load: wrk, or a multi-process Python client ---------------------------------------

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


# --- projection lag -----------------------------------------------------------------------

WATCH_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, '_position') or false
end
return out
"""


def _watch(
    redis_url: str, keys: list[str], poll_s: float, max_seconds: float, stop: Any, out: Any
) -> None:
    """Runs in its own process: polls every key's `_position` (one script call) and records
    (wall time of the reply, position) whenever a key's position changes."""
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(WATCH_SCRIPT)
    last: list[int] = [-1] * len(keys)
    changes: list[list[tuple[float, int]]] = [[] for _ in keys]
    polls = 0
    started = time.monotonic()
    next_at = started
    while not stop.is_set() and time.monotonic() - started < max_seconds:
        values = script(keys=keys)
        now = time.time()
        polls += 1
        for i, raw in enumerate(values):
            position = int(raw) if raw else 0
            if position != last[i]:
                last[i] = position
                changes[i].append((now, position))
        next_at += poll_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    client.close()
    out.put((changes, polls, time.monotonic() - started))


def drive_lag(
    url: str,
    tag: str,
    skus: list[str],
    rate: float,
    lines: int,
    duration: float,
    connections: int,
) -> tuple[list[tuple[int, float, float, int, int]], float]:
    """POST receipts of `lines` distinct SKUs at `rate` receipts/s, paced from a schedule
    (a late sender catches up). Returns (k, sent, answered, status, position) per request
    (wall times) and the schedule's start."""
    parts = urlsplit(url)
    total = int(rate * duration)
    start_at = time.time() + 0.5
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}

    def run(index: int) -> list[tuple[int, float, float, int, int]]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        rng = random.Random(index)
        done = []
        hard_stop = start_at + duration + 30
        try:
            for k in range(index, total, connections):
                due = start_at + k / rate
                time.sleep(max(0.0, due - time.time()))
                if time.time() > hard_stop:
                    break
                chosen = rng.sample(skus, lines)
                body = json.dumps(
                    {
                        "location": LOCATIONS[0],
                        "lines": [{"sku": s, "quantity": 1} for s in chosen],
                        "reference": f"{tag}-{k}",
                    }
                ).encode()
                sent = time.time()
                try:
                    conn.request(
                        "POST",
                        "/v1/receipts",
                        body=body,
                        headers={
                            **headers,
                            "X-Correlation-ID": f"{tag}-{k}",
                            "Idempotency-Key": f"{tag}-{k}",
                        },
                    )
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                    done.append((k, sent, time.time(), 0, 0))
                    continue
                position = int(response.getheader("ATP-Position") or 0)
                done.append((k, sent, time.time(), response.status, position))
        finally:
            conn.close()
        return done

    with ThreadPoolExecutor(connections) as pool:
        results = [r for part in pool.map(run, range(connections)) for r in part]
    return results, start_at


def _listen(
    database_url: str, channel: str, max_seconds: float, ready: Any, stop: Any, out: Any
) -> None:
    """Runs in its own process: LISTENs on the ledger's channel (every events transaction
    NOTIFYs it, delivered at commit) and records the wall time each notification arrives."""
    import psycopg
    from psycopg import sql

    times: list[float] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(channel)))
        ready.set()
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < max_seconds:
            for _ in conn.notifies(timeout=0.1):
                times.append(time.time())
    out.put(times)


def projection_lag(
    args: argparse.Namespace,
    served: Served,
    database_url: str,
    redis_url: str,
    prefix: str,
    skus: list[str],
    projector_pid: int,
) -> LagResult:
    from adapters.ledger import Ledger, decode_payload, ledger_env

    tag = f"lag{uuid.uuid4().hex[:6]}"
    keys = [f"{prefix}:{{{s}}}:ats" for s in skus]
    ctx = multiprocessing.get_context("spawn")
    stop, ready, watched_q, listened_q = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    max_seconds = args.lag_duration + 60
    ledger = Ledger(env=ledger_env(database_url, "./.atp", False))
    watcher = ctx.Process(
        target=_watch, args=(redis_url, keys, args.poll_ms / 1000, max_seconds, stop, watched_q)
    )
    listener = ctx.Process(
        target=_listen,
        args=(database_url, ledger.recorder.channel_name, max_seconds, ready, stop, listened_q),  # type: ignore[attr-defined]
    )
    result = LagResult()
    try:
        watcher.start()
        listener.start()
        if not ready.wait(30):
            raise TimeoutError("the NOTIFY listener did not start")
        time.sleep(1.0)  # the watcher's first polls record the starting positions
        head_before = ledger.head()
        writers = SimpleNamespace(url=served.url)
        before = writer_totals(writers, args.lag_workers)  # type: ignore[arg-type]
        cpu_before = cpu_snapshot(served.pid, projector_pid)
        requests, start_at = drive_lag(
            served.url,
            tag,
            skus,
            args.lag_rate / args.lag_lines,
            args.lag_lines,
            args.lag_duration,
            args.lag_connections,
        )
        head_after = ledger.head()
        wait_caught_up(redis_url, prefix, head_after, timeout=30)
        result.cpu = cpu_snapshot(served.pid, projector_pid) - cpu_before
        after = writer_totals(writers, args.lag_workers)  # type: ignore[arg-type]
        result.writer_batches = after.batches - before.batches
        result.writer_jobs = after.jobs - before.jobs
        result.writer_conflicts = after.conflicts - before.conflicts
        time.sleep(0.2)
        stop.set()
        changes, polls, watched = watched_q.get(timeout=60)
        notifies: list[float] = listened_q.get(timeout=60)
        watcher.join(timeout=10)
        listener.join(timeout=10)
    finally:
        stop.set()
        for process in (watcher, listener):
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    result.polls = polls
    result.poll_ms = watched / polls * 1e3 if polls else math.nan
    answered = {k: (sent, got) for k, sent, got, status, _ in requests if status == 201}
    result.requests = len(requests)
    result.failed_requests = len(requests) - len(answered)
    result.write_ms = [(got - sent) * 1e3 for sent, got in answered.values()]
    # Every event of this phase with its position, timestamp and request. A transaction's
    # events share one timestamp (the writer's clock for the batch) and transactions commit
    # in position order (the library locks the table), so the i-th run of equal timestamps
    # is the i-th commit, and the i-th NOTIFY the listener got is its commit time.
    index = {s: i for i, s in enumerate(skus)}
    rows: list[tuple[int, float, str | None, str]] = []
    start = head_before + 1
    for _ in range(100_000):
        batch = ledger.recorder.select_notifications(start, 1000, stop=head_after)
        if not batch:
            break
        for n in batch:
            event, occurred_at, metadata = decode_payload(n.topic, n.state)
            rows.append(
                (
                    n.id,
                    occurred_at.timestamp(),
                    getattr(event, "sku", None),
                    metadata.get("correlation_id", ""),
                )
            )
        start = batch[-1].id + 1
    ledger.close()
    transactions: list[int] = []
    for i, row in enumerate(rows):
        transactions.append(transactions[-1] + (row[1] != rows[i - 1][1]) if transactions else 0)
    result.transactions = (transactions[-1] + 1) if transactions else 0
    result.notifies = len(notifies)
    exact = result.transactions == result.notifies
    for (position, occurred, sku, cid), txn in zip(rows, transactions, strict=True):
        if not cid.startswith(tag + "-") or sku not in index:
            continue
        result.events += 1
        k = int(cid.rsplit("-", 1)[1])
        seen = next((t for t, pos in changes[index[sku]] if pos >= position), None)
        if seen is None:
            result.unseen += 1
            continue
        result.from_event_ms.append((seen - occurred) * 1e3)
        if exact:
            result.from_commit_ms.append((seen - notifies[txn]) * 1e3)
        if k in answered:
            result.from_response_ms.append((seen - answered[k][1]) * 1e3)
    last_answer = max((got for _, got in answered.values()), default=start_at)
    result.seconds = max(1e-9, last_answer - start_at)
    return result


# --- the table ----------------------------------------------------------------------------


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _rate(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, cells in enumerate(rows):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def read_table(pairs: list[tuple[str, Load, Load]]) -> str:
    rows = [
        [
            "path",
            "single/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "bulk/s",
            "p50 ms",
            "p99 ms",
            "CPU us",
            "errors",
        ]
    ]
    for label, single, bulk in pairs:
        rows.append(
            [
                label,
                _rate(single.rate),
                _ms(single.p50_ms),
                _ms(single.p99_ms),
                _rate(single.server_us),
                _rate(bulk.rate),
                _ms(bulk.p50_ms),
                _ms(bulk.p99_ms),
                _rate(bulk.server_us),
                str(single.errors + bulk.errors),
            ]
        )
    return render_table(rows)


def cpu_table(loads: list[Load]) -> str:
    rows = [
        [
            "run (CPU %, 2 cores = 200)",
            "busy",
            "server",
            "redis",
            "pg",
            "loadgen",
            "proj",
            "steal",
            "other",
        ]
    ]
    for load in loads:
        c = load.cpu
        if c is None:
            continue
        rows.append(
            [
                load.name,
                f"{c.percent('busy'):.0f}",
                f"{c.percent('server'):.0f}",
                f"{c.percent('redis'):.0f}",
                f"{c.percent('postgres'):.0f}",
                f"{c.percent('bench'):.0f}",
                f"{c.percent('projector'):.0f}",
                f"{c.percent('steal'):.0f}",
                f"{100 * c.other / c.wall:.0f}",
            ]
        )
    return render_table(rows)


# --- main ---------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_reads",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per HTTP load (10)")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds before round 1 (2)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of (b) and (c) loads, in alternating order; medians reported (3)",
    )
    p.add_argument(
        "--workers", default="1,2", help="uvicorn worker counts for (b) and (c), e.g. 1,2 (1,2)"
    )
    p.add_argument("--connections", type=int, default=16, help="HTTP connections (16)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk if installed (auto), or 2 Python processes",
    )
    p.add_argument("--raw-duration", type=float, default=5.0, help="seconds per (a) load (5)")
    p.add_argument("--skus", type=int, default=1000, help="SKUs in the catalogue (1000)")
    p.add_argument("--lag-rate", type=float, default=1000.0, help="ledger events/s (1000)")
    p.add_argument("--lag-lines", type=int, default=10, help="lines (events) per receipt (10)")
    p.add_argument("--lag-duration", type=float, default=10.0, help="seconds of writes (10)")
    p.add_argument("--lag-skus", type=int, default=200, help="SKUs written and watched (200)")
    p.add_argument("--lag-workers", type=int, default=2, help="atp serve workers for writes (2)")
    p.add_argument("--lag-connections", type=int, default=16, help="writer connections (16)")
    p.add_argument("--poll-ms", type=float, default=1.0, help="watcher poll interval (1)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    p.add_argument("--redis-db", type=int, help="Redis database (default: highest empty one)")
    p.add_argument(
        "--skip-lag", action="store_true", help="skip the projection lag phase (reads only)"
    )
    p.add_argument(
        "--profile-dir",
        help="after the measured loads, profile one extra (b) and (c) single-read load per "
        "worker count with `py-spy record --nonblocking` into this directory (collapsed stacks)",
    )
    p.add_argument("--py-spy", default="py-spy", help="py-spy executable (py-spy)")
    args = p.parse_args(argv)
    args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if not args.worker_counts or any(w < 1 or w > 8 for w in args.worker_counts):
        p.error("--workers takes counts in 1..8")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be in 1..20")
    for name in ("duration", "raw_duration", "lag_duration"):
        if not 0 < getattr(args, name) <= 600:
            p.error(f"--{name.replace('_', '-')} must be in (0, 600]")
    if not 1 <= args.lag_lines <= min(100, args.lag_skus) or args.lag_skus > args.skus:
        p.error("need 1 <= --lag-lines <= min(100, --lag-skus) and --lag-skus <= --skus")
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "python"
    return args


def profile(
    args: argparse.Namespace,
    gen: LoadGen,
    served: Served,
    paths: list[str],
    token: str,
    name: str,
) -> str:
    """py-spy record (collapsed stacks) of the server tree during one extra single load."""
    os.makedirs(args.profile_dir, exist_ok=True)
    out = os.path.join(args.profile_dir, f"{name}.txt")
    duration = max(3, int(args.duration))
    spy = subprocess.Popen(
        [
            args.py_spy,
            "record",
            "--pid",
            str(served.pid),
            "--subprocesses",
            "--threads",
            "--nonblocking",
            "--rate",
            "500",
            "--duration",
            str(duration),
            "--format",
            "raw",
            "-o",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        replace(gen, duration=duration - 1.5, warmup=0).run(name, served, paths, token, None)
    finally:
        try:
            spy.wait(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    skus = [sku_code(i) for i in range(args.skus)]
    rng = random.Random(7)
    shuffled = skus[:]
    rng.shuffle(shuffled)
    groups = [rng.sample(skus, BULK) for _ in range(20)]
    single_paths = [f"/v1/availability/{CHANNEL}/{s}" for s in shuffled]
    bulk_paths = [f"/v1/availability/{CHANNEL}?" + "&".join(f"sku={s}" for s in g) for g in groups]
    db = pick_redis_db(args.redis, args.redis_db)
    redis_url = f"{args.redis.rstrip('/')}/{db}"
    prefix = f"atpbench{os.getpid()}{uuid.uuid4().hex[:4]}"
    print(
        f"atp read benchmark: load generator {args.client} ({args.connections} connections"
        f"{f', {args.wrk_threads} thread(s)' if args.client == 'wrk' else ''}), "
        f"{args.duration:g}s per HTTP load, {args.rounds} round(s), workers "
        f"{args.workers}; Redis db {db} prefix {prefix}",
        flush=True,
    )
    pairs: list[tuple[str, Load, Load]] = []
    ratios: list[tuple[int, float, float]] = []
    cpu_ratios: list[tuple[int, float, float]] = []
    round_ratios: list[tuple[int, list[float], list[float]]] = []
    cpu_loads: list[Load] = []
    notes: list[str] = []
    lag: LagResult | None = None
    errors: list[str] = []
    profiles: list[str] = []
    cleanup = "-"
    try:
        with ExitStack() as stack:
            database_url = stack.enter_context(fresh_database("atp_bench"))
            env = service_env(database_url, ATP_REDIS_URL=redis_url, ATP_REDIS_PREFIX=prefix)
            bare_env = {**env, "BARE_REDIS_URL": redis_url, "BARE_REDIS_PREFIX": prefix}
            atp("migrate", env=env)
            proj = stack.enter_context(projector(env))
            pool = None
            if args.client == "python":
                pool = stack.enter_context(
                    ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
                )
            gen = LoadGen(
                args.client,
                args.duration,
                args.warmup,
                args.connections,
                args.wrk_threads if args.client == "wrk" else 2,
                redis_url,
                pool,
            )
            # 1. seed through the API and let the projector catch up
            t0 = time.monotonic()
            with atp_server(env, 1) as served:
                token = seed(served.url, skus)
            head = ledger_head(database_url)
            took = wait_caught_up(redis_url, prefix, head)
            print(
                f"seeded {len(skus)} SKUs x {len(LOCATIONS)} locations, {len(CHANNELS)} channels"
                f" in {time.monotonic() - t0:.1f}s; read model at position {head} "
                f"({took:.2f}s after the last write)",
                flush=True,
            )
            keys = [f"{prefix}:{{{s}}}:ats" for s in shuffled]
            key_groups = [[f"{prefix}:{{{s}}}:ats" for s in g] for g in groups]
            probe_client = redis.Redis.from_url(redis_url)
            expected = probe_client.hget(keys[0], CHANNEL)
            probe_client.close()
            if not expected:
                raise RuntimeError("the read model has no document for a seeded SKU")
            probe = f"/v1/availability/{CHANNEL}/{shuffled[0]}"

            # 2. (a) raw Redis
            notes.append("redis-cli --latency (idle): " + redis_cli_latency(args.redis))
            a_single, a_bulk = raw_sync(redis_url, keys, key_groups, args.raw_duration, 2_000_000)
            pairs.append(("(a) raw redis-py, 1 conn", a_single, a_bulk))
            notes.append(f"Redis's view of (a) single: {a_single.server_hget}")
            notes.append(f"Redis's view of (a) bulk:   {a_bulk.server_hget}")
            aa_single, aa_bulk = raw_async(
                redis_url, keys, key_groups, args.raw_duration, 2_000_000
            )
            pairs.append(("(a) raw redis.asyncio, 1 conn", aa_single, aa_bulk))
            print("  (a) done", flush=True)

            # 3./4. (b) and (c), per worker count: both served at once (the idle one costs
            # nothing) and loaded in turns, b c / c b / ..., so a neighbour's burst on this
            # shared machine lands on both rather than on one of them.
            for workers in args.worker_counts:
                with (
                    bare_app(bare_env, workers, probe) as bare_served,
                    atp_server(env, workers) as atp_served,
                ):
                    servers = {"b": bare_served, "c": atp_served}
                    for label, served in servers.items():
                        sample = httpx.get(
                            served.url + probe,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=10,
                        )
                        if sample.status_code != 200 or sample.content != expected:
                            errors.append(f"({label}) answered {sample.status_code} {sample.text}")
                    rounds: dict[tuple[str, str], list[Load]] = {}
                    for r in range(args.rounds):
                        order = ["b", "c"] if r % 2 == 0 else ["c", "b"]
                        for kind, paths in (("single", single_paths), ("bulk", bulk_paths)):
                            for label in order:
                                name = f"({label}) w={workers} {kind} round {r + 1}"
                                load = gen.run(
                                    name, servers[label], paths, token, proj.pid, warmup=r == 0
                                )
                                rounds.setdefault((label, kind), []).append(load)
                        print(
                            f"  w={workers} round {r + 1}: "
                            + ", ".join(
                                f"({label}) {kind} {loads[-1].rate:,.0f}/s"
                                for (label, kind), loads in rounds.items()
                            ),
                            flush=True,
                        )
                    if args.profile_dir:
                        for label, served in servers.items():
                            profiles.append(
                                profile(
                                    args,
                                    gen,
                                    served,
                                    single_paths,
                                    token,
                                    f"{label}-w{workers}-single",
                                )
                            )
                got = {
                    label: tuple(
                        combine(f"({label}) {app} w={workers}{suffix}", rounds[(label, kind)])
                        for kind, suffix in (("single", ""), ("bulk", " bulk"))
                    )
                    for label, app in (("b", "bare"), ("c", "atp"))
                }
                b, c = got["b"], got["c"]
                cpu_loads += [*b, *c]
                pairs.append((f"(b) bare Litestar, {workers} worker(s)", *b))
                pairs.append((f"(c) atp serve, {workers} worker(s)", *c))
                ratios.append((workers, c[0].rate / b[0].rate, c[1].rate / b[1].rate))
                cpu_ratios.append(
                    (workers, b[0].server_us / c[0].server_us, b[1].server_us / c[1].server_us)
                )
                round_ratios.append(
                    (
                        workers,
                        [
                            cr.rate / br_.rate
                            for br_, cr in zip(b[0].rounds, c[0].rounds, strict=True)
                        ],
                        [
                            cr.rate / br_.rate
                            for br_, cr in zip(b[1].rounds, c[1].rounds, strict=True)
                        ],
                    )
                )

            # 5. projection lag
            if not args.skip_lag:
                with atp_server(env, args.lag_workers) as served:
                    lag = projection_lag(
                        args,
                        served,
                        database_url,
                        redis_url,
                        prefix,
                        skus[: args.lag_skus],
                        proj.pid,
                    )
                print(f"  lag done: {lag.events} events", flush=True)
    finally:
        try:
            cleanup = redis_cleanup(redis_url, prefix)
        except Exception as exc:  # report, do not mask the run's own error
            cleanup = f"Redis cleanup failed: {exc}"

    # 6. the table and the targets
    print()
    print(read_table(pairs))
    print()
    for (workers, single, bulk), (_, cpu_single, cpu_bulk), (_, r_single, r_bulk) in zip(
        ratios, cpu_ratios, round_ratios, strict=True
    ):
        print(
            f"(c)/(b) with {workers} worker(s): single {single:.2f}, bulk {bulk:.2f} in median "
            f"req/s (per round: {' '.join(f'{x:.2f}' for x in r_single)} / "
            f"{' '.join(f'{x:.2f}' for x in r_bulk)}); {cpu_single:.2f}, {cpu_bulk:.2f} in server "
            "CPU per request (b/c)"
        )
    for note in notes:
        print(note)
    for load in cpu_loads:
        print(f"Redis's view of {load.name}: {load.server_hget}")
    print()
    if lag is not None:

        def lag_row(label: str, values: list[float], rate: str = "") -> list[str]:
            return [
                label,
                str(len(values)),
                rate,
                _ms(pct(values, 50)),
                _ms(pct(values, 99)),
                _ms(max(values, default=math.nan)),
            ]

        lag_rows = [
            ["projection lag", "events", "events/s", "p50 ms", "p99 ms", "max ms"],
            lag_row("commit (NOTIFY seen) -> visible", lag.from_commit_ms, _rate(lag.rate)),
            lag_row("event timestamp -> visible", lag.from_event_ms),
            lag_row("write answered -> visible", lag.from_response_ms),
            lag_row("receipt POST latency", lag.write_ms),
        ]
        print(render_table(lag_rows))
        before_answer = sum(1 for x in lag.from_response_ms if x <= 0)
        print(
            f"{lag.requests} receipts of {args.lag_lines} lines over {len(skus[: args.lag_skus])}"
            f" SKUs ({lag.failed_requests} not 201), {lag.unseen} event(s) never seen; "
            f"{before_answer} event(s) visible before their write's answer arrived; "
            f"watcher: {lag.polls} polls, one per {lag.poll_ms:.2f} ms; "
            f"{lag.transactions} transactions, {lag.notifies} NOTIFYs seen; writers: "
            f"{lag.writer_jobs} jobs in {lag.writer_batches} batches, "
            f"{lag.writer_conflicts} version conflicts"
            + ("" if lag.transactions == lag.notifies else " (mismatch: no commit times)")
        )
        if lag.cpu is not None:
            lag_load = Load("lag phase (writes + projector)", cpu=lag.cpu)
            cpu_loads.append(lag_load)
        print()
    print(cpu_table(cpu_loads))
    print()
    targets: list[tuple[str, bool]] = []
    for workers, single, bulk in ratios:
        targets.append(
            (
                f"(c) >= {TARGET_RATIO} x (b), {workers} worker(s), single: {single:.2f}",
                single >= TARGET_RATIO,
            )
        )
        targets.append(
            (
                f"(c) >= {TARGET_RATIO} x (b), {workers} worker(s), bulk:   {bulk:.2f}",
                bulk >= TARGET_RATIO,
            )
        )
    redis_p99 = next(
        (s.p99_ms for label, s, _ in pairs if label.startswith("(a) raw redis-py")), math.nan
    )
    targets.append(
        (
            f"Redis-side read p99 < {TARGET_REDIS_P99_MS:g} ms: {redis_p99:.3f} ms",
            redis_p99 < TARGET_REDIS_P99_MS,
        )
    )
    if lag is not None:
        for label, values in (
            ("commit -> visible", lag.from_commit_ms),
            ("upper bound, event timestamp -> visible", lag.from_event_ms),
        ):
            p99 = pct(values, 99)
            targets.append(
                (
                    f"projection lag p99 < {TARGET_LAG_P99_MS:g} ms at {lag.rate:,.0f} events/s"
                    f" ({label}): {p99:.1f} ms",
                    p99 < TARGET_LAG_P99_MS and lag.unseen == 0,
                )
            )
        if lag.rate < 0.9 * args.lag_rate:
            targets.append((f"write rate reached 90% of {args.lag_rate:g} events/s", False))
    for text, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    for path in profiles:
        print(f"profile: {path}")
    print()
    print(
        f"total wall time {time.monotonic() - started:.0f}s (processes stopped, database "
        f"dropped; Redis db {db}: {cleanup})"
    )
    bad = [load for _, s, b in pairs for load in (s, b) if load.errors]
    if errors or bad or (lag is not None and (lag.failed_requests or lag.unseen)):
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        for load in bad:
            print(f"ERROR: {load.name}: {load.errors} failed request(s)", file=sys.stderr)
        if lag is not None and (lag.failed_requests or lag.unseen):
            print("ERROR: projection lag phase had failures (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
