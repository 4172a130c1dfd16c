"""Limits: per-token rate limits (429), bounds, strict decoding, hostile bytes, required
idempotency keys. Every refusal is a problem that names what is wrong and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from litestar import get
from litestar.testing import TestClient

from api.bootstrap import bootstrap
from api.http.app import create_app
from api.settings import Settings
from tests.e2e.route_helpers import (
    Env,
    assert_problem,
    created,
    get_item,
    history,
    loc,
    make_env,
    own,
    seg,
    unchanged,
)
from tests.support.server import Server, running_service, service_env

JSON = {"Content-Type": "application/json"}

pytestmark = pytest.mark.e2e


def test_a_rate_limited_token_gets_429(server: Server, unique: str) -> None:
    with server.client() as admin:
        created = admin.post(
            "/v1/tokens",
            json={"name": f"{unique}-feed", "scopes": ["availability:read"], "rate_limit": 2},
        )
        assert created.status_code == 201, created.text
        assert created.json()["rate_limit"] == 2
        token = created.json()["token"]
        unlimited = admin.post(
            "/v1/tokens", json={"name": f"{unique}-shop", "scopes": ["availability:read"]}
        ).json()["token"]
    statuses = []
    # Both workers keep their own bucket, so the limit per process is what is tested: send
    # enough that each process sees more than its burst.
    for _ in range(12):
        with server.client(token) as feed:
            response = feed.get(f"/v1/items/{unique}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["code"] == "rate-limited"
    assert 429 in statuses and 200 in statuses
    with server.client(unlimited) as shop:
        assert all(shop.get(f"/v1/items/{unique}").status_code == 200 for _ in range(12))


# --- strict input, bounds and hostile bytes (contract: "Errors") ---------------------------


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded mode: SQLite ledger and in-process read model, no servers."""
    data_dir = tmp_path_factory.mktemp("embedded")
    with running_service(service_env(None, str(data_dir))) as srv:
        yield srv


@pytest.fixture(params=["postgres", "sqlite"])
def env(request: pytest.FixtureRequest, unique: str) -> Iterator[Env]:
    """Locations WH and ST, channel `web` over both, on PostgreSQL and on embedded SQLite."""
    srv: Server = request.getfixturevalue(
        "server" if request.param == "postgres" else "embedded_server"
    )
    with srv.client() as c:
        yield make_env(c, unique)


def _line(env: Env, quantity: Any) -> list[dict[str, Any]]:
    return [{"sku": env.sku(), "quantity": quantity}]


def _reserve(quantity: Any, **extra: Any) -> dict[str, Any]:
    return {"channel": "{web}", "lines": [{"sku": "{sku}", "quantity": quantity}], **extra}


def _lines(quantity: Any, name: str = "quantity", **extra: Any) -> dict[str, Any]:
    return {"location": "{wh}", "lines": [{"sku": "{sku}", name: quantity}], **extra}


def _channel(**figures: Any) -> dict[str, Any]:
    return {"locations": ["{wh}"], **figures}


def _method(path: str) -> str:
    return "PUT" if path.startswith(("/v1/channels/", "/v1/safety-stock")) else "POST"


# (path, body, field) with {wh}, {web}, {sku} filled in per test.
WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/reservations", _reserve("1"), "lines[0].quantity"),
    ("/v1/reservations", _reserve(1.5), "lines[0].quantity"),
    ("/v1/reservations", _reserve(1.0), "lines[0].quantity"),
    ("/v1/reservations", _reserve(True), "lines[0].quantity"),
    ("/v1/reservations", _reserve(1, ttl_seconds="60"), "ttl_seconds"),
    ("/v1/orders", _reserve("2", order_id="{sku}-o"), "lines[0].quantity"),
    ("/v1/receipts", _lines("5"), "lines[0].quantity"),
    ("/v1/receipts", _lines(2.7), "lines[0].quantity"),
    (
        "/v1/adjustments",
        {"location": "{wh}", "sku": "{sku}", "delta": "-1", "reason": "x"},
        "delta",
    ),
    ("/v1/counts", _lines("3", "counted"), "lines[0].counted"),
    ("/v1/incoming", _lines(1e2), "lines[0].quantity"),
    ("/v1/safety-stock", {"sku": "{sku}", "location": None, "quantity": "2"}, "quantity"),
    ("/v1/channels/{web}", _channel(buffer="1"), "buffer"),
]


