"""Starting the processes as an operator does: `atp push` before its store exists, `atp demo`
on a ledger that already trades, `atp serve` without an admin token, the healthchecks.

Each test has its own SQLite data directory (and RabbitMQ virtual host where it needs one).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.ledger import Ledger, LedgerEvent, ledger_env, stream_id
from adapters.records import IntegrationConfigured
from api.service.commands import CommandService, Job, command_decider, decider
from api.service.demo import load_demo
from atp import commands as c
from tests.support.amqp import fresh_vhost
from tests.support.fakes import FakeWooCommerce
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import atp, free_port, service_env, stop

pytestmark = pytest.mark.integration


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m api.cli ARGS` in the background, its stderr going to `log`; stopped after."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args, "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_pusher_started_before_its_store_is_registered_waits_then_pushes(
    tmp_path: Path,
) -> None:
    """Compose starts `push-shop` before anyone ran PUT /v1/integrations/woocommerce/shop.
    Invariant: the pusher stays up, says in its log what it waits for, reports unhealthy,
    and starts consuming its queue once the store is registered (no crash loop)."""
    with fresh_vhost() as amqp_url, FakeWooCommerce() as wc:
        env = service_env(None, str(tmp_path), ATP_AMQP_URL=amqp_url, ATP_LOG_LEVEL="info")
        atp("migrate", env=env)
        log = tmp_path / "push.log"
        argv = ["push", "woocommerce", "--store", "shop", "--poll", "0.2"]
        with started(argv, env, log) as pusher:
            wait_for(lambda: "waiting for the woocommerce store 'shop'" in log.read_text(), "why")
            time.sleep(1)
            assert pusher.poll() is None, log.read_text()
            assert log.read_text().count("waiting for") == 1  # said once, not every poll
            unhealthy = check("push", "woocommerce", "--store", "shop", env=env)
            assert unhealthy.returncode == 1, unhealthy.stdout

            ledger = Ledger(env=ledger_env(None, str(tmp_path), create_table=False))
            try:
                record = IntegrationConfigured(
                    kind="woocommerce",
                    store="shop",
                    channel="web",
                    settings={
                        "url": wc.url,
                        "channel": "web",
                        "consumer_key": "ck_fake",
                        "consumer_secret": "cs_fake",
                        "webhook_secrets": ["whsec"],
                    },
                )
                stream = stream_id(("integration", "woocommerce:shop"))
                ledger.append([LedgerEvent(stream, 1, datetime.now(UTC), record, {})])
            finally:
                ledger.close()
            wait_for(lambda: "is registered: pushing" in log.read_text(), "the pusher to start")
            wait_for(
                lambda: check("push", "woocommerce", "--store", "shop", env=env).returncode == 0,
                "a consumer on the push queue",
            )
            assert pusher.poll() is None, log.read_text()


def on_hand(service: CommandService, sku: str, location: str) -> int:
    """The ledger's on_hand of `sku` at `location`, read through the writer's own state."""
    seen: list[int] = []

    def look(world, _now):  # type: ignore[no-untyped-def]
        seen.append(world.item(sku).at(location).on_hand)
        return []

    service.run_sync(Job(decider(look), correlation_id="test"))
    return seen[-1]


def test_make_run_again_after_trading_keeps_the_stock(tmp_path: Path) -> None:
    """A shop ran `make run`, sold 5 TEE-BLK-S, then restarted it (which runs `atp demo`).
    Invariant: the demo loads only into an empty ledger; a second run records nothing, so
    on_hand stays what the sale left (the demo's cycle counts would reset it)."""
    env = service_env(None, str(tmp_path))
    atp("migrate", env=env)
    first = atp("demo", env=env)
    assert "demo catalogue loaded" in first.stdout
    ledger = Ledger(env=ledger_env(None, str(tmp_path), create_table=False))
    service = CommandService(ledger)
    service.start()
    try:
        before = on_hand(service, "TEE-BLK-S", "WH1")
        sale = c.AdjustStock(location="WH1", sku="TEE-BLK-S", delta=-5, reason="sold in store")
        service.run_sync(Job(command_decider(sale), correlation_id="t"))
        assert on_hand(service, "TEE-BLK-S", "WH1") == before - 5
        head = ledger.head()
    finally:
        service.stop()
        ledger.close()
    second = atp("demo", env=env)
    assert "demo not loaded" in second.stdout, second.stdout
    ledger = Ledger(env=ledger_env(None, str(tmp_path), create_table=False))
    service = CommandService(ledger)
    service.start()
    try:
        assert ledger.head() == head
        assert on_hand(service, "TEE-BLK-S", "WH1") == before - 5
        # What the second run would have done without the guard: the counts reset it.
        load_demo(service)
        assert on_hand(service, "TEE-BLK-S", "WH1") == before
    finally:
        service.stop()
        ledger.close()


def test_serve_without_an_admin_token_says_how_to_get_one(tmp_path: Path) -> None:
    """A newcomer starts `atp serve` with no ATP_ADMIN_TOKEN: every request would answer
    401. Invariant: the start-up log says so and names the variable to set."""
    env = service_env(None, str(tmp_path))
    del env["ATP_ADMIN_TOKEN"]
    log = tmp_path / "serve.log"
    with started(["serve", "--port", str(free_port())], env, log):
        wait_for(lambda: "no ATP_ADMIN_TOKEN is set" in log.read_text(), "the hint")
    text = log.read_text()
    assert "ATP_ADMIN_TOKEN=<a secret" in text and "POST /v1/tokens" in text


def test_the_projector_healthcheck_follows_its_heartbeat(tmp_path: Path) -> None:
    """Compose asks `atp project --check` every 10 s. Invariant: healthy only while the
    projector's heartbeat in the read model is fresh; a projector that stopped (heartbeat a
    minute old) or never ran is reported unhealthy, with why."""
    with prefixed(0, "hc") as (r, prefix):
        env = service_env(None, str(tmp_path), ATP_REDIS_URL=redis_url(0), ATP_REDIS_PREFIX=prefix)
        never = check("project", env=env)
        assert never.returncode == 1 and "no projector heartbeat" in never.stdout
        r.hset(f"{prefix}:meta", "heartbeat", time.time() - 60)
        stale = check("project", env=env)
        age = re.search(r"no projector heartbeat for (\d+)s", stale.stdout)
        assert stale.returncode == 1 and age and int(age.group(1)) >= 60, stale.stdout
        r.hset(f"{prefix}:meta", "heartbeat", time.time())
        assert check("project", env=env).returncode == 0


def test_the_webhooks_healthcheck_sees_its_consumer(tmp_path: Path) -> None:
    """Invariant: `atp webhooks --check` is healthy only while something consumes the
    webhook queue: before `atp webhooks` starts it is not, once it consumes it is."""
    with fresh_vhost() as amqp_url:
        env = service_env(None, str(tmp_path), ATP_AMQP_URL=amqp_url)
        atp("migrate", env=env)
        assert check("webhooks", env=env).returncode == 1
        with started(["webhooks"], env, tmp_path / "webhooks.log"):
            wait_for(lambda: check("webhooks", env=env).returncode == 0, "a consumer")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stopped_by_sigterm_leaves_nothing_in_tmp(tmp_path: Path, workers: int) -> None:
    """Story: an operator's systemd restarts atp every night (and `docker stop` does the
    same): each stop is a SIGTERM. Invariant: `atp serve` exits 0 and removes what it made
    in the temporary directory (its metrics directory, env file and writer socket), however
    many workers it ran; before, one worker left a pair in /tmp at every stop."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = service_env(None, str(tmp_path / "data"), TMPDIR=str(scratch))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    with started(
        ["serve", "--port", str(port), "--workers", str(workers)], env, tmp_path / "serve.log"
    ) as process:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), "atp serve")
        assert any(p.name.startswith("atp-") for p in scratch.iterdir())
        process.send_signal(signal.SIGTERM)  # the parent only, as systemd's main PID
        assert process.wait(timeout=30) == 0
    assert sorted(p.name for p in scratch.iterdir()) == []


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
