"""The planner's routes over HTTP against the real service on PostgreSQL: the paged lists,
the what-if preview, and who changed which policy; each with the bad input it refuses
(a problem naming the field, nothing changed).

Each test makes its own locations, channel and SKUs (named with `unique`), so lists are
filtered by the test's prefix or channel: other tests share the service."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.route_helpers import (
    Env,
    assert_problem,
    available,
    created,
    make_env,
    seg,
    unchanged,
)
from tests.support.server import Server

pytestmark = pytest.mark.e2e


def ok(r: httpx.Response) -> Any:
    return created(r, 200)


def token(c: httpx.Client, name: str, scopes: list[str]) -> str:
    value: str = created(c.post("/v1/tokens", json={"name": name, "scopes": scopes}))["token"]
    return value


def every_page(c: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a paged list (following next_cursor)."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = ok(c.get(path, params=query))
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def stocked(c: httpx.Client, unique: str, **channel: Any) -> tuple[Env, dict[str, int]]:
    """The test's env (web over WH then ST) and SKUs A..F received at WH: 1..6 units."""
    env = make_env(c, unique, **channel)
    quantities = {name: i + 1 for i, name in enumerate("ABCDEF")}
    env.receive(env.wh, **quantities)
    return env, quantities


# --- GET /v1/items --------------------------------------------------------------------------


def test_items_page_in_sku_order_with_their_figures(server: Server, unique: str) -> None:
    with server.client() as c:
        env, quantities = stocked(c, unique, low_stock_threshold=2)
        rows = every_page(c, "/v1/items", prefix=unique, limit=4)
        assert [r["sku"] for r in rows] == [env.sku(n) for n in "ABCDEF"]
        web = [next(x for x in r["channels"] if x["channel"] == env.web) for r in rows]
        assert [x["available"] for x in web] == list(quantities.values())

        low = every_page(c, "/v1/items", channel=env.web, status="low_stock", prefix=unique)
        assert [r["sku"] for r in low] == [env.sku("A"), env.sku("B")]
        assert all([x["channel"] for x in r["channels"]] == [env.web] for r in low)

        at_store = every_page(c, "/v1/items", location=env.st, prefix=unique)
        assert at_store == []
        env.receive(env.st, C=1)
        at_store = every_page(c, "/v1/items", location=env.st, prefix=unique)
        assert [r["sku"] for r in at_store] == [env.sku("C")]
        assert [x["location"] for x in at_store[0]["locations"]] == [env.st]


def test_items_refuse_bad_input(server: Server, unique: str) -> None:
    with server.client() as c:
        env, _ = stocked(c, unique)
        bad: list[tuple[dict[str, Any], int, str]] = [
            ({"limit": 0}, 422, "limit"),
            ({"limit": 1001}, 422, "limit"),
            ({"limit": "ten"}, 422, "limit"),
            ({"cursor": "not-a-cursor"}, 422, "cursor"),
            ({"status": "sold_out", "channel": env.web}, 422, "status"),
            ({"status": "low_stock"}, 422, "channel"),
            ({"prefix": "a b"}, 422, "prefix"),
            ({"channel": "we b"}, 422, "channel"),
            ({"min_position": -1}, 422, "min_position"),
        ]
        for params, status, field in bad:
            assert_problem(c.get("/v1/items", params=params), status, field=field)
        assert_problem(c.get("/v1/items", params={"channel": f"{unique}-none"}), 404)
        assert_problem(c.get("/v1/items", params={"location": f"{unique}-none"}), 404)
        reservations_cursor = ok(c.get("/v1/reservations", params={"limit": 1}))["next_cursor"]
        if reservations_cursor:  # another list's cursor is not this list's
            r = c.get("/v1/items", params={"cursor": reservations_cursor})
            assert_problem(r, 422, field="cursor")


def test_lists_need_a_reading_token(server: Server, unique: str) -> None:
    with server.client() as c:
        writer = token(c, f"{unique}-stock", ["stock:write"])
    with server.client(token=writer) as c:
        for path in ("/v1/items", "/v1/reservations", "/v1/safety-stock", "/v1/policies/history"):
            assert_problem(c.get(path), 403)
    with server.client(token="") as c:
        assert_problem(c.get("/v1/items"), 401)


