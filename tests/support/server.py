"""Runs the real service (`atp serve`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = "test-admin-token"
SECRET_KEY = "test-secret-key-of-at-least-32-characters"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


READ_MODEL_PATHS = ("/v1/items/", "/v1/availability/")


def mint_idempotency_key(request: httpx.Request) -> None:
    """httpx request hook: a POST without an Idempotency-Key gets a fresh one.

    As a client library mints one key per logical request (every POST that changes stock
    requires one); a test that retries sends its own key, which is kept.
    """
    if request.method == "POST" and "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = f"minted-{uuid.uuid4().hex}"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    last_position: int = 0
    """Highest ATP-Position any client of this test process saw (read-your-writes)."""

    def client(
        self, token: str = ADMIN_TOKEN, mint_keys: bool = True, **kw: object
    ) -> httpx.Client:
        """A client that reads its own writes: read-model reads carry `min_position`.

        With `mint_keys`, a POST sent without an `Idempotency-Key` gets a fresh one, as a
        client library mints one per logical request (stock-changing POSTs require one). A
        test that retries passes its own key; `mint_keys=False` sends exactly what it is given.
        """
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
            if mint_keys:
                mint_idempotency_key(request)

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
def running_service(
    env: dict[str, str], workers: int = 1, log: Path | None = None
) -> Iterator[Server]:
    """`atp migrate` then `atp serve --workers N`; waits for /ready; stops it afterwards.
    With `log`, the service's output (its log) goes to that file."""
    atp("migrate", env=env)
    port = free_port()
    output = log.open("wb") if log is not None else None
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        start_new_session=True,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
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
        stop(process)
        if output is not None:
            output.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (started with start_new_session), SIGKILL after 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
