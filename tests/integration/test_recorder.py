"""The ledger's recorders (adapters/recorder.py): the library's insert, columns sent as
binary arrays in one statement, with read checks. What the library guarantees must hold
unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.ledger import (
    SNAPSHOT_INTERVAL,
    IntegrityError,
    Ledger,
    LedgerEvent,
    snapshot_interval,
    stream_id,
)
from adapters.recorder import LedgerRecorder, SnapshotRecorder
from atp import events as ev
from atp.events import Hold
from atp.state import ItemState, evolve_item
from tests.integration.conftest import Backend

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def adjusted(sku: str, version: int, delta: int = 1) -> LedgerEvent:
    event = ev.StockAdjusted(sku=sku, location="WH1", delta=delta, reason="count")
    return LedgerEvent(stream_id(("item", sku)), version, NOW, event, {"correlation_id": "t"})


def test_a_batch_is_stored_in_order_and_a_duplicate_version_stores_nothing(
    pg_backend: Backend,
) -> None:
    """Given the ledger on PostgreSQL, when a batch is appended, its notification ids come
    back in insert order and the events read back as written; when a later batch repeats a
    (stream, version), the whole batch is refused with IntegrityError and nothing of it is
    stored (the writer's optimistic concurrency rests on this)."""
    ledger: Ledger = pg_backend.ledger()
    assert isinstance(ledger.recorder, LedgerRecorder)
    assert ledger.snapshots is not None
    assert isinstance(ledger.snapshots.recorder, SnapshotRecorder)

    ids = ledger.append([adjusted("A", 1), adjusted("B", 1), adjusted("A", 2, delta=4)])

    assert ids == sorted(ids) and len(set(ids)) == 3
    assert ledger.head() == ids[-1]
    with pytest.raises(IntegrityError):
        ledger.append([adjusted("C", 1), adjusted("A", 2)])
    assert ledger.load(("item", "C")) == (ItemState(sku="C"), 0)
    item, version = ledger.load(("item", "A"))
    assert (item.at("WH1").on_hand, version) == (5, 2)
    ledger.close()


def test_an_append_resting_on_a_stream_that_moved_stores_nothing(backend: Backend) -> None:
    """Story: a writer decides a reservation against the safety stock it read at version 1;
    before it appends, a planner's process raises the safety stock (version 2). Invariant: a
    decision is stored only if every stream it read, written or not, is still as it was
    read. The append naming (policies, 1) as read is refused with IntegrityError and stores
    nothing; the same append naming (policies, 2) is stored. On both backends."""
    ledger: Ledger = backend.ledger()
    policies = ("policies", "global")
    ledger.append([adjusted("P", 1), adjusted("P", 2)])  # stands in for the rules' stream
    moved = ("item", "P")

    with pytest.raises(IntegrityError):
        ledger.append([adjusted("Q", 1)], reads=[(moved, 1)])
    with pytest.raises(IntegrityError):
        ledger.append([adjusted("Q", 1)], reads=[(policies, 1)])  # never written: version 0
    assert ledger.load(("item", "Q"))[1] == 0

    ids = ledger.append([adjusted("Q", 1)], reads=[(moved, 2), (policies, 0)])
    assert len(ids) == 1 and ledger.head() == ids[0]
    assert ledger.load(("item", "Q"))[1] == 1
    ledger.close()


def test_a_ledger_created_before_the_append_function_gets_it_on_first_append(
    pg_backend: Backend,
) -> None:
    """Story: a retailer upgrades atp on a database migrated by an older release (no
    append function yet) and starts serving without `atp migrate`. Invariant: the first
    append creates the function and is stored; nothing is lost or doubled."""
    ledger: Ledger = pg_backend.ledger()
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerRecorder)
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(
            f"DROP FUNCTION {recorder.datastore.schema}.atp_append_{recorder.events_table_name}"
        )
    ids = ledger.append([adjusted("U", 1)])
    assert len(ids) == 1
    assert ledger.load(("item", "U"))[1] == 1
    ledger.close()


def test_a_snapshot_of_a_sku_with_many_holds_loads_back(pg_backend: Backend) -> None:
    """Given a SKU with 2,000 live holds, when it is snapshotted (binary insert of about
    300 kB of state), then a cold load from the snapshot gives the same state."""
    state = ItemState(sku="H")
    for i in range(2000):
        held = ev.StockHeld(
            sku="H", reservation_id=f"r{i}", channel="web", holds=(Hold("WH1", 1),), expires_at=NOW
        )
        state = evolve_item(state, held)
    ledger = pg_backend.ledger()
    ledger.append([adjusted("H", 1)], [(("item", "H"), 1, state)])

    loaded, version = ledger.load(("item", "H"))

    assert version == 1 and loaded == state and list(loaded.holds) == list(state.holds)
    ledger.close()


def test_snapshots_thin_out_as_a_state_grows() -> None:
    """Given states of growing size, the snapshot interval is 100 events until the holds and
    allocations outnumber it, then the next power-of-two multiple of 100 that covers them."""
    small = ItemState(sku="S")
    assert snapshot_interval(small) == SNAPSHOT_INTERVAL
    state = small
    for i in range(250):
        held = ev.StockHeld(
            sku="S", reservation_id=f"r{i}", channel="web", holds=(Hold("WH1", 1),), expires_at=NOW
        )
        state = evolve_item(state, held)
    assert snapshot_interval(state) == 400
    assert snapshot_interval(None) == SNAPSHOT_INTERVAL  # an order not placed yet
