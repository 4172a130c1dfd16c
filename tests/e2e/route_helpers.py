"""Small helpers for the route-by-route end-to-end tests (test_routes.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

PROBLEM = "application/problem+json"
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "litestar.", "msgspec.")


def seg(code: str) -> str:
    """A code as one path segment (a '/' becomes %2F)."""
    return quote(code, safe="")


def assert_problem(
    r: httpx.Response, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with the given status (and `code`/`field` when given)."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith(PROBLEM), r.headers["content-type"]
    body = r.json()
    for key in ("type", "title", "status", "detail"):
        assert key in body, f"problem without {key!r}: {body}"
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    for marker in LEAK_MARKERS:
        assert marker not in r.text, f"stack trace or internals leaked: {r.text}"
    if code is not None:
        assert body.get("code") == code or body["type"].endswith("/" + code), body
    if field is not None:
        assert body.get("field") == field, body
    return body


def created(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    return body


def get_item(c: httpx.Client, sku: str) -> dict[str, Any]:
    return created(c.get(f"/v1/items/{seg(sku)}"), 200)


def loc(item: dict[str, Any], location: str) -> dict[str, Any]:
    """Figures of one location in an item view."""
    matches = [x for x in item["locations"] if x["location"] == location]
    assert len(matches) == 1, (location, item["locations"])
    return matches[0]


def chan(item: dict[str, Any], channel: str) -> dict[str, Any]:
    """Figures of one channel in an item view."""
    matches = [x for x in item["channels"] if x["channel"] == channel]
    assert len(matches) == 1, (channel, [x["channel"] for x in item["channels"]])
    return matches[0]


def available(c: httpx.Client, channel: str, sku: str) -> dict[str, Any]:
    return created(c.get(f"/v1/availability/{seg(channel)}/{seg(sku)}"), 200)


def history(c: httpx.Client, sku: str, after: int = 0) -> list[dict[str, Any]]:
    """Every history entry of the SKU after a position (pages through next_after)."""
    entries: list[dict[str, Any]] = []
    while True:
        page = created(
            c.get(f"/v1/items/{seg(sku)}/history", params={"after": after, "limit": 1000}), 200
        )
        entries.extend(page["entries"])
        if page["next_after"] is None:
            return entries
        after = page["next_after"]


def own(entries: list[dict[str, Any]], sku: str) -> list[dict[str, Any]]:
    """Entries of the SKU's own stream (not the shared policy events)."""
    return [e for e in entries if e.get("sku") == sku]


def _figures(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "position"}


@contextmanager
def unchanged(c: httpx.Client, *skus: str) -> Iterator[None]:
    """Asserts that the block changed no figure of the SKUs and recorded no event for them."""
    before = {sku: get_item(c, sku) for sku in skus}
    yield
    for sku in skus:
        after = get_item(c, sku)
        assert _figures(after) == _figures(before[sku]), f"figures of {sku} changed"
        new = history(c, sku, before[sku]["position"])
        assert new == [], f"new history entries for {sku}: {new}"


@dataclass
class Env:
    """One test's own master data: two locations, a channel over both, and SKU names."""

    client: httpx.Client
    prefix: str
    wh: str
    st: str
    web: str
    keys: Iterator[int] = field(default_factory=itertools.count)

    def sku(self, name: str = "A") -> str:
        return f"{self.prefix}-{name}"

    def key(self) -> str:
        return f"{self.prefix}-k{next(self.keys)}"

    def idem(self, **headers: str) -> dict[str, str]:
        return {"Idempotency-Key": self.key(), **headers}

    def post_without_key(self, path: str, **kw: Any) -> httpx.Response:
        """POST exactly as given, without the Idempotency-Key the test client would mint."""
        with httpx.Client(
            base_url=self.client.base_url, headers=self.client.headers, timeout=30
        ) as bare:
            return bare.post(path, **kw)

    def receive(self, location: str, **quantities: int) -> None:
        lines = [{"sku": self.sku(name), "quantity": q} for name, q in quantities.items()]
        created(self.client.post("/v1/receipts", json={"location": location, "lines": lines}))

    def reserve(self, channel: str | None = None, ttl: int = 900, **quantities: int) -> Any:
        lines = [{"sku": self.sku(name), "quantity": q} for name, q in quantities.items()]
        body = {"channel": channel or self.web, "lines": lines, "ttl_seconds": ttl}
        return self.client.post("/v1/reservations", json=body, headers=self.idem())

    def order(self, order_id: str, channel: str | None = None, **quantities: int) -> Any:
        lines = [{"sku": self.sku(name), "quantity": q} for name, q in quantities.items()]
        body = {"order_id": order_id, "channel": channel or self.web, "lines": lines}
        return self.client.post("/v1/orders", json=body, headers=self.idem())


def make_env(
    c: httpx.Client,
    prefix: str,
    st_kind: str = "store",
    sources: tuple[str, ...] = ("WH", "ST"),
    **channel: Any,
) -> Env:
    """A test's master data: location `<prefix>-WH` (a warehouse), `<prefix>-ST` (of kind
    `st_kind`), and channel `<prefix>-web` sourcing `sources` ("WH", "ST") in that order,
    with the further channel fields `channel` (e.g. buffer=2)."""
    wh, st, web = f"{prefix}-WH", f"{prefix}-ST", f"{prefix}-web"
    created(c.put(f"/v1/locations/{wh}", json={"name": "WH", "kind": "warehouse"}), 200)
    created(c.put(f"/v1/locations/{st}", json={"name": "ST", "kind": st_kind}), 200)
    codes = {"WH": wh, "ST": st}
    body = {"locations": [codes[s] for s in sources], **channel}
    created(c.put(f"/v1/channels/{web}", json=body), 200)
    return Env(c, prefix, wh, st, web)
