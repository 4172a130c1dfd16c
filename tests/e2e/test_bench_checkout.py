"""The side-by-side checkout benchmark (`loadtests/bench_checkout.py`) and its baseline
(`loadtests/plain_service.py`): the instrument runs end to end, and the baseline it measures
atp against is a correct checkout (no oversell, all or nothing, idempotent), so a ratio
against it compares like with like."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from loadtests.bench_checkout import plain_service, seed_plain
from tests.support.pg import fresh_database

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_both_services_in_tiny_mode() -> None:
    """One round of one second per scenario on 20 SKUs, both services and pgbench, within a
    minute. Invariant: every scenario has a row for each service it runs on, the ratios are
    printed with the writer's busy share and append time and the clients' CPU per request,
    neither service oversold a SKU or answered 5xx (exit status 0), and the databases are
    dropped afterwards."""
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "loadtests.bench_checkout", "--duration", "1"),
            *("--rounds", "1", "--skus", "20", "--holds", "20", "--pgbench-clients", "4"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # about 35 s on a quiet machine; CI machines are shared
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for name in ("uniform", "hot", "5-line", "commit", "release", "order"):
        (row,) = [line for line in out.splitlines() if line.startswith(f"{name} ")]
        assert row.endswith("x"), row  # a ratio atp/plain
    for name in ("holds-10", "holds-N"):
        (row,) = [line for line in out.splitlines() if line.startswith(f"{name} ")]
        assert row.endswith("| -"), row  # atp only
    assert "pgbench hot" in out and "pgbench uniform" in out
    atp_lines = [line for line in out.splitlines() if line.startswith("  uniform   atp ")]
    (atp_cpu,) = [line for line in atp_lines if "server" in line]
    assert "projector" in atp_cpu and "redis" in atp_cpu, atp_cpu  # atp's CPU, all of it
    (canary,) = [line for line in atp_lines if "server" not in line]
    assert int(canary.split()[-1]) > 0, canary  # the clients' CPU per request, a round each
    (writer,) = [line for line in out.splitlines() if line.startswith("  uniform    ")]
    assert "busy" in writer and "append" in writer, writer  # the writer's utilisation
    assert "(c) atp, 20 live holds / 10" in out
    assert "oversold SKUs: plain 0, atp 0" in out
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
        after = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert not {n for n in after - before if "bench" in n}


def test_baseline_flash_sale_of_five_units_to_thirty_shoppers(tmp_path: Path) -> None:
    """A flash sale on the baseline: 5 units, 30 shoppers pressing "buy" at once, then a
    basket whose second line is sold out, a retried request, a commit and a release.
    Invariant: exactly 5 holds and 25 rejections (held never exceeds on hand); a refused
    basket holds nothing of its other line; a retried key replays its first answer without
    a second hold; a commit moves 1 unit from held to allocated, a release frees 1."""
    with fresh_database("plain_test") as db, plain_service(db, 2, tmp_path / "plain.log") as s:
        seed_plain(db, {"HOT": 5, "OTHER": 10})

        def reserve(lines: list[tuple[str, int]], key: str = "") -> httpx.Response:
            body = {"channel": "WEB", "lines": [{"sku": k, "quantity": q} for k, q in lines]}
            headers = {"Idempotency-Key": key or uuid.uuid4().hex}
            return httpx.post(f"{s.url}/v1/reservations", json=body, headers=headers, timeout=30)

        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(lambda _: reserve([("HOT", 1)]), range(30)))

        def stock(sku: str) -> tuple[int, int, int]:
            with psycopg.connect(db) as conn:
                row = conn.execute(
                    "SELECT on_hand, held, allocated FROM stock WHERE sku = %s", (sku,)
                ).fetchone()
            assert row is not None
            return row[0], row[1], row[2]

        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] * 5 + [409] * 25
        assert stock("HOT") == (5, 5, 0)

        short = reserve([("OTHER", 2), ("HOT", 1)])
        assert short.status_code == 409
        assert short.json()["lines"] == [{"sku": "HOT", "requested": 1, "available": 0}]
        assert stock("OTHER") == (10, 0, 0)

        first = reserve([("OTHER", 3)], key="retried")
        again = reserve([("OTHER", 3)], key="retried")
        assert first.status_code == again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert stock("OTHER") == (10, 3, 0)
        missing_key = httpx.post(f"{s.url}/v1/reservations", json={}, timeout=30)
        assert missing_key.status_code == 400

        def end(reservation: str, action: str, body: dict[str, str], key: str) -> int:
            url = f"{s.url}/v1/reservations/{reservation}/{action}"
            headers = {"Idempotency-Key": key}
            return httpx.post(url, json=body, headers=headers, timeout=30).status_code

        held = [a.json()["reservation_id"] for a in answers if a.status_code == 201]
        assert end(held[0], "commit", {"order_id": "O-1"}, "c1") == 201
        assert end(held[1], "release", {}, "r1") == 200
        assert stock("HOT") == (5, 3, 1)
        assert end(held[1], "release", {}, "r2") == 409  # released already: nothing freed twice
        assert stock("HOT") == (5, 3, 1)