# --- GET /v1/reservations -------------------------------------------------------------------


def test_reservations_list_live_holds(server: Server, unique: str) -> None:
    with server.client() as c:
        env, _ = stocked(c, unique)
        held = created(env.reserve(B=2, C=1))
        rows = every_page(c, "/v1/reservations", sku=env.sku("B"))
        assert [(r["reservation_id"], r["sku"], r["quantity"]) for r in rows] == [
            (held["reservation_id"], env.sku("B"), 2)
        ]
        assert rows[0]["channel"] == env.web and rows[0]["status"] == "held"
        assert rows[0]["holds"] == [{"location": env.wh, "quantity": 2, "backorder": False}]
        mine = every_page(c, "/v1/reservations", channel=env.web, limit=1)
        assert [r["sku"] for r in mine] == [env.sku("B"), env.sku("C")]

        ok(c.post(f"/v1/reservations/{held['reservation_id']}/release", json={}))
        assert every_page(c, "/v1/reservations", channel=env.web) == []

        assert_problem(
            c.get("/v1/reservations", params={"status": "released"}), 422, field="status"
        )
        assert_problem(c.get("/v1/reservations", params={"sku": "a b"}), 422, field="sku")
        assert_problem(c.get("/v1/reservations", params={"cursor": "x"}), 422, field="cursor")
        assert_problem(c.get("/v1/reservations", params={"channel": f"{unique}-no"}), 404)


# --- GET /v1/safety-stock ---------------------------------------------------------------------


def test_safety_stock_lists_every_rule(server: Server, unique: str) -> None:
    with server.client() as c:
        env, _ = stocked(c, unique)
        ok(c.put("/v1/safety-stock", json={"sku": env.sku("A"), "location": None, "quantity": 1}))
        ok(c.put("/v1/safety-stock", json={"sku": env.sku("B"), "location": env.wh, "quantity": 2}))
        ok(c.put("/v1/safety-stock", json={"sku": None, "location": env.st, "quantity": 3}))
        rules = every_page(c, "/v1/safety-stock", limit=1)
        assert {"sku": env.sku("A"), "location": None, "quantity": 1} in rules
        assert {"sku": env.sku("B"), "location": env.wh, "quantity": 2} in rules
        assert {"sku": None, "location": env.st, "quantity": 3} in rules
        assert_problem(c.get("/v1/safety-stock", params={"limit": 0}), 422, field="limit")
        assert_problem(c.get("/v1/safety-stock", params={"cursor": "x"}), 422, field="cursor")


# --- GET /v1/policies/history -------------------------------------------------------------------


def test_history_names_the_token_and_shows_before_and_after(server: Server, unique: str) -> None:
    """Story: on Monday morning the web shop shows fewer units than the warehouse holds;
    the operations lead opens the policy history and finds that the planner's token raised
    the web buffer from 0 to 4, with the channel as it was before and after.

    Invariant: every policy change names the token that made it and its before and after,
    newest first; paging by cursor goes back in time."""
    with server.client() as c:
        env, _ = stocked(c, unique)
        planner = token(c, f"{unique}-planner", ["policy:write"])
    with server.client(token=planner) as c:
        body = {"locations": [env.wh, env.st], "buffer": 4, "low_stock_threshold": 5}
        ok(c.put(f"/v1/channels/{seg(env.web)}", json=body))
        newest = ok(c.get("/v1/policies/history", params={"limit": 1}))
        change = newest["items"][0]
        assert change["kind"] == "channel" and change["code"] == env.web
        assert change["token_name"] == f"{unique}-planner"
        assert change["before"]["buffer"] == 0 and change["after"]["buffer"] == 4
        assert newest["next_cursor"] is not None
        older = ok(c.get("/v1/policies/history", params={"cursor": newest["next_cursor"]}))
        assert older["items"][0]["position"] < change["position"]
        assert_problem(c.get("/v1/policies/history", params={"cursor": "x"}), 422, field="cursor")
        assert_problem(c.get("/v1/policies/history", params={"limit": -1}), 422, field="limit")


