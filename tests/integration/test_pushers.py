"""Channel pushers on the real RabbitMQ, PostgreSQL and Redis, against the fake WooCommerce,
Amazon and eBay servers: coalescing, batching, re-resolving ids, Retry-After, 5xx retries,
restarts and reconciliation, dropped broker connections, dead letters and their replay,
stale positions, rate limits, and the whole path from the ledger through the projector.

Every test has its own RabbitMQ vhost, PostgreSQL database and Redis key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
import redis

from adapters.amqp import (
    Publisher,
    dead_letter_queue,
    push_queue,
)
from adapters.ledger import Ledger
from adapters.pushers.base import Ok, Retry
from adapters.pushers.runner import (
    PusherMetrics,
    PushOptions,
    build_pusher,
    replay_dead_letters,
    serve_metrics,
)
from adapters.pushers.woocommerce import WooCommerceClient, is_echo
from atp import commands as c
from projections.projector import Projector
from projections.readmodel import RedisStore
from tests.integration.conftest import Backend, run
from tests.support.amqp import rabbitmqctl
from tests.support.fakes import FakeAmazon, FakeEbay, FakeWooCommerce
from tests.support.pg import fresh_database
from tests.support.pushers import (
    FAST,
    LISTINGS,
    batch_posts,
    change,
    configure,
    configure_wc,
    eventually,
    max_in_any_second,
    publish,
    queue_counts,
    running,
    set_figures,
    settled,
    stocks,
)
from tests.support.redis_db import redis_url

pytestmark = pytest.mark.integration


# --- WooCommerce ---------------------------------------------------------------------------------


async def test_burst_of_1000_changes_becomes_one_batch_over_oauth(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    _, prefix = rds
    skus = [f"P{i:03d}" for i in range(100)]
    with FakeWooCommerce(auth="oauth1") as wc:  # plain HTTP: only OAuth 1.0a is accepted
        for sku in skus:
            wc.add_product(sku, stock=0)
        configure_wc(ledger, wc)
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, metrics=metrics,
            options=PushOptions(window=0.2, max_delay=3.0),
        )  # fmt: skip
        async with running(pusher):
            changes = []
            final: dict[str, int] = {}
            for round_ in range(10):
                for i, sku in enumerate(skus):
                    available = (round_ * 7 + i) % 50 + 1
                    changes.append(change(sku, available, round_ * 100 + i + 1))
                    final[sku] = available
            await publish(amqp_url, changes)
            await eventually(lambda: stocks(wc, skus) == final and settled(pusher), what="final")
            posts = batch_posts(wc)
            assert 1 <= len(posts) <= 3, [len(p.json()["update"]) for p in posts]
            assert all(len(p.json()["update"]) <= 100 for p in posts)
            assert all(item["manage_stock"] is True for p in posts for item in p.json()["update"])
            assert wc.request_count("GET") <= 2  # ids resolved in one lookup, then cached
            assert 401 not in wc.status_counts()
            assert all("oauth_signature" in p.query for p in wc.requests())
            assert metrics.value("items", "woocommerce", "shop") <= 300
            assert metrics.value("superseded", "woocommerce", "shop") >= 700
            assert metrics.delay_count("woocommerce", "shop") >= 100
            assert await queue_counts(amqp_url, push_queue("woocommerce", "shop")) == (0, 0)

            # The echo of our own write is recognised, here and from another process (Redis);
            # a sale recorded by the store after it is not an echo.
            product = wc.product(wc.id_of("P007"))
            assert await pusher.client.is_echo(product)  # type: ignore[attr-defined]
            assert await is_echo(pusher.figure_source.client, prefix, "shop", product)  # type: ignore[union-attr]
            wc.record_sale("P007", 1)
            assert not await is_echo(
                pusher.figure_source.client,
                prefix,
                "shop",
                wc.product(wc.id_of("P007")),  # type: ignore[union-attr]
            )
        text = "\n".join(metrics.render())
        assert 'atp_push_items_total{channel="web",kind="woocommerce",store="shop"}' in text
        assert "atp_push_delay_seconds_bucket" in text
        assert (
            'atp_push_requests_total{channel="web",kind="woocommerce",status="200",store="shop"}'
            in text
        )


async def test_batches_of_at_most_100_and_variations_on_their_route(
    amqp_url: str, ledger: Ledger
) -> None:
    with FakeWooCommerce() as wc:
        simple = [f"S{i:03d}" for i in range(180)]
        for sku in simple:
            wc.add_product(sku, stock=0)
        parent = wc.add_product("TEE", type="variable")
        variations = [f"TEE-{i:02d}" for i in range(30)]
        for sku in variations:
            wc.add_variation(parent, sku, stock=0)
        configure_wc(ledger, wc)
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url, options=FAST
        )
        async with running(pusher):
            everything = simple + variations
            final = {sku: i % 17 + 3 for i, sku in enumerate(everything)}
            await publish(
                amqp_url, [change(sku, q, i + 1) for i, (sku, q) in enumerate(final.items())]
            )
            await eventually(lambda: stocks(wc, everything) == final and settled(pusher))
        posts = batch_posts(wc)
        assert all(len(p.json()["update"]) <= 100 for p in posts)
        product_posts = [p for p in posts if p.path.endswith("/products/batch")]
        variation_posts = [p for p in posts if "/variations/" in p.path]
        assert sum(len(p.json()["update"]) for p in product_posts) == 180
        assert len(product_posts) >= 2
        assert {p.path for p in variation_posts} == {
            f"/wp-json/wc/v3/products/{parent}/variations/batch"
        }
        assert {w.route for w in wc.writes() if w.sku in variations} == {"variation_batch"}
        assert all(len(r.param("sku", "").split(",")) <= 100 for r in wc.requests("GET"))
        assert 404 not in wc.status_counts()


async def test_invalid_id_is_resolved_again_and_unknown_sku_is_dead_lettered_then_replayed(
    amqp_url: str, ledger: Ledger
) -> None:
    queue = push_queue("woocommerce", "shop")
    with FakeWooCommerce() as wc:
        wc.add_product("A", stock=0)
        b_id = wc.add_product("B", stock=0)
        configure_wc(ledger, wc)
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url, metrics=metrics, options=FAST
        )
        async with running(pusher):
            await publish(amqp_url, [change("A", 4, 1), change("B", 5, 2)])
            await eventually(lambda: stocks(wc, ["A", "B"]) == {"A": 4, "B": 5} and settled(pusher))
            lookups = wc.request_count("GET")

            # "A" was deleted and created again in the store: its cached id is stale.
            a_id = wc.id_of("A")
            wc.delete_product(a_id)
            wc.add_product("A", stock=0)
            await publish(amqp_url, [change("A", 9, 3)])
            await eventually(lambda: wc.stock_of("A") == 9 and settled(pusher))
            assert wc.request_count("GET") == lookups + 1  # re-resolved once
            tries = [
                item["id"]
                for p in batch_posts(wc)
                for item in p.json()["update"]
                if item["stock_quantity"] == 9
            ]
            assert tries == [a_id, wc.id_of("A")]  # the stale id, then the new one

            # "B" vanished from the store: after re-resolving, a permanent error -> DLQ.
            wc.make_unknown(b_id)
            await publish(amqp_url, [change("B", 1, 4), change("B", 2, 5)])
            await eventually(lambda: metrics.value("dead_letters", "woocommerce") == 1)
            await eventually(lambda: settled(pusher))
            assert await queue_counts(amqp_url, queue) == (0, 1)
            assert wc.stock_of("B") == 5

            # Back in the store: the replayed message goes through.
            wc.make_known(b_id)
            with pytest.raises(LookupError):
                await replay_dead_letters(amqp_url, "atp.push.woocommerce.nowhere")
            assert await replay_dead_letters(amqp_url, dead_letter_queue(queue)) == 1
            await eventually(lambda: wc.stock_of("B") == 2 and settled(pusher))
            assert await queue_counts(amqp_url, queue) == (0, 0)
        assert metrics.value("permanent_errors", "woocommerce") == 1
        assert metrics.value("superseded", "woocommerce") >= 1


async def test_retry_after_is_honoured_and_5xx_retried(amqp_url: str, ledger: Ledger) -> None:
    skus = ["R1", "R2", "R3"]
    with FakeWooCommerce() as wc:
        for sku in skus:
            wc.add_product(sku, stock=0)
        configure_wc(ledger, wc)
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url, metrics=metrics, options=FAST
        )
        is_post = lambda req: req.method == "POST"  # noqa: E731
        wc.faults.throttle_next(1, retry_after=2, html=True, when=is_post)
        wc.faults.fail_next(1, status=500, when=is_post)
        wc.faults.fail_next(1, status=503, html=True, when=is_post)
        async with running(pusher):
            await publish(amqp_url, [change(s, i + 10, i + 1) for i, s in enumerate(skus)])
            final = {s: i + 10 for i, s in enumerate(skus)}
            await eventually(lambda: stocks(wc, skus) == final and settled(pusher))
        posts = wc.requests("POST")
        assert [p.status for p in posts] == [429, 500, 503, 200]
        assert posts[1].time - posts[0].time >= 2.0  # Retry-After: 2
        assert metrics.value("retries", "woocommerce") == 3 * 3
        assert metrics.value("dead_letters", "woocommerce") == 0
        assert metrics.value("requests", "woocommerce", status="429") == 1


async def test_stale_positions_are_dropped(amqp_url: str, ledger: Ledger) -> None:
    with FakeWooCommerce() as wc:
        wc.add_product("A", stock=0)
        configure_wc(ledger, wc)
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url, metrics=metrics, options=FAST
        )
        async with running(pusher):
            await publish(amqp_url, [change("A", 5, 10)])
            await eventually(lambda: wc.stock_of("A") == 5 and settled(pusher))
            writes = wc.write_count
            # An older figure and a redelivery of the applied one: both dropped.
            await publish(amqp_url, [change("A", 99, 7), change("A", 5, 10)])
            await eventually(lambda: metrics.value("stale", "woocommerce") == 2)
            assert wc.stock_of("A") == 5 and wc.write_count == writes
            # Out of order within one burst: the newest position wins.
            await publish(amqp_url, [change("A", 1, 20), change("A", 50, 15)])
            await eventually(lambda: wc.stock_of("A") == 1 and settled(pusher))
            await asyncio.sleep(0.3)
            assert wc.stock_of("A") == 1
        assert await queue_counts(amqp_url, push_queue("woocommerce", "shop")) == (0, 0)
        server = await serve_metrics(metrics, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            async with httpx.AsyncClient() as http:
                scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        finally:
            server.close()
            await server.wait_closed()
        assert 'atp_push_stale_total{channel="web",kind="woocommerce",store="shop"} ' in scraped
        assert "# TYPE atp_push_delay_seconds histogram" in scraped


async def test_client_basic_auth_and_smaller_batch_limit() -> None:
    """Over HTTPS the client uses Basic auth (forced here); a store whose batch limit is
    below 100 answers 413 and the client halves its batches."""
    with FakeWooCommerce(batch_limit=30, auth="basic") as wc:  # WordPress sees HTTPS
        skus = [f"B{i:02d}" for i in range(60)]
        for sku in skus:
            wc.add_product(sku, stock=1)
        client = WooCommerceClient(wc.url, "ck_fake", "cs_fake", auth="basic", rate=100)
        try:
            assert await client.current([*skus, "NOPE"]) == dict.fromkeys(skus, 1)
            figures = {sku: 7 for sku in skus}
            for _ in range(4):
                result = await client.push(figures)
                figures = {s: 7 for s, o in result.outcomes.items() if not isinstance(o, Ok)}
                assert all(isinstance(o, Ok | Retry) for o in result.outcomes.values())
                if not figures:
                    break
            assert not figures
            assert client.max_batch <= 30
            assert all(v == 7 for v in stocks(wc, skus).values())
            assert all(
                (r.header("authorization") or "").startswith("Basic ") for r in wc.requests()
            )
        finally:
            await client.aclose()


# --- restarts and broker failures ------------------------------------------------------------------


async def test_restart_mid_burst_converges_by_reconciliation(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    r, prefix = rds
    skus = [f"C{i:02d}" for i in range(60)]
    with FakeWooCommerce() as wc:
        for sku in skus:
            wc.add_product(sku, stock=0)
        configure_wc(ledger, wc)
        options = PushOptions(window=0.05, backoff_base=0.05, backoff_cap=1.0, reconnect_delay=0.2)
        changes, final = [], {}
        for round_ in range(5):
            for i, sku in enumerate(skus):
                position = round_ * 100 + i + 1
                final[sku] = (round_ + 1) * 3 + i % 4
                changes.append(change(sku, final[sku], position))
        set_figures(r, prefix, "web", {ch.sku: (ch.available, ch.position) for ch in changes})

        wc.faults.latency = 0.4
        first = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, options=options,
        )  # fmt: skip
        # The read model is ahead of the store: reconciliation starts writing at once;
        # the task is cancelled in the middle of it.
        task = asyncio.create_task(first.run(asyncio.Event()))
        await eventually(lambda: len(batch_posts(wc)) >= 1, what="first write in flight")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await first.aclose()
        wc.faults.latency = 0
        await eventually(lambda: all(q.status is not None for q in wc.requests()))

        # Meanwhile the burst lands in the queue, and someone edits the store by hand.
        await publish(amqp_url, changes)
        for sku in skus[:10]:
            wc.set_stock(sku, 999)

        metrics = PusherMetrics()
        second = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, options=options, metrics=metrics,
        )  # fmt: skip
        async with running(second):
            assert second.last_reconcile is not None
            assert second.last_reconcile.written >= 10
            await eventually(lambda: stocks(wc, skus) == final and settled(second))
            # Every queued message was older than (or equal to) the reconciled figures.
            await eventually(lambda: metrics.value("stale", "woocommerce") == len(changes))
            await eventually(lambda: second.metrics.value("queue_depth", "woocommerce") == 0)
        assert await queue_counts(amqp_url, push_queue("woocommerce", "shop")) == (0, 0)


async def test_dropped_broker_connection_converges(amqp_url: str, ledger: Ledger) -> None:
    skus = [f"D{i:02d}" for i in range(40)]
    vhost = amqp_url.rsplit("/", 1)[1]
    with FakeWooCommerce() as wc:
        for sku in skus:
            wc.add_product(sku, stock=0)
        configure_wc(ledger, wc)
        pusher = await build_pusher(
            "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url, options=FAST
        )
        async with running(pusher):
            wc.faults.latency = 0.5  # writes are in flight when the connection goes
            await publish(amqp_url, [change(s, 1, i + 1) for i, s in enumerate(skus)])
            await eventually(lambda: len(batch_posts(wc)) >= 1)
            rabbitmqctl("close_all_connections", "--vhost", vhost, "test: drop the pusher")
            wc.faults.latency = 0
            final = {s: i % 9 + 2 for i, s in enumerate(skus)}
            await publish(
                amqp_url, [change(s, q, 100 + i) for i, (s, q) in enumerate(final.items())]
            )
            await eventually(lambda: pusher.connections >= 2, what="reconnected")
            await eventually(lambda: stocks(wc, skus) == final and settled(pusher))
            await asyncio.sleep(0.3)
            assert await queue_counts(amqp_url, push_queue("woocommerce", "shop")) == (0, 0)
            assert stocks(wc, skus) == final


# --- the whole path --------------------------------------------------------------------------------


class _RealClock:
    def __call__(self) -> datetime:
        return datetime.now(UTC)


async def test_ledger_to_projector_to_woocommerce(
    amqp_url: str, tmp_path: Path, rds: tuple[redis.Redis, str]
) -> None:
    r, prefix = rds
    skus = ["E1", "E2", "E3", "E4"]
    L = c.Line
    with fresh_database() as url, FakeWooCommerce() as wc:
        backend = Backend(url, tmp_path, _RealClock())  # type: ignore[arg-type]
        service = backend.service()
        ledger = backend.ledger()
        publisher = await asyncio.to_thread(Publisher, amqp_url)
        projector = Projector(ledger, RedisStore(r, prefix), publisher=publisher)
        try:
            for command in (
                c.DefineLocation(code="WH1", name="Main", kind="warehouse"),
                c.DefineChannel(code="web", locations=("WH1",), buffer=1),
                c.ReceiveStock(location="WH1", lines=tuple(L(s, 10 * (i + 1)) for i, s in enumerate(skus))),
            ):  # fmt: skip
                await asyncio.to_thread(run, service, command)
            await asyncio.to_thread(projector.resume)
            # Published before any push queue existed: those messages are gone, and the
            # pusher's reconciliation must make up for them.
            await asyncio.to_thread(projector.catch_up)
            for sku in skus:
                wc.add_product(sku, stock=0)
            wc.add_product("NOT-IN-ATP", stock=3)
            configure_wc(ledger, wc)

            def truth() -> dict[str, int]:
                out = {}
                for sku in skus:
                    raw = r.hget(f"{prefix}:{{{sku}}}:ats", "web")
                    out[sku] = msgspec.json.decode(raw)["available"] if raw else None
                return out

            assert truth() == {"E1": 9, "E2": 19, "E3": 29, "E4": 39}
            metrics = PusherMetrics()
            pusher = await build_pusher(
                "woocommerce", "shop", ledger=ledger, amqp_url=amqp_url,
                redis_url=redis_url(0), redis_prefix=prefix, metrics=metrics, options=FAST,
            )  # fmt: skip
            async with running(pusher):
                assert stocks(wc, skus) == truth()
                assert pusher.last_reconcile is not None and pusher.last_reconcile.written == 4
                for command in (
                    c.AdjustStock(location="WH1", sku="E1", delta=-4, reason="shrink"),
                    c.ReserveStock(reservation_id="R1", channel="web",
                                   lines=(L("E2", 5), L("E3", 29)), ttl_seconds=600),
                    c.PlaceOrder(order_id="O1", channel="web", lines=(L("E4", 3),)),
                ):  # fmt: skip
                    await asyncio.to_thread(run, service, command)
                await asyncio.to_thread(projector.catch_up)
                assert truth() == {"E1": 5, "E2": 14, "E3": 0, "E4": 36}
                await eventually(lambda: stocks(wc, skus) == truth() and settled(pusher))
                assert wc.stock_of("NOT-IN-ATP") == 3
            assert metrics.value("items", "woocommerce") == 8
            assert metrics.delay_count("woocommerce", "shop") == 4
        finally:
            await asyncio.to_thread(publisher.close)
            ledger.close()
            backend.close()


# --- Amazon and eBay -------------------------------------------------------------------------------


async def test_amazon_rate_limit_and_invalid_listing(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    r, prefix = rds
    skus = [f"AZ{i:02d}" for i in range(12)]
    with FakeAmazon() as amazon:
        for sku in skus:
            amazon.add_listing(sku, 0)
        amazon.make_unknown("AZ-BAD")
        amazon.add_listing("AZ-FLAKY", 0)
        amazon.faults.fail_next(
            FAST.max_attempts,
            status=503,
            when=lambda req: req.method == "PATCH" and req.path.endswith("/AZ-FLAKY"),
        )
        configure(
            ledger, "amazon", "eu", "web",
            {"endpoint": amazon.url, "channel": "web", "seller_id": amazon.seller_id,
             "marketplace_id": amazon.marketplace_ids[0], "product_type": "SHIRT",
             "access_token": amazon.access_token, "max_requests_per_second": 5.0},
        )  # fmt: skip
        # The read model knows four SKUs the account has at other figures.
        set_figures(r, prefix, "web", {s: (i + 1, i + 1) for i, s in enumerate(skus[:4])})
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "amazon", "eu", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, metrics=metrics, options=FAST,
        )  # fmt: skip
        async with running(pusher):
            assert pusher.last_reconcile is not None and pusher.last_reconcile.written == 4
            final = {s: 20 + i for i, s in enumerate(skus)}
            await publish(
                amqp_url,
                [change(s, q, 100 + i) for i, (s, q) in enumerate(final.items())]
                + [change("AZ-BAD", 3, 500), change("AZ-FLAKY", 4, 501)],
            )
            await eventually(
                lambda: {s: amazon.quantity_of(s) for s in skus} == final and settled(pusher),
                within=20,
            )
        requests = amazon.requests()
        assert max_in_any_second([q.time for q in requests]) <= 5
        assert 429 not in amazon.status_counts()
        patch = amazon.requests("PATCH")[0].json()
        assert patch["productType"] == "SHIRT"
        assert patch["patches"][0]["value"] == [
            {
                "fulfillment_channel_code": "DEFAULT",
                "quantity": patch["patches"][0]["value"][0]["quantity"],
            }
        ]
        # AZ-BAD has no listing: never patched (that would create an incomplete listing),
        # skipped and counted, not parked.
        assert amazon.submissions("AZ-BAD") == []
        assert metrics.value("skipped", "amazon") == 1
        # AZ-FLAKY kept failing (503): dead-lettered after max_attempts tries.
        assert len(amazon.requests("PATCH", f"{LISTINGS}{amazon.seller_id}/AZ-FLAKY")) == 6
        assert amazon.quantity_of("AZ-FLAKY") == 0
        assert metrics.value("dead_letters", "amazon") == 1
        assert metrics.value("retries", "amazon") == FAST.max_attempts - 1
        assert await queue_counts(amqp_url, push_queue("amazon", "eu")) == (0, 1)


async def test_ebay_batches_of_25_and_per_sku_errors(
    amqp_url: str, ledger: Ledger, rds: tuple[redis.Redis, str]
) -> None:
    r, prefix = rds
    skus = [f"K{i:02d}" for i in range(60)]
    with FakeEbay() as ebay:
        for sku in skus:
            ebay.add_item(sku, 0)
        configure(
            ledger, "ebay", "de", "web",
            {"endpoint": ebay.url, "channel": "web", "access_token": ebay.token,
             "max_requests_per_second": 50.0},
        )  # fmt: skip
        set_figures(r, prefix, "web", {"K00": (1, 1), "K01": (0, 2), "GONE": (4, 3)})
        metrics = PusherMetrics()
        pusher = await build_pusher(
            "ebay", "de", ledger=ledger, amqp_url=amqp_url,
            redis_url=redis_url(0), redis_prefix=prefix, metrics=metrics, options=FAST,
        )  # fmt: skip
        async with running(pusher):
            report = pusher.last_reconcile
            assert report is not None
            assert (report.written, report.equal, report.not_in_store) == (1, 1, 1)
            ebay.faults.fail_next(1, status=500, when=lambda req: req.method == "POST")
            final = {s: i % 11 + 1 for i, s in enumerate(skus)}
            await publish(
                amqp_url,
                [change(s, q, 100 + i) for i, (s, q) in enumerate(final.items())]
                + [change("NOPE", 2, 900)],
            )
            await eventually(lambda: ebay.items() == final and settled(pusher))
        calls = ebay.requests("POST")
        assert all(len(call.json()["requests"]) <= 25 for call in calls)
        assert [call.status for call in calls].count(500) == 1
        assert any(u.status == 207 for u in ebay.updates())  # NOPE failed alone
        assert metrics.value("dead_letters", "ebay") == 1
        assert metrics.value("items", "ebay") == 60 + 1
        assert await queue_counts(amqp_url, push_queue("ebay", "de")) == (0, 1)
