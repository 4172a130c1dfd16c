"""The read API over HTTP (`atp serve`) on the Redis read model kept by `atp project`, and on
the in-process read model of the embedded mode: the same documents, read-your-writes with
min_position, and lag that /metrics and /ready make visible."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from adapters.ledger import Ledger, ledger_env
from atp.decide import POLICIES
from projections.views import sku_documents
from tests.support.pg import fresh_database
from tests.support.projection import ledger_truth
from tests.support.read_stack import ROOT, Stack
from tests.support.redis_db import TcpProxy, prefixed, redis_url
from tests.support.server import ADMIN_TOKEN, running_service, service_env

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROBLEM = "application/problem+json"
SKUS = [f"S{i:03d}" for i in range(120)]
DB = 0
ODD_SKU = "Case/01:x.y-z"
"""A SKU with every punctuation a code may have ('/' travels as %2F in a path)."""


def quantity(i: int) -> int:
    return i % 9 + 1


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def seed(c: httpx.Client) -> None:
    _ok(c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"}))
    _ok(c.put("/v1/locations/ST1", json={"name": "Store", "kind": "store"}))
    _ok(c.put("/v1/channels/web", json={"locations": ["WH1", "ST1"], "low_stock_threshold": 3}))
    _ok(
        c.put(
            "/v1/channels/pos",
            json={"locations": ["ST1"], "buffer": 1, "share_percent": 50},
        )
    )
    for chunk in (SKUS[:100], SKUS[100:]):
        lines = [{"sku": s, "quantity": quantity(SKUS.index(s))} for s in chunk]
        _ok(c.post("/v1/receipts", json={"location": "WH1", "lines": lines}), 201)
    _ok(
        c.post(
            "/v1/receipts",
            json={
                "location": "ST1",
                "lines": [{"sku": "S001", "quantity": 4}, {"sku": ODD_SKU, "quantity": 8}],
            },
        ),
        201,
    )


@pytest.fixture
def stack() -> Iterator[Stack]:
    with fresh_database() as url, prefixed(DB, "api") as (r, prefix):
        env = service_env(url, ATP_REDIS_URL=redis_url(DB), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        with running_service(env) as server:
            s = Stack(server, r, prefix, env, url)
            s.start_projector()
            try:
                with server.client() as c:
                    seed(c)
                s.wait_caught_up()
                yield s
            finally:
                s.stop_projector()


# --- reads ---------------------------------------------------------------------------------------


def test_availability_and_item_reads_come_from_redis(stack: Stack) -> None:
    with stack.server.client() as c:
        # One SKU: exactly the stored document, which is what the domain computes.
        r = c.get("/v1/availability/web/S001")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.content == stack.ats("S001", "web")
        body = r.json()
        assert body == {
            "sku": "S001",
            "channel": "web",
            "available": quantity(1) + 4,
            "status": "in_stock",
            "position": body["position"],
        }
        with stack.ledger() as ledger:
            item, _ = ledger.load(("item", "S001"))
            policies, _ = ledger.load(POLICIES)
            expected = sku_documents(item, policies, datetime.now(UTC), body["position"])
        assert r.content == expected.availability["web"]
        assert _ok(c.get("/v1/availability/pos/S001"))["available"] == 4 * 50 // 100 - 1

        # Up to 100 SKUs in one request, in the order asked, duplicates once.
        asked = SKUS[:100]
        r = c.get("/v1/availability/web", params=[("sku", s) for s in asked])
        items = _ok(r)["items"]
        assert [x["sku"] for x in items] == asked
        assert (
            r.content
            == b'{"items":[' + b",".join(stack.ats(s, "web") or b"" for s in asked) + b"]}"
        )
        assert [x["available"] for x in items[2:]] == [quantity(i) for i in range(2, 100)]
        statuses = {x["status"] for x in items}
        assert statuses == {"low_stock", "in_stock"}
        r = c.get("/v1/availability/web", params=[("sku", s) for s in SKUS[:101]])
        assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM)
        twice = _ok(c.get("/v1/availability/web", params=[("sku", "S005"), ("sku", "S005")]))
        assert [x["sku"] for x in twice["items"]] == ["S005"]

        # Unknown SKUs: 200 with zeros, alone and among known ones.
        head = stack.meta_position()
        unknown = _ok(c.get("/v1/availability/web/NOPE-1"))
        assert unknown == {
            "sku": "NOPE-1",
            "channel": "web",
            "available": 0,
            "status": "out_of_stock",
            "position": head,
        }
        mixed = _ok(c.get("/v1/availability/web", params=[("sku", "S003"), ("sku", "NOPE-2")]))
        assert [(x["sku"], x["available"], x["status"]) for x in mixed["items"]] == [
            ("S003", quantity(3), "in_stock"),
            ("NOPE-2", 0, "out_of_stock"),
        ]
        # Unknown channel: 404, for known and unknown SKUs, one or many.
        for path in (
            "/v1/availability/nochannel/S001",
            "/v1/availability/nochannel/NOPE-1",
            "/v1/availability/nochannel?sku=S001&sku=NOPE-1",
        ):
            r = c.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)

        # The item document with per-location figures and each channel's derivation.
        r = c.get("/v1/items/S001")
        assert r.content == stack.redis.get(f"{stack.prefix}:{{S001}}:item")
        assert r.content == expected.item
        doc = r.json()
        assert doc["sku"] == "S001" and doc["position"] == body["position"]
        locations = {x["location"]: x for x in doc["locations"]}
        assert set(locations) == {"WH1", "ST1"}
        assert (locations["WH1"]["on_hand"], locations["WH1"]["sellable"]) == (2, 2)
        assert (locations["ST1"]["on_hand"], locations["ST1"]["sellable"]) == (4, 4)
        for loc in locations.values():
            for name in ("allocated", "held", "damaged", "in_transit", "incoming", "safety_stock"):
                assert loc[name] == 0, name
        channels = {x["channel"]: x for x in doc["channels"]}
        assert set(channels) == {"web", "pos"}
        web = channels["web"]
        assert (web["available"], web["status"]) == (6, "in_stock")
        d = web["derivation"]
        assert (d["pool"], d["share_percent"], d["buffer"], d["on_hand_available"]) == (
            6,
            100,
            0,
            6,
        )
        assert [(x["location"], x["sellable"]) for x in d["locations"]] == [("WH1", 2), ("ST1", 4)]
        pos = channels["pos"]["derivation"]
        assert (pos["pool"], pos["share_percent"], pos["buffer"]) == (4, 50, 1)
        assert channels["pos"]["available"] == 1
        # Codes with '/', ':' and '.' (percent-encoded in the path, plain in the query).
        odd = _ok(c.get(f"/v1/availability/web/{quote(ODD_SKU, safe='')}"))
        assert (odd["sku"], odd["available"]) == (ODD_SKU, 8)
        assert odd == json.loads(stack.ats(ODD_SKU, "web") or b"null")
        odd_many = _ok(c.get("/v1/availability/pos", params=[("sku", ODD_SKU), ("sku", "S001")]))
        assert [(x["sku"], x["available"]) for x in odd_many["items"]] == [
            (ODD_SKU, 3),
            ("S001", 1),
        ]
        assert _ok(c.get(f"/v1/items/{quote(ODD_SKU, safe='')}"))["sku"] == ODD_SKU
        empty = _ok(c.get("/v1/items/NOPE-3"))
        assert empty["sku"] == "NOPE-3"
        assert all(x["on_hand"] == 0 and x["sellable"] == 0 for x in empty["locations"])
        assert {x["channel"]: x["available"] for x in empty["channels"]} == {"web": 0, "pos": 0}


def test_a_leaked_storefront_read_key_moves_no_stock_with_redis_reads(stack: Stack) -> None:
    """Story: during a sale a storefront's read-only key (`availability:read`) leaks, and a
    script tries to post a receipt and a reservation with it, one with `"5"` as a
    quantity, while anonymous scrapers hit the availability route. With the Redis read
    model no route middleware runs: admission is Litestar's `before_request` hook
    (api.http.middleware.admit).

    Invariant: no token is 401 and an unknown one too; the read key reads (200) but every
    write with it is 403, a malformed one included (authentication comes before decoding);
    the admin token's malformed write is a 422 naming the field; and nothing moved: the
    ledger's stream of S001 (its version) and its figures are as they were (the key's first
    use is recorded, as every token's is, on the token's own stream)."""
    url = stack.server.url
    with stack.server.client() as admin:
        key = _ok(
            admin.post("/v1/tokens", json={"name": "shop-read", "scopes": ["availability:read"]}),
            201,
        )["token"]
        stack.wait_caught_up()
        before = _stock_of_s001(stack, admin)
        bad_quantity = {"location": "WH1", "lines": [{"sku": "S001", "quantity": "5"}]}
        reserve = {"channel": "web", "lines": [{"sku": "S001", "quantity": 1}]}
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            r = anonymous.get("/v1/availability/web/S001")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            r = anonymous.get("/v1/availability/web/S001", headers={"Authorization": "Bearer x"})
            assert (r.status_code, r.json()["detail"]) == (401, "unknown token")
        leaked = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=leaked, timeout=30) as shop:
            assert _ok(shop.get("/v1/availability/web/S001"))["sku"] == "S001"
            for path, body in (
                ("/v1/receipts", bad_quantity),
                ("/v1/receipts", {**bad_quantity, "lines": [{"sku": "S001", "quantity": 5}]}),
                ("/v1/reservations", reserve),
            ):
                r = shop.post(path, json=body, headers={"Idempotency-Key": f"leak-{path}"})
                assert r.status_code == 403, (path, r.text)
                assert r.json()["code"] == "forbidden"
        r = admin.post("/v1/receipts", json=bad_quantity, headers={"Idempotency-Key": "bad-q"})
        assert r.status_code == 422 and r.json()["field"] == "lines[0].quantity", r.text
        after = _stock_of_s001(stack, admin)
    assert after == before


def _stock_of_s001(stack: Stack, client: httpx.Client) -> tuple[int, bytes]:
    """S001's item stream version in the ledger and its item document as read."""
    with stack.ledger() as ledger:
        _, version = ledger.load(("item", "S001"))
    return version, client.get("/v1/items/S001").content