# --- POST /v1/policies/preview ------------------------------------------------------------------


def test_preview_refuses_bad_input_and_changes_nothing(server: Server, unique: str) -> None:
    with server.client() as c:
        env, _ = stocked(c, unique)
        history_before = ok(c.get("/v1/policies/history", params={"limit": 1}))
        good = {"locations": [env.wh], "buffer": 1}
        bad: list[tuple[Any, int, str | None]] = [
            ({"channels": {env.web: {**good, "bufer": 2}}}, 422, f"channels.{env.web}.bufer"),
            ({"channels": {env.web: {**good, "buffer": "2"}}}, 422, f"channels.{env.web}.buffer"),
            ({"channels": {env.web: {**good, "buffer": -1}}}, 422, f"channels.{env.web}.buffer"),
            ({"channels": {env.web: {"locations": []}}}, 422, f"channels.{env.web}.locations"),
            ({"channels": {"a b": good}}, 422, "channels"),
            (
                {"safety_stock": [{"sku": None, "location": None, "quantity": 1.5}]},
                422,
                "safety_stock[0].quantity",
            ),
            (
                {"locations": {env.st: {"name": "ST", "kind": "moon"}}},
                422,
                f"locations.{env.st}.kind",
            ),
            ({"shipping": {}}, 422, None),
        ]
        with unchanged(c, *(env.sku(n) for n in "ABCDEF")):
            for body, status, field in bad:
                r = c.post("/v1/policies/preview", json=body)
                assert_problem(r, status, field=field)
            r = c.post("/v1/policies/preview", json={"channels": {env.web: good}})
            ok(r)
            assert "atp-position" not in r.headers
            assert_problem(c.post("/v1/policies/preview", content=b"{"), 400)
            r = c.post("/v1/policies/preview", params={"cursor": "x"}, json={})
            assert_problem(r, 422, field="cursor")
        assert ok(c.get("/v1/policies/history", params={"limit": 1})) == history_before
        reader = token(c, f"{unique}-reader", ["availability:read"])
    with server.client(token=reader) as c:
        assert_problem(c.post("/v1/policies/preview", json={}), 403)


def test_unknown_location_in_a_preview_names_the_field(server: Server, unique: str) -> None:
    with server.client() as c:
        env = make_env(c, unique)
        body = {"channels": {env.web: {"locations": [env.wh, f"{unique}-X"]}}}
        r = c.post("/v1/policies/preview", json=body)
        assert_problem(r, 422, field=f"channels.{env.web}.locations[1]")


