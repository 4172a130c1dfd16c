"""The channel integration end to end: the real service as subprocesses on the real
PostgreSQL, Redis and RabbitMQ, selling into a fake WooCommerce store.

Per test: a fresh database, a fresh RabbitMQ vhost, a Redis key prefix of its own (deleted
afterwards), `atp migrate`, `atp serve --workers 2`, `atp project` and
`atp push woocommerce --store shop`; a FakeWooCommerce holding the catalogue (simple
products and variations); locations, the web channel, the stock and the integration record
created through the API.

* a flash sale of 500 concurrent reservations (then releases, commits and abandoned carts
  whose holds expire) ends with the store holding exactly every SKU's final figure, with
  far fewer HTTP requests than changes and nothing dead-lettered;
* a fault storm (429 with Retry-After, 500/502, dropped HTTP connections, the pusher killed
  and restarted, RabbitMQ connections closed by the broker) converges to the exact figures
  with an empty dead-letter queue;
* a SKU the store does not have is dead-lettered (and counted in /metrics), and
  `atp dlq replay` brings it back once the product exists; /metrics carries the pushers'
  delay histogram, queue depth and retries; /ready says when a channel falls behind
  ATP_PUSH_ALERT_SECONDS (and the API logs a warning) and when a pusher stopped reporting.

`ChannelStack` is also what `loadtests/bench_push.py` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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

pytestmark = pytest.mark.e2e

STORE = "shop"
CHANNEL = "web"
QUEUE = push_queue("woocommerce", STORE)
DLQ = dead_letter_queue(QUEUE)
REDIS_DB = 0
WEBHOOK_SECRET = "fake-webhook-secret"  # FakeWooCommerce's default product webhook secret
T = TypeVar("T")


# --- small helpers -------------------------------------------------------------------------------


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


# --- the stack -----------------------------------------------------------------------------------


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


# --- driving the API from threads ----------------------------------------------------------------


class Client:
    """One thread's keep-alive connection; retries 5xx and transport errors with the same
    Idempotency-Key, so every write has a known outcome."""

    def __init__(self, stack: ChannelStack) -> None:
        self.stack = stack
        self.http = httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )

    def post(self, path: str, body: dict[str, Any] | None, key: str | None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        for attempt in range(6):
            try:
                r = self.http.post(path, json=body, headers=headers)
            except httpx.TransportError:
                if attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            if r.status_code < 500 or attempt == 5:
                self.stack.saw(r)
                return r
            time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


@dataclass
class Hold:
    reservation_id: str
    lines: dict[str, int]


def reserve(client: Client, lines: dict[str, int], ttl: int = 900) -> Hold | None:
    body = {
        "channel": CHANNEL,
        "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
        "ttl_seconds": ttl,
    }
    r = client.post("/v1/reservations", body, f"res-{uuid.uuid4().hex}")
    if r.status_code == 409:
        return None
    assert r.status_code == 201, f"reservation: {r.status_code} {r.text}"
    return Hold(r.json()["reservation_id"], lines)


# --- a. the flash sale ---------------------------------------------------------------------------


def test_flash_sale_ends_with_the_store_at_the_exact_final_figures(
    stack_factory: Callable[..., ChannelStack],
) -> None:
    cat = Catalogue(["FS-A", "FS-B", "FS-C"], {"FS-TEE": ["FS-TEE-S", "FS-TEE-M", "FS-TEE-L"]})
    stock = {
        "WH1": {"FS-A": 80, "FS-B": 60, "FS-C": 40, "FS-TEE-S": 30, "FS-TEE-M": 50, "FS-TEE-L": 20},
        "WH2": {"FS-A": 20, "FS-TEE-M": 10},
    }
    total = Counter[str]()
    for lines in stock.values():
        total.update(lines)
    skus = cat.skus
    stack = stack_factory(cat)
    stack.seed(stock)
    stack.start_pusher()
    initial = dict(total)
    stack.wait_converged(initial, 30, "the initial figures reconciled into the store")
    requests_before = len(stack.wc.requests())
    writes_before = len(stack.wc.requests("POST"))

    # 500 concurrent checkouts over six SKUs with 310 units: some of them sell out.
    rng = random.Random(7)
    weights = [5, 4, 3, 2, 4, 2]
    orders = [{rng.choices(skus, weights)[0]: rng.choice((1, 1, 1, 2))} for _ in range(500)]
    for i in range(0, 500, 25):  # a few baskets of two SKUs
        orders[i] = {"FS-A": 1, "FS-TEE-M": 1}
    clients = [Client(stack) for _ in range(16)]
    try:
        with ThreadPoolExecutor(16) as pool:
            holds = list(
                pool.map(lambda n: reserve(clients[n % 16], orders[n]), range(len(orders)))
            )
        held = [h for h in holds if h is not None]
        rejected = len(holds) - len(held)
        assert held and rejected, (len(held), rejected)  # demand exceeded supply
        live = Counter[str]()
        for h in held:
            live.update(h.lines)
        assert all(live[s] <= total[s] for s in skus), "oversold"

        # Afterwards: a third of the carts are abandoned (released), a third paid (committed).
        rng.shuffle(held)
        released, committed = held[: len(held) // 3], held[len(held) // 3 : 2 * len(held) // 3]

        def release(n: int) -> None:
            h = released[n]
            r = clients[n % 16].post(
                f"/v1/reservations/{h.reservation_id}/release", None, f"rel-{h.reservation_id}"
            )
            assert r.status_code == 200, r.text

        def commit(n: int) -> None:
            h = committed[n]
            r = clients[n % 16].post(
                f"/v1/reservations/{h.reservation_id}/commit",
                {"order_id": f"o-{h.reservation_id}"},
                f"com-{h.reservation_id}",
            )
            assert r.status_code == 201, r.text

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(release, range(len(released))))
            list(pool.map(commit, range(len(committed))))
    finally:
        for client in clients:
            client.close()
    for h in released:
        live.subtract(h.lines)
    final = {sku: total[sku] - live[sku] for sku in skus}

    stack.wait_converged(final, 60, "the store at the final figures after the sale")
    assert stack.queues() == (0, 0), "the dead-letter queue must stay empty"
    assert stack.figures(skus) == final

    # Coalescing: every reservation and release changed a figure; the store got far fewer
    # requests, and never more than 100 items in one.
    changes = len(held) + len(released)
    posts = stack.wc.requests("POST")[writes_before:]
    requests = len(stack.wc.requests()) - requests_before
    items = [len(p.json()["update"]) for p in posts if p.path.endswith("/batch")]
    assert all(n <= 100 for n in items)
    assert requests * 5 <= changes, (requests, changes, items)
    statuses = Counter(r.status for r in stack.wc.requests())
    assert set(statuses) == {200}, statuses
    print(
        f"flash sale: {len(held)} held, {rejected} rejected, {len(released)} released, "
        f"{len(committed)} committed; {changes} figure changes -> {requests} store requests "
        f"({len(posts)} writes of {sum(items)} items)"
    )

    # The store echoes every write back as a product.updated webhook: recognised as echoes.
    deliveries = eventually(
        lambda: stack.wc.webhook_deliveries("product.updated"), 10, "product webhooks"
    )
    assert all(d.status == 200 for d in deliveries)
    echo_answers = Counter(d.response_body for d in deliveries)
    assert set(echo_answers) == {b'{"status":"echo"}'}, echo_answers

    text = stack.metrics()
    shop = {"kind": "woocommerce", "store": STORE, "channel": CHANNEL}
    assert metric(text, "atp_push_dead_letters_total", **shop) == 0
    assert metric(text, "atp_push_delay_seconds_count", **shop) >= 1

    # Abandoned carts of the last minute: their holds expire (ttl 2 s). The channel must
    # get its units back.
    clients = [Client(stack)]
    try:
        spare = max(skus, key=final.__getitem__)
        carts = [reserve(clients[0], {spare: 1}, ttl=2) for _ in range(3)]
    finally:
        clients[0].close()
    assert all(carts), f"{spare} had units left for the abandoned carts"
    during = {**final, spare: final[spare] - 3}
    stack.wait_converged(during, 30, "the abandoned carts' holds in the store")
    time.sleep(2.5)  # the holds expire; the sweeper records it within a second
    stack.wait_converged(final, 20, "the expired holds' units back in the store")
    assert stack.queues() == (0, 0)


# --- b. the fault storm --------------------------------------------------------------------------


@dataclass
class Book:
    """What one driver thread did to its own SKUs (exact: every write has a known outcome)."""

    on_hand: Counter[str] = field(default_factory=Counter)
    held: Counter[str] = field(default_factory=Counter)
    holds: list[Hold] = field(default_factory=list)
    writes: int = 0


def drive(client: Client, skus: list[str], book: Book, stop: threading.Event, seed: int) -> None:
    """Receipts, adjustments, reservations and releases on `skus` until `stop` (at most
    ~25 writes/s and 2,000 writes)."""
    rng = random.Random(seed)
    for n in range(2000):
        if stop.is_set():
            return
        sku = rng.choice(skus)
        sellable = book.on_hand[sku] - book.held[sku]
        op = rng.random()
        key = f"drv-{seed}-{n}-{uuid.uuid4().hex[:8]}"
        if op < 0.3:
            delta = rng.randint(-min(5, max(0, sellable)), 6)
            if delta == 0:
                delta = 1
            body = {"location": "WH1", "sku": sku, "delta": delta, "reason": "storm"}
            r = client.post("/v1/adjustments", body, key)
            assert r.status_code == 201, r.text
            book.on_hand[sku] += delta
        elif op < 0.45:
            lines = {s: rng.randint(1, 4) for s in rng.sample(skus, min(3, len(skus)))}
            body = {
                "location": "WH1",
                "lines": [{"sku": s, "quantity": q} for s, q in lines.items()],
            }
            r = client.post("/v1/receipts", body, key)
            assert r.status_code == 201, r.text
            book.on_hand.update(lines)
        elif op < 0.8 or not book.holds:
            quantity = rng.randint(1, 2)
            hold = reserve(client, {sku: quantity})
            if hold is not None:
                book.holds.append(hold)
                book.held.update(hold.lines)
        else:
            hold = book.holds.pop(rng.randrange(len(book.holds)))
            r = client.post(f"/v1/reservations/{hold.reservation_id}/release", None, key)
            assert r.status_code == 200, r.text
            book.held.subtract(hold.lines)
        book.writes += 1
        time.sleep(0.04)


def test_fault_storm_converges_to_the_exact_figures(
    stack_factory: Callable[..., ChannelStack],
) -> None:
    cat = catalogue("ST", 30, 2, 5)
    skus = cat.skus
    start_stock = {sku: 40 + i for i, sku in enumerate(skus)}
    stack = stack_factory(cat)
    stack.seed({"WH1": start_stock}, locations=("WH1",))
    stack.start_pusher()
    stack.wait_converged(start_stock, 30, "the initial figures reconciled into the store")
    wc = stack.wc
    is_post = lambda req: req.method == "POST"  # noqa: E731

    books = [Book() for _ in range(4)]
    for book, part in zip(books, [skus[i::4] for i in range(4)], strict=True):
        book.on_hand.update({sku: start_stock[sku] for sku in part})
    stop = threading.Event()
    clients = [Client(stack) for _ in books]
    storm_started = time.monotonic()

    def at(seconds: float) -> None:
        time.sleep(max(0.0, storm_started + seconds - time.monotonic()))

    with ThreadPoolExecutor(len(books)) as pool:
        drivers = [
            pool.submit(drive, clients[i], skus[i::4], books[i], stop, i) for i in range(len(books))
        ]
        try:
            at(1.0)
            wc.faults.throttle_next(3, retry_after=1, when=is_post)  # 429 + Retry-After
            at(2.5)
            wc.faults.fail_next(3, status=500, when=is_post)
            at(4.0)
            wc.faults.latency = 0.3  # writes are in flight when the pusher dies
            eventually(lambda: any(r.status is None for r in wc.requests("POST")), 5, "a write")
            stack.kill_pusher()  # SIGKILL: unacked messages go back to the queue
            wc.faults.latency = 0
            at(6.0)
            stack.start_pusher()  # reconciles, then consumes the backlog
            at(7.5)
            ctl = subprocess.run(
                ["rabbitmqctl", "-q", "close_all_connections", "--vhost", stack.vhost,
                 "e2e fault storm"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert ctl.returncode == 0, ctl.stderr
            at(9.0)
            wc.faults.fail_next(2, status=502, html=True, when=is_post)
            wc.faults.disconnect_next(2, when=is_post)
            wc.faults.throttle_next(2, retry_after=2, html=True, when=is_post)
            at(12.0)
            # Changes keep flowing until the store has met every queued fault (the
            # projector may still be reconnecting to RabbitMQ): at most 25 s in all.
            eventually(
                lambda: wc.faults.pending() == 0,
                max(0.0, storm_started + 25 - time.monotonic()),
                "every queued fault met by a write",
            )
        finally:
            stop.set()
            for future in drivers:
                future.result(timeout=60)
            for client in clients:
                client.close()
    wc.faults.clear()
    assert stack.procs["project"].poll() is None, "the projector died"
    stack.check_alive(f"push-{STORE}")

    expected = {}
    for book in books:
        for sku in book.on_hand:
            expected[sku] = book.on_hand[sku] - book.held[sku]
    assert sum(b.writes for b in books) >= 100, [b.writes for b in books]
    stack.wait_converged(expected, 90, "the store at the exact final figures after the storm")
    ready, dead = stack.queues()
    assert (ready, dead) == (0, 0), f"{dead} message(s) dead-lettered that should not be"

    statuses = Counter(r.status for r in wc.requests())
    print(f"fault storm: {sum(b.writes for b in books)} writes; store answers {statuses}")
    assert statuses[429] >= 3 and statuses[500] >= 1 and statuses[None] >= 1, statuses
    text = stack.metrics_until(lambda t: metric(t, "atp_push_retries_total") > 0, "retries")
    assert metric(text, "atp_push_dead_letters_total") == 0


# --- c + d. dead letters and their replay, /metrics, /ready --------------------------------------


def test_dead_letters_replay_metrics_and_readiness(
    stack_factory: Callable[..., ChannelStack],
) -> None:
    cat = catalogue("MR", 6, 1, 3)
    skus = cat.skus
    start_stock = {sku: 20 for sku in skus}
    # The API judges the pushers against a 1 s alert threshold.
    stack = stack_factory(cat, api_env={"ATP_PUSH_ALERT_SECONDS": "1"})
    stack.seed({"WH1": {**start_stock, "GHOST": 7}}, locations=("WH1",))
    # A second store whose pusher stops for good early on: /ready must call it "down" once
    # it has been silent for 30 s (checked at the end, so the wait overlaps the rest).
    outlet = FakeWooCommerce()
    stack._exit.enter_context(outlet)
    stack.integrate("outlet", outlet)
    stack.start_pusher("outlet")
    eventually(lambda: stack.report("outlet").get("heartbeat"), 10, "the outlet pusher report")
    stack.stop("push-outlet")
    outlet_stopped = time.monotonic()

    stack.start_pusher()
    stack.wait_converged(start_stock, 30, "the initial figures reconciled into the store")
    shop_labels = {"kind": "woocommerce", "store": STORE, "channel": CHANNEL}

    def pusher_status(name: str) -> str | None:
        pushers = stack.ready()["checks"].get("pushers", {})
        return pushers.get(name, {}).get("status")

    eventually(lambda: pusher_status(f"woocommerce:{STORE}") == "ok", 10, "/ready: shop ok")

    # A change that goes through: its delay from the ledger event is in the histogram.
    expected = dict(start_stock)
    last = skus[-1]
    stack.ok(
        stack.http.post(
            "/v1/adjustments", json={"location": "WH1", "sku": last, "delta": 3, "reason": "found"}
        )
    )
    expected[last] += 3
    stack.wait_converged(expected, 20, f"{last} written")
    text = stack.metrics_until(
        lambda t: metric(t, "atp_push_delay_seconds_count", **shop_labels) >= 1, "the delay"
    )
    buckets = samples(text, "atp_push_delay_seconds_bucket", **shop_labels)
    assert {float(b[0]["le"]) for b in buckets} >= {0.5, 1, 5, float("inf")}, buckets
    assert text.count("# TYPE atp_push_delay_seconds histogram") == 1
    assert metric(text, "atp_push_delay_seconds_sum", **shop_labels) < 5
    assert samples(text, "atp_push_queue_depth", **shop_labels)
    assert metric(text, "atp_push_requests_total", status="200", **shop_labels) >= 2

    # c. GHOST is sold through atp but the store has no such product: dead-lettered.
    # The push queue exists from the moment the store is registered, so GHOST's seeded figure
    # is already parked if its message was published after the registration (it races the
    # projector); it was handled before `last` above converged (one consumer, in order).
    seeded = stack.queues()[1]
    assert seeded in (0, 1), seeded
    r = stack.http.post(
        "/v1/adjustments",
        json={"location": "WH1", "sku": "GHOST", "delta": 2, "reason": "found"},
    )
    stack.ok(r)
    dead_letters = seeded + 1
    eventually(
        lambda: stack.queues()[1] == dead_letters, 20, "GHOST's change in the dead-letter queue"
    )
    text = stack.metrics_until(
        lambda t: metric(t, "atp_push_dead_letters_total", **shop_labels) == dead_letters,
        "the dead letters",
    )
    assert metric(text, "atp_push_permanent_errors_total", **shop_labels) == dead_letters

    # d. The store answers 500 for a while: the changes stay pending, the channel falls
    # behind the 1 s threshold, /ready says so and the API logs a warning.
    stack.wc.faults.fail_next(10_000, status=500, when=lambda req: req.method == "POST")
    behind_started = time.monotonic()
    for i, sku in enumerate(skus[:4]):
        stack.ok(
            stack.http.post(
                "/v1/adjustments",
                json={"location": "WH1", "sku": sku, "delta": -(i + 1), "reason": "shrink"},
            )
        )
        expected[sku] -= i + 1
    eventually(lambda: pusher_status(f"woocommerce:{STORE}") == "behind", 15, "/ready: shop behind")
    ready = stack.ready()
    assert ready["status"] == "degraded"
    shop = ready["checks"]["pushers"][f"woocommerce:{STORE}"]
    assert shop["channel"] == CHANNEL and shop["seconds_behind"] > 1, shop
    eventually(
        lambda: "(woocommerce:shop) is behind" in stack.logs["api"].read_text(errors="replace"),
        5,
        "the API's warning about the channel falling behind",
    )
    text = stack.metrics_until(
        lambda t: metric(t, "atp_push_retries_total", **shop_labels) >= 4, "retries"
    )
    assert metric(text, "atp_push_pending_skus", **shop_labels) >= 1
    assert metric(text, "atp_push_requests_total", status="500", **shop_labels) >= 1
    assert samples(text, "atp_push_queue_depth", **shop_labels)
    assert stack.store_stock(skus[:4]) == {sku: 20 for sku in skus[:4]}
    delayed_before = metric(text, "atp_push_delay_seconds_count", **shop_labels)
    time.sleep(max(0.0, behind_started + 4 - time.monotonic()))

    # The store recovers: the pending figures go through, the channel is ok again.
    stack.wc.faults.clear()
    stack.wait_converged(expected, 30, "the store caught up after the 500s")
    eventually(lambda: pusher_status(f"woocommerce:{STORE}") == "ok", 10, "/ready: shop ok again")
    # The four late figures are in the histogram, each more than 4 s after its event.
    text = stack.metrics_until(
        lambda t: metric(t, "atp_push_delay_seconds_count", **shop_labels) >= delayed_before + 4,
        "the late figures' delays",
    )
    over_4s = metric(text, "atp_push_delay_seconds_count", **shop_labels) - metric(
        text, "atp_push_delay_seconds_bucket", le="2.5", **shop_labels
    )
    assert over_4s >= 4, text

    # c. The product is created in the store; the parked message is replayed and goes through.
    pid = stack.wc.add_product("GHOST", stock=0)
    assert pid
    replay = atp("dlq", "replay", QUEUE, env=stack.env)
    assert f"moved {dead_letters} message" in replay.stdout, replay.stdout
    stack.wait_converged({**expected, "GHOST": 9}, 20, "GHOST written after the replay")
    assert stack.queues() == (0, 0)

    # The stopped pusher: down once silent for 30 s (pushstatus.DOWN_SECONDS).
    assert pusher_status("woocommerce:outlet") in ("ok", "down")
    remaining = outlet_stopped + 31 - time.monotonic()
    eventually(
        lambda: pusher_status("woocommerce:outlet") == "down",
        max(remaining, 0) + 10,
        "/ready: outlet down",
        0.5,
    )
    ready = stack.ready()
    assert ready["status"] == "degraded"
    assert ready["checks"]["pushers"][f"woocommerce:{STORE}"]["status"] == "ok"
    assert "(woocommerce:outlet) is down" in stack.logs["api"].read_text(errors="replace")
