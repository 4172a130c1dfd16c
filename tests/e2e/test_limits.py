"""Per-token rate limits: 429 with Retry-After and a problem body, nothing recorded."""

from __future__ import annotations

import pytest

from tests.support.server import Server

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