def test_black_friday_buffer_preview_names_the_skus_that_sell_out(
    server: Server, unique: str
) -> None:
    """Story: before Black Friday a planner raises the web channel's buffer from 0 to 3 to
    keep units back for store pickups gone wrong. The preview lists exactly the SKUs the
    web shop will show out of stock (and those that turn low), largest drop first, with
    the channel's totals; nothing changes until the planner saves. After the PUT, the
    availability route answers exactly the figures the preview announced.

    Invariant: a preview's `after` is what the read model serves after the same PUT, and a
    preview writes nothing."""
    with server.client() as c:
        env, quantities = stocked(c, unique, low_stock_threshold=1)
        planner = token(c, f"{unique}-planner", ["policy:write", "availability:read"])
    with server.client(token=planner) as c:
        raise_buffer = {"locations": [env.wh, env.st], "buffer": 3, "low_stock_threshold": 1}
        skus = [env.sku(n) for n in "ABCDEF"]
        with unchanged(c, *skus):
            preview = ok(
                c.post(
                    "/v1/policies/preview",
                    params={"limit": 2},
                    json={"channels": {env.web: raise_buffer}},
                )
            )
        changes = preview["changes"]
        cursor = preview["next_cursor"]
        while cursor:
            page = ok(
                c.post(
                    "/v1/policies/preview",
                    params={"limit": 2, "cursor": cursor},
                    json={"channels": {env.web: raise_buffer}},
                )
            )
            changes += page["changes"]
            cursor = page["next_cursor"]
        assert len(changes) == preview["changed"] == 6
        sold_out = {x["sku"] for x in changes if x["status_after"] == "out_of_stock"}
        assert sold_out == {env.sku(n) for n in "ABC"}  # 1, 2 and 3 units, all kept back
        drops = [x["available_before"] - x["available_after"] for x in changes]
        assert drops == sorted(drops, reverse=True)
        # Totals run over every SKU of the service: other tests' SKUs have no stock at
        # this test's locations (out of stock on its channel both before and after).
        totals = next(t for t in preview["totals"] if t["channel"] == env.web)
        before, after = totals["before"], totals["after"]
        assert (before["available"], after["available"]) == (sum(quantities.values()), 6)
        assert after["out_of_stock"] - before["out_of_stock"] == 3
        assert (before["low_stock"], after["low_stock"]) == (1, 1)  # A, then D (1 unit)

        ok(c.put(f"/v1/channels/{seg(env.web)}", json=raise_buffer))
        for x in changes:
            figure = available(c, env.web, x["sku"])
            assert (figure["available"], figure["status"]) == (
                x["available_after"],
                x["status_after"],
            )
        out = every_page(c, "/v1/items", channel=env.web, status="out_of_stock", prefix=unique)
        assert {r["sku"] for r in out} == sold_out


# --- cursors are bound to what gave them; unknown parameters are refused -------------------


def _forged(kind: str, key: Any) -> str:
    """An unsigned cursor as a client could make one (base64 of JSON [kind, key])."""
    raw = base64.urlsafe_b64encode(json.dumps([kind, key]).encode()).decode()
    return raw.rstrip("=")


def test_a_cursor_only_pages_the_list_filters_and_preview_that_gave_it(
    server: Server, unique: str
) -> None:
    """Story: a planner pages the web channel's low-stock report, then, in another tab,
    switches the filter to the second shop's channel but the browser keeps the old
    `cursor`; a script makes up a cursor to jump ahead in the items list and in the
    policy history; and a preview of a buffer of 3 is paged with the next_cursor of a
    buffer-of-1 preview. Each would silently skip SKUs (for the preview, the largest drops).

    Invariant: a cursor is only taken back by the list, filters and preview body that gave
    it; anything else is a 422 problem naming `cursor` (never a page that starts mid-list)."""
    with server.client() as c:
        env, _ = stocked(c, unique, low_stock_threshold=6)
        other = make_env(c, f"{unique}-b", low_stock_threshold=6)
        page = ok(
            c.get(
                "/v1/items",
                params={"channel": env.web, "status": "low_stock", "prefix": unique, "limit": 2},
            )
        )
        cursor = page["next_cursor"]
        assert cursor is not None
        same = {"channel": env.web, "status": "low_stock", "prefix": unique, "cursor": cursor}
        assert ok(c.get("/v1/items", params=same))["items"][0]["sku"] == env.sku("C")
        for changed in (
            {"channel": other.web},
            {"status": "in_stock"},
            {"prefix": env.sku("D")},
            {"location": env.wh},
        ):
            r = c.get("/v1/items", params={**same, **changed})
            assert_problem(r, 422, field="cursor")
        made_up = [
            ("/v1/items", _forged("items", env.sku("E"))),
            ("/v1/policies/history", _forged("policy-history", -5)),
            ("/v1/policies/history", _forged("policy-history", 10**23)),
            ("/v1/safety-stock", _forged("safety-stock", "ZZZ")),
            ("/v1/reservations", _forged("reservations", "ZZZ")),
            ("/v1/items", cursor.partition(".")[0]),  # the signature cut off
        ]
        for path, forged in made_up:
            assert_problem(c.get(path, params={"cursor": forged}), 422, field="cursor")

        def preview(buffer: int, cursor: str | None = None) -> httpx.Response:
            body = {"locations": [env.wh, env.st], "buffer": buffer, "low_stock_threshold": 6}
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            return c.post("/v1/policies/preview", params=params, json={"channels": {env.web: body}})

        first = ok(preview(1))
        assert first["next_cursor"] is not None
        assert ok(preview(1, first["next_cursor"]))["changes"]
        assert_problem(preview(3, first["next_cursor"]), 422, field="cursor")
        assert_problem(preview(1, cursor), 422, field="cursor")  # the items list's cursor