def _fill(value: Any, env: Env) -> Any:
    if isinstance(value, str):
        return value.format(wh=env.wh, web=env.web, sku=env.sku())
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    return value


BOUNDS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/channels/{web}", _channel(buffer=1_000_000_001), "buffer"),
    ("/v1/channels/{web}", _channel(backorder_limit=1_000_000_001), "backorder_limit"),
    ("/v1/channels/{web}", _channel(low_stock_threshold=2**63), "low_stock_threshold"),
    ("/v1/channels/{web}", _channel(buffer=-1), "buffer"),
    ("/v1/safety-stock", {"sku": "{sku}", "location": None, "quantity": 1_000_000_001}, "quantity"),
    ("/v1/receipts", _lines(10**30), "lines[0].quantity"),
    (
        "/v1/adjustments",
        {"location": "{wh}", "sku": "{sku}", "delta": 10**6 + 1, "reason": "x"},
        "delta",
    ),
    ("/v1/counts", _lines(100_000_001, "counted"), "lines[0].counted"),
    (
        "/v1/adjustments",
        {"location": "{wh}", "sku": "{sku}", "delta": -1, "reason": ""},
        "reason",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), WRONG_TYPES + BOUNDS)
def test_a_figure_of_the_wrong_type_or_out_of_bounds_is_422_and_changes_nothing(
    env: Env, path: str, body: dict[str, Any], field: str
) -> None:
    """A storefront plugin serialises quantities as strings (`"1"`), a spreadsheet import
    sends `2.7`, a script sends `true`, a planner types an extra zero or 30 digits: none of
    them is a figure atp may store.

    Invariant: 422 naming the field, and the SKU's figures, history and the channels'
    policies are exactly what they were (nothing held, received, counted or truncated). The
    bounds are the README's: quantities 1..1,000,000, deltas +-1,000,000, counts
    0..100,000,000, policy figures (buffer, backorder limit, low-stock threshold, safety
    stock) 0..1,000,000,000.
    """
    c = env.client
    env.receive(env.wh, A=5)
    channels_before = created(c.get("/v1/channels"), 200)
    with unchanged(c, env.sku()):
        r = c.request(_method(path), _fill(path, env), json=_fill(body, env), headers=env.idem())
        assert_problem(r, 422, "validation-failed", field=field)
    assert created(c.get("/v1/channels"), 200) == channels_before
    assert loc(get_item(c, env.sku()), env.wh)["held"] == 0


def test_a_policy_figure_at_its_bound_is_accepted(env: Env) -> None:
    """Invariant: the largest documented buffer (1,000,000,000) is stored as sent."""
    r = env.client.put(
        f"/v1/channels/{env.web}", json=_channel(buffer=1_000_000_000) | {"locations": [env.wh]}
    )
    assert created(r, 200)["buffer"] == 1_000_000_000


def test_integer_query_parameters_are_bounded_and_decimal(env: Env) -> None:
    """A client pages history with a position past the 64-bit range (or `1e3`, or `²`).

    Invariant: 422 naming the parameter on SQLite and on PostgreSQL alike (SQLite raised an
    overflow, PostgreSQL answered 200); the largest position is a valid, empty page.
    """
    c = env.client
    env.receive(env.wh, A=1)
    path = f"/v1/items/{seg(env.sku())}/history"
    for after in ("9223372036854775808", "99999999999999999999999", "-1", "1e3", "1.5", "²", " 1"):
        assert_problem(
            c.get(path, params={"after": after}), 422, "validation-failed", field="after"
        )
    for limit in ("0", "1001", "2.0", "\u0661\u0660"):
        assert_problem(
            c.get(path, params={"limit": limit}), 422, "validation-failed", field="limit"
        )
    last = created(c.get(path, params={"after": str(2**63 - 1)}), 200)
    assert last == {"entries": [], "next_after": None}
    assert len(created(c.get(path, params={"after": "0"}), 200)["entries"]) >= 1