def _monitor(r: redis.Redis, marker: str, out: list[str], ready: threading.Event) -> None:
    with r.monitor() as m:
        ready.set()
        for entry in m.listen():
            command = entry["command"]
            if marker in command:
                return
            out.append(f"{entry['client_address']}:{entry['client_port']} {command}")


def test_reads_are_one_redis_command_and_one_round_trip(stack: Stack) -> None:
    """GET of one SKU is one HGET; GET of 100 SKUs is 100 HGETs sent together, nothing else."""
    prefix = stack.prefix
    with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
        assert c.get("/v1/availability/web/S010").status_code == 200  # warm connections
        for path, expected in (
            ("/v1/availability/web/S010", 1),
            ("/v1/availability/web?" + "&".join(f"sku={s}" for s in SKUS[:100]), 100),
        ):
            seen: list[str] = []
            marker = f"end-{uuid.uuid4().hex}"
            ready = threading.Event()
            monitor = redis.Redis.from_url(redis_url(DB))
            thread = threading.Thread(target=_monitor, args=(monitor, marker, seen, ready))
            thread.start()
            try:
                assert ready.wait(5)
                time.sleep(0.05)
                assert c.get(path).status_code == 200
            finally:
                stack.redis.echo(marker)
                thread.join(timeout=10)
                monitor.close()
            ours = [s for s in seen if f"{prefix}:{{S" in s]
            assert len(ours) == expected, ours[:5]
            assert all(s.split(" ", 1)[1].startswith("HGET ") for s in ours), ours[:5]
            assert all(s.endswith(":ats web") for s in ours), ours[:5]
            clients = {s.split(" ", 1)[0] for s in ours}
            assert len(clients) == 1
            # The API's connection sent nothing else meanwhile.
            (api,) = clients
            assert [s for s in seen if s.startswith(api + " ")] == ours


