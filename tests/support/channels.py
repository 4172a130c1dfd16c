"""The channel pipeline as processes for the end-to-end tests (and bench_push): the
service, projector, pusher and fake stores (ChannelStack), a catalogue, metrics helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import httpx
import pytest

from adapters.amqp import dead_letter_queue, push_queue
from tests.support.amqp import fresh_vhost
from tests.support.fakes import FakeWooCommerce
from tests.support.pg import fresh_database
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import (
    ADMIN_TOKEN,
    Server,
    atp,
    free_port,
    mint_idempotency_key,
    service_env,
)

STORE = "shop"


CHANNEL = "web"


QUEUE = push_queue("woocommerce", STORE)


DLQ = dead_letter_queue(QUEUE)


REDIS_DB = 0


WEBHOOK_SECRET = "fake-webhook-secret"  # FakeWooCommerce's default product webhook secret


T = TypeVar("T")


def eventually(check: Callable[[], T | None], within: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy (returned), at most `within` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            result = check()
        except AssertionError as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}; last: {last}")
        time.sleep(interval)


async def _queue_counts(url: str, names: list[str]) -> dict[str, tuple[int, int]]:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        out = {}
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                out[name] = (-1, -1)
                continue
            result = queue.declaration_result
            out[name] = (result.message_count or 0, result.consumer_count or 0)
        return out


def queue_counts(url: str, *names: str) -> dict[str, tuple[int, int]]:
    """Queue name -> (messages ready, consumers); (-1, -1) when it does not exist."""
    return asyncio.run(_queue_counts(url, list(names)))


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric `name` in Prometheus text whose labels include `labels`."""
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        found = dict(LABEL.findall(m.group(2) or ""))
        if labels.items() <= found.items():
            out.append((found, float(m.group(3))))
    return out


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the matching samples (0 when there are none)."""
    return sum(v for _, v in samples(text, name, **labels))


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Catalogue:
    """The SKUs of the store: simple products, and variable products with variations."""

    simple: list[str]
    variable: dict[str, list[str]] = field(default_factory=dict)
    """Parent SKU (not sold through atp) -> its variations' SKUs."""

    @property
    def skus(self) -> list[str]:
        return self.simple + [v for vs in self.variable.values() for v in vs]


