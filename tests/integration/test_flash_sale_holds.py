"""A flash sale on a SKU that already carries 10,000 live holds (issue 12: flat in live holds).

The item state keeps its holds in a persistent map and snapshots a SKU less often the more
holds it carries; neither may cost a unit of correctness.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import pytest

from adapters.ledger import snapshot_interval, stream_id
from api.service.commands import CommandService
from atp import commands as c
from atp.errors import InsufficientStock
from atp.state import ItemState
from atp.world import fold
from tests.integration.conftest import Backend, run
from tests.support.catalogue import setup_catalogue

pytestmark = pytest.mark.integration

LIVE_HOLDS = 10_000
LEFT = 300
SHOPPERS = 600


def reserve(service: CommandService, reservation_id: str) -> None:
    run(
        service,
        c.ReserveStock(
            reservation_id=reservation_id,
            channel="web",
            lines=(c.Line("HOT", 1),),
            ttl_seconds=3600,
        ),
    )


def test_a_flash_sale_over_10000_live_holds_sells_exactly_what_is_left(
    pg_backend: Backend,
) -> None:
    """A retailer's drop: 10,000 shoppers already hold the hot SKU when the last 300 units
    go on sale to 600 more, through two processes' writers at once.

    Invariants: exactly the 300 units left are held (no oversell, none turned away while
    stock remained: no 409 was answered before a later 201 had even been asked for); every
    hold is in the ledger, and the SKU loaded cold from the ledger (snapshot, then events)
    is the state the writers hold."""
    first, second = pg_backend.service(), pg_backend.service()
    setup_catalogue(first)
    run(first, c.ReceiveStock(location="WH1", lines=(c.Line("HOT", LIVE_HOLDS + LEFT),)))
    services = cycle((first, second))
    with ThreadPoolExecutor(64) as pool:
        list(
            pool.map(
                reserve, [next(services) for _ in range(LIVE_HOLDS)], map(str, range(LIVE_HOLDS))
            )
        )

        def shopper(i: int) -> tuple[str, float, float]:
            asked = time.monotonic()
            try:
                reserve(first if i % 2 else second, f"sale-{i}")
                outcome = "held"
            except InsufficientStock:
                outcome = "sold out"
            return outcome, asked, time.monotonic()

        answers = list(pool.map(shopper, range(SHOPPERS)))

    held = [a for a in answers if a[0] == "held"]
    sold_out = [a for a in answers if a[0] == "sold out"]
    assert (len(held), len(sold_out)) == (LEFT, SHOPPERS - LEFT)
    last_held_asked = max(asked for _, asked, _ in held)
    assert not [a for a in sold_out if a[2] < last_held_asked]
    ledger = pg_backend.ledger()
    item, version = ledger.load(("item", "HOT"))
    assert isinstance(item, ItemState)
    assert item.at("WH1").held == item.at("WH1").on_hand == LIVE_HOLDS + LEFT
    assert len(item.holds) == LIVE_HOLDS + LEFT
    assert item == fold(("item", "HOT"), [e.event for e in ledger.records(("item", "HOT"))])
    # A SKU this size is snapshotted every snapshot_interval events, not every 100.
    assert snapshot_interval(item) >= len(item.holds)
    assert ledger.snapshots is not None
    snapshots = [s.originator_version for s in ledger.snapshots.get(stream_id(("item", "HOT")))]
    assert len(snapshots) < version // 100
    ledger.close()