def test_hostile_bytes_are_4xx_and_change_nothing(env: Env) -> None:
    """What a fuzzer or a broken proxy sends (issue 8 section 5): invalid UTF-8, JSON nested
    100,000 deep in a known or an unknown field, a non-ASCII digit, a code with a trailing
    newline, a doubly encoded slash.

    Invariant: each answers 400, 404 or 422 (never 5xx), and no figure, history entry,
    location or channel changes.
    """
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=5)
    tee, tee_blk = env.sku("TEE"), env.sku("TEE/BLK")
    created(
        c.post(
            "/v1/receipts", json={"location": env.wh, "lines": [{"sku": tee_blk, "quantity": 7}]}
        )
    )
    deep = "[" * 100_000 + "]" * 100_000
    deep_objects = '{"a":' * 100_000 + "1" + "}" * 100_000
    line = f'{{"sku":"{a}","quantity":1}}'
    # (body, status, code, field): the same for a reservation and for a receipt; `{head}` is
    # each route's own first field (an unknown field is refused, so neither gets both).
    bodies = [
        (b'{head,"lines":[' + line.encode() + b"]}", 400, "malformed-json", None),
        ('{head,"lines":' + deep + "}", 422, "validation-failed", "lines[0]"),
        ('{head,"lines":[' + line + '],"x":' + deep + "}", 400, "malformed-json", None),
        ('{head,"lines":[' + line + '],"x":' + deep_objects + "}", 400, "malformed-json", None),
    ]
    heads = {
        "/v1/reservations": f'"channel":"{env.web}"'.encode(),
        "/v1/receipts": f'"location":"{env.wh}"'.encode(),
    }
    bad_utf8 = b'"channel":"web\xff"'
    locations_before = created(c.get("/v1/locations"), 200)
    with unchanged(c, a, tee_blk):
        for i, (body, status, code, field) in enumerate(bodies):
            template = body if isinstance(body, bytes) else body.encode()
            for path, head in heads.items():
                raw = template.replace(b"{head", b"{" + (bad_utf8 if i == 0 else head), 1)
                r = c.post(path, content=raw, headers={**JSON, **env.idem()})
                assert_problem(r, status, code, field=field)
        for path in (
            f"/v1/items/{seg(a)}",
            f"/v1/availability/{env.web}/{seg(a)}",
            f"/v1/availability/{env.web}?sku={seg(a)}",
        ):
            sep = "&" if "?" in path else "?"
            r = c.get(f"{path}{sep}min_position=%C2%B2")
            assert_problem(r, 422, "validation-failed", field="min_position")
        relwh = f"/v1/locations/{env.prefix}-RELWH%0A"
        assert_problem(c.put(relwh, json={"name": "x", "kind": "store"}), 422, field="code")
        r = c.put(f"/v1/channels/{env.web}", json={"locations": [f"{env.wh}\n"]})
        assert_problem(r, 422, field="locations[0]")
        r = c.post(
            "/v1/receipts", json={"location": env.wh, "lines": [{"sku": f"{a}\n", "quantity": 1}]}
        )
        assert_problem(r, 422, field="lines[0].sku")
        # `%252F` is a percent sign followed by `2F` once decoded: never the SKU `TEE/BLK`.
        assert_problem(c.get(f"/v1/items/{seg(tee)}%252FBLK"), 404)
        assert_problem(c.get(f"/v1/items/{seg(tee)}%252FBLK/history"), 404)
    assert created(c.get("/v1/locations"), 200) == locations_before
    assert loc(get_item(c, tee_blk), env.wh)["on_hand"] == 7


