"""`Stack`: `atp serve` on PostgreSQL with a Redis read model and `atp project` as a
subprocess, for the read API tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from adapters.ledger import Ledger, ledger_env
from tests.support.server import Server, stop

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    server: Server
    redis: redis.Redis
    prefix: str
    env: dict[str, str]
    database_url: str
    projector: subprocess.Popen[bytes] | None = None

    def start_projector(self) -> None:
        assert self.projector is None or self.projector.poll() is not None
        self.projector = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "project"],
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )

    def stop_projector(self) -> None:
        p = self.projector
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGCONT)  # a test may have paused it
            stop(p)

    def ledger(self) -> Ledger:
        return Ledger(env=ledger_env(self.database_url, "/nonexistent", create_table=False))

    def ats(self, sku: str, channel: str) -> bytes | None:
        value: bytes | None = self.redis.hget(f"{self.prefix}:{{{sku}}}:ats", channel)
        return value

    def meta_position(self) -> int:
        return int(self.redis.hget(f"{self.prefix}:meta", "position") or 0)

    def wait_caught_up(self, timeout: float = 20) -> int:
        with self.ledger() as ledger:
            head = ledger.ping()
        deadline = time.monotonic() + timeout
        while self.meta_position() < head:
            assert time.monotonic() < deadline, (self.meta_position(), head)
            time.sleep(0.02)
        return head
