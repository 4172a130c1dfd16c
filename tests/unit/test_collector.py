"""The collector's settings of atp's long-running processes (api.collector).

Story: during a four-hour flash sale the projector keeps every SKU's folded state and each
live hold; at CPython's thresholds its full collections paused the read model for 167 ms
about every 16 s (docs/benchmarks.md, eighth day). Invariant: a process that called
`settle()` has its start-up objects frozen out of later collections and collects at
GC_THRESHOLDS, whatever the thresholds were before.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_settle_freezes_start_up_objects_and_sets_the_thresholds() -> None:
    # A fresh interpreter: settle() is process-wide and must not leak into the test run.
    code = textwrap.dedent(
        """
        import gc
        from api.collector import GC_THRESHOLDS, settle

        gc.set_threshold(700, 10, 10)
        assert gc.get_freeze_count() == 0
        settle()
        assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
        assert gc.get_freeze_count() > 0
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
