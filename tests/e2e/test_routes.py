"""Every HTTP route of the contract, over HTTP against the real service on PostgreSQL.

Each test makes its own locations, channel, SKUs and orders (named with `unique`), so the
tests share one running service. A test keeps to one httpx client (one keep-alive
connection, hence one worker process) unless it says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.route_helpers import (
    Env,
    assert_problem,
    available,
    chan,
    created,
    get_item,
    history,
    loc,
    make_env,
    own,
    seg,
    unchanged,
)
from tests.support.server import Server

pytestmark = pytest.mark.e2e

MALFORMED = b'{"location": "x", "lines": [{"sku": '
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def env(server: Server, unique: str) -> Iterator[Env]:
    """Locations WH (warehouse) and ST (store), channel `web` sourcing WH then ST."""
    with server.client() as c:
        yield make_env(c, unique, low_stock_threshold=2)


def make_token(c: httpx.Client, name: str, scopes: list[str]) -> str:
    body = created(c.post("/v1/tokens", json={"name": name, "scopes": scopes}))
    assert body["name"] == name
    assert sorted(body["scopes"]) == sorted(scopes)
    token: str = body["token"]
    assert token
    return token


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def lines(env: Env, **quantities: int) -> list[dict[str, Any]]:
    return [{"sku": env.sku(name), "quantity": q} for name, q in quantities.items()]


# --- ops ----------------------------------------------------------------------------------


def test_ops_endpoints_need_no_token(server: Server) -> None:
    with server.client(token="") as c:
        r = c.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"

        r = c.get("/ready")
        assert r.status_code == 200
        assert r.json()["status"] == "ready"

        r = c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "atp_ledger_head_position" in r.text

        assert_problem(c.get("/v1/no-such-route"), 404)
        assert_problem(c.delete("/v1/locations/x"), 405)

        r = c.get("/schema/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert doc["openapi"].startswith("3.")
        for path in (
            "/v1/reservations",
            "/v1/orders",
            "/v1/receipts",
            "/v1/availability/{channel}/{sku}",
            "/v1/items/{sku}/history",
            "/v1/tokens",
        ):
            assert path in doc["paths"], path


def test_correlation_id_is_echoed_or_generated(env: Env) -> None:
    c = env.client
    r = c.get(f"/v1/items/{env.sku()}", headers={"X-Correlation-ID": f"{env.prefix}-cid"})
    assert r.headers["x-correlation-id"] == f"{env.prefix}-cid"
    r = c.get(f"/v1/items/{env.sku()}")
    assert r.headers["x-correlation-id"]
    r = c.post("/v1/receipts", content=MALFORMED, headers={**JSON, "X-Correlation-ID": "e1"})
    assert_problem(r, 400)
    assert r.headers["x-correlation-id"] == "e1"


# --- auth ---------------------------------------------------------------------------------


def test_missing_or_unknown_token_is_401_and_changes_nothing(server: Server, env: Env) -> None:
    env.receive(env.wh, A=5)
    sku = env.sku()
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/locations", None),
        ("GET", "/v1/channels", None),
        ("GET", f"/v1/items/{sku}", None),
        ("GET", f"/v1/items/{sku}/history", None),
        ("GET", f"/v1/availability/{env.web}/{sku}", None),
        ("GET", f"/v1/availability/{env.web}?sku={sku}", None),
        ("PUT", f"/v1/locations/{env.wh}", {"name": "x", "kind": "store"}),
        ("PUT", "/v1/safety-stock", {"sku": sku, "location": None, "quantity": 1}),
        ("POST", "/v1/receipts", {"location": env.wh, "lines": lines(env, A=1)}),
        ("POST", "/v1/adjustments", {"location": env.wh, "sku": sku, "delta": -1, "reason": "x"}),
        ("POST", "/v1/reservations", {"channel": env.web, "lines": lines(env, A=1)}),
        ("POST", "/v1/orders", {"order_id": f"{env.prefix}-o", "channel": env.web, "lines": []}),
        ("GET", f"/v1/orders/{env.prefix}-o", None),
        ("GET", f"/v1/reservations/{env.prefix}-r", None),
        ("POST", "/v1/tokens", {"name": "x", "scopes": ["admin"]}),
        ("PUT", f"/v1/channels/{env.web}", {"locations": [env.st]}),
        ("POST", "/v1/counts", {"location": env.wh, "lines": [{"sku": sku, "counted": 0}]}),
        (
            "POST",
            "/v1/transfers",
            {
                "transfer_id": f"{env.prefix}-T",
                "from_location": env.wh,
                "to_location": env.st,
                "lines": lines(env, A=1),
            },
        ),
        ("POST", f"/v1/transfers/{env.prefix}-T/receive", None),
        ("POST", "/v1/incoming", {"location": env.wh, "lines": lines(env, A=1)}),
        ("POST", f"/v1/reservations/{env.prefix}-r/extend", {"ttl_seconds": 5}),
        ("POST", f"/v1/reservations/{env.prefix}-r/release", None),
        ("POST", f"/v1/reservations/{env.prefix}-r/commit", {"order_id": f"{env.prefix}-o"}),
        ("POST", f"/v1/orders/{env.prefix}-o/cancel", None),
        (
            "POST",
            f"/v1/orders/{env.prefix}-o/shipments",
            {"shipment_id": "s", "location": env.wh, "lines": lines(env, A=1)},
        ),
        (
            "POST",
            f"/v1/orders/{env.prefix}-o/returns",
            {"return_id": "r", "location": env.wh, "lines": lines(env, A=1)},
        ),
    ]
    with (
        unchanged(env.client, sku),
        server.client(token="") as anonymous,
        server.client(token="not-a-token") as stranger,
        httpx.Client(base_url=server.url, headers={"Authorization": "Basic dXNlcjpwYXNz"}) as basic,
    ):
        for method, path, body in requests:
            for client in (anonymous, stranger, basic):
                r = client.request(method, path, json=body, headers={"Idempotency-Key": "k"})
                assert_problem(r, 401, "unauthorized")
                assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_token_creation_and_scopes(server: Server, env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=5)
    reservation = created(env.reserve(A=1))["reservation_id"]
    order_id = f"{env.prefix}-o1"
    created(env.order(order_id, A=1))

    reader = make_token(c, f"{env.prefix}-reader", ["availability:read"])
    stocker = make_token(c, f"{env.prefix}-stocker", ["stock:write"])
    seller = make_token(c, f"{env.prefix}-seller", ["reservations:write"])
    orders = make_token(c, f"{env.prefix}-orders", ["orders:write"])
    planner = make_token(c, f"{env.prefix}-planner", ["policy:write"])

    receipt = {"location": env.wh, "lines": lines(env, A=1)}
    with (
        server.client(reader) as r,
        server.client(stocker) as s,
        server.client(seller) as res,
        server.client(orders) as o,
        server.client(planner) as p,
    ):
        # Inside each token's scope.
        assert available(r, env.web, sku)["available"] == 3
        assert get_item(r, sku)["sku"] == sku
        assert r.get(f"/v1/items/{sku}/history").status_code == 200
        assert r.get(f"/v1/availability/{env.web}", params={"sku": sku}).status_code == 200
        assert r.get("/v1/locations").status_code == 200
        assert r.get("/v1/channels").status_code == 200
        assert r.get(f"/v1/reservations/{reservation}").json()["status"] == "held"
        assert r.get(f"/v1/orders/{order_id}").json()["status"] == "allocated"
        assert res.get(f"/v1/reservations/{reservation}").status_code == 200
        assert o.get(f"/v1/orders/{order_id}").status_code == 200
        assert p.get("/v1/locations").status_code == 200

        # Outside it: 403, and nothing changes.
        with unchanged(c, sku):
            forbidden = [
                r.post("/v1/receipts", json=receipt),
                r.post(
                    "/v1/reservations",
                    json={"channel": env.web, "lines": lines(env, A=1)},
                    headers=env.idem(),
                ),
                r.post(
                    "/v1/orders",
                    json={
                        "order_id": f"{env.prefix}-o2",
                        "channel": env.web,
                        "lines": lines(env, A=1),
                    },
                    headers=env.idem(),
                ),
                r.post(f"/v1/reservations/{reservation}/release", headers=env.idem()),
                r.post(f"/v1/orders/{order_id}/cancel", headers=env.idem()),
                r.put(f"/v1/locations/{env.wh}", json={"name": "x", "kind": "store"}),
                r.put("/v1/safety-stock", json={"sku": sku, "location": None, "quantity": 2}),
                r.post("/v1/tokens", json={"name": "x", "scopes": ["admin"]}),
                s.get(f"/v1/items/{sku}"),
                s.get(f"/v1/availability/{env.web}/{sku}"),
                r.post(f"/v1/transfers/{env.prefix}-T/receive"),  # 403 comes before 404
                s.post("/v1/tokens", json={"name": "x", "scopes": ["stock:write"]}),
                res.get(f"/v1/orders/{order_id}"),
                res.post("/v1/receipts", json=receipt),
                o.get(f"/v1/reservations/{reservation}"),
                o.post(f"/v1/reservations/{reservation}/release", headers=env.idem()),
                p.post("/v1/receipts", json=receipt),
                p.get(f"/v1/items/{sku}"),
            ]
            for response in forbidden:
                assert_problem(response, 403, "forbidden")

        created(s.post("/v1/receipts", json=receipt))
        assert loc(get_item(c, sku), env.wh)["on_hand"] == 6
        created(p.put(f"/v1/locations/{env.prefix}-P", json={"name": "P", "kind": "store"}), 200)

    # Bad token requests.
    assert_problem(c.post("/v1/tokens", json={"name": "x", "scopes": ["root"]}), 422)
    assert_problem(c.post("/v1/tokens", json={"name": "x", "scopes": []}), 422)
    assert_problem(c.post("/v1/tokens", json={"scopes": ["admin"]}), 400)
    assert_problem(c.post("/v1/tokens", content=b"{", headers=JSON), 400)


def test_token_issue_with_idempotency_key_replays_the_same_token(server: Server, env: Env) -> None:
    c = env.client
    body = {"name": f"{env.prefix}-idem", "scopes": ["availability:read"]}
    headers = env.idem()
    first = c.post("/v1/tokens", json=body, headers=headers)
    token = created(first)["token"]
    again = c.post("/v1/tokens", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    with server.client(token) as reader:
        assert reader.get("/v1/locations").status_code == 200
    other = {"name": f"{env.prefix}-idem", "scopes": ["stock:write"]}
    assert_problem(c.post("/v1/tokens", json=other, headers=headers), 422, "idempotency-key-reused")


# --- master data and policies -------------------------------------------------------------


def test_locations_and_channels_put_and_list(env: Env) -> None:
    c = env.client
    ds = f"{env.prefix}-DS"
    r = c.put(f"/v1/locations/{ds}", json={"name": "Drop", "kind": "dropship", "active": True})
    assert created(r, 200) == {"code": ds, "name": "Drop", "kind": "dropship", "active": True}
    # A PUT is an upsert: again with the same body, and then a change.
    r = c.put(f"/v1/locations/{ds}", json={"name": "Drop", "kind": "dropship"})
    assert created(r, 200)["active"] is True
    r = c.put(f"/v1/locations/{ds}", json={"name": "Drop 2", "kind": "store", "active": False})
    assert created(r, 200) == {"code": ds, "name": "Drop 2", "kind": "store", "active": False}
    listed = {x["code"]: x for x in created(c.get("/v1/locations"), 200)}
    assert listed[ds] == {"code": ds, "name": "Drop 2", "kind": "store", "active": False}
    assert listed[env.wh]["kind"] == "warehouse"

    mkt = f"{env.prefix}-mkt"
    body = {
        "locations": [env.st, env.wh],
        "buffer": 1,
        "share_percent": 50,
        "backorder_limit": 2,
        "low_stock_threshold": 3,
    }
    view = created(c.put(f"/v1/channels/{mkt}", json=body), 200)
    assert view == {"code": mkt, **body}
    channels = {x["code"]: x for x in created(c.get("/v1/channels"), 200)}
    assert channels[mkt] == view
    assert channels[env.web]["locations"] == [env.wh, env.st]

    # Defaults.
    view = created(c.put(f"/v1/channels/{mkt}", json={"locations": [env.wh]}), 200)
    assert view == {
        "code": mkt,
        "locations": [env.wh],
        "buffer": 0,
        "share_percent": 100,
        "backorder_limit": 0,
        "low_stock_threshold": 5,
    }


def test_location_and_channel_validation_changes_nothing(env: Env) -> None:
    c = env.client
    env.receive(env.wh, A=1)
    before_locations = created(c.get("/v1/locations"), 200)
    before_channels = created(c.get("/v1/channels"), 200)
    loc_path = f"/v1/locations/{env.wh}"
    chan_path = f"/v1/channels/{env.web}"
    with unchanged(c, env.sku()):
        assert_problem(c.put(loc_path, json={"name": "x", "kind": "shed"}), 422, field="kind")
        assert_problem(c.put(loc_path, json={"kind": "store"}), 400)
        assert_problem(c.put(loc_path, json={"name": "x", "kind": "store", "active": "no"}), 422)
        assert_problem(c.put(loc_path, content=MALFORMED, headers=JSON), 400)
        r = c.put(chan_path, json={"locations": [env.wh, f"{env.prefix}-nowhere"]})
        assert_problem(r, 422, "unknown-location", field="locations[1]")
        r = c.put(chan_path, json={"locations": [env.wh, env.wh]})
        assert_problem(r, 422, field="locations")
        assert_problem(c.put(chan_path, json={"locations": []}), 422, field="locations")
        r = c.put(chan_path, json={"locations": [env.wh], "share_percent": 101})
        assert_problem(r, 422, field="share_percent")
        r = c.put(chan_path, json={"locations": [env.wh], "buffer": -1})
        assert_problem(r, 422, field="buffer")
        assert_problem(c.put(chan_path, json={"buffer": 1}), 400)
        assert_problem(c.put(chan_path, content=MALFORMED, headers=JSON), 400)
    assert created(c.get("/v1/locations"), 200) == before_locations
    assert created(c.get("/v1/channels"), 200) == before_channels


def test_channel_share_buffer_and_status(env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=7)
    env.receive(env.st, A=3)
    assert available(c, env.web, sku) | {"position": 0} == {
        "sku": sku,
        "channel": env.web,
        "available": 10,
        "status": "in_stock",
        "position": 0,
    }
    mkt = f"{env.prefix}-mkt"
    body = {"locations": [env.wh, env.st], "share_percent": 50, "buffer": 1}
    created(c.put(f"/v1/channels/{mkt}", json=body), 200)
    # floor(10 * 50 / 100) - 1 = 4 <= threshold 5
    figure = available(c, mkt, sku)
    assert (figure["available"], figure["status"]) == (4, "low_stock")
    derivation = chan(get_item(c, sku), mkt)["derivation"]
    assert derivation["pool"] == 10
    assert derivation["share_percent"] == 50
    assert derivation["buffer"] == 1
    created(c.put(f"/v1/channels/{mkt}", json={**body, "buffer": 5}), 200)
    figure = available(c, mkt, sku)
    assert (figure["available"], figure["status"]) == (0, "out_of_stock")


def test_inactive_location_adds_nothing_and_takes_no_holds(env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=3)
    env.receive(env.st, A=4)
    assert available(c, env.web, sku)["available"] == 7
    created(
        c.put(f"/v1/locations/{env.wh}", json={"name": "WH", "kind": "warehouse", "active": False}),
        200,
    )
    item = get_item(c, sku)
    assert loc(item, env.wh)["on_hand"] == 3
    assert loc(item, env.wh)["sellable"] == 0
    assert loc(item, env.wh)["active"] is False
    assert chan(item, env.web)["available"] == 4
    assert available(c, env.web, sku)["available"] == 4

    reservation = created(env.reserve(A=4))
    assert reservation["lines"][0]["holds"] == [{"location": env.st, "quantity": 4}]
    with unchanged(c, sku):
        body = assert_problem(env.reserve(A=1), 409, "insufficient-stock")
        assert body["lines"] == [{"sku": sku, "requested": 1, "available": 0}]
    assert loc(get_item(c, sku), env.wh)["held"] == 0

    created(c.put(f"/v1/locations/{env.wh}", json={"name": "WH", "kind": "warehouse"}), 200)
    assert available(c, env.web, sku)["available"] == 3


def test_safety_stock_most_specific_rule_wins(env: Env) -> None:
    """Story: a planner holds back stock by location, then for one SKU everywhere, then
    for that SKU at one warehouse, and for a day for everything; a script of theirs sends
    a rule with the location left out. Invariants: the most specific rule wins; 0 removes
    a rule; "every SKU" and "every location" are an explicit null, and a body that leaves
    either key out is a 400 naming it that changes nothing."""
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    env.receive(env.wh, A=10, B=10)
    env.receive(env.st, A=10, B=10)

    def safety(sku: str, location: str) -> int:
        figures = loc(get_item(c, sku), location)
        assert figures["sellable"] == figures["on_hand"] - figures["safety_stock"]
        return int(figures["safety_stock"])

    def put(sku: str | None, location: str | None, quantity: int) -> None:
        body = {"sku": sku, "location": location, "quantity": quantity}
        assert created(c.put("/v1/safety-stock", json=body), 200) == body

    put(None, env.wh, 4)  # location rule
    assert (safety(a, env.wh), safety(b, env.wh), safety(a, env.st)) == (4, 4, 0)
    put(a, None, 3)  # SKU rule beats the location rule, at every location
    assert (safety(a, env.wh), safety(b, env.wh), safety(a, env.st)) == (3, 4, 3)
    put(a, env.wh, 1)  # SKU + location beats both
    assert (safety(a, env.wh), safety(b, env.wh), safety(a, env.st)) == (1, 4, 3)
    assert available(c, env.web, a)["available"] == (10 - 1) + (10 - 3)
    assert available(c, env.web, b)["available"] == (10 - 4) + 10
    put(a, env.wh, 0)  # 0 removes the rule
    assert safety(a, env.wh) == 3
    put(a, None, 0)
    assert safety(a, env.wh) == 4
    put(None, env.wh, 0)
    assert (safety(a, env.wh), safety(b, env.wh)) == (0, 0)

    # The global rule applies to every SKU everywhere: keep it as short-lived as possible.
    try:
        put(b, env.st, 1)
        put(None, None, 2)
        assert (safety(a, env.wh), safety(a, env.st), safety(b, env.st)) == (2, 2, 1)
    finally:
        put(None, None, 0)
        put(b, env.st, 0)
    assert (safety(a, env.wh), safety(b, env.st)) == (0, 0)
    types = [e["type"] for e in own(history(c, a), a)]
    assert types.count("SafetyStockSet") == 4

    with unchanged(c, a):
        nowhere = {"sku": None, "location": f"{env.prefix}-nowhere", "quantity": 1}
        r = c.put("/v1/safety-stock", json=nowhere)
        assert_problem(r, 422, "unknown-location", field="location")
        r = c.put("/v1/safety-stock", json={"sku": a, "location": None, "quantity": -1})
        assert_problem(r, 422, field="quantity")
        bad = {"sku": "-bad", "location": None, "quantity": 1}
        assert_problem(c.put("/v1/safety-stock", json=bad), 422)
        assert_problem(c.put("/v1/safety-stock", json={"sku": a, "location": None}), 400)
        # A planner's script that leaves sku or location out (meaning one of them, or
        # forgetting it) is refused naming the field, never read as "every SKU" or "every
        # location": a rule for everything holds stock back everywhere.
        r = c.put("/v1/safety-stock", json={"quantity": 5})
        assert_problem(r, 400, field="sku")
        r = c.put("/v1/safety-stock", json={"sku": a, "quantity": 3})
        assert_problem(r, 400, field="location")
        r = c.post("/v1/policies/preview", json={"safety_stock": [{"quantity": 5}]})
        assert_problem(r, 400, field="safety_stock[0].sku")
        assert_problem(c.put("/v1/safety-stock", content=b"{", headers=JSON), 400)


# --- stock movements ----------------------------------------------------------------------


def test_receipts(env: Env) -> None:
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    body = {"location": env.wh, "lines": lines(env, A=3, B=2), "reference": "PO-1"}
    view = created(c.post("/v1/receipts", json=body))
    assert view == {
        "kind": "receipt",
        "lines": [
            {"sku": a, "location": env.wh, "on_hand": 3, "in_transit": 0, "incoming": 0},
            {"sku": b, "location": env.wh, "on_hand": 2, "in_transit": 0, "incoming": 0},
        ],
        "reference": "PO-1",
    }
    item = get_item(c, a)
    assert item["sku"] == a
    assert loc(item, env.wh) | {"active": True} == {
        "location": env.wh,
        "on_hand": 3,
        "allocated": 0,
        "held": 0,
        "damaged": 0,
        "in_transit": 0,
        "incoming": 0,
        "backordered": 0,
        "safety_stock": 0,
        "sellable": 3,
        "active": True,
    }
    assert chan(item, env.web)["available"] == 3
    (entry,) = own(history(c, a), a)
    assert entry["type"] == "StockReceived"
    assert (entry["location"], entry["quantity"]) == (env.wh, 3)

    too_many = [{"sku": f"{env.prefix}-L{i}", "quantity": 1} for i in range(101)]
    with unchanged(c, a, b):
        r = c.post("/v1/receipts", json={"location": f"{env.prefix}-no", "lines": lines(env, A=1)})
        assert_problem(r, 422, "unknown-location", field="location")
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": lines(env, A=0)})
        assert_problem(r, 422, field="lines[0].quantity")
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": lines(env, A=-1)})
        assert_problem(r, 422, field="lines[0].quantity")
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": lines(env, A=1_000_001)})
        assert_problem(r, 422, field="lines[0].quantity")
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": []})
        assert_problem(r, 422, field="lines")
        dup = [*lines(env, A=1), *lines(env, A=2)]
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": dup})
        assert_problem(r, 422, field="lines[1].sku")
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": [{"sku": a}]})
        assert_problem(r, 400)
        assert_problem(c.post("/v1/receipts", json={"lines": lines(env, A=1)}), 400)
        assert_problem(c.post("/v1/receipts", content=MALFORMED, headers=JSON), 400)
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": too_many})
        body = assert_problem(r, 413)
        assert body.get("limit") in (None, 100)
        r = c.post("/v1/receipts", json={"location": env.wh, "lines": lines(env, A="one")})  # type: ignore[arg-type]
        assert_problem(r, 422, field="lines[0].quantity")
    for sku in (f"{env.prefix}-L0", f"{env.prefix}-L100"):
        assert loc(get_item(c, sku), env.wh)["on_hand"] == 0


def test_empty_body_is_400(env: Env) -> None:
    """An empty body is not JSON at all: 400, like any unparsable body."""
    c = env.client
    env.receive(env.wh, A=1)
    with unchanged(c, env.sku()):
        for path in ("/v1/receipts", "/v1/adjustments", "/v1/reservations", "/v1/orders"):
            r = c.post(path, content=b"", headers={**JSON, **env.idem()})
            assert_problem(r, 400)


def test_adjustments(env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=5)
    body = {"location": env.wh, "sku": sku, "delta": -2, "reason": "shrinkage"}
    view = created(c.post("/v1/adjustments", json=body))
    assert view["kind"] == "adjustment"
    assert view["lines"] == [
        {"sku": sku, "location": env.wh, "on_hand": 3, "in_transit": 0, "incoming": 0}
    ]
    body = {"location": env.wh, "sku": sku, "delta": 2, "reason": "found damaged", "damaged": True}
    created(c.post("/v1/adjustments", json=body))
    figures = loc(get_item(c, sku), env.wh)
    assert (figures["on_hand"], figures["damaged"], figures["sellable"]) == (5, 2, 3)
    assert available(c, env.web, sku)["available"] == 3
    entries = own(history(c, sku), sku)
    assert [e["type"] for e in entries] == ["StockReceived", "StockAdjusted", "StockAdjusted"]
    assert entries[1]["delta"] == -2
    assert entries[1]["reason"] == "shrinkage"

    with unchanged(c, sku):
        base = {"location": env.wh, "sku": sku, "reason": "x"}
        assert_problem(c.post("/v1/adjustments", json={**base, "delta": 0}), 422, field="delta")
        body = assert_problem(
            c.post("/v1/adjustments", json={**base, "delta": -6}), 409, "negative-quantity"
        )
        assert body["current"] == 5
        r = c.post("/v1/adjustments", json={**base, "delta": -3, "damaged": True})
        assert_problem(r, 409, "negative-quantity")
        r = c.post("/v1/adjustments", json={**base, "location": f"{env.prefix}-no", "delta": 1})
        assert_problem(r, 422, "unknown-location", field="location")
        r = c.post("/v1/adjustments", json={"location": env.wh, "sku": sku, "delta": 1})
        assert_problem(r, 400)
        assert_problem(c.post("/v1/adjustments", json={**base, "delta": 1.5}), 422, field="delta")
        assert_problem(c.post("/v1/adjustments", content=MALFORMED, headers=JSON), 400)


def test_counts(env: Env) -> None:
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    env.receive(env.wh, A=5)
    body = {"location": env.wh, "lines": [{"sku": a, "counted": 8}, {"sku": b, "counted": 2}]}
    view = created(c.post("/v1/counts", json=body))
    assert view["kind"] == "count"
    assert [(x["sku"], x["on_hand"]) for x in view["lines"]] == [(a, 8), (b, 2)]
    assert loc(get_item(c, a), env.wh)["on_hand"] == 8
    assert available(c, env.web, b)["available"] == 2
    created(c.post("/v1/counts", json={"location": env.wh, "lines": [{"sku": a, "counted": 0}]}))
    assert available(c, env.web, a) | {"position": 0} == {
        "sku": a,
        "channel": env.web,
        "available": 0,
        "status": "out_of_stock",
        "position": 0,
    }
    entry = own(history(c, a), a)[-1]
    assert (entry["type"], entry["counted"], entry["previous"]) == ("StockCounted", 0, 8)

    too_many = [{"sku": f"{env.prefix}-L{i}", "counted": 1} for i in range(101)]
    with unchanged(c, a, b):
        r = c.post("/v1/counts", json={"location": env.wh, "lines": [{"sku": a, "counted": -1}]})
        assert_problem(r, 422, field="lines[0].counted")
        r = c.post(
            "/v1/counts", json={"location": f"{env.prefix}-no", "lines": [{"sku": a, "counted": 1}]}
        )
        assert_problem(r, 422, "unknown-location", field="location")
        dup = [{"sku": a, "counted": 1}, {"sku": a, "counted": 2}]
        assert_problem(c.post("/v1/counts", json={"location": env.wh, "lines": dup}), 422)
        assert_problem(c.post("/v1/counts", json={"location": env.wh, "lines": too_many}), 413)
        assert_problem(c.post("/v1/counts", json={"location": env.wh, "lines": [{"sku": a}]}), 400)
        assert_problem(c.post("/v1/counts", content=MALFORMED, headers=JSON), 400)


def test_transfers(env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=5)
    tid = f"{env.prefix}-T1"
    body = {
        "transfer_id": tid,
        "from_location": env.wh,
        "to_location": env.st,
        "lines": lines(env, A=2),
    }
    view = created(c.post("/v1/transfers", json=body))
    assert view["kind"] == "transfer"
    assert view["transfer_id"] == tid
    assert view["status"] == "in_transit"
    item = get_item(c, sku)
    assert (loc(item, env.wh)["on_hand"], loc(item, env.wh)["sellable"]) == (3, 3)
    assert (loc(item, env.st)["on_hand"], loc(item, env.st)["in_transit"]) == (0, 2)
    assert chan(item, env.web)["available"] == 3

    view = created(c.post(f"/v1/transfers/{tid}/receive"), 200)
    assert view["status"] == "received"
    assert view["lines"] == [
        {"sku": sku, "location": env.st, "on_hand": 2, "in_transit": 0, "incoming": 0}
    ]
    item = get_item(c, sku)
    assert (loc(item, env.st)["on_hand"], loc(item, env.st)["in_transit"]) == (2, 0)
    assert available(c, env.web, sku)["available"] == 5
    types = [e["type"] for e in own(history(c, sku), sku)]
    assert types == ["StockReceived", "TransferDispatched", "TransferArrived"]

    # Damaged units may not leave; safety stock may.
    created(c.put("/v1/safety-stock", json={"sku": sku, "location": env.wh, "quantity": 1}), 200)
    damage = {"location": env.wh, "sku": sku, "delta": 1, "reason": "broken", "damaged": True}
    created(c.post("/v1/adjustments", json=damage))
    with unchanged(c, sku):
        r = c.post(
            "/v1/transfers",
            json={**body, "transfer_id": f"{env.prefix}-TD", "lines": lines(env, A=4)},
        )
        problem = assert_problem(r, 409, "insufficient-stock")
        assert problem["lines"] == [{"sku": sku, "requested": 4, "available": 3}]
    created(c.post("/v1/adjustments", json={**damage, "delta": -1}))
    created(c.put("/v1/safety-stock", json={"sku": sku, "location": env.wh, "quantity": 0}), 200)

    # Held units may not leave: hold all 3 at WH, then try to move one.
    held = created(env.reserve(A=3))
    assert held["lines"][0]["holds"] == [{"location": env.wh, "quantity": 3}]
    with unchanged(c, sku):
        r = c.post(
            "/v1/transfers",
            json={**body, "transfer_id": f"{env.prefix}-T2", "lines": lines(env, A=1)},
        )
        problem = assert_problem(r, 409, "insufficient-stock")
        assert problem["lines"] == [{"sku": sku, "requested": 1, "available": 0}]
        r = c.post(
            "/v1/transfers",
            json={**body, "from_location": env.st, "to_location": env.wh, "lines": lines(env, A=1)},
        )
        assert_problem(r, 409, "already-exists")  # transfer id taken
        r = c.post(f"/v1/transfers/{env.prefix}-nope/receive")
        assert_problem(r, 404, "not-found")
        same = {**body, "transfer_id": f"{env.prefix}-T3", "to_location": env.wh}
        assert_problem(c.post("/v1/transfers", json=same), 422, field="to_location")
        unknown = {**body, "transfer_id": f"{env.prefix}-T4", "from_location": f"{env.prefix}-no"}
        assert_problem(
            c.post("/v1/transfers", json=unknown), 422, "unknown-location", field="from_location"
        )
        unknown = {**body, "transfer_id": f"{env.prefix}-T5", "to_location": f"{env.prefix}-no"}
        assert_problem(
            c.post("/v1/transfers", json=unknown), 422, "unknown-location", field="to_location"
        )
        zero = {**body, "transfer_id": f"{env.prefix}-T6", "lines": lines(env, A=0)}
        assert_problem(c.post("/v1/transfers", json=zero), 422, field="lines[0].quantity")
        missing = {k: v for k, v in body.items() if k != "transfer_id"}
        assert_problem(c.post("/v1/transfers", json=missing), 400)
        assert_problem(c.post("/v1/transfers", content=MALFORMED, headers=JSON), 400)


def test_receiving_a_received_transfer_is_409(env: Env) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=2)
    tid = f"{env.prefix}-T1"
    body = {
        "transfer_id": tid,
        "from_location": env.wh,
        "to_location": env.st,
        "lines": lines(env, A=1),
    }
    created(c.post("/v1/transfers", json=body))
    created(c.post(f"/v1/transfers/{tid}/receive"), 200)
    with unchanged(c, sku):
        assert_problem(c.post(f"/v1/transfers/{tid}/receive"), 409, "illegal-state")


def test_incoming_and_backorder(env: Env) -> None:
    c = env.client
    sku = env.sku()
    bo = f"{env.prefix}-bo"
    created(c.put(f"/v1/channels/{bo}", json={"locations": [env.wh], "backorder_limit": 3}), 200)
    eta = (datetime.now(UTC) + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    body = {"location": env.wh, "lines": lines(env, A=10), "eta": eta, "reference": "PO-9"}
    view = created(c.post("/v1/incoming", json=body))
    assert view["kind"] == "incoming"
    assert view["reference"] == "PO-9"
    assert view["lines"] == [
        {"sku": sku, "location": env.wh, "on_hand": 0, "in_transit": 0, "incoming": 10}
    ]
    figures = loc(get_item(c, sku), env.wh)
    assert (figures["on_hand"], figures["incoming"], figures["sellable"]) == (0, 10, 0)
    assert available(c, env.web, sku)["status"] == "out_of_stock"  # no backorders on web
    figure = available(c, bo, sku)
    assert (figure["available"], figure["status"]) == (3, "backorder")

    reservation = created(env.reserve(channel=bo, A=2))
    assert reservation["lines"][0]["holds"] == [
        {"location": env.wh, "quantity": 2, "backorder": True}
    ]
    assert loc(get_item(c, sku), env.wh)["backordered"] == 2
    with unchanged(c, sku):
        body = assert_problem(env.reserve(channel=bo, A=11), 409, "insufficient-stock")
        assert body["lines"][0]["requested"] == 11

    env.receive(env.wh, A=1)  # arriving supply is taken off `incoming`
    figures = loc(get_item(c, sku), env.wh)
    assert (figures["on_hand"], figures["incoming"], figures["sellable"]) == (1, 9, 1)
    assert available(c, bo, sku)["status"] != "backorder"

    with unchanged(c, sku):
        r = c.post("/v1/incoming", json={"location": f"{env.prefix}-no", "lines": lines(env, A=1)})
        assert_problem(r, 422, "unknown-location", field="location")
        r = c.post(
            "/v1/incoming", json={"location": env.wh, "lines": lines(env, A=1), "eta": "soon"}
        )
        assert_problem(r, 422, field="eta")
        r = c.post("/v1/incoming", json={"location": env.wh, "lines": lines(env, A=0)})
        assert_problem(r, 422, field="lines[0].quantity")
        assert_problem(c.post("/v1/incoming", json={"location": env.wh}), 400)
        assert_problem(c.post("/v1/incoming", content=MALFORMED, headers=JSON), 400)


# --- availability and items ---------------------------------------------------------------


def test_availability_single_and_many(env: Env) -> None:
    c = env.client
    a, b, unknown = env.sku("A"), env.sku("B"), env.sku("never")
    env.receive(env.wh, A=2)
    env.receive(env.st, A=1, B=10)
    one = available(c, env.web, a)
    assert set(one) == {"sku", "channel", "available", "status", "position"}
    assert (one["sku"], one["channel"], one["available"], one["status"]) == (
        a,
        env.web,
        3,
        "in_stock",
    )
    first_position = one["position"]
    assert available(c, env.web, unknown) | {"position": 0} == {
        "sku": unknown,
        "channel": env.web,
        "available": 0,
        "status": "out_of_stock",
        "position": 0,
    }
    item = get_item(c, unknown)
    assert item["sku"] == unknown
    assert all(x["on_hand"] == 0 and x["sellable"] == 0 for x in item["locations"])
    assert chan(item, env.web)["available"] == 0

    created(env.reserve(A=1))
    one = available(c, env.web, a)
    assert (one["available"], one["status"]) == (2, "low_stock")  # threshold 2
    assert one["position"] >= first_position

    r = c.get(f"/v1/availability/{env.web}", params=[("sku", a), ("sku", b), ("sku", unknown)])
    many = created(r, 200)["items"]
    assert [(x["sku"], x["available"], x["status"]) for x in many] == [
        (a, 2, "low_stock"),
        (b, 10, "in_stock"),
        (unknown, 0, "out_of_stock"),
    ]
    assert all(x["channel"] == env.web for x in many)
    # Each figure carries the position of the SKU's own last change (monotonic per channel
    # and SKU); read one at a time or in bulk, it is the same figure.
    assert {x["sku"]: x["position"] for x in many}[a] == one["position"]

    hundred = [("sku", f"{env.prefix}-S{i}") for i in range(100)]
    assert len(created(c.get(f"/v1/availability/{env.web}", params=hundred), 200)["items"]) == 100
    too_many = [("sku", f"{env.prefix}-S{i}") for i in range(101)]
    assert_problem(c.get(f"/v1/availability/{env.web}", params=too_many), 413)
    assert_problem(c.get(f"/v1/availability/{env.web}"), 400)
    nowhere = f"{env.prefix}-nochannel"
    assert_problem(c.get(f"/v1/availability/{nowhere}/{a}"), 404, "not-found")
    assert_problem(c.get(f"/v1/availability/{nowhere}", params={"sku": a}), 404, "not-found")


def test_percent_encoded_slash_in_paths(env: Env) -> None:
    c = env.client
    sku = f"{env.prefix}/A"  # a SKU with a slash: %2F in a path
    r = c.post("/v1/receipts", json={"location": env.wh, "lines": [{"sku": sku, "quantity": 4}]})
    created(r)
    assert seg(sku) == f"{env.prefix}%2FA"
    item = created(c.get(f"/v1/items/{env.prefix}%2FA"), 200)
    assert item["sku"] == sku
    assert loc(item, env.wh)["on_hand"] == 4
    one = created(c.get(f"/v1/availability/{env.web}/{env.prefix}%2FA"), 200)
    assert (one["sku"], one["available"]) == (sku, 4)
    many = created(c.get(f"/v1/availability/{env.web}?sku={env.prefix}%2FA"), 200)
    assert [(x["sku"], x["available"]) for x in many["items"]] == [(sku, 4)]
    assert c.get(f"/v1/items/{env.prefix}%2FA/history").status_code == 200
    assert [e["type"] for e in own(history(c, sku), sku)] == ["StockReceived"]

    # Order ids with a slash, in order routes.
    order_id = f"{env.prefix}/o1"
    body = {"order_id": order_id, "channel": env.web, "lines": [{"sku": sku, "quantity": 1}]}
    created(c.post("/v1/orders", json=body, headers=env.idem()))
    assert created(c.get(f"/v1/orders/{seg(order_id)}"), 200)["order_id"] == order_id
    view = created(c.post(f"/v1/orders/{seg(order_id)}/cancel", headers=env.idem()), 200)
    assert view["status"] == "canceled"
    assert available(c, env.web, sku)["available"] == 4


def test_item_history_pagination(env: Env) -> None:
    c = env.client
    sku = env.sku()
    start = get_item(c, sku)["position"]
    for quantity in (1, 2, 3):
        env.receive(env.wh, A=quantity)
    path = f"/v1/items/{sku}/history"
    page1 = created(c.get(path, params={"after": start, "limit": 2}), 200)
    assert [e["quantity"] for e in page1["entries"]] == [1, 2]
    assert page1["next_after"] == page1["entries"][-1]["position"]
    page2 = created(c.get(path, params={"after": page1["next_after"], "limit": 2}), 200)
    assert [e["quantity"] for e in page2["entries"]] == [3]
    assert page2["next_after"] is None
    entries = page1["entries"] + page2["entries"]
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == 3
    for e in entries:
        assert e["type"] == "StockReceived"
        assert e["location"] == env.wh
        assert e["correlation_id"]
        parse_time(e["occurred_at"])
    assert created(c.get(path, params={"after": positions[-1]}), 200)["entries"] == []
    for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"limit": "x"}):
        r = c.get(path, params=params)
        assert r.status_code in (400, 422), (params, r.status_code)
        assert_problem(r, r.status_code)


# --- reservations -------------------------------------------------------------------------


def test_reservation_lifecycle(env: Env) -> None:
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    env.receive(env.wh, A=3)
    env.receive(env.st, A=5, B=1)
    before = datetime.now(UTC)
    body = {
        "channel": env.web,
        "lines": lines(env, A=5, B=1),
        "ttl_seconds": 900,
        "reference": "cart-1",
    }
    r = c.post("/v1/reservations", json=body, headers=env.idem())
    view = created(r)
    rid = view["reservation_id"]
    assert view["status"] == "held"
    assert view["lines"] == [
        {
            "sku": a,
            "quantity": 5,
            "holds": [{"location": env.wh, "quantity": 3}, {"location": env.st, "quantity": 2}],
        },
        {"sku": b, "quantity": 1, "holds": [{"location": env.st, "quantity": 1}]},
    ]
    expires = parse_time(view["expires_at"])
    assert before + timedelta(seconds=895) <= expires <= datetime.now(UTC) + timedelta(seconds=905)
    assert r.headers.get("idempotent-replayed") is None

    got = created(c.get(f"/v1/reservations/{rid}"), 200)
    assert got["reservation_id"] == rid
    assert got["status"] == "held"
    assert got["lines"] == view["lines"]
    item = get_item(c, a)
    assert (loc(item, env.wh)["held"], loc(item, env.st)["held"]) == (3, 2)
    assert (loc(item, env.wh)["sellable"], loc(item, env.st)["sellable"]) == (0, 3)
    assert available(c, env.web, a)["available"] == 3
    assert available(c, env.web, b)["available"] == 0

    view = created(
        c.post(f"/v1/reservations/{rid}/extend", json={"ttl_seconds": 60}, headers=env.idem()), 200
    )
    assert view["status"] == "held"
    assert parse_time(view["expires_at"]) <= datetime.now(UTC) + timedelta(seconds=61)
    view = created(
        c.post(f"/v1/reservations/{rid}/extend", json={"ttl_seconds": 86_400}, headers=env.idem()),
        200,
    )
    assert parse_time(view["expires_at"]) >= datetime.now(UTC) + timedelta(seconds=86_000)
    assert parse_time(created(c.get(f"/v1/reservations/{rid}"), 200)["expires_at"]) == parse_time(
        view["expires_at"]
    )

    view = created(c.post(f"/v1/reservations/{rid}/release", headers=env.idem()), 200)
    assert view["status"] == "released"
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "released"
    item = get_item(c, a)
    assert (loc(item, env.wh)["held"], loc(item, env.st)["held"]) == (0, 0)
    assert available(c, env.web, a)["available"] == 8
    assert available(c, env.web, b)["available"] == 1
    types = [e["type"] for e in own(history(c, a), a)]
    assert types == [
        "StockReceived",
        "StockReceived",
        "StockHeld",
        "HoldExtended",
        "HoldExtended",
        "HoldReleased",
    ]

    nope = f"{env.prefix}-nope"
    with unchanged(c, a, b):
        assert_problem(c.get(f"/v1/reservations/{nope}"), 404, "not-found")
        r = c.post(f"/v1/reservations/{nope}/extend", json={"ttl_seconds": 5}, headers=env.idem())
        assert_problem(r, 404, "not-found")
        assert_problem(c.post(f"/v1/reservations/{nope}/release", headers=env.idem()), 404)
        r = c.post(
            f"/v1/reservations/{nope}/commit",
            json={"order_id": f"{env.prefix}-o"},
            headers=env.idem(),
        )
        assert_problem(r, 404, "not-found")
    assert_problem(c.get(f"/v1/orders/{env.prefix}-o"), 404)


def test_reservation_validation_changes_nothing(env: Env) -> None:
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    env.receive(env.wh, A=5)
    rid = created(env.reserve(A=1))["reservation_id"]
    ok = {"channel": env.web, "lines": lines(env, A=1)}
    too_many = [{"sku": f"{env.prefix}-L{i}", "quantity": 1} for i in range(101)]

    def post(body: Any, **headers: str) -> httpx.Response:
        return c.post("/v1/reservations", json=body, headers={**env.idem(), **headers})

    with unchanged(c, a, b):
        r = env.post_without_key("/v1/reservations", json=ok)
        assert_problem(r, 400, "idempotency-key-required")
        r = c.post("/v1/reservations", json=ok, headers={"Idempotency-Key": "k" * 256})
        assert_problem(r, 400)
        assert_problem(post({**ok, "ttl_seconds": 0}), 422, field="ttl_seconds")
        assert_problem(post({**ok, "ttl_seconds": 86_401}), 422, field="ttl_seconds")
        assert_problem(post({**ok, "lines": lines(env, A=0)}), 422, field="lines[0].quantity")
        assert_problem(
            post({**ok, "lines": lines(env, A=1_000_001)}), 422, field="lines[0].quantity"
        )
        assert_problem(post({**ok, "lines": []}), 422, field="lines")
        dup = [*lines(env, A=1), *lines(env, A=1)]
        assert_problem(post({**ok, "lines": dup}), 422, field="lines[1].sku")
        body = assert_problem(post({**ok, "lines": too_many}), 413)
        r = post({**ok, "channel": f"{env.prefix}-nochannel"})
        assert_problem(r, 422, "unknown-channel", field="channel")
        assert_problem(post({"lines": ok["lines"]}), 400)
        assert_problem(post({"channel": env.web}), 400)
        r = c.post("/v1/reservations", content=MALFORMED, headers={**JSON, **env.idem()})
        assert_problem(r, 400)

        body = assert_problem(post({**ok, "lines": lines(env, A=5)}), 409, "insufficient-stock")
        assert body["lines"] == [{"sku": a, "requested": 5, "available": 4}]
        # All lines or none: A could be held, B cannot, so nothing is held.
        body = assert_problem(
            post({**ok, "lines": lines(env, A=2, B=1)}), 409, "insufficient-stock"
        )
        assert body["lines"] == [{"sku": b, "requested": 1, "available": 0}]

        path = f"/v1/reservations/{rid}"
        assert_problem(
            env.post_without_key(f"{path}/extend", json={"ttl_seconds": 5}),
            400,
            "idempotency-key-required",
        )
        r = env.post_without_key(f"{path}/release")
        assert_problem(r, 400, "idempotency-key-required")
        r = env.post_without_key(f"{path}/commit", json={"order_id": f"{env.prefix}-o"})
        assert_problem(r, 400, "idempotency-key-required")
        r = c.post(f"{path}/extend", json={"ttl_seconds": 0}, headers=env.idem())
        assert_problem(r, 422, field="ttl_seconds")
        r = c.post(f"{path}/extend", json={"ttl_seconds": 86_401}, headers=env.idem())
        assert_problem(r, 422, field="ttl_seconds")
        assert_problem(c.post(f"{path}/extend", json={}, headers=env.idem()), 400)
        assert_problem(c.post(f"{path}/commit", json={}, headers=env.idem()), 400)
        r = c.post(f"{path}/commit", json={"order_id": "-bad"}, headers=env.idem())
        assert_problem(r, 422, field="order_id")
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "held"


@pytest.mark.parametrize("action", ["release", "extend", "commit"])
def test_changing_a_released_reservation_is_409(env: Env, action: str) -> None:
    c = env.client
    sku = env.sku()
    env.receive(env.wh, A=3)
    rid = created(env.reserve(A=1))["reservation_id"]
    created(c.post(f"/v1/reservations/{rid}/release", headers=env.idem()), 200)
    body = {
        "release": None,
        "extend": {"ttl_seconds": 60},
        "commit": {"order_id": f"{env.prefix}-o"},
    }[action]
    with unchanged(c, sku):
        r = c.post(f"/v1/reservations/{rid}/{action}", json=body, headers=env.idem())
        assert_problem(r, 409, "illegal-state")
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "released"
    assert_problem(c.get(f"/v1/orders/{env.prefix}-o"), 404)


def test_commit_reservation_to_order(env: Env) -> None:
    c = env.client
    a = env.sku("A")
    env.receive(env.wh, A=2)
    env.receive(env.st, A=2)
    rid = created(env.reserve(A=3))["reservation_id"]
    order_id = f"{env.prefix}-o1"
    r = c.post(f"/v1/reservations/{rid}/commit", json={"order_id": order_id}, headers=env.idem())
    view = created(r)
    assert view["status"] == "committed"
    assert view["order_id"] == order_id
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "committed"
    order = created(c.get(f"/v1/orders/{order_id}"), 200)
    assert order["status"] == "allocated"
    assert order["reservation_id"] == rid
    assert order["channel"] == env.web
    assert order["lines"] == [
        {"sku": a, "quantity": 3, "allocated": 3, "shipped": 0, "returned": 0, "canceled": 0}
    ]
    item = get_item(c, a)
    assert [(loc(item, x)["held"], loc(item, x)["allocated"]) for x in (env.wh, env.st)] == [
        (0, 2),
        (0, 1),
    ]
    assert available(c, env.web, a)["available"] == 1

    # A second reservation cannot be committed to the same order id.
    other = created(env.reserve(A=1))["reservation_id"]
    with unchanged(c, a):
        r = c.post(
            f"/v1/reservations/{other}/commit", json={"order_id": order_id}, headers=env.idem()
        )
        assert_problem(r, 409, "already-exists")
    assert created(c.get(f"/v1/reservations/{other}"), 200)["status"] == "held"


# --- orders -------------------------------------------------------------------------------


def test_orders_place_ship_return_and_errors(env: Env) -> None:
    c = env.client
    a, b, x = env.sku("A"), env.sku("B"), env.sku("X")
    env.receive(env.wh, A=4)
    env.receive(env.st, A=2, B=3)
    oid = f"{env.prefix}-o1"
    view = created(env.order(oid, A=5, B=1))
    assert view["order_id"] == oid
    assert view["status"] == "allocated"
    assert view["channel"] == env.web
    assert view["lines"] == [
        {"sku": a, "quantity": 5, "allocated": 5, "shipped": 0, "returned": 0, "canceled": 0},
        {"sku": b, "quantity": 1, "allocated": 1, "shipped": 0, "returned": 0, "canceled": 0},
    ]
    assert created(c.get(f"/v1/orders/{oid}"), 200) == view
    item = get_item(c, a)
    assert (loc(item, env.wh)["allocated"], loc(item, env.st)["allocated"]) == (4, 1)
    assert available(c, env.web, a)["available"] == 1

    too_many = [{"sku": f"{env.prefix}-L{i}", "quantity": 1} for i in range(101)]
    base = {"order_id": f"{env.prefix}-o2", "channel": env.web, "lines": lines(env, A=1)}

    def post(body: Any) -> httpx.Response:
        return c.post("/v1/orders", json=body, headers=env.idem())

    nope = f"{env.prefix}-nope"
    with unchanged(c, a, b):
        assert_problem(post({**base, "order_id": oid}), 409, "already-exists")
        body = assert_problem(
            post({**base, "lines": lines(env, A=2, B=2)}), 409, "insufficient-stock"
        )
        assert body["lines"] == [{"sku": a, "requested": 2, "available": 1}]
        assert_problem(
            post({**base, "channel": f"{env.prefix}-no"}), 422, "unknown-channel", field="channel"
        )
        assert_problem(post({**base, "lines": lines(env, A=0)}), 422, field="lines[0].quantity")
        assert_problem(post({**base, "lines": too_many}), 413)
        r = env.post_without_key("/v1/orders", json=base)
        assert_problem(r, 400, "idempotency-key-required")
        assert_problem(post({"channel": env.web, "lines": base["lines"]}), 400)
        r = c.post("/v1/orders", content=MALFORMED, headers={**JSON, **env.idem()})
        assert_problem(r, 400)
        assert_problem(c.get(f"/v1/orders/{nope}"), 404, "not-found")
        assert_problem(c.post(f"/v1/orders/{nope}/cancel", headers=env.idem()), 404)
        shipment = {"shipment_id": "s1", "location": env.wh, "lines": lines(env, A=1)}
        r = c.post(f"/v1/orders/{nope}/shipments", json=shipment, headers=env.idem())
        assert_problem(r, 404, "not-found")
        back = {"return_id": "r1", "location": env.wh, "lines": lines(env, A=1)}
        r = c.post(f"/v1/orders/{nope}/returns", json=back, headers=env.idem())
        assert_problem(r, 404, "not-found")
    assert_problem(c.get(f"/v1/orders/{env.prefix}-o2"), 404)

    # Shipments.
    def ship(body: Any) -> httpx.Response:
        return c.post(f"/v1/orders/{oid}/shipments", json=body, headers=env.idem())

    view = created(
        ship({"shipment_id": f"{env.prefix}-s1", "location": env.wh, "lines": lines(env, A=4)})
    )
    assert view["status"] == "partially_shipped"
    assert view["lines"][0]["shipped"] == 4
    figures = loc(get_item(c, a), env.wh)
    assert (figures["on_hand"], figures["allocated"]) == (0, 0)
    with unchanged(c, a, b, x):
        s2 = f"{env.prefix}-s2"
        r = ship({"shipment_id": s2, "location": env.wh, "lines": lines(env, A=1)})
        assert_problem(r, 409)  # nothing of the order is allocated at WH any more
        r = ship({"shipment_id": s2, "location": env.st, "lines": lines(env, A=2)})
        assert_problem(r, 409)  # only 1 left to ship
        r = ship({"shipment_id": f"{env.prefix}-s1", "location": env.st, "lines": lines(env, A=1)})
        assert_problem(r, 409, "already-exists")
        r = ship({"shipment_id": s2, "location": f"{env.prefix}-no", "lines": lines(env, A=1)})
        assert_problem(r, 422, "unknown-location", field="location")
        r = ship({"shipment_id": s2, "location": env.st, "lines": lines(env, X=1)})
        assert_problem(r, 422, field="lines[0].sku")
        r = ship({"shipment_id": s2, "location": env.st, "lines": lines(env, A=0)})
        assert_problem(r, 422, field="lines[0].quantity")
        assert_problem(ship({"location": env.st, "lines": lines(env, A=1)}), 400)
        r = env.post_without_key(
            f"/v1/orders/{oid}/shipments",
            json={"shipment_id": s2, "location": env.st, "lines": lines(env, A=1)},
        )
        assert_problem(r, 400, "idempotency-key-required")

    # Returns.
    def ret(body: Any) -> httpx.Response:
        return c.post(f"/v1/orders/{oid}/returns", json=body, headers=env.idem())

    with unchanged(c, a, b, x):
        r1 = f"{env.prefix}-r1"
        bad = [{"sku": a, "quantity": 1, "disposition": "lost"}]
        assert_problem(
            ret({"return_id": r1, "location": env.wh, "lines": bad}),
            422,
            field="lines[0].disposition",
        )
        r = ret({"return_id": r1, "location": env.wh, "lines": lines(env, A=5)})
        body = assert_problem(r, 409)
        assert body["lines"] == [{"sku": a, "requested": 5, "available": 4}]
        r = ret({"return_id": r1, "location": env.wh, "lines": lines(env, B=1)})
        assert_problem(r, 409)  # B never shipped
        r = ret({"return_id": r1, "location": f"{env.prefix}-no", "lines": lines(env, A=1)})
        assert_problem(r, 422, "unknown-location", field="location")
        r = ret({"return_id": r1, "location": env.wh, "lines": lines(env, X=1)})
        assert_problem(r, 422, field="lines[0].sku")
        assert_problem(ret({"return_id": r1, "location": env.wh}), 400)
        r = env.post_without_key(
            f"/v1/orders/{oid}/returns",
            json={"return_id": r1, "location": env.wh, "lines": lines(env, A=1)},
        )
        assert_problem(r, 400, "idempotency-key-required")

    view = created(
        ret({"return_id": f"{env.prefix}-r1", "location": env.wh, "lines": lines(env, A=1)})
    )
    assert view["status"] == "partially_returned"
    with unchanged(c, a):
        r = ret({"return_id": f"{env.prefix}-r1", "location": env.wh, "lines": lines(env, A=1)})
        assert_problem(r, 409, "already-exists")

    # Cancels.
    def cancel(body: Any) -> httpx.Response:
        return c.post(f"/v1/orders/{oid}/cancel", json=body, headers=env.idem())

    with unchanged(c, a, b, x):
        body = assert_problem(cancel({"lines": lines(env, A=2)}), 409)  # 1 unit of A open
        assert body["lines"] == [{"sku": a, "requested": 2, "available": 1}]
        assert_problem(cancel({"lines": lines(env, X=1)}), 422, field="lines[0].sku")
        assert_problem(cancel({"lines": []}), 422, field="lines")
        assert_problem(cancel({"lines": lines(env, A=0)}), 422)
        assert_problem(cancel({"lines": "all"}), 422)
        r = c.post(f"/v1/orders/{oid}/cancel", content=b"{", headers={**JSON, **env.idem()})
        assert_problem(r, 400, "malformed-json")
        r = env.post_without_key(f"/v1/orders/{oid}/cancel")
        assert_problem(r, 400, "idempotency-key-required")

    view = created(cancel({"lines": lines(env, B=1)}), 200)
    assert view["lines"][1]["canceled"] == 1
    assert loc(get_item(c, b), env.st)["allocated"] == 0
    assert available(c, env.web, b)["available"] == 3
    view = created(c.post(f"/v1/orders/{oid}/cancel", headers=env.idem()), 200)  # no body: the rest
    line = view["lines"][0]
    assert (line["quantity"], line["shipped"], line["returned"], line["canceled"]) == (5, 4, 1, 1)
    assert loc(get_item(c, a), env.st)["allocated"] == 0
    assert available(c, env.web, a)["available"] == 2 + 1  # ST 2 again, and WH 1 restocked


def test_cancel_whole_order_returns_stock(env: Env) -> None:
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=3)
    oid = f"{env.prefix}-o1"
    created(env.order(oid, A=3))
    assert available(c, env.web, a)["available"] == 0
    view = created(c.post(f"/v1/orders/{oid}/cancel", json={}, headers=env.idem()), 200)
    assert view["status"] == "canceled"
    assert view["lines"][0]["canceled"] == 3
    assert loc(get_item(c, a), env.wh)["allocated"] == 0
    assert available(c, env.web, a)["available"] == 3
    types = [e["type"] for e in own(history(c, a), a)]
    assert types == ["StockReceived", "StockAllocated", "AllocationReleased"]


def test_canceling_a_canceled_order_is_409(env: Env) -> None:
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=3)
    oid = f"{env.prefix}-o1"
    created(env.order(oid, A=1))
    created(c.post(f"/v1/orders/{oid}/cancel", headers=env.idem()), 200)
    with unchanged(c, a):
        assert_problem(c.post(f"/v1/orders/{oid}/cancel", headers=env.idem()), 409, "illegal-state")
    assert created(c.get(f"/v1/orders/{oid}"), 200)["status"] == "canceled"


# --- idempotency --------------------------------------------------------------------------


def test_idempotent_replay_and_key_reuse(env: Env) -> None:
    """Story: a till's checkout, a refused basket and a receipt each time out at the
    client, which sends them again with the same Idempotency-Key. Invariants: the retry is
    the first answer byte for byte, with `Idempotent-Replayed: true` and the first answer's
    `ATP-Position` (so the till can read its own write with `min_position`), and nothing
    happens twice; the key with another body is 422."""
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=5)
    key = env.key()
    body = {"channel": env.web, "lines": lines(env, A=2)}
    first = c.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    rid = created(first)["reservation_id"]
    assert first.headers.get("idempotent-replayed") is None
    with unchanged(c, a):
        again = c.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 201
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == first.content
        assert again.headers["atp-position"] == first.headers["atp-position"]
        seen = c.get(
            f"/v1/availability/{env.web}/{a}",
            params={"min_position": again.headers["atp-position"]},
        )
        assert seen.status_code == 200, seen.text
        other = {"channel": env.web, "lines": lines(env, A=1)}
        r = c.post("/v1/reservations", json=other, headers={"Idempotency-Key": key})
        assert_problem(r, 422, "idempotency-key-reused")
    assert loc(get_item(c, a), env.wh)["held"] == 2

    # A 4xx is replayed too, even once the stock is there.
    key = env.key()
    big = {"channel": env.web, "lines": lines(env, A=10)}
    refused = c.post("/v1/reservations", json=big, headers={"Idempotency-Key": key})
    assert_problem(refused, 409, "insufficient-stock")
    env.receive(env.st, A=20)
    with unchanged(c, a):
        replay = c.post("/v1/reservations", json=big, headers={"Idempotency-Key": key})
        assert_problem(replay, 409, "insufficient-stock")
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.content == refused.content
        assert replay.headers["atp-position"] == refused.headers["atp-position"]
    created(c.post("/v1/reservations", json=big, headers=env.idem()))

    # Stock movements require a key too: a replayed receipt receives once.
    key = env.key()
    receipt = {"location": env.wh, "lines": lines(env, A=1)}
    received = c.post("/v1/receipts", json=receipt, headers={"Idempotency-Key": key})
    created(received)
    on_hand = loc(get_item(c, a), env.wh)["on_hand"]
    r = c.post("/v1/receipts", json=receipt, headers={"Idempotency-Key": key})
    assert (r.status_code, r.headers.get("idempotent-replayed")) == (201, "true")
    assert r.headers["atp-position"] == received.headers["atp-position"]
    assert loc(get_item(c, a), env.wh)["on_hand"] == on_hand

    # A 404 for the path's resource is recorded and replayed as well.
    key = env.key()
    nope = f"/v1/reservations/{env.prefix}-nope/release"
    assert_problem(c.post(nope, headers={"Idempotency-Key": key}), 404)
    r = c.post(nope, headers={"Idempotency-Key": key})
    assert_problem(r, 404)
    assert r.headers.get("idempotent-replayed") == "true"

    # Releases replay their first answer (no second release, no 409).
    key = env.key()
    created(c.post(f"/v1/reservations/{rid}/release", headers={"Idempotency-Key": key}), 200)
    r = c.post(f"/v1/reservations/{rid}/release", headers={"Idempotency-Key": key})
    assert (r.status_code, r.headers.get("idempotent-replayed")) == (200, "true")
    assert r.json()["status"] == "released"


def test_idempotency_keys_are_scoped_per_route_and_token_name(server: Server, env: Env) -> None:
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=10)
    key = env.key()
    body = {"channel": env.web, "lines": lines(env, A=1)}
    first = created(c.post("/v1/reservations", json=body, headers={"Idempotency-Key": key}))
    # Same key on another route: a new request.
    order = {"order_id": f"{env.prefix}-o1", "channel": env.web, "lines": lines(env, A=1)}
    r = c.post("/v1/orders", json=order, headers={"Idempotency-Key": key})
    assert created(r)["status"] == "allocated"
    assert r.headers.get("idempotent-replayed") is None
    # Same key and body under another token name: a new reservation.
    token = make_token(c, f"{env.prefix}-shop", ["reservations:write"])
    with server.client(token) as shop:
        r = shop.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
        second = created(r)
        assert r.headers.get("idempotent-replayed") is None
        assert second["reservation_id"] != first["reservation_id"]
        r = shop.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
        assert r.headers.get("idempotent-replayed") == "true"
        assert r.json()["reservation_id"] == second["reservation_id"]
    figures = loc(get_item(c, a), env.wh)
    assert (figures["held"], figures["allocated"]) == (2, 1)


def test_idempotent_replay_is_answered_by_every_worker(server: Server, env: Env) -> None:
    """The replay may arrive on a new connection, served by the other worker process."""
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=5)
    key = env.key()
    body = {"channel": env.web, "lines": lines(env, A=2)}
    first = c.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    created(first)
    other = {"channel": env.web, "lines": lines(env, A=1)}
    seen = []
    for attempt in range(8):
        with server.client() as fresh:  # a new connection: either worker may take it
            if attempt % 2:
                r = fresh.post("/v1/reservations", json=other, headers={"Idempotency-Key": key})
                seen.append((r.status_code, r.json().get("code")))
            else:
                r = fresh.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
                replayed = r.headers.get("idempotent-replayed")
                seen.append((r.status_code, replayed, r.content == first.content))
        if r.status_code >= 500:
            break
    assert loc(get_item(c, a), env.wh)["held"] == 2  # never a second effect
    expected = [(201, "true", True), (422, "idempotency-key-reused")] * 4
    assert seen == expected[: len(seen)] and len(seen) == 8, seen


# --- expiry -------------------------------------------------------------------------------


def test_expired_reservation_stops_counting(env: Env) -> None:
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=3)
    view = created(env.reserve(ttl=1, A=2))
    rid = view["reservation_id"]
    assert view["status"] == "held"
    assert available(c, env.web, a)["available"] == 1
    deadline = time.monotonic() + 3
    while available(c, env.web, a)["available"] != 3:
        assert time.monotonic() < deadline, "the expired hold still counts"
        time.sleep(0.1)
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "expired"
    assert loc(get_item(c, a), env.wh)["held"] == 0
    assert loc(get_item(c, a), env.wh)["sellable"] == 3
    # The sweeper records the expiry in the SKU's history.
    deadline = time.monotonic() + 3
    while "HoldExpired" not in [e["type"] for e in own(history(c, a), a)]:
        assert time.monotonic() < deadline, "no HoldExpired entry in the history"
        time.sleep(0.2)
    # The sweeper's write is not this client's: wait until the read model includes it, so
    # `unchanged` compares from there.
    expired_at = max(e["position"] for e in own(history(c, a), a))
    while get_item(c, a)["position"] < expired_at:
        assert time.monotonic() < deadline + 3, "the read model never included the expiry"
        time.sleep(0.05)
    with unchanged(c, a):
        assert_problem(
            c.post(f"/v1/reservations/{rid}/release", headers=env.idem()), 409, "illegal-state"
        )
        r = c.post(f"/v1/reservations/{rid}/extend", json={"ttl_seconds": 60}, headers=env.idem())
        assert_problem(r, 409, "illegal-state")
    assert created(c.get(f"/v1/reservations/{rid}"), 200)["status"] == "expired"


# --- the whole flow -----------------------------------------------------------------------


def test_walkthrough_checkout_to_return(env: Env) -> None:
    c = env.client
    a, b = env.sku("A"), env.sku("B")
    wh, st, web = env.wh, env.st, env.web

    def cid(step: str) -> dict[str, str]:
        return {"X-Correlation-ID": f"{env.prefix}-{step}"}

    def figures(sku: str, location: str, *names: str) -> tuple[int, ...]:
        f = loc(get_item(c, sku), location)
        return tuple(f[n] for n in names)

    def order_status() -> str:
        status: str = created(c.get(f"/v1/orders/{oid}"), 200)["status"]
        return status

    # 1. Receive.
    r = c.post(
        "/v1/receipts", json={"location": wh, "lines": lines(env, A=3)}, headers=cid("recv1")
    )
    created(r)
    assert r.headers["x-correlation-id"] == f"{env.prefix}-recv1"
    r = c.post(
        "/v1/receipts", json={"location": st, "lines": lines(env, A=5, B=4)}, headers=cid("recv2")
    )
    created(r)
    assert available(c, web, a) | {"position": 0} == {
        "sku": a,
        "channel": web,
        "available": 8,
        "status": "in_stock",
        "position": 0,
    }
    assert available(c, web, b)["available"] == 4

    # 2. Reserve at checkout: A is split across WH then ST in sourcing order.
    body = {"channel": web, "lines": lines(env, A=5, B=2), "ttl_seconds": 600, "reference": "cart"}
    r = c.post("/v1/reservations", json=body, headers={**env.idem(), **cid("reserve")})
    reservation = created(r)
    assert r.headers["x-correlation-id"] == f"{env.prefix}-reserve"
    assert [line["holds"] for line in reservation["lines"]] == [
        [{"location": wh, "quantity": 3}, {"location": st, "quantity": 2}],
        [{"location": st, "quantity": 2}],
    ]
    assert figures(a, wh, "held", "sellable") == (3, 0)
    assert figures(a, st, "held", "sellable") == (2, 3)
    assert figures(b, st, "held", "sellable") == (2, 2)
    one = available(c, web, a)
    assert (one["available"], one["status"]) == (3, "in_stock")
    many = created(c.get(f"/v1/availability/{web}", params=[("sku", a), ("sku", b)]), 200)
    assert [(x["available"], x["status"]) for x in many["items"]] == [
        (3, "in_stock"),
        (2, "low_stock"),
    ]

    # 3. Commit to an order.
    oid = f"{env.prefix}-order"
    rid = reservation["reservation_id"]
    r = c.post(
        f"/v1/reservations/{rid}/commit",
        json={"order_id": oid},
        headers={**env.idem(), **cid("commit")},
    )
    assert created(r)["status"] == "committed"
    assert order_status() == "allocated"
    assert figures(a, wh, "held", "allocated", "sellable") == (0, 3, 0)
    assert figures(a, st, "held", "allocated", "sellable") == (0, 2, 3)
    assert available(c, web, a)["available"] == 3

    # 4. Ship in two parcels.
    ship = {"shipment_id": f"{env.prefix}-s1", "location": wh, "lines": lines(env, A=3)}
    r = c.post(f"/v1/orders/{oid}/shipments", json=ship, headers={**env.idem(), **cid("ship1")})
    assert created(r)["status"] == "partially_shipped"
    assert order_status() == "partially_shipped"
    assert figures(a, wh, "on_hand", "allocated", "sellable") == (0, 0, 0)
    ship = {"shipment_id": f"{env.prefix}-s2", "location": st, "lines": lines(env, A=2, B=2)}
    r = c.post(f"/v1/orders/{oid}/shipments", json=ship, headers={**env.idem(), **cid("ship2")})
    assert created(r)["status"] == "shipped"
    assert order_status() == "shipped"
    assert figures(a, st, "on_hand", "allocated", "sellable") == (3, 0, 3)
    assert figures(b, st, "on_hand", "allocated", "sellable") == (2, 0, 2)
    assert available(c, web, a)["available"] == 3
    assert available(c, web, b)["available"] == 2

    # 5. Returns: restock at ST, damaged back at WH.
    ret = {
        "return_id": f"{env.prefix}-r1",
        "location": st,
        "lines": [{"sku": a, "quantity": 1, "disposition": "restock"}],
    }
    r = c.post(f"/v1/orders/{oid}/returns", json=ret, headers={**env.idem(), **cid("return1")})
    assert created(r)["status"] == "partially_returned"
    assert order_status() == "partially_returned"
    assert figures(a, st, "on_hand", "damaged", "sellable") == (4, 0, 4)
    assert available(c, web, a)["available"] == 4
    ret = {
        "return_id": f"{env.prefix}-r2",
        "location": wh,
        "lines": [
            {"sku": a, "quantity": 4, "disposition": "damaged"},
            {"sku": b, "quantity": 2, "disposition": "restock"},
        ],
    }
    r = c.post(f"/v1/orders/{oid}/returns", json=ret, headers={**env.idem(), **cid("return2")})
    view = created(r)
    assert view["status"] == "returned"
    assert [(x["sku"], x["shipped"], x["returned"]) for x in view["lines"]] == [
        (a, 5, 5),
        (b, 2, 2),
    ]
    assert order_status() == "returned"
    assert figures(a, wh, "on_hand", "damaged", "sellable") == (4, 4, 0)
    assert figures(b, wh, "on_hand", "damaged", "sellable") == (2, 0, 2)
    assert available(c, web, a)["available"] == 4
    assert available(c, web, b)["available"] == 4
    channel = chan(get_item(c, a), web)
    assert (channel["available"], channel["status"], channel["derivation"]["pool"]) == (
        4,
        "in_stock",
        4,
    )

    # History: one entry per event, oldest first, carrying the request's correlation id.
    entries = own(history(c, a), a)
    assert [(e["type"], e["correlation_id"].removeprefix(f"{env.prefix}-")) for e in entries] == [
        ("StockReceived", "recv1"),
        ("StockReceived", "recv2"),
        ("StockHeld", "reserve"),
        ("HoldCommitted", "commit"),
        ("StockShipped", "ship1"),
        ("StockShipped", "ship2"),
        ("StockReturned", "return1"),
        ("StockReturned", "return2"),
    ]
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions)
    held = entries[2]
    assert (held["quantity"], held["reservation_id"]) == (5, rid)
    assert [(e["location"], e["quantity"]) for e in entries[4:6]] == [(wh, 3), (st, 2)]
    assert [e["disposition"] for e in entries[6:]] == ["restock", "damaged"]
    b_cids = [e["correlation_id"] for e in own(history(c, b), b)]
    assert [x.removeprefix(f"{env.prefix}-") for x in b_cids] == [
        "recv2",
        "reserve",
        "commit",
        "ship2",
        "return2",
    ]


# --- misspelt fields -------------------------------------------------------------------------


def test_a_misspelt_field_is_refused_by_name_and_changes_nothing(env: Env) -> None:
    """Story: the night before Black Friday a planner raises the web channel's buffer with
    `{"bufer": 40}`; a WMS integration sends receipt lines with a `"lot"` atp does not keep; a
    storefront adds `"quantity_requested"` to a reservation line. Before, the policy PUT
    answered 200 and silently kept the old buffer, so the planner believed the change was live.

    Invariant: a body with a field the route does not document is a 422 problem whose `field`
    is that field's path, and nothing is recorded (the figures and the channel stay as they
    were)."""
    c = env.client
    created(
        c.post(
            "/v1/receipts", json={"location": env.wh, "lines": lines(env, A=10)}, headers=env.idem()
        )
    )
    channels_before = created(c.get("/v1/channels"), 200)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("PUT", f"/v1/channels/{env.web}", {"locations": [env.wh], "bufer": 40}, "bufer"),
        ("PUT", f"/v1/locations/{env.wh}", {"name": "WH", "kind": "warehouse", "x": 1}, "x"),
        (
            "POST",
            "/v1/receipts",
            {"location": env.wh, "lines": [{"sku": env.sku(), "quantity": 5, "lot": "L7"}]},
            "lines[0].lot",
        ),
        (
            "POST",
            "/v1/reservations",
            {
                "channel": env.web,
                "lines": [{"sku": env.sku(), "quantity": 1, "quantity_requested": 9}],
            },
            "lines[0].quantity_requested",
        ),
    ]
    with unchanged(c, env.sku()):
        for method, path, body, field in cases:
            r = c.request(method, path, json=body, headers=env.idem())
            assert_problem(r, 422, field=field)
    assert created(c.get("/v1/channels"), 200) == channels_before
