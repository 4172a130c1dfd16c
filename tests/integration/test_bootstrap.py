"""The composition root: the HTTP app built in process by `create_app(bootstrap(...))`,
with an injected clock, over the embedded (SQLite) ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from litestar.testing import TestClient

from adapters.ledger import Ledger, ledger_env
from api.bootstrap import bootstrap
from api.http.app import create_app
from api.service.demo import demo_skus, load_demo
from api.settings import Settings

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
"""A Black Friday morning: the moment every process of this test believes it is."""
TOKEN = "bootstrap-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_cart_retried_after_a_timeout_holds_once_at_the_injected_time(tmp_path: Path) -> None:
    """Story: at 10:00 on Black Friday a checkout holds 3 of a T-shirt for 15 minutes; the
    shop's connection times out and it sends the same request again with the same
    Idempotency-Key. Invariant: available-to-sell drops by 3 exactly once, the hold
    expires at the injected clock's 10:00 + 900 s, and the retry gets the first answer
    byte for byte (marked Idempotent-Replayed)."""
    settings = Settings(data_dir=str(tmp_path), admin_token=TOKEN, sweep_interval=0)
    services = bootstrap(settings, clock=lambda: NOW)
    with services.running():
        load_demo(services.commands)
    app = create_app(services)
    sku = demo_skus()[1]
    reserve = {"channel": "web", "lines": [{"sku": sku, "quantity": 3}]}
    headers = {**AUTH, "Idempotency-Key": "cart-1001"}
    with TestClient(app) as client:
        before = client.get(f"/v1/availability/web/{sku}", headers=AUTH).json()
        first = client.post("/v1/reservations", json=reserve, headers=headers)
        again = client.post("/v1/reservations", json=reserve, headers=headers)
        after = client.get(f"/v1/availability/web/{sku}", headers=AUTH).json()
    assert first.status_code == 201, first.text
    held = first.json()
    assert held["status"] == "held"
    assert datetime.fromisoformat(held["expires_at"]) == NOW + timedelta(seconds=900)
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    assert before["available"] >= 3
    assert after["available"] == before["available"] - 3


def test_a_ledger_given_to_bootstrap_stays_open_for_its_owner(tmp_path: Path) -> None:
    """Invariant: `close()` closes what bootstrap opened, never a part it was given: the
    caller's ledger still answers after the services it lent it to are closed."""
    ledger = Ledger(env=ledger_env(None, str(tmp_path), create_table=True))
    try:
        services = bootstrap(Settings(data_dir=str(tmp_path)), ledger=ledger)
        with services.running():
            changed = load_demo(services.commands)
        assert changed > 0
        assert ledger.head() > 0
    finally:
        ledger.close()
