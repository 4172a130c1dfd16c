"""Locust scenarios for peak retail traffic against a running atp service.

    ATP_TOKEN=<admin token> locust -f loadtests/locustfile.py --headless \\
        -u 20 -r 10 -t 30s --host http://127.0.0.1:8000 --csv lt/run --html lt/run.html

`--csv PREFIX` writes PREFIX_stats.csv (one row per request name, the INVARIANT rows
included), PREFIX_failures.csv and the history; `--html FILE` writes the report page. Both
are optional; without them the same table is printed at the end.

The token needs every scope (an admin token): the test start seeds its own locations,
channels and catalogue, under a run prefix (ATP_LT_RUN, random by default; set it when
running Locust distributed so every worker uses the same one). Sizes: ATP_LT_SKUS (500
catalogue SKUs), ATP_LT_HOT_STOCK (60 units of the flash-sale SKU: the run above sells them
out within about 20 s, so the sold-out path is exercised).

User classes (weights in brackets):
- FlashSaleShopper [5]: reserves the one hot SKU, then after a think time commits the
  reservation as an order (75%) or abandons the cart and releases it. A 409
  insufficient-stock is an expected outcome once it sells out, reported separately
  (request type OUTCOME, "flash sale: sold out (409)").
- StorefrontBrowser [10]: availability reads, single SKU and category pages of 20 SKUs.
- CatalogueSync [1]: the WMS/ERP pushing cycle counts and receipts of 100 lines.
- ReturnsDesk [2]: a return surge: orders placed and shipped, then returned (mostly
  restocked, some damaged).
- MarketplaceImporter [2]: marketplace order imports, 10 orders at once, some canceled.

The verdict: when the run stops, the invariants are checked against the service and each is
reported as a row of Locust's statistics with request type INVARIANT (a failure when it is
violated, so it shows in the CSV, the HTML report and the exit code): "no oversell" (the hot
SKU never promised more than it had), "nothing negative" (no figure of the hot SKU or of 50
catalogue SKUs below 0), "every 201 held or allocated" (each reservation answered 201 is
still held, committed as an order, or released by this run; local runs only, the workers of
a distributed run keep their own). The last line printed is "invariants hold" or what broke.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

import gevent
import requests
from locust import HttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

TOKEN = os.environ.get("ATP_TOKEN", "")
RUN = os.environ.get("ATP_LT_RUN") or uuid.uuid4().hex[:6]
SKU_COUNT = int(os.environ.get("ATP_LT_SKUS", "500"))
HOT_STOCK = int(os.environ.get("ATP_LT_HOT_STOCK", "60"))

DC = f"LT-{RUN}-DC"
STORE = f"LT-{RUN}-ST1"
WEB = f"LT-{RUN}-WEB"
POS = f"LT-{RUN}-POS"
HOT = f"LT-{RUN}-HOT"
CATALOGUE = [f"LT-{RUN}-{i:05d}" for i in range(SKU_COUNT)]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOLD_OUT = "flash sale: sold out (409)"


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def some_skus(n: int) -> list[str]:
    return random.sample(CATALOGUE, min(n, len(CATALOGUE)))


@events.test_start.add_listener
def seed(environment: Environment, **_: Any) -> None:
    """Locations, channels and stock for this run (on the master / the local runner)."""
    if not TOKEN:
        raise SystemExit("set ATP_TOKEN to an admin token of the service under test")
    host = (environment.host or "").rstrip("/")
    with requests.Session() as s:
        s.headers.update(AUTH)

        def ok(r: requests.Response) -> None:
            if r.status_code not in (200, 201):
                raise SystemExit(f"seeding failed: {r.request.method} {r.url}: {r.text}")

        ok(s.put(f"{host}/v1/locations/{DC}", json={"name": "DC", "kind": "warehouse"}))
        ok(s.put(f"{host}/v1/locations/{STORE}", json={"name": "Store 1", "kind": "store"}))
        ok(s.put(f"{host}/v1/channels/{WEB}", json={"locations": [DC, STORE], "buffer": 2}))
        ok(s.put(f"{host}/v1/channels/{POS}", json={"locations": [STORE, DC]}))
        ok(s.put(f"{host}/v1/safety-stock", json={"sku": HOT, "location": STORE, "quantity": 5}))
        for i in range(0, len(CATALOGUE), 100):
            chunk = CATALOGUE[i : i + 100]
            for loc, qty in ((DC, 10_000), (STORE, 50)):
                lines = [{"sku": sku, "quantity": qty} for sku in chunk]
                body = {"location": loc, "lines": lines, "reference": f"seed-{i}"}
                ok(s.post(f"{host}/v1/receipts", json=body, headers=key()))
        body = {"location": DC, "lines": [{"sku": HOT, "quantity": HOT_STOCK}], "reference": "drop"}
        ok(s.post(f"{host}/v1/receipts", json=body, headers=key()))
    print(f"atp locust run {RUN}: {len(CATALOGUE)} SKUs seeded, hot SKU {HOT} x {HOT_STOCK}")


RESERVED: dict[str, int] = {}
"""Reservation id -> units, for every reservation of this process answered 201."""
SETTLED: dict[str, str] = {}
"""Reservation id -> "committed" or "released", as answered to this process."""


@events.test_stop.add_listener
def check_invariants(environment: Environment, **_: Any) -> None:
    """The verdict of the run, as INVARIANT rows of the statistics (see the module doc)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    host = (environment.host or "").rstrip("/")
    broken: list[str] = []
    with requests.Session() as s:
        s.headers.update(AUTH)

        def item(sku: str) -> dict[str, Any]:
            r = s.get(f"{host}/v1/items/{sku}", timeout=30)
            r.raise_for_status()
            figures: dict[str, Any] = r.json()
            return figures

        started = time.perf_counter()
        hot = item(HOT)
        oversold = 0
        for loc in hot["locations"]:
            promised = loc["allocated"] + loc["held"] + loc["damaged"] + loc["safety_stock"]
            if loc["allocated"] + loc["held"]:
                oversold += max(0, promised - loc["on_hand"])
            print(
                f"{HOT} at {loc['location']}: on_hand {loc['on_hand']}, allocated "
                f"{loc['allocated']}, held {loc['held']}, sellable {loc['sellable']}"
            )
        verdict(
            environment,
            "no oversell",
            started,
            oversold and f"{HOT} promised {oversold} unit(s) more than it had",
            broken,
        )

        started = time.perf_counter()
        negative = [
            f"{doc['sku']} {where} {name} {value}"
            for doc in [hot, *(item(sku) for sku in CATALOGUE[:50])]
            for where, figures in [
                *((loc["location"], loc) for loc in doc["locations"]),
                *((ch["channel"], {"available": ch["available"]}) for ch in doc["channels"]),
            ]
            for name, value in figures.items()
            if isinstance(value, int) and not isinstance(value, bool) and value < 0
        ]
        verdict(environment, "nothing negative", started, ", ".join(negative[:5]), broken)

        started = time.perf_counter()
        unmatched = []
        kept = 0
        for reservation_id, units in RESERVED.items():
            r = s.get(f"{host}/v1/reservations/{reservation_id}", timeout=30)
            status = r.json().get("status") if r.status_code == 200 else f"HTTP {r.status_code}"
            expected = SETTLED.get(reservation_id)
            if status not in ("held", "committed", "released") or (
                expected is not None and status != expected
            ):
                unmatched.append(f"{reservation_id}: {status}")
            elif status != "released":
                kept += units
        held_or_allocated = sum(loc["allocated"] + loc["held"] for loc in hot["locations"])
        if kept > held_or_allocated:
            unmatched.append(f"{kept} unit(s) answered 201 but {held_or_allocated} held/allocated")
        if isinstance(environment.runner, MasterRunner):
            print("every 201 held or allocated: not checked (the workers keep their 201s)")
        else:
            problem = "; ".join(unmatched[:5])
            verdict(environment, "every 201 held or allocated", started, problem, broken)
    sold_out = environment.stats.get(SOLD_OUT, "OUTCOME").num_requests
    print(f"{len(RESERVED)} reservation(s) answered 201; sold out {sold_out} time(s)")
    if broken:
        print("INVARIANTS BROKEN: " + "; ".join(broken))
        environment.process_exit_code = 1
    else:
        print("invariants hold")
    if environment.parsed_options is not None and environment.parsed_options.csv_prefix:
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.5)  # let the CSV writer write these rows


