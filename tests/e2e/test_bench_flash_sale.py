"""The sustained flash-sale benchmark (`loadtests/bench_flash_sale.py`, issue 12 target 4):
the instrument runs end to end in tiny mode and its checks pass on a correct service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def test_flash_sale_runs_in_tiny_mode() -> None:
    """Six seconds of one shopper process x 4 threads on 2 hot SKUs of 10 units, restocked
    by 3 every second, with 3-second holds (walk-aways expire during the sale). Invariant:
    exit status 0, every row of the verdict table passes, 409s were met and each was
    checked against the ledger, and the database is dropped afterwards."""
    with psycopg.connect(ADMIN_URL) as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "loadtests.bench_flash_sale", "--minutes", "0.1"),
            *("--clients", "1", "--threads", "4", "--hot-skus", "2", "--hot-stock", "10"),
            *("--cold-skus", "3", "--restock", "3", "--restock-every", "1", "--ttl", "3"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # about 30 s on a quiet machine; CI machines are shared
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "VERDICT: PASS" in out
    (row,) = [line for line in out.splitlines() if line.startswith("every 409 after stock")]
    checked, violations, verdict = row.split()[-3:]
    assert int(checked.replace(",", "")) > 0 and violations == "0" and verdict == "PASS", row
    assert "command: python -m loadtests.bench_flash_sale --minutes 0.1" in out
    with psycopg.connect(ADMIN_URL) as conn:
        after = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert not {n for n in after - before if "flash" in n}
