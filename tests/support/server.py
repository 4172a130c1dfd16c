"""Runs the real service (`atp serve`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

ADMIN_TOKEN = "test-admin-token"
SECRET_KEY = "test-secret-key-of-at-least-32-characters"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


READ_MODEL_PATHS = ("/v1/items/", "/v1/availability/")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    last_position: int = 0
    """Highest ATP-Position any client of this test process saw (read-your-writes)."""

    def client(self, token: str = ADMIN_TOKEN, **kw: object) -> httpx.Client:
        """A client that reads its own writes: read-model reads carry `min_position`."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        def remember(response: httpx.Response) -> None:
            position = response.headers.get("atp-position")
            if position:
                self.last_position = max(self.last_position, int(position))

        def consistent(request: httpx.Request) -> None:
            path = request.url.path
            if (
                request.method == "GET"
                and path.startswith(READ_MODEL_PATHS)
                and not path.endswith("/history")
                and "min_position" not in request.url.params
                and self.last_position
            ):
                request.url = request.url.copy_merge_params({"min_position": self.last_position})

        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=30,
            event_hooks={"request": [consistent], "response": [remember]},
            **kw,  # type: ignore[arg-type]
        )

    def catch_up(self) -> None:
        """Make this process's next reads include everything written so far, by anyone."""
        head = httpx.get(f"{self.url}/ready", timeout=30).json()["checks"]["ledger"]["head"]
        self.last_position = max(self.last_position, int(head))


def atp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def service_env(
    database_url: str | None, data_dir: str | None = None, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATP_")}
    env["ATP_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["ATP_LOG_LEVEL"] = "warning"
    if database_url:
        env["ATP_DATABASE_URL"] = database_url
        env["ATP_SECRET_KEY"] = SECRET_KEY
    if data_dir:
        env["ATP_DATA_DIR"] = data_dir
    env.update(extra)
    return env


@contextmanager
def running_service(env: dict[str, str], workers: int = 1) -> Iterator[Server]:
    """`atp migrate` then `atp serve --workers N`; waits for /ready; stops it afterwards."""
    atp("migrate", env=env)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"atp serve exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("atp serve did not become ready")
            time.sleep(0.1)
        yield Server(url, process, env)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
