"""Checkout on a two-worker shop: whichever worker a request lands on, the same answer.

With `atp serve --workers 2` one worker decides every write. The other decodes checkout
writes itself (authentication, validation, the Idempotency-Key) and sends the writer only
the command (api.http.forwarding, `ForwardedCommand`); the writer answers with the view or
the problem, which that worker sends on. Every request below goes on a new connection, so
both workers take a share of them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.concurrency import figures, history_types, receive, setup_channel
from tests.support.server import Server

pytestmark = pytest.mark.e2e


def _post(server: Server, path: str, body: Any, key: str) -> httpx.Response:
    """POST on a connection of its own (a new TCP connection: either worker may take it)."""
    with server.client(mint_keys=False) as client:
        return client.post(path, json=body, headers={"Idempotency-Key": key})


def _forwarded_commands(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(row.rsplit(" ", 1)[1])
        for row in text.splitlines()
        if row.startswith('atp_forwarded_writes_total{kind="command",outcome="answered"}')
    )


def test_black_friday_checkout_answers_the_same_on_either_worker(
    server: Server, unique: str
) -> None:
    """Story: Black Friday, a storefront behind a load balancer over two workers; 5 units of
    the doorbuster. Twelve shoppers check out one unit each; shopper 0's browser resends
    the same checkout on a new connection (double click) ten times, then the shopper edits
    the basket and resubmits under the same key; a broken client sends the quantity as a
    string; shopper 0 pays (commit), shopper 1 abandons (release); the freed unit sells to
    a till (order), which the customer then cancels.

    Invariants: exactly 5 holds (one `StockHeld` per winner, none for a replay); every loser
    gets 409 `insufficient-stock` naming the SKU with 0 available; each replay is the first
    answer byte for byte with `Idempotent-Replayed: true` and its `ATP-Position`; the edited
    basket is 422
    `idempotency-key-reused`; the string quantity is a 4xx naming the field and changes
    nothing; held + allocated never exceed on hand; and checkout commands were forwarded
    from the worker that is not the writer.
    """
    sku = f"{unique}-DOOR"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 5})
    forwarded_before = _forwarded_commands(server)

    def basket(quantity: int | str = 1) -> dict[str, Any]:
        return {"channel": channel, "lines": [{"sku": sku, "quantity": quantity}]}

    keys = [f"{unique}-cart-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    answers = [_post(server, "/v1/reservations", basket(), key) for key in keys]
    assert [a.status_code for a in answers] == [201] * 5 + [409] * 7, [a.text for a in answers]
    for won in answers[:5]:
        assert won.json()["status"] == "held"
        assert int(won.headers["atp-position"]) > 0
    for lost in answers[5:]:
        problem = lost.json()
        assert problem["code"] == "insufficient-stock"
        assert problem["lines"][0]["sku"] == sku
        assert problem["lines"][0]["available"] == 0

    for _ in range(10):  # the double click, again and again, on new connections
        again = _post(server, "/v1/reservations", basket(), keys[0])
        assert again.status_code == 201
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == answers[0].content
        assert again.headers["atp-position"] == answers[0].headers["atp-position"]
    edited = _post(server, "/v1/reservations", basket(2), keys[0])
    assert edited.status_code == 422
    assert edited.json()["code"] == "idempotency-key-reused"
    broken = _post(server, "/v1/reservations", basket("1"), f"{unique}-broken")
    assert 400 <= broken.status_code < 500
    assert "quantity" in broken.text

    paid = answers[0].json()["reservation_id"]
    order_id = f"{unique}-WEB-1"
    commit = _post(
        server, f"/v1/reservations/{paid}/commit", {"order_id": order_id}, f"{unique}-pay"
    )
    assert commit.status_code == 201, commit.text
    assert commit.json()["status"] == "committed"
    abandoned = answers[1].json()["reservation_id"]
    release = _post(server, f"/v1/reservations/{abandoned}/release", None, f"{unique}-drop")
    assert release.status_code == 200, release.text
    assert release.json()["status"] == "released"
    till = f"{unique}-POS-1"
    sold = _post(
        server,
        "/v1/orders",
        {"order_id": till, "channel": channel, "lines": [{"sku": sku, "quantity": 1}]},
        f"{unique}-till",
    )
    assert sold.status_code == 201, sold.text
    assert sold.json()["order_id"] == till
    cancelled = _post(server, f"/v1/orders/{till}/cancel", None, f"{unique}-cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "canceled"

    with server.client() as admin:
        f = figures(admin, sku, location)
        assert f["on_hand"] == 5
        assert (f["held"], f["allocated"]) == (3, 1)
        assert f["held"] + f["allocated"] <= f["on_hand"]
        assert history_types(admin, sku)["StockHeld"] == 5
    assert _forwarded_commands(server) > forwarded_before


def test_bad_checkouts_on_either_worker_are_refused_and_change_nothing(
    server: Server, unique: str
) -> None:
    """Story: during the sale a broken storefront plugin and a stale app send malformed
    checkouts (a string or fractional quantity, no lines, a body that is a list, an
    unknown channel, a commit without its order id, an order line short of a quantity),
    each on a new connection, so both workers take some. Invariant: each is a 4xx problem
    that names what is wrong, decided before anything is held: stock and the SKU's
    history are exactly as before, and a correct checkout after them still holds."""
    sku = f"{unique}-BAD"
    with server.client() as admin:
        location, channel = setup_channel(admin, unique)
        receive(admin, location, {sku: 4})
        before = figures(admin, sku, location)
        history = history_types(admin, sku)
    good = _post(
        server,
        "/v1/reservations",
        {"channel": channel, "lines": [{"sku": sku, "quantity": 1}]},
        f"{unique}-ok",
    )
    assert good.status_code == 201, good.text
    held = good.json()["reservation_id"]

    def line(quantity: Any) -> dict[str, Any]:
        return {"channel": channel, "lines": [{"sku": sku, "quantity": quantity}]}

    bad: list[tuple[str, Any, str]] = [
        ("/v1/reservations", line("1"), "quantity"),
        ("/v1/reservations", line(1.5), "quantity"),
        ("/v1/reservations", {"channel": channel}, "lines"),
        ("/v1/reservations", [line(1)], "object"),
        ("/v1/reservations", {**line(1), "channel": f"{unique}-NOPE"}, f"{unique}-NOPE"),
        (f"/v1/reservations/{held}/commit", {}, "order_id"),
        (
            "/v1/orders",
            {"order_id": f"{unique}-O", "channel": channel, "lines": [{"sku": sku}]},
            "quantity",
        ),
    ]
    for i, (path, body, named) in enumerate(bad):
        for attempt in range(3):  # three new connections: both workers see each
            answer = _post(server, path, body, f"{unique}-bad-{i}-{attempt}")
            assert 400 <= answer.status_code < 500, (path, body, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert named in answer.text, (path, body, answer.text)

    with server.client() as admin:
        after = figures(admin, sku, location)
        assert (after["on_hand"], after["held"], after["allocated"]) == (
            before["on_hand"],
            before["held"] + 1,
            before["allocated"],
        )
        assert history_types(admin, sku) - history == Counter({"StockHeld": 1})