def test_an_eta_needs_its_utc_offset_and_is_stored_in_utc(env: Env) -> None:
    """A purchase order's delivery time from a supplier portal in local time without an
    offset is ambiguous by hours.

    Invariant: a naive `eta` is 422 and adds no incoming supply; one with an offset adds the
    supply and is recorded in UTC (10:00+02:00 is 08:00Z).
    """
    c = env.client
    a = env.sku()
    body = {"location": env.wh, "lines": [{"sku": a, "quantity": 4}], "reference": "PO-1"}
    with unchanged(c, a):
        r = c.post("/v1/incoming", json={**body, "eta": "2030-06-01T10:00:00"}, headers=env.idem())
        assert_problem(r, 422, "validation-failed", field="eta")
    r = c.post(
        "/v1/incoming", json={**body, "eta": "2030-06-01T10:00:00+02:00"}, headers=env.idem()
    )
    created(r)
    assert loc(get_item(c, a), env.wh)["incoming"] == 4
    expected = [e for e in own(history(c, a), a) if e["type"] == "IncomingExpected"]
    assert [e["eta"] for e in expected] == ["2030-06-01T08:00:00Z"]


# --- idempotency (contract: "Idempotency") --------------------------------------------------


def test_a_retry_re_serialised_by_a_proxy_replays_and_counts_once(env: Env) -> None:
    """A warehouse system's receipt times out; its HTTP library retries with the same key,
    but the body is re-serialised (other key order, other whitespace).

    Invariant: the retry replays the first answer (`Idempotent-Replayed: true`) and the 6
    units are on hand once, not twice; a body that differs in a figure is 422
    `idempotency-key-reused` and changes nothing.
    """
    c = env.client
    a = env.sku()
    key = env.key()
    first = f'{{"location": "{env.wh}", "lines": [{{"sku": "{a}", "quantity": 6}}]}}'
    again = f'{{\n  "lines" : [ {{ "quantity":6,"sku":"{a}" }} ],\n  "location":"{env.wh}"\n}}'
    r1 = c.post("/v1/receipts", content=first.encode(), headers={**JSON, "Idempotency-Key": key})
    created(r1)
    with unchanged(c, a):
        r2 = c.post(
            "/v1/receipts", content=again.encode(), headers={**JSON, "Idempotency-Key": key}
        )
        assert (r2.status_code, r2.headers.get("idempotent-replayed")) == (201, "true")
        assert r2.content == r1.content
        other = first.replace('"quantity": 6', '"quantity": 7')
        r3 = c.post(
            "/v1/receipts", content=other.encode(), headers={**JSON, "Idempotency-Key": key}
        )
        assert_problem(r3, 422, "idempotency-key-reused")
    assert loc(get_item(c, a), env.wh)["on_hand"] == 6

    # The same for a checkout: one hold, whatever the serialisation of the retry.
    key = env.key()
    hold = f'{{"channel":"{env.web}","lines":[{{"sku":"{a}","quantity":2}}],"ttl_seconds":600}}'
    retry = f'{{"ttl_seconds": 600, "lines": [{{"quantity": 2, "sku": "{a}"}}], "channel": "{env.web}"}}'
    h1 = c.post("/v1/reservations", content=hold.encode(), headers={**JSON, "Idempotency-Key": key})
    h2 = c.post(
        "/v1/reservations", content=retry.encode(), headers={**JSON, "Idempotency-Key": key}
    )
    assert created(h1)["reservation_id"] == created(h2)["reservation_id"]
    assert loc(get_item(c, a), env.wh)["held"] == 2


def _transfer(env: Env, transfer_id: str, quantity: int) -> dict[str, Any]:
    lines = [{"sku": env.sku(), "quantity": quantity}]
    return dict(transfer_id=transfer_id, from_location=env.wh, to_location=env.st, lines=lines)