def verdict(
    environment: Environment, name: str, started: float, problem: str | int, broken: list[str]
) -> None:
    """One INVARIANT row: a success, or a failure carrying `problem`."""
    if problem:
        broken.append(f"{name}: {problem}")
    environment.events.request.fire(
        request_type="INVARIANT",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=AssertionError(str(problem)) if problem else None,
        context={},
    )


def outcome(environment: Environment, name: str, started: float) -> None:
    """Counts an expected business outcome (e.g. sold out) as its own stats line."""
    environment.events.request.fire(
        request_type="OUTCOME",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=None,
        context={},
    )


class AtpUser(HttpUser):
    abstract = True

    def on_start(self) -> None:
        self.client.headers.update(AUTH)

    def post(self, path: str, body: dict[str, Any], name: str, accept: tuple[int, ...]) -> Any:
        """POST with a fresh Idempotency-Key; `accept` statuses count as successes."""
        with self.client.post(path, json=body, headers=key(), name=name, catch_response=True) as r:
            if r.status_code in accept:
                r.success()
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            return r


class FlashSaleShopper(AtpUser):
    """Many shoppers after one hot SKU: reserve, think, then buy or abandon the cart."""

    weight = 5
    wait_time = between(0.1, 0.5)

    @task
    def checkout(self) -> None:
        started = time.perf_counter()
        body = {"channel": WEB, "lines": [{"sku": HOT, "quantity": random.choice((1, 1, 2))}]}
        r = self.post("/v1/reservations", body, "flash sale: reserve", (201, 409))
        if r.status_code == 409:
            outcome(self.environment, SOLD_OUT, started)
            return
        if r.status_code != 201:
            return
        reservation_id = r.json()["reservation_id"]
        RESERVED[reservation_id] = body["lines"][0]["quantity"]
        gevent.sleep(random.uniform(0.2, 1.5))  # paying, or wandering off
        if random.random() < 0.75:
            r = self.post(
                f"/v1/reservations/{reservation_id}/commit",
                {"order_id": f"{RUN}-web-{uuid.uuid4().hex[:12]}"},
                "flash sale: commit",
                (201,),
            )
            if r.status_code == 201:
                SETTLED[reservation_id] = "committed"
        else:
            r = self.post(
                f"/v1/reservations/{reservation_id}/release", {}, "flash sale: release", (200,)
            )
            if r.status_code == 200:
                SETTLED[reservation_id] = "released"