class ChannelStack:
    """Everything a channel test needs, started in `__enter__` and torn down in `__exit__`."""

    def __init__(
        self,
        logdir: Path,
        catalogue: Catalogue,
        *,
        workers: int = 2,
        rate: float = 20.0,
        api_env: dict[str, str] | None = None,
        log_level: str = "warning",
        pusher_log_level: str = "info",
        webhooks: bool = True,
        webhook_delay: float = 0.5,
        tag: str = "atp_e2e_ch",
    ) -> None:
        self.logdir = logdir
        self.catalogue = catalogue
        self.workers = workers
        self.rate = rate
        self.api_env = dict(api_env or {})
        self.log_level = log_level
        self.pusher_log_level = pusher_log_level
        self.webhooks = webhooks
        self.webhook_delay = webhook_delay
        self.tag = tag
        self._exit = contextlib.ExitStack()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._starts: Counter[str] = Counter()
        self.last_position = 0
        self._position_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ChannelStack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.database_url = self._exit.enter_context(fresh_database(self.tag))
        self.amqp_url = self._exit.enter_context(fresh_vhost(self.tag))
        self.vhost = self.amqp_url.rsplit("/", 1)[1]
        self.redis, self.prefix = self._exit.enter_context(prefixed(REDIS_DB, "ch"))
        self.env = service_env(
            self.database_url,
            ATP_REDIS_URL=redis_url(REDIS_DB),
            ATP_REDIS_PREFIX=self.prefix,
            ATP_AMQP_URL=self.amqp_url,
        )
        self.env["ATP_LOG_LEVEL"] = self.log_level
        self.wc = FakeWooCommerce(webhook_delay=self.webhook_delay)
        self._exit.enter_context(self.wc)
        self._exit.callback(self._stop_all)
        for sku in self.catalogue.simple:
            self.wc.add_product(sku, stock=0)
        for parent, variations in self.catalogue.variable.items():
            pid = self.wc.add_product(parent, type="variable")
            for sku in variations:
                self.wc.add_variation(pid, sku, stock=0)
        atp("migrate", env=self.env)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.spawn(
            "api",
            ["serve", "--port", str(port), "--workers", str(self.workers)],
            {**self.env, **self.api_env},
        )
        deadline = time.monotonic() + 60
        while True:
            self.check_alive("api")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("atp serve did not become ready")
            time.sleep(0.1)
        self.server = Server(self.url, self.procs["api"], self.env)
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
            event_hooks={"request": [mint_idempotency_key]},
        )
        self._exit.callback(self.http.close)
        self.spawn("project", ["project"])
        if self.webhooks:
            self.wc.configure_webhook(f"{self.url}/v1/webhooks/woocommerce/{STORE}")

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start `atp <args>` as process `name` (its output goes to <logdir>/<name>-N.log)."""
        self._starts[name] += 1
        path = self.logdir / f"{name}-{self._starts[name]}.log"
        self.logs[name] = path
        with path.open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "api.cli", *args],
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self, name: str) -> None:
        process = self.procs[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail(self.logs[name])}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Signal process `name` (its whole session) and wait for it; SIGKILL after timeout."""
        process = self.procs.get(name)
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        return process.returncode

    def _stop_all(self) -> None:
        for name in [n for n in self.procs if n.startswith("push")]:
            self.stop(name)
        for name in ("project", "api"):
            self.stop(name)
        for name, path in self.logs.items():  # shown by pytest when the test failed
            print(f"--- {name}: {path} (tail) ---\n{tail(path, 25)}")

    # -- the pusher ---------------------------------------------------------------------------

    def start_pusher(self, store: str = STORE, wait: bool = True) -> None:
        name = f"push-{store}"
        env = {**self.env, "ATP_LOG_LEVEL": self.pusher_log_level}
        self.spawn(name, ["push", "woocommerce", "--store", store], env)
        if wait:
            queue = push_queue("woocommerce", store)

            def consuming() -> bool:
                self.check_alive(name)
                return queue_counts(self.amqp_url, queue)[queue][1] >= 1

            eventually(consuming, 60, f"the {store} pusher consuming {queue}", 0.25)

    def kill_pusher(self, store: str = STORE) -> None:
        self.stop(f"push-{store}", signal.SIGKILL)

    # -- seeding through the API --------------------------------------------------------------

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code not in (200, 201):
            raise AssertionError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        self.saw(response)
        body: dict[str, Any] = response.json()
        return body

    def saw(self, response: httpx.Response) -> None:
        position = response.headers.get("atp-position")
        if position:
            with self._position_lock:
                self.last_position = max(self.last_position, int(position))

    def seed(
        self,
        stock: dict[str, dict[str, int]],
        locations: tuple[str, ...] = ("WH1", "WH2"),
        rate: float | None = None,
    ) -> None:
        """Locations, the web channel (every location, no buffer), receipts of `stock`
        (location -> sku -> units) and the integration record pointing at the fake."""
        for code in locations:
            self.ok(
                self.http.put(f"/v1/locations/{code}", json={"name": code, "kind": "warehouse"})
            )
        self.ok(self.http.put(f"/v1/channels/{CHANNEL}", json={"locations": list(locations)}))
        for location, lines in stock.items():
            items = list(lines.items())
            for i in range(0, len(items), 100):
                body = {
                    "location": location,
                    "lines": [{"sku": s, "quantity": q} for s, q in items[i : i + 100]],
                    "reference": f"seed-{location}-{i}",
                }
                self.ok(self.http.post("/v1/receipts", json=body))
        self.integrate(STORE, self.wc, rate)

    def integrate(self, store: str, wc: FakeWooCommerce, rate: float | None = None) -> None:
        body = {
            "url": wc.url,
            "channel": CHANNEL,
            "consumer_key": "ck_fake",
            "consumer_secret": "cs_fake",
            "webhook_secrets": [WEBHOOK_SECRET],
            "max_requests_per_second": rate or self.rate,
        }
        self.ok(self.http.put(f"/v1/integrations/woocommerce/{store}", json=body))

    # -- reading ------------------------------------------------------------------------------

    def catch_up(self) -> int:
        head = int(httpx.get(f"{self.url}/ready", timeout=30).json()["checks"]["ledger"]["head"])
        with self._position_lock:
            self.last_position = max(self.last_position, head)
            return self.last_position

    def figure(self, sku: str, min_position: int | None = None) -> int:
        """GET /v1/availability/web/{sku}, including every write seen so far."""
        position = self.last_position if min_position is None else min_position
        r = self.http.get(f"/v1/availability/{CHANNEL}/{sku}", params={"min_position": position})
        assert r.status_code == 200, f"{sku}: {r.status_code} {r.text}"
        available: int = r.json()["available"]
        return available

    def figures(self, skus: list[str]) -> dict[str, int]:
        position = self.catch_up()
        return {sku: self.figure(sku, position) for sku in skus}

    def store_stock(self, skus: list[str], wc: FakeWooCommerce | None = None) -> dict[str, Any]:
        wc = wc or self.wc
        return {sku: wc.stock_of(sku) for sku in skus}

    def queues(self) -> tuple[int, int]:
        """(messages ready in the push queue, messages in its dead-letter queue)."""
        counts = queue_counts(self.amqp_url, QUEUE, DLQ)
        return counts[QUEUE][0], counts[DLQ][0]

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def metrics_until(self, wanted: Callable[[str], bool], what: str) -> str:
        """/metrics once it shows what is `wanted` (pushers report every 2 s)."""

        def check() -> str | None:
            text = self.metrics()
            return text if wanted(text) else None

        return eventually(check, 10, f"{what} in /metrics", 0.5)

    def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/ready", timeout=30).json()
        return body

    def report(self, store: str = STORE) -> dict[str, str]:
        raw = self.redis.hgetall(f"{self.prefix}:push:woocommerce:{store}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def wait_converged(
        self, expected: dict[str, int], within: float = 60.0, what: str = "convergence"
    ) -> None:
        """Until the store and the API both show `expected` for every SKU, the push queue is
        empty and the pusher holds nothing; then once more a second later (no late write
        may undo it)."""
        skus = sorted(expected)

        def check() -> bool:
            store = self.store_stock(skus)
            wrong = {s: (store[s], expected[s]) for s in skus if store[s] != expected[s]}
            assert not wrong, f"store != expected (store, expected): {wrong}"
            api = self.figures(skus)
            wrong = {s: (api[s], expected[s]) for s in skus if api[s] != expected[s]}
            assert not wrong, f"API != expected (api, expected): {wrong}"
            ready, _ = self.queues()
            assert ready == 0, f"{ready} message(s) still ready in {QUEUE}"
            return True

        eventually(check, within, what, 0.5)
        time.sleep(1.0)
        check()


def catalogue(prefix: str, simple: int, parents: int, per_parent: int) -> Catalogue:
    return Catalogue(
        [f"{prefix}-{i:03d}" for i in range(simple)],
        {
            f"{prefix}-V{p}": [f"{prefix}-V{p}-{v}" for v in range(per_parent)]
            for p in range(parents)
        },
    )


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., ChannelStack]]:
    with contextlib.ExitStack() as stacks:

        def make(cat: Catalogue, **kw: Any) -> ChannelStack:
            return stacks.enter_context(ChannelStack(tmp_path / "logs", cat, **kw))

        yield make
