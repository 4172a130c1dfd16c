"""The ledger and command service on real storage: the same scenarios on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from adapters.ledger import history
from api.service.commands import (
    Applied,
    CommandService,
    Idempotency,
    Job,
    Receipt,
    Rejected,
    Replayed,
    decider,
)
from api.service.operations import Operations
from api.service.sweeper import Sweeper
from atp import commands as c
from atp.ats import channel_availability
from atp.errors import AlreadyExists, InsufficientStock, NotFound
from atp.world import fold
from tests.integration.conftest import Backend, run
from tests.support.catalogue import (
    setup_catalogue,
)

pytestmark = pytest.mark.integration


def test_checkout_lifecycle_is_recorded_and_replays(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    run(
        service,
        c.ReserveStock(
            reservation_id="r1", channel="web", lines=(c.Line("A", 7),), ttl_seconds=600
        ),
    )
    run(service, c.CommitReservation(reservation_id="r1", order_id="o1"))
    run(
        service,
        c.ShipOrder(order_id="o1", shipment_id="s1", location="WH1", lines=(c.Line("A", 5),)),
    )
    run(
        service,
        c.ReturnOrder(
            order_id="o1", return_id="x1", location="WH1", lines=(c.ReturnLine("A", 1, "damaged"),)
        ),
    )

    # A second process (a fresh ledger, no cache) sees exactly the same state.
    ledger = backend.ledger()
    item, version = ledger.load(("item", "A"))
    assert version == 6
    assert item.at("WH1").on_hand == 1 and item.at("WH1").damaged == 1
    assert item.at("ST1").allocated == 2 and item.at("ST1").on_hand == 3
    order, _ = ledger.load(("order", "o1"))
    assert order.status == "partially_returned"
    # Replaying the stored events reproduces the loaded state.
    events = [e.event for e in ledger.records(("item", "A"))]
    assert fold(("item", "A"), events) == item
    ledger.close()


def test_multi_sku_command_is_all_or_nothing(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    with pytest.raises(InsufficientStock) as raised:
        run(
            service,
            c.ReserveStock(
                reservation_id="r1",
                channel="web",
                lines=(c.Line("A", 1), c.Line("B", 3)),
                ttl_seconds=60,
            ),
        )
    assert [line.as_dict() for line in raised.value.lines] == [
        {"sku": "B", "requested": 3, "available": 2}
    ]
    ledger = backend.ledger()
    assert ledger.load(("item", "A"))[1] == 2  # only the two receipts
    assert ledger.load(("reservation", "r1")) == (None, 0)
    ledger.close()


def test_second_writer_conflict_is_decided_again(pg_backend: Backend) -> None:
    """Two processes' writers on one ledger: stale caches never oversell."""
    first, second = pg_backend.service(), pg_backend.service()
    setup_catalogue(first)
    policies_only = c.DefineChannel(code="pos", locations=("ST1",))
    run(second, policies_only)
    # Both caches hold item A; the second writer takes 6 units, then the first tries 4.
    run(
        first,
        c.ReserveStock(reservation_id="a", channel="web", lines=(c.Line("A", 1),), ttl_seconds=60),
    )
    run(
        second,
        c.ReserveStock(reservation_id="b", channel="web", lines=(c.Line("A", 6),), ttl_seconds=60),
    )
    with pytest.raises(InsufficientStock):
        run(
            first,
            c.ReserveStock(
                reservation_id="c", channel="web", lines=(c.Line("A", 4),), ttl_seconds=60
            ),
        )
    run(
        first,
        c.ReserveStock(reservation_id="d", channel="web", lines=(c.Line("A", 1),), ttl_seconds=60),
    )
    ledger = pg_backend.ledger()
    item, _ = ledger.load(("item", "A"))
    assert sum(s.held for s in item.locations.values()) == 8
    ledger.close()


def test_rejection_rests_on_fresh_state(pg_backend: Backend) -> None:
    """A stale cache saying 'sold out' must not reject once another process received stock."""
    first, second = pg_backend.service(), pg_backend.service()
    setup_catalogue(first)
    run(
        first,
        c.ReserveStock(reservation_id="a", channel="web", lines=(c.Line("B", 2),), ttl_seconds=60),
    )
    run(second, c.ReceiveStock(location="WH1", lines=(c.Line("B", 5),)))
    run(
        first,
        c.ReserveStock(reservation_id="b", channel="web", lines=(c.Line("B", 5),), ttl_seconds=60),
    )


