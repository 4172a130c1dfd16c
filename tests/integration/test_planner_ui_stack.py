"""The planner page on the production stack (PostgreSQL ledger, Redis read model kept by
the projector, pusher reports in Redis): the operations view shows what /ready computes and
each pusher's dead letters; preview, save, lists and the item page read the Redis model."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from litestar.testing import TestClient

from adapters.pushers.metrics import PusherMetrics
from api.bootstrap import bootstrap
from api.http.app import create_app
from api.settings import Settings
from tests.support.read_stack import ROOT, Stack
from tests.support.redis_db import prefixed, redis_url
from tests.support.server import ADMIN_TOKEN, SECRET_KEY, Server, running_service, service_env

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


def test_a_planner_previews_and_saves_on_postgresql_and_redis(fresh_pg_url: str) -> None:
    """Story: the planner page on the production stack (`atp serve` on PostgreSQL, the
    Redis read model kept by `atp project`). Invariant: the preview of a raised web buffer
    lists each SKU with the figure the availability route answers once it is saved, and
    the low-stock list and item page read the Redis model."""
    with prefixed(0, "ui") as (r, prefix):
        env = service_env(fresh_pg_url, ATP_REDIS_URL=redis_url(0), ATP_REDIS_PREFIX=prefix)
        env["PYTHONPATH"] = str(ROOT)
        with running_service(env) as server:
            stack = Stack(server, r, prefix, env, fresh_pg_url)
            stack.start_projector()
            try:
                with server.client() as c:
                    c.put("/v1/locations/WH1", json={"name": "Main", "kind": "warehouse"})
                    c.put("/v1/channels/web", json={"locations": ["WH1"], "buffer": 1})
                    lines = [{"sku": f"R{i}", "quantity": 3 + i} for i in range(6)]
                    c.post("/v1/receipts", json={"location": "WH1", "lines": lines})
                stack.wait_caught_up()
                _planner_story(server)
            finally:
                stack.stop_projector()


def _planner_story(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        csrf = _csrf(browser.get("/ui/sign-in").text)
        browser.post("/ui/sign-in", data={"_csrf": csrf, "token": ADMIN_TOKEN})
        csrf = _csrf(browser.get("/ui/channels/web").text)
        form = {
            "_csrf": csrf,
            "locations": "WH1",
            "buffer": "4",
            "share_percent": "100",
            "backorder_limit": "0",
            "low_stock_threshold": "5",
        }
        preview = browser.post("/ui/channels/web/preview", data=form)
        assert preview.status_code == 200, preview.text
        shown = {
            sku: int(after)
            for sku, after in re.findall(
                r'data-sku="(R\d)" data-channel="web">.*?<td class="num">\d+</td>\s*'
                r'<td class="num[^"]*">(\d+)</td>',
                preview.text,
                re.DOTALL,
            )
        }
        assert set(shown) == {f"R{i}" for i in range(6)}
        saved = browser.post("/ui/channels/web", data=form)
        assert saved.status_code == 303
        position = int(saved.headers["location"].rsplit("=", 1)[1])
        with server.client() as c:
            for sku, figure in shown.items():
                r = c.get(f"/v1/availability/web/{sku}", params={"min_position": position})
                assert r.json()["available"] == figure
            low = c.get("/v1/items", params={"channel": "web", "status": "low_stock"}).json()
        page = browser.get("/ui/stock", params={"channel": "web", "status": "low_stock"})
        listed = re.findall(r'<tr data-sku="([^"]+)">', page.text)
        assert listed == [i["sku"] for i in low["items"]] and listed
        item = browser.get("/ui/items/R5")
        assert item.status_code == 200 and 'data-location="WH1"' in item.text


def _csrf(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found is not None
    return found[1]
