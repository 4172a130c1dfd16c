"""Waiting for a rebuilt read model to be complete (a build recorded, the ledger head
included)."""

from __future__ import annotations

import time

from tests.support.read_stack import Stack
from tests.support.server import ADMIN_TOKEN

PREFIX = "fl"


HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def wait_complete(stack: Stack, timeout: float = 30) -> int:
    """Until the model is complete (a build is recorded) and includes the ledger head."""
    with stack.ledger() as ledger:
        head = ledger.ping()
    deadline = time.monotonic() + timeout
    while True:
        meta = stack.redis.hgetall(f"{PREFIX}:meta")
        if b"build" in meta and int(meta.get(b"position", 0)) >= head:
            return head
        assert time.monotonic() < deadline, meta
        time.sleep(0.05)
