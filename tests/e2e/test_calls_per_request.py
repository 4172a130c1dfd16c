"""The in-process count of calls per request (`loadtests/calls_per_request.py`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_it_counts_a_read_and_a_reservation_through_the_app() -> None:
    """A small run on a fresh embedded ledger. Invariant: both routes answered (the script
    refuses to count a setup or warm-up that failed) and each gets a positive count."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.calls_per_request", "--reads", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    counts = re.findall(r"^(GET|POST) \S+ +([\d.]+) Python function calls", done.stdout, re.M)
    assert [method for method, _ in counts] == ["GET", "POST"], done.stdout
    assert all(float(calls) > 0 for _, calls in counts)
