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
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import replace

import httpx
import redis

from loadtests.harness.catalogue import (
    BULK,
    CHANNEL,
    CHANNELS,
    LOCATIONS,
    TARGET_LAG_P99_MS,
    TARGET_RATIO,
    TARGET_REDIS_P99_MS,
    sku_code,
)
from loadtests.harness.lag import projection_lag
from loadtests.harness.loadgen import LoadGen
from loadtests.harness.redis_probe import (
    pick_redis_db,
    raw_async,
    raw_sync,
    redis_cleanup,
    redis_cli_latency,
)
from loadtests.harness.results import LagResult, Load, combine, pct
from loadtests.harness.services import (
    Served,
    atp_server,
    bare_app,
    ledger_head,
    projector,
    seed,
    wait_caught_up,
)
from loadtests.harness.tables import cpu_table, fmt_ms, fmt_rate, read_table, render_table
from tests.support.pg import fresh_database
from tests.support.server import atp, service_env


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
                fmt_ms(pct(values, 50)),
                fmt_ms(pct(values, 99)),
                fmt_ms(max(values, default=math.nan)),
            ]

        lag_rows = [
            ["projection lag", "events", "events/s", "p50 ms", "p99 ms", "max ms"],
            lag_row("commit (NOTIFY seen) -> visible", lag.from_commit_ms, fmt_rate(lag.rate)),
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
