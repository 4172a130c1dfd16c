"""The Locust peak-load scenario reports its verdict where the reports are read: the
INVARIANT rows of `--csv` (and so of `--html`), the exit code, and a last line saying
"invariants hold" or what broke.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import running_service, service_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))
INVARIANTS = {"no oversell", "nothing negative", "every 201 held or allocated"}


def test_a_short_flash_sale_sells_out_and_reports_invariants_in_the_csv(tmp_path: Path) -> None:
    """A flash sale of 6 units with everything else going on (browsing, bulk counts,
    returns, marketplace imports) against the embedded service for 8 s. Invariant: the hot
    SKU sells out (the 409 path runs), and the CSV has one INVARIANT row per invariant, each
    without failure: nothing oversold, nothing negative, every 201 held or allocated."""
    env = service_env(None, str(tmp_path / "data"))
    with running_service(env) as server:
        run = subprocess.run(
            [
                LOCUST,
                "-f",
                str(ROOT / "loadtests" / "locustfile.py"),
                "--headless",
                "-u",
                "10",
                "-r",
                "10",
                "-t",
                "8s",
                "--host",
                server.url,
                "--csv",
                str(tmp_path / "run"),
                "--only-summary",
            ],
            env={
                **env,
                "ATP_TOKEN": "test-admin-token",
                "ATP_LT_SKUS": "40",
                "ATP_LT_HOT_STOCK": "6",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == "invariants hold", run.stdout
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    found = {name for kind, name in rows if kind == "INVARIANT"}
    assert found == INVARIANTS, rows.keys()
    for name in INVARIANTS:
        row = rows[("INVARIANT", name)]
        assert (row["Request Count"], row["Failure Count"]) == ("1", "0"), row
    assert int(rows[("OUTCOME", "flash sale: sold out (409)")]["Request Count"]) > 0
    assert int(rows[("POST", "flash sale: reserve")]["Failure Count"]) == 0


def test_a_broken_invariant_is_a_failure_row() -> None:
    """What breaks is named: a violated invariant is a failed INVARIANT request (so the run
    exits non-zero and the reports show it) carrying what broke."""
    probe = (
        "import time\n"
        "from locust.env import Environment\n"
        "import locustfile as lf\n"
        "env = Environment()\n"
        "env.create_local_runner()\n"
        "broken = []\n"
        "lf.verdict(env, 'no oversell', time.perf_counter(), 'HOT promised 2 more', broken)\n"
        "lf.verdict(env, 'nothing negative', time.perf_counter(), '', broken)\n"
        "bad = env.stats.get('no oversell', 'INVARIANT')\n"
        "good = env.stats.get('nothing negative', 'INVARIANT')\n"
        "print(bad.num_requests, bad.num_failures, good.num_failures, broken)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT / "loadtests",
        env={"ATP_TOKEN": "x", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "1 1 0 ['no oversell: HOT promised 2 more']", done.stdout