def test_min_position_waits_for_the_projector_then_409(stack: Stack) -> None:
    assert stack.projector is not None
    with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
        before = _ok(c.get("/v1/availability/web/S002"))["available"]
        # The projector pauses; a write happens; a read asking for it waits for the projector.
        os.killpg(stack.projector.pid, signal.SIGSTOP)
        try:
            r = c.post(
                "/v1/receipts",
                json={"location": "WH1", "lines": [{"sku": "S002", "quantity": 5}]},
                headers={"Idempotency-Key": "paused-projector-receipt"},
            )
            assert r.status_code == 201, r.text
            position = int(r.headers["ATP-Position"])
            assert stack.meta_position() < position
            stale = _ok(c.get("/v1/availability/web/S002"))
            assert stale["available"] == before and stale["position"] < position
            result: dict[str, Any] = {}

            def read() -> None:
                started = time.monotonic()
                result["response"] = c.get(
                    "/v1/availability/web/S002", params={"min_position": position}
                )
                result["took"] = time.monotonic() - started

            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(0.4)
        finally:
            os.killpg(stack.projector.pid, signal.SIGCONT)
        reader.join(timeout=10)
        fresh = _ok(result["response"])
        # The figure includes the receipt; ATP-Position is the write's last event, which is
        # its idempotency record (keys are required), one after the SKU's own event.
        assert fresh["available"] == before + 5 and fresh["position"] >= position - 1
        assert stack.meta_position() >= position
        assert 0.3 < result["took"] < 1.5
        for path in ("/v1/availability/web", "/v1/items/S002"):
            params: list[tuple[str, Any]] = [("min_position", position)]
            if path == "/v1/availability/web":
                params.append(("sku", "S002"))
            assert c.get(path, params=params).status_code == 200

        # A position far ahead: 409 read-model-behind after a short wait.
        far = position + 1_000_000
        for path, extra in (
            ("/v1/availability/web/S002", []),
            ("/v1/availability/web", [("sku", "S002")]),
            ("/v1/items/S002", []),
        ):
            started = time.monotonic()
            r = c.get(path, params=[*extra, ("min_position", far)])
            took = time.monotonic() - started
            assert r.status_code == 409, (path, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            problem = r.json()
            assert problem["type"].endswith("read-model-behind"), problem
            assert problem["min_position"] == far and problem["position"] >= position
            assert 0.5 < took < 5, took
        r = c.get("/v1/availability/web/S002", params={"min_position": -1})
        assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM)


