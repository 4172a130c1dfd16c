"""The sweeper records expiry of exactly the holds that are still held and past their
current expiry: never one that was extended, released or paid for, never one early, and
every one that is due (on SQLite and PostgreSQL; a property over random sequences on
SQLite)."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.service.commands import CommandService
from api.service.sweeper import Sweeper
from atp import commands as c
from atp.ats import channel_availability
from tests.integration.conftest import Backend, Clock, run

pytestmark = pytest.mark.integration


def _shop(service: CommandService, sku: str, units: int) -> None:
    """One warehouse selling to the web channel, with `units` of `sku` received."""
    run(service, c.DefineLocation(code="WH1", name="Main", kind="warehouse"))
    run(service, c.DefineChannel(code="web", locations=("WH1",)))
    run(service, c.ReceiveStock(location="WH1", lines=(c.Line(sku, units),)))


def _available(backend: Backend, sku: str) -> int:
    ledger = backend.ledger()
    try:
        item, _ = ledger.load(("item", sku))
        policies, _ = ledger.load(("policies", "global"))
        return channel_availability(
            item, policies, policies.channels["web"], backend.clock()
        ).available
    finally:
        ledger.close()


def _status(backend: Backend, reservation_id: str) -> str:
    ledger = backend.ledger()
    try:
        reservation, _ = ledger.load(("reservation", reservation_id))
        return str(reservation.status)
    finally:
        ledger.close()


def test_cyber_monday_holds_expire_only_when_abandoned_and_due(backend: Backend) -> None:
    """Story: on Cyber Monday 40 shoppers each hold 1 of the 40 units of a doorbuster for
    10 minutes. Ten ask for more time on the payment page (the hold is extended by 10
    minutes at minute 8), ten pay, ten close the tab and are released by the storefront,
    ten simply leave. The sweeper runs every few seconds all along.

    Invariant: a hold is recorded expired exactly when it is still held and its current
    expiry has passed: the extended ones survive their first expiry and go at theirs; paid
    and released ones are never expired; every unit comes back to sale once its hold is
    gone, and none before."""
    service = backend.service()
    _shop(service, "DOOR", 40)
    ledger = backend.ledger()
    sweeper = Sweeper(ledger, service)
    shoppers = [f"cm-{n}" for n in range(40)]
    extended, paid, released, left = (shoppers[i : i + 10] for i in range(0, 40, 10))
    for rid in shoppers:
        line = (c.Line("DOOR", 1),)
        run(service, c.ReserveStock(reservation_id=rid, channel="web", lines=line, ttl_seconds=600))
        backend.clock.advance(1)  # one hold a second: each has its own expiry
    assert _available(backend, "DOOR") == 0
    swept = 0
    for _ in range(8 * 60 // 5):
        swept += sweeper.sweep_once()
        backend.clock.advance(5)
    assert swept == 0  # nobody's hold is due at minute 8
    for rid in extended:
        run(service, c.ExtendReservation(reservation_id=rid, ttl_seconds=600))
    for rid in paid:
        run(service, c.CommitReservation(reservation_id=rid, order_id=f"order-{rid}"))
    for rid in released:
        run(service, c.ReleaseReservation(reservation_id=rid))
    assert _available(backend, "DOOR") == 10  # the released ones are back on sale
    # Minute 8 to 11: the ten who left expire at their original times, one a second.
    for _ in range(3 * 60 // 5):
        swept += sweeper.sweep_once()
        backend.clock.advance(5)
    assert swept == 10
    assert {rid: _status(backend, rid) for rid in left} == dict.fromkeys(left, "expired")
    assert all(_status(backend, rid) == "held" for rid in extended)
    assert _available(backend, "DOOR") == 20
    # The extended ones go at minute 18, not at their first expiry.
    for _ in range(8 * 60 // 5):
        swept += sweeper.sweep_once()
        backend.clock.advance(5)
    assert swept == 20
    assert all(_status(backend, rid) == "expired" for rid in extended)
    assert all(_status(backend, rid) == "committed" for rid in paid)
    assert all(_status(backend, rid) == "released" for rid in released)
    assert _available(backend, "DOOR") == 30  # the paid ten stay allocated
    assert sweeper.sweep_once() == 0
    ledger.close()


def test_a_sweep_that_fails_midway_leaves_the_rest_due(backend: Backend) -> None:
    """Story: the database restarts while the sweeper is expiring a batch of abandoned
    checkouts. Invariant: the holds it had not expired yet are expired by the next sweep
    (none is forgotten), and none is expired twice."""
    service = backend.service()
    _shop(service, "SKU", 5)
    for n in range(5):
        line = (c.Line("SKU", 1),)
        run(
            service,
            c.ReserveStock(reservation_id=f"r{n}", channel="web", lines=line, ttl_seconds=60),
        )
    ledger = backend.ledger()
    sweeper = Sweeper(ledger, service)
    backend.clock.advance(61)
    real = service.run_sync
    calls = 0

    def flaky(job):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError("the database restarted")
        return real(job)

    service.run_sync = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        sweeper.sweep_once()
    service.run_sync = real  # type: ignore[method-assign]
    assert sweeper.sweep_once() == 3
    assert sweeper.sweep_once() == 0
    assert all(_status(backend, f"r{n}") == "expired" for n in range(5))
    assert _available(backend, "SKU") == 5
    ledger.close()


# --- property: the sweeper against a model of live holds --------------------------------

STEP = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 5), st.integers(1, 120)),
    st.tuples(st.just("extend"), st.integers(0, 5), st.integers(1, 120)),
    st.tuples(st.just("release"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("commit"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("advance"), st.just(0), st.integers(0, 90)),
    st.tuples(st.just("sweep"), st.just(0), st.just(0)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=30))
def test_sweeper_expires_exactly_the_live_holds_past_expiry(
    steps: list[tuple[str, int, int]],
) -> None:
    """Property: after any sequence of holds, extensions, releases, commits, clock moves and
    sweeps, each sweep expires exactly the reservations the model says are held and past
    their current expiry, and the ledger's statuses match the model."""
    with tempfile.TemporaryDirectory() as tmp:
        backend = Backend(None, Path(tmp), Clock())
        service = backend.service()
        _shop(service, "P", 100)
        ledger = backend.ledger()
        sweeper = Sweeper(ledger, service)
        held: dict[str, datetime] = {}  # reservation id -> expires_at
        final: dict[str, str] = {}
        try:
            for op, n, amount in steps:
                rid = f"p{n}"
                now = backend.clock()
                live = rid in held and held[rid] > now
                if op == "reserve" and rid not in held and rid not in final:
                    line = (c.Line("P", 1),)
                    cmd = c.ReserveStock(
                        reservation_id=rid, channel="web", lines=line, ttl_seconds=amount
                    )
                    run(service, cmd)
                    held[rid] = backend.clock.now + timedelta(seconds=amount)
                elif op == "extend" and live:
                    run(service, c.ExtendReservation(reservation_id=rid, ttl_seconds=amount))
                    held[rid] = backend.clock.now + timedelta(seconds=amount)
                elif op in ("release", "commit") and live:
                    if op == "release":
                        run(service, c.ReleaseReservation(reservation_id=rid))
                        final[rid] = "released"
                    else:
                        run(service, c.CommitReservation(reservation_id=rid, order_id=f"o-{rid}"))
                        final[rid] = "committed"
                    del held[rid]
                elif op == "advance":
                    backend.clock.advance(amount)
                elif op == "sweep":
                    due = {r for r, at in held.items() if at <= now}
                    assert sweeper.sweep_once() == len(due)
                    for r in due:
                        del held[r]
                        final[r] = "expired"
            for rid, status in final.items():
                assert _status(backend, rid) == status
            for rid in held:
                assert _status(backend, rid) == "held"
        finally:
            ledger.close()
            backend.close()
