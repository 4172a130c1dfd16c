"""Channel integration records: admin only, secrets write-only, validated."""

from __future__ import annotations

import pytest

from tests.support.server import Server

pytestmark = pytest.mark.e2e


def test_integration_records_keep_secrets_write_only(server: Server, unique: str) -> None:
    with server.client() as c:
        c.put(f"/v1/locations/{unique}-WH", json={"name": "W", "kind": "warehouse"})
        c.put(f"/v1/channels/{unique}-web", json={"locations": [f"{unique}-WH"]})
        path = f"/v1/integrations/woocommerce/{unique}-shop"
        body = {
            "url": "http://127.0.0.1:9/shop",
            "channel": f"{unique}-web",
            "consumer_key": "ck_live",
            "consumer_secret": "cs_live",
            "webhook_secrets": ["whsec-1"],
        }
        created = c.put(path, json=body)
        assert created.status_code == 200, created.text
        assert "cs_live" not in created.text and "whsec-1" not in created.text
        assert created.json()["max_requests_per_second"] == 5
        # A PUT without the secrets keeps them; GET never shows them.
        again = c.put(path, json={"url": "http://127.0.0.1:9/v2", "channel": f"{unique}-web"})
        assert again.status_code == 200
        shown = c.get(path).json()
        assert shown["url"] == "http://127.0.0.1:9/v2"
        assert shown["configured_secrets"] == ["consumer_key", "consumer_secret", "webhook_secrets"]
        assert "ck_live" not in c.get(path).text
        # Validation and unknown resources.
        bad = c.put(path, json={**body, "channel": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "channel"
        assert c.put(path, json={"channel": f"{unique}-web"}).status_code == 400
        assert c.get(f"/v1/integrations/ebay/{unique}-none").status_code == 404
        assert c.get(f"/v1/integrations/nope/{unique}").status_code == 404
        amazon = {
            "endpoint": "http://127.0.0.1:9/sp",
            "channel": f"{unique}-web",
            "seller_id": "S1",
            "marketplace_id": "M1",
            "access_token": "Atza|secret-value",
        }
        assert c.put(f"/v1/integrations/amazon/{unique}-a", json=amazon).status_code == 200
        assert "secret-value" not in c.get(f"/v1/integrations/amazon/{unique}-a").text
        token = c.post(
            "/v1/tokens", json={"name": f"{unique}-ops", "scopes": ["policy:write"]}
        ).json()["token"]
    with server.client(token) as ops:
        assert ops.get(path).status_code == 403
        assert ops.put(path, json=body).status_code == 403