# --- lag ----------------------------------------------------------------------------------------


def metrics(c: httpx.Client) -> dict[str, float]:
    r = c.get("/metrics")
    assert r.status_code == 200
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_and_ready_report_the_projector_lag(stack: Stack) -> None:
    with httpx.Client(base_url=stack.server.url, headers=HEADERS, timeout=30) as c:
        for path in (
            "/v1/availability/web/S001",
            "/v1/availability/web?sku=S001&sku=S002",
            "/v1/items/S001",
        ):
            assert c.get(path).status_code == 200
        head = stack.wait_caught_up()
        m = metrics(c)
        assert m["atp_projector_position"] == m["atp_ledger_head_position"] == head
        assert m["atp_projector_events_behind"] == 0
        assert m["atp_projector_seconds_behind"] == 0
        text = c.get("/metrics").text
        assert "# TYPE atp_http_request_duration_seconds histogram" in text
        routes = set(
            re.findall(r'atp_http_request_duration_seconds_count\{[^}]*route="([^"]+)"', text)
        )
        for route in (
            "/v1/availability/{channel}/{sku}",
            "/v1/availability/{channel}",
            "/v1/items/{sku}",
        ):
            assert any(r.replace(":str", "") == route for r in routes), (route, routes)
        for route in routes:
            labels = f'method="GET",route="{route}",status="200"'
            if f"atp_http_request_duration_seconds_count{{{labels}}}" not in text:
                continue
            assert f'atp_http_request_duration_seconds_bucket{{le="+Inf",{labels}}}' in text
            assert f"atp_http_request_duration_seconds_sum{{{labels}}}" in text

        ready = _ok(c.get("/ready"))
        assert ready["status"] == "ready"
        assert ready["checks"]["read_model"] == {"status": "ok", "kind": "redis"}
        projector = ready["checks"]["projector"]
        assert projector["status"] == "ok"
        assert projector["events_behind"] == 0 and projector["position"] == head

        # The projector stops; writes go on: the lag shows.
        stack.stop_projector()
        for i in range(3):
            r = c.post(
                "/v1/receipts",
                json={"location": "WH1", "lines": [{"sku": f"S00{i}", "quantity": 1}]},
                headers={"Idempotency-Key": f"stopped-projector-receipt-{i}"},
            )
            assert r.status_code == 201, r.text
        time.sleep(0.2)
        ready = _ok(c.get("/ready"))
        projector = ready["checks"]["projector"]
        assert projector["events_behind"] >= 3 and projector["head"] > projector["position"]
        assert projector["seconds_behind"] > 0
        m = metrics(c)
        assert m["atp_projector_events_behind"] >= 3
        assert m["atp_projector_seconds_behind"] > 0
        assert m["atp_ledger_head_position"] > m["atp_projector_position"] == head
        # Ten seconds without a heartbeat (emulated): stale, so degraded (still 200).
        stack.redis.hset(f"{stack.prefix}:meta", "heartbeat", time.time() - 60)
        ready = _ok(c.get("/ready"))
        assert ready["checks"]["projector"]["status"] == "stale"
        assert ready["status"] == "degraded"

        # Back again, it catches up.
        stack.start_projector()
        stack.wait_caught_up()
        ready = _ok(c.get("/ready"))
        assert ready["checks"]["projector"]["events_behind"] == 0
        assert ready["checks"]["projector"]["status"] == "ok" and ready["status"] == "ready"
        assert metrics(c)["atp_projector_events_behind"] == 0