def test_idempotency_record_commits_with_the_effect(pg_backend: Backend) -> None:
    """Another process that has never seen the key replays it instead of acting twice."""
    first, second = pg_backend.service(), pg_backend.service()
    setup_catalogue(first)
    idem = Idempotency("shop POST /v1/reservations", "key-1", "hash-1")
    command = c.ReserveStock(
        reservation_id="r1", channel="web", lines=(c.Line("A", 2),), ttl_seconds=60
    )

    def job() -> Job:
        return Job(
            decide=decider(
                lambda world, now: __import__("atp.decide", fromlist=["decide"]).decide(
                    command, world, now
                )
            ),
            correlation_id="t",
            receipt=lambda result: Receipt(201, b'{"ok":true}'),
            idempotency=idem,
        )

    one = first.run_sync(job())
    two = second.run_sync(job())
    assert isinstance(one, Applied) and isinstance(two, Replayed)
    assert two.receipt == Receipt(201, b'{"ok":true}')
    assert second.conflicts >= 1  # it learnt of the key through the version conflict
    ledger = pg_backend.ledger()
    item, _ = ledger.load(("item", "A"))
    assert sum(s.held for s in item.locations.values()) == 2
    ledger.close()


def test_long_streams_load_from_snapshots(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    for i in range(120):
        run(
            service, c.AdjustStock(location="WH1", sku="A", delta=1 if i % 2 else -1, reason="test")
        )
    ledger = backend.ledger()
    assert ledger.snapshots is not None
    snapshots = list(
        ledger.snapshots.get(
            __import__("adapters.ledger", fromlist=["stream_id"]).stream_id(("item", "A"))
        )
    )
    assert [s.originator_version for s in snapshots] == [100]
    item, version = ledger.load(("item", "A"))
    assert version == 122
    assert item == fold(("item", "A"), [e.event for e in ledger.records(("item", "A"))])
    ledger.close()


def test_sweeper_records_expiry(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    run(
        service,
        c.ReserveStock(reservation_id="r1", channel="web", lines=(c.Line("A", 8),), ttl_seconds=30),
    )
    ledger = backend.ledger()
    sweeper = Sweeper(ledger, service)
    assert sweeper.sweep_once() == 0
    item, _ = ledger.load(("item", "A"))
    policies, _ = ledger.load(("policies", "global"))
    web = policies.channels["web"]
    assert channel_availability(item, policies, web, backend.clock()).available == 0
    # Expired holds stop counting at expires_at, before the sweeper runs...
    backend.clock.advance(30)
    assert channel_availability(item, policies, web, backend.clock()).available == 8
    # ...and the sweeper records it.
    assert sweeper.sweep_once() == 1
    assert sweeper.sweep_once() == 0
    reservation, _ = ledger.load(("reservation", "r1"))
    assert reservation.status == "expired"
    item, _ = ledger.load(("item", "A"))
    assert item.holds == {} and all(s.held == 0 for s in item.locations.values())
    with pytest.raises(Exception) as raised:
        run(service, c.ReleaseReservation(reservation_id="r1"))
    assert "expired" in str(raised.value)
    ledger.close()


def test_history_lists_item_and_policy_events_in_order(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    run(service, c.SetSafetyStock(sku="A", location=None, quantity=1))
    ledger = backend.ledger()
    rows = history(ledger, [("item", "A"), ("policies", "global")], 0, 100)
    kinds = [type(r.event).__name__ for r in rows]
    assert kinds == [
        "LocationDefined",
        "LocationDefined",
        "ChannelDefined",
        "StockReceived",
        "StockReceived",
        "SafetyStockSet",
    ]
    positions = [r.position for r in rows]
    assert positions == sorted(positions)
    page = history(ledger, [("item", "A"), ("policies", "global")], positions[2], 2)
    assert [r.position for r in page] == positions[3:5]
    ledger.close()


def test_concurrent_jobs_are_group_committed(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    run(service, c.ReceiveStock(location="WH1", lines=(c.Line("HOT", 50),)))
    before = service.batches
    results: list[object] = []

    def reserve(i: int) -> None:
        try:
            run(
                service,
                c.ReserveStock(
                    reservation_id=f"r{i}", channel="web", lines=(c.Line("HOT", 1),), ttl_seconds=60
                ),
            )
            results.append("ok")
        except InsufficientStock:
            results.append("short")

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 50 and results.count("short") == 30
    assert service.batches - before < 80  # several commands shared a transaction
    ledger = backend.ledger()
    item, _ = ledger.load(("item", "HOT"))
    assert item.at("WH1").held == 50
    ledger.close()


def test_unknown_resources(backend: Backend) -> None:
    service = backend.service()
    setup_catalogue(service)
    with pytest.raises(NotFound):
        run(service, c.ReleaseReservation(reservation_id="nope"))
    with pytest.raises(NotFound):
        run(service, c.ReceiveTransfer(transfer_id="nope"))


def test_a_trusting_writer_sees_a_safety_stock_raised_by_another_process(
    backend: Backend,
) -> None:
    """Story (found by QA): the writer worker decides checkouts on its cached states
    (CommandService.trust_cache) while a planner raises the safety stock through another
    process (a second host's `atp serve`, the CLI, a worker deciding while the writer
    restarts). The policies are read by every reservation but written by none of them, so
    the append's version check never covers them.

    Invariant: a reservation decided after the rule was recorded never sells the units the
    rule keeps back, however long the writer has had the policies cached."""
    writer = backend.service()
    writer.trust_cache = True
    other = backend.service()
    run(other, c.DefineLocation("L1", "Main", "warehouse"))
    run(other, c.DefineChannel("web", ("L1",)))
    run(other, c.ReceiveStock("L1", (c.Line("S", 10),)))
    reserve = c.ReserveStock
    run(writer, reserve("r1", "web", (c.Line("S", 1),), 900))  # the writer caches all of it
    run(other, c.SetSafetyStock(None, "L1", 9))  # 9 of the 10 kept back: nothing sellable
    with pytest.raises(InsufficientStock):
        run(writer, reserve("r2", "web", (c.Line("S", 3),), 900))
    ledger = backend.ledger()
    item, _ = ledger.load(("item", "S"))
    assert item.at("L1").held == 1
    ledger.close()


def _decided(service: CommandService, command: c.Command) -> Applied[None] | Rejected:
    """Run `command` as the routes do (Operations.decider: a direct order's or a commit's
    order id is assumed new in the writer's trusted attempts)."""
    job = Job(Operations(service).decider(command), correlation_id="test")
    result = service.run_sync(job)
    assert isinstance(result, Applied | Rejected)
    return result


def test_a_marketplace_order_resent_after_a_restart_is_allocated_once(
    backend: Backend,
) -> None:
    """Story: a marketplace connector posts Amazon order 114-3941689 as a direct order; the
    answer is lost in a deploy, and the connector resends the same order id under a new
    Idempotency-Key to the restarted writer, which trusts its cache and has never seen that
    order (assumed new: Operations.decider). A checkout then commits a hold under an
    order id the till had already used. Meanwhile ordinary orders keep flowing.

    Invariant: an order id is allocated once. The resend is refused as an existing order
    (the append's version check catches the wrong assumption, and the batch is decided
    again on the ledger's states), the reused commit too, and stock moves only for the
    orders that were accepted."""
    before = backend.service()
    setup_catalogue(before)
    order = c.PlaceOrder(order_id="114-3941689", channel="web", lines=(c.Line("A", 2),))
    assert isinstance(_decided(before, order), Applied)
    ledger = backend.ledger()
    placed = ledger.load(("order", "114-3941689"))[1]
    writer = backend.service()  # the restarted writer: an empty cache
    writer.trust_cache = True
    resent = _decided(writer, order)
    assert isinstance(resent, Rejected) and isinstance(resent.error, AlreadyExists)
    assert writer.conflicts == 1  # assumed new, not read first: the append found out
    assert isinstance(_decided(writer, c.PlaceOrder("w-2", "web", (c.Line("A", 1),))), Applied)
    reserve = c.ReserveStock("r-9", "web", (c.Line("A", 1),), 600)
    assert isinstance(_decided(writer, reserve), Applied)
    reused = _decided(writer, c.CommitReservation("r-9", "114-3941689"))
    assert isinstance(reused, Rejected) and isinstance(reused.error, AlreadyExists)
    assert isinstance(_decided(writer, c.CommitReservation("r-9", "w-3")), Applied)
    item, _ = ledger.load(("item", "A"))
    assert sum(s.allocated for s in item.locations.values()) == 2 + 1 + 1
    assert sum(s.held for s in item.locations.values()) == 0
    assert ledger.load(("order", "114-3941689"))[1] == placed  # placed once, never again
    ledger.close()