def _stock_posts(env: Env, transfer_id: str) -> list[tuple[str, dict[str, Any] | None]]:
    a = env.sku()
    one = [{"sku": a, "quantity": 1}]
    return [
        ("/v1/receipts", {"location": env.wh, "lines": one}),
        ("/v1/adjustments", {"location": env.wh, "sku": a, "delta": -1, "reason": "damaged"}),
        ("/v1/counts", {"location": env.wh, "lines": [{"sku": a, "counted": 9}]}),
        ("/v1/transfers", _transfer(env, f"{transfer_id}-2", 1)),
        (f"/v1/transfers/{transfer_id}/receive", None),
        ("/v1/incoming", {"location": env.wh, "lines": one}),
    ]


def test_every_stock_post_requires_an_idempotency_key(env: Env) -> None:
    """A WMS posts a receipt, the answer is lost, it posts again: without a key the units
    would be counted twice, so every POST that changes stock requires a key.

    Invariant: without `Idempotency-Key` each is 400 `idempotency-key-required` and no
    figure or history entry of the SKU changes (at WH or ST).
    """
    c = env.client
    a = env.sku()
    env.receive(env.wh, A=10)
    transfer_id = f"{env.prefix}-T1"
    created(c.post("/v1/transfers", json=_transfer(env, transfer_id, 2)))
    with unchanged(c, a):
        for path, payload in _stock_posts(env, transfer_id):
            r = env.post_without_key(path, json=payload) if payload else env.post_without_key(path)
            assert_problem(r, 400, "idempotency-key-required")
    figures = loc(get_item(c, a), env.wh)
    assert (figures["on_hand"], figures["incoming"]) == (8, 0)
    assert loc(get_item(c, a), env.st)["in_transit"] == 2


# --- a fault of the service is a 500, an outage a 503 --------------------------------------


@get("/v1/test/bug", opt={"scopes": ("admin",)})
async def _a_bug() -> None:
    raise KeyError("internal detail that must not leak")


@get("/v1/test/outage", opt={"scopes": ("admin",)})
async def _an_outage() -> None:
    raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379")


def test_a_bug_is_a_logged_500_and_only_an_outage_is_a_503(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A bug used to answer 503 with `Retry-After`, so clients retried it forever and
    operators looked for an outage.

    Invariant: an unexpected exception is a 500 problem without a stack trace or its
    message, logged (with the traceback) under the request's correlation id and counted in
    `/metrics`; an unreachable backing service is a 503 with `Retry-After`, counted apart.
    """
    settings = Settings(data_dir=str(tmp_path), admin_token="t", sweep_interval=0)
    app = create_app(bootstrap(settings))
    app.register(_a_bug)
    app.register(_an_outage)
    auth = {"Authorization": "Bearer t"}

    def errors(text: str, kind: str) -> float:
        line = f'atp_http_errors_total{{kind="{kind}"}} '
        return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])

    with TestClient(app) as client:
        before = client.get("/metrics").text
        r = client.get("/v1/test/bug", headers={**auth, "X-Correlation-ID": "cid-bug-1"})
        body = assert_problem(r, 500, "internal-error")  # type: ignore[arg-type]
        assert "Retry-After" not in r.headers
        assert "internal detail" not in r.text and "KeyError" not in r.text
        r = client.get("/v1/test/outage", headers={**auth, "X-Correlation-ID": "cid-out-1"})
        assert_problem(r, 503, "service-unavailable")  # type: ignore[arg-type]
        assert int(r.headers["Retry-After"]) >= 1
        metrics = client.get("/metrics").text
    assert body["status"] == 500
    assert errors(metrics, "unhandled") == errors(before, "unhandled") + 1
    assert errors(metrics, "unavailable") == errors(before, "unavailable") + 1
    logged = capfd.readouterr().err
    bug_lines = [line for line in logged.splitlines() if "[cid-bug-1]" in line]
    assert any("unhandled error: KeyError" in line for line in bug_lines), logged
    assert "internal detail that must not leak" in logged  # the traceback is in the log
