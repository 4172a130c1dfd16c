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

import contextlib
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.channel_stack import (
    CHANNEL,
    QUEUE,
    STORE,
    Catalogue,
    ChannelStack,
    catalogue,
    eventually,
    metric,
    samples,
)
from tests.support.fakes import FakeWooCommerce
from tests.support.server import (
    ADMIN_TOKEN,
    atp,
)

pytestmark = pytest.mark.e2e


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

    shop = {"kind": "woocommerce", "store": STORE, "channel": CHANNEL}
    # The pusher reports its metrics every second or so: wait for the report with the writes.
    text = stack.metrics_until(
        lambda t: metric(t, "atp_push_delay_seconds_count", **shop) >= 1, "the delay"
    )
    assert metric(text, "atp_push_dead_letters_total", **shop) == 0

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
