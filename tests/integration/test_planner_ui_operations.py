"""The planner page's operations view on the real stack (PostgreSQL ledger, Redis read
model and pusher reports): it shows what /ready computes and each pusher's dead letters."""

from __future__ import annotations

import re
import time

import pytest
from litestar.testing import TestClient

from adapters.pushers.metrics import PusherMetrics
from api.bootstrap import bootstrap
from api.http.app import create_app
from api.settings import Settings
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import ADMIN_TOKEN, SECRET_KEY

pytestmark = pytest.mark.integration


def test_an_operator_sees_each_pushers_delay_and_dead_letters(fresh_pg_url: str) -> None:
    """Story: the WooCommerce store refused two figures for good, which went to the
    dead-letter queue, and the pusher is 42 s behind. Invariant: the operations view shows,
    for that pusher, the delay /ready reports and the dead letters its metrics count."""
    metrics = PusherMetrics()
    labels = (("kind", "woocommerce"), ("store", "shop1"), ("channel", "web"))
    metrics.inc("dead_letters", labels)
    metrics.inc("dead_letters", labels)
    with prefixed() as (r, prefix):
        r.hset(
            f"{prefix}:push:woocommerce:shop1",
            mapping={
                "kind": "woocommerce",
                "store": "shop1",
                "channel": "web",
                "lag_seconds": 42.5,
                "heartbeat": time.time(),
                "metrics": "\n".join(metrics.render()),
            },
        )
        settings = Settings(
            database_url=fresh_pg_url,
            redis_url=redis_url(0),
            redis_prefix=prefix,
            secret_key=SECRET_KEY,
            admin_token=ADMIN_TOKEN,
            log_level="error",
        )
        with TestClient(create_app(bootstrap(settings, create_tables=True))) as client:
            sign_in = client.get("/ui/sign-in")
            csrf = re.search(r'name="_csrf" value="([^"]+)"', sign_in.text)
            assert csrf is not None
            client.post("/ui/sign-in", data={"_csrf": csrf[1], "token": ADMIN_TOKEN})
            page = client.get("/ui/operations")
            ready = client.get("/ready").json()
    assert page.status_code == 200, page.text
    pusher = ready["checks"]["pushers"]["woocommerce:shop1"]
    assert pusher["seconds_behind"] == 42.5
    row = re.search(r"<tr><td>woocommerce:shop1</td>(.*?)</tr>", page.text, re.DOTALL)
    assert row is not None
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row[1])
    assert cells == ["web", pusher["status"], "42.5", cells[3], "2"]