# --- embedded ------------------------------------------------------------------------------------


def test_embedded_mode_serves_the_same_documents(stack: Stack) -> None:
    """A server without ATP_REDIS_URL on the same ledger answers byte for byte the same."""
    with stack.server.client() as c:
        _ok(c.put("/v1/channels/bo", json={"locations": ["WH1"], "backorder_limit": 5}))
        _ok(
            c.post(
                "/v1/incoming", json={"location": "WH1", "lines": [{"sku": "S004", "quantity": 3}]}
            ),
            201,
        )
        _ok(
            c.post(
                "/v1/reservations",
                json={
                    "channel": "web",
                    "lines": [{"sku": "S001", "quantity": 2}],
                    "ttl_seconds": 3600,
                },
                headers={"Idempotency-Key": "emb-1"},
            ),
            201,
        )
        _ok(
            c.post(
                "/v1/orders",
                json={
                    "order_id": "emb-o1",
                    "channel": "web",
                    "lines": [{"sku": "S002", "quantity": 1}],
                },
                headers={"Idempotency-Key": "emb-2"},
            ),
            201,
        )
        _ok(c.put("/v1/safety-stock", json={"sku": None, "location": "ST1", "quantity": 1}))
        _ok(c.put("/v1/safety-stock", json={"sku": "S003", "location": None, "quantity": 2}))
    stack.wait_caught_up()
    env = service_env(stack.database_url)
    env["PYTHONPATH"] = str(ROOT)
    assert "ATP_REDIS_URL" not in env
    skus = ["S001", "S002", "S003", "S004", "S119", "NOPE-9"]
    paths = [f"/v1/items/{s}" for s in skus]
    paths += [f"/v1/availability/{ch}/{s}" for ch in ("web", "pos", "bo") for s in skus]
    paths += [
        f"/v1/availability/{ch}?" + "&".join(f"sku={s}" for s in SKUS[:100]) for ch in ("web", "bo")
    ]
    paths += ["/v1/availability/web?sku=S001&sku=NOPE-9"]
    with running_service(env) as embedded:
        embedded.catch_up()
        with stack.server.client() as redis_side, embedded.client() as memory_side:
            ready = _ok(memory_side.get("/ready"))
            assert ready["checks"]["read_model"] == {"status": "ok", "kind": "in-process"}
            assert ready["checks"]["projector"]["events_behind"] == 0
            stack.server.catch_up()
            for path in paths:
                a, b = redis_side.get(path), memory_side.get(path)
                assert a.status_code == b.status_code == 200, (path, a.text, b.text)
                assert a.content == b.content, path
            assert memory_side.get("/v1/availability/nochannel/S001").status_code == 404


# --- Redis away ----------------------------------------------------------------------------------


