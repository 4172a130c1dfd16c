"""QA findings: each story fails on the branch it was found on (see the QA report).

Over HTTP against the real service on PostgreSQL (embedded webhook application: no RabbitMQ),
with the shared `server` fixture. Each docstring states the invariant the story keeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.route_helpers import Env, chan, created, loc, make_env
from tests.support import physical
from tests.support.pg import fresh_database
from tests.support.physical import item_at_head, register_store
from tests.support.physical import order_payload as order
from tests.support.read_stack import ROOT, Stack
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import ADMIN_TOKEN, Server, running_service, service_env

pytestmark = pytest.mark.e2e

SECRET = "whsec-qa"


@pytest.fixture
def env(server: Server, unique: str) -> Iterator[Env]:
    """Warehouse WH, channel `web` sourcing it, and a WooCommerce store `shop` selling it."""
    with server.client() as c:
        env = make_env(c, unique, st_kind="warehouse")
        register_store(c, store(env), env.web, SECRET)
        yield env


def store(env: Env) -> str:
    return f"{env.prefix}-shop"


def post_webhook(env: Env, payload: Any, topic: str = "order.updated") -> httpx.Response:
    """A correctly signed WooCommerce delivery of `payload` (applied before the answer)."""
    return physical.post_webhook(env.client, store(env), payload, topic, SECRET)


def allocated_at_wh(env: Env, sku: str) -> int:
    return int(loc(item_at_head(env.client, sku), env.wh)["allocated"])


# --- 1. A deleted (or trashed) WooCommerce order keeps its stock forever --------------------


def test_a_deleted_woocommerce_order_releases_its_units(env: Env) -> None:
    """WooCommerce's `order.deleted` webhook (sent when an order is trashed or deleted) carries
    only `{"id": N}`. Invariant: an order the store no longer has holds no stock in atp, and a
    correctly signed delivery WooCommerce sends is never refused (WooCommerce does not retry
    and disables a webhook after repeated failures; the poller's `GET /orders` never lists a
    trashed order, so nothing else ever releases these units)."""
    sku = env.sku()
    env.receive(env.wh, A=10)
    created(post_webhook(env, order(4101, "processing", "2026-11-30T10:00:00", **{sku: 3})), 200)
    assert allocated_at_wh(env, sku) == 3

    r = post_webhook(env, {"id": 4101}, topic="order.deleted")
    assert r.status_code < 300, f"a signed order.deleted delivery was refused: {r.text}"
    assert allocated_at_wh(env, sku) == 0
    assert chan(item_at_head(env.client, sku), env.web)["available"] == 10


# --- 2. Snapshot times are compared as strings ----------------------------------------------


def test_a_newer_snapshot_is_applied_whatever_iso_form_its_time_takes(env: Env) -> None:
    """`date_modified_gmt` is accepted in any ISO 8601 form Python parses, but the snapshot
    rule compares the raw strings. Invariant: a snapshot strictly newer in time than the last
    applied one is applied: `2026-11-30 11:00:00` (space separator) is an hour after
    `2026-11-30T10:00:00`, so the cancellation releases the 2 units."""
    sku = env.sku()
    env.receive(env.wh, A=10)
    created(post_webhook(env, order(4201, "processing", "2026-11-30T10:00:00", **{sku: 2})), 200)
    assert allocated_at_wh(env, sku) == 2
    created(post_webhook(env, order(4201, "cancelled", "2026-11-30 11:00:00", **{sku: 2})), 200)
    assert allocated_at_wh(env, sku) == 0, "a newer cancellation was dropped as older"


def test_an_older_snapshot_with_a_utc_offset_is_dropped(env: Env) -> None:
    """Invariant: a snapshot strictly older in time than the last applied one is dropped.
    `2026-11-30T12:00:00+05:00` is 07:00 UTC, three hours before the applied
    `2026-11-30T10:00:00`; today it compares as newer and cancels the live sale."""
    sku = env.sku()
    env.receive(env.wh, A=10)
    created(post_webhook(env, order(4301, "processing", "2026-11-30T10:00:00", **{sku: 2})), 200)
    created(
        post_webhook(env, order(4301, "cancelled", "2026-11-30T12:00:00+05:00", **{sku: 2})), 200
    )
    assert allocated_at_wh(env, sku) == 2, "an older snapshot cancelled the sale"


# --- 3. Webhook lines escape the documented line bound -------------------------------------


def test_webhook_lines_of_one_sku_stay_within_the_line_bound(env: Env) -> None:
    """Line quantities are bounded 1..1,000,000 (README "Bounds"); each webhook line is checked
    alone, then lines of one SKU are summed. Invariant: no order line atp records exceeds
    1,000,000 units (three lines of 1,000,000 of one SKU must not become one line of 3,000,000)."""
    sku = env.sku()
    payload = order(4401, "processing", "2026-11-30T10:00:00")
    payload["line_items"] = [{"sku": sku, "quantity": 1_000_000}] * 3
    post_webhook(env, payload)
    r = env.client.get(f"/v1/orders/woocommerce:{store(env)}:4401")
    if r.status_code == 200:
        for line in r.json()["lines"]:
            assert line["quantity"] <= 1_000_000, line


# --- 4. A 4xx names the field ---------------------------------------------------------------


def test_a_signed_webhook_without_status_names_the_missing_field(env: Env) -> None:
    """Every 4xx for a client's input names the field at fault. A signed order delivery
    without `status` is refused with `field: "body"` instead of `status`."""
    r = post_webhook(env, {"id": 4501, "line_items": []})
    assert 400 <= r.status_code < 500, r.text
    assert r.json().get("field") == "status", r.json()


# --- 5. Lost read-model documents answer a confident 0 ----------------------------------------


@pytest.fixture
def redis_stack() -> Iterator[Stack]:
    """`atp serve` and `atp project` on a fresh PostgreSQL and a Redis prefix of their own."""
    with fresh_database() as url, prefixed(0, "qa") as (r, prefix):
        env = service_env(url, ATP_REDIS_URL=redis_url(0), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        with running_service(env) as server:
            s = Stack(server, r, prefix, env, url)
            s.start_projector()
            try:
                yield s
            finally:
                s.stop_projector()


def test_a_sku_whose_documents_were_evicted_is_never_answered_as_zero(
    redis_stack: Stack,
) -> None:
    """Redis may lose some keys but not others (eviction under `maxmemory` with an
    `allkeys-*` policy, a partial restore, a non-atomic flush of a prefix). Invariant: a read
    never answers a figure the ledger does not hold: with the SKU's `ats`/`item` documents
    gone but the model's meta (and the SKU in `skus`) still there, a SKU with 8 sellable for
    the channel must answer 503 `read-model-rebuilding` (or 8), never `available: 0,
    out_of_stock` while `/ready` says ready. Today it answers 0 until the SKU's next write."""
    s = redis_stack
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=s.server.url, headers=headers, timeout=30) as c:
        created(c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"}), 200)
        created(c.put("/v1/channels/web", json={"locations": ["WH1"]}), 200)
        body = {"location": "WH1", "lines": [{"sku": "EV1", "quantity": 8}]}
        r = c.post("/v1/receipts", json=body, headers={"Idempotency-Key": "qa-r1"})
        created(r)
        position = int(r.headers["atp-position"])
        s.wait_caught_up()
        before = created(c.get("/v1/availability/web/EV1", params={"min_position": position}), 200)
        assert before["available"] == 8

        s.redis.delete(f"{s.prefix}:{{EV1}}:ats", f"{s.prefix}:{{EV1}}:item")
        for _ in range(20):
            r = c.get("/v1/availability/web/EV1")
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                assert r.json()["available"] == 8, f"a lost document answered {r.json()}"
            r = c.get("/v1/items/EV1")
            if r.status_code == 200:
                assert chan(r.json(), "web")["available"] == 8, r.json()


# --- 6. A sale already made leaves shelf units idle behind the channel's buffer --------------


@pytest.fixture
def buffered(server: Server, unique: str) -> Iterator[Env]:
    """Warehouse WH, channel `web` over it with a buffer of 2, WooCommerce store `shop`."""
    with server.client() as c:
        env = make_env(c, unique, st_kind="warehouse", sources=("WH",), buffer=2)
        register_store(c, store(env), env.web, SECRET)
        yield env


def test_a_webhook_sale_takes_every_unit_on_the_shelf_before_a_shortfall(
    buffered: Env,
) -> None:
    """3 on hand at WH, `web` (buffer 2) sells 5 through WooCommerce. The buffer is a selling
    margin, not stock kept from a sale already made. Invariant: an open shortfall and sellable
    units the order's channel could take never coexist at the same location; the warehouse can
    ship the 3 units it has for that order. Today: 1 allocated, shortfall 4, 2 units
    `sellable` that no channel sells, and shipping 3 is 409 "only 1 unit(s) are allocated"."""
    env = buffered
    sku = env.sku()
    env.receive(env.wh, A=3)
    created(post_webhook(env, order(4601, "processing", "2026-11-30T10:00:00", **{sku: 5})), 200)
    item = item_at_head(env.client, sku)
    wh = loc(item, env.wh)
    assert (wh["allocated"], item["shortfall"]) == (3, 2), (wh, item["shortfall"])
    body = {"shipment_id": "s1", "location": env.wh, "lines": [{"sku": sku, "quantity": 3}]}
    r = env.client.post(f"/v1/orders/woocommerce:{store(env)}:4601/shipments", json=body)
    created(r)


# --- 7. Units freed by a cancellation are sold again while a sale is still owed --------------


def test_units_freed_by_a_cancellation_fill_open_shortfalls_first(env: Env) -> None:
    """3 on hand; WooCommerce order 1 takes 3, order 2 (3 more) is a shortfall of 3; order 1
    is cancelled. Invariant (README "Shortfalls are filled first", issue 7 §1f's kind: owed
    units are never sold twice): units that become free at a location while a sale through
    a channel sourcing from it is still owed cover that sale before they become available.
    Today the 3 units go back on sale (`web` shows 3) while order 2 stays unallocated."""
    sku = env.sku()
    env.receive(env.wh, A=3)
    created(post_webhook(env, order(4701, "processing", "2026-11-30T10:00:00", **{sku: 3})), 200)
    created(post_webhook(env, order(4702, "processing", "2026-11-30T10:00:01", **{sku: 3})), 200)
    assert item_at_head(env.client, sku)["shortfall"] == 3
    created(post_webhook(env, order(4701, "cancelled", "2026-11-30T10:05:00", **{sku: 3})), 200)
    item = item_at_head(env.client, sku)
    owed = created(env.client.get(f"/v1/orders/woocommerce:{store(env)}:4702"), 200)
    assert owed["lines"][0]["allocated"] == 3, owed
    assert item["shortfall"] == 0
    assert chan(item, env.web)["available"] == 0


# --- 8. A redelivered webhook re-opens a cancelled sale --------------------------------------


def test_a_redelivered_webhook_does_not_undo_a_later_one(env: Env) -> None:
    """Deliveries d1 (`processing`) and d2 (`cancelled`) of order 4801 in the same second, then
    d1 again (same `X-WC-Webhook-Delivery-ID`, same body: a RabbitMQ redelivery, a proxy
    retry). Invariant: the same delivery applied twice changes nothing the second time; the
    cancelled sale holds no stock. Today d1's second arrival counts as "another state at the
    same second" and re-allocates 2 units for a cancelled order (until the next poll)."""
    sku = env.sku()
    env.receive(env.wh, A=10)
    first = order(4801, "processing", "2026-11-30T10:00:00", **{sku: 2})
    second = order(4801, "cancelled", "2026-11-30T10:00:00", **{sku: 2})

    def send(payload: dict[str, Any], delivery: str) -> None:
        r = physical.post_webhook(
            env.client, store(env), payload, "order.updated", SECRET, delivery=delivery
        )
        created(r, 200)

    send(first, "9001")
    send(second, "9002")
    assert allocated_at_wh(env, sku) == 0
    send(first, "9001")
    assert allocated_at_wh(env, sku) == 0, "a redelivered delivery re-opened a cancelled sale"


# --- 9. One worker (the default, `make run`) has no request metrics -------------------------


def test_a_single_worker_service_counts_every_answer_in_metrics(tmp_path: Any) -> None:
    """README "Operations": `/metrics` counts every answer by status
    (`atp_http_request_duration_seconds{method,route,status}`), errors, stock exceptions and
    the writer. Invariant: that holds for any worker count. With `ATP_WORKERS=1` (the default,
    and what `make run` starts), `/metrics` has none of them: only the projector gauges."""
    env = service_env(None, data_dir=str(tmp_path / "data"))
    with running_service(env, workers=1) as server, server.client() as c:
        assert c.get("/v1/availability/nope/X").status_code == 404
        text = c.get("/metrics").text
        samples = [line for line in text.splitlines() if not line.startswith("#")]
        counted = [s for s in samples if s.startswith("atp_http_request_duration_seconds_count")]
        assert any('status="404"' in s for s in counted), samples
        assert any(s.startswith("atp_writer_jobs_total") for s in samples), samples


# --- 10. A malformed query value is a 404 without a field ----------------------------------


def test_a_malformed_sku_query_value_is_422_naming_the_field(env: Env) -> None:
    """Input is decoded strictly and a 4xx names the field at fault (README "Errors").
    `GET /v1/availability/{channel}?sku=A,B` (the comma-joined form many clients send) or
    `?sku=a%0A` answers 404 "not a valid code" with no `field`, as if the SKU were unknown
    (an unknown valid SKU answers 200 with 0). Invariant: 422 with `field: "sku"`."""
    for value in (f"{env.sku()},{env.sku('B')}", "a\n"):
        r = env.client.get(f"/v1/availability/{env.web}", params={"sku": value})
        assert r.status_code == 422, r.text
        assert r.json().get("field") == "sku", r.json()


def test_units_of_an_expired_hold_fill_open_shortfalls_first(env: Env) -> None:
    """The same kind as the cancellation above, for a checkout hold: 2 on hand, all held at
    checkout (ttl 1 s); a WooCommerce sale of 2 is then a shortfall of 2; the hold expires.
    Invariant: the freed units cover the owed sale; they never go back on sale while it is
    owed. Today `web` shows 2 available and the shortfall stays 2."""
    sku = env.sku()
    env.receive(env.wh, A=2)
    created(env.reserve(ttl=1, A=2))
    created(post_webhook(env, order(4901, "processing", "2026-11-30T10:00:00", **{sku: 2})), 200)
    assert item_at_head(env.client, sku)["shortfall"] == 2
    time.sleep(3)
    item = item_at_head(env.client, sku)
    assert (item["shortfall"], chan(item, env.web)["available"]) == (0, 0), item
