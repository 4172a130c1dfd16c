"""A fresh RabbitMQ virtual host per test, deleted afterwards."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

AMQP_BASE = os.environ.get("ATP_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")
"""The test broker, without a virtual host."""


def rabbitmqctl(*args: str) -> None:
    """Run `rabbitmqctl -q ARGS` (raises CalledProcessError when it fails)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def fresh_vhost(prefix: str = "atp_test") -> Iterator[str]:
    """Yields an AMQP URL for a new virtual host (guest has every permission on it)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{AMQP_BASE}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)
