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
import redis

from adapters.ledger import Ledger
from adapters.pushers import amazon as amazon_pusher
from adapters.pushers import ebay as ebay_pusher
from adapters.pushers import woocommerce as woocommerce_pusher
from adapters.pushers.base import ClientHooks, Ok, Permanent, Retry, Skip
from adapters.pushers.oauth import TokenSource
from adapters.pushers.runner import Pusher, PusherMetrics, build_pusher, push_queue
from tests.support.fakes import FakeAmazon, FakeEbay, FakeWooCommerce
from tests.support.pushers import (
    FAST,
    change,
    configure,
    eventually,
    publish,
    queue_counts,
    running,
    set_figures,
    settled,
)
from tests.support.redis_db import redis_url

pytestmark = pytest.mark.integration

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


# --- 2. eBay: whole-call refusals and single-SKU stores ------------------------------------------


def ebay_client(fake: FakeEbay, hooks: ClientHooks = HOOKS, **kw: Any) -> ebay_pusher.EbayClient:
    return ebay_pusher.EbayClient(
        fake.url, TokenSource(access_token=fake.token), rate=200.0, hooks=hooks, **kw
    )


async def test_one_bad_sku_never_parks_the_other_24_of_its_call() -> None:
    """Story: a discontinued item makes eBay refuse a whole call of 25 (HTTP 400).
    Invariant: the 24 good SKUs get their figures; only the bad one is refused; the store
    is not switched to one SKU per call."""
    with FakeEbay() as fake:
        skus = [f"K{i:02d}" for i in range(25)]
        for sku in skus:
            fake.add_item(sku, 0)
        fake.fail_calls_with("K07")
        client = ebay_client(fake)
        try:
            figures = {sku: i + 1 for i, sku in enumerate(skus)}
            result = await client.push(figures)
        finally:
            await client.aclose()
        assert isinstance(result.get("K07"), Permanent)
        assert {s: o for s, o in result.outcomes.items() if s != "K07"} == dict.fromkeys(
            [s for s in skus if s != "K07"], Ok()
        )
        assert fake.items() == {**{s: q for s, q in figures.items()}, "K07": 0}
        assert len(fake.requests("POST")) <= 2 * 5 + 1  # bisected, not one call per SKU
        assert not client.single_sku


async def test_a_store_that_takes_one_sku_per_call_is_remembered(
    rds: tuple[redis.Redis, str],
) -> None:
    """Story: an eBay account refuses every multi-SKU call (the method page's reading of
    the docs). Invariant: every figure still lands; the store is then written one SKU per
    call, and a restarted pusher remembers it (no refused call after the restart)."""
    import redis.asyncio as aioredis

    _, prefix = rds
    with FakeEbay(single_sku_per_call=True) as fake:
        skus = [f"S{i}" for i in range(6)]
        for sku in skus:
            fake.add_item(sku, 0)
        shared = aioredis.Redis.from_url(redis_url(0))
        hooks = ClientHooks(redis=shared, redis_prefix=prefix)
        try:
            first = ebay_client(fake, hooks, store="us")
            result = await first.push(dict.fromkeys(skus, 3))
            assert result.outcomes == dict.fromkeys(skus, Ok())
            assert first.single_sku
            await first.aclose()
            assert fake.items() == dict.fromkeys(skus, 3)
            refused = fake.status_counts()[400]
            restarted = ebay_client(fake, hooks, store="us")
            result = await restarted.push(dict.fromkeys(skus, 4))
            await restarted.aclose()
        finally:
            await shared.aclose()
        assert result.outcomes == dict.fromkeys(skus, Ok())
        assert fake.items() == dict.fromkeys(skus, 4)
        assert fake.status_counts()[400] == refused  # none after the restart
        assert all(len(u.body["requests"]) == 1 for u in fake.updates()[-len(skus) :])


# --- 4. eBay offer-level quantities --------------------------------------------------------------


