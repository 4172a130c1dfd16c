"""The fakes of WooCommerce, Amazon SP-API and eBay behave as documented
(tests/support/fakes, docs in their module docstrings): contract, limits, errors, webhooks
and every fault knob, checked over real HTTP with httpx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.fakes import (
    FakeAmazon,
    FakeEbay,
    FakeServer,
    FakeWooCommerce,
    RecordedRequest,
    Response,
    oauth1_signature,
    wp_json_encode,
)

pytestmark = pytest.mark.integration

API = "/wp-json/wc/v3"
KEY, SECRET = "ck_test", "cs_test"
_TLS = ssl.create_default_context()  # shared: building one per client costs ~50 ms


def new_client(**kw: Any) -> httpx.Client:
    return httpx.Client(verify=_TLS, timeout=10, **kw)


def get(url: str, **kw: Any) -> httpx.Response:
    with new_client() as c:
        return c.get(url, **kw)


def put(url: str, **kw: Any) -> httpx.Response:
    with new_client() as c:
        return c.put(url, **kw)


def post(url: str, **kw: Any) -> httpx.Response:
    with new_client() as c:
        return c.post(url, **kw)


def patch(url: str, **kw: Any) -> httpx.Response:
    with new_client() as c:
        return c.patch(url, **kw)


class Receiver(FakeServer):
    """A tiny webhook receiver: records the raw bytes of every POST, answers `status`."""

    name = "receiver"

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.got = threading.Event()

    def handle(self, request: RecordedRequest) -> Response:
        self.got.set()
        return Response(self.status, b"ok", {"Content-Type": "text/plain"})

    def wait(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.requests("POST")
            if len(received) >= count:
                return received
            time.sleep(0.01)
        raise AssertionError(f"expected {count} webhook(s), got {len(self.requests('POST'))}")


def verify(body: bytes, signature: str | None, secret: str) -> bool:
    """What a receiver must do: HMAC-SHA256 over the raw bytes, base64, constant-time."""
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return signature is not None and hmac.compare_digest(expected.decode(), signature)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def wc(receiver: Receiver) -> Iterator[FakeWooCommerce]:
    with FakeWooCommerce(KEY, SECRET, auth="basic", webhook_url=f"{receiver.url}/hooks/wc") as fake:
        yield fake


@pytest.fixture
def client(wc: FakeWooCommerce) -> Iterator[httpx.Client]:
    with new_client(base_url=f"{wc.url}{API}", auth=(KEY, SECRET)) as c:
        yield c


# =========================================================================================
# Shared machinery
# =========================================================================================
def test_fakes_start_on_free_ports_and_stop_cleanly() -> None:
    fakes = [FakeWooCommerce(), FakeAmazon(), FakeEbay()]
    with fakes[0] as a, fakes[1] as b, fakes[2] as c:
        ports = {a.port, b.port, c.port}
        assert len(ports) == 3
        for fake in (a, b, c):
            assert fake.url == f"http://127.0.0.1:{fake.port}"
        with new_client() as http:  # a pooled keep-alive connection must not outlive stop
            assert http.get(f"{a.url}{API}/products").status_code == 401
            port = a.port
            a.stop()
            with pytest.raises(httpx.TransportError):
                http.get(f"http://127.0.0.1:{port}{API}/products")
    for fake in fakes:
        assert not fake.running
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # nothing listens
        s.connect(("127.0.0.1", port))


def test_request_log_and_counters(wc: FakeWooCommerce, client: httpx.Client) -> None:
    pid = wc.add_product("LOG-1", 3)
    client.get("/products", params={"sku": "LOG-1"})
    client.put(f"/products/{pid}", json={"manage_stock": True, "stock_quantity": 2})
    client.put("/products/999999", json={"stock_quantity": 2})
    log = wc.requests()
    assert [(r.method, r.path) for r in log] == [
        ("GET", f"{API}/products"),
        ("PUT", f"{API}/products/{pid}"),
        ("PUT", f"{API}/products/999999"),
    ]
    assert log[0].query == {"sku": ["LOG-1"]} and log[0].param("sku") == "LOG-1"
    assert log[1].json() == {"manage_stock": True, "stock_quantity": 2}
    assert log[1].header("Content-Type") == "application/json"
    assert log[0].time <= log[1].time <= log[2].time <= time.time()
    assert [r.status for r in log] == [200, 200, 400]
    assert wc.request_count("PUT") == 2 and wc.request_count(path_prefix=f"{API}/products") == 3
    assert wc.status_counts() == {200: 2, 400: 1}
    assert wc.write_count == 1 and wc.writes("LOG-1")[0].after == 2
    wc.clear_requests()
    assert wc.requests() == []


def test_fakes_are_thread_safe_under_concurrent_writes(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    ids = [wc.add_product(f"TS-{n}", 0) for n in range(10)]

    def write(n: int) -> int:
        with new_client(base_url=f"{wc.url}{API}", auth=(KEY, SECRET)) as c:
            pid = ids[n % 10]
            body = {"manage_stock": True, "stock_quantity": n}
            return c.put(f"/products/{pid}", json=body).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(write, range(80))) == {200}
    assert wc.request_count("PUT") == 80 and wc.write_count == 80
    for n in range(10):  # each product holds one of the values written to it
        assert wc.stock_of(f"TS-{n}") in {m for m in range(80) if m % 10 == n}


# =========================================================================================
# WooCommerce: auth
# =========================================================================================
def test_wc_missing_or_wrong_credentials(wc: FakeWooCommerce) -> None:
    pid = wc.add_product("AUTH-1", 1)
    base = f"{wc.url}{API}"
    missing = get(f"{base}/products")
    assert missing.status_code == 401
    assert missing.json() == {
        "code": "woocommerce_rest_cannot_view",
        "message": "Sorry, you cannot list resources.",
        "data": {"status": 401},
    }
    wrong_secret = get(f"{base}/products", auth=(KEY, "nope"))
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["code"] == "woocommerce_rest_authentication_error"
    assert wrong_secret.json()["message"] == "Consumer secret is invalid."
    # An unknown key is not an error by itself: the request is just unauthenticated.
    unknown_key = put(f"{base}/products/{pid}", json={}, auth=("ck_other", "x"))
    assert (unknown_key.status_code, unknown_key.json()["code"]) == (
        401,
        "woocommerce_rest_cannot_edit",
    )
    batch = post(f"{base}/products/batch", json={"update": [{"id": pid}]})
    assert (batch.status_code, batch.json()["code"]) == (401, "woocommerce_rest_cannot_batch")
    # Keys in the query string work too (WooCommerce accepts them over HTTPS).
    query = get(f"{base}/products", params={"consumer_key": KEY, "consumer_secret": SECRET})
    assert query.status_code == 200
    assert wc.write_count == 0


def test_wc_read_only_key_gets_401_on_writes(wc: FakeWooCommerce) -> None:
    pid = wc.add_product("RO-1", 1)
    wc.add_key("ck_read", "cs_read", "read")
    with new_client(base_url=f"{wc.url}{API}", auth=("ck_read", "cs_read")) as ro:
        assert ro.get("/products", params={"sku": "RO-1"}).status_code == 200
        for response in (
            ro.put(f"/products/{pid}", json={"manage_stock": True, "stock_quantity": 9}),
            ro.post("/products/batch", json={"update": [{"id": pid, "stock_quantity": 9}]}),
        ):
            assert response.status_code == 401
            assert response.json()["code"] == "woocommerce_rest_authentication_error"
            assert "does not have write permissions" in response.json()["message"]
    assert wc.stock_of("RO-1") == 1


def _oauth_get(
    url: str, path: str, params: dict[str, str], secret: str = SECRET, **over: Any
) -> httpx.Response:
    oauth = {
        "oauth_consumer_key": KEY,
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": secrets.token_hex(16),
        "oauth_signature_method": "HMAC-SHA256",
        **over,
    }
    all_params = {**params, **oauth}
    method = all_params["oauth_signature_method"]
    all_params["oauth_signature"] = oauth1_signature(
        "GET", f"{url}{path}", all_params, secret, method
    )
    return get(f"{url}{path}", params=all_params)


def test_wc_oauth1_mode_is_plain_http_woocommerce() -> None:
    with FakeWooCommerce(KEY, SECRET, auth="oauth1") as wc:
        wc.add_product("OA-1", 4)
        path = f"{API}/products"
        ok = _oauth_get(wc.url, path, {"sku": "OA-1"})
        assert ok.status_code == 200 and ok.json()[0]["stock_quantity"] == 4
        # Basic is ignored over plain HTTP: the request is unauthenticated.
        basic = get(f"{wc.url}{path}", auth=(KEY, SECRET))
        assert (basic.status_code, basic.json()["code"]) == (401, "woocommerce_rest_cannot_view")
        replay = ok.request
        again = get(str(replay.url))
        assert again.status_code == 401
        assert again.json()["message"] == "Invalid nonce - nonce has already been used."
        bad = _oauth_get(wc.url, path, {"sku": "OA-1"}, secret="wrong")
        assert bad.json()["message"] == "Invalid signature - provided signature does not match."
        stale = _oauth_get(wc.url, path, {}, oauth_timestamp=str(int(time.time()) - 16 * 60))
        assert (stale.status_code, stale.json()["message"]) == (401, "Invalid timestamp.")
        sha1 = _oauth_get(wc.url, path, {}, oauth_signature_method="HMAC-SHA1")
        assert sha1.status_code == 200


# =========================================================================================
# WooCommerce: SKU lookup
# =========================================================================================
def test_wc_sku_lookup_matches_products_and_variations(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    simple = wc.add_product("SHIRT", 5)
    parent = wc.add_product("TEE")
    red = wc.add_variation(parent, "TEE-RED", 2)
    wc.add_product("SHIRT-XL", 1)  # exact match only: not returned for SHIRT
    response = client.get("/products", params={"sku": "SHIRT,TEE-RED"})
    assert response.status_code == 200
    found = {p["id"]: p for p in response.json()}
    assert set(found) == {simple, red}
    assert found[red]["type"] == "variation" and found[red]["parent_id"] == parent
    assert found[simple]["type"] == "simple" and found[simple]["parent_id"] == 0
    assert response.headers["X-WP-Total"] == "2" and response.headers["X-WP-TotalPages"] == "1"
    # Like MySQL's default collation: case-insensitive; a space after a comma is kept.
    assert [p["id"] for p in client.get("/products", params={"sku": "tee-red"}).json()] == [red]
    assert client.get("/products", params={"sku": "SHIRT, TEE-RED"}).json()[0]["id"] == simple
    assert len(client.get("/products", params={"sku": "SHIRT, TEE-RED"}).json()) == 1
    # The parent is variable and lists its variations.
    assert wc.product(parent)["type"] == "variable" and wc.product(parent)["variations"] == [red]


def test_wc_sku_lookup_paginates_and_limits_per_page(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    skus = [f"PG-{n:03}" for n in range(25)]
    for sku in skus:
        wc.add_product(sku, 1)
    seen: list[str] = []
    page = 1
    while True:
        r = client.get("/products", params={"sku": ",".join(skus), "per_page": 10, "page": page})
        assert r.status_code == 200 and r.headers["X-WP-Total"] == "25"
        assert r.headers["X-WP-TotalPages"] == "3"
        seen += [p["sku"] for p in r.json()]
        if page == 3:
            assert 'rel="next"' not in r.headers.get("Link", "")
            break
        assert 'rel="next"' in r.headers["Link"]
        page += 1
    assert sorted(seen) == skus and seen[0] == "PG-024"  # newest first
    too_many = client.get("/products", params={"sku": "PG-001", "per_page": 101})
    assert too_many.status_code == 400
    body = too_many.json()
    assert body["code"] == "rest_invalid_param" and body["data"]["status"] == 400
    assert "per_page" in body["data"]["params"]
    assert client.get("/products", params={"per_page": 0}).status_code == 400
    assert client.get("/products", params={"page": "x"}).status_code == 400
    assert client.get("/products", params={"sku": "PG-001", "page": 9}).json() == []


# =========================================================================================
# WooCommerce: single writes
# =========================================================================================
def test_wc_put_product_and_variation(wc: FakeWooCommerce, client: httpx.Client) -> None:
    simple = wc.add_product("PUT-1", 5)
    parent = wc.add_product("PUT-P")
    var = wc.add_variation(parent, "PUT-V", 2)
    r = client.put(f"/products/{simple}", json={"manage_stock": True, "stock_quantity": 0})
    assert r.status_code == 200
    assert r.json()["stock_quantity"] == 0 and r.json()["stock_status"] == "outofstock"
    r = client.put(
        f"/products/{parent}/variations/{var}", json={"manage_stock": True, "stock_quantity": 8}
    )
    assert r.status_code == 200 and r.json()["id"] == var and r.json()["stock_quantity"] == 8
    assert wc.stock_of("PUT-1") == 0 and wc.stock_of("PUT-V") == 8
    # "7" is an integer for WordPress' schema validation; 7.5 is not.
    assert (
        client.put(f"/products/{simple}", json={"stock_quantity": "7"}).json()["stock_quantity"]
        == 7
    )
    fractional = client.put(
        f"/products/{simple}", json={"manage_stock": True, "stock_quantity": 7.5}
    )
    assert fractional.status_code == 400 and fractional.json()["code"] == "rest_invalid_param"
    assert client.put(f"/products/{simple}", json={"manage_stock": "yes"}).status_code == 400
    assert wc.stock_of("PUT-1") == 7


def test_wc_quantity_is_ignored_unless_stock_is_managed(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    pid = wc.add_product("MS-1")  # does not manage stock
    r = client.put(f"/products/{pid}", json={"stock_quantity": 5})
    assert r.status_code == 200 and r.json()["stock_quantity"] is None
    assert wc.stock_of("MS-1") is None
    r = client.put(f"/products/{pid}", json={"manage_stock": True, "stock_quantity": 5})
    assert r.json()["manage_stock"] is True and wc.stock_of("MS-1") == 5
    # Already managed: a quantity alone is applied.
    client.put(f"/products/{pid}", json={"stock_quantity": 4})
    assert wc.stock_of("MS-1") == 4
    # manage_stock false clears the quantity.
    client.put(f"/products/{pid}", json={"manage_stock": False, "stock_quantity": 3})
    assert wc.stock_of("MS-1") is None and not wc.manages_stock("MS-1")


def test_wc_store_setting_off_ignores_stock_on_products_route() -> None:
    with FakeWooCommerce(KEY, SECRET, auth="basic", store_manages_stock=False) as wc:
        pid = wc.add_product("OFF-1", 5)
        r = put(
            f"{wc.url}{API}/products/{pid}",
            json={"manage_stock": True, "stock_quantity": 1},
            auth=(KEY, SECRET),
        )
        assert r.status_code == 200 and wc.stock_of("OFF-1") == 5


def test_wc_wrong_ids_and_routes(wc: FakeWooCommerce, client: httpx.Client) -> None:
    parent = wc.add_product("ID-P")
    other = wc.add_product("ID-Q")
    var = wc.add_variation(parent, "ID-V", 1)
    wc.add_variation(other, "ID-W", 1)
    body = {"manage_stock": True, "stock_quantity": 3}
    on_product_route = client.put(f"/products/{var}", json=body)
    assert on_product_route.status_code == 404
    assert on_product_route.json()["code"] == "woocommerce_rest_invalid_product_id"
    unknown = client.put("/products/987654", json=body)
    assert (unknown.status_code, unknown.json()["code"]) == (
        400,
        "woocommerce_rest_product_invalid_id",
    )
    assert unknown.json()["data"] == {"status": 400}
    unknown_var = client.put(f"/products/{parent}/variations/987654", json=body)
    assert unknown_var.json()["code"] == "woocommerce_rest_product_variation_invalid_id"
    wrong_parent = client.put(f"/products/{other}/variations/{var}", json=body)
    assert (wrong_parent.status_code, wrong_parent.json()["code"]) == (
        403,
        "woocommerce_rest_cannot_edit",
    )
    no_route = client.delete(f"/products/{parent}/variations")
    assert (no_route.status_code, no_route.json()["code"]) == (404, "rest_no_route")
    broken = client.put(
        f"/products/{parent}", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (broken.status_code, broken.json()["code"]) == (400, "rest_invalid_json")
    assert wc.stock_of("ID-V") == 1 and wc.write_count == 0
    # Unauthenticated PUT on an id that does not exist: 400, not 401 (WooCommerce checks
    # edit permission only on objects that exist).
    assert put(f"{wc.url}{API}/products/987654", json=body).status_code == 400


def test_wc_get_single_items(wc: FakeWooCommerce, client: httpx.Client) -> None:
    parent = wc.add_product("GET-P")
    var = wc.add_variation(parent, "GET-V", 6)
    assert client.get(f"/products/{var}").json()["parent_id"] == parent
    via_parent = client.get(f"/products/{parent}/variations/{var}").json()
    assert via_parent["stock_quantity"] == 6 and via_parent["sku"] == "GET-V"
    assert [v["id"] for v in client.get(f"/products/{parent}/variations").json()] == [var]
    assert client.get("/products/424242").status_code == 404


# =========================================================================================
# WooCommerce: batches
# =========================================================================================
def test_wc_batch_is_not_transactional(wc: FakeWooCommerce, client: httpx.Client) -> None:
    a = wc.add_product("B-A", 1)
    b = wc.add_product("B-B")
    parent = wc.add_product("B-P")
    var = wc.add_variation(parent, "B-V", 1)
    r = client.post(
        "/products/batch",
        json={
            "update": [
                {"id": a, "manage_stock": True, "stock_quantity": 7.9},
                {"id": 777777, "manage_stock": True, "stock_quantity": 5},
                {"id": b, "manage_stock": True, "stock_quantity": "4"},
                {"id": var, "manage_stock": True, "stock_quantity": 5},
            ]
        },
    )
    assert r.status_code == 200
    updated = r.json()["update"]
    assert updated[0]["id"] == a and updated[0]["stock_quantity"] == 7  # truncated
    assert updated[1] == {
        "id": 777777,
        "error": {
            "code": "woocommerce_rest_product_invalid_id",
            "message": "Invalid ID.",
            "data": {"status": 400},
        },
    }
    assert updated[2]["stock_quantity"] == 4
    assert updated[3]["error"]["code"] == "woocommerce_rest_invalid_product_id"
    assert updated[3]["error"]["data"]["status"] == 404
    assert (wc.stock_of("B-A"), wc.stock_of("B-B"), wc.stock_of("B-V")) == (7, 4, 1)


def test_wc_batch_over_100_items_is_rejected_whole(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    ids = [wc.add_product(f"BL-{n}", 0) for n in range(60)]
    updates = [{"id": i, "manage_stock": True, "stock_quantity": 9} for i in ids]
    r = client.post("/products/batch", json={"update": updates, "delete": ids[:41]})
    assert r.status_code == 413
    assert r.json() == {
        "code": "woocommerce_rest_request_entity_too_large",
        "message": "Unable to accept more than 100 items for this request.",
        "data": {"status": 413},
    }
    assert all(wc.stock_of(f"BL-{n}") == 0 for n in range(60))
    r = client.post("/products/batch", json={"update": updates, "delete": ids[:40]})
    assert r.status_code == 200
    assert len(r.json()["update"]) == 60 and len(r.json()["delete"]) == 40
    assert wc.stock_of("BL-59") == 9
    with pytest.raises(KeyError):
        wc.stock_of("BL-0")


def test_wc_variation_batch_and_create(wc: FakeWooCommerce, client: httpx.Client) -> None:
    parent = wc.add_product("VB-P")
    v1 = wc.add_variation(parent, "VB-1", 0)
    other = wc.add_product("VB-Q")
    foreign = wc.add_variation(other, "VB-X", 0)
    r = client.post(
        f"/products/{parent}/variations/batch",
        json={
            "update": [
                {"id": v1, "manage_stock": True, "stock_quantity": 3},
                {"id": foreign, "manage_stock": True, "stock_quantity": 3},
            ],
            "create": [{"sku": "VB-2", "manage_stock": True, "stock_quantity": 2}],
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["create", "update"]
    assert body["create"][0]["sku"] == "VB-2"
    assert body["update"][0]["stock_quantity"] == 3
    assert body["update"][1]["error"]["code"] == "woocommerce_rest_product_variation_invalid_id"
    assert (wc.stock_of("VB-1"), wc.stock_of("VB-2"), wc.stock_of("VB-X")) == (3, 2, 0)
    dup = client.post("/products/batch", json={"create": [{"sku": "vb-1"}]})
    assert dup.json()["create"][0]["error"]["code"] == "product_invalid_sku"


# =========================================================================================
# WooCommerce: webhooks
# =========================================================================================
def test_wc_write_echoes_a_signed_product_updated_webhook(
    wc: FakeWooCommerce, client: httpx.Client, receiver: Receiver
) -> None:
    parent = wc.add_product("WH/P")
    var = wc.add_variation(parent, "WH/V", 1)
    client.put(
        f"/products/{parent}/variations/{var}", json={"manage_stock": True, "stock_quantity": 4}
    )
    (hook,) = receiver.wait(1)
    raw = hook.body
    assert hook.path == "/hooks/wc"
    assert hook.header("X-WC-Webhook-Topic") == "product.updated"
    assert hook.header("X-WC-Webhook-Resource") == "product"
    assert hook.header("X-WC-Webhook-Event") == "updated"
    assert hook.header("X-WC-Webhook-ID") == str(wc.webhook_id)
    assert hook.header("X-WC-Webhook-Source") == f"{wc.url}/"
    assert len(hook.header("X-WC-Webhook-Delivery-ID") or "") == 32
    assert (hook.header("User-Agent") or "").startswith("WooCommerce/")
    assert verify(raw, hook.header("X-WC-Webhook-Signature"), wc.webhook_secret)
    assert not verify(raw, hook.header("X-WC-Webhook-Signature"), "other-secret")
    payload = json.loads(raw)
    assert (
        payload["id"] == var and payload["stock_quantity"] == 4 and payload["type"] == "variation"
    )
    assert payload["parent_id"] == parent and payload["sku"] == "WH/V"
    # WordPress escapes "/": re-serialised JSON is different bytes and fails verification.
    assert b'"WH\\/V"' in raw
    reserialised = json.dumps(payload, separators=(",", ":")).encode()
    assert reserialised != raw
    assert not verify(reserialised, hook.header("X-WC-Webhook-Signature"), wc.webhook_secret)
    assert wc.wait_for_webhooks()[0].status == 200


def test_wc_webhooks_coalesce_and_carry_state_at_delivery(receiver: Receiver) -> None:
    with FakeWooCommerce(
        KEY, SECRET, auth="basic", webhook_url=receiver.url, webhook_delay=0.3
    ) as wc:
        pid = wc.add_product("CO-1", 0)
        other = wc.add_product("CO-2", 0)
        with new_client(base_url=f"{wc.url}{API}", auth=(KEY, SECRET)) as c:
            for quantity in (1, 2, 3):
                c.put(f"/products/{pid}", json={"manage_stock": True, "stock_quantity": quantity})
            c.post("/products/batch", json={"update": [{"id": other, "stock_quantity": 5}]})
        deliveries = wc.wait_for_webhooks()
        assert sorted(d.resource_id or 0 for d in deliveries) == sorted([pid, other])
        by_id = {d.resource_id: d.json() for d in deliveries}
        assert by_id[pid]["stock_quantity"] == 3 and by_id[other]["stock_quantity"] == 5
        assert len(receiver.requests("POST")) == 2


def test_wc_webhook_is_disabled_after_consecutive_failures() -> None:
    with (
        Receiver(status=500) as failing,
        FakeWooCommerce(KEY, SECRET, auth="basic", webhook_url=failing.url) as wc,
    ):
        ids = [wc.add_product(f"FD-{n}", 0) for n in range(8)]
        with new_client(base_url=f"{wc.url}{API}", auth=(KEY, SECRET)) as c:
            for n, pid in enumerate(ids):
                c.put(f"/products/{pid}", json={"stock_quantity": 1})
                wc.wait_for_webhooks()
                if n == 5:
                    assert wc.webhook_state() == {"status": "active", "failure_count": 6}
        # WC_Webhook::failed_delivery disables on the failure after the count exceeds 5.
        assert wc.webhook_state()["status"] == "disabled"
        assert len(failing.requests("POST")) == 7  # never retried; nothing after disabling
        wc.enable_webhook()
        failing.status = 200
        with new_client(base_url=f"{wc.url}{API}", auth=(KEY, SECRET)) as c:
            c.put(f"/products/{ids[0]}", json={"stock_quantity": 2})
        wc.wait_for_webhooks()
        assert wc.webhook_state() == {"status": "active", "failure_count": 0}


def test_wc_order_webhook_and_ping(wc: FakeWooCommerce, receiver: Receiver) -> None:
    order = {
        "id": 5001,
        "status": "checkout-draft",
        "line_items": [{"product_id": 10, "variation_id": 11, "sku": "A/1", "quantity": 2}],
    }
    delivery = wc.send_order_webhook(order, topic="order.created")
    assert delivery.status == 200 and delivery.ok
    (hook,) = receiver.wait(1)
    assert hook.body == delivery.body and hook.body == wp_json_encode(json.loads(hook.body))
    assert hook.header("X-WC-Webhook-Topic") == "order.created"
    assert hook.header("X-WC-Webhook-Resource") == "order"
    assert hook.header("X-WC-Webhook-Event") == "created"
    assert hook.header("X-WC-Webhook-ID") == str(wc.order_webhook_id)
    assert verify(hook.body, hook.header("X-WC-Webhook-Signature"), wc.order_webhook_secret)
    sent = json.loads(hook.body)
    assert sent["id"] == 5001 and sent["status"] == "checkout-draft" and sent["refunds"] == []
    line = sent["line_items"][0]
    assert (line["product_id"], line["variation_id"], line["sku"], line["quantity"]) == (
        10,
        11,
        "A/1",
        2,
    )
    # Delivery-ID is the same for deliveries of one webhook within a second: not unique.
    again = wc.send_order_webhook({"id": 5001})
    if int(again.time) == int(delivery.time):
        assert again.delivery_id == delivery.delivery_id
    forged = wc.send_order_webhook({"id": 5002}, signature="AAAA")
    assert forged.headers["X-WC-Webhook-Signature"] == "AAAA"
    ping = wc.send_ping(42)
    assert ping.status == 200
    received = receiver.wait(4)[-1]
    assert received.body == b"webhook_id=42"
    assert (received.header("Content-Type") or "").startswith("application/x-www-form-urlencoded")
    assert received.header("X-WC-Webhook-Signature") is None
    assert received.header("X-WC-Webhook-Topic") is None


# =========================================================================================
# WooCommerce: fault knobs
# =========================================================================================
def test_wc_throttle_next_with_retry_after_json_and_html(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    pid = wc.add_product("TH-1", 1)
    wc.faults.throttle_next(1, retry_after=7)
    wc.faults.throttle_next(1, retry_after=2, html=True)
    first = client.get("/products")
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert first.json()["data"]["status"] == 429
    second = client.put(f"/products/{pid}", json={"stock_quantity": 5})
    assert second.status_code == 429 and second.headers["Retry-After"] == "2"
    assert second.headers["Content-Type"] == "text/html" and second.text.startswith("<html>")
    assert wc.stock_of("TH-1") == 1 and wc.write_count == 0
    assert client.get("/products").status_code == 200
    assert [r.fault for r in wc.requests()] == ["throttle", "throttle", None]


def test_wc_fail_next_500_and_503(wc: FakeWooCommerce, client: httpx.Client) -> None:
    pid = wc.add_product("FN-1", 1)
    wc.faults.fail_next(2, status=503, retry_after=3)
    wc.faults.fail_next(1, status=500)
    body = {"manage_stock": True, "stock_quantity": 9}
    statuses = [client.put(f"/products/{pid}", json=body) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 500, 200]
    assert statuses[0].headers["Retry-After"] == "3" and "Retry-After" not in statuses[2].headers
    assert wc.write_count == 1 and wc.faults.pending() == 0


def test_wc_fault_predicate_disconnect_and_latency(
    wc: FakeWooCommerce, client: httpx.Client
) -> None:
    pid = wc.add_product("DC-1", 1)
    wc.faults.disconnect_next(1, when=lambda r: r.method == "PUT")
    assert client.get("/products").status_code == 200  # not matched: goes through
    with pytest.raises(httpx.RemoteProtocolError):
        client.put(f"/products/{pid}", json={"stock_quantity": 2})
    assert wc.requests()[-1].fault == "disconnect" and wc.requests()[-1].status is None
    wc.faults.latency = 0.2
    started = time.monotonic()
    assert client.get("/products").status_code == 200
    assert time.monotonic() - started >= 0.2
    wc.faults.clear()
    assert wc.faults.latency == 0


def test_wc_rate_limit_per_second(wc: FakeWooCommerce, client: httpx.Client) -> None:
    wc.faults.set_rate_limit(3)
    statuses = [client.get("/products") for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[3].headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert client.get("/products").status_code == 200
    wc.faults.set_rate_limit(None)
    assert all(client.get("/products").status_code == 200 for _ in range(5))


def test_wc_unknown_ids_switch(wc: FakeWooCommerce, client: httpx.Client) -> None:
    pid = wc.add_product("UK-1", 1)
    wc.make_unknown(pid)
    assert client.get("/products", params={"sku": "UK-1"}).json() == []
    r = client.put(f"/products/{pid}", json={"stock_quantity": 3})
    assert r.json()["code"] == "woocommerce_rest_product_invalid_id"
    batch = client.post("/products/batch", json={"update": [{"id": pid, "stock_quantity": 3}]})
    assert batch.json()["update"][0]["error"]["code"] == "woocommerce_rest_product_invalid_id"
    wc.make_known(pid)
    assert client.put(f"/products/{pid}", json={"stock_quantity": 3}).status_code == 200
    assert wc.stock_of("UK-1") == 3


def test_wc_store_side_changes(
    wc: FakeWooCommerce, client: httpx.Client, receiver: Receiver
) -> None:
    wc.add_product("SS-1", 5)
    assert wc.record_sale("SS-1", 2) == 3
    wc.set_stock("SS-1", 10)
    assert wc.stock_of("SS-1") == 10
    assert wc.write_count == 0 and wc.wait_for_webhooks() == []


# =========================================================================================
# Amazon
# =========================================================================================
AMZ_TOKEN = "Atza|test-token"
SELLER = "A1TESTSELLER"
MARKET = "A1PA6795UKMFR9"


def _patch_body(
    quantity: Any, op: str = "replace", channel: str | None = "DEFAULT"
) -> dict[str, Any]:
    entry: dict[str, Any] = {"quantity": quantity}
    if channel is not None:
        entry["fulfillment_channel_code"] = channel
    return {
        "productType": "PRODUCT",
        "patches": [{"op": op, "path": "/attributes/fulfillment_availability", "value": [entry]}],
    }


@pytest.fixture
def amazon() -> Iterator[FakeAmazon]:
    with FakeAmazon(AMZ_TOKEN, seller_id=SELLER, marketplace_ids=(MARKET,)) as fake:
        yield fake


@pytest.fixture
def amz(amazon: FakeAmazon) -> Iterator[httpx.Client]:
    with new_client(
        base_url=f"{amazon.url}/listings/2021-08-01/items/{SELLER}",
        headers={"x-amz-access-token": AMZ_TOKEN},
        params={"marketplaceIds": MARKET},
    ) as c:
        yield c


def test_amazon_patch_accepted_and_readable(amazon: FakeAmazon, amz: httpx.Client) -> None:
    amazon.add_listing("AZ-1", 3)
    r = amz.patch("/AZ-1", json=_patch_body(20))
    assert r.status_code == 200
    body = r.json()
    assert body["sku"] == "AZ-1" and body["status"] == "ACCEPTED" and body["issues"] == []
    assert len(body["submissionId"]) == 32
    assert r.headers["x-amzn-RateLimit-Limit"] == "5.0" and r.headers["x-amzn-RequestId"]
    assert amazon.quantity_of("AZ-1") == 20
    assert amz.patch("/AZ-1", json=_patch_body(0, op="merge")).json()["status"] == "ACCEPTED"
    assert amazon.quantity_of("AZ-1") == 0
    got = amz.get("/AZ-1").json()
    assert got["fulfillmentAvailability"] == [{"fulfillmentChannelCode": "DEFAULT", "quantity": 0}]
    # SKUs are path segments: a "/" must be percent-encoded.
    amazon.add_listing("AZ/2", 1)
    assert amz.patch("/AZ%2F2", json=_patch_body(4)).json()["sku"] == "AZ/2"
    assert amazon.quantity_of("AZ/2") == 4
    preview = amz.patch(
        "/AZ-1",
        json=_patch_body(9),
        params={"marketplaceIds": MARKET, "mode": "VALIDATION_PREVIEW"},
    )
    assert preview.json()["status"] == "VALID" and amazon.quantity_of("AZ-1") == 0


def test_amazon_auth(amazon: FakeAmazon) -> None:
    url = f"{amazon.url}/listings/2021-08-01/items/{SELLER}/AZ-1?marketplaceIds={MARKET}"
    for headers in ({}, {"x-amz-access-token": "wrong"}):
        r = patch(url, json=_patch_body(1), headers=headers)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "Unauthorized"
    other_seller = url.replace(SELLER, "A2OTHER")
    assert (
        patch(
            other_seller, json=_patch_body(1), headers={"x-amz-access-token": AMZ_TOKEN}
        ).status_code
        == 403
    )
    amazon.expire_token()
    expired = patch(url, json=_patch_body(1), headers={"x-amz-access-token": AMZ_TOKEN})
    assert expired.status_code == 403 and "expired" in expired.json()["errors"][0]["details"]
    amazon.access_token = "Atza|refreshed"
    assert (
        patch(
            url, json=_patch_body(1), headers={"x-amz-access-token": "Atza|refreshed"}
        ).status_code
        == 200
    )


def test_amazon_malformed_and_invalid(amazon: FakeAmazon, amz: httpx.Client) -> None:
    amazon.rate = amazon.burst = 100  # many requests in a row here; the limit is tested apart
    amazon.add_listing("AZ-3", 5)
    for bad in (
        b"not json",
        json.dumps({"patches": _patch_body(1)["patches"]}).encode(),
        json.dumps({"productType": "PRODUCT", "patches": []}).encode(),
        json.dumps(
            {
                "productType": "PRODUCT",
                "patches": [{"op": "replace", "path": "/attributes/fulfillment_availability"}],
            }
        ).encode(),
        json.dumps(
            {
                "productType": "PRODUCT",
                "patches": [{"op": "upsert", "path": "/attributes/x", "value": 1}],
            }
        ).encode(),
    ):
        r = amz.patch("/AZ-3", content=bad, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, bad
        assert r.json()["errors"][0]["code"] == "InvalidInput"
    no_market = patch(
        f"{amazon.url}/listings/2021-08-01/items/{SELLER}/AZ-3",
        json=_patch_body(1),
        headers={"x-amz-access-token": AMZ_TOKEN},
    )
    assert no_market.status_code == 400
    wrong_market = amz.patch(
        "/AZ-3", json=_patch_body(1), params={"marketplaceIds": "ATVPDKIKX0DER"}
    )
    assert wrong_market.status_code == 400
    # Parseable but wrong values: HTTP 200 with status INVALID, nothing applied.
    for bad_body in (_patch_body(-1), _patch_body(2.5), _patch_body(3, channel=None)):
        r = amz.patch("/AZ-3", json=bad_body)
        assert r.status_code == 200 and r.json()["status"] == "INVALID"
        issue = r.json()["issues"][0]
        assert issue["severity"] == "ERROR" and issue["attributeNames"] == [
            "fulfillment_availability"
        ]
    assert amazon.quantity_of("AZ-3") == 5
    assert [s.status for s in amazon.submissions("AZ-3")] == ["INVALID"] * 3


def test_amazon_unknown_skus(amazon: FakeAmazon, amz: httpx.Client) -> None:
    # SP-API accepts a patch for a SKU without a listing (it creates an incomplete offer).
    assert amz.patch("/NEW-1", json=_patch_body(2)).json()["status"] == "ACCEPTED"
    assert amazon.quantity_of("NEW-1") == 2
    amazon.make_unknown("NEW-1")
    r = amz.patch("/NEW-1", json=_patch_body(3))
    assert r.status_code == 200 and r.json()["status"] == "INVALID" and r.json()["issues"]
    assert amazon.quantity_of("NEW-1") == 2
    with FakeAmazon(
        AMZ_TOKEN,
        seller_id=SELLER,
        marketplace_ids=(MARKET,),
        unknown_sku="invalid",
        invalid_http_status=400,
    ) as strict:
        url = f"{strict.url}/listings/2021-08-01/items/{SELLER}/NOPE?marketplaceIds={MARKET}"
        r = patch(url, json=_patch_body(1), headers={"x-amz-access-token": AMZ_TOKEN})
        assert r.status_code == 400 and r.json()["status"] == "INVALID"
        with pytest.raises(KeyError):
            strict.quantity_of("NOPE")


def test_amazon_token_bucket_rate_limit(amazon: FakeAmazon, amz: httpx.Client) -> None:
    amazon.rate = 2.0  # burst 5, then 2 tokens a second (slow refill: robust on a busy box)
    amazon.add_listing("RL-1", 0)
    statuses = [amz.patch("/RL-1", json=_patch_body(n)) for n in range(7)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    throttled = [r for r in statuses[5:] if r.status_code == 429]
    assert throttled, "burst of 5 exceeded without a 429"
    assert throttled[0].json()["errors"][0]["code"] == "QuotaExceeded"
    assert throttled[0].headers["x-amzn-RateLimit-Limit"] == "2.0"
    time.sleep(0.55)  # one more token
    assert amz.patch("/RL-1", json=_patch_body(9)).status_code == 200
    assert amazon.quantity_of("RL-1") == 9
    amazon.reset_rate_limit()  # a full bucket again
    assert all(amz.patch("/RL-1", json=_patch_body(1)).status_code == 200 for _ in range(5))


def test_amazon_fault_knobs_and_apply_delay(amazon: FakeAmazon, amz: httpx.Client) -> None:
    amazon.add_listing("FK-1", 1)
    amazon.faults.throttle_next(1, retry_after=None)
    amazon.faults.fail_next(1, status=503)
    amazon.faults.fail_next(1, status=500)
    throttled = amz.patch("/FK-1", json=_patch_body(5))
    assert throttled.status_code == 429 and "Retry-After" not in throttled.headers
    assert throttled.json()["errors"][0]["code"] == "QuotaExceeded"
    assert (
        amz.patch("/FK-1", json=_patch_body(5)).json()["errors"][0]["code"] == "ServiceUnavailable"
    )
    assert amz.patch("/FK-1", json=_patch_body(5)).json()["errors"][0]["code"] == "InternalFailure"
    assert amazon.quantity_of("FK-1") == 1
    amazon.apply_delay = 0.3
    assert amz.patch("/FK-1", json=_patch_body(5)).json()["status"] == "ACCEPTED"
    assert amazon.quantity_of("FK-1") == 1  # accepted, not visible yet
    time.sleep(0.35)
    assert amazon.quantity_of("FK-1") == 5


# =========================================================================================
# eBay
# =========================================================================================
EBAY_TOKEN = "v^1.1#test"


@pytest.fixture
def ebay() -> Iterator[FakeEbay]:
    with FakeEbay(EBAY_TOKEN) as fake:
        yield fake


@pytest.fixture
def eb(ebay: FakeEbay) -> Iterator[httpx.Client]:
    with new_client(base_url=ebay.url, headers={"Authorization": f"Bearer {EBAY_TOKEN}"}) as c:
        yield c


BULK = "/sell/inventory/v1/bulk_update_price_quantity"


def test_ebay_bulk_update(ebay: FakeEbay, eb: httpx.Client) -> None:
    ebay.add_item("EB-1", 1)
    (offer,) = ebay.add_item("EB-2", 1, offers=1)
    r = eb.post(
        BULK,
        json={
            "requests": [
                {"sku": "EB-1", "shipToLocationAvailability": {"quantity": 7}},
                {
                    "sku": "EB-2",
                    "shipToLocationAvailability": {"quantity": 4},
                    "offers": [{"offerId": offer, "availableQuantity": 4}],
                },
            ]
        },
    )
    assert r.status_code == 200
    assert r.json() == {
        "responses": [
            {"statusCode": 200, "sku": "EB-1"},
            {"statusCode": 200, "sku": "EB-2", "offerId": offer},
        ]
    }
    assert (ebay.quantity_of("EB-1"), ebay.quantity_of("EB-2"), ebay.offer_quantity(offer)) == (
        7,
        4,
        4,
    )
    got = eb.get("/sell/inventory/v1/inventory_item/EB-1").json()
    assert got["availability"]["shipToLocationAvailability"]["quantity"] == 7


def test_ebay_per_sku_errors_are_multi_status(ebay: FakeEbay, eb: httpx.Client) -> None:
    ebay.add_item("EB-3", 1)
    ebay.make_unknown("EB-4")
    r = eb.post(
        BULK,
        json={
            "requests": [
                {"sku": "EB-3", "shipToLocationAvailability": {"quantity": 2}},
                {"sku": "NOPE", "shipToLocationAvailability": {"quantity": 2}},
                {"sku": "EB-3", "offers": [{"offerId": "123", "availableQuantity": 1}]},
                {"sku": "EB-3", "shipToLocationAvailability": {"quantity": -1}},
            ]
        },
    )
    assert r.status_code == 207
    entries = r.json()["responses"]
    assert [e["statusCode"] for e in entries] == [200, 400, 400, 400]
    assert entries[1]["sku"] == "NOPE" and entries[1]["errors"][0]["errorId"] == 25702
    assert entries[2]["errors"][0]["errorId"] == 25713
    assert ebay.quantity_of("EB-3") == 2


def test_ebay_limits_auth_and_faults(ebay: FakeEbay, eb: httpx.Client) -> None:
    for n in range(26):
        ebay.add_item(f"L-{n}", 0)
    many = [{"sku": f"L-{n}", "shipToLocationAvailability": {"quantity": 5}} for n in range(26)]
    r = eb.post(BULK, json={"requests": many})
    assert r.status_code == 400 and r.json()["errors"][0]["errorId"] == 25709
    assert ebay.quantity_of("L-0") == 0
    assert eb.post(BULK, json={"requests": many[:25]}).status_code == 200
    assert (
        eb.post(BULK, content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    )
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        unauth = post(f"{ebay.url}{BULK}", json={"requests": many[:1]}, headers=headers)
        assert unauth.status_code == 401 and unauth.json()["errors"][0]["errorId"] == 1001
    ebay.single_sku_per_call = True
    assert eb.post(BULK, json={"requests": many[:2]}).status_code == 400
    ebay.faults.throttle_next(1, retry_after=5)
    ebay.faults.fail_next(1, status=500)
    throttled = eb.post(BULK, json={"requests": many[:1]})
    assert throttled.status_code == 429 and throttled.json()["errors"][0]["errorId"] == 2001
    assert throttled.headers["Retry-After"] == "5"
    assert eb.post(BULK, json={"requests": many[:1]}).status_code == 500
    ebay.faults.set_rate_limit(2)
    assert [eb.post(BULK, json={"requests": many[:1]}).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


# =========================================================================================
# The shared fault knobs work the same on every fake
# =========================================================================================
def _ok_request(fake: FakeServer) -> httpx.Response:
    if isinstance(fake, FakeWooCommerce):
        return _oauth_get(fake.url, f"{API}/products", {}, "cs_fake", oauth_consumer_key="ck_fake")
    if isinstance(fake, FakeAmazon):
        return get(
            f"{fake.url}/listings/2021-08-01/items/A1FAKESELLER/K-1",
            params={"marketplaceIds": "ATVPDKIKX0DER"},
            headers={"x-amz-access-token": fake.access_token},
        )
    assert isinstance(fake, FakeEbay)
    return get(
        f"{fake.url}/sell/inventory/v1/inventory_item/K-1",
        headers={"Authorization": f"Bearer {fake.token}"},
    )


@pytest.mark.parametrize("kind", [FakeWooCommerce, FakeAmazon, FakeEbay])
def test_shared_fault_knobs_work_on_every_fake(kind: type[FakeServer]) -> None:
    with kind() as fake:
        if isinstance(fake, FakeAmazon):
            fake.add_listing("K-1", 1)
        if isinstance(fake, FakeEbay):
            fake.add_item("K-1", 1)
        assert _ok_request(fake).status_code == 200
        fake.faults.throttle_next(1, retry_after=4, html=True)
        fake.faults.fail_next(1, status=503, retry_after=2)
        fake.faults.disconnect_next(1)
        throttled = _ok_request(fake)
        assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "4")
        assert throttled.headers["Content-Type"] == "text/html"
        unavailable = _ok_request(fake)
        assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "2")
        assert unavailable.json()  # the system's own JSON error style
        with pytest.raises(httpx.TransportError):
            _ok_request(fake)
        fake.faults.set_latency(0.1)
        started = time.monotonic()
        assert _ok_request(fake).status_code == 200
        assert time.monotonic() - started >= 0.1
        fake.faults.clear()
        fake.faults.set_rate_limit(1)
        assert [_ok_request(fake).status_code for _ in range(2)] == [200, 429]
        assert [r.fault for r in fake.requests()][1:] == [
            "throttle", "fail", "disconnect", None, None, "rate_limit",
        ]  # fmt: skip


# =========================================================================================
# Token endpoints, eBay offers, whole-call refusals and revisions, WooCommerce permalinks
# =========================================================================================
def test_amazon_lwa_token_endpoint_and_expired_tokens() -> None:
    """The LWA refresh-token grant (client_secret_post) and SP-API's answer to an expired
    token, with LWA's own error bodies."""
    with FakeAmazon(token_lifetime=0.3) as amazon:
        amazon.add_listing("T-1", 1)
        token_url = f"{amazon.url}/auth/o2/token"
        form = {"grant_type": "refresh_token", "refresh_token": amazon.lwa.refresh_token,
                "client_id": amazon.lwa.client_id, "client_secret": amazon.lwa.client_secret}  # fmt: skip
        bad_client = post(token_url, data={**form, "client_secret": "nope"})
        assert (bad_client.status_code, bad_client.json()["error"]) == (401, "invalid_client")
        bad_grant = post(token_url, data={**form, "refresh_token": "Atzr|old"})
        assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "invalid_grant")
        granted = post(token_url, data=form)
        assert granted.status_code == 200 and granted.json()["expires_in"] == 0.3
        token = granted.json()["access_token"]
        item = f"{amazon.url}/listings/2021-08-01/items/{amazon.seller_id}/T-1"
        params = {"marketplaceIds": amazon.marketplace_ids[0]}
        assert get(item, params=params, headers={"x-amz-access-token": token}).status_code == 200
        time.sleep(0.35)
        expired = get(item, params=params, headers={"x-amz-access-token": token})
        assert expired.status_code == 403
        assert "expired" in expired.json()["errors"][0]["details"]


