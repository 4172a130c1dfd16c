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

import pytest

from adapters.ledger import Ledger
from adapters.pushers import amazon as amazon_pusher
from adapters.pushers import ebay as ebay_pusher
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
from tests.support.fakes import FakeAmazon, FakeEbay

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