async def test_an_offer_capped_below_the_item_gets_the_figure_too(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    """Story: a seller capped an offer at 3 units in Seller Hub; atp raises stock to 8.
    Invariant: what the listing sells (the lower of item and offer quantity) is atp's
    figure; reconciliation notices an offer lowered behind atp's back and writes it again."""
    r, prefix = rds
    with FakeEbay() as fake:
        fake.add_item("LAMP", 3)
        offer = fake.add_offer("LAMP", quantity=3)
        client = ebay_client(fake)
        try:
            assert (await client.push({"LAMP": 8})).get("LAMP") == Ok()
            assert (fake.quantity_of("LAMP"), fake.offer_quantity(offer)) == (8, 8)
            assert fake.listing_quantity("LAMP") == 8
            fake.add_offer("LAMP", offer, quantity=2)  # changed in Seller Hub
            assert await client.current(["LAMP"]) == {"LAMP": 2}
        finally:
            await client.aclose()

        configure(ledger, "ebay", "us", "web",
                  {"endpoint": fake.url, "access_token": fake.token})  # fmt: skip
        set_figures(r, prefix, "web", {"LAMP": (8, 5)})
        pusher = await build_pusher(
            "ebay", "us", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, options=FAST,
        )  # fmt: skip
        async with running(pusher):
            assert pusher.last_reconcile is not None
            assert pusher.last_reconcile.written == 1
        assert fake.listing_quantity("LAMP") == 8


# --- 5. eBay's 250 revisions per listing per day -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_767_261_600.0  # 2026-01-01 02:00 in Los Angeles (10:00 UTC)

    def __call__(self) -> float:
        return self.now


async def test_a_flash_sale_on_ebay_stays_within_the_daily_revisions() -> None:
    """Story: a flash sale changes one SKU's figure every second for hours; eBay takes 250
    revisions of a listing a day (here 20). Invariant: atp never sends a revision eBay would
    refuse, never parks a figure, lets a figure going down through while raises wait, and
    the newest figure is on eBay once the day turns."""
    clock = Clock()
    with FakeEbay(revision_limit=20) as fake:
        fake.add_item("HOT", 100)
        client = ebay_client(fake, budget=ebay_pusher.RevisionBudget(20, clock=clock))
        newest, written, waited = 100, 0, 0
        try:
            for second in range(3 * 3600):
                clock.now += 1
                newest = 100 - second // 120 + (second % 7)  # drifting down, jittering up
                outcome = (await client.push({"HOT": newest})).get("HOT")
                assert isinstance(outcome, Ok) or (isinstance(outcome, Retry) and outcome.wait)
                written += isinstance(outcome, Ok)
                waited += isinstance(outcome, Retry)
                if fake.revisions("HOT") >= 18:
                    break
            assert written <= 20 and waited > 100  # coalesced: most figures were superseded
            # Only the reserve is left: a raise waits, a drop goes through.
            raise_ = (await client.push({"HOT": fake.quantity_of("HOT") + 5})).get("HOT")
            assert isinstance(raise_, Retry) and raise_.wait
            assert (await client.push({"HOT": 0})).get("HOT") == Ok()
            assert fake.quantity_of("HOT") == 0
            assert 400 not in fake.status_counts() and 207 not in fake.status_counts()
            assert fake.revisions("HOT") <= 20
            # The next day the newest figure goes out.
            clock.now += 24 * 3600
            fake.new_day()
            assert (await client.push({"HOT": 42})).get("HOT") == Ok()
        finally:
            await client.aclose()
        assert fake.listing_quantity("HOT") == 42


async def test_a_figure_refused_for_the_daily_limit_waits_and_is_never_dead_lettered(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    """Story: another tool already spent the listing's revisions today, so eBay refuses
    atp's write, and the pusher is restarted before the day turns. Invariant: the refused
    figure is never dead-lettered; its messages are acked (RabbitMQ would time a day-long
    delivery out) while the newest figure waits in the pusher, a restarted pusher gets it
    back from the read model, and after the reset eBay shows the newest figure."""
    r, prefix = rds
    clock = Clock()
    with FakeEbay(revision_limit=1) as fake:
        fake.add_item("SOFA", 0)
        configure(ledger, "ebay", "us", "web",
                  {"endpoint": fake.url, "access_token": fake.token})  # fmt: skip
        metrics = PusherMetrics()

        async def start() -> Pusher:
            pusher = await build_pusher(
                "ebay", "us", ledger=ledger, amqp_url=amqp_url, metrics=metrics,
                redis_url=redis_url(0), redis_prefix=prefix, options=FAST,
            )  # fmt: skip
            client = pusher.client
            assert isinstance(client, ebay_pusher.EbayClient)
            client.budget = ebay_pusher.RevisionBudget(clock=clock, max_wait=0.05)
            return pusher

        first = await start()
        async with running(first):
            set_figures(r, prefix, "web", {"SOFA": (1, 1)})
            await publish(amqp_url, [change("SOFA", 1, 1)])
            await eventually(lambda: fake.quantity_of("SOFA") == 1 and settled(first))
            set_figures(r, prefix, "web", {"SOFA": (3, 3)})
            await publish(amqp_url, [change("SOFA", 2, 2), change("SOFA", 3, 3)])
            await eventually(
                lambda: metrics.value("retries", "ebay") >= 3 * FAST.max_attempts, 20, "retries"
            )
            entry = first.pending["SOFA"]
            assert (entry.held, entry.figure) == ([], (3, 3))  # acked, kept
            assert fake.quantity_of("SOFA") == 1
        assert await queue_counts(amqp_url, push_queue("ebay", "us")) == (0, 0)

        second = await start()
        async with running(second):
            assert second.last_reconcile is not None and second.last_reconcile.waiting == 1
            clock.now += 24 * 3600
            fake.new_day()
            await eventually(lambda: fake.quantity_of("SOFA") == 3 and settled(second), 20)
        assert metrics.value("dead_letters", "ebay") == 0
        assert await queue_counts(amqp_url, push_queue("ebay", "us")) == (0, 0)


# --- 6. Amazon: queued submissions, unlisted and FBA SKUs, special SKUs, shared quota ------------


async def test_a_quantity_amazon_drops_after_accepting_it_shows_in_metrics(
    amqp_url: str, ledger: Ledger
) -> None:
    """Story: Amazon answers ACCEPTED, then its processing rejects the quantity (and warns
    about another SKU). Invariant: ACCEPTED is not taken as applied silently: the warning
    and, once the listing's issues are read back, the error are counted per severity in the
    pusher's metrics, while the store's quantity is what Amazon really holds."""
    with FakeAmazon() as fake:
        fake.add_listing("RUG", 1)
        fake.add_listing("VASE", 1)
        fake.fail_after_accept("RUG")
        fake.warn_on_accept("VASE")
        configure(ledger, "amazon", "eu", "web", {**amazon_settings(fake), "channel": "web"})
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "amazon", "eu", ledger=ledger, amqp_url=amqp_url, metrics=metrics, options=FAST
        )
        pusher.client.verify_after = 0.2  # type: ignore[attr-defined]
        async with running(pusher):
            await publish(amqp_url, [change("RUG", 7, 1), change("VASE", 8, 2)])
            await eventually(
                lambda: metrics.value("channel_issues", "amazon", severity="ERROR") == 1,
                what="the error read back",
            )
        assert metrics.value("channel_issues", "amazon", severity="WARNING") == 1
        assert (fake.quantity_of("RUG"), fake.quantity_of("VASE")) == (1, 8)
        text = "\n".join(metrics.render())
        assert (
            'atp_push_channel_issues_total{channel="web",kind="amazon",severity="ERROR",store="eu"} 1.0'
            in text
        )


async def test_unlisted_and_fba_skus_are_never_patched() -> None:
    """Story: atp's catalogue has a SKU the seller never listed on Amazon and one that
    Amazon fulfils (FBA). Invariant: neither is patched (no incomplete listing is created,
    no merchant-fulfilled DEFAULT offer appears beside the FBA one); both are reported as
    skipped, never dead-lettered; the merchant listing gets its figure."""
    with FakeAmazon() as fake:
        fake.add_listing("MERCH", 1)
        fake.add_listing("FBA-1", 30, fulfillment_channel="AMAZON_NA")
        events: list[tuple[str, dict[str, str]]] = []
        hooks = ClientHooks(on_event=lambda name, labels: events.append((name, dict(labels))))
        client = amazon_pusher.create(amazon_settings(fake), "eu", hooks)
        try:
            result = await client.push({"MERCH": 5, "FBA-1": 9, "NEW": 4})
        finally:
            await client.aclose()
        assert result.get("MERCH") == Ok()
        assert isinstance(result.get("FBA-1"), Skip) and isinstance(result.get("NEW"), Skip)
        assert fake.listings() == {"MERCH": {"DEFAULT": 5}, "FBA-1": {"AMAZON_NA": 30}}
        patched = {r.path.rsplit("/", 1)[-1] for r in fake.requests("PATCH")}
        assert patched == {"MERCH"}


async def test_a_403_for_a_sku_with_a_slash_or_hash_is_permanent_for_that_sku() -> None:
    """Story: SP-API answers 403 for `TEE/BLK` and `MUG#2` whatever the token. Invariant:
    those two are refused for good after one try each (not retried every 30 s as an auth
    problem), and the other SKUs of the push are written."""
    with FakeAmazon(reject_special_skus=True) as fake:
        for sku in ("TEE/BLK", "MUG#2", "PLAIN"):
            fake.add_listing(sku, 0)
        client = amazon_pusher.create(amazon_settings(fake), "eu", HOOKS)
        try:
            result = await client.push({"TEE/BLK": 2, "MUG#2": 3, "PLAIN": 4})
            # Reconciliation reads the others; the refused SKU counts as not in the store.
            assert await client.current(["TEE/BLK", "PLAIN"]) == {"PLAIN": 4}
        finally:
            await client.aclose()
        assert isinstance(result.get("TEE/BLK"), Permanent)
        assert isinstance(result.get("MUG#2"), Permanent)
        assert result.get("PLAIN") == Ok() and fake.quantity_of("PLAIN") == 4
        assert fake.status_counts()[403] == 3


async def test_two_stores_on_one_seller_share_its_quota(rds: tuple[redis.Redis, str]) -> None:
    """Story: one Amazon seller runs two atp stores (two marketplaces' catalogues), each
    configured at the quota of 5 requests/s. Invariant: together they never exceed the
    seller's 5 requests/s (no 429), and every figure lands."""
    import redis.asyncio as aioredis

    _, prefix = rds
    with FakeAmazon() as fake:
        stores = {name: [f"{name}-{i}" for i in range(8)] for name in ("uk", "de")}
        for skus in stores.values():
            for sku in skus:
                fake.add_listing(sku, 0)
        shared = aioredis.Redis.from_url(redis_url(0))
        hooks = ClientHooks(redis=shared, redis_prefix=prefix)
        clients = [
            amazon_pusher.create(amazon_settings(fake, max_requests_per_second=5.0), s, hooks)
            for s in stores
        ]
        try:
            results = await asyncio.gather(
                *(
                    c.push(dict.fromkeys(skus, 6))
                    for c, skus in zip(clients, stores.values(), strict=True)
                )
            )
        finally:
            for client in clients:
                await client.aclose()
            await shared.aclose()
        assert all(o == Ok() for result in results for o in result.outcomes.values())
        assert all(q == {"DEFAULT": 6} for q in fake.listings().values())
        assert 429 not in fake.status_counts()
        # The seller's rate over the whole push (LWA token requests go to another host).
        # Each store alone sends 4.5/s, so unshared they would send about 9/s together. Not
        # a count in every one-second window: the limiter spaces permits, and on a loaded
        # machine a request can leave later than its permit and bunch with the next one
        # (Amazon's own bucket, faked above, allows a burst of 5 on top of 5/s anyway).
        api = sorted(r.time for r in fake.requests() if r.path.startswith("/listings/"))
        assert (len(api) - 1) / (api[-1] - api[0]) <= 5.0


class TlsTerminatingProxy(httpx.AsyncBaseTransport):
    """What sits in front of the store: takes https:// requests and forwards them to the
    WordPress behind it over plain HTTP (which therefore believes it is on plain HTTP)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.scheme)
        request.url = request.url.copy_with(scheme="http")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_store_behind_a_tls_proxy_takes_oauth1_signed_as_wordpress_sees_it() -> None:
    """Story: the shop is served over HTTPS by a proxy (a CDN, a load balancer) that
    forwards plain HTTP to WordPress without telling it: WordPress ignores Basic auth and
    checks OAuth 1.0a signatures over http:// URLs. Invariant: with `auth: oauth1` on the
    https:// URL the figures land; Basic (today's choice for https://) changes nothing."""
    with FakeWooCommerce("ck_p", "cs_p") as wc:  # WordPress behind the proxy: plain HTTP
        wc.add_product("BAG", stock=0)
        url = wc.url.replace("http://", "https://")
        outcomes = {}
        for auth in ("auto", "oauth1"):
            proxy = TlsTerminatingProxy()
            client = woocommerce_pusher.create(
                {"url": url, "consumer_key": "ck_p", "consumer_secret": "cs_p", "auth": auth},
                "shop", ClientHooks(transport=proxy),
            )  # fmt: skip
            try:
                outcomes[auth] = (await client.push({"BAG": 3})).get("BAG")
            finally:
                await client.aclose()
            assert set(proxy.seen) == {"https"}
            if auth == "auto":
                assert wc.stock_of("BAG") == 0
        assert not isinstance(outcomes["auto"], Ok)
        assert outcomes["oauth1"] == Ok()
        assert wc.stock_of("BAG") == 3


class EchoFirst(httpx.AsyncBaseTransport):
    """Delivers the store's `product.updated` echo of a batch write to the pusher before
    WooCommerce's answer reaches it (as a fast webhook does), and notes how it was taken."""

    def __init__(self, wc: FakeWooCommerce) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.wc = wc
        self.client: woocommerce_pusher.WooCommerceClient | None = None
        self.echoes: list[bool] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/batch"):
            assert self.client is not None
            for sku in ("JUG",):
                product = self.wc.product(self.wc.id_of(sku))
                self.echoes.append(await self.client.is_echo(product))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_echo_delivered_before_woocommerce_answers_is_recognised() -> None:
    """Story: WooCommerce delivers the `product.updated` webhook of atp's own write before
    its HTTP answer reaches the pusher. Invariant: the webhook is recognised as atp's echo
    (not logged as a change made in the store)."""
    with FakeWooCommerce("ck_e", "cs_e") as wc:
        wc.add_product("JUG", stock=0)
        transport = EchoFirst(wc)
        client = woocommerce_pusher.create(
            {"url": wc.url, "consumer_key": "ck_e", "consumer_secret": "cs_e"},
            "shop", ClientHooks(transport=transport),
        )  # fmt: skip
        transport.client = client
        try:
            assert (await client.push({"JUG": 4})).get("JUG") == Ok()
        finally:
            await client.aclose()
        assert wc.stock_of("JUG") == 4
        assert transport.echoes == [True]


async def test_a_restarted_pusher_keeps_the_days_revision_count(
    rds: tuple[redis.Redis, str],
) -> None:
    """Story: the eBay pusher is restarted in the middle of a clearance day (stock going
    down every second). Invariant: the revisions it spent before the restart still count
    (kept in Redis per eBay day), so after the restart it never sends a revision eBay would
    refuse, and it goes on writing until the day's budget is spent."""
    import redis.asyncio as aioredis

    _, prefix = rds
    clock = Clock()
    quantity = 1000
    with FakeEbay(revision_limit=20) as fake:
        fake.add_item("BUSY", 5000)
        shared = aioredis.Redis.from_url(redis_url(0))
        hooks = ClientHooks(redis=shared, redis_prefix=prefix)
        try:
            for seconds in (12, 100):  # before and after the restart
                client = ebay_client(
                    fake, hooks, store="us", budget=ebay_pusher.RevisionBudget(20, clock=clock)
                )
                try:
                    for _ in range(seconds):
                        clock.now += 1
                        quantity -= 1
                        await client.push({"BUSY": quantity})
                finally:
                    await client.aclose()
                if seconds == 12:
                    assert fake.revisions("BUSY") == 12
        finally:
            await shared.aclose()
        assert fake.revisions("BUSY") == 20  # the budget, spent across the restart
        assert 207 not in fake.status_counts()  # eBay never had to refuse one