def test_a_misspelt_filter_is_refused_rather_than_listing_everything(
    server: Server, unique: str
) -> None:
    """Story: a planner asks for `?stauts=low_stock` (a typo) and would get every SKU as if
    all were low; a script adds `foo=1` to the reconciliation list and report.

    Invariant: a query parameter a GET route does not take is a 422 problem naming it."""
    with server.client() as c:
        env, _ = stocked(c, unique)
        as_of = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        reconciled = c.post(
            "/v1/reconciliations",
            headers={"Idempotency-Key": f"{unique}-r"},
            json={
                "location": env.wh,
                "as_of": as_of,
                "lines": [{"sku": env.sku("A"), "on_hand": 1}],
            },
        )
        created(reconciled, 201)
        report = reconciled.headers["Location"]
        cases = [
            ("/v1/items", {"channel": env.web, "stauts": "low_stock"}, "stauts"),
            ("/v1/reservations", {"foo": "1"}, "foo"),
            ("/v1/safety-stock", {"foo": "1"}, "foo"),
            ("/v1/policies/history", {"limt": "5"}, "limt"),
            ("/v1/channels", {"foo": "1"}, "foo"),
            ("/v1/reconciliations", {"location": env.wh, "foo": "1"}, "foo"),
            (report, {"foo": "1"}, "foo"),
            (f"/v1/items/{seg(env.sku('A'))}", {"foo": "1"}, "foo"),
            (f"/v1/availability/{seg(env.web)}/{seg(env.sku('A'))}", {"foo": "1"}, "foo"),
        ]
        for path, params, field in cases:
            assert_problem(c.get(path, params=params), 422, field=field)
        # What the routes take is still taken.
        ok(
            c.get(
                f"/v1/availability/{seg(env.web)}/{seg(env.sku('A'))}", params={"min_position": 0}
            )
        )
        ok(c.get("/v1/reconciliations", params={"location": env.wh}))
        ok(c.get(report, params={"limit": 5}))


def test_a_filter_given_twice_is_refused_rather_than_one_of_them_used(
    server: Server, unique: str
) -> None:
    """Story: a planner's report tool builds `?channel=web&channel=marketplace` (meaning
    both) or `?prefix=CAP&prefix=MUG`, and got the last one's SKUs as if they were all;
    `?limit=1&limit=2` paged by 2.

    Invariant: a query parameter that takes one value, given twice, is a 422 problem naming
    it; one that takes several (the bulk read's `sku`) still takes them."""
    with server.client() as c:
        env, _ = stocked(c, unique)
        cases = [
            ("/v1/items", [("channel", env.web), ("channel", env.web)], "channel"),
            ("/v1/items", [("prefix", "A"), ("prefix", "B")], "prefix"),
            ("/v1/items", [("limit", "1"), ("limit", "2")], "limit"),
            ("/v1/reservations", [("status", "held"), ("status", "held")], "status"),
            (f"/v1/items/{seg(env.sku('A'))}/history", [("after", "0"), ("after", "1")], "after"),
            (
                f"/v1/availability/{seg(env.web)}/{seg(env.sku('A'))}",
                [("min_position", "0"), ("min_position", "1")],
                "min_position",
            ),
        ]
        for path, params, field in cases:
            assert_problem(c.get(path, params=params), 422, field=field)
        skus = [("sku", env.sku("A")), ("sku", env.sku("B"))]
        bulk = ok(c.get(f"/v1/availability/{seg(env.web)}", params=skus))
        assert len(bulk["items"]) == 2
