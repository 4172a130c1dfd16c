"""A rebuild from nothing (`Projector.replay`: the ledger folded in large pages, each SKU
written once) gives exactly the model the projector keeps by following the ledger, whatever
the sequence of events, the batch size and the page size (issue 8 §3)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.service.commands import CommandService
from atp import commands as c
from atp.errors import DomainError
from projections.projector import Projector
from projections.readmodel import MemoryReadModel
from tests.integration.conftest import Backend, Clock, run

pytestmark = pytest.mark.integration

SKUS = ("A", "B", "C")
L = c.Line

KINDS = (
    *("receive", "hold", "release", "commit", "order", "cancel", "adjust", "count"),
    *("incoming", "safety", "channel", "location", "global-safety", "follow"),
)
"""Commands of every kind that changes figures; "follow" lets the live projector catch up."""
STEP = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(SKUS),
    st.integers(1, 6),
)


def _apply(
    service: CommandService, step: tuple[str, str, int], state: dict[str, list[str]]
) -> None:
    kind, sku, q = step
    n = sum(len(v) for v in state.values()) + len(state["done"])
    state["done"].append(kind)
    commands = {
        "receive": lambda: c.ReceiveStock(location="WH1" if q % 2 else "ST1", lines=(L(sku, q),)),
        "hold": lambda: c.ReserveStock(
            reservation_id=f"r{n}", channel="web", lines=(L(sku, q),), ttl_seconds=3600
        ),
        "order": lambda: c.PlaceOrder(order_id=f"o{n}", channel="pos", lines=(L(sku, 1),)),
        "adjust": lambda: c.AdjustStock(
            location="WH1", sku=sku, delta=q - 3, reason="found", damaged=q == 6
        ),
        "count": lambda: c.CountStock(location="ST1", lines=(c.CountLine(sku, q),)),
        "incoming": lambda: c.ExpectIncoming(location="WH1", lines=(L(sku, q),)),
        "safety": lambda: c.SetSafetyStock(sku=sku, location="WH1", quantity=q % 3),
        "global-safety": lambda: c.SetSafetyStock(sku=None, location=None, quantity=q % 2),
        "channel": lambda: c.DefineChannel(code="web", locations=("WH1", "ST1"), buffer=q % 3),
        "location": lambda: c.DefineLocation(code="ST1", name="Store", kind="store", active=q != 1),
    }
    try:
        if kind in commands:
            run(service, commands[kind]())
            if kind == "hold":
                state["held"].append(f"r{n}")
            elif kind == "order":
                state["orders"].append(f"o{n}")
        elif kind == "release" and state["held"]:
            run(service, c.ReleaseReservation(reservation_id=state["held"].pop(0)))
        elif kind == "commit" and state["held"]:
            rid = state["held"].pop(0)
            run(service, c.CommitReservation(reservation_id=rid, order_id=f"c{n}"))
        elif kind == "cancel" and state["orders"]:
            run(service, c.CancelOrder(order_id=state["orders"].pop(0)))
    except DomainError:
        pass


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    steps=st.lists(STEP, min_size=1, max_size=40),
    batch_size=st.integers(1, 7),
    page_size=st.integers(1, 9),
)
def test_replay_equals_the_followed_model(
    steps: list[tuple[str, str, int]], batch_size: int, page_size: int
) -> None:
    """Story: a model kept live through a busy day (holds, orders, counts, channel and
    safety-stock changes, followed a few events at a time) is thrown away and rebuilt.

    Invariant: the rebuilt model is identical to the followed one: every channel figure,
    every item document and folded state, each SKU's position, the model's position and
    policies (so a reader sees no figure change and no position go back at the switch)."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as data_dir:
        backend = Backend(None, Path(data_dir), clock)
        try:
            service = backend.service()
            for command in (
                c.DefineLocation(code="WH1", name="Main", kind="warehouse"),
                c.DefineLocation(code="ST1", name="Store", kind="store"),
                c.DefineChannel(code="web", locations=("WH1", "ST1")),
                c.DefineChannel(code="pos", locations=("ST1",), buffer=1, share_percent=50),
            ):
                run(service, command)
            ledger = backend.ledger()
            followed = MemoryReadModel()
            follower = Projector(ledger, followed, clock, batch_size=batch_size)
            state: dict[str, list[str]] = {"held": [], "orders": [], "done": []}
            for step in steps:
                if step[0] == "follow":
                    follower.catch_up()
                else:
                    _apply(service, step, state)
            follower.catch_up()

            rebuilt = MemoryReadModel()
            Projector(ledger, rebuilt, clock).replay(page_size=page_size)
            assert rebuilt.ats == followed.ats
            assert rebuilt.items == followed.items
            assert rebuilt.states == followed.states
            assert (rebuilt.position, rebuilt.policies) == (followed.position, followed.policies)
            assert rebuilt.position == ledger.ping()
            ledger.close()
        finally:
            backend.close()