def test_redis_outage_is_503_and_ready_says_so() -> None:
    """Reads answer 503 with Retry-After while Redis is unreachable (never a 500), /ready says
    the read model is down, writes still land in the ledger, and reads come back with it."""
    proxy = TcpProxy()
    proxy.start()
    with fresh_database() as url, prefixed(DB, "out") as (r, prefix):
        env = service_env(url, ATP_REDIS_URL=proxy.url(DB), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        projector_env = {**env, "ATP_REDIS_URL": redis_url(DB)}
        try:
            with running_service(env) as server:
                stack = Stack(server, r, prefix, projector_env, url)
                stack.start_projector()
                try:
                    with server.client() as c:
                        seed(c)
                        stack.wait_caught_up()
                        assert _ok(c.get("/v1/availability/web/S010"))["available"] == quantity(10)
                    proxy.stop()
                    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as c:
                        for path in (
                            "/v1/availability/web/S010",
                            "/v1/availability/web?sku=S010",
                            "/v1/items/S010",
                        ):
                            started = time.monotonic()
                            resp = c.get(path)
                            took = time.monotonic() - started
                            assert resp.status_code == 503, (path, resp.status_code, resp.text)
                            assert resp.headers["Retry-After"]
                            assert resp.headers["content-type"].startswith(PROBLEM)
                            assert "Traceback" not in resp.text
                            assert took < 5, (path, took)
                        ready = c.get("/ready")
                        assert ready.status_code == 503
                        assert ready.json()["checks"]["read_model"]["status"] == "down"
                        assert ready.json()["checks"]["read_model"]["kind"] == "redis"
                        # The ledger does not need Redis: writes go on.
                        resp = c.post(
                            "/v1/receipts",
                            json={"location": "WH1", "lines": [{"sku": "S010", "quantity": 7}]},
                            headers={"Idempotency-Key": "redis-down-receipt"},
                        )
                        assert resp.status_code == 201, resp.text
                        position = int(resp.headers["ATP-Position"])
                        proxy.start()
                        deadline = time.monotonic() + 20
                        while c.get("/ready").status_code != 200:
                            assert time.monotonic() < deadline, "reads did not come back"
                            time.sleep(0.1)
                        fresh = _ok(
                            c.get("/v1/availability/web/S010", params={"min_position": position})
                        )
                        assert fresh["available"] == quantity(10) + 7
                finally:
                    stack.stop_projector()
        finally:
            proxy.stop()


def test_embedded_sqlite_mode_without_redis_reads_its_writes(tmp_path: Path) -> None:
    """No ATP_DATABASE_URL, no ATP_REDIS_URL: the SQLite ledger and the in-process read model,
    with the same documents the domain computes and read-your-writes."""
    env = service_env(None, data_dir=str(tmp_path))
    env["PYTHONPATH"] = str(ROOT)
    with running_service(env) as server, server.client() as c:
        seed(c)
        _ok(
            c.post(
                "/v1/reservations",
                json={
                    "channel": "web",
                    "lines": [{"sku": "S001", "quantity": 3}],
                    "ttl_seconds": 3600,
                },
                headers={"Idempotency-Key": "sqlite-1"},
            ),
            201,
        )
        ready = _ok(c.get("/ready"))
        assert ready["checks"]["read_model"] == {"status": "ok", "kind": "in-process"}
        web = _ok(c.get("/v1/availability/web/S001"))
        assert (web["available"], web["status"]) == (quantity(1) + 4 - 3, "low_stock")
        many = _ok(c.get("/v1/availability/web", params=[("sku", s) for s in SKUS[:100]]))
        assert [x["available"] for x in many["items"][2:]] == [quantity(i) for i in range(2, 100)]
        item = c.get("/v1/items/S001")
        assert item.status_code == 200
        ledger = Ledger(env=ledger_env(None, str(tmp_path), create_table=False))
        try:
            truth, policies, position = ledger_truth(ledger, "S001")
            expected = sku_documents(truth, policies, datetime.now(UTC), position)
        finally:
            ledger.close()
        assert item.content == expected.item
        assert c.get("/v1/availability/web/S001").content == expected.availability["web"]
        assert _ok(c.get("/v1/availability/web/NOPE"))["status"] == "out_of_stock"
        assert c.get("/v1/availability/nochannel/S001").status_code == 404