class StorefrontBrowser(AtpUser):
    """Product and category pages asking for availability."""

    weight = 10
    wait_time = between(0.05, 0.3)

    @task(6)
    def product_page(self) -> None:
        sku = random.choice(CATALOGUE)
        self.client.get(f"/v1/availability/{WEB}/{sku}", name="storefront: availability 1")

    @task(3)
    def category_page(self) -> None:
        params = [("sku", sku) for sku in some_skus(20)]
        self.client.get(f"/v1/availability/{WEB}", params=params, name="storefront: 20 SKUs")

    @task(2)
    def hot_product_page(self) -> None:
        self.client.get(f"/v1/availability/{WEB}/{HOT}", name="storefront: hot SKU")

    @task(1)
    def item_detail(self) -> None:
        self.client.get(f"/v1/items/{random.choice(CATALOGUE)}", name="storefront: item figures")


class CatalogueSync(AtpUser):
    """WMS/ERP bulk updates: cycle counts and receipts of 100 lines each."""

    weight = 1
    wait_time = between(1, 3)

    @task(2)
    def cycle_count(self) -> None:
        lines = [{"sku": sku, "counted": random.randint(9_000, 11_000)} for sku in some_skus(100)]
        self.post("/v1/counts", {"location": DC, "lines": lines}, "bulk: count 100 lines", (201,))

    @task(1)
    def receipt(self) -> None:
        lines = [{"sku": sku, "quantity": random.randint(1, 20)} for sku in some_skus(100)]
        body = {"location": STORE, "lines": lines, "reference": f"ASN-{uuid.uuid4().hex[:8]}"}
        self.post("/v1/receipts", body, "bulk: receipt 100 lines", (201,))


class ReturnsDesk(AtpUser):
    """After a sale, returns pour in: each order is placed, shipped, then returned."""

    weight = 2
    wait_time = between(0.2, 1.0)

    @task
    def order_ship_return(self) -> None:
        order_id = f"{RUN}-ret-{uuid.uuid4().hex[:12]}"
        lines = [{"sku": sku, "quantity": random.randint(1, 3)} for sku in some_skus(2)]
        body = {"order_id": order_id, "channel": WEB, "lines": lines}
        r = self.post("/v1/orders", body, "returns: place order", (201,))
        if r.status_code != 201:
            return
        # WEB sources from the DC first, where the catalogue has plenty: ship from there.
        shipment = {"shipment_id": f"S-{order_id}", "location": DC, "lines": lines}
        r = self.post(f"/v1/orders/{order_id}/shipments", shipment, "returns: ship", (201,))
        if r.status_code != 201:
            return
        returned = [
            {
                "sku": line["sku"],
                "quantity": line["quantity"],
                "disposition": "damaged" if random.random() < 0.2 else "restock",
            }
            for line in lines
        ]
        body = {"return_id": f"R-{order_id}", "location": STORE, "lines": returned}
        self.post(f"/v1/orders/{order_id}/returns", body, "returns: return", (201,))


class MarketplaceImporter(AtpUser):
    """Marketplace and POS order imports arriving together, some canceled later."""

    weight = 2
    wait_time = between(0.5, 2.0)

    @task
    def import_batch(self) -> None:
        def one(_: int) -> None:
            order_id = f"{RUN}-mkt-{uuid.uuid4().hex[:12]}"
            n = random.randint(1, 5)
            lines = [{"sku": sku, "quantity": random.randint(1, 4)} for sku in some_skus(n)]
            channel = random.choice((WEB, POS))
            body = {"order_id": order_id, "channel": channel, "lines": lines}
            r = self.post("/v1/orders", body, "import: order", (201, 409))
            if r.status_code == 201 and random.random() < 0.1:
                self.post(f"/v1/orders/{order_id}/cancel", {}, "import: cancel", (200,))

        jobs = [gevent.spawn(one, i) for i in range(10)]
        gevent.joinall(jobs)
