"""Locust scenarios for peak retail traffic against a running atp service.

    ATP_TOKEN=<admin token> locust -f loadtests/locustfile.py --headless \\
        -u 50 -r 10 -t 2m --host http://127.0.0.1:8000

The token needs every scope (an admin token): the test start seeds its own locations,
channels and catalogue, under a run prefix (ATP_LT_RUN, random by default; set it when
running Locust distributed so every worker uses the same one). Sizes: ATP_LT_SKUS (500
catalogue SKUs), ATP_LT_HOT_STOCK (300 units of the flash-sale SKU).

User classes (weights in brackets):
- FlashSaleShopper [5]: reserves the one hot SKU, then after a think time commits the
  reservation as an order (75%) or abandons the cart and releases it. A 409
  insufficient-stock is an expected outcome once it sells out, reported separately.
- StorefrontBrowser [10]: availability reads, single SKU and category pages of 20 SKUs.
- CatalogueSync [1]: the WMS/ERP pushing cycle counts and receipts of 100 lines.
- ReturnsDesk [2]: a return surge: orders placed and shipped, then returned (mostly
  restocked, some damaged).
- MarketplaceImporter [2]: marketplace order imports, 10 orders at once, some canceled.
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

TOKEN = os.environ.get("ATP_TOKEN", "")
RUN = os.environ.get("ATP_LT_RUN") or uuid.uuid4().hex[:6]
SKU_COUNT = int(os.environ.get("ATP_LT_SKUS", "500"))
HOT_STOCK = int(os.environ.get("ATP_LT_HOT_STOCK", "300"))

DC = f"LT-{RUN}-DC"
STORE = f"LT-{RUN}-ST1"
WEB = f"LT-{RUN}-WEB"
POS = f"LT-{RUN}-POS"
HOT = f"LT-{RUN}-HOT"
CATALOGUE = [f"LT-{RUN}-{i:05d}" for i in range(SKU_COUNT)]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


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


@events.test_stop.add_listener
def check_hot_sku(environment: Environment, **_: Any) -> None:
    """The invariant after the run: the hot SKU never promised more than was sellable."""
    host = (environment.host or "").rstrip("/")
    r = requests.get(f"{host}/v1/items/{HOT}", headers=AUTH, timeout=30)
    if r.status_code != 200:
        print(f"could not read {HOT}: {r.status_code}")
        return
    oversold = 0
    for loc in r.json()["locations"]:
        promised = loc["allocated"] + loc["held"] + loc["damaged"] + loc["safety_stock"]
        if loc["allocated"] + loc["held"]:
            oversold += max(0, promised - loc["on_hand"])
        print(
            f"{HOT} at {loc['location']}: on_hand {loc['on_hand']}, allocated "
            f"{loc['allocated']}, held {loc['held']}, sellable {loc['sellable']}"
        )
    if oversold:
        print(f"OVERSELL: {HOT} promised {oversold} unit(s) more than it had")
        environment.process_exit_code = 1


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
            outcome(self.environment, "flash sale: sold out (409)", started)
            return
        if r.status_code != 201:
            return
        reservation_id = r.json()["reservation_id"]
        gevent.sleep(random.uniform(0.2, 1.5))  # paying, or wandering off
        if random.random() < 0.75:
            self.post(
                f"/v1/reservations/{reservation_id}/commit",
                {"order_id": f"{RUN}-web-{uuid.uuid4().hex[:12]}"},
                "flash sale: commit",
                (201,),
            )
        else:
            self.post(
                f"/v1/reservations/{reservation_id}/release", {}, "flash sale: release", (200,)
            )


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