def test_ebay_token_endpoint_offers_whole_call_refusals_and_revisions() -> None:
    with FakeEbay(revision_limit=2) as ebay:
        ebay.add_item("O-1", 5)
        offer = ebay.add_offer("O-1", quantity=3)
        ebay.add_item("O-2", 1)
        token_url = f"{ebay.url}/identity/v1/oauth2/token"
        form = {"grant_type": "refresh_token", "refresh_token": ebay.oauth.refresh_token,
                "scope": "https://api.ebay.com/oauth/api_scope/sell.inventory"}  # fmt: skip
        basic = (ebay.oauth.client_id, ebay.oauth.client_secret)
        too_wide = post(token_url, data={**form, "scope": "https://api.ebay.com/oauth/api_scope/sell.finances"}, auth=basic)  # fmt: skip
        assert (too_wide.status_code, too_wide.json()["error"]) == (400, "invalid_scope")
        token = post(token_url, data=form, auth=basic).json()["access_token"]
        with new_client(base_url=ebay.url, headers={"Authorization": f"Bearer {token}"}) as c:
            offers = c.get("/sell/inventory/v1/offer", params={"sku": "O-1"}).json()
            assert [(o["offerId"], o["availableQuantity"]) for o in offers["offers"]] == [
                (offer, 3)
            ]
            assert c.get("/sell/inventory/v1/offer", params={"sku": "O-2"}).status_code == 404
            assert ebay.listing_quantity("O-1") == 3  # the offer caps the item's 5
            ebay.fail_calls_with("O-2")
            whole = c.post(BULK, json={"requests": [
                {"sku": "O-1", "shipToLocationAvailability": {"quantity": 9}},
                {"sku": "O-2", "shipToLocationAvailability": {"quantity": 9}},
            ]})  # fmt: skip
            assert whole.status_code == 400 and ebay.quantity_of("O-1") == 5  # nothing applied
            ebay.fail_calls_with()
            for quantity in (6, 7, 8):
                answer = c.post(BULK, json={"requests": [{
                    "sku": "O-1", "shipToLocationAvailability": {"quantity": quantity},
                    "offers": [{"offerId": offer, "availableQuantity": quantity}]}]})  # fmt: skip
            assert answer.status_code == 207
            assert (
                "maximum number of revisions"
                in answer.json()["responses"][0]["errors"][0]["message"]
            )
            assert ebay.listing_quantity("O-1") == 7 and ebay.revisions("O-1") == 2
            ebay.new_day()
            assert ebay.revisions("O-1") == 0


def test_wc_plain_permalinks_and_a_host_that_strips_authorization() -> None:
    with FakeWooCommerce(KEY, SECRET, auth="basic", pretty_permalinks=False,
                         strip_authorization=True) as wc:  # fmt: skip
        wc.add_product("PL-1", 2)
        pretty = get(f"{wc.url}{API}/products", params={"consumer_key": KEY, "consumer_secret": SECRET})  # fmt: skip
        assert pretty.status_code == 404 and pretty.headers["content-type"].startswith("text/html")
        routed = {"rest_route": "/wc/v3/products", "sku": "PL-1"}
        header = get(f"{wc.url}/", params=routed, auth=(KEY, SECRET))  # header dropped
        assert (header.status_code, header.json()["code"]) == (401, "woocommerce_rest_cannot_view")
        query = get(f"{wc.url}/", params={**routed, "consumer_key": KEY, "consumer_secret": SECRET})
        assert query.status_code == 200 and query.json()[0]["stock_quantity"] == 2
