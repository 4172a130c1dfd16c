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


def test_a_leaked_database_dump_holds_no_integration_secret(
    server: Server, unique: str, pg_url: str
) -> None:
    """Story: a retailer's database backup leaks. Invariant: the events table holds none of
    the integration secrets (WooCommerce keys, webhook secrets, marketplace credentials and
    tokens) in plain text, while the settings that are not secret are still there, and
    signed webhooks still verify with the sealed secret."""
    import base64
    import hashlib
    import hmac

    import psycopg

    secrets = {
        "woocommerce": {
            "url": f"http://127.0.0.1:9/{unique}-plain-url",
            "consumer_key": f"ck_{unique}_key",
            "consumer_secret": f"cs_{unique}_secret",
            "webhook_secrets": [f"whsec_{unique}_now", f"whsec_{unique}_before"],
        },
        "amazon": {
            "endpoint": "http://127.0.0.1:9/sp",
            "seller_id": "S1",
            "marketplace_id": "M1",
            "access_token": f"Atza|{unique}-access",
            "client_id": f"amzn1.application-oa2-client.{unique}",
            "client_secret": f"amzn-secret-{unique}",
            "refresh_token": f"Atzr|{unique}-refresh",
        },
        "ebay": {
            "endpoint": "http://127.0.0.1:9/ebay",
            "client_id": f"ebay-app-{unique}",
            "client_secret": f"PRD-{unique}-secret",
            "refresh_token": f"v^1.1#{unique}-refresh",
        },
    }
    with server.client() as c:
        c.put(f"/v1/locations/{unique}-WH", json={"name": "W", "kind": "warehouse"})
        c.put(f"/v1/channels/{unique}-web", json={"locations": [f"{unique}-WH"]})
        for kind, body in secrets.items():
            answer = c.put(
                f"/v1/integrations/{kind}/{unique}-s", json={**body, "channel": f"{unique}-web"}
            )
            assert answer.status_code == 200, answer.text
        # The webhook still verifies with the (sealed) current and previous secrets.
        payload = (
            b'{"id":1,"status":"pending","line_items":[],"date_modified_gmt":"2026-11-27T10:00:00"}'
        )
        for secret in secrets["woocommerce"]["webhook_secrets"]:
            signature = base64.b64encode(
                hmac.new(secret.encode(), payload, hashlib.sha256).digest()
            ).decode()
            delivered = c.post(
                f"/v1/webhooks/woocommerce/{unique}-s",
                content=payload,
                headers={
                    "X-WC-Webhook-Signature": signature,
                    "X-WC-Webhook-Topic": "order.updated",
                    "Content-Type": "application/json",
                },
            )
            assert delivered.status_code in (200, 202), delivered.text
    with psycopg.connect(pg_url) as db:
        tables = [
            f"{schema}.{name}"
            for schema, name in db.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name LIKE '%events'"
            )
        ]
        dump = b"".join(
            bytes(state)
            for table in tables
            for (state,) in db.execute(f"SELECT state FROM {table}")
        )
    assert f"{unique}-plain-url".encode() in dump  # not vacuous: the records are there
    secret_values = [
        value
        for body in secrets.values()
        for name, field in body.items()
        if name not in ("url", "endpoint", "seller_id", "marketplace_id")
        for value in (field if isinstance(field, list) else [field])
    ]
    assert len(secret_values) == 11
    leaked = [value for value in secret_values if value.encode() in dump]
    assert leaked == []


def test_woocommerce_auth_mode_and_permalinks_are_validated(server: Server, unique: str) -> None:
    """Invariant: a store's auth mode is one of auto/basic/query/oauth1 and pretty_permalinks
    a boolean; anything else is a 4xx problem naming the field, and the record is unchanged."""
    with server.client() as c:
        c.put(f"/v1/locations/{unique}-WH", json={"name": "W", "kind": "warehouse"})
        c.put(f"/v1/channels/{unique}-web", json={"locations": [f"{unique}-WH"]})
        path = f"/v1/integrations/woocommerce/{unique}-shop"
        body = {"url": "https://shop.example", "channel": f"{unique}-web", "auth": "query",
                "pretty_permalinks": False, "consumer_key": "ck", "consumer_secret": "cs"}  # fmt: skip
        assert c.put(path, json=body).status_code == 200
        for field, value in (("auth", "digest"), ("pretty_permalinks", "no"), ("auth", 1)):
            bad = c.put(path, json={**body, field: value})
            assert bad.status_code == 422, bad.text
            assert bad.json()["field"] == field
        shown = c.get(path).json()
        assert (shown["auth"], shown["pretty_permalinks"]) == ("query", False)


def test_a_marketplace_account_without_credentials_is_refused(server: Server, unique: str) -> None:
    """Invariant: an eBay or Amazon account needs an access token or the whole refresh
    credentials (client_id, client_secret, refresh_token); otherwise the PUT is a 422
    naming the missing field and nothing is recorded. Credentials given before are kept."""
    with server.client() as c:
        c.put(f"/v1/locations/{unique}-WH", json={"name": "W", "kind": "warehouse"})
        c.put(f"/v1/channels/{unique}-web", json={"locations": [f"{unique}-WH"]})
        path = f"/v1/integrations/ebay/{unique}-e"
        base = {"endpoint": "https://api.ebay.com", "channel": f"{unique}-web"}
        bad = c.put(path, json={**base, "client_id": "app", "client_secret": "cert"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["field"] == "refresh_token"
        assert c.get(path).status_code == 404  # nothing recorded
        full = {**base, "client_id": "app", "client_secret": "cert", "refresh_token": "r"}
        assert c.put(path, json=full).status_code == 200
        kept = c.put(path, json={**base, "max_requests_per_second": 2})
        assert kept.status_code == 200, kept.text
        assert kept.json()["configured_secrets"] == ["client_id", "client_secret", "refresh_token"]
