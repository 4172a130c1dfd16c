"""Channels that keep working in production (issue 9), against fakes that behave like the
real APIs: access tokens that expire and are renewed, eBay's single-SKU mode and whole-call
refusals, offer-level quantities and the daily revision limit, WooCommerce auth modes and
plain permalinks, Amazon's queued submissions, FBA listings and shared quotas, and SKUs with
commas.

Client-level tests drive a channel client straight against its fake; the stories run the
whole pusher on the real RabbitMQ, PostgreSQL and Redis (fixtures of test_pushers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from adapters.ledger import Ledger
from adapters.pushers import amazon as amazon_pusher
from adapters.pushers import ebay as ebay_pusher
from adapters.pushers import woocommerce as woocommerce_pusher
from adapters.pushers.base import ClientHooks, Ok
from adapters.pushers.runner import PusherMetrics, build_pusher, push_queue
from tests.integration.test_pushers import (
    FAST,
    amqp_url,
    change,
    configure,
    eventually,
    ledger,
    publish,
    queue_counts,
    rds,
    running,
    settled,
)
from tests.support.fakes import FakeAmazon, FakeEbay, FakeWooCommerce

pytestmark = pytest.mark.integration

__all__ = ["amqp_url", "ledger", "rds"]  # fixtures shared with test_pushers

HOOKS = ClientHooks()


def amazon_settings(fake: FakeAmazon, **extra: Any) -> dict[str, Any]:
    """An Amazon integration with LWA refresh credentials only (no access token)."""
    return {
        "endpoint": fake.url,
        "seller_id": fake.seller_id,
        "marketplace_id": fake.marketplace_ids[0],
        "token_endpoint": f"{fake.url}/auth/o2/token",
        "client_id": fake.lwa.client_id,
        "client_secret": fake.lwa.client_secret,
        "refresh_token": fake.lwa.refresh_token,
        "max_requests_per_second": 50.0,
        **extra,
    }


def ebay_settings(fake: FakeEbay, **extra: Any) -> dict[str, Any]:
    """An eBay integration with refresh credentials only (no access token)."""
    return {
        "endpoint": fake.url,
        "token_endpoint": f"{fake.url}/identity/v1/oauth2/token",
        "client_id": fake.oauth.client_id,
        "client_secret": fake.oauth.client_secret,
        "refresh_token": fake.oauth.refresh_token,
        "max_requests_per_second": 50.0,
        **extra,
    }


# --- 1. access tokens expire ---------------------------------------------------------------------


async def test_amazon_lwa_tokens_are_renewed_before_and_when_they_expire() -> None:
    """Story: an Amazon account pushes all day; LWA tokens live an hour (here 1 s), and one
    is revoked early. Invariant: every figure is accepted and lands (none waits for a token),
    a token is renewed before it expires (no request is refused as expired while pushing on
    schedule), and an early expiry costs exactly one refused request and one renewal."""
    with FakeAmazon(token_lifetime=1.0) as fake:
        fake.add_listing("MUG", 0)
        client = amazon_pusher.create(amazon_settings(fake), "eu", HOOKS)
        try:
            for round_, quantity in enumerate((5, 6, 7, 8)):
                result = await client.push({"MUG": quantity})
                assert result.get("MUG") == Ok(), (round_, result.outcomes)
                assert fake.quantity_of("MUG") == quantity
                await asyncio.sleep(0.6)
            assert 403 not in fake.status_counts()
            assert fake.lwa.issued() >= 2  # renewed ahead of expiry, more than once
            assert (await client.push({"MUG": 8})).get("MUG") == Ok()  # a fresh token
            issued = fake.lwa.issued()
            fake.lwa.expire()  # revoked early: the API now calls it expired
            result = await client.push({"MUG": 9})
            assert result.get("MUG") == Ok()
            assert fake.quantity_of("MUG") == 9
            assert fake.lwa.issued() == issued + 1
            assert fake.status_counts()[403] == 1
        finally:
            await client.aclose()


async def test_ebay_user_tokens_are_renewed_with_the_sell_inventory_scope() -> None:
    """Story: an eBay user token expires mid-day (eBay answers 401 errorId 1001). Invariant:
    the pusher renews it with the refresh token (client id/secret in Basic, the
    sell.inventory scope), writes the figure and reads back the same quantity."""
    with FakeEbay(token_lifetime=3600.0) as fake:
        fake.add_item("CAP", 0)
        client = ebay_pusher.create(ebay_settings(fake), "de", HOOKS)
        try:
            assert (await client.push({"CAP": 4})).get("CAP") == Ok()
            fake.oauth.expire()
            assert (await client.push({"CAP": 3})).get("CAP") == Ok()
            assert fake.quantity_of("CAP") == 3
            assert await client.current(["CAP"]) == {"CAP": 3}
            assert fake.oauth.issued() == 2
            assert fake.status_counts()[401] == 1
            grant = next(r for r in fake.requests("POST") if r.path.endswith("/token"))
            assert grant.header("authorization", "").startswith("Basic ")
            assert b"sell.inventory" in grant.body
        finally:
            await client.aclose()


async def test_refused_refresh_credentials_wait_and_never_dead_letter(
    amqp_url: str, ledger: Ledger
) -> None:
    """Story: the seller revoked atp's refresh token overnight, then an operator configures
    a new one. Invariant: no figure is dead-lettered while the credentials are refused; once
    they work, the store holds the newest figure."""
    with FakeEbay() as fake:
        fake.add_item("HAT", 0)
        configure(ledger, "ebay", "de", "web", {**ebay_settings(fake), "refresh_token": "revoked"})
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "ebay", "de", ledger=ledger, amqp_url=amqp_url, metrics=metrics, options=FAST
        )
        pusher.client.tokens.refused_retry = 0.05  # type: ignore[attr-defined]
        async with running(pusher):
            await publish(amqp_url, [change("HAT", 2, 1), change("HAT", 5, 2)])
            # Far more refusals than the attempts after which a failing figure is parked.
            await eventually(
                lambda: metrics.value("retries", "ebay") >= 3 * FAST.max_attempts, 20, "retries"
            )
            assert fake.quantity_of("HAT") == 0
            assert metrics.value("dead_letters", "ebay") == 0
            fake.oauth.refresh_token = "revoked"  # the operator's new token is accepted
            await eventually(lambda: fake.quantity_of("HAT") == 5 and settled(pusher), 20)
        assert metrics.value("dead_letters", "ebay") == 0
        assert await queue_counts(amqp_url, push_queue("ebay", "de")) == (0, 0)


# --- 3. WooCommerce auth modes and plain permalinks; 7. SKUs with commas --------------------------


async def test_a_shop_on_fastcgi_hosting_with_plain_permalinks_gets_its_figures() -> None:
    """Story: a shop on cheap shared hosting: PHP runs as FastCGI and drops the
    Authorization header, WordPress believes it is on HTTPS, and permalinks are plain, so
    the API lives at `/?rest_route=/wc/v3/...`. Invariant: configured as `auth: query` and
    `pretty_permalinks: false`, every figure lands at the store; Basic auth (what atp used
    for such a shop) changes nothing at the store."""
    with FakeWooCommerce(
        "ck_shop", "cs_shop", auth="basic", strip_authorization=True, pretty_permalinks=False
    ) as wc:
        parent = wc.add_product("TEE", type="variable")
        wc.add_variation(parent, "TEE-S", stock=0)
        wc.add_product("MUG", stock=0)
        figures = {"TEE-S": 4, "MUG": 9}
        settings = {"url": wc.url, "consumer_key": "ck_shop", "consumer_secret": "cs_shop"}

        basic = woocommerce_pusher.create(
            {**settings, "auth": "basic", "pretty_permalinks": False}, "shop", HOOKS
        )
        try:
            result = await basic.push(figures)
            assert not any(isinstance(o, Ok) for o in result.outcomes.values())
        finally:
            await basic.aclose()
        assert (wc.stock_of("TEE-S"), wc.stock_of("MUG")) == (0, 0)

        client = woocommerce_pusher.create(
            {**settings, "auth": "query", "pretty_permalinks": False}, "shop", HOOKS
        )
        try:
            result = await client.push(figures)
            assert result.outcomes == {"TEE-S": Ok(), "MUG": Ok()}
            assert await client.current(list(figures)) == figures
        finally:
            await client.aclose()
        assert (wc.stock_of("TEE-S"), wc.stock_of("MUG")) == (4, 9)
        sent = [r for r in wc.requests() if r.param("consumer_key") == "ck_shop"]
        assert sent and all(r.path == "/" and r.param("rest_route") for r in sent)


@pytest.mark.parametrize("pretty", [True, False])
async def test_oauth1_signs_pretty_and_plain_permalink_routes(pretty: bool) -> None:
    """Invariant: over plain HTTP (OAuth 1.0a only, as WooCommerce) the pusher's signature
    is accepted on both URL forms, and the store holds the figures written."""
    with FakeWooCommerce("ck_o", "cs_o", pretty_permalinks=pretty) as wc:
        wc.add_product("CUP", stock=1)
        client = woocommerce_pusher.create(
            {"url": wc.url, "consumer_key": "ck_o", "consumer_secret": "cs_o",
             "auth": "oauth1", "pretty_permalinks": pretty},
            "shop", HOOKS,
        )  # fmt: skip
        try:
            assert (await client.push({"CUP": 6})).get("CUP") == Ok()
        finally:
            await client.aclose()
        assert wc.stock_of("CUP") == 6
        assert 401 not in wc.status_counts()


def test_the_woocommerce_fake_over_plain_http_takes_only_oauth1() -> None:
    """Invariant (fake fidelity): by default the fake, being plain HTTP, ignores Basic and
    query-string keys as WooCommerce does, so a client that sends them is unauthenticated."""
    with FakeWooCommerce("ck_d", "cs_d") as wc:
        wc.add_product("X", stock=1)
        with httpx.Client(base_url=f"{wc.url}/wp-json/wc/v3") as http:
            basic = http.get("/products", auth=("ck_d", "cs_d"))
            query = http.get(
                "/products", params={"consumer_key": "ck_d", "consumer_secret": "cs_d"}
            )
        assert (basic.status_code, basic.json()["code"]) == (401, "woocommerce_rest_cannot_view")
        assert (query.status_code, query.json()["code"]) == (401, "woocommerce_rest_cannot_view")


async def test_a_sku_with_a_comma_is_looked_up_alone() -> None:
    """Story: a shop sells a bundle with SKU `MUG,SAUCER` next to `MUG` and `SAUCER`.
    WooCommerce splits `?sku=` on commas. Invariant: the bundle gets its own figure, and the
    single products get theirs, never the bundle's."""
    with FakeWooCommerce("ck_c", "cs_c") as wc:
        for sku in ("MUG,SAUCER", "MUG", "SAUCER", "SPOON"):
            wc.add_product(sku, stock=0)
        client = woocommerce_pusher.create(
            {"url": wc.url, "consumer_key": "ck_c", "consumer_secret": "cs_c"}, "shop", HOOKS
        )
        try:
            result = await client.push({"MUG,SAUCER": 2, "MUG": 11, "SPOON": 5})
            assert result.outcomes == {"MUG,SAUCER": Ok(), "MUG": Ok(), "SPOON": Ok()}
        finally:
            await client.aclose()
        stock = {sku: wc.stock_of(sku) for sku in ("MUG,SAUCER", "MUG", "SAUCER", "SPOON")}
        assert stock == {"MUG,SAUCER": 2, "MUG": 11, "SAUCER": 0, "SPOON": 5}
        lookups = [r.param("sku") for r in wc.requests("GET")]
        assert "MUG,SAUCER" in lookups  # alone
        assert all("MUG,SAUCER" not in (s or "") or s == "MUG,SAUCER" for s in lookups)
